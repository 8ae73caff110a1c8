import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { assertNone, assertSome } from "@effect/vitest/utils"
import { Cause, ConfigProvider, Effect, Either, Logger, Option, Redacted } from "effect"
import type { AuthKind, OptionalAuthValues } from "../src/AuthFlags.js"
import * as Config from "../src/Config.js"
import * as Render from "../src/Render.js"
import { unsetAuthFlags } from "./helpers/authValues.js"

const tmp = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-config-test-"))
const write = (name: string, text: string): string => {
  const path = Path.join(tmp, name)
  NFS.writeFileSync(path, text)
  return path
}

/** Runs with exactly these environment variables (none of the machine's). */
const withEnv =
  (env: Record<string, string>) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.withConfigProvider(effect, ConfigProvider.fromMap(new Map(Object.entries(env))))

const noAuthFlags: OptionalAuthValues = {
  auth: Option.none(),
  ...unsetAuthFlags,
  clientSecretEnv: Option.none(),
}

const yamlFile = `# a complete config
source:
  url: https://source.example.org/fhir
  auth:
    kind: smart
    clientId: file-client
    key: keys/source.jwk
    scope: system/*.rs
target:
  url: https://target.example.org/r4
  auth: none
archive: ./archive
parallel: 3
bundleSize: 200
`

const failure = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Effect.either(effect), (r) =>
    Either.isLeft(r) ? Effect.succeed(r.left) : Effect.dieMessage("expected a failure"),
  )

describe("Config", () => {
  it("a layer below the one that chose the kind adds only what that kind reads (a leftover FERRY_TARGET_CLIENT_ID under --target-auth bearer is not a stray flag)", () => {
    const flags = {
      target: { auth: { kind: "bearer" as const, bearerEnv: "HAPI_TOKEN" } },
    } as unknown as Config.Layer
    const env = { target: { auth: { clientId: "abc", scope: "system/*.rs" } } } as unknown as Config.Layer
    const s = Config.merge([flags, env])
    assert.strictEqual(s.target.auth.auth, "bearer")
    assert.isTrue(Option.isNone(s.target.auth.clientId))
    assert.isTrue(Option.isNone(s.target.auth.scope))
    // a setting above (or beside) the kind's layer is kept, and the stray check says so
    const flagged = Config.merge([
      { target: { auth: { clientId: "abc" } } } as unknown as Config.Layer,
      { target: { auth: { kind: "bearer", bearerEnv: "HAPI_TOKEN" } } } as unknown as Config.Layer,
    ])
    assert.isTrue(Option.isSome(flagged.target.auth.clientId))
    // a lower layer's settings the chosen kind reads still add to it
    const smart = Config.merge([
      { target: { auth: { kind: "smart", clientId: "c" } } } as unknown as Config.Layer,
      { target: { auth: { key: "k.jwk", bearerFile: "t" } } } as unknown as Config.Layer,
    ])
    assert.isTrue(Option.isSome(smart.target.auth.key))
    assert.isTrue(Option.isNone(smart.target.auth.bearerFile))
  })

  it.effect("YAML and JSON files give the same settings; relative paths resolve against the file", () =>
    Effect.gen(function* () {
      const fromYaml = yield* Config.parseFile(Path.join(tmp, "ferry.yaml"), yamlFile)
      const json = {
        source: {
          url: "https://source.example.org/fhir",
          auth: { kind: "smart", clientId: "file-client", key: "keys/source.jwk", scope: "system/*.rs" },
        },
        target: { url: "https://target.example.org/r4", auth: "none" },
        archive: "./archive",
        parallel: 3,
        bundleSize: 200,
      }
      const fromJson = yield* Config.parseFile(Path.join(tmp, "ferry.json"), JSON.stringify(json, null, 2))
      assert.deepStrictEqual(fromYaml, fromJson)
      const s = Config.merge([fromYaml])
      assertSome(s.source.url, "https://source.example.org/fhir")
      assert.strictEqual(s.source.auth.auth, "smart")
      assertSome(s.source.auth.key, Path.join(tmp, "keys/source.jwk"))
      assertSome(s.archive, Path.join(tmp, "archive"))
      assert.strictEqual(s.target.auth.auth, "none")
      assert.strictEqual(s.parallel, 3)
      assert.strictEqual(s.bundleSize, 200)
      // defaults for what nothing gave
      assert.strictEqual(s.maxBundleBytes, 10 * 1024 * 1024)
      assert.strictEqual(s.strategy, "auto")
      assert.strictEqual(s.target.auth.clientSecretEnv, "FERRY_TARGET_CLIENT_SECRET")
    }),
  )

  it.effect(
    "FERRY_* variables that are no setting are said once each (with the one meant), the ones settings name are not",
    () =>
      Effect.gen(function* () {
        const warnings: Array<string> = []
        const capture = Logger.make<unknown, void>(({ logLevel, message }) => {
          if (logLevel._tag === "Warning") warnings.push(String(message))
        })
        const settings = Config.merge([
          { target: { auth: { kind: "bearer", bearerEnv: "FERRY_HAPI_TOKEN" } } } as unknown as Config.Layer,
        ])
        yield* Config.unknownVariables(
          {
            FERRY_PARALELL: "4",
            FERRY_PARALLEL: "4",
            FERRY_HAPI_TOKEN: "t",
            FERRY_TARGET_CLIENT_SECRET: "s",
            FERRY_CONFIG: "f.yaml",
            FERRY_SHINY: "x",
            PATH: "/bin",
          },
          settings,
        ).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture)))
        assert.deepStrictEqual(warnings, [
          "FERRY_PARALELL is not a Ferry setting (did you mean FERRY_PARALLEL?); it is ignored",
          "FERRY_SHINY is not a Ferry setting; it is ignored",
        ])
      }),
  )

  it.effect("maxBundleBytes takes a size with a unit in the file and the environment, as the flag does", () =>
    Effect.gen(function* () {
      const noFlags: Config.FlagInput = {
        from: Option.none(),
        to: Option.none(),
        parallel: Option.none(),
        bundleSize: Option.none(),
        source: noAuthFlags,
        target: noAuthFlags,
      }
      const file = write("sizes.yaml", "maxBundleBytes: 5MB\n")
      const fromFile = yield* Config.resolve(Option.some(file), noFlags)
      assert.strictEqual(fromFile.maxBundleBytes, 5_000_000)
      const fromEnv = yield* Config.resolve(Option.some(file), noFlags).pipe(
        withEnv({ FERRY_MAX_BUNDLE_BYTES: "10MiB" }),
      )
      assert.strictEqual(fromEnv.maxBundleBytes, 10 * 1024 * 1024)
      const bad = yield* Effect.flip(
        Config.resolve(Option.some(file), noFlags).pipe(withEnv({ FERRY_MAX_BUNDLE_BYTES: "ten" })),
      )
      assert.include(bad.message, "FERRY_MAX_BUNDLE_BYTES")
      assert.include(bad.message, "is not a size")
    }).pipe(Effect.provide(NodeContext.layer)),
  )

  it.effect("precedence: flag > FERRY_* environment > file > default, field by field", () =>
    Effect.gen(function* () {
      const file = write("precedence.yaml", yamlFile)
      const flags: Config.FlagInput = {
        from: Option.none(),
        to: Option.some("http://flag-target/fhir"),
        parallel: Option.some(9),
        bundleSize: Option.none(),
        source: { ...noAuthFlags, clientId: Option.some("flag-client") },
        target: noAuthFlags,
      }
      const s = yield* Config.resolve(Option.some(file), flags).pipe(
        withEnv({
          FERRY_FROM: "http://env-source/fhir",
          FERRY_TO: "http://env-target/fhir",
          FERRY_PARALLEL: "7",
          FERRY_SOURCE_CLIENT_ID: "env-client",
          FERRY_SOURCE_SCOPE: "system/Patient.rs",
          FERRY_SOURCE_KEY_ID: "registered-kid",
          FERRY_TARGET_CLIENT_SECRET_METHOD: "post",
          FERRY_TARGET_AUTH: "bearer",
          FERRY_TARGET_BEARER_ENV: "TARGET_TOKEN",
        }),
      )
      assertSome(s.configFile, file)
      assertSome(s.target.url, "http://flag-target/fhir") // flag over env and file
      assertSome(s.source.url, "http://env-source/fhir") // env over file
      assert.strictEqual(s.parallel, 9) // flag
      assert.strictEqual(s.bundleSize, 200) // file
      assert.strictEqual(s.maxBundleBytes, Config.defaults.maxBundleBytes) // default
      assertSome(s.source.auth.clientId, "flag-client")
      assertSome(s.source.auth.scope, "system/Patient.rs")
      assertSome(s.source.auth.keyId, "registered-kid")
      assertSome(s.target.auth.clientSecretMethod, "post")
      assert.strictEqual(s.source.auth.auth, "smart") // file
      assert.strictEqual(s.target.auth.auth, "bearer") // env over the file's `auth: none`
      assertSome(s.target.auth.bearerEnv, "TARGET_TOKEN")
    }).pipe(Effect.provide(NodeContext.layer)),
  )

  it.effect(
    "a layer that sets the auth kind brings its own credentials: the file's SMART key does not ride along under the environment's bearer",
    () =>
      Effect.gen(function* () {
        const file = write("kinds.yaml", yamlFile)
        const s = yield* Config.resolve(Option.some(file), {}).pipe(
          withEnv({ FERRY_SOURCE_AUTH: "bearer", FERRY_SOURCE_BEARER_ENV: "TOKEN_VAR" }),
        )
        assert.strictEqual(s.source.auth.auth, "bearer")
        assertSome(s.source.auth.bearerEnv, "TOKEN_VAR")
        assert.isTrue(Option.isNone(s.source.auth.key), "the file's key")
        assert.isTrue(Option.isNone(s.source.auth.clientId), "the file's client id")
        assert.isTrue(Option.isNone(s.source.auth.scope), "the file's scope")
        // a higher layer without a kind still adds to the kind's layer
        const added = yield* Config.resolve(Option.some(file), {}).pipe(
          withEnv({ FERRY_SOURCE_SCOPE: "system/Patient.rs" }),
        )
        assert.strictEqual(added.source.auth.auth, "smart")
        assertSome(added.source.auth.scope, "system/Patient.rs")
        assert.isTrue(Option.isSome(added.source.auth.key))
      }).pipe(Effect.provide(NodeContext.layer)),
  )

  it.effect("no file, no environment: the defaults; FERRY_CONFIG names a file", () =>
    Effect.gen(function* () {
      const none = yield* Config.resolve(Option.none(), {}).pipe(withEnv({}))
      assertNone(none.source.url)
      assert.strictEqual(none.source.auth.auth, "none")
      assert.strictEqual(none.parallel, 4)
      assert.strictEqual(none.level, "system")
      const file = write("via-env.yml", "parallel: 2\n")
      const viaEnv = yield* Config.resolve(Option.none(), {}).pipe(withEnv({ FERRY_CONFIG: file }))
      assert.strictEqual(viaEnv.parallel, 2)
      // a FERRY_CONFIG naming nothing says so (not "--config", which was not given)
      const gone = yield* failure(
        Config.resolve(Option.none(), {}).pipe(withEnv({ FERRY_CONFIG: `${file}.missing` })),
      )
      assert.include(gone.message, "check the path given to FERRY_CONFIG")
      const missing = yield* failure(Config.requireUrl(none, "source"))
      assert.strictEqual(missing.reason, "Missing")
      assert.include(missing.message, "--from")
      assert.include(missing.message, "FERRY_FROM")
      assert.include(missing.message, "source.url")
    }).pipe(Effect.provide(NodeContext.layer)),
  )

  it.effect("a YAML syntax error names the file and line", () =>
    Effect.gen(function* () {
      const e = yield* failure(
        Config.parseFile("ferry.yaml", "source:\n  url: http://a\n  auth: [smart\nparallel: 2\n"),
      )
      assert.strictEqual(e._tag, "ConfigError")
      assert.strictEqual(e.reason, "Syntax")
      assert.isDefined(e.line)
      assert.match(e.message, /^ferry\.yaml:\d+: this is not valid YAML \(.+\); fix the syntax$/)
      // a quote never closed: the line where it opened (the parser finds it missing past the last line)
      const text =
        'source:\n  url: http://a/fhir\ntarget:\n  url: http://b/fhir\narchive: ./x\nparallel: "4\nbundleSize: 5\n'
      const open = yield* failure(Config.parseFile("ferry.yaml", text))
      assert.strictEqual(open.line, 6)
      assert.strictEqual(
        open.message,
        'ferry.yaml:6: this is not valid YAML (a " opened on this line is never closed); fix the syntax',
      )
    }),
  )

  it.effect(
    "a JSON syntax error names the file and line; a secret typed where it does not go is never echoed",
    () =>
      Effect.gen(function* () {
        const e = yield* failure(
          Config.parseFile("ferry.json", '{\n  "parallel": 2,\n  "archive": "a",\n}\n'),
        )
        assert.strictEqual(e.reason, "Syntax")
        assert.strictEqual(e.line, 4)
        assert.match(e.message, /^ferry\.json:4: this is not valid JSON \(.+\); fix the syntax$/)
        const cut = yield* failure(Config.parseFile("ferry.json", '{\n  "parallel": 2,\n  "archive":'))
        assert.strictEqual(cut.line, 3)
        // a secret typed where a variable NAME goes: refused at its line, never shown
        const named = yield* failure(
          Config.parseFile(
            "ferry.yaml",
            "source:\n  auth:\n    kind: bearer\n    bearerEnv: s3cr3t-token-value\n",
          ),
        )
        assert.strictEqual(named.line, 4)
        assert.include(named.message, "source.auth.bearerEnv: is not the name of an environment variable")
        assert.notInclude(named.message, "s3cr3t")
        // V8 quotes the text around the error: none of it reaches the message (a secret typed unquoted)
        const typed = yield* failure(
          Config.parseFile("ferry.json", '{\n  "clientSecret": s3cr3t-VALUE-123\n}\n'),
        )
        assert.notInclude(typed.message, "s3cr3t")
        assert.match(typed.message, /^ferry\.json(:\d+)?: this is not valid JSON \(.+\); fix the syntax$/)
      }),
  )

  it.effect(
    "a key given twice in a JSON file is refused at the second one's line (JSON.parse would keep the last)",
    () =>
      Effect.gen(function* () {
        const e = yield* failure(
          Config.parseFile(
            "ferry.json",
            '{\n  "source": {"url": "http://a"},\n  "parallel": 2,\n  "source": {"url": "http://b"}\n}\n',
          ),
        )
        assert.strictEqual(e.reason, "Syntax")
        assert.strictEqual(e.line, 4)
        assert.strictEqual(
          e.message,
          'ferry.json:4: "source" is given twice in the same object, and JSON would keep only the last; remove one of them',
        )
        // nested, too
        const nested = yield* failure(
          Config.parseFile("ferry.json", '{"source": {"url": "http://a", "url": "http://b"}}'),
        )
        assert.include(nested.message, '"url" is given twice')
      }),
  )

  it.effect("a private key written into auth.key as a mapping is named, not shown", () =>
    Effect.gen(function* () {
      const e = yield* failure(
        Config.parseFile(
          "ferry.yaml",
          'source:\n  url: http://a\n  auth:\n    kind: smart\n    key: {"kty": "EC", "crv": "P-384", "d": "SECRETd"}\n',
        ),
      )
      assert.include(e.message, "source.auth.key")
      assert.include(e.message, "actual a mapping")
      assert.notInclude(e.message, "SECRETd")
    }),
  )

  it.effect("a wrong value names file, line, field and what is expected", () =>
    Effect.gen(function* () {
      const e = yield* failure(
        Config.parseFile("ferry.yaml", "source:\n  url: http://a\n  auth:\n    kind: smrt\n"),
      )
      assert.strictEqual(e.reason, "Invalid")
      assert.strictEqual(e.line, 4)
      assert.include(e.message, "ferry.yaml:4: source.auth.kind")
      assert.include(e.message, 'Expected "none" | "smart" | "client-secret" | "bearer", actual "smrt"')
      assert.include(e.message, "fix the config file")
      const zero = yield* failure(Config.parseFile("ferry.yaml", "archive: a\nparallel: 0\n"))
      assert.strictEqual(zero.line, 2)
      assert.include(zero.message, "parallel")
      // a section written as a value: its keys, not the schema's type text
      const flat = yield* failure(Config.parseFile("ferry.yaml", "target: http://t.example/fhir\n"))
      assert.strictEqual(
        flat.message,
        'ferry.yaml:1: target: expected a section (keys: url, auth), got "http://t.example/fhir"; fix the config file',
      )
    }),
  )

  it.effect("an unknown field (a typo) is refused, with its line", () =>
    Effect.gen(function* () {
      const e = yield* failure(Config.parseFile("ferry.yml", "target:\n  url: http://a\n  utl: http://b\n"))
      assert.strictEqual(e.reason, "Invalid")
      assert.strictEqual(e.line, 3)
      assert.include(e.message, "target.utl")
      assert.include(e.message, "(did you mean url?); fix the config file")
      const top = yield* failure(Config.parseFile("ferry.yml", "source: http://a\nparalel: 2\n"))
      assert.strictEqual(top.line, 2)
      assert.include(top.message, "(did you mean parallel?)")
      // nothing near: no guess
      const far = yield* failure(Config.parseFile("ferry.yml", "source: http://a\nzzzzzzzz: 2\n"))
      assert.notInclude(far.message, "did you mean")
    }),
  )

  it.effect("a secret written in the file is refused with what to do instead", () =>
    Effect.gen(function* () {
      const secret = yield* failure(
        Config.parseFile(
          "ferry.yaml",
          "target:\n  url: http://a\n  auth:\n    kind: client-secret\n    clientId: c\n    clientSecret: hunter2hunter2\n",
        ),
      )
      assert.strictEqual(secret.reason, "Secret")
      assert.strictEqual(secret.line, 6)
      assert.include(secret.message, "target.auth.clientSecret")
      assert.include(secret.message, "clientSecretEnv")
      assert.notInclude(secret.message, "hunter2")
      const token = yield* failure(
        Config.parseFile(
          "ferry.json",
          JSON.stringify({ source: { auth: { kind: "bearer", token: "abc" } } }),
        ),
      )
      assert.strictEqual(token.reason, "Secret")
      assert.include(token.message, "bearerEnv")
    }),
  )

  it.effect("bad environment values name the variable", () =>
    Effect.gen(function* () {
      const notNumber = yield* failure(Config.fromEnv.pipe(withEnv({ FERRY_PARALLEL: "many" })))
      assert.strictEqual(notNumber.where, "FERRY_PARALLEL")
      assert.include(notNumber.message, "FERRY_PARALLEL")
      const negative = yield* failure(Config.fromEnv.pipe(withEnv({ FERRY_BUNDLE_SIZE: "-1" })))
      assert.strictEqual(negative.where, "FERRY_BUNDLE_SIZE")
      assert.include(negative.message, "-1 must be at least 1; fix or unset FERRY_BUNDLE_SIZE")
      const badKind = yield* failure(Config.fromEnv.pipe(withEnv({ FERRY_TARGET_AUTH: "oauth" })))
      assert.strictEqual(badKind.where, "FERRY_TARGET_AUTH")
      assert.include(badKind.message, "fix or unset FERRY_TARGET_AUTH")
    }),
  )

  it.effect("a flag wins over a bad environment value too (the variable is not read)", () =>
    Effect.gen(function* () {
      const flags: Config.FlagInput = {
        from: Option.some("http://source/fhir"),
        to: Option.some("http://target/fhir"),
        parallel: Option.some(2),
        bundleSize: Option.none(),
        source: noAuthFlags,
        target: noAuthFlags,
      }
      const s = yield* Config.resolve(Option.none(), flags).pipe(withEnv({ FERRY_PARALLEL: "abc" }))
      assert.strictEqual(s.parallel, 2)
      // without the flag the variable is read, and refused
      const e = yield* failure(
        Config.resolve(Option.none(), { ...flags, parallel: Option.none() }).pipe(
          withEnv({ FERRY_PARALLEL: "abc" }),
        ),
      )
      assert.strictEqual(e.where, "FERRY_PARALLEL")
    }).pipe(Effect.provide(NodeContext.layer)),
  )

  it.effect("a bad flag value names the flag", () =>
    Effect.gen(function* () {
      const e = yield* failure(Config.fromFlags({ bundleSize: Option.some(0) }))
      assert.strictEqual(e.where, "--bundle-size")
    }),
  )

  it.effect("the file must be .yaml, .yml or .json, and readable", () =>
    Effect.gen(function* () {
      const ext = yield* failure(Config.parseFile("ferry.toml", "parallel = 2"))
      assert.strictEqual(ext.reason, "Read")
      const missing = yield* failure(Config.readFile(Path.join(tmp, "nope.yaml")))
      assert.strictEqual(missing.reason, "Read")
      assert.include(missing.message, "nope.yaml")
    }).pipe(Effect.provide(NodeContext.layer)),
  )

  it.effect(
    "each server reads its client secret from its own variable; the source's never goes to the target",
    () =>
      Effect.gen(function* () {
        const secretAuth: OptionalAuthValues = {
          ...noAuthFlags,
          auth: Option.some("client-secret"),
          clientId: Option.some("c"),
        }
        const flags: Config.FlagInput = {
          from: Option.some("http://source.example/fhir"),
          to: Option.some("http://target.example/fhir"),
          source: secretAuth,
          target: secretAuth,
        }
        const secretOf = (settings: Config.Settings, server: "source" | "target") =>
          Config.serverAuthSettings(settings, server).pipe(
            Effect.map((a) => Option.map(a.clientSecret, Redacted.value)),
          )
        const both = yield* Config.resolve(Option.none(), flags).pipe(withEnv({}))
        assert.strictEqual(both.source.auth.clientSecretEnv, "FERRY_SOURCE_CLIENT_SECRET")
        assert.strictEqual(both.target.auth.clientSecretEnv, "FERRY_TARGET_CLIENT_SECRET")
        const env = {
          FERRY_SOURCE_CLIENT_SECRET: "source-secret",
          FERRY_TARGET_CLIENT_SECRET: "target-secret",
          FERRY_CLIENT_SECRET: "one-server-secret",
        }
        assertSome(yield* secretOf(both, "source").pipe(withEnv(env)), "source-secret")
        assertSome(yield* secretOf(both, "target").pipe(withEnv(env)), "target-secret")

        // only the one-server variable exported: neither server takes it, and the message says why
        const onlyOne = { FERRY_CLIENT_SECRET: "one-server-secret" }
        const missing = yield* Effect.flip(secretOf(both, "target").pipe(withEnv(onlyOne)))
        assert.strictEqual(
          missing.message,
          "--target-auth client-secret reads the secret from $FERRY_TARGET_CLIENT_SECRET, which is not set; export it or name another variable with --target-client-secret-env ($FERRY_CLIENT_SECRET is read by the one-server commands only)",
        )
        assert.notInclude(JSON.stringify(missing), "one-server-secret")
      }).pipe(Effect.provide(NodeContext.layer)),
  )

  it.effect("source and target reading one variable is refused (exit 2) unless it is named for both", () =>
    Effect.gen(function* () {
      const auth = (kind: AuthKind, more: Partial<OptionalAuthValues> = {}): OptionalAuthValues => ({
        ...noAuthFlags,
        auth: Option.some(kind),
        ...(kind === "client-secret" ? { clientId: Option.some("c") } : {}),
        ...more,
      })
      const resolve = (source: OptionalAuthValues, target: OptionalAuthValues, env = {}) =>
        Config.resolve(Option.none(), { source, target }).pipe(withEnv(env))

      // the source named the target's default variable
      const clash = yield* failure(
        resolve(
          auth("client-secret", { clientSecretEnv: Option.some("FERRY_TARGET_CLIENT_SECRET") }),
          auth("client-secret"),
        ),
      )
      assert.strictEqual(clash._tag, "ConfigError")
      assert.strictEqual(
        clash.message,
        "the source and the target would both read their credentials from $FERRY_TARGET_CLIENT_SECRET (the target's default), sending one server's secret to the other; give each its own with --source-client-secret-env and --target-client-secret-env, or name $FERRY_TARGET_CLIENT_SECRET with both to share it on purpose",
      )
      assert.strictEqual(Render.exitCode(Cause.fail(clash)), 2)

      // a bearer token read from the variable the other server's secret defaults to
      const viaBearer = yield* failure(
        resolve(auth("client-secret"), auth("bearer"), {
          FERRY_TARGET_BEARER_ENV: "FERRY_SOURCE_CLIENT_SECRET",
        }),
      )
      assert.include(viaBearer.message, "$FERRY_SOURCE_CLIENT_SECRET (the source's default)")
      assert.include(viaBearer.message, "--target-bearer-env")

      // named for both (one client registered on both servers): on purpose, allowed
      const shared = { clientSecretEnv: Option.some("SHARED_SECRET") }
      yield* resolve(auth("client-secret", shared), auth("client-secret"), {
        FERRY_TARGET_CLIENT_SECRET_ENV: "SHARED_SECRET",
      })
      const token = { bearerEnv: Option.some("ONE_TOKEN") }
      yield* resolve(auth("bearer", token), auth("bearer", token))
    }).pipe(Effect.provide(NodeContext.layer)),
  )

  it("names: flags and environment variables", () => {
    assert.strictEqual(Config.flagName(["source", "url"]), "--from")
    assert.strictEqual(Config.flagName(["target", "auth", "clientSecretEnv"]), "--target-client-secret-env")
    assert.strictEqual(Config.flagName(["source", "auth", "kind"]), "--source-auth")
    assert.strictEqual(Config.envName(["target", "url"]), "FERRY_TO")
    assert.strictEqual(Config.envName(["source", "auth", "clientId"]), "FERRY_SOURCE_CLIENT_ID")
    assert.strictEqual(Config.envName(["source", "auth", "kind"]), "FERRY_SOURCE_AUTH")
    assert.strictEqual(Config.envName(["maxBundleBytes"]), "FERRY_MAX_BUNDLE_BYTES")
  })
})
