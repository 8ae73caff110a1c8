import { assert, describe, layer } from "@effect/vitest"
import { Effect } from "effect"
import { Sandbox } from "../src/Sandbox.js"
import { at, call, fhirJson, str } from "./http.js"

const bundle = (type: "transaction" | "batch", entry: unknown[]) => ({ resourceType: "Bundle", type, entry })
const post = (fullUrl: string, resource: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  fullUrl,
  resource,
  request: { method: "POST", url: resource.resourceType, ...extra },
})
const put = (resource: Record<string, unknown> & { id: string }) => ({
  fullUrl: `http://source.example/fhir/${resource.resourceType}/${resource.id}`,
  resource,
  request: { method: "PUT", url: `${resource.resourceType}/${resource.id}` },
})

const locationId = (r: unknown, i: number): string => {
  const loc = str(r, `entry.${i}.response.location`)
  assert.match(loc, /^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]+\/_history\/\d+$/)
  return loc.split("/")[1]!
}

const totalCount = Sandbox.pipe(Effect.map(({ store }) => store.countAll()))

layer(
  Sandbox.layer(
    { maxBundleEntries: 10, rejectRule: { type: "Observation", missing: "status" } },
    { plugins: [] },
  ),
)("transactions", (it) => {
  it.effect(
    "urn:uuid fullUrls get server ids and every link in the Bundle is rewritten (cycle, Attachment.url)",
    () =>
      Effect.gen(function* () {
        const { baseUrl } = yield* Sandbox
        const P = "urn:uuid:11111111-1111-4111-8111-111111111111"
        const E = "urn:uuid:22222222-2222-4222-8222-222222222222"
        const C = "urn:uuid:33333333-3333-4333-8333-333333333333"
        const B = "urn:uuid:44444444-4444-4444-8444-444444444444"
        const D = "urn:uuid:55555555-5555-4555-8555-555555555555"
        const r = yield* call(
          baseUrl,
          fhirJson(
            "POST",
            bundle("transaction", [
              post(E, {
                resourceType: "Encounter",
                status: "finished",
                subject: { reference: P },
                diagnosis: [{ condition: { reference: C } }],
              }),
              post(C, { resourceType: "Condition", subject: { reference: P }, encounter: { reference: E } }),
              post(D, {
                resourceType: "DocumentReference",
                status: "current",
                subject: { reference: P },
                text: {
                  status: "generated",
                  div: `<div xmlns="http://www.w3.org/1999/xhtml"><a href="${B}">doc</a></div>`,
                },
                content: [{ attachment: { contentType: "text/plain", url: B } }],
              }),
              post(B, {
                resourceType: "Binary",
                contentType: "text/plain",
                data: Buffer.from("note").toString("base64"),
              }),
              post(P, { resourceType: "Patient", name: [{ family: "Urn" }] }),
            ]),
          ),
        )
        assert.strictEqual(r.status, 200)
        assert.strictEqual(at(r.body, "type"), "transaction-response")
        assert.strictEqual(at(r.body, "entry.length"), 5)
        assert.strictEqual(at(r.body, "entry.0.response.status"), "201 Created")
        const [enc, cond, doc, bin, pat] = [0, 1, 2, 3, 4].map((i) => locationId(r.body, i))
        assert.match(str(r.body, "entry.4.response.location"), /^Patient\//)

        const e = yield* call(`${baseUrl}/Encounter/${enc}`)
        assert.strictEqual(at(e.body, "subject.reference"), `Patient/${pat}`)
        assert.strictEqual(at(e.body, "diagnosis.0.condition.reference"), `Condition/${cond}`)
        const c = yield* call(`${baseUrl}/Condition/${cond}`)
        assert.strictEqual(at(c.body, "encounter.reference"), `Encounter/${enc}`)
        const d = yield* call(`${baseUrl}/DocumentReference/${doc}`)
        assert.strictEqual(at(d.body, "content.0.attachment.url"), `Binary/${bin}`)
        assert.include(str(d.body, "text.div"), `href="Binary/${bin}"`)
        assert.notInclude(d.text, "urn:uuid")
        assert.strictEqual((yield* call(`${baseUrl}/Binary/${bin}`)).text, "note")
        const search = yield* call(`${baseUrl}/Observation?patient=${pat}&_summary=count`)
        assert.strictEqual(at(search.body, "total"), 0)
        const byEnc = yield* call(`${baseUrl}/Condition?patient=${pat}`)
        assert.strictEqual(at(byEnc.body, "total"), 1)
      }),
  )

  it.effect("a failing entry rolls the whole transaction back and names the entry", () =>
    Effect.gen(function* () {
      const { baseUrl } = yield* Sandbox
      yield* call(
        `${baseUrl}/Patient/keep`,
        fhirJson("PUT", { resourceType: "Patient", id: "keep", active: true }),
      )
      const before = yield* totalCount
      const r = yield* call(
        baseUrl,
        fhirJson(
          "POST",
          bundle("transaction", [
            post("urn:uuid:a1", { resourceType: "Patient", name: [{ family: "Rollback" }] }),
            put({ resourceType: "Patient", id: "rb-put", active: true }),
            { request: { method: "DELETE", url: "Patient/keep" } },
            post("urn:uuid:a4", { resourceType: "Observation", code: { text: "no status" } }),
          ]),
        ),
      )
      assert.strictEqual(r.status, 422)
      assert.strictEqual(at(r.body, "resourceType"), "OperationOutcome")
      assert.deepStrictEqual(at(r.body, "issue.0.expression"), ["Bundle.entry[3]"])
      assert.include(str(r.body, "issue.0.diagnostics"), "urn:uuid:a4")
      assert.strictEqual(yield* totalCount, before)
      assert.strictEqual((yield* call(`${baseUrl}/Patient/rb-put`)).status, 404)
      assert.strictEqual((yield* call(`${baseUrl}/Patient/keep`)).status, 200)
    }),
  )

  it.effect("processing order: DELETE before POST before PUT before GET; one identity only once", () =>
    Effect.gen(function* () {
      const { baseUrl } = yield* Sandbox
      yield* call(`${baseUrl}/Patient/ord-del`, fhirJson("PUT", { resourceType: "Patient", id: "ord-del" }))
      const r = yield* call(
        baseUrl,
        fhirJson(
          "POST",
          bundle("transaction", [
            { request: { method: "GET", url: "Patient/ord-put" } },
            put({ resourceType: "Patient", id: "ord-put", active: true }),
            { request: { method: "DELETE", url: "Patient/ord-del" } },
          ]),
        ),
      )
      assert.strictEqual(r.status, 200)
      assert.strictEqual(at(r.body, "entry.0.response.status"), "200 OK")
      assert.strictEqual(at(r.body, "entry.0.resource.id"), "ord-put", "GET runs after the PUT")
      assert.strictEqual(at(r.body, "entry.1.response.status"), "201 Created")
      assert.strictEqual(at(r.body, "entry.1.response.location"), "Patient/ord-put/_history/1")
      assert.strictEqual(at(r.body, "entry.2.response.status"), "204 No Content")
      assert.strictEqual((yield* call(`${baseUrl}/Patient/ord-del`)).status, 410)
      const dup = yield* call(
        baseUrl,
        fhirJson(
          "POST",
          bundle("transaction", [
            put({ resourceType: "Patient", id: "dup", active: true }),
            put({ resourceType: "Patient", id: "dup", active: false }),
          ]),
        ),
      )
      assert.strictEqual(dup.status, 400)
      assert.strictEqual((yield* call(`${baseUrl}/Patient/dup`)).status, 404)
    }),
  )

  it.effect("conditional create (ifNoneExist) is idempotent across replays", () =>
    Effect.gen(function* () {
      const { baseUrl, store } = yield* Sandbox
      const b = bundle("transaction", [
        post(
          "urn:uuid:cc",
          { resourceType: "Patient", identifier: [{ system: "urn:test:tx", value: "cc-1" }] },
          { ifNoneExist: "identifier=urn:test:tx|cc-1" },
        ),
        post("urn:uuid:obs", {
          resourceType: "Observation",
          status: "final",
          subject: { reference: "urn:uuid:cc" },
        }),
      ])
      const first = yield* call(baseUrl, fhirJson("POST", b))
      assert.strictEqual(at(first.body, "entry.0.response.status"), "201 Created")
      const before = store.count("Patient")
      const second = yield* call(baseUrl, fhirJson("POST", b))
      assert.strictEqual(at(second.body, "entry.0.response.status"), "200 OK")
      assert.strictEqual(locationId(second.body, 0), locationId(first.body, 0))
      assert.strictEqual(store.count("Patient"), before)
      const obs = yield* call(`${baseUrl}/Observation/${locationId(second.body, 1)}`)
      assert.strictEqual(at(obs.body, "subject.reference"), `Patient/${locationId(first.body, 0)}`)
    }),
  )

  it.effect("conditional references resolve to the unique match; none or several fail the transaction", () =>
    Effect.gen(function* () {
      const { baseUrl, store } = yield* Sandbox
      const npi = (v: string) => ({
        resourceType: "Practitioner",
        identifier: [{ system: "urn:npi", value: v }],
      })
      yield* call(`${baseUrl}/Practitioner/pr-1`, fhirJson("PUT", { ...npi("111"), id: "pr-1" }))
      yield* call(`${baseUrl}/Practitioner/pr-2a`, fhirJson("PUT", { ...npi("222"), id: "pr-2a" }))
      yield* call(`${baseUrl}/Practitioner/pr-2b`, fhirJson("PUT", { ...npi("222"), id: "pr-2b" }))
      const enc = (ref: string) =>
        bundle("transaction", [
          post("urn:uuid:e", {
            resourceType: "Encounter",
            status: "finished",
            participant: [{ individual: { reference: ref } }],
          }),
        ])
      const ok = yield* call(baseUrl, fhirJson("POST", enc("Practitioner?identifier=urn:npi|111")))
      assert.strictEqual(ok.status, 200)
      const e = yield* call(`${baseUrl}/Encounter/${locationId(ok.body, 0)}`)
      assert.strictEqual(at(e.body, "participant.0.individual.reference"), "Practitioner/pr-1")

      const before = store.count("Encounter")
      const none = yield* call(baseUrl, fhirJson("POST", enc("Practitioner?identifier=urn:npi|999")))
      assert.strictEqual(none.status, 404)
      assert.deepStrictEqual(at(none.body, "issue.0.expression"), ["Bundle.entry[0]"])
      const many = yield* call(baseUrl, fhirJson("POST", enc("Practitioner?identifier=urn:npi|222")))
      assert.strictEqual(many.status, 412)
      const unsupported = yield* call(baseUrl, fhirJson("POST", enc("Practitioner?name=Smith")))
      assert.strictEqual(unsupported.status, 400)
      assert.deepStrictEqual(at(unsupported.body, "issue.0.expression"), ["Bundle.entry[0]"])
      assert.strictEqual(store.count("Encounter"), before)

      // a match created in the same transaction
      const same = yield* call(
        baseUrl,
        fhirJson(
          "POST",
          bundle("transaction", [
            post("urn:uuid:e2", {
              resourceType: "Encounter",
              status: "finished",
              participant: [{ individual: { reference: "Practitioner?identifier=urn:npi|333" } }],
            }),
            post("urn:uuid:p3", npi("333")),
          ]),
        ),
      )
      assert.strictEqual(same.status, 200)
      const e2 = yield* call(`${baseUrl}/Encounter/${locationId(same.body, 0)}`)
      assert.strictEqual(
        at(e2.body, "participant.0.individual.reference"),
        `Practitioner/${locationId(same.body, 1)}`,
      )
    }),
  )

  it.effect("batch: each entry on its own, per-entry statuses, HTTP 200", () =>
    Effect.gen(function* () {
      const { baseUrl } = yield* Sandbox
      const r = yield* call(
        baseUrl,
        fhirJson(
          "POST",
          bundle("batch", [
            post("urn:uuid:b1", { resourceType: "Patient", name: [{ family: "Batch" }] }),
            post("urn:uuid:b2", { resourceType: "Observation", code: { text: "no status" } }),
            { request: { method: "GET", url: "Patient/batch-missing" } },
            put({ resourceType: "Patient", id: "batch-put", active: true }),
            { request: { method: "PATCH", url: "Patient/batch-put" } },
          ]),
        ),
      )
      assert.strictEqual(r.status, 200)
      assert.strictEqual(at(r.body, "type"), "batch-response")
      assert.strictEqual(at(r.body, "entry.0.response.status"), "201 Created")
      assert.strictEqual(at(r.body, "entry.1.response.status"), "422 Unprocessable Entity")
      assert.strictEqual(at(r.body, "entry.1.response.outcome.resourceType"), "OperationOutcome")
      assert.strictEqual(at(r.body, "entry.2.response.status"), "404 Not Found")
      assert.strictEqual(at(r.body, "entry.3.response.location"), "Patient/batch-put/_history/1")
      assert.strictEqual(at(r.body, "entry.4.response.status"), "400 Bad Request")
      assert.strictEqual((yield* call(`${baseUrl}/Patient/${locationId(r.body, 0)}`)).status, 200)
    }),
  )

  it.effect("Bundles above maxBundleEntries get 413; non-Bundles 400", () =>
    Effect.gen(function* () {
      const { baseUrl, store } = yield* Sandbox
      const before = store.countAll()
      const entries = Array.from({ length: 11 }, (_, i) =>
        post(`urn:uuid:m${i}`, { resourceType: "Patient" }),
      )
      const r = yield* call(baseUrl, fhirJson("POST", bundle("transaction", entries)))
      assert.strictEqual(r.status, 413)
      assert.strictEqual(at(r.body, "resourceType"), "OperationOutcome")
      assert.strictEqual(store.countAll(), before)
      const ok = yield* call(baseUrl, fhirJson("POST", bundle("batch", entries.slice(0, 10))))
      assert.strictEqual(ok.status, 200)
      assert.strictEqual((yield* call(baseUrl, fhirJson("POST", { resourceType: "Patient" }))).status, 400)
      assert.strictEqual(
        (yield* call(baseUrl, fhirJson("POST", { resourceType: "Bundle", type: "collection" }))).status,
        400,
      )
    }),
  )
})

describe("transactions with refuseClientIds", () => {
  layer(Sandbox.layer({ refuseClientIds: true }, { plugins: [] }))("refuseClientIds", (it) => {
    it.effect("a PUT that would create is 405 in transactions and in batch entries; POST still works", () =>
      Effect.gen(function* () {
        const { baseUrl, store } = yield* Sandbox
        const tx = yield* call(
          baseUrl,
          fhirJson(
            "POST",
            bundle("transaction", [
              post("urn:uuid:x", { resourceType: "Patient" }),
              put({ resourceType: "Patient", id: "client-id", active: true }),
            ]),
          ),
        )
        assert.strictEqual(tx.status, 405)
        assert.strictEqual(store.countAll(), 0)
        const batch = yield* call(
          baseUrl,
          fhirJson(
            "POST",
            bundle("batch", [
              post("urn:uuid:x", { resourceType: "Patient" }),
              put({ resourceType: "Patient", id: "client-id", active: true }),
            ]),
          ),
        )
        assert.strictEqual(at(batch.body, "entry.0.response.status"), "201 Created")
        assert.strictEqual(at(batch.body, "entry.1.response.status"), "405 Method Not Allowed")
        const id = locationId(batch.body, 0)
        const update = yield* call(
          baseUrl,
          fhirJson("POST", bundle("transaction", [put({ resourceType: "Patient", id, active: false })])),
        )
        assert.strictEqual(at(update.body, "entry.0.response.status"), "200 OK")
        assert.strictEqual(at(update.body, "entry.0.response.location"), `Patient/${id}/_history/2`)
      }),
    )
  })
})
