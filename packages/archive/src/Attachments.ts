/**
 * Attachment blobs, content-addressed: `attachments/<aa>/<sha256>` (aa = first two hex characters), plus
 * `attachments/index.ndjson` describing them (sha256, sha1 as FHIR `Attachment.hash` writes it, size,
 * contentType, sourceUrls). A small blob (up to `PACK_MAX`, stored from memory) is not a file of its own but
 * a slice of a pack file, `attachments/packs/<nnnnnn>.pack`, that its index line names (`pack`, `offset`):
 * creating and fsyncing one file per blob cost the export more than fetching it (thousands of clinical
 * notes of a few hundred bytes; docs/benchmarks.md). Each store writes a pack of its own, never appended to
 * by a later run: bytes a crash left after the last commit are named by no index line.
 *
 * The index is append-only: a line is added when a blob is new, or when a known blob arrives from another
 * URL. Readers merge lines by sha256 (`readIndex`). A torn last line (no newline: a crash mid-append, never
 * acknowledged) is ignored by readers and cut off when a `store` opens the index, so the next append starts a
 * line of its own instead of running on from the fragment.
 */
import { createHash, hash, randomUUID } from "node:crypto"
import * as NFS from "node:fs"
import * as Path from "node:path"
import { promisify } from "node:util"
import { makeDirsSync } from "@ferry/core/Dirs"
import { DigestSet, digest16 } from "@ferry/core/DigestSet"
import * as Ndjson from "@ferry/core/Ndjson"
import { Effect, Schema, type Scope, Stream } from "effect"
import { ArchiveError, ioError } from "./ArchiveError.js"
import * as Fs from "./internal/fs.js"

export const IndexLine = Schema.Struct({
  sha256: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/)),
  /** base64 SHA-1 of the bytes: what FHIR `Attachment.hash` holds. */
  sha1: Schema.String,
  size: Schema.Number.pipe(Schema.int(), Schema.nonNegative()),
  contentType: Schema.optional(Schema.String),
  sourceUrls: Schema.Array(Schema.String),
  /** The pack file (`attachments/packs/<pack>`) holding the blob at `offset`; absent: a file of its own. */
  pack: Schema.optional(Schema.String.pipe(Schema.pattern(/^\d{6}\.pack$/))),
  offset: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.nonNegative())),
})
export type IndexLine = typeof IndexLine.Type

/** Where a blob is: its own file, or `size` bytes at `offset` of a pack. */
export type Location = Pick<IndexLine, "sha256" | "size" | "pack" | "offset">

/** Blobs up to this size, stored from memory (`Store.storeBytes`), go into a pack file. */
export const PACK_MAX = 64 * 1024
/** A pack that reached this size is closed at the next commit (the next blob starts a new one). */
const PACK_ROLL = 256 * 1024 * 1024
/** Small blobs are written to their pack in pieces of up to this size (at least `PACK_MAX`). */
const PACK_BUFFER = 256 * 1024
const PACK_NAME = /^\d{6}\.pack$/
/** Relative path of a pack file inside the archive. */
export const packPath = (pack: string): string => `attachments/packs/${pack}`

export interface Meta {
  readonly contentType?: string
  /** Where the bytes were fetched from (recorded in the index). */
  readonly sourceUrl?: string
  /**
   * What the bytes must be (an Attachment's `size`, and `hash`: base64 SHA-1). Bytes that are not are neither
   * kept nor indexed (`Stored.matches` false): the index records only URLs whose blob is what the resource
   * says, so a resumed run that finds a URL there can skip it.
   */
  readonly expected?: { readonly size?: number; readonly sha1?: string }
}

export interface Stored {
  readonly sha256: string
  readonly sha1: string
  readonly size: number
  /** False when an identical blob was already in the archive (nothing new was written). */
  readonly created: boolean
  /** False when the bytes are not what `Meta.expected` says (then nothing was written or indexed). */
  readonly matches: boolean
}

const matchesExpected = (meta: Meta, size: number, sha1: string): boolean =>
  (meta.expected?.size === undefined || meta.expected.size === size) &&
  (meta.expected?.sha1 === undefined || meta.expected.sha1 === sha1)

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
 * - `storeBytes` (a blob already in memory) writes it straight to its content address at once (truncating
 *   what a crashed run may have left there), and leaves the fsync to the next `commit` (the file stays open
 *   until then).
 * - `commit` fsyncs the blobs `storeBytes` wrote since the last commit and the directories of every blob
 *   stored since then (and `attachments/` itself when one of those directories may be new, or the index is),
 *   then appends their index lines in one fsynced write. A blob is in the index only once
 *   it is durable, so the index is the record of finished blobs a resumed run can trust; a blob file not in
 *   the index (a crash before its commit) is written again by the next run that meets it.
 * An index line is written when the blob is new or `meta.sourceUrl` is given.
 */
export interface Store {
  readonly store: <E, R>(
    bytes: Stream.Stream<Uint8Array, E, R>,
    meta?: Meta,
  ) => Effect.Effect<Stored, ArchiveError | E, R>
  /**
   * `store` for bytes already in memory (a small attachment read whole): the same result, durable at the next
   * `commit`, written with synchronous calls (a few tens of µs for a small blob) instead of a stream, an
   * Effect per write and a round trip through the thread pool per file operation (the export stores tens of
   * thousands of these; measured per-attachment CPU in docs/benchmarks.md).
   */
  readonly storeBytes: (bytes: Uint8Array, meta?: Meta) => Effect.Effect<Stored, ArchiveError>
  /**
   * `storeBytes` in the caller's synchronous step (throws the `ArchiveError`): what the caller checked before
   * (is this URL stored yet?) still holds when it is stored.
   */
  readonly storeBytesNow: (bytes: Uint8Array, meta?: Meta) => Stored
  /** Make the stored blobs durable and index them; returns how many index lines were written. */
  readonly commit: Effect.Effect<number, ArchiveError>
  /** Blobs stored and not yet committed. */
  readonly pending: Effect.Effect<number>
  /**
   * The source URLs of the blobs in the store (`digest16` of each): those the index held when the store was
   * opened and every `meta.sourceUrl` stored since. A set outside the JS heap: the store lives as long as the
   * export, and an export meets tens of thousands of attachments.
   */
  readonly storedUrls: DigestSet
  /**
   * Whether the blob stored for `url` (one of `storedUrls`) has the `size` and SHA-1 (base64, as FHIR's
   * `Attachment.hash`) given; an unset field is not checked. Another Attachment pointing at a URL already in
   * the store is checked against it this way, without reading the blob.
   */
  readonly matchesStored: (
    url: string,
    expected: { readonly size?: number; readonly sha1?: string },
  ) => boolean
}

/** A stored URL's size and SHA-1, as members of one digest set (`Store.matchesStored`). */
const sizeFact = (url: string, size: number): Uint8Array => digest16(`size\u0000${size}\u0000${url}`)
const sha1Fact = (url: string, sha1: string): Uint8Array => digest16(`sha1\u0000${sha1}\u0000${url}`)

/** A new blob file at its content address, write-only (made durable by `commit`: fsync of the descriptor). */
const CREATE = NFS.constants.O_WRONLY | NFS.constants.O_CREAT | NFS.constants.O_EXCL
/** The same name left by a run that crashed before its commit: truncated, never through a symlink. */
const REWRITE = NFS.constants.O_WRONLY | NFS.constants.O_TRUNC | NFS.constants.O_NOFOLLOW

/** Opens a blob file to write: created (0600), or an unindexed leftover truncated and set to 0600. */
const openBlob = (path: string): number => {
  try {
    return NFS.openSync(path, CREATE, Fs.FILE_MODE)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e
  }
  const fd = NFS.openSync(path, REWRITE)
  try {
    NFS.fchmodSync(fd, Fs.FILE_MODE)
  } catch (e) {
    NFS.closeSync(fd)
    throw e
  }
  return fd
}
const fsyncP = promisify(NFS.fsync)

/** Parallel directory fsyncs per commit. */
const SYNC_CONCURRENCY = 16
/** Blobs up to this size are held in memory while they arrive (one write instead of a stream of them). */
const IN_MEMORY = 1024 * 1024

export const store = (dir: string): Effect.Effect<Store, ArchiveError, Scope.Scope> =>
  Effect.gen(function* () {
    const base = Path.join(dir, "attachments")
    yield* Fs.makeDir(base)
    // what a resumed run already has: blobs by sha256, and the URLs they came from (digest sets, not the
    // index's objects: the store lives as long as the export)
    const known = new DigestSet(32)
    const storedUrls = new DigestSet(16)
    const facts = new DigestSet(16)
    /** `url` is stored, as a blob of `size` bytes with this SHA-1. */
    const rememberUrl = (url: string, size: number, sha1: string): void => {
      storedUrls.add(digest16(url))
      facts.add(sizeFact(url, size))
      facts.add(sha1Fact(url, sha1))
    }
    const matchesStored: Store["matchesStored"] = (url, expected) =>
      (expected.size === undefined || facts.has(sizeFact(url, expected.size))) &&
      (expected.sha1 === undefined || facts.has(sha1Fact(url, expected.sha1)))
    const index = indexPath(dir)
    const torn = yield* forEachIndexLine(dir, leanLine, (line) => {
      known.addHex(line.sha256)
      for (const url of line.sourceUrls) rememberUrl(url, line.size, line.sha1)
    })
    if (torn !== undefined) {
      // the next commit appends: glued to the fragment, its first line would be invalid, and every later read
      // of the index would call the archive damaged
      yield* Effect.logWarning(
        "attachment index had a torn last line (crash mid-write); it was ignored and removed",
      ).pipe(Effect.annotateLogs({ index }))
      yield* Fs.truncate(index, torn)
      yield* Fs.syncFile(index)
    }
    /**
     * The index's entry in `attachments/` is fsynced by this store's first append (the index may be new, or
     * made by a run that crashed before that fsync).
     */
    let indexSynced = false
    const dirs = new Set<string>()
    /** A blob directory was met for the first time since the last commit (it may be new in `attachments/`). */
    let newDirs = false
    let touched = new Set<string>()
    let lines: Array<IndexLine> = []
    const lock = yield* Effect.makeSemaphore(1)

    /** The pack this store appends its small blobs to (opened at the first one), and whether it has bytes to fsync. */
    let pack: { readonly name: string; readonly fd: number; offset: number; unsynced: boolean } | undefined
    /** A pack file was created since the last commit: its entry in `packs/` is fsynced before the index names it. */
    let newPack = false
    const packs = Path.join(base, "packs")
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        // bytes not committed are named by no index line: only closed
        if (pack !== undefined) Fs.closeQuietly(pack.fd)
        pack = undefined
      }),
    )
    /** A new pack file, numbered after those in `packs/` (a pack is never appended to by another store). */
    const openPack = () => {
      if (!dirs.has(packs)) {
        makeDirsSync(packs, Fs.DIR_MODE)
        NFS.chmodSync(packs, Fs.DIR_MODE)
        dirs.add(packs)
        newDirs = true
      }
      let n = 1
      for (const name of NFS.readdirSync(packs))
        if (PACK_NAME.test(name)) n = Math.max(n, Number(name.slice(0, 6)) + 1)
      for (;;) {
        const name = `${String(n).padStart(6, "0")}.pack`
        try {
          const fd = NFS.openSync(Path.join(packs, name), CREATE, Fs.FILE_MODE)
          newPack = true
          return { name, fd, offset: 0, unsynced: false }
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e
          n++
        }
      }
    }
    /**
     * The pack's last `buffered` bytes, not written yet: small blobs are gathered into writes of up to
     * `PACK_BUFFER` (one `write` per blob was ≈ 0.5 s of a 43k-attachment export's main thread). Written out by
     * `commit` before its fsync, and by a blob that would not fit; bytes left at the scope's end were never
     * committed, so no index line names them.
     */
    let buffer: Buffer | undefined
    let buffered = 0
    /** Writes the buffered bytes to the pack (synchronously: nothing else touches the pack meanwhile). */
    const flushPack = (): void => {
      if (pack === undefined || buffer === undefined || buffered === 0) return
      const at = pack.offset - buffered
      let off = 0
      while (off < buffered) off += NFS.writeSync(pack.fd, buffer, off, buffered - off, at + off)
      buffered = 0
      // (set when bytes reach the file, not when they are buffered: a blob buffered while a commit waits on its
      // fsyncs is written by the next commit, which must then fsync the pack again)
      pack.unsynced = true
    }
    /** `flushPack`; what it threw, if it did (the buffered bytes stay, to be written again). */
    const flushFailure = (): unknown => {
      try {
        flushPack()
        return undefined
      } catch (e) {
        return e
      }
    }
    /** Appends a small blob to the pack: where it is (written at the next commit, and durable then). */
    const appendToPack = (bytes: Uint8Array): { readonly pack: string; readonly offset: number } => {
      pack ??= openPack()
      const at = pack.offset
      if (buffered + bytes.length > PACK_BUFFER) flushPack()
      buffer ??= Buffer.allocUnsafeSlow(PACK_BUFFER)
      buffer.set(bytes, buffered)
      buffered += bytes.length
      pack.offset += bytes.length
      return { pack: pack.name, offset: at }
    }

    const ensureDir = (path: string) =>
      dirs.has(path)
        ? Effect.void
        : Effect.tap(Fs.makeDir(path), () =>
            Effect.sync(() => {
              dirs.add(path)
              newDirs = true
            }),
          )

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
        ).pipe(Effect.onError(() => spill.discard))
        const sha256 = s256.digest("hex")
        const sha1 = s1.digest("base64")
        if (!matchesExpected(meta, size, sha1)) {
          yield* spill.discard
          return { sha256, sha1, size, created: false, matches: false }
        }
        const final = Path.join(dir, relativePath(sha256))
        const created = !known.hasHex(sha256)
        if (created) {
          yield* spill.finish
          yield* ensureDir(Path.dirname(final))
          yield* Fs.rename(tmp, final)
          known.addHex(sha256)
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
            if (meta.sourceUrl !== undefined) rememberUrl(meta.sourceUrl, size, sha1)
          })
        }
        return { sha256, sha1, size, created, matches: true }
      })

    /** Blob files `storeBytes` wrote since the last commit, still open for `commit`'s fsync. */
    let unsynced: Array<number> = []
    // Blobs never committed (the run failed or was interrupted first) are not in the index, so nothing
    // trusts them and the next run writes them again: their descriptors are only closed. A failing close
    // has nothing left to report to (the scope is closing on an earlier outcome).
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const fd of unsynced) Fs.closeQuietly(fd)
        unsynced = []
      }),
    )

    /**
     * Writes a new blob straight to its content address; durable at the next commit. No temp file and rename
     * (at 43k attachments those were ≈ 6 s of an export's main thread): the index is what says a blob is
     * there, and it lists a blob only after `commit` has fsynced it, so a file a crash left half written is
     * unknown to every reader and is written again (truncated) by the next run that meets it. (Only blobs
     * above `PACK_MAX`: the others go into the pack.)
     */
    const writeBlob = (sha256: string, bytes: Uint8Array): void => {
      const final = Path.join(dir, relativePath(sha256))
      const parent = Path.dirname(final)
      if (!dirs.has(parent)) {
        makeDirsSync(parent, Fs.DIR_MODE)
        NFS.chmodSync(parent, Fs.DIR_MODE)
        dirs.add(parent)
        newDirs = true
      }
      const fd = openBlob(final)
      try {
        let off = 0
        while (off < bytes.length) off += NFS.writeSync(fd, bytes, off, bytes.length - off)
      } catch (e) {
        NFS.closeSync(fd)
        throw e
      }
      unsynced.push(fd)
      touched.add(parent)
    }

    const storeBytesNow = (bytes: Uint8Array, meta: Meta = {}): Stored => {
      try {
        return storeInMemory(bytes, meta)
      } catch (e) {
        throw ioError(base)(e)
      }
    }
    const storeBytes = (bytes: Uint8Array, meta: Meta = {}): Effect.Effect<Stored, ArchiveError> =>
      Effect.try({ try: () => storeInMemory(bytes, meta), catch: ioError(base) })
    /** `storeBytes`' work; throws what the file system throws. */
    const storeInMemory = (bytes: Uint8Array, meta: Meta): Stored => {
      // (one-shot digests: no Hash object, and its native context, per blob)
      const sha256 = hash("sha256", bytes, "hex")
      const sha1 = hash("sha1", bytes, "base64")
      if (!matchesExpected(meta, bytes.length, sha1))
        return { sha256, sha1, size: bytes.length, created: false, matches: false }
      const created = !known.hasHex(sha256)
      let packed: { readonly pack: string; readonly offset: number } | undefined
      if (created) {
        if (bytes.length <= PACK_MAX) packed = appendToPack(bytes)
        else writeBlob(sha256, bytes)
        known.addHex(sha256)
      }
      if (created || meta.sourceUrl !== undefined) {
        lines.push({
          sha256,
          sha1,
          size: bytes.length,
          ...(meta.contentType !== undefined ? { contentType: meta.contentType } : {}),
          sourceUrls: meta.sourceUrl !== undefined ? [meta.sourceUrl] : [],
          ...packed,
        })
        if (meta.sourceUrl !== undefined) rememberUrl(meta.sourceUrl, bytes.length, sha1)
      }
      return { sha256, sha1, size: bytes.length, created, matches: true }
    }

    /** fsyncs (SYNC_CONCURRENCY at a time) and closes the blob files `storeBytes` left open. */
    const syncBlobs = (fds: ReadonlyArray<number>) =>
      Effect.tryPromise({
        try: async () => {
          let next = 0
          let failure: { readonly error: unknown } | undefined
          const worker = async () => {
            while (failure === undefined && next < fds.length) {
              await fsyncP(fds[next++]!).catch((error: unknown) => {
                failure ??= { error }
              })
            }
          }
          // every fsync has returned before any descriptor is closed (a closed number may be reused at once)
          await Promise.all(Array.from({ length: Math.min(SYNC_CONCURRENCY, fds.length) }, worker))
          for (const fd of fds) {
            try {
              NFS.closeSync(fd)
            } catch (error) {
              // every descriptor is closed whatever one of them says; the first failure is reported
              failure ??= { error }
            }
          }
          if (failure !== undefined) throw failure.error
        },
        catch: ioError(base),
      })

    // Uninterruptible from taking the pending state to the index append: interrupted in between (a download
    // failing stops its attachment batch), the blobs' lines would be lost while `known` and `storedUrls` keep
    // them, and a later line for the same bytes from another URL would name a blob no line places.
    const commit = lock.withPermits(1)(
      Effect.uninterruptible(
        Effect.gen(function* () {
          // in the same synchronous stretch as taking the lines below: every line taken names written bytes
          const unwritten = flushFailure()
          if (unwritten !== undefined) return yield* Effect.fail(ioError(packs)(unwritten))
          const toSync = touched
          const toIndex = lines
          const blobs = unsynced
          const syncBase = newDirs
          const syncPacks = newPack
          // every blob in this pack so far has its line in `toIndex` or an earlier commit: a full pack is left
          // for the next blob to start a new one, and closed once fsynced
          const inPack = pack
          const full = inPack !== undefined && inPack.offset >= PACK_ROLL
          if (full) pack = undefined
          touched = new Set()
          lines = []
          unsynced = []
          newDirs = false
          newPack = false
          if (blobs.length > 0) yield* syncBlobs(blobs)
          if (inPack !== undefined && (inPack.unsynced || full)) {
            inPack.unsynced = false
            yield* Effect.tryPromise({ try: () => fsyncP(inPack.fd), catch: ioError(packs) }).pipe(
              Effect.ensuring(full ? Effect.sync(() => Fs.closeQuietly(inPack.fd)) : Effect.void),
            )
          }
          if (syncPacks) yield* Fs.syncDir(packs)
          if (toIndex.length === 0) return 0
          yield* Effect.forEach(toSync, Fs.syncDir, { concurrency: SYNC_CONCURRENCY, discard: true })
          // a blob directory made since the last commit is an entry of `attachments/`: durable before the index
          // names a blob in it
          if (syncBase) yield* Fs.syncDir(base)
          yield* Fs.appendSync(index, toIndex.map((l) => `${JSON.stringify(l)}\n`).join(""))
          if (!indexSynced) {
            yield* Fs.syncDir(base)
            indexSynced = true
          }
          return toIndex.length
        }),
      ),
    )

    return {
      store: storeOne,
      storeBytes,
      storeBytesNow,
      commit,
      pending: Effect.sync(() => lines.length),
      storedUrls,
      matchesStored,
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
  Effect.scoped(
    Effect.gen(function* () {
      const s = yield* store(dir)
      const stored = yield* s.store(bytes, meta)
      yield* s.commit
      return stored
    }),
  )

/** Where the index says a blob is (a blob in no pack, or not in the index: its own file). */
const locate = (dir: string, sha256: string): Effect.Effect<Location, ArchiveError> =>
  Effect.gen(function* () {
    if (yield* Fs.exists(Path.join(dir, relativePath(sha256)))) return { sha256, size: 0 }
    return (yield* readIndex(dir)).get(sha256) ?? { sha256, size: 0 }
  })

/** Is this blob in the archive? */
export const has = (dir: string, sha256: string): Effect.Effect<boolean, ArchiveError> =>
  Effect.zipRight(
    checkHash(dir, sha256),
    Effect.flatMap(locate(dir, sha256), (at) =>
      Fs.exists(Path.join(dir, at.pack === undefined ? relativePath(sha256) : packPath(at.pack))),
    ),
  )

/** The `size` bytes at `offset` of a pack. */
const packBytes = (
  dir: string,
  at: Location & { readonly pack: string },
): Stream.Stream<Uint8Array, ArchiveError> => {
  const rel = packPath(at.pack)
  if (at.size === 0) return Stream.empty
  return Ndjson.readableStream(
    () =>
      NFS.createReadStream(Path.join(dir, rel), {
        start: at.offset ?? 0,
        end: (at.offset ?? 0) + at.size - 1,
        highWaterMark: 64 * 1024,
      }),
    (cause) =>
      // a pack the index names that is not there: the archive lost it (not a disk or permission problem)
      Fs.isNodeError(cause, "ENOENT")
        ? new ArchiveError({
            reason: "Corrupt",
            path: rel,
            detail: "the pack holding this blob is missing",
            cause,
          })
        : new ArchiveError({
            reason: "Io",
            path: rel,
            detail: `could not read the pack (${cause instanceof Error ? cause.message : String(cause)})`,
            cause,
          }),
  )
}

/**
 * Stream a blob's bytes, checked against its sha256: from its own file or from its pack (where `blob`, an
 * index line, says; given a sha256 alone, the index is read to find it).
 */
/** Whether nothing is at `path` (ENOENT; a folder that cannot be searched is not "missing"). */
const isMissing = (path: string): boolean => {
  try {
    NFS.lstatSync(path)
    return false
  } catch (e) {
    return Fs.isNodeError(e, "ENOENT")
  }
}

export const read = (dir: string, blob: string | Location): Stream.Stream<Uint8Array, ArchiveError> =>
  Stream.unwrap(
    Effect.gen(function* () {
      const sha256 = typeof blob === "string" ? blob : blob.sha256
      yield* checkHash(dir, sha256)
      const at = typeof blob === "string" ? yield* locate(dir, sha256) : blob
      // the bytes are the blob's name: a file (or slice) that does not hash to it fails the read at its end
      const hash = createHash("sha256")
      const rel = at.pack === undefined ? relativePath(sha256) : `${packPath(at.pack)}@${at.offset ?? 0}`
      const check = Effect.suspend(() => {
        const actual = hash.digest("hex")
        return actual === sha256
          ? Effect.void
          : Effect.fail(
              new ArchiveError({
                reason: "Corrupt",
                path: Path.join(dir, rel),
                detail: `the blob does not hold the bytes its name says (sha256 ${actual.slice(0, 12)}…)`,
              }),
            )
      })
      const bytes =
        at.pack === undefined
          ? Ndjson.fileBytes(Path.join(dir, rel), { gzip: false, label: rel }).pipe(
              Stream.mapError((e) =>
                // a blob the index names that is not there: the archive lost it (not a disk or permission problem)
                !isMissing(Path.join(dir, rel))
                  ? new ArchiveError({ reason: "Io", path: e.file, detail: e.detail, cause: e })
                  : new ArchiveError({
                      reason: "Corrupt",
                      path: rel,
                      detail: "the blob is missing (the attachment index names it)",
                      cause: e,
                    }),
              ),
            )
          : packBytes(dir, { ...at, pack: at.pack })
      return bytes.pipe(
        Stream.tap((b) => Effect.sync(() => hash.update(b))),
        Stream.concat(Stream.drain(Stream.fromEffect(check))),
      )
    }),
  )

/** The index is read this many bytes at a time (one buffer, reused). */
const INDEX_PIECE = 1024 * 1024

/**
 * Every line of the index, as `decode` reads it (undefined: not a valid line), to `onLine`. A torn last line
 * (no newline: a crashed append, never acknowledged, even when it parses) is skipped, and its byte offset
 * returned (undefined when there is none: where a writer cuts the index); any other invalid line fails the
 * read. A missing index has no lines.
 *
 * Read through one reused buffer, each line decoded and handed on before the next is cut out, the event loop
 * given back after each piece: no line outlives its turn. (Read as a stream, a chunk of ≈ 4,000 line objects
 * at a time lived long enough to reach V8's old generation: the end of a 1M export, which reads the index
 * twice, was the peak of its resident memory.)
 */
const forEachIndexLine = <A>(
  dir: string,
  decode: (text: string) => A | undefined,
  onLine: (a: A) => void,
): Effect.Effect<number | undefined, ArchiveError> =>
  Effect.gen(function* () {
    const path = indexPath(dir)
    if (!(yield* Fs.exists(path))) return undefined
    return yield* Effect.acquireUseRelease(
      Effect.try({ try: () => NFS.openSync(path, "r"), catch: ioError(path) }),
      (fd) =>
        Effect.gen(function* () {
          const piece = Buffer.allocUnsafe(INDEX_PIECE)
          let torn: number | undefined
          /** The first line `decode` refused. */
          let bad: number | undefined
          const lines = Ndjson.lineParser(
            { file: "attachments/index.ndjson" },
            (line, text, _b, terminated, at) => {
              if (bad !== undefined) return
              // the torn tail of a crashed append (blank or not: the next append must not run on from it)
              if (!terminated) torn = at
              else if (text.trim().length > 0) {
                const a = decode(text)
                if (a === undefined) bad = line
                else onLine(a)
              }
            },
          )
          const split = (f: () => void) =>
            Effect.try({
              try: f,
              catch: (e) =>
                e instanceof Ndjson.NdjsonError
                  ? new ArchiveError({ reason: "Io", path, detail: e.detail, cause: e })
                  : ioError(path)(e),
            })
          for (let at = 0; ; ) {
            const n = yield* Effect.try({
              try: () => NFS.readSync(fd, piece, 0, INDEX_PIECE, at),
              catch: ioError(path),
            })
            if (n === 0) break
            yield* split(() => lines.push(piece.subarray(0, n)))
            if (bad !== undefined) break
            at += n
            yield* Effect.yieldNow()
          }
          if (bad === undefined) yield* split(lines.end)
          if (bad !== undefined)
            return yield* new ArchiveError({
              reason: "Corrupt",
              path,
              line: bad,
              detail: "not a valid attachment index line",
            })
          return torn
        }),
      (fd) => Effect.sync(() => NFS.closeSync(fd)),
    )
  })

/** The index, merged by sha256 (sourceUrls unioned, the last contentType wins). Missing index → empty. */
export const readIndex = (dir: string): Effect.Effect<ReadonlyMap<string, IndexLine>, ArchiveError> =>
  Effect.suspend(() => {
    const out = new Map<string, IndexLine>()
    return forEachIndexLine(dir, leanLine, (line) => {
      const prev = out.get(line.sha256)
      out.set(
        line.sha256,
        prev === undefined
          ? line
          : {
              ...prev,
              ...(line.contentType !== undefined ? { contentType: line.contentType } : {}),
              sourceUrls: [...new Set([...prev.sourceUrls, ...line.sourceUrls])],
              ...(prev.pack === undefined && line.pack !== undefined
                ? { pack: line.pack, offset: line.offset ?? 0 }
                : {}),
            },
      )
    }).pipe(Effect.as(out as ReadonlyMap<string, IndexLine>))
  })

/**
 * An index line checked field by field after `JSON.parse` (undefined: not a valid line): what `IndexLine`'s
 * schema checks, ≈ 2× faster than decoding through it (a migration reads the index once per import wave),
 * keeping only the schema's fields.
 */
const leanLine = (text: string): IndexLine | undefined => {
  let v: Partial<Record<keyof IndexLine, unknown>> | null
  try {
    v = JSON.parse(text) as typeof v
  } catch {
    return undefined
  }
  if (typeof v !== "object" || v === null) return undefined
  const { sha256, sha1, size, contentType, sourceUrls, pack, offset } = v
  return typeof sha256 === "string" &&
    SHA256.test(sha256) &&
    typeof sha1 === "string" &&
    Number.isSafeInteger(size) &&
    (size as number) >= 0 &&
    (contentType === undefined || typeof contentType === "string") &&
    Array.isArray(sourceUrls) &&
    sourceUrls.every((u) => typeof u === "string") &&
    // a pack is named as the store names them (never a path), with the blob's place in it
    (pack === undefined
      ? offset === undefined
      : typeof pack === "string" &&
        PACK_NAME.test(pack) &&
        Number.isSafeInteger(offset) &&
        (offset as number) >= 0)
    ? {
        sha256,
        sha1,
        size: size as number,
        ...(contentType !== undefined ? { contentType } : {}),
        sourceUrls,
        ...(typeof pack === "string" ? { pack, offset: offset as number } : {}),
      }
    : undefined
}

/** The distinct blobs the index names, in sha256 order, with their total size. */
export interface BlobTable {
  readonly count: number
  readonly bytes: number
  /** The sha256 (hex) of the `i`-th blob in sha256 order. */
  readonly sha256At: (i: number) => string
  /** Whether the `i`-th blob is in a pack (else it is a file of its own). */
  readonly packedAt: (i: number) => boolean
  /** The packs the index names, in name order. */
  readonly packs: ReadonlyArray<string>
}

/**
 * The blobs the index names (`BlobTable`): what the end of an export needs (totals, checksums) and what a
 * check of the checksums compares with, without the index in memory. The digests sit in one typed array
 * (32 bytes each) sorted through an index array: as a Map of hex strings, or `readIndex`'s objects, the table
 * of a 1M export (43k blobs) was the peak of its resident memory, in its last second.
 */
export const blobTable = (dir: string): Effect.Effect<BlobTable, ArchiveError> =>
  Effect.suspend(() => {
    // every line's digest and size (a blob indexed again under another URL has several lines), then
    // sorted, each digest kept once
    let digests = Buffer.alloc(32 * 1024)
    let sizes = new Float64Array(1024)
    let inPack = new Uint8Array(1024)
    const packs = new Set<string>()
    let lines = 0
    return forEachIndexLine(dir, leanLine, (l) => {
      if (lines === sizes.length) {
        const d = Buffer.alloc(digests.length * 2)
        digests.copy(d)
        digests = d
        const z = new Float64Array(sizes.length * 2)
        z.set(sizes)
        sizes = z
        const f = new Uint8Array(inPack.length * 2)
        f.set(inPack)
        inPack = f
      }
      digests.write(l.sha256, lines * 32, 32, "hex")
      if (l.pack !== undefined) {
        inPack[lines] = 1
        packs.add(l.pack)
      }
      sizes[lines++] = l.size
    }).pipe(
      Effect.map((): BlobTable => {
        const d = digests
        const compare = (a: number, b: number): number => {
          const x = a * 32
          const y = b * 32
          for (let k = 0; k < 32; k++) {
            const diff = d[x + k]! - d[y + k]!
            if (diff !== 0) return diff
          }
          return 0
        }
        const all = new Int32Array(lines)
        for (let i = 0; i < lines; i++) all[i] = i
        all.sort(compare)
        const order = new Int32Array(lines)
        // a blob's lines (one per URL) say where it is on the first of them only: packed if any says so
        const packed = new Uint8Array(lines)
        let count = 0
        let bytes = 0
        for (let i = 0; i < lines; i++) {
          if (count > 0 && compare(order[count - 1]!, all[i]!) === 0) {
            packed[count - 1]! |= inPack[all[i]!]!
            continue
          }
          packed[count] = inPack[all[i]!]!
          order[count++] = all[i]!
          bytes += sizes[all[i]!]!
        }
        return {
          count,
          bytes,
          sha256At: (i) => d.toString("hex", order[i]! * 32, order[i]! * 32 + 32),
          packedAt: (i) => packed[i] === 1,
          packs: [...packs].sort(),
        }
      }),
    )
  })

/** Totals over the index, for the manifest's `attachments` field. */
export const totals = (dir: string): Effect.Effect<{ count: number; bytes: number }, ArchiveError> =>
  Effect.map(blobTable(dir), (t) => ({ count: t.count, bytes: t.bytes }))
