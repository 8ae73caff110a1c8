/**
 * `ferry migrate` (in process) into a target behind SMART Backend Services: the sandbox's token endpoint and
 * its scope enforcement (GETs need r/s, writes c/u/d; 403 without), on real loopback servers.
 */
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import * as Keys from "@ferry/auth/Keys"
import * as Sandbox from "@ferry/sandbox/Sandbox"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { ferry } from "../helpers/inProcess.js"

const tmp = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-migrate-auth-"))
afterAll(() => NFS.rmSync(tmp, { recursive: true, force: true }))

const patients = ["p1", "p2"].map((id) =>
  JSON.stringify({ resourceType: "Patient", id, name: [{ family: `Doe-${id}` }] }),
)

/** A source holding two Patients, and a SMART target whose client may be granted `scopes`. */
const servers = (name: string, scopes: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const seed = Path.join(tmp, `${name}-Patient.ndjson`)
    NFS.writeFileSync(seed, `${patients.join("\n")}\n`)
    const source = yield* Sandbox.start({ port: 0, seed: [seed] })
    const { privateJwk, publicJwks } = yield* Keys.generate("ES384")
    const keyFile = Path.join(tmp, `${name}.jwk`)
    NFS.writeFileSync(keyFile, JSON.stringify(privateJwk), { mode: 0o600 })
    const target = yield* Sandbox.start({
      port: 0,
      auth: { clients: [{ clientId: "ferry-target", jwks: publicJwks, scopes }] },
    })
    const args = [
      "migrate",
      "--from",
      source.baseUrl,
      "--to",
      target.baseUrl,
      "--archive",
      Path.join(tmp, `${name}-archive`),
      "--target-auth",
      "smart",
      "--target-client-id",
      "ferry-target",
      "--target-key",
      keyFile,
    ]
    return { target, args }
  })

describe("ferry migrate into a SMART target", () => {
  it.scopedLive(
    "asks the target for write access (system/*.cruds) by default, so the writes go through",
    () =>
      Effect.gen(function* () {
        const { target, args } = yield* servers("writes", ["system/*.*"])
        const { code, output } = yield* ferry(args)
        assert.strictEqual(code, 0, output)
        // a 403 as such, not the digits inside a port number or a duration (`127.0.0.1:44035` made this flaky)
        assert.notMatch(output, /(?<![\d.])403(?![\d.])/)
        assert.strictEqual(target.store.count("Patient"), 2)
      }),
    120_000,
  )

  it.scopedLive(
    "a client the target allows only to read fails before anything is written, exit 3",
    () =>
      Effect.gen(function* () {
        const { target, args } = yield* servers("read-only", ["system/*.rs"])
        const { code, output } = yield* ferry(args)
        assert.strictEqual(code, 3, output)
        assert.include(output, "invalid_scope")
        assert.strictEqual(target.store.count("Patient"), 0)
      }),
    120_000,
  )
})
