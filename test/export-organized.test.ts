/**
 * `ferry export --organize-output-by Patient` end to end: the bundled CLI as a process against sandboxes
 * started in this process (the source answers with blocks of a Parameters header, the Patient and its
 * compartment, split every 500 lines, the owner repeated after a repeated header). The archive must hold the
 * same per-type data files' resources as a plain export, import into an empty sandbox and verify clean,
 * also after a kill -9 during the downloads or during the distribution into per-type files.
 * Needs `npm run build` first.
 */
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import * as zlib from "node:zlib"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  archiveCounts,
  archiveManifest,
  archiveMismatches,
  exportEvents,
  type InProcessSandbox,
  runFerry,
  setSandboxFaults,
  sharedData,
  startSandbox,
} from "./helpers/ferry.js"

const sandboxes: Array<InProcessSandbox> = []
const tmp = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-organized-e2e-"))
let source: InProcessSandbox
let plain: string
let organized: string

afterAll(async () => {
  for (const s of sandboxes) await s.close()
  NFS.rmSync(tmp, { recursive: true, force: true })
})

/** Every line of the archive's data files, sorted. */
const dataLines = (out: string): Array<string> =>
  NFS.readdirSync(Path.join(out, "data"))
    .flatMap((f) => NFS.readFileSync(Path.join(out, "data", f), "utf8").split("\n"))
    .filter((l) => l !== "")
    .sort()

/** Data files whose lines are not all of the file's manifest type (empty: one type per file). */
const mixedFiles = (out: string): Array<string> =>
  archiveManifest(out).files.flatMap((f) =>
    NFS.readFileSync(Path.join(out, f.path), "utf8")
      .split("\n")
      .filter((l) => l !== "")
      .some((l) => (JSON.parse(l) as { resourceType: string }).resourceType !== f.type)
      ? [f.path]
      : [],
  )

const organizedArgs = (out: string, baseUrl: string = source.handle.baseUrl) => [
  "export",
  baseUrl,
  "--out",
  out,
  "--level",
  "patient",
  "--organize-output-by",
  "Patient",
  "--parallel",
  "2",
]

beforeAll(async () => {
  // attachments first: their patients' blocks (with the attachment DocumentReferences) open the first file
  source = await startSandbox({
    seed: [sharedData("attachments"), sharedData("sample-bulk-10-patients")],
    bulk: { resourcesPerFile: 500, organizedRepeatOwner: true },
  })
  sandboxes.push(source)
  plain = Path.join(tmp, "plain")
  const run = await runFerry(["export", source.handle.baseUrl, "--out", plain, "--level", "patient"])
  expect(run.code, run.stderr).toBe(0)
}, 120_000)

describe("ferry export --organize-output-by Patient", () => {
  it("per-type data files with the same resources as a plain export; import and verify clean", async () => {
    organized = Path.join(tmp, "organized")
    const run = await runFerry([...organizedArgs(organized), "--json"])
    expect(run.code, run.stderr).toBe(0)
    const events = exportEvents(organized)
    const staged = events.filter((e) => e.event === "organized-file")
    expect(staged.length).toBeGreaterThan(5) // the source split its output into many block files
    const distributed = events.filter((e) => e.event === "distributed")
    expect(distributed).toHaveLength(staged.length)
    // every header was dropped, and every owner repeated after a continued header
    expect(distributed.reduce((n, e) => n + Number(e.headers), 0)).toBeGreaterThan(10)
    expect(distributed.reduce((n, e) => n + Number(e.duplicates), 0)).toBeGreaterThan(0)
    // the count check ran on the organized files as the server counted them (headers included)
    expect(staged.reduce((n, e) => n + Number(e.count), 0)).toBe(
      dataLines(organized).length +
        distributed.reduce((n, e) => n + Number(e.headers) + Number(e.duplicates), 0),
    )

    expect(dataLines(organized)).toEqual(dataLines(plain))
    expect(mixedFiles(organized)).toEqual([])
    // the plain line after the split says what the files are (it said "N files to download" when all were in)
    expect(run.stderr).toContain(
      `ferry export: the server's blocks split into ${archiveManifest(organized).files.length} per-type data files`,
    )
    expect(archiveMismatches(organized)).toEqual([])
    expect(NFS.existsSync(Path.join(organized, "staging"))).toBe(false)
    const summary = JSON.parse(run.stdout) as {
      types: Record<string, { resources: number }>
      attachments: { fetched: number }
    }
    expect(summary.attachments.fetched).toBe(3)
    expect(Object.fromEntries(Object.entries(summary.types).map(([t, s]) => [t, s.resources]))).toEqual(
      archiveCounts(plain),
    )

    // a patient-level export holds no Practitioner, Organization or Location, which its resources name by
    // identifier (conditional references): a target that holds them already (as a migration's earlier system
    // export left it) resolves them; an empty one would not, and those resources would be quarantined
    const target = await startSandbox({
      seed: ["Practitioner", "Organization", "Location"].map((t) =>
        sharedData(`sample-bulk-10-patients/${t}.000.ndjson`),
      ),
    })
    sandboxes.push(target)
    const imported = await runFerry(["import", organized, "--to", target.handle.baseUrl, "--json"])
    expect(imported.code, imported.stderr).toBe(0)
    expect((JSON.parse(imported.stdout) as { quarantined: number }).quarantined).toBe(0)
    // the archive's types (the target's practitioners are not the archive's); its conditional references resolved
    // on the target, as the import resolved them
    const verified = await runFerry([
      "verify",
      "--archive",
      organized,
      "--target",
      target.handle.baseUrl,
      "--type",
      Object.keys(archiveCounts(organized)).join(","),
      "--json",
    ])
    expect(verified.code, verified.stderr).toBe(0)
    const report = JSON.parse(verified.stdout) as { verdict: string; notes: ReadonlyArray<string> }
    expect(report.verdict).toBe("clean")
    expect(report.notes.join("\n")).toMatch(
      /conditional references the archive holds no resource for resolved by searching the target, as the import did: (\d+) of \1 distinct/,
    )
  }, 180_000)

  it("with --gzip: gzip per-type data files holding the same resources", async () => {
    const out = Path.join(tmp, "organized-gzip")
    const run = await runFerry([...organizedArgs(out), "--gzip"])
    expect(run.code, run.stderr).toBe(0)
    const files = archiveManifest(out).files
    expect(files.length).toBeGreaterThan(0)
    expect(files.every((f) => f.path.endsWith(".ndjson.gz"))).toBe(true)
    const lines = files
      .flatMap((f) =>
        zlib
          .gunzipSync(NFS.readFileSync(Path.join(out, f.path)))
          .toString("utf8")
          .split("\n"),
      )
      .filter((l) => l !== "")
      .sort()
    expect(lines).toEqual(dataLines(plain))
    expect(archiveMismatches(out)).toEqual([])
    expect(NFS.existsSync(Path.join(out, "staging"))).toBe(false)
  }, 120_000)

  it("a server whose manifest count leaves the headers out: the count check accepts it, same data", async () => {
    const other = await startSandbox({
      seed: [sharedData("attachments"), sharedData("sample-bulk-10-patients")],
      bulk: { resourcesPerFile: 500, organizedCountHeaders: false },
    })
    sandboxes.push(other)
    const out = Path.join(tmp, "count-without-headers")
    const run = await runFerry(organizedArgs(out, other.handle.baseUrl))
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).not.toContain("count-mismatch")
    const staged = exportEvents(out).filter((e) => e.event === "organized-file")
    const headers = exportEvents(out)
      .filter((e) => e.event === "distributed")
      .reduce((n, e) => n + Number(e.headers), 0)
    expect(headers).toBeGreaterThan(10)
    expect(staged.reduce((n, e) => n + Number(e.count), 0)).toBe(dataLines(out).length + headers)
    // another sandbox: attachment URLs name its port, so the same resources but not the same lines
    expect(archiveCounts(out)).toEqual(archiveCounts(plain))
    expect(archiveMismatches(out)).toEqual([])
  }, 120_000)

  it("kill -9 during the downloads, then a rerun: the same archive, one kick-off", async () => {
    const out = Path.join(tmp, "killed-download")
    await setSandboxFaults(source.handle.baseUrl, { delay: [{ route: "download", ms: 400 }] })
    const killed = await runFerry(organizedArgs(out), {
      onStderr: (text, child) => {
        if (/of organized output, to be split by type/.test(text) && child.exitCode === null)
          child.kill("SIGKILL")
      },
    })
    await setSandboxFaults(source.handle.baseUrl, {})
    expect(killed.signal).toBe("SIGKILL")
    expect(archiveManifest(out).complete).toBe(false)
    expect(exportEvents(out).some((e) => e.event === "distributed")).toBe(false)
    const rerun = await runFerry(organizedArgs(out))
    expect(rerun.code, rerun.stderr).toBe(0)
    expect(dataLines(out)).toEqual(dataLines(plain))
    expect(archiveMismatches(out)).toEqual([])
    expect(exportEvents(out).filter((e) => e.event === "kickoff")).toHaveLength(1)
  }, 120_000)

  it("kill -9 during the distribution, then a rerun: no resource lost or doubled", async () => {
    const out = Path.join(tmp, "killed-distribution")
    // attachment fetches (plain FHIR reads) are slow: the run stays inside the first distributed file's
    // attachments while the kill arrives
    await setSandboxFaults(source.handle.baseUrl, { delay: [{ route: "fhir", ms: 3000 }] })
    const killed = await runFerry(organizedArgs(out), {
      onStderr: (text, child) => {
        if (/: split into \d+ per-type files?/.test(text) && child.exitCode === null) child.kill("SIGKILL")
      },
    })
    await setSandboxFaults(source.handle.baseUrl, {})
    expect(killed.signal).toBe("SIGKILL")
    expect(archiveManifest(out).complete).toBe(false)
    const before = exportEvents(out).filter((e) => e.event === "distributed").length
    expect(before).toBeGreaterThan(0)
    const rerun = await runFerry(organizedArgs(out))
    expect(rerun.code, rerun.stderr).toBe(0)
    const events = exportEvents(out)
    // the rerun distributed only the rest, remembering what the first run's files hold
    expect(events.filter((e) => e.event === "distributed")).toHaveLength(
      events.filter((e) => e.event === "organized-file").length,
    )
    expect(dataLines(out)).toEqual(dataLines(plain))
    expect(mixedFiles(out)).toEqual([])
    expect(archiveMismatches(out)).toEqual([])
    expect(NFS.existsSync(Path.join(out, "staging"))).toBe(false)
  }, 120_000)
})
