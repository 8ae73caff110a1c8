/**
 * `ferry plan --from <url> --to <url> [--config ferry.yaml] [--source-auth …] [--target-auth …] [--json]`
 *
 * A preflight that changes nothing on either server: reachability, auth (a token when configured), FHIR
 * version, `$export` levels, `$import` flavours, client-id acceptance (`updateCreate`; migrate confirms
 * with a probe PUT), Bundle limits where known, counts per type on both servers, an estimate of archive
 * size and export duration from a timed sample, and the strategy `ferry migrate` would choose, and why.
 * Plain text on stdout (`--json`: one JSON object). Exit 0 when a migration looks possible; 3 when a
 * server refused the credentials, 4 when one is unreachable or failed, 2 for configuration errors.
 */
import { Command, Options } from "@effect/cli"
import * as HttpLayer from "../HttpLayer.js"
import * as Authenticator from "@ferry/auth/Authenticator"
import * as FhirClient from "@ferry/core/FhirClient"
import { Console, Duration, Effect, Either, Option } from "effect"
import { unprefix } from "../AuthFlags.js"
import * as Config from "../Config.js"
import { type FlagValues, requestTimeout, requestTimeoutOf } from "../Flags.js"
import * as Plan from "../Plan.js"
import * as Params from "../Params.js"
import { formatBytes, formatCount, formatDuration } from "../Progress.js"

const flags = {
  from: Options.text("from").pipe(
    Options.optional,
    Options.withDescription("The source FHIR server's base URL (or FERRY_FROM, or source.url in --config)."),
  ),
  to: Options.text("to").pipe(
    Options.optional,
    Options.withDescription("The target FHIR server's base URL (or FERRY_TO, or target.url in --config)."),
  ),
  mode: Options.choice("mode", ["auto", "bulk", "crawl"]).pipe(
    Options.optional,
    Options.withDescription(
      "Export mode migrate would use (default auto: $export when declared, else crawl).",
    ),
  ),
  level: Options.choice("level", ["system", "patient", "group"]).pipe(
    Options.optional,
    Options.withDescription("Export level migrate would use (default system)."),
  ),
  group: Options.text("group").pipe(
    Options.optional,
    Options.withDescription("The Group id (--level group)."),
  ),
  type: Options.text("type").pipe(
    Options.repeated,
    Options.withDescription(
      "Resource types migrate would export (_type); repeat or comma-separate. The source is counted, sampled and its token checked for these only.",
    ),
  ),
  strategy: Options.choice("strategy", ["auto", "put", "post", "import"]).pipe(
    Options.optional,
    Options.withDescription(
      "Import strategy migrate would use (default auto: put when client ids are accepted, else post).",
    ),
  ),
  bundleSize: Options.integer("bundle-size").pipe(
    Options.optional,
    Options.withDescription("Entries per transaction Bundle migrate would start with (default 500)."),
  ),
  parallel: Options.integer("parallel").pipe(
    Options.optional,
    Options.withDescription("Concurrent count requests per server (default 4)."),
  ),
  requestTimeout: requestTimeout("30s: a preflight's servers answer quickly or not at all"),
  json: Options.boolean("json").pipe(Options.withDescription("Print the plan as one JSON object on stdout.")),
  ...Config.configFlags,
}

type Flags = FlagValues<typeof flags>

/** A preflight's per-request timeout unless `--request-timeout` says otherwise: its servers answer quickly or not at all. */
const PLAN_TIMEOUT = Duration.seconds(30)

/** Resources sampled per type, and how many of the largest types are sampled. */
const SAMPLE_SIZE = 50
const SAMPLE_TYPES = 3

export interface PlanReport {
  readonly source: Plan.ServerReport
  readonly target: Plan.ServerReport
  readonly estimate: Plan.Estimate | null
  readonly strategy: { readonly export: Plan.ExportChoice; readonly import: Plan.ImportChoice } | null
  readonly warnings: ReadonlyArray<string>
  /** True when both servers were reached and authorised and the settings are whole: a migration looks possible. */
  readonly ok: boolean
  /** A setting migrate would refuse (it exits 2 on it), when there is one. */
  readonly settingsProblem?: string
  readonly changedNothing: true
}

const clientFor = (
  settings: Config.Settings,
  role: Plan.Role,
  url: string,
  timeout: Duration.Duration,
  types: ReadonlyArray<string>,
) =>
  Effect.gen(function* () {
    const auth = yield* Config.serverAuthSettings(settings, role)
    // The token migrate would get (write access on the target; on the source, reading every type of a
    // system-level export), so that a missing grant shows here; plan itself still only reads.
    const authenticator = yield* Authenticator.fromSettings(
      auth,
      url,
      role === "target" ? "write" : "read",
      role,
      role === "source"
        ? yield* Params.exportedTypesOf(url, types, settings.level, Option.some(timeout))
        : undefined,
      // (a preflight: this timeout, few retries, as its other requests)
      { timeout, retries: 2 },
    )
    const client = yield* FhirClient.make({
      baseUrl: url,
      authorize: authenticator.authorize,
      onUnauthorized: authenticator.invalidate,
      refusedHint: authenticator.refusedHint,
      // A preflight answers quickly: few retries, a short timeout (30 s unless --request-timeout).
      retry: { times: 2, cap: "5 seconds", maxRetryAfter: "10 seconds" },
      timeout,
    })
    return { client, authenticator, kind: auth.kind }
  })

/**
 * The `--json` form: the report with each server's type lists summarised (`declaredTypes` is every type
 * the server declares, ~145 on a full R4 server): `clientIds` says how many declare `updateCreate` and
 * which of the source's types do not.
 */
const toJson = (r: PlanReport, sourceTypes: ReadonlyArray<string>) => {
  const server = ({ declaredTypes, updateCreateTypes, ...rest }: Plan.ServerReport) => ({
    ...rest,
    typesDeclared: declaredTypes.length,
    clientIds: {
      updateCreateTypes: updateCreateTypes.length,
      sourceTypesWithout: sourceTypes.filter((t) => !updateCreateTypes.includes(t)),
    },
  })
  return { ...r, source: server(r.source), target: server(r.target) }
}

const pad = (label: string) => `  ${label.padEnd(14)}`

const yesNo = (b: boolean) => (b ? "yes" : "no")

const serverLines = (s: Plan.ServerReport, counts: boolean): Array<string> => {
  const lines = [`${s.role === "source" ? "Source" : "Target"}  ${s.url}`]
  if (!s.reachable) {
    lines.push(`${pad("reachable")}NO: ${s.problem ?? "unknown failure"}`)
    return lines
  }
  // an answer, but no CapabilityStatement in it: a web site or a wrong path, or a server that failed or refused
  // to give it; nothing else to say of it
  const refusedAuth = typeof s.problem === "string" && s.problem.includes(": not authorised: ")
  if (!s.capabilityStatement && !refusedAuth) {
    lines.push(
      `${pad("reachable")}yes, but ${s.noFhirServer ? "NO FHIR server answered there" : "its CapabilityStatement could not be read"}: ${s.problem ?? "unknown failure"}`,
    )
    return lines
  }
  lines.push(
    `${pad("reachable")}yes${s.capabilityStatement ? `: FHIR ${s.fhirVersion ?? "version not declared"}${s.software ? `, ${s.software}` : ""}` : ""}`,
  )
  // a probe that failed for another reason than authorization (an answer that is no FHIR) is not "NOT authorised"
  const refused = !s.authorized && typeof s.problem === "string" && s.problem.includes(": not authorised: ")
  lines.push(
    `${pad("auth")}${s.auth}${s.token === true ? ": token obtained" : s.token === false ? ": NO token" : ""}${refused ? `; NOT authorised: ${s.problem}` : ""}`,
  )
  if (!s.authorized && typeof s.problem === "string" && !refused) lines.push(`${pad("problem")}${s.problem}`)
  // refused before its CapabilityStatement was read (no token): what it declares is not known, not "no"
  if (!s.capabilityStatement) {
    lines.push(`${pad("capabilities")}unknown (the CapabilityStatement was not read without credentials)`)
    return lines
  }
  if (s.role === "source") {
    const levels = [
      s.export.system && "system",
      s.export.patient && "Patient",
      s.export.group && "Group",
    ].filter((l): l is string => typeof l === "string")
    lines.push(
      `${pad("$export")}${levels.length > 0 ? levels.join(", ") : "not declared (migrate tries the kick-off, and crawls if it is refused)"}`,
    )
  } else {
    lines.push(
      `${pad("$import")}${s.import.operation === null ? "not declared" : `${s.import.operation === "import" ? "$import" : "$bulk-submit"} declared${s.import.flavour ? ` (${s.import.flavour} flavour)` : " (flavour not recognised)"}`}`,
    )
    lines.push(
      `${pad("client ids")}${s.updateCreateTypes.length === 0 ? "refused (no type declares updateCreate)" : s.updateCreateTypes.length === s.declaredTypes.length ? `accepted (updateCreate on all ${s.declaredTypes.length} declared types); migrate confirms with a probe PUT` : `accepted for ${s.updateCreateTypes.length} of ${s.declaredTypes.length} types (updateCreate); migrate confirms with a probe PUT`}`,
    )
    lines.push(`${pad("transaction")}${yesNo(s.transaction)} (batch ${yesNo(s.batch)})`)
    lines.push(`${pad("bundle limit")}${s.bundleLimit.note}`)
  }
  if (counts && s.authorized) {
    const entries = Object.entries(s.counts.byType).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    lines.push(
      `${pad("resources")}${s.counts.total === 0 && s.counts.unknown.length === 0 ? "0 (empty)" : `${formatCount(s.counts.total)} in ${entries.length} types`} (${s.counts.method === "none" ? "no counts" : `counted with ${s.counts.method}`} over ${s.counts.scope === "declared types" ? `${s.counts.typesCounted} declared types` : `the ${s.counts.typesCounted === 1 ? "type" : `${s.counts.typesCounted} types`} of --type`})${s.counts.unknown.length > 0 ? `; ${s.counts.unknown.length} types without a count` : ""}`,
    )
    for (const [type, n] of entries)
      lines.push(`${pad("")}  ${type.padEnd(28)}${formatCount(n).padStart(10)}`)
  }
  return lines
}

/** The plain-text layout. */
export const render = (r: PlanReport): ReadonlyArray<string> => {
  const lines = [
    `ferry plan: ${r.source.url} → ${r.target.url} (read only: nothing was changed on either server)`,
    "",
  ]
  lines.push(...serverLines(r.source, true), "", ...serverLines(r.target, true), "")
  if (r.estimate !== null) {
    const e = r.estimate
    lines.push("Estimate")
    if (e.archiveBytes !== null && e.bytesPerResource !== null)
      lines.push(
        `${pad("archive")}≈ ${formatBytes(e.archiveBytes)} (≈ ${formatBytes(e.bytesPerResource)} per resource)`,
      )
    if (e.exportSeconds !== null && e.resourcesPerSecond !== null)
      lines.push(
        `${pad("export")}≈ ${formatDuration(e.exportSeconds * 1000)} at ≈ ${formatCount(e.resourcesPerSecond)} resources/s`,
      )
    lines.push(`${pad("")}${e.note}`, "")
  }
  if (r.strategy !== null) {
    const x = r.strategy.export
    const i = r.strategy.import
    lines.push("Strategy migrate would choose")
    lines.push(
      `${pad("export")}${x.mode === "bulk" ? `bulk $export, ${x.level} level` : "search crawl"}: ${x.why}`,
    )
    lines.push(
      `${pad("import")}${i.strategy === "put" ? "put (source ids kept)" : i.strategy === "post" ? "post (new ids, id map)" : "$import"}: ${i.why}${i.confirm ? `; ${i.confirm}` : ""}`,
    )
    lines.push("")
  }
  if (r.warnings.length > 0) {
    lines.push("Warnings")
    for (const w of r.warnings) lines.push(`  - ${w}`)
    lines.push("")
  }
  lines.push(
    r.ok
      ? "Verdict: a migration looks possible."
      : `Verdict: not possible as configured: ${[r.source.problem, r.target.problem, r.settingsProblem ?? null].filter((p) => p !== null).join("; ")}`,
  )
  return lines
}

export const runPlan = (f: Flags) =>
  Effect.gen(function* () {
    const settings = yield* Config.resolve(f.config, {
      from: f.from,
      to: f.to,
      mode: f.mode,
      level: f.level,
      group: f.group,
      strategy: f.strategy,
      bundleSize: f.bundleSize,
      parallel: f.parallel,
      source: unprefix("source", f),
      target: unprefix("target", f),
    })
    // the same server twice is refused, as migrate refuses it: no plan should call it possible
    const { source: sourceUrl, target: targetUrl } = yield* Config.requireUrls(settings)
    const perRequest = requestTimeoutOf(f.requestTimeout)
    if (Either.isLeft(perRequest))
      return yield* new Config.ConfigError({ reason: "Invalid", detail: perRequest.left })
    const timeout = Option.getOrElse(perRequest.right, () => PLAN_TIMEOUT)
    const types = Params.list(f.type)
    const typesProblem = Params.typesProblem("--type", types)
    if (typesProblem !== undefined)
      return yield* new Config.ConfigError({ reason: "Invalid", detail: typesProblem })
    const source = yield* clientFor(settings, "source", sourceUrl, timeout, types)
    const target = yield* clientFor(settings, "target", targetUrl, timeout, [])
    if (!f.json) yield* Console.error(`ferry plan: probing ${sourceUrl} and ${targetUrl} (read only)…`)
    // The target is counted over every type it declares (one request each): data of a type the source has
    // none of is data too, which verify would call extra after the migration (counted over the source's types
    // only, a target holding such data was called empty).
    const src = yield* Plan.probe({
      role: "source",
      ...source,
      concurrency: settings.parallel,
      ...(types.length > 0 ? { types } : {}),
    })
    const tgt = yield* Plan.probe({ role: "target", ...target, concurrency: settings.parallel })
    const ok = Option.isNone(src.failure) && Option.isNone(tgt.failure)

    let samples: ReadonlyArray<Plan.Sample> = []
    let estimate: Plan.Estimate | null = null
    if (Option.isNone(src.failure)) {
      const largest = Object.entries(src.report.counts.byType)
        .sort((a, b) => b[1] - a[1])
        .slice(0, SAMPLE_TYPES)
        .map(([t]) => t)
      const sampled = yield* Effect.either(
        Effect.forEach(largest, (t) => Plan.sampleType(source.client, t, SAMPLE_SIZE)),
      )
      if (Either.isRight(sampled)) {
        samples = sampled.right
        estimate = Plan.estimate(src.report.counts, samples)
      } else
        estimate = {
          ...Plan.estimate(src.report.counts, []),
          note: `no estimate: the sample fetch failed (${sampled.left.message})`,
        }
    }

    // The types migrate would load: those with resources, plus those whose count is unknown.
    const sourceTypes = [...Object.keys(src.report.counts.byType), ...src.report.counts.unknown]
    // (only when both answered as FHIR servers: a choice from a failed probe would read as advice)
    const strategy =
      src.report.capabilityStatement && tgt.report.capabilityStatement
        ? {
            export: Plan.chooseExport(src.report, settings.mode, settings.level),
            import: Plan.chooseImport(tgt.report, sourceTypes, settings.strategy),
          }
        : null
    const extra: Array<string> = []
    // what migrate refuses with these settings (a usage error, exit 2): the verdict says so, and so does the exit
    const settingsProblem =
      settings.level === "group" && Option.isNone(settings.group)
        ? "--level group needs the Group id: pass --group <id> (or group: in the config file, or FERRY_GROUP)"
        : undefined
    if (
      strategy !== null &&
      strategy.import.strategy === "put" &&
      settings.bundleSize > (tgt.report.bundleLimit.entries ?? Infinity)
    )
      extra.push(
        `--bundle-size ${settings.bundleSize} is above the target's limit of ${tgt.report.bundleLimit.entries} entries; use --bundle-size ${tgt.report.bundleLimit.entries}`,
      )
    const report: PlanReport = {
      source: src.report,
      target: tgt.report,
      estimate,
      strategy,
      warnings: [
        ...(strategy !== null ? Plan.warnings(src.report, tgt.report, strategy.import, samples) : []),
        ...extra,
      ],
      ok: ok && settingsProblem === undefined,
      ...(settingsProblem !== undefined ? { settingsProblem } : {}),
      changedNothing: true,
    }
    if (f.json) yield* Console.log(JSON.stringify(toJson(report, sourceTypes), null, 2))
    else for (const line of render(report)) yield* Console.log(line)
    // The first failure decides the exit code (Render.ts): 3 not authorised, 4 unreachable or failed.
    const failure = Option.orElse(src.failure, () => tgt.failure)
    if (Option.isSome(failure)) return yield* failure.value
    if (settingsProblem !== undefined)
      return yield* new Config.ConfigError({ reason: "Missing", detail: settingsProblem })
  }).pipe(
    Effect.scoped,
    Effect.provide(HttpLayer.layerFor(f.requestTimeout, PLAN_TIMEOUT)),
    // runMain turns Ctrl-C into interruption, which bin.ts's error report does not see
    Effect.onInterrupt(() =>
      Console.error("ferry: plan interrupted; it changes nothing, run it again when you like"),
    ),
  )

export const planCommand = Command.make("plan", flags, runPlan).pipe(
  Command.withDescription(
    "Preflight a migration without changing anything: probe both servers (reachability, auth, FHIR version, $export, $import, client ids, counts), estimate size and time, and show the strategy migrate would choose.",
  ),
)
