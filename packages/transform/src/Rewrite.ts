/**
 * Rewrite one source resource for the target: every reference site the core walker finds, every
 * Attachment URL, and `meta`.
 *
 * References (source-side resolution in `Resolve.ts`, then `pending` → id map):
 * - relative `Type/id` → mapped `Type/newid`
 * - absolute on a source base → relative, mapped
 * - version-specific → the current version, relative, mapped (noted `VersionDropped`: that version does
 *   not exist on the target)
 * - `urn:uuid:X` leftovers → mapped `Type/id` of the unique exported resource with id X
 * - conditional `Type?identifier=s|v` → resolved through the IdentifierIndex and mapped (`conditionals:
 *   "resolve"`, default), left as is (`"leave"`: the target resolves it in a transaction), or resolved
 *   when possible and otherwise left (`"resolveOrLeave"`, noted `ConditionalLeft`)
 * - logical `{identifier}` → kept (or resolved with `resolveLogical`)
 * - contained `#id`, canonicals, external absolute URLs → never touched (external ones noted `External`)
 * A reference that cannot be taken to the target is left exactly as it was and listed in `unresolved`
 * with its reason; nothing is guessed.
 *
 * Attachments: `url` found in `attachmentUrls` (exported URL → target URL, e.g. a bulk file-server URL
 * or `./attachments/…` path → `Binary/<newid>`) or designating a source resource (`Binary/id`, absolute
 * source URL, `urn:uuid:`) → the target `Binary/<newid>`; inline `data` is never touched.
 *
 * Meta: `versionId` and `lastUpdated` are always dropped (the target assigns them; a stale versionId
 * makes PUTs fail); `source`, `tag` and `security` are kept unless told; `provenanceTag` adds
 * `{system: "urn:ferry:source", code: "<Type>/<source id>@<origin>"}` to `meta.tag` (replacing an older one),
 * where the origin names the source server (`originKey`), so that two sources' `Patient/1` stay apart.
 *
 * The input is never mutated; untouched subtrees are shared with it (copy-on-write, see core Walker).
 * `changes` counts rewritten reference and attachment sites (meta edits are not counted).
 */
import { createHash } from "node:crypto"
import { entryReferences } from "@ferry/core/Bundle"
import type { Resource } from "@ferry/core/Ids"
import { hasOddNumbers } from "@ferry/core/NumberText"
import { format, parse, type ParseOptions, type ParsedReference } from "@ferry/core/Reference"
import { type Attachment, type AttachmentSite, type ReferenceSite, rewrite } from "@ferry/core/Walker"
import { type Resolution, type ResolveContext, resolve, type UnresolvedReason } from "./Resolve.js"

/** The `meta.tag` system of Ferry's provenance tag; the code is `provenanceCode`. */
export const provenanceSystem = "urn:ferry:source"

/**
 * A source server's name in provenance codes: the first 16 hex digits of the sha256 of its FHIR base, with
 * the scheme and host in lower case, the scheme's default port, credentials, query, fragment and trailing
 * slashes left out. Short and fixed (a target indexes tag codes, some only up to 200 characters), and the
 * same for every archive of that server exported under the same base URL (a delta continues the full load's
 * tags); another spelling of its URL (an alias host, http for https) is another origin.
 */
export const originKey = (baseUrl: string): string => {
  let normalized = baseUrl
  try {
    const url = new URL(baseUrl)
    normalized = `${url.protocol}//${url.host}${url.pathname}`
  } catch {
    // not a URL: named as written
  }
  return createHash("sha256").update(normalized.replace(/\/+$/, "")).digest("hex").slice(0, 16)
}

/**
 * The provenance tag's code for the source resource `key` (`Type/id`): `<Type>/<id>@<origin>`, or `key` alone
 * without an origin (imports begun by a Ferry whose codes did not name the source, resumed as they began).
 */
export const provenanceCode = (key: string, origin: string | undefined): string =>
  origin === undefined ? key : `${key}@${origin}`

export interface MetaOptions {
  /** `meta.source` (default "keep"). */
  readonly source?: "keep" | "drop"
  /** `meta.tag` (default "keep"); Ferry's provenance tag is added afterwards when asked. */
  readonly tag?: "keep" | "drop"
  /** `meta.security` (default "keep"). */
  readonly security?: "keep" | "drop"
  /** Add `{system: "urn:ferry:source", code: provenanceCode(<Type>/<id>, provenanceOrigin)}` to `meta.tag` (default false). */
  readonly provenanceTag?: boolean
  /** The source server's `originKey` for the provenance tag's code (absent: the code is `<Type>/<id>`). */
  readonly provenanceOrigin?: string
}

export interface RewriteContext extends ResolveContext {
  /** Base(s) of the source server (FHIR base, proxies): absolute URLs under them are same-server. */
  readonly sourceBase?: ParseOptions["sourceBase"]
  /** What to do with conditional references (default "resolve"). */
  readonly conditionals?: "resolve" | "leave" | "resolveOrLeave"
  /** Exported attachment URL → target URL (e.g. `Binary/<newid>`), looked up before anything else. */
  readonly attachmentUrls?: ReadonlyMap<string, string>
  /**
   * An exported attachment URL's target URL for the resource that holds it (`owner`: that resource's source
   * `Type/id`, a contained resource's container), consulted before `attachmentUrls`: a copy of the bytes made
   * for that resource alone (the import's Binary per owner, whose `securityContext` names it).
   */
  readonly attachmentUrlFor?: (url: string, owner: string) => string | undefined
  readonly meta?: MetaOptions
  /**
   * Placeholders for resources written in the same Bundle: source `Type/id` → `urn:uuid:…`.
   * Consulted before the id map (used by `Chunk.toTransaction` in post mode).
   */
  readonly pending?: ReadonlyMap<string, string>
  /**
   * Conditional references (as written) the archive does not resolve, already looked up on the target: the
   * target `Type/id` each designates there. Consulted before leaving such a reference (`resolveOrLeave`): a
   * batch resolves no conditional reference, only a transaction does.
   */
  readonly conditionalTargets?: ReadonlyMap<string, string>
}

export interface Unresolved {
  /** JSON path of the Reference or Attachment element (see core Walker). */
  readonly path: string
  /** The reference string or attachment URL, as found (and left). */
  readonly reference: string
  readonly reason: UnresolvedReason
  /** The source `Type/id` it designates, when known. */
  readonly key?: string
  /** The site is an `Attachment.url`. */
  readonly attachment?: true
}

export type NoteKind =
  /** A version-specific reference now points at the current version. */
  | "VersionDropped"
  /** An absolute URL on another server, left as is. */
  | "External"
  /** A conditional reference left for the target to resolve. */
  | "ConditionalLeft"
  /** Keep-ids mode: the reference was kept but its resource is not in the export (dangling?). */
  | "NotInExport"

export interface Note {
  readonly path: string
  readonly kind: NoteKind
  readonly reference: string
  readonly target?: string
}

export interface RewriteResult<A> {
  readonly resource: A
  readonly changes: number
  readonly unresolved: ReadonlyArray<Unresolved>
  readonly notes: ReadonlyArray<Note>
}

const NONE: ReadonlyArray<never> = []

/** A conditional left for the target: relative (a source-base prefix would send it to the source). */
const leaveConditional = (parsed: ParsedReference): string | undefined =>
  parsed._tag === "Conditional" && parsed.base !== undefined
    ? format({ ...parsed, base: undefined })
    : undefined

type Json = Record<string, unknown>
const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

/** The source `Type/id` of a resource, when it has an id. */
export const sourceKeyOf = (resource: Resource): string | undefined =>
  typeof resource.id === "string" ? `${resource.resourceType}/${resource.id}` : undefined

/**
 * Rewrite `resource` for the target (see module doc). Never mutates `resource`.
 */
export const rewriteResource = <A extends Resource>(resource: A, ctx: RewriteContext): RewriteResult<A> => {
  let unresolved: Array<Unresolved> | undefined
  let notes: Array<Note> | undefined
  const idMap = ctx.idMap
  const pending = ctx.pending
  const conditionals = ctx.conditionals ?? "resolve"

  const fail = (path: string, reference: string, reason: UnresolvedReason, key?: string, att?: true) => {
    const u: Unresolved = {
      path,
      reference,
      reason,
      ...(key !== undefined ? { key } : {}),
      ...(att ? { attachment: att } : {}),
    }
    if (unresolved === undefined) unresolved = [u]
    else unresolved.push(u)
  }
  const note = (path: string, kind: NoteKind, reference: string, target?: string) => {
    const n: Note = { path, kind, reference, ...(target !== undefined ? { target } : {}) }
    if (notes === undefined) notes = [n]
    else notes.push(n)
  }

  /** The new string for a site (or undefined to leave it), recording unresolved/notes. */
  const target = (
    parsed: ParsedReference,
    raw: string,
    site: { readonly path: string },
    att: true | undefined,
  ): string | undefined => {
    if (parsed._tag === "Conditional" && conditionals === "leave") return leaveConditional(parsed)
    const r: Resolution = resolve(parsed, ctx)
    switch (r._tag) {
      case "Keep":
        if (parsed._tag === "Absolute" || parsed._tag === "Versioned") note(site.path, "External", raw)
        return undefined
      case "Unresolved":
        if (parsed._tag === "Conditional" && conditionals === "resolveOrLeave") {
          const found = ctx.conditionalTargets?.get(raw)
          if (found !== undefined) return found
          note(site.path, "ConditionalLeft", raw)
          return leaveConditional(parsed)
        }
        fail(site.path, raw, r.reason, undefined, att)
        return undefined
      case "Key": {
        const key = r.key
        const placeholder = pending?.get(key)
        const to = placeholder ?? idMap.get(key)
        if (to === undefined) {
          fail(site.path, raw, idMap.isKnown(key) ? "NotMapped" : "NotInExport", key, att)
          return undefined
        }
        if (r.via === "Versioned" && parsed._tag === "Versioned") note(site.path, "VersionDropped", raw, to)
        if (placeholder === undefined && idMap.isIdentity && !idMap.isKnown(key)) {
          note(site.path, "NotInExport", raw, to)
        }
        return to
      }
    }
  }

  // a Bundle kept as a resource: references among its own entries stay as written (see `entryReferences`)
  const ownEntry = resource.resourceType === "Bundle" ? entryReferences(resource) : undefined
  const onReference = (site: ReferenceSite): string | undefined => {
    if (site.canonical) return undefined
    const raw = site.raw
    if (
      ownEntry !== undefined &&
      raw !== undefined &&
      site.entry !== undefined &&
      ownEntry(raw, site.fullUrl)
    )
      return undefined
    const parsed = site.parsed
    if (raw === undefined) {
      // logical reference: only with resolveLogical (and then `reference` is added next to `identifier`)
      if (ctx.resolveLogical !== true) return undefined
      const r = resolve(parsed, ctx)
      if (r._tag !== "Key") return undefined
      return pending?.get(r.key) ?? idMap.get(r.key)
    }
    const c0 = raw.charCodeAt(0)
    if (c0 === 35 /* # */) return undefined // contained: local to the resource
    return target(parsed, raw, site, undefined)
  }

  const attachmentUrls = ctx.attachmentUrls
  const attachmentUrlFor = ctx.attachmentUrlFor
  const owner = attachmentUrlFor === undefined ? undefined : sourceKeyOf(resource)
  const parseOptions: ParseOptions | undefined =
    ctx.sourceBase !== undefined ? { sourceBase: ctx.sourceBase } : undefined
  const onAttachment = (site: AttachmentSite): Attachment | undefined => {
    const att = site.attachment
    const url = att.url
    if (typeof url !== "string") return undefined // inline data (or nothing): untouched
    const mapped =
      (owner === undefined ? undefined : attachmentUrlFor?.(url, owner)) ?? attachmentUrls?.get(url)
    if (mapped !== undefined) return mapped === url ? undefined : { ...att, url: mapped }
    const to = target(parse(url, parseOptions), url, site, true)
    return to === undefined ? undefined : { ...att, url: to }
  }

  const walked = rewrite(resource, {
    ...(ctx.sourceBase !== undefined ? { sourceBase: ctx.sourceBase } : {}),
    reference: onReference,
    attachment: onAttachment,
  })
  const out = applyMeta(walked.resource, ctx.meta)
  return {
    resource: out,
    changes: walked.changed,
    unresolved: unresolved ?? NONE,
    notes: notes ?? NONE,
  }
}

/** Meta handling only (see module doc); returns `resource` itself when nothing changes. */
export const applyMeta = <A extends Resource>(resource: A, options: MetaOptions | undefined): A => {
  const meta = resource.meta
  const key = options?.provenanceTag === true ? sourceKeyOf(resource) : undefined
  const provenance = key === undefined ? undefined : provenanceCode(key, options?.provenanceOrigin)
  if (!isObject(meta) && provenance === undefined) return resource
  const dropSource = options?.source === "drop"
  const dropTag = options?.tag === "drop"
  const dropSecurity = options?.security === "drop"
  const next: Json = {}
  let changed = false
  let fields = 0
  if (isObject(meta)) {
    for (const k in meta) {
      if (
        k === "versionId" ||
        k === "lastUpdated" ||
        k === "_versionId" ||
        k === "_lastUpdated" ||
        (dropSource && (k === "source" || k === "_source")) ||
        (dropTag && k === "tag") ||
        (dropSecurity && k === "security")
      ) {
        changed = true
        continue
      }
      next[k] = meta[k]
      fields++
    }
  }
  if (provenance !== undefined) {
    const tags = Array.isArray(next.tag) ? next.tag : []
    const kept = tags.filter((t) => !(isObject(t) && t.system === provenanceSystem))
    const already =
      kept.length === tags.length - 1 &&
      tags.some((t) => isObject(t) && t.system === provenanceSystem && t.code === provenance)
    if (!already) {
      kept.push({ system: provenanceSystem, code: provenance })
      if (next.tag === undefined) fields++
      next.tag = kept
      changed = true
    }
  }
  if (!changed) return resource
  const out: Json = { ...resource }
  if (fields === 0) delete out.meta
  else out.meta = next
  return out as A
}

// ---------------------------------------------------------------------------------------------------
// meta on JSON text (UTF-8 bytes)

const isSpace = (c: number): boolean => c === 32 || c === 10 || c === 13 || c === 9

/**
 * Index just past the string whose opening quote is at `i`, or -1. (UTF-8: every byte of a multi-byte
 * character is ≥ 0x80, so a quote or a backslash byte is always that character.)
 */
const stringEnd = (b: Uint8Array, i: number): number => {
  let j = i
  for (;;) {
    j = b.indexOf(34, j + 1)
    if (j === -1) return -1
    let backslashes = 0
    for (let k = j - 1; b[k] === 92; k--) backslashes++
    if (backslashes % 2 === 0) return j + 1
  }
}

/** Index just past the JSON value starting at `i` (strings and nesting skipped, not validated), or -1. */
const valueEnd = (b: Uint8Array, i: number): number => {
  const c = b[i]
  if (c === 34) return stringEnd(b, i)
  if (c === 123 || c === 91) {
    let depth = 0
    for (let k = i; k < b.length; k++) {
      const d = b[k]!
      if (d === 34) {
        k = stringEnd(b, k)
        if (k === -1) return -1
        k--
      } else if (d === 123 || d === 91) depth++
      else if (d === 125 || d === 93) {
        depth--
        if (depth === 0) return k + 1
      }
    }
    return -1
  }
  let k = i
  while (k < b.length) {
    const d = b[k]!
    if (d === 44 || d === 125 || d === 93 || isSpace(d)) break
    k++
  }
  return k > i ? k : -1
}

const utf8 = new TextDecoder()
const decode = (b: Uint8Array, from: number, to: number): string =>
  Buffer.isBuffer(b) ? b.toString("utf8", from, to) : utf8.decode(b.subarray(from, to))

const parseJson = (
  b: Uint8Array,
  from: number,
  to: number,
): { readonly ok: true; readonly value: unknown } | { readonly ok: false } => {
  try {
    return { ok: true, value: JSON.parse(decode(b, from, to)) }
  } catch {
    return { ok: false }
  }
}

/**
 * Whether the JSON value at `b[from, to)` is the string `s.slice(sFrom, sTo)`: its bytes compared when it is
 * a plain ASCII string (the usual `resourceType` and `id`), else decoded.
 */
const isString = (
  b: Uint8Array,
  from: number,
  to: number,
  s: string,
  sFrom: number,
  sTo: number,
): boolean => {
  if (b[from] === 34 && b[to - 1] === 34 && to - from - 2 === sTo - sFrom) {
    let plain = true
    for (let k = 0; k < sTo - sFrom; k++) {
      const c = b[from + 1 + k]!
      if (c === 92 || c >= 128) {
        plain = false
        break
      }
      if (c !== s.charCodeAt(sFrom + k)) return false
    }
    if (plain) return true
  }
  const v = parseJson(b, from, to)
  return v.ok && v.value === s.slice(sFrom, sTo)
}

const hasBackslash = (b: Uint8Array, from: number, to: number): boolean => {
  for (let k = from; k < to; k++) if (b[k] === 92) return true
  return false
}

/**
 * Whether the member name whose string spans `b[keyStart, keyEnd)` (quotes included) is `wanted` (ASCII):
 * compared as bytes, or as `decoded` when the name has escapes.
 */
const isName = (
  b: Uint8Array,
  keyStart: number,
  keyEnd: number,
  decoded: string | undefined,
  wanted: string,
): boolean => {
  if (decoded !== undefined) return decoded === wanted
  if (keyEnd - keyStart - 2 !== wanted.length) return false
  for (let k = 0; k < wanted.length; k++) if (b[keyStart + 1 + k] !== wanted.charCodeAt(k)) return false
  return true
}

/** An edit of a JSON text: the bytes `[from, to)` replaced by `insert` (nothing to change: `from = to`, ""). */
export interface MetaEdit {
  readonly from: number
  readonly to: number
  readonly insert: string
}

const unchanged: MetaEdit = { from: 0, to: 0, insert: "" }

/**
 * `applyMeta` on a resource's JSON text (UTF-8), without parsing the resource: the top-level members are
 * scanned (strings and nested values skipped over), only `resourceType`, `id` and `meta` are parsed, and the
 * new `meta` is spliced into the text (in its place; appended when there was none; removed when it ends up
 * empty). Everything else stays byte for byte as it was. For a resource with nothing else to rewrite (see
 * `Graph.DeferredEdges.verbatim`) this replaces decoding, parsing, re-serialising and encoding it.
 *
 * The result is an edit (`MetaEdit`) for the caller to apply as it copies the text on (see
 * `Chunk.TransactionWriter.addBytes`). `undefined` when the text is not one JSON object whose
 * `resourceType` and `id` make `key` (`Type/id`), when `resourceType`, `id` or `meta` occurs twice, or when
 * `meta` holds a number `JSON.stringify` would write otherwise: the caller then parses the resource. The text is not validated beyond that structure (it is expected to be a
 * line the caller parsed before).
 * For text that `JSON.parse` reads, `JSON.parse` of the edited text deep-equals
 * `applyMeta(JSON.parse(text), o)`.
 */
export const applyMetaBytes = (
  bytes: Uint8Array,
  key: string,
  options: MetaOptions | undefined,
): MetaEdit | undefined => {
  const b = bytes
  let i = 0
  const n = b.length
  const skipSpace = () => {
    while (i < n && isSpace(b[i]!)) i++
  }
  skipSpace()
  if (b[i] !== 123) return undefined
  const open = i
  i++
  let type: [number, number] | undefined
  let id: [number, number] | undefined
  /** `meta`: from the start of its member (its key) to the end of its value, and the value's span. */
  let meta: { member: number; start: number; end: number } | undefined
  let members = 0
  let lastEnd = open + 1
  skipSpace()
  if (b[i] === 125) i++
  else
    for (;;) {
      skipSpace()
      if (b[i] !== 34) return undefined
      const keyStart = i
      const keyEnd = stringEnd(b, i)
      if (keyEnd === -1) return undefined
      // member names Ferry looks for have no escapes; an escaped name is compared decoded
      let name: string | undefined
      if (hasBackslash(b, keyStart + 1, keyEnd - 1)) {
        const decoded = parseJson(b, keyStart, keyEnd)
        if (!decoded.ok || typeof decoded.value !== "string") return undefined
        name = decoded.value
      }
      i = keyEnd
      skipSpace()
      if (b[i] !== 58) return undefined
      i++
      skipSpace()
      const valueStart = i
      const end = valueEnd(b, i)
      if (end === -1) return undefined
      if (isName(b, keyStart, keyEnd, name, "resourceType")) {
        if (type !== undefined) return undefined
        type = [valueStart, end]
      } else if (isName(b, keyStart, keyEnd, name, "id")) {
        if (id !== undefined) return undefined
        id = [valueStart, end]
      } else if (isName(b, keyStart, keyEnd, name, "meta")) {
        if (meta !== undefined) return undefined
        meta = { member: keyStart, start: valueStart, end }
      }
      members++
      i = end
      lastEnd = end
      skipSpace()
      const c = b[i]
      i++
      if (c === 125) break
      if (c !== 44) return undefined
    }
  skipSpace()
  if (i !== n || type === undefined || id === undefined) return undefined
  const slash = key.indexOf("/")
  if (
    slash < 0 ||
    !isString(b, type[0], type[1], key, 0, slash) ||
    !isString(b, id[0], id[1], key, slash + 1, key.length)
  )
    return undefined
  // a meta holding a number JSON.stringify writes otherwise (a tag's `valueDecimal` 0.10) is not re-serialised
  // here: the caller parses the resource, whose numbers are then restored as written (core NumberText)
  const metaText = meta === undefined ? undefined : decode(b, meta.start, meta.end)
  if (metaText !== undefined && hasOddNumbers(metaText)) return undefined
  let metaValue: unknown
  if (metaText !== undefined)
    try {
      metaValue = JSON.parse(metaText)
    } catch {
      return undefined
    }
  const stub: Resource = {
    resourceType: key.slice(0, slash),
    id: key.slice(slash + 1),
    ...(metaText !== undefined ? { meta: metaValue } : {}),
  }
  const out = applyMeta(stub, options)
  if (out === stub) return unchanged
  const next = out.meta
  if (meta === undefined) {
    if (next === undefined) return unchanged
    return { from: lastEnd, to: lastEnd, insert: `${members > 0 ? "," : ""}"meta":${JSON.stringify(next)}` }
  }
  if (next !== undefined) return { from: meta.start, to: meta.end, insert: JSON.stringify(next) }
  // the member goes, with one comma: the one after it, or else the one before it
  let from = meta.member
  let to = meta.end
  let k = to
  while (k < n && isSpace(b[k]!)) k++
  if (b[k] === 44) to = k + 1
  else {
    let p = from - 1
    while (p > open && isSpace(b[p]!)) p--
    if (b[p] === 44) from = p
  }
  return { from, to, insert: "" }
}
