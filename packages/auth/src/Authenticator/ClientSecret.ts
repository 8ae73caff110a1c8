/**
 * OAuth 2.0 client_credentials with a shared secret: client_secret_basic (HTTP Basic, RFC 6749 §2.3.1)
 * or client_secret_post (form fields). Not SMART Backend Services, but what many platforms use
 * (e.g. Entra ID in front of Azure FHIR with scope `{fhirUrl}/.default`).
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import type { AuthError } from "@ferry/core/Errors"
import { type Duration, Effect, Option, type Redacted, Ref } from "effect"
import type { Authenticator } from "../Authenticator.js"
import * as Discovery from "../Discovery.js"
import * as TokenEndpoint from "../internal/tokenEndpoint.js"
import * as TokenCache from "../TokenCache.js"

export type SecretMethod = "basic" | "post"

export interface ClientSecretOptions {
  readonly baseUrl: string
  readonly clientId: string
  readonly clientSecret: Redacted.Redacted<string>
  /** basic (default): Authorization header; post: client_id and client_secret form fields. */
  readonly method?: SecretMethod | undefined
  /** Sent as given (opaque); omitted when absent. */
  readonly scope?: string | undefined
  /** Skip discovery and use this token endpoint. */
  readonly tokenUrl?: string | undefined
  readonly skew?: Duration.DurationInput | undefined
  /** Timeout of discovery and token requests, and retries of transient token failures (30 s; 5 retries). */
  readonly requestPolicy?: TokenEndpoint.RequestPolicy | undefined
}

export const make = Effect.fn("ClientSecret.make")(function* (options: ClientSecretOptions) {
  const http = yield* HttpClient.HttpClient
  const method = options.method ?? "basic"
  const scope = options.scope?.trim() || undefined
  const endpoint = yield* Ref.make(Option.none<string>())

  const tokenUrl = Effect.gen(function* () {
    const known = yield* Ref.get(endpoint)
    if (Option.isSome(known)) return known.value
    const found = yield* Discovery.tokenEndpoint(
      options.baseUrl,
      options.tokenUrl,
      options.requestPolicy?.timeout,
    ).pipe(Effect.provideService(HttpClient.HttpClient, http))
    for (const warning of Discovery.mismatches(found, { authMethod: `client_secret_${method}` }))
      yield* Effect.logWarning(warning)
    yield* Ref.set(endpoint, Option.some(found.tokenUrl))
    return found.tokenUrl
  })

  const fetch: Effect.Effect<TokenCache.AccessToken, AuthError> = Effect.gen(function* () {
    const url = yield* tokenUrl
    yield* Effect.logDebug("requesting an access token").pipe(
      Effect.annotateLogs({ tokenUrl: url, clientId: options.clientId, method, scope: scope ?? "(none)" }),
    )
    const form: Record<string, TokenEndpoint.FormValue> = { grant_type: "client_credentials" }
    if (scope !== undefined) form.scope = scope
    if (method === "post") {
      form.client_id = options.clientId
      form.client_secret = options.clientSecret
    }
    const once = TokenEndpoint.request(
      http,
      {
        tokenUrl: url,
        form,
        basic: method === "basic" ? { clientId: options.clientId, secret: options.clientSecret } : undefined,
      },
      options.requestPolicy,
    )
    return yield* TokenEndpoint.retrying(once, options.requestPolicy).pipe(
      Effect.catchTag("InvalidScope", (e) => Effect.fail(e.error)),
    )
  })

  const cache = yield* TokenCache.make(fetch, { skew: options.skew })
  return {
    authorize: (req) => Effect.map(cache.get, (token) => HttpClientRequest.bearerToken(req, token)),
    invalidate: cache.invalidate,
    describe: `OAuth client credentials (client_secret_${method}, client ${options.clientId})`,
    refusedHint: `check client ${options.clientId}, its secret, and the scopes it is granted at the authorization server`,
  } satisfies Authenticator
})
