/**
 * The authentication flags of a command that talks to FHIR servers, turned into
 * `Authenticator.AuthSettings`. One definition (`definitions`) gives
 * - the unprefixed set for the one-server commands (`export`, `import`, `verify`): `authFlags`, with
 *   `--auth` defaulting to `none` and `--client-secret-env` to `FERRY_CLIENT_SECRET`;
 * - a prefixed set per server for the two-server commands (`migrate`, `plan`): `authFlagsFor("source")`
 *   gives `--source-auth`, `--source-client-id`, … under the keys `sourceAuth`, `sourceClientId`, …
 *   Every prefixed flag is `Options.optional`: its default is applied after the `FERRY_*` environment and
 *   the config file had their say (Config.ts), because an option with a default cannot tell "given" from
 *   "default". Each server's secret variable defaults to its own (`FERRY_SOURCE_CLIENT_SECRET`,
 *   `FERRY_TARGET_CLIENT_SECRET`): one shared default sent the source's secret to the target.
 * Secrets are never flag values: only the name of an environment variable or a file is.
 */
import { Options } from "@effect/cli"
import * as Authenticator from "@ferry/auth/Authenticator"
import * as EnvName from "@ferry/auth/EnvName"
import { AuthError } from "@ferry/core/Errors"
import { Config, Effect, Option, Redacted } from "effect"

export const authKinds = ["none", "smart", "client-secret", "bearer"] as const
export type AuthKind = (typeof authKinds)[number]
export const algs = ["ES384", "RS384"] as const
export type Alg = (typeof algs)[number]
export const secretMethods = ["basic", "post"] as const

/** The default environment variable holding a client secret (`--auth client-secret`) of a one-server command. */
export const defaultClientSecretEnv = "FERRY_CLIENT_SECRET"

/** The default of each server of a two-server command: its own, so that neither gets the other's secret. */
export const defaultClientSecretEnvFor = (server: Server): string =>
  `FERRY_${server.toUpperCase()}_CLIENT_SECRET`

/**
 * The one definition of the auth flags; `flag` names them (adds a prefix), `server` and `secretEnv` (the
 * default secret variable) are for help texts.
 */
const definitions = (flag: (name: string) => string, server: string, secretEnv: string) => ({
  auth: Options.choice(flag("auth"), authKinds).pipe(
    Options.withDescription(
      `How to authenticate${server}: none, smart (SMART Backend Services, --${flag("client-id")} + --${flag("key")}), client-secret (--${flag("client-id")} + a secret in the environment) or bearer (a static token). Default none.`,
    ),
  ),
  clientId: Options.text(flag("client-id")).pipe(
    Options.withDescription(`The OAuth client id${server} (--${flag("auth")} smart or client-secret).`),
  ),
  key: Options.file(flag("key")).pipe(
    Options.withDescription(`Private JWK/PEM file${server} for --${flag("auth")} smart.`),
  ),
  alg: Options.choice(flag("alg"), algs).pipe(
    Options.withDescription(`Signing algorithm${server} when the key does not say (ES384 or RS384).`),
  ),
  keyId: Options.text(flag("key-id")).pipe(
    Options.withDescription(
      `The kid${server} the server knows the key by (default: the key's own kid; the RFC 7638 thumbprint for a PEM key); picks the key of a JWKS holding several.`,
    ),
  ),
  clientSecretMethod: Options.choice(flag("client-secret-method"), secretMethods).pipe(
    Options.withDescription(
      `How the client secret goes to the token endpoint${server}: basic (HTTP Basic, the default) or post (form fields).`,
    ),
  ),
  scope: Options.text(flag("scope")).pipe(
    Options.withDescription(
      `Scopes to request${server} (SMART default: system/*.rs where Ferry reads, system/*.cruds where it writes: import, migrate's target).`,
    ),
  ),
  tokenUrl: Options.text(flag("token-url")).pipe(
    Options.withDescription(
      `Token endpoint${server} (default: discovered from .well-known/smart-configuration).`,
    ),
  ),
  bearerEnv: Options.text(flag("bearer-env")).pipe(
    Options.withDescription(
      `Environment variable holding a bearer token${server} (--${flag("auth")} bearer).`,
    ),
  ),
  bearerFile: Options.file(flag("bearer-file")).pipe(
    Options.withDescription(`File holding a bearer token${server} (--${flag("auth")} bearer).`),
  ),
  clientSecretEnv: Options.text(flag("client-secret-env")).pipe(
    Options.withDescription(
      `Environment variable holding the client secret${server} (--${flag("auth")} client-secret; default ${secretEnv}).`,
    ),
  ),
})

type Definitions = ReturnType<typeof definitions>
type Value<O> = O extends Options.Options<infer A> ? A : never

/** Every flag of the definition, optional. */
export type OptionalAuthFlags = {
  readonly [K in keyof Definitions]: Options.Options<Option.Option<Value<Definitions[K]>>>
}

/** The parsed values of `OptionalAuthFlags` (each `Option.none()` when the flag was not given). */
export type OptionalAuthValues = { readonly [K in keyof Definitions]: Option.Option<Value<Definitions[K]>> }

const optionalAll = (defs: Definitions): OptionalAuthFlags => ({
  auth: Options.optional(defs.auth),
  clientId: Options.optional(defs.clientId),
  key: Options.optional(defs.key),
  alg: Options.optional(defs.alg),
  keyId: Options.optional(defs.keyId),
  clientSecretMethod: Options.optional(defs.clientSecretMethod),
  scope: Options.optional(defs.scope),
  tokenUrl: Options.optional(defs.tokenUrl),
  bearerEnv: Options.optional(defs.bearerEnv),
  bearerFile: Options.optional(defs.bearerFile),
  clientSecretEnv: Options.optional(defs.clientSecretEnv),
})

const unprefixed = definitions((name) => name, "", defaultClientSecretEnv)

/** `--auth …`, `--client-id …`, …: the flags of the one-server commands, with their defaults. */
export const authFlags = {
  ...optionalAll(unprefixed),
  auth: unprefixed.auth.pipe(Options.withDefault("none" as const)),
  clientSecretEnv: unprefixed.clientSecretEnv.pipe(Options.withDefault(defaultClientSecretEnv)),
}

export type Server = "source" | "target"

const capitalize = <S extends string>(s: S): Capitalize<S> =>
  (s.charAt(0).toUpperCase() + s.slice(1)) as Capitalize<S>

/** `sourceAuth`, `sourceClientId`, … */
export type PrefixedKey<P extends Server, K extends string> = `${P}${Capitalize<K>}`

/** The prefixed flags of one server: `{ sourceAuth: --source-auth, sourceClientId: --source-client-id, … }`. */
export type PrefixedAuthFlags<P extends Server> = {
  readonly [K in keyof OptionalAuthFlags as PrefixedKey<P, K>]: OptionalAuthFlags[K]
}

/** Their parsed values. */
export type PrefixedAuthValues<P extends Server> = {
  readonly [K in keyof OptionalAuthValues as PrefixedKey<P, K>]: OptionalAuthValues[K]
}

const authKeys: ReadonlyArray<keyof OptionalAuthFlags> = [
  "auth",
  "clientId",
  "key",
  "alg",
  "keyId",
  "clientSecretMethod",
  "scope",
  "tokenUrl",
  "bearerEnv",
  "bearerFile",
  "clientSecretEnv",
]

/**
 * `--source-auth`, `--source-client-id`, … (every one optional; defaults come from Config.ts after the
 * environment and the config file), keyed `sourceAuth`, `sourceClientId`, …
 */
export const authFlagsFor = <P extends Server>(prefix: P): PrefixedAuthFlags<P> => {
  const defs = optionalAll(
    definitions(
      (name) => `${prefix}-${name}`,
      ` for the ${prefix} server`,
      defaultClientSecretEnvFor(prefix),
    ),
  )
  return Object.fromEntries(
    authKeys.map((k) => [`${prefix}${capitalize(k)}`, defs[k]]),
  ) as PrefixedAuthFlags<P>
}

/** Takes one server's prefixed values out of a command's parsed flags, under the unprefixed keys. */
export const unprefix = <P extends Server>(prefix: P, values: PrefixedAuthValues<P>): OptionalAuthValues => {
  const record: Record<string, unknown> = values
  return Object.fromEntries(
    authKeys.map((k) => [k, record[`${prefix}${capitalize(k)}`] ?? Option.none()]),
  ) as OptionalAuthValues
}

/** The values of `authFlags` (defaults applied). */
export interface AuthFlagValues {
  readonly auth: AuthKind
  readonly clientId: Option.Option<string>
  readonly key: Option.Option<string>
  readonly alg: Option.Option<Alg>
  readonly keyId: Option.Option<string>
  readonly clientSecretMethod: Option.Option<(typeof secretMethods)[number]>
  readonly scope: Option.Option<string>
  readonly tokenUrl: Option.Option<string>
  readonly bearerEnv: Option.Option<string>
  readonly bearerFile: Option.Option<string>
  readonly clientSecretEnv: string
}

/**
 * The flags that give these settings again (`--auth smart --client-id … --key …`, or prefixed
 * `--source-auth …`), for a command Ferry suggests running next; none for `none`. Names only: a secret is
 * never a flag value (its variable or file is).
 */
/**
 * `scope` made to read what it covers: a check that follows a load (`ferry verify`) reads and searches, where
 * the load's scope may only have written (`system/*.write` → `system/*.read`, `system/*.cud` → `system/*.rs`).
 * Other words of the scope (`launch`, `openid`) are kept.
 */
export const readingScope = (scope: string): string =>
  scope
    .split(/\s+/)
    .filter((w) => w !== "")
    .map((w) => {
      const m = /^((?:patient|user|system)\/[^.]+)\.(.+)$/.exec(w)
      if (m === null) return w
      const [, what, perms] = m as unknown as [string, string, string]
      if (perms === "write") return `${what}.read`
      if (/^[cruds]+$/.test(perms) && !(perms.includes("r") && perms.includes("s"))) return `${what}.rs`
      return w
    })
    .join(" ")

export const authFlagWords = (f: AuthFlagValues, prefix?: Server): ReadonlyArray<string> => {
  if (f.auth === "none") return []
  const flag = (name: string) => (prefix === undefined ? `--${name}` : `--${prefix}-${name}`)
  const given = (name: string, value: Option.Option<string>) =>
    Option.match(value, { onNone: () => [], onSome: (v) => [flag(name), v] })
  return [
    flag("auth"),
    f.auth,
    ...given("client-id", f.clientId),
    ...given("key", f.key),
    ...given("alg", f.alg),
    ...given("key-id", f.keyId),
    ...given("client-secret-method", f.clientSecretMethod),
    ...given("scope", f.scope),
    ...given("token-url", f.tokenUrl),
    ...given("bearer-env", f.bearerEnv),
    ...given("bearer-file", f.bearerFile),
    ...(f.auth === "client-secret" ? [flag("client-secret-env"), f.clientSecretEnv] : []),
  ]
}

/**
 * Reads a secret from an environment variable (only the name is on the command line or in a file), through
 * the ambient ConfigProvider (the process environment; tests swap it).
 */
const envSecret = (name: string, kindFlag: string, envFlag: string, prefix: Server | undefined) =>
  Effect.gen(function* () {
    const read = (n: string) =>
      Config.option(Config.redacted(n)).pipe(
        Effect.orElseSucceed(() => Option.none<Redacted.Redacted<string>>()),
        Effect.map(Option.filter((v) => Redacted.value(v) !== "")),
      )
    const value = yield* read(name)
    if (Option.isSome(value)) return value.value
    // Someone used to the one-server commands (or to older versions) may have exported only this one.
    const oneServer =
      prefix !== undefined && name === defaultClientSecretEnvFor(prefix)
        ? yield* read(defaultClientSecretEnv)
        : Option.none()
    if (!EnvName.isEnvName(name))
      return yield* new AuthError({
        reason: "Config",
        detail: `${envFlag} is ${EnvName.shown(name)}; give the NAME of the environment variable that holds the client secret`,
      })
    return yield* new AuthError({
      reason: "Config",
      detail: `${kindFlag} client-secret reads the secret from $${name}, which is not set; export it or name another variable with ${envFlag}${Option.isSome(oneServer) ? ` ($${defaultClientSecretEnv} is read by the one-server commands only)` : ""}`,
    })
  })

/**
 * The `Authenticator.AuthSettings` the values describe; the client secret is read from its environment
 * variable here (and stays `Redacted`). `prefix` only changes the flag names in error messages.
 */
export const authSettings = (f: AuthFlagValues, prefix?: Server) =>
  Effect.gen(function* () {
    const flag = (name: string) => (prefix === undefined ? `--${name}` : `--${prefix}-${name}`)
    // a credential flag the chosen kind does not read would be silently ignored: say so instead
    const stray = (
      [
        ["key", f.key, ["smart"]],
        ["key-id", f.keyId, ["smart"]],
        ["client-id", f.clientId, ["smart", "client-secret"]],
        ["client-secret-method", f.clientSecretMethod, ["client-secret"]],
        ["bearer-env", f.bearerEnv, ["bearer"]],
        ["bearer-file", f.bearerFile, ["bearer"]],
      ] as const
    ).find(([, value, kinds]) => Option.isSome(value) && !(kinds as ReadonlyArray<string>).includes(f.auth))
    if (stray !== undefined)
      return yield* new AuthError({
        reason: "Config",
        detail: `${flag(stray[0])} is not used with ${flag("auth")} ${f.auth}; pass ${flag("auth")} ${stray[2][0]}, or drop ${flag(stray[0])}`,
      })
    const clientSecret =
      f.auth === "client-secret"
        ? Option.some(yield* envSecret(f.clientSecretEnv, flag("auth"), flag("client-secret-env"), prefix))
        : Option.none()
    return {
      ...Authenticator.emptySettings(f.auth),
      clientId: f.clientId,
      keyFile: f.key,
      alg: f.alg,
      kid: f.keyId,
      secretMethod: Option.getOrElse(f.clientSecretMethod, () => "basic" as const),
      scope: f.scope,
      tokenUrl: f.tokenUrl,
      bearerEnv: f.bearerEnv,
      bearerFile: f.bearerFile,
      clientSecret,
    } satisfies Authenticator.AuthSettings
  })
