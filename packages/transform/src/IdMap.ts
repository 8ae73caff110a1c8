/**
 * The id map: source `Type/id` → target `Type/id`, plus the index of exported source resources that
 * resolves `urn:uuid:<id>` leftovers.
 *
 * - `register(key)` declares that the source export holds `key` (it may not have a target yet);
 *   `set(source, target)` records where it went (and registers it).
 * - `resolveUrn(uuid)` finds the registered source resource whose id is `uuid` — real exports carry
 *   thousands of `urn:uuid:` references left over from the transaction Bundles the data was loaded with.
 *   It resolves only when exactly one registered resource (of any type) has that id.
 * - Identity mode (`IdMap.identity()`, keep-ids / PUT strategy): `get(k)` is `k` for every well-formed
 *   key unless an explicit mapping says otherwise.
 * - Persistence: one NDJSON line per mapping, `{"s":"Patient/1","t":"Patient/abc"}` (`toNdjson`,
 *   `fromNdjson`); later lines win, so an append-only journal replays correctly.
 *
 * Encapsulated and mutable (it grows by millions of entries during an import; an immutable structure
 * would copy). Memory, all in typed arrays outside the JS heap (`KeyTable`): a registered resource costs its
 * id's characters and ≈ 30 bytes more (the type is a number); an explicit mapping its source's and target's
 * characters and ≈ 60 bytes more. `get` builds the target's string on each call.
 */
import { KeyTable, NumberMultimap, withRoom } from "@ferry/core/KeyTable"
import { isId, isTypeLike } from "@ferry/core/Reference"
import { Either } from "effect"
import { TransformError } from "./TransformError.js"

export type UrnLookup =
  | { readonly _tag: "Found"; readonly key: string }
  | { readonly _tag: "NotFound" }
  | { readonly _tag: "Ambiguous"; readonly keys: ReadonlyArray<string> }

/** A type name as Ferry accepts it in keys: an upper-case ASCII letter then ASCII letters. */
const isTypeName = isTypeLike

/** Split a `Type/id` key; `undefined` when it is not one. */
export const parseKey = (key: string): { readonly type: string; readonly id: string } | undefined => {
  const slash = key.indexOf("/")
  if (slash <= 0) return undefined
  const type = key.slice(0, slash)
  const id = key.slice(slash + 1)
  return isTypeName(type) && isId(id) ? { type, id } : undefined
}

/** Is `key` a well-formed `Type/id`? */
export const isKey = (key: string): boolean => parseKey(key) !== undefined

export class IdMap {
  /** The sources of the explicit mappings, numbered in insertion order. */
  private readonly sources = new KeyTable()
  /** The targets of the explicit mappings (a target shared by several sources is stored once). */
  private readonly targetKeys = new KeyTable()
  /** Per source (its number in `sources`): its target's number in `targetKeys`. */
  private targetOf = new Int32Array(1024)
  /** The ids of registered resources, each with the number of its type in `typeNames` (or several). */
  private readonly ids = new NumberMultimap()
  private readonly typeNames: Array<string> = []
  private readonly typeNumbers = new Map<string, number>()
  private registered = 0
  private renames = 0

  private constructor(readonly isIdentity: boolean) {}

  /** An empty map (new-ids strategy: targets come from `response.location`). */
  static empty(): IdMap {
    return new IdMap(false)
  }

  /** Keep-ids strategy: every well-formed key maps to itself unless `set` says otherwise. */
  static identity(): IdMap {
    return new IdMap(true)
  }

  /** A map holding these (source, target) pairs. */
  static fromEntries(entries: Iterable<readonly [string, string]>): IdMap {
    const map = new IdMap(false)
    for (const [s, t] of entries) map.set(s, t)
    return map
  }

  /** The NDJSON line (without newline) that persists one mapping. */
  static line(source: string, target: string): string {
    return JSON.stringify({ s: source, t: target })
  }

  /** Read one persisted line; `lineNumber` (1-based) goes into the error. */
  static parseLine(line: string, lineNumber = 0): Either.Either<readonly [string, string], TransformError> {
    let value: unknown
    try {
      value = JSON.parse(line)
    } catch (cause) {
      return Either.left(
        new TransformError({ reason: "IdMapLine", detail: "not JSON", position: lineNumber, cause }),
      )
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return Either.left(
        new TransformError({ reason: "IdMapLine", detail: "not an object", position: lineNumber }),
      )
    }
    const { s, t } = value as { s?: unknown; t?: unknown }
    if (typeof s !== "string" || !isKey(s)) {
      return Either.left(
        new TransformError({ reason: "IdMapLine", detail: "`s` is not a Type/id", position: lineNumber }),
      )
    }
    if (typeof t !== "string" || !isKey(t)) {
      return Either.left(
        new TransformError({
          reason: "IdMapLine",
          detail: "`t` is not a Type/id",
          position: lineNumber,
          source: s,
        }),
      )
    }
    return Either.right([s, t] as const)
  }

  /** A map from persisted lines (blank lines skipped; later lines win). */
  static fromNdjson(lines: Iterable<string>): Either.Either<IdMap, TransformError> {
    const map = new IdMap(false)
    return Either.map(map.load(lines), () => map)
  }

  /** Add persisted lines to this map (blank lines skipped; later lines win). Stops at the first bad line. */
  load(lines: Iterable<string>): Either.Either<number, TransformError> {
    let n = 0
    let added = 0
    for (const line of lines) {
      n++
      if (line.trim().length === 0) continue
      const parsed = IdMap.parseLine(line, n)
      if (Either.isLeft(parsed)) return Either.left(parsed.left)
      this.set(parsed.right[0], parsed.right[1])
      added++
    }
    return Either.right(added)
  }

  /** The persisted form, one line per explicit mapping, in insertion order. */
  *toNdjson(): Generator<string> {
    for (const [s, t] of this.entries()) yield IdMap.line(s, t)
  }

  /** Declare that the source export holds `key`. Returns false when it was known already or malformed. */
  register(key: string): boolean {
    const k = parseKey(key)
    if (k === undefined) return false
    let type = this.typeNumbers.get(k.type)
    if (type === undefined) {
      type = this.typeNames.length
      this.typeNames.push(k.type)
      this.typeNumbers.set(k.type, type)
    }
    if (!this.ids.add(type, key, k.type.length + 1)) return false
    this.registered++
    return true
  }

  /** Record that source `source` is `target` on the target server (registers `source`). */
  set(source: string, target: string): this {
    this.register(source)
    const known = this.sources.size
    const n = this.sources.add(source)
    if (n < known && this.targetKeys.key(this.targetOf[n]!) !== source) this.renames--
    if (target !== source) this.renames++
    this.targetOf = withRoom(this.targetOf, n)
    this.targetOf[n] = this.targetKeys.add(target)
    return this
  }

  /** The target `Type/id` of a source `Type/id`, if known (in identity mode: the key itself). */
  get(source: string): string | undefined {
    const n = this.sources.size === 0 ? -1 : this.sources.get(source)
    if (n >= 0) return this.targetKeys.key(this.targetOf[n]!)
    return this.isIdentity && isKey(source) ? source : undefined
  }

  has(source: string): boolean {
    return this.get(source) !== undefined
  }

  /** Number of explicit mappings (what `toNdjson` writes). */
  get size(): number {
    return this.sources.size
  }

  /**
   * Number of explicit mappings whose target differs from their source. An identity map with none maps
   * every well-formed key to itself.
   */
  get renamed(): number {
    return this.renames
  }

  /** Number of registered source resources. */
  get known(): number {
    return this.registered
  }

  /** Was `key` registered as a resource of the source export? */
  isKnown(key: string): boolean {
    const k = parseKey(key)
    if (k === undefined) return false
    const type = this.typeNumbers.get(k.type)
    return type !== undefined && this.ids.has(type, key, k.type.length + 1)
  }

  /** The registered resource whose id is `uuid` (exact id first, then lower-cased: UUIDs ignore case). */
  resolveUrn(uuid: string): UrnLookup {
    let found = this.ids.get(uuid)
    let id = uuid
    if (found.length === 0) {
      const lower = uuid.toLowerCase()
      if (lower !== uuid) {
        found = this.ids.get(lower)
        id = lower
      }
    }
    if (found.length === 0) return { _tag: "NotFound" }
    const types = found.map((t) => this.typeNames[t]!)
    if (types.length === 1) return { _tag: "Found", key: `${types[0]}/${id}` }
    return { _tag: "Ambiguous", keys: types.map((t) => `${t}/${id}`) }
  }

  /**
   * The target of a reference string that names an exported resource directly: `Type/id` or
   * `urn:uuid:<id>` (resolved through `resolveUrn`). Other forms: use `Rewrite`.
   */
  lookup(reference: string): string | undefined {
    if (reference.length > 9 && reference.slice(0, 9).toLowerCase() === "urn:uuid:") {
      const hit = this.resolveUrn(reference.slice(9))
      return hit._tag === "Found" ? this.get(hit.key) : undefined
    }
    return this.get(reference)
  }

  /** The explicit mappings, in insertion order (of their sources). */
  *entries(): Generator<[string, string]> {
    for (let n = 0; n < this.sources.size; n++)
      yield [this.sources.key(n), this.targetKeys.key(this.targetOf[n]!)]
  }
}
