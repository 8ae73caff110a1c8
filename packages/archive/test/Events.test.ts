import * as NFS from "node:fs"
import * as Path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
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

  it.scoped(
    "an appender keeps the file open for its scope: the same lines, after earlier ones, 0600 however it was",
    () =>
      Effect.gen(function* () {
        const dir = Path.join(yield* tempDir, "imports", "t")
        const path = Path.join(dir, "events.ndjson")
        NFS.mkdirSync(dir, { recursive: true })
        NFS.writeFileSync(path, '{"event":"earlier"}\n', { mode: 0o644 })
        NFS.chmodSync(path, 0o644)
        const scope = yield* Scope.make()
        const append = yield* Events.appender(dir).pipe(Scope.extend(scope))
        // nothing opened before the first append
        expect(mode(path)).toBe(0o644)
        yield* Effect.all(
          [append("a", { n: 1 }), append("b", { n: 2 }, "warning"), append("c", { secret: "s3" })],
          { concurrency: "unbounded" },
        )
        expect(mode(path)).toBe(0o600)
        yield* Scope.close(scope, Exit.void)
        const lines = NFS.readFileSync(path, "utf8").split("\n")
        expect(lines[0]).toBe('{"event":"earlier"}')
        expect(lines.at(-1)).toBe("")
        const events = lines.slice(1, -1).map((l) => JSON.parse(l) as { event: string; secret?: string })
        expect(events.map((e) => e.event).sort()).toEqual(["a", "b", "c"])
        expect(events.find((e) => e.event === "c")?.secret).toBe("[redacted]")
        // a folder that is not there yet is made (0700) at the first append
        const fresh = Path.join(dir, "new")
        const scope2 = yield* Scope.make()
        yield* Effect.flatMap(Events.appender(fresh).pipe(Scope.extend(scope2)), (a) => a("x"))
        yield* Scope.close(scope2, Exit.void)
        expect(mode(fresh)).toBe(0o700)
        expect(NFS.readFileSync(Path.join(fresh, "events.ndjson"), "utf8")).toContain('"event":"x"')
      }),
  )

  it.scoped(
    "a torn last line (a kill in the middle of an append) is cut off before the next run's first event",
    () =>
      Effect.gen(function* () {
        const parsed = (path: string) =>
          NFS.readFileSync(path, "utf8")
            .trimEnd()
            .split("\n")
            .map((l) => (JSON.parse(l) as { event: string }).event)
        // cutTornLine (before Events.append), Events.appender: each run starts on a line of its own
        const dir = yield* tempDir
        const path = Path.join(dir, "events.ndjson")
        NFS.writeFileSync(path, '{"event":"whole"}\n{"event":"torn","sha256":"b1b18d')
        expect(yield* Events.cutTornLine(dir)).toBe(true)
        yield* Events.append(dir, "resumed")
        expect(parsed(path)).toEqual(["whole", "resumed"])
        NFS.appendFileSync(path, '{"event":"torn ag')
        const scope = yield* Scope.make()
        const append = yield* Events.appender(dir).pipe(Scope.extend(scope))
        yield* append("again")
        yield* Scope.close(scope, Exit.void)
        expect(parsed(path)).toEqual(["whole", "resumed", "again"])
        // an appender told that another writer of this process cut it already leaves the file's end alone
        const whole = NFS.readFileSync(path, "utf8")
        NFS.appendFileSync(path, "{")
        const scope2 = yield* Scope.make()
        const beside = yield* Events.appender(dir, { cutTorn: false }).pipe(Scope.extend(scope2))
        yield* beside("beside")
        yield* Scope.close(scope2, Exit.void)
        expect(NFS.readFileSync(path, "utf8").startsWith(`${whole}{{`)).toBe(true)
        NFS.writeFileSync(path, whole)
        // a torn line longer than one read back from the end, and a file that is one torn line
        NFS.appendFileSync(path, `{"event":"long","x":"${"y".repeat(200_000)}`)
        expect(yield* Events.cutTornLine(dir)).toBe(true)
        expect(parsed(path)).toEqual(["whole", "resumed", "again"])
        expect(yield* Events.cutTornLine(dir)).toBe(false)
        NFS.writeFileSync(path, '{"event":"only torn')
        expect(yield* Events.cutTornLine(dir)).toBe(true)
        expect(NFS.readFileSync(path, "utf8")).toBe("")
      }),
  )
})
