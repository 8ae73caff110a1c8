import { FileSystem, HttpClientRequest, Path } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, expect, it } from "@effect/vitest"
import { AuthError } from "@ferry/core/Errors"
import { ConfigProvider, Effect, Logger } from "effect"
import type { Authenticator } from "../../src/Authenticator.js"
import * as StaticBearer from "../../src/Authenticator/StaticBearer.js"

const header = (auth: Authenticator) =>
  auth
    .authorize(HttpClientRequest.get("https://fhir.example.org/Patient"))
    .pipe(Effect.map((r) => r.headers.authorization))

const configError = (error: unknown, ...words: Array<string>) => {
  assert.instanceOf(error, AuthError)
  expect(error.reason).toBe("Config")
  for (const w of words) expect(error.message).toContain(w)
}

describe("StaticBearer", () => {
  it.scoped("reads a trimmed token from an environment variable (process environment by default)", () =>
    Effect.gen(function* () {
      const name = `FERRY_TEST_BEARER_${process.pid}`
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          process.env[name] = "  env-token-1 \n"
        }),
        () =>
          Effect.sync(() => {
            delete process.env[name]
          }),
      )
      const auth = yield* StaticBearer.make({ env: name })
      expect(yield* header(auth)).toBe("Bearer env-token-1")
      expect(auth.describe).toBe(`static bearer token (from environment variable ${name})`)
      const fromMap = yield* StaticBearer.make(
        { env: "MY_TOKEN" },
        { environment: ConfigProvider.fromMap(new Map([["MY_TOKEN", "map-token"]])) },
      )
      expect(yield* header(fromMap)).toBe("Bearer map-token")
    }).pipe(Effect.provide(NodeContext.layer)),
  )

  it.scoped("reads a trimmed token from a file and re-reads it after invalidate", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "ferry-bearer-" })
      const file = path.join(dir, "token")
      yield* fs.writeFileString(file, "file-token-1\n", { mode: 0o600 })
      const auth = yield* StaticBearer.make({ file })
      expect(yield* header(auth)).toBe("Bearer file-token-1")
      yield* fs.writeFileString(file, "file-token-2\n")
      expect(yield* header(auth)).toBe("Bearer file-token-1")
      yield* auth.invalidate
      expect(yield* header(auth)).toBe("Bearer file-token-2")
      expect(auth.describe).toBe(`static bearer token (from file ${file})`)
    }).pipe(Effect.provide(NodeContext.layer)),
  )

  it.scoped("a token file others may read is used, with one warning that says to chmod 600 it", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "ferry-bearer-" })
      const warnings: Array<string> = []
      const capture = Logger.make<unknown, void>(({ logLevel, message }) => {
        if (logLevel._tag === "Warning") warnings.push(String(message))
      })
      const withLogs = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        effect.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture)))
      const open = path.join(dir, "open-token")
      yield* fs.writeFileString(open, "file-token\n")
      yield* fs.chmod(open, 0o644)
      expect(yield* header(yield* withLogs(StaticBearer.make({ file: open })))).toBe("Bearer file-token")
      expect(warnings).toEqual([
        `the bearer token file ${open} may be read by other users (mode 0644); chmod 600 it`,
      ])
      const closed = path.join(dir, "closed-token")
      yield* fs.writeFileString(closed, "file-token\n", { mode: 0o600 })
      yield* fs.chmod(closed, 0o600)
      yield* withLogs(StaticBearer.make({ file: closed }))
      expect(warnings).toHaveLength(1)
    }).pipe(Effect.provide(NodeContext.layer)),
  )

  it.scoped("a missing or empty token is a Config error with a clear sentence", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      const empty = ConfigProvider.fromMap(new Map([["EMPTY", "   "]]))
      configError(
        yield* Effect.flip(StaticBearer.make({ env: "FERRY_NO_SUCH_VARIABLE" }, { environment: empty })),
        "The environment variable $FERRY_NO_SUCH_VARIABLE is not set or empty",
      )
      // the token itself typed where its variable's name goes: never echoed
      const token = "eyJhbGciOiJSUzM4NCJ9.eyJzdWIiOiJmZXJyeSJ9.c2lnbmF0dXJl"
      const typed = yield* Effect.flip(StaticBearer.make({ env: token }, { environment: empty }))
      configError(typed, "give the NAME of the environment variable")
      expect(typed.message).not.toContain(token)
      // a generated secret of letters and digits only is not taken for a name either
      const generated = "mK3Jp7Xq9LwZ2vB8nR4tY6uI1oP5aS0d"
      const opaque = yield* Effect.flip(StaticBearer.make({ env: generated }, { environment: empty }))
      expect(opaque.message).not.toContain(generated)
      configError(yield* Effect.flip(StaticBearer.make({ env: "EMPTY" }, { environment: empty })), "EMPTY")

      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "ferry-bearer-" })
      const missing = path.join(dir, "missing")
      configError(yield* Effect.flip(StaticBearer.make({ file: missing })), missing, "does not exist")
      // the token itself pasted where its file's path goes: never echoed
      const pasted = yield* Effect.flip(StaticBearer.make({ file: token }))
      configError(pasted, "is not a file path (not shown: the token itself?)")
      expect(pasted.message).not.toContain(token)
      // an opaque token (Google's ya29.…) names no file: its length is said, not the token
      const google = `ya29.${"a0AfH6SMBx".repeat(20)}`
      const named = yield* Effect.flip(StaticBearer.make({ file: google }))
      configError(named, `names no file (a value of ${google.length} characters, not shown`)
      expect(named.message).not.toContain(google)
      const blank = path.join(dir, "blank")
      yield* fs.writeFileString(blank, "\n\n")
      configError(yield* Effect.flip(StaticBearer.make({ file: blank })), blank, "is empty")
    }).pipe(Effect.provide(NodeContext.layer)),
  )

  it.scoped(
    "a token with characters no bearer token has (two lines, a space, a control character) is a Config error naming where it is",
    () =>
      Effect.gen(function* () {
        const fs = yield* FileSystem.FileSystem
        const path = yield* Path.Path
        const dir = yield* fs.makeTempDirectoryScoped({ prefix: "ferry-bearer-" })
        const twoLines = path.join(dir, "two-lines")
        yield* fs.writeFileString(twoLines, "eyJhbGciOi.first-line\nsecond-line\n")
        const error = yield* Effect.flip(StaticBearer.make({ file: twoLines }))
        configError(error)
        expect(error.message).toBe(
          `The token in ${twoLines} holds characters a bearer token cannot contain (a line break); put the token alone on one line`,
        )
        expect(error.message).not.toContain("second-line")

        const environment = ConfigProvider.fromMap(
          new Map([
            ["SPACED", "abc def"],
            ["CONTROL", "abc\u0001def"],
            ["QUOTED", "\u201cabcdef\u201d"],
          ]),
        )
        const spaced = yield* Effect.flip(StaticBearer.make({ env: "SPACED" }, { environment }))
        configError(spaced)
        expect(spaced.message).toBe(
          "The environment variable $SPACED holds characters a bearer token cannot contain (a space); set it to the token alone",
        )
        configError(
          yield* Effect.flip(StaticBearer.make({ env: "CONTROL" }, { environment })),
          "a control character",
        )
        configError(
          yield* Effect.flip(StaticBearer.make({ env: "QUOTED" }, { environment })),
          "outside ASCII",
        )

        // what tokens are made of passes: a JWT, base64 with padding, opaque tokens with other visible ASCII
        const ok = ConfigProvider.fromMap(new Map([["OK", "eyJ0.eyJz-_~.c2ln+/==|a:b"]]))
        const auth = yield* StaticBearer.make({ env: "OK" }, { environment: ok })
        expect(yield* header(auth)).toBe("Bearer eyJ0.eyJz-_~.c2ln+/==|a:b")
        expect(auth.refusedHint).toBe(
          "the token may have expired or be meant for another server: set $OK to a token this server accepts",
        )
      }).pipe(Effect.provide(NodeContext.layer)),
  )
})
