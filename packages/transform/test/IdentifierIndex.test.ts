import { describe, expect, it } from "@effect/vitest"
import type { Resource } from "@ferry/core/Ids"
import { references } from "@ferry/core/Walker"
import { IdentifierIndex } from "../src/IdentifierIndex.js"
import { ndjson, sampleText, sampleTypes } from "./data.js"

describe("IdentifierIndex", () => {
  it("resolves every conditional reference of the 10-patient bulk sample", () => {
    const index = IdentifierIndex.build([
      ...ndjson("Practitioner"),
      ...ndjson("Organization"),
      ...ndjson("Location"),
    ])
    expect(index.size).toBeGreaterThan(100)
    // independent count over the raw text
    let expected = 0
    for (const type of sampleTypes()) {
      expected += sampleText(type).match(/"reference":"[A-Z][A-Za-z]+\?identifier=/g)?.length ?? 0
    }
    expect(expected).toBe(10037)

    const byType = new Map<string, number>()
    const unresolved: Array<string> = []
    let resolved = 0
    for (const type of sampleTypes()) {
      for (const r of ndjson(type)) {
        for (const site of references(r)) {
          const p = site.parsed
          if (p._tag !== "Conditional") continue
          byType.set(p.type, (byType.get(p.type) ?? 0) + 1)
          if (p.identifier === undefined) {
            unresolved.push(`${type}/${r.id} ${site.path}: ${site.raw}`)
            continue
          }
          const hit = index.resolve(p.type, p.identifier.system, p.identifier.value)
          if (hit._tag === "Found") {
            expect(hit.key.startsWith(`${p.type}/`)).toBe(true)
            resolved++
          } else unresolved.push(`${type}/${r.id} ${site.path}: ${site.raw} (${hit._tag})`)
        }
      }
    }
    // every one of them: Practitioner by NPI, Organization and Location by Synthea id
    expect(unresolved).toEqual([])
    expect(resolved).toBe(expected)
    expect([...byType.keys()].sort()).toEqual(["Location", "Organization", "Practitioner"])
  })

  it("follows token search semantics for the system", () => {
    const rs: ReadonlyArray<Resource> = [
      { resourceType: "Patient", id: "a", identifier: [{ system: "urn:s1", value: "1" }] },
      { resourceType: "Patient", id: "b", identifier: [{ system: "urn:s2", value: "1" }, { value: "2" }] },
      { resourceType: "Practitioner", id: "c", identifier: [{ system: "urn:s1", value: "1" }] },
      { resourceType: "Patient", id: "d", identifier: [{ system: "urn:s3", value: "9" }] },
      { resourceType: "Patient", id: "e", identifier: [{ system: "urn:s3", value: "9" }] },
      { resourceType: "Patient", identifier: [{ system: "urn:s4", value: "no id" }] },
    ]
    const index = IdentifierIndex.build(rs)
    expect(index.resolve("Patient", "urn:s1", "1")).toEqual({ _tag: "Found", key: "Patient/a" })
    expect(index.resolve("Practitioner", "urn:s1", "1")).toEqual({ _tag: "Found", key: "Practitioner/c" })
    // any system
    expect(index.resolve("Patient", undefined, "1")).toEqual({
      _tag: "Ambiguous",
      keys: ["Patient/a", "Patient/b"],
    })
    // explicitly no system
    expect(index.resolve("Patient", "", "2")).toEqual({ _tag: "Found", key: "Patient/b" })
    expect(index.resolve("Patient", "", "1")).toEqual({ _tag: "NotFound" })
    expect(index.resolve("Patient", "urn:s3", "9")).toEqual({
      _tag: "Ambiguous",
      keys: ["Patient/d", "Patient/e"],
    })
    expect(index.resolve("Patient", "urn:s4", "no id")).toEqual({ _tag: "NotFound" })
  })

  it("indexes only the types asked for", () => {
    const index = IdentifierIndex.build(
      [
        { resourceType: "Patient", id: "a", identifier: [{ system: "s", value: "1" }] },
        { resourceType: "Observation", id: "o", identifier: [{ system: "s", value: "1" }] },
      ],
      { types: ["Patient"] },
    )
    expect(index.size).toBe(1)
    expect(index.resolve("Observation", "s", "1")._tag).toBe("NotFound")
    expect(index.resolve("Patient", "s", "1")._tag).toBe("Found")
  })
})
