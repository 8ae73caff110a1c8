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

/** A one-line human summary of the issues (diagnostics, else details.text, else code). */
export const summary = (outcome: OperationOutcome): string =>
  outcome.issue
    .map(
      (i) =>
        `${i.severity} ${i.code}${i.diagnostics ? `: ${i.diagnostics}` : i.details?.text ? `: ${i.details.text}` : ""}`,
    )
    .join("; ")

export const make = (
  severity: "fatal" | "error" | "warning" | "information",
  code: string,
  diagnostics: string,
): OperationOutcome => ({ resourceType: "OperationOutcome", issue: [{ severity, code, diagnostics }] })
