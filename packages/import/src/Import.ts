/**
 * Replay an archive into a target FHIR server with dependency-ordered transaction Bundles.
 *
 * Order of work:
 * 1. Strategy: `put` (PUT `Type/id`, source ids kept, idempotent) when the target's CapabilityStatement
 *    says `updateCreate` for the archive's types and a throwaway probe PUT (`Basic/ferry-probe-…`, deleted
 *    again) is accepted; `post` (POST + `ifNoneExist` on Ferry's provenance tag, new ids read from
 *    `response.location`) when client ids are refused. `import` ($import, only when asked for with
 *    `strategy: "import"`): the blobs as for put, then every data file rewritten line for line as put's
 *    Bundles would be into `imports/<target>/bulk/` (removed after the job), loaded by the target's job
 *    (BulkImport.ts), then the deletes. The chosen strategy is journaled, so a rerun keeps it.
 * 2. Binaries: every attachment blob that is no Binary of the source in the archive goes to the target as a
 *    `Binary`, recorded in `binaries.ndjson`, and every exported `Attachment.url` is re-pointed to it. The
 *    upload is idempotent, so a crash between the upload and its `binaries.ndjson` line never makes a second
 *    copy: put: a copy per resource that points at the blob, raw bytes PUT to the deterministic
 *    `Binary/ferry-<first 40 hex of the sha256>-<first 16 hex of the sha256 of the resource's Type/id>` with
 *    `X-Security-Context: <Type/id>` (its access rules are that resource's), made once the resource landed
 *    and before its chunk is journaled, recorded `{sha256, id, owner}`; post: one JSON Binary per blob tagged
 *    `urn:ferry:sha256|<sha256>` POSTed with `If-None-Exist: _tag=urn:ferry:sha256|<sha256>` (when the target
 *    can search `_tag` on Binary; otherwise a plain POST, as for resources), before the resources (which
 *    point at its server-assigned id), without a security context; `import`: one raw PUT per blob to
 *    `Binary/ferry-<first 58 hex of the sha256>`, likewise.
 * 3. Resources in dependency order, from one pass over the data files. Each resource is parsed once: its
 *    node (sized by its NDJSON line), the line's byte offset, the id registry, the identifier index and its
 *    reference strings (`Graph.referenceCandidates`; each distinct string is parsed and resolved once, when
 *    the types it names are complete: `Graph.DeferredEdges`). Files are read by type, the usual dependencies
 *    first (`policy.readingOrder`); whenever the files read since the last segment refer only to types whose
 *    every file is read (`DeferredEdges.closedOver`; a `urn:uuid:` reference, which names no type, waits
 *    until the ids of the files not read yet are read ahead from their lines' text, once, when a segment is
 *    due) and hold at least `2 × bundle size × parallel` resources and as many as all earlier segments
 *    together (or `SEGMENT_MAX`, whichever is less), they become a segment: its Tarjan components and the chunk
 *    planner (`--bundle-size`, `--max-bundle-bytes`) give chunks by level, sent while the next files are
 *    read. Nothing read later can be a dependency of a segment (cycles never span two), and segments go to
 *    the target one after the other. A chunk's bodies are read back just before it is sent, with a few
 *    positioned reads of the recorded offsets (gzip files, which cannot be read at an offset, are
 *    decompressed once per group of `4 × parallel` chunks and only the wanted lines parsed), and its Bundle
 *    is written entry by entry (`Chunk.TransactionWriter`): a put-mode resource whose references are all
 *    plain `Type/id` (`DeferredEdges.verbatim`) goes in as its line with only `meta` patched
 *    (`Rewrite.applyMetaBytes`), the others are parsed and rewritten one at a time. The answer is checked only
 *    for what the id map needs (`Chunk.readResponse`). Hot loops are plain TypeScript inside one Effect per
 *    chunk of lines or per Bundle (profiled: an Effect per resource cost about as much as parsing it).
 *    Memory: per resource its key (`KeyTable`: its characters and ≈ 25 B, outside the JS heap), its line
 *    position (20 B), its id in the id registry (the same, outside the heap), its identifiers in the
 *    identifier index (outside the heap too) and, in post mode, its id map entry (likewise); per segment (at
 *    most `SEGMENT_MAX` resources, as file boundaries allow; three at once: one being sent, one waiting, one
 *    being read or waiting) its graph (≈ 130 B per resource, 8 B per reference) and the text of each
 *    distinct reference string; the bodies of the chunks in flight (as text); never the whole archive.
 * 4. Failures: 413 splits a chunk in halves (in dependency order) down to one resource, which is then
 *    quarantined (in post mode a reference cycle that alone exceeds the limit is quarantined whole: its
 *    `urn:uuid` links cannot be cut); a refused transaction (4xx) is replayed as a batch (put) or as single-entry transactions
 *    (post, whose entries refer to each other by `urn:uuid`) to find the failing entries, which go to
 *    `quarantine/<Type>.ndjson` as `{resource, outcome, reason, source: "file:line"}`; 429/503 that outlived the
 *    client's retries and transport errors halve the concurrency and retry the chunk after a pause; 20
 *    successes in a row give one slot back.
 * 5. Journal: the id map lines are appended (fsynced) before the chunk's `import.chunk` line, so a killed
 *    import resumes without gaps; PUT is idempotent and POST is a conditional create, so no duplicates.
 * 6. `deleted/` Bundles become DELETEs on the target through the id map (skipped with `deletes: false`).
 *
 * Subsets (`files`, used by `ferry migrate` to import an export wave by wave while it still runs): only the
 * given data files are read, so the graph, the identifier index and the chunks cover them alone and the
 * manifest may be incomplete. References to resources outside the subset are left as they are (put: the
 * same `Type/id` lands later or already did) or follow the persisted id map (post: `idmap.ndjson` holds every
 * earlier run's mappings; later lines win). The journal, id map and `binaries.ndjson` live in the same
 * `imports/<target>/` directory for every subset: chunk journal keys are a hash of the chunk's resource keys
 * (the same resources give the same key whatever the subset), binaries are recorded by sha256, PUT is
 * idempotent and POST is a conditional create on the `urn:ferry:source` tag, so repeated or overlapping
 * subset runs never duplicate. Every blob of the attachment index not uploaded yet is uploaded before the
 * subset's resources (an incomplete archive's index holds at least the blobs its finished files point to).
 */
import { randomBytes } from "node:crypto"
import * as NFS from "node:fs"
import * as Path from "node:path"
import { makeDirsSync } from "@ferry/core/Dirs"
import { HttpClientRequest } from "@effect/platform"
import * as Archive from "@ferry/archive/Archive"
import type { FileEntry } from "@ferry/archive/Manifest"
import * as Attachments from "@ferry/archive/Attachments"
import * as Events from "@ferry/archive/Events"
import * as Imports from "@ferry/archive/Imports"
import { Journal } from "@ferry/archive/Journal"
import { BufferPool } from "@ferry/core/BufferPool"
import * as CapabilityStatement from "@ferry/core/CapabilityStatement"
import { type AuthError, FhirError } from "@ferry/core/Errors"
import { type FhirClient, searchOne } from "@ferry/core/FhirClient"
import { bodyFailure, redactUrl } from "@ferry/core/Http"
import { parse as parseReference } from "@ferry/core/Reference"
import { isResource, type Resource } from "@ferry/core/Ids"
import { KeyTable } from "@ferry/core/KeyTable"
import * as Ndjson from "@ferry/core/Ndjson"
import type { Bundle as FhirBundle } from "@ferry/core/Bundle"
import { hasOddNumbers, restoreNumbers } from "@ferry/core/NumberText"
import { forEachPooled } from "@ferry/core/Pool"
import { binaryIdFor, ownedBinaryIdFor, sha256TagSystem } from "@ferry/transform/AttachmentCopy"
import * as Chunk from "@ferry/transform/Chunk"
import {
  type Components,
  components,
  DeferredEdges,
  fromResources,
  type Graph,
  GraphBuilder,
  members,
  referenceCandidates,
} from "@ferry/transform/Graph"
import { IdentifierIndex } from "@ferry/transform/IdentifierIndex"
import { IdMap } from "@ferry/transform/IdMap"
import {
  type MetaOptions,
  originKey,
  type RewriteContext,
  rewriteResource,
  type Unresolved,
} from "@ferry/transform/Rewrite"
import { sourceBinaryId } from "@ferry/transform/Resolve"
import * as TypeOrder from "@ferry/transform/TypeOrder"
import {
  Clock,
  Duration,
  Effect,
  Either,
  Chunk as EffectChunk,
  Exit,
  Option,
  Queue,
  Schema,
  Stream,
} from "effect"
import * as BulkImport from "./BulkImport.js"
import * as Continues from "./Continues.js"
import { ImportError } from "./ImportError.js"
import { lineBytes, Locations, type Span, spans } from "./internal/bodies.js"
import {
  chooseStrategy,
  chunkKey,
  isEntryRefusal,
  isSystemic,
  isThrottle,
  isTooLarge,
  makeLimiter,
  makeSizer,
  quarantineLine,
  readingOrder,
  searchesTag,
  heldAlready,
  holdsNothingOf,
  nonEmptyTarget,
  refusal,
  typeOf,
} from "./internal/policy.js"
import type * as Policy from "./internal/policy.js"

export type Strategy = Policy.Strategy

/** One progress event (also written to the import's `events.ndjson`). */
export interface ImportEvent {
  readonly event: string
  readonly [field: string]: unknown
}

export type ImportFailure = Policy.ImportFailure

/** The `meta` members an import may drop (`ImportOptions.dropMeta`). */
export const metaFields = ["source", "tag", "security"] as const
export type MetaField = (typeof metaFields)[number]

/** A journaled `--drop-meta` (`import.dropMeta`): its known fields; undefined when it is not a list. */
export const metaFieldsOf = (data: unknown): ReadonlyArray<MetaField> | undefined =>
  Array.isArray(data) ? metaFields.filter((m) => (data as ReadonlyArray<unknown>).includes(m)) : undefined

const metaDrops = (fields: ReadonlyArray<MetaField>): Pick<MetaOptions, MetaField> => ({
  ...(fields.includes("source") ? { source: "drop" } : {}),
  ...(fields.includes("tag") ? { tag: "drop" } : {}),
  ...(fields.includes("security") ? { security: "drop" } : {}),
})

export interface ImportOptions {
  readonly client: FhirClient
  /** The archive directory (a complete export, unless `files` is given). */
  readonly archive: string
  /**
   * Other bases the source server's own absolute references use (a proxy's address, an internal host name the
   * server writes into its data): references under them are the source's, like those under the archive's
   * source base, and become relative on the target.
   */
  readonly sourceBases?: ReadonlyArray<string>
  /**
   * Import only these data files (archive-relative paths, as in the manifest) instead of `manifest.files`;
   * the archive may then be incomplete (its export still running). Repeated runs with different subsets
   * share the journal, id map and binaries record of `imports/<target>/`.
   */
  readonly files?: ReadonlyArray<FileEntry>
  /**
   * Every resource type the archive will hold, when it is still being written (a migrate's waves start while
   * the export runs, and the manifest lists only the files finished so far): a first import's check of what
   * the target holds already counts all of them. Default: the manifest's types.
   */
  readonly expectedTypes?: ReadonlyArray<string>
  /**
   * Data files an earlier run into this target already loaded: read only so that the conditional
   * (`Type?identifier=…`) and `urn:uuid:` references of `files` resolve to their resources; nothing of them
   * is sent again (`ferry migrate`'s final wave).
   */
  readonly contextFiles?: ReadonlyArray<FileEntry>
  /**
   * More of the archive's `Binary` data files are still to come (a `ferry migrate` wave while the export
   * runs). A blob fetched from a source `Binary/<id>` that no Binary file read so far holds is then left
   * for a later run, which finds that Binary among the resources, instead of being uploaded now as a second
   * copy (`Binary/ferry-…`) of a Binary that lands later. The resources pointing at such a blob are not in
   * this run: the migrate scheduler holds them until every Binary file is imported.
   */
  readonly binariesPending?: boolean
  /**
   * With `files`: the archive's other `Binary` data files whose resources count as its own Binaries (their
   * blobs are not uploaded again). Default: those of the manifest, which lists no file while an export still
   * runs; `ferry migrate` passes the Binary files landed so far.
   */
  readonly otherBinaryFiles?: ReadonlyArray<FileEntry>
  /**
   * For an incremental archive, copy the id map (and Binaries record) of this target from the archive it
   * continues, beside it (`Continues.seed`; default true). `ferry migrate` does it itself before its waves
   * and hands over what it found (a first run of this import then keeps that import's `--drop-meta`).
   */
  readonly continues?: boolean | Continues.Seeded
  /**
   * Start this target's import over: its import state in the archive (journal, id map, quarantine, …) is set
   * aside first (renamed, not deleted). For a target emptied or rebuilt at the same URL, which a rerun would
   * otherwise leave empty (its journal says what landed there).
   */
  readonly restart?: boolean
  /** Process the archive's `deleted/` files in this run (default true). */
  readonly deletes?: boolean
  /** The `deleted/` files to process instead of `manifest.deleted` (when the manifest is incomplete). */
  readonly deletedFiles?: ReadonlyArray<FileEntry>
  /** Forced strategy; otherwise chosen from the CapabilityStatement and a probe. */
  readonly strategy?: Strategy
  /** Entries per Bundle (default 500). */
  readonly bundleSize?: number
  /**
   * Entries per Bundle to start with, below `bundleSize` (what an earlier run into this target ended at: a
   * migrate's earlier wave); grows back towards `bundleSize` as Bundles land. Default: `bundleSize`.
   */
  readonly startBundleSize?: number
  /** Bytes per Bundle, estimated (default 10 MB). */
  readonly maxBundleBytes?: number
  /** Concurrent Bundles at most (default 4); adaptive below that. */
  readonly parallel?: number
  /**
   * Resources of a segment (see the module doc) beyond which it is closed at the next file that allows it
   * (default SEGMENT_MAX; tests make it small to see many segments).
   */
  readonly segmentMax?: number
  /** `strategy: "import"`: where the target fetches the files from (default: a local file server). */
  readonly serve?: BulkImport.ServeOptions
  /** Replay `quarantine/*.ndjson` instead of the archive's data (after fixing the cause). */
  readonly retryQuarantine?: boolean
  /**
   * `meta` members the source's resources lose on the target (default: all kept; `meta.versionId` and
   * `meta.lastUpdated` always go). Ferry's provenance tag is added after `tag` is dropped.
   */
  readonly dropMeta?: ReadonlyArray<MetaField>
  readonly onEvent?: (event: ImportEvent) => Effect.Effect<void>
}

export interface ImportSummary {
  readonly target: string
  readonly strategy: Strategy
  /** Resources written (or matched by the conditional create) per type, this run. */
  readonly resources: Readonly<Record<string, number>>
  readonly total: number
  readonly chunks: number
  /** Chunks found done in the journal and skipped. */
  readonly resumedChunks: number
  readonly binaries: number
  readonly quarantined: number
  readonly deleted: number
  /** `deleted/` entries not applied: the resource is not in this target's id map (never loaded into it). */
  readonly deletesSkipped: number
  /**
   * `deleted/` entries whose resource the target no longer had (404/410): deleted by an earlier run of this
   * import that stopped before it recorded its deleted/ files as done, or by someone else. Not in `deleted`.
   */
  readonly deletesAlreadyGone: number
  /** Entries per Bundle at the end: `bundleSize`, or what the target's 413s left of it. */
  readonly bundleSize: number
  /**
   * The `meta` members dropped: `dropMeta`, else what an earlier run into this target journaled, else (an
   * incremental archive) what the import of the archive it continues dropped.
   */
  readonly dropMeta: ReadonlyArray<MetaField>
}

const THROTTLE_RETRIES = 8
/**
 * Resources of a segment, at most (as far as file boundaries allow). Its graph, keys and reference strings
 * are what an import holds in the JS heap beyond a few hundred bytes per resource kept outside it
 * (docs/benchmarks.md, Import memory).
 */
const SEGMENT_MAX = 100_000

/**
 * An archive data file that could not be read. A line that is not what the export wrote (the files' sha256 was
 * checked before, so the export wrote it so, or the file changed since): the archive is damaged, and editing
 * the line would not mend it (the checksums would no longer match); the disk's errors keep their own advice.
 */
const archiveUnreadable = (path: string, e: { readonly message: string }): ImportError =>
  e instanceof Ndjson.NdjsonError && e.reason !== "Io"
    ? new ImportError({
        reason: "Archive",
        url: e.where,
        detail: `${e.problem}; the archive is damaged: restore it from a copy, or export again`,
        cause: e,
      })
    : new ImportError({
        reason: "Archive",
        url: path,
        detail: `could not read the archive (${e.message})`,
        cause: e,
      })

const empty = Buffer.alloc(0)

/** The usual head of an NDJSON line: `{"resourceType":"<Type>","id":"<id>"`. */
const LINE_HEAD = /^\{"resourceType":"([A-Za-z]{1,64})","id":"([A-Za-z0-9\-.]{1,64})"/

/**
 * The `Type/id` of an NDJSON line: from its head when it starts the usual way, else parsed. `undefined` for a
 * line that does not parse or holds no resource with an id: the pass that reads the file for real reports it
 * with its file:line.
 */
const keyOfLine = (text: string): string | undefined => {
  const m = LINE_HEAD.exec(text)
  if (m !== null) return `${m[1]}/${m[2]}`
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return undefined
  }
  return isResource(value) && typeof value.id === "string" ? `${value.resourceType}/${value.id}` : undefined
}

const io = (path: string) => (cause: unknown) =>
  new ImportError({
    reason: "Archive",
    url: path,
    detail: `could not write the import state (${cause instanceof Error ? cause.message : String(cause)}); check the archive directory is writable`,
    cause,
  })

/** A data file that holds another number of resources than its manifest entry says. */
const countMismatch = (entry: FileEntry, seen: number) =>
  new ImportError({
    reason: "Archive",
    url: entry.path,
    detail: `holds ${seen} resources but the manifest says ${entry.count}; the archive is damaged: restore it from a copy, or export again`,
  })

/** Append text to a file (0600) and fsync it before returning (its directory is made when missing). */
const appendDurable = (path: string, text: string): Effect.Effect<void, ImportError> =>
  Effect.tryPromise({
    try: async () => {
      const open = () => NFS.promises.open(path, "a", 0o600)
      const h = await open().catch(async (e: unknown) => {
        if (!(e instanceof Error && "code" in e && e.code === "ENOENT")) throw e
        makeDirsSync(Path.dirname(path), 0o700)
        return open()
      })
      try {
        // a file an older run (or a copy) left with a wider mode is narrowed too
        await h.chmod(0o600)
        await h.write(text)
        await h.sync()
      } finally {
        await h.close()
      }
    },
    catch: io(path),
  })

/**
 * The lines of an import-state file (id map, binaries, quarantine). A last line without its newline is what a
 * kill in the middle of an append leaves: it is cut off (from the file too, so that the next append does not
 * run on from it), like the journal's torn tail; every line before it was written whole.
 */
const readLines = (path: string): Effect.Effect<ReadonlyArray<string>, ImportError> =>
  Effect.try({
    try: () => {
      if (!NFS.existsSync(path)) return []
      const text = NFS.readFileSync(path, "utf8")
      const end = text.lastIndexOf("\n") + 1
      const tail = text.slice(end)
      // a whole line that lacks only its newline (an editor saved it so) is kept, and its newline added
      const whole =
        tail.trim() !== "" && Option.isSome(Option.liftThrowable(() => JSON.parse(tail) as unknown)())
      if (whole) NFS.appendFileSync(path, "\n")
      else if (tail !== "") NFS.truncateSync(path, Buffer.byteLength(text.slice(0, end)))
      return (whole ? text : text.slice(0, end)).split("\n").filter((l) => l.trim() !== "")
    },
    catch: io(path),
  })

/**
 * Cuts the line a kill tore off at the end of each quarantine file (a whole resource spans pages), before
 * this run appends after it: glued to the next line it would make both unreadable (`readLines`).
 */
const mendQuarantine = (dir: string): Effect.Effect<void, ImportError> =>
  Effect.gen(function* () {
    const names = yield* Effect.try({
      try: () => (NFS.existsSync(dir) ? NFS.readdirSync(dir) : []),
      catch: io(dir),
    })
    for (const name of names)
      if (name.endsWith(".ndjson") || name.endsWith(Imports.REPLAYING)) yield* readLines(Path.join(dir, name))
  })

/**
 * Removes what earlier `$import` jobs rejected (quarantine lines without a body) from `quarantine/` where this
 * job sends those files again (`resent`: every file, or a migrate wave's own): what it rejects is quarantined
 * anew. Each file is rewritten whole (`Archive.writeAtomic`) or removed when nothing else is in it.
 */
const dropBulkRejections = (
  dir: string,
  resent: ReadonlySet<string> | "all",
): Effect.Effect<void, ImportError> =>
  Effect.gen(function* () {
    /** A rejection of a file this job sends again (a migrate wave sends only its own files). */
    const superseded = (line: string): boolean => {
      if (!line.startsWith(BULK_REJECTION) && !line.includes(STAGING_SET_ASIDE)) return false
      // a rejection the target tied to no file cannot be told apart: every job drops it (it comes back if due)
      if (resent === "all" || line.includes('"source":"(unknown file)"')) return true
      const source = Option.getOrUndefined(
        Option.liftThrowable(() => (JSON.parse(line) as { source?: unknown }).source)(),
      )
      return typeof source === "string" && resent.has(source.replace(/:\d+$/, ""))
    }
    const names = yield* Effect.try({
      try: () => (NFS.existsSync(dir) ? NFS.readdirSync(dir) : []),
      catch: io(dir),
    })
    for (const name of names) {
      if (!name.endsWith(".ndjson")) continue
      const path = Path.join(dir, name)
      const lines = (yield* readLines(path)).filter((l) => l.trim() !== "")
      const kept = lines.filter((l) => !superseded(l))
      if (kept.length === lines.length) continue
      // durable before it replaces the file: the other lines in it are resources put or post set aside
      if (kept.length === 0)
        yield* Effect.try({ try: () => NFS.rmSync(path, { force: true }), catch: io(path) })
      else yield* Archive.writeAtomic(path, `${kept.join("\n")}\n`).pipe(Effect.mapError(io(path)))
    }
  })

/** How a quarantine line of a `$import` rejection starts (`quarantineLine(null, …)`). */
const BULK_REJECTION = '{"resource":null,'

/**
 * What the reason of a resource the `$import` staging set aside says (a conditional reference the target does
 * not resolve): like a rejection, superseded when a later job stages its file again.
 */
const STAGING_SET_ASIDE = "and $import stores it as written"

/** `--retry-quarantine` passes at most (each lands what waited on the one before). */
const MAX_REPLAY_PASSES = 20
/** Journal key of the `$import` job under way: `{statusUrl, open}` (open until released). */
const BULK_JOB = "import.bulk.job"
/** Journaled when a `$import` job stored resources under ids of the target's own (`remappedError`). */
const REMAPPED = "import.bulk.remapped"
const BulkJob = Schema.Struct({ statusUrl: Schema.String, open: Schema.Boolean })

/** A line of `binaries.ndjson`: a blob's copy on the target, and the resource it was made for (a copy per owner). */
const BinaryLine = Schema.Struct({
  sha256: Schema.String,
  id: Schema.String,
  owner: Schema.optional(Schema.String),
})
const QuarantineLine = Schema.Struct({
  resource: Schema.NullOr(Schema.Unknown),
  source: Schema.optional(Schema.String),
})

const decodeLine = <A, I>(schema: Schema.Schema<A, I>, path: string, line: number, text: string) =>
  Schema.decodeUnknown(Schema.parseJson(schema))(text).pipe(
    Effect.mapError(
      (cause) =>
        new ImportError({
          reason: "Archive",
          url: `${path}:${line}`,
          detail: "this import-state line is not valid; fix or delete it and rerun",
          cause,
        }),
    ),
  )

export { binaryIdFor, ownedBinaryIdFor, sha256TagSystem } from "@ferry/transform/AttachmentCopy"

/** The JSON Binary POSTed for a blob in post mode, tagged with its sha256. */
export const binaryResource = (sha256: string, contentType: string, bytes: Uint8Array): Resource => ({
  resourceType: "Binary",
  meta: { tag: [{ system: sha256TagSystem, code: sha256 }] },
  contentType,
  data: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64"),
})

/** The conditional-create criteria matching a blob's Binary on the target. */
export const binaryIfNoneExist = (sha256: string): string => `_tag=${sha256TagSystem}|${sha256}`

interface Located {
  readonly file: string
  readonly line: number
  readonly value: Resource
  /**
   * The line the value was parsed from, when it holds a number JSON.stringify would write otherwise (see
   * `numbered`): its numbers are sent as written (`restoreNumbers`).
   */
  readonly text?: string
}

/**
 * `Located.text` for a line, kept only when some number of it would be written otherwise by JSON.stringify
 * (otherwise the parsed value says it all, and the line need not be held beside it).
 */
const numbered = (text: string): { readonly text?: string } => (hasOddNumbers(text) ? { text } : {})

/**
 * A Bundle of these resources (its i-th entry `locs[i]`'s) as JSON, each entry's numbers written as in its
 * resource's line (`NumberText.restoreNumbers`, entry by entry: one whose rewrite dropped a number keeps the
 * others' precision).
 */
const bundleJson = (bundle: FhirBundle, locs: ReadonlyArray<Located>): string => {
  const { entry = [], ...rest } = bundle
  if (entry.length !== locs.length || !locs.some((l) => l.text !== undefined)) return JSON.stringify(bundle)
  const entries = entry.map((e, i) => {
    const json = JSON.stringify(e)
    const text = locs[i]!.text
    return text === undefined ? json : restoreNumbers(text, json)
  })
  return `${JSON.stringify(rest).slice(0, -1)},"entry":[${entries.join(",")}]}`
}

/**
 * `--restart`: this target's import state (journal, id map, Binaries record, quarantine, a migration's ledger)
 * renamed to `<dir>.set-aside-<time>`, so that the import starts over; refused while another import holds it.
 * The new name, or undefined when there was none.
 */
export const setAsideState = (importDir: string): Effect.Effect<string | undefined, ImportError> =>
  Effect.gen(function* () {
    if (!NFS.existsSync(importDir)) return undefined
    const holder = Archive.liveLockHolder(importDir)
    if (holder !== undefined)
      return yield* new ImportError({
        reason: "Archive",
        url: importDir,
        detail: `another import into this target from this archive is running (pid ${holder.pid}, since ${holder.startedAt}); wait for it to end before --restart`,
      })
    const aside = `${importDir}.set-aside-${new Date().toISOString().replace(/[:.]/g, "-")}`
    yield* Effect.try({ try: () => NFS.renameSync(importDir, aside), catch: io(importDir) })
    return aside
  })

/**
 * Fails when the target holds nothing of the archive's types although `earlier` (what earlier runs did there)
 * says it should: a target emptied or rebuilt at the same URL, which a rerun would otherwise leave empty and
 * call done. `--restart` is the way on.
 */
export const refuseEmptied = (
  client: FhirClient,
  archive: string,
  types: ReadonlyArray<string>,
  earlier: string,
  pruned = 0,
): Effect.Effect<void, ImportFailure> =>
  Effect.gen(function* () {
    // (resources the target refused wait in quarantine: a target that took none of them holds none either)
    if (Imports.pendingQuarantine(archive, client.baseUrl) > 0) return
    if (!(yield* holdsNothingOf(client, types))) return
    return yield* new ImportError({
      reason: "Config",
      url: client.baseUrl,
      detail: `the target holds none of the archive's resources, though ${earlier}: it was emptied or replaced at this URL since; ${pruned > 0 ? `${pruned} of the archive's data files were pruned after their import, so load it again with a new migration (another --archive)` : `to load it again from the start, run the same command with --restart (this target's import state, ${Imports.dir(archive, client.baseUrl)}, is set aside, not deleted)`}`,
    })
  })

/** A `$import` job that stored `pairs` resources under ids of the target's own: not a success, now or on a rerun. */
const remappedError = (url: string, pairs: number, first: readonly [string, string]): ImportError =>
  new ImportError({
    reason: "Target",
    url,
    detail: `the target's $import stored ${pairs} resource(s) under ids of its own (first: ${first[0]} as ${first[1]}), so references to them from other resources do not resolve; --strategy import needs a target that keeps the ids of the files: load this archive with --strategy post into an emptied target (with --restart)`,
  })

/** What is wrong with a damaged line of the id map (`{"s":"Type/id","t":"Type/id"}`, one per landed resource). */
export const idMapDamage = (detail: string): string =>
  `the id map is damaged (this line is ${detail === "not JSON" ? "not JSON" : `not {"s":"Type/id","t":"Type/id"}: ${detail}`})`

/** The warning of a `--restart` that set state aside. */
export const setAsideWarning = (aside: string): string =>
  `--restart: the earlier import state for this target was set aside as ${aside}; this import starts over`

export const run = (options: ImportOptions): Effect.Effect<ImportSummary, ImportFailure> =>
  Effect.scoped(
    Effect.gen(function* () {
      const { client, archive } = options
      const emitRaw = options.onEvent ?? (() => Effect.void)
      const manifest = yield* Archive.readManifest(archive)
      if (!manifest.complete && options.files === undefined) {
        const writer = Archive.liveLockHolder(archive)
        return yield* new ImportError({
          reason: "Archive",
          url: archive,
          detail:
            writer !== undefined
              ? `the archive is not finished: a ferry (pid ${writer.pid}, since ${writer.startedAt}) is still writing it; wait for that export to end, then import (ferry migrate imports while it exports)`
              : Imports.madeByMigrate(archive)
                ? "the archive is incomplete (its migration did not finish); run the same ferry migrate again to finish it"
                : "the archive is incomplete (its export did not finish); rerun the export with the same --out, then import",
        })
      }
      // An `_elements` export holds parts of resources (the server tags them SUBSETTED): each would replace the
      // whole resource on the target
      const elements = manifest.request.parameters._elements
      if (elements !== undefined && elements.length > 0) {
        return yield* new ImportError({
          reason: "Config",
          url: archive,
          detail: `the archive was exported with _elements=${String(elements)}: it holds parts of resources, and importing them would replace whole resources on the target with those parts; export again without --elements, then import that archive`,
        })
      }
      // A changed or damaged archive is not imported: every file is checked against the sha256 the export
      // recorded (a migrate's waves import files its own run wrote and checked: `files` given).
      if (options.files === undefined) {
        // the data files re-hashed; checksums.sha256 (what `verify --archive` and `sha256sum -c` check) only read,
        // to agree with them and with the blobs' names (each blob is checked against its sha256 as it is read)
        const mismatches = yield* Archive.verifyDataFiles(archive, manifest, { checksums: true }).pipe(
          // (the archive's error names its file, and line: not said twice)
          Effect.mapError((e) => new ImportError({ reason: "Archive", detail: e.message, cause: e })),
        )
        // files `ferry migrate --prune-staged` removed once this target had them: on purpose, not damage
        const pruned = Imports.readMigrateLedger(archive, client.baseUrl)?.pruned ?? new Map<string, number>()
        if (mismatches.length > 0 && mismatches.every((m) => m.problem === "Missing" && pruned.has(m.path)))
          return yield* new ImportError({
            reason: "Archive",
            url: Path.join(archive, mismatches[0]!.path),
            detail: `${mismatches.length} of the archive's data files (first: ${mismatches[0]!.path}) were removed by ferry migrate --prune-staged after they were imported into this target, so the archive cannot be imported again, nor its quarantine replayed (--retry-quarantine needs the files too); export again, or run ferry migrate without --prune-staged`,
          })
        if (mismatches.length > 0)
          return yield* new ImportError({
            reason: "Archive",
            url: Path.join(archive, mismatches[0]!.path),
            detail: Archive.describeMismatches(mismatches, manifest),
          })
      }
      // the target first: one that cannot be reached (a typo in --to) leaves no folder of its own in the archive
      const cs = yield* client.capabilities()
      const importDir = Imports.dir(archive, client.baseUrl)
      // (before anything opens a file there)
      const aside = options.restart === true ? yield* setAsideState(importDir) : undefined
      // (a migrate's wave writes beside the migration's own events, which cut a torn line before its first wave)
      const appendEvent = yield* Events.appender(importDir, { cutTorn: options.files === undefined })
      const emit = (e: ImportEvent) =>
        Effect.zipRight(appendEvent(e.event, { ...e }).pipe(Effect.orDie), emitRaw(e))
      if (aside !== undefined) yield* emit({ event: "warning", detail: setAsideWarning(aside) })
      yield* Effect.try({
        try: () => makeDirsSync(importDir, 0o700),
        catch: io(importDir),
      })
      // one import into a target from an archive at a time (its journal, id map and quarantine are shared)
      yield* Archive.lock(importDir).pipe(
        Effect.mapError(
          (e) =>
            new ImportError({
              reason: "Archive",
              url: importDir,
              detail:
                e.reason === "Locked"
                  ? `another import into this target from this archive is running (${e.detail}); wait for it to end, or remove ${Path.join(importDir, ".lock")} if none is`
                  : e.message,
              cause: e,
            }),
        ),
      )
      const journal = yield* Journal.make(Imports.journalPath(archive, client.baseUrl))
      // R4 resources into a server of another FHIR version: most are refused, or stored wrong (said by the
      // first run into it, not by each wave of a migrate)
      const firstRun = Option.isNone(yield* journal.result("import.strategy"))
      if (firstRun && cs.fhirVersion !== undefined && !cs.fhirVersion.startsWith("4.0"))
        yield* emit({
          event: "warning",
          detail: `the target declares FHIR ${cs.fhirVersion}; the archive holds FHIR R4 (4.0.x) resources, which such a server may refuse or store differently (check --to is its R4 endpoint)`,
        })
      yield* mendQuarantine(Imports.quarantineDir(archive, client.baseUrl))
      const since = manifest.previous?.transactionTime
      let continued = typeof options.continues === "object" ? options.continues : undefined
      if (since !== undefined && (options.continues === undefined || options.continues === true)) {
        continued = yield* Continues.seed(archive, since, client.baseUrl)
        if (Option.isSome(continued.previous))
          yield* emit({
            event: "continues",
            archive: continued.previous.value,
            idMap: continued.idMap,
            finished: continued.finished,
            // kept for this archive (said when no --drop-meta was given; see `dropMeta` below)
            ...(options.dropMeta === undefined ? { dropMeta: metaFieldsOf(continued.dropMeta) ?? [] } : {}),
          })
      }
      const dataFiles: ReadonlyArray<FileEntry> = options.files ?? manifest.files
      const deletedFiles: ReadonlyArray<FileEntry> =
        options.deletes === false ? [] : (options.deletedFiles ?? manifest.deleted)
      const types = Array.from(new Set(dataFiles.map((f) => f.type)))

      // 1. strategy (a rerun keeps the journaled one)
      const previous = yield* journal.result("import.strategy")
      const journaled =
        Option.isSome(previous) &&
        (previous.value === "put" || previous.value === "post" || previous.value === "import")
          ? previous.value
          : undefined
      // What earlier runs sent: Bundles (put, post) and $import jobs.
      const chunksBefore = (yield* journal.entries("import.chunk")).length
      const jobsBefore = (yield* journal.entries(BULK_JOB)).length
      const landedBefore = chunksBefore + jobsBefore
      // Post after put or $import, or either after post: what was in flight when the earlier run stopped would be
      // created again under other ids (post's new ids, then the source ids). Refused. (put and $import both keep
      // the source ids: a switch between them lands each resource once.)
      if (
        options.strategy !== undefined &&
        journaled !== undefined &&
        (options.strategy === "post") !== (journaled === "post") &&
        landedBefore > 0
      )
        return yield* new ImportError({
          reason: "Config",
          url: client.baseUrl,
          detail: `--strategy ${options.strategy}: this import into the target began with ${journaled} and landed Bundles that way, and another strategy now would create again, under other ids, what was in flight when it stopped; run it again without --strategy (it goes on with ${journaled}), or with --strategy ${journaled}`,
        })
      let strategy: Strategy
      if (options.strategy !== undefined) strategy = options.strategy
      else if (journaled !== undefined) strategy = journaled
      else strategy = yield* chooseStrategy(client, cs, types)
      yield* emit({ event: "strategy", strategy, target: client.baseUrl })

      // a target that refuses client ids may store the files' resources under ids of its own (said before
      // anything is sent; the job's result shows it, and the import then fails)
      const assigning = types.filter((t) => !CapabilityStatement.updateCreate(cs, t))
      if (strategy === "import" && firstRun && assigning.length > 0)
        yield* emit({
          event: "warning",
          detail: `the target does not accept client ids (no updateCreate) for ${assigning.slice(0, 3).join(", ")}${assigning.length > 3 ? ", …" : ""}: its $import may store those resources under ids of its own, which --strategy import cannot follow (the import fails if it does); --strategy post is made for such a target`,
        })
      const remapped = yield* journal.result(REMAPPED)
      if (strategy === "import" && Option.isSome(remapped)) {
        const r = remapped.value as { pairs?: unknown; first?: unknown }
        return yield* remappedError(
          client.baseUrl,
          typeof r.pairs === "number" ? r.pairs : 0,
          Array.isArray(r.first) ? [String(r.first[0]), String(r.first[1])] : ["?", "?"],
        )
      }
      if (strategy === "import" && !CapabilityStatement.supportsOperation(cs, "import")) {
        return yield* new ImportError({
          reason: "NotSupported",
          url: client.baseUrl,
          detail: "the target's CapabilityStatement declares no $import; use --strategy put or post",
        })
      }
      // The provenance tag names the source server (`originKey`), so that a second source's `Patient/1` is not
      // taken for the first one's by a conditional create. Journaled before the strategy: an import begun by
      // a Ferry whose tags did not name it (a strategy and no origin in the journal) goes on with those tags,
      // or its creates would no longer find the resources it already made.
      const recordedOrigin = yield* journal.result("import.provenance")
      const origin: string | undefined = Option.isSome(recordedOrigin)
        ? typeof recordedOrigin.value === "object" &&
          recordedOrigin.value !== null &&
          "origin" in recordedOrigin.value &&
          typeof recordedOrigin.value.origin === "string"
          ? recordedOrigin.value.origin
          : undefined
        : Option.isSome(previous)
          ? undefined
          : originKey(manifest.source.baseUrl)
      if (Option.isNone(recordedOrigin) && origin !== undefined)
        yield* journal.append("import.provenance", "import.provenance", { origin })
      yield* journal.append("import.strategy", "import.strategy", strategy)
      // the meta members dropped: a rerun (a migrate's later wave, a resumed run) without --drop-meta keeps the
      // journaled ones, so that part of the archive does not land with them and part without
      // (an incremental archive's first run: what the import of the archive it continues kept)
      const recordedDrops = yield* journal.result("import.dropMeta")
      const journaledDrops = Option.match(recordedDrops, { onNone: () => undefined, onSome: metaFieldsOf })
      const dropMeta = options.dropMeta ?? journaledDrops ?? metaFieldsOf(continued?.dropMeta) ?? []
      if (
        journaledDrops !== undefined &&
        options.dropMeta !== undefined &&
        [...journaledDrops].sort().join(",") !== [...options.dropMeta].sort().join(",")
      )
        yield* emit({
          event: "warning",
          detail: `--drop-meta ${options.dropMeta.join(",") || "(none)"} differs from what the earlier run into this target dropped (${journaledDrops.join(",") || "nothing"}): the resources sent from now on follow the new setting, those sent already keep the old one`,
        })
      if (Option.isNone(recordedDrops) || options.dropMeta !== undefined)
        yield* journal.append("import.dropMeta", "import.dropMeta", dropMeta)
      const drops = metaDrops(dropMeta)
      // $import keeps the source ids as put does: the same identity id map, blob upload and rewriting
      const mode: Chunk.Mode = strategy === "import" ? "put" : strategy
      // post without `_tag` search: no conditional create; resources already in the id map are not sent
      // again, so only a crash between a commit and its id-map append can duplicate (that one chunk)
      const conditionalCreate = mode === "post" && searchesTag(cs, types)
      if (mode === "post" && !conditionalCreate)
        yield* emit({
          event: "warning",
          detail:
            "the target cannot search _tag, so creates are not conditional: a crash right after a commit may duplicate that chunk on rerun",
        })
      // A first import of this archive into a target that holds data already (another source's, a wrong URL):
      // said before anything is sent. Not for an incremental archive, whose target holds the earlier import.
      if (Option.isNone(previous) && since === undefined) {
        // every type of the archive, not only this run's files' (a migrate's first wave holds a few types)
        const held = yield* heldAlready(
          client,
          Array.from(new Set([...(options.expectedTypes ?? []), ...manifest.files.map((f) => f.type)])),
        )
        if (held.length > 0) yield* emit({ event: "warning", detail: nonEmptyTarget(held, mode) })
      } else if (Option.isSome(previous) && options.files === undefined) {
        // A rerun whose earlier runs landed Bundles in a target that now holds nothing of the archive's types:
        // the target was emptied or rebuilt at the same URL (a restore into a fresh environment). The journal
        // would send nothing again and call it done.
        // (Bundles that landed, or a $import that finished: a job killed while it ran may have loaded nothing)
        if (chunksBefore > 0 || (yield* journal.isDone("import.done")))
          yield* refuseEmptied(
            client,
            archive,
            Array.from(new Set(manifest.files.map((f) => f.type))),
            `earlier runs of this import ${chunksBefore > 0 ? `landed ${chunksBefore} Bundle${chunksBefore === 1 ? "" : "s"}` : "finished"} there`,
          )
      }

      // the id map: identity for put (explicit lines win), from idmap.ndjson for post
      const idMapPath = Imports.idMapPath(archive, client.baseUrl)
      const idMap = mode === "put" ? IdMap.identity() : IdMap.empty()
      const loaded = idMap.load(yield* readLines(idMapPath))
      // (after readLines, which cuts a torn last line off the file)
      const appendToIdMap = yield* Imports.durableAppender(idMapPath).pipe(
        Effect.map((append) => (text: string) => append(text).pipe(Effect.mapError(io(idMapPath)))),
      )
      if (Either.isLeft(loaded)) {
        return yield* new ImportError({
          reason: "Archive",
          url: `${idMapPath}:${loaded.left.position ?? "?"}`,
          detail: `${idMapDamage(loaded.left.detail)}; run the same command again with --restart: this target's import state is set aside and every resource sent again (put keeps their ids, post finds each one it made by its provenance tag), which writes the id map anew`,
        })
      }
      // A delta's changed and deleted resources are found on a target that assigns its own ids only through
      // the id map of the import that created them: without it, updates would match the old copies by their
      // provenance tag and change nothing, and deletes would find nothing to delete.
      if (
        mode === "post" &&
        continued !== undefined &&
        Option.isSome(continued.previous) &&
        continued.finished === false
      ) {
        return yield* new ImportError({
          reason: "Config",
          url: continued.previous.value,
          detail: `the import of this archive into ${redactUrl(client.baseUrl)} did not finish (its journal has no end), so its id map may lack resources it created, whose updates would then change nothing; run that import again to its end, then this one`,
        })
      }
      if (mode === "post" && since !== undefined && idMap.size === 0) {
        return yield* new ImportError({
          reason: "Config",
          url: archive,
          detail: `the archive is an incremental export (changes since ${since}) and no id map of an earlier import into ${redactUrl(client.baseUrl)} was found, so its updates and deletes could not reach the resources that import created (the target assigns its own ids); put the archive it continues (transactionTime ${since}) in the same folder as this one, with that import's imports/ folder, and run the same command again`,
        })
      }

      /**
       * 5. `deleted/` as DELETEs through the id map. A target that keeps referential integrity refuses (409) to
       * delete what is still referred to, and deleted/ comes in no useful order (a Patient's file before its
       * Observations'): such deletes wait for a later pass, after the others; a pass that deletes nothing ends
       * it. The files are journaled done only after the last pass (a rerun repeats them all; 404/410 count as
       * done, in `deletesAlreadyGone`: a rerun does not count again what an earlier run deleted). The number of
       * resources this run deleted.
       */
      let deletesSkipped = 0
      let deletesAlreadyGone = 0
      const applyDeletes = Effect.gen(function* () {
        let deleted = 0
        const deferred: Array<{ readonly type: string; readonly id: string; readonly error: FhirError }> = []
        /** A delete the target answered 404 or 410: what it names is gone already. */
        const gone = (x: FhirError | AuthError) =>
          x._tag === "FhirError" && x.reason === "Status" && (x.status === 404 || x.status === 410)
        /** Deletes one resource: counted as deleted, or as gone already (404/410), or deferred (409). */
        const deleteOne = (type: string, id: string): Effect.Effect<void, ImportFailure> =>
          client.delete(type, id).pipe(
            Effect.zipRight(Effect.sync(() => void deleted++)),
            Effect.catchIf(gone, () => Effect.sync(() => void deletesAlreadyGone++)),
            Effect.catchIf(
              (x): x is FhirError => x._tag === "FhirError" && x.reason === "Status" && x.status === 409,
              (error) => Effect.sync(() => void deferred.push({ type, id, error })),
            ),
          )
        const doneDeletes: Array<{ readonly key: string; readonly path: string }> = []
        for (const entry of deletedFiles) {
          const key = `import.deleted:${entry.path}`
          if (yield* journal.isDone(key)) continue
          yield* Stream.runForEach(Archive.resources(archive, entry), (l) =>
            Effect.forEach(
              (l.value.entry as ReadonlyArray<{ request?: { method?: string; url?: string } }> | undefined) ??
                [],
              (e) =>
                Effect.gen(function* () {
                  if (e.request?.method !== "DELETE" || e.request.url === undefined) return
                  const source = e.request.url.replace(/^.*?([A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64})$/, "$1")
                  const target = idMap.get(source)
                  if (target === undefined) {
                    // never loaded into this target (by this archive or the runs it continues): nothing to delete
                    deletesSkipped++
                    yield* emit({
                      event: "delete-skipped",
                      source,
                      reason: "not in the id map of this target",
                    })
                    return
                  }
                  // the copies of attachments made for it first: each names it (a target that keeps referential
                  // integrity would refuse to delete it while they do), and nothing else points at them
                  for (const copy of copiesOf.get(target) ?? [])
                    yield* client.delete("Binary", copy).pipe(Effect.catchIf(gone, () => Effect.void))
                  const slash = target.indexOf("/")
                  yield* deleteOne(target.slice(0, slash), target.slice(slash + 1))
                }),
              { discard: true },
            ),
          )
          doneDeletes.push({ key, path: entry.path })
        }
        while (deferred.length > 0) {
          const pass = deferred.splice(0)
          for (const d of pass) yield* deleteOne(d.type, d.id)
          if (deferred.length === pass.length) {
            const first = deferred[0]!
            return yield* new ImportError({
              reason: "Refused",
              url: first.error.url,
              detail: `the target refuses to delete ${deferred.length} resource(s) still referred to by others (409; first: ${first.type}/${first.id}: ${first.error.message}); delete or change what refers to them on the target, then run the same command again`,
              cause: first.error,
            })
          }
        }
        for (const d of doneDeletes) yield* journal.append("import.deleted", d.key, { path: d.path })
        return deleted
      })

      // 3. graph, in segments. One pass over the data: the nodes with their byte sizes (the chunk planner's
      // estimate; no re-serialising) and lines' positions (to read the bodies back), the id registry, the
      // identifier index, and each resource's reference strings (resolved once per distinct string: see
      // DeferredEdges). Files are read by type, the usual dependencies first (`readingOrder`); whenever the
      // files read since the last segment only refer to types whose every file is read (`closedOver`) and
      // hold enough resources, they become a segment: its own graph, planned and sent while the next
      // files are read, so the target does not idle through the whole pass. Nothing read later can be a
      // dependency of a segment, reference cycles stay within one, and segments go to the target in order.
      // Each file is counted against the manifest, as Archive.resources does.
      const sourceBase: string | ReadonlyArray<string> =
        (options.sourceBases ?? []).length > 0
          ? [manifest.source.baseUrl, ...(options.sourceBases ?? [])]
          : manifest.source.baseUrl
      const identifiers = new IdentifierIndex()
      const locations = new Locations()
      /** Source key → node, over every segment (the node numbers `locations` uses). */
      const nodeKeys = new KeyTable()
      const nodeOf = (key: string): number | undefined => {
        const n = nodeKeys.get(key)
        return n < 0 ? undefined : n
      }
      interface Segment {
        readonly builder: GraphBuilder
        readonly deferred: DeferredEdges
        /** Segment node → node. */
        readonly nodes: Array<number>
      }
      const newSegment = (): Segment => ({
        builder: new GraphBuilder(),
        deferred: new DeferredEdges(),
        nodes: [],
      })
      let reading = newSegment()
      const order = dataFiles
        .map((_, i) => i)
        .sort((a, b) => readingOrder(dataFiles[a]!.type) - readingOrder(dataFiles[b]!.type) || a - b)
      const filesLeft = new Map<string, number>()
      for (const f of dataFiles) filesLeft.set(f.type, (filesLeft.get(f.type) ?? 0) + 1)
      const complete = (type: string) => (filesLeft.get(type) ?? 0) === 0
      const segmentSize = Math.max(1, options.bundleSize ?? 500) * Math.max(1, options.parallel ?? 4) * 2

      /** An archive data file that could not be read (I/O, a bad line, a count unlike its manifest entry's). */
      const unreadable = (entry: FileEntry) => (e: { readonly message: string }) =>
        archiveUnreadable(entry.path, e)

      /** The resources of an archive data file, a chunk of lines at a time (`keepText`: with their lines). */
      const archiveItems = (entry: FileEntry, keepText = false) =>
        Ndjson.readFile(Path.join(archive, entry.path), {
          file: entry.path,
          resourceType: entry.type,
          gzip: entry.compression === "gzip",
          label: entry.path,
          keepText,
          // reads of 256 KiB: the sending fibers get their turn between them
          chunkSize: 256 * 1024,
        }).pipe(Stream.mapError(unreadable(entry)))

      /** Read one data file into the segment being read. */
      /** Resources of the data files without a string `id` (quarantined after the others landed). */
      const idless: Array<Located> = []
      /** Lines holding a `Type/id` an earlier line holds (said once the files are read). */
      const duplicates: { count: number; first: string } = { count: 0, first: "" }
      const readDataFile = (i: number) =>
        Effect.gen(function* () {
          const entry = dataFiles[i]!
          let seen = 0
          // a chunk of lines at a time: one Effect per chunk, not per resource
          yield* Stream.runForEachChunk(archiveItems(entry), (items) =>
            Effect.sync(() => {
              seen += items.length
              const seg = reading
              for (const item of items) {
                const r = item.value
                if (typeof r.id !== "string") {
                  // set aside at the end of the run: it cannot be sent under a stable identity
                  idless.push({ file: entry.path, line: item.line, value: r })
                  continue
                }
                const key = `${r.resourceType}/${r.id}`
                const known = nodeKeys.size
                const node = nodeKeys.add(key)
                // the same Type/id on another line (a source that wrote it twice): the last line is loaded
                if (node < known) {
                  if (duplicates.count === 0)
                    duplicates.first = `${key} at ${dataFiles[locations.file(node)]?.path}:${locations.line(node)} and ${entry.path}:${item.line}`
                  duplicates.count++
                }
                const local = seg.builder.addNode(key, item.bytes)
                seg.nodes[local] = node
                locations.set(node, i, item.line, item.offset, item.bytes)
                idMap.register(key)
                identifiers.add(r, key)
                referenceCandidates(r, (raw, attachment) => seg.deferred.add(local, raw, attachment))
              }
            }),
          )
          if (seen !== entry.count) return yield* countMismatch(entry, seen)
          filesLeft.set(entry.type, filesLeft.get(entry.type)! - 1)
        })

      /** Read a context file (see `contextFiles`): its identifiers and ids only. */
      const readContextFile = (entry: FileEntry) =>
        Stream.runForEachChunk(archiveItems(entry), (items) =>
          Effect.sync(() => {
            for (const item of items) {
              const r = item.value
              if (typeof r.id !== "string") continue
              idMap.register(`${r.resourceType}/${r.id}`)
              identifiers.add(r)
            }
          }),
        )

      /**
       * Read ahead for `urn:uuid:` references: registers the id of every resource of these files (not read yet)
       * from the lines' text, so that such a reference resolves before its file's turn (`closedOver` with the
       * id registry) instead of holding every later file in one segment. A line that does not start with
       * `{"resourceType":…,"id":…}` is parsed; one that does not parse is left to `readDataFile` (which names
       * its file:line).
       */
      const registerIds = (files: ReadonlyArray<number>) =>
        Effect.forEach(
          files,
          (i) => {
            const entry = dataFiles[i]!
            return Archive.lines(archive, entry).pipe(
              Stream.runForEachChunk((texts) =>
                Effect.sync(() => {
                  for (const text of texts) {
                    const key = keyOfLine(text)
                    if (key !== undefined) idMap.register(key)
                  }
                }),
              ),
              Effect.mapError(unreadable(entry)),
            )
          },
          { discard: true },
        )

      interface Planned {
        readonly graph: Graph
        readonly comps: Components
        readonly deferred: DeferredEdges
        readonly nodes: ReadonlyArray<number>
      }
      /**
       * References that designate nothing the archive holds (a resource deleted at the source, or never
       * exported): counted, the first named, and said at the end. Post finds them as it rewrites; put, whose
       * lines mostly go as written, when a segment's references are resolved, and only for the whole archive of
       * a whole source: a subset's references may name resources of files it does not read, and a Patient or
       * Group export, a selection of types or a delta leaves out what its references name by design (such a
       * target holds those from an earlier load, under the same ids).
       */
      let dangling = 0
      let firstDangling: string | undefined
      const selective = ["_type", "_since", "_until", "_typeFilter", "patient", "_elements"]
      const countMissing =
        mode === "put" &&
        options.files === undefined &&
        manifest.request.level === "system" &&
        manifest.previous === undefined &&
        !selective.some((p) => p in manifest.request.parameters)
      /** The segment read so far, resolved and frozen; a fresh one is started. */
      const closeSegment = (): Planned => {
        const seg = reading
        reading = newSegment()
        seg.deferred.addTo(
          seg.builder,
          { idMap, identifiers, sourceBase },
          countMissing
            ? {
                isKnown: (key) => idMap.isKnown(key),
                found: (from, raw) => {
                  dangling++
                  firstDangling ??= `${seg.builder.keyOf(from)} → ${raw}`
                },
              }
            : undefined,
        )
        const graph = seg.builder.build()
        return { graph, comps: components(graph), deferred: seg.deferred, nodes: seg.nodes }
      }
      // the Binary files first (the attachment step needs them all), then the rest, handing over segments
      const firstOthers = order.findIndex((i) => dataFiles[i]!.type !== "Binary")
      const binaryFiles = firstOthers === -1 ? order : order.slice(0, firstOthers)
      const otherFiles = firstOthers === -1 ? [] : order.slice(firstOthers)
      for (const f of options.contextFiles ?? []) yield* readContextFile(f)
      for (const i of binaryFiles) yield* readDataFile(i)
      // the reader runs ahead of the sender by two segments at most: one planned in the queue, and one being
      // read or, closed and planned, waiting to be offered
      // the reader's end, however it ends: a defect in it (a bug, a stack overflow) reaches the sender too,
      // which would otherwise wait for the next segment forever
      const segments = yield* Queue.bounded<Exit.Exit<Planned | null, ImportFailure>>(1)
      const reader = Effect.gen(function* () {
        // each segment at least as large as all before it, up to SEGMENT_MAX: the first goes out early, there
        // are few of them (every segment ends with a wait for its last Bundle), and a segment's graph, keys and
        // reference strings (the import's memory beyond a few dozen bytes per resource) stay bounded
        let before = 0
        const most = Math.max(segmentSize, options.segmentMax ?? SEGMENT_MAX)
        /** Every resource of the load is in the id registry (read ahead): `urn:uuid:` references resolve. */
        let allIds = false
        for (let k = 0; k < otherFiles.length; k++) {
          yield* readDataFile(otherFiles[k]!)
          const size = reading.builder.size
          if (k === otherFiles.length - 1 || size < Math.min(Math.max(segmentSize, before), most)) continue
          if (!allIds && reading.deferred.waitsOnUrns()) {
            // the segment is due but a urn:uuid reference would hold it to the end: read the ids ahead, once
            const rest = otherFiles.slice(k + 1)
            yield* registerIds(rest)
            allIds = true
            yield* emit({ event: "ids-read-ahead", files: rest.length, known: idMap.known })
          }
          if (!reading.deferred.closedOver(complete, sourceBase, allIds ? idMap : undefined)) continue
          before += size
          yield* Queue.offer(segments, Exit.succeed(closeSegment()))
        }
        if (reading.builder.size > 0) yield* Queue.offer(segments, Exit.succeed(closeSegment()))
        if (duplicates.count > 0)
          yield* emit({
            event: "warning",
            detail: `${duplicates.count} line(s) of the archive hold a resource an earlier line holds too (the same Type/id; first: ${duplicates.first}): the last line of each is what the target gets; if they differ, check which version the source meant`,
          })
        yield* Queue.offer(segments, Exit.succeed(null))
      }).pipe(Effect.catchAllCause((cause) => Queue.offer(segments, Exit.failCause(cause))))

      // 2. binaries
      const binariesPath = Imports.binariesPath(archive, client.baseUrl)
      const attachmentUrls = new Map<string, string>()
      const uploaded = new Map<string, string>()
      /** The copies made per owner so far (their ids; see `ownedCopies`). */
      const uploadedOwned = new Set<string>()
      /** Target `Type/id` → the ids of the copies made for it (deleted before it: see `applyDeletes`). */
      const copiesOf = new Map<string, Set<string>>()
      const noteCopy = (owner: string, id: string) => {
        const ids = copiesOf.get(owner) ?? new Set<string>()
        copiesOf.set(owner, ids.add(id))
      }
      const binaryLines = yield* readLines(binariesPath)
      for (let i = 0; i < binaryLines.length; i++) {
        const j = yield* decodeLine(BinaryLine, binariesPath, i + 1, binaryLines[i]!)
        if (j.owner !== undefined) {
          uploadedOwned.add(j.id)
          noteCopy(j.owner, j.id)
        } else uploaded.set(j.sha256, j.id)
      }
      /**
       * Put (transactions): a blob's copy is made for each resource that points at it, under an id of that blob
       * and that resource (`ownedBinaryIdFor`), with `X-Security-Context` naming the resource, and only once the
       * resource landed (a target may check that reference): the rewrite points the resource at the copy's id
       * (`attachmentUrlFor`, which notes what the resource is owed), and `record` makes the copies of what
       * landed before the chunk is journaled. Post and `$import`: one copy per blob, made here, without a
       * security context (its owners get their ids only when they land).
       */
      const ownedCopies = strategy === "put"
      /** Exported attachment URL → the blob a copy per owner is made of. */
      const copyOf = new Map<string, Attachments.IndexLine>()
      /** The target ignores `X-Security-Context` on a raw Binary (it answered one without it): copies go as JSON. */
      let headerIgnored = false
      /** The target's answer to a copy showed whether it keeps the header (see `copiesFor`). */
      let headerChecked = false
      /** Source `Type/id` → the copies it is owed (id → the blob), until it lands. */
      const owed = new Map<string, Map<string, Attachments.IndexLine>>()
      const index = yield* Attachments.readIndex(archive)
      const binaryConditional = mode === "post" && searchesTag(cs, ["Binary"])
      if (mode === "post" && !binaryConditional && index.size > 0)
        yield* emit({
          event: "warning",
          detail:
            "the target cannot search _tag on Binary, so attachment uploads are not conditional: a crash right after an upload may leave a second copy of that blob on rerun",
        })
      /** One blob to the target, idempotently (see the module doc); its target Binary id. */
      const uploadBinary = (sha256: string, contentType: string, bytes: Uint8Array) =>
        Effect.gen(function* () {
          if (mode === "put") {
            const id = binaryIdFor(sha256)
            yield* client.request(
              HttpClientRequest.put(`Binary/${id}`).pipe(
                HttpClientRequest.bodyUint8Array(bytes, contentType),
                HttpClientRequest.setHeader("accept", "application/fhir+json"),
              ),
            )
            return id
          }
          const written = yield* client.create(binaryResource(sha256, contentType, bytes), {
            ...(binaryConditional ? { ifNoneExist: binaryIfNoneExist(sha256) } : {}),
          })
          const fromLocation = Option.flatMap(written.location, (l) =>
            Option.fromNullable(/Binary\/([A-Za-z0-9\-.]{1,64})/.exec(l)?.[1]),
          )
          const fromBody = Option.flatMap(written.resource, (r) =>
            r.resourceType === "Binary" && typeof r.id === "string" ? Option.some(r.id) : Option.none(),
          )
          const id = Option.orElse(fromLocation, () => fromBody)
          if (Option.isNone(id)) {
            return yield* new ImportError({
              reason: "Target",
              url: `${client.baseUrl}/Binary`,
              detail:
                "the target created a Binary without a Location header or body; Ferry cannot re-point attachments to it",
            })
          }
          return id.value
        })
      // a subset run: Binary resources of the archive's other data files (loaded in another run) count as
      // the archive's own Binaries too, so their blobs are not uploaded as extra copies
      const otherBinaries = new Set<string>()
      if (options.files !== undefined && index.size > 0) {
        const mine = new Set(dataFiles.map((f) => f.path))
        for (const entry of options.otherBinaryFiles ?? manifest.files) {
          if (entry.type !== "Binary" || mine.has(entry.path)) continue
          yield* Stream.runForEach(Archive.resources(archive, entry), (l) =>
            Effect.sync(() => {
              if (typeof l.value.id === "string") otherBinaries.add(`Binary/${l.value.id}`)
            }),
          )
        }
      }
      const isSourceBinary = (u: string) => sourceBinaryId(u, sourceBase) !== undefined
      let binaries = 0
      const refusedBlobs: Array<{
        readonly sha256: string
        readonly size: number
        readonly error: FhirError
      }> = []
      const parallel = Math.max(1, options.parallel ?? 4)
      const limiter = yield* makeLimiter(parallel)
      const sizer = makeSizer(Math.max(1, options.bundleSize ?? 500), options.startBundleSize)
      /**
       * Post: references sent as written because they designate nothing the archive holds (a resource deleted
       * at the source, or never exported; a `urn:uuid` no exported id matches). On the target they name a
       * source id, which is nothing there (or another resource): counted, the first named, and said at the end.
       */
      /** `urn:uuid:` references that name several resources of the archive (one id under two types). */
      let ambiguous = 0
      let firstAmbiguous: string | undefined
      const noteDangling = (reports: ReadonlyArray<Chunk.EntryReport>) => {
        if (mode !== "post") return
        for (const r of reports)
          for (const u of r.unresolved)
            if (u.reason === "UrnAmbiguous") {
              ambiguous++
              firstAmbiguous ??= `${r.source} (${u.path}) → ${u.reference}`
            } else if (u.reason === "NotInExport" || u.reason === "UrnNotFound") {
              dangling++
              firstDangling ??= `${r.source} (${u.path}) → ${u.reference}`
            }
      }
      const danglingWarning = Effect.suspend(() =>
        Effect.zipRight(
          dangling === 0
            ? Effect.void
            : emit({
                event: "warning",
                detail: `${dangling} reference${dangling === 1 ? "" : "s"} name${dangling === 1 ? "s" : ""} a resource that is not in the archive (first: ${firstDangling}; deleted at the source, or outside what was exported): sent as written, ${dangling === 1 ? "it points" : "they point"} at nothing on the target, or at whatever has that id there`,
              }),
          ambiguous === 0
            ? Effect.void
            : emit({
                event: "warning",
                detail: `${ambiguous} urn:uuid reference${ambiguous === 1 ? "" : "s"} match${ambiguous === 1 ? "es" : ""} resources of several types with that id in the archive (first: ${firstAmbiguous}): sent as written, since which one is meant cannot be told`,
              }),
        ),
      )
      /** A Bundle of `entries` was refused as too large: what is sent from now on is smaller. */
      const refusedAsTooLarge = (entries: number) =>
        sizer.tooLarge(entries)
          ? emit({ event: "bundle-size", refused: entries, entries: sizer.current() })
          : Effect.void
      // a pool of `parallel` fibers (the limiter may lower the concurrency below it, never above)
      yield* forEachPooled(index.values(), parallel, (blob) =>
        Effect.gen(function* () {
          // a URL of a source `Binary/<id>` that the archive also holds as a resource: that Binary is loaded
          // with the resources, and references to it follow the id map (to the Binary with its own security
          // context and later versions), even when the same bytes also came from another URL
          const ownBinary = (u: string) => {
            const id = sourceBinaryId(u, sourceBase)
            return id !== undefined && (idMap.isKnown(`Binary/${id}`) || otherBinaries.has(`Binary/${id}`))
          }
          const foreign = blob.sourceUrls.filter((u) => !ownBinary(u))
          if (foreign.length === 0 && blob.sourceUrls.length > 0) return
          if (options.binariesPending === true && foreign.length > 0 && foreign.every(isSourceBinary)) return
          if (ownedCopies) {
            for (const u of foreign) copyOf.set(u, blob)
            copyOf.set(Attachments.relativePath(blob.sha256), blob)
            return
          }
          let id = uploaded.get(blob.sha256)
          if (id === undefined) {
            // the pieces gathered, then joined once (joining as they came copied a big blob over and over)
            const pieces = yield* Stream.runCollect(Attachments.read(archive, blob))
            const bytes = Buffer.concat(EffectChunk.toReadonlyArray(pieces))
            const sent = yield* uploadBinary(
              blob.sha256,
              blob.contentType ?? "application/octet-stream",
              bytes,
            ).pipe(
              // a blob the target will not take (too large, a content type it refuses): the others are still
              // tried, then the import stops before any resource, with one sentence naming them
              Effect.map(Option.some),
              Effect.catchIf(
                (e): e is FhirError => isEntryRefusal(e) || isTooLarge(e),
                (e) =>
                  Effect.gen(function* () {
                    refusedBlobs.push({ sha256: blob.sha256, size: blob.size, error: e })
                    yield* emit({
                      event: "binary-refused",
                      sha256: blob.sha256,
                      size: blob.size,
                      detail: e.message,
                    })
                    return Option.none<string>()
                  }),
              ),
            )
            if (Option.isNone(sent)) return
            id = sent.value
            yield* appendDurable(binariesPath, `${JSON.stringify({ sha256: blob.sha256, id })}\n`)
            binaries++
          }
          for (const u of foreign) attachmentUrls.set(u, `Binary/${id}`)
          attachmentUrls.set(Attachments.relativePath(blob.sha256), `Binary/${id}`)
        }).pipe(limiter.run),
      )
      if (index.size > 0)
        yield* emit({
          event: "binaries",
          count: index.size,
          uploaded: binaries,
          ...(ownedCopies ? { perResource: true } : {}),
        })
      // The resources come after their blobs: a resource sent while its blob is refused would point at a
      // Binary that is not there, and its chunk, once journaled, would not be sent again after a fix.
      if (refusedBlobs.length > 0) {
        const first = refusedBlobs[0]!
        return yield* new ImportError({
          reason: "Refused",
          url: first.error.url,
          detail: `the target refused ${refusedBlobs.length} attachment blob(s) (first: ${first.sha256}, ${first.size} bytes: ${first.error.message}); no resource was sent; raise the target's limit (or allow the content type) and run the same command again`,
          cause: first.error,
        })
      }

      /**
       * Conditional references the archive does not resolve, looked up on the target (see `lookUpConditionals`):
       * what each (as written) designates there, or why it designates no one resource there.
       */
      const targetConditionals = new Map<string, string>()
      const conditionalMisses = new Map<string, string>()
      /** Put: the copy of a blob for the resource `owner` (source `Type/id`) that points at it (see `ownedCopies`). */
      const attachmentUrlFor = (url: string, owner: string): string | undefined => {
        const blob = copyOf.get(url)
        if (blob === undefined) return undefined
        const id = ownedBinaryIdFor(blob.sha256, idMap.get(owner) ?? owner)
        const wanted = owed.get(owner) ?? new Map<string, Attachments.IndexLine>()
        owed.set(owner, wanted.set(id, blob))
        return `Binary/${id}`
      }
      const rctx = (): RewriteContext => ({
        idMap,
        identifiers,
        sourceBase,
        attachmentUrls,
        ...(ownedCopies ? { attachmentUrlFor } : {}),
        conditionalTargets: targetConditionals,
        conditionals: "resolveOrLeave",
        meta: {
          provenanceTag: true,
          ...(origin !== undefined ? { provenanceOrigin: origin } : {}),
          ...drops,
        },
      })

      /**
       * A batch's entries are processed one by one, and no server resolves a conditional reference in one (only
       * in a transaction): each conditional the archive left for the target in `tx` is searched for on the
       * target, once per run. One match is the resource it designates (`targetConditionals`, consulted by the
       * rewrite); none or several, a miss. How many were looked up.
       */
      const lookUpConditionals = (tx: { readonly reports: ReadonlyArray<Chunk.EntryReport> }) =>
        Effect.gen(function* () {
          const wanted = new Set<string>()
          for (const r of tx.reports)
            for (const n of r.notes)
              if (
                n.kind === "ConditionalLeft" &&
                !targetConditionals.has(n.reference) &&
                !conditionalMisses.has(n.reference)
              )
                wanted.add(n.reference)
          // `parallel` searches at a time (a post migration of thousands of practitioners met by identifier
          // would otherwise wait for each search in turn); each settles its own reference
          yield* Effect.forEach(
            wanted,
            (raw) =>
              Effect.gen(function* () {
                const parsed = parseReference(raw, { sourceBase })
                if (parsed._tag !== "Conditional") {
                  conditionalMisses.set(raw, "it is not a search the target can run")
                  return
                }
                const found = yield* searchOne(
                  client,
                  parsed.type,
                  parsed.params.map((p) => [p.name, p.value] as const),
                )
                if (found._tag === "One") targetConditionals.set(raw, `${parsed.type}/${found.id}`)
                else
                  conditionalMisses.set(
                    raw,
                    found._tag === "None"
                      ? "no resource on the target matches it"
                      : found._tag === "Several"
                        ? "several resources on the target match it"
                        : found.error.status === 403
                          ? `the target's credentials may not search ${parsed.type} (403): with a scope that searches it Ferry resolves it there`
                          : "the target cannot run that search",
                  )
              }),
            { concurrency: Math.max(1, options.parallel ?? 4), discard: true },
          )
          return wanted.size
        })

      if (strategy === "import") {
        // $import: the target loads whole files, so they go to it rewritten as the put strategy's Bundles would
        // be (references, attachment URLs, meta), line for line, staged under imports/<target>/bulk-…/
        for (const i of otherFiles) yield* readContextFile(dataFiles[i]!)
        const published = options.serve !== undefined && "fileBaseUrl" in options.serve
        // one folder per run (`bulk-<pid>-<nonce>`): a run that lost the lock to another (see Archive.lock) and is
        // stopped removes its own, never the one the other run's target is reading; a crashed run's are removed here
        const stageDir = Path.join(importDir, `bulk-${process.pid}-${randomBytes(4).toString("hex")}`)
        if (!published)
          yield* Effect.try({
            try: () => {
              for (const name of NFS.readdirSync(importDir))
                if (name === "bulk" || name.startsWith("bulk-"))
                  NFS.rmSync(Path.join(importDir, name), { recursive: true, force: true })
              makeDirsSync(Path.join(stageDir, "data"), 0o700)
            },
            catch: io(stageDir),
          })
        const staged: Array<FileEntry> = []
        let rewritten = 0
        // this job sends every line again: what earlier jobs rejected (or set aside when staging) is superseded
        // by what this one rejects
        yield* dropBulkRejections(
          Imports.quarantineDir(archive, client.baseUrl),
          options.files === undefined ? "all" : new Set(dataFiles.map((f) => f.path)),
        )
        let setAside = 0
        for (const entry of dataFiles) {
          // a conditional reference the archive does not resolve is one $import stores as written (it resolves
          // none): searched for on the target first, as for a batch; a resource whose reference matches nothing
          // or several there is set aside, not staged
          let dropped = 0
          const lines = archiveItems(entry, true).pipe(
            Stream.mapChunksEffect((items) =>
              Effect.gen(function* () {
                const ctx = rctx()
                let outs = EffectChunk.toReadonlyArray(items).map((item) => rewriteResource(item.value, ctx))
                const left = outs.flatMap((o) => o.notes.filter((n) => n.kind === "ConditionalLeft"))
                if (left.length > 0) {
                  const looked = yield* lookUpConditionals({
                    reports: [{ position: 0, source: "", unresolved: [], notes: left }],
                  })
                  // only the resources that left one are rewritten again, now with what the target resolved
                  if (looked > 0) {
                    const again = rctx()
                    const values = EffectChunk.toReadonlyArray(items)
                    outs = outs.map((o, i) =>
                      o.notes.some((n) => n.kind === "ConditionalLeft")
                        ? rewriteResource(values[i]!.value, again)
                        : o,
                    )
                  }
                }
                const kept: Array<string> = []
                let i = 0
                for (const item of items) {
                  const out = outs[i++]!
                  const miss = out.notes.find(
                    (n) => n.kind === "ConditionalLeft" && conditionalMisses.has(n.reference),
                  )
                  if (miss !== undefined) {
                    dropped++
                    yield* appendDurable(
                      Path.join(Imports.quarantineDir(archive, client.baseUrl), `${entry.type}.ndjson`),
                      `${quarantineLine(item.value, undefined, `it refers to ${miss.reference} (at ${miss.path}), which neither the archive nor the target resolves to one resource (${conditionalMisses.get(miss.reference)}), ${STAGING_SET_ASIDE}; once the target holds that one resource, run the import again with --retry-quarantine`, `${entry.path}:${item.line}`, miss.reference, item.text)}\n`,
                    )
                    continue
                  }
                  if (out.changes > 0) rewritten++
                  const json = JSON.stringify(out.resource)
                  // numbers as the line wrote them (`1.0` stays `1.0`)
                  kept.push(item.text === undefined ? json : restoreNumbers(item.text, json))
                }
                return EffectChunk.unsafeFromArray(kept)
              }),
            ),
          )
          const path = Path.join(stageDir, entry.path)
          const written = yield* (
            published
              ? Stream.runCount(lines).pipe(
                  Effect.map((count) => ({ count, bytes: entry.bytes, sha256: entry.sha256 })),
                )
              : Ndjson.writeFile(path, lines, { gzip: entry.compression === "gzip", label: entry.path })
          ).pipe(Effect.mapError((e) => (e instanceof Ndjson.NdjsonError ? io(path)(e) : e)))
          if (written.count + dropped !== entry.count)
            return yield* countMismatch(entry, written.count + dropped)
          setAside += dropped
          staged.push({ ...entry, count: written.count, bytes: written.bytes, sha256: written.sha256 })
        }
        if (published && (rewritten > 0 || setAside > 0))
          return yield* new ImportError({
            reason: "Config",
            url: options.archive,
            detail: `${rewritten + setAside} resource(s) of the archive need their references or attachment URLs rewritten for the target (urn:uuid, conditional or absolute source references, attachments), which files published as they are cannot carry; leave out --file-base-url so that Ferry serves the rewritten files, or use --strategy put or post`,
          })
        let rejected = 0
        // a job an earlier run started and could not release (killed while it ran) is cancelled first: the
        // target would otherwise go on loading it beside this run's
        const earlierJob = Option.flatMap(
          yield* journal.result(BULK_JOB),
          Schema.decodeUnknownOption(BulkJob),
        )
        if (Option.isSome(earlierJob) && earlierJob.value.open) {
          const { statusUrl } = earlierJob.value
          yield* BulkImport.cancel(client, statusUrl)
          yield* emit({ event: "import.bulk.cancelled", statusUrl: redactUrl(statusUrl) })
          yield* journal.append(BULK_JOB, BULK_JOB, { statusUrl, open: false })
        }
        let openJob: string | undefined
        /** Lines the target refused with an OperationOutcome (quarantined), by type. */
        const rejectedByType = new Map<string, number>()
        const result = yield* BulkImport.run({
          client,
          archiveDir: published ? archive : stageDir,
          files: staged,
          inputSource: manifest.source.baseUrl,
          capabilities: cs,
          ...(options.serve !== undefined ? { serve: options.serve } : {}),
          onEvent: (e) => emit({ ...e }),
          onRejected: (r) =>
            appendDurable(
              Path.join(Imports.quarantineDir(archive, client.baseUrl), `${r.type}.ndjson`),
              `${quarantineLine(null, r.outcome, "rejected by $import", r.source)}\n`,
            ).pipe(
              Effect.tap(() =>
                Effect.sync(() => {
                  rejected++
                  rejectedByType.set(r.type, (rejectedByType.get(r.type) ?? 0) + 1)
                }),
              ),
            ),
          onJob: (statusUrl) =>
            journal.append(BULK_JOB, BULK_JOB, { statusUrl, open: true }).pipe(
              Effect.tap(() => Effect.sync(() => (openJob = statusUrl))),
              Effect.mapError(
                (e) => new ImportError({ reason: "Archive", url: archive, detail: e.message, cause: e }),
              ),
            ),
        }).pipe(
          // released by BulkImport whatever the outcome (but a kill): no longer to cancel. A journal that cannot
          // take the line leaves it open, and the next run's DELETE of a released job is answered 404: harmless
          Effect.ensuring(
            Effect.suspend(() =>
              openJob === undefined
                ? Effect.void
                : Effect.ignore(journal.append(BULK_JOB, BULK_JOB, { statusUrl: openJob, open: false })),
            ),
          ),
          Effect.ensuring(
            published
              ? Effect.void
              : Effect.sync(() => NFS.rmSync(stageDir, { recursive: true, force: true })),
          ),
        )
        if (result.report !== undefined)
          // HAPI answers with a report in words, no counts per file: said as it is
          yield* emit({
            event: "warning",
            detail: `the target's $import reports no counts per file, only this: "${result.report}"; run ferry verify to see what it holds`,
          })
        else if (result.uncounted > 0)
          yield* emit({
            event: "warning",
            detail: `the target's $import result does not say how many resources of each type it stored (${result.uncounted} output entr${result.uncounted === 1 ? "y" : "ies"} without a count or a type); run ferry verify to see what it holds`,
          })
        else {
          // every resource of every type loaded, or refused with the OperationOutcome saying which (quarantined);
          // counts short of the lines given (a file left out of the result, a fatal abort's zeros, refusals only
          // counted) are data that did not land. By type: a result need not name the file of each count.
          const given = new Map<string, number>()
          for (const f of result.files) given.set(f.type, (given.get(f.type) ?? 0) + f.expected)
          const short = Array.from(given, ([type, expected]) => {
            const loaded = result.loaded[type] ?? 0
            const refused = rejectedByType.get(type) ?? 0
            return { type, expected, loaded, refused, missing: expected - loaded - refused }
          }).filter((t) => t.missing > 0)
          if (short.length > 0) {
            const missing = short.reduce((n, t) => n + t.missing, 0)
            const expected = result.files.reduce((n, f) => n + f.expected, 0)
            const unlisted = result.files.reduce((n, f) => n + f.unlisted, 0)
            const shown = short
              .slice(0, 4)
              .map(
                (t) =>
                  `${t.type}: ${t.expected} given, ${t.loaded} loaded${t.refused > 0 ? `, ${t.refused} refused` : ""}`,
              )
              .join("; ")
            return yield* new ImportError({
              reason: "Target",
              url: client.baseUrl,
              detail: `the target's $import job accounts for only ${expected - missing} of the ${expected} resources it was given (${shown}${short.length > 4 ? `; ${short.length - 4} more types` : ""}): ${missing} neither loaded nor refused with a reason${unlisted > 0 ? ` (${unlisted} of them counted as refused without saying which)` : ""}; see the target's log, then run the same ferry import again (the files are sent again; the target keeps their ids) or use --strategy put`,
            })
          }
        }
        if (result.idMap.length > 0) {
          // a target that assigned its own ids: references to those resources in the other files still name the
          // source ids (the files were sent whole); the pairs are kept for verify and deletes
          yield* appendToIdMap(result.idMap.map(([s, t]) => `${IdMap.line(s, t)}\n`).join(""))
          for (const [s, t] of result.idMap) idMap.set(s, t)
          // not a success: the other resources' references to these point at ids the target does not hold (and
          // journaled: a rerun does not send the files once more, for yet another copy of each)
          yield* journal.append(REMAPPED, REMAPPED, { pairs: result.idMap.length, first: result.idMap[0] })
          return yield* remappedError(client.baseUrl, result.idMap.length, result.idMap[0]!)
        }
        const deleted = yield* applyDeletes
        const total = Object.values(result.loaded).reduce((a, b) => a + b, 0)
        const summary: ImportSummary = {
          target: client.baseUrl,
          strategy,
          resources: result.loaded,
          total,
          chunks: 0,
          resumedChunks: 0,
          binaries,
          quarantined: rejected + setAside,
          deleted,
          deletesSkipped,
          deletesAlreadyGone,
          bundleSize: sizer.current(),
          dropMeta,
        }
        if (options.files === undefined) yield* journal.append("import.done", "import.done", { total })
        yield* emit({ event: "done", ...summary })
        return summary
      }

      // the rest of the archive is read from here on, alongside the sending
      yield* Effect.forkScoped(reader)
      /** The segment being sent. */
      let sending: Planned | undefined

      const counts: Record<string, number> = {}
      let quarantined = 0
      let chunksDone = 0
      let resumed = 0
      // A `ferry migrate` of this archive into this target ran to its end: its waves landed every file, in
      // Bundles cut otherwise than a whole-archive import cuts them, which the chunk journal therefore does not
      // know. Nothing is sent again (as after a finished `ferry import`); a --retry-quarantine replays only
      // the quarantine.
      const migrated =
        options.files === undefined && Imports.readMigrateLedger(archive, client.baseUrl)?.done === true
      const writeLock = yield* Effect.makeSemaphore(1)
      const quarantineDir = Imports.quarantineDir(archive, client.baseUrl)

      const quarantine = (
        items: ReadonlyArray<{
          loc: Located
          outcome: unknown
          reason: string
          waitingOn?: string
          cause?: "archive"
        }>,
      ) =>
        writeLock.withPermits(1)(
          Effect.forEach(
            items,
            ({ loc, outcome, reason, waitingOn, cause }) =>
              appendDurable(
                Path.join(quarantineDir, `${loc.value.resourceType}.ndjson`),
                `${quarantineLine(loc.value, outcome, reason, `${loc.file}:${loc.line}`, waitingOn, loc.text, cause)}\n`,
              ).pipe(
                Effect.tap(() => {
                  quarantined++
                  return emit({
                    event: "quarantined",
                    source: `${loc.file}:${loc.line}`,
                    // (one without an id is named by its type and line: `Observation/` names nothing)
                    key:
                      typeof loc.value.id === "string" && loc.value.id !== ""
                        ? `${loc.value.resourceType}/${loc.value.id}`
                        : `${loc.value.resourceType} without an id`,
                    reason,
                  })
                }),
              ),
            { discard: true },
          ),
        )

      const record = (mapped: ReadonlyArray<Chunk.Mapped>) =>
        writeLock
          .withPermits(1)(
            Effect.gen(function* () {
              if (mapped.length === 0) return
              // every mapping, identities included: a later run (a migrate wave, a `--since auto` delta) learns
              // from these lines which resources earlier runs loaded (urn:uuid resolution, Binaries the archive
              // owns), and verify resolves the archive's urn:uuid references through them
              yield* appendToIdMap(mapped.map((m) => `${IdMap.line(m.source, m.target)}\n`).join(""))
              for (const m of mapped) {
                // put mode: a resource that kept its id is mapped already (identity), no entry needed
                if (idMap.get(m.source) !== m.target) idMap.set(m.source, m.target)
                const t = typeOf(m.source)
                counts[t] = (counts[t] ?? 0) + 1
              }
            }),
          )
          .pipe(Effect.zipRight(copiesFor(mapped)))

      /**
       * The copies of attachment blobs these landed resources are owed (put: see `ownedCopies`), each PUT raw
       * with `X-Security-Context` naming its resource and recorded in `binaries.ndjson`, before the chunk is
       * journaled: a run stopped before that sends the chunk and its copies again (both idempotent). A copy the
       * target refuses (too large, a content type it will not take) ends the import: the resource landed, and
       * points at it.
       */
      const copiesFor = (mapped: ReadonlyArray<Chunk.Mapped>) =>
        Effect.gen(function* () {
          const refused: Array<{
            readonly blob: Attachments.IndexLine
            readonly owner: string
            readonly id: string
            readonly error: FhirError
          }> = []
          for (const m of mapped) {
            const wanted = owed.get(m.source)
            if (wanted === undefined) continue
            for (const [id, blob] of wanted) {
              if (uploadedOwned.has(id)) continue
              const pieces = yield* Stream.runCollect(Attachments.read(archive, blob))
              const bytes = Buffer.concat(EffectChunk.toReadonlyArray(pieces))
              const contentType = blob.contentType ?? "application/octet-stream"
              const asJson = Effect.suspend(() =>
                client.update({
                  resourceType: "Binary",
                  id,
                  contentType,
                  securityContext: { reference: m.target },
                  data: bytes.toString("base64"),
                }),
              )
              const sent = yield* (
                headerIgnored
                  ? asJson
                  : client
                      .request(
                        HttpClientRequest.put(`Binary/${id}`).pipe(
                          HttpClientRequest.bodyUint8Array(bytes, contentType),
                          HttpClientRequest.setHeader("accept", "application/fhir+json"),
                          HttpClientRequest.setHeader("x-security-context", m.target),
                          // the first copy's answer is read (the Binary stored), the others' not sent back
                          headerChecked ? HttpClientRequest.setHeader("prefer", "return=minimal") : (r) => r,
                        ),
                      )
                      .pipe(
                        // (the answer read once: after that, like the other uploads', it is not)
                        Effect.flatMap((response) =>
                          headerChecked ? Effect.succeed("") : Effect.orElseSucceed(response.text, () => ""),
                        ),
                        // a target that answers with the Binary it stored and no security context ignored the
                        // header: this copy again as a JSON Binary that carries it, and the rest so from now on
                        Effect.flatMap((text) => {
                          if (headerChecked) return Effect.void
                          const stored = Option.getOrUndefined(
                            Option.liftThrowable(() => JSON.parse(text) as Record<string, unknown>)(),
                          )
                          if (stored?.resourceType !== "Binary") return Effect.void
                          headerChecked = true
                          if (stored.securityContext !== undefined) return Effect.void
                          headerIgnored = true
                          return Effect.zipRight(
                            emit({
                              event: "warning",
                              detail: `the target stored Binary/${id} without the security context its X-Security-Context header gave (${m.target}): the copies of attachments go as JSON Binaries that carry it instead (their bytes base64, a third larger)`,
                            }),
                            asJson,
                          )
                        }),
                      )
              ).pipe(
                Effect.as(true),
                // one the target will not take (too large, a content type it refuses): the others are still
                // made, then the import stops with one sentence naming it
                Effect.catchIf(
                  (e): e is FhirError => isEntryRefusal(e) || isTooLarge(e),
                  (e) =>
                    Effect.as(
                      Effect.zipRight(
                        Effect.sync(() => refused.push({ blob, owner: m.target, id, error: e })),
                        emit({
                          event: "binary-refused",
                          sha256: blob.sha256,
                          size: blob.size,
                          detail: e.message,
                        }),
                      ),
                      false,
                    ),
                ),
              )
              if (!sent) continue
              yield* appendDurable(
                binariesPath,
                `${JSON.stringify({ sha256: blob.sha256, id, owner: m.target })}\n`,
              )
              uploadedOwned.add(id)
              noteCopy(m.target, id)
              binaries++
            }
            owed.delete(m.source)
          }
          const first = refused[0]
          if (first === undefined) return
          return yield* new ImportError({
            reason: "Refused",
            url: first.error.url,
            detail: `the target refused ${refused.length === 1 ? "the copy" : `${refused.length} copies (first: the copy)`} of attachment blob ${first.blob.sha256} (${first.blob.size} bytes) for ${first.owner}: ${first.error.message}; ${first.owner} landed and points at Binary/${first.id}, which is missing until the target takes it: raise the target's limit (or allow the content type) and run the same command again`,
            cause: first.error,
          })
        })

      const decodeResponse = (tx: Chunk.Sent, response: Chunk.ResponseBundle) => {
        const m = Chunk.mapFromResponse(tx, response)
        return Either.isLeft(m)
          ? Effect.fail(
              new ImportError({
                reason: "Target",
                url: client.baseUrl,
                detail: `${m.left.message}; the target's transaction response cannot be matched to the request`,
                cause: m.left,
              }),
            )
          : Effect.succeed(m.right)
      }

      /**
       * The buffers the lines are read back into and the Bundles written into, used again once a Bundle
       * landed (see core's BufferPool): at most 16 MiB kept, a few Bundles' worth.
       */
      const buffers = new BufferPool(16 * 1024 * 1024)

      /** How this import's Bundles are built (see Chunk.TransactionOptions). */
      const txOptions: Chunk.TransactionOptions = {
        buffers,
        conditionalCreate,
        // put mode, nothing renamed: a resource whose references are all plain `Type/id` (the graph pass
        // found them) only needs its meta changed. The rewrite context sets no `resolveLogical`, so
        // identifier-only references are left alone either way.
        verbatim: (key) => {
          if (mode !== "put" || idMap.renamed > 0 || sending === undefined) return false
          const n = sending.graph.nodeOf(key)
          return n !== undefined && sending.deferred.verbatim(n)
        },
      }

      /**
       * POST one Bundle (JSON text) to the base; retries throttling with a halved concurrency. The answer is
       * checked only for what `mapFromResponse` reads (`Chunk.readResponse`), not decoded whole, and
       * `Prefer: return=minimal` asks the target not to echo the resources.
       */
      const send = (body: string | Uint8Array) => {
        const once = client
          .request(
            HttpClientRequest.post("").pipe(
              typeof body === "string"
                ? HttpClientRequest.bodyText(body, "application/fhir+json")
                : HttpClientRequest.bodyUint8Array(body, "application/fhir+json"),
              HttpClientRequest.setHeader("prefer", "return=minimal"),
            ),
          )
          .pipe(
            Effect.flatMap((response) =>
              Effect.mapError(
                response.text,
                (cause) =>
                  new FhirError({
                    reason: "Transport",
                    method: "POST",
                    url: client.baseUrl,
                    detail: bodyFailure("the answer to a Bundle", cause),
                    cause,
                  }),
              ),
            ),
            Effect.flatMap((text) => {
              let json: unknown
              try {
                json = JSON.parse(text)
              } catch {
                return Effect.fail(
                  new FhirError({
                    reason: "Decode",
                    method: "POST",
                    url: client.baseUrl,
                    detail: "the answer to a Bundle is not JSON",
                  }),
                )
              }
              return Either.match(Chunk.readResponse(json), {
                onLeft: (e) =>
                  Effect.fail(
                    new FhirError({
                      reason: "Decode",
                      method: "POST",
                      url: client.baseUrl,
                      detail: e.detail,
                    }),
                  ),
                onRight: Effect.succeed,
              })
            }),
          )
        const loop = (attempt: number): Effect.Effect<Chunk.ResponseBundle, FhirError | AuthError> =>
          once.pipe(
            Effect.tap(() => limiter.succeeded),
            Effect.catchIf(
              (e) => isThrottle(e) && attempt < THROTTLE_RETRIES,
              (e) =>
                Effect.zipRight(
                  limiter.throttled,
                  Effect.zipRight(
                    // after the halving: the parallelism from now on; `transport`: no answer in time, or one
                    // that broke off or stalled, rather than a 429/503
                    Effect.suspend(() =>
                      emit({
                        event: "throttled",
                        parallel: limiter.current(),
                        ...(e._tag === "FhirError" && e.reason === "Transport" ? { transport: true } : {}),
                      }),
                    ),
                    Effect.zipRight(
                      Effect.sleep(Duration.millis(Math.min(30_000, 500 * 2 ** attempt))),
                      loop(attempt + 1),
                    ),
                  ),
                ),
            ),
          )
        return loop(0)
      }

      /** Land these resources (dependency order); splits, batches and quarantines as needed. */
      /** `cycle`: the resources are one reference cycle (an oversize component of the plan). */
      const land = (all: ReadonlyArray<Located>, cycle = false): Effect.Effect<void, ImportFailure> =>
        Effect.gen(function* () {
          // larger than the target has been taking (see makeSizer): in pieces of that size, each reference
          // cycle whole (a cycle of new ids too large for one Bundle goes whole, as planned)
          const size = sizer.current()
          const pieces = all.length > size && (!cycle || mode === "put") ? inPieces(all, size) : [all]
          if (pieces.length > 1) {
            // (a piece over the size is one cycle of new ids: whole, as one, see inPieces)
            for (const piece of pieces) yield* land(piece, piece.length > size)
            return
          }
          const mapped = (l: Located) =>
            typeof l.value.id === "string" && idMap.has(`${l.value.resourceType}/${l.value.id}`)
          // decided before anything is sent: what landNew creates is in the id map afterwards
          const known = mode === "post" ? all.filter(mapped) : []
          const locs = mode === "post" ? all.filter((l) => !mapped(l)) : all
          yield* landNew(locs, cycle)
          yield* update(known)
        })

      /**
       * Post mode: resources the id map already holds (an incremental archive's changed resources, or ones an
       * earlier run or wave created) are updated in place with `PUT Type/<target id>`, in one batch (the
       * entries are independent); refused ones are quarantined.
       */
      const update = (all: ReadonlyArray<Located>): Effect.Effect<void, ImportFailure> =>
        Effect.gen(function* () {
          let known = all
          if (known.length === 0) return
          let tx = Chunk.toTransaction(
            known.map((l) => l.value),
            "put",
            rctx(),
            { type: "batch" },
          )
          // as in landNew: no update goes out with a reference that has no target id (the entries of a batch
          // do not refer to each other: once is enough)
          const waiting = notMappedIn(tx)
          if (waiting.size > 0) {
            yield* quarantine(Array.from(waiting, ([position, u]) => waitingOn(known[position]!, u)))
            known = known.filter((_, i) => !waiting.has(i))
            if (known.length === 0) return
            tx = Chunk.toTransaction(
              known.map((l) => l.value),
              "put",
              rctx(),
              { type: "batch" },
            )
          }
          const batch = yield* batchOf(known, tx, (ls) =>
            Chunk.toTransaction(
              ls.map((l) => l.value),
              "put",
              rctx(),
              { type: "batch" },
            ),
          )
          if (batch === undefined) return
          tx = batch.tx
          known = batch.locs
          const sent = yield* Effect.either(send(bundleJson(tx.bundle, known)))
          if (Either.isLeft(sent)) {
            // the batch as a whole refused (too large, or a Bundle the target will not read): halves, down to
            // the entry that is refused alone, which is quarantined (its entries are independent)
            const e = sent.left
            if (e._tag !== "FhirError" || !(isTooLarge(e) || isEntryRefusal(e)) || isSystemic(e))
              return yield* e
            if (known.length === 1) {
              if (isTooLarge(e)) sizer.tooLarge(1)
              if (isTooLarge(e)) return yield* binaryTooLarge(known[0]!, e)
              return yield* quarantine([
                {
                  loc: known[0]!,
                  outcome: e.outcome,
                  reason: isTooLarge(e) ? "too large for the target even alone (413)" : e.message,
                },
              ])
            }
            if (isTooLarge(e)) yield* refusedAsTooLarge(known.length)
            yield* emit({ event: "split", entries: known.length })
            const half = Math.ceil(known.length / 2)
            yield* update(known.slice(0, half))
            return yield* update(known.slice(half))
          }
          sizer.succeeded(known.length)
          noteDangling(tx.reports)
          const m = yield* decodeResponse(tx, sent.right)
          yield* record(m.mapped)
          yield* quarantine(
            m.failed.map((f) => ({
              loc: known[f.position]!,
              outcome: f.outcome,
              reason: `refused by the target (${f.status ?? "no status"}${refusal(f.outcome)})`,
            })),
          )
        })

      /**
       * `locs` in groups that must be sent together (strongly connected by their references to each other: a
       * cycle), the groups in dependency order.
       */
      const togetherGroups = (locs: ReadonlyArray<Located>): ReadonlyArray<ReadonlyArray<Located>> => {
        const byKey = new Map(locs.map((l) => [`${l.value.resourceType}/${l.value.id ?? ""}`, l]))
        const graph = fromResources(
          locs.map((l) => l.value),
          { idMap, identifiers, sourceBase },
          () => 0,
        )
        const comps = components(graph)
        const out: Array<ReadonlyArray<Located>> = []
        for (let c = 0; c < comps.count; c++) {
          const group = Array.from(members(comps, c), (n) => byKey.get(graph.keys[n]!))
          out.push(group.filter((l): l is Located => l !== undefined))
        }
        return out.filter((g) => g.length > 0)
      }

      /**
       * `locs` in pieces of at most `size`, dependencies first, no reference cycle cut, except one larger than
       * `size` in put mode (its ids are known: cut, as the target's refusal would have it halved anyway; with
       * new ids it goes whole, its entries referring to each other by urn:uuid).
       */
      const inPieces = (
        locs: ReadonlyArray<Located>,
        size: number,
      ): ReadonlyArray<ReadonlyArray<Located>> => {
        const pieces: Array<Array<Located>> = []
        let piece: Array<Located> = []
        for (const group of togetherGroups(locs)) {
          if (piece.length > 0 && piece.length + group.length > size) {
            pieces.push(piece)
            piece = []
          }
          if (group.length > size && mode === "put")
            for (let i = 0; i < group.length; i += size) pieces.push(group.slice(i, i + size))
          else piece.push(...group)
        }
        if (piece.length > 0) pieces.push(piece)
        return pieces
      }

      /**
       * The batch of `locs` (`tx`, made by `build`) with its conditional references resolved on the target
       * (`lookUpConditionals`): an entry holding one the target does not resolve to one resource is quarantined
       * (sent, the reference would be stored as written, which no client can follow). The batch of the rest,
       * undefined when none is left.
       */
      const batchOf = (
        locs: ReadonlyArray<Located>,
        tx: Chunk.Transaction,
        build: (ls: ReadonlyArray<Located>) => Chunk.Transaction,
      ): Effect.Effect<
        { readonly tx: Chunk.Transaction; readonly locs: ReadonlyArray<Located> } | undefined,
        ImportFailure
      > =>
        Effect.gen(function* () {
          const built = (yield* lookUpConditionals(tx)) > 0 ? build(locs) : tx
          const misses = new Map<number, { readonly path: string; readonly reference: string }>()
          for (const r of built.reports) {
            const n = r.notes.find((x) => x.kind === "ConditionalLeft" && conditionalMisses.has(x.reference))
            if (n !== undefined) misses.set(r.position, n)
          }
          if (misses.size === 0) return { tx: built, locs }
          yield* quarantine(
            Array.from(misses, ([position, n]) => ({
              loc: locs[position]!,
              outcome: undefined,
              waitingOn: n.reference,
              reason: `it refers to ${n.reference} (at ${n.path}), which neither the archive nor the target resolves to one resource (${conditionalMisses.get(n.reference)}), and it goes in a batch, where the target does not resolve it either; once the target holds that one resource, run the import again with --retry-quarantine`,
            })),
          )
          const rest = locs.filter((_, i) => !misses.has(i))
          return rest.length === 0 ? undefined : { tx: build(rest), locs: rest }
        })

      /** Entries (by position) with a reference to an archive resource that has no target id, one such each. */
      const notMappedIn = (tx: { readonly reports: ReadonlyArray<Chunk.EntryReport> }) => {
        const out = new Map<number, Unresolved>()
        for (const r of tx.reports) {
          const u = r.unresolved.find((x) => x.reason === "NotMapped")
          if (u !== undefined) out.set(r.position, u)
        }
        return out
      }

      const waitingOn = (loc: Located, u: Unresolved) => ({
        loc,
        outcome: undefined,
        waitingOn: u.key ?? u.reference,
        reason: `it refers to ${u.key ?? u.reference} (at ${u.path}), which is in the archive but has no id on the target yet (quarantined or refused); once that one has landed, run the import again with --retry-quarantine`,
      })

      /** Create these resources (dependency order); splits, batches and quarantines as needed. */
      const landNew = (all: ReadonlyArray<Located>, cycle: boolean): Effect.Effect<void, ImportFailure> =>
        Effect.gen(function* () {
          let locs = all
          if (locs.length === 0) return
          let tx = Chunk.toTransaction(
            locs.map((l) => l.value),
            mode,
            rctx(),
            txOptions,
          )
          // Post mode: a reference to a resource of the archive that has no id on the target (it was
          // quarantined or refused, or a split cut it off) would go out with its source id, which on the
          // target is nothing or another resource. Such entries are quarantined instead (and then what
          // referred to them in this Bundle, in turn), to land with --retry-quarantine once it has.
          for (;;) {
            const waiting = mode === "post" ? notMappedIn(tx) : new Map<number, Unresolved>()
            if (waiting.size === 0) break
            yield* quarantine(Array.from(waiting, ([position, u]) => waitingOn(locs[position]!, u)))
            locs = locs.filter((_, i) => !waiting.has(i))
            if (locs.length === 0) return
            tx = Chunk.toTransaction(
              locs.map((l) => l.value),
              mode,
              rctx(),
              txOptions,
            )
          }
          const result = yield* Effect.either(send(bundleJson(tx.bundle, locs)))
          if (Either.isRight(result)) {
            sizer.succeeded(locs.length)
            noteDangling(tx.reports)
            const m = yield* decodeResponse(tx, result.right)
            return yield* record(m.mapped)
          }
          return yield* recover(locs, cycle, result.left)
        })

      /**
       * A Binary of the archive too large for the target even alone (413) stops the import, as a refused
       * attachment blob does: quarantined, it would leave every Attachment that points at it dangling on the
       * target while the run says the rest landed. Anything else too large alone is quarantined (the caller).
       */
      const binaryTooLarge = (loc: Located, e: FhirError | AuthError): Effect.Effect<void, ImportError> =>
        loc.value.resourceType !== "Binary"
          ? Effect.void
          : Effect.fail(
              new ImportError({
                reason: "Refused",
                url: client.baseUrl,
                detail: `the target refused Binary/${loc.value.id ?? "?"} (${loc.file}:${loc.line}) as too large even alone (413: ${e.message}); what refers to it would point at nothing, so the import stops here; raise the target's request size limit and run the same command again (what landed stays)`,
                cause: e,
              }),
            )

      /** The transaction of `locs` failed with `e`: split (413), batch or quarantine, or give up. */
      const recover = (
        locs: ReadonlyArray<Located>,
        cycle: boolean,
        e: FhirError | AuthError,
      ): Effect.Effect<void, ImportFailure> =>
        Effect.gen(function* () {
          if (isTooLarge(e)) {
            // one resource refused alone: the halvings that led here were its doing
            if (locs.length === 1) sizer.tooLarge(1)
            if (locs.length === 1) yield* binaryTooLarge(locs[0]!, e)
            if (locs.length === 1)
              return yield* quarantine([
                {
                  loc: locs[0]!,
                  outcome: e._tag === "FhirError" ? e.outcome : undefined,
                  reason: "too large for the target even alone (413)",
                },
              ])
            if (cycle && mode === "post") {
              // its entries refer to each other by urn:uuid: halves would leave references dangling
              const outcome = e._tag === "FhirError" ? e.outcome : undefined
              return yield* quarantine(
                locs.map((loc) => ({
                  loc,
                  outcome,
                  reason: `part of a reference cycle of ${locs.length} resources that is too large for one Bundle of the target (413) and cannot be split with new ids; raise the target's limit or import with --strategy put`,
                })),
              )
            }
            yield* refusedAsTooLarge(locs.length)
            yield* emit({ event: "split", entries: locs.length })
            const half = Math.ceil(locs.length / 2)
            yield* land(locs.slice(0, half))
            return yield* land(locs.slice(half))
          }
          if (e._tag === "FhirError" && e.reason === "Status" && e.status === 405 && mode === "put") {
            return yield* new ImportError({
              reason: "Refused",
              url: client.baseUrl,
              detail: "the target refuses client-defined ids (405 on PUT); rerun with --strategy post",
              cause: e,
            })
          }
          if (!isEntryRefusal(e)) return yield* e
          if (isSystemic(e)) {
            return yield* new ImportError({
              reason: "NotSupported",
              url: client.baseUrl,
              detail:
                e.outcome === undefined
                  ? `the target refused a whole Bundle with ${e.status ?? "an error"} and no OperationOutcome, which a FHIR server gives about an entry (${e.message}); check --to is the target's FHIR base and that nothing in between (a proxy, a login page) answers for it`
                  : `the target refused a whole Bundle for a reason no entry caused (${e.message}); check the target supports what the ${mode} strategy needs, or try the other --strategy`,
              cause: e,
            })
          }
          if (locs.length === 1)
            return yield* quarantine([{ loc: locs[0]!, outcome: e.outcome, reason: e.message }])
          if (mode === "post") {
            // entries refer to each other by urn:uuid: one transaction per group that must go together (a
            // reference cycle; a resource alone otherwise), in dependency order. A cycle refused as a whole
            // cannot be narrowed down: it is quarantined whole.
            const groups = togetherGroups(locs)
            if (groups.length === 1)
              return yield* quarantine(locs.map((loc) => ({ loc, outcome: e.outcome, reason: e.message })))
            // a cycle that is then too large alone (413) gets the cycle's reason, not halves
            for (const g of groups) yield* land(g, g.length > 1)
            return
          }
          const asBatch = (ls: ReadonlyArray<Located>) =>
            Chunk.toTransaction(
              ls.map((l) => l.value),
              mode,
              rctx(),
              { ...txOptions, type: "batch" },
            )
          const batch = yield* batchOf(locs, asBatch(locs), asBatch)
          if (batch === undefined) return
          const btx = batch.tx
          const response = yield* send(bundleJson(btx.bundle, batch.locs))
          const m = yield* decodeResponse(btx, response)
          yield* record(m.mapped)
          yield* quarantine(
            m.failed.map((f) => ({
              loc: batch.locs[f.position]!,
              outcome: f.outcome,
              reason: `refused by the target (${f.status ?? "no status"}${refusal(f.outcome)})`,
            })),
          )
        })

      const corruptAt = (entry: FileEntry, line: number, detail: string) =>
        new ImportError({
          reason: "Archive",
          url: `${entry.path}:${line}`,
          detail: `${detail}; leave the archive alone while it is imported, or restore it from a copy (or export again), then run the import again`,
        })

      /** A body read back (see `readBodies`): parsed, guarded, and still the resource the graph pass saw. */
      const parseBody = (
        entry: FileEntry,
        line: number,
        text: string,
        key: string,
      ): Resource | ImportError => {
        let value: unknown
        try {
          value = JSON.parse(text)
        } catch {
          // the parser's message quotes the line (patient data): not passed on
          return corruptAt(
            entry,
            line,
            "this line is not valid JSON any more (the archive changed during the import?)",
          )
        }
        if (!isResource(value) || `${value.resourceType}/${value.id ?? ""}` !== key)
          return corruptAt(
            entry,
            line,
            `this line no longer holds ${key} (the archive changed during the import?)`,
          )
        return value
      }

      // uncompressed data files stay open for positioned reads until the import ends
      const fds = new Map<number, number>()
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          for (const fd of fds.values()) NFS.closeSync(fd)
          fds.clear()
        }),
      )
      const readSpan = (span: Span): Effect.Effect<Buffer, ImportError> => {
        const path = Path.join(archive, dataFiles[span.file]!.path)
        return Effect.flatMap(
          Effect.try({
            try: () => {
              const hit = fds.get(span.file)
              if (hit !== undefined) return hit
              const fd = NFS.openSync(path, "r")
              fds.set(span.file, fd)
              return fd
            },
            catch: io(path),
          }),
          (fd) =>
            Effect.async<Buffer, ImportError>((resume) => {
              const length = span.end - span.start
              const buf = buffers.take(length)
              NFS.read(fd, buf, 0, length, span.start, (err, n) =>
                resume(
                  err !== null
                    ? Effect.fail(io(path)(err))
                    : n < length
                      ? Effect.fail(
                          corruptAt(
                            dataFiles[span.file]!,
                            0,
                            "the file is shorter than when the import read it",
                          ),
                        )
                      : Effect.succeed(buf),
                ),
              )
            }),
        )
      }

      /**
       * The lines of these graph nodes (in uncompressed files), read back with a few positioned reads (the
       * graph pass recorded each line's offset and size).
       */
      const readBack = (nodes: ReadonlyArray<number>) =>
        Effect.gen(function* () {
          const lines = new Map<number, Buffer>()
          const read: Array<Buffer> = []
          for (const span of spans(nodes, locations)) {
            const buf = yield* readSpan(span)
            read.push(buf)
            for (const n of span.nodes)
              lines.set(n, lineBytes(buf, locations.offset(n) - span.start, locations.bytes(n)))
          }
          /** Gives the buffers back to `buffers`: call once nothing reads `lines` any more. */
          const done = () => {
            for (const buf of read) buffers.give(buf)
          }
          return { lines, done }
        })

      /** The body of node `n` from its line (UTF-8, decoded). */
      const bodyAt = (n: number, text: string): Resource | ImportError =>
        parseBody(dataFiles[locations.file(n)]!, locations.line(n), text, nodeKeys.key(n))

      /** The bodies of these graph nodes, in their order: from `preloaded` (gzip files), else read back. */
      const readBodies = (nodes: ReadonlyArray<number>, preloaded: ReadonlyMap<number, Located>) =>
        Effect.gen(function* () {
          const { lines, done } = yield* readBack(
            nodes.filter((n) => !preloaded.has(n) && locations.file(n) >= 0),
          )
          const out: Array<Located> = []
          for (const n of nodes) {
            const pre = preloaded.get(n)
            if (pre !== undefined) {
              out.push(pre)
              continue
            }
            const line = lines.get(n)
            if (line === undefined) continue
            const text = line.toString("utf8")
            const value = bodyAt(n, text)
            if (value instanceof ImportError) return yield* value
            out.push({
              file: dataFiles[locations.file(n)]!.path,
              line: locations.line(n),
              value,
              ...numbered(text),
            })
          }
          // every body above is a decoded copy
          done()
          return out
        })

      /**
       * The usual way a chunk lands: each body is parsed, rewritten and serialised into the Bundle text one
       * at a time (`Chunk.TransactionWriter`), so no parsed resource outlives its entry; the chunk's lines
       * are read back again only if the target refuses the Bundle (then `recover` needs the resources).
       * Not for post-mode chunks holding resources the id map knows (those are updated in place: `land`).
       */
      const landChunk = (
        c: Chunk.Chunk,
        nodes: ReadonlyArray<number>,
        preloaded: ReadonlyMap<number, Located>,
      ): Effect.Effect<void, ImportFailure> =>
        Effect.gen(function* () {
          const cycle = c.oversize && c.cyclic
          // larger than the target has been taking (see makeSizer): in pieces of that size, each reference
          // cycle whole; in put mode a cycle larger than the size is cut (its ids are known: a 413 would have
          // it halved anyway), with new ids (post) it goes whole, as one (a 413 then quarantines it, saying why)
          if (nodes.length > sizer.current() && (!cycle || mode === "put")) {
            if (!c.cyclic) {
              // no cycle: the keys are in dependency order, so are the slices (each at the size of the moment)
              for (let i = 0; i < nodes.length; ) {
                const now = sizer.current()
                yield* landNodes(nodes.slice(i, i + now), preloaded)
                i += now
              }
              return
            }
            // with cycles: pieces of whole components (the plan's `groupSizes`)
            let start = 0
            let length = 0
            const send = (from: number, to: number, whole = false) =>
              landNodes(nodesOf(c.keys.slice(from, to)), preloaded, whole)
            for (const g of c.groupSizes ?? [c.keys.length]) {
              const now = sizer.current()
              if (length > 0 && length + g > now) {
                yield* send(start, start + length)
                start += length
                length = 0
              }
              if (g <= now) {
                length += g
                continue
              }
              if (mode === "put")
                for (let i = 0; i < g; i += now) yield* send(start + i, start + Math.min(g, i + now))
              else yield* send(start, start + g, true)
              start += g
            }
            if (length > 0) yield* send(start, start + length)
            return
          }
          if (mode === "post" && c.keys.some((k) => idMap.has(k)))
            return yield* land(yield* readBodies(nodes, preloaded), cycle)
          return yield* landNodes(nodes, preloaded, cycle)
        })

      /** `landChunk`'s Bundle of `nodes` (no reference cycle cut by a piece: see landChunk). */
      const landNodes = (
        nodes: ReadonlyArray<number>,
        preloaded: ReadonlyMap<number, Located>,
        cycle = false,
      ): Effect.Effect<void, ImportFailure> =>
        Effect.gen(function* () {
          if (mode === "post" && nodes.some((n) => idMap.has(nodeKeys.key(n))))
            return yield* land(yield* readBodies(nodes, preloaded), cycle)
          const { lines, done } = yield* readBack(
            nodes.filter((n) => !preloaded.has(n) && locations.file(n) >= 0),
          )
          let bytes = 0
          for (const n of nodes) bytes += locations.bytes(n)
          const writer = new Chunk.TransactionWriter(
            nodes.map((n) => nodeKeys.key(n)),
            mode,
            rctx(),
            txOptions,
            bytes,
          )
          for (const n of nodes) {
            const pre = preloaded.get(n)
            const line = lines.get(n) ?? empty
            // a verbatim resource goes in as its text, only its meta patched (put mode)
            if (pre === undefined && writer.addBytes(line)) continue
            const text = pre === undefined ? line.toString("utf8") : pre.text
            const value = pre?.value ?? bodyAt(n, text ?? "")
            if (value instanceof ImportError) return yield* value
            const added = writer.add(value, text)
            if (Either.isLeft(added)) return yield* Effect.die(added.left)
          }
          const tx = writer.finish()
          // the Bundle holds copies of the lines
          done()
          // a post-mode entry left with a reference that has no target id: landNew sets it aside
          if (mode === "post" && notMappedIn(tx).size > 0) {
            buffers.give(tx.body)
            return yield* land(yield* readBodies(nodes, preloaded), cycle)
          }
          const result = yield* Effect.either(send(tx.body))
          if (Either.isRight(result)) {
            // the target answered the transaction, so it has read the whole body: nothing reads it any more
            // (after a failure it is left to the garbage collector: a server may answer before the body is in)
            buffers.give(tx.body)
            sizer.succeeded(nodes.length)
            noteDangling(tx.reports)
            const m = yield* decodeResponse(tx, result.right)
            return yield* record(m.mapped)
          }
          return yield* recover(yield* readBodies(nodes, preloaded), cycle, result.left)
        })

      /**
       * The bodies of these nodes that sit in gzip files (which cannot be read at an offset): each such file
       * is decompressed once and only the wanted lines (by number) are parsed.
       */
      const preload = (nodes: ReadonlyArray<number>) =>
        Effect.gen(function* () {
          const out = new Map<number, Located>()
          const byFile = new Map<number, Map<number, number>>()
          for (const n of nodes) {
            const f = locations.file(n)
            if (f < 0 || dataFiles[f]!.compression !== "gzip") continue
            const wanted = byFile.get(f) ?? new Map<number, number>()
            byFile.set(f, wanted)
            wanted.set(locations.line(n), n)
          }
          for (const f of Array.from(byFile.keys()).sort((a, b) => a - b)) {
            const entry = dataFiles[f]!
            const wanted = byFile.get(f)!
            yield* Stream.runForEach(
              Ndjson.readFileSplit(Path.join(archive, entry.path), {
                file: entry.path,
                gzip: true,
                label: entry.path,
              }).pipe(
                Stream.mapError((cause) => archiveUnreadable(entry.path, cause)),
                Stream.filter((l) => wanted.has(l.line)),
              ),
              (l) => {
                const n = wanted.get(l.line)!
                const value = parseBody(entry, l.line, l.text, nodeKeys.key(n))
                if (value instanceof ImportError) return Effect.fail(value)
                out.set(n, { file: entry.path, line: l.line, value, ...numbered(l.text) })
                return Effect.void
              },
            )
          }
          return out
        })

      const nodesOf = (keys: ReadonlyArray<string>): Array<number> => {
        const out: Array<number> = []
        for (const k of keys) {
          const n = nodeOf(k)
          if (n !== undefined) out.push(n)
        }
        return out
      }

      /** A group's chunks not done yet, with the bodies that come from gzip files. */
      const prepareGroup = (group: ReadonlyArray<Chunk.Chunk>) =>
        Effect.gen(function* () {
          const pending: Array<Chunk.Chunk> = []
          for (const c of group) {
            if (migrated || (yield* journal.isDone(`import.chunk:${chunkKey(c.keys)}`))) resumed++
            else pending.push(c)
          }
          const preloaded = anyGzip
            ? yield* preload(pending.flatMap((c) => nodesOf(c.keys)))
            : new Map<number, Located>()
          return { pending, preloaded }
        })

      const runGroup = ({
        pending,
        preloaded,
      }: {
        readonly pending: ReadonlyArray<Chunk.Chunk>
        readonly preloaded: ReadonlyMap<number, Located>
      }) =>
        Effect.gen(function* () {
          // `parallel` fibers taking the next chunk (not one fiber per chunk waiting on the limiter: at 1M
          // resources a level holds hundreds of chunks, each fiber with its continuation)
          yield* forEachPooled(pending, parallel, (c) =>
            Effect.gen(function* () {
              yield* landChunk(c, nodesOf(c.keys), preloaded)
              yield* journal.append("import.chunk", `import.chunk:${chunkKey(c.keys)}`, {
                index: c.index,
                entries: c.keys.length,
                mode,
              })
              chunksDone++
              const byType: Record<string, number> = {}
              for (const k of c.keys) byType[typeOf(k)] = (byType[typeOf(k)] ?? 0) + 1
              yield* emit({
                event: "chunk",
                index: c.index,
                level: c.level,
                entries: c.keys.length,
                types: byType,
                total: Object.values(counts).reduce((a, b) => a + b, 0),
                quarantined,
                parallel: limiter.current(),
              })
            }).pipe(limiter.run),
          )
        })

      // Chunks go level by level. A chunk reads its own bodies just before it is sent (positioned reads),
      // so with uncompressed files a whole level is one group: the target always has the next Bundles
      // queued and only the chunks in flight hold bodies. Gzip files cannot be read at an offset: their
      // bodies are decompressed once per group of `4 × parallel` chunks instead.
      const anyGzip = dataFiles.some((f) => f.compression === "gzip")
      const groupSize = anyGzip ? Math.max(1, (options.parallel ?? 4) * 4) : Number.POSITIVE_INFINITY
      let planned = 0
      const next = (g: ReadonlyArray<Chunk.Chunk>) => Effect.flatMap(prepareGroup(g), runGroup)
      for (let segment = 0; ; segment++) {
        const seg = yield* Effect.flatten(Queue.take(segments))
        if (seg === null) break
        sending = seg
        yield* emit({
          event: "graph",
          segment,
          resources: seg.graph.size,
          edges: seg.graph.edgeCount,
          components: seg.comps.count,
        })
        // chunk numbers run on across segments
        const offset = planned
        let group: Array<Chunk.Chunk> = []
        for (const c of Chunk.plan(seg.graph, seg.comps, {
          maxEntries: Math.max(1, options.bundleSize ?? 500),
          maxBytes: Math.max(1024, options.maxBundleBytes ?? 10 * 1024 * 1024),
        })) {
          planned++
          const chunk = { ...c, index: c.index + offset }
          if (group.length > 0 && (group[0]!.level !== chunk.level || group.length >= groupSize)) {
            yield* next(group)
            group = []
          }
          group.push(chunk)
        }
        if (group.length > 0) yield* next(group)
      }
      sending = undefined

      // quarantined resources, replayed after a fix. A type's quarantine file is first moved into its
      // `.replaying` file (appended, then removed), which is replayed and then set aside as `.replayed-<ms>`:
      // what fails again is quarantined anew in the type's file. A run that stops mid-replay (a kill, a server
      // error) leaves the `.replaying` file, which counts as pending (`Imports.pendingQuarantine`) and is replayed
      // first by the next --retry-quarantine; resources it lands twice land once (PUT by id, or POST's
      // conditional create on the provenance tag).
      if (options.retryQuarantine === true) {
        // Pass after pass while a pass lands some and sets some aside again: a resource set aside because
        // what it refers to had not landed (see landNew) lands in the pass after that one has.
        for (let pass = 0; pass < MAX_REPLAY_PASSES; pass++) {
          const before = quarantined
          let replayed = 0
          const names = yield* Effect.try({
            try: () => (NFS.existsSync(quarantineDir) ? NFS.readdirSync(quarantineDir) : []),
            catch: io(quarantineDir),
          })
          const bases = [
            ...new Set(
              names.flatMap((n) =>
                n.endsWith(".ndjson")
                  ? [n]
                  : n.endsWith(Imports.REPLAYING)
                    ? [n.slice(0, -Imports.REPLAYING.length)]
                    : [],
              ),
            ),
          ].sort()
          // every type's pending lines first, then sent together, dependencies first: a cycle across types
          // (Encounter ↔ Condition) goes in one Bundle, as it did in the first import
          const all: Array<Located> = []
          const replayingFiles: Array<{ readonly from: string; readonly replaying: string }> = []
          for (const name of bases) {
            const from = Path.join(quarantineDir, name)
            const replaying = `${from}${Imports.REPLAYING}`
            // both files mended first: a torn last line cut off, a whole one given its newline (readLines)
            yield* readLines(from)
            const waiting = yield* Effect.try({
              try: () => (NFS.existsSync(from) ? NFS.readFileSync(from, "utf8") : ""),
              catch: io(from),
            })
            yield* readLines(replaying)
            const whole = waiting.slice(0, waiting.lastIndexOf("\n") + 1)
            if (whole !== "") yield* appendDurable(replaying, whole)
            yield* Effect.try({ try: () => NFS.rmSync(from, { force: true }), catch: io(from) })
            if (!NFS.existsSync(replaying)) continue
            replayingFiles.push({ from, replaying })
            const locs: Array<Located> = []
            // a resource quarantined twice (a line moved twice by a kill between the append and the removal, or
            // its chunk sent again after a kill) is replayed once, with its latest line
            const byKey = new Map<string, string>()
            for (const l of yield* readLines(replaying)) {
              const key = Imports.quarantineKey(l)
              byKey.delete(key)
              byKey.set(key, l)
            }
            const qLines = [...byKey.values()]
            for (let i = 0; i < qLines.length; i++) {
              const q = yield* decodeLine(QuarantineLine, replaying, i + 1, qLines[i]!)
              if (q.resource === null || !isResource(q.resource) || typeof q.resource.id !== "string") {
                // $import rejections carry no body: replay those with --strategy import; a resource without an
                // id stays until the archive holds it with one
                yield* appendDurable(from, `${qLines[i]!}\n`)
                continue
              }
              const at = q.source?.lastIndexOf(":") ?? -1
              locs.push({
                file: at > 0 ? q.source!.slice(0, at) : name,
                line: at > 0 ? Number(q.source!.slice(at + 1)) : 0,
                value: q.resource,
                // its numbers as the line wrote them (the resource comes first in a quarantine line)
                ...numbered(restoreNumbers(qLines[i]!, JSON.stringify(q.resource), { prefix: true })),
              })
            }
            yield* emit({ event: "retry-quarantine", file: name, resources: locs.length, pass: pass + 1 })
            all.push(...locs)
          }
          replayed = all.length
          all.sort((a, b) => TypeOrder.rank(a.value.resourceType) - TypeOrder.rank(b.value.resourceType))
          // packed in dependency order, a reference cycle never split across Bundles (one larger than a
          // Bundle goes alone)
          const size = Math.max(1, options.bundleSize ?? 500)
          let batch: Array<Located> = []
          for (const group of togetherGroups(all)) {
            if (batch.length > 0 && batch.length + group.length > size) {
              yield* land(batch)
              batch = []
            }
            if (group.length > size) yield* land(group, true)
            else batch.push(...group)
          }
          if (batch.length > 0) yield* land(batch)
          for (const { from, replaying } of replayingFiles) {
            const aside = `${from}.replayed-${yield* Clock.currentTimeMillis}-${pass + 1}`
            yield* Effect.try({ try: () => NFS.renameSync(replaying, aside), catch: io(replaying) })
          }
          const again = quarantined - before
          if (again === 0 || again >= replayed || pass === MAX_REPLAY_PASSES - 1) break
          // what the next pass sets aside again is what is still quarantined
          quarantined = before
        }
      }

      // (once: a rerun reads them again, and finds them set aside already)
      const setAside = new Set<string>()
      for (const type of new Set(idless.map((l) => l.value.resourceType)))
        for (const l of yield* readLines(Path.join(quarantineDir, `${type}.ndjson`)))
          setAside.add(Imports.quarantineKey(l))
      const freshIdless = idless.filter((l) => !setAside.has(`source:${l.file}:${l.line}`))
      if (freshIdless.length > 0)
        yield* quarantine(
          freshIdless.map((loc) => ({
            loc,
            outcome: undefined,
            cause: "archive" as const,
            reason:
              "the resource has no id (every resource of a Bulk Data export has one), so it cannot be sent under a stable identity or referred to; fix it at the source and export again",
          })),
        )

      yield* danglingWarning
      // 5. deletes
      const deleted = yield* applyDeletes
      const total = Object.values(counts).reduce((a, b) => a + b, 0)
      const summary: ImportSummary = {
        target: client.baseUrl,
        strategy,
        resources: counts,
        total,
        chunks: planned,
        resumedChunks: resumed,
        binaries,
        quarantined,
        deleted,
        deletesSkipped,
        deletesAlreadyGone,
        bundleSize: sizer.current(),
        dropMeta,
      }
      // the end of the import (of the whole archive: a migrate wave's is a part, its ledger says when all are
      // in): an incremental archive's import that continues this one may rely on its id map
      if (options.files === undefined) yield* journal.append("import.done", "import.done", { total })
      yield* emit({ event: "done", ...summary, chunksDone })
      return summary
    }),
  )
