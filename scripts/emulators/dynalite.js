#!/usr/bin/env node
// Local DynamoDB emulator bound to loopback only.
// Started by scripts/local-stack.sh; data is kept in memory (lost on restart).
// Note: dynalite implements DescribeTimeToLive but not UpdateTimeToLive, so TTL is not emulated.
'use strict'

const HOST = '127.0.0.1'
const PORT = Number(process.env.DYNALITE_PORT || 4568)

// memory-level store encoding (see the numbers in bench_emulators.py runs): 'buffer' is
// memory-level's default; dynalite does not pass one.
const STORE_ENCODING = process.env.DYNALITE_STORE_ENCODING || 'buffer'
if (STORE_ENCODING !== 'buffer') {
  // dynalite's db/index.js does `new MemoryLevel({ valueEncoding: 'json' })`; it destructures
  // the export when it is first required, so replace the export before requiring dynalite.
  const memoryLevel = require('memory-level')
  const Base = memoryLevel.MemoryLevel
  memoryLevel.MemoryLevel = class extends Base {
    constructor (location, options) {
      if (typeof location === 'object' && location !== null) options = location
      super({ ...options, storeEncoding: STORE_ENCODING })
    }
  }
}

const dynalite = require('dynalite')

const server = dynalite({
  createTableMs: 0,
  deleteTableMs: 0,
  updateTableMs: 0,
})

server.on('error', (err) => {
  console.error(`dynalite: cannot listen on ${HOST}:${PORT}: ${err.message}`)
  process.exit(1)
})

server.listen(PORT, HOST, () => {
  console.log(`dynalite listening on http://${HOST}:${PORT} (pid ${process.pid})`)
})

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    console.log(`dynalite: ${sig}, shutting down`)
    process.exit(0)
  })
}
