/**
 * `mkdir -p` that cannot spin. Node's `mkdir(path, { recursive: true })` (sync and async, Node 20) loops
 * forever, at full CPU and deaf to signals, when the kernel answers ENOENT for a folder whose parent exists
 * (`--report /proc/x`: /proc refuses new entries that way). These create the missing folders one at a time
 * from the deepest one that exists, so such a refusal is an error like any other.
 */
import * as NFS from "node:fs"
import * as Path from "node:path"

const codeOf = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && "code" in e && typeof e.code === "string" ? e.code : undefined

/** The folders of `path` that do not exist yet, deepest first (a path that exists as anything stops the walk). */
const missingSync = (path: string): Array<string> => {
  const missing: Array<string> = []
  for (let dir = Path.resolve(path); NFS.statSync(dir, { throwIfNoEntry: false }) === undefined; ) {
    missing.push(dir)
    const parent = Path.dirname(dir)
    if (parent === dir) break
    dir = parent
  }
  return missing
}

/**
 * Creates `path` and its missing parents with `mode` (before the umask); the first folder it created (as
 * `mkdirSync(path, { recursive: true })` says), or undefined when `path` was there. A part of the path that
 * is a file fails with ENOTDIR, a folder that refuses a new entry with what the kernel said.
 */
export const makeDirsSync = (path: string, mode: number): string | undefined => {
  const missing = missingSync(path)
  let first: string | undefined
  for (let k = missing.length - 1; k >= 0; k--) {
    const dir = missing[k]!
    try {
      NFS.mkdirSync(dir, { mode })
      first ??= dir
    } catch (e) {
      // made meanwhile by someone else: fine if it is a folder
      if (codeOf(e) !== "EEXIST" || !NFS.statSync(dir).isDirectory()) throw e
    }
  }
  return first
}
