/**
 * `ferry keys generate --alg ES384|RS384 --out key.jwk [--force]`
 *
 * Writes a new private signing key (JWK, mode 0600) for SMART Backend Services and prints the public
 * JWKS to stdout, ready to register with the authorization server.
 */
import { Command, Options } from "@effect/cli"
import { FileSystem } from "@effect/platform"
import * as Keys from "@ferry/auth/Keys"
import { AuthError } from "@ferry/core/Errors"
import { fsProblem } from "@ferry/core/FsProblem"
import { isPastedSecret } from "@ferry/core/PastedSecret"
import { Console, Effect } from "effect"

export interface GenerateOptions {
  readonly alg: Keys.SigningAlg
  readonly out: string
  readonly force: boolean
}

const writeFailed = (out: string, why: string) =>
  new AuthError({
    reason: "Config",
    detail: `Could not write the private key to ${out} (${why}); check the path`,
  })

/** Generate a key pair, write the private JWK to `out` (0600), print the public JWKS. */
export const generateKey = Effect.fn("keys.generate")(function* (options: GenerateOptions) {
  const fs = yield* FileSystem.FileSystem
  const { out } = options
  if (isPastedSecret(out))
    return yield* new AuthError({
      reason: "Config",
      detail:
        "--out is not a file path (not shown: a key pasted there?); give the path to write the private key to",
    })
  const exists = yield* fs.exists(out).pipe(Effect.mapError((e) => writeFailed(out, fsProblem(e))))
  if (exists && !options.force) {
    return yield* new AuthError({
      reason: "Config",
      detail: `${out} already exists; pass --force to replace it, or choose another --out`,
    })
  }
  const { privateJwk, publicJwks } = yield* Keys.generate(options.alg)
  // Replace rather than truncate: an existing file may have a looser mode than 0600.
  if (exists) yield* fs.remove(out).pipe(Effect.mapError((e) => writeFailed(out, fsProblem(e))))
  yield* fs
    .writeFileString(out, `${JSON.stringify(privateJwk, null, 2)}\n`, { flag: "wx", mode: 0o600 })
    .pipe(
      Effect.zipRight(fs.chmod(out, 0o600)),
      Effect.mapError((e) => writeFailed(out, fsProblem(e))),
    )
  yield* Console.log(JSON.stringify(publicJwks, null, 2))
  yield* Console.error(
    `Wrote the ${options.alg} private key to ${out} (mode 0600, kid ${privateJwk.kid}). ` +
      "Register the public JWKS printed above with the server; keep the private key out of version control.",
  )
})

const generate = Command.make(
  "generate",
  {
    alg: Options.choice("alg", ["ES384", "RS384"]).pipe(
      Options.withDefault("ES384" as const),
      Options.withDescription("Signing algorithm: ES384 (EC P-384, the default) or RS384 (RSA 2048)."),
    ),
    out: Options.file("out").pipe(
      Options.withDescription("Where to write the private JWK (created with mode 0600)."),
    ),
    force: Options.boolean("force").pipe(Options.withDescription("Replace --out if it already exists.")),
  },
  generateKey,
).pipe(
  Command.withDescription(
    "Generate a signing key pair for SMART Backend Services: writes the private JWK, prints the public JWKS.",
  ),
)

export const keys = Command.make("keys").pipe(
  Command.withDescription("Manage client keys for SMART Backend Services authentication."),
  Command.withSubcommands([generate]),
)
