import * as NodeHttp from "node:http"
import * as Net from "node:net"
import { HttpClientRequest } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { assert, describe, expect, it } from "@effect/vitest"
import { AuthError } from "@ferry/core/Errors"
import { Duration, Effect, Fiber, Schedule, TestClock, TestServices } from "effect"
import type { Authenticator } from "../../src/Authenticator.js"
import * as SmartBackend from "../../src/Authenticator/SmartBackend.js"
import * as Discovery from "../../src/Discovery.js"
import * as Keys from "../../src/Keys.js"
import * as TokenServer from "../helpers/TokenServer.js"
import { listening } from "@ferry/core/test/helpers/loopback"

const CLIENT = "ferry-demo"

/** A generated key pair: the loaded signing key and the JWKS the server trusts. */
const keyPair = (alg: Keys.SigningAlg) =>
  Effect.gen(function* () {
    const { privateJwk, publicJwks } = yield* Keys.generate(alg)
    const key = yield* Keys.parsePrivateKey(JSON.stringify(privateJwk), "test.jwk")
    return { key, jwks: { keys: [...publicJwks.keys] } }
  })

const authHeader = (auth: Authenticator, url: string) =>
  auth.authorize(HttpClientRequest.get(url)).pipe(Effect.map((req) => req.headers.authorization))

/** A token server trusting a fresh key, and a SMART authenticator for it. */
const setup = (
  server: Omit<TokenServer.TokenServerOptions, "clientId" | "jwks"> = {},
  options: (srv: TokenServer.TokenServer) => Partial<SmartBackend.SmartBackendOptions> = () => ({}),
  alg: Keys.SigningAlg = "ES384",
) =>
  Effect.gen(function* () {
    const { key, jwks } = yield* keyPair(alg)
    const srv = yield* TokenServer.make({ clientId: CLIENT, jwks, ...server })
    const auth = yield* SmartBackend.make({ baseUrl: srv.baseUrl, clientId: CLIENT, key, ...options(srv) })
    return { srv, auth, key }
  })

const allSuspended = (fibers: ReadonlyArray<Fiber.RuntimeFiber<unknown, unknown>>) =>
  Effect.forEach(fibers, (f) => Fiber.status(f)).pipe(
    Effect.map((statuses) => statuses.every((s) => s._tag === "Suspended")),
    Effect.repeat({ until: (done) => done, schedule: Schedule.spaced("5 millis") }),
  )

/**
 * A server on loopback for the scope whose `.well-known/smart-configuration` names `tokenEndpoint` (every other
 * path 404); `busy()` true answers 503 instead. Its FHIR base.
 */
const smartConfigServer = (tokenEndpoint: string, busy: () => boolean = () => false) =>
  Effect.gen(function* () {
    const server = NodeHttp.createServer((req, res) => {
      if (busy()) return void res.writeHead(503).end()
      if (req.url === "/fhir/.well-known/smart-configuration")
        return void res
          .writeHead(200, { "content-type": "application/json" })
          .end(JSON.stringify({ token_endpoint: tokenEndpoint }))
      res.writeHead(404).end()
    })
    yield* listening(server)
    return `http://127.0.0.1:${(server.address() as Net.AddressInfo).port}/fhir`
  })

describe("SmartBackend", () => {
  for (const alg of ["ES384", "RS384"] as const) {
    it.scopedLive(
      `${alg}: discovers the token endpoint from .well-known and sends a verified assertion`,
      () =>
        Effect.gen(function* () {
          const { srv, auth, key } = yield* setup({}, () => ({}), alg)
          expect(yield* authHeader(auth, `${srv.baseUrl}/Patient`)).toBe(`Bearer ${srv.issued[0]}`)
          expect(srv.paths).toContain("/fhir/.well-known/smart-configuration")
          expect(srv.paths).not.toContain("/fhir/metadata")
          expect(srv.tokenRequests).toHaveLength(1)
          const request = srv.tokenRequests[0]!
          expect(request.answer).toBe(200)
          expect(request.headers["content-type"]).toBe("application/x-www-form-urlencoded")
          expect(request.headers.authorization).toBeUndefined()
          expect(Object.fromEntries(request.form)).toMatchObject({
            grant_type: "client_credentials",
            scope: "system/*.rs",
            client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
          })
          expect(request.assertion!.header).toEqual({ alg, kid: key.kid, typ: "JWT" })
          expect(request.assertion!.claims).toMatchObject({ iss: CLIENT, sub: CLIENT, aud: srv.tokenUrl })
          expect(auth.describe).toBe(`SMART Backend Services (${alg}, kid ${key.kid}, client ${CLIENT})`)
        }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
    )
  }

  it.scopedLive("falls back to the CapabilityStatement oauth-uris extension", () =>
    Effect.gen(function* () {
      const { srv, auth } = yield* setup({ wellKnown: false, capabilityStatement: true })
      expect(yield* authHeader(auth, `${srv.baseUrl}/Patient`)).toBe(`Bearer ${srv.issued[0]}`)
      expect(srv.paths.slice(0, 2)).toEqual(["/fhir/.well-known/smart-configuration", "/fhir/metadata"])
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("fails discovery with both reasons and a hint when nothing advertises a token endpoint", () =>
    Effect.gen(function* () {
      const { srv, auth } = yield* setup({ wellKnown: false })
      const error = yield* Effect.flip(authHeader(auth, `${srv.baseUrl}/Patient`))
      assert.instanceOf(error, AuthError)
      expect(error.reason).toBe("Discovery")
      expect(error.message).toContain(".well-known/smart-configuration answered HTTP 404")
      expect(error.message).toContain("/metadata answered HTTP 404")
      expect(error.message).toContain("token URL")
      expect(srv.tokenRequests).toHaveLength(0)
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("uses an explicit token URL, without discovery", () =>
    Effect.gen(function* () {
      const { srv, auth } = yield* setup({ wellKnown: false }, (s) => ({ tokenUrl: s.tokenUrl }))
      expect(yield* authHeader(auth, `${srv.baseUrl}/Patient`)).toBe(`Bearer ${srv.issued[0]}`)
      expect(srv.paths).toEqual(["/auth/token"])
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("caches the token: two authorize calls make one token request", () =>
    Effect.gen(function* () {
      const { srv, auth } = yield* setup()
      const a = yield* authHeader(auth, `${srv.baseUrl}/Patient`)
      const b = yield* authHeader(auth, `${srv.baseUrl}/Observation`)
      expect(a).toBe(b)
      expect(srv.tokenRequests).toHaveLength(1)
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("20 concurrent authorize calls during a refresh make exactly one token request", () =>
    Effect.gen(function* () {
      const { srv, auth } = yield* setup()
      yield* authHeader(auth, `${srv.baseUrl}/Patient`)
      yield* auth.invalidate
      const release = srv.hold()
      const fibers = yield* Effect.forEach(Array.from({ length: 20 }), () =>
        Effect.fork(authHeader(auth, `${srv.baseUrl}/Patient`)),
      )
      yield* Effect.promise(() => srv.received(2))
      yield* allSuspended(fibers)
      release()
      const headers = yield* Fiber.joinAll(fibers)
      expect(srv.tokenRequests).toHaveLength(2)
      expect(new Set(headers)).toEqual(new Set([`Bearer ${srv.issued[1]}`]))
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scoped("refreshes the token before it expires (TestClock)", () =>
    Effect.gen(function* () {
      // Real time, so the server's jose check of exp agrees; then TestClock moves forward.
      yield* TestClock.setTime(Date.now())
      // 20 s tokens: refreshed 2 s (10 %) before expiry.
      const { srv, auth } = yield* setup({ expiresIn: 20 })
      const first = yield* authHeader(auth, `${srv.baseUrl}/Patient`)
      yield* TestClock.adjust("17 seconds")
      expect(yield* authHeader(auth, `${srv.baseUrl}/Patient`)).toBe(first)
      expect(srv.tokenRequests).toHaveLength(1)
      yield* TestClock.adjust("1500 millis")
      // Still valid: served while the new token is fetched (real I/O), until it arrives.
      let second = yield* authHeader(auth, `${srv.baseUrl}/Patient`)
      expect(second).toBe(first)
      for (let i = 0; i < 2_000 && second === first; i++) {
        yield* TestServices.provideLive(Effect.sleep("5 millis"))
        second = yield* authHeader(auth, `${srv.baseUrl}/Patient`)
      }
      expect(second).toBe(`Bearer ${srv.issued[1]}`)
      expect(srv.tokenRequests).toHaveLength(2)
      // Each request carried its own assertion (jti unique, checked by the server).
      expect(srv.tokenRequests[0]!.assertion!.claims.jti).not.toBe(
        srv.tokenRequests[1]!.assertion!.claims.jti,
      )
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive(
    "retries a 503, a reset connection and a 429 (after its Retry-After), signing a new assertion each time",
    () =>
      Effect.gen(function* () {
        const { srv, auth } = yield* setup(
          { faults: [{ status: 503 }, "reset", { status: 429, headers: { "retry-after": "1" } }] },
          () => ({ requestPolicy: { backoff: "10 millis" } }),
        )
        const started = Date.now()
        expect(yield* authHeader(auth, `${srv.baseUrl}/Patient`)).toBe(`Bearer ${srv.issued[0]}`)
        // the backoff alone would be tens of milliseconds: the server's Retry-After of 1 s was honoured
        expect(Date.now() - started).toBeGreaterThanOrEqual(950)
        expect(srv.tokenRequests.map((r) => r.answer)).toEqual([503, 0, 429, 200])
        const assertions = srv.tokenRequests.map((r) => r.form.get("client_assertion"))
        expect(new Set(assertions).size).toBe(4)
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("gives up on a token endpoint that stays unavailable, saying how often it tried", () =>
    Effect.gen(function* () {
      const busy = { status: 502, body: "bad gateway" }
      const { srv, auth } = yield* setup({ faults: [busy, busy, busy] }, () => ({
        requestPolicy: { retries: 2, backoff: "10 millis" },
      }))
      const error = yield* Effect.flip(authHeader(auth, `${srv.baseUrl}/Patient`))
      assert.instanceOf(error, AuthError)
      // the server's failure (exit 4), not a refused credential (exit 3)
      expect(error.reason).toBe("Unreachable")
      expect(error.message).toBe(
        `${srv.tokenUrl}: the token endpoint answered HTTP 502: bad gateway; the identity provider is unavailable or overloaded: try again later (tried 3 times)`,
      )
      expect(srv.tokenRequests).toHaveLength(3)
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("a token endpoint that never answers is given up on per attempt, then tried again", () =>
    Effect.gen(function* () {
      const policy = { timeout: Duration.millis(300), retries: 1, backoff: Duration.millis(10) }
      const once = yield* setup({ faults: ["hang"] }, () => ({ requestPolicy: policy }))
      expect(yield* authHeader(once.auth, `${once.srv.baseUrl}/Patient`)).toBe(`Bearer ${once.srv.issued[0]}`)
      expect(once.srv.tokenRequests).toHaveLength(2)

      const never = yield* setup({ faults: ["hang", "hang"] }, () => ({ requestPolicy: policy }))
      const error = yield* Effect.flip(authHeader(never.auth, `${never.srv.baseUrl}/Patient`))
      assert.instanceOf(error, AuthError)
      expect(error.message).toContain("did not answer within 300ms")
      expect(error.message).toContain("tried 2 times")
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("a server where nothing listens is unreachable (exit 4), not a discovery failure", () =>
    Effect.gen(function* () {
      const { key } = yield* keyPair("ES384")
      // a port that was free a moment ago
      const port = yield* Effect.async<number>((resume) => {
        const probe = Net.createServer().listen(0, "127.0.0.1", () => {
          const p = (probe.address() as Net.AddressInfo).port
          probe.close(() => resume(Effect.succeed(p)))
        })
      })
      const base = `http://127.0.0.1:${port}/fhir`
      const auth = yield* SmartBackend.make({ baseUrl: base, clientId: CLIENT, key })
      const error = yield* Effect.flip(authHeader(auth, `${base}/Patient`))
      assert.instanceOf(error, AuthError)
      expect(error.reason).toBe("Unreachable")
      expect(error.message).toBe(
        `${base}: could not reach the server (ECONNREFUSED); check the URL and that the server is running`,
      )
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("discovery follows a server's redirects to where its smart-configuration moved", () =>
    Effect.gen(function* () {
      const seen: Array<string> = []
      const server = NodeHttp.createServer((req, res) => {
        seen.push(req.url ?? "")
        if (req.url === "/fhir/.well-known/smart-configuration")
          return void res.writeHead(301, { location: "/auth/.well-known/smart-configuration" }).end()
        if (req.url === "/auth/.well-known/smart-configuration")
          return void res
            .writeHead(200, { "content-type": "application/json" })
            .end(JSON.stringify({ token_endpoint: "http://127.0.0.1:9/token" }))
        res.writeHead(404).end()
      })
      yield* listening(server)
      const base = `http://127.0.0.1:${(server.address() as Net.AddressInfo).port}/fhir`
      const found = yield* Discovery.tokenEndpoint(base)
      expect(found.tokenUrl).toBe("http://127.0.0.1:9/token")
      expect(seen).toEqual(["/fhir/.well-known/smart-configuration", "/auth/.well-known/smart-configuration"])
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("discovery asks a server that answers 503 (starting up) again, and finds the endpoint", () =>
    Effect.gen(function* () {
      let asked = 0
      const base = yield* smartConfigServer("http://127.0.0.1:9/token", () => {
        asked++
        // both discovery fetches answer 503 twice: two rounds of discovery fail, the third finds it
        return asked <= 4
      })
      const found = yield* Discovery.tokenEndpoint(base)
      expect(found.tokenUrl).toBe("http://127.0.0.1:9/token")
      expect(asked).toBe(5)
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive(
    "a plain-http token endpoint off this machine is refused, discovered or configured; https and loopback http are taken",
    () =>
      Effect.gen(function* () {
        const base = yield* smartConfigServer("http://auth.example.org/token")
        const discovered = yield* Effect.flip(Discovery.tokenEndpoint(base))
        expect(discovered.reason).toBe("Discovery")
        expect(discovered.message).toContain(
          "is not https: the client's credentials would cross the network unencrypted",
        )
        const configured = yield* Effect.flip(Discovery.tokenEndpoint(base, "http://auth.example.org/token"))
        expect(configured.reason).toBe("Config")
        expect((yield* Discovery.tokenEndpoint(base, "https://auth.example.org/token")).tokenUrl).toBe(
          "https://auth.example.org/token",
        )
        expect((yield* Discovery.tokenEndpoint(base, "http://localhost:9/token")).tokenUrl).toBe(
          "http://localhost:9/token",
        )
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("discovery gives up on a server that never answers", () =>
    Effect.gen(function* () {
      const { auth, srv } = yield* setup(
        { silentPaths: ["/fhir/.well-known/smart-configuration", "/fhir/metadata"] },
        () => ({ requestPolicy: { timeout: "200 millis" } }),
      )
      const error = yield* Effect.flip(authHeader(auth, `${srv.baseUrl}/Patient`))
      assert.instanceOf(error, AuthError)
      expect(error.reason).toBe("Discovery")
      expect(error.message).toContain(".well-known/smart-configuration did not answer within 200ms")
      expect(error.message).toContain("/metadata did not answer within 200ms")
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("invalidate makes the next authorize fetch one new token", () =>
    Effect.gen(function* () {
      const { srv, auth } = yield* setup()
      const first = yield* authHeader(auth, `${srv.baseUrl}/Patient`)
      yield* auth.invalidate
      const second = yield* authHeader(auth, `${srv.baseUrl}/Patient`)
      const third = yield* authHeader(auth, `${srv.baseUrl}/Patient`)
      expect(first).toBe(`Bearer ${srv.issued[0]}`)
      expect(second).toBe(`Bearer ${srv.issued[1]}`)
      expect(third).toBe(second)
      expect(srv.tokenRequests).toHaveLength(2)
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("retries with v1 scopes when the server answers invalid_scope to v2, and stays on v1", () =>
    Effect.gen(function* () {
      const { srv, auth } = yield* setup({ acceptScope: (s) => !s.includes(".rs") }, () => ({
        scope: "system/*.rs system/Group.rs",
      }))
      expect(yield* authHeader(auth, `${srv.baseUrl}/Patient`)).toBe(`Bearer ${srv.issued[0]}`)
      yield* auth.invalidate
      yield* authHeader(auth, `${srv.baseUrl}/Patient`)
      expect(srv.tokenRequests.map((r) => [r.form.get("scope"), r.answer])).toEqual([
        ["system/*.rs system/Group.rs", 400],
        ["system/*.read system/Group.read", 200],
        ["system/*.read system/Group.read", 200],
      ])
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive(
    "a token for a bulk export whose scopes allow reading fewer types than exported fails (Scope), naming what would be left out",
    () =>
      Effect.gen(function* () {
        const narrow = { grantScope: () => "system/Patient.rs system/Condition.rs" }
        // every type exported: the token cannot read them all
        const all = yield* setup(narrow, () => ({ exportTypes: [] }))
        const error = yield* Effect.flip(authHeader(all.auth, `${all.srv.baseUrl}/Patient`))
        assert.instanceOf(error, AuthError)
        expect(error.reason).toBe("Scope")
        expect(error.message).toContain(
          "allow reading only Condition, Patient: a bulk export would leave every other type out without an error; allow client",
        )
        expect(error.message).toContain("--type Condition,Patient")
        // some types: those it cannot read are named
        const some = yield* setup(narrow, () => ({ exportTypes: ["Patient", "Observation"] }))
        const named = yield* Effect.flip(authHeader(some.auth, `${some.srv.baseUrl}/Patient`))
        expect(named.message).toContain("a bulk export would leave Observation out without an error")
        // many types (a Patient-level export's compartment): how many, and the first ones
        const many = yield* setup(narrow, () => ({
          exportTypes: [
            "Account",
            "AdverseEvent",
            "Condition",
            "Encounter",
            "Goal",
            "Immunization",
            "Observation",
            "Patient",
            "Procedure",
          ],
        }))
        const counted = yield* Effect.flip(authHeader(many.auth, `${many.srv.baseUrl}/Patient`))
        expect(counted.message).toContain(
          "a bulk export would leave 7 of the 9 types it asks for (Account, AdverseEvent, Encounter, Goal, …) out without an error",
        )
        // the types it can read: the token serves
        const fits = yield* setup(narrow, () => ({ exportTypes: ["Patient"] }))
        expect(yield* authHeader(fits.auth, `${fits.srv.baseUrl}/Patient`)).toBe(
          `Bearer ${fits.srv.issued[0]}`,
        )
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("scopeVersion v1 sends v1 scopes from the start", () =>
    Effect.gen(function* () {
      const { srv, auth } = yield* setup({}, () => ({ scopeVersion: "v1" }))
      yield* authHeader(auth, `${srv.baseUrl}/Patient`)
      expect(srv.tokenRequests.map((r) => r.form.get("scope"))).toEqual(["system/*.read"])
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("resolves a relative token_endpoint from a legacy .well-known against the FHIR base", () =>
    Effect.gen(function* () {
      const { srv, auth } = yield* setup({ advertisedTokenEndpoint: "../auth/token" })
      expect(yield* authHeader(auth, `${srv.baseUrl}/Patient`)).toBe(`Bearer ${srv.issued[0]}`)
      expect(srv.tokenRequests[0]!.assertion!.claims.aud).toBe(srv.tokenUrl)
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("invalid_scope for v1 too fails with the server's words", () =>
    Effect.gen(function* () {
      const { srv, auth } = yield* setup({ acceptScope: () => false })
      const error = yield* Effect.flip(authHeader(auth, `${srv.baseUrl}/Patient`))
      assert.instanceOf(error, AuthError)
      expect(error.reason).toBe("TokenRequest")
      expect(error.message).toContain("invalid_scope (scope system/*.read is not allowed)")
      expect(srv.tokenRequests).toHaveLength(2)
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive(
    "a rejected assertion (invalid_client) is a TokenRequest error with the server's description",
    () =>
      Effect.gen(function* () {
        const { srv } = yield* setup()
        // A key the server never registered.
        const { key } = yield* keyPair("RS384")
        const auth = yield* SmartBackend.make({ baseUrl: srv.baseUrl, clientId: CLIENT, key })
        const error = yield* Effect.flip(authHeader(auth, `${srv.baseUrl}/Patient`))
        assert.instanceOf(error, AuthError)
        expect(error.reason).toBe("TokenRequest")
        expect(error.url).toBe(srv.tokenUrl)
        expect(error.message).toContain("HTTP 401 invalid_client (assertion rejected:")
        expect(error.message).toContain("check the client id")
        expect(error.message).not.toContain(srv.tokenRequests[0]!.form.get("client_assertion")!)
        // Failures are not cached: the next authorize asks again.
        yield* Effect.flip(authHeader(auth, `${srv.baseUrl}/Patient`))
        expect(srv.tokenRequests).toHaveLength(2)
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("refuses a non-bearer token_type but accepts any casing of bearer", () =>
    Effect.gen(function* () {
      const lower = yield* setup({ tokenType: "bearer" })
      expect(yield* authHeader(lower.auth, lower.srv.baseUrl)).toBe(`Bearer ${lower.srv.issued[0]}`)
      const mac = yield* setup({ tokenType: "MAC" })
      const error = yield* Effect.flip(authHeader(mac.auth, mac.srv.baseUrl))
      expect(error.message).toContain('"MAC" token')
      expect(error.message).not.toContain(mac.srv.issued[0]!)
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive("a target (write access) asks for system/*.cruds by default, system/*.* in SMART v1", () =>
    Effect.gen(function* () {
      const v2 = yield* setup({}, () => ({ access: "write" }))
      yield* authHeader(v2.auth, `${v2.srv.baseUrl}/Patient`)
      const v1 = yield* setup({}, () => ({ access: "write", scopeVersion: "v1" }))
      yield* authHeader(v1.auth, `${v1.srv.baseUrl}/Patient`)
      const fallback = yield* setup({ acceptScope: (s) => !s.includes(".cruds") }, () => ({
        access: "write",
      }))
      yield* authHeader(fallback.auth, `${fallback.srv.baseUrl}/Patient`)
      const source = yield* setup({}, () => ({ access: "read" }))
      yield* authHeader(source.auth, `${source.srv.baseUrl}/Patient`)
      const asked = (srv: TokenServer.TokenServer) => srv.tokenRequests.map((r) => r.form.get("scope"))
      expect(asked(v2.srv)).toEqual(["system/*.cruds"])
      expect(asked(v1.srv)).toEqual(["system/*.*"])
      expect(asked(fallback.srv)).toEqual(["system/*.cruds", "system/*.*"])
      expect(asked(source.srv)).toEqual(["system/*.rs"])
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it.scopedLive(
    "a token whose granted scopes do not allow what the server is for fails once, before any request",
    () =>
      Effect.gen(function* () {
        const readOnly = yield* setup({ grantScope: () => "system/*.rs" }, () => ({ access: "write" }))
        const error = yield* Effect.flip(authHeader(readOnly.auth, `${readOnly.srv.baseUrl}/Patient`))
        assert.instanceOf(error, AuthError)
        expect(error.reason).toBe("Scope")
        expect(error.message).toBe(
          `${readOnly.srv.tokenUrl}: the server granted the scopes "system/*.rs" for the requested "system/*.cruds", which do not allow writing resources; allow client ${CLIENT} write access (system/*.cruds, or system/*.write in SMART v1) at the server, or request scopes it is allowed (--scope; --source-scope / --target-scope for migrate and plan)`,
        )
        expect(error.message).not.toContain(readOnly.srv.issued[0]!)

        const writeOnly = yield* setup({ grantScope: () => "system/*.cud" })
        const noRead = yield* Effect.flip(authHeader(writeOnly.auth, `${writeOnly.srv.baseUrl}/Patient`))
        expect(noRead.reason).toBe("Scope")
        expect(noRead.message).toContain("do not allow reading resources")

        // less than asked, but enough: a few types, v1 spelling, or scopes Ferry cannot judge
        for (const [granted, access] of [
          ["system/Patient.rs system/Observation.read", "read"],
          ["system/*.write", "write"],
          ["system/Patient.cu", "write"],
          ["https://fhir.example.org/.default", "write"],
        ] as const) {
          const ok = yield* setup({ grantScope: () => granted }, () => ({ access }))
          expect(yield* authHeader(ok.auth, `${ok.srv.baseUrl}/Patient`)).toBe(`Bearer ${ok.srv.issued[0]}`)
        }
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)),
  )

  it("reads granted scopes: what allows reading, what allows writing", () => {
    expect(SmartBackend.grants("system/*.rs", "read")).toBe(true)
    expect(SmartBackend.grants("system/*.rs", "write")).toBe(false)
    expect(SmartBackend.grants("system/*.cruds", "write")).toBe(true)
    expect(SmartBackend.grants("system/*.d", "write")).toBe(false)
    expect(SmartBackend.grants("system/*.*", "write")).toBe(true)
    expect(SmartBackend.grants("system/*.read", "write")).toBe(false)
    expect(SmartBackend.grants("system/Observation.rs?category=laboratory", "read")).toBe(true)
    expect(SmartBackend.grants("", "read")).toBe(undefined)
    expect(SmartBackend.grants("openid https://x/.default", "read")).toBeUndefined()
  })

  it("tells when the granted scopes narrow every type asked for to some types", () => {
    expect(SmartBackend.narrowedTypes("system/Patient.rs", "read")).toEqual(["Patient"])
    expect(SmartBackend.narrowedTypes("system/Patient.read system/Condition.read", "read")).toEqual([
      "Condition",
      "Patient",
    ])
    expect(SmartBackend.narrowedTypes("system/*.rs", "read")).toBeUndefined()
    expect(SmartBackend.narrowedTypes("patient/Observation.rs system/Patient.r", "read")).toEqual([
      "Observation",
      "Patient",
    ])
    // a grant that says nothing judgeable
    expect(SmartBackend.narrowedTypes("", "read")).toBeUndefined()
    expect(SmartBackend.narrowedTypes("openid", "read")).toBeUndefined()
    // write access: only the types that may be written count
    expect(SmartBackend.narrowedTypes("system/Patient.cruds system/Observation.rs", "write")).toEqual([
      "Patient",
    ])
  })

  it("converts SMART v2 scopes to v1", () => {
    expect(SmartBackend.toV1Scopes("system/*.rs system/Group.rs")).toBe("system/*.read system/Group.read")
    expect(SmartBackend.toV1Scopes("system/*.cud system/*.cruds patient/Observation.r")).toBe(
      "system/*.write system/*.* patient/Observation.read",
    )
    // Already v1, filtered or foreign scopes are kept as they are.
    expect(
      SmartBackend.toV1Scopes("system/*.read system/Observation.rs?category=lab https://x/.default"),
    ).toBe("system/*.read system/Observation.rs?category=lab https://x/.default")
  })
})
