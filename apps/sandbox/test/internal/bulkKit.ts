/** Test kit for the bulk / SMART / fault tests: an in-process sandbox on port 0 plus raw HTTP helpers. */
import { request } from "node:http"
import { Effect } from "effect"
import * as BulkExport from "../../src/BulkExport.js"
import * as BulkImport from "../../src/BulkImport.js"
import type { SandboxConfigInput } from "../../src/Config.js"
import * as Faults from "../../src/Faults.js"
import type { BulkConfigInput } from "../../src/internal/bulkConfig.js"
import { start } from "../../src/Sandbox.js"
import * as Smart from "../../src/Smart.js"

export interface Kit {
  readonly baseUrl: string
  readonly sandbox: Effect.Effect.Success<ReturnType<typeof start>>
  readonly faults: Faults.Faults
  readonly smart: Smart.Smart | undefined
}

/** Starts a sandbox with faults, SMART, $export and $import registered (in that order). */
export const startKit = (input: SandboxConfigInput = {}, bulk: BulkConfigInput = {}) =>
  Effect.gen(function* () {
    let faults: Faults.Faults | undefined
    let smart: Smart.Smart | undefined
    const closers: Array<() => void> = []
    const sandbox = yield* start(input, {
      plugins: [
        (router, store, config) => {
          faults = Faults.register(router, store, config)
          smart = Smart.register(router, store, config, faults)
          closers.push(BulkExport.register(router, store, config, bulk).close)
          closers.push(BulkImport.register(router, store, config, bulk).close)
        },
      ],
    })
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const c of closers) c()
      }),
    )
    return { baseUrl: sandbox.baseUrl, sandbox, faults: faults!, smart } satisfies Kit
  })

export interface RawResponse {
  readonly status: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly body: Buffer
  /** Set when the connection broke before the body ended. */
  readonly error: string | undefined
}

/** A plain node:http request (no automatic decompression), collecting what arrived. */
export const raw = (
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<RawResponse> =>
  new Promise((resolve, reject) => {
    let started = false
    const req = request(url, { method: options.method ?? "GET", headers: options.headers ?? {} }, (res) => {
      started = true
      const chunks: Buffer[] = []
      let error: string | undefined
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("error", (e) => {
        error = e.message
      })
      res.on("aborted", () => {
        error ??= "aborted"
      })
      res.on("close", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
          error: error ?? (res.complete ? undefined : "incomplete"),
        }),
      )
    })
    req.on("error", (e) => {
      if (!started) reject(e) // after the headers, the response's close event reports the break
    })
    if (options.body !== undefined) req.write(options.body)
    req.end()
  })

export const http = (
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
) => Effect.promise(() => raw(url, options))

export const json = (r: RawResponse): Record<string, unknown> =>
  JSON.parse(r.body.toString("utf8")) as Record<string, unknown>

export const lines = (body: Buffer): Array<Record<string, unknown>> =>
  body
    .toString("utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>)

export const ASYNC = { prefer: "respond-async", accept: "application/fhir+json" }

export interface ManifestLike {
  readonly transactionTime: string
  readonly request: string
  readonly requiresAccessToken: boolean
  readonly output: ReadonlyArray<{ type: string; url: string; count: number; inputUrl?: string }>
  readonly deleted?: ReadonlyArray<{ type: string; url: string; count: number }>
  readonly error: ReadonlyArray<{ type: string; url: string; count?: number; inputUrl?: string }>
}

/** Polls a status URL until 200; returns the manifest and the 202 answers seen. */
export const poll = (statusUrl: string, headers: Record<string, string> = {}) =>
  Effect.gen(function* () {
    const pending: RawResponse[] = []
    for (let i = 0; i < 200; i++) {
      const r = yield* http(statusUrl, { headers })
      if (r.status === 200) return { manifest: json(r) as unknown as ManifestLike, pending, final: r }
      if (r.status !== 202) throw new Error(`status ${r.status}: ${r.body.toString("utf8")}`)
      pending.push(r)
      yield* Effect.sleep("20 millis")
    }
    throw new Error("the job never finished")
  })

/** Kick-off (GET with query or POST with Parameters) → status URL. */
export const kickoff = (
  url: string,
  options: {
    method?: "GET" | "POST"
    parameters?: ReadonlyArray<Record<string, unknown>>
    headers?: Record<string, string>
  } = {},
) =>
  Effect.gen(function* () {
    const r = yield* http(url, {
      method: options.method ?? "GET",
      headers: {
        ...ASYNC,
        ...(options.method === "POST" ? { "content-type": "application/fhir+json" } : {}),
        ...options.headers,
      },
      ...(options.method === "POST"
        ? { body: JSON.stringify({ resourceType: "Parameters", parameter: options.parameters ?? [] }) }
        : {}),
    })
    if (r.status !== 202) throw new Error(`kick-off answered ${r.status}: ${r.body.toString("utf8")}`)
    return String(r.headers["content-location"])
  })

/** Runs an export to completion and downloads every output file (identity encoding). */
export const exportAll = (url: string, options: Parameters<typeof kickoff>[1] = {}) =>
  Effect.gen(function* () {
    const status = yield* kickoff(url, options)
    const { manifest, pending } = yield* poll(status, options.headers ?? {})
    const byType = new Map<string, Array<Record<string, unknown>>>()
    for (const o of manifest.output) {
      const r = yield* http(o.url, { headers: options.headers ?? {} })
      if (r.status !== 200) throw new Error(`download ${o.url}: ${r.status}`)
      byType.set(o.type, [...(byType.get(o.type) ?? []), ...lines(r.body)])
    }
    return { status, manifest, pending, byType }
  })
