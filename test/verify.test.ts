import { createHash } from "node:crypto"
/**
 * `ferry verify` end to end: the bundled CLI as a process against sandboxes started in this process.
 * Needs `npm run build` first. Sources: a server (`--source`) or an archive made by `ferry export`.
 */
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import * as Attachments from "@ferry/archive/Attachments"
import { carryNumbers, parseKeepingNumbers } from "@ferry/core/NumberText"
import { resolveConditionalReferences } from "@ferry/sandbox/Seed"
import { Effect, Stream } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  type InProcessSandbox,
  lastLine,
  runFerry,
  sharedData,
  smartTestClient,
  startSandbox,
} from "./helpers/ferry.js"

const seed = [sharedData("sample-bulk-10-patients"), sharedData("attachments")]
const types = "Condition,DocumentReference,Encounter,Patient,Procedure"

interface Report {
  readonly verdict: string
  readonly source: { readonly transactionTime?: string; readonly checksumsSha256?: string }
  readonly sample: { readonly percent: number } | null
  readonly idMap: { readonly entries: number } | null
  readonly totals: Record<string, number>
  readonly differences: ReadonlyArray<{ kind: string; source?: string; target?: string }>
  readonly attachments: ReadonlyArray<{ resource: string }>
  readonly notes: ReadonlyArray<string>
  readonly types: ReadonlyArray<{
    readonly type: string
    readonly sourceCount: number | null
    readonly targetCount: number | null
    readonly otherSources: number
  }>
}
const readReport = (dir: string): Report =>
  JSON.parse(NFS.readFileSync(Path.join(dir, "verify.json"), "utf8")) as Report
const mode = (p: string) => (NFS.statSync(p).mode & 0o777).toString(8)

const sandboxes: Array<InProcessSandbox> = []
const tmp = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-verify-e2e-"))
let source: InProcessSandbox
let archive: string

beforeAll(async () => {
  source = await startSandbox({ seed })
  sandboxes.push(source)
  archive = Path.join(tmp, "archive")
  const exported = await runFerry(["export", source.handle.baseUrl, "--out", archive])
  expect(exported.code, exported.stderr).toBe(0)
}, 120_000)

afterAll(async () => {
  for (const s of sandboxes) await s.close()
  NFS.rmSync(tmp, { recursive: true, force: true })
})

/** A target holding the seed as a correct import leaves it (conditional references made literal), or nothing. */
const target = async (withSeed = true) => {
  const s = await startSandbox(withSeed ? { seed } : {})
  sandboxes.push(s)
  if (withSeed) resolveConditionalReferences(s.handle.store)
  return s
}

/** `ferry verify` with the seeded source server against `t`, reports into `report`. */
const verifyServers = (t: { handle: { baseUrl: string } }, report: string, ...extra: Array<string>) =>
  runFerry([
    "verify",
    "--source",
    source.handle.baseUrl,
    "--target",
    t.handle.baseUrl,
    "--type",
    types,
    ...extra,
    "--report",
    report,
  ])

/** `ferry verify --archive a --target targetBase --type only …extra`. */
const verifyTypes = (a: string, targetBase: string, only: string, ...extra: Array<string>) =>
  runFerry(["verify", "--archive", a, "--target", targetBase, "--type", only, ...extra])

/** `ferry verify` of the target `targetBase` against the archive `a`, reports into `tmp/<name>`. */
const verifyArchive = async (a: string, targetBase: string, name: string) => {
  const report = Path.join(tmp, name)
  const run = await runFerry(["verify", "--archive", a, "--target", targetBase, "--report", report])
  return { run, report: readReport(report) }
}

describe("ferry verify", () => {
  it("identical source and target: exit 0, clean, both reports written 0600", async () => {
    const t = await target()
    const report = Path.join(tmp, "r-clean")
    const run = await verifyServers(t, report)
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toContain("verify: CLEAN")
    expect(run.stdout).toContain(Path.join(report, "verify.html"))
    expect(readReport(report).verdict).toBe("clean")
    expect(readReport(report).totals.attachments).toBe(3)
    expect(mode(Path.join(report, "verify.json"))).toBe("600")
    expect(mode(Path.join(report, "verify.html"))).toBe("600")
    expect(NFS.readFileSync(Path.join(report, "verify.html"), "utf8")).toContain("clean")
  }, 60_000)

  it("archive vs a corrupted target: 1 differing, 1 missing, 1 attachment mismatch, exit 6, in the HTML", async () => {
    const t = await target()
    const store = t.handle.store
    const first = (type: string) => {
      for (const r of store.iterate(type, { limit: 1 })) return r
      throw new Error(type)
    }
    const patient = first("Patient")
    store.update({ ...(JSON.parse(patient.json) as object), id: patient.id, birthDate: "1900-01-01" })
    const condition = first("Condition").id
    store.delete("Condition", condition)
    // the payload replaced under its Binary's id and content type: one attachment mismatch, not also a
    // differing Binary (every type compared, Binary too)
    const original = first("Binary")
    const contentType = (JSON.parse(original.json) as { contentType: string }).contentType
    store.putBinary(original.id, contentType, Buffer.from("not the original bytes"))
    const full = (...extra: Array<string>) =>
      runFerry(["verify", "--archive", archive, "--target", t.handle.baseUrl, ...extra])

    const run = await full()
    expect(run.code, run.stderr).toBe(6)
    expect(lastLine(run.stderr)).toContain("1 differing, 1 missing, 0 extra")
    expect(lastLine(run.stderr)).toContain("1 attachment mismatches")
    // Reports default to the archive directory.
    const r = readReport(archive)
    expect(r.verdict).toBe("differences")
    expect(r.totals.differing).toBe(1)
    expect(r.totals.missing).toBe(1)
    expect(r.totals.extra).toBe(0)
    expect(r.totals.attachmentMismatches).toBe(1)
    expect(r.types.map((row) => row.type)).toContain("Binary")
    expect(r.notes).toContain(
      "1 Binary resource(s) whose bytes differ counted once, as the attachment mismatches of the resources pointing at them, not also as differing resources",
    )
    const html = NFS.readFileSync(Path.join(archive, "verify.html"), "utf8")
    expect(html).toContain(`Patient/${patient.id}`)
    expect(html).toContain("birthDate")
    expect(html).toContain(`Condition/${condition}`)
    expect(html).toContain(r.attachments[0]?.resource ?? "none")
    expect(html).toContain("the payloads differ")

    // --json: the report alone on stdout (as verify.json holds it), the summary on stderr, the same exit
    const report = Path.join(tmp, "r-json")
    const json = await full("--report", report, "--json")
    expect(json.code, json.stderr).toBe(6)
    // the report, with `ok` (false: differences) as every --json result has, and as verify.json holds it
    const printed = JSON.parse(json.stdout) as { ok: boolean }
    expect(printed.ok).toBe(false)
    expect(printed).toEqual(readReport(report))
    expect(readReport(report).totals).toEqual(r.totals)
    expect(json.stderr).toContain("verify: DIFFERENCES")
    expect(json.stderr).toContain(Path.join(report, "verify.html"))
    // the report names the archive it proves things of: its source as of when, and its checksum file's sha256
    const sums = createHash("sha256")
      .update(NFS.readFileSync(Path.join(archive, "checksums.sha256")))
      .digest("hex")
    const manifest = JSON.parse(NFS.readFileSync(Path.join(archive, "manifest.json"), "utf8")) as {
      transactionTime: string
    }
    expect(r.source.checksumsSha256).toBe(sums)
    expect(r.source.transactionTime).toBe(manifest.transactionTime)
    expect(NFS.readFileSync(Path.join(archive, "verify.html"), "utf8")).toContain(sums)
  }, 60_000)

  it("Ctrl-C (SIGINT): exit 130, one line saying so, and with --json the failure object", async () => {
    const slow = await startSandbox({ seed, faults: { delay: [{ route: "fhir", ms: 300 }] } })
    sandboxes.push(slow)
    let sent = false
    const run = await runFerry(
      [
        "verify",
        "--archive",
        archive,
        "--target",
        slow.handle.baseUrl,
        "--json",
        "--report",
        Path.join(tmp, "sigint"),
      ],
      {
        onStderr: (text, child) => {
          if (!sent && text.length > 0) {
            sent = true
            setTimeout(() => child.kill("SIGINT"), 300)
          }
        },
      },
    )
    expect(run.code).toBe(130)
    expect(lastLine(run.stderr)).toBe(
      "ferry: verify interrupted; no report was written, run the same command again (it compares from the start)",
    )
    expect(JSON.parse(run.stdout)).toEqual({
      ok: false,
      exitCode: 130,
      error: "verify interrupted; run it again",
    })
  })

  it("a patient-level archive imported with post into a target that holds its practitioners already: clean, its conditional references resolved on the target", async () => {
    const held = await startSandbox({
      seed: ["Practitioner", "Organization", "Location"].map((t) =>
        sharedData(`sample-bulk-10-patients/${t}.000.ndjson`),
      ),
    })
    sandboxes.push(held)
    const patients = Path.join(tmp, "patient-level")
    const exported = await runFerry([
      "export",
      source.handle.baseUrl,
      "--out",
      patients,
      "--level",
      "patient",
      "--type",
      "Patient,Encounter",
    ])
    expect(exported.code, exported.stderr).toBe(0)
    const imported = await runFerry(["import", patients, "--to", held.handle.baseUrl, "--strategy", "post"])
    expect(imported.code, imported.stderr).toBe(0)
    const run = await runFerry([
      "verify",
      "--archive",
      patients,
      "--target",
      held.handle.baseUrl,
      "--type",
      "Patient,Encounter",
    ])
    expect(run.code, run.stdout + run.stderr).toBe(0)
    expect(run.stdout).toContain("verify: CLEAN")
  })

  it("an archive of some types (_type): the target's other types are not counted as extra; clean, and the report says so", async () => {
    const some = Path.join(tmp, "archive-some-types")
    const exported = await runFerry([
      "export",
      source.handle.baseUrl,
      "--out",
      some,
      "--type",
      "Patient,Condition",
    ])
    expect(exported.code, exported.stderr).toBe(0)
    // a target loaded with everything (more than the archive holds: Observations, Encounters, …)
    const t = await target()
    const v = await verifyArchive(some, t.handle.baseUrl, "r-some-types")
    expect(v.run.code, JSON.stringify(v.report.totals)).toBe(0)
    expect(v.report.totals.extra).toBe(0)
    expect(v.report.types.map((r) => r.type).sort()).toEqual(["Condition", "Patient"])
    expect(v.report.notes).toContain(
      "the archive holds the types its export asked for (_type): only its types were compared; the target's resources of other types were not counted",
    )
  }, 60_000)

  it("an extra resource on the target: 1 extra, exit 6", async () => {
    const t = await target()
    t.handle.store.update({ resourceType: "Patient", id: "extra-one", gender: "unknown" })
    const report = Path.join(tmp, "r-extra")
    const run = await runFerry([
      "verify",
      "--source",
      source.handle.baseUrl,
      "--target",
      t.handle.baseUrl,
      "--type",
      "Patient",
      "--report",
      report,
    ])
    expect(run.code, run.stderr).toBe(6)
    const r = readReport(report)
    expect(r.totals.extra).toBe(1)
    expect(r.totals.missing + r.totals.differing).toBe(0)
    expect(r.differences).toEqual([{ kind: "extra", type: "Patient", target: "Patient/extra-one" }])
  }, 60_000)

  it("a target that lost a generated narrative: a difference; --ignore-generated-narrative leaves it out", async () => {
    const t = await target()
    let patient: { id: string; json: string } | undefined
    for (const r of t.handle.store.iterate("Patient"))
      if ((JSON.parse(r.json) as { text?: { status?: string } }).text?.status === "generated") patient = r
    expect(patient).toBeDefined()
    const { text: _text, ...rest } = JSON.parse(patient!.json) as { text?: unknown }
    t.handle.store.update({ ...rest, id: patient!.id })
    const args = [
      "verify",
      "--source",
      source.handle.baseUrl,
      "--target",
      t.handle.baseUrl,
      "--type",
      "Patient",
    ]
    const strict = await runFerry([...args, "--report", Path.join(tmp, "r-narrative")])
    expect(strict.code, strict.stderr).toBe(6)
    expect(readReport(Path.join(tmp, "r-narrative")).differences).toEqual([
      expect.objectContaining({ kind: "differing", source: `Patient/${patient!.id}` }),
    ])
    const lenient = await runFerry([
      ...args,
      "--ignore-generated-narrative",
      "--report",
      Path.join(tmp, "r-narrative-ignored"),
    ])
    expect(lenient.code, lenient.stderr).toBe(0)
  }, 60_000)

  it("a target with other ids and an idmap.ndjson in the archive: clean through the id map", async () => {
    const t = await target(false)
    const store = t.handle.store
    const newId = (id: string) => `m-${id}`.slice(0, 64)
    const lines: Array<string> = []
    const manifest = JSON.parse(NFS.readFileSync(Path.join(archive, "manifest.json"), "utf8")) as {
      files: Array<{ type: string; path: string }>
    }
    const keys = new Set<string>()
    const resources: Array<Record<string, unknown>> = []
    for (const f of manifest.files) {
      for (const line of NFS.readFileSync(Path.join(archive, f.path), "utf8").split("\n")) {
        if (line.trim() === "") continue
        // (its decimals as written, as an import keeps them)
        const r = parseKeepingNumbers(line) as Record<string, unknown>
        keys.add(`${String(r.resourceType)}/${String(r.id)}`)
        resources.push(r)
      }
    }
    // Blobs by the URL they were exported from.
    const index = new Map<string, string>()
    for (const line of NFS.readFileSync(Path.join(archive, "attachments", "index.ndjson"), "utf8").split(
      "\n",
    )) {
      if (line.trim() === "") continue
      const l = JSON.parse(line) as { sha256: string; sourceUrls: Array<string> }
      for (const u of l.sourceUrls) index.set(u, l.sha256)
    }
    // their bytes (a small blob is in a pack)
    const blobs = new Map<string, Buffer>()
    for (const sha of new Set(index.values()))
      blobs.set(
        sha,
        Buffer.concat([...(await Effect.runPromise(Stream.runCollect(Attachments.read(archive, sha))))]),
      )
    const rewrite = (node: unknown): unknown => {
      if (Array.isArray(node)) return node.map(rewrite)
      if (typeof node !== "object" || node === null) return node
      const out: Record<string, unknown> = {}
      for (const [k, v] of Object.entries(node)) {
        if (k === "reference" && typeof v === "string" && keys.has(v)) {
          const [type, id] = v.split("/") as [string, string]
          out[k] = `${type}/${newId(id)}`
        } else if (k === "url" && typeof v === "string" && index.has(v)) {
          const sha = index.get(v) ?? ""
          const binaryId = newId(v.slice(v.lastIndexOf("/") + 1))
          const bytes = blobs.get(sha) ?? Buffer.alloc(0)
          store.putBinary(binaryId, "application/octet-stream", bytes)
          out[k] = `${t.handle.baseUrl}/Binary/${binaryId}`
        } else out[k] = rewrite(v)
      }
      return out
    }
    for (const r of resources) {
      if (r.resourceType === "Binary") continue
      const id = newId(String(r.id))
      store.update(carryNumbers(r, { ...(rewrite(r) as Record<string, unknown>), id }))
      lines.push(
        JSON.stringify({
          s: `${String(r.resourceType)}/${String(r.id)}`,
          t: `${String(r.resourceType)}/${id}`,
        }),
      )
    }
    // as an import leaves them: conditional references made literal (to the new ids)
    resolveConditionalReferences(store)
    const slug = t.handle.baseUrl.replace(/^https?:\/\//, "").replace(/[^A-Za-z0-9.-]/g, "_")
    NFS.mkdirSync(Path.join(archive, "imports", slug), { recursive: true })
    NFS.writeFileSync(Path.join(archive, "imports", slug, "idmap.ndjson"), `${lines.join("\n")}\n`)

    const report = Path.join(tmp, "r-idmap")
    const run = await verifyTypes(archive, t.handle.baseUrl, types, "--report", report)
    const r = readReport(report)
    expect(run.code, JSON.stringify(r.differences.slice(0, 2))).toBe(0)
    expect(r.verdict).toBe("clean")
    expect(r.idMap?.entries).toBe(lines.length)
    expect(r.totals.compared).toBeGreaterThan(100)
    expect(r.totals.attachments).toBe(3)

    // Without the id map, nothing matches.
    NFS.rmSync(Path.join(archive, "imports"), { recursive: true, force: true })
    const bare = await verifyTypes(archive, t.handle.baseUrl, "Patient", "--report", report)
    expect(bare.code).toBe(6)
    const bareReport = readReport(report)
    expect(bareReport.totals.sourceCount).toBeGreaterThan(0)
    expect(bareReport.totals.missing).toBe(bareReport.totals.sourceCount)
    expect(bareReport.totals.extra).toBe(bareReport.totals.sourceCount)
  }, 90_000)

  it("the 10-patient sample imported by Ferry (put, and post into a target refusing client ids) verifies clean: conditional references resolved on the archive side", async () => {
    for (const refuseClientIds of [false, true]) {
      const t = await startSandbox({ refuseClientIds })
      sandboxes.push(t)
      const imported = await runFerry(["import", archive, "--to", t.handle.baseUrl, "--json"])
      expect(imported.code, imported.stderr).toBe(0)
      expect((JSON.parse(imported.stdout) as { strategy: string }).strategy).toBe(
        refuseClientIds ? "post" : "put",
      )
      const { run, report: r } = await verifyArchive(
        archive,
        t.handle.baseUrl,
        `r-imported-${refuseClientIds}`,
      )
      expect(run.code, `${run.stderr}\n${JSON.stringify(r.differences.slice(0, 3))}`).toBe(0)
      expect(r.verdict).toBe("clean")
    }
  }, 180_000)

  it("two sources with the same ids in one target (post): each archive verifies clean, the other's resources left out and counted apart", async () => {
    // two sources of the same generated patients (the same ids; what is tested is the provenance tag, not the data)
    const [firstArchive, secondArchive] = (await Promise.all(
      ["archive-first-source", "archive-second-source"].map(async (name) => {
        const s = await startSandbox({ generate: 20 })
        sandboxes.push(s)
        const out = Path.join(tmp, name)
        const exported = await runFerry(["export", s.handle.baseUrl, "--out", out])
        expect(exported.code, exported.stderr).toBe(0)
        return out
      }),
    )) as [string, string]
    const t = await startSandbox({ refuseClientIds: true })
    sandboxes.push(t)
    for (const a of [firstArchive, secondArchive]) {
      const imported = await runFerry(["import", a, "--to", t.handle.baseUrl])
      expect(imported.code, imported.stderr).toBe(0)
    }
    for (const a of [firstArchive, secondArchive]) {
      const { run, report: r } = await verifyArchive(a, t.handle.baseUrl, `r-shared-${Path.basename(a)}`)
      // before, the other source's copy of every resource was an extra one: exit 6
      expect(run.code, `${run.stderr}\n${JSON.stringify(r.differences.slice(0, 3))}`).toBe(0)
      expect(r.totals.extra).toBe(0)
      expect(r.notes.some((n) => /carry Ferry's provenance tag of another source/.test(n))).toBe(true)
      const patients = r.types.find((x) => x.type === "Patient")
      expect(patients?.targetCount).toBe(patients?.sourceCount)
      expect(patients?.otherSources).toBe(patients?.sourceCount)
    }
    // what no source accounts for is still extra: a Patient without Ferry's tag, and one with this source's
    const origin = JSON.parse(
      NFS.readFileSync(
        Path.join(
          firstArchive,
          "imports",
          NFS.readdirSync(Path.join(firstArchive, "imports"))[0]!,
          "journal.ndjson",
        ),
        "utf8",
      )
        .split("\n")
        .find((l) => l.includes('"import.provenance"'))!,
    ).data.origin as string
    t.handle.store.create({ resourceType: "Patient", gender: "other" })
    t.handle.store.create({
      resourceType: "Patient",
      meta: { tag: [{ system: "urn:ferry:source", code: `Patient/stray@${origin}` }] },
    })
    const strays = await verifyArchive(firstArchive, t.handle.baseUrl, "r-shared-strays")
    expect(strays.run.code).toBe(6)
    expect(strays.report.totals.extra).toBe(2)
  }, 180_000)

  it("--sample says so in the reports and on stdout", async () => {
    const t = await target()
    const report = Path.join(tmp, "r-sample")
    const run = await verifyServers(t, report, "--sample", "40%")
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toContain("sampled 40%")
    expect(readReport(report).sample).toEqual({ percent: 40 })
    expect(NFS.readFileSync(Path.join(report, "verify.html"), "utf8")).toContain("Sampled: 40%")
  }, 60_000)

  it("a changed archive or an unfinished one proves nothing: exit 4, one line saying so, no CLEAN", async () => {
    const t = await target()
    const changed = Path.join(tmp, "changed-archive")
    NFS.cpSync(archive, changed, { recursive: true })
    const data = NFS.readdirSync(Path.join(changed, "data")).find((f) => f.startsWith("Patient."))!
    const file = Path.join(changed, "data", data)
    NFS.writeFileSync(
      file,
      NFS.readFileSync(file, "utf8").replace(/"gender":"(male|female)"/, '"gender":"other"'),
    )
    const verifyArchive = (dir: string, report: string) =>
      runFerry(["verify", "--archive", dir, "--target", t.handle.baseUrl, "--report", Path.join(tmp, report)])
    const run = await verifyArchive(changed, "r-changed")
    expect(run.code, run.stderr).toBe(4)
    expect(run.stdout).not.toContain("CLEAN")
    expect(lastLine(run.stderr)).toMatch(
      new RegExp(
        `the archive was changed or damaged: data/${data.replace(/\./g, "\\.")} does not hold the bytes the export recorded`,
      ),
    )

    // a manifest with an entry taken out (its file and checksum line still there), and a file added by hand: no
    // reader would see their resources, so the archive proves nothing either; import refuses it too (exit 5)
    const dropped = Path.join(tmp, "dropped-archive")
    NFS.cpSync(archive, dropped, { recursive: true })
    const droppedManifest = Path.join(dropped, "manifest.json")
    const m = JSON.parse(NFS.readFileSync(droppedManifest, "utf8")) as { files: Array<{ path: string }> }
    const gone = m.files.find((f) => f.path.startsWith("data/Condition."))!.path
    NFS.writeFileSync(
      droppedManifest,
      JSON.stringify({ ...m, files: m.files.filter((f) => f.path !== gone) }),
    )
    const run4 = await verifyArchive(dropped, "r-dropped")
    expect(run4.code, run4.stderr).toBe(4)
    expect(lastLine(run4.stderr)).toContain(
      `the archive was changed or damaged: ${gone} is not in manifest.json (a file added by hand, or an entry removed from the manifest)`,
    )
    const imported = await runFerry(["import", dropped, "--to", t.handle.baseUrl])
    expect(imported.code, imported.stderr).toBe(5)
    expect(lastLine(imported.stderr)).toContain(`${gone} is not in manifest.json`)
    const added = Path.join(tmp, "added-archive")
    NFS.cpSync(archive, added, { recursive: true })
    NFS.copyFileSync(file, Path.join(added, "data", "Patient.999.ndjson"))
    const run5 = await verifyArchive(added, "r-added")
    expect(run5.code, run5.stderr).toBe(4)
    expect(lastLine(run5.stderr)).toContain("data/Patient.999.ndjson is not in manifest.json")

    const unfinished = Path.join(tmp, "unfinished-archive")
    NFS.cpSync(archive, unfinished, { recursive: true })
    const manifestPath = Path.join(unfinished, "manifest.json")
    NFS.writeFileSync(
      manifestPath,
      JSON.stringify({ ...JSON.parse(NFS.readFileSync(manifestPath, "utf8")), complete: false }),
    )
    const run2 = await verifyArchive(unfinished, "r-unfinished")
    expect(run2.code, run2.stderr).toBe(4)
    expect(run2.stdout).not.toContain("CLEAN")
    expect(lastLine(run2.stderr)).toContain("is not a complete archive (its export did not finish)")
    expect(lastLine(run2.stderr)).toContain("run the same ferry export again to finish it")
    // a migration's archive (its ledger beside the import): the command to run again is the migrate
    const ledger = Path.join(unfinished, "imports", "127.0.0.1_1_fhir")
    NFS.mkdirSync(ledger, { recursive: true })
    NFS.writeFileSync(Path.join(ledger, "migrate.ndjson"), "")
    const run3 = await verifyArchive(unfinished, "r-unfinished-migrate")
    expect(run3.code, run3.stderr).toBe(4)
    expect(lastLine(run3.stderr)).toContain("run the same ferry migrate again to finish it")
  }, 60_000)

  it("a SMART-protected source: --source-auth smart with its client and key, clean; without them exit 3", async () => {
    const client = smartTestClient(tmp, "ferry-verify-source")
    const protectedSource = await startSandbox({ seed, auth: { clients: [client.registration] } })
    sandboxes.push(protectedSource)
    const t = await target()
    const args = ["verify", "--source", protectedSource.handle.baseUrl, "--target", t.handle.baseUrl]
    const report = Path.join(tmp, "r-smart")
    const run = await runFerry([
      ...args,
      "--type",
      types,
      "--report",
      report,
      "--source-auth",
      "smart",
      "--source-client-id",
      client.clientId,
      "--source-key",
      client.keyFile,
    ])
    expect(run.code, run.stderr).toBe(0)
    expect(readReport(report).verdict).toBe("clean")
    expect(readReport(report).totals.compared).toBeGreaterThan(1000)
    const refused = await runFerry([...args, "--type", "Patient", "--report", Path.join(tmp, "r-smart-none")])
    expect(refused.code).toBe(3)
  }, 60_000)

  it("usage errors exit 2", async () => {
    const both = await runFerry([
      "verify",
      "--source",
      "http://127.0.0.1:1/fhir",
      "--archive",
      archive,
      "--target",
      "http://127.0.0.1:1/fhir",
    ])
    expect(both.code).toBe(2)
    expect(lastLine(both.stderr)).toContain("exactly one of --source")
    const badSample = await runFerry([
      "verify",
      "--archive",
      archive,
      "--target",
      "http://127.0.0.1:1/fhir",
      "--sample",
      "250%",
    ])
    expect(badSample.code).toBe(2)
  }, 30_000)
})
