import * as NFS from "node:fs"
import * as Path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Events from "../src/Events.js"
import { mode, tempDir } from "./helpers.js"

describe("Events", () => {
  it.scoped("appends one JSON line per event, 0600, with secret-looking fields redacted", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      yield* Events.append(dir, "export.kickoff", { url: "http://s/$export", accessToken: "eyJ.secret" })
      yield* Events.append(dir, "export.file", { type: "Patient", count: 3 }, "warning")
      const path = Path.join(dir, "events.ndjson")
      const lines = NFS.readFileSync(path, "utf8")
        .trimEnd()
        .split("\n")
        .map((l) => JSON.parse(l))
      expect(lines).toEqual([
        {
          url: "http://s/$export",
          accessToken: "[redacted]",
          at: "1970-01-01T00:00:00.000Z",
          level: "info",
          event: "export.kickoff",
        },
        { type: "Patient", count: 3, at: "1970-01-01T00:00:00.000Z", level: "warning", event: "export.file" },
      ])
      expect(NFS.readFileSync(path, "utf8")).not.toContain("eyJ.secret")
      expect(mode(path)).toBe(0o600)
    }),
  )
})
