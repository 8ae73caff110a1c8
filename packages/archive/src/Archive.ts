/**
 * The on-disk archive (`ferry-archive/2`, see docs/archive-format.md): manifest, NDJSON data files,
 * checksums and the advisory lock. Plain functions over a directory; the Journal and attachments have
 * their own modules.
 */
import { createHash } from "node:crypto"
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import { describeParseError } from "@ferry/core/Http"
import * as Ndjson from "@ferry/core/Ndjson"
import type { Resource } from "@ferry/core/Ids"
import { Chunk, Clock, Effect, Either, Fiber, Schema, Stream } from "effect"
import type { Scope } from "effect"
import * as Attachments from "./Attachments.js"
import { ArchiveError, errorText } from "./ArchiveError.js"
import * as Fs from "./internal/fs.js"
import {
  checksumsCoverMetadata,
  FORMAT,
  FORMATS,
  FileEntry,
  Manifest,
  type Compression,
  type Init,
  type Section,
} from "./Manifest.js"

/** Names inside an archive directory. */
export const layout = {
  manifest: "manifest.json",
  data: "data",
  deleted: "deleted",
  errors: "errors",
  attachments: "attachments",
  attachmentIndex: "attachments/index.ndjson",
  journal: "journal.ndjson",
  events: "events.ndjson",
  checksums: "checksums.sha256",
  lock: ".lock",
} as const

const sectionDir: Record<Section, string> = {
  files: layout.data,
  deleted: layout.deleted,
  errors: layout.errors,
}

// ---------------------------------------------------------------------------------------------------------
// Manifest

const encodeManifest = Schema.encodeSync(Manifest)
const decodeManifest = Schema.decodeUnknownEither(Manifest)

/** Whether an archive-relative path (a manifest entry's, a checksum row's) points outside the archive. */
const leavesArchive = (rel: string): boolean => Path.isAbsolute(rel) || rel.split(/[\\/]/).includes("..")

/**
 * Why a manifest entry's path is not one the archive can hold (undefined: it is): every reader opens
 * `<archive>/<path>`, so a path edited to leave the archive, or into another section, is refused here.
 */
const entryPathProblem = (section: Section, rel: string): string | undefined => {
  if (leavesArchive(rel)) return "leaves the archive"
  if (!rel.startsWith(`${sectionDir[section]}/`)) return `is not in ${sectionDir[section]}/`
  return undefined
}

/**
 * Read and validate `manifest.json`: its shape, and that every file entry's path stays in its section's
 * directory of the archive.
 */
export const readManifest = (dir: string): Effect.Effect<Manifest, ArchiveError> =>
  Effect.gen(function* () {
    const path = Path.join(dir, layout.manifest)
    const text = yield* Fs.readTextIfExists(path)
    if (text === undefined) {
      return yield* new ArchiveError({ reason: "NotAnArchive", path: dir, detail: "no manifest.json" })
    }
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch (e) {
      return yield* new ArchiveError({ reason: "Corrupt", path, detail: `not valid JSON (${errorText(e)})` })
    }
    const isObject = typeof json === "object" && json !== null && !Array.isArray(json)
    const format = isObject ? (json as { format?: unknown }).format : undefined
    if (!(FORMATS as ReadonlyArray<unknown>).includes(format)) {
      const readable = `this ferry reads ${FORMATS.slice(0, -1).join(", ")} and ${FORMATS[FORMATS.length - 1]}`
      return yield* new ArchiveError({
        reason: "NotAnArchive",
        path,
        detail: !isObject
          ? `is not a JSON object (it holds ${Array.isArray(json) ? "an array" : json === null ? "null" : `a ${typeof json}`}), so not a Ferry archive's manifest`
          : format === undefined
            ? `has no "format", so it is not a Ferry archive's manifest (${readable})`
            : `format is ${JSON.stringify(format)}, ${readable}`,
      })
    }
    const decoded = decodeManifest(json)
    if (Either.isLeft(decoded)) {
      return yield* new ArchiveError({
        reason: "Corrupt",
        path,
        detail: describeParseError("a Ferry archive manifest", decoded.left),
      })
    }
    for (const section of ["files", "deleted", "errors"] as const) {
      for (const [i, entry] of decoded.right[section].entries()) {
        const problem = entryPathProblem(section, entry.path)
        if (problem !== undefined) {
          return yield* new ArchiveError({
            reason: "Corrupt",
            path,
            detail: `the path of ${section}.${i} (${entry.path}) ${problem}`,
          })
        }
      }
    }
    return decoded.right
  })

/** Replace `manifest.json` atomically (tmp + fsync + rename + fsync dir). Call it at checkpoints only. */
export const writeManifest = (dir: string, manifest: Manifest): Effect.Effect<void, ArchiveError> =>
  Fs.writeAtomic(Path.join(dir, layout.manifest), manifestText(manifest))

/** The text `writeManifest` writes for `manifest` (what `checksums.sha256` records for it). */
export const manifestText = (manifest: Manifest): string =>
  // an archive written to by this ferry may hold packs and checksums its manifest: it says so (`FORMAT`)
  `${JSON.stringify(encodeManifest({ ...manifest, format: FORMAT }), null, 2)}\n`

/** Read, change and write the manifest (callers serialise their own checkpoints). */
export const updateManifest = (
  dir: string,
  f: (m: Manifest) => Manifest,
): Effect.Effect<Manifest, ArchiveError> =>
  Effect.gen(function* () {
    const next = f(yield* readManifest(dir))
    yield* writeManifest(dir, next)
    return next
  })

// ---------------------------------------------------------------------------------------------------------
// Create / open

/** The subdirectories `create` makes, before it writes the manifest. */
const subdirs: ReadonlyArray<string> = [layout.data, layout.deleted, layout.errors, layout.attachments]

/**
 * Create a new archive in `dir` (created 0700 if missing) with an empty, incomplete manifest. The directory
 * must be empty, or hold only some of the archive's own subdirectories, empty: what a `create` killed before
 * it wrote the manifest leaves (the manifest is what makes the directory an archive). Take the lock first
 * (`lock`) when other processes might race.
 */
export const create = (dir: string, init: Init): Effect.Effect<Manifest, ArchiveError> =>
  Effect.gen(function* () {
    if (yield* Fs.exists(Path.join(dir, layout.manifest))) {
      return yield* new ArchiveError({ reason: "Exists", path: dir, detail: "already holds an archive" })
    }
    const present: Array<string> = []
    for (const name of yield* Fs.readDir(dir)) {
      if (name === layout.lock) continue
      if (subdirs.includes(name) && (yield* Fs.isEmptyDir(Path.join(dir, name)))) continue
      present.push(name)
    }
    if (present.length > 0) {
      return yield* new ArchiveError({
        reason: "Exists",
        path: dir,
        detail: `is not empty (${present.slice(0, 3).join(", ")}${present.length > 3 ? ", …" : ""})`,
      })
    }
    yield* Fs.makeDir(dir)
    yield* Fs.secureDir(dir)
    for (const sub of subdirs) {
      yield* Fs.makeDir(Path.join(dir, sub))
      yield* Fs.secureDir(Path.join(dir, sub))
    }
    const now = yield* Clock.currentTimeMillis
    const manifest: Manifest = {
      format: FORMAT,
      createdAt: new Date(now).toISOString(),
      tool: init.tool,
      source: init.source,
      request: init.request,
      ...(init.transactionTime !== undefined ? { transactionTime: init.transactionTime } : {}),
      complete: false,
      files: [],
      deleted: [],
      errors: [],
      attachments: { count: 0, bytes: 0 },
      ...(init.previous !== undefined ? { previous: init.previous } : {}),
    }
    yield* writeManifest(dir, manifest)
    return manifest
  })

/** Open an existing archive: validates the format and returns the manifest. */
export const open = (dir: string): Effect.Effect<Manifest, ArchiveError> => readManifest(dir)

// ---------------------------------------------------------------------------------------------------------
// Lock

interface LockInfo {
  readonly pid: number
  readonly host: string
  readonly startedAt: string
  /** The kernel's boot id when the lock was taken (older locks have none). */
  readonly bootId?: string
  /** The holder's start time in clock ticks after boot, `/proc/<pid>/stat` field 22 (older locks: none). */
  readonly processStart?: number
  /** How often the holder renews the lock file's mtime, ms (older locks: never). */
  readonly renewEvery?: number
  /** The holder's pid namespace (`/proc/self/ns/pid`): its pid means nothing in another one. */
  readonly pidNs?: string
}

/** How often a holder renews its lock (the lock file's mtime). */
const RENEW_MS = 10_000
/** The longest renewal period a lock may declare (a watcher waits three of them). */
const MAX_RENEW_MS = 60_000

/** Why this process lost an archive lock it held (see `lock`), once it did: the CLI's last word then. */
let lockLostBecause: string | undefined
export const lockLost = (): string | undefined => lockLostBecause

/** This process's pid namespace, or undefined where there is no /proc. */
const pidNamespace = (): string | undefined => {
  try {
    return NFS.readlinkSync("/proc/self/ns/pid")
  } catch {
    return undefined
  }
}

/** An empty or unreadable lock file unchanged for this long was left by a process killed while creating it. */
const TORN_LOCK_MS = 5_000

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
  } catch (e) {
    return Fs.isNodeError(e, "EPERM") && !exited(pid)
  }
  return !exited(pid)
}

/**
 * Whether `pid` has exited though its parent has not reaped it yet (a zombie, `Z`, or dying, `X`, in
 * `/proc/<pid>/stat`): `kill(pid, 0)` still finds it. A ferry killed with `timeout -s KILL` stays one until its
 * parent (a shell, a container without an init) reaps it, and its lock is stale already. False where there is no
 * /proc.
 */
const exited = (pid: number): boolean => {
  try {
    const stat = NFS.readFileSync(`/proc/${pid}/stat`, "utf8")
    // the state follows the command name, which is in parentheses and may hold spaces or parentheses itself
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)
    return state === "Z" || state === "X"
  } catch {
    return false
  }
}

/** This boot of the machine (`/proc/sys/kernel/random/boot_id`), or undefined where there is no /proc. */
const bootId = (): string | undefined => {
  try {
    const id = NFS.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()
    return id.length > 0 ? id : undefined
  } catch {
    return undefined
  }
}

/**
 * When process `pid` started, in clock ticks after boot (`/proc/<pid>/stat` field 22), or undefined when there
 * is no such process or no /proc. A pid reused by another process has another start time.
 */
const processStart = (pid: number): number | undefined => {
  try {
    const stat = NFS.readFileSync(`/proc/${pid}/stat`, "utf8")
    // the command name (field 2) is in parentheses and may hold spaces and parentheses: count after the last
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    const start = Number(fields[22 - 3])
    return Number.isSafeInteger(start) ? start : undefined
  } catch {
    return undefined
  }
}

const parseLock = (text: string): LockInfo | undefined => {
  try {
    const u: unknown = JSON.parse(text)
    if (
      typeof u === "object" &&
      u !== null &&
      "pid" in u &&
      typeof u.pid === "number" &&
      "host" in u &&
      typeof u.host === "string"
    ) {
      return {
        pid: u.pid,
        host: u.host,
        startedAt: "startedAt" in u ? String(u.startedAt) : "?",
        ...("bootId" in u && typeof u.bootId === "string" ? { bootId: u.bootId } : {}),
        ...("processStart" in u && typeof u.processStart === "number"
          ? { processStart: u.processStart }
          : {}),
        ...("renewEvery" in u && typeof u.renewEvery === "number" && u.renewEvery > 0
          ? { renewEvery: Math.min(u.renewEvery, MAX_RENEW_MS) }
          : {}),
        ...("pidNs" in u && typeof u.pidNs === "string" ? { pidNs: u.pidNs } : {}),
      }
    }
    return undefined
  } catch {
    return undefined
  }
}

/**
 * Why a lock on this host is stale (its holder is gone), or undefined when its holder may still run. A lock
 * without a boot id and start time (written by an older ferry) is judged by its pid alone, as is every lock
 * where /proc cannot be read.
 */
const staleness = (held: LockInfo): string | undefined => {
  const boot = bootId()
  if (held.bootId !== undefined && boot !== undefined && held.bootId !== boot) {
    return `it was taken by pid ${held.pid} before the machine restarted`
  }
  if (held.processStart !== undefined) {
    // the pid may have been given to another process since (after a reboot, or in a restarted container)
    const start = processStart(held.pid)
    if (start !== undefined && start !== held.processStart) {
      return `pid ${held.pid} that took it has exited (the pid now belongs to another process)`
    }
  }
  if (held.pid === process.pid) return undefined
  return isAlive(held.pid) ? undefined : `pid ${held.pid} that took it has exited`
}

/**
 * Who holds the archive's lock, when another process on this machine that is still running does (judged as
 * `lock` judges it): what a reader of an unfinished archive (an import while its export runs) can tell the user.
 * Undefined when there is no lock, it is this process's, or it is stale or of another host.
 */
export const liveLockHolder = (
  dir: string,
): { readonly pid: number; readonly startedAt: string } | undefined => {
  let text: string
  try {
    text = NFS.readFileSync(Path.join(dir, layout.lock), "utf8")
  } catch {
    return undefined
  }
  const held = parseLock(text)
  if (held === undefined || held.pid === process.pid || held.host !== OS.hostname()) return undefined
  if (held.pidNs !== undefined && held.pidNs !== pidNamespace()) return undefined
  return staleness(held) === undefined ? { pid: held.pid, startedAt: held.startedAt } : undefined
}

/**
 * Take the archive's advisory lock (`.lock`, O_EXCL, holding pid/host, and where /proc has them the boot id
 * and the process's start time) for the scope's lifetime. A lock on this host whose holder is gone is taken
 * over: its process has exited, the machine restarted since (another boot id), or its pid now belongs to
 * another process (another start time); so is an empty or unreadable lock file older than a few seconds (a
 * process killed between creating and writing it). Once held, leftovers of a crashed writer (`*.part`,
 * `*.tmp`) are removed. Every process that writes to an archive must hold it.
 *
 * A lock of another host, or of this host name in another pid namespace (another container), cannot be
 * judged by its pid (a job rescheduled in a new container has a new host name, with the archive on the same
 * volume): the holder renews the lock file's mtime every `renewEvery` (10 s), and such a lock that says so is
 * watched for three of those periods (interruptibly); left unrenewed, its holder is gone and the lock is
 * taken over. Its mtime is compared with itself, never with this host's clock. One that does not renew (an
 * older ferry) is never taken over. A lock is removed only while it still holds what was judged stale.
 *
 * A holder that finds its lock no longer its own (taken over while it was stalled longer than three periods,
 * or removed by hand) logs an error and interrupts the fiber that took it: it must not write on.
 */
export const lock = (
  dir: string,
  options?: { readonly renewMillis?: number; readonly tornMillis?: number },
): Effect.Effect<void, ArchiveError, Scope.Scope> => {
  const path = Path.join(dir, layout.lock)
  const renewMs = Math.min(MAX_RENEW_MS, Math.max(1, options?.renewMillis ?? RENEW_MS))
  const tornMs = Math.max(1, options?.tornMillis ?? TORN_LOCK_MS)
  const ns = pidNamespace()
  /**
   * A lock its pid cannot speak for, watched for three renewal periods: "stale" (unrenewed), "held" (renewed,
   * or it does not renew), or "gone" (released or replaced meanwhile: look again). The file is read before
   * each stat (an open revalidates NFS's cached attributes).
   */
  const watch = (held: LockInfo, text: string) =>
    Effect.gen(function* () {
      const renewEvery = held.renewEvery
      if (renewEvery === undefined) return "held" as const
      if ((yield* Fs.readTextIfExists(path)) !== text) return "gone" as const
      const before = yield* Fs.modifiedAt(path)
      if (before === undefined) return "gone" as const
      yield* Effect.logWarning(
        `the archive is locked by pid ${held.pid} on ${held.host}; watching for ${(3 * renewEvery) / 1000} s whether that ferry still renews the lock`,
      ).pipe(Effect.annotateLogs({ archive: dir }))
      // acquireRelease runs this uninterruptibly: a Ctrl-C while watching must still end the run
      yield* Effect.interruptible(Effect.sleep(3 * renewEvery))
      if ((yield* Fs.readTextIfExists(path)) !== text) return "gone" as const
      const after = yield* Fs.modifiedAt(path)
      if (after === undefined) return "gone" as const
      return after === before ? ("stale" as const) : ("held" as const)
    })
  /**
   * Removes the lock file only if it still holds `judged`: it is renamed aside first (atomic, also on NFS) and
   * put back when it turns out to be another lock, taken meanwhile. Whether the judged lock is gone.
   */
  const removeJudged = (judged: string) =>
    Effect.gen(function* () {
      const aside = `${path}.stale-${process.pid}-${Math.random().toString(36).slice(2)}`
      if (!(yield* Fs.renameIfExists(path, aside))) return false
      const moved = yield* Fs.readTextIfExists(aside)
      if (moved !== judged) {
        // another ferry's lock, made after the judgement: back in place unless yet another one is there
        yield* Fs.linkIfAbsent(aside, path)
        yield* Fs.remove(aside)
        return false
      }
      yield* Fs.remove(aside)
      return true
    })
  const acquire = Effect.gen(function* () {
    yield* Fs.makeDir(dir)
    const now = yield* Clock.currentTimeMillis
    const boot = bootId()
    const start = processStart(process.pid)
    const mine = JSON.stringify({
      pid: process.pid,
      host: OS.hostname(),
      startedAt: new Date(now).toISOString(),
      ...(boot !== undefined ? { bootId: boot } : {}),
      ...(start !== undefined ? { processStart: start } : {}),
      ...(ns !== undefined ? { pidNs: ns } : {}),
      renewEvery: renewMs,
    })
    for (let attempt = 0; attempt < 3; attempt++) {
      if (yield* Fs.createExclusive(path, mine)) return mine
      const text = yield* Fs.readTextIfExists(path)
      if (text === undefined) continue // released meanwhile
      const held = parseLock(text)
      if (held === undefined) {
        const modified = yield* Fs.modifiedAt(path)
        if (modified === undefined) continue // released meanwhile
        // unchanged for a while (its mtime compared with itself, not with this clock): its writer is gone
        yield* Effect.interruptible(Effect.sleep(tornMs))
        if ((yield* Fs.modifiedAt(path)) === modified && (yield* Fs.readTextIfExists(path)) === text) {
          if (!(yield* removeJudged(text))) continue
          yield* Effect.logWarning(
            `taking over a lock file that stayed empty or unreadable for ${tornMs / 1000} s (a process was killed while creating it)`,
          ).pipe(Effect.annotateLogs({ archive: dir }))
          continue
        }
        return yield* new ArchiveError({
          reason: "Locked",
          path,
          detail:
            "the lock file is unreadable (another process may be creating it); delete it if no ferry is running",
        })
      }
      // its pid speaks for it only on this machine (the same boot id: another one may be another machine of
      // that host name, or this one rebooted), in this pid namespace; one that renews is watched otherwise
      const sameMachine =
        held.host === OS.hostname() &&
        (held.renewEvery === undefined ||
          (held.bootId !== undefined && boot !== undefined && held.bootId === boot))
      const pidTells = sameMachine && (held.pidNs === undefined || ns === undefined || held.pidNs === ns)
      let stale: string | undefined
      let watched = false
      if (pidTells) stale = staleness(held)
      else {
        const seen = yield* watch(held, text)
        if (seen === "gone") continue
        watched = held.renewEvery !== undefined
        if (seen === "stale")
          stale = `pid ${held.pid} on ${held.host} that took it no longer renews it (its host or container is gone)`
      }
      if (stale !== undefined) {
        // only the lock that was judged: another process may have replaced it meanwhile
        if (!(yield* removeJudged(text))) continue
        yield* Effect.logWarning(`taking over a stale lock: ${stale}`).pipe(
          Effect.annotateLogs({ archive: dir }),
        )
        continue
      }
      return yield* new ArchiveError({
        reason: "Locked",
        path,
        detail: `locked by pid ${held.pid} on ${held.host} since ${held.startedAt}${watched ? ", and renewed while watched" : ""}`,
      })
    }
    return yield* new ArchiveError({
      reason: "Locked",
      path,
      detail: "could not take the lock after 3 attempts",
    })
  })
  const release = (mine: string) =>
    Fs.readTextIfExists(path).pipe(
      Effect.flatMap((text) => (text === mine ? Fs.remove(path) : Effect.void)),
      Effect.catchAll((e) => Effect.logWarning(`could not release the archive lock: ${e.message}`)),
    )
  /**
   * Renews the lock every `renewMs` while it is this process's. Once it is not, `owner` (the fiber that took
   * it) is interrupted: another ferry may be writing the archive now.
   */
  const renew = (mine: string, owner: Fiber.RuntimeFiber<unknown, unknown>, closing: { done: boolean }) =>
    Effect.gen(function* () {
      const stop = (why: string) =>
        Effect.gen(function* () {
          // the scope is closing already: the run is over, nothing is left to stop
          if (closing.done) return
          lockLostBecause = `the archive's lock at ${path} ${why}: this run stopped so that two ferries do not write one archive; check that only one ferry runs on it, then run the command again`
          yield* Effect.logError(lockLostBecause)
          yield* Fiber.interruptFork(owner)
        })
      let failed = 0
      for (;;) {
        yield* Effect.sleep(renewMs)
        const text = yield* Fs.readTextIfExists(path).pipe(Effect.orElseSucceed(() => mine))
        if (text !== mine)
          return yield* stop(
            "is no longer this process's (removed, or taken over by another ferry while this one was stalled)",
          )
        // a failed renewal is tried again; after two in a row another ferry may take the lock any moment
        const renewed = yield* Fs.touch(path).pipe(
          Effect.as(true),
          Effect.catchAll((e) =>
            Effect.as(Effect.logWarning(`could not renew the archive lock: ${e.message}`), false),
          ),
        )
        failed = renewed ? 0 : failed + 1
        if (failed >= 2) return yield* stop("could not be renewed twice in a row")
      }
    })
  return Effect.acquireRelease(acquire, release).pipe(
    Effect.tap((mine) =>
      Effect.withFiberRuntime((owner) =>
        Effect.gen(function* () {
          const closing = { done: false }
          yield* Effect.forkScoped(renew(mine, owner, closing))
          // finalizers run last-added first: this one before the renewal is interrupted
          yield* Effect.addFinalizer(() => Effect.sync(() => (closing.done = true)))
        }),
      ),
    ),
    Effect.zipLeft(removeLeftovers(dir)),
    Effect.asVoid,
  )
}

/** Writes a file whole or not at all (0600): a temporary file, fsynced, renamed over it, its directory fsynced. */
export const writeAtomic = (path: string, data: string | Uint8Array): Effect.Effect<void, ArchiveError> =>
  Fs.writeAtomic(path, data)

/** fsync of the directory holding `path`: a rename or a new file in it then survives a power loss. */
export const syncParent = (path: string): Effect.Effect<void, ArchiveError> => Fs.syncDir(Path.dirname(path))

/** Delete `*.part` and `*.tmp` files left by a crashed writer. Only the lock holder may call it. */
export const removeLeftovers = (dir: string): Effect.Effect<void, ArchiveError> =>
  Effect.gen(function* () {
    const dirs = [dir, ...subdirs.map((d) => Path.join(dir, d))]
    for (const d of dirs) {
      for (const name of yield* Fs.readDir(d)) {
        if (name.endsWith(".part") || name.endsWith(".tmp")) yield* Fs.remove(Path.join(d, name))
      }
    }
  })

// ---------------------------------------------------------------------------------------------------------
// NDJSON files

const TYPE_NAME = /^[A-Z][A-Za-z]{1,63}$/

const fromNdjson = (e: Ndjson.NdjsonError): ArchiveError =>
  new ArchiveError({
    reason: e.reason === "Io" ? "Io" : "Corrupt",
    path: e.file,
    ...(e.line > 0 ? { line: e.line } : {}),
    detail:
      e.reason === "Io"
        ? e.detail
        : e.reason === "InvalidGzip"
          ? `the file is not valid gzip (${e.detail})`
          : e.message.slice(e.message.indexOf(": ") + 2),
    cause: e,
  })

export interface FileSpec {
  /** Which part of the archive: data (`files`), `deleted` or `errors`. */
  readonly section: Section
  /** The resource type the file holds (`Bundle` for deleted, `OperationOutcome` for errors). */
  readonly type: string
  readonly compression?: Compression
}

/**
 * Stream resources (or pre-serialised lines) into the next free `<section>/<Type>.<n>.ndjson[.gz]`:
 * written to a `.part` file (0600), fsynced, renamed into place. Returns the manifest entry; adding it to the
 * manifest is the caller's checkpoint (`Manifest.addFiles` + `writeManifest`).
 */
export const writeFile = <E, R>(
  dir: string,
  spec: FileSpec,
  values: Stream.Stream<Resource | string, E, R>,
): Effect.Effect<FileEntry, ArchiveError | E, R> =>
  Effect.gen(function* () {
    if (!TYPE_NAME.test(spec.type)) {
      return yield* new ArchiveError({
        reason: "Corrupt",
        path: dir,
        detail: `${JSON.stringify(spec.type)} is not a resource type name, refusing to use it as a file name`,
      })
    }
    const compression = spec.compression ?? "none"
    const sub = sectionDir[spec.section]
    yield* Fs.makeDir(Path.join(dir, sub))
    const rel = yield* reserve(dir, sub, spec.type, compression === "gzip" ? ".ndjson.gz" : ".ndjson")
    const final = Path.join(dir, rel)
    const part = `${final}.part`
    const result = yield* Ndjson.writeFile(part, values, { gzip: compression === "gzip", label: rel }).pipe(
      Effect.mapError((e) => (e instanceof Ndjson.NdjsonError ? fromNdjson(e) : e)),
      Effect.tapError(() =>
        Fs.remove(part).pipe(
          Effect.catchAll((e) => Effect.logWarning(`could not remove ${part}: ${e.message}`)),
        ),
      ),
    )
    yield* Fs.rename(part, final)
    yield* Fs.syncDir(Path.dirname(final))
    return {
      type: spec.type,
      path: rel,
      count: result.count,
      bytes: result.bytes,
      sha256: result.sha256,
      compression,
    }
  })

/** Claim the next free index for a type by creating its `.part` file with O_EXCL. */
const reserve = (dir: string, sub: string, type: string, ext: string): Effect.Effect<string, ArchiveError> =>
  Effect.gen(function* () {
    const re = new RegExp(`^${type}\\.(\\d{3,})\\.ndjson(?:\\.gz)?(?:\\.part)?$`)
    let n = 0
    for (const name of yield* Fs.readDir(Path.join(dir, sub))) {
      const m = re.exec(name)
      if (m) n = Math.max(n, Number(m[1]) + 1)
    }
    for (;;) {
      const rel = `${sub}/${type}.${String(n).padStart(3, "0")}${ext}`
      const taken =
        (yield* Fs.exists(Path.join(dir, sub, `${type}.${String(n).padStart(3, "0")}.ndjson`))) ||
        (yield* Fs.exists(Path.join(dir, sub, `${type}.${String(n).padStart(3, "0")}.ndjson.gz`)))
      if (!taken && (yield* Fs.createExclusive(Path.join(dir, `${rel}.part`), ""))) return rel
      n++
    }
  })

/** One resource read back from the archive, with where it came from. */
export interface Located {
  readonly file: string
  readonly line: number
  readonly value: Resource
}

/**
 * `items` of one file entry (gunzipped as needed) and, at its end, the check that there were `entry.count`
 * of them (a truncated or padded file is Corrupt even before checksums are verified).
 */
const counted = <A>(
  entry: FileEntry,
  items: Stream.Stream<A, Ndjson.NdjsonError>,
): Stream.Stream<A, ArchiveError> =>
  Stream.suspend(() => {
    let seen = 0
    const check = Effect.suspend(() =>
      seen === entry.count
        ? Effect.void
        : Effect.fail(
            new ArchiveError({
              reason: "Corrupt",
              path: entry.path,
              detail: `holds ${seen} resources but the manifest says ${entry.count}`,
            }),
          ),
    )
    return items.pipe(
      Stream.mapChunks((chunk) => {
        seen += chunk.length
        return chunk
      }),
      Stream.mapError(fromNdjson),
      Stream.concat(Stream.drain(Stream.fromEffect(check))),
    )
  })

/**
 * Stream the resources of one file entry (gunzipped as needed). Each line must be a resource of the entry's
 * type, and at the end the number of resources must equal `entry.count`. `keepNumbers`: each resource
 * remembers how its numbers were written (`NumberText.writtenNumbers`).
 */
export const resources = (
  dir: string,
  entry: FileEntry,
  options: { readonly maxLineBytes?: number; readonly keepNumbers?: boolean } = {},
): Stream.Stream<Located, ArchiveError> =>
  counted(
    entry,
    Ndjson.readFile(Path.join(dir, entry.path), {
      gzip: entry.compression === "gzip",
      label: entry.path,
      resourceType: entry.type,
      ...(options.maxLineBytes !== undefined ? { maxLineBytes: options.maxLineBytes } : {}),
      ...(options.keepNumbers === true ? { keepNumbers: true } : {}),
    }).pipe(Stream.map((i): Located => ({ file: entry.path, line: i.line, value: i.value }))),
  )

/**
 * The raw lines of one file entry (gunzipped as needed, blank lines skipped), not parsed: for a reader that
 * only looks for something in the text. The number of lines must equal `entry.count`, as for `resources`.
 */
export const lines = (dir: string, entry: FileEntry): Stream.Stream<string, ArchiveError> =>
  counted(
    entry,
    Ndjson.readFileLines(Path.join(dir, entry.path), {
      gzip: entry.compression === "gzip",
      label: entry.path,
    }),
  )

/**
 * A data file's bytes (gunzipped), in chunks valid until the next is pulled (see core's `Ndjson.fileChunks`);
 * unlike `lines`, the manifest's count is not checked.
 */
export const bytes = (dir: string, entry: FileEntry): Stream.Stream<Uint8Array, ArchiveError> =>
  Ndjson.fileChunks(Path.join(dir, entry.path), {
    gzip: entry.compression === "gzip",
    label: entry.path,
  }).pipe(Stream.mapError(fromNdjson))

// ---------------------------------------------------------------------------------------------------------
// Checksums

/** The hash of a listed row that any hash in `checksums.sha256` matches (a pack, when verifying). */
const ANY = ""

/** The archive's own files `checksums.sha256` lists besides the data (format `/3` on): what maps the rest. */
const metadataFiles: ReadonlySet<string> = new Set([layout.manifest, layout.attachmentIndex])

/**
 * Every checksummed file: manifest entries (data, deleted, errors), the attachment blobs the index names that
 * are files of their own, the packs it names (a blob is in the index only once it is durable; a file a crash
 * left torn beside them, or a pack no line names, is not the archive's), and (`/3`) `manifest.json` and the
 * attachment index, which say what the data files and blobs are. A pack's hash is its bytes' when the checksums
 * are written (`hashed`; the manifest's is that of `manifestText`, the text about to be written, when given);
 * a verification takes the row's (`named`) and re-hashes the pack, the manifest and the index against it. Each
 * blob in a pack is checked by its own name when read.
 */
const listed = (
  dir: string,
  manifest: Manifest,
  packs: "hashed" | "named",
  manifestText?: string,
): Effect.Effect<Iterable<[string, string]>, ArchiveError> =>
  Effect.gen(function* () {
    const metadataRows: Array<[string, string]> = []
    // (an older archive's checksums written again, its manifest left as it is: as its format lists them, without
    // the two rows, which a ferry reading only /2 would call files its manifest does not list)
    if (packs === "hashed" && (manifestText !== undefined || checksumsCoverMetadata(manifest.format))) {
      metadataRows.push([
        manifestText !== undefined
          ? createHash("sha256").update(manifestText).digest("hex")
          : (yield* Fs.hashFile(Path.join(dir, layout.manifest))).sha256,
        layout.manifest,
      ])
      if (yield* Fs.exists(Path.join(dir, layout.attachmentIndex)))
        metadataRows.push([
          (yield* Fs.hashFile(Path.join(dir, layout.attachmentIndex))).sha256,
          layout.attachmentIndex,
        ])
    } else if (packs === "named" && checksumsCoverMetadata(manifest.format)) {
      metadataRows.push([ANY, layout.manifest])
      // (an archive without attachments may have no index: then its row is not asked for)
      if (yield* Fs.exists(Path.join(dir, layout.attachmentIndex)))
        metadataRows.push([ANY, layout.attachmentIndex])
    }
    const blobs = yield* Attachments.blobTable(dir)
    const byPath = (a: [string, string], b: [string, string]) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0)
    // "named": a pack's row with any hash (`ANY`): what it holds is checked against the row itself
    const packRows = yield* Effect.forEach(blobs.packs, (pack) => {
      const rel = Attachments.packPath(pack)
      return packs === "named"
        ? Effect.succeed<[string, string]>([ANY, rel])
        : Fs.hashFile(Path.join(dir, rel)).pipe(
            Effect.map(({ sha256 }): [string, string] => [sha256, rel]),
            Effect.mapError(
              (cause) =>
                new ArchiveError({
                  reason: "Corrupt",
                  path: Path.join(dir, rel),
                  detail: `the attachment index places blobs in this pack, which could not be read (${cause.detail}): the archive was changed or damaged`,
                  cause,
                }),
            ),
          )
    })
    const files = [...manifest.files, ...manifest.deleted, ...manifest.errors]
      .map((e): [string, string] => [e.sha256, e.path])
      .concat(packRows, metadataRows)
      .sort(byPath)
    // the blobs come in sha256 order, which is their path order (`attachments/<aa>/<sha256>`): merged with
    // the manifest's files and the packs one row at a time, so the rows are never all in memory
    return {
      *[Symbol.iterator]() {
        let f = 0
        for (let b = 0; b < blobs.count; b++) {
          if (blobs.packedAt(b)) continue
          const sha256 = blobs.sha256At(b)
          const blob: [string, string] = [sha256, Attachments.relativePath(sha256)]
          while (f < files.length && byPath(files[f]!, blob) < 0) yield files[f++]!
          yield blob
        }
        while (f < files.length) yield files[f++]!
      },
    } satisfies Iterable<[string, string]>
  })

/**
 * Write `checksums.sha256` (atomically) from the manifest entries, the attachment blobs and packs, the manifest
 * and the attachment index, in the format `sha256sum -c` reads: `<hex>  <path relative to the archive>`. Only
 * the packs, the index and the manifest are hashed: entries carry the hash computed while writing, and a blob's
 * name is its hash. `manifestText` (as `manifestText` gives it): the manifest about to be written, listed with
 * that text's hash (an export writes its final manifest after the checksums); without it, the one on disk.
 */
export const writeChecksums = (
  dir: string,
  manifest: Manifest,
  manifestText?: string,
): Effect.Effect<number, ArchiveError> =>
  Effect.gen(function* () {
    const rows = yield* listed(dir, manifest, "hashed", manifestText)
    let count = 0
    // written in pieces of ≈ 64 KiB (a 1M export lists 43k blobs)
    function* pieces() {
      let piece = ""
      for (const [h, p] of rows) {
        piece += `${h}  ${p}\n`
        count++
        if (piece.length >= 64 * 1024) {
          yield piece
          piece = ""
        }
      }
      if (piece.length > 0) yield piece
    }
    yield* Fs.writeAtomicChunks(Path.join(dir, layout.checksums), pieces())
    return count
  })

/**
 * Re-hash the data, deleted and error files a manifest lists (not the attachment blobs) and compare with the
 * sha256 the export recorded for each, and find data files it does not list (`unexpectedFiles`); with
 * `checksums`, the checksum file's agreement too, and (`/3`) the manifest and the attachment index re-hashed
 * against their rows: what an import checks before it sends anything. Empty = intact.
 */
export const verifyDataFiles = (
  dir: string,
  manifest: Manifest,
  options: {
    readonly concurrency?: number
    /**
     * Also that `checksums.sha256` is there (a complete archive's) and lists every file and blob with the sha256
     * the manifest and the blob names give (read, not re-hashed: blobs are checked as they are read).
     */
    readonly checksums?: boolean
  } = {},
): Effect.Effect<ReadonlyArray<Mismatch>, ArchiveError> =>
  Effect.gen(function* () {
    const files = yield* checkAll(
      dir,
      [...manifest.files, ...manifest.deleted, ...manifest.errors].map((e) => [e.sha256, e.path] as const),
      options.concurrency,
    )
    const unexpected = yield* unexpectedFiles(dir, manifest)
    // (a complete archive has one: export writes it as it completes; without it `verify --archive` fails)
    const hasChecksums = options.checksums === true && (yield* Fs.exists(Path.join(dir, layout.checksums)))
    const agreement = hasChecksums ? yield* checksumAgreement(dir, manifest, undefined) : undefined
    const listing =
      agreement !== undefined
        ? [...agreement.unlisted, ...agreement.checked]
        : options.checksums === true && manifest.complete
          ? [{ path: layout.checksums, problem: "Missing" as const }]
          : []
    return [...files, ...unexpected, ...listing]
  })

/**
 * `verifyDataFiles` without re-hashing the data files: that `checksums.sha256` is there, agrees with the manifest,
 * the attachment index and the blobs' names, and that no data file is outside the manifest; the manifest and
 * the index are re-hashed (they say which bytes are which). For a reader that hashes every file as it reads it
 * against its row (`ferry seal`, `ferry unseal`): one pass over the archive instead of two. Empty = agrees.
 */
export const verifyListing = (
  dir: string,
  manifest: Manifest,
): Effect.Effect<ReadonlyArray<Mismatch>, ArchiveError> =>
  Effect.gen(function* () {
    const unexpected = yield* unexpectedFiles(dir, manifest)
    if (!(yield* Fs.exists(Path.join(dir, layout.checksums))))
      return [...unexpected, { path: layout.checksums, problem: "Missing" as const }]
    const agreement = yield* checksumAgreement(dir, manifest, undefined)
    return [...unexpected, ...agreement.unlisted, ...agreement.checked]
  })

/**
 * NDJSON files in `data/`, `deleted/` or `errors/` that the manifest does not list (a file added by hand, or an
 * entry removed from the manifest): no reader would see them, so data would be left out without a word. Also
 * the `checksums.sha256` rows of such files the manifest does not list (an entry removed from the manifest
 * after the file was gone too). Only for a complete archive: an unfinished one writes files before it lists
 * them.
 */
const unexpectedFiles = (dir: string, manifest: Manifest): Effect.Effect<Array<Mismatch>, ArchiveError> =>
  Effect.gen(function* () {
    if (!manifest.complete) return []
    const known = new Set([...manifest.files, ...manifest.deleted, ...manifest.errors].map((e) => e.path))
    const out: Array<Mismatch> = []
    const seen = new Set<string>()
    const unexpected = (rel: string) => {
      if (known.has(rel) || seen.has(rel)) return
      seen.add(rel)
      out.push({ path: rel, problem: "NotInManifest" })
    }
    for (const section of [layout.data, layout.deleted, layout.errors]) {
      const folder = Path.join(dir, section)
      const names = yield* Effect.try({
        try: () => (NFS.existsSync(folder) ? NFS.readdirSync(folder) : []),
        catch: (cause) =>
          new ArchiveError({ reason: "Io", path: folder, detail: "the folder could not be listed", cause }),
      })
      for (const name of names.sort())
        if (name.endsWith(".ndjson") || name.endsWith(".ndjson.gz")) unexpected(`${section}/${name}`)
    }
    const checksums = Path.join(dir, layout.checksums)
    if (yield* Fs.exists(checksums))
      yield* checksumRows(checksums).pipe(
        Stream.runForEach(([, rel]) =>
          Effect.sync(() => {
            if (!rel.startsWith(`${layout.attachments}/`) && !metadataFiles.has(rel)) unexpected(rel)
          }),
        ),
      )
    return out
  })

/** Re-hash each `[sha256, path]` under `dir`: the missing and the changed ones. */
const checkAll = (
  dir: string,
  rows: ReadonlyArray<readonly [string, string]>,
  concurrency = 2,
): Effect.Effect<Array<Mismatch>, ArchiveError> =>
  Effect.forEach(rows, ([expected, rel]) => checkOne(dir, expected, rel), { concurrency }).pipe(
    Effect.map((rs) => rs.filter((r): r is Mismatch => r !== undefined)),
  )

/** Re-hash one file: missing, changed, or undefined when it holds the recorded bytes. */
const checkOne = (
  dir: string,
  expected: string,
  rel: string,
): Effect.Effect<Mismatch | undefined, ArchiveError> =>
  Effect.gen(function* () {
    const file = Path.join(dir, rel)
    const missing: Mismatch = { path: rel, problem: "Missing", expected }
    if (!(yield* Fs.exists(file))) return missing
    const { sha256 } = yield* Fs.hashFile(file)
    const changed: Mismatch = { path: rel, problem: "Changed", expected, actual: sha256 }
    return sha256 === expected ? undefined : changed
  })

/**
 * One sentence for the first of `mismatches` (and how many more), saying what to do. `manifest`: the archive's
 * (its format says whether a missing checksum file can be written again).
 */
export const describeMismatches = (mismatches: ReadonlyArray<Mismatch>, manifest?: Manifest): string => {
  const first = mismatches[0]!
  // an archive an older ferry completed and was killed before it wrote the file: an export rerun writes it; a /3
  // archive had it before it was complete, so it was lost since
  if (first.problem === "Missing" && first.path === layout.checksums && mismatches.length === 1)
    return manifest !== undefined && checksumsCoverMetadata(manifest.format)
      ? `${layout.checksums} is missing (it was written before the archive was complete, so it was removed or lost since): restore the archive from a copy, or export again`
      : `${layout.checksums} is missing (a ferry stopped before it wrote it, or the archive was damaged): run the same ferry export again (same --out) to write it, or restore the archive from a copy`
  const what =
    first.problem === "Missing"
      ? `${first.path} is missing`
      : first.problem === "Changed"
        ? `${first.path} does not hold the bytes the export recorded (sha256 ${first.actual?.slice(0, 12)}…, expected ${first.expected?.slice(0, 12)}…)`
        : first.problem === "NotInManifest"
          ? `${first.path} is not in manifest.json (a file added by hand, or an entry removed from the manifest)`
          : first.actual !== undefined
            ? `checksums.sha256 lists ${first.path} with another sha256 (${first.actual.slice(0, 12)}…, expected ${first.expected?.slice(0, 12) ?? "?"}…)`
            : `${first.path} is not covered by checksums.sha256`
  const more = mismatches.length > 1 ? ` (and ${mismatches.length - 1} more)` : ""
  return `the archive was changed or damaged: ${what}${more}; restore the archive from a copy, or export again`
}

export interface Mismatch {
  readonly path: string
  /** Missing: listed but not on disk. Changed: bytes differ from the recorded hash. Unlisted: in the manifest
   * or attachments but not in checksums.sha256 (or listed with another hash). NotInManifest: a data, deleted or
   * errors file (on disk, or a row of checksums.sha256) the manifest does not list. */
  readonly problem: "Missing" | "Changed" | "Unlisted" | "NotInManifest"
  readonly expected?: string
  readonly actual?: string
}

/**
 * Re-hash every file listed in `checksums.sha256` and compare; also report manifest entries and attachment
 * blobs the checksum file does not cover, and data files the manifest does not list (`unexpectedFiles`). An
 * empty result means the archive is intact.
 *
 * The checksum file is read line by line and merged with what it should list (`listed`, in path order, as
 * `writeChecksums` writes it): an archive with a million blobs is checked without its rows in memory. A file
 * not in path order (edited by hand) is compared through a map of its rows instead.
 */
export const verifyChecksums = (
  dir: string,
  options: { readonly concurrency?: number } = {},
): Effect.Effect<ReadonlyArray<Mismatch>, ArchiveError> =>
  Effect.gen(function* () {
    const manifest = yield* readManifest(dir)
    const path = Path.join(dir, layout.checksums)
    if (!(yield* Fs.exists(path))) {
      return yield* new ArchiveError({ reason: "Corrupt", path, detail: "checksums.sha256 is missing" })
    }
    const { checked, unlisted } = yield* checksumAgreement(dir, manifest, options.concurrency ?? 2)
    // a file whose bytes are what the manifest records, listed with another sha256: the row changed, not the
    // file (said as such by its `unlisted` entry, not as a changed file)
    const rowChanged = new Map(
      unlisted.flatMap((m) => (m.actual !== undefined ? [[m.path, m.expected]] : [])),
    )
    const files = checked.filter((m) => !(m.problem === "Changed" && rowChanged.get(m.path) === m.actual))
    // a changed manifest or index said after what it changed (an entry removed: that file is not in the manifest)
    const isMetadata = (m: Mismatch) => metadataFiles.has(m.path)
    return [
      ...files.filter((m) => !isMetadata(m)),
      ...(yield* unexpectedFiles(dir, manifest)),
      ...unlisted,
      ...files.filter(isMetadata),
    ]
  })

/** The sha256 of the archive's `checksums.sha256` (streamed): what ties a report to this archive's bytes. */
export const checksumsSha256 = (dir: string): Effect.Effect<string, ArchiveError> =>
  Effect.map(Fs.hashFile(Path.join(dir, layout.checksums)), (h) => h.sha256)

/**
 * The checksum file against what it should list (`listed`): the files and blobs it misses or lists with another
 * sha256 (`unlisted`), and, with `concurrency` (files re-hashed at once), the listed files that are missing or
 * changed (`checked`); without it, nothing is read again (a caller that checks the bytes itself).
 */
const checksumAgreement = (
  dir: string,
  manifest: Manifest,
  concurrency: number | undefined,
): Effect.Effect<{ readonly checked: Array<Mismatch>; readonly unlisted: Array<Mismatch> }, ArchiveError> =>
  Effect.gen(function* () {
    const path = Path.join(dir, layout.checksums)
    // what should be listed, merged with the rows as they are read (both in path order)
    const should = (yield* listed(dir, manifest, "named"))[Symbol.iterator]()
    let want = should.next()
    const unlisted: Array<Mismatch> = []
    const missingRow = (h: string, p: string, have?: string): Mismatch => ({
      path: p,
      problem: "Unlisted",
      ...(h !== ANY ? { expected: h } : {}),
      ...(have !== undefined ? { actual: have } : {}),
    })
    let previous: string | undefined
    let ordered = true
    const merge = (h: string, p: string): void => {
      if (!ordered) return
      if (previous !== undefined && p < previous) {
        ordered = false
        return
      }
      previous = p
      while (want.done !== true && want.value[1] < p) {
        unlisted.push(missingRow(want.value[0], want.value[1]))
        want = should.next()
      }
      if (want.done !== true && want.value[1] === p) {
        if (want.value[0] !== h && want.value[0] !== ANY) unlisted.push(missingRow(want.value[0], p, h))
        want = should.next()
      }
    }
    const rows = checksumRows(path).pipe(Stream.tap(([h, p]) => Effect.sync(() => merge(h, p))))
    const checked =
      concurrency === undefined
        ? // the manifest and the index are re-hashed all the same: what says which bytes are which
          Chunk.toArray(
            yield* rows.pipe(
              Stream.mapEffect(([expected, rel]) =>
                metadataFiles.has(rel) ? checkOne(dir, expected, rel) : Effect.succeed(undefined),
              ),
              Stream.filter((m): m is Mismatch => m !== undefined),
              Stream.runCollect,
            ),
          )
        : Chunk.toArray(
            yield* rows.pipe(
              Stream.mapEffect(([expected, rel]) => checkOne(dir, expected, rel), { concurrency }),
              Stream.filter((m): m is Mismatch => m !== undefined),
              Stream.runCollect,
            ),
          )
    if (ordered) {
      for (; want.done !== true; want = should.next()) unlisted.push(missingRow(want.value[0], want.value[1]))
      return { checked, unlisted }
    }
    // rows out of path order (a file edited by hand): compared through a map of them, read again
    const byPath = new Map<string, string>()
    yield* checksumRows(path).pipe(Stream.runForEach(([h, p]) => Effect.sync(() => void byPath.set(p, h))))
    const again: Array<Mismatch> = []
    for (const [h, p] of yield* listed(dir, manifest, "named")) {
      const have = byPath.get(p)
      if (have === undefined || (have !== h && h !== ANY)) again.push(missingRow(h, p, have))
    }
    return { checked, unlisted: again }
  })

/** The `[sha256, path]` rows of a checksum file, in file order; a malformed line or an escaping path fails. */
export const checksumRows = (path: string): Stream.Stream<[string, string], ArchiveError> =>
  Ndjson.readFileSplit(path, { label: layout.checksums }).pipe(
    Stream.mapError(
      (e) =>
        new ArchiveError({
          reason: e.reason === "Io" ? "Io" : "Corrupt",
          path,
          ...(e.line > 0 ? { line: e.line } : {}),
          detail: e.detail,
          cause: e,
        }),
    ),
    Stream.mapEffect((l) => {
      const row = parseChecksumRow(l.text)
      return typeof row === "string"
        ? Effect.fail(new ArchiveError({ reason: "Corrupt", path, line: l.line, detail: row }))
        : Effect.succeed(row)
    }),
  )

/** One line of `checksums.sha256` as `[sha256, path]`, or what is wrong with it. */
export const parseChecksumRow = (text: string): [string, string] | string => {
  const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(text)
  if (!m) return "not `<sha256>  <path>`"
  const rel = m[2]!
  return leavesArchive(rel) ? `path ${rel} leaves the archive` : [m[1]!, rel]
}

export { ArchiveError, FileEntry, Manifest }
