/**
 * Status polling: 202 (wait, honouring Retry-After, logging X-Progress), 200 (the manifest), transient
 * failures and 429 storms (wait and ask again), everything else fails the export. Partial manifests
 * (`link` next) are followed and merged. With `onPartial`, a 202 that carries a manifest (STU3
 * `allowPartialManifests`: the files ready so far) is reported too, merged with the parts before it, so the
 * caller can download those files while the job runs; a 202's part that already links to the next one is
 * complete, so the next part is polled at once. All waiting goes through `Clock` (TestClock-able).
 */
import { HttpClientRequest } from "@effect/platform"
import { ExportManifest, nextManifest } from "@ferry/core/BulkManifest"
import { type AuthError, FhirError } from "@ferry/core/Errors"
import type { FhirClient } from "@ferry/core/FhirClient"
import { describeParseError, redactUrl } from "@ferry/core/Http"
import { summary } from "@ferry/core/OperationOutcome"
import { isTransientPollFailure, retryAfter } from "@ferry/core/Retry"
import { Clock, Duration, Effect, Option, Schema } from "effect"
import { ExportError } from "./ExportError.js"

export interface PollOptions {
  /** Give up (ExportError Timeout) after this long. Default 24 hours. */
  readonly timeout?: Duration.DurationInput
  /** First wait when the server gives no Retry-After (default 1 s); grows ×1.5 up to `maxInterval`. */
  readonly interval?: Duration.DurationInput
  /** Longest wait between two polls when the server gives no Retry-After (default 60 s). */
  readonly maxInterval?: Duration.DurationInput
  /** Called with each `X-Progress` text (and on every 202). */
  readonly onProgress?: (progress: string | undefined) => Effect.Effect<void>
  /** Called before waiting after a failed poll that will be retried. */
  readonly onRetry?: (error: FhirError, wait: Duration.Duration) => Effect.Effect<void>
  /**
   * Called whenever more of the manifest is known before it is complete: a 202 carrying a (partial)
   * manifest, or a part reached through `link` next. Gets everything known so far (parts merged, no `link`).
   */
  readonly onPartial?: (soFar: ExportManifest) => Effect.Effect<void>
}

/** A 404 (or 410) on the status URL: the job is gone (deleted, expired or never existed). */
export const isJobGone = (e: unknown): boolean =>
  e instanceof FhirError && e.reason === "Status" && (e.status === 404 || e.status === 410)

/** Whether a failed status request should simply be asked again later (see core's Retry). */
export { isTransientPollFailure }

const decodeManifest = Schema.decodeUnknown(ExportManifest)

/**
 * Polls one URL until it answers 200 with a manifest; `onBody` gets a manifest a 202 carries. `running`: the
 * manifest came in a 202 (with `onBody`, a part that already links to the next one), the job is not done;
 * `retryAfter` is then that 202's wait.
 */
const pollOnce = (
  client: FhirClient,
  url: string,
  options: PollOptions,
  onBody?: (part: ExportManifest) => Effect.Effect<void>,
) =>
  Effect.gen(function* () {
    const maxInterval = Duration.decode(options.maxInterval ?? Duration.seconds(60))
    let interval = Duration.decode(options.interval ?? Duration.seconds(1))
    const grow = () => {
      interval = Duration.min(Duration.times(interval, 1.5), maxInterval)
    }
    for (;;) {
      const result = yield* client
        .request(HttpClientRequest.get(url).pipe(HttpClientRequest.setHeader("accept", "application/json")))
        .pipe(Effect.either)
      if (result._tag === "Left") {
        const e = result.left
        if (e instanceof FhirError && !isJobGone(e) && isTransientPollFailure(e)) {
          const wait = interval
          grow()
          if (options.onRetry) yield* options.onRetry(e, wait)
          yield* Effect.sleep(wait)
          continue
        }
        if (e instanceof FhirError && e.reason === "Status" && !isJobGone(e)) {
          return yield* new ExportError({
            reason: "JobFailed",
            url: redactUrl(url),
            detail: `the export job failed (${e.status})${e.outcome ? `: ${summary(e.outcome)}` : e.detail ? `: ${e.detail}` : ""}; check the server's logs, then run the export again`,
            cause: e,
          })
        }
        return yield* Effect.fail(e)
      }
      const response = result.right
      if (response.status === 200) {
        const json = yield* response.json.pipe(
          Effect.mapError(
            (cause) =>
              new ExportError({
                reason: "Manifest",
                url: redactUrl(url),
                detail: "the completion manifest is not JSON; the server's $export answer is broken",
                cause,
              }),
          ),
        )
        return yield* decodeManifest(json).pipe(
          Effect.map((manifest) => ({
            manifest,
            running: false,
            retryAfter: Option.none<Duration.Duration>(),
          })),
          Effect.mapError(
            (e) =>
              new ExportError({
                reason: "Manifest",
                url: redactUrl(url),
                detail: `${describeParseError("a Bulk Data manifest", e)}; the server's $export answer is not a valid manifest`,
              }),
          ),
        )
      }
      // 202 (or another 2xx): still running. Its body is at most the manifest so far (anything else, or
      // one that does not read as a manifest, is the server's business: the 200 is what counts).
      if (onBody === undefined) yield* Effect.ignore(response.text)
      else {
        const part = yield* response.json.pipe(Effect.flatMap(decodeManifest), Effect.option)
        if (Option.isSome(part)) {
          // a part with its `link` next can no longer change but for refreshed URLs (STU3): it is done,
          // and the next part is asked for now, while the job still runs
          if (Option.isSome(nextManifest(part.value))) {
            const now = yield* Clock.currentTimeMillis
            const wait = retryAfter(response.headers["retry-after"], now, Duration.minutes(10))
            return { manifest: part.value, running: true, retryAfter: wait }
          }
          yield* onBody(part.value)
        }
      }
      const progress = response.headers["x-progress"]
      if (options.onProgress) yield* options.onProgress(progress)
      const now = yield* Clock.currentTimeMillis
      const wait = Option.match(retryAfter(response.headers["retry-after"], now, Duration.minutes(10)), {
        onNone: () => {
          const w = interval
          grow()
          return w
        },
        // A zero Retry-After would make us spin: never poll faster than every 100 ms.
        onSome: (d) => Duration.max(d, Duration.millis(100)),
      })
      yield* Effect.sleep(wait)
    }
  })

/** `a` then the items of `b` whose URL `a` does not have. */
const union = <T extends { readonly url: string }>(a: ReadonlyArray<T>, b: ReadonlyArray<T>): Array<T> => {
  const urls = new Set(a.map((i) => i.url))
  return [...a, ...b.filter((i) => !urls.has(i.url))]
}

/**
 * Polls the status URL until the job completes and returns its manifest; `link` next parts are fetched
 * (each polled the same way) and their `output`, `deleted` and `error` appended.
 */
export const waitForManifest = Effect.fn("Poll.waitForManifest")(function* (
  client: FhirClient,
  statusUrl: string,
  options: PollOptions = {},
) {
  const timeout = Duration.decode(options.timeout ?? Duration.hours(24))
  /** The status URL's last answer, when it was a failure asked again (cleared by a 202). */
  let failing: FhirError | undefined
  const tracked: PollOptions = {
    ...options,
    onRetry: (e, wait) =>
      Effect.zipRight(
        Effect.sync(() => {
          failing = e
        }),
        options.onRetry?.(e, wait) ?? Effect.void,
      ),
    onProgress: (progress) =>
      Effect.zipRight(
        Effect.sync(() => {
          failing = undefined
        }),
        options.onProgress?.(progress) ?? Effect.void,
      ),
  }
  const onPartial = options.onPartial
  // an item a server repeats in a later part (the IG only says which fields repeat) is listed once
  const merge = (a: ExportManifest, b: ExportManifest): ExportManifest => ({
    ...a,
    output: union(a.output, b.output),
    deleted: union(a.deleted, b.deleted),
    error: union(a.error, b.error),
  })
  const withoutLink = (m: ExportManifest): ExportManifest => {
    const { link: _link, ...rest } = m
    return rest as ExportManifest
  }
  /** What the parts before this one gave, merged with what this one says so far, to `onPartial`. */
  const reporter = (before: ExportManifest | undefined) =>
    onPartial === undefined
      ? undefined
      : (part: ExportManifest) => onPartial(withoutLink(before === undefined ? part : merge(before, part)))
  const maxInterval = Duration.decode(options.maxInterval ?? Duration.seconds(60))
  /**
   * The parts in order from the status URL. A link is resolved against the part that holds it. While the
   * job runs (the status URL answered 202 with a part that links on), a next part that answers 404 may just
   * not be published yet: the chain is read again from the status URL (which says whether the job is gone),
   * after the longer of the 202's Retry-After and a wait that grows as polling does; a link back to a part
   * already read is an error then (the manifest could not be complete). Once the job is done, such a link
   * ends the chain.
   */
  const all = Effect.gen(function* () {
    let wait = Duration.decode(options.interval ?? Duration.seconds(1))
    for (;;) {
      const first = yield* pollOnce(client, statusUrl, tracked, reporter(undefined))
      // the status URL's answer says whether the job runs, for every part of this pass
      const running = first.running
      let manifest = first.manifest
      let next = nextManifest(first.manifest)
      let here = statusUrl
      const seen = new Set<string>([statusUrl])
      let again = false
      while (Option.isSome(next)) {
        const url = new URL(next.value, here).toString()
        if (seen.has(url)) {
          if (!running) break
          return yield* new ExportError({
            reason: "Manifest",
            url: redactUrl(url),
            detail:
              "the parts of the export's manifest link back to one already read while the job still runs; the server's partial manifests are broken, export without --allow-partial-manifests",
          })
        }
        seen.add(url)
        if (onPartial !== undefined) yield* onPartial(withoutLink(manifest))
        const part = yield* pollOnce(client, url, tracked, reporter(manifest)).pipe(
          Effect.map(Option.some),
          Effect.catchIf(
            (e) => running && isJobGone(e),
            () => Effect.succeed(Option.none()),
          ),
        )
        if (Option.isNone(part)) {
          again = true
          break
        }
        manifest = merge(manifest, part.value.manifest)
        next = nextManifest(part.value.manifest)
        here = url
      }
      if (!again) return withoutLink(manifest)
      const pause = Option.match(first.retryAfter, {
        onNone: () => wait,
        onSome: (d) => Duration.max(d, wait),
      })
      wait = Duration.min(Duration.times(wait, 1.5), maxInterval)
      yield* Effect.sleep(pause)
    }
  })
  return yield* all.pipe(
    Effect.timeoutFail({
      duration: timeout,
      onTimeout: () =>
        new ExportError({
          reason: "Timeout",
          url: redactUrl(statusUrl),
          detail:
            failing === undefined
              ? `the export job did not finish within ${Duration.format(timeout)}; run the same command again to keep waiting for it, or raise --timeout`
              : `the export job did not finish within ${Duration.format(timeout)}, and the status URL's last answers were failures (${failing.status ?? failing.reason}${failing.outcome !== undefined ? `: ${summary(failing.outcome)}` : ""}): the job may have failed; check the server's logs, then run the same command again (it asks the same job first)`,
        }),
    }),
  )
}) satisfies (
  client: FhirClient,
  statusUrl: string,
  options?: PollOptions,
) => Effect.Effect<ExportManifest, ExportError | FhirError | AuthError>

/** Releases the job on the server (DELETE status URL). Failures are returned, not swallowed. */
export const release = (client: FhirClient, statusUrl: string): Effect.Effect<void, FhirError | AuthError> =>
  client.request(HttpClientRequest.del(statusUrl)).pipe(Effect.flatMap((r) => Effect.ignore(r.text)))
