/**
 * `ferry seal <archive> --to <public key> --out <file>` and `ferry unseal <file> --key <private key> --out <dir>`:
 * a finished archive as one file encrypted to an X25519 key, and back (`@ferry/archive/Seal`), for
 * disaster-recovery copies kept where others can read them.
 */
import { Args, Command, Options } from "@effect/cli"
import * as Seal from "@ferry/archive/Seal"
import { Console, Effect } from "effect"
import { formatBytes } from "../Progress.js"

export const sealCommand = Command.make(
  "seal",
  {
    archive: Args.directory({ name: "archive", exists: "yes" }).pipe(
      Args.withDescription("A finished archive (ferry export)."),
    ),
    to: Options.file("to").pipe(
      Options.withDescription(
        "The X25519 public key to seal to (a JWK or PEM file; ferry keys generate --alg X25519).",
      ),
    ),
    out: Options.file("out").pipe(
      Options.withDescription("The sealed file to write (must not exist yet; mode 0600)."),
    ),
    json: Options.boolean("json").pipe(
      Options.withDescription("Print the result as one JSON object on stdout."),
    ),
  },
  (f) =>
    Effect.gen(function* () {
      const key = yield* Seal.readKey(f.to, "public")
      const result = yield* Seal.seal(f.archive, key, f.out)
      yield* Console.error(
        `ferry seal: sealed ${f.archive} (${result.files} files, checked against checksums.sha256) to key ${result.recipient} as ${result.out} (${formatBytes(result.bytes)}); ferry unseal ${result.out} --key <the private key> --out <dir> restores it`,
      )
      if (f.json) yield* Console.log(JSON.stringify({ ok: true, ...result }, null, 2))
    }).pipe(
      Effect.onInterrupt(() =>
        Console.error(
          "ferry: seal interrupted; no sealed file was written (its .part is removed): run it again",
        ),
      ),
    ),
).pipe(
  Command.withDescription(
    "Seal a finished archive into one file encrypted to an X25519 public key (a disaster-recovery copy).",
  ),
)

export const unsealCommand = Command.make(
  "unseal",
  {
    file: Args.file({ name: "file", exists: "yes" }).pipe(
      Args.withDescription("A sealed archive (ferry seal)."),
    ),
    key: Options.file("key").pipe(
      Options.withDescription("The X25519 private key it was sealed to (a JWK or PEM file)."),
    ),
    out: Options.directory("out").pipe(
      Options.withDescription("The archive folder to write (must not exist yet; checked before it appears)."),
    ),
    json: Options.boolean("json").pipe(
      Options.withDescription("Print the result as one JSON object on stdout."),
    ),
  },
  (f) =>
    Effect.gen(function* () {
      const key = yield* Seal.readKey(f.key, "private")
      const result = yield* Seal.unseal(f.file, key, f.out)
      yield* Console.error(
        `ferry unseal: ${result.out} holds the archive (${result.files} files, every one checked against checksums.sha256); import it with ferry import ${result.out} --to <target>`,
      )
      if (f.json) yield* Console.log(JSON.stringify({ ok: true, ...result }, null, 2))
    }).pipe(
      Effect.onInterrupt(() =>
        Console.error("ferry: unseal interrupted; nothing was written (its .part is removed): run it again"),
      ),
    ),
).pipe(
  Command.withDescription("Unseal a sealed archive with its private key into a new archive folder, checked."),
)
