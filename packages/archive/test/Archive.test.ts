import * as ChildProcess from "node:child_process"
import { createHash } from "node:crypto"
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import * as Zlib from "node:zlib"
import { describe, expect, it } from "@effect/vitest"
import * as Ndjson from "@ferry/core/Ndjson"
import { Chunk, Effect, Exit, Fiber, Scope, Stream } from "effect"
import * as Archive from "../src/Archive.js"
import * as Attachments from "../src/Attachments.js"
import * as Manifest from "../src/Manifest.js"
import { mode, tempDir } from "./helpers.js"

const init: Manifest.Init = {
  tool: { name: "ferry", version: "0.1.0" },
  source: { baseUrl: "http://127.0.0.1:1/fhir", fhirVersion: "4.0.1" },
  request: { level: "system", url: "http://127.0.0.1:1/fhir/$export", parameters: { _type: ["Patient"] } },
}

const patients = (n: number) =>
  Stream.fromIterable(
    Array.from({ length: n }, (_, i) => ({ resourceType: "Patient", id: `p${i}`, name: [{ text: "Zoé" }] })),
  )

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex")

const newArchive = Effect.gen(function* () {
  const dir = Path.join(yield* tempDir, "archive")
  yield* Archive.create(dir, init)
  return dir
})

describe("Archive", () => {
  it.scoped("create lays out 0700 directories and a 0600 manifest that open() validates", () =>
    Effect.gen(function* () {
      const dir = yield* newArchive
      for (const d of ["", "data", "deleted", "errors", "attachments"])
        expect(mode(Path.join(dir, d))).toBe(0o700)
      expect(mode(Path.join(dir, "manifest.json"))).toBe(0o600)
      const m = yield* Archive.open(dir)
      expect(m).toMatchObject({
        format: "ferry-archive/3",
        complete: false,
        files: [],
        attachments: { count: 0, bytes: 0 },
      })
      expect(m.request.parameters).toEqual({ _type: ["Patient"] })
      // an archive of the formats before packs and before the manifest's checksum is read, and says /3 once this
      // ferry writes to it
      const manifestPath = Path.join(dir, "manifest.json")
      for (const format of ["ferry-archive/1", "ferry-archive/2"]) {
        const older = { ...JSON.parse(NFS.readFileSync(manifestPath, "utf8")), format }
        NFS.writeFileSync(manifestPath, JSON.stringify(older))
        expect((yield* Archive.open(dir)).format).toBe(format)
        yield* Archive.updateManifest(dir, (x) => x)
        expect(JSON.parse(NFS.readFileSync(manifestPath, "utf8")).format).toBe("ferry-archive/3")
      }
      const again = yield* Effect.flip(Archive.create(dir, init))
      expect(again.reason).toBe("Exists")
    }),
  )

  it.scoped(
    "a folder that was there keeps its mode when it is refused (not empty), and becomes 0700 when the archive goes in it",
    () =>
      Effect.gen(function* () {
        const shared = Path.join(yield* tempDir, "shared")
        NFS.mkdirSync(shared)
        NFS.chmodSync(shared, 0o1777)
        NFS.writeFileSync(Path.join(shared, "someone-elses-file"), "")
        yield* Archive.lock(shared)
        expect((yield* Effect.flip(Archive.create(shared, init))).reason).toBe("Exists")
        expect(NFS.statSync(shared).mode & 0o7777).toBe(0o1777)
        const empty = Path.join(yield* tempDir, "empty")
        NFS.mkdirSync(empty)
        NFS.chmodSync(empty, 0o755)
        yield* Archive.lock(empty)
        expect(mode(empty)).toBe(0o755)
        yield* Archive.create(empty, init)
        expect(mode(empty)).toBe(0o700)
      }),
  )

  it.scoped("lock first, then create: the lock may precede the archive in a new directory", () =>
    Effect.gen(function* () {
      const dir = Path.join(yield* tempDir, "new", "archive")
      yield* Archive.lock(dir)
      expect(mode(dir)).toBe(0o700)
      const m = yield* Archive.create(dir, init)
      expect(m.complete).toBe(false)
    }),
  )

  it.scoped("open refuses a directory without a manifest, a foreign format and a broken manifest", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      expect((yield* Effect.flip(Archive.open(dir))).reason).toBe("NotAnArchive")
      NFS.writeFileSync(Path.join(dir, "manifest.json"), JSON.stringify({ format: "other/2" }))
      const foreign = yield* Effect.flip(Archive.open(dir))
      expect(foreign.reason).toBe("NotAnArchive")
      expect(foreign.message).toContain(
        'format is "other/2", this ferry reads ferry-archive/1, ferry-archive/2 and ferry-archive/3',
      )
      // not an object, or no format: said as such (never "format is undefined")
      for (const [text, said] of [
        ["[]", "is not a JSON object (it holds an array)"],
        ["null", "is not a JSON object (it holds null)"],
        ['"hi"', "is not a JSON object (it holds a string)"],
        ["{}", 'has no "format", so it is not a Ferry archive\'s manifest'],
      ] as const) {
        NFS.writeFileSync(Path.join(dir, "manifest.json"), text)
        const e = yield* Effect.flip(Archive.open(dir))
        expect([e.reason, e.message.includes(said), e.message.includes("undefined")]).toEqual([
          "NotAnArchive",
          true,
          false,
        ])
      }
      NFS.writeFileSync(
        Path.join(dir, "manifest.json"),
        JSON.stringify({ format: "ferry-archive/1", complete: "yes" }),
      )
      expect((yield* Effect.flip(Archive.open(dir))).reason).toBe("Corrupt")
      NFS.writeFileSync(Path.join(dir, "manifest.json"), "{")
      expect((yield* Effect.flip(Archive.open(dir))).reason).toBe("Corrupt")
    }),
  )

  it.scoped("a manifest with a wrong-typed field is one sentence naming the field, not a schema tree", () =>
    Effect.gen(function* () {
      const dir = yield* newArchive
      const e = yield* Archive.writeFile(dir, { section: "files", type: "Patient" }, patients(2))
      yield* Archive.updateManifest(dir, (m) => Manifest.addFiles(m, "files", [e]))
      const path = Path.join(dir, "manifest.json")
      const json = JSON.parse(NFS.readFileSync(path, "utf8"))
      json.files[0].count = "2"
      NFS.writeFileSync(path, JSON.stringify(json))
      const bad = yield* Effect.flip(Archive.readManifest(dir))
      expect(bad.reason).toBe("Corrupt")
      expect(bad.message).toBe(
        `${path}: expected a Ferry archive manifest; invalid at files.0.count; the archive is damaged: restore that file from a copy, or export again`,
      )
      // a file's type is a resource type name (paths are made of it): nothing that climbs out of the archive
      json.files[0].count = 2
      json.files[0].type = "../../../escaped"
      NFS.writeFileSync(path, JSON.stringify(json))
      const escaping = yield* Effect.flip(Archive.readManifest(dir))
      expect(escaping.reason).toBe("Corrupt")
      expect(escaping.message).toContain("invalid at files.0.type")
      // the source's base is what references and attachment URLs resolve against: an http(s) URL
      json.files[0].type = "Patient"
      for (const baseUrl of ["not a url", "file:///etc", "/fhir"]) {
        NFS.writeFileSync(path, JSON.stringify({ ...json, source: { baseUrl } }))
        const base = yield* Effect.flip(Archive.readManifest(dir))
        expect([base.reason, base.message.includes("invalid at source.baseUrl")]).toEqual(["Corrupt", true])
      }
    }),
  )

  it.scoped(
    "a manifest entry whose path leaves the archive, or its section's directory, is refused when the manifest is read",
    () =>
      Effect.gen(function* () {
        const dir = yield* newArchive
        const e = yield* Archive.writeFile(dir, { section: "files", type: "Patient" }, patients(2))
        const d = yield* Archive.writeFile(
          dir,
          { section: "deleted", type: "Bundle" },
          Stream.make({ resourceType: "Bundle", type: "transaction", entry: [] }),
        )
        yield* Archive.updateManifest(dir, (m) =>
          Manifest.addFiles(Manifest.addFiles(m, "files", [e]), "deleted", [d]),
        )
        expect((yield* Archive.readManifest(dir)).files).toHaveLength(1)
        const path = Path.join(dir, "manifest.json")
        const good = NFS.readFileSync(path, "utf8")
        // the same bytes outside the archive, checksums matching: a reader must never open it
        NFS.copyFileSync(Path.join(dir, e.path), Path.join(dir, "..", "outside.ndjson"))
        for (const [section, rel, problem] of [
          ["files", "../outside.ndjson", "leaves the archive"],
          ["files", "data/../../outside.ndjson", "leaves the archive"],
          ["files", Path.join(dir, "..", "outside.ndjson"), "leaves the archive"],
          ["files", "deleted/Bundle.000.ndjson", "is not in data/"],
          ["deleted", "data/Patient.000.ndjson", "is not in deleted/"],
        ] as const) {
          const json = JSON.parse(good)
          json[section][0].path = rel
          NFS.writeFileSync(path, JSON.stringify(json))
          const bad = yield* Effect.flip(Archive.readManifest(dir))
          expect([rel, bad.reason]).toEqual([rel, "Corrupt"])
          expect(bad.message).toBe(
            `${path}: the path of ${section}.0 (${rel}) ${problem}; the archive is damaged: restore that file from a copy, or export again`,
          )
        }
      }),
  )

  it.scoped("a data file that is not valid gzip is damage, not an I/O problem", () =>
    Effect.gen(function* () {
      const dir = yield* newArchive
      const e = yield* Archive.writeFile(
        dir,
        { section: "files", type: "Patient", compression: "gzip" },
        patients(500),
      )
      const file = Path.join(dir, e.path)
      const whole = NFS.readFileSync(file)
      for (const [bytes, zlib] of [
        [whole.subarray(0, whole.length - 20), "unexpected end of file"],
        [Buffer.from('{"resourceType":"Patient"}\n'), "incorrect header check"],
      ] as const) {
        NFS.writeFileSync(file, bytes)
        const entry = { ...e, bytes: bytes.length, sha256: sha256(bytes) }
        for (const read of [Archive.resources(dir, entry), Archive.lines(dir, entry)] as const) {
          const bad = yield* Effect.flip(
            Stream.runDrain(read as Stream.Stream<unknown, Archive.ArchiveError>),
          )
          expect(bad.reason).toBe("Corrupt")
          expect(bad.message).toBe(
            `data/Patient.000.ndjson.gz: the file is not valid gzip (${zlib}); the archive is damaged: restore that file from a copy, or export again`,
          )
        }
        // a reader of the file itself (import reads the archive's files so) says the same
        const direct = yield* Effect.flip(Stream.runDrain(Ndjson.readFile(file, { label: e.path })))
        expect(direct.message).toBe(
          `data/Patient.000.ndjson.gz: the file is not valid gzip (${zlib}); the file is damaged, restore it or export again`,
        )
      }
    }),
  )

  it.scoped(
    "writeManifest replaces the file atomically; a crashed tmp write leaves the old manifest readable",
    () =>
      Effect.gen(function* () {
        const dir = yield* newArchive
        const m = yield* Archive.readManifest(dir)
        // a crash while writing the next version leaves only a torn .tmp behind
        NFS.writeFileSync(Path.join(dir, "manifest.json.tmp"), '{"format":"ferry-archive/1","compl')
        expect(yield* Archive.readManifest(dir)).toEqual(m)
        const next = yield* Archive.updateManifest(dir, (x) => ({
          ...x,
          complete: true,
          transactionTime: "2026-01-01T00:00:00Z",
        }))
        expect(yield* Archive.readManifest(dir)).toEqual(next)
        expect(NFS.existsSync(Path.join(dir, "manifest.json.tmp"))).toBe(false)
        expect(mode(Path.join(dir, "manifest.json"))).toBe(0o600)
      }),
  )

  it.scoped("writeFile numbers files per type and its count/bytes/sha256 match a recomputation", () =>
    Effect.gen(function* () {
      const dir = yield* newArchive
      const a = yield* Archive.writeFile(dir, { section: "files", type: "Patient" }, patients(1500))
      const b = yield* Archive.writeFile(
        dir,
        { section: "files", type: "Patient", compression: "gzip" },
        patients(3),
      )
      const c = yield* Archive.writeFile(
        dir,
        { section: "errors", type: "OperationOutcome" },
        Stream.make('{"resourceType":"OperationOutcome","issue":[]}'),
      )
      expect([a.path, b.path, c.path]).toEqual([
        "data/Patient.000.ndjson",
        "data/Patient.001.ndjson.gz",
        "errors/OperationOutcome.000.ndjson",
      ])
      for (const e of [a, b, c]) {
        const disk = NFS.readFileSync(Path.join(dir, e.path))
        expect(e.bytes).toBe(disk.length)
        expect(e.sha256).toBe(sha256(disk))
        expect(mode(Path.join(dir, e.path))).toBe(0o600)
      }
      expect([a.count, b.count, c.count]).toEqual([1500, 3, 1])
      expect(
        Zlib.gunzipSync(NFS.readFileSync(Path.join(dir, b.path)))
          .toString()
          .split("\n"),
      ).toHaveLength(4)
      expect(NFS.readdirSync(Path.join(dir, "data")).filter((n) => n.endsWith(".part"))).toEqual([])

      const back = Chunk.toReadonlyArray(yield* Stream.runCollect(Archive.resources(dir, b)))
      expect(back.map((r) => [r.file, r.line, r.value.id])).toEqual([
        ["data/Patient.001.ndjson.gz", 1, "p0"],
        ["data/Patient.001.ndjson.gz", 2, "p1"],
        ["data/Patient.001.ndjson.gz", 3, "p2"],
      ])
      const m = yield* Archive.updateManifest(dir, (x) =>
        Manifest.addFiles(Manifest.addFiles(x, "files", [a, b]), "errors", [c]),
      )
      expect(Manifest.counts(m).get("Patient")).toBe(1503)
    }),
  )

  it.scoped("concurrent writers of one type get distinct files", () =>
    Effect.gen(function* () {
      const dir = yield* newArchive
      const entries = yield* Effect.forEach(
        [1, 2, 3, 4, 5, 6],
        (n) =>
          Archive.writeFile(
            dir,
            { section: "files", type: "Observation" },
            patients(n).pipe(Stream.map((p) => ({ ...p, resourceType: "Observation" }))),
          ),
        { concurrency: 6 },
      )
      expect(new Set(entries.map((e) => e.path)).size).toBe(6)
      expect(entries.map((e) => e.count).sort()).toEqual([1, 2, 3, 4, 5, 6])
    }),
  )

  it.scoped("a bad line read back is an ArchiveError with file:line; a bad type name is refused", () =>
    Effect.gen(function* () {
      const dir = yield* newArchive
      const e = yield* Archive.writeFile(dir, { section: "files", type: "Patient" }, patients(2))
      const short = yield* Effect.flip(Stream.runDrain(Archive.resources(dir, { ...e, count: 3 })))
      expect(short.message).toContain("data/Patient.000.ndjson: holds 2 resources but the manifest says 3")
      // the raw lines, counted the same way
      expect(Chunk.toReadonlyArray(yield* Stream.runCollect(Archive.lines(dir, e)))).toHaveLength(2)
      const shortLines = yield* Effect.flip(Stream.runDrain(Archive.lines(dir, { ...e, count: 3 })))
      expect(shortLines.message).toContain(
        "data/Patient.000.ndjson: holds 2 resources but the manifest says 3",
      )
      NFS.appendFileSync(Path.join(dir, e.path), '{"resourceType":"Observation"}\n')
      const err = yield* Effect.flip(Stream.runDrain(Archive.resources(dir, { ...e, count: 3 })))
      expect([err.reason, err.path, err.line]).toEqual(["Corrupt", "data/Patient.000.ndjson", 3])
      expect(err.message).toContain("data/Patient.000.ndjson:3: expected Patient, found Observation")
      const bad = yield* Effect.flip(Archive.writeFile(dir, { section: "files", type: "../x" }, patients(1)))
      expect(bad.reason).toBe("Corrupt")
    }),
  )

  it.scoped(
    "checksums.sha256 is sha256sum-compatible and verifyChecksums finds changed, missing and unlisted files",
    () =>
      Effect.gen(function* () {
        const dir = yield* newArchive
        const a = yield* Archive.writeFile(dir, { section: "files", type: "Patient" }, patients(10))
        const b = yield* Archive.writeFile(
          dir,
          { section: "deleted", type: "Bundle" },
          Stream.make({ resourceType: "Bundle", type: "transaction", entry: [] }),
        )
        const blob = yield* Attachments.put(dir, Stream.make(new TextEncoder().encode("%PDF-1.4 hello")), {
          contentType: "application/pdf",
        })
        const m = yield* Archive.updateManifest(dir, (x) =>
          Manifest.addFiles(Manifest.addFiles(x, "files", [a]), "deleted", [b]),
        )
        // the data and deleted files, the blob, and what says which bytes are which: the attachment index and
        // the manifest
        expect(yield* Archive.writeChecksums(dir, m)).toBe(5)
        expect(mode(Path.join(dir, "checksums.sha256"))).toBe(0o600)
        expect(
          NFS.readFileSync(Path.join(dir, "checksums.sha256"), "utf8")
            .trimEnd()
            .split("\n")
            .map((r) => r.split("  ")[1]),
        ).toEqual([
          Attachments.relativePath(blob.sha256),
          "attachments/index.ndjson",
          "data/Patient.000.ndjson",
          "deleted/Bundle.000.ndjson",
          "manifest.json",
        ])
        expect(yield* Archive.verifyChecksums(dir)).toEqual([])
        const sum = ChildProcess.spawnSync("sha256sum", ["-c", "checksums.sha256"], {
          cwd: dir,
          encoding: "utf8",
        })
        if (sum.error === undefined) {
          expect(sum.status).toBe(0)
          expect(sum.stdout).toContain(`${Attachments.relativePath(blob.sha256)}: OK`)
          expect(sum.stdout).toContain("attachments/index.ndjson: OK")
          expect(sum.stdout).toContain("manifest.json: OK")
        }
        // the index edited (which URL is which blob): found, by verifyChecksums and by an import's check
        const indexPath = Path.join(dir, "attachments/index.ndjson")
        const indexText = NFS.readFileSync(indexPath, "utf8")
        NFS.writeFileSync(indexPath, indexText.replace("application/pdf", "application/xml"))
        expect((yield* Archive.verifyChecksums(dir)).map((p) => [p.path, p.problem])).toEqual([
          ["attachments/index.ndjson", "Changed"],
        ])
        expect(
          (yield* Archive.verifyDataFiles(dir, m, { checksums: true })).map((p) => [p.path, p.problem]),
        ).toEqual([["attachments/index.ndjson", "Changed"]])
        NFS.writeFileSync(indexPath, indexText)
        expect(yield* Archive.verifyDataFiles(dir, m, { checksums: true })).toEqual([])

        NFS.appendFileSync(Path.join(dir, a.path), "\n")
        NFS.rmSync(Path.join(dir, b.path))
        const c = yield* Archive.writeFile(dir, { section: "files", type: "Patient" }, patients(1))
        yield* Archive.updateManifest(dir, (x) => Manifest.addFiles(x, "files", [c]))
        const problems = yield* Archive.verifyChecksums(dir)
        // (the manifest changed too, by the entry added: said last, after what the change did)
        expect(problems.map((p) => [p.path, p.problem])).toEqual([
          ["data/Patient.000.ndjson", "Changed"],
          ["deleted/Bundle.000.ndjson", "Missing"],
          ["data/Patient.001.ndjson", "Unlisted"],
          ["manifest.json", "Changed"],
        ])
      }),
  )

  it.scoped(
    "checksums.sha256 lists every data file and each distinct blob once, in path order (over a thousand blobs)",
    () =>
      Effect.gen(function* () {
        const dir = yield* newArchive
        const a = yield* Archive.writeFile(dir, { section: "files", type: "Patient" }, patients(3))
        const store = yield* Attachments.store(dir)
        const expected = new Map<string, string>([[a.path, a.sha256]])
        let bytes = 0
        for (let i = 0; i < 1200; i++) {
          // every 10th blob repeats an earlier one (same bytes, another URL): listed once; streamed in, so
          // each is a file of its own (a pack is one row: the test below)
          const body = Buffer.from(`blob ${i % 10 === 9 ? i - 1 : i}`)
          const stored = yield* store.store(Stream.make(body), { sourceUrl: `http://src/Binary/${i}` })
          if (stored.created) bytes += body.length
          expected.set(Attachments.relativePath(stored.sha256), stored.sha256)
        }
        yield* store.commit
        expect(yield* Attachments.totals(dir)).toEqual({ count: 1080, bytes })
        const m = yield* Archive.updateManifest(dir, (x) => Manifest.addFiles(x, "files", [a]))
        for (const meta of ["attachments/index.ndjson", "manifest.json"])
          expected.set(
            meta,
            createHash("sha256")
              .update(NFS.readFileSync(Path.join(dir, meta)))
              .digest("hex"),
          )
        expect(yield* Archive.writeChecksums(dir, m)).toBe(1083)
        const lines = NFS.readFileSync(Path.join(dir, "checksums.sha256"), "utf8").trimEnd().split("\n")
        const rows = lines.map((l) => l.split("  ") as [string, string])
        expect(rows.map(([, path]) => path)).toEqual([...expected.keys()].sort())
        for (const [sha256, path] of rows) expect(expected.get(path)).toBe(sha256)
        expect(yield* Archive.verifyChecksums(dir)).toEqual([])
        // rows checked as they are read, merged with what should be listed: one row dropped is reported
        const file = Path.join(dir, "checksums.sha256")
        const dropped = lines[800]!.split("  ")[1]!
        NFS.writeFileSync(file, `${lines.filter((_, i) => i !== 800).join("\n")}\n`)
        expect((yield* Archive.verifyChecksums(dir)).map((m) => [m.path, m.problem])).toEqual([
          [dropped, "Unlisted"],
        ])
        // a row with another hash (the file itself intact): the row is what changed, said once as such (not as
        // a changed file: its bytes are what the archive records)
        const [h7, p7] = lines[700]!.split("  ") as [string, string]
        const other = h7.replace(/^./, (c) => (c === "0" ? "1" : "0"))
        NFS.writeFileSync(file, `${lines.map((l, i) => (i === 700 ? `${other}  ${p7}` : l)).join("\n")}\n`)
        expect(
          (yield* Archive.verifyChecksums(dir)).map((m) => [m.path, m.problem, m.expected, m.actual]),
        ).toEqual([[p7, "Unlisted", h7, other]])
        // a file edited out of path order is compared through a map of its rows: the same answers
        NFS.writeFileSync(file, `${[...lines].reverse().join("\n")}\n`)
        expect(yield* Archive.verifyChecksums(dir)).toEqual([])
        NFS.writeFileSync(
          file,
          `${[...lines]
            .reverse()
            .filter((l) => !l.endsWith(dropped))
            .join("\n")}\n`,
        )
        expect((yield* Archive.verifyChecksums(dir)).map((m) => [m.path, m.problem])).toEqual([
          [dropped, "Unlisted"],
        ])
      }),
  )

  it.scoped(
    "small blobs go into a pack: one checksum row for it, each blob read back from its slice; damage is found",
    () =>
      Effect.gen(function* () {
        const dir = yield* newArchive
        const small = Array.from({ length: 50 }, (_, i) => Buffer.from(`note ${i} `.repeat(i + 1)))
        const big = Buffer.alloc(Attachments.PACK_MAX + 1, 7)
        const stored = yield* Effect.scoped(
          Effect.gen(function* () {
            const store = yield* Attachments.store(dir)
            const out = []
            for (const b of small)
              out.push(yield* store.storeBytes(b, { sourceUrl: `http://src/${out.length}` }))
            const loose = yield* store.storeBytes(big, { sourceUrl: "http://src/big" })
            yield* store.commit
            return { out, loose }
          }),
        )
        const index = yield* Attachments.readIndex(dir)
        expect(index.get(stored.out[3]!.sha256)).toMatchObject({
          pack: "000001.pack",
          size: small[3]!.length,
        })
        expect(index.get(stored.loose.sha256)?.pack).toBeUndefined()
        expect(NFS.existsSync(Path.join(dir, Attachments.relativePath(stored.loose.sha256)))).toBe(true)
        expect(NFS.existsSync(Path.join(dir, Attachments.relativePath(stored.out[0]!.sha256)))).toBe(false)
        const pack = Path.join(dir, Attachments.packPath("000001.pack"))
        expect(mode(pack)).toBe(0o600)
        expect(NFS.statSync(pack).size).toBe(small.reduce((n, b) => n + b.length, 0))
        for (const [i, s] of stored.out.entries()) {
          expect(yield* Attachments.has(dir, s.sha256)).toBe(true)
          // by sha256 alone (the index is looked up) and by the index line
          for (const at of [s.sha256, index.get(s.sha256)!]) {
            const bytes = Buffer.concat([...(yield* Stream.runCollect(Attachments.read(dir, at)))])
            expect(bytes.equals(small[i]!)).toBe(true)
          }
        }
        // a second store (a resumed run) starts a pack of its own
        yield* Effect.scoped(
          Effect.gen(function* () {
            const store = yield* Attachments.store(dir)
            yield* store.storeBytes(Buffer.from("later"), { sourceUrl: "http://src/later" })
            yield* store.commit
            // stored, never committed: bytes in its pack that no index line names
            yield* store.storeBytes(Buffer.from("never committed"))
          }),
        )
        const later = yield* Attachments.readIndex(dir)
        expect([...later.values()].filter((l) => l.pack === "000002.pack").map((l) => l.size)).toEqual([5])
        const m = yield* Archive.updateManifest(dir, (x) => x)
        expect(yield* Archive.writeChecksums(dir, m)).toBe(5)
        const rows = NFS.readFileSync(Path.join(dir, "checksums.sha256"), "utf8").trimEnd().split("\n")
        expect(rows.map((r) => r.split("  ")[1])).toEqual([
          Attachments.relativePath(stored.loose.sha256),
          "attachments/index.ndjson",
          "attachments/packs/000001.pack",
          "attachments/packs/000002.pack",
          "manifest.json",
        ])
        expect(yield* Archive.verifyChecksums(dir)).toEqual([])
        // one byte of the first pack changed: its row no longer matches, and the blob there fails its read
        const fd = NFS.openSync(pack, "r+")
        const at = index.get(stored.out[3]!.sha256)!.offset!
        NFS.writeSync(fd, Buffer.from("X"), 0, 1, at)
        NFS.closeSync(fd)
        expect((yield* Archive.verifyChecksums(dir)).map((x) => [x.path, x.problem])).toContainEqual([
          "attachments/packs/000001.pack",
          "Changed",
        ])
        const damaged = yield* Effect.flip(Stream.runCollect(Attachments.read(dir, stored.out[3]!.sha256)))
        expect(damaged.message).toMatch(/does not hold the bytes its name says/)
        // "damaged" said once (the detail does not repeat the advice)
        expect(damaged.message.match(/damaged/g)).toHaveLength(1)
        const intact = yield* Stream.runCollect(Attachments.read(dir, stored.out[4]!.sha256))
        expect(Buffer.concat([...intact]).equals(small[4]!)).toBe(true)
        // the pack gone: reported as missing (not a failure of the check itself)
        NFS.rmSync(pack)
        expect((yield* Archive.verifyChecksums(dir)).map((x) => [x.path, x.problem])).toContainEqual([
          "attachments/packs/000001.pack",
          "Missing",
        ])
        // a blob of it read: the archive is damaged (not a disk or permission problem), said once
        const lost = yield* Effect.flip(Stream.runCollect(Attachments.read(dir, stored.out[4]!.sha256)))
        expect(lost.reason).toBe("Corrupt")
        expect(lost.message).toContain(
          "the pack holding this blob is missing; the archive is damaged: restore",
        )
        // and writing the checksums again says which pack is gone
        const gone = yield* Effect.flip(Archive.writeChecksums(dir, m))
        expect(gone.message).toMatch(/000001\.pack.*places blobs in this pack/)
        // a blob of its own gone: the archive is damaged too (not "check the path, permissions and disk space")
        NFS.rmSync(Path.join(dir, Attachments.relativePath(stored.loose.sha256)))
        const lostBlob = yield* Effect.flip(Stream.runCollect(Attachments.read(dir, stored.loose.sha256)))
        expect([lostBlob.reason, lostBlob.path]).toEqual([
          "Corrupt",
          Attachments.relativePath(stored.loose.sha256),
        ])
        expect(lostBlob.message).toContain(
          "the blob is missing (the attachment index names it); the archive is damaged: restore",
        )
      }),
  )

  it.scoped(
    "the lock keeps a second writer out, is released with the scope, and a dead holder's lock is taken over",
    () =>
      Effect.gen(function* () {
        const dir = yield* newArchive
        const lockPath = Path.join(dir, ".lock")
        const scope = yield* Scope.make()
        yield* Archive.lock(dir).pipe(Scope.extend(scope))
        expect(mode(lockPath)).toBe(0o600)
        expect(JSON.parse(NFS.readFileSync(lockPath, "utf8")).pid).toBe(process.pid)
        const second = yield* Effect.flip(Effect.scoped(Archive.lock(dir)))
        expect(second.reason).toBe("Locked")
        expect(second.message).toContain(`locked by pid ${process.pid}`)
        yield* Scope.close(scope, Exit.void)
        expect(NFS.existsSync(lockPath)).toBe(false)

        // a lock left by a process that has exited, plus the .part it was writing
        const dead = ChildProcess.spawnSync(process.execPath, ["-e", "0"]).pid
        NFS.writeFileSync(lockPath, JSON.stringify({ pid: dead, host: OS.hostname(), startedAt: "then" }))
        NFS.writeFileSync(Path.join(dir, "data", "Patient.000.ndjson.part"), "half")
        yield* Effect.scoped(
          Effect.gen(function* () {
            yield* Archive.lock(dir)
            expect(JSON.parse(NFS.readFileSync(lockPath, "utf8")).pid).toBe(process.pid)
            expect(NFS.existsSync(Path.join(dir, "data", "Patient.000.ndjson.part"))).toBe(false)
          }),
        )
        // a holder that exited but is not reaped yet (a zombie: its parent, here a `sleep`, never waits for it)
        const parent = ChildProcess.spawn("sh", ["-c", "sleep 0 & echo $!; exec sleep 5"])
        const zombie = yield* Effect.promise(
          () =>
            new Promise<number>((resolve) =>
              parent.stdout.once("data", (b: Buffer) => resolve(Number(String(b).trim()))),
            ),
        )
        // (real time: the test's clock is a TestClock)
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 300)))
        expect(NFS.readFileSync(`/proc/${zombie}/stat`, "utf8")).toMatch(/\) Z /)
        NFS.writeFileSync(lockPath, JSON.stringify({ pid: zombie, host: OS.hostname(), startedAt: "then" }))
        yield* Effect.scoped(Archive.lock(dir))
        parent.kill()
        // a live process on another host can't be checked: stay out
        NFS.writeFileSync(lockPath, JSON.stringify({ pid: 1, host: "elsewhere", startedAt: "then" }))
        expect((yield* Effect.flip(Effect.scoped(Archive.lock(dir)))).reason).toBe("Locked")
      }),
  )

  it.scopedLive(
    "the holder renews its lock; another host's lock is taken over once it goes unrenewed for three periods, kept while renewed (a job rescheduled in a new container)",
    () =>
      Effect.gen(function* () {
        const dir = yield* newArchive
        const lockPath = Path.join(dir, ".lock")
        const renewMillis = 40
        // the holder renews the file's mtime
        yield* Effect.scoped(
          Effect.gen(function* () {
            yield* Archive.lock(dir, { renewMillis })
            expect(JSON.parse(NFS.readFileSync(lockPath, "utf8")).renewEvery).toBe(renewMillis)
            const past = new Date(Date.now() - 60_000)
            NFS.utimesSync(lockPath, past, past)
            yield* Effect.sleep(3 * renewMillis)
            expect(Date.now() - NFS.statSync(lockPath).mtimeMs).toBeLessThan(30_000)
          }),
        )
        // a lock of a ferry on another host (a container since rescheduled) that no longer renews it
        const elsewhere = JSON.stringify({
          pid: 1,
          host: "pod-7f9c",
          startedAt: "then",
          renewEvery: renewMillis,
        })
        NFS.writeFileSync(lockPath, elsewhere)
        yield* Effect.scoped(
          Effect.gen(function* () {
            yield* Archive.lock(dir, { renewMillis })
            expect(JSON.parse(NFS.readFileSync(lockPath, "utf8")).pid).toBe(process.pid)
          }),
        )
        /**
         * Tries to take the lock while another ferry renews `renewed` every half period (`replaceWith`: that
         * lock is written after one period, instead of being there from the start); the failure.
         */
        const lockWhileRenewed = (renewed: string, replaceWith = false) =>
          Effect.acquireUseRelease(
            Effect.sync(() => {
              const replacing = replaceWith
                ? setTimeout(() => NFS.writeFileSync(lockPath, renewed), renewMillis)
                : undefined
              const renewing = setInterval(() => {
                const now = new Date()
                if (NFS.readFileSync(lockPath, "utf8") === renewed) NFS.utimesSync(lockPath, now, now)
              }, renewMillis / 2)
              return { replacing, renewing }
            }),
            () => Effect.flip(Effect.scoped(Archive.lock(dir, { renewMillis }))),
            ({ replacing, renewing }) =>
              Effect.sync(() => {
                clearTimeout(replacing)
                clearInterval(renewing)
              }),
          )
        // one that is renewed while watched stays
        NFS.writeFileSync(lockPath, elsewhere)
        const kept = yield* lockWhileRenewed(elsewhere)
        expect(kept.reason).toBe("Locked")
        expect(kept.message).toContain("renewed while watched")
        expect(NFS.readFileSync(lockPath, "utf8")).toBe(elsewhere)
        // a lock replaced while it was watched (another ferry took it over first) is judged anew, never removed
        NFS.writeFileSync(lockPath, elsewhere)
        const newer = JSON.stringify({ pid: 2, host: "pod-8a1d", startedAt: "now", renewEvery: renewMillis })
        const replaced = yield* lockWhileRenewed(newer, true)
        expect(replaced.message).toContain("locked by pid 2 on pod-8a1d")
        expect(NFS.readFileSync(lockPath, "utf8")).toBe(newer)
        // a lock of this host name in another pid namespace (another container) is watched too, not judged by
        // its pid (which in that namespace may be this very process's); where there is no /proc to tell
        // namespaces and boots apart, the pid judges as before
        if (!NFS.existsSync("/proc/self/ns/pid")) return
        const container = JSON.stringify({
          pid: process.pid,
          host: OS.hostname(),
          startedAt: "then",
          pidNs: "pid:[1]",
          renewEvery: renewMillis,
        })
        NFS.writeFileSync(lockPath, container)
        const keptToo = yield* lockWhileRenewed(container)
        expect(keptToo.message).toContain("renewed while watched")
        NFS.rmSync(lockPath)
      }),
  )

  it.scopedLive(
    "a holder whose lock is taken from it (stalled past three periods, removed by hand) is interrupted: it must not write on",
    () =>
      Effect.gen(function* () {
        const dir = yield* newArchive
        const lockPath = Path.join(dir, ".lock")
        const renewMillis = 30
        const owner = yield* Effect.fork(
          Effect.scoped(Effect.zipRight(Archive.lock(dir, { renewMillis }), Effect.never)),
        )
        yield* Effect.sleep(2 * renewMillis)
        const other = JSON.stringify({ pid: 1, host: "pod-other", startedAt: "now", renewEvery: 10_000 })
        NFS.writeFileSync(lockPath, other)
        const exit = yield* Fiber.await(owner).pipe(Effect.timeout("3 seconds"))
        expect(Exit.isInterrupted(exit)).toBe(true)
        // the other ferry's lock stays
        expect(NFS.readFileSync(lockPath, "utf8")).toBe(other)
      }),
  )

  it.scoped(
    "create in a directory a killed create left (some of its subdirectories, empty, no manifest) goes on; anything else stays refused",
    () =>
      Effect.gen(function* () {
        const dir = Path.join(yield* tempDir, "archive")
        // killed after two of the subdirectories, before the manifest (the lock was held)
        for (const d of ["", "data", "deleted"])
          NFS.mkdirSync(Path.join(dir, d), { recursive: true, mode: 0o700 })
        NFS.writeFileSync(Path.join(dir, ".lock"), "{}")
        const m = yield* Archive.create(dir, init)
        expect(m.complete).toBe(false)
        expect(yield* Archive.open(dir)).toEqual(m)

        // an own subdirectory that holds something, or a name of another's, is not what a killed create leaves
        for (const [what, make] of [
          ["data/x", (d: string) => NFS.writeFileSync(Path.join(d, "data", "x"), "")],
          ["notes", (d: string) => NFS.mkdirSync(Path.join(d, "notes"))],
          ["errors (a file)", (d: string) => NFS.writeFileSync(Path.join(d, "errors"), "")],
        ] as const) {
          const other = Path.join(yield* tempDir, "other")
          NFS.mkdirSync(Path.join(other, "data"), { recursive: true })
          make(other)
          const e = yield* Effect.flip(Archive.create(other, init))
          expect([what, e.reason]).toEqual([what, "Exists"])
          expect(e.message).toContain("is not empty")
        }
      }),
  )

  // where there is no /proc (not Linux) the lock holds pid and host only, and is judged by the pid as before
  it.scoped.skipIf(!NFS.existsSync("/proc/self/stat") || !NFS.existsSync("/proc/sys/kernel/random/boot_id"))(
    "the lock records the boot id and the holder's start time: a lock from another boot, or whose pid now belongs to another process, is taken over",
    () =>
      Effect.gen(function* () {
        const dir = yield* newArchive
        const lockPath = Path.join(dir, ".lock")
        const bootId = NFS.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()
        const startOf = (pid: number) => {
          const stat = NFS.readFileSync(`/proc/${pid}/stat`, "utf8")
          return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19])
        }
        // a live process that is not ferry (what a reused pid looks like)
        const child = ChildProcess.spawn(process.execPath, ["-e", "setTimeout(() => {}, 60_000)"], {
          stdio: "ignore",
        })
        yield* Effect.addFinalizer(() => Effect.sync(() => void child.kill()))
        const pid = child.pid!
        const host = OS.hostname()
        const takes = (lock: object) =>
          Effect.gen(function* () {
            NFS.writeFileSync(lockPath, JSON.stringify({ host, startedAt: "then", ...lock }))
            const exit = yield* Effect.exit(Effect.scoped(Archive.lock(dir)))
            return Exit.isSuccess(exit)
          })
        // its own start time: held
        expect(yield* takes({ pid, bootId, processStart: startOf(pid) })).toBe(false)
        // the pid was given to another process since the lock was taken
        expect(yield* takes({ pid, bootId, processStart: startOf(pid) - 1 })).toBe(true)
        // a lock from before a restart names a pid that runs something else now
        expect(
          yield* takes({ pid, bootId: "3f1c0000-0000-4000-8000-000000000000", processStart: startOf(pid) }),
        ).toBe(true)
        // pid 1, as in a restarted container
        expect(yield* takes({ pid: 1, bootId, processStart: startOf(1) + 1 })).toBe(true)
        // this very process's pid, recorded by another process before a container restart
        expect(yield* takes({ pid: process.pid, bootId, processStart: startOf(process.pid) - 1 })).toBe(true)
        // a lock an older ferry wrote (pid only): as before, a live pid holds it
        expect(yield* takes({ pid })).toBe(false)
        expect(yield* takes({ pid: 1 })).toBe(false)
        // what this ferry records
        NFS.rmSync(lockPath)
        yield* Effect.scoped(
          Effect.gen(function* () {
            yield* Archive.lock(dir)
            expect(JSON.parse(NFS.readFileSync(lockPath, "utf8"))).toMatchObject({
              pid: process.pid,
              bootId,
              processStart: startOf(process.pid),
            })
          }),
        )
      }),
  )

  it.scopedLive(
    "an empty or unreadable lock file (a process killed between creating and writing it) is taken over once it stays so a while; one written meanwhile is judged by what it says",
    () =>
      Effect.gen(function* () {
        const dir = yield* newArchive
        const lockPath = Path.join(dir, ".lock")
        const tornMillis = 60
        for (const torn of ["", '{"pid":']) {
          NFS.writeFileSync(lockPath, torn)
          yield* Effect.scoped(
            Effect.gen(function* () {
              yield* Archive.lock(dir, { tornMillis })
              expect(JSON.parse(NFS.readFileSync(lockPath, "utf8")).pid).toBe(process.pid)
            }),
          )
          expect(NFS.existsSync(lockPath)).toBe(false)
        }
        // being created: it holds another host's lock before the wait is over, which is kept
        NFS.writeFileSync(lockPath, "")
        const other = JSON.stringify({ pid: 1, host: "elsewhere", startedAt: "now" })
        const writing = setTimeout(() => NFS.writeFileSync(lockPath, other), tornMillis / 3)
        const kept = yield* Effect.flip(Effect.scoped(Archive.lock(dir, { tornMillis }))).pipe(
          Effect.ensuring(Effect.sync(() => clearTimeout(writing))),
        )
        expect(kept.reason).toBe("Locked")
        expect(NFS.readFileSync(lockPath, "utf8")).toBe(other)
      }),
  )
})
