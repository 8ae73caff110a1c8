import { assert, describe, it } from "@effect/vitest"
import { extractReferences } from "../src/internal/References.js"
import { rewrite, shortestKey } from "../src/Transaction.js"

const BASE = "http://s.example/fhir"

describe("extractReferences", () => {
  it("gives every reference to this server once per top-level element, skipping contained, text and meta", () => {
    const r = {
      resourceType: "Encounter",
      id: "e1",
      meta: { source: "x", tag: [{ reference: "Patient/meta" }] },
      text: { div: "<div/>", reference: "Patient/text" },
      contained: [
        { resourceType: "Patient", id: "c", link: [{ other: { reference: "Patient/contained" } }] },
      ],
      subject: { reference: "Patient/p1" },
      participant: [
        { individual: { reference: `${BASE}/Practitioner/d1` } },
        { individual: { reference: "Practitioner/d1" } },
        { individual: { reference: "Practitioner/d2/_history/3" } },
      ],
      reasonReference: [{ reference: "Patient/p1" }, { reference: "#c" }, { reference: "urn:uuid:1" }],
      extension: [{ url: "u", valueReference: { reference: "Location/l1" } }],
      serviceProvider: { reference: "http://elsewhere.example/fhir/Organization/o1" },
      location: [
        { location: { reference: "Location/l1" } },
        { location: { reference: "Organization?identifier=a|b" } },
      ],
    }
    assert.deepStrictEqual(extractReferences(r, BASE), [
      ["subject", "Patient/p1"],
      ["participant", "Practitioner/d1"],
      ["participant", "Practitioner/d2"],
      ["reasonReference", "Patient/p1"],
      ["extension", "Location/l1"],
      ["location", "Location/l1"],
    ])
  })
})

describe("rewrite", () => {
  it("replaces strings equal to a fullUrl, however short the other strings are, and resolves references", () => {
    const map = new Map([
      ["urn:uuid:0b6a3f0e-1c1a-4a4e-9d0a-8f3e2c1b0a99", "Patient/p1"],
      ["http://s.example/fhir/Practitioner/d1", "Practitioner/d1"],
    ])
    const r = {
      resourceType: "Encounter",
      status: "finished",
      subject: { reference: "urn:uuid:0b6a3f0e-1c1a-4a4e-9d0a-8f3e2c1b0a99" },
      participant: [{ individual: { reference: "http://s.example/fhir/Practitioner/d1" } }],
      location: [{ location: { reference: "Location?identifier=x" } }],
      note: ["urn:uuid:0b6a3f0e-1c1a-4a4e-9d0a-8f3e2c1b0a99", "short"],
      text: { div: '<div><a href="urn:uuid:0b6a3f0e-1c1a-4a4e-9d0a-8f3e2c1b0a99">p</a></div>' },
    }
    rewrite(r, map, (s) => (s.startsWith("Location?") ? "Location/l1" : undefined), shortestKey(map))
    assert.deepStrictEqual(r, {
      resourceType: "Encounter",
      status: "finished",
      subject: { reference: "Patient/p1" },
      participant: [{ individual: { reference: "Practitioner/d1" } }],
      location: [{ location: { reference: "Location/l1" } }],
      note: ["Patient/p1", "short"],
      text: { div: '<div><a href="Patient/p1">p</a></div>' },
    })
  })
})
