/**
 * FHIR R4 REST on the sandbox: capabilities, read/vread, create, update (update-as-create unless
 * `refuseClientIds`), delete, search (`_id`, `_lastUpdated`, `_tag`, `patient`, `subject`, `identifier`,
 * `_count`, `_summary=count`, keyset `next` links), conditional create (`If-None-Exist`, Binary included)
 * and Binary (raw or JSON).
 *
 * `_tag` (token: `system|code`, `code`, `system|`, `|code`; comma = or, repeated = and): the store has no
 * tag index, so this module keeps one per store and type in memory (`TagIndex`), brought up to date
 * lazily on each `_tag` search by scanning only the rows written since the last scan (the store's
 * `(type, lastUpdated, id)` order: a row updated or re-created gets a newer `lastUpdated` and is
 * re-indexed). Deleted resources stay in the index and are dropped by the store's `deleted = 0` filter.
 *
 * The write helpers (`createResource`, `updateResource`, `deleteResource`, `searchOptions`) are shared
 * with Transaction.ts so a Bundle entry behaves exactly like the REST call it stands for.
 */
import { type Ctx, FhirHttpError, type Router, sendJson } from "./Http.js"
import { type RejectRule, type SandboxConfig, describeRule, rejectedBy } from "./Config.js"
import { normalizeReference } from "./internal/References.js"
import { isR4ResourceType, r4ResourceTypes } from "./internal/ResourceTypes.js"
import type { IterateOptions, LastUpdatedOp, Store, StoredResource } from "./Store.js"
import * as Transaction from "./Transaction.js"
import { carryNumbers } from "@ferry/core/NumberText"
import { version } from "@ferry/core/Version"

const typePattern = /^[A-Z][A-Za-z]{1,63}$/
const idPattern = /^[A-Za-z0-9\-.]{1,64}$/

/** Only R4 resource types are served (404 otherwise); the store itself accepts any type. */
export const checkType = (type: string): void => {
  if (!typePattern.test(type) || !isR4ResourceType(type))
    throw new FhirHttpError(
      404,
      "not-supported",
      `Unknown resource type ${type} (this server speaks FHIR R4)`,
    )
}

export const checkId = (id: string): void => {
  if (!idPattern.test(id)) throw new FhirHttpError(400, "value", `Invalid id ${JSON.stringify(id)}`)
}

// ---------------------------------------------------------------------------------------------------
// Capability statement

export type CapabilityContributor = (
  cs: Record<string, unknown>,
  ctx: { baseUrl: string; store: Store },
) => void

const contributors = new WeakMap<Router, CapabilityContributor[]>()

/** Lets other modules (bulk export/import, SMART) add operations and security to `GET /metadata`. */
export const contributeCapability = (router: Router, fn: CapabilityContributor): void => {
  const list = contributors.get(router) ?? []
  list.push(fn)
  contributors.set(router, list)
}

const searchParams = [
  { name: "_id", type: "token" },
  { name: "_lastUpdated", type: "date" },
  { name: "_tag", type: "token" },
  { name: "identifier", type: "token" },
  { name: "patient", type: "reference" },
  { name: "subject", type: "reference" },
]

export const capabilityStatement = (
  router: Router,
  config: SandboxConfig,
  baseUrl: string,
  store: Store,
): Record<string, unknown> => {
  const resource = r4ResourceTypes.map((type) => ({
    type,
    interaction: ["read", "vread", "create", "update", "delete", "search-type"].map((code) => ({ code })),
    versioning: "versioned-update",
    readHistory: false,
    updateCreate: !config.refuseClientIds,
    conditionalCreate: true,
    conditionalUpdate: false,
    conditionalDelete: "not-supported",
    searchParam: searchParams,
  }))
  const cs: Record<string, unknown> = {
    resourceType: "CapabilityStatement",
    status: "active",
    date: new Date().toISOString(),
    kind: "instance",
    software: { name: "Ferry sandbox", version },
    implementation: { description: "Ferry sandbox FHIR R4 server", url: baseUrl },
    fhirVersion: "4.0.1",
    format: ["application/fhir+json", "json"],
    rest: [
      {
        mode: "server",
        resource,
        interaction: [{ code: "transaction" }, { code: "batch" }],
        operation: [] as unknown[],
      },
    ],
  }
  for (const fn of contributors.get(router) ?? []) fn(cs, { baseUrl, store })
  return cs
}

// ---------------------------------------------------------------------------------------------------
// Writes shared with transactions

export interface WriteOptions {
  readonly config: SandboxConfig
  readonly store: Store
}

const asObject = (u: unknown, what: string): Record<string, unknown> => {
  if (typeof u !== "object" || u === null || Array.isArray(u))
    throw new FhirHttpError(400, "structure", `${what} is not a JSON object`)
  return u as Record<string, unknown>
}

/** Validates a resource body for `type` (resourceType, reject rules). */
export const validate = (config: SandboxConfig, body: unknown, type: string): Record<string, unknown> => {
  const r = asObject(body, "The resource")
  if (r.resourceType !== type)
    throw new FhirHttpError(
      400,
      "invalid",
      `resourceType ${JSON.stringify(r.resourceType)} does not match the URL type ${type}`,
    )
  const rule: RejectRule | undefined = rejectedBy(config, r)
  if (rule !== undefined) throw new FhirHttpError(422, "business-rule", describeRule(rule))
  return r
}

export const createResource = (o: WriteOptions, type: string, body: unknown): StoredResource => {
  const r = validate(o.config, body, type)
  return o.store.create(r)
}

export const updateResource = (
  o: WriteOptions,
  type: string,
  id: string,
  body: unknown,
  ifMatch?: string,
): { stored: StoredResource; created: boolean } => {
  checkId(id)
  const r = validate(o.config, body, type)
  if (r.id !== undefined && r.id !== id)
    throw new FhirHttpError(
      400,
      "invalid",
      `Resource id ${JSON.stringify(r.id)} does not match the URL id ${id}`,
    )
  const current = o.store.version(type, id)
  const live = current !== undefined && !current.deleted
  if (ifMatch !== undefined) {
    const want = /^(?:W\/)?"?([^"]*)"?$/.exec(ifMatch.trim())?.[1]
    if (!live || String(current.versionId) !== want)
      throw new FhirHttpError(
        412,
        "conflict",
        `Version conflict on ${type}/${id}: If-Match ${ifMatch}, current ${live ? current.versionId : "none"}`,
      )
  }
  if (!live && o.config.refuseClientIds)
    throw new FhirHttpError(
      405,
      "not-supported",
      `${type}/${id} does not exist and this server does not accept client-assigned ids (update-as-create is refused); use POST`,
    )
  // write() copies the resource anyway; the URL id is added here only when the body has none.
  return o.store.update(
    r.id === id ? (r as Record<string, unknown> & { id: string }) : carryNumbers(r, { ...r, id }),
    current,
  )
}

// ---------------------------------------------------------------------------------------------------
// Search

const instantBounds = (value: string): { lo: string; hi: string } => {
  const m = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$/.exec(value)
  if (m) {
    const y = Number(m[1])
    const mo = m[2] !== undefined ? Number(m[2]) - 1 : undefined
    const d = m[3] !== undefined ? Number(m[3]) : undefined
    const lo = new Date(Date.UTC(y, mo ?? 0, d ?? 1))
    const hi =
      d !== undefined
        ? new Date(Date.UTC(y, mo!, d + 1))
        : mo !== undefined
          ? new Date(Date.UTC(y, mo + 1, 1))
          : new Date(Date.UTC(y + 1, 0, 1))
    return { lo: lo.toISOString(), hi: hi.toISOString() }
  }
  const t = Date.parse(value)
  if (!/^\d{4}-\d{2}-\d{2}T/.test(value) || Number.isNaN(t))
    throw new FhirHttpError(400, "value", `Invalid _lastUpdated value ${JSON.stringify(value)}`)
  // Precision: seconds (or minutes) cover the whole second; milliseconds are exact.
  const hasMs = /T\d{2}:\d{2}:\d{2}\.\d+/.test(value)
  const hasSec = /T\d{2}:\d{2}:\d{2}/.test(value)
  const width = hasMs ? 1 : hasSec ? 1000 : 60_000
  return { lo: new Date(t).toISOString(), hi: new Date(t + width).toISOString() }
}

const lastUpdatedBounds = (raw: string): Array<{ op: LastUpdatedOp; value: string }> => {
  const m = /^(eq|ne|gt|ge|lt|le|sa|eb|ap)?(.*)$/.exec(raw)!
  const prefix = m[1] ?? "eq"
  const { lo, hi } = instantBounds(m[2]!)
  switch (prefix) {
    case "eq":
      return [
        { op: "ge", value: lo },
        { op: "lt", value: hi },
      ]
    case "gt":
    case "sa":
      return [{ op: "ge", value: hi }]
    case "ge":
      return [{ op: "ge", value: lo }]
    case "lt":
    case "eb":
      return [{ op: "lt", value: lo }]
    case "le":
      return [{ op: "lt", value: hi }]
    default:
      throw new FhirHttpError(400, "not-supported", `_lastUpdated prefix ${prefix} is not supported`)
  }
}

const referenceTarget = (value: string, defaultType: string, baseUrl: string): string => {
  const v = value.includes("/") ? value : `${defaultType}/${value}`
  const t = normalizeReference(v, baseUrl)
  if (t === undefined)
    throw new FhirHttpError(400, "value", `Invalid reference search value ${JSON.stringify(value)}`)
  return t
}

const ignored = new Set(["_format", "_pretty", "_cursor", "_count", "_summary", "_total", "_elements"])

/**
 * `_elements`: only the listed top-level elements (plus resourceType, id and meta), tagged SUBSETTED as
 * the FHIR search spec asks.
 */
const subsetted = (json: string, elements: ReadonlyArray<string>): string => {
  const r = JSON.parse(json) as Record<string, unknown>
  const out: Record<string, unknown> = { resourceType: r.resourceType, id: r.id }
  const meta = (typeof r.meta === "object" && r.meta !== null ? r.meta : {}) as { tag?: unknown }
  const tags = Array.isArray(meta.tag) ? meta.tag : []
  out.meta = {
    ...meta,
    tag: [
      ...tags,
      { system: "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", code: "SUBSETTED" },
    ],
  }
  for (const e of elements) if (e in r && !(e in out)) out[e] = r[e]
  return JSON.stringify(out)
}

// ---------------------------------------------------------------------------------------------------
// `_tag`

interface TypeTags {
  /** The newest `lastUpdated` scanned ("" before the first scan). */
  mark: string
  /** Ids scanned whose `lastUpdated` is `mark`. */
  atMark: Set<string>
  /** Index key (`f:system|code`, `c:code`, `s:system`) → ids. */
  readonly byKey: Map<string, Set<string>>
  /** id → its index keys (to re-index an updated resource). */
  readonly keysOf: Map<string, ReadonlyArray<string>>
}

const tagIndexes = new WeakMap<Store, Map<string, TypeTags>>()

/** The index keys of a resource's `meta.tag` codings. */
export const tagKeys = (resource: unknown): Array<string> => {
  const meta =
    typeof resource === "object" && resource !== null ? (resource as { meta?: unknown }).meta : undefined
  const tags = typeof meta === "object" && meta !== null ? (meta as { tag?: unknown }).tag : undefined
  const out = new Set<string>()
  for (const t of Array.isArray(tags) ? tags : []) {
    if (typeof t !== "object" || t === null) continue
    const { system, code } = t as { system?: unknown; code?: unknown }
    const sys = typeof system === "string" ? system : ""
    if (sys !== "") out.add(`s:${sys}`)
    if (typeof code === "string") {
      out.add(`f:${sys}|${code}`)
      out.add(`c:${code}`)
    }
  }
  return Array.from(out)
}

/** The index key one `_tag` value asks for (`system|code`, `code`, `system|`, `|code`). */
export const tagQueryKey = (value: string): string => {
  const bar = value.indexOf("|")
  if (bar < 0) return `c:${value}`
  const system = value.slice(0, bar)
  const code = value.slice(bar + 1)
  if (code === "") {
    if (system === "") throw new FhirHttpError(400, "value", "_tag=| names neither a system nor a code")
    return `s:${system}`
  }
  return `f:${system}|${code}`
}

/** Bring the tag index of `type` up to date with the store (see the module doc). */
const refreshTags = (store: Store, type: string): TypeTags => {
  let byType = tagIndexes.get(store)
  if (byType === undefined) {
    byType = new Map()
    tagIndexes.set(store, byType)
  }
  let t = byType.get(type)
  if (t === undefined) {
    t = { mark: "", atMark: new Set(), byKey: new Map(), keysOf: new Map() }
    byType.set(type, t)
  }
  // Fresh when nothing is newer than the last scan. A row written later at exactly `mark` would need a scan
  // in the middle of a store transaction followed by more writes in it: Transaction.ts looks up its
  // conditional creates before writing and answers its GETs after the last write, and a REST write is its
  // own transaction, so that does not happen here. (Counting the rows at `mark` too cost a scan of the
  // previous Bundle's rows per conditional create.)
  if (t.mark !== "" && store.count(type, { lastUpdated: [{ op: "gt", value: t.mark }] }) === 0) return t
  let mark = t.mark
  let atMark = t.atMark
  const opts: IterateOptions = t.mark === "" ? {} : { lastUpdated: [{ op: "ge", value: t.mark }] }
  for (const row of store.iterate(type, opts)) {
    if (row.lastUpdated === t.mark && t.atMark.has(row.id)) continue
    for (const k of t.keysOf.get(row.id) ?? []) t.byKey.get(k)?.delete(row.id)
    const keys = tagKeys(JSON.parse(row.json) as unknown)
    if (keys.length > 0) t.keysOf.set(row.id, keys)
    else t.keysOf.delete(row.id)
    for (const k of keys) {
      let set = t.byKey.get(k)
      if (set === undefined) {
        set = new Set()
        t.byKey.set(k, set)
      }
      set.add(row.id)
    }
    if (row.lastUpdated !== mark) {
      mark = row.lastUpdated
      atMark = new Set()
    }
    atMark.add(row.id)
  }
  t.mark = mark
  t.atMark = atMark
  return t
}

/** Ids of `type` carrying a tag that one of `values` (comma-separated, or) names. */
const idsTagged = (store: Store, type: string, values: string): string[] => {
  const t = refreshTags(store, type)
  const out = new Set<string>()
  for (const v of values.split(",")) {
    if (v === "") continue
    for (const id of t.byKey.get(tagQueryKey(v)) ?? []) out.add(id)
  }
  return Array.from(out)
}

/**
 * Translates search parameters (for `type`) into store filters; unknown parameters are a 400. `store` is
 * read for `_tag` (its in-memory tag index).
 */
export const searchOptions = (
  type: string,
  params: URLSearchParams,
  baseUrl: string,
  store: Store,
  /** Comma-separated values OR-ed (false: one value, commas and all; "first": the first alone; the `searchOr` config). */
  or: boolean | "first" = true,
): IterateOptions => {
  const values = (value: string) =>
    or === true ? value.split(",") : or === "first" ? value.split(",").slice(0, 1) : [value]
  let ids: string[] | undefined
  const lastUpdated: Array<{ op: LastUpdatedOp; value: string }> = []
  let targets: string[] | undefined
  let paths: string[] | undefined
  let identifier: { system?: string; value: string } | undefined
  for (const [rawName, value] of params) {
    const name = rawName.replace(/:(exact|missing)$/, "")
    if (ignored.has(name)) continue
    switch (name) {
      case "_id": {
        const list = values(value).filter((s) => s !== "")
        ids = ids === undefined ? list : ids.filter((i) => list.includes(i))
        break
      }
      case "_lastUpdated":
        lastUpdated.push(...lastUpdatedBounds(value))
        break
      case "_tag": {
        const list = idsTagged(store, type, value)
        ids = ids === undefined ? list : ids.filter((i) => list.includes(i))
        break
      }
      case "patient":
      case "subject": {
        if (targets !== undefined)
          throw new FhirHttpError(400, "not-supported", "Only one patient/subject parameter is supported")
        targets = values(value).map((v) => referenceTarget(v, "Patient", baseUrl))
        paths = name === "patient" ? (type === "Patient" ? ["link"] : ["patient", "subject"]) : ["subject"]
        break
      }
      case "identifier": {
        const bar = value.indexOf("|")
        if (bar < 0) identifier = { value }
        else {
          const system = value.slice(0, bar)
          const v = value.slice(bar + 1)
          if (v === "")
            throw new FhirHttpError(400, "not-supported", "identifier=system| (any value) is not supported")
          identifier = { system, value: v }
        }
        break
      }
      default:
        throw new FhirHttpError(
          400,
          "not-supported",
          `Search parameter ${rawName} is not supported on ${type}`,
        )
    }
  }
  return {
    ...(ids !== undefined ? { ids } : {}),
    ...(lastUpdated.length > 0 ? { lastUpdated } : {}),
    ...(targets !== undefined ? { referencing: { targets, ...(paths ? { paths } : {}) } } : {}),
    ...(identifier !== undefined ? { identifier } : {}),
  }
}

/** The ids matching `Type?query` (used by conditional create and conditional references). */
export const conditionalMatches = (
  store: Store,
  type: string,
  query: string,
  baseUrl: string,
  limit = 2,
): string[] => {
  const opts = searchOptions(type, new URLSearchParams(query), baseUrl, store)
  if (Object.keys(opts).length === 0)
    throw new FhirHttpError(400, "invalid", `Conditional search ${type}?${query} has no criteria`)
  const out: string[] = []
  for (const r of store.iterate(type, { ...opts, limit })) out.push(r.id)
  return out
}

const encodeCursor = (lastUpdated: string, id: string): string => `${lastUpdated}~${id}`
const decodeCursor = (raw: string): { lastUpdated: string; id: string } => {
  const i = raw.indexOf("~")
  if (i < 0) throw new FhirHttpError(400, "value", `Invalid _cursor ${JSON.stringify(raw)}`)
  return { lastUpdated: raw.slice(0, i), id: raw.slice(i + 1) }
}

/** A search result's JSON: a Binary carries its `data`, as its JSON read and the bulk export give it. */
const searchJson = (ctx: Ctx, r: StoredResource): string => {
  if (r.type !== "Binary") return r.json
  const bin = ctx.store.getBinary(r.id)
  if (bin === undefined) return r.json
  const json = JSON.parse(r.json) as Record<string, unknown>
  return JSON.stringify({ ...json, contentType: bin.contentType, data: bin.bytes.toString("base64") })
}

const search = (ctx: Ctx, config: SandboxConfig, type: string): void => {
  const params = ctx.url.searchParams
  const opts = searchOptions(type, params, ctx.baseUrl, ctx.store, config.searchOr)
  const selfUrl = `${ctx.baseUrl}/${type}${ctx.url.search}`
  if (params.get("_summary") === "count") {
    sendJson(ctx, 200, {
      resourceType: "Bundle",
      type: "searchset",
      total: ctx.store.count(type, opts),
      link: [{ relation: "self", url: selfUrl }],
    })
    return
  }
  const countRaw = params.get("_count")
  const count = Math.min(countRaw !== null ? Number(countRaw) : config.pageSize, config.maxPageSize)
  if (!Number.isInteger(count) || count < 0)
    throw new FhirHttpError(400, "value", `Invalid _count ${countRaw}`)
  const cursorRaw = params.get("_cursor")
  const after = cursorRaw !== null ? decodeCursor(cursorRaw) : undefined
  const rows: StoredResource[] = []
  if (count > 0) {
    for (const r of ctx.store.iterate(type, { ...opts, ...(after ? { after } : {}), limit: count + 1 }))
      rows.push(r)
  }
  const more = rows.length > count
  if (more) rows.pop()
  const links = [`{"relation":"self","url":${JSON.stringify(selfUrl)}}`]
  if (more) {
    const last = rows[rows.length - 1]!
    const next = new URLSearchParams(params)
    next.set("_cursor", encodeCursor(last.lastUpdated, last.id))
    if (!next.has("_count")) next.set("_count", String(count))
    links.push(`{"relation":"next","url":${JSON.stringify(`${ctx.baseUrl}/${type}?${next.toString()}`)}}`)
  }
  const total = after === undefined ? `"total":${ctx.store.count(type, opts)},` : ""
  const elementsRaw = params.get("_elements")
  const elements = elementsRaw === null ? undefined : elementsRaw.split(",").map((e) => e.trim())
  const entries = rows.map(
    (r) =>
      `{"fullUrl":${JSON.stringify(`${ctx.baseUrl}/${r.type}/${r.id}`)},"resource":${elements === undefined ? searchJson(ctx, r) : subsetted(searchJson(ctx, r), elements)},"search":{"mode":"match"}}`,
  )
  sendJson(
    ctx,
    200,
    `{"resourceType":"Bundle","type":"searchset",${total}"link":[${links.join(",")}],"entry":[${entries.join(",")}]}`,
  )
}

// ---------------------------------------------------------------------------------------------------
// Handlers

export const versionHeaders = (ctx: { baseUrl: string }, s: StoredResource): Record<string, string> => ({
  ETag: `W/"${s.versionId}"`,
  "Last-Modified": new Date(s.lastUpdated).toUTCString(),
  Location: `${ctx.baseUrl}/${s.type}/${s.id}/_history/${s.versionId}`,
})

const wantsMinimal = (ctx: Ctx): boolean => /return=minimal/.test(String(ctx.req.headers.prefer ?? ""))

const sendWritten = (ctx: Ctx, status: number, s: StoredResource): void => {
  const headers = versionHeaders(ctx, s)
  if (wantsMinimal(ctx)) {
    ctx.res.writeHead(status, headers)
    ctx.res.end()
  } else sendJson(ctx, status, s.json, headers)
}

const isFhirJson = (contentType: string | undefined): boolean =>
  contentType !== undefined && /^application\/(fhir\+json|json\+fhir|json)\b/i.test(contentType)

const wantsFhirJson = (ctx: Ctx): boolean => {
  const format = ctx.url.searchParams.get("_format")
  if (format !== null) return /json/.test(format)
  const accept = String(ctx.req.headers.accept ?? "")
  return /application\/(fhir\+json|json\+fhir|json)\b/i.test(accept)
}

const readBinary = (ctx: Ctx, id: string): void => {
  const bin = ctx.store.getBinary(id)
  if (!bin) {
    readMissing(ctx, "Binary", id)
    return
  }
  const headers = versionHeaders(ctx, bin.stored)
  delete headers.Location
  if (wantsFhirJson(ctx)) {
    const json = JSON.parse(bin.stored.json) as Record<string, unknown>
    sendJson(ctx, 200, { ...json, contentType: bin.contentType, data: bin.bytes.toString("base64") }, headers)
    return
  }
  ctx.res.writeHead(200, {
    ...headers,
    "Content-Type": bin.contentType,
    "Content-Length": String(bin.bytes.length),
  })
  ctx.res.end(ctx.req.method === "HEAD" ? undefined : bin.bytes)
}

const readMissing = (ctx: Ctx, type: string, id: string): never => {
  const v = ctx.store.version(type, id)
  if (v?.deleted) throw new FhirHttpError(410, "deleted", `${type}/${id} was deleted`)
  throw new FhirHttpError(404, "not-found", `${type}/${id} is not known`)
}

/** A Binary body: raw bytes with their Content-Type (+ `X-Security-Context`), or a JSON Binary resource. */
const binaryBody = async (
  ctx: Ctx,
  config: SandboxConfig,
): Promise<
  { json: Record<string, unknown> } | { contentType: string; bytes: Buffer; securityContext?: string }
> => {
  const ct = ctx.req.headers["content-type"]
  if (isFhirJson(ct)) {
    const body = await ctx.json()
    return { json: validate(config, body, "Binary") }
  }
  const sc = ctx.req.headers["x-security-context"]
  return {
    contentType: ct ?? "application/octet-stream",
    bytes: await ctx.body(),
    ...(typeof sc === "string" && sc !== "" ? { securityContext: sc } : {}),
  }
}

/** The resource an `If-None-Exist` header matches (undefined: none, or no header); 412 when several do. */
const conditionalMatch = (ctx: Ctx, type: string): StoredResource | undefined => {
  const ifNoneExist = ctx.req.headers["if-none-exist"]
  if (typeof ifNoneExist !== "string" || ifNoneExist === "") return undefined
  const matches = conditionalMatches(ctx.store, type, ifNoneExist, ctx.baseUrl)
  if (matches.length > 1)
    throw new FhirHttpError(412, "duplicate", `If-None-Exist ${ifNoneExist} matched more than one ${type}`)
  return matches.length === 1 ? ctx.store.read(type, matches[0]!) : undefined
}

/** Registers the REST routes and `POST /` (batch/transaction) on `router`. */
export const register = (router: Router, _store: Store, config: SandboxConfig): void => {
  const opts = (ctx: Ctx): WriteOptions => ({ config, store: ctx.store })
  router.on("GET", "/metadata", (ctx) => {
    sendJson(ctx, 200, capabilityStatement(router, config, ctx.baseUrl, ctx.store))
  })

  router.on("POST", "/", (ctx) => Transaction.handle(ctx, config))

  router.on("GET", "/:type", (ctx) => {
    checkType(ctx.params.type!)
    search(ctx, config, ctx.params.type!)
  })

  router.on("POST", "/:type", async (ctx) => {
    const type = ctx.params.type!
    checkType(type)
    // the body is read (and validated) first: a matched conditional create answers 200, nothing written
    if (type === "Binary") {
      const b = await binaryBody(ctx, config)
      const existing = conditionalMatch(ctx, type)
      if (existing !== undefined) return sendWritten(ctx, 200, existing)
      const stored =
        "json" in b
          ? ctx.store.create(b.json)
          : ctx.store.putBinary(undefined, b.contentType, b.bytes, b.securityContext)
      return sendWritten(ctx, 201, stored)
    }
    const body = await ctx.json()
    const existing = conditionalMatch(ctx, type)
    if (existing !== undefined) return sendWritten(ctx, 200, existing)
    sendWritten(ctx, 201, createResource(opts(ctx), type, body))
  })

  router.on("GET", "/:type/:id", (ctx) => {
    const { type, id } = ctx.params as { type: string; id: string }
    checkType(type)
    if (type === "Binary") return readBinary(ctx, id)
    const s = ctx.store.read(type, id)
    if (!s) return readMissing(ctx, type, id)
    const headers = versionHeaders(ctx, s)
    delete headers.Location
    sendJson(ctx, 200, s.json, headers)
  })

  router.on("GET", "/:type/:id/_history/:vid", (ctx) => {
    const { type, id, vid } = ctx.params as { type: string; id: string; vid: string }
    checkType(type)
    const s = ctx.store.read(type, id)
    if (!s) return readMissing(ctx, type, id)
    if (String(s.versionId) !== vid)
      throw new FhirHttpError(
        404,
        "not-found",
        `${type}/${id} version ${vid} is not kept (only the current one is)`,
      )
    if (type === "Binary") return readBinary(ctx, id)
    sendJson(ctx, 200, s.json, { ETag: `W/"${s.versionId}"` })
  })

  router.on("PUT", "/:type/:id", async (ctx) => {
    const { type, id } = ctx.params as { type: string; id: string }
    checkType(type)
    checkId(id)
    const ifMatch = typeof ctx.req.headers["if-match"] === "string" ? ctx.req.headers["if-match"] : undefined
    if (type === "Binary") {
      const b = await binaryBody(ctx, config)
      const result = ctx.store.tx(() => {
        if ("json" in b) return updateResource(opts(ctx), type, id, b.json, ifMatch)
        const current = ctx.store.version(type, id)
        if ((current === undefined || current.deleted) && config.refuseClientIds)
          throw new FhirHttpError(
            405,
            "not-supported",
            `Binary/${id} does not exist and client ids are refused`,
          )
        return {
          stored: ctx.store.putBinary(id, b.contentType, b.bytes, b.securityContext),
          created: current === undefined || current.deleted,
        }
      })
      return sendWritten(ctx, result.created ? 201 : 200, result.stored)
    }
    const body = await ctx.json()
    const { stored, created } = ctx.store.tx(() => updateResource(opts(ctx), type, id, body, ifMatch))
    sendWritten(ctx, created ? 201 : 200, stored)
  })

  router.on("DELETE", "/:type/:id", (ctx) => {
    const { type, id } = ctx.params as { type: string; id: string }
    checkType(type)
    ctx.store.delete(type, id)
    ctx.res.writeHead(204)
    ctx.res.end()
  })
}
