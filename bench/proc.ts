/** Process figures the benches read from /proc (Linux), and the sandbox as a process of its own. */
import { type ChildProcessByStdio, spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import type { Readable } from "node:stream"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"

/** utime + stime in seconds from a /proc stat file (clock ticks of 1/100 s on Linux). */
const cpuOf = (statFile: string): number => {
  let stat: string
  try {
    stat = readFileSync(statFile, "utf8")
  } catch {
    return Number.NaN
  }
  // the fields after the command name, which is in parentheses and may hold spaces: utime and stime are the
  // 14th and 15th fields of the line, the 12th and 13th after the name
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/** CPU seconds (user + system) of a process so far, all its threads (GC helpers, the libuv pool) included. */
export const processCpuSecs = (pid: number | undefined): number =>
  pid === undefined ? Number.NaN : cpuOf(`/proc/${pid}/stat`)

/**
 * CPU seconds of a process's main thread so far: for a Node server, what its JavaScript (and SQLite, which
 * runs there) needs; it cannot exceed the wall time, which the whole process's CPU can.
 */
export const mainThreadCpuSecs = (pid: number | undefined): number =>
  pid === undefined ? Number.NaN : cpuOf(`/proc/${pid}/task/${pid}/stat`)

/** The CLI the benches run: the built bundle's launcher. */
export const BIN: string = fileURLToPath(new URL("../apps/cli/dist/bin.js", import.meta.url))

export interface SandboxProcess {
  readonly baseUrl: string
  readonly pid: number | undefined
  /** Seconds from the spawn to its base URL on stdout (generating or seeding included). */
  readonly startSecs: number
  /** CPU seconds (user + system, all threads) the process has used so far. */
  readonly cpuSecs: () => number
  /** SIGTERM, then its exit. */
  readonly stop: () => Promise<void>
}

/**
 * What a child process writes, collected as it comes: stdout whole, stderr whole or only its last `stderrTail`
 * characters (an error message's worth, for a process that logs a lot).
 */
export const collect = (
  child: ChildProcessByStdio<null, Readable, Readable>,
  stderrTail = Number.POSITIVE_INFINITY,
): { readonly stdout: () => string; readonly stderr: () => string } => {
  let stdout = ""
  let stderr = ""
  child.stdout.on("data", (c: Buffer) => {
    stdout += c.toString()
  })
  child.stderr.on("data", (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-stderrTail)
  })
  return { stdout: () => stdout, stderr: () => stderr }
}

/** `ferry sandbox --port 0 …` as its own process (its CPU and memory are not the bench's); once it printed its base URL. */
export const startSandboxProcess = (args: ReadonlyArray<string>): Promise<SandboxProcess> =>
  new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint()
    const child = spawn(process.execPath, [BIN, "sandbox", "--port", "0", ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    })
    const { stderr } = collect(child, 4000)
    const exited = new Promise<void>((r) => child.on("exit", () => r()))
    const onEarlyExit = (code: number | null) =>
      reject(new Error(`the sandbox exited (${code}) before printing its URL: ${stderr()}`))
    child.on("exit", onEarlyExit)
    createInterface({ input: child.stdout }).once("line", (line) => {
      child.off("exit", onEarlyExit)
      resolve({
        baseUrl: line.trim(),
        pid: child.pid,
        startSecs: Number(process.hrtime.bigint() - t0) / 1e9,
        cpuSecs: () => processCpuSecs(child.pid),
        stop: () => {
          child.kill("SIGTERM")
          return exited
        },
      })
    })
  })

/**
 * The environment the `ferry` command (apps/cli/bin/ferry, the script npm links) gives Node: this process's, with the
 * script's `: "${NAME=value}"` defaults (glibc's malloc settings) for the names not set already, as the script does;
 * read from the script, so a bench that runs Node itself measures what users run.
 */
export const ferryEnv = (): NodeJS.ProcessEnv => {
  const script = readFileSync(new URL("../apps/cli/bin/ferry", import.meta.url), "utf8")
  const defaults = [...script.matchAll(/^: "\$\{(\w+)=([^}]*)\}"$/gm)].map((m) => [m[1]!, m[2]!] as const)
  if (defaults.length === 0)
    throw new Error(`apps/cli/bin/ferry sets no \`: "\${NAME=value}"\` default any more`)
  return { ...Object.fromEntries(defaults), ...process.env }
}
