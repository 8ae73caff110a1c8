/**
 * A set of fixed-width digests (the sha256 of a blob, the first 16 bytes of the sha256 of a URL) held in one
 * typed array outside the JS heap.
 *
 * Why: an export remembers every blob and every attachment URL it has met, for the whole run. As strings in a
 * `Set`/`Map` that is ≈ 100–150 B of JS heap per member, and V8 sizes its heap as a multiple of what is live,
 * so at 43k attachments (1M resources) the export's resident memory settled ≈ 20 MB above the 100k run's
 * (docs/benchmarks.md). Here a member costs `width / load` bytes of one `Uint8Array` (≈ 1.3–2.7 × width at
 * the load kept, up to 3/4 full; twice that for a moment while the table doubles) that the garbage collector
 * never traces.
 *
 * Open addressing with linear probing; digests are uniform, so their first four bytes are the hash. A slot
 * whose bytes are all zero is empty: an all-zero digest is stored as a flag of its own.
 */
import { hash } from "node:crypto"

const MAX_LOAD = 0.75

export class DigestSet {
  private slots: Uint8Array
  private mask: number
  private count = 0
  private zero = false
  private readonly scratch: Buffer

  /** `width`: bytes per digest (at least 4). */
  constructor(
    readonly width: number,
    capacity = 1024,
  ) {
    if (!Number.isInteger(width) || width < 4)
      throw new RangeError(`DigestSet width ${width} is below 4 bytes`)
    let n = 16
    while (n * MAX_LOAD < capacity) n *= 2
    this.slots = new Uint8Array(n * width)
    this.mask = n - 1
    this.scratch = Buffer.alloc(width)
  }

  get size(): number {
    return this.count
  }

  /** Whether `digest` (exactly `width` bytes) is in the set. */
  has(digest: Uint8Array): boolean {
    this.check(digest)
    if (isZero(digest)) return this.zero
    return this.find(this.slots, this.mask, digest) < 0
  }

  /** Adds `digest`; true when it was not in the set yet. */
  add(digest: Uint8Array): boolean {
    this.check(digest)
    if (isZero(digest)) {
      if (this.zero) return false
      this.zero = true
      this.count++
      return true
    }
    const at = this.find(this.slots, this.mask, digest)
    if (at < 0) return false
    this.slots.set(digest, at * this.width)
    this.count++
    if (this.count > (this.mask + 1) * MAX_LOAD) this.grow()
    return true
  }

  /** `has` for a digest written in hex (`2 × width` characters). */
  hasHex(hex: string): boolean {
    return this.has(this.fromHex(hex))
  }

  /** `add` for a digest written in hex (`2 × width` characters). */
  addHex(hex: string): boolean {
    return this.add(this.fromHex(hex))
  }

  private fromHex(hex: string): Uint8Array {
    if (hex.length !== 2 * this.width || this.scratch.write(hex, "hex") !== this.width)
      throw new RangeError(`not a ${this.width}-byte hex digest: ${JSON.stringify(hex.slice(0, 80))}`)
    return this.scratch
  }

  private check(digest: Uint8Array): void {
    if (digest.length !== this.width)
      throw new RangeError(`a ${digest.length}-byte digest in a DigestSet of ${this.width}-byte digests`)
  }

  /** The slot holding `digest` as `-1 - slot`, or the empty slot where it belongs. */
  private find(slots: Uint8Array, mask: number, digest: Uint8Array): number {
    const w = this.width
    let i = (((digest[0]! << 24) | (digest[1]! << 16) | (digest[2]! << 8) | digest[3]!) >>> 0) & mask
    for (;;) {
      const off = i * w
      let empty = true
      let same = true
      for (let k = 0; k < w; k++) {
        const b = slots[off + k]!
        if (b !== 0) empty = false
        if (b !== digest[k]) same = false
      }
      if (same) return -1 - i
      if (empty) return i
      i = (i + 1) & mask
    }
  }

  private grow(): void {
    const w = this.width
    const old = this.slots
    const n = (this.mask + 1) * 2
    const slots = new Uint8Array(n * w)
    const mask = n - 1
    for (let off = 0; off < old.length; off += w) {
      const d = old.subarray(off, off + w)
      if (!isZero(d)) slots.set(d, this.find(slots, mask, d) * w)
    }
    this.slots = slots
    this.mask = mask
  }
}

const isZero = (d: Uint8Array): boolean => {
  for (let k = 0; k < d.length; k++) if (d[k] !== 0) return false
  return true
}

/** The first 16 bytes of the sha256 of a string (a URL): a set member that stands for the string. */
export const digest16 = (text: string): Uint8Array => hash("sha256", text, "buffer").subarray(0, 16)
