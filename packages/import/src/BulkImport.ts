/**
 * The `$import` strategy: the target pulls the archive's NDJSON files itself.
 *
 * 1. Serve the files: a short-lived local HTTP server (`internal/fileServer.ts`) guarded by a per-run
 *    256-bit token, or nothing when `serve.fileBaseUrl` says the files are already reachable at
 *    `<fileBaseUrl>/<path in the archive>`.
 * 2. Kick off `POST [base]/$import` (`Prefer: respond-async`) in the target's dialect:
 *    - `smart`: the SMART manifest draft, plain JSON (`inputFormat`, `inputSource`,
 *      `storageDetail {type: "https", accessToken}`, `input[] {type, url}`), `Content-Type: application/json`;
 *    - `hapi`: HAPI's `Parameters` (`inputFormat`, `inputSource`, `storageDetail` parts `type`,
 *      `credentialHttpBasic` = `ferry:<token>`, `maxBatchResourceCount`; `input` parts `type`, `url`).
 *    With `serve.tokenIn: "path"` the token is a URL segment instead and no credential is sent.
 * 3. Poll the Content-Location (202 + X-Progress + Retry-After; 429/503 and transient outcomes are waited
 *    out) until 200, then DELETE it (release). An interrupted or failed run DELETEs it too (cancel).
 * 4. Read the completion: `output[] {inputUrl|input, count, url?}` gives per-file counts, `error[] {url}`
 *    NDJSON OperationOutcomes are mapped back to `data/<file>:<line>`, and success files (`output[].url`)
 *    that say `Type/old was stored as Type/new` give id pairs for the id map. HAPI answers 200 with an
 *    OperationOutcome report instead of a manifest: its text is returned as `report`, counts stay unknown.
 *
 * The token never appears in events, errors or returned outcomes (it is scrubbed from target text).
 */
import { randomBytes } from "node:crypto"
import { HttpClientRequest } from "@effect/platform"
import * as Archive from "@ferry/archive/Archive"
import type { FileEntry } from "@ferry/archive/Manifest"
import { ImportManifest, importInputUrl } from "@ferry/core/BulkManifest"
import * as Capability from "@ferry/core/CapabilityStatement"
import { AuthError, FhirError } from "@ferry/core/Errors"
import type { FhirClient } from "@ferry/core/FhirClient"
import { fhirJson, fhirNdjson, redactUrl, resolveUrl } from "@ferry/core/Http"
import * as Ndjson from "@ferry/core/Ndjson"
import { OperationOutcome, summary } from "@ferry/core/OperationOutcome"
import * as Parameters from "@ferry/core/Parameters"
import { isTransientPollFailure, retryAfter } from "@ferry/core/Retry"
import { Clock, Duration, Effect, Option, Redacted, Schema, Stream } from "effect"
import { ImportError } from "./ImportError.js"
import * as FileServer from "./internal/fileServer.js"

export type Flavour = "smart" | "hapi"

/**
 * Where the target fetches the files from.
 * - A local server (default): `host` (default 127.0.0.1: use an address the target can reach), `port`
 *   (default 0), `publicUrl` (`scheme://host:port` the target must use, e.g. behind NAT; default the bound
 *   address; a host other than loopback needs an https `publicUrl`, a TLS proxy in front of the server), `tokenIn` (`"header"`, default: Bearer / Basic credentials in the kick-off; `"path"`: an
 *   unguessable URL segment, for targets that send no credentials).
 * - `fileBaseUrl`: no server; the archive's files are already published at `<fileBaseUrl>/<path>`.
 */
export type ServeOptions =
  | {
      readonly host?: string
      readonly port?: number
      readonly publicUrl?: string
      readonly tokenIn?: "header" | "path"
    }
  | { readonly fileBaseUrl: string }

/** What happened, for `events.ndjson` and progress output. Never holds the token. */
export type BulkImportEvent =
  | { readonly event: "import.bulk.serve"; readonly url: string; readonly files: number }
  | {
      readonly event: "import.bulk.kickoff"
      readonly flavour: Flavour
      readonly statusUrl: string
      readonly files: number
    }
  | { readonly event: "import.bulk.progress"; readonly progress: string | undefined }
  | { readonly event: "import.bulk.retry"; readonly detail: string; readonly waitMillis: number }
  | {
      readonly event: "import.bulk.done"
      readonly loaded: number
      readonly rejected: number
      readonly remapped: number
    }
  | { readonly event: "import.bulk.release-failed"; readonly statusUrl: string; readonly detail: string }

export interface BulkImportOptions {
  /** The target. */
  readonly client: FhirClient
  readonly archiveDir: string
  /** The archive's data entries to load (from manifest.json). */
  readonly files: ReadonlyArray<FileEntry>
  /** `inputSource` of the kick-off; default the archive's `source.baseUrl`. */
  readonly inputSource?: string
  /** Default: from `capabilities` (or the target's CapabilityStatement), else `smart`. */
  readonly flavour?: Flavour
  /** The target's CapabilityStatement, if the caller already has it (saves a request). */
  readonly capabilities?: Capability.CapabilityStatement
  readonly serve?: ServeOptions
  /** HAPI `storageDetail.maxBatchResourceCount` (default 800, HAPI's own default). */
  readonly maxBatchResourceCount?: number
  /** First wait between polls when the target gives no Retry-After (default 1 s, growing ×1.5 to 60 s). */
  readonly pollInterval?: Duration.DurationInput
  /** Give up (ImportError Timeout) when the job has not finished after this long (default 24 h). */
  readonly timeout?: Duration.DurationInput
  readonly onEvent?: (event: BulkImportEvent) => Effect.Effect<void>
  /**
   * Called with each rejected line as it is read (e.g. to write the quarantine). When given, rejected lines
   * are NOT collected into the result's `rejected` (memory stays flat however many the target refused).
   */
  readonly onRejected?: (rejected: Rejected) => Effect.Effect<void, ImportError>
  /**
   * Called with the job's status URL once the target accepted the kick-off, before any wait (to journal it:
   * a run killed while the job runs cannot release it, and the next one cancels it with `cancel`).
   */
  readonly onJob?: (statusUrl: string) => Effect.Effect<void, ImportError>
}

/**
 * Cancels (DELETE on its status URL, as the drafts and HAPI have it) a job an earlier run started and could not
 * release (killed). What the target answers is not an error: the job may be long gone (404), or done.
 */
export const cancel = (client: FhirClient, statusUrl: string): Effect.Effect<void> =>
  Effect.ignore(deleteJob(client, statusUrl))

/** DELETE on a job's status URL (its answer read and dropped). */
const deleteJob = (client: FhirClient, statusUrl: string) =>
  client.request(HttpClientRequest.del(statusUrl)).pipe(Effect.flatMap((r) => Effect.ignore(r.text)))

/** A line (or a whole file, `line` absent) the target refused. */
export interface Rejected {
  /** `data/Patient.000.ndjson:17`, or just the path when the target names no line. */
  readonly source: string
  readonly path: string
  readonly line?: number
  readonly type: string
  readonly outcome: OperationOutcome
}

export interface FileResult {
  readonly path: string
  readonly type: string
  /** Lines in the archive file. */
  readonly expected: number
  /** Resources the target says it stored (absent when it did not say). */
  readonly loaded?: number
  /** Lines the target reported as errors. */
  readonly rejected: number
  /** Of `rejected`, those an error entry only counted, without an OperationOutcome file saying which. */
  readonly unlisted: number
}

export interface BulkImportResult {
  readonly flavour: Flavour
  /** Resources stored per type, as the target reported them. */
  readonly loaded: Record<string, number>
  /** Every rejected line, in the target's order (empty when `onRejected` took them). */
  readonly rejected: ReadonlyArray<Rejected>
  /** `[source "Type/id", target "Type/id"]` for every resource the target stored under a new id. */
  readonly idMap: ReadonlyArray<readonly [string, string]>
  readonly files: ReadonlyArray<FileResult>
  readonly transactionTime?: string
  /** HAPI: the job report (an OperationOutcome's text) in place of a manifest. */
  readonly report?: string
  /** Output entries of the result without a count or a type (then `loaded` cannot be judged). */
  readonly uncounted: number
}

/** Parents before children; types not listed keep their order after these. */
const typeOrder = [
  "Organization",
  "Location",
  "Practitioner",
  "PractitionerRole",
  "Medication",
  "Substance",
  "Device",
  "Patient",
  "RelatedPerson",
  "Group",
  "EpisodeOfCare",
  "Encounter",
]
const rank = (type: string): number => {
  const i = typeOrder.indexOf(type)
  return i < 0 ? typeOrder.length : i
}

/**
 * The `$import` dialect a CapabilityStatement declares: `smart` for the SMART bulk-import drafts' definition
 * URLs, `hapi` for HAPI FHIR (software name or its generated `OperationDefinition/-s-import`); none when
 * `$import` is missing or the declaration says nothing either way.
 */
export const detectFlavour = (cs: Capability.CapabilityStatement): Option.Option<Flavour> => {
  if (!Capability.supportsOperation(cs, "import")) return Option.none()
  const definitions = (cs.rest ?? [])
    .flatMap((r) => r.operation ?? [])
    .filter((op) => op.name.replace(/^\$/, "") === "import")
    .map((op) => op.definition ?? "")
  if (
    definitions.some((d) =>
      /smart-on-fhir\/bulk-import|import-manifest|bulkdata\/OperationDefinition\/import/i.test(d),
    )
  )
    return Option.some("smart")
  const software = (cs as { readonly software?: { readonly name?: unknown } }).software?.name
  if (
    definitions.some((d) => /OperationDefinition\/-s-import/.test(d)) ||
    (typeof software === "string" && /hapi/i.test(software))
  )
    return Option.some("hapi")
  return Option.none()
}

/** Addresses of this machine: the file server's plain http does not leave it. */
const loopbackHost = /^(localhost|127(\.\d{1,3}){3}|::1|\[::1\]|\[?::ffff:127(\.\d{1,3}){3}\]?)$/i

const parsedUrl = (text: string): URL | undefined => {
  try {
    return new URL(text)
  } catch {
    return undefined
  }
}

/** Replaces every occurrence of the token in target-provided text. */
const scrubber =
  (token: string | undefined) =>
  (text: string): string =>
    token === undefined ? text : text.split(token).join("[token]")

/** `line 17`, `line: 17`, `line #17`, `at line: 17` in an issue's location, expression, diagnostics or details. */
const lineOf = (outcome: OperationOutcome): number | undefined => {
  for (const issue of outcome.issue) {
    const location = (issue as { readonly location?: unknown }).location
    const texts = [
      ...(Array.isArray(location) ? location.filter((l): l is string => typeof l === "string") : []),
      ...(issue.expression ?? []),
      issue.diagnostics ?? "",
      issue.details?.text ?? "",
    ]
    for (const t of texts) {
      const m = /\bline\s*[:#]?\s*(\d+)/i.exec(t)
      if (m) return Number(m[1])
    }
  }
  return undefined
}

/** `Patient/old was stored as Patient/new` (the sandbox's success outcome line). */
const REMAP =
  /\b([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64}) was stored as ([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})/g

const decodeOutcome = Schema.decodeUnknownOption(OperationOutcome)
const decodeManifest = Schema.decodeUnknown(ImportManifest)

const fromClientError =
  (url: string, what: string, scrub: (s: string) => string) =>
  (e: FhirError | AuthError): ImportError =>
    e instanceof AuthError
      ? new ImportError({
          reason: "Auth",
          url: redactUrl(url),
          detail: scrub(`${what}: ${e.message}`),
        })
      : new ImportError({
          reason: e.reason === "Status" && e.status !== undefined && e.status < 500 ? "Refused" : "Target",
          url: redactUrl(url),
          detail: scrub(`${what}: ${e.message}`),
        })

export { ephemeralPorts, listenAdvice, listenHost } from "./internal/fileServer.js"

/**
 * Why Ferry's file server cannot be set up so (the CLI asks before it starts anything), or undefined: it speaks
 * plain http, so off this machine the archive and its token need TLS in front of it (an https public URL); on
 * all interfaces it needs a public URL to give the target.
 */
export const serveProblem = (serve: ServeOptions): string | undefined => {
  if ("fileBaseUrl" in serve) return undefined
  const host = serve.host ?? "127.0.0.1"
  const nowhere = FileServer.wildcardProblem(host, serve.publicUrl)
  if (nowhere !== undefined) return nowhere
  if (!loopbackHost.test(host) && !/^https:\/\//i.test(serve.publicUrl ?? ""))
    return `Ferry's file server on ${host} would send the archive and its access token over plain http; put a TLS-terminating proxy in front of it and pass its https address as --serve-public-url, or publish the files yourself (ferry import --file-base-url)`
  // bound to loopback but published elsewhere (a port forward): the target still fetches over plain http. A
  // container's name for this machine (Docker's host.docker.internal) stays on it.
  const published = serve.publicUrl === undefined ? undefined : parsedUrl(serve.publicUrl)
  if (
    published !== undefined &&
    published.protocol === "http:" &&
    !loopbackHost.test(published.hostname) &&
    !/^\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\]$/i.test(published.hostname) &&
    published.hostname !== "host.docker.internal"
  )
    return `--serve-public-url ${published.origin} would have the target fetch the archive and its access token over plain http from an address that is not this machine's loopback; give the https address of a TLS-terminating proxy in front of Ferry's file server, or publish the files yourself (ferry import --file-base-url)`
  return undefined
}

/** Loads `files` into the target with `$import`; see the module comment. */
export const run = Effect.fn("BulkImport.run")(function* (options: BulkImportOptions) {
  const client = options.client
  const emit = (e: BulkImportEvent) => (options.onEvent ? options.onEvent(e) : Effect.void)
  const importUrl = resolveUrl(client.baseUrl, "$import")
  const flavour = yield* resolveFlavour(options)
  if (options.files.length === 0) {
    return {
      flavour,
      loaded: {},
      rejected: [],
      idMap: [],
      files: [],
      uncounted: 0,
    } satisfies BulkImportResult
  }
  const inputSource =
    options.inputSource ??
    (yield* Archive.readManifest(options.archiveDir).pipe(
      Effect.mapError(
        (e) =>
          new ImportError({
            reason: "Archive",
            url: options.archiveDir,
            detail: `${e.message}; pass an archive written by ferry export`,
          }),
      ),
    )).source.baseUrl
  const serve = options.serve ?? {}
  const problem = serveProblem(serve)
  if (problem !== undefined) return yield* new ImportError({ reason: "Config", detail: problem })
  const token = "fileBaseUrl" in serve ? undefined : randomBytes(32).toString("base64url")
  const scrub = scrubber(token)
  const files = [...options.files].sort((a, b) => rank(a.type) - rank(b.type))

  return yield* Effect.scoped(
    Effect.gen(function* () {
      let urlOf: (path: string) => string
      let credential: "bearer" | "basic" | undefined
      let stats: () => FileServer.FileServerStats = () => ({ served: 0, refused: 0, unauthorized: 0 })
      if ("fileBaseUrl" in serve) {
        const base = serve.fileBaseUrl.replace(/\/+$/, "")
        urlOf = (path) => `${base}/${path}`
        credential = undefined
        yield* emit({ event: "import.bulk.serve", url: redactUrl(base), files: files.length })
      } else {
        const tokenIn = serve.tokenIn ?? "header"
        const server = yield* FileServer.start({
          archiveDir: options.archiveDir,
          files,
          token: Redacted.make(token ?? ""),
          ...(serve.host !== undefined ? { host: serve.host } : {}),
          ...(serve.port !== undefined ? { port: serve.port } : {}),
          ...(serve.publicUrl !== undefined ? { publicUrl: serve.publicUrl } : {}),
        })
        urlOf = (path) => server.urlOf(path, tokenIn)
        credential = tokenIn === "path" ? undefined : flavour === "hapi" ? "basic" : "bearer"
        stats = server.stats
        yield* emit({ event: "import.bulk.serve", url: server.baseUrl, files: files.length })
      }
      const inputs = files.map((entry) => ({ entry, url: urlOf(entry.path) }))
      const byUrl = new Map(inputs.map((i) => [i.url, i.entry]))
      const entryOf = (inputUrl: string | undefined): FileEntry | undefined => {
        if (inputUrl === undefined) return undefined
        const exact = byUrl.get(inputUrl)
        if (exact !== undefined) return exact
        // A target may normalise the URL: fall back to the path suffix.
        return files.find((f) => inputUrl.endsWith(`/${f.path}`))
      }

      const body =
        flavour === "smart"
          ? {
              inputFormat: fhirNdjson,
              inputSource,
              storageDetail: { type: "https", ...(credential === "bearer" ? { accessToken: token } : {}) },
              input: inputs.map((i) => ({ type: i.entry.type, url: i.url })),
            }
          : Parameters.make([
              Parameters.code("inputFormat", fhirNdjson),
              Parameters.uri("inputSource", inputSource),
              Parameters.part("storageDetail", [
                Parameters.code("type", "https"),
                ...(credential === "basic"
                  ? [Parameters.string("credentialHttpBasic", `ferry:${token}`)]
                  : []),
                Parameters.string("maxBatchResourceCount", String(options.maxBatchResourceCount ?? 800)),
              ]),
              ...inputs.map((i) =>
                Parameters.part("input", [
                  Parameters.code("type", i.entry.type),
                  Parameters.url("url", i.url),
                ]),
              ),
            ])

      // Kick-off.
      const kickoff = yield* client
        .operation("$import", {
          method: "POST",
          body,
          contentType: flavour === "smart" ? "application/json" : fhirJson,
          headers: { prefer: "respond-async", accept: fhirJson },
        })
        .pipe(
          Effect.mapError((e) =>
            e instanceof FhirError && e.reason === "Status" && (e.status === 404 || e.status === 405)
              ? new ImportError({
                  reason: "NotSupported",
                  url: redactUrl(importUrl),
                  detail: scrub(
                    `the target answered ${e.status} to $import; it does not support bulk import, use the transaction strategy`,
                  ),
                })
              : fromClientError(importUrl, "the $import kick-off failed", scrub)(e),
          ),
        )
      yield* Effect.ignore(kickoff.text)
      const location = kickoff.headers["content-location"]
      if (kickoff.status !== 202 || location === undefined || location === "") {
        return yield* new ImportError({
          reason: "Target",
          url: redactUrl(importUrl),
          detail: `the $import kick-off answered ${kickoff.status}${location === undefined ? " without Content-Location" : ""} instead of 202 with a status URL; the target's $import is not usable, use the transaction strategy`,
        })
      }
      const statusUrl = new URL(location, importUrl).toString()
      const release = deleteJob(client, statusUrl).pipe(
        Effect.catchAll((e) =>
          emit({
            event: "import.bulk.release-failed",
            statusUrl: redactUrl(statusUrl),
            detail: scrub(e.message),
          }),
        ),
      )

      // The job is released (DELETE) once its result is read, and cancelled the same way when the run is
      // interrupted, times out or fails (the file server is about to close anyway).
      // The job is journaled (`onJob`) before it is said to have started, and inside the release's reach (a
      // journal that fails still has the job released).
      const collected = yield* (options.onJob ? options.onJob(statusUrl) : Effect.void).pipe(
        Effect.zipRight(
          emit({
            event: "import.bulk.kickoff",
            flavour,
            statusUrl: redactUrl(statusUrl),
            files: files.length,
          }),
        ),
        Effect.zipRight(collect(client, statusUrl, options, emit, scrub, files, entryOf)),
        Effect.ensuring(release),
      )
      const { loaded, rejected, rejectedCount, idMap, perFile, report, transactionTime, uncounted } =
        collected
      const total = Object.values(loaded).reduce((a, b) => a + b, 0)
      if (!("fileBaseUrl" in serve) && stats().served === 0 && total === 0 && report === undefined) {
        const refused = stats().unauthorized
        return yield* new ImportError({
          reason: "Target",
          url: redactUrl(importUrl),
          detail:
            refused > 0 && serve.tokenIn !== "path"
              ? `the target reached Ferry's file server but never with the file token (${refused} request${refused === 1 ? "" : "s"} refused): it does not send the credentials the kick-off gave it; run the same ferry import with --serve-token-in path (the token goes in the file URLs instead)`
              : "the target never fetched the archive files from Ferry's file server; bind it to an address the target can reach (--serve-host, --serve-public-url) or publish the files yourself (ferry import --file-base-url)",
        })
      }
      yield* emit({
        event: "import.bulk.done",
        loaded: total,
        rejected: rejectedCount,
        remapped: idMap.length,
      })
      return {
        flavour,
        loaded,
        rejected,
        idMap,
        files: files.map((f) => {
          const r = perFile.get(f.path) ?? { rejected: 0, unlisted: 0 }
          return {
            path: f.path,
            type: f.type,
            expected: f.count,
            ...(r.loaded !== undefined ? { loaded: r.loaded } : {}),
            rejected: r.rejected,
            unlisted: r.unlisted,
          }
        }),
        ...(transactionTime !== undefined ? { transactionTime } : {}),
        ...(report !== undefined ? { report } : {}),
        uncounted,
      } satisfies BulkImportResult
    }),
  )
})

/** Waits for the job, then reads counts, rejected lines and id pairs from its result. */
const collect = (
  client: FhirClient,
  statusUrl: string,
  options: BulkImportOptions,
  emit: (e: BulkImportEvent) => Effect.Effect<void>,
  scrub: (s: string) => string,
  files: ReadonlyArray<FileEntry>,
  entryOf: (inputUrl: string | undefined) => FileEntry | undefined,
) =>
  Effect.gen(function* () {
    const completion = yield* waitForCompletion(client, statusUrl, options, emit, scrub)
    const rejected: Array<Rejected> = []
    let rejectedCount = 0
    const idMap: Array<readonly [string, string]> = []
    const loaded: Record<string, number> = {}
    const perFile = new Map<string, { loaded?: number; rejected: number; unlisted: number }>(
      files.map((f) => [f.path, { rejected: 0, unlisted: 0 }]),
    )
    let report: string | undefined
    let transactionTime: string | undefined
    let uncounted = 0

    if (completion._tag === "Report") {
      report = scrub(summary(completion.outcome))
    } else {
      const manifest = completion.manifest
      transactionTime = manifest.transactionTime
      for (const item of manifest.output) {
        const entry = entryOf(Option.getOrUndefined(importInputUrl(item)))
        const type = entry?.type ?? item.type
        if (type !== undefined && item.count !== undefined) loaded[type] = (loaded[type] ?? 0) + item.count
        else uncounted++
        if (entry !== undefined) {
          const f = perFile.get(entry.path)
          if (f !== undefined && item.count !== undefined) f.loaded = (f.loaded ?? 0) + item.count
        }
        if (item.url !== undefined) {
          yield* outcomes(client, item.url, scrub, manifest.requiresAccessToken !== false).pipe(
            Stream.runForEach((o) =>
              Effect.sync(() => {
                for (const issue of o.issue) {
                  for (const text of [issue.diagnostics ?? "", issue.details?.text ?? ""]) {
                    // (a pair naming the same resource twice is no remap: a server that says it kept the id)
                    for (const m of text.matchAll(REMAP))
                      if (m[1] !== m[3] || m[2] !== m[4]) idMap.push([`${m[1]}/${m[2]}`, `${m[3]}/${m[4]}`])
                  }
                }
              }),
            ),
          )
        }
      }
      for (const item of manifest.error) {
        const entry = entryOf(Option.getOrUndefined(importInputUrl(item)))
        const f = entry !== undefined ? perFile.get(entry.path) : undefined
        if (item.url === undefined) {
          if (f !== undefined) {
            f.rejected += item.count ?? 0
            f.unlisted += item.count ?? 0
          }
          continue
        }
        yield* outcomes(client, item.url, scrub, manifest.requiresAccessToken !== false).pipe(
          Stream.runForEach((outcome) =>
            Effect.sync(() => {
              const line = lineOf(outcome)
              // Without an input URL, the outcome's own text may name the file.
              const own =
                entry ??
                files.find((x) => outcome.issue.some((i) => (i.diagnostics ?? "").includes(`/${x.path}`)))
              const path = own?.path ?? "(unknown file)"
              const counted = own !== undefined ? perFile.get(own.path) : undefined
              if (counted !== undefined) counted.rejected++
              const r: Rejected = {
                source: line !== undefined ? `${path}:${line}` : path,
                path,
                ...(line !== undefined ? { line } : {}),
                type: own?.type ?? "Unknown",
                outcome,
              }
              rejectedCount++
              if (options.onRejected === undefined) rejected.push(r)
              return r
            }).pipe(Effect.flatMap((r) => (options.onRejected ? options.onRejected(r) : Effect.void))),
          ),
        )
      }
    }

    return { loaded, rejected, rejectedCount, idMap, perFile, report, transactionTime, uncounted }
  })

const resolveFlavour = (options: BulkImportOptions): Effect.Effect<Flavour, ImportError> =>
  Effect.gen(function* () {
    if (options.flavour !== undefined) return options.flavour
    const cs =
      options.capabilities ??
      (yield* options.client
        .capabilities()
        .pipe(
          Effect.mapError(
            fromClientError(
              resolveUrl(options.client.baseUrl, "metadata"),
              "reading the CapabilityStatement failed",
              (s) => s,
            ),
          ),
        ))
    if (!Capability.supportsOperation(cs, "import")) {
      return yield* new ImportError({
        reason: "NotSupported",
        url: redactUrl(options.client.baseUrl),
        detail:
          "the target's CapabilityStatement declares no $import operation; use the transaction strategy",
      })
    }
    return Option.getOrElse(detectFlavour(cs), () => "smart" as const)
  })

type Completion =
  | { readonly _tag: "Manifest"; readonly manifest: ImportManifest }
  | { readonly _tag: "Report"; readonly outcome: OperationOutcome }

/** Polls until 200 and decodes the body (a manifest, or HAPI's OperationOutcome report). */
const waitForCompletion = (
  client: FhirClient,
  statusUrl: string,
  options: BulkImportOptions,
  emit: (e: BulkImportEvent) => Effect.Effect<void>,
  scrub: (s: string) => string,
): Effect.Effect<Completion, ImportError> => {
  const shown = redactUrl(statusUrl)
  const maxInterval = Duration.seconds(60)
  const loop = Effect.gen(function* () {
    let interval = Duration.decode(options.pollInterval ?? Duration.seconds(1))
    const next = () => {
      const w = interval
      interval = Duration.min(Duration.times(interval, 1.5), maxInterval)
      return w
    }
    for (;;) {
      const result = yield* client
        .request(
          HttpClientRequest.get(statusUrl).pipe(HttpClientRequest.setHeader("accept", "application/json")),
        )
        .pipe(Effect.either)
      if (result._tag === "Left") {
        const e = result.left
        const gone = e instanceof FhirError && e.reason === "Status" && (e.status === 404 || e.status === 410)
        if (e instanceof FhirError && !gone && isTransientPollFailure(e)) {
          const wait = next()
          yield* emit({
            event: "import.bulk.retry",
            detail: scrub(e.message),
            waitMillis: Duration.toMillis(wait),
          })
          yield* Effect.sleep(wait)
          continue
        }
        if (e instanceof AuthError)
          return yield* fromClientError(statusUrl, "polling the $import job failed", scrub)(e)
        return yield* new ImportError({
          reason: "Target",
          url: shown,
          detail: scrub(
            gone
              ? `the $import job is gone (${e.status}): it was cancelled or expired on the target; run the import again`
              : `the $import job failed: ${e.message}; check the target's logs, then run the import again (it is idempotent)`,
          ),
        })
      }
      const response = result.right
      if (response.status === 200) {
        const json = yield* response.json.pipe(
          Effect.mapError(
            (cause) =>
              new ImportError({
                reason: "Target",
                url: shown,
                detail: "the $import completion is not JSON; the target's $import answer is broken",
                cause,
              }),
          ),
        )
        if (
          typeof json === "object" &&
          json !== null &&
          (json as { resourceType?: unknown }).resourceType === "OperationOutcome"
        ) {
          const outcome = decodeOutcome(json)
          if (Option.isSome(outcome)) return { _tag: "Report", outcome: outcome.value } satisfies Completion
        }
        const manifest = yield* decodeManifest(json).pipe(
          Effect.mapError(
            () =>
              new ImportError({
                reason: "Target",
                url: shown,
                detail:
                  "the $import completion is neither an import manifest nor an OperationOutcome; the target's $import answer is broken",
              }),
          ),
        )
        return { _tag: "Manifest", manifest } satisfies Completion
      }
      // 202 (or another 2xx): still running.
      yield* Effect.ignore(response.text)
      const progress = response.headers["x-progress"]
      yield* emit({
        event: "import.bulk.progress",
        progress: progress === undefined ? undefined : scrub(progress),
      })
      const now = yield* Clock.currentTimeMillis
      const wait = Option.match(retryAfter(response.headers["retry-after"], now, Duration.minutes(10)), {
        onNone: next,
        // A zero Retry-After would make us spin: never poll faster than every 100 ms.
        onSome: (d) => Duration.max(d, Duration.millis(100)),
      })
      yield* Effect.sleep(wait)
    }
  })
  const timeout = Duration.decode(options.timeout ?? Duration.hours(24))
  return loop.pipe(
    Effect.timeoutFail({
      duration: timeout,
      onTimeout: () =>
        new ImportError({
          reason: "Timeout",
          url: shown,
          detail: `the $import job did not finish within ${Duration.format(timeout)}; it was cancelled, raise --timeout and run the import again`,
        }),
    }),
  )
}

/** The OperationOutcomes of an NDJSON outcome file on the target, token scrubbed. */
const outcomes = (
  client: FhirClient,
  url: string,
  scrub: (s: string) => string,
  auth: boolean,
): Stream.Stream<OperationOutcome, ImportError> =>
  client.stream(url, { headers: { accept: fhirNdjson }, auth }).pipe(
    Ndjson.parse({ file: redactUrl(url), resourceType: "OperationOutcome" }),
    Stream.mapError((e) =>
      e instanceof Ndjson.NdjsonError
        ? new ImportError({
            reason: "Target",
            url: redactUrl(url),
            detail: scrub(
              `the $import outcome file is not NDJSON OperationOutcomes (${e.message}); the target's answer is broken`,
            ),
          })
        : fromClientError(url, "downloading an $import outcome file failed", scrub)(e),
    ),
    Stream.mapEffect((item) => {
      const decoded = decodeOutcome(JSON.parse(scrub(JSON.stringify(item.value))))
      return Option.isSome(decoded)
        ? Effect.succeed(decoded.value)
        : Effect.fail(
            new ImportError({
              reason: "Target",
              url: redactUrl(url),
              detail: `line ${item.line} of the $import outcome file is not a valid OperationOutcome; the target's answer is broken`,
            }),
          )
    }),
  )
