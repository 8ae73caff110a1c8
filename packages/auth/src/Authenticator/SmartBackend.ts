/**
 * SMART Backend Services: OAuth 2.0 client_credentials with a signed JWT client assertion
 * (`private_key_jwt`, RS384 or ES384). A new assertion (fresh `jti`) is signed for every token request.
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import { AuthError } from "@ferry/core/Errors"
import { type Duration, Effect, Option, Ref } from "effect"
import * as Assertion from "../Assertion.js"
import type { Authenticator } from "../Authenticator.js"
import * as Discovery from "../Discovery.js"
import * as TokenEndpoint from "../internal/tokenEndpoint.js"
import type { SigningKey } from "../Keys.js"
import * as TokenCache from "../TokenCache.js"
import { redactUrl } from "@ferry/core/Http"

export const CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
/** The default scope of a server Ferry only reads (a source). */
export const DEFAULT_SCOPE = "system/*.rs"
/**
 * The default scope of a server Ferry writes to (a target): create and update, and read as well (the
 * import reads back what it needs, and `migrate` verifies the target). In v1: `system/*.*`.
 */
export const DEFAULT_WRITE_SCOPE = "system/*.cruds"

export type ScopeVersion = "v1" | "v2"

/** What Ferry does on the server: only reads (a source), or writes (a target). */
export type Access = "read" | "write"

export const defaultScope = (access: Access): string =>
  access === "write" ? DEFAULT_WRITE_SCOPE : DEFAULT_SCOPE

export interface SmartBackendOptions {
  /** The FHIR base URL (discovery starts here). */
  readonly baseUrl: string
  readonly clientId: string
  readonly key: SigningKey
  /**
   * Space-separated scopes in SMART v2 syntax (default by `access`: `system/*.rs` to read, `system/*.cruds`
   * to write); v1 scopes are sent as given.
   */
  readonly scope?: string | undefined
  /**
   * What the token is for (default read). It picks the default scope, and the granted scopes must allow
   * it: a token that cannot write to a target fails here, once, instead of as a 403 per request.
   */
  readonly access?: Access | undefined
  /**
   * v2 (default): send `scope`; if the server answers `invalid_scope`, retry once with the v1 equivalent
   * (`.rs` → `.read`, `.cud` → `.write`, `.cruds` → `.*`) and keep using v1.
   * v1: send the v1 equivalent from the start.
   */
  readonly scopeVersion?: ScopeVersion | undefined
  /** Skip discovery and use this token endpoint. */
  readonly tokenUrl?: string | undefined
  /**
   * The token is for a bulk export of these types (empty: every type): granted scopes that allow reading
   * fewer types fail here (a bulk export would leave the others out without an error, and a verify of the
   * archive would not see it), instead of the warning other reads get.
   */
  readonly exportTypes?: ReadonlyArray<string> | undefined
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

/** A SMART resource scope, v1 or v2, with or without v2 `?param=value` filters. */
const RESOURCE_SCOPE = /^(?:system|user|patient)\/(?:[A-Za-z]+|\*)\.([a-z*]+)(?:\?.*)?$/

/**
 * Whether granted scopes (the token response's `scope`) allow `access` on some resource type: read is v2
 * `r`/`s` or v1 `read`/`*`; write is v2 `c`/`u` or v1 `write`/`*`. `undefined` when Ferry cannot judge: the
 * text holds no SMART resource scope (opaque or vendor scopes, or nothing at all).
 */
export const grants = (granted: string, access: Access): boolean | undefined => {
  const perms = granted
    .split(/\s+/)
    .filter(Boolean)
    .flatMap((scope) => {
      const m = RESOURCE_SCOPE.exec(scope)
      return m === null ? [] : [m[1]!]
    })
  // an empty `scope` (some identity providers send "" for "as asked") cannot be judged either
  if (perms.length === 0) return undefined
  return perms.some((p) =>
    p === "*"
      ? true
      : p === "read" || p === "write"
        ? p === access
        : /^c?r?u?d?s?$/.test(p) && (access === "read" ? /[rs]/ : /[cu]/).test(p),
  )
}

/** Types left out, named: all of them when few, else how many of how many and the first ones. */
const typeList = (left: ReadonlyArray<string>, of: number): string =>
  left.length <= 6
    ? left.join(", ")
    : `${left.length} of the ${of} types it asks for (${left.slice(0, 4).join(", ")}, …)`

/**
 * The resource types granted scopes allow `access` on, when they name types rather than every type
 * (`system/*.…`), asked so or not: a bulk export with such a token holds only those types, and the server
 * says nothing of the rest. Undefined when every type is allowed (or the scopes cannot be judged).
 */
export const narrowedTypes = (granted: string, access: Access): ReadonlyArray<string> | undefined => {
  const allows = (p: string) =>
    p === "*" || p === access || (/^c?r?u?d?s?$/.test(p) && (access === "read" ? /[rs]/ : /[cu]/).test(p))
  const parse = (scopes: string) =>
    scopes
      .split(/\s+/)
      .filter(Boolean)
      .flatMap((scope) => {
        const m = /^(?:system|user|patient)\/([A-Za-z]+|\*)\.([a-z*]+)(?:\?.*)?$/.exec(scope)
        return m === null || !allows(m[2]!) ? [] : [m[1]!]
      })
  const types = parse(granted)
  if (types.length === 0 || types.includes("*")) return undefined
  return Array.from(new Set(types)).sort()
}

export const make = Effect.fn("SmartBackend.make")(function* (options: SmartBackendOptions) {
  const http = yield* HttpClient.HttpClient
  const access = options.access ?? "read"
  const scopeV2 = options.scope?.trim() || defaultScope(access)
  const scopeV1 = toV1Scopes(scopeV2)
  const version = yield* Ref.make<ScopeVersion>(options.scopeVersion ?? "v2")
  const warnedNarrowed = yield* Ref.make(false)
  const endpoint = yield* Ref.make(Option.none<Discovery.TokenEndpoint>())

  const tokenEndpoint = Effect.gen(function* () {
    const known = yield* Ref.get(endpoint)
    if (Option.isSome(known)) return known.value
    const found = yield* Discovery.tokenEndpoint(
      options.baseUrl,
      options.tokenUrl,
      options.requestPolicy?.timeout,
    ).pipe(Effect.provideService(HttpClient.HttpClient, http))
    for (const warning of Discovery.mismatches(found, {
      authMethod: "private_key_jwt",
      alg: options.key.alg,
    }))
      yield* Effect.logWarning(warning)
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

  /** A token, and the scopes it was asked for. */
  const obtain = (tokenUrl: string): Effect.Effect<readonly [TokenCache.AccessToken, string], AuthError> =>
    Effect.gen(function* () {
      const current = yield* Ref.get(version)
      const asked = (scope: string) => Effect.map((t: TokenCache.AccessToken) => [t, scope] as const)
      if (current === "v1" || scopeV1 === scopeV2) {
        const scope = current === "v1" ? scopeV1 : scopeV2
        return yield* requestWith(tokenUrl, scope).pipe(
          asked(scope),
          Effect.catchTag("InvalidScope", (e) => Effect.fail(e.error)),
        )
      }
      return yield* requestWith(tokenUrl, scopeV2).pipe(
        asked(scopeV2),
        Effect.catchTag("InvalidScope", () =>
          Effect.logInfo(
            `the server refused SMART v2 scopes (${scopeV2}); retrying with v1 scopes (${scopeV1})`,
          ).pipe(
            Effect.zipRight(requestWith(tokenUrl, scopeV1)),
            asked(scopeV1),
            Effect.tap(() => Ref.set(version, "v1")),
            Effect.catchTag("InvalidScope", (e) => Effect.fail(e.error)),
          ),
        ),
      )
    })

  const fetch: Effect.Effect<TokenCache.AccessToken, AuthError> = Effect.gen(function* () {
    const { tokenUrl } = yield* tokenEndpoint
    const [token, asked] = yield* obtain(tokenUrl)
    // The server may grant less than asked (spec §5): one clear error now, not a 403 per request later.
    if (Option.isSome(token.scope) && grants(token.scope.value, access) === false) {
      const needed =
        access === "write"
          ? `write access (${DEFAULT_WRITE_SCOPE}, or system/*.write in SMART v1)`
          : `read access (${DEFAULT_SCOPE}, or system/*.read in SMART v1)`
      return yield* new AuthError({
        reason: "Scope",
        url: redactUrl(tokenUrl),
        detail: `the server granted the scopes "${token.scope.value}" for the requested "${asked}", which do not allow ${access === "write" ? "writing" : "reading"} resources; allow client ${options.clientId} ${needed} at the server, or request scopes it is allowed (--scope; --source-scope / --target-scope for migrate and plan)`,
      })
    }
    // fewer types than asked: said once (a bulk export then holds only those, and nothing says so)
    const narrowed = Option.isSome(token.scope) ? narrowedTypes(token.scope.value, access) : undefined
    const exported = options.exportTypes
    if (narrowed !== undefined && exported !== undefined) {
      const left = exported.filter((t) => !narrowed.includes(t))
      if (exported.length === 0 || left.length > 0)
        return yield* new AuthError({
          reason: "Scope",
          url: redactUrl(tokenUrl),
          detail: `the token's scopes ("${Option.getOrElse(token.scope, () => "")}", asked "${asked}") allow reading only ${narrowed.join(", ")}: a bulk export would leave ${exported.length === 0 ? "every other type" : typeList(left, exported.length)} out without an error; allow client ${options.clientId} more at the server or ask for it (--scope), or export only what it allows (--type ${narrowed.join(",")})`,
        })
    }
    if (narrowed !== undefined && exported === undefined && !(yield* Ref.getAndSet(warnedNarrowed, true)))
      yield* Effect.logWarning(
        `the token's scopes ("${Option.getOrElse(token.scope, () => "")}", asked "${asked}") allow ${access === "write" ? "writing" : "reading"} only ${narrowed.join(", ")}: ${access === "write" ? "writing any other type will be refused (403)" : "a bulk export leaves every other type out without an error (a search of one is refused)"}; if the job needs more, ask for it (--scope, or allow client ${options.clientId} more at the server)`,
      )
    return token
  })

  const cache = yield* TokenCache.make(fetch, { skew: options.skew })
  return {
    authorize: (req) => Effect.map(cache.get, (token) => HttpClientRequest.bearerToken(req, token)),
    invalidate: cache.invalidate,
    describe: `SMART Backend Services (${options.key.alg}, kid ${options.key.kid}, client ${options.clientId})`,
    refusedHint: `check client ${options.clientId}, the key registered for it (kid ${options.key.kid}), and the scopes it is granted`,
  } satisfies Authenticator
})
