import { createHash } from "node:crypto"
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Stream } from "effect"
import * as Attachments from "../src/Attachments.js"
import * as Fs from "../src/internal/fs.js"
import { fsyncLog, mode, tempDir } from "./helpers.js"

const enc = new TextEncoder()
const data = new URL("../../../../shared/data/attachments/", import.meta.url)

describe("Attachments", () => {
  it.scoped("stores by sha256 (0600 in 0700 dirs), with FHIR's base64 sha1, and dedupes by hash", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const bytes = enc.encode("hello attachment")
      const first = yield* Attachments.put(dir, Stream.make(bytes.slice(0, 5), bytes.slice(5)), {
        contentType: "text/plain",
        sourceUrl: "http://src/Binary/1",
      })
      expect(first.sha256).toBe(createHash("sha256").update(bytes).digest("hex"))
      expect(first.sha1).toBe(createHash("sha1").update(bytes).digest("base64"))
      expect(first.sha1).toHaveLength(28)
      expect(first).toMatchObject({ size: bytes.length, created: true })
      const path = Path.join(dir, Attachments.relativePath(first.sha256))
      expect(mode(path)).toBe(0o600)
      expect(mode(Path.dirname(path))).toBe(0o700)
      expect(mode(Path.join(dir, "attachments", "index.ndjson"))).toBe(0o600)

      const second = yield* Attachments.put(dir, Stream.make(bytes), {
        contentType: "text/plain",
        sourceUrl: "http://src/Binary/2",
      })
      expect(second).toMatchObject({ sha256: first.sha256, created: false })
      const third = yield* Attachments.put(dir, Stream.make(bytes))
      expect(third.created).toBe(false)
      expect(NFS.readdirSync(Path.dirname(path))).toEqual([first.sha256])
      expect(NFS.readdirSync(Path.join(dir, "attachments")).filter((n) => n.endsWith(".part"))).toEqual([])

      const index = yield* Attachments.readIndex(dir)
      expect(index.size).toBe(1)
      expect(index.get(first.sha256)).toEqual({
        sha256: first.sha256,
        sha1: first.sha1,
        size: bytes.length,
        contentType: "text/plain",
        sourceUrls: ["http://src/Binary/1", "http://src/Binary/2"],
      })
      expect(yield* Attachments.totals(dir)).toEqual({ count: 1, bytes: bytes.length })
      expect(yield* Attachments.has(dir, first.sha256)).toBe(true)
      expect(yield* Attachments.has(dir, "0".repeat(64))).toBe(false)
      const back = Chunk.toReadonlyArray(yield* Stream.runCollect(Attachments.read(dir, first.sha256)))
      expect(Buffer.concat(back).toString()).toBe("hello attachment")
      // a blob whose bytes no longer hash to its name fails the read
      NFS.writeFileSync(path, "changed attachment")
      const changed = yield* Effect.flip(Stream.runDrain(Attachments.read(dir, first.sha256)))
      expect(changed.reason).toBe("Corrupt")
      expect(changed.message).toContain("the blob does not hold the bytes its name says")
    }),
  )

  it.scoped(
    "a Store indexes its blobs only on commit, once for many, and an uncommitted blob is re-indexed by a later run",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const store = yield* Attachments.store(dir)
        const stored = yield* Effect.forEach(
          Array.from({ length: 40 }, (_, i) => i),
          (i) =>
            store.store(Stream.make(enc.encode(`blob ${i % 30}`)), { sourceUrl: `http://src/Binary/${i}` }),
          { concurrency: 8 },
        )
        expect(stored.filter((s) => s.created)).toHaveLength(30)
        expect(yield* store.pending).toBe(40)
        expect((yield* Attachments.readIndex(dir)).size).toBe(0)
        expect(yield* store.commit).toBe(40)
        expect(yield* store.pending).toBe(0)
        expect(yield* store.commit).toBe(0)
        const index = yield* Attachments.readIndex(dir)
        expect(index.size).toBe(30)
        expect(index.get(stored[0]!.sha256)?.sourceUrls).toEqual([
          "http://src/Binary/0",
          "http://src/Binary/30",
        ])

        // a run that stored a blob and died before its commit: the blob is on disk, not in the index
        const dead = yield* Attachments.store(dir)
        const orphan = yield* dead.store(Stream.make(enc.encode("orphan")), {
          sourceUrl: "http://src/Binary/o",
        })
        expect(yield* Attachments.has(dir, orphan.sha256)).toBe(true)
        const again = yield* Attachments.store(dir)
        const second = yield* again.store(Stream.make(enc.encode("orphan")), {
          sourceUrl: "http://src/Binary/o",
        })
        // the next run stores it again (atomically over the old file) and indexes it
        expect(second.created).toBe(true)
        // a blob bigger than what is held in memory spills to a file and ends the same
        const big = new Uint8Array(3 * 1024 * 1024 + 7).map((_, i) => i % 251)
        const spilled = yield* again.store(Stream.make(big.subarray(0, 1_000_000), big.subarray(1_000_000)))
        expect(spilled.size).toBe(big.length)
        const spilledPath = Path.join(dir, Attachments.relativePath(spilled.sha256))
        expect(NFS.readFileSync(spilledPath).equals(Buffer.from(big))).toBe(true)
        expect(mode(spilledPath)).toBe(0o600)
        yield* again.commit
        expect((yield* Attachments.readIndex(dir)).get(orphan.sha256)?.sourceUrls).toEqual([
          "http://src/Binary/o",
        ])
      }),
  )

  it.scoped(
    "small blobs reach their pack in gathered writes: written by the commit, each at the place its index line names",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const s = yield* Attachments.store(dir)
        // 60 kB each: more than one write's worth before the first commit, and more after it
        const blobs = Array.from({ length: 11 }, (_, i) => Buffer.alloc(60_000 + i, `blob ${i} `))
        const pack = Path.join(dir, Attachments.packPath("000001.pack"))
        for (const b of blobs.slice(0, 7)) yield* s.storeBytes(b)
        // gathered, not yet all written (the part past the last full write waits for the commit)
        expect(NFS.statSync(pack).size).toBeLessThan(blobs.slice(0, 7).reduce((n, b) => n + b.length, 0))
        yield* s.commit
        expect(NFS.statSync(pack).size).toBe(blobs.slice(0, 7).reduce((n, b) => n + b.length, 0))
        for (const b of blobs.slice(7)) yield* s.storeBytes(b)
        yield* s.commit
        const index = yield* Attachments.readIndex(dir)
        expect(NFS.statSync(pack).size).toBe(blobs.reduce((n, b) => n + b.length, 0))
        for (const b of blobs) {
          const line = index.get(createHash("sha256").update(b).digest("hex"))
          expect(line?.pack).toBe("000001.pack")
          const read = Buffer.concat([...(yield* Stream.runCollect(Attachments.read(dir, line!)))])
          expect(read.equals(b)).toBe(true)
        }
      }),
  )

  it.scoped(
    "a commit interrupted midway still indexes what it took (a later URL for the same bytes finds its place)",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const s = yield* Attachments.store(dir)
        const bytes = enc.encode("a small note")
        yield* s.storeBytes(bytes, { sourceUrl: "http://src/a" })
        const commit = yield* Effect.fork(s.commit)
        // (until it waits on the pack's fsync)
        yield* Effect.promise(() => new Promise((r) => setImmediate(r)))
        yield* Fiber.interrupt(commit)
        yield* s.storeBytes(bytes, { sourceUrl: "http://src/b" })
        yield* s.commit
        const line = (yield* Attachments.readIndex(dir)).get(createHash("sha256").update(bytes).digest("hex"))
        expect(line?.sourceUrls).toEqual(["http://src/a", "http://src/b"])
        expect(line?.pack).toBe("000001.pack")
        const read = yield* Stream.runCollect(Attachments.read(dir, line!))
        expect(Buffer.concat([...read]).equals(Buffer.from(bytes))).toBe(true)
      }),
  )

  it.scoped(
    "an index line with a size or pack place that cannot be is damage, not a read outside the pack",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        NFS.mkdirSync(Path.join(dir, "attachments"), { recursive: true })
        const sha256 = "a".repeat(64)
        for (const bad of [
          { size: -5, pack: "000001.pack", offset: 0 },
          { size: 1.5, pack: "000001.pack", offset: 0 },
          { size: 3, pack: "../../x", offset: 0 },
          { size: 3, pack: "000001.pack", offset: -1 },
          { size: 3, pack: "000001.pack" },
        ]) {
          NFS.writeFileSync(
            Path.join(dir, "attachments", "index.ndjson"),
            `${JSON.stringify({ sha256, sha1: "x", sourceUrls: [], ...bad })}\n`,
          )
          const e = yield* Effect.flip(Attachments.readIndex(dir))
          expect([e.reason, e.message], JSON.stringify(bad)).toEqual([
            "Corrupt",
            expect.stringContaining("not a valid attachment index line"),
          ])
        }
      }),
  )

  it.scoped(
    "an index of several read pieces: lines across their edges and one longer than a piece are read whole, a bad line names its number, a torn tail is cut",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        NFS.mkdirSync(Path.join(dir, "attachments"), { recursive: true, mode: 0o700 })
        const index = Path.join(dir, "attachments", "index.ndjson")
        const line = (i: number, urls = 1) =>
          `${JSON.stringify({
            sha256: createHash("sha256").update(String(i)).digest("hex"),
            sha1: "x",
            size: i,
            sourceUrls: Array.from({ length: urls }, (_, k) => `http://src/fhir/Binary/b-${i}-${k}`),
          })}\n`
        // ≈ 2.6 MB: the index is read 1 MiB at a time; line 5000 alone is ≈ 1.5 MB (more than a piece)
        const lines = Array.from({ length: 10_000 }, (_, i) => line(i, i === 4999 ? 40_000 : 1))
        const whole = lines.join("")
        expect(whole.length).toBeGreaterThan(2 * 1024 * 1024 + 1024)
        NFS.writeFileSync(index, `${whole}{"sha256":"ab`)
        const table = yield* Attachments.blobTable(dir)
        expect([table.count, table.bytes]).toEqual([10_000, (9_999 * 10_000) / 2])
        expect(
          (yield* Attachments.readIndex(dir)).get(createHash("sha256").update("4999").digest("hex"))
            ?.sourceUrls,
        ).toHaveLength(40_000)
        // a store opened on it cuts the torn tail where the last whole line ends
        yield* Effect.scoped(Attachments.store(dir))
        expect(NFS.readFileSync(index, "utf8")).toBe(whole)
        // a bad line (the 7,001st) is named by its number
        NFS.writeFileSync(
          index,
          `${lines.slice(0, 7000).join("")}{"sha256":"zz"}\n${lines.slice(7000).join("")}`,
        )
        const e = yield* Effect.flip(Attachments.blobTable(dir))
        expect([e.reason, e.message]).toEqual([
          "Corrupt",
          expect.stringContaining("index.ndjson:7001: not a valid"),
        ])
      }),
  )

  it.scoped("stores a real attachment from the shared data byte for byte", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const files = NFS.readdirSync(data).filter((n) => NFS.statSync(new URL(n, data)).isFile())
      expect(files.length).toBeGreaterThan(0)
      const file = new URL(files[0]!, data)
      const original = NFS.readFileSync(file)
      const stored = yield* Attachments.put(
        dir,
        Stream.fromIterable(
          Array.from({ length: Math.ceil(original.length / 4096) }, (_, i) =>
            original.subarray(i * 4096, (i + 1) * 4096),
          ),
        ),
      )
      expect(stored.size).toBe(original.length)
      expect(NFS.readFileSync(Path.join(dir, Attachments.relativePath(stored.sha256))).equals(original)).toBe(
        true,
      )
    }),
  )

  it.scoped("a failing source leaves no temp file and no blob; a torn index tail is ignored", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const e = yield* Effect.flip(
        Attachments.put(dir, Stream.concat(Stream.make(enc.encode("part")), Stream.fail("network" as const))),
      )
      expect(e).toBe("network")
      expect(NFS.readdirSync(Path.join(dir, "attachments"))).toEqual([])
      const ok = yield* Attachments.put(dir, Stream.make(enc.encode("x")), { sourceUrl: "u" })
      NFS.appendFileSync(Path.join(dir, "attachments", "index.ndjson"), '{"sha256":"ab')
      expect([...(yield* Attachments.readIndex(dir)).keys()]).toEqual([ok.sha256])
      expect((yield* Effect.flip(Attachments.has(dir, "../../etc"))).reason).toBe("Corrupt")
    }),
  )

  it.scoped(
    "blobs stored and never committed: not indexed, and their descriptors closed with the store's scope",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const openFds = () => NFS.readdirSync("/proc/self/fd").length
        const before = openFds()
        yield* Effect.scoped(
          Effect.gen(function* () {
            const s = yield* Attachments.store(dir)
            // 20 files of their own (above PACK_MAX) and a pack
            for (let i = 0; i < 20; i++) yield* s.storeBytes(Buffer.alloc(Attachments.PACK_MAX + 1, i))
            yield* s.storeBytes(enc.encode("uncommitted, small"))
            expect(openFds()).toBeGreaterThanOrEqual(before + 21)
          }),
        )
        expect(openFds()).toBe(before)
        expect((yield* Attachments.readIndex(dir)).size).toBe(0)
      }),
  )
  it.scoped(
    "a blob file a crashed run left half written at its content address is written again in full and indexed",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        // (above PACK_MAX: a file of its own)
        const bytes = Buffer.concat([
          enc.encode("the whole attachment"),
          Buffer.alloc(Attachments.PACK_MAX, 1),
        ])
        const sha256 = createHash("sha256").update(bytes).digest("hex")
        const path = Path.join(dir, Attachments.relativePath(sha256))
        // what a crash before the commit leaves: the name, bytes that are not the blob's, no index line
        // (longer than the blob, so a write that did not truncate would show)
        NFS.mkdirSync(Path.dirname(path), { recursive: true, mode: 0o700 })
        NFS.writeFileSync(path, "x".repeat(bytes.length + 100), { mode: 0o644 })
        NFS.chmodSync(path, 0o644)
        const s = yield* Attachments.store(dir)
        const stored = yield* s.storeBytes(bytes, { sourceUrl: "http://src/Binary/torn" })
        expect(stored.created).toBe(true)
        expect(yield* s.commit).toBe(1)
        expect(NFS.readFileSync(path).equals(Buffer.from(bytes))).toBe(true)
        expect(mode(path)).toBe(0o600)
        expect((yield* Attachments.readIndex(dir)).get(sha256)?.sourceUrls).toEqual([
          "http://src/Binary/torn",
        ])
        const read = yield* Stream.runCollect(Attachments.read(dir, sha256))
        expect(Buffer.concat([...read]).equals(Buffer.from(bytes))).toBe(true)
        // and no temp file is left beside the blobs
        expect(NFS.readdirSync(Path.join(dir, "attachments")).filter((n) => n.endsWith(".part"))).toEqual([])
      }),
  )

  it.scoped(
    "a torn index tail (a multi-line commit cut by a crash) is cut off when a store opens the index: the next commit's lines read back whole",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const index = Path.join(dir, "attachments", "index.ndjson")
        const first = yield* Attachments.put(dir, Stream.make(enc.encode("first")), {
          sourceUrl: "http://src/1",
        })
        const whole = NFS.readFileSync(index, "utf8")
        // a commit of two lines cut by a power loss: a whole line, then half of the next (its blob is durable)
        const torn = yield* Attachments.put(dir, Stream.make(enc.encode("torn")), {
          sourceUrl: "http://src/2",
        })
        const two = NFS.readFileSync(index, "utf8").slice(whole.length)
        NFS.writeFileSync(index, `${whole}${two}${two.slice(0, 40)}`)
        expect([...(yield* Attachments.readIndex(dir)).keys()]).toEqual([first.sha256, torn.sha256])

        // the next run: its first commit must not run on from the fragment (that read as "index.ndjson:3: not a
        // valid attachment index line; the archive is damaged" ever after)
        const s = yield* Attachments.store(dir)
        const third = yield* s.storeBytes(enc.encode("third"), { sourceUrl: "http://src/3" })
        expect(yield* s.commit).toBe(1)
        expect([...(yield* Attachments.readIndex(dir)).keys()]).toEqual([
          first.sha256,
          torn.sha256,
          third.sha256,
        ])
        expect(
          NFS.readFileSync(index, "utf8")
            .split("\n")
            .map((l) => l.length > 0 && JSON.parse(l).sha256),
        ).toEqual([first.sha256, torn.sha256, third.sha256, false])

        // a last line that is whole but for its newline was never acknowledged either: cut, and its blob is
        // stored and indexed again by the run that meets it
        NFS.appendFileSync(index, two.trimEnd().replace(torn.sha256, first.sha256))
        const again = yield* Attachments.store(dir)
        expect(NFS.readFileSync(index, "utf8").endsWith("\n")).toBe(true)
        yield* again.storeBytes(enc.encode("fourth"))
        yield* again.commit
        expect((yield* Attachments.readIndex(dir)).size).toBe(4)
        expect((yield* Attachments.totals(dir)).count).toBe(4)
      }),
  )

  it.scoped(
    "commit fsyncs attachments/ when it made a blob directory (before the index names the blob) and once the index is new",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const base = Path.join(dir, "attachments")
        const index = Path.join(base, "index.ndjson")
        const log = yield* fsyncLog
        const packs = Path.join(base, "packs")
        const s = yield* Attachments.store(dir)
        // (a blob in memory above PACK_MAX is a file of its own, as a streamed one; a small one goes into a pack)
        const a = yield* s.storeBytes(Buffer.alloc(Attachments.PACK_MAX + 1, 1), {
          sourceUrl: "http://src/a",
        })
        const b = yield* s.store(Stream.make(enc.encode("streamed")), { sourceUrl: "http://src/b" })
        yield* s.storeBytes(enc.encode("in memory"), { sourceUrl: "http://src/p" })
        yield* s.commit
        const blobDirs = [a, b].map(
          (x) => `sync ${Path.dirname(Path.join(dir, Attachments.relativePath(x.sha256)))}`,
        )
        for (const d of blobDirs) expect(log).toContain(d)
        const at = (line: string) => log.indexOf(line)
        const baseSyncs = log.flatMap((l, i) => (l === `sync ${base}` ? [i] : []))
        // the blob directories and packs/ are entries of attachments/ (and the pack one of packs/): durable
        // before the index line that names them
        expect(baseSyncs.length).toBeGreaterThanOrEqual(2)
        expect(baseSyncs[0]!).toBeGreaterThan(Math.max(...blobDirs.map(at)))
        expect(at(`sync ${packs}`)).toBeGreaterThanOrEqual(0)
        expect(at(`sync ${packs}`)).toBeLessThan(at(`sync ${index}`))
        expect(baseSyncs[0]!).toBeLessThan(at(`sync ${index}`))
        // the new index's own entry in attachments/
        expect(baseSyncs.at(-1)!).toBeGreaterThan(at(`sync ${index}`))

        // a later commit into directories and the pack already met fsyncs only those
        log.length = 0
        yield* s.storeBytes(enc.encode("in memory, again"), { sourceUrl: "http://src/c" })
        yield* s.storeBytes(Buffer.alloc(Attachments.PACK_MAX + 1, 1), { sourceUrl: "http://src/d" })
        yield* s.commit
        expect(log).not.toContain(`sync ${base}`)
        expect(log).not.toContain(`sync ${packs}`)
      }),
  )
})

describe("spillFile (a blob too big to hold, written to its part file)", () => {
  it.live(
    "a write stopped while its file opens: the discard waits for it, so no descriptor or file stays",
    () =>
      Effect.gen(function* () {
        const dir = yield* Effect.acquireRelease(
          Effect.sync(() => NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-spill-"))),
          (d) => Effect.sync(() => NFS.rmSync(d, { recursive: true, force: true })),
        )
        const path = Path.join(dir, "blob.part")
        const openOnIt = () =>
          NFS.readdirSync("/proc/self/fd").filter((fd) => {
            try {
              return NFS.readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir)
            } catch {
              return false
            }
          })
        for (let round = 0; round < 5; round++) {
          const spill = yield* Fs.spillFile(path, 16)
          // as the store does: the stream's writes, the discard on any failure (a stop included)
          const fiber = yield* Effect.fork(
            spill.write(Buffer.alloc(1 << 20, 97)).pipe(Effect.onError(() => spill.discard)),
          )
          yield* Effect.yieldNow()
          yield* Fiber.interrupt(fiber)
          yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 100)))
          expect(openOnIt()).toEqual([])
          expect(NFS.existsSync(path)).toBe(false)
        }
      }).pipe(Effect.scoped),
  )
})
