/**
 * A file system failure in a few plain words (`no such file or folder`, `permission denied`, …) for a sentence
 * that names the path itself: not the platform's `NotFound: FileSystem.readFile (…): ENOENT: …` dump.
 */

/** The words for the errno codes a user can act on. */
const words: Readonly<Record<string, string>> = {
  ENOENT: "no such file or folder",
  ENOTDIR: "a part of it is a file, not a folder",
  EISDIR: "it is a folder, not a file",
  EACCES: "permission denied",
  EPERM: "permission denied",
  ENOSPC: "the disk is full",
  EROFS: "the file system is read-only",
  EEXIST: "it exists already",
  ENAMETOOLONG: "the path is too long",
  ELOOP: "its symbolic links loop",
  EMFILE: "too many open files",
}

/** The errno code a failure's message carries (`ENOENT`, …), if any. */
export const errnoOf = (e: unknown): string | undefined => {
  const code = (e as { readonly code?: unknown } | null)?.code
  if (typeof code === "string" && /^E[A-Z]+$/.test(code)) return code
  const message = e instanceof Error ? e.message : typeof e === "string" ? e : String(e)
  return /\b(E[A-Z]{2,15})\b/.exec(message)?.[1]
}

/** `e` as a few words: the code's words when known, else its message without a platform error's prefix. */
export const fsProblem = (e: unknown): string => {
  const code = errnoOf(e)
  if (code !== undefined && words[code] !== undefined) return words[code]
  const message = e instanceof Error ? e.message : String(e)
  // `NotFound: FileSystem.readFile (path): ` → the OS's own words
  return message.replace(/^\w+: \w+\.\w+ \([^)]*\): /, "")
}
