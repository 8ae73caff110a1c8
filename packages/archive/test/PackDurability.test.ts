import * as Path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Stream } from "effect"
import { vi } from "vitest"
import * as Attachments from "../src/Attachments.js"
import { tempDir } from "./helpers.js"

/**
 * Every `fsync` of a descriptor, with the path and size of its file at that moment; each waits 20 ms first, so
 * that blobs can be stored while a commit waits on its fsyncs (as the export's other workers do).
 */
const fsyncs = vi.hoisted(() => [] as Array<{ readonly path: string; readonly size: number }>)

vi.mock("node:fs", async (importOriginal) => {
  const fs = await importOriginal<typeof import("node:fs")>()
  const fsync = (fd: number, callback: (err: NodeJS.ErrnoException | null) => void) =>
    setTimeout(() => {
      let path = ""
      try {
        path = fs.readlinkSync(`/proc/self/fd/${fd}`)
      } catch {
        // (not on Linux: the test below then finds no pack fsync and fails, naming this)
      }
      fsyncs.push({ path, size: fs.fstatSync(fd).size })
      fs.fsync(fd, callback)
    }, 20)
  return { ...fs, default: { ...fs, fsync }, fsync }
})

describe("a pack's durability", () => {
  it.scopedLive(
    "a small blob stored while a commit waits on its fsyncs is fsynced in its pack before an index line names it",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const s = yield* Attachments.store(dir)
        yield* s.storeBytes(Buffer.alloc(1000, "a"))
        // a blob above PACK_MAX is a file of its own: the commit waits on its fsync first
        yield* s.storeBytes(Buffer.alloc(Attachments.PACK_MAX + 1000, "b"))
        const first = yield* Effect.fork(s.commit)
        yield* Effect.sleep("5 millis")
        // stored meanwhile: buffered until the next commit writes it
        yield* s.storeBytes(Buffer.alloc(2000, "c"))
        yield* Fiber.join(first)
        yield* s.commit
        const index = yield* Attachments.readIndex(dir)
        const packed = [...index.values()].filter((l) => l.pack === "000001.pack")
        expect(packed.map((l) => [l.offset, l.size])).toEqual([
          [0, 1000],
          [1000, 2000],
        ])
        const pack = Path.join(dir, Attachments.packPath("000001.pack"))
        const synced = fsyncs.filter((f) => f.path === pack).map((f) => f.size)
        // every byte an index line names was in the file at an fsync of the pack
        expect(Math.max(0, ...synced)).toBeGreaterThanOrEqual(3000)
        const c = Buffer.concat([...(yield* Stream.runCollect(Attachments.read(dir, packed[1]!)))])
        expect(c.equals(Buffer.alloc(2000, "c"))).toBe(true)
      }),
  )
})
