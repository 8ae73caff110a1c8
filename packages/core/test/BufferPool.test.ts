import { describe, expect, it } from "@effect/vitest"
import { BufferPool } from "../src/BufferPool.js"

const KiB = 1024
const MiB = 1024 * KiB

describe("BufferPool", () => {
  it("hands a buffer given back out again, as a view of the size asked for", () => {
    const pool = new BufferPool(16 * MiB)
    const a = pool.take(700 * KiB)
    expect(a.length).toBe(700 * KiB)
    a.fill(7)
    pool.give(a)
    expect(pool.held).toBe(704 * KiB) // rounded up to 64 KiB
    const b = pool.take(650 * KiB)
    expect(b.buffer).toBe(a.buffer)
    expect(b.length).toBe(650 * KiB)
    expect(b[0]).toBe(7) // not cleared: the caller writes before it reads
    expect(pool.held).toBe(0)
    // taken again before it was given back: a new one
    expect(pool.take(650 * KiB).buffer).not.toBe(a.buffer)
  })

  it("gives the smallest free buffer that fits, never one more than twice the size asked for", () => {
    const pool = new BufferPool(16 * MiB)
    const big = pool.take(4 * MiB)
    const mid = pool.take(1 * MiB)
    const small = pool.take(256 * KiB)
    for (const b of [big, mid, small]) pool.give(b)
    expect(pool.take(900 * KiB).buffer).toBe(mid.buffer)
    // 200 KiB fits the 256 KiB one, not the 4 MiB one
    expect(pool.take(200 * KiB).buffer).toBe(small.buffer)
    // 1.5 MiB: only the 4 MiB one is free, more than twice that: a new buffer
    expect(pool.take(1.5 * MiB).buffer).not.toBe(big.buffer)
    expect(pool.take(3 * MiB).buffer).toBe(big.buffer)
  })

  it("keeps at most maxBytes, dropping the buffers given back longest ago", () => {
    const pool = new BufferPool(2 * MiB)
    const bufs = [pool.take(MiB), pool.take(MiB), pool.take(MiB)]
    for (const b of bufs) pool.give(b)
    expect(pool.held).toBe(2 * MiB)
    const first = pool.take(MiB)
    const second = pool.take(MiB)
    expect([first.buffer, second.buffer]).toEqual([bufs[2]!.buffer, bufs[1]!.buffer])
    // the dropped one stays dropped, even if given back again
    pool.give(bufs[0]!)
    expect(pool.held).toBe(0)
    // larger than the whole pool: not kept
    pool.give(pool.take(3 * MiB))
    expect(pool.held).toBe(0)
  })

  it("ignores a second give of the same buffer, small buffers and buffers it did not make", () => {
    const pool = new BufferPool(16 * MiB)
    const a = pool.take(MiB)
    pool.give(a)
    pool.give(a.subarray(10, 20)) // a view of the same buffer: already free
    expect(pool.held).toBe(MiB)
    expect(pool.take(MiB).buffer).toBe(a.buffer)
    expect(pool.take(MiB).buffer).not.toBe(a.buffer) // not handed out twice
    pool.give(pool.take(1000)) // below 64 KiB: a plain buffer, not pooled
    pool.give(Buffer.allocUnsafeSlow(MiB))
    expect(pool.held).toBe(0)
  })
})
