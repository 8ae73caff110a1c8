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
  inArchive = 0,
): ImportError => {
  const refused = count - waiting - inArchive
  const s = (n: number) => (n === 1 ? "" : "s")
  const parts: Array<string> = []
  if (refused > 0) parts.push(`the target refused ${refused} resource${s(refused)}`)
  if (waiting > 0)
    parts.push(
      refused > 0
        ? `${waiting} that refer to ${refused === 1 ? "it" : "them"} wait with ${refused === 1 ? "it" : "them"}`
        : `${waiting} resource${s(waiting)} refer${waiting === 1 ? "s" : ""} to resources that have no id on the target yet`,
    )
  if (inArchive > 0)
    parts.push(
      `${inArchive} resource${s(inArchive)} of the archive cannot be sent as ${inArchive === 1 ? "it is" : "they are"} (no id)`,
    )
  const what = `${parts.length > 1 ? `${parts.slice(0, -1).join(", ")}, and ${parts.at(-1)}` : parts[0]}, set aside here with each one's file:line and ${waiting === 0 && inArchive === 0 ? "the target's answer" : "the reason"}`
  const todo =
    refused + waiting > 0
      ? `fix the cause, then run ${retry}${inArchive > 0 ? " (those the archive holds without an id are fixed at the source, then exported again)" : ""}`
      : "fix them at the source and export again (a retry cannot send them)"
  return new ImportError({
    reason: "Quarantined",
    url: quarantineDir,
    detail: `${what} (everything else landed); ${todo}`,
  })
}
