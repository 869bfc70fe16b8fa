#!/usr/bin/env node
// Local DynamoDB emulator bound to loopback only.
// Started by scripts/local-stack.sh; data is kept in memory (lost on restart).
// Note: dynalite implements DescribeTimeToLive but not UpdateTimeToLive, so TTL is not emulated.
'use strict'

const HOST = '127.0.0.1'
const PORT = Number(process.env.DYNALITE_PORT || 4568)

// Opt-in store settings, measured with bench_emulators.py (docs/emulators.md has the table).
// Neither is the default because neither is clearly faster where a sustained run spends its
// time (a table of 1M+ items; dynalite has no TTL, so the table only grows):
// DYNALITE_STORE_ENCODING=utf8: memory-level keeps keys/values as strings instead of Buffers.
//   Same order and content (every item/index key dynalite writes is ASCII). With
//   --max-semi-space-size=64: 0.103 vs 0.127 ms CPU/item on a fresh table (-12..-19 %), but only
//   -4..-9 % from 110k to 910k items and within the noise at 1M+; it moves the values onto the
//   V8 heap (1.1 GB live at 1M items), so long runs would also need --max-old-space-size.
//
// DYNALITE_STORE=btree: keep the table in btree-level.js (a mutable B+ tree, same abstract-level
// contract, passes abstract-level's own test suite) instead of memory-level's persistent tree.
// It stores strings, so DYNALITE_STORE_ENCODING does not apply to it.
const STORE = process.env.DYNALITE_STORE || 'memory'
const STORE_ENCODING = process.env.DYNALITE_STORE_ENCODING || 'buffer'
// dynalite's db/index.js does `new MemoryLevel({ valueEncoding: 'json' })`; it destructures
// the export when it is first required, so either store replaces the export before dynalite loads.
const memoryLevel = require('memory-level')
if (STORE === 'btree') {
  const { BTreeLevel } = require('./btree-level')
  memoryLevel.MemoryLevel = BTreeLevel
} else if (STORE !== 'memory') {
  console.error(`dynalite: DYNALITE_STORE must be memory or btree, not ${STORE}`)
  process.exit(2)
} else if (STORE_ENCODING !== 'buffer') {
  const Base = memoryLevel.MemoryLevel
  memoryLevel.MemoryLevel = class extends Base {
    constructor (location, options) {
      if (typeof location === 'object' && location !== null) options = location
      super({ ...options, storeEncoding: STORE_ENCODING })
    }
  }
}

const dynalite = require('dynalite')

// DYNALITE_STORE_DIR (e.g. /dev/shm, a tmpfs): use dynalite's own `path` option (LevelDB via
// classic-level, native code) in a fresh directory under it, removed again on exit, instead of
// the JavaScript in-memory tree. Same dynalite code path for every action; only the store differs.
// About 2x the CPU (0.26-0.31 vs 0.15 ms/item) but resident memory stays flat (0.14 GB at 310k
// items vs 0.66 GB), for runs long enough to exhaust RAM (~1.7 KB resident per item by default).
const fs = require('fs')
const path = require('path')
let storeDir
if (process.env.DYNALITE_STORE_DIR) {
  storeDir = fs.mkdtempSync(path.join(process.env.DYNALITE_STORE_DIR, 'dynalite-'))
  process.on('exit', () => fs.rmSync(storeDir, { recursive: true, force: true }))
}

const server = dynalite({
  path: storeDir,
  createTableMs: 0,
  deleteTableMs: 0,
  updateTableMs: 0,
})

server.on('error', (err) => {
  console.error(`dynalite: cannot listen on ${HOST}:${PORT}: ${err.message}`)
  process.exit(1)
})

server.listen(PORT, HOST, () => {
  console.log(`dynalite listening on http://${HOST}:${PORT} (pid ${process.pid}, store ${STORE})`)
})

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    console.log(`dynalite: ${sig}, shutting down`)
    process.exit(0)
  })
}
