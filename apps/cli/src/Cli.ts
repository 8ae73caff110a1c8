import { CliConfig, Command, HelpDoc, ValidationError } from "@effect/cli"
import { Effect } from "effect"
import { version } from "@ferry/core/Version"
import { demo } from "./commands/demo.js"
import { exportCommand } from "./commands/export.js"
import { importCommand } from "./commands/import.js"
import { keys } from "./commands/keys.js"
import { migrateCommand } from "./commands/migrate.js"
import { planCommand } from "./commands/plan.js"
import { sandbox } from "./commands/sandbox.js"
import { sealCommand, unsealCommand } from "./commands/seal.js"
import { summaryCommand } from "./commands/summary.js"
import { verifyCommand } from "./commands/verify.js"

const about = "Move FHIR R4 data between servers: bulk export into a checksummed archive, import, verify."

/** Whether a command's handler has started (before, only @effect/cli has spoken: see `run`). */
let started = false

export const ferry = Command.make("ferry").pipe(
  Command.withDescription(about),
  Command.withSubcommands([
    demo,
    exportCommand,
    importCommand,
    keys,
    migrateCommand,
    planCommand,
    sandbox,
    sealCommand,
    summaryCommand,
    unsealCommand,
    verifyCommand,
  ]),
  Command.transformHandler((handler) =>
    Effect.zipRight(
      Effect.sync(() => {
        started = true
      }),
      handler,
    ),
  ),
)

const cli = Command.run(ferry, { name: "ferry", version })

/** A command's help as text. */
const helpOf =
  <N extends string, R, E, A>(command: Command.Command<N, R, E, A>) =>
  () =>
    HelpDoc.toAnsiText(Command.getHelp(command, CliConfig.defaultConfig))

const helpByName: Readonly<Record<string, () => string>> = {
  demo: helpOf(demo),
  export: helpOf(exportCommand),
  import: helpOf(importCommand),
  migrate: helpOf(migrateCommand),
  plan: helpOf(planCommand),
  sandbox: helpOf(sandbox),
  seal: helpOf(sealCommand),
  summary: helpOf(summaryCommand),
  unseal: helpOf(unsealCommand),
  verify: helpOf(verifyCommand),
}

/** The flags a command takes (from its help), for a "did you mean" after a misspelt one. */
export const flagsOf = (command: string | undefined): ReadonlyArray<string> => {
  const help = command === undefined ? undefined : helpByName[command]
  return help === undefined ? [] : [...new Set(help().match(/--[a-z][a-z0-9-]*/g) ?? [])]
}

/**
 * `argv` with `--log-level <level>` (or `--log-level=<level>`) moved to just after the command: @effect/cli
 * reads its built-in option there, but after a command's own flags it took it for one of them (`plan --from …
 * --log-level debug` was refused as "--log-level is given twice", `--log-level=debug` as unknown).
 */
export const hoistLogLevel = (argv: ReadonlyArray<string>): ReadonlyArray<string> => {
  const head = argv.slice(0, 3)
  const rest = argv.slice(3)
  const hoisted: Array<string> = []
  const kept: Array<string> = []
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!
    if (a === "--") {
      kept.push(...rest.slice(i))
      break
    }
    if (a.startsWith("--log-level=")) hoisted.push("--log-level", a.slice("--log-level=".length))
    else if (a === "--log-level" && i + 1 < rest.length) hoisted.push(a, rest[++i]!)
    else kept.push(a)
  }
  return hoisted.length === 0 ? argv : [...head, ...hoisted, ...kept]
}

const logLevels = new Set(["all", "trace", "debug", "info", "warning", "error", "fatal", "none"])

/** A `--log-level` value @effect/cli does not take, as the usage error it is (its own message named other flags). */
const logLevelProblem = (argv: ReadonlyArray<string>) => {
  const at = argv.findIndex((a) => a === "--log-level" || a.startsWith("--log-level="))
  if (at < 0) return undefined
  const value = argv[at]!.startsWith("--log-level=") ? argv[at]!.slice("--log-level=".length) : argv[at + 1]
  return value === undefined || logLevels.has(value)
    ? undefined
    : Effect.fail(
        ValidationError.invalidValue(
          HelpDoc.p("--log-level takes all, trace, debug, info, warning, error, fatal or none"),
        ),
      )
}

/**
 * Runs the command line. What @effect/cli prints on stderr about a command line it cannot read (before any
 * handler starts) is left out: `Render.report` says it in its one sentence, with where the flags are
 * described (and `--json` gets its result). Help, version and completions go to stdout, as they did.
 */
export const run = (argv: ReadonlyArray<string>) =>
  Effect.consoleWith((console) =>
    (logLevelProblem(argv) ?? cli(hoistLogLevel(argv))).pipe(
      Effect.withConsole({
        ...console,
        error: (...args: ReadonlyArray<unknown>) => (started ? console.error(...args) : Effect.void),
      }),
      // Ctrl-C or SIGTERM before a command's handler began (while the line was read): nothing was done. A
      // handler says its own (`export interrupted; run the same command again to resume …`).
      Effect.onInterrupt(() =>
        started
          ? Effect.void
          : console.error(
              "ferry: interrupted while starting, before anything was done; run the same command again",
            ),
      ),
    ),
  )

/**
 * What `ferry`, `ferry --help` and `ferry -h` print: the commands, one line each, in the order of a job.
 * (@effect/cli's own top-level help lists every flag of every command on one padded line each, thousands of
 * characters wide; each command's `--help` is its own.)
 */
export const overview = (): string =>
  [
    `ferry ${version}: ${about.charAt(0).toLowerCase()}${about.slice(1)}`,
    "",
    "Usage: ferry <command> [options]      ferry <command> --help lists a command's options",
    "",
    "Commands:",
    ...[
      ["plan", "Preflight: probe both servers, count, estimate, show the strategies migrate would choose."],
      [
        "migrate",
        "Export a source and import it into a target in one resumable job (--since auto: a cutover delta).",
      ],
      [
        "export",
        "Bulk-export a FHIR server (or crawl it) into a checksummed, resumable archive with its attachments.",
      ],
      ["import", "Load an archive into a target FHIR server, in dependency order; resumable."],
      ["verify", "Compare a source (server or archive) with a target: counts, content, attachments."],
      ["summary", "One person's record (an archive) as a folder they can open: README.html, files, data."],
      [
        "seal",
        "Seal a finished archive into one file encrypted to an X25519 key; unseal restores it, checked.",
      ],
      [
        "keys generate",
        "Make a key pair: a signing key for SMART Backend Services, or (X25519) one to seal to.",
      ],
      ["sandbox", "Run the sandbox FHIR R4 server (for trying Ferry out, and for its tests)."],
      [
        "demo",
        "The embedded default: a seeded sandbox source and an empty sandbox target; plan, migrate, verify.",
      ],
    ].map(([name, line]) => `  ${name!.padEnd(16)}${line}`),
    "",
    "Also: ferry --version; ferry --completions sh|bash|fish|zsh. Examples, the archive format and exit codes: README.md.",
    "",
  ].join("\n")
