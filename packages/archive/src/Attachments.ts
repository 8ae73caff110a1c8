/**
 * Attachment blobs, content-addressed: `attachments/<aa>/<sha256>` (aa = first two hex characters), plus
 * `attachments/index.ndjson` describing them (sha256, sha1 as FHIR `Attachment.hash` writes it, size,
 * contentType, sourceUrls).
 *
 * The index is append-only: a line is added when a blob is new, or when a known blob arrives from another
 * URL. Readers merge lines by sha256 (`readIndex`). A torn last line (crash mid-append) is ignored.
 */
import { createHash, randomUUID } from "node:crypto"
import * as NFS from "node:fs"
import * as Path from "node:path"
import { promisify } from "node:util"
import * as Ndjson from "@ferry/core/Ndjson"
import { Effect, Schema, Stream } from "effect"
import { ArchiveError, ioError } from "./ArchiveError.js"
import * as Fs from "./internal/fs.js"

export const IndexLine = Schema.Struct({
  sha256: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/)),
  /** base64 SHA-1 of the bytes: what FHIR `Attachment.hash` holds. */
  sha1: Schema.String,
  size: Schema.Number,
  contentType: Schema.optional(Schema.String),
  sourceUrls: Schema.Array(Schema.String),
})
export type IndexLine = typeof IndexLine.Type

export interface Meta {
  readonly contentType?: string
  /** Where the bytes were fetched from (recorded in the index). */
  readonly sourceUrl?: string
}

export interface Stored {
  readonly sha256: string
  readonly sha1: string
  readonly size: number
  /** False when an identical blob was already in the archive (nothing new was written). */
  readonly created: boolean
}

const SHA256 = /^[0-9a-f]{64}$/

/** Relative path of a blob inside the archive. */
export const relativePath = (sha256: string): string => `attachments/${sha256.slice(0, 2)}/${sha256}`

const checkHash = (dir: string, sha256: string): Effect.Effect<void, ArchiveError> =>
  SHA256.test(sha256)
    ? Effect.void
    : Effect.fail(
        new ArchiveError({
          reason: "Corrupt",
          path: dir,
          detail: `${JSON.stringify(sha256)} is not a sha256`,
        }),
      )

const indexPath = (dir: string) => Path.join(dir, "attachments", "index.ndjson")

/**
 * A blob store for many blobs at once (the export fetches thousands of small attachments):
 * - `store` reads a blob while hashing (SHA-256, SHA-1) and counting: up to 1 MiB in memory, a bigger one
 *   spilling to a temp file. A blob the archive already has (by sha256) is not written again; a new one is
 *   written to a temp file (0600), fsynced, and renamed to its content address.
 * - `commit` fsyncs the directories of the blobs stored since the last commit, then appends their index
 *   lines in one fsynced write. A blob is in the index only once it is durable, so the index is the record
 *   of finished blobs a resumed run can trust.
 * An index line is written when the blob is new or `meta.sourceUrl` is given.
 */
export interface Store {
  readonly store: <E, R>(
    bytes: Stream.Stream<Uint8Array, E, R>,
    meta?: Meta,
  ) => Effect.Effect<Stored, ArchiveError | E, R>
  /**
   * `store` for bytes already in memory (a small attachment read whole): the same result and the same
   * durability, in one step of plain Node calls instead of a stream and an Effect per write (the export stores
   * tens of thousands of these; measured per-attachment CPU in docs/benchmarks.md).
   */
  readonly storeBytes: (bytes: Uint8Array, meta?: Meta) => Effect.Effect<Stored, ArchiveError>
  /** Make the stored blobs durable and index them; returns how many index lines were written. */
  readonly commit: Effect.Effect<number, ArchiveError>
  /** Blobs stored and not yet committed. */
  readonly pending: Effect.Effect<number>
  /** The index as it was when the store was opened. */
  readonly index: ReadonlyMap<string, IndexLine>
}

const openP = promisify(NFS.open)
const writeP = (fd: number, b: Uint8Array, off: number, len: number) =>
  new Promise<number>((resolve, reject) =>
    NFS.write(fd, b, off, len, null, (e, n) => (e ? reject(e) : resolve(n))),
  )
/** Create exclusively, write-only, every write durable (data and size) when it returns. */
const SYNC_CREATE =
  NFS.constants.O_WRONLY | NFS.constants.O_CREAT | NFS.constants.O_EXCL | NFS.constants.O_DSYNC
const closeP = promisify(NFS.close)

/** Parallel directory fsyncs per commit. */
const SYNC_CONCURRENCY = 16
/** Blobs up to this size are held in memory while they arrive (one write instead of a stream of them). */
const IN_MEMORY = 1024 * 1024

export const store = (dir: string): Effect.Effect<Store, ArchiveError> =>
  Effect.gen(function* () {
    const base = Path.join(dir, "attachments")
    yield* Fs.makeDir(base)
    const index = yield* readIndex(dir)
    const known = new Set(index.keys())
    const dirs = new Set<string>()
    let touched = new Set<string>()
    let lines: Array<IndexLine> = []
    const lock = yield* Effect.makeSemaphore(1)

    const ensureDir = (path: string) =>
      dirs.has(path) ? Effect.void : Effect.tap(Fs.makeDir(path), () => Effect.sync(() => dirs.add(path)))

    const storeOne = <E, R>(
      bytes: Stream.Stream<Uint8Array, E, R>,
      meta: Meta = {},
    ): Effect.Effect<Stored, ArchiveError | E, R> =>
      Effect.gen(function* () {
        const tmp = Path.join(base, `${randomUUID()}.part`)
        const s256 = createHash("sha256")
        const s1 = createHash("sha1")
        let size = 0
        const spill = yield* Fs.spillFile(tmp, IN_MEMORY)
        yield* Stream.runForEach(bytes, (b) =>
          Effect.suspend(() => {
            s256.update(b)
            s1.update(b)
            size += b.length
            return spill.write(b)
          }),
        ).pipe(Effect.tapError(() => spill.discard))
        const sha256 = s256.digest("hex")
        const sha1 = s1.digest("base64")
        const final = Path.join(dir, relativePath(sha256))
        const created = !known.has(sha256)
        if (created) {
          yield* spill.finish
          yield* ensureDir(Path.dirname(final))
          yield* Fs.rename(tmp, final)
          known.add(sha256)
        } else {
          yield* spill.discard
        }
        if (created || meta.sourceUrl !== undefined) {
          const line: IndexLine = {
            sha256,
            sha1,
            size,
            ...(meta.contentType !== undefined ? { contentType: meta.contentType } : {}),
            sourceUrls: meta.sourceUrl !== undefined ? [meta.sourceUrl] : [],
          }
          yield* Effect.sync(() => {
            if (created) touched.add(Path.dirname(final))
            lines.push(line)
          })
        }
        return { sha256, sha1, size, created }
      })

    /** Blobs being written by `storeBytes`, by sha256: an identical blob arriving meanwhile waits for it. */
    const writing = new Map<string, Promise<void>>()

    const writeBlob = async (sha256: string, bytes: Uint8Array): Promise<void> => {
      const final = Path.join(dir, relativePath(sha256))
      const parent = Path.dirname(final)
      if (!dirs.has(parent)) {
        await NFS.promises.mkdir(parent, { recursive: true, mode: Fs.DIR_MODE })
        await NFS.promises.chmod(parent, Fs.DIR_MODE)
        dirs.add(parent)
      }
      const tmp = Path.join(base, `${randomUUID()}.part`)
      // O_DSYNC: each write returns once the bytes (and the size) are durable, as an fsync would make them,
      // without a separate fsync call through the thread pool
      const fd = await openP(tmp, SYNC_CREATE, Fs.FILE_MODE)
      try {
        let off = 0
        while (off < bytes.length) off += await writeP(fd, bytes, off, bytes.length - off)
      } catch (e) {
        await closeP(fd).catch(() => undefined)
        await NFS.promises.rm(tmp, { force: true }).catch(() => undefined)
        throw e
      }
      await closeP(fd)
      await NFS.promises.rename(tmp, final)
      touched.add(parent)
    }

    const storeBytes = (bytes: Uint8Array, meta: Meta = {}): Effect.Effect<Stored, ArchiveError> =>
      Effect.tryPromise({
        try: async (): Promise<Stored> => {
          const sha256 = createHash("sha256").update(bytes).digest("hex")
          const sha1 = createHash("sha1").update(bytes).digest("base64")
          const created = !known.has(sha256)
          if (created) {
            known.add(sha256)
            const written = writeBlob(sha256, bytes)
            writing.set(sha256, written)
            try {
              await written
            } catch (e) {
              known.delete(sha256)
              throw e
            } finally {
              writing.delete(sha256)
            }
          } else {
            // the same bytes from another URL, perhaps still being written: index it once they are on disk
            const pending = writing.get(sha256)
            if (pending !== undefined) await pending
          }
          if (created || meta.sourceUrl !== undefined) {
            lines.push({
              sha256,
              sha1,
              size: bytes.length,
              ...(meta.contentType !== undefined ? { contentType: meta.contentType } : {}),
              sourceUrls: meta.sourceUrl !== undefined ? [meta.sourceUrl] : [],
            })
          }
          return { sha256, sha1, size: bytes.length, created }
        },
        catch: ioError(base),
      })

    const commit = lock.withPermits(1)(
      Effect.gen(function* () {
        const toSync = touched
        const toIndex = lines
        touched = new Set()
        lines = []
        if (toIndex.length === 0) return 0
        yield* Effect.forEach(toSync, Fs.syncDir, { concurrency: SYNC_CONCURRENCY, discard: true })
        yield* Fs.appendSync(indexPath(dir), toIndex.map((l) => `${JSON.stringify(l)}\n`).join(""))
        return toIndex.length
      }),
    )

    return {
      store: storeOne,
      storeBytes,
      commit,
      pending: Effect.sync(() => lines.length),
      index,
    } satisfies Store
  })

/**
 * Store one blob durably (see `Store`): stored, fsynced, indexed before this returns.
 */
export const put = <E, R>(
  dir: string,
  bytes: Stream.Stream<Uint8Array, E, R>,
  meta: Meta = {},
): Effect.Effect<Stored, ArchiveError | E, R> =>
  Effect.gen(function* () {
    const s = yield* store(dir)
    const stored = yield* s.store(bytes, meta)
    yield* s.commit
    return stored
  })

/** Is this blob in the archive? */
export const has = (dir: string, sha256: string): Effect.Effect<boolean, ArchiveError> =>
  Effect.zipRight(checkHash(dir, sha256), Fs.exists(Path.join(dir, relativePath(sha256))))

/** Stream a blob's bytes. */
export const read = (dir: string, sha256: string): Stream.Stream<Uint8Array, ArchiveError> =>
  Stream.unwrap(
    Effect.map(checkHash(dir, sha256), () =>
      Ndjson.fileBytes(Path.join(dir, relativePath(sha256)), {
        gzip: false,
        label: relativePath(sha256),
      }).pipe(
        Stream.mapError((e) => new ArchiveError({ reason: "Io", path: e.file, detail: e.detail, cause: e })),
      ),
    ),
  )

const decodeLine = Schema.decodeUnknownEither(Schema.parseJson(IndexLine))

/** The index, merged by sha256 (sourceUrls unioned, the last contentType wins). Missing index → empty. */
export const readIndex = (dir: string): Effect.Effect<ReadonlyMap<string, IndexLine>, ArchiveError> =>
  Effect.gen(function* () {
    const path = indexPath(dir)
    const out = new Map<string, IndexLine>()
    if (!(yield* Fs.exists(path))) return out
    yield* Ndjson.readFileSplit(path, { label: "attachments/index.ndjson" }).pipe(
      Stream.mapError((e) => new ArchiveError({ reason: "Io", path, detail: e.detail, cause: e })),
      Stream.runForEach((l) => {
        const d = decodeLine(l.text)
        if (d._tag === "Left") {
          if (!l.terminated) return Effect.void // torn tail of a crashed append
          return Effect.fail(
            new ArchiveError({
              reason: "Corrupt",
              path,
              line: l.line,
              detail: "not a valid attachment index line",
            }),
          )
        }
        const prev = out.get(d.right.sha256)
        out.set(
          d.right.sha256,
          prev === undefined
            ? d.right
            : {
                ...prev,
                ...(d.right.contentType !== undefined ? { contentType: d.right.contentType } : {}),
                sourceUrls: [...new Set([...prev.sourceUrls, ...d.right.sourceUrls])],
              },
        )
        return Effect.void
      }),
    )
    return out
  })

/** Totals over the index, for the manifest's `attachments` field. */
export const totals = (dir: string): Effect.Effect<{ count: number; bytes: number }, ArchiveError> =>
  Effect.map(readIndex(dir), (index) => {
    let bytes = 0
    for (const l of index.values()) bytes += l.size
    return { count: index.size, bytes }
  })
