import { type ChildProcess, spawn } from "node:child_process"
import { once } from "node:events"
import { fileURLToPath } from "node:url"

/** The bundled CLI, built by `npm run build` (the root `npm test` builds first). */
export const ferryBin: string = fileURLToPath(new URL("../../apps/cli/dist/bin.js", import.meta.url))

/** A path in `../shared/data` (never copied into the repository). */
export const sharedData = (name: string): string =>
  fileURLToPath(new URL(`../../../shared/data/${name}`, import.meta.url))

export interface RunningSandbox {
  readonly baseUrl: string
  readonly child: ChildProcess
  /** Sends `signal` and resolves with the exit code once the process has ended. */
  readonly stop: (signal?: NodeJS.Signals) => Promise<number | null>
  readonly stderr: () => string
}

/** Starts `ferry sandbox …` as a process and resolves once it has printed its base URL. */
export const startSandboxProcess = async (args: ReadonlyArray<string>): Promise<RunningSandbox> => {
  const child = spawn(process.execPath, [ferryBin, "sandbox", "--port", "0", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  })
  let stdout = ""
  let stderr = ""
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString()
  })
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>
  const baseUrl = await new Promise<string>((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString()
      const nl = stdout.indexOf("\n")
      if (nl >= 0) resolve(stdout.slice(0, nl).trim())
    })
    exited.then(([code]) =>
      reject(new Error(`ferry sandbox exited (${code}) before printing its URL: ${stderr}`)),
    )
  })
  return {
    baseUrl,
    child,
    stderr: () => stderr,
    stop: async (signal = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      const [code] = await exited
      return code
    },
  }
}
