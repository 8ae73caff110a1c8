/**
 * Finding a FHIR server's OAuth token endpoint: `.well-known/smart-configuration` first, then the
 * (deprecated, SMART v1) `oauth-uris` extension in the CapabilityStatement's security section.
 */
import { HttpClient, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import { AuthError } from "@ferry/core/Errors"
import { proxyTrouble } from "@ferry/core/HttpDispatcher"
import { Duration, Effect, Option, Schedule, Schema } from "effect"
import { defaultTimeout } from "./internal/tokenEndpoint.js"
import {
  isPermanentTransport,
  networkCode,
  nothingThereCodes,
  redactUrl,
  transportSentence,
} from "@ferry/core/Http"

export const SmartConfiguration = Schema.Struct({
  token_endpoint: Schema.optional(Schema.String),
  token_endpoint_auth_methods_supported: Schema.optional(Schema.Array(Schema.String)),
  token_endpoint_auth_signing_alg_values_supported: Schema.optional(Schema.Array(Schema.String)),
  grant_types_supported: Schema.optional(Schema.Array(Schema.String)),
  scopes_supported: Schema.optional(Schema.Array(Schema.String)),
  capabilities: Schema.optional(Schema.Array(Schema.String)),
})
export type SmartConfiguration = typeof SmartConfiguration.Type

const Extension = Schema.Struct({
  url: Schema.String,
  valueUri: Schema.optional(Schema.String),
  extension: Schema.optional(
    Schema.Array(Schema.Struct({ url: Schema.String, valueUri: Schema.optional(Schema.String) })),
  ),
})

/** Only the part of a CapabilityStatement discovery reads. */
export const CapabilitySecurity = Schema.Struct({
  resourceType: Schema.Literal("CapabilityStatement"),
  rest: Schema.optional(
    Schema.Array(
      Schema.Struct({
        security: Schema.optional(Schema.Struct({ extension: Schema.optional(Schema.Array(Extension)) })),
      }),
    ),
  ),
})

export const OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"

export interface TokenEndpoint {
  readonly tokenUrl: string
  readonly source: "smart-configuration" | "capability-statement" | "configured"
  /** From smart-configuration, when it said. */
  readonly authMethods: Option.Option<ReadonlyArray<string>>
  readonly signingAlgs: Option.Option<ReadonlyArray<string>>
  /** From smart-configuration (`grant_types_supported`, REQUIRED there), when it said. */
  readonly grantTypes: Option.Option<ReadonlyArray<string>>
}

/**
 * What a discovered endpoint says against how this client will ask for a token (`client_credentials`, with
 * `authMethod`, signing with `alg` for `private_key_jwt`): one sentence per mismatch, for warnings. The
 * server's lists are advice (they may be incomplete), so the token request is still made.
 */
export const mismatches = (
  found: TokenEndpoint,
  client: { readonly authMethod: string; readonly alg?: string | undefined },
): ReadonlyArray<string> => {
  const out: Array<string> = []
  if (Option.isSome(found.grantTypes) && !found.grantTypes.value.includes("client_credentials"))
    out.push(
      `the server's smart-configuration lists grant types ${found.grantTypes.value.join(", ") || "(none)"}, not client_credentials, which backend services use; the token request may be refused (check that this server offers SMART Backend Services)`,
    )
  if (Option.isSome(found.authMethods) && !found.authMethods.value.includes(client.authMethod))
    out.push(
      `the server does not list ${client.authMethod} among its token endpoint auth methods (${found.authMethods.value.join(", ") || "none"}); the token request may be refused`,
    )
  if (
    client.alg !== undefined &&
    Option.isSome(found.signingAlgs) &&
    !found.signingAlgs.value.includes(client.alg)
  )
    out.push(
      `the server lists signing algorithms ${found.signingAlgs.value.join(", ")}, not ${client.alg}; the token request may be refused`,
    )
  return out
}

const trimSlash = (base: string) => base.replace(/\/+$/, "")

/** Resolve a possibly relative URL (legacy servers) against the FHIR base. */
const absolute = (url: string, baseUrl: string): Option.Option<string> => {
  try {
    return Option.some(new URL(url, `${trimSlash(baseUrl)}/`).toString())
  } catch {
    return Option.none()
  }
}

/** Discovery is asked again this many times while the server answers 5xx or 429. */
const discoveryRetries = 3

/** How a fetch that found nothing at the address starts (both discovery fetches so: the server is unreachable). */
const UNREACHABLE = "could not reach the server ("

/**
 * How a fetch starts that met a server Ferry cannot talk to (a TLS certificate that is not trusted, a port that
 * does not speak TLS or HTTP); the rest is the sentence saying what to do. The FHIR requests would meet the
 * same: the server is unreachable for Ferry, and no token URL set by hand would help.
 */
const CANNOT_TALK = "cannot talk to the server: "

/** A GET of JSON, given `timeout` until its whole answer is read: a server that never answers must not stall. */
const getJson = <A, I>(
  http: HttpClient.HttpClient,
  url: string,
  accept: string,
  schema: Schema.Schema<A, I>,
  timeout: Duration.Duration,
): Effect.Effect<A, string> =>
  // a server that moved its discovery documents says so with a redirect (no credentials go with these GETs)
  HttpClient.followRedirects(http, 5)
    .execute(HttpClientRequest.get(url, { acceptJson: false }).pipe(HttpClientRequest.accept(accept)))
    .pipe(
      Effect.mapError((e) => {
        // only "nothing there" (refused, unknown host): a TLS failure or a reset means a server answered
        const code = e._tag === "RequestError" && e.reason === "Transport" ? networkCode(e.cause) : undefined
        const proxy =
          e._tag === "RequestError" && e.reason === "Transport"
            ? proxyTrouble(process.env, url, e.cause, code)
            : undefined
        if (proxy !== undefined) return `${CANNOT_TALK}${proxy.sentence}`
        if (code !== undefined && nothingThereCodes.has(code)) return `${UNREACHABLE}${code})`
        if (code !== undefined && isPermanentTransport(code))
          return `${CANNOT_TALK}${transportSentence(code)}`
        const what =
          e._tag === "RequestError"
            ? `${e.reason} error${code !== undefined ? `: ${code}` : ""}`
            : `HTTP ${e.response.status}`
        return `could not be fetched (${what})`
      }),
      Effect.flatMap((response) =>
        response.status >= 200 && response.status < 300
          ? HttpClientResponse.schemaBodyJson(schema)(response).pipe(
              Effect.mapError(() => "answered with JSON Ferry could not read"),
            )
          : Effect.fail(`answered HTTP ${response.status}`),
      ),
      Effect.scoped,
      Effect.timeoutFail({
        duration: timeout,
        onTimeout: () => `did not answer within ${Duration.format(timeout)}`,
      }),
    )

/** `[base]/.well-known/smart-configuration` → token endpoint (resolved against the base if relative). */
export const fromSmartConfiguration = (
  http: HttpClient.HttpClient,
  baseUrl: string,
  timeout: Duration.DurationInput = defaultTimeout,
): Effect.Effect<TokenEndpoint, string> =>
  getJson(
    http,
    `${trimSlash(baseUrl)}/.well-known/smart-configuration`,
    "application/json",
    SmartConfiguration,
    Duration.decode(timeout),
  ).pipe(
    Effect.flatMap((config) =>
      Option.fromNullable(config.token_endpoint).pipe(
        Option.flatMap((url) => absolute(url, baseUrl)),
        Option.match({
          onNone: () => Effect.fail("has no usable token_endpoint"),
          onSome: (tokenUrl) =>
            Effect.succeed<TokenEndpoint>({
              tokenUrl,
              source: "smart-configuration",
              authMethods: Option.fromNullable(config.token_endpoint_auth_methods_supported),
              signingAlgs: Option.fromNullable(config.token_endpoint_auth_signing_alg_values_supported),
              grantTypes: Option.fromNullable(config.grant_types_supported),
            }),
        }),
      ),
    ),
  )

/** `[base]/metadata` → rest[].security.extension[oauth-uris].extension[token].valueUri. */
export const fromCapabilityStatement = (
  http: HttpClient.HttpClient,
  baseUrl: string,
  timeout: Duration.DurationInput = defaultTimeout,
): Effect.Effect<TokenEndpoint, string> =>
  getJson(
    http,
    `${trimSlash(baseUrl)}/metadata`,
    "application/fhir+json",
    CapabilitySecurity,
    Duration.decode(timeout),
  ).pipe(
    Effect.flatMap((cs) => {
      const token = (cs.rest ?? [])
        .flatMap((rest) => rest.security?.extension ?? [])
        .filter((ext) => ext.url === OAUTH_URIS)
        .flatMap((ext) => ext.extension ?? [])
        .find((ext) => ext.url === "token" && ext.valueUri !== undefined)?.valueUri
      return Option.fromNullable(token).pipe(
        Option.flatMap((url) => absolute(url, baseUrl)),
        Option.match({
          onNone: () => Effect.fail("has no oauth-uris token extension"),
          onSome: (tokenUrl) =>
            Effect.succeed<TokenEndpoint>({
              tokenUrl,
              source: "capability-statement",
              authMethods: Option.none(),
              signingAlgs: Option.none(),
              grantTypes: Option.none(),
            }),
        }),
      )
    }),
  )

const loopbackHost = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i

/** Whether what is sent to `url` crosses a network unencrypted: plain http to another machine. */
export const cleartext = (url: string): boolean => {
  try {
    const u = new URL(url)
    return u.protocol === "http:" && !loopbackHost.test(u.hostname)
  } catch {
    return false
  }
}

/**
 * The client's credentials (a secret, a signed assertion) go to the token endpoint: over TLS, unless it is on
 * this machine. A discovery document or a configuration that names a plain-http endpoint elsewhere is refused.
 */
const secure = (found: TokenEndpoint): Effect.Effect<TokenEndpoint, AuthError> => {
  const u = new URL(found.tokenUrl)
  return u.protocol === "https:" || (u.protocol === "http:" && loopbackHost.test(u.hostname))
    ? Effect.succeed(found)
    : Effect.fail(
        new AuthError({
          reason: found.source === "configured" ? "Config" : "Discovery",
          url: redactUrl(found.tokenUrl),
          detail: `the token endpoint ${found.source === "configured" ? "configured" : `named by the server's ${found.source}`} is not https: the client's credentials would cross the network unencrypted; use the endpoint's https address${found.source === "configured" ? "" : " (set auth.tokenUrl / --token-url)"}`,
        }),
      )
}

/**
 * The token endpoint for a FHIR server. A configured `tokenUrl` wins (no network; it must be an absolute
 * http(s) URL); otherwise `.well-known/smart-configuration`, then the CapabilityStatement, each given `timeout`
 * (default 30 s). It must be https, or plain http on a loopback address (`secure`). A server where nothing
 * answers, or that Ferry cannot talk to (a TLS certificate not trusted), is `Unreachable` (exit 4).
 */
export const tokenEndpoint = Effect.fn("Discovery.tokenEndpoint")(function* (
  baseUrl: string,
  tokenUrl?: string | undefined,
  timeout: Duration.DurationInput = defaultTimeout,
) {
  if (tokenUrl !== undefined) {
    // a configured URL is taken as written: a relative one would silently become a path under the FHIR base
    const given = /^https?:\/\//i.test(tokenUrl.trim()) ? absolute(tokenUrl.trim(), baseUrl) : Option.none()
    return yield* Option.match(given, {
      onNone: () =>
        Effect.fail(
          new AuthError({
            reason: "Config",
            url: redactUrl(tokenUrl),
            detail:
              "the configured token URL is not an absolute http(s) URL; give the token endpoint's full address (auth.tokenUrl / --token-url), e.g. https://auth.example.org/oauth2/token",
          }),
        ),
      onSome: (url) =>
        secure({
          tokenUrl: url,
          source: "configured",
          authMethods: Option.none(),
          signingAlgs: Option.none(),
          grantTypes: Option.none(),
        }),
    })
  }
  const http = yield* HttpClient.HttpClient
  const found = yield* fromSmartConfiguration(http, baseUrl, timeout).pipe(
    Effect.catchAll((wellKnown) =>
      fromCapabilityStatement(http, baseUrl, timeout).pipe(
        Effect.mapError((metadata) => ({ wellKnown, metadata })),
      ),
    ),
    // a server that answers 5xx or 429 (starting, overloaded) is asked again a few times before giving up
    Effect.retry(
      Schedule.exponential(Duration.seconds(1), 2).pipe(
        Schedule.jittered,
        Schedule.intersect(Schedule.recurs(discoveryRetries)),
        Schedule.whileInput((e: { readonly metadata: string }) =>
          /^answered HTTP (5\d\d|429)$/.test(e.metadata),
        ),
      ),
    ),
    Effect.mapError(({ wellKnown, metadata }) => {
      const cannotTalk = [wellKnown, metadata].find((e) => e.startsWith(CANNOT_TALK))
      return cannotTalk !== undefined
        ? new AuthError({
            reason: "Unreachable",
            url: redactUrl(baseUrl),
            detail: cannotTalk.slice(CANNOT_TALK.length),
          })
        : new AuthError({
            // nothing answered at all: the server is down or the URL wrong, not an auth problem (exit 4)
            ...(wellKnown.startsWith(UNREACHABLE) && metadata.startsWith(UNREACHABLE)
              ? {
                  reason: "Unreachable" as const,
                  url: redactUrl(baseUrl),
                  detail: `${metadata}; check the URL and that the server is running`,
                }
              : {
                  reason: "Discovery" as const,
                  url: redactUrl(baseUrl),
                  detail: `no token endpoint found: .well-known/smart-configuration ${wellKnown}, and /metadata ${metadata}; give the token URL yourself (--token-url; --source-token-url or --target-token-url in migrate and plan; auth.tokenUrl in a config file)`,
                }),
          })
    }),
  )
  yield* Effect.logDebug("token endpoint discovered").pipe(
    Effect.annotateLogs({ tokenUrl: redactUrl(found.tokenUrl), from: found.source }),
  )
  return yield* secure(found)
})
