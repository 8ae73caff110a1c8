/**
 * Servers that answer, but not as a FHIR server over https can be talked to: a TLS certificate that is not
 * trusted, an https URL on a plain-http port, a port where something other than HTTP listens. Each fails at
 * once (another try meets the same certificate, the same port), with a sentence saying what it is; TLS
 * verification stays on. The certificate is made with `openssl` for the test (node:crypto cannot make X.509
 * certificates): without `openssl` on the machine the https server tests are skipped, the classification of
 * the codes is tested in Http.test.ts either way.
 */
import { createServer as createHttpServer } from "node:http"
import { createServer as createHttpsServer } from "node:https"
import { type AddressInfo, createServer as createNetServer, type Server, type Socket } from "node:net"
import { FetchHttpClient } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Either } from "effect"
import { FhirError } from "../src/Errors.js"
import * as FhirClient from "../src/FhirClient.js"
import * as HttpDispatcher from "../src/HttpDispatcher.js"
import { hasOpenssl, selfSigned } from "./helpers/tls.js"

/** `server` listening on 127.0.0.1 for the scope; its port, and how many connections it took. */
const listening = (server: Server) =>
  Effect.gen(function* () {
    const sockets = new Set<Socket>()
    let connections = 0
    server.on("connection", (socket: Socket) => {
      sockets.add(socket)
      socket.on("close", () => sockets.delete(socket))
      connections++
    })
    yield* Effect.acquireRelease(
      Effect.async<void>((resume) => {
        server.listen(0, "127.0.0.1", () => resume(Effect.void))
      }),
      () =>
        Effect.async<void>((resume) => {
          // a client may keep a connection it gave up on open: the server does not wait for it
          for (const socket of sockets) socket.destroy()
          server.close(() => resume(Effect.void))
        }),
    )
    return { port: (server.address() as AddressInfo).port, connections: () => connections }
  })

/** Both ways a client asks: `request` (the platform's HttpClient) and `get` (undici directly). */
const bothWays = (baseUrl: string) =>
  Effect.gen(function* () {
    const client = yield* FhirClient.make({
      baseUrl,
      retry: { times: 3, base: Duration.millis(10) },
      unreachableGrace: Duration.seconds(30),
    })
    const viaRequest = yield* Effect.flip(client.capabilities())
    const viaGet = yield* Effect.flip(client.get("Binary/1"))
    return [viaRequest, viaGet] as const
  })

const transport = (error: unknown): FhirError => {
  assert.instanceOf(error, FhirError)
  assert.strictEqual((error as FhirError).reason, "Transport")
  return error as FhirError
}

/** An https server with a self-signed certificate (made with openssl) for the scope: its port. */
const selfSignedServer = () =>
  listening(
    createHttpsServer(selfSigned(), (_req, res) => {
      res.writeHead(200, { "content-type": "application/fhir+json" })
      res.end("{}")
    }),
  )

describe("FhirClient against servers it cannot talk to", () => {
  it.scopedLive.skipIf(!hasOpenssl)(
    "a self-signed certificate is not trusted: one try each, and the sentence says how to trust it",
    () =>
      Effect.gen(function* () {
        const server = yield* selfSignedServer()
        const base = `https://127.0.0.1:${server.port}/fhir`
        const errors = yield* bothWays(base)
        assert.strictEqual(errors[0].message.split(": ")[0], `GET ${base}/metadata`)
        for (const e of errors) {
          assert.include(
            transport(e).message,
            ": the server's TLS certificate is not trusted (DEPTH_ZERO_SELF_SIGNED_CERT); if it comes from your own CA, point NODE_EXTRA_CA_CERTS at that CA's certificate (PEM file)",
          )
        }
        assert.strictEqual(server.connections(), 2, "one connection per call: not retried")
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive.skipIf(!hasOpenssl)(
    "NODE_TLS_REJECT_UNAUTHORIZED=0 does not turn the check off: Ferry's pools (direct, and the proxy agent's) still refuse the certificate",
    () =>
      Effect.gen(function* () {
        const server = yield* selfSignedServer()
        const before = process.env.NODE_TLS_REJECT_UNAUTHORIZED
        yield* Effect.acquireRelease(
          Effect.sync(() => {
            process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0"
          }),
          () =>
            Effect.sync(() => {
              if (before === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED
              else process.env.NODE_TLS_REJECT_UNAUTHORIZED = before
            }),
        )
        // the CLI's pools: a plain one, and the proxy agent (loopback goes direct through its own pool)
        const proxied = Either.getOrThrow(HttpDispatcher.proxySettings({ https_proxy: "http://127.0.0.1:9" }))
        for (const pool of [HttpDispatcher.make(undefined), HttpDispatcher.make(proxied)]) {
          yield* Effect.acquireRelease(
            Effect.sync(() => HttpDispatcher.setGlobal(pool)),
            (restore) => Effect.promise(() => pool.close()).pipe(Effect.ensuring(Effect.sync(restore))),
          )
          for (const e of yield* bothWays(`https://127.0.0.1:${server.port}/fhir`)) {
            assert.include(transport(e).message, "the server's TLS certificate is not trusted")
          }
        }
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive("https to a plain-http port: one try each, the sentence names the likely mistake", () =>
    Effect.gen(function* () {
      const server = yield* listening(
        createHttpServer((_req, res) => {
          res.writeHead(200)
          res.end("{}")
        }),
      )
      for (const e of yield* bothWays(`https://127.0.0.1:${server.port}/fhir`)) {
        assert.match(
          transport(e).message,
          /: the server does not speak TLS on that port \((ERR_SSL_WRONG_VERSION_NUMBER|ERR_SSL_PACKET_LENGTH_TOO_LONG); https to an http port\?\); check the URL's scheme and port$/,
        )
      }
      assert.strictEqual(server.connections(), 2, "one connection per call: not retried")
    }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive("a port where something else than HTTP answers: one try each, the answer is not HTTP", () =>
    Effect.gen(function* () {
      const server = yield* listening(
        createNetServer((socket) => {
          socket.on("error", () => undefined)
          socket.end("SSH-2.0-OpenSSH_9.6\r\n")
        }),
      )
      for (const e of yield* bothWays(`http://127.0.0.1:${server.port}/fhir`)) {
        assert.match(
          transport(e).message,
          /: the server's answer is not HTTP \((HTTPParserError|HPE_[A-Z_]+)\); check the URL's port: is a FHIR server listening there\?$/,
        )
      }
      assert.strictEqual(server.connections(), 2, "one connection per call: not retried")
    }).pipe(Effect.provide(FetchHttpClient.layer)),
  )
})
