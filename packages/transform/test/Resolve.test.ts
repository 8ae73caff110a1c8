import { describe, expect, it } from "@effect/vitest"
import { sourceBinaryId } from "../src/Resolve.js"

describe("sourceBinaryId", () => {
  const base = "https://ehr.example.org/fhir/"
  it("names the source's own Binary: relative, absolute under the base, version-specific", () => {
    expect(sourceBinaryId("Binary/abc-1", base)).toBe("abc-1")
    expect(sourceBinaryId("https://ehr.example.org/fhir/Binary/abc.2", base)).toBe("abc.2")
    expect(sourceBinaryId("https://ehr.example.org/fhir/Binary/x/_history/3", base)).toBe("x")
  })
  it("is undefined for other servers, other types and non-ids", () => {
    expect(sourceBinaryId("https://cdn.example.org/fhir/Binary/abc", base)).toBeUndefined()
    expect(sourceBinaryId("https://ehr.example.org/fhir/Media/abc", base)).toBeUndefined()
    expect(sourceBinaryId("Binary/", base)).toBeUndefined()
    expect(sourceBinaryId("Binary/a b", base)).toBeUndefined()
    expect(sourceBinaryId("https://ehr.example.org/files/photo.jpg", base)).toBeUndefined()
  })
})
