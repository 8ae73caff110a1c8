/**
 * Token endpoint problems, one sentence each with what to do, and exit codes that agree with the FHIR
 * client's: no answer at all (nothing there, a TLS certificate not trusted) is `Unreachable` (exit 4), an
 * answer that refuses is `TokenRequest` (exit 3), a token URL that is not one is `Config` (exit 2).
 */
import * as NodeHttp from "node:http"
import * as NodeHttps from "node:https"
import type * as Net from "node:net"
import { HttpClientRequest } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { assert, describe, expect, it } from "@effect/vitest"
import { AuthError } from "@ferry/core/Errors"
import { Effect, Redacted } from "effect"
import type { Authenticator } from "../src/Authenticator.js"
import * as ClientSecret from "../src/Authenticator/ClientSecret.js"
import * as Discovery from "../src/Discovery.js"
import * as TokenServer from "./helpers/TokenServer.js"
import { listening } from "@ferry/core/test/helpers/loopback"
import { hasOpenssl, selfSigned } from "@ferry/core/test/helpers/tls"

const CLIENT = "ferry-client"

const header = (auth: Authenticator, url: string) =>
  auth.authorize(HttpClientRequest.get(url)).pipe(Effect.map((r) => r.headers.authorization))

/** A client-secret authenticator for `tokenUrl`, its transient failures retried once, quickly. */
const secretClient = (baseUrl: string, tokenUrl: string | undefined) =>
  ClientSecret.make({
    baseUrl,
    clientId: CLIENT,
    clientSecret: Redacted.make("not-the-secret"),
    tokenUrl,
    requestPolicy: { retries: 1, backoff: "10 millis" },
  })

/** `server` on 127.0.0.1 for the scope, counting its connections; its port. */
const listeningCounted = (server: Net.Server) =>
  Effect.gen(function* () {
    let connections = 0
    server.on("connection", () => {
      connections++
    })
    yield* listening(server)
    return { port: (server.address() as Net.AddressInfo).port, connections: () => connections }
  })

describe("token endpoint problems", () => {
  it.scopedLive(
    "a token URL that answers 200 with a page, or JSON that is no token, says what to check (exit 4: no credential was refused)",
    () =>
      Effect.gen(function* () {
        let body = "<html>login</html>"
        const server = NodeHttp.createServer((_req, res) => {
          res.writeHead(200, { "content-type": body.startsWith("<") ? "text/html" : "application/json" })
          res.end(body)
        })
        const { port } = yield* listeningCounted(server)
        const tokenUrl = `http://127.0.0.1:${port}/token`
        const advice =
          "check the token URL (auth.tokenUrl / --token-url), or the token_endpoint the server's SMART configuration gives, is its OAuth token endpoint"
        for (const [given, said] of [
          [
            "<html>login</html>",
            "the token endpoint answered 200 but not with JSON (a login page or another service at that URL)",
          ],
          ['{"status":"up"}', "the token endpoint's answer is not an OAuth token response (bad or missing: "],
        ] as const) {
          body = given
          const auth = yield* secretClient(`http://127.0.0.1:${port}/fhir`, tokenUrl)
          const error = yield* Effect.flip(header(auth, `http://127.0.0.1:${port}/fhir/Patient`))
          assert.instanceOf(error, AuthError)
          expect(error.message).toContain(said)
          expect(error.message).toContain(advice)
          // no credential was refused: what answers there is no token endpoint (exit 4, not 3)
          expect(error.reason).toBe("Unreachable")
        }
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("a configured token URL where nothing listens is unreachable (exit 4), like discovery", () =>
    Effect.gen(function* () {
      const tokenUrl = "http://127.0.0.1:9/token"
      const auth = yield* secretClient("http://127.0.0.1:9/fhir", tokenUrl)
      const error = yield* Effect.flip(header(auth, "http://127.0.0.1:9/fhir/Patient"))
      assert.instanceOf(error, AuthError)
      expect(error.reason).toBe("Unreachable")
      expect(error.message).toBe(
        `${tokenUrl}: could not reach the token endpoint (ECONNREFUSED); check the token URL (auth.tokenUrl / --token-url) and that the server is running (tried 2 times)`,
      )
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive(
    "a configured token URL that is not an absolute http(s) URL is refused, not resolved under the base",
    () =>
      Effect.gen(function* () {
        for (const given of [
          "notaurl",
          "/oauth/token",
          "auth.example.org/token",
          "ftp://auth.example.org/token",
        ]) {
          const error = yield* Effect.flip(Discovery.tokenEndpoint("https://fhir.example.org/fhir", given))
          expect(error.reason).toBe("Config")
          expect(error.message).toBe(
            `${given}: the configured token URL is not an absolute http(s) URL; give the token endpoint's full address (auth.tokenUrl / --token-url), e.g. https://auth.example.org/oauth2/token`,
          )
        }
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive(
    "a 404 at the token URL is summed up (an OperationOutcome's summary, not its JSON) and says to check the token URL",
    () =>
      Effect.gen(function* () {
        let posts = 0
        const server = yield* listeningCounted(
          NodeHttp.createServer((_req, res) => {
            posts++
            res.writeHead(404, { "content-type": "application/fhir+json" })
            res.end(
              JSON.stringify({
                resourceType: "OperationOutcome",
                issue: [
                  { severity: "error", code: "not-found", diagnostics: "Unknown resource type 'token'" },
                ],
              }),
            )
          }),
        )
        const tokenUrl = `http://127.0.0.1:${server.port}/fhir/token`
        const auth = yield* secretClient(`http://127.0.0.1:${server.port}/fhir`, tokenUrl)
        const error = yield* Effect.flip(header(auth, `http://127.0.0.1:${server.port}/fhir/Patient`))
        assert.instanceOf(error, AuthError)
        expect(error.reason).toBe("TokenRequest")
        expect(error.message).toBe(
          `${tokenUrl}: the token endpoint answered HTTP 404: error not-found: Unknown resource type 'token'; is this the token endpoint? check the token URL (auth.tokenUrl / --token-url)`,
        )
        expect(posts).toBe(1)
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive(
    "an OAuth error without a hint of its own says to check the token URL and the registration",
    () =>
      Effect.gen(function* () {
        const srv = yield* TokenServer.make({
          clientId: CLIENT,
          secret: "not-the-secret",
          failWith: { status: 400, error: "unsupported_grant_type", description: "only authorization_code" },
        })
        const auth = yield* secretClient(srv.baseUrl, undefined)
        const error = yield* Effect.flip(header(auth, `${srv.baseUrl}/Patient`))
        expect(error.message).toBe(
          `${srv.tokenUrl}: the token endpoint refused the request: HTTP 400 unsupported_grant_type (only authorization_code); this endpoint does not offer the client_credentials grant: check the token URL (auth.tokenUrl / --token-url) and the client's registration`,
        )
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive.skipIf(!hasOpenssl)(
    "a token endpoint or a FHIR server whose TLS certificate is not trusted: unreachable at once, saying how to trust it",
    () =>
      Effect.gen(function* () {
        const server = yield* listeningCounted(
          NodeHttps.createServer(selfSigned(), (_req, res) => {
            res.writeHead(200, { "content-type": "application/json" })
            res.end("{}")
          }),
        )
        const origin = `https://127.0.0.1:${server.port}`
        const sentence =
          "the server's TLS certificate is not trusted (DEPTH_ZERO_SELF_SIGNED_CERT); if it comes from your own CA, point NODE_EXTRA_CA_CERTS at that CA's certificate (PEM file)"

        const auth = yield* secretClient(`${origin}/fhir`, `${origin}/token`)
        const token = yield* Effect.flip(header(auth, `${origin}/fhir/Patient`))
        expect(token.reason).toBe("Unreachable")
        expect(token.message).toBe(`${origin}/token: ${sentence}`)
        expect(server.connections()).toBe(1)

        const discovery = yield* Effect.flip(Discovery.tokenEndpoint(`${origin}/fhir`))
        expect(discovery.reason).toBe("Unreachable")
        expect(discovery.message).toBe(`${origin}/fhir: ${sentence}`)
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )
})
