import type { Args, Options } from "@effect/cli"

/** The parsed values of a command's record of `Options` and `Args`. */
export type FlagValues<F> = {
  readonly [K in keyof F]: F[K] extends Options.Options<infer A>
    ? A
    : F[K] extends Args.Args<infer B>
      ? B
      : never
}
