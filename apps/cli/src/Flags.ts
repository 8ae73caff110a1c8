import { type Args, Options } from "@effect/cli"
import * as Import from "@ferry/import/Import"
import { list } from "./Params.js"
import { Duration, Either, Option } from "effect"

/** The parsed values of a command's record of `Options` and `Args`. */
export type FlagValues<F> = {
  readonly [K in keyof F]: F[K] extends Options.Options<infer A>
    ? A
    : F[K] extends Args.Args<infer B>
      ? B
      : never
}

/** `--allow-export-errors` (export, migrate): see `Export.ExportOptions.allowExportErrors`. */
export const allowExportErrors = Options.boolean("allow-export-errors").pipe(
  Options.withDescription(
    "Finish the archive although the server's error files report errors (data its job did not export); without it such an export fails after downloading everything, the archive left unfinished and the job kept.",
  ),
)

/** `--attachment-origin` (export, migrate): see `Export.ExportOptions.attachmentOrigins`. */
export const attachmentOrigin = Options.text("attachment-origin").pipe(
  Options.repeated,
  Options.withDescription(
    "Also fetch attachments from this origin (https://docs.example.org; repeatable), or from anywhere with `any`. By default only URLs on the source's origin and on the hosts its manifest names files on are fetched: a URL in the data is not followed to other machines unasked.",
  ),
)

/** `--parallel` at most: more requests in flight than any server takes, and a plan that costs CPU for nothing. */
export const MAX_PARALLEL = 256

/** What `--parallel` must be, when `n` is not that. */
export const parallelProblem = (n: number): string | undefined =>
  n >= 1 && n <= MAX_PARALLEL ? undefined : `--parallel must be between 1 and ${MAX_PARALLEL} (it is ${n})`

/** `90`, `90s`, `15m`, `2h`, `1d` → Duration (a bare number is seconds); none when not such a text, or not above zero. */
export const parseDuration = (text: string): Option.Option<Duration.Duration> => {
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$/.exec(text.trim())
  if (m === null) return Option.none()
  const n = Number(m[1])
  // no time at all to wait: nothing could ever be done
  if (n <= 0) return Option.none()
  const unit = m[2] ?? "s"
  return Option.some(
    unit === "s"
      ? Duration.seconds(n)
      : unit === "m"
        ? Duration.minutes(n)
        : unit === "h"
          ? Duration.hours(n)
          : Duration.days(n),
  )
}

/**
 * `--request-timeout` (every command that talks to a server): `FhirClient`'s per-attempt timeout, and how long an
 * answer's body may send nothing (`HttpLayer.layerFor`, `FhirClient.get`). `otherwise`: the command's default, as
 * said in its help.
 */
export const requestTimeout = (otherwise: string) =>
  Options.text("request-timeout").pipe(
    Options.optional,
    Options.withDescription(
      `Give up on a request when the server has not begun to answer for this long, or has sent nothing more of its answer for this long: 30s, 5m; a bare number is seconds (default ${otherwise}). A request that timed out is tried twice more, a download resumed where it stopped, before the command fails.`,
    ),
  )

/**
 * How the token endpoint (and its discovery) is given time under `--request-timeout`: that long per attempt,
 * tried twice more, as every other request; without it, the token client's own (30 s, five retries).
 */
export const tokenPolicy = (
  perRequest: Option.Option<Duration.Duration>,
): { readonly timeout: Duration.Duration; readonly retries: number } | undefined =>
  Option.isSome(perRequest) ? { timeout: perRequest.value, retries: 2 } : undefined

/** The `--request-timeout` given (none: not given), or the sentence that says what is wrong with it. */
export const requestTimeoutOf = (
  given: Option.Option<string>,
): Either.Either<Option.Option<Duration.Duration>, string> => {
  if (Option.isNone(given)) return Either.right(Option.none())
  const parsed = parseDuration(given.value)
  if (Option.isNone(parsed))
    return Either.left(`--request-timeout ${given.value} is not a duration; use e.g. 30s or 5m`)
  if (Duration.lessThan(parsed.value, Duration.seconds(1)))
    return Either.left(
      `--request-timeout ${given.value} is below one second; no server answers reliably that fast`,
    )
  return Either.right(parsed)
}

/**
 * `--drop-meta` (import, migrate): `meta` members the target does not get; verify takes the same flag to leave
 * them out of its comparison.
 */
export const dropMeta = (verify = false) =>
  Options.text("drop-meta").pipe(
    Options.repeated,
    Options.withDescription(
      verify
        ? "The meta members the import dropped (its --drop-meta: source, tag, security; comma-separated or repeated): left out of the comparison on both sides."
        : "Do not carry these meta members of the source's resources to the target: source, tag, security (comma-separated or repeated; default: all kept). meta.versionId and meta.lastUpdated are never carried; Ferry's provenance tag is added either way. Give ferry verify the same --drop-meta.",
    ),
  )

/** The `--drop-meta` values given, or the sentence that says what is wrong with one. */
export const dropMetaOf = (
  given: ReadonlyArray<string>,
): Either.Either<ReadonlyArray<Import.MetaField>, string> => {
  const out: Array<Import.MetaField> = []
  for (const raw of list(given)) {
    const name = raw.replace(/^meta\./, "")
    const field = Import.metaFields.find((m) => m === name)
    if (field === undefined)
      return Either.left(
        `--drop-meta ${raw} is not a meta member Ferry can drop; give source, tag or security (comma-separated)`,
      )
    if (!out.includes(field)) out.push(field)
  }
  return Either.right(out)
}

/**
 * What a `continues` event says of the `--drop-meta` an incremental archive's import keeps from the import of
 * the archive it continues (the event carries it when no `--drop-meta` was given): nothing when none.
 */
export const dropsKept = (fields: unknown): string =>
  Array.isArray(fields) && fields.length > 0 ? `; --drop-meta ${fields.join(",")} kept from its import` : ""

/** `--restart` (import, migrate): the target's import state set aside, the import half started over. */
export const restart = () =>
  Options.boolean("restart").pipe(
    Options.withDescription(
      "Load the target again from the start (it was emptied or rebuilt at the same URL): this target's import state in the archive is set aside (renamed, not deleted) first.",
    ),
  )
