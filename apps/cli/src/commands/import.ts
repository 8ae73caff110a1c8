/**
 * `ferry import <archive> --to <base-url> [...]`
 *
 * Replays a complete archive into a target server: binaries first, then resources in dependency order in
 * transaction Bundles (`put` keeps the source ids, `post` lets the target assign them and keeps an id map),
 * then the archive's deletes. State lives in `<archive>/imports/<target>/`; running the same command
 * again resumes. Progress lines go to stderr; `--json` prints a summary on stdout.
 */
import { Args, Command, Options } from "@effect/cli"
import * as Archive from "@ferry/archive/Archive"
import * as HttpLayer from "../HttpLayer.js"
import * as Authenticator from "@ferry/auth/Authenticator"
import * as FhirClient from "@ferry/core/FhirClient"
import * as Import from "@ferry/import/Import"
import { ImportError, quarantined } from "@ferry/import/ImportError"
import * as Imports from "@ferry/archive/Imports"
import { Clock, Console, Effect, Either, Option } from "effect"
import * as BaseUrl from "../BaseUrl.js"
import { authFlags, authSettings } from "../AuthFlags.js"
import {
  dropMeta,
  dropMetaOf,
  dropsKept,
  restart,
  type FlagValues,
  parallelProblem,
  requestTimeout,
  requestTimeoutOf,
  tokenPolicy,
} from "../Flags.js"
import { serveFlags, serveOptions } from "../Serve.js"
import * as Bytes from "../Bytes.js"
import * as Progress from "../Progress.js"

const flags = {
  archive: Args.directory({ name: "archive", exists: "yes" }).pipe(
    Args.withDescription("The archive directory written by `ferry export`."),
  ),
  to: Options.text("to").pipe(Options.withDescription("The target FHIR server's base URL.")),
  strategy: Options.choice("strategy", ["auto", "put", "post", "import"]).pipe(
    Options.withDefault("auto" as const),
    Options.withDescription(
      "put: PUT Type/id keeping source ids; post: new ids, conditional create on Ferry's provenance tag; import: $import; auto (default): from the target's CapabilityStatement and a probe.",
    ),
  ),
  bundleSize: Options.integer("bundle-size").pipe(
    Options.withDefault(500),
    Options.withDescription("Entries per transaction Bundle (default 500)."),
  ),
  maxBundleBytes: Bytes.option("max-bundle-bytes").pipe(
    Options.withDefault(10 * 1024 * 1024),
    Options.withDescription("Estimated bytes per transaction Bundle, e.g. 5MiB or 5242880 (default 10 MiB)."),
  ),
  parallel: Options.integer("parallel").pipe(
    Options.withDefault(4),
    Options.withDescription("Bundles in flight at most (default 4; halved while the target throttles)."),
  ),
  restart: restart(),
  retryQuarantine: Options.boolean("retry-quarantine").pipe(
    Options.withDescription(
      "Also replay the resources quarantined by earlier runs (after fixing the cause).",
    ),
  ),
  sourceBase: Options.text("source-base").pipe(
    Options.repeated,
    Options.withDescription(
      "Another base URL the source server's own absolute references use (a proxy address, an internal host name in its data); references under it are made relative like those under the archive's source base. Repeat for several.",
    ),
  ),
  dropMeta: dropMeta(),
  ...serveFlags,
  fileBaseUrl: Options.text("file-base-url").pipe(
    Options.optional,
    Options.withDescription(
      "--strategy import: no file server; the archive's files are already published at <url>/<path in the archive> (only for archives whose references need no rewriting).",
    ),
  ),
  requestTimeout: requestTimeout("5m"),
  json: Options.boolean("json").pipe(Options.withDescription("Print a JSON summary on stdout.")),
  ...authFlags,
}

type Flags = FlagValues<typeof flags>

const usage = (detail: string) => new ImportError({ reason: "Config", detail })

/** One stderr line per interesting event. */
const lines = (started: number) => {
  const capped = Progress.repeatsCapped("ferry import:")
  return (e: Import.ImportEvent): Effect.Effect<void> =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const secs = Math.max(0.001, (now - started) / 1000)
      switch (e.event) {
        case "strategy":
          return yield* Console.error(`ferry import: strategy ${String(e.strategy)}`)
        case "warning":
          return yield* Console.error(`ferry import: WARNING: ${String(e.detail)}`)
        case "continues":
          return yield* Console.error(
            `ferry import: continues ${String(e.archive)} (an incremental archive: ${e.finished !== true ? "its import into this target did not run to its end, so nothing is taken from it" : e.idMap === "copied" ? "the id map of its import into this target copied in" : e.idMap === "here" ? "that import's id map already here" : "its import into this target wrote no id map"}${dropsKept(e.dropMeta)})`,
          )
        case "delete-skipped": {
          const line = capped(
            e.event,
            `ferry import: delete of ${String(e.source)} skipped: ${String(e.reason)}`,
          )
          if (line !== undefined) yield* Console.error(line)
          return
        }
        case "import.bulk.kickoff":
          return yield* Console.error(`ferry import: $import job started`)
        case "import.bulk.cancelled":
          return yield* Console.error(
            `ferry import: cancelled the $import job an earlier run started and could not release (${String(e.statusUrl)})`,
          )
        case "import.bulk.progress":
          return e.progress === undefined
            ? undefined
            : yield* Console.error(`ferry import: $import: ${String(e.progress)}`)
        case "import.bulk.retry":
          return yield* Console.error(`ferry import: $import: ${String(e.detail)}`)
        case "binaries":
          return yield* Console.error(
            e.perResource === true
              ? `ferry import: ${Progress.counted(Number(e.count ?? 0), "attachment")}: a Binary copy for each resource that points at one, made once that resource lands`
              : `ferry import: ${Progress.counted(Number(e.count ?? 0), "attachment")} as Binary (${String(e.uploaded)} uploaded now)`,
          )
        case "graph":
          return yield* Console.error(
            `ferry import: ${Progress.counted(Number(e.resources ?? 0), "resource")}, ${Progress.counted(Number(e.edges ?? 0), "reference")}, ${Progress.counted(Number(e.components ?? 0), "component")}`,
          )
        case "chunk": {
          const types = Object.entries((e.types ?? {}) as Record<string, number>)
            .map(([t, n]) => `${n} ${t}`)
            .join(", ")
          const total = Number(e.total ?? 0)
          return yield* Console.error(
            `ferry import: chunk ${String(e.index)} (level ${String(e.level)}): ${types} (total ${total}, ${(total / secs).toFixed(0)}/s, parallel ${String(e.parallel)})`,
          )
        }
        case "split":
          return yield* Console.error(
            `ferry import: the target refused ${String(e.entries)} entries as too large; splitting`,
          )
        case "bundle-size":
          return yield* Console.error(
            `ferry import: the target refused a Bundle of ${String(e.refused)} entries as too large; sending at most ${String(e.entries)} a Bundle from now on (growing back while they land)`,
          )
        case "throttled":
          return yield* Console.error(
            `ferry import: ${Progress.throttledWhy(e)}; parallel ${String(e.parallel)}`,
          )
        case "quarantined": {
          const line = capped(
            e.event,
            `ferry import: quarantined ${String(e.key)} (${String(e.source)}): ${String(e.reason)}`,
          )
          if (line !== undefined) yield* Console.error(line)
          return
        }
        case "done":
          return yield* Console.error(
            `ferry import: done: ${Progress.counted(Number(e.total ?? 0), "resource")}${Number(e.resumedChunks ?? 0) > 0 ? ` (this run; ${Progress.counted(Number(e.resumedChunks), "Bundle")} an earlier run landed ${Number(e.resumedChunks) === 1 ? "is" : "are"} not sent again)` : ""}, ${Progress.counted(Number(e.binaries ?? 0), "attachment blob")} uploaded, ${String(e.quarantined)} quarantined, ${String(e.deleted)} deleted${Number(e.deletesAlreadyGone ?? 0) > 0 ? ` (${String(e.deletesAlreadyGone)} more already gone from the target)` : ""}${Number(e.deletesSkipped ?? 0) > 0 ? ` (${String(e.deletesSkipped)} deletes skipped: never loaded into this target)` : ""}, ${secs.toFixed(1)} s`,
          )
        default:
          return
      }
    })
}

export const runImport = (f: Flags) =>
  Effect.gen(function* () {
    const parsed = BaseUrl.parse(f.to, "the target's")
    if (Either.isLeft(parsed)) return yield* usage(`--to ${BaseUrl.shown(f.to)} ${parsed.left}`)
    const baseUrl = parsed.right
    if (f.bundleSize < 1) return yield* usage("--bundle-size must be at least 1")
    const perRequest = requestTimeoutOf(f.requestTimeout)
    if (Either.isLeft(perRequest)) return yield* usage(perRequest.left)
    const drop = dropMetaOf(f.dropMeta)
    if (Either.isLeft(drop)) return yield* usage(drop.left)
    const tooMany = parallelProblem(f.parallel)
    if (tooMany !== undefined) return yield* usage(tooMany)
    const sourceBases: Array<string> = []
    for (const raw of f.sourceBase) {
      const base = BaseUrl.parse(raw, "a source")
      if (Either.isLeft(base)) return yield* usage(`--source-base ${BaseUrl.shown(raw)} ${base.left}`)
      sourceBases.push(base.right)
    }
    const serve = yield* serveOptions(f, f.strategy, { value: Option.getOrUndefined(f.fileBaseUrl) })
    const settings = yield* authSettings(f)
    // Ferry writes here: the token must allow writes (SMART's default scope follows).
    const authenticator = yield* Authenticator.fromSettings(
      settings,
      baseUrl,
      "write",
      undefined,
      undefined,
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
    yield* Console.error(`ferry import: ${f.archive} → ${baseUrl} (${authenticator.describe})`)
    const summary = yield* Import.run({
      client,
      archive: f.archive,
      ...(f.strategy !== "auto" ? { strategy: f.strategy } : {}),
      bundleSize: f.bundleSize,
      maxBundleBytes: f.maxBundleBytes,
      parallel: f.parallel,
      retryQuarantine: f.retryQuarantine,
      ...(f.restart ? { restart: true } : {}),
      ...(drop.right.length > 0 ? { dropMeta: drop.right } : {}),
      ...(sourceBases.length > 0 ? { sourceBases } : {}),
      ...(serve !== undefined ? { serve } : {}),
      onEvent: lines(started),
    })
    // what waits in quarantine/, from this run or an earlier one, keeps the import unfinished
    const pending = Imports.quarantineCounts(f.archive, baseUrl)
    // `ok`: exit 0 (a failure prints `{ok: false, exitCode, error}`; exit 7 prints this with ok false);
    // `quarantinePending`: what waits in quarantine/ for this target, this run's or an earlier one's (exit 7 when any)
    if (f.json)
      yield* Console.log(
        JSON.stringify({ ok: pending.total === 0, ...summary, quarantinePending: pending.total }, null, 2),
      )
    if (pending.total > 0)
      return yield* quarantined(
        pending.total,
        Imports.quarantineDir(f.archive, baseUrl),
        "the same command with --retry-quarantine",
        pending.waiting,
        pending.inArchive,
      )
    return Option.none()
  }).pipe(
    Effect.scoped,
    Effect.provide(HttpLayer.layerFor(f.requestTimeout)),
    Effect.onInterrupt(() =>
      // (stopped because another ferry took the archive: the last line says so)
      Archive.lockLost() !== undefined
        ? Effect.void
        : Console.error("ferry: import interrupted; run the same command again to resume"),
    ),
  )

export const importCommand = Command.make("import", flags, runImport).pipe(
  Command.withDescription(
    "Load an archive into a target FHIR server: binaries, then resources in dependency order, then deletes; resumable.",
  ),
)
