/**
 * `ferry keys generate --alg ES384|RS384|X25519 --out key.jwk [--force]`
 *
 * Writes a new private key (JWK, mode 0600) and prints its public half to stdout: for ES384 and RS384 a signing
 * key for SMART Backend Services (the public JWKS, ready to register with the authorization server); for X25519 a
 * key to seal archives to (`ferry seal --to` takes the printed public JWK, `ferry unseal --key` the private one).
 */
import { Command, Options } from "@effect/cli"
import { FileSystem } from "@effect/platform"
import * as Seal from "@ferry/archive/Seal"
import * as Keys from "@ferry/auth/Keys"
import { AuthError } from "@ferry/core/Errors"
import { fsProblem } from "@ferry/core/FsProblem"
import { isPastedSecret } from "@ferry/core/PastedSecret"
import { Console, Effect } from "effect"

export interface GenerateOptions {
  readonly alg: Keys.SigningAlg | "X25519"
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
  // X25519: a key to seal archives to (`ferry seal --to`), not to sign with
  const alg = options.alg
  const sealing = alg === "X25519"
  const { privateJwk, publicJwks } =
    alg === "X25519"
      ? (({ privateJwk, publicJwk }) => ({ privateJwk, publicJwks: publicJwk }))(Seal.generateKey())
      : yield* Keys.generate(alg)
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
    sealing
      ? `Wrote the X25519 private key to ${out} (mode 0600, kid ${privateJwk.kid}). Archives are sealed to the public key printed above (save it as a file: ferry seal <archive> --to <that file> --out <file>); unsealing needs this private key: keep it apart from the sealed copies, and out of version control.`
      : `Wrote the ${options.alg} private key to ${out} (mode 0600, kid ${privateJwk.kid}). ` +
          "Register the public JWKS printed above with the server; keep the private key out of version control.",
  )
})

const generate = Command.make(
  "generate",
  {
    alg: Options.choice("alg", ["ES384", "RS384", "X25519"]).pipe(
      Options.withDefault("ES384" as const),
      Options.withDescription(
        "ES384 (EC P-384, the default) or RS384 (RSA 2048): a signing key for SMART Backend Services; X25519: a key to seal archives to (ferry seal).",
      ),
    ),
    out: Options.file("out").pipe(
      Options.withDescription("Where to write the private JWK (created with mode 0600)."),
    ),
    force: Options.boolean("force").pipe(Options.withDescription("Replace --out if it already exists.")),
  },
  generateKey,
).pipe(
  Command.withDescription(
    "Generate a key pair: writes the private JWK (0600), prints the public key (a JWKS to register for SMART Backend Services; for X25519, the JWK to seal archives to).",
  ),
)

export const keys = Command.make("keys").pipe(
  Command.withDescription("Manage client keys for SMART Backend Services authentication."),
  Command.withSubcommands([generate]),
)
