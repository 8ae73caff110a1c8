/** `$export` kick-off parameters: collected from a GET query or a POST Parameters body, then validated. */
import { FhirHttpError } from "../Http.js"
import type { StoredResource } from "../Store.js"

export type Raw = Map<string, Array<string>>

const PARAMETER_VALUE_KEYS = [
  "valueString",
  "valueCode",
  "valueInstant",
  "valueDateTime",
  "valueDate",
  "valueUri",
  "valueUrl",
  "valueCanonical",
  "valueId",
  "valueBoolean",
  "valueInteger",
]

const bad = (diagnostics: string): FhirHttpError => new FhirHttpError(400, "invalid", diagnostics)

/** GET query → raw values (repeated names accumulate). */
export const fromQuery = (url: URL): Raw => {
  const raw: Raw = new Map()
  for (const [k, v] of url.searchParams) raw.set(k, [...(raw.get(k) ?? []), v])
  return raw
}

/** POST `Parameters` body → raw values; `patient` references become their `reference` string. */
export const fromParameters = (body: unknown): Raw => {
  if (
    typeof body !== "object" ||
    body === null ||
    (body as { resourceType?: unknown }).resourceType !== "Parameters"
  ) {
    throw bad("A POST $export body must be a FHIR Parameters resource.")
  }
  const raw: Raw = new Map()
  const params = (body as { parameter?: unknown }).parameter
  if (params !== undefined && !Array.isArray(params)) throw bad("Parameters.parameter must be an array.")
  for (const p of (params ?? []) as Array<unknown>) {
    if (typeof p !== "object" || p === null) throw bad("Each Parameters.parameter must be an object.")
    const rec = p as Record<string, unknown>
    const name = rec.name
    if (typeof name !== "string") throw bad("A Parameters.parameter has no name.")
    let value: string | undefined
    const ref = rec.valueReference
    if (
      typeof ref === "object" &&
      ref !== null &&
      typeof (ref as { reference?: unknown }).reference === "string"
    ) {
      value = (ref as { reference: string }).reference
    } else {
      for (const key of PARAMETER_VALUE_KEYS) {
        const v = rec[key]
        if (v !== undefined && (typeof v === "string" || typeof v === "boolean" || typeof v === "number")) {
          value = String(v)
          break
        }
      }
    }
    if (value === undefined) throw bad(`Parameter ${name} has no value this server understands.`)
    raw.set(name, [...(raw.get(name) ?? []), value])
  }
  return raw
}

/** Comma lists, repeated parameters combined. */
export const list = (raw: Raw, name: string): Array<string> | undefined => {
  const values = raw.get(name)
  if (values === undefined) return undefined
  return values
    .flatMap((v) => v.split(","))
    .map((v) => v.trim())
    .filter((v) => v !== "")
}

const INSTANT = /^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2}))?)?)?$/

/** A FHIR instant (or date) → ISO UTC with ms (the store's lastUpdated form). */
export const parseInstant = (name: string, value: string): string => {
  if (!INSTANT.test(value))
    throw bad(`${name} must be a FHIR instant such as 2024-01-01T00:00:00Z, got ${value}.`)
  const ms = Date.parse(value.length === 4 ? `${value}-01-01` : value.length === 7 ? `${value}-01` : value)
  if (Number.isNaN(ms)) throw bad(`${name} is not a valid instant: ${value}.`)
  return new Date(ms).toISOString()
}

export const single = (raw: Raw, name: string): string | undefined => {
  const values = raw.get(name)
  if (values === undefined) return undefined
  if (values.length > 1) throw bad(`${name} may be given only once.`)
  return values[0]
}

export const TYPE_NAME = /^[A-Z][A-Za-z]{1,63}$/

// ---------------------------------------------------------------------------------------------
// _typeFilter

export type ResourceTest = (resource: Record<string, unknown>, stored: StoredResource) => boolean

export interface TypeFilter {
  readonly type: string
  readonly query: string
  readonly test: ResourceTest
}

const FORBIDDEN = new Set([
  "_include",
  "_revinclude",
  "_sort",
  "_elements",
  "_count",
  "_summary",
  "_total",
  "_contained",
  "_containedType",
])

const matchesToken = (value: unknown, wanted: string): boolean => {
  if (Array.isArray(value)) return value.some((v) => matchesToken(v, wanted))
  if (value === null || value === undefined) return false
  if (typeof value !== "object") return String(value) === wanted
  const o = value as Record<string, unknown>
  if (Array.isArray(o.coding)) return matchesToken(o.coding, wanted)
  if (typeof o.reference === "string") return o.reference === wanted || o.reference.endsWith(`/${wanted}`)
  if (typeof o.code === "string") {
    return o.code === wanted || `${typeof o.system === "string" ? o.system : ""}|${o.code}` === wanted
  }
  if (typeof o.value === "string" || typeof o.value === "number") return String(o.value) === wanted
  return false
}

const lastUpdatedTest = (query: string, raw: string): ResourceTest => {
  const m = /^(eq|gt|ge|lt|le)?(.+)$/.exec(raw)!
  const op = m[1] ?? "eq"
  const value = m[2]!
  const instant = parseInstant(`_typeFilter ${query}: _lastUpdated`, value)
  const partial = !value.includes("T")
  switch (op) {
    case "gt":
      return (_r, s) => s.lastUpdated > instant
    case "ge":
      return (_r, s) => s.lastUpdated >= instant
    case "lt":
      return (_r, s) => s.lastUpdated < instant
    case "le":
      return (_r, s) => s.lastUpdated <= instant
    default:
      return partial ? (_r, s) => s.lastUpdated.startsWith(value) : (_r, s) => s.lastUpdated === instant
  }
}

const camel = (name: string): string => name.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase())

/**
 * Parses one `Type?param=value&…` query. Supported: `_lastUpdated` (eq/gt/ge/lt/le), `_id`, `patient` and
 * `subject` (a reference in `patient` or `subject`), and
 * `name=value` equality on a top-level element (`clinical-status` → `clinicalStatus`): strings,
 * numbers, booleans, codes (`code` or `system|code`, also inside CodeableConcept.coding) and
 * references; comma-separated values are OR-ed, several parameters AND-ed.
 */
export const parseTypeFilter = (query: string): TypeFilter => {
  const q = query.indexOf("?")
  if (q <= 0) throw bad(`_typeFilter must look like Type?param=value, got ${query}.`)
  const type = query.slice(0, q)
  if (!TYPE_NAME.test(type)) throw bad(`_typeFilter ${query}: ${type} is not a resource type.`)
  const tests: Array<ResourceTest> = []
  const params = new URLSearchParams(query.slice(q + 1))
  for (const [name, value] of params) {
    if (FORBIDDEN.has(name)) throw bad(`_typeFilter ${query}: ${name} is not allowed in a _typeFilter.`)
    if (name.includes(":")) throw bad(`_typeFilter ${query}: search modifiers (${name}) are not supported.`)
    const values = value.split(",").filter((v) => v !== "")
    if (values.length === 0) throw bad(`_typeFilter ${query}: ${name} has no value.`)
    if (name === "_lastUpdated") {
      const t = values.map((v) => lastUpdatedTest(query, v))
      tests.push((r, s) => t.some((f) => f(r, s)))
    } else if (name === "_id") {
      tests.push((_r, s) => values.includes(s.id))
    } else if (/^[a-z][A-Za-z0-9-]*$/.test(name)) {
      // a comparison (`onset-date=ge2000-01-01`) would silently match nothing as an equality: refused
      const compared = values.find((v) => /^(eq|ne|gt|lt|ge|le|sa|eb|ap)\d/.test(v))
      if (compared !== undefined)
        throw bad(
          `_typeFilter ${query}: ${name}=${compared} is a comparison, supported on _lastUpdated only (elsewhere: equality on a top-level element).`,
        )
      // the compartment parameters as the REST search reads them: a reference in patient or subject
      const elements = name === "patient" || name === "subject" ? ["patient", "subject"] : [camel(name)]
      tests.push((r) => values.some((v) => elements.some((element) => matchesToken(r[element], v))))
    } else {
      throw bad(
        `_typeFilter ${query}: ${name} is not supported (use _lastUpdated, _id or a top-level element name).`,
      )
    }
  }
  if (tests.length === 0) throw bad(`_typeFilter ${query} has no search parameter.`)
  return { type, query, test: (r, s) => tests.every((t) => t(r, s)) }
}

/** Splits STU2's comma-joined queries ("A?x=1,B?y=2") without splitting value lists ("code=a,b"). */
export const splitTypeFilters = (value: string): Array<string> => value.split(/,(?=[A-Z][A-Za-z]+\?)/)

// ---------------------------------------------------------------------------------------------
// _elements

export interface Elements {
  readonly all: ReadonlyArray<string>
  readonly byType: ReadonlyMap<string, ReadonlyArray<string>>
}

export const parseElements = (values: ReadonlyArray<string>): Elements => {
  const all: Array<string> = []
  const byType = new Map<string, Array<string>>()
  for (const v of values) {
    const m = /^(?:([A-Z][A-Za-z]+)\.)?([a-z][A-Za-z0-9]*)$/.exec(v)
    if (m === null) throw bad(`_elements entries are element or Type.element names, got ${v}.`)
    if (m[1] === undefined) all.push(m[2]!)
    else byType.set(m[1], [...(byType.get(m[1]) ?? []), m[2]!])
  }
  return { all, byType }
}

const SUBSETTED = { system: "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", code: "SUBSETTED" }

/** The element list for a type, or undefined when the type is exported whole. */
export const elementsFor = (elements: Elements, type: string): ReadonlySet<string> | undefined => {
  const own = elements.byType.get(type) ?? []
  if (elements.all.length === 0 && own.length === 0) return undefined
  return new Set([...elements.all, ...own])
}

/** Keeps resourceType, id, meta and the listed top-level elements (choice `value` keeps `valueX`); tags SUBSETTED. */
export const subset = (
  resource: Record<string, unknown>,
  keep: ReadonlySet<string>,
): Record<string, unknown> => {
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(resource)) {
    const choice = /^([a-z][A-Za-z0-9]*?)[A-Z][A-Za-z]*$/.exec(key)
    if (
      key === "resourceType" ||
      key === "id" ||
      key === "meta" ||
      keep.has(key) ||
      (choice !== null && keep.has(choice[1]!))
    ) {
      out[key] = value
    }
  }
  const meta = (typeof out.meta === "object" && out.meta !== null ? out.meta : {}) as Record<string, unknown>
  const tags = Array.isArray(meta.tag) ? meta.tag : []
  out.meta = { ...meta, tag: [...tags, SUBSETTED] }
  return out
}
