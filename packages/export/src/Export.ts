/**
 * `ferry export` as a function: kick-off (or re-attach to the job a killed run started), poll, download
 * every file in parallel with resume, fetch attachments, write the archive manifest, release the job.
 * Falls back to a search crawl when the source has no `$export`. Every step is journaled, so running the
 * same export again on the same archive continues where it stopped.
 */
import * as NFS from "node:fs"
import * as Path from "node:path"
import * as Archive from "@ferry/archive/Archive"
import type { ArchiveError } from "@ferry/archive/ArchiveError"
import * as ArchiveAttachments from "@ferry/archive/Attachments"
import { checksumsCoverMetadata, type FileEntry, type Manifest } from "@ferry/archive/Manifest"
import type { ExportManifest, OutputFile } from "@ferry/core/BulkManifest"
import type { Resource } from "@ferry/core/Ids"
import * as CapabilityStatement from "@ferry/core/CapabilityStatement"
import { type AuthError, FhirError } from "@ferry/core/Errors"
import type { FhirClient } from "@ferry/core/FhirClient"
import { originOf, redactUrl, sameOrigin, transportProblem } from "@ferry/core/Http"
import * as Ndjson from "@ferry/core/Ndjson"
import { printable } from "@ferry/core/OperationOutcome"
import { Cause, Clock, Duration, Effect, Exit, Fiber, Option, Queue, Stream } from "effect"
import * as Attachments from "./Attachments.js"
import * as ExportedBinaries from "./internal/ExportedBinaries.js"
import * as Crawl from "./Crawl.js"
import * as Download from "./Download.js"
import { ExportError } from "./ExportError.js"
import * as Kickoff from "./Kickoff.js"
import * as Organized from "./Organized.js"
import * as ArchiveDir from "./internal/ArchiveDir.js"
import type { ArchiveFile } from "./internal/ArchiveDir.js"
import * as Poll from "./Poll.js"

export type Mode = "auto" | "bulk" | "crawl"

/**
 * One progress event (also appended to `events.ndjson`); never holds tokens or resource bodies.
 * A few events only go to `onEvent` (they are for a live display, not the journal):
 * - `file-progress` `{ kind, type, path, received }`: network bytes received so far for a file being
 *   downloaded, at most every 250 ms per file;
 * - `file-resumed` `{ kind, type, path, count, bytes }`: a file an earlier run already finished;
 * - `attachment` `{ url, sha256, size }`: one attachment stored (the log gets one `attachments` line per file).
 * For a pipeline (`ferry migrate`), two events say what is coming and what can be used:
 * - `files-planned` `{ mode, files: [{ kind, type, path, count }] }` once the manifest is known (again after a
 *   re-kick-off); in crawl mode `{ mode: "crawl", types }`: one file per non-empty type, paths not yet known;
 *   for organizeOutputBy output only once every file is split by type (its data files are not known before);
 * - `file-ready` `{ kind, type, path, count, bytes, sha256, compression }`: the file AND every attachment
 *   its resources point to are in the archive (also for files an earlier run finished); a crawled type
 *   that turned out empty gives `file-empty` `{ type }` instead.
 * organizeOutputBy output (Organized.ts) adds `organized-file` `{ path, count, bytes }` (a file of blocks is
 * staged and checked) and `distributed` `{ path, files, headers, duplicates }` (it was split by type; `file`
 * follows for each data file it gave).
 * `manifest-part` `{ output, deleted, error, started }`: a partial manifest (`allowPartialManifests`) listed
 * `started` more files, whose downloads start before the job is done (their `file` events may come before
 * `manifest`).
 * `early-dropped` `{ files }`: the job of those partial manifests vanished or failed before its manifest was
 * complete; the files it gave were dropped (a new job's files take their places).
 * `rekickoff-dropped` `{ files, paths, detail }`: before a new kick-off for expired files, the finished files of
 * the types that still had unfinished ones were dropped: the new job's files of those types replace them all,
 * at the same paths (a pipeline that used them must take the new ones: `file-ready` comes again).
 * `manifest` (and `reattach` with a stored manifest) carry `types`: per resource type of the output
 * files `{ files, resources }`, `resources` null when a file of that type has no manifest `count`.
 */
export interface ExportEvent {
  readonly event: string
  readonly [field: string]: unknown
}

export interface ExportOptions {
  readonly client: FhirClient
  /** The archive directory. */
  readonly out: string
  /** How the user named `out`, for messages (default `--out`; `ferry migrate` says `--archive`). */
  readonly outFlag?: string
  /**
   * The caller holds the archive's lock already (`Archive.lock`, for longer than the export: `ferry migrate`
   * holds it for the whole migration); the export then does not take it again.
   */
  readonly lockHeld?: boolean
  /** `since: "auto"`: which finished sibling archives may be continued (see `Continues.accepts`). */
  readonly sinceAccepts?: (dir: string) => boolean
  /**
   * Finished files the caller removed on purpose (archive-relative paths; `ferry migrate --prune-staged`): not
   * downloaded again when missing. Any other finished file found missing or changed on a rerun is.
   */
  readonly gone?: (path: string) => boolean
  /** What to export. `since: "auto"` takes the `transactionTime` of the newest finished sibling archive. */
  readonly params: Kickoff.ExportParamsInput
  readonly mode?: Mode
  /** Parallel downloads (default 4). */
  readonly parallel?: number
  /** Overall limit for waiting on the job (default 24 h). */
  readonly timeout?: Duration.DurationInput
  /** Leave the job on the server after success (no DELETE). */
  readonly keepJob?: boolean
  /** gzip the data files (`.ndjson.gz`; default false). */
  readonly gzip?: boolean
  /** Fetch attachments (default true). */
  readonly attachments?: boolean
  /**
   * Finish the archive although some attachments could not be fetched or verified (a dead link at the source:
   * without this, every run fails on it): they are left out, each in `events.ndjson`, their resources keep
   * the source URL, and the summary counts them (`attachments.failed`).
   */
  readonly allowMissingAttachments?: boolean
  /**
   * Finish the archive although the server's error files report errors (severity `error` or `fatal`: data its job
   * did not export). Without this such an export fails after downloading everything, the archive left
   * unfinished (so no `--since auto` continues from it, and no import takes it) and the job kept.
   */
  readonly allowExportErrors?: boolean
  /** First status-poll interval without Retry-After (default 1 s). */
  readonly pollInterval?: Duration.DurationInput
  /** Called for every event (the CLI prints them), including the display-only ones above. */
  readonly onEvent?: (event: ExportEvent) => Effect.Effect<void>
  /** Recorded in the archive manifest (default `{ name: "ferry", version: "dev" }`). */
  readonly tool?: { readonly name: string; readonly version: string }
  /**
   * Download order of the manifest's files by resource type: lower ranks first, manifest order within a rank
   * (default: manifest order). `ferry migrate` asks for referenced types first so import waves start early.
   * The archive lists its files in manifest order either way.
   */
  readonly downloadRank?: (type: string) => number
  /** A file's attachments are fetched while it downloads, whenever this many are found (default 1000). */
  readonly attachmentBatch?: number
  /**
   * Origins attachments are fetched from besides the source's own and those its manifests name files on
   * (`https://docs.example.org`), or `"any"`. An attachment URL elsewhere is not fetched (a failed attachment).
   */
  readonly attachmentOrigins?: ReadonlyArray<string> | "any"
}

export interface TypeSummary {
  readonly resources: number
  readonly files: number
  readonly bytes: number
}

export type { ArchiveFile }

export interface ExportSummary {
  readonly out: string
  readonly source: string
  readonly mode: "bulk" | "crawl"
  readonly level: Kickoff.Level
  readonly transactionTime: string
  readonly since: string | undefined
  readonly resources: number
  readonly bytes: number
  readonly types: Readonly<Record<string, TypeSummary>>
  readonly deleted: number
  readonly errors: number
  readonly attachments: {
    /** The archive's attachment blobs (like `resources`, whatever run fetched them). */
    readonly total: number
    /** Fetched, already stored (`skipped`) and their bytes: this run's. */
    readonly fetched: number
    readonly skipped: number
    readonly bytes: number
    /** Left out (`allowMissingAttachments`); 0 otherwise (the export fails instead). */
    readonly failed: number
  }
  /** The run continued an earlier, interrupted one. */
  readonly resumed: boolean
  /** Re-kick-offs after expired files. */
  readonly rekickoffs: number
  readonly released: boolean
  /** `_elements` was used: the data is partial and must not be imported. */
  readonly subsetted: boolean
  readonly files: ReadonlyArray<ArchiveFile>
}

/** The journal record of a kick-off. */
interface JobRecord {
  readonly statusUrl: string
}

interface PlannedFile {
  readonly key: string
  readonly kind: "output" | "deleted" | "error"
  readonly type: string | undefined
  readonly url: string
  readonly count: number | undefined
  /** Archive-relative path. */
  readonly path: string
  /**
   * [STU3] An `organizeOutputBy` file: `path` is its staging place, and `organized` its index among the
   * manifest's organized files (Organized.ts distributes it into per-type data files).
   */
  readonly organized?: number
}

const pad = (n: number): string => String(n).padStart(3, "0")

/** Archive paths and journal keys for every file of a manifest (stable across re-kick-offs). */
export const planFiles = (manifest: ExportManifest, gzip = false): ReadonlyArray<PlannedFile> => {
  const counters = new Map<string, number>()
  const next = (k: string) => {
    const n = counters.get(k) ?? 0
    counters.set(k, n + 1)
    return n
  }
  const item =
    (kind: PlannedFile["kind"], dir: string, fallbackType: string | undefined) => (f: OutputFile) => {
      const type = f.type ?? fallbackType
      const stem = type ?? "output"
      const n = next(`${kind}:${stem}`)
      return {
        key: `file:${kind}:${stem}:${n}`,
        kind,
        type: kind === "output" ? f.type : fallbackType,
        url: f.url,
        count: f.count,
        path: `${dir}/${stem}.${pad(n)}.ndjson${gzip ? ".gz" : ""}`,
      } satisfies PlannedFile
    }
  let organized = 0
  const output = (f: OutputFile): PlannedFile => {
    if (!Organized.isOrganized(manifest, f)) return item("output", "data", undefined)(f)
    const n = organized++
    // keyed by the URL too: a re-kick-off's files are other files, whatever their index
    return {
      // (its signature left out: the same file under a re-signed link keeps its key, `journalable`)
      key: `organized:${n}:${Organized.urlTag(redactUrl(f.url))}`,
      kind: "output",
      type: undefined,
      url: f.url,
      count: f.count,
      path: `${Organized.STAGING}/organized.${pad(n)}.ndjson`,
      organized: n,
    }
  }
  return [
    ...manifest.output.map(output),
    ...manifest.deleted.map(item("deleted", "deleted", "Bundle")),
    ...manifest.error.map(item("error", "errors", "OperationOutcome")),
  ]
}

/** New URLs from one status URL at most this often per run before Ferry starts a new job instead. */
const MAX_RENEWALS = 3

/**
 * Whether `again` (the manifest fetched again from the same status URL) is the same job's output under new
 * URLs: the same transactionTime and the same files (kind, type, count, in order, at the same address up to
 * the query string), and a new URL for at least one of the files still to download (`unfinished`).
 */
export const renewsUrls = (
  before: ExportManifest,
  again: ExportManifest,
  unfinished: ReadonlyArray<PlannedFile>,
  gzip = false,
): boolean => {
  if (again.transactionTime !== before.transactionTime) return false
  const a = planFiles(before, gzip)
  const b = planFiles(again, gzip)
  if (a.length !== b.length) return false
  const byKey = new Map(b.map((f) => [f.key, f]))
  // the same file: same place in the manifest, type and count, and the same address up to the query (where
  // signed links carry their signature)
  const address = (url: string) => url.replace(/[?#].*$/, "")
  for (const f of a) {
    const g = byKey.get(f.key)
    if (g === undefined || g.type !== f.type || g.count !== f.count || g.path !== f.path) return false
    if (address(g.url) !== address(f.url)) return false
  }
  return unfinished.some((f) => byKey.get(f.key)?.url !== f.url)
}

/** Per-type totals of the output files a manifest announces (for a progress display). */
export const manifestTypes = (
  manifest: ExportManifest,
): Record<string, { files: number; resources: number | null }> => {
  const types: Record<string, { files: number; resources: number | null }> = {}
  for (const f of manifest.output) {
    const type = f.type ?? "Resource"
    const t = types[type] ?? { files: 0, resources: 0 }
    types[type] = {
      files: t.files + 1,
      resources: t.resources === null || f.count === undefined ? null : t.resources + f.count,
    }
  }
  return types
}

/** At most one `file-progress` event per file per this many milliseconds. */
const FILE_PROGRESS_EVERY_MS = 250
/**
 * A file's attachments are fetched in batches of this many while it downloads (`attachmentBatch`), so about
 * this many of its references are held at once (at 1M resources four 10k-line DocumentReference files held
 * 40k of them, ≈ 9 MB of the heap; docs/benchmarks.md).
 */
const ATTACHMENT_BATCH = 1000
const noAttachments: Attachments.BatchResult = { fetched: 0, skipped: 0, bytes: 0, failed: 0 }
const sumBatches = (a: Attachments.BatchResult, b: Attachments.BatchResult): Attachments.BatchResult => ({
  fetched: a.fetched + b.fetched,
  skipped: a.skipped + b.skipped,
  bytes: a.bytes + b.bytes,
  failed: a.failed + b.failed,
})

/**
 * An output file the server no longer serves: expired (410, or 403 from an expired signed link), or gone with
 * its job (404: the job was deleted or purged, say while a killed run waited for its rerun). A new job follows.
 */
const isExpired = (e: unknown): e is FhirError =>
  e instanceof FhirError &&
  e.reason === "Status" &&
  (e.status === 410 || e.status === 403 || e.status === 404)

/**
 * The manifest as the journal keeps it: each file's URL through `redactUrl` (a signed link's signature, any user
 * info, gone), marked `linksRedacted` when that changed one. Such a URL is a credential for the whole file: the
 * journal must not hold it. A run that resumes fetches the links again from the job's status URL.
 */
export const journalable = (manifest: ExportManifest): ExportManifest & { readonly linksRedacted?: true } => {
  let changed = false
  const redact = (files: ExportManifest["output"]) =>
    files.map((f) => {
      const url = redactUrl(f.url)
      if (url === f.url) return f
      changed = true
      return { ...f, url }
    })
  const out = {
    ...manifest,
    output: redact(manifest.output),
    deleted: redact(manifest.deleted),
    error: redact(manifest.error),
  }
  return changed ? { ...out, linksRedacted: true } : out
}

/**
 * Whether `again` (the job's manifest fetched anew) lists the same files as `journaled` (its links redacted): the
 * same transactionTime, and file by file the same type, count and address once redacted. (Not `renewsUrls`: the
 * keys of organizeOutputBy files are made from their URLs.)
 */
export const sameFiles = (journaled: ExportManifest, again: ExportManifest): boolean => {
  if (again.transactionTime !== journaled.transactionTime) return false
  const address = (url: string) => redactUrl(url).replace(/[?#].*$/, "")
  const same = (a: ExportManifest["output"], b: ExportManifest["output"]) =>
    a.length === b.length &&
    a.every(
      (f, i) => f.type === b[i]!.type && f.count === b[i]!.count && address(f.url) === address(b[i]!.url),
    )
  return (
    same(journaled.output, again.output) &&
    same(journaled.deleted, again.deleted) &&
    same(journaled.error, again.error)
  )
}

/** Whether a journaled manifest's links lost their secrets (`journalable`): they must be fetched again. */
export const redactedLinks = (journaled: unknown): boolean =>
  typeof journaled === "object" &&
  journaled !== null &&
  (journaled as { linksRedacted?: unknown }).linksRedacted === true

/** What a finished archive must share with an export for `--since auto` to continue from it. */
export interface Continues {
  /** The source's base URL. */
  readonly baseUrl: string
  /** The export's parameters (`since` aside). */
  readonly params: Kickoff.ExportParamsInput
  /**
   * Which finished archives may be continued besides (`ferry migrate`: those migrated into the same target; an
   * archive of another target's migration must not move the delta's start past changes this target never
   * got). Default: every one.
   */
  readonly accepts?: (dir: string) => boolean
}

/** Parameters that do not change which resources an archive holds up to its transactionTime. */
const NOT_SELECTING = new Set([
  "_since",
  "_until",
  "_outputFormat",
  "allowPartialManifests",
  "organizeOutputBy",
])

const valuesOf = (v: string | ReadonlyArray<string> | undefined): ReadonlyArray<string> =>
  v === undefined ? [] : typeof v === "string" ? [v] : v

/**
 * What an export asked for, in a form two runs can compare: keys sorted, and what asks for nothing left out
 * (undefined, false, empty lists and strings). `ferry migrate` and `ferry export` spell the same selection
 * with different fields (migrate leaves out the parameters it has no flags for), and an archive one of them
 * started must be resumable by the other.
 */
const canonicalRequest = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) => {
    if (v === null || typeof v !== "object" || Array.isArray(v)) return v
    const out: Record<string, unknown> = {}
    for (const k of Object.keys(v).sort()) {
      const x = (v as Record<string, unknown>)[k]
      if (x === undefined || x === false || x === "" || (Array.isArray(x) && x.length === 0)) continue
      out[k] = x
    }
    return out
  })

/** The canonical form of a journaled request (`raw`: the JSON text an earlier run recorded). */
const recordedRequest = (raw: unknown): string | undefined => {
  if (typeof raw !== "string") return undefined
  try {
    return canonicalRequest(JSON.parse(raw))
  } catch {
    return undefined
  }
}

/**
 * Whether two base URLs name the same source as archives record it (`redactUrl`: no credentials, secret
 * parameters masked), trailing slashes aside.
 */
const sameSource = (a: string, b: string): boolean => {
  const recorded = (u: string) => redactUrl(u).replace(/\/+$/, "")
  return recorded(a) === recorded(b)
}

/**
 * Whether the finished archive `m` holds everything `like` asks for up to its transactionTime: the same source,
 * level and Group, every requested type (an archive of all types covers any), and the same filters. An archive
 * of other types, another Group or another server beside it must not move the delta's start.
 */
const continuesFrom = (m: Manifest, like: Continues, wanted: Kickoff.ExportParams): boolean =>
  sameSource(m.source.baseUrl, like.baseUrl) &&
  m.request.level === wanted.level &&
  m.request.groupId === wanted.groupId &&
  selectsAll(m.request.parameters, requestParameters(wanted))

/**
 * Whether the archive `later` asked for everything the archive `earlier` asked for (the same source, level and
 * Group, every type of it, the same filters): up to its own transactionTime it holds all `earlier` would.
 */
export const holdsRequestOf = (later: Manifest, earlier: Manifest): boolean =>
  sameSource(later.source.baseUrl, earlier.source.baseUrl) &&
  later.request.level === earlier.request.level &&
  later.request.groupId === earlier.request.groupId &&
  selectsAll(later.request.parameters, earlier.request.parameters)

/** Whether the kick-off parameters `theirs` select every resource `mine` select (what does not select aside). */
const selectsAll = (
  theirs: Manifest["request"]["parameters"],
  mine: Manifest["request"]["parameters"],
): boolean => {
  for (const key of new Set([...Object.keys(mine), ...Object.keys(theirs)])) {
    if (NOT_SELECTING.has(key)) continue
    if (key === "_type") {
      const had = valuesOf(theirs._type).flatMap((t) => t.split(","))
      const want = valuesOf(mine._type).flatMap((t) => t.split(","))
      if (had.length > 0 && (want.length === 0 || want.some((t) => !had.includes(t)))) return false
      continue
    }
    const a = [...valuesOf(mine[key])].sort()
    const b = [...valuesOf(theirs[key])].sort()
    if (a.length !== b.length || a.some((v, i) => v !== b[i])) return false
  }
  return true
}

/**
 * The newest `transactionTime` among the finished archives next to `out` that `like` continues (for
 * `--since auto`; see `continuesFrom`).
 */
export const previousTransactionTime = (
  out: string,
  like: Continues,
): Effect.Effect<Option.Option<string>, ExportError> => Effect.map(siblings(out, like), (s) => s.since)

/**
 * `previousTransactionTime`, and how many finished archives of the same source and request `like.accepts`
 * passed over (a migration's into another target): a full export said with why those were not continued.
 */
const siblings = (
  out: string,
  like: Continues,
): Effect.Effect<{ readonly since: Option.Option<string>; readonly refused: number }, ExportError> =>
  Effect.gen(function* () {
    const wanted = yield* Kickoff.validate(Kickoff.params({ ...like.params, since: undefined }))
    const abs = Path.resolve(out)
    const parent = Path.dirname(abs)
    const entries = yield* ArchiveDir.fsTry(parent, "list", async () => {
      try {
        return await NFS.promises.readdir(parent, { withFileTypes: true })
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return []
        throw e
      }
    })
    let best: string | undefined
    let refused = 0
    for (const entry of entries) {
      if (!entry.isDirectory()) continue
      const dir = Path.join(parent, entry.name)
      if (dir === abs) continue
      const manifest = yield* ArchiveDir.finishedManifest(dir)
      if (Option.isNone(manifest) || !continuesFrom(manifest.value, like, wanted)) continue
      if (like.accepts !== undefined && !like.accepts(dir)) {
        refused++
        continue
      }
      const t = manifest.value.transactionTime
      if (typeof t === "string" && (best === undefined || Date.parse(t) > Date.parse(best))) best = t
    }
    return { since: Option.fromNullable(best), refused }
  })

/**
 * The OperationOutcomes of the archive's error files: how many report an error (an issue of severity `error` or
 * `fatal`: something the job did not export) and how many only warnings or information, with the first words of
 * each kind (the server's, control characters shown as U+FFFD).
 */
const tallyErrorFiles = (
  root: string,
  errorFiles: ReadonlyArray<ArchiveFile>,
): Effect.Effect<
  {
    readonly errors: number
    readonly notes: number
    readonly firstError?: string
    readonly firstNote?: string
  },
  ExportError
> =>
  Effect.gen(function* () {
    let errors = 0
    let notes = 0
    let firstError: string | undefined
    let firstNote: string | undefined
    for (const file of errorFiles) {
      if (file.count === 0) continue
      yield* Ndjson.readFile(Path.join(root, file.path), {
        label: file.path,
        gzip: file.compression === "gzip",
      }).pipe(
        Stream.runForEach((item) =>
          Effect.sync(() => {
            const issues: ReadonlyArray<unknown> = Array.isArray(item.value.issue) ? item.value.issue : []
            const said = (i: unknown): string => {
              const o = (typeof i === "object" && i !== null ? i : {}) as Record<string, unknown>
              const details = o.details as { text?: unknown } | undefined
              const words =
                typeof o.diagnostics === "string"
                  ? o.diagnostics
                  : typeof details?.text === "string"
                    ? details.text
                    : typeof o.code === "string"
                      ? o.code
                      : "no diagnostics"
              return `"${printable(words.length > 200 ? `${words.slice(0, 200)}…` : words)}" in ${file.path}:${item.line}`
            }
            const bad = issues.find((i) => {
              const severity = (i as { severity?: unknown } | null)?.severity
              return severity === "error" || severity === "fatal"
            })
            if (bad !== undefined) {
              errors++
              firstError ??= said(bad)
            } else {
              notes++
              firstNote ??=
                issues.length > 0
                  ? said(issues[0])
                  : `an OperationOutcome without issues in ${file.path}:${item.line}`
            }
          }),
        ),
        Effect.mapError(
          (e) =>
            new ExportError({
              reason: "Archive",
              detail: `${e.message}; the archive's error file could not be read`,
              cause: e,
            }),
        ),
      )
    }
    return {
      errors,
      notes,
      ...(firstError !== undefined ? { firstError } : {}),
      ...(firstNote !== undefined ? { firstNote } : {}),
    }
  })

/** The kick-off parameters as the archive manifest records them. */
const requestParameters = (p: Kickoff.ExportParams): Record<string, string | ReadonlyArray<string>> => {
  const out: Record<string, Array<string>> = {}
  for (const [k, v] of Kickoff.query(p)) out[k] = [...(out[k] ?? []), v]
  if (p.patients.length > 0) out.patient = [...p.patients]
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.length === 1 ? v[0]! : v]))
}

/** The summary of a finished archive. */
const summaryOf = (
  root: string,
  manifest: Manifest,
  run: { resumed: boolean; rekickoffs: number; released: boolean; mode: "bulk" | "crawl" },
): ExportSummary => {
  const files: Array<ArchiveFile> = [
    ...manifest.files.map((f) => ({ ...f, kind: "output" as const })),
    ...manifest.deleted.map((f) => ({ ...f, kind: "deleted" as const })),
    ...manifest.errors.map((f) => ({ ...f, kind: "error" as const })),
  ]
  const types: Record<string, { resources: number; files: number; bytes: number }> = {}
  let resources = 0
  for (const f of manifest.files) {
    resources += f.count
    const t = types[f.type] ?? { resources: 0, files: 0, bytes: 0 }
    types[f.type] = t
    t.resources += f.count
    t.files += 1
    t.bytes += f.bytes
  }
  const elements = manifest.request.parameters._elements
  return {
    out: root,
    source: manifest.source.baseUrl,
    mode: run.mode,
    level: manifest.request.level,
    transactionTime: manifest.transactionTime ?? "",
    since: manifest.previous?.transactionTime,
    resources,
    bytes: files.reduce((n, f) => n + f.bytes, 0),
    types,
    deleted: manifest.deleted.reduce((n, f) => n + f.count, 0),
    errors: manifest.errors.reduce((n, f) => n + f.count, 0),
    // an archive found complete: this run fetched nothing
    attachments: { total: manifest.attachments.count, fetched: 0, skipped: 0, bytes: 0, failed: 0 },
    resumed: run.resumed,
    rekickoffs: run.rekickoffs,
    released: run.released,
    subsetted: elements !== undefined && elements.length > 0,
    files,
  }
}

const levelTarget = (level: Kickoff.Level): string =>
  level === "system" ? "system" : level === "patient" ? "Patient" : "Group"

/** Runs (or resumes) an export into `options.out`. */
export const run = Effect.fn("Export.run")(function* (options: ExportOptions) {
  const client = options.client
  const parallel = Math.max(1, options.parallel ?? 4)
  // `--since auto` is resolved before the archive is opened; a resumed run keeps what its first run chose.
  let since = options.params.since
  /** Finished archives of this source and request beside `out` that `sinceAccepts` passed over. */
  let passedOver = 0
  if (since === "auto") {
    const found = yield* siblings(options.out, {
      baseUrl: client.baseUrl,
      params: options.params,
      ...(options.sinceAccepts !== undefined ? { accepts: options.sinceAccepts } : {}),
    })
    since = Option.getOrUndefined(found.since)
    passedOver = found.refused
  }
  const requested = JSON.stringify(options.params)
  const tentative = yield* Kickoff.validate(Kickoff.params({ ...options.params, since }))
  const archive = yield* ArchiveDir.open(
    options.out,
    {
      tool: options.tool ?? { name: "ferry", version: "dev" },
      source: { baseUrl: redactUrl(client.baseUrl) },
      request: {
        level: tentative.level,
        ...(tentative.groupId !== undefined ? { groupId: tentative.groupId } : {}),
        url: `${client.baseUrl}/${Kickoff.path(tentative)}`,
        parameters: requestParameters(tentative),
      },
      ...(since !== undefined ? { previous: { transactionTime: since } } : {}),
    },
    options.lockHeld === true,
  )
  const journal = archive.journal
  /** The names in a folder of the archive (none when it is not there). */
  const namesIn = (dir: string) =>
    ArchiveDir.fsTry(dir, "list", () =>
      NFS.promises.readdir(archive.path(dir)).catch((e: NodeJS.ErrnoException) => {
        if (e.code === "ENOENT") return []
        throw e
      }),
    )
  /**
   * Once every file is finished, a `.partial` left is of a file no run will write (an earlier run's under
   * another name: `--gzip` changed between the runs), holding resources the manifest does not list. With
   * `listed` (the paths the manifest is about to list), a finished file of no journal line goes too: an earlier
   * run renamed it and was killed before journaling it, and this run wrote its resources under another name
   * (`--gzip` switched). Import and verify refuse an archive holding data the manifest does not list.
   */
  const removeStrays = (listed?: ReadonlySet<string>) =>
    Effect.forEach(["data", "deleted", "errors"], (dir) =>
      Effect.flatMap(namesIn(dir), (names) =>
        Effect.forEach(
          names.filter(
            (n) =>
              n.endsWith(".partial") ||
              (listed !== undefined &&
                (n.endsWith(".ndjson") || n.endsWith(".ndjson.gz")) &&
                !listed.has(`${dir}/${n}`)),
          ),
          (name) =>
            ArchiveDir.fsTry(
              `${dir}/${name}`,
              "remove a file of an earlier run the manifest will not list",
              () => NFS.promises.rm(archive.path(`${dir}/${name}`), { force: true }),
            ),
        ),
      ),
    )
  const emit = (event: string, fields: Record<string, unknown> = {}) =>
    archive
      .event(event, fields)
      .pipe(Effect.zipRight(options.onEvent ? options.onEvent({ event, ...fields }) : Effect.void))
  /**
   * Releases the finished job (DELETE on its status URL) and journals it, so that a rerun of an archive whose
   * run was killed between its completion and the release does it then; a job already gone (404/410) counts as
   * released. Whether the server took the DELETE.
   */
  const releaseJob = (statusUrl: string) =>
    Effect.gen(function* () {
      const result = yield* Poll.release(client, statusUrl).pipe(Effect.either)
      const gone = result._tag === "Left" && Poll.isJobGone(result.left)
      if (result._tag === "Right") yield* emit("released", { statusUrl: redactUrl(statusUrl) })
      else if (!gone) yield* emit("warning", { detail: `could not release the job: ${result.left.message}` })
      if (result._tag === "Right" || gone) yield* journal.append("released", true)
      return result._tag === "Right"
    })
  /** Whether the file at `path` is there with `bytes` bytes (a cheap check, not its hash). */
  const onDisk = (path: string, bytes: number): boolean => {
    try {
      return NFS.statSync(path).size === bytes
    } catch {
      return false
    }
  }
  /** A display-only event: to `onEvent`, not to `events.ndjson`. */
  const notify = (event: string, fields: Record<string, unknown>): Effect.Effect<void> =>
    options.onEvent ? options.onEvent({ event, ...fields }) : Effect.void

  // What was asked; a rerun on the same archive must ask the same thing, of the same source.
  // Until a job was started (or a crawl begun), a failed first attempt may be retried with other options.
  const started = journal.isDone("job") || journal.isDone("mode") || archive.manifest.complete
  const recorded = journal.result("request")
  const previousRequest = started ? recorded : Option.none()
  const otherSource = !sameSource(archive.manifest.source.baseUrl, client.baseUrl)
  if (started && otherSource) {
    const theirs = archive.manifest.source.baseUrl
    return yield* new ExportError({
      reason: "Config",
      detail: `${archive.root} holds an export of ${theirs}, not of ${redactUrl(client.baseUrl)}; use another ${options.outFlag ?? "--out"} directory for this source, or give ${theirs} as the source`,
    })
  }
  if (
    (Option.isSome(previousRequest) &&
      recordedRequest((previousRequest.value as { raw?: unknown }).raw) !==
        canonicalRequest(options.params)) ||
    (started && Option.isNone(previousRequest))
  ) {
    const flag = options.outFlag ?? "--out"
    return yield* new ExportError({
      reason: "Config",
      detail: Option.isNone(recorded)
        ? // the journal lost (deleted, or a copy made without it): whether this is the same export cannot be told
          `${archive.root} holds an export whose journal.ndjson records no request (the file was removed or damaged), so this run cannot tell whether it continues that export; ${archive.manifest.complete ? "the archive is complete and stays usable as it is (import and verify do not need the journal); " : ""}export into another ${flag} directory, or restore journal.ndjson from a copy`
        : options.params.since !== undefined && archive.manifest.complete
          ? // a finished full export given again for a delta (an `archive:` left in a config file)
            `${archive.root} holds a finished export, and an incremental one (--since) goes into a directory of its own beside it (where it finds the earlier one): use another ${flag} directory${flag === "--archive" ? ", or leave --archive out (of the config file too) and ferry migrate names one" : ""}`
          : `${archive.root} already holds a different export; use another ${flag} directory, or repeat the original options to resume it`,
    })
  }
  if (archive.manifest.complete) {
    // a finished archive's file removed or changed since is not downloaded again (its job is done with): said,
    // rather than "nothing to do" over an archive that import and verify then refuse
    for (const f of [...archive.manifest.files, ...archive.manifest.deleted, ...archive.manifest.errors]) {
      if (options.gone?.(f.path) === true || onDisk(archive.path(f.path), f.bytes)) continue
      return yield* new ExportError({
        reason: "Archive",
        url: archive.path(f.path),
        detail: `this finished archive's ${f.path} is missing or changed since (its manifest records ${f.bytes} bytes), and a finished export is not downloaded again; restore the archive from a copy, or export into another ${options.outFlag ?? "--out"} directory`,
      })
    }
    // An archive an older Ferry completed and was killed before it wrote the checksums: write them now. A /3
    // archive always had them before it was complete: gone, they are lost, and writing them again would vouch for
    // whatever the manifest and the attachment index hold now.
    if (!NFS.existsSync(Path.join(archive.root, Archive.layout.checksums))) {
      if (checksumsCoverMetadata(archive.manifest.format))
        return yield* new ExportError({
          reason: "Archive",
          url: Path.join(archive.root, Archive.layout.checksums),
          detail: `this finished archive's ${Archive.layout.checksums} is missing (it was written before the archive was complete, so it was removed or lost since); restore it from a copy of the archive, or export into another ${options.outFlag ?? "--out"} directory`,
        })
      yield* Archive.writeChecksums(archive.root, archive.manifest)
    }
    // (an archive an earlier version completed may still hold them)
    yield* removeStrays()
    yield* emit("already-complete", {
      ...(archive.manifest.transactionTime !== undefined
        ? { transactionTime: archive.manifest.transactionTime }
        : {}),
    })
    // a run killed after it completed the archive, before the job was released: released now
    const job = journal.result("job")
    const released =
      Option.isSome(job) && !journal.isDone("released") && options.keepJob !== true
        ? yield* releaseJob((job.value as JobRecord).statusUrl)
        : false
    return summaryOf(archive.root, archive.manifest, {
      resumed: true,
      rekickoffs: 0,
      released,
      mode: journal.result("mode").pipe(Option.getOrElse(() => "bulk")) === "crawl" ? "crawl" : "bulk",
    })
  }
  const resumed = Option.isSome(previousRequest)
  if (Option.isSome(previousRequest)) {
    since = (previousRequest.value as { since?: string }).since
  } else {
    if (options.params.since === "auto") {
      yield* emit("since", {
        since: since ?? null,
        detail:
          since === undefined
            ? `no finished archive of the same source and request next to ${options.outFlag ?? "--out"}${passedOver > 0 ? ` to continue (${passedOver} there ${passedOver === 1 ? "was" : "were"} not migrated into this target, and an incremental migration continues one into the same target)` : ""}: full export`
            : "from the previous archive",
      })
    }
    yield* journal.append("request", { raw: requested, since })
    if (Option.isSome(recorded) || otherSource) {
      // An earlier attempt failed before starting anything: the archive now records this request and source.
      yield* Archive.updateManifest(archive.root, (m) => ({
        ...m,
        source: otherSource ? { baseUrl: redactUrl(client.baseUrl) } : m.source,
        request: {
          level: tentative.level,
          ...(tentative.groupId !== undefined ? { groupId: tentative.groupId } : {}),
          url: `${client.baseUrl}/${Kickoff.path(tentative)}`,
          parameters: requestParameters(tentative),
        },
      }))
    }
  }
  const params = yield* Kickoff.validate(Kickoff.params({ ...options.params, since }))
  yield* Effect.addFinalizer((exit) =>
    Exit.isInterrupted(exit)
      ? archive.event("interrupted", { detail: "run the same command again to resume" }).pipe(Effect.ignore)
      : Effect.void,
  )
  if (params.elements.length > 0) {
    yield* emit("warning", {
      detail:
        "_elements asks for SUBSETTED resources: this archive holds partial data and must never be imported into a server",
    })
  }
  yield* emit("start", { source: redactUrl(client.baseUrl), exportLevel: params.level, resumed })

  // Bulk or crawl?
  const mode0 = options.mode ?? "auto"
  let mode: "bulk" | "crawl" = mode0 === "crawl" ? "crawl" : "bulk"
  /** The FHIR-version warning given already (a kick-off that falls back to a crawl would give it again). */
  let versionWarned: string | undefined
  /** The CapabilityStatement declares no $export at this level: a 400 to the kick-off means none either. */
  let undeclared = false
  /** Why the CapabilityStatement could not be read (an HTML page, no FHIR server there), when it could not. */
  let capabilityProblem: string | undefined
  if (journal.isDone("mode")) {
    mode = (journal.result("mode").pipe(Option.getOrElse(() => "bulk")) as "bulk" | "crawl") ?? mode
  } else if (mode0 === "auto") {
    // credentials the source refuses fail the export here: the kick-off would only be refused the same way
    const cs = yield* client.capabilities().pipe(
      Effect.map(Option.some),
      Effect.catchAll(
        (
          e,
        ): Effect.Effect<
          Option.Option<CapabilityStatement.CapabilityStatement>,
          AuthError | ExportError | FhirError
        > =>
          // refused credentials fail here, as does a server that took the connection and never answered (its
          // kick-off would wait out the same timeouts again: a quarter of an hour more for nothing)
          e._tag === "AuthError" ||
          (e._tag === "FhirError" && e.reason === "Transport" && transportProblem(e.detail) === "NoAnswer")
            ? Effect.fail(e)
            : Effect.as(
                Effect.zipRight(
                  Effect.sync(() => {
                    capabilityProblem = e.message
                  }),
                  emit("warning", {
                    detail: `could not read the CapabilityStatement (${e.message}); trying $export`,
                  }),
                ),
                Option.none(),
              ),
      ),
    )
    // A CapabilityStatement that does not declare $export at this level (many list their operations only
    // through `instantiates`, or not at all) does not decide: the kick-off does, and a refusal of it (404, 405,
    // 501, or 400 from a server that does not know the operation) falls back to a crawl. Said when the
    // statement declares $export at another level, which is then likely what is wanted.
    if (
      Option.isSome(cs) &&
      !CapabilityStatement.supportsOperation(cs.value, "export", levelTarget(params.level))
    ) {
      undeclared = true
      const elsewhere = (["system", "patient", "group"] as const).filter(
        (l) =>
          l !== params.level && CapabilityStatement.supportsOperation(cs.value, "export", levelTarget(l)),
      )
      if (elsewhere.length > 0)
        yield* emit("warning", {
          detail: `the CapabilityStatement declares $export at the ${elsewhere.join(" and ")} level${elsewhere.length > 1 ? "s" : ""}, not at the ${params.level} level asked for (--level ${elsewhere[0]}${elsewhere[0] === "group" ? " --group <id>" : ""}?); trying the kick-off at the ${params.level} level, and a search crawl if it is refused`,
        })
    }
    // (a crawl reads the CapabilityStatement again and warns itself)
    const version = Option.isSome(cs) && mode === "bulk" ? Crawl.versionWarning(cs.value) : undefined
    if (version !== undefined) {
      versionWarned = version
      yield* emit("warning", { detail: version })
    }
  }

  const files: Array<ArchiveFile> = []
  let transactionTime = ""
  let rekickoffs = 0
  /** Why the last attempt at the job's files stopped, when it was a file inconsistent with its manifest. */
  let inconsistent: ExportError | undefined
  /** Jobs (of this run) in which a file stayed inconsistent with its manifest. */
  let inconsistentJobs = 0
  let renewals = 0
  /** The 404 a file of the last attempt answered (gone with its job, or a URL that leads nowhere). */
  let missingFile: FhirError | undefined
  /** The last file refusal that started a new job (named when they keep coming). */
  let lastExpired: FhirError | undefined
  /** A resumed run's journaled links lost their secrets and the job gave no fresh ones (see `journalable`). */
  let staleLinks = false
  let released = false
  let statusUrl: string | undefined

  const doKickoff = Effect.gen(function* () {
    const url = yield* Kickoff.kickoff(client, params, { undeclared }).pipe(
      // a kick-off answered with something else than 202 by a server whose CapabilityStatement could not be
      // read either: most likely no FHIR server at this URL at all, which is what to say
      Effect.catchIf(
        (e): e is ExportError =>
          e instanceof ExportError && e.reason === "Kickoff" && capabilityProblem !== undefined,
        (e) =>
          Effect.fail(
            new ExportError({
              ...e,
              detail: `${e.detail.replace(/; expected 202 .*$/, "")}, and its CapabilityStatement could not be read either (${capabilityProblem}); check that ${redactUrl(client.baseUrl)} is the base URL of a FHIR server`,
            }),
          ),
      ),
    )
    yield* journal.append("job", { statusUrl: url } satisfies JobRecord)
    yield* emit("kickoff", { statusUrl: redactUrl(url), post: Kickoff.usesPost(params) })
    return url
  })

  let pollOptions: Poll.PollOptions = {
    ...(options.timeout !== undefined ? { timeout: options.timeout } : {}),
    ...(options.pollInterval !== undefined ? { interval: options.pollInterval } : {}),
    onProgress: (progress) => emit("progress", { progress: progress ?? null }).pipe(Effect.orDie),
    onRetry: (e, wait) =>
      emit("poll-retry", { status: e.status ?? e.reason, waitMs: Duration.toMillis(wait) }).pipe(
        Effect.orDie,
      ),
  }

  /** Waits for the manifest of the current job; a job that vanished (404) is started again once. */
  const awaitManifest = (url: string) =>
    Poll.waitForManifest(client, url, pollOptions).pipe(
      Effect.catchIf(
        (e) => Poll.isJobGone(e),
        () =>
          Effect.gen(function* () {
            yield* leaveJob
            yield* emit("job-gone", { statusUrl: redactUrl(url) })
            statusUrl = yield* doKickoff
            return yield* Poll.waitForManifest(client, statusUrl, pollOptions)
          }),
      ),
    )

  // Attachments are fetched file by file, as soon as a file is in the archive, from the source's origin, the
  // origins its manifests name files on (added as files are met) and those the user named.
  const attachmentOrigins = new Set<string>(
    options.attachmentOrigins === "any" ? [] : (options.attachmentOrigins ?? []),
  )
  for (const o of Option.toArray(originOf(client.baseUrl))) attachmentOrigins.add(o)
  // attachments that are the source's own Binaries are copied from the Binary files (plain files only: a
  // gzip-written file's offsets are not the download's)
  const exported =
    options.attachments === false || options.gzip === true ? undefined : yield* ExportedBinaries.make
  const fetcher =
    options.attachments === false
      ? undefined
      : yield* Attachments.fetcher(client, archive, {
          concurrency: parallel,
          ...(options.attachmentOrigins === "any" ? {} : { allowOrigin: (o) => attachmentOrigins.has(o) }),
          onStored: (s) => notify("attachment", { url: redactUrl(s.url), sha256: s.sha256, size: s.size }),
          onFailed: (f) =>
            emit("attachment-failed", { url: f.url, resource: f.resource, path: f.path, detail: f.detail }),
          ...(exported !== undefined ? { exported } : {}),
        })
  const ready = new Set<string>()
  /** A Binary data file whose lines `exported` learns while it downloads. */
  const holdsBinaries = (f: PlannedFile) =>
    exported !== undefined && f.kind === "output" && f.type === "Binary" && f.organized === undefined

  /**
   * A file is in the archive: fetch its attachments (from `refs` collected while downloading, or by reading
   * the file) unless the journal says an earlier run did, then announce it ready. A file with a failed
   * attachment is not ready (the run fails at the end, naming the first failure).
   */
  const finishFile = (
    key: string,
    file: ArchiveFile,
    refs: ReadonlyArray<Attachments.AttachmentRef> | undefined,
    earlier: Attachments.BatchResult = noAttachments,
  ) =>
    Effect.gen(function* () {
      if (ready.has(key)) return
      const attachmentsKey = `attachments:${key}`
      if (file.kind === "output" && fetcher !== undefined && !journal.isDone(attachmentsKey)) {
        const found = refs ?? (yield* Attachments.refsOfFile(archive.path(file.path), file.path))
        // (the file is in: its attachments may wait for the Binary files under way)
        const result = sumBatches(earlier, yield* fetcher.forRefs(found, { waitForBinaries: true }))
        if (result.failed > 0 && options.allowMissingAttachments !== true) return
        yield* journal.append(attachmentsKey, result)
        if (result.fetched + result.skipped > 0) yield* emit("attachments", { path: file.path, ...result })
      }
      ready.add(key)
      const { kind, type, path, count, bytes, sha256, compression } = file
      yield* emit("file-ready", { kind, type, path, count, bytes, sha256, compression })
    })

  const downloadOne = (manifest: ExportManifest) => (f: PlannedFile) =>
    Effect.gen(function* () {
      const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(f.url)?.[1]?.toLowerCase()
      if (scheme !== undefined && scheme !== "http" && scheme !== "https")
        return yield* new ExportError({
          reason: "Manifest",
          url: redactUrl(f.url),
          detail: `the manifest lists this ${f.kind} file under a ${scheme}: URL, which Ferry cannot fetch (it downloads over http and https); the server must hand out http(s) links to its files (an object store's signed https URLs)`,
        })
      for (const o of Option.toArray(originOf(f.url))) attachmentOrigins.add(o)
      const done = journal.result(f.key)
      if (Option.isSome(done) && f.organized !== undefined) return undefined // distributed later
      if (Option.isSome(done)) {
        const earlier = done.value as ArchiveFile
        // downloaded by this run while the job was still running (see `early`): already counted
        if (earlyFinished.has(f.key)) return earlier
        yield* notify("file-resumed", {
          kind: f.kind,
          type: f.type ?? null,
          path: f.path,
          count: earlier.count,
          bytes: earlier.bytes,
        })
        yield* finishFile(f.key, earlier, undefined)
        return earlier
      }
      const collected =
        f.kind === "output" && f.organized === undefined && fetcher !== undefined
          ? Attachments.collector()
          : undefined
      // What the batches fetched while the file downloaded. One batch at a time runs beside the download (a
      // fiber of its own: the transfer does not wait on it, so a server's idle timeout is not met while
      // attachments are fetched); the download waits only when a second batch's worth has piled up behind it.
      // Its blobs are in the store before the file is checked: if the file is then refused, they are blobs
      // no archived file points to (listed in the checksums, skipped by a rerun that meets their URLs).
      let fetchedEarly = noAttachments
      let batch: Fiber.RuntimeFiber<Attachments.BatchResult, ExportError | ArchiveError> | undefined
      const batchSize = Math.max(1, options.attachmentBatch ?? ATTACHMENT_BATCH)
      const settleBatch = Effect.suspend(() => {
        const running = batch
        if (running === undefined) return Effect.void
        batch = undefined
        return Effect.flatMap(Fiber.join(running), (r) =>
          Effect.sync(() => {
            fetchedEarly = sumBatches(fetchedEarly, r)
          }),
        )
      })
      const binaries = holdsBinaries(f) ? exported?.file(archive.path(f.path)) : undefined
      const target: Download.DownloadTarget = {
        url: f.url,
        type: f.type,
        count: f.count,
        path: archive.path(f.path),
        label: f.path,
        auth: manifest.requiresAccessToken,
        // an organizeOutputBy file is staged plain: its distribution writes the compressed per-type files
        gzip: options.gzip === true && f.organized === undefined,
        ...(collected !== undefined ? { onResource: collected.onResource } : {}),
        // organizeOutputBy: servers differ on whether `count` includes the block headers
        ...(f.organized !== undefined ? { uncounted: Organized.isHeader } : {}),
        ...(binaries !== undefined ? { lines: binaries.sink } : {}),
      }
      // Network bytes of this file so far, reported at most every FILE_PROGRESS_EVERY_MS.
      let received = 0
      let reportedAt = yield* Clock.currentTimeMillis
      const downloadOptions: Download.DownloadOptions = {
        onResume: (offset, reason) => emit("resume", { file: f.path, offset, reason }).pipe(Effect.orDie),
        ...(collected !== undefined && fetcher !== undefined
          ? {
              onChunk: () =>
                Effect.suspend(() => {
                  const pending = collected.pending()
                  const finished = batch !== undefined && batch.unsafePoll() !== null
                  if (batch === undefined ? pending < batchSize : !finished && pending < 2 * batchSize)
                    return Effect.void
                  // a finished batch is settled at once (its failure stops the download), a running one
                  // is waited for; then the next batch starts if there is one
                  return Effect.zipRight(
                    settleBatch,
                    pending < batchSize
                      ? Effect.void
                      : Effect.suspend(() => Effect.fork(fetcher.forRefs(collected.refs()))).pipe(
                          Effect.flatMap((fiber) =>
                            Effect.sync(() => {
                              batch = fiber
                            }),
                          ),
                        ),
                  )
                }),
            }
          : {}),
        ...(options.onEvent !== undefined
          ? {
              onBytes: (n: number) =>
                Effect.flatMap(Clock.currentTimeMillis, (now) => {
                  received += n
                  if (now - reportedAt < FILE_PROGRESS_EVERY_MS) return Effect.void
                  reportedAt = now
                  return notify("file-progress", {
                    kind: f.kind,
                    type: f.type ?? null,
                    path: f.path,
                    received,
                  })
                }),
            }
          : {}),
      }
      const result = yield* Download.download(client, target, downloadOptions).pipe(
        Effect.catchIf(
          (e): e is ExportError => e instanceof ExportError && e.reason === "CountMismatch",
          (e) =>
            Effect.gen(function* () {
              yield* emit("count-mismatch", { file: f.path, detail: e.detail })
              yield* Download.discard(target)
              return yield* Download.download(client, target, downloadOptions)
            }),
        ),
        // a batch still running when the download failed is stopped with it
        Effect.tapErrorCause(() => (batch === undefined ? Effect.void : Fiber.interrupt(batch))),
      )
      yield* settleBatch
      if (f.organized !== undefined) {
        // staged, checked against the manifest count (headers included); distributed once all are here
        yield* journal.append(f.key, { count: result.count, bytes: result.bytes, sha256: result.sha256 })
        yield* emit("organized-file", { path: f.path, count: result.count, bytes: result.bytes })
        return undefined
      }
      const file: ArchiveFile = {
        kind: f.kind,
        type: f.type ?? "Resource",
        path: f.path,
        count: result.count,
        bytes: result.bytes,
        sha256: result.sha256,
        compression: options.gzip === true ? "gzip" : "none",
      }
      yield* journal.append(f.key, file)
      if (binaries !== undefined) yield* binaries.finished
      yield* emit("file", {
        kind: f.kind,
        type: f.type ?? null,
        path: f.path,
        count: file.count,
        bytes: file.bytes,
      })
      yield* finishFile(f.key, file, collected?.refs(), fetchedEarly)
      return file
    })

  /**
   * Distributes the staged organized files, in manifest order, into per-type data files (Organized.ts);
   * each one is journaled (`split:<n>:<url tag>` → its data files), then its staged file is deleted and its
   * data files go through `finishFile` (attachments, `file-ready`). A resumed run first remembers what the
   * files distributed earlier hold, so a resource repeated in a later block is still dropped.
   */
  const distributeAll = (manifest: ExportManifest, planned: ReadonlyArray<PlannedFile>) =>
    Effect.gen(function* () {
      const organizer = manifest.outputOrganizedBy ?? "Patient"
      const offsets = new Map<string, number>()
      for (const p of planned) {
        if (p.kind === "output" && p.organized === undefined && p.type !== undefined)
          offsets.set(p.type, (offsets.get(p.type) ?? 0) + 1)
      }
      const items = planned.filter((p) => p.organized !== undefined)
      const splitKey = (p: PlannedFile) => `split:${p.organized}:${Organized.urlTag(redactUrl(p.url))}`
      const seen = new Set<string>()
      const out: Array<ArchiveFile> = []
      if (items.some((p) => !journal.isDone(splitKey(p)))) {
        for (const p of items) {
          const done = journal.result(splitKey(p))
          if (Option.isSome(done))
            yield* Organized.remember(archive.root, done.value as ReadonlyArray<FileEntry>, organizer, seen)
        }
      }
      for (const p of items) {
        const key = splitKey(p)
        const done = journal.result(key)
        let entries: ReadonlyArray<FileEntry>
        // attachment references by type, collected while splitting (a resumed split's files are read again)
        const collectors = new Map<string, ReturnType<typeof Attachments.collector>>()
        if (Option.isSome(done)) {
          entries = done.value as ReadonlyArray<FileEntry>
        } else {
          const result = yield* Organized.distribute({
            staged: archive.path(p.path),
            label: p.path,
            index: p.organized!,
            offsets,
            root: archive.root,
            gzip: options.gzip === true,
            organizer,
            seen,
            ...(fetcher !== undefined
              ? {
                  onResource: (type: string, resource: Resource) => {
                    let c = collectors.get(type)
                    if (c === undefined) {
                      c = Attachments.collector()
                      collectors.set(type, c)
                    }
                    c.onResource(resource)
                  },
                }
              : {}),
          })
          entries = result.files
          yield* journal.append(key, entries)
          yield* emit("distributed", {
            path: p.path,
            files: entries.length,
            headers: result.headers,
            duplicates: result.duplicates,
          })
          for (const e of entries) {
            yield* emit("file", {
              kind: "output",
              type: e.type,
              path: e.path,
              count: e.count,
              bytes: e.bytes,
            })
          }
        }
        yield* ArchiveDir.fsTry(p.path, "remove the distributed staged file", () =>
          NFS.promises.rm(archive.path(p.path), { force: true }),
        )
        for (const e of entries) {
          const file: ArchiveFile = { ...e, kind: "output" }
          yield* finishFile(
            `${key}:${e.type}`,
            file,
            Option.isSome(done) ? undefined : (collectors.get(e.type)?.refs() ?? []),
          )
          out.push(file)
        }
      }
      yield* Organized.removeStaging(archive.root)
      return out
    })

  /**
   * [STU3] Downloads started from partial manifests (`allowPartialManifests`, not for organizeOutputBy
   * output): every file a 202 or a `link` next part lists joins one pool of `parallel` downloads while the
   * job still runs. Files are planned (keys, paths) as the complete manifest plans them: parts only grow by
   * appending, so a file's place per type does not change. Once the complete manifest is in, the pool takes
   * no more, finishes what it has, and the usual download of the manifest's files finds those done in the
   * journal. A download of the pool that fails stops the pool; the usual download then meets that file
   * again, with its own handling of expired URLs and its own errors.
   */
  const earlyFinished = new Set<string>()
  const runScope = yield* Effect.scope
  let early:
    | {
        readonly queue: Queue.Queue<Option.Option<PlannedFile>>
        readonly keys: Set<string>
        readonly fiber: Fiber.RuntimeFiber<void, unknown>
      }
    | undefined
  let earlyOpen = params.allowPartialManifests === true && params.organizeOutputBy === undefined
  const onPartial = (soFar: ExportManifest) =>
    Effect.gen(function* () {
      if (!earlyOpen || soFar.outputOrganizedBy !== undefined) return
      if (early === undefined) {
        // this job's files are about to land: its transactionTime is the archive's (a rerun of the same job
        // finds it journaled; `leaveJob` forgets it with the files of a job that vanished)
        if (Option.isNone(journal.result("transactionTime")))
          yield* journal.append("transactionTime", soFar.transactionTime)
        const queue = yield* Queue.unbounded<Option.Option<PlannedFile>>()
        const download = downloadOne(soFar)
        const fiber = yield* Stream.fromQueue(queue).pipe(
          Stream.takeWhile(Option.isSome),
          Stream.mapEffect(
            (p) =>
              download(p.value).pipe(
                Effect.zipRight(
                  Effect.sync(() => {
                    if (journal.isDone(p.value.key)) earlyFinished.add(p.value.key)
                  }),
                ),
              ),
            { concurrency: parallel, unordered: true },
          ),
          Stream.runDrain,
          // in the export's scope: the poll that reports a part may run in a fiber of its own (its timeout)
          Effect.forkIn(runScope),
        )
        early = { queue, keys: new Set(), fiber }
      }
      const started = early
      const rank = options.downloadRank
      const fresh = planFiles(soFar, options.gzip === true).filter((p) => !started.keys.has(p.key))
      if (fresh.length === 0) return
      // what a part adds goes in the order the usual download would take (migrate ranks by dependencies)
      if (rank !== undefined) fresh.sort((a, b) => rank(a.type ?? "") - rank(b.type ?? ""))
      for (const p of fresh) started.keys.add(p.key)
      yield* Queue.offerAll(
        started.queue,
        fresh.map((p) => Option.some(p)),
      )
      yield* emit("manifest-part", {
        output: soFar.output.length,
        deleted: soFar.deleted.length,
        error: soFar.error.length,
        started: fresh.length,
      })
    }).pipe(Effect.orDie)
  /** No more early downloads: none started, and the polls no longer look for partial manifests. */
  const endEarly = Effect.sync(() => {
    earlyOpen = false
    pollOptions = { ...pollOptions, onPartial: undefined }
  })
  /** The complete manifest is in: the early pool takes no more and finishes what it has. */
  const closeEarly = Effect.gen(function* () {
    yield* endEarly
    const started = early
    if (started === undefined) return
    early = undefined
    yield* Queue.offer(started.queue, Option.none())
    const exit = yield* Fiber.await(started.fiber)
    if (Exit.isFailure(exit)) {
      if (Cause.isInterruptedOnly(exit.cause)) return yield* Effect.interrupt
      const failure = Cause.squash(exit.cause)
      yield* emit("warning", {
        detail: `a download started from a partial manifest stopped (${failure instanceof Error ? failure.message : String(failure)}); its file is downloaded again from the complete manifest`,
      })
    }
  })
  /**
   * The job is gone (404 on its status URL) or failed, and a new one is about to start (only before a
   * complete manifest was journaled: every file the journal holds then came from a partial manifest of the
   * old job, in this run or a killed one). Its early downloads stop, and what they gave is dropped: finished
   * files are forgotten by the journal (with their attachment steps and the old job's transactionTime) and
   * removed, unfinished ones removed too. Another job may split or order its files otherwise, so none of them
   * may stand in for the new job's file at the same place. The new job's files come in the usual download.
   */
  const leaveJob = Effect.gen(function* () {
    yield* endEarly
    const started = early
    early = undefined
    if (started !== undefined) yield* Fiber.interrupt(started.fiber)
    // after a complete manifest (a new kick-off for expired files whose job is gone in turn): the files
    // kept then stay, as that path keeps them
    if (journal.isDone("manifest")) return
    earlyFinished.clear()
    // first forgotten, then removed: a kill in between leaves files the next run overwrites
    let dropped = 0
    for (const key of journal.keys()) {
      if (key.startsWith("file:")) dropped++
      if (key.startsWith("file:") || key.startsWith("attachments:file:") || key === "transactionTime")
        yield* journal.forget(key)
    }
    ready.clear()
    for (const dir of ["data", "deleted", "errors"]) {
      const names = yield* namesIn(dir)
      for (const name of names) {
        yield* ArchiveDir.fsTry(`${dir}/${name}`, "remove a file of the old job", () =>
          NFS.promises.rm(archive.path(`${dir}/${name}`), { force: true }),
        )
      }
    }
    if (dropped > 0) yield* emit("early-dropped", { files: dropped })
  })
  if (earlyOpen) pollOptions = { ...pollOptions, onPartial }

  /**
   * A file an earlier run finished that is missing or changed on disk since (removed by hand, a disk restored from
   * an older copy): it is downloaded again.
   */
  const changedOnDisk = (p: PlannedFile): boolean => {
    if (p.organized !== undefined || !journal.isDone(p.key) || options.gone?.(p.path) === true) return false
    const done = journal.result(p.key)
    const bytes = Option.isSome(done) ? (done.value as { bytes?: unknown }).bytes : undefined
    return !(typeof bytes === "number" && onDisk(archive.path(p.path), bytes))
  }

  if (mode === "bulk") {
    const job = journal.result("job")
    const manifestRecord = journal.result("manifest")
    let manifest: ExportManifest
    if (Option.isSome(manifestRecord)) {
      // the manifest is complete: no early downloads (nor from the polls of a renewal or a new kick-off)
      yield* endEarly
      manifest = manifestRecord.value as ExportManifest
      statusUrl = Option.isSome(job) ? (job.value as JobRecord).statusUrl : undefined
      yield* emit("reattach", {
        detail: "manifest already received; downloading what is missing",
        output: manifest.output.length,
        deleted: manifest.deleted.length,
        error: manifest.error.length,
        types: manifestTypes(manifest),
      })
      // signed links, kept without their signatures (`journalable`): the job's manifest again for its links,
      // else (the job gone, or other files) its files count as expired: a new kick-off
      // (what is on disk counts: a finished file removed since is downloaded again, under a link of the job's)
      const unfinished = planFiles(manifest, options.gzip === true).filter(
        (f) => !journal.isDone(f.key) || changedOnDisk(f),
      )
      if (redactedLinks(manifestRecord.value) && unfinished.length > 0) {
        const again =
          statusUrl === undefined
            ? Option.none<ExportManifest>()
            : yield* Poll.waitForManifest(client, statusUrl, pollOptions).pipe(Effect.option)
        if (Option.isSome(again) && sameFiles(manifest, again.value)) {
          manifest = again.value
          yield* emit("links-fetched", { statusUrl: redactUrl(statusUrl!) })
        } else staleLinks = true
      }
    } else {
      if (Option.isSome(job)) {
        statusUrl = (job.value as JobRecord).statusUrl
        yield* emit("reattach", { statusUrl: redactUrl(statusUrl) })
      } else {
        const started = yield* doKickoff.pipe(
          Effect.map(Option.some),
          Effect.catchIf(
            (e): e is ExportError =>
              mode0 === "auto" && e instanceof ExportError && e.reason === "NotSupported",
            (e) => emit("fallback", { detail: e.message }).pipe(Effect.as(Option.none<string>())),
          ),
        )
        if (Option.isNone(started)) mode = "crawl"
        else statusUrl = started.value
      }
      if (mode === "bulk" && statusUrl !== undefined) {
        const reattached = Option.isSome(job)
        manifest = yield* awaitManifest(statusUrl).pipe(
          // A job that an earlier run started and that has failed since: this run starts a new one.
          Effect.catchIf(
            (e): e is ExportError => reattached && e instanceof ExportError && e.reason === "JobFailed",
            (e) =>
              Effect.gen(function* () {
                yield* emit("warning", { detail: `the earlier job failed (${e.detail}); starting a new one` })
                yield* leaveJob
                statusUrl = yield* doKickoff
                return yield* awaitManifest(statusUrl)
              }),
          ),
        )
        yield* closeEarly
        yield* journal.append("manifest", journalable(manifest))
        const known = manifest.transactionTime
        yield* Archive.updateManifest(archive.root, (m) => ({ ...m, transactionTime: known }))
        yield* emit("manifest", {
          transactionTime: manifest.transactionTime,
          output: manifest.output.length,
          deleted: manifest.deleted.length,
          error: manifest.error.length,
          types: manifestTypes(manifest),
        })
      } else {
        manifest = { transactionTime: "", requiresAccessToken: false, output: [], deleted: [], error: [] }
      }
    }
    if (mode === "bulk") {
      yield* journal.append("mode", "bulk")
      // After a re-kick-off, files of the first job are older: the earliest transactionTime is the safe `_since`.
      const first = journal.result("transactionTime")
      if (Option.isNone(first)) yield* journal.append("transactionTime", manifest.transactionTime)
      // A server that honours `_until` still reports the time of the export: the data ends at `_until`.
      transactionTime = Crawl.untilClamped(
        Option.isSome(first) ? String(first.value) : manifest.transactionTime,
        params.until,
      )
      let checkedOnDisk = false
      for (;;) {
        const planned = planFiles(manifest, options.gzip === true)
        if (!checkedOnDisk) {
          checkedOnDisk = true
          // an earlier run's finished file removed or changed since (by hand, a disk restored from an older
          // copy): downloaded again, not listed as finished in a manifest its bytes no longer match
          for (const p of planned) {
            if (!changedOnDisk(p)) continue
            yield* emit("warning", {
              detail: `${p.path}, finished by an earlier run, is missing or changed since: downloaded again`,
            })
            yield* journal.forget(p.key)
            yield* journal.forget(`attachments:${p.key}`)
          }
        }
        const organizing = planned.some((p) => p.organized !== undefined)
        if (!organizing) {
          yield* emit("files-planned", {
            mode: "bulk",
            files: planned.map((p) => ({
              kind: p.kind,
              type: p.type ?? null,
              path: p.path,
              count: p.count ?? null,
            })),
            // downloaded already (a resumed run, or early from partial manifests)
            done: planned.filter((p) => journal.isDone(p.key)).length,
          })
        } else {
          // the data files are known only once distributed: `files-planned` comes after that
          yield* Organized.makeStaging(archive.root)
        }
        const rank = options.downloadRank
        // Binary files first: attachments naming those Binaries wait for them (`ExportedBinaries`), and every
        // one of them is under way before any other file can wait
        const queue = planned.map((p, i) => ({
          p,
          i,
          b: holdsBinaries(p) ? 0 : 1,
          r: rank === undefined ? 0 : rank(p.type ?? ""),
        }))
        queue.sort((a, b) => a.b - b.b || a.r - b.r || a.i - b.i)
        const downloadAll = Effect.gen(function* () {
          if (exported !== undefined)
            yield* exported.expect(queue.filter((q) => q.b === 0 && !journal.isDone(q.p.key)).length)
          return yield* Effect.forEach(
            queue,
            ({ p, i }) => Effect.map(downloadOne(manifest)(p), (result) => ({ i, result })),
            { concurrency: parallel },
          ).pipe(
            Effect.ensuring(exported === undefined ? Effect.void : exported.settle),
            // back to manifest order
            Effect.map((done) => Option.some(done.sort((a, b) => a.i - b.i).map((d) => d.result))),
            Effect.catchIf(isExpired, (e) =>
              Effect.sync(() => {
                inconsistent = undefined
                missingFile = e.status === 404 ? e : undefined
                lastExpired = e
              }).pipe(
                Effect.zipRight(emit("expired", { status: e.status ?? null, url: e.url })),
                Effect.as(Option.none()),
              ),
            ),
            // a file whose lines still differ from its manifest count after a re-download: this job's output is
            // inconsistent (a resource deleted while it was written, say); a new job, as for expired files
            Effect.catchIf(
              (e): e is ExportError => e instanceof ExportError && e.reason === "CountMismatch",
              (e) =>
                Effect.sync(() => {
                  inconsistent = e
                  inconsistentJobs++
                }).pipe(
                  Effect.zipRight(emit("inconsistent", { detail: e.detail })),
                  Effect.as(Option.none()),
                ),
            ),
          )
        })
        // links the journal kept without their secrets, and the job gave no fresh ones: as if they expired
        const attempt = staleLinks
          ? yield* Effect.sync(() => {
              staleLinks = false
              lastExpired = undefined
              missingFile = undefined
              inconsistent = undefined
              return Option.none()
            })
          : yield* downloadAll
        if (Option.isSome(attempt)) {
          files.push(...attempt.value.filter((f): f is ArchiveFile => f !== undefined))
          if (organizing) {
            files.push(...(yield* distributeAll(manifest, planned)))
            yield* emit("files-planned", {
              mode: "bulk",
              files: files.map((p) => ({ kind: p.kind, type: p.type, path: p.path, count: p.count })),
              // the blocks of organizeOutputBy files, downloaded and split: these are the per-type files
              distributed: true,
            })
          }
          break
        }
        // The manifest fetched again may carry new URLs for the same job's files (re-signed links: the
        // spec's STU3 advice). Then finished files stay, partial ones resume with Range, and no new job is
        // started; the same URLs again mean the files are gone for good: a new kick-off.
        if (inconsistent === undefined && !organizing && statusUrl !== undefined && renewals < MAX_RENEWALS) {
          const again = yield* Poll.waitForManifest(client, statusUrl, pollOptions).pipe(Effect.option)
          const unfinished = planned.filter((f) => !journal.isDone(f.key))
          if (Option.isSome(again) && renewsUrls(manifest, again.value, unfinished, options.gzip === true)) {
            renewals++
            manifest = again.value
            yield* journal.append("manifest", journalable(manifest))
            yield* emit("manifest-renewed", { statusUrl: redactUrl(statusUrl), renewal: renewals })
            continue
          }
          // a file answering 404 while its job still lists it under the same URL: not gone with its job (a new
          // job would list the same wrong URLs) but a file URL that leads nowhere (a proxy, a base path)
          if (missingFile !== undefined && Option.isSome(again))
            return yield* new ExportError({
              reason: "Manifest",
              url: missingFile.url,
              detail: `the server answers 404 for a file its export job still lists under this URL (${missingFile.message}); the manifest's file URLs lead nowhere (a proxy or base path the server does not know it is behind?): report it to the server's operators`,
              cause: missingFile,
            })
        }
        // a file inconsistent with its manifest in a second job too: the server's export is, not one job
        if (inconsistent !== undefined && inconsistentJobs >= 2)
          return yield* new ExportError({
            ...inconsistent,
            detail: `${inconsistent.detail}, also after downloading it again, in ${inconsistentJobs} export jobs; the server's export is inconsistent, report it to the server's operators`,
          })
        if (rekickoffs >= 3) {
          if (inconsistent !== undefined)
            return yield* new ExportError({
              ...inconsistent,
              detail: `${inconsistent.detail}, also after downloading it again; the server's export is inconsistent, report it to the server's operators`,
            })
          // the last refusal named (a 403 from a file host that gets no credentials is not an expiry at all)
          const last = lastExpired
          // (only when the manifest asks for the token with the files: else no host gets one, and none is missing)
          const withheld =
            manifest.requiresAccessToken &&
            last?.status === 403 &&
            last.url !== undefined &&
            !sameOrigin(last.url, client.baseUrl)
          return yield* new ExportError({
            reason: "Expired",
            url: statusUrl === undefined ? undefined : redactUrl(statusUrl),
            detail: `the output files kept expiring (410/403/404) after ${rekickoffs} new kick-offs${last?.url !== undefined ? ` (last: ${redactUrl(last.url)} answered ${last.status})` : ""}; ${withheld ? `that host is not the source's, and Ferry sends the source's credentials only to ${Option.getOrElse(originOf(client.baseUrl), () => client.baseUrl)}: if the files' host wants them, it must accept signed URLs instead (ask the server's operators); if it refuses for another reason, ` : ""}download faster (raise --parallel) or ask the server's operators for a longer file lifetime`,
          })
        }
        rekickoffs++
        // Files not finished yet came from the old job: start them afresh from the new one. Another job may
        // split or order a type's resources otherwise (one deleted in between shifts every boundary): the
        // finished files of a type stand in for the new job's only when all of that type's files are finished;
        // the others are forgotten (first, then removed: a kill in between leaves files the next run
        // overwrites) and come from the new job too.
        const groupOf = (f: PlannedFile) => `${f.kind}:${f.type ?? ""}`
        /** A file of the old job removed from the archive (finished or not). */
        const discard = (f: PlannedFile) =>
          Download.discard({
            url: f.url,
            type: f.type,
            count: f.count,
            path: archive.path(f.path),
            label: f.path,
            auth: false,
          })
        /** Finished files forgotten: their types come from the new job (the same paths, `file-ready` again). */
        const drop = (files: ReadonlyArray<PlannedFile>, detail: string) =>
          Effect.gen(function* () {
            const dropped = files.filter((f) => f.organized === undefined && journal.isDone(f.key))
            if (dropped.length === 0) return
            // said first (a pipeline records it durably: `ferry migrate`'s ledger), then forgotten: a kill in
            // between makes a pipeline import a file again that is still the old one, never skip a new one
            yield* emit("rekickoff-dropped", {
              files: dropped.length,
              paths: dropped.map((f) => f.path),
              detail,
            })
            for (const f of dropped) {
              yield* journal.forget(f.key)
              yield* journal.forget(`attachments:${f.key}`)
              ready.delete(f.key)
              yield* discard(f)
            }
          })
        const partial = new Set(planned.filter((f) => !journal.isDone(f.key)).map(groupOf))
        yield* drop(
          planned.filter((f) => partial.has(groupOf(f))),
          "finished files of types with unfinished files: the new job's files of those types replace them",
        )
        for (const f of planned) if (!journal.isDone(f.key)) yield* discard(f)
        // the old job is done with: released, as the last one is at the end, or its files stay on the server
        if (statusUrl !== undefined && options.keepJob !== true) {
          const old = statusUrl
          const result = yield* Poll.release(client, old).pipe(Effect.either)
          // a job whose files expired may be gone already (404/410): nothing left to release
          const gone = result._tag === "Left" && Poll.isJobGone(result.left)
          yield* result._tag === "Right" || gone
            ? emit("replaced-job-released", { statusUrl: redactUrl(old) })
            : emit("warning", { detail: `could not release the replaced job: ${result.left.message}` })
        }
        statusUrl = yield* doKickoff
        manifest = yield* awaitManifest(statusUrl)
        // A type all of whose files were finished stands in for the new job's only where the new job splits
        // it the same way (as many files, the same counts): else its files come from the new job as well.
        const next = planFiles(manifest, options.gzip === true)
        const layout = (files: ReadonlyArray<PlannedFile>, group: string) =>
          files.filter((f) => f.organized === undefined && groupOf(f) === group).map((f) => f.count)
        const same = (a: ReadonlyArray<number | undefined>, b: ReadonlyArray<number | undefined>) =>
          a.length === b.length && a.every((n, i) => n !== undefined && n === b[i])
        // without counts nothing shows how the new job splits a type: its files are taken, not trusted
        const moved = new Set(
          planned.map(groupOf).filter((g) => !partial.has(g) && !same(layout(planned, g), layout(next, g))),
        )
        yield* drop(
          planned.filter((f) => moved.has(groupOf(f))),
          "finished files of types the new job splits otherwise: its files of those types replace them",
        )
        yield* journal.append("manifest", journalable(manifest))
        yield* emit("manifest", {
          transactionTime: manifest.transactionTime,
          output: manifest.output.length,
          deleted: manifest.deleted.length,
          error: manifest.error.length,
          types: manifestTypes(manifest),
          rekickoff: rekickoffs,
        })
      }
    }
  }
  if (mode === "crawl") {
    const crawled = yield* Crawl.crawl(client, archive, params, {
      concurrency: parallel,
      // journaled once the crawl can run: a crawl refused before (no type to search) may be retried otherwise
      onStart: journal.append("mode", "crawl"),
      gzip: options.gzip === true,
      onPlan: (types) => emit("files-planned", { mode: "crawl", types }),
      onFile: (f) =>
        emit("file", { kind: "output", type: f.type, path: f.path, count: f.count, bytes: f.bytes }).pipe(
          Effect.zipRight(finishFile(Crawl.fileKey(f.type), f, undefined)),
        ),
      onEmpty: (type) => emit("file-empty", { type }),
      transactionTime: Option.getOrUndefined(
        Option.filter(journal.result("transactionTime"), (t): t is string => typeof t === "string"),
      ),
      onTransactionTime: (t) => journal.append("transactionTime", t),
      onWarning: (detail) => (detail === versionWarned ? Effect.void : emit("warning", { detail })),
    })
    transactionTime = crawled.transactionTime
    files.push(...crawled.files)
    // files an earlier run crawled (finishFile skips what is already ready)
    yield* Effect.forEach(crawled.files, (f) => finishFile(Crawl.fileKey(f.type), f, undefined), {
      discard: true,
    })
  }

  // A finished job may still have lost data (the spec's "a 200 does not mean complete"): its error files, read
  // whatever run downloaded them, by severity.
  const problems = yield* tallyErrorFiles(
    archive.root,
    files.filter((f) => f.kind === "error"),
  )
  if (problems.errors > 0 && options.allowExportErrors !== true)
    return yield* new ExportError({
      reason: "JobFailed",
      url: redactUrl(client.baseUrl),
      detail: `the server's error files report ${problems.errors} error(s) (first: ${problems.firstError}${problems.errors > 1 ? "; all in the archive's errors/ folder" : ""}): its job did not export what they cover, so the archive is left unfinished (no import takes it, no --since auto continues from it)${mode === "bulk" ? " and the job is kept (its status URL in journal.ndjson)" : ""}; accept this archive as it is by running the same command again with --allow-export-errors, or fix the cause at the source and export into another --out (the same one would take this job's files again)`,
    })
  if (problems.errors > 0)
    yield* emit("warning", {
      detail: `the server's error files report ${problems.errors} error(s) (first: ${problems.firstError}): the archive lacks what they cover (--allow-export-errors)`,
    })
  if (problems.notes > 0)
    yield* emit("warning", {
      detail: `the server's error files hold ${problems.notes} warning(s) or note(s) (first: ${problems.firstNote}; all in the archive's errors/ folder)`,
    })

  const attachmentSummary =
    fetcher === undefined ? { fetched: 0, skipped: 0, bytes: 0, failed: [] } : yield* fetcher.summary
  if (attachmentSummary.failed.length > 0 && options.allowMissingAttachments === true) {
    const first = attachmentSummary.failed[0]!
    yield* emit("warning", {
      detail: `${attachmentSummary.failed.length} attachment(s) could not be fetched or verified and are not in the archive (first: ${first.resource} ${first.path}: ${first.detail}); their resources keep the source URL (--allow-missing-attachments)`,
    })
  } else if (attachmentSummary.failed.length > 0) {
    const first = attachmentSummary.failed[0]!
    return yield* new ExportError({
      reason: "Attachment",
      url: first.url,
      detail: `${attachmentSummary.failed.length} attachment(s) could not be fetched or verified (first: ${first.resource} ${first.path}: ${first.detail}); see events.ndjson, fix the cause and run the same command again${mode === "bulk" ? " (the job is kept for that)" : ""}, or leave them out with --allow-missing-attachments`,
    })
  }

  // The archive is complete: the manifest's file lists, then the checksums (the manifest's row for the text of the
  // complete one), then `complete: true` (each written atomically), then the journal; then the job is released. A
  // kill between any two steps leaves an archive that is not complete yet, which the next run finishes: never a
  // complete one without its checksums.
  yield* removeStrays(new Set(files.map((f) => f.path)))
  const attachmentTotals = yield* ArchiveAttachments.totals(archive.root)
  const entry = ({ kind: _kind, ...e }: ArchiveFile): FileEntry => e
  const listed = yield* Archive.updateManifest(archive.root, (m) => ({
    ...m,
    transactionTime,
    files: files.filter((f) => f.kind === "output").map(entry),
    deleted: files.filter((f) => f.kind === "deleted").map(entry),
    errors: files.filter((f) => f.kind === "error").map(entry),
    attachments: attachmentTotals,
  }))
  const final: Archive.Manifest = { ...listed, complete: true }
  yield* Archive.writeChecksums(archive.root, listed, Archive.manifestText(final))
  yield* Archive.writeManifest(archive.root, final)
  yield* journal.append("complete", true)

  if (mode === "bulk" && statusUrl !== undefined && options.keepJob !== true)
    released = yield* releaseJob(statusUrl)
  const summary = summaryOf(archive.root, final, { resumed, rekickoffs, released, mode })
  // like the resources, files and bytes: the archive's, not this run's (a resumed run may fetch none)
  yield* emit("done", {
    resources: summary.resources,
    bytes: summary.bytes,
    files: summary.files.length,
    attachments: attachmentTotals.count,
    attachmentsFetched: attachmentSummary.fetched,
  })
  return {
    ...summary,
    attachments: {
      total: attachmentTotals.count,
      fetched: attachmentSummary.fetched,
      skipped: attachmentSummary.skipped,
      bytes: attachmentSummary.bytes,
      failed: attachmentSummary.failed.length,
    },
  }
}, Effect.scoped) satisfies (
  options: ExportOptions,
) => Effect.Effect<ExportSummary, ExportError | ArchiveError | FhirError | AuthError>
