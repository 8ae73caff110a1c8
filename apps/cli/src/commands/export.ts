/**
 * `ferry export <base-url> --out <dir> [...]`
 *
 * Bulk `$export` (system, Patient or Group level; a search crawl when the server has none) into a
 * checksummed, resumable archive. Progress goes to stderr: a live display on a TTY (Progress.ts), plain
 * lines otherwise or with `--json`, which prints a summary on stdout; and every step is logged to `<out>/events.ndjson`. Running the same command again on the same
 * `--out` resumes an interrupted export.
 */
import { Args, Command, Options } from "@effect/cli"
import * as Archive from "@ferry/archive/Archive"
import * as HttpLayer from "../HttpLayer.js"
import * as Authenticator from "@ferry/auth/Authenticator"
import * as FhirClient from "@ferry/core/FhirClient"
import { ExportError } from "@ferry/export/ExportError"
import * as Export from "@ferry/export/Export"
import { Clock, Console, Effect, Either, Option } from "effect"
import * as BaseUrl from "../BaseUrl.js"
import * as Params from "../Params.js"
import { list } from "../Params.js"
import { authFlags, authSettings } from "../AuthFlags.js"
import * as Progress from "../Progress.js"
import * as Screen from "../Screen.js"
import { version } from "@ferry/core/Version"
import {
  allowExportErrors,
  attachmentOrigin,
  type FlagValues,
  parallelProblem,
  parseDuration,
  requestTimeout,
  requestTimeoutOf,
  tokenPolicy,
} from "../Flags.js"

const usage = (detail: string) => new ExportError({ reason: "Config", detail })

const formatBytes = Progress.formatBytes

const flags = {
  baseUrl: Args.text({ name: "base-url" }).pipe(Args.withDescription("The source FHIR server's base URL.")),
  out: Options.directory("out").pipe(
    Options.withDescription("The archive directory (created; rerun to resume)."),
  ),
  level: Options.choice("level", ["system", "patient", "group"]).pipe(
    Options.withDefault("system" as const),
    Options.withDescription(
      "Export level: system ($export), patient (Patient/$export) or group (Group/<id>/$export); default system.",
    ),
  ),
  group: Options.text("group").pipe(
    Options.optional,
    Options.withDescription("The Group id (--level group)."),
  ),
  type: Options.text("type").pipe(
    Options.repeated,
    Options.withDescription("Resource types (_type); repeat or comma-separate."),
  ),
  since: Options.text("since").pipe(
    Options.optional,
    Options.withDescription(
      "Only resources changed after this instant (_since; a date alone: 00:00 UTC), or 'auto': the transactionTime of the newest finished archive next to --out.",
    ),
  ),
  until: Options.text("until").pipe(
    Options.optional,
    Options.withDescription("Only resources changed up to this instant (_until; a date alone: 00:00 UTC)."),
  ),
  typeFilter: Options.text("type-filter").pipe(
    Options.repeated,
    Options.withDescription("A _typeFilter query, e.g. 'Observation?status=final'; repeatable."),
  ),
  patient: Options.text("patient").pipe(
    Options.repeated,
    Options.withDescription("Limit to these patients (POST kick-off); repeat or comma-separate."),
  ),
  elements: Options.text("elements").pipe(
    Options.repeated,
    Options.withDescription(
      "_elements: subsetted resources. NEVER import such an archive: partial resources overwrite complete ones.",
    ),
  ),
  includeAssociatedData: Options.text("include-associated-data").pipe(
    Options.repeated,
    Options.withDescription("includeAssociatedData values."),
  ),
  organizeOutputBy: Options.text("organize-output-by").pipe(
    Options.optional,
    Options.withDescription("[STU3] organizeOutputBy (e.g. Patient)."),
  ),
  allowPartialManifests: Options.boolean("allow-partial-manifests").pipe(
    Options.withDescription(
      "[STU3] allowPartialManifests=true: the files of each part of the manifest download while the job still runs.",
    ),
  ),
  param: Options.text("param").pipe(
    Options.repeated,
    Options.withDescription("A server-specific kick-off parameter k=v, passed through; repeatable."),
  ),
  post: Options.boolean("post").pipe(
    Options.withDescription("Kick off with POST and a Parameters body (implied by --patient)."),
  ),
  parallel: Options.integer("parallel").pipe(
    Options.withDefault(4),
    Options.withDescription("Parallel downloads (default 4)."),
  ),
  mode: Options.choice("mode", ["auto", "bulk", "crawl"]).pipe(
    Options.withDefault("auto" as const),
    Options.withDescription(
      "bulk: $export only; crawl: page through search; auto (default): $export, else crawl.",
    ),
  ),
  timeout: Options.text("timeout").pipe(
    Options.optional,
    Options.withDescription(
      "Give up waiting for the job after this long: 90s, 30m, 6h, 1d; a bare number is seconds (default 24h).",
    ),
  ),
  requestTimeout: requestTimeout("5m"),
  keepJob: Options.boolean("keep-job").pipe(
    Options.withDescription("Do not DELETE the job on the server after success."),
  ),
  gzip: Options.boolean("gzip").pipe(
    Options.withDescription("Store data files gzip-compressed (.ndjson.gz)."),
  ),
  noAttachments: Options.boolean("no-attachments").pipe(Options.withDescription("Do not fetch attachments.")),
  allowMissingAttachments: Options.boolean("allow-missing-attachments").pipe(
    Options.withDescription(
      "Finish the archive although some attachments cannot be fetched or verified (dead links at the source): they are left out, listed in events.ndjson, and their resources keep the source URL.",
    ),
  ),
  allowExportErrors,
  attachmentOrigin,
  json: Options.boolean("json").pipe(Options.withDescription("Print a JSON summary on stdout.")),
  ...authFlags,
}

type Flags = FlagValues<typeof flags>

/** Prints one progress line per interesting event on stderr (not a TTY, or `--json`). */
const plainLines = (started: number) => {
  let resources = 0
  let bytes = 0
  let lastProgress: string | undefined
  const capped = Progress.repeatsCapped("ferry export:")
  return (e: Export.ExportEvent): Effect.Effect<void> =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const secs = Math.max(0.001, (now - started) / 1000)
      switch (e.event) {
        case "file": {
          const count = Number(e.count ?? 0)
          bytes += Number(e.bytes ?? 0)
          // a deleted/ file's lines are Bundles of deletions, an error/ file's the server's OperationOutcomes:
          // neither counts as exported resources
          const what =
            e.kind === "deleted"
              ? Progress.counted(count, "Bundle of deletions", "Bundles of deletions")
              : e.kind === "error"
                ? Progress.counted(
                    count,
                    "OperationOutcome from the server",
                    "OperationOutcomes from the server",
                  )
                : Progress.counted(count, `${String(e.type ?? "")} resource`)
          if (e.kind !== "deleted" && e.kind !== "error") resources += count
          return yield* Console.error(
            `ferry export: ${String(e.path)}: ${what}, ${formatBytes(Number(e.bytes ?? 0))} (total ${Progress.counted(resources, "resource")}, ${formatBytes(bytes)}, ${formatBytes(bytes / secs)}/s)`,
          )
        }
        case "progress": {
          // One line per change of the server's X-Progress text, not one per poll.
          const text = e.progress ? String(e.progress) : ""
          if (text === lastProgress) return
          lastProgress = text
          return yield* Console.error(
            `ferry export: job running${text ? `: ${Progress.sanitize(text)}` : ""}`,
          )
        }
        case "attachments":
          return yield* Console.error(
            `ferry export: ${String(e.path)}: ${Progress.counted(Number(e.fetched ?? 0), "attachment")} fetched, ${formatBytes(Number(e.bytes ?? 0))}${Number(e.skipped) > 0 ? `, ${String(e.skipped)} already in the archive` : ""}`,
          )
        case "files-planned":
          return yield* Console.error(
            !Array.isArray(e.files)
              ? `ferry export: crawling ${Array.isArray(e.types) ? e.types.length : 0} resource types`
              : e.distributed === true
                ? `ferry export: the server's blocks split into ${e.files.length} per-type data files`
                : Number(e.done ?? 0) > 0
                  ? `ferry export: ${Progress.counted(e.files.length, "file")} in the manifest, ${String(e.done)} downloaded already`
                  : `ferry export: ${Progress.counted(e.files.length, "file")} to download`,
          )
        case "done":
          return yield* Console.error(doneLine(e, secs))
        case "warning":
          return yield* Console.error(`ferry export: WARNING: ${Progress.sanitize(e.detail, 1000)}`)
        // Display-only events (no journal line) are for the live display.
        case "file-progress":
        case "file-resumed":
        case "attachment":
        case "file-ready":
          return
        // a type the crawl found empty: the summary's counts say so, a line each would bury the rest
        case "file-empty":
          return
        // a resume says where it goes on; a broken connection's (the resume after it says that) nothing
        case "resume": {
          const notice = Progress.notice(e)
          if (notice !== undefined) yield* Console.error(notice)
          return
        }
        default: {
          const line = capped(e.event, plainLine(e))
          if (line !== undefined) yield* Console.error(line)
          return
        }
      }
    })
}

/** A plain line for an event without one of its own above: the live display's notice, a sentence, or the event. */
const plainLine = (e: Export.ExportEvent): string => {
  const notice = Progress.notice(e)
  if (notice !== undefined) return notice
  switch (e.event) {
    case "start":
      return `ferry export: ${e.resumed === true ? "resuming the export" : "exporting"} (${String(e.exportLevel)} level)`
    case "kickoff":
      return `ferry export: export job started${e.post === true ? " (POST kick-off)" : ""}`
    case "manifest":
      return `ferry export: the job is done: ${Progress.counted(Number(e.output ?? 0), "file")} to fetch${Number(e.deleted ?? 0) > 0 ? `, ${String(e.deleted)} of deletions` : ""}${Number(e.error ?? 0) > 0 ? `, ${String(e.error)} of errors` : ""} (transactionTime ${String(e.transactionTime)})`
    case "released":
      return "ferry export: the job is released on the server"
    case "reattach":
      return typeof e.detail === "string"
        ? `ferry export: ${Progress.sanitize(e.detail, 200)}`
        : "ferry export: the export job of the earlier run is still known; waiting for it again"
    case "manifest-part":
      return `ferry export: a part of the manifest arrived while the job runs: ${Progress.counted(Number(e.started ?? 0), "file")} to download now`
    case "poll-retry":
      return `ferry export: the job's status could not be read (${Progress.sanitize(e.status, 40)}); asking again in ${(Number(e.waitMs ?? 0) / 1000).toFixed(0)} s`
    case "inconsistent":
      return `ferry export: ${Progress.sanitize(e.detail, 300)}; the job's files do not add up, so a new export job is started`
    case "rekickoff-dropped":
      return `ferry export: ${Progress.counted(Number(e.files ?? 0), "finished file")} set aside: ${Progress.sanitize(e.detail, 200)}`
    case "replaced-job-released":
      return "ferry export: the replaced export job is released on the server"
    case "distributed":
      return `ferry export: ${Progress.sanitize(e.path, 120)}: split into ${Progress.counted(Number(e.files ?? 0), "per-type file")}`
    case "organized-file":
      return `ferry export: ${Progress.sanitize(e.path, 120)}: ${Progress.counted(Number(e.count ?? 0), "line")}, ${formatBytes(Number(e.bytes ?? 0))} of organized output, to be split by type`
    default: {
      // `types` (per-type totals of a manifest) is for the live display; the line stays short.
      const { event, types: _types, ...rest } = e
      return `ferry export: ${event} ${JSON.stringify(rest)}`
    }
  }
}

/** The summary line printed when the export is done. */
const doneLine = (e: Export.ExportEvent, secs: number): string =>
  `ferry export: done: ${Progress.counted(Number(e.resources ?? 0), "resource")} in ${Progress.counted(Number(e.files ?? 0), "file")}, ${formatBytes(Number(e.bytes ?? 0))}, ${Progress.counted(Number(e.attachments ?? 0), "attachment")}, ${secs.toFixed(1)} s`

/** The live display on a TTY (Screen.ts): the frame of `Progress.render`; notices above it. */
const liveDisplay = (started: number, color: boolean) =>
  Effect.gen(function* () {
    let state = Progress.initial
    const capped = Progress.repeatsCapped("ferry export:")
    const screen = yield* Screen.make((now, size) =>
      Progress.render(state, now, { width: size.width, color, maxTypes: Screen.maxTypes(size, 8) }),
    )
    const onEvent = (e: Export.ExportEvent): Effect.Effect<void> =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const before = state.phase
        state = Progress.reduce(state, e, now)
        if (screen.stopped()) return
        if (e.event === "done") {
          yield* screen.stop
          return yield* Console.error(doneLine(e, Math.max(0.001, (now - started) / 1000)))
        }
        const notice = capped(e.event, Progress.notice(e))
        if (notice !== undefined) return yield* screen.notice(notice, now)
        yield* screen.draw(now, state.phase !== before)
      })
    return { onEvent, stop: screen.stop }
  })

export const runExport = (f: Flags) =>
  Effect.gen(function* () {
    const tooMany = parallelProblem(f.parallel)
    if (tooMany !== undefined) return yield* usage(tooMany)
    const timeout = Option.isSome(f.timeout) ? parseDuration(f.timeout.value) : Option.none()
    if (Option.isSome(f.timeout) && Option.isNone(timeout)) {
      return yield* usage(`--timeout ${f.timeout.value} is not a duration; use e.g. 90s, 30m, 6h or 1d`)
    }
    const perRequest = requestTimeoutOf(f.requestTimeout)
    if (Either.isLeft(perRequest)) return yield* usage(perRequest.left)
    const custom: Array<readonly [string, string]> = []
    for (const p of f.param) {
      const i = p.indexOf("=")
      if (i <= 0) return yield* usage(`--param ${p} is not of the form name=value`)
      custom.push([p.slice(0, i), p.slice(i + 1)])
    }
    const parsed = BaseUrl.parse(f.baseUrl)
    if (Either.isLeft(parsed)) return yield* usage(`${BaseUrl.shown(f.baseUrl)} ${parsed.left}`)
    const baseUrl = parsed.right
    const problem =
      Params.typesProblem("--type", list(f.type)) ??
      (Option.isSome(f.since) && f.since.value !== "auto"
        ? Params.instantProblem("--since", f.since.value)
        : undefined) ??
      (Option.isSome(f.until) ? Params.instantProblem("--until", f.until.value) : undefined) ??
      Params.elementsProblem("--elements", list(f.elements))
    if (problem !== undefined) return yield* usage(problem)
    const filters = Params.typeFilters(f.typeFilter)
    if ("problem" in filters) return yield* usage(filters.problem)
    const origins = Params.attachmentOrigins(f.attachmentOrigin)
    if ("problem" in origins) return yield* usage(origins.problem)
    if (Option.isSome(f.group) && f.level !== "group")
      return yield* usage(
        `--group is for --level group (this is --level ${f.level}); add --level group, or drop --group`,
      )
    const settings = yield* authSettings(f)
    // a bulk export of these types: scopes that allow fewer fail at the token, not as a quietly smaller archive
    const authenticator = yield* Authenticator.fromSettings(
      settings,
      baseUrl,
      "read",
      undefined,
      yield* Params.exportedTypesOf(baseUrl, list(f.type), f.level, perRequest.right),
      tokenPolicy(perRequest.right),
    )
    const client = yield* FhirClient.make({
      baseUrl,
      authorize: authenticator.authorize,
      onUnauthorized: authenticator.invalidate,
      refusedHint: authenticator.refusedHint,
      retry: { times: 8 },
      ...(Option.isSome(perRequest.right) ? { timeout: perRequest.right.value } : {}),
    })
    const started = yield* Clock.currentTimeMillis
    yield* Console.error(`ferry export: ${baseUrl} → ${f.out} (${authenticator.describe})`)
    const live = process.stderr.isTTY === true && !f.json
    const noColor = process.env.NO_COLOR
    const display = live
      ? yield* liveDisplay(started, noColor === undefined || noColor === "")
      : { onEvent: plainLines(started), stop: Effect.void }
    const summary = yield* Export.run({
      client,
      out: f.out,
      params: {
        level: f.level,
        ...(Option.isSome(f.group) ? { groupId: f.group.value } : {}),
        types: list(f.type),
        ...(Option.isSome(f.since)
          ? { since: f.since.value === "auto" ? "auto" : Params.instant(f.since.value) }
          : {}),
        ...(Option.isSome(f.until) ? { until: Params.instant(f.until.value) } : {}),
        typeFilters: filters.filters,
        elements: list(f.elements),
        patients: list(f.patient),
        includeAssociatedData: list(f.includeAssociatedData),
        ...(Option.isSome(f.organizeOutputBy) ? { organizeOutputBy: f.organizeOutputBy.value } : {}),
        ...(f.allowPartialManifests ? { allowPartialManifests: true } : {}),
        custom,
        post: f.post,
      },
      mode: f.mode,
      parallel: f.parallel,
      ...(Option.isSome(timeout) ? { timeout: timeout.value } : {}),
      keepJob: f.keepJob,
      attachments: !f.noAttachments,
      allowMissingAttachments: f.allowMissingAttachments,
      attachmentOrigins: origins.origins,
      allowExportErrors: f.allowExportErrors,
      gzip: f.gzip,
      tool: { name: "ferry", version },
      onEvent: display.onEvent,
    }).pipe(
      // The last frame stays on screen, above the error or interruption line.
      Effect.ensuring(display.stop),
    )
    if (f.json) yield* Console.log(JSON.stringify({ ok: true, ...summary }, null, 2))
  }).pipe(
    Effect.scoped,
    Effect.provide(HttpLayer.layerFor(f.requestTimeout)),
    // runMain turns Ctrl-C into interruption, which bin.ts's error report does not see.
    Effect.onInterrupt(() =>
      // (stopped because another ferry took the archive: the last line says so)
      Archive.lockLost() !== undefined
        ? Effect.void
        : Console.error(
            "ferry: export interrupted; run the same command again to resume (an export job already started on the server is kept for that)",
          ),
    ),
  )

export const exportCommand = Command.make("export", flags, runExport).pipe(
  Command.withDescription(
    "Bulk-export a FHIR server (or crawl it) into a checksummed, resumable archive with its attachments.",
  ),
)
