import * as Crypto from "node:crypto"
import { FileSystem, Path } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, expect, it } from "@effect/vitest"
import { AuthError } from "@ferry/core/Errors"
import { Effect, Logger, type Scope } from "effect"
import * as jose from "jose"
import * as Keys from "../src/Keys.js"

const run = <A, E>(effect: Effect.Effect<A, E, FileSystem.FileSystem | Path.Path | Scope.Scope>) =>
  effect.pipe(Effect.provide(NodeContext.layer))

/** Write `text` into a fresh temp dir; returns the path. */
const writeTemp = (name: string, text: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const dir = yield* fs.makeTempDirectoryScoped({ prefix: "ferry-auth-keys-" })
    const file = path.join(dir, name)
    yield* fs.writeFileString(file, text, { mode: 0o600 })
    return file
  })

const keyInvalid = (error: unknown, file: string) => {
  assert.instanceOf(error, AuthError)
  expect(error.reason).toBe("KeyInvalid")
  expect(error.message).toContain(file)
}

describe("Keys", () => {
  it.scoped("a private key file others may read is used, with one warning that says to chmod 600 it", () =>
    run(
      Effect.gen(function* () {
        const fs = yield* FileSystem.FileSystem
        const warnings: Array<string> = []
        const capture = Logger.make<unknown, void>(({ logLevel, message }) => {
          if (logLevel._tag === "Warning") warnings.push(String(message))
        })
        const { privateJwk } = yield* Keys.generate("ES384")
        const file = yield* writeTemp("key.jwk", JSON.stringify(privateJwk))
        yield* Keys.loadPrivateKey(file).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture)))
        expect(warnings).toEqual([])
        yield* fs.chmod(file, 0o644)
        const key = yield* Keys.loadPrivateKey(file).pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, capture)),
        )
        expect(key.alg).toBe("ES384")
        expect(warnings).toEqual([
          `the private key file ${file} may be read by other users (mode 0644); chmod 600 it`,
        ])
      }),
    ),
  )

  for (const alg of ["ES384", "RS384"] as const) {
    it.scoped(`generates an ${alg} key pair with a thumbprint kid and loads the private JWK back`, () =>
      run(
        Effect.gen(function* () {
          const { privateJwk, publicJwks } = yield* Keys.generate(alg)
          expect(privateJwk.kid).toBe(yield* Effect.promise(() => jose.calculateJwkThumbprint(privateJwk)))
          expect(privateJwk).toMatchObject({ alg, use: "sig" })
          // not both `use` and `key_ops` (RFC 7517 §4.3), in neither half
          expect(privateJwk.key_ops).toBeUndefined()
          expect(publicJwks.keys[0]!.key_ops).toBeUndefined()
          expect(typeof privateJwk.d).toBe("string")
          expect(publicJwks.keys).toHaveLength(1)
          const pub = publicJwks.keys[0]!
          expect(pub).toMatchObject({ kid: privateJwk.kid, alg, kty: alg === "ES384" ? "EC" : "RSA" })
          for (const secret of ["d", "p", "q", "dp", "dq", "qi"]) expect(pub).not.toHaveProperty(secret)

          const file = yield* writeTemp("key.jwk", JSON.stringify(privateJwk))
          const key = yield* Keys.loadPrivateKey(file)
          expect(key).toMatchObject({ alg, kid: privateJwk.kid, source: file })
          expect(key.key.extractable).toBe(false)
          expect(key.key.type).toBe("private")
        }),
      ),
    )
  }

  it.scoped("picks a key from a JWKS by kid, or the only signing key", () =>
    run(
      Effect.gen(function* () {
        const a = yield* Keys.generate("ES384")
        const b = yield* Keys.generate("RS384")
        const both = yield* writeTemp("both.jwks", JSON.stringify({ keys: [a.privateJwk, b.privateJwk] }))
        const picked = yield* Keys.loadPrivateKey(both, { kid: b.privateJwk.kid })
        expect(picked).toMatchObject({ alg: "RS384", kid: b.privateJwk.kid })

        const ambiguous = yield* Effect.flip(Keys.loadPrivateKey(both))
        keyInvalid(ambiguous, both)
        expect(ambiguous.message).toContain(a.privateJwk.kid!)
        expect(ambiguous.message).toContain("choose one with --key-id")

        const unknown = yield* Effect.flip(Keys.loadPrivateKey(both, { kid: "nope" }))
        keyInvalid(unknown, both)
        expect(unknown.message).toContain("no key with kid nope")

        // A JWKS with one private key and public keys next to it: the private one is the signing key.
        const mixed = yield* writeTemp(
          "mixed.jwks",
          JSON.stringify({ keys: [...b.publicJwks.keys, a.privateJwk] }),
        )
        expect(yield* Keys.loadPrivateKey(mixed)).toMatchObject({ alg: "ES384", kid: a.privateJwk.kid })
      }),
    ),
  )

  it.scoped("a single JWK: --key-id must match its own kid, and names a key that has none", () =>
    run(
      Effect.gen(function* () {
        const a = yield* Keys.generate("ES384")
        const file = yield* writeTemp("one.jwk", JSON.stringify(a.privateJwk))
        const other = yield* Effect.flip(Keys.loadPrivateKey(file, { kid: "someone-else" }))
        keyInvalid(other, file)
        expect(other.message).toContain(`holds key ${a.privateJwk.kid}, but kid someone-else was asked for`)
        expect(yield* Keys.loadPrivateKey(file, { kid: a.privateJwk.kid })).toMatchObject({
          kid: a.privateJwk.kid,
        })

        const { kid: _, ...noKid } = a.privateJwk
        const bare = yield* writeTemp("bare.jwk", JSON.stringify(noKid))
        expect(yield* Keys.loadPrivateKey(bare, { kid: "registered-kid" })).toMatchObject({
          kid: "registered-kid",
        })
      }),
    ),
  )

  it.scoped("loads PKCS#8 PEM (EC and RSA) and PKCS#1 RSA PEM, inferring or checking alg", () =>
    run(
      Effect.gen(function* () {
        const ec = Crypto.generateKeyPairSync("ec", { namedCurve: "P-384" })
        const rsa = Crypto.generateKeyPairSync("rsa", { modulusLength: 2048 })
        const ecPem = yield* writeTemp(
          "ec.pem",
          ec.privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
        )
        const rsaPem = yield* writeTemp(
          "rsa.pem",
          rsa.privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
        )
        const rsaPkcs1 = yield* writeTemp(
          "rsa1.pem",
          rsa.privateKey.export({ format: "pem", type: "pkcs1" }).toString(),
        )
        const ecKey = yield* Keys.loadPrivateKey(ecPem, { alg: "ES384", kid: "my-ec" })
        expect(ecKey).toMatchObject({ alg: "ES384", kid: "my-ec" })
        const rsaKey = yield* Keys.loadPrivateKey(rsaPem)
        const thumb = yield* Effect.promise(() =>
          jose.calculateJwkThumbprint(rsa.publicKey.export({ format: "jwk" }) as jose.JWK),
        )
        expect(rsaKey).toMatchObject({ alg: "RS384", kid: thumb })
        expect(yield* Keys.loadPrivateKey(rsaPkcs1)).toMatchObject({ alg: "RS384", kid: thumb })

        const mismatch = yield* Effect.flip(Keys.loadPrivateKey(ecPem, { alg: "RS384" }))
        keyInvalid(mismatch, ecPem)
        expect(mismatch.message).toContain("ES384")
      }),
    ),
  )

  it.scoped(
    "rejects garbage, public-only, wrong-curve and missing key files with KeyInvalid naming the file",
    () =>
      run(
        Effect.gen(function* () {
          const garbage = yield* writeTemp("garbage.jwk", "this is not a key {")
          keyInvalid(yield* Effect.flip(Keys.loadPrivateKey(garbage)), garbage)

          const badPem = yield* writeTemp(
            "bad.pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
          )
          keyInvalid(yield* Effect.flip(Keys.loadPrivateKey(badPem)), badPem)

          // a passphrase-protected key (PKCS#8 and the older PEM header): said so, with the command that mends it
          const p384 = Crypto.generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey
          for (const [name, text] of [
            [
              "enc8.pem",
              p384
                .export({ format: "pem", type: "pkcs8", cipher: "aes-256-cbc", passphrase: "pw" })
                .toString(),
            ],
            [
              "enc1.pem",
              p384
                .export({ format: "pem", type: "sec1", cipher: "aes-256-cbc", passphrase: "pw" })
                .toString(),
            ],
          ] as const) {
            const encrypted = yield* writeTemp(name, text)
            const e = yield* Effect.flip(Keys.loadPrivateKey(encrypted))
            keyInvalid(e, encrypted)
            expect(e.message).toContain("holds an encrypted (passphrase-protected) private key")
            expect(e.message).toContain("openssl pkcs8 -topk8 -nocrypt")
            expect(e.message).not.toContain("libcrypto")
          }

          // a key node reads but JWK cannot express (DSA): the same one sentence, not a defect
          const dsa = Crypto.generateKeyPairSync("dsa", { modulusLength: 2048, divisorLength: 256 })
          const dsaPem = yield* writeTemp(
            "dsa.pem",
            dsa.privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
          )
          const dsaError = yield* Effect.flip(Keys.loadPrivateKey(dsaPem))
          keyInvalid(dsaError, dsaPem)
          expect(dsaError.message).toContain("holds a dsa key that cannot be used to sign client assertions")

          const { publicJwks } = yield* Keys.generate("ES384")
          const pubOnly = yield* writeTemp("public.jwk", JSON.stringify(publicJwks.keys[0]))
          const pubError = yield* Effect.flip(Keys.loadPrivateKey(pubOnly))
          keyInvalid(pubError, pubOnly)
          expect(pubError.message).toContain("public key only")
          const pubSet = yield* writeTemp("public.jwks", JSON.stringify(publicJwks))
          keyInvalid(yield* Effect.flip(Keys.loadPrivateKey(pubSet)), pubSet)

          const p256 = Crypto.generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({
            format: "jwk",
          })
          const wrongCurve = yield* writeTemp("p256.jwk", JSON.stringify(p256))
          const curveError = yield* Effect.flip(Keys.loadPrivateKey(wrongCurve))
          keyInvalid(curveError, wrongCurve)
          expect(curveError.message).toContain("holds an EC P-256 key")

          const missing = `${garbage}.missing`
          const missingError = yield* Effect.flip(Keys.loadPrivateKey(missing))
          keyInvalid(missingError, missing)
          expect(missingError.message).toBe(
            `${missing}: the key file does not exist; check --key (--source-key / --target-key, or auth.key in a migrate or plan config file)`,
          )
          // a directory where the file should be: its code, not the platform's sentence
          const dir = garbage.replace(/garbage\.jwk$/, "")
          const unreadable = yield* Effect.flip(Keys.loadPrivateKey(dir))
          keyInvalid(unreadable, dir)
          expect(unreadable.message).toBe(
            `${dir}: the key file cannot be read (EISDIR); check its permissions, and --key (--source-key / --target-key, or auth.key in a migrate or plan config file)`,
          )
        }),
      ),
  )

  it.effect("error messages never quote the file's contents", () =>
    Effect.gen(function* () {
      const { privateJwk } = yield* Keys.generate("ES384")
      const pem = Crypto.generateKeyPairSync("ec", { namedCurve: "P-384" })
        .privateKey.export({ format: "pem", type: "pkcs8" })
        .toString()
      const broken = `${JSON.stringify(privateJwk)}trailing`
      const error = yield* Effect.flip(Keys.parsePrivateKey(broken, "k.jwk"))
      expect(error.message).not.toContain(privateJwk.d!)
      // the key itself pasted where its file's path goes (a JWK, a PEM): not echoed as a path
      for (const pasted of [JSON.stringify(privateJwk, null, 2), pem]) {
        const notAPath = yield* Effect.flip(
          Keys.loadPrivateKey(pasted).pipe(Effect.provide(NodeContext.layer)),
        )
        expect(notAPath.message).toContain(
          "holds something that is not a file path (not shown: the key itself?)",
        )
        expect(notAPath.message).not.toContain(privateJwk.d!)
        expect(notAPath.message).not.toContain("PRIVATE KEY")
      }
      expect(error.message).toContain("k.jwk")
    }),
  )

  it.scoped("an RSA key shorter than 2048 bits is refused when loaded (PEM or JWK), naming the file", () =>
    run(
      Effect.gen(function* () {
        const short = Crypto.generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey
        const pem = yield* writeTemp("short.pem", short.export({ format: "pem", type: "pkcs8" }).toString())
        const jwk = yield* writeTemp("short.jwk", JSON.stringify(short.export({ format: "jwk" })))
        for (const file of [pem, jwk]) {
          const error = yield* Effect.flip(Keys.loadPrivateKey(file))
          keyInvalid(error, file)
          expect(error.message).toBe(
            `the RSA key in ${file} has 1024 bits; RS384 needs 2048 or more: generate one with ferry keys generate`,
          )
        }
        // 2048 bits and more load (a modulus with its top bit set counts every bit)
        const long = Crypto.generateKeyPairSync("rsa", { modulusLength: 3072 }).privateKey
        const longJwk = yield* writeTemp("long.jwk", JSON.stringify(long.export({ format: "jwk" })))
        expect(yield* Keys.loadPrivateKey(longJwk)).toMatchObject({ alg: "RS384" })
      }),
    ),
  )
})
