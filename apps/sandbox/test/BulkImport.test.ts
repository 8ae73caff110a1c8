import { createServer, type IncomingHttpHeaders } from "node:http"
import type { AddressInfo } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { exportAll, http, json, lines, type ManifestLike, poll, startKit } from "./internal/bulkKit.js"

/** A static NDJSON file server that remembers the headers it was sent. */
const fileServer = (files: Record<string, string>) =>
  Effect.gen(function* () {
    const seen: IncomingHttpHeaders[] = []
    const server = createServer((req, res) => {
      seen.push(req.headers)
      const body = files[req.url ?? ""]
      if (body === undefined) {
        res.writeHead(404)
        res.end()
        return
      }
      res.writeHead(200, { "content-type": "application/fhir+ndjson" })
      res.end(body)
    })
    yield* Effect.acquireRelease(
      Effect.promise(() => new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()))),
      () => Effect.promise(() => new Promise<void>((r) => server.close(() => r()))),
    )
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen }
  })

const nd = (...xs: Array<unknown>) =>
  `${xs.map((x) => (typeof x === "string" ? x : JSON.stringify(x))).join("\n")}\n`

const patients = nd(
  { resourceType: "Patient", id: "imp-1", name: [{ family: "One" }] },
  '{"resourceType":"Patient", broken',
  { resourceType: "Patient", id: "imp-2", name: [{ family: "Two" }] },
  { resourceType: "Patient", id: "imp-3" }, // breaks the rejectRule (name missing)
)
const observations = nd(
  { resourceType: "Observation", id: "imp-o1", status: "final", subject: { reference: "Patient/imp-1" } },
  { resourceType: "Patient", id: "wrong-type" },
)

const submit = (baseUrl: string, body: unknown, prefer = "respond-async") =>
  http(`${baseUrl}/$import`, {
    method: "POST",
    headers: { prefer, accept: "application/fhir+json", "content-type": "application/json" },
    body: JSON.stringify(body),
  })

const run = (baseUrl: string, body: unknown) =>
  Effect.gen(function* () {
    const k = yield* submit(baseUrl, body)
    assert.strictEqual(k.status, 202, k.body.toString())
    const status = String(k.headers["content-location"])
    assert.isTrue(status.startsWith(`${baseUrl}/bulk/import-status/`))
    return { status, ...(yield* poll(status)) }
  })

describe("BulkImport", () => {
  it.scopedLive(
    "manifest shape: loads good lines keeping ids, reports rejected lines with their line numbers",
    () =>
      Effect.gen(function* () {
        const files = yield* fileServer({ "/Patient.ndjson": patients, "/Observation.ndjson": observations })
        const kit = yield* startKit(
          { rejectRule: { type: "Patient", missing: "name" } },
          { pollsBeforeDone: 1, retryAfterSeconds: 0 },
        )
        const { manifest, pending } = yield* run(kit.baseUrl, {
          inputFormat: "application/fhir+ndjson",
          inputSource: "https://source.example/fhir",
          storageDetail: { type: "https", accessToken: "file-token" },
          input: [
            { type: "Patient", url: `${files.url}/Patient.ndjson` },
            { type: "Observation", url: `${files.url}/Observation.ndjson` },
            { type: "Condition", url: `${files.url}/missing.ndjson` },
          ],
        })
        assert.isAtLeast(pending.length, 1)
        assert.match(String(pending[0]!.headers["x-progress"]), /file|lines/)
        assert.strictEqual(files.seen[0]!.authorization, "Bearer file-token")
        const counts = manifest.output.map((o) => [o.type, o.inputUrl, o.count])
        assert.deepStrictEqual(counts, [
          ["Patient", `${files.url}/Patient.ndjson`, 2],
          ["Observation", `${files.url}/Observation.ndjson`, 1],
          ["Condition", `${files.url}/missing.ndjson`, 0],
        ])
        const store = kit.sandbox.store
        const p1 = JSON.parse(store.read("Patient", "imp-1")!.json) as { meta: { source: string } }
        assert.strictEqual(p1.meta.source, "https://source.example/fhir")
        assert.isDefined(store.read("Observation", "imp-o1"))
        assert.isUndefined(store.read("Patient", "imp-3"))
        assert.strictEqual(manifest.error.length, 3)
        const byInput = new Map(manifest.error.map((e) => [e.inputUrl, e]))
        const pErr = byInput.get(`${files.url}/Patient.ndjson`)!
        assert.strictEqual(pErr.type, "OperationOutcome")
        assert.strictEqual(pErr.count, 2)
        const pIssues = lines((yield* http(pErr.url)).body).map(
          (o) => (o.issue as Array<{ diagnostics: string }>)[0]!.diagnostics,
        )
        assert.match(pIssues[0]!, /Patient\.ndjson line 2: not valid JSON/)
        assert.match(pIssues[1]!, /Patient\.ndjson line 4: .*name/)
        const oIssues = lines((yield* http(byInput.get(`${files.url}/Observation.ndjson`)!.url)).body)
        assert.match(JSON.stringify(oIssues[0]), /line 2: resourceType Patient does not match/)
        const cIssues = lines((yield* http(byInput.get(`${files.url}/missing.ndjson`)!.url)).body)
        assert.match(JSON.stringify(cIssues[0]), /HTTP 404/)
      }),
  )

  it.scopedLive(
    "HAPI Parameters shape with credentialHttpBasic; refuseClientIds reports the id mapping",
    () =>
      Effect.gen(function* () {
        const files = yield* fileServer({
          "/p.ndjson": nd({ resourceType: "Patient", id: "hapi-1", name: [{ family: "H" }] }),
        })
        const kit = yield* startKit({ refuseClientIds: true }, { pollsBeforeDone: 0 })
        const { manifest } = yield* run(kit.baseUrl, {
          resourceType: "Parameters",
          parameter: [
            { name: "inputFormat", valueCode: "application/fhir+ndjson" },
            { name: "inputSource", valueUri: "https://hapi.example/fhir" },
            {
              name: "storageDetail",
              part: [
                { name: "type", valueCode: "https" },
                { name: "credentialHttpBasic", valueString: "user:pass" },
                { name: "maxBatchResourceCount", valueString: "500" },
              ],
            },
            {
              name: "input",
              part: [
                { name: "type", valueCode: "Patient" },
                { name: "url", valueUri: `${files.url}/p.ndjson` },
              ],
            },
          ],
        })
        assert.strictEqual(
          files.seen[0]!.authorization,
          `Basic ${Buffer.from("user:pass").toString("base64")}`,
        )
        assert.strictEqual(manifest.output[0]!.count, 1)
        assert.deepStrictEqual(manifest.error, [])
        assert.isUndefined(kit.sandbox.store.read("Patient", "hapi-1"))
        const info = lines((yield* http(manifest.output[0]!.url!)).body)
        const text = (info[0]!.issue as Array<{ diagnostics: string }>)[0]!.diagnostics
        const m = /Patient\/hapi-1 was stored as Patient\/([A-Za-z0-9-]+)/.exec(text)
        assert.isNotNull(m)
        const stored = JSON.parse(kit.sandbox.store.read("Patient", m![1]!)!.json) as {
          meta: { extension: unknown[] }
        }
        assert.deepInclude(stored.meta.extension, {
          url: "http://hl7.org/fhir/StructureDefinition/import-source",
          valueIdentifier: { system: "https://hapi.example/fhir", value: "Patient/hapi-1" },
        })
      }),
  )

  it.scopedLive("bad requests are 400; DELETE cancels", () =>
    Effect.gen(function* () {
      const kit = yield* startKit({}, { pollsBeforeDone: 5, retryAfterSeconds: 0 })
      const good = {
        inputFormat: "application/fhir+ndjson",
        inputSource: "x",
        input: [{ type: "Patient", url: "http://127.0.0.1:9/p.ndjson" }],
      }
      assert.strictEqual((yield* submit(kit.baseUrl, good, "return=minimal")).status, 400)
      assert.strictEqual((yield* submit(kit.baseUrl, { ...good, inputFormat: "text/csv" })).status, 400)
      assert.strictEqual(
        (yield* submit(kit.baseUrl, { ...good, input: [{ type: "Nope", url: "http://x/y" }] })).status,
        400,
      )
      assert.strictEqual(
        (yield* submit(kit.baseUrl, { ...good, input: [{ type: "Patient", url: "file:///etc/passwd" }] }))
          .status,
        400,
      )
      assert.strictEqual((yield* submit(kit.baseUrl, { ...good, input: [] })).status, 400)
      const bad = yield* submit(kit.baseUrl, { ...good, storageDetail: { type: "aws-s3" } })
      assert.strictEqual(bad.status, 400)
      assert.strictEqual(json(bad).resourceType, "OperationOutcome")
      const k = yield* submit(kit.baseUrl, good)
      const status = String(k.headers["content-location"])
      assert.strictEqual((yield* http(status, { method: "DELETE" })).status, 202)
      assert.strictEqual((yield* http(status)).status, 404)
    }),
  )

  it.scopedLive("round trip: a sandbox imports another sandbox's export manifest", () =>
    Effect.gen(function* () {
      const source = yield* startKit({ generate: 3 }, { pollsBeforeDone: 0, resourcesPerFile: 20 })
      const target = yield* startKit({}, { pollsBeforeDone: 0 })
      const exported = yield* exportAll(`${source.baseUrl}/$export`)
      const m: ManifestLike = exported.manifest
      const { manifest } = yield* run(target.baseUrl, {
        inputFormat: "application/fhir+ndjson",
        inputSource: source.baseUrl,
        input: m.output.map((o) => ({ type: o.type, url: o.url })),
      })
      assert.deepStrictEqual(manifest.error, [])
      for (const type of source.sandbox.store.types()) {
        assert.strictEqual(target.sandbox.store.count(type), source.sandbox.store.count(type), type)
      }
      const total = manifest.output.reduce((n, o) => n + o.count, 0)
      assert.strictEqual(total, source.sandbox.store.countAll())
    }),
  )
})
