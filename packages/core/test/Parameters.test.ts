import { assert, describe, it } from "@effect/vitest"
import { assertSome } from "@effect/vitest/utils"
import { Effect, Option, Schema } from "effect"
import * as Parameters from "../src/Parameters.js"

describe("Parameters", () => {
  it.effect("decodes the $export POST body from the spec and reads its values", () =>
    Effect.gen(function* () {
      const raw = {
        resourceType: "Parameters",
        parameter: [
          { name: "_type", valueString: "Patient,Observation" },
          { name: "_since", valueInstant: "2024-01-01T00:00:00Z" },
          { name: "patient", valueReference: { reference: "Patient/123" } },
          { name: "patient", valueReference: { reference: "Patient/456" } },
        ],
      }
      const p = yield* Schema.decodeUnknown(Parameters.Parameters)(raw)
      assertSome(Parameters.getString(p, "_type"), "Patient,Observation")
      assertSome(Parameters.getString(p, "_since"), "2024-01-01T00:00:00Z")
      assert.deepStrictEqual(
        Parameters.getAll(p, "patient").map((x) => Parameters.valueReference(x)),
        [Option.some("Patient/123"), Option.some("Patient/456")],
      )
      assert.isTrue(Option.isNone(Parameters.get(p, "_until")))
      assert.deepStrictEqual<unknown>(Schema.encodeSync(Parameters.Parameters)(p), raw)
    }),
  )

  it("builds a HAPI $import body with nested parts and reads it back", () => {
    const body = Parameters.make([
      Parameters.string("inputFormat", "application/fhir+ndjson"),
      Parameters.uri("inputSource", "https://source/fhir"),
      Parameters.part("storageDetail", [
        Parameters.code("type", "https"),
        Parameters.integer("maxBatchResourceCount", 500),
      ]),
      Parameters.part("input", [
        Parameters.code("type", "Patient"),
        Parameters.url("url", "https://stage/Patient.ndjson"),
      ]),
      Parameters.part("input", [
        Parameters.code("type", "Encounter"),
        Parameters.url("url", "https://stage/Encounter.ndjson"),
      ]),
    ])
    const decoded = Schema.decodeUnknownSync(Parameters.Parameters)(JSON.parse(JSON.stringify(body)))
    assert.deepStrictEqual(decoded, body)
    const inputs = Parameters.getAll(decoded, "input")
    assert.deepStrictEqual(
      inputs.map((i) => Option.getOrNull(Parameters.getString(i, "url"))),
      ["https://stage/Patient.ndjson", "https://stage/Encounter.ndjson"],
    )
    const storage = Option.getOrThrow(Parameters.get(decoded, "storageDetail"))
    assertSome(Option.flatMap(Parameters.get(storage, "maxBatchResourceCount"), Parameters.valueInteger), 500)
    assertSome(Parameters.valueX(inputs[0]!.part![0]!), ["valueCode", "Patient"] as const)
  })

  it("carries resources and booleans, and rejects a parameter without a name", () => {
    const p = Parameters.make([
      Parameters.resource("return", { resourceType: "Patient", id: "1" }),
      Parameters.boolean("allowPartialManifests", true),
    ])
    const decoded = Schema.decodeUnknownSync(Parameters.Parameters)(p)
    assert.strictEqual(Option.getOrThrow(Parameters.get(decoded, "return")).resource?.id, "1")
    assertSome(
      Option.flatMap(Parameters.get(decoded, "allowPartialManifests"), Parameters.valueBoolean),
      true,
    )
    assert.isTrue(Option.isNone(Option.flatMap(Parameters.get(decoded, "return"), Parameters.valueX)))
    assert.throws(() =>
      Schema.decodeUnknownSync(Parameters.Parameters)({
        resourceType: "Parameters",
        parameter: [{ valueString: "x" }],
      }),
    )
  })
})
