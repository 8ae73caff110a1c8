/**
 * The canonical form of a resource for comparison (pure, no I/O):
 * - keys sorted at every level (`stringify`);
 * - `meta.versionId`, `meta.lastUpdated` (and their `_` extensions) removed, `meta.source` without the
 *   `#<request id>` a server may add (HAPI does: the rest is data the import keeps), Ferry's
 *   provenance tag (`meta.tag` with system `urn:ferry:source`) removed, empty `tag` and empty `meta` dropped,
 *   `meta.tag`, `meta.security` and `meta.profile` in one order (sets: servers keep their own);
 * - a narrative (`text`) with status `generated` removed when asked (`ignoreGeneratedNarrative`: a target
 *   that makes its own from the data compared);
 * - the resource's own `id` and its references normalised: same-server absolute → relative, a version dropped
 *   on the source side (as an import drops it) and kept as `/_history/*` on the target's (a reference there pinned
 *   to a version says more than the source's did), `urn:uuid:` resolved when the
 *   context can, conditional references (`Practitioner?identifier=sys|val`, as bulk exports hold them)
 *   resolved to the resource carrying the identifier when the context can, then mapped through `mapKey`
 *   (the source side maps source `Type/id` → target `Type/id`); on a side whose stored references must work
 *   as they are (`transactionOnly: "unresolvable"`, the target), conditional and `urn:uuid:` references
 *   become `unresolvable:<reference>`, as do those the other side cannot resolve;
 * - Attachment `url`s replaced by a placeholder and returned in `attachments` (path + url) so the caller
 *   compares their payloads by sha256 separately; inline `data` stays part of the content;
 * - a number written otherwise than `JSON.stringify` writes it (`1.0`, `0.010`, `16942.30`: FHIR counts a
 *   decimal's written precision) as `{"ferry:decimal": "<as written>"}` (notation aside: `decimalText`), when the
 *   reader kept how it was written
 *   (`NumberText.writtenNumbers`: a FHIR client's answers, an archive read with `keepNumbers`), so that a
 *   server that stored `1.0` as `1` holds a different resource.
 */
import { createHash } from "node:crypto"
import { entryReferences } from "@ferry/core/Bundle"
import { type Resource, setOwn } from "@ferry/core/Ids"
import { writtenNumbers } from "@ferry/core/NumberText"
import { rewrite } from "@ferry/core/Walker"

/** The `meta.tag` system of Ferry's provenance tag (the same value as `@ferry/transform/Rewrite`). */
export const provenanceSystem = "urn:ferry:source"

/** What an attachment `url` becomes in the canonical form. */
export const attachmentPlaceholder = "ferry:attachment"

/**
 * Prefix of a reference that designates nothing a client can follow: on the target every stored conditional or
 * `urn:uuid:` reference (they only work inside a transaction Bundle), on the source side one that the context
 * cannot resolve either. The two compare equal only as the same text: a target holding a conditional reference
 * where the source's designated a resource differs, one that copied a source reference that resolves nowhere
 * (its target was not exported) does not.
 */
export const unresolvablePrefix = "unresolvable:"

export interface CanonicalContext {
  /** The base URL(s) of the server the resource was read from (absolute URLs under it are same-server). */
  readonly base?: string | ReadonlyArray<string>
  /** Source `Type/id` → the `Type/id` to compare with (identity on the target side). */
  readonly mapKey?: (key: string) => string
  /** `urn:uuid:<uuid>` → the `Type/id` it designates, when known. */
  readonly resolveUrn?: (uuid: string) => string | undefined
  /**
   * A conditional reference's `Type` and `identifier` (system undefined = any system) → the `Type/id` of
   * the one resource carrying it, when known.
   */
  readonly resolveConditional?: (
    type: string,
    system: string | undefined,
    value: string,
  ) => string | undefined
  /**
   * Conditional (`Type?…`) and `urn:uuid:` references are for transactions only (references.md): the server
   * resolves them while it processes the Bundle, and one stored as is points at nothing a FHIR client can
   * read. `"resolve"` (default, the source side: what an import resolves) goes through `resolveUrn` /
   * `resolveConditional`; `"unresolvable"` (the target side: what is stored there must work as it is)
   * renders them `unresolvable:<reference>`.
   */
  readonly transactionOnly?: "resolve" | "unresolvable"
  /**
   * A same-server versioned reference (`Type/id/_history/n`): `"drop"` (default, the source side: an import
   * drops the version, the target's history numbers its own) compares as `Type/id`; `"mark"` (the target
   * side) as `Type/id/_history/*`, which no source reference equals: a target reference pinned to a version
   * is not what was migrated.
   */
  readonly versions?: "drop" | "mark"
  /** Numbers as parsed, however they were written (to compare with a side whose number texts were lost). */
  readonly plainNumbers?: boolean
  /** Leave out a narrative with status `generated` (a target that makes its own); default: compared. */
  readonly ignoreGeneratedNarrative?: boolean
  /** Leave out `meta.source` (a target that set its own where the source had none: a `$import` job's). */
  readonly dropMetaSource?: boolean
  /** `meta` members left out altogether (those an import was told to drop). */
  readonly ignoreMeta?: ReadonlyArray<"source" | "tag" | "security">
}

export interface AttachmentRef {
  /** JSON path of the Attachment inside the resource. */
  readonly path: string
  readonly url: string
  /** The content the Attachment carries inline beside its `url` (base64), which the `url` must lead to too. */
  readonly data?: string
}

export interface Canonical {
  readonly value: unknown
  readonly attachments: ReadonlyArray<AttachmentRef>
}

type Json = Record<string, unknown>
const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

/** The members of a set-valued element in one order (by their canonical text). */
const inAnyOrder = (items: ReadonlyArray<unknown>): ReadonlyArray<unknown> =>
  items
    .map((item) => ({ item, key: stringify(item) }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .map((x) => x.item)

/** `meta.source` without the `#<request id>` a server may add (HAPI does, or sets only that). */
const metaSourceOf = (meta: unknown): string =>
  isObject(meta) && typeof meta.source === "string" ? meta.source.replace(/#.*$/s, "") : ""

/** Whether `resource` says where it came from (`meta.source`, beyond a request id). */
export const hasMetaSource = (resource: Resource): boolean => metaSourceOf(resource.meta) !== ""

const stripMeta = (resource: Json, dropSource: boolean, ignore: ReadonlyArray<string> | undefined): Json => {
  const meta = resource.meta
  if (!isObject(meta)) return resource
  const next: Json = {}
  for (const k of Object.keys(meta)) {
    if (k === "versionId" || k === "lastUpdated" || k === "_versionId" || k === "_lastUpdated") continue
    if (ignore?.includes(k.startsWith("_") ? k.slice(1) : k)) continue
    if (k === "source") {
      // a server may add `#<request id>` (HAPI), or set only that: the part before is what was migrated
      const source = dropSource ? "" : metaSourceOf(meta)
      if (source !== "") setOwn(next, k, source)
      continue
    }
    if (k === "tag" && Array.isArray(meta.tag)) {
      const tags = meta.tag.filter((t) => !(isObject(t) && t.system === provenanceSystem))
      if (tags.length > 0) next.tag = inAnyOrder(tags)
      continue
    }
    // tags, security labels and profiles are sets: a server may keep them in its own order
    setOwn(
      next,
      k,
      (k === "security" || k === "profile") && Array.isArray(meta[k]) ? inAnyOrder(meta[k]) : meta[k],
    )
  }
  const out: Json = { ...resource }
  if (Object.keys(next).length === 0) delete out.meta
  else out.meta = next
  return out
}

/**
 * A decimal's value and precision as one text, whatever the notation: its digits and scale, as Java's
 * BigDecimal (which HAPI FHIR keeps decimals in) has them. `1E-7`, `1e-7` and `0.0000001` give `0.0000001`;
 * `1.0` stays `1.0` (not `1`), `0.010` stays `0.010`; a negative scale keeps an exponent (`1e2` is not `100`).
 */
export const decimalText = (text: string): string => {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text)
  if (m === null) return text
  const [, sign = "", int = "", frac = "", exp = "0"] = m
  const digits = `${int}${frac}`.replace(/^0+(?=\d)/, "")
  const scale = frac.length - Number(exp)
  if (scale < 0) return `${sign}${digits}e${-scale}`
  if (scale === 0) return `${sign}${digits}`
  const padded = digits.padStart(scale + 1, "0")
  return `${sign}${padded.slice(0, -scale)}.${padded.slice(-scale)}`
}

/** The key of the stand-in for a number written otherwise than `JSON.stringify` writes it (see the module doc). */
export const decimalKey = "ferry:decimal"

/**
 * `resource` with each number that was written otherwise than `JSON.stringify` writes it replaced by
 * `{ [decimalKey]: <as written> }`; as it is when how its numbers were written is not known, or when the
 * written numbers do not pair up with its own one to one, in order, with equal values (nothing is guessed).
 */
const withWrittenNumbers = (resource: Resource): unknown => {
  const numbers = writtenNumbers(resource)
  if (numbers === undefined) return resource
  let k = 0
  let paired = true
  const copy = (v: unknown): unknown => {
    if (typeof v === "number") {
      const text = numbers[k++]
      if (text === undefined || Number(text) !== v) paired = false
      if (text === undefined) return v
      const written = decimalText(text)
      return written === decimalText(JSON.stringify(v)) ? v : { [decimalKey]: written }
    }
    if (Array.isArray(v)) return v.map(copy)
    if (!isObject(v)) return v
    const out: Json = {}
    for (const key in v) setOwn(out, key, copy(v[key]))
    return out
  }
  const out = copy(resource)
  return paired && k === numbers.length ? out : resource
}

/**
 * Whether the canonical form of `resource` holds a number as written (`{"ferry:decimal": …}`): then a side
 * whose number texts were lost (`numbersLost`) is compared with its form without them (`withoutWrittenDecimals`).
 */
export const hasWrittenDecimals = (resource: Resource): boolean =>
  writtenNumbers(resource)?.some((t) => decimalText(t) !== decimalText(JSON.stringify(Number(t)))) === true

/**
 * A canonical value with each number as written (`{"ferry:decimal": …}`) back to its value: what `canonicalize`
 * gives with `plainNumbers`, without canonicalizing again (the markers stand only where the text's value was the
 * parsed number's).
 */
export const withoutWrittenDecimals = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(withoutWrittenDecimals)
  if (!isObject(value)) return value
  const written = value[decimalKey]
  if (typeof written === "string" && Object.keys(value).length === 1) return Number(written)
  const out: Json = {}
  for (const key in value) setOwn(out, key, withoutWrittenDecimals(value[key]))
  return out
}

/** The canonical form of one resource. */
export const canonicalize = (resource: Resource, ctx: CanonicalContext = {}): Canonical => {
  const attachments: Array<AttachmentRef> = []
  const map = ctx.mapKey ?? ((k: string) => k)
  // a Bundle kept as a resource: references among its own entries are compared as written (as the import keeps them)
  const ownEntry = resource.resourceType === "Bundle" ? entryReferences(resource) : undefined
  const walked = rewrite(ctx.plainNumbers === true ? resource : withWrittenNumbers(resource), {
    ...(ctx.base !== undefined ? { sourceBase: ctx.base } : {}),
    reference: (site) => {
      if (site.canonical) return undefined
      if (
        ownEntry !== undefined &&
        site.raw !== undefined &&
        site.entry !== undefined &&
        ownEntry(site.raw, site.fullUrl)
      )
        return undefined
      const p = site.parsed
      switch (p._tag) {
        case "Relative":
          return map(`${p.type}/${p.id}`)
        case "Versioned":
          return p.base === undefined || p.sameServer
            ? `${map(`${p.type}/${p.id}`)}${ctx.versions === "mark" ? "/_history/*" : ""}`
            : undefined
        case "Absolute":
          return p.sameServer && p.type !== undefined && p.id !== undefined
            ? map(`${p.type}/${p.id}`)
            : undefined
        case "UrnUuid": {
          if (ctx.transactionOnly === "unresolvable") return `${unresolvablePrefix}${site.raw ?? ""}`
          const key = ctx.resolveUrn?.(p.uuid)
          return key === undefined ? `${unresolvablePrefix}${site.raw ?? ""}` : map(key)
        }
        case "Conditional": {
          if (ctx.transactionOnly === "unresolvable") return `${unresolvablePrefix}${site.raw ?? ""}`
          const key =
            p.identifier === undefined
              ? undefined
              : ctx.resolveConditional?.(p.type, p.identifier.system, p.identifier.value)
          return key === undefined ? `${unresolvablePrefix}${site.raw ?? ""}` : map(key)
        }
        default:
          return undefined
      }
    },
    attachment: (site) => {
      const url = site.attachment.url
      if (typeof url !== "string" || url === "") return undefined
      // inline `data` is the content, compared as part of the resource; its `url` (which the import re-points
      // like any other) becomes the placeholder too, and is followed like any other: FHIR has it lead to the
      // same content as the data
      const data = site.attachment.data
      attachments.push({ path: site.path, url, ...(typeof data === "string" ? { data } : {}) })
      return { ...site.attachment, url: attachmentPlaceholder }
    },
  }).resource
  const value = isObject(walked)
    ? { ...stripMeta(walked, ctx.dropMetaSource === true, ctx.ignoreMeta) }
    : walked
  // A narrative with status `generated` is made from the resource's data (which is compared): left out only when
  // asked, for a target that generates its own; most keep it as sent, and a narrative lost is text a person reads.
  if (
    ctx.ignoreGeneratedNarrative === true &&
    isObject(value) &&
    isObject(value.text) &&
    value.text.status === "generated"
  )
    delete value.text
  // The resource's own id is compared as its counterpart's id.
  if (isObject(value) && typeof resource.id === "string" && ctx.mapKey !== undefined) {
    const mapped = ctx.mapKey(`${resource.resourceType}/${resource.id}`)
    value.id = mapped.slice(mapped.indexOf("/") + 1)
  }
  return { value, attachments }
}

/** JSON with object keys sorted at every level (arrays keep their order). */
export const stringify = (value: unknown): string => JSON.stringify(sortKeys(value))

const sortKeys = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(sortKeys)
  if (!isObject(value)) return value
  const out: Json = {}
  for (const k of Object.keys(value).sort()) setOwn(out, k, sortKeys(value[k]))
  return out
}

/** sha256 (hex) of the canonical JSON. */
export const hash = (value: unknown): string => createHash("sha256").update(stringify(value)).digest("hex")

/** Is `key` in a deterministic sample of `percent` % (by the sha256 of the key)? */
export const inSample = (key: string, percent: number): boolean => {
  if (percent >= 100) return true
  const h = createHash("sha256").update(key).digest()
  return (h.readUInt32BE(0) / 0x1_0000_0000) * 100 < percent
}
