import { Schema } from "effect"

/**
 * Everything that can fail in `@ferry/transform` (all pure functions; failures come back as
 * `Either.left` values, which are also yieldable in `Effect.gen`).
 * - IdMapLine: a line of a persisted id map (NDJSON) is not `{"s":"Type/id","t":"Type/id"}`
 * - ResponseMismatch: a transaction/batch response Bundle does not match the request Bundle
 *   (wrong type, wrong number of entries)
 * - ResponseEntry: one response entry cannot be read (no `location`, a location of another type)
 * - EntryOrder: a resource given to a `TransactionWriter` is not the one its keys name at that position
 */
export class TransformError extends Schema.TaggedError<TransformError>("@ferry/transform/TransformError")(
  "TransformError",
  {
    reason: Schema.Literal("IdMapLine", "ResponseMismatch", "ResponseEntry", "EntryOrder"),
    detail: Schema.String,
    /** 1-based line number (IdMapLine) or 0-based entry position (ResponseEntry). */
    position: Schema.optional(Schema.Number),
    /** The source `Type/id` concerned, when there is one. */
    source: Schema.optional(Schema.String),
    cause: Schema.optional(Schema.Defect),
  },
) {
  override get message(): string {
    const where =
      this.reason === "IdMapLine"
        ? `id map line ${this.position ?? "?"}`
        : this.reason === "ResponseMismatch"
          ? "transaction response"
          : this.reason === "EntryOrder"
            ? `transaction entry ${this.position ?? "?"}`
            : `transaction response entry ${this.position ?? "?"}${this.source ? ` (${this.source})` : ""}`
    const todo =
      this.reason === "IdMapLine"
        ? "the id map file is damaged: import again with --restart, which writes it anew"
        : this.reason === "ResponseMismatch"
          ? "the target did not answer the Bundle that was sent, check the target server"
          : this.reason === "EntryOrder"
            ? "add the chunk's resources in the order of its keys (a bug in the caller)"
            : "check the target server's answer for that entry"
    return `${where}: ${this.detail}; ${todo}`
  }
}
