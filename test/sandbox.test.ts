/**
 * `ferry sandbox` as a real process: prints its base URL, serves seeded data, stops cleanly on
 * SIGTERM/SIGINT, and a file database survives a restart (the cold-environment restore scenario).
 */
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { lastLine, runFerry, sharedData, startSandboxProcess } from "./helpers/ferry.js"

const tmp = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-sandbox-e2e-"))
afterAll(() => NFS.rmSync(tmp, { recursive: true, force: true }))

const json = async (
  url: string,
  init?: RequestInit,
): Promise<{ status: number; body: Record<string, unknown> }> => {
  const res = await fetch(url, init)
  return { status: res.status, body: (await res.json()) as Record<string, unknown> }
}

describe("ferry sandbox (process)", () => {
  it("serves seeded data, keeps it in a file database across a restart, and stops cleanly (exit 130, interrupted) on SIGTERM and SIGINT", async () => {
    const db = Path.join(tmp, "sandbox.db")
    const first = await startSandboxProcess(["--db", db, "--seed", sharedData("sample-bulk-10-patients")])
    try {
      expect(first.baseUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/fhir$/)
      const meta = await json(`${first.baseUrl}/metadata`)
      expect(meta.body.resourceType).toBe("CapabilityStatement")
      // the sandbox says the version of the ferry that runs it
      const version = (await runFerry(["--version"])).stdout.trim()
      expect(version).toMatch(/^\d+\.\d+\.\d+/)
      expect(meta.body.software).toEqual({ name: "Ferry sandbox", version })
      const patients = await json(`${first.baseUrl}/Patient?_summary=count`)
      expect(patients.body.total).toBe(13)
      const created = await json(`${first.baseUrl}/Patient`, {
        method: "POST",
        headers: { "content-type": "application/fhir+json" },
        body: JSON.stringify({ resourceType: "Patient", name: [{ family: "Restart" }] }),
      })
      expect(created.status).toBe(201)
      const id = created.body.id as string
      expect(await first.stop("SIGTERM")).toBe(130)

      // Same database, new process, new port: the data is still there.
      const second = await startSandboxProcess(["--db", db])
      try {
        expect(second.baseUrl).not.toBe(first.baseUrl)
        const again = await json(`${second.baseUrl}/Patient/${id}`)
        expect(again.status).toBe(200)
        expect((again.body.name as Array<{ family: string }>)[0]?.family).toBe("Restart")
        expect((await json(`${second.baseUrl}/Patient?_summary=count`)).body.total).toBe(14)
      } finally {
        expect(await second.stop("SIGINT")).toBe(130)
      }
    } finally {
      await first.stop()
    }
  })

  it("--refuse-client-ids answers 405 to update-as-create and --max-bundle-entries 413 to a larger Bundle", async () => {
    const sb = await startSandboxProcess(["--refuse-client-ids", "--max-bundle-entries", "2"])
    try {
      const put = await fetch(`${sb.baseUrl}/Patient/client-id-1`, {
        method: "PUT",
        headers: { "content-type": "application/fhir+json" },
        body: JSON.stringify({ resourceType: "Patient", id: "client-id-1" }),
      })
      expect(put.status).toBe(405)
      expect(((await put.json()) as { resourceType: string }).resourceType).toBe("OperationOutcome")
      const entry = { resource: { resourceType: "Patient" }, request: { method: "POST", url: "Patient" } }
      const bundle = (n: number) =>
        fetch(sb.baseUrl, {
          method: "POST",
          headers: { "content-type": "application/fhir+json" },
          body: JSON.stringify({ resourceType: "Bundle", type: "transaction", entry: Array(n).fill(entry) }),
        })
      expect((await bundle(3)).status).toBe(413)
      expect((await bundle(2)).status).toBe(200)
    } finally {
      await sb.stop()
    }
  })

  it("refuses a config file that is not JSON with one clear sentence and a non-zero exit", async () => {
    const bad = Path.join(tmp, "bad.json")
    NFS.writeFileSync(bad, "{ port: ")
    await expect(startSandboxProcess(["--config", bad])).rejects.toThrow(
      /exited \(2\).*ferry: .*bad\.json is not valid JSON/,
    )
  })

  it("a --seed path that is not there, and a port already in use: exit 2 (input), one sentence each", async () => {
    const missing = Path.join(tmp, "no-such-data")
    const seeded = await runFerry(["sandbox", "--port", "0", "--seed", missing])
    expect(seeded.code).toBe(2)
    expect(lastLine(seeded.stderr)).toMatch(/^ferry: .*could not load the seed data: .*no-such-data/)
    const first = await startSandboxProcess([])
    try {
      const port = new URL(first.baseUrl).port
      const taken = await runFerry(["sandbox", "--port", port])
      expect(taken.code).toBe(2)
      expect(lastLine(taken.stderr)).toMatch(new RegExp(`^ferry: .*could not listen.*:${port}`))
    } finally {
      await first.stop()
    }
  })
})
