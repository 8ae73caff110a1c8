import { type ChildProcess, spawn } from "node:child_process"
import { createHash, generateKeyPairSync, randomUUID, sign } from "node:crypto"
import { once } from "node:events"
import * as NFS from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { gunzipSync } from "node:zlib"
import type { SandboxConfigInput } from "@ferry/sandbox/Config"
import { routeKind } from "@ferry/sandbox/Faults"
import * as Sandbox from "@ferry/sandbox/Sandbox"
import { Effect, Exit, Scope } from "effect"

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

// ---------------------------------------------------------------------------------------------------
// `ferry` as a process against sandboxes started in this process (shared by the export e2e tests).
// ---------------------------------------------------------------------------------------------------

export interface FerryRun {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

export interface FerryRunOptions {
  /** Extra environment variables. */
  readonly env?: Record<string, string>
  /** Called with all stderr so far on every chunk (may kill the child). */
  readonly onStderr?: (text: string, child: ChildProcess) => void
  /** The working directory (default: this process's). */
  readonly cwd?: string
}

/** Runs the bundled CLI as a process and resolves once it has ended. */
export const runFerry = (args: ReadonlyArray<string>, options: FerryRunOptions = {}): Promise<FerryRun> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [ferryBin, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...options.env },
      ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString()
    })
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString()
      options.onStderr?.(stderr, child)
    })
    child.on("error", reject)
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }))
  })

/** The last non-empty stderr line (where `ferry` reports a failure). */
export const lastLine = (text: string): string => text.trim().split("\n").at(-1) ?? ""

/**
 * A port below the range the system gives outgoing connections (often 32768–60999) that nothing listens on
 * now: for a server a test starts later, which an outgoing connection of the process under test could
 * otherwise hold by then.
 */
export const freeFixedPort = async (): Promise<number> => {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    const free = await new Promise<boolean>((resolve) => {
      const server = Net.createServer()
      server.once("error", () => resolve(false))
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)))
    })
    if (free) return port
  }
}

/**
 * Writes `count` DocumentReferences `down-<i>` to a sandbox, each with an attachment on 127.0.0.1:`port`
 * (a port where nothing listens: a dead link).
 */
export const putDeadLinkDocuments = async (baseUrl: string, port: number, count: number): Promise<void> => {
  for (let i = 0; i < count; i++) {
    const r = await fetch(`${baseUrl}/DocumentReference/down-${i}`, {
      method: "PUT",
      headers: { "content-type": "application/fhir+json" },
      body: JSON.stringify({
        resourceType: "DocumentReference",
        id: `down-${i}`,
        status: "current",
        content: [{ attachment: { contentType: "text/plain", url: `http://127.0.0.1:${port}/doc/${i}` } }],
      }),
    })
    if (r.status >= 300) throw new Error(`PUT DocumentReference/down-${i}: ${r.status}`)
  }
}

/** A port nothing listens on now (the system's pick on 127.0.0.1, closed again). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

export interface InProcessSandbox {
  readonly handle: Sandbox.SandboxHandle
  readonly close: () => Promise<void>
}

/**
 * Starts a sandbox in this process (port 0); `close` shuts it down.
 *
 * Its `$export` and `$import` status polls answer `Retry-After: 0` unless the test's `bulk` says otherwise (the
 * sandbox's own default, 1 s, is a real server's pace: each export and each `$import` of a test waited it out,
 * where the client's floor between polls is 100 ms).
 */
export const startSandbox = async (
  config: SandboxConfigInput,
  plugins?: ReadonlyArray<Sandbox.Plugin>,
): Promise<InProcessSandbox> => {
  const scope = await Effect.runPromise(Scope.make())
  const quick = { ...config, bulk: { retryAfterSeconds: 0, ...(config.bulk as object | undefined) } }
  const handle = await Effect.runPromise(
    Sandbox.start(quick, plugins ? { plugins } : {}).pipe(Scope.extend(scope)),
  )
  return { handle, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

/** One request the sandbox received (path below the FHIR base); `status` once it was answered. */
export interface RecordedRequest {
  readonly method: string
  readonly path: string
  /** The query string, with its `?` ("" when none). */
  readonly search: string
  readonly authorization: string | undefined
  readonly range: string | undefined
  /** Epoch ms when the request arrived. */
  readonly at: number
  status: number | undefined
  /** Epoch ms when the handler returned (the answer was sent or the connection reset). */
  doneAt: number | undefined
}

/**
 * A sandbox plugin recording every request; put it before `defaultPlugins` so it also sees what the
 * fault switches answer (429, 5xx, 410, 401).
 */
export const requestRecorder = (): {
  readonly plugin: Sandbox.Plugin
  readonly requests: Array<RecordedRequest>
} => {
  const requests: Array<RecordedRequest> = []
  const plugin: Sandbox.Plugin = (router) =>
    router.use(async (ctx, next) => {
      const header = (name: string) => {
        const v = ctx.req.headers[name]
        return typeof v === "string" ? v : undefined
      }
      const entry: RecordedRequest = {
        method: ctx.req.method ?? "GET",
        path: ctx.path,
        search: ctx.url.search,
        authorization: header("authorization"),
        range: header("range"),
        at: Date.now(),
        status: undefined,
        doneAt: undefined,
      }
      requests.push(entry)
      try {
        await next()
      } finally {
        entry.status = ctx.res.statusCode
        entry.doneAt = Date.now()
      }
    })
  return { plugin, requests }
}

/** The route kind of a recorded request, as the sandbox's fault switches count them. */
export const routeOf = (r: Pick<RecordedRequest, "method" | "path">): string =>
  routeKind(r.method, r.path) ?? "other"

/** Lines of `<out>/events.ndjson`. */
export const exportEvents = (out: string): Array<{ readonly event: string; readonly [k: string]: unknown }> =>
  NFS.readFileSync(Path.join(out, "events.ndjson"), "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as { event: string })

export interface ArchiveFileEntry {
  readonly path: string
  readonly type: string
  readonly count: number
  readonly sha256: string
}

export interface ArchiveManifest {
  readonly complete: boolean
  readonly files: ReadonlyArray<ArchiveFileEntry>
  readonly deleted: ReadonlyArray<ArchiveFileEntry>
  readonly errors: ReadonlyArray<ArchiveFileEntry>
}

/** `<out>/manifest.json`. */
export const archiveManifest = (out: string): ArchiveManifest =>
  JSON.parse(NFS.readFileSync(Path.join(out, "manifest.json"), "utf8")) as ArchiveManifest

/** Resources per type in the archive's data files, from `manifest.json`. */
export const archiveCounts = (out: string): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const f of archiveManifest(out).files) counts[f.type] = (counts[f.type] ?? 0) + f.count
  return counts
}

/**
 * Every file `manifest.json` lists whose bytes do not hash to its `sha256` or whose line count differs
 * from its `count` (an empty array: the archive is consistent).
 */
export const archiveMismatches = (out: string): Array<string> => {
  const m = archiveManifest(out)
  const bad: Array<string> = []
  for (const f of [...m.files, ...m.deleted, ...m.errors]) {
    const bytes = NFS.readFileSync(Path.join(out, f.path))
    const sha = createHash("sha256").update(bytes).digest("hex")
    const lines = (f.path.endsWith(".gz") ? gunzipSync(bytes) : bytes)
      .toString("utf8")
      .split("\n")
      .filter((l) => l !== "").length
    if (sha !== f.sha256) bad.push(`${f.path}: sha256 ${sha} ≠ ${f.sha256}`)
    if (lines !== f.count) bad.push(`${f.path}: ${lines} lines ≠ count ${f.count}`)
  }
  return bad
}

/** `GET [base]/<type>?_summary=count` for each type → `Bundle.total` (types with 0 left out). */
export const serverCounts = async (
  baseUrl: string,
  types: ReadonlyArray<string>,
  headers: Record<string, string> = {},
): Promise<Record<string, number>> => {
  const counts: Record<string, number> = {}
  for (const type of types) {
    const r = await fetch(`${baseUrl}/${type}?_summary=count`, {
      headers: { accept: "application/fhir+json", ...headers },
    })
    if (r.status !== 200) throw new Error(`GET ${type}?_summary=count answered ${r.status}`)
    const total = ((await r.json()) as { total?: number }).total ?? 0
    if (total > 0) counts[type] = total
  }
  return counts
}

/** Replaces a sandbox's fault switches (and resets its fault counters). */
export const setSandboxFaults = async (baseUrl: string, faults: unknown): Promise<void> => {
  const r = await fetch(`${baseUrl}/_sandbox/faults`, { method: "PUT", body: JSON.stringify(faults) })
  if (r.status !== 204) throw new Error(`PUT /_sandbox/faults answered ${r.status}: ${await r.text()}`)
}

export interface SmartTestClient {
  readonly clientId: string
  /** A private JWK file (mode 0600) for `--key`. */
  readonly keyFile: string
  /** The private key's `d` (to check it never reaches any output). */
  readonly secret: string
  /** For the sandbox's `auth.clients`. */
  readonly registration: {
    readonly clientId: string
    readonly jwks: { readonly keys: ReadonlyArray<unknown> }
    readonly scopes: ReadonlyArray<string>
  }
  /** `--auth smart --client-id … --key …` */
  readonly args: ReadonlyArray<string>
  /** Gets an access token from `[base]/auth/token` (signing the client assertion by hand). */
  readonly token: (baseUrl: string) => Promise<string>
}

/** A SMART Backend Services client with a fresh ES384 key written to `<dir>/<clientId>.jwk`. */
export const smartTestClient = (dir: string, clientId = "ferry-e2e"): SmartTestClient => {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-384" })
  const kid = `${clientId}-key`
  const privateJwk = { ...privateKey.export({ format: "jwk" }), kid, alg: "ES384", use: "sig" }
  const publicJwk = { ...publicKey.export({ format: "jwk" }), kid, alg: "ES384", use: "sig" }
  const keyFile = Path.join(dir, `${clientId}.jwk`)
  NFS.writeFileSync(keyFile, JSON.stringify(privateJwk), { mode: 0o600 })
  const scopes = ["system/*.rs"]
  const token = async (baseUrl: string): Promise<string> => {
    const b64 = (u: unknown) => Buffer.from(JSON.stringify(u)).toString("base64url")
    const tokenUrl = `${baseUrl}/auth/token`
    const now = Math.floor(Date.now() / 1000)
    const input = `${b64({ alg: "ES384", kid, typ: "JWT" })}.${b64({ iss: clientId, sub: clientId, aud: tokenUrl, exp: now + 240, jti: randomUUID() })}`
    const signature = sign("sha384", Buffer.from(input), { key: privateKey, dsaEncoding: "ieee-p1363" })
    const response = await fetch(tokenUrl, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "client_credentials",
        scope: scopes.join(" "),
        client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion: `${input}.${signature.toString("base64url")}`,
      }),
    })
    if (response.status !== 200) throw new Error(`token request answered ${response.status}`)
    return ((await response.json()) as { access_token: string }).access_token
  }
  return {
    clientId,
    keyFile,
    secret: String(privateJwk.d),
    registration: { clientId, jwks: { keys: [publicJwk] }, scopes },
    args: ["--auth", "smart", "--client-id", clientId, "--key", keyFile],
    token,
  }
}
