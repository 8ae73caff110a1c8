/**
 * `ferry plan`'s probing and decisions: what both servers can do and what `ferry migrate` would choose.
 * Plan only reads (GET `metadata`, `Type?_summary=count`, one page of a few types, and the token request of
 * a configured authenticator); it never writes, so client-id acceptance comes from the CapabilityStatement
 * (`updateCreate`) and migrate confirms it with a probe PUT.
 *
 * `chooseExport` and `chooseImport` are pure and mirror `Export.run`'s auto mode and `Import.run`'s
 * `chooseStrategy` (minus its probe); they belong next to those (packages/export, packages/import) so that
 * plan and migrate share one rule: moved here only because those packages are owned elsewhere.
 */
import { HttpClientRequest } from "@effect/platform"
import type { Authenticator, AuthKind } from "@ferry/auth/Authenticator"
import * as Bundle from "@ferry/core/Bundle"
import * as CapabilityStatement from "@ferry/core/CapabilityStatement"
import { AuthError, type FhirError } from "@ferry/core/Errors"
import type { FhirClient } from "@ferry/core/FhirClient"
import * as BulkImport from "@ferry/import/BulkImport"
import { Clock, Effect, Either, Option } from "effect"

export type Role = "source" | "target"

/** Per-type resource counts of one server. */
export interface Counts {
  /** Types with a known count above 0. */
  readonly byType: Readonly<Record<string, number>>
  readonly total: number
  /** Types whose count the server would not give (no `total` in either form, or the search failed). */
  readonly unknown: ReadonlyArray<string>
  /** Of `unknown`, the types whose search the credentials may not make (403): a scope that does not read. */
  readonly forbidden?: ReadonlyArray<string>
  /** How the counts were obtained. */
  readonly method: "_summary=count" | "_total=accurate" | "mixed" | "none"
  /** How many types were counted: every declared type, or (source, `plan --type`) the types asked for. */
  readonly typesCounted: number
  readonly scope: "declared types" | "--type"
}

export interface BundleLimit {
  readonly entries: number | null
  readonly bytes: number | null
  /** Where the figure comes from, or why it is unknown. */
  readonly note: string
}

export interface ServerReport {
  readonly role: Role
  readonly url: string
  /** `Authenticator.describe` (never a secret). */
  readonly auth: string
  /** Whether a token was obtained (null: no token-based auth configured). */
  readonly token: boolean | null
  /** Whether an HTTP answer came back (a web server that is no FHIR server is reachable too). */
  readonly reachable: boolean
  /** Whether its CapabilityStatement was read: a FHIR server answered at that base. */
  readonly capabilityStatement: boolean
  /** An answer that is no FHIR server's: no CapabilityStatement at `metadata` (404, HTML, not JSON). */
  readonly noFhirServer: boolean
  readonly authorized: boolean
  /** One sentence when the server could not be probed (unreachable, unauthorised, no CapabilityStatement). */
  readonly problem: string | null
  readonly fhirVersion: string | null
  readonly software: string | null
  readonly export: { readonly system: boolean; readonly patient: boolean; readonly group: boolean }
  readonly import: { readonly operation: "import" | "bulk-submit" | null; readonly flavour: string | null }
  readonly transaction: boolean
  readonly batch: boolean
  /** Declared types (rest mode server) whose `updateCreate` is true. */
  readonly updateCreateTypes: ReadonlyArray<string>
  readonly declaredTypes: ReadonlyArray<string>
  readonly bundleLimit: BundleLimit
  readonly counts: Counts
}

export interface Sample {
  readonly type: string
  readonly resources: number
  /** NDJSON bytes of the sampled resources (one line each). */
  readonly bytes: number
  readonly millis: number
  /** Ids of the sampled resources that are purely numeric. */
  readonly numericIds: number
  /** Ids that break FHIR's id syntax `[A-Za-z0-9\-.]{1,64}`. */
  readonly badIds: number
}

export interface Estimate {
  readonly samples: ReadonlyArray<Sample>
  readonly bytesPerResource: number | null
  readonly archiveBytes: number | null
  readonly resourcesPerSecond: number | null
  readonly exportSeconds: number | null
  readonly note: string
}

export interface ExportChoice {
  readonly mode: "bulk" | "crawl"
  readonly level: "system" | "patient" | "group"
  readonly why: string
}

export interface ImportChoice {
  readonly strategy: "put" | "post" | "import"
  readonly why: string
  /** What migrate still checks before the first write. */
  readonly confirm: string | null
}

/** The failure that stops a server from being probed, kept to fail the command with it. */
export type ProbeFailure = FhirError | AuthError

export interface Probed {
  readonly report: ServerReport
  readonly cs: Option.Option<CapabilityStatement.CapabilityStatement>
  readonly failure: Option.Option<ProbeFailure>
}

const idSyntax = /^[A-Za-z0-9\-.]{1,64}$/

const emptyCounts: Counts = {
  byType: {},
  total: 0,
  unknown: [],
  method: "none",
  typesCounted: 0,
  scope: "declared types",
}

const software = (cs: CapabilityStatement.CapabilityStatement): string | null => {
  const s = (cs as { readonly software?: { readonly name?: unknown; readonly version?: unknown } }).software
  if (s === undefined || typeof s.name !== "string") return null
  return typeof s.version === "string" ? `${s.name} ${s.version}` : s.name
}

/**
 * Bundle limits where they can be known: there is no standard CapabilityStatement field, so only vendors
 * with a documented limit are recognised by their software name.
 */
export const bundleLimit = (cs: CapabilityStatement.CapabilityStatement): BundleLimit => {
  const name = software(cs) ?? ""
  if (/microsoft|azure/i.test(name))
    return {
      entries: 500,
      bytes: null,
      note: "500 entries per Bundle (Azure Health Data Services' documented limit)",
    }
  if (/google|cloud healthcare/i.test(name))
    return {
      entries: null,
      bytes: 50 * 1024 * 1024,
      note: "50 MB per Bundle (Google Cloud Healthcare's documented limit)",
    }
  return {
    entries: null,
    bytes: null,
    note: "unknown (the CapabilityStatement does not say); migrate starts at --bundle-size and halves a Bundle the target refuses as too large (413)",
  }
}

const isTransportOrAuth = (e: ProbeFailure): boolean =>
  e._tag === "AuthError" || e.reason === "Transport" || e.reason === "Throttled"

/**
 * One type's count: `_summary=count`, else `_total=accurate` on a one-resource page; unknown when neither
 * gives a `total` or the search is refused. Transport and auth failures are not swallowed.
 */
const countType = (
  client: FhirClient,
  type: string,
): Effect.Effect<
  { readonly count: Option.Option<number>; readonly method: Counts["method"]; readonly forbidden?: true },
  ProbeFailure
> =>
  Effect.gen(function* () {
    const summary = yield* Effect.either(client.search(type, { _summary: "count" }))
    if (Either.isLeft(summary) && isTransportOrAuth(summary.left)) return yield* summary.left
    if (Either.isRight(summary) && summary.right.total !== undefined)
      return { count: Option.some(summary.right.total), method: "_summary=count" as const }
    if (Either.isLeft(summary) && summary.left._tag === "FhirError" && summary.left.status === 403)
      return { count: Option.none(), method: "none" as const, forbidden: true as const }
    const accurate = yield* Effect.either(client.search(type, { _total: "accurate", _count: "1" }))
    if (Either.isLeft(accurate) && isTransportOrAuth(accurate.left)) return yield* accurate.left
    if (Either.isRight(accurate) && accurate.right.total !== undefined)
      return { count: Option.some(accurate.right.total), method: "_total=accurate" as const }
    return { count: Option.none(), method: "none" as const }
  })

export const countAll = (
  client: FhirClient,
  types: ReadonlyArray<string>,
  concurrency: number,
  scope: Counts["scope"] = "declared types",
): Effect.Effect<Counts, ProbeFailure> =>
  Effect.gen(function* () {
    const results = yield* Effect.forEach(
      types,
      (type) => Effect.map(countType(client, type), (r) => ({ type, ...r })),
      { concurrency },
    )
    const byType: Record<string, number> = {}
    const unknown: Array<string> = []
    const forbidden: Array<string> = []
    const methods = new Set<string>()
    for (const r of results) {
      if (r.forbidden === true) forbidden.push(r.type)
      if (Option.isNone(r.count)) unknown.push(r.type)
      else {
        methods.add(r.method)
        if (r.count.value > 0) byType[r.type] = r.count.value
      }
    }
    const total = Object.values(byType).reduce((a, b) => a + b, 0)
    const method: Counts["method"] =
      methods.size === 0
        ? "none"
        : methods.size > 1
          ? "mixed"
          : methods.has("_summary=count")
            ? "_summary=count"
            : "_total=accurate"
    return {
      byType,
      total,
      unknown,
      ...(forbidden.length > 0 ? { forbidden } : {}),
      method,
      typesCounted: types.length,
      scope,
    }
  })

/**
 * Probes one server: a token (when the authenticator fetches one), the CapabilityStatement, and counts
 * per declared type. A failure to reach or to be authorised is returned, not raised, so that both
 * servers are reported before the command fails.
 */
export const probe = (options: {
  readonly role: Role
  readonly client: FhirClient
  readonly authenticator: Authenticator
  /** The configured auth kind: `smart` and `client-secret` fetch a token first. */
  readonly kind: AuthKind
  readonly concurrency: number
  /** The types to count (`plan --type`); default every declared type. */
  readonly types?: ReadonlyArray<string>
}): Effect.Effect<Probed> =>
  Effect.gen(function* () {
    const { role, client, authenticator } = options
    const base: ServerReport = {
      role,
      url: client.baseUrl,
      auth: authenticator.describe,
      token: null,
      reachable: false,
      capabilityStatement: false,
      noFhirServer: false,
      authorized: false,
      problem: null,
      fhirVersion: null,
      software: null,
      export: { system: false, patient: false, group: false },
      import: { operation: null, flavour: null },
      transaction: false,
      batch: false,
      updateCreateTypes: [],
      declaredTypes: [],
      bundleLimit: { entries: null, bytes: null, note: "unknown" },
      counts: emptyCounts,
    }
    const failed = (report: ServerReport, failure: ProbeFailure): Probed => {
      // A 401 with no credentials configured: say how to configure them (not "check the client id").
      const e =
        failure._tag === "AuthError" && failure.reason === "Unauthorized" && options.kind === "none"
          ? new AuthError({
              reason: "Unauthorized",
              ...(failure.url !== undefined ? { url: failure.url } : {}),
              detail: `the ${role} server requires authorization (401); configure it with --${role}-auth smart|client-secret|bearer (or FERRY_${role.toUpperCase()}_AUTH, or ${role}.auth in the config file)`,
            })
          : failure
      return {
        report: {
          ...report,
          reachable:
            report.reachable ||
            (e._tag === "AuthError" ? e.reason !== "Unreachable" : e.reason !== "Transport"),
          problem: `${role} ${client.baseUrl}: ${(e._tag === "AuthError" ? e.reason === "Unreachable" : e.reason === "Transport") ? "unreachable" : e._tag === "AuthError" ? "not authorised" : "failed"}: ${e.message}`,
        },
        cs: Option.none(),
        failure: Option.some(e),
      }
    }
    let report = base
    if (options.kind === "smart" || options.kind === "client-secret") {
      const token = yield* Effect.either(authenticator.authorize(HttpClientRequest.get(client.baseUrl)))
      if (Either.isLeft(token)) {
        // Unreachable token endpoint and refused credentials both end here.
        return failed({ ...report, token: false }, token.left)
      }
      report = { ...report, token: true }
    }
    const csResult = yield* Effect.either(client.capabilities())
    if (Either.isLeft(csResult)) {
      const e = csResult.left
      const noFhir =
        e._tag === "FhirError" && (e.reason === "Decode" || (e.reason === "Status" && e.status === 404))
      return failed({ ...report, noFhirServer: noFhir }, e)
    }
    const cs = csResult.right
    const declared = CapabilityStatement.types(cs)
    const importOp = CapabilityStatement.importOperation(cs)
    report = {
      ...report,
      reachable: true,
      capabilityStatement: true,
      fhirVersion: cs.fhirVersion ?? null,
      software: software(cs),
      export: {
        system: CapabilityStatement.supportsOperation(cs, "export", "system"),
        patient: CapabilityStatement.supportsOperation(cs, "export", "Patient"),
        group: CapabilityStatement.supportsOperation(cs, "export", "Group"),
      },
      import: {
        operation: Option.getOrNull(importOp),
        flavour: Option.getOrNull(BulkImport.detectFlavour(cs)),
      },
      transaction: CapabilityStatement.supportsInteraction(cs, "transaction"),
      batch: CapabilityStatement.supportsInteraction(cs, "batch"),
      updateCreateTypes: declared.filter((t) => CapabilityStatement.updateCreate(cs, t)),
      declaredTypes: declared,
      bundleLimit: bundleLimit(cs),
    }
    const counts = yield* Effect.either(
      options.types === undefined
        ? countAll(client, declared, options.concurrency)
        : countAll(client, options.types, options.concurrency, "--type"),
    )
    if (Either.isLeft(counts)) return { ...failed(report, counts.left), cs: Option.some(cs) }
    return {
      report: { ...report, authorized: true, counts: counts.right },
      cs: Option.some(cs),
      failure: Option.none(),
    }
  })

/** One timed page (`Type?_count=n`) of a type: NDJSON bytes per resource and the ids' shape. */
export const sampleType = (
  client: FhirClient,
  type: string,
  size: number,
): Effect.Effect<Sample, ProbeFailure> =>
  Effect.gen(function* () {
    const started = yield* Clock.currentTimeMillis
    const bundle = yield* client.search(type, { _count: String(size) })
    const ended = yield* Clock.currentTimeMillis
    const resources = Bundle.resources(bundle).filter((r) => r.resourceType === type)
    let bytes = 0
    let numericIds = 0
    let badIds = 0
    for (const r of resources) {
      bytes += Buffer.byteLength(JSON.stringify(r)) + 1
      const id = r.id ?? ""
      if (/^\d+$/.test(id)) numericIds++
      if (!idSyntax.test(id)) badIds++
    }
    return { type, resources: resources.length, bytes, millis: ended - started, numericIds, badIds }
  })

/** Archive size and export duration from the samples and the counts (an estimate, said so). */
export const estimate = (counts: Counts, samples: ReadonlyArray<Sample>): Estimate => {
  const sampled = samples.reduce((a, s) => a + s.resources, 0)
  if (sampled === 0 || counts.total === 0)
    return {
      samples,
      bytesPerResource: null,
      archiveBytes: null,
      resourcesPerSecond: null,
      exportSeconds: null,
      note:
        counts.total === 0
          ? "nothing to estimate: the source reports no resources"
          : "no estimate: the sample pages held no resources",
    }
  const sampledBytes = samples.reduce((a, s) => a + s.bytes, 0)
  const average = sampledBytes / sampled
  const perType = new Map(samples.filter((s) => s.resources > 0).map((s) => [s.type, s.bytes / s.resources]))
  let archiveBytes = 0
  for (const [type, n] of Object.entries(counts.byType)) archiveBytes += n * (perType.get(type) ?? average)
  const millis = samples.reduce((a, s) => a + s.millis, 0)
  const rate = sampled / Math.max(0.001, millis / 1000)
  return {
    samples,
    bytesPerResource: Math.round(archiveBytes / counts.total),
    archiveBytes: Math.round(archiveBytes),
    resourcesPerSecond: Math.round(rate),
    exportSeconds: Math.round(counts.total / rate),
    note: `an estimate from one timed page of ${samples.map((s) => s.type).join(", ")} (${sampled} resources): NDJSON size uncompressed, duration at search-paging speed (a bulk $export usually runs faster; attachments and the import are not included)`,
  }
}

const levelName = (level: ExportChoice["level"]) =>
  level === "system" ? "system" : level === "patient" ? "Patient" : "Group"

/** What `Export.run` would do in its mode (`auto`: $export when declared at the level, else crawl). */
export const chooseExport = (
  source: ServerReport,
  mode: "auto" | "bulk" | "crawl",
  level: ExportChoice["level"],
): ExportChoice => {
  const declared = source.export[level]
  const others = (["system", "patient", "group"] as const).filter((l) => l !== level && source.export[l])
  if (mode === "crawl") return { mode: "crawl", level, why: "a search crawl was asked for (--mode crawl)" }
  if (mode === "bulk")
    return {
      mode: "bulk",
      level,
      why: declared
        ? `$export at ${levelName(level)} level was asked for (--mode bulk) and the source declares it`
        : `$export at ${levelName(level)} level was asked for (--mode bulk) although the source does not declare it; the kick-off may be refused`,
    }
  if (declared)
    return {
      mode: "bulk",
      level,
      why: `the source's CapabilityStatement declares $export at ${levelName(level)} level`,
    }
  return {
    mode: "crawl",
    level,
    why: `the source declares no $export at ${levelName(level)} level: migrate tries the kick-off all the same (many servers declare it only through instantiates) and pages through searches if it is refused; plan, which starts no job, counts on the search crawl${others.length > 0 ? ` (it declares ${others.map(levelName).join(" and ")}-level $export: --level ${others[0]} would use it)` : ""}`,
  }
}

/**
 * What `Import.run` would choose (`auto`: put when the target declares `updateCreate` for every type to
 * load, which migrate confirms with a probe PUT; post otherwise; `import` only when asked for).
 */
export const chooseImport = (
  target: ServerReport,
  types: ReadonlyArray<string>,
  strategy: "auto" | "put" | "post" | "import",
): ImportChoice => {
  const probeNote = "migrate confirms with a probe PUT (Basic/ferry-probe-…, deleted again) before loading"
  if (strategy === "import")
    return {
      strategy: "import",
      why:
        target.import.operation === "import"
          ? `$import was asked for and the target declares it${target.import.flavour ? ` (${target.import.flavour} flavour)` : " (flavour not recognised)"}`
          : "$import was asked for but the target does not declare it; migrate will refuse",
      confirm: null,
    }
  if (strategy === "post")
    return {
      strategy: "post",
      why: "post was asked for: the target assigns new ids and migrate keeps an id map",
      confirm: null,
    }
  const refusing = types.filter((t) => !target.updateCreateTypes.includes(t))
  if (strategy === "put")
    return {
      strategy: "put",
      why:
        refusing.length === 0
          ? "put was asked for: source ids are kept (PUT Type/id)"
          : `put was asked for although the target does not declare updateCreate for ${list(refusing)}; those writes may be refused (405)`,
      confirm: null,
    }
  if (types.length > 0 && refusing.length === 0)
    return {
      strategy: "put",
      why: `the target declares updateCreate (client ids accepted) for all ${types.length} source types, so source ids are kept (PUT Type/id)${alternative(target)}`,
      confirm: probeNote,
    }
  return {
    strategy: "post",
    why: `${
      types.length === 0
        ? "nothing to load (the source reports no resources)"
        : refusing.length === types.length
          ? `the target does not accept client ids (no updateCreate) for any of the ${types.length} source types`
          : `the target does not accept client ids (no updateCreate) for ${list(refusing)}`
    }, so it assigns new ids (POST) and migrate keeps an id map${target.import.operation === "import" ? " (its $import is no alternative: Ferry's $import needs a target that keeps the ids of the files, which one refusing client ids may not, leaving references to them unresolved)" : ""}`,
    confirm: null,
  }
}

/** The $import alternative, when the target declares it. */
const alternative = (target: ServerReport): string =>
  target.import.operation === "import"
    ? ` (the target also declares $import${target.import.flavour ? `, ${target.import.flavour} flavour` : ""}: --strategy import lets it pull the files itself)`
    : ""

const list = (types: ReadonlyArray<string>): string =>
  types.length <= 5 ? types.join(", ") : `${types.slice(0, 5).join(", ")} and ${types.length - 5} more types`

/** Things to know before migrating (no effect on the exit code). */
export const warnings = (
  source: ServerReport,
  target: ServerReport,
  importChoice: ImportChoice,
  samples: ReadonlyArray<Sample>,
): ReadonlyArray<string> => {
  const out: Array<string> = []
  for (const s of [source, target]) {
    if (s.reachable && s.fhirVersion !== null && !s.fhirVersion.startsWith("4.0"))
      out.push(`the ${s.role} declares FHIR ${s.fhirVersion}; Ferry moves FHIR R4 (4.0.x) data`)
    const forbidden = s.counts.forbidden ?? []
    if (forbidden.length > 0)
      out.push(
        s.role === "target"
          ? `the target's credentials may not search ${list(forbidden)} (403): the target's counts are unknown, so migrate cannot say whether it holds data already, and ferry verify afterwards needs credentials that read it (a scope with read or r/s)`
          : `the source's credentials may not search ${list(forbidden)} (403): its counts are unknown, and a crawl of them would be refused`,
      )
    const unknown = s.counts.unknown.filter((t) => !forbidden.includes(t))
    if (unknown.length > 0)
      out.push(
        `the ${s.role} gave no count for ${list(unknown)} (no total from _summary=count or _total=accurate); migrate still exports them, but counting them takes a full crawl`,
      )
  }
  if (source.authorized && source.counts.total === 0 && source.counts.unknown.length === 0)
    out.push("the source reports no resources: there is nothing to migrate")
  if (target.authorized && target.counts.total > 0) {
    const top = Object.entries(target.counts.byType)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 3)
      .map(([t, n]) => `${n} ${t}`)
      .join(", ")
    out.push(
      `the target is not empty: it holds ${target.counts.total} resources (${top}${Object.keys(target.counts.byType).length > 3 ? ", …" : ""}); migrated data is added to it${importChoice.strategy === "put" ? " and resources with the same ids are overwritten" : ""}`,
    )
  }
  if (
    target.reachable &&
    (importChoice.strategy === "put" || importChoice.strategy === "post") &&
    !target.transaction
  )
    out.push(
      "the target's CapabilityStatement declares no transaction interaction; migrate loads with transaction Bundles, which it may refuse",
    )
  const numeric = samples.reduce((a, s) => a + s.numericIds, 0)
  if (importChoice.strategy === "put" && numeric > 0 && /hapi/i.test(target.software ?? ""))
    out.push(
      "some source ids are purely numeric and the target looks like HAPI FHIR, whose default id policy refuses numeric client ids; migrate's probe PUT will not catch this (use --strategy post if the load is refused)",
    )
  const bad = samples.reduce((a, s) => a + s.badIds, 0)
  if (bad > 0)
    out.push(
      `${bad} sampled source ids do not fit FHIR's id syntax [A-Za-z0-9-.]{1,64}; put cannot keep them`,
    )
  return out
}
