/**
 * The authentication flags shared by the commands that talk to one server (`export`, `import`):
 * `--auth none|smart|client-secret|bearer` and what each needs, turned into `Authenticator.AuthSettings`.
 * Secrets are never flag values: only the name of an environment variable or a file is.
 */
import { Options } from "@effect/cli"
import * as Authenticator from "@ferry/auth/Authenticator"
import { AuthError } from "@ferry/core/Errors"
import { Effect, Option, Redacted } from "effect"

export const authFlags = {
  auth: Options.choice("auth", ["none", "smart", "client-secret", "bearer"]).pipe(
    Options.withDefault("none" as const),
  ),
  clientId: Options.text("client-id").pipe(Options.optional),
  key: Options.file("key").pipe(
    Options.optional,
    Options.withDescription("Private JWK/PEM for --auth smart."),
  ),
  alg: Options.choice("alg", ["ES384", "RS384"]).pipe(Options.optional),
  scope: Options.text("scope").pipe(Options.optional),
  tokenUrl: Options.text("token-url").pipe(Options.optional),
  bearerEnv: Options.text("bearer-env").pipe(
    Options.optional,
    Options.withDescription("Environment variable holding a bearer token."),
  ),
  bearerFile: Options.file("bearer-file").pipe(
    Options.optional,
    Options.withDescription("File holding a bearer token."),
  ),
  clientSecretEnv: Options.text("client-secret-env").pipe(
    Options.withDefault("FERRY_CLIENT_SECRET"),
    Options.withDescription("Environment variable holding the client secret (--auth client-secret)."),
  ),
}

export interface AuthFlagValues {
  readonly auth: "none" | "smart" | "client-secret" | "bearer"
  readonly clientId: Option.Option<string>
  readonly key: Option.Option<string>
  readonly alg: Option.Option<"ES384" | "RS384">
  readonly scope: Option.Option<string>
  readonly tokenUrl: Option.Option<string>
  readonly bearerEnv: Option.Option<string>
  readonly bearerFile: Option.Option<string>
  readonly clientSecretEnv: string
}

/** Reads a secret from an environment variable (only the name is on the command line). */
const envSecret = (name: string) =>
  Effect.sync(() => process.env[name]).pipe(
    Effect.flatMap((v) =>
      v === undefined || v === ""
        ? Effect.fail(
            new AuthError({
              reason: "Config",
              detail: `--auth client-secret reads the secret from $${name}, which is not set; export it or name another variable with --client-secret-env`,
            }),
          )
        : Effect.succeed(Redacted.make(v)),
    ),
  )

export const authSettings = (f: AuthFlagValues) =>
  Effect.gen(function* () {
    const clientSecret =
      f.auth === "client-secret" ? Option.some(yield* envSecret(f.clientSecretEnv)) : Option.none()
    return {
      ...Authenticator.emptySettings(f.auth),
      clientId: f.clientId,
      keyFile: f.key,
      alg: f.alg,
      scope: f.scope,
      tokenUrl: f.tokenUrl,
      bearerEnv: f.bearerEnv,
      bearerFile: f.bearerFile,
      clientSecret,
    } satisfies Authenticator.AuthSettings
  })
