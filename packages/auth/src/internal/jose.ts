/**
 * The one seam to jose (STYLE.md §9.5): every Promise-returning jose call goes through here and comes
 * back as an Effect failing with `AuthError`. Callers pick the reason and the sentence.
 */
import { AuthError } from "@ferry/core/Errors"
import { Effect } from "effect"
import * as jose from "jose"

export type CryptoKey = jose.CryptoKey
export type JWK = jose.JWK

const wrap =
  (reason: AuthError["reason"], detail: (cause: unknown) => string) =>
  <A>(f: () => Promise<A>): Effect.Effect<A, AuthError> =>
    Effect.tryPromise({
      try: f,
      // jose's messages name the failing check, never key material.
      catch: (cause) => new AuthError({ reason, detail: detail(cause), cause }),
    })

const why = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

export const importJwk = (jwk: JWK, alg: string, what: string): Effect.Effect<CryptoKey, AuthError> =>
  wrap(
    "KeyInvalid",
    (cause) => `${what}: jose could not import the JWK for ${alg} (${why(cause)}); check kty/crv and alg`,
  )(() => jose.importJWK(jwk, alg, { extractable: false })).pipe(
    Effect.flatMap((key) =>
      key instanceof Uint8Array
        ? Effect.fail(
            new AuthError({
              reason: "KeyInvalid",
              detail: `${what}: a symmetric ("oct") key cannot sign an RS384/ES384 client assertion`,
            }),
          )
        : Effect.succeed(key),
    ),
  )

export const importPkcs8 = (pem: string, alg: string, what: string): Effect.Effect<CryptoKey, AuthError> =>
  wrap(
    "KeyInvalid",
    (cause) =>
      `${what}: the PEM private key could not be imported for ${alg} (${why(cause)}); check --alg matches the key type`,
  )(() => jose.importPKCS8(pem, alg, { extractable: false }))

export const thumbprint = (jwk: JWK, what: string): Effect.Effect<string, AuthError> =>
  wrap(
    "KeyInvalid",
    (cause) => `${what}: could not compute the JWK thumbprint (${why(cause)})`,
  )(() => jose.calculateJwkThumbprint(jwk, "sha256"))

export const generateKeyPair = (alg: "ES384" | "RS384"): Effect.Effect<{ privateJwk: JWK }, AuthError> =>
  wrap(
    "KeyInvalid",
    (cause) => `could not generate a ${alg} key pair (${why(cause)})`,
  )(async () => {
    const pair = await jose.generateKeyPair(alg, { extractable: true, modulusLength: 2048 })
    return { privateJwk: await jose.exportJWK(pair.privateKey) }
  })

export interface AssertionInput {
  readonly key: CryptoKey
  readonly alg: string
  readonly kid: string
  readonly clientId: string
  readonly audience: string
  readonly jti: string
  readonly issuedAt: number
  readonly expiresAt: number
}

export const signJwt = (input: AssertionInput): Effect.Effect<string, AuthError> =>
  wrap(
    "KeyInvalid",
    (cause) => `could not sign the client assertion with key ${input.kid} (${why(cause)})`,
  )(() =>
    new jose.SignJWT({})
      .setProtectedHeader({ alg: input.alg, kid: input.kid, typ: "JWT" })
      .setIssuer(input.clientId)
      .setSubject(input.clientId)
      .setAudience(input.audience)
      .setJti(input.jti)
      .setIssuedAt(input.issuedAt)
      .setExpirationTime(input.expiresAt)
      .sign(input.key),
  )
