import { Option, Schema } from "effect"

const Open = Schema.Record({ key: Schema.String, value: Schema.Unknown })

/** A FHIR Extension; nested extensions and `value[x]` are kept in the open part. */
export interface Extension {
  readonly url: string
  readonly extension?: ReadonlyArray<Extension>
  readonly [key: string]: unknown
}
export const Extension: Schema.Schema<Extension> = Schema.Struct(
  {
    url: Schema.String,
    extension: Schema.optional(Schema.Array(Schema.suspend((): Schema.Schema<Extension> => Extension))),
  },
  Open,
)

export const Interaction = Schema.Struct({ code: Schema.String }, Open)
export type Interaction = typeof Interaction.Type

/** `rest.operation` / `rest.resource.operation`. `definition` is 1..1 in R4 but some servers leave it out. */
export const OperationRef = Schema.Struct(
  { name: Schema.String, definition: Schema.optional(Schema.String) },
  Open,
)
export type OperationRef = typeof OperationRef.Type

export const ResourceCapability = Schema.Struct(
  {
    type: Schema.String,
    interaction: Schema.optional(Schema.Array(Interaction)),
    versioning: Schema.optional(Schema.String),
    updateCreate: Schema.optional(Schema.Boolean),
    conditionalCreate: Schema.optional(Schema.Boolean),
    conditionalUpdate: Schema.optional(Schema.Boolean),
    conditionalDelete: Schema.optional(Schema.String),
    operation: Schema.optional(Schema.Array(OperationRef)),
  },
  Open,
)
export type ResourceCapability = typeof ResourceCapability.Type

export const Security = Schema.Struct({ extension: Schema.optional(Schema.Array(Extension)) }, Open)

export const Rest = Schema.Struct(
  {
    mode: Schema.String,
    security: Schema.optional(Security),
    resource: Schema.optional(Schema.Array(ResourceCapability)),
    interaction: Schema.optional(Schema.Array(Interaction)),
    operation: Schema.optional(Schema.Array(OperationRef)),
  },
  Open,
)
export type Rest = typeof Rest.Type

/** The parts of a CapabilityStatement Ferry reads; everything else is kept as is. */
export const CapabilityStatement = Schema.Struct(
  {
    resourceType: Schema.Literal("CapabilityStatement"),
    fhirVersion: Schema.optional(Schema.String),
    rest: Schema.optional(Schema.Array(Rest)),
  },
  Open,
)
export type CapabilityStatement = typeof CapabilityStatement.Type

const serverRests = (cs: CapabilityStatement): ReadonlyArray<Rest> =>
  (cs.rest ?? []).filter((r) => r.mode === "server")

/** The resource types the server declares (rest mode "server"). */
export const types = (cs: CapabilityStatement): ReadonlyArray<string> => [
  ...new Set(serverRests(cs).flatMap((r) => (r.resource ?? []).map((res) => res.type))),
]

/** The declaration for one resource type. */
export const resource = (cs: CapabilityStatement, type: string): Option.Option<ResourceCapability> =>
  Option.fromNullable(
    serverRests(cs)
      .flatMap((r) => r.resource ?? [])
      .find((res) => res.type === type),
  )

/**
 * The names of the search parameters the declaration of `type` lists; undefined when it lists none or the type
 * is not declared (then nothing is known of its search parameters).
 */
export const searchParams = (cs: CapabilityStatement, type: string): ReadonlySet<string> | undefined => {
  const entry = resource(cs, type)
  if (Option.isNone(entry)) return undefined
  const params: unknown = entry.value.searchParam
  if (!Array.isArray(params) || params.length === 0) return undefined
  return new Set(
    params.flatMap((p: unknown) =>
      typeof p === "object" && p !== null && "name" in p && typeof p.name === "string" ? [p.name] : [],
    ),
  )
}

/**
 * Whether an interaction is declared: system level (`transaction`, `batch`, `search-system`, …) without a
 * type, type level (`read`, `update`, `create`, …) with one.
 */
export const supportsInteraction = (cs: CapabilityStatement, code: string, type?: string): boolean =>
  type === undefined
    ? serverRests(cs).some((r) => (r.interaction ?? []).some((i) => i.code === code))
    : Option.match(resource(cs, type), {
        onNone: () => false,
        onSome: (res) => (res.interaction ?? []).some((i) => i.code === code),
      })

/** `updateCreate` for a type (PUT on a new id creates it). */
export const updateCreate = (cs: CapabilityStatement, type: string): boolean =>
  Option.match(resource(cs, type), { onNone: () => false, onSome: (r) => r.updateCreate === true })

const stripDollar = (s: string) => (s.startsWith("$") ? s.slice(1) : s)
const lastSegment = (url: string) =>
  stripDollar(
    url
      .replace(/[|#?].*$/, "")
      .replace(/\/+$/, "")
      .split("/")
      .pop() ?? "",
  )

const matches = (op: OperationRef, names: ReadonlyArray<string>): boolean =>
  names.includes(stripDollar(op.name)) ||
  (op.definition !== undefined && names.includes(lastSegment(op.definition)))

/**
 * Whether an operation is declared (name with or without `$`; also matched on the last segment of its
 * definition URL).
 * - `level` omitted: anywhere.
 * - `"system"`: in `rest.operation`.
 * - a resource type (`"Patient"`, or lowercase `"patient"` / `"group"`): on that type, or at system level
 *   under the Bulk Data style name `<type>-<name>` (e.g. `patient-export`, `group-export`).
 */
export const supportsOperation = (
  cs: CapabilityStatement,
  name: string,
  level?: "system" | string,
): boolean => {
  const bare = stripDollar(name)
  const rests = serverRests(cs)
  if (level === undefined) {
    return rests.some(
      (r) =>
        (r.operation ?? []).some((op) => matches(op, [bare])) ||
        (r.resource ?? []).some((res) => (res.operation ?? []).some((op) => matches(op, [bare]))),
    )
  }
  if (level === "system") return rests.some((r) => (r.operation ?? []).some((op) => matches(op, [bare])))
  const typeName = level.charAt(0).toUpperCase() + level.slice(1)
  const prefixed = `${typeName.toLowerCase()}-${bare}`
  return rests.some(
    (r) =>
      (r.resource ?? []).some(
        (res) => res.type === typeName && (res.operation ?? []).some((op) => matches(op, [bare, prefixed])),
      ) || (r.operation ?? []).some((op) => matches(op, [prefixed])),
  )
}

/** The bulk-load dialect the server declares, if any: `$import` (HAPI, Azure, drafts) or `$bulk-submit`. */
export const importOperation = (cs: CapabilityStatement): Option.Option<"import" | "bulk-submit"> =>
  supportsOperation(cs, "import")
    ? Option.some("import")
    : supportsOperation(cs, "bulk-submit")
      ? Option.some("bulk-submit")
      : Option.none()

/** Whether the server declares `$import` or `$bulk-submit`. */
export const supportsImport = (cs: CapabilityStatement): boolean => Option.isSome(importOperation(cs))

export const oauthUrisExtension = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"

const oauthUri = (cs: CapabilityStatement, which: string): Option.Option<string> => {
  for (const r of serverRests(cs)) {
    for (const ext of r.security?.extension ?? []) {
      if (ext.url !== oauthUrisExtension) continue
      for (const inner of ext.extension ?? []) {
        const value = inner.valueUri ?? inner.valueUrl
        if (inner.url === which && typeof value === "string") return Option.some(value)
      }
    }
  }
  return Option.none()
}

/** The SMART token endpoint from `rest.security` (oauth-uris extension). Prefer `.well-known` when present. */
export const tokenUrl = (cs: CapabilityStatement): Option.Option<string> => oauthUri(cs, "token")

/** The SMART authorize endpoint from `rest.security` (oauth-uris extension). */
export const authorizeUrl = (cs: CapabilityStatement): Option.Option<string> => oauthUri(cs, "authorize")
