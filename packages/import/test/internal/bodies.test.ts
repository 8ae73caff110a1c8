import { assert, describe, it } from "@effect/vitest"
import { lineBytes, Locations, spans } from "../../src/internal/bodies.js"

describe("Locations", () => {
  it("keeps each node's file, line, offset and size, the last one given winning; unknown nodes have file -1", () => {
    const loc = new Locations()
    loc.set(0, 2, 1, 0, 10)
    loc.set(5000, 1, 7, 3_000_000_000, 42)
    loc.set(0, 3, 9, 100, 11)
    assert.strictEqual(loc.file(0), 3)
    assert.strictEqual(loc.line(0), 9)
    assert.strictEqual(loc.offset(0), 100)
    assert.strictEqual(loc.bytes(0), 11)
    assert.strictEqual(loc.offset(5000), 3_000_000_000, "offsets beyond 2 GiB")
    assert.strictEqual(loc.file(1), -1)
    assert.strictEqual(loc.file(4999), -1)
    assert.strictEqual(loc.file(1_000_000), -1)
  })
})

describe("spans (the positioned reads that fetch a chunk's lines)", () => {
  const loc = new Locations()
  // file 0: lines of 100 bytes back to back; file 1: lines 1 MiB apart
  for (let i = 0; i < 10; i++) loc.set(i, 0, i + 1, i * 100, 100)
  for (let i = 0; i < 4; i++) loc.set(10 + i, 1, i + 1, i * 1024 * 1024, 50)

  it("merges neighbouring lines of a file into one read, in offset order, whatever the order asked", () => {
    const got = spans([3, 1, 2, 12, 0, 11], loc)
    assert.deepStrictEqual(
      got.map((s) => [s.file, s.start, s.end, [...s.nodes]]),
      [
        [0, 0, 400, [0, 1, 2, 3]],
        [1, 1024 * 1024, 1024 * 1024 + 50, [11]],
        [1, 2 * 1024 * 1024, 2 * 1024 * 1024 + 50, [12]],
      ],
    )
  })

  it("bridges gaps up to maxGap and splits reads at maxSpan (a longer line alone)", () => {
    assert.deepStrictEqual(
      spans([0, 5], loc, { maxGap: 400 }).map((s) => [s.start, s.end]),
      [[0, 600]],
    )
    assert.deepStrictEqual(
      spans([0, 5], loc, { maxGap: 399 }).map((s) => [s.start, s.end]),
      [
        [0, 100],
        [500, 600],
      ],
    )
    assert.deepStrictEqual(
      spans([0, 1, 2, 3, 4], loc, { maxSpan: 250 }).map((s) => [...s.nodes]),
      [[0, 1], [2, 3], [4]],
    )
    const big = new Locations()
    big.set(0, 0, 1, 0, 10)
    big.set(1, 0, 2, 10, 1000)
    assert.deepStrictEqual(
      spans([0, 1], big, { maxSpan: 100 }).map((s) => [s.start, s.end]),
      [
        [0, 10],
        [10, 1010],
      ],
    )
    assert.deepStrictEqual(spans([], loc), [])
  })
})

describe("lineBytes", () => {
  it("gives the line without LF or CRLF, multi-byte text intact, an unterminated last line whole", () => {
    const buf = Buffer.from('{"a":"é"}\r\n{"b":1}\n{"c":2}')
    const first = Buffer.byteLength('{"a":"é"}\r\n')
    assert.strictEqual(lineBytes(buf, 0, first).toString(), '{"a":"é"}')
    assert.strictEqual(lineBytes(buf, first, 8).toString(), '{"b":1}')
    assert.strictEqual(lineBytes(buf, first + 8, 7).toString(), '{"c":2}')
  })
})
