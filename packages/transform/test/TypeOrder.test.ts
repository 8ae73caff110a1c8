import { describe, expect, it } from "vitest"
import { rank } from "../src/TypeOrder.js"

describe("TypeOrder.rank", () => {
  it("referenced types rank before the types that reference them; cycles share a rank", () => {
    const chain = [
      "Organization",
      "Patient",
      "Encounter",
      "Observation",
      "Claim",
      "ExplanationOfBenefit",
      "Provenance",
    ]
    for (let i = 1; i < chain.length; i++) expect(rank(chain[i - 1]!)).toBeLessThan(rank(chain[i]!))
    expect(rank("Encounter")).toBe(rank("Condition"))
    expect(rank("Practitioner")).toBeLessThan(rank("Patient"))
  })
  it("unknown types rank with the clinical resources", () => {
    expect(rank("NotAType")).toBe(rank("Observation"))
    expect(rank("MedicationRequest")).toBe(rank("Observation"))
  })
})
