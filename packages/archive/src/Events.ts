/**
 * `events.ndjson`: a human-oriented event log, one `{ at, level, event, ...fields }` object per line. Never
 * write tokens or resource bodies into it; as a safety net, fields whose name looks like a secret are
 * replaced by "[redacted]". Not fsynced: nothing resumes from it; a line a crash left torn is cut off before the
 * next run appends (`cutTornLine`, once, before this process writes there), so the file stays one JSON object
 * per line.
 */
import * as Path from "node:path"
import { Clock, Effect, type Scope } from "effect"
import type { ArchiveError } from "./ArchiveError.js"
import * as Fs from "./internal/fs.js"

export type Level = "debug" | "info" | "warning" | "error"

const SECRET = /token|authori[sz]ation|secret|password|private|assertion|cookie/i

/** The fields with every value whose name looks like a secret replaced by "[redacted]". */
export const redact = (fields: Readonly<Record<string, unknown>>): Record<string, unknown> => {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(fields)) out[k] = SECRET.test(k) ? "[redacted]" : v
  return out
}

/** One event's line. */
const lineOf = (event: string, fields: Readonly<Record<string, unknown>>, level: Level) =>
  Effect.map(
    Clock.currentTimeMillis,
    (now) => `${JSON.stringify({ ...redact(fields), at: new Date(now).toISOString(), level, event })}\n`,
  )

/** Append one event to `<dir>/events.ndjson`. */
export const append = (
  dir: string,
  event: string,
  fields: Readonly<Record<string, unknown>> = {},
  level: Level = "info",
): Effect.Effect<void, ArchiveError> =>
  Effect.flatMap(lineOf(event, fields, level), (line) => Fs.append(Path.join(dir, "events.ndjson"), line))

/**
 * Cuts a torn last line (a crash in the middle of an append) off `<dir>/events.ndjson`; whether there was one.
 * Only before anything of this process writes there (a line being written would look torn).
 */
export const cutTornLine = (dir: string): Effect.Effect<boolean, ArchiveError> =>
  Fs.cutTornLine(Path.join(dir, "events.ndjson"))

/**
 * `append` for many events into one `<dir>/events.ndjson`: the file stays open until the scope closes
 * (see `Fs.appender`). A torn last line is cut off before its first append, unless `cutTorn` is false (another
 * writer of this process may be appending there already: it cut it).
 */
export const appender = (
  dir: string,
  options: { readonly cutTorn?: boolean } = {},
): Effect.Effect<
  (
    event: string,
    fields?: Readonly<Record<string, unknown>>,
    level?: Level,
  ) => Effect.Effect<void, ArchiveError>,
  never,
  Scope.Scope
> =>
  Effect.map(
    Fs.appender(Path.join(dir, "events.ndjson"), { durable: false, cutTorn: options.cutTorn !== false }),
    (write) =>
      (event, fields = {}, level = "info") =>
        Effect.flatMap(lineOf(event, fields, level), write),
  )
