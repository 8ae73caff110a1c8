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
 * - `post`: `fullUrl: urn:uuid:<fresh>`, `POST Type` with `ifNoneExist: _tag=urn:ferry:source|Type/id`
 *   (a conditional create on Ferry's provenance tag, which is always added, so a retried chunk never
 *   duplicates); the resource's `id` is removed; references between entries of the Bundle (including
 *   `Attachment.url` to a Binary in the Bundle) become those `urn:uuid`s, the rest go through the id map.
 *   Note: some servers do not rewrite `urn:uuid` in `Attachment.url` (samply/blaze#804); to be safe,
 *   load Binaries in an earlier chunk.
 *
 * `mapFromResponse` reads `response.location` by position into (source, target) pairs for the id map.
 */
import type { Bundle, BundleEntry } from "@ferry/core/Bundle"
import * as CoreBundle from "@ferry/core/Bundle"
import type { Resource } from "@ferry/core/Ids"
import { Either, Option } from "effect"
import { type Components, type Graph, isCyclic } from "./Graph.js"
import { parseKey } from "./IdMap.js"
import {
  type Note,
  provenanceSystem,
  type RewriteContext,
  rewriteResource,
  sourceKeyOf,
  type Unresolved,
} from "./Rewrite.js"
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
    for (const c of compsIn) chunkOf[c] = me
    for (const c of compsIn) {
      if (isCyclic(comps, c)) cyclic = true
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
    return { index: me, level: lvl, keys, bytes: bytesIn, dependsOn, oversize, cyclic }
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
}

export interface EntryReport {
  /** Position of the entry in the Bundle. */
  readonly position: number
  readonly source: string
  readonly unresolved: ReadonlyArray<Unresolved>
  readonly notes: ReadonlyArray<Note>
}

export interface Transaction {
  readonly mode: Mode
  readonly bundle: Bundle
  /** The source `Type/id` of each entry, by position (what `mapFromResponse` maps). */
  readonly sources: ReadonlyArray<string>
  /** Entries with unresolved references or notes (the others are clean). */
  readonly reports: ReadonlyArray<EntryReport>
}

const defaultUuid = (): string => globalThis.crypto.randomUUID()

/** `_tag=urn:ferry:source|<Type/id>`: the conditional-create criterion for a source resource. */
export const ifNoneExistFor = (sourceKey: string): string => `_tag=${provenanceSystem}|${sourceKey}`

/** A transaction (or batch) Bundle for the resources of one chunk (source form; see module doc). */
export const toTransaction = (
  resources: ReadonlyArray<Resource>,
  mode: Mode,
  ctx: RewriteContext,
  options?: TransactionOptions,
): Transaction => {
  const uuid = options?.uuid ?? defaultUuid
  const sources = resources.map((r) => sourceKeyOf(r) ?? r.resourceType)
  const reports: Array<EntryReport> = []
  const entries: Array<BundleEntry> = []

  if (mode === "post") {
    const fullUrls = resources.map(() => `urn:uuid:${uuid()}`)
    const pending = new Map<string, string>(ctx.pending)
    resources.forEach((r, i) => {
      const k = sourceKeyOf(r)
      if (k !== undefined) pending.set(k, fullUrls[i]!)
    })
    const rctx: RewriteContext = { ...ctx, pending, meta: { ...ctx.meta, provenanceTag: true } }
    resources.forEach((r, i) => {
      const out = rewriteResource(r, rctx)
      report(reports, i, sources[i]!, out.unresolved, out.notes)
      const { id: _id, ...body } = out.resource
      const key = sourceKeyOf(r)
      entries.push({
        fullUrl: fullUrls[i]!,
        resource: body,
        request: {
          method: "POST",
          url: r.resourceType,
          ...(key !== undefined ? { ifNoneExist: ifNoneExistFor(key) } : {}),
        },
      })
    })
  } else {
    const base = options?.fullUrlBase?.replace(/\/+$/, "")
    resources.forEach((r, i) => {
      const out = rewriteResource(r, ctx)
      report(reports, i, sources[i]!, out.unresolved, out.notes)
      const key = sourceKeyOf(r)
      if (key === undefined) {
        // nothing to PUT to: create it
        entries.push({ resource: out.resource, request: { method: "POST", url: r.resourceType } })
        return
      }
      const target = parseKey(ctx.idMap.get(key) ?? key) ?? { type: r.resourceType, id: r.id! }
      const resource = target.id === r.id ? out.resource : { ...out.resource, id: target.id }
      const url = `${target.type}/${target.id}`
      entries.push({
        ...(base !== undefined ? { fullUrl: `${base}/${url}` } : {}),
        resource,
        request: { method: "PUT", url },
      })
    })
  }
  const bundle = options?.type === "batch" ? CoreBundle.batch(entries) : CoreBundle.transaction(entries)
  return { mode, bundle, sources, reports }
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

/**
 * Match a `transaction-response`/`batch-response` to the request by position and read each
 * `response.location` (`Type/id[/_history/v]`, relative or absolute) into (source, target) pairs.
 * A PUT entry answered without `location` maps to its request URL.
 */
export const mapFromResponse = (
  transaction: Transaction,
  response: Bundle,
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
  const sent = transaction.bundle.entry ?? []
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
    const status = Option.getOrUndefined(CoreBundle.statusCode(res))
    if (status === undefined || status < 200 || status > 299) {
      failed.push({
        position: i,
        source,
        status,
        ...(res.outcome !== undefined ? { outcome: res.outcome } : {}),
      })
      continue
    }
    const request = sent[i]!.request
    const location = res.location ?? (request?.method === "PUT" ? request.url : undefined)
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
