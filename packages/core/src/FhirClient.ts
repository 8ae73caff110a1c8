import {
  FetchHttpClient,
  Headers,
  HttpClient,
  HttpClientError,
  HttpClientRequest,
  type HttpClientResponse,
  type UrlParams,
} from "@effect/platform"
import { Chunk, Context, Duration, Effect, Layer, Option, type ParseResult, Schema, Stream } from "effect"
import type { Dispatcher } from "undici"
import * as Bundle from "./Bundle.js"
import { CapabilityStatement } from "./CapabilityStatement.js"
import { AuthError, FhirError } from "./Errors.js"
import { proxyTrouble } from "./HttpDispatcher.js"
import {
  describeBody,
  withoutCredential,
  describeParseError,
  bodyFailure,
  fhirJson,
  isAbsolute,
  isPermanentTransport,
  isRedirect,
  networkCode,
  noAnswerWithin,
  nothingThereCodes,
  readTextPrefix,
  redactUrl,
  resolveUrl,
  sameOrigin,
  transportProblem,
} from "./Http.js"
import { FhirResource, type Resource } from "./Ids.js"
import { carryNumbers, parseKeepingNumbers } from "./NumberText.js"
import * as RawHttp from "./internal/RawHttp.js"
import { summary } from "./OperationOutcome.js"
import {
  Attempt,
  defaultRetryOptions,
  fhirRetry,
  isRetryable,
  isThrottleStatus,
  type RetryOptions,
} from "./Retry.js"

/**
 * What `Schema` decoding made of a parsed answer keeps how its resources' numbers were written
 * (`NumberText.parseKeepingNumbers`): the resource itself, or each Bundle entry's (decoding copies them).
 */
const carryResources = (raw: unknown, decoded: unknown): void => {
  if (!isRecord(raw) || !isRecord(decoded)) return
  carryNumbers(raw, decoded)
  const from = raw.entry
  const to = decoded.entry
  if (!Array.isArray(from) || !Array.isArray(to)) return
  for (let i = 0; i < from.length && i < to.length; i++) {
    const a: unknown = from[i]
    const b: unknown = to[i]
    if (isRecord(a) && isRecord(b) && isRecord(a.resource) && isRecord(b.resource))
      carryNumbers(a.resource, b.resource)
  }
}

const isRecord = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** The details of a body that broke off or stalled while it was read (a GET so failing is asked again). */
const BROKE_OFF = "the answer broke off"
const ANSWER_STALLED = "the answer stalled"

export interface FhirClientOptions {
  /** The server's FHIR base, e.g. `https://fhir.example.org/r4`. */
  readonly baseUrl: string
  /** Adds credentials to a request; called for every attempt, and only for requests to the base's origin. */
  readonly authorize?: (
    request: HttpClientRequest.HttpClientRequest,
  ) => Effect.Effect<HttpClientRequest.HttpClientRequest, AuthError>
  /**
   * Run once after a 401 to a hop that carried Authorization (e.g. drop the cached token); the request is then
   * tried once more. A 401 from a hop sent no credentials (another origin) does not run it.
   */
  readonly onUnauthorized?: Effect.Effect<void, AuthError>
  readonly retry?: Partial<RetryOptions>
  readonly userAgent?: string
  /**
   * Per attempt, until the response headers arrive (default 5 minutes; `Duration.infinity`: none); for `get`, also
   * each wait for more of the body. (The bodies of other requests are bounded by the pool: `HttpDispatcher.make`.)
   */
  readonly timeout?: Duration.DurationInput
  /**
   * Of the retries (`retry.times`), how many may follow an attempt that got no answer within `timeout`
   * (default 2): a server that takes connections and never answers fails after three timeouts, not after
   * `times` of them (eight five-minute waits would be the better part of an hour).
   */
  readonly timeoutRetries?: number
  /**
   * What to check when the server refuses the credentials sent (401 after the refresh), e.g. "check the
   * client id, key and scopes" for SMART; default "check the credentials configured for this server".
   */
  readonly refusedHint?: string
  /** Redirects followed per attempt (default 5). */
  readonly maxRedirects?: number
  /**
   * How long a refused connection (or an unknown host) is retried before the server has ever answered
   * (default 3 s: a server still starting); after that it ends the request at once (a wrong URL or port).
   * Kept per origin: attachments on another host that is down fail fast too, each after the first.
   */
  readonly unreachableGrace?: Duration.DurationInput
  /**
   * Past that grace, a request with `holdBack` to such an origin is not even sent while its last try is more
   * recent than this (default 10 s): it fails at once with the last error. One then goes through, in case the
   * host is back.
   */
  readonly unreachableProbe?: Duration.DurationInput
}

export interface RequestOptions {
  /** `false`: send no Authorization at all (e.g. manifest `requiresAccessToken: false`). Default true. */
  readonly auth?: boolean
  /** `false`: one attempt only, no retry schedule. Default true. */
  readonly retry?: boolean
  /**
   * One of many requests to origins that may be down (attachments, possibly on another host): past the
   * unreachable grace period, while the origin has never answered and refused its last try (or let the
   * connection attempt time out: a host behind a firewall that drops it), it fails unsent
   * until `unreachableProbe` after that try, instead of a connection attempt each. Off for requests that must
   * reach their server (kick-off, polling, the data files): those are sent every time (a refusal past the
   * grace period still ends each of them at once, without the retry schedule).
   */
  readonly holdBack?: boolean
}

export interface WriteResult {
  readonly status: number
  /** `Location` (create) or `Content-Location`, e.g. `https://h/fhir/Patient/1/_history/1`. */
  readonly location: Option.Option<string>
  readonly etag: Option.Option<string>
  readonly lastModified: Option.Option<string>
  /** The resource the server sent back, if it sent one. */
  readonly resource: Option.Option<Resource>
}

export interface OperationOptions {
  readonly method: "GET" | "POST" | "PUT" | "DELETE" | "PATCH"
  /** JSON body (a Parameters resource, or plain JSON for the SMART `$import` draft). */
  readonly body?: unknown
  /** Default `application/fhir+json`. */
  readonly contentType?: string
  readonly headers?: Readonly<Record<string, string>>
  readonly urlParams?: UrlParams.Input
}

export interface StreamOptions extends RequestOptions {
  readonly headers?: Readonly<Record<string, string>>
}

export type SearchParams = UrlParams.Input

export interface GetOptions extends RequestOptions {
  /** Extra request headers (`accept` defaults to `*\/*`). Never pass Authorization here: `auth` decides. */
  readonly headers?: Readonly<Record<string, string>>
  /**
   * The origins a redirect may lead to (the caller's allow-list of attachment hosts); a redirect elsewhere
   * fails the request, unsent there. Default: any.
   */
  readonly followTo?: (origin: string) => boolean
}

/** A 2xx answer of `get`: the caller reads `body` to its end (or calls `body.dump()`) to free the connection. */
export interface RawResponse {
  readonly status: number
  /** Lowercase names; a repeated header's values joined with ", ". */
  readonly headers: Readonly<Record<string, string | undefined>>
  /** The URL that answered (after redirects). */
  readonly url: string
  /** undici's body: a Node Readable with `arrayBuffer()`, `json()`, `text()` and `dump()`. */
  readonly body: Dispatcher.ResponseData["body"]
}

/** A FHIR REST client bound to one server. Every method has R = never. */
export interface FhirClient {
  readonly baseUrl: string
  /**
   * Sends a request (relative URLs are resolved against the base) with auth, retry and redirects applied.
   * Non-2xx answers fail with FhirError (Status, or Throttled once 429/503 retries ran out); a 401 that
   * survives `onUnauthorized` fails with AuthError (Unauthorized).
   */
  readonly request: (
    request: HttpClientRequest.HttpClientRequest,
    options?: RequestOptions,
  ) => Effect.Effect<HttpClientResponse.HttpClientResponse, FhirError | AuthError>
  readonly read: (type: string, id: string) => Effect.Effect<Resource, FhirError | AuthError>
  readonly search: (
    type: string,
    params?: SearchParams,
  ) => Effect.Effect<Bundle.Bundle, FhirError | AuthError>
  /** Every resource of a search, page by page along `next` links (one page in memory at a time). */
  readonly searchAll: (type: string, params?: SearchParams) => Stream.Stream<Resource, FhirError | AuthError>
  readonly capabilities: () => Effect.Effect<CapabilityStatement, FhirError | AuthError>
  readonly transaction: (bundle: Bundle.Bundle) => Effect.Effect<Bundle.Bundle, FhirError | AuthError>
  readonly batch: (bundle: Bundle.Bundle) => Effect.Effect<Bundle.Bundle, FhirError | AuthError>
  readonly create: (
    resource: Resource,
    options?: { readonly ifNoneExist?: string; readonly prefer?: string },
  ) => Effect.Effect<WriteResult, FhirError | AuthError>
  readonly update: (
    resource: Resource & { readonly id: string },
    options?: { readonly ifMatch?: string; readonly prefer?: string },
  ) => Effect.Effect<WriteResult, FhirError | AuthError>
  readonly delete: (type: string, id: string) => Effect.Effect<void, FhirError | AuthError>
  /** An operation such as `$export`, `Group/1/$export` or `$import`; the raw answer (e.g. 202 + Content-Location). */
  readonly operation: (
    path: string,
    options: OperationOptions,
  ) => Effect.Effect<HttpClientResponse.HttpClientResponse, FhirError | AuthError>
  /**
   * The bytes of a (possibly absolute) URL, for NDJSON files and attachments. Authorization goes only to the
   * base's origin, never to other hosts nor across a redirect to one. Retries cover getting the response,
   * not a stream that breaks mid-way.
   */
  readonly stream: (url: string, options?: StreamOptions) => Stream.Stream<Uint8Array, FhirError | AuthError>
  /**
   * A lean GET for the export's hot loops (NDJSON files, thousands of small attachments): undici's `request`
   * directly, without the Effect HttpClient per request (measured: 1.1–2 ms of CPU per small GET through it,
   * against ≈ 0.3 ms for a bare request; docs/benchmarks.md). The same rules as `request`: relative URLs
   * resolve against the base, Authorization (from `authorize`, per attempt) only to the base's origin and only
   * when `auth` is on, never across a redirect to another origin (redirects followed here, at most
   * `maxRedirects`), one `onUnauthorized` and one more try after a 401, the same retry schedule and
   * per-attempt timeout, typed errors with redacted URLs. TLS certificates are verified (undici's default).
   */
  readonly get: (url: string, options?: GetOptions) => Effect.Effect<RawResponse, FhirError | AuthError>
}

const errorBodyLimit = 256 * 1024

const urlOf = (request: HttpClientRequest.HttpClientRequest): string =>
  Option.match(HttpClientRequest.toUrl(request), { onNone: () => request.url, onSome: (u) => u.toString() })

const fhirErrorFromTransport = (
  request: HttpClientRequest.HttpClientRequest,
  error: HttpClientError.HttpClientError,
): Attempt => {
  const detail = error.reason === "Transport" ? transportDetail(error.cause) : `${error.reason} error`
  const url = urlOf(request)
  const proxy =
    error.reason === "Transport"
      ? proxyTrouble(process.env, url, error.cause, networkCode(error.cause))
      : undefined
  return new Attempt({
    error: new FhirError({
      reason: "Transport",
      method: request.method,
      url: redactUrl(url),
      detail,
      ...(proxy !== undefined ? { proxy: proxy.sentence } : {}),
      cause: error.cause,
    }),
    retryAfter: undefined,
    // A malformed URL, an unencodable body, a header HTTP does not allow (UND_ERR_INVALID_ARG), an untrusted
    // certificate or a port that does not speak TLS or HTTP will not get better by trying again; nor a proxy
    // that will not open a tunnel to the server (wants credentials, forbids the host).
    permanent: error.reason !== "Transport" || isPermanentTransport(detail) || proxy?.permanent === true,
  })
}

/**
 * Connection failures that mean nothing answers at that address (a wrong host or port) rather than a hiccup:
 * before the server has answered once, they end the request at once instead of after minutes of retries.
 */
const NOTHING_THERE = nothingThereCodes

/**
 * A connection attempt that timed out: a host behind a firewall that drops it, or a busy server. Counted as
 * "nothing there" only for `holdBack` requests (attachments on another host): a request that must reach its
 * server keeps its retry schedule, since a busy server drops connection attempts too.
 */
const CONNECT_TIMED_OUT = new Set(["UND_ERR_CONNECT_TIMEOUT", "ETIMEDOUT"])

/** An origin that has not answered yet (see `make`'s `reached`). */
interface Unanswered {
  readonly since: number
  readonly lastTry: number
  readonly error: FhirError
}

const transportDetail = (cause: unknown): string => networkCode(cause) ?? "connection failed"

/**
 * What to do about a 404 from the FHIR base itself, a resource type (`Patient`) or a kick-off (`$export`,
 * `$import`): a wrong base URL is the likely cause. None for anything else: a resource (`Patient/1`) may just
 * be gone, a status or output URL belongs to a job that ended.
 */
const notFoundHint = (url: string, baseUrl: string): string | undefined => {
  const at = Option.liftThrowable(() => new URL(url))()
  const base = Option.liftThrowable(() => new URL(baseUrl))()
  if (Option.isNone(at) || Option.isNone(base) || at.value.origin !== base.value.origin) return undefined
  const basePath = base.value.pathname.replace(/\/+$/, "")
  const path = at.value.pathname.replace(/\/+$/, "")
  if (path !== basePath && !path.startsWith(`${basePath}/`)) return undefined
  const segments = path
    .slice(basePath.length)
    .split("/")
    .filter((s) => s !== "")
  const shown = redactUrl(baseUrl).replace(/\/+$/, "")
  const last = segments.at(-1) ?? ""
  if (/^\$(export|import)$/.test(last)) {
    return `the server does not offer ${last} there, or ${shown} is not its FHIR base URL; check it`
  }
  return segments.length === 0 || (segments.length === 1 && /^[A-Z][A-Za-z]+$/.test(last))
    ? `is ${shown} the server's FHIR base URL (often ending in /fhir or /r4)? check it`
    : undefined
}

const finalError = (
  attempt: Attempt,
  retried: boolean,
  baseUrl: string,
  refusedHint: string,
): FhirError | AuthError => {
  const e = attempt.error
  if (e.reason === "Status" && e.status === 401) {
    // (the server's words without their closing period: the sentence goes on after them)
    const said = (e.outcome ? `: ${summary(e.outcome)}` : e.detail ? `: ${e.detail}` : "").replace(/\.+$/, "")
    return new AuthError({
      reason: "Unauthorized",
      url: e.url,
      detail:
        attempt.sentAuthorization === true
          ? `the server refused the credentials (401)${said}; ${refusedHint}`
          : attempt.detouredVia !== undefined
            ? `the server requires authorization (401)${said}; Ferry sent no credentials because the request came back to ${originOf(baseUrl)} through a redirect from ${attempt.detouredVia}, and credentials never follow a redirect from another host: give Ferry a URL that does not go through it`
            : sameOrigin(e.url, baseUrl)
              ? `the server requires authorization (401)${said}; configure authentication for this server (the command's --help lists its --auth flags)`
              : // No credentials went there (they go to the base's origin only), so none can be "wrong".
                `this host requires authorization (401)${said}; Ferry sent it no credentials, since it sends them only to ${originOf(baseUrl)}: the host must allow access without them (e.g. signed URLs)`,
    })
  }
  if (retried && e.reason === "Status" && isThrottleStatus(e.status)) {
    return new FhirError({
      reason: "Throttled",
      method: e.method,
      url: e.url,
      status: e.status,
      outcome: e.outcome,
      detail: e.detail,
    })
  }
  if (e.reason === "Status" && e.status === 403 && e.hint === undefined) {
    // an authorization failure (the CLI's exit 3): say what to ask for
    return new FhirError({
      reason: "Status",
      method: e.method,
      url: e.url,
      status: 403,
      outcome: e.outcome,
      detail: e.detail,
      hint:
        attempt.sentAuthorization === true
          ? "the credentials sent are not allowed this request: ask for the access it needs (a wider scope, e.g. system/*.rs to export or system/*.cruds to import, or more rights for this client on the server)"
          : sameOrigin(e.url, baseUrl)
            ? "configure credentials that allow it"
            : `Ferry sends credentials only to ${originOf(baseUrl)}: this host must allow access without them`,
    })
  }
  if (e.reason === "Status" && e.status === 404 && e.hint === undefined) {
    // a transaction or batch a FHIR server read and answered 404 with an OperationOutcome (an entry's
    // conditional reference that matched nothing): the base is right, the content is not
    const transactionRead =
      e.method === "POST" &&
      e.outcome !== undefined &&
      e.url.replace(/\/+$/, "") === baseUrl.replace(/\/+$/, "")
    const hint = transactionRead ? undefined : notFoundHint(e.url, baseUrl)
    if (hint !== undefined) {
      return new FhirError({
        reason: "Status",
        method: e.method,
        url: e.url,
        status: 404,
        outcome: e.outcome,
        detail: e.detail,
        hint,
      })
    }
  }
  return e
}

const originOf = (url: string): string =>
  Option.getOrElse(Option.liftThrowable(() => new URL(url).origin)(), () => url)

/** Builds a client for one server from the ambient `HttpClient`. */
export const make = Effect.fn("FhirClient.make")(function* (options: FhirClientOptions) {
  const http = yield* HttpClient.HttpClient
  const baseUrl = options.baseUrl.replace(/\/+$/, "")
  if (!isAbsolute(baseUrl) || Option.isNone(Option.liftThrowable(() => new URL(baseUrl))())) {
    return yield* Effect.die(new Error(`FhirClient.make: baseUrl must be an absolute URL, got "${baseUrl}"`))
  }
  const schedule = fhirRetry(options.retry)
  const timeout = Duration.decode(options.timeout ?? Duration.minutes(5))
  const timeoutMs = Duration.isFinite(timeout) ? Duration.toMillis(timeout) : Number.POSITIVE_INFINITY
  const retries = Math.max(0, options.retry?.times ?? defaultRetryOptions.times)
  const timeoutRetries = Math.max(0, options.timeoutRetries ?? 2)
  const refusedHint = options.refusedHint ?? "check the credentials configured for this server"
  const maxRedirects = options.maxRedirects ?? 5
  const userAgent = options.userAgent ?? "ferry"
  const graceMs = Duration.toMillis(Duration.decode(options.unreachableGrace ?? Duration.seconds(3)))
  const probeMs = Duration.toMillis(Duration.decode(options.unreachableProbe ?? Duration.seconds(10)))
  /**
   * Per origin (see NOTHING_THERE, CONNECT_TIMED_OUT): `true` once it has answered anything; else, from its
   * first refused connection on, when that was, when it was last tried and what that try met. An export meets other origins
   * than the base (attachments on a document store): one that is down must not cost every attachment on it
   * the whole retry schedule (minutes each), nor, once it has kept refusing, a connection attempt each
   * (`holdBack`).
   */
  const reached = new Map<string, true | Unanswered>()
  /** `origin` (of a URL just answered, `originOf`) has answered. */
  const answeredBy = (origin: string): void => {
    if (reached.get(origin) !== true) reached.set(origin, true)
  }
  const baseOrigin = originOf(baseUrl)
  const unlessNeverAnswered =
    (url: string, holdBack: boolean) =>
    (a: Attempt): Attempt => {
      if (a.permanent === true || a.error.reason !== "Transport") return a
      const code = a.error.detail ?? ""
      if (!NOTHING_THERE.has(code) && !(holdBack && CONNECT_TIMED_OUT.has(code))) return a
      const origin = originOf(url)
      const seen = reached.get(origin)
      if (seen === true) return a
      const now = Date.now()
      const since = seen?.since ?? now
      reached.set(origin, { since, lastTry: now, error: a.error })
      return now - since >= graceMs
        ? new Attempt({ error: a.error, retryAfter: a.retryAfter, permanent: true })
        : a
    }
  /**
   * A `holdBack` request to an origin that never answered and kept refusing past the grace period ends here,
   * unsent, with that origin's last error, until `probeMs` after its last try: then this one is sent (the
   * others still end unsent while it is under way).
   */
  const unsentTo = (url: string, method: string, origin = originOf(url)): Attempt | undefined => {
    const seen = reached.get(origin)
    if (seen === undefined || seen === true) return undefined
    const now = Date.now()
    if (now - seen.since < graceMs) return undefined
    if (now - seen.lastTry >= probeMs) {
      reached.set(origin, { ...seen, lastTry: now })
      return undefined
    }
    return new Attempt({
      error: new FhirError({
        reason: "Transport",
        method,
        url: redactUrl(url),
        detail: `${seen.error.detail ?? "connection failed"}; not sent: nothing at ${origin} has answered since ${new Date(seen.since).toISOString()}, it is tried again every ${Duration.format(Duration.millis(probeMs))}`,
      }),
      retryAfter: undefined,
      permanent: true,
    })
  }

  const withTimeout =
    (sent: HttpClientRequest.HttpClientRequest) =>
    <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E | Attempt> =>
      Duration.isFinite(timeout)
        ? Effect.timeoutFail(effect, {
            duration: timeout,
            onTimeout: () =>
              new Attempt({
                error: new FhirError({
                  reason: "Transport",
                  method: sent.method,
                  url: redactUrl(urlOf(sent)),
                  detail: noAnswerWithin(timeout),
                }),
                retryAfter: undefined,
              }),
          })
        : effect

  /** A request still redirected after `maxRedirects` hops: said as such, of the URL asked for, not retried. */
  const tooManyRedirects = (method: string, asked: string, status: number) =>
    new Attempt({
      error: new FhirError({
        reason: "Status",
        method,
        url: redactUrl(asked),
        status,
        detail: `still a redirect after ${maxRedirects} (a redirect loop, or a login page in front of the server)`,
        hint: "open the URL in a browser to see where it leads, and give Ferry the final one",
      }),
      retryAfter: undefined,
      permanent: true,
    })

  /** One attempt: auth per hop (own origin only), send, follow redirects, then check the status. */
  const attempt = (
    initial: HttpClientRequest.HttpClientRequest,
    auth: boolean,
    holdBack: boolean,
  ): Effect.Effect<HttpClientResponse.HttpClientResponse, Attempt | AuthError> =>
    Effect.gen(function* () {
      let request = initial
      // every hop so far was on the base's origin (see `own` below); else the first other host met
      let ownSoFar = true
      let detour: string | undefined
      for (let hop = 0; ; hop++) {
        const unsent = holdBack ? unsentTo(request.url, request.method) : undefined
        if (unsent !== undefined) return yield* unsent
        // Authorization is only ever sent to the base's own origin, and never when auth is off; nor once the
        // request has been elsewhere: a redirect back from another host goes where that host chose.
        const here = sameOrigin(request.url, baseUrl)
        if (!here && ownSoFar) detour = originOf(request.url)
        ownSoFar = ownSoFar && here
        const own = ownSoFar
        let toSend = own && auth ? request : stripAuthorization(request)
        if (own && auth && options.authorize) toSend = yield* options.authorize(toSend)
        const response = yield* http.execute(toSend).pipe(
          // fetch would follow redirects itself, carrying Authorization along; Ferry follows them here.
          manualRedirects,
          Effect.mapError((e) =>
            unlessNeverAnswered(toSend.url, holdBack)(fhirErrorFromTransport(toSend, e)),
          ),
          withTimeout(toSend),
        )
        answeredBy(originOf(toSend.url))
        const location = response.headers.location
        const target =
          isRedirect(response.status) && location !== undefined && hop < maxRedirects
            ? Option.liftThrowable(() => new URL(location, urlOf(request)))()
            : Option.none()
        if (Option.isSome(target)) {
          yield* readTextPrefix(response, errorBodyLimit) // free the connection
          const next = target.value
          const toGet =
            response.status === 303 ||
            ((response.status === 301 || response.status === 302) && request.method === "POST")
          const carriesBody = !toGet && request.method !== "GET" && request.method !== "HEAD"
          if (carriesBody && !sameOrigin(next.href, urlOf(request))) {
            // A request body (a Bundle of patient data, an $import kick-off naming the file server's token)
            // goes only where it was addressed: never re-sent to another origin.
            return yield* new Attempt({
              error: new FhirError({
                reason: "Status",
                method: request.method,
                url: redactUrl(urlOf(request)),
                status: response.status,
                detail: `the server redirected this ${request.method} to another origin (${redactUrl(next.href)}); Ferry does not send request bodies across origins: use the server's final URL`,
              }),
              retryAfter: undefined,
              permanent: true,
            })
          }
          request = HttpClientRequest.setUrl(request, next)
          if (toGet && request.method !== "GET" && request.method !== "HEAD") {
            request = HttpClientRequest.get(next, {
              headers: Headers.remove(request.headers, ["content-type", "content-length"]),
            })
          }
          continue
        }
        if (response.status >= 200 && response.status < 300) return response
        if (isRedirect(response.status) && location !== undefined) {
          yield* readTextPrefix(response, errorBodyLimit) // free the connection
          return yield* tooManyRedirects(initial.method, urlOf(initial), response.status)
        }
        const text = yield* readTextPrefix(response, errorBodyLimit)
        const described = describeBody(
          withoutCredential(text, toSend.headers.authorization),
          response.headers["content-type"],
        )
        return yield* new Attempt({
          error: new FhirError({
            reason: "Status",
            method: toSend.method,
            url: redactUrl(urlOf(toSend)),
            status: response.status,
            ...described,
          }),
          retryAfter: response.headers["retry-after"],
          sentAuthorization: toSend.headers.authorization !== undefined,
          ...(auth && detour !== undefined && sameOrigin(request.url, baseUrl)
            ? { detouredVia: detour }
            : {}),
        })
      }
    }).pipe(
      Effect.tapError((e) =>
        e instanceof Attempt
          ? Effect.logDebug("FHIR request failed").pipe(
              Effect.annotateLogs({ method: e.error.method, status: e.error.status ?? e.error.reason }),
            )
          : Effect.void,
      ),
    )

  const prepare = (request: HttpClientRequest.HttpClientRequest) => {
    let r = HttpClientRequest.setUrl(request, resolveUrl(baseUrl, request.url))
    if (r.headers.accept === undefined) r = HttpClientRequest.setHeader(r, "accept", fhirJson)
    if (r.headers["user-agent"] === undefined) r = HttpClientRequest.setHeader(r, "user-agent", userAgent)
    return r
  }

  /**
   * `once` on the retry schedule, where a timed-out attempt past the `timeoutRetries`-th is final; one that will
   * be tried again is logged as a warning, so that a server that takes the connection and never answers does
   * not leave the command silent for many minutes.
   */
  const retried = <A>(once: Effect.Effect<A, Attempt | AuthError>): Effect.Effect<A, Attempt | AuthError> =>
    Effect.suspend(() => {
      let attempts = 0
      let timeouts = 0
      const counted = Effect.suspend(() => {
        attempts++
        return once
      }).pipe(
        Effect.catchIf(
          (e): e is Attempt =>
            e instanceof Attempt && e.permanent !== true && transportProblem(e.error.detail) === "NoAnswer",
          (e) => {
            timeouts++
            if (timeouts > timeoutRetries || attempts > retries) {
              return Effect.fail(new Attempt({ error: e.error, retryAfter: e.retryAfter, permanent: true }))
            }
            return Effect.logWarning(
              `${e.error.method} ${e.error.url}: the server accepted the connection but gave ${e.error.detail}; trying again (${timeouts} of at most ${timeoutRetries} ${timeoutRetries === 1 ? "retry" : "retries"} after a timeout)`,
            ).pipe(Effect.zipRight(Effect.fail(e)))
          },
        ),
        // From the second retry on, each is said (a 5xx, a 429 or a refused connection that lasts): a server
        // in trouble otherwise leaves the command silent through the whole schedule (a minute and more).
        Effect.tapError((e) =>
          e instanceof Attempt &&
          attempts >= 2 &&
          attempts <= retries &&
          isRetryable(e) &&
          transportProblem(e.error.detail) !== "NoAnswer"
            ? Effect.logWarning(`${e.error.message}; trying again (retry ${attempts} of at most ${retries})`)
            : Effect.void,
        ),
      )
      // The retry schedule is entered only after a first failure (most requests succeed at once, and a schedule
      // per request was measurable in the export's per-attachment CPU): that failure is replayed as its first
      // input, so the schedule sees exactly what `Effect.retry(counted, schedule)` would.
      return Effect.catchAll(counted, (first) => {
        let replay = true
        const again = Effect.suspend(() => {
          if (!replay) return counted
          replay = false
          return Effect.fail(first)
        })
        return Effect.retry(again, schedule)
      })
    })

  /**
   * Retry schedule, one credential refresh after a 401, and the final error: shared by `request` and `get`.
   */
  const withPolicy = <A>(
    once: Effect.Effect<A, Attempt | AuthError>,
    requestOptions: RequestOptions | undefined,
  ): Effect.Effect<A, FhirError | AuthError> => {
    const auth = requestOptions?.auth ?? true
    const tries = requestOptions?.retry === false ? once : retried(once)
    const onUnauthorized = options.onUnauthorized
    // A 401 to a request that carried credentials refreshes them once, then the request (with its retries)
    // runs once more. A 401 on a hop that carried none (another origin: an attachment host, or a redirect
    // there) says nothing about the token: refreshing would drop a good one, and trying again gets the same.
    const refreshed =
      onUnauthorized === undefined || !auth
        ? tries
        : Effect.catchIf(
            tries,
            (e): e is Attempt =>
              e instanceof Attempt && e.error.status === 401 && e.sentAuthorization === true,
            () => Effect.zipRight(onUnauthorized, tries),
          )
    return Effect.mapError(refreshed, (e) =>
      e instanceof Attempt ? finalError(e, requestOptions?.retry !== false, baseUrl, refusedHint) : e,
    )
  }

  const request: FhirClient["request"] = (req, requestOptions) =>
    withPolicy(
      attempt(prepare(req), requestOptions?.auth ?? true, requestOptions?.holdBack === true),
      requestOptions,
    )

  /** One attempt of `get`: like `attempt`, on undici directly. */
  const attemptRaw = (
    initial: string,
    headers: Readonly<Record<string, string>>,
    auth: boolean,
    holdBack: boolean,
    followTo?: (origin: string) => boolean,
  ): Effect.Effect<RawResponse, Attempt | AuthError> =>
    Effect.gen(function* () {
      let url = initial
      // every hop so far was on the base's origin (see `own` below); else the first other host met
      let ownSoFar = true
      let detour: string | undefined
      for (let hop = 0; ; hop++) {
        // one parse of the URL per hop (these GETs are the export's hot loop: every attachment is one)
        const origin = originOf(url)
        const unsent = holdBack ? unsentTo(url, "GET", origin) : undefined
        if (unsent !== undefined) return yield* unsent
        // (a URL that does not parse is its own "origin", never the base's: as sameOrigin, not the same)
        // Authorization is only ever sent to the base's own origin, and never when auth is off; nor once the
        // request has been elsewhere: a redirect back from another host goes where that host chose.
        if (origin !== baseOrigin && ownSoFar) detour = origin
        ownSoFar = ownSoFar && origin === baseOrigin
        const own = ownSoFar
        let toSend = headers
        // Authorization is only ever sent to the base's own origin, and never when auth is off.
        if (own && auth && options.authorize) {
          const authorized = yield* options.authorize(HttpClientRequest.get(url))
          toSend = { ...headers, ...authorized.headers }
        }
        const response = yield* RawHttp.send(url, toSend, timeoutMs).pipe(
          Effect.mapError((e) =>
            unlessNeverAnswered(
              url,
              holdBack,
            )(
              new Attempt({
                error: new FhirError({
                  reason: "Transport",
                  method: "GET",
                  url: redactUrl(url),
                  detail: e.timedOut ? noAnswerWithin(timeout) : e.detail,
                  cause: e.cause,
                }),
                retryAfter: undefined,
                permanent: e.permanent,
              }),
            ),
          ),
        )
        answeredBy(origin)
        const status = response.statusCode
        const responseHeaders = RawHttp.flatHeaders(response.headers)
        const location = responseHeaders.location
        const target =
          isRedirect(status) && location !== undefined && hop < maxRedirects
            ? Option.liftThrowable(() => new URL(location, url))()
            : Option.none()
        if (Option.isSome(target)) {
          yield* RawHttp.dump(response.body) // free the connection
          if (followTo !== undefined && !followTo(target.value.origin))
            return yield* new Attempt({
              error: new FhirError({
                reason: "Status",
                method: "GET",
                url: redactUrl(initial),
                status,
                detail: `the server redirected it to ${target.value.origin}, an origin outside those Ferry fetches from here; not followed (allow that host if it should be: --attachment-origin)`,
              }),
              retryAfter: undefined,
              permanent: true,
            })
          url = target.value.href
          continue
        }
        if (status >= 200 && status < 300) {
          return { status, headers: responseHeaders, url, body: response.body } satisfies RawResponse
        }
        if (isRedirect(status) && location !== undefined) {
          yield* RawHttp.dump(response.body) // free the connection
          return yield* tooManyRedirects("GET", initial, status)
        }
        const text = yield* RawHttp.readTextPrefix(response.body, errorBodyLimit)
        const described = describeBody(
          withoutCredential(text, toSend.authorization),
          responseHeaders["content-type"],
        )
        return yield* new Attempt({
          error: new FhirError({
            reason: "Status",
            method: "GET",
            url: redactUrl(url),
            status,
            ...described,
          }),
          retryAfter: responseHeaders["retry-after"],
          sentAuthorization: toSend.authorization !== undefined,
          ...(auth && detour !== undefined && originOf(url) === baseOrigin ? { detouredVia: detour } : {}),
        })
      }
    }).pipe(
      Effect.tapError((e) =>
        e instanceof Attempt
          ? Effect.logDebug("FHIR request failed").pipe(
              Effect.annotateLogs({ method: "GET", status: e.error.status ?? e.error.reason }),
            )
          : Effect.void,
      ),
    )

  const get: FhirClient["get"] = (url, getOptions) => {
    const headers: Record<string, string> = { accept: "*/*", "user-agent": userAgent }
    for (const [k, v] of Object.entries(getOptions?.headers ?? {})) {
      const name = k.toLowerCase()
      // credentials come from `authorize` only, so that they never reach another origin
      if (name !== "authorization") headers[name] = v
    }
    return withPolicy(
      attemptRaw(
        resolveUrl(baseUrl, url),
        headers,
        getOptions?.auth ?? true,
        getOptions?.holdBack === true,
        getOptions?.followTo,
      ),
      getOptions,
    )
  }

  const decode =
    <A, I>(schema: Schema.Schema<A, I>, what: string) =>
    (response: HttpClientResponse.HttpClientResponse): Effect.Effect<A, FhirError> =>
      response.text.pipe(
        // (as `response.json`, but each resource read keeps how its numbers were written: `1.0` is not `1`)
        Effect.flatMap((text) =>
          Effect.try({
            try: () => parseKeepingNumbers(text),
            catch: (cause) =>
              new HttpClientError.ResponseError({
                request: response.request,
                response,
                reason: "Decode",
                cause,
              }),
          }),
        ),
        Effect.flatMap((raw) =>
          Effect.tap(Schema.decodeUnknown(schema)(raw), (decoded) => carryResources(raw, decoded)),
        ),
        Effect.mapError((e: HttpClientError.ResponseError | ParseResult.ParseError) => {
          if (e._tag === "ParseError") {
            return new FhirError({
              reason: "Decode",
              method: response.request.method,
              url: redactUrl(urlOf(response.request)),
              status: response.status,
              detail: describeParseError(what, e),
            })
          }
          // the body broke off while it was read (a reset, a closed connection): no answer to judge the URL by
          if (!(e.cause instanceof SyntaxError))
            return new FhirError({
              reason: "Transport",
              method: response.request.method,
              url: redactUrl(urlOf(response.request)),
              detail: bodyFailure("the answer", e.cause),
            })
          const html = /html/i.test(response.headers["content-type"] ?? "")
          return new FhirError({
            reason: "Decode",
            method: response.request.method,
            url: redactUrl(urlOf(response.request)),
            status: response.status,
            detail: html ? "the body is an HTML page, not JSON" : "the body is not JSON",
            hint: `${redactUrl(baseUrl)} may not be a FHIR server's base URL${html ? " (a web site or a login page answered)" : ""}; check the URL`,
          })
        }),
      )

  /** A GET and the reading of its body, asked again (twice at most) when the body broke off or stalled on the way. */
  const getDecoded = <A>(send: Effect.Effect<A, FhirError | AuthError>) =>
    send.pipe(
      Effect.retry({
        times: 2,
        while: (e) =>
          e instanceof FhirError &&
          e.reason === "Transport" &&
          (e.detail === BROKE_OFF || e.detail === ANSWER_STALLED),
      }),
    )

  const getJson = <A, I>(url: string, schema: Schema.Schema<A, I>, what: string, params?: SearchParams) =>
    getDecoded(
      request(HttpClientRequest.get(url, params === undefined ? {} : { urlParams: params })).pipe(
        Effect.flatMap(decode(schema, what)),
      ),
    )

  const bodyOf = (body: unknown, contentType = fhirJson) =>
    HttpClientRequest.bodyUint8Array(new TextEncoder().encode(JSON.stringify(body)), contentType)

  const readOptional = (
    response: HttpClientResponse.HttpClientResponse,
  ): Effect.Effect<WriteResult, FhirError> =>
    Effect.gen(function* () {
      const text = yield* response.text.pipe(
        Effect.mapError(
          (e) =>
            new FhirError({
              reason: "Transport",
              method: response.request.method,
              url: redactUrl(urlOf(response.request)),
              detail: bodyFailure("the answer", e.cause),
            }),
        ),
      )
      let resource = Option.none<Resource>()
      if (text.trim() !== "") {
        resource = Option.some(
          yield* Schema.decodeUnknown(Schema.parseJson(FhirResource))(text).pipe(
            Effect.mapError(
              (e) =>
                new FhirError({
                  reason: "Decode",
                  method: response.request.method,
                  url: redactUrl(urlOf(response.request)),
                  status: response.status,
                  detail: describeParseError("a FHIR resource", e),
                }),
            ),
          ),
        )
      }
      const h = response.headers
      return {
        status: response.status,
        location: Option.fromNullable(h.location ?? h["content-location"]),
        etag: Option.fromNullable(h.etag),
        lastModified: Option.fromNullable(h["last-modified"]),
        resource,
      }
    })

  const postBundle = (bundle: Bundle.Bundle, type: "transaction" | "batch") =>
    request(HttpClientRequest.post("").pipe(bodyOf({ ...bundle, type }))).pipe(
      Effect.flatMap(decode(Bundle.Bundle, `a ${type}-response Bundle`)),
    )

  const withHeaders = (
    req: HttpClientRequest.HttpClientRequest,
    headers: Record<string, string | undefined>,
  ) =>
    Object.entries(headers).reduce(
      (r, [k, v]) => (v === undefined ? r : HttpClientRequest.setHeader(r, k, v)),
      req,
    )

  const client: FhirClient = {
    baseUrl,
    request,
    get,
    read: (type, id) =>
      getJson(`${type}/${encodeURIComponent(id)}`, FhirResource, `a ${type} resource`).pipe(
        Effect.filterOrFail(
          (r): r is FhirResource => r.resourceType === type,
          (r) =>
            new FhirError({
              reason: "Decode",
              method: "GET",
              url: redactUrl(resolveUrl(baseUrl, `${type}/${encodeURIComponent(id)}`)),
              detail: `expected a ${type} resource, got a ${r.resourceType}`,
            }),
        ),
      ),
    search: (type, params) => getJson(type, Bundle.Bundle, "a searchset Bundle", params),
    searchAll: (type, params) =>
      Stream.paginateChunkEffect(
        HttpClientRequest.get(type, params === undefined ? {} : { urlParams: params }),
        (req) =>
          getDecoded(request(req).pipe(Effect.flatMap(decode(Bundle.Bundle, "a searchset Bundle")))).pipe(
            Effect.flatMap((bundle) => {
              const next = Bundle.nextLink(bundle)
              const page = Chunk.fromIterable(Bundle.resources(bundle))
              if (Option.isNone(next)) return Effect.succeed([page, Option.none()] as const)
              const current = urlOf(prepare(req))
              const nextUrl = resolveUrl(baseUrl, next.value)
              // A server answering with a link to the page just read would loop forever.
              if (nextUrl === current)
                return Effect.fail(
                  new FhirError({
                    reason: "Decode",
                    method: "GET",
                    url: redactUrl(current),
                    detail: "the next link points back to the same page",
                    hint: "the server's paging is broken; report it to the server's operators",
                  }),
                )
              // A link to another server would page through that server's data (without the credentials,
              // which go to the base's origin only): typically a server behind a proxy that advertises
              // its internal address.
              const nextOrigin = Option.liftThrowable(() => new URL(nextUrl).origin)()
              // (not echoed: a link may carry a token)
              if (Option.isNone(nextOrigin))
                return Effect.fail(
                  new FhirError({
                    reason: "Decode",
                    method: "GET",
                    url: redactUrl(current),
                    detail: "its next link is not a URL",
                    hint: "the server's paging is broken; report it to the server's operators",
                  }),
                )
              const own = originOf(baseUrl)
              if (nextOrigin.value !== own)
                return Effect.fail(
                  new FhirError({
                    reason: "Decode",
                    method: "GET",
                    url: redactUrl(current),
                    detail: `its next link points to another server (${nextOrigin.value}), not to ${own}`,
                    hint: "a server behind a proxy often does this when its own base URL setting names its internal address (HAPI: server_address); set it to the address Ferry uses, or give Ferry the address the server advertises",
                  }),
                )
              return Effect.succeed([page, Option.some(HttpClientRequest.get(next.value))] as const)
            }),
          ),
      ),
    capabilities: () =>
      getJson("metadata", CapabilityStatement, "a CapabilityStatement").pipe(
        // A web server's own 404 page says nothing useful: the base URL is the likely mistake.
        Effect.mapError((e) =>
          e instanceof FhirError && e.reason === "Status" && e.status === 404
            ? new FhirError({
                reason: "Status",
                method: e.method,
                url: e.url,
                status: 404,
                detail: `no CapabilityStatement there; is ${redactUrl(baseUrl).replace(/\/+$/, "")} the server's FHIR base URL (often ending in /fhir or /r4)? check it`,
              })
            : e,
        ),
      ),
    transaction: (bundle) => postBundle(bundle, "transaction"),
    batch: (bundle) => postBundle(bundle, "batch"),
    create: (resource, o) =>
      request(
        withHeaders(HttpClientRequest.post(resource.resourceType).pipe(bodyOf(resource)), {
          "if-none-exist": o?.ifNoneExist,
          prefer: o?.prefer,
        }),
      ).pipe(Effect.flatMap(readOptional)),
    update: (resource, o) =>
      request(
        withHeaders(
          HttpClientRequest.put(`${resource.resourceType}/${encodeURIComponent(resource.id)}`).pipe(
            bodyOf(resource),
          ),
          { "if-match": o?.ifMatch, prefer: o?.prefer },
        ),
      ).pipe(Effect.flatMap(readOptional)),
    delete: (type, id) =>
      request(HttpClientRequest.del(`${type}/${encodeURIComponent(id)}`)).pipe(
        Effect.flatMap((r) => readTextPrefix(r, errorBodyLimit)),
        Effect.asVoid,
      ),
    operation: (path, o) => {
      let req = HttpClientRequest.make(o.method)(
        path,
        o.urlParams === undefined ? {} : { urlParams: o.urlParams },
      )
      if (o.body !== undefined) req = bodyOf(o.body, o.contentType)(req)
      return request(withHeaders(req, { ...o.headers }))
    },
    stream: (url, o) =>
      Stream.unwrap(
        request(withHeaders(HttpClientRequest.get(url), { accept: "*/*", ...o?.headers }), o).pipe(
          Effect.map((response) =>
            response.stream.pipe(
              Stream.mapError(
                (e) =>
                  new FhirError({
                    reason: "Transport",
                    method: "GET",
                    url: redactUrl(urlOf(response.request)),
                    detail: bodyFailure("the answer", e.cause),
                    cause: e,
                  }),
              ),
            ),
          ),
        ),
      ),
  }
  return client
})

/**
 * fetch would follow redirects itself (carrying headers along); Ferry follows them in `attempt` so that it
 * decides per hop whether Authorization may go. Other HttpClient implementations ignore this setting.
 */
const manualRedirects = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.flatMap(Effect.serviceOption(FetchHttpClient.RequestInit), (init) =>
    Effect.provideService(effect, FetchHttpClient.RequestInit, {
      ...Option.getOrElse(init, () => ({})),
      redirect: "manual",
    }),
  )

const stripAuthorization = (
  request: HttpClientRequest.HttpClientRequest,
): HttpClientRequest.HttpClientRequest => {
  if (request.headers.authorization === undefined) return request
  // setHeaders merges, so the request is rebuilt without the header.
  const rebuilt = HttpClientRequest.get(request.url, {
    headers: Headers.remove(request.headers, "authorization"),
    urlParams: request.urlParams,
  }).pipe(HttpClientRequest.setMethod(request.method), HttpClientRequest.setBody(request.body))
  return Option.isSome(request.hash) ? HttpClientRequest.setHash(rebuilt, request.hash.value) : rebuilt
}

/**
 * A type's count by `_summary=count`; none when the server gives no total or refuses the parameter (400, 422).
 * Other failures are the caller's.
 */
export const summaryCount = (
  client: FhirClient,
  type: string,
): Effect.Effect<Option.Option<number>, FhirError | AuthError> =>
  client.search(type, { _summary: "count" }).pipe(
    Effect.map((b) => Option.fromNullable(b.total)),
    Effect.catchIf(
      (e) => e._tag === "FhirError" && e.reason === "Status" && (e.status === 400 || e.status === 422),
      () => Effect.succeed(Option.none<number>()),
    ),
  )

/** What a search meant to find one resource found: its id, none, several, or that the server would not run it. */
export type OneMatch =
  | { readonly _tag: "One"; readonly id: string }
  | { readonly _tag: "None" }
  | { readonly _tag: "Several" }
  | { readonly _tag: "NotRun"; readonly error: FhirError }

/** Statuses of a search a server does not run: it cannot (400, 404, 405, 422, 501), or the credentials may not (403). */
const NOT_RUN: ReadonlySet<number> = new Set([400, 403, 404, 405, 422, 501])

/**
 * The one resource of `type` a search (`params`, such as a conditional reference's `identifier=system|value`)
 * finds, as a conditional reference designates it: two results are asked for, and only the matches of `type`
 * count (not `_include`d resources nor OperationOutcomes). A search the server does not run is `NotRun` with its
 * error, for the caller to treat as a miss or a failure; other failures are the caller's.
 */
export const searchOne = (
  client: FhirClient,
  type: string,
  params: ReadonlyArray<readonly [string, string]>,
): Effect.Effect<OneMatch, FhirError | AuthError> =>
  client.search(type, [...params, ["_count", "2"]]).pipe(
    Effect.map((bundle): OneMatch => {
      const ids = (bundle.entry ?? []).flatMap((e) =>
        e.search?.mode !== "include" &&
        e.search?.mode !== "outcome" &&
        e.resource?.resourceType === type &&
        typeof e.resource.id === "string"
          ? [e.resource.id]
          : [],
      )
      return ids.length === 1
        ? { _tag: "One", id: ids[0]! }
        : ids.length === 0
          ? { _tag: "None" }
          : { _tag: "Several" }
    }),
    Effect.catchIf(
      (e): e is FhirError => e._tag === "FhirError" && e.reason === "Status" && NOT_RUN.has(e.status ?? 0),
      (error) => Effect.succeed<OneMatch>({ _tag: "NotRun", error }),
    ),
  )

/** The server Ferry reads from. */
export class SourceFhir extends Context.Tag("@ferry/core/SourceFhir")<SourceFhir, FhirClient>() {}

/** The server Ferry writes to. */
export class TargetFhir extends Context.Tag("@ferry/core/TargetFhir")<TargetFhir, FhirClient>() {}

/** A layer for one of the two tags: `FhirClient.layer(SourceFhir, { baseUrl, authorize })`. */
export const layer = <I>(
  tag: Context.Tag<I, FhirClient>,
  options: FhirClientOptions,
): Layer.Layer<I, never, HttpClient.HttpClient> => Layer.effect(tag, make(options))
