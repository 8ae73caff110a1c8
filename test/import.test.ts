/**
 * `ferry import` end to end: the bundled CLI as a process, a source archive made with `ferry export` from a
 * seeded in-process sandbox, and fresh in-process target sandboxes (client ids refused, a 5-entry Bundle
 * limit, entry rejections, throttling storms, a kill -9 mid-import). Every target is checked by reading its
 * store back: per-type counts, and every relative reference and `Binary/…` attachment URL resolving (an
 * absolute attachment URL, the source's, counts as dangling).
 * Needs `npm run build` first.
 */
import { createHash } from "node:crypto"
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import { FetchHttpClient } from "@effect/platform"
import * as Archive from "@ferry/archive/Archive"
import type { FileEntry } from "@ferry/archive/Manifest"
import * as FhirClient from "@ferry/core/FhirClient"
import { attachments, references } from "@ferry/core/Walker"
import * as Import from "@ferry/import/Import"
import type { SandboxConfigInput } from "@ferry/sandbox/Config"
import { sendOutcome } from "@ferry/sandbox/Http"
import { defaultPlugins } from "@ferry/sandbox/Sandbox"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  archiveCounts,
  archiveManifest,
  freePort,
  type InProcessSandbox,
  lastLine,
  requestRecorder,
  routeOf,
  runFerry,
  setSandboxFaults,
  sharedData,
  smartTestClient,
  startSandbox,
} from "./helpers/ferry.js"

const tmp = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-import-"))
const sandboxes: Array<InProcessSandbox> = []
afterAll(async () => {
  for (const s of sandboxes) await s.close()
  NFS.rmSync(tmp, { recursive: true, force: true })
})

const start = async (config: SandboxConfigInput) => {
  const s = await startSandbox(config)
  sandboxes.push(s)
  return s.handle
}

/** Export a seeded sandbox once; each test imports a copy (the import state lives inside the archive). */
const exportArchive = async (
  name: string,
  seed: ReadonlyArray<string>,
  config: SandboxConfigInput = {},
): Promise<string> => {
  const source = await start({ ...config, seed: [...seed] })
  const out = Path.join(tmp, name)
  const run = await runFerry(["export", source.baseUrl, "--out", out, "--json"])
  expect(run.code, run.stderr).toBe(0)
  return out
}

let sample = ""
beforeAll(async () => {
  sample = await exportArchive("sample", [sharedData("sample-bulk-10-patients"), sharedData("attachments")])
}, 120_000)

const copy = (archive: string, name: string): string => {
  const to = Path.join(tmp, name)
  NFS.cpSync(archive, to, { recursive: true })
  return to
}

/** The archive's import folder (it was imported into one target). */
const importDir = (archive: string): string =>
  Path.join(archive, "imports", NFS.readdirSync(Path.join(archive, "imports"))[0]!)

type Target = Awaited<ReturnType<typeof start>>

const targetCounts = (t: Target): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const type of t.store.types()) {
    const n = t.store.count(type)
    if (n > 0) out[type] = n
  }
  return out
}

/** Every relative reference and `Binary/…` attachment URL in the target, with those that do not resolve. */
const danglingIn = (t: Target) => {
  const dangling: Array<string> = []
  let checked = 0
  let conditionals = 0
  for (const type of t.store.types()) {
    for (const stored of t.store.iterate(type)) {
      const r = JSON.parse(stored.json) as unknown
      for (const site of references(r)) {
        if (site.canonical) continue
        if (site.parsed._tag === "Conditional") conditionals++
        if (site.parsed._tag !== "Relative") continue
        checked++
        if (t.store.read(site.parsed.type, site.parsed.id) === undefined)
          dangling.push(`${type}/${stored.id} → ${site.raw}`)
      }
      for (const a of attachments(r)) {
        const url = a.attachment.url
        // an absolute URL is the source's (the target's own Binaries are relative): it goes away with the source
        if (typeof url === "string" && /^https?:\/\//.test(url)) {
          checked++
          dangling.push(`${type}/${stored.id} → ${url}`)
          continue
        }
        const m = typeof url === "string" ? /^Binary\/([A-Za-z0-9\-.]+)$/.exec(url) : null
        if (m === null) continue
        checked++
        if (t.store.read("Binary", m[1]!) === undefined)
          dangling.push(`${type}/${stored.id} → ${a.attachment.url}`)
      }
    }
  }
  return { dangling, checked, conditionals }
}

/** An empty in-process target whose requests are recorded (closed after the tests). */
const recordedTarget = async () => {
  const recorder = requestRecorder()
  const sandbox = await startSandbox({}, [recorder.plugin, ...defaultPlugins])
  sandboxes.push(sandbox)
  return { target: sandbox.handle, requests: recorder.requests }
}

const importInto = (archive: string, target: Target, args: ReadonlyArray<string> = []) =>
  runFerry(["import", "--to", target.baseUrl, "--json", ...args, archive])

describe("ferry import", () => {
  it("a rerun switching from post to put (other ids) is refused (exit 2): it would create again what was in flight; without --strategy it goes on", async () => {
    // (a small archive of several Bundles: what is tested is the journal's strategy, not the data)
    const small = await exportArchive("strategy-switch-source", [
      sharedData("sample-bulk-10-patients/Organization.000.ndjson"),
      sharedData("sample-bulk-10-patients/Patient.000.ndjson"),
    ])
    const archive = copy(small, "strategy-switch")
    const target = await start({})
    const post = await importInto(archive, target, ["--strategy", "post", "--bundle-size", "5"])
    expect(post.code, post.stderr).toBe(0)
    const landed = targetCounts(target)
    const put = await importInto(archive, target, ["--strategy", "put"])
    expect(put.code, put.stderr).toBe(2)
    expect(lastLine(put.stderr)).toMatch(
      /--strategy put: this import into the target began with post and landed Bundles that way, .*run it again without --strategy \(it goes on with post\), or with --strategy post$/,
    )
    expect(targetCounts(target)).toEqual(landed)
    const again = await importInto(archive, target)
    expect(again.code, again.stderr).toBe(0)
    expect((JSON.parse(again.stdout) as { strategy: string }).strategy).toBe("post")
    expect(targetCounts(target)).toEqual(landed)
    // $import then post: the same (a job's files are journaled, not Bundles)
    const bulk = copy(small, "strategy-switch-bulk")
    const other = await start({})
    const imported = await importInto(bulk, other, ["--strategy", "import"])
    expect(imported.code, imported.stderr).toBe(0)
    const switched = await importInto(bulk, other, ["--strategy", "post"])
    expect(switched.code, switched.stderr).toBe(2)
    expect(lastLine(switched.stderr)).toContain(
      "--strategy post: this import into the target began with import",
    )
  }, 120_000)

  it("a target that refused every resource holds none of them: a --retry-quarantine is not taken for a rebuilt target", async () => {
    // (a small archive: every resource is refused one by one)
    const archive = await exportArchive("all-refused", [
      sharedData("sample-bulk-10-patients/Organization.000.ndjson"),
    ])
    const target = await start({ rejectRule: { message: "nothing is accepted here" } })
    const first = await importInto(archive, target)
    expect(first.code, first.stderr).toBe(7)
    expect(targetCounts(target)).toEqual({})
    const retry = await importInto(archive, target, ["--retry-quarantine"])
    expect(retry.code, retry.stderr).toBe(7)
    expect(retry.stderr).not.toContain("emptied or replaced")
  }, 120_000)

  it("a target emptied and rebuilt at the same URL: a rerun refuses to call it done (exit 2, --restart named); --restart loads it again, its earlier state set aside", async () => {
    const archive = copy(sample, "rebuilt-target")
    const port = await freePort()
    const first = await startSandbox({ port })
    const loaded = await importInto(archive, first.handle)
    expect(loaded.code, loaded.stderr).toBe(0)
    const expected = targetCounts(first.handle)
    await first.close()
    // the same URL, a fresh empty server (a disaster recovery's cold environment)
    const rebuilt = await start({ port })
    expect(rebuilt.baseUrl).toBe(first.handle.baseUrl)
    const rerun = await importInto(archive, rebuilt)
    expect(rerun.code, rerun.stderr).toBe(2)
    expect(lastLine(rerun.stderr)).toMatch(
      /the target holds none of the archive's resources, though earlier runs of this import landed \d+ Bundles? there: it was emptied or replaced at this URL since; to load it again from the start, run the same command with --restart/,
    )
    expect(targetCounts(rebuilt)).toEqual({})
    const again = await importInto(archive, rebuilt, ["--restart"])
    expect(again.code, again.stderr).toBe(0)
    expect(again.stderr).toContain("--restart: the earlier import state for this target was set aside as")
    expect(targetCounts(rebuilt)).toEqual(expected)
    const aside = NFS.readdirSync(Path.join(archive, "imports")).filter((d) => d.includes(".set-aside-"))
    expect(aside).toHaveLength(1)
    // a rerun now that it holds the data: nothing to send, exit 0 (no false alarm)
    const done = await importInto(archive, rebuilt)
    expect(done.code, done.stderr).toBe(0)
  }, 120_000)

  it("10-patient sample, put: per-type counts equal, conditional references resolved, every reference resolves", async () => {
    const archive = copy(sample, "put")
    const target = await start({})
    const run = await importInto(archive, target)
    expect(run.code, run.stderr).toBe(0)
    const summary = JSON.parse(run.stdout) as { strategy: string; total: number; quarantined: number }
    expect(summary.strategy).toBe("put")
    expect(summary.quarantined).toBe(0)
    expect(targetCounts(target)).toEqual(archiveCounts(archive))
    const check = danglingIn(target)
    expect(check.dangling).toEqual([])
    expect(check.conditionals).toBe(0)
    expect(check.checked).toBeGreaterThan(10_000)
    // ids kept
    // a rerun finds every chunk done in the journal and sends nothing
    const again = await importInto(archive, target)
    expect(again.code, again.stderr).toBe(0)
    const second = JSON.parse(again.stdout) as { chunks: number; resumedChunks: number; total: number }
    expect(second.resumedChunks).toBe(second.chunks)
    expect(second.total).toBe(0)
    expect(targetCounts(target)).toEqual(archiveCounts(archive))
    // the first import into an empty target and its rerun warn of nothing; another archive's first import into
    // this target (now holding data) says so before it sends anything
    expect(run.stderr).not.toContain("already holds")
    expect(again.stderr).not.toContain("already holds")
    const other = await importInto(copy(sample, "put-again"), target)
    expect(other.code, other.stderr).toBe(0)
    const total = Object.values(archiveCounts(archive)).reduce((a, b) => a + b, 0)
    const binaries = archiveCounts(archive).Binary ?? 0
    expect(other.stderr).toContain(
      `ferry import: WARNING: the target already holds ${total - binaries} resources of the archive's types (`,
    )
    expect(other.stderr).toContain("resources with the same ids are overwritten")
    expect(targetCounts(target)).toEqual(archiveCounts(archive))
    const patient = JSON.parse(
      NFS.readFileSync(Path.join(archive, "data", "Patient.000.ndjson"), "utf8").split("\n")[0]!,
    ) as { id: string }
    expect(target.store.read("Patient", patient.id)).toBeDefined()
    // decimals as written: the sample's `1.0`s crossed the export and the import (its MedicationRequests have
    // conditional references, so they are parsed and rewritten, not sent as their lines)
    const ones = (text: string) => (text.match(/"value":1\.0[,}]/g) ?? []).length
    const inArchive = ones(
      NFS.readFileSync(Path.join(archive, "data", "MedicationRequest.000.ndjson"), "utf8"),
    )
    expect(inArchive).toBe(
      ones(NFS.readFileSync(sharedData("sample-bulk-10-patients/MedicationRequest.000.ndjson"), "utf8")),
    )
    expect(inArchive).toBeGreaterThan(300)
    const onTarget = Array.from(target.store.iterate("MedicationRequest")).reduce(
      (n, r) => n + ones(r.json),
      0,
    )
    expect(onTarget).toBe(inArchive)
    // verify of the archive against the target is clean
    const report = Path.join(tmp, "put-verify")
    const verified = await runFerry([
      "verify",
      "--archive",
      archive,
      "--target",
      target.baseUrl,
      "--report",
      report,
    ])
    expect(verified.code, verified.stderr).toBe(0)
    // a target that stores a `1.0` as `1` (as one keeping decimals as doubles would) holds a different resource
    const lossy = Array.from(target.store.iterate("MedicationRequest")).find((r) => ones(r.json) > 0)
    if (lossy === undefined) throw new Error("no MedicationRequest with a 1.0 on the target")
    target.store.update(JSON.parse(lossy.json) as { id: string })
    const lost = await runFerry(["verify", "--archive", archive, "--target", target.baseUrl, "--json"])
    expect(lost.code, lost.stderr).toBe(6)
    const found = JSON.parse(lost.stdout) as {
      totals: { differing: number }
      differences: Array<{ target?: string; fields?: Array<{ source?: string; target?: string }> }>
    }
    expect(found.totals.differing).toBe(1)
    expect(found.differences[0]?.target).toBe(`MedicationRequest/${lossy.id}`)
    expect(found.differences[0]?.fields?.[0]).toMatchObject({ source: "1.0", target: "1" })
  })

  it("--drop-meta tag,security: the target's resources lose their tags (Ferry's provenance tag added) and security labels, keep meta.source; verify leaves out what the import's journal says it dropped, and no more", async () => {
    const seed = Path.join(tmp, "meta-seed")
    NFS.mkdirSync(seed, { recursive: true })
    const labelled = {
      resourceType: "Patient",
      id: "meta-1",
      meta: {
        source: "urn:ehr:ward-3",
        tag: [{ system: "urn:example:workflow", code: "reviewed" }],
        security: [{ system: "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", code: "R" }],
      },
      gender: "female",
    }
    NFS.writeFileSync(
      Path.join(seed, "Patient.ndjson"),
      `${JSON.stringify(labelled)}\n${JSON.stringify({ resourceType: "Patient", id: "meta-2", gender: "male" })}\n`,
    )
    const archive = await exportArchive("meta", [seed])
    const target = await start({})
    const wrong = await runFerry(["import", archive, "--to", target.baseUrl, "--drop-meta", "tag,profile"])
    expect(wrong.code, wrong.stderr).toBe(2)
    expect(lastLine(wrong.stderr)).toMatch(
      /--drop-meta profile is not a meta member Ferry can drop; give source, tag or security/,
    )
    expect(target.store.countAll()).toBe(0)
    const run = await runFerry([
      "import",
      archive,
      "--to",
      target.baseUrl,
      "--drop-meta",
      "tag",
      "--drop-meta",
      "meta.security",
    ])
    expect(run.code, run.stderr).toBe(0)
    const landed = JSON.parse(target.store.read("Patient", "meta-1")!.json) as {
      meta: { source?: string; tag?: Array<{ system: string }>; security?: unknown }
    }
    expect(landed.meta.source).toBe("urn:ehr:ward-3")
    expect(landed.meta.security).toBeUndefined()
    expect(landed.meta.tag?.map((t) => t.system)).toEqual(["urn:ferry:source"])
    // verify compares what the source has, without what the import dropped (its journal says what), saying so ...
    const verifyWith = (...extra: ReadonlyArray<string>) =>
      runFerry(["verify", "--archive", archive, "--target", target.baseUrl, ...extra])
    const journaled = await verifyWith("--json")
    expect(journaled.code, journaled.stderr).toBe(0)
    expect((JSON.parse(journaled.stdout) as { notes: Array<string> }).notes).toContainEqual(
      expect.stringMatching(
        /^meta\.(tag|security), meta\.(tag|security) left out of the comparison, as the import dropped them \(its journal says so\)$/,
      ),
    )
    // ... and leaves out no more than that: meta.source, which it kept, may not be hidden
    const more = await verifyWith("--drop-meta", "source")
    expect(more.code, more.stderr).toBe(2)
    expect(lastLine(more.stderr)).toContain(
      "--drop-meta source leaves out meta.source, which the import into",
    )
    // told the same as the import, as migrate's suggested command does: the same
    const told = await verifyWith("--drop-meta", "security,tag", "--json")
    expect(told.code, told.stderr).toBe(0)
    expect((JSON.parse(told.stdout) as { notes: Array<string> }).notes).toContainEqual(
      expect.stringMatching(
        /^meta\.(tag|security), meta\.(tag|security) left out of the comparison, as the import dropped them \(its journal says so\)$/,
      ),
    )
  })

  it("client ids refused: post strategy, id map written, references point at the new ids", async () => {
    const archive = copy(sample, "post")
    const target = await start({ refuseClientIds: true })
    const run = await importInto(archive, target)
    expect(run.code, run.stderr).toBe(0)
    expect((JSON.parse(run.stdout) as { strategy: string }).strategy).toBe("post")
    const counts = archiveCounts(archive)
    expect(targetCounts(target)).toEqual(counts)
    const slug = NFS.readdirSync(Path.join(archive, "imports"))[0]!
    const lines = NFS.readFileSync(Path.join(archive, "imports", slug, "idmap.ndjson"), "utf8")
      .trim()
      .split("\n")
    const map = new Map(lines.map((l) => JSON.parse(l) as { s: string; t: string }).map((m) => [m.s, m.t]))
    expect(map.size).toBe(Object.values(counts).reduce((a, b) => a + b, 0))
    const [s, t] = Array.from(map.entries()).find(([k]) => k.startsWith("Patient/"))!
    expect(t).not.toBe(s)
    expect(target.store.read("Patient", t.slice("Patient/".length))).toBeDefined()
    expect(danglingIn(target).dangling).toEqual([])
  })

  it("a 5-entry Bundle limit: 413 splits the chunks until they fit, and the size that fits is kept", async () => {
    // (50 generated patients, 1,154 resources: about 230 Bundles once they fit)
    const archive = await exportArchive("small", [], { generate: 50 })
    const target = await start({ maxBundleEntries: 5 })
    const run = await importInto(archive, target, ["--bundle-size", "40"])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toContain("too large; splitting")
    // the size that lands is learned: a few refused Bundles in all, not a cascade of halvings per chunk
    // (1,259 refused Bundles of the 10-patient sample before, 11–12 after; 7 for these 1,154 resources, where
    // each of their ≈ 30 chunks halving on its own would be refused ≈ 200 times)
    const refused = run.stderr.split("\n").filter((l) => l.includes("too large; splitting")).length
    expect(refused).toBeLessThan(25)
    expect(run.stderr).toContain("sending at most 5 a Bundle from now on")
    expect(targetCounts(target)).toEqual(archiveCounts(archive))
    expect(danglingIn(target).dangling).toEqual([])
  })

  it("entry-level rejections are quarantined with file:line, the rest lands", async () => {
    const archive = copy(sample, "reject")
    const target = await start({ rejectRule: { type: "Immunization", message: "no immunizations here" } })
    const run = await importInto(archive, target)
    // finished, with resources set aside: exit 7 and one line saying where they are and what to do
    expect(run.code, run.stderr).toBe(7)
    expect(lastLine(run.stderr)).toMatch(
      /^ferry: .*quarantine: the target refused \d+ resources, set aside here .*; fix the cause, then run the same command with --retry-quarantine$/,
    )
    // each quarantined line says why, in the target's words
    expect(run.stderr).toMatch(
      /ferry import: quarantined Immunization\/\S+ \(data\/Immunization\.\d+\.ndjson:\d+\): refused by the target \(422: error [\w-]+: no immunizations here\)/,
    )
    const expected = archiveCounts(archive)
    const slug = NFS.readdirSync(Path.join(archive, "imports"))[0]!
    const q = NFS.readFileSync(
      Path.join(archive, "imports", slug, "quarantine", "Immunization.ndjson"),
      "utf8",
    )
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { resource: { resourceType: string }; outcome: unknown; source: string })
    expect(q).toHaveLength(expected.Immunization!)
    for (const x of q) {
      expect(x.resource.resourceType).toBe("Immunization")
      expect(x.source).toMatch(/^data\/Immunization\.\d+\.ndjson(\.gz)?:\d+$/)
      expect(JSON.stringify(x.outcome)).toContain("no immunizations here")
    }
    const { Immunization: _gone, ...rest } = expected
    expect(targetCounts(target)).toEqual(rest)
    type Summary = { ok: boolean; quarantined: number; quarantinePending: number }
    expect(JSON.parse(run.stdout) as Summary).toMatchObject({
      ok: false,
      quarantined: expected.Immunization,
      quarantinePending: expected.Immunization,
    })
    // a plain rerun sends nothing new, and the quarantined resources still wait: still exit 7, which its
    // summary explains (none quarantined by this run, all still pending)
    const again = await importInto(archive, target)
    expect(again.code, again.stderr).toBe(7)
    expect(JSON.parse(again.stdout) as Summary).toMatchObject({
      ok: false,
      quarantined: 0,
      quarantinePending: expected.Immunization,
    })
  })

  it("429 and 503 storms on the target: every 429 and 503 answered, each Retry-After waited out, everything landed", async () => {
    const archive = copy(sample, "storm")
    const { target, requests } = await recordedTarget()
    // the CapabilityStatement, the probe (PUT, DELETE) and the count of each type the archive holds (a first
    // import checks the target is empty) come before the Bundles
    const before = 3 + Object.keys(archiveCounts(archive)).filter((t) => t !== "Binary").length
    await setSandboxFaults(target.baseUrl, {
      // then 12 throttled requests in a row (more than the client's own 8 retries), each asking for 1 s, later
      // 6 503s in a row (without Retry-After: the client's own backoff, 0.5 s doubling; 12 took ≈ 30 s more)
      throttle: [{ route: "fhir", skip: before, first: 12, seconds: 1 }],
      transient: [{ route: "fhir", skip: before + 17, first: 6, status: 503 }],
    })
    const run = await importInto(archive, target)
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toContain("the target is throttling")
    // each line says the parallelism after its halving (the first said the 4 it had before)
    const first = run.stderr.split("\n").find((l) => l.includes("the target is throttling"))
    expect(first).toBe("ferry import: the target is throttling; parallel 2")
    expect(targetCounts(target)).toEqual(archiveCounts(archive))
    const fhir = requests.filter((r) => routeOf(r) === "fhir" && r.path !== "/_sandbox/faults")
    const throttled = fhir.filter((r) => r.status === 429)
    expect(throttled).toHaveLength(12)
    expect(fhir.filter((r) => r.status === 503)).toHaveLength(6)
    // Retry-After: 1 honoured: the Bundles in flight when the first 429 came (4 at most) are all the target
    // saw for the next 950 ms (a client retrying on its own schedule, 400–600 ms at first, would have sent more)
    const t0 = throttled[0]!.at
    expect(fhir.filter((r) => r.at >= t0 && r.at < t0 + 950).length).toBeLessThanOrEqual(4)
    // and what landed after the retries is what the archive holds, resource by resource
    const verified = await runFerry(["verify", "--archive", archive, "--target", target.baseUrl, "--json"])
    expect(verified.code, verified.stdout.slice(0, 2000)).toBe(0)
  }, 180_000)

  it("a target that stops in the middle of a Bundle's answer: given up on after --request-timeout, the Bundle sent again, everything landed once", async () => {
    const archive = copy(sample, "stalled-answer")
    const { target, requests } = await recordedTarget()
    // the first transaction is committed, its answer sends its headers and 100 bytes, then nothing more
    await setSandboxFaults(target.baseUrl, {
      stallAnswer: [{ route: "fhir", method: "POST", first: 1, afterBytes: 100 }],
    })
    const started = Date.now()
    const run = await importInto(archive, target, ["--request-timeout", "1s"])
    expect(run.code, run.stderr).toBe(0)
    // said as what it was, not as throttling
    expect(run.stderr).toContain(
      "ferry import: the target did not answer in time, or stopped in the middle of an answer; parallel 2",
    )
    expect(run.stderr).not.toContain("the target is throttling")
    // (without a limit on the answer's body this import waited for ever)
    expect(Date.now() - started).toBeLessThan(40_000)
    expect(targetCounts(target)).toEqual(archiveCounts(archive))
    expect(danglingIn(target).dangling).toEqual([])
    const bundles = requests.filter((r) => r.method === "POST" && routeOf(r) === "fhir")
    const summary = JSON.parse(run.stdout) as { chunks: number }
    // every Bundle once, and the one whose answer stalled once more
    expect(bundles.length).toBe(summary.chunks + 1)
  })

  it("--retry-quarantine replays the quarantined resources once the target accepts them", async () => {
    const archive = copy(sample, "retry")
    const db = Path.join(tmp, "retry.sqlite")
    const port = await freePort()
    const refusing = await startSandbox({ port, db, rejectRule: { type: "Immunization" } })
    const first = await importInto(archive, refusing.handle)
    await refusing.close()
    expect(first.code, first.stderr).toBe(7)
    const expected = archiveCounts(archive)
    expect((JSON.parse(first.stdout) as { quarantined: number }).quarantined).toBe(expected.Immunization)
    const fixed = await start({ port, db })
    expect(fixed.store.count("Immunization")).toBe(0)
    // as a --retry-quarantine stopped mid-replay (a kill, a server error) leaves it: half the lines in the
    // replaying file, the rest (quarantined again, say) in the type's file; both still count as pending
    // same port and database: the same target, so the same import folder
    const qdir = Path.join(importDir(archive), "quarantine")
    const qfile = Path.join(qdir, "Immunization.ndjson")
    const lines = NFS.readFileSync(qfile, "utf8").trim().split("\n")
    const half = Math.floor(lines.length / 2)
    NFS.writeFileSync(`${qfile}.replaying`, `${lines.slice(0, half).join("\n")}\n`, { mode: 0o600 })
    NFS.writeFileSync(qfile, `${lines.slice(half).join("\n")}\n`, { mode: 0o600 })
    const plain = await importInto(archive, fixed)
    expect(plain.code, plain.stderr).toBe(7)
    expect(plain.stderr).toContain(`the target refused ${lines.length} resources`)
    const second = await importInto(archive, fixed, ["--retry-quarantine"])
    expect(second.code, second.stderr).toBe(0)
    expect((JSON.parse(second.stdout) as { quarantined: number; resumedChunks: number }).quarantined).toBe(0)
    expect(targetCounts(fixed)).toEqual(expected)
    expect(danglingIn(fixed).dangling).toEqual([])
    const left = NFS.readdirSync(qdir)
    expect(left.filter((n) => n.endsWith(".ndjson") || n.endsWith(".replaying"))).toEqual([])
    expect(left.filter((n) => n.startsWith("Immunization.ndjson.replayed-")).length).toBe(1)
  })

  it("post: what refers to a quarantined resource is quarantined too, never sent with the source id; --retry-quarantine lands both, pass after pass", async () => {
    // (50 generated patients: Encounters, Conditions, Observations, … refer to them and to each other)
    const archive = await exportArchive("post-waiting", [], { generate: 50 })
    const db = Path.join(tmp, "post-waiting.sqlite")
    const port = await freePort()
    const refusing = await startSandbox({
      port,
      db,
      refuseClientIds: true,
      rejectRule: { type: "Patient", path: "gender", equals: "female" },
    })
    const first = await importInto(archive, refusing.handle, ["--strategy", "post"])
    const left = danglingIn(refusing.handle)
    await refusing.close()
    expect(first.code, first.stderr).toBe(7)
    // nothing on the target points at a patient that is not there (or at another one under that id)
    expect(left.dangling).toEqual([])
    expect(left.checked).toBeGreaterThan(1000)
    const qdir = Path.join(importDir(archive), "quarantine")
    const reasons = NFS.readdirSync(qdir)
      .filter((n) => n !== "Patient.ndjson")
      .flatMap((n) => NFS.readFileSync(Path.join(qdir, n), "utf8").trim().split("\n"))
      .map((l) => (JSON.parse(l) as { reason: string }).reason)
    expect(reasons.length).toBeGreaterThan(0)
    for (const r of reasons)
      expect(r).toMatch(/^it refers to [A-Za-z]+\/.* which is in the archive but has no id on the target yet/)
    // the last line tells what the target refused from what waits on it (it called them all refused)
    const patients = NFS.readFileSync(Path.join(qdir, "Patient.ndjson"), "utf8").trim().split("\n").length
    expect(first.stderr.trim().split("\n").at(-1)).toContain(
      `the target refused ${patients} resource${patients === 1 ? "" : "s"}, and ${reasons.length} that refer to ${patients === 1 ? "it" : "them"} wait with ${patients === 1 ? "it" : "them"}, set aside here`,
    )
    const fixed = await start({ port, db, refuseClientIds: true })
    const second = await importInto(archive, fixed, ["--strategy", "post", "--retry-quarantine"])
    expect(second.code, second.stderr).toBe(0)
    expect(targetCounts(fixed)).toEqual(archiveCounts(archive))
    expect(danglingIn(fixed).dangling).toEqual([])
  })

  it("post and put: a reference to a resource not in the archive (deleted at the source) is sent as written, with a WARNING naming the first and the count; none for the whole archive", async () => {
    // (50 generated patients: each Encounter's Condition and Observations refer to it)
    const source = await start({ generate: 50 })
    const whole = Path.join(tmp, "dangling-whole")
    expect((await runFerry(["export", source.baseUrl, "--out", whole])).code).toBe(0)
    const conditions = Array.from(source.store.iterate("Condition")).map(
      (r) => JSON.parse(r.json) as { id: string; encounter?: { reference?: string } },
    )
    const encounter = conditions.find((c) => c.encounter?.reference !== undefined)!.encounter!.reference!
    const referring = conditions.filter((c) => c.encounter?.reference === encounter).length
    const gone = await fetch(`${source.baseUrl}/${encounter}`, { method: "DELETE" })
    expect(gone.status).toBeLessThan(300)
    const archive = Path.join(tmp, "dangling-source")
    expect((await runFerry(["export", source.baseUrl, "--out", archive])).code).toBe(0)
    const warningOf = (stderr: string) =>
      stderr
        .split("\n")
        .find((l) => l.startsWith("ferry import: WARNING: ") && l.includes("not in the archive"))
    const escaped = encounter.replace(/[.]/g, "\\.")
    // post: the target assigns the ids
    const target = await start({ refuseClientIds: true })
    const run = await importInto(archive, target)
    expect(run.code, run.stderr).toBe(0)
    const warning = warningOf(run.stderr)
    expect(warning).toBeDefined()
    // (that Encounter's Observations and others refer to it too)
    expect(Number(/WARNING: (\d+) reference/.exec(warning!)?.[1])).toBeGreaterThanOrEqual(referring)
    expect(warning).toMatch(new RegExp(`\\(first: [A-Za-z]+/[^ ]+ \\([^)]+\\) → ${escaped};`))
    // put: the same count, found as the references are resolved (the lines go as written)
    const putTarget = await start({})
    const put = await importInto(archive, putTarget)
    expect(put.code, put.stderr).toBe(0)
    expect((JSON.parse(put.stdout) as { strategy: string }).strategy).toBe("put")
    const putWarning = warningOf(put.stderr)
    expect(putWarning, put.stderr).toBeDefined()
    expect(Number(/WARNING: (\d+) reference/.exec(putWarning!)?.[1])).toBe(
      Number(/WARNING: (\d+) reference/.exec(warning!)?.[1]),
    )
    expect(putWarning).toMatch(new RegExp(`\\(first: [A-Za-z]+/[^ ]+ → ${escaped};`))
    // the archive of the whole source before the delete: nothing dangles, nothing said
    const clean = await importInto(whole, await start({}))
    expect(clean.code, clean.stderr).toBe(0)
    expect(warningOf(clean.stderr), clean.stderr).toBeUndefined()
  })

  it("the same bytes from a source Binary and from another host: the source's attachment keeps pointing at its migrated Binary, the other one at the copy", async () => {
    const source = await start({ seed: [sharedData("attachments")] })
    const other = await start({ seed: [sharedData("attachments")] })
    const binary = Array.from(source.store.iterate("Binary"))[0]!
    const bytes = source.store.getBinary(binary.id)!
    // a document on the source that links the same file kept on another server
    const put = await fetch(`${source.baseUrl}/DocumentReference/elsewhere`, {
      method: "PUT",
      headers: { "content-type": "application/fhir+json" },
      body: JSON.stringify({
        resourceType: "DocumentReference",
        id: "elsewhere",
        status: "current",
        content: [
          { attachment: { contentType: bytes.contentType, url: `${other.baseUrl}/Binary/${binary.id}` } },
        ],
      }),
    })
    expect(put.status).toBeLessThan(300)
    const archive = Path.join(tmp, "shared-bytes")
    const exported = await runFerry([
      "export",
      source.baseUrl,
      "--out",
      archive,
      "--attachment-origin",
      new URL(other.baseUrl).origin,
    ])
    expect(exported.code, exported.stderr).toBe(0)
    const target = await start({})
    const run = await importInto(archive, target)
    expect(run.code, run.stderr).toBe(0)
    const urlOf = (id: string) =>
      (
        JSON.parse(target.store.read("DocumentReference", id)!.json) as {
          content: Array<{ attachment: { url: string } }>
        }
      ).content[0]!.attachment.url
    const own = Array.from(source.store.iterate("DocumentReference")).find(
      (d) => d.json.includes(`/Binary/${binary.id}"`) && d.id !== "elsewhere",
    )!
    expect(urlOf(own.id)).toBe(`Binary/${binary.id}`)
    // a copy for that document, which names it as its security context
    expect(urlOf("elsewhere")).toMatch(/^Binary\/ferry-[0-9a-f]{40}-[0-9a-f]{16}$/)
    const copy = target.store.getBinary(urlOf("elsewhere").slice("Binary/".length))
    expect(copy?.bytes.equals(bytes.bytes)).toBe(true)
    expect(JSON.parse(copy!.stored.json).securityContext).toEqual({
      reference: "DocumentReference/elsewhere",
    })
    expect(target.store.getBinary(binary.id)?.bytes.equals(bytes.bytes)).toBe(true)
    const verified = await runFerry(["verify", "--archive", archive, "--target", target.baseUrl])
    expect(verified.code, verified.stdout + verified.stderr).toBe(0)
  })

  it("a document deleted at the source: a delta deletes it on the target and the attachment copy made for it", async () => {
    const source = await start({})
    const files = await start({ seed: [sharedData("attachments")] })
    const binary = Array.from(files.store.iterate("Binary"))[0]!
    const bytes = files.store.getBinary(binary.id)!
    for (const id of ["kept", "gone"]) {
      const put = await fetch(`${source.baseUrl}/DocumentReference/${id}`, {
        method: "PUT",
        headers: { "content-type": "application/fhir+json" },
        body: JSON.stringify({
          resourceType: "DocumentReference",
          id,
          status: "current",
          content: [
            { attachment: { contentType: bytes.contentType, url: `${files.baseUrl}/Binary/${binary.id}` } },
          ],
        }),
      })
      expect(put.status).toBeLessThan(300)
    }
    const origin = ["--attachment-origin", new URL(files.baseUrl).origin]
    const full = Path.join(tmp, "copies-full")
    expect((await runFerry(["export", source.baseUrl, "--out", full, ...origin])).code).toBe(0)
    const target = await start({})
    const first = await importInto(full, target)
    expect(first.code, first.stderr).toBe(0)
    // one copy per document, each naming its document
    expect(target.store.count("Binary")).toBe(2)
    const deleted = await fetch(`${source.baseUrl}/DocumentReference/gone`, { method: "DELETE" })
    expect(deleted.status).toBeLessThan(300)
    const delta = Path.join(tmp, "copies-delta")
    const exported = await runFerry(["export", source.baseUrl, "--out", delta, "--since", "auto", ...origin])
    expect(exported.code, exported.stderr).toBe(0)
    const second = await importInto(delta, target)
    expect(second.code, second.stderr).toBe(0)
    expect((JSON.parse(second.stdout) as { deleted: number }).deleted).toBe(1)
    expect(target.store.read("DocumentReference", "gone")).toBeUndefined()
    // the deleted document's copy went with it (its security context named it); the other one's stays
    const left = Array.from(target.store.iterate("Binary")).map((r) => JSON.parse(r.json).securityContext)
    expect(left).toEqual([{ reference: "DocumentReference/kept" }])
  })

  it("a target whose credentials may not search: a conditional reference a batch needs looked up sets its resource aside with the reason, the import goes on (exit 7, not 3)", async () => {
    const source = await start({ seed: [sharedData("sample-bulk-10-patients")] })
    const archive = Path.join(tmp, "write-only")
    const exported = await runFerry([
      "export",
      source.baseUrl,
      "--out",
      archive,
      "--type",
      "Patient,Encounter",
    ])
    expect(exported.code, exported.stderr).toBe(0)
    const client = smartTestClient(tmp, "ferry-write-only")
    const target = await start({
      seed: ["Practitioner", "Organization", "Location"].map((t) =>
        sharedData(`sample-bulk-10-patients/${t}.000.ndjson`),
      ),
      auth: { clients: [{ ...client.registration, scopes: ["system/*.cud", "system/*.r"] }] },
      rejectRule: { type: "Encounter", path: "id", equals: "00c7f717-4030-5582-2ed8-888ad2bc878e" },
    })
    const run = await runFerry([
      "import",
      "--to",
      target.baseUrl,
      "--strategy",
      "put",
      ...client.args,
      "--scope",
      "system/*.cud system/*.r",
      archive,
    ])
    expect(run.code, run.stderr).toBe(7)
    expect(run.stderr).toContain("the target's credentials may not search Practitioner (403)")
    // the transactions the target took landed (it resolved their conditional references itself)
    expect(target.store.count("Encounter")).toBeGreaterThan(0)
  })

  it("an attachment copy the target refuses (413): one sentence naming it and the document it was made for; a rerun after the fix lands everything", async () => {
    // without the Binary resources, the attachments travel as blobs (put: a copy for each document, made once
    // the document landed); with the practitioners and organizations the documents name by identifier (a
    // reference to one the target does not hold either would set the document aside: it cannot land as written)
    const source = await start({ seed: [sharedData("sample-bulk-10-patients"), sharedData("attachments")] })
    const archive = Path.join(tmp, "blob-refused")
    const exported = await runFerry([
      "export",
      source.baseUrl,
      "--out",
      archive,
      "--type",
      "Patient,DocumentReference,Practitioner,Organization",
    ])
    expect(exported.code, exported.stderr).toBe(0)
    // document.pdf (1,084,656 bytes) is over the limit
    const db = Path.join(tmp, "blob-refused.sqlite")
    const port = await freePort()
    const limited = await startSandbox({ port, db, maxBodyBytes: 1_000_000 })
    const run = await importInto(archive, limited.handle)
    const dangling = danglingIn(limited.handle).dangling.filter((d) => d.includes("→ Binary/"))
    await limited.close()
    expect(run.code, run.stderr).toBe(4)
    const said = run.stderr.trim().split("\n").at(-1) ?? ""
    expect(said).toMatch(
      /^ferry: .*the target refused the copy of attachment blob [0-9a-f]{64} \(1084656 bytes\) for DocumentReference\/\S+: .*413.*points at Binary\/ferry-[0-9a-f]{40}-[0-9a-f]{16}, which is missing until the target takes it: raise the target's limit .*run the same command again/,
    )
    // the document landed before its copy was refused: it, and it alone, points at a Binary not there yet
    expect(dangling.length, dangling.join("\n")).toBe(1)
    expect(said).toContain(dangling[0]!.split("→ ")[1]!)
    // the limit raised: the same command lands everything, every attachment on a Binary of the target
    const fixed = await start({ port, db })
    const again = await importInto(archive, fixed)
    expect(again.code, again.stderr).toBe(0)
    expect(targetCounts(fixed)).toEqual({ ...archiveCounts(archive), Binary: 3 })
    // (references to the types left out of this export dangle by design: only attachments are checked)
    const check = danglingIn(fixed)
    expect(check.dangling.filter((d) => d.includes("→ Binary/"))).toEqual([])
    const urls = Array.from(fixed.store.iterate("DocumentReference")).flatMap((r) =>
      (JSON.parse(r.json) as { content: Array<{ attachment: { url?: string } }> }).content.map(
        (c) => c.attachment.url ?? "",
      ),
    )
    // (most hold their text inline: no url)
    const linked = urls.filter((u) => u !== "")
    expect(linked.length).toBe(3)
    for (const u of linked) expect(u).toMatch(/^Binary\//)
  })

  it("a Binary resource of the archive the target refuses as too large even alone (413): the import stops naming it, nothing left pointing at nothing; a rerun after the fix lands everything", async () => {
    const archive = copy(sample, "binary-refused")
    expect(archiveCounts(archive).Binary).toBe(3)
    const db = Path.join(tmp, "binary-refused.sqlite")
    const port = await freePort()
    // Binary/document.pdf (1,084,656 bytes, base64 in the resource) is over the limit
    const limited = await startSandbox({ port, db, maxBodyBytes: 1_000_000 })
    const run = await importInto(archive, limited.handle)
    const dangling = danglingIn(limited.handle).dangling.filter((d) => d.includes("→ Binary/"))
    await limited.close()
    expect(run.code, run.stderr).toBe(4)
    expect(run.stderr.trim().split("\n").at(-1)).toMatch(
      /^ferry: .*the target refused Binary\/document\.pdf \(data\/Binary\.000\.ndjson:\d+\) as too large even alone \(413: .*\); what refers to it would point at nothing, so the import stops here/,
    )
    // (it used to be quarantined while the DocumentReference landed with a link to nothing, exit 7)
    expect(dangling).toEqual([])
    const fixed = await start({ port, db })
    const again = await importInto(archive, fixed)
    expect(again.code, again.stderr).toBe(0)
    expect(targetCounts(fixed)).toEqual(archiveCounts(archive))
    expect(danglingIn(fixed).dangling).toEqual([])
  })

  it("deleted/ of an incremental archive: DELETEs on the target through the id map", async () => {
    // (50 generated patients: what is tested is the deletes and the id map, not the data)
    const source = await start({ generate: 50 })
    const full = Path.join(tmp, "del-full")
    expect((await runFerry(["export", source.baseUrl, "--out", full])).code).toBe(0)
    const target = await start({ refuseClientIds: true })
    const first = await importInto(full, target)
    expect(first.code, first.stderr).toBe(0)
    const gone = Array.from(source.store.iterate("Observation"))
      .slice(0, 2)
      .map((r) => r.id)
    for (const id of gone) {
      const r = await fetch(`${source.baseUrl}/Observation/${id}`, { method: "DELETE" })
      expect(r.status).toBeLessThan(300)
    }
    const changed = Array.from(source.store.iterate("Patient"))[0]!
    const patient = JSON.parse(changed.json) as { gender?: string }
    const gender = patient.gender === "female" ? "male" : "female"
    const put = await fetch(`${source.baseUrl}/Patient/${changed.id}`, {
      method: "PUT",
      headers: { "content-type": "application/fhir+json" },
      body: JSON.stringify({ ...patient, gender }),
    })
    expect(put.status).toBeLessThan(300)
    const delta = Path.join(tmp, "del-delta")
    const exported = await runFerry(["export", source.baseUrl, "--out", delta, "--since", "auto"])
    expect(exported.code, exported.stderr).toBe(0)
    expect(archiveManifest(delta).files.length).toBeGreaterThan(0)
    // a deleted/ file's lines are Bundles of deletions, not resources of the export (nor in its running
    // total, whichever file comes first: the one changed Patient is all there is)
    expect(exported.stderr).toMatch(
      /ferry export: deleted\/\S+: \d+ Bundles? of deletions, .* \(total [01] resources?,/,
    )
    expect(exported.stderr).toMatch(
      /ferry export: data\/Patient\S+: 1 Patient resource, .* \(total 1 resource,/,
    )
    expect(exported.stderr).not.toContain("Bundle resource")
    // elsewhere, without the archive it continues: the target assigned its own ids, so neither the update nor
    // the deletes could find their resources; refused before anything is sent (it used to say "0 deleted", exit 0)
    const elsewhere = Path.join(tmp, "elsewhere", "del-delta")
    NFS.cpSync(delta, elsewhere, { recursive: true })
    const before = targetCounts(target)
    const alone = await importInto(elsewhere, target)
    expect(alone.code, alone.stderr).toBe(2)
    expect(alone.stderr.trim().split("\n").at(-1)).toMatch(
      /^ferry: .*del-delta: the archive is an incremental export \(changes since .*\) and no id map of an earlier import into .* was found/,
    )
    expect(targetCounts(target)).toEqual(before)
    // beside a full archive whose import did not run to its end (its journal's last line gone, as in a crash):
    // its id map may lack what it created, so the delta is refused until that import is run again
    const journal = Path.join(importDir(full), "journal.ndjson")
    const whole = NFS.readFileSync(journal, "utf8")
    expect(whole.trim().split("\n").at(-1)).toContain('"kind":"import.done"')
    NFS.writeFileSync(journal, `${whole.trim().split("\n").slice(0, -1).join("\n")}\n`)
    const early = await importInto(delta, target)
    expect(early.code, early.stderr).toBe(2)
    expect(lastLine(early.stderr)).toMatch(
      /del-full: the import of this archive into .* did not finish \(its journal has no end\)/,
    )
    NFS.writeFileSync(journal, whole)
    // beside the full archive: that import's id map is carried over, the update and the deletes land
    const second = await importInto(delta, target)
    expect(second.code, second.stderr).toBe(0)
    expect(second.stderr).toContain(`ferry import: continues ${full}`)
    const summary = JSON.parse(second.stdout) as { strategy: string; deleted: number; deletesSkipped: number }
    expect(summary.strategy).toBe("post")
    expect(summary.deleted).toBe(2)
    expect(summary.deletesSkipped).toBe(0)
    expect(target.store.count("Observation")).toBe(source.store.count("Observation"))
    expect(target.store.count("Patient")).toBe(source.store.count("Patient"))
    const genders = Array.from(target.store.iterate("Patient")).filter(
      (r) => (JSON.parse(r.json) as { gender?: string }).gender === gender,
    ).length
    expect(genders).toBe(
      Array.from(source.store.iterate("Patient")).filter(
        (r) => (JSON.parse(r.json) as { gender?: string }).gender === gender,
      ).length,
    )

    // A target that keeps referential integrity refuses (409) a delete while something still refers to
    // it; deleted/ comes in no useful order. Here the first DELETE it gets is refused so: it waits for a
    // second pass, after the other one, and both land.
    let refusals = 0
    const strict = await startSandbox({ refuseClientIds: true }, [
      (router) =>
        router.use(async (ctx, next) => {
          if (ctx.req.method === "DELETE" && refusals === 0) {
            refusals++
            sendOutcome(ctx, 409, "error", "conflict", "still referred to by another resource")
            return
          }
          // (this target answers a DELETE of what it no longer has with 410, as some servers do; the sandbox's
          // own answer is 204 either way)
          const [type, id] = new URL(ctx.req.url ?? "/", "http://x").pathname.split("/").slice(-2)
          if (ctx.req.method === "DELETE" && ctx.store.version(type ?? "", id ?? "")?.deleted === true) {
            sendOutcome(ctx, 410, "error", "deleted", `${type}/${id} was deleted`)
            return
          }
          await next()
        }),
      ...defaultPlugins,
    ])
    sandboxes.push(strict)
    const again = copy(full, "del-full-strict")
    NFS.rmSync(Path.join(again, "imports"), { recursive: true, force: true })
    expect((await importInto(again, strict.handle)).code).toBe(0)
    const slug2 = NFS.readdirSync(Path.join(again, "imports"))[0]!
    const delta2 = copy(delta, "del-delta-strict")
    NFS.rmSync(Path.join(delta2, "imports"), { recursive: true, force: true })
    NFS.mkdirSync(Path.join(delta2, "imports", slug2), { recursive: true })
    NFS.copyFileSync(
      Path.join(again, "imports", slug2, "idmap.ndjson"),
      Path.join(delta2, "imports", slug2, "idmap.ndjson"),
    )
    const third = await importInto(delta2, strict.handle, ["--strategy", "post"])
    expect(third.code, third.stderr).toBe(0)
    expect(refusals).toBe(1)
    expect((JSON.parse(third.stdout) as { deleted: number }).deleted).toBe(2)
    expect(strict.handle.store.count("Observation")).toBe(source.store.count("Observation"))
    // killed after its deletes but before they were journaled done (those journal lines gone): the rerun repeats
    // them, and what the target says is gone already (410) is not counted deleted a second time
    const deltaJournal = Path.join(importDir(delta2), "journal.ndjson")
    const lines = NFS.readFileSync(deltaJournal, "utf8").trim().split("\n")
    const kept = lines.filter((l) => !l.includes('"kind":"import.deleted"'))
    expect(kept.length).toBeLessThan(lines.length)
    NFS.writeFileSync(deltaJournal, `${kept.join("\n")}\n`)
    const rerun = await importInto(delta2, strict.handle, ["--strategy", "post"])
    expect(rerun.code, rerun.stderr).toBe(0)
    const resumed = JSON.parse(rerun.stdout) as { deleted: number; deletesAlreadyGone: number }
    expect(resumed.deleted).toBe(0)
    expect(resumed.deletesAlreadyGone).toBe(2)
    expect(rerun.stderr).toContain("0 deleted (2 more already gone from the target)")
    expect(strict.handle.store.count("Observation")).toBe(source.store.count("Observation"))
  })

  it("--strategy import into a target that assigns its own ids: warned before, and a failure (exit 4) when its job stored them so, not a success with references to nothing", async () => {
    const archive = copy(sample, "bulk-own-ids")
    const target = await start({ refuseClientIds: true })
    const run = await importInto(archive, target, ["--strategy", "import"])
    expect(run.code, run.stderr).toBe(4)
    expect(run.stderr).toContain(
      "its $import may store those resources under ids of its own, which --strategy import cannot follow",
    )
    expect(lastLine(run.stderr)).toMatch(
      /the target's \$import stored \d+ resource\(s\) under ids of its own \(first: \w+\/[^ ]+ as \w+\/[^ ]+\), so references to them from other resources do not resolve; .*--strategy post/,
    )
    // the same command again: the same failure, and no files sent for yet another copy of each resource
    const held = target.store.countAll()
    const again = await importInto(archive, target, ["--strategy", "import"])
    expect(again.code, again.stderr).toBe(4)
    expect(lastLine(again.stderr)).toContain("under ids of its own")
    expect(target.store.countAll()).toBe(held)
  }, 120_000)

  it("--strategy import: the target's $import job loads the archive rewritten as the Bundles would be (conditional references resolved, attachments re-pointed); every reference resolves", async () => {
    const archive = copy(sample, "bulk")
    const target = await start({})
    const run = await importInto(archive, target, ["--strategy", "import"])
    expect(run.code, run.stderr).toBe(0)
    const summary = JSON.parse(run.stdout) as { strategy: string; total: number; quarantined: number }
    expect(summary.strategy).toBe("import")
    expect(summary.quarantined).toBe(0)
    expect(targetCounts(target)).toEqual(archiveCounts(archive))
    const check = danglingIn(target)
    expect(check.dangling).toEqual([])
    // the sample's Practitioner/Organization references are conditional: the target got them resolved
    expect(check.conditionals).toBe(0)
    expect(check.checked).toBeGreaterThan(10_000)
    // the rewritten files were staged for the job only
    const slug = NFS.readdirSync(Path.join(archive, "imports"))[0]!
    expect(NFS.readdirSync(Path.join(archive, "imports", slug)).filter((n) => n.startsWith("bulk"))).toEqual(
      [],
    )
  })

  it("--strategy import with lines the target rejects: each quarantined with its file:line once, however often the job runs", async () => {
    const archive = copy(sample, "bulk-reject")
    const target = await start({ rejectRule: { type: "Immunization", message: "no immunizations here" } })
    const expected = archiveCounts(archive)
    const quarantined = () => {
      const slug = NFS.readdirSync(Path.join(archive, "imports"))[0]!
      return NFS.readFileSync(
        Path.join(archive, "imports", slug, "quarantine", "Immunization.ndjson"),
        "utf8",
      )
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { source: string; outcome: unknown })
    }
    for (let run = 1; run <= 2; run++) {
      const r = await importInto(archive, target, ["--strategy", "import"])
      expect(r.code, r.stderr).toBe(7)
      const q = quarantined()
      expect(q).toHaveLength(expected.Immunization!)
      expect(new Set(q.map((x) => x.source)).size).toBe(expected.Immunization!)
      for (const x of q) {
        expect(x.source).toMatch(/^data\/Immunization\.\d+\.ndjson(\.gz)?:\d+$/)
        expect(JSON.stringify(x.outcome)).toContain("no immunizations here")
      }
    }
    const { Immunization: _gone, ...rest } = expected
    expect(targetCounts(target)).toEqual(rest)
  })

  it("--strategy import into a target whose $import job fails: exit 4 with the job's failure, nothing journaled done", async () => {
    const archive = copy(sample, "bulk-job-failed")
    const target = await start({ faults: { failJobs: true } })
    const r = await importInto(archive, target, ["--strategy", "import"])
    expect(r.code, r.stderr).toBe(4)
    expect(lastLine(r.stderr)).toMatch(
      /^ferry: http:\/\/127\.0\.0\.1:\d+\/fhir\/bulk\/import-status\/\S+: .*failed/,
    )
    expect(lastLine(r.stderr)).toContain("it could not be completed (the sandbox's failJobs fault)")
    const slug = NFS.readdirSync(Path.join(archive, "imports"))[0]!
    const journal = NFS.readFileSync(Path.join(archive, "imports", slug, "journal.ndjson"), "utf8")
    expect(journal).not.toContain('"kind":"import.done"')
  })

  it("--strategy import killed while the target's job runs: the rerun cancels that job (DELETE) before its own kick-off", async () => {
    const archive = copy(sample, "bulk-killed")
    const target = await start({ bulk: { retryAfterSeconds: 0, pollsBeforeDone: 1_000_000 } })
    const first = await runFerry(["import", "--to", target.baseUrl, "--strategy", "import", archive], {
      onStderr: (text, child) => {
        if (text.includes("$import job started") && child.exitCode === null && child.signalCode === null)
          child.kill("SIGKILL")
      },
    })
    expect(first.signal, first.stderr).toBe("SIGKILL")
    const slug = NFS.readdirSync(Path.join(archive, "imports"))[0]!
    const journaled = NFS.readFileSync(Path.join(archive, "imports", slug, "journal.ndjson"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { key: string; data?: { statusUrl?: string; open?: boolean } })
      .filter((e) => e.key === "import.bulk.job")
    expect(journaled.at(-1)?.data?.open).toBe(true)
    const statusUrl = journaled.at(-1)!.data!.statusUrl!
    expect((await fetch(statusUrl)).status).toBe(202) // still running on the target
    // the rerun cancels the orphan before its own kick-off (its own job never finishes here either: killed too)
    const second = await runFerry(["import", "--to", target.baseUrl, "--strategy", "import", archive], {
      onStderr: (text, child) => {
        if (text.includes("$import job started") && child.exitCode === null && child.signalCode === null)
          child.kill("SIGKILL")
      },
    })
    expect(second.stderr).toContain(
      "ferry import: cancelled the $import job an earlier run started and could not release",
    )
    expect((await fetch(statusUrl)).status).toBe(404)
  })

  it("--strategy import --file-base-url with an archive whose references need rewriting: exit 2, one line saying why, nothing sent", async () => {
    const archive = copy(sample, "bulk-published")
    const target = await start({})
    const run = await importInto(archive, target, [
      "--strategy",
      "import",
      "--file-base-url",
      "https://files.example.org/archive",
    ])
    expect(run.code, run.stderr).toBe(2)
    expect(lastLine(run.stderr)).toMatch(
      /^ferry: .*: \d+ resource\(s\) of the archive need their references or attachment URLs rewritten for the target .*; leave out --file-base-url so that Ferry serves the rewritten files, or use --strategy put or post$/,
    )
    expect(target.store.countAll()).toBe(0)
  })

  it("--serve-host without --strategy import: exit 2, one line", async () => {
    const archive = copy(sample, "serve-flag")
    const target = await start({})
    const run = await importInto(archive, target, ["--serve-host", "0.0.0.0"])
    expect(run.code, run.stderr).toBe(2)
    expect(lastLine(run.stderr)).toContain("go with --strategy import")
    expect(target.store.countAll()).toBe(0)
  })

  it("an unreachable target (a typo in --to): exit 4, one sentence, and the archive left as it was", async () => {
    const archive = copy(sample, "unreachable")
    const url = `http://127.0.0.1:${await freePort()}/fhir`
    const run = await runFerry(["import", "--to", url, archive])
    expect(run.code, run.stderr).toBe(4)
    expect(lastLine(run.stderr)).toMatch(
      /^ferry: GET http:\/\/127\.0\.0\.1:\d+\/fhir\/metadata: could not reach the server/,
    )
    expect(NFS.existsSync(Path.join(archive, "imports"))).toBe(false)
  })

  it("--strategy put against a target that refuses client ids: exit 4 and one line saying what to do", async () => {
    const archive = copy(sample, "refused")
    const target = await start({ refuseClientIds: true })
    const run = await importInto(archive, target, ["--strategy", "put"])
    expect(run.code).toBe(4)
    expect(lastLine(run.stderr)).toContain(
      "refuses client-defined ids (405 on PUT); rerun with --strategy post",
    )
    expect(target.store.countAll()).toBe(0)
  })

  it("a changed archive (a data line edited, still valid JSON) is not imported: exit 5, one line naming the file, nothing sent", async () => {
    const archive = copy(sample, "changed")
    const file = Path.join(archive, "data", "Patient.000.ndjson")
    const text = NFS.readFileSync(file, "utf8")
    expect(text).toMatch(/"gender":"(male|female)"/)
    NFS.writeFileSync(file, text.replace(/"gender":"(male|female)"/, '"gender":"other"'))
    const target = await start({})
    const run = await importInto(archive, target)
    expect(run.code, run.stderr).toBe(5)
    expect(lastLine(run.stderr)).toMatch(
      /^ferry: .*data\/Patient\.000\.ndjson: the archive was changed or damaged: data\/Patient\.000\.ndjson does not hold the bytes the export recorded .*; restore the archive from a copy, or export again$/,
    )
    expect(target.store.countAll()).toBe(0)
  })

  it("checksums.sha256 that disagrees with the archive (a blob's row changed, a data file's row dropped) is not imported: exit 5, as verify --archive says, nothing sent", async () => {
    const target = await start({})
    const rows = NFS.readFileSync(Path.join(sample, "checksums.sha256"), "utf8")
      .split("\n")
      .filter((l) => l !== "")
    const blob = rows.findIndex((r) => / attachments\/[0-9a-f]{2}\//.test(r))
    const data = rows.findIndex((r) => r.endsWith(" data/Procedure.000.ndjson"))
    expect(blob).toBeGreaterThanOrEqual(0)
    expect(data).toBeGreaterThanOrEqual(0)
    const edited = (name: string, edit: (rows: Array<string>) => Array<string>) => {
      const archive = copy(sample, name)
      NFS.writeFileSync(Path.join(archive, "checksums.sha256"), `${edit([...rows]).join("\n")}\n`)
      return archive
    }
    const flipped = edited("checksum-blob", (r) => {
      const row = r[blob]!
      r[blob] = `${row[0] === "a" ? "b" : "a"}${row.slice(1)}`
      return r
    })
    const dropped = edited("checksum-dropped", (r) => r.filter((_, i) => i !== data))
    const dataRow = edited("checksum-data-row", (r) => {
      const row = r[data]!
      r[data] = `${row[0] === "a" ? "b" : "a"}${row.slice(1)}`
      return r
    })
    const none = copy(sample, "checksum-none")
    NFS.rmSync(Path.join(none, "checksums.sha256"))
    for (const [archive, said] of [
      [flipped, `checksums.sha256 lists ${rows[blob]!.split("  ")[1]!} with another sha256 (`],
      [dropped, "data/Procedure.000.ndjson is not covered by checksums.sha256"],
      [dataRow, "checksums.sha256 lists data/Procedure.000.ndjson with another sha256 ("],
    ] as const) {
      const run = await importInto(archive, target)
      expect(run.code, run.stderr).toBe(5)
      expect(lastLine(run.stderr)).toContain(`the archive was changed or damaged: ${said}`)
      expect(lastLine(run.stderr)).toMatch(/; restore the archive from a copy, or export again$/)
    }
    // no checksum file at all: a /3 archive had one before it was complete, so it was lost (an export rerun
    // refuses to vouch for the archive as it is now: packages/export's test)
    const missing = await importInto(none, target)
    expect(missing.code, missing.stderr).toBe(5)
    expect(lastLine(missing.stderr)).toContain(
      "checksums.sha256 is missing (it was written before the archive was complete, so it was removed or lost since): restore the archive from a copy, or export again",
    )
    expect(target.store.countAll()).toBe(0)
    // verify --archive names the row that changed, not the data file (whose bytes are the manifest's)
    const verified = await runFerry(["verify", "--archive", dataRow, "--target", target.baseUrl])
    expect(verified.code, verified.stderr).toBe(4)
    expect(lastLine(verified.stderr)).toContain(
      "checksums.sha256 lists data/Procedure.000.ndjson with another sha256 (",
    )
  })

  it("a line that is not JSON in an archive whose checksums were made to match: exit 5 naming file:line, advice that mends it (not 'fix that line')", async () => {
    const archive = copy(sample, "bad-line")
    const rel = "data/Procedure.000.ndjson"
    const file = Path.join(archive, rel)
    const lines = NFS.readFileSync(file, "utf8").split("\n")
    lines[4] = `${lines[4]!.slice(0, 40)}`
    const text = lines.join("\n")
    NFS.writeFileSync(file, text)
    // the checksums say this is what the export wrote (a source that served a cut line, say)
    const sha = createHash("sha256").update(text).digest("hex")
    const manifestPath = Path.join(archive, "manifest.json")
    const manifestText = NFS.readFileSync(manifestPath, "utf8")
    const manifest = JSON.parse(manifestText) as {
      files: Array<{ path: string; sha256: string; bytes: number }>
    }
    const entry = manifest.files.find((f) => f.path === rel)!
    const old = entry.sha256
    entry.sha256 = sha
    entry.bytes = Buffer.byteLength(text)
    const edited = JSON.stringify(manifest)
    NFS.writeFileSync(manifestPath, edited)
    const sums = Path.join(archive, "checksums.sha256")
    const hash = (t: string) => createHash("sha256").update(t).digest("hex")
    NFS.writeFileSync(
      sums,
      NFS.readFileSync(sums, "utf8").replace(old, sha).replace(hash(manifestText), hash(edited)),
    )
    const target = await start({})
    const run = await importInto(archive, target)
    expect(run.code, run.stderr).toBe(5)
    expect(lastLine(run.stderr)).toMatch(
      /^ferry: data\/Procedure\.000\.ndjson:5: not valid JSON \(.*\); the archive is damaged: restore it from a copy, or export again$/,
    )
  })

  it("kill -9 mid-import (put) then rerun: no duplicates, no gaps", async () => {
    const archive = copy(sample, "kill")
    const target = await start({})
    const first = await runFerry(["import", "--to", target.baseUrl, "--bundle-size", "100", archive], {
      onStderr: (text, child) => {
        if ((text.match(/ferry import: chunk /g) ?? []).length >= 5) child.kill("SIGKILL")
      },
    })
    expect(first.signal).toBe("SIGKILL")
    const partial = Object.values(targetCounts(target)).reduce((a, b) => a + b, 0)
    const expected = archiveCounts(archive)
    expect(partial).toBeLessThan(Object.values(expected).reduce((a, b) => a + b, 0))
    const second = await importInto(archive, target, ["--bundle-size", "100"])
    expect(second.code, second.stderr).toBe(0)
    const resumed = (JSON.parse(second.stdout) as { resumedChunks: number }).resumedChunks
    expect(resumed).toBeGreaterThan(0)
    // its done line says the count is this run's
    expect(second.stderr).toContain(
      resumed === 1
        ? "(this run; 1 Bundle an earlier run landed is not sent again)"
        : `(this run; ${resumed} Bundles an earlier run landed are not sent again)`,
    )
    expect(targetCounts(target)).toEqual(expected)
    expect(danglingIn(target).dangling).toEqual([])
  })
})

/**
 * The archive's data files in `n` waves ordered by dependency: a file's rank is the longest chain of
 * type-level references below its type (self references ignored), so a wave refers only to itself and to
 * earlier waves.
 */
const dependencyWaves = async (archive: string, n: number): Promise<Array<Array<FileEntry>>> => {
  const manifest = await archiveManifestOf(archive)
  const deps = new Map<string, Set<string>>()
  for (const f of manifest.files) {
    const set = deps.get(f.type) ?? new Set<string>()
    deps.set(f.type, set)
    for (const line of NFS.readFileSync(Path.join(archive, f.path), "utf8").split("\n")) {
      if (line.trim() === "") continue
      for (const site of references(JSON.parse(line) as unknown))
        if (site.parsed._tag === "Relative" && site.parsed.type !== f.type) set.add(site.parsed.type)
    }
  }
  const rank = new Map<string, number>()
  const rankOf = (t: string, seen: ReadonlySet<string>): number => {
    const known = rank.get(t)
    if (known !== undefined) return known
    let r = 0
    for (const d of deps.get(t) ?? [])
      if (!seen.has(d) && deps.has(d)) r = Math.max(r, 1 + rankOf(d, new Set([...seen, t])))
    rank.set(t, r)
    return r
  }
  const top = Math.max(...manifest.files.map((f) => rankOf(f.type, new Set())))
  const waves: Array<Array<FileEntry>> = Array.from({ length: n }, () => [])
  for (const f of manifest.files) waves[Math.floor((rankOf(f.type, new Set()) * n) / (top + 1))]!.push(f)
  return waves
}

const archiveManifestOf = (archive: string) => Effect.runPromise(Archive.readManifest(archive))

/** `Import.run` in this process (the CLI has no `files` flag: `ferry migrate` calls it). */
const importFiles = (archive: string, target: Target, options: Partial<Import.ImportOptions> = {}) =>
  Effect.runPromise(
    Effect.gen(function* () {
      const client = yield* FhirClient.make({
        baseUrl: target.baseUrl,
        retry: { base: "10 millis", times: 8 },
      })
      return yield* Import.run({ client, archive, ...options })
    }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

/** Mark the archive's manifest incomplete, as it is while its export still runs. */
const markIncomplete = async (archive: string) =>
  Effect.runPromise(
    Archive.writeManifest(archive, { ...(await archiveManifestOf(archive)), complete: false }),
  )

const sum = (counts: Record<string, number>): number => Object.values(counts).reduce((a, b) => a + b, 0)

describe("ferry import, post strategy across a kill", () => {
  it("kill -9 mid-import (post, client ids refused) then rerun: conditional creates on urn:ferry:source match, exact counts, every reference resolves", async () => {
    const archive = copy(sample, "kill-post")
    const target = await start({ refuseClientIds: true })
    const expected = archiveCounts(archive)
    const first = await runFerry(["import", "--to", target.baseUrl, "--bundle-size", "50", archive], {
      onStderr: (text, child) => {
        if ((text.match(/ferry import: chunk /g) ?? []).length >= 8) child.kill("SIGKILL")
      },
    })
    expect(first.signal).toBe("SIGKILL")
    const partial = sum(targetCounts(target))
    expect(partial).toBeGreaterThan(0)
    expect(partial).toBeLessThan(sum(expected))
    // what the killed run committed carries Ferry's provenance tag, which the conditional create matches on
    const slug = NFS.readdirSync(Path.join(archive, "imports"))[0]!
    const idMapFile = Path.join(archive, "imports", slug, "idmap.ndjson")
    const mappedBefore = NFS.existsSync(idMapFile)
      ? NFS.readFileSync(idMapFile, "utf8").trim().split("\n").length
      : 0
    const tagged = await fetch(
      `${target.baseUrl}/Patient?_tag=${encodeURIComponent("urn:ferry:source|")}&_summary=count`,
    )
    expect(((await tagged.json()) as { total: number }).total).toBe(target.store.count("Patient"))
    // the commits the id map does not know yet (the chunk in flight when the process died) are matched, not
    // created again
    const second = await importInto(archive, target, ["--bundle-size", "50"])
    expect(second.code, second.stderr).toBe(0)
    const summary = JSON.parse(second.stdout) as {
      strategy: string
      resumedChunks: number
      quarantined: number
    }
    expect(summary.strategy).toBe("post")
    expect(summary.resumedChunks).toBeGreaterThan(0)
    expect(summary.quarantined).toBe(0)
    expect(targetCounts(target)).toEqual(expected)
    const sources = NFS.readFileSync(idMapFile, "utf8")
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as { s: string }).s)
    expect(sources.length).toBeGreaterThan(mappedBefore)
    expect(new Set(sources).size).toBe(sum(expected))
    const check = danglingIn(target)
    expect(check.dangling).toEqual([])
    expect(check.checked).toBeGreaterThan(10_000)
  })

  it("a commit the id map never heard of (simulated crash between commit and id-map append) is matched on rerun, not duplicated", async () => {
    const archive = copy(sample, "lost-idmap-post")
    const target = await start({ refuseClientIds: true })
    const expected = archiveCounts(archive)
    const first = await importInto(archive, target)
    expect(first.code, first.stderr).toBe(0)
    expect(targetCounts(target)).toEqual(expected)
    // forget every Patient mapping and the chunks holding Patients: a rerun must send them again
    const slug = NFS.readdirSync(Path.join(archive, "imports"))[0]!
    const dir = Path.join(archive, "imports", slug)
    const idMapFile = Path.join(dir, "idmap.ndjson")
    const kept = NFS.readFileSync(idMapFile, "utf8")
      .split("\n")
      .filter((l) => l !== "" && !l.includes('"s":"Patient/'))
    NFS.writeFileSync(idMapFile, kept.map((l) => `${l}\n`).join(""))
    NFS.rmSync(Path.join(dir, "journal.ndjson"))
    const second = await importInto(archive, target)
    expect(second.code, second.stderr).toBe(0)
    expect((JSON.parse(second.stdout) as { resources: Record<string, number> }).resources.Patient).toBe(
      expected.Patient,
    )
    expect(targetCounts(target)).toEqual(expected)
    expect(danglingIn(target).dangling).toEqual([])
  })
})

describe("ferry import, attachment binaries", () => {
  for (const strategy of ["put", "post"] as const) {
    it(`${strategy}: an upload whose binaries.ndjson line was lost (crash right after the upload) is not duplicated on rerun`, async () => {
      const archive = copy(sample, `binaries-${strategy}`)
      // without its Binary resources the archive's attachment blobs have no Binary to follow: each is uploaded
      // (files, manifest and checksums alike: an archive whose manifest leaves out a file it holds is refused)
      const manifest = await archiveManifestOf(archive)
      const without = { ...manifest, files: manifest.files.filter((f) => f.type !== "Binary") }
      for (const f of manifest.files) if (f.type === "Binary") NFS.rmSync(Path.join(archive, f.path))
      await Effect.runPromise(
        Effect.zipRight(Archive.writeManifest(archive, without), Archive.writeChecksums(archive, without)),
      )
      const target = await start({ refuseClientIds: strategy === "post" })
      const first = await importInto(archive, target, ["--strategy", strategy])
      expect(first.code, first.stderr).toBe(0)
      const slug = NFS.readdirSync(Path.join(archive, "imports"))[0]!
      const record = Path.join(archive, "imports", slug, "binaries.ndjson")
      const uploaded = NFS.readFileSync(record, "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { sha256: string; id: string })
      expect(uploaded.length).toBeGreaterThan(0)
      const binaries = target.store.count("Binary")
      // every uploaded Binary holds the blob's bytes; put: one per resource pointing at it, which it names
      for (const u of uploaded) {
        const stored = target.store.getBinary(u.id)
        expect(stored, u.id).toBeDefined()
        expect(createHash("sha256").update(stored!.bytes).digest("hex")).toBe(u.sha256)
        if (strategy === "put")
          expect(JSON.parse(stored!.stored.json).securityContext).toEqual({
            reference: (u as { owner?: string }).owner,
          })
      }
      // lose the record of all uploads but the first: post uploads those blobs again; put made each copy
      // after its resource landed and before the chunk was journaled, so with every chunk journaled nothing is
      // sent again (a crash before that line sends the chunk and its copies again, under the same ids)
      NFS.writeFileSync(record, `${JSON.stringify(uploaded[0])}\n`)
      const second = await importInto(archive, target)
      expect(second.code, second.stderr).toBe(0)
      expect((JSON.parse(second.stdout) as { binaries: number }).binaries).toBe(
        strategy === "put" ? 0 : uploaded.length - 1,
      )
      expect(target.store.count("Binary")).toBe(binaries)
      const again = NFS.readFileSync(record, "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { sha256: string; id: string })
      if (strategy === "post")
        expect(new Map(again.map((u) => [u.sha256, u.id]))).toEqual(
          new Map(uploaded.map((u) => [u.sha256, u.id])),
        )
      expect(targetCounts(target)).toEqual({ ...archiveCounts(archive), Binary: uploaded.length })
      expect(danglingIn(target).dangling).toEqual([])
    })
  }
})

describe("ferry import (Synthea)", () => {
  let synthea = ""
  beforeAll(async () => {
    synthea = await exportArchive("synthea", [sharedData("synthea-bundles"), sharedData("attachments")])
  }, 120_000)

  it.each([
    ["put (PUT Bundles, ids kept)", "synthea-put", []],
    ["import (the target's $import, the files rewritten)", "synthea-bulk", ["--strategy", "import"]],
  ] as const)(
    "38k Synthea resources with urn:uuid references across files, %s: counts equal, every reference and attachment resolves on the target",
    async (_how, name, args) => {
      const archive = copy(synthea, name)
      const target = await start({})
      const run = await importInto(archive, target, args)
      expect(run.code, run.stderr).toBe(0)
      expect(targetCounts(target)).toEqual(archiveCounts(archive))
      const check = danglingIn(target)
      expect(check.dangling).toEqual([])
      expect(check.checked).toBeGreaterThan(100_000)
    },
    300_000,
  )
})

describe("Import.run with files subsets (ferry migrate waves)", () => {
  /**
   * 200 generated patients (4,612 resources in 9 files: Encounter ↔ Condition reference cycles, a Binary per
   * patient behind a DocumentReference attachment); the 38k Synthea set's subsets took 15-18 s a test.
   */
  let generated = ""
  beforeAll(async () => {
    generated = await exportArchive("generated-subsets", [], { generate: 200 })
  }, 120_000)

  it("put: three subsets of an incomplete archive, out of dependency order, then a repeat: counts equal, every reference resolves", async () => {
    const archive = copy(generated, "subsets-put")
    const expected = archiveCounts(archive)
    const all = (await archiveManifestOf(archive)).files
    const waves = await dependencyWaves(archive, 3)
    expect(waves.every((w) => w.length > 0)).toBe(true)
    await markIncomplete(archive)
    const target = await start({})
    let written = 0
    for (const wave of [waves[2]!, waves[0]!, waves[1]!]) {
      const summary = await importFiles(archive, target, { files: wave, deletes: false })
      expect(summary.strategy).toBe("put")
      expect(summary.quarantined).toBe(0)
      written += summary.total
    }
    expect(written).toBe(sum(expected))
    expect(targetCounts(target)).toEqual(expected)
    // the attachment blobs went up once (the archive's own Binary resources are not copied again)
    expect(target.store.count("Binary")).toBe(expected.Binary)
    const check = danglingIn(target)
    expect(check.dangling).toEqual([])
    expect(check.checked).toBeGreaterThan(13_000)
    // all files at once over the same journal: every chunk is a different one (other graph), PUT again
    const again = await importFiles(archive, target, { files: all })
    expect(again.quarantined).toBe(0)
    expect(targetCounts(target)).toEqual(expected)
  }, 300_000)

  it("post (client ids refused): subsets in dependency order, one repeated and one overlapping: no duplicates, references follow the id map", async () => {
    const archive = copy(generated, "subsets-post")
    const expected = archiveCounts(archive)
    const waves = await dependencyWaves(archive, 3)
    await markIncomplete(archive)
    const target = await start({ refuseClientIds: true })
    const first = await importFiles(archive, target, { files: waves[0]!, deletes: false })
    expect(first.strategy).toBe("post")
    // the same subset again: its chunks are done in the shared journal
    const repeat = await importFiles(archive, target, { files: waves[0]!, deletes: false })
    expect(repeat.total).toBe(0)
    expect(repeat.resumedChunks).toBe(repeat.chunks)
    await importFiles(archive, target, { files: waves[1]!, deletes: false })
    // overlapping: wave 2 again together with wave 3 (other chunks; wave 2's resources are in the id map)
    const last = await importFiles(archive, target, { files: [...waves[1]!, ...waves[2]!] })
    expect(last.quarantined).toBe(0)
    expect(targetCounts(target)).toEqual(expected)
    const slug = NFS.readdirSync(Path.join(archive, "imports"))[0]!
    const sources = NFS.readFileSync(Path.join(archive, "imports", slug, "idmap.ndjson"), "utf8")
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as { s: string }).s)
    expect(new Set(sources).size).toBe(sum(expected))
    const check = danglingIn(target)
    expect(check.dangling).toEqual([])
    expect(check.checked).toBeGreaterThan(13_000)
  }, 300_000)
})
