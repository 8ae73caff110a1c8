import { createHash } from "node:crypto"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import * as NFS from "node:fs"
import * as Path from "node:path"
import * as Zlib from "node:zlib"
import { assert, describe, it, layer } from "@effect/vitest"
import * as Sandbox from "@ferry/sandbox/Sandbox"
import { Cause, Effect, Exit, Fiber, Option, Stream, TestServices } from "effect"
import * as Archive from "@ferry/archive/Archive"
import * as ArchiveAttachments from "@ferry/archive/Attachments"
import * as Attachments from "../src/Attachments.js"
import * as Export from "../src/Export.js"
import { ExportError } from "../src/ExportError.js"
import { attachmentsDir, clientFor, loopbackServer, sample10, tempDir } from "./helpers/sandbox.js"

const fast = { pollInterval: "50 millis" } as const
const seedFiles = ["DICOM.jpg", "document.pdf", "portrait-1.jpg"]
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex")
const seeded = seedFiles.map((f) => NFS.readFileSync(Path.join(attachmentsDir, f)))

/** An Attachment reference of `DocumentReference/a` to `url`, with no size or hash claimed. */
const docRef = (url: string, contentType?: string): Attachments.AttachmentRef => ({
  url,
  resource: "DocumentReference/a",
  path: "content[0].attachment",
  contentType,
  size: undefined,
  hash: undefined,
})

const put = (baseUrl: string, resource: { resourceType: string; id: string }) =>
  Effect.promise(async () => {
    const r = await fetch(`${baseUrl}/${resource.resourceType}/${resource.id}`, {
      method: "PUT",
      headers: { "content-type": "application/fhir+json" },
      body: JSON.stringify(resource),
    })
    if (r.status >= 300) throw new Error(`PUT failed: ${r.status} ${await r.text()}`)
  })

describe("Attachments.refsOf / isSourceBinary", () => {
  it("finds url attachments anywhere, leaves inline data and urn: alone", () => {
    const refs = Attachments.refsOf({
      resourceType: "DiagnosticReport",
      id: "r1",
      presentedForm: [
        { contentType: "application/pdf", url: "Binary/abc", size: 3, hash: "x" },
        { contentType: "text/plain", data: "aGk=" },
        { contentType: "text/plain", url: "urn:uuid:1" },
      ],
      extension: [
        {
          url: "http://x",
          valueAttachment: { contentType: "image/png", url: "https://cdn.example.org/p.png" },
        },
      ],
    })
    assert.deepStrictEqual(
      refs.map((r) => [r.url, r.resource]),
      [
        ["Binary/abc", "DiagnosticReport/r1"],
        ["https://cdn.example.org/p.png", "DiagnosticReport/r1"],
      ],
    )
    assert.isTrue(Attachments.isSourceBinary("https://h/fhir", "Binary/abc"))
    assert.isTrue(Attachments.isSourceBinary("https://h/fhir", "https://h/fhir/Binary/abc"))
    assert.isFalse(Attachments.isSourceBinary("https://h/fhir", "https://other/fhir/Binary/abc"))
    assert.isFalse(Attachments.isSourceBinary("https://h/fhir", "https://h/files/a.pdf"))
  })

  it("collector: once per URL (also across batches), every field kept, handed over once and then forgotten", () => {
    const c = Attachments.collector()
    const doc = (id: string, url: string) => ({
      resourceType: "DocumentReference",
      id,
      content: [{ attachment: { contentType: "text/plain", url, size: 2, hash: `h-${url}` } }],
    })
    c.onResource(doc("d1", "Binary/a"))
    c.onResource(doc("d2", "Binary/b"))
    c.onResource(doc("d3", "Binary/a"))
    assert.strictEqual(c.pending(), 2)
    const refs = c.refs()
    assert.deepStrictEqual(
      refs.map((r) => [r.url, r.resource, r.path, r.contentType, r.size, r.hash]),
      [
        ["Binary/a", "DocumentReference/d1", "content[0].attachment", "text/plain", 2, "h-Binary/a"],
        ["Binary/b", "DocumentReference/d2", "content[0].attachment", "text/plain", 2, "h-Binary/b"],
      ],
    )
    // an Attachment that says something else of the same URL's body is handed over too (its claims are checked)
    c.onResource({
      resourceType: "DocumentReference",
      id: "d3b",
      content: [{ attachment: { contentType: "text/plain", url: "Binary/a", size: 3 } }],
    })
    assert.deepStrictEqual(
      c.refs().map((r) => [r.url, r.resource, r.size, r.hash]),
      [["Binary/a", "DocumentReference/d3b", 3, undefined]],
    )
    assert.deepStrictEqual(c.refs(), [])
    // handed over in batches: a URL met after its batch went out is not handed over again
    c.onResource(doc("d4", "Binary/a"))
    c.onResource(doc("d5", "Binary/c"))
    assert.strictEqual(c.pending(), 1)
    assert.deepStrictEqual(
      c.refs().map((r) => r.url),
      ["Binary/c"],
    )
  })
})

describe("Attachments: a Binary read raw whose answer is JSON", () => {
  it.scoped(
    "raw JSON content is stored as sent; a Binary resource's data is decoded; one without data fails the attachment",
    () =>
      Effect.gen(function* () {
        const document = '{"resourceType":"Composition","status":"final"}'
        const origin = yield* loopbackServer((req, res) => {
          if (req.url === "/fhir/Binary/doc") {
            // the Binary's own content is JSON (here a FHIR resource of another type), served raw as asked
            res.writeHead(200, { "content-type": "application/fhir+json" }).end(document)
          } else if (req.url === "/fhir/Binary/res") {
            res
              .writeHead(200, { "content-type": "application/fhir+json" })
              .end(JSON.stringify({ resourceType: "Binary", contentType: "text/plain", data: "aGVsbG8=" }))
          } else if (req.url === "/fhir/Binary/nodata") {
            res
              .writeHead(200, { "content-type": "application/json" })
              .end(JSON.stringify({ resourceType: "Binary", contentType: "text/plain" }))
          } else res.writeHead(404).end()
        })
        const client = yield* clientFor(`${origin}/fhir`)
        const root = Path.join(yield* tempDir, "json")
        NFS.mkdirSync(root, { recursive: true })
        const ref = (url: string) => docRef(url)
        const fetcher = yield* Attachments.fetcher(client, { root }, { concurrency: 1 })
        const result = yield* fetcher.forRefs([ref("Binary/doc"), ref("Binary/res"), ref("Binary/nodata")])
        assert.deepInclude(result, { fetched: 2, failed: 1 })
        const index = [...(yield* ArchiveAttachments.readIndex(root)).values()]
        const bySource = new Map(index.map((l) => [l.sourceUrls[0], l]))
        assert.deepInclude(bySource.get("Binary/doc"), {
          sha256: sha256(Buffer.from(document)),
          size: document.length,
          contentType: "application/fhir+json",
        })
        assert.deepInclude(bySource.get("Binary/res"), {
          sha256: sha256(Buffer.from("hello")),
          size: 5,
          contentType: "text/plain",
        })
        const failure = (yield* fetcher.summary).failed[0]
        assert.include(failure?.detail, "the Binary resource without its content")
      }),
  )
})

describe("Attachments: a body that stalls half-way", () => {
  it.scopedLive(
    "stopping the fetch lets the connection go at once (streamed and whole), not at the request timeout",
    () =>
      Effect.gen(function* () {
        // 200 KB of the announced length, then nothing: a host that hangs in the middle of the body
        let closed = 0
        const origin = yield* loopbackServer((req, res) => {
          const length = req.url === "/fhir/Binary/big" ? 5_000_000 : 500_000
          res.writeHead(200, { "content-type": "application/pdf", "content-length": String(length) })
          res.write(Buffer.alloc(200_000, 1))
          res.on("close", () => {
            closed++
          })
        })
        const client = yield* clientFor(`${origin}/fhir`, { timeout: "30 seconds" })
        const root = Path.join(yield* tempDir, "stall")
        NFS.mkdirSync(root, { recursive: true })
        const fetcher = yield* Attachments.fetcher(client, { root }, { concurrency: 1 })
        for (const [url, n] of [
          ["Binary/big", 1],
          ["Binary/small", 2],
        ] as const) {
          const fiber = yield* Effect.fork(fetcher.forRefs([docRef(url, "application/pdf")]))
          yield* Effect.sleep("1 second")
          const t0 = Date.now()
          yield* Fiber.interrupt(fiber)
          // (before: the streamed fetch's stop waited out the 30 s request timeout; the whole one's connection
          // stayed open as long)
          assert.isBelow(Date.now() - t0, 5_000, url)
          for (let i = 0; i < 50 && closed < n; i++) yield* Effect.sleep("100 millis")
          assert.strictEqual(closed, n, `${url}: the connection was let go`)
        }
      }),
    60_000,
  )
})

describe("Attachments: a host that sends a Content-Encoding unasked", () => {
  it.scoped(
    "gzip, deflate and br bodies are stored decoded (small and streamed); an encoding Ferry cannot undo fails the attachment",
    () =>
      Effect.gen(function* () {
        const small = Buffer.from("%PDF-1.4 a small document\n")
        // over the 1 MiB read whole: streamed into the store
        const large = Buffer.alloc(3 * 1024 * 1024 + 17, "0123456789abcdef")
        const origin = yield* loopbackServer((req, res) => {
          const body = req.url?.startsWith("/files/large") ? large : small
          if (req.url?.endsWith(".gz")) {
            // as an object store serves a file uploaded gzip-encoded: with the encoded length
            const encoded = Zlib.gzipSync(body)
            res.writeHead(200, { "content-encoding": "gzip", "content-length": encoded.length }).end(encoded)
          } else if (req.url?.endsWith(".deflate")) {
            res.writeHead(200, { "content-encoding": "deflate" }).end(Zlib.deflateSync(body))
          } else if (req.url?.endsWith(".br")) {
            res.writeHead(200, { "content-encoding": "br" }).end(Zlib.brotliCompressSync(body))
          } else if (req.url?.endsWith(".z")) {
            res.writeHead(200, { "content-encoding": "compress" }).end(body)
          } else res.writeHead(404).end()
        })
        const client = yield* clientFor(`${origin}/fhir`)
        const root = Path.join(yield* tempDir, "encoded")
        NFS.mkdirSync(root, { recursive: true })
        const ref = (url: string) => docRef(url, "application/pdf")
        const urls = ["small.gz", "small.deflate", "small.br", "large.gz", "large.br", "small.z"].map(
          (f) => `${origin}/files/${f}`,
        )
        const fetcher = yield* Attachments.fetcher(client, { root }, { concurrency: 2 })
        const result = yield* fetcher.forRefs(urls.map(ref))
        assert.deepInclude(result, { fetched: 5, failed: 1 })
        const index = [...(yield* ArchiveAttachments.readIndex(root)).values()]
        for (const line of index) {
          const expected = line.sourceUrls[0]!.includes("/large.") ? large : small
          assert.strictEqual(line.sha256, sha256(expected), line.sourceUrls[0])
          assert.strictEqual(line.size, expected.length, line.sourceUrls[0])
        }
        assert.strictEqual(index.flatMap((l) => l.sourceUrls).length, 5)
        const failure = (yield* fetcher.summary).failed[0]
        assert.include(failure?.detail, 'Content-Encoding "compress", which Ferry cannot undo')
      }),
  )
})

layer(Sandbox.Sandbox.layer({ seed: [sample10, attachmentsDir], bulk: { retryAfterSeconds: 0 } } as never), {
  timeout: 60_000,
  excludeTestServices: true,
})("Attachments (sandbox seeded with attachments)", (it) => {
  it.scoped(
    "files-planned comes first; file-ready comes once per file, only when its attachments are indexed, and again on a resumed run",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const dir = yield* tempDir
        const client = yield* clientFor(sandbox.baseUrl)
        const out = Path.join(dir, "ready")
        const seen: Array<{ event: string; path?: unknown; indexed?: number }> = []
        const onEvent = (e: Export.ExportEvent) =>
          Effect.gen(function* () {
            if (e.event !== "files-planned" && e.event !== "file-ready") return
            const indexed = (yield* ArchiveAttachments.readIndex(out).pipe(Effect.orDie)).size
            seen.push({ event: e.event, path: e.path, indexed })
          })
        const summary = yield* Export.run({
          client,
          out,
          params: { level: "system", types: ["Patient", "DocumentReference"] },
          onEvent,
          ...fast,
        })
        assert.strictEqual(seen[0]?.event, "files-planned")
        const ready = seen.filter((e) => e.event === "file-ready")
        assert.deepStrictEqual(ready.map((e) => e.path).sort(), summary.files.map((f) => f.path).sort())
        const docs = ready.find((e) => String(e.path).startsWith("data/DocumentReference"))
        assert.strictEqual(
          docs?.indexed,
          3,
          "the DocumentReference file is ready only with its 3 attachments",
        )
        // a rerun of a finished archive reports nothing new; an unfinished one re-announces its files
        yield* Archive.updateManifest(out, (m) => ({ ...m, complete: false }))
        const journal = NFS.readFileSync(Path.join(out, "journal.ndjson"), "utf8").split("\n")
        NFS.writeFileSync(
          Path.join(out, "journal.ndjson"),
          journal.filter((l) => !l.includes('"key":"complete"')).join("\n"),
        )
        seen.length = 0
        const again = yield* Export.run({
          client,
          out,
          params: { level: "system", types: ["Patient", "DocumentReference"] },
          onEvent,
          ...fast,
        }).pipe(Effect.exit)
        // as if killed just before the end: every file is done in the journal, nothing is fetched again
        if (Exit.isSuccess(again)) {
          assert.deepStrictEqual(
            seen
              .filter((e) => e.event === "file-ready")
              .map((e) => e.path)
              .sort(),
            summary.files.map((f) => f.path).sort(),
          )
          assert.strictEqual(again.value.attachments.fetched, 0)
        } else {
          assert.fail(`the resumed run failed: ${Cause.pretty(again.cause)}`)
        }
      }),
  )

  it.scoped(
    "every attachment is fetched, stored by sha256, verified and indexed; a bad hash is reported",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const dir = yield* tempDir
        const client = yield* clientFor(sandbox.baseUrl)
        const out = Path.join(dir, "a")
        const summary = yield* Export.run({
          client,
          out,
          params: { level: "system", types: ["DocumentReference"] },
          ...fast,
        })
        assert.strictEqual(summary.attachments.fetched, 3)
        const index = yield* ArchiveAttachments.readIndex(out)
        assert.strictEqual(index.size, 3)
        assert.deepStrictEqual([...index.keys()].sort(), seeded.map(sha256).sort())
        for (const [sha, line] of index) {
          // (read where the index says: a file of its own, or a slice of a pack)
          const blob = Buffer.concat([...(yield* Stream.runCollect(ArchiveAttachments.read(out, line)))])
          assert.strictEqual(sha256(blob), sha)
          assert.strictEqual(blob.length, line.size)
          assert.strictEqual(createHash("sha1").update(blob).digest("base64"), line.sha1)
          assert.strictEqual(line.sourceUrls.length, 1)
          assert.match(line.sourceUrls[0] ?? "", /\/Binary\//)
        }
        assert.include(
          [...index.values()].map((i) => i.contentType),
          "application/pdf",
        )
        const manifest = yield* Archive.readManifest(out)
        assert.deepStrictEqual(manifest.attachments, {
          count: 3,
          bytes: seeded.reduce((n, b) => n + b.length, 0),
        })
        assert.deepStrictEqual(yield* Archive.verifyChecksums(out), [])

        // A relative Binary URL, and one whose hash does not match.
        const pdf = seeded[1]!
        yield* put(sandbox.baseUrl, {
          resourceType: "DocumentReference",
          id: "relative-url",
          status: "current",
          content: [
            { attachment: { contentType: "application/pdf", url: "Binary/document.pdf", size: pdf.length } },
          ],
        } as never)
        yield* put(sandbox.baseUrl, {
          resourceType: "DocumentReference",
          id: "bad-hash",
          status: "current",
          content: [
            {
              attachment: {
                contentType: "image/jpeg",
                url: `${sandbox.baseUrl}/Binary/DICOM.jpg?copy=1`,
                hash: createHash("sha1").update("something else").digest("base64"),
              },
            },
          ],
        } as never)
        const out2 = Path.join(dir, "b")
        const exit = yield* Export.run({
          client,
          out: out2,
          params: { level: "system", types: ["DocumentReference"] },
          ...fast,
        }).pipe(Effect.exit)
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.isFailure(exit)
          ? Option.getOrUndefined(Cause.failureOption(exit.cause))
          : undefined
        assert.instanceOf(error, ExportError)
        assert.strictEqual((error as ExportError).reason, "Attachment")
        assert.include((error as ExportError).message, "DocumentReference/bad-hash")
        const index2 = yield* ArchiveAttachments.readIndex(out2)
        const pdfLine = index2.get(sha256(pdf))
        assert.includeMembers([...(pdfLine?.sourceUrls ?? [])], ["Binary/document.pdf"])
        assert.strictEqual(pdfLine?.sourceUrls.length, 2)
        // The PDF is stored once although two URLs lead to it.
        // (two files of their own, and the portrait in a pack)
        const blobs = NFS.readdirSync(Path.join(out2, "attachments")).filter((d) => d.length === 2)
        assert.strictEqual(blobs.length, 2)
        assert.deepStrictEqual(NFS.readdirSync(Path.join(out2, "attachments", "packs")), ["000001.pack"])
        assert.strictEqual((yield* ArchiveAttachments.totals(out2)).count, 3)
        assert.isFalse((yield* Archive.readManifest(out2)).complete)
        // the body that did not match is not indexed under its URL, so a rerun fetches it again and fails the
        // same way (it used to find the URL in the index, skip it, and finish the archive)
        const badUrl = `${sandbox.baseUrl}/Binary/DICOM.jpg?copy=1`
        assert.isFalse([...index2.values()].some((l) => l.sourceUrls.includes(badUrl)))
        const again = yield* Export.run({
          client,
          out: out2,
          params: { level: "system", types: ["DocumentReference"] },
          ...fast,
        }).pipe(Effect.flip)
        assert.strictEqual((again as ExportError).reason, "Attachment")
        assert.include((again as ExportError).message, "DocumentReference/bad-hash")
        assert.isFalse((yield* Archive.readManifest(out2)).complete)
      }),
  )

  it.scoped(
    "a fetch interrupted with its batch settles nothing: the next reference to the URL fetches it",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const dir = yield* tempDir
        const client = yield* clientFor(sandbox.baseUrl)
        const root = Path.join(dir, "interrupted")
        NFS.mkdirSync(root, { recursive: true })
        // an attachment host that answers after 300 ms
        const server = yield* Effect.acquireRelease(
          Effect.async<Http.Server>((resume) => {
            const s = Http.createServer((_req, res) =>
              setTimeout(() => {
                res.writeHead(200, { "content-type": "text/plain" })
                res.end("slow attachment")
              }, 300),
            )
            s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
          }),
          (s) =>
            Effect.async<void>((resume) => {
              s.closeAllConnections()
              s.close(() => resume(Effect.void))
            }),
        )
        const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/doc/1`
        const ref = (resource: string): Attachments.AttachmentRef => ({
          url,
          resource,
          path: "content[0].attachment",
          contentType: "text/plain",
          size: undefined,
          hash: undefined,
        })
        const fetcher = yield* Attachments.fetcher(client, { root }, { concurrency: 2 })
        const first = yield* Effect.fork(fetcher.forRefs([ref("DocumentReference/a")]))
        yield* Effect.sleep("50 millis")
        // a second reference waits on the first fetch, which is then interrupted
        const waiting = yield* Effect.fork(fetcher.forRefs([ref("DocumentReference/b")]))
        yield* Effect.sleep("50 millis")
        yield* Fiber.interrupt(first)
        const waited = yield* Fiber.join(waiting)
        assert.deepInclude(waited, { fetched: 1, failed: 0 })
        // and later references find it stored
        assert.deepInclude(yield* fetcher.forRefs([ref("DocumentReference/c")]), { skipped: 1 })
      }),
  )

  it.scoped(
    "a URL is fetched once per archive: met again in the run or in a resumed run it is skipped, a failed one is not asked for again",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const dir = yield* tempDir
        const client = yield* clientFor(sandbox.baseUrl)
        const root = Path.join(dir, "once")
        NFS.mkdirSync(root, { recursive: true })
        const ref = (url: string, resource: string): Attachments.AttachmentRef => ({
          url,
          resource,
          path: "content[0].attachment",
          contentType: undefined,
          size: undefined,
          hash: undefined,
        })
        const refs = [
          ref("Binary/document.pdf", "DocumentReference/a"),
          ref("Binary/DICOM.jpg", "DocumentReference/b"),
          ref("Binary/no-such-binary", "DocumentReference/c"),
        ]
        const first = yield* Attachments.fetcher(client, { root }, { concurrency: 2 })
        const one = yield* first.forRefs(refs)
        assert.deepInclude(one, { fetched: 2, skipped: 0, failed: 1 })
        // the same URLs from other resources, later in the same run
        const again = yield* first.forRefs(refs.map((r) => ({ ...r, resource: "DocumentReference/z" })))
        assert.deepInclude(again, { fetched: 0, skipped: 2, failed: 1 })
        assert.strictEqual((yield* first.summary).failed.length, 1, "the failed URL was asked for once")
        // a resumed run knows the stored URLs from the index alone
        const resumed = yield* Attachments.fetcher(client, { root }, { concurrency: 2 })
        assert.deepInclude(yield* resumed.forRefs(refs.slice(0, 2)), { fetched: 0, skipped: 2, failed: 0 })
        const index = yield* ArchiveAttachments.readIndex(root)
        assert.strictEqual(index.size, 2)
      }),
  )
})

layer(Sandbox.Sandbox.layer({ generate: 30, bulk: { retryAfterSeconds: 0 } } as never), {
  timeout: 60_000,
  excludeTestServices: true,
})("Attachments (30 generated patients, one attachment each)", (it) => {
  it.scoped("a file's attachments are fetched in batches while it downloads, not all after it", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const dir = yield* tempDir
      const client = yield* clientFor(sandbox.baseUrl)
      /** Events of one export: the attachments stored before the DocumentReference file was complete. */
      const storedBeforeFile = (out: string, attachmentBatch: number | undefined) =>
        Effect.gen(function* () {
          const events: Array<{ event: string; path?: unknown }> = []
          const summary = yield* Export.run({
            client,
            out: Path.join(dir, out),
            params: { level: "system", types: ["DocumentReference"] },
            onEvent: (e) => Effect.sync(() => void events.push(e)),
            ...(attachmentBatch !== undefined ? { attachmentBatch } : {}),
            ...fast,
          })
          assert.strictEqual(summary.attachments.fetched, 30)
          const file = events.findIndex((e) => e.event === "file")
          assert.isAbove(file, -1)
          const ready = events.find((e) => e.event === "attachments") as { fetched?: number } | undefined
          assert.strictEqual(ready?.fetched, 30, "the file's attachment count sums its batches")
          return events.slice(0, file).filter((e) => e.event === "attachment").length
        })
      // batches of 4: after each chunk received that brings the references found to 4 or more, they are
      // fetched; only a last chunk's fewer than 4 wait for the file's end
      assert.isAtLeast(yield* storedBeforeFile("batched", 4), 27)
      // the default batch (1000) is never reached here: every attachment comes after the file
      assert.strictEqual(yield* storedBeforeFile("whole", undefined), 0)
    }),
  )

  it.scoped(
    "batches beside a download that breaks off twice and is resumed: every attachment once, summed per file",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const dir = yield* tempDir
        const client = yield* clientFor(sandbox.baseUrl)
        const setFaults = (faults: unknown) =>
          Effect.promise(() =>
            fetch(`${sandbox.baseUrl}/_sandbox/faults`, { method: "PUT", body: JSON.stringify(faults) }),
          )
        // the first two downloads of the DocumentReference file are cut after 6 kB each (resumed with Range),
        // while a batch of the references found so far is being fetched
        yield* setFaults({ resetDownload: { afterBytes: 6000, attempts: 2, type: "DocumentReference" } })
        yield* Effect.addFinalizer(() => Effect.asVoid(setFaults({})))
        const events: Array<{ event: string; fetched?: number; skipped?: number; reason?: string }> = []
        const summary = yield* Export.run({
          client,
          out: Path.join(dir, "faulty"),
          params: { level: "system", types: ["DocumentReference"] },
          onEvent: (e) => Effect.sync(() => void events.push(e)),
          attachmentBatch: 4,
          ...fast,
        })
        assert.isAtLeast(
          events.filter((e) => e.event === "resume").length,
          2,
          "the transfer was resumed twice",
        )
        assert.strictEqual(summary.attachments.fetched, 30)
        const ready = events.filter((e) => e.event === "attachments")
        assert.strictEqual(ready.length, 1)
        assert.strictEqual((ready[0]?.fetched ?? 0) + (ready[0]?.skipped ?? 0), 30)
        assert.strictEqual(ready[0]?.fetched, 30)
      }),
  )
})

layer(Sandbox.Sandbox.layer({ seed: [attachmentsDir], bulk: { retryAfterSeconds: 0 } } as never), {
  timeout: 60_000,
})("Attachments sharing a URL", (it) => {
  it.scoped("each Attachment's size and hash are checked, also when another fetched its URL first", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const dir = yield* tempDir
      const client = yield* clientFor(sandbox.baseUrl)
      const dicom = seeded[0]!
      const doc = (id: string, url: string, size: number) =>
        put(sandbox.baseUrl, {
          resourceType: "DocumentReference",
          id,
          status: "current",
          content: [{ attachment: { contentType: "image/jpeg", url, size } }],
        } as never)
      // one pair with the right Attachment first, one with the wrong one first (ids order the export file)
      const first = `${sandbox.baseUrl}/Binary/DICOM.jpg?pair=1`
      const second = `${sandbox.baseUrl}/Binary/DICOM.jpg?pair=2`
      yield* doc("p1-a-right", first, dicom.length)
      yield* doc("p1-b-wrong", first, 12)
      yield* doc("p2-a-wrong", second, 12)
      yield* doc("p2-b-right", second, dicom.length)
      const events: Array<{ event: string; resource?: unknown }> = []
      const out = Path.join(dir, "shared-url")
      // the live clock: the job may still run at the first poll, and the test clock would never wake the next
      const summary = yield* TestServices.provideLive(
        Export.run({
          client,
          out,
          params: { level: "system", types: ["DocumentReference"] },
          allowMissingAttachments: true,
          onEvent: (e) => Effect.sync(() => void events.push(e)),
          ...fast,
        }),
      )
      const failed = events
        .filter((e) => e.event === "attachment-failed")
        .map((e) => String(e.resource))
        .sort()
      assert.deepStrictEqual(failed, ["DocumentReference/p1-b-wrong", "DocumentReference/p2-a-wrong"])
      assert.strictEqual(summary.attachments.failed, 2)
      // the right Attachments' body is in the archive under both URLs
      const index = yield* ArchiveAttachments.readIndex(out)
      assert.includeMembers([...(index.get(sha256(dicom))?.sourceUrls ?? [])], [first, second])
    }),
  )

  it.scoped("a resumed run's store knows each stored URL's size and hash from the index", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const bytes = seeded[2]!
      const sha1 = createHash("sha1").update(bytes).digest("base64")
      const url = "http://source.example/fhir/Binary/portrait"
      yield* Effect.scoped(
        Effect.gen(function* () {
          const store = yield* ArchiveAttachments.store(dir)
          yield* store.storeBytes(bytes, { sourceUrl: url })
          assert.isTrue(store.matchesStored(url, { size: bytes.length, sha1 }))
          yield* store.commit
        }),
      )
      const reopened = yield* ArchiveAttachments.store(dir)
      assert.isTrue(reopened.matchesStored(url, {}))
      assert.isTrue(reopened.matchesStored(url, { size: bytes.length }))
      assert.isTrue(reopened.matchesStored(url, { size: bytes.length, sha1 }))
      assert.isFalse(reopened.matchesStored(url, { size: 12 }))
      assert.isFalse(reopened.matchesStored(url, { size: bytes.length, sha1: "AAAA" }))
      assert.isFalse(reopened.matchesStored(`${url}?other`, { size: bytes.length }))
    }),
  )
})
