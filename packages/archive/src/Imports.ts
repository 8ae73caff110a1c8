/**
 * Where one import of an archive into one target keeps its state, inside the archive:
 *
 * ```
 * imports/<target>/              0700, one folder per target server (an archive may be replayed into several)
 *   journal.ndjson               the import's crash-safe journal (strategy, each chunk once it landed, deletes done)
 *   idmap.ndjson                 source Type/id → target Type/id, append-only ({"s":"Patient/1","t":"Patient/abc"})
 *   binaries.ndjson              attachment sha256 → target Binary id, append-only
 *   quarantine/<Type>.ndjson     resources the target refused, each with its OperationOutcome and source file:line
 *   events.ndjson                the import's event log (no tokens, no resource bodies)
 * ```
 *
 * `verify` reads `idmap.ndjson` to compare a source resource with its target counterpart.
 */
import * as NFS from "node:fs"
import * as Path from "node:path"
import type { Effect, Scope } from "effect"
import type { ArchiveError } from "./ArchiveError.js"
import * as Fs from "./internal/fs.js"

export const layout = {
  root: "imports",
  journal: "journal.ndjson",
  idMap: "idmap.ndjson",
  binaries: "binaries.ndjson",
  quarantine: "quarantine",
  events: "events.ndjson",
  /** `ferry migrate`'s ledger of waves and pruned files. */
  migrateLedger: "migrate.ndjson",
} as const

/**
 * A stable folder name for a target base URL: scheme dropped, anything outside `[A-Za-z0-9.-]` → `_`.
 * `http://127.0.0.1:8080/fhir` → `127.0.0.1_8080_fhir`.
 */
export const targetSlug = (targetBaseUrl: string): string =>
  targetBaseUrl
    .replace(/^[a-z][a-z0-9+.-]*:\/\//i, "")
    .replace(/\/+$/, "")
    .replace(/[^A-Za-z0-9.-]/g, "_")

/** The folder of the import of `archiveDir` into `targetBaseUrl`. */
export const dir = (archiveDir: string, targetBaseUrl: string): string =>
  Path.join(archiveDir, layout.root, targetSlug(targetBaseUrl))

/**
 * Durable appends (each fsynced before it returns) to an import-state file that stays open until the scope
 * closes (see `Fs.appender`): for the id map, appended once per Bundle. Not for quarantine files (renamed
 * while a retry replays them).
 */
export const durableAppender = (
  path: string,
): Effect.Effect<(text: string) => Effect.Effect<void, ArchiveError>, never, Scope.Scope> =>
  Fs.appender(path, { durable: true })

export const idMapPath = (archiveDir: string, targetBaseUrl: string): string =>
  Path.join(dir(archiveDir, targetBaseUrl), layout.idMap)

/** `ferry migrate`'s ledger of waves and pruned files for one target (`imports/<target>/migrate.ndjson`). */
export const migrateLedgerPath = (archiveDir: string, targetBaseUrl: string): string =>
  Path.join(dir(archiveDir, targetBaseUrl), layout.migrateLedger)

export const journalPath = (archiveDir: string, targetBaseUrl: string): string =>
  Path.join(dir(archiveDir, targetBaseUrl), layout.journal)

export const binariesPath = (archiveDir: string, targetBaseUrl: string): string =>
  Path.join(dir(archiveDir, targetBaseUrl), layout.binaries)

export const quarantineDir = (archiveDir: string, targetBaseUrl: string): string =>
  Path.join(dir(archiveDir, targetBaseUrl), layout.quarantine)

/**
 * Suffix of a type's quarantine file while `--retry-quarantine` replays it (`<Type>.ndjson.replaying`); one
 * left behind by a run that stopped mid-replay is still pending.
 */
export const REPLAYING = ".replaying"

/**
 * What a quarantine line is about: the resource's `Type/id`, or (a `$import` rejection, which carries no body)
 * its `source` file:line. A kill can leave the same resource quarantined twice (its chunk sent again by the
 * rerun, with an outcome worded anew; a replay stopped between its two files): it counts, and is replayed, once.
 */
export const quarantineKey = (line: string): string => {
  try {
    const q = JSON.parse(line) as {
      resource?: { resourceType?: unknown; id?: unknown } | null
      source?: unknown
    }
    const r = q.resource
    if (typeof r === "object" && r !== null && typeof r.resourceType === "string" && typeof r.id === "string")
      return `${r.resourceType}/${r.id}`
    // a source with its line names one resource; one without (the target named no line) does not
    if (typeof q.source === "string" && /:\d+$/.test(q.source)) return `source:${q.source}`
  } catch {
    // a line that does not parse is counted as itself (the import that reads it names it)
  }
  return `line:${line}`
}

/** Whether `quarantine/` holds lines of this type (its `<Type>.ndjson`, or one a stopped retry set aside). */
export const quarantines = (archiveDir: string, targetBaseUrl: string, type: string): boolean =>
  [`${type}.ndjson`, `${type}.ndjson${REPLAYING}`].some(
    (name) =>
      (NFS.statSync(Path.join(quarantineDir(archiveDir, targetBaseUrl), name), { throwIfNoEntry: false })
        ?.size ?? 0) > 0,
  )

/**
 * Resources still waiting in `quarantine/`: the distinct `quarantineKey`s of its `<Type>.ndjson` files and of
 * the `.replaying` files a stopped `--retry-quarantine` left (a run sets the files it replays aside and
 * quarantines anew only what fails again). 0 when there is no folder.
 */
export const pendingQuarantine = (archiveDir: string, targetBaseUrl: string): number =>
  quarantineCounts(archiveDir, targetBaseUrl).total

/**
 * `pendingQuarantine`, how many of those the import held back itself because they refer to a resource that
 * has no id on the target (`waitingOn` in the line), and how many it cannot send as the archive holds them
 * (`"cause":"archive"`: no id): the target refused only the rest.
 */
export const quarantineCounts = (
  archiveDir: string,
  targetBaseUrl: string,
): { readonly total: number; readonly waiting: number; readonly inArchive: number } => {
  const q = quarantineDir(archiveDir, targetBaseUrl)
  if (!NFS.existsSync(q)) return { total: 0, waiting: 0, inArchive: 0 }
  const keys = new Map<string, "refused" | "waiting" | "archive">()
  // the `.replaying` files first: what a retry set aside is older than what it (or a later run) quarantined
  const names = NFS.readdirSync(q).sort(
    (a, b) => Number(!a.endsWith(REPLAYING)) - Number(!b.endsWith(REPLAYING)),
  )
  for (const name of names) {
    if (!name.endsWith(".ndjson") && !name.endsWith(`.ndjson${REPLAYING}`)) continue
    const file = name.endsWith(REPLAYING) ? name.slice(0, -REPLAYING.length) : name
    for (const line of NFS.readFileSync(Path.join(q, name), "utf8").split("\n")) {
      if (line.trim() === "") continue
      const key = `${file} ${quarantineKey(line)}`
      // the line quarantined last says why it waits (a retry may have turned a hold into a refusal)
      keys.set(
        key,
        line.includes('"waitingOn":')
          ? "waiting"
          : line.includes('"cause":"archive"')
            ? "archive"
            : "refused",
      )
    }
  }
  let waiting = 0
  let inArchive = 0
  for (const w of keys.values()) {
    if (w === "waiting") waiting++
    else if (w === "archive") inArchive++
  }
  return { total: keys.size, waiting, inArchive }
}

/**
 * What `ferry migrate`'s ledger says (a torn last line, which the Journal cuts off on open, is skipped): the
 * data files its waves imported, those it pruned (with their bytes), how many waves ran, whether it finished.
 */
export const parseMigrateLedger = (
  text: string,
): {
  readonly imported: Set<string>
  readonly pruned: Map<string, number>
  readonly waves: number
  readonly done: boolean
} => {
  const imported = new Set<string>()
  const pruned = new Map<string, number>()
  let waves = 0
  let done = false
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue
    let parsed: { kind?: unknown; data?: unknown }
    try {
      parsed = JSON.parse(line) as { kind?: unknown; data?: unknown }
    } catch {
      continue
    }
    const data = (typeof parsed.data === "object" && parsed.data !== null ? parsed.data : {}) as {
      files?: unknown
      path?: unknown
      bytes?: unknown
    }
    if (parsed.kind === "migrate.wave") {
      waves++
      if (Array.isArray(data.files)) for (const f of data.files) if (typeof f === "string") imported.add(f)
    } else if (parsed.kind === "migrate.replaced") {
      // the export replaced these files with a new job's (after a re-kick-off): to be imported again
      // (a pruned one among them is back: the new job's file, not pruned yet)
      if (Array.isArray(data.files))
        for (const f of data.files)
          if (typeof f === "string") {
            imported.delete(f)
            pruned.delete(f)
          }
    } else if (parsed.kind === "migrate.pruned" && typeof data.path === "string") {
      pruned.set(data.path, typeof data.bytes === "number" ? data.bytes : 0)
    } else if (parsed.kind === "migrate.done") done = true
  }
  return { imported, pruned, waves, done }
}

/** Whether `ferry migrate` made the archive (its ledger, `imports/<target>/migrate.ndjson`, is there). */
export const madeByMigrate = (dir: string): boolean => {
  const imports = Path.join(dir, layout.root)
  return (
    NFS.existsSync(imports) &&
    NFS.readdirSync(imports).some((t) => NFS.existsSync(Path.join(imports, t, layout.migrateLedger)))
  )
}

/** `ferry migrate`'s ledger of `archiveDir` for a target, read (`parseMigrateLedger`); none when there is none. */
export const readMigrateLedger = (
  archiveDir: string,
  targetBaseUrl: string,
): ReturnType<typeof parseMigrateLedger> | undefined => {
  const path = migrateLedgerPath(archiveDir, targetBaseUrl)
  return NFS.existsSync(path) ? parseMigrateLedger(NFS.readFileSync(path, "utf8")) : undefined
}
