import { assert, describe, it } from "@effect/vitest"
import { assertSome } from "@effect/vitest/utils"
import * as Parameters from "@ferry/core/Parameters"
import { Effect, Exit, Option } from "effect"
import * as Kickoff from "../src/Kickoff.js"

describe("Kickoff", () => {
  const full = Kickoff.params({
    level: "patient",
    types: ["Patient", "Observation"],
    since: "2024-01-01T00:00:00Z",
    until: "2024-06-01T00:00:00Z",
    typeFilters: ["Observation?status=final", "Patient?active=true"],
    elements: ["id", "meta"],
    includeAssociatedData: ["LatestProvenanceResources"],
    organizeOutputBy: "Patient",
    allowPartialManifests: true,
    custom: [["_container", "exports"]],
  })

  it("GET query: every parameter, lists comma-joined, _typeFilter repeated, custom passed through", () => {
    assert.deepStrictEqual(Kickoff.query(full), [
      ["_type", "Patient,Observation"],
      ["_since", "2024-01-01T00:00:00Z"],
      ["_until", "2024-06-01T00:00:00Z"],
      ["_typeFilter", "Observation?status=final"],
      ["_typeFilter", "Patient?active=true"],
      ["_elements", "id,meta"],
      ["includeAssociatedData", "LatestProvenanceResources"],
      ["organizeOutputBy", "Patient"],
      ["allowPartialManifests", "true"],
      ["_container", "exports"],
    ])
    assert.isFalse(Kickoff.usesPost(full))
    assert.strictEqual(Kickoff.path(full), "Patient/$export")
  })

  it("POST body: a Parameters resource with typed values; patient forces POST", () => {
    const p = Kickoff.params({ ...full, patients: ["123", "Patient/456"] })
    assert.isTrue(Kickoff.usesPost(p))
    const body = Kickoff.body(p)
    assert.deepStrictEqual(
      Parameters.getAll(body, "patient").map((x) => Option.getOrUndefined(Parameters.valueReference(x))),
      ["Patient/123", "Patient/456"],
    )
    assertSome(Parameters.get(body, "_since").pipe(Option.map((x) => x.valueInstant)), "2024-01-01T00:00:00Z")
    assertSome(
      Parameters.get(body, "allowPartialManifests").pipe(Option.flatMap(Parameters.valueBoolean)),
      true,
    )
    assert.deepStrictEqual(Option.getOrUndefined(Parameters.getString(body, "_container")), "exports")
    assert.strictEqual(Parameters.getAll(body, "_typeFilter").length, 2)
  })

  it.effect("validate: group needs an id, patient is refused at system level", () =>
    Effect.gen(function* () {
      const group = yield* Kickoff.validate(Kickoff.params({ level: "group" })).pipe(Effect.exit)
      assert.isTrue(Exit.isFailure(group))
      const system = yield* Kickoff.validate(Kickoff.params({ level: "system", patients: ["1"] })).pipe(
        Effect.exit,
      )
      assert.isTrue(Exit.isFailure(system))
      const ok = yield* Kickoff.validate(Kickoff.params({ level: "group", groupId: "g 1" }))
      assert.strictEqual(Kickoff.path(ok), "Group/g%201/$export")
    }),
  )

  it.effect("validate: an _until not after _since is refused here (Config), not sent to the server", () =>
    Effect.gen(function* () {
      for (const until of ["2020-01-01T00:00:00Z", "2021-06-01T00:00:00Z"]) {
        const e = yield* Effect.flip(
          Kickoff.validate(Kickoff.params({ level: "system", since: "2021-06-01T00:00:00Z", until })),
        )
        assert.strictEqual(e.reason, "Config")
        assert.include(e.message, `--until ${until} is not after the export's _since (2021-06-01T00:00:00Z)`)
      }
      const ok = yield* Kickoff.validate(
        Kickoff.params({ level: "system", since: "2021-06-01T00:00:00Z", until: "2021-06-01T00:00:01Z" }),
      )
      assert.strictEqual(ok.until, "2021-06-01T00:00:01Z")
    }),
  )
})
