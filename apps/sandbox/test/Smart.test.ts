import { randomUUID } from "node:crypto"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as jose from "jose"
import { parseScope, requiredAccess } from "../src/Smart.js"
import { ASYNC, exportAll, http, json, startKit } from "./internal/bulkKit.js"

const keyPair = (alg: "RS384" | "ES384", kid: string) =>
  Effect.promise(async () => {
    const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true })
    const jwk = { ...(await jose.exportJWK(publicKey)), kid, alg, use: "sig" }
    return { alg, kid, privateKey, jwk }
  })

type Key = Effect.Effect.Success<ReturnType<typeof keyPair>>

const assertion = (
  key: Key,
  claims: { iss: string; aud: string; exp?: number; jti?: string; sub?: string },
) =>
  Effect.promise(() =>
    new jose.SignJWT({})
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: "JWT" })
      .setIssuer(claims.iss)
      .setSubject(claims.sub ?? claims.iss)
      .setAudience(claims.aud)
      .setExpirationTime(claims.exp ?? Math.floor(Date.now() / 1000) + 240)
      .setJti(claims.jti ?? randomUUID())
      .sign(key.privateKey),
  )

const tokenRequest = (tokenUrl: string, jwt: string, scope: string, grant = "client_credentials") =>
  http(tokenUrl, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
    body: new URLSearchParams({
      grant_type: grant,
      scope,
      client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
      client_assertion: jwt,
    }).toString(),
  })

const setup = (extra: { tokenLifetimeSeconds?: number; faults?: unknown } = {}) =>
  Effect.gen(function* () {
    const rsa = yield* keyPair("RS384", "rsa-1")
    const ec = yield* keyPair("ES384", "ec-1")
    const kit = yield* startKit(
      {
        generate: 2,
        auth: {
          ...(extra.tokenLifetimeSeconds !== undefined
            ? { tokenLifetimeSeconds: extra.tokenLifetimeSeconds }
            : {}),
          clients: [
            { clientId: "rsa-client", jwks: { keys: [rsa.jwk] } },
            { clientId: "ec-client", jwks: { keys: [ec.jwk] }, scopes: ["system/*.rs"] },
          ],
        },
        ...(extra.faults !== undefined ? { faults: extra.faults } : {}),
      },
      { pollsBeforeDone: 0 },
    )
    const tokenUrl = `${kit.baseUrl}/auth/token`
    const token = (key: Key, iss: string, scope: string) =>
      Effect.gen(function* () {
        const r = yield* tokenRequest(tokenUrl, yield* assertion(key, { iss, aud: tokenUrl }), scope)
        assert.strictEqual(r.status, 200, r.body.toString())
        return json(r) as { access_token: string; token_type: string; expires_in: number; scope: string }
      })
    return { kit, rsa, ec, tokenUrl, token }
  })

const bearer = (t: string) => ({ authorization: `Bearer ${t}` })

describe("Smart", () => {
  it("parses v1 and v2 system scopes", () => {
    assert.deepStrictEqual([...parseScope("system/*.read")!.permissions].sort(), ["r", "s"])
    assert.deepStrictEqual([...parseScope("system/Patient.write")!.permissions].sort(), ["c", "d", "u"])
    assert.deepStrictEqual([...parseScope("system/*.cruds")!.permissions].sort(), ["c", "d", "r", "s", "u"])
    assert.strictEqual(parseScope("system/Observation.rs")!.resource, "Observation")
    assert.isUndefined(parseScope("system/*.dus")) // out of order
    assert.isUndefined(parseScope("patient/*.read"))
    assert.isUndefined(parseScope("system/Observation.rs?category=laboratory"))
  })

  it("maps routes to the permission they need", () => {
    const need = (m: string, p: string) => {
      const a = requiredAccess(m, p)
      return a._tag === "type"
        ? `${a.type}.${a.permission}`
        : a._tag === "any"
          ? `*any.${a.permission}`
          : a._tag
    }
    assert.strictEqual(need("GET", "/metadata"), "open")
    assert.strictEqual(need("GET", "/.well-known/smart-configuration"), "open")
    assert.strictEqual(need("POST", "/auth/token"), "open")
    assert.strictEqual(need("GET", "/bulk/files/j/Patient.000.ndjson"), "token")
    assert.strictEqual(need("GET", "/Patient"), "Patient.s")
    assert.strictEqual(need("POST", "/Patient/_search"), "Patient.s")
    assert.strictEqual(need("GET", "/Patient/1"), "Patient.r")
    assert.strictEqual(need("POST", "/Patient"), "Patient.c")
    assert.strictEqual(need("PUT", "/Patient/1"), "Patient.u")
    assert.strictEqual(need("PUT", "/Patient"), "Patient.u") // conditional update
    assert.strictEqual(need("DELETE", "/Patient"), "Patient.d") // conditional delete
    assert.strictEqual(need("DELETE", "/Patient/1"), "Patient.d")
    assert.strictEqual(need("POST", "/"), "*.c")
    assert.strictEqual(need("GET", "/$export"), "*any.r")
    assert.strictEqual(need("GET", "/Group/g/$export"), "Group.r")
    assert.strictEqual(need("POST", "/$import"), "*any.c")
  })

  it.scopedLive("discovery, CapabilityStatement security, and 401 without a token", () =>
    Effect.gen(function* () {
      const { kit, tokenUrl } = yield* setup()
      const d = yield* http(`${kit.baseUrl}/.well-known/smart-configuration`)
      assert.strictEqual(d.status, 200)
      const conf = json(d)
      assert.strictEqual(conf.token_endpoint, tokenUrl)
      assert.deepStrictEqual(conf.grant_types_supported, ["client_credentials"])
      assert.deepStrictEqual(conf.token_endpoint_auth_methods_supported, ["private_key_jwt"])
      assert.deepStrictEqual(conf.token_endpoint_auth_signing_alg_values_supported, ["RS384", "ES384"])
      assert.include(conf.capabilities as string[], "client-confidential-asymmetric")
      const meta = yield* http(`${kit.baseUrl}/metadata`)
      assert.strictEqual(meta.status, 200)
      assert.include(meta.body.toString(), `"valueUri":"${tokenUrl}"`)
      const r = yield* http(`${kit.baseUrl}/Patient`)
      assert.strictEqual(r.status, 401)
      assert.match(String(r.headers["www-authenticate"]), /^Bearer/)
      const bad = yield* http(`${kit.baseUrl}/Patient`, { headers: bearer("nope") })
      assert.strictEqual(bad.status, 401)
      assert.match(String(bad.headers["www-authenticate"]), /invalid_token/)
    }),
  )

  it.scopedLive("tokens for RS384 and ES384 clients; granted scope limited to the client's", () =>
    Effect.gen(function* () {
      const { kit, rsa, ec, token } = yield* setup()
      const t1 = yield* token(rsa, "rsa-client", "system/*.read")
      assert.strictEqual(t1.token_type, "bearer")
      assert.strictEqual(t1.expires_in, 300)
      assert.strictEqual(t1.scope, "system/*.read")
      assert.strictEqual(
        (yield* http(`${kit.baseUrl}/Patient/gen-pat-0`, { headers: bearer(t1.access_token) })).status,
        200,
      )
      const t2 = yield* token(ec, "ec-client", "system/*.rs system/*.cud")
      assert.strictEqual(t2.scope, "system/*.rs") // cud is not allowed for this client
      assert.strictEqual(
        (yield* http(`${kit.baseUrl}/Patient`, { headers: bearer(t2.access_token) })).status,
        200,
      )
    }),
  )

  it.scopedLive(
    "rejects bad signature, audience, expiry, far exp, replayed jti, unknown client, bad grant",
    () =>
      Effect.gen(function* () {
        const { rsa, tokenUrl, kit } = yield* setup()
        const impostor = yield* keyPair("RS384", "rsa-1")
        const now = Math.floor(Date.now() / 1000)
        const cases: Array<[string, string, number]> = [
          ["bad signature", yield* assertion(impostor, { iss: "rsa-client", aud: tokenUrl }), 401],
          ["bad aud", yield* assertion(rsa, { iss: "rsa-client", aud: `${kit.baseUrl}/other` }), 401],
          ["expired", yield* assertion(rsa, { iss: "rsa-client", aud: tokenUrl, exp: now - 60 }), 401],
          ["exp > 5 min", yield* assertion(rsa, { iss: "rsa-client", aud: tokenUrl, exp: now + 900 }), 401],
          ["sub != iss", yield* assertion(rsa, { iss: "rsa-client", sub: "x", aud: tokenUrl }), 401],
          ["unknown client", yield* assertion(rsa, { iss: "who", aud: tokenUrl }), 401],
        ]
        for (const [what, jwt, status] of cases) {
          const r = yield* tokenRequest(tokenUrl, jwt, "system/*.read")
          assert.strictEqual(r.status, status, what)
          assert.strictEqual(json(r).error, "invalid_client", what)
        }
        const jti = randomUUID()
        const first = yield* tokenRequest(
          tokenUrl,
          yield* assertion(rsa, { iss: "rsa-client", aud: tokenUrl, jti }),
          "system/*.read",
        )
        assert.strictEqual(first.status, 200)
        const again = yield* tokenRequest(
          tokenUrl,
          yield* assertion(rsa, { iss: "rsa-client", aud: tokenUrl, jti }),
          "system/*.read",
        )
        assert.strictEqual(again.status, 401)
        assert.match(String(json(again).error_description), /jti/)
        const grant = yield* tokenRequest(
          tokenUrl,
          yield* assertion(rsa, { iss: "rsa-client", aud: tokenUrl }),
          "system/*.read",
          "password",
        )
        assert.strictEqual(grant.status, 400)
        assert.strictEqual(json(grant).error, "unsupported_grant_type")
        const scope = yield* tokenRequest(
          tokenUrl,
          yield* assertion(rsa, { iss: "rsa-client", aud: tokenUrl }),
          "user/*.read",
        )
        assert.strictEqual(scope.status, 400)
        assert.strictEqual(json(scope).error, "invalid_scope")
      }),
  )

  it.scopedLive("a client registered by jwksUrl", () =>
    Effect.gen(function* () {
      const key = yield* keyPair("ES384", "remote")
      const server = createServer((_req, res) => {
        res.writeHead(200, { "content-type": "application/json" })
        res.end(JSON.stringify({ keys: [key.jwk] }))
      })
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()))),
        () => Effect.promise(() => new Promise<void>((r) => server.close(() => r()))),
      )
      const jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`
      const kit = yield* startKit({ auth: { clients: [{ clientId: "remote", jwksUrl }] } })
      const tokenUrl = `${kit.baseUrl}/auth/token`
      const r = yield* tokenRequest(
        tokenUrl,
        yield* assertion(key, { iss: "remote", aud: tokenUrl }),
        "system/*.rs",
      )
      assert.strictEqual(r.status, 200)
    }),
  )

  it.scopedLive("scopes are enforced per type and read/write; export limited to readable types", () =>
    Effect.gen(function* () {
      const { kit, rsa, ec, token } = yield* setup()
      const patientOnly = (yield* token(rsa, "rsa-client", "system/Patient.read")).access_token
      const readAll = (yield* token(rsa, "rsa-client", "system/*.rs")).access_token
      const writeAll = (yield* token(rsa, "rsa-client", "system/*.write")).access_token
      const put = (t: string) =>
        http(`${kit.baseUrl}/Patient/new-1`, {
          method: "PUT",
          headers: { ...bearer(t), "content-type": "application/fhir+json" },
          body: JSON.stringify({ resourceType: "Patient", id: "new-1" }),
        })
      assert.strictEqual(
        (yield* http(`${kit.baseUrl}/Patient/gen-pat-0`, { headers: bearer(patientOnly) })).status,
        200,
      )
      assert.strictEqual(
        (yield* http(`${kit.baseUrl}/Observation`, { headers: bearer(patientOnly) })).status,
        403,
      )
      assert.strictEqual((yield* put(patientOnly)).status, 403)
      assert.strictEqual((yield* put(readAll)).status, 403)
      assert.include([200, 201], (yield* put(writeAll)).status)
      assert.strictEqual(
        (yield* http(`${kit.baseUrl}/Patient/new-1`, { headers: bearer(writeAll) })).status,
        403,
      )
      const forbidden = yield* http(`${kit.baseUrl}/$export?_type=Observation`, {
        headers: { ...ASYNC, ...bearer(patientOnly) },
      })
      assert.strictEqual(forbidden.status, 403)
      const exp = yield* exportAll(`${kit.baseUrl}/$export`, { headers: bearer(patientOnly) })
      assert.deepStrictEqual([...exp.byType.keys()], ["Patient"])
      assert.strictEqual(exp.manifest.requiresAccessToken, true)
      const noToken = yield* http(exp.manifest.output[0]!.url)
      assert.strictEqual(noToken.status, 401)
      const noStatus = yield* http(exp.status)
      assert.strictEqual(noStatus.status, 401)
      // another client's token: the job and its files are not there for it; its own client's are
      const other = (yield* token(ec, "ec-client", "system/*.rs")).access_token
      assert.strictEqual((yield* http(exp.status, { headers: bearer(other) })).status, 404)
      assert.strictEqual((yield* http(exp.manifest.output[0]!.url, { headers: bearer(other) })).status, 404)
      assert.strictEqual((yield* http(exp.status, { headers: bearer(readAll) })).status, 200)
    }),
  )

  it.scopedLive("tokens stop working after tokenLifetimeSeconds, and earlier with the expiry fault", () =>
    Effect.gen(function* () {
      const a = yield* setup({ tokenLifetimeSeconds: 1 })
      const t = (yield* a.token(a.rsa, "rsa-client", "system/*.read")).access_token
      assert.strictEqual((yield* http(`${a.kit.baseUrl}/Patient`, { headers: bearer(t) })).status, 200)
      const b = yield* setup({ faults: { tokenExpiresAfterSeconds: 1 } })
      const granted = yield* b.token(b.rsa, "rsa-client", "system/*.read")
      assert.strictEqual(granted.expires_in, 300) // advertised
      assert.strictEqual(
        (yield* http(`${b.kit.baseUrl}/Patient`, { headers: bearer(granted.access_token) })).status,
        200,
      )
      yield* Effect.sleep("1100 millis")
      const expiredA = yield* http(`${a.kit.baseUrl}/Patient`, { headers: bearer(t) })
      assert.strictEqual(expiredA.status, 401)
      assert.match(String(expiredA.headers["www-authenticate"]), /invalid_token/)
      assert.strictEqual(
        (yield* http(`${b.kit.baseUrl}/Patient`, { headers: bearer(granted.access_token) })).status,
        401,
      )
    }),
  )
})
