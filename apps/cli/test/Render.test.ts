import { ValidationError } from "@effect/cli"
import { HelpDoc } from "@effect/cli"
import { Error as PlatformError } from "@effect/platform"
import { ArchiveError } from "@ferry/archive/ArchiveError"
import { AuthError, FhirError } from "@ferry/core/Errors"
import { ExportError } from "@ferry/export/ExportError"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, FiberId, Logger } from "effect"
import * as Render from "../src/Render.js"

describe("Render", () => {
  it("a 403 Forbidden is an authorization failure, exit 3; other server answers exit 4", () => {
    const status = (n: number) => new FhirError({ reason: "Status", method: "GET", url: "u", status: n })
    assert.strictEqual(Render.codeOf(status(403)), 3)
    assert.strictEqual(Render.codeOf(status(404)), 4)
    assert.strictEqual(Render.codeOf(status(500)), 4)
  })

  it("a folder that is no Ferry archive is a wrong path (exit 2); a damaged or unwritable archive exit 5", () => {
    const archive = (reason: "NotAnArchive" | "Corrupt" | "Io") =>
      new ArchiveError({ reason, path: "seed", detail: "no manifest.json" })
    assert.strictEqual(Render.codeOf(archive("NotAnArchive")), 2)
    assert.strictEqual(Render.codeOf(archive("Corrupt")), 5)
    assert.strictEqual(Render.codeOf(archive("Io")), 5)
  })

  it("a private key file that cannot be used is configuration (exit 2); a refused credential is exit 3", () => {
    assert.strictEqual(
      Render.codeOf(new AuthError({ reason: "KeyInvalid", detail: "Key file k.jwk: missing" })),
      2,
    )
    assert.strictEqual(Render.codeOf(new AuthError({ reason: "Unauthorized", detail: "refused" })), 3)
    assert.strictEqual(Render.codeOf(new AuthError({ reason: "TokenRequest", detail: "invalid_client" })), 3)
  })

  it.effect("a library's log line: `ferry: warning: …` on stderr, one line, annotations in parentheses", () =>
    Effect.gen(function* () {
      const written: Array<string> = []
      const write = process.stderr.write
      process.stderr.write = ((chunk: string) => {
        written.push(chunk)
        return true
      }) as typeof process.stderr.write
      try {
        yield* Effect.logWarning("taking over a stale lock\nleft by pid 7").pipe(
          Effect.annotateLogs({ lock: "/a/.lock" }),
          Effect.provide(Logger.replace(Logger.defaultLogger, Render.logLine)),
        )
        yield* Effect.logInfo("retrying with v1 scopes").pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, Render.logLine)),
        )
      } finally {
        process.stderr.write = write
      }
      assert.deepStrictEqual(written, [
        "ferry: warning: taking over a stale lock left by pid 7 (lock: /a/.lock)\n",
        "ferry: info: retrying with v1 scopes\n",
      ])
    }),
  )

  it("a path flag @effect/cli died on (a part of it a file): exit 2 and a sentence, not a bug report", () => {
    const died = Cause.die(
      new PlatformError.SystemError({
        reason: "BadResource",
        module: "FileSystem",
        method: "access",
        pathOrDescriptor: "/tmp/afile/sub",
        description: "ENOTDIR: not a directory, access '/tmp/afile/sub'",
      }),
    )
    assert.strictEqual(Render.exitCode(died), 2)
    assert.strictEqual(
      Render.line(died),
      "ferry: the path /tmp/afile/sub cannot be used (ENOTDIR: a part of it is a file, not a folder); give another path",
    )
    // a key pasted where its path goes (too long a name): said, not shown
    const jwk = `{ "kty": "EC", "crv": "P-384", "d": "${"S".repeat(300)}" }`
    const pasted = Cause.die(
      new PlatformError.SystemError({
        reason: "Unknown",
        module: "FileSystem",
        method: "access",
        pathOrDescriptor: jwk,
        description: `ENAMETOOLONG: name too long, access '${jwk}'`,
      }),
    )
    assert.strictEqual(
      Render.line(pasted),
      "ferry: a value given as a file path is not one (not shown: the key or token itself?); give the path of the file that holds it",
    )
    // any other defect is still a bug
    assert.strictEqual(Render.exitCode(Cause.die(new Error("boom"))), 1)
    assert.include(Render.line(Cause.die(new Error("boom"))), "a bug in ferry")
  })

  it("maps failure families to the documented exit codes", () => {
    const code = (e: unknown) => Render.exitCode(Cause.fail(e))
    assert.strictEqual(code(new ExportError({ reason: "Config", detail: "x" })), 2)
    assert.strictEqual(code(new AuthError({ reason: "Config", detail: "x" })), 2)
    assert.strictEqual(code(ValidationError.missingValue(HelpDoc.p("x"))), 2)
    assert.strictEqual(code(new AuthError({ reason: "TokenRequest", detail: "x" })), 3)
    assert.strictEqual(code(new AuthError({ reason: "Unreachable", detail: "x" })), 4)
    assert.strictEqual(code(new FhirError({ reason: "Status", method: "GET", url: "u", status: 500 })), 4)
    assert.strictEqual(code(new ExportError({ reason: "CountMismatch", detail: "x" })), 4)
    assert.strictEqual(code(new ExportError({ reason: "Archive", detail: "x" })), 5)
    assert.strictEqual(code(new ArchiveError({ reason: "Locked", path: "/a", detail: "x" })), 5)
    assert.strictEqual(Render.exitCode(Cause.die(new Error("bug"))), 1)
    assert.strictEqual(Render.exitCode(Cause.interrupt(FiberId.none)), 130)
  })

  it("one line per failure, no stack", () => {
    const line = Render.line(
      Cause.fail(
        new ExportError({ reason: "Timeout", url: "https://h/s", detail: "did not finish\nin time" }),
      ),
    )
    assert.strictEqual(line, "ferry: https://h/s: did not finish in time")
    assert.match(Render.line(Cause.die(new Error("boom\n  at x"))), /^ferry: unexpected failure .*: boom$/)
    // data nested deeper than a recursive walk can go: said as the data's problem, exit 5, not a bug report
    let overflow: unknown
    const deep = (n: number): number => (n === 0 ? 0 : 1 + deep(n - 1))
    try {
      deep(1e7)
    } catch (e) {
      overflow = e
    }
    assert.match(
      Render.line(Cause.die(overflow)),
      /^ferry: a resource in the data is nested thousands of levels deep/,
    )
    assert.strictEqual(Render.exitCode(Cause.die(overflow)), 5)
  })

  it("a resumable command that gave up on a failing server says the rerun goes on; other failures do not", () => {
    const busy = Cause.fail(new FhirError({ reason: "Status", method: "POST", url: "u", status: 500 }))
    const wrong = Cause.fail(
      new FhirError({ reason: "Transport", method: "GET", url: "u", detail: "ECONNREFUSED" }),
    )
    assert.match(Render.lineFor(busy, "import"), /run the same command again to go on\)$/)
    assert.match(Render.lineFor(busy, "migrate"), /run the same command again to go on\)$/)
    assert.notMatch(Render.lineFor(busy, "verify"), /run the same command again/)
    assert.notMatch(Render.lineFor(wrong, "export"), /run the same command again/)
  })

  it("after a command line @effect/cli could not read, points at the command's --help", () => {
    assert.strictEqual(
      Render.usageHint("import"),
      "ferry: the command line could not be read; ferry import --help lists the flags and the values they take",
    )
    assert.include(Render.usageHint("nosuch"), "; ferry --help lists")
    // a misspelt flag: the command's nearest one
    assert.include(
      Render.usageHint("migrate", "Received unknown argument: '--form'", undefined, [
        "--from",
        "--to",
        "--archive",
      ]),
      "(Received unknown argument: '--form'; did you mean --from?); ferry migrate --help lists",
    )
    assert.notInclude(
      Render.usageHint("migrate", "Received unknown argument: '--zzzzzz'", undefined, ["--from", "--to"]),
      "did you mean",
    )
    // a flag given twice: said so, not "did you mean" the same flag; @effect/cli's "a integer" mended
    assert.strictEqual(
      Render.usageHint("export", "Received unknown argument: '--out'", undefined, ["--out", "--type"]),
      "ferry: the command line could not be read (--out is given twice; give it once); ferry export --help lists the flags and the values they take",
    )
    assert.include(Render.usageHint("export", "'abc' is not a integer"), "'abc' is not an integer")
    // keys has a command of its own: its flags are under it, and a misspelt one is said as such
    assert.include(
      Render.usageHint("keys", "Expected to find option: '--out'", "generate"),
      "; ferry keys generate --help lists",
    )
    assert.strictEqual(
      Render.usageHint("keys", "Invalid subcommand for ferry - use one of 'demo', 'export'", "genrate"),
      'ferry: ferry keys has one command, generate (not "genrate"); ferry keys generate --help lists its flags',
    )
    assert.include(Render.usageHint(undefined), "; ferry --help lists")
    // the parse message again on the last line, so that it says what went wrong
    assert.strictEqual(
      Render.usageHint("export", "Expected to find option: '--out'"),
      "ferry: the command line could not be read (Expected to find option: '--out'); ferry export --help lists the flags and the values they take",
    )
  })
})
