import { assert, describe, it } from "@effect/vitest"
import { assertSome } from "@effect/vitest/utils"
import { Effect, Option, Schema } from "effect"
import * as BulkManifest from "../src/BulkManifest.js"

describe("BulkManifest", () => {
  const manifest = {
    transactionTime: "2024-05-01T10:00:00.000Z",
    request: "https://h/fhir/$export?_type=Patient,Observation",
    requiresAccessToken: true,
    output: [
      { type: "Patient", url: "https://h/files/Patient.1.ndjson", count: 10 },
      {
        type: "Observation",
        url: "https://h/files/Observation.1.ndjson",
        extension: { "https://vendor/key": "abc" },
      },
    ],
    deleted: [{ type: "Bundle", url: "https://h/files/del.ndjson", count: 2 }],
    error: [{ type: "OperationOutcome", url: "https://h/files/err.ndjson" }],
    link: [{ relation: "next", url: "https://h/fhir/manifest/2" }],
    extension: { "https://vendor/jobId": "42" },
    vendorField: { kept: true },
  }

  it.effect(
    "decodes an export manifest with deleted, error, link and extensions, keeping unknown fields",
    () =>
      Effect.gen(function* () {
        const m = yield* Schema.decodeUnknown(BulkManifest.ExportManifest)(manifest)
        assert.strictEqual(m.output.length, 2)
        assert.strictEqual(m.output[0]?.count, 10)
        assert.deepStrictEqual(m.output[1]?.extension, { "https://vendor/key": "abc" })
        assert.deepStrictEqual(m.vendorField, { kept: true })
        assertSome(BulkManifest.nextManifest(m), "https://h/fhir/manifest/2")
        assert.deepStrictEqual(
          BulkManifest.allFiles(m).map((f) => `${f.kind}:${f.file.type}`),
          ["output:Patient", "output:Observation", "deleted:Bundle", "error:OperationOutcome"],
        )
        assert.deepStrictEqual<unknown>(Schema.encodeSync(BulkManifest.ExportManifest)(m), manifest)
      }),
  )

  it.effect("accepts a minimal STU2 manifest (no deleted, no link) and an organizeOutputBy one", () =>
    Effect.gen(function* () {
      const m = yield* Schema.decodeUnknown(BulkManifest.ExportManifest)({
        transactionTime: "2024-05-01T10:00:00Z",
        request: "https://h/fhir/$export",
        requiresAccessToken: false,
        output: [],
        error: [],
      })
      assert.deepStrictEqual(m.deleted, [])
      assert.isTrue(Option.isNone(BulkManifest.nextManifest(m)))
      const organized = yield* Schema.decodeUnknown(BulkManifest.ExportManifest)({
        transactionTime: "2024-05-01T10:00:00Z",
        requiresAccessToken: true,
        outputOrganizedBy: "Patient",
        output: [
          { url: "https://h/1.ndjson", continuesInFile: "https://h/2.ndjson" },
          { url: "https://h/2.ndjson" },
        ],
        error: [],
      })
      assert.strictEqual(organized.output[0]?.type, undefined)
      assert.strictEqual(organized.output[0]?.continuesInFile, "https://h/2.ndjson")
    }),
  )

  it("rejects a manifest without transactionTime; one without requiresAccessToken is taken as requiring it", () => {
    assert.throws(() =>
      Schema.decodeUnknownSync(BulkManifest.ExportManifest)({ requiresAccessToken: true, output: [] }),
    )
    assert.strictEqual(
      Schema.decodeUnknownSync(BulkManifest.ExportManifest)({ transactionTime: "x", output: [] })
        .requiresAccessToken,
      true,
    )
  })

  it.effect(
    "decodes $import completions: SMART draft (input), Azure (inputUrl), ping-and-pull, Bulk Submit",
    () =>
      Effect.gen(function* () {
        const draft = yield* Schema.decodeUnknown(BulkManifest.ImportManifest)({
          transactionTime: "2024-05-01T10:00:00Z",
          request: "https://t/fhir/$import",
          output: [
            { type: "Patient", input: "https://s/Patient.ndjson", count: 10, url: "https://t/ok.ndjson" },
          ],
          error: [],
        })
        assertSome(BulkManifest.importInputUrl(draft.output[0]!), "https://s/Patient.ndjson")
        const azure = yield* Schema.decodeUnknown(BulkManifest.ImportManifest)({
          transactionTime: "2024-05-01T10:00:00Z",
          request: "https://t/$import",
          output: [{ type: "Patient", count: 9, inputUrl: "https://blob/Patient.ndjson" }],
          error: [
            {
              type: "OperationOutcome",
              count: 1,
              inputUrl: "https://blob/Patient.ndjson",
              url: "https://blob/err.ndjson",
            },
          ],
        })
        assertSome(BulkManifest.importInputUrl(azure.error[0]!), "https://blob/Patient.ndjson")
        const pnp = yield* Schema.decodeUnknown(BulkManifest.PingAndPullManifest)({
          transactionTime: "2024-05-01T10:00:00Z",
          requiresAccessToken: true,
          outcome: [{ url: "https://c/outcome.ndjson", count: 3 }],
        })
        assert.strictEqual(pnp.outcome[0]?.count, 3)
        const submit = yield* Schema.decodeUnknown(BulkManifest.BulkSubmitStatusManifest)({
          submissionId: "s-1",
          transactionTime: "2024-05-01T10:00:00Z",
          requiresAccessToken: true,
          outcome: [
            {
              url: "https://c/o.ndjson",
              manifestUrl: "https://p/manifest.json",
              countSeverity: [{ code: "error", count: 2 }],
            },
          ],
          link: [{ relation: "next", url: "https://c/status/2" }],
        })
        assert.strictEqual(submit.outcome[0]?.countSeverity?.[0]?.count, 2)
        assert.deepStrictEqual(submit.output, [])
        assertSome(BulkManifest.nextManifest(submit), "https://c/status/2")
      }),
  )
})
