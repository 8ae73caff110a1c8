import { describe, expect, it } from "@effect/vitest"
import { KeyTable, NumberMultimap, withRoom } from "../src/KeyTable.js"

describe("KeyTable", () => {
  it("numbers keys in the order they were added and finds them again, like a Map, through many growths", () => {
    const table = new KeyTable()
    const mirror = new Map<string, number>()
    for (let i = 0; i < 60_000; i++) {
      const key = `Observation/${(i * 7919) % 45_000}` // 15,000 repeats
      const expected = mirror.get(key) ?? mirror.size
      mirror.set(key, expected)
      expect(table.add(key)).toBe(expected)
    }
    expect(table.size).toBe(45_000)
    for (const [key, n] of mirror) {
      expect(table.get(key)).toBe(n)
      expect(table.key(n)).toBe(key)
    }
    expect(table.get("Observation/45000")).toBe(-1)
    expect(table.has("Observation/44999")).toBe(true)
  })

  it("tells apart two keys with the same 32-bit hash", () => {
    // FNV-1a 32 of both is 0x0273aeca (found by search)
    const table = new KeyTable()
    expect(table.add("Observation/958859")).toBe(0)
    expect(table.get("Observation/1077102")).toBe(-1)
    expect(table.add("Observation/1077102")).toBe(1)
    expect(table.get("Observation/958859")).toBe(0)
    expect(table.get("Observation/1077102")).toBe(1)
    expect(table.key(1)).toBe("Observation/1077102")
  })

  it("looks up and adds a range of a string without taking it apart", () => {
    const table = new KeyTable()
    const key = "Patient/abc-123"
    expect(table.add(key, 8)).toBe(0)
    expect(table.get("abc-123")).toBe(0)
    expect(table.get("xxabc-123yy", 2, 9)).toBe(0)
    expect(table.key(0)).toBe("abc-123")
    expect(table.add("abc-123")).toBe(0)
  })

  it("keeps every character of Latin-1 (U+0080–U+009F included), and other strings beside them", () => {
    const table = new KeyTable()
    const latin = "Type/\u0080\u0099\u009f\u00ff\u00e9"
    const wide = "Type/\u20ac\u{1f600}"
    const long = `Type/${"x".repeat(300)}`
    const keys = [latin, wide, long, "", "a"]
    for (const [i, k] of keys.entries()) expect(table.add(k)).toBe(i)
    for (const [i, k] of keys.entries()) {
      expect(table.get(k)).toBe(i)
      expect(table.key(i)).toBe(k)
    }
    expect(table.get("Type/\u20ac")).toBe(-1)
    expect(table.add(wide)).toBe(1)
    expect(table.size).toBe(5)
  })

  it("spreads the characters over several pages once 16 MiB are used, and still finds every key", () => {
    const table = new KeyTable()
    const key = (i: number) => `DocumentReference/${i.toString(36).padStart(200, "0")}`
    const n = 90_000 // ≈ 19.6 MB of characters
    for (let i = 0; i < n; i++) expect(table.add(key(i))).toBe(i)
    for (let i = 0; i < n; i += 997) {
      expect(table.get(key(i))).toBe(i)
      expect(table.key(i)).toBe(key(i))
    }
    expect(table.key(n - 1)).toBe(key(n - 1))
  })

  it("refuses numbers it never gave", () => {
    const table = new KeyTable()
    table.add("a")
    expect(() => table.key(1)).toThrow(RangeError)
    expect(() => table.key(-1)).toThrow(RangeError)
  })
  it("withRoom: the same array while the index fits, else a longer copy with the same values", () => {
    const a = Int32Array.from([1, 2, 3])
    expect(withRoom(a, 2)).toBe(a)
    const b = withRoom(a, 3)
    expect(b.length).toBeGreaterThan(3)
    expect(Array.from(b.subarray(0, 3))).toEqual([1, 2, 3])
    expect(withRoom(new Int32Array(0), 100).length).toBeGreaterThan(100)
  })
  it("NumberMultimap: one number per string, or several in the order added; add says whether it was new", () => {
    const m = new NumberMultimap()
    expect(m.add(3, "Patient/p1", 8)).toBe(true)
    expect(m.add(3, "p1")).toBe(false)
    expect(m.get("p1")).toEqual([3])
    expect(m.add(5, "p1")).toBe(true)
    expect(m.add(4, "p1")).toBe(true)
    expect(m.add(5, "p1")).toBe(false)
    expect(m.get("xp1x", 1, 3)).toEqual([3, 5, 4])
    expect(m.has(4, "p1")).toBe(true)
    expect(m.has(6, "p1")).toBe(false)
    expect(m.has(3, "p2")).toBe(false)
    expect(m.get("p2")).toEqual([])
    for (let i = 0; i < 3000; i++) expect(m.add(i % 7, `k${i}`)).toBe(true)
    for (let i = 0; i < 3000; i++) expect(m.get(`k${i}`)).toEqual([i % 7])
  })
})
