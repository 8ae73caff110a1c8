/**
 * Client signing keys for SMART Backend Services: generate a key pair to register, and load the private
 * key that signs client assertions from a JWK, a JWKS (+kid) or a PEM file.
 *
 * Private material leaves this module only as a non-extractable `CryptoKey`; nothing here logs.
 */
import * as Crypto from "node:crypto"
import { FileSystem } from "@effect/platform"
import { AuthError } from "@ferry/core/Errors"
import { networkCode } from "@ferry/core/Http"
import { isPastedSecret } from "@ferry/core/PastedSecret"
import { Effect, Option, Schema } from "effect"
import * as Jose from "./internal/jose.js"

export const SigningAlg = Schema.Literal("ES384", "RS384")
export type SigningAlg = typeof SigningAlg.Type

/** A key ready to sign client assertions. `key` is a non-extractable CryptoKey. */
export interface SigningKey {
  readonly alg: SigningAlg
  readonly kid: string
  readonly key: Jose.CryptoKey
  /** Where the key came from (a file path), for messages. */
  readonly source: string
}

export interface PublicJwks {
  readonly keys: ReadonlyArray<Jose.JWK>
}

export interface GeneratedKey {
  /** The private JWK (with `d`): keep it secret, store it mode 0600. */
  readonly privateJwk: Jose.JWK
  /** The public key set to register with the authorization server. */
  readonly publicJwks: PublicJwks
}

const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] as const

/** The public half of a JWK: every private member removed, `key_ops` set to verify. */
export const toPublicJwk = (jwk: Jose.JWK): Jose.JWK => {
  const pub: Record<string, unknown> = { ...jwk }
  for (const member of PRIVATE_MEMBERS) delete pub[member]
  if (jwk.key_ops !== undefined) pub.key_ops = ["verify"]
  return pub as Jose.JWK
}

/** Generate a fresh signing key pair. `kid` is the RFC 7638 SHA-256 thumbprint of the public key. */
export const generate = Effect.fn("Keys.generate")(function* (alg: SigningAlg) {
  const { privateJwk: raw } = yield* Jose.generateKeyPair(alg)
  const kid = yield* Jose.thumbprint(raw, "generated key")
  // `use: "sig"` only: RFC 7517 §4.3 asks for `use` and `key_ops` not to be used together
  const privateJwk: Jose.JWK = { ...raw, kid, alg, use: "sig" }
  return { privateJwk, publicJwks: { keys: [toPublicJwk(privateJwk)] } } satisfies GeneratedKey
})

export interface LoadOptions {
  /** Required to pick a key from a JWKS holding several; must match a single JWK's own kid. */
  readonly kid?: string | undefined
  /** Signing algorithm; inferred from the key type when absent (EC P-384 → ES384, RSA → RS384). */
  readonly alg?: SigningAlg | undefined
}

const invalid = (source: string, what: string) =>
  new AuthError({ reason: "KeyInvalid", detail: `Key file ${source}: ${what}` })

/** RS384 with a shorter modulus is refused by jose when signing (and by NIST SP 800-131A). */
const minRsaBits = 2048

/** A key too short to sign with, found when it is loaded rather than at the first signature mid-run. */
const checkRsaBits = (bits: number | undefined, source: string): Effect.Effect<void, AuthError> =>
  bits !== undefined && bits < minRsaBits
    ? Effect.fail(
        new AuthError({
          reason: "KeyInvalid",
          detail: `the RSA key in ${source} has ${bits} bits; RS384 needs ${minRsaBits} or more: generate one with ferry keys generate`,
        }),
      )
    : Effect.void

/** The bit length of a JWK's RSA modulus `n` (base64url, big-endian), when it has one. */
const modulusBits = (jwk: Jose.JWK): number | undefined => {
  if (jwk.kty !== "RSA" || typeof jwk.n !== "string") return undefined
  const bytes = Buffer.from(jwk.n, "base64url")
  let i = 0
  while (i < bytes.length && bytes[i] === 0) i++
  if (i === bytes.length) return 0
  return (bytes.length - i - 1) * 8 + (32 - Math.clz32(bytes[i]!))
}

/** Read and import a private signing key from a file (JWK, JWKS or PEM). */
export const loadPrivateKey = Effect.fn("Keys.loadPrivateKey")(function* (
  path: string,
  options: LoadOptions = {},
) {
  const fs = yield* FileSystem.FileSystem
  if (isPastedSecret(path))
    return yield* new AuthError({
      reason: "KeyInvalid",
      detail:
        "--key (or auth.key in a config file) holds something that is not a file path (not shown: the key itself?); give the path of the key file",
    })
  const text = yield* fs.readFileString(path).pipe(
    // the platform's message repeats the path and the syscall: the error's code says enough
    Effect.mapError((error) => {
      const missing = error._tag === "SystemError" && error.reason === "NotFound"
      const code =
        error._tag === "SystemError" ? (networkCode(error.cause) ?? error.reason) : "not a usable path"
      return new AuthError({
        reason: "KeyInvalid",
        detail: missing
          ? `${path}: the key file does not exist; check --key (--source-key / --target-key, or auth.key in a migrate or plan config file)`
          : `${path}: the key file cannot be read (${code}); check its permissions, and --key (--source-key / --target-key, or auth.key in a migrate or plan config file)`,
      })
    }),
  )
  const key = yield* parsePrivateKey(text, path, options)
  // a private key others may read: said once (the key works, so it is not refused), as for a bearer token file
  const info = yield* Effect.option(fs.stat(path))
  if (Option.isSome(info) && (info.value.mode & 0o077) !== 0)
    yield* Effect.logWarning(
      `the private key file ${path} may be read by other users (mode ${(info.value.mode & 0o777).toString(8).padStart(4, "0")}); chmod 600 it`,
    )
  return key
})

/** Import a private signing key from file contents; `source` names the file in messages. */
export const parsePrivateKey = (
  text: string,
  source: string,
  options: LoadOptions = {},
): Effect.Effect<SigningKey, AuthError> => {
  const trimmed = text.trim()
  if (trimmed.startsWith("-----BEGIN")) return fromPem(trimmed, source, options)
  let parsed: unknown
  try {
    parsed = JSON.parse(trimmed)
  } catch {
    // The parse error text can quote the file's contents: do not carry it.
    return Effect.fail(
      invalid(
        source,
        "is neither JSON (a JWK or JWKS) nor a PEM private key; generate one with `ferry keys generate`",
      ),
    )
  }
  if (!isObject(parsed)) return Effect.fail(invalid(source, "does not hold a JSON object (a JWK or a JWKS)"))
  if (Array.isArray(parsed.keys)) return fromJwks(parsed.keys, source, options)
  if (typeof parsed.kty === "string") return fromJwk(parsed as Jose.JWK, source, options)
  return Effect.fail(invalid(source, 'is JSON but neither a JWK (no "kty") nor a JWKS (no "keys" array)'))
}

const isObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** "a" or "an" before a key type as it is written (`EC`, `OKP`, `RSA`, `oct`, `ed25519`, `x448`: "an"; `dsa`, `dh`: "a"). */
const article = (word: string): string => (/^(?:[aeiou]|rsa|x|okp)/i.test(word) ? "an" : "a")

const inferAlg = (jwk: Jose.JWK, source: string, wanted: SigningAlg | undefined) =>
  Effect.gen(function* () {
    const fromKey: SigningAlg | undefined =
      jwk.kty === "RSA" ? "RS384" : jwk.kty === "EC" && jwk.crv === "P-384" ? "ES384" : undefined
    if (fromKey === undefined) {
      return yield* invalid(
        source,
        `holds ${article(String(jwk.kty))} ${jwk.kty}${jwk.crv ? ` ${jwk.crv}` : ""} key; SMART Backend Services needs an RSA key (RS384) or an EC P-384 key (ES384)`,
      )
    }
    if (jwk.alg !== undefined && jwk.alg !== fromKey) {
      return yield* invalid(source, `declares alg ${jwk.alg}, but its key can only sign ${fromKey}`)
    }
    if (wanted !== undefined && wanted !== fromKey) {
      return yield* invalid(source, `holds a key for ${fromKey}, but ${wanted} was asked for`)
    }
    return fromKey
  })

const fromJwk = (jwk: Jose.JWK, source: string, options: LoadOptions): Effect.Effect<SigningKey, AuthError> =>
  Effect.gen(function* () {
    if (typeof jwk.d !== "string") {
      return yield* invalid(
        source,
        `holds a public key only (no "d"${jwk.kid ? `, kid ${jwk.kid}` : ""}); point it at the private key`,
      )
    }
    if (options.kid !== undefined && jwk.kid !== undefined && jwk.kid !== options.kid) {
      return yield* invalid(source, `holds key ${jwk.kid}, but kid ${options.kid} was asked for`)
    }
    const alg = yield* inferAlg(jwk, source, options.alg)
    yield* checkRsaBits(modulusBits(jwk), source)
    const kid = jwk.kid ?? options.kid ?? (yield* Jose.thumbprint(jwk, `Key file ${source}`))
    // Import without use/key_ops restrictions that some exporters set inconsistently.
    const { key_ops: _ops, use: _use, ext: _ext, ...material } = jwk
    const key = yield* Jose.importJwk(material, alg, `Key file ${source}`)
    return { alg, kid, key, source } satisfies SigningKey
  })

const canSign = (jwk: Jose.JWK): boolean =>
  typeof jwk.d === "string" &&
  (jwk.use === undefined || jwk.use === "sig") &&
  (jwk.key_ops === undefined || jwk.key_ops.includes("sign"))

const fromJwks = (
  keys: ReadonlyArray<unknown>,
  source: string,
  options: LoadOptions,
): Effect.Effect<SigningKey, AuthError> =>
  Effect.gen(function* () {
    const jwks = keys
      .filter(isObject)
      .filter((k): k is Jose.JWK & Record<string, unknown> => typeof k.kty === "string")
    const kids = jwks.map((k) => k.kid ?? "(no kid)").join(", ")
    if (options.kid !== undefined) {
      const match = jwks.filter((k) => k.kid === options.kid)
      if (match.length === 0) {
        return yield* invalid(source, `has no key with kid ${options.kid} (kids: ${kids || "none"})`)
      }
      const priv = match.filter(canSign)
      if (priv.length !== 1) {
        return yield* invalid(
          source,
          priv.length === 0
            ? `key ${options.kid} is not a private signing key (no "d", or use/key_ops exclude signing)`
            : `has ${priv.length} private keys with kid ${options.kid}; kids must be unique`,
        )
      }
      return yield* fromJwk(priv[0]!, source, options)
    }
    const signing = jwks.filter(canSign)
    if (signing.length === 1) return yield* fromJwk(signing[0]!, source, options)
    return yield* invalid(
      source,
      signing.length === 0
        ? `is a JWKS without a private signing key (kids: ${kids || "none"}); it must hold the private key ("d")`
        : `is a JWKS with ${signing.length} private signing keys (kids: ${signing.map((k) => k.kid ?? "(no kid)").join(", ")}); choose one with --key-id (auth.keyId in a config file)`,
    )
  })

const fromPem = (pem: string, source: string, options: LoadOptions): Effect.Effect<SigningKey, AuthError> =>
  Effect.gen(function* () {
    if (/-----BEGIN (RSA |EC )?PUBLIC KEY-----|-----BEGIN CERTIFICATE-----/.test(pem)) {
      return yield* invalid(source, "holds a public key or certificate; point it at the PEM private key")
    }
    if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type:\s*4,\s*ENCRYPTED/.test(pem)) {
      return yield* invalid(
        source,
        "holds an encrypted (passphrase-protected) private key, which Ferry cannot unlock; write an unencrypted copy with openssl pkcs8 -topk8 -nocrypt -in <this file> -out <new file> (keep it 0600) and point Ferry at that",
      )
    }
    // node:crypto reads PKCS#8, PKCS#1 (RSA) and SEC1 (EC); re-export as PKCS#8 for jose.
    const keyObject = yield* Effect.try({
      try: () => Crypto.createPrivateKey({ key: pem, format: "pem" }),
      catch: (cause) =>
        invalid(
          source,
          `is not a readable PEM private key (${cause instanceof Error ? cause.message : "unknown error"}); encrypted keys are not supported, use PKCS#8 (openssl pkcs8 -topk8 -nocrypt)`,
        ),
    })
    // a key node reads but cannot express as a JWK (DSA, an EC curve other than the NIST ones) is the user's
    // key file, not a bug: one sentence, like every other unusable key
    const exported = yield* Effect.try({
      try: () => ({
        publicJwk: Crypto.createPublicKey(keyObject).export({ format: "jwk" }) as Jose.JWK,
        pkcs8: keyObject.export({ format: "pem", type: "pkcs8" }).toString(),
      }),
      catch: () =>
        invalid(
          source,
          `holds ${article(keyObject.asymmetricKeyType ?? "unknown")} ${keyObject.asymmetricKeyType ?? "unknown"} key that cannot be used to sign client assertions; use an RSA key (RS384) or an EC P-384 key (ES384)`,
        ),
    })
    const { publicJwk, pkcs8 } = exported
    const alg = yield* inferAlg(publicJwk, source, options.alg)
    yield* checkRsaBits(
      keyObject.asymmetricKeyType === "rsa" ? keyObject.asymmetricKeyDetails?.modulusLength : undefined,
      source,
    )
    const key = yield* Jose.importPkcs8(pkcs8, alg, `Key file ${source}`)
    const kid = options.kid ?? (yield* Jose.thumbprint(publicJwk, `Key file ${source}`))
    return { alg, kid, key, source } satisfies SigningKey
  })
