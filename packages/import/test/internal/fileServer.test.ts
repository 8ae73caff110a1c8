import * as NFS from "node:fs"
import { request } from "node:http"
import * as OS from "node:os"
import * as Path from "node:path"
import { gzipSync, gunzipSync } from "node:zlib"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Option, Redacted, Scope } from "effect"
import { ImportError } from "../../src/ImportError.js"
import * as FileServer from "../../src/internal/fileServer.js"

interface Raw {
  readonly status: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly body: Buffer
}

/** A raw node:http request: the path is sent byte for byte (no URL normalisation, no decompression). */
const raw = (base: string, path: string, headers: Record<string, string> = {}, method = "GET") =>
  Effect.promise(
    () =>
      new Promise<Raw>((resolve, reject) => {
        const u = new URL(base)
        const req = request({ host: u.hostname, port: u.port, path, method, headers }, (res) => {
          const chunks: Buffer[] = []
          res.on("data", (c: Buffer) => chunks.push(c))
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
          )
        })
        req.on("error", reject)
        req.end()
      }),
  )

const patients = `${JSON.stringify({ resourceType: "Patient", id: "a" })}\n${JSON.stringify({ resourceType: "Patient", id: "b" })}\n`
const observations = `${JSON.stringify({ resourceType: "Observation", id: "o" })}\n`
const token = "k".repeat(20) + Buffer.from("0123456789abcdef").toString("hex")

const archive = Effect.acquireRelease(
  Effect.sync(() => {
    const dir = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-fileserver-test-"))
    NFS.mkdirSync(Path.join(dir, "data"))
    NFS.writeFileSync(Path.join(dir, "data", "Patient.000.ndjson"), patients)
    NFS.writeFileSync(Path.join(dir, "data", "Observation.000.ndjson.gz"), gzipSync(observations))
    NFS.writeFileSync(Path.join(dir, "data", "Secret.000.ndjson"), "not listed\n")
    NFS.writeFileSync(Path.join(dir, "manifest.json"), "{}")
    return dir
  }),
  (dir) => Effect.sync(() => NFS.rmSync(dir, { recursive: true, force: true })),
)

const files = [
  { path: "data/Patient.000.ndjson", compression: "none" as const },
  { path: "data/Observation.000.ndjson.gz", compression: "gzip" as const },
]

const serve = (dir: string) => FileServer.start({ archiveDir: dir, files, token: Redacted.make(token) })

const failure = <A, E>(exit: Exit.Exit<A, E>): Option.Option<E> =>
  Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()

const bearer = { authorization: `Bearer ${token}` }

describe("fileServer", () => {
  it.scopedLive("serves listed files with the token as Bearer, Basic ferry:<token> or a path segment", () =>
    Effect.gen(function* () {
      const dir = yield* archive
      const server = yield* serve(dir)
      assert.match(server.baseUrl, /^http:\/\/127\.0\.0\.1:\d+$/)
      const viaBearer = yield* raw(server.baseUrl, "/data/Patient.000.ndjson", bearer)
      assert.strictEqual(viaBearer.status, 200)
      assert.strictEqual(viaBearer.headers["content-type"], "application/fhir+ndjson")
      assert.strictEqual(viaBearer.body.toString(), patients)
      const basic = Buffer.from(`ferry:${token}`).toString("base64")
      const viaBasic = yield* raw(server.baseUrl, "/data/Patient.000.ndjson", {
        authorization: `Basic ${basic}`,
      })
      assert.strictEqual(viaBasic.body.toString(), patients)
      const pathUrl = new URL(server.urlOf("data/Patient.000.ndjson", "path"))
      assert.strictEqual(pathUrl.pathname, `/${token}/data/Patient.000.ndjson`)
      const viaPath = yield* raw(server.baseUrl, pathUrl.pathname)
      assert.strictEqual(viaPath.status, 200)
      assert.strictEqual(viaPath.body.toString(), patients)
      assert.strictEqual(
        server.urlOf("data/Patient.000.ndjson", "header"),
        `${server.baseUrl}/data/Patient.000.ndjson`,
      )
      const head = yield* raw(server.baseUrl, "/data/Patient.000.ndjson", bearer, "HEAD")
      assert.strictEqual(head.status, 200)
      assert.strictEqual(head.headers["content-length"], String(Buffer.byteLength(patients)))
      assert.strictEqual(server.stats().served, 4)
    }),
  )

  it.scopedLive("refuses requests without the right token (401)", () =>
    Effect.gen(function* () {
      const dir = yield* archive
      const server = yield* serve(dir)
      const wrongBasic = Buffer.from(`admin:${token}`).toString("base64")
      for (const [path, headers] of [
        ["/data/Patient.000.ndjson", {}],
        ["/data/Patient.000.ndjson", { authorization: "Bearer nope" }],
        ["/data/Patient.000.ndjson", { authorization: `Bearer ${token}x` }],
        ["/data/Patient.000.ndjson", { authorization: `Basic ${wrongBasic}` }],
        ["/data/Patient.000.ndjson", { authorization: token }],
        [`/${token.slice(0, -1)}/data/Patient.000.ndjson`, {}],
        ["/manifest.json", {}],
      ] as const) {
        const r = yield* raw(server.baseUrl, path, headers)
        assert.strictEqual(r.status, 401, `${path} ${JSON.stringify(headers)}`)
        assert.notInclude(r.body.toString(), "Patient")
      }
      assert.strictEqual(server.stats().served, 0)
      assert.strictEqual(server.stats().refused, 7)
    }),
  )

  it.scopedLive(
    "with the token, serves nothing outside the file list: traversal, absolute, encoded (404)",
    () =>
      Effect.gen(function* () {
        const dir = yield* archive
        const server = yield* serve(dir)
        const paths = [
          "/manifest.json",
          "/../manifest.json",
          "/data/../manifest.json",
          "/data/Patient.000.ndjson/../../manifest.json",
          "/data/%2e%2e/manifest.json",
          "/%2e%2e/%2e%2e/etc/passwd",
          "/data%2F..%2Fmanifest.json",
          "/data/..%5cmanifest.json",
          "/data/Secret.000.ndjson",
          "/data/Patient.000.ndjson%00",
          "/data//Patient.000.ndjson",
          "/./data/Patient.000.ndjson",
          `/${dir}/data/Patient.000.ndjson`,
          `${Path.join(dir, "manifest.json")}`,
          "//etc/passwd",
          "/etc/passwd",
          "/",
        ]
        for (const path of paths) {
          const r = yield* raw(server.baseUrl, path, bearer)
          assert.strictEqual(r.status, 404, path)
          assert.strictEqual(r.body.toString(), "not found\n", path)
        }
        for (const path of [
          `/${token}/../manifest.json`,
          `/${token}/data/../manifest.json`,
          `/${token}/manifest.json`,
        ]) {
          const r = yield* raw(server.baseUrl, path)
          assert.strictEqual(r.status, 404, path)
        }
        const post = yield* raw(server.baseUrl, "/data/Patient.000.ndjson", bearer, "POST")
        assert.strictEqual(post.status, 405)
      }),
  )

  it.scopedLive("gzip files: Content-Encoding gzip when accepted, decompressed otherwise", () =>
    Effect.gen(function* () {
      const dir = yield* archive
      const server = yield* serve(dir)
      const zipped = yield* raw(server.baseUrl, "/data/Observation.000.ndjson.gz", {
        ...bearer,
        "accept-encoding": "gzip, deflate, br",
      })
      assert.strictEqual(zipped.status, 200)
      assert.strictEqual(zipped.headers["content-encoding"], "gzip")
      assert.strictEqual(zipped.headers["content-type"], "application/fhir+ndjson")
      assert.strictEqual(gunzipSync(zipped.body).toString(), observations)
      for (const accept of [undefined, "identity", "gzip;q=0"]) {
        const plain = yield* raw(server.baseUrl, "/data/Observation.000.ndjson.gz", {
          ...bearer,
          ...(accept !== undefined ? { "accept-encoding": accept } : {}),
        })
        assert.strictEqual(plain.status, 200)
        assert.isUndefined(plain.headers["content-encoding"])
        assert.strictEqual(plain.body.toString(), observations, String(accept))
      }
      // fetch (undici) asks for gzip and decompresses: what the sandbox target does.
      const fetched = yield* Effect.promise(() =>
        fetch(`${server.baseUrl}/data/Observation.000.ndjson.gz`, { headers: bearer }).then((r) => r.text()),
      )
      assert.strictEqual(fetched, observations)
    }),
  )

  it.live("closes with its scope: the port refuses connections afterwards", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const dir = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-fileserver-test-"))
      NFS.mkdirSync(Path.join(dir, "data"))
      NFS.writeFileSync(Path.join(dir, "data", "Patient.000.ndjson"), patients)
      const server = yield* FileServer.start({
        archiveDir: dir,
        files: [files[0]!],
        token: Redacted.make(token),
      }).pipe(Scope.extend(scope))
      assert.strictEqual((yield* raw(server.baseUrl, "/data/Patient.000.ndjson", bearer)).status, 200)
      yield* Scope.close(scope, Exit.void)
      const after = yield* Effect.exit(
        Effect.tryPromise(() => fetch(`${server.baseUrl}/data/Patient.000.ndjson`, { headers: bearer })),
      )
      assert.isTrue(Exit.isFailure(after))
      NFS.rmSync(dir, { recursive: true, force: true })
    }),
  )

  it.scopedLive(
    "every spelling of all interfaces needs a public URL; IPv6 hosts are listened on without their brackets",
    () =>
      Effect.gen(function* () {
        for (const host of ["0.0.0.0", "::", "::0", "[::]", "0", "0:0:0:0:0:0:0:0"])
          assert.isDefined(FileServer.wildcardProblem(host, undefined), host)
        for (const host of ["127.0.0.1", "::1", "[::1]", "10.0.0.5", "files.example.org"])
          assert.isUndefined(FileServer.wildcardProblem(host, undefined), host)
        assert.strictEqual(FileServer.listenHost("[::1]"), "::1")
        const dir = yield* archive
        const server = yield* FileServer.start({
          archiveDir: dir,
          files,
          token: Redacted.make(token),
          host: "[::1]",
        }).pipe(Effect.either)
        // where the machine has IPv6 loopback, it serves there; elsewhere the advice names the address
        if (server._tag === "Right") assert.match(server.right.baseUrl, /^http:\/\/\[::1\]:\d+$/)
        else assert.include(server.left.message, "[::1]")
      }),
  )

  it.scoped(
    "a missing or unsafe listed path fails (Archive); a wildcard host needs a public URL (Config)",
    () =>
      Effect.gen(function* () {
        const dir = yield* archive
        const wildcard = failure(
          yield* Effect.exit(
            FileServer.start({ archiveDir: dir, files, token: Redacted.make(token), host: "0.0.0.0" }),
          ),
        )
        assert.isTrue(Option.isSome(wildcard) && wildcard.value.reason === "Config")
        const published = yield* FileServer.start({
          archiveDir: dir,
          files,
          token: Redacted.make(token),
          host: "0.0.0.0",
          publicUrl: "http://ferry.example:8787/",
        })
        assert.strictEqual(published.baseUrl, "http://ferry.example:8787")
        for (const path of [
          "data/Missing.000.ndjson",
          "../outside.ndjson",
          "/etc/passwd",
          "data/./x.ndjson",
        ]) {
          const exit = yield* Effect.exit(
            FileServer.start({
              archiveDir: dir,
              files: [{ path, compression: "none" }],
              token: Redacted.make(token),
            }),
          )
          assert.isTrue(Exit.isFailure(exit), path)
          const error = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
          assert.isTrue(Option.isSome(error) && error.value instanceof ImportError, path)
          if (Option.isSome(error)) {
            assert.strictEqual(error.value.reason, "Archive")
            assert.notInclude(error.value.message, token)
          }
        }
      }),
  )
})
