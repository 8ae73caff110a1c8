/**
 * A set of strings numbered in the order they were added (0, 1, 2, …), held in typed arrays outside the JS
 * heap: `add` gives a string's number, `get` finds it again, `key` gives the string back.
 *
 * Why: an import knows every resource of the archive by its `Type/id` for the whole run (its node in the
 * dependency graph, the id registry that resolves `urn:uuid:` leftovers). As strings in `Map`s that was
 * ≈ 200 B of JS heap per resource (the key, the cons string that built it, the id sliced from it, two Map
 * entries and an array slot; a heap snapshot of a 1M-resource import: 370 MB live), which the garbage
 * collector traces on every full collection and which V8's heap limit (≈ 4.3 GB on a 64-bit machine,
 * whatever its memory) turns into a crash somewhere past 10M resources. Here a key costs its characters
 * (one byte each) plus 17 bytes of bookkeeping and ≈ 8 bytes of hash slots, in arrays the collector never
 * traces and the heap limit does not count.
 *
 * Keys whose characters are all below U+0100 and that are at most 255 characters long (every FHIR `Type/id`:
 * ids are `[A-Za-z0-9\-.]{1,64}`) are stored as bytes; any other string is kept in an ordinary `Map` beside
 * them, with its number from the same sequence, so the table takes whatever it is given.
 *
 * Open addressing with linear probing over 32-bit FNV-1a hashes, every hit compared character by character:
 * two keys never share a number. The characters go into pages of `PAGE` bytes (a key never spans two), so
 * the table grows without copying what it holds.
 */

const PAGE = 1 << 24
const MAX_LOAD = 0.5
const MAX_STORED = 255

export class KeyTable {
  private readonly pages: Array<Buffer> = [Buffer.alloc(1 << 16)]
  /** Bytes used in the last page. */
  private used = 0
  /** Per key: page number × PAGE + offset (exact in a float up to 2^53). */
  private starts = new Float64Array(1024)
  /** Per key: its length, or 0 when it lives in `others`. */
  private lengths = new Uint8Array(1024)
  private hashes = new Int32Array(1024)
  /** key number + 1; 0 = empty. */
  private slots = new Int32Array(2048)
  private mask = 2047
  private count = 0
  private readonly others = new Map<string, number>()
  private readonly otherKeys = new Map<number, string>()

  /** Number of keys. */
  get size(): number {
    return this.count
  }

  /** The number of `text.slice(from, to)`, or -1 when it was never added. */
  get(text: string, from = 0, to = text.length): number {
    if (!storable(text, from, to)) {
      const hit = this.others.get(from === 0 && to === text.length ? text : text.slice(from, to))
      return hit ?? -1
    }
    const h = hash(text, from, to)
    for (let i = h & this.mask; ; i = (i + 1) & this.mask) {
      const slot = this.slots[i]!
      if (slot === 0) return -1
      const k = slot - 1
      if (this.hashes[k] === h && this.equals(k, text, from, to)) return k
    }
  }

  /** Whether `text.slice(from, to)` was added. */
  has(text: string, from = 0, to = text.length): boolean {
    return this.get(text, from, to) >= 0
  }

  /** The number of `text.slice(from, to)`, added now (the next number) when it was not there yet. */
  add(text: string, from = 0, to = text.length): number {
    if (!storable(text, from, to)) {
      const key = from === 0 && to === text.length ? text : text.slice(from, to)
      const hit = this.others.get(key)
      if (hit !== undefined) return hit
      const k = this.next()
      this.others.set(key, k)
      this.otherKeys.set(k, key)
      this.lengths[k] = 0
      return k
    }
    const h = hash(text, from, to)
    let i = h & this.mask
    for (; ; i = (i + 1) & this.mask) {
      const slot = this.slots[i]!
      if (slot === 0) break
      const k = slot - 1
      if (this.hashes[k] === h && this.equals(k, text, from, to)) return k
    }
    const k = this.next()
    const n = to - from
    let page = this.pages[this.pages.length - 1]!
    if (this.used + n > page.length) {
      if (this.used + n <= PAGE && page.length < PAGE) {
        // the last page doubles (up to PAGE) while the table is small
        let size = page.length * 2
        while (size < this.used + n) size *= 2
        const bigger = Buffer.alloc(Math.min(size, PAGE))
        bigger.set(page.subarray(0, this.used))
        page = bigger
        this.pages[this.pages.length - 1] = page
      } else {
        page = Buffer.alloc(PAGE)
        this.pages.push(page)
        this.used = 0
      }
    }
    const at = this.used
    for (let c = from; c < to; c++) page[at + c - from] = text.charCodeAt(c)
    this.used = at + n
    this.starts[k] = (this.pages.length - 1) * PAGE + at
    this.lengths[k] = n
    this.hashes[k] = h
    this.slots[i] = k + 1
    if (this.count > (this.mask + 1) * MAX_LOAD) this.rehash()
    return k
  }

  /** The string numbered `k` (a new string each call: callers that keep it, keep one copy). */
  key(k: number): string {
    if (!(k >= 0 && k < this.count)) throw new RangeError(`no key numbered ${k} in a table of ${this.count}`)
    const n = this.lengths[k]!
    if (n === 0) return this.otherKeys.get(k)!
    const start = this.starts[k]!
    const page = this.pages[Math.floor(start / PAGE)]!
    const at = start % PAGE
    return page.toString("latin1", at, at + n)
  }

  /** Claims the next number, growing the per-key arrays. */
  private next(): number {
    const k = this.count++
    if (k >= this.lengths.length) {
      const n = this.lengths.length * 2
      const starts = new Float64Array(n)
      starts.set(this.starts)
      this.starts = starts
      const lengths = new Uint8Array(n)
      lengths.set(this.lengths)
      this.lengths = lengths
      const hashes = new Int32Array(n)
      hashes.set(this.hashes)
      this.hashes = hashes
    }
    return k
  }

  private equals(k: number, text: string, from: number, to: number): boolean {
    const n = this.lengths[k]!
    if (n !== to - from) return false
    const start = this.starts[k]!
    const page = this.pages[Math.floor(start / PAGE)]!
    const at = start % PAGE
    for (let c = 0; c < n; c++) if (page[at + c] !== text.charCodeAt(from + c)) return false
    return true
  }

  private rehash(): void {
    const size = (this.mask + 1) * 2
    const slots = new Int32Array(size)
    const mask = size - 1
    for (let k = 0; k < this.count; k++) {
      if (this.lengths[k] === 0) continue
      let i = this.hashes[k]! & mask
      while (slots[i] !== 0) i = (i + 1) & mask
      slots[i] = k + 1
    }
    this.slots = slots
    this.mask = mask
  }
}

/** Stored as bytes: at most MAX_STORED characters (at least one), all below U+0100. */
const storable = (text: string, from: number, to: number): boolean => {
  const n = to - from
  if (n <= 0 || n > MAX_STORED) return false
  for (let c = from; c < to; c++) if (text.charCodeAt(c) > 0xff) return false
  return true
}

/** 32-bit FNV-1a over the characters (all below U+0100 here). */
const hash = (text: string, from: number, to: number): number => {
  let h = 0x811c9dc5
  for (let c = from; c < to; c++) h = Math.imul(h ^ text.charCodeAt(c), 0x01000193)
  return h
}

/**
 * `a` when index `i` is inside it, else a copy at least twice as long: a per-key value array beside a
 * `KeyTable`, grown as keys are added.
 */
export const withRoom = (a: Int32Array<ArrayBuffer>, i: number): Int32Array<ArrayBuffer> => {
  if (i < a.length) return a
  let n = Math.max(16, a.length * 2)
  while (n <= i) n *= 2
  const b = new Int32Array(n)
  b.set(a)
  return b
}

/**
 * Strings (in a `KeyTable`) each with one number or several: the id registry's types per id, the identifier
 * index's resources per identifier. One number is held in a typed array; a string given a second one gets a
 * `Set` (rare: an id shared by two types, an identifier shared by resources).
 */
export class NumberMultimap {
  private readonly keys = new KeyTable()
  /** Per key: its number, or `-1 - i` for `several[i]`. */
  private value = new Int32Array(1024)
  private readonly several: Array<Set<number>> = []

  /** Adds `n` (≥ 0) under `text.slice(from, to)`; false when it was there already. */
  add(n: number, text: string, from = 0, to = text.length): boolean {
    const before = this.keys.size
    const k = this.keys.add(text, from, to)
    if (k === before) {
      this.value = withRoom(this.value, k)
      this.value[k] = n
      return true
    }
    const cur = this.value[k]!
    if (cur >= 0) {
      if (cur === n) return false
      this.several.push(new Set([cur, n]))
      this.value[k] = -this.several.length
      return true
    }
    const all = this.several[-1 - cur]!
    if (all.has(n)) return false
    all.add(n)
    return true
  }

  /** The numbers under `text.slice(from, to)`, in the order they were added (none when absent). */
  get(text: string, from = 0, to = text.length): ReadonlyArray<number> {
    const k = this.keys.get(text, from, to)
    if (k < 0) return []
    const cur = this.value[k]!
    return cur >= 0 ? [cur] : [...this.several[-1 - cur]!]
  }

  /** Whether `n` is under `text.slice(from, to)` (without building the list). */
  has(n: number, text: string, from = 0, to = text.length): boolean {
    const k = this.keys.get(text, from, to)
    if (k < 0) return false
    const cur = this.value[k]!
    return cur >= 0 ? cur === n : this.several[-1 - cur]!.has(n)
  }
}
