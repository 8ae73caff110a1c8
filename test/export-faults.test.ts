/**
 * `ferry export` end to end (the bundled CLI as a process) against in-process sandboxes, one sandbox per
 * export-side fault switch (apps/sandbox/src/Faults.ts). Recoverable faults must end in exit 0 with an
 * archive whose per-type counts equal the server's and whose files match `manifest.json`, plus evidence
 * that the fault fired; unrecoverable ones in exit 4 and one stderr line naming the URL.
 * Needs `npm run build` first.
 */
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import type { SandboxConfigInput } from "@ferry/sandbox/Config"
import type { FaultsConfigInput } from "@ferry/sandbox/Faults"
import { defaultPlugins } from "@ferry/sandbox/Sandbox"
import { afterAll, describe, type ExpectStatic, it } from "vitest"
import {
  archiveCounts,
  archiveManifest,
  archiveMismatches,
  exportEvents,
  type FerryRun,
  type InProcessSandbox,
  lastLine,
  type RecordedRequest,
  requestRecorder,
  routeOf,
  runFerry,
  type SmartTestClient,
  serverCounts,
  setSandboxFaults,
  sharedData,
  smartTestClient,
  startSandbox,
} from "./helpers/ferry.js"

const tmp = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-export-faults-"))
const sandboxes: Array<InProcessSandbox> = []
afterAll(async () => {
  for (const s of sandboxes) await s.close()
  NFS.rmSync(tmp, { recursive: true, force: true })
})

/** 756 resources of the 10-patient sample (only these are seeded); at 100 per file: 11 files. */
const TYPES = ["Patient", "Condition", "Immunization", "AllergyIntolerance", "Device"]
const PER_FILE = 100

interface Exported {
  readonly run: FerryRun
  readonly out: string
  readonly baseUrl: string
  readonly requests: ReadonlyArray<RecordedRequest>
  /** Headers for reading the sandbox's REST API (a token when auth is on). */
  readonly headers: Record<string, string>
}

/** `ferry export` of the seeded types from `baseUrl` into `out`, with a JSON summary, and `extra` flags. */
const exportArgs = (baseUrl: string, out: string, extra: ReadonlyArray<string>) => [
  "export",
  baseUrl,
  "--out",
  out,
  "--type",
  TYPES.join(","),
  "--json",
  ...extra,
]

/** Starts a seeded sandbox with `faults` (and SMART auth for `client`), then runs `ferry export` on it. */
const exportWith = async (
  name: string,
  faults: FaultsConfigInput,
  options: {
    readonly client?: SmartTestClient
    readonly args?: ReadonlyArray<string>
    /** More of the sandbox's `bulk` section. */
    readonly bulk?: NonNullable<SandboxConfigInput["bulk"]>
    /** Called with stderr so far and the sandbox's base URL. */
    readonly onStderr?: (text: string, baseUrl: string) => void
  } = {},
): Promise<Exported> => {
  const recorder = requestRecorder()
  const config: SandboxConfigInput = {
    seed: TYPES.map((t) => sharedData(`sample-bulk-10-patients/${t}.000.ndjson`)),
    // No extra 202 before the manifest: status faults still hit the first polls, and runs stay short.
    bulk: { resourcesPerFile: PER_FILE, pollsBeforeDone: 0, ...options.bulk },
    faults,
    ...(options.client ? { auth: { clients: [options.client.registration] } } : {}),
  }
  const sandbox = await startSandbox(config, [recorder.plugin, ...defaultPlugins])
  sandboxes.push(sandbox)
  const baseUrl = sandbox.handle.baseUrl
  const out = Path.join(tmp, name)
  const onStderr = options.onStderr
  const run = await runFerry(
    exportArgs(baseUrl, out, [...(options.client?.args ?? []), ...(options.args ?? [])]),
    onStderr ? { onStderr: (text) => onStderr(text, baseUrl) } : {},
  )
  const headers: Record<string, string> = options.client
    ? { authorization: `Bearer ${await options.client.token(baseUrl)}` }
    : {}
  return { run, out, baseUrl, requests: recorder.requests, headers }
}

/** What a user needs after a recovered fault: exit 0, every resource, files matching the manifest. */
const expectComplete = async (expect: ExpectStatic, x: Exported) => {
  expect(x.run.code, x.run.stderr).toBe(0)
  expect(x.run.stderr).toContain("ferry export: done:")
  const manifest = archiveManifest(x.out)
  expect(manifest.complete).toBe(true)
  expect(manifest.errors).toEqual([])
  expect(archiveCounts(x.out)).toEqual(await serverCounts(x.baseUrl, TYPES, x.headers))
  expect(archiveMismatches(x.out)).toEqual([])
  // Several files per type, so faults hit a multi-file download.
  expect(manifest.files.length).toBeGreaterThanOrEqual(10)
  const summary = JSON.parse(x.run.stdout) as { resources: number; errors: number }
  expect(summary.resources).toBe(756)
  expect(summary.errors).toBe(0)
}

/** The requests of one route kind (as the fault switches count them), in arrival order. */
const ofRoute = (x: Exported, route: string) => x.requests.filter((r) => routeOf(r) === route)

/** The export resumed a download with `Range: bytes=N-` (N > 0) of a file whose path matches: its events and the requests the server saw say so. */
const expectRangeResumed = (expect: ExpectStatic, x: Exported, path: RegExp) => {
  const resumes = exportEvents(x.out).filter((e) => e.event === "resume")
  expect(resumes.some((e) => e.reason === "range" && Number(e.offset) > 0)).toBe(true)
  const ranged = ofRoute(x, "download").filter(
    (r) => path.test(r.path) && r.range !== undefined && /^bytes=\d+-$/.test(r.range),
  )
  expect(ranged.length).toBeGreaterThan(0)
}

/**
 * For every answer with `status` on `route`: the wait until the same URL was asked again (ms), or
 * undefined when it never was.
 */
const retriesAfter = (x: Exported, route: string, status: number): Array<number | undefined> => {
  const rs = ofRoute(x, route)
  return rs
    .filter((r) => r.status === status)
    .map((r) => {
      const next = rs.find((n) => n.at > r.at && n.method === r.method && n.path === r.path)
      return next === undefined || r.doneAt === undefined ? undefined : next.at - r.doneAt
    })
}

/** Timer slack between the server's clock readings and the client's sleep. */
const SLACK_MS = 25

const routes = ["kickoff", "status", "download"] as const

describe.concurrent("ferry export recovers from export-side faults", () => {
  // Retry-After is written with 1 s resolution: an HTTP-date or epoch of now+2 s is at least 1 s away.
  it.for([
    { format: "seconds" as const, seconds: 1, atLeastMs: 1000 },
    { format: "http-date" as const, seconds: 2, atLeastMs: 1000 },
    { format: "epoch" as const, seconds: 2, atLeastMs: 1000 },
  ])(
    "429 with Retry-After as $format on kick-off, status and download: each waits at least Retry-After, then completes",
    async ({ format, seconds, atLeastMs }, { expect }) => {
      const x = await exportWith(`throttle-${format}`, {
        throttle: routes.map((route) => ({ route, first: 1, retryAfter: format, seconds })),
      })
      await expectComplete(expect, x)
      for (const route of routes) {
        const waits = retriesAfter(x, route, 429)
        expect(waits, route).toHaveLength(1)
        expect(waits[0], route).toBeGreaterThanOrEqual(atLeastMs - SLACK_MS)
      }
    },
  )

  it.for([
    { status: 500 as const, retryAfterSeconds: undefined, body: "outcome" as const },
    { status: 503 as const, retryAfterSeconds: 1, body: "outcome" as const },
    { status: 502 as const, retryAfterSeconds: undefined, body: "html" as const },
    { status: 504 as const, retryAfterSeconds: undefined, body: "html" as const },
  ])(
    "transient $status ($body) twice on kick-off, status and download: retried, then completes",
    async ({ status, retryAfterSeconds, body }, { expect }) => {
      const x = await exportWith(`transient-${status}`, {
        transient: routes.map((route) => ({
          route,
          first: 2,
          status,
          body,
          ...(retryAfterSeconds !== undefined ? { retryAfterSeconds } : {}),
        })),
      })
      await expectComplete(expect, x)
      for (const route of routes) {
        const waits = retriesAfter(x, route, status)
        expect(waits, route).toHaveLength(2)
        for (const w of waits) {
          expect(w, route).toBeDefined()
          if (retryAfterSeconds !== undefined) {
            expect(w, route).toBeGreaterThanOrEqual(retryAfterSeconds * 1000 - SLACK_MS)
          }
        }
      }
      // A transient failure of the kick-off or of a status request is not a failed job: one job only.
      expect(exportEvents(x.out).filter((e) => e.event === "kickoff")).toHaveLength(1)
    },
  )

  it("connection reset after 1000 bytes of every file (twice): resumed with Range, then completes", async ({
    expect,
  }) => {
    const x = await exportWith("reset", { resetDownload: { afterBytes: 1000, attempts: 2 } })
    await expectComplete(expect, x)
    expectRangeResumed(expect, x, /./)
    // Every file was asked for at least three times, the later attempts with a Range.
    const files = archiveManifest(x.out).files.length
    expect(ofRoute(x, "download").length).toBeGreaterThanOrEqual(3 * files)
  })

  it("a server that stops sending in the middle of each Condition file (once): given up on after --request-timeout, resumed with Range, then completes", async ({
    expect,
  }) => {
    const x = await exportWith(
      "stall",
      { stallDownload: { afterBytes: 5000, attempts: 1, type: "Condition" } },
      { args: ["--request-timeout", "1s"] },
    )
    await expectComplete(expect, x)
    expectRangeResumed(expect, x, /\/Condition\.\d+\.ndjson$/)
  })

  it("a file whose download stalls on every try: exit 4 naming the file's URL and the stall; the part kept, and a rerun resumes it", async ({
    expect,
  }) => {
    const x = await exportWith(
      "stall-always",
      { stallDownload: { afterBytes: 1000, attempts: 99, type: "AllergyIntolerance" } },
      { args: ["--request-timeout", "1s"] },
    )
    expect(x.run.code, x.run.stderr).toBe(4)
    expect(lastLine(x.run.stderr)).toMatch(
      /^ferry: GET http:\/\/127\.0\.0\.1:\d+\/fhir\/bulk\/files\/\S+\/AllergyIntolerance\.000\.ndjson: the download stalled: the server sent nothing more within the request timeout, on every try \(what had arrived is kept\); [^\n]*--request-timeout[^\n]*resume$/,
    )
    // the first try and five resumes, each given up on after a second of silence
    const tries = ofRoute(x, "download").filter((r) => r.path.endsWith("/AllergyIntolerance.000.ndjson"))
    expect(tries).toHaveLength(6)
    expect(archiveManifest(x.out).complete).toBe(false)
    const part = Path.join(x.out, "data", "AllergyIntolerance.000.ndjson.partial")
    expect(NFS.statSync(part).size).toBeGreaterThan(0)
    // the server mended: the same command again resumes the part and finishes
    await setSandboxFaults(x.baseUrl, {})
    const again = await runFerry(exportArgs(x.baseUrl, x.out, ["--request-timeout", "1s"]))
    await expectComplete(expect, { ...x, run: again })
    expect(exportEvents(x.out).some((e) => e.event === "resume" && e.reason === "range")).toBe(true)
  })

  it("an attachment whose body stalls once: fetched again within the run, the export completes", async ({
    expect,
  }) => {
    const recorder = requestRecorder()
    // 3 generated patients, each with a DocumentReference whose attachment is a Binary on the sandbox; exported
    // without the Binary type, so each attachment is a GET; the first of them (after the CapabilityStatement)
    // sends its headers and 10 bytes, then nothing more
    const sandbox = await startSandbox(
      {
        generate: 3,
        faults: { stallAnswer: [{ route: "fhir", method: "GET", skip: 1, first: 1, afterBytes: 10 }] },
      },
      [recorder.plugin, ...defaultPlugins],
    )
    sandboxes.push(sandbox)
    const out = Path.join(tmp, "attachment-stall")
    const run = await runFerry([
      "export",
      sandbox.handle.baseUrl,
      "--out",
      out,
      "--type",
      "Patient,DocumentReference",
      "--json",
      "--request-timeout",
      "1s",
    ])
    expect(run.code, run.stderr).toBe(0)
    const summary = JSON.parse(run.stdout) as { attachments: { fetched: number; failed: number } }
    expect(summary.attachments).toMatchObject({ fetched: 3, failed: 0 })
    const binaries = recorder.requests.filter((r) => r.method === "GET" && /\/Binary\//.test(r.path))
    // three attachments, one of them asked for twice
    expect(binaries).toHaveLength(4)
    expect(new Set(binaries.map((r) => r.path)).size).toBe(3)
  })

  it("a server that takes the connection and never answers: exit 4 after three tries of --request-timeout, not after 15 minutes", async ({
    expect,
  }) => {
    const x = await exportWith(
      "no-answer",
      { delay: [{ route: "fhir", ms: 20_000 }] },
      { args: ["--request-timeout", "1s"] },
    )
    expect(x.run.code, x.run.stderr).toBe(4)
    expect(lastLine(x.run.stderr)).toMatch(
      /^ferry: GET http:\/\/127\.0\.0\.1:\d+\/fhir\/metadata: the server accepted the connection but did not answer within 1s; check that it is up and not overloaded, then run the command again \(what was done so far is kept: run the same command again to go on\)$/,
    )
    expect(ofRoute(x, "fhir").filter((r) => r.path.endsWith("/metadata")).length).toBe(3)
  })

  it("a token endpoint that takes the connection and never answers: --request-timeout applies to it too, each retry said", async ({
    expect,
  }) => {
    const client = smartTestClient(tmp, "ferry-token-hang")
    const started = Date.now()
    let gaveUp = Number.POSITIVE_INFINITY
    const x = await exportWith(
      "token-hang",
      { delay: [{ route: "token", ms: 20_000 }] },
      {
        client,
        args: ["--request-timeout", "1s"],
        onStderr: (text) => {
          if (text.includes("(tried 3 times)")) gaveUp = Math.min(gaveUp, Date.now())
        },
      },
    )
    expect(x.run.code, x.run.stderr).toBe(4)
    // three tries of 1 s and their backoff, not six of the token client's own 30 s (the sandbox's delay: 20 s)
    expect(gaveUp - started).toBeLessThan(15_000)
    expect(x.run.stderr).toContain("trying again (retry 1 of at most 2)")
    expect(x.run.stderr).toContain("trying again (retry 2 of at most 2)")
    expect(lastLine(x.run.stderr)).toMatch(/did not answer within 1s.*\(tried 3 times\)/)
  })

  it.for([410, 403] as const)(
    "%i on a file of the first job (403: an expired signed link's XML): a new kick-off, finished files kept, then completes",
    async (status, { expect }) => {
      let cleared: Promise<void> | undefined
      const x = await exportWith(
        `expired-${status}`,
        // The delayed kick-off gives the PUT below time to land before the new job's files are asked for.
        {
          expireFiles: { firstAttempt: true, type: "Patient", status },
          delay: [{ route: "kickoff", ms: 300 }],
        },
        {
          // The sandbox expires the first attempt of every job's files: only the first job's do here.
          onStderr: (text, baseUrl) => {
            if (cleared === undefined && text.includes("ferry export: the output files expired")) {
              cleared = setSandboxFaults(baseUrl, {})
            }
          },
        },
      )
      await cleared
      await expectComplete(expect, x)
      const gone = ofRoute(x, "download").filter((r) => r.status === status)
      expect(gone.length).toBeGreaterThanOrEqual(1)
      expect(gone.every((r) => /\/Patient\.000\.ndjson$/.test(r.path))).toBe(true)
      const events = exportEvents(x.out)
      expect(events.filter((e) => e.event === "expired")).toHaveLength(1)
      expect(events.filter((e) => e.event === "kickoff")).toHaveLength(2)
      expect((JSON.parse(x.run.stdout) as { rekickoffs: number }).rekickoffs).toBe(1)
      // both jobs released: the replaced one too (its files used to stay on the server)
      const released = ofRoute(x, "status").filter((r) => r.method === "DELETE" && r.status === 202)
      expect(new Set(released.map((r) => r.path)).size).toBe(2)
      // Files finished from the first job were not fetched again: one "file" event per file.
      expect(events.filter((e) => e.event === "file")).toHaveLength(archiveManifest(x.out).files.length)
    },
  )

  it("410 on a file whose manifest, fetched again, holds new URLs (re-signed links): the same job completes, no new kick-off", async ({
    expect,
  }) => {
    const x = await exportWith("renewed", {
      expireFiles: { firstAttempt: true, type: "Patient", renewable: true },
    })
    await expectComplete(expect, x)
    const events = exportEvents(x.out)
    expect(events.filter((e) => e.event === "expired")).toHaveLength(1)
    expect(events.filter((e) => e.event === "manifest-renewed")).toHaveLength(1)
    expect(events.filter((e) => e.event === "kickoff")).toHaveLength(1)
    expect((JSON.parse(x.run.stdout) as { rekickoffs: number }).rekickoffs).toBe(0)
    // The Patient file: refused under the first manifest's URL, then fetched under the second's.
    const patient = ofRoute(x, "download").filter((r) => r.path.endsWith("/Patient.000.ndjson"))
    expect(patient.map((r) => [r.status, r.search])).toEqual([
      [410, "?gen=1"],
      [200, "?gen=2"],
    ])
    // Files finished under the first URLs were not fetched again: one "file" event per file.
    expect(events.filter((e) => e.event === "file")).toHaveLength(archiveManifest(x.out).files.length)
  })

  it("--allow-partial-manifests, 410 on a file the first part lists: the early download stops with a warning, the usual download gets it under the manifest's URL", async ({
    expect,
  }) => {
    const x = await exportWith(
      "partial-expired",
      { expireFiles: { firstAttempt: true, type: "Patient", renewable: true } },
      { args: ["--allow-partial-manifests"] },
    )
    await expectComplete(expect, x)
    const events = exportEvents(x.out)
    expect(events.some((e) => e.event === "manifest-part")).toBe(true)
    const warnings = events.filter((e) => e.event === "warning").map((e) => String(e.detail))
    expect(warnings.some((w) => w.includes("started from a partial manifest stopped"))).toBe(true)
    expect(events.filter((e) => e.event === "kickoff")).toHaveLength(1)
    // the Patient file: 410 in the early pool, 200 for the usual download; every file counted once
    const patient = ofRoute(x, "download").filter((r) => r.path.endsWith("/Patient.000.ndjson"))
    expect(patient.map((r) => r.status)).toEqual([410, 200])
    expect(events.filter((e) => e.event === "file")).toHaveLength(archiveManifest(x.out).files.length)
  })

  it("one type's files answered 1.5 s late (slowDownload): the other types' files land first, then completes", async ({
    expect,
  }) => {
    const x = await exportWith("slow-type", { slowDownload: { type: "Patient", ms: 1500 } })
    await expectComplete(expect, x)
    const downloads = ofRoute(x, "download")
    const late = downloads.filter((r) => r.path.includes("Patient"))
    expect(late.length).toBeGreaterThan(0)
    expect(
      late.every((r) => r.status === 200 && r.doneAt !== undefined && r.doneAt - r.at >= 1500 - SLACK_MS),
    ).toBe(true)
    // the other download slots went on meanwhile: other types' files were ready before the Patient file
    const ready = exportEvents(x.out).filter((e) => e.event === "file-ready" && e.kind === "output")
    expect(ready.findIndex((e) => e.type === "Patient")).toBeGreaterThan(0)
  })

  it("slow kick-off, status and downloads (400 ms each): completes without retries", async ({ expect }) => {
    const x = await exportWith("slow", {
      delay: [
        { route: "kickoff", ms: 400 },
        { route: "status", ms: 400 },
        { route: "download", ms: 400 },
      ],
    })
    await expectComplete(expect, x)
    const downloads = ofRoute(x, "download")
    expect(
      downloads.every((r) => r.status === 200 && r.doneAt !== undefined && r.doneAt - r.at >= 400 - SLACK_MS),
    ).toBe(true)
    // Nothing was retried: one request per file.
    expect(new Set(downloads.map((r) => r.path)).size).toBe(downloads.length)
    expect(ofRoute(x, "kickoff")).toHaveLength(1)
  })
})

// Alone (not concurrent): a token's short life must not be eaten by other tests' load.
describe("ferry export with SMART auth on", () => {
  it("tokens that stop working after 2 s: refreshed on 401, then completes", async ({ expect }) => {
    const client = smartTestClient(tmp, "ferry-expiring")
    const x = await exportWith(
      "token-expiry",
      { tokenExpiresAfterSeconds: 2, delay: [{ route: "download", ms: 500 }] },
      { client, args: ["--parallel", "1"] },
    )
    await expectComplete(expect, x)
    expect(x.run.stderr).toContain("SMART Backend Services")
    // The 401 fired and a new token was asked for.
    expect(x.requests.some((r) => r.status === 401)).toBe(true)
    expect(ofRoute(x, "token").filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(2)
    const tokens = new Set(x.requests.flatMap((r) => (r.authorization ? [r.authorization] : [])))
    expect(tokens.size).toBeGreaterThanOrEqual(2)
    const texts = [x.run.stdout, x.run.stderr, NFS.readFileSync(Path.join(x.out, "events.ndjson"), "utf8")]
    for (const text of texts) {
      for (const t of tokens) expect(text.includes(t.replace(/^Bearer\s+/i, ""))).toBe(false)
      expect(text.includes(client.secret)).toBe(false)
    }
  })
})

describe("ferry export with signed file links (requiresAccessToken: false)", () => {
  it("fetches the files without the token (they are capability URLs), and everything else with it", async ({
    expect,
  }) => {
    const client = smartTestClient(tmp, "ferry-signed")
    const x = await exportWith(
      "signed-urls",
      {},
      { client, bulk: { signedUrls: true }, args: ["--keep-job"] },
    )
    await expectComplete(expect, x)
    const downloads = ofRoute(x, "download")
    expect(downloads.length).toBeGreaterThanOrEqual(10)
    for (const d of downloads) {
      expect(d.search, d.path).toMatch(/^\?sig=[0-9a-f]{32}$/)
      expect(d.authorization, d.path).toBeUndefined()
    }
    // the kick-off and the polls did carry it
    for (const r of [...ofRoute(x, "kickoff"), ...ofRoute(x, "status")])
      expect(r.authorization).toMatch(/^Bearer /)
    // (the job kept) a link without its signature needs the token, one with a wrong signature is refused
    const unsigned = `${x.baseUrl}${downloads[0]!.path}`
    expect((await fetch(unsigned)).status).toBe(401)
    expect((await fetch(`${unsigned}?sig=${"0".repeat(32)}`)).status).toBe(403)
  })

  it("the journal keeps the links without their signatures: a run killed while downloading resumes with the job's links fetched again, or with a new job once that one is gone", async ({
    expect,
  }) => {
    const client = smartTestClient(tmp, "ferry-signed-resume")
    const recorder = requestRecorder()
    const sandbox = await startSandbox(
      {
        seed: TYPES.map((t) => sharedData(`sample-bulk-10-patients/${t}.000.ndjson`)),
        bulk: { resourcesPerFile: PER_FILE, pollsBeforeDone: 0, signedUrls: true },
        faults: { delay: [{ route: "download", ms: 300 }] },
        auth: { clients: [client.registration] },
      },
      [recorder.plugin, ...defaultPlugins],
    )
    sandboxes.push(sandbox)
    const baseUrl = sandbox.handle.baseUrl
    for (const jobGone of [false, true]) {
      const out = Path.join(tmp, `signed-resume-${jobGone}`)
      const args = exportArgs(baseUrl, out, [...client.args, "--parallel", "2"])
      const killed = await runFerry(args, {
        onStderr: (text, child) => {
          if (/\.ndjson: \d+/.test(text) && child.exitCode === null) child.kill("SIGKILL")
        },
      })
      expect(killed.signal, killed.stderr).toBe("SIGKILL")
      const journal = NFS.readFileSync(Path.join(out, "journal.ndjson"), "utf8")
      expect(journal).toContain('"linksRedacted":true')
      expect(journal).toContain("sig=REDACTED")
      expect(journal).not.toMatch(/sig=[0-9a-f]{32}/)
      const statusUrl = String(exportEvents(out).find((e) => e.event === "kickoff")?.statusUrl)
      if (jobGone) {
        const token = await client.token(baseUrl)
        const deleted = await fetch(statusUrl, {
          method: "DELETE",
          headers: { authorization: `Bearer ${token}` },
        })
        expect(deleted.status).toBe(202)
      }
      const before = recorder.requests.length
      const rerun = await runFerry(args)
      expect(rerun.code, rerun.stderr).toBe(0)
      // no file asked for under a link the journal kept without its signature (a server may answer those 401)
      expect(recorder.requests.slice(before).filter((r) => r.search.includes("REDACTED"))).toEqual([])
      expect(archiveManifest(out).complete).toBe(true)
      expect(archiveMismatches(out)).toEqual([])
      expect(archiveCounts(out)).toEqual(
        await serverCounts(baseUrl, TYPES, { authorization: `Bearer ${await client.token(baseUrl)}` }),
      )
      const events = exportEvents(out)
      expect(events.filter((e) => e.event === "kickoff")).toHaveLength(jobGone ? 2 : 1)
      expect(events.some((e) => e.event === "links-fetched")).toBe(!jobGone)
      expect(NFS.readFileSync(Path.join(out, "journal.ndjson"), "utf8")).not.toMatch(/sig=[0-9a-f]{32}/)
      expect(rerun.stderr).not.toMatch(/^ferry export: [a-z-]+ \{/m)
    }
    // every file finished, one removed from disk since (the journal not told): the job's links fetched again too
    const out = Path.join(tmp, "signed-resume-removed")
    const args = exportArgs(baseUrl, out, [...client.args, "--keep-job"])
    expect((await runFerry(args)).code).toBe(0)
    const journalPath = Path.join(out, "journal.ndjson")
    const kept = NFS.readFileSync(journalPath, "utf8")
      .split("\n")
      .filter((l) => l !== "" && !l.includes('"key":"complete"') && !l.includes('"key":"released"'))
    NFS.writeFileSync(journalPath, `${kept.join("\n")}\n`)
    const manifestPath = Path.join(out, "manifest.json")
    NFS.writeFileSync(
      manifestPath,
      JSON.stringify({ ...JSON.parse(NFS.readFileSync(manifestPath, "utf8")), complete: false }),
    )
    NFS.rmSync(Path.join(out, "data", "Patient.000.ndjson"))
    const before = recorder.requests.length
    const rerun = await runFerry(args)
    expect(rerun.code, rerun.stderr).toBe(0)
    const asked = recorder.requests.slice(before)
    expect(asked.filter((r) => r.search.includes("REDACTED"))).toEqual([])
    expect(asked.filter((r) => r.path.endsWith("/Patient.000.ndjson"))).toHaveLength(1)
    expect(archiveMismatches(out)).toEqual([])
    expect(exportEvents(out).some((e) => e.event === "links-fetched")).toBe(true)
  })
})

describe.concurrent("ferry export stops on faults it cannot recover from", () => {
  it("a short file on the first job only: downloaded again, then a new job, which completes", async ({
    expect,
  }) => {
    let cleared: Promise<void> | undefined
    const x = await exportWith(
      "short-once",
      { shortFile: { type: "Condition", missing: 2 } },
      {
        onStderr: (text, baseUrl) => {
          if (
            cleared === undefined &&
            text.includes("the job's files do not add up, so a new export job is started")
          )
            cleared = setSandboxFaults(baseUrl, {})
        },
      },
    )
    await cleared
    await expectComplete(expect, x)
    const events = exportEvents(x.out)
    expect(events.filter((e) => e.event === "inconsistent")).toHaveLength(1)
    expect(events.filter((e) => e.event === "kickoff")).toHaveLength(2)
    // every event the export said has a sentence: none printed as its raw name and JSON fields
    expect(x.run.stderr).not.toMatch(/^ferry export: [a-z-]+ \{/m)
    expect(x.run.stderr).toContain("ferry export: the replaced export job is released on the server")
  })

  it("a permanently short file: one new job, then exit 4 and one line naming the file's URL; the archive stays incomplete", async ({
    expect,
  }) => {
    const x = await exportWith("short", { shortFile: { type: "Condition", missing: 2, everyJob: true } })
    expect(x.run.code, x.run.stderr).toBe(4)
    expect(lastLine(x.run.stderr)).toMatch(
      /^ferry: http:\/\/127\.0\.0\.1:\d+\/fhir\/bulk\/files\/\S+\/Condition\.000\.ndjson: data\/Condition\.000\.ndjson holds 98 resources but the manifest announced 100, also after downloading it again, in 2 export jobs; the server's export is inconsistent, report it to the server's operators$/,
    )
    expect(exportEvents(x.out).filter((e) => e.event === "count-mismatch")).toHaveLength(2)
    expect(exportEvents(x.out).filter((e) => e.event === "kickoff")).toHaveLength(2)
    // Downloaded twice per job, then given up: never a silently short archive.
    const condition000 = ofRoute(x, "download").filter((r) => r.path.endsWith("/Condition.000.ndjson"))
    expect(condition000).toHaveLength(4)
    const manifest = archiveManifest(x.out)
    expect(manifest.complete).toBe(false)
    expect(manifest.files.some((f) => f.path === "data/Condition.000.ndjson")).toBe(false)
    // …and the short file does not stay on disk under its final name.
    expect(NFS.existsSync(Path.join(x.out, "data", "Condition.000.ndjson"))).toBe(false)
  })

  it("a job the server reports failed (500, a non-transient code): exit 4 at the first poll, one line naming the status URL", async ({
    expect,
  }) => {
    const x = await exportWith("job-failed", { failJobs: true }, { args: ["--timeout", "10m"] })
    expect(x.run.code, x.run.stderr).toBe(4)
    expect(lastLine(x.run.stderr)).toMatch(
      /^ferry: http:\/\/127\.0\.0\.1:\d+\/fhir\/bulk\/status\/\S+: the export job failed \(500\): [^\n]*it could not be completed \(the sandbox's failJobs fault\); check the server's logs, then run the export again$/,
    )
    // no polling on (a job failure is not a transient error of the status request), no second kick-off
    expect(ofRoute(x, "status")).toHaveLength(1)
    expect(ofRoute(x, "kickoff")).toHaveLength(1)
    expect(archiveManifest(x.out).complete).toBe(false)
  })

  it("file URLs that answer 404 while the job still lists them: exit 4 at once, no new job, naming the file URL", async ({
    expect,
  }) => {
    const x = await exportWith("files-404", {
      expireFiles: { afterSeconds: 0, status: 404, type: "Patient" },
    })
    expect(x.run.code, x.run.stderr).toBe(4)
    expect(lastLine(x.run.stderr)).toMatch(
      /^ferry: http:\/\/127\.0\.0\.1:\d+\/fhir\/bulk\/files\/\S+\/Patient\.000\.ndjson: the server answers 404 for a file its export job still lists under this URL .*report it to the server's operators$/,
    )
    expect(ofRoute(x, "kickoff")).toHaveLength(1)
  })

  it("files that expire on every job: exit 4 after 3 new kick-offs, one line naming the status URL", async ({
    expect,
  }) => {
    const x = await exportWith("expired-always", { expireFiles: { firstAttempt: true, type: "Patient" } })
    expect(x.run.code, x.run.stderr).toBe(4)
    expect(lastLine(x.run.stderr)).toMatch(
      /^ferry: http:\/\/127\.0\.0\.1:\d+\/fhir\/bulk\/status\/\S+: the output files kept expiring \(410\/403\/404\) after 3 new kick-offs \(last: http:\/\/127\.0\.0\.1:\d+\/fhir\/bulk\/files\/\S+\/Patient\.000\.ndjson answered 410\); download faster [^\n]+$/,
    )
    const events = exportEvents(x.out)
    expect(events.filter((e) => e.event === "kickoff")).toHaveLength(4)
    expect(events.filter((e) => e.event === "expired")).toHaveLength(4)
    expect(archiveManifest(x.out).complete).toBe(false)
  })

  it("a kick-off answered 429 after every retry: another job of this client is named as the likely cause, not --parallel", async ({
    expect,
  }) => {
    const x = await exportWith("kickoff-429", {
      throttle: [{ route: "kickoff", first: 100, retryAfter: "seconds", seconds: 0 }],
    })
    expect(x.run.code, x.run.stderr).toBe(4)
    expect(lastLine(x.run.stderr)).toMatch(
      /the server refused to start the export \(429 after every retry; it said: .*\): it runs one export job per client at a time, and another of this client's is likely still running/,
    )
    expect(lastLine(x.run.stderr)).not.toContain("--parallel")
  })

  it("outputs moved to error[]: everything is downloaded, then exit 4 naming the first error, the archive unfinished and the job kept; --allow-export-errors finishes it", async ({
    expect,
  }) => {
    const x = await exportWith("to-error", { outputsToError: { types: ["Condition"] } })
    // The job finished (200), but its error file says it did not export the Conditions: not a finished archive.
    expect(x.run.code, x.run.stderr).toBe(4)
    expect(lastLine(x.run.stderr)).toMatch(
      /the server's error files report 6 error\(s\) \(first: "Export of Condition\.000\.ndjson \(100 Condition\) failed \(sandbox fault\)\." in errors\/OperationOutcome\.000\.ndjson:1; all in the archive's errors\/ folder\): its job did not export what they cover, so the archive is left unfinished .* and the job is kept \(its status URL in journal\.ndjson\); accept this archive as it is by running the same command again with --allow-export-errors, or fix the cause at the source and export into another --out \(the same one would take this job's files again\)$/,
    )
    expect(archiveManifest(x.out).complete).toBe(false)
    expect(x.requests.filter((r) => r.method === "DELETE")).toHaveLength(0)

    // accepted: the same command with --allow-export-errors finishes the archive from what is there
    const again = await runFerry(exportArgs(x.baseUrl, x.out, ["--allow-export-errors"]))
    expect(again.code, again.stderr).toBe(0)
    const manifest = archiveManifest(x.out)
    expect(manifest.complete).toBe(true)
    expect(archiveMismatches(x.out)).toEqual([])
    // One OperationOutcome per dropped Condition file (6 files of 100), kept in errors/.
    expect(manifest.errors.map((f) => [f.path, f.type, f.count])).toEqual([
      ["errors/OperationOutcome.000.ndjson", "OperationOutcome", 6],
    ])
    const { Condition: _dropped, ...rest } = await serverCounts(x.baseUrl, TYPES)
    expect(archiveCounts(x.out)).toEqual(rest)
    // Not hidden: one stderr line says what the errors are, and the JSON summary counts them.
    const warnings = again.stderr.split("\n").filter((l) => l.startsWith("ferry export: WARNING: "))
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toContain(
      'the server\'s error files report 6 error(s) (first: "Export of Condition.000.ndjson (100 Condition) failed (sandbox fault)." in errors/OperationOutcome.000.ndjson:1): the archive lacks what they cover (--allow-export-errors)',
    )
    expect(exportEvents(x.out).filter((e) => e.event === "kickoff")).toHaveLength(1)
    expect((JSON.parse(again.stdout) as { errors: number }).errors).toBe(6)
  })
})
