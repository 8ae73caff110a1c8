import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import { describe, expect, it } from "vitest"
import { makeDirsSync } from "../src/Dirs.js"

const temp = () => NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-dirs-"))

describe("makeDirsSync", () => {
  it("creates the missing folders with the mode asked, and says the first one it made", () => {
    const base = temp()
    const deep = Path.join(base, "a", "b", "c")
    expect(makeDirsSync(deep, 0o700)).toBe(Path.join(base, "a"))
    expect(NFS.statSync(deep).isDirectory()).toBe(true)
    expect(NFS.statSync(Path.join(base, "a")).mode & 0o777).toBe(0o700 & ~process.umask())
    expect(makeDirsSync(deep, 0o700)).toBeUndefined()
    NFS.rmSync(base, { recursive: true })
  })

  it("fails (does not spin) where the file system refuses a new folder, or a part of the path is a file", () => {
    const base = temp()
    const file = Path.join(base, "file")
    NFS.writeFileSync(file, "")
    expect(() => makeDirsSync(Path.join(file, "x"), 0o700)).toThrow(/ENOTDIR/)
    // /proc answers ENOENT to a new entry: Node's recursive mkdir loops forever on it
    if (NFS.existsSync("/proc/self")) {
      expect(() => makeDirsSync("/proc/ferry-nope/x", 0o700)).toThrow(/ENOENT/)
    }
    NFS.rmSync(base, { recursive: true })
  })
})
