import { assert, describe, it } from "@effect/vitest"
import * as Params from "../src/Params.js"

describe("Params", () => {
  it("lists comma-separated, repeated values", () => {
    assert.deepStrictEqual(Params.list(["Patient, Observation", "", "Encounter"]), [
      "Patient",
      "Observation",
      "Encounter",
    ])
  })
  it("the types a bulk export asks for, as a token's scopes must allow them", () => {
    assert.deepStrictEqual(Params.exportedTypes(["Patient"], "patient"), ["Patient"])
    // every type at the system level
    assert.deepStrictEqual(Params.exportedTypes([], "system"), [])
    // the compartment's at the Patient and Group levels: those the server declares, when it said which
    assert.deepStrictEqual(
      Params.exportedTypes([], "group", ["Patient", "Observation", "Practitioner", "Condition"]),
      ["Condition", "Observation", "Patient"],
    )
    const all = Params.exportedTypes([], "patient")
    assert.isAbove(all.length, 60)
    assert.include(all, "Observation")
    // a server that declares none of them: every compartment type
    assert.deepStrictEqual(Params.exportedTypes([], "patient", ["Practitioner"]), all)
  })
  it("names the first type that is not an R4 resource type, with the nearest one", () => {
    assert.isUndefined(Params.typesProblem("--type", ["Patient", "Observation"]))
    assert.isUndefined(Params.elementsProblem("--elements", ["id", "gender", "Patient.birthDate"]))
    assert.strictEqual(
      Params.elementsProblem("--elements", ["gender", "bad!"]),
      "--elements bad! is not an element name; give names as FHIR writes them, e.g. id,gender or Patient.birthDate",
    )
    assert.include(
      Params.elementsProblem("--elements", ["Patinet.gender"]) ?? "",
      "Patinet is not an R4 resource type",
    )
    assert.strictEqual(
      Params.typesProblem("--type", ["Patient", "Patinet"]),
      "--type Patinet is not an R4 resource type (did you mean Patient?); give type names as FHIR writes them, e.g. Patient,Observation",
    )
    assert.include(Params.typesProblem("--type", ["observation"]) ?? "", "did you mean Observation?")
    assert.notInclude(Params.typesProblem("--type", ["Zebra"]) ?? "", "did you mean")
  })
  it("accepts FHIR instants (or a date alone: 00:00 UTC), with a day that exists", () => {
    for (const ok of [
      "2024-01-31T00:00:00Z",
      "2024-02-29T23:59:59.123+05:30",
      "2020-12-31T10:00:00-14:00",
      "2024-01-31",
    ])
      assert.isUndefined(Params.instantProblem("--since", ok), ok)
    assert.strictEqual(Params.instant("2024-01-31"), "2024-01-31T00:00:00Z")
    assert.strictEqual(Params.instant("2024-01-31T10:00:00+01:00"), "2024-01-31T10:00:00+01:00")
    for (const bad of [
      "yesterday",
      "2024-02-30",
      "2024-01-31T00:00:00",
      "2020-13-45T00:00:00Z",
      "2023-02-29T00:00:00Z",
    ])
      assert.include(Params.instantProblem("--since", bad) ?? "", "is not a FHIR instant", bad)
    // a --since still to come (a typo of the year) would export nothing: refused; an --until there is fine,
    // and so is a --since within a day ahead (clocks, zones)
    assert.include(Params.instantProblem("--since", "2999-01-01") ?? "", "is in the future")
    assert.isUndefined(Params.instantProblem("--until", "2999-01-01"))
    assert.isUndefined(Params.instantProblem("--since", new Date(Date.now() + 3_600_000).toISOString()))
  })
  it("takes --type-filter values as Type?query, decoding the URL-encoded form once", () => {
    assert.deepStrictEqual(
      Params.typeFilters(["Observation?status=final", "Condition%3Fclinical-status%3Dactive"]),
      {
        filters: ["Observation?status=final", "Condition?clinical-status=active"],
      },
    )
    for (const bad of ["status=final", "Observation", "Observation?", "observation?status=final", "Obs?x=1"])
      assert.include(
        (Params.typeFilters([bad]) as { problem: string }).problem,
        "is not a search of an R4 resource type",
        bad,
      )
    for (const [shaping, name] of [
      ["Observation?_include=Observation:subject", "_include"],
      ["Observation?status=final&_revinclude:iterate=Provenance:target", "_revinclude"],
      ["Condition%3F_sort%3Ddate", "_sort"],
      ["Observation?code=1&_count=5", "_count"],
    ])
      assert.include(
        (Params.typeFilters([shaping!]) as { problem: string }).problem,
        `uses ${name}, which shapes the result rather than filtering it`,
      )
    // a filter whose name only starts like one is a filter
    assert.deepStrictEqual(Params.typeFilters(["Observation?_id=1&_lastUpdated=gt2020"]), {
      filters: ["Observation?_id=1&_lastUpdated=gt2020"],
    })
  })
})
