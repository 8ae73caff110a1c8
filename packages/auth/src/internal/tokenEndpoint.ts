/**
 * One OAuth 2.0 token request (client_credentials) and its answer, shared by the SMART and
 * client-secret authenticators. Secrets are `Redacted` up to the line that builds the request, and
 * scrubbed from anything the server echoes back before it goes into an error message.
 *
 * Each attempt has a timeout, and `retrying` tries transient failures again (5xx, 408, 429 with its
 * Retry-After, no answer at all): a token is fetched in the middle of multi-hour exports, where one
 * identity-provider hiccup must not end the run. Refusals (400, 401: invalid_client, …) fail at once, and so
 * do a TLS certificate that is not trusted and a port that does not speak TLS or HTTP.
 *
 * No HTTP answer at all (nothing there, TLS, a timeout) is `Unreachable`, like a FHIR server that cannot be
 * reached (exit 4); an answer that refuses is `TokenRequest` (exit 3).
 */
import { type HttpClient, HttpClientRequest } from "@effect/platform"
import { proxyTrouble } from "@ferry/core/HttpDispatcher"
import { AuthError } from "@ferry/core/Errors"
import { retryAfter } from "@ferry/core/Retry"
import { Clock, Data, Duration, Effect, Option, ParseResult, Redacted, Schedule, Schema } from "effect"
import type { AccessToken } from "../TokenCache.js"
import {
  describeBody,
  isPermanentTransport,
  networkCode,
  redactUrl,
  transportProblem,
  transportSentence,
} from "@ferry/core/Http"
import { printable, summary } from "@ferry/core/OperationOutcome"

/** RFC 6749 §5.1 (+ SMART): `expires_in` as a number, or a numeric string (some Azure endpoints). */
export const TokenResponse = Schema.Struct({
  access_token: Schema.Redacted(Schema.NonEmptyString),
  token_type: Schema.String,
  expires_in: Schema.optional(Schema.Union(Schema.Number, Schema.NumberFromString)),
  scope: Schema.optional(Schema.String),
})

/** RFC 6749 §5.2 error body. */
export const OAuthError = Schema.Struct({
  error: Schema.String,
  error_description: Schema.optional(Schema.String),
  error_uri: Schema.optional(Schema.String),
})

/** The server answered `invalid_scope`: the caller may retry with other scopes. */
export class InvalidScope extends Data.TaggedError("InvalidScope")<{ readonly error: AuthError }> {}

/**
 * A failure that may pass (no answer, a timeout, 5xx, 408, 429): `retrying` tries again, and fails with
 * `error` once the retries are used up.
 */
export class Transient extends Data.TaggedError("Transient")<{
  readonly error: AuthError
  /** The answer's `Retry-After`, when it had one. */
  readonly retryAfter: string | undefined
}> {}

/** How long and how often a token endpoint (and discovery) is given. */
export interface RequestPolicy {
  /** Per attempt, until the whole answer is read (default 30 s). */
  readonly timeout?: Duration.DurationInput | undefined
  /** Retries of a transient failure after the first attempt (default 5). */
  readonly retries?: number | undefined
  /** First backoff delay, doubled per retry with jitter and capped at 30 s (default 1 s). */
  readonly backoff?: Duration.DurationInput | undefined
}

export const defaultTimeout = Duration.seconds(30)
const defaultRetries = 5
const defaultBackoff = Duration.seconds(1)
const backoffCap = Duration.seconds(30)
/** A Retry-After beyond this is not waited for in full: the next attempt goes out then. */
const maxRetryAfter = Duration.seconds(120)

const transientStatus = (status: number) => status >= 500 || status === 408 || status === 429

export type FormValue = string | Redacted.Redacted<string>

export interface TokenRequest {
  readonly tokenUrl: string
  readonly form: Readonly<Record<string, FormValue>>
  /** client_secret_basic: `Authorization: Basic base64(urlenc(id):urlenc(secret))` (RFC 6749 §2.3.1). */
  readonly basic?: { readonly clientId: string; readonly secret: Redacted.Redacted<string> } | undefined
}

/** application/x-www-form-urlencoded encoding of one value, as RFC 6749 §2.3.1 asks for Basic credentials. */
export const formEncode = (value: string): string => new URLSearchParams([["", value]]).toString().slice(1)

/** `Authorization: Basic …` credentials for client_secret_basic. */
const basicCredentials = (basic: NonNullable<TokenRequest["basic"]>): string =>
  Buffer.from(`${formEncode(basic.clientId)}:${formEncode(Redacted.value(basic.secret))}`).toString("base64")

/**
 * Removes the secrets from text a server sent back: each as written, as sent in the form body (form- and
 * percent-encoded: `~` → `%7E`, `+` → `%2B`), as a JSON string would quote it (`"` → `\"`, `\` → `\\`),
 * and the Basic credentials as sent (base64).
 */
export const scrubber = (request: TokenRequest) => {
  const raw = [
    ...Object.values(request.form).filter((v): v is Redacted.Redacted<string> => Redacted.isRedacted(v)),
    ...(request.basic ? [request.basic.secret] : []),
  ].map((r) => Redacted.value(r))
  const secrets = [
    ...new Set([
      ...raw.flatMap((s) => [s, formEncode(s), encodeURIComponent(s), JSON.stringify(s).slice(1, -1)]),
      ...(request.basic ? [basicCredentials(request.basic)] : []),
    ]),
  ]
    .filter((s) => s.length >= 4)
    // longest first: an encoded form that contains the raw secret goes whole
    .sort((a, b) => b.length - a.length)
  return (text: string): string => secrets.reduce((acc, s) => acc.split(s).join("[redacted]"), text)
}

const fail = (
  request: TokenRequest,
  detail: string,
  reason: "TokenRequest" | "Unreachable" = "TokenRequest",
) => new AuthError({ reason, url: redactUrl(request.tokenUrl), detail })

/** Where the token URL is set, for the sentences that ask to check it. */
const checkTokenUrl = "check the token URL (auth.tokenUrl / --token-url)"

/** For an answer that is no token: the URL to check, given or discovered. */
const notAToken = `${checkTokenUrl}, or the token_endpoint the server's SMART configuration gives, is its OAuth token endpoint`

/** What to do about a refusal that is not a known OAuth error, by status. */
const statusHint = (status: number): string =>
  status === 404 || status === 405 || status === 410
    ? `; is this the token endpoint? ${checkTokenUrl}`
    : status === 400 || status === 401 || status === 403
      ? "; check the client's registration at the authorization server (client id, key or secret)"
      : `; ${checkTokenUrl} and the client's registration at the authorization server`

/** What to do about an OAuth error (RFC 6749 §5.2) the token endpoint answered. */
const oauthHint = (error: string): string => {
  switch (error) {
    case "invalid_client":
    case "invalid_grant":
      return "; the client assertion or credentials were rejected: check the client id, the key/secret registered for it, and the server clock"
    case "invalid_scope":
      return "; request scopes this client is allowed (--scope; --source-scope / --target-scope for migrate and plan)"
    case "unauthorized_client":
      return "; the client may not use the client_credentials grant: check its registration at the authorization server"
    case "unsupported_grant_type":
      return `; this endpoint does not offer the client_credentials grant: ${checkTokenUrl} and the client's registration`
    default:
      return `; ${checkTokenUrl} and the client's registration at the authorization server`
  }
}

/** Names of the fields that failed to decode (never their values: they may hold the token). */
const failedFields = (error: ParseResult.ParseError): string =>
  [
    ...new Set(ParseResult.ArrayFormatter.formatErrorSync(error).map((i) => i.path.join(".") || "(body)")),
  ].join(", ")

/**
 * One attempt. Fails with `Transient` for what may pass, `InvalidScope` for `invalid_scope`, else `AuthError`.
 */
export const request = (
  http: HttpClient.HttpClient,
  request: TokenRequest,
  policy: RequestPolicy = {},
): Effect.Effect<AccessToken, AuthError | InvalidScope | Transient> => {
  const scrub = scrubber(request)
  const timeout = Duration.decode(policy.timeout ?? defaultTimeout)
  const params = Object.entries(request.form).map(
    ([k, v]) => [k, Redacted.isRedacted(v) ? Redacted.value(v) : v] as const,
  )
  let req = HttpClientRequest.post(request.tokenUrl).pipe(
    HttpClientRequest.acceptJson,
    HttpClientRequest.bodyUrlParams(params),
  )
  if (request.basic) {
    req = HttpClientRequest.setHeader(req, "authorization", `Basic ${basicCredentials(request.basic)}`)
  }
  const transient = (
    detail: string,
    retryAfterHeader?: string,
    reason: "TokenRequest" | "Unreachable" = "TokenRequest",
  ) => new Transient({ error: fail(request, detail, reason), retryAfter: retryAfterHeader })
  return http.execute(req).pipe(
    // The request (and its secret-bearing body) is not kept as a cause.
    // the platform's message names the request URL as given (a credential in its query): the code only
    Effect.mapError((e): AuthError | Transient => {
      const code =
        e._tag === "RequestError"
          ? (networkCode(e.cause) ?? `${e.reason} error`)
          : `HTTP ${e.response.status}`
      const proxy =
        e._tag === "RequestError" && e.reason === "Transport"
          ? proxyTrouble(process.env, request.tokenUrl, e.cause, networkCode(e.cause))
          : undefined
      if (proxy !== undefined)
        return proxy.permanent
          ? fail(request, proxy.sentence, "Unreachable")
          : transient(proxy.sentence, undefined, "Unreachable")
      // an untrusted certificate, a port that does not speak TLS or HTTP: another try meets the same
      if (isPermanentTransport(code)) {
        return fail(
          request,
          transportSentence(code),
          transportProblem(code) === "Unsendable" ? "TokenRequest" : "Unreachable",
        )
      }
      return transient(
        `could not reach the token endpoint (${code}); ${checkTokenUrl} and that the server is running`,
        undefined,
        "Unreachable",
      )
    }),
    Effect.flatMap((response) =>
      response.text.pipe(
        Effect.mapError((e) => transient(`the token endpoint's answer could not be read (${e.message})`)),
        Effect.map((body) => ({
          status: response.status,
          body,
          retryAfter: response.headers["retry-after"],
          contentType: response.headers["content-type"],
        })),
      ),
    ),
    Effect.scoped,
    // An endpoint that takes the connection and never answers would otherwise hold every request waiting
    // for a token; the timeout interrupts (and so aborts) the attempt.
    Effect.timeoutFail({
      duration: timeout,
      onTimeout: () =>
        transient(
          `the token endpoint did not answer within ${Duration.format(timeout)}; check that it is up`,
          undefined,
          "Unreachable",
        ),
    }),
    Effect.flatMap(
      ({
        status,
        body,
        retryAfter,
        contentType,
      }): Effect.Effect<AccessToken, AuthError | InvalidScope | Transient> => {
        let json: unknown
        try {
          json = JSON.parse(body)
        } catch {
          json = undefined
        }
        if (status !== 200) {
          // Said only of answers that may pass: a refusal keeps its own words and hint.
          const busy = "; the identity provider is unavailable or overloaded: try again later"
          // (answers that may pass and never did are the server's failure, exit 4, not a refusal)
          const failure = (detail: string) =>
            transientStatus(status)
              ? transient(`${detail}${busy}`, retryAfter, "Unreachable")
              : fail(request, `${detail}${statusHint(status)}`)
          return Option.match(Schema.decodeUnknownOption(OAuthError)(json), {
            onNone: () => {
              // an OperationOutcome (a FHIR server's own 404) is summed up, an HTML page reduced to its text;
              // other JSON is shown (an identity provider's own error format), shortened, each of its strings
              // scrubbed as decoded (a server may escape a secret's characters any way JSON allows: `\/`,
              // `\u002B`). Secrets go first, before anything is cut.
              const scrubbed =
                json !== undefined
                  ? JSON.stringify(json, (_key, value: unknown) =>
                      typeof value === "string" ? scrub(value) : value,
                    )
                  : scrub(body)
              const described = describeBody(scrubbed, contentType)
              const said =
                described.outcome !== undefined
                  ? summary(described.outcome)
                  : json !== undefined
                    ? scrubbed
                    : (described.detail ?? "")
              const snippet = said.slice(0, 200)
              return Effect.fail(
                failure(`the token endpoint answered HTTP ${status}${snippet ? `: ${snippet}` : ""}`),
              )
            },
            onSome: (oauth) => {
              const what = `${printable(scrub(oauth.error))}${oauth.error_description ? ` (${printable(scrub(oauth.error_description))})` : ""}`
              const hint = transientStatus(status) ? "" : oauthHint(oauth.error)
              const detail = `the token endpoint refused the request: HTTP ${status} ${what}${hint}`
              if (transientStatus(status))
                return Effect.fail(transient(`${detail}${busy}`, retryAfter, "Unreachable"))
              const error = fail(request, detail)
              return Effect.fail(oauth.error === "invalid_scope" ? new InvalidScope({ error }) : error)
            },
          })
        }
        return Schema.decodeUnknown(TokenResponse)(json).pipe(
          Effect.mapError((e) =>
            // (no credential refused: what answers there is no token endpoint, a server problem: exit 4)
            fail(
              request,
              json === undefined
                ? `the token endpoint answered 200 but not with JSON (a login page or another service at that URL); ${notAToken}`
                : `the token endpoint's answer is not an OAuth token response (bad or missing: ${failedFields(e)}); ${notAToken}`,
              "Unreachable",
            ),
          ),
          Effect.flatMap((token) =>
            token.token_type.toLowerCase() === "bearer"
              ? Effect.succeed<AccessToken>({
                  token: token.access_token,
                  expiresIn: Option.fromNullable(token.expires_in).pipe(
                    Option.filter((s) => Number.isFinite(s) && s > 0),
                    Option.map(Duration.seconds),
                  ),
                  scope: Option.fromNullable(token.scope),
                })
              : Effect.fail(
                  fail(
                    request,
                    `the token endpoint issued a "${token.token_type}" token; Ferry can only send bearer tokens`,
                  ),
                ),
          ),
        )
      },
    ),
  )
}

/**
 * Runs `once` (one whole token request: a SMART client signs a new assertion each time) again while it
 * fails with `Transient`: exponential backoff with jitter, or the server's Retry-After (capped at 2 minutes),
 * at most `policy.retries` times; then its AuthError, saying how often it was tried.
 */
export const retrying = <A, E>(
  once: Effect.Effect<A, E | Transient>,
  policy: RequestPolicy = {},
): Effect.Effect<A, Exclude<E, Transient> | AuthError> => {
  const retries = Math.max(0, policy.retries ?? defaultRetries)
  const schedule = Schedule.exponential(policy.backoff ?? defaultBackoff, 2).pipe(
    Schedule.jittered,
    Schedule.modifyDelay((_, d) => Duration.min(d, backoffCap)),
    Schedule.intersect(Schedule.recurs(retries)),
    Schedule.intersect(Schedule.identity<unknown>()),
    Schedule.modifyDelayEffect(([, e], delay) =>
      e instanceof Transient
        ? Effect.map(Clock.currentTimeMillis, (now) =>
            Option.getOrElse(retryAfter(e.retryAfter, now, maxRetryAfter), () => delay),
          )
        : Effect.succeed(delay),
    ),
    Schedule.whileInput((e: unknown) => e instanceof Transient),
  )
  // (the count is per run: the Effect returned may be run again, for the next token)
  return Effect.suspend(() => {
    let failures = 0
    return once.pipe(
      // each retry said, as the FHIR client says its own: a slow or failing token endpoint is not silence
      Effect.tapError((e) => {
        if (!(e instanceof Transient)) return Effect.void
        failures++
        return failures > retries
          ? Effect.void
          : Effect.logWarning(
              `${e.error.url ?? "the token endpoint"}: ${e.error.detail}; trying again (retry ${failures} of at most ${retries})`,
            )
      }),
      Effect.retry(schedule),
      Effect.catchIf(
        (e): e is Transient => e instanceof Transient,
        (e) =>
          Effect.fail(
            new AuthError({
              reason: e.error.reason,
              url: e.error.url,
              detail: `${e.error.detail} (tried ${retries + 1} ${retries === 0 ? "time" : "times"})`,
            }),
          ),
      ),
    )
  })
}
