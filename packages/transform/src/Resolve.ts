/**
 * Source-side resolution of a classified reference: which source `Type/id` (if any) it designates.
 * Shared by `Rewrite` (then mapped to the target) and `Graph` (dependency edges).
 *
 * - Relative, same-server Absolute, same-server Versioned → that key
 * - `urn:uuid:X` → the unique registered resource with id X (`IdMap.resolveUrn`)
 * - `Type?identifier=sys|val` → through the `IdentifierIndex` (only a lone `identifier` parameter)
 * - Logical `{identifier, type}` → through the `IdentifierIndex` when `resolveLogical` is set
 * - Contained `#id`, canonicals, external absolute URLs, unresolvable logical references → Keep
 * - everything else → Unresolved with a reason
 */
import { type ParsedReference, key as keyOf } from "@ferry/core/Reference"
import type { IdentifierIndex } from "./IdentifierIndex.js"
import type { IdMap } from "./IdMap.js"

export type Via = "Relative" | "Absolute" | "Versioned" | "UrnUuid" | "Conditional" | "Logical"

export type UnresolvedReason =
  /** The source resource is in the export but has no target yet (not loaded, or loaded in this chunk). */
  | "NotMapped"
  /** The reference designates a source resource that is not in the export (dangling in the source). */
  | "NotInExport"
  /** `urn:uuid:X` and no exported resource has id X. */
  | "UrnNotFound"
  /** `urn:uuid:X` and several exported resources (of different types) have id X. */
  | "UrnAmbiguous"
  /** `urn:oid:` outside a Bundle: nothing to resolve it against. */
  | "UrnOid"
  /** Conditional reference, and no resource of that type carries the identifier. */
  | "ConditionalNotFound"
  /** Conditional reference matching several resources (the transaction would fail). */
  | "ConditionalAmbiguous"
  /** Conditional reference with search parameters other than one `identifier`, or no index given. */
  | "ConditionalUnsupported"
  /** An absolute URL on the source server that is not `Type/id` (e.g. an operation URL). */
  | "SourceUrl"
  /** Not a reference Ferry can read (empty, a local path, junk). */
  | "Unparseable"

export type Resolution =
  | { readonly _tag: "Key"; readonly key: string; readonly via: Via }
  | { readonly _tag: "Keep" }
  | { readonly _tag: "Unresolved"; readonly reason: UnresolvedReason }

export interface ResolveContext {
  /** Registered source resources (for `urn:uuid:`). */
  readonly idMap: IdMap
  /** Business identifiers of source resources (for conditional and logical references). */
  readonly identifiers?: IdentifierIndex
  /** Resolve identifier-only (logical) references to literal ones when the index has a unique match. */
  readonly resolveLogical?: boolean
}

const KEEP: Resolution = { _tag: "Keep" }
const unresolved = (reason: UnresolvedReason): Resolution => ({ _tag: "Unresolved", reason })

export const resolve = (ref: ParsedReference, ctx: ResolveContext): Resolution => {
  switch (ref._tag) {
    case "Relative":
      return { _tag: "Key", key: keyOf(ref.type, ref.id), via: "Relative" }
    case "Versioned":
      return ref.sameServer ? { _tag: "Key", key: keyOf(ref.type, ref.id), via: "Versioned" } : KEEP
    case "Absolute":
      if (!ref.sameServer) return KEEP
      return ref.type !== undefined && ref.id !== undefined
        ? { _tag: "Key", key: keyOf(ref.type, ref.id), via: "Absolute" }
        : unresolved("SourceUrl")
    case "UrnUuid": {
      const hit = ctx.idMap.resolveUrn(ref.uuid)
      return hit._tag === "Found"
        ? { _tag: "Key", key: hit.key, via: "UrnUuid" }
        : unresolved(hit._tag === "NotFound" ? "UrnNotFound" : "UrnAmbiguous")
    }
    case "UrnOid":
      return unresolved("UrnOid")
    case "Conditional": {
      const index = ctx.identifiers
      if (index === undefined || ref.identifier === undefined || ref.params.length !== 1) {
        return unresolved("ConditionalUnsupported")
      }
      const hit = index.resolve(ref.type, ref.identifier.system, ref.identifier.value)
      return hit._tag === "Found"
        ? { _tag: "Key", key: hit.key, via: "Conditional" }
        : unresolved(hit._tag === "NotFound" ? "ConditionalNotFound" : "ConditionalAmbiguous")
    }
    case "Logical": {
      const index = ctx.identifiers
      const value = ref.identifier.value
      if (
        ctx.resolveLogical !== true ||
        index === undefined ||
        ref.type === undefined ||
        value === undefined
      ) {
        return KEEP
      }
      const hit = index.resolve(ref.type, ref.identifier.system, value)
      return hit._tag === "Found" ? { _tag: "Key", key: hit.key, via: "Logical" } : KEEP
    }
    case "Contained":
    case "Canonical":
      return KEEP
    case "Unknown":
      return unresolved("Unparseable")
  }
}

const BINARY_URL = /(?:^|\/)Binary\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/

/**
 * The id of the source's own `Binary` an `Attachment.url` designates: `Binary/<id>` (relative, or absolute under
 * `sourceBase`, version-specific allowed); undefined for any other URL. The export fetched such a URL as an
 * attachment blob, and the archive may hold the same Binary as a resource.
 */
export const sourceBinaryId = (
  url: string,
  sourceBase: string | ReadonlyArray<string>,
): string | undefined => {
  const m = BINARY_URL.exec(url)
  const bases = typeof sourceBase === "string" ? [sourceBase] : sourceBase
  return m !== null &&
    (url.startsWith("Binary/") || bases.some((b) => url.startsWith(`${b.replace(/\/+$/, "")}/`)))
    ? m[1]
    : undefined
}
