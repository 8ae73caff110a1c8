import { createHash, randomBytes } from "node:crypto"
import { describe, expect, it } from "@effect/vitest"
import { DigestSet, digest16 } from "../src/DigestSet.js"

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex")

describe("DigestSet", () => {
  it("holds exactly what was added, through many growths, like a Set of the hex strings", () => {
    const set = new DigestSet(32, 4)
    const mirror = new Set<string>()
    for (let i = 0; i < 20_000; i++) {
      const hex = sha256(String(i % 15_000)) // 5,000 repeats
      expect(set.addHex(hex)).toBe(!mirror.has(hex))
      mirror.add(hex)
    }
    expect(set.size).toBe(15_000)
    for (let i = 0; i < 15_000; i++) expect(set.hasHex(sha256(String(i)))).toBe(true)
    for (let i = 15_000; i < 25_000; i++) expect(set.hasHex(sha256(String(i)))).toBe(false)
  })

  it("tells apart digests that share their first bytes (same home slot)", () => {
    const set = new DigestSet(16)
    const a = Buffer.alloc(16, 7)
    const b = Buffer.from(a)
    b[15] = 8
    expect(set.add(a)).toBe(true)
    expect(set.has(b)).toBe(false)
    expect(set.add(b)).toBe(true)
    expect(set.has(a) && set.has(b)).toBe(true)
    expect(set.size).toBe(2)
  })

  it("stores the all-zero digest (the empty-slot pattern) as a member like any other", () => {
    const set = new DigestSet(16)
    const zero = new Uint8Array(16)
    expect(set.has(zero)).toBe(false)
    expect(set.add(zero)).toBe(true)
    expect(set.add(zero)).toBe(false)
    expect(set.has(zero)).toBe(true)
    expect(set.size).toBe(1)
  })

  it("refuses a digest of another width and hex that is not a digest", () => {
    const set = new DigestSet(32)
    expect(() => set.add(randomBytes(16))).toThrow(/16-byte digest in a DigestSet of 32-byte/)
    expect(() => set.hasHex("abc")).toThrow(/not a 32-byte hex digest/)
    expect(() => set.addHex("zz".repeat(32))).toThrow(/not a 32-byte hex digest/)
    expect(() => new DigestSet(2)).toThrow(/below 4 bytes/)
  })

  it("digest16 stands for a string: equal strings, equal digests; others differ", () => {
    const set = new DigestSet(16)
    set.add(digest16("https://src.example.org/fhir/Binary/1"))
    expect(set.has(digest16("https://src.example.org/fhir/Binary/1"))).toBe(true)
    expect(set.has(digest16("https://src.example.org/fhir/Binary/2"))).toBe(false)
  })
})
