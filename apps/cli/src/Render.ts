/**
 * Failures as one line on stderr and a process exit code.
 *
 * | code | meaning |
 * |---|---|
 * | 0 | success |
 * | 1 | unexpected failure (a defect: a bug in Ferry) |
 * | 2 | usage or configuration error (bad flags, contradictory options, missing settings) |
 * | 3 | authentication / authorization failure (token request refused, 401, bad key) |
 * | 4 | the FHIR server failed or refused (HTTP errors after retries, failed/expired export jobs, bad files) |
 * | 5 | the archive on disk could not be written or read (permissions, space, lock, corrupt journal) |
 * | 6 | verification found differences between source and target |
 * | 130 | interrupted (Ctrl-C / SIGTERM); rerun the same command to resume |
 *
 * Errors are recognised by `_tag` (and `reason`) so this module does not depend on every package.
 */
import { fsProblem } from "@ferry/core/FsProblem"
import * as Archive from "@ferry/archive/Archive"
import { HelpDoc, ValidationError } from "@effect/cli"
import { isPastedSecret } from "@ferry/core/PastedSecret"
import { nearestOf } from "./Params.js"
import { Cause, Console, Effect, HashMap, Logger, Option } from "effect"

interface Tagged {
  readonly _tag: string
  readonly reason?: unknown
  readonly message?: unknown
}

const isTagged = (u: unknown): u is Tagged =>
  typeof u === "object" && u !== null && typeof (u as { _tag?: unknown })._tag === "string"

/** The exit code for one typed failure. */
export const codeOf = (error: unknown): number => {
  if (ValidationError.isValidationError(error)) return ValidationError.isHelpRequested(error) ? 0 : 2
  if (!isTagged(error)) return 1
  switch (error._tag) {
    case "AuthError":
      // a server that could not be reached is exit 4 whatever asked for it (here: token discovery); a private key
      // file that is missing, unreadable or no usable private key is this machine's configuration, not a refusal
      return error.reason === "Config" || error.reason === "KeyInvalid"
        ? 2
        : error.reason === "Unreachable"
          ? 4
          : 3
    case "FhirError":
      // 403 Forbidden: an authorization failure, like a refused token
      return error.reason === "Status" && (error as { status?: unknown }).status === 403 ? 3 : 4
    case "ImportError":
      if (error.reason === "Quarantined") return 7
      return error.reason === "Config" ? 2 : error.reason === "Archive" ? 5 : error.reason === "Auth" ? 3 : 4
    case "ExportError":
      return error.reason === "Config" ? 2 : error.reason === "Archive" ? 5 : error.reason === "Auth" ? 3 : 4
    case "ArchiveError":
      // a folder that is no Ferry archive where one is expected (a wrong path): a usage error, as verify says it
      return error.reason === "NotAnArchive" ? 2 : 5
    case "NdjsonError":
    case "TransformError":
      return 5
    case "VerifyError":
      return error.reason === "Config"
        ? 2
        : error.reason === "Auth"
          ? 3
          : error.reason === "Diff" || error.reason === "Mismatch"
            ? 6
            : 4
    case "SandboxError":
      // a bad setting, a --db that cannot be opened, a port in use, --seed data that is not there or not FHIR:
      // input; the generator failing is a bug
      return error.reason === "Generate" ? 1 : 2
    case "ConfigError":
      return 2
    case "SummaryError":
      return error.reason === "Config" ? 2 : 5
    case "SealError":
      // a key that is not the one (or not a usable one), an --out that exists: input; a damaged file or archive: 5
      return error.reason === "Key" || error.reason === "Exists" || error.reason === "NotSealed" ? 2 : 5
    default:
      return 1
  }
}

/** The exit code for a whole failure cause (the first typed failure decides; interruption is 130). */
/**
 * A log line of the libraries (a stale lock taken over, a request tried again, …) as the CLI's own lines are:
 * `ferry: warning: <what>` on stderr, one line, its annotations (a path, a URL) in parentheses.
 */
export const logLine = Logger.make(({ logLevel, message, annotations }) => {
  const parts = (Array.isArray(message) ? message : [message]).map((m) =>
    typeof m === "string" ? m : m instanceof Error ? m.message : JSON.stringify(m),
  )
  const notes = Array.from(HashMap.toEntries(annotations), ([k, v]) => `${k}: ${String(v)}`)
  const text = `${parts.join(" ")}${notes.length > 0 ? ` (${notes.join(", ")})` : ""}`.replace(
    /\s*\n\s*/g,
    " ",
  )
  const level = logLevel._tag === "Warning" ? "warning" : logLevel.label.toLowerCase()
  process.stderr.write(`ferry: ${level}: ${text}\n`)
})

export const exitCode = (cause: Cause.Cause<unknown>): number => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) return codeOf(failure.value)
  // stopped because another ferry took the archive's lock: an archive problem, not a Ctrl-C
  if (Cause.isInterruptedOnly(cause)) return Archive.lockLost() !== undefined ? 5 : 130
  if (Option.isSome(Option.flatMap(Cause.dieOption(cause), badPath))) return 2
  // data nested too deeply to walk: the data's problem (as a damaged archive is), not Ferry's
  if (Option.exists(Cause.dieOption(cause), tooDeep)) return 5
  return 1
}

/** A stack overflow: JSON nested thousands of levels deep, walked recursively. */
const tooDeep = (defect: unknown): boolean =>
  defect instanceof RangeError && /call stack size/i.test(defect.message)

/** File system codes that say a path given to Ferry cannot be used as it is (not a failure of Ferry). */
const pathCodes = /\b(ENOTDIR|EACCES|EPERM|ENAMETOOLONG|ELOOP|EISDIR)\b/

/**
 * A path flag @effect/cli could not check (it checks that a path exists, and dies on any other answer of the
 * file system: a part of the path that is a file, a folder Ferry may not read): the sentence to print.
 */
const badPath = (defect: unknown): Option.Option<string> => {
  if (!isTagged(defect) || defect._tag !== "SystemError") return Option.none()
  const e = defect as Tagged & { readonly module?: unknown; readonly pathOrDescriptor?: unknown }
  const code = typeof e.message === "string" ? pathCodes.exec(e.message)?.[1] : undefined
  if (e.module !== "FileSystem" || code === undefined) return Option.none()
  const path = String(e.pathOrDescriptor)
  if (isPastedSecret(path))
    return Option.some(
      "a value given as a file path is not one (not shown: the key or token itself?); give the path of the file that holds it",
    )
  return Option.some(`the path ${path} cannot be used (${code}: ${fsProblem(code)}); give another path`)
}

/** One line (no stack) describing a failure. */
export const line = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) {
    const e = failure.value
    const message = isTagged(e) && typeof e.message === "string" ? e.message : String(e)
    return `ferry: ${message.replace(/\s*\n\s*/g, " ")}`
  }
  if (Cause.isInterruptedOnly(cause)) {
    const lost = Archive.lockLost()
    return lost !== undefined ? `ferry: ${lost}` : "ferry: interrupted; run the same command again to resume"
  }
  const defect = Cause.dieOption(cause)
  const path = Option.flatMap(defect, badPath)
  if (Option.isSome(path)) return `ferry: ${path.value}`
  // JSON nested thousands of levels deep parses, then overflows the stack of whatever walks it: data no FHIR
  // resource is, not a bug to report
  if (Option.exists(defect, tooDeep))
    return "ferry: a resource in the data is nested thousands of levels deep, which no FHIR resource is; find it (a line far longer than its neighbours, made of brackets) and remove or repair it at its origin, then run the same command again"
  const text = Option.match(defect, {
    onNone: () => "unknown failure",
    onSome: (d) => (d instanceof Error ? d.message : String(d)),
  })
  return `ferry: unexpected failure (a bug in ferry, please report it): ${text.split("\n")[0]}`
}

/** A server that kept failing (throttling, 5xx, no answer in time) after the retries: worth trying again later. */
const gaveUpOnServer = (e: unknown): boolean => {
  if (!isTagged(e) || e._tag !== "FhirError") return false
  const f = e as Tagged & { reason?: unknown; status?: unknown; detail?: unknown }
  return (
    f.reason === "Throttled" ||
    (f.reason === "Status" && typeof f.status === "number" && f.status >= 500) ||
    (f.reason === "Transport" && typeof f.detail === "string" && f.detail.startsWith("no answer within"))
  )
}

/** Commands whose journal keeps what a failed run did, so that the same command picks it up again. */
const resumable = new Set(["export", "import", "migrate"])

/**
 * Prints the failure's line on stderr (for a command line that could not be read, what @effect/cli said of it). When a resumable
 * `command` gave up on a server (exit 4), the line says that nothing done so far is lost.
 */
export const report = (
  cause: Cause.Cause<unknown>,
  command?: string,
  flags: ReadonlyArray<string> = [],
): Effect.Effect<void> => (helpAsked(cause) ? Effect.void : Console.error(sentence(cause, command, flags)))

/** `--help` (which @effect/cli answers as a failure): nothing to report. */
const helpAsked = (cause: Cause.Cause<unknown>): boolean => {
  const failure = Cause.failureOption(cause)
  return (
    Option.isSome(failure) &&
    ValidationError.isValidationError(failure.value) &&
    ValidationError.isHelpRequested(failure.value)
  )
}

/**
 * The failure's one sentence (`ferry: …`): for a command line that could not be read, what @effect/cli said of
 * it (its own message is left out: Cli.run) and where the flags are described; otherwise `lineFor`.
 */
const sentence = (
  cause: Cause.Cause<unknown>,
  command: string | undefined,
  flags: ReadonlyArray<string>,
): string => {
  const failure = Cause.failureOption(cause)
  return Option.isSome(failure) && ValidationError.isValidationError(failure.value)
    ? usageHint(
        command,
        validationText(failure.value),
        command === "keys" ? process.argv[3] : undefined,
        flags,
      )
    : lineFor(cause, command)
}

/** The commands whose own `--help` a usage error points to. */
const commands = new Set([
  "demo",
  "export",
  "import",
  "keys",
  "migrate",
  "plan",
  "sandbox",
  "seal",
  "summary",
  "unseal",
  "verify",
])

/** @effect/cli's parse message on one line, without its colours ("Expected to find option: '--out'"). */
const validationText = (e: ValidationError.ValidationError): string | undefined => {
  if (!("error" in e)) return undefined
  const text = HelpDoc.toAnsiText(e.error)
    // biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI escapes
    .replace(/\u001b\[[0-9;]*m/g, "")
    .replace(/\s+/g, " ")
    .trim()
  return text === "" ? undefined : text
}

/**
 * A command line @effect/cli could not read: what it said (`problem`), and where the flags are described.
 * `command` is the command as typed (`process.argv[2]`); `subcommand` what followed it (`keys generate`).
 */
export const usageHint = (
  command: string | undefined,
  problem?: string,
  subcommand?: string,
  flags: ReadonlyArray<string> = [],
): string => {
  if (command === "keys" && subcommand !== "generate")
    // @effect/cli names the top-level commands here; keys has one of its own
    return `ferry: ferry keys has one command, generate${subcommand !== undefined && !subcommand.startsWith("-") ? ` (not ${JSON.stringify(subcommand)})` : ""}; ferry keys generate --help lists its flags`
  const known =
    command === "keys"
      ? "ferry keys generate --help"
      : command !== undefined && commands.has(command)
        ? `ferry ${command} --help`
        : "ferry --help"
  // a misspelt flag: the command's nearest one; one of the command's own flags: given twice (the first took it)
  const unknown = /Received unknown argument: '(--[^']+)'/.exec(problem ?? "")?.[1]
  const meant = unknown === undefined ? undefined : nearestOf(unknown, flags, 3)
  const said =
    unknown !== undefined && meant === unknown
      ? `${unknown} is given twice; give it once`
      : problem !== undefined
        ? `${problem.replace(/\bis not a integer\b/g, "is not an integer")}${meant !== undefined ? `; did you mean ${meant}?` : ""}`
        : undefined
  return `ferry: the command line could not be read${said !== undefined ? ` (${said})` : ""}; ${known} lists the flags and the values they take`
}

/**
 * The `--json` result of a failed command, on stdout: `{ "ok": false, "exitCode", "error" }` with the last
 * stderr line's sentence (nothing for `--help`).
 */
export const jsonFailure = (
  cause: Cause.Cause<unknown>,
  command: string | undefined,
  flags: ReadonlyArray<string> = [],
): Effect.Effect<void> => {
  if (helpAsked(cause)) return Effect.void
  const error = sentence(cause, command, flags).replace(/^ferry: /, "")
  return Console.log(JSON.stringify({ ok: false, exitCode: exitCode(cause), error }, null, 2))
}

/** `line`, plus what a rerun of a resumable `command` does when it gave up on a server. */
export const lineFor = (cause: Cause.Cause<unknown>, command: string | undefined): string => {
  // a command that keeps nothing to resume (plan, verify) is just run again
  if (
    Cause.isInterruptedOnly(cause) &&
    command !== undefined &&
    !resumable.has(command) &&
    Archive.lockLost() === undefined
  )
    return `ferry: ${command} interrupted; run it again`
  const failure = Cause.failureOption(cause)
  const resume =
    command !== undefined && resumable.has(command) && Option.isSome(failure) && gaveUpOnServer(failure.value)
      ? " (what was done so far is kept: run the same command again to go on)"
      : ""
  return `${line(cause)}${resume}`
}
