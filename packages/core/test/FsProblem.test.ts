import * as NFS from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { errnoOf, fsProblem } from "../src/FsProblem.js"

describe("FsProblem", () => {
  it("says a file system failure in plain words, from its code or its message", () => {
    let missing: unknown
    try {
      NFS.readFileSync("/nonexistent/ferry-fs-problem")
    } catch (e) {
      missing = e
    }
    expect(errnoOf(missing)).toBe("ENOENT")
    expect(fsProblem(missing)).toBe("no such file or folder")
    // the platform's dump: its code found in the message
    expect(
      fsProblem(
        new Error("BadResource: FileSystem.readFile (/tmp): EISDIR: illegal operation on a directory, read"),
      ),
    ).toBe("it is a folder, not a file")
    // a code without words of its own: the OS's message without the platform's prefix
    expect(fsProblem(new Error("Unknown: FileSystem.open (/x): EIO: i/o error, open '/x'"))).toBe(
      "EIO: i/o error, open '/x'",
    )
  })
})
