/**
 * SMART Backend Services: OAuth 2.0 client_credentials with a signed JWT client assertion
 * (`private_key_jwt`, RS384 or ES384). A new assertion (fresh `jti`) is signed for every token request.
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import type { AuthError } from "@ferry/core/Errors"
import { type Duration, Effect, Option, Ref } from "effect"
import * as Assertion from "../Assertion.js"
import type { Authenticator } from "../Authenticator.js"
import * as Discovery from "../Discovery.js"
import * as TokenEndpoint from "../internal/tokenEndpoint.js"
import type { SigningKey } from "../Keys.js"
import * as TokenCache from "../TokenCache.js"

export const CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
export const DEFAULT_SCOPE = "system/*.rs"

export type ScopeVersion = "v1" | "v2"

export interface SmartBackendOptions {
  /** The FHIR base URL (discovery starts here). */
  readonly baseUrl: string
  readonly clientId: string
  readonly key: SigningKey
  /** Space-separated scopes in SMART v2 syntax (default `system/*.rs`); v1 scopes are sent as given. */
  readonly scope?: string | undefined
  /**
   * v2 (default): send `scope`; if the server answers `invalid_scope`, retry once with the v1 equivalent
   * (`.rs` → `.read`, `.cud` → `.write`, `.cruds` → `.*`) and keep using v1.
   * v1: send the v1 equivalent from the start.
   */
  readonly scopeVersion?: ScopeVersion | undefined
  /** Skip discovery and use this token endpoint. */
  readonly tokenUrl?: string | undefined
  /** Client assertion lifetime; default 4 minutes, at most 5. */
  readonly assertionLifetime?: Duration.DurationInput | undefined
  /** Refresh this long before the token expires at most (default 30 s). */
  readonly skew?: Duration.DurationInput | undefined
  /** Timeout of discovery and token requests, and retries of transient token failures (30 s; 5 retries). */
  readonly requestPolicy?: TokenEndpoint.RequestPolicy | undefined
}

const V2 = /^(system|user|patient)\/([A-Za-z]+|\*)\.(c?r?u?d?s?)$/

/** One SMART v2 scope in its v1 spelling; scopes that are not plain v2 (filters, v1, others) are kept. */
export const toV1Scope = (scope: string): string => {
  const m = V2.exec(scope)
  if (m === null || m[3] === "") return scope
  const perms = m[3]!
  const read = /[rs]/.test(perms)
  const write = /[cud]/.test(perms)
  return `${m[1]}/${m[2]}.${read && write ? "*" : read ? "read" : "write"}`
}

/** A space-separated scope string in v1 spelling. */
export const toV1Scopes = (scopes: string): string =>
  scopes.split(/\s+/).filter(Boolean).map(toV1Scope).join(" ")

export const make = Effect.fn("SmartBackend.make")(function* (options: SmartBackendOptions) {
  const http = yield* HttpClient.HttpClient
  const scopeV2 = options.scope?.trim() || DEFAULT_SCOPE
  const scopeV1 = toV1Scopes(scopeV2)
  const version = yield* Ref.make<ScopeVersion>(options.scopeVersion ?? "v2")
  const endpoint = yield* Ref.make(Option.none<Discovery.TokenEndpoint>())

  const tokenEndpoint = Effect.gen(function* () {
    const known = yield* Ref.get(endpoint)
    if (Option.isSome(known)) return known.value
    const found = yield* Discovery.tokenEndpoint(
      options.baseUrl,
      options.tokenUrl,
      options.requestPolicy?.timeout,
    ).pipe(Effect.provideService(HttpClient.HttpClient, http))
    if (Option.isSome(found.signingAlgs) && !found.signingAlgs.value.includes(options.key.alg)) {
      yield* Effect.logWarning(
        `the server lists signing algorithms ${found.signingAlgs.value.join(", ")}, not ${options.key.alg}; the token request may be refused`,
      )
    }
    if (Option.isSome(found.authMethods) && !found.authMethods.value.includes("private_key_jwt")) {
      yield* Effect.logWarning(
        "the server does not list private_key_jwt among its token endpoint auth methods",
      )
    }
    yield* Ref.set(endpoint, Option.some(found))
    return found
  })

  // Each try signs a new assertion: one the server saw (and whose jti it recorded) is never sent again.
  const requestWith = (tokenUrl: string, scope: string) =>
    Effect.gen(function* () {
      const assertion = yield* Assertion.sign(options.key, {
        clientId: options.clientId,
        audience: tokenUrl,
        lifetime: options.assertionLifetime,
      })
      yield* Effect.logDebug("requesting an access token").pipe(
        Effect.annotateLogs({ tokenUrl, clientId: options.clientId, scope, kid: options.key.kid }),
      )
      return yield* TokenEndpoint.request(
        http,
        {
          tokenUrl,
          form: {
            grant_type: "client_credentials",
            scope,
            client_assertion_type: CLIENT_ASSERTION_TYPE,
            client_assertion: assertion,
          },
        },
        options.requestPolicy,
      )
    }).pipe((once) => TokenEndpoint.retrying(once, options.requestPolicy))

  const fetch: Effect.Effect<TokenCache.AccessToken, AuthError> = Effect.gen(function* () {
    const { tokenUrl } = yield* tokenEndpoint
    const current = yield* Ref.get(version)
    if (current === "v1" || scopeV1 === scopeV2) {
      return yield* requestWith(tokenUrl, current === "v1" ? scopeV1 : scopeV2).pipe(
        Effect.catchTag("InvalidScope", (e) => Effect.fail(e.error)),
      )
    }
    return yield* requestWith(tokenUrl, scopeV2).pipe(
      Effect.catchTag("InvalidScope", () =>
        Effect.logInfo(
          `the server refused SMART v2 scopes (${scopeV2}); retrying with v1 scopes (${scopeV1})`,
        ).pipe(
          Effect.zipRight(requestWith(tokenUrl, scopeV1)),
          Effect.tap(() => Ref.set(version, "v1")),
          Effect.catchTag("InvalidScope", (e) => Effect.fail(e.error)),
        ),
      ),
    )
  })

  const cache = yield* TokenCache.make(fetch, { skew: options.skew })
  return {
    authorize: (req) => Effect.map(cache.get, (token) => HttpClientRequest.bearerToken(req, token)),
    invalidate: cache.invalidate,
    describe: `SMART Backend Services (${options.key.alg}, kid ${options.key.kid}, client ${options.clientId})`,
  } satisfies Authenticator
})
