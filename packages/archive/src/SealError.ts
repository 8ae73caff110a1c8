import { Schema } from "effect"

/**
 * What can stop `ferry seal` / `ferry unseal` (Seal.ts):
 * - Key: the key file is missing, unreadable, not an X25519 key, or not the key the file was sealed to
 * - Exists: `--out` is there already (never written over)
 * - Archive: the archive to seal is unfinished or damaged
 * - NotSealed: the file is no sealed archive (or one of a newer format)
 * - Damaged: the sealed file was changed, cut short or damaged
 * - Io: a file could not be read or written
 */
export class SealError extends Schema.TaggedError<SealError>("@ferry/archive/SealError")("SealError", {
  reason: Schema.Literal("Key", "Exists", "Archive", "NotSealed", "Damaged", "Io"),
  path: Schema.String,
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect),
}) {
  override get message(): string {
    const advice: Record<SealError["reason"], string | undefined> = {
      Key: undefined,
      Exists: undefined,
      Archive: undefined,
      NotSealed: undefined,
      Damaged: "restore the sealed file from another copy",
      Io: "check the path, permissions and free disk space",
    }
    const todo = advice[this.reason]
    return `${this.path}: ${this.detail}${todo === undefined ? "" : `; ${todo}`}`
  }
}
