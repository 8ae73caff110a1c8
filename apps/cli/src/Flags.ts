import { type Args, Options } from "@effect/cli"

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
