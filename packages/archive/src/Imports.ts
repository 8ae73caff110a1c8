/**
 * Where one import of an archive into one target keeps its state, inside the archive:
 *
 * ```
 * imports/<target>/              0700, one folder per target server (an archive may be replayed into several)
 *   journal.ndjson               the import's crash-safe journal (chunk intents and results)
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

export const layout = {
  root: "imports",
  journal: "journal.ndjson",
  idMap: "idmap.ndjson",
  binaries: "binaries.ndjson",
  quarantine: "quarantine",
  events: "events.ndjson",
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

export const idMapPath = (archiveDir: string, targetBaseUrl: string): string =>
  Path.join(dir(archiveDir, targetBaseUrl), layout.idMap)

export const journalPath = (archiveDir: string, targetBaseUrl: string): string =>
  Path.join(dir(archiveDir, targetBaseUrl), layout.journal)

export const binariesPath = (archiveDir: string, targetBaseUrl: string): string =>
  Path.join(dir(archiveDir, targetBaseUrl), layout.binaries)

export const quarantineDir = (archiveDir: string, targetBaseUrl: string): string =>
  Path.join(dir(archiveDir, targetBaseUrl), layout.quarantine)

/**
 * Resources still waiting in `quarantine/` (lines of its `<Type>.ndjson` files; a `--retry-quarantine` run
 * sets the files it replays aside and quarantines anew only what fails again). 0 when there is no folder.
 */
/**
 * Suffix of a type's quarantine file while `--retry-quarantine` replays it (`<Type>.ndjson.replaying`); one
 * left behind by a run that stopped mid-replay is still pending.
 */
export const REPLAYING = ".replaying"

export const pendingQuarantine = (archiveDir: string, targetBaseUrl: string): number => {
  const q = quarantineDir(archiveDir, targetBaseUrl)
  if (!NFS.existsSync(q)) return 0
  let n = 0
  for (const name of NFS.readdirSync(q)) {
    if (!name.endsWith(".ndjson") && !name.endsWith(`.ndjson${REPLAYING}`)) continue
    for (const line of NFS.readFileSync(Path.join(q, name), "utf8").split("\n")) if (line.trim() !== "") n++
  }
  return n
}
