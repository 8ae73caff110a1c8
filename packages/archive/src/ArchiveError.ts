import * as NFS from "node:fs"
import * as Path from "node:path"
import { Schema } from "effect"

/**
 * Anything wrong with an on-disk archive.
 * - Io: a file or directory could not be read or written
 * - Corrupt: a file exists but its content is not what the format says (bad JSON, bad manifest, bad line)
 * - Checksum: a file's bytes no longer match the recorded SHA-256
 * - NotAnArchive: the directory has no (or a foreign) manifest.json
 * - Exists: `create` was pointed at a directory that already holds an archive or other files
 * - Locked: another ferry process holds the archive's lock
 */
export class ArchiveError extends Schema.TaggedError<ArchiveError>("@ferry/archive/ArchiveError")(
  "ArchiveError",
  {
    reason: Schema.Literal("Io", "Corrupt", "Checksum", "NotAnArchive", "Exists", "Locked"),
    path: Schema.String,
    line: Schema.optional(Schema.Number),
    detail: Schema.String,
    cause: Schema.optional(Schema.Defect),
  },
) {
  override get message(): string {
    const where = this.line !== undefined ? `${this.path}:${this.line}` : this.path
    const what: Record<ArchiveError["reason"], string> = {
      Io: "check the path, permissions and free disk space",
      Corrupt: "the archive is damaged: restore that file from a copy, or export again",
      Checksum: "the file changed after it was written, restore it or export again",
      NotAnArchive: "point ferry at a directory created by `ferry export`",
      Exists: "choose an empty or new directory, or resume the existing archive",
      Locked: "wait for that process to finish, or stop it",
    }
    // the state an import keeps in the archive (`<archive>/imports/<target>/`) is not the export's: exporting
    // again would not mend it, importing again without it does (an archive that merely sits in a folder named
    // imports is no such state: the folder above `imports` must be an archive)
    const m = /^(.*)[\\/]imports[\\/][^\\/]+[\\/]/.exec(this.path)
    const state =
      m !== null && NFS.existsSync(Path.join(m[1]!, "manifest.json")) ? m[0].slice(0, -1) : undefined
    const advice =
      state !== undefined && (this.reason === "Corrupt" || this.reason === "Checksum")
        ? `this import's own state is damaged: move ${state} aside and run the import again (what landed on the target stays; sending it again makes no duplicates)`
        : what[this.reason]
    return `${where}: ${this.detail}; ${advice}`
  }
}

export const errorText = (u: unknown): string =>
  u instanceof Error ? u.message : typeof u === "string" ? u : JSON.stringify(u)

/** Map a thrown Node error to ArchiveError Io naming the path. */
export const ioError =
  (path: string) =>
  (cause: unknown): ArchiveError =>
    new ArchiveError({ reason: "Io", path, detail: errorText(cause), cause })
