/**
 * A bearer token obtained elsewhere, read from an environment variable or a file (never a literal on the
 * command line). It is read once, trimmed, and read again after `invalidate` (a rotated token file is
 * picked up on the next 401). A token with characters no bearer token has (a line break: a file of two
 * lines; a space, a control character, a typographic quote pasted along) is refused when read: sent, it
 * would never get an answer (undici refuses such a header).
 */
import { FileSystem, HttpClientRequest } from "@effect/platform"
import { AuthError } from "@ferry/core/Errors"
import { isPastedSecret, mayBeToken } from "@ferry/core/PastedSecret"
import { Config, ConfigProvider, Effect, Option, Redacted } from "effect"
import type { Authenticator } from "../Authenticator.js"
import * as TokenCache from "../TokenCache.js"
import * as EnvName from "../EnvName.js"

export type StaticBearerSource =
  | { readonly env: string; readonly file?: undefined }
  | { readonly file: string; readonly env?: undefined }

export interface StaticBearerOptions {
  /** Where environment variables come from; default the process environment. */
  readonly environment?: ConfigProvider.ConfigProvider | undefined
}

export const make = Effect.fn("StaticBearer.make")(function* (
  source: StaticBearerSource,
  options: StaticBearerOptions = {},
) {
  const fs = yield* FileSystem.FileSystem
  const environment = options.environment ?? ConfigProvider.fromEnv()

  const read: Effect.Effect<TokenCache.AccessToken, AuthError> =
    source.env !== undefined
      ? Config.redacted(source.env).pipe(
          Config.option,
          Effect.withConfigProvider(environment),
          Effect.mapError(
            () =>
              new AuthError({
                reason: "Config",
                detail: `The environment variable ${EnvName.shown(source.env)} could not be read as a bearer token`,
              }),
          ),
          Effect.map(Option.map((r) => Redacted.value(r).trim())),
          Effect.flatMap((value) =>
            Option.isSome(value) && value.value.length > 0
              ? checked(
                  value.value,
                  (what) =>
                    `The environment variable ${EnvName.shown(source.env)} holds characters a bearer token cannot contain (${what}); set it to the token alone`,
                )
              : Effect.fail(
                  new AuthError({
                    reason: "Config",
                    detail: EnvName.isEnvName(source.env)
                      ? `The environment variable ${EnvName.shown(source.env)} is not set or empty; export it with the access token, or use a token file instead`
                      : `The bearer token's variable is ${EnvName.shown(source.env)}; give the NAME of the environment variable that holds the token`,
                  }),
                ),
          ),
          Effect.map(token),
        )
      : isPastedSecret(source.file)
        ? Effect.fail(
            new AuthError({
              reason: "Config",
              detail:
                "--bearer-file / auth.bearerFile holds something that is not a file path (not shown: the token itself?); give the path of a file that holds the token",
            }),
          )
        : fs.readFileString(source.file).pipe(
            Effect.mapError(
              (error) =>
                new AuthError({
                  reason: "Config",
                  detail:
                    error._tag === "SystemError" && error.reason === "NotFound" && mayBeToken(source.file)
                      ? `--bearer-file / auth.bearerFile names no file (a value of ${source.file.length} characters, not shown: the token itself?); give the path of a file that holds the token`
                      : `The bearer token file ${source.file} could not be read (${error._tag === "SystemError" && error.reason === "NotFound" ? "it does not exist" : error.message}); check the path`,
                }),
            ),
            Effect.map((text) => text.trim()),
            Effect.flatMap((value) =>
              value.length > 0
                ? Effect.map(
                    checked(
                      value,
                      (what) =>
                        `The token in ${source.file} holds characters a bearer token cannot contain (${what}); put the token alone on one line`,
                    ),
                    token,
                  )
                : Effect.fail(
                    new AuthError({
                      reason: "Config",
                      detail: `The bearer token file ${source.file} is empty; write the access token into it`,
                    }),
                  ),
            ),
          )

  // Fail early on a missing token, then serve it from the cache.
  const cache = yield* TokenCache.make(read)
  yield* cache.get
  // a token file others may read: said once (the token works, so it is not refused)
  if (source.file !== undefined) {
    const info = yield* Effect.option(fs.stat(source.file))
    if (Option.isSome(info) && (info.value.mode & 0o077) !== 0)
      yield* Effect.logWarning(
        `the bearer token file ${source.file} may be read by other users (mode ${(info.value.mode & 0o777).toString(8).padStart(4, "0")}); chmod 600 it`,
      )
  }
  return {
    authorize: (req) => Effect.map(cache.get, (t) => HttpClientRequest.bearerToken(req, t)),
    invalidate: cache.invalidate,
    describe: `static bearer token (from ${source.env !== undefined ? `environment variable ${source.env}` : `file ${source.file}`})`,
    refusedHint: `the token may have expired or be meant for another server: ${source.env !== undefined ? `set ${EnvName.shown(source.env)} to` : `put in ${source.file}`} a token this server accepts`,
  } satisfies Authenticator
})

/** What in `value` no bearer token has, for the message (never the character itself: it is part of a secret). */
const unfit = (value: string): string | undefined => {
  // RFC 6750 b64token, and what opaque tokens use besides: visible ASCII, nothing else
  const bad = /[^\x21-\x7e]/.exec(value)?.[0]
  if (bad === undefined) return undefined
  if (bad === "\n" || bad === "\r") return "a line break"
  if (bad === " " || bad === "\t") return "a space"
  const code = bad.codePointAt(0) ?? 0
  return code < 0x20 || code === 0x7f
    ? "a control character"
    : "a character outside ASCII, such as a typographic quote"
}

/** `value` when it can be a bearer token, else a Config error saying what is in it. */
const checked = (value: string, sentence: (what: string) => string): Effect.Effect<string, AuthError> => {
  const what = unfit(value)
  return what === undefined
    ? Effect.succeed(value)
    : Effect.fail(new AuthError({ reason: "Config", detail: sentence(what) }))
}

const token = (value: string): TokenCache.AccessToken => ({
  token: Redacted.make(value),
  expiresIn: Option.none(),
  scope: Option.none(),
})
