/**
 * The sandbox's storage: one SQLite database (better-sqlite3, synchronous, WAL) holding the current
 * version of every resource, tombstones of deleted ones, a reference index, an identifier index and
 * the raw bytes of Binary resources.
 *
 * Time: `now()` is strictly increasing per call. Writes inside one `tx` share the instant taken when
 * the outermost `tx` started, so a Bundle's resources carry one `lastUpdated`; ordering is by
 * `(lastUpdated, id)`. Filters: `since` is inclusive (>=), `until` exclusive (<).
 *
 * Iteration never keeps a SQLite cursor open across yields: it pages by keyset (500 rows), so other
 * requests can use the connection while an export streams.
 */
import { randomUUID } from "node:crypto"
import * as NFS from "node:fs"
import Database from "better-sqlite3"
import { withNumbers, writtenNumbers } from "@ferry/core/NumberText"
import { extractIdentifiers, extractReferences } from "./internal/References.js"

/** Whether the file at `path` begins as an SQLite database does ("SQLite format 3\0"). */
const isSqlite = (path: string): boolean => {
  const fd = NFS.openSync(path, "r")
  try {
    const head = Buffer.alloc(16)
    return NFS.readSync(fd, head, 0, 16, 0) === 16 && head.toString("latin1") === "SQLite format 3\u0000"
  } finally {
    NFS.closeSync(fd)
  }
}

export interface StoredResource {
  readonly type: string
  readonly id: string
  readonly versionId: number
  readonly lastUpdated: string
  /** The resource as served, with meta.versionId / meta.lastUpdated set. */
  readonly json: string
}

export type LastUpdatedOp = "gt" | "ge" | "lt" | "le"

export interface IterateOptions {
  /** lastUpdated >= since */
  readonly since?: string
  /** lastUpdated < until */
  readonly until?: string
  readonly ids?: readonly string[]
  /** Resources holding a reference to one of `targets` ("Patient/123"), optionally only under the given top-level elements. */
  readonly referencing?: { readonly targets: readonly string[]; readonly paths?: readonly string[] }
  /** Top-level identifier match; `system` undefined = any system, "" = no system. */
  readonly identifier?: { readonly system?: string; readonly value: string }
  /** Extra bounds on lastUpdated (ISO instants, already normalized to UTC `…Z`). */
  readonly lastUpdated?: ReadonlyArray<{ readonly op: LastUpdatedOp; readonly value: string }>
  /** Keyset cursor: only rows strictly after (lastUpdated, id). */
  readonly after?: { readonly lastUpdated: string; readonly id: string }
  /** Stop after this many rows. */
  readonly limit?: number
}

interface Row {
  type: string
  id: string
  version: number
  last_updated: string
  json: string
}

const toStored = (r: Row): StoredResource => ({
  type: r.type,
  id: r.id,
  versionId: r.version,
  lastUpdated: r.last_updated,
  json: r.json,
})

const PAGE = 500
/** Up to this many matches, a reference filter is resolved to an id list first (see `where`). */
const SMALL_SET = 10_000

/**
 * `resources.keys`: the resource's rows in `refs` and `idents`, as JSON `[[path, target]…, [system, value]…]`
 * split at `refs_count`, so an update or delete removes exactly those rows by their primary keys. (An index
 * on the source of `refs` and one on the resource of `idents` did the same and cost ≈ 30 % of a create.)
 * Databases written before the column existed keep those indexes, and their older rows (`keys` NULL) are
 * cleaned up through them.
 */
const schema = `
CREATE TABLE IF NOT EXISTS resources (
  type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, last_updated TEXT NOT NULL,
  deleted INTEGER NOT NULL DEFAULT 0, json TEXT, keys TEXT, refs_count INTEGER);
CREATE UNIQUE INDEX IF NOT EXISTS resources_pk ON resources (type, id);
CREATE INDEX IF NOT EXISTS resources_by_time ON resources (type, last_updated, id);
CREATE TABLE IF NOT EXISTS refs (target TEXT NOT NULL, src_type TEXT NOT NULL, path TEXT NOT NULL, src_id TEXT NOT NULL,
  PRIMARY KEY (target, src_type, path, src_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idents (type TEXT NOT NULL, value TEXT NOT NULL, system TEXT NOT NULL, id TEXT NOT NULL,
  PRIMARY KEY (type, value, system, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS binaries (id TEXT PRIMARY KEY, content_type TEXT NOT NULL, bytes BLOB NOT NULL);
`

export class Store {
  private readonly db: Database.Database
  private readonly statements = new Map<string, Database.Statement>()
  private readonly txRun: (fn: () => unknown) => unknown
  private last = 0
  private txTime: string | undefined = undefined
  private depth = 0
  private base: string | undefined = undefined

  private readonly sGet: Database.Statement<[string, string], Row & { deleted: number }>
  private readonly sVersion: Database.Statement<[string, string], { version: number; deleted: number }>
  private readonly sUpsert: Database.Statement
  private readonly sKeys: Database.Statement<
    [string, string],
    { keys: string | null; refs_count: number | null }
  >
  private readonly sDelRef: Database.Statement
  private readonly sAddRef: Database.Statement
  private readonly sDelIdent: Database.Statement
  private readonly sAddIdent: Database.Statement
  /** Databases from before `resources.keys`: removes a resource's rows through the old indexes. */
  private readonly legacy:
    | { readonly refs: Database.Statement; readonly idents: Database.Statement }
    | undefined
  private readonly sTombstone: Database.Statement
  private readonly sPutBytes: Database.Statement
  private readonly sGetBytes: Database.Statement<[string], { content_type: string; bytes: Buffer }>

  private constructor(db: Database.Database) {
    this.db = db
    const columns = db.prepare("SELECT name FROM pragma_table_info('resources')").all() as Array<{
      name: string
    }>
    if (columns.length > 0 && !columns.some((c) => c.name === "keys")) {
      db.exec(
        "ALTER TABLE resources ADD COLUMN keys TEXT; ALTER TABLE resources ADD COLUMN refs_count INTEGER",
      )
    }
    db.exec(schema)
    const hasIndex = (name: string) =>
      db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?").get(name) !== undefined
    this.legacy =
      hasIndex("refs_by_source") && hasIndex("idents_by_resource")
        ? {
            refs: db.prepare("DELETE FROM refs WHERE src_type = ? AND src_id = ?"),
            idents: db.prepare("DELETE FROM idents WHERE type = ? AND id = ?"),
          }
        : undefined
    const max = db.prepare("SELECT max(last_updated) AS m FROM resources").get() as { m: string | null }
    if (max.m) this.last = Date.parse(max.m)
    this.sGet = db.prepare(
      "SELECT type, id, version, last_updated, deleted, json FROM resources WHERE type = ? AND id = ?",
    )
    this.sVersion = db.prepare("SELECT version, deleted FROM resources WHERE type = ? AND id = ?")
    this.sUpsert = db.prepare(
      `INSERT INTO resources (type, id, version, last_updated, deleted, json, keys, refs_count) VALUES (?, ?, ?, ?, 0, ?, ?, ?)
       ON CONFLICT (type, id) DO UPDATE SET version = excluded.version, last_updated = excluded.last_updated,
       deleted = 0, json = excluded.json, keys = excluded.keys, refs_count = excluded.refs_count`,
    )
    this.sKeys = db.prepare("SELECT keys, refs_count FROM resources WHERE type = ? AND id = ?")
    this.sDelRef = db.prepare(
      "DELETE FROM refs WHERE target = ? AND src_type = ? AND path = ? AND src_id = ?",
    )
    this.sAddRef = db.prepare(
      "INSERT OR IGNORE INTO refs (src_type, src_id, path, target) VALUES (?, ?, ?, ?)",
    )
    this.sDelIdent = db.prepare("DELETE FROM idents WHERE type = ? AND value = ? AND system = ? AND id = ?")
    this.sAddIdent = db.prepare("INSERT OR IGNORE INTO idents (type, id, system, value) VALUES (?, ?, ?, ?)")
    this.sTombstone = db.prepare(
      "UPDATE resources SET deleted = 1, json = NULL, keys = '[]', refs_count = 0, version = version + 1, last_updated = ? WHERE type = ? AND id = ?",
    )
    this.sPutBytes = db.prepare(
      "INSERT INTO binaries (id, content_type, bytes) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET content_type = excluded.content_type, bytes = excluded.bytes",
    )
    this.sGetBytes = db.prepare("SELECT content_type, bytes FROM binaries WHERE id = ?")
    this.txRun = db.transaction((fn: () => unknown) => fn())
  }

  /** Opens (and creates) the database at `path`, or an in-memory one for ":memory:". */
  static open(path: string): Store {
    // the data is patients' (seeded or loaded): the file only for its owner; SQLite gives the WAL and shared
    // memory files the database file's mode
    if (path !== ":memory:") {
      // a file that holds something else is refused as it is (its mode untouched): a wrong --db
      if (NFS.existsSync(path) && NFS.statSync(path).size > 0 && !isSqlite(path))
        throw new Error(
          "this file is not a sandbox database (no SQLite header); give --db a new file name, or one a sandbox made",
        )
      NFS.closeSync(NFS.openSync(path, "a", 0o600))
      NFS.chmodSync(path, 0o600)
    }
    const db = new Database(path)
    // 16 KiB pages for a new database (resources are ≈ 1.4 KB of JSON each: fewer overflow pages, and a
    // create in a measured Synthea load cost ≈ 15 % less than with 4 KiB); an existing one keeps its own
    db.pragma("page_size = 16384")
    if (path !== ":memory:") db.pragma("journal_mode = WAL")
    // A sandbox: surviving a process crash is enough (the OS keeps written pages); no fsync per commit.
    db.pragma("synchronous = OFF")
    db.pragma("cache_size = -65536")
    db.pragma("temp_store = MEMORY")
    return new Store(db)
  }

  close(): void {
    if (this.db.open) this.db.close()
  }

  /** The server's own FHIR base (absolute references under it are indexed as `Type/id`). */
  setBaseUrl(baseUrl: string): void {
    this.base = baseUrl
  }

  get baseUrl(): string | undefined {
    return this.base
  }

  /** An ISO instant with ms precision, strictly increasing per call (also across restarts). */
  now(): string {
    const ms = Math.max(Date.now(), this.last + 1)
    this.last = ms
    return new Date(ms).toISOString()
  }

  private writeTime(): string {
    return this.txTime ?? this.now()
  }

  /** Runs `fn` all-or-nothing; nested calls become savepoints. */
  tx<T>(fn: () => T): T {
    const outer = this.depth === 0
    if (outer) this.txTime = this.now()
    this.depth++
    try {
      return this.txRun(fn) as T
    } finally {
      this.depth--
      if (outer) this.txTime = undefined
    }
  }

  read(type: string, id: string): StoredResource | undefined {
    const row = this.sGet.get(type, id)
    return row && row.deleted === 0 ? toStored(row) : undefined
  }

  /** Current version number, including deleted ones (0 when never seen). */
  version(type: string, id: string): { versionId: number; deleted: boolean } | undefined {
    const row = this.sVersion.get(type, id)
    return row ? { versionId: row.version, deleted: row.deleted === 1 } : undefined
  }

  /** Creates with a server id; `serverId` lets a caller pick a fresh id beforehand (a new uuid, never a client id). */
  create(resource: object, serverId?: string): StoredResource {
    return this.write(resource as Record<string, unknown>, serverId ?? randomUUID(), 1, false)
  }

  /**
   * Creates or replaces `resource.id`. `current` is what `version(type, id)` gave, when the caller has
   * already looked (saves a second lookup); left out, the store looks itself.
   */
  update(
    resource: { readonly id: string; readonly [key: string]: unknown },
    current: { versionId: number; deleted: boolean } | undefined = this.version(
      resourceTypeOf(resource as Record<string, unknown>),
      resource.id,
    ),
  ): {
    stored: StoredResource
    created: boolean
  } {
    const r = resource as Record<string, unknown>
    const created = current === undefined || current.deleted
    const stored = this.write(r, resource.id, current ? current.versionId + 1 : 1, current !== undefined)
    return { stored, created }
  }

  delete(type: string, id: string): boolean {
    const existing = this.sVersion.get(type, id)
    if (!existing || existing.deleted === 1) return false
    this.removeKeys(type, id)
    this.sTombstone.run(this.writeTime(), type, id)
    return true
  }

  private write(r: Record<string, unknown>, id: string, version: number, existed: boolean): StoredResource {
    const type = resourceTypeOf(r)
    const lastUpdated = this.writeTime()
    const meta = r.meta
    const metaObj = typeof meta === "object" && meta !== null ? (meta as Record<string, unknown>) : {}
    // One copy, keys in the order served: resourceType, id, meta, then the resource's own.
    const body: Record<string, unknown> = {
      resourceType: type,
      id,
      meta: { ...metaObj, versionId: String(version), lastUpdated },
    }
    for (const key in r) if (key !== "resourceType" && key !== "id" && key !== "meta") body[key] = r[key]
    if (type === "Binary" && typeof body.data === "string") {
      const contentType = typeof body.contentType === "string" ? body.contentType : "application/octet-stream"
      this.sPutBytes.run(id, contentType, Buffer.from(body.data, "base64"))
      delete body.data
    }
    // decimals as the client wrote them (`1.0` stays `1.0`: see core's NumberText.parseKeepingNumbers)
    const numbers = writtenNumbers(r)
    const json = numbers === undefined ? JSON.stringify(body) : withNumbers(JSON.stringify(body), numbers)
    if (existed) this.removeKeys(type, id)
    const refs = extractReferences(body, this.base)
    const idents = extractIdentifiers(body)
    this.sUpsert.run(type, id, version, lastUpdated, json, JSON.stringify([...refs, ...idents]), refs.length)
    for (const [path, target] of refs) this.sAddRef.run(type, id, path, target)
    for (const [system, value] of idents) this.sAddIdent.run(type, id, system, value)
    return { type, id, versionId: version, lastUpdated, json }
  }

  /** Removes the `refs` and `idents` rows of the current version of `type/id` (see `schema`). */
  private removeKeys(type: string, id: string): void {
    const row = this.sKeys.get(type, id)
    if (row === undefined) return
    if (row.keys === null || row.refs_count === null) {
      this.legacy?.refs.run(type, id)
      this.legacy?.idents.run(type, id)
      return
    }
    const keys = JSON.parse(row.keys) as Array<[string, string]>
    for (let i = 0; i < keys.length; i++) {
      const [a, b] = keys[i]!
      if (i < row.refs_count) this.sDelRef.run(b, type, a, id)
      else this.sDelIdent.run(type, b, a, id)
    }
  }

  /**
   * Stores raw bytes as a Binary (server id when `id` is undefined). The JSON row carries no `data`
   * (`read("Binary", id)` gives contentType/securityContext only; `getBinary` adds the bytes).
   */
  putBinary(
    id: string | undefined,
    contentType: string,
    bytes: Buffer,
    securityContext?: string,
  ): StoredResource {
    const theId = id ?? randomUUID()
    const resource = {
      resourceType: "Binary",
      id: theId,
      contentType,
      ...(securityContext !== undefined ? { securityContext: { reference: securityContext } } : {}),
    }
    const stored = id === undefined ? this.write(resource, theId, 1, false) : this.update(resource).stored
    this.sPutBytes.run(theId, contentType, bytes)
    return stored
  }

  getBinary(id: string): { contentType: string; bytes: Buffer; stored: StoredResource } | undefined {
    const stored = this.read("Binary", id)
    if (!stored) return undefined
    const blob = this.sGetBytes.get(id)
    if (!blob) return { contentType: contentTypeOf(stored.json), bytes: Buffer.alloc(0), stored }
    return { contentType: blob.content_type, bytes: blob.bytes, stored }
  }

  private prepared(sql: string): Database.Statement {
    let s = this.statements.get(sql)
    if (!s) {
      s = this.db.prepare(sql)
      this.statements.set(sql, s)
    }
    return s
  }

  /**
   * The FROM/WHERE of a query. Selective filters (`ids`, `identifier`, and `referencing` with at most
   * SMALL_SET matches) become an id list looked up through the (type, id) index and sorted; a large
   * `referencing` set stays a membership test on the (type, lastUpdated, id) scan, which keyset paging
   * continues from the cursor (so a big Group export is one pass over the type, not a sort per page).
   */
  private where(type: string, o: IterateOptions): { sql: string; params: unknown[] } {
    let idList: string[] | undefined = o.ids !== undefined ? [...o.ids] : undefined
    const intersect = (ids: string[]) => {
      if (idList === undefined) idList = ids
      else {
        const keep = new Set(ids)
        idList = idList.filter((i) => keep.has(i))
      }
    }
    if (o.identifier !== undefined) {
      const system = o.identifier.system !== undefined ? " AND system = ?" : ""
      const rows = this.prepared(`SELECT DISTINCT id FROM idents WHERE type = ? AND value = ?${system}`).all(
        type,
        o.identifier.value,
        ...(o.identifier.system !== undefined ? [o.identifier.system] : []),
      ) as Array<{ id: string }>
      intersect(rows.map((r) => r.id))
    }
    let refsSql = ""
    const refsParams: unknown[] = []
    if (o.referencing !== undefined) {
      const paths = o.referencing.paths !== undefined ? " AND path IN (SELECT value FROM json_each(?))" : ""
      refsSql = `SELECT src_id FROM refs WHERE target IN (SELECT value FROM json_each(?)) AND src_type = ?${paths}`
      refsParams.push(JSON.stringify(o.referencing.targets), type)
      if (o.referencing.paths !== undefined) refsParams.push(JSON.stringify(o.referencing.paths))
      const rows = this.prepared(`SELECT DISTINCT src_id FROM (${refsSql}) LIMIT ${SMALL_SET + 1}`).all(
        ...refsParams,
      ) as Array<{ src_id: string }>
      if (rows.length <= SMALL_SET) {
        intersect(rows.map((r) => r.src_id))
        refsSql = ""
      }
    }
    let sql =
      idList !== undefined
        ? "FROM resources r INDEXED BY resources_pk WHERE r.type = ? AND r.id IN (SELECT value FROM json_each(?)) AND r.deleted = 0"
        : "FROM resources r WHERE r.type = ? AND r.deleted = 0"
    const params: unknown[] = idList !== undefined ? [type, JSON.stringify(idList)] : [type]
    if (refsSql !== "") {
      sql += ` AND r.id IN (${refsSql})`
      params.push(...refsParams)
    }
    if (o.since !== undefined) {
      sql += " AND r.last_updated >= ?"
      params.push(o.since)
    }
    if (o.until !== undefined) {
      sql += " AND r.last_updated < ?"
      params.push(o.until)
    }
    for (const b of o.lastUpdated ?? []) {
      sql += ` AND r.last_updated ${b.op === "gt" ? ">" : b.op === "ge" ? ">=" : b.op === "lt" ? "<" : "<="} ?`
      params.push(b.value)
    }
    return { sql, params }
  }

  /** Live resources of `type` matching every option, ordered by (lastUpdated, id), paged from SQLite. */
  *iterate(type: string, opts: IterateOptions = {}): IterableIterator<StoredResource> {
    const { sql, params } = this.where(type, opts)
    const base = `SELECT r.type, r.id, r.version, r.last_updated, r.json ${sql}`
    const first = this.prepared(`${base} ORDER BY r.last_updated, r.id LIMIT ?`)
    const next = this.prepared(
      `${base} AND (r.last_updated, r.id) > (?, ?) ORDER BY r.last_updated, r.id LIMIT ?`,
    )
    let remaining = opts.limit ?? Number.POSITIVE_INFINITY
    let cursor = opts.after
    while (remaining > 0) {
      const n = Math.min(PAGE, remaining)
      const rows = (
        cursor === undefined ? first.all(...params, n) : next.all(...params, cursor.lastUpdated, cursor.id, n)
      ) as Row[]
      for (const row of rows) yield toStored(row)
      remaining -= rows.length
      if (rows.length < n) return
      const lastRow = rows[rows.length - 1]!
      cursor = { lastUpdated: lastRow.last_updated, id: lastRow.id }
    }
  }

  /** Tombstones of `type` deleted in [since, until). */
  *deleted(
    type: string,
    opts: { since: string; until?: string },
  ): IterableIterator<{ type: string; id: string; deletedAt: string }> {
    const until = opts.until !== undefined ? " AND last_updated < ?" : ""
    const s = this.prepared(
      `SELECT id, last_updated FROM resources WHERE type = ? AND deleted = 1 AND last_updated >= ?${until} AND (last_updated, id) > (?, ?) ORDER BY last_updated, id LIMIT ${PAGE}`,
    )
    let cursor = { lastUpdated: "", id: "" }
    for (;;) {
      const params: unknown[] = [type, opts.since]
      if (opts.until !== undefined) params.push(opts.until)
      const rows = s.all(...params, cursor.lastUpdated, cursor.id) as Array<{
        id: string
        last_updated: string
      }>
      for (const r of rows) yield { type, id: r.id, deletedAt: r.last_updated }
      if (rows.length < PAGE) return
      const lastRow = rows[rows.length - 1]!
      cursor = { lastUpdated: lastRow.last_updated, id: lastRow.id }
    }
  }

  /** Types with at least one live resource, sorted. */
  types(): string[] {
    const rows = this.prepared(
      "SELECT DISTINCT type FROM resources WHERE deleted = 0 ORDER BY type",
    ).all() as Array<{
      type: string
    }>
    return rows.map((r) => r.type)
  }

  count(type: string, opts: IterateOptions = {}): number {
    const { sql, params } = this.where(type, opts)
    return (this.prepared(`SELECT count(*) AS n ${sql}`).get(...params) as { n: number }).n
  }

  /** Live resources of every type. */
  countAll(): number {
    return (this.prepared("SELECT count(*) AS n FROM resources WHERE deleted = 0").get() as { n: number }).n
  }
}

const resourceTypeOf = (r: Record<string, unknown>): string => {
  const t = r.resourceType
  if (typeof t !== "string" || t === "") throw new TypeError("resource without resourceType")
  return t
}

const contentTypeOf = (json: string): string => {
  const ct = (JSON.parse(json) as { contentType?: unknown }).contentType
  return typeof ct === "string" ? ct : "application/octet-stream"
}
