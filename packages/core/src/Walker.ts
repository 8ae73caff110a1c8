/**
 * Find and rewrite every Reference, canonical and Attachment anywhere in a plain-JSON FHIR resource.
 *
 * The walk is generic (the whole JSON tree, not a list of paths): nested objects, arrays, backbone
 * elements, `contained[]`, extensions and modifierExtensions at any depth, primitive-extension siblings
 * (`_field`), and any nested resource (Bundle `entry[].resource`, `Parameters.parameter.resource`, …).
 *
 * What counts as a site:
 * - Reference: an object (not a resource) with a string `reference` → `parse(reference)`; or an object whose
 *   only fields are Reference fields (`identifier` object, optional string `type`/`display`, `id`, `extension`)
 *   with an `identifier` and no `reference` → `Logical`. A display-only Reference is not a site.
 * - Canonical: a string (or string array item) in a canonical-typed element, known by its name: any
 *   `…Canonical` choice (`valueCanonical`, `instantiatesCanonical`, …), `meta.profile`, `valueSet`,
 *   `questionnaire`, `library`, `targetProfile`, … (see `canonicalKeys`) → `parse(s, { canonical: true })`.
 * - Attachment: an object whose fields are all Attachment fields, and which either sits in an
 *   Attachment-typed element (`…Attachment`, `attachment`, `presentedForm`, `photo`, `Media.content`,
 *   `Library.content`) or has `url`/`data` with `contentType`/`size`/`hash`. Coding, Identifier, Meta and
 *   Extension never match (they carry fields an Attachment does not have).
 *
 * Not touched: narrative (`text.div`) is left alone; its links are neither reported nor rewritten
 * (regenerate or rewrite the narrative separately). `uri`/`url` elements other than `Attachment.url`
 * (e.g. `valueUri`) are not reported. `Reference.type`/`display` are hints and never rewritten.
 *
 * Paths: JSON paths relative to the resource given, e.g. `subject`, `diagnosis[0].condition`,
 * `contained[1].subject`, `extension[2].valueReference`, `meta.profile[0]`, `entry[3].resource.encounter`.
 * For a Reference the path names the Reference element (its string is at `<path>.reference`).
 *
 * Hot path: one recursive pass, no regexes, no generators, paths and parses computed only when a
 * caller reads them; `rewrite` copies only the objects/arrays on the way to a changed site.
 */
import { type ParsedReference, type ParseOptions, parse } from "./Reference.js"
import { setOwn } from "./Ids.js"

/** A FHIR Attachment (plain JSON; unknown fields are kept). */
export interface Attachment {
  readonly contentType?: string
  readonly language?: string
  readonly data?: string
  readonly url?: string
  readonly size?: number
  readonly hash?: string
  readonly title?: string
  readonly creation?: string
  readonly [key: string]: unknown
}

/** Where a site sits, besides its path. */
interface SiteContext {
  /** JSON path from the walked value (see module doc). */
  readonly path: string
  /** `resourceType` of the innermost resource holding the site (a contained resource's own type). */
  readonly resourceType: string
  /** The id (without `#`) of the contained resource holding the site, if it is inside `contained[]`. */
  readonly inContained?: string
  /** When walking a Bundle: the index of the entry holding the site, and that entry's `fullUrl`. */
  readonly entry?: number
  readonly fullUrl?: string
}

export interface ReferenceSite extends SiteContext {
  /** The classified reference (`Logical` for identifier-only, `Canonical` in canonical elements). */
  readonly parsed: ParsedReference
  /** The reference string (`Reference.reference` or the canonical); `undefined` for Logical. */
  readonly raw: string | undefined
  /** The site is a canonical-typed element (not a REST reference). */
  readonly canonical: boolean
  /** The Reference object (read-only view), `undefined` for canonicals. */
  readonly element: Readonly<Record<string, unknown>> | undefined
}

export interface AttachmentSite extends SiteContext {
  /** The Attachment object (read-only view; do not mutate). */
  readonly attachment: Readonly<Attachment>
}

export interface WalkOptions {
  /** Passed to `Reference.parse` for every reference string (same-server detection). */
  readonly sourceBase?: ParseOptions["sourceBase"]
}

export interface RewriteOptions extends WalkOptions {
  /** Return the new reference string (or canonical) for a site, or `undefined` to leave it. */
  readonly reference?: (site: ReferenceSite) => string | undefined
  /** Return the new Attachment for a site, or `undefined` to leave it. The new value is not walked. */
  readonly attachment?: (site: AttachmentSite) => Attachment | undefined
}

// ---------------------------------------------------------------------------------------------------
// element-name tables

/**
 * Element names whose string values are R4 `canonical`s (besides every name ending in `Canonical`).
 * Names that mean something else on some resources are qualified in `canonicalKeysOn`.
 */
export const canonicalKeys: ReadonlySet<string> = new Set([
  "profile", // Meta.profile, ElementDefinition.type.profile, DataRequirement.profile, CapabilityStatement…
  "targetProfile",
  "supportedProfile",
  "inputProfile",
  "outputProfile",
  "valueSet", // ElementDefinition.binding, ValueSet.compose.include, CodeSystem, DataRequirement.codeFilter
  "answerValueSet",
  "baseDefinition",
  "supplements",
  "questionnaire", // QuestionnaireResponse.questionnaire
  "library",
  "derivedFrom", // Questionnaire, SearchParameter (Observation.derivedFrom is a Reference object)
  "instantiates", // CapabilityStatement, TerminologyCapabilities
  "imports",
  "implementationGuide",
  "measure", // MeasureReport.measure
  "capabilities", // TestScript.metadata.capability
  "partOf", // ChargeItemDefinition (elsewhere a Reference object)
  "replaces", // ChargeItemDefinition, MessageDefinition (ServiceRequest.replaces is a Reference object)
])

/** Names that are canonical only on some resources (e.g. `SearchParameter.base` is a code). */
export const canonicalKeysOn: ReadonlyMap<string, ReadonlySet<string>> = new Map([
  ["base", new Set(["OperationDefinition", "MessageDefinition"])],
  ["parent", new Set(["MessageDefinition"])],
  ["message", new Set(["MessageDefinition"])],
  ["definition", new Set(["CapabilityStatement", "MessageHeader"])],
  ["transform", new Set(["ActivityDefinition", "PlanDefinition"])], // StructureMap's `transform` is a code
  ["import", new Set(["StructureMap"])],
  ["uri", new Set(["ImplementationGuide"])],
])

const isCanonicalKey = (k: string, resourceType: string): boolean => {
  if (canonicalKeys.has(k)) return true
  if (k.length > 9 && k.endsWith("Canonical")) return true
  const on = canonicalKeysOn.get(k)
  return on?.has(resourceType) === true
}

const referenceFields: ReadonlySet<string> = new Set([
  "id",
  "extension",
  "reference",
  "type",
  "identifier",
  "display",
  "_reference",
  "_type",
  "_display",
])

const attachmentFields: ReadonlySet<string> = new Set([
  "id",
  "extension",
  "contentType",
  "language",
  "data",
  "url",
  "size",
  "hash",
  "title",
  "creation",
  "_contentType",
  "_language",
  "_data",
  "_url",
  "_size",
  "_hash",
  "_title",
  "_creation",
])

/** Element names typed Attachment in R4 (besides every name ending in `Attachment`). */
export const attachmentKeys: ReadonlySet<string> = new Set(["attachment", "presentedForm", "photo"])

/** Resources whose top-level `content` is an Attachment. */
const contentIsAttachment: ReadonlySet<string> = new Set(["Media", "Library"])

// ---------------------------------------------------------------------------------------------------
// shape checks

type Json = Record<string, unknown>

const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

const onlyFields = (o: Json, allowed: ReadonlySet<string>): boolean => {
  for (const k in o) if (!allowed.has(k)) return false
  return true
}

const isLogical = (o: Json): boolean => {
  const identifier = o.identifier
  if (!isObject(identifier)) return false
  if (typeof identifier.value !== "string" && typeof identifier.system !== "string") return false
  if (o.type !== undefined && typeof o.type !== "string") return false
  if (o.display !== undefined && typeof o.display !== "string") return false
  return onlyFields(o, referenceFields)
}

const isAttachmentAt = (
  o: Json,
  key: string,
  parentIsResourceRoot: boolean,
  resourceType: string,
): boolean => {
  if (!onlyFields(o, attachmentFields)) return false
  const positional =
    attachmentKeys.has(key) ||
    (key.length > 10 && key.endsWith("Attachment")) ||
    (key === "content" && parentIsResourceRoot && contentIsAttachment.has(resourceType))
  if (positional) return true
  const hasUrl = typeof o.url === "string"
  const hasData = typeof o.data === "string"
  if (!hasUrl && !hasData) return false
  return typeof o.contentType === "string" || hasData || o.size !== undefined || typeof o.hash === "string"
}

// ---------------------------------------------------------------------------------------------------
// paths: a stack of segments, joined only when a caller reads `site.path`

type Segment = string | number

const joinPath = (segs: ReadonlyArray<Segment>): string => {
  let out = ""
  for (const s of segs) {
    if (typeof s === "number") out += `[${s}]`
    else out += out.length === 0 ? s : `.${s}`
  }
  return out
}

interface Frame {
  readonly resourceType: string
  readonly inContained: string | undefined
  readonly entry: number | undefined
  readonly fullUrl: string | undefined
}

class Site {
  private _path: string | undefined
  private readonly segs: ReadonlyArray<Segment>
  readonly resourceType: string
  readonly inContained?: string
  readonly entry?: number
  readonly fullUrl?: string
  constructor(segs: ReadonlyArray<Segment>, frame: Frame) {
    this.segs = segs
    this.resourceType = frame.resourceType
    if (frame.inContained !== undefined) this.inContained = frame.inContained
    if (frame.entry !== undefined) this.entry = frame.entry
    if (frame.fullUrl !== undefined) this.fullUrl = frame.fullUrl
  }
  get path(): string {
    if (this._path === undefined) this._path = joinPath(this.segs)
    return this._path
  }
}

class RefSite extends Site implements ReferenceSite {
  private _parsed: ParsedReference | undefined
  readonly raw: string | undefined
  readonly canonical: boolean
  readonly element: Readonly<Json> | undefined
  private readonly options: WalkOptions | undefined
  constructor(
    segs: ReadonlyArray<Segment>,
    frame: Frame,
    raw: string | undefined,
    canonical: boolean,
    element: Json | undefined,
    options: WalkOptions | undefined,
  ) {
    super(segs, frame)
    this.raw = raw
    this.canonical = canonical
    this.element = element
    this.options = options
  }
  get parsed(): ParsedReference {
    if (this._parsed === undefined) this._parsed = this.classify()
    return this._parsed
  }
  private classify(): ParsedReference {
    if (this.raw === undefined) {
      const e = this.element ?? {}
      const identifier = e.identifier as { system?: unknown; value?: unknown }
      return {
        _tag: "Logical",
        identifier: {
          ...(typeof identifier.system === "string" ? { system: identifier.system } : {}),
          ...(typeof identifier.value === "string" ? { value: identifier.value } : {}),
        },
        ...(typeof e.type === "string" ? { type: e.type } : {}),
      }
    }
    const base = this.options?.sourceBase
    return parse(this.raw, {
      ...(base !== undefined ? { sourceBase: base } : {}),
      ...(this.canonical ? { canonical: true } : {}),
    })
  }
}

class AttSite extends Site implements AttachmentSite {
  readonly attachment: Readonly<Attachment>
  constructor(segs: ReadonlyArray<Segment>, frame: Frame, attachment: Attachment) {
    super(segs, frame)
    this.attachment = attachment
  }
}

// ---------------------------------------------------------------------------------------------------
// the walk

interface Visitor {
  readonly options: WalkOptions | undefined
  readonly onReference: ((site: ReferenceSite) => string | undefined) | undefined
  readonly onAttachment: ((site: AttachmentSite) => Attachment | undefined) | undefined
  /** The path of the value being visited, as a stack of segments (copied only when a site is found). */
  readonly stack: Array<Segment>
  changed: number
}

const snapshot = (stack: ReadonlyArray<Segment>, last?: Segment): ReadonlyArray<Segment> => {
  const segs = stack.slice()
  if (last !== undefined) segs.push(last)
  return segs
}

/** Visit a canonical string at `stack + last`; returns the replacement or undefined. */
const visitCanonical = (v: Visitor, frame: Frame, s: string, last: Segment): string | undefined => {
  if (v.onReference === undefined) return undefined
  const site = new RefSite(snapshot(v.stack, last), frame, s, true, undefined, v.options)
  const next = v.onReference(site)
  if (next !== undefined && next !== s) {
    v.changed++
    return next
  }
  return undefined
}

/**
 * Walk one object. `key` is the element name it sits under (for arrays, the array's name),
 * `parentIsResourceRoot` whether its parent is the resource itself. Returns the object or a changed copy.
 */
const walkObject = (v: Visitor, o: Json, key: string, frame: Frame, parentIsResourceRoot: boolean): Json => {
  // a nested resource (the walked root, contained[], Bundle entry, Parameters.parameter.resource, …)
  const rt = o.resourceType
  if (typeof rt === "string") {
    return walkChildren(v, o, { ...frame, resourceType: rt }, true)
  }

  const ref = o.reference
  if (typeof ref === "string" || (ref === undefined && o.identifier !== undefined && isLogical(o))) {
    let out = o
    if (v.onReference !== undefined) {
      const raw = typeof ref === "string" ? ref : undefined
      const site = new RefSite(snapshot(v.stack), frame, raw, false, o, v.options)
      const next = v.onReference(site)
      if (next !== undefined && next !== raw) {
        v.changed++
        out = { ...o, reference: next }
      }
    }
    // Reference.extension and Reference.identifier.assigner may hold more sites
    if (out.extension === undefined && out.identifier === undefined && out._reference === undefined)
      return out
    return walkChildren(v, out, frame, false)
  }

  if (v.onAttachment !== undefined && isAttachmentAt(o, key, parentIsResourceRoot, frame.resourceType)) {
    const site = new AttSite(snapshot(v.stack), frame, o)
    const next = v.onAttachment(site)
    if (next !== undefined && next !== o) {
      v.changed++
      return next as Json
    }
    if (o.extension === undefined) return o
    return walkChildren(v, o, frame, false)
  }

  return walkChildren(v, o, frame, false)
}

const walkChildren = (v: Visitor, o: Json, frame: Frame, isResource: boolean): Json => {
  let out: Json | undefined
  const stack = v.stack
  const isBundle = isResource && frame.resourceType === "Bundle"
  for (const k in o) {
    const child = o[k]
    if (typeof child !== "object" || child === null) {
      if (typeof child === "string" && v.onReference !== undefined && isCanonicalKey(k, frame.resourceType)) {
        const next = visitCanonical(v, frame, child, k)
        if (next !== undefined) {
          if (out === undefined) out = { ...o }
          setOwn(out, k, next)
        }
      }
      continue
    }
    if (isResource && k === "text") continue // Narrative (text.div): left alone, see module doc
    stack.push(k)
    let next: unknown
    if (Array.isArray(child)) {
      if (isResource && k === "contained") next = walkContained(v, child, frame)
      else if (isBundle && k === "entry") next = walkEntries(v, child, frame)
      else next = walkArray(v, child, k, frame, isResource)
    } else {
      next = walkObject(v, child as Json, k, frame, isResource)
    }
    stack.pop()
    if (next !== child) {
      if (out === undefined) out = { ...o }
      setOwn(out, k, next)
    }
  }
  return out ?? o
}

const walkArray = (
  v: Visitor,
  a: ReadonlyArray<unknown>,
  key: string,
  frame: Frame,
  parentIsResourceRoot: boolean,
): ReadonlyArray<unknown> => {
  let out: Array<unknown> | undefined
  const stack = v.stack
  const canonical = v.onReference !== undefined && isCanonicalKey(key, frame.resourceType)
  for (let i = 0; i < a.length; i++) {
    const item = a[i]
    let next: unknown = item
    if (typeof item === "string") {
      if (canonical) next = visitCanonical(v, frame, item, i) ?? item
    } else if (isObject(item)) {
      stack.push(i)
      next = walkObject(v, item, key, frame, parentIsResourceRoot)
      stack.pop()
    } else if (Array.isArray(item)) {
      stack.push(i)
      next = walkArray(v, item, key, frame, false)
      stack.pop()
    }
    if (next !== item) {
      if (out === undefined) out = a.slice()
      out[i] = next
    }
  }
  return out ?? a
}

const walkContained = (v: Visitor, a: ReadonlyArray<unknown>, frame: Frame): ReadonlyArray<unknown> => {
  let out: Array<unknown> | undefined
  const stack = v.stack
  for (let i = 0; i < a.length; i++) {
    const item = a[i]
    if (!isObject(item)) continue
    const id = typeof item.id === "string" ? item.id : ""
    stack.push(i)
    const next = walkObject(v, item, "contained", { ...frame, inContained: id }, true)
    stack.pop()
    if (next !== item) {
      if (out === undefined) out = a.slice()
      out[i] = next
    }
  }
  return out ?? a
}

const walkEntries = (v: Visitor, a: ReadonlyArray<unknown>, frame: Frame): ReadonlyArray<unknown> => {
  let out: Array<unknown> | undefined
  const stack = v.stack
  for (let i = 0; i < a.length; i++) {
    const item = a[i]
    if (!isObject(item)) continue
    const fullUrl = typeof item.fullUrl === "string" ? item.fullUrl : undefined
    stack.push(i)
    const next = walkObject(v, item, "entry", { ...frame, inContained: undefined, entry: i, fullUrl }, false)
    stack.pop()
    if (next !== item) {
      if (out === undefined) out = a.slice()
      out[i] = next
    }
  }
  return out ?? a
}

const run = <A>(
  value: A,
  options: WalkOptions | undefined,
  onReference: Visitor["onReference"],
  onAttachment: Visitor["onAttachment"],
): { readonly value: A; readonly changed: number } => {
  const v: Visitor = { options, onReference, onAttachment, stack: [], changed: 0 }
  if (!isObject(value)) return { value, changed: 0 }
  const rt = typeof value.resourceType === "string" ? value.resourceType : ""
  const frame: Frame = { resourceType: rt, inContained: undefined, entry: undefined, fullUrl: undefined }
  const out = walkObject(v, value, "", frame, false)
  return { value: out as A, changed: v.changed }
}

// ---------------------------------------------------------------------------------------------------
// public API

/**
 * Every Reference site (literal, logical and canonical) in `resource`, in document order.
 * `resource` may be any resource, including a Bundle (entries are walked) or a bare element.
 */
export const references = (resource: unknown, options?: WalkOptions): ReadonlyArray<ReferenceSite> => {
  const out: Array<ReferenceSite> = []
  run(
    resource,
    options,
    (site) => {
      out.push(site)
      return undefined
    },
    undefined,
  )
  return out
}

/** Every Attachment site in `resource`, in document order. */
export const attachments = (resource: unknown): ReadonlyArray<AttachmentSite> => {
  const out: Array<AttachmentSite> = []
  run(resource, undefined, undefined, (site) => {
    out.push(site)
    return undefined
  })
  return out
}

/**
 * A new resource where each site for which a callback returns a value has that value (a Reference's
 * `reference` string, a canonical string, or a whole Attachment). The input is never mutated; objects and
 * arrays not on the way to a changed site are shared with the input, and when nothing changes the
 * input itself is returned. `changed` counts the replaced sites (a callback returning the current value
 * does not count). Narrative `text.div` is not rewritten.
 */
export const rewrite = <A>(
  resource: A,
  options: RewriteOptions,
): { readonly resource: A; readonly changed: number } => {
  const { value, changed } = run(resource, options, options.reference, options.attachment)
  return { resource: value, changed }
}

// ---------------------------------------------------------------------------------------------------
// reference strings only: the same rules, no sites

/**
 * Every `Reference.reference` string and every string `Attachment.url` in `resource`, in document order, found
 * by the same rules as `rewrite` (nested resources, contained, Bundle entries, the Narrative left alone) but
 * without building a site, a path or a frame for each: `attachment` says which of the two it is. Canonical
 * strings and logical references (no string to give) are not visited. For hot loops that only collect the
 * strings (an import's graph pass walks every resource of the archive).
 */
export const referenceStrings = (
  resource: unknown,
  onString: (raw: string, attachment: boolean) => void,
): void => {
  if (!isObject(resource)) return
  stringsOfObject(
    onString,
    resource,
    "",
    typeof resource.resourceType === "string" ? resource.resourceType : "",
    false,
  )
}

type OnString = (raw: string, attachment: boolean) => void

const stringsOfObject = (
  f: OnString,
  o: Json,
  key: string,
  resourceType: string,
  parentIsResourceRoot: boolean,
): void => {
  const rt = o.resourceType
  if (typeof rt === "string") {
    stringsOfChildren(f, o, rt, true)
    return
  }
  const ref = o.reference
  if (typeof ref === "string") {
    f(ref, false)
    // Reference.extension and Reference.identifier.assigner may hold more (walkObject)
    if (o.extension !== undefined || o.identifier !== undefined || o._reference !== undefined)
      stringsOfChildren(f, o, resourceType, false)
    return
  }
  // (a logical reference is never an Attachment: its children are walked either way)
  if (isAttachmentAt(o, key, parentIsResourceRoot, resourceType)) {
    if (typeof o.url === "string") f(o.url, true)
    if (o.extension !== undefined) stringsOfChildren(f, o, resourceType, false)
    return
  }
  stringsOfChildren(f, o, resourceType, false)
}

const stringsOfChildren = (f: OnString, o: Json, resourceType: string, isResource: boolean): void => {
  const isBundle = isResource && resourceType === "Bundle"
  for (const k in o) {
    const child = o[k]
    if (typeof child !== "object" || child === null) continue
    if (isResource && k === "text") continue // Narrative, as walkChildren
    if (Array.isArray(child)) {
      if (isResource && k === "contained") {
        for (const item of child)
          if (isObject(item)) stringsOfObject(f, item, "contained", resourceType, true)
      } else if (isBundle && k === "entry") {
        for (const item of child) if (isObject(item)) stringsOfObject(f, item, "entry", resourceType, false)
      } else stringsOfArray(f, child, k, resourceType, isResource)
    } else stringsOfObject(f, child as Json, k, resourceType, isResource)
  }
}

const stringsOfArray = (
  f: OnString,
  a: ReadonlyArray<unknown>,
  key: string,
  resourceType: string,
  parentIsResourceRoot: boolean,
): void => {
  for (const item of a) {
    if (isObject(item)) stringsOfObject(f, item, key, resourceType, parentIsResourceRoot)
    else if (Array.isArray(item)) stringsOfArray(f, item, key, resourceType, false)
  }
}
