/**
 * `FhirClient.get` (the lean GET on undici the export's hot loops use) against real loopback servers: the same
 * rules as `request` — auth only to the base's origin, never across a redirect to another host, one refresh
 * after a 401, the retry schedule with Retry-After, the per-attempt timeout, redacted URLs.
 */
import { spawn } from "node:child_process"
import { createServer, type ServerResponse } from "node:http"
import { type AddressInfo, connect, type Socket } from "node:net"
import { FetchHttpClient, HttpClientRequest } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Stream } from "effect"
import { Agent, type Dispatcher, getGlobalDispatcher, setGlobalDispatcher } from "undici"
import { AuthError, FhirError } from "../src/Errors.js"
import * as FhirClient from "../src/FhirClient.js"
import { loopback } from "./helpers/loopback.js"

const text = (res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}) => {
  res.writeHead(status, { "content-type": "text/plain", ...headers })
  res.end(body)
}

const bodyOf = (response: FhirClient.RawResponse) => Effect.promise(() => response.body.text())

/** A client whose token is `token-<n>`, n counting the refreshes (onUnauthorized). */
const clientFor = (baseUrl: string, options: Partial<FhirClient.FhirClientOptions> = {}) =>
  Effect.gen(function* () {
    let refreshes = 0
    const client = yield* FhirClient.make({
      baseUrl,
      authorize: (req) => Effect.succeed(HttpClientRequest.bearerToken(req, `token-${refreshes}`)),
      onUnauthorized: Effect.sync(() => {
        refreshes++
      }),
      retry: { times: 3, base: Duration.millis(10) },
      ...options,
    })
    return { client, refreshes: () => refreshes }
  })

describe("FhirClient.get against loopback servers", () => {
  it.scopedLive("sends Authorization only to its own origin, and none with auth: false", () =>
    Effect.gen(function* () {
      const other = yield* loopback((req, res) => text(res, 200, `other ${req.url}`))
      const own = yield* loopback((req, res) => text(res, 200, `own ${req.url}`))
      const { client } = yield* clientFor(`${own.origin}/fhir`)

      const relative = yield* client.get("Binary/1")
      assert.strictEqual(relative.status, 200)
      assert.strictEqual(yield* bodyOf(relative), "own /fhir/Binary/1")
      assert.deepStrictEqual(own.seen.at(-1), {
        url: "/fhir/Binary/1",
        authorization: "Bearer token-0",
        accept: "*/*",
      })

      yield* Effect.flatMap(client.get(`${own.origin}/fhir/Binary/2`, { auth: false }), bodyOf)
      assert.strictEqual(own.seen.at(-1)?.authorization, undefined)

      // an Authorization header passed by the caller is never sent: `auth` alone decides
      const direct = yield* client.get(`${other.origin}/files/a.ndjson`, {
        headers: { Authorization: "Bearer smuggled", accept: "application/fhir+ndjson" },
      })
      assert.strictEqual(yield* bodyOf(direct), "other /files/a.ndjson")
      assert.deepStrictEqual(other.seen.at(-1), {
        url: "/files/a.ndjson",
        authorization: undefined,
        accept: "application/fhir+ndjson",
      })
    }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive(
    "follows redirects itself: no Authorization across a redirect to another host, at most 5",
    () =>
      Effect.gen(function* () {
        const other = yield* loopback((req, res) => text(res, 200, `other ${req.url}`))
        const own = yield* loopback((req, res, origin) => {
          if (req.url === "/fhir/out") {
            res.writeHead(302, { location: `${other.origin}/files/f.ndjson?X-Amz-Signature=s3cr3t` })
            return res.end()
          }
          if (req.url === "/fhir/here") {
            res.writeHead(307, { location: `${origin}/fhir/there` })
            return res.end()
          }
          const loop = /^\/fhir\/loop\/(\d+)$/.exec(req.url ?? "")
          if (loop) {
            res.writeHead(302, { location: `/fhir/loop/${Number(loop[1]) + 1}` })
            return res.end()
          }
          text(res, 200, `own ${req.url}`)
        })
        const { client } = yield* clientFor(`${own.origin}/fhir`)

        const away = yield* client.get("out")
        assert.strictEqual(yield* bodyOf(away), "other /files/f.ndjson?X-Amz-Signature=s3cr3t")
        assert.strictEqual(away.url, `${other.origin}/files/f.ndjson?X-Amz-Signature=s3cr3t`)
        assert.strictEqual(own.seen.at(-1)?.authorization, "Bearer token-0")
        assert.deepStrictEqual(other.seen, [
          { url: "/files/f.ndjson?X-Amz-Signature=s3cr3t", authorization: undefined, accept: "*/*" },
        ])

        // a redirect within the own origin keeps the credentials
        assert.strictEqual(yield* Effect.flatMap(client.get("here"), bodyOf), "own /fhir/there")
        assert.deepStrictEqual(
          own.seen.slice(-2).map((s) => [s.url, s.authorization]),
          [
            ["/fhir/here", "Bearer token-0"],
            ["/fhir/there", "Bearer token-0"],
          ],
        )

        // the 6th redirect is not followed: it is the answer, and not a 2xx
        const before = own.seen.length
        const looped = yield* Effect.flip(client.get("loop/0"))
        assert.instanceOf(looped, FhirError)
        assert.strictEqual((looped as FhirError).status, 302)
        assert.strictEqual(own.seen.length - before, 6)
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive("a 401 refreshes the credentials once and tries again; a second 401 is an AuthError", () =>
    Effect.gen(function* () {
      const own = yield* loopback((req, res) => {
        if (req.url === "/fhir/always") return text(res, 401, "no")
        if (req.headers.authorization !== "Bearer token-1") return text(res, 401, "expired")
        text(res, 200, "fresh")
      })
      const { client, refreshes } = yield* clientFor(`${own.origin}/fhir`)
      assert.strictEqual(yield* Effect.flatMap(client.get("Binary/1"), bodyOf), "fresh")
      assert.strictEqual(refreshes(), 1)
      assert.deepStrictEqual(
        own.seen.map((s) => s.authorization),
        ["Bearer token-0", "Bearer token-1"],
      )

      const refused = yield* Effect.flip(client.get("always"))
      assert.instanceOf(refused, AuthError)
      assert.strictEqual((refused as AuthError).reason, "Unauthorized")
      assert.strictEqual(refreshes(), 2, "one refresh for this request, not one per attempt")
      assert.strictEqual(own.seen.length, 4)
    }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive(
    "a 401 from a hop that carried no Authorization (another origin, or a redirect there) refreshes nothing",
    () =>
      Effect.gen(function* () {
        const own = yield* loopback((req, res, origin) => {
          if (req.url === "/fhir/away") {
            res.writeHead(302, { location: `${attachments.origin}/private/b` })
            return res.end()
          }
          if (req.url === "/fhir/loop") {
            res.writeHead(302, { location: `${attachments.origin}/back` })
            return res.end()
          }
          if (req.headers.authorization !== "Bearer token-1") return text(res, 401, "expired")
          text(res, 200, `own ${req.url} from ${origin}`)
        })
        const attachments = yield* loopback((req, res) => {
          if (req.url === "/back") {
            res.writeHead(302, { location: `${own.origin}/fhir/Binary/9` })
            return res.end()
          }
          text(res, 401, "sign in first")
        })
        const { client, refreshes } = yield* clientFor(`${own.origin}/fhir`)

        // directly on the attachment host: no credentials went there, so none are dropped or blamed
        const direct = yield* Effect.flip(client.get(`${attachments.origin}/private/a`))
        assert.instanceOf(direct, AuthError)
        assert.strictEqual((direct as AuthError).reason, "Unauthorized")
        assert.notInclude(direct.message, "refused the credentials")
        assert.notInclude(direct.message, "client id")
        assert.include(direct.message, `sends them only to ${own.origin}`)
        assert.strictEqual(refreshes(), 0)
        assert.deepStrictEqual(
          attachments.seen.map((s) => [s.url, s.authorization]),
          [["/private/a", undefined]],
        )

        // own origin (credentials sent) → redirect → the attachment host's 401: the hop that got it decides
        const redirected = yield* Effect.flip(client.get("away"))
        assert.instanceOf(redirected, AuthError)
        assert.notInclude(redirected.message, "refused the credentials")
        assert.strictEqual(refreshes(), 0)
        assert.strictEqual(own.seen.at(-1)?.authorization, "Bearer token-0")
        assert.deepStrictEqual(attachments.seen.at(-1), {
          url: "/private/b",
          authorization: undefined,
          accept: "*/*",
        })

        // the other way round: a redirect from the attachment host into the own origin carries no credentials
        // either (the other host chose where it goes, as the Fetch standard drops Authorization for good on a
        // cross-origin redirect), and its 401 says why and refreshes nothing
        const back = yield* Effect.flip(client.get(`${attachments.origin}/back`))
        assert.instanceOf(back, AuthError)
        assert.include(back.message, `through a redirect from ${attachments.origin}`)
        assert.notInclude(back.message, "refused the credentials")
        assert.strictEqual(refreshes(), 0)
        assert.deepStrictEqual(own.seen.at(-1), {
          url: "/fhir/Binary/9",
          authorization: undefined,
          accept: "*/*",
        })

        // and own → other → own: the first hop carries them, none on the way back
        yield* Effect.flip(client.get("loop"))
        assert.deepStrictEqual(
          own.seen.slice(-2).map((x) => [x.url, x.authorization]),
          [
            ["/fhir/loop", "Bearer token-0"],
            ["/fhir/Binary/9", undefined],
          ],
        )
        assert.strictEqual(refreshes(), 0)
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive("retries 503 after the Retry-After delay; gives up as Throttled with a redacted URL", () =>
    Effect.gen(function* () {
      let busy = 1
      const own = yield* loopback((req, res) => {
        if (req.url?.startsWith("/fhir/busy")) return text(res, 503, "busy", { "retry-after": "0" })
        if (req.url === "/fhir/missing") return text(res, 404, "not here")
        if (busy-- > 0) return text(res, 503, "busy", { "retry-after": "1" })
        text(res, 200, "done")
      })
      const { client } = yield* clientFor(`${own.origin}/fhir`)
      const started = Date.now()
      assert.strictEqual(yield* Effect.flatMap(client.get("Binary/1"), bodyOf), "done")
      const waited = Date.now() - started
      // the backoff alone would be ≈ 10 ms: the server's Retry-After of one second was honoured
      assert.isAtLeast(waited, 950)
      assert.strictEqual(own.seen.length, 2)

      const before = own.seen.length
      const throttled = yield* Effect.flip(client.get("busy?token=s3cr3t"))
      assert.instanceOf(throttled, FhirError)
      assert.strictEqual((throttled as FhirError).reason, "Throttled")
      assert.strictEqual((throttled as FhirError).status, 503)
      assert.strictEqual(own.seen.length - before, 4, "the first try and 3 retries")
      assert.notInclude((throttled as FhirError).message, "s3cr3t")

      // not retried: a 404
      const beforeMissing = own.seen.length
      const missing = yield* Effect.flip(client.get("missing"))
      assert.instanceOf(missing, FhirError)
      assert.strictEqual((missing as FhirError).status, 404)
      assert.include((missing as FhirError).message, "not here")
      assert.strictEqual(own.seen.length - beforeMissing, 1)
    }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive(
    "retries a refused connection, then fails as Transport; times out a server that never answers",
    () =>
      Effect.gen(function* () {
        const gone = yield* loopback(() => undefined)
        const { client } = yield* clientFor(`${gone.origin}/fhir`, {
          timeout: Duration.millis(300),
          retry: { times: 1, base: Duration.millis(10) },
        })
        const silent = yield* Effect.flip(client.get("Binary/1"))
        assert.instanceOf(silent, FhirError)
        assert.strictEqual((silent as FhirError).reason, "Transport")
        assert.include(
          (silent as FhirError).message,
          "the server accepted the connection but did not answer within 300ms; check that it is up and not overloaded",
        )
        assert.strictEqual(gone.seen.length, 2, "the timed-out attempt is tried once more")

        const { client: refusedClient } = yield* clientFor("http://127.0.0.1:9/fhir", {
          retry: { times: 2, base: Duration.millis(10) },
        })
        const refused = yield* Effect.flip(refusedClient.get("Binary/1"))
        assert.instanceOf(refused, FhirError)
        assert.strictEqual((refused as FhirError).reason, "Transport")
        assert.include((refused as FhirError).message, "ECONNREFUSED")
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive(
    "a refused connection before the server ever answered fails at once (a wrong URL); after an answer it is retried (a restart)",
    () =>
      Effect.gen(function* () {
        // a first retry a whole second later: far apart from "at once" even on a loaded machine
        const retry = { times: 1, base: Duration.millis(1000) }
        const { client: wrong } = yield* clientFor("http://127.0.0.1:9/fhir", { retry, unreachableGrace: 0 })
        const t0 = Date.now()
        const refused = yield* Effect.flip(wrong.get("Binary/1"))
        assert.include((refused as FhirError).message, "ECONNREFUSED")
        assert.isBelow(Date.now() - t0, 500, "no retry schedule before any answer")
        // a server still starting gets the grace period, not the whole schedule (8 retries would take > 12 s)
        const { client: starting } = yield* clientFor("http://127.0.0.1:9/fhir", {
          retry: { times: 8, base: Duration.millis(50) },
          unreachableGrace: Duration.millis(400),
        })
        const t2 = Date.now()
        yield* Effect.flip(starting.get("Binary/1"))
        assert.isAtLeast(Date.now() - t2, 400)
        assert.isBelow(Date.now() - t2, 3000)

        const server = createServer((_req, res) => {
          res.writeHead(200, { "content-type": "application/octet-stream" })
          res.end("ok")
        })
        yield* Effect.async<void>((resume) => {
          server.listen(0, "127.0.0.1", () => resume(Effect.void))
        })
        const { client } = yield* clientFor(
          `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`,
          {
            retry,
          },
        )
        assert.strictEqual(yield* Effect.flatMap(client.get("Binary/1"), bodyOf), "ok")
        yield* Effect.async<void>((resume) => {
          server.closeAllConnections()
          server.close(() => resume(Effect.void))
        })
        const t1 = Date.now()
        const later = yield* Effect.flip(client.get("Binary/1"))
        assert.include((later as FhirError).message, "ECONNREFUSED")
        assert.isAtLeast(Date.now() - t1, 750, "retried once the server had answered (0.8–1.2 s, jittered)")
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive(
    "an attachment host that never answered fails fast although the base server did (per origin)",
    () =>
      Effect.gen(function* () {
        const base = yield* loopback((_req, res) => {
          res.writeHead(200, { "content-type": "application/octet-stream" })
          res.end("ok")
        })
        // a whole second before the first retry: "fast" is far from the retry schedule
        const { client } = yield* clientFor(`${base.origin}/fhir`, {
          retry: { times: 4, base: Duration.millis(1000) },
          unreachableGrace: Duration.millis(300),
        })
        assert.strictEqual(yield* Effect.flatMap(client.get("Binary/1"), bodyOf), "ok")
        const t0 = Date.now()
        const first = yield* Effect.flip(client.get("http://127.0.0.1:9/documents/1"))
        assert.include((first as FhirError).message, "ECONNREFUSED")
        assert.isBelow(Date.now() - t0, 2500, "one grace period, not four retries of a second and more")
        const t1 = Date.now()
        yield* Effect.flip(client.get("http://127.0.0.1:9/documents/2"))
        assert.isBelow(Date.now() - t1, 500, "the next one on that host at once")
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )
  it.scopedLive(
    "holdBack: past the grace period, gets to an origin that never answered are not sent until the probe interval passes; then one finds it back",
    () =>
      Effect.gen(function* () {
        const base = yield* loopback((_req, res) => {
          res.writeHead(200, { "content-type": "application/octet-stream" })
          res.end("base")
        })
        // a port with nothing listening (taken from the OS, then released)
        const probe = createServer()
        yield* Effect.async<void>((resume) => {
          probe.listen(0, "127.0.0.1", () => resume(Effect.void))
        })
        const port = (probe.address() as AddressInfo).port
        yield* Effect.async<void>((resume) => {
          probe.close(() => resume(Effect.void))
        })
        const { client } = yield* clientFor(`${base.origin}/fhir`, {
          retry: { times: 0 },
          unreachableGrace: 0,
          unreachableProbe: Duration.seconds(2),
        })
        const docs = `http://127.0.0.1:${port}/documents`
        const held = { holdBack: true }
        const first = (yield* Effect.flip(client.get(`${docs}/1`, held))) as FhirError
        assert.include(first.message, "ECONNREFUSED")
        assert.notInclude(first.message, "not sent")
        const second = (yield* Effect.flip(client.get(`${docs}/2`, held))) as FhirError
        assert.strictEqual(second.reason, "Transport")
        assert.include(second.message, "ECONNREFUSED; not sent: nothing at http://127.0.0.1:")
        // holdBack through request and stream too (verify hashes attachments with stream)
        const viaRequest = (yield* Effect.flip(
          client.request(HttpClientRequest.get(`${docs}/3`), held),
        )) as FhirError
        assert.include(viaRequest.message, "not sent")
        const viaStream = (yield* Effect.flip(Stream.runDrain(client.stream(`${docs}/3`, held)))) as FhirError
        assert.include(viaStream.message, "not sent")
        // without holdBack (a data file, a kick-off) the request is sent every time
        const plain = (yield* Effect.flip(client.get(`${docs}/3`))) as FhirError
        assert.include(plain.message, "ECONNREFUSED")
        assert.notInclude(plain.message, "not sent")
        const plainRequest = (yield* Effect.flip(
          client.request(HttpClientRequest.get(`${docs}/3`)),
        )) as FhirError
        assert.notInclude(plainRequest.message, "not sent")

        // the host comes back: held back until the probe interval has passed, then found
        const back = createServer((_req, res) => {
          res.writeHead(200, { "content-type": "application/octet-stream" })
          res.end("back")
        })
        const closeBack = Effect.async<void>((resume) => {
          if (!back.listening) return resume(Effect.void)
          back.closeAllConnections()
          back.close(() => resume(Effect.void))
        })
        yield* Effect.acquireRelease(
          Effect.async<void>((resume) => {
            back.listen(port, "127.0.0.1", () => resume(Effect.void))
          }),
          () => closeBack,
        )
        assert.include(((yield* Effect.flip(client.get(`${docs}/4`, held))) as FhirError).message, "not sent")
        yield* Effect.sleep(Duration.millis(2100))
        assert.strictEqual(yield* Effect.flatMap(client.get(`${docs}/5`, held), bodyOf), "back")
        assert.strictEqual(yield* Effect.flatMap(client.get(`${docs}/6`, held), bodyOf), "back")
        // an origin that has answered is never held back: down again, it is asked each time
        yield* closeBack
        for (const n of [7, 8]) {
          const again = (yield* Effect.flip(client.get(`${docs}/${n}`, held))) as FhirError
          assert.strictEqual(again.reason, "Transport")
          assert.notInclude(again.message, "not sent")
        }
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive(
    "holdBack: a host that lets connection attempts time out (a firewall) is held back like one that refuses; other requests keep their retries",
    () =>
      Effect.gen(function* () {
        const base = yield* loopback((_req, res) => text(res, 200, "base"))
        const port = yield* silentHost
        // connection attempts time out after 300 ms (≈ 1 s: see below) instead of undici's 10 s
        yield* Effect.acquireRelease(
          Effect.sync(() => {
            const before = getGlobalDispatcher()
            setGlobalDispatcher(new Agent({ connect: { timeout: 300 } }))
            return before
          }),
          (before: Dispatcher) => Effect.sync(() => setGlobalDispatcher(before)),
        )
        const { client } = yield* clientFor(`${base.origin}/fhir`, {
          retry: { times: 1, base: Duration.millis(10) },
          unreachableGrace: 0,
          unreachableProbe: Duration.seconds(30),
        })
        assert.strictEqual(yield* Effect.flatMap(client.get("Binary/1"), bodyOf), "base")
        const docs = `http://127.0.0.1:${port}/documents`
        const held = { holdBack: true }
        const t0 = Date.now()
        const first = (yield* Effect.flip(client.get(`${docs}/1`, held))) as FhirError
        assert.include(first.message, "UND_ERR_CONNECT_TIMEOUT")
        assert.notInclude(first.message, "not sent")
        // undici checks its connect timeouts about once a second: one attempt took ≈ 1 s, a second would double it
        const t1 = Date.now()
        const one = t1 - t0
        assert.isAtLeast(one, 250, "one connection attempt, timed out")
        assert.isBelow(one, 1800, "past the grace period: no second try")
        const second = (yield* Effect.flip(client.get(`${docs}/2`, held))) as FhirError
        assert.include(second.message, "UND_ERR_CONNECT_TIMEOUT; not sent: nothing at http://127.0.0.1:")
        assert.isBelow(Date.now() - t1, 200, "not sent at all")
        // a request that must reach its server: a timed-out connection is tried again (a busy server drops them)
        const t2 = Date.now()
        const plain = (yield* Effect.flip(client.get(`${docs}/3`))) as FhirError
        assert.include(plain.message, "UND_ERR_CONNECT_TIMEOUT")
        assert.notInclude(plain.message, "not sent")
        assert.isAtLeast(Date.now() - t2, one * 1.5, "two attempts")
      }).pipe(Effect.provide(FetchHttpClient.layer)),
    20_000,
  )

  it.scopedLive(
    "a 401 to a client without credentials: one sentence (the server's words without their period), pointing at --auth",
    () =>
      Effect.gen(function* () {
        const own = yield* loopback((_req, res) => text(res, 401, "Sign in first."))
        const client = yield* FhirClient.make({ baseUrl: `${own.origin}/fhir` })
        const refused = yield* Effect.flip(client.get("Binary/1"))
        assert.instanceOf(refused, AuthError)
        assert.notInclude(refused.message, ".;")
        assert.include(
          refused.message,
          "Sign in first; configure authentication for this server (the command's --help lists its --auth flags)",
        )
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive(
    "interrupting a GET waiting for its answer aborts the request (the connection is closed)",
    () =>
      Effect.gen(function* () {
        let closed = 0
        const waiting: Array<ServerResponse> = []
        const own = yield* loopback((req, res) => {
          // never answers: the request waits for its headers until it is interrupted
          waiting.push(res)
          req.socket.on("close", () => {
            closed++
          })
        })
        const { client } = yield* clientFor(`${own.origin}/fhir`)
        const fiber = yield* Effect.fork(client.get("Binary/slow"))
        while (own.seen.length === 0) yield* Effect.sleep("10 millis")
        yield* Fiber.interrupt(fiber)
        const t0 = Date.now()
        while (closed === 0 && Date.now() - t0 < 2000) yield* Effect.sleep("10 millis")
        assert.strictEqual(closed, 1, "the client closed the connection it was waiting on")
        assert.strictEqual(own.seen.length, 1, "not tried again")
        for (const res of waiting) res.destroy()
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )
})

/**
 * A port whose connection attempts time out, as behind a firewall that drops them: a child process listens with
 * a backlog of 1 and blocks its event loop, two connections fill the accept queue, and the kernel drops every
 * later SYN.
 */
const silentHost = Effect.gen(function* () {
  const child = yield* Effect.acquireRelease(
    Effect.sync(() =>
      spawn(
        process.execPath,
        [
          "-e",
          `const s = require("node:net").createServer()
s.listen({ port: 0, host: "127.0.0.1", backlog: 1 }, () => {
  process.stdout.write(String(s.address().port) + "\\n", () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0))
})`,
        ],
        { stdio: ["ignore", "pipe", "inherit"] },
      ),
    ),
    (c) => Effect.sync(() => c.kill("SIGKILL")),
  )
  const port = yield* Effect.async<number>((resume) => {
    child.stdout.once("data", (d: Buffer) => resume(Effect.succeed(Number(String(d).trim()))))
  })
  const fillers: Socket[] = []
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      for (const f of fillers) f.destroy()
    }),
  )
  for (let i = 0; i < 2; i++) {
    yield* Effect.async<void>((resume) => {
      const socket = connect(port, "127.0.0.1", () => resume(Effect.void))
      fillers.push(socket)
    })
  }
  return port
})
