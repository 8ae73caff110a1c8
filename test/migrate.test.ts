/**
 * `ferry migrate` end to end: the bundled CLI as a process against in-process sandboxes (a seeded source,
 * an empty target), each migration then checked with `ferry verify` (exit 0 = clean). Needs
 * `npm run build` first. The scheduler's pure parts are tested in apps/cli/test/Migrate.test.ts.
 */
import * as NFS from "node:fs"
import * as Net from "node:net"
import * as Imports from "@ferry/archive/Imports"
import * as OS from "node:os"
import * as Path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import {
  archiveCounts,
  archiveManifest,
  freeFixedPort,
  freePort,
  type InProcessSandbox,
  lastLine,
  putDeadLinkDocuments,
  runFerry,
  setSandboxFaults,
  sharedData,
  startSandbox,
} from "./helpers/ferry.js"

const tmp = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-migrate-"))
const sandboxes: Array<InProcessSandbox> = []
afterAll(async () => {
  for (const s of sandboxes) await s.close()
  NFS.rmSync(tmp, { recursive: true, force: true })
})

const start = async (config: Parameters<typeof startSandbox>[0]) => {
  const s = await startSandbox(config)
  sandboxes.push(s)
  return s.handle
}
type Server = Awaited<ReturnType<typeof start>>

/**
 * 50 generated patients (1,150 resources: Encounter ↔ Condition reference cycles, a Binary per patient
 * behind a DocumentReference attachment). Not the 10-patient bulk sample: its conditional references are
 * resolved on import, and verify compares them literally.
 */
const generated = { generate: 50 } as const

const counts = (t: Server): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const type of t.store.types()) {
    const n = t.store.count(type)
    if (n > 0) out[type] = n
  }
  return out
}

interface Summary {
  readonly waves: number
  readonly earlierWaves: number
  readonly overlapped: number
  readonly since: string | undefined
  readonly continues: string | undefined
  readonly alreadyComplete: boolean
  readonly pruned: { readonly files: number; readonly bytes: number }
  readonly peakStagedBytes: number
  readonly export: { readonly resources: number; readonly deleted: number }
  readonly import: {
    readonly strategy: string
    readonly total: number
    readonly deleted: number
    readonly quarantined: number
    readonly resumedChunks: number
    readonly dropMeta?: ReadonlyArray<string>
  }
}

const migrate = (source: Server, target: Server, archive: string, ...extra: Array<string>) =>
  runFerry([
    "migrate",
    "--from",
    source.baseUrl,
    "--to",
    target.baseUrl,
    "--archive",
    archive,
    "--json",
    ...extra,
  ])

/** Changes an Observation's status on the source (a PUT, as a user's edit there). */
const amendObservation = async (source: Server, r: { id: string; json: string }, status: string) => {
  const res = await fetch(`${source.baseUrl}/Observation/${r.id}`, {
    method: "PUT",
    headers: { "content-type": "application/fhir+json" },
    body: JSON.stringify({ ...(JSON.parse(r.json) as Record<string, unknown>), id: r.id, status }),
  })
  expect(res.status).toBeLessThan(300)
}

const summaryOf = (stdout: string): Summary => JSON.parse(stdout) as Summary

/** `ferry verify` of the target against the archive (through its id map) or the source server. */
const verify = async (target: Server, against: { archive: string } | { source: Server; idMap?: string }) => {
  const report = Path.join(tmp, `report-${Math.random().toString(36).slice(2)}`)
  const run = await runFerry([
    "verify",
    "--target",
    target.baseUrl,
    ...("archive" in against
      ? ["--archive", against.archive]
      : [
          "--source",
          against.source.baseUrl,
          ...(against.idMap !== undefined ? ["--id-map", against.idMap] : []),
        ]),
    "--report",
    report,
  ])
  // a verify that failed before comparing writes no report: show why
  if (!NFS.existsSync(Path.join(report, "verify.json")))
    throw new Error(`verify wrote no report: ${run.stderr}`)
  const json = JSON.parse(NFS.readFileSync(Path.join(report, "verify.json"), "utf8")) as {
    verdict: string
    totals: { compared: number; differing: number; missing: number; extra: number }
    differences: ReadonlyArray<unknown>
  }
  return { run, report: json }
}

/** A migrate that exited 0: every resource it exported imported, the target's counts the archive's, verify clean. */
const expectMigrated = async (run: Awaited<ReturnType<typeof migrate>>, target: Server, archive: string) => {
  expect(run.code, run.stderr).toBe(0)
  const s = summaryOf(run.stdout)
  expect(s.import.total).toBe(s.export.resources)
  expect(counts(target)).toEqual(archiveCounts(archive))
  const v = await verify(target, { archive })
  expect(v.run.code, JSON.stringify(v.report.differences.slice(0, 2))).toBe(0)
}

describe("ferry migrate", () => {
  it.each([
    ["put", {}],
    ["post", { refuseClientIds: true }],
  ] as const)(
    "conditional references (the 10-patient bulk sample), %s: resolved in the final wave, nothing sent twice, verify clean",
    async (strategy, targetConfig) => {
      const source = await start({ seed: [sharedData("sample-bulk-10-patients")] })
      const target = await start(targetConfig)
      const archive = Path.join(tmp, `conditional-${strategy}`)
      const run = await migrate(source, target, archive)
      expect(run.code, run.stderr).toBe(0)
      const s = summaryOf(run.stdout)
      expect(s.import.strategy).toBe(strategy)
      // files imported by earlier waves are read again as context for the identifiers, not sent again
      expect(s.import.total).toBe(s.export.resources)
      expect(counts(target)).toEqual(archiveCounts(archive))
      const v = await verify(target, { archive })
      expect(v.run.code, JSON.stringify(v.report.differences.slice(0, 2))).toBe(0)
      // against the source server too: its conditional references are resolved by searching the source
      const idMap = Imports.idMapPath(archive, target.baseUrl)
      const vs = await verify(target, strategy === "post" ? { source, idMap } : { source })
      expect(vs.run.code, JSON.stringify(vs.report.differences.slice(0, 2))).toBe(0)
      expect(vs.report.totals.compared).toBe(s.export.resources)
    },
    60_000,
  )

  it.each([
    ["put", {}],
    ["post", { refuseClientIds: true }],
  ] as const)(
    "%s: attachments whose Binary file lands last are not uploaded as second copies by the earlier waves",
    async (strategy, targetConfig) => {
      // the Binary file downloads 1.5 s late, so waves run while the DocumentReferences' attachment blobs are
      // in the archive and the Binary resources that own them are not
      const source = await start({ ...generated, faults: { slowDownload: { type: "Binary", ms: 3000 } } })
      const target = await start(targetConfig)
      const archive = Path.join(tmp, `binary-last-${strategy}`)
      const run = await migrate(source, target, archive)
      expect(run.code, run.stderr).toBe(0)
      const s = summaryOf(run.stdout)
      expect(s.import.strategy).toBe(strategy)
      expect(s.overlapped).toBeGreaterThan(0)
      // the case this is about happened: a wave began after the DocumentReferences and before the Binaries landed
      const lines = run.stderr.split("\n")
      const docs = lines.findIndex((l) => l.includes("downloaded data/DocumentReference"))
      const bins = lines.findIndex((l) => l.includes("downloaded data/Binary"))
      const between = lines.slice(docs, bins).some((l) => l.includes("import wave"))
      expect(docs >= 0 && bins > docs && between, run.stderr).toBe(true)
      expect(counts(target)).toEqual(archiveCounts(archive))
      expect(counts(target).Binary).toBe(50)
      const v = await verify(target, { archive })
      expect(v.run.code, JSON.stringify(v.report.differences.slice(0, 2))).toBe(0)
    },
    60_000,
  )

  it("attachments of the final wave whose Binary resources an earlier wave imported: re-pointed to those, no second copies", async () => {
    // the DocumentReferences download last, so they are the final wave's, after the Binary files' wave
    const source = await start({
      ...generated,
      faults: { slowDownload: { type: "DocumentReference", ms: 3000 } },
    })
    const target = await start({})
    const archive = Path.join(tmp, "binary-first")
    const run = await migrate(source, target, archive)
    expect(run.code, run.stderr).toBe(0)
    const [state] = NFS.readdirSync(Path.join(archive, "imports"))
    const ledger = NFS.readFileSync(Path.join(archive, "imports", state!, "migrate.ndjson"), "utf8")
    const waves = ledger
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { kind: string; data?: { files?: Array<string> } })
      .filter((l) => l.kind === "migrate.wave")
    const waveOf = (type: string) =>
      waves.findIndex((w) => (w.data?.files ?? []).some((f) => f.startsWith(`data/${type}.`)))
    expect(waveOf("Binary"), ledger).toBeGreaterThanOrEqual(0)
    expect(waveOf("DocumentReference"), ledger).toBe(waves.length - 1)
    expect(waveOf("Binary"), ledger).toBeLessThan(waves.length - 1)
    expect(counts(target)).toEqual(archiveCounts(archive))
    expect(counts(target).Binary).toBe(50)
    const v = await verify(target, { archive })
    expect(v.run.code, JSON.stringify(v.report.differences.slice(0, 2))).toBe(0)
  }, 60_000)

  it("a Binary resource an earlier wave quarantined: a later wave's attachments wait for it, no copy of its blob uploaded", async () => {
    const source = await start({
      ...generated,
      faults: { slowDownload: { type: "DocumentReference", ms: 3000 } },
    })
    // the archive's Binary resources refused (JSON, in Bundles); Ferry's own raw blob uploads would pass
    const target = await start({ rejectRule: { type: "Binary", message: "no Binary resources here" } })
    const archive = Path.join(tmp, "binary-quarantined")
    const run = await migrate(source, target, archive)
    expect(run.code, run.stderr).toBe(7)
    const [state] = NFS.readdirSync(Path.join(archive, "imports"))
    const quarantined = NFS.readFileSync(
      Path.join(archive, "imports", state!, "quarantine", "Binary.ndjson"),
      "utf8",
    )
    expect(quarantined.trim().split("\n")).toHaveLength(50)
    expect(counts(target).DocumentReference).toBe(50)
    expect(counts(target).Binary ?? 0).toBe(0)
  }, 60_000)

  it("put: a urn:uuid reference to a resource an earlier wave imported is resolved in the final wave; verify clean", async () => {
    // the referenced Patient lands (and is imported) long before the Observation that names it by urn:uuid
    const seed = Path.join(tmp, "urn-seed")
    NFS.mkdirSync(seed, { recursive: true })
    const pid = "6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2"
    NFS.writeFileSync(
      Path.join(seed, "Patient.ndjson"),
      `${JSON.stringify({ resourceType: "Patient", id: pid, name: [{ family: "A" }] })}\n`,
    )
    NFS.writeFileSync(
      Path.join(seed, "Observation.ndjson"),
      `${JSON.stringify({ resourceType: "Observation", id: "obs1", status: "final", code: { text: "x" }, subject: { reference: `urn:uuid:${pid}` } })}\n`,
    )
    const source = await start({ seed: [seed], faults: { slowDownload: { type: "Observation", ms: 1500 } } })
    const target = await start({})
    const archive = Path.join(tmp, "urn-put")
    const run = await migrate(source, target, archive)
    expect(run.code, run.stderr).toBe(0)
    const s = summaryOf(run.stdout)
    expect(s.import.strategy).toBe("put")
    expect(s.waves, run.stderr).toBeGreaterThan(1)
    const obs = JSON.parse(target.store.read("Observation", "obs1")!.json) as {
      subject: { reference: string }
    }
    expect(obs.subject.reference).toBe(`Patient/${pid}`)
    const v = await verify(target, { archive })
    expect(v.run.code, JSON.stringify(v.report.differences.slice(0, 2))).toBe(0)
  }, 60_000)

  it("a target that refuses client ids: post strategy, verify clean through the id map", async () => {
    const source = await start(generated)
    const target = await start({ refuseClientIds: true })
    const archive = Path.join(tmp, "refused")
    const run = await migrate(source, target, archive)
    expect(run.code, run.stderr).toBe(0)
    const s = summaryOf(run.stdout)
    expect(s.import.strategy).toBe("post")
    expect(counts(target)).toEqual(archiveCounts(archive))
    const v = await verify(target, { archive })
    expect(v.run.code, JSON.stringify(v.report.differences.slice(0, 2))).toBe(0)
    expect(v.report.totals.compared).toBeGreaterThan(1000)
  }, 60_000)

  it.each([
    ["put", false],
    ["post (target refuses client ids)", true],
  ])(
    "incremental cutover, %s: change 10, delete 3 on the source, migrate --since auto, verify clean",
    async (_name, refuseClientIds) => {
      const source = await start(generated)
      const target = await start({ refuseClientIds })
      const runs = Path.join(tmp, `cutover-${refuseClientIds}`)
      const full = await migrate(source, target, Path.join(runs, "full"))
      expect(full.code, full.stderr).toBe(0)

      const changed = Array.from(source.store.iterate("Observation", { limit: 10 }))
      expect(changed).toHaveLength(10)
      for (const r of changed) {
        const body = { ...(JSON.parse(r.json) as Record<string, unknown>), id: r.id, status: "amended" }
        const res = await fetch(`${source.baseUrl}/Observation/${r.id}`, {
          method: "PUT",
          headers: { "content-type": "application/fhir+json" },
          body: JSON.stringify(body),
        })
        expect(res.status).toBeLessThan(300)
      }
      const gone = Array.from(source.store.iterate("MedicationRequest", { limit: 3 })).map((r) => r.id)
      for (const id of gone) {
        const res = await fetch(`${source.baseUrl}/MedicationRequest/${id}`, { method: "DELETE" })
        expect(res.status).toBeLessThan(300)
      }
      const before = await verify(target, { source })
      expect(before.run.code).toBe(6)

      const delta = await migrate(source, target, Path.join(runs, "delta"), "--since", "auto")
      expect(delta.code, delta.stderr).toBe(0)
      const s = summaryOf(delta.stdout)
      expect(s.since).toBeDefined()
      expect(s.continues).toBe(Path.join(runs, "full"))
      expect(s.import.deleted).toBe(3)
      expect(s.import.total).toBeGreaterThanOrEqual(10)
      expect(s.import.total).toBeLessThan(100)
      const idMap = Imports.idMapPath(Path.join(runs, "delta"), target.baseUrl)
      const targetId = (key: string) => {
        if (!refuseClientIds) return key.slice(key.indexOf("/") + 1)
        for (const line of NFS.readFileSync(idMap, "utf8").split("\n")) {
          if (line === "") continue
          const m = JSON.parse(line) as { s: string; t: string }
          if (m.s === key) return m.t.slice(m.t.indexOf("/") + 1)
        }
        throw new Error(`${key} is not in the id map`)
      }
      for (const id of gone)
        expect(target.store.read("MedicationRequest", targetId(`MedicationRequest/${id}`))).toBeUndefined()
      const first = target.store.read("Observation", targetId(`Observation/${changed[0]!.id}`))
      expect(JSON.parse(first!.json).status).toBe("amended")
      expect(counts(target)).toEqual(counts(source))
      const after = await verify(target, refuseClientIds ? { source, idMap } : { source })
      expect(after.run.code, JSON.stringify(after.report.differences.slice(0, 2))).toBe(0)
    },
    90_000,
  )

  it("--drop-meta tag given to the full migration is kept by the cutover deltas that do not repeat it (migrate and export + import)", async () => {
    const source = await start(generated)
    const target = await start({})
    const runs = Path.join(tmp, "drop-meta-delta")
    const full = await migrate(source, target, Path.join(runs, "full"), "--drop-meta", "tag")
    expect(full.code, full.stderr).toBe(0)
    const [a, b] = Array.from(source.store.iterate("Observation", { limit: 2 }))
    /** A source-side tag on an Observation (with a changed status, so a delta carries it). */
    const tag = async (r: { id: string; json: string }, code: string) => {
      const body = {
        ...(JSON.parse(r.json) as Record<string, unknown>),
        id: r.id,
        status: "amended",
        meta: { tag: [{ system: "urn:example:source-tag", code }] },
      }
      const res = await fetch(`${source.baseUrl}/Observation/${r.id}`, {
        method: "PUT",
        headers: { "content-type": "application/fhir+json" },
        body: JSON.stringify(body),
      })
      expect(res.status).toBeLessThan(300)
    }
    const tagsOnTarget = (id: string) =>
      (
        (
          JSON.parse(target.store.read("Observation", id)!.json) as {
            meta?: { tag?: Array<{ system: string }> }
          }
        ).meta?.tag ?? []
      ).map((t) => t.system)
    await tag(a!, "one")
    const delta = await migrate(source, target, Path.join(runs, "delta-1"), "--since", "auto")
    expect(delta.code, delta.stderr).toBe(0)
    expect(delta.stderr).toContain("--drop-meta tag kept from its import")
    expect(summaryOf(delta.stdout).import.dropMeta).toEqual(["tag"])
    // the suggested verify compares as the imports did
    expect(delta.stderr).toMatch(/ferry verify .*--drop-meta tag/)
    expect(tagsOnTarget(a!.id)).not.toContain("urn:example:source-tag")
    expect(JSON.parse(target.store.read("Observation", a!.id)!.json).status).toBe("amended")

    // the same for an incremental archive exported and imported by hand, beside the delta it continues
    await tag(b!, "two")
    const out = Path.join(runs, "delta-2")
    const exported = await runFerry(["export", source.baseUrl, "--out", out, "--since", "auto"])
    expect(exported.code, exported.stderr).toBe(0)
    const imported = await runFerry(["import", out, "--to", target.baseUrl])
    expect(imported.code, imported.stderr).toBe(0)
    expect(imported.stderr).toContain("--drop-meta tag kept from its import")
    expect(tagsOnTarget(b!.id)).not.toContain("urn:example:source-tag")
    expect(JSON.parse(target.store.read("Observation", b!.id)!.json).status).toBe("amended")
  }, 90_000)

  it("a target rebuilt empty at the same URL after the migration finished: the rerun refuses 'nothing to do' (exit 2); --restart loads it again, verify clean", async () => {
    const source = await start(generated)
    const port = await freePort()
    const first = await startSandbox({ port })
    const archive = Path.join(tmp, "rebuilt-target")
    const done = await runFerry([
      "migrate",
      "--from",
      source.baseUrl,
      "--to",
      first.handle.baseUrl,
      "--archive",
      archive,
      "--json",
    ])
    expect(done.code, done.stderr).toBe(0)
    await first.close()
    const target = await start({ port })
    const rerun = await migrate(source, target, archive)
    expect(rerun.code, rerun.stderr).toBe(2)
    expect(lastLine(rerun.stderr)).toMatch(
      /the target holds none of the archive's resources, though earlier runs of this migration imported \d+ of its files there: .*--restart/,
    )
    const again = await migrate(source, target, archive, "--restart")
    expect(again.code, again.stderr).toBe(0)
    expect(counts(target)).toEqual(counts(source))
    const v = await verify(target, { source })
    expect(v.run.code, JSON.stringify(v.report.differences.slice(0, 2))).toBe(0)
  }, 90_000)

  it("a migration killed after a wave landed, its target rebuilt empty at the same URL: the rerun is refused too (its export's manifest lists no files yet)", async () => {
    const source = await start({ ...generated, faults: { slowDownload: { type: "Observation", ms: 3000 } } })
    const port = await freePort()
    const first = await startSandbox({ port })
    const archive = Path.join(tmp, "rebuilt-mid-migration")
    const ledger = Imports.migrateLedgerPath(archive, first.handle.baseUrl)
    let poll: NodeJS.Timeout | undefined
    const killed = await runFerry(
      ["migrate", "--from", source.baseUrl, "--to", first.handle.baseUrl, "--archive", archive],
      {
        onStderr: (_text, child) => {
          // once a wave's files are in the ledger (the Observations are still downloading)
          poll ??= setInterval(() => {
            if (!NFS.existsSync(ledger) || !NFS.readFileSync(ledger, "utf8").includes('"migrate.wave"'))
              return
            if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
          }, 5)
        },
      },
    )
    clearInterval(poll)
    expect(killed.signal, killed.stderr).toBe("SIGKILL")
    expect(first.handle.store.countAll()).toBeGreaterThan(0)
    await first.close()
    await setSandboxFaults(source.baseUrl, {})
    const target = await start({ port })
    const rerun = await migrate(source, target, archive)
    expect(rerun.code, rerun.stderr).toBe(2)
    expect(lastLine(rerun.stderr)).toContain(
      "the target holds none of the archive's resources, though earlier runs",
    )
    const again = await migrate(source, target, archive, "--restart")
    expect(again.code, again.stderr).toBe(0)
    expect(counts(target)).toEqual(counts(source))
  }, 90_000)

  it("post: a cutover delta with nothing to carry still passes the id map on; the next delta's change reaches the target, verify clean", async () => {
    const source = await start(generated)
    const target = await start({ refuseClientIds: true })
    const runs = Path.join(tmp, "empty-delta")
    const full = await migrate(source, target, Path.join(runs, "full"))
    expect(full.code, full.stderr).toBe(0)
    const empty = await migrate(source, target, Path.join(runs, "delta-1"), "--since", "auto")
    expect(empty.code, empty.stderr).toBe(0)
    expect(summaryOf(empty.stdout).import.total).toBe(0)
    expect(NFS.existsSync(Imports.idMapPath(Path.join(runs, "delta-1"), target.baseUrl))).toBe(true)

    const [changed] = Array.from(source.store.iterate("Observation", { limit: 1 }))
    const body = { ...(JSON.parse(changed!.json) as Record<string, unknown>), status: "amended" }
    const res = await fetch(`${source.baseUrl}/Observation/${changed!.id}`, {
      method: "PUT",
      headers: { "content-type": "application/fhir+json" },
      body: JSON.stringify(body),
    })
    expect(res.status).toBeLessThan(300)
    const next = await migrate(source, target, Path.join(runs, "delta-2"), "--since", "auto")
    expect(next.code, next.stderr).toBe(0)
    expect(summaryOf(next.stdout).continues).toBe(Path.join(runs, "delta-1"))
    expect(counts(target)).toEqual(counts(source))
    const idMap = Imports.idMapPath(Path.join(runs, "delta-2"), target.baseUrl)
    const after = await verify(target, { source, idMap })
    expect(after.run.code, JSON.stringify(after.report.differences.slice(0, 2))).toBe(0)
  }, 90_000)

  it("a target with a 25-entry Bundle limit: the size learned in one wave is kept by the next ones, a few refused Bundles in all; verify clean", async () => {
    const source = await start({ seed: [sharedData("sample-bulk-10-patients"), sharedData("attachments")] })
    const target = await start({ maxBundleEntries: 25 })
    const archive = Path.join(tmp, "bundle-limit")
    const run = await migrate(source, target, archive)
    expect(run.code, run.stderr).toBe(0)
    const lines = run.stderr.split("\n")
    expect(lines.filter((l) => /wave \d+ done/.test(l)).length).toBeGreaterThan(1)
    // the first wave learns the size (87 → 43 → 21 here); the next ones start at it (18 refused Bundles before)
    const refused = lines.filter((l) => /refused a Bundle of \d+ entries as too large/.test(l)).length
    expect(refused).toBeGreaterThan(0)
    expect(refused).toBeLessThanOrEqual(4)
    expect(counts(target)).toEqual(archiveCounts(archive))
    const v = await verify(target, { archive })
    expect(v.run.code, JSON.stringify(v.report.differences.slice(0, 2))).toBe(0)
  }, 90_000)

  it("an unfinished cutover delta that a later finished one superseded is not resumed (it would put older versions back): exit 2, nothing sent; the next delta goes on from the later one", async () => {
    const source = await start(generated)
    const target = await start({})
    const runs = Path.join(tmp, "delta-order")
    expect((await migrate(source, target, Path.join(runs, "full"))).code).toBe(0)
    const [observation] = Array.from(source.store.iterate("Observation", { limit: 1 }))
    const id = observation!.id
    const change = async (status: string) => {
      const res = await fetch(`${source.baseUrl}/Observation/${id}`, {
        method: "PUT",
        headers: { "content-type": "application/fhir+json" },
        body: JSON.stringify({ ...(JSON.parse(observation!.json) as object), status }),
      })
      expect(res.status).toBeLessThan(300)
    }
    await change("amended")
    expect((await migrate(source, target, Path.join(runs, "delta-1"), "--since", "auto")).code).toBe(0)
    await change("corrected")
    expect((await migrate(source, target, Path.join(runs, "delta-2"), "--since", "auto")).code).toBe(0)
    const status = () => (JSON.parse(target.store.read("Observation", id)!.json) as { status: string }).status
    expect(status()).toBe("corrected")
    // delta-1 as a kill before its end would leave it: its ledger without the last line
    const ledger = Imports.migrateLedgerPath(Path.join(runs, "delta-1"), target.baseUrl)
    const lines = NFS.readFileSync(ledger, "utf8")
      .split("\n")
      .filter((l) => l !== "")
    expect(lines.at(-1)).toContain("migrate.done")
    NFS.writeFileSync(ledger, `${lines.slice(0, -1).join("\n")}\n`)
    const writes = target.store.countAll()
    // resuming it would put "amended" back over "corrected"
    const resumed = await migrate(source, target, Path.join(runs, "delta-1"), "--since", "auto")
    expect(resumed.code, resumed.stderr).toBe(2)
    expect(lastLine(resumed.stderr)).toContain(
      `a later migration of this source into this target (${Path.join(runs, "delta-2")}) finished after this one stopped: it carries every change this one would`,
    )
    expect(status()).toBe("corrected")
    expect(target.store.countAll()).toBe(writes)
    // a new delta continues the later one, delta-1 passed over
    const next = await migrate(source, target, Path.join(runs, "delta-3"), "--since", "auto")
    expect(next.code, next.stderr).toBe(0)
    expect(summaryOf(next.stdout).continues).toBe(Path.join(runs, "delta-2"))
    expect(status()).toBe("corrected")
  }, 90_000)

  it("--since auto continues the newest migration into the same target, not another target's newer one", async () => {
    const source = await start(generated)
    const one = await start({})
    const two = await start({})
    const runs = Path.join(tmp, "two-targets")
    expect((await migrate(source, one, Path.join(runs, "a1"))).code).toBe(0)
    expect((await migrate(source, two, Path.join(runs, "b1"))).code).toBe(0)
    // a third target, new: the two finished archives beside are migrations into other targets, said as such
    const three = await start({})
    const c1 = await migrate(source, three, Path.join(runs, "c1"), "--since", "auto")
    expect(c1.code, c1.stderr).toBe(0)
    expect(c1.stderr).toContain(
      "to continue (2 there were not migrated into this target, and an incremental migration continues one into the same target): full export",
    )
    const amend = (r: { id: string; json: string }, status: string) => amendObservation(source, r, status)
    const [x, y] = Array.from(source.store.iterate("Observation", { limit: 2 }))
    await amend(x!, "amended")
    // the first target gets that change (a newer archive beside the others)
    const a2 = await migrate(source, one, Path.join(runs, "a2"), "--since", "auto")
    expect(a2.code, a2.stderr).toBe(0)
    expect(summaryOf(a2.stdout).continues).toBe(Path.join(runs, "a1"))
    await amend(y!, "corrected")
    // the second target's delta starts where its own last migration ended: both changes reach it
    const b2 = await migrate(source, two, Path.join(runs, "b2"), "--since", "auto")
    expect(b2.code, b2.stderr).toBe(0)
    expect(summaryOf(b2.stdout).continues).toBe(Path.join(runs, "b1"))
    expect(JSON.parse(two.store.read("Observation", x!.id)!.json).status).toBe("amended")
    expect(JSON.parse(two.store.read("Observation", y!.id)!.json).status).toBe("corrected")
    const v = await verify(two, { source })
    expect(v.run.code, JSON.stringify(v.report.differences.slice(0, 2))).toBe(0)

    // the newest migration into a target did not finish (here: its ledger without its last line): the next
    // delta into that target stops and says to rerun it (its id map holds what it created), not skip past it
    const ledger = Path.join(Imports.dir(Path.join(runs, "b2"), two.baseUrl), "migrate.ndjson")
    const lines = NFS.readFileSync(ledger, "utf8").trim().split("\n")
    expect(lines.at(-1)).toContain('"migrate.done"')
    NFS.writeFileSync(ledger, `${lines.slice(0, -1).join("\n")}\n`)
    const b3 = await migrate(source, two, Path.join(runs, "b3"), "--since", "auto")
    expect(b3.code, b3.stderr).toBe(2)
    expect(lastLine(b3.stderr)).toMatch(
      /b2: the earlier migration this one continues did not finish its import; finish it first \(the same ferry migrate with --archive set to it and --since auto\)/,
    )
    // as said: it finishes, and then the delta goes on
    const finished = await migrate(source, two, Path.join(runs, "b2"), "--since", "auto")
    expect(finished.code, finished.stderr).toBe(0)
    const b3again = await migrate(source, two, Path.join(runs, "b3"), "--since", "auto")
    expect(b3again.code, b3again.stderr).toBe(0)
  }, 90_000)

  it("--since auto with the default archives, its delta stopped before its import ended: the same command finishes that delta, then the next one goes on; verify clean", async () => {
    const source = await start(generated)
    const target = await start({})
    const cwd = NFS.mkdtempSync(Path.join(tmp, "default-archives-"))
    const run = (...args: ReadonlyArray<string>) =>
      runFerry(["migrate", "--from", source.baseUrl, "--to", target.baseUrl, "--json", ...args], { cwd })
    const full = await run()
    expect(full.code, full.stderr).toBe(0)
    const [x, y] = Array.from(source.store.iterate("Observation", { limit: 2 }))
    const amend = (r: { id: string; json: string }, status: string) => amendObservation(source, r, status)
    await amend(x!, "amended")
    const delta = await run("--since", "auto")
    expect(delta.code, delta.stderr).toBe(0)
    const root = Path.join(cwd, ".ferry-migrate")
    const [pair] = NFS.readdirSync(root)
    const deltaDir = NFS.readdirSync(Path.join(root, pair!)).find((n) => n.startsWith("since-"))!
    // stopped before its import ended (its ledger without its last line), as a kill there leaves it
    const ledger = Path.join(Imports.dir(Path.join(root, pair!, deltaDir), target.baseUrl), "migrate.ndjson")
    const lines = NFS.readFileSync(ledger, "utf8").trim().split("\n")
    expect(lines.at(-1)).toContain('"migrate.done"')
    NFS.writeFileSync(ledger, `${lines.slice(0, -1).join("\n")}\n`)
    await amend(y!, "corrected")
    // the same command: it finishes that delta (not a new one it would refuse to start), and says so
    const again = await run("--since", "auto")
    expect(again.code, again.stderr).toBe(0)
    expect(again.stderr).toContain(
      `the newest migration into this target (${Path.join(root, pair!, deltaDir)}) was stopped before its import ended: this run finishes it; run the same command again afterwards for what changed since`,
    )
    // and once more: the next delta brings the later change
    const next = await run("--since", "auto")
    expect(next.code, next.stderr).toBe(0)
    expect(NFS.readdirSync(Path.join(root, pair!)).filter((n) => n.startsWith("since-")).length).toBe(2)
    expect(JSON.parse(target.store.read("Observation", x!.id)!.json).status).toBe("amended")
    expect(JSON.parse(target.store.read("Observation", y!.id)!.json).status).toBe("corrected")
    const v = await verify(target, { source })
    expect(v.run.code, JSON.stringify(v.report.differences.slice(0, 2))).toBe(0)
  }, 120_000)

  it("kill -9 mid-migrate, then the same command: finishes, nothing lost or duplicated, verify clean", async () => {
    const source = await start(generated)
    const target = await start({})
    const archive = Path.join(tmp, "killed")
    const args = ["--bundle-size", "20", "--parallel", "1"]
    let seen = 0
    let poll: NodeJS.Timeout | undefined
    const first = await runFerry(
      ["migrate", "--from", source.baseUrl, "--to", target.baseUrl, "--archive", archive, ...args],
      {
        onStderr: (_text, child) => {
          // once the target holds some resources, kill the process (the export may still be running)
          poll ??= setInterval(() => {
            seen = target.store.countAll()
            if (seen >= 200 && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
          }, 20)
        },
      },
    )
    clearInterval(poll)
    expect(first.signal, first.stderr).toBe("SIGKILL")
    const partial = target.store.countAll()
    expect(partial).toBeGreaterThanOrEqual(200)
    // a kill can tear the import's event log's last line too: the rerun's events start on a line of their own
    const importEvents = Path.join(
      archive,
      "imports",
      NFS.readdirSync(Path.join(archive, "imports"))[0]!,
      "events.ndjson",
    )
    NFS.appendFileSync(importEvents, '{"event":"chunk","index":')
    const second = await migrate(source, target, archive, ...args)
    expect(second.code, second.stderr).toBe(0)
    for (const line of NFS.readFileSync(importEvents, "utf8")
      .split("\n")
      .filter((l) => l !== ""))
      expect(() => JSON.parse(line), line).not.toThrow()
    const expected = archiveCounts(archive)
    const all = Object.values(expected).reduce((a, b) => a + b, 0)
    expect(partial).toBeLessThan(all)
    expect(counts(target)).toEqual(expected)
    // what had landed is not sent again, but for the one Bundle in flight at the kill (20 entries, 1 in
    // flight): the rerun plans the same Bundles, and the import's journal skips those that landed
    expect(summaryOf(second.stdout).import.total).toBeLessThanOrEqual(all - partial + 20)
    // the done line says its count is this run's, and what the earlier run had landed
    const resumed = summaryOf(second.stdout).import.resumedChunks
    expect(resumed).toBeGreaterThan(0)
    // the waves the killed run finished are counted apart from this run's
    const earlierWaves = (JSON.parse(second.stdout) as { earlierWaves: number }).earlierWaves
    expect(second.stderr.includes(" of earlier runs)")).toBe(earlierWaves > 0)
    expect(second.stderr).toMatch(
      new RegExp(`written \\(this run; ${resumed} Bundles? an earlier run landed are not sent again\\) in `),
    )
    const v = await verify(target, { archive })
    expect(v.run.code, JSON.stringify(v.report.differences.slice(0, 2))).toBe(0)
    // a third run finds the migration finished and sends nothing
    const third = await migrate(source, target, archive, ...args)
    expect(third.code, third.stderr).toBe(0)
    expect(summaryOf(third.stdout).alreadyComplete).toBe(true)
    expect(third.stderr).toContain("nothing to do (for what changed at the source since: --since auto)")
    // the finished archive into another target: its snapshot, said as such
    const other = await start({})
    const fourth = await migrate(source, other, archive, ...args)
    expect(fourth.code, fourth.stderr).toBe(0)
    expect(fourth.stderr).toMatch(
      /the export is already complete \(the source as of [0-9T:.Z-]+\): what changed there since is not in it; ferry migrate --since auto brings it/,
    )
  }, 90_000)

  it("kill -9 in a wave that started while the export ran, then the same command: only the Bundle in flight at the kill is sent again", async () => {
    const source = await start({ ...generated, faults: { slowDownload: { type: "Observation", ms: 3000 } } })
    const target = await start({})
    const archive = Path.join(tmp, "killed-mid-wave")
    const args = ["--bundle-size", "20", "--parallel", "1"]
    /** The migrate events of the import into the target (its event log under imports/). */
    const events = () => {
      const dir = Path.join(archive, "imports")
      if (!NFS.existsSync(dir)) return []
      const [slug] = NFS.readdirSync(dir)
      const file = Path.join(dir, slug ?? "", "events.ndjson")
      return NFS.existsSync(file)
        ? NFS.readFileSync(file, "utf8")
            .split("\n")
            .filter((l) => l.endsWith("}"))
            .map((l) => JSON.parse(l) as { event: string; files?: number; final?: boolean })
            .filter((e) => e.event.startsWith("migrate."))
        : []
    }
    let atStart: number | undefined
    let poll: NodeJS.Timeout | undefined
    const first = await runFerry(
      ["migrate", "--from", source.baseUrl, "--to", target.baseUrl, "--archive", archive, ...args],
      {
        onStderr: (_text, child) => {
          // kill in the middle of a wave of several files that started before the Observations landed
          poll ??= setInterval(() => {
            // a wave of several files under way (the Observations land 3 s later, in a later wave)
            const last = events().at(-1)
            if (last?.event !== "migrate.wave" || last.final !== false || (last.files ?? 0) < 2) return
            atStart ??= target.store.countAll()
            if (
              target.store.countAll() >= atStart + 60 &&
              child.exitCode === null &&
              child.signalCode === null
            )
              child.kill("SIGKILL")
          }, 5)
        },
      },
    )
    clearInterval(poll)
    expect(first.signal, first.stderr).toBe("SIGKILL")
    const partial = target.store.countAll()
    await setSandboxFaults(source.baseUrl, {})
    const second = await migrate(source, target, archive, ...args)
    expect(second.code, second.stderr).toBe(0)
    const expected = archiveCounts(archive)
    const all = Object.values(expected).reduce((a, b) => a + b, 0)
    expect(counts(target)).toEqual(expected)
    // everything that had landed stays landed: only the Bundle in flight at the kill (20 entries) goes again
    expect(summaryOf(second.stdout).import.total).toBeLessThanOrEqual(all - partial + 20)
  }, 90_000)

  it("a second migrate of an archive in use stops at once (exit 5, one line), and the first one finishes", async () => {
    const source = await start({ ...generated, faults: { delay: [{ route: "download", ms: 1500 }] } })
    const target = await start({})
    const archive = Path.join(tmp, "in-use")
    const first = migrate(source, target, archive)
    // once the first run holds the archive
    const lock = Path.join(archive, ".lock")
    for (let i = 0; i < 200 && !NFS.existsSync(lock); i++) await new Promise((r) => setTimeout(r, 25))
    expect(NFS.existsSync(lock)).toBe(true)
    const second = await migrate(source, target, archive)
    expect(second.code, second.stderr).toBe(5)
    expect(lastLine(second.stderr)).toMatch(/another ferry is using this archive \(locked by pid \d+/)
    await expectMigrated(await first, target, archive)
  }, 90_000)

  it("--max-staged and --prune-staged: imported data files are removed, verify against the source is clean", async () => {
    const source = await start(generated)
    const target = await start({})
    const archive = Path.join(tmp, "pruned")
    const run = await migrate(source, target, archive, "--max-staged", "200kB", "--prune-staged")
    expect(run.code, run.stderr).toBe(0)
    const s = summaryOf(run.stdout)
    const manifest = archiveManifest(archive)
    // Observation alone (≈ 400 kB) is over the limit: downloads are held back, then go on again
    const held = run.stderr.indexOf("downloads held back")
    expect(held, run.stderr).toBeGreaterThan(-1)
    expect(run.stderr.indexOf("downloads go on", held), run.stderr).toBeGreaterThan(held)
    expect(s.peakStagedBytes).toBeGreaterThan(200_000)
    const kept = manifest.files.filter((f) => NFS.existsSync(Path.join(archive, f.path)))
    expect(kept.every((f) => f.type === "Binary")).toBe(true)
    expect(s.pruned.files).toBe(manifest.files.length - kept.length)
    expect(s.pruned.files).toBeGreaterThan(5)
    const v = await verify(target, { source })
    expect(v.run.code, JSON.stringify(v.report.differences.slice(0, 2))).toBe(0)
    // against the pruned archive: a usage error pointing at the source form, not "the archive is damaged"
    const against = await runFerry(["verify", "--archive", archive, "--target", target.baseUrl])
    expect(against.code, against.stderr).toBe(2)
    expect(lastLine(against.stderr)).toMatch(
      new RegExp(
        `^ferry: .*pruned: ${s.pruned.files} of its data files were pruned by ferry migrate --prune-staged after they were imported, .*compare with the source server instead: ferry verify --source ${source.baseUrl.replace(/[.]/g, "\\.")} --target `,
      ),
    )
    // and import (a --retry-quarantine): the pruning said as such, not "the archive was changed or damaged"
    const again = await runFerry(["import", archive, "--to", target.baseUrl, "--retry-quarantine"])
    expect(again.code, again.stderr).toBe(5)
    expect(lastLine(again.stderr)).toContain(`${s.pruned.files} of the archive's data files (first: data/`)
    expect(lastLine(again.stderr)).toContain(
      "were removed by ferry migrate --prune-staged after they were imported into this target",
    )
  }, 60_000)

  it("--strategy import: each wave through the target's $import, the files rewritten (conditional references, attachments); verify clean", async () => {
    const source = await start({ seed: [sharedData("sample-bulk-10-patients"), sharedData("attachments")] })
    const target = await start({})
    const archive = Path.join(tmp, "bulk-import")
    const run = await migrate(source, target, archive, "--strategy", "import")
    expect(summaryOf(run.stdout).import.strategy).toBe("import")
    await expectMigrated(run, target, archive)
  }, 60_000)

  it("--strategy import --serve-port/--serve-token-in path: each wave's files served on the port asked for; verify clean", async () => {
    const source = await start({ seed: [sharedData("sample-bulk-10-patients"), sharedData("attachments")] })
    const target = await start({})
    const archive = Path.join(tmp, "bulk-import-served")
    const port = await freeFixedPort()
    const run = await migrate(
      source,
      target,
      archive,
      "--strategy",
      "import",
      "--serve-host",
      "127.0.0.1",
      "--serve-port",
      String(port),
      "--serve-token-in",
      "path",
    )
    await expectMigrated(run, target, archive)
    const served = NFS.readFileSync(Path.join(Imports.dir(archive, target.baseUrl), "events.ndjson"), "utf8")
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => JSON.parse(l) as { event: string; url?: string })
      .filter((e) => e.event === "import.bulk.serve")
    expect(served.length).toBe(summaryOf(run.stdout).waves)
    for (const e of served) expect(e.url).toBe(`http://127.0.0.1:${port}`)
  }, 60_000)

  it("--strategy import with a file server that cannot work: exit 2, one line, before anything is exported", async () => {
    const source = await start(generated)
    const target = await start({})
    const busy = Net.createServer()
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve))
    const busyPort = (busy.address() as Net.AddressInfo).port
    try {
      const cases: ReadonlyArray<readonly [ReadonlyArray<string>, RegExp]> = [
        [["--serve-host", "0.0.0.0"], /serving on all interfaces/],
        [["--serve-host", "10.0.0.5", "--serve-public-url", "http://10.0.0.5:8080"], /over plain http/],
        [
          ["--serve-port", String(busyPort)],
          new RegExp(`--serve-port ${busyPort}: the file server cannot listen there \\(EADDRINUSE\\)`),
        ],
        [["--serve-public-url", "https://user:pw@files.example.org"], /holds a user name or password/],
        [
          ["--serve-host", "10.9.9.9", "--serve-public-url", "https://files.example.org"],
          /cannot listen there \(EADDRNOTAVAIL\); 10\.9\.9\.9 is not an address of this machine/,
        ],
        [["--serve-public-url", "http://127.0.0.1:8080/?a=1"], /has a query or fragment/],
      ]
      for (const [flags, said] of cases) {
        const archive = Path.join(tmp, `serve-bad-${Math.random().toString(36).slice(2)}`)
        const run = await migrate(source, target, archive, "--strategy", "import", ...flags)
        expect(run.code, run.stderr).toBe(2)
        expect(lastLine(run.stderr)).toMatch(said)
        expect(NFS.existsSync(archive), flags.join(" ")).toBe(false)
      }
    } finally {
      busy.close()
    }
    expect(counts(target)).toEqual({})
  }, 60_000)

  it("attachments on a host that is down: exit 4 naming --allow-missing-attachments; with it the migration finishes without them", async () => {
    const source = await start({ generate: 3 })
    const port = await freePort()
    await putDeadLinkDocuments(source.baseUrl, port, 3)
    const target = await start({})
    const archive = Path.join(tmp, "dead-links")
    const failed = await migrate(source, target, archive)
    expect(failed.code).toBe(4)
    expect(lastLine(failed.stderr)).toMatch(
      /3 attachment\(s\) could not be fetched.*--allow-missing-attachments/,
    )
    const run = await migrate(source, target, archive, "--allow-missing-attachments")
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toMatch(
      /3 attachment\(s\) could not be fetched or verified and are not in the archive/,
    )
    expect(counts(target)).toEqual(archiveCounts(archive))
    const doc = JSON.parse(target.store.read("DocumentReference", "down-0")?.json ?? "{}") as {
      content?: ReadonlyArray<{ attachment?: { url?: string } }>
    }
    expect(doc.content?.[0]?.attachment?.url).toBe(`http://127.0.0.1:${port}/doc/0`)
  }, 60_000)

  it("a target that holds resources of a type the first wave does not carry is warned about before anything is sent", async () => {
    const source = await start(generated)
    const target = await start({})
    const posted = await fetch(`${target.baseUrl}/Observation`, {
      method: "POST",
      headers: { "content-type": "application/fhir+json" },
      body: JSON.stringify({ resourceType: "Observation", status: "final", code: { text: "left over" } }),
    })
    expect(posted.status).toBe(201)
    const run = await migrate(source, target, Path.join(tmp, "non-empty-target"))
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toContain(
      "the target already holds 1 resource of the archive's types (1 Observation; Binary not counted)",
    )
  }, 120_000)

  it("after a migration that quarantined some resources: a cutover delta says they are still out, and import --retry-quarantine sends the quarantine only, not what the waves landed", async () => {
    const source = await start(generated)
    const db = Path.join(tmp, "retry-after-migrate.sqlite")
    const port = await freePort()
    const refusing = await startSandbox({ port, db, rejectRule: { type: "Condition" } })
    const runs = Path.join(tmp, "retry-after-migrate")
    const archive = Path.join(runs, "full")
    const first = await migrate(source, refusing.handle, archive)
    expect(first.code, first.stderr).toBe(7)
    const quarantined = summaryOf(first.stdout).import.quarantined
    expect(quarantined).toBe(source.store.count("Condition"))
    // a cutover delta meanwhile: it does not send the earlier quarantine, and says so with the command that does
    const delta = await migrate(source, refusing.handle, Path.join(runs, "delta"), "--since", "auto")
    await refusing.close()
    expect(delta.code, delta.stderr).toBe(0)
    expect(delta.stderr).toContain(
      `the earlier migration (${archive}) still holds ${quarantined} quarantined resources for this target`,
    )
    expect(delta.stderr).toContain(
      `ferry import ${archive} --to ${refusing.handle.baseUrl} --retry-quarantine`,
    )
    // the same port and database: the same target, its rule lifted
    const fixed = await start({ port, db })
    const retry = await runFerry(["import", archive, "--to", fixed.baseUrl, "--retry-quarantine", "--json"])
    expect(retry.code, retry.stderr).toBe(0)
    const summary = JSON.parse(retry.stdout) as { total: number; quarantined: number }
    // what landed in this run is what was quarantined: the waves' resources were not sent again
    expect(summary.total).toBe(quarantined)
    expect(summary.quarantined).toBe(0)
    expect(counts(fixed)).toEqual(archiveCounts(archive))
  }, 120_000)

  it("--serve-port without --strategy import: exit 2, one line, nothing exported", async () => {
    const source = await start(generated)
    const target = await start({})
    const archive = Path.join(tmp, "serve-without-import")
    const run = await migrate(source, target, archive, "--serve-port", "8080")
    expect(run.code).toBe(2)
    expect(lastLine(run.stderr)).toContain("go with --strategy import")
    expect(NFS.existsSync(archive)).toBe(false)
    // an --archive that is a file: the wrong setting it is (exit 2), not an archive failure
    const file = Path.join(tmp, "archive-is-a-file")
    NFS.writeFileSync(file, "")
    const onFile = await migrate(source, target, file)
    expect(onFile.code, onFile.stderr).toBe(2)
    expect(lastLine(onFile.stderr)).toBe(
      `ferry: --archive ${file} is a file, not a folder; give the folder for the archive (made when missing)`,
    )
  }, 60_000)

  it("--mode crawl (a source searched page by page): the same migration, waves from the crawled files", async () => {
    const source = await start({ generate: 20 })
    const target = await start({})
    const archive = Path.join(tmp, "crawled")
    await expectMigrated(await migrate(source, target, archive, "--mode", "crawl"), target, archive)
  }, 60_000)

  it("--allow-partial-manifests: files of the manifest's parts download while the job runs, and import in waves; verify clean", async () => {
    const source = await start({ generate: 30, bulk: { resourcesPerFile: 100, manifestPartSize: 4 } })
    const target = await start({})
    const archive = Path.join(tmp, "parts")
    const run = await migrate(source, target, archive, "--allow-partial-manifests")
    expect(run.code, run.stderr).toBe(0)
    const s = summaryOf(run.stdout)
    expect(s.import.total).toBe(s.export.resources)
    expect(counts(target)).toEqual(archiveCounts(archive))
    const events = NFS.readFileSync(Path.join(archive, "events.ndjson"), "utf8")
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => (JSON.parse(l) as { event: string }).event)
    expect(events.indexOf("manifest-part")).toBeGreaterThanOrEqual(0)
    expect(events.indexOf("file")).toBeLessThan(events.indexOf("manifest"))
    const v = await verify(target, { archive })
    expect(v.run.code, JSON.stringify(v.report.differences.slice(0, 2))).toBe(0)
  }, 60_000)

  it("--allow-partial-manifests, the source's job deleted while its first part's files download: they are dropped, a new job lands, verify clean", async () => {
    const source = await start({
      generate: 30,
      // (the sandbox's own 1 s between polls, not the tests' 0: the DELETE below must land before the next poll)
      bulk: { resourcesPerFile: 100, manifestPartSize: 4, retryAfterSeconds: 1 },
      // slow parts and files: the job is deleted between part 1 (in the first 202) and part 2
      faults: {
        delay: [
          { route: "status", ms: 400 },
          { route: "download", ms: 200 },
        ],
      },
    })
    const target = await start({})
    const archive = Path.join(tmp, "parts-deleted")
    const eventsNow = () =>
      NFS.existsSync(Path.join(archive, "events.ndjson"))
        ? NFS.readFileSync(Path.join(archive, "events.ndjson"), "utf8")
            .split("\n")
            .filter((l) => l !== "")
            .map((l) => JSON.parse(l) as { event: string; statusUrl?: string })
        : []
    let deleted = false
    const watcher = setInterval(() => {
      if (deleted) return
      const now = eventsNow()
      const kickoff = now.find((e) => e.event === "kickoff")
      if (kickoff?.statusUrl === undefined || !now.some((e) => e.event === "manifest-part")) return
      deleted = true
      void fetch(kickoff.statusUrl, { method: "DELETE" })
    }, 10)
    const run = await migrate(source, target, archive, "--allow-partial-manifests").finally(() =>
      clearInterval(watcher),
    )
    expect(run.code, run.stderr).toBe(0)
    const events = eventsNow().map((e) => e.event)
    expect(events).toContain("job-gone")
    expect(events).toContain("early-dropped")
    expect(events.filter((e) => e === "kickoff")).toHaveLength(2)
    await expectMigrated(run, target, archive)
  }, 60_000)

  it("settings from a YAML config file, FERRY_TO overriding it: the migration lands where the environment says", async () => {
    const source = await start({ generate: 10 })
    const target = await start({})
    const archive = Path.join(tmp, "configured")
    const config = Path.join(tmp, "ferry.yaml")
    NFS.writeFileSync(
      config,
      [
        "source:",
        `  url: ${source.baseUrl}`,
        "  auth: none",
        "target:",
        "  url: http://127.0.0.1:1/fhir",
        `archive: ${archive}`,
        "bundleSize: 50",
        "",
      ].join("\n"),
    )
    const run = await runFerry(["migrate", "--config", config, "--json"], {
      env: { FERRY_TO: target.baseUrl },
    })
    expect(run.code, run.stderr).toBe(0)
    expect(summaryOf(run.stdout).import.total).toBe(
      Object.values(archiveCounts(archive)).reduce((a, b) => a + b, 0),
    )
    expect(counts(target)).toEqual(archiveCounts(archive))
  }, 60_000)

  it("the archive of another source: exit 2, one sentence, nothing sent (its ledger said finished)", async () => {
    const first = await start({ generate: 3 })
    const other = await start({ generate: 2 })
    const target = await start({})
    const archive = Path.join(tmp, "other-source")
    expect((await migrate(first, target, archive)).code).toBe(0)
    const before = counts(target)
    const run = await migrate(other, target, archive)
    expect(run.code, run.stderr).toBe(2)
    expect(lastLine(run.stderr)).toContain(
      `this archive holds an export of ${first.baseUrl}, not of ${other.baseUrl}; give this migration another --archive directory`,
    )
    expect(counts(target)).toEqual(before)
  }, 60_000)

  it("an unreachable target: one clear sentence, non-zero exit, nothing exported", async () => {
    const source = await start(generated)
    const archive = Path.join(tmp, "unreachable")
    const args = [
      "migrate",
      "--from",
      source.baseUrl,
      "--to",
      "http://127.0.0.1:1/fhir",
      "--archive",
      archive,
    ]
    const run = await runFerry(args)
    expect(run.code).toBe(4)
    const line = lastLine(run.stderr)
    expect(line).toMatch(
      /^ferry: http:\/\/127\.0\.0\.1:1\/fhir: the target server is unreachable .*; check --to and that the server is running$/,
    )
    expect(NFS.existsSync(archive)).toBe(false)
    expect(run.stdout).toBe("")
    // with --json, the failure is a result on stdout too (it printed nothing there)
    const json = await runFerry([...args, "--json"])
    expect(json.code).toBe(4)
    expect(JSON.parse(json.stdout)).toEqual({ ok: false, exitCode: 4, error: line.replace(/^ferry: /, "") })
  }, 60_000)

  it("a source given as https on an http port is said as such (as plan and export say it), not as unreachable", async () => {
    const source = await start(generated)
    const target = await start({})
    const archive = Path.join(tmp, "https-on-http")
    const run = await runFerry([
      "migrate",
      "--from",
      source.baseUrl.replace(/^http:/, "https:"),
      "--to",
      target.baseUrl,
      "--archive",
      archive,
    ])
    expect(run.code).toBe(4)
    const line = lastLine(run.stderr)
    expect(line).toContain("the source server (--from): the server does not speak TLS on that port")
    expect(line).not.toContain("unreachable")
    expect(NFS.existsSync(archive)).toBe(false)
  }, 60_000)
})
