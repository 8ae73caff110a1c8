import { createHash } from "node:crypto"
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import * as Zlib from "node:zlib"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { ExportError } from "../src/ExportError.js"
import * as Organized from "../src/Organized.js"
import { fsyncLog } from "@ferry/archive/test/helpers"
import { tempDir } from "./helpers/sandbox.js"

const header = (ref: string) =>
  JSON.stringify({
    resourceType: "Parameters",
    parameter: [{ name: "header", valueReference: { reference: ref } }],
  })
const patient = (id: string) => JSON.stringify({ resourceType: "Patient", id })
const obs = (id: string, subject: string) =>
  JSON.stringify({ resourceType: "Observation", id, subject: { reference: subject } })
const group = JSON.stringify({
  resourceType: "Group",
  id: "g",
  member: [{ entity: { reference: "Patient/a" } }, { entity: { reference: "Patient/b" } }],
})
const org = JSON.stringify({ resourceType: "Organization", id: "o" })

/** An archive-like dir with `data/` and staged files; returns the dir. */
const setup = (files: ReadonlyArray<ReadonlyArray<string>>) =>
  Effect.map(tempDir, (dir) => {
    NFS.mkdirSync(Path.join(dir, "data"))
    NFS.mkdirSync(Path.join(dir, "staging"))
    for (const [i, lines] of files.entries()) {
      NFS.writeFileSync(Path.join(dir, "staging", `organized.00${i}.ndjson`), `${lines.join("\n")}\n`)
    }
    return dir
  })

const run = (dir: string, index: number, seen: Set<string>, gzip = false) =>
  Organized.distribute({
    staged: Path.join(dir, "staging", `organized.00${index}.ndjson`),
    label: `staging/organized.00${index}.ndjson`,
    index,
    offsets: new Map([["Observation", 2]]),
    root: dir,
    gzip,
    organizer: "Patient",
    seen,
  })

const read = (dir: string, rel: string): Array<string> => {
  const bytes = NFS.readFileSync(Path.join(dir, rel))
  return (rel.endsWith(".gz") ? Zlib.gunzipSync(bytes) : bytes)
    .toString("utf8")
    .split("\n")
    .filter((l) => l !== "")
}

describe("Organized", () => {
  it("mayRepeat: the organizing type, and lines not referencing exactly one of its resources", () => {
    const may = Organized.mayRepeat("Patient")
    assert.isTrue(may("Patient", patient("a")))
    assert.isFalse(may("Observation", obs("1", "Patient/a")))
    assert.isFalse(may("Observation", obs("1", "http://x/fhir/Patient/a")))
    assert.isTrue(may("Group", group))
    assert.isTrue(may("Organization", org))
    // the same patient twice is still one owner
    assert.isFalse(
      may(
        "Encounter",
        JSON.stringify({
          resourceType: "Encounter",
          subject: { reference: "Patient/a" },
          x: { reference: "Patient/a" },
        }),
      ),
    )
  })

  it("isHeader: only a Parameters with a header parameter", () => {
    assert.isTrue(Organized.isHeader(JSON.parse(header("Patient/a"))))
    assert.isFalse(Organized.isHeader({ resourceType: "Parameters", parameter: [{ name: "other" }] }))
    assert.isFalse(Organized.isHeader({ resourceType: "Patient" }))
  })

  it.scoped(
    "distribute: per-type files, headers dropped, a resource repeated across blocks and files kept once",
    () =>
      Effect.gen(function* () {
        const dir = yield* setup([
          [
            header("Patient/a"),
            patient("a"),
            obs("1", "Patient/a"),
            group,
            org,
            header("Patient/b"),
            patient("b"),
          ],
          // block b continues: header and owner repeated, then the rest; the Group and Organization again
          [header("Patient/b"), patient("b"), obs("2", "Patient/b"), group, org],
        ])
        const seen = new Set<string>()
        const first = yield* run(dir, 0, seen)
        assert.deepStrictEqual(
          first.files.map((f) => [f.type, f.path, f.count]),
          [
            ["Group", "data/Group.000.ndjson", 1],
            ["Observation", "data/Observation.002.ndjson", 1],
            ["Organization", "data/Organization.000.ndjson", 1],
            ["Patient", "data/Patient.000.ndjson", 2],
          ],
        )
        assert.strictEqual(first.headers, 2)
        assert.strictEqual(first.duplicates, 0)
        const second = yield* run(dir, 1, seen)
        assert.deepStrictEqual(
          second.files.map((f) => [f.type, f.path, f.count]),
          [["Observation", "data/Observation.003.ndjson", 1]],
        )
        assert.strictEqual(second.headers, 1)
        assert.strictEqual(second.duplicates, 3)
        for (const f of [...first.files, ...second.files]) {
          const bytes = NFS.readFileSync(Path.join(dir, f.path))
          assert.strictEqual(createHash("sha256").update(bytes).digest("hex"), f.sha256)
          assert.strictEqual(bytes.length, f.bytes)
          assert.strictEqual((NFS.statSync(Path.join(dir, f.path)).mode & 0o777).toString(8), "600")
          for (const l of read(dir, f.path)) assert.strictEqual(JSON.parse(l).resourceType, f.type)
        }
        assert.deepStrictEqual(read(dir, "data/Patient.000.ndjson"), [patient("a"), patient("b")])
        assert.deepStrictEqual(
          NFS.readdirSync(Path.join(dir, "data")).filter((n) => n.endsWith(".part")),
          [],
        )

        // a resumed run rebuilds the same set from the files written, and drops the same resources
        const again = new Set<string>()
        yield* Organized.remember(dir, first.files, "Patient", again)
        assert.deepStrictEqual([...again].sort(), ["Group/g", "Organization/o", "Patient/a", "Patient/b"])
        const redone = yield* run(dir, 1, again)
        assert.strictEqual(redone.duplicates, 3)
        assert.deepStrictEqual(redone.files, second.files)
      }),
  )

  it.effect("remember: a line that is not JSON fails naming the file, never quoting the line", () =>
    Effect.gen(function* () {
      const dir = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-organized-bad-"))
      NFS.mkdirSync(Path.join(dir, "data"))
      NFS.writeFileSync(
        Path.join(dir, "data", "Patient.000.ndjson"),
        '{"resourceType":"Patient","id":"a","identifier":[{"value":SSN-123-45-6789}]}\n',
      )
      const e = yield* Effect.flip(
        Organized.remember(
          dir,
          [
            {
              type: "Patient",
              path: "data/Patient.000.ndjson",
              count: 1,
              bytes: 1,
              sha256: "x",
              compression: "none",
            },
          ],
          "Patient",
          new Set(),
        ),
      )
      assert.include(e.message, "data/Patient.000.ndjson")
      assert.include(e.message, "is not JSON")
      assert.notInclude(e.message, "SSN-123")
      NFS.rmSync(dir, { recursive: true, force: true })
    }),
  )

  it.scoped("distribute with gzip writes .ndjson.gz files whose sha256 is of the compressed bytes", () =>
    Effect.gen(function* () {
      const dir = yield* setup([[header("Patient/a"), patient("a"), obs("1", "Patient/a")]])
      const result = yield* run(dir, 0, new Set(), true)
      assert.deepStrictEqual(
        result.files.map((f) => [f.path, f.compression]),
        [
          ["data/Observation.002.ndjson.gz", "gzip"],
          ["data/Patient.000.ndjson.gz", "gzip"],
        ],
      )
      for (const f of result.files) {
        const bytes = NFS.readFileSync(Path.join(dir, f.path))
        assert.strictEqual(createHash("sha256").update(bytes).digest("hex"), f.sha256)
      }
      assert.deepStrictEqual(read(dir, "data/Patient.000.ndjson.gz"), [patient("a")])
    }),
  )

  it.scoped("a resource type that is not a type name fails InvalidFile (never a file name)", () =>
    Effect.gen(function* () {
      // 2 MB of Observations first: the Observation file is open when the bad line (a later chunk) comes
      const filler = Array.from({ length: 2000 }, (_, i) =>
        JSON.stringify({
          resourceType: "Observation",
          id: `f${i}`,
          subject: { reference: "Patient/a" },
          note: "x".repeat(1000),
        }),
      )
      const dir = yield* setup([
        [
          header("Patient/a"),
          patient("a"),
          ...filler,
          JSON.stringify({ resourceType: "../../etc/x", id: "1" }),
        ],
      ])
      const exit = yield* Effect.exit(run(dir, 0, new Set()))
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
        assert.instanceOf(exit.cause.error, ExportError)
        assert.strictEqual(exit.cause.error.reason, "InvalidFile")
        assert.match(exit.cause.error.detail, /staging\/organized\.000\.ndjson:2003/)
      } else assert.fail("expected a typed failure")
      assert.deepStrictEqual(NFS.readdirSync(Path.join(dir, "data")), [])
    }),
  )

  it.scoped(
    "makeStaging fsyncs the archive directory, also when the staging directory is there already (a run that crashed before that fsync)",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const log = yield* fsyncLog
        for (let run = 0; run < 2; run++) {
          log.length = 0
          yield* Organized.makeStaging(dir)
          assert.isTrue(NFS.statSync(Path.join(dir, Organized.STAGING)).isDirectory())
          assert.deepStrictEqual(log, [`sync ${dir}`], `run ${run}`)
        }
      }),
  )
})
