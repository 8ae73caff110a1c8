import * as OS from "node:os"
import { ArchiveError } from "../src/ArchiveError.js"
import * as NFS from "node:fs"
import * as Path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import * as Journal from "../src/Journal.js"
import { fsyncLog, mode, tempDir } from "./helpers.js"

const open = (path: string) => Journal.Journal.make(path)

describe("Journal", () => {
  it.scoped("appends, answers isDone/result/entries, and reloads the same state", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const path = Path.join(dir, "journal.ndjson")
      yield* Effect.scoped(
        Effect.gen(function* () {
          const j = yield* open(path)
          yield* j.append("export.file", "Patient/0", { sha256: "ab", count: 2 })
          yield* j.append("export.file", "Observation/0")
          yield* j.append("import.batch", "b1", { ok: 10 })
          expect(yield* j.isDone("Patient/0")).toBe(true)
          expect(yield* j.isDone("nope")).toBe(false)
        }),
      )
      const j = yield* open(path)
      expect(yield* j.isDone("Observation/0")).toBe(true)
      expect(yield* j.result("Patient/0")).toEqual(Option.some({ sha256: "ab", count: 2 }))
      expect(yield* j.result("Observation/0")).toEqual(Option.none())
      expect((yield* j.entries("export.")).map((e) => e.key)).toEqual(["Patient/0", "Observation/0"])
      const next = yield* j.append("import.batch", "b2")
      expect(next.seq).toBe(4)
      expect(mode(path)).toBe(0o600)
    }),
  )

  it.scoped("a torn last line is ignored, cut off, and the next append starts its own line", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const path = Path.join(dir, "journal.ndjson")
      yield* Effect.scoped(
        Effect.gen(function* () {
          const j = yield* open(path)
          yield* j.append("step", "a", { n: 1 })
          yield* j.append("step", "b", { n: 2 })
        }),
      )
      const whole = NFS.readFileSync(path, "utf8")
      NFS.appendFileSync(path, '{"seq":3,"at":"2026-01-01T00:00:00.000Z","kind":"step","ke')
      const state = yield* Journal.load(path)
      expect(state.torn).toBe(true)
      expect(state.entries.map((e) => e.key)).toEqual(["a", "b"])
      expect(state.validBytes).toBe(Buffer.byteLength(whole))

      const j = yield* open(path)
      expect(NFS.readFileSync(path, "utf8")).toBe(whole)
      expect(yield* j.isDone("a")).toBe(true)
      const c = yield* j.append("step", "c")
      expect(c.seq).toBe(3)
      const lines = NFS.readFileSync(path, "utf8").split("\n")
      expect(lines).toHaveLength(4)
      expect(lines[3]).toBe("")
      expect(lines.slice(0, 3).map((l) => JSON.parse(l).key)).toEqual(["a", "b", "c"])
      expect((yield* Journal.load(path)).torn).toBe(false)
    }),
  )

  it.scoped("a complete record without its newline is still treated as torn (never acknowledged)", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const path = Path.join(dir, "journal.ndjson")
      NFS.writeFileSync(
        path,
        '{"seq":1,"at":"x","kind":"k","key":"a"}\n{"seq":2,"at":"x","kind":"k","key":"b"}',
      )
      const j = yield* open(path)
      expect(yield* j.isDone("a")).toBe(true)
      expect(yield* j.isDone("b")).toBe(false)
    }),
  )

  it.scoped("a corrupt line in the middle is a typed error naming file:line", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const path = Path.join(dir, "journal.ndjson")
      NFS.writeFileSync(
        path,
        '{"seq":1,"at":"x","kind":"k","key":"a"}\n{"seq":2,"at":"x","kind":"k","key":\n{"seq":3,"at":"x","kind":"k","key":"c"}\n',
      )
      const e = yield* Effect.flip(open(path))
      expect(e._tag).toBe("ArchiveError")
      expect(e.reason).toBe("Corrupt")
      expect(e.line).toBe(2)
      expect(e.message).toContain(`${path}:2: not valid JSON`)
      // one way out said once (deleting a line is not always safe: a request, a transactionTime)
      expect(e.message).toContain("restore that file from a copy, or export again")
      expect(e.message).not.toContain("delete")
      // an import's journal (<archive>/imports/<target>/): its own state, mended by importing again without it
      const archive = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-imports-"))
      NFS.writeFileSync(Path.join(archive, "manifest.json"), "{}")
      const state = Path.join(archive, "imports", "127.0.0.1_8080_fhir")
      const imported = new ArchiveError({
        reason: "Corrupt",
        path: Path.join(state, "journal.ndjson"),
        line: 2,
        detail: "not valid JSON",
      })
      expect(imported.message).toBe(
        `${state}/journal.ndjson:2: not valid JSON; this import's own state is damaged: move ${state} aside and run the import again (what landed on the target stays; sending it again makes no duplicates)`,
      )
      // an archive that only sits in a folder named imports: its own journal, the archive's advice
      const elsewhere = new ArchiveError({
        reason: "Corrupt",
        path: Path.join(archive, "imports", "mig1", "journal.ndjson"),
        detail: "not valid JSON",
      })
      NFS.rmSync(Path.join(archive, "manifest.json"))
      expect(elsewhere.message).toContain("restore that file from a copy, or export again")
      NFS.rmSync(archive, { recursive: true, force: true })
      NFS.writeFileSync(path, '{"seq":1,"at":"x","kind":"k","key":"a"}\n{"seq":"two"}\n')
      const e2 = yield* Effect.flip(Journal.load(path))
      expect([e2.reason, e2.line]).toEqual(["Corrupt", 2])
    }),
  )

  it.scoped("1000 concurrent appends from 50 fibers are 1000 whole lines", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const path = Path.join(dir, "journal.ndjson")
      const j = yield* open(path)
      yield* Effect.forEach(
        Array.from({ length: 50 }, (_, f) => f),
        (f) =>
          Effect.forEach(
            Array.from({ length: 20 }, (_, i) => i),
            (i) => j.append("load", `f${f}-${i}`, { f, i, pad: "x".repeat(200 + f) }),
            { discard: true },
          ),
        { concurrency: 50, discard: true },
      )
      const lines = NFS.readFileSync(path, "utf8").split("\n")
      expect(lines.pop()).toBe("")
      expect(lines).toHaveLength(1000)
      const parsed = lines.map((l) => JSON.parse(l) as { seq: number; key: string })
      expect(new Set(parsed.map((p) => p.key)).size).toBe(1000)
      expect(parsed.map((p) => p.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1))
      const state = yield* Journal.load(path)
      expect(state.entries).toHaveLength(1000)
      expect(state.torn).toBe(false)
    }),
  )

  it.scoped("Journal.layer provides the service and closes the file with the scope", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const path = Path.join(dir, "sub", "journal.ndjson")
      yield* Effect.gen(function* () {
        const j = yield* Journal.Journal
        yield* j.append("k", "x")
      }).pipe(Effect.provide(Journal.Journal.layer(path)))
      expect((yield* Journal.load(path)).byKey.has("x")).toBe(true)
      expect(mode(Path.dirname(path))).toBe(0o700)
    }),
  )

  it.scoped(
    "a new journal's directory is fsynced before its first step is recorded (and again by a run that finds it)",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const path = Path.join(dir, "journal.ndjson")
        const log = yield* fsyncLog
        yield* Effect.scoped(
          Effect.gen(function* () {
            const j = yield* open(path)
            expect(log).toContain(`sync ${dir}`)
            log.length = 0
            yield* j.append("step", "a")
            // an append fsyncs the journal only
            expect(log).toEqual([`sync ${path}`])
          }),
        )
        // a run that crashed between creating the journal and that fsync: the next run makes up for it
        log.length = 0
        yield* open(path)
        expect(log).toContain(`sync ${dir}`)
      }),
  )
})
