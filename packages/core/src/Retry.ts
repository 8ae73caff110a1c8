import { HttpClientError } from "@effect/platform"
import { Clock, Data, Duration, Effect, Option, Predicate, Schedule } from "effect"
import { AuthError, FhirError } from "./Errors.js"
import { isPermanentTransport, networkCode } from "./Http.js"

/**
 * Issue codes that mean "the request failed, try it again later": `transient` and its children in the
 * FHIR issue-type hierarchy (Bulk Data IG, status polling).
 */
/** Re-exported from OperationOutcome (the one definition of a transient outcome). */
import {
  isTransient as isTransientOutcome,
  transientCodes as transientIssueCodes,
} from "./OperationOutcome.js"

export { isTransientOutcome, transientIssueCodes }

/** Statuses retried whatever the body says. 500 is retried only with a transient OperationOutcome. */
export const retryableStatuses: ReadonlySet<number> = new Set([408, 429, 502, 503, 504])

/**
 * One failed attempt as the retry schedule sees it: the FhirError it becomes once retrying stops, plus
 * the response's raw `Retry-After` header (FhirError has no field for it).
 */
export class Attempt extends Data.TaggedError("@ferry/core/Retry/Attempt")<{
  readonly error: FhirError
  readonly retryAfter: string | undefined
  /** Set for failures that must not be retried whatever their reason (e.g. an unusable URL). */
  readonly permanent?: boolean
  /**
   * Whether the hop that got this answer carried `Authorization`. After redirects that is the last hop, not
   * the first: a 401 from a host that was sent no credentials says nothing about the credentials.
   */
  readonly sentAuthorization?: boolean
  /**
   * The host that redirected this request back to the base's origin, when credentials were withheld for that
   * reason (they are not sent on a request that has been elsewhere).
   */
  readonly detouredVia?: string
}> {}

const epochSecondsThreshold = 1e9
const epochMillisThreshold = 1e12

/**
 * Reads a `Retry-After` value: delta seconds (`"120"`), an HTTP-date, or (server quirk) an absolute epoch
 * timestamp in seconds (> 10^9) or milliseconds (> 10^12). A time in the past or a negative delay gives zero;
 * the result is capped at `max` (default 120 s). `now` is epoch milliseconds from `Clock`.
 */
export const retryAfter = (
  headerValue: string | undefined,
  now: number,
  max: Duration.DurationInput = Duration.seconds(120),
): Option.Option<Duration.Duration> => {
  if (headerValue === undefined) return Option.none()
  const value = headerValue.trim()
  if (value === "") return Option.none()
  let millis: number
  if (/^[+-]?\d+(\.\d+)?$/.test(value)) {
    const n = Number(value)
    millis =
      n > epochMillisThreshold ? n - now : n > epochSecondsThreshold ? n * 1000 - now : Math.round(n * 1000)
  } else {
    const at = Date.parse(value)
    if (Number.isNaN(at)) return Option.none()
    millis = at - now
  }
  return Option.some(Duration.min(Duration.millis(Math.max(0, millis)), Duration.decode(max)))
}

/**
 * Whether a failure is worth another try: transport errors, 408/429/502/503/504, a 500 whose
 * OperationOutcome is transient, and a FhirError already marked Throttled. Never other 4xx, never an
 * AuthError, never a decode failure, never a transport failure that trying again cannot cure (a TLS
 * certificate that is not trusted, a port that does not speak TLS or HTTP, a request that cannot be sent:
 * `isPermanentTransport`). Accepts FhirError, the schedule's `Attempt`, and platform HttpClientErrors (so the
 * schedule also works with `HttpClient.retry`).
 */
export const isRetryable = (error: unknown): boolean => {
  if (error instanceof AuthError) return false
  if (error instanceof Attempt && error.permanent === true) return false
  const fhir = error instanceof Attempt ? error.error : error instanceof FhirError ? error : undefined
  if (fhir !== undefined) {
    switch (fhir.reason) {
      case "Transport":
        return !isPermanentTransport(fhir.detail)
      case "Throttled":
        return true
      case "Decode":
        return false
      case "Status": {
        const status = fhir.status ?? 0
        if (retryableStatuses.has(status)) return true
        return status === 500 && fhir.outcome !== undefined && isTransientOutcome(fhir.outcome)
      }
    }
  }
  if (HttpClientError.isHttpClientError(error)) {
    if (error._tag === "RequestError") {
      return error.reason === "Transport" && !isPermanentTransport(networkCode(error.cause))
    }
    return error.reason === "StatusCode" && retryableStatuses.has(error.response.status)
  }
  return false
}

const retryAfterHeaderOf = (error: unknown): string | undefined => {
  if (error instanceof Attempt) return error.retryAfter
  if (HttpClientError.isHttpClientError(error) && error._tag === "ResponseError") {
    return error.response.headers["retry-after"]
  }
  return undefined
}

export interface RetryOptions {
  /** Retries after the first attempt (default 5). */
  readonly times: number
  /** First backoff delay, doubled each retry (default 500 ms). */
  readonly base: Duration.DurationInput
  /** Ceiling for one computed backoff delay (default 30 s). */
  readonly cap: Duration.DurationInput
  /** Ceiling for a server's Retry-After (default 120 s). */
  readonly maxRetryAfter: Duration.DurationInput
}

export const defaultRetryOptions: RetryOptions = {
  times: 5,
  base: Duration.millis(500),
  cap: Duration.seconds(30),
  maxRetryAfter: Duration.seconds(120),
}

/**
 * The retry policy for FHIR calls, for `Effect.retry` / `HttpClient.retry`: exponential backoff with jitter,
 * each delay capped, at most `times` retries, only while `isRetryable(error)`. When the failing answer
 * carried `Retry-After`, that delay (capped at `maxRetryAfter`, not jittered) replaces the backoff.
 * Time comes from `Clock` only, so it runs on TestClock.
 */
export const fhirRetry = (options: Partial<RetryOptions> = {}): Schedule.Schedule<unknown, unknown> => {
  const o = { ...defaultRetryOptions, ...options }
  const cap = Duration.decode(o.cap)
  return Schedule.exponential(o.base, 2).pipe(
    Schedule.jittered,
    Schedule.modifyDelay((_, d) => Duration.min(d, cap)),
    Schedule.intersect(Schedule.recurs(Math.max(0, o.times))),
    Schedule.intersect(Schedule.identity<unknown>()),
    Schedule.modifyDelayEffect(([, error], delay) =>
      Effect.map(Clock.currentTimeMillis, (now) =>
        Option.getOrElse(retryAfter(retryAfterHeaderOf(error), now, o.maxRetryAfter), () => delay),
      ),
    ),
    Schedule.whileInput(isRetryable),
  )
}

/** True for statuses that end as `Throttled` once retries run out. */
export const isThrottleStatus = (status: number | undefined): boolean => status === 429 || status === 503

export const isAttempt: (u: unknown) => u is Attempt = (u): u is Attempt =>
  Predicate.isTagged(u, "@ferry/core/Retry/Attempt")

/**
 * A failed bulk job status request (`$export` or `$import`) that reports a crash (`fatal`, `exception`) rather
 * than a passing trouble: `exception` is a child of `transient` in FHIR's issue types, but a fatal one is how
 * servers report a job that died.
 */
const crashed = (e: FhirError): boolean =>
  // a 500 only: a gateway's 502/504 is retried whatever its body says
  e.reason === "Status" &&
  e.status === 500 &&
  (e.outcome?.issue.some((i) => i.severity === "fatal" && i.code === "exception") ?? false)

/** Whether a failed bulk job status request should simply be asked again later. */
export const isTransientPollFailure = (e: FhirError): boolean =>
  !crashed(e) &&
  (isRetryable(e) || (e.reason === "Status" && e.outcome !== undefined && isTransientOutcome(e.outcome)))
