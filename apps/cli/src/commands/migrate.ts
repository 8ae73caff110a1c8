/**
 * `ferry migrate --from <url> --to <url> [--archive <dir>] [--since auto] [--max-staged 2GB] [--prune-staged] …`
 *
 * Export and import in one job (Migrate.ts): the import starts on finished files while others still
 * download; rerunning the same command resumes. Settings come from flags, `FERRY_*` variables and a config
 * file (`--config`, Config.ts), in that order; each server has its own `--source-…` / `--target-…` auth.
 * Without `--archive` the archive goes to `.ferry-migrate/<source>--<target>/full` (an incremental run with
 * `--since`: `…/since-<instant>`), so the same command finds its archive again and `--since auto` finds the
 * earlier ones. Progress on stderr (a live display on a TTY, plain lines otherwise or with `--json`, which
 * prints a summary on stdout). After the migration nothing else runs: check it with `ferry verify`.
 */
import * as NFS from "node:fs"
import * as Path from "node:path"
import { Command, Options } from "@effect/cli"
import * as Archive from "@ferry/archive/Archive"
import * as Authenticator from "@ferry/auth/Authenticator"
import * as Imports from "@ferry/archive/Imports"
import * as FhirClient from "@ferry/core/FhirClient"
import * as Http from "@ferry/core/Http"
import * as Export from "@ferry/export/Export"
import * as Continues from "@ferry/import/Continues"
import { ImportError, quarantined } from "@ferry/import/ImportError"
import { Clock, Console, type Duration, Effect, Either, Option } from "effect"
import { shellWord } from "@ferry/core/Shell"
import { type AuthFlagValues, authFlagWords, readingScope, unprefix } from "../AuthFlags.js"
import * as Config from "../Config.js"
import { serveFlags, serveOptions } from "../Serve.js"
import {
  allowExportErrors,
  attachmentOrigin,
  dropMeta,
  dropMetaOf,
  dropsKept,
  restart,
  type FlagValues,
  parallelProblem,
  parseDuration,
  requestTimeout,
  requestTimeoutOf,
  tokenPolicy,
} from "../Flags.js"
import * as HttpLayer from "../HttpLayer.js"
import * as Migrate from "../Migrate.js"
import * as Progress from "../Progress.js"
import * as Screen from "../Screen.js"
import { version } from "@ferry/core/Version"
import * as Params from "../Params.js"
import { list } from "../Params.js"
import * as Bytes from "../Bytes.js"

const flags = {
  from: Options.text("from").pipe(
    Options.optional,
    Options.withDescription("The source FHIR server's base URL (or FERRY_FROM, or source.url in --config)."),
  ),
  to: Options.text("to").pipe(
    Options.optional,
    Options.withDescription("The target FHIR server's base URL (or FERRY_TO, or target.url in --config)."),
  ),
  archive: Options.text("archive").pipe(
    Options.optional,
    Options.withDescription(
      "The archive directory of this migration (default .ferry-migrate/<source>--<target>/full, or …/since-<instant>); rerun to resume.",
    ),
  ),
  since: Options.text("since").pipe(
    Options.optional,
    Options.withDescription(
      "Incremental: only changes (and deletes) after this instant (a date alone: 00:00 UTC), or 'auto': after the transactionTime of the newest finished archive next to this one (cutover).",
    ),
  ),
  level: Options.choice("level", ["system", "patient", "group"]).pipe(
    Options.optional,
    Options.withDescription("Export level (default system)."),
  ),
  group: Options.text("group").pipe(
    Options.optional,
    Options.withDescription("The Group id (--level group)."),
  ),
  type: Options.text("type").pipe(
    Options.repeated,
    Options.withDescription("Resource types (_type); repeat or comma-separate."),
  ),
  typeFilter: Options.text("type-filter").pipe(
    Options.repeated,
    Options.withDescription("A _typeFilter query, e.g. 'Observation?status=final'; repeatable."),
  ),
  allowPartialManifests: Options.boolean("allow-partial-manifests").pipe(
    Options.withDescription(
      "[STU3] allowPartialManifests=true: the files of each part of the manifest download while the job still runs.",
    ),
  ),
  mode: Options.choice("mode", ["auto", "bulk", "crawl"]).pipe(
    Options.optional,
    Options.withDescription(
      "bulk: $export only; crawl: page through search; auto (default): $export, else crawl.",
    ),
  ),
  parallel: Options.integer("parallel").pipe(
    Options.optional,
    Options.withDescription("Parallel downloads and Bundles in flight (default 4)."),
  ),
  strategy: Options.choice("strategy", ["auto", "put", "post", "import"]).pipe(
    Options.optional,
    Options.withDescription("Import strategy (see `ferry import --help`; default auto)."),
  ),
  ...serveFlags,
  dropMeta: dropMeta(),
  bundleSize: Options.integer("bundle-size").pipe(
    Options.optional,
    Options.withDescription("Entries per transaction Bundle (default 500)."),
  ),
  maxBundleBytes: Bytes.option("max-bundle-bytes").pipe(
    Options.optional,
    Options.withDescription("Estimated bytes per transaction Bundle, e.g. 5MiB or 5242880 (default 10 MiB)."),
  ),
  maxStaged: Options.text("max-staged").pipe(
    Options.optional,
    Options.withDescription(
      "Hold back downloads while downloaded-but-not-imported data files exceed this size (e.g. 2GB, 500MiB).",
    ),
  ),
  restart: restart(),
  pruneStaged: Options.boolean("prune-staged").pipe(
    Options.withDescription(
      "Delete imported data files from the archive (the manifest still lists them; verify against --source then).",
    ),
  ),
  timeout: Options.text("timeout").pipe(
    Options.optional,
    Options.withDescription(
      "Give up waiting for the export job after this long: 90s, 30m, 6h, 1d; a bare number is seconds (default 24h).",
    ),
  ),
  keepJob: Options.boolean("keep-job").pipe(
    Options.withDescription("Do not DELETE the export job on the source after success."),
  ),
  gzip: Options.boolean("gzip").pipe(Options.withDescription("Store data files gzip-compressed.")),
  noAttachments: Options.boolean("no-attachments").pipe(Options.withDescription("Do not carry attachments.")),
  allowMissingAttachments: Options.boolean("allow-missing-attachments").pipe(
    Options.withDescription(
      "Finish without the attachments that could not be fetched or verified (dead links at the source): their resources keep the source URL, which verify reports.",
    ),
  ),
  allowExportErrors,
  attachmentOrigin,
  requestTimeout: requestTimeout("5m"),
  json: Options.boolean("json").pipe(Options.withDescription("Print a JSON summary on stdout.")),
  ...Config.configFlags,
}

type Flags = FlagValues<typeof flags>

const usage = (detail: string) => new ImportError({ reason: "Config", detail })

const slug = (url: string) => Imports.targetSlug(url)

/** The default archive of a migration (see the module doc). */
export const defaultArchive = (from: string, to: string, since: string | undefined): string => {
  const root = Path.join(".ferry-migrate", `${slug(from)}--${slug(to)}`)
  return since === undefined
    ? Path.join(root, "full")
    : Path.join(root, `since-${since.replace(/[^A-Za-z0-9.-]/g, "_")}`)
}

const client = (
  baseUrl: string,
  settings: Authenticator.AuthSettings,
  retries: number,
  role: "source" | "target",
  perRequest: Option.Option<Duration.Duration>,
  /** The source: the types exported (empty: every type), which its token's scopes must allow reading. */
  exportTypes?: ReadonlyArray<string>,
) =>
  Effect.gen(function* () {
    // The target is written to: its token must allow writes (SMART's default scope follows).
    const access = role === "target" ? "write" : "read"
    const authenticator = yield* Authenticator.fromSettings(
      settings,
      baseUrl,
      access,
      role,
      exportTypes,
      tokenPolicy(perRequest),
    )
    const c = yield* FhirClient.make({
      baseUrl,
      authorize: authenticator.authorize,
      onUnauthorized: authenticator.invalidate,
      refusedHint: authenticator.refusedHint,
      retry: { times: retries },
      ...(Option.isSome(perRequest) ? { timeout: perRequest.value } : {}),
    })
    return { client: c, describe: authenticator.describe }
  })

/**
 * The preflight's sentence: a server that is not there is unreachable; one that answered something else (TLS
 * on an http port, not HTTP, a certificate) is said as plan and export say it, with the flag to check.
 */
const transportDetail = (role: "source" | "target", flag: string, detail: string | undefined): string => {
  switch (Http.transportProblem(detail)) {
    case "NotTls":
    case "NotHttp":
    case "UntrustedCertificate":
    case "ExpiredCertificate":
    case "WrongHostCertificate":
    case "BadCertificate":
    case "Unsendable":
    case "NoAnswer":
      return `the ${role} server (${flag}): ${Http.transportSentence(detail)}`
    default:
      return `the ${role} server is unreachable (${detail ?? "no answer"}); check ${flag} and that the server is running`
  }
}

/** Reads the CapabilityStatement once (few retries) so an unreachable server fails in one sentence. */
const preflight = (role: "source" | "target", flag: string, c: FhirClient.FhirClient) =>
  c.capabilities().pipe(
    Effect.asVoid,
    Effect.catchIf(
      (e) => e._tag === "FhirError" && e.reason === "Transport",
      (e) =>
        Effect.fail(
          new ImportError({
            reason: "Target",
            url: c.baseUrl,
            detail: transportDetail(role, flag, e._tag === "FhirError" ? e.detail : undefined),
          }),
        ),
    ),
  )

const fmtBytes = Progress.formatBytes
const fmtCount = Progress.formatCount
const counted = Progress.counted

/** A line for the events worth a line (plain output), or undefined; `strategy` only once. */
const lines = () => {
  let strategy: unknown
  const capped = Progress.repeatsCapped("ferry migrate:")
  return (e: Migrate.MigrateEvent): string | undefined => {
    if (e.from === "import" && e.event === "strategy") {
      if (e.strategy === strategy) return undefined
      strategy = e.strategy
    }
    return capped(e.event, lineOf(e))
  }
}

const lineOf = (e: Migrate.MigrateEvent): string | undefined => {
  const p = "ferry migrate:"
  if (e.event === "warning") return `${p} WARNING: ${String(e.detail)}`
  if (e.from === "export") {
    switch (e.event) {
      case "since":
        return `${p} since ${String(e.since ?? "(none)")}: ${String(e.detail)}`
      case "kickoff":
        return `${p} export job started`
      case "fallback":
        return `${p} no bulk $export: ${String(e.detail)}`
      case "manifest":
        return `${p} export manifest: ${Progress.counted(Number(e.output ?? 0), "file")} (transactionTime ${String(e.transactionTime)})`
      case "file":
        return `${p} downloaded ${String(e.path)}: ${fmtCount(Number(e.count ?? 0))} ${String(e.type ?? "")} (${fmtBytes(Number(e.bytes ?? 0))})`
      case "already-complete":
        // the archive is imported as it is: say when it was taken (another target gets that snapshot)
        return `${p} the export is already complete${e.transactionTime !== undefined ? ` (the source as of ${String(e.transactionTime)}): what changed there since is not in it; ferry migrate --since auto brings it` : ""}`
      case "attachment-failed":
        return `${p} attachment failed: ${String(e.detail)}`
      case "done":
        return `${p} export done: ${counted(Number(e.resources ?? 0), "resource")}, ${counted(Number(e.files ?? 0), "file")}, ${counted(Number(e.attachments ?? 0), "attachment")}`
      default:
        return undefined
    }
  }
  if (e.from === "import") {
    switch (e.event) {
      case "strategy":
        return `${p} import strategy ${String(e.strategy)}`
      case "quarantined":
        return `${p} quarantined ${String(e.key)} (${String(e.source)}): ${String(e.reason)}`
      case "throttled":
        return `${p} ${Progress.throttledWhy(e)}; parallel ${String(e.parallel)}`
      case "bundle-size":
        return `${p} the target refused a Bundle of ${String(e.refused)} entries as too large; sending at most ${String(e.entries)} a Bundle from now on`
      case "delete-skipped":
        return `${p} delete of ${String(e.source)} skipped: ${String(e.reason)}`
      default:
        return undefined
    }
  }
  switch (e.event) {
    case "resume":
      return `${p} resuming: ${counted(Number(e.importedFiles ?? 0), "file")} imported by earlier runs${e.done === true ? " (the migration had finished)" : ""}`
    case "continues":
      return `${p} continues ${String(e.archive)}${e.idMap === "none" ? "" : " (its id map carried over)"}${dropsKept(e.dropMeta)}`
    case "wave":
      return `${p} import wave ${String(e.wave)}${e.final === true ? " (final)" : ""}: ${counted(Number(e.files ?? 0), "file")}, ${counted(Number(e.resources ?? 0), "resource")}${Number(e.deleted ?? 0) > 0 ? `, ${counted(Number(e.deleted), "delete file")}` : ""} (staged ${fmtBytes(Number(e.staged ?? 0))})`
    case "wave-done":
      return `${p} wave ${String(e.wave)} done: ${fmtCount(Number(e.total ?? 0))} written${earlierBundles(Number(e.resumedChunks ?? 0))}, ${String(e.quarantined)} quarantined${Number(e.deleted ?? 0) > 0 ? `, ${String(e.deleted)} deleted` : ""}`
    case "paused":
      return `${p} downloads held back: ${fmtBytes(Number(e.staged ?? 0))} staged > --max-staged ${fmtBytes(Number(e.maxStaged ?? 0))}`
    case "unpaused":
      return `${p} downloads go on (staged ${fmtBytes(Number(e.staged ?? 0))})`
    case "pruned":
      return `${p} pruned imported data files: ${String(e.files)} so far (${fmtBytes(Number(e.bytes ?? 0))})`
    case "already-complete":
      return `${p} this migration had already finished; nothing to do (for what changed at the source since: --since auto)`
    default:
      return undefined
  }
}

/**
 * The `ferry verify` command that checks this migration (printed at the end). Against the archive, verify
 * finds the id map and the types by itself. With data files pruned it has to compare with the source
 * server, which tells it neither: the command names the id map when the import wrote one (a POST import
 * gave new ids, and without the map no resource matches) and the migration's `--type` (the source holds
 * the other types too). What verify cannot narrow the same way (`--level patient|group`, `--type-filter`,
 * given in `narrowed`) is said in words, since the resources outside it then show as missing.
 */
export const verifySuggestion = (options: {
  readonly from: string
  readonly to: string
  readonly archive: string
  readonly pruned: boolean
  readonly types: ReadonlyArray<string>
  readonly narrowed: ReadonlyArray<string>
  /** The migration's `--drop-meta`: verify leaves those members out. */
  readonly dropMeta?: ReadonlyArray<string>
  /** The migration's credentials: verify reads both servers (the target's as `--auth …`). */
  readonly sourceAuth?: AuthFlagValues
  readonly targetAuth?: AuthFlagValues
}): string => {
  const { from, to, archive } = options
  // verify reads the target: the migration's write scope, if that is what it had, made to read
  const targetAuth =
    options.targetAuth === undefined
      ? []
      : authFlagWords({
          ...options.targetAuth,
          scope: Option.map(options.targetAuth.scope, readingScope),
        }).map(shellWord)
  const dropped =
    options.dropMeta !== undefined && options.dropMeta.length > 0
      ? ["--drop-meta", options.dropMeta.join(",")]
      : []
  if (!options.pruned)
    return `ferry migrate: check it with: ${["ferry verify --archive", shellWord(archive), "--target", shellWord(to), ...targetAuth, ...dropped].join(" ")}`
  const idMap = Imports.idMapPath(archive, to)
  const words = [
    "ferry verify --source",
    shellWord(from),
    ...(options.sourceAuth === undefined ? [] : authFlagWords(options.sourceAuth, "source").map(shellWord)),
    "--target",
    shellWord(to),
    ...targetAuth,
    ...(options.types.length > 0 ? ["--type", shellWord(options.types.join(","))] : []),
    ...(NFS.existsSync(idMap) ? ["--id-map", shellWord(idMap)] : []),
    ...dropped,
  ]
  const partial =
    options.narrowed.length > 0
      ? `; the migration took only part of the source (${options.narrowed.join(", ")}), so the source's other resources show as missing`
      : ""
  return `ferry migrate: check it with: ${words.join(" ")} (data files were pruned from the archive${partial})`
}

/** After a resume: the Bundles an earlier run landed, which this run's "written" leaves out. */
const earlierBundles = (n: number): string =>
  n > 0
    ? ` (this run; ${Progress.counted(n, "Bundle")} an earlier run landed ${n === 1 ? "is" : "are"} not sent again)`
    : ""

const doneLine = (s: Migrate.MigrateSummary): string =>
  `ferry migrate: done: ${fmtCount(s.export.resources)} resources exported, ${fmtCount(s.import.total)} written${earlierBundles(s.import.resumedChunks)} in ${Progress.counted(s.waves, "wave")}${s.earlierWaves > 0 ? ` (after ${Progress.counted(s.earlierWaves, "wave")} of earlier runs)` : ""} (${Progress.counted(s.overlapped, "file")} while the export ran), ${s.import.deleted} deleted, ${s.import.quarantined} quarantined, ${(s.timings.totalMs / 1000).toFixed(1)} s (export ${(s.timings.exportMs / 1000).toFixed(1)} s)`

/** The live display on a TTY (Screen.ts): the export's frame (Progress.ts) plus one line for the import. */
const liveDisplay = (color: boolean) =>
  Effect.gen(function* () {
    let state = Progress.initial
    let importLine = "  import: waiting for the first finished files"
    const screen = yield* Screen.make((now, size) => [
      ...Progress.render(state, now, {
        width: size.width,
        color,
        maxTypes: Screen.maxTypes(size, 9),
        title: "ferry migrate",
      }),
      Progress.truncate(importLine, size.width),
    ])
    let written = 0
    const capped = Progress.repeatsCapped("ferry migrate:")
    const onEvent = (e: Migrate.MigrateEvent): Effect.Effect<void> =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        if (e.from === "export") state = Progress.reduce(state, e, now)
        if (e.from === "import" && e.event === "chunk") written = Math.max(written, Number(e.total ?? 0))
        if (e.from === "migrate" && e.event === "wave") {
          written = 0
          importLine = `  import: wave ${String(e.wave)}${e.final === true ? " (final)" : ""} · ${counted(Number(e.files ?? 0), "file")} · ${counted(Number(e.resources ?? 0), "resource")} · staged ${fmtBytes(Number(e.staged ?? 0))}`
        }
        if (e.from === "migrate" && e.event === "wave-done")
          importLine = `  import: wave ${String(e.wave)} done · ${counted(Number(e.importedFiles ?? 0), "file")} imported · staged ${fmtBytes(Number(e.staged ?? 0))}`
        if (screen.stopped()) return
        const notice = capped(
          e.event,
          e.from === "export"
            ? Progress.notice(e)
            : e.event === "warning" ||
                e.event === "quarantined" ||
                e.event === "paused" ||
                e.event === "continues"
              ? lineOf(e)
              : undefined,
        )
        if (notice !== undefined) return yield* screen.notice(notice, now)
        if (e.from === "import" && e.event === "chunk")
          importLine = `${importLine.replace(/ \u00b7 \d[\d,]* written$/, "")} · ${fmtCount(written)} written`
        yield* screen.draw(now)
      })
    return { onEvent, stop: screen.stop }
  })

export const runMigrate = (f: Flags) =>
  Effect.gen(function* () {
    const settings = yield* Config.resolve(f.config, {
      from: f.from,
      to: f.to,
      archive: f.archive,
      parallel: f.parallel,
      bundleSize: f.bundleSize,
      maxBundleBytes: f.maxBundleBytes,
      strategy: f.strategy,
      mode: f.mode,
      level: f.level,
      group: f.group,
      source: unprefix("source", f),
      target: unprefix("target", f),
    })
    const { source: from, target: to } = yield* Config.requireUrls(settings)
    const timeout = Option.isSome(f.timeout) ? parseDuration(f.timeout.value) : Option.none()
    if (Option.isSome(f.timeout) && Option.isNone(timeout))
      return yield* usage(`--timeout ${f.timeout.value} is not a duration; use e.g. 90s, 30m, 6h or 1d`)
    const perRequest = requestTimeoutOf(f.requestTimeout)
    if (Either.isLeft(perRequest)) return yield* usage(perRequest.left)
    const drop = dropMetaOf(f.dropMeta)
    if (Either.isLeft(drop)) return yield* usage(drop.left)
    const maxStaged = Option.isSome(f.maxStaged) ? Bytes.parseBytes(f.maxStaged.value) : Option.none()
    if (Option.isSome(f.maxStaged) && Option.isNone(maxStaged))
      return yield* usage(`--max-staged ${f.maxStaged.value} is not a size; use e.g. 2GB or 500MiB`)
    const tooMany = parallelProblem(settings.parallel)
    if (tooMany !== undefined) return yield* usage(tooMany)
    if (settings.bundleSize < 1) return yield* usage("--bundle-size must be at least 1")
    const serve = yield* serveOptions(f, settings.strategy)
    const since = Option.getOrUndefined(Option.map(f.since, (v) => (v === "auto" ? v : Params.instant(v))))
    const problem =
      Params.typesProblem("--type", list(f.type)) ??
      (since !== undefined && since !== "auto" ? Params.instantProblem("--since", since) : undefined)
    if (problem !== undefined) return yield* usage(problem)
    const origins = Params.attachmentOrigins(f.attachmentOrigin)
    if ("problem" in origins) return yield* usage(origins.problem)
    const filters = Params.typeFilters(f.typeFilter)
    if ("problem" in filters) return yield* usage(filters.problem)
    let archive: string
    /** The earlier migration this `--since auto` run finishes instead of starting the next delta. */
    let finishing: string | undefined
    if (Option.isSome(settings.archive)) {
      archive = settings.archive.value
      // a file there: said as the wrong setting it is (export's --out is checked the same way)
      const stat = NFS.statSync(archive, { throwIfNoEntry: false })
      if (stat !== undefined && !stat.isDirectory())
        return yield* usage(
          `--archive ${archive} is a file, not a folder; give the folder for the archive (made when missing)`,
        )
    } else if (since === "auto") {
      // the newest finished sibling migrated into this target decides the delta's directory: a rerun after a
      // kill finds it again. When that one's import did not finish (killed after its export), it is the one to
      // run on: its delta is not on the target yet, and the next one cannot start before it (its id map)
      const root = Path.dirname(defaultArchive(from, to, undefined))
      const next = Path.join(root, "next")
      const migratedHere = (dir: string) => Imports.readMigrateLedger(dir, to) !== undefined
      const previous = yield* Export.previousTransactionTime(next, {
        baseUrl: from,
        params: {
          level: settings.level,
          ...(Option.isSome(settings.group) ? { groupId: settings.group.value } : {}),
          types: list(f.type),
          typeFilters: filters.filters,
        },
        accepts: migratedHere,
      })
      const earlier = Option.isSome(previous)
        ? Option.getOrUndefined(yield* Continues.previousArchive(next, previous.value, to))
        : undefined
      if (earlier !== undefined && Imports.readMigrateLedger(earlier, to)?.done === false) {
        archive = earlier
        finishing = earlier
      } else archive = defaultArchive(from, to, Option.getOrUndefined(previous))
    } else archive = defaultArchive(from, to, since)

    const sourceAuth = yield* Config.serverAuthSettings(settings, "source")
    const targetAuth = yield* Config.serverAuthSettings(settings, "target")
    const source = yield* client(
      from,
      sourceAuth,
      8,
      "source",
      perRequest.right,
      yield* Params.exportedTypesOf(from, list(f.type), settings.level, perRequest.right),
    )
    const target = yield* client(to, targetAuth, 8, "target", perRequest.right)
    yield* Console.error(
      `ferry migrate: ${from} (${source.describe}) → ${to} (${target.describe}), archive ${archive}`,
    )
    if (finishing !== undefined)
      yield* Console.error(
        `ferry migrate: the newest migration into this target (${finishing}) was stopped before its import ended: this run finishes it; run the same command again afterwards for what changed since`,
      )
    yield* Effect.all(
      [
        client(from, sourceAuth, 1, "source", perRequest.right).pipe(
          Effect.flatMap((c) => preflight("source", "--from", c.client)),
        ),
        client(to, targetAuth, 1, "target", perRequest.right).pipe(
          Effect.flatMap((c) => preflight("target", "--to", c.client)),
        ),
      ],
      { concurrency: 2 },
    )

    const live = process.stderr.isTTY === true && !f.json
    const plain = lines()
    const noColor = process.env.NO_COLOR
    const display = live
      ? yield* liveDisplay(noColor === undefined || noColor === "")
      : {
          onEvent: (e: Migrate.MigrateEvent) => {
            const line = plain(e)
            return line === undefined ? Effect.void : Console.error(line)
          },
          stop: Effect.void,
        }
    const summary = yield* Migrate.run({
      source: source.client,
      target: target.client,
      archive,
      params: {
        level: settings.level,
        ...(Option.isSome(settings.group) ? { groupId: settings.group.value } : {}),
        types: list(f.type),
        ...(since !== undefined ? { since } : {}),
        typeFilters: filters.filters,
        ...(f.allowPartialManifests ? { allowPartialManifests: true } : {}),
      },
      mode: settings.mode,
      parallel: settings.parallel,
      importParallel: settings.parallel,
      bundleSize: settings.bundleSize,
      maxBundleBytes: settings.maxBundleBytes,
      ...(drop.right.length > 0 ? { dropMeta: drop.right } : {}),
      ...(settings.strategy !== "auto" ? { strategy: settings.strategy } : {}),
      ...(serve !== undefined ? { serve } : {}),
      ...(Option.isSome(timeout) ? { timeout: timeout.value } : {}),
      ...(Option.isSome(maxStaged) ? { maxStaged: maxStaged.value } : {}),
      pruneStaged: f.pruneStaged,
      ...(f.restart ? { restart: true } : {}),
      keepJob: f.keepJob,
      gzip: f.gzip,
      attachments: !f.noAttachments,
      allowMissingAttachments: f.allowMissingAttachments,
      attachmentOrigins: origins.origins,
      allowExportErrors: f.allowExportErrors,
      tool: { name: "ferry", version },
      onEvent: display.onEvent,
    }).pipe(Effect.ensuring(display.stop))
    yield* Console.error(doneLine(summary))
    yield* Console.error(
      verifySuggestion({
        from,
        to,
        archive,
        pruned: summary.pruned.files > 0,
        types: list(f.type),
        dropMeta: summary.import.dropMeta ?? drop.right,
        narrowed: [
          ...(settings.level !== "system" ? [`--level ${settings.level}`] : []),
          ...(filters.filters.length > 0 ? ["--type-filter"] : []),
        ],
        sourceAuth: settings.source.auth,
        targetAuth: settings.target.auth,
      }),
    )
    const pending = Imports.quarantineCounts(archive, to)
    // `ok`: exit 0 (a failure prints `{ok: false, exitCode, error}`; exit 7 prints this with ok false)
    if (f.json)
      yield* Console.log(
        JSON.stringify({ ok: pending.total === 0, ...summary, quarantinePending: pending.total }, null, 2),
      )
    if (pending.total > 0)
      return yield* quarantined(
        pending.total,
        Imports.quarantineDir(archive, to),
        summary.pruned.files > 0
          ? "a new migration (another --archive) into the same target: data files were pruned from this archive, so ferry import --retry-quarantine cannot replay them, and resources already there are matched, not duplicated"
          : `ferry import ${archive} --to ${to} --retry-quarantine`,
        pending.waiting,
        pending.inArchive,
      )
  }).pipe(
    Effect.scoped,
    Effect.provide(HttpLayer.layerFor(f.requestTimeout)),
    Effect.onInterrupt(() =>
      // (stopped because another ferry took the archive: the last line says so)
      Archive.lockLost() !== undefined
        ? Effect.void
        : Console.error("ferry: migrate interrupted; run the same command again to resume"),
    ),
  )

export const migrateCommand = Command.make("migrate", flags, runMigrate).pipe(
  Command.withDescription(
    "Export a source and import it into a target in one resumable job; the import starts while the export still runs. --since auto for a cutover delta.",
  ),
)
