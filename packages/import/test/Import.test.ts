/**
 * Import.run against in-process sandboxes (port 0), with archives written by @ferry/archive from the
 * 10-patient bulk sample in ../shared/data (never copied into the repository).
 */
import { createHash } from "node:crypto"
import * as NFS from "node:fs"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import * as OS from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { FetchHttpClient } from "@effect/platform"
import * as Archive from "@ferry/archive/Archive"
import * as Attachments from "@ferry/archive/Attachments"
import * as Imports from "@ferry/archive/Imports"
import { Journal } from "@ferry/archive/Journal"
import * as Manifest from "@ferry/archive/Manifest"
import * as FhirClient from "@ferry/core/FhirClient"
import * as Ndjson from "@ferry/core/Ndjson"
import { references } from "@ferry/core/Walker"
import type { SandboxConfigInput } from "@ferry/sandbox/Config"
import * as Sandbox from "@ferry/sandbox/Sandbox"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Either, Exit, Option, Stream } from "effect"
import * as Import from "../src/Import.js"
import type { ImportError } from "../src/ImportError.js"
import { listening } from "@ferry/core/test/helpers/loopback"

const sample10 = fileURLToPath(new URL("../../../../shared/data/sample-bulk-10-patients", import.meta.url))
const source = "https://source.example/fhir"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-import-test-"))),
  (dir) => Effect.sync(() => NFS.rmSync(dir, { recursive: true, force: true })),
)

/** The 10-patient sample as an archive (`complete` as asked; the files `gzip` picks are compressed). */
const sampleArchive = (
  complete = true,
  gzip: (name: string) => boolean = () => false,
  edit: (name: string, line: string) => string = (_, line) => line,
  base: string = source,
) =>
  Effect.gen(function* () {
    const dir = Path.join(yield* tempDir, "archive")
    const init = yield* Archive.create(dir, {
      tool: { name: "ferry-test", version: "0" },
      source: { baseUrl: base },
      request: { level: "system", url: `${base}/$export`, parameters: {} },
    })
    const entries: Array<Manifest.FileEntry> = []
    for (const name of NFS.readdirSync(sample10).filter((n) => n.endsWith(".ndjson")))
      entries.push(
        yield* Archive.writeFile(
          dir,
          { section: "files", type: name.split(".")[0]!, compression: gzip(name) ? "gzip" : "none" },
          Ndjson.readFileLines(Path.join(sample10, name)).pipe(Stream.map((line) => edit(name, line))),
        ),
      )
    const manifest = Manifest.addFiles({ ...init, complete }, "files", entries)
    yield* Archive.writeManifest(dir, manifest)
    // (an export writes them as it completes the archive; an import checks they agree)
    if (complete) yield* Archive.writeChecksums(dir, manifest)
    return {
      dir,
      manifest,
      expected: Object.fromEntries(Manifest.counts(manifest)) as Record<string, number>,
    }
  })

const target = (config: SandboxConfigInput = {}) => Sandbox.start(config)

const clientFor = (baseUrl: string) =>
  FhirClient.make({ baseUrl, retry: { base: "10 millis", times: 8 } }).pipe(
    Effect.provide(FetchHttpClient.layer),
  )

const countsOf = (s: Sandbox.SandboxHandle): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const t of s.store.types()) out[t] = s.store.count(t)
  return out
}

const sum = (r: Readonly<Record<string, number>>) => Object.values(r).reduce((a, b) => a + b, 0)

/** The resources of each segment an import planned (its `graph` events), in order. */
const graphSizes = (events: ReadonlyArray<Import.ImportEvent>): Array<number> =>
  events.filter((e) => e.event === "graph").map((e) => Number(e.resources))

/**
 * Asserts that every plain `Type/id` reference stored in the sandbox names a stored resource (in post mode every
 * id is new: a reference written before its target landed would still name the source id); returns how many.
 */
const referencesResolved = (sandbox: Sandbox.SandboxHandle): number => {
  let checked = 0
  for (const t of sandbox.store.types())
    for (const r of sandbox.store.iterate(t))
      for (const site of references(JSON.parse(r.json))) {
        const m = /^([A-Z][A-Za-z]+)\/([^/]+)$/.exec(site.raw ?? "")
        if (site.canonical || m === null) continue
        assert.isDefined(sandbox.store.read(m[1]!, m[2]!), `${t}/${r.id} → ${site.raw}`)
        checked++
      }
  return checked
}

const failure = <A, E>(exit: Exit.Exit<A, E>): Option.Option<E> =>
  Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()

/**
 * A server on 127.0.0.1 for the scope whose CapabilityStatement declares `fhirVersion` and that answers every
 * other request with a web server's HTML 404 (a proxy, a wrong URL); its FHIR base.
 */
const htmlNotFound = (fhirVersion: string) =>
  Effect.gen(function* () {
    const server = Http.createServer((req, res) => {
      if (req.method === "GET" && req.url?.startsWith("/fhir/metadata"))
        return void res.writeHead(200, { "content-type": "application/fhir+json" }).end(
          JSON.stringify({
            resourceType: "CapabilityStatement",
            status: "active",
            kind: "instance",
            fhirVersion,
            format: ["json"],
            rest: [{ mode: "server" }],
          }),
        )
      req.resume()
      res.writeHead(404, { "content-type": "text/html" }).end("<html><body>Not Found</body></html>")
    })
    yield* listening(server)
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`
  })

describe("Import.run", () => {
  it.scopedLive(
    "put: everything lands with its ids; a rerun finds every chunk in the journal and sends nothing",
    () =>
      Effect.gen(function* () {
        const { dir, expected } = yield* sampleArchive()
        const sandbox = yield* target()
        const client = yield* clientFor(sandbox.baseUrl)
        const events: Array<Import.ImportEvent> = []
        const summary = yield* Import.run({
          client,
          archive: dir,
          bundleSize: 100,
          onEvent: (e) => Effect.sync(() => void events.push(e)),
        })
        assert.strictEqual(summary.strategy, "put")
        assert.deepStrictEqual(summary.resources, expected)
        assert.strictEqual(summary.total, sum(expected))
        assert.strictEqual(summary.quarantined, 0)
        assert.deepStrictEqual(countsOf(sandbox), expected)
        assert.isTrue(events.some((e) => e.event === "graph"))
        assert.strictEqual(events.filter((e) => e.event === "chunk").length, summary.chunks)
        // the import state lives next to the archive, one directory per target
        assert.isTrue(NFS.existsSync(Imports.journalPath(dir, sandbox.baseUrl)))
        const again = yield* Import.run({ client, archive: dir, bundleSize: 100 })
        assert.strictEqual(again.total, 0)
        assert.strictEqual(again.resumedChunks, again.chunks)
        assert.deepStrictEqual(countsOf(sandbox), expected)
      }),
  )

  it.scopedLive(
    "a line nested deeper than a recursive walk can go ends the import with that defect, not a wait forever",
    () =>
      Effect.gen(function* () {
        const deep = `${"[".repeat(20_000)}${"]".repeat(20_000)}`
        let edited = false
        const { dir } = yield* sampleArchive(true, undefined, (name, line) => {
          if (edited || !name.startsWith("Condition")) return line
          edited = true
          return `${line.slice(0, -1)},"_deep":${deep}}`
        })
        const sandbox = yield* target()
        const client = yield* clientFor(sandbox.baseUrl)
        const exit = yield* Effect.exit(
          Import.run({ client, archive: dir }).pipe(Effect.timeout("60 seconds")),
        )
        assert.isTrue(Exit.isFailure(exit))
        const defect = Exit.isFailure(exit) ? Cause.dieOption(exit.cause) : Option.none()
        assert.isTrue(Option.isSome(defect), String(exit))
        assert.instanceOf(Option.getOrThrow(defect), RangeError)
      }),
    90_000,
  )

  it.scopedLive(
    "a rerun whose earlier runs imported only Binaries finds a target rebuilt empty (Binary counted when nothing else can be)",
    () =>
      Effect.gen(function* () {
        const empty = yield* target()
        const client = yield* clientFor(empty.baseUrl)
        const dir = yield* Effect.acquireRelease(
          Effect.sync(() => NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-emptied-"))),
          (d) => Effect.sync(() => NFS.rmSync(d, { recursive: true, force: true })),
        )
        const refused = yield* Effect.flip(
          Import.refuseEmptied(
            client,
            dir,
            ["Binary"],
            "earlier runs of this migration imported 1 of its files there",
          ),
        )
        assert.include(
          refused.message,
          "the target holds none of the archive's resources, though earlier runs",
        )
        // a target that holds Binaries: not refused
        const holding = yield* target()
        yield* Effect.promise(() =>
          fetch(`${holding.baseUrl}/Binary/b1`, {
            method: "PUT",
            headers: { "content-type": "application/fhir+json" },
            body: JSON.stringify({
              resourceType: "Binary",
              id: "b1",
              contentType: "text/plain",
              data: "aGk=",
            }),
          }),
        )
        yield* Import.refuseEmptied(yield* clientFor(holding.baseUrl), dir, ["Binary"], "earlier runs")
      }),
  )

  /** The sample archive imported with post (Bundles of 100) into a target that refuses client ids; `rerun` again. */
  const postImported = Effect.gen(function* () {
    const { dir, expected } = yield* sampleArchive()
    const sandbox = yield* target({ refuseClientIds: true })
    const client = yield* clientFor(sandbox.baseUrl)
    const rerun = (more: { readonly restart?: boolean } = {}) =>
      Import.run({ client, archive: dir, strategy: "post", bundleSize: 100, ...more })
    yield* rerun()
    return { dir, expected, sandbox, rerun, idmap: Imports.idMapPath(dir, sandbox.baseUrl) }
  })

  it.scopedLive("a torn last line in the id map (a kill mid-append) is cut off, and the rerun goes on", () =>
    Effect.gen(function* () {
      const { expected, sandbox, rerun, idmap } = yield* postImported
      const whole = NFS.readFileSync(idmap, "utf8")
      NFS.appendFileSync(idmap, '{"s":"Patient/torn","t":"Pat')
      const again = yield* rerun()
      assert.strictEqual(again.total, 0)
      assert.strictEqual(NFS.readFileSync(idmap, "utf8"), whole)
      assert.deepStrictEqual(countsOf(sandbox), expected)
      // a whole last line that lacks only its newline (a hand edit) is kept, and given its newline
      const extra = '{"s":"Patient/not-in-archive","t":"Patient/elsewhere"}'
      NFS.appendFileSync(idmap, extra)
      yield* rerun()
      assert.strictEqual(NFS.readFileSync(idmap, "utf8"), `${whole}${extra}\n`)
    }),
  )

  it.scopedLive("a damaged line of checksums.sha256: refused naming that file:line once, nothing sent", () =>
    Effect.gen(function* () {
      const { dir } = yield* sampleArchive()
      const sums = Path.join(dir, "checksums.sha256")
      const lines = NFS.readFileSync(sums, "utf8").split("\n")
      NFS.writeFileSync(sums, [...lines.slice(0, 2), "not a checksum line", ...lines.slice(3)].join("\n"))
      const sandbox = yield* target()
      const error = yield* Effect.flip(
        Import.run({ client: yield* clientFor(sandbox.baseUrl), archive: dir }),
      )
      assert.strictEqual((error as ImportError).reason, "Archive")
      assert.isTrue(error.message.startsWith(`${sums}:3: not \`<sha256>  <path>\``), error.message)
      assert.strictEqual(sandbox.store.types().length, 0)
    }),
  )

  it.scopedLive(
    "a damaged line in the id map: one sentence with file:line and --restart, which writes it anew without duplicates",
    () =>
      Effect.gen(function* () {
        const { expected, sandbox, rerun, idmap } = yield* postImported
        const lines = NFS.readFileSync(idmap, "utf8").split("\n")
        NFS.writeFileSync(idmap, [...lines.slice(0, 3), '{"s":"Binary/gen-b', ...lines.slice(4)].join("\n"))
        const damaged = yield* Effect.flip(rerun())
        assert.strictEqual(damaged._tag, "ImportError")
        assert.strictEqual((damaged as ImportError).reason, "Archive")
        assert.strictEqual(
          damaged.message,
          `${idmap}:4: the id map is damaged (this line is not JSON); run the same command again with --restart: this target's import state is set aside and every resource sent again (put keeps their ids, post finds each one it made by its provenance tag), which writes the id map anew`,
        )
        const restarted = yield* rerun({ restart: true })
        assert.strictEqual(restarted.quarantined, 0)
        assert.deepStrictEqual(countsOf(sandbox), expected)
        assert.strictEqual(
          NFS.readFileSync(idmap, "utf8")
            .split("\n")
            .filter((l) => l !== "").length,
          lines.filter((l) => l !== "").length,
        )
      }),
  )

  it.scopedLive(
    "sourceBases: absolute references under another base of the source server become relative on the target",
    () =>
      Effect.gen(function* () {
        const alias = "http://internal.example/fhir"
        // the source wrote its Encounters' patient references with an internal host name
        const { dir, expected } = yield* sampleArchive(
          true,
          () => false,
          (name, line) =>
            name.startsWith("Encounter") ? line.replace(/"Patient\//g, `"${alias}/Patient/`) : line,
        )
        const sandbox = yield* target()
        const client = yield* clientFor(sandbox.baseUrl)
        yield* Import.run({ client, archive: dir, sourceBases: [alias] })
        assert.deepStrictEqual(countsOf(sandbox), expected)
        const subjects = Array.from(sandbox.store.iterate("Encounter")).map(
          (r) => (JSON.parse(r.json) as { subject?: { reference?: string } }).subject?.reference ?? "",
        )
        assert.isAbove(subjects.length, 0)
        for (const ref of subjects) assert.match(ref, /^Patient\/[A-Za-z0-9\-.]+$/)
      }),
  )

  it.scopedLive(
    "two imports into one target from one archive at once: one runs, the other is refused in one sentence",
    () =>
      Effect.gen(function* () {
        const { dir, expected } = yield* sampleArchive()
        const sandbox = yield* target()
        const client = yield* clientFor(sandbox.baseUrl)
        const both = yield* Effect.all(
          [Import.run({ client, archive: dir }), Import.run({ client, archive: dir })].map(Effect.either),
          { concurrency: 2 },
        )
        const refused = both.filter(Either.isLeft).map((e) => e.left)
        assert.strictEqual(refused.length, 1)
        assert.include(
          String(refused[0]?.message),
          "another import into this target from this archive is running",
        )
        assert.deepStrictEqual(countsOf(sandbox), expected)
        // the lock is gone with the run that held it
        assert.strictEqual((yield* Import.run({ client, archive: dir })).total, 0)
      }),
  )

  it.scopedLive("an incomplete archive is refused, unless files are given (a migrate wave)", () =>
    Effect.gen(function* () {
      const { dir, manifest, expected } = yield* sampleArchive(false)
      const sandbox = yield* target()
      const client = yield* clientFor(sandbox.baseUrl)
      const refused = failure(yield* Effect.exit(Import.run({ client, archive: dir })))
      assert.isTrue(Option.isSome(refused))
      assert.strictEqual(refused.pipe(Option.getOrThrow)._tag, "ImportError")
      assert.match(
        refused.pipe(Option.getOrThrow).message,
        /incomplete.*rerun the export with the same --out/,
      )
      assert.strictEqual(sandbox.store.countAll(), 0)
      // one a ferry migrate was writing (its ledger is there): the migrate is what finishes it
      const ledger = Imports.migrateLedgerPath(dir, sandbox.baseUrl)
      NFS.mkdirSync(Path.dirname(ledger), { recursive: true })
      NFS.writeFileSync(ledger, "")
      const migrating = failure(yield* Effect.exit(Import.run({ client, archive: dir })))
      assert.include(
        migrating.pipe(Option.getOrThrow).message,
        "run the same ferry migrate again to finish it",
      )
      NFS.rmSync(Path.dirname(Path.dirname(ledger)), { recursive: true })
      // its export still running (another live process holds the archive's lock): said so, not "rerun the export"
      const lock = Path.join(dir, ".lock")
      NFS.writeFileSync(
        lock,
        JSON.stringify({ pid: process.ppid, host: OS.hostname(), startedAt: "2026-01-01T00:00:00Z" }),
      )
      const running = failure(yield* Effect.exit(Import.run({ client, archive: dir })))
      assert.include(
        running.pipe(Option.getOrThrow).message,
        `the archive is not finished: a ferry (pid ${process.ppid}, since 2026-01-01T00:00:00Z) is still writing it; wait for that export to end, then import`,
      )
      NFS.rmSync(lock)
      const patients = manifest.files.filter((f) => f.type === "Patient")
      const first = yield* Import.run({ client, archive: dir, files: patients, deletes: false })
      assert.deepStrictEqual(first.resources, { Patient: expected.Patient })
      assert.deepStrictEqual(countsOf(sandbox), { Patient: expected.Patient })
      const rest = manifest.files.filter((f) => f.type !== "Patient")
      const second = yield* Import.run({ client, archive: dir, files: rest, deletes: false })
      assert.strictEqual(second.total, sum(expected) - expected.Patient!)
      assert.deepStrictEqual(countsOf(sandbox), expected)
    }),
  )

  it.scopedLive(
    "an archive exported with _elements (parts of resources) is refused before anything is sent",
    () =>
      Effect.gen(function* () {
        const { dir, manifest } = yield* sampleArchive()
        yield* Archive.writeManifest(dir, {
          ...manifest,
          request: { ...manifest.request, parameters: { _type: "Patient", _elements: "gender" } },
        })
        const sandbox = yield* target()
        const client = yield* clientFor(sandbox.baseUrl)
        const refused = failure(yield* Effect.exit(Import.run({ client, archive: dir }))).pipe(
          Option.getOrThrow,
        )
        assert.strictEqual(refused._tag, "ImportError")
        assert.strictEqual((refused as { reason?: string }).reason, "Config")
        assert.match(refused.message, /_elements=gender.*export again without --elements/)
        assert.strictEqual(sandbox.store.countAll(), 0)
      }),
  )

  it.scopedLive(
    "post (client ids refused): new ids, one id-map line per resource, references follow the map",
    () =>
      Effect.gen(function* () {
        const { dir, expected } = yield* sampleArchive()
        const sandbox = yield* target({ refuseClientIds: true })
        const client = yield* clientFor(sandbox.baseUrl)
        const summary = yield* Import.run({ client, archive: dir })
        assert.strictEqual(summary.strategy, "post")
        assert.deepStrictEqual(countsOf(sandbox), expected)
        const map = new Map(
          NFS.readFileSync(Imports.idMapPath(dir, sandbox.baseUrl), "utf8")
            .trim()
            .split("\n")
            .map((l) => JSON.parse(l) as { s: string; t: string })
            .map((m) => [m.s, m.t]),
        )
        assert.strictEqual(map.size, sum(expected))
        // every target Encounter's subject is a Patient that exists on the target
        for (const stored of sandbox.store.iterate("Encounter")) {
          const e = JSON.parse(stored.json) as {
            subject?: { reference?: string }
            meta?: { tag?: ReadonlyArray<{ system?: string }> }
          }
          const ref = e.subject?.reference ?? ""
          assert.match(ref, /^Patient\//)
          assert.isDefined(sandbox.store.read("Patient", ref.slice("Patient/".length)), ref)
          assert.isTrue(e.meta?.tag?.some((t) => t.system === "urn:ferry:source") ?? false)
        }
      }),
  )

  it.scopedLive(
    "post: a second source with the same ids lands beside the first (the provenance tag names the source server); each source's rerun from scratch adds nothing",
    () =>
      Effect.gen(function* () {
        const first = yield* sampleArchive()
        const second = yield* sampleArchive(
          true,
          () => false,
          (_, line) => line,
          "https://other-source.example/r4",
        )
        const sandbox = yield* target({ refuseClientIds: true })
        const client = yield* clientFor(sandbox.baseUrl)
        const twice = Object.fromEntries(Object.entries(first.expected).map(([t, n]) => [t, 2 * n]))
        yield* Import.run({ client, archive: first.dir })
        yield* Import.run({ client, archive: second.dir })
        // before the tag named its source, the second archive's conditional creates found the first one's
        // resources (same `Type/id`) and took them for its own: one set on the target, the second's references
        // pointing at the first source's patients
        assert.deepStrictEqual(countsOf(sandbox), twice)
        const targetsOf = (dir: string) =>
          new Set(
            NFS.readFileSync(Imports.idMapPath(dir, sandbox.baseUrl), "utf8")
              .trim()
              .split("\n")
              .map((l) => (JSON.parse(l) as { t: string }).t),
          )
        const mine = targetsOf(first.dir)
        for (const t of targetsOf(second.dir)) assert.isFalse(mine.has(t), t)
        // a run that starts over (its id map and journal gone: a crash before either was written) finds what
        // its own source's earlier run made, and only that
        for (const archive of [first.dir, second.dir]) {
          NFS.rmSync(Imports.dir(archive, sandbox.baseUrl), { recursive: true, force: true })
          yield* Import.run({ client, archive })
          assert.deepStrictEqual(countsOf(sandbox), twice)
        }
      }),
  )

  it.scopedLive(
    "post: an import begun by a Ferry whose provenance tags did not name the source goes on with those tags",
    () =>
      Effect.gen(function* () {
        const { dir, expected } = yield* sampleArchive()
        const sandbox = yield* target({ refuseClientIds: true })
        const client = yield* clientFor(sandbox.baseUrl)
        // what such a run leaves: its strategy journaled, no origin
        yield* Effect.scoped(
          Effect.flatMap(Journal.make(Imports.journalPath(dir, sandbox.baseUrl)), (journal) =>
            journal.append("import.strategy", "import.strategy", "post"),
          ),
        )
        yield* Import.run({ client, archive: dir })
        assert.deepStrictEqual(countsOf(sandbox), expected)
        for (const stored of sandbox.store.iterate("Patient")) {
          const p = JSON.parse(stored.json) as {
            meta?: { tag?: ReadonlyArray<{ system?: string; code?: string }> }
          }
          const tag = p.meta?.tag?.find((t) => t.system === "urn:ferry:source")
          assert.match(tag?.code ?? "", /^Patient\/[A-Za-z0-9\-.]+$/)
        }
      }),
  )

  it.scopedLive(
    "an archive with gzip files (bodies decompressed per group, the others read at their offsets) lands as the plain one, put and post",
    () =>
      Effect.gen(function* () {
        const plain = yield* sampleArchive()
        const mixed = yield* sampleArchive(true, (name) => !name.startsWith("Patient"))
        assert.isTrue(mixed.manifest.files.some((f) => f.compression === "gzip"))
        assert.isTrue(mixed.manifest.files.some((f) => f.compression === "none"))
        const stored = (s: Sandbox.SandboxHandle) => {
          const out = new Map<string, unknown>()
          for (const t of s.store.types())
            for (const r of s.store.iterate(t)) {
              const { meta, ...rest } = JSON.parse(r.json) as { id: string; meta?: Record<string, unknown> }
              const { versionId: _v, lastUpdated: _l, ...kept } = meta ?? {}
              out.set(`${t}/${rest.id}`, { ...rest, meta: kept })
            }
          return out
        }
        // put: Bundles of 100, so the gzip bodies are read for several groups of chunks
        const a = yield* target()
        const b = yield* target()
        yield* Import.run({ client: yield* clientFor(a.baseUrl), archive: plain.dir, bundleSize: 100 })
        const summary = yield* Import.run({
          client: yield* clientFor(b.baseUrl),
          archive: mixed.dir,
          bundleSize: 100,
        })
        assert.isAbove(summary.chunks, 4 * 4 * 2)
        assert.deepStrictEqual(countsOf(b), mixed.expected)
        const want = stored(a)
        const got = stored(b)
        assert.strictEqual(got.size, sum(mixed.expected))
        for (const [k, v] of got) assert.deepStrictEqual(v, want.get(k), k)
        // post: every Encounter's subject is a Patient on the target
        const c = yield* target({ refuseClientIds: true })
        yield* Import.run({ client: yield* clientFor(c.baseUrl), archive: mixed.dir, bundleSize: 100 })
        assert.deepStrictEqual(countsOf(c), mixed.expected)
        for (const r of c.store.iterate("Encounter")) {
          const ref = (JSON.parse(r.json) as { subject?: { reference?: string } }).subject?.reference ?? ""
          assert.match(ref, /^Patient\//)
          assert.isDefined(c.store.read("Patient", ref.slice("Patient/".length)), ref)
        }
      }),
  )

  it.scopedLive(
    "small Bundles, post: the archive goes in several segments, each sent after everything it refers to",
    () =>
      Effect.gen(function* () {
        const { dir, expected } = yield* sampleArchive()
        const sandbox = yield* target({ refuseClientIds: true })
        const events: Array<Import.ImportEvent> = []
        const summary = yield* Import.run({
          client: yield* clientFor(sandbox.baseUrl),
          archive: dir,
          bundleSize: 20,
          parallel: 2,
          onEvent: (e) => Effect.sync(() => void events.push(e)),
        })
        assert.strictEqual(summary.strategy, "post")
        assert.deepStrictEqual(countsOf(sandbox), expected)
        const graphs = events.filter((e) => e.event === "graph")
        assert.isAbove(graphs.length, 2)
        assert.strictEqual(
          graphs.reduce((n, e) => n + Number(e.resources), 0),
          sum(expected),
        )
        assert.isAbove(referencesResolved(sandbox), 1000)
      }),
  )

  it.scopedLive(
    "a segment stops growing at segmentMax: more, smaller segments, the same resources, every reference sent after its target",
    () =>
      Effect.gen(function* () {
        const { dir, expected } = yield* sampleArchive()
        const runWith = (segmentMax: number | undefined) =>
          Effect.gen(function* () {
            const sandbox = yield* target({ refuseClientIds: true })
            const events: Array<Import.ImportEvent> = []
            yield* Import.run({
              client: yield* clientFor(sandbox.baseUrl),
              archive: dir,
              bundleSize: 20,
              parallel: 2,
              ...(segmentMax !== undefined ? { segmentMax } : {}),
              onEvent: (e) => Effect.sync(() => void events.push(e)),
            })
            NFS.rmSync(Path.join(dir, "imports"), { recursive: true, force: true })
            return { sandbox, sizes: graphSizes(events) }
          })
        const free = yield* runWith(undefined)
        const capped = yield* runWith(80)
        assert.deepStrictEqual(countsOf(capped.sandbox), expected)
        assert.strictEqual(sum(Object.fromEntries(capped.sizes.entries())), sum(expected))
        assert.isAbove(capped.sizes.length, free.sizes.length)
        assert.isBelow(Math.max(...capped.sizes), Math.max(...free.sizes))
        assert.isAbove(referencesResolved(capped.sandbox), 1000)
        // a segmentMax above the floor (bundleSize × parallel × 2, 80 here) is what cuts there: segments between the
        // two runs' (files are read whole, so 1000 closes them later than 80 and sooner than the default)
        const wider = yield* runWith(1000)
        assert.strictEqual(sum(Object.fromEntries(wider.sizes.entries())), sum(expected))
        assert.isAbove(wider.sizes.length, free.sizes.length)
        assert.isBelow(wider.sizes.length, capped.sizes.length)
      }),
  )

  it.scopedLive(
    "urn:uuid references in a file read early: the ids are read ahead once, later files are not held to the end, every urn lands as the new id",
    () =>
      Effect.gen(function* () {
        // the sample's MedicationRequests name their Encounters by urn:uuid (as exports of transaction-loaded
        // data do); Procedure is read after them
        const { dir, expected } = yield* sampleArchive(
          true,
          () => false,
          (name, line) =>
            name.startsWith("MedicationRequest")
              ? line.replaceAll('"reference":"Encounter/', '"reference":"urn:uuid:')
              : line,
        )
        const urnLines = NFS.readFileSync(Path.join(sample10, "MedicationRequest.000.ndjson"), "utf8")
          .split("\n")
          .filter((l) => l.includes('"reference":"Encounter/')).length
        assert.isAbove(urnLines, 100)
        const sandbox = yield* target({ refuseClientIds: true })
        const events: Array<Import.ImportEvent> = []
        yield* Import.run({
          client: yield* clientFor(sandbox.baseUrl),
          archive: dir,
          bundleSize: 20,
          parallel: 2,
          segmentMax: 80,
          onEvent: (e) => Effect.sync(() => void events.push(e)),
        })
        assert.deepStrictEqual(countsOf(sandbox), expected)
        const readAhead = events.filter((e) => e.event === "ids-read-ahead")
        assert.strictEqual(readAhead.length, 1)
        assert.strictEqual(readAhead[0]!.files, 1)
        // without the read-ahead, MedicationRequest and Procedure would go as one last segment
        const sizes = graphSizes(events)
        assert.deepStrictEqual(sizes.slice(-2), [expected.MedicationRequest, expected.Procedure])
        let urns = 0
        for (const t of sandbox.store.types())
          for (const r of sandbox.store.iterate(t)) if (r.json.includes('"reference":"urn:uuid:')) urns++
        assert.strictEqual(urns, 0)
        assert.isAbove(referencesResolved(sandbox), 1000)
      }),
  )

  it.scopedLive(
    "a Bundle refused for one entry goes again as a batch: the conditional references it left for the target are resolved on the target first, never stored as written",
    () =>
      Effect.gen(function* () {
        const { dir, manifest } = yield* sampleArchive(false)
        const refused = "00c7f717-4030-5582-2ed8-888ad2bc878e"
        const sandbox = yield* target({ rejectRule: { type: "Encounter", path: "id", equals: refused } })
        const client = yield* clientFor(sandbox.baseUrl)
        // the practitioners, organizations and locations first (as an earlier wave), then the encounters alone:
        // this run's archive files resolve none of their conditional references, the target does
        const firstWave = manifest.files.filter((f) =>
          ["Practitioner", "Organization", "Location"].includes(f.type),
        )
        yield* Import.run({ client, archive: dir, files: firstWave })
        const encounters = manifest.files.filter((f) => f.type === "Encounter" || f.type === "Patient")
        const summary = yield* Import.run({ client, archive: dir, files: encounters })
        assert.strictEqual(summary.quarantined, 1)
        let checked = 0
        for (const r of sandbox.store.iterate("Encounter")) {
          assert.notInclude(r.json, "?identifier=", `Encounter/${r.id}`)
          checked++
        }
        assert.strictEqual(checked, 1214)
        assert.isAbove(referencesResolved(sandbox), 3 * 1214)
      }),
  )

  it.scopedLive(
    "post: resources the id map holds are updated in a batch, their conditional references resolved on the target first",
    () =>
      Effect.gen(function* () {
        const { dir, manifest } = yield* sampleArchive(false)
        const sandbox = yield* target()
        const client = yield* clientFor(sandbox.baseUrl)
        yield* Import.run({ client, archive: dir, strategy: "post", files: manifest.files })
        // the encounters again, as a delta or a rerun without its journal sends them: updates of what the id map
        // holds, in a batch, with only their own file to resolve conditional references through
        NFS.rmSync(Imports.journalPath(dir, sandbox.baseUrl))
        // one practitioner gone from the target meanwhile: what names it by identifier is set aside, not sent
        const gone = Array.from(sandbox.store.iterate("Practitioner")).find(
          (r) => r.json.includes("|9999974493") || r.json.includes('"9999974493"'),
        )
        assert.isDefined(gone)
        sandbox.store.delete("Practitioner", gone!.id)
        const naming = Array.from(sandbox.store.iterate("Encounter")).filter((r) =>
          r.json.includes(`Practitioner/${gone!.id}`),
        ).length
        assert.isAbove(naming, 0)
        const encounters = manifest.files.filter((f) => f.type === "Encounter")
        const summary = yield* Import.run({ client, archive: dir, strategy: "post", files: encounters })
        assert.strictEqual(summary.quarantined, naming)
        const reasons = NFS.readFileSync(
          Path.join(Imports.quarantineDir(dir, sandbox.baseUrl), "Encounter.ndjson"),
          "utf8",
        )
        assert.include(
          reasons,
          "which neither the archive nor the target resolves to one resource (no resource on the target matches it)",
        )
        let checked = 0
        for (const r of sandbox.store.iterate("Encounter")) {
          assert.notInclude(r.json, "?identifier=", `Encounter/${r.id}`)
          checked++
        }
        assert.strictEqual(checked, 1215)
      }),
  )

  it.scopedLive(
    "a Type/id on two lines of the archive (different versions): the last line lands, and a warning names both lines",
    () =>
      Effect.gen(function* () {
        const first = "129c6ac7-8d06-89de-ad63-0204a93e76c3"
        const second = "3af3708d-41f1-cd80-f3dd-ec5ac76072bf"
        const { dir } = yield* sampleArchive(
          true,
          () => false,
          (name, line) =>
            name.startsWith("Patient") && line.includes(`"id":"${second}"`)
              ? line.replace(second, first)
              : line,
        )
        const sandbox = yield* target()
        const client = yield* clientFor(sandbox.baseUrl)
        const events: Array<Import.ImportEvent> = []
        yield* Import.run({ client, archive: dir, onEvent: (e) => Effect.sync(() => void events.push(e)) })
        const warnings = events.filter((e) => e.event === "warning").map((e) => String(e.detail))
        assert.isTrue(
          warnings.some((w) =>
            w.startsWith(
              `1 line(s) of the archive hold a resource an earlier line holds too (the same Type/id; first: Patient/${first} at data/Patient.000.ndjson:1 and data/Patient.000.ndjson:2)`,
            ),
          ),
          warnings.join("\n"),
        )
        // the second line's content (another patient's birth date) under the first one's id
        const lines = NFS.readFileSync(Path.join(sample10, "Patient.000.ndjson"), "utf8").split("\n")
        const birthDate = (line: string) => (JSON.parse(line) as { birthDate: string }).birthDate
        assert.notStrictEqual(birthDate(lines[0]!), birthDate(lines[1]!))
        const stored = JSON.parse(sandbox.store.read("Patient", first)!.json) as { birthDate: string }
        assert.strictEqual(stored.birthDate, birthDate(lines[1]!))
      }),
  )

  it.scopedLive(
    "post: a urn:uuid reference that matches resources of two types is said as such (not as a resource outside the archive)",
    () =>
      Effect.gen(function* () {
        const shared = "048630ac-ba97-3386-9ac5-d8bf6392db50" // an Organization's id, given to a Location too
        const { dir } = yield* sampleArchive(
          true,
          () => false,
          (name, line) =>
            name.startsWith("Location") &&
            line.startsWith('{"resourceType":"Location","id":"0b9875ba-9310-313d-93d4-bf552585d527"')
              ? line.replace("0b9875ba-9310-313d-93d4-bf552585d527", shared)
              : name.startsWith("Encounter") && line.includes('"id":"00c7f717-4030-5582-2ed8-888ad2bc878e"')
                ? line.replace(
                    /"subject":\{"reference":"Patient\/[^"]+"/,
                    `"subject":{"reference":"urn:uuid:${shared}"`,
                  )
                : line,
        )
        const sandbox = yield* target()
        const client = yield* clientFor(sandbox.baseUrl)
        const events: Array<Import.ImportEvent> = []
        yield* Import.run({
          client,
          archive: dir,
          strategy: "post",
          onEvent: (e) => Effect.sync(() => void events.push(e)),
        })
        const warnings = events.filter((e) => e.event === "warning").map((e) => String(e.detail))
        assert.isTrue(
          warnings.some((w) =>
            w.startsWith(
              "1 urn:uuid reference matches resources of several types with that id in the archive (first: Encounter/00c7f717-4030-5582-2ed8-888ad2bc878e (subject)",
            ),
          ),
          warnings.join("\n"),
        )
        assert.isFalse(
          warnings.some((w) => w.includes("not in the archive")),
          warnings.join("\n"),
        )
      }),
  )

  it.scopedLive(
    "$import: conditional references the archive does not resolve are resolved on the target before the files are staged; one that matches nothing there sets its resource aside",
    () =>
      Effect.gen(function* () {
        const { dir, manifest } = yield* sampleArchive(false)
        const sandbox = yield* target()
        const client = yield* clientFor(sandbox.baseUrl)
        const firstWave = manifest.files.filter((f) =>
          ["Practitioner", "Organization", "Location"].includes(f.type),
        )
        yield* Import.run({ client, archive: dir, files: firstWave })
        const gone = Array.from(sandbox.store.iterate("Practitioner")).find((r) =>
          r.json.includes("9999974493"),
        )!
        sandbox.store.delete("Practitioner", gone.id)
        const encounters = manifest.files.filter((f) => f.type === "Encounter" || f.type === "Patient")
        const summary = yield* Import.run({ client, archive: dir, files: encounters, strategy: "import" })
        let stored = 0
        for (const r of sandbox.store.iterate("Encounter")) {
          assert.notInclude(r.json, "?identifier=", `Encounter/${r.id}`)
          stored++
        }
        assert.isAbove(summary.quarantined, 0)
        assert.strictEqual(stored + summary.quarantined, 1215)
        const reasons = NFS.readFileSync(
          Path.join(Imports.quarantineDir(dir, sandbox.baseUrl), "Encounter.ndjson"),
          "utf8",
        )
        assert.include(reasons, "9999974493")
        assert.include(reasons, "and $import stores it as written")
      }),
  )

  it.scopedLive(
    "$import: a job result that accounts for fewer resources than it was given (a file left out, counts short, refusals without an OperationOutcome) fails the import, naming the files",
    () =>
      Effect.gen(function* () {
        /** A proxy in front of the sandbox that rewrites the `$import` job's final manifest with `edit`. */
        const proxied = (
          upstream: string,
          edit: (m: {
            output: Array<{ count?: number; inputUrl?: string }>
            error: Array<{ count?: number; inputUrl?: string; type?: string }>
          }) => void,
        ) =>
          Effect.gen(function* () {
            const up = new URL(upstream)
            let self = ""
            const server = Http.createServer((req, res) => {
              const chunks: Array<Buffer> = []
              req.on("data", (c: Buffer) => chunks.push(c))
              req.on("end", () => {
                const out = Http.request(
                  {
                    host: up.hostname,
                    port: up.port,
                    method: req.method,
                    path: req.url,
                    headers: { ...req.headers, host: up.host },
                  },
                  (answer) => {
                    const body: Array<Buffer> = []
                    answer.on("data", (c: Buffer) => body.push(c))
                    answer.on("end", () => {
                      let text = Buffer.concat(body).toString("utf8")
                      const headers = { ...answer.headers }
                      delete headers["content-length"]
                      delete headers["transfer-encoding"]
                      if (typeof headers["content-location"] === "string")
                        headers["content-location"] = headers["content-location"].replace(up.origin, self)
                      if (req.url?.includes("import-status") && answer.statusCode === 200) {
                        const m = JSON.parse(text) as Parameters<typeof edit>[0]
                        edit(m)
                        text = JSON.stringify(m)
                      }
                      res.writeHead(answer.statusCode ?? 502, headers)
                      res.end(text)
                    })
                  },
                )
                out.end(Buffer.concat(chunks))
              })
            })
            const port = yield* listening(server)
            self = `http://127.0.0.1:${port}`
            return `${self}${up.pathname}`
          })
        const cases: ReadonlyArray<readonly [string, Parameters<typeof proxied>[1], RegExp]> = [
          [
            "every count 0 (a fatal abort)",
            (m) => {
              for (const o of m.output) o.count = 0
            },
            /accounts for only 0 of the \d+ resources it was given \([A-Za-z]+: \d+ given, 0 loaded/,
          ],
          [
            "a file left out of the result",
            (m) => {
              m.output.splice(0, 1)
            },
            /[A-Za-z]+: \d+ given, \d+ loaded\)?.*neither loaded nor refused with a reason/,
          ],
          [
            "a refusal counted without an OperationOutcome file",
            (m) => {
              const first = m.output[0]!
              first.count = (first.count ?? 0) - 1
              m.error.push({ type: "OperationOutcome", inputUrl: first.inputUrl!, count: 1 })
            },
            /: 1 neither loaded nor refused with a reason \(1 of them counted as refused without saying which\)/,
          ],
        ]
        for (const [what, edit, expected] of cases) {
          const { dir } = yield* sampleArchive()
          const sandbox = yield* target()
          const client = yield* clientFor(yield* proxied(sandbox.baseUrl, edit))
          const exit = yield* Effect.exit(Import.run({ client, archive: dir, strategy: "import" }))
          const e = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
          assert.isTrue(
            Option.isSome(e) && e.value._tag === "ImportError" && e.value.reason === "Target",
            what,
          )
          if (Option.isSome(e)) assert.match(e.value.message, expected, what)
          // not journaled done: the same import runs the job again
          assert.isFalse(
            NFS.readFileSync(Imports.journalPath(dir, client.baseUrl), "utf8").includes('"import.done"'),
            what,
          )
        }
        // a result that counts by type without naming the files (no inputUrl): judged by type, it loaded all
        const { dir, expected } = yield* sampleArchive()
        const sandbox = yield* target()
        const unnamed = yield* clientFor(
          yield* proxied(sandbox.baseUrl, (m) => {
            for (const o of m.output) delete o.inputUrl
          }),
        )
        const summary = yield* Import.run({ client: unnamed, archive: dir, strategy: "import" })
        assert.deepStrictEqual(summary.resources, expected)
      }),
  )

  it.scopedLive(
    "entry refusals are quarantined as {resource, outcome, reason, source: file:line}; the rest lands",
    () =>
      Effect.gen(function* () {
        const { dir, expected } = yield* sampleArchive()
        const sandbox = yield* target({ rejectRule: { type: "Device", message: "no devices" } })
        const client = yield* clientFor(sandbox.baseUrl)
        const summary = yield* Import.run({ client, archive: dir })
        assert.strictEqual(summary.quarantined, expected.Device)
        const lines = NFS.readFileSync(
          Path.join(Imports.quarantineDir(dir, sandbox.baseUrl), "Device.ndjson"),
          "utf8",
        )
          .trim()
          .split("\n")
          .map((l) => JSON.parse(l) as Record<string, unknown>)
        assert.strictEqual(lines.length, expected.Device)
        for (const q of lines) {
          assert.deepStrictEqual(Object.keys(q).sort(), ["outcome", "reason", "resource", "source"])
          assert.strictEqual((q.resource as { resourceType: string }).resourceType, "Device")
          assert.match(q.source as string, /^data\/Device\.000\.ndjson:\d+$/)
          assert.include(JSON.stringify(q.outcome), "no devices")
        }
        const { Device: _d, ...rest } = expected
        assert.deepStrictEqual(countsOf(sandbox), rest)
      }),
  )

  it.scopedLive(
    "a resource without an id is quarantined with its file:line and why, never dropped silently; the rest lands",
    () =>
      Effect.gen(function* () {
        let dropped = 0
        const { dir, expected } = yield* sampleArchive(
          true,
          () => false,
          (name, line) => {
            if (!name.startsWith("Device") || dropped > 0) return line
            dropped++
            return line.replace(/"id":"[^"]*",?/, "")
          },
        )
        const sandbox = yield* target()
        const client = yield* clientFor(sandbox.baseUrl)
        const events: Array<Import.ImportEvent> = []
        const summary = yield* Import.run({
          client,
          archive: dir,
          onEvent: (e) => Effect.sync(() => void events.push(e)),
        })
        assert.strictEqual(summary.quarantined, 1)
        // named as what it is, not as an empty `Device/`
        assert.deepStrictEqual(
          events.filter((e) => e.event === "quarantined").map((e) => e.key),
          ["Device without an id"],
        )
        assert.deepStrictEqual(countsOf(sandbox), { ...expected, Device: expected.Device! - 1 })
        const q = JSON.parse(
          NFS.readFileSync(
            Path.join(Imports.quarantineDir(dir, sandbox.baseUrl), "Device.ndjson"),
            "utf8",
          ).trim(),
        ) as { source: string; reason: string }
        assert.match(q.source, /^data\/Device\.000\.ndjson:1$/)
        assert.include(q.reason, "has no id")
        // set aside by Ferry, not refused by the target (the CLI's last line tells them apart)
        assert.deepStrictEqual(Imports.quarantineCounts(dir, sandbox.baseUrl), {
          total: 1,
          waiting: 0,
          inArchive: 1,
        })
        // a replay keeps it aside (it still has no id), and the rest stays as it was; reruns set it aside once
        const again = yield* Import.run({ client, archive: dir, retryQuarantine: true })
        assert.strictEqual(Imports.pendingQuarantine(dir, sandbox.baseUrl), 1)
        assert.strictEqual(Imports.quarantineCounts(dir, sandbox.baseUrl).inArchive, 1)
        assert.strictEqual(again.total, 0)
        yield* Import.run({ client, archive: dir })
        const lines = NFS.readFileSync(
          Path.join(Imports.quarantineDir(dir, sandbox.baseUrl), "Device.ndjson"),
          "utf8",
        )
        assert.strictEqual(lines.trim().split("\n").length, 1)
      }),
  )

  it.scopedLive(
    "post into something that answers every Bundle with an HTML 404 (a proxy, a wrong URL): one ImportError, nothing quarantined",
    () =>
      Effect.gen(function* () {
        const { dir } = yield* sampleArchive()
        const base = yield* htmlNotFound("4.0.1")
        const e = failure(
          yield* Effect.exit(Import.run({ client: yield* clientFor(base), archive: dir, strategy: "post" })),
        ).pipe(Option.getOrThrow)
        assert.strictEqual(e._tag, "ImportError")
        assert.include(e.message, "no OperationOutcome")
        assert.include(e.message, "check --to is the target's FHIR base")
        assert.strictEqual(Imports.pendingQuarantine(dir, base), 0)
      }),
  )

  it.scopedLive(
    "--drop-meta given to the first run holds for the later ones into the same target (a migrate's waves, a resumed run)",
    () =>
      Effect.gen(function* () {
        const tagged = (_: string, line: string) => {
          const r = JSON.parse(line) as { meta?: Record<string, unknown> }
          return JSON.stringify({
            ...r,
            meta: { ...r.meta, tag: [{ system: "urn:example:ward", code: "3" }] },
          })
        }
        const { dir, manifest } = yield* sampleArchive(true, () => false, tagged)
        const sandbox = yield* target()
        const client = yield* clientFor(sandbox.baseUrl)
        const first = manifest.files.filter((f) => f.type === "Patient")
        const rest = manifest.files.filter((f) => f.type !== "Patient")
        yield* Import.run({ client, archive: dir, files: first, dropMeta: ["tag"] })
        const events: Array<Import.ImportEvent> = []
        yield* Import.run({
          client,
          archive: dir,
          files: rest,
          onEvent: (e) => Effect.sync(() => void events.push(e)),
        })
        const systems = (type: string) =>
          Array.from(sandbox.store.iterate(type), (r) =>
            ((JSON.parse(r.json) as { meta?: { tag?: Array<{ system: string }> } }).meta?.tag ?? []).map(
              (t) => t.system,
            ),
          )
        for (const type of ["Patient", "Encounter"]) {
          const all = systems(type)
          assert.isAbove(all.length, 0)
          for (const s of all) assert.deepStrictEqual(s, ["urn:ferry:source"])
        }
        assert.isFalse(events.some((e) => e.event === "warning" && String(e.detail).includes("--drop-meta")))
        // another setting given later: said, and followed from then on
        const again = yield* sampleArchive(true, () => false, tagged)
        const other = yield* target()
        const otherClient = yield* clientFor(other.baseUrl)
        yield* Import.run({ client: otherClient, archive: again.dir, files: first, dropMeta: ["tag"] })
        const said: Array<Import.ImportEvent> = []
        yield* Import.run({
          client: otherClient,
          archive: again.dir,
          files: rest,
          dropMeta: ["security"],
          onEvent: (e) => Effect.sync(() => void said.push(e)),
        })
        assert.isTrue(
          said.some(
            (e) =>
              e.event === "warning" &&
              String(e.detail).startsWith(
                "--drop-meta security differs from what the earlier run into this target dropped (tag)",
              ),
          ),
        )
      }),
  )

  it.scopedLive(
    "a target that declares another FHIR version than R4 is warned about before anything is sent",
    () =>
      Effect.gen(function* () {
        const { dir } = yield* sampleArchive()
        const base = yield* htmlNotFound("3.0.2")
        const events: Array<Import.ImportEvent> = []
        yield* Effect.exit(
          Import.run({
            client: yield* clientFor(base),
            archive: dir,
            strategy: "post",
            onEvent: (e) => Effect.sync(() => void events.push(e)),
          }),
        )
        const warning = events.find((e) => e.event === "warning")
        assert.include(
          String(warning?.detail),
          "the target declares FHIR 3.0.2; the archive holds FHIR R4 (4.0.x)",
        )
        assert.isFalse(events.some((e) => e.event === "chunk"))
      }),
  )

  it.scopedLive(
    "$import in waves (files subsets): a later wave keeps what the target rejected in an earlier one",
    () =>
      Effect.gen(function* () {
        const { dir, manifest, expected } = yield* sampleArchive(false)
        const sandbox = yield* target({ rejectRule: { type: "Immunization" } })
        const client = yield* clientFor(sandbox.baseUrl)
        const first = manifest.files.filter((f) => f.type === "Patient" || f.type === "Immunization")
        const rest = manifest.files.filter((f) => !first.includes(f))
        yield* Import.run({ client, archive: dir, strategy: "import", files: first })
        assert.strictEqual(Imports.pendingQuarantine(dir, sandbox.baseUrl), expected.Immunization)
        yield* Import.run({ client, archive: dir, strategy: "import", files: rest })
        assert.strictEqual(Imports.pendingQuarantine(dir, sandbox.baseUrl), expected.Immunization)
        // the wave that sends those files again replaces their rejections (none twice)
        yield* Import.run({ client, archive: dir, strategy: "import", files: first })
        assert.strictEqual(Imports.pendingQuarantine(dir, sandbox.baseUrl), expected.Immunization)
        const lines = NFS.readFileSync(
          Path.join(Imports.quarantineDir(dir, sandbox.baseUrl), "Immunization.ndjson"),
          "utf8",
        )
          .trim()
          .split("\n")
        assert.strictEqual(lines.length, expected.Immunization)
      }),
  )

  it.scopedLive(
    "what kills leave in quarantine (a torn last line, a resource set aside twice, a stopped replay) counts once and replays once",
    () =>
      Effect.gen(function* () {
        const { dir, expected } = yield* sampleArchive()
        const sandbox = yield* target({ rejectRule: { type: "Device", message: "no devices" } })
        const client = yield* clientFor(sandbox.baseUrl)
        yield* Import.run({ client, archive: dir })
        const file = Path.join(Imports.quarantineDir(dir, sandbox.baseUrl), "Device.ndjson")
        const first = NFS.readFileSync(file, "utf8").split("\n")[0]!
        // a replay stopped between its two files, and a kill mid-append (a resource spans pages)
        NFS.writeFileSync(`${file}${Imports.REPLAYING}`, `${first}\n`)
        NFS.appendFileSync(file, first.slice(0, 40))
        // chunks the kill kept from the journal are sent again: their refusals are set aside again
        NFS.rmSync(Imports.journalPath(dir, sandbox.baseUrl))
        yield* Import.run({ client, archive: dir })
        assert.strictEqual(Imports.pendingQuarantine(dir, sandbox.baseUrl), expected.Device)
        // the replay reads every line (none glued to a torn one) and sets each Device aside once
        const retried = yield* Import.run({ client, archive: dir, retryQuarantine: true })
        assert.strictEqual(retried.quarantined, expected.Device)
        const keys = NFS.readFileSync(file, "utf8")
          .trim()
          .split("\n")
          .map((l) => Imports.quarantineKey(l))
        assert.strictEqual(keys.length, expected.Device)
        assert.strictEqual(new Set(keys).size, expected.Device)
        assert.strictEqual(Imports.pendingQuarantine(dir, sandbox.baseUrl), expected.Device)
      }),
  )

  it.scopedLive(
    "a data file holding fewer resources than its manifest entry says: ImportError (Archive), nothing sent",
    () =>
      Effect.gen(function* () {
        const { dir, manifest } = yield* sampleArchive()
        // an archive whose manifest and checksums say so (written that way): the count is what is wrong
        const miscounted = {
          ...manifest,
          files: manifest.files.map((f) => (f.type === "Encounter" ? { ...f, count: f.count + 1 } : f)),
        }
        yield* Archive.writeManifest(dir, miscounted)
        yield* Archive.writeChecksums(dir, miscounted)
        const sandbox = yield* target()
        const client = yield* clientFor(sandbox.baseUrl)
        const e = failure(yield* Effect.exit(Import.run({ client, archive: dir }))).pipe(Option.getOrThrow)
        assert.strictEqual(e._tag, "ImportError")
        assert.match(e.message, /Encounter\.000\.ndjson/)
        assert.match(e.message, /manifest says/)
        assert.strictEqual(sandbox.store.countAll(), 0)
      }),
  )

  it.scopedLive(
    "a manifest edited after the export (its checksum row not): ImportError (Archive) naming manifest.json, nothing sent",
    () =>
      Effect.gen(function* () {
        const { dir, manifest } = yield* sampleArchive()
        // the manifest rewritten (another transactionTime), the checksums untouched
        yield* Archive.writeManifest(dir, { ...manifest, transactionTime: "2020-01-01T00:00:00Z" })
        const sandbox = yield* target()
        const client = yield* clientFor(sandbox.baseUrl)
        const e = failure(yield* Effect.exit(Import.run({ client, archive: dir }))).pipe(Option.getOrThrow)
        assert.strictEqual(e._tag, "ImportError")
        assert.match(e.message, /manifest\.json does not hold the bytes the export recorded/)
        assert.strictEqual(sandbox.store.countAll(), 0)
      }),
  )

  it.scopedLive("413 on a 60-entry limit: chunks of 200 are split in halves until they fit", () =>
    Effect.gen(function* () {
      const { dir, expected } = yield* sampleArchive()
      const sandbox = yield* target({ maxBundleEntries: 60 })
      const client = yield* clientFor(sandbox.baseUrl)
      const events: Array<Import.ImportEvent> = []
      const summary = yield* Import.run({
        client,
        archive: dir,
        bundleSize: 200,
        onEvent: (e) => Effect.sync(() => void events.push(e)),
      })
      assert.strictEqual(summary.quarantined, 0)
      assert.isTrue(events.some((e) => e.event === "split"))
      assert.deepStrictEqual(countsOf(sandbox), expected)
    }),
  )

  it.scopedLive(
    "post, 60-entry limit: updates of resources the id map holds (a run killed before its chunks were journaled) are split too, not fatal",
    () =>
      Effect.gen(function* () {
        const { dir, expected } = yield* sampleArchive()
        const sandbox = yield* target({ maxBundleEntries: 60, refuseClientIds: true })
        const client = yield* clientFor(sandbox.baseUrl)
        const first = yield* Import.run({ client, archive: dir, bundleSize: 200, strategy: "post" })
        assert.strictEqual(first.quarantined, 0)
        // the id map stays, the chunks' journal lines are gone: every resource is known, each chunk an update
        NFS.rmSync(Imports.journalPath(dir, sandbox.baseUrl))
        const events: Array<Import.ImportEvent> = []
        const again = yield* Import.run({
          client,
          archive: dir,
          bundleSize: 200,
          strategy: "post",
          onEvent: (e) => Effect.sync(() => void events.push(e)),
        })
        assert.strictEqual(again.quarantined, 0)
        assert.isTrue(events.some((e) => e.event === "split"))
        // updated in place: no duplicates
        assert.deepStrictEqual(countsOf(sandbox), expected)
      }),
  )

  it.scopedLive(
    "attachment blobs: put makes a copy per resource that points at them (its security context), after it lands; post one tagged JSON Binary",
    () =>
      Effect.gen(function* () {
        // an archive whose first two DocumentReferences point at one file-host attachment, whose blob is in it
        const url = "https://files.example/doc.txt"
        const owners: Array<string> = []
        const { dir, manifest } = yield* sampleArchive(true, undefined, (name, line) => {
          if (!name.startsWith("DocumentReference") || owners.length >= 2) return line
          owners.push(`DocumentReference/${(JSON.parse(line) as { id: string }).id}`)
          return line.replace(
            '"content":[',
            `"content":[{"attachment":{"contentType":"text/plain","url":"${url}"}},`,
          )
        })
        const bytes = Buffer.from("ferry attachment bytes")
        const sha = createHash("sha256").update(bytes).digest("hex")
        yield* Attachments.put(dir, Stream.make(new Uint8Array(bytes)), {
          contentType: "text/plain",
          sourceUrl: url,
        })
        // the blob listed, as an export lists each it stores
        yield* Archive.writeChecksums(dir, manifest)
        const linesOf = (sandbox: Sandbox.SandboxHandle) =>
          NFS.readFileSync(Imports.binariesPath(dir, sandbox.baseUrl), "utf8")
            .trim()
            .split("\n")
            .map((l) => JSON.parse(l) as { sha256: string; id: string; owner?: string })
        const attachmentUrl = (sandbox: Sandbox.SandboxHandle, key: string) => {
          const doc = JSON.parse(sandbox.store.read("DocumentReference", key.split("/")[1]!)!.json) as {
            content: ReadonlyArray<{ attachment: { url?: string } }>
          }
          return doc.content[0]!.attachment.url
        }

        // put: one copy per owner, under an id of the blob and the owner, its securityContext the owner
        const put = yield* target({})
        const putClient = yield* clientFor(put.baseUrl)
        const summary = yield* Import.run({ client: putClient, archive: dir })
        assert.strictEqual(summary.binaries, 2)
        const lines = linesOf(put)
        assert.deepStrictEqual(
          lines.map((l) => [l.sha256, l.owner, l.id]).sort(),
          owners.map((o) => [sha, o, Import.ownedBinaryIdFor(sha, o)]).sort(),
        )
        for (const l of lines) {
          assert.isTrue(put.store.getBinary(l.id)!.bytes.equals(bytes))
          const binary = JSON.parse(put.store.read("Binary", l.id)!.json) as { securityContext?: unknown }
          assert.deepStrictEqual(binary.securityContext, { reference: l.owner })
          assert.strictEqual(attachmentUrl(put, l.owner!), `Binary/${l.id}`)
        }
        assert.strictEqual(put.store.count("Binary"), 2)
        // the record lost: the rerun sends nothing again (every chunk landed), and makes no other copy
        NFS.rmSync(Imports.binariesPath(dir, put.baseUrl))
        yield* Import.run({ client: putClient, archive: dir })
        assert.strictEqual(put.store.count("Binary"), 2)

        // a target that ignores X-Security-Context on a raw Binary: the copies go as JSON Binaries carrying it
        const ignoring = yield* Sandbox.start(
          {},
          {
            plugins: [
              (router) =>
                router.use(async (ctx, next) => {
                  delete ctx.req.headers["x-security-context"]
                  await next()
                }),
              ...Sandbox.defaultPlugins,
            ],
          },
        )
        const events: Array<Import.ImportEvent> = []
        yield* Import.run({
          client: yield* clientFor(ignoring.baseUrl),
          archive: dir,
          onEvent: (e) => Effect.sync(() => void events.push(e)),
        })
        for (const l of linesOf(ignoring)) {
          assert.isTrue(ignoring.store.getBinary(l.id)!.bytes.equals(bytes))
          const binary = JSON.parse(ignoring.store.read("Binary", l.id)!.json) as {
            securityContext?: unknown
          }
          assert.deepStrictEqual(binary.securityContext, { reference: l.owner })
        }
        assert.isTrue(
          events.some(
            (e) => e.event === "warning" && String(e.detail).includes("without the security context"),
          ),
        )

        // post: one tagged copy of the blob, made before the resources (their ids are the target's)
        const post = yield* target({ refuseClientIds: true })
        const postClient = yield* clientFor(post.baseUrl)
        assert.strictEqual((yield* Import.run({ client: postClient, archive: dir })).binaries, 1)
        const [line] = linesOf(post)
        assert.strictEqual(line!.sha256, sha)
        assert.isUndefined(line!.owner)
        const stored = JSON.parse(post.store.read("Binary", line!.id)!.json) as {
          meta: { tag: ReadonlyArray<{ system: string; code: string }> }
        }
        assert.deepStrictEqual(stored.meta.tag, [{ system: "urn:ferry:sha256", code: sha }])
        assert.isTrue(post.store.getBinary(line!.id)!.bytes.equals(bytes))
        // the record lost: the rerun uploads again and still finds one Binary
        NFS.rmSync(Imports.binariesPath(dir, post.baseUrl))
        yield* Import.run({ client: postClient, archive: dir })
        assert.strictEqual(post.store.count("Binary"), 1)
      }),
  )

  it.scopedLive(
    "post: a Bundle refused for one entry is retried group by group: a reference cycle goes whole and lands, only the refused entry is quarantined; --retry-quarantine lands a cycle across types in one Bundle",
    () =>
      Effect.gen(function* () {
        const patient = { resourceType: "Patient", id: "p1" }
        const encounter = {
          resourceType: "Encounter",
          id: "e1",
          status: "finished",
          subject: { reference: "Patient/p1" },
          diagnosis: [{ condition: { reference: "Condition/c1" } }],
        }
        const condition = {
          resourceType: "Condition",
          id: "c1",
          subject: { reference: "Patient/p1" },
          encounter: { reference: "Encounter/e1" },
        }
        const observation = {
          resourceType: "Observation",
          id: "o1",
          status: "final",
          subject: { reference: "Patient/p1" },
        }
        const dir = Path.join(yield* tempDir, "cycle")
        const init = yield* Archive.create(dir, {
          tool: { name: "ferry-test", version: "0" },
          source: { baseUrl: source },
          request: { level: "system", url: `${source}/$export`, parameters: {} },
        })
        const entries: Array<Manifest.FileEntry> = []
        for (const r of [patient, encounter, condition, observation])
          entries.push(
            yield* Archive.writeFile(
              dir,
              { section: "files", type: r.resourceType, compression: "none" },
              Stream.make(JSON.stringify(r)),
            ),
          )
        const written = Manifest.addFiles({ ...init, complete: true }, "files", entries)
        yield* Archive.writeManifest(dir, written)
        yield* Archive.writeChecksums(dir, written)

        // 1. the Observation is refused: the Bundle of all four fails, then each group goes alone
        const refusing = yield* target({ refuseClientIds: true, rejectRule: { type: "Observation" } })
        const first = yield* Import.run({
          client: yield* clientFor(refusing.baseUrl),
          archive: dir,
          strategy: "post",
        })
        assert.strictEqual(first.quarantined, 1)
        assert.deepStrictEqual(countsOf(refusing), { Patient: 1, Encounter: 1, Condition: 1 })

        // 2. the same archive into a target that refuses Encounters: the cycle is quarantined whole; the same
        // target (its port and database) without that rule: one --retry-quarantine lands Encounter and
        // Condition together (one type's file at a time, each waited on the other)
        const port = yield* Effect.async<number>((resume) => {
          const probe = Http.createServer()
          probe.listen(0, "127.0.0.1", () => {
            const p = (probe.address() as AddressInfo).port
            probe.close(() => resume(Effect.succeed(p)))
          })
        })
        const db = Path.join(yield* tempDir, "strict.sqlite")
        const second = yield* Effect.scoped(
          Effect.gen(function* () {
            const strict = yield* Sandbox.start({
              port,
              db,
              refuseClientIds: true,
              rejectRule: { type: "Encounter" },
            })
            const summary = yield* Import.run({
              client: yield* clientFor(strict.baseUrl),
              archive: dir,
              strategy: "post",
            })
            assert.deepStrictEqual(countsOf(strict), { Patient: 1, Observation: 1 })
            return summary
          }),
        )
        assert.strictEqual(second.quarantined, 2)
        const fixed = yield* Sandbox.start({ port, db, refuseClientIds: true })
        const retried = yield* Import.run({
          client: yield* clientFor(fixed.baseUrl),
          archive: dir,
          strategy: "post",
          retryQuarantine: true,
          // Bundles of one: the cycle goes as one group larger than a Bundle
          bundleSize: 1,
        })
        assert.strictEqual(retried.quarantined, 0)
        assert.deepStrictEqual(countsOf(fixed), { Patient: 1, Observation: 1, Encounter: 1, Condition: 1 })
        // the cycle's references point at each other's new ids
        const e = JSON.parse([...fixed.store.iterate("Encounter")][0]!.json) as typeof encounter
        const c = [...fixed.store.iterate("Condition")][0]!
        assert.strictEqual(e.diagnosis[0]!.condition.reference, `Condition/${c.id}`)
      }),
  )
})
