import * as Http from "node:http"
import type * as Net from "node:net"
import { HttpClientRequest } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { assert, describe, expect, it } from "@effect/vitest"
import { AuthError } from "@ferry/core/Errors"
import { Effect, Redacted } from "effect"
import type { Authenticator } from "../../src/Authenticator.js"
import * as ClientSecret from "../../src/Authenticator/ClientSecret.js"
import * as TokenEndpoint from "../../src/internal/tokenEndpoint.js"
import * as TokenServer from "../helpers/TokenServer.js"

const CLIENT = "ferry client"
// Characters RFC 6749 §2.3.1 makes us form-encode before base64 (":" must not split the pair).
const SECRET = "s3cr:t+/ é%"

const header = (auth: Authenticator, url: string) =>
  auth.authorize(HttpClientRequest.get(url)).pipe(Effect.map((r) => r.headers.authorization))

/** The error of a first request with SECRET (sent `method`'s way) to the token server at `baseUrl`. */
const refusal = (baseUrl: string, method: "basic" | "post") =>
  Effect.gen(function* () {
    const auth = yield* ClientSecret.make({
      baseUrl,
      clientId: CLIENT,
      clientSecret: Redacted.make(SECRET),
      method,
    })
    return yield* Effect.flip(header(auth, `${baseUrl}/Patient`))
  })

describe("ClientSecret", () => {
  it.scopedLive(
    "client_secret_basic sends form-encoded id:secret in HTTP Basic and no secret in the body",
    () =>
      Effect.gen(function* () {
        const srv = yield* TokenServer.make({ clientId: CLIENT, secret: SECRET })
        const auth = yield* ClientSecret.make({
          baseUrl: srv.baseUrl,
          clientId: CLIENT,
          clientSecret: Redacted.make(SECRET),
          scope: "system/*.rs",
        })
        expect(yield* header(auth, `${srv.baseUrl}/Patient`)).toBe(`Bearer ${srv.issued[0]}`)
        const request = srv.tokenRequests[0]!
        expect(request.answer).toBe(200)
        const expected = Buffer.from(
          `${encodeURIComponent(CLIENT).replace(/%20/g, "+")}:${new URLSearchParams({ s: SECRET }).toString().slice(2)}`,
        ).toString("base64")
        expect(request.headers.authorization).toBe(`Basic ${expected}`)
        expect(Object.fromEntries(request.form)).toEqual({
          grant_type: "client_credentials",
          scope: "system/*.rs",
        })
        expect(auth.describe).toBe(`OAuth client credentials (client_secret_basic, client ${CLIENT})`)
        expect(auth.describe).not.toContain(SECRET)
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("client_secret_post sends client_id and client_secret as form fields, no Authorization", () =>
    Effect.gen(function* () {
      const srv = yield* TokenServer.make({ clientId: CLIENT, secret: SECRET, wellKnown: false })
      const auth = yield* ClientSecret.make({
        baseUrl: srv.baseUrl,
        clientId: CLIENT,
        clientSecret: Redacted.make(SECRET),
        method: "post",
        tokenUrl: srv.tokenUrl,
      })
      expect(yield* header(auth, `${srv.baseUrl}/Patient`)).toBe(`Bearer ${srv.issued[0]}`)
      yield* header(auth, `${srv.baseUrl}/Patient`)
      expect(srv.tokenRequests).toHaveLength(1)
      const request = srv.tokenRequests[0]!
      expect(request.headers.authorization).toBeUndefined()
      expect(request.headers["content-type"]).toBe("application/x-www-form-urlencoded")
      // No scope configured: none sent (opaque scopes such as Entra's {fhirUrl}/.default are sent as given).
      expect(Object.fromEntries(request.form)).toEqual({
        grant_type: "client_credentials",
        client_id: CLIENT,
        client_secret: SECRET,
      })
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("retries a token endpoint's 5xx; a refusal (401) is not retried", () =>
    Effect.gen(function* () {
      const srv = yield* TokenServer.make({
        clientId: CLIENT,
        secret: SECRET,
        faults: [{ status: 500, body: `oops ${SECRET}` }, { status: 504 }],
      })
      const make = (secret: string) =>
        ClientSecret.make({
          baseUrl: srv.baseUrl,
          clientId: CLIENT,
          clientSecret: Redacted.make(secret),
          tokenUrl: srv.tokenUrl,
          requestPolicy: { backoff: "10 millis" },
        })
      const auth = yield* make(SECRET)
      expect(yield* header(auth, `${srv.baseUrl}/Patient`)).toBe(`Bearer ${srv.issued[0]}`)
      expect(srv.tokenRequests.map((r) => r.answer)).toEqual([500, 504, 200])

      const wrong = yield* make("not-it")
      const error = yield* Effect.flip(header(wrong, `${srv.baseUrl}/Patient`))
      expect(error.message).toContain("HTTP 401 invalid_client")
      expect(error.message).not.toContain("tried")
      expect(srv.tokenRequests.map((r) => r.answer)).toEqual([500, 504, 200, 401])

      // a token URL with a credential in its query (as some gateways hand out) is redacted in the error
      const keyed = yield* ClientSecret.make({
        baseUrl: srv.baseUrl,
        clientId: CLIENT,
        clientSecret: Redacted.make("not-it"),
        tokenUrl: `${srv.tokenUrl}?code=gateway-key-123`,
        requestPolicy: { backoff: "10 millis" },
      })
      const redacted = yield* Effect.flip(header(keyed, `${srv.baseUrl}/Patient`))
      expect(redacted.message).not.toContain("gateway-key-123")
      expect(redacted.message).toContain("code=REDACTED")
      // and when nothing answers there (the platform's own message would name the URL as given)
      const dead = yield* ClientSecret.make({
        baseUrl: srv.baseUrl,
        clientId: CLIENT,
        clientSecret: Redacted.make("not-it"),
        tokenUrl: "http://127.0.0.1:9/token?code=gateway-key-123",
        requestPolicy: { backoff: "10 millis", retries: 1 },
      })
      const unreachable = yield* Effect.flip(header(dead, `${srv.baseUrl}/Patient`))
      expect(unreachable.message).not.toContain("gateway-key-123")
      expect(unreachable.message).toContain("ECONNREFUSED")
      // an endpoint that answers only 503 is a server failure (Unreachable: exit 4), not a refused credential
      const down = yield* TokenServer.make({
        clientId: CLIENT,
        secret: SECRET,
        faults: [{ status: 503 }, { status: 503 }],
      })
      const busy = yield* ClientSecret.make({
        baseUrl: down.baseUrl,
        clientId: CLIENT,
        clientSecret: Redacted.make(SECRET),
        tokenUrl: down.tokenUrl,
        requestPolicy: { backoff: "10 millis", retries: 1 },
      })
      const failed = yield* Effect.flip(header(busy, `${down.baseUrl}/Patient`))
      expect(failed._tag === "AuthError" && failed.reason).toBe("Unreachable")
      expect(failed.message).toContain("HTTP 503")
      expect(failed.message).toContain("the identity provider is unavailable or overloaded: try again later")
      expect(failed.message).toContain("(tried 2 times)")
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive(
    "a wrong secret is a TokenRequest error with the server's description and without the secret",
    () =>
      Effect.gen(function* () {
        const srv = yield* TokenServer.make({ clientId: CLIENT, secret: "the-right-one" })
        for (const method of ["basic", "post"] as const) {
          const error = yield* refusal(srv.baseUrl, method)
          assert.instanceOf(error, AuthError)
          expect(error.reason).toBe("TokenRequest")
          expect(error.message).toContain(
            `HTTP 401 invalid_client (bad ${method === "basic" ? "basic" : "client_secret_post"} credentials)`,
          )
          expect(error.message).not.toContain(SECRET)
        }
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive(
    "a server that echoes the secret in error_description or in the error code itself has it scrubbed from the message",
    () =>
      Effect.gen(function* () {
        const cases = [
          [
            "post",
            { error: "invalid_client", description: `secret ${SECRET} is revoked` },
            "invalid_client (secret [redacted] is revoked)",
          ],
          ["post", { error: `bad_${SECRET}`, description: "refused" }, "HTTP 400 bad_[redacted] (refused)"],
          ["basic", { error: `bad_${SECRET}`, description: "refused" }, "HTTP 400 bad_[redacted] (refused)"],
        ] as const
        for (const [method, echo, said] of cases) {
          const srv = yield* TokenServer.make({
            clientId: CLIENT,
            secret: SECRET,
            failWith: { status: 400, ...echo },
          })
          const error = yield* refusal(srv.baseUrl, method)
          expect(error.message).toContain(said)
          expect(error.message).not.toContain(SECRET)
          expect(JSON.stringify(error)).not.toContain(SECRET)
        }
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it("scrubs the secret as sent too: form-encoded, percent-encoded and inside the Basic credentials", () => {
    const secret = "Abc~Def.Ghi_Jkl+Mno"
    const scrub = TokenEndpoint.scrubber({
      tokenUrl: "http://t.example/token",
      form: { client_secret: Redacted.make(secret) },
      basic: { clientId: "myclient", secret: Redacted.make(secret) },
    })
    const basic = Buffer.from(`myclient:${TokenEndpoint.formEncode(secret)}`).toString("base64")
    const echoed = `got myclient:${TokenEndpoint.formEncode(secret)} (header Basic ${basic}), body client_secret=${encodeURIComponent(secret)}, raw ${secret}`
    const out = scrub(echoed)
    for (const leak of [secret, TokenEndpoint.formEncode(secret), encodeURIComponent(secret), basic])
      assert.notInclude(out, leak)
    assert.strictEqual(
      out,
      "got myclient:[redacted] (header Basic [redacted]), body client_secret=[redacted], raw [redacted]",
    )
  })

  it.scopedLive(
    "a token endpoint's own JSON error that echoes the secret with other escapes (\\/, \\u002B) has it scrubbed",
    () =>
      Effect.gen(function* () {
        const secret = "c2VjcmV0+Zm9v/YmFy=="
        const escaped = secret.replace(/\//g, "\\/").replace(/\+/g, "\\u002B")
        const server = Http.createServer((_req, res) => {
          res.writeHead(400, { "content-type": "application/json" })
          res.end(`{"message":"denied","yourSecret":"${escaped}"}`)
        })
        yield* Effect.acquireRelease(
          Effect.async<void>((resume) => {
            server.listen(0, "127.0.0.1", () => resume(Effect.void))
          }),
          () => Effect.sync(() => server.close()),
        )
        const port = (server.address() as Net.AddressInfo).port
        const auth = yield* ClientSecret.make({
          baseUrl: `http://127.0.0.1:${port}/fhir`,
          tokenUrl: `http://127.0.0.1:${port}/token`,
          clientId: CLIENT,
          clientSecret: Redacted.make(secret),
          method: "post",
        })
        const error = yield* Effect.flip(header(auth, `http://127.0.0.1:${port}/fhir/Patient`))
        expect(error.message).toContain('"yourSecret":"[redacted]"')
        for (const leak of [secret, escaped, "Zm9v"]) expect(error.message).not.toContain(leak)
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it("scrubs a secret with quotes or backslashes as a JSON answer quotes it", () => {
    const secret = 'cs-"Sup3r\\secret'
    const scrub = TokenEndpoint.scrubber({
      tokenUrl: "http://t.example/token",
      form: { client_secret: Redacted.make(secret) },
    })
    const echoed = JSON.stringify({ message: "denied", yourSecret: secret })
    assert.strictEqual(scrub(echoed), '{"message":"denied","yourSecret":"[redacted]"}')
  })
})
