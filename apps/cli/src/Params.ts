/**
 * Checks of the Bulk Data parameters a command passes on (`--type`, `--since`, `--until`), made before
 * anything is sent: a typo gave an empty archive with exit 0, and a bad instant was explained (or not) by
 * the server, with the exit code of a server failure.
 */
import { isResourceType, resourceTypes } from "@ferry/core/Reference"
import type { HttpClient } from "@effect/platform"
import * as CapabilityStatement from "@ferry/core/CapabilityStatement"
import * as FhirClient from "@ferry/core/FhirClient"
import * as Kickoff from "@ferry/export/Kickoff"
import { type Duration, Effect, Option } from "effect"

/** Comma-separated flag values (repeatable flags) as one list, blanks dropped. */
export const list = (values: ReadonlyArray<string>): Array<string> =>
  values
    .flatMap((v) => v.split(","))
    .map((v) => v.trim())
    .filter((v) => v !== "")

const distance = (a: string, b: string): number => {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const here = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = here
    }
  }
  return row[b.length]!
}

/** The word of `among` closest to `name` (case-insensitively, at most `edits` edits away), if any. */
export const nearestOf = (name: string, among: Iterable<string>, edits = 2): string | undefined => {
  let best: { word: string; d: number } | undefined
  for (const word of among) {
    const d = distance(name.toLowerCase(), word.toLowerCase())
    if (d <= edits && (best === undefined || d < best.d)) best = { word, d }
  }
  return best?.word
}

/** The R4 type closest to `name` (case-insensitively, at most 2 edits away), if any. */
const nearest = (name: string): string | undefined => nearestOf(name, resourceTypes)

/** What is wrong with the first name in `types` that is not an R4 resource type (undefined: all fine). */
export const typesProblem = (flag: string, types: ReadonlyArray<string>): string | undefined => {
  const bad = types.find((t) => !isResourceType(t))
  if (bad === undefined) return undefined
  const hint = nearest(bad)
  return `${flag} ${bad} is not an R4 resource type${hint !== undefined ? ` (did you mean ${hint}?)` : ""}; give type names as FHIR writes them, e.g. Patient,Observation`
}

/**
 * An `_elements` entry that is no element name (`gender`, or `Patient.gender`): the server would refuse the
 * kick-off with a 400, or match nothing. Said before anything is asked of it.
 */
export const elementsProblem = (flag: string, elements: ReadonlyArray<string>): string | undefined => {
  for (const e of elements) {
    const m = /^(?:([A-Z][A-Za-z]+)\.)?[a-z][A-Za-z0-9]*$/.exec(e)
    if (m === null)
      return `${flag} ${e} is not an element name; give names as FHIR writes them, e.g. id,gender or Patient.birthDate`
    if (m[1] !== undefined && !isResourceType(m[1])) return typesProblem(flag, [m[1]])
  }
  return undefined
}

/**
 * The types a bulk export asks the source for, as a SMART token's scopes must allow reading them (see
 * `SmartBackend` `exportTypes`): those of `--type`, or every type at the system level (`[]`), or the Patient
 * compartment's at the Patient and Group levels (a token that allows fewer would leave the others out of a
 * "complete" archive without an error).
 */
export const exportedTypes = (
  types: ReadonlyArray<string>,
  level: string,
  declared?: ReadonlyArray<string>,
): ReadonlyArray<string> => {
  if (types.length > 0) return types
  if (level === "system") return []
  // of the compartment, the types the server declares (a token needs no scope for types it does not hold)
  const held = declared === undefined ? [] : Kickoff.compartmentTypes.filter((t) => declared.includes(t))
  return held.length > 0 ? held : Kickoff.compartmentTypes
}

/**
 * `exportedTypes`, with the types the source declares read from its CapabilityStatement first when they matter (a
 * Patient- or Group-level export without `--type`), asked without credentials as SMART servers answer it; a
 * source that does not answer it so is taken to hold every compartment type.
 */
export const exportedTypesOf = (
  baseUrl: string,
  types: ReadonlyArray<string>,
  level: string,
  timeout: Option.Option<Duration.Duration>,
): Effect.Effect<ReadonlyArray<string>, never, HttpClient.HttpClient> =>
  types.length > 0 || level === "system"
    ? Effect.succeed(exportedTypes(types, level))
    : Effect.gen(function* () {
        const open = yield* FhirClient.make({
          baseUrl,
          retry: { times: 0 },
          ...(Option.isSome(timeout) ? { timeout: timeout.value } : {}),
        })
        const cs = yield* Effect.option(open.capabilities())
        return exportedTypes(
          types,
          level,
          Option.isSome(cs) ? CapabilityStatement.types(cs.value) : undefined,
        )
      })

/** A FHIR instant: date, time to the second (fraction optional) and a zone. */
const INSTANT =
  /^(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d{1,9})?(Z|[+-](?:0\d|1[0-3]):[0-5]\d|[+-]14:00)$/

const DAY = /^\d{4}-\d{2}-\d{2}$/

/** A date alone (`2024-01-31`) stands for the start of that day, UTC; anything else is left as written. */
export const instant = (value: string): string => (DAY.test(value) ? `${value}T00:00:00Z` : value)

/** What is wrong with `value` as a FHIR instant, or a date (undefined: fine). */
export const instantProblem = (flag: string, given: string): string | undefined => {
  const value = instant(given)
  const m = INSTANT.exec(value)
  const valid =
    m !== null &&
    !Number.isNaN(Date.parse(value)) &&
    // 2021-02-30 parses (as March 2); the day must exist in that month
    Number(m[3]) <= new Date(Date.UTC(Number(m[1]), Number(m[2]), 0)).getUTCDate()
  if (!valid)
    return `${flag} ${given} is not a FHIR instant; write the date, time and zone, e.g. 2024-01-31T00:00:00Z (a date alone means 00:00 UTC)`
  // nothing has changed after a time still to come: a typo of the year, most likely (a day's grace for clocks
  // and zones)
  const now = Date.now()
  if (flag === "--since" && Date.parse(value) > now + DAY_MS)
    return `${flag} ${given} is in the future (this machine's clock says ${new Date(now).toISOString()}): no resource has changed after it, so nothing would be exported; check the date`
  return undefined
}

const DAY_MS = 24 * 60 * 60 * 1000

/**
 * `--type-filter` values as `Type?query`: a value written URL-encoded, as the Bulk Data spec prints them
 * (`Observation%3Fstatus%3Dfinal`), is decoded first (it is encoded once when sent). Left: what is wrong.
 */
export const typeFilters = (
  values: ReadonlyArray<string>,
): { filters: Array<string> } | { problem: string } => {
  const filters: Array<string> = []
  for (const raw of values) {
    let value = raw.trim()
    if (/^[A-Za-z]+%3F/i.test(value)) {
      try {
        value = decodeURIComponent(value)
      } catch {
        // not valid percent-encoding: checked as written below
      }
    }
    const q = value.indexOf("?")
    const type = q > 0 ? value.slice(0, q) : value
    if (q <= 0 || q === value.length - 1 || !isResourceType(type))
      return {
        problem: `--type-filter ${raw} is not a search of an R4 resource type; write it as Type?query, e.g. Observation?status=final`,
      }
    // (the Bulk Data spec forbids them in _typeFilter; a crawl would store what an _include brought along)
    const shaping = value
      .slice(q + 1)
      .split("&")
      .map((p) => p.slice(0, p.includes("=") ? p.indexOf("=") : p.length).replace(/:.*$/, ""))
      .find((name) => resultParameters.has(name))
    if (shaping !== undefined)
      return {
        problem: `--type-filter ${raw} uses ${shaping}, which shapes the result rather than filtering it (the Bulk Data spec forbids such parameters in _typeFilter); keep only search filters, e.g. Observation?status=final`,
      }
    filters.push(value)
  }
  return { filters }
}

/** FHIR search's result parameters: they shape the answer, they select nothing. */
const resultParameters: ReadonlySet<string> = new Set([
  "_include",
  "_revinclude",
  "_sort",
  "_count",
  "_elements",
  "_summary",
  "_total",
  "_contained",
  "_containedType",
])

/**
 * `--attachment-origin` values: `any` (every origin), or http(s) URLs whose origins attachments are fetched from
 * besides the source's own (a path is ignored: `https://docs.example.org/files` means `https://docs.example.org`).
 * A problem sentence for one that is neither.
 */
export const attachmentOrigins = (
  values: ReadonlyArray<string>,
): { readonly origins: ReadonlyArray<string> | "any" } | { readonly problem: string } => {
  const origins: Array<string> = []
  for (const value of list(values)) {
    if (value === "any" || value === "*") return { origins: "any" }
    let url: URL | undefined
    try {
      url = new URL(value)
    } catch {
      url = undefined
    }
    if (url === undefined || (url.protocol !== "http:" && url.protocol !== "https:"))
      return {
        problem: `--attachment-origin ${value} is not an http(s) URL; give the scheme, host and port attachments are on, e.g. https://docs.example.org, or any`,
      }
    origins.push(url.origin)
  }
  return { origins }
}
