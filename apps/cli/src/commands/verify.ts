/**
 * `ferry verify --target <url> (--source <url> | --archive <dir>) [--report <dir>] [--sample 5%] [--diff-limit 20] [--json]`
 *
 * Compares a source (server or archive) with a target server: per-type counts, every resource's
 * canonical content (through the archive's id map when the import changed ids), attachment payloads by
 * sha256. Writes `verify.json` and `verify.html` to `--report` (default: the archive, else the current
 * directory), prints a short summary, and exits 0 only when clean (6 on differences).
 *
 * Auth: the target takes the shared `--auth …` flags (AuthFlags.ts: none, smart, client-secret, bearer); a
 * source server the same set prefixed `--source-` (`--source-auth smart --source-client-id … --source-key …`,
 * its secret by default in `FERRY_SOURCE_CLIENT_SECRET`), as `ferry migrate` and `ferry plan` name them.
 */
import { Command, Options } from "@effect/cli"
import * as HttpLayer from "../HttpLayer.js"
import * as Authenticator from "@ferry/auth/Authenticator"
import * as FhirClient from "@ferry/core/FhirClient"
import * as Report from "@ferry/verify/Report"
import * as Verify from "@ferry/verify/Verify"
import { VerifyError } from "@ferry/verify/VerifyError"
import { Console, type Duration, Effect, Either, Option } from "effect"
import * as BaseUrl from "../BaseUrl.js"
import * as Params from "../Params.js"
import { authFlags, authFlagsFor, authSettings, defaultClientSecretEnvFor, unprefix } from "../AuthFlags.js"
import {
  dropMeta,
  dropMetaOf,
  type FlagValues,
  parallelProblem,
  requestTimeout,
  requestTimeoutOf,
  tokenPolicy,
} from "../Flags.js"

const flags = {
  target: Options.text("target").pipe(Options.withDescription("The target FHIR server's base URL.")),
  source: Options.text("source").pipe(
    Options.optional,
    Options.withDescription("The source FHIR server's base URL (or use --archive)."),
  ),
  archive: Options.directory("archive", { exists: "yes" }).pipe(
    Options.optional,
    Options.withDescription("A Ferry archive as the source (its manifest, data files and attachments)."),
  ),
  report: Options.directory("report").pipe(
    Options.optional,
    Options.withDescription("Where to write verify.json and verify.html (default: the archive, else .)."),
  ),
  type: Options.text("type").pipe(
    Options.repeated,
    Options.withDescription("Only these resource types; repeat or comma-separate."),
  ),
  sample: Options.text("sample").pipe(
    Options.optional,
    Options.withDescription("Compare a deterministic sample, e.g. 5% (default: everything)."),
  ),
  diffLimit: Options.integer("diff-limit").pipe(
    Options.withDefault(20),
    Options.withDescription("Field-level diffs for at most this many differing resources (default 20)."),
  ),
  idMap: Options.file("id-map", { exists: "yes" }).pipe(
    Options.optional,
    Options.withDescription("An id map file (default: <archive>/imports/<target>/idmap.ndjson if present)."),
  ),
  parallel: Options.integer("parallel").pipe(
    Options.withDefault(4),
    Options.withDescription("Parallel attachment downloads (default 4)."),
  ),
  requestTimeout: requestTimeout("5m"),
  json: Options.boolean("json").pipe(
    Options.withDescription(
      "Print the report (what verify.json holds, field values of differences included) as one JSON object on stdout; the summary lines go to stderr.",
    ),
  ),
  ignoreGeneratedNarrative: Options.boolean("ignore-generated-narrative").pipe(
    Options.withDescription(
      "Leave narratives (text) with status generated out of the comparison: for a target that makes its own from the data.",
    ),
  ),
  dropMeta: dropMeta(true),
  sourceBase: Options.text("source-base").pipe(
    Options.repeated,
    Options.withDescription(
      "Another base URL the source server's own absolute references use (as given to the import with --source-base). Repeat for several.",
    ),
  ),
  ...authFlagsFor("source"),
  ...authFlags,
}

type Flags = FlagValues<typeof flags>

const usage = (detail: string) => new VerifyError({ reason: "Config", detail })

/** `5%`, `5`, `0.5%` → 5, 5, 0.5. */
export const parsePercent = (text: string): Option.Option<number> => {
  const m = /^(\d+(?:\.\d+)?)\s*%?$/.exec(text.trim())
  if (m === null) return Option.none()
  const n = Number(m[1])
  return n > 0 && n <= 100 ? Option.some(n) : Option.none()
}

const checkUrl = (flag: string, url: string) =>
  Either.match(BaseUrl.parse(url), {
    onLeft: (problem) => Effect.fail(usage(`--${flag} ${BaseUrl.shown(url)} ${problem}`)),
    onRight: (base) => Effect.succeed(base),
  })

/** The source server's `--source-…` auth flags as settings (none unless given; its own secret variable). */
const sourceSettings = (f: Flags) => {
  const given = unprefix("source", f)
  return authSettings(
    {
      ...given,
      auth: Option.getOrElse(given.auth, () => "none" as const),
      clientSecretEnv: Option.getOrElse(given.clientSecretEnv, () => defaultClientSecretEnvFor("source")),
    },
    "source",
  )
}

const clientFor = (
  flag: string,
  url: string,
  settings: Authenticator.AuthSettings,
  timeout: Option.Option<Duration.Duration>,
) =>
  Effect.gen(function* () {
    const baseUrl = yield* checkUrl(flag, url)
    const authenticator = yield* Authenticator.fromSettings(
      settings,
      baseUrl,
      "read",
      undefined,
      undefined,
      tokenPolicy(timeout),
    )
    return yield* FhirClient.make({
      baseUrl,
      authorize: authenticator.authorize,
      onUnauthorized: authenticator.invalidate,
      refusedHint: authenticator.refusedHint,
      retry: { times: 8 },
      ...(Option.isSome(timeout) ? { timeout: timeout.value } : {}),
    })
  })

const runVerify = (f: Flags) =>
  Effect.gen(function* () {
    if (Option.isSome(f.source) === Option.isSome(f.archive)) {
      return yield* usage("give exactly one of --source <url> or --archive <dir>")
    }
    const sampleText = Option.getOrUndefined(f.sample)
    const samplePercent =
      sampleText === undefined
        ? undefined
        : yield* Option.match(parsePercent(sampleText), {
            onNone: () =>
              Effect.fail(usage(`--sample ${sampleText}: expected a percentage in (0, 100], e.g. 5%`)),
            onSome: Effect.succeed,
          })
    if (f.diffLimit < 0) return yield* usage("--diff-limit must be 0 or more")
    const tooMany = parallelProblem(f.parallel)
    if (tooMany !== undefined) return yield* usage(tooMany)
    const sourceBases: Array<string> = []
    for (const raw of f.sourceBase) {
      const base = BaseUrl.parse(raw, "a source")
      if (Either.isLeft(base)) return yield* usage(`--source-base ${BaseUrl.shown(raw)} ${base.left}`)
      sourceBases.push(base.right)
    }
    const perRequest = requestTimeoutOf(f.requestTimeout)
    const drop = dropMetaOf(f.dropMeta)
    if (Either.isLeft(drop)) return yield* usage(drop.left)
    if (Either.isLeft(perRequest)) return yield* usage(perRequest.left)
    const target = yield* clientFor("target", f.target, yield* authSettings(f), perRequest.right)
    const source: Verify.Source = Option.isSome(f.archive)
      ? { _tag: "Archive", dir: f.archive.value }
      : {
          _tag: "Server",
          client: yield* clientFor(
            "source",
            Option.getOrElse(f.source, () => ""),
            yield* sourceSettings(f),
            perRequest.right,
          ),
        }
    const types = Params.list(f.type)
    const badType = Params.typesProblem("--type", types)
    if (badType !== undefined) return yield* usage(badType)
    const dir = Option.getOrElse(f.report, () => Option.getOrElse(f.archive, () => process.cwd()))
    yield* Report.checkWritable(dir)
    yield* Console.error(
      `ferry verify: ${source._tag === "Archive" ? source.dir : source.client.baseUrl} ⇄ ${target.baseUrl}${samplePercent !== undefined && samplePercent < 100 ? ` (sample ${samplePercent}%)` : ""}`,
    )
    const report = yield* Verify.run({
      source,
      target,
      diffLimit: f.diffLimit,
      concurrency: f.parallel,
      ...(types.length > 0 ? { types } : {}),
      ...(samplePercent !== undefined ? { samplePercent } : {}),
      ...(Option.isSome(f.idMap) ? { idMapPath: f.idMap.value } : {}),
      ...(sourceBases.length > 0 ? { sourceBases } : {}),
      ...(f.ignoreGeneratedNarrative ? { ignoreGeneratedNarrative: true } : {}),
      ...(drop.right.length > 0 ? { ignoreMeta: drop.right } : {}),
    })
    const paths = yield* Report.write(dir, report)
    // with --json, stdout is the report alone
    const say = f.json ? Console.error : Console.log
    for (const line of Report.summary(report)) yield* say(line)
    yield* say(`verify: report ${paths.json}`)
    yield* say(`verify: report ${paths.html}`)
    // `ok`: exit 0 (clean), as every command's `--json` result says
    if (f.json) yield* Console.log(JSON.stringify(Report.withOk(report)))
    if (report.verdict !== "clean") {
      const t = report.totals
      return yield* new VerifyError({
        reason: "Diff",
        detail: `source and target differ (${t.differing} differing, ${t.missing} missing, ${t.extra} extra, ${t.countMismatches} count mismatches, ${t.attachmentMismatches} attachment mismatches); see ${paths.html}`,
      })
    }
  }).pipe(
    Effect.provide(HttpLayer.layerFor(f.requestTimeout)),
    // runMain turns Ctrl-C into interruption, which bin.ts's error report does not see
    Effect.onInterrupt(() =>
      Console.error(
        "ferry: verify interrupted; no report was written, run the same command again (it compares from the start)",
      ),
    ),
  )

export const verifyCommand = Command.make("verify", flags, (f) => Effect.scoped(runVerify(f))).pipe(
  Command.withDescription(
    "Compare a source (server or archive) with a target server: counts, every resource's content, attachment payloads. Exit 0 when clean, 6 on differences.",
  ),
)
