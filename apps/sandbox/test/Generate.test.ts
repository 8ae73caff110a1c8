import { createHash } from "node:crypto"
import { assert, describe, it, layer } from "@effect/vitest"
import { Effect } from "effect"
import { generate } from "../src/Generate.js"
import { extractReferences } from "../src/internal/References.js"
import { Sandbox } from "../src/Sandbox.js"
import { Store } from "../src/Store.js"
import { at, call } from "./http.js"

/** Every resource of a store without meta, with the base URL replaced, keyed by Type/id. */
const snapshot = (store: Store, baseUrl: string): Map<string, string> => {
  const out = new Map<string, string>()
  for (const type of store.types()) {
    for (const r of store.iterate(type)) {
      const { meta: _meta, ...rest } = JSON.parse(r.json) as Record<string, unknown>
      out.set(`${r.type}/${r.id}`, JSON.stringify(rest).split(baseUrl).join("BASE"))
    }
  }
  return out
}

describe("Generate", () => {
  it("is deterministic: same N and seed give the same resources", () => {
    const a = Store.open(":memory:")
    const b = Store.open(":memory:")
    const ra = generate(a, "http://a.example/fhir", { patients: 30, batch: 7 })
    const rb = generate(b, "http://b.example/fhir", { patients: 30 })
    assert.deepStrictEqual(ra, rb)
    const sa = snapshot(a, "http://a.example/fhir")
    const sb = snapshot(b, "http://b.example/fhir")
    assert.strictEqual(sa.size, 30 * 23 + 1 + 2)
    assert.strictEqual(ra.resources, sa.size)
    assert.deepStrictEqual([...sa.entries()].sort(), [...sb.entries()].sort())
    const c = Store.open(":memory:")
    generate(c, "http://a.example/fhir", { patients: 30, seed: 2 })
    assert.notDeepEqual([...snapshot(c, "http://a.example/fhir").entries()].sort(), [...sa.entries()].sort())
    for (const s of [a, b, c]) s.close()
  })

  it("makes a connected graph with Encounter <-> Condition cycles and resolvable references", () => {
    const s = Store.open(":memory:")
    s.setBaseUrl("http://g.example/fhir")
    generate(s, "http://g.example/fhir", { patients: 12 })
    assert.deepStrictEqual(s.types(), [
      "Binary",
      "Condition",
      "DocumentReference",
      "Encounter",
      "MedicationRequest",
      "Observation",
      "Organization",
      "Patient",
      "Practitioner",
    ])
    for (const type of s.types()) {
      for (const r of s.iterate(type)) {
        for (const [, target] of extractReferences(JSON.parse(r.json), "http://g.example/fhir")) {
          const [t, id] = target.split("/") as [string, string]
          assert.isDefined(s.read(t, id), `${r.type}/${r.id} -> ${target}`)
        }
      }
    }
    const enc = JSON.parse(s.read("Encounter", "gen-enc-3-1")!.json)
    const condRef = enc.diagnosis[0].condition.reference as string
    const cond = JSON.parse(s.read("Condition", condRef.split("/")[1]!)!.json)
    assert.strictEqual(cond.encounter.reference, "Encounter/gen-enc-3-1")
    const doc = JSON.parse(s.read("DocumentReference", "gen-doc-3")!.json)
    const att = doc.content[0].attachment
    const bin = s.getBinary(att.url.split("/").pop())!
    assert.strictEqual(att.size, bin.bytes.length)
    assert.strictEqual(att.hash, createHash("sha1").update(bin.bytes).digest("base64"))
    assert.strictEqual(s.count("Observation", { referencing: { targets: ["Patient/gen-pat-3"] } }), 12)
    s.close()
  })

  layer(Sandbox.layer({ generate: 5 }, { plugins: [] }))("--generate via config", (it) => {
    it.effect("serves the generated patients and their attachments", () =>
      Effect.gen(function* () {
        const { baseUrl, loaded } = yield* Sandbox
        assert.strictEqual(loaded.generated?.patients, 5)
        const r = yield* call(`${baseUrl}/Patient?_summary=count`)
        assert.strictEqual(at(r.body, "total"), 5)
        const doc = yield* call(`${baseUrl}/DocumentReference/gen-doc-0`)
        const url = at(doc.body, "content.0.attachment.url") as string
        assert.strictEqual(url, `${baseUrl}/Binary/gen-bin-0`)
        const raw = yield* call(url)
        assert.match(raw.text, /^Clinical note for /)
      }),
    )
  })
})
