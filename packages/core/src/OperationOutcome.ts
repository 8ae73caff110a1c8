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

/** Issue codes that mean "try again" (Bulk Data: a transient issue while polling is not a failure). */
export const transientCodes: ReadonlySet<string> = new Set([
  "transient",
  "throttled",
  "timeout",
  "lock-error",
])

export const isTransient = (outcome: OperationOutcome): boolean =>
  outcome.issue.length > 0 && outcome.issue.every((i) => transientCodes.has(i.code))

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
