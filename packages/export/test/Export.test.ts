import * as NFS from "node:fs"
import * as Path from "node:path"
import { HttpClientRequest } from "@effect/platform"
import { assert, describe, it, layer } from "@effect/vitest"
import * as Archive from "@ferry/archive/Archive"
import { FhirError } from "@ferry/core/Errors"
import * as ArchiveAttachments from "@ferry/archive/Attachments"
import * as Sandbox from "@ferry/sandbox/Sandbox"
import { Cause, Deferred, Effect, Exit, Fiber, Option, Stream } from "effect"
import { ExportError } from "../src/ExportError.js"
import * as Crawl from "../src/Crawl.js"
import * as Export from "../src/Export.js"
import {
  clientFor,
  dataKeys,
  loopbackServer,
  dataLines,
  events,
  readNdjson,
  recordingClient,
  sample10,
  setFaults,
  sha256File,
  storeCounts,
  synthea,
  tempDir,
  typeCounts,
} from "./helpers/sandbox.js"

const fast = { pollInterval: "50 millis" } as const

layer(
  Sandbox.Sandbox.layer({ seed: [synthea], bulk: { resourcesPerFile: 5000, retryAfterSeconds: 0 } } as never),
  {
    timeout: 120_000,
    excludeTestServices: true,
  },
)("Export.run on the seeded Synthea data", (it) => {
  it.scoped(
    "system level: every resource lands, counts per type equal the sandbox's, sha256 match the files",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const out = Path.join(yield* tempDir, "a")
        const client = yield* clientFor(sandbox.baseUrl)
        const summary = yield* Export.run({ client, out, params: { level: "system" }, ...fast })
        const expected = storeCounts(sandbox.store)
        assert.strictEqual(
          Object.values(expected).reduce((a, b) => a + b, 0),
          38_473,
        )
        assert.strictEqual(summary.resources, 38_473)
        assert.deepStrictEqual(typeCounts(summary), expected)
        assert.strictEqual(dataKeys(out).size, 38_473)
        const manifest = JSON.parse(NFS.readFileSync(Path.join(out, "manifest.json"), "utf8")) as {
          files: Array<{ path: string; sha256: string }>
          transactionTime: string
        }
        assert.isAbove(manifest.files.length, 17)
        for (const f of manifest.files)
          assert.strictEqual(sha256File(Path.join(out, f.path)), f.sha256, f.path)
        assert.isTrue(summary.released)
        assert.strictEqual(manifest.transactionTime, summary.transactionTime)
        assert.deepStrictEqual(yield* Archive.verifyChecksums(out), [])
        const read = yield* Archive.readManifest(out)
        assert.isTrue(read.complete)
        assert.strictEqual(read.request.level, "system")
        assert.strictEqual((NFS.statSync(Path.join(out, "manifest.json")).mode & 0o777).toString(8), "600")
        assert.strictEqual((NFS.statSync(Path.join(out, "data")).mode & 0o777).toString(8), "700")
        assert.strictEqual(
          (NFS.statSync(Path.join(out, "data", "Patient.000.ndjson")).mode & 0o777).toString(8),
          "600",
        )
        // A rerun on a finished archive does nothing more.
        const again = yield* Export.run({ client, out, params: { level: "system" }, ...fast })
        assert.strictEqual(again.resources, 38_473)
        assert.strictEqual(events(out).filter((e) => e.event === "kickoff").length, 1)
      }),
    120_000,
  )

  it.scoped(
    "patient level: the compartment of every patient (100 patients), POST with patient= limits it",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const dir = yield* tempDir
        const client = yield* clientFor(sandbox.baseUrl)
        const all = yield* Export.run({
          client,
          out: Path.join(dir, "all"),
          params: { level: "patient", types: ["Patient", "Encounter"] },
          ...fast,
        })
        assert.deepStrictEqual(typeCounts(all), { Patient: 100, Encounter: sandbox.store.count("Encounter") })
        const patient = [...dataKeys(Path.join(dir, "all")).keys()].find((k) => k.startsWith("Patient/"))!
        const one = yield* Export.run({
          client,
          out: Path.join(dir, "one"),
          params: { level: "patient", types: ["Patient", "Encounter"], patients: [patient] },
          ...fast,
        })
        assert.strictEqual(one.types.Patient?.resources, 1)
        assert.isAbove(one.types.Encounter?.resources ?? 0, 0)
        assert.isBelow(one.types.Encounter?.resources ?? 0, all.types.Encounter!.resources)
        const encounters = NFS.readFileSync(Path.join(dir, "one", "data", "Encounter.000.ndjson"), "utf8")
          .split("\n")
          .filter((l) => l !== "")
          .map((l) => JSON.parse(l) as { subject?: { reference?: string } })
        for (const e of encounters)
          assert.include(e.subject?.reference ?? "", patient.slice("Patient/".length))
        assert.isTrue(events(Path.join(dir, "one")).some((e) => e.event === "kickoff" && e.post === true))
      }),
    120_000,
  )

  it.scoped(
    "group level: the Group's members",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const dir = yield* tempDir
        const client = yield* clientFor(sandbox.baseUrl)
        const summary = yield* Export.run({
          client,
          out: Path.join(dir, "g"),
          params: {
            level: "group",
            groupId: "d9f31445-f448-48c0-af57-295c005e07df",
            types: ["Patient", "Immunization"],
          },
          ...fast,
        })
        assert.deepStrictEqual(typeCounts(summary), {
          Patient: 100,
          Immunization: sandbox.store.count("Immunization"),
        })
        const missing = yield* Export.run({
          client,
          out: Path.join(dir, "x"),
          params: { level: "group", types: ["Patient"] },
          ...fast,
        }).pipe(Effect.exit)
        assert.isTrue(Exit.isFailure(missing))
      }),
    120_000,
  )

  it.scoped(
    "crawl: the same resources as the bulk export, through search",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const dir = yield* tempDir
        const client = yield* clientFor(sandbox.baseUrl)
        const types = ["Patient", "Encounter", "Organization", "Group"]
        const crawled = yield* Export.run({
          client,
          out: Path.join(dir, "c"),
          params: { level: "system", types },
          mode: "crawl",
        })
        assert.strictEqual(crawled.mode, "crawl")
        const expected = Object.fromEntries(types.map((t) => [t, sandbox.store.count(t)]))
        assert.deepStrictEqual(typeCounts(crawled), expected)
        assert.deepStrictEqual(
          dataLines(Path.join(dir, "c")).length,
          types.reduce((n, t) => n + sandbox.store.count(t), 0),
        )
        const { client: recording, searches } = yield* recordingClient(sandbox.baseUrl)
        const patient = yield* Export.run({
          client: recording,
          out: Path.join(dir, "p"),
          params: { level: "patient", types: ["Patient", "Immunization"] },
          mode: "crawl",
        })
        assert.deepStrictEqual(typeCounts(patient), {
          Patient: 100,
          Immunization: sandbox.store.count("Immunization"),
        })
        // the 100 patients in batches of as many of these ids as fit 1,500 encoded characters (30, 30, 30, 10): the
        // first searched both ways (as one search, and patient by patient), and once the server answered it alike
        // (it ORs `patient=Patient/a,Patient/b,…`), the other three as one search each: 34 searches, not 100 (next
        // pages aside)
        const immunizationSearches = searches.filter(
          (u) => /\/Immunization\?.*patient=/.test(u) && !u.includes("_cursor"),
        )
        assert.lengthOf(
          immunizationSearches.filter((u) => u.includes("%2C")),
          4,
        )
        assert.lengthOf(immunizationSearches, 34)
        // a Patient-level crawl of every type: the compartment's parameters the sandbox does not declare
        // (performer, asserter, …) are not searched (a search by one is refused), and that is said
        const everything = yield* Export.run({
          client,
          out: Path.join(dir, "pa"),
          params: { level: "patient", types: [] },
          mode: "crawl",
        })
        const bulk = yield* Export.run({
          client,
          out: Path.join(dir, "pb"),
          params: { level: "patient", types: [] },
        })
        assert.strictEqual(bulk.mode, "bulk")
        // the Group (linked by `member`, which the sandbox does not search) is what the crawl cannot find
        const { Group: groups, ...rest } = typeCounts(bulk)
        assert.strictEqual(groups, 1)
        assert.deepStrictEqual(typeCounts(everything), rest)
        const warned = events(Path.join(dir, "pa"))
          .filter((e) => e.event === "warning")
          .map((e) => String(e.detail))
        assert.isTrue(
          warned.some((w) =>
            /declares none of the search parameters that link these types to a patient.*: .*Group \(member; the server holds 1\)/.test(
              w,
            ),
          ),
          warned.join("\n"),
        )
        assert.isTrue(
          warned.some((w) =>
            /does not declare these search parameters of the Patient compartment.*: .*Condition \(asserter; the server holds \d+\)/.test(
              w,
            ),
          ),
          warned.join("\n"),
        )
        // _until and _elements are the crawl's searches too: before the epoch nothing; ids and genders only
        const none = yield* Export.run({
          client,
          out: Path.join(dir, "u"),
          params: { level: "system", types: ["Patient"], until: "1970-01-01T00:00:00Z" },
          mode: "crawl",
        })
        assert.strictEqual(none.resources, 0)
        // the archive's data ends at _until: a later --since auto starts there, not at the time of the crawl
        assert.strictEqual(none.transactionTime, "1970-01-01T00:00:00.000Z")
        // --since to the second: the crawl searches after that instant, as _since means, not after the whole second
        // (the search's precision), so what changed within that second is not lost
        const stamps = Array.from(sandbox.store.iterate("Patient")).map(
          (r) => (JSON.parse(r.json) as { meta: { lastUpdated: string } }).meta.lastUpdated,
        )
        // (one whose milliseconds are not .000, which the truncated second would hold)
        const newest = stamps
          .filter((t) => !/\.0*Z$/.test(t) && /\.\d+Z$/.test(t))
          .sort()
          .at(-1)!
        const second = `${newest.slice(0, 19)}Z`
        const changedWithin = stamps.filter((t) => Date.parse(t) > Date.parse(second)).length
        assert.isAbove(changedWithin, 0)
        const sinceSecond = yield* Export.run({
          client,
          out: Path.join(dir, "ss"),
          params: { level: "system", types: ["Patient"], since: second },
          mode: "crawl",
        })
        assert.strictEqual(sinceSecond.resources, changedWithin)
        // a crawl delta cannot see deletions: it says so
        yield* Export.run({
          client,
          out: Path.join(dir, "s"),
          params: { level: "system", types: ["Patient"], since: "2000-01-01T00:00:00Z" },
          mode: "crawl",
        })
        assert.isTrue(
          events(Path.join(dir, "s")).some(
            (e) => e.event === "warning" && String(e.detail).includes("a search crawl cannot see deletions"),
          ),
        )
        yield* Export.run({
          client,
          out: Path.join(dir, "e"),
          params: { level: "system", types: ["Patient"], elements: ["Patient.gender"] },
          mode: "crawl",
        })
        const subset = dataLines(Path.join(dir, "e")).map((l) => JSON.parse(l) as Record<string, unknown>)
        assert.strictEqual(subset.length, 100)
        for (const r of subset)
          assert.deepStrictEqual(Object.keys(r).sort(), ["gender", "id", "meta", "resourceType"])
        const refused = yield* Effect.exit(
          Export.run({
            client,
            out: Path.join(dir, "o"),
            params: { level: "patient", types: ["Patient"], organizeOutputBy: "Patient" },
            mode: "crawl",
          }),
        )
        assert.include(String(failureOf(refused)), "cannot honour --organize-output-by")
      }),
    120_000,
  )

  it.scoped(
    "the archive's transactionTime: a resumed crawl keeps the first run's; a bulk export with _until ends there",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const dir = yield* tempDir
        const client = yield* clientFor(sandbox.baseUrl)
        const out = Path.join(dir, "resumed")
        const params = { level: "system", types: ["Patient", "Organization"] } as const
        const first = yield* Export.run({ client, out, params, mode: "crawl" })
        // as if killed before Organization's file was done: the journal forgets it and the completion
        yield* Archive.updateManifest(out, (m) => ({ ...m, complete: false }))
        const journal = NFS.readFileSync(Path.join(out, "journal.ndjson"), "utf8").split("\n")
        NFS.writeFileSync(
          Path.join(out, "journal.ndjson"),
          journal
            .filter((l) => !l.includes('"key":"complete"') && !l.includes('"file:output:Organization:0"'))
            .join("\n"),
        )
        NFS.rmSync(Path.join(out, "data", "Organization.000.ndjson"))
        // the crawl's time is the server's Date header (whole seconds)
        yield* Effect.sleep("1100 millis")
        const resumed = yield* Export.run({ client, out, params, mode: "crawl" })
        assert.strictEqual(resumed.resources, first.resources)
        // Patient's file is from the first run: the data reaches no further than its start
        assert.strictEqual(resumed.transactionTime, first.transactionTime)

        const until = yield* Export.run({
          client,
          out: Path.join(dir, "until"),
          params: { level: "system", types: ["Patient"], until: "2000-01-01T00:00:00Z" },
          ...fast,
        })
        assert.strictEqual(until.mode, "bulk")
        assert.strictEqual(until.transactionTime, "2000-01-01T00:00:00.000Z")
      }),
    120_000,
  )
})

describe("Crawl.toMillisecond", () => {
  it("writes an instant to the millisecond at least, as a search compares by the precision written", () => {
    assert.strictEqual(Crawl.toMillisecond("2026-12-06T10:51:00Z"), "2026-12-06T10:51:00.000Z")
    assert.strictEqual(Crawl.toMillisecond("2026-12-06T10:51:00.5+01:00"), "2026-12-06T10:51:00.500+01:00")
    assert.strictEqual(Crawl.toMillisecond("2026-12-06T10:51:00.123456Z"), "2026-12-06T10:51:00.123456Z")
    assert.strictEqual(Crawl.toMillisecond("2026-12-06"), "2026-12-06")
  })
})

describe("Crawl.patientBatches", () => {
  it("cuts the patients into batches of at most 50, their references joined and encoded at most 1,500 characters", () => {
    const ids = Array.from({ length: 120 }, (_, i) => `p${i}`)
    const batches = Crawl.patientBatches(ids)
    assert.deepStrictEqual(
      batches.map((b) => b.length),
      [50, 50, 20],
    )
    assert.deepStrictEqual(batches.flat(), ids)
    // 64-character ids: `Patient%2F<id>%2C` is 77 characters, so 19 fit in 1,500
    const long = Array.from({ length: 60 }, (_, i) => String(i).padStart(64, "x"))
    const longBatches = Crawl.patientBatches(long)
    assert.deepStrictEqual(
      longBatches.map((b) => b.length),
      [19, 19, 19, 3],
    )
    for (const b of longBatches)
      assert.isAtMost(encodeURIComponent(b.map((id) => `Patient/${id}`).join(",")).length, 1500)
    assert.deepStrictEqual(Crawl.patientBatches([]), [])
  })
})

describe("Crawl.batchedSearch", () => {
  // patients p0…p8 and the resources that name them (o4 names two); batches of three: in the first only its first
  // patient has resources
  const held: Record<string, ReadonlyArray<string>> = {
    p0: ["o1"],
    p1: [],
    p2: [],
    p3: ["o2"],
    p4: ["o3", "o4"],
    p5: ["o4", "o7"],
    p6: ["o5"],
    p7: [],
    p8: ["o6"],
  }
  const all = ["o1", "o2", "o3", "o4", "o5", "o6", "o7"]
  type Server = (values: ReadonlyArray<string>) => ReadonlyArray<string> | number
  /** `batchedSearch` over `ids` (p0…p8) against `server`: the resources found (each once, sorted) and the values asked. */
  const run = (server: Server, ids: ReadonlyArray<string> = Object.keys(held), size = 3) =>
    Effect.gen(function* () {
      const asked: Array<string> = []
      const byValue = (value: string) => {
        asked.push(value)
        const answer = server(value.split(","))
        return typeof answer === "number"
          ? Stream.fail(
              new FhirError({
                reason: "Status",
                method: "GET",
                url: `http://h/fhir/X?v=${value}`,
                status: answer,
              }),
            )
          : Stream.fromIterable(answer.map((id) => ({ resourceType: "Observation", id })))
      }
      const found = yield* Stream.runCollect(Crawl.batchedSearch(byValue, (id) => id, ids, size))
      return { found: [...new Set([...found].map((r) => r.id))].sort(), asked }
    })
  const union = (values: ReadonlyArray<string>) => [...new Set(values.flatMap((v) => held[v] ?? []))]
  // the first batch found resources of one patient only (nothing to check a batch on); the second, of three: then
  // it goes as one search too
  const checkedTwice = ["p0", "p1", "p2", "p3", "p4", "p5", "p3,p4,p5"]
  const oneByOne = [...checkedTwice, "p6", "p7", "p8"]

  it.effect(
    "a server that ORs the values: patient by patient until a batch's patients found the same as one search, then batches",
    () =>
      Effect.gen(function* () {
        const { found, asked } = yield* run(union)
        assert.deepStrictEqual(found, all)
        assert.deepStrictEqual(asked, [...checkedTwice, "p6,p7,p8"])
      }),
  )

  it.effect("a server that reads only the first value: the check's difference, then one by one", () =>
    Effect.gen(function* () {
      const { found, asked } = yield* run((values) => held[values[0]!] ?? [])
      assert.deepStrictEqual(found, all)
      assert.deepStrictEqual(asked, oneByOne)
    }),
  )

  it.effect(
    "a server that reads only the first so many values: the check puts the patients that found something last",
    () =>
      Effect.gen(function* () {
        const { found, asked } = yield* run((values) => union(values.slice(0, 2)))
        assert.deepStrictEqual(found, all)
        assert.deepStrictEqual(asked, oneByOne)
        // p3 and p4 found something, p5 nothing: the check asks `p5,p3,p4`, so a cut after two values shows
        const early: Record<string, ReadonlyArray<string>> = {
          q0: ["r1"],
          q1: ["r2"],
          q2: [],
          q3: ["r3"],
          q4: [],
        }
        const cut = yield* run(
          (values) => [...new Set(values.slice(0, 2).flatMap((v) => early[v] ?? []))],
          Object.keys(early),
        )
        assert.deepStrictEqual(cut.found, ["r1", "r2", "r3"])
        assert.deepStrictEqual(cut.asked, ["q0", "q1", "q2", "q2,q0,q1", "q3", "q4"])
      }),
  )

  it.effect("trusted batches are no longer than the checked one (a long id made it short)", () =>
    Effect.gen(function* () {
      // two 600-character ids fill a batch's 1,500 characters; the third and the short ones after it would make a
      // batch of 5, of which a server reading three values drops two
      const long = (n: number) => `L${n}`.padEnd(600, "x")
      const ids = [long(0), long(1), long(2), "s0", "s1", "s2", "s3", "s4"]
      // a server reading the first three values; every patient has one resource, named after it
      const { found, asked } = yield* run(
        (values) => values.slice(0, 3).map((v) => `o-${v.slice(0, 2)}`),
        ids,
        5,
      )
      assert.lengthOf(found, 8)
      assert.deepStrictEqual(
        asked.map((a) =>
          a
            .split(",")
            .map((v) => v.slice(0, 2))
            .join(","),
        ),
        ["L0", "L1", "L0,L1", "L2,s0", "s1,s2", "s3,s4"],
      )
    }),
  )

  it.effect("a server that reads `a,b` as one value: the check's difference, then one by one", () =>
    Effect.gen(function* () {
      const { found, asked } = yield* run((values) => (values.length > 1 ? [] : union(values)))
      assert.deepStrictEqual(found, all)
      assert.deepStrictEqual(asked, oneByOne)
    }),
  )

  it.effect(
    "a server that answers a batch with an error (400, 500): one by one from there, nothing missed",
    () =>
      Effect.gen(function* () {
        for (const status of [400, 500]) {
          const { found, asked } = yield* run((values) => (values.length > 1 ? status : union(values)))
          assert.deepStrictEqual(found, all)
          assert.deepStrictEqual(asked, oneByOne)
        }
        // also a batch after the server was trusted
        const late = yield* run((values) =>
          values.length > 1 && values.includes("p6") ? 414 : union(values),
        )
        assert.deepStrictEqual(late.found, all)
        assert.deepStrictEqual(late.asked, [...checkedTwice, "p6,p7,p8", "p6", "p7", "p8"])
      }),
  )

  it.effect("credentials refused are the crawl's failure, not a batch refused", () =>
    Effect.gen(function* () {
      const failed = yield* Effect.flip(run(() => 403))
      assert.strictEqual(failed._tag, "FhirError")
      assert.strictEqual(failed._tag === "FhirError" ? failed.status : undefined, 403)
    }),
  )
})

describe("crawl against a server paging by offset", () => {
  it.scopedLive("a resource an update moved onto the next page is written once", () =>
    Effect.gen(function* () {
      const patient = (id: string) => ({ resourceType: "Patient", id })
      const origin = yield* loopbackServer((req, res) => {
        const url = new URL(req.url ?? "/", "http://x")
        const json = (body: unknown) => {
          res.writeHead(200, { "content-type": "application/fhir+json", date: new Date().toUTCString() })
          res.end(JSON.stringify(body))
        }
        if (url.pathname === "/fhir/metadata")
          return json({
            resourceType: "CapabilityStatement",
            status: "active",
            kind: "instance",
            fhirVersion: "4.0.1",
            format: ["json"],
            rest: [
              { mode: "server", resource: [{ type: "Patient", interaction: [{ code: "search-type" }] }] },
            ],
          })
        if (url.pathname === "/fhir/Patient") {
          const base = `http://${req.headers.host}/fhir`
          // page 2 repeats p2: an update moved it while the crawl paged (offset paging)
          const second = url.searchParams.get("page") === "2"
          return json({
            resourceType: "Bundle",
            type: "searchset",
            entry: (second ? ["p2", "p3"] : ["p1", "p2"]).map((id) => ({ resource: patient(id) })),
            link: second ? [] : [{ relation: "next", url: `${base}/Patient?page=2` }],
          })
        }
        res.writeHead(404).end()
      })
      const client = yield* clientFor(`${origin}/fhir`)
      const out = Path.join(yield* tempDir, "paged")
      const summary = yield* Export.run({
        client,
        out,
        params: { level: "system", types: ["Patient"] },
        mode: "crawl",
      })
      assert.strictEqual(summary.resources, 3)
      assert.deepStrictEqual([...dataKeys(out).entries()].sort(), [
        ["Patient/p1", 1],
        ["Patient/p2", 1],
        ["Patient/p3", 1],
      ])
    }),
  )
})

describe("crawl parameters", () => {
  const p = (extra: Partial<Parameters<typeof Crawl.typeParams>[0]>) =>
    ({
      level: "system",
      types: [],
      typeFilters: [],
      elements: [],
      patients: [],
      includeAssociatedData: [],
      custom: [],
      ...extra,
    }) as Parameters<typeof Crawl.typeParams>[0]

  it("carries one _typeFilter query and the type's _elements into the type's search", () => {
    const params = p({
      typeFilters: ["Observation?status=final&category=laboratory", "Condition?clinical-status=active"],
      elements: ["id", "Observation.code", "Condition.onset"],
    })
    assert.deepStrictEqual(Crawl.typeParams(params, "Observation"), {
      status: ["final"],
      category: ["laboratory"],
      _elements: ["id,code"],
    })
    assert.deepStrictEqual(Crawl.typeParams(params, "Patient"), { _elements: ["id"] })
    assert.isUndefined(Crawl.unsupported(params))
  })

  it("names what a crawl cannot honour", () => {
    assert.include(Crawl.unsupported(p({ organizeOutputBy: "Patient" })) ?? "", "--organize-output-by")
    assert.include(
      Crawl.unsupported(p({ includeAssociatedData: ["LatestProvenanceResources"] })) ?? "",
      "--include-associated-data",
    )
    assert.include(Crawl.unsupported(p({ custom: [["_mine", "1"]] })) ?? "", "--param _mine")
    assert.include(
      Crawl.unsupported(p({ typeFilters: ["Observation?status=final", "Observation?status=amended"] })) ?? "",
      "more than one --type-filter for Observation",
    )
  })
})

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

layer(
  Sandbox.Sandbox.layer({ seed: [sample10], bulk: { retryAfterSeconds: 0, pollsBeforeDone: 4 } } as never),
  {
    timeout: 60_000,
    excludeTestServices: true,
  },
)("Export.run: resume and incremental (10-patient sandbox)", (it) => {
  const types = ["Patient", "Condition", "Encounter", "Procedure"]

  it.scoped(
    "a run that completed the archive but did not release the job (killed, or --keep-job before): the rerun releases it, once",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const out = Path.join(yield* tempDir, "unreleased")
        const client = yield* clientFor(sandbox.baseUrl)
        const options = { client, out, params: { level: "system" as const, types: ["Patient"] }, ...fast }
        // what a kill between the journal's `complete` and the DELETE leaves: a complete archive, the job kept
        const first = yield* Export.run({ ...options, keepJob: true })
        assert.isFalse(first.released)
        const job = NFS.readFileSync(Path.join(out, "journal.ndjson"), "utf8")
          .split("\n")
          .filter((l) => l !== "")
          .map((l) => JSON.parse(l) as { key: string; data?: { statusUrl?: string } })
          .find((l) => l.key === "job")
        const statusUrl = job?.data?.statusUrl ?? ""
        const status = () => Effect.promise(() => fetch(statusUrl).then((r) => r.status))
        assert.strictEqual(yield* status(), 200)
        const again = yield* Export.run(options)
        assert.isTrue(again.released)
        assert.strictEqual(yield* status(), 404)
        assert.strictEqual(events(out).filter((e) => e.event === "released").length, 1)
        // released once: a third run asks nothing more
        const third = yield* Export.run(options)
        assert.isFalse(third.released)
        assert.strictEqual(events(out).filter((e) => e.event === "released").length, 1)
      }),
  )

  it.scoped(
    "crawl resumed after a kill between a file's rename and its journal line: the type is written again, nothing unlisted stays",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const out = Path.join(yield* tempDir, "crawl-leftover")
        const client = yield* clientFor(sandbox.baseUrl)
        const options = {
          client,
          out,
          params: { level: "system" as const, types: ["Patient", "Condition"] },
          mode: "crawl" as const,
        }
        // the first run stops once its files are planned (nothing journaled); a file it "wrote" is left behind
        const planned = yield* Deferred.make<void>()
        const fiber = yield* Effect.fork(
          Export.run({
            ...options,
            onEvent: (e) =>
              e.event === "files-planned"
                ? Effect.zipRight(Deferred.succeed(planned, undefined), Effect.never)
                : Effect.void,
          }),
        )
        yield* Deferred.await(planned)
        yield* Fiber.interrupt(fiber)
        NFS.mkdirSync(Path.join(out, "data"), { recursive: true })
        NFS.writeFileSync(
          Path.join(out, "data", "Patient.000.ndjson"),
          '{"resourceType":"Patient","id":"half"}\n',
        )
        const summary = yield* Export.run(options)
        assert.deepStrictEqual(typeCounts(summary), {
          Patient: sandbox.store.count("Patient"),
          Condition: sandbox.store.count("Condition"),
        })
        assert.deepStrictEqual(NFS.readdirSync(Path.join(out, "data")).sort(), [
          "Condition.000.ndjson",
          "Patient.000.ndjson",
        ])
        assert.deepStrictEqual(yield* Archive.verifyChecksums(out), [])
      }),
  )

  it.scoped("crawl: decimals as the server wrote them (the sample's MedicationRequests' 1.0s stay 1.0)", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const out = Path.join(yield* tempDir, "decimals")
      const client = yield* clientFor(sandbox.baseUrl)
      yield* Export.run({
        client,
        out,
        params: { level: "system", types: ["MedicationRequest"] },
        mode: "crawl",
      })
      const ones = (text: string) => (text.match(/"value":1\.0[,}]/g) ?? []).length
      const written = ones(NFS.readFileSync(Path.join(sample10, "MedicationRequest.000.ndjson"), "utf8"))
      assert.isAbove(written, 300)
      assert.strictEqual(
        ones(NFS.readFileSync(Path.join(out, "data", "MedicationRequest.000.ndjson"), "utf8")),
        written,
      )
    }),
  )

  it.scoped("downloadRank: ranked types download first; the archive lists files in manifest order", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const dir = yield* tempDir
      const client = yield* clientFor(sandbox.baseUrl)
      const params = { level: "system", types: ["Patient", "Encounter", "Observation"] } as const
      const plain = Path.join(dir, "plain")
      const ranked = Path.join(dir, "ranked")
      yield* Export.run({ client, out: plain, params, parallel: 1, attachments: false, ...fast })
      const rank = (t: string) => (t === "Observation" ? 0 : t === "Patient" ? 2 : 1)
      yield* Export.run({
        client,
        out: ranked,
        params,
        parallel: 1,
        attachments: false,
        downloadRank: rank,
        ...fast,
      })
      const fileTypes = (out: string) =>
        events(out).flatMap((e) => (e.event === "file" && e.kind === "output" ? [String(e.type)] : []))
      const order = fileTypes(ranked)
      assert.deepStrictEqual(
        order,
        [...order].sort((a, b) => rank(a) - rank(b)),
      )
      assert.notDeepEqual(fileTypes(plain), order)
      const paths = (out: string) =>
        (
          JSON.parse(NFS.readFileSync(Path.join(out, "manifest.json"), "utf8")) as {
            files: Array<{ path: string }>
          }
        ).files.map((f) => f.path)
      assert.deepStrictEqual(paths(ranked), paths(plain))
    }),
  )

  it.scoped("interrupted while the job runs: the rerun re-attaches to the same job (one kick-off)", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const out = Path.join(yield* tempDir, "a")
      const client = yield* clientFor(sandbox.baseUrl)
      const kicked = yield* Deferred.make<void>()
      const options = { client, out, params: { level: "system" as const, types }, ...fast }
      const fiber = yield* Effect.fork(
        Export.run({
          ...options,
          onEvent: (e) => (e.event === "kickoff" ? Deferred.succeed(kicked, undefined) : Effect.void),
        }),
      )
      yield* Deferred.await(kicked)
      yield* Fiber.interrupt(fiber)
      assert.isFalse((yield* Archive.readManifest(out)).complete)
      const summary = yield* Export.run(options)
      assert.isTrue(summary.resumed)
      const log = events(out)
      assert.strictEqual(log.filter((e) => e.event === "kickoff").length, 1)
      assert.isTrue(log.some((e) => e.event === "reattach" && typeof e.statusUrl === "string"))
      assert.deepStrictEqual(
        typeCounts(summary),
        Object.fromEntries(types.map((t) => [t, sandbox.store.count(t)])),
      )
    }),
  )

  it.scoped("interrupted during downloads: the rerun fetches only the missing files", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const dir = yield* tempDir
      const out = Path.join(dir, "b")
      const client = yield* clientFor(sandbox.baseUrl)
      const first = yield* Deferred.make<void>()
      const options = { client, out, params: { level: "system" as const, types }, parallel: 1, ...fast }
      // Slow downloads, so that the interruption lands while files remain.
      yield* setFaults(sandbox.baseUrl, { delay: [{ route: "download", ms: 300 }] })
      const fiber = yield* Effect.fork(
        Export.run({
          ...options,
          onEvent: (e) => (e.event === "file" ? Deferred.succeed(first, undefined) : Effect.void),
        }),
      )
      yield* Deferred.await(first)
      yield* Fiber.interrupt(fiber)
      yield* setFaults(sandbox.baseUrl, {})
      const before = events(out).filter((e) => e.event === "file").length
      assert.isAtLeast(before, 1)
      assert.isBelow(before, types.length)
      const summary = yield* Export.run(options)
      const log = events(out)
      assert.strictEqual(log.filter((e) => e.event === "file").length, types.length)
      assert.strictEqual(log.filter((e) => e.event === "kickoff").length, 1)
      const clean = yield* Export.run({ ...options, out: Path.join(dir, "clean") })
      assert.deepStrictEqual(dataLines(out), dataLines(Path.join(dir, "clean")))
      assert.deepStrictEqual(typeCounts(summary), typeCounts(clean))
    }),
  )

  it.scoped(
    "a new kick-off for expired files whose job then vanishes: the files kept from the first job stay (nothing dropped)",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const dir = yield* tempDir
        const out = Path.join(dir, "kept")
        const client = yield* clientFor(sandbox.baseUrl)
        // the first job's Procedure file (the last one, one download at a time) answers 410: the same URLs
        // again, so a new kick-off; that second job is deleted as soon as it is started (its status URL
        // answers 404), and a third one finishes the export
        yield* setFaults(sandbox.baseUrl, { expireFiles: { firstAttempt: true, type: "Procedure" } })
        let kickoffs = 0
        const options = { client, out, params: { level: "system" as const, types }, parallel: 1, ...fast }
        const summary = yield* Export.run({
          ...options,
          attachments: false,
          onEvent: (e) => {
            if (e.event !== "kickoff" || ++kickoffs !== 2) return Effect.void
            return Effect.zipRight(
              setFaults(sandbox.baseUrl, {}),
              Effect.promise(() => fetch(String(e.statusUrl), { method: "DELETE" })),
            )
          },
        })
        const log = events(out)
        assert.strictEqual(log.filter((e) => e.event === "kickoff").length, 3)
        assert.strictEqual(log.filter((e) => e.event === "job-gone").length, 1)
        assert.isFalse(log.some((e) => e.event === "early-dropped"))
        // every file downloaded once: the first job's finished files were kept through the vanished job
        const files = log.filter((e) => e.event === "file").map((e) => String(e.path))
        assert.deepStrictEqual([...new Set(files)].sort(), [...files].sort())
        assert.strictEqual(files.length, types.length)
        // the premise: files of the first job were finished before its successor vanished
        const gone = log.findIndex((e) => e.event === "job-gone")
        assert.isAbove(log.slice(0, gone).filter((e) => e.event === "file").length, 0)
        assert.deepStrictEqual(
          typeCounts(summary),
          Object.fromEntries(types.map((t) => [t, sandbox.store.count(t)])),
        )
      }),
  )

  it.scoped("gzip: data files are stored as .ndjson.gz, checksummed and readable through the archive", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const out = Path.join(yield* tempDir, "gz")
      const client = yield* clientFor(sandbox.baseUrl)
      const summary = yield* Export.run({
        client,
        out,
        params: { level: "system", types },
        gzip: true,
        ...fast,
      })
      const manifest = yield* Archive.readManifest(out)
      assert.isTrue(manifest.files.every((f) => f.compression === "gzip" && f.path.endsWith(".ndjson.gz")))
      assert.deepStrictEqual(yield* Archive.verifyChecksums(out), [])
      let read = 0
      for (const f of manifest.files) read += yield* Stream.runCount(Archive.resources(out, f))
      assert.strictEqual(read, summary.resources)
      assert.deepStrictEqual(
        typeCounts(summary),
        Object.fromEntries(types.map((t) => [t, sandbox.store.count(t)])),
      )
    }),
  )

  it.scoped("--since auto takes the previous archive's transactionTime and gets only what changed", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const dir = yield* tempDir
      const client = yield* clientFor(sandbox.baseUrl)
      const full = yield* Export.run({
        client,
        out: Path.join(dir, "run1"),
        params: { level: "system", types: ["Patient"], since: "auto" },
        ...fast,
      })
      assert.strictEqual(full.since, undefined)
      assert.strictEqual(full.resources, sandbox.store.count("Patient"))
      const patient = readNdjson(Path.join(dir, "run1", "data", "Patient.000.ndjson"))[0]!
      yield* Effect.promise(() =>
        fetch(`${sandbox.baseUrl}/Patient/${patient.id}`, {
          method: "PUT",
          headers: { "content-type": "application/fhir+json" },
          body: JSON.stringify({ ...patient, gender: patient.gender === "male" ? "female" : "male" }),
        }),
      )
      const next = yield* Export.run({
        client,
        out: Path.join(dir, "run2"),
        params: { level: "system", types: ["Patient"], since: "auto" },
        ...fast,
      })
      assert.strictEqual(next.since, full.transactionTime)
      assert.strictEqual(next.resources, 1)
      assert.strictEqual(readNdjson(Path.join(dir, "run2", "data", "Patient.000.ndjson"))[0]!.id, patient.id)
      // The same --out with other options is refused rather than mixed.
      const other = yield* Export.run({
        client,
        out: Path.join(dir, "run2"),
        params: { level: "system", types: ["Condition"] },
        ...fast,
      }).pipe(Effect.exit)
      const error = failureOf(other)
      assert.instanceOf(error, ExportError)
      assert.strictEqual((error as ExportError).reason, "Config")

      // Beside them, newer finished archives that do not hold everything the next delta asks for: another
      // server's and a Group's; and one of Condition only. A delta of Patient continues run2, one of Patient and
      // Condition has no archive holding both (full).
      const copyAs = (name: string, edit: (m: Record<string, unknown>) => Record<string, unknown>) => {
        NFS.cpSync(Path.join(dir, "run2"), Path.join(dir, name), { recursive: true })
        const file = Path.join(dir, name, "manifest.json")
        const m = JSON.parse(NFS.readFileSync(file, "utf8")) as Record<string, unknown>
        NFS.writeFileSync(file, JSON.stringify(edit({ ...m, transactionTime: "2999-01-01T00:00:00.000Z" })))
      }
      copyAs("other-server", (m) => ({ ...m, source: { baseUrl: "http://elsewhere.invalid/fhir" } }))
      copyAs("a-group", (m) => ({
        ...m,
        request: { ...(m.request as object), level: "group", groupId: "g1" },
      }))
      const conditions = yield* Export.run({
        client,
        out: Path.join(dir, "conditions"),
        params: { level: "system", types: ["Condition"] },
        ...fast,
      })
      const delta = (name: string, types: ReadonlyArray<string>) =>
        Export.run({
          client,
          out: Path.join(dir, name),
          params: { level: "system", types, since: "auto" },
          ...fast,
        })
      assert.strictEqual((yield* delta("run3", ["Patient"])).since, next.transactionTime)
      const both = yield* delta("run4", ["Patient", "Condition"])
      assert.strictEqual(both.since, undefined)
      // Condition alone: the newest archive that holds it (run4, which has it besides Patient)
      assert.isAbove(Date.parse(both.transactionTime), Date.parse(conditions.transactionTime))
      assert.strictEqual((yield* delta("run5", ["Condition"])).since, both.transactionTime)
    }),
  )
})

/**
 * Answers `GET [base]/Condition?_summary=count` with a total of 0 (as a server that does not really run it may),
 * and, when `refuseUnscoped`, a Condition search without a patient with 403 (as one that asks for a patient does).
 */
const conditionsCountedAsNone =
  (refuseUnscoped: boolean): Sandbox.Plugin =>
  (router) =>
    router.use(async (ctx, next) => {
      if (ctx.req.method === "GET" && ctx.path === "/Condition") {
        const q = ctx.url.searchParams
        if (q.get("_summary") === "count") {
          ctx.res.writeHead(200, { "content-type": "application/fhir+json" })
          ctx.res.end(JSON.stringify({ resourceType: "Bundle", type: "searchset", total: 0 }))
          return
        }
        if (refuseUnscoped && !q.has("patient") && !q.has("subject") && !q.has("asserter")) {
          ctx.res.writeHead(403, { "content-type": "application/fhir+json" })
          ctx.res.end(
            JSON.stringify({
              resourceType: "OperationOutcome",
              issue: [{ severity: "error", code: "forbidden", diagnostics: "a patient is required" }],
            }),
          )
          return
        }
      }
      await next()
    })

for (const [refuseUnscoped, how] of [
  [false, "one search of the type finds some"],
  [true, "its search without a patient refused: searched by patient"],
] as const)
  layer(
    Sandbox.Sandbox.layer({ seed: [sample10] } as never, {
      plugins: [conditionsCountedAsNone(refuseUnscoped), ...Sandbox.defaultPlugins],
    }),
    { timeout: 60_000, excludeTestServices: true },
  )("a Patient-level crawl of a server whose _summary=count says 0", (it) => {
    it.scoped(`a type it holds is searched all the same (${how}), one it holds none of is not`, () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const dir = yield* tempDir
        const { client, searches } = yield* recordingClient(sandbox.baseUrl)
        // (the sample holds no Observation: its count of 0 is true)
        const types = ["Patient", "Condition", "Observation"]
        const crawled = yield* Export.run({
          client,
          out: Path.join(dir, "c"),
          params: { level: "patient", types },
          mode: "crawl",
        })
        assert.strictEqual(typeCounts(crawled).Condition, sandbox.store.count("Condition"))
        assert.isAbove(sandbox.store.count("Condition"), 0)
        assert.isUndefined(typeCounts(crawled).Observation)
        // the true 0 is checked with one search (the count asked for once), and the type is not searched by patient
        const observations = searches.filter((u) => /\/Observation\?/.test(u))
        assert.deepStrictEqual(
          observations.map((u) => u.replace(/^.*\?/, "")),
          ["_summary=count", "_count=1"],
        )
      }),
    )
  })

for (const [searchOr, what] of [
  [false, "reads `a,b` as one value"],
  ["first", "reads only the first of `a,b`"],
] as const)
  layer(Sandbox.Sandbox.layer({ seed: [sample10], searchOr } as never), {
    timeout: 60_000,
    excludeTestServices: true,
  })(`a Patient-level crawl of a server that ${what}`, (it) => {
    it.scoped("searches patient by patient, and finds what the bulk export finds", () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const dir = yield* tempDir
        const { client, searches } = yield* recordingClient(sandbox.baseUrl)
        const types = ["Patient", "Condition"]
        const crawled = yield* Export.run({
          client,
          out: Path.join(dir, "c"),
          params: { level: "patient", types },
          mode: "crawl",
        })
        const bulk = yield* Export.run({
          client,
          out: Path.join(dir, "b"),
          params: { level: "patient", types },
        })
        assert.strictEqual(bulk.mode, "bulk")
        assert.deepStrictEqual(typeCounts(crawled), typeCounts(bulk))
        const patients = sandbox.store.count("Patient")
        assert.strictEqual(typeCounts(crawled).Patient, patients)
        assert.isAbove(typeCounts(crawled).Condition ?? 0, 0)
        // the batch asked of this server found less than its patients one by one did: one search per patient
        // from there (next pages aside)
        const conditionSearches = searches.filter(
          (u) => /\/Condition\?.*patient=/.test(u) && !u.includes("_cursor"),
        )
        assert.lengthOf(
          conditionSearches.filter((u) => u.includes("%2C")),
          1,
        )
        assert.lengthOf(conditionSearches, 1 + patients)
      }),
    )
  })

layer(Sandbox.Sandbox.layer({ seed: [sample10] } as never, { plugins: [] }), {
  timeout: 60_000,
  excludeTestServices: true,
})("Export.run against a server without $export", (it) => {
  it.scoped("mode auto falls back to a crawl; mode bulk fails with NotSupported", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const dir = yield* tempDir
      const client = yield* clientFor(sandbox.baseUrl)
      const types = ["Patient", "Condition"]
      const summary = yield* Export.run({
        client,
        out: Path.join(dir, "auto"),
        params: { level: "system", types },
      })
      assert.strictEqual(summary.mode, "crawl")
      assert.deepStrictEqual(
        typeCounts(summary),
        Object.fromEntries(types.map((t) => [t, sandbox.store.count(t)])),
      )
      const bulk = yield* Export.run({
        client,
        out: Path.join(dir, "bulk"),
        params: { level: "system", types },
        mode: "bulk",
      }).pipe(Effect.exit)
      const error = failureOf(bulk)
      assert.instanceOf(error, ExportError)
      assert.strictEqual((error as ExportError).reason, "NotSupported")
    }),
  )
})

layer(
  Sandbox.Sandbox.layer({ seed: [sample10], bulk: { retryAfterSeconds: 0, resourcesPerFile: 5 } } as never),
  { timeout: 60_000, excludeTestServices: true },
)("Export.run: a new kick-off for expired files (13 patients in files of 5)", (it) => {
  it.scoped(
    "a type with unfinished files takes all its files from the new job: a resource deleted in between shifts every boundary, and nothing goes missing or stays",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const out = Path.join(yield* tempDir, "shifted")
        const client = yield* clientFor(sandbox.baseUrl)
        let kickoffs = 0
        let deleted = ""
        let allergy = ""
        const summary = yield* Export.run({
          client,
          out,
          // AllergyIntolerance's files all finish first (one download at a time, in the manifest's order)
          params: { level: "system", types: ["AllergyIntolerance", "Patient"] },
          parallel: 1,
          attachments: false,
          ...fast,
          onEvent: (e) => {
            if (e.event === "file" && e.path === "data/Patient.000.ndjson" && kickoffs === 1) {
              // the first file is finished; the rest of this job expires, and its first patient is deleted,
              // and an AllergyIntolerance: the new job splits that type otherwise too
              deleted = String(readNdjson(Path.join(out, "data", "Patient.000.ndjson"))[0]?.id)
              allergy = String(readNdjson(Path.join(out, "data", "AllergyIntolerance.000.ndjson"))[0]?.id)
              return Effect.zipRight(
                setFaults(sandbox.baseUrl, { expireFiles: { afterSeconds: 0 } }),
                Effect.promise(async () => {
                  await fetch(`${sandbox.baseUrl}/Patient/${deleted}`, { method: "DELETE" })
                  await fetch(`${sandbox.baseUrl}/AllergyIntolerance/${allergy}`, { method: "DELETE" })
                }),
              )
            }
            if (e.event === "kickoff" && ++kickoffs === 2) return setFaults(sandbox.baseUrl, {})
            return Effect.void
          },
        })
        assert.strictEqual(summary.rekickoffs, 1)
        const ids = [...dataKeys(out).keys()].sort()
        const current = ["Patient", "AllergyIntolerance"]
          .flatMap((t) => readNdjson(Path.join(sample10, `${t}.000.ndjson`)).map((r) => `${t}/${r.id}`))
          .filter((k) => k !== `Patient/${deleted}` && k !== `AllergyIntolerance/${allergy}`)
          .sort()
        assert.strictEqual(current.length, 12 + 10)
        assert.deepStrictEqual(ids, current)
        assert.deepStrictEqual(
          [...dataKeys(out).values()].every((n) => n === 1),
          true,
        )
        const drops = events(out).filter((e) => e.event === "rekickoff-dropped")
        assert.deepStrictEqual(
          drops.map((e) => e.paths),
          [
            ["data/Patient.000.ndjson"],
            [
              "data/AllergyIntolerance.000.ndjson",
              "data/AllergyIntolerance.001.ndjson",
              "data/AllergyIntolerance.002.ndjson",
            ],
          ],
        )
      }),
  )
})

layer(
  Sandbox.Sandbox.layer({
    seed: [sample10],
    bulk: { retryAfterSeconds: 0, pollsBeforeDone: 0, manifestPartSize: 1, resourcesPerFile: 100 },
  } as never),
  { timeout: 60_000, excludeTestServices: true },
)("Export.run with partial manifests (10-patient sandbox, one file per part)", (it) => {
  const types = ["Patient", "Condition", "Encounter", "Procedure"]

  it.scoped(
    "a rerun whose manifest is journaled starts no early downloads, also when its files expire and the manifest is read again",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const dir = yield* tempDir
        const out = Path.join(dir, "a")
        const client = yield* clientFor(sandbox.baseUrl)
        const options = {
          client,
          out,
          params: { level: "system" as const, types, allowPartialManifests: true },
          parallel: 1,
          attachments: false,
          ...fast,
        }
        // first run: stopped as soon as the complete manifest is journaled, files still to come (the parts' early
        // downloads, one at a time, come before it: 40 of the 41 files, 50 ms each)
        yield* setFaults(sandbox.baseUrl, { delay: [{ route: "download", ms: 50 }] })
        const manifested = yield* Deferred.make<void>()
        const fiber = yield* Effect.fork(
          Export.run({
            ...options,
            onEvent: (e) => (e.event === "manifest" ? Deferred.succeed(manifested, undefined) : Effect.void),
          }),
        )
        yield* Deferred.await(manifested)
        yield* Fiber.interrupt(fiber)
        // the rerun: every file's first download answers 410 and the manifest, read again, renews the URLs
        yield* setFaults(sandbox.baseUrl, { expireFiles: { firstAttempt: true, renewable: true } })
        const summary = yield* Export.run(options)
        yield* setFaults(sandbox.baseUrl, {})
        const log = events(out)
        const manifest = log.findIndex((e) => e.event === "manifest")
        assert.isAtLeast(manifest, 0)
        assert.deepStrictEqual(
          log.slice(manifest).filter((e) => e.event === "manifest-part"),
          [],
        )
        assert.isTrue(log.some((e) => e.event === "manifest-renewed"))
        // every file once
        const files = log.filter((e) => e.event === "file").map((e) => String(e.path))
        assert.deepStrictEqual([...new Set(files)].sort(), [...files].sort())
        const clean = yield* Export.run({
          ...options,
          out: Path.join(dir, "clean"),
          params: { level: "system", types },
        })
        assert.deepStrictEqual(dataLines(out), dataLines(Path.join(dir, "clean")))
        assert.deepStrictEqual(typeCounts(summary), typeCounts(clean))
      }),
  )
})

/** A manifest of two output files (and a deleted one, if asked) whose URLs end in `tag` (a query string). */
const twoFiles = (
  tag: string,
  extra: Partial<{ transactionTime: string; count: number; deleted: boolean }> = {},
) => ({
  transactionTime: extra.transactionTime ?? "2026-01-01T00:00:00Z",
  requiresAccessToken: false,
  output: [
    { type: "Patient", url: `http://s/f/Patient.0${tag}`, count: 10 },
    { type: "Observation", url: `http://s/f/Observation.0${tag}`, count: extra.count ?? 20 },
  ],
  deleted: extra.deleted === true ? [{ type: "Bundle", url: `http://s/f/del.0${tag}` }] : [],
  error: [],
})

describe("renewsUrls", () => {
  const manifest = twoFiles
  const before = manifest("?gen=1")
  const planned = Export.planFiles(before)
  const observation = planned.filter((f) => f.type === "Observation")

  it("is true for the same files under new URLs, when a file still to download got one", () => {
    assert.isTrue(Export.renewsUrls(before, manifest("?gen=2"), observation))
  })
  it("is false when a file moved to another address (not just a new query string)", () => {
    const moved = {
      ...manifest("?gen=2"),
      output: manifest("?gen=2").output.map((o) => ({ ...o, url: o.url.replace("/f/", "/g/") })),
    }
    assert.isFalse(Export.renewsUrls(before, moved, observation))
  })
  it("is false when the URLs are the same (the files are gone: a new kick-off)", () => {
    assert.isFalse(Export.renewsUrls(before, manifest("?gen=1"), observation))
    assert.isFalse(Export.renewsUrls(before, manifest("?gen=2"), []))
  })
  it("is false for another job's files: other transactionTime, other counts, other files", () => {
    assert.isFalse(
      Export.renewsUrls(before, manifest("?gen=2", { transactionTime: "2026-01-02T00:00:00Z" }), observation),
    )
    assert.isFalse(Export.renewsUrls(before, manifest("?gen=2", { count: 21 }), observation))
    const fewer = { ...manifest("?gen=2"), output: manifest("?gen=2").output.slice(0, 1) }
    assert.isFalse(Export.renewsUrls(before, fewer, observation))
  })
})

describe("journalable, sameFiles", () => {
  const manifest = (query: string, extra: Partial<{ transactionTime: string; count: number }> = {}) =>
    twoFiles(query, { ...extra, deleted: true })

  it("keeps a manifest's links without their secrets, marked; one without secrets as it is, unmarked", () => {
    const signed = Export.journalable(manifest("?sig=abc123&gen=1"))
    assert.deepStrictEqual(
      [...signed.output, ...signed.deleted].map((f) => f.url),
      [
        "http://s/f/Patient.0?sig=REDACTED&gen=1",
        "http://s/f/Observation.0?sig=REDACTED&gen=1",
        "http://s/f/del.0?sig=REDACTED&gen=1",
      ],
    )
    assert.isTrue(Export.redactedLinks(signed))
    assert.notInclude(JSON.stringify(signed), "abc123")
    const userInfo = manifest("")
    const withUser = { ...userInfo, output: [{ ...userInfo.output[0]!, url: "http://u:pw@s/f/Patient.0" }] }
    assert.isTrue(Export.redactedLinks(Export.journalable(withUser)))
    assert.notInclude(JSON.stringify(Export.journalable(withUser)), "pw@")
    const plain = manifest("?gen=1")
    assert.deepStrictEqual(Export.journalable(plain), plain)
    assert.isFalse(Export.redactedLinks(Export.journalable(plain)))
    assert.isFalse(Export.redactedLinks(undefined))
  })

  it("sameFiles: the job's files again under fresh signatures, not another job's", () => {
    const journaled = Export.journalable(manifest("?sig=abc123"))
    assert.isTrue(Export.sameFiles(journaled, manifest("?sig=abc123")))
    assert.isTrue(Export.sameFiles(journaled, manifest("?sig=def456")))
    assert.isFalse(
      Export.sameFiles(journaled, manifest("?sig=def456", { transactionTime: "2026-01-02T00:00:00Z" })),
    )
    assert.isFalse(Export.sameFiles(journaled, manifest("?sig=def456", { count: 21 })))
    const moved = manifest("?sig=def456")
    assert.isFalse(
      Export.sameFiles(journaled, {
        ...moved,
        output: moved.output.map((o) => ({ ...o, url: o.url.replace("/f/", "/g/") })),
      }),
    )
    assert.isFalse(Export.sameFiles(journaled, { ...moved, deleted: [] }))
  })
})

/**
 * A source on loopback that behaves in one particular way: its CapabilityStatement (`metadata`), a `$export`
 * whose job never finishes (or, with `refuseKickoff`, a kick-off answered 200 without a status URL), and a
 * search of one Patient; the requests it saw (`METHOD path`).
 */
const stubSource = (
  options: {
    readonly metadata?: Record<string, unknown>
    readonly refuseKickoff?: boolean
    /** The kick-off answers this status (with an OperationOutcome), as a server without $export does. */
    readonly kickoffStatus?: number
    /** The job is done at once with this manifest (else it never finishes). */
    readonly manifest?: Record<string, unknown>
  } = {},
) =>
  Effect.gen(function* () {
    const seen: Array<string> = []
    const origin = yield* loopbackServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x")
      seen.push(`${req.method} ${url.pathname}`)
      const json = (status: number, body: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(status, {
          "content-type": "application/fhir+json",
          date: new Date().toUTCString(),
          ...headers,
        })
        res.end(JSON.stringify(body))
      }
      const base = `http://${req.headers.host}/fhir`
      if (url.pathname === "/fhir/metadata")
        return json(
          200,
          options.metadata ?? {
            resourceType: "CapabilityStatement",
            status: "active",
            kind: "instance",
            fhirVersion: "4.0.1",
            format: ["json"],
            rest: [
              {
                mode: "server",
                resource: [{ type: "Patient", interaction: [{ code: "search-type" }] }],
                operation: [
                  {
                    name: "export",
                    definition: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
                  },
                ],
              },
            ],
          },
        )
      if (url.pathname === "/fhir/$export" && options.kickoffStatus !== undefined)
        return json(options.kickoffStatus, {
          resourceType: "OperationOutcome",
          issue: [{ severity: "error", code: "not-supported" }],
        })
      if (url.pathname === "/fhir/$export")
        return options.refuseKickoff === true
          ? json(200, { resourceType: "OperationOutcome", issue: [] })
          : json(202, {}, { "content-location": `${base}/status/1` })
      if (url.pathname === "/fhir/status/1")
        return req.method === "DELETE"
          ? json(202, {})
          : options.manifest !== undefined
            ? json(200, options.manifest)
            : json(202, {}, { "x-progress": "running" })
      if (url.pathname === "/fhir/Patient")
        return json(200, {
          resourceType: "Bundle",
          type: "searchset",
          entry: [{ resource: { resourceType: "Patient", id: "p1" } }],
        })
      res.writeHead(404).end()
    })
    return { baseUrl: `${origin}/fhir`, seen }
  })

describe("output files on another host that answer 403 on every job", () => {
  it.scopedLive(
    "with the manifest asking for the token: the last line names the refusal and says that host gets no credentials; without: only the refusal",
    () =>
      Effect.gen(function* () {
        const files = yield* loopbackServer((_req, res) => {
          res.writeHead(403, { "content-type": "text/plain" })
          res.end("forbidden")
        })
        for (const requiresAccessToken of [true, false]) {
          const s = yield* stubSource({
            manifest: {
              transactionTime: "2026-12-07T00:00:00Z",
              request: "x",
              requiresAccessToken,
              output: [{ type: "Patient", url: `${files}/files/Patient.ndjson` }],
              error: [],
            },
          })
          const client = yield* clientFor(s.baseUrl, {
            authorize: (req) =>
              Effect.succeed(HttpClientRequest.bearerToken(req, "t0ken-for-the-source-only")),
          })
          const out = Path.join(yield* tempDir, `forbidden-${requiresAccessToken}`)
          const e = failureOf(
            yield* Export.run({ client, out, params: { level: "system", types: ["Patient"] }, ...fast }).pipe(
              Effect.exit,
            ),
          ) as ExportError
          assert.strictEqual(e.reason, "Expired")
          assert.include(e.message, `(last: ${files}/files/Patient.ndjson answered 403)`)
          assert.strictEqual(
            e.message.includes(
              "that host is not the source's, and Ferry sends the source's credentials only to",
            ),
            requiresAccessToken,
          )
        }
      }),
  )
})

describe("a rerun on an archive of another source", () => {
  const params = { level: "system" as const, types: ["Patient"] }
  /** An export of `base` into `out` (crawl unless `more` says otherwise). */
  const exportOf = (base: string, out: string, more: Partial<Export.ExportOptions> = {}) =>
    Effect.flatMap(clientFor(base), (client) =>
      Export.run({ client, out, params, mode: "crawl", ...fast, ...more }),
    )
  const other = (root: string, theirs: string, mine: string) =>
    `${root} holds an export of ${theirs}, not of ${mine}; use another --out directory for this source, or give ${theirs} as the source`

  it.scopedLive(
    "a finished archive: refused (Config, exit 2), the archive untouched, the other source never asked",
    () =>
      Effect.gen(function* () {
        const s = yield* stubSource()
        const d = yield* stubSource()
        const out = Path.join(yield* tempDir, "a")
        yield* exportOf(s.baseUrl, out)
        const before = NFS.readFileSync(Path.join(out, "manifest.json"), "utf8")
        const refused = yield* exportOf(d.baseUrl, out).pipe(Effect.exit)
        const error = failureOf(refused)
        assert.instanceOf(error, ExportError)
        assert.strictEqual((error as ExportError).reason, "Config")
        assert.strictEqual((error as ExportError).message, other(out, s.baseUrl, d.baseUrl))
        assert.deepStrictEqual(d.seen, [])
        assert.strictEqual(NFS.readFileSync(Path.join(out, "manifest.json"), "utf8"), before)
        // ferry migrate names its archive --archive: so does the sentence
        const viaMigrate = failureOf(
          yield* exportOf(d.baseUrl, out, { outFlag: "--archive" }).pipe(Effect.exit),
        )
        assert.include((viaMigrate as ExportError).message, "use another --archive directory for this source")
        // the same source written with a trailing slash is the same source
        const again = yield* exportOf(`${s.baseUrl}/`, out)
        assert.strictEqual(again.resources, 1)
        assert.isTrue(events(out).some((e) => e.event === "already-complete"))
      }),
  )

  it.scopedLive(
    "the same selection spelled with other fields (migrate's against export's) resumes; another selection is refused",
    () =>
      Effect.gen(function* () {
        const s = yield* stubSource()
        const out = Path.join(yield* tempDir, "spelled")
        // what ferry migrate asks: only the fields it has flags for
        yield* exportOf(s.baseUrl, out, { params: { level: "system", types: ["Patient"], typeFilters: [] } })
        // what ferry export asks for the same selection: every field, empty
        const same = {
          level: "system" as const,
          types: ["Patient"],
          typeFilters: [],
          elements: [],
          patients: [],
          includeAssociatedData: [],
          custom: [],
          post: false,
        }
        const again = yield* exportOf(s.baseUrl, out, { params: same })
        assert.strictEqual(again.resources, 1)
        assert.isTrue(events(out).some((e) => e.event === "already-complete"))
        const otherTypes = failureOf(
          yield* exportOf(s.baseUrl, out, { params: { ...same, types: ["Observation"] } }).pipe(Effect.exit),
        )
        assert.include((otherTypes as ExportError).message, "already holds a different export")
        // the finished archive given again for an incremental export: said as such
        const delta = failureOf(
          yield* exportOf(s.baseUrl, out, { params: { ...same, since: "2020-01-01T00:00:00Z" } }).pipe(
            Effect.exit,
          ),
        )
        assert.include(
          (delta as ExportError).message,
          "holds a finished export, and an incremental one (--since) goes into a directory of its own beside it",
        )
        // the journal removed: said as such (not "a different export"), the archive left as it is
        NFS.rmSync(Path.join(out, "journal.ndjson"))
        const lost = failureOf(yield* exportOf(s.baseUrl, out, { params: same }).pipe(Effect.exit))
        assert.strictEqual((lost as ExportError).reason, "Config")
        assert.include(
          (lost as ExportError).message,
          "journal.ndjson records no request (the file was removed or damaged)",
        )
        assert.include((lost as ExportError).message, "the archive is complete and stays usable as it is")
        assert.isEmpty(yield* Archive.verifyChecksums(out))
      }),
  )

  it.scopedLive("an unfinished archive: refused, not re-attached to the first source's job", () =>
    Effect.gen(function* () {
      const s = yield* stubSource()
      const d = yield* stubSource()
      const out = Path.join(yield* tempDir, "b")
      const first = yield* exportOf(s.baseUrl, out, { mode: "bulk", timeout: "300 millis" }).pipe(Effect.exit)
      assert.strictEqual((failureOf(first) as ExportError).reason, "Timeout")
      const polls = s.seen.length
      const refused = yield* exportOf(d.baseUrl, out, { mode: "bulk", timeout: "300 millis" }).pipe(
        Effect.exit,
      )
      assert.strictEqual((failureOf(refused) as ExportError).message, other(out, s.baseUrl, d.baseUrl))
      assert.strictEqual(s.seen.length, polls)
      assert.deepStrictEqual(d.seen, [])
    }),
  )

  it.scopedLive("an archive whose first attempt started nothing: taken over by the other source", () =>
    Effect.gen(function* () {
      const s = yield* stubSource({ refuseKickoff: true })
      const d = yield* stubSource()
      const out = Path.join(yield* tempDir, "c")
      const first = yield* exportOf(s.baseUrl, out, { mode: "bulk" }).pipe(Effect.exit)
      assert.strictEqual((failureOf(first) as ExportError).reason, "Kickoff")
      const summary = yield* exportOf(d.baseUrl, out)
      assert.strictEqual(summary.resources, 1)
      assert.strictEqual((yield* Archive.readManifest(out)).source.baseUrl, d.baseUrl)
    }),
  )
})

describe("a crawl with no type to search", () => {
  /** An STU3 server's CapabilityStatement: no rest.resource, no $export. */
  const stu3 = {
    resourceType: "CapabilityStatement",
    status: "active",
    kind: "instance",
    fhirVersion: "3.0.2",
    format: ["json"],
    rest: [{ mode: "server" }],
  }
  const warned = (out: string, text: string) =>
    events(out).some((e) => e.event === "warning" && String(e.detail).includes(text))

  it.scopedLive(
    "fails naming --type (no empty 'complete' archive), warns of the FHIR version, and a rerun with --type goes on",
    () =>
      Effect.gen(function* () {
        const s = yield* stubSource({ metadata: stu3, kickoffStatus: 404 })
        const client = yield* clientFor(s.baseUrl)
        const out = Path.join(yield* tempDir, "stu3")
        const refused = yield* Export.run({ client, out, params: { level: "system" }, ...fast }).pipe(
          Effect.exit,
        )
        const error = failureOf(refused)
        assert.instanceOf(error, ExportError)
        assert.strictEqual((error as ExportError).reason, "NotSupported")
        assert.strictEqual(
          (error as ExportError).message,
          `${s.baseUrl}/metadata: the server's CapabilityStatement lists no resource type it can search (no rest.resource with the search-type interaction), so a crawl would find nothing; pass the types to crawl with --type`,
        )
        assert.isFalse((yield* Archive.readManifest(out)).complete)
        assert.isTrue(warned(out, "the source declares FHIR 3.0.2; Ferry moves FHIR R4 (4.0.x) data"))
        assert.isFalse(s.seen.includes("GET /fhir/Patient"))
        // the same archive, the types named: the crawl runs
        const summary = yield* Export.run({
          client,
          out,
          params: { level: "system", types: ["Patient"] },
          ...fast,
        })
        assert.strictEqual(summary.resources, 1)
        assert.strictEqual(summary.mode, "crawl")
      }),
  )

  it.scopedLive("a patient-level crawl of types outside the Patient compartment is a usage error", () =>
    Effect.gen(function* () {
      const s = yield* stubSource()
      const out = Path.join(yield* tempDir, "outside")
      const refused = yield* Export.run({
        client: yield* clientFor(s.baseUrl),
        out,
        params: { level: "patient", types: ["Organization"] },
        mode: "crawl",
        ...fast,
      }).pipe(Effect.exit)
      const error = failureOf(refused) as ExportError
      assert.strictEqual(error.reason, "Config")
      assert.include(
        error.message,
        "none of the types asked for (--type Organization) is in the Patient compartment",
      )
    }),
  )

  it.scopedLive(
    "a server that declares $export and refuses the kick-off (400, 422): a usage error naming the parameters to check, no crawl",
    () =>
      Effect.gen(function* () {
        for (const status of [400, 422]) {
          const refusing = yield* stubSource({ kickoffStatus: status })
          const error = yield* Effect.flip(
            Export.run({
              client: yield* clientFor(refusing.baseUrl),
              out: Path.join(yield* tempDir, `refused-${status}`),
              params: { level: "system" },
              ...fast,
            }),
          )
          assert.strictEqual(error._tag, "ExportError")
          assert.strictEqual((error as ExportError).reason, "Config")
          assert.include(
            error.message,
            `the server refused the kick-off (${status}: error not-supported); its answer names what it would not take: check the --type, --since`,
          )
          assert.isFalse(refusing.seen.includes("GET /fhir/Patient"))
        }
      }),
  )

  it.scopedLive(
    "a CapabilityStatement that declares no $export at this level does not decide: the kick-off is tried, a 400 to it falls back to a crawl, and $export declared at another level is said",
    () =>
      Effect.gen(function* () {
        const r4 = yield* stubSource()
        const cs = (yield* Effect.promise(() => fetch(`${r4.baseUrl}/metadata`).then((r) => r.json()))) as {
          rest: Array<Record<string, unknown>>
        }
        const withOps = (operation: unknown, resourceOps?: unknown) => ({
          ...cs,
          rest: [
            {
              ...cs.rest[0],
              operation,
              resource: [
                { type: "Patient", interaction: [{ code: "search-type" }] },
                ...(resourceOps !== undefined ? [{ type: "Group", operation: resourceOps }] : []),
              ],
            },
          ],
        })
        // declared nowhere (only through `instantiates`): the kick-off is sent, and the job is the export
        const quiet = yield* stubSource({ metadata: withOps([]) })
        const out = Path.join(yield* tempDir, "undeclared")
        yield* Export.run({
          client: yield* clientFor(quiet.baseUrl),
          out,
          params: { level: "system" },
          timeout: "200 millis",
          ...fast,
        }).pipe(Effect.exit)
        assert.isTrue(quiet.seen.includes("GET /fhir/$export"))
        assert.isFalse(events(out).some((e) => e.event === "fallback"))
        // a server that does not know the operation answers 400: a crawl
        const unknown = yield* stubSource({ metadata: withOps([]), kickoffStatus: 400 })
        const out2 = Path.join(yield* tempDir, "unknown-op")
        yield* Export.run({
          client: yield* clientFor(unknown.baseUrl),
          out: out2,
          params: { level: "system" },
          ...fast,
        })
        const fallback = events(out2).find((e) => e.event === "fallback")
        assert.include(
          String(fallback?.detail),
          "the server answered 400: error not-supported to the $export kick-off, which its CapabilityStatement does not declare at this level: taken as no bulk export at system level",
        )
        assert.isTrue(unknown.seen.includes("GET /fhir/Patient"))
        // declared at the Group level only: said, with the flags that ask for it
        const groupOnly = yield* stubSource({
          metadata: withOps(
            [],
            [
              {
                name: "export",
                definition: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
              },
            ],
          ),
          kickoffStatus: 404,
        })
        const out3 = Path.join(yield* tempDir, "group-only")
        yield* Export.run({
          client: yield* clientFor(groupOnly.baseUrl),
          out: out3,
          params: { level: "system" },
          ...fast,
        })
        assert.include(
          String(events(out3).find((e) => e.event === "warning")?.detail),
          "the CapabilityStatement declares $export at the group level, not at the system level asked for (--level group --group <id>?)",
        )
      }),
  )

  it.scopedLive(
    "a manifest listing a file under a URL that is not http(s) (s3:) fails naming the scheme",
    () =>
      Effect.gen(function* () {
        const s = yield* stubSource({
          manifest: {
            transactionTime: "2024-01-01T00:00:00Z",
            request: "x",
            requiresAccessToken: true,
            output: [{ type: "Patient", url: "s3://bucket/export/Patient.ndjson", count: 1 }],
            error: [],
          },
        })
        const out = Path.join(yield* tempDir, "s3")
        const error = failureOf(
          yield* Export.run({
            client: yield* clientFor(s.baseUrl),
            out,
            params: { level: "system" },
            ...fast,
          }).pipe(Effect.exit),
        ) as ExportError
        assert.strictEqual(error.reason, "Manifest")
        assert.include(
          error.message,
          "the manifest lists this output file under a s3: URL, which Ferry cannot fetch",
        )
        // the job is kept (a failed export does not release it)
        assert.isFalse(s.seen.includes("DELETE /fhir/status/1"))
      }),
  )

  it.scopedLive("a bulk export of a source declaring another FHIR version than R4 warns once", () =>
    Effect.gen(function* () {
      const r4 = yield* stubSource()
      const cs = yield* Effect.promise(() => fetch(`${r4.baseUrl}/metadata`).then((r) => r.json()))
      const s = yield* stubSource({ metadata: { ...(cs as object), fhirVersion: "4.3.0" } })
      const out = Path.join(yield* tempDir, "r4b")
      // the job never finishes: what matters is what was said before
      yield* Export.run({
        client: yield* clientFor(s.baseUrl),
        out,
        params: { level: "system" },
        timeout: "200 millis",
        ...fast,
      }).pipe(Effect.exit)
      assert.isTrue(s.seen.includes("GET /fhir/$export"))
      assert.strictEqual(
        events(out).filter((e) => e.event === "warning" && String(e.detail).includes("declares FHIR 4.3.0"))
          .length,
        1,
      )
      // the same when the kick-off is refused and the export falls back to a crawl (which reads it again)
      const crawled = yield* stubSource({
        metadata: { ...(cs as object), fhirVersion: "4.3.0" },
        kickoffStatus: 405,
      })
      const out2 = Path.join(yield* tempDir, "r4b-crawl")
      yield* Export.run({
        client: yield* clientFor(crawled.baseUrl),
        out: out2,
        params: { level: "system" },
        ...fast,
      })
      assert.isTrue(events(out2).some((e) => e.event === "fallback"))
      assert.strictEqual(
        events(out2).filter((e) => e.event === "warning" && String(e.detail).includes("declares FHIR 4.3.0"))
          .length,
        1,
      )
    }),
  )
})

describe("Export.run against a source that never answers", () => {
  it.scopedLive(
    "a CapabilityStatement that never comes fails the export there: no kick-off waiting out the same timeouts",
    () =>
      Effect.gen(function* () {
        const seen: Array<string> = []
        // takes every request and never answers (the sockets are left open until the scope closes)
        const origin = yield* loopbackServer((req) => {
          seen.push(`${req.method} ${new URL(req.url ?? "/", "http://x").pathname}`)
        })
        const client = yield* clientFor(`${origin}/fhir`, { timeout: "200 millis" })
        const out = Path.join(yield* tempDir, "silent")
        const exit = yield* Effect.exit(Export.run({ client, out, params: { level: "system" }, ...fast }))
        const error = failureOf(exit)
        assert.isDefined(error)
        assert.include(String((error as { message?: unknown }).message), "did not answer within")
        assert.isTrue(seen.length > 0 && seen.every((s) => s === "GET /fhir/metadata"), seen.join(", "))
      }),
    30_000,
  )
})

describe("attachments that are the source's own Binaries, exported too", () => {
  it.scoped(
    "are copied from the Binary files, not fetched again: the same blobs and index as when they are fetched",
    () =>
      Effect.gen(function* () {
        // raw reads of Binaries the sandbox answers (the export's attachment fetches)
        let binaryReads = 0
        const counter: Sandbox.Plugin = (router) =>
          router.use(async (ctx, next) => {
            if (ctx.req.method === "GET" && ctx.path.startsWith("/Binary/")) binaryReads++
            await next()
          })
        const sandbox = yield* Sandbox.start(
          { generate: 30, bulk: { resourcesPerFile: 10, retryAfterSeconds: 0 } } as never,
          { plugins: [counter, ...Sandbox.defaultPlugins] },
        )
        const dir = yield* tempDir
        const client = yield* clientFor(sandbox.baseUrl)
        // the index without the blobs' places in the pack (those follow the order fetches finish in), and
        // each blob's bytes read back
        const index = (out: string) =>
          NFS.readFileSync(Path.join(out, "attachments", "index.ndjson"), "utf8")
            .trim()
            .split("\n")
            .map((l) => {
              const { pack, offset, ...rest } = JSON.parse(l) as Record<string, unknown>
              return JSON.stringify({
                ...rest,
                packed: typeof pack === "string" && typeof offset === "number",
              })
            })
            .sort()
        const blobs = (out: string) =>
          Effect.gen(function* () {
            const all: Array<string> = []
            for (const line of (yield* ArchiveAttachments.readIndex(out)).values()) {
              const bytes = Buffer.concat([...(yield* Stream.runCollect(ArchiveAttachments.read(out, line)))])
              all.push(`${line.sha256} ${bytes.toString("base64")}`)
            }
            return all.sort()
          })

        // 3 Binary files and 3 DocumentReference files of 10, 2 downloads at a time: the references wait
        // for Binary files still under way
        const copied = yield* Export.run({
          client,
          out: Path.join(dir, "copied"),
          params: { level: "system" },
          parallel: 2,
          ...fast,
        })
        assert.strictEqual(copied.attachments.total, 30)
        assert.strictEqual(copied.attachments.fetched, 30)
        assert.strictEqual(binaryReads, 0)

        // without Binary in the export, the same attachments are fetched
        const fetched = yield* Export.run({
          client,
          out: Path.join(dir, "fetched"),
          params: { level: "system", types: ["Patient", "DocumentReference"] },
          parallel: 2,
          ...fast,
        })
        assert.strictEqual(fetched.attachments.total, 30)
        assert.strictEqual(binaryReads, 30)
        assert.deepStrictEqual(index(Path.join(dir, "copied")), index(Path.join(dir, "fetched")))
        const copiedBlobs = yield* blobs(Path.join(dir, "copied"))
        assert.strictEqual(copiedBlobs.length, 30)
        assert.deepStrictEqual(copiedBlobs, yield* blobs(Path.join(dir, "fetched")))
        assert.deepStrictEqual(yield* Archive.verifyChecksums(Path.join(dir, "copied")), [])

        // an Attachment whose size is not its Binary's: not kept, reported once, the others copied
        const doc = JSON.parse(sandbox.store.read("DocumentReference", "gen-doc-3")!.json) as {
          id: string
          content: Array<{ attachment: { size?: number; hash?: string } }>
        }
        doc.content[0]!.attachment.size = 1
        sandbox.store.update(doc)
        const reads = binaryReads
        const bad = yield* Export.run({
          client,
          out: Path.join(dir, "bad"),
          params: { level: "system" },
          parallel: 2,
          allowMissingAttachments: true,
          ...fast,
        })
        assert.strictEqual(binaryReads, reads)
        assert.strictEqual(bad.attachments.failed, 1)
        assert.strictEqual(bad.attachments.total, 29)
        const failures = events(Path.join(dir, "bad")).filter((e) => e.event === "attachment-failed")
        assert.strictEqual(failures.length, 1)
        assert.match(
          String(failures[0]?.detail),
          /gen-doc-3.*its size is \d+ bytes but the Attachment says 1/,
        )
      }),
    60_000,
  )
})
