import { Schema } from "effect"

/**
 * Everything that can make an import fail after the archive was opened (HTTP failures stay `FhirError`,
 * credentials `AuthError`, disk `ArchiveError` unless wrapped with reason "Archive").
 * - Config: the options contradict each other (e.g. `--strategy import` against a target without `$import`)
 * - Target: the target answered something unusable (no CapabilityStatement, a response Bundle of the wrong shape)
 * - Refused: the target refused data in a way a retry cannot fix (whole chunk rejected, probe refused)
 * - Archive: the source archive is missing, incomplete or unreadable
 * - Auth: the target refused the credentials
 * - Timeout: the target did not finish (an `$import` job) within `--timeout`
 * - NotSupported: the target lacks what the chosen strategy needs (`$import`, transactions, client ids)
 */
export class ImportError extends Schema.TaggedError<ImportError>("@ferry/import/ImportError")("ImportError", {
  reason: Schema.Literal("Config", "Target", "Refused", "Archive", "Auth", "Timeout", "NotSupported"),
  url: Schema.optional(Schema.String),
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect),
}) {
  override get message(): string {
    return `${this.url ? `${this.url}: ` : ""}${this.detail}`
  }
}
