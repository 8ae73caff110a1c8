/**
 * How Ferry authorizes requests to a FHIR server. An `Authenticator` plugs into `FhirClient.make`:
 * `authorize` adds `Authorization`, `invalidate` is called on a 401 (the next `authorize` fetches a new
 * token), `describe` names the method for humans and never holds secrets.
 *
 * Ferry talks to two servers, so there is no single Authenticator tag: build one per server
 * (`fromSettings(settings, baseUrl)`) and hand it to that server's client.
 */
import type { FileSystem, HttpClient, HttpClientRequest } from "@effect/platform"
import { AuthError } from "@ferry/core/Errors"
import { redactUrl } from "@ferry/core/Http"
import { Config, Effect, Option, type Redacted, type Scope } from "effect"
import * as ClientSecret from "./Authenticator/ClientSecret.js"
import * as None from "./Authenticator/None.js"
import * as SmartBackend from "./Authenticator/SmartBackend.js"
import * as StaticBearer from "./Authenticator/StaticBearer.js"
import * as Discovery from "./Discovery.js"
import * as Keys from "./Keys.js"
import type * as TokenEndpoint from "./internal/tokenEndpoint.js"

export interface Authenticator {
  readonly authorize: (
    req: HttpClientRequest.HttpClientRequest,
  ) => Effect.Effect<HttpClientRequest.HttpClientRequest, AuthError>
  /** Called on a 401: the next `authorize` fetches a new token (once, however many callers saw the 401). */
  readonly invalidate: Effect.Effect<void>
  /** e.g. "SMART Backend Services (ES384, kid …, client ferry-demo)"; never secrets. */
  readonly describe: string
  /**
   * What to check when the server refuses the credentials sent (a 401 after the refresh), for
   * `FhirClient.make`'s `refusedHint`: e.g. "check the client id, its registered key and the scopes" (SMART).
   * None when no credentials are sent.
   */
  readonly refusedHint?: string
}

/**
 * Whether `url` (absolute, or relative to `baseUrl`) is on the same origin (scheme, host, port) as
 * `baseUrl`. Callers attach `Authorization` only when it is; unparsable input is never same-origin.
 */
export const sameOrigin = (baseUrl: string, url: string): boolean => {
  try {
    const base = new URL(baseUrl)
    return new URL(url, base).origin === base.origin && base.origin !== "null"
  } catch {
    return false
  }
}

/** An authenticator that leaves requests to other origins than `baseUrl` untouched. */
export const restrictToOrigin = (auth: Authenticator, baseUrl: string): Authenticator => ({
  ...auth,
  authorize: (req) => (sameOrigin(baseUrl, req.url) ? auth.authorize(req) : Effect.succeed(req)),
})

export const AuthKind = ["smart", "client-secret", "bearer", "none"] as const
export type AuthKind = (typeof AuthKind)[number]

/**
 * Auth settings of one server. Nest it under the server's name: `Config.nested(AuthConfig, "auth")`
 * inside `source` reads FERRY_SOURCE_AUTH_KIND, FERRY_SOURCE_AUTH_CLIENT_ID, … (constant case), or
 * `source.auth.clientId` from a config file.
 */
export const AuthConfig = Config.all({
  kind: Config.literal(...AuthKind)("kind").pipe(Config.withDefault<AuthKind>("none")),
  clientId: Config.option(Config.string("clientId")),
  keyFile: Config.option(Config.string("keyFile")),
  alg: Config.option(Config.literal("ES384", "RS384")("alg")),
  kid: Config.option(Config.string("kid")),
  scope: Config.option(Config.string("scope")),
  scopeVersion: Config.literal("v2", "v1")("scopeVersion").pipe(Config.withDefault<"v1" | "v2">("v2")),
  tokenUrl: Config.option(Config.string("tokenUrl")),
  bearerEnv: Config.option(Config.string("bearerEnv")),
  bearerFile: Config.option(Config.string("bearerFile")),
  clientSecret: Config.option(Config.redacted("clientSecret")),
  secretMethod: Config.literal(
    "basic",
    "post",
  )("secretMethod").pipe(Config.withDefault<"basic" | "post">("basic")),
})
export type AuthSettings = Config.Config.Success<typeof AuthConfig>

/** Settings with only `kind` given and everything else absent/default; spread your values over it. */
export const emptySettings = (kind: AuthKind): AuthSettings => ({
  kind,
  clientId: Option.none(),
  keyFile: Option.none(),
  alg: Option.none(),
  kid: Option.none(),
  scope: Option.none(),
  scopeVersion: "v2",
  tokenUrl: Option.none(),
  bearerEnv: Option.none(),
  bearerFile: Option.none(),
  clientSecret: Option.none(),
  secretMethod: "basic",
})

/** How a user gives each setting on the command line (`--source-…`/`--target-…` where there are two servers). */
const flagOf: Readonly<Record<string, string>> = {
  clientId: "client-id",
  keyFile: "key",
  clientSecret: "client-secret-env",
}

/** The same setting in a config file's `auth` section (`migrate` and `plan`; secrets only by the name of their variable). */
const fieldOf: Readonly<Record<string, string>> = {
  clientId: "clientId",
  keyFile: "key",
  clientSecret: "clientSecretEnv",
}

/**
 * Where a missing setting can be given: for one server of migrate or plan (`role`), its `--source-…` flag, its
 * `FERRY_SOURCE_…` variable and its place in a config file; else the single-server commands' flag, with a word
 * on the other commands' forms.
 */
const whereToGive = (flags: ReadonlyArray<string>, fields: ReadonlyArray<string>, role?: Role): string => {
  if (role === undefined)
    return `${flags.map((f) => `--${f}`).join(" or ")} (${flags.map((f) => `--source-${f} / --target-${f}`).join(", ")} for migrate and plan, which also read ${fields.map((f) => `auth.${f}`).join(" or ")} in a config file)`
  return `${flags.map((f) => `--${role}-${f}`).join(" or ")} (or ${flags.map((f) => `FERRY_${role.toUpperCase()}_${f.toUpperCase().replace(/-/g, "_")}`).join(" / ")}, or ${fields.map((f) => `${role}.auth.${f}`).join(" / ")} in a config file)`
}

/** Which server of a two-server command (`migrate`, `plan`) the settings are for. */
export type Role = "source" | "target"

/** Where the kind was given: for one server of migrate or plan, its flag, variable or config key, whichever it was. */
const authFlag = (kind: AuthKind, role?: Role) =>
  role === undefined
    ? `--auth ${kind}`
    : `--${role}-auth ${kind} (or FERRY_${role.toUpperCase()}_AUTH=${kind}, or ${role}.auth.kind: ${kind})`

const required = <A>(
  value: Option.Option<A>,
  name: string,
  kind: AuthKind,
  role?: Role,
): Effect.Effect<A, AuthError> =>
  Option.match(value, {
    onSome: Effect.succeed,
    onNone: () =>
      Effect.fail(
        new AuthError({
          reason: "Config",
          detail: `${authFlag(kind, role)} needs ${whereToGive([flagOf[name] ?? name], [fieldOf[name] ?? name], role)}`,
        }),
      ),
  })

/**
 * Build the authenticator the settings describe for the FHIR server at `baseUrl`. `access` is what Ferry
 * does there (default read; write for a target): it picks SMART's default scope and what the granted
 * scopes must allow.
 */
export const fromSettings = Effect.fn("Authenticator.fromSettings")(function* (
  settings: AuthSettings,
  baseUrl: string,
  access: SmartBackend.Access = "read",
  /** The server of migrate or plan these settings are for: a missing setting is then named as given there. */
  role?: Role,
  /** A bulk export of these types (empty: every type) is what the token is for (see SmartBackend). */
  exportTypes?: ReadonlyArray<string>,
  /** How long and how often the token endpoint and discovery are given (`--request-timeout`). */
  requestPolicy?: TokenEndpoint.RequestPolicy,
) {
  const optional = <A>(o: Option.Option<A>) => Option.getOrUndefined(o)
  // a credential for a plain-http server on another machine: said once (the server may be on a network the
  // user trusts), since the access token goes with every request, unencrypted
  if (settings.kind !== "none" && Discovery.cleartext(baseUrl))
    yield* Effect.logWarning(
      `${redactUrl(baseUrl)} is plain http on another machine: the access token goes with every request unencrypted, as does the data; use the server's https address if it has one`,
    )
  switch (settings.kind) {
    case "none":
      return None.make()
    case "bearer": {
      const env = optional(settings.bearerEnv)
      const file = optional(settings.bearerFile)
      if ((env === undefined) === (file === undefined)) {
        return yield* new AuthError({
          reason: "Config",
          detail: `${authFlag("bearer", role)} needs exactly one of ${whereToGive(["bearer-env", "bearer-file"], ["bearerEnv", "bearerFile"], role)}: the name of an environment variable holding the token, or a file holding it`,
        })
      }
      return yield* StaticBearer.make(env !== undefined ? { env } : { file: file! })
    }
    case "client-secret": {
      const clientId = yield* required(settings.clientId, "clientId", settings.kind, role)
      const clientSecret: Redacted.Redacted<string> = yield* required(
        settings.clientSecret,
        "clientSecret",
        settings.kind,
        role,
      )
      return yield* ClientSecret.make({
        baseUrl,
        clientId,
        clientSecret,
        method: settings.secretMethod,
        scope: optional(settings.scope),
        tokenUrl: optional(settings.tokenUrl),
        requestPolicy,
      })
    }
    case "smart": {
      const clientId = yield* required(settings.clientId, "clientId", settings.kind, role)
      const keyFile = yield* required(settings.keyFile, "keyFile", settings.kind, role)
      const key = yield* Keys.loadPrivateKey(keyFile, {
        kid: optional(settings.kid),
        alg: optional(settings.alg),
      })
      return yield* SmartBackend.make({
        baseUrl,
        clientId,
        key,
        scope: optional(settings.scope),
        access,
        scopeVersion: settings.scopeVersion,
        tokenUrl: optional(settings.tokenUrl),
        exportTypes,
        requestPolicy,
      })
    }
  }
}) satisfies (
  settings: AuthSettings,
  baseUrl: string,
  access?: SmartBackend.Access,
) => Effect.Effect<Authenticator, AuthError, HttpClient.HttpClient | FileSystem.FileSystem | Scope.Scope>
