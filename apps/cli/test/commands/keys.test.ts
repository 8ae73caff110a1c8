import { Command } from "@effect/cli"
import { FileSystem, Path } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, expect, it } from "@effect/vitest"
import * as Keys from "@ferry/auth/Keys"
import { AuthError } from "@ferry/core/Errors"
import { type Console, Effect } from "effect"
import { keys } from "../../src/commands/keys.js"

const cli = Command.run(keys, { name: "ferry keys", version: "test" })

/** Run `ferry keys …` with stdout and stderr captured. */
const runKeys = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const stdout: Array<string> = []
    const stderr: Array<string> = []
    const base = yield* Effect.console
    const capture: Console.Console = {
      ...base,
      log: (...xs: ReadonlyArray<unknown>) => Effect.sync(() => void stdout.push(xs.join(" "))),
      error: (...xs: ReadonlyArray<unknown>) => Effect.sync(() => void stderr.push(xs.join(" "))),
    }
    const exit = yield* Effect.exit(cli(["node", "ferry", ...args]).pipe(Effect.withConsole(capture)))
    return { exit, stdout: stdout.join("\n"), stderr: stderr.join("\n") }
  })

describe("ferry keys generate", () => {
  for (const alg of ["ES384", "RS384"] as const) {
    it.scoped(`writes a 0600 private ${alg} JWK that loads, and prints a public JWKS without "d"`, () =>
      Effect.gen(function* () {
        const fs = yield* FileSystem.FileSystem
        const path = yield* Path.Path
        const dir = yield* fs.makeTempDirectoryScoped({ prefix: "ferry-keys-" })
        const out = path.join(dir, "key.jwk")
        const { exit, stdout, stderr } = yield* runKeys(["generate", "--alg", alg, "--out", out])
        assert.isTrue(exit._tag === "Success", String(exit))
        expect((yield* fs.stat(out)).mode & 0o777).toBe(0o600)
        const key = yield* Keys.loadPrivateKey(out)
        expect(key.alg).toBe(alg)

        const jwks = JSON.parse(stdout) as { keys: Array<Record<string, unknown>> }
        expect(jwks.keys).toHaveLength(1)
        expect(jwks.keys[0]).toMatchObject({ kid: key.kid, alg, use: "sig" })
        for (const member of ["d", "p", "q", "dp", "dq", "qi"])
          expect(jwks.keys[0]).not.toHaveProperty(member)
        expect(stderr).toContain(`kid ${key.kid}`)
        const privateJwk = JSON.parse(yield* fs.readFileString(out)) as { d: string }
        expect(stdout).not.toContain(privateJwk.d)
        expect(stderr).not.toContain(privateJwk.d)
      }).pipe(Effect.provide(NodeContext.layer)),
    )
  }

  it.scoped("refuses to overwrite an existing file unless --force, and --force leaves mode 0600", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "ferry-keys-" })
      const out = path.join(dir, "key.jwk")
      yield* fs.writeFileString(out, "precious", { mode: 0o644 })

      const refused = yield* runKeys(["generate", "--out", out])
      assert.isTrue(refused.exit._tag === "Failure")
      if (refused.exit._tag === "Failure") {
        const error = refused.exit.cause._tag === "Fail" ? refused.exit.cause.error : undefined
        assert.instanceOf(error, AuthError)
        expect(error.message).toContain(`${out} already exists; pass --force`)
      }
      expect(yield* fs.readFileString(out)).toBe("precious")
      expect(refused.stdout).toBe("")

      const forced = yield* runKeys(["generate", "--out", out, "--force"])
      assert.isTrue(forced.exit._tag === "Success")
      expect((yield* fs.stat(out)).mode & 0o777).toBe(0o600)
      expect((yield* Keys.loadPrivateKey(out)).alg).toBe("ES384")
    }).pipe(Effect.provide(NodeContext.layer)),
  )

  it.effect("a key pasted where --out goes is refused without being shown", () =>
    Effect.gen(function* () {
      const pasted =
        "-----BEGIN PRIVATE KEY-----\nMIG2AgEAMBAGByqGSM49AgEGBSuBBAAi/secretpart\n-----END PRIVATE KEY-----"
      const { exit, stdout, stderr } = yield* runKeys(["generate", "--out", pasted])
      assert.isTrue(exit._tag === "Failure")
      if (exit._tag === "Failure") {
        const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
        assert.instanceOf(error, AuthError)
        expect(error.message).toContain("--out is not a file path (not shown: a key pasted there?)")
        expect(error.message).not.toContain("secretpart")
      }
      expect(`${stdout}${stderr}`).not.toContain("secretpart")
    }).pipe(Effect.provide(NodeContext.layer)),
  )
})
