/**
 * `ferry migrate` as a function: export a source into an archive and import it into a target in one job.
 *
 * The export runs as usual (`Export.run`, its own journal); the import starts on finished data files
 * while others still download. The scheduler:
 * - learns the planned files from the export's `files-planned` event, and each finished file (data file
 *   plus its attachments) from `file-ready` (without those events, e.g. an older export, everything is
 *   imported in the final wave from the export's summary);
 * - scans each finished data file once for the resource types it references (its bytes:
 *   `dependencyScanner`, the walker's Reference sites read without parsing or decoding the lines);
 * - imports, in waves (one `Import.run` at a time, concurrent with the export), the largest set of
 *   finished files whose referenced types are all imported or in the same wave: the greatest fixed point
 *   of "every planned file of every type I reference is imported or in the wave", so files in a cycle of
 *   type dependencies go together once all of them have landed;
 * - files with conditional (`Type?identifier=…`) or `urn:uuid` references wait for the final wave, which
 *   imports the rest, re-reads the (unpruned) files of the conditionally referenced types as context so
 *   their identifiers resolve, and processes the archive's deletes.
 *
 * State: the export's journal, the import's `imports/<target>/` folder (journal, id map, binaries), and a
 * wave ledger `imports/<target>/migrate.ndjson` (`migrate.wave` lines naming the files each finished wave
 * imported, `migrate.pruned`, `migrate.done`), all inside the archive. A killed migration resumes with the
 * same options: finished files are not downloaded again, imported waves are not sent again, and a wave cut
 * short is repeated (put is idempotent, post skips what the id map already holds).
 *
 * Disk: `maxStaged` holds back the export's download fibers (their `file-ready` callback waits) while the
 * bytes of finished-but-not-imported data files exceed it and a wave is under way; files already being
 * downloaded still finish, so the bound is `maxStaged` + the files in flight. `pruneStaged` deletes the
 * bodies of imported data files (not `Binary` files, which later subset imports read); the manifest and
 * checksums keep describing them, so verify such a migration against the source server, not the archive.
 *
 * Incremental cutover: `since: "auto"` exports the changes since the newest finished sibling archive;
 * before the first wave, that archive's id map and binaries record for this target are copied in, so
 * updates and deletes follow the ids the full migration gave.
 */
import * as NFS from "node:fs"
import * as Path from "node:path"
import { makeDirsSync } from "@ferry/core/Dirs"
import * as Ndjson from "@ferry/core/Ndjson"
import * as Archive from "@ferry/archive/Archive"
import type { ArchiveError } from "@ferry/archive/ArchiveError"
import * as Events from "@ferry/archive/Events"
import * as Imports from "@ferry/archive/Imports"
import { Journal } from "@ferry/archive/Journal"
import type { FileEntry, Manifest } from "@ferry/archive/Manifest"
import type { AuthError, FhirError } from "@ferry/core/Errors"
import type { FhirClient } from "@ferry/core/FhirClient"
import { redactUrl } from "@ferry/core/Http"
import { shellWord } from "@ferry/core/Shell"
import { type ParsedReference, parse as parseReference } from "@ferry/core/Reference"
import { attachments, references } from "@ferry/core/Walker"
import * as Export from "@ferry/export/Export"
import type { ExportError } from "@ferry/export/ExportError"
import type * as Kickoff from "@ferry/export/Kickoff"
import type * as BulkImport from "@ferry/import/BulkImport"
import * as Continues from "@ferry/import/Continues"
import * as Import from "@ferry/import/Import"
import { ImportError } from "@ferry/import/ImportError"
import { sourceBinaryId } from "@ferry/transform/Resolve"
import * as TypeOrder from "@ferry/transform/TypeOrder"
import { Clock, type Duration, Effect, Option, Queue, Schedule, Scope, Stream } from "effect"

export interface MigrateOptions {
  readonly source: FhirClient
  readonly target: FhirClient
  /** The archive directory of this migration (created; rerun with the same options to resume). */
  readonly archive: string
  /** What to export; `since: "auto"` continues from the newest finished sibling archive (cutover). */
  readonly params: Kickoff.ExportParamsInput
  readonly mode?: Export.Mode
  /** Parallel downloads (default 4). */
  readonly parallel?: number
  readonly timeout?: Duration.DurationInput
  readonly pollInterval?: Duration.DurationInput
  readonly keepJob?: boolean
  readonly gzip?: boolean
  readonly attachments?: boolean
  /** Finish without the attachments that could not be fetched or verified (see `Export.ExportOptions`). */
  readonly allowMissingAttachments?: boolean
  /** Origins attachments are fetched from besides the source's and its file hosts', or `"any"` (Export's option). */
  readonly attachmentOrigins?: ReadonlyArray<string> | "any"
  /** Finish although the server's error files report errors (Export's option). */
  readonly allowExportErrors?: boolean
  /** Import strategy (default: chosen by the import from the target). */
  readonly strategy?: Import.Strategy
  readonly bundleSize?: number
  readonly maxBundleBytes?: number
  /** `meta` members not carried to the target (Import's option). */
  readonly dropMeta?: ReadonlyArray<Import.MetaField>
  /** Start the import half over: this target's import state (and ledger) set aside (`Import.setAsideState`). */
  readonly restart?: boolean
  /** `--strategy import`: where Ferry's file server binds and how the target reaches it (each wave's job). */
  readonly serve?: BulkImport.ServeOptions
  /** Bundles in flight at most (default 4). */
  readonly importParallel?: number
  /** Hold back downloads while finished-but-not-imported data files exceed this many bytes. */
  readonly maxStaged?: number
  /** Delete imported data files' bodies (not Binary files). */
  readonly pruneStaged?: boolean
  readonly tool?: { readonly name: string; readonly version: string }
  /** Every event: the export's and the import's (tagged `from`), and the scheduler's own. */
  readonly onEvent?: (event: MigrateEvent) => Effect.Effect<void>
}

/** An event of the export (`from: "export"`), of an import wave (`"import"`) or of the scheduler (`"migrate"`). */
export interface MigrateEvent {
  readonly from: "export" | "import" | "migrate"
  readonly event: string
  readonly [field: string]: unknown
}

export interface MigrateImportSummary {
  readonly strategy: Import.Strategy | undefined
  /** Resources written per type, this run (all waves). */
  readonly resources: Readonly<Record<string, number>>
  readonly total: number
  readonly binaries: number
  readonly quarantined: number
  readonly deleted: number
  readonly chunks: number
  readonly resumedChunks: number
  /**
   * The `meta` members the imports dropped (given, kept from an earlier run, or from the migration this one
   * continues); undefined when no import wave ran in this process.
   */
  readonly dropMeta: ReadonlyArray<Import.MetaField> | undefined
}

export interface MigrateSummary {
  readonly archive: string
  readonly source: string
  readonly target: string
  readonly transactionTime: string
  /** The `_since` of this migration (an incremental one), if any. */
  readonly since: string | undefined
  readonly export: Omit<Export.ExportSummary, "files"> & { readonly files: number }
  readonly import: MigrateImportSummary
  /** Import waves run by this process (the last one after the export finished). */
  readonly waves: number
  /** Import waves earlier runs of this migration ran (a resumed one). */
  readonly earlierWaves: number
  /** Data files whose import wave started while the export was still running. */
  readonly overlapped: number
  /** Data files imported in total (earlier runs included). */
  readonly importedFiles: number
  /** The largest number of bytes of finished-but-not-imported data files seen. */
  readonly peakStagedBytes: number
  readonly pruned: { readonly files: number; readonly bytes: number }
  /** The id map and binaries record were copied from this earlier archive (an incremental migration). */
  readonly continues: string | undefined
  /** An earlier run had already finished this migration; nothing was sent. */
  readonly alreadyComplete: boolean
  readonly timings: { readonly exportMs: number; readonly totalMs: number }
}

export type MigrateFailure = ExportError | ImportError | ArchiveError | FhirError | AuthError

/** Types a data file depends on. */
interface Deps {
  /** Types of its relative / same-server references (and `Binary` for attachments on the source). */
  readonly types: Set<string>
  /** Types of conditional references (resolved through identifiers: the final wave, with context). */
  readonly conditional: Set<string>
  /** A reference whose type cannot be known (`urn:uuid`): the final wave. */
  any: boolean
}

interface Landed {
  readonly entry: FileEntry
  deps: Deps | undefined
}

/** Adds the types one resource references to `deps`. */
export const addDependencies = (resource: unknown, sourceBase: string, deps: Deps): void => {
  for (const site of references(resource, { sourceBase })) {
    if (site.canonical) continue
    addReference(site.parsed, deps)
  }
  for (const a of attachments(resource)) {
    const url = a.attachment.url
    if (typeof url === "string" && sourceBinaryId(url, sourceBase) !== undefined) deps.types.add("Binary")
  }
}

/**
 * `addDependencies` read off a resource's NDJSON line without parsing it (a migration scans every data
 * file it has not imported; parsing and walking them all again cost ≈ 1.7 s of walking in a 1M migration's
 * profile, plus the parse). Every `"reference": "…"` in the line is a key `reference` with a string value (in valid JSON a quoted word
 * followed by `:` is a key, and a quote inside a string is escaped), which is what the walker reports as a
 * Reference site; every `"url": "…"` naming a Binary of the source counts as an attachment on it (a URL
 * that is not an Attachment's only holds the file back until the Binary files are in: a superset is safe).
 * A string with an escape is decoded with JSON.parse (one that does not decode, which a checked archive
 * does not hold, sends the file to the final wave). Same result as `addDependencies` on the parsed line for
 * the shared data (tested), at most more `Binary`.
 */
export const addDependenciesOfText = (text: string, sourceBase: string, deps: Deps): void => {
  if (text.includes("\\u")) addDependenciesOfParsed(text, sourceBase, deps)
  else addDependenciesOfBytes(Buffer.from(text), sourceBase, deps)
}

/** A line that may spell a key with an escape (`"refer\u0065nce"` is `reference` too): parsed. */
const addDependenciesOfParsed = (text: string, sourceBase: string, deps: Deps): void => {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    deps.any = true
    return
  }
  addDependencies(value, sourceBase, deps)
}

/** Lines without `\u` escapes (UTF-8): the values of their `"reference"` and `"url"` keys. */
const addDependenciesOfBytes = (region: Buffer, sourceBase: string, deps: Deps): void => {
  const finalWave = () => {
    deps.any = true
  }
  forEachStringOfBytes(
    region,
    REFERENCE_KEY,
    (raw) => addReference(parseReference(raw, { sourceBase }), deps),
    finalWave,
  )
  forEachStringOfBytes(
    region,
    URL_KEY,
    (url) => {
      if (sourceBinaryId(url, sourceBase) !== undefined) deps.types.add("Binary")
    },
    finalWave,
  )
}

const isSpace = (c: number) => c === 32 || c === 9 || c === 10 || c === 13

const REFERENCE_KEY = Buffer.from('"reference"')
const URL_KEY = Buffer.from('"url"')
const ESCAPE_U = Buffer.from("\\u")

/**
 * `addDependenciesOfText` for every line of `lines` (whole NDJSON lines, UTF-8), read off the bytes: a file's
 * lines are not decoded, only the values of its `"reference"` and `"url"` keys (the keys are ASCII, which in
 * UTF-8 never occurs inside another character). A line holding `\u` is parsed.
 * (Decoding and scanning every line as a string took ≈ 450 ms for the Synthea archive's 53.6 MB, on the
 * migration's main thread between two waves.)
 */
export const addDependenciesOfLines = (lines: Buffer, sourceBase: string, deps: Deps): void => {
  let from = 0
  for (let u = lines.indexOf(ESCAPE_U); u >= 0; u = lines.indexOf(ESCAPE_U, from)) {
    const start = u === 0 ? 0 : lines.lastIndexOf(10, u - 1) + 1
    const newline = lines.indexOf(10, u)
    const end = newline < 0 ? lines.length : newline
    if (start > from) addDependenciesOfBytes(lines.subarray(from, start), sourceBase, deps)
    addDependenciesOfParsed(lines.toString("utf8", start, end), sourceBase, deps)
    from = end
  }
  if (lines.length > from) addDependenciesOfBytes(lines.subarray(from), sourceBase, deps)
}

/**
 * Calls `f` with the string value of every `key` (quoted, as in `"reference"`, UTF-8) in JSON text (UTF-8); `bad`
 * for one whose escapes do not decode.
 */
const forEachStringOfBytes = (
  buf: Buffer,
  key: Buffer,
  f: (value: string) => void,
  bad: () => void,
): void => {
  for (let i = buf.indexOf(key); i >= 0; i = buf.indexOf(key, i + 1)) {
    let j = i + key.length
    while (isSpace(buf[j]!)) j++
    if (buf[j] !== 58) continue // not a key
    j++
    while (isSpace(buf[j]!)) j++
    if (buf[j] !== 34) continue // not a string value
    let k = j + 1
    let escaped = false
    while (k < buf.length) {
      const c = buf[k]!
      if (c === 92) {
        escaped = true
        k += 2
      } else if (c === 34) break
      else k++
    }
    if (!escaped) f(buf.toString("utf8", j + 1, Math.min(k, buf.length)))
    else {
      let value: unknown
      try {
        value = JSON.parse(buf.toString("utf8", j, Math.min(k + 1, buf.length)))
      } catch {
        bad()
      }
      if (typeof value === "string") f(value)
    }
    i = k
  }
}

/**
 * Feeds a file's bytes, chunk by chunk, to `addDependenciesOfLines` in runs of whole lines (a chunk may be
 * reused once `push` returns: what is kept of it is copied). A line longer than `maxLineBytes` is not kept
 * whole: its file goes to the final wave, whose import reads it with every check.
 */
export const dependencyScanner = (
  sourceBase: string,
  deps: Deps,
  maxLineBytes: number = Ndjson.DEFAULT_MAX_LINE_BYTES,
): { push: (chunk: Uint8Array) => void; end: () => void } => {
  /** The start of a line not ended yet: copies of the chunks' tails. */
  let open: Array<Buffer> = []
  let openBytes = 0
  let skipping = false
  let started = false
  /** Whole lines; the file's first one without a byte-order mark (as the line reader drops it). */
  const scan = (lines: Buffer) => {
    let b = lines
    if (!started && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) b = b.subarray(3)
    started = true
    addDependenciesOfLines(b, sourceBase, deps)
  }
  const tooLong = () => {
    deps.any = true
    started = true
  }
  return {
    push: (chunk) => {
      const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
      const last = buf.lastIndexOf(10)
      if (last < 0) {
        if (skipping) return
        openBytes += buf.length
        if (openBytes > maxLineBytes) {
          tooLong()
          skipping = true
          open = []
          openBytes = 0
          return
        }
        open.push(Buffer.from(buf))
        return
      }
      const first = buf.indexOf(10)
      if (skipping) skipping = false
      else if (open.length > 0) {
        // (the line's end in this chunk: its length is known only now)
        if (openBytes + first > maxLineBytes) tooLong()
        else {
          open.push(buf.subarray(0, first + 1))
          scan(Buffer.concat(open))
        }
      } else scan(buf.subarray(0, first + 1))
      if (last > first) scan(buf.subarray(first + 1, last + 1))
      open = last + 1 < buf.length ? [Buffer.from(buf.subarray(last + 1))] : []
      openBytes = buf.length - last - 1
    },
    end: () => {
      if (!skipping && open.length > 0) scan(Buffer.concat(open))
      open = []
      openBytes = 0
    },
  }
}

const addReference = (p: ParsedReference, deps: Deps): void => {
  switch (p._tag) {
    case "Relative":
      deps.types.add(p.type)
      break
    case "Versioned":
      if (p.sameServer) deps.types.add(p.type)
      break
    case "Absolute":
      if (p.sameServer && p.type !== undefined) deps.types.add(p.type)
      break
    case "Conditional":
      deps.conditional.add(p.type)
      break
    case "UrnUuid":
      deps.any = true
      break
    default:
      break
  }
}

const emptyDeps = (): Deps => ({ types: new Set(), conditional: new Set(), any: false })

/**
 * The files that can be imported now: the largest subset of `candidates` in which every file's referenced
 * types have all their planned files imported or in the subset. Files needing the final wave are left out.
 */
export const importable = (
  candidates: ReadonlyArray<{ readonly path: string; readonly deps: Deps }>,
  plannedByType: ReadonlyMap<string, ReadonlyArray<string>>,
  imported: ReadonlySet<string>,
): Array<string> => {
  const wave = new Map(
    candidates.filter((c) => !c.deps.any && c.deps.conditional.size === 0).map((c) => [c.path, c]),
  )
  let changed = true
  while (changed) {
    changed = false
    for (const [path, c] of wave) {
      const blocked = Array.from(c.deps.types).some((t) =>
        (plannedByType.get(t) ?? []).some((p) => !imported.has(p) && !wave.has(p)),
      )
      if (blocked) {
        wave.delete(path)
        changed = true
      }
    }
  }
  return Array.from(wave.keys())
}

/** The planned path of a crawled type's file until it is ready. */
const crawlPlaceholder = (type: string) => `crawl:${type}`

const ledgerPath = Imports.migrateLedgerPath

interface WaveRecord {
  readonly files: ReadonlyArray<string>
  readonly final: boolean
}

/** Whether the migration ledger in `dir` (for `target`) says it finished; none when there is no ledger. */
const ledgerDone = (dir: string, target: string): Option.Option<boolean> =>
  Option.map(Option.fromNullable(Imports.readMigrateLedger(dir, target)), (l) => l.done)

/** Fails when `previous`, the earlier archive an incremental migration continues, holds an unfinished migration. */
const refuseUnfinished = (previous: string, target: string) =>
  Option.getOrElse(ledgerDone(previous, target), () => true)
    ? Effect.void
    : Effect.fail(
        new ImportError({
          reason: "Config",
          url: previous,
          detail:
            "the earlier migration this one continues did not finish its import; finish it first (the same ferry migrate with --archive set to it and --since auto), then run this one",
        }),
      )

/** When the export of `dir` began (its journal's first entry), as ms; NaN when that is not known. */
const exportBegan = (dir: string): number => {
  try {
    const text = NFS.readFileSync(Path.join(dir, Archive.layout.journal), "utf8")
    const end = text.indexOf("\n")
    const first = JSON.parse(end < 0 ? text : text.slice(0, end)) as { readonly at?: unknown }
    return typeof first.at === "string" ? Date.parse(first.at) : Number.NaN
  } catch {
    // no journal, or a torn first line: not known
    return Number.NaN
  }
}

/**
 * A finished migration into `target` beside `archive` (same parent folder) of the same source and request
 * (`Export.holdsRequestOf`) whose changes go further than `until`: the target holds newer versions than those
 * `archive` would carry.
 */
const laterMigration = (
  archive: string,
  held: Manifest,
  until: number,
  target: string,
): Effect.Effect<string | undefined, ImportError> =>
  Effect.gen(function* () {
    const parent = Path.dirname(archive)
    const names = yield* Effect.try({
      try: () => (NFS.existsSync(parent) ? NFS.readdirSync(parent) : []),
      catch: Continues.io(parent),
    })
    for (const name of names.sort()) {
      const dir = Path.join(parent, name)
      if (dir === archive || !Option.getOrElse(ledgerDone(dir, target), () => false)) continue
      const m = Option.getOrUndefined(yield* Archive.readManifest(dir).pipe(Effect.option))
      if (m?.transactionTime === undefined || !Export.holdsRequestOf(m, held)) continue
      if (Date.parse(m.transactionTime) > until) return dir
    }
    return undefined
  })

const sum = (xs: Iterable<number>) => {
  let n = 0
  for (const x of xs) n += x
  return n
}

/** Runs (or resumes) a migration. */
export const run = (options: MigrateOptions): Effect.Effect<MigrateSummary, MigrateFailure> =>
  Effect.scoped(
    Effect.gen(function* () {
      const { source, target } = options
      const archive = Path.resolve(options.archive)
      const sourceBase = source.baseUrl
      const started = yield* Clock.currentTimeMillis
      if ((options.params.elements ?? []).length > 0) {
        return yield* new ImportError({
          reason: "Config",
          detail:
            "_elements exports partial resources, which must never be imported into a server; drop --elements for a migration",
        })
      }
      // The archive is this run's for the whole migration, not only while the export writes it (its waves, the
      // ledger and the pruning come after): a second migrate of it stops here. The export does not take it again.
      yield* Archive.lock(archive).pipe(
        Effect.mapError(
          (e) =>
            new ImportError({
              reason: "Archive",
              url: archive,
              detail:
                e.reason === "Locked"
                  ? `another ferry is using this archive (${e.detail}); wait for it to end, or remove ${Path.join(archive, ".lock")} if none runs`
                  : e.message,
              cause: e,
            }),
        ),
      )
      // a finished archive of another source is not this migration's (its ledger would say "finished, nothing
      // to do"); an unfinished one is judged by the export (one whose first attempt started nothing is taken)
      const manifestPath = Path.join(archive, "manifest.json")
      if (NFS.existsSync(manifestPath)) {
        const held = yield* Archive.readManifest(archive).pipe(
          Effect.mapError(
            (e) => new ImportError({ reason: "Archive", url: manifestPath, detail: e.message, cause: e }),
          ),
        )
        const trim = (u: string) => u.replace(/\/+$/, "")
        if (held.complete && trim(held.source.baseUrl) !== trim(redactUrl(sourceBase)))
          return yield* new ImportError({
            reason: "Config",
            url: archive,
            detail: `this archive holds an export of ${held.source.baseUrl}, not of ${redactUrl(sourceBase)}; give this migration another --archive directory (or --from ${held.source.baseUrl} to go on with that one)`,
          })
      }
      // An unfinished delta that a later migration of the same source and request into this target, finished
      // since, supersedes (its changes go further): resuming it would put older versions back. Refused, naming
      // the later one. (Up to when this one's changes go: its export's transactionTime, or, its job not answered
      // yet, when it began, which a re-attached job's transactionTime will be.)
      if (
        NFS.existsSync(manifestPath) &&
        !Option.getOrElse(ledgerDone(archive, target.baseUrl), () => false)
      ) {
        const held = Option.getOrUndefined(yield* Archive.readManifest(archive).pipe(Effect.option))
        if (held?.previous !== undefined) {
          const until =
            held.transactionTime !== undefined ? Date.parse(held.transactionTime) : exportBegan(archive)
          const later = Number.isNaN(until)
            ? undefined
            : yield* laterMigration(archive, held, until, target.baseUrl)
          if (later !== undefined)
            return yield* new ImportError({
              reason: "Config",
              url: archive,
              detail: `a later migration of this source into this target (${later}) finished after this one stopped: it carries every change this one would, in newer versions, and importing this one now would put older ones back; remove ${archive} (nothing is lost)`,
            })
        }
      }
      // (before anything writes there: the events below go to the fresh state). Not over pruned data files: the
      // ledger that says they were pruned on purpose would go with it, and the export would then call them lost.
      if (
        options.restart === true &&
        (Imports.readMigrateLedger(archive, target.baseUrl)?.pruned.size ?? 0) > 0
      )
        return yield* new ImportError({
          reason: "Config",
          url: archive,
          detail:
            "--restart: this migration pruned data files after importing them (--prune-staged), so it cannot load the target again from this archive; run a new migration (another --archive)",
        })
      const setAside =
        options.restart === true
          ? yield* Import.setAsideState(Imports.dir(archive, target.baseUrl))
          : undefined
      const notify = (e: MigrateEvent) => (options.onEvent ? options.onEvent(e) : Effect.void)
      /** A scheduler event: to `onEvent`, and to `imports/<target>/events.ndjson` once the archive exists. */
      const eventsDir = Imports.dir(archive, target.baseUrl)
      // a line a killed run left torn there is cut off, once, before this run's waves and events write there
      yield* Events.cutTornLine(eventsDir).pipe(Effect.mapError(Continues.io(eventsDir)))
      let eventsDirMade = false
      const say = (event: string, fields: Record<string, unknown> = {}) =>
        Effect.zipRight(
          NFS.existsSync(Path.join(archive, "manifest.json"))
            ? Effect.zipRight(
                // the first wave's import makes this directory too: do not race it
                eventsDirMade
                  ? Effect.void
                  : Effect.try({
                      try: () => {
                        makeDirsSync(eventsDir, 0o700)
                        eventsDirMade = true
                      },
                      catch: Continues.io(eventsDir),
                    }),
                Events.append(eventsDir, `migrate.${event}`, fields),
              )
            : Effect.void,
          notify({ from: "migrate", event, ...fields }),
        )

      // --- state (one JS thread: fibers interleave only at yields) -------------------------------------
      /** Planned output files by type (from `files-planned`). */
      const plannedByType = new Map<string, Array<string>>()
      let plannedKnown = false
      const landed = new Map<string, Landed>()
      const deletedLanded = new Map<string, FileEntry>()
      const imported = new Set<string>()
      const pruned = new Set<string>()
      let exportDone = false
      /** The scheduler is scanning or importing. */
      let runnerBusy = false
      /** A file landed that the scheduler has not looked at yet. */
      let pending = false
      let peakStaged = 0
      let prunedBytes = 0
      let prunedFiles = 0
      let overlapped = 0
      let waves = 0
      let pausedNoticed = false
      /** Download fibers held back by `maxStaged` right now. */
      let waiting = 0
      let continues: string | undefined
      /** What `Continues.seed` found for an incremental migration (handed to each wave's import). */
      let seededFrom: Continues.Seeded | undefined
      const totals = {
        strategy: undefined as Import.Strategy | undefined,
        resources: {} as Record<string, number>,
        total: 0,
        binaries: 0,
        quarantined: 0,
        deleted: 0,
        chunks: 0,
        resumedChunks: 0,
        dropMeta: undefined as ReadonlyArray<Import.MetaField> | undefined,
      }
      const staged = () =>
        sum(Array.from(landed.values(), (l) => (imported.has(l.entry.path) ? 0 : l.entry.bytes)))

      // `--since auto` continues only an archive migrated into this target: the newest archive beside this one
      // may belong to another target's migration, and starting after its transactionTime would skip changes
      // this target never got. The newest one of this target must have finished (its id map holds what it
      // created): an unfinished one is refused, as its delta would match its resources and not update them.
      const migratedHere = (dir: string) => Option.isSome(ledgerDone(dir, target.baseUrl))
      if (options.params.since === "auto" && !NFS.existsSync(Path.join(archive, "manifest.json"))) {
        const since = yield* Export.previousTransactionTime(archive, {
          baseUrl: sourceBase,
          params: options.params,
          accepts: migratedHere,
        })
        if (Option.isSome(since)) {
          const previous = yield* Continues.previousArchive(archive, since.value, target.baseUrl)
          if (Option.isSome(previous)) {
            yield* refuseUnfinished(previous.value, target.baseUrl)
            // what the earlier migration left in quarantine is not this delta's to send (only what changed since
            // is): said, so that a cutover does not leave it behind unawares
            const left = Imports.pendingQuarantine(previous.value, target.baseUrl)
            if (left > 0)
              yield* say("warning", {
                detail: `the earlier migration (${previous.value}) still holds ${left} quarantined resource${left === 1 ? "" : "s"} for this target, which this incremental run does not send (unless they changed at the source); once the cause is fixed: ${["ferry import", shellWord(previous.value), "--to", shellWord(redactUrl(target.baseUrl)), "--retry-quarantine"].join(" ")}`,
              })
          }
        }
      }

      // Earlier runs of this migration.
      const ledgerFile = ledgerPath(archive, target.baseUrl)
      const earlier = yield* Effect.try({
        try: () => Imports.readMigrateLedger(archive, target.baseUrl) ?? Imports.parseMigrateLedger(""),
        catch: Continues.io(ledgerFile),
      })
      const previousWaves = earlier.waves
      const alreadyDone = earlier.done
      for (const f of earlier.imported) imported.add(f)
      for (const [p, bytes] of earlier.pruned) {
        pruned.add(p)
        prunedBytes += bytes
        // a kill between the ledger line and the removal left it (a data file of this archive, nothing else)
        const abs = Path.resolve(archive, p)
        if (abs.startsWith(`${Path.join(archive, "data")}${Path.sep}`))
          yield* Effect.try({ try: () => NFS.rmSync(abs, { force: true }), catch: Continues.io(abs) })
      }
      if (setAside !== undefined) yield* say("warning", { detail: Import.setAsideWarning(setAside) })
      if (imported.size > 0 || alreadyDone) {
        // a target emptied or rebuilt at the same URL since: the ledger would send nothing of what it holds
        // (the types of the files imported: an unfinished export's manifest lists none yet)
        yield* Import.refuseEmptied(
          target,
          archive,
          Array.from(new Set(Array.from(imported, (p) => Path.basename(p).split(".")[0]!))),
          `earlier runs of this migration imported ${imported.size} of its files there`,
          pruned.size,
        )
        yield* say("resume", { importedFiles: imported.size, waves: previousWaves, done: alreadyDone })
      }

      // The ledger is opened once the archive exists (the export creates it in an empty directory).
      const ledger = yield* Effect.cached(Journal.make(ledgerFile))
      /** This run's scope (the ledger's file lives in it), for the export's event callback. */
      const runScope = yield* Effect.scope

      const wake = yield* Queue.sliding<void>(1)
      const signal = Effect.suspend(() => {
        pending = true
        return Queue.offer(wake, undefined)
      }).pipe(Effect.asVoid)

      // --- export side ---------------------------------------------------------------------------------
      /**
       * `say` from inside the export's event callback, which cannot fail: the first failure to write the event
       * log is kept and fails the migration once the export returns.
       */
      let eventLogFailure: ImportError | ArchiveError | undefined
      const sayDuringExport = (event: string, fields: Record<string, unknown> = {}) =>
        say(event, fields).pipe(
          Effect.catchAll((e) =>
            Effect.sync(() => {
              eventLogFailure ??= e
            }),
          ),
        )
      const onExportEvent = (e: Export.ExportEvent): Effect.Effect<void> =>
        Effect.gen(function* () {
          yield* notify({ ...e, from: "export" })
          if (e.event === "files-planned") {
            plannedByType.clear()
            const add = (type: string, path: string) => {
              plannedByType.set(type, [...(plannedByType.get(type) ?? []), path])
            }
            if (Array.isArray(e.files)) {
              for (const f of e.files as ReadonlyArray<{ kind?: unknown; type?: unknown; path?: unknown }>) {
                if (f.kind === "output" && typeof f.path === "string")
                  add(typeof f.type === "string" ? f.type : "Resource", f.path)
              }
            } else if (Array.isArray(e.types)) {
              // a crawl: one file per non-empty type, its path known once it is ready
              for (const t of e.types) if (typeof t === "string") add(t, crawlPlaceholder(t))
            }
            plannedKnown = true
            return yield* signal
          }
          if (e.event === "rekickoff-dropped" && Array.isArray(e.paths)) {
            // the new job's files of those types take the same paths: what a wave imported from the old
            // ones is on the target (imported again where the new files hold it), and the new files are
            // imported as they come (`file-ready` again); the ledger forgets them too, for a resumed run
            const paths = (e.paths as ReadonlyArray<unknown>).filter(
              (p): p is string => typeof p === "string",
            )
            const again = paths.filter((p) => imported.has(p))
            for (const p of paths) {
              landed.delete(p)
              imported.delete(p)
              pruned.delete(p)
              // a wave under way may be reading the old file: it must not count it (nor prune the new one)
              replacedDuringWave.add(p)
            }
            if (again.length > 0)
              yield* Effect.flatMap(ledger, (journal) =>
                journal.append("migrate.replaced", `migrate.replaced:${Date.now()}`, { files: again }),
              ).pipe(
                Scope.extend(runScope),
                Effect.catchAll((err) =>
                  Effect.sync(() => {
                    eventLogFailure ??= err
                  }),
                ),
              )
            return yield* signal
          }
          if (e.event === "early-dropped") {
            // the files of a vanished job's partial manifests are gone from the archive (none was imported:
            // no wave runs before the manifest is complete)
            for (const [path, l] of [...landed]) if (!imported.has(l.entry.path)) landed.delete(path)
            deletedLanded.clear()
            return
          }
          if (e.event === "file-empty" && typeof e.type === "string") {
            const t = e.type
            plannedByType.set(
              t,
              (plannedByType.get(t) ?? []).filter((p) => p !== crawlPlaceholder(t)),
            )
            return yield* signal
          }
          if (e.event !== "file-ready") return
          const path = String(e.path)
          const entry: FileEntry = {
            type: String(e.type ?? "Resource"),
            path,
            count: Number(e.count ?? 0),
            bytes: Number(e.bytes ?? 0),
            sha256: String(e.sha256 ?? ""),
            compression: e.compression === "gzip" ? "gzip" : "none",
          }
          if (e.kind === "deleted") {
            deletedLanded.set(path, entry)
            return
          }
          if (e.kind !== "output") return
          const placeholder = crawlPlaceholder(entry.type)
          const paths = plannedByType.get(entry.type)
          if (paths?.includes(placeholder)) {
            plannedByType.set(
              entry.type,
              paths.map((p) => (p === placeholder ? path : p)),
            )
          }
          if (!landed.has(path)) landed.set(path, { entry, deps: undefined })
          if (imported.has(path)) return
          peakStaged = Math.max(peakStaged, staged())
          yield* signal
          // --max-staged: this download fiber waits while a wave is under way and the staged bytes are over
          const max = options.maxStaged
          if (max === undefined || staged() <= max) return
          if (waiting++ === 0) yield* sayDuringExport("paused", { staged: staged(), maxStaged: max })
          yield* Effect.repeat(
            Effect.sync(() => staged() > max && (runnerBusy || pending)),
            { schedule: Schedule.spaced("100 millis"), while: (wait) => wait },
          )
          if (staged() > max && !pausedNoticed) {
            pausedNoticed = true
            yield* sayDuringExport("warning", {
              detail: `${staged()} bytes are staged (over --max-staged ${max}) but nothing can be imported until files they depend on arrive; downloading on`,
            })
          }
          if (--waiting === 0) yield* sayDuringExport("unpaused", { staged: staged() })
        })

      // --- import side ---------------------------------------------------------------------------------
      const scan = (l: Landed) =>
        Effect.gen(function* () {
          if (l.deps !== undefined) return
          const deps = emptyDeps()
          // (a Binary's line holds its data: such lines may be longer)
          const scanner = dependencyScanner(
            sourceBase,
            deps,
            l.entry.type === "Binary" ? Ndjson.BINARY_MAX_LINE_BYTES : Ndjson.DEFAULT_MAX_LINE_BYTES,
          )
          yield* Stream.runForEach(Archive.bytes(archive, l.entry), (chunk) =>
            Effect.sync(() => scanner.push(chunk)),
          )
          scanner.end()
          l.deps = deps
        })

      const seedIds = Effect.gen(function* () {
        const manifest = yield* Archive.readManifest(archive)
        const since = manifest.previous?.transactionTime
        if (since === undefined) return
        // (nothing is copied from an unfinished one: `seed` takes only a finished import's id map)
        const seeded = yield* Continues.seed(archive, since, target.baseUrl)
        if (Option.isSome(seeded.previous)) yield* refuseUnfinished(seeded.previous.value, target.baseUrl)
        if (Option.isNone(seeded.previous)) {
          yield* say("warning", {
            detail: `no finished archive next to ${archive} has transactionTime ${since}: this incremental migration has no id map from the earlier one (fine when the target keeps the source ids)`,
          })
          return
        }
        continues = seeded.previous.value
        seededFrom = seeded
        yield* say("continues", {
          archive: seeded.previous.value,
          idMap: seeded.idMap,
          // the earlier import's --drop-meta, kept when this run gives none (said here, kept by Import)
          ...(options.dropMeta === undefined ? { dropMeta: Import.metaFieldsOf(seeded.dropMeta) ?? [] } : {}),
        })
      })
      const seedOnce = yield* Effect.cached(seedIds)
      /** The Bundle size the target's 413s taught the waves so far (see `Import`'s sizer). */
      let learnedBundleSize: number | undefined

      /** Paths the export replaced (rekickoff-dropped) since the current wave started. */
      const replacedDuringWave = new Set<string>()
      const runWave = (files: ReadonlyArray<FileEntry>, final: boolean, context: ReadonlyArray<FileEntry>) =>
        Effect.gen(function* () {
          replacedDuringWave.clear()
          yield* seedOnce
          const journal = yield* ledger
          waves++
          const wave = previousWaves + waves
          const deletedFiles = Array.from(deletedLanded.values())
          const duringExport = !exportDone
          yield* say("wave", {
            wave,
            final,
            files: files.length,
            resources: sum(files.map((f) => f.count)),
            context: context.length,
            deleted: final ? deletedFiles.length : 0,
            staged: staged(),
          })
          const binaryQuarantined = Imports.quarantines(archive, target.baseUrl, "Binary")
          const result = yield* Import.run({
            client: target,
            archive,
            // seeded above (`seedOnce`), after checking the earlier migration finished
            continues: seededFrom ?? false,
            files,
            expectedTypes: Array.from(plannedByType.keys()),
            contextFiles: context,
            // The archive's Binary resources own their blobs (never uploaded as second copies): those of
            // earlier waves are in the id map, the landed Binary files not imported yet are read for their ids
            // (in the final wave, none: every Binary file left is in it), and while the export runs, blobs whose
            // Binary file is still downloading wait for it. A Binary an earlier wave quarantined is not in the
            // id map: then every landed Binary file is read, so its blob waits with it for --retry-quarantine,
            // as in an import. (The final wave used to read them all anyway: 2.6 s of a 1M migration's last.)
            otherBinaryFiles: Array.from(landed.values()).flatMap((l) =>
              l.entry.type === "Binary" && (binaryQuarantined || !imported.has(l.entry.path))
                ? [l.entry]
                : [],
            ),
            ...(final
              ? {}
              : { binariesPending: (plannedByType.get("Binary") ?? []).some((p) => !landed.has(p)) }),
            deletes: final,
            ...(final ? { deletedFiles } : {}),
            ...(options.strategy !== undefined ? { strategy: options.strategy } : {}),
            ...(options.bundleSize !== undefined ? { bundleSize: options.bundleSize } : {}),
            // a size the target refused as too large is not sent again by the later waves: they start at the
            // size the earlier ones ended at (and grow back from it as theirs land)
            ...(learnedBundleSize !== undefined ? { startBundleSize: learnedBundleSize } : {}),
            ...(options.maxBundleBytes !== undefined ? { maxBundleBytes: options.maxBundleBytes } : {}),
            ...(options.dropMeta !== undefined ? { dropMeta: options.dropMeta } : {}),
            ...(options.serve !== undefined ? { serve: options.serve } : {}),
            ...(options.importParallel !== undefined ? { parallel: options.importParallel } : {}),
            onEvent: (e) => notify({ ...e, from: "import" }),
          }).pipe(
            // the export replaced one of this wave's files under it (a new kick-off for expired files): the
            // wave may have met the file gone or changed; what it sent stands (PUTs and conditional creates
            // land once), and its files are taken again by a later wave, the new ones as they land
            Effect.catchAll((e) =>
              files.some((f) => replacedDuringWave.has(f.path))
                ? Effect.as(
                    say("wave-restarted", {
                      wave,
                      files: files.filter((f) => replacedDuringWave.has(f.path)).map((f) => f.path),
                      detail: e.message,
                    }),
                    undefined,
                  )
                : Effect.fail(e),
            ),
          )
          if (result === undefined) return
          const summary = result
          learnedBundleSize = summary.bundleSize
          totals.strategy = summary.strategy
          for (const [t, n] of Object.entries(summary.resources))
            totals.resources[t] = (totals.resources[t] ?? 0) + n
          totals.total += summary.total
          totals.binaries += summary.binaries
          totals.quarantined += summary.quarantined
          totals.deleted += summary.deleted
          totals.chunks += summary.chunks
          totals.resumedChunks += summary.resumedChunks
          totals.dropMeta = summary.dropMeta
          // a file the export replaced while this wave read it is imported again from the new job
          const paths = files.map((f) => f.path).filter((p) => !replacedDuringWave.has(p))
          yield* journal.append("migrate.wave", `migrate.wave:${wave}`, {
            files: paths,
            final,
          } satisfies WaveRecord)
          for (const p of paths) imported.add(p)
          if (duringExport) overlapped += paths.length
          yield* say("wave-done", {
            wave,
            final,
            total: summary.total,
            quarantined: summary.quarantined,
            deleted: summary.deleted,
            resumedChunks: summary.resumedChunks,
            importedFiles: imported.size,
            staged: staged(),
          })
          if (options.pruneStaged === true) {
            const before = prunedFiles
            for (const f of files) {
              if (f.type === "Binary" || pruned.has(f.path) || replacedDuringWave.has(f.path)) continue
              const abs = Path.join(archive, f.path)
              // recorded first: a kill between the two leaves a file the ledger calls pruned (removed on the
              // next run), never a removed file a later wave would read as context
              yield* journal.append("migrate.pruned", `migrate.pruned:${f.path}`, {
                path: f.path,
                bytes: f.bytes,
              })
              yield* Effect.try({ try: () => NFS.rmSync(abs, { force: true }), catch: Continues.io(abs) })
              pruned.add(f.path)
              prunedFiles++
              prunedBytes += f.bytes
            }
            if (prunedFiles > before) yield* say("pruned", { files: pruned.size, bytes: prunedBytes })
          }
        })

      /** One pass of the scheduler while the export runs: scan what landed, import what can be. */
      const step = Effect.gen(function* () {
        runnerBusy = true
        pending = false
        // nothing is read before the manifest is complete: until then a file may still be dropped (partial
        // manifests of a job that vanished)
        if (!plannedKnown) return
        for (const l of landed.values()) if (!imported.has(l.entry.path)) yield* scan(l)
        const candidates = Array.from(landed.values()).flatMap((l) =>
          imported.has(l.entry.path) || l.deps === undefined ? [] : [{ path: l.entry.path, deps: l.deps }],
        )
        const now = importable(candidates, plannedByType, imported)
        if (now.length === 0) return
        yield* runWave(
          now.map((p) => landed.get(p)!.entry),
          false,
          [],
        )
      }).pipe(
        Effect.ensuring(
          Effect.sync(() => {
            runnerBusy = false
          }),
        ),
      )

      const runner = Effect.gen(function* () {
        for (;;) {
          yield* Queue.take(wake)
          if (exportDone) return
          yield* step
        }
      })

      const exportSide = Effect.gen(function* () {
        const summary = yield* Export.run({
          client: source,
          out: archive,
          outFlag: "--archive",
          lockHeld: true,
          params: options.params,
          sinceAccepts: migratedHere,
          // (the ledger's pruned files: imported, then removed on purpose)
          gone: (path) => pruned.has(path),
          ...(options.mode !== undefined ? { mode: options.mode } : {}),
          ...(options.parallel !== undefined ? { parallel: options.parallel } : {}),
          ...(options.timeout !== undefined ? { timeout: options.timeout } : {}),
          ...(options.pollInterval !== undefined ? { pollInterval: options.pollInterval } : {}),
          ...(options.keepJob !== undefined ? { keepJob: options.keepJob } : {}),
          ...(options.gzip !== undefined ? { gzip: options.gzip } : {}),
          ...(options.attachments !== undefined ? { attachments: options.attachments } : {}),
          ...(options.allowMissingAttachments !== undefined
            ? { allowMissingAttachments: options.allowMissingAttachments }
            : {}),
          ...(options.attachmentOrigins !== undefined
            ? { attachmentOrigins: options.attachmentOrigins }
            : {}),
          ...(options.allowExportErrors !== undefined
            ? { allowExportErrors: options.allowExportErrors }
            : {}),
          ...(options.tool !== undefined ? { tool: options.tool } : {}),
          // referenced types first, so that waves can import while the rest downloads
          downloadRank: TypeOrder.rank,
          onEvent: onExportEvent,
        })
        exportDone = true
        yield* signal
        return summary
      })

      // The runner stops at the first wake-up after the export finished (or with it, on failure).
      const [exported] = yield* Effect.all([exportSide, runner], { concurrency: 2 })
      if (eventLogFailure !== undefined) return yield* Effect.fail(eventLogFailure)
      const exportMs = (yield* Clock.currentTimeMillis) - started

      // --- final wave: everything else, context for conditional references, deletes ----------------------
      const outputs = exported.files.filter((f) => f.kind === "output")
      const entry = ({ kind: _k, ...e }: Export.ArchiveFile): FileEntry => e
      for (const f of exported.files) if (f.kind === "deleted") deletedLanded.set(f.path, entry(f))
      if (!alreadyDone) {
        const rest = outputs.filter((f) => !imported.has(f.path)).map(entry)
        for (const f of rest) if (!landed.has(f.path)) landed.set(f.path, { entry: f, deps: undefined })
        const contextTypes = new Set<string>()
        for (const f of rest) {
          const l = landed.get(f.path)!
          yield* scan(l)
          for (const t of l.deps?.conditional ?? []) contextTypes.add(t)
        }
        const context = outputs
          .filter((f) => imported.has(f.path) && contextTypes.has(f.type) && !pruned.has(f.path))
          .map(entry)
        if (outputs.some((f) => imported.has(f.path) && contextTypes.has(f.type) && pruned.has(f.path))) {
          yield* say("warning", {
            detail:
              "some files that conditional references point into were pruned; those references stay unresolved (do not use --prune-staged with conditional references)",
          })
        }
        peakStaged = Math.max(peakStaged, staged())
        // the last wave: the rest and the deletes (nothing to send when the waves took every file)
        if (rest.length > 0 || deletedLanded.size > 0) yield* runWave(rest, true, context)
        // a delta with nothing to import still carries the id map on, for the delta that continues it
        else yield* seedOnce
        const journal = yield* ledger
        yield* journal.append("migrate.done", "migrate.done", {
          transactionTime: exported.transactionTime,
          importedFiles: imported.size,
        })
      } else {
        yield* say("already-complete", {})
      }
      const totalMs = (yield* Clock.currentTimeMillis) - started
      const { files: exportFiles, ...exportRest } = exported
      const summary: MigrateSummary = {
        archive,
        source: redactUrl(source.baseUrl),
        target: redactUrl(target.baseUrl),
        transactionTime: exported.transactionTime,
        since: exported.since,
        export: { ...exportRest, files: exportFiles.length },
        import: totals,
        waves,
        earlierWaves: previousWaves,
        overlapped,
        importedFiles: imported.size,
        peakStagedBytes: peakStaged,
        pruned: { files: pruned.size, bytes: prunedBytes },
        continues,
        alreadyComplete: alreadyDone,
        timings: { exportMs, totalMs },
      }
      yield* say("done", {
        total: totals.total,
        quarantined: totals.quarantined,
        deleted: totals.deleted,
        waves,
        overlapped,
        importedFiles: imported.size,
        totalMs,
        exportMs,
      })
      return summary
    }),
  )
