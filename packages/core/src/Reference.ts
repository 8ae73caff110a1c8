/**
 * FHIR R4 reference strings: classification (`parse`), rendering (`format`) and small helpers.
 *
 * Every form found in real exports is classified into a plain-data tagged union (`_tag`); nothing
 * here throws: a string Ferry does not understand becomes `Unknown` and keeps its raw text.
 * See `/work/shared/spec/references.md` for the forms and what an importer does with each.
 *
 * Hot path: `parse` runs for every reference of every resource; it uses string checks, not regexes,
 * for the common forms (`Type/id`, `urn:uuid:`, `#id`), and caches the normalised source bases.
 */

/** `Type/id` — resolved against the server the resource was read from. */
export interface Relative {
  readonly _tag: "Relative"
  readonly type: string
  readonly id: string
}

/**
 * `Type/id/_history/v`, relative or absolute. When absolute, `base` is the part before `Type/...`
 * and `sameServer` tells whether it is one of the source bases; a relative one is always `sameServer`.
 */
export interface Versioned {
  readonly _tag: "Versioned"
  readonly type: string
  readonly id: string
  readonly version: string
  readonly base?: string
  readonly sameServer: boolean
}

/**
 * An absolute URL. With `sameServer: true` it points at one of the source bases (`base` is that base as
 * given, without trailing slash) and `type`/`id` are set. Otherwise it is external; `type`/`id` are set
 * when the path ends in `<R4 resource type>/<id>` so callers can inspect it, but it must not be mapped.
 */
export interface Absolute {
  readonly _tag: "Absolute"
  readonly url: string
  readonly sameServer: boolean
  readonly base?: string
  readonly type?: string
  readonly id?: string
}

/** `#id` — a resource in the container's `contained[]`; `#` alone (`id: ""`, `container: true`) is the container. */
export interface Contained {
  readonly _tag: "Contained"
  readonly id: string
  readonly container: boolean
}

/** `urn:uuid:<uuid>` — meaningful only inside a Bundle (matched against `entry.fullUrl`). */
export interface UrnUuid {
  readonly _tag: "UrnUuid"
  readonly uuid: string
}

/** `urn:oid:<oid>` — meaningful only inside a Bundle. */
export interface UrnOid {
  readonly _tag: "UrnOid"
  readonly oid: string
}

/** One decoded search parameter of a conditional reference. */
export interface SearchParam {
  readonly name: string
  readonly value: string
}

/**
 * `Type?params` (transaction-only conditional reference). `params` are percent-decoded;
 * `identifier` is the decoded `identifier=system|value` parameter when there is exactly one.
 * `base` is set when the conditional was written against an absolute same-server base.
 */
export interface Conditional {
  readonly _tag: "Conditional"
  readonly type: string
  readonly params: ReadonlyArray<SearchParam>
  readonly identifier?: { readonly system?: string; readonly value: string }
  readonly base?: string
}

/** A Reference element with an `identifier` and no `reference` (produced by the walker, never by `parse`). */
export interface Logical {
  readonly _tag: "Logical"
  readonly identifier: { readonly system?: string; readonly value?: string }
  readonly type?: string
}

/**
 * A canonical URL (`url|version`, optionally `#fragment`). Not a REST id: transactions do not rewrite it;
 * migrate the artifact with the same `url` instead. `type`/`id` are set when the URL path ends in
 * `<R4 resource type>/<id>` (e.g. `.../StructureDefinition/us-core-patient`), for inspection only.
 */
export interface Canonical {
  readonly _tag: "Canonical"
  readonly url: string
  readonly version?: string
  readonly fragment?: string
  readonly type?: string
  readonly id?: string
}

/** Anything else (empty strings, relative paths that are not `Type/id`, other URNs, junk). */
export interface Unknown {
  readonly _tag: "Unknown"
  readonly raw: string
}

export type ParsedReference =
  | Relative
  | Versioned
  | Absolute
  | Contained
  | UrnUuid
  | UrnOid
  | Conditional
  | Logical
  | Canonical
  | Unknown

/** The kinds that have a string form (everything but `Logical`). */
export type Formattable = Exclude<ParsedReference, Logical>

export interface ParseOptions {
  /**
   * The base(s) of the server the resource was read from (FHIR base, proxy URLs…). Absolute URLs
   * under one of them are `sameServer`. Trailing slashes, host case and default ports are normalised;
   * `http` and `https` are treated alike only when both use their default port.
   */
  readonly sourceBase?: string | ReadonlyArray<string>
  /** The string sits in a `canonical`-typed element: classify it as `Canonical` (unless it is `#id`). */
  readonly canonical?: boolean
}

/** Every FHIR R4 (4.0.1) resource type name. */
export const resourceTypes: ReadonlyArray<string> = [
  "Account",
  "ActivityDefinition",
  "AdverseEvent",
  "AllergyIntolerance",
  "Appointment",
  "AppointmentResponse",
  "AuditEvent",
  "Basic",
  "Binary",
  "BiologicallyDerivedProduct",
  "BodyStructure",
  "Bundle",
  "CapabilityStatement",
  "CarePlan",
  "CareTeam",
  "CatalogEntry",
  "ChargeItem",
  "ChargeItemDefinition",
  "Claim",
  "ClaimResponse",
  "ClinicalImpression",
  "CodeSystem",
  "Communication",
  "CommunicationRequest",
  "CompartmentDefinition",
  "Composition",
  "ConceptMap",
  "Condition",
  "Consent",
  "Contract",
  "Coverage",
  "CoverageEligibilityRequest",
  "CoverageEligibilityResponse",
  "DetectedIssue",
  "Device",
  "DeviceDefinition",
  "DeviceMetric",
  "DeviceRequest",
  "DeviceUseStatement",
  "DiagnosticReport",
  "DocumentManifest",
  "DocumentReference",
  "EffectEvidenceSynthesis",
  "Encounter",
  "Endpoint",
  "EnrollmentRequest",
  "EnrollmentResponse",
  "EpisodeOfCare",
  "EventDefinition",
  "Evidence",
  "EvidenceVariable",
  "ExampleScenario",
  "ExplanationOfBenefit",
  "FamilyMemberHistory",
  "Flag",
  "Goal",
  "GraphDefinition",
  "Group",
  "GuidanceResponse",
  "HealthcareService",
  "ImagingStudy",
  "Immunization",
  "ImmunizationEvaluation",
  "ImmunizationRecommendation",
  "ImplementationGuide",
  "InsurancePlan",
  "Invoice",
  "Library",
  "Linkage",
  "List",
  "Location",
  "Measure",
  "MeasureReport",
  "Media",
  "Medication",
  "MedicationAdministration",
  "MedicationDispense",
  "MedicationKnowledge",
  "MedicationRequest",
  "MedicationStatement",
  "MedicinalProduct",
  "MedicinalProductAuthorization",
  "MedicinalProductContraindication",
  "MedicinalProductIndication",
  "MedicinalProductIngredient",
  "MedicinalProductInteraction",
  "MedicinalProductManufactured",
  "MedicinalProductPackaged",
  "MedicinalProductPharmaceutical",
  "MedicinalProductUndesirableEffect",
  "MessageDefinition",
  "MessageHeader",
  "MolecularSequence",
  "NamingSystem",
  "NutritionOrder",
  "Observation",
  "ObservationDefinition",
  "OperationDefinition",
  "OperationOutcome",
  "Organization",
  "OrganizationAffiliation",
  "Parameters",
  "Patient",
  "PaymentNotice",
  "PaymentReconciliation",
  "Person",
  "PlanDefinition",
  "Practitioner",
  "PractitionerRole",
  "Procedure",
  "Provenance",
  "Questionnaire",
  "QuestionnaireResponse",
  "RelatedPerson",
  "RequestGroup",
  "ResearchDefinition",
  "ResearchElementDefinition",
  "ResearchStudy",
  "ResearchSubject",
  "RiskAssessment",
  "RiskEvidenceSynthesis",
  "Schedule",
  "SearchParameter",
  "ServiceRequest",
  "Slot",
  "Specimen",
  "SpecimenDefinition",
  "StructureDefinition",
  "StructureMap",
  "Subscription",
  "Substance",
  "SubstanceNucleicAcid",
  "SubstancePolymer",
  "SubstanceProtein",
  "SubstanceReferenceInformation",
  "SubstanceSourceMaterial",
  "SubstanceSpecification",
  "SupplyDelivery",
  "SupplyRequest",
  "Task",
  "TerminologyCapabilities",
  "TestReport",
  "TestScript",
  "ValueSet",
  "VerificationResult",
  "VisionPrescription",
]

const resourceTypeSet: ReadonlySet<string> = new Set(resourceTypes)

/** Is `s` an R4 resource type name (exact, case-sensitive)? */
export const isResourceType = (s: string): boolean => resourceTypeSet.has(s)

/** `"Type/id"`, the key Ferry uses for a resource everywhere (id maps, graphs, reports). */
export const key = (type: string, id: string): string => `${type}/${id}`

// ---------------------------------------------------------------------------------------------------
// character checks (no regexes on the hot path)

const isIdChar = (c: number): boolean =>
  (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 || c === 46

/** A FHIR id: `[A-Za-z0-9\-.]{1,64}`. */
export const isId = (s: string): boolean => {
  const n = s.length
  if (n === 0 || n > 64) return false
  for (let i = 0; i < n; i++) if (!isIdChar(s.charCodeAt(i))) return false
  return true
}

/** Looks like a resource type: an upper-case ASCII letter then letters (custom or later-version types pass). */
export const isTypeLike = (s: string): boolean => {
  const n = s.length
  if (n < 2 || n > 64) return false
  const c0 = s.charCodeAt(0)
  if (c0 < 65 || c0 > 90) return false
  for (let i = 1; i < n; i++) {
    const c = s.charCodeAt(i)
    if (!((c >= 65 && c <= 90) || (c >= 97 && c <= 122))) return false
  }
  return true
}

const isUuid = (s: string): boolean => {
  const n = s.length
  if (n === 0 || n > 64) return false
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i)
    if (!((c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102) || c === 45)) return false
  }
  return true
}

const isOid = (s: string): boolean => {
  const n = s.length
  if (n === 0) return false
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i)
    if (!((c >= 48 && c <= 57) || c === 46)) return false
  }
  return s.charCodeAt(0) !== 46 && s.charCodeAt(n - 1) !== 46
}

const startsWithIgnoreCase = (s: string, prefix: string): boolean =>
  s.length >= prefix.length && s.slice(0, prefix.length).toLowerCase() === prefix

/** Has a URL scheme followed by `//` (http, https, ftp, …). */
const hasAuthorityScheme = (s: string): boolean => {
  const i = s.indexOf("://")
  if (i <= 0) return false
  for (let j = 0; j < i; j++) {
    const c = s.charCodeAt(j)
    const ok =
      (c >= 65 && c <= 90) ||
      (c >= 97 && c <= 122) ||
      (j > 0 && ((c >= 48 && c <= 57) || c === 43 || c === 45 || c === 46))
    if (!ok) return false
  }
  return true
}

const decode = (s: string): string => {
  if (s.indexOf("%") < 0) return s
  try {
    return decodeURIComponent(s)
  } catch {
    // malformed percent-encoding: keep the text as written (classification never throws)
    return s
  }
}

// ---------------------------------------------------------------------------------------------------
// path forms

/** `Type/id` or `Type/id/_history/v` (segments already split) → Relative / Versioned / undefined. */
const fromSegments = (
  segs: ReadonlyArray<string>,
  at: number,
  typeOk: (s: string) => boolean,
): { type: string; id: string; version?: string } | undefined => {
  const rest = segs.length - at
  if (rest === 2) {
    const type = segs[at]!
    const id = segs[at + 1]!
    return typeOk(type) && isId(id) ? { type, id } : undefined
  }
  if (rest === 4 && segs[at + 2] === "_history") {
    const type = segs[at]!
    const id = segs[at + 1]!
    const version = segs[at + 3]!
    return typeOk(type) && isId(id) && isId(version) ? { type, id, version } : undefined
  }
  return undefined
}

const parseParams = (query: string): ReadonlyArray<SearchParam> => {
  if (query.length === 0) return []
  const out: Array<SearchParam> = []
  for (const part of query.split("&")) {
    if (part.length === 0) continue
    const eq = part.indexOf("=")
    out.push(
      eq < 0
        ? { name: decode(part), value: "" }
        : { name: decode(part.slice(0, eq)), value: decode(part.slice(eq + 1)) },
    )
  }
  return out
}

const conditional = (type: string, query: string, base: string | undefined): Conditional => {
  const params = parseParams(query)
  const ids = params.filter((p) => p.name === "identifier")
  const one = ids.length === 1 ? ids[0]!.value : undefined
  let identifier: Conditional["identifier"]
  if (one !== undefined) {
    const bar = one.indexOf("|")
    identifier = bar < 0 ? { value: one } : { system: one.slice(0, bar), value: one.slice(bar + 1) }
  }
  return {
    _tag: "Conditional",
    type,
    params,
    ...(identifier ? { identifier } : {}),
    ...(base !== undefined ? { base } : {}),
  }
}

// ---------------------------------------------------------------------------------------------------
// absolute URLs and source bases

interface NormalUrl {
  readonly scheme: string // lower case, without ':'
  readonly host: string // lower case, without port
  readonly port: string // explicit port, "" when the scheme's default
  readonly path: string // without trailing slashes
}

const defaultPort = (scheme: string): string => (scheme === "http" ? "80" : scheme === "https" ? "443" : "")

const normalise = (u: URL): NormalUrl => {
  const scheme = u.protocol.slice(0, -1).toLowerCase()
  // URL already drops the scheme's default port and lower-cases the host
  const port = u.port === defaultPort(scheme) ? "" : u.port
  let path = u.pathname
  while (path.length > 0 && path.charCodeAt(path.length - 1) === 47) path = path.slice(0, -1)
  return { scheme, host: u.hostname.toLowerCase(), port, path }
}

interface Base {
  readonly given: string // as configured, trailing slashes removed
  readonly url: NormalUrl
}

const baseCache = new Map<string, Base | null>()

const toBase = (given: string): Base | undefined => {
  const cached = baseCache.get(given)
  if (cached !== undefined) return cached ?? undefined
  let result: Base | null = null
  try {
    let trimmed = given.trim()
    while (trimmed.endsWith("/")) trimmed = trimmed.slice(0, -1)
    result = { given: trimmed, url: normalise(new URL(trimmed)) }
  } catch {
    // not a URL: such a base never matches anything
    result = null
  }
  if (baseCache.size > 256) baseCache.clear()
  baseCache.set(given, result)
  return result ?? undefined
}

/** Same server: same host; same explicit port (or both default); scheme may differ only on default ports. */
const sameOrigin = (a: NormalUrl, b: NormalUrl): boolean => {
  if (a.host !== b.host || a.port !== b.port) return false
  if (a.scheme === b.scheme) return true
  const web = (s: string) => s === "http" || s === "https"
  return a.port === "" && web(a.scheme) && web(b.scheme)
}

/** Match `url` (already normalised) against the configured bases; returns the base and the rest of the path. */
const matchBase = (
  url: NormalUrl,
  rawPath: string,
  sourceBase: ParseOptions["sourceBase"],
): { base: Base; rest: string } | undefined => {
  if (sourceBase === undefined) return undefined
  const list: ReadonlyArray<string> = typeof sourceBase === "string" ? [sourceBase] : sourceBase
  for (const given of list) {
    const base = toBase(given)
    if (base === undefined || !sameOrigin(base.url, url)) continue
    const bp = base.url.path
    if (bp === "") return { base, rest: rawPath.replace(/^\/+/, "") }
    if (rawPath === bp) return { base, rest: "" }
    if (rawPath.startsWith(bp) && rawPath.charCodeAt(bp.length) === 47) {
      return { base, rest: rawPath.slice(bp.length + 1) }
    }
  }
  return undefined
}

const splitPath = (path: string): ReadonlyArray<string> => {
  const segs = path.split("/")
  while (segs.length > 0 && segs[segs.length - 1] === "") segs.pop()
  return segs
}

const parseAbsolute = (raw: string, options: ParseOptions | undefined): ParsedReference => {
  let u: URL
  try {
    u = new URL(raw)
  } catch {
    // not a valid URL after all
    return { _tag: "Unknown", raw }
  }
  const norm = normalise(u)
  const rawPath = u.pathname
  const matched = matchBase(norm, rawPath, options?.sourceBase)
  if (matched !== undefined) {
    const base = matched.base.given
    if (u.search.length > 1 && u.hash === "") {
      const rest = matched.rest
      if (isTypeLike(rest)) return conditional(rest, u.search.slice(1), base)
    } else if (u.search === "" && u.hash === "") {
      const hit = fromSegments(splitPath(matched.rest), 0, isTypeLike)
      if (hit !== undefined) {
        return hit.version !== undefined
          ? { _tag: "Versioned", type: hit.type, id: hit.id, version: hit.version, base, sameServer: true }
          : { _tag: "Absolute", url: raw, sameServer: true, base, type: hit.type, id: hit.id }
      }
    }
    // under the source base but not a resource path (e.g. `/metadata`, `/Binary/1/$binary-access-read`)
    return { _tag: "Absolute", url: raw, sameServer: true, base }
  }
  if (u.search === "" && u.hash === "") {
    const segs = splitPath(rawPath)
    const n = segs.length
    const versioned = n >= 4 && segs[n - 2] === "_history"
    const at = versioned ? n - 4 : n - 2
    if (at >= 1) {
      const hit = fromSegments(segs, at, isResourceType)
      if (hit !== undefined) {
        const base = `${u.protocol}//${u.host}${segs.slice(0, at).join("/")}`
        return hit.version !== undefined
          ? { _tag: "Versioned", type: hit.type, id: hit.id, version: hit.version, base, sameServer: false }
          : { _tag: "Absolute", url: raw, sameServer: false, base, type: hit.type, id: hit.id }
      }
    }
  }
  return { _tag: "Absolute", url: raw, sameServer: false }
}

const typeIdOfUrl = (url: string): { type: string; id: string } | undefined => {
  const q = url.indexOf("?")
  const segs = splitPath(q < 0 ? url : url.slice(0, q))
  const n = segs.length
  if (n < 3) return undefined
  const type = segs[n - 2]!
  const id = segs[n - 1]!
  return isResourceType(type) && isId(id) ? { type, id } : undefined
}

/** Split `url|version#fragment` (the version and fragment are optional). */
export const parseCanonical = (raw: string): Canonical => {
  let rest = raw
  let fragment: string | undefined
  const hash = rest.indexOf("#")
  if (hash >= 0) {
    fragment = rest.slice(hash + 1)
    rest = rest.slice(0, hash)
  }
  let version: string | undefined
  const bar = rest.indexOf("|")
  if (bar >= 0) {
    version = rest.slice(bar + 1)
    rest = rest.slice(0, bar)
  }
  const typeId = typeIdOfUrl(rest)
  return {
    _tag: "Canonical",
    url: rest,
    ...(version !== undefined ? { version } : {}),
    ...(fragment !== undefined ? { fragment } : {}),
    ...(typeId ?? {}),
  }
}

// ---------------------------------------------------------------------------------------------------
// parse / format

/**
 * Classify a reference string. Never throws.
 *
 * - `#id` / `#` → Contained; `urn:uuid:` → UrnUuid; `urn:oid:` → UrnOid
 * - `Type/id` → Relative; `Type/id/_history/v` → Versioned; `Type?a=b` → Conditional (params decoded)
 * - `scheme://…` → Absolute (sameServer when under `options.sourceBase`), or Versioned, or Conditional
 *   (same-server base only), or Canonical when it carries a `|version` and no query
 * - with `options.canonical` (a canonical-typed element) → Canonical (except `#id`)
 * - anything else → Unknown
 */
export const parse = (reference: string, options?: ParseOptions): ParsedReference => {
  const raw = reference
  const n = raw.length
  if (n === 0) return { _tag: "Unknown", raw }
  const c0 = raw.charCodeAt(0)

  if (c0 === 35 /* # */) {
    const id = raw.slice(1)
    if (id.length === 0) return { _tag: "Contained", id: "", container: true }
    return isId(id) ? { _tag: "Contained", id, container: false } : { _tag: "Unknown", raw }
  }

  if (options?.canonical === true) return parseCanonical(raw)

  if (c0 === 117 || c0 === 85 /* u U */) {
    if (startsWithIgnoreCase(raw, "urn:uuid:")) {
      const uuid = raw.slice(9)
      return isUuid(uuid) ? { _tag: "UrnUuid", uuid } : { _tag: "Unknown", raw }
    }
    if (startsWithIgnoreCase(raw, "urn:oid:")) {
      const oid = raw.slice(8)
      return isOid(oid) ? { _tag: "UrnOid", oid } : { _tag: "Unknown", raw }
    }
    if (startsWithIgnoreCase(raw, "urn:")) return { _tag: "Unknown", raw }
  }

  // relative forms: the first character of a type is an upper-case letter
  if (c0 >= 65 && c0 <= 90) {
    const q = raw.indexOf("?")
    if (q > 0) {
      const type = raw.slice(0, q)
      return isTypeLike(type) ? conditional(type, raw.slice(q + 1), undefined) : { _tag: "Unknown", raw }
    }
    if (raw.indexOf(":") < 0) {
      const hit = fromSegments(raw.split("/"), 0, isTypeLike)
      if (hit === undefined) return { _tag: "Unknown", raw }
      return hit.version !== undefined
        ? { _tag: "Versioned", type: hit.type, id: hit.id, version: hit.version, sameServer: true }
        : { _tag: "Relative", type: hit.type, id: hit.id }
    }
  }

  if (hasAuthorityScheme(raw)) {
    if (raw.indexOf("|") >= 0 && raw.indexOf("?") < 0) return parseCanonical(raw)
    return parseAbsolute(raw, options)
  }

  return { _tag: "Unknown", raw }
}

const encodeParam = (s: string): string =>
  encodeURIComponent(s).replace(/%7C/gi, "|").replace(/%3A/gi, ":").replace(/%2F/gi, "/")

/**
 * The string form of a classified reference. `Relative`/`Versioned`/`Conditional` are rendered from their
 * parts (so a caller can map the id and format again); `Absolute` and `Unknown` give back their text.
 * A Versioned or Conditional with a `base` is rendered absolute against that base.
 */
export const format = (ref: Formattable): string => {
  switch (ref._tag) {
    case "Relative":
      return `${ref.type}/${ref.id}`
    case "Versioned":
      return `${ref.base !== undefined ? `${ref.base}/` : ""}${ref.type}/${ref.id}/_history/${ref.version}`
    case "Absolute":
      return ref.url
    case "Contained":
      return `#${ref.id}`
    case "UrnUuid":
      return `urn:uuid:${ref.uuid}`
    case "UrnOid":
      return `urn:oid:${ref.oid}`
    case "Conditional": {
      const q = ref.params.map((p) => `${encodeParam(p.name)}=${encodeParam(p.value)}`).join("&")
      return `${ref.base !== undefined ? `${ref.base}/` : ""}${ref.type}?${q}`
    }
    case "Canonical":
      return `${ref.url}${ref.version !== undefined ? `|${ref.version}` : ""}${ref.fragment !== undefined ? `#${ref.fragment}` : ""}`
    case "Unknown":
      return ref.raw
  }
}

/** `Relative` for `type`/`id` (convenience for rewriters). */
export const relative = (type: string, id: string): Relative => ({ _tag: "Relative", type, id })

/**
 * The `Type/id` a reference designates on the source server, when it designates one: Relative, Versioned
 * (version dropped) and same-server Absolute. External, Bundle-local, contained, conditional, logical,
 * canonical and unknown references give `undefined`.
 */
export const sourceKey = (ref: ParsedReference): string | undefined => {
  switch (ref._tag) {
    case "Relative":
      return key(ref.type, ref.id)
    case "Versioned":
      return ref.sameServer ? key(ref.type, ref.id) : undefined
    case "Absolute":
      return ref.sameServer && ref.type !== undefined && ref.id !== undefined
        ? key(ref.type, ref.id)
        : undefined
    default:
      return undefined
  }
}
