/**
 * Dependency order for loading: a directed graph over the resources to load (an edge from a resource
 * to each resource it references that is also in the load set), its strongly connected components
 * (reference cycles: Encounter ↔ Condition, Patient.link, DiagnosticReport ↔ Observation, …) by an
 * iterative Tarjan (no recursion: millions of nodes), numbered in topological order with dependencies
 * first, and each component's level (0 = depends on nothing outside itself; otherwise 1 + the highest
 * level it depends on), so components of one level can be loaded concurrently.
 *
 * Building is two-pass and streaming-friendly: `addNode` every resource of the load set (first pass
 * over the archive), then `addEdges` with each resource's dependencies (second pass, `dependenciesOf`);
 * edges to keys that are not nodes are dropped and counted (they point at resources outside the load
 * set: already on the target, or dangling).
 *
 * Memory (per resource, V8, 64-bit): the key string (~16 + length bytes, ~65 for `Observation/<uuid>`),
 * its Map entry (~40) and array slot (8), its byte size (4) and CSR offset (4): ≈ 120–130 bytes; per
 * edge 8 bytes while building (two Int32 growable arrays) and 4 bytes after `build`. Tarjan needs
 * another 25 bytes per node while it runs and `components` keeps 12 per node. So 1M resources with
 * 10 references each ≈ 130 MB + 80 MB of edges while building, ≈ 180 MB afterwards.
 */
import type { Resource } from "@ferry/core/Ids"
import { parse, type ParseOptions } from "@ferry/core/Reference"
import { referenceStrings, rewrite } from "@ferry/core/Walker"
import type { IdMap } from "./IdMap.js"
import { type ResolveContext, resolve } from "./Resolve.js"

const grow = (a: Int32Array<ArrayBuffer>, need: number): Int32Array<ArrayBuffer> => {
  if (need <= a.length) return a
  let n = a.length * 2
  while (n < need) n *= 2
  const b = new Int32Array(n)
  b.set(a)
  return b
}

export class GraphBuilder {
  private readonly index = new Map<string, number>()
  private readonly keys: Array<string> = []
  private bytes = new Int32Array(1024)
  private from = new Int32Array(4096)
  private to = new Int32Array(4096)
  private edges = 0
  private dropped = 0

  /** Add a resource of the load set (idempotent); `bytes` is its serialized size, for chunking. */
  addNode(key: string, bytes = 0): number {
    const hit = this.index.get(key)
    if (hit !== undefined) {
      if (bytes > this.bytes[hit]!) this.bytes[hit] = bytes
      return hit
    }
    const i = this.keys.length
    this.keys.push(key)
    this.index.set(key, i)
    this.bytes = grow(this.bytes, i + 1)
    this.bytes[i] = bytes
    return i
  }

  /** The node of `key`, if it was added. */
  nodeOf(key: string): number | undefined {
    return this.index.get(key)
  }

  /** The key of node `v`. */
  keyOf(v: number): string {
    return this.keys[v]!
  }

  /** Nodes added so far. */
  get size(): number {
    return this.keys.length
  }

  /** `from` depends on `to` (both node numbers). Self-references are ignored. */
  addEdge(from: number, to: number): void {
    if (from === to) return
    const i = this.edges
    this.from = grow(this.from, i + 1)
    this.to = grow(this.to, i + 1)
    this.from[i] = from
    this.to[i] = to
    this.edges = i + 1
  }

  /** `fromKey` depends on each of `toKeys`; keys that are not nodes are dropped. Returns edges added. */
  addEdges(fromKey: string, toKeys: Iterable<string>): number {
    const from = this.index.get(fromKey)
    let added = 0
    for (const k of toKeys) {
      const to = from === undefined ? undefined : this.index.get(k)
      if (to === undefined) {
        this.dropped++
        continue
      }
      if (to !== from) {
        this.addEdge(from!, to)
        added++
      }
    }
    return added
  }

  /** Count an edge whose target is not in the load set (it is not added). */
  dropEdge(): void {
    this.dropped++
  }

  /** Freeze into a compact graph (CSR adjacency, duplicate edges removed). The builder can be dropped. */
  build(): Graph {
    const n = this.keys.length
    const m = this.edges
    const offsets = new Int32Array(n + 1)
    for (let e = 0; e < m; e++) offsets[this.from[e]! + 1]!++
    for (let v = 0; v < n; v++) offsets[v + 1]! += offsets[v]!
    const fill = offsets.slice(0, n)
    const targets = new Int32Array(m)
    for (let e = 0; e < m; e++) targets[fill[this.from[e]!]!++] = this.to[e]!
    // remove duplicate targets per node, compacting in place
    const seen = new Int32Array(n).fill(-1)
    let w = 0
    let start = 0
    for (let v = 0; v < n; v++) {
      const end = offsets[v + 1]!
      offsets[v] = w
      for (let e = start; e < end; e++) {
        const t = targets[e]!
        if (seen[t] === v) continue
        seen[t] = v
        targets[w++] = t
      }
      start = end
    }
    offsets[n] = w
    return new Graph(
      this.keys,
      this.index,
      this.bytes.slice(0, n),
      offsets,
      targets.slice(0, w),
      this.dropped,
    )
  }
}

export class Graph {
  constructor(
    /** Node → source `Type/id`. */
    readonly keys: ReadonlyArray<string>,
    private readonly index: ReadonlyMap<string, number>,
    /** Node → serialized size in bytes (as given to `addNode`). */
    readonly bytes: Int32Array,
    /** CSR: the dependencies of node v are `targets[offsets[v] .. offsets[v+1])`. */
    readonly offsets: Int32Array,
    readonly targets: Int32Array,
    /** Edges whose target was not in the load set. */
    readonly droppedEdges: number,
  ) {}

  get size(): number {
    return this.keys.length
  }

  get edgeCount(): number {
    return this.targets.length
  }

  nodeOf(key: string): number | undefined {
    return this.index.get(key)
  }

  /** The nodes `v` depends on (a view, do not modify). */
  dependencies(v: number): Int32Array {
    return this.targets.subarray(this.offsets[v]!, this.offsets[v + 1]!)
  }
}

export interface Components {
  readonly count: number
  /** Node → component; components are numbered in topological order, dependencies first. */
  readonly componentOf: Int32Array
  /** Members of component c are `nodes[offsets[c] .. offsets[c+1])`. */
  readonly offsets: Int32Array
  readonly nodes: Int32Array
  /** Component → level (0 = no dependency outside itself). */
  readonly level: Int32Array
}

/** The members of component `c`. */
export const members = (comps: Components, c: number): Int32Array =>
  comps.nodes.subarray(comps.offsets[c]!, comps.offsets[c + 1]!)

/** Does component `c` hold a cycle (more than one resource)? */
export const isCyclic = (comps: Components, c: number): boolean =>
  comps.offsets[c + 1]! - comps.offsets[c]! > 1

/**
 * Strongly connected components (iterative Tarjan), in topological order: every component a component
 * depends on has a smaller number.
 */
export const components = (graph: Graph): Components => {
  const n = graph.size
  const { offsets, targets } = graph
  const index = new Int32Array(n).fill(-1)
  const low = new Int32Array(n)
  const onStack = new Uint8Array(n)
  const stack = new Int32Array(n)
  const callNode = new Int32Array(n)
  const callEdge = new Int32Array(n)
  const comp = new Int32Array(n)
  let sp = 0
  let counter = 0
  let count = 0
  for (let s = 0; s < n; s++) {
    if (index[s] !== -1) continue
    let csp = 0
    index[s] = low[s] = counter++
    stack[sp++] = s
    onStack[s] = 1
    callNode[0] = s
    callEdge[0] = offsets[s]!
    csp = 1
    while (csp > 0) {
      const v = callNode[csp - 1]!
      const e = callEdge[csp - 1]!
      if (e < offsets[v + 1]!) {
        callEdge[csp - 1] = e + 1
        const w = targets[e]!
        if (index[w] === -1) {
          index[w] = low[w] = counter++
          stack[sp++] = w
          onStack[w] = 1
          callNode[csp] = w
          callEdge[csp] = offsets[w]!
          csp++
        } else if (onStack[w] === 1 && index[w]! < low[v]!) {
          low[v] = index[w]!
        }
      } else {
        csp--
        if (low[v] === index[v]) {
          let w: number
          do {
            w = stack[--sp]!
            onStack[w] = 0
            comp[w] = count
          } while (w !== v)
          count++
        }
        if (csp > 0) {
          const u = callNode[csp - 1]!
          if (low[v]! < low[u]!) low[u] = low[v]!
        }
      }
    }
  }
  // group nodes by component (counting sort, stable in node order)
  const compOffsets = new Int32Array(count + 1)
  for (let v = 0; v < n; v++) compOffsets[comp[v]! + 1]!++
  for (let c = 0; c < count; c++) compOffsets[c + 1]! += compOffsets[c]!
  const fill = compOffsets.slice(0, count)
  const nodes = new Int32Array(n)
  for (let v = 0; v < n; v++) nodes[fill[comp[v]!]!++] = v
  // levels: dependencies come first, so theirs are known
  const level = new Int32Array(count)
  for (let c = 0; c < count; c++) {
    let l = 0
    for (let i = compOffsets[c]!; i < compOffsets[c + 1]!; i++) {
      const v = nodes[i]!
      for (let e = offsets[v]!; e < offsets[v + 1]!; e++) {
        const d = comp[targets[e]!]!
        if (d !== c && level[d]! + 1 > l) l = level[d]! + 1
      }
    }
    level[c] = l
  }
  return { count, componentOf: comp, offsets: compOffsets, nodes, level }
}

export interface DependencyOptions extends ResolveContext {
  readonly sourceBase?: ParseOptions["sourceBase"]
}

/**
 * The distinct source `Type/id`s `resource` depends on: every reference the walker finds (resolved like
 * `Rewrite` does: relative, same-server absolute and versioned, `urn:uuid:`, conditional through the
 * identifier index) and every Attachment URL designating a source resource (`Binary/id`). Canonicals,
 * contained, external and unresolvable references give no dependency. Its own key is left out.
 */
export const dependenciesOf = (resource: Resource, ctx: DependencyOptions): ReadonlyArray<string> => {
  const out = new Set<string>()
  const parseOptions: ParseOptions | undefined =
    ctx.sourceBase !== undefined ? { sourceBase: ctx.sourceBase } : undefined
  rewrite(resource, {
    ...(ctx.sourceBase !== undefined ? { sourceBase: ctx.sourceBase } : {}),
    reference: (site) => {
      if (site.canonical || site.raw?.charCodeAt(0) === 35) return undefined
      const r = resolve(site.parsed, ctx)
      if (r._tag === "Key") out.add(r.key)
      return undefined
    },
    attachment: (site) => {
      const url = site.attachment.url
      if (typeof url !== "string") return undefined
      const r = resolve(parse(url, parseOptions), ctx)
      if (r._tag === "Key") out.add(r.key)
      return undefined
    },
  })
  if (typeof resource.id === "string") out.delete(`${resource.resourceType}/${resource.id}`)
  return Array.from(out)
}

/**
 * The strings in `resource` that may designate a source resource, as found (not parsed, not deduplicated):
 * every `Reference.reference` that is neither a canonical nor a contained `#id`, and every string
 * `Attachment.url`. Resolving each one (`parse` with the source base, then `resolve`) gives exactly the
 * keys `dependenciesOf` returns without `resolveLogical`. Cheaper than `dependenciesOf` when the same
 * strings recur across resources (a patient's id in all its resources): parse and resolve once per
 * distinct string, after every resource is known (see `DeferredEdges`).
 */
export const referenceCandidates = (
  resource: Resource,
  onCandidate: (raw: string, attachment: boolean) => void,
): void => {
  // (the walk's strings without its sites: no path or frame built per reference)
  referenceStrings(resource, (raw, attachment) => {
    if (attachment || raw.charCodeAt(0) !== 35) onCandidate(raw, attachment)
  })
}

/**
 * Dependency edges collected in the same pass that adds the nodes, resolved afterwards. A reference can only
 * be resolved once every resource is known (`urn:uuid:` needs the id registry, a conditional reference the
 * identifier index), so this keeps each distinct candidate string once (a Map entry and the string) and
 * 8 bytes per (resource, candidate) pair; `addTo` parses and resolves every distinct string once and adds
 * the edges. Same edges as `addEdges(key, dependenciesOf(resource, ctx))` for every resource (logical
 * references, which only `resolveLogical` turns into dependencies, are not collected).
 *
 * It also tells which nodes are `verbatim`: every candidate is a reference string that is exactly the
 * `Type/id` it designates (a relative reference) and none is an Attachment URL. Rewriting such a resource
 * with an id map that maps every key to itself (put mode, no renames) changes nothing but `meta`.
 */
export class DeferredEdges {
  private readonly ids = new Map<string, number>()
  private readonly strings: Array<string> = []
  private from = new Int32Array(4096)
  private ref = new Int32Array(4096)
  private count = 0
  /** Nodes holding a candidate that is not a plain `Type/id` reference (1), set by `addTo`. */
  private rewritten = new Uint8Array(0)

  /** Node `from` holds the reference string (or, with `attachment`, the Attachment URL) `raw`. */
  add(from: number, raw: string, attachment = false): void {
    let id = this.ids.get(raw)
    if (id === undefined) {
      id = this.strings.length
      this.strings.push(raw)
      this.ids.set(raw, id)
    }
    const i = this.count
    this.from = grow(this.from, i + 1)
    this.ref = grow(this.ref, i + 1)
    this.from[i] = from
    // an Attachment URL is stored as ~id (negative): same string, other role
    this.ref[i] = attachment ? ~id : id
    this.count = i + 1
  }

  /**
   * After `addTo`: does node `v` hold only reference strings that are exactly their own `Type/id` key, and
   * no Attachment URL (see class doc)? A node without candidates is verbatim.
   */
  verbatim(v: number): boolean {
    return v >= this.rewritten.length || this.rewritten[v] === 0
  }

  /**
   * Can these candidates be resolved now, with only the resources of the `complete` types known? True when
   * every candidate either designates a resource by its type (relative, same-server absolute or versioned,
   * conditional: the type is in the string) of a complete type, or designates no source resource at all
   * (external, unparseable). A `urn:uuid:` needs every resource known (its type is not in the string): it
   * makes the answer false unless `urns` is given, a registry that already knows every resource of the load
   * (an importer that read ahead for them; `IdMap.resolveUrn`), by which it counts as its resource's type
   * (none when the registry resolves it to nothing, which is then final). An importer reading its files a
   * type at a time can plan and send what it read so far when this holds: nothing read later can be a
   * dependency of it.
   */
  closedOver(
    complete: (type: string) => boolean,
    sourceBase?: ParseOptions["sourceBase"],
    urns?: Pick<IdMap, "resolveUrn">,
  ): boolean {
    const parseOptions: ParseOptions | undefined = sourceBase !== undefined ? { sourceBase } : undefined
    for (const raw of this.strings) {
      const p = parse(raw, parseOptions)
      switch (p._tag) {
        case "Relative":
        case "Conditional":
          if (!complete(p.type)) return false
          break
        case "Versioned":
          if (p.sameServer && !complete(p.type)) return false
          break
        case "Absolute":
          if (p.sameServer && p.type !== undefined && !complete(p.type)) return false
          break
        case "UrnUuid": {
          if (urns === undefined) return false
          const hit = urns.resolveUrn(p.uuid)
          if (hit._tag === "Found" && !complete(hit.key.slice(0, hit.key.indexOf("/")))) return false
          break
        }
        default:
          break
      }
    }
    return true
  }

  /** Is any candidate a `urn:uuid:` reference (which `closedOver` resolves only with a complete registry)? */
  waitsOnUrns(): boolean {
    for (const raw of this.strings)
      if (raw.length > 9 && raw.slice(0, 9).toLowerCase() === "urn:uuid:" && parse(raw)._tag === "UrnUuid")
        return true
    return false
  }

  /** Distinct candidate strings collected. */
  get distinct(): number {
    return this.strings.length
  }

  /**
   * Resolve every candidate (once per distinct string) against the complete `ctx` and add the edges to
   * `builder`; candidates resolving to a key that is not a node count as dropped edges. Returns the edges added.
   * With `missing`: each reference (not Attachment URL) resolving to a key that is no node and that `isKnown`
   * does not know either (a resource outside the whole load) is handed to `found` with its node.
   */
  addTo(
    builder: GraphBuilder,
    ctx: DependencyOptions,
    missing?: {
      readonly isKnown: (key: string) => boolean
      readonly found: (from: number, raw: string) => void
    },
  ): number {
    const parseOptions: ParseOptions | undefined =
      ctx.sourceBase !== undefined ? { sourceBase: ctx.sourceBase } : undefined
    // node of each distinct string: >= 0 a node, -1 no dependency, -2 a key outside the load set
    const target = new Int32Array(this.strings.length)
    // 1 when the string is exactly the relative `Type/id` it resolves to
    const exact = new Uint8Array(this.strings.length)
    // 1 when the string resolves to a key neither in this builder nor known to `missing` (once per string)
    const unknown = new Uint8Array(missing === undefined ? 0 : this.strings.length)
    for (let i = 0; i < this.strings.length; i++) {
      const raw = this.strings[i]!
      const parsed = parse(raw, parseOptions)
      const r = resolve(parsed, ctx)
      if (r._tag !== "Key") target[i] = -1
      else {
        target[i] = builder.nodeOf(r.key) ?? -2
        if (target[i] === -2 && missing !== undefined && !missing.isKnown(r.key)) unknown[i] = 1
        if (parsed._tag === "Relative" && r.key === raw) exact[i] = 1
      }
    }
    this.rewritten = new Uint8Array(builder.size)
    let added = 0
    for (let e = 0; e < this.count; e++) {
      const ref = this.ref[e]!
      const id = ref < 0 ? ~ref : ref
      if (ref < 0 || exact[id] === 0) this.rewritten[this.from[e]!] = 1
      const to = target[id]!
      if (to === -1) continue
      if (to === -2) {
        builder.dropEdge()
        if (missing !== undefined && ref >= 0 && unknown[id] === 1)
          missing.found(this.from[e]!, this.strings[id]!)
      } else if (to !== this.from[e]) {
        builder.addEdge(this.from[e]!, to)
        added++
      }
    }
    return added
  }
}

/**
 * Convenience for resources already in memory (tests, small loads): both passes over `resources`.
 * `bytes` defaults to the UTF-8 length of `JSON.stringify(resource)`. Resources without an id are skipped.
 */
export const fromResources = (
  resources: ReadonlyArray<Resource>,
  ctx: DependencyOptions,
  bytes: (resource: Resource) => number = (r) => Buffer.byteLength(JSON.stringify(r)),
): Graph => {
  const builder = new GraphBuilder()
  for (const r of resources) {
    if (typeof r.id === "string") builder.addNode(`${r.resourceType}/${r.id}`, bytes(r))
  }
  for (const r of resources) {
    if (typeof r.id === "string") builder.addEdges(`${r.resourceType}/${r.id}`, dependenciesOf(r, ctx))
  }
  return builder.build()
}
