import { Schema } from "effect"

/** One OperationOutcome.issue; unnamed fields are kept. */
export const OperationOutcomeIssue = Schema.Struct(
  {
    severity: Schema.String,
    code: Schema.String,
    diagnostics: Schema.optional(Schema.String),
    details: Schema.optional(
      Schema.Struct(
        { text: Schema.optional(Schema.String) },
        Schema.Record({ key: Schema.String, value: Schema.Unknown }),
      ),
    ),
    expression: Schema.optional(Schema.Array(Schema.String)),
  },
  Schema.Record({ key: Schema.String, value: Schema.Unknown }),
)
export type OperationOutcomeIssue = typeof OperationOutcomeIssue.Type

export const OperationOutcome = Schema.Struct(
  {
    resourceType: Schema.Literal("OperationOutcome"),
    issue: Schema.Array(OperationOutcomeIssue),
  },
  Schema.Record({ key: Schema.String, value: Schema.Unknown }),
)
export type OperationOutcome = typeof OperationOutcome.Type

/**
 * Issue codes that mean "try again": `transient` and its children (Bulk Data: a transient issue while
 * polling means the status request failed, not the job).
 */
export const transientCodes: ReadonlySet<string> = new Set([
  "transient",
  "lock-error",
  "no-store",
  "exception",
  "timeout",
  "incomplete",
  "throttled",
])

/** True when every error/fatal issue (or, with none, every issue; at least one) carries a transient code. */
export const isTransient = (outcome: OperationOutcome): boolean => {
  const hard = outcome.issue.filter((i) => i.severity === "error" || i.severity === "fatal")
  const issues = hard.length > 0 ? hard : outcome.issue
  return issues.length > 0 && issues.every((i) => transientCodes.has(i.code))
}

/** How many characters of one issue's words, and how many issues, a summary repeats. */
const wordsCap = 300
const issuesCap = 5

/**
 * Where a server's words start quoting JSON: an object or array whose first member is a string (`{"…`, `["…`),
 * also with the quote escaped as a string or an HTML page writes it (`{\"`, `{&quot;`, `{&#34;`, `{&#x22;`) or
 * single-quoted (`{'…`, as a Python dict prints); or a member quoted from the middle of an object
 * (`"family":"…"`, a quoted name and a colon, also escaped or single-quoted); or bytes that are no text (NUL, or
 * U+FFFD, what undecodable bytes become: the server quoting an uploaded file). Other control characters are shown
 * as `�` (`printable`). Known limits: a quote that starts inside a value (`near: Smith","given"…`) keeps that
 * value's head; words such as `value "2020-13": expected …` are cut too (the safe side).
 */
const quotedJson =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are what it looks for
  /[{[]\s*(?:\\?"|&quot;|&#0*34;|&#x0*22;|')|(?:\\?"|&quot;|&#0*34;|&#x0*22;)[^"&\\]{1,200}(?:\\?"|&quot;|&#0*34;|&#x0*22;)\s*:|'[^'\\]{1,200}'\s*:|[\u0000\ufffd]/i

/**
 * A server's words without the JSON or bytes they quote: cut where a JSON object, array or member begins, or
 * at the first byte that is no text (`{…}` marks it). A target that cannot take a request often answers with
 * the part of the body it choked on (HAPI's "Failed to parse request body … near: "family":"…""), and that
 * is a resource's content (or an attachment's bytes), which must not reach logs, events or messages.
 */
export const withoutQuotedJson = (text: string): string => {
  const at = text.search(quotedJson)
  return at === -1 ? text : `${text.slice(0, at).trimEnd()} {…}`
}

/**
 * `text` with every control character (C0, DEL, C1) shown as `�`: a server's words reach the operator's
 * terminal, where an escape sequence could clear the screen, fake a line, set the clipboard (OSC 52) or plant
 * a link.
 */
export const printable = (text: string): string =>
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are what it removes
  text.replace(/[\u0000-\u001f\u007f-\u009f]/g, "\ufffd")

/**
 * One line of at most `wordsCap` characters, without quoted JSON or control characters: a server's words can
 * be a stack trace or echo the resource it was sent.
 */
const oneLine = (text: string): string => {
  const flat = printable(withoutQuotedJson(text.replace(/\s+/g, " ").trim()))
  return flat.length <= wordsCap ? flat : `${flat.slice(0, wordsCap - 1)}…`
}

/**
 * A one-line human summary of the issues (diagnostics, else details.text, else code), for messages and
 * logs: each issue's words on one line, cut where they quote JSON and at 300 characters, the first 5 issues
 * and how many more.
 * The whole outcome stays where it is kept on purpose (beside a quarantined resource).
 */
export const summary = (outcome: OperationOutcome): string => {
  const shown = outcome.issue.slice(0, issuesCap).map((i) => {
    const words = i.diagnostics || i.details?.text
    return `${printable(i.severity)} ${printable(i.code)}${words ? `: ${oneLine(words)}` : ""}`
  })
  const more = outcome.issue.length - shown.length
  return more > 0 ? `${shown.join("; ")}; and ${more} more issue${more === 1 ? "" : "s"}` : shown.join("; ")
}

export const make = (
  severity: "fatal" | "error" | "warning" | "information",
  code: string,
  diagnostics: string,
): OperationOutcome => ({ resourceType: "OperationOutcome", issue: [{ severity, code, diagnostics }] })
