/** `ferry export` (in process): what it refuses before it touches the source or the archive, and its exit codes. */
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { ferry } from "./helpers/inProcess.js"
import { listening } from "@ferry/core/test/helpers/loopback"

const tmp = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-export-cli-"))
afterAll(() => NFS.rmSync(tmp, { recursive: true, force: true }))

/** A loopback server answering 404 to everything, for the scope; its base URL and the requests it saw. */
const nothingServer = Effect.gen(function* () {
  const seen: Array<string> = []
  const server = Http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`)
    res.writeHead(404).end()
  })
  yield* listening(server)
  return { baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`, seen }
})

describe("ferry export", () => {
  it.scopedLive(
    "--parallel outside 1–256, or a --timeout of 0, is a usage error (exit 2): the source is not asked, no archive is made",
    () =>
      Effect.gen(function* () {
        const { baseUrl, seen } = yield* nothingServer
        for (const n of ["0", "-3", "100000"]) {
          const out = Path.join(tmp, `parallel${n}`)
          const { code, output } = yield* ferry(["export", baseUrl, "--out", out, "--parallel", n])
          assert.strictEqual(code, 2, output)
          assert.include(output, `--parallel must be between 1 and 256 (it is ${n})`)
          assert.isFalse(NFS.existsSync(out))
        }
        for (const t of ["0", "0s", "0m"]) {
          const out = Path.join(tmp, `timeout${t}`)
          const { code, output } = yield* ferry(["export", baseUrl, "--out", out, "--timeout", t])
          assert.strictEqual(code, 2, output)
          assert.include(output, "--timeout")
          assert.isFalse(NFS.existsSync(out))
        }
        assert.deepStrictEqual(seen, [])
      }),
  )
})
