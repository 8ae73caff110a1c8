/**
 * Large scratch buffers handed out again once given back, instead of a fresh allocation each time.
 *
 * Why: the `ferry` command runs Node with glibc's mmap threshold fixed at 128 KiB (apps/cli/bin/ferry: it keeps
 * the heap from fragmenting), so every larger buffer is a mapping of its own: its pages fault in one by one on
 * first touch and go back to the kernel when it is freed. An import reads each Bundle's lines back and writes the
 * Bundle into such buffers, a few MB per Bundle, so every byte it sent was faulted in twice (docs/benchmarks.md,
 * Import, session 31). A buffer taken from here already has its pages.
 *
 * Rules for a caller: give back only a buffer (or a view of one) that nothing reads or writes any more, and only
 * once; a buffer never given back is simply collected. A buffer not from this pool is ignored by `give`.
 *
 * Kept: at most `maxBytes` in all, the most recently given first; a request takes the smallest free buffer that
 * holds it and is at most twice its size (so a small request does not pin a large buffer), else a new one of the
 * size rounded up to 64 KiB.
 */

const GRAIN = 64 * 1024

export class BufferPool {
  /** Free buffers, the most recently given last. */
  private readonly free: Array<ArrayBuffer> = []
  private freeBytes = 0
  /** Every buffer this pool made and not dropped (a WeakSet: one never given back is collected). */
  private readonly mine = new WeakSet<ArrayBuffer>()

  /** `maxBytes`: the most that free buffers may hold together. */
  constructor(readonly maxBytes: number) {}

  /** Bytes held by free buffers (for tests and figures). */
  get held(): number {
    return this.freeBytes
  }

  /** A buffer of exactly `size` bytes (a view of a pooled one), contents undefined. */
  take(size: number): Buffer {
    if (size < GRAIN) return Buffer.allocUnsafe(size)
    let best = -1
    for (let i = 0; i < this.free.length; i++) {
      const length = this.free[i]!.byteLength
      if (length >= size && length <= 2 * size && (best < 0 || length < this.free[best]!.byteLength)) best = i
    }
    if (best >= 0) {
      const ab = this.free.splice(best, 1)[0]!
      this.freeBytes -= ab.byteLength
      return Buffer.from(ab, 0, size)
    }
    const fresh = Buffer.allocUnsafeSlow(Math.ceil(size / GRAIN) * GRAIN)
    this.mine.add(fresh.buffer)
    return fresh.subarray(0, size)
  }

  /** Gives back the buffer `view` is part of (see the rules above). */
  give(view: Uint8Array): void {
    const ab = view.buffer
    if (!(ab instanceof ArrayBuffer) || !this.mine.has(ab) || this.free.includes(ab)) return
    if (ab.byteLength > this.maxBytes) {
      this.mine.delete(ab)
      return
    }
    this.free.push(ab)
    this.freeBytes += ab.byteLength
    while (this.freeBytes > this.maxBytes) {
      const dropped = this.free.shift()!
      this.mine.delete(dropped)
      this.freeBytes -= dropped.byteLength
    }
  }
}
