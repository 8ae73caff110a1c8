import { Schema } from "effect"

/**
 * Verification failures. `Diff`: the comparison ran and found differences (exit 6, reports written);
 * `Config`: bad flags or inputs, the detail saying which and what to give instead (exit 2); `Auth`: a server
 * refused the credentials, or wants some (exit 3); `Source` / `Target` / `Report`: a side could not be read or the
 * report not written (exit 4).
 */
export class VerifyError extends Schema.TaggedError<VerifyError>("@ferry/verify/VerifyError")("VerifyError", {
  reason: Schema.Literal("Config", "Diff", "Source", "Target", "Report", "Auth"),
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect),
}) {
  override get message(): string {
    switch (this.reason) {
      case "Diff":
        return `verify: ${this.detail}`
      case "Config":
        return `verify: ${this.detail}`
      default:
        return `verify: ${this.reason.toLowerCase()}: ${this.detail}`
    }
  }
}
