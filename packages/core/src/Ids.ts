import { Schema } from "effect"

/** A FHIR resource type name, e.g. "Patient". */
export const ResourceType = Schema.String.pipe(
  Schema.pattern(/^[A-Z][A-Za-z]{1,63}$/),
  Schema.brand("ResourceType"),
)
export type ResourceType = typeof ResourceType.Type

/** A FHIR logical id: [A-Za-z0-9\-\.]{1,64}. */
export const ResourceId = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9\-.]{1,64}$/),
  Schema.brand("ResourceId"),
)
export type ResourceId = typeof ResourceId.Type

/** A lowercase hex SHA-256 digest. */
export const Sha256 = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/), Schema.brand("Sha256"))
export type Sha256 = typeof Sha256.Type

/** A plain-JSON FHIR resource: resourceType and id are checked, every other field is kept as is. */
export const FhirResource = Schema.Struct(
  { resourceType: Schema.String, id: Schema.optional(Schema.String) },
  Schema.Record({ key: Schema.String, value: Schema.Unknown }),
)
export type FhirResource = typeof FhirResource.Type

/** A resource as carried through Ferry's hot paths (no decoding beyond the cheap guard). */
export interface Resource {
  readonly resourceType: string
  readonly id?: string
  readonly [key: string]: unknown
}

export const isResource = (u: unknown): u is Resource =>
  typeof u === "object" &&
  u !== null &&
  !Array.isArray(u) &&
  typeof (u as { resourceType?: unknown }).resourceType === "string"

/**
 * `o[key] = value`, also for the key `__proto__`, which plain assignment would take for the object's prototype
 * (the member lost from the copy). `JSON.parse` makes such a member an own property; copies must too.
 */
export const setOwn = (o: Record<string, unknown>, key: string, value: unknown): void => {
  if (key === "__proto__")
    Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true })
  else o[key] = value
}
