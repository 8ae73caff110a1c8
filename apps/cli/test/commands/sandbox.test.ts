import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { configProblem, type SandboxFlags, sandboxConfig } from "../../src/commands/sandbox.js"

const flags = (over: Partial<SandboxFlags> = {}): SandboxFlags => ({
  port: Option.none(),
  host: Option.none(),
  db: Option.none(),
  seed: [],
  generate: Option.none(),
  config: Option.none(),
  refuseClientIds: false,
  maxBundleEntries: Option.none(),
  ...over,
})

describe("ferry sandbox configuration problems", () => {
  it("says a flag by its name, a setting of the file by the file, an unknown one with the nearest known", () => {
    assert.isUndefined(configProblem(flags(), { port: 0, pageSize: 10 }))
    assert.strictEqual(
      configProblem(flags({ port: Option.some(70000) }), { port: 70000 }),
      "--port 70000 is not allowed (a port is 0 to 65535, 0 for one the system picks)",
    )
    const unknown = configProblem(flags({ config: Option.some("sandbox.json") }), { pagesize: 10 } as never)
    assert.include(unknown, 'sandbox.json: "pagesize" is not a sandbox setting (did you mean "pageSize"?)')
    assert.include(unknown, "the settings are host, port")
    assert.strictEqual(
      configProblem(flags({ config: Option.some("sandbox.json") }), { maxBundleEntries: "x" } as never),
      "sandbox.json: the setting maxBundleEntries is not valid (wrong type or value)",
    )
  })

  it.effect(
    "a config file that is not valid JSON: one sentence saying so and what to do, not a SyntaxError",
    () =>
      Effect.gen(function* () {
        const dir = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-sandbox-config-"))
        const file = Path.join(dir, "bad.json")
        NFS.writeFileSync(file, '{"port": 0,')
        const e = yield* Effect.flip(sandboxConfig(flags({ config: Option.some(file) })))
        NFS.rmSync(dir, { recursive: true, force: true })
        assert.strictEqual(e.reason, "Config")
        assert.include(e.message, `${file} is not valid JSON (`)
        assert.include(e.message, "); fix that file (see ferry sandbox --help for its fields)")
        assert.notInclude(e.message, "SyntaxError")
      }).pipe(Effect.provide(NodeContext.layer)),
  )
})
