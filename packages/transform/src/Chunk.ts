/**
 * Chunk planning and transaction Bundles.
 *
 * `plan` packs the components of a dependency graph, in topological order, into chunks of at most
 * `maxEntries` resources and `maxBytes` bytes (each resource counts its serialized size plus
 * `entryOverhead` for the entry wrapper). A component is never split: one larger than the limits
 * becomes a chunk of its own, flagged `oversize` (the importer decides: send it anyway, or break the
 * cycle in two passes). Every dependency of a chunk is in an earlier chunk or in the chunk itself;
 * `dependsOn` lists those earlier chunks and `level` is 0 for a chunk without them, else 1 + the
 * highest level among them. With `byLevel` (default) a chunk only holds components of one graph level,
 * so all chunks of a level are independent and can be sent concurrently.
 *
 * `toTransaction` turns the resources of a chunk into a transaction (or batch) Bundle:
 * - `put`: `PUT Type/id` with the id kept (or the id map's target id when it renames); references
 *   rewritten through the id map (`Rewrite.rewriteResource`).
 * - `post`: `fullUrl: urn:uuid:<fresh>`, `POST Type` with `ifNoneExist: _tag=urn:ferry:source|Type/id@<origin>`
 *   (a conditional create on Ferry's provenance tag, which is always added, so a retried chunk never
 *   duplicates); the resource's `id` is removed; references between entries of the Bundle (including
 *   `Attachment.url` to a Binary in the Bundle) become those `urn:uuid`s, the rest go through the id map.
 *   Note: some servers do not rewrite `urn:uuid` in `Attachment.url` (samply/blaze#804); to be safe,
 *   load Binaries in an earlier chunk.
 *
 * `mapFromResponse` reads `response.location` by position into (source, target) pairs for the id map.
 */
import type { BufferPool } from "@ferry/core/BufferPool"
import type { Bundle, BundleEntry, BundleEntryRequest } from "@ferry/core/Bundle"
import * as CoreBundle from "@ferry/core/Bundle"
import { isResource, type Resource } from "@ferry/core/Ids"
import { Either, Option } from "effect"
import { type Components, type Graph, isCyclic } from "./Graph.js"
import { parseKey } from "./IdMap.js"
import {
  applyMeta,
  applyMetaBytes,
  type MetaEdit,
  type Note,
  provenanceCode,
  provenanceSystem,
  type RewriteContext,
  rewriteResource,
  sourceKeyOf,
  type Unresolved,
} from "./Rewrite.js"
import { restoreNumbers } from "@ferry/core/NumberText"
import { TransformError } from "./TransformError.js"

export interface PlanOptions {
  /** At most this many entries per chunk (e.g. 500 for Azure). */
  readonly maxEntries: number
  /** At most this many bytes per chunk (sum of resource sizes plus overhead). */
  readonly maxBytes: number
  /** Bytes added per entry for `fullUrl`/`request` (default 160). */
  readonly entryOverhead?: number
  /** Keep each chunk within one graph level so chunks of a level are independent (default true). */
  readonly byLevel?: boolean
}

export interface Chunk {
  /** Position in the plan (0-based); chunks must be loaded in an order compatible with `dependsOn`. */
  readonly index: number
  readonly level: number
  /** Source `Type/id`s, dependencies before dependents except inside a cycle. */
  readonly keys: ReadonlyArray<string>
  /** Estimated Bundle size in bytes (resource sizes plus `entryOverhead` each). */
  readonly bytes: number
  /** Earlier chunks holding resources this chunk references. */
  readonly dependsOn: ReadonlyArray<number>
  /** A single component that exceeds `maxEntries` or `maxBytes`. */
  readonly oversize: boolean
  /** Holds at least one reference cycle (a component of more than one resource). */
  readonly cyclic: boolean
  /**
   * When `cyclic`: the sizes of its components in `keys` order (each a run of `keys`), so that it can be sent
   * in smaller Bundles without cutting a cycle.
   */
  readonly groupSizes?: ReadonlyArray<number>
}

/** Plan the chunks (lazily: chunks are produced as they are read). */
export function* plan(graph: Graph, comps: Components, options: PlanOptions): Generator<Chunk> {
  const maxEntries = Math.max(1, options.maxEntries)
  const maxBytes = options.maxBytes
  const overhead = options.entryOverhead ?? 160
  const byLevel = options.byLevel ?? true
  const count = comps.count
  // component order: by level (counting sort, stable), or plain topological order
  let order: Int32Array
  if (byLevel) {
    let maxLevel = 0
    for (let c = 0; c < count; c++) if (comps.level[c]! > maxLevel) maxLevel = comps.level[c]!
    const start = new Int32Array(maxLevel + 2)
    for (let c = 0; c < count; c++) start[comps.level[c]! + 1]!++
    for (let l = 0; l <= maxLevel; l++) start[l + 1]! += start[l]!
    order = new Int32Array(count)
    for (let c = 0; c < count; c++) order[start[comps.level[c]!]!++] = c
  } else {
    order = new Int32Array(count)
    for (let c = 0; c < count; c++) order[c] = c
  }
  const chunkOf = new Int32Array(count).fill(-1)
  const chunkLevels: Array<number> = []
  const compBytes = (c: number): number => {
    let b = 0
    for (let i = comps.offsets[c]!; i < comps.offsets[c + 1]!; i++)
      b += graph.bytes[comps.nodes[i]!]! + overhead
    return b
  }

  let current: Array<number> = []
  let entries = 0
  let bytes = 0
  let level = -1
  let index = 0

  const emit = (compsIn: ReadonlyArray<number>, bytesIn: number, oversize: boolean): Chunk => {
    const me = index++
    const keys: Array<string> = []
    const deps = new Set<number>()
    let cyclic = false
    const groupSizes: Array<number> = []
    for (const c of compsIn) chunkOf[c] = me
    for (const c of compsIn) {
      if (isCyclic(comps, c)) cyclic = true
      groupSizes.push(comps.offsets[c + 1]! - comps.offsets[c]!)
      for (let i = comps.offsets[c]!; i < comps.offsets[c + 1]!; i++) {
        const v = comps.nodes[i]!
        keys.push(graph.keys[v]!)
        for (let e = graph.offsets[v]!; e < graph.offsets[v + 1]!; e++) {
          const d = chunkOf[comps.componentOf[graph.targets[e]!]!]!
          if (d !== me) deps.add(d)
        }
      }
    }
    const dependsOn = Array.from(deps).sort((a, b) => a - b)
    let lvl = 0
    for (const d of dependsOn) if (chunkLevels[d]! + 1 > lvl) lvl = chunkLevels[d]! + 1
    chunkLevels.push(lvl)
    return {
      index: me,
      level: lvl,
      keys,
      bytes: bytesIn,
      dependsOn,
      oversize,
      cyclic,
      ...(cyclic ? { groupSizes } : {}),
    }
  }

  for (let i = 0; i < count; i++) {
    const c = order[i]!
    const size = comps.offsets[c + 1]! - comps.offsets[c]!
    const b = compBytes(c)
    const l = byLevel ? comps.level[c]! : 0
    if (size > maxEntries || b > maxBytes) {
      if (current.length > 0) yield emit(current, bytes, false)
      current = []
      entries = 0
      bytes = 0
      yield emit([c], b, true)
      continue
    }
    if (current.length > 0 && (l !== level || entries + size > maxEntries || bytes + b > maxBytes)) {
      yield emit(current, bytes, false)
      current = []
      entries = 0
      bytes = 0
    }
    level = l
    current.push(c)
    entries += size
    bytes += b
  }
  if (current.length > 0) yield emit(current, bytes, false)
}

// ---------------------------------------------------------------------------------------------------
// transaction Bundles

export type Mode = "put" | "post"

export interface TransactionOptions {
  /** "transaction" (default; all or nothing) or "batch" (entries must then be independent). */
  readonly type?: "transaction" | "batch"
  /** Fresh UUIDs for post-mode `fullUrl`s (default `crypto.randomUUID`). */
  readonly uuid?: () => string
  /** Put mode: `fullUrl` is `<fullUrlBase>/Type/id` (omitted when not given). */
  readonly fullUrlBase?: string
  /**
   * Post mode: give each create its `ifNoneExist` on the provenance tag (default true). False for a target
   * that cannot search `_tag`.
   */
  readonly conditionalCreate?: boolean
  /**
   * Put mode: source keys whose resource has nothing to rewrite but `meta` (the caller vouches: every
   * reference is already the target's `Type/id`, no Attachment URL, see `Graph.DeferredEdges.verbatim`):
   * only `applyMeta` runs, not the walk. Ignored in post mode (every reference gets a new id there).
   */
  readonly verbatim?: (sourceKey: string) => boolean
  /**
   * Where `TransactionWriter` takes the Bundle's buffer from (default: a fresh one). The caller gives
   * `finish().body` back to it once the Bundle has been sent and answered (see core's BufferPool).
   */
  readonly buffers?: BufferPool
}

export interface EntryReport {
  /** Position of the entry in the Bundle. */
  readonly position: number
  readonly source: string
  readonly unresolved: ReadonlyArray<Unresolved>
  readonly notes: ReadonlyArray<Note>
}

/** What a response is matched against: each entry's source key and request, by position. */
export interface Sent {
  /** The source `Type/id` of each entry, by position (what `mapFromResponse` maps). */
  readonly sources: ReadonlyArray<string>
  /** The request of each entry, by position. */
  readonly requests: ReadonlyArray<BundleEntryRequest>
}

export interface Transaction extends Sent {
  readonly mode: Mode
  readonly bundle: Bundle
  /** Entries with unresolved references or notes (the others are clean). */
  readonly reports: ReadonlyArray<EntryReport>
}

/** A transaction (or batch) Bundle already serialised (see `TransactionWriter`). */
export interface TransactionText extends Sent {
  readonly mode: Mode
  /** The Bundle as JSON, UTF-8. */
  readonly body: Uint8Array
  readonly reports: ReadonlyArray<EntryReport>
}

const defaultUuid = (): string => globalThis.crypto.randomUUID()

/**
 * `_tag=urn:ferry:source|<Type/id>@<origin>`: the conditional-create criterion for a source resource (see
 * `provenanceCode`; hex digits, `Type/id` and `@`: nothing to escape).
 */
export const ifNoneExistFor = (sourceKey: string, origin?: string): string =>
  `_tag=${provenanceSystem}|${provenanceCode(sourceKey, origin)}`

/**
 * The entries of one Bundle, one resource at a time (see module doc). `keys` are the source keys of all
 * the Bundle's resources, in order (post mode gives each its `urn:uuid` up front, so entries can refer to
 * later ones); `entry(resource, i)` must then be called for the i-th of them.
 */
const entries = (
  keys: ReadonlyArray<string | undefined>,
  mode: Mode,
  ctx: RewriteContext,
  options: TransactionOptions | undefined,
) => {
  const reports: Array<EntryReport> = []
  if (mode === "post") {
    const uuid = options?.uuid ?? defaultUuid
    const conditional = options?.conditionalCreate !== false
    const fullUrls = keys.map(() => `urn:uuid:${uuid()}`)
    const pending = new Map<string, string>(ctx.pending)
    keys.forEach((k, i) => {
      if (k !== undefined) pending.set(k, fullUrls[i]!)
    })
    const rctx: RewriteContext = { ...ctx, pending, meta: { ...ctx.meta, provenanceTag: true } }
    return {
      reports,
      bytes: (
        _bytes: Uint8Array,
        _key: string,
      ): { head: string; edit: MetaEdit; tail: string; request: BundleEntryRequest } | undefined => undefined,
      entry: (r: Resource, i: number, source: string): BundleEntry => {
        const out = rewriteResource(r, rctx)
        report(reports, i, source, out.unresolved, out.notes)
        const { id: _id, ...body } = out.resource
        const key = sourceKeyOf(r)
        return {
          fullUrl: fullUrls[i]!,
          resource: body,
          request: {
            method: "POST",
            url: r.resourceType,
            ...(key !== undefined && conditional
              ? { ifNoneExist: ifNoneExistFor(key, ctx.meta?.provenanceOrigin) }
              : {}),
          },
        }
      },
    }
  }
  const base = options?.fullUrlBase?.replace(/\/+$/, "")
  const verbatim = options?.verbatim
  return {
    reports,
    /**
     * The entry of a verbatim resource from its JSON text (UTF-8), when possible: the text before it, the
     * edit of its meta, and the text after it (`TransactionWriter.addBytes` copies the line in between).
     */
    bytes: (
      bytes: Uint8Array,
      key: string,
    ): { head: string; edit: MetaEdit; tail: string; request: BundleEntryRequest } | undefined => {
      if (verbatim?.(key) !== true || ctx.idMap.get(key) !== key) return undefined
      const edit = applyMetaBytes(bytes, key, ctx.meta)
      if (edit === undefined) return undefined
      const request: BundleEntryRequest = { method: "PUT", url: key }
      const fullUrl = base !== undefined ? `"fullUrl":${JSON.stringify(`${base}/${key}`)},` : ""
      return { head: `{${fullUrl}"resource":`, edit, tail: `,"request":${JSON.stringify(request)}}`, request }
    },
    entry: (r: Resource, i: number, source: string): BundleEntry => {
      const key = sourceKeyOf(r)
      let resource: Resource
      if (key !== undefined && verbatim?.(key) === true) resource = applyMeta(r, ctx.meta)
      else {
        const out = rewriteResource(r, ctx)
        report(reports, i, source, out.unresolved, out.notes)
        resource = out.resource
      }
      // nothing to PUT to: create it
      if (key === undefined) return { resource, request: { method: "POST", url: r.resourceType } }
      const target = parseKey(ctx.idMap.get(key) ?? key) ?? { type: r.resourceType, id: r.id! }
      const url = `${target.type}/${target.id}`
      return {
        ...(base !== undefined ? { fullUrl: `${base}/${url}` } : {}),
        resource: target.id === r.id ? resource : { ...resource, id: target.id },
        request: { method: "PUT", url },
      }
    },
  }
}

/** A transaction (or batch) Bundle for the resources of one chunk (source form; see module doc). */
export const toTransaction = (
  resources: ReadonlyArray<Resource>,
  mode: Mode,
  ctx: RewriteContext,
  options?: TransactionOptions,
): Transaction => {
  const keys = resources.map(sourceKeyOf)
  const sources = resources.map((r, i) => keys[i] ?? r.resourceType)
  const build = entries(keys, mode, ctx, options)
  const out = resources.map((r, i) => build.entry(r, i, sources[i]!))
  const bundle = options?.type === "batch" ? CoreBundle.batch(out) : CoreBundle.transaction(out)
  return { mode, bundle, sources, requests: out.map((e) => e.request!), reports: build.reports }
}

/**
 * A Bundle's UTF-8 text, written into one buffer that grows by doubling: strings are encoded straight into
 * it and a line's bytes copied in by range, so an entry costs no buffer of its own and the body no final
 * join.
 */
class ByteSink {
  private buf: Buffer
  private length = 0

  /** `expected`: the bytes the text will likely take (a fresh buffer is costly to grow into: page faults). */
  constructor(
    expected: number,
    private readonly pool: BufferPool | undefined,
  ) {
    this.buf = this.alloc(Math.max(4096, Math.ceil(expected)))
  }

  private alloc(bytes: number): Buffer {
    return this.pool === undefined ? Buffer.allocUnsafe(bytes) : this.pool.take(bytes)
  }

  private room(bytes: number): void {
    if (this.length + bytes <= this.buf.length) return
    const next = this.alloc(Math.max(this.buf.length * 2, this.length + bytes))
    this.buf.copy(next, 0, 0, this.length)
    this.pool?.give(this.buf)
    this.buf = next
  }

  string(text: string): void {
    // at most 3 UTF-8 bytes per UTF-16 code unit; when that much is not free, the exact size (a large entry,
    // such as a Binary's data, does not reserve three times itself)
    if (this.buf.length - this.length < text.length * 3) this.room(Buffer.byteLength(text))
    this.length += this.buf.write(text, this.length)
  }

  bytes(from: Buffer, start: number, end: number): void {
    this.room(end - start)
    this.length += from.copy(this.buf, this.length, start, end)
  }

  /** The text written (a view of the buffer). */
  done(): Buffer {
    return this.buf.subarray(0, this.length)
  }
}

/**
 * `toTransaction` serialised as it goes: each resource is rewritten and its entry turned into JSON text when
 * it is added, so the parsed resources need not outlive the call (a chunk of 500 resources is parsed,
 * rewritten and serialised one resource at a time). Same entries, same order, same JSON (UTF-8) as
 * `JSON.stringify(toTransaction(...).bundle)` for the same keys and uuids.
 */
export class TransactionWriter {
  private readonly build: ReturnType<typeof entries>
  /**
   * The Bundle's JSON, UTF-8 encoded entry by entry as they are added: encoding 500 entries one by one costs
   * a sixth of joining them into one string and encoding that (measured on the Synthea archive: 51 against
   * 339 ms; a line with one non-ASCII character makes the joined string two-byte). A verbatim entry is its
   * line's bytes copied in, its meta edited on the way (`addBytes`).
   */
  private readonly sink: ByteSink
  private readonly sources: Array<string> = []
  private readonly requests: Array<BundleEntryRequest> = []

  /**
   * `keys`: the source keys of the resources to come, in the order they will be added. `bytes`: their
   * lines' size in all, when known (the Bundle's buffer is made that size and some, not grown into).
   */
  constructor(
    private readonly keys: ReadonlyArray<string>,
    private readonly mode: Mode,
    ctx: RewriteContext,
    options?: TransactionOptions,
    bytes?: number,
  ) {
    this.build = entries(keys, mode, ctx, options)
    // each entry's request, fullUrl and meta: a few hundred bytes
    this.sink = new ByteSink(
      bytes === undefined ? 64 * 1024 : bytes + keys.length * 400 + 128,
      options?.buffers,
    )
    this.sink.string(`{"resourceType":"Bundle","type":"${options?.type ?? "transaction"}","entry":[`)
  }

  /**
   * Add the next resource; it must be the one `keys` names at this position. `original`: the JSON text it was
   * parsed from, whose numbers are then written as it wrote them (`1.0` stays `1.0`; see NumberText).
   */
  add(resource: Resource, original?: string): Either.Either<void, TransformError> {
    const i = this.sources.length
    const expected = this.keys[i]
    const source = sourceKeyOf(resource) ?? resource.resourceType
    if (expected !== source) {
      return Either.left(
        new TransformError({
          reason: "EntryOrder",
          detail: `got ${source}, expected ${expected ?? "no more entries"}`,
          position: i,
          source,
        }),
      )
    }
    const entry = this.build.entry(resource, i, source)
    // the entry's numbers are its resource's (fullUrl and request hold none)
    const json =
      original === undefined ? JSON.stringify(entry) : restoreNumbers(original, JSON.stringify(entry))
    this.sink.string(i > 0 ? `,${json}` : json)
    this.sources.push(source)
    this.requests.push(entry.request!)
    return Either.void
  }

  /**
   * Add the next resource as its JSON text (UTF-8), unparsed, when that is enough: put mode, `verbatim`
   * vouches for its key, the id map keeps the key, and its meta can be patched in the text
   * (`applyMetaBytes`). Returns false, having added nothing, otherwise (or when the text is not the resource
   * the keys name here): parse it and `add` it. The entry then holds the resource's text as given, not
   * re-serialised.
   */
  addBytes(bytes: Buffer): boolean {
    const key = this.keys[this.sources.length]
    if (key === undefined) return false
    const out = this.build.bytes(bytes, key)
    if (out === undefined) return false
    const { edit } = out
    this.sink.string(this.sources.length > 0 ? `,${out.head}` : out.head)
    this.sink.bytes(bytes, 0, edit.from)
    this.sink.string(edit.insert)
    this.sink.bytes(bytes, edit.to, bytes.length)
    this.sink.string(out.tail)
    this.sources.push(key)
    this.requests.push(out.request)
    return true
  }

  /** The Bundle (UTF-8 JSON) and what the response is matched against; once, after the last entry. */
  finish(): TransactionText {
    this.sink.string("]}")
    return {
      mode: this.mode,
      body: this.sink.done(),
      sources: this.sources,
      requests: this.requests,
      reports: this.build.reports,
    }
  }
}

const report = (
  reports: Array<EntryReport>,
  position: number,
  source: string,
  unresolved: ReadonlyArray<Unresolved>,
  notes: ReadonlyArray<Note>,
): void => {
  if (unresolved.length > 0 || notes.length > 0) reports.push({ position, source, unresolved, notes })
}

// ---------------------------------------------------------------------------------------------------
// responses

export interface Mapped {
  readonly source: string
  /** Target `Type/id` (version dropped). */
  readonly target: string
  /** HTTP status code of the entry (201 created, 200 updated or matched by `ifNoneExist`). */
  readonly status: number
}

export interface Failed {
  readonly position: number
  readonly source: string
  readonly status: number | undefined
  readonly outcome?: Resource
}

export interface ResponseMapping {
  /** Entries written (or found by the conditional create), in Bundle order. */
  readonly mapped: ReadonlyArray<Mapped>
  /** Entries the server refused (only in a batch response; a failed transaction has no Bundle). */
  readonly failed: ReadonlyArray<Failed>
}

/** What `mapFromResponse` reads of one response entry. */
export interface ResponseEntry {
  readonly status: string
  readonly location?: string
  readonly outcome?: Resource
}

/** What `mapFromResponse` reads of a transaction/batch response (a core `Bundle` is one). */
export interface ResponseBundle {
  readonly resourceType?: "Bundle"
  readonly type: string
  readonly entry?: ReadonlyArray<{ readonly response?: ResponseEntry }>
}

const isObject = (u: unknown): u is Readonly<Record<string, unknown>> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/**
 * Check a parsed response body against what `mapFromResponse` reads (a Bundle with a string `type`, and
 * entries whose `response` has a string `status`, an optional string `location` and an optional resource
 * `outcome`); nothing else is looked at. Much cheaper than decoding the whole Bundle schema.
 */
export const readResponse = (u: unknown): Either.Either<ResponseBundle, TransformError> => {
  const mismatch = (detail: string, position?: number) =>
    Either.left(
      new TransformError({
        reason: "ResponseMismatch",
        detail,
        ...(position !== undefined ? { position } : {}),
      }),
    )
  if (!isObject(u) || u.resourceType !== "Bundle" || typeof u.type !== "string")
    return mismatch("the answer is not a Bundle")
  const raw = u.entry
  if (raw === undefined) return Either.right({ resourceType: "Bundle", type: u.type })
  if (!Array.isArray(raw)) return mismatch("the Bundle's entry is not an array")
  const entry: Array<{ readonly response?: ResponseEntry }> = []
  for (let i = 0; i < raw.length; i++) {
    const e: unknown = raw[i]
    if (!isObject(e)) return mismatch(`entry ${i} is not an object`, i)
    const r = e.response
    if (r === undefined) {
      entry.push({})
      continue
    }
    if (
      !isObject(r) ||
      typeof r.status !== "string" ||
      (r.location !== undefined && typeof r.location !== "string") ||
      (r.outcome !== undefined && !isResource(r.outcome))
    )
      return mismatch(`entry ${i}'s response has no string status, or a malformed location or outcome`, i)
    entry.push({
      response: {
        status: r.status,
        ...(typeof r.location === "string" ? { location: r.location } : {}),
        ...(r.outcome !== undefined && isResource(r.outcome) ? { outcome: r.outcome } : {}),
      },
    })
  }
  return Either.right({ resourceType: "Bundle", type: u.type, entry })
}

const statusOf = (status: string): number | undefined => {
  const m = /^\s*(\d{3})/.exec(status)
  return m ? Number(m[1]) : undefined
}

/**
 * Match a `transaction-response`/`batch-response` to the request by position and read each
 * `response.location` (`Type/id[/_history/v]`, relative or absolute) into (source, target) pairs.
 * A PUT entry answered without `location` maps to its request URL.
 */
export const mapFromResponse = (
  transaction: Sent,
  response: ResponseBundle,
): Either.Either<ResponseMapping, TransformError> => {
  if (response.type !== "transaction-response" && response.type !== "batch-response") {
    return Either.left(
      new TransformError({
        reason: "ResponseMismatch",
        detail: `expected a transaction-response or batch-response Bundle, got type "${response.type}"`,
      }),
    )
  }
  const got = response.entry ?? []
  const sent = transaction.requests
  if (got.length !== sent.length) {
    return Either.left(
      new TransformError({
        reason: "ResponseMismatch",
        detail: `${sent.length} entries sent, ${got.length} answered`,
      }),
    )
  }
  const mapped: Array<Mapped> = []
  const failed: Array<Failed> = []
  for (let i = 0; i < got.length; i++) {
    const source = transaction.sources[i]!
    const res = got[i]!.response
    if (res === undefined) {
      return Either.left(
        new TransformError({ reason: "ResponseEntry", detail: "no `response`", position: i, source }),
      )
    }
    const status = statusOf(res.status)
    if (status === undefined || status < 200 || status > 299) {
      failed.push({
        position: i,
        source,
        status,
        ...(res.outcome !== undefined ? { outcome: res.outcome } : {}),
      })
      continue
    }
    const request = sent[i]!
    const location = res.location ?? (request.method === "PUT" ? request.url : undefined)
    if (location === undefined) {
      return Either.left(
        new TransformError({ reason: "ResponseEntry", detail: "no `location`", position: i, source }),
      )
    }
    const parsed = Option.getOrUndefined(CoreBundle.parseLocation(location))
    const sourceType = parseKey(source)?.type ?? source
    if (parsed === undefined || parsed.type !== sourceType) {
      return Either.left(
        new TransformError({
          reason: "ResponseEntry",
          detail: `location "${location}" is not a ${sourceType}`,
          position: i,
          source,
        }),
      )
    }
    mapped.push({ source, target: `${parsed.type}/${parsed.id}`, status })
  }
  return Either.right({ mapped, failed })
}
