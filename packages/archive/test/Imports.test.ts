import { describe, expect, it } from "@effect/vitest"
import * as Imports from "../src/Imports.js"

describe("Imports layout", () => {
  it("names one folder per target, stable and filesystem-safe", () => {
    expect(Imports.targetSlug("http://127.0.0.1:8080/fhir")).toBe("127.0.0.1_8080_fhir")
    expect(Imports.targetSlug("https://fhir.example.org/r4/")).toBe("fhir.example.org_r4")
    expect(Imports.targetSlug("https://user@h/a?b=c")).toBe("user_h_a_b_c")
    expect(Imports.idMapPath("/a", "http://h:1/fhir")).toBe("/a/imports/h_1_fhir/idmap.ndjson")
    expect(Imports.quarantineDir("/a", "http://h:1/fhir")).toBe("/a/imports/h_1_fhir/quarantine")
  })
})
