/**
 * The import's pure decisions, kept apart from Import.ts so they can be tested alone: the strategy choice,
 * error classification, chunk journal keys, the quarantine record and the adaptive concurrency limit.
 */
import { createHash } from "node:crypto"
import * as CapabilityStatement from "@ferry/core/CapabilityStatement"
import type { AuthError, FhirError } from "@ferry/core/Errors"
import { type FhirClient, summaryCount } from "@ferry/core/FhirClient"
import { transportProblem } from "@ferry/core/Http"
import type { Resource } from "@ferry/core/Ids"
import { Duration, Effect, Either, Option, Schema } from "effect"
import * as OperationOutcome from "@ferry/core/OperationOutcome"
import type { ImportError } from "../ImportError.js"
import type { ArchiveError } from "@ferry/archive/ArchiveError"
import { restoreNumbers } from "@ferry/core/NumberText"
import * as TypeOrder from "@ferry/transform/TypeOrder"

export type Strategy = "put" | "post" | "import"

export type ImportFailure = ImportError | FhirError | AuthError | ArchiveError

/** Successes in a row that give the limiter one slot back. */
export const SUCCESSES_TO_GROW = 20

/** A chunk's journal key: a hash of its resource keys (the same resources give the same key, whatever the subset). */
export const chunkKey = (keys: ReadonlyArray<string>): string =>
  createHash("sha256").update(keys.join("\n")).digest("hex").slice(0, 32)

export const typeOf = (key: string): string => key.slice(0, key.indexOf("/"))

/**
 * A failure that says the target is overloaded (429, 503, 504, no answer in time, a connection cut): the
 * import halves its concurrency and tries again. A target that is not there at all (connection refused, no
 * route, no such host) is not overloaded: the client's own retries (its grace period) have passed, and the
 * import stops saying so (it used to report "throttling" for as long as the target was down).
 */
export const isThrottle = (e: ImportFailure): boolean =>
  e._tag === "FhirError" &&
  (e.reason === "Throttled" ||
    (e.reason === "Transport" && transportProblem(e.detail) !== "NothingThere") ||
    (e.reason === "Status" && (e.status === 429 || e.status === 503 || e.status === 504)))

export const isEntryRefusal = (e: ImportFailure): e is FhirError =>
  e._tag === "FhirError" &&
  e.reason === "Status" &&
  e.status !== undefined &&
  e.status >= 400 &&
  e.status < 500 &&
  ![401, 403, 405, 413, 429].includes(e.status)

export const isTooLarge = (e: ImportFailure): boolean =>
  e._tag === "FhirError" && e.reason === "Status" && e.status === 413

/**
 * How many resources of each of `types` the target holds already (`_summary=count`, 4 at a time; Binary left
 * out). Only for a warning before a first import: a type the target gives no total for, or will not search
 * (any answer with a status: a target may accept Bundles of a type it does not search), is left out. A target
 * that cannot be reached, or refuses the credentials, fails here as it would at its first Bundle.
 */
export const heldAlready = (
  client: FhirClient,
  types: ReadonlyArray<string>,
): Effect.Effect<ReadonlyArray<readonly [string, number]>, FhirError | AuthError> =>
  Effect.map(countsOf(client, types), (counts) =>
    counts
      .filter((c): c is readonly [string, number] => c[1] !== undefined && c[1] > 0)
      .sort((a, b) => b[1] - a[1]),
  )

/** `heldAlready`'s counts, a type without one (no total, a search refused) undefined. */
const countsOf = (
  client: FhirClient,
  types: ReadonlyArray<string>,
  binary = false,
): Effect.Effect<ReadonlyArray<readonly [string, number | undefined]>, FhirError | AuthError> =>
  Effect.forEach(
    binary ? types : types.filter((t) => t !== "Binary"),
    (type) =>
      summaryCount(client, type).pipe(
        Effect.catchIf(
          (e) => e._tag === "FhirError" && e.reason !== "Transport",
          () => Effect.succeed(Option.none<number>()),
        ),
        Effect.map((n) => [type, Option.getOrUndefined(n)] as const),
      ),
    { concurrency: 4 },
  )

/**
 * Whether the target holds nothing of `types` (Binary left out): at least one type counted, and every count 0.
 * A rerun whose earlier runs landed Bundles there then meets a target emptied or replaced at the same URL.
 * When `types` is Binary alone (a migration killed after a first wave of only the Binary files), Binary is
 * counted: otherwise nothing would be, and a rebuilt target would go unnoticed (a server that does not search
 * Binary answers nothing, and nothing is refused, as before).
 */
export const holdsNothingOf = (
  client: FhirClient,
  types: ReadonlyArray<string>,
): Effect.Effect<boolean, FhirError | AuthError> =>
  Effect.map(
    countsOf(
      client,
      types,
      types.every((t) => t === "Binary"),
    ),
    (counts) =>
      counts.some(([, n]) => n !== undefined) && counts.every(([, n]) => n === undefined || n === 0),
  )

/** The warning before a first import into a target that holds resources of the archive's types already. */
export const nonEmptyTarget = (
  held: ReadonlyArray<readonly [string, number]>,
  mode: "put" | "post",
): string => {
  const total = held.reduce((n, [, k]) => n + k, 0)
  const top = held
    .slice(0, 3)
    .map(([t, n]) => `${n} ${t}`)
    .join(", ")
  return `the target already holds ${total} resource${total === 1 ? "" : "s"} of the archive's types (${top}${held.length > 3 ? ", …" : ""}; Binary not counted) and the archive records no import into it (at this URL): ${mode === "put" ? "resources with the same ids are overwritten and the others stay" : "the imported resources are added beside them"} (a full verify lists those others as extra)`
}

/** How long the probe's DELETE may take (it also runs when the import is interrupted). */
const PROBE_CLEANUP = Duration.seconds(10)

/**
 * Choose `put` or `post` from the CapabilityStatement and a probe PUT. Types the statement does not list at all
 * (which neither way can load) do not decide it, unless it lists none of the archive's: one such type (a damaged
 * or hand-made manifest, a type this target lacks) would otherwise turn the whole import to `post`, journaled
 * for every rerun.
 */
export const chooseStrategy = (
  client: FhirClient,
  cs: CapabilityStatement.CapabilityStatement,
  types: ReadonlyArray<string>,
): Effect.Effect<Strategy, FhirError | AuthError> =>
  Effect.gen(function* () {
    const listed = types.filter((t) => Option.isSome(CapabilityStatement.resource(cs, t)))
    const deciding = listed.length > 0 ? listed : types
    if (!deciding.every((t) => CapabilityStatement.updateCreate(cs, t))) return "post"
    const id = `ferry-probe-${globalThis.crypto.randomUUID()}`
    // a probe the target keeps would be a stray resource there (verify reports it as extra): the delete runs
    // even when the fiber is interrupted (a migrate whose export fails while its first wave chooses, Ctrl-C),
    // and also after an interrupted PUT, which the target may have carried out
    // (at most PROBE_CLEANUP: a stalled target must not hold a Ctrl-C for the client's whole timeout)
    // (interruptible inside, so that the time limit can end it; the region around it is not)
    const removeProbe = client.delete("Basic", id).pipe(
      Effect.interruptible,
      Effect.timeoutFail({
        duration: PROBE_CLEANUP,
        onTimeout: () => ({ message: `no answer within ${Duration.format(PROBE_CLEANUP)}` }),
      }),
      Effect.catchAll((e) =>
        Effect.logWarning(
          `the target kept the client-id probe Basic/${id}: deleting it failed (${e.message}); delete it on the target`,
        ),
      ),
    )
    return yield* Effect.uninterruptibleMask((restore) =>
      Effect.gen(function* () {
        const probe = yield* restore(
          client.update({ resourceType: "Basic", id, code: { text: "ferry client-id probe" } }),
        ).pipe(
          Effect.either,
          Effect.onInterrupt(() => removeProbe),
        )
        if (Either.isLeft(probe)) {
          const e = probe.left
          if (
            e._tag === "FhirError" &&
            e.reason === "Status" &&
            (e.status === 405 || e.status === 400 || e.status === 422)
          )
            return "post" as const
          if (e._tag === "AuthError") return yield* e
          // a type the server does not know (404): trust the CapabilityStatement
          return "put" as const
        }
        yield* removeProbe
        return "put" as const
      }),
    )
  })

/**
 * Can the target search `_tag` on every type (needed by the post strategy's conditional create)? A type
 * that lists no search parameters is given the benefit of the doubt.
 */
export const searchesTag = (
  cs: CapabilityStatement.CapabilityStatement,
  types: ReadonlyArray<string>,
): boolean => types.every((t) => CapabilityStatement.searchParams(cs, t)?.has("_tag") ?? true)

/**
 * A refusal that no entry caused: the server lacks something the Bundle needs (`not-supported`), or something
 * that is no FHIR server answered (an HTML or text page of a proxy or a wrong URL: a body that is not an
 * OperationOutcome): a FHIR server that refuses an entry says which, and retrying entry by entry would only set
 * every resource aside. An empty body, and the statuses only FHIR gives an entry (409, 412, 422), stay entry
 * refusals; a 413 is the Bundle's size, which splitting mends.
 */
export const isSystemic = (e: FhirError): boolean => {
  // (a `not-supported` issue that names the entry it is about, a resource type the target lacks, is that entry's)
  if (e.outcome !== undefined)
    return e.outcome.issue.some(
      (i) =>
        i.code === "not-supported" &&
        ![...(i.expression ?? []), ...(Array.isArray(i.location) ? i.location : [])].some(
          (x) => typeof x === "string" && /^Bundle\.entry\[\d+\]/.test(x),
        ),
    )
  return (
    e.status !== undefined &&
    ![409, 412, 413, 422].includes(e.status) &&
    e.detail !== undefined &&
    // describeBody's words for a JSON body it could not use (cut at the read limit, a JSON document, unreadable):
    // a FHIR server's answer all the same; only a page's own text is not
    !e.detail.startsWith("the body ")
  )
}

/**
 * An adaptive concurrency limit below `max`: halve on throttling, one more slot per 20 successes. The
 * semaphore is resized rather than having permits taken away: a waiting `take` of several permits only
 * gets them when that many are free at once, and workers that hand a permit back and take the next one in the
 * same step (`forEachPooled`) never leave them free, so a throttle used to wait for the end of the level.
 */
export const makeLimiter = (max: number) =>
  Effect.gen(function* () {
    const sem = yield* Effect.makeSemaphore(max)
    let limit = max
    let successes = 0
    return {
      run: <A, E>(eff: Effect.Effect<A, E>) => sem.withPermits(1)(eff),
      throttled: Effect.suspend(() => {
        successes = 0
        const next = Math.max(1, Math.floor(limit / 2))
        if (next === limit) return Effect.void
        limit = next
        return sem.resize(limit)
      }),
      succeeded: Effect.suspend(() => {
        successes++
        if (successes < SUCCESSES_TO_GROW || limit >= max) return Effect.void
        successes = 0
        limit++
        return sem.resize(limit)
      }),
      current: () => limit,
    }
  })

/**
 * Entries per Bundle as the target allows them (a 413), for the chunks to come: the planned size until the
 * target refuses one as too large, then at most half the refused size; growing back (by a quarter, at least one
 * entry; once a grown size was refused, by half the way to it) after `SUCCESSES_TO_GROW` Bundles of that size
 * landed, and at once to the size of any larger Bundle that lands. A grown size refused goes back one step and is
 * the ceiling for the rest of the run (refused once: a 413 of a Bundle of big resources may so cap the size a
 * little low, which costs a few more Bundles, where probing each size twice cost two refusals per size between
 * the limit and the first refused one). So a target with an entry limit costs a few refused Bundles in all instead of a cascade
 * of halvings for every chunk (a 5-entry limit: 127 refused Bundles per chunk of 500). A refused Bundle larger
 * than the current size (sent before the last reduction) changes nothing; one resource refused alone ends its
 * halving cascade and puts the size back to what it was before that cascade (it was that resource, not the
 * number of entries).
 */
export const makeSizer = (planned: number, start?: number) => {
  const max = Math.max(1, planned)
  let target = start === undefined ? max : Math.max(1, Math.min(max, start))
  let successes = 0
  /** The size before the last growth, and the size grown to (while it is the current one). */
  let previous = max
  let grownTo: number | undefined
  let ceiling = Number.POSITIVE_INFINITY
  const top = () => Math.min(max, ceiling - 1)
  /** The size before the halvings since the last Bundle of the current size landed. */
  let seriesStart: number | undefined
  return {
    /** Entries to send in one Bundle now. */
    current: (): number => target,
    /** A Bundle of `entries` was refused as too large; true when the size to send went down. */
    tooLarge: (entries: number): boolean => {
      if (entries <= 1) {
        if (seriesStart !== undefined) target = Math.max(target, seriesStart)
        seriesStart = undefined
        return false
      }
      if (entries > target) return false
      successes = 0
      if (grownTo !== undefined && entries === grownTo) {
        ceiling = Math.min(ceiling, entries)
        target = previous
        grownTo = undefined
        return true
      }
      grownTo = undefined
      const next = Math.max(1, Math.floor(entries / 2))
      if (next >= target) return false
      seriesStart ??= target
      target = next
      return true
    },
    /** A Bundle of `entries` landed. */
    succeeded: (entries: number): void => {
      if (entries >= target) seriesStart = undefined
      // the grown size landed: it stands
      if (grownTo !== undefined && entries >= grownTo) grownTo = undefined
      if (entries > target) {
        target = Math.max(target, Math.min(entries, top()))
        successes = 0
        grownTo = undefined
        return
      }
      if (entries < target || target >= top()) return
      successes++
      if (successes < SUCCESSES_TO_GROW) return
      successes = 0
      previous = target
      const step = Number.isFinite(ceiling) ? Math.floor((top() - target) / 2) : Math.floor(target / 4)
      target = Math.min(top(), target + Math.max(1, step))
      grownTo = target
    },
  }
}

/** `: <what the target's OperationOutcome says>` (cut at 300 characters), or "" when `outcome` is none. */
export const refusal = (outcome: unknown): string => {
  const o = Schema.decodeUnknownOption(OperationOutcome.OperationOutcome)(outcome)
  if (Option.isNone(o) || o.value.issue.length === 0) return ""
  const said = OperationOutcome.summary(o.value)
  return `: ${said.length > 300 ? `${said.slice(0, 299)}…` : said}`
}

/**
 * One `quarantine/<Type>.ndjson` line (without newline): the resource, the target's outcome, why, and where it
 * came from; `waitingOn` for one held back with what it refers to; `cause: "archive"` for one Ferry cannot send
 * as the archive holds it (no retry helps: it is fixed at the source).
 */
export const quarantineLine = (
  resource: Resource | null,
  outcome: unknown,
  reason: string,
  source: string,
  waitingOn?: string,
  text?: string,
  cause?: "archive",
): string => {
  const rest = JSON.stringify({
    outcome: outcome ?? null,
    reason,
    source,
    ...(waitingOn !== undefined ? { waitingOn } : {}),
    ...(cause !== undefined ? { cause } : {}),
  })
  // the resource as its line wrote its numbers (`1.0` stays `1.0`: see NumberText)
  const json = JSON.stringify(resource)
  return `{"resource":${text === undefined ? json : restoreNumbers(text, json)},${rest.slice(1)}`
}

/**
 * The graph pass's reading rank of a type (lower first): Binary first (the attachment step needs every
 * Binary of the archive), then the usual dependencies first (`TypeOrder.rank`), so that what was read so
 * far often refers only to complete types and can be sent while the rest is read (see Import.ts). Only the
 * speed depends on it.
 */
export const readingOrder = (type: string): number => (type === "Binary" ? -1 : TypeOrder.rank(type))
