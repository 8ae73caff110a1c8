/**
 * Business-identifier index: `Type|system|value` → source `Type/id`, built from the `identifier[]` of
 * the archive's resources. It resolves conditional references (`Practitioner?identifier=sys|val`, as
 * bulk exports of Synthea data contain) and, optionally, logical references (`{identifier, type}`)
 * to the literal source resource, which the id map then takes to the target.
 *
 * Search semantics (R4 token search): `identifier=sys|val` matches that system and value;
 * `identifier=|val` matches identifiers without a system; `identifier=val` matches the value in any system.
 * A match must be unique: two resources of the type carrying the same identifier make it ambiguous.
 *
 * Memory: one Map entry per identifier of an indexed resource (two per identifier, for the any-system
 * lookup). Index only the types that conditional references point at (`types` option) when the
 * archive is large — Observations carry identifiers too.
 */
import type { Resource } from "@ferry/core/Ids"

export type IdentifierLookup =
  | { readonly _tag: "Found"; readonly key: string }
  | { readonly _tag: "NotFound" }
  | { readonly _tag: "Ambiguous"; readonly keys: ReadonlyArray<string> }

export interface IdentifierIndexOptions {
  /** Index only resources of these types (default: every resource given). */
  readonly types?: Iterable<string>
}

const SEP = "|"

export class IdentifierIndex {
  /** `Type|system|value` (system "" when absent) → key(s). */
  private readonly exact = new Map<string, string | Set<string>>()
  /** `Type||value` ignoring the system → key(s). */
  private readonly anySystem = new Map<string, string | Set<string>>()
  private readonly only: ReadonlySet<string> | undefined
  private count = 0

  constructor(options?: IdentifierIndexOptions) {
    this.only = options?.types !== undefined ? new Set(options.types) : undefined
  }

  /** An index over `resources`. */
  static build(resources: Iterable<Resource>, options?: IdentifierIndexOptions): IdentifierIndex {
    const index = new IdentifierIndex(options)
    for (const r of resources) index.add(r)
    return index
  }

  /**
   * Index the identifiers of one resource (ignored when its type is not indexed or it has no id). `key` is its
   * `Type/id` when the caller already holds that string (an import keeps one per resource: sharing it saves
   * a copy per identified resource).
   */
  add(resource: Resource, key?: string): void {
    const type = resource.resourceType
    const id = resource.id
    if (typeof id !== "string" || (this.only !== undefined && !this.only.has(type))) return
    const identifiers = resource.identifier
    if (!Array.isArray(identifiers)) return
    const k = key ?? `${type}/${id}`
    for (const ident of identifiers) {
      if (typeof ident !== "object" || ident === null) continue
      const { system, value } = ident as { system?: unknown; value?: unknown }
      if (typeof value !== "string") continue
      const sys = typeof system === "string" ? system : ""
      push(this.exact, type + SEP + sys + SEP + value, k)
      push(this.anySystem, type + SEP + SEP + value, k)
      this.count++
    }
  }

  /** Number of identifiers indexed. */
  get size(): number {
    return this.count
  }

  /**
   * The resource of `type` carrying the identifier. `system` undefined = any system (`identifier=val`);
   * `system` "" = no system (`identifier=|val`).
   */
  resolve(type: string, system: string | undefined, value: string): IdentifierLookup {
    const hit =
      system === undefined
        ? this.anySystem.get(type + SEP + SEP + value)
        : this.exact.get(type + SEP + system + SEP + value)
    if (hit === undefined) return { _tag: "NotFound" }
    if (typeof hit === "string") return { _tag: "Found", key: hit }
    return { _tag: "Ambiguous", keys: [...hit] }
  }
}

/** One key, or a set of them once an identifier is shared (thousands of resources may share one). */
const push = (map: Map<string, string | Set<string>>, k: string, key: string): void => {
  const cur = map.get(k)
  if (cur === undefined) map.set(k, key)
  else if (typeof cur === "string") {
    if (cur !== key) map.set(k, new Set([cur, key]))
  } else cur.add(key)
}
