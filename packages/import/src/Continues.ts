/**
 * An incremental archive (`manifest.previous`: exported `--since` an earlier archive's `transactionTime`) goes
 * into a target that an earlier import filled from that earlier archive. With `post` the target's ids are its
 * own, so the delta's updates and deletes reach the right resources only through that import's id map: it is
 * copied in from the earlier archive beside this one (same parent directory, finished, `transactionTime`
 * equal to this archive's `previous.transactionTime`), with its record of uploaded attachment Binaries; the
 * `--drop-meta` that import kept is read too (`Seeded.dropMeta`), for a delta imported without the flag.
 * `ferry import` and `ferry migrate --since auto` both do this before their first chunk.
 */
import * as NFS from "node:fs"
import * as Path from "node:path"
import { makeDirsSync } from "@ferry/core/Dirs"
import * as Archive from "@ferry/archive/Archive"
import * as Imports from "@ferry/archive/Imports"
import * as Journal from "@ferry/archive/Journal"
import { Effect, Option } from "effect"
import { ImportError } from "./ImportError.js"

/** An I/O failure on the archive's import (or migration) state at `path`. */
export const io = (path: string) => (cause: unknown) =>
  new ImportError({
    reason: "Archive",
    url: path,
    detail: `could not read or write the archive's import state (${cause instanceof Error ? cause.message : String(cause)}); check the archive directory is writable`,
    cause,
  })

/** Copies `from` to `to` (via a temp file, fsynced, and rename) unless `to` exists; whether it copied. */
export const copyIfAbsent = (from: string, to: string): Effect.Effect<boolean, ImportError> =>
  Effect.try({
    try: () => {
      if (!NFS.existsSync(from) || NFS.existsSync(to)) return false
      makeDirsSync(Path.dirname(to), 0o700)
      const tmp = `${to}.tmp`
      NFS.copyFileSync(from, tmp)
      NFS.chmodSync(tmp, 0o600)
      // durable before it is named: an empty id map after a power loss would lose the earlier run's mappings
      const fd = NFS.openSync(tmp, "r+")
      try {
        NFS.fsyncSync(fd)
      } finally {
        NFS.closeSync(fd)
      }
      NFS.renameSync(tmp, to)
      return true
    },
    catch: io(to),
  }).pipe(
    // its directory entry durable too
    Effect.tap((copied) => (copied ? Archive.syncParent(to).pipe(Effect.mapError(io(to))) : Effect.void)),
  )

/**
 * The finished sibling archive an incremental export continues (same parent directory, `transactionTime`
 * equal to `since`), if any; with `target`, only one that was imported into it (copies of one export imported
 * into different targets share their `transactionTime`).
 */
export const previousArchive = (
  archive: string,
  since: string,
  target?: string,
): Effect.Effect<Option.Option<string>, ImportError> =>
  Effect.gen(function* () {
    const abs = Path.resolve(archive)
    const parent = Path.dirname(abs)
    const names = yield* Effect.try({ try: () => NFS.readdirSync(parent), catch: io(parent) })
    for (const name of names.sort().reverse()) {
      const dir = Path.join(parent, name)
      if (dir === abs || !NFS.existsSync(Path.join(dir, "manifest.json"))) continue
      if (target !== undefined && !NFS.existsSync(Imports.dir(dir, target))) continue
      const m = yield* Archive.readManifest(dir).pipe(Effect.option)
      if (Option.isSome(m) && m.value.complete && m.value.transactionTime === since) return Option.some(dir)
    }
    return Option.none<string>()
  })

/**
 * Whether the import of `dir` into `target` ran to its end: a `ferry migrate`'s by its ledger (`migrate.done`:
 * its waves are imports of parts), a `ferry import`'s by its journal (`import.done`).
 */
export const importFinished = (dir: string, target: string): boolean => {
  const ledger = Imports.readMigrateLedger(dir, target)
  if (ledger !== undefined) return ledger.done
  const journal = Imports.journalPath(dir, target)
  return NFS.existsSync(journal) && NFS.readFileSync(journal, "utf8").includes('"kind":"import.done"')
}

/** What `seed` found. */
export interface Seeded {
  /** The earlier archive this one continues, when found beside it. */
  readonly previous: Option.Option<string>
  /** Its id map for the target: copied now, here already (a rerun), or none there. */
  readonly idMap: "copied" | "here" | "none"
  /** Whether its import into the target ran to its end (`importFinished`). */
  readonly finished: boolean
  /** What its finished import into the target journaled as `import.dropMeta` (the `--drop-meta` it kept). */
  readonly dropMeta: unknown
}

/** The data of the latest `key` entry of the import journal of `dir` into `target` (undefined: none). */
const journaled = (dir: string, target: string, key: string): Effect.Effect<unknown, ImportError> => {
  const path = Imports.journalPath(dir, target)
  return Journal.load(path).pipe(
    Effect.map((state) => state.byKey.get(key)?.data),
    Effect.mapError(
      (e) =>
        new ImportError({
          reason: "Archive",
          url: path,
          detail: `${e.message}; the earlier archive's import journal cannot be read`,
          cause: e,
        }),
    ),
  )
}

/**
 * For an incremental archive: copies the id map and the Binaries record of `target` from the archive it
 * continues, unless this archive has them already (a rerun, or a copy made before), and only when that
 * archive's import ran to its end. Nothing for a full one.
 */
export const seed = (archive: string, since: string, target: string): Effect.Effect<Seeded, ImportError> =>
  Effect.gen(function* () {
    const previous = yield* previousArchive(archive, since, target)
    if (Option.isNone(previous)) return { previous, idMap: "none", finished: false, dropMeta: undefined }
    // an import that did not run to its end may still add mappings: nothing is copied from it (a copy would
    // never see them)
    const finished = importFinished(previous.value, target)
    if (!finished) return { previous, idMap: "none", finished, dropMeta: undefined }
    const copied: Array<string> = []
    for (const name of [Imports.layout.idMap, Imports.layout.binaries]) {
      const from = Path.join(Imports.dir(previous.value, target), name)
      const to = Path.join(Imports.dir(archive, target), name)
      if (yield* copyIfAbsent(from, to)) copied.push(name)
    }
    const idMap = copied.includes(Imports.layout.idMap)
      ? "copied"
      : NFS.existsSync(Path.join(Imports.dir(archive, target), Imports.layout.idMap))
        ? "here"
        : "none"
    return {
      previous,
      idMap,
      finished,
      dropMeta: yield* journaled(previous.value, target, "import.dropMeta"),
    }
  })
