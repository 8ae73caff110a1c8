import * as NFS from "node:fs"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import * as OS from "node:os"
import * as Path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import type { Faults } from "../../src/Faults.js"
import { serveFile } from "../../src/internal/bulkFiles.js"

const dir = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-bulkfiles-"))
afterAll(() => NFS.rmSync(dir, { recursive: true, force: true }))

describe("serveFile with a download cut short (resetDownload)", () => {
  it("a client that goes away before the cut: the answer ends, and the file is let go", async () => {
    const file = Path.join(dir, "Patient.000.ndjson")
    // ≈ 21 MB, the cut after 20 MB: the client's going away leaves a full socket buffer that never drains
    NFS.writeFileSync(file, '{"resourceType":"Patient","id":"x"}\n'.repeat(600_000))
    const faults = {
      download: () => ({ gone: false, goneStatus: 410, resetAfterBytes: 20_000_000, delayMs: 0 }),
    } as unknown as Faults
    let finished: Promise<void> | undefined
    const server = Http.createServer((req, res) => {
      finished = serveFile(
        { req, res } as never,
        file,
        { key: "k", type: "Patient", completedAt: 0 } as never,
        faults,
      )
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    try {
      const port = (server.address() as AddressInfo).port
      await new Promise<void>((resolve, reject) => {
        Http.get(`http://127.0.0.1:${port}/f`, (res) => {
          res.once("data", () => {
            res.destroy()
            resolve()
          })
        }).on("error", reject)
      })
      const outcome = await Promise.race([
        finished!.then(() => "finished"),
        new Promise((resolve) => setTimeout(() => resolve("still waiting"), 3000)),
      ])
      expect(outcome).toBe("finished")
      const open = () =>
        NFS.readdirSync("/proc/self/fd").filter((fd) => {
          try {
            return NFS.readlinkSync(`/proc/self/fd/${fd}`) === file
          } catch {
            return false
          }
        })
      // (the read stream's close, once the loop left it, is asynchronous)
      for (let i = 0; i < 20 && open().length > 0; i++)
        await new Promise((resolve) => setTimeout(resolve, 50))
      expect(open()).toEqual([])
    } finally {
      server.closeAllConnections()
      server.close()
    }
  })
})
