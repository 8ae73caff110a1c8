/**
 * `ferry demo` (what `npm run demo` runs) as a process: plan, migrate and verify must finish with exit 0,
 * the archive must match the seeded source, and the verify report must say clean.
 */
import { execFile } from "node:child_process"
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import { promisify } from "node:util"
import { afterAll, describe, expect, it } from "vitest"
import { ferryBin, sharedData } from "./helpers/ferry.js"

const run = promisify(execFile)
const tmp = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-demo-e2e-"))

/** `ferry demo --data <data> --out <out>` that is expected to fail: its exit code and stderr (undefined: it did not fail). */
const demoFailing = (data: string, out: string) =>
  run(process.execPath, [ferryBin, "demo", "--data", data, "--out", out]).then(
    () => undefined,
    (e: { code: number; stderr: string }) => e,
  )
afterAll(() => NFS.rmSync(tmp, { recursive: true, force: true }))

describe("ferry demo (process)", () => {
  it("plans, migrates the seeded sandbox into the empty one, and verifies it clean", async () => {
    const out = Path.join(tmp, "demo")
    const { stdout, stderr } = await run(
      process.execPath,
      [ferryBin, "demo", "--data", sharedData(""), "--out", out],
      {
        maxBuffer: 16 * 1024 * 1024,
      },
    )
    expect(stdout).toContain("38479 resources in 20 types, 3 attachments")
    expect(stdout).toContain("checksums: all match")
    expect(stdout).toContain("per-type counts against the source: all equal")
    expect(stdout).toContain("Verdict: a migration looks possible.")
    expect(stdout).toMatch(/resources +38,479 in 20 types/)
    // every resource written, none set aside, and pipelined: more than one wave, files imported while the export
    // still ran (this is also test/migrate.test.ts's Synthea case, which is not repeated there)
    const done =
      /ferry migrate: done: 38,479 resources exported, 38,479 written in (\d+) waves \((\d+) files? while the export ran\), 0 deleted, 0 quarantined,/.exec(
        stderr,
      )
    expect(done, stderr).not.toBeNull()
    // counts and their nouns agree (a final wave of one file said "1 files")
    expect(stderr).not.toMatch(/[^\d,.]1 (files|resources|attachments|waves)\b/)
    expect(Number(done![1])).toBeGreaterThan(1)
    expect(Number(done![2])).toBeGreaterThan(0)
    expect(stdout).toMatch(
      /verify: CLEAN: 38479 compared over 20 types, 38479 matching, 0 differing, 0 missing, 0 extra, 0 count mismatches, 0\/3 attachment mismatches/,
    )
    const report = JSON.parse(NFS.readFileSync(Path.join(out, "verify.json"), "utf8")) as {
      verdict: string
      notes: ReadonlyArray<string>
      types: ReadonlyArray<{ type: string; sourceCount: number | null; targetCount: number | null }>
    }
    expect(report.verdict).toBe("clean")
    // the target holds the archive's resources and no more: equal per-type counts, and no second copies of the
    // attachments' blobs (they are the source's own Binary resources, migrated as such; verify leaves copies out
    // of its counts, with a note)
    expect(report.types).toHaveLength(20)
    for (const t of report.types) expect(t.targetCount, t.type).toBe(t.sourceCount)
    expect(report.notes.filter((n) => n.includes("copies of attachment payloads"))).toEqual([])
    expect(NFS.readFileSync(Path.join(out, "verify.html"), "utf8")).toContain("<html")
    const manifest = JSON.parse(NFS.readFileSync(Path.join(out, "archive", "manifest.json"), "utf8"))
    expect(manifest.complete).toBe(true)
    expect((NFS.statSync(Path.join(out, "archive")).mode & 0o777).toString(8)).toBe("700")
    // the folder is marked as the demo's own: a rerun replaces its archive and reports
    expect((NFS.statSync(Path.join(out, ".made-by-ferry-demo")).mode & 0o777).toString(8)).toBe("600")
  }, 180_000)

  it("says what to do when the shared data is missing, with exit code 2", async () => {
    const failure = await demoFailing(tmp, Path.join(tmp, "x"))
    expect(failure?.code).toBe(2)
    expect(failure?.stderr).toMatch(/^ferry: .*has no synthea-bundles\/ and attachments\/ folders: .*--data/m)
  })

  it("never replaces an archive or reports it did not write: exit 2, the folder untouched", async () => {
    const out = Path.join(tmp, "someone-elses")
    NFS.mkdirSync(Path.join(out, "archive"), { recursive: true })
    NFS.writeFileSync(Path.join(out, "archive", "manifest.json"), "{}")
    NFS.writeFileSync(Path.join(out, "verify.json"), "keep")
    const failure = await demoFailing(sharedData(""), out)
    expect(failure?.code).toBe(2)
    expect(failure?.stderr.trim()).toBe(
      `ferry: ${out} holds archive, verify.json, which the demo did not write and would replace; give --out a new or empty folder`,
    )
    expect(NFS.readFileSync(Path.join(out, "verify.json"), "utf8")).toBe("keep")
    expect(NFS.readFileSync(Path.join(out, "archive", "manifest.json"), "utf8")).toBe("{}")
    // nor into an archive itself
    const root = Path.join(out, "archive")
    const into = await demoFailing(sharedData(""), root)
    expect(into?.code).toBe(2)
    expect(into?.stderr).toContain(`${root} holds manifest.json, which the demo did not write`)
    expect(NFS.readdirSync(root)).toEqual(["manifest.json"])
  })
})
