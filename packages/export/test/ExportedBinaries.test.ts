import * as NFS from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import * as ExportedBinaries from "../src/internal/ExportedBinaries.js"
import { tempDir } from "./helpers/sandbox.js"

const binary = (id: string, text: string) =>
  JSON.stringify({
    resourceType: "Binary",
    id,
    contentType: "text/plain",
    data: Buffer.from(text).toString("base64"),
  })

/** Writes the lines as a data file and tells the sink where each one is, as a download does. */
const download = (path: string, lines: ReadonlyArray<string>, sink: ExportedBinaries.ExportedBinaries) =>
  Effect.gen(function* () {
    const f = sink.file(path)
    f.sink.reset()
    let offset = 0
    for (const line of lines) {
      const bytes = Buffer.byteLength(line) + 1
      f.sink.line(JSON.parse(line), offset, bytes)
      offset += bytes
    }
    NFS.writeFileSync(path, lines.map((l) => `${l}\n`).join(""))
    yield* f.finished
  })

const text = (copied: Option.Option<ExportedBinaries.Copied>) =>
  Option.map(copied, (c) => `${c.contentType} ${Buffer.from(c.bytes).toString()}`)

describe("ExportedBinaries", () => {
  it.scoped(
    "copies a Binary from its line; a file downloaded again at the same path voids the old places",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const path = Path.join(dir, "Binary.000.ndjson")
        const binaries = yield* ExportedBinaries.make
        yield* binaries.expect(1)
        yield* download(path, [binary("a", "first a"), binary("b", "first b")], binaries)
        assert.deepStrictEqual(text(yield* binaries.read("a", true)), Option.some("text/plain first a"))
        assert.deepStrictEqual(text(yield* binaries.read("b", false)), Option.some("text/plain first b"))
        assert.isTrue(Option.isNone(yield* binaries.read("c", true)))
        // a new job's file at the same path: until it is in, nothing is copied from the old places, even where
        // a valid line of the same Binary sits at its old offset (the attachment is fetched instead)
        yield* binaries.expect(1)
        const again = binaries.file(path)
        NFS.writeFileSync(
          path,
          [binary("a", "again a"), binary("b", "again b")].map((l) => `${l}\n`).join(""),
        )
        assert.isTrue(Option.isNone(yield* binaries.read("a", false)))
        again.sink.reset()
        const lines = [binary("b", "second b"), binary("a", "second a")]
        let offset = 0
        for (const line of lines) {
          again.sink.line(JSON.parse(line), offset, Buffer.byteLength(line) + 1)
          offset += Buffer.byteLength(line) + 1
        }
        NFS.writeFileSync(path, lines.map((l) => `${l}\n`).join(""))
        yield* again.finished
        assert.deepStrictEqual(text(yield* binaries.read("a", true)), Option.some("text/plain second a"))
        // the file changed under it: fetched instead, not an error
        NFS.writeFileSync(path, "{}\n")
        assert.isTrue(Option.isNone(yield* binaries.read("b", true)))
        // the file gone before its first copy (nothing open yet): the same
        const fresh = yield* ExportedBinaries.make
        const other = Path.join(dir, "Binary.001.ndjson")
        yield* download(other, [binary("c", "c")], fresh)
        NFS.rmSync(other)
        assert.isTrue(Option.isNone(yield* fresh.read("c", true)))
      }),
  )

  it.scoped(
    "copies in the order of the files (read ahead), backwards, across files, and a line longer than the read-ahead",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const binaries = yield* ExportedBinaries.make
        const body = (i: number) => `body ${i} `.repeat(i === 150 ? 40_000 : 20 + (i % 7))
        const ids = Array.from({ length: 300 }, (_, i) => `b${i}`)
        const first = Path.join(dir, "Binary.000.ndjson")
        const second = Path.join(dir, "Binary.001.ndjson")
        yield* download(
          first,
          ids.slice(0, 200).map((id, i) => binary(id, body(i))),
          binaries,
        )
        yield* download(
          second,
          ids.slice(200).map((id, i) => binary(id, body(200 + i))),
          binaries,
        )
        const expected = (i: number) => Option.some(`text/plain ${body(i)}`)
        // in order (one read serves the lines after it), then backwards, then alternating between the files
        for (let i = 0; i < 300; i++)
          assert.deepStrictEqual(text(yield* binaries.read(ids[i]!, true)), expected(i))
        for (let i = 299; i >= 0; i -= 3) assert.deepStrictEqual(text(binaries.peek(ids[i]!)), expected(i))
        for (let i = 0; i < 100; i++) {
          assert.deepStrictEqual(text(binaries.peek(ids[i]!)), expected(i))
          assert.deepStrictEqual(text(binaries.peek(ids[200 + i]!)), expected(200 + i))
        }
      }),
  )

  it.scoped("a Binary without data, or a line longer than MAX_LINE, is not copied", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const binaries = yield* ExportedBinaries.make
      const path = Path.join(dir, "Binary.000.ndjson")
      yield* download(
        path,
        [JSON.stringify({ resourceType: "Binary", id: "nodata", contentType: "text/plain" })],
        binaries,
      )
      assert.isTrue(Option.isNone(yield* binaries.read("nodata", true)))
      const f = binaries.file(Path.join(dir, "Binary.001.ndjson"))
      f.sink.line(JSON.parse(binary("big", "x")), 0, ExportedBinaries.MAX_LINE + 1)
      yield* f.finished
      assert.isTrue(Option.isNone(yield* binaries.read("big", true)))
    }),
  )
})
