import { execFile } from "node:child_process"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"
import { ferryBin } from "./helpers/ferry.js"

const run = promisify(execFile)

describe("ferry binary", () => {
  it("prints its version", async () => {
    const { stdout } = await run(process.execPath, [ferryBin, "--version"])
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/)
  })

  it("prints help naming the tool", async () => {
    const { stdout } = await run(process.execPath, [ferryBin, "--help"])
    expect(stdout).toContain("FHIR R4")
  })
})
