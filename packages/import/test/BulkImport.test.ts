import * as NFS from "node:fs"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import * as OS from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { FetchHttpClient } from "@effect/platform"
import * as Archive from "@ferry/archive/Archive"
import * as Manifest from "@ferry/archive/Manifest"
import type { CapabilityStatement } from "@ferry/core/CapabilityStatement"
import * as FhirClient from "@ferry/core/FhirClient"
import * as Ndjson from "@ferry/core/Ndjson"
import type { SandboxConfigInput } from "@ferry/sandbox/Config"
import * as Sandbox from "@ferry/sandbox/Sandbox"
import { assert, describe, it } from "@effect/vitest"
import { assertNone, assertSome } from "@effect/vitest/utils"
import { Cause, Effect, Exit, Option, Stream } from "effect"
import * as BulkImport from "../src/BulkImport.js"
import { ImportError } from "../src/ImportError.js"

const sample10 = fileURLToPath(new URL("../../../../shared/data/sample-bulk-10-patients", import.meta.url))
const source = "https://source.example/fhir"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-bulkimport-test-"))),
  (dir) => Effect.sync(() => NFS.rmSync(dir, { recursive: true, force: true })),
)

/** An archive in a fresh temp dir holding `files` (type → NDJSON lines, or a path to copy the lines from). */
const makeArchive = (
  files: ReadonlyArray<{ type: string; lines: ReadonlyArray<string> | string }>,
  gzip = false,
) =>
  Effect.gen(function* () {
    const dir = Path.join(yield* tempDir, "archive")
    const init = yield* Archive.create(dir, {
      tool: { name: "ferry-test", version: "0" },
      source: { baseUrl: source },
      request: { level: "system", url: `${source}/$export`, parameters: {} },
    })
    const entries: Array<Manifest.FileEntry> = []
    for (const f of files) {
      const lines = typeof f.lines === "string" ? Ndjson.readFileLines(f.lines) : Stream.fromIterable(f.lines)
      entries.push(
        yield* Archive.writeFile(
          dir,
          { section: "files", type: f.type, compression: gzip ? "gzip" : "none" },
          lines,
        ),
      )
    }
    const manifest = Manifest.addFiles({ ...init, complete: true }, "files", entries)
    yield* Archive.writeManifest(dir, manifest)
    return { dir, manifest }
  })

const sampleArchive = (gzip: boolean) =>
  makeArchive(
    NFS.readdirSync(sample10)
      .filter((n) => n.endsWith(".ndjson"))
      .map((n) => ({ type: n.split(".")[0]!, lines: Path.join(sample10, n) })),
    gzip,
  )

const target = (config: SandboxConfigInput = {}) =>
  Sandbox.start({ bulk: { retryAfterSeconds: 0, pollsBeforeDone: 1 }, ...config })

const clientFor = (baseUrl: string, retry: Partial<{ times: number }> = {}) =>
  FhirClient.make({ baseUrl, retry: { base: "10 millis", times: 8, ...retry } }).pipe(
    Effect.provide(FetchHttpClient.layer),
  )

/** Wraps a client to capture the `$import` kick-off body (where the token travels). */
const spying = (client: FhirClient.FhirClient) => {
  const bodies: Array<unknown> = []
  const spy: FhirClient.FhirClient = {
    ...client,
    operation: (path, o) => {
      bodies.push(o.body)
      return client.operation(path, o)
    },
  }
  return { client: spy, bodies }
}

const tokenOf = (body: unknown): string => {
  const text = JSON.stringify(body)
  const m = /"accessToken":"([^"]+)"|"credentialHttpBasic","valueString":"ferry:([^"]+)"/.exec(text)
  assert.isNotNull(m, text)
  return m![1] ?? m![2]!
}

const failure = <A, E>(exit: Exit.Exit<A, E>): Option.Option<E> =>
  Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()

describe("BulkImport", () => {
  for (const [flavour, gzip] of [
    ["smart", true],
    ["hapi", false],
  ] as const) {
    it.scopedLive(
      `${flavour} flavour (${gzip ? "gzip" : "plain"} archive): the 10-patient sample lands, counts equal the archive's`,
      () =>
        Effect.gen(function* () {
          const { dir, manifest } = yield* sampleArchive(gzip)
          const sandbox = yield* target()
          const { client, bodies } = spying(yield* clientFor(sandbox.baseUrl))
          const events: Array<BulkImport.BulkImportEvent> = []
          const result = yield* BulkImport.run({
            client,
            archiveDir: dir,
            files: manifest.files,
            // smart: detected from the sandbox's CapabilityStatement
            ...(flavour === "hapi" ? { flavour } : {}),
            pollInterval: "20 millis",
            onEvent: (e) => Effect.sync(() => void events.push(e)),
          })
          assert.strictEqual(result.flavour, flavour)
          const expected = Object.fromEntries(Manifest.counts(manifest))
          assert.strictEqual(Object.keys(expected).length, 13)
          assert.deepStrictEqual(result.loaded, expected)
          for (const [type, n] of Object.entries(expected)) {
            assert.strictEqual(sandbox.store.count(type), n, type)
          }
          assert.deepStrictEqual(result.rejected, [])
          assert.deepStrictEqual(result.idMap, [])
          for (const f of result.files) {
            assert.strictEqual(f.loaded, f.expected, f.path)
            assert.strictEqual(f.rejected, 0)
          }
          // Parents first.
          assert.isBelow(
            result.files.findIndex((f) => f.type === "Patient"),
            result.files.findIndex((f) => f.type === "Encounter"),
          )
          const patient = JSON.parse(
            sandbox.store.read(
              "Patient",
              JSON.parse(NFS.readFileSync(Path.join(sample10, "Patient.000.ndjson"), "utf8").split("\n")[0]!)
                .id,
            )!.json,
          ) as { meta: { source: string } }
          assert.strictEqual(patient.meta.source, source)
          // The body has the dialect's shape; the token is in it, and nowhere in events or the result.
          const body = bodies[0] as Record<string, unknown>
          if (flavour === "smart") {
            assert.strictEqual(body.inputFormat, "application/fhir+ndjson")
            assert.strictEqual(body.inputSource, source)
            assert.strictEqual((body.input as Array<unknown>).length, manifest.files.length)
          } else {
            assert.strictEqual(body.resourceType, "Parameters")
            const params = body.parameter as Array<
              Record<string, unknown> & { name: string; part?: Array<Record<string, unknown>> }
            >
            assert.deepStrictEqual(params[0], { name: "inputFormat", valueCode: "application/fhir+ndjson" })
            assert.deepStrictEqual(params[1], { name: "inputSource", valueUri: source })
            const storage = params.find((p) => p.name === "storageDetail")?.part ?? []
            assert.deepStrictEqual(
              storage.map((p) => p.name),
              ["type", "credentialHttpBasic", "maxBatchResourceCount"],
            )
            assert.deepStrictEqual(storage[2], { name: "maxBatchResourceCount", valueString: "800" })
            const inputs = params.filter((p) => p.name === "input")
            assert.strictEqual(inputs.length, manifest.files.length)
            assert.deepStrictEqual(
              inputs[0]!.part!.map((p) => p.name),
              ["type", "url"],
            )
          }
          const token = tokenOf(body)
          assert.strictEqual(Buffer.from(token, "base64url").length, 32)
          assert.notInclude(JSON.stringify(events), token)
          assert.notInclude(JSON.stringify(result), token)
          const kinds = events.map((e) => e.event)
          assert.includeMembers(kinds, [
            "import.bulk.serve",
            "import.bulk.kickoff",
            "import.bulk.progress",
            "import.bulk.done",
          ])
          assert.notInclude(kinds, "import.bulk.release-failed")
          // Released: the status URL is gone.
          const kickoff = events.find((e) => e.event === "import.bulk.kickoff")
          const status = kickoff?.event === "import.bulk.kickoff" ? kickoff.statusUrl : ""
          const after = yield* Effect.promise(() => fetch(status))
          assert.strictEqual(after.status, 404)
        }),
      { timeout: 60_000 },
    )
  }

  it.scopedLive("a rejected line comes back as data/<file>:<line>; the token (path form) is scrubbed", () =>
    Effect.gen(function* () {
      const { dir, manifest } = yield* makeArchive([
        {
          type: "Patient",
          lines: [
            JSON.stringify({ resourceType: "Patient", id: "p1", name: [{ family: "One" }] }),
            JSON.stringify({ resourceType: "Patient", id: "p2", name: [{ family: "Two" }] }),
            JSON.stringify({ resourceType: "Patient", id: "p3" }),
            JSON.stringify({ resourceType: "Patient", id: "p4", name: [{ family: "Four" }] }),
          ],
        },
        {
          type: "Observation",
          lines: [JSON.stringify({ resourceType: "Observation", id: "o1", status: "final" })],
        },
      ])
      const sandbox = yield* target({ rejectRule: { type: "Patient", missing: "name" } })
      const { client, bodies } = spying(yield* clientFor(sandbox.baseUrl))
      const events: Array<BulkImport.BulkImportEvent> = []
      const result = yield* BulkImport.run({
        client,
        archiveDir: dir,
        files: manifest.files,
        flavour: "smart",
        serve: { tokenIn: "path" },
        pollInterval: "20 millis",
        onEvent: (e) => Effect.sync(() => void events.push(e)),
      })
      const body = bodies[0] as { storageDetail: Record<string, unknown>; input: Array<{ url: string }> }
      assert.isUndefined(body.storageDetail.accessToken)
      const token = new URL(body.input[0]!.url).pathname.split("/")[1]!
      assert.strictEqual(Buffer.from(token, "base64url").length, 32)
      assert.deepStrictEqual(result.loaded, { Patient: 3, Observation: 1 })
      assert.strictEqual(result.rejected.length, 1)
      const r = result.rejected[0]!
      assert.strictEqual(r.source, "data/Patient.000.ndjson:3")
      assert.strictEqual(r.line, 3)
      assert.strictEqual(r.type, "Patient")
      assert.match(r.outcome.issue[0]!.diagnostics ?? "", /name is required/)
      assert.include(r.outcome.issue[0]!.diagnostics ?? "", "[token]/data/Patient.000.ndjson")
      assert.deepStrictEqual(
        result.files.map((f) => [f.path, f.loaded, f.rejected]),
        [
          ["data/Patient.000.ndjson", 3, 1],
          ["data/Observation.000.ndjson", 1, 0],
        ],
      )
      // With onRejected, the lines are streamed to it instead of collected.
      const streamed: Array<string> = []
      const again = yield* BulkImport.run({
        client,
        archiveDir: dir,
        files: manifest.files,
        flavour: "hapi",
        pollInterval: "20 millis",
        onRejected: (x) => Effect.sync(() => void streamed.push(x.source)),
        onEvent: (e) => Effect.sync(() => void events.push(e)),
      })
      assert.deepStrictEqual(streamed, ["data/Patient.000.ndjson:3"])
      assert.deepStrictEqual(again.rejected, [])
      assert.strictEqual(again.files[0]!.rejected, 1)
      const done = events.filter((e) => e.event === "import.bulk.done")
      assert.deepStrictEqual(
        done.map((e) => (e.event === "import.bulk.done" ? e.rejected : -1)),
        [1, 1],
      )
      assert.isUndefined(sandbox.store.read("Patient", "p3"))
      assert.isDefined(sandbox.store.read("Patient", "p4"))
      assert.notInclude(JSON.stringify(result), token)
      assert.notInclude(JSON.stringify(events), token)
    }),
  )

  it.scopedLive("a target that refuses client ids: the Type/old → Type/new pairs are returned", () =>
    Effect.gen(function* () {
      const { dir, manifest } = yield* makeArchive([
        {
          type: "Patient",
          lines: ["a", "b"].map((id) =>
            JSON.stringify({ resourceType: "Patient", id, name: [{ family: id }] }),
          ),
        },
      ])
      const sandbox = yield* target({ refuseClientIds: true })
      for (const flavour of ["smart", "hapi"] as const) {
        const result = yield* BulkImport.run({
          client: yield* clientFor(sandbox.baseUrl),
          archiveDir: dir,
          files: manifest.files,
          flavour,
          pollInterval: "20 millis",
        })
        assert.strictEqual(result.idMap.length, 2, flavour)
        assert.deepStrictEqual(
          result.idMap.map(([s]) => s),
          ["Patient/a", "Patient/b"],
        )
        for (const [s, t] of result.idMap) {
          assert.notStrictEqual(t, s)
          const [type, id] = t.split("/")
          const stored = JSON.parse(sandbox.store.read(type!, id!)!.json) as {
            name: Array<{ family: string }>
          }
          assert.strictEqual(stored.name[0]!.family, s.split("/")[1])
        }
      }
      assert.isUndefined(sandbox.store.read("Patient", "a"))
      assert.strictEqual(sandbox.store.count("Patient"), 4)
    }),
  )

  it.scopedLive(
    "429 and 503 on the status polls are waited out (by the client's retries and by the poll loop)",
    () =>
      Effect.gen(function* () {
        const { dir, manifest } = yield* makeArchive([
          {
            type: "Patient",
            lines: [JSON.stringify({ resourceType: "Patient", id: "x", name: [{ family: "X" }] })],
          },
        ])
        const faults = {
          throttle: [{ route: "status", first: 2, seconds: 0 }],
          transient: [{ route: "status", first: 2, skip: 2, status: 503 }],
        }
        for (const times of [8, 0]) {
          const sandbox = yield* target({ faults })
          const events: Array<BulkImport.BulkImportEvent> = []
          const result = yield* BulkImport.run({
            client: yield* clientFor(sandbox.baseUrl, { times }),
            archiveDir: dir,
            files: manifest.files,
            pollInterval: "20 millis",
            onEvent: (e) => Effect.sync(() => void events.push(e)),
          })
          assert.deepStrictEqual(result.loaded, { Patient: 1 })
          assert.isDefined(sandbox.store.read("Patient", "x"))
          const retries = events.filter((e) => e.event === "import.bulk.retry")
          // Without client retries, the poll loop itself waits out all four failures.
          assert.strictEqual(retries.length, times === 0 ? 4 : 0)
        }
      }),
  )

  it.scopedLive("a target without $import fails with ImportError NotSupported; no job is started", () =>
    Effect.gen(function* () {
      const { dir, manifest } = yield* makeArchive([
        { type: "Patient", lines: [JSON.stringify({ resourceType: "Patient", id: "x" })] },
      ])
      const sandbox = yield* Sandbox.start({}, { plugins: [] })
      const exit = yield* Effect.exit(
        BulkImport.run({ client: yield* clientFor(sandbox.baseUrl), archiveDir: dir, files: manifest.files }),
      )
      const e = failure(exit)
      assert.isTrue(Option.isSome(e) && e.value instanceof ImportError && e.value.reason === "NotSupported")
      // With the flavour forced, the kick-off's 404 says the same.
      const forced = failure(
        yield* Effect.exit(
          BulkImport.run({
            client: yield* clientFor(sandbox.baseUrl),
            archiveDir: dir,
            files: manifest.files,
            flavour: "smart",
          }),
        ),
      )
      assert.isTrue(
        Option.isSome(forced) &&
          forced.value instanceof ImportError &&
          forced.value.reason === "NotSupported",
        String(Option.getOrUndefined(forced)),
      )
      assert.strictEqual(sandbox.store.count("Patient"), 0)
    }),
  )

  it.scopedLive(
    "a file server bound off loopback without an https public URL is refused before any job (plain http)",
    () =>
      Effect.gen(function* () {
        const { dir, manifest } = yield* makeArchive([
          { type: "Patient", lines: [JSON.stringify({ resourceType: "Patient", id: "x" })] },
        ])
        const sandbox = yield* Sandbox.start({})
        const run = (serve: BulkImport.ServeOptions) =>
          Effect.gen(function* () {
            return BulkImport.run({
              client: yield* clientFor(sandbox.baseUrl),
              archiveDir: dir,
              files: manifest.files,
              flavour: "smart",
              serve,
            })
          }).pipe(Effect.flatten, Effect.exit)
        const e = failure(yield* run({ host: "0.0.0.0", publicUrl: "http://10.0.0.5:8080" }))
        assert.isTrue(Option.isSome(e) && e.value instanceof ImportError && e.value.reason === "Config")
        assert.include(String(Option.getOrUndefined(e)), "over plain http")
        // bound to loopback but published over plain http at another host (a port forward): refused too
        const forwarded = failure(yield* run({ host: "127.0.0.1", publicUrl: "http://10.0.0.5:8080" }))
        assert.include(
          String(Option.getOrUndefined(forwarded)),
          "over plain http from an address that is not",
        )
        // a container's name for this machine, and loopback written as an IPv4-mapped address, are this machine
        for (const publicUrl of ["http://host.docker.internal:8787", "http://[::ffff:127.0.0.1]:8787"])
          assert.isUndefined(BulkImport.serveProblem({ host: "127.0.0.1", publicUrl }), publicUrl)
        // on all interfaces without a public URL the target has no address to fetch from
        const nowhere = failure(yield* run({ host: "0.0.0.0" }))
        assert.include(String(Option.getOrUndefined(nowhere)), "serving on all interfaces")
        assert.strictEqual(sandbox.store.count("Patient"), 0)
        // the same with an https public URL (a TLS proxy in front) goes ahead; loopback needs none
        const behindTls = failure(yield* run({ host: "0.0.0.0", publicUrl: "https://127.0.0.1:1" }))
        assert.isFalse(Option.isSome(behindTls) && String(behindTls.value).includes("over plain http"))
        const local = yield* run({ host: "127.0.0.1" })
        assert.isTrue(Exit.isSuccess(local), String(local))
        assert.strictEqual(sandbox.store.count("Patient"), 1)
      }),
  )

  it.scopedLive("fileBaseUrl: no server, the target fetches <base>/<path> itself", () =>
    Effect.gen(function* () {
      const { dir, manifest } = yield* makeArchive([
        {
          type: "Patient",
          lines: [JSON.stringify({ resourceType: "Patient", id: "fb", name: [{ family: "F" }] })],
        },
      ])
      const sandbox = yield* target()
      const { client, bodies } = spying(yield* clientFor(sandbox.baseUrl))
      // Nothing listens there: the target reports the fetch failure as a whole-file error.
      const result = yield* BulkImport.run({
        client,
        archiveDir: dir,
        files: manifest.files,
        flavour: "smart",
        serve: { fileBaseUrl: "http://127.0.0.1:9/published/" },
        pollInterval: "20 millis",
      })
      const body = bodies[0] as { storageDetail: Record<string, unknown>; input: Array<{ url: string }> }
      assert.deepStrictEqual(body.storageDetail, { type: "https" })
      assert.strictEqual(body.input[0]!.url, "http://127.0.0.1:9/published/data/Patient.000.ndjson")
      assert.deepStrictEqual(result.loaded, { Patient: 0 })
      assert.strictEqual(result.rejected.length, 1)
      assert.strictEqual(result.rejected[0]!.source, "data/Patient.000.ndjson")
      assert.isUndefined(result.rejected[0]!.line)
    }),
  )

  it.scopedLive(
    "a job that does not finish within the timeout fails with ImportError Timeout and is cancelled",
    () =>
      Effect.gen(function* () {
        const { dir, manifest } = yield* makeArchive([
          {
            type: "Patient",
            lines: [JSON.stringify({ resourceType: "Patient", id: "t", name: [{ family: "T" }] })],
          },
        ])
        const sandbox = yield* target({ bulk: { retryAfterSeconds: 0, pollsBeforeDone: 1_000_000 } })
        const { client, bodies } = spying(yield* clientFor(sandbox.baseUrl))
        const events: Array<BulkImport.BulkImportEvent> = []
        const exit = yield* Effect.exit(
          BulkImport.run({
            client,
            archiveDir: dir,
            files: manifest.files,
            timeout: "400 millis",
            onEvent: (e) => Effect.sync(() => void events.push(e)),
          }),
        )
        const e = failure(exit)
        assert.isTrue(Option.isSome(e) && e.value instanceof ImportError && e.value.reason === "Timeout")
        if (Option.isSome(e)) {
          assert.match(e.value.message, /\/bulk\/import-status\/.*did not finish within/)
          assert.notInclude(e.value.message, tokenOf(bodies[0]))
        }
        const kickoff = events.find((x) => x.event === "import.bulk.kickoff")
        assert.isDefined(kickoff)
        const status = kickoff?.event === "import.bulk.kickoff" ? kickoff.statusUrl : ""
        const after = yield* Effect.promise(() => fetch(status))
        assert.strictEqual(after.status, 404) // DELETEd: cancelled on the target
      }),
  )

  it.scopedLive(
    "a HAPI-style completion (200 OperationOutcome report) is returned as report; the job is released",
    () =>
      Effect.gen(function* () {
        const { dir, manifest } = yield* makeArchive([
          { type: "Patient", lines: [JSON.stringify({ resourceType: "Patient", id: "h" })] },
        ])
        const seen: Array<{ method: string; url: string; headers: Http.IncomingHttpHeaders }> = []
        let polls = 0
        const server = Http.createServer((req, res) => {
          seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers })
          req.resume()
          if (req.method === "POST" && req.url === "/fhir/$import") {
            res.writeHead(202, { "content-location": "/fhir/$import-poll-status?_jobId=j1" })
            res.end(JSON.stringify({ resourceType: "OperationOutcome", issue: [] }))
          } else if (req.method === "GET" && req.url === "/fhir/$import-poll-status?_jobId=j1") {
            if (polls++ === 0) {
              res.writeHead(202, { "x-progress": "IN_PROGRESS", "retry-after": "0" })
              res.end()
            } else {
              res.writeHead(200, { "content-type": "application/fhir+json" })
              res.end(
                JSON.stringify({
                  resourceType: "OperationOutcome",
                  issue: [
                    {
                      severity: "information",
                      code: "informational",
                      diagnostics: "Job is complete: 1 resource",
                    },
                  ],
                }),
              )
            }
          } else if (req.method === "DELETE") {
            res.writeHead(202)
            res.end()
          } else {
            res.writeHead(404)
            res.end()
          }
        })
        yield* Effect.acquireRelease(
          Effect.promise(() => new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()))),
          () => Effect.promise(() => new Promise<void>((r) => server.close(() => r()))),
        )
        const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`
        const result = yield* BulkImport.run({
          client: yield* clientFor(base),
          archiveDir: dir,
          files: manifest.files,
          flavour: "hapi",
          pollInterval: "20 millis",
        })
        assert.strictEqual(result.report, "information informational: Job is complete: 1 resource")
        assert.deepStrictEqual(result.loaded, {})
        assert.deepStrictEqual(result.files[0], {
          path: "data/Patient.000.ndjson",
          type: "Patient",
          expected: 1,
          rejected: 0,
          unlisted: 0,
        })
        const kick = seen[0]!
        assert.strictEqual(kick.headers.prefer, "respond-async")
        assert.strictEqual(kick.headers["content-type"], "application/fhir+json")
        assert.deepStrictEqual(seen.at(-1)!.method, "DELETE")
        assert.strictEqual(seen.at(-1)!.url, "/fhir/$import-poll-status?_jobId=j1")
      }),
  )

  it("detectFlavour: SMART draft definition, HAPI software / definition, otherwise none", () => {
    const cs = (
      operation: Array<{ name: string; definition?: string }>,
      software?: string,
    ): CapabilityStatement =>
      ({
        resourceType: "CapabilityStatement",
        rest: [{ mode: "server", operation }],
        ...(software !== undefined ? { software: { name: software } } : {}),
      }) as CapabilityStatement
    const smart = "https://github.com/smart-on-fhir/bulk-import/blob/master/import-manifest.md"
    assertSome(BulkImport.detectFlavour(cs([{ name: "import", definition: smart }])), "smart")
    assertSome(
      BulkImport.detectFlavour(
        cs([{ name: "import", definition: "http://h/fhir/OperationDefinition/-s-import" }]),
      ),
      "hapi",
    )
    assertSome(BulkImport.detectFlavour(cs([{ name: "$import" }], "HAPI FHIR Server")), "hapi")
    assertNone(BulkImport.detectFlavour(cs([{ name: "import" }])))
    assertNone(BulkImport.detectFlavour(cs([{ name: "export" }], "HAPI FHIR Server")))
  })
})
