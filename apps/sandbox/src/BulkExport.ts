/**
 * Bulk Data `$export` (STU2 with the STU3 `_until`) for the sandbox.
 *
 * Routes (below the FHIR base):
 *   GET|POST /$export, /Patient/$export, /Group/:id/$export   kick-off (needs `Prefer: respond-async`)
 *   GET      /bulk/status/:job                                202 + X-Progress + Retry-After, then 200 manifest
 *   GET      /bulk/status/:job?part=N                         [STU3] part N of a partial manifest (`link` next)
 *   DELETE   /bulk/status/:job                                cancel / release (202), then 404
 *   GET      /bulk/files/:job/:name                           NDJSON (Range → 206, Accept-Encoding: gzip)
 *
 * Design: the kick-off takes `transactionTime = store.now()` and every query runs with
 * `until = transactionTime` (the store's until is exclusive and its clock strictly increasing, so
 * nothing written after the kick-off leaks in). The job writes its files to a per-job temp dir
 * (0700/0600) straight from `store.iterate` (paged keyset reads, no cursor held across yields),
 * yielding to the event loop every 5,000 resources — a small store is fully materialised before the
 * 202 is sent. The store keeps only current versions, so a resource *updated* while a large job is
 * still being written drops out of that export rather than appearing in an older version.
 * Files are split every `resourcesPerFile` resources (`Patient.000.ndjson`, `Patient.001.ndjson`, …);
 * `deleted` (system level, when `_since` is given) holds one DELETE transaction Bundle per line.
 * Files are removed on DELETE of the status URL and when `close()` (server close) runs.
 *
 * Patient / Group level: the Patient compartment (Compartment.ts) of the patients (Group members from
 * `member[].entity`, narrowed by `patient=`), plus every Provenance whose `target` is an exported
 * resource. Supporting non-member resources (Organization, Practitioner, Medication, …) are not added,
 * and `deleted` is only filled at system level (a tombstone no longer says whose compartment it was in).
 *
 * [STU3] `organizeOutputBy=Patient` (any level; other types answer 400): the manifest carries
 * `outputOrganizedBy`, its output items have no `type`, and each file (`output.000.ndjson`, …) holds
 * resource blocks (internal/bulkOrganized.ts): a `Parameters` header pointing at the Patient, the Patient,
 * its compartment, the Provenance of the block. `count` is the file's line count, headers included.
 * A block split at `resourcesPerFile` repeats its header in the next file and the item names that file in
 * `continuesInFile`. Resources in no Patient's compartment are left out (a warning in `error` says so).
 *
 * [STU3] `allowPartialManifests=true`: the manifest comes in parts of `manifestPartSize` output items, each
 * linking to the next (`?part=N+1`); a part is published as soon as it is full (a type's files are listed
 * once the type is written), the last one when the job is done, with the `deleted` and `error` items. While
 * the job runs, the status URL's 202 carries part 1 once it is published, and a part whose successor is not
 * published yet answers 202 with what it holds so far; a published part's files can be downloaded at once.
 */
import { randomBytes } from "node:crypto"
import { closeSync, openSync, rmSync, writeSync } from "node:fs"
import { join } from "node:path"
import { isMember, memberTypes, inCompartment, r4ResourceTypes, topLevelPaths } from "./Compartment.js"
import { type Faults, faultsOf } from "./Faults.js"
import { type Ctx, FhirHttpError, outcome, type Router, sendJson } from "./Http.js"
import { addOperations } from "./internal/bulkCapability.js"
import { normalizeReference } from "./internal/References.js"
import { type BulkConfig, type BulkConfigInput, decodeBulkConfig } from "./internal/bulkConfig.js"
import { JobDirs, serveFile } from "./internal/bulkFiles.js"
import { OrganizedWriter } from "./internal/bulkOrganized.js"
import {
  type Elements,
  elementsFor,
  fromParameters,
  fromQuery,
  list,
  parseElements,
  parseInstant,
  parseTypeFilter,
  type Raw,
  single,
  splitTypeFilters,
  subset,
  TYPE_NAME,
  type TypeFilter,
} from "./internal/bulkParams.js"
import { grantOf, requestAllows, smartOf } from "./Smart.js"
import type { Store, StoredResource } from "./Store.js"

export type ExportLevel = "system" | "patient" | "group"

export interface ManifestItem {
  /** Absent in `organizeOutputBy` output (files of resource blocks, not of one type). */
  readonly type?: string
  readonly url: string
  readonly count?: number
  /** `organizeOutputBy` output: the file where this file's last block goes on. */
  readonly continuesInFile?: string
}

export interface Manifest {
  readonly transactionTime: string
  readonly request: string
  readonly requiresAccessToken: boolean
  /** [STU3] The `organizeOutputBy` type, when it was used. */
  readonly outputOrganizedBy?: string
  readonly output: ReadonlyArray<ManifestItem>
  readonly deleted?: ReadonlyArray<ManifestItem>
  readonly error: ReadonlyArray<ManifestItem>
  /** [STU3] partial manifests: the next part. */
  readonly link?: ReadonlyArray<{ readonly relation: "next"; readonly url: string }>
}

/** What a validated kick-off asks for. */
export interface ExportPlan {
  readonly level: ExportLevel
  readonly types: ReadonlyArray<string>
  /** Were the types given with `_type`? */
  readonly typesExplicit: boolean
  /** May the caller read this type? */
  readonly allowed: (type: string) => boolean
  /** Exclusive lower bound on lastUpdated (`_since`). */
  readonly since: string | undefined
  /** Exclusive upper bound: min(_until, transactionTime). */
  readonly until: string
  readonly filters: ReadonlyMap<string, ReadonlyArray<TypeFilter>>
  /** Patient ids whose compartments are exported; undefined = every patient (Patient level). */
  readonly patients: ReadonlySet<string> | undefined
  readonly elements: Elements | undefined
  /** OperationOutcome warnings for skipped parameters (lenient handling). */
  readonly warnings: ReadonlyArray<string>
  /** [STU3] `organizeOutputBy` (only `Patient` is supported). */
  readonly organizeBy: "Patient" | undefined
  /** [STU3] `allowPartialManifests=true`: the manifest comes in parts linked by `link` next (see `register`). */
  readonly partialManifests: boolean
}

interface FileEntry {
  readonly path: string
  readonly type: string
}

interface Job {
  readonly id: string
  readonly dir: string
  readonly request: string
  readonly transactionTime: string
  readonly since: string | undefined
  readonly requiresAccessToken: boolean
  readonly organizeBy: string | undefined
  /** Output items per manifest part, when the kick-off allowed partial manifests. */
  readonly partSize: number | undefined
  state: "running" | "done" | "failed"
  cancelled: boolean
  polls: number
  written: number
  total: number
  completedAt: number
  /** Renewable URLs (fault switch): when each manifest generation was sent (`?gen=N` is entry N - 1). */
  readonly issued: Array<number>
  /** `bulk.signedUrls`: the `sig` every file URL of this job carries (undefined: files need the token). */
  readonly signature: string | undefined
  /** The client that started the job (auth on), the only one its status and files are for. */
  readonly owner: string | undefined
  failure: string | undefined
  readonly output: Array<ManifestItem>
  readonly deleted: Array<ManifestItem>
  readonly error: Array<ManifestItem>
  readonly files: Map<string, FileEntry>
}

const OUTPUT_FORMATS = new Set(["application/fhir+ndjson", "application/ndjson", "ndjson"])
const KNOWN = new Set([
  "_outputFormat",
  "_type",
  "_since",
  "_until",
  "_typeFilter",
  "patient",
  "includeAssociatedData",
  "_elements",
  "organizeOutputBy",
  "allowPartialManifests",
])
const ASSOCIATED = new Set(["LatestProvenanceResources", "RelevantProvenanceResources"])
const YIELD_EVERY = 5_000
const FLUSH_BYTES = 1 << 20

const bad = (diagnostics: string): FhirHttpError => new FhirHttpError(400, "invalid", diagnostics)

/** Parses the `Prefer` header: respond-async, handling=strict|lenient. */
export const parsePrefer = (header: string | undefined): { respondAsync: boolean; strict: boolean } => {
  const tokens = (header ?? "")
    .split(/[,;]/)
    .map((t) => t.trim().toLowerCase().replace(/\s+/g, ""))
    .filter((t) => t !== "")
  return { respondAsync: tokens.includes("respond-async"), strict: tokens.includes("handling=strict") }
}

const patientIdOf = (reference: string, baseUrl: string): string | undefined => {
  const norm = normalizeReference(reference, baseUrl)
  return norm?.startsWith("Patient/") ? norm.slice("Patient/".length) : undefined
}

const groupMembers = (store: Store, groupId: string, baseUrl: string): Set<string> => {
  const group = store.read("Group", groupId)
  if (group === undefined) throw new FhirHttpError(404, "not-found", `Group/${groupId} does not exist.`)
  const members =
    (JSON.parse(group.json) as { member?: Array<{ entity?: { reference?: unknown } }> }).member ?? []
  const ids = new Set<string>()
  for (const m of members) {
    const ref = m.entity?.reference
    if (typeof ref !== "string") continue
    const id = patientIdOf(ref, baseUrl)
    if (id !== undefined) ids.add(id)
  }
  return ids
}

/** Validates a kick-off into a plan; throws FhirHttpError 400/403/404 with a clear diagnostic. */
export const planExport = (options: {
  readonly level: ExportLevel
  readonly raw: Raw
  readonly strict: boolean
  readonly method: string
  readonly store: Store
  readonly transactionTime: string
  readonly baseUrl: string
  readonly groupId?: string
  readonly allowed: (type: string) => boolean
}): ExportPlan => {
  const { level, raw, strict, store } = options
  const warnings: Array<string> = []
  const skip = (message: string): void => {
    if (strict) throw bad(message)
    warnings.push(`${message} The parameter was ignored.`)
  }
  for (const name of raw.keys()) {
    if (!KNOWN.has(name)) skip(`Unknown $export parameter ${name}.`)
  }
  const format = single(raw, "_outputFormat")
  if (format !== undefined && !OUTPUT_FORMATS.has(format)) {
    throw bad(`_outputFormat ${format} is not supported; use application/fhir+ndjson.`)
  }
  const organizeRaw = single(raw, "organizeOutputBy")
  if (organizeRaw !== undefined && organizeRaw !== "Patient") {
    throw new FhirHttpError(
      400,
      "not-supported",
      `organizeOutputBy ${organizeRaw} is not supported by this server; use organizeOutputBy=Patient or leave it out.`,
    )
  }
  const organizeBy = organizeRaw === undefined ? undefined : ("Patient" as const)
  const partialRaw = single(raw, "allowPartialManifests")
  if (partialRaw !== undefined && partialRaw !== "true" && partialRaw !== "false") {
    throw bad(`allowPartialManifests must be true or false, not ${partialRaw}.`)
  }
  for (const v of list(raw, "includeAssociatedData") ?? []) {
    if (!ASSOCIATED.has(v))
      skip(`includeAssociatedData ${v} is not supported (LatestProvenanceResources is).`)
  }
  const sinceRaw = single(raw, "_since")
  const untilRaw = single(raw, "_until")
  const since = sinceRaw === undefined ? undefined : parseInstant("_since", sinceRaw)
  const untilParam = untilRaw === undefined ? undefined : parseInstant("_until", untilRaw)
  const until =
    untilParam !== undefined && untilParam < options.transactionTime ? untilParam : options.transactionTime
  if (since !== undefined && untilParam !== undefined && since >= untilParam) {
    throw bad("_since must be before _until.")
  }

  // Patients
  let patients: Set<string> | undefined
  if (level === "group") patients = groupMembers(store, options.groupId!, options.baseUrl)
  const patientRefs = list(raw, "patient")
  if (patientRefs !== undefined) {
    if (options.method !== "POST") throw bad("The patient parameter is only accepted in a POST kick-off.")
    if (level === "system") throw bad("The patient parameter is not valid in a system-level $export.")
    const wanted = new Set<string>()
    for (const ref of patientRefs) {
      const id = patientIdOf(ref, options.baseUrl)
      if (id === undefined) throw bad(`patient ${ref} is not a Patient reference.`)
      if (store.read("Patient", id) === undefined) throw bad(`patient ${ref} does not exist.`)
      if (patients !== undefined && !patients.has(id)) {
        throw bad(`patient ${ref} is not a member of Group/${options.groupId}.`)
      }
      wanted.add(id)
    }
    patients = wanted
  }

  // Types
  const requested = list(raw, "_type")
  let types: Array<string>
  if (requested !== undefined) {
    types = []
    for (const t of new Set(requested)) {
      if (!TYPE_NAME.test(t) || !r4ResourceTypes.has(t)) {
        skip(`_type ${t} is not an R4 resource type.`)
        continue
      }
      if (level !== "system" && !isMember(t)) {
        skip(`_type ${t} is not in the Patient compartment, so a ${level}-level export cannot return it.`)
        continue
      }
      if (!options.allowed(t)) {
        throw new FhirHttpError(403, "forbidden", `The access token does not allow reading ${t}.`)
      }
      types.push(t)
    }
  } else {
    const present = store.types()
    types = present.filter((t) => (level === "system" || isMember(t)) && options.allowed(t))
    if (level !== "system") types = memberTypes.filter((t) => types.includes(t))
  }
  if (level !== "system" && types.includes("Provenance")) {
    // last, so it can follow everything exported before it
    types = [...types.filter((t) => t !== "Provenance"), "Provenance"]
  }

  // _typeFilter
  const filters = new Map<string, Array<TypeFilter>>()
  for (const value of raw.get("_typeFilter") ?? []) {
    for (const query of splitTypeFilters(value)) {
      const f = parseTypeFilter(query)
      if (!types.includes(f.type)) continue // filters for types not exported do not matter
      filters.set(f.type, [...(filters.get(f.type) ?? []), f])
    }
  }

  const elementValues = list(raw, "_elements")
  const elements = elementValues === undefined ? undefined : parseElements(elementValues)
  return {
    level,
    types,
    typesExplicit: requested !== undefined,
    allowed: options.allowed,
    since,
    until,
    filters,
    patients,
    elements,
    warnings,
    organizeBy,
    partialManifests: partialRaw === "true",
  }
}

/** Does a Provenance target a resource of a compartment type (a Patient or data about one)? */
const targetsCompartment = (provenance: Record<string, unknown>): boolean => {
  const targets = Array.isArray(provenance.target)
    ? (provenance.target as Array<{ reference?: unknown }>)
    : []
  return targets.some((t) => {
    const m = typeof t.reference === "string" ? /(?:^|\/)([A-Z][A-Za-z]+)\/[^/]+$/.exec(t.reference) : null
    return m !== null && isMember(m[1]!)
  })
}

const OO = (severity: string, code: string, diagnostics: string): string =>
  JSON.stringify(outcome(severity, code, diagnostics))

/** Buffers lines and writes them to numbered files of at most `perFile` lines. */
class TypeWriter {
  private fd: number | undefined
  private index = 0
  private inFile = 0
  private skip = 0
  private buffer: Array<string> = []
  private bytes = 0
  private current: { name: string; path: string } | undefined
  readonly done: Array<{ name: string; path: string; count: number }> = []

  constructor(
    private readonly dir: string,
    private readonly prefix: string,
    private readonly perFile: number,
    private readonly faults: Faults | undefined,
    private readonly faultType: string | undefined,
  ) {}

  add(line: string): void {
    if (this.fd === undefined) this.open()
    this.inFile++
    if (this.skip > 0) this.skip--
    else {
      this.buffer.push(line, "\n")
      this.bytes += line.length + 1
      if (this.bytes >= FLUSH_BYTES) this.flush()
    }
    if (this.inFile >= this.perFile) this.closeFile()
  }

  private open(): void {
    const name = `${this.prefix}.${String(this.index).padStart(3, "0")}.ndjson`
    const path = join(this.dir, name)
    this.fd = openSync(path, "w", 0o600)
    this.current = { name, path }
    this.inFile = 0
    this.skip =
      this.faultType === undefined ? 0 : (this.faults?.shortFileMissing(this.faultType, this.dir) ?? 0)
  }

  private flush(): void {
    if (this.fd !== undefined && this.buffer.length > 0) writeSync(this.fd, this.buffer.join(""))
    this.buffer = []
    this.bytes = 0
  }

  private closeFile(): void {
    this.flush()
    if (this.fd !== undefined) closeSync(this.fd)
    this.done.push({ ...this.current!, count: this.inFile })
    this.fd = undefined
    this.index++
  }

  finish(): void {
    if (this.fd !== undefined) this.closeFile()
  }

  /** Closes without recording (cancel / failure). */
  abort(): void {
    if (this.fd !== undefined) closeSync(this.fd)
    this.fd = undefined
  }
}

/** What `manifestPart` needs of a job. */
export interface PartSource {
  readonly id: string
  readonly state: "running" | "done" | "failed"
  readonly transactionTime: string
  readonly request: string
  readonly requiresAccessToken: boolean
  readonly organizeBy: string | undefined
  readonly since: string | undefined
  readonly partSize: number | undefined
  readonly output: ReadonlyArray<ManifestItem>
  readonly deleted: ReadonlyArray<ManifestItem>
  readonly error: ReadonlyArray<ManifestItem>
}

/**
 * Manifest part `n` (1-based) of a job as far as it is known, or undefined while it is not published (or when
 * the job has no such part). Without partial manifests there is one part, published when the job is done.
 * With them (K = `partSize`), part n holds output items (n-1)·K … n·K-1 and is published once it is full;
 * once the job is done the rest are published, the last part carrying the `deleted` and `error` items (a part
 * of their own when the output filled its last part, which may have been served already). A published part
 * changes only by gaining its `link` next, when part n+1 is published. `final`: it can no longer change.
 */
export const manifestPart = (
  job: PartSource,
  n: number,
  baseUrl: string,
  link: <T extends { readonly url: string }>(items: ReadonlyArray<T>) => ReadonlyArray<T>,
): { readonly manifest: Manifest; readonly final: boolean } | undefined => {
  const done = job.state === "done"
  const size = job.partSize ?? Number.POSITIVE_INFINITY
  const outputParts = Math.ceil(job.output.length / size)
  const tail = job.deleted.length + job.error.length > 0
  const published = done
    ? Math.max(1, outputParts + (tail && job.output.length > 0 && job.output.length % size === 0 ? 1 : 0))
    : job.partSize === undefined
      ? 0
      : Math.floor(job.output.length / size)
  if (!Number.isInteger(n) || n < 1 || n > published) return undefined
  const last = done && n === published
  const manifest: Manifest = {
    transactionTime: job.transactionTime,
    request: job.request,
    requiresAccessToken: job.requiresAccessToken,
    ...(job.organizeBy !== undefined ? { outputOrganizedBy: job.organizeBy } : {}),
    output: link(job.partSize === undefined ? job.output : job.output.slice((n - 1) * size, n * size)),
    ...(job.since !== undefined ? { deleted: last ? link(job.deleted) : [] } : {}),
    error: last ? link(job.error) : [],
    ...(n < published
      ? { link: [{ relation: "next" as const, url: `${baseUrl}/bulk/status/${job.id}?part=${n + 1}` }] }
      : {}),
  }
  return { manifest, final: done || n < published }
}

const yieldNow = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

export interface BulkExport {
  /** Removes every job's files (call on server close). */
  readonly close: () => void
  /** Number of jobs known (running, done or failed). */
  readonly jobCount: () => number
}

/**
 * Installs the `$export` routes. `options` (or the config's `bulk` section) tunes file size and
 * polling; see internal/bulkConfig.ts. Returns a handle whose `close()` must run on server close.
 */
export const register = (
  router: Router,
  store: Store,
  config: { readonly bulk?: unknown },
  options?: BulkConfigInput,
): BulkExport => {
  const settings: BulkConfig = decodeBulkConfig({ ...(config.bulk as object | undefined), ...options })
  const dirs = new JobDirs(settings.tempDir, "ferry-sandbox-export-")
  const jobs = new Map<string, Job>()
  let sequence = 0
  const faults = faultsOf(router)

  const run = async (job: Job, plan: ExportPlan, baseUrl: string): Promise<void> => {
    const fileUrl = (name: string) =>
      `${baseUrl}/bulk/files/${job.id}/${name}${job.signature !== undefined ? `?sig=${job.signature}` : ""}`
    const range = {
      until: plan.until,
      ...(plan.since !== undefined ? { lastUpdated: [{ op: "gt" as const, value: plan.since }] } : {}),
    }
    const patientTargets =
      plan.patients === undefined ? undefined : [...plan.patients].map((id) => `Patient/${id}`)
    const exportedRefs =
      patientTargets !== undefined && plan.types.includes("Provenance") ? new Set<string>() : undefined
    const source = (type: string): Iterable<StoredResource> => {
      if (plan.level === "system" || patientTargets === undefined) return store.iterate(type, range)
      if (type === "Provenance") {
        // every Provenance whose target is in the compartment (includeAssociatedData default)
        const targets = new Set([...patientTargets, ...(exportedRefs ?? [])])
        return store.iterate("Provenance", {
          ...range,
          referencing: { targets: [...targets], paths: ["target"] },
        })
      }
      if (type === "Patient") {
        const ids = new Set(plan.patients)
        for (const r of store.iterate("Patient", {
          until: plan.until,
          referencing: { targets: patientTargets, paths: ["link"] },
        })) {
          ids.add(r.id)
        }
        return store.iterate("Patient", { ...range, ids: [...ids] })
      }
      return store.iterate(type, {
        ...range,
        referencing: { targets: patientTargets, paths: [...topLevelPaths(type)] },
      })
    }
    let sinceYield = 0
    const pause = async (): Promise<boolean> => {
      if (++sinceYield >= YIELD_EVERY) {
        sinceYield = 0
        await yieldNow()
      }
      return job.cancelled
    }
    const allPatients = plan.level !== "system" && plan.patients === undefined
    for (const type of plan.types) {
      job.total += store.count(type, range)
    }
    const errors: Array<string> = plan.warnings.map((w) => OO("warning", "not-supported", w))

    /**
     * organizeOutputBy=Patient: one block per patient (all patients, or the Group's / `patient=` ones):
     * header, the Patient, the rest of its compartment (the same filters as a plain export), then the
     * Provenance whose target is in the block. A resource in two patients' compartments is in both blocks.
     * Resources in no Patient's compartment are left out (the IG allows it); a system-level export says so
     * in its error file.
     */
    const organized = async (): Promise<boolean> => {
      const writer = new OrganizedWriter(
        job.dir,
        Math.max(3, settings.resourcesPerFile),
        settings.organizedRepeatOwner,
        settings.organizedCountHeaders,
      )
      const patientIds =
        plan.patients !== undefined
          ? [...plan.patients]
          : Array.from(store.iterate("Patient", { until: plan.until }), (r) => r.id)
      const blockTypes = plan.types.filter((t) => t !== "Patient" && t !== "Provenance" && isMember(t))
      /** The resource as exported, or undefined when a filter leaves it out. */
      const exported = (
        type: string,
        stored: StoredResource,
        patient: string,
      ): { line: string; resource: Record<string, unknown> } | undefined => {
        const resource = JSON.parse(stored.json) as Record<string, unknown>
        if (type !== "Provenance" && !inCompartment(resource as { resourceType: string }, new Set([patient])))
          return undefined
        const filters = plan.filters.get(type)
        if (filters !== undefined && !filters.some((f) => f.test(resource, stored))) return undefined
        const keep = plan.elements === undefined ? undefined : elementsFor(plan.elements, type)
        // the stored text when nothing is left out (its numbers as written: see core's NumberText.parseKeepingNumbers)
        return { line: keep === undefined ? stored.json : JSON.stringify(subset(resource, keep)), resource }
      }
      for (const patient of patientIds) {
        const owner = `Patient/${patient}`
        writer.startBlock(owner)
        const inBlock = new Set<string>()
        if (plan.types.includes("Patient")) {
          // the owner first, then the patients that link to it (its compartment)
          const linked = Array.from(
            store.iterate("Patient", {
              until: plan.until,
              referencing: { targets: [owner], paths: ["link"] },
            }),
            (r) => r.id,
          ).filter((id) => id !== patient)
          for (const stored of store.iterate("Patient", { ...range, ids: [patient, ...linked] })) {
            job.written++
            if (await pause()) return false
            const out = exported("Patient", stored, patient)
            if (out === undefined) continue
            inBlock.add(`Patient/${stored.id}`)
            writer.add(out.line, stored.id === patient)
          }
        }
        for (const type of blockTypes) {
          for (const stored of store.iterate(type, {
            ...range,
            referencing: { targets: [owner], paths: [...topLevelPaths(type)] },
          })) {
            job.written++
            if (await pause()) return false
            const out = exported(type, stored, patient)
            if (out === undefined) continue
            inBlock.add(`${type}/${stored.id}`)
            writer.add(out.line)
          }
        }
        if (plan.types.includes("Provenance")) {
          for (const stored of store.iterate("Provenance", {
            ...range,
            referencing: { targets: [owner, ...inBlock], paths: ["target"] },
          })) {
            job.written++
            if (await pause()) return false
            const out = exported("Provenance", stored, patient)
            if (out !== undefined) writer.add(out.line)
          }
        }
      }
      writer.finish()
      const files = writer.done
      files.forEach((f, i) => {
        job.files.set(f.name, { path: f.path, type: "Parameters" })
        const next = f.continues ? files[i + 1] : undefined
        job.output.push({
          url: fileUrl(f.name),
          count: f.count,
          ...(next !== undefined ? { continuesInFile: fileUrl(next.name) } : {}),
        })
      })
      const outside = plan.types
        .filter((t) => !isMember(t))
        .map((t) => [t, store.count(t, range)] as const)
        .filter(([, n]) => n > 0)
      if (outside.length > 0) {
        errors.push(
          OO(
            "warning",
            "not-supported",
            `organizeOutputBy=Patient: resources in no Patient's compartment are not exported (${outside
              .map(([t, n]) => `${t}: ${n}`)
              .join(
                ", ",
              )}, and compartment resources that reference no Patient); export without organizeOutputBy to get them.`,
          ),
        )
      }
      return true
    }

    if (plan.organizeBy !== undefined && !(await organized())) return
    for (const type of plan.organizeBy === undefined ? plan.types : []) {
      const filters = plan.filters.get(type)
      const keep = plan.elements === undefined ? undefined : elementsFor(plan.elements, type)
      const parse =
        filters !== undefined ||
        keep !== undefined ||
        type === "Binary" ||
        (allPatients && type !== "Patient")
      const writer = new TypeWriter(job.dir, type, settings.resourcesPerFile, faults, type)
      for (const stored of source(type)) {
        job.written++
        if (await pause()) return writer.abort()
        if (!parse) {
          writer.add(stored.json)
          exportedRefs?.add(`${type}/${stored.id}`)
          continue
        }
        let resource = JSON.parse(stored.json) as Record<string, unknown>
        if (allPatients && type === "Provenance" && !targetsCompartment(resource)) continue
        if (
          allPatients &&
          type !== "Patient" &&
          type !== "Provenance" &&
          !inCompartment(resource as { resourceType: string }, undefined)
        )
          continue
        if (filters !== undefined && !filters.some((f) => f.test(resource, stored))) continue
        exportedRefs?.add(`${type}/${stored.id}`)
        let changed = false
        if (type === "Binary" && resource.data === undefined) {
          const bin = store.getBinary(stored.id)
          if (bin !== undefined && bin.bytes.length > 0) resource.data = bin.bytes.toString("base64")
          changed = resource.data !== undefined
        }
        if (keep !== undefined) resource = subset(resource, keep)
        // the stored text when nothing changed (its numbers as written: see core's NumberText.parseKeepingNumbers)
        writer.add(keep === undefined && !changed ? stored.json : JSON.stringify(resource))
      }
      writer.finish()
      const toError = faults.outputToError(type)
      for (const f of writer.done) {
        if (toError) {
          errors.push(
            OO("error", "exception", `Export of ${f.name} (${f.count} ${type}) failed (sandbox fault).`),
          )
          rmSync(f.path, { force: true })
          continue
        }
        job.files.set(f.name, { path: f.path, type })
        job.output.push({ type, url: fileUrl(f.name), count: f.count })
      }
    }
    if (plan.since !== undefined && plan.level === "system") {
      const deletedTypes = plan.typesExplicit
        ? plan.types
        : [...r4ResourceTypes].filter((t) => plan.allowed(t))
      const writer = new TypeWriter(job.dir, "deleted", settings.resourcesPerFile, undefined, undefined)
      for (const type of [...deletedTypes].sort()) {
        for (const d of store.deleted(type, { since: plan.since, until: plan.until })) {
          if (await pause()) return writer.abort()
          if (d.deletedAt <= plan.since || store.read(type, d.id) !== undefined) continue
          writer.add(
            JSON.stringify({
              resourceType: "Bundle",
              type: "transaction",
              entry: [{ request: { method: "DELETE", url: `${type}/${d.id}` } }],
            }),
          )
        }
      }
      writer.finish()
      for (const f of writer.done) {
        job.files.set(f.name, { path: f.path, type: "Bundle" })
        job.deleted.push({ type: "Bundle", url: fileUrl(f.name), count: f.count })
      }
    }
    if (errors.length > 0) {
      const writer = new TypeWriter(
        job.dir,
        "OperationOutcome",
        Number.MAX_SAFE_INTEGER,
        undefined,
        undefined,
      )
      for (const e of errors) writer.add(e)
      writer.finish()
      for (const f of writer.done) {
        job.files.set(f.name, { path: f.path, type: "OperationOutcome" })
        job.error.push({ type: "OperationOutcome", url: fileUrl(f.name) })
      }
    }
    job.state = "done"
    job.completedAt = Date.now()
  }

  const kickoff = (level: ExportLevel) => async (ctx: Ctx) => {
    const prefer = parsePrefer(String(ctx.req.headers.prefer ?? ""))
    if (!prefer.respondAsync) throw bad("$export needs the header Prefer: respond-async.")
    const method = ctx.req.method ?? "GET"
    const raw = method === "POST" ? fromParameters(await ctx.json()) : fromQuery(ctx.url)
    if (level === "group" && !requestAllows(ctx.req, "Group", "r")) {
      throw new FhirHttpError(403, "forbidden", "The access token does not allow reading Group.")
    }
    const transactionTime = store.now()
    const plan = planExport({
      level,
      raw,
      strict: prefer.strict,
      method,
      store,
      transactionTime,
      baseUrl: ctx.baseUrl,
      ...(level === "group" ? { groupId: ctx.params.id! } : {}),
      allowed: (type) => requestAllows(ctx.req, type, "r"),
    })
    const id = `${Date.now().toString(36)}${(++sequence).toString(36)}`
    const job: Job = {
      id,
      dir: dirs.make(id),
      request: ctx.url.href,
      transactionTime,
      since: plan.since,
      requiresAccessToken: smartOf(router) !== undefined && !settings.signedUrls,
      signature: settings.signedUrls ? randomBytes(16).toString("hex") : undefined,
      owner: grantOf(ctx.req)?.clientId,
      organizeBy: plan.organizeBy,
      partSize: plan.partialManifests ? settings.manifestPartSize : undefined,
      state: "running",
      cancelled: false,
      polls: 0,
      written: 0,
      total: 0,
      completedAt: 0,
      issued: [],
      failure: undefined,
      output: [],
      deleted: [],
      error: [],
      files: new Map(),
    }
    jobs.set(id, job)
    run(job, plan, ctx.baseUrl).catch((e: unknown) => {
      job.state = "failed"
      job.failure = e instanceof Error ? e.message : String(e)
    })
    sendJson(ctx, 202, outcome("information", "informational", `Export job ${id} accepted.`), {
      "Content-Location": `${ctx.baseUrl}/bulk/status/${id}`,
    })
  }

  /**
   * The job a status, DELETE or file request names. With auth on, only the client that started it may see it
   * (another client's token gets the 404 of a job that is not there); a signed file link needs no token.
   */
  const jobOf = (ctx: Ctx): Job => {
    const job = jobs.get(ctx.params.job ?? "")
    const caller = grantOf(ctx.req)?.clientId
    if (job === undefined || job.cancelled || (caller !== undefined && job.owner !== caller)) {
      throw new FhirHttpError(
        404,
        "not-found",
        `Export job ${ctx.params.job} does not exist (or was deleted).`,
      )
    }
    return job
  }

  addOperations(router, [
    { name: "export", definition: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export" },
    {
      name: "patient-export",
      definition: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
    },
    { name: "group-export", definition: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export" },
  ])

  for (const [pattern, level] of [
    ["/$export", "system"],
    ["/Patient/$export", "patient"],
    ["/Group/:id/$export", "group"],
  ] as const) {
    router.on("GET", pattern, kickoff(level))
    router.on("POST", pattern, kickoff(level))
  }

  router.on("GET", "/bulk/status/:job", (ctx) => {
    const job = jobOf(ctx)
    if (faults.failJobs && job.state !== "failed") {
      job.state = "failed"
      job.failure = "it could not be completed (the sandbox's failJobs fault)"
    }
    // a failed job is not a transient failure of the status request: not `exception` (a child of `transient`)
    if (job.state === "failed") {
      throw new FhirHttpError(500, "processing", `Export job ${job.id} failed: ${job.failure}`)
    }
    const partParam = ctx.url.searchParams.get("part")
    const n = partParam === null ? 1 : Number(partParam)
    const waiting = (body: Manifest | undefined) => {
      const pct = job.total === 0 ? 0 : Math.min(99, Math.floor((100 * job.written) / job.total))
      ctx.res.writeHead(202, {
        "X-Progress": `${job.state === "running" ? "exporting" : "finishing"}: ${job.written} of ${job.total} resources (${pct}%)`,
        "Retry-After": String(settings.retryAfterSeconds),
        ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
      })
      ctx.res.end(body !== undefined ? JSON.stringify(body) : undefined)
    }
    if (n === 1 && (job.state === "running" || job.polls < settings.pollsBeforeDone)) {
      job.polls++
      // [STU3] a 202 may carry the part of the manifest that is published so far
      return waiting(manifestPart(job, 1, ctx.baseUrl, (items) => items)?.manifest)
    }
    const known = manifestPart(job, n, ctx.baseUrl, (items) => items)
    if (known === undefined) {
      if (job.state === "done")
        throw new FhirHttpError(404, "not-found", `Export job ${job.id} has no manifest part ${partParam}.`)
      return waiting(undefined)
    }
    if (!known.final) return waiting(known.manifest)
    // Renewable URLs (fault switch): this manifest's links are new ones, valid from now.
    const renew = faults?.renewableUrls() === true
    if (renew) job.issued.push(Date.now())
    const gen = job.issued.length
    const link = <T extends { readonly url: string }>(items: ReadonlyArray<T>): ReadonlyArray<T> =>
      renew
        ? items.map((i) => ({ ...i, url: `${i.url}${i.url.includes("?") ? "&" : "?"}gen=${gen}` }))
        : items
    sendJson(ctx, 200, manifestPart(job, n, ctx.baseUrl, link)!.manifest, {
      "Content-Type": "application/json",
      Expires: new Date((job.completedAt || Date.now()) + settings.fileLifetimeSeconds * 1000).toUTCString(),
    })
  })

  router.on("DELETE", "/bulk/status/:job", (ctx) => {
    const job = jobOf(ctx)
    job.cancelled = true
    dirs.remove(job.id)
    sendJson(ctx, 202, outcome("information", "informational", `Export job ${job.id} deleted.`))
  })

  router.on("GET", "/bulk/files/:job/:name", async (ctx) => {
    const job = jobOf(ctx)
    // a file is listed (and served) once it is written: before the job is done only in a partial manifest
    const file = job.files.get(ctx.params.name ?? "")
    if (file === undefined)
      throw new FhirHttpError(404, "not-found", `No file ${ctx.params.name} in job ${job.id}.`)
    // a signed link is its own credential (Smart lets a request with `sig` through without a token)
    const sig = ctx.url.searchParams.get("sig")
    if (sig !== null && sig !== job.signature)
      throw new FhirHttpError(
        403,
        "forbidden",
        `The signature of this link to ${ctx.params.name} is not valid.`,
      )
    // `?gen=N`: a renewable URL of the N-th manifest, expiring from when that manifest was sent
    const gen = ctx.url.searchParams.get("gen")
    const issued = gen === null ? job.completedAt || Date.now() : job.issued[Number(gen) - 1]
    if (issued === undefined)
      throw new FhirHttpError(404, "not-found", `No link generation ${gen} for job ${job.id}.`)
    await serveFile(
      ctx,
      file.path,
      { key: `${job.id}/${ctx.params.name}`, type: file.type, completedAt: issued },
      faults,
    )
  })

  return {
    close: () => {
      for (const job of jobs.values()) job.cancelled = true
      dirs.close()
    },
    jobCount: () => jobs.size,
  }
}
