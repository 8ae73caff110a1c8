/**
 * Seeding from disk (`--seed <path>`, repeatable). A path is one of:
 * - a `.json` file or a folder of them: transaction/batch Bundles (Synthea) or bare resources
 *   (e.g. `groupInformation*.json`, a Group);
 * - a `.ndjson` file or a folder holding `.ndjson` files: one resource per line, stored as is
 *   (conditional references such as `Practitioner?identifier=…` are kept);
 * - any other folder: binary files, each stored as a Binary and attached (absolute URL on this
 *   server, contentType, size, base64 SHA-1 hash) to a new DocumentReference of a seeded Patient.
 *
 * Resources keep their own ids. Bundle `fullUrl`s (`urn:uuid:<id>`) map to `Type/<id>` across ALL
 * seeded Bundle files (a first pass collects the map), so a patient Bundle may point at the hospital
 * Bundle. A resource appearing in several files is written once. One SQLite transaction per file
 * (per 5,000 lines for NDJSON). Bundle files up to 64 MiB are read whole (one file at a time), larger
 * ones entry by entry (internal/BundleStream.ts); NDJSON is read in 1 MiB chunks.
 */
import { createHash } from "node:crypto"
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from "node:fs"
import { basename, extname, join } from "node:path"
import { rewrite as rewriteReferences } from "@ferry/core/Walker"
import { forEachBundleEntry } from "./internal/BundleStream.js"
import type { Store } from "./Store.js"
import { rewrite, shortestKey } from "./Transaction.js"
import { carryNumbers, parseKeepingNumbers } from "@ferry/core/NumberText"

export interface SeedReport {
  readonly path: string
  readonly kind: "bundles" | "ndjson" | "attachments"
  readonly files: number
  /** Resources written (a resource repeated across files counts once). */
  readonly resources: number
}

type Kind = SeedReport["kind"]

const skipName = (name: string): boolean => name.startsWith(".") || /^(LICENSE|README)/i.test(name)

const listFiles = (path: string): string[] => {
  if (statSync(path).isFile()) return [path]
  return readdirSync(path)
    .filter((n) => !skipName(n))
    .sort()
    .map((n) => join(path, n))
    .filter((p) => statSync(p).isFile())
}

const kindOf = (path: string): { kind: Kind; files: string[] } => {
  const files = listFiles(path)
  if (files.some((f) => f.endsWith(".ndjson")))
    return { kind: "ndjson", files: files.filter((f) => f.endsWith(".ndjson")) }
  if (files.some((f) => f.endsWith(".json")))
    return { kind: "bundles", files: files.filter((f) => f.endsWith(".json")) }
  return { kind: "attachments", files }
}

interface Obj {
  [key: string]: unknown
}

const isObj = (u: unknown): u is Obj => typeof u === "object" && u !== null && !Array.isArray(u)

const idFromFullUrl = (fullUrl: string | undefined): string | undefined => {
  if (fullUrl === undefined) return undefined
  const m = /([A-Za-z0-9\-.]{1,64})$/.exec(fullUrl)
  return m ? m[1] : undefined
}

interface Item {
  readonly fullUrl: string | undefined
  readonly resource: Obj
  readonly method: string
}

const entryItem = (e: unknown): Item | undefined => {
  if (!isObj(e) || !isObj(e.resource)) return undefined
  const request = isObj(e.request) ? e.request : {}
  return {
    fullUrl: typeof e.fullUrl === "string" ? e.fullUrl : undefined,
    resource: e.resource,
    method: typeof request.method === "string" ? request.method.toUpperCase() : "PUT",
  }
}

/** The resources of a parsed JSON file with their fullUrls (a bare resource gets `urn:uuid:<id>`). */
const resourcesOf = (doc: unknown, file: string): Item[] => {
  if (!isObj(doc) || typeof doc.resourceType !== "string") throw new Error(`${file} is not a FHIR resource`)
  if (doc.resourceType === "Bundle" && Array.isArray(doc.entry)) {
    const out: Item[] = []
    for (const e of doc.entry) {
      const item = entryItem(e)
      if (item) out.push(item)
    }
    return out
  }
  return [
    { fullUrl: typeof doc.id === "string" ? `urn:uuid:${doc.id}` : undefined, resource: doc, method: "PUT" },
  ]
}

export interface SeedOptions {
  /** Bundle files larger than this are read entry by entry (default 64 MiB). */
  readonly streamAbove?: number
}

/** Calls `f` with every resource of a Bundle/resource file, streaming files above `streamAbove`. */
const forEachItem = (file: string, streamAbove: number, f: (item: Item) => void): void => {
  if (statSync(file).size > streamAbove) {
    const type = forEachBundleEntry(file, (e) => {
      const item = entryItem(e)
      if (item) f(item)
    })
    if (type === "Bundle") return
  }
  for (const item of resourcesOf(parsed(readFileSync(file, "utf8"), file), file)) f(item)
}

/** `parseKeepingNumbers`, failing with the file (and line) when the text is no JSON. */
const parsed = (text: string, file: string, line?: number): unknown => {
  try {
    return parseKeepingNumbers(text)
  } catch (e) {
    throw new Error(
      `${file}${line !== undefined ? `:${line}` : ""} is not valid JSON (${e instanceof Error ? e.message : String(e)})`,
    )
  }
}

const identity = (r: Obj, fullUrl: string | undefined): string | undefined => {
  const id = typeof r.id === "string" ? r.id : idFromFullUrl(fullUrl)
  return id !== undefined && typeof r.resourceType === "string" ? `${r.resourceType}/${id}` : undefined
}

const fullUrlEntry =
  /"fullUrl"\s*:\s*"([^"\\]+)"\s*,\s*"resource"\s*:\s*\{\s*"resourceType"\s*:\s*"([A-Za-z]+)"\s*,\s*"id"\s*:\s*"([A-Za-z0-9\-.]{1,64})"/g

/**
 * Pass 1: fullUrl → `Type/id`. The common layout (fullUrl, then resource starting with resourceType
 * and id, as Synthea writes it) is found by a scan; any other layout falls back to JSON.parse.
 */
const scanFullUrls = (text: string, file: string, map: Map<string, string>): void => {
  const expected = text.split('"fullUrl"').length - 1
  const found: Array<[string, string]> = []
  if (expected > 0) for (const m of text.matchAll(fullUrlEntry)) found.push([m[1]!, `${m[2]}/${m[3]}`])
  if (expected > 0 && found.length === expected) {
    for (const [fullUrl, ident] of found) map.set(fullUrl, ident)
    return
  }
  for (const { fullUrl, resource } of resourcesOf(parsed(text, file), file)) {
    const ident = identity(resource, fullUrl)
    if (fullUrl !== undefined && ident !== undefined) map.set(fullUrl, ident)
  }
}

/** Seeds every path; Bundle files from all paths share one fullUrl map; attachments go last. */
export const seedAll = (
  store: Store,
  baseUrl: string,
  paths: ReadonlyArray<string>,
  options: SeedOptions = {},
): SeedReport[] => {
  const streamAbove = options.streamAbove ?? 64 * 1024 * 1024
  const planned = paths.map((path) => ({ path, ...kindOf(path) }))
  const map = new Map<string, string>()
  for (const p of planned) {
    if (p.kind !== "bundles") continue
    for (const file of p.files) {
      if (statSync(file).size <= streamAbove) scanFullUrls(readFileSync(file, "utf8"), file, map)
      else
        forEachItem(file, streamAbove, ({ fullUrl, resource }) => {
          const ident = identity(resource, fullUrl)
          if (fullUrl !== undefined && ident !== undefined) map.set(fullUrl, ident)
        })
    }
  }
  const written = new Set<string>()
  const reports: SeedReport[] = []
  // once for the whole map (38k fullUrls for the Synthea set), not per resource
  const minLength = shortestKey(map)
  for (const p of planned) {
    if (p.kind === "bundles")
      reports.push(seedBundles(store, p.path, p.files, { map, minLength }, written, streamAbove))
    else if (p.kind === "ndjson") reports.push(seedNdjson(store, p.path, p.files))
  }
  for (const p of planned)
    if (p.kind === "attachments") reports.push(seedAttachments(store, baseUrl, p.path, p.files))
  return reports
}

/** Seeds one path (see `seedAll` for several paths whose Bundles refer to each other). */
export const seedPath = (
  store: Store,
  baseUrl: string,
  path: string,
  options: SeedOptions = {},
): SeedReport => seedAll(store, baseUrl, [path], options)[0]!

const seedBundles = (
  store: Store,
  path: string,
  files: string[],
  fullUrls: { readonly map: ReadonlyMap<string, string>; readonly minLength: number },
  written: Set<string>,
  streamAbove: number,
): SeedReport => {
  let resources = 0
  for (const file of files) {
    store.tx(() =>
      forEachItem(file, streamAbove, ({ fullUrl, resource, method }) => {
        const ident = identity(resource, fullUrl)
        if (method === "DELETE") return
        if (ident !== undefined && written.has(ident)) return
        rewrite(resource, fullUrls.map, undefined, fullUrls.minLength)
        if (ident === undefined) store.create(resource)
        else {
          written.add(ident)
          store.update(carryNumbers(resource, { ...resource, id: ident.slice(ident.indexOf("/") + 1) }))
        }
        resources++
      }),
    )
  }
  return { path, kind: "bundles", files: files.length, resources }
}

/** Calls `onLine` for each non-empty line, reading `file` in 1 MiB chunks. */
export const forEachLine = (file: string, onLine: (line: string, lineNo: number) => void): void => {
  const fd = openSync(file, "r")
  try {
    const buf = Buffer.alloc(1 << 20)
    let carry = ""
    let lineNo = 0
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null)
      if (n === 0) break
      const text = carry + buf.toString("utf8", 0, n)
      const lines = text.split("\n")
      carry = lines.pop() ?? ""
      for (const line of lines) {
        lineNo++
        if (line.trim() !== "") onLine(line, lineNo)
      }
    }
    if (carry.trim() !== "") onLine(carry, lineNo + 1)
  } finally {
    closeSync(fd)
  }
}

const seedNdjson = (store: Store, path: string, files: string[]): SeedReport => {
  let resources = 0
  for (const file of files) {
    let batch: Obj[] = []
    const flush = () => {
      const b = batch
      batch = []
      store.tx(() => {
        for (const r of b) {
          if (typeof r.id === "string") store.update(carryNumbers(r, { ...r, id: r.id }))
          else store.create(r)
        }
      })
      resources += b.length
    }
    forEachLine(file, (line, lineNo) => {
      const r: unknown = parsed(line, file, lineNo)
      if (!isObj(r) || typeof r.resourceType !== "string")
        throw new Error(`${file}:${lineNo} is not a FHIR resource`)
      batch.push(r)
      if (batch.length >= 5000) flush()
    })
    if (batch.length > 0) flush()
  }
  return { path, kind: "ndjson", files: files.length, resources }
}

const mimeTypes: Record<string, string> = {
  ".pdf": "application/pdf",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".png": "image/png",
  ".gif": "image/gif",
  ".txt": "text/plain",
  ".html": "text/html",
  ".xml": "application/xml",
  ".dcm": "application/dicom",
}

export const contentTypeFor = (file: string): string =>
  mimeTypes[extname(file).toLowerCase()] ?? "application/octet-stream"

/** A FHIR id derived from a file name (`[A-Za-z0-9\-.]`, at most 64 characters). */
const idFor = (prefix: string, file: string): string =>
  `${prefix}${basename(file).replace(/[^A-Za-z0-9\-.]/g, "-")}`.slice(0, 64)

export const attachmentOf = (
  baseUrl: string,
  binaryId: string,
  contentType: string,
  bytes: Buffer,
  title: string,
) => ({
  contentType,
  url: `${baseUrl}/Binary/${binaryId}`,
  size: bytes.length,
  hash: createHash("sha1").update(bytes).digest("base64"),
  title,
})

const seedAttachments = (store: Store, baseUrl: string, path: string, files: string[]): SeedReport => {
  const patients: string[] = []
  for (const p of store.iterate("Patient", { limit: Math.max(files.length, 1) })) patients.push(p.id)
  let resources = 0
  store.tx(() => {
    files.forEach((file, i) => {
      const bytes = readFileSync(file)
      const contentType = contentTypeFor(file)
      const binaryId = idFor("", file)
      store.putBinary(binaryId, contentType, bytes)
      const patient = patients.length > 0 ? patients[i % patients.length] : undefined
      store.update({
        resourceType: "DocumentReference",
        id: idFor("doc-", file),
        status: "current",
        type: { text: "Attached document" },
        ...(patient !== undefined ? { subject: { reference: `Patient/${patient}` } } : {}),
        description: basename(file),
        content: [{ attachment: attachmentOf(baseUrl, binaryId, contentType, bytes, basename(file)) }],
      })
      resources += 2
    })
  })
  return { path, kind: "attachments", files: files.length, resources }
}

/**
 * What a correct import of seeded bulk data holds: every conditional reference by identifier
 * (`Practitioner?identifier=sys|v`, as the bulk sample's references are) replaced by the literal `Type/id` of
 * the resource of `store` carrying that identifier. A server stores references as given, and a stored
 * conditional reference is not one a FHIR client can follow; tests use this to build a target that holds the
 * seed as Ferry's import leaves it.
 */
export const resolveConditionalReferences = (store: Store): void => {
  const byIdentifier = new Map<string, string>()
  const bodies: Array<{ readonly id: string; readonly body: Record<string, unknown> }> = []
  for (const type of store.types()) {
    for (const r of store.iterate(type)) {
      const body = parseKeepingNumbers(r.json) as Record<string, unknown>
      bodies.push({ id: r.id, body })
      const identifiers = Array.isArray(body.identifier)
        ? (body.identifier as Array<Record<string, unknown>>)
        : []
      for (const i of identifiers)
        byIdentifier.set(`${type}?${String(i.system)}|${String(i.value)}`, `${type}/${r.id}`)
    }
  }
  for (const { id, body } of bodies) {
    const out = rewriteReferences(body, {
      reference: (site) => {
        const p = site.parsed
        return p._tag === "Conditional" && p.identifier !== undefined
          ? byIdentifier.get(`${p.type}?${String(p.identifier.system)}|${p.identifier.value}`)
          : undefined
      },
    })
    if (out.changed > 0) store.update(carryNumbers(body, { ...out.resource, id }))
  }
}
