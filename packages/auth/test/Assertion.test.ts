import { NodeContext } from "@effect/platform-node"
import { assert, describe, expect, it } from "@effect/vitest"
import { AuthError } from "@ferry/core/Errors"
import { Effect, Redacted, TestClock } from "effect"
import * as jose from "jose"
import * as Assertion from "../src/Assertion.js"
import * as Keys from "../src/Keys.js"

const NOW = Date.UTC(2026, 0, 2, 3, 4, 5)
const TOKEN_URL = "https://auth.example.org/token"

describe("Assertion", () => {
  for (const alg of ["ES384", "RS384"] as const) {
    it.effect(`signs an ${alg} client assertion that verifies with the public JWKS`, () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(NOW)
        const { privateJwk, publicJwks } = yield* Keys.generate(alg)
        const key = yield* Keys.parsePrivateKey(JSON.stringify(privateJwk), "key.jwk")
        const first = yield* Assertion.sign(key, { clientId: "ferry-demo", audience: TOKEN_URL })
        const second = yield* Assertion.sign(key, { clientId: "ferry-demo", audience: TOKEN_URL })
        const verify = (jwt: Redacted.Redacted<string>) =>
          Effect.promise(() =>
            jose.jwtVerify(Redacted.value(jwt), jose.createLocalJWKSet({ keys: [...publicJwks.keys] }), {
              algorithms: [alg],
              currentDate: new Date(NOW),
            }),
          )
        const a = yield* verify(first)
        const b = yield* verify(second)
        expect(a.protectedHeader).toEqual({ alg, kid: privateJwk.kid, typ: "JWT" })
        expect(a.payload).toMatchObject({ iss: "ferry-demo", sub: "ferry-demo", aud: TOKEN_URL })
        const now = Math.floor(NOW / 1000)
        expect(a.payload.iat).toBe(now)
        expect(a.payload.exp).toBe(now + 240)
        expect(a.payload.exp! - now).toBeLessThanOrEqual(300)
        expect(a.payload.jti).toMatch(/^[0-9a-f-]{36}$/)
        expect(b.payload.jti).not.toBe(a.payload.jti)
        // Redacted until the line that sends it.
        expect(String(first)).not.toContain(Redacted.value(first))
      }),
    )
  }

  it.effect("signs with a key loaded from a JWKS by kid and from a PEM file", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(NOW)
      const es = yield* Keys.generate("ES384")
      const rs = yield* Keys.generate("RS384")
      const keys = { keys: [es.privateJwk, rs.privateJwk] }
      const fromJwks = yield* Keys.parsePrivateKey(JSON.stringify(keys), "set.jwks", {
        kid: rs.privateJwk.kid,
      })
      const pem = yield* Effect.promise(async () => {
        const k = await jose.importJWK(es.privateJwk, "ES384", { extractable: true })
        return jose.exportPKCS8(k as jose.CryptoKey)
      })
      const fromPem = yield* Keys.parsePrivateKey(pem, "key.pem", { alg: "ES384", kid: es.privateJwk.kid })
      const jwks = jose.createLocalJWKSet({ keys: [...es.publicJwks.keys, ...rs.publicJwks.keys] })
      for (const [key, alg] of [
        [fromJwks, "RS384"],
        [fromPem, "ES384"],
      ] as const) {
        const jwt = yield* Assertion.sign(key, { clientId: "c", audience: TOKEN_URL, lifetime: "5 minutes" })
        const { payload, protectedHeader } = yield* Effect.promise(() =>
          jose.jwtVerify(Redacted.value(jwt), jwks, { currentDate: new Date(NOW) }),
        )
        expect(protectedHeader.alg).toBe(alg)
        expect(payload.exp! - payload.iat!).toBe(300)
      }
    }).pipe(Effect.provide(NodeContext.layer)),
  )

  it.effect("refuses an assertion lifetime over 5 minutes", () =>
    Effect.gen(function* () {
      const { privateJwk } = yield* Keys.generate("ES384")
      const key = yield* Keys.parsePrivateKey(JSON.stringify(privateJwk), "key.jwk")
      const error = yield* Effect.flip(
        Assertion.sign(key, { clientId: "c", audience: TOKEN_URL, lifetime: "6 minutes" }),
      )
      assert.instanceOf(error, AuthError)
      expect(error.reason).toBe("Config")
      expect(error.message).toContain("at most 5 minutes")
    }),
  )
})
