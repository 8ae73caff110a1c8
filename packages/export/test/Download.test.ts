import * as NFS from "node:fs"
import * as Http from "node:http"
import * as Net from "node:net"
import type { AddressInfo } from "node:net"
import * as Zlib from "node:zlib"
import * as Path from "node:path"
import { NodeHttpClient } from "@effect/platform-node"
import { assert, describe, it, layer } from "@effect/vitest"
import * as FhirClient from "@ferry/core/FhirClient"
import * as Sandbox from "@ferry/sandbox/Sandbox"
import { Cause, Effect, Exit, Option } from "effect"
import * as Download from "../src/Download.js"
import * as Export from "../src/Export.js"
import { ExportError } from "../src/ExportError.js"
import * as Kickoff from "../src/Kickoff.js"
import * as Poll from "../src/Poll.js"
import { fsyncLog } from "@ferry/archive/test/helpers"
import { listening } from "@ferry/core/test/helpers/loopback"
import { clientFor, dataLines, events, sample10, setFaults, sha256File, tempDir } from "./helpers/sandbox.js"

const fast = { pollInterval: "50 millis" } as const
const types = ["Patient", "DocumentReference", "Condition"]

layer(Sandbox.Sandbox.layer({ seed: [sample10], bulk: { retryAfterSeconds: 0 } } as never), {
  timeout: 60_000,
  excludeTestServices: true,
})("Download (faults on a 10-patient sandbox)", (it) => {
  it.scoped("a partly written .partial file left by a crash is resumed with Range and ends identical", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      yield* setFaults(sandbox.baseUrl, {})
      const dir = yield* tempDir
      const client = yield* clientFor(sandbox.baseUrl)
      const p = Kickoff.params({ level: "system", types: ["DocumentReference"] })
      const status = yield* Kickoff.kickoff(client, p)
      const manifest = yield* Poll.waitForManifest(client, status, { interval: "50 millis" })
      const file = manifest.output[0]!
      const whole = Path.join(dir, "whole.ndjson")
      const full = yield* Download.download(client, {
        url: file.url,
        type: "DocumentReference",
        count: file.count,
        path: whole,
        label: "whole",
        auth: false,
      })
      assert.strictEqual(full.resumedFrom, 0)
      // A crash after 1,000,123 bytes: the part ends in the middle of a line.
      const partial = Path.join(dir, "partial.ndjson")
      const bytes = NFS.readFileSync(whole)
      NFS.writeFileSync(`${partial}.partial`, bytes.subarray(0, 1_000_123))
      const lastNewline = bytes.subarray(0, 1_000_123).lastIndexOf(10) + 1
      const resumes: Array<number> = []
      const resumed = yield* Download.download(
        client,
        {
          url: file.url,
          type: "DocumentReference",
          count: file.count,
          path: partial,
          label: "partial",
          auth: false,
        },
        { onResume: (offset) => Effect.sync(() => void resumes.push(offset)) },
      )
      assert.strictEqual(resumed.resumedFrom, lastNewline)
      assert.deepStrictEqual(resumes, [lastNewline])
      assert.strictEqual(resumed.sha256, full.sha256)
      assert.strictEqual(sha256File(partial), full.sha256)
      assert.strictEqual(resumed.count, file.count)
      assert.isFalse(NFS.existsSync(`${partial}.partial`))
      yield* Poll.release(client, status)
    }),
  )

  it.scoped("a connection reset mid-file is resumed by Range; the data equals a fault-free export", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const dir = yield* tempDir
      const client = yield* clientFor(sandbox.baseUrl)
      yield* setFaults(sandbox.baseUrl, {})
      yield* Export.run({ client, out: Path.join(dir, "clean"), params: { level: "system", types }, ...fast })
      yield* setFaults(sandbox.baseUrl, {
        resetDownload: { afterBytes: 200_000, attempts: 2, type: "DocumentReference" },
      })
      const out = Path.join(dir, "reset")
      yield* Export.run({ client, out, params: { level: "system", types }, ...fast })
      const resumes = events(out).filter((e) => e.event === "resume" && Number(e.offset) > 0)
      assert.isAtLeast(resumes.length, 2)
      assert.isTrue(resumes.every((e) => e.reason === "range"))
      assert.deepStrictEqual(dataLines(out), dataLines(Path.join(dir, "clean")))
    }),
  )

  it.scoped(
    "a short file (count mismatch, every job) is downloaded once more and asked of a new job, then fails with a clear error",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const dir = yield* tempDir
        const client = yield* clientFor(sandbox.baseUrl)
        yield* setFaults(sandbox.baseUrl, { shortFile: { type: "Condition", missing: 1, everyJob: true } })
        const out = Path.join(dir, "short")
        const exit = yield* Export.run({ client, out, params: { level: "system", types }, ...fast }).pipe(
          Effect.exit,
        )
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.isFailure(exit)
          ? Option.getOrUndefined(Cause.failureOption(exit.cause))
          : undefined
        assert.instanceOf(error, ExportError)
        assert.strictEqual((error as ExportError).reason, "CountMismatch")
        assert.match(
          (error as ExportError).message,
          /Condition\.000\.ndjson holds \d+ resources but the manifest announced \d+, also after downloading it again/,
        )
        assert.strictEqual(events(out).filter((e) => e.event === "count-mismatch").length, 2)
        // Not released after a failure: the last job is kept for a rerun (the replaced ones are released).
        assert.isFalse(events(out).some((e) => e.event === "released"))
        assert.strictEqual(events(out).filter((e) => e.event === "replaced-job-released").length, 1)
      }),
  )

  it.scoped("429/503 storms on kick-off, status and download are ridden out", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const dir = yield* tempDir
      const client = yield* clientFor(sandbox.baseUrl)
      yield* setFaults(sandbox.baseUrl, {})
      yield* Export.run({ client, out: Path.join(dir, "clean"), params: { level: "system", types }, ...fast })
      yield* setFaults(sandbox.baseUrl, {
        throttle: [
          { route: "kickoff", first: 2, seconds: 1 },
          { route: "status", first: 12, seconds: 0 },
          { route: "download", first: 3, seconds: 0, retryAfter: "http-date" },
        ],
        transient: [
          { route: "status", skip: 12, first: 2, status: 500 },
          { route: "download", skip: 3, first: 3, status: 503 },
        ],
      })
      const out = Path.join(dir, "storm")
      const summary = yield* Export.run({ client, out, params: { level: "system", types }, ...fast })
      assert.isTrue(summary.released)
      assert.deepStrictEqual(dataLines(out), dataLines(Path.join(dir, "clean")))
      // 12 throttled polls exceed the client's 8 retries: the poll loop waited and asked again.
      assert.isTrue(events(out).some((e) => e.event === "poll-retry"))
    }),
  )

  it.scoped("410 on an expired file: a new kick-off with the same parameters, finished files kept", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const dir = yield* tempDir
      const client = yield* clientFor(sandbox.baseUrl)
      yield* setFaults(sandbox.baseUrl, { expireFiles: { firstAttempt: true, type: "Patient" } })
      const out = Path.join(dir, "expired")
      const summary = yield* Export.run({
        client,
        out,
        params: { level: "system", types },
        parallel: 1,
        ...fast,
        // The fresh job's files are served normally.
        onEvent: (e) => (e.event === "expired" ? setFaults(sandbox.baseUrl, {}) : Effect.void),
      })
      assert.strictEqual(summary.rekickoffs, 1)
      assert.strictEqual(events(out).filter((e) => e.event === "kickoff").length, 2)
      assert.deepStrictEqual(
        Object.fromEntries(Object.entries(summary.types).map(([t, s]) => [t, s.resources])),
        Object.fromEntries(types.map((t) => [t, sandbox.store.count(t)])),
      )
      // Each file was written exactly once.
      assert.strictEqual(events(out).filter((e) => e.event === "file").length, summary.files.length)
    }),
  )
})

describe("Download content encodings", () => {
  const body = Array.from({ length: 50 }, (_, i) =>
    JSON.stringify({ resourceType: "Patient", id: `p${i}` }),
  ).join("\n")
  const encoders: Record<string, ((b: Buffer) => Buffer) | undefined> = {
    gzip: (b) => Zlib.gzipSync(b),
    deflate: (b) => Zlib.deflateSync(b),
    br: (b) => Zlib.brotliCompressSync(b),
    // an encoding Ferry never asks for (LZW `compress` magic, then garbage)
    compress: (b) => Buffer.concat([Buffer.from([0x1f, 0x9d]), b]),
  }
  const server = Effect.acquireRelease(
    Effect.async<Http.Server>((resume) => {
      const s = Http.createServer((req, res) => {
        const encoding = (req.url ?? "").slice(1)
        const range = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ""))
        if (encoding === "stored-gzip") {
          // object storage serving a pre-compressed file whatever Accept-Encoding says, Range on its bytes
          const stored = Zlib.gzipSync(Buffer.from(body))
          const start = range === null ? 0 : Number(range[1])
          res.writeHead(range === null ? 200 : 206, {
            "content-encoding": "gzip",
            ...(range === null
              ? {}
              : { "content-range": `bytes ${start}-${stored.length - 1}/${stored.length}` }),
          })
          return void res.end(stored.subarray(start))
        }
        if (encoding === "ranged" && range !== null) {
          // a server that serves ranges of the identity representation, as asked
          const start = Number(range[1])
          if (start >= body.length) {
            res.writeHead(416, { "content-range": `bytes */${body.length}` })
            return void res.end()
          }
          res.writeHead(206, {
            "content-type": "application/fhir+ndjson",
            "content-range": `bytes ${start}-${body.length - 1}/${body.length}`,
          })
          return void res.end(body.slice(start))
        }
        if (encoding === "gone416" && range !== null) {
          // "nothing there at that offset": without a count to check, the part file may well be short
          res.writeHead(416, { "content-range": `bytes */${body.length + 1}` })
          return void res.end()
        }
        if (encoding === "badrange" && req.headers.range !== undefined) {
          // A 206 for the wrong range: must not be appended.
          res.writeHead(206, { "content-range": `bytes 0-9/${body.length}` })
          return void res.end(body.slice(0, 10))
        }
        const encode = encoders[encoding]
        res.writeHead(200, {
          "content-type": "application/fhir+ndjson",
          ...(encode ? { "content-encoding": encoding } : {}),
        })
        // No trailing newline: the finished file gets one.
        res.end(encode ? encode(Buffer.from(body)) : body)
      })
      s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
    }),
    (s) => Effect.async<void>((resume) => void s.close(() => resume(Effect.void))),
  )
  /** The server's origin, for the scope. */
  const serverBase = Effect.map(server, (s) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`)

  it.scopedLive(
    "gzip, deflate and br answers are decoded, through fetch (which decodes) and undici (which does not); a missing last newline is added",
    () =>
      Effect.gen(function* () {
        const base = yield* serverBase
        const dir = yield* tempDir
        const hashes = new Set<string>()
        const clients = {
          fetch: yield* clientFor(`${base}/fhir`),
          undici: yield* FhirClient.make({ baseUrl: `${base}/fhir` }),
        }
        for (const [name, client] of Object.entries(clients))
          for (const encoding of ["identity", "gzip", "deflate", "br"]) {
            const path = Path.join(dir, `${name}-${encoding}.ndjson`)
            const result = yield* Download.download(client, {
              url: `${base}/${encoding}`,
              type: "Patient",
              count: 50,
              path,
              label: encoding,
              auth: false,
            })
            assert.strictEqual(result.count, 50)
            assert.strictEqual(NFS.readFileSync(path, "utf8"), `${body}\n`)
            hashes.add(result.sha256)
          }
        assert.strictEqual(hashes.size, 1)
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive(
    "a part file is not resumed from an encoded 206 (a slice of a compressed file) nor taken as complete on a 416 without a count: the file starts over",
    () =>
      Effect.gen(function* () {
        const base = yield* serverBase
        const client = yield* FhirClient.make({
          baseUrl: `${base}/fhir`,
          retry: { base: "10 millis", times: 3 },
        })
        const dir = yield* tempDir
        const firstLines = `${body.split("\n").slice(0, 10).join("\n")}\n`
        for (const route of ["stored-gzip", "gone416"]) {
          const path = Path.join(dir, `${route}.ndjson`)
          // what an interrupted transfer left: the first 10 lines, decoded
          NFS.writeFileSync(`${path}.partial`, firstLines)
          const result = yield* Download.download(client, {
            url: `${base}/${route}`,
            type: "Patient",
            count: undefined,
            path,
            label: route,
            auth: false,
          })
          assert.strictEqual(result.count, 50, route)
          assert.strictEqual(NFS.readFileSync(path, "utf8"), `${body}\n`, route)
        }
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("an encoding Ferry did not ask for fails with InvalidFile naming it", () =>
    Effect.gen(function* () {
      const base = yield* serverBase
      const client = yield* FhirClient.make({ baseUrl: `${base}/fhir` })
      const dir = yield* tempDir
      const exit = yield* Download.download(client, {
        url: `${base}/compress`,
        type: "Patient",
        count: undefined,
        path: Path.join(dir, "c.ndjson"),
        label: "data/Patient.000.ndjson",
        auth: false,
      }).pipe(Effect.exit)
      const error = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined
      assert.instanceOf(error, ExportError)
      assert.strictEqual((error as ExportError).reason, "InvalidFile")
      assert.include((error as ExportError).message, 'Content-Encoding "compress"')
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scoped("a line of another type fails with InvalidFile naming file:line", () =>
    Effect.gen(function* () {
      const base = yield* serverBase
      const client = yield* clientFor(`${base}/fhir`)
      const dir = yield* tempDir
      const exit = yield* Download.download(client, {
        url: `${base}/identity`,
        type: "Observation",
        count: undefined,
        path: Path.join(dir, "x.ndjson"),
        label: "data/Observation.000.ndjson",
        auth: false,
      }).pipe(Effect.exit)
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined
      assert.instanceOf(error, ExportError)
      assert.strictEqual((error as ExportError).reason, "InvalidFile")
      assert.include((error as ExportError).message, "data/Observation.000.ndjson:1")
    }),
  )

  it.scoped(
    "a server that ignores Range (200) or answers the wrong range (206) makes the download start over",
    () =>
      Effect.gen(function* () {
        const base = yield* serverBase
        const client = yield* clientFor(`${base}/fhir`)
        const dir = yield* tempDir
        for (const route of ["identity", "badrange"]) {
          const path = Path.join(dir, `${route}.ndjson`)
          NFS.writeFileSync(`${path}.partial`, `${body.slice(0, 200)}`)
          const resumes: Array<string> = []
          const result = yield* Download.download(
            client,
            { url: `${base}/${route}`, type: "Patient", count: 50, path, label: route, auth: false },
            { onResume: (_, reason) => Effect.sync(() => void resumes.push(reason)) },
          )
          assert.strictEqual(result.resumedFrom, 0)
          assert.strictEqual(NFS.readFileSync(path, "utf8"), `${body}\n`)
          assert.isAtLeast(resumes.length, 1)
        }
      }),
  )

  it.scoped(
    "a .partial an earlier run left damaged on this disk (a page a power loss zeroed) is deleted and the file downloaded from the start, not blamed on the server",
    () =>
      Effect.gen(function* () {
        const base = yield* serverBase
        const client = yield* clientFor(`${base}/fhir`)
        const dir = yield* tempDir
        const firstLines = Buffer.from(`${body.split("\n").slice(0, 10).join("\n")}\n`)
        // the server answers the resumed request with the rest (206), or says it is all there (416)
        for (const route of ["ranged", "gone416"]) {
          const path = Path.join(dir, `${route}.ndjson`)
          const damaged = Buffer.from(firstLines)
          damaged.fill(0, 100, 160)
          NFS.writeFileSync(
            `${path}.partial`,
            route === "gone416"
              ? Buffer.concat([damaged, Buffer.from(body.slice(firstLines.length)), Buffer.from("\n")])
              : damaged,
          )
          const resumes: Array<[number, string]> = []
          const target = {
            url: `${base}/${route}`,
            type: "Patient",
            count: 50,
            path,
            label: route,
            auth: false,
          }
          const options = {
            onResume: (offset: number, reason: string) =>
              Effect.sync(() => void resumes.push([offset, reason])),
          }
          const result = yield* Download.download(client, target, options)
          assert.strictEqual(result.resumedFrom, 0, route)
          assert.strictEqual(result.count, 50, route)
          assert.strictEqual(NFS.readFileSync(path, "utf8"), `${body}\n`, route)
          assert.isFalse(NFS.existsSync(`${path}.partial`), route)
          assert.deepStrictEqual(
            resumes.map(([offset]) => offset),
            [0],
            route,
          )
          assert.include(resumes[0]![1], "the partial download is damaged", route)
          assert.include(resumes[0]![1], `${route}:3`, route)
        }
      }),
  )

  it.scoped(
    "a .partial that was already complete (416) is fsynced before it is renamed into place, and its directory after",
    () =>
      Effect.gen(function* () {
        const base = yield* serverBase
        const client = yield* clientFor(`${base}/fhir`)
        const dir = yield* tempDir
        const path = Path.join(dir, "complete.ndjson")
        // everything an earlier run received, never fsynced by it (it was killed before its rename)
        NFS.writeFileSync(`${path}.partial`, `${body}\n`)
        const log = yield* fsyncLog
        const result = yield* Download.download(client, {
          url: `${base}/ranged`,
          type: "Patient",
          count: 50,
          path,
          label: "complete",
          auth: false,
        })
        assert.strictEqual(result.resumedFrom, Buffer.byteLength(`${body}\n`))
        assert.strictEqual(NFS.readFileSync(path, "utf8"), `${body}\n`)
        const at = (line: string) => log.indexOf(line)
        assert.isAtLeast(at(`sync ${path}.partial`), 0, log.join(", "))
        assert.isBelow(at(`sync ${path}.partial`), at(`rename ${path}`), log.join(", "))
        assert.isAbove(at(`sync ${dir}`), at(`rename ${path}`), log.join(", "))
      }),
  )
})

describe("Download: failures no resume cures", () => {
  it.scoped(
    "a file with more lines than the manifest's count (here endless) is stopped there: CountMismatch, no partial left",
    () =>
      Effect.gen(function* () {
        let sent = 0
        const server = Http.createServer((_req, res) => {
          res.writeHead(200, { "content-type": "application/fhir+ndjson" })
          // lines as long as the client takes them, and forever: a gzip bomb looks like this after decoding
          const more = () => {
            while (res.write(`${JSON.stringify({ resourceType: "Patient", id: `p${sent++}` })}\n`)) {
              if (sent % 1000 === 0) return void setImmediate(more)
            }
            res.once("drain", more)
          }
          res.on("error", () => undefined)
          more()
        })
        const port = yield* listening(server)
        const dir = yield* tempDir
        const client = yield* clientFor(`http://127.0.0.1:${port}/fhir`)
        const path = Path.join(dir, "Patient.000.ndjson")
        const error = yield* Effect.flip(
          Download.download(client, {
            url: `http://127.0.0.1:${port}/files/Patient.ndjson`,
            type: "Patient",
            count: 3,
            path,
            label: "data/Patient.000.ndjson",
            auth: false,
          }),
        )
        assert.instanceOf(error, ExportError)
        assert.strictEqual((error as ExportError).reason, "CountMismatch")
        assert.include(
          error.message,
          "data/Patient.000.ndjson holds more than the 3 resources the manifest announced",
        )
        assert.isFalse(NFS.existsSync(`${path}.partial`))
        assert.isFalse(NFS.existsSync(path))
        assert.isBelow(sent, 1_000_000, "stopped early, not read to a million lines")
      }),
  )

  it.scoped("a port that answers no HTTP fails at once, without a resume (one connection, not six)", () =>
    Effect.gen(function* () {
      let connections = 0
      const server = Net.createServer((socket) => {
        connections++
        socket.on("data", () => socket.end("SSH-2.0-OpenSSH_9.6\r\nProtocol mismatch.\r\n"))
        socket.on("error", () => undefined)
      })
      const port = yield* listening(server)
      const dir = yield* tempDir
      const client = yield* clientFor(`http://127.0.0.1:${port}/fhir`)
      const resumes: Array<string> = []
      const exit = yield* Download.download(
        client,
        {
          url: `http://127.0.0.1:${port}/files/Patient.ndjson`,
          type: "Patient",
          count: undefined,
          path: Path.join(dir, "Patient.ndjson"),
          label: "Patient",
          auth: false,
        },
        { onResume: (_, reason) => Effect.sync(() => void resumes.push(reason)) },
      ).pipe(Effect.exit)
      assert.isTrue(Exit.isFailure(exit))
      assert.deepStrictEqual(resumes, [])
      assert.strictEqual(connections, 1)
    }),
  )
})
