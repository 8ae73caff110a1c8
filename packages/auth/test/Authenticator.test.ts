import { FileSystem, HttpClientRequest, Path } from "@effect/platform"
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { assert, describe, expect, it } from "@effect/vitest"
import { AuthError } from "@ferry/core/Errors"
import {
  Cause,
  Config,
  ConfigProvider,
  Effect,
  HashMap,
  Layer,
  List,
  Logger,
  LogLevel,
  Option,
  Redacted,
} from "effect"
import * as Authenticator from "../src/Authenticator.js"
import * as Keys from "../src/Keys.js"
import * as TokenServer from "./helpers/TokenServer.js"

const live = Layer.merge(NodeContext.layer, NodeHttpClient.layerUndici)

const header = (auth: Authenticator.Authenticator, url: string) =>
  auth.authorize(HttpClientRequest.get(url)).pipe(Effect.map((r) => r.headers.authorization))

describe("Authenticator", () => {
  it("sameOrigin compares scheme, host and port", () => {
    const base = "https://fhir.example.org/r4"
    expect(Authenticator.sameOrigin(base, "https://fhir.example.org/r4/Patient/1")).toBe(true)
    expect(Authenticator.sameOrigin(base, "https://fhir.example.org:443/other")).toBe(true)
    expect(Authenticator.sameOrigin(base, "Patient/1")).toBe(true)
    expect(Authenticator.sameOrigin(base, "https://FHIR.example.org/r4")).toBe(true)
    expect(Authenticator.sameOrigin(base, "http://fhir.example.org/r4")).toBe(false)
    expect(Authenticator.sameOrigin(base, "https://fhir.example.org:8443/r4")).toBe(false)
    expect(Authenticator.sameOrigin(base, "https://files.example.org/r4")).toBe(false)
    expect(Authenticator.sameOrigin(base, "https://fhir.example.org.evil.com/r4")).toBe(false)
    expect(Authenticator.sameOrigin(base, "//evil.com/x")).toBe(false)
    expect(Authenticator.sameOrigin("not a url", "https://fhir.example.org")).toBe(false)
  })

  it.effect("restrictToOrigin leaves requests to other origins without Authorization", () =>
    Effect.gen(function* () {
      const inner: Authenticator.Authenticator = {
        authorize: (req) => Effect.succeed(HttpClientRequest.bearerToken(req, "t")),
        invalidate: Effect.void,
        describe: "test",
      }
      const auth = Authenticator.restrictToOrigin(inner, "https://fhir.example.org/r4")
      expect(yield* header(auth, "https://fhir.example.org/r4/Patient")).toBe("Bearer t")
      expect(yield* header(auth, "https://bucket.example.com/export/1.ndjson")).toBeUndefined()
    }),
  )

  it.effect("AuthConfig reads nested, constant-case settings and keeps the secret redacted", () =>
    Effect.gen(function* () {
      const env = ConfigProvider.fromMap(
        new Map([
          ["FERRY_SOURCE_AUTH_KIND", "client-secret"],
          ["FERRY_SOURCE_AUTH_CLIENT_ID", "ferry-demo"],
          ["FERRY_SOURCE_AUTH_CLIENT_SECRET", "hunter2"],
          ["FERRY_SOURCE_AUTH_SECRET_METHOD", "post"],
          ["FERRY_SOURCE_AUTH_SCOPE", "system/*.rs"],
        ]),
        { pathDelim: "_" },
      ).pipe(ConfigProvider.nested("ferry"), ConfigProvider.constantCase)
      const settings = yield* Effect.withConfigProvider(env)(nestedAuth("source"))
      expect(settings.kind).toBe("client-secret")
      expect(settings.clientId).toEqual(Option.some("ferry-demo"))
      expect(settings.secretMethod).toBe("post")
      expect(settings.scopeVersion).toBe("v2")
      assert.isTrue(Option.isSome(settings.clientSecret))
      expect(Redacted.value(Option.getOrThrow(settings.clientSecret))).toBe("hunter2")
      expect(String(Option.getOrThrow(settings.clientSecret))).not.toContain("hunter2")
      // Nothing set: no authentication.
      const none = yield* Effect.withConfigProvider(ConfigProvider.fromMap(new Map()))(nestedAuth("target"))
      expect(none).toEqual(Authenticator.emptySettings("none"))
    }),
  )

  it.scoped(
    "a credential for a plain-http server on another machine is used with one warning; https and loopback none",
    () =>
      Effect.gen(function* () {
        const warnings: Array<string> = []
        const capture = Logger.make<unknown, void>(({ logLevel, message }) => {
          if (logLevel._tag === "Warning") warnings.push(String(message))
        })
        const bearer = (base: string) =>
          Effect.gen(function* () {
            const fs = yield* FileSystem.FileSystem
            const file = yield* fs.makeTempFileScoped()
            yield* fs.writeFileString(file, "tok\n")
            yield* fs.chmod(file, 0o600)
            return yield* Authenticator.fromSettings(
              { ...Authenticator.emptySettings("bearer"), bearerFile: Option.some(file) },
              base,
            ).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture)))
          })
        yield* bearer("https://fhir.example.org/r4")
        yield* bearer("http://127.0.0.1:8080/fhir")
        expect(warnings).toEqual([])
        yield* bearer("http://fhir.internal:8080/fhir")
        expect(warnings).toEqual([
          "http://fhir.internal:8080/fhir is plain http on another machine: the access token goes with every request unencrypted, as does the data; use the server's https address if it has one",
        ])
      }).pipe(Effect.provide(live)),
  )

  it.scoped("fromSettings validates what each kind needs with a Config error", () =>
    Effect.gen(function* () {
      const base = "https://fhir.example.org"
      const smart = yield* Effect.flip(Authenticator.fromSettings(Authenticator.emptySettings("smart"), base))
      assert.instanceOf(smart, AuthError)
      expect(smart.reason).toBe("Config")
      expect(smart.message).toContain("--auth smart needs --client-id")
      const bearer = yield* Effect.flip(
        Authenticator.fromSettings(Authenticator.emptySettings("bearer"), base),
      )
      expect(bearer.message).toContain("exactly one of --bearer-env")
      const secret = yield* Effect.flip(
        Authenticator.fromSettings(
          { ...Authenticator.emptySettings("client-secret"), clientId: Option.some("c") },
          base,
        ),
      )
      // the config file holds the name of the variable, never the secret: auth.clientSecretEnv
      expect(secret.message).toContain("also read auth.clientSecretEnv in a config file")
      // for one server of migrate or plan: that server's flag, variable and config key
      const source = yield* Effect.flip(
        Authenticator.fromSettings(Authenticator.emptySettings("bearer"), base, "read", "source"),
      )
      expect(source.message).toContain(
        "--source-auth bearer (or FERRY_SOURCE_AUTH=bearer, or source.auth.kind: bearer) needs exactly one of --source-bearer-env or --source-bearer-file (or FERRY_SOURCE_BEARER_ENV / FERRY_SOURCE_BEARER_FILE, or source.auth.bearerEnv / source.auth.bearerFile in a config file)",
      )
      const target = yield* Effect.flip(
        Authenticator.fromSettings(Authenticator.emptySettings("smart"), base, "write", "target"),
      )
      expect(target.message).toContain(
        "--target-auth smart (or FERRY_TARGET_AUTH=smart, or target.auth.kind: smart) needs --target-client-id (or FERRY_TARGET_CLIENT_ID, or target.auth.clientId in a config file)",
      )
      const none = yield* Authenticator.fromSettings(Authenticator.emptySettings("none"), base)
      expect(none.describe).toBe("no authentication")
      expect(yield* header(none, base)).toBeUndefined()
    }).pipe(Effect.provide(live)),
  )

  it.scopedLive(
    "secrets never reach the logs: key material, assertions, client secrets, tokens (Debug level)",
    () =>
      Effect.gen(function* () {
        const fs = yield* FileSystem.FileSystem
        const path = yield* Path.Path
        const lines: Array<string> = []
        const capture = Logger.make<unknown, void>(({ logLevel, message, annotations, cause, spans }) => {
          lines.push(
            [
              logLevel.label,
              JSON.stringify(message),
              JSON.stringify(Object.fromEntries(HashMap.toEntries(annotations))),
              List.toArray(spans)
                .map((s) => s.label)
                .join(","),
              Cause.isEmpty(cause) ? "" : Cause.pretty(cause, { renderErrorCause: true }),
            ].join(" "),
          )
        })

        const { privateJwk, publicJwks } = yield* Keys.generate("ES384")
        const dir = yield* fs.makeTempDirectoryScoped({ prefix: "ferry-auth-logs-" })
        const keyFile = path.join(dir, "key.jwk")
        yield* fs.writeFileString(keyFile, JSON.stringify(privateJwk), { mode: 0o600 })
        const srv = yield* TokenServer.make({
          clientId: "ferry-demo",
          jwks: publicJwks,
          secret: "s3cret-value",
        })

        const flow = Effect.gen(function* () {
          const smart = yield* Authenticator.fromSettings(
            {
              ...Authenticator.emptySettings("smart"),
              clientId: Option.some("ferry-demo"),
              keyFile: Option.some(keyFile),
            },
            srv.baseUrl,
          )
          yield* Effect.logDebug("authenticator", smart.describe)
          const req = yield* smart.authorize(HttpClientRequest.get(`${srv.baseUrl}/Patient`))
          // Even a careless log of the authorized request shows no token (platform header redaction).
          yield* Effect.logDebug("authorized request", req)
          yield* smart.invalidate
          yield* smart.authorize(HttpClientRequest.get(`${srv.baseUrl}/Patient`))
          const secret = yield* Authenticator.fromSettings(
            {
              ...Authenticator.emptySettings("client-secret"),
              clientId: Option.some("ferry-demo"),
              clientSecret: Option.some(Redacted.make("s3cret-value")),
            },
            srv.baseUrl,
          )
          yield* secret.authorize(HttpClientRequest.get(`${srv.baseUrl}/Patient`))
          const wrong = yield* Authenticator.fromSettings(
            {
              ...Authenticator.emptySettings("client-secret"),
              clientId: Option.some("ferry-demo"),
              clientSecret: Option.some(Redacted.make("wrong-s3cret-value")),
              secretMethod: "post",
            },
            srv.baseUrl,
          )
          yield* wrong.authorize(HttpClientRequest.get(`${srv.baseUrl}/Patient`)).pipe(
            Effect.tapErrorCause((cause) => Effect.logError("token request failed", cause)),
            Effect.flip,
          )
          const garbled = path.join(dir, "garbled.jwk")
          yield* fs.writeFileString(garbled, JSON.stringify({ ...privateJwk, x: privateJwk.y }))
          yield* Keys.loadPrivateKey(garbled).pipe(
            Effect.tapErrorCause((cause) => Effect.logError("key failed", cause)),
            Effect.flip,
          )
        })
        yield* flow.pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, capture)),
          Logger.withMinimumLogLevel(LogLevel.Debug),
        )

        const log = lines.join("\n")
        // The flow really ran and logged at Debug.
        expect(srv.issued).toHaveLength(3)
        expect(log).toContain("requesting an access token")
        expect(log).toContain("access token cached")
        expect(log).toContain("token request failed")
        expect(log).toContain("key failed")
        const secrets = [
          privateJwk.d!,
          ...srv.issued,
          ...srv.tokenRequests.flatMap((r) => [r.form.get("client_assertion"), r.form.get("client_secret")]),
          "s3cret-value",
        ].filter((s): s is string => typeof s === "string" && s.length > 0)
        expect(secrets.length).toBeGreaterThanOrEqual(6)
        for (const s of secrets) expect(log).not.toContain(s)
      }).pipe(Effect.provide(live)),
  )
})

const nestedAuth = (server: string) => Config.nested(Config.nested(Authenticator.AuthConfig, "auth"), server)
