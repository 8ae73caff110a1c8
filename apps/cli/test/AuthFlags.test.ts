import { Command } from "@effect/cli"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { assertNone, assertSome } from "@effect/vitest/utils"
import { Effect, Either, Option, Ref } from "effect"
import * as AuthFlags from "../src/AuthFlags.js"
import { authValues } from "./helpers/authValues.js"

/** Parses `args` with a command made of `flags` and returns the parsed values. */
const parse = <F extends Command.Command.Config>(flags: F, args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const seen = yield* Ref.make<unknown>(undefined)
    const command = Command.make("t", flags, (values) => Ref.set(seen, values))
    yield* Command.run(command, { name: "t", version: "0" })(["node", "t", ...args])
    return yield* Ref.get(seen)
  }).pipe(Effect.provide(NodeContext.layer))

describe("AuthFlags", () => {
  it("one definition gives the prefixed sets under prefixed keys", () => {
    const keys = (p: "source" | "target") => Object.keys(AuthFlags.authFlagsFor(p)).sort()
    assert.deepStrictEqual(keys("source"), [
      "sourceAlg",
      "sourceAuth",
      "sourceBearerEnv",
      "sourceBearerFile",
      "sourceClientId",
      "sourceClientSecretEnv",
      "sourceClientSecretMethod",
      "sourceKey",
      "sourceKeyId",
      "sourceScope",
      "sourceTokenUrl",
    ])
    assert.deepStrictEqual(
      keys("target"),
      keys("source").map((k) => k.replace(/^source/, "target")),
    )
    assert.deepStrictEqual(Object.keys(AuthFlags.authFlags).sort(), [
      "alg",
      "auth",
      "bearerEnv",
      "bearerFile",
      "clientId",
      "clientSecretEnv",
      "clientSecretMethod",
      "key",
      "keyId",
      "scope",
      "tokenUrl",
    ])
  })

  it.effect("parses source and target flags side by side; absent ones are none (no defaults)", () =>
    Effect.gen(function* () {
      const flags = { ...AuthFlags.authFlagsFor("source"), ...AuthFlags.authFlagsFor("target") }
      const values = (yield* parse(flags, [
        "--source-auth",
        "smart",
        "--source-client-id",
        "src-client",
        "--source-key",
        "/keys/src.jwk",
        "--source-alg",
        "RS384",
        "--target-auth",
        "bearer",
        "--target-bearer-env",
        "TARGET_TOKEN",
      ])) as AuthFlags.PrefixedAuthValues<"source"> & AuthFlags.PrefixedAuthValues<"target">
      const source = AuthFlags.unprefix("source", values)
      const target = AuthFlags.unprefix("target", values)
      assertSome(source.auth, "smart")
      assertSome(source.clientId, "src-client")
      assertSome(source.key, "/keys/src.jwk")
      assertSome(source.alg, "RS384")
      assertNone(source.bearerEnv)
      assertNone(source.clientSecretEnv)
      assertSome(target.auth, "bearer")
      assertSome(target.bearerEnv, "TARGET_TOKEN")
      assertNone(target.clientId)
    }),
  )

  it.effect("the unprefixed set keeps its defaults (export/import/verify unchanged)", () =>
    Effect.gen(function* () {
      const values = (yield* parse(AuthFlags.authFlags, [])) as AuthFlags.AuthFlagValues
      assert.strictEqual(values.auth, "none")
      assert.strictEqual(values.clientSecretEnv, "FERRY_CLIENT_SECRET")
      assertNone(values.clientId)
      const given = (yield* parse(AuthFlags.authFlags, [
        "--auth",
        "client-secret",
        "--client-id",
        "c",
        "--client-secret-env",
        "MY_SECRET",
      ])) as AuthFlags.AuthFlagValues
      assert.strictEqual(given.auth, "client-secret")
      assert.strictEqual(given.clientSecretEnv, "MY_SECRET")
    }),
  )

  it.effect("a missing client secret names the prefixed flag to fix", () =>
    Effect.gen(function* () {
      const name = "FERRY_TEST_SECRET_THAT_IS_NOT_SET"
      delete process.env[name]
      const values = authValues("client-secret", { clientId: Option.some("c") }, name)
      const result = yield* Effect.either(AuthFlags.authSettings(values, "target"))
      assert.isTrue(Either.isLeft(result))
      if (Either.isLeft(result)) {
        assert.strictEqual(result.left.reason, "Config")
        assert.include(result.left.message, `$${name}`)
        assert.include(result.left.message, "--target-client-secret-env")
      }
      const unprefixed = yield* Effect.either(AuthFlags.authSettings(values))
      if (Either.isLeft(unprefixed)) assert.include(unprefixed.left.message, "--client-secret-env")
      else assert.fail("expected a failure")
      // the secret itself typed where its variable's name goes: never echoed
      const typed = yield* Effect.flip(
        AuthFlags.authSettings({ ...values, clientSecretEnv: "s3cr3t-value!" }),
      )
      assert.notInclude(typed.message, "s3cr3t-value!")
      assert.include(typed.message, "give the NAME of the environment variable")
    }),
  )

  it.effect("a credential flag the chosen --auth does not read is refused, not ignored", () =>
    Effect.gen(function* () {
      const values = authValues("none", { key: Option.some("key.jwk") })
      const none = yield* Effect.flip(AuthFlags.authSettings(values))
      assert.strictEqual(none.message, "--key is not used with --auth none; pass --auth smart, or drop --key")
      const bearer = yield* Effect.flip(
        AuthFlags.authSettings(
          { ...values, auth: "bearer", key: Option.none(), clientId: Option.some("c") },
          "source",
        ),
      )
      assert.include(bearer.message, "--source-client-id is not used with --source-auth bearer")
      const smart = yield* AuthFlags.authSettings({ ...values, auth: "smart", clientId: Option.some("c") })
      assert.isTrue(Option.isSome(smart.keyFile))
      assert.strictEqual(smart.secretMethod, "basic")
      // --key-id: the kid the server knows the key by; --client-secret-method: basic or post
      const withKid = yield* AuthFlags.authSettings({
        ...values,
        auth: "smart",
        clientId: Option.some("c"),
        keyId: Option.some("registered-kid"),
      })
      assertSome(withKid.kid, "registered-kid")
      const stray = yield* Effect.flip(
        AuthFlags.authSettings({ ...values, key: Option.none(), keyId: Option.some("k") }),
      )
      assert.include(stray.message, "--key-id is not used with --auth none; pass --auth smart")
      process.env.FERRY_TEST_POST_SECRET = "s3cret-value"
      const post = yield* AuthFlags.authSettings({
        ...values,
        auth: "client-secret",
        key: Option.none(),
        clientId: Option.some("c"),
        clientSecretMethod: Option.some("post"),
        clientSecretEnv: "FERRY_TEST_POST_SECRET",
      })
      delete process.env.FERRY_TEST_POST_SECRET
      assert.strictEqual(post.secretMethod, "post")
    }),
  )
})

describe("readingScope", () => {
  it("makes a load's scope read what it covers, for the verify that follows", () => {
    assert.strictEqual(AuthFlags.readingScope("system/*.write"), "system/*.read")
    assert.strictEqual(AuthFlags.readingScope("system/*.cud"), "system/*.rs")
    assert.strictEqual(
      AuthFlags.readingScope("system/Patient.cruds system/Observation.c"),
      "system/Patient.cruds system/Observation.rs",
    )
    assert.strictEqual(AuthFlags.readingScope("system/*.read launch"), "system/*.read launch")
    assert.strictEqual(AuthFlags.readingScope("system/*.*"), "system/*.*")
  })
})
