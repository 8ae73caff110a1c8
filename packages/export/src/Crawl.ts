/**
 * Search crawl for sources without `$export`: pages through `[type]?_count=n` (following `next` links)
 * for every searchable type of the CapabilityStatement, or, at Patient/Group level, through the patient
 * compartment (`[type]?<param>=Patient/<a>,Patient/<b>,…` for each member type, linking parameter and batch
 * of up to 50 patients, or per patient where the server does not answer a batch as it answers each of its
 * patients: `batchedSearch`; de-duplicated by id). Writes the same archive files as a bulk export
 * (`data/<Type>.<n>.ndjson`); finished types are journaled and skipped on a rerun. A crawl with no type to search fails rather than write an empty archive;
 * a CapabilityStatement of another FHIR version than R4 gives a warning.
 */
import * as NFS from "node:fs"
import * as Path from "node:path"
import { HttpClientRequest } from "@effect/platform"
import * as Archive from "@ferry/archive/Archive"
import type { ArchiveError } from "@ferry/archive/ArchiveError"
import * as CapabilityStatement from "@ferry/core/CapabilityStatement"
import type { AuthError, FhirError } from "@ferry/core/Errors"
import { type FhirClient, summaryCount } from "@ferry/core/FhirClient"
import { redactUrl } from "@ferry/core/Http"
import type { Resource } from "@ferry/core/Ids"
import { Clock, Effect, Option, Stream } from "effect"
import { ExportError } from "./ExportError.js"
import { type ExportParams, groupOf } from "./Kickoff.js"
import { type ArchiveDir, type ArchiveFile, fsTry } from "./internal/ArchiveDir.js"
import { isMember, patientCompartment } from "./internal/compartment.js"
import { DigestSet, digest16 } from "@ferry/core/DigestSet"

export type CrawledFile = ArchiveFile & { readonly kind: "output" }

export interface CrawlOptions {
  readonly concurrency: number
  /** `_count` per page (default 500). */
  readonly pageSize?: number
  /** The types about to be crawled (one file each, unless empty). */
  readonly onPlan?: (types: ReadonlyArray<string>) => Effect.Effect<void, ExportError | ArchiveError>
  /** A type's file is written (not called for files an earlier run wrote). */
  readonly onFile?: (file: CrawledFile) => Effect.Effect<void, ExportError | ArchiveError>
  /** A type had no resources: no file. */
  readonly onEmpty?: (type: string) => Effect.Effect<void, ExportError | ArchiveError>
  /** gzip the data files. */
  readonly gzip?: boolean
  /** Something the user should know about the archive (one sentence). */
  readonly onWarning?: (detail: string) => Effect.Effect<void, ExportError | ArchiveError>
  /** The transactionTime an earlier run of this crawl recorded: a resumed crawl's data starts there. */
  readonly transactionTime?: string
  /** The crawl's transactionTime, before the first type is crawled (to be journaled for a resumed run). */
  readonly onTransactionTime?: (transactionTime: string) => Effect.Effect<void, ExportError | ArchiveError>
  /**
   * The crawl can run (it has types to search): called once, before anything is journaled or written, so a
   * crawl refused before it (no type to search) leaves nothing a rerun with other options would trip over.
   */
  readonly onStart?: Effect.Effect<void, ExportError | ArchiveError>
}

/**
 * A warning when the CapabilityStatement declares a FHIR version other than R4 (4.0.x), as `ferry plan` warns;
 * undefined when it declares R4 or no version.
 */
export const versionWarning = (cs: CapabilityStatement.CapabilityStatement): string | undefined =>
  cs.fhirVersion !== undefined && !cs.fhirVersion.startsWith("4.0")
    ? `the source declares FHIR ${cs.fhirVersion}; Ferry moves FHIR R4 (4.0.x) data, and resources of another version may not load into an R4 server`
    : undefined

/**
 * The time an archive's data reaches: the server's `time`, or `until` when that is earlier (a later
 * `--since auto` must start where this data ends, not at the time of the export).
 */
export const untilClamped = (time: string, until: string | undefined): string =>
  until !== undefined && Date.parse(until) < Date.parse(time)
    ? new Date(Date.parse(until)).toISOString()
    : time

export interface CrawlResult {
  readonly transactionTime: string
  readonly files: ReadonlyArray<CrawledFile>
}

const patientId = (ref: string): string | undefined => {
  const m = /(?:^|\/)Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/.*)?$/.exec(ref)
  return m?.[1]
}

/** The server's clock (Date header of a metadata read), so `--since auto` chains use server time. */
const serverTime = (client: FhirClient) =>
  client.request(HttpClientRequest.get("metadata")).pipe(
    Effect.tap((r) => Effect.ignore(r.text)),
    Effect.flatMap((r) => {
      const date = r.headers.date === undefined ? Number.NaN : Date.parse(r.headers.date)
      return Number.isNaN(date) ? Clock.currentTimeMillis : Effect.succeed(date)
    }),
    Effect.map((ms) => new Date(ms).toISOString()),
  )

/**
 * An instant written to the millisecond at least (`…T10:51:00Z` → `…T10:51:00.000Z`, `.5` → `.500`). A search
 * compares dates by the precision they are written in: `_lastUpdated=gt…T10:51:00Z` means after the whole
 * second 10:51:00, where `_since` means after the instant, so every change within that second would be lost.
 */
export const toMillisecond = (instant: string): string => {
  const m = /^(.*T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$/.exec(instant)
  if (m === null) return instant
  const fraction = m[2] ?? ""
  return `${m[1]}.${fraction.length >= 3 ? fraction : fraction.padEnd(3, "0")}${m[3]}`
}

/** `_since` / `_until` as search bounds on `_lastUpdated` (after, and at or before). */
const timeParams = (p: ExportParams): Record<string, ReadonlyArray<string>> => {
  const bounds = [
    ...(p.since !== undefined ? [`gt${toMillisecond(p.since)}`] : []),
    ...(p.until !== undefined ? [`le${toMillisecond(p.until)}`] : []),
  ]
  return bounds.length > 0 ? { _lastUpdated: bounds } : {}
}

type Params = Readonly<Record<string, ReadonlyArray<string>>>

/** Search parameters put together, values of the same name kept side by side. */
const merged = (...all: ReadonlyArray<Params>): Params => {
  const out: Record<string, Array<string>> = {}
  for (const p of all) for (const [k, v] of Object.entries(p)) out[k] = [...(out[k] ?? []), ...v]
  return out
}

/**
 * The search parameters of one type's crawl that carry the export's `_typeFilter` (its one query for that
 * type, if any) and `_elements` (the names without a type, and `Type.name` of this type). Undefined when
 * this type has `_typeFilter` queries a single search cannot express (several are OR-ed together).
 */
export const typeParams = (p: ExportParams, type: string): Params | undefined => {
  const filters = p.typeFilters.filter((f) => f.startsWith(`${type}?`))
  if (filters.length > 1) return undefined
  const query = [...new URLSearchParams(filters[0]?.slice(type.length + 1) ?? "")]
  const elements = p.elements.flatMap((e) =>
    !e.includes(".") ? [e] : e.startsWith(`${type}.`) ? [e.slice(type.length + 1)] : [],
  )
  return merged(
    ...query.map(([k, v]) => ({ [k]: [v] })),
    elements.length > 0 ? { _elements: [elements.join(",")] } : {},
  )
}

/**
 * What a crawl cannot do of what was asked (undefined: it can do all of it): the files of a crawl are one
 * per type, its searches are the server's own, and `$export`-only parameters mean nothing there.
 */
export const unsupported = (p: ExportParams): string | undefined => {
  if (p.organizeOutputBy !== undefined) return "--organize-output-by (a crawl writes one file per type)"
  if (p.includeAssociatedData.length > 0) return "--include-associated-data (an $export parameter)"
  if (p.custom.length > 0) return `--param ${p.custom[0]![0]} (an $export parameter)`
  const multi = p.types.length > 0 ? p.types : [...new Set(p.typeFilters.map((f) => f.split("?")[0]!))]
  const many = multi.find((t) => typeParams(p, t) === undefined)
  if (many !== undefined) return `more than one --type-filter for ${many} (a crawl runs one search per type)`
  return undefined
}

/** Patient ids of the export: every Patient (patient level), the Group's members, or `patients`. */
const patientIds = (client: FhirClient, p: ExportParams, pageSize: number) =>
  Effect.gen(function* () {
    if (p.patients.length > 0) {
      return p.patients.flatMap((r) => {
        const id = patientId(r.includes("/") ? r : `Patient/${r}`)
        return id === undefined ? [] : [id]
      })
    }
    if (p.level === "group") {
      const group = yield* groupOf(client, p.groupId ?? "")
      const members = Array.isArray(group.member) ? (group.member as ReadonlyArray<unknown>) : []
      return members.flatMap((m) => {
        const ref = (m as { entity?: { reference?: unknown } }).entity?.reference
        const id = typeof ref === "string" ? patientId(ref) : undefined
        return id === undefined ? [] : [id]
      })
    }
    const ids: Array<string> = []
    yield* client
      .searchAll("Patient", { _count: String(pageSize) })
      .pipe(Stream.runForEach((r) => Effect.sync(() => r.id !== undefined && ids.push(r.id))))
    return ids
  })

/** Patients per search of a Patient- or Group-level crawl: `param=Patient/a,Patient/b,…` (values OR-ed). */
export const PATIENTS_PER_SEARCH = 50
/**
 * …and the batch's value, URL-encoded as it is sent (`Patient%2Fa%2CPatient%2Fb`), at most this long: the whole
 * query stays under 2,048 characters (IIS's default limit, the lowest in common use) with `_count`, the time
 * bounds and a filter beside it.
 */
const BATCH_CHARS = 1500

/** The next batch of `ids` from `from`: at most `size` ids whose encoded references, joined, fit `BATCH_CHARS`. */
const takeBatch = (ids: ReadonlyArray<string>, from: number, size: number): ReadonlyArray<string> => {
  let to = from
  let chars = 0
  while (to < ids.length && to - from < size) {
    const cost = encodeURIComponent(`Patient/${ids[to]!},`).length
    if (to > from && chars + cost > BATCH_CHARS) break
    chars += cost
    to++
  }
  return ids.slice(from, to)
}

/** `ids` cut into batches as `takeBatch` cuts them. */
export const patientBatches = (
  ids: ReadonlyArray<string>,
  size: number = PATIENTS_PER_SEARCH,
): ReadonlyArray<ReadonlyArray<string>> => {
  const out: Array<ReadonlyArray<string>> = []
  for (let at = 0; at < ids.length; ) {
    const batch = takeBatch(ids, at, size)
    out.push(batch)
    at += batch.length
  }
  return out
}

/**
 * A batch the server answered with an error (a 4xx: it will not take the list; a 5xx that outlived the retries:
 * it fails on it), where each of its patients alone may still be answered. Not credentials refused (401/403:
 * the crawl's failure), not throttling (`Throttled`), not an unreachable server (`Transport`).
 */
const batchRefused = (e: FhirError | AuthError): e is FhirError =>
  e._tag === "FhirError" && e.reason === "Status" && e.status !== 401 && e.status !== 403

/**
 * One compartment search (`param` of `type`, or a Patient's `_id`) over the patients `ids`, in batches of
 * `size`. A server may read `a,b` as one value, use only the first value, or only the first so many, or refuse
 * the list, and a batch would then miss resources without a word. So a batch is trusted only once one has been
 * searched patient by patient (what is written) and then as one search (only the ids kept, 16 bytes each) with
 * the patients that found resources last (a server reading only the first values then leaves some out), and the
 * two found the same resources, of at least two patients. Until then every batch is searched patient by patient
 * (and as one search when two of its patients found something); on the first difference or error answer, the
 * rest go patient by patient, as does a trusted batch the server answers with an error. Trusted batches are no
 * longer than the one that was checked.
 */
export const batchedSearch = (
  byValue: (value: string) => Stream.Stream<Resource, FhirError | AuthError>,
  referenceOf: (id: string) => string,
  ids: ReadonlyArray<string>,
  size: number = PATIENTS_PER_SEARCH,
): Stream.Stream<Resource, FhirError | AuthError> =>
  Stream.suspend(() => {
    let state: "unknown" | "batched" | "single" = "unknown"
    let trustedSize = size
    const one = (id: string) => byValue(referenceOf(id))
    const single = (batch: ReadonlyArray<string>) =>
      Stream.fromIterable(batch).pipe(Stream.flatMap(one, { concurrency: 1 }))
    const asOne = (batch: ReadonlyArray<string>) => byValue(batch.map(referenceOf).join(","))
    const checked = (batch: ReadonlyArray<string>) =>
      Stream.suspend(() => {
        const each = new DigestSet(16)
        const found = new Set<string>()
        /** The batch as one search, the patients that found something last; then the verdict. */
        const verify = Effect.gen(function* () {
          if (state !== "unknown" || found.size < 2) return
          const asBatch = new DigestSet(16)
          const order = [...batch.filter((id) => !found.has(id)), ...batch.filter((id) => found.has(id))]
          let missed = false
          const refused = yield* asOne(order).pipe(
            Stream.runForEach((r) =>
              Effect.sync(() => {
                const key = digest16(r.id ?? "")
                if (asBatch.add(key) && !each.has(key)) missed = true
              }),
            ),
            Effect.as(false),
            Effect.catchIf(batchRefused, () => Effect.succeed(true)),
          )
          if (refused || missed || asBatch.size !== each.size) state = "single"
          else {
            state = "batched"
            trustedSize = batch.length
          }
        })
        return Stream.concat(
          Stream.fromIterable(batch).pipe(
            Stream.flatMap(
              (id) =>
                one(id).pipe(
                  Stream.tap((r) =>
                    Effect.sync(() => {
                      found.add(id)
                      each.add(digest16(r.id ?? ""))
                    }),
                  ),
                ),
              { concurrency: 1 },
            ),
          ),
          Stream.execute(verify),
        )
      })
    const trusted = (batch: ReadonlyArray<string>) =>
      asOne(batch).pipe(
        // (what the batch gave before the error comes again patient by patient; `onceEach` keeps one of each)
        Stream.catchAll((e) => {
          if (!batchRefused(e)) return Stream.fail(e)
          state = "single"
          return single(batch)
        }),
      )
    /** The batches from `at` on, each searched as the state is when its turn comes. */
    const from = (at: number): Stream.Stream<Resource, FhirError | AuthError> =>
      Stream.suspend(() => {
        if (at >= ids.length) return Stream.empty
        if (state === "single") return single(ids.slice(at))
        const batch = takeBatch(ids, at, state === "batched" ? trustedSize : size)
        const searched =
          batch.length === 1 ? single(batch) : state === "batched" ? trusted(batch) : checked(batch)
        return Stream.concat(searched, from(at + batch.length))
      })
    return from(0)
  })

/** Writes one type's resources to the next `data/<Type>.<n>.ndjson` (empty types leave no file). */
const writeType = (
  archive: ArchiveDir,
  gzip: boolean,
  type: string,
  resources: Stream.Stream<Resource, FhirError | AuthError>,
): Effect.Effect<CrawledFile | undefined, ArchiveError | ExportError | FhirError | AuthError> =>
  Effect.gen(function* () {
    const entry = yield* Archive.writeFile(
      archive.root,
      { section: "files", type, compression: gzip ? "gzip" : "none" },
      resources,
    )
    if (entry.count === 0) {
      yield* fsTry(entry.path, "remove", () => NFS.promises.rm(archive.path(entry.path), { force: true }))
      return undefined
    }
    return { ...entry, kind: "output" } satisfies CrawledFile
  })

/**
 * A type's files a killed run wrote but never journaled (its file renamed into place, then the kill before the
 * journal line): the type is crawled again from its first file, and no file the manifest will not list stays
 * behind (an archive holding one is refused by import and verify).
 */
const removeLeftovers = (archive: ArchiveDir, type: string): Effect.Effect<void, ExportError> => {
  const dir = archive.path(Archive.layout.data)
  const own = new RegExp(`^${type}\\.\\d{3}\\.ndjson(\\.gz)?$`)
  return fsTry(dir, "list", async () => {
    const names = NFS.existsSync(dir) ? await NFS.promises.readdir(dir) : []
    for (const name of names) if (own.test(name)) await NFS.promises.rm(Path.join(dir, name), { force: true })
  })
}

/** The journal key of a crawled type's file. */
export const fileKey = (type: string): string => `file:output:${type}:0`

/**
 * A type's `_summary=count`, where a count of 0 stands only if one search of the type (`_count=1`) finds none of
 * it either: a server may count 0 for an unscoped search it does not really run, and the type would be left out.
 * None: unknown (no count, a refused one, a 0 the search contradicts, or a 0 whose search failed or was refused:
 * such a server may well hold the type, and only its searches by patient can tell).
 */
const heldCount = (client: FhirClient, type: string): Effect.Effect<Option.Option<number>> =>
  summaryCount(client, type).pipe(
    Effect.orElseSucceed(() => Option.none<number>()),
    Effect.flatMap((n) =>
      Option.isSome(n) && n.value === 0
        ? client.search(type, { _count: "1" }).pipe(
            Effect.map((b) =>
              (b.entry ?? []).some((e) => e.resource?.resourceType === type) ? Option.none<number>() : n,
            ),
            Effect.orElseSucceed(() => Option.none<number>()),
          )
        : Effect.succeed(n),
    ),
  )

/**
 * Each resource once: a resource can come twice (through two compartment parameters of one patient, or on two
 * pages of a search paged by offset while an update moves it). Its id's digest is kept (16 bytes, outside the
 * JS heap), not its id.
 */
const onceEach = <E>(resources: Stream.Stream<Resource, E>): Stream.Stream<Resource, E> =>
  Stream.suspend(() => {
    const seen = new DigestSet(16)
    return Stream.filter(resources, (r) => seen.add(digest16(r.id ?? "")))
  })

export const crawl = Effect.fn("Crawl.crawl")(function* (
  client: FhirClient,
  archive: ArchiveDir,
  p: ExportParams,
  options: CrawlOptions,
) {
  const pageSize = options.pageSize ?? 500
  const cannot = unsupported(p)
  if (cannot !== undefined) {
    return yield* new ExportError({
      reason: "Config",
      detail: `a search crawl (the source has no $export, or --mode crawl) cannot honour ${cannot}; leave it out, or export from a source with $export`,
    })
  }
  const cs = yield* client.capabilities()
  const version = versionWarning(cs)
  if (version !== undefined) yield* options.onWarning?.(version) ?? Effect.void
  const searchable = CapabilityStatement.types(cs).filter((t) =>
    CapabilityStatement.supportsInteraction(cs, "search-type", t),
  )
  // Types asked for by name are searched even when the CapabilityStatement does not list them (a search the
  // server refuses fails the export, naming it); never dropped without a word.
  const wanted = p.types.length > 0 ? p.types : searchable
  const compartment = p.level !== "system"
  const types = compartment ? wanted.filter(isMember) : wanted
  // Nothing to search would make an empty archive that says it is complete.
  if (types.length === 0) {
    const metadata = `${redactUrl(client.baseUrl).replace(/\/+$/, "")}/metadata`
    return yield* p.types.length > 0
      ? new ExportError({
          reason: "Config",
          detail: `none of the types asked for (--type ${p.types.join(",")}) is in the Patient compartment, which a ${p.level}-level crawl searches; pass types of the compartment with --type, or crawl at --level system`,
        })
      : new ExportError({
          reason: "NotSupported",
          url: metadata,
          detail:
            searchable.length === 0
              ? "the server's CapabilityStatement lists no resource type it can search (no rest.resource with the search-type interaction), so a crawl would find nothing; pass the types to crawl with --type"
              : `the server's CapabilityStatement lists no searchable type of the Patient compartment, which a ${p.level}-level crawl searches; pass the types to crawl with --type, or crawl at --level system`,
        })
  }
  // a Group the source does not have is a usage error before the crawl counts as begun (the same directory then
  // takes the corrected command)
  if (p.level === "group" && p.patients.length === 0) yield* groupOf(client, p.groupId ?? "")
  yield* options.onStart ?? Effect.void
  // The archive holds changes up to here: the server's clock when the crawl first started (a resumed crawl
  // keeps it: the types crawled before the interruption reach no further), or `_until` when that is earlier.
  const transactionTime = options.transactionTime ?? untilClamped(yield* serverTime(client), p.until)
  if (options.transactionTime === undefined)
    yield* options.onTransactionTime?.(transactionTime) ?? Effect.void
  if (p.since !== undefined)
    yield* options.onWarning?.(
      `a search crawl cannot see deletions: what was deleted at the source since ${p.since} is not in this archive's deleted/ and stays on a target it is imported into`,
    ) ?? Effect.void
  // The compartment's search parameters of each type that the server declares (all of them when it lists
  // none): a search by one it does not support is refused (400) and would fail the whole crawl. What only an
  // undeclared one links to a patient cannot be found: said, with how many of the type the server holds
  // (a type it holds none of is passed over without a word). The Patient type is read by `_id`, and through
  // `link` (a Patient linked to one of them) where the server declares it.
  const linking = new Map<string, ReadonlyArray<string>>()
  // (each type's count asked for once: for the warning below, then for the type's searches)
  const held = yield* Effect.cachedFunction((type: string) => heldCount(client, type))
  const leftOut: Array<string> = []
  const partly: Array<string> = []
  if (compartment)
    for (const type of types) {
      const declared = CapabilityStatement.searchParams(cs, type)
      if (type === "Patient") {
        linking.set(type, declared?.has("link") === true ? ["link"] : [])
        continue
      }
      const all = patientCompartment[type] ?? []
      const usable = declared === undefined ? all : all.filter((param) => declared.has(param))
      linking.set(type, usable)
      const missing = all.filter((param) => !usable.includes(param))
      if (missing.length === 0) continue
      // (only to word the warning: a server that will not count, however it says so, leaves it unknown)
      const count = yield* held(type)
      if (Option.isSome(count) && count.value === 0) continue
      const what = `${type} (${missing.join(", ")}${Option.isSome(count) ? `; the server holds ${count.value}` : ""})`
      if (usable.length === 0) leftOut.push(what)
      else partly.push(what)
    }
  if (leftOut.length > 0)
    yield* options.onWarning?.(
      `the server's CapabilityStatement declares none of the search parameters that link these types to a patient, so a crawl cannot tell which of their resources belong to these patients, and leaves them out of this archive: ${leftOut.join(", ")}; export from a source with $export, or crawl at --level system`,
    ) ?? Effect.void
  if (partly.length > 0)
    yield* options.onWarning?.(
      `the server's CapabilityStatement does not declare these search parameters of the Patient compartment, so what is linked to these patients only through them is not in this archive: ${partly.join(", ")}`,
    ) ?? Effect.void
  const crawled = compartment
    ? types.filter((t) => t === "Patient" || (linking.get(t)?.length ?? 0) > 0)
    : types
  const ids = compartment ? yield* patientIds(client, p, pageSize) : []
  // Patients are searched for in batches (one search per type, linking parameter and batch, not per patient:
  // up to 50× fewer requests) where the server answers a batch as it answers its patients one by one
  const source = (type: string): Stream.Stream<Resource, FhirError | AuthError> => {
    // Repeated names are kept side by side (searches AND them): the time bounds, a filter's own values and
    // the compartment's patient never replace one another.
    const base = merged({ _count: [String(pageSize)] }, timeParams(p), typeParams(p, type) ?? {})
    if (!compartment) return onceEach(client.searchAll(type, base))
    // A type the server holds none of is not searched patient by patient: a batch that finds nothing proves
    // nothing about the server's batches, so such a type would cost about one search per patient. (A server
    // that will not count, however it says so, or whose 0 a search of the type contradicts, is searched.)
    // (a Patient by `_id`, and through `link` where declared: each once)
    const searched = Stream.concat(
      type === "Patient"
        ? batchedSearch(
            (value) => client.searchAll("Patient", merged(base, { _id: [value] })),
            (id) => id,
            ids,
          )
        : Stream.empty,
      Stream.fromIterable(linking.get(type) ?? []).pipe(
        Stream.flatMap(
          (param) =>
            batchedSearch(
              (value) => client.searchAll(type, merged(base, { [param]: [value] })),
              (id) => `Patient/${id}`,
              ids,
            ),
          { concurrency: 1 },
        ),
      ),
    ).pipe(onceEach)
    return Stream.unwrap(
      Effect.map(held(type), (n) => (Option.isSome(n) && n.value === 0 ? Stream.empty : searched)),
    )
  }

  if (options.onPlan) yield* options.onPlan(crawled)
  const files = yield* Effect.forEach(
    crawled,
    (type) => {
      const key = fileKey(type)
      const done = archive.journal.result(key)
      if (done._tag === "Some") return Effect.succeed(done.value as CrawledFile | null)
      return removeLeftovers(archive, type).pipe(
        Effect.zipRight(writeType(archive, options.gzip === true, type, source(type))),
        Effect.map((file) => file ?? null),
        Effect.tap((file) => archive.journal.append(key, file)),
        Effect.tap((file) =>
          file !== null
            ? options.onFile
              ? options.onFile(file)
              : Effect.void
            : options.onEmpty
              ? options.onEmpty(type)
              : Effect.void,
        ),
      )
    },
    { concurrency: options.concurrency },
  )
  return {
    transactionTime,
    files: files.filter((f): f is CrawledFile => f !== null),
  } satisfies CrawlResult
})
