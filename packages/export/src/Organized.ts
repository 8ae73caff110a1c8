/**
 * [STU3] `organizeOutputBy` output in the archive.
 *
 * Such a manifest (`outputOrganizedBy`, items without `type`) points at files of resource blocks: a
 * `Parameters` header whose `header` parameter references the owner (e.g. `Patient/1`), the owner, the
 * resources that reference it; a block split across files repeats its header (and some servers repeat the
 * owner too). The archive is one resource type per data file, so each such file is downloaded into
 * `staging/organized.<n>.ndjson` (checksum, manifest `count` = every line, with or without the headers as
 * servers differ; resumed like every other download), then distributed here into `data/<Type>.<k>.ndjson[.gz]`, headers dropped, in manifest order.
 * The staged file is deleted once its data files are journaled: the archive format has no place for
 * mixed-type files (import and verify read `files[]` as one type per file), and keeping them would only
 * double the archive's size with data the per-type files already hold.
 *
 * Numbering: organized file n gives `<Type>.<offset + n>` where `offset` is the number of typed output
 * files of that type in the same manifest (normally 0), so names are fixed by the manifest alone and a
 * redone distribution writes the same names. Gaps (a type absent from a file) are fine: readers go by
 * `files[]`.
 *
 * Duplicates: a resource may be in several blocks (the owner after a repeated header, a resource that
 * references two owners, a supporting resource a server repeats per block), but the archive must hold it
 * once (verify compares counts). Keeping every `Type/id` would cost memory per resource, so only the ones
 * that can repeat are remembered: resources of the organizing type, and resources that do not mention
 * exactly one `<Organizer>/<id>` (a resource in one owner's compartment references that owner, and only
 * it). First occurrence wins. A resumed run rebuilds that set from the data files of the files already
 * distributed (the rule depends on the line alone, so it gives the same set).
 *
 * The loop over lines is plain TypeScript over one chunk at a time (the Ndjson stream's chunks), with the
 * writes batched per type per chunk: a per-line Effect would dominate the cost.
 */
import { createHash } from "node:crypto"
import * as NFS from "node:fs"
import * as Path from "node:path"
import { makeDirsSync } from "@ferry/core/Dirs"
import type { FileEntry } from "@ferry/archive/Manifest"
import type { ExportManifest, OutputFile } from "@ferry/core/BulkManifest"
import type { Resource } from "@ferry/core/Ids"
import * as Ndjson from "@ferry/core/Ndjson"
import { Effect, Stream } from "effect"
import { ExportError } from "./ExportError.js"

/** Where organized files wait for their distribution (archive-relative). */
export const STAGING = "staging"

const TYPE_NAME = /^[A-Z][A-Za-z]{1,63}$/

/** Is this output item organized (blocks of several types) rather than one type per file? */
export const isOrganized = (manifest: ExportManifest, file: OutputFile): boolean =>
  manifest.outputOrganizedBy !== undefined || file.type === undefined

/** A short, stable tag of a URL for journal keys (URLs may be capability URLs: never put them in keys). */
export const urlTag = (url: string): string => createHash("sha256").update(url).digest("hex").slice(0, 16)

/** Is this parsed line a block header (`Parameters` with a `header` parameter)? */
export const isHeader = (value: { readonly resourceType: string; readonly [k: string]: unknown }): boolean =>
  value.resourceType === "Parameters" &&
  Array.isArray(value.parameter) &&
  (value.parameter as ReadonlyArray<unknown>).some(
    (p) => typeof p === "object" && p !== null && (p as { name?: unknown }).name === "header",
  )

const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/**
 * The rule for "may appear in more than one block": the organizing type itself, or a line that does not
 * reference exactly one resource of the organizing type.
 */
export const mayRepeat = (organizer: string) => {
  const ref = new RegExp(`(?:^|["/])${escapeRegExp(organizer)}/([A-Za-z0-9\\-.]{1,64})`, "g")
  return (type: string, line: string): boolean => {
    if (type === organizer) return true
    ref.lastIndex = 0
    let first: string | undefined
    for (let m = ref.exec(line); m !== null; m = ref.exec(line)) {
      if (first === undefined) first = m[1]
      else if (m[1] !== first) return true
    }
    return first === undefined
  }
}

export interface DistributeInput {
  /** Absolute path of the staged (downloaded, checked) organized file. */
  readonly staged: string
  /** Archive-relative name for messages. */
  readonly label: string
  /** The organized file's index in the manifest's organized items. */
  readonly index: number
  /** Typed output files per type in the same manifest (numbering offset). */
  readonly offsets: ReadonlyMap<string, number>
  readonly root: string
  readonly gzip: boolean
  /** `outputOrganizedBy` (default `Patient`). */
  readonly organizer: string
  /** Keys (`Type/id`) of repeatable resources already in the archive; updated. */
  readonly seen: Set<string>
  /** Called with every resource kept (e.g. to collect attachment references without reading the files again). */
  readonly onResource?: (type: string, resource: Resource) => void
}

export interface Distributed {
  readonly files: ReadonlyArray<FileEntry>
  /** Header lines dropped. */
  readonly headers: number
  /** Resources dropped because an earlier block (or file) already had them. */
  readonly duplicates: number
}

const pad = (n: number): string => String(n).padStart(3, "0")

/** The archive-relative data file for a type of organized file `index`. */
export const dataPath = (type: string, index: number, offset: number, gzip: boolean): string =>
  `data/${type}.${pad(offset + index)}.ndjson${gzip ? ".gz" : ""}`

const archiveError = (label: string, what: string) => (cause: unknown) =>
  new ExportError({
    reason: "Archive",
    detail: `${label}: could not ${what} (${cause instanceof Error ? cause.message : String(cause)}); check free space and permissions of the archive directory`,
    cause,
  })

const invalid = (label: string, line: number, detail: string) =>
  new ExportError({
    reason: "InvalidFile",
    detail: `${label}:${line}: ${detail}; the server sent an organizeOutputBy file Ferry cannot split by type`,
  })

/**
 * Splits one staged organized file into per-type data files (written as `.part`, fsynced, renamed): headers
 * dropped, repeated resources dropped (see `seen`). Streams: one chunk of lines in memory at a time.
 */
export const distribute = (input: DistributeInput): Effect.Effect<Distributed, ExportError> =>
  Effect.scoped(
    Effect.gen(function* () {
      const repeatable = mayRepeat(input.organizer)
      const writers = new Map<string, { writer: Ndjson.Writer; path: string }>()
      let headers = 0
      let duplicates = 0
      let lineNo = 0
      const writerFor = (type: string) =>
        Effect.gen(function* () {
          const open = writers.get(type)
          if (open !== undefined) return open
          const path = dataPath(type, input.index, input.offsets.get(type) ?? 0, input.gzip)
          const writer = yield* Ndjson.writer(Path.join(input.root, `${path}.part`), {
            gzip: input.gzip,
            label: path,
          }).pipe(Effect.mapError(archiveError(path, "write")))
          const entry = { writer, path }
          writers.set(type, entry)
          return entry
        })
      // a failed distribution leaves no `.part` behind (the archive lock would remove it on the next run anyway)
      yield* Effect.addFinalizer((exit) =>
        exit._tag === "Success"
          ? Effect.void
          : Effect.forEach(
              [...writers.values()],
              (w) =>
                Effect.promise(() =>
                  NFS.promises.rm(Path.join(input.root, `${w.path}.part`), { force: true }),
                ),
              { discard: true },
            ),
      )
      yield* Ndjson.readFileLines(input.staged, { gzip: false, label: input.label }).pipe(
        Stream.mapError(archiveError(input.label, "read the staged file")),
        Stream.runForEachChunk((chunk) =>
          Effect.gen(function* () {
            const byType = new Map<string, Array<string>>()
            for (const text of chunk) {
              lineNo++
              let value: { resourceType?: unknown; id?: unknown; [k: string]: unknown }
              try {
                value = JSON.parse(text) as typeof value
              } catch {
                return yield* invalid(input.label, lineNo, "not valid JSON")
              }
              const type = value.resourceType
              if (typeof type !== "string" || !TYPE_NAME.test(type)) {
                return yield* invalid(input.label, lineNo, "not a resource with a resource type name")
              }
              if (isHeader(value as { resourceType: string })) {
                headers++
                continue
              }
              if (repeatable(type, text)) {
                if (typeof value.id !== "string") {
                  return yield* invalid(input.label, lineNo, `a ${type} without an id`)
                }
                const key = `${type}/${value.id}`
                if (input.seen.has(key)) {
                  duplicates++
                  continue
                }
                input.seen.add(key)
              }
              input.onResource?.(type, value as Resource)
              const list = byType.get(type)
              if (list === undefined) byType.set(type, [text])
              else list.push(text)
            }
            for (const [type, texts] of byType) {
              const w = yield* writerFor(type)
              yield* w.writer.write(texts).pipe(Effect.mapError(archiveError(w.path, "write")))
            }
          }),
        ),
      )
      const files: Array<FileEntry> = []
      for (const [type, w] of [...writers].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
        const result = yield* w.writer.finish.pipe(Effect.mapError(archiveError(w.path, "finish")))
        const final = Path.join(input.root, w.path)
        yield* Effect.tryPromise({
          try: () => NFS.promises.rename(`${final}.part`, final),
          catch: archiveError(w.path, "rename the finished file"),
        })
        files.push({
          type,
          path: w.path,
          count: result.count,
          bytes: result.bytes,
          sha256: result.sha256,
          compression: input.gzip ? "gzip" : "none",
        })
      }
      if (files.length > 0) yield* syncDir(Path.join(input.root, "data"))
      return { files, headers, duplicates }
    }),
  )

const syncDir = (dir: string): Effect.Effect<void, ExportError> =>
  Effect.tryPromise({
    try: async () => {
      const h = await NFS.promises.open(dir, "r")
      try {
        await h.sync()
      } finally {
        await h.close()
      }
    },
    catch: archiveError(dir, "sync the directory"),
  })

/** Adds the repeatable keys of data files an earlier run distributed to `seen` (resume). */
export const remember = (
  root: string,
  files: ReadonlyArray<FileEntry>,
  organizer: string,
  seen: Set<string>,
): Effect.Effect<void, ExportError> => {
  const repeatable = mayRepeat(organizer)
  return Effect.forEach(
    files,
    (f) =>
      Ndjson.readFileLines(Path.join(root, f.path), { gzip: f.compression === "gzip", label: f.path }).pipe(
        Stream.mapError(archiveError(f.path, "read")),
        Stream.runForEach((text) =>
          Effect.try({
            try: () => {
              if (!repeatable(f.type, text)) return
              const id = (JSON.parse(text) as { id?: unknown }).id
              if (typeof id === "string") seen.add(`${f.type}/${id}`)
            },
            // V8's message quotes the line: only its gist goes into the error
            catch: (cause) =>
              archiveError(
                f.path,
                "read a line of",
              )(
                cause instanceof SyntaxError
                  ? new Error(`a line is not JSON: ${Ndjson.jsonErrorText(cause)}`)
                  : cause,
              ),
          }),
        ),
      ),
    { discard: true },
  )
}

/**
 * Creates the staging directory (0700) and fsyncs the archive directory (also when an earlier run made the
 * staging directory and crashed before that fsync): the journal records the files staged in it, and a power
 * loss must not take the directory's entry with them.
 */
export const makeStaging = (root: string): Effect.Effect<void, ExportError> =>
  Effect.tryPromise({
    try: async () => {
      const dir = Path.join(root, STAGING)
      makeDirsSync(dir, 0o700)
      await NFS.promises.chmod(dir, 0o700)
    },
    catch: archiveError(STAGING, "create"),
  }).pipe(Effect.zipRight(syncDir(root)))

/** Removes the staging directory (everything in it is distributed). */
export const removeStaging = (root: string): Effect.Effect<void, ExportError> =>
  Effect.tryPromise({
    try: () => NFS.promises.rm(Path.join(root, STAGING), { recursive: true, force: true }),
    catch: archiveError(STAGING, "remove"),
  })
