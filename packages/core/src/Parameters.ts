import { Option, Schema } from "effect"
import { FhirResource } from "./Ids.js"

const Open = Schema.Record({ key: Schema.String, value: Schema.Unknown })

/** One `Parameters.parameter`: `value[x]` lives in the open part (e.g. `valueString`), `part` nests. */
export interface Parameter {
  readonly name: string
  readonly resource?: FhirResource
  readonly part?: ReadonlyArray<Parameter>
  readonly [key: string]: unknown
}
export const Parameter: Schema.Schema<Parameter> = Schema.Struct(
  {
    name: Schema.String,
    resource: Schema.optional(FhirResource),
    part: Schema.optional(Schema.Array(Schema.suspend((): Schema.Schema<Parameter> => Parameter))),
  },
  Open,
)

export const Parameters = Schema.Struct(
  {
    resourceType: Schema.Literal("Parameters"),
    id: Schema.optional(Schema.String),
    parameter: Schema.optional(Schema.Array(Parameter)),
  },
  Open,
)
export type Parameters = typeof Parameters.Type

/** A `value[x]` element name, e.g. `valueString`, `valueReference`. */
export type ValueKey = `value${string}`

/** Builds a Parameters resource. */
export const make = (parameter: ReadonlyArray<Parameter>): Parameters => ({
  resourceType: "Parameters",
  parameter,
})

/** A parameter with one `value[x]`: `value("_since", "valueInstant", "2024-01-01T00:00:00Z")`. */
export const value = (name: string, key: ValueKey, v: unknown): Parameter => ({ name, [key]: v })
export const string = (name: string, v: string): Parameter => value(name, "valueString", v)
export const code = (name: string, v: string): Parameter => value(name, "valueCode", v)
export const uri = (name: string, v: string): Parameter => value(name, "valueUri", v)
export const url = (name: string, v: string): Parameter => value(name, "valueUrl", v)
export const boolean = (name: string, v: boolean): Parameter => value(name, "valueBoolean", v)
export const integer = (name: string, v: number): Parameter => value(name, "valueInteger", v)
export const instant = (name: string, v: string): Parameter => value(name, "valueInstant", v)
export const reference = (name: string, ref: string): Parameter =>
  value(name, "valueReference", { reference: ref })
export const resource = (name: string, r: FhirResource): Parameter => ({ name, resource: r })
export const part = (name: string, parts: ReadonlyArray<Parameter>): Parameter => ({ name, part: parts })

type HasParameters =
  | { readonly parameter?: ReadonlyArray<Parameter> }
  | { readonly part?: ReadonlyArray<Parameter> }

const children = (p: HasParameters): ReadonlyArray<Parameter> =>
  ("parameter" in p ? p.parameter : undefined) ?? ("part" in p ? p.part : undefined) ?? []

/** The first parameter (or part) with this name. */
export const get = (p: HasParameters, name: string): Option.Option<Parameter> =>
  Option.fromNullable(children(p).find((x) => x.name === name))

/** Every parameter (or part) with this name, in order. */
export const getAll = (p: HasParameters, name: string): ReadonlyArray<Parameter> =>
  children(p).filter((x) => x.name === name)

/** The `value[x]` of a parameter as `[key, value]` (e.g. `["valueString", "x"]`). */
export const valueX = (p: Parameter): Option.Option<readonly [ValueKey, unknown]> => {
  for (const key of Object.keys(p)) {
    if (key.startsWith("value") && key.length > 5) return Option.some([key as ValueKey, p[key]] as const)
  }
  return Option.none()
}

const typed =
  <A>(keys: ReadonlyArray<string>, guard: (u: unknown) => u is A) =>
  (p: Parameter): Option.Option<A> => {
    for (const key of keys) {
      const v = p[key]
      if (guard(v)) return Option.some(v)
    }
    return Option.none()
  }

const isString = (u: unknown): u is string => typeof u === "string"
const isBoolean = (u: unknown): u is boolean => typeof u === "boolean"
const isNumber = (u: unknown): u is number => typeof u === "number"

/** Any string-shaped value: string, code, uri, url, canonical, id, instant, dateTime, date, … */
export const valueString = typed(
  [
    "valueString",
    "valueCode",
    "valueUri",
    "valueUrl",
    "valueCanonical",
    "valueId",
    "valueOid",
    "valueUuid",
    "valueMarkdown",
    "valueInstant",
    "valueDateTime",
    "valueDate",
    "valueTime",
    "valueBase64Binary",
  ],
  isString,
)
export const valueBoolean = typed(["valueBoolean"], isBoolean)
export const valueInteger = typed(
  ["valueInteger", "valuePositiveInt", "valueUnsignedInt", "valueDecimal"],
  isNumber,
)
/** `valueReference.reference`. */
export const valueReference = (p: Parameter): Option.Option<string> => {
  const ref = p.valueReference
  return typeof ref === "object" &&
    ref !== null &&
    typeof (ref as { reference?: unknown }).reference === "string"
    ? Option.some((ref as { reference: string }).reference)
    : Option.none()
}

/** The string value of the first parameter (or part) named `name`. */
export const getString = (p: HasParameters, name: string): Option.Option<string> =>
  Option.flatMap(get(p, name), valueString)
