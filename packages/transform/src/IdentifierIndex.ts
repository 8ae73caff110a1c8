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
 * Memory: every identifier twice (`Type|system|value`, and `Type||value` for the any-system lookup) and the
 * `Type/id` of every identified resource, as characters in `KeyTable`s outside the JS heap (≈ 25 bytes of
 * bookkeeping each), plus 4 bytes per identifier for its resource. An import indexes every resource it reads,
 * and exports carry identifiers on whole types (every Encounter, Claim or ExplanationOfBenefit): as strings in
 * `Map`s that was ≈ 300 bytes of JS heap per identifier, which V8's heap limit turns into a crash at some
 * millions of resources. Index only the types that conditional references point at (`types` option) when
 * that is known.
 */
import type { Resource } from "@ferry/core/Ids"
import { KeyTable, NumberMultimap } from "@ferry/core/KeyTable"

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
  /** `Type|system|value` (system "" when absent) → resource(s). */
  private readonly exact = new NumberMultimap()
  /** `Type||value` ignoring the system → resource(s). */
  private readonly anySystem = new NumberMultimap()
  /** The `Type/id` of every indexed resource, numbered. */
  private readonly keys = new KeyTable()
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
   * `Type/id` when the caller already holds that string (saves building it).
   */
  add(resource: Resource, key?: string): void {
    const type = resource.resourceType
    const id = resource.id
    if (typeof id !== "string" || (this.only !== undefined && !this.only.has(type))) return
    const identifiers = resource.identifier
    if (!Array.isArray(identifiers)) return
    let k = -1
    for (const ident of identifiers) {
      if (typeof ident !== "object" || ident === null) continue
      const { system, value } = ident as { system?: unknown; value?: unknown }
      if (typeof value !== "string") continue
      if (k < 0) k = this.keys.add(key ?? `${type}/${id}`)
      const sys = typeof system === "string" ? system : ""
      this.exact.add(k, type + SEP + sys + SEP + value)
      this.anySystem.add(k, type + SEP + SEP + value)
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
    const hits =
      system === undefined
        ? this.anySystem.get(type + SEP + SEP + value)
        : this.exact.get(type + SEP + system + SEP + value)
    if (hits.length === 0) return { _tag: "NotFound" }
    if (hits.length === 1) return { _tag: "Found", key: this.keys.key(hits[0]!) }
    return { _tag: "Ambiguous", keys: hits.map((k) => this.keys.key(k)) }
  }
}
