#!/usr/bin/env node
// Local Kinesis emulator bound to loopback only (kinesalite's CLI has no host option).
// Started by scripts/local-stack.sh; data is kept in memory (lost on restart).
'use strict'

const HOST = '127.0.0.1'
const PORT = Number(process.env.KINESALITE_PORT || 4567)

const kinesalite = require('kinesalite')

const server = kinesalite({
  createStreamMs: 0,
  deleteStreamMs: 0,
  updateStreamMs: 0,
  shardLimit: Number(process.env.KINESALITE_SHARD_LIMIT || 100),
})

server.on('error', (err) => {
  console.error(`kinesalite: cannot listen on ${HOST}:${PORT}: ${err.message}`)
  process.exit(1)
})

server.listen(PORT, HOST, () => {
  console.log(`kinesalite listening on http://${HOST}:${PORT} (pid ${process.pid})`)
})

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    console.log(`kinesalite: ${sig}, shutting down`)
    // Do not wait for keep-alive clients; the store is in memory anyway.
    process.exit(0)
  })
}
