'use strict'
// The abstract-level compliance suite (shipped with abstract-level) against the B+ tree store,
// so dynalite on it behaves as on memory-level: `npm test` in scripts/emulators.
const test = require('tape')
const suite = require('abstract-level/test')
const { BTreeLevel } = require('../btree-level')

suite({ test, factory: (options) => new BTreeLevel(options) })
