/**
 * The 200 MB flat-memory test lives in its own file so it runs in a fresh worker process: garbage and heap
 * sizing left behind by other tests would otherwise make an RSS measurement meaningless.
 */
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import * as V8 from "node:v8"
import * as VM from "node:vm"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as Ndjson from "../src/Ndjson.js"

/** A full GC, so RSS is measured from a settled heap (vitest workers don't run with --expose-gc). */
const collectGarbage = (): void => {
  V8.setFlagsFromString("--expose-gc")
  const gc: unknown = VM.runInNewContext("gc")
  if (typeof gc === "function") gc()
}

const tempDir = Effect.acquireRelease(
  Effect.sync(() => NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-ndjson-mem-"))),
  (dir) => Effect.sync(() => NFS.rmSync(dir, { recursive: true, force: true })),
)

describe("Ndjson reader memory", () => {
  it.live(
    "streams a 200 MB file with RSS growth under 50 MB",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const path = Path.join(dir, "big.ndjson")
          const line = `${JSON.stringify({ resourceType: "Observation", id: "x", valueString: "y".repeat(900) })}\n`
          const perBlock = 1000
          const block = Buffer.from(line.repeat(perBlock))
          const blocks = Math.ceil((200 * 1024 * 1024) / block.length)
          const fd = NFS.openSync(path, "w", 0o600)
          for (let i = 0; i < blocks; i++) NFS.writeSync(fd, block)
          NFS.closeSync(fd)
          collectGarbage()
          const before = process.memoryUsage.rss()
          let peak = before
          const count = yield* Ndjson.readFile(path).pipe(
            Stream.chunks,
            Stream.runFold(0, (n, chunk) => {
              const rss = process.memoryUsage.rss()
              if (rss > peak) peak = rss
              return n + chunk.length
            }),
          )
          const after = process.memoryUsage.rss()
          expect(count).toBe(blocks * perBlock)
          expect(NFS.statSync(path).size).toBeGreaterThanOrEqual(200 * 1024 * 1024)
          expect(peak - before).toBeLessThan(50 * 1024 * 1024)
          expect(after - before).toBeLessThan(50 * 1024 * 1024)
        }),
      ),
    60_000,
  )
})
