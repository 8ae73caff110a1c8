/**
 * Deterministic fault switches for the sandbox, driven by the `faults` section of the sandbox config
 * (or replaced at run time with `PUT [base]/_sandbox/faults`, which also resets every counter).
 *
 * Nothing here is random: each rule counts the requests of one *route kind* and fires on a fixed
 * window of them. Route kinds:
 *   - "kickoff"  — `$export` (any level) and `$import` kick-off requests
 *   - "status"   — export / import status polls (`[base]/bulk/status/…`, `[base]/bulk/import-status/…`)
 *   - "download" — bulk file downloads (`[base]/bulk/files/…`, `[base]/bulk/import-files/…`)
 *   - "token"    — `POST [base]/auth/token`
 *   - "fhir"     — every other request under the FHIR base (`/fhir`)
 *
 * Config JSON (every field optional):
 * ```json
 * {
 *   "throttle":  [{ "route": "status", "first": 2, "skip": 0, "retryAfter": "seconds" | "http-date" | "epoch", "seconds": 1 }],
 *   "transient": [{ "route": "download", "first": 1, "skip": 0, "status": 500 | 502 | 503 | 504, "retryAfterSeconds": 1, "body": "outcome" | "html" }],
 *   "delay":     [{ "route": "status", "ms": 200 }],
 *   "stallAnswer": [{ "route": "fhir", "method": "POST", "first": 1, "skip": 0, "afterBytes": 100 }],
 *   "resetDownload":  { "afterBytes": 1000, "attempts": 1, "type": "Patient" },
 *   "stallDownload":  { "afterBytes": 1000, "attempts": 1, "type": "Patient" },
 *   "slowDownload":   { "type": "Binary", "ms": 2000 },
 *   "shortFile":      { "type": "Observation", "missing": 1 },
 *   "expireFiles":    { "afterSeconds": 60 } | { "firstAttempt": true, "type": "Patient" }, (+ "renewable": true)
 *   "outputsToError": { "types": ["Observation"] },
 *   "tokenExpiresAfterSeconds": 2,
 *   "failJobs": true
 * }
 * ```
 * - throttle: requests skip+1 … skip+first of that kind get 429 with `Retry-After` written as delta
 *   seconds ("seconds"), an HTTP-date ("http-date") or absolute epoch seconds ("epoch", a non-standard
 *   form some gateways send).
 * - transient: requests skip+1 … skip+first get `status` with an OperationOutcome whose issue code is
 *   `transient` (and `Retry-After` when retryAfterSeconds is given); `body: "html"`: an HTML page instead, as a
 *   gateway in front of the server answers (502, 504).
 * - delay: every request of the kind waits `ms` before being handled.
 * - stallAnswer: requests skip+1 … skip+first of that kind (and `method`, when given) are handled as usual, but
 *   of their answer only the headers and `afterBytes` bytes of the body are sent; then nothing more, the
 *   connection left open until the client gives up and closes it (what was done is done: a transaction is
 *   committed).
 * - resetDownload: the first `attempts` downloads of each matching file (every file, or files of
 *   `type`) send the headers and `afterBytes` bytes of the body, then the TCP connection is reset.
 * - stallDownload: as resetDownload, but then nothing more is sent and the connection is left open (a server
 *   or proxy that hangs in the middle of a body) until the client gives up and closes it.
 * - slowDownload: every download of a file of `type` (every file without it) waits `ms` before its
 *   answer, so that its other files land first.
 * - shortFile: the first export output file of `type` (or the first file) holds `missing` fewer lines
 *   than the `count` its manifest entry announces; with `everyJob`, the first such file of every job.
 * - expireFiles: downloads answer 410 Gone once `afterSeconds` have passed since the job completed,
 *   or (firstAttempt) on the first download attempt of each matching file only. `renewable`: the URLs
 *   work like signed links: every status request of a finished job hands out the files under new URLs
 *   (`?gen=N`), and `afterSeconds` counts from when that URL was handed out; without it a manifest fetched
 *   again holds the same URLs. `status: 403`: an expired file answers as an expired signed S3 link does
 *   (403, `application/xml`, `<Error><Code>AccessDenied</Code>…`) instead of 410 with an OperationOutcome;
 *   `status: 404`: as a file URL that leads nowhere (while its job still lists it).
 * - outputsToError: the export's output files of these types are left out of `output[]` and an
 *   OperationOutcome per dropped file is written to `error[]` instead.
 * - tokenExpiresAfterSeconds: SMART access tokens stop working after this many seconds, whatever
 *   `expires_in` said (needs the `auth` section).
 * - failJobs: every `$export` and `$import` job fails (a job that cannot finish, as a server's failed job):
 *   its status requests answer 500 with an OperationOutcome whose issue code is `processing`, which is not a
 *   transient code, so a client must stop polling.
 */
import { describeParseError } from "@ferry/core/Http"
import type { ServerResponse } from "node:http"
import { Either, Schema } from "effect"
import { type Ctx, type Router, sendOutcome } from "./Http.js"

export const RouteKind = Schema.Literal("kickoff", "status", "download", "token", "fhir")
export type RouteKind = typeof RouteKind.Type

const Count = Schema.Number.pipe(Schema.int(), Schema.nonNegative())

const Throttle = Schema.Struct({
  route: RouteKind,
  first: Schema.optionalWith(Count, { default: () => 1 }),
  skip: Schema.optionalWith(Count, { default: () => 0 }),
  retryAfter: Schema.optionalWith(Schema.Literal("seconds", "http-date", "epoch"), {
    default: () => "seconds" as const,
  }),
  seconds: Schema.optionalWith(Schema.Number.pipe(Schema.nonNegative()), { default: () => 1 }),
})

const Transient = Schema.Struct({
  route: RouteKind,
  first: Schema.optionalWith(Count, { default: () => 1 }),
  skip: Schema.optionalWith(Count, { default: () => 0 }),
  status: Schema.optionalWith(Schema.Literal(500, 502, 503, 504), { default: () => 503 as const }),
  retryAfterSeconds: Schema.optional(Schema.Number.pipe(Schema.nonNegative())),
  /** `html`: the answer a gateway in front of the server gives (an HTML page), not an OperationOutcome. */
  body: Schema.optional(Schema.Literal("outcome", "html")),
})

export const FaultsConfig = Schema.Struct({
  throttle: Schema.optionalWith(Schema.Array(Throttle), { default: () => [] }),
  transient: Schema.optionalWith(Schema.Array(Transient), { default: () => [] }),
  delay: Schema.optionalWith(Schema.Array(Schema.Struct({ route: RouteKind, ms: Count })), {
    default: () => [],
  }),
  stallAnswer: Schema.optionalWith(
    Schema.Array(
      Schema.Struct({
        route: RouteKind,
        method: Schema.optional(Schema.String),
        first: Schema.optionalWith(Count, { default: () => 1 }),
        skip: Schema.optionalWith(Count, { default: () => 0 }),
        afterBytes: Schema.optionalWith(Count, { default: () => 0 }),
      }),
    ),
    { default: () => [] },
  ),
  resetDownload: Schema.optional(
    Schema.Struct({
      afterBytes: Count,
      attempts: Schema.optionalWith(Count, { default: () => 1 }),
      type: Schema.optional(Schema.String),
    }),
  ),
  stallDownload: Schema.optional(
    Schema.Struct({
      afterBytes: Count,
      attempts: Schema.optionalWith(Count, { default: () => 1 }),
      type: Schema.optional(Schema.String),
    }),
  ),
  slowDownload: Schema.optional(Schema.Struct({ type: Schema.optional(Schema.String), ms: Count })),
  shortFile: Schema.optional(
    Schema.Struct({
      type: Schema.optional(Schema.String),
      missing: Schema.optionalWith(Count, { default: () => 1 }),
      everyJob: Schema.optional(Schema.Boolean),
    }),
  ),
  expireFiles: Schema.optional(
    Schema.Struct({
      afterSeconds: Schema.optional(Schema.Number.pipe(Schema.nonNegative())),
      firstAttempt: Schema.optional(Schema.Boolean),
      type: Schema.optional(Schema.String),
      renewable: Schema.optional(Schema.Boolean),
      status: Schema.optional(Schema.Literal(410, 403, 404)),
    }),
  ),
  outputsToError: Schema.optional(Schema.Struct({ types: Schema.Array(Schema.String) })),
  tokenExpiresAfterSeconds: Schema.optional(Schema.Number.pipe(Schema.positive())),
  failJobs: Schema.optional(Schema.Boolean),
})
export type FaultsConfig = typeof FaultsConfig.Type
export type FaultsConfigInput = typeof FaultsConfig.Encoded

/** Decodes the `faults` config section (undefined → no faults). Throws a readable Error when invalid. */
export const decodeFaultsConfig = (input: unknown): FaultsConfig => {
  const decoded = Schema.decodeUnknownEither(FaultsConfig)(input ?? {}, { onExcessProperty: "error" })
  if (Either.isLeft(decoded)) {
    throw new Error(
      `sandbox config "faults" is invalid: ${describeParseError("a faults section", decoded.left)}`,
    )
  }
  return decoded.right
}

/** Which route kind a request belongs to; `path` is below the FHIR base (undefined: no faults). */
export const routeKind = (method: string, path: string): RouteKind | undefined => {
  if (path === "/auth/token") return "token"
  if (path.startsWith("/bulk/status/") || path.startsWith("/bulk/import-status/")) return "status"
  if (path.startsWith("/bulk/files/") || path.startsWith("/bulk/import-files/")) return "download"
  if (path.endsWith("/$export") || (path === "/$import" && method === "POST")) return "kickoff"
  if (path.startsWith("/_sandbox/")) return undefined
  return "fhir"
}

/** What the download handler must do for one attempt at one file. */
export interface DownloadFault {
  /** Answer 410 Gone (or `goneStatus`) instead of the file. */
  readonly gone: boolean
  /** 410 or 404 (an OperationOutcome), or 403 with the XML body of an expired signed S3 link. */
  readonly goneStatus: 410 | 403 | 404
  /** Reset the connection after this many body bytes. */
  readonly resetAfterBytes: number | undefined
  /** Send nothing more after this many body bytes, the connection left open. */
  readonly stallAfterBytes: number | undefined
  /** Wait this long before answering. */
  readonly delayMs: number
}

/**
 * `res` sends its headers and the first `afterBytes` bytes of its body, then nothing more: the rest is dropped
 * and the answer never ended (the client waits until it gives up; the connection closes with it).
 */
const stallAfter = (res: ServerResponse, afterBytes: number): void => {
  let left = afterBytes
  const write = res.write.bind(res)
  const pass = (chunk: unknown, encoding: unknown): void => {
    if (chunk === undefined || chunk === null || typeof chunk === "function") return
    const bytes =
      typeof chunk === "string"
        ? Buffer.from(chunk, typeof encoding === "string" ? (encoding as BufferEncoding) : "utf8")
        : Buffer.from(chunk as Uint8Array)
    const part = bytes.subarray(0, Math.max(0, left))
    left -= part.length
    if (part.length > 0) write(part)
  }
  res.write = ((chunk: unknown, encoding?: unknown) => {
    pass(chunk, encoding)
    return true
  }) as typeof res.write
  res.end = ((chunk?: unknown, encoding?: unknown) => {
    // the headers go now (with the Content-Length the handler set, if any), the body only in part
    if (!res.headersSent) res.flushHeaders()
    pass(chunk, encoding)
    return res
  }) as typeof res.end
}

const retryAfterValue = (format: "seconds" | "http-date" | "epoch", seconds: number): string => {
  switch (format) {
    case "seconds":
      return String(Math.ceil(seconds))
    case "http-date":
      return new Date(Date.now() + Math.ceil(seconds) * 1000).toUTCString()
    case "epoch":
      return String(Math.floor(Date.now() / 1000) + Math.ceil(seconds))
  }
}

/** The live fault state of one sandbox: config plus deterministic counters. */
export class Faults {
  private config: FaultsConfig
  private readonly counters = new Map<RouteKind, number>()
  /** Per `stallAnswer` rule: the requests it matched so far. */
  private stallSeen: Array<number> = []
  private readonly downloadAttempts = new Map<string, number>()
  private shortFileUsed = false
  /** The jobs (their directories) that had their short file (`shortFile.everyJob`). */
  private readonly shortFileJobs = new Set<string>()

  constructor(config: FaultsConfig) {
    this.config = config
  }

  /** Replaces the config and resets every counter. */
  reset(config: FaultsConfig): void {
    this.config = config
    this.counters.clear()
    this.stallSeen = []
    this.downloadAttempts.clear()
    this.shortFileUsed = false
    this.shortFileJobs.clear()
  }

  get current(): FaultsConfig {
    return this.config
  }

  /** Counts one request of `kind`; returns its 1-based ordinal. */
  private count(kind: RouteKind): number {
    const n = (this.counters.get(kind) ?? 0) + 1
    this.counters.set(kind, n)
    return n
  }

  /** The Router middleware: delay, then 429 / transient 5xx by counter, else the route. */
  readonly middleware = async (ctx: Ctx, next: () => Promise<void>): Promise<void> => {
    const kind = routeKind(ctx.req.method ?? "GET", ctx.path)
    if (kind === undefined) return next()
    const n = this.count(kind)
    const delay = this.config.delay.filter((d) => d.route === kind).reduce((a, d) => a + d.ms, 0)
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay))
    for (const rule of this.config.throttle) {
      if (rule.route === kind && n > rule.skip && n <= rule.skip + rule.first) {
        ctx.res.setHeader("Retry-After", retryAfterValue(rule.retryAfter, rule.seconds))
        return sendOutcome(
          ctx,
          429,
          "error",
          "throttled",
          `Too many requests (sandbox fault: ${kind} #${n}).`,
        )
      }
    }
    for (const rule of this.config.transient) {
      if (rule.route === kind && n > rule.skip && n <= rule.skip + rule.first) {
        if (rule.retryAfterSeconds !== undefined) {
          ctx.res.setHeader("Retry-After", retryAfterValue("seconds", rule.retryAfterSeconds))
        }
        if (rule.body === "html") {
          ctx.res.writeHead(rule.status, { "Content-Type": "text/html" })
          ctx.res.end(
            `<html><body><h1>${rule.status} Gateway error</h1><p>sandbox fault: ${kind} #${n}</p></body></html>`,
          )
          return
        }
        return sendOutcome(
          ctx,
          rule.status,
          "error",
          "transient",
          `Temporary failure, try again (sandbox fault: ${kind} #${n}).`,
        )
      }
    }
    this.config.stallAnswer.forEach((rule, i) => {
      if (rule.route !== kind || (rule.method !== undefined && rule.method !== ctx.req.method)) return
      const m = (this.stallSeen[i] ?? 0) + 1
      this.stallSeen[i] = m
      if (m > rule.skip && m <= rule.skip + rule.first) stallAfter(ctx.res, rule.afterBytes)
    })
    return next()
  }

  /** `expireFiles.renewable`: each manifest of a finished job hands out its files under new URLs. */
  renewableUrls(): boolean {
    return this.config.expireFiles?.renewable === true
  }

  /**
   * Called by the download handlers once per attempt at a file. `completedAt`: when the job completed, or
   * (renewable URLs) when the URL asked for was handed out.
   */
  download(file: {
    readonly key: string
    readonly type: string
    readonly completedAt: number
  }): DownloadFault {
    const attempt = (this.downloadAttempts.get(file.key) ?? 0) + 1
    this.downloadAttempts.set(file.key, attempt)
    const expire = this.config.expireFiles
    let gone = false
    if (expire !== undefined && (expire.type === undefined || expire.type === file.type)) {
      if (expire.firstAttempt === true && attempt === 1) gone = true
      if (expire.afterSeconds !== undefined && Date.now() - file.completedAt >= expire.afterSeconds * 1000) {
        gone = true
      }
    }
    const cutAfter = (
      rule: { afterBytes: number; attempts: number; type?: string | undefined } | undefined,
    ) =>
      !gone &&
      rule !== undefined &&
      (rule.type === undefined || rule.type === file.type) &&
      attempt <= rule.attempts
        ? rule.afterBytes
        : undefined
    const resetAfterBytes = cutAfter(this.config.resetDownload)
    const stallAfterBytes = resetAfterBytes === undefined ? cutAfter(this.config.stallDownload) : undefined
    const slow = this.config.slowDownload
    const delayMs = slow !== undefined && (slow.type === undefined || slow.type === file.type) ? slow.ms : 0
    return { gone, goneStatus: expire?.status ?? 410, resetAfterBytes, stallAfterBytes, delayMs }
  }

  /** How many lines to leave out of the next export file of `type` (0 for all but one file). */
  shortFileMissing(type: string, job: string): number {
    const rule = this.config.shortFile
    if (rule === undefined) return 0
    if (rule.everyJob === true ? this.shortFileJobs.has(job) : this.shortFileUsed) return 0
    if (rule.type !== undefined && rule.type !== type) return 0
    this.shortFileUsed = true
    this.shortFileJobs.add(job)
    return rule.missing
  }

  /** Should the output files of `type` be reported in `error[]` instead of `output[]`? */
  outputToError(type: string): boolean {
    return this.config.outputsToError?.types.includes(type) ?? false
  }

  /** Do bulk jobs fail (see `failJobs`)? */
  get failJobs(): boolean {
    return this.config.failJobs === true
  }

  /** Access tokens stop working after this many seconds (undefined: their advertised lifetime). */
  get tokenExpiresAfterSeconds(): number | undefined {
    return this.config.tokenExpiresAfterSeconds
  }
}

const registry = new WeakMap<object, Faults>()

/** The Faults of a router (created empty when the router has none yet). */
export const faultsOf = (router: Router): Faults => {
  let faults = registry.get(router)
  if (faults === undefined) {
    faults = new Faults(decodeFaultsConfig(undefined))
    registry.set(router, faults)
  }
  return faults
}

/**
 * Installs the fault middleware and `PUT /_sandbox/faults`. Call it before Smart.register so faults
 * fire before authorization (as a gateway in front of a server would).
 */
export const register = (router: Router, _store: unknown, config: { readonly faults?: unknown }): Faults => {
  const faults = faultsOf(router)
  faults.reset(decodeFaultsConfig(config.faults))
  router.use(faults.middleware)
  router.on("PUT", "/_sandbox/faults", async (ctx) => {
    const body = await ctx.json()
    const decoded = Schema.decodeUnknownEither(FaultsConfig)(body ?? {}, { onExcessProperty: "error" })
    if (Either.isLeft(decoded)) {
      return sendOutcome(ctx, 400, "error", "invalid", `Invalid faults config: ${decoded.left.message}`)
    }
    faults.reset(decoded.right)
    ctx.res.writeHead(204)
    ctx.res.end()
  })
  return faults
}
