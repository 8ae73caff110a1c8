import { readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { assertSome } from "@effect/vitest/utils"
import { Effect, Option, Schema } from "effect"
import * as Bundle from "../src/Bundle.js"

const synthea = new URL(
  "../../../../shared/data/synthea-bundles/Fannie_Waelchi_8666cd40-7af9-48c6-a1a6-86a161195542.json",
  import.meta.url,
)

describe("Bundle", () => {
  it.effect("decodes a real Synthea transaction Bundle and keeps every field of its resources", () =>
    Effect.gen(function* () {
      const raw: unknown = JSON.parse(readFileSync(synthea, "utf8"))
      const bundle = yield* Schema.decodeUnknown(Bundle.Bundle)(raw)
      assert.strictEqual(bundle.type, "transaction")
      const entries = Bundle.entries(bundle)
      assert.strictEqual(entries.length, 28)
      assert.strictEqual(entries[0]?.request?.method, "POST")
      assert.strictEqual(entries[0]?.request?.url, "Patient")
      assert.match(entries[0]?.fullUrl ?? "", /^urn:uuid:/)
      // Unnamed resource fields survive decoding and encoding unchanged.
      assert.deepStrictEqual<unknown>(Schema.encodeSync(Bundle.Bundle)(bundle), raw)
    }),
  )

  const searchset = {
    resourceType: "Bundle",
    id: "page-1",
    meta: { lastUpdated: "2024-05-01T00:00:00Z" },
    type: "searchset",
    total: 3,
    link: [
      { relation: "self", url: "https://h/fhir/Patient?_count=2" },
      { relation: "next", url: "https://h/fhir?_getpages=abc&_getpagesoffset=2" },
    ],
    entry: [
      {
        fullUrl: "https://h/fhir/Patient/1",
        resource: { resourceType: "Patient", id: "1" },
        search: { mode: "match" },
      },
      {
        fullUrl: "https://h/fhir/Organization/o",
        resource: { resourceType: "Organization", id: "o" },
        search: { mode: "include" },
      },
      {
        resource: { resourceType: "OperationOutcome", issue: [{ severity: "warning", code: "processing" }] },
        search: { mode: "outcome" },
      },
    ],
  }

  it.effect("reads next link, total and the data resources of a searchset", () =>
    Effect.gen(function* () {
      const bundle = yield* Schema.decodeUnknown(Bundle.Bundle)(searchset)
      assertSome(Bundle.nextLink(bundle), "https://h/fhir?_getpages=abc&_getpagesoffset=2")
      assertSome(Bundle.link(bundle, "self"), "https://h/fhir/Patient?_count=2")
      assertSome(Bundle.total(bundle), 3)
      assert.deepStrictEqual(
        // the matches only: an included resource is not one (a crawl reads it in its own type's search)
        Bundle.resources(bundle).map((r) => `${r.resourceType}/${r.id}`),
        ["Patient/1"],
      )
      assert.deepStrictEqual(bundle.meta, { lastUpdated: "2024-05-01T00:00:00Z" })
      const last = yield* Schema.decodeUnknown(Bundle.Bundle)({ ...searchset, link: [searchset.link[0]] })
      assert.isTrue(Option.isNone(Bundle.nextLink(last)))
      assert.isTrue(Option.isNone(Bundle.total({ resourceType: "Bundle", type: "searchset" })))
    }),
  )

  it.effect("decodes a transaction-response and reads statuses and locations", () =>
    Effect.gen(function* () {
      const bundle = yield* Schema.decodeUnknown(Bundle.Bundle)({
        resourceType: "Bundle",
        type: "transaction-response",
        entry: [
          {
            response: {
              status: "201 Created",
              location: "Patient/123/_history/1",
              etag: 'W/"1"',
              lastModified: "2024-05-01T00:00:00Z",
            },
          },
          {
            response: {
              status: "200",
              location: "https://h/fhir/Observation/a-b.c/_history/7",
              outcome: {
                resourceType: "OperationOutcome",
                issue: [{ severity: "information", code: "informational" }],
              },
            },
          },
        ],
      })
      const [first, second] = Bundle.entries(bundle)
      assertSome(Bundle.statusCode(first!.response!), 201)
      assertSome(Bundle.statusCode(second!.response!), 200)
      assertSome(Bundle.parseLocation(first!.response!.location!), {
        type: "Patient",
        id: "123",
        versionId: "1",
      })
      assertSome(Bundle.parseLocation(second!.response!.location!), {
        type: "Observation",
        id: "a-b.c",
        versionId: "7",
      })
      assertSome(Bundle.parseLocation("Patient/9"), { type: "Patient", id: "9" })
      assert.isTrue(Option.isNone(Bundle.parseLocation("nonsense")))
      assert.strictEqual(second?.response?.outcome?.resourceType, "OperationOutcome")
    }),
  )

  it("builds transaction and batch Bundles that encode with conditional request fields", () => {
    const entry: Bundle.BundleEntry = {
      fullUrl: "urn:uuid:0f0e",
      resource: { resourceType: "Patient", identifier: [{ system: "s", value: "v" }] },
      request: { method: "POST", url: "Patient", ifNoneExist: "identifier=s|v" },
    }
    const tx = Bundle.transaction([entry])
    assert.strictEqual(tx.type, "transaction")
    assert.deepStrictEqual(Schema.decodeUnknownSync(Bundle.Bundle)(JSON.parse(JSON.stringify(tx))), tx)
    const b = Bundle.batch([{ request: { method: "DELETE", url: "Patient/1", ifMatch: 'W/"2"' } }])
    assert.strictEqual(b.type, "batch")
    assert.strictEqual(b.entry?.[0]?.request?.ifMatch, 'W/"2"')
  })

  it("rejects what is not a Bundle", () => {
    assert.throws(() =>
      Schema.decodeUnknownSync(Bundle.Bundle)({ resourceType: "Patient", type: "searchset" }),
    )
    assert.throws(() => Schema.decodeUnknownSync(Bundle.Bundle)({ resourceType: "Bundle", type: "bogus" }))
    assert.throws(() =>
      Schema.decodeUnknownSync(Bundle.Bundle)({
        resourceType: "Bundle",
        type: "batch",
        entry: [{ request: { method: "FETCH", url: "x" } }],
      }),
    )
  })
})
