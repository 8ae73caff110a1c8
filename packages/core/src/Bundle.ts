import { Option, Schema } from "effect"
import { FhirResource, type Resource } from "./Ids.js"

const Open = Schema.Record({ key: Schema.String, value: Schema.Unknown })

export const BundleType = Schema.Literal(
  "document",
  "message",
  "transaction",
  "transaction-response",
  "batch",
  "batch-response",
  "history",
  "searchset",
  "collection",
  "subscription-notification",
)
export type BundleType = typeof BundleType.Type

export const HttpVerb = Schema.Literal("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
export type HttpVerb = typeof HttpVerb.Type

export const BundleLink = Schema.Struct({ relation: Schema.String, url: Schema.String }, Open)
export type BundleLink = typeof BundleLink.Type

export const BundleEntryRequest = Schema.Struct(
  {
    method: HttpVerb,
    url: Schema.String,
    ifNoneMatch: Schema.optional(Schema.String),
    ifModifiedSince: Schema.optional(Schema.String),
    ifMatch: Schema.optional(Schema.String),
    ifNoneExist: Schema.optional(Schema.String),
  },
  Open,
)
export type BundleEntryRequest = typeof BundleEntryRequest.Type

export const BundleEntryResponse = Schema.Struct(
  {
    status: Schema.String,
    location: Schema.optional(Schema.String),
    etag: Schema.optional(Schema.String),
    lastModified: Schema.optional(Schema.String),
    outcome: Schema.optional(FhirResource),
  },
  Open,
)
export type BundleEntryResponse = typeof BundleEntryResponse.Type

export const BundleEntrySearch = Schema.Struct(
  { mode: Schema.optional(Schema.String), score: Schema.optional(Schema.Number) },
  Open,
)

export const BundleEntry = Schema.Struct(
  {
    fullUrl: Schema.optional(Schema.String),
    resource: Schema.optional(FhirResource),
    search: Schema.optional(BundleEntrySearch),
    request: Schema.optional(BundleEntryRequest),
    response: Schema.optional(BundleEntryResponse),
  },
  Open,
)
export type BundleEntry = typeof BundleEntry.Type

/** A FHIR R4 Bundle; entry resources stay plain JSON and every unnamed field is kept. */
export const Bundle = Schema.Struct(
  {
    resourceType: Schema.Literal("Bundle"),
    id: Schema.optional(Schema.String),
    type: BundleType,
    total: Schema.optional(Schema.Number),
    link: Schema.optional(Schema.Array(BundleLink)),
    entry: Schema.optional(Schema.Array(BundleEntry)),
  },
  Open,
)
export type Bundle = typeof Bundle.Type

/** The url of the link with this relation (e.g. "next", "self"). */
export const link = (bundle: Bundle, relation: string): Option.Option<string> =>
  Option.fromNullable(bundle.link?.find((l) => l.relation === relation)?.url)

/** The `next` page of a searchset or history Bundle. */
export const nextLink = (bundle: Bundle): Option.Option<string> => link(bundle, "next")

/** `Bundle.total` when the server sent it (searchset/history only). */
export const total = (bundle: Bundle): Option.Option<number> => Option.fromNullable(bundle.total)

/** The entries (empty when the Bundle has none). */
export const entries = (bundle: Bundle): ReadonlyArray<BundleEntry> => bundle.entry ?? []

/**
 * The resources of a Bundle in order, skipping entries without one, searchset `outcome` entries (the server's
 * OperationOutcome about the search, not data) and `include` entries (brought along by an `_include` or
 * `_revinclude`, or by a server's own choice: not matches of the search).
 */
export const resources = (bundle: Bundle): ReadonlyArray<Resource> => {
  const out: Array<Resource> = []
  for (const e of bundle.entry ?? []) {
    const mode = e.search?.mode
    if (e.resource !== undefined && mode !== "outcome" && mode !== "include") out.push(e.resource)
  }
  return out
}

const make = (type: BundleType, entry: ReadonlyArray<BundleEntry>): Bundle => ({
  resourceType: "Bundle",
  type,
  entry,
})

/** A transaction Bundle (all or nothing). */
export const transaction = (entry: ReadonlyArray<BundleEntry>): Bundle => make("transaction", entry)

/** A batch Bundle (entries processed independently; check every `entry.response.status`). */
export const batch = (entry: ReadonlyArray<BundleEntry>): Bundle => make("batch", entry)

/** The numeric HTTP code of `entry.response.status` ("201 Created" → 201). */
export const statusCode = (response: BundleEntryResponse): Option.Option<number> => {
  const m = /^\s*(\d{3})/.exec(response.status)
  return m ? Option.some(Number(m[1])) : Option.none()
}

/** Splits a `location` such as `Patient/123/_history/2` (relative or absolute) into its parts. */
export const parseLocation = (
  location: string,
): Option.Option<{ readonly type: string; readonly id: string; readonly versionId?: string }> => {
  const m =
    /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/([A-Za-z0-9\-.]{1,64}))?\/?(?:[?#].*)?$/.exec(
      location,
    )
  if (!m) return Option.none()
  return Option.some(
    m[3] === undefined ? { type: m[1]!, id: m[2]! } : { type: m[1]!, id: m[2]!, versionId: m[3] },
  )
}

/**
 * For a Bundle kept as a resource (a document, a message, a collection): whether a reference string in one of its
 * entries (`fullUrl`: that entry's) designates another of its entries by the Bundle's own resolution rules: it is
 * an entry's `fullUrl` (a `urn:uuid:`, an absolute URL), or it is relative and, against the server base of the
 * holding entry's absolute `fullUrl`, makes one. Such a reference belongs to the Bundle (a signed document's
 * content among them): a migration keeps it as written, and a comparison compares it so. Undefined for a Bundle
 * whose entries have no `fullUrl`.
 */
export const entryReferences = (
  bundle: Readonly<Record<string, unknown>>,
): ((raw: string, fullUrl: string | undefined) => boolean) | undefined => {
  const entries: ReadonlyArray<unknown> = Array.isArray(bundle.entry) ? bundle.entry : []
  const urls = new Set<string>()
  for (const e of entries) {
    const fullUrl = typeof e === "object" && e !== null ? (e as { fullUrl?: unknown }).fullUrl : undefined
    if (typeof fullUrl === "string") urls.add(fullUrl)
  }
  if (urls.size === 0) return undefined
  return (raw, fullUrl) => {
    if (urls.has(raw)) return true
    if (fullUrl === undefined || /^[A-Za-z][A-Za-z0-9+.-]*:/.test(raw)) return false
    const base = /^(https?:\/\/.+?)\/[A-Z][A-Za-z]+\/[^/]+(?:\/_history\/[^/]+)?$/.exec(fullUrl)?.[1]
    return base !== undefined && urls.has(`${base}/${raw}`)
  }
}
