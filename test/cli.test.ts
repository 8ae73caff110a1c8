import { execFile, spawn } from "node:child_process"
import * as NFS from "node:fs"
import * as Net from "node:net"
import * as OS from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"
import { ferryBin } from "./helpers/ferry.js"

const run = promisify(execFile)

describe("ferry binary", () => {
  it("prints its version", async () => {
    const { stdout } = await run(process.execPath, [ferryBin, "--version"])
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/)
  })

  it("the `ferry` command npm links: Node itself (no shell left), with glibc's malloc settings, the user's kept", async () => {
    const launcher = fileURLToPath(new URL("../apps/cli/bin/ferry", import.meta.url))
    const { stdout } = await run(launcher, ["--version"])
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/)
    for (const [env, expected] of [
      [{}, { MALLOC_MMAP_THRESHOLD_: "131072", MALLOC_ARENA_MAX: "2" }],
      [{ MALLOC_ARENA_MAX: "4" }, { MALLOC_MMAP_THRESHOLD_: "131072", MALLOC_ARENA_MAX: "4" }],
    ] as const) {
      const child = spawn(launcher, ["sandbox", "--port", "0"], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, MALLOC_MMAP_THRESHOLD_: undefined, MALLOC_ARENA_MAX: undefined, ...env },
      })
      try {
        // once it serves, the process is the CLI's
        await new Promise<void>((resolve, reject) => {
          child.stdout.once("data", () => resolve())
          child.once("exit", (code) => reject(new Error(`the sandbox exited (${code})`)))
        })
        expect(NFS.readFileSync(`/proc/${child.pid}/comm`, "utf8").trim()).toBe("node")
        const environ = new Map(
          NFS.readFileSync(`/proc/${child.pid}/environ`, "utf8")
            .split("\0")
            .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)] as const),
        )
        for (const [name, value] of Object.entries(expected)) expect(environ.get(name), name).toBe(value)
      } finally {
        child.kill("SIGTERM")
        await new Promise((resolve) => child.once("exit", resolve))
      }
    }
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
    // every command's own help, summary, seal and unseal too
    for (const command of ["summary", "seal", "unseal"]) {
      const bad = await run(process.execPath, [
        ferryBin,
        command,
        "/nonexistent/ferry-archive",
        "--out",
        "x",
      ]).then(
        () => undefined,
        (e: { code: number; stderr: string }) => e,
      )
      expect(bad?.code, command).toBe(2)
      expect(bad?.stderr, command).toContain(`ferry ${command} --help lists`)
    }
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

  it("SIGTERM while the CLI still loads: exit 130 and a sentence, not a silent 143 (nor a signal lost and the command run on)", async () => {
    // a server that takes connections and never answers: the export, once started, waits on it
    const server = Net.createServer(() => undefined)
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const port = (server.address() as Net.AddressInfo).port
    const out = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-signal-"))
    try {
      for (const signal of ["SIGTERM", "SIGINT"] as const) {
        const child = spawn(process.execPath, [
          ferryBin,
          "export",
          `http://127.0.0.1:${port}/fhir`,
          "--out",
          Path.join(out, signal),
        ])
        let stderr = ""
        child.stderr.on("data", (b: Buffer) => {
          stderr += String(b)
        })
        const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
        // once the process has read the bundle (Node's own start-up reads ≈ 0.25 MB): the launcher's handlers,
        // installed before that read, are in, and the bundle is still being compiled and run (or the command just
        // began: both answer with a sentence and 130). Not a CPU-time mark: Node's start-up alone took ≈ 0.1 s of
        // CPU here, and more on a slower machine.
        const bundle = NFS.statSync(Path.join(Path.dirname(ferryBin), "ferry.cjs")).size
        let read = 0
        const readSoFar = (): number => {
          try {
            return Number(/^rchar: (\d+)$/m.exec(NFS.readFileSync(`/proc/${child.pid}/io`, "utf8"))?.[1] ?? 0)
          } catch {
            // (a kernel that keeps /proc/<pid>/io from its parent: 0.4 s of CPU as the mark instead)
            const stat = NFS.readFileSync(`/proc/${child.pid}/stat`, "utf8")
            const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
            return Number(fields[11]) + Number(fields[12]) >= 40 ? bundle : 0
          }
        }
        for (let i = 0; i < 5000 && read < bundle; i++) {
          read = readSoFar()
          await new Promise((resolve) => setTimeout(resolve, 1))
        }
        expect(read, "the bundle was read before the signal").toBeGreaterThanOrEqual(bundle)
        child.kill(signal)
        const timer = setTimeout(() => child.kill("SIGKILL"), 15_000)
        const code = await exited
        clearTimeout(timer)
        expect(code, `${signal}: ${stderr}`).toBe(130)
        expect(stderr.trim().split("\n").at(-1)).toMatch(
          /^ferry: (interrupted while starting, before anything was done; run the same command again|export interrupted; run the same command again to resume)/,
        )
      }
    } finally {
      server.close()
      NFS.rmSync(out, { recursive: true, force: true })
    }
  }, 60_000)
})
