import { execFile } from "node:child_process"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"
import { ferryBin } from "./helpers/ferry.js"

const run = promisify(execFile)

describe("ferry binary", () => {
  it("prints its version", async () => {
    const { stdout } = await run(process.execPath, [ferryBin, "--version"])
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/)
  })

  it("prints help naming the tool", async () => {
    const { stdout } = await run(process.execPath, [ferryBin, "--help"])
    expect(stdout).toContain("FHIR R4")
    // an overview a person can read: every command on a line of its own, no line wider than a wide terminal,
    // the same for `ferry` and `ferry -h`
    for (const command of [
      "plan",
      "migrate",
      "export",
      "import",
      "verify",
      "keys generate",
      "sandbox",
      "demo",
    ])
      expect(stdout).toMatch(new RegExp(`^  ${command} +[A-Z]`, "m"))
    expect(Math.max(...stdout.split("\n").map((l) => l.length))).toBeLessThanOrEqual(120)
    expect((await run(process.execPath, [ferryBin])).stdout).toBe(stdout)
    expect((await run(process.execPath, [ferryBin, "-h"])).stdout).toBe(stdout)
    // a command's own help, piped (not a terminal): plain text, no colour or bold codes
    const sub = await run(process.execPath, [ferryBin, "import", "--help"])
    expect(sub.stdout).toContain("USAGE")
    expect(sub.stdout).toContain("--bundle-size")
    expect(sub.stdout).not.toContain(String.fromCharCode(27))
  })
})

describe("sizes on the command line", () => {
  /** `ferry import` of an archive that is not there with this `--max-bundle-bytes`: its exit code and stderr. */
  const importWith = (size: string) =>
    run(process.execPath, [
      ferryBin,
      "import",
      "/nonexistent-archive",
      "--to",
      "http://127.0.0.1:9/fhir",
      "--max-bundle-bytes",
      size,
    ]).then(
      () => ({ code: 0, stderr: "" }),
      (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
    )

  it("--max-bundle-bytes takes a unit (1MiB) and refuses what is not a size, exit 2", async () => {
    // a size that parses gets as far as the archive, which is not there
    const missing = await importWith("1MiB")
    expect(missing.code).not.toBe(0)
    expect(missing.stderr).not.toContain("max-bundle-bytes")
    const refused = await importWith("lots")
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain("--max-bundle-bytes lots is not a size")
  })

  it("a misspelt flag: exit 2, the command's nearest flag named", async () => {
    const failed = await run(process.execPath, [
      ferryBin,
      "migrate",
      "--form",
      "http://a/fhir",
      "--to",
      "http://b/fhir",
    ]).then(
      () => undefined,
      (e: { code: number; stderr: string }) => e,
    )
    expect(failed?.code).toBe(2)
    expect(failed?.stderr).toContain(
      "(Received unknown argument: '--form'; did you mean --from?); ferry migrate --help lists",
    )
  })

  it("--log-level anywhere on the line, also as --log-level=…; a level it does not take named as such", async () => {
    const failure = (args: ReadonlyArray<string>) =>
      run(process.execPath, [ferryBin, ...args]).then(
        () => undefined,
        (e: { code: number; stderr: string }) => e,
      )
    // nothing listens on port 1: the command ran (it reached the network), the line was read
    for (const level of [["--log-level", "debug"], ["--log-level=debug"]]) {
      const after = await failure([
        "plan",
        "--from",
        "http://127.0.0.1:1/fhir",
        "--to",
        "http://127.0.0.1:2/fhir",
        ...level,
      ])
      expect(after?.code, after?.stderr).toBe(4)
      expect(after?.stderr).toContain("could not reach the server")
    }
    const bogus = await failure(["verify", "--target", "http://127.0.0.1:1/fhir", "--log-level", "loud"])
    expect(bogus?.code).toBe(2)
    expect(bogus?.stderr).toContain(
      "(--log-level takes all, trace, debug, info, warning, error, fatal or none)",
    )
  })
})
