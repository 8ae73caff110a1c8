import { HttpClient, type HttpClientRequest, HttpClientResponse } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import * as FhirClient from "@ferry/core/FhirClient"
import { Duration, Effect, Either } from "effect"
import * as Plan from "../src/Plan.js"

const server = (over: Partial<Plan.ServerReport> = {}): Plan.ServerReport => ({
  role: "target",
  url: "https://fhir.example.org/r4",
  auth: "no authentication",
  token: null,
  reachable: true,
  capabilityStatement: true,
  noFhirServer: false,
  authorized: true,
  problem: null,
  fhirVersion: "4.0.1",
  software: "Some server",
  export: { system: false, patient: false, group: false },
  import: { operation: null, flavour: null },
  transaction: true,
  batch: true,
  updateCreateTypes: [],
  declaredTypes: ["Patient", "Observation", "Encounter"],
  bundleLimit: { entries: null, bytes: null, note: "unknown" },
  counts: {
    byType: {},
    total: 0,
    unknown: [],
    method: "_summary=count",
    typesCounted: 3,
    scope: "declared types",
  },
  ...over,
})

const counts = (byType: Record<string, number>): Plan.Counts => ({
  byType,
  total: Object.values(byType).reduce((a, b) => a + b, 0),
  unknown: [],
  method: "_summary=count",
  typesCounted: Object.keys(byType).length,
  scope: "declared types",
})

describe("Plan.chooseExport", () => {
  it("auto: bulk where $export is declared at the level, else crawl naming the level that has it", () => {
    const all = server({ role: "source", export: { system: true, patient: true, group: true } })
    assert.strictEqual(Plan.chooseExport(all, "auto", "system").mode, "bulk")
    const patientOnly = server({ role: "source", export: { system: false, patient: true, group: false } })
    const choice = Plan.chooseExport(patientOnly, "auto", "system")
    assert.strictEqual(choice.mode, "crawl")
    assert.include(choice.why, "--level patient")
    assert.strictEqual(Plan.chooseExport(patientOnly, "auto", "patient").mode, "bulk")
  })

  it("forced modes are kept, with a caution when $export is not declared", () => {
    const none = server({ role: "source" })
    assert.strictEqual(Plan.chooseExport(none, "crawl", "system").mode, "crawl")
    const bulk = Plan.chooseExport(none, "bulk", "group")
    assert.strictEqual(bulk.mode, "bulk")
    assert.include(bulk.why, "may be refused")
  })
})

describe("Plan.chooseImport", () => {
  const types = ["Patient", "Observation"]

  it("auto: put when every source type has updateCreate (and migrate's probe PUT is announced)", () => {
    const t = server({ updateCreateTypes: ["Patient", "Observation", "Encounter"] })
    const c = Plan.chooseImport(t, types, "auto")
    assert.strictEqual(c.strategy, "put")
    assert.include(c.confirm ?? "", "probe PUT")
  })

  it("auto: post when one source type lacks updateCreate, naming it", () => {
    const c = Plan.chooseImport(server({ updateCreateTypes: ["Patient"] }), types, "auto")
    assert.strictEqual(c.strategy, "post")
    assert.include(c.why, "Observation")
    assert.notInclude(c.why, "Patient,")
    assert.isNull(c.confirm)
    const none = Plan.chooseImport(server(), types, "auto")
    assert.include(none.why, "for any of the 2 source types")
  })

  it("mentions $import as the alternative where the target keeps client ids; --strategy import without $import is flagged", () => {
    const withImport = server({
      import: { operation: "import", flavour: "smart" },
      updateCreateTypes: ["Patient", "Observation", "Encounter"],
    })
    assert.include(
      Plan.chooseImport(withImport, types, "auto").why,
      "--strategy import lets it pull the files",
    )
    // a target refusing client ids may store the files under ids of its own: not offered
    const assigning = server({ import: { operation: "import", flavour: "smart" } })
    assert.include(Plan.chooseImport(assigning, types, "auto").why, "its $import is no alternative")
    const forced = Plan.chooseImport(server(), types, "import")
    assert.strictEqual(forced.strategy, "import")
    assert.include(forced.why, "does not declare it")
  })
})

describe("Plan.estimate", () => {
  it("bytes per type from its sample (others at the sampled average), duration from the sample's rate", () => {
    const samples: Array<Plan.Sample> = [
      { type: "Observation", resources: 50, bytes: 50_000, millis: 500, numericIds: 0, badIds: 0 },
      { type: "Patient", resources: 50, bytes: 150_000, millis: 500, numericIds: 0, badIds: 0 },
    ]
    const e = Plan.estimate(counts({ Observation: 1000, Patient: 100, Encounter: 100 }), samples)
    // 1000 × 1000 + 100 × 3000 + 100 × 2000 (the average)
    assert.strictEqual(e.archiveBytes, 1_500_000)
    assert.strictEqual(e.resourcesPerSecond, 100)
    assert.strictEqual(e.exportSeconds, 12)
    assert.include(e.note, "estimate")
  })

  it("nothing to sample: no figures, and says why", () => {
    const e = Plan.estimate(counts({}), [])
    assert.isNull(e.archiveBytes)
    assert.include(e.note, "no resources")
  })
})

describe("Plan.warnings and bundleLimit", () => {
  it("warns about a non-empty target, another FHIR version, no transaction, numeric ids into HAPI", () => {
    const source = server({ role: "source", fhirVersion: "4.0.1", counts: counts({ Patient: 5 }) })
    const target = server({
      fhirVersion: "5.0.0",
      transaction: false,
      software: "HAPI FHIR Server 7.0",
      counts: counts({ Patient: 3 }),
    })
    const put: Plan.ImportChoice = { strategy: "put", why: "", confirm: null }
    const samples: Array<Plan.Sample> = [
      { type: "Patient", resources: 5, bytes: 5000, millis: 10, numericIds: 5, badIds: 0 },
    ]
    const w = Plan.warnings(source, target, put, samples).join("\n")
    assert.include(w, "the target is not empty: it holds 3 resources (3 Patient)")
    assert.include(w, "FHIR 5.0.0")
    assert.include(w, "no transaction interaction")
    assert.include(w, "purely numeric")
    assert.deepStrictEqual(Plan.warnings(source, server({ counts: counts({}) }), put, []), [])
  })

  it("a target whose credentials may not search (403) is said so: unknown counts, and verify needs reading", () => {
    const source = server({ role: "source", counts: counts({ Patient: 5 }) })
    const target = server({
      counts: {
        ...counts({}),
        unknown: ["Patient", "Observation"],
        forbidden: ["Patient", "Observation"],
        method: "none",
      },
    })
    const put: Plan.ImportChoice = { strategy: "put", why: "", confirm: null }
    const w = Plan.warnings(source, target, put, [])
    assert.deepStrictEqual(w, [
      "the target's credentials may not search Patient, Observation (403): the target's counts are unknown, so migrate cannot say whether it holds data already, and ferry verify afterwards needs credentials that read it (a scope with read or r/s)",
    ])
  })

  it("knows the documented vendor limits only", () => {
    const cs = (name: string) => ({ resourceType: "CapabilityStatement" as const, software: { name } })
    assert.strictEqual(Plan.bundleLimit(cs("Microsoft FHIR Server")).entries, 500)
    assert.strictEqual(Plan.bundleLimit(cs("HAPI FHIR Server")).entries, null)
    assert.include(Plan.bundleLimit(cs("HAPI FHIR Server")).note, "unknown")
  })
})

describe("Plan.countAll", () => {
  /** A FhirClient over a fake HTTP layer answering `Type?query` from a table. */
  const clientWith = (answer: (url: URL) => { status: number; body?: unknown }) =>
    FhirClient.make({
      baseUrl: "https://fhir.example.org/r4",
      timeout: Duration.infinity,
      retry: { times: 0 },
    }).pipe(
      Effect.provideService(
        HttpClient.HttpClient,
        HttpClient.make((request: HttpClientRequest.HttpClientRequest, url) => {
          const a = answer(url)
          return Effect.succeed(
            HttpClientResponse.fromWeb(
              request,
              new Response(a.body === undefined ? null : JSON.stringify(a.body), { status: a.status }),
            ),
          )
        }),
      ),
    )
  const bundle = (total?: number) => ({
    resourceType: "Bundle",
    type: "searchset",
    ...(total !== undefined ? { total } : {}),
  })

  it.effect("_summary=count, else _total=accurate; a refused search leaves the type unknown", () =>
    Effect.gen(function* () {
      const client = yield* clientWith((url) => {
        const type = url.pathname.split("/").pop()
        const summary = url.searchParams.get("_summary") === "count"
        if (type === "Patient") return { status: 200, body: bundle(summary ? 12 : undefined) }
        if (type === "Observation") return { status: 200, body: bundle(summary ? undefined : 40) }
        if (type === "Encounter") return { status: 200, body: bundle(0) }
        return {
          status: 400,
          body: { resourceType: "OperationOutcome", issue: [{ severity: "error", code: "not-supported" }] },
        }
      })
      const c = yield* Plan.countAll(client, ["Patient", "Observation", "Encounter", "Basic"], 2)
      assert.deepStrictEqual(c.byType, { Patient: 12, Observation: 40 })
      assert.strictEqual(c.total, 52)
      assert.deepStrictEqual(c.unknown, ["Basic"])
      assert.strictEqual(c.method, "mixed")
      assert.strictEqual(c.typesCounted, 4)
    }),
  )

  it.effect("a 401 is not swallowed", () =>
    Effect.gen(function* () {
      const client = yield* clientWith(() => ({ status: 401 }))
      const r = yield* Effect.either(Plan.countAll(client, ["Patient"], 1))
      assert.isTrue(Either.isLeft(r) && r.left._tag === "AuthError")
    }),
  )
})
