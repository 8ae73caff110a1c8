/**
 * `ferry import` end to end: the bundled CLI as a process, a source archive made with `ferry export` from a
 * seeded in-process sandbox, and fresh in-process target sandboxes (client ids refused, a 5-entry Bundle
 * limit, entry rejections, throttling storms, a kill -9 mid-import). Every target is checked by reading its
 * store back: per-type counts, and every relative reference and `Binary/…` attachment URL resolving.
 * Needs `npm run build` first.
 */
import * as NFS from "node:fs"
import * as Net from "node:net"
import * as OS from "node:os"
import * as Path from "node:path"
import { attachments, references } from "@ferry/core/Walker"
import type { SandboxConfigInput } from "@ferry/sandbox/Config"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  archiveCounts,
  type InProcessSandbox,
  lastLine,
  runFerry,
  setSandboxFaults,
  sharedData,
  startSandbox,
} from "./helpers/ferry.js"

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

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
const exportArchive = async (name: string, seed: ReadonlyArray<string>): Promise<string> => {
  const source = await start({ seed: [...seed] })
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
        const m =
          typeof a.attachment.url === "string" ? /^Binary\/([A-Za-z0-9\-.]+)$/.exec(a.attachment.url) : null
        if (m === null) continue
        checked++
        if (t.store.read("Binary", m[1]!) === undefined)
          dangling.push(`${type}/${stored.id} → ${a.attachment.url}`)
      }
    }
  }
  return { dangling, checked, conditionals }
}

const importInto = (archive: string, target: Target, args: ReadonlyArray<string> = []) =>
  runFerry(["import", "--to", target.baseUrl, "--json", ...args, archive])

describe("ferry import", () => {
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
    const patient = JSON.parse(
      NFS.readFileSync(Path.join(archive, "data", "Patient.000.ndjson"), "utf8").split("\n")[0]!,
    ) as { id: string }
    expect(target.store.read("Patient", patient.id)).toBeDefined()
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

  it("a 5-entry Bundle limit: 413 splits the chunks until they fit", async () => {
    const archive = copy(sample, "small")
    const target = await start({ maxBundleEntries: 5 })
    const run = await importInto(archive, target, ["--bundle-size", "40"])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toContain("too large; splitting")
    expect(targetCounts(target)).toEqual(archiveCounts(archive))
    expect(danglingIn(target).dangling).toEqual([])
  })

  it("entry-level rejections are quarantined with file:line, the rest lands", async () => {
    const archive = copy(sample, "reject")
    const target = await start({ rejectRule: { type: "Immunization", message: "no immunizations here" } })
    const run = await importInto(archive, target)
    expect(run.code, run.stderr).toBe(0)
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
    expect((JSON.parse(run.stdout) as { quarantined: number }).quarantined).toBe(expected.Immunization)
  })

  it("429 and 503 storms on the target: finishes with everything landed", async () => {
    const archive = copy(sample, "storm")
    const target = await start({})
    await setSandboxFaults(target.baseUrl, {
      // after the CapabilityStatement and the probe: 12 throttled requests in a row (more than the
      // client's own 8 retries), then later 12 503s in a row
      throttle: [{ route: "fhir", skip: 3, first: 12, seconds: 0 }],
      transient: [{ route: "fhir", skip: 20, first: 12, status: 503 }],
    })
    const run = await importInto(archive, target)
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toContain("the target is throttling")
    expect(targetCounts(target)).toEqual(archiveCounts(archive))
  }, 180_000)

  it("--retry-quarantine replays the quarantined resources once the target accepts them", async () => {
    const archive = copy(sample, "retry")
    const db = Path.join(tmp, "retry.sqlite")
    const port = await freePort()
    const refusing = await startSandbox({ port, db, rejectRule: { type: "Immunization" } })
    const first = await importInto(archive, refusing.handle)
    await refusing.close()
    expect(first.code, first.stderr).toBe(0)
    const expected = archiveCounts(archive)
    expect((JSON.parse(first.stdout) as { quarantined: number }).quarantined).toBe(expected.Immunization)
    const fixed = await start({ port, db })
    expect(fixed.store.count("Immunization")).toBe(0)
    const second = await importInto(archive, fixed, ["--retry-quarantine"])
    expect(second.code, second.stderr).toBe(0)
    expect((JSON.parse(second.stdout) as { quarantined: number; resumedChunks: number }).quarantined).toBe(0)
    expect(targetCounts(fixed)).toEqual(expected)
    expect(danglingIn(fixed).dangling).toEqual([])
  })

  it("deleted/ of an incremental archive: DELETEs on the target through the id map", async () => {
    const source = await start({ seed: [sharedData("sample-bulk-10-patients")] })
    const full = Path.join(tmp, "del-full")
    expect((await runFerry(["export", source.baseUrl, "--out", full])).code).toBe(0)
    const target = await start({ refuseClientIds: true })
    const first = await importInto(full, target)
    expect(first.code, first.stderr).toBe(0)
    const gone = Array.from(source.store.iterate("AllergyIntolerance"))
      .slice(0, 2)
      .map((r) => r.id)
    const since = new Date(Date.now() - 1000).toISOString()
    for (const id of gone) {
      const r = await fetch(`${source.baseUrl}/AllergyIntolerance/${id}`, { method: "DELETE" })
      expect(r.status).toBeLessThan(300)
    }
    const delta = Path.join(tmp, "del-delta")
    const exported = await runFerry(["export", source.baseUrl, "--out", delta, "--since", since])
    expect(exported.code, exported.stderr).toBe(0)
    // the delta archive goes to the same target: its id map is the full import's
    const slug = NFS.readdirSync(Path.join(full, "imports"))[0]!
    NFS.mkdirSync(Path.join(delta, "imports", slug), { recursive: true })
    NFS.copyFileSync(
      Path.join(full, "imports", slug, "idmap.ndjson"),
      Path.join(delta, "imports", slug, "idmap.ndjson"),
    )
    const second = await importInto(delta, target, ["--strategy", "post"])
    expect(second.code, second.stderr).toBe(0)
    expect((JSON.parse(second.stdout) as { deleted: number }).deleted).toBe(2)
    expect(target.store.count("AllergyIntolerance")).toBe(source.store.count("AllergyIntolerance"))
  })

  it("--strategy import: the target's $import job loads the archive (BulkImport.ts)", async () => {
    const archive = copy(sample, "bulk")
    const target = await start({})
    const run = await importInto(archive, target, ["--strategy", "import"])
    expect(run.code, run.stderr).toBe(0)
    expect((JSON.parse(run.stdout) as { strategy: string }).strategy).toBe("import")
    expect(targetCounts(target)).toEqual(archiveCounts(archive))
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

  // put only: the sandbox cannot search `_tag`, which the post strategy's conditional create needs to be
  // duplicate-free across a kill (see the import report)
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
    expect((JSON.parse(second.stdout) as { resumedChunks: number }).resumedChunks).toBeGreaterThan(0)
    expect(targetCounts(target)).toEqual(expected)
    expect(danglingIn(target).dangling).toEqual([])
  })
})

describe("ferry import (Synthea)", () => {
  it("38k Synthea resources with urn:uuid references across files, put: counts equal, every reference resolves", async () => {
    const archive = await exportArchive("synthea", [sharedData("synthea-bundles"), sharedData("attachments")])
    const target = await start({})
    const run = await importInto(archive, target)
    expect(run.code, run.stderr).toBe(0)
    expect(targetCounts(target)).toEqual(archiveCounts(archive))
    const check = danglingIn(target)
    expect(check.dangling).toEqual([])
    expect(check.checked).toBeGreaterThan(100_000)
  }, 300_000)
})
