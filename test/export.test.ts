/**
 * `ferry export` end to end: the bundled CLI as a process against sandboxes started in this process.
 * Needs `npm run build` first.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { createHash, generateKeyPairSync, randomUUID, sign } from "node:crypto"
import * as NFS from "node:fs"
import { gunzipSync } from "node:zlib"
import * as Http from "node:http"
import type * as Net from "node:net"
import * as OS from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import * as Attachments from "@ferry/archive/Attachments"
import * as Sandbox from "@ferry/sandbox/Sandbox"
import { Effect, Exit, Scope, Stream } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ferryBin, freePort, lastLine, putDeadLinkDocuments } from "./helpers/ferry.js"

const data = (name: string) => fileURLToPath(new URL(`../../shared/data/${name}`, import.meta.url))

interface Run {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs the CLI; `onStderr` may kill it (returns the child). */
const ferry = (
  args: ReadonlyArray<string>,
  onStderr?: (text: string, child: ChildProcess) => void,
  env: Record<string, string> = {},
): Promise<Run> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [ferryBin, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...env },
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString()
    })
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString()
      onStderr?.(stderr, child)
    })
    child.on("error", reject)
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }))
  })

const scopes: Array<Scope.CloseableScope> = []
const start = async (config: unknown, plugins?: ReadonlyArray<Sandbox.Plugin>) => {
  const scope = await Effect.runPromise(Scope.make())
  scopes.push(scope)
  return Effect.runPromise(
    Sandbox.start(config as never, plugins ? { plugins } : {}).pipe(Scope.extend(scope)),
  )
}
afterAll(async () => {
  for (const s of scopes) await Effect.runPromise(Scope.close(s, Exit.void))
})

const tmp = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-export-e2e-"))
afterAll(() => NFS.rmSync(tmp, { recursive: true, force: true }))

const dataLines = (out: string): Array<string> =>
  NFS.readdirSync(Path.join(out, "data"))
    .filter((f) => f.endsWith(".ndjson"))
    .flatMap((f) => NFS.readFileSync(Path.join(out, "data", f), "utf8").split("\n"))
    .filter((l) => l !== "")
    .sort()

/** `ferry export <base> --out <out> …more`. */
const exportOf = (base: string, out: string, ...more: ReadonlyArray<string>) => [
  "export",
  base,
  "--out",
  out,
  ...more,
]

const eventsOf = (out: string): Array<{ event: string; [k: string]: unknown }> =>
  NFS.readFileSync(Path.join(out, "events.ndjson"), "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as { event: string })

/** Every file below `dir` (relative path → bytes). */
const filesUnder = (dir: string): Map<string, Buffer> => {
  const found = new Map<string, Buffer>()
  const walk = (sub: string) => {
    for (const entry of NFS.readdirSync(Path.join(dir, sub), { withFileTypes: true })) {
      const rel = Path.join(sub, entry.name)
      if (entry.isDirectory()) walk(rel)
      else found.set(rel, NFS.readFileSync(Path.join(dir, rel)))
    }
  }
  if (NFS.existsSync(dir)) walk("")
  return found
}

/**
 * Two archives of the same server hold the same content byte for byte: the same data, deleted and error
 * files, the same attachment blobs and index, the same file list in the manifest (paths, counts, sha256) and
 * the same `checksums.sha256` lines for them. (The journal, the event log and the manifest's times differ.)
 */
const expectSameArchive = (out: string, reference: string) => {
  for (const dir of ["data", "deleted", "errors", "attachments"]) {
    const a = filesUnder(Path.join(out, dir))
    const b = filesUnder(Path.join(reference, dir))
    expect([...a.keys()].sort(), dir).toEqual([...b.keys()].sort())
    for (const [name, bytes] of a) expect(bytes.equals(b.get(name)!), `${dir}/${name}`).toBe(true)
  }
  const listed = (dir: string) =>
    (
      JSON.parse(NFS.readFileSync(Path.join(dir, "manifest.json"), "utf8")).files as Array<{
        path: string
        count: number
        sha256: string
      }>
    )
      .map((f) => `${f.path} ${f.count} ${f.sha256}`)
      .sort()
  expect(listed(out)).toEqual(listed(reference))
  const sums = (dir: string) =>
    NFS.readFileSync(Path.join(dir, "checksums.sha256"), "utf8")
      .split("\n")
      .filter((l) => / (data|deleted|errors|attachments)\//.test(l))
      .sort()
  expect(sums(out).length).toBeGreaterThan(0)
  expect(sums(out)).toEqual(sums(reference))
}

const setFaults = async (baseUrl: string, faults: unknown) => {
  const r = await fetch(`${baseUrl}/_sandbox/faults`, { method: "PUT", body: JSON.stringify(faults) })
  expect(r.status).toBe(204)
}

describe("ferry export of a URL where no FHIR server answers", () => {
  it("a login page (200, HTML) everywhere: the last line says the URL is likely no FHIR server's base, exit 4", async () => {
    const server = Http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" }).end("<html><body>Please sign in</body></html>")
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const baseUrl = `http://127.0.0.1:${(server.address() as Net.AddressInfo).port}/fhir`
    try {
      const run = await ferry(["export", baseUrl, "--out", Path.join(tmp, "login-page")])
      expect(run.code, run.stderr).toBe(4)
      const last = lastLine(run.stderr)
      expect(last).toContain(
        "the kick-off answered 200 without a Content-Location header, and its CapabilityStatement could not be read either",
      )
      expect(last).toContain(`check that ${baseUrl} is the base URL of a FHIR server`)
    } finally {
      server.close()
    }
  })
})

describe("ferry export (Synthea + attachments, no auth)", () => {
  let sandbox: Sandbox.SandboxHandle
  const full = Path.join(tmp, "full")
  beforeAll(async () => {
    sandbox = await start({
      seed: [data("synthea-bundles"), data("attachments")],
      bulk: { resourcesPerFile: 5000 },
    })
  }, 120_000)

  it("system level: every resource, counts per type equal the sandbox's, sha256 match, attachments verified", async () => {
    const run = await ferry(exportOf(sandbox.baseUrl, full, "--json"))
    expect(run.stderr).toContain("done:")
    expect(run.code).toBe(0)
    const summary = JSON.parse(run.stdout) as {
      resources: number
      types: Record<string, { resources: number }>
      attachments: { fetched: number }
      files: Array<{ path: string; sha256: string }>
    }
    const expected: Record<string, number> = {}
    for (const t of sandbox.store.types())
      if (sandbox.store.count(t) > 0) expected[t] = sandbox.store.count(t)
    expect(Object.fromEntries(Object.entries(summary.types).map(([t, s]) => [t, s.resources]))).toEqual(
      expected,
    )
    // 38,473 Synthea resources + 3 Binary and 3 DocumentReference for the attachments.
    expect(summary.resources).toBe(38_479)
    expect(dataLines(full)).toHaveLength(38_479)
    for (const f of summary.files) {
      expect(
        createHash("sha256")
          .update(NFS.readFileSync(Path.join(full, f.path)))
          .digest("hex"),
      ).toBe(f.sha256)
    }
    expect(summary.attachments.fetched).toBe(3)
    for (const name of ["DICOM.jpg", "document.pdf", "portrait-1.jpg"]) {
      const original = NFS.readFileSync(Path.join(data("attachments"), name))
      const sha = createHash("sha256").update(original).digest("hex")
      // (the portrait, 10 kB, is in a pack; the others are files of their own)
      const stored = await Effect.runPromise(Stream.runCollect(Attachments.read(full, sha)))
      expect(Buffer.concat([...stored]).equals(original)).toBe(true)
    }
    expect(NFS.readdirSync(Path.join(full, "attachments", "packs"))).toEqual(["000001.pack"])
    // Plain progress lines on stderr (not a TTY), a JSON summary on stdout: sentences, not event records
    expect(run.stderr).toMatch(/data\/Observation\.000\.ndjson: 5,000 Observation resources/)
    expect(run.stderr).toContain("ferry export: export job started")
    expect(run.stderr).toMatch(/ferry export: the job is done: \d+ files to fetch \(transactionTime /)
    expect(run.stderr).toContain("ferry export: the job is released on the server")
    expect(run.stderr).not.toMatch(/ferry export: [a-z-]+ \{/)
  }, 120_000)

  it("patient and group levels", async () => {
    const patient = await ferry(
      exportOf(
        sandbox.baseUrl,
        Path.join(tmp, "pat"),
        "--level",
        "patient",
        "--type",
        "Patient,Immunization",
        "--json",
      ),
    )
    expect(patient.code).toBe(0)
    const p = JSON.parse(patient.stdout) as { types: Record<string, { resources: number }> }
    expect(p.types.Patient?.resources).toBe(100)
    expect(p.types.Immunization?.resources).toBe(sandbox.store.count("Immunization"))
    const group = await ferry(
      exportOf(
        sandbox.baseUrl,
        Path.join(tmp, "grp"),
        "--level",
        "group",
        "--group",
        "d9f31445-f448-48c0-af57-295c005e07df",
        "--type",
        "Patient",
        "--json",
      ),
    )
    expect(group.code).toBe(0)
    expect((JSON.parse(group.stdout) as { resources: number }).resources).toBe(100)

    // a Group the source does not have: a usage error naming it (not "no group-level export", and no crawl),
    // and the same directory takes the corrected command
    const typo = Path.join(tmp, "grp-typo")
    const groupArgs = (id: string) => [
      "export",
      sandbox.baseUrl,
      "--out",
      typo,
      "--level",
      "group",
      "--group",
      id,
    ]
    for (const mode of [[], ["--mode", "bulk"], ["--mode", "crawl"]]) {
      const wrong = await ferry([...groupArgs("nope"), ...mode])
      expect(wrong.code, wrong.stderr).toBe(2)
      expect(wrong.stderr.trim().split("\n").at(-1)).toMatch(
        /^ferry: http:\/\/127\.0\.0\.1:\d+\/fhir\/Group\/nope: the source has no Group\/nope \(404\); give the id of one of its Groups with --group$/,
      )
    }
    const fixed = await ferry([...groupArgs("d9f31445-f448-48c0-af57-295c005e07df"), "--type", "Patient"])
    expect(fixed.code, fixed.stderr).toBe(0)

    // a patient the source does not have: a usage error naming the ids (it was the server's 400, exit 4)
    const nobody = await ferry(
      exportOf(
        sandbox.baseUrl,
        Path.join(tmp, "pat-nobody"),
        "--level",
        "patient",
        "--patient",
        "nobody-here",
      ),
    )
    expect(nobody.code, nobody.stderr).toBe(2)
    expect(nobody.stderr.trim().split("\n").at(-1)).toMatch(
      /^ferry: http:\/\/127\.0\.0\.1:\d+\/fhir\/Patient\/\$export: the server refused the kick-off \(400: .*\); check the --patient ids \(nobody-here\): each must name a Patient on the source$/,
    )
  }, 120_000)

  it("one patient's record for that person (GDPR): ferry summary writes README.html, the documents as files, the data, SHA256SUMS", async () => {
    // the patient the seeder gave DICOM.jpg to
    const doc = [...sandbox.store.iterate("DocumentReference")]
      .map((r) => JSON.parse(r.json) as { description?: string; subject?: { reference: string } })
      .find((d) => d.description === "DICOM.jpg")!
    const patientId = doc.subject!.reference.replace("Patient/", "")
    const patient = JSON.parse(sandbox.store.read("Patient", patientId)!.json) as {
      name: Array<{ given: Array<string>; family: string }>
    }
    const name = `${patient.name[0]!.given.join(" ")} ${patient.name[0]!.family}`
    const archive = Path.join(tmp, "gdpr")
    const exported = await ferry(
      exportOf(sandbox.baseUrl, archive, "--level", "patient", "--patient", patientId),
    )
    expect(exported.code, exported.stderr).toBe(0)
    const out = Path.join(tmp, "gdpr-person")
    const run = await ferry(["summary", archive, "--out", out, "--json"])
    expect(run.code, run.stderr).toBe(0)
    const result = JSON.parse(run.stdout) as {
      people: Array<{ id: string; name: string }>
      files: number
      resources: number
    }
    expect(result.people).toEqual([{ id: patientId, name }])
    expect(result.files).toBe(1)
    // stderr (logs) names the person by id, never by name
    expect(run.stderr).toContain(`ferry summary: wrote ${out}: the record of Patient/${patientId} (`)
    expect(run.stderr).not.toContain(patient.name[0]!.family)
    // the cohort Group lists the 99 other patients: someone else's data, left out (and said so)
    expect(run.stderr).toMatch(
      /ferry summary: left out 1 resource that also names Patients who are not this record's \(someone else's data\): Group\/[^ ]+ \(99 others\); --include-others keeps them/,
    )
    expect(NFS.readdirSync(out).sort()).toEqual(["README.html", "SHA256SUMS", "data", "files"])
    const original = NFS.readFileSync(Path.join(data("attachments"), "DICOM.jpg"))
    expect(NFS.readdirSync(Path.join(out, "files"))).toEqual(["01 DICOM.jpg"])
    expect(NFS.readFileSync(Path.join(out, "files", "01 DICOM.jpg")).equals(original)).toBe(true)
    const page = NFS.readFileSync(Path.join(out, "README.html"), "utf8")
    expect(page).toContain(`<h1>Health record of ${name}</h1>`)
    expect(page).toContain('<a href="files/01%20DICOM.jpg">01 DICOM.jpg</a>')
    const conditions = dataLines(archive).filter((l) => l.includes('"resourceType":"Condition"')).length
    expect(conditions).toBeGreaterThan(0)
    expect(page).toContain(`<h3>Health problems and diagnoses (${conditions})</h3>`)
    // the data as the archive holds it, every file listed in SHA256SUMS with its sha256, modes 0600 / 0700
    const group = dataLines(archive).filter((l) => l.includes('"resourceType":"Group"'))
    expect(group).toHaveLength(1)
    expect(dataLines(out).sort()).toEqual(
      dataLines(archive)
        .filter((l) => l !== group[0])
        .sort(),
    )
    expect(page).toContain(
      "<p>1 record that also concerns other people was left out, to protect their privacy.</p>",
    )
    expect(NFS.existsSync(Path.join(out, "data", "Group.000.ndjson"))).toBe(false)
    // asked for, it is kept, with a warning
    const withOthers = await ferry([
      "summary",
      archive,
      "--out",
      Path.join(tmp, "gdpr-others"),
      "--include-others",
    ])
    expect(withOthers.code, withOthers.stderr).toBe(0)
    expect(withOthers.stderr).toMatch(
      /warning: 1 resource kept \(--include-others\) also names Patients who are not this record's: Group\//,
    )
    expect(dataLines(Path.join(tmp, "gdpr-others")).sort()).toEqual(dataLines(archive).sort())
    const rows = NFS.readFileSync(Path.join(out, "SHA256SUMS"), "utf8").trim().split("\n")
    const listed = rows.map((r) => r.slice(66))
    const files = NFS.readdirSync(out, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile() && e.name !== "SHA256SUMS")
      .map((e) => Path.relative(out, Path.join(e.parentPath, e.name)))
    expect(listed.sort()).toEqual(files.sort())
    for (const r of rows)
      expect(
        createHash("sha256")
          .update(NFS.readFileSync(Path.join(out, r.slice(66))))
          .digest("hex"),
      ).toBe(r.slice(0, 64))
    for (const e of NFS.readdirSync(out, { recursive: true, withFileTypes: true }))
      expect(NFS.statSync(Path.join(e.parentPath, e.name)).mode & 0o777).toBe(e.isDirectory() ? 0o700 : 0o600)
    expect(NFS.statSync(out).mode & 0o777).toBe(0o700)

    // again into the same folder: refused (exit 2), the folder as it was
    const again = await ferry(["summary", archive, "--out", out])
    expect(again.code).toBe(2)
    expect(lastLine(again.stderr)).toBe(
      `ferry: ${out} already exists; choose another --out (ferry summary does not write over a folder)`,
    )
    // a <out>.part this command did not leave: not removed (exit 2)
    const mine = Path.join(tmp, "gdpr-mine")
    NFS.mkdirSync(`${mine}.part`)
    NFS.writeFileSync(Path.join(`${mine}.part`, "notes.txt"), "mine")
    const notOurs = await ferry(["summary", archive, "--out", mine])
    expect(notOurs.code).toBe(2)
    expect(lastLine(notOurs.stderr)).toBe(
      `ferry: ${mine}.part exists and was not left by ferry summary; move it away, or choose another --out`,
    )
    expect(NFS.readFileSync(Path.join(`${mine}.part`, "notes.txt"), "utf8")).toBe("mine")
    // an incremental archive holds what changed, not the whole record (exit 2; refused before any re-hash)
    const delta = Path.join(tmp, "gdpr-delta")
    NFS.cpSync(archive, delta, { recursive: true })
    const deltaManifest = Path.join(delta, "manifest.json")
    const m = JSON.parse(NFS.readFileSync(deltaManifest, "utf8")) as {
      request: { parameters: Record<string, unknown> }
    }
    m.request.parameters._since = "2020-01-01T00:00:00Z"
    NFS.writeFileSync(deltaManifest, JSON.stringify(m))
    const incremental = await ferry(["summary", delta, "--out", Path.join(tmp, "gdpr-delta-out")])
    expect(incremental.code).toBe(2)
    expect(lastLine(incremental.stderr)).toMatch(
      /is an incremental export \(--since\): it holds what changed since then, not the whole record; export again without --since$/,
    )
    // a system-level archive, or a patient-level one of 100 patients, is no one person's record (exit 2)
    const system = await ferry(["summary", full, "--out", Path.join(tmp, "gdpr-system")])
    expect(system.code).toBe(2)
    expect(lastLine(system.stderr)).toMatch(
      /is a system-level export \(resources of every kind, about anyone\), not one person's record; export that person's record with ferry export <url> --level patient --patient <id>/,
    )
    const many = await ferry(["summary", Path.join(tmp, "pat"), "--out", Path.join(tmp, "gdpr-many")])
    expect(many.code).toBe(2)
    expect(lastLine(many.stderr)).toMatch(/holds 100 Patients, and ferry summary is for one person's record/)
    // a blob gone (found as it is read, half-way through the folder): exit 5, and nothing of the folder left
    const blobless = Path.join(tmp, "gdpr-blobless")
    NFS.cpSync(archive, blobless, { recursive: true })
    const sha = createHash("sha256").update(original).digest("hex")
    NFS.rmSync(Path.join(blobless, "attachments", sha.slice(0, 2), sha))
    const partial = Path.join(tmp, "gdpr-partial")
    const noBlob = await ferry(["summary", blobless, "--out", partial])
    expect(noBlob.code, noBlob.stderr).toBe(5)
    expect(lastLine(noBlob.stderr)).toContain(sha)
    expect(NFS.existsSync(partial)).toBe(false)
    expect(NFS.existsSync(`${partial}.part`)).toBe(false)
    // a damaged archive: exit 5, naming the file, and no folder
    const condition = NFS.readdirSync(Path.join(archive, "data")).find((f) => f.startsWith("Condition"))!
    NFS.appendFileSync(Path.join(archive, "data", condition), " ")
    const damaged = await ferry(["summary", archive, "--out", Path.join(tmp, "gdpr-damaged")])
    expect(damaged.code).toBe(5)
    expect(lastLine(damaged.stderr)).toContain(
      `data/${condition} does not hold the bytes the export recorded`,
    )
    expect(NFS.existsSync(Path.join(tmp, "gdpr-damaged"))).toBe(false)
  }, 120_000)

  it("disaster-recovery copy: ferry seal to an X25519 key, ferry unseal with it: the archive back, checked; another key or a damaged copy refused", async () => {
    const key = Path.join(tmp, "seal.jwk")
    const generated = await ferry(["keys", "generate", "--alg", "X25519", "--out", key])
    expect(generated.code, generated.stderr).toBe(0)
    const pub = Path.join(tmp, "seal.pub.jwk")
    NFS.writeFileSync(pub, generated.stdout)
    expect(JSON.parse(generated.stdout)).not.toHaveProperty("d")
    const sealed = Path.join(tmp, "full.sealed")
    const run = await ferry(["seal", full, "--to", pub, "--out", sealed])
    expect(run.code, run.stderr).toBe(0)
    expect(NFS.statSync(sealed).mode & 0o777).toBe(0o600)
    const restored = Path.join(tmp, "full-restored")
    const back = await ferry(["unseal", sealed, "--key", key, "--out", restored])
    expect(back.code, back.stderr).toBe(0)
    const files = (dir: string) =>
      NFS.readdirSync(dir, { recursive: true, withFileTypes: true })
        .filter((e) => e.isFile() && !["journal.ndjson", "events.ndjson", ".lock"].includes(e.name))
        .map((e) => Path.relative(dir, Path.join(e.parentPath, e.name)))
        .sort()
    expect(files(restored)).toEqual(files(full))
    for (const f of files(full))
      expect(NFS.readFileSync(Path.join(restored, f)).equals(NFS.readFileSync(Path.join(full, f))), f).toBe(
        true,
      )
    // a folder that is no archive: exit 2, said as such
    const empty = Path.join(tmp, "not-an-archive")
    NFS.mkdirSync(empty)
    const noArchive = await ferry(["seal", empty, "--to", pub, "--out", Path.join(tmp, "nothing.sealed")])
    expect(noArchive.code).toBe(2)
    expect(lastLine(noArchive.stderr)).toContain("point ferry at a directory created by `ferry export`")
    // another key: exit 2; a damaged copy: exit 5, nothing written
    const other = Path.join(tmp, "other.jwk")
    expect((await ferry(["keys", "generate", "--alg", "X25519", "--out", other])).code).toBe(0)
    const wrong = await ferry(["unseal", sealed, "--key", other, "--out", Path.join(tmp, "wrong")])
    expect(wrong.code).toBe(2)
    expect(lastLine(wrong.stderr)).toMatch(
      /: it was sealed to another key \(.+\) than this one \(.+\); give the private key it was sealed to$/,
    )
    const bytes = NFS.readFileSync(sealed)
    bytes[bytes.length >> 1]! ^= 0x40
    const damagedCopy = Path.join(tmp, "damaged.sealed")
    NFS.writeFileSync(damagedCopy, bytes)
    const damaged = await ferry([
      "unseal",
      damagedCopy,
      "--key",
      key,
      "--out",
      Path.join(tmp, "from-damaged"),
    ])
    expect(damaged.code).toBe(5)
    expect(lastLine(damaged.stderr)).toMatch(
      /does not open: the file was changed, cut short or damaged; restore the sealed file from another copy$/,
    )
    expect(NFS.existsSync(Path.join(tmp, "from-damaged"))).toBe(false)
    expect(NFS.existsSync(Path.join(tmp, "from-damaged.part"))).toBe(false)
  }, 120_000)

  it("--allow-partial-manifests: the manifest's parts (link next, 10 files each) are followed, the same data as one manifest", async () => {
    const out = Path.join(tmp, "parts")
    const run = await ferry(exportOf(sandbox.baseUrl, out, "--allow-partial-manifests", "--json"))
    expect(run.code).toBe(0)
    const summary = JSON.parse(run.stdout) as { resources: number; files: Array<{ path: string }> }
    // more files than one part holds (the sandbox's manifestPartSize is 10): every part was read
    expect(summary.files.filter((f) => f.path.startsWith("data/")).length).toBeGreaterThan(20)
    expect(summary.resources).toBe(38_479)
    expect(dataLines(out)).toEqual(dataLines(full))
    expect(NFS.readdirSync(Path.join(out, "data")).sort()).toEqual(
      NFS.readdirSync(Path.join(full, "data")).sort(),
    )
    // the files of part 1 (in the 202 answers, before the job's final manifest) were downloaded before the
    // manifest was complete, and the later parts' files joined them
    const events = eventsOf(out).map((e) => e.event)
    const complete = events.indexOf("manifest")
    expect(events.indexOf("manifest-part")).toBeGreaterThanOrEqual(0)
    expect(events.indexOf("file")).toBeGreaterThan(events.indexOf("manifest-part"))
    expect(events.indexOf("file")).toBeLessThan(complete)
    expect(events.filter((e) => e === "manifest-part").length).toBeGreaterThan(1)
    expect(events.filter((e) => e === "file").length).toBe(summary.files.length)
    // the plain line at the complete manifest counts the files already downloaded
    expect(run.stderr).toMatch(
      new RegExp(`ferry export: ${summary.files.length} files in the manifest, \\d+ downloaded already`),
    )
  }, 120_000)

  /** Faults off, the same export again: it re-attaches to the one job and ends with the uninterrupted data. */
  const rerunResumes = async (out: string, args: ReadonlyArray<string>) => {
    await setFaults(sandbox.baseUrl, {})
    // a kill can tear the event log's last line too: the rerun's events start on a line of their own
    NFS.appendFileSync(Path.join(out, "events.ndjson"), '{"event":"file","sha256":"b1b18d7a')
    const rerun = await ferry(args)
    expect(rerun.code).toBe(0)
    expect(dataLines(out)).toEqual(dataLines(full))
    const events = eventsOf(out)
    expect(events.filter((e) => e.event === "kickoff")).toHaveLength(1)
    expect(events.some((e) => e.event === "reattach")).toBe(true)
    expect(NFS.readdirSync(Path.join(out, "data")).filter((f) => !f.endsWith(".ndjson"))).toEqual([])
  }

  /** `ferry export` (and `extra` flags) with slow downloads, killed (-9) once its first file is in; its args. */
  const killAfterFirstFile = async (out: string, ...extra: Array<string>) => {
    await setFaults(sandbox.baseUrl, { delay: [{ route: "download", ms: 300 }] })
    const args = ["export", sandbox.baseUrl, "--out", out, "--parallel", "2", ...extra]
    const killed = await ferry(args, (text, child) => {
      if (/\.ndjson: \d+/.test(text) && child.exitCode === null) child.kill("SIGKILL")
    })
    expect(killed.signal).toBe("SIGKILL")
    return args
  }
  const killAfterFirstPartialFile = (out: string) => killAfterFirstFile(out, "--allow-partial-manifests")

  /** The export's journal entries in `out`. */
  const journalOf = (out: string) =>
    NFS.readFileSync(Path.join(out, "journal.ndjson"), "utf8")
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => JSON.parse(l) as { key: string; data?: unknown })

  it("a finished file removed between a kill and the rerun is downloaded again; one removed from a finished archive is said, not 'nothing to do'", async () => {
    const out = Path.join(tmp, "removed-file")
    const args = await killAfterFirstFile(out)
    const finished = journalOf(out).flatMap((l) => {
      const path = (l.data as { path?: unknown } | undefined)?.path
      return l.key.startsWith("file:") && typeof path === "string" ? [path] : []
    })
    expect(finished.length).toBeGreaterThan(0)
    NFS.rmSync(Path.join(out, finished[0]!))
    await setFaults(sandbox.baseUrl, {})
    const rerun = await ferry(args)
    expect(rerun.code, rerun.stderr).toBe(0)
    expect(rerun.stderr).toContain(
      `${finished[0]}, finished by an earlier run, is missing or changed since: downloaded again`,
    )
    expect(dataLines(out)).toEqual(dataLines(full))
    // the finished archive: a file removed now cannot come from the job again
    NFS.rmSync(Path.join(out, finished[0]!))
    const after = await ferry(args)
    expect(after.code).toBe(5)
    expect(lastLine(after.stderr)).toContain(
      `this finished archive's ${finished[0]} is missing or changed since (its manifest records`,
    )
  }, 120_000)

  it("--allow-partial-manifests: kill -9 while the first part's files download, then a rerun: the same data, one kick-off", async () => {
    const out = Path.join(tmp, "parts-killed")
    const args = await killAfterFirstPartialFile(out)
    // killed before the manifest was complete: only the partial manifest's downloads had started
    expect(eventsOf(out).some((e) => e.event === "manifest")).toBe(false)
    await rerunResumes(out, args)
  }, 120_000)

  it("--allow-partial-manifests: a killed run's job vanishes before the rerun: a new job, and none of the old job's files stands in for the new job's", async () => {
    const out = Path.join(tmp, "parts-gone")
    const args = await killAfterFirstPartialFile(out)
    const journal = journalOf(out)
    const first = journal.find((l) => l.key === "transactionTime")?.data
    expect(typeof first).toBe("string")
    const before = journal.filter((l) => l.key.startsWith("file:")).length
    expect(before).toBeGreaterThan(0)
    const statusUrl = String(eventsOf(out).find((e) => e.event === "kickoff")?.statusUrl)
    expect((await fetch(statusUrl, { method: "DELETE" })).status).toBe(202)
    await setFaults(sandbox.baseUrl, {})
    const rerun = await ferry([...args, "--json"])
    expect(rerun.code, rerun.stderr).toBe(0)
    expect(dataLines(out)).toEqual(dataLines(full))
    const events = eventsOf(out)
    const gone = events.findIndex((e) => e.event === "job-gone")
    expect(gone).toBeGreaterThan(0)
    expect(events.filter((e) => e.event === "kickoff")).toHaveLength(2)
    // the first job's files were dropped: every file of the archive was downloaded from the new job
    expect(events.find((e) => e.event === "early-dropped")?.files).toBe(before)
    // the stale lock of the killed run is taken over with a warning, on stderr: stdout is the JSON summary
    expect(rerun.stderr).toContain("taking over a stale lock: pid")
    const summary = JSON.parse(rerun.stdout) as { files: Array<unknown> }
    expect(events.slice(gone).filter((e) => e.event === "file")).toHaveLength(summary.files.length)
    const transactionTime = JSON.parse(
      NFS.readFileSync(Path.join(out, "manifest.json"), "utf8"),
    ).transactionTime
    expect(transactionTime > String(first)).toBe(true)
    expect(NFS.readdirSync(Path.join(out, "data")).filter((f) => !f.endsWith(".ndjson"))).toEqual([])
  }, 120_000)

  it("usage errors: one line and exit code 2", async () => {
    const run = await ferry(exportOf(sandbox.baseUrl, Path.join(tmp, "usage"), "--level", "group"))
    expect(run.code).toBe(2)
    expect(run.stderr.trim().split("\n").at(-1)).toMatch(/^ferry: .*--group/)
    // a flag @effect/cli cannot read: its message in Ferry's one line, said once; with --json, the result too
    const noOut = await ferry(["export", sandbox.baseUrl, "--json"])
    expect(noOut.code).toBe(2)
    expect(noOut.stderr.trim()).toBe(
      "ferry: the command line could not be read (Expected to find option: '--out'); ferry export --help lists the flags and the values they take",
    )
    expect(JSON.parse(noOut.stdout)).toEqual({
      ok: false,
      exitCode: 2,
      error:
        "the command line could not be read (Expected to find option: '--out'); ferry export --help lists the flags and the values they take",
    })
    const bad = await ferry(exportOf(sandbox.baseUrl, Path.join(tmp, "usage2"), "--timeout", "soon"))
    expect(bad.code).toBe(2)
    // Parameters the server would only have answered with an empty archive or a 400: refused before kick-off.
    for (const [flag, value, said] of [
      ["--type", "Patient,Patinet", "--type Patinet is not an R4 resource type (did you mean Patient?)"],
      ["--since", "yesterday", "--since yesterday is not a FHIR instant"],
      ["--until", "2020-13-45T00:00:00Z", "--until 2020-13-45T00:00:00Z is not a FHIR instant"],
      ["--type-filter", "status=final", "--type-filter status=final is not a search of an R4 resource type"],
      ["--group", "g1", "--group is for --level group (this is --level system)"],
      ["--request-timeout", "soon", "--request-timeout soon is not a duration; use e.g. 30s or 5m"],
      ["--request-timeout", "0.5", "--request-timeout 0.5 is below one second"],
    ] as const) {
      const refused = await ferry(exportOf(sandbox.baseUrl, Path.join(tmp, "usage-params"), flag, value))
      expect(refused.code, refused.stderr).toBe(2)
      expect(refused.stderr.trim().split("\n").at(-1)).toContain(said)
    }
    expect(NFS.existsSync(Path.join(tmp, "usage-params"))).toBe(false)
    // A password in a base URL would be printed and stored: refused, and not echoed.
    const withPassword = sandbox.baseUrl.replace("http://", "http://alice:S3cretPw@")
    for (const args of [
      ["export", withPassword, "--out", Path.join(tmp, "usage3")],
      ["import", tmp, "--to", withPassword],
      ["verify", "--target", withPassword, "--archive", tmp],
    ]) {
      const refused = await ferry(args)
      expect(refused.code, refused.stderr).toBe(2)
      expect(refused.stderr.trim().split("\n").at(-1)).toMatch(/^ferry: .*holds a user name or password/)
      expect(refused.stderr + refused.stdout).not.toContain("S3cretPw")
    }
    expect(NFS.existsSync(Path.join(tmp, "usage3"))).toBe(false)
  })

  it("kill -9 while a file's body is half written, then a plain rerun: that file resumed by Range, one kick-off, an archive byte-identical to an uninterrupted export", async () => {
    // an uninterrupted export made here (not another test's), then the killed one
    await setFaults(sandbox.baseUrl, {})
    const uninterrupted = Path.join(tmp, "uninterrupted")
    const whole = await ferry(["export", sandbox.baseUrl, "--out", uninterrupted, "--parallel", "2"])
    expect(whole.code, whole.stderr).toBe(0)

    const out = Path.join(tmp, "killed")
    const dataDir = Path.join(out, "data")
    /**
     * Observation downloads holding 100 kB or more: a body being written, or one the reset below cut off (its
     * retry held back 400 ms), whose complete lines a rerun must keep.
     */
    const halfWritten = () =>
      NFS.existsSync(dataDir)
        ? NFS.readdirSync(dataDir).filter(
            (f) =>
              /^Observation\.\d+\.ndjson\.partial$/.test(f) &&
              (NFS.statSync(Path.join(dataDir, f), { throwIfNoEntry: false })?.size ?? 0) >= 100_000,
          )
        : []
    await setFaults(sandbox.baseUrl, {
      resetDownload: { afterBytes: 200_000, attempts: 1, type: "Observation" },
      delay: [{ route: "download", ms: 400 }],
    })
    let watch: NodeJS.Timeout | undefined
    const killed = await ferry(
      ["export", sandbox.baseUrl, "--out", out, "--parallel", "2"],
      (_text, child) => {
        watch ??= setInterval(() => {
          if (child.exitCode === null && child.signalCode === null && halfWritten().length > 0)
            child.kill("SIGKILL")
        }, 5)
      },
    )
    clearInterval(watch)
    expect(killed.signal, killed.stderr).toBe("SIGKILL")
    expect(JSON.parse(NFS.readFileSync(Path.join(out, "manifest.json"), "utf8")).complete).toBe(false)
    const partial = halfWritten()[0]
    expect(partial).toBeDefined()

    await setFaults(sandbox.baseUrl, {})
    const started = eventsOf(out).length
    const rerun = await ferry(["export", sandbox.baseUrl, "--out", out])
    expect(rerun.code, rerun.stderr).toBe(0)
    const events = eventsOf(out)
    expect(events.filter((e) => e.event === "kickoff")).toHaveLength(1)
    expect(events.some((e) => e.event === "reattach")).toBe(true)
    // the half-written file went on from its bytes on disk (a Range request), not from the start
    const resumed = events.slice(started).filter((e) => e.event === "resume") as unknown as Array<{
      file: string
      offset: number
    }>
    const file = `data/${partial!.replace(/\.partial$/, "")}`
    expect(resumed.map((r) => r.file)).toContain(file)
    expect(resumed.find((r) => r.file === file)?.offset).toBeGreaterThan(0)
    expectSameArchive(out, uninterrupted)
  }, 180_000)

  it("kill -9 during downloads, the server's job deleted before the rerun: the rerun starts a new job and completes", async () => {
    const out = Path.join(tmp, "killed-job-gone")
    const args = await killAfterFirstFile(out)
    // the manifest came (files were downloading): the rerun goes straight to the files, which are gone now
    expect(eventsOf(out).some((e) => e.event === "manifest")).toBe(true)
    const statusUrl = String(eventsOf(out).find((e) => e.event === "kickoff")?.statusUrl)
    expect((await fetch(statusUrl, { method: "DELETE" })).status).toBe(202)
    await setFaults(sandbox.baseUrl, {})
    const rerun = await ferry(args)
    expect(rerun.code, rerun.stderr).toBe(0)
    expect(dataLines(out)).toEqual(dataLines(full))
    const events = eventsOf(out)
    expect(events.filter((e) => e.event === "kickoff")).toHaveLength(2)
    expect(events.some((e) => e.event === "expired")).toBe(true)
  }, 180_000)

  it("kill -9 after the attachments, then a rerun with --gzip: no plain partial download left behind, the archive's attachments counted", async () => {
    const out = Path.join(tmp, "killed-regzipped")
    // the Claim files break off after 100 kB, four times each: a partial download of one is on disk for a while
    await setFaults(sandbox.baseUrl, { resetDownload: { afterBytes: 100_000, attempts: 4, type: "Claim" } })
    const partials = () =>
      NFS.existsSync(Path.join(out, "data"))
        ? NFS.readdirSync(Path.join(out, "data")).filter((f) => f.endsWith(".partial"))
        : []
    let fetched = false
    const killed = await ferry(
      ["export", sandbox.baseUrl, "--out", out, "--parallel", "2"],
      (text, child) => {
        fetched ||= /DocumentReference\.000\.ndjson: 3 attachments fetched/.test(text)
        if (fetched && child.exitCode === null && partials().length > 0) child.kill("SIGKILL")
      },
    )
    expect(killed.signal).toBe("SIGKILL")
    expect(partials().length).toBeGreaterThan(0)
    // a kill between a file's rename and its journal line leaves a finished file no journal knows: the rerun
    // writes its resources as .ndjson.gz, and the plain one must not stay unlisted beside it
    const unjournaled = Path.join(out, "data", partials()[0]!.replace(/\.partial$/, ""))
    NFS.writeFileSync(unjournaled, '{"resourceType":"Claim","id":"left-by-a-killed-run"}\n')
    await setFaults(sandbox.baseUrl, {})
    const rerun = await ferry(exportOf(sandbox.baseUrl, out, "--gzip"))
    expect(rerun.code, rerun.stderr).toBe(0)
    // the killed run's plain downloads were not continued (their names end in .ndjson, not .ndjson.gz)
    expect(partials()).toEqual([])
    const lines = NFS.readdirSync(Path.join(out, "data"))
      .filter((f) => f.endsWith(".ndjson") || f.endsWith(".ndjson.gz"))
      .flatMap((f) => {
        const bytes = NFS.readFileSync(Path.join(out, "data", f))
        return (f.endsWith(".gz") ? gunzipSync(bytes) : bytes).toString("utf8").split("\n")
      })
      .filter((l) => l !== "")
      .sort()
    expect(lines).toEqual(dataLines(full))
    expect(NFS.existsSync(unjournaled)).toBe(false)
    // the killed run fetched the 3 attachments: the rerun's summary counts the archive's, as it does its resources
    expect(rerun.stderr).toMatch(/done: 38,479 resources in \d+ files, [\d.]+ MB, 3 attachments/)
    // an archive found complete (an earlier version left a partial in it): the partial goes; the JSON summary
    // counts the archive's attachments apart from this run's
    NFS.writeFileSync(Path.join(out, "data", "Patient.000.ndjson.partial"), '{"resourceType":"Patient"}\n')
    const again = await ferry(exportOf(sandbox.baseUrl, out, "--gzip", "--json"))
    expect(again.code, again.stderr).toBe(0)
    expect(partials()).toEqual([])
    const summary = JSON.parse(again.stdout) as { attachments: { total: number; fetched: number } }
    expect(summary.attachments).toMatchObject({ total: 3, fetched: 0 })
  }, 120_000)

  it("Ctrl-C (SIGINT): exit code 130, the job is kept, and the rerun finishes it", async () => {
    const out = Path.join(tmp, "sigint")
    const types = ["Patient", "Encounter", "Condition", "Procedure"]
    await setFaults(sandbox.baseUrl, { delay: [{ route: "download", ms: 500 }] })
    let sent = false
    const interrupted = await ferry(
      ["export", sandbox.baseUrl, "--out", out, "--type", types.join(","), "--parallel", "1"],
      (text, child) => {
        if (!sent && /\.ndjson: \d+/.test(text)) {
          sent = true
          child.kill("SIGINT")
        }
      },
    )
    await setFaults(sandbox.baseUrl, {})
    expect(interrupted.code).toBe(130)
    expect(interrupted.stderr.trim().split("\n").at(-1)).toMatch(
      /^ferry: export interrupted; run the same command again/,
    )
    expect(eventsOf(out).some((e) => e.event === "interrupted")).toBe(true)
    expect(eventsOf(out).some((e) => e.event === "released")).toBe(false)
    const rerun = await ferry(exportOf(sandbox.baseUrl, out, "--type", types.join(","), "--json"))
    expect(rerun.code).toBe(0)
    const summary = JSON.parse(rerun.stdout) as {
      types: Record<string, { resources: number }>
      released: boolean
    }
    for (const t of types) expect(summary.types[t]?.resources).toBe(sandbox.store.count(t))
    expect(summary.released).toBe(true)
    expect(eventsOf(out).filter((e) => e.event === "kickoff")).toHaveLength(1)
    // A complete archive without its checksums: this Ferry wrote them before it marked the archive complete, so
    // they were lost since, and a rerun does not vouch for the manifest and index as they are now (exit 5) ...
    const checksums = NFS.readFileSync(Path.join(out, "checksums.sha256"), "utf8")
    NFS.rmSync(Path.join(out, "checksums.sha256"))
    const lost = await ferry(exportOf(sandbox.baseUrl, out, "--type", types.join(",")))
    expect(lost.code, lost.stderr).toBe(5)
    expect(lost.stderr.trim().split("\n").at(-1)).toContain(
      "this finished archive's checksums.sha256 is missing (it was written before the archive was complete, so it was removed or lost since); restore it from a copy",
    )
    // ... while one an older Ferry (format /2) completed and was killed before it wrote them gets them written, as
    // that format lists them (without the manifest's and the index's rows)
    const manifestPath = Path.join(out, "manifest.json")
    NFS.writeFileSync(
      manifestPath,
      JSON.stringify({ ...JSON.parse(NFS.readFileSync(manifestPath, "utf8")), format: "ferry-archive/2" }),
    )
    const again = await ferry(exportOf(sandbox.baseUrl, out, "--type", types.join(",")))
    expect(again.code, again.stderr).toBe(0)
    expect(NFS.readFileSync(Path.join(out, "checksums.sha256"), "utf8")).toBe(
      checksums
        .split("\n")
        .filter((l) => !/ {2}(manifest\.json|attachments\/index\.ndjson)$/.test(l))
        .join("\n"),
    )
  }, 120_000)
})

describe("ferry export with SMART Backend Services", () => {
  let sandbox: Sandbox.SandboxHandle
  const seen = new Set<string>()
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-384" })
  const kid = "e2e-key-1"
  const privateJwk = { ...privateKey.export({ format: "jwk" }), kid, alg: "ES384", use: "sig" }
  const publicJwk = { ...publicKey.export({ format: "jwk" }), kid, alg: "ES384", use: "sig" }
  const keyFile = Path.join(tmp, "key.jwk")

  beforeAll(async () => {
    NFS.writeFileSync(keyFile, JSON.stringify(privateJwk), { mode: 0o600 })
    const { defaultPlugins } = await import("@ferry/sandbox/Sandbox")
    // Records every Authorization header the server receives (to search the outputs for the tokens).
    const spy: Sandbox.Plugin = (router) =>
      router.use(async (ctx, next) => {
        const h = ctx.req.headers.authorization
        if (typeof h === "string") seen.add(h.replace(/^Bearer\s+/i, ""))
        await next()
      })
    sandbox = await start(
      {
        seed: [data("sample-bulk-10-patients"), data("attachments")],
        auth: { clients: [{ clientId: "ferry-e2e", jwks: { keys: [publicJwk] }, scopes: ["system/*.rs"] }] },
      },
      [spy, ...defaultPlugins],
    )
  }, 120_000)

  /** `ferry export` of the sandbox with SMART Backend Services as client ferry-e2e, signing with `key`. */
  const smartExport = (out: string, key: string) =>
    exportOf(sandbox.baseUrl, out, "--auth", "smart", "--client-id", "ferry-e2e", "--key", key)

  it("exports with a token; no token and no private key in stdout, stderr, events or journal", async () => {
    const out = Path.join(tmp, "smart")
    const run = await ferry([...smartExport(out, keyFile), "--json"])
    expect(run.stderr).toContain("SMART Backend Services")
    expect(run.code).toBe(0)
    const summary = JSON.parse(run.stdout) as { resources: number; attachments: { fetched: number } }
    expect(summary.resources).toBe(7166)
    expect(summary.attachments.fetched).toBe(3)
    expect(seen.size).toBeGreaterThan(0)
    const texts = [
      run.stdout,
      run.stderr,
      ...[
        "events.ndjson",
        "journal.ndjson",
        "manifest.json",
        "attachments/index.ndjson",
        "checksums.sha256",
      ].map((f) => NFS.readFileSync(Path.join(out, f), "utf8")),
    ]
    const secrets = [...seen, String(privateJwk.d)]
    for (const text of texts) for (const secret of secrets) expect(text.includes(secret)).toBe(false)
    expect(secrets.every((s) => s.length >= 20)).toBe(true)
    expect(run.stderr).not.toContain("allow reading only")

    // a token for one type: the server leaves the others out without an error
    const narrowTo = (dir: string, ...extra: ReadonlyArray<string>) =>
      ferry(
        exportOf(
          sandbox.baseUrl,
          Path.join(tmp, dir),
          "--auth",
          "smart",
          "--client-id",
          "ferry-e2e",
          "--key",
          keyFile,
          "--scope",
          "system/Patient.rs",
          ...extra,
        ),
      )
    const narrow = await narrowTo("smart-narrow", "--type", "Patient")
    // the types exported are the ones the token allows: nothing to say
    expect(narrow.code, narrow.stderr).toBe(0)
    expect(narrow.stderr).not.toContain("allow reading only")
    // every type exported with that token: the archive would lack all but Patient, without an error (and a verify
    // of it would be clean): refused at the token, exit 3, with the way out
    const all = await narrowTo("smart-narrow-all")
    expect(all.code, all.stderr).toBe(3)
    expect(lastLine(all.stderr)).toMatch(
      /the token's scopes \("system\/Patient\.rs", asked "system\/Patient\.rs"\) allow reading only Patient: a bulk export would leave every other type out without an error; .*--type Patient\)$/,
    )
    // the same at the Patient level: the compartment's other types would be left out of a "complete" archive
    const compartment = await narrowTo("smart-narrow-patient", "--level", "patient")
    expect(compartment.code, compartment.stderr).toBe(3)
    expect(lastLine(compartment.stderr)).toMatch(
      /allow reading only Patient: a bulk export would leave \d+ of the \d+ types it asks for \(Account, AdverseEvent, AllergyIntolerance, Appointment, …\) out without an error; .*--type Patient\)$/,
    )
    // refused before the kick-off: no job started, no data
    expect(NFS.readdirSync(Path.join(tmp, "smart-narrow-patient", "data"))).toEqual([])
  }, 120_000)

  it("Patient and Group level with a token: the compartments exported, the files fetched with the token, none in the outputs", async () => {
    const patients = NFS.readFileSync(data("sample-bulk-10-patients/Patient.000.ndjson"), "utf8")
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => (JSON.parse(l) as { id: string }).id)
    expect(patients.length).toBeGreaterThan(4)
    sandbox.store.update({
      resourceType: "Group",
      id: "smart-ten",
      type: "person",
      actual: true,
      member: patients.slice(0, 4).map((id) => ({ entity: { reference: `Patient/${id}` } })),
    })
    for (const [dir, level, expected] of [
      ["smart-patient", ["--level", "patient"], sandbox.store.count("Patient")],
      ["smart-group", ["--level", "group", "--group", "smart-ten"], 4],
    ] as const) {
      const out = Path.join(tmp, dir)
      const run = await ferry([...smartExport(out, keyFile), ...level, "--json"])
      expect(run.code, run.stderr).toBe(0)
      const summary = JSON.parse(run.stdout) as { types: Record<string, { resources: number }> }
      expect(summary.types.Patient?.resources, dir).toBe(expected)
      expect(Object.keys(summary.types).length, dir).toBeGreaterThan(3)
      const texts = [
        run.stdout,
        run.stderr,
        ...["events.ndjson", "journal.ndjson", "manifest.json"].map((f) =>
          NFS.readFileSync(Path.join(out, f), "utf8"),
        ),
      ]
      for (const text of texts)
        for (const secret of [...seen, String(privateJwk.d)]) expect(text.includes(secret)).toBe(false)
    }
  }, 120_000)

  it("--auth bearer with a token from the environment; the token never reaches the outputs", async () => {
    // A token obtained elsewhere: sign a client assertion (ES384, JWS by hand) and ask the token endpoint.
    const b64 = (u: unknown) => Buffer.from(JSON.stringify(u)).toString("base64url")
    const tokenUrl = `${sandbox.baseUrl}/auth/token`
    const now = Math.floor(Date.now() / 1000)
    const input = `${b64({ alg: "ES384", kid, typ: "JWT" })}.${b64({ iss: "ferry-e2e", sub: "ferry-e2e", aud: tokenUrl, exp: now + 240, jti: randomUUID() })}`
    const signature = sign("sha384", Buffer.from(input), { key: privateKey, dsaEncoding: "ieee-p1363" })
    const response = await fetch(tokenUrl, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "client_credentials",
        scope: "system/*.rs",
        client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion: `${input}.${signature.toString("base64url")}`,
      }),
    })
    const token = ((await response.json()) as { access_token: string }).access_token
    expect(token.length).toBeGreaterThan(20)
    const out = Path.join(tmp, "bearer")
    const run = await ferry(
      [
        "export",
        sandbox.baseUrl,
        "--out",
        out,
        "--auth",
        "bearer",
        "--bearer-env",
        "FERRY_E2E_TOKEN",
        "--type",
        "Patient",
      ],
      undefined,
      { FERRY_E2E_TOKEN: token },
    )
    expect(run.code).toBe(0)
    for (const text of [
      run.stdout,
      run.stderr,
      NFS.readFileSync(Path.join(out, "events.ndjson"), "utf8"),
      NFS.readFileSync(Path.join(out, "journal.ndjson"), "utf8"),
    ]) {
      expect(text.includes(token)).toBe(false)
    }
  }, 60_000)

  it("a key the server does not know: exit 3 at once, no 'could not read the CapabilityStatement' warning first", async () => {
    const wrongKey = Path.join(tmp, "unregistered.jwk")
    expect((await ferry(["keys", "generate", "--out", wrongKey])).code).toBe(0)
    const out = Path.join(tmp, "wrong-key")
    const run = await ferry(smartExport(out, wrongKey))
    expect(run.code, run.stderr).toBe(3)
    expect(run.stderr).not.toContain("could not read the CapabilityStatement")
    expect(run.stderr.trim().split("\n").at(-1)).toMatch(/^ferry: .*token endpoint/)
  }, 60_000)

  it("without credentials: one line and exit code 3", async () => {
    const run = await ferry(exportOf(sandbox.baseUrl, Path.join(tmp, "noauth"), "--mode", "bulk"))
    expect(run.code).toBe(3)
    expect(run.stderr.trim().split("\n").at(-1)).toMatch(/^ferry: /)
  }, 60_000)
})

describe("ferry export whose archive lock another ferry takes", () => {
  it("stops within a renewal period, exit 5, saying the lock is no longer its own (not 'interrupted, run again')", async () => {
    const sandbox = await start({ generate: 5, faults: { delay: [{ route: "download", ms: 20_000 }] } })
    const out = Path.join(tmp, "lock-taken")
    const lockPath = Path.join(out, ".lock")
    const other = JSON.stringify({ pid: 1, host: "pod-elsewhere", startedAt: "now", renewEvery: 10_000 })
    let taken = false
    const t0 = Date.now()
    const run = await ferry(exportOf(sandbox.baseUrl, out), () => {
      // once the export holds the lock (its files are downloading), another ferry's lock replaces it
      if (!taken && NFS.existsSync(lockPath)) {
        taken = true
        setTimeout(() => NFS.writeFileSync(lockPath, other), 500)
      }
    })
    expect(taken).toBe(true)
    expect(run.code, run.stderr).toBe(5)
    expect(lastLine(run.stderr)).toMatch(
      /the archive's lock at .*\.lock is no longer this process's.*run the command again/,
    )
    expect(run.stderr).not.toContain("run the same command again to resume")
    // one renewal period (10 s), not the 20 s the downloads were held
    expect(Date.now() - t0).toBeLessThan(19_000)
    expect(NFS.readFileSync(lockPath, "utf8")).toBe(other)
  }, 60_000)
})

describe("ferry export with attachments on a host that is down", () => {
  it("fails within seconds (one grace period, not each attachment's retry schedule), exit 4, naming the host", async () => {
    const sandbox = await start({})
    // a port that was free a moment ago: nothing listens there
    const port = await freePort()
    await putDeadLinkDocuments(sandbox.baseUrl, port, 30)
    // URLs in the data on another origin than the source's (or its manifest's file hosts) are not followed unasked
    const refused = await ferry(
      exportOf(sandbox.baseUrl, Path.join(tmp, "refused"), "--type", "DocumentReference"),
    )
    expect(refused.code).toBe(4)
    expect(lastLine(refused.stderr)).toContain(
      `not fetched: http://127.0.0.1:${port} is neither the source's origin nor one its manifest names its files on, and a URL in the data is not followed to other machines unasked; if the source's attachments are kept there, add --attachment-origin http://127.0.0.1:${port} (or --attachment-origin any)`,
    )
    const bad = await ferry(
      exportOf(sandbox.baseUrl, Path.join(tmp, "refused"), "--attachment-origin", "docs.example.org"),
    )
    expect(bad.code).toBe(2)
    expect(lastLine(bad.stderr)).toContain("--attachment-origin docs.example.org is not an http(s) URL")
    const t0 = Date.now()
    const run = await ferry(
      exportOf(
        sandbox.baseUrl,
        Path.join(tmp, "down"),
        "--type",
        "DocumentReference",
        "--attachment-origin",
        `http://127.0.0.1:${port}/fhir`,
      ),
    )
    expect(run.code).toBe(4)
    // 30 attachments × the retry schedule was minutes; one 3 s grace period and the rest at once
    expect(Date.now() - t0).toBeLessThan(20_000)
    const stderr = run.stderr.trim().split("\n")
    const last = stderr.at(-1) ?? ""
    expect(last).toMatch(/^ferry: .*30 attachment\(s\) could not be fetched/)
    expect(last).toContain(`127.0.0.1:${port}`)
    expect(last).toContain("ECONNREFUSED")
    // the first 20 failures one line each, then one line for the rest
    expect(stderr.filter((l) => l.startsWith("ferry export: attachment failed: ")).length).toBe(20)
    expect(stderr.filter((l) => l.includes("more attachments failed: not shown one by one")).length).toBe(1)
    // every failure is in the event log; past the grace period the host is not even asked
    const failed = NFS.readFileSync(Path.join(tmp, "down", "events.ndjson"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { event: string; detail?: string })
      .filter((e) => e.event === "attachment-failed")
    expect(failed.length).toBe(30)
    expect(failed.some((e) => e.detail?.includes("ECONNREFUSED; not sent: nothing at") === true)).toBe(true)
    expect(last).toContain("--allow-missing-attachments")

    // dead links for good: the same command with --allow-missing-attachments finishes the archive without them
    const allowed = await ferry(
      exportOf(
        sandbox.baseUrl,
        Path.join(tmp, "down"),
        "--type",
        "DocumentReference",
        "--allow-missing-attachments",
        "--attachment-origin",
        "any",
        "--json",
      ),
    )
    expect(allowed.code, allowed.stderr).toBe(0)
    const summary = JSON.parse(allowed.stdout) as { resources: number; attachments: { failed: number } }
    expect(summary.resources).toBe(30)
    expect(summary.attachments.failed).toBe(30)
    expect(allowed.stderr).toMatch(
      /30 attachment\(s\) could not be fetched or verified and are not in the archive/,
    )
    const manifest = JSON.parse(NFS.readFileSync(Path.join(tmp, "down", "manifest.json"), "utf8")) as {
      complete: boolean
      attachments: { count: number }
    }
    expect(manifest.complete).toBe(true)
    expect(manifest.attachments.count).toBe(0)
  }, 90_000)
})

describe("ferry export with an attachment host that redirects elsewhere", () => {
  it("a redirect from an allowed attachment origin to another one is not followed (exit 4, the origin named); allowed too, it is", async () => {
    const sandbox = await start({})
    const hits: Array<string> = []
    const elsewhere = Http.createServer((req, res) => {
      hits.push(req.url ?? "")
      res.writeHead(200, { "content-type": "text/plain" }).end(`document ${req.url}`)
    })
    await new Promise<void>((resolve) => elsewhere.listen(0, "127.0.0.1", resolve))
    const to = `http://127.0.0.1:${(elsewhere.address() as { port: number }).port}`
    const allowed = Http.createServer((req, res) => {
      res.writeHead(302, { location: `${to}${req.url ?? "/"}` }).end()
    })
    await new Promise<void>((resolve) => allowed.listen(0, "127.0.0.1", resolve))
    const from = `http://127.0.0.1:${(allowed.address() as { port: number }).port}`
    try {
      await putDeadLinkDocuments(sandbox.baseUrl, Number(new URL(from).port), 2)
      const refused = await ferry(
        exportOf(
          sandbox.baseUrl,
          Path.join(tmp, "redirected"),
          "--type",
          "DocumentReference",
          "--attachment-origin",
          from,
        ),
      )
      expect(refused.code, refused.stderr).toBe(4)
      expect(refused.stderr).toContain(
        `the server redirected it to ${to}, an origin outside those Ferry fetches from here`,
      )
      expect(hits).toEqual([])
      const both = await ferry(
        exportOf(
          sandbox.baseUrl,
          Path.join(tmp, "redirected-allowed"),
          "--type",
          "DocumentReference",
          "--attachment-origin",
          `${from},${to}`,
          "--json",
        ),
      )
      expect(both.code, both.stderr).toBe(0)
      expect((JSON.parse(both.stdout) as { attachments: { total: number } }).attachments.total).toBe(2)
      expect(hits.sort()).toEqual(["/doc/0", "/doc/1"])
    } finally {
      allowed.close()
      elsewhere.close()
    }
  }, 60_000)
})

describe("ferry export through an HTTP proxy (http_proxy, no_proxy)", () => {
  /** A forwarding proxy on loopback: requests for `proxied.invalid:<port>` go to 127.0.0.1:<port>. */
  const startProxy = async () => {
    const seen: Array<{ method: string; url: string }> = []
    const server = Http.createServer((req, res) => {
      seen.push({ method: req.method ?? "", url: req.url ?? "" })
      const url = new URL(req.url ?? "")
      if (url.hostname !== "proxied.invalid") {
        res.writeHead(502).end()
        return
      }
      const upstream = Http.request(
        {
          host: "127.0.0.1",
          port: url.port,
          path: `${url.pathname}${url.search}`,
          method: req.method,
          headers: { ...req.headers, host: `127.0.0.1:${url.port}` },
        },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers)
          answer.pipe(res)
        },
      )
      upstream.on("error", () => res.destroy())
      req.pipe(upstream)
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    return { url: `http://127.0.0.1:${(server.address() as Net.AddressInfo).port}`, seen, server }
  }

  it("goes through the proxy to a named host, never for loopback, and a bad proxy URL is one line, exit 2", async () => {
    const sandbox = await start({ seed: [data("sample-bulk-10-patients")] })
    const proxy = await startProxy()
    try {
      const port = new URL(sandbox.baseUrl).port
      const viaName = `http://proxied.invalid:${port}/fhir`
      const run = await ferry(
        ["export", viaName, "--out", Path.join(tmp, "proxied"), "--type", "Patient", "--json"],
        undefined,
        { http_proxy: proxy.url, HTTP_PROXY: "", no_proxy: "", NO_PROXY: "" },
      )
      expect(run.stderr).not.toContain("ENOTFOUND")
      expect(run.code).toBe(0)
      expect((JSON.parse(run.stdout) as { resources: number }).resources).toBe(13)
      // the CapabilityStatement and the kick-off went through the proxy, by name
      expect(proxy.seen.some((r) => r.method === "GET" && r.url.startsWith(`${viaName}/metadata`))).toBe(true)
      expect(proxy.seen.some((r) => r.url.startsWith(`${viaName}/$export`))).toBe(true)

      // the same source by its loopback address: straight there
      const before = proxy.seen.length
      const direct = await ferry(
        ["export", sandbox.baseUrl, "--out", Path.join(tmp, "unproxied"), "--type", "Patient"],
        undefined,
        { http_proxy: proxy.url, HTTP_PROXY: "" },
      )
      expect(direct.code).toBe(0)
      expect(proxy.seen.length).toBe(before)

      // no_proxy names the host: not through the proxy (and the name resolves nowhere)
      const excluded = await ferry(
        ["export", viaName, "--out", Path.join(tmp, "excluded"), "--type", "Patient"],
        undefined,
        { http_proxy: proxy.url, HTTP_PROXY: "", no_proxy: ".invalid", NO_PROXY: "" },
      )
      expect(excluded.code).toBe(4)
      expect(excluded.stderr).toContain("ENOTFOUND")
      expect(proxy.seen.length).toBe(before)

      const bad = await ferry(["export", viaName, "--out", Path.join(tmp, "badproxy")], undefined, {
        HTTPS_PROXY: "socks5://127.0.0.1:1080",
        https_proxy: "",
      })
      expect(bad.code).toBe(2)
      expect(bad.stderr.trim()).toBe(
        "ferry: HTTPS_PROXY: Ferry speaks to http and https proxies, not socks5; set an http:// proxy URL",
      )
    } finally {
      await new Promise<void>((resolve) => proxy.server.close(() => resolve()))
    }
  }, 120_000)

  it("a proxy that is down, or that will not open a tunnel, is named in the one-line error (not the server)", async () => {
    // a port where nothing listens
    const dead = Http.createServer()
    await new Promise<void>((resolve) => dead.listen(0, "127.0.0.1", resolve))
    const deadUrl = `http://127.0.0.1:${(dead.address() as Net.AddressInfo).port}`
    await new Promise<void>((resolve) => dead.close(() => resolve()))
    const down = await ferry(
      ["export", "http://proxied.invalid:8080/fhir", "--out", Path.join(tmp, "deadproxy")],
      undefined,
      { http_proxy: deadUrl, HTTP_PROXY: "", no_proxy: "", NO_PROXY: "" },
    )
    expect(down.code).toBe(4)
    expect(down.stderr.trim().split("\n").at(-1)).toBe(
      `ferry: GET http://proxied.invalid:8080/fhir/$export: could not reach the proxy ${deadUrl} (http_proxy) (ECONNREFUSED); check that setting, or list the server's host in no_proxy if it is reached without a proxy`,
    )

    // a proxy that wants credentials for a CONNECT tunnel (https): said at once, not retried
    const connects: Array<string> = []
    const gate = Http.createServer((_req, res) => res.writeHead(502).end())
    gate.on("connect", (req: Http.IncomingMessage, socket: Net.Socket) => {
      connects.push(req.url ?? "")
      socket.end(
        'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n\r\n',
      )
    })
    await new Promise<void>((resolve) => gate.listen(0, "127.0.0.1", resolve))
    const gateUrl = `http://127.0.0.1:${(gate.address() as Net.AddressInfo).port}`
    try {
      const refused = await ferry(
        ["export", "https://proxied.invalid/fhir", "--out", Path.join(tmp, "gateproxy")],
        undefined,
        { https_proxy: gateUrl, HTTPS_PROXY: "", no_proxy: "", NO_PROXY: "" },
      )
      expect(refused.code).toBe(4)
      expect(refused.stderr.trim().split("\n").at(-1)).toBe(
        `ferry: GET https://proxied.invalid/fhir/$export: the proxy ${gateUrl} (https_proxy) would not pass requests on to the server (407: it wants credentials; put them in the proxy URL, http://user:password@host:port, percent-encoded)`,
      )
      expect(refused.stderr).not.toContain("retry")
      expect(connects.every((u) => u === "proxied.invalid:443")).toBe(true)
      expect(connects.length).toBeLessThanOrEqual(2)
    } finally {
      await new Promise<void>((resolve) => gate.close(() => resolve()))
    }
  }, 60_000)
})
