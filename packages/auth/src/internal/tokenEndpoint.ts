/**
 * One OAuth 2.0 token request (client_credentials) and its answer, shared by the SMART and
 * client-secret authenticators. Secrets are `Redacted` up to the line that builds the request, and
 * scrubbed from anything the server echoes back before it goes into an error message.
 */
import { type HttpClient, HttpClientRequest } from "@effect/platform"
import { AuthError } from "@ferry/core/Errors"
import { Data, Duration, Effect, Option, ParseResult, Redacted, Schema } from "effect"
import type { AccessToken } from "../TokenCache.js"

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
 * percent-encoded: `~` → `%7E`, `+` → `%2B`), and the Basic credentials as sent (base64).
 */
export const scrubber = (request: TokenRequest) => {
  const raw = [
    ...Object.values(request.form).filter((v): v is Redacted.Redacted<string> => Redacted.isRedacted(v)),
    ...(request.basic ? [request.basic.secret] : []),
  ].map((r) => Redacted.value(r))
  const secrets = [
    ...new Set([
      ...raw.flatMap((s) => [s, formEncode(s), encodeURIComponent(s)]),
      ...(request.basic ? [basicCredentials(request.basic)] : []),
    ]),
  ]
    .filter((s) => s.length >= 4)
    // longest first: an encoded form that contains the raw secret goes whole
    .sort((a, b) => b.length - a.length)
  return (text: string): string => secrets.reduce((acc, s) => acc.split(s).join("[redacted]"), text)
}

const fail = (request: TokenRequest, detail: string) =>
  new AuthError({ reason: "TokenRequest", url: request.tokenUrl, detail })

/** Names of the fields that failed to decode (never their values: they may hold the token). */
const failedFields = (error: ParseResult.ParseError): string =>
  [
    ...new Set(ParseResult.ArrayFormatter.formatErrorSync(error).map((i) => i.path.join(".") || "(body)")),
  ].join(", ")

export const request = (
  http: HttpClient.HttpClient,
  request: TokenRequest,
): Effect.Effect<AccessToken, AuthError | InvalidScope> => {
  const scrub = scrubber(request)
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
  return http.execute(req).pipe(
    // The request (and its secret-bearing body) is not kept as a cause.
    Effect.mapError((e) =>
      fail(
        request,
        `could not reach the token endpoint (${e.message}); check the URL and that the server is up`,
      ),
    ),
    Effect.flatMap((response) =>
      response.text.pipe(
        Effect.mapError((e) => fail(request, `the token endpoint's answer could not be read (${e.message})`)),
        Effect.map((body) => ({ status: response.status, body })),
      ),
    ),
    Effect.scoped,
    Effect.flatMap(({ status, body }): Effect.Effect<AccessToken, AuthError | InvalidScope> => {
      let json: unknown
      try {
        json = JSON.parse(body)
      } catch {
        json = undefined
      }
      if (status !== 200) {
        return Option.match(Schema.decodeUnknownOption(OAuthError)(json), {
          onNone: () => {
            const snippet = scrub(body.replace(/\s+/g, " ").trim()).slice(0, 200)
            return Effect.fail(
              fail(request, `the token endpoint answered HTTP ${status}${snippet ? `: ${snippet}` : ""}`),
            )
          },
          onSome: (oauth) => {
            const what = `${oauth.error}${oauth.error_description ? ` (${scrub(oauth.error_description)})` : ""}`
            const hint =
              oauth.error === "invalid_client" || oauth.error === "invalid_grant"
                ? "; the client assertion or credentials were rejected: check the client id, the key/secret registered for it, and the server clock"
                : oauth.error === "invalid_scope"
                  ? "; request scopes this client is allowed (auth.scope)"
                  : ""
            const error = fail(
              request,
              `the token endpoint refused the request: HTTP ${status} ${what}${hint}`,
            )
            return Effect.fail(oauth.error === "invalid_scope" ? new InvalidScope({ error }) : error)
          },
        })
      }
      return Schema.decodeUnknown(TokenResponse)(json).pipe(
        Effect.mapError((e) =>
          fail(
            request,
            json === undefined
              ? "the token endpoint answered 200 but not with JSON"
              : `the token endpoint's answer is not an OAuth token response (bad or missing: ${failedFields(e)})`,
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
    }),
  )
}
