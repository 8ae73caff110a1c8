import { assert, describe, it } from "@effect/vitest"
import { Option } from "effect"
import { configProblem, type SandboxFlags } from "../../src/commands/sandbox.js"

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
})
