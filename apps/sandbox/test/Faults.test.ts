import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { decodeFaultsConfig, routeKind } from "../src/Faults.js"
import * as Sandbox from "../src/Sandbox.js"
import { ASYNC, exportAll, http, json, kickoff, lines, poll, startKit } from "./internal/bulkKit.js"

const gen = { generate: 2 }

describe("Faults", () => {
  it.scoped(
    "a bad sandbox configuration fails to start as a Config error in one line (faults, auth, unknown keys)",
    () =>
      Effect.gen(function* () {
        for (const [input, expected] of [
          [{ faults: { throttle: [{ route: "nowhere" }] } }, "invalid at throttle.0.route"],
          [{ auth: { clients: "none" } }, 'sandbox config "auth" is invalid'],
          [{ unknownKey: 1 }, "invalid at unknownKey"],
          [{ port: 99999 }, "invalid at port"],
        ] as const) {
          const e = yield* Effect.flip(Sandbox.start(input as never, { plugins: [] }))
          assert.strictEqual(e._tag, "SandboxError")
          assert.strictEqual(e.reason, "Config")
          assert.include(e.message, expected)
          assert.notInclude(e.message, "\n")
        }
        // a seed path that is not there: said so, with what to give (not the file system's ENOENT line)
        const seed = yield* Effect.flip(Sandbox.start({ seed: ["/nonexistent-ferry-seed"] }, { plugins: [] }))
        assert.strictEqual(seed.reason, "Seed")
        assert.include(
          seed.message,
          "/nonexistent-ferry-seed does not exist; give --seed files or folders of NDJSON or transaction Bundles that do",
        )
        assert.notInclude(seed.message, "ENOENT")
      }),
  )

  it("classifies routes and rejects unknown config fields", () => {
    assert.strictEqual(routeKind("GET", "/$export"), "kickoff")
    assert.strictEqual(routeKind("POST", "/Group/1/$export"), "kickoff")
    assert.strictEqual(routeKind("POST", "/$import"), "kickoff")
    assert.strictEqual(routeKind("GET", "/bulk/status/x"), "status")
    assert.strictEqual(routeKind("GET", "/bulk/files/x/Patient.000.ndjson"), "download")
    assert.strictEqual(routeKind("POST", "/auth/token"), "token")
    assert.strictEqual(routeKind("GET", "/Patient/1"), "fhir")
    assert.throws(() => decodeFaultsConfig({ throttel: [] }), /faults/)
  })

  it.scopedLive("429 on the first kick-offs with Retry-After as seconds, HTTP-date and epoch", () =>
    Effect.gen(function* () {
      const kit = yield* startKit({
        ...gen,
        faults: {
          throttle: [
            { route: "kickoff", first: 1, retryAfter: "seconds", seconds: 2 },
            { route: "kickoff", skip: 1, first: 1, retryAfter: "http-date", seconds: 30 },
            { route: "kickoff", skip: 2, first: 1, retryAfter: "epoch", seconds: 30 },
          ],
        },
      })
      const url = `${kit.baseUrl}/$export?_type=Patient`
      const a = yield* http(url, { headers: ASYNC })
      assert.strictEqual(a.status, 429)
      assert.strictEqual(a.headers["retry-after"], "2")
      assert.strictEqual((json(a).issue as Array<{ code: string }>)[0]!.code, "throttled")
      const b = yield* http(url, { headers: ASYNC })
      assert.strictEqual(b.status, 429)
      const date = Date.parse(String(b.headers["retry-after"]))
      assert.isFalse(Number.isNaN(date))
      assert.isAbove(date, Date.now())
      const c = yield* http(url, { headers: ASYNC })
      assert.strictEqual(c.status, 429)
      assert.match(String(c.headers["retry-after"]), /^\d{10}$/)
      assert.isAbove(Number(c.headers["retry-after"]), Date.now() / 1000)
      assert.strictEqual((yield* http(url, { headers: ASYNC })).status, 202)
    }),
  )

  it.scopedLive(
    "transient 503/500 with a transient OperationOutcome on status and download, then success",
    () =>
      Effect.gen(function* () {
        const kit = yield* startKit(
          {
            ...gen,
            faults: {
              transient: [
                { route: "status", first: 1, status: 500 },
                { route: "download", first: 1, status: 503, retryAfterSeconds: 1 },
              ],
            },
          },
          { pollsBeforeDone: 0 },
        )
        const status = yield* kickoff(`${kit.baseUrl}/$export?_type=Patient`)
        const s1 = yield* http(status)
        assert.strictEqual(s1.status, 500)
        assert.strictEqual((json(s1).issue as Array<{ code: string }>)[0]!.code, "transient")
        const { manifest } = yield* poll(status)
        const d1 = yield* http(manifest.output[0]!.url)
        assert.strictEqual(d1.status, 503)
        assert.strictEqual(d1.headers["retry-after"], "1")
        assert.strictEqual((json(d1).issue as Array<{ code: string }>)[0]!.code, "transient")
        const d2 = yield* http(manifest.output[0]!.url)
        assert.strictEqual(d2.status, 200)
        assert.strictEqual(lines(d2.body).length, 2)
      }),
  )

  it.scopedLive("connection reset after N bytes on the first attempt only", () =>
    Effect.gen(function* () {
      const kit = yield* startKit(
        { ...gen, faults: { resetDownload: { afterBytes: 100, type: "Observation" } } },
        { pollsBeforeDone: 0 },
      )
      const { manifest } = yield* exportAll(`${kit.baseUrl}/$export?_type=Patient`) // other types unaffected
      assert.strictEqual(manifest.output.length, 1)
      const obs = yield* kickoff(`${kit.baseUrl}/$export?_type=Observation`)
      const url = (yield* poll(obs)).manifest.output[0]!.url
      const first = yield* http(url)
      assert.strictEqual(first.status, 200)
      assert.isDefined(first.error)
      assert.strictEqual(first.body.length, 100)
      const second = yield* http(url)
      assert.isUndefined(second.error)
      assert.strictEqual(lines(second.body).length, 24)
      assert.isTrue(second.body.subarray(0, 100).equals(first.body))
    }),
  )

  it.scopedLive("a short file (fewer lines than count), 410 on first attempt, outputs moved to error[]", () =>
    Effect.gen(function* () {
      const kit = yield* startKit(
        {
          ...gen,
          faults: {
            shortFile: { type: "Observation", missing: 2 },
            expireFiles: { firstAttempt: true, type: "Condition" },
            outputsToError: { types: ["Encounter"] },
          },
        },
        { pollsBeforeDone: 0 },
      )
      const status = yield* kickoff(`${kit.baseUrl}/$export?_type=Observation,Condition,Encounter`)
      const { manifest } = yield* poll(status)
      const obs = manifest.output.find((o) => o.type === "Observation")!
      assert.strictEqual(obs.count, 24)
      assert.strictEqual(lines((yield* http(obs.url)).body).length, 22)
      const cond = manifest.output.find((o) => o.type === "Condition")!
      const gone = yield* http(cond.url)
      assert.strictEqual(gone.status, 410)
      assert.strictEqual(json(gone).resourceType, "OperationOutcome")
      assert.strictEqual(lines((yield* http(cond.url)).body).length, cond.count)
      assert.isUndefined(manifest.output.find((o) => o.type === "Encounter"))
      assert.strictEqual(manifest.error.length, 1)
      const err = lines((yield* http(manifest.error[0]!.url)).body)
      assert.match(String((err[0]!.issue as Array<{ diagnostics: string }>)[0]!.diagnostics), /Encounter/)
    }),
  )

  it.scopedLive(
    "410 once files are older than afterSeconds; PUT /_sandbox/faults swaps config and counters",
    () =>
      Effect.gen(function* () {
        const kit = yield* startKit(
          { ...gen, faults: { expireFiles: { afterSeconds: 0 } } },
          { pollsBeforeDone: 0 },
        )
        const status = yield* kickoff(`${kit.baseUrl}/$export?_type=Patient`)
        const { manifest } = yield* poll(status)
        assert.strictEqual((yield* http(manifest.output[0]!.url)).status, 410)
        const put = yield* http(`${kit.baseUrl}/_sandbox/faults`, {
          method: "PUT",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ throttle: [{ route: "download", first: 1 }] }),
        })
        assert.strictEqual(put.status, 204)
        assert.strictEqual((yield* http(manifest.output[0]!.url)).status, 429)
        assert.strictEqual((yield* http(manifest.output[0]!.url)).status, 200)
        const invalid = yield* http(`${kit.baseUrl}/_sandbox/faults`, {
          method: "PUT",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ throttle: [{ route: "nowhere" }] }),
        })
        assert.strictEqual(invalid.status, 400)
      }),
  )

  it.scopedLive("slow responses: a delayed route answers no sooner than the delay", () =>
    Effect.gen(function* () {
      const kit = yield* startKit({ ...gen, faults: { delay: [{ route: "fhir", ms: 300 }] } })
      const t0 = Date.now()
      const r = yield* http(`${kit.baseUrl}/Patient/gen-pat-0`)
      assert.strictEqual(r.status, 200)
      assert.isAtLeast(Date.now() - t0, 290)
    }),
  )
})
