import { assert, describe, expect, it } from "@effect/vitest"
import { parse } from "@ferry/core/Reference"
import { references } from "@ferry/core/Walker"
import { Effect, Either } from "effect"
import { IdMap, isKey, parseKey } from "../src/IdMap.js"
import { syntheaPatientSet } from "./data.js"

describe("IdMap", () => {
  it("maps source keys to target keys", () => {
    const map = IdMap.empty()
    map.set("Patient/1", "Patient/abc").set("Observation/2", "Observation/def")
    expect(map.get("Patient/1")).toBe("Patient/abc")
    expect(map.has("Observation/2")).toBe(true)
    expect(map.get("Patient/2")).toBeUndefined()
    expect(map.has("Patient/2")).toBe(false)
    expect(map.size).toBe(2)
    expect(map.isKnown("Patient/1")).toBe(true)
    map.set("Patient/1", "Patient/xyz")
    expect(map.get("Patient/1")).toBe("Patient/xyz")
    expect(map.size).toBe(2)
    expect(map.known).toBe(2)
  })

  it("identity mode maps every well-formed key to itself unless told otherwise", () => {
    const map = IdMap.identity()
    expect(map.get("Patient/1")).toBe("Patient/1")
    expect(map.get("not a key")).toBeUndefined()
    map.set("Patient/123", "Patient/p-123")
    expect(map.get("Patient/123")).toBe("Patient/p-123")
    expect(map.size).toBe(1)
    expect(map.isKnown("Patient/1")).toBe(false)
  })

  it("counts the explicit mappings that rename (target differs from source), as they change", () => {
    const map = IdMap.identity()
    expect(map.renamed).toBe(0)
    map.set("Patient/1", "Patient/1")
    expect(map.renamed).toBe(0)
    map.set("Patient/2", "Patient/x")
    expect(map.renamed).toBe(1)
    map.set("Patient/2", "Patient/y")
    expect(map.renamed).toBe(1)
    map.set("Patient/2", "Patient/2")
    expect(map.renamed).toBe(0)
    map.set("Patient/1", "Patient/z")
    expect(map.renamed).toBe(1)
    expect(map.size).toBe(2)
  })

  it.effect("round-trips through NDJSON lines; later lines win", () =>
    Effect.gen(function* () {
      const map = IdMap.fromEntries([
        ["Patient/1", "Patient/abc"],
        ["Encounter/e.1", "Encounter/42"],
      ])
      const lines = Array.from(map.toNdjson())
      expect(lines).toEqual([
        '{"s":"Patient/1","t":"Patient/abc"}',
        '{"s":"Encounter/e.1","t":"Encounter/42"}',
      ])
      const back = yield* IdMap.fromNdjson([...lines, "", IdMap.line("Patient/1", "Patient/new")])
      expect(Array.from(back.entries())).toEqual([
        ["Patient/1", "Patient/new"],
        ["Encounter/e.1", "Encounter/42"],
      ])
      expect(back.resolveUrn("e.1")).toEqual({ _tag: "Found", key: "Encounter/e.1" })
    }),
  )

  it("rejects a damaged line with its line number", () => {
    const bad = [IdMap.line("Patient/1", "Patient/2"), '{"s":"Patient/1"}', "{not json"]
    const r = IdMap.fromNdjson(bad)
    assert(Either.isLeft(r))
    expect(r.left._tag).toBe("TransformError")
    expect(r.left.reason).toBe("IdMapLine")
    expect(r.left.position).toBe(2)
    expect(r.left.message).toContain("line 2")
    const notJson = IdMap.parseLine("{not json", 7)
    assert(Either.isLeft(notJson))
    expect(notJson.left.position).toBe(7)
    assert(Either.isLeft(IdMap.parseLine('{"s":"Patient/1","t":"patient/2"}')))
    assert(Either.isLeft(IdMap.parseLine('["Patient/1","Patient/2"]')))
  })

  it("parses keys", () => {
    expect(parseKey("Patient/a-1.2")).toEqual({ type: "Patient", id: "a-1.2" })
    expect(isKey("Patient")).toBe(false)
    expect(isKey("Patient/")).toBe(false)
    expect(isKey("patient/1")).toBe(false)
    expect(isKey("Patient/1/_history/2")).toBe(false)
    expect(isKey(`Patient/${"x".repeat(65)}`)).toBe(false)
  })

  it("resolves urn:uuid only when exactly one registered resource has the id", () => {
    const map = IdMap.empty()
    map.register("Patient/6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2")
    map.register("Observation/shared")
    map.register("Condition/shared")
    expect(map.register("Condition/shared")).toBe(false)
    expect(map.register("junk")).toBe(false)
    expect(map.resolveUrn("6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2")).toEqual({
      _tag: "Found",
      key: "Patient/6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2",
    })
    // UUIDs are case-insensitive
    expect(map.resolveUrn("6C5D9CA9-54D7-42F5-BFAE-A7C19CD217F2")).toEqual({
      _tag: "Found",
      key: "Patient/6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2",
    })
    expect(map.resolveUrn("shared")).toEqual({
      _tag: "Ambiguous",
      keys: ["Observation/shared", "Condition/shared"],
    })
    expect(map.resolveUrn("nope")).toEqual({ _tag: "NotFound" })
    expect(map.known).toBe(3)
    expect(map.size).toBe(0)
    map.set("Patient/6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2", "Patient/77")
    expect(map.lookup("urn:uuid:6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2")).toBe("Patient/77")
    expect(map.lookup("Patient/6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2")).toBe("Patient/77")
    expect(map.lookup("urn:uuid:shared")).toBeUndefined()
  })

  it("keeps every registration through the growth of its tables (thousands of ids, some shared by types)", () => {
    const map = IdMap.empty()
    for (let i = 0; i < 5000; i++) expect(map.register(`Observation/o-${i}`)).toBe(true)
    for (let i = 0; i < 5000; i += 7) expect(map.register(`Condition/o-${i}`)).toBe(true)
    for (let i = 0; i < 5000; i += 7) expect(map.register(`Condition/o-${i}`)).toBe(false)
    expect(map.known).toBe(5000 + Math.ceil(5000 / 7))
    for (let i = 0; i < 5000; i++) {
      expect(map.isKnown(`Observation/o-${i}`)).toBe(true)
      expect(map.isKnown(`Condition/o-${i}`)).toBe(i % 7 === 0)
      expect(map.resolveUrn(`o-${i}`)).toEqual(
        i % 7 === 0
          ? { _tag: "Ambiguous", keys: [`Observation/o-${i}`, `Condition/o-${i}`] }
          : { _tag: "Found", key: `Observation/o-${i}` },
      )
    }
    expect(map.isKnown("Patient/o-1")).toBe(false)
  })

  it("resolves every urn:uuid reference of a real Synthea patient to a registered resource", () => {
    const resources = syntheaPatientSet()
    const map = IdMap.empty()
    for (const r of resources) map.register(`${r.resourceType}/${r.id}`)
    expect(map.known).toBe(resources.length)
    let urns = 0
    const missing: Array<string> = []
    for (const r of resources) {
      for (const site of references(r)) {
        if (site.raw === undefined) continue
        const parsed = parse(site.raw)
        if (parsed._tag !== "UrnUuid") continue
        urns++
        const hit = map.resolveUrn(parsed.uuid)
        if (hit._tag !== "Found") missing.push(site.raw)
        else expect(hit.key.endsWith(`/${parsed.uuid}`)).toBe(true)
      }
    }
    expect(urns).toBeGreaterThan(300)
    expect(missing).toEqual([])
  })
})
