/**
 * `ferry plan` end to end: the bundled CLI as a process against sandboxes (needs `npm run build` first).
 * Proves the counts, the strategy choices (put / post, bulk / crawl), the failures (unreachable,
 * unauthorised, bad config) and that plan writes nothing on either server.
 */
import * as NFS from "node:fs"
import * as Http from "node:http"
import * as OS from "node:os"
import * as Path from "node:path"
import * as Sandbox from "@ferry/sandbox/Sandbox"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  freePort,
  type InProcessSandbox,
  lastLine,
  type RecordedRequest,
  requestRecorder,
  runFerry,
  type RunningSandbox,
  sharedData,
  smartTestClient,
  startSandbox,
  startSandboxProcess,
} from "./helpers/ferry.js"

interface PlanJson {
  readonly ok: boolean
  readonly changedNothing: boolean
  readonly source: ServerJson
  readonly target: ServerJson
  readonly estimate: {
    readonly archiveBytes: number | null
    readonly exportSeconds: number | null
    readonly note: string
  } | null
  readonly strategy: {
    readonly export: { readonly mode: string; readonly level: string; readonly why: string }
    readonly import: { readonly strategy: string; readonly why: string; readonly confirm: string | null }
  } | null
  readonly warnings: ReadonlyArray<string>
}
interface ServerJson {
  readonly reachable: boolean
  readonly authorized: boolean
  readonly token: boolean | null
  readonly problem: string | null
  readonly fhirVersion: string | null
  readonly export: { readonly system: boolean; readonly patient: boolean; readonly group: boolean }
  readonly import: { readonly operation: string | null; readonly flavour: string | null }
  readonly counts: {
    readonly byType: Record<string, number>
    readonly total: number
    readonly method: string
  }
  readonly clientIds: {
    readonly updateCreateTypes: number
    readonly sourceTypesWithout: ReadonlyArray<string>
  }
}

const tmp = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-plan-e2e-"))
const started: Array<InProcessSandbox> = []
const processes: Array<RunningSandbox> = []
afterAll(async () => {
  for (const p of processes) await p.stop()
  for (const s of started) await s.close()
  NFS.rmSync(tmp, { recursive: true, force: true })
})

const start = async (config: Parameters<typeof startSandbox>[0], plugins?: ReadonlyArray<Sandbox.Plugin>) => {
  const s = await startSandbox(config, plugins)
  started.push(s)
  return s
}

/** Resources per type in a sandbox's store (types with none left out). */
const storeCounts = (s: InProcessSandbox): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const t of s.handle.store.types()) {
    const n = s.handle.store.count(t)
    if (n > 0) counts[t] = n
  }
  return counts
}

const writes = (requests: ReadonlyArray<RecordedRequest>) => requests.filter((r) => r.method !== "GET")

const plan = async (args: ReadonlyArray<string>, env?: Record<string, string>) => {
  const run = await runFerry(["plan", ...args], env ? { env } : {})
  return { ...run, json: (): PlanJson => JSON.parse(run.stdout) as PlanJson }
}

/** Runs `f` with the base URL (`…/fhir`) of a server on 127.0.0.1 that answers every request alike, then stops it. */
const withServer = async (
  status: number,
  contentType: string,
  body: string,
  f: (url: string) => Promise<void>,
): Promise<void> => {
  const server = Http.createServer((req, res) => {
    req.resume()
    res.writeHead(status, { "content-type": contentType }).end(body)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  try {
    const address = server.address()
    await f(`http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}/fhir`)
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

describe("ferry plan", () => {
  const sourceRecorder = requestRecorder()
  const targetRecorder = requestRecorder()
  let source: InProcessSandbox
  let target: InProcessSandbox
  let refusing: RunningSandbox

  beforeAll(async () => {
    ;[refusing, source, target] = await Promise.all([
      startSandboxProcess(["--refuse-client-ids"]).then((p) => {
        processes.push(p)
        return p
      }),
      start({ seed: [sharedData("synthea-bundles")] }, [sourceRecorder.plugin, ...Sandbox.defaultPlugins]),
      start({}, [targetRecorder.plugin, ...Sandbox.defaultPlugins]),
    ])
  }, 120_000)

  it("seeded source → empty target: counts per type, bulk + put, an estimate, and nothing written", async () => {
    const sourceBefore = source.handle.store.countAll()
    const run = await plan(["--from", source.handle.baseUrl, "--to", target.handle.baseUrl, "--json"])
    expect(run.stderr).toBe("")
    expect(run.code).toBe(0)
    const p = run.json()
    expect(p.ok).toBe(true)
    expect(p.source.counts.total).toBe(38_473)
    expect(p.source.counts.byType).toEqual(storeCounts(source))
    expect(p.source.counts.method).toBe("_summary=count")
    expect(p.source.fhirVersion).toBe("4.0.1")
    expect(p.source.export).toEqual({ system: true, patient: true, group: true })
    expect(p.target.counts.total).toBe(0)
    expect(p.target.import).toEqual({ operation: "import", flavour: "smart" })
    expect(p.strategy?.export.mode).toBe("bulk")
    expect(p.strategy?.export.level).toBe("system")
    expect(p.strategy?.import.strategy).toBe("put")
    expect(p.strategy?.import.confirm).toContain("probe PUT")
    expect(p.target.clientIds.sourceTypesWithout).toEqual([])
    expect(p.estimate?.archiveBytes).toBeGreaterThan(1_000_000)
    expect(p.estimate?.exportSeconds).not.toBeNull()
    expect(p.estimate?.note).toContain("estimate")
    expect(p.warnings.some((w) => w.includes("not empty"))).toBe(false)
    // read only: every request was a GET, and both stores are as they were
    expect(sourceRecorder.requests.length).toBeGreaterThan(0)
    expect(targetRecorder.requests.length).toBeGreaterThan(0)
    expect(writes(sourceRecorder.requests)).toEqual([])
    expect(writes(targetRecorder.requests)).toEqual([])
    expect(source.handle.store.countAll()).toBe(sourceBefore)
    expect(target.handle.store.countAll()).toBe(0)
  }, 60_000)

  it("plain text: both servers, the strategy and why, the read-only promise", async () => {
    const run = await plan(["--from", source.handle.baseUrl, "--to", target.handle.baseUrl])
    expect(run.code).toBe(0)
    expect(run.stdout).toContain("nothing was changed on either server")
    expect(run.stdout).toMatch(/resources\s+38,473 in 18 types/)
    expect(run.stdout).toMatch(/Observation\s+16,315/)
    expect(run.stdout).toContain("bulk $export, system level")
    expect(run.stdout).toContain("put (source ids kept)")
    expect(run.stdout).toContain("migrate confirms with a probe PUT")
    expect(run.stdout).toContain("Verdict: a migration looks possible.")
  }, 60_000)

  it("--level group without a Group id (FERRY_LEVEL): the report, a verdict that says why not, exit 2 as migrate", async () => {
    const run = await plan(["--from", source.handle.baseUrl, "--to", target.handle.baseUrl], {
      FERRY_LEVEL: "group",
    })
    expect(run.code, run.stderr).toBe(2)
    expect(run.stdout).toContain("Verdict: not possible as configured: --level group needs the Group id")
    expect(lastLine(run.stderr)).toMatch(/^ferry: --level group needs the Group id: pass --group <id>/)
  }, 60_000)

  it("a target refusing client ids → post; a non-empty target is warned about", async () => {
    const run = await plan(["--from", source.handle.baseUrl, "--to", refusing.baseUrl, "--json"])
    expect(run.code).toBe(0)
    const p = run.json()
    expect(p.strategy?.import.strategy).toBe("post")
    expect(p.strategy?.import.why).toContain("does not accept client ids")
    // its $import (the sandbox declares one) is not offered: it would store the files under ids of its own
    expect(p.strategy?.import.why).toContain("its $import is no alternative")
    expect(p.strategy?.import.why).not.toContain("lets it pull the files itself")
    expect(p.target.clientIds.updateCreateTypes).toBe(0)
    expect(p.target.clientIds.sourceTypesWithout).toHaveLength(18)
    // a target that already holds data: counted (over the source's types) and warned about
    const full = await start({ seed: [sharedData("sample-bulk-10-patients")] })
    const self = (await plan(["--from", source.handle.baseUrl, "--to", full.handle.baseUrl, "--json"])).json()
    const held = self.target.counts.total
    expect(held).toBeGreaterThan(1000)
    expect(self.warnings.some((w) => w.includes(`the target is not empty: it holds ${held} resources`))).toBe(
      true,
    )
    // data of a type the source has none of: the target is not empty either
    const other = await start({})
    other.handle.store.update({ resourceType: "Questionnaire", id: "q-1", status: "draft" })
    const elsewhere = (
      await plan(["--from", source.handle.baseUrl, "--to", other.handle.baseUrl, "--json"])
    ).json()
    expect(elsewhere.target.counts.total).toBe(1)
    expect(
      elsewhere.warnings.some((w) =>
        w.includes("the target is not empty: it holds 1 resources (1 Questionnaire)"),
      ),
    ).toBe(true)
    expect(writes(sourceRecorder.requests)).toEqual([])
  }, 90_000)

  it("a source without $export → crawl", async () => {
    const [faultsAndAuth, , bulkImport] = Sandbox.defaultPlugins
    const noExport = await start({ seed: [sharedData("sample-bulk-10-patients")] }, [
      faultsAndAuth!,
      bulkImport!,
    ])
    const run = await plan(["--from", noExport.handle.baseUrl, "--to", target.handle.baseUrl, "--json"])
    expect(run.code).toBe(0)
    const p = run.json()
    expect(p.source.export).toEqual({ system: false, patient: false, group: false })
    expect(p.strategy?.export.mode).toBe("crawl")
    expect(p.strategy?.export.why).toContain("no $export")
    expect(p.source.counts.byType).toEqual(storeCounts(noExport))
  }, 60_000)

  it("--from and --to the same server: exit 2, one sentence, nothing probed (migrate refuses it too)", async () => {
    const run = await plan(["--from", source.handle.baseUrl, "--to", `${source.handle.baseUrl}/`])
    expect(run.code).toBe(2)
    expect(lastLine(run.stderr)).toMatch(/^ferry: --to: the source and the target are the same server/)
    expect(run.stdout).toBe("")
    // the same server under another name (it used to say "a migration looks possible", and migrate wrote the
    // source's data back into the source)
    const alias = source.handle.baseUrl.replace("127.0.0.1", "localhost")
    const other = await plan(["--from", source.handle.baseUrl, "--to", alias])
    expect(other.code).toBe(2)
    expect(lastLine(other.stderr)).toMatch(
      /^ferry: --to: the source and the target are the same server \(http:\/\/127\.0\.0\.1:\d+\/fhir and http:\/\/localhost:\d+\/fhir reach the same address\)/,
    )
  }, 60_000)

  it("an unreachable target: a clear sentence and exit 4, after reporting the source", async () => {
    const url = `http://127.0.0.1:${await freePort()}/fhir`
    const run = await plan(["--from", source.handle.baseUrl, "--to", url])
    expect(run.code).toBe(4)
    expect(lastLine(run.stderr)).toMatch(
      /^ferry: GET http:\/\/127\.0\.0\.1:\d+\/fhir\/metadata: could not reach the server/,
    )
    expect(lastLine(run.stderr)).toContain("check the URL and that the server is running")
    expect(run.stdout).toContain(`target ${url}: unreachable`)
    expect(run.stdout).toMatch(/resources\s+38,473/)
  }, 60_000)

  it("a target that answers HTML: no FHIR server there, said on its reachable line; no strategy from it; exit 4", async () => {
    await withServer(200, "text/html", "<html><body>Welcome</body></html>", async (url) => {
      const run = await plan(["--from", source.handle.baseUrl, "--to", url])
      expect(run.code).toBe(4)
      expect(run.stdout).not.toContain("NOT authorised")
      expect(run.stdout).toMatch(
        new RegExp(
          `reachable\\s+yes, but NO FHIR server answered there: target ${url.replace(/[.]/g, "\\.")}: failed: `,
        ),
      )
      // nothing of what a failed probe would make up: no $import line, no strategy, no verdict but "not possible"
      expect(run.stdout).not.toContain("$import ")
      expect(run.stdout).not.toContain("Strategy migrate would choose")
      expect(run.stdout).toContain("Verdict: not possible")
    })
  }, 60_000)

  it("a FHIR server refusing its CapabilityStatement (403): not called 'no FHIR server'; exit 3", async () => {
    const outcome = JSON.stringify({
      resourceType: "OperationOutcome",
      issue: [{ severity: "error", code: "forbidden", diagnostics: "not for you" }],
    })
    await withServer(403, "application/fhir+json", outcome, async (url) => {
      const run = await plan(["--from", source.handle.baseUrl, "--to", url])
      expect(run.code).toBe(3)
      expect(run.stdout).toMatch(
        /reachable\s+yes, but its CapabilityStatement could not be read: target .*403/,
      )
      expect(run.stdout).not.toContain("NO FHIR server")
      expect(run.stdout).not.toContain("Strategy migrate would choose")
    })
  }, 60_000)

  it("a config file gives both servers; flags win over it", async () => {
    const file = Path.join(tmp, "ferry.yaml")
    NFS.writeFileSync(
      file,
      `source:\n  url: ${source.handle.baseUrl}\ntarget:\n  url: http://127.0.0.1:1/unused\n  auth: none\nstrategy: post\n`,
    )
    const run = await plan(["--config", file, "--to", target.handle.baseUrl, "--json"])
    expect(run.code).toBe(0)
    const p = run.json()
    expect(p.source.counts.total).toBe(38_473)
    expect(p.target.counts.total).toBe(0)
    expect(p.strategy?.import.strategy).toBe("post") // from the file
    // FERRY_STRATEGY beats the file
    const env = (
      await plan(["--config", file, "--to", target.handle.baseUrl, "--json"], { FERRY_STRATEGY: "put" })
    ).json()
    expect(env.strategy?.import.strategy).toBe("put")
  }, 60_000)

  it("a bad config file: one sentence with the path, line and what to do; nothing probed", async () => {
    const file = Path.join(tmp, "bad.yaml")
    NFS.writeFileSync(file, `source:\n  url: ${source.handle.baseUrl}\n  auth:\n    kind: smrt\n`)
    const before = sourceRecorder.requests.length
    const run = await plan(["--config", file, "--to", target.handle.baseUrl])
    expect(run.code).toBe(2)
    expect(lastLine(run.stderr)).toBe(
      `ferry: ${file}:4: source.auth.kind: Expected "none" | "smart" | "client-secret" | "bearer", actual "smrt"; fix the config file`,
    )
    expect(sourceRecorder.requests.length).toBe(before)
    const secret = Path.join(tmp, "secret.yaml")
    NFS.writeFileSync(secret, "target:\n  auth:\n    kind: client-secret\n    clientSecret: s3cr3t-value\n")
    const refused = await plan(["--config", secret, "--from", source.handle.baseUrl])
    expect(refused.code).toBe(2)
    expect(lastLine(refused.stderr)).toContain(
      `${secret}:4: target.auth.clientSecret: secrets are never written`,
    )
    expect(refused.stderr).not.toContain("s3cr3t-value")
  }, 60_000)
})

describe("ferry plan against a SMART-protected source", () => {
  const client = smartTestClient(tmp, "ferry-plan")
  const recorder = requestRecorder()
  let smart: InProcessSandbox
  let target: InProcessSandbox

  beforeAll(async () => {
    smart = await start(
      { seed: [sharedData("sample-bulk-10-patients")], auth: { clients: [client.registration] } },
      [recorder.plugin, ...Sandbox.defaultPlugins],
    )
    target = await start({})
  }, 120_000)

  /** `ferry plan` from the SMART source (its client and key) to the plain target, then `extra`. */
  const planSmart = (...extra: ReadonlyArray<string>) =>
    plan([
      "--from",
      smart.handle.baseUrl,
      "--to",
      target.handle.baseUrl,
      "--source-auth",
      "smart",
      "--source-client-id",
      client.clientId,
      "--source-key",
      client.keyFile,
      ...extra,
    ])

  it("with --source-auth smart: a token, the counts, no secret in the output", async () => {
    const run = await planSmart("--json")
    expect(run.code).toBe(0)
    const p = run.json()
    expect(p.source.token).toBe(true)
    expect(p.source.authorized).toBe(true)
    expect(p.source.counts.byType).toEqual(storeCounts(smart))
    expect(run.stdout + run.stderr).not.toContain(client.secret)
    // the only non-GET request is the token request
    expect(writes(recorder.requests).map((r) => `${r.method} ${r.path}`)).toEqual(["POST /auth/token"])
  }, 60_000)

  it("the same from FERRY_SOURCE_* variables", async () => {
    const run = await plan(["--to", target.handle.baseUrl, "--json"], {
      FERRY_FROM: smart.handle.baseUrl,
      FERRY_SOURCE_AUTH: "smart",
      FERRY_SOURCE_CLIENT_ID: client.clientId,
      FERRY_SOURCE_KEY: client.keyFile,
    })
    expect(run.code).toBe(0)
    expect(run.json().source.token).toBe(true)
  }, 60_000)

  it("a target whose token is refused: exit 3, and what it declares said as unknown, not as 'no'", async () => {
    const run = await plan([
      "--from",
      target.handle.baseUrl,
      "--to",
      smart.handle.baseUrl,
      "--target-auth",
      "smart",
      "--target-client-id",
      "nobody-registered",
      "--target-key",
      client.keyFile,
    ])
    expect(run.code, run.stderr).toBe(3)
    const targetPart = run.stdout.slice(run.stdout.indexOf("Target  "))
    expect(targetPart).toContain("NO token")
    expect(targetPart).toMatch(
      /capabilities\s+unknown \(the CapabilityStatement was not read without credentials\)/,
    )
    for (const row of ["$import", "client ids", "transaction", "FHIR version not declared"])
      expect(targetPart).not.toContain(row)
  }, 60_000)

  it("a token for one type at the Patient level: refused with --type as the way out, which plan takes", async () => {
    const narrow = (...extra: ReadonlyArray<string>) =>
      planSmart("--source-scope", "system/Patient.rs", "--level", "patient", ...extra)
    const refused = await narrow()
    expect(refused.code, refused.stderr).toBe(3)
    expect(lastLine(refused.stderr)).toMatch(/allow reading only Patient: .*--type Patient\)$/)
    // the advice followed: the source counted (and the token asked) for Patient only
    const typed = await narrow("--type", "Patient", "--json")
    expect(typed.code, typed.stderr).toBe(0)
    const p = typed.json()
    expect(p.source.counts.byType).toEqual({ Patient: smart.handle.store.count("Patient") })
    expect(p.source.counts.byType.Patient).toBeGreaterThan(0)
    const text = await narrow("--type", "Patient")
    expect(text.stdout).toMatch(/counted with _summary=count over the type of --type/)
    // a type Ferry does not know: a usage error, nothing probed
    const unknown = await narrow("--type", "Patinet")
    expect(unknown.code).toBe(2)
    expect(lastLine(unknown.stderr)).toContain("Patinet")
  }, 60_000)

  it("without credentials: not authorised, exit 3", async () => {
    const run = await plan(["--from", smart.handle.baseUrl, "--to", target.handle.baseUrl])
    expect(run.code).toBe(3)
    expect(lastLine(run.stderr)).toContain(
      "the source server requires authorization (401); configure it with --source-auth smart|client-secret|bearer",
    )
    expect(run.stdout).toContain("NOT authorised")
    expect(run.stdout).toContain("Verdict: not possible as configured")
  }, 60_000)
})
