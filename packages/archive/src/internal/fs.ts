/** node:fs wrapped once: every call is an Effect failing with ArchiveError Io naming the path. */
import { createHash } from "node:crypto"
import * as NFS from "node:fs"
import * as Path from "node:path"
import { makeDirsSync } from "@ferry/core/Dirs"
import { Effect, type Scope } from "effect"
import { ArchiveError, ioError } from "../ArchiveError.js"

/** Closes a descriptor now (a scope's end, a failed run): a failing close has nothing left to report to. */
export const closeQuietly = (fd: number): void => {
  try {
    NFS.closeSync(fd)
  } catch {
    // closed already, or the run has failed for its own reason
  }
}

export const DIR_MODE = 0o700
export const FILE_MODE = 0o600

const P = NFS.promises

const wrap = <A>(path: string, f: () => Promise<A>): Effect.Effect<A, ArchiveError> =>
  Effect.tryPromise({ try: f, catch: ioError(path) })

const code = (u: unknown): string | undefined =>
  typeof u === "object" && u !== null && "code" in u && typeof u.code === "string" ? u.code : undefined

/**
 * mkdir -p, then chmod 0700 on each folder it made (explicitly: umask is not trusted). A folder that was there is
 * left as it is: it may be one the user points at (`--out /tmp`), whose mode (a sticky bit, others' access) is
 * not Ferry's to change; an archive's own folder is made 0700 when the archive is created in it (`secureDir`).
 */
export const makeDir = (path: string): Effect.Effect<void, ArchiveError> =>
  wrap(path, async () => {
    const first = makeDirsSync(path, DIR_MODE)
    if (first === undefined) return
    const top = Path.resolve(first)
    for (let dir = Path.resolve(path); ; dir = Path.dirname(dir)) {
      await P.chmod(dir, DIR_MODE)
      if (dir === top || dir === Path.dirname(dir)) break
    }
  })

/** chmod 0700: a folder that now holds Ferry's data (an archive created in a folder that was there, empty). */
export const secureDir = (path: string): Effect.Effect<void, ArchiveError> =>
  wrap(path, () => P.chmod(path, DIR_MODE))

export const exists = (path: string): Effect.Effect<boolean, ArchiveError> =>
  wrap(path, () =>
    P.stat(path).then(
      () => true,
      (e: unknown) => {
        if (code(e) === "ENOENT") return false
        throw e
      },
    ),
  )

export const readText = (path: string): Effect.Effect<string, ArchiveError> =>
  wrap(path, () => P.readFile(path, "utf8"))

/** The file's text, or undefined when it does not exist. */
export const readTextIfExists = (path: string): Effect.Effect<string | undefined, ArchiveError> =>
  wrap(path, () =>
    P.readFile(path, "utf8").then(
      (s) => s as string | undefined,
      (e: unknown) => {
        if (code(e) === "ENOENT") return undefined
        throw e
      },
    ),
  )

export const readDir = (path: string): Effect.Effect<ReadonlyArray<string>, ArchiveError> =>
  wrap(path, () =>
    P.readdir(path).catch((e: unknown) => {
      if (code(e) === "ENOENT") return []
      throw e
    }),
  )

/** True when `path` is a directory with nothing in it (false when it is missing, a file, or holds anything). */
export const isEmptyDir = (path: string): Effect.Effect<boolean, ArchiveError> =>
  wrap(path, async () => {
    const stat = await P.lstat(path).catch((e: unknown) => {
      if (code(e) === "ENOENT") return undefined
      throw e
    })
    return stat?.isDirectory() === true && (await P.readdir(path)).length === 0
  })

/** The file's mtime (ms since the epoch), or undefined when it does not exist. */
export const modifiedAt = (path: string): Effect.Effect<number | undefined, ArchiveError> =>
  wrap(path, () =>
    P.stat(path).then(
      (s) => s.mtimeMs as number | undefined,
      (e: unknown) => {
        if (code(e) === "ENOENT") return undefined
        throw e
      },
    ),
  )

/** Set the file's access and modification times to now (it must exist). */
export const touch = (path: string): Effect.Effect<void, ArchiveError> =>
  wrap(path, () => {
    const now = new Date()
    return P.utimes(path, now, now)
  })

/** Whether `attempt` succeeded; false when it failed with `expected` (any other failure stays one). */
const succeededUnless = (attempt: Promise<unknown>, expected: string): Promise<boolean> =>
  attempt.then(
    () => true,
    (e: unknown) => {
      if (code(e) === expected) return false
      throw e
    },
  )

/** Rename `from` to `to`; false when `from` does not exist. */
export const renameIfExists = (from: string, to: string): Effect.Effect<boolean, ArchiveError> =>
  wrap(from, () => succeededUnless(P.rename(from, to), "ENOENT"))

/** A hard link `to` of `from`, unless `to` exists; whether it was made. */
export const linkIfAbsent = (from: string, to: string): Effect.Effect<boolean, ArchiveError> =>
  wrap(to, () => succeededUnless(P.link(from, to), "EEXIST"))

export const remove = (path: string): Effect.Effect<void, ArchiveError> =>
  wrap(path, () => P.rm(path, { force: true }))

export const rename = (from: string, to: string): Effect.Effect<void, ArchiveError> =>
  wrap(to, () => P.rename(from, to))

export const size = (path: string): Effect.Effect<number, ArchiveError> =>
  wrap(path, async () => (await P.stat(path)).size)

export const truncate = (path: string, length: number): Effect.Effect<void, ArchiveError> =>
  wrap(path, () => P.truncate(path, length))

/** fsync a file that was written and closed earlier. */
export const syncFile = (path: string): Effect.Effect<void, ArchiveError> =>
  wrap(path, async () => {
    const h = await P.open(path, "r")
    try {
      await h.sync()
    } finally {
      await h.close()
    }
  })

/** fsync a directory so a rename inside it survives a crash (a directory opens read-only like a file). */
export const syncDir: (path: string) => Effect.Effect<void, ArchiveError> = syncFile

/** Write a whole file atomically: `<path>.tmp` (0600) + fsync + rename + fsync of the directory. */
export const writeAtomic = (path: string, data: string | Uint8Array): Effect.Effect<void, ArchiveError> =>
  writeAtomicChunks(path, [data])

/** `writeAtomic` for content made piece by piece (never all of it in memory at once). */
export const writeAtomicChunks = (
  path: string,
  chunks: Iterable<string | Uint8Array>,
): Effect.Effect<void, ArchiveError> =>
  wrap(path, async () => {
    const tmp = `${path}.tmp`
    const h = await P.open(tmp, "w", FILE_MODE)
    try {
      await h.chmod(FILE_MODE)
      // FileHandle.writeFile writes from the handle's current position, so the pieces follow one another
      for (const chunk of chunks) await h.writeFile(chunk)
      await h.sync()
    } finally {
      await h.close()
    }
    await P.rename(tmp, path)
    const d = await P.open(Path.dirname(path), "r")
    try {
      await d.sync()
    } finally {
      await d.close()
    }
  })

/** Create a file that must not exist yet (O_EXCL), mode 0600. Returns false when it already exists. */
export const createExclusive = (path: string, data: string): Effect.Effect<boolean, ArchiveError> =>
  wrap(path, async () => {
    let h: NFS.promises.FileHandle
    try {
      h = await P.open(path, "wx", FILE_MODE)
    } catch (e) {
      if (code(e) === "EEXIST") return false
      throw e
    }
    try {
      await h.chmod(FILE_MODE)
      await h.writeFile(data)
      await h.sync()
    } finally {
      await h.close()
    }
    return true
  })

/** Append whole lines to a file (created 0600) and fsync. One write call, O_APPEND. */
export const appendSync = (path: string, data: string): Effect.Effect<void, ArchiveError> =>
  wrap(path, async () => {
    const h = await P.open(path, "a", FILE_MODE)
    try {
      await h.chmod(FILE_MODE)
      await h.write(data)
      await h.sync()
    } finally {
      await h.close()
    }
  })

export const isNodeError = (u: unknown, c: string): boolean => code(u) === c

export { ArchiveError }

/**
 * SHA-256 (hex) and size of a file, read in pieces of 1 MiB into one reused buffer. (A read stream of
 * 256 KiB pieces took 2–3× the time and CPU for the 21 files of the Synthea archive, 53 MB: 72–148 ms against
 * 39–47 ms, most of it the stream's machinery and fresh buffers.)
 */
export const hashFile = (path: string): Effect.Effect<{ sha256: string; bytes: number }, ArchiveError> =>
  wrap(path, async () => {
    const hash = createHash("sha256")
    const buf = Buffer.allocUnsafeSlow(1024 * 1024)
    let bytes = 0
    const handle = await NFS.promises.open(path, "r")
    try {
      for (;;) {
        const { bytesRead } = await handle.read(buf, 0, buf.length, null)
        if (bytesRead === 0) break
        hash.update(buf.subarray(0, bytesRead))
        bytes += bytesRead
      }
    } finally {
      await handle.close()
    }
    return { sha256: hash.digest("hex"), bytes }
  })

/**
 * A file written in pieces that stays in memory until it outgrows `limit`, then spills to `path` (created
 * 0600, must not exist). `finish` writes what is in memory (or the rest), fsyncs and closes: the file is
 * then complete and durable. `discard` drops it. One of the two must be called.
 */
export interface Spill {
  readonly write: (chunk: Uint8Array) => Effect.Effect<void, ArchiveError>
  readonly finish: Effect.Effect<void, ArchiveError>
  readonly discard: Effect.Effect<void>
}

export const spillFile = (path: string, limit: number): Effect.Effect<Spill> =>
  Effect.sync(() => {
    let held: Array<Uint8Array> | undefined = []
    let heldBytes = 0
    let handle: NFS.promises.FileHandle | undefined
    // The write under way: a stopped write's promise runs on (an open, then writes), and `discard` waits for it
    // before it closes and removes, so no handle opened after the discard stays open and no file stays behind.
    let underWay: Promise<unknown> = Promise.resolve()
    const writeAll = async (h: NFS.promises.FileHandle, b: Uint8Array) => {
      let off = 0
      while (off < b.length) off += (await h.write(b, off, b.length - off)).bytesWritten
    }
    return {
      write: (chunk) => {
        if (held !== undefined && heldBytes + chunk.length <= limit) {
          held.push(chunk)
          heldBytes += chunk.length
          return Effect.void
        }
        return wrap(path, () => {
          const op = (async () => {
            if (handle === undefined) {
              handle = await P.open(path, "wx", FILE_MODE)
              for (const b of held ?? []) await writeAll(handle, b)
              held = undefined
            }
            await writeAll(handle, chunk)
          })()
          underWay = op.catch(() => undefined)
          return op
        })
      },
      finish: wrap(path, async () => {
        if (handle === undefined) {
          await P.writeFile(path, Buffer.concat(held ?? []), { flag: "wx", mode: FILE_MODE, flush: true })
          held = undefined
          return
        }
        const h = handle
        handle = undefined
        try {
          await h.sync()
        } finally {
          await h.close()
        }
      }),
      discard: Effect.promise(async () => {
        await underWay
        held = undefined
        const h = handle
        handle = undefined
        if (h !== undefined) await h.close().catch(() => undefined)
        await P.rm(path, { force: true }).catch(() => undefined)
      }),
    } satisfies Spill
  })

/**
 * Appends to one file through a handle kept open until the scope closes (opened, its folder made and the
 * file narrowed to 0600 at the first append): `append`/`appendSync` without an open, a chmod and a close per
 * call (in the profile of a Synthea import, 82 Bundles, those took ≈ 0.15 s of the main thread). With
 * `durable`, each append is fsynced before it returns. Appends are serialised, each written whole (a torn
 * last line that a crash leaves is its readers' to cut off, as with `append`). Only for a file that nothing
 * renames, removes or truncates while the scope is open.
 */
export const appender = (
  path: string,
  options: {
    readonly durable: boolean
    /** A torn last line left by a crash is cut off before the first append (`cutTornLine`). */
    readonly cutTorn?: boolean
  },
): Effect.Effect<(data: string) => Effect.Effect<void, ArchiveError>, never, Scope.Scope> =>
  Effect.gen(function* () {
    let handle: Promise<NFS.promises.FileHandle> | undefined
    yield* Effect.addFinalizer(() =>
      handle === undefined
        ? Effect.void
        : Effect.promise(() =>
            handle!.then(
              (h) => h.close().catch(() => undefined),
              () => undefined,
            ),
          ),
    )
    const open = async () => {
      makeDirsSync(Path.dirname(path), DIR_MODE)
      if (options.cutTorn === true) await cutTornTail(path)
      const h = await P.open(path, "a", FILE_MODE)
      await h.chmod(FILE_MODE)
      return h
    }
    const lock = yield* Effect.makeSemaphore(1)
    return (data: string) =>
      lock.withPermits(1)(
        wrap(path, async () => {
          // a failed open is tried again by the next append
          handle ??= open().catch((e: unknown) => {
            handle = undefined
            throw e
          })
          const h = await handle
          const bytes = Buffer.from(data)
          let off = 0
          while (off < bytes.length) off += (await h.write(bytes, off, bytes.length - off)).bytesWritten
          if (options.durable) await h.sync()
        }),
      )
  })

/**
 * Cuts a torn last line (bytes after the last newline: a crash in the middle of an append) off a file of lines,
 * so that the next line does not run on from it; whether there was one. Nothing for a missing or empty file.
 */
const cutTornTail = async (path: string): Promise<boolean> => {
  let h: NFS.promises.FileHandle
  try {
    h = await P.open(path, "r+")
  } catch (e) {
    if (code(e) === "ENOENT") return false
    throw e
  }
  try {
    const { size } = await h.stat()
    const buf = Buffer.alloc(64 * 1024)
    let end = size
    while (end > 0) {
      const start = Math.max(0, end - buf.length)
      const { bytesRead } = await h.read(buf, 0, end - start, start)
      // (a whole file ends with its newline)
      if (end === size && buf[bytesRead - 1] === 10) return false
      const newline = buf.subarray(0, bytesRead).lastIndexOf(10)
      if (newline >= 0) {
        await h.truncate(start + newline + 1)
        return true
      }
      end = start
    }
    if (size > 0) await h.truncate(0)
    return size > 0
  } finally {
    await h.close()
  }
}

/** `cutTornTail` as an Effect. */
export const cutTornLine = (path: string): Effect.Effect<boolean, ArchiveError> =>
  wrap(path, () => cutTornTail(path))

/** Append to a file (created 0600) without fsync: for logs that are not needed to resume. */
export const append = (path: string, data: string): Effect.Effect<void, ArchiveError> =>
  wrap(path, async () => {
    const h = await P.open(path, "a", FILE_MODE)
    try {
      await h.chmod(FILE_MODE)
      await h.write(data)
    } finally {
      await h.close()
    }
  })
