/**
 * `POST [base]` with a `batch` or `transaction` Bundle, following the R4 processing rules:
 * - transaction: DELETE, then POST (conditional create via `ifNoneExist`), then PUT, then GET; every
 *   `fullUrl` (urn:uuid or absolute) maps to the entry's final `Type/id`, and every string in the
 *   Bundle equal to a mapped fullUrl (references, Attachment.url, other uri/url values, narrative
 *   links) is rewritten. Conditional references (`Type?identifier=…`) resolve against the store and
 *   the Bundle's own entries; 0 or >1 matches fail. All or nothing: one SQLite transaction; a failure
 *   answers the failing entry's status with one OperationOutcome naming `Bundle.entry[i]`.
 * - batch: each entry on its own (own SQLite transaction), in Bundle order; failures are reported in
 *   `entry.response.status` / `outcome` and the HTTP status stays 200.
 * Response entries carry `status`, `location` (`Type/id/_history/v`), `etag`, `lastModified`; the
 * resource too when the request says `Prefer: return=representation`.
 */
import { randomUUID } from "node:crypto"
import { type Ctx, FhirHttpError, outcome, sendJson } from "./Http.js"
import type { SandboxConfig } from "./Config.js"
import { checkId, checkType, conditionalMatches, searchOptions, updateResource, validate } from "./Rest.js"
import type { Store, StoredResource } from "./Store.js"

interface Entry {
  readonly index: number
  readonly fullUrl: string | undefined
  readonly method: string
  readonly url: string
  readonly resource: Record<string, unknown> | undefined
  readonly ifNoneExist: string | undefined
  readonly ifMatch: string | undefined
}

interface Result {
  status: string
  stored?: StoredResource
  resourceJson?: string
  outcome?: unknown
}

class EntryFailure extends Error {
  constructor(
    readonly index: number,
    readonly failure: FhirHttpError,
  ) {
    super(failure.message)
  }
}

const statusText: Record<number, string> = {
  200: "200 OK",
  201: "201 Created",
  204: "204 No Content",
  400: "400 Bad Request",
  404: "404 Not Found",
  405: "405 Method Not Allowed",
  409: "409 Conflict",
  410: "410 Gone",
  412: "412 Precondition Failed",
  422: "422 Unprocessable Entity",
  500: "500 Internal Server Error",
}
const status = (n: number): string => statusText[n] ?? String(n)

const parseEntries = (bundle: Record<string, unknown>): Entry[] => {
  const raw = bundle.entry
  if (raw === undefined) return []
  if (!Array.isArray(raw)) throw new FhirHttpError(400, "structure", "Bundle.entry is not an array")
  return raw.map((e: unknown, index): Entry => {
    const fail = (d: string): never => {
      throw new EntryFailure(index, new FhirHttpError(400, "structure", d))
    }
    if (typeof e !== "object" || e === null) return fail("entry is not an object")
    const { fullUrl, request, resource } = e as { fullUrl?: unknown; request?: unknown; resource?: unknown }
    if (typeof request !== "object" || request === null) return fail("entry.request is missing")
    const r = request as Record<string, unknown>
    if (typeof r.method !== "string" || typeof r.url !== "string")
      return fail("entry.request.method/url missing")
    if (
      resource !== undefined &&
      (typeof resource !== "object" || resource === null || Array.isArray(resource))
    )
      return fail("entry.resource is not an object")
    return {
      index,
      fullUrl: typeof fullUrl === "string" ? fullUrl : undefined,
      method: r.method.toUpperCase(),
      url: r.url.replace(/^\//, ""),
      resource: resource as Record<string, unknown> | undefined,
      ifNoneExist: typeof r.ifNoneExist === "string" && r.ifNoneExist !== "" ? r.ifNoneExist : undefined,
      ifMatch: typeof r.ifMatch === "string" ? r.ifMatch : undefined,
    }
  })
}

/** Splits `Type`, `Type/id`, `Type?query` (a base prefix is dropped). */
const parseUrl = (url: string, baseUrl: string): { type: string; id?: string; query?: string } => {
  let u = url.startsWith(`${baseUrl}/`) ? url.slice(baseUrl.length + 1) : url
  u = u.replace(/^\//, "")
  const q = u.indexOf("?")
  const path = q >= 0 ? u.slice(0, q) : u
  const query = q >= 0 ? u.slice(q + 1) : undefined
  const [type, id, ...rest] = path.split("/")
  if (type === undefined || type === "" || rest.length > 0)
    throw new FhirHttpError(400, "invalid", `Unsupported request.url ${JSON.stringify(url)}`)
  checkType(type)
  if (id !== undefined) checkId(id)
  return { type, ...(id !== undefined ? { id } : {}), ...(query !== undefined ? { query } : {}) }
}

const urnInText = /urn:uuid:[0-9a-fA-F-]{36}/g

/**
 * Replaces every string equal to a mapped fullUrl (references, uri/url values such as Attachment.url);
 * narrative `div`s get their urn:uuid links rewritten; `reference` values also go through `resolveRef`
 * (conditional references). `minLength` is `shortestKey(map)`, worked out once by the caller for all the resources
 * it rewrites against one map (worked out here on each call, it was a pass over every key per resource: 4.7 s of
 * a Synthea seeding's 11 s of CPU).
 */
export const rewrite = (
  node: unknown,
  map: ReadonlyMap<string, string>,
  resolveRef: ((s: string) => string | undefined) | undefined,
  minLength: number,
): void => {
  if (Array.isArray(node)) {
    for (let i = 0; i < node.length; i++) {
      const v = node[i]
      if (typeof v === "string") {
        const m = v.length >= minLength ? map.get(v) : undefined
        if (m !== undefined) node[i] = m
      } else if (typeof v === "object" && v !== null) rewrite(v, map, resolveRef, minLength)
    }
    return
  }
  if (typeof node !== "object" || node === null) return
  const o = node as Record<string, unknown>
  for (const key in o) {
    const v = o[key]
    if (typeof v === "string") {
      // Strings shorter than every fullUrl (codes, dates, relative references) skip the map lookup.
      const m = v.length >= minLength ? map.get(v) : undefined
      if (m !== undefined) o[key] = m
      else if (key === "reference" && resolveRef !== undefined) {
        const r = resolveRef(v)
        if (r !== undefined) o[key] = r
      } else if (key === "div" && v.includes("urn:uuid:"))
        o[key] = v.replace(urnInText, (s) => map.get(s) ?? s)
    } else if (typeof v === "object" && v !== null) rewrite(v, map, resolveRef, minLength)
  }
}

/** The length of the shortest key (Infinity for an empty map): no shorter string can be a key. */
export const shortestKey = (map: ReadonlyMap<string, string>): number => {
  let min = Number.POSITIVE_INFINITY
  for (const k of map.keys()) if (k.length < min) min = k.length
  return min
}

const hasIdentifier = (r: Record<string, unknown>, system: string | undefined, value: string): boolean => {
  const list = Array.isArray(r.identifier) ? r.identifier : []
  return list.some((i: unknown) => {
    if (typeof i !== "object" || i === null) return false
    const { system: s, value: v } = i as { system?: unknown; value?: unknown }
    return v === value && (system === undefined || (system === "" ? s === undefined : s === system))
  })
}

const conditionalRef = /^([A-Z][A-Za-z]{1,63})\?(.+)$/

const written = (s: StoredResource, created: boolean): Result => ({
  status: status(created ? 201 : 200),
  stored: s,
})

/** Runs one transaction; throws EntryFailure (or FhirHttpError for Bundle-level problems). */
const runTransaction = (store: Store, config: SandboxConfig, baseUrl: string, entries: Entry[]): Result[] => {
  const results: Result[] = new Array(entries.length)
  const map = new Map<string, string>()
  const identities = new Set<string>()
  const at = <T>(e: Entry, f: () => T): T => {
    try {
      return f()
    } catch (err) {
      if (err instanceof FhirHttpError) throw new EntryFailure(e.index, err)
      throw err
    }
  }
  const claim = (e: Entry, identity: string): void => {
    if (identities.has(identity))
      throw new EntryFailure(
        e.index,
        new FhirHttpError(400, "duplicate", `${identity} appears more than once in the transaction`),
      )
    identities.add(identity)
  }
  const parsed = entries.map((e) => at(e, () => ({ e, u: parseUrl(e.url, baseUrl) })))
  const byMethod = (m: string) => parsed.filter((p) => p.e.method === m)
  for (const p of parsed)
    if (!["GET", "HEAD", "POST", "PUT", "DELETE"].includes(p.e.method))
      throw new EntryFailure(
        p.e.index,
        new FhirHttpError(400, "not-supported", `request.method ${p.e.method} is not supported`),
      )

  // 1. DELETE
  for (const { e, u } of byMethod("DELETE")) {
    at(e, () => {
      if (u.id === undefined)
        throw new FhirHttpError(400, "not-supported", "Conditional delete is not supported")
      claim(e, `${u.type}/${u.id}`)
      store.delete(u.type, u.id)
      results[e.index] = { status: status(204) }
    })
  }
  // 2. POST: assign ids (or match ifNoneExist), 3. PUT: map fullUrls
  const posts: Array<{ e: Entry; type: string; id: string; resource: Record<string, unknown> }> = []
  for (const { e, u } of byMethod("POST")) {
    at(e, () => {
      const { resource, existing } = checkPost(store, config, baseUrl, e, u)
      const id = existing ?? randomUUID()
      claim(e, `${u.type}/${id}`)
      if (e.fullUrl !== undefined) map.set(e.fullUrl, `${u.type}/${id}`)
      if (existing !== undefined) results[e.index] = { status: status(200), stored: store.read(u.type, id)! }
      else posts.push({ e, type: u.type, id, resource })
    })
  }
  const puts: Array<{ e: Entry; type: string; id: string; resource: Record<string, unknown> }> = []
  for (const { e, u } of byMethod("PUT")) {
    at(e, () => {
      if (u.id === undefined)
        throw new FhirHttpError(400, "not-supported", "Conditional update is not supported")
      const resource = validate(config, e.resource, u.type)
      claim(e, `${u.type}/${u.id}`)
      if (e.fullUrl !== undefined) map.set(e.fullUrl, `${u.type}/${u.id}`)
      puts.push({ e, type: u.type, id: u.id, resource })
    })
  }
  // Conditional references: the store (after deletes) plus this Bundle's own writes.
  const pending = [...posts, ...puts]
  const resolveConditional =
    (e: Entry) =>
    (s: string): string | undefined => {
      const m = conditionalRef.exec(s)
      if (!m) return undefined
      const type = m[1]!
      const query = m[2]!
      const found = new Set(conditionalMatches(store, type, query, baseUrl).map((id) => `${type}/${id}`))
      const opts = searchOptions(type, new URLSearchParams(query), baseUrl, store)
      for (const p of pending) {
        if (p.type !== type) continue
        const idOk = opts.ids === undefined || opts.ids.includes(p.id)
        const identOk =
          opts.identifier === undefined ||
          hasIdentifier(p.resource, opts.identifier.system, opts.identifier.value)
        if (idOk && identOk && (opts.ids !== undefined || opts.identifier !== undefined))
          found.add(`${type}/${p.id}`)
        else found.delete(`${type}/${p.id}`)
      }
      if (found.size !== 1)
        throw new EntryFailure(
          e.index,
          new FhirHttpError(
            found.size === 0 ? 404 : 412,
            found.size === 0 ? "not-found" : "multiple-matches",
            `Conditional reference ${s} matched ${found.size === 0 ? "nothing" : "more than one resource"}`,
          ),
        )
      return [...found][0]!
    }
  const minLength = shortestKey(map)
  for (const p of pending) {
    const resolve = resolveConditional(p.e)
    at(p.e, () => rewrite(p.resource, map, resolve, minLength))
  }
  for (const p of posts) {
    at(p.e, () => {
      results[p.e.index] = written(store.create(p.resource, p.id), true)
    })
  }
  for (const p of puts) {
    at(p.e, () => {
      const { stored, created } = updateResource({ config, store }, p.type, p.id, p.resource, p.e.ifMatch)
      results[p.e.index] = written(stored, created)
    })
  }
  // 4. GET / HEAD
  for (const p of [...byMethod("GET"), ...byMethod("HEAD")]) {
    at(p.e, () => {
      results[p.e.index] = readEntry(store, config, baseUrl, p.u)
    })
  }
  return results
}

const readEntry = (
  store: Store,
  config: SandboxConfig,
  baseUrl: string,
  u: { type: string; id?: string; query?: string },
): Result => {
  if (u.id !== undefined) {
    const s = store.read(u.type, u.id)
    if (!s) throw new FhirHttpError(404, "not-found", `${u.type}/${u.id} is not known`)
    return { status: status(200), stored: s, resourceJson: s.json }
  }
  const opts = searchOptions(u.type, new URLSearchParams(u.query ?? ""), baseUrl, store)
  const entries: string[] = []
  for (const r of store.iterate(u.type, { ...opts, limit: config.maxPageSize }))
    entries.push(`{"fullUrl":${JSON.stringify(`${baseUrl}/${r.type}/${r.id}`)},"resource":${r.json}}`)
  return {
    status: status(200),
    resourceJson: `{"resourceType":"Bundle","type":"searchset","total":${store.count(u.type, opts)},"entry":[${entries.join(",")}]}`,
  }
}

/**
 * A POST entry's checks, shared by transaction and batch processing: the URL names a type, the resource
 * passes validation, and `ifNoneExist` matches at most one resource (`existing`: its id).
 */
const checkPost = (
  store: Store,
  config: SandboxConfig,
  baseUrl: string,
  e: Entry,
  u: ReturnType<typeof parseUrl>,
): { resource: Record<string, unknown>; existing: string | undefined } => {
  if (u.id !== undefined || u.query !== undefined)
    throw new FhirHttpError(400, "invalid", `POST request.url must be a type, got ${e.url}`)
  const resource = validate(config, e.resource, u.type)
  if (e.ifNoneExist === undefined) return { resource, existing: undefined }
  const matches = conditionalMatches(store, u.type, e.ifNoneExist, baseUrl)
  if (matches.length > 1)
    throw new FhirHttpError(412, "duplicate", `ifNoneExist ${e.ifNoneExist} matched more than one ${u.type}`)
  return { resource, existing: matches[0] }
}

/** One batch entry, as its own REST call. */
const runBatchEntry = (store: Store, config: SandboxConfig, baseUrl: string, e: Entry): Result => {
  const u = parseUrl(e.url, baseUrl)
  switch (e.method) {
    case "GET":
    case "HEAD":
      return readEntry(store, config, baseUrl, u)
    case "DELETE":
      if (u.id === undefined)
        throw new FhirHttpError(400, "not-supported", "Conditional delete is not supported")
      store.delete(u.type, u.id)
      return { status: status(204) }
    case "POST": {
      const { resource, existing } = checkPost(store, config, baseUrl, e, u)
      if (existing !== undefined) return { status: status(200), stored: store.read(u.type, existing)! }
      return written(store.create(resource), true)
    }
    case "PUT": {
      if (u.id === undefined)
        throw new FhirHttpError(400, "not-supported", "Conditional update is not supported")
      const { stored, created } = updateResource({ config, store }, u.type, u.id, e.resource, e.ifMatch)
      return written(stored, created)
    }
    default:
      throw new FhirHttpError(400, "not-supported", `request.method ${e.method} is not supported`)
  }
}

const responseEntry = (r: Result, representation: boolean): string => {
  const parts = [`"status":${JSON.stringify(r.status)}`]
  if (r.stored) {
    const s = r.stored
    parts.push(
      `"location":${JSON.stringify(`${s.type}/${s.id}/_history/${s.versionId}`)}`,
      `"etag":${JSON.stringify(`W/"${s.versionId}"`)}`,
      `"lastModified":${JSON.stringify(s.lastUpdated)}`,
    )
  }
  if (r.outcome !== undefined) parts.push(`"outcome":${JSON.stringify(r.outcome)}`)
  const resource = r.resourceJson ?? (representation && r.stored ? r.stored.json : undefined)
  return `{${resource !== undefined ? `"resource":${resource},` : ""}"response":{${parts.join(",")}}}`
}

/** Applies a Bundle to the store (also used by seeding tools); throws EntryFailure / FhirHttpError. */
export const apply = (
  store: Store,
  config: SandboxConfig,
  baseUrl: string,
  bundle: unknown,
): { type: "transaction-response" | "batch-response"; results: Result[] } => {
  if (
    typeof bundle !== "object" ||
    bundle === null ||
    (bundle as { resourceType?: unknown }).resourceType !== "Bundle"
  )
    throw new FhirHttpError(400, "structure", "POST to the base expects a Bundle")
  const b = bundle as Record<string, unknown>
  if (b.type !== "transaction" && b.type !== "batch")
    throw new FhirHttpError(
      400,
      "not-supported",
      `Bundle.type must be transaction or batch, got ${JSON.stringify(b.type)}`,
    )
  const count = Array.isArray(b.entry) ? b.entry.length : 0
  if (config.maxBundleEntries !== undefined && count > config.maxBundleEntries)
    throw new FhirHttpError(
      413,
      "too-costly",
      `Bundle has ${count} entries; this server accepts at most ${config.maxBundleEntries} per Bundle`,
    )
  const entries = parseEntries(b)
  if (b.type === "transaction") {
    return {
      type: "transaction-response",
      results: store.tx(() => runTransaction(store, config, baseUrl, entries)),
    }
  }
  const results = entries.map((e): Result => {
    try {
      return store.tx(() => runBatchEntry(store, config, baseUrl, e))
    } catch (err) {
      if (!(err instanceof FhirHttpError)) throw err
      return { status: status(err.status), outcome: outcome("error", err.code, err.diagnostics) }
    }
  })
  return { type: "batch-response", results }
}

/** The `POST /` handler. */
export const handle = async (ctx: Ctx, config: SandboxConfig): Promise<void> => {
  const bundle = await ctx.json()
  let response: ReturnType<typeof apply>
  try {
    response = apply(ctx.store, config, ctx.baseUrl, bundle)
  } catch (err) {
    if (err instanceof EntryFailure) {
      const entry = Array.isArray((bundle as { entry?: unknown }).entry)
        ? ((bundle as { entry: Array<{ fullUrl?: unknown; request?: { url?: unknown } }> }).entry[
            err.index
          ] ?? {})
        : {}
      const where = `Bundle.entry[${err.index}]`
      const label = typeof entry.fullUrl === "string" ? entry.fullUrl : String(entry.request?.url ?? "")
      sendJson(ctx, err.failure.status, {
        resourceType: "OperationOutcome",
        issue: [
          {
            severity: "error",
            code: err.failure.code,
            diagnostics: `${where} (${label}): ${err.failure.diagnostics}. Nothing was committed.`,
            expression: [where],
          },
        ],
      })
      return
    }
    throw err
  }
  const representation = /return=representation/.test(String(ctx.req.headers.prefer ?? ""))
  const entries = response.results.map((r) => responseEntry(r, representation))
  sendJson(
    ctx,
    200,
    `{"resourceType":"Bundle","type":${JSON.stringify(response.type)},"entry":[${entries.join(",")}]}`,
  )
}
