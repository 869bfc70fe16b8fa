'use strict'
// An in-memory abstract-level store on a mutable B+ tree (sorted-btree), for dynalite.
//
// Why: dynalite's default store, memory-level, keeps its data in a persistent red-black tree
// that copies the whole root-to-leaf path on every put (~40 nodes at a million items), so every
// item write allocates nodes that survive the young generation and makes the next collections
// slower as the table grows (docs/emulators.md, "Why the per-item cost grows with the table").
// A B+ tree updates one leaf in place. Snapshots stay as cheap as memory-level's: sorted-btree's
// clone() is O(1) and copy-on-write, so an iterator (dynalite's Scan, Query, ListTables) reads a
// frozen copy while writes go on, exactly the isolation memory-level gives.
//
// Keys and values are stored as strings (store encoding utf8): every key dynalite writes for
// items and indexes is ASCII, so JavaScript's string order is byte order there, as in
// memory-level with `storeEncoding: 'utf8'` (docs/emulators.md). The abstract-level test suite
// runs against it: `npm test` in this directory (scripts/emulators/test/btree-level.test.js).

const { AbstractLevel, AbstractIterator, AbstractSnapshot } = require('abstract-level')
const BTree = require('sorted-btree').default

const compare = (a, b) => (a < b ? -1 : a > b ? 1 : 0)

class BTreeLevel extends AbstractLevel {
  #tree = new BTree(undefined, compare)

  // `location` is accepted and ignored, like memory-level's, so this class can stand in for it.
  constructor (location, options) {
    if (typeof location === 'object' && location !== null) options = location
    // storeEncoding is memory-level's option; this store always stores strings, so drop it.
    const { storeEncoding, ...forward } = options || {}
    super({
      seek: true,
      implicitSnapshots: true,
      explicitSnapshots: true,
      permanence: false,
      createIfMissing: false,
      errorIfExists: false,
      has: true,
      getSync: true,
      encodings: { utf8: true },
      signals: { iterators: false }
    }, forward)
  }

  get tree () { return this.#tree }

  async _put (key, value) { this.#tree.set(key, value) }

  async _get (key, options) { return treeOf(this, options).get(key) }

  _getSync (key, options) { return treeOf(this, options).get(key) }

  async _getMany (keys, options) {
    const tree = treeOf(this, options)
    return keys.map((key) => tree.get(key))
  }

  async _has (key, options) { return treeOf(this, options).has(key) }

  async _hasMany (keys, options) {
    const tree = treeOf(this, options)
    return keys.map((key) => tree.has(key))
  }

  async _del (key) { this.#tree.delete(key) }

  // Synchronous, so a batch is atomic with respect to every reader, as in memory-level.
  async _batch (operations) {
    for (const op of operations) {
      if (op.type === 'put') this.#tree.set(op.key, op.value)
      else this.#tree.delete(op.key)
    }
  }

  async _clear (options) {
    const tree = treeOf(this, options)
    const range = new Range(options)
    if (range.unbounded() && options.limit === -1 && tree === this.#tree) {
      this.#tree = new BTree(undefined, compare)
      return
    }
    // Collect first, then delete: the keys come from `tree` (maybe a snapshot), the deletes go
    // to the live tree, which may have changed since.
    const doomed = []
    for (const [key] of range.entries(tree, null)) {
      if (options.limit !== -1 && doomed.length >= options.limit) break
      doomed.push(key)
    }
    for (const key of doomed) this.#tree.delete(key)
  }

  _iterator (options) {
    // An implicit snapshot: the iterator reads a copy-on-write clone taken now.
    const tree = options.snapshot ? options.snapshot.tree : this.#tree.clone()
    return new BTreeIterator(this, tree, options)
  }

  _snapshot (options) { return new BTreeSnapshot(this.#tree.clone(), options) }
}

class BTreeSnapshot extends AbstractSnapshot {
  constructor (tree, options) {
    super(options)
    this.tree = tree
  }
}

function treeOf (db, options) {
  return options && options.snapshot ? options.snapshot.tree : db.tree
}

// The key range of an iterator or a clear: gte/gt and lte/lt, in either direction.
class Range {
  constructor (options) {
    this.reverse = !!options.reverse
    this.lower = options.gte !== undefined ? options.gte : options.gt
    this.lowerOpen = options.gte === undefined && options.gt !== undefined
    this.upper = options.lte !== undefined ? options.lte : options.lt
    this.upperOpen = options.lte === undefined && options.lt !== undefined
  }

  unbounded () { return this.lower === undefined && this.upper === undefined }

  contains (key) {
    if (this.lower !== undefined) {
      const c = compare(key, this.lower)
      if (c < 0 || (c === 0 && this.lowerOpen)) return false
    }
    if (this.upper !== undefined) {
      const c = compare(key, this.upper)
      if (c > 0 || (c === 0 && this.upperOpen)) return false
    }
    return true
  }

  // Entries of `tree` inside the range, in the range's direction, starting at `from` (a seek
  // target) when it is given and inside the bounds.
  * entries (tree, from) {
    let start = this.reverse ? this.upper : this.lower
    if (from !== null && from !== undefined) {
      const further = this.reverse
        ? start === undefined || compare(from, start) < 0
        : start === undefined || compare(from, start) > 0
      if (further) start = from
    }
    const it = this.reverse ? tree.entriesReversed(start) : tree.entries(start)
    for (const pair of it) {
      const key = pair[0]
      if (this.contains(key)) {
        yield pair
      } else if (this.reverse ? this.lower !== undefined && compare(key, this.lower) < 0
        : this.upper !== undefined && compare(key, this.upper) > 0) {
        return
      }
      // Otherwise the key is the excluded bound itself (gt/lt) or, after a seek, before the
      // range's start: skip it.
    }
  }
}

class BTreeIterator extends AbstractIterator {
  #tree
  #range
  #entries

  constructor (db, tree, options) {
    super(db, options)
    this.#tree = tree
    this.#range = new Range(options)
    this.#entries = this.#range.entries(tree, null)
  }

  async _next () {
    const { value, done } = this.#entries.next()
    return done ? undefined : [value[0], value[1]]
  }

  _seek (target) {
    this.#entries = this.#range.entries(this.#tree, target)
  }
}

exports.BTreeLevel = BTreeLevel
