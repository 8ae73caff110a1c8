/**
 * `ferry sandbox [--port 0] [--host 127.0.0.1] [--db file|:memory:] [--seed path]… [--generate N] [--config f.json]`
 *
 * Runs the sandbox FHIR R4 server (REST, transactions, Binary, bulk $export/$import, SMART, faults).
 * Prints its FHIR base URL as the first line on stdout once data is loaded, then serves until
 * SIGINT/SIGTERM (the scope closes the server and the database). Flags override the config file.
 */
import { Command, Options } from "@effect/cli"
import { FileSystem } from "@effect/platform"
import { fsProblem } from "@ferry/core/FsProblem"
import { jsonErrorText } from "@ferry/core/Ndjson"
import { SandboxConfig, type SandboxConfigInput } from "@ferry/sandbox/Config"
import { SandboxError, start } from "@ferry/sandbox/Sandbox"
import { Console, Effect, Either, Option, ParseResult, Schema } from "effect"
import { nearestOf } from "../Params.js"

export interface SandboxFlags {
  readonly port: Option.Option<number>
  readonly host: Option.Option<string>
  readonly db: Option.Option<string>
  readonly seed: ReadonlyArray<string>
  readonly generate: Option.Option<number>
  readonly config: Option.Option<string>
  readonly refuseClientIds: boolean
  readonly maxBundleEntries: Option.Option<number>
}

const readConfigFile = (path: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(path).pipe(
      Effect.mapError(
        (e) =>
          new SandboxError({
            reason: "Config",
            detail: `${path} could not be read (${fsProblem(e)}); check the path given to --config`,
          }),
      ),
    )
    return yield* Effect.try({
      try: () => JSON.parse(text) as SandboxConfigInput,
      catch: (cause) =>
        new SandboxError({
          reason: "Config",
          detail: `${path} is not valid JSON (${jsonErrorText(cause)}); fix that file (see ferry sandbox --help for its fields)`,
          cause,
        }),
    })
  })

/** Merges the config file (if any) with the flags (flags win; seeds add up). */
export const sandboxConfig = Effect.fn("sandbox.config")(function* (flags: SandboxFlags) {
  const file = Option.isSome(flags.config) ? yield* readConfigFile(flags.config.value) : {}
  const merged: SandboxConfigInput = {
    ...file,
    ...(Option.isSome(flags.port) ? { port: flags.port.value } : {}),
    ...(Option.isSome(flags.host) ? { host: flags.host.value } : {}),
    ...(Option.isSome(flags.db) ? { db: flags.db.value } : {}),
    ...(Option.isSome(flags.generate) ? { generate: flags.generate.value } : {}),
    ...(flags.refuseClientIds ? { refuseClientIds: true } : {}),
    ...(Option.isSome(flags.maxBundleEntries) ? { maxBundleEntries: flags.maxBundleEntries.value } : {}),
    seed: [...(file.seed ?? []), ...flags.seed],
  }
  return merged
})

/**
 * The merged configuration's first problem, said where it came from: a flag by its name, a setting of the
 * config file by the file and the setting (an unknown one with the nearest known name); undefined when none.
 */
export const configProblem = (flags: SandboxFlags, merged: SandboxConfigInput): string | undefined => {
  const decoded = Either.getLeft(
    Schema.decodeUnknownEither(SandboxConfig, { onExcessProperty: "error" })(merged),
  )
  if (Option.isNone(decoded)) return undefined
  const issue = ParseResult.ArrayFormatter.formatErrorSync(decoded.value)[0]
  const key = issue?.path[0]
  if (issue === undefined || typeof key !== "string") return undefined
  const byFlag: Record<string, Option.Option<unknown>> = {
    port: flags.port,
    host: flags.host,
    db: flags.db,
    generate: flags.generate,
    maxBundleEntries: flags.maxBundleEntries,
  }
  const flag = byFlag[key]
  if (flag !== undefined && Option.isSome(flag))
    return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} ${String(flag.value)} is not allowed (${key === "port" ? "a port is 0 to 65535, 0 for one the system picks" : issue.message})`
  const file = Option.getOrElse(flags.config, () => "the configuration")
  const where = issue.path.join(".")
  if (issue._tag === "Unexpected" && issue.path.length === 1) {
    const near = nearestOf(key, Object.keys(SandboxConfig.fields))
    return `${file}: ${JSON.stringify(key)} is not a sandbox setting${near !== undefined ? ` (did you mean ${JSON.stringify(near)}?)` : ""}; the settings are ${Object.keys(SandboxConfig.fields).join(", ")}`
  }
  return `${file}: the setting ${where} is not valid (${issue._tag === "Unexpected" ? "not one the sandbox knows" : "wrong type or value"})`
}

export const runSandbox = Effect.fn("sandbox.run")(function* (flags: SandboxFlags) {
  const config = yield* sandboxConfig(flags)
  const problem = configProblem(flags, config)
  if (problem !== undefined) return yield* new SandboxError({ reason: "Config", detail: problem })
  const sandbox = yield* start(config)
  yield* Console.log(sandbox.baseUrl)
  const loaded = sandbox.loaded
  for (const s of loaded.seeded)
    yield* Console.error(`Seeded ${s.resources} resources from ${s.files} ${s.kind} file(s) in ${s.path}`)
  if (loaded.generated)
    yield* Console.error(
      `Generated ${loaded.generated.resources} resources for ${loaded.generated.patients} patients`,
    )
  return yield* Effect.never
}, Effect.scoped)

export const sandbox = Command.make(
  "sandbox",
  {
    port: Options.integer("port").pipe(
      Options.withDescription("Port to listen on (0: the OS picks one; default 0)."),
      Options.optional,
    ),
    host: Options.text("host").pipe(
      Options.withDescription("Interface to bind (default 127.0.0.1)."),
      Options.optional,
    ),
    db: Options.text("db").pipe(
      Options.withDescription("SQLite database file, or :memory: (default :memory:)."),
      Options.optional,
    ),
    seed: Options.text("seed").pipe(
      Options.withDescription(
        "Load data: a folder/file of transaction Bundles, an NDJSON folder, or a folder of binary files (repeatable).",
      ),
      Options.repeated,
    ),
    generate: Options.integer("generate").pipe(
      Options.withDescription("Generate N synthetic patients (about 23 resources each, deterministic)."),
      Options.optional,
    ),
    refuseClientIds: Options.boolean("refuse-client-ids").pipe(
      Options.withDescription(
        "Refuse client-assigned ids (update-as-create answers 405), as many production servers do.",
      ),
    ),
    maxBundleEntries: Options.integer("max-bundle-entries").pipe(
      Options.withDescription("Largest batch/transaction Bundle accepted; larger ones get 413."),
      Options.optional,
    ),
    config: Options.file("config").pipe(
      Options.withDescription("JSON config file (SandboxConfig: limits, reject rules, faults, auth, bulk)."),
      Options.optional,
    ),
  },
  runSandbox,
).pipe(
  Command.withDescription(
    "Run the sandbox FHIR R4 server; prints its base URL (…/fhir) on the first stdout line and serves until Ctrl-C.",
  ),
)
