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
 * - Quarantined: the import finished, but the target refused some resources (set aside in `quarantine/`)
 */
export class ImportError extends Schema.TaggedError<ImportError>("@ferry/import/ImportError")("ImportError", {
  reason: Schema.Literal(
    "Config",
    "Target",
    "Refused",
    "Archive",
    "Auth",
    "Timeout",
    "NotSupported",
    "Quarantined",
  ),
  url: Schema.optional(Schema.String),
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect),
}) {
  override get message(): string {
    return `${this.url ? `${this.url}: ` : ""}${this.detail}`
  }
}

/**
 * The failure that ends a finished import (or migration) whose target refused `count` resources: they are in
 * `quarantineDir`, everything else landed.
 */
export const quarantined = (
  count: number,
  quarantineDir: string,
  retry: string,
  waiting = 0,
): ImportError => {
  const refused = count - waiting
  const what =
    waiting === 0
      ? `the target refused ${count} resource${count === 1 ? "" : "s"}, set aside here with each one's file:line and the target's answer`
      : refused === 0
        ? `${waiting} resource${waiting === 1 ? "" : "s"} refer${waiting === 1 ? "s" : ""} to resources that have no id on the target yet, set aside here with each one's file:line and the reason`
        : `the target refused ${refused} resource${refused === 1 ? "" : "s"}, and ${waiting} that refer to ${refused === 1 ? "it" : "them"} wait with ${refused === 1 ? "it" : "them"}, set aside here with each one's file:line and the reason`
  return new ImportError({
    reason: "Quarantined",
    url: quarantineDir,
    detail: `${what} (everything else landed); fix the cause, then run ${retry}`,
  })
}
