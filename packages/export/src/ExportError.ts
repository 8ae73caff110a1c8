import { Schema } from "effect"

/**
 * Everything that can make an export fail after the request reached the server (HTTP failures stay
 * `FhirError`, credentials `AuthError`, disk `ArchiveError`).
 * - NotSupported: the server has no `$export` at this level (kick-off 404/405/501) and crawling is off, or a
 *   crawl has no type to search (the CapabilityStatement declares none, and none was asked for)
 * - Kickoff: the kick-off was refused or its answer is unusable (no Content-Location)
 * - JobFailed: the status URL reported a failed job
 * - Timeout: the job did not finish within `--timeout`
 * - Manifest: the completion manifest is malformed
 * - Expired: output files answered 410/403/404 again after a fresh kick-off
 * - CountMismatch: a file still holds a different number of lines than its manifest `count` after a re-download
 * - InvalidFile: a downloaded line is not a resource of the announced type
 * - Attachment: an attachment could not be fetched or does not match its size/hash
 * - Config: the options contradict each other (e.g. `patient` at system level)
 * - Archive: the archive on disk could not be written or read
 */
export class ExportError extends Schema.TaggedError<ExportError>("@ferry/export/ExportError")("ExportError", {
  reason: Schema.Literal(
    "NotSupported",
    "Kickoff",
    "JobFailed",
    "Timeout",
    "Manifest",
    "Expired",
    "CountMismatch",
    "InvalidFile",
    "Attachment",
    "Config",
    "Archive",
  ),
  url: Schema.optional(Schema.String),
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect),
}) {
  override get message(): string {
    return `${this.url ? `${this.url}: ` : ""}${this.detail}`
  }
}
