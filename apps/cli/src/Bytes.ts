/** Sizes on the command line: `2GB`, `500 MB`, `512MiB`, or a bare number of bytes. */
import { HelpDoc, Options, ValidationError } from "@effect/cli"
import { Effect, Option } from "effect"

/** `2GB`, `500 MB`, `512MiB`, `1048576` → bytes. */
export const parseBytes = (text: string): Option.Option<number> => {
  const m = /^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?$/i.exec(text.trim())
  if (m === null) return Option.none()
  const unit = (m[2] ?? "b").toLowerCase()
  const factor: Record<string, number> = {
    b: 1,
    kb: 1e3,
    mb: 1e6,
    gb: 1e9,
    tb: 1e12,
    kib: 1024,
    mib: 1024 ** 2,
    gib: 1024 ** 3,
    tib: 1024 ** 4,
  }
  return Option.some(Math.floor(Number(m[1]) * factor[unit]!))
}

/** A flag that takes a size (a positive number of bytes, with or without a unit). */
export const option = (name: string): Options.Options<number> =>
  Options.text(name).pipe(
    Options.mapEffect((text) =>
      Option.match(
        Option.filter(parseBytes(text), (n) => n > 0),
        {
          onNone: () =>
            Effect.fail(
              ValidationError.invalidValue(
                HelpDoc.p(`--${name} ${text} is not a size; use e.g. 10MiB, 5MB or 1048576 (bytes)`),
              ),
            ),
          onSome: Effect.succeed,
        },
      ),
    ),
  )
