import { assert, describe, it } from "@effect/vitest"
import {
  inCompartment,
  isMember,
  memberTypes,
  patientCompartment,
  r4ResourceTypes,
  topLevelPaths,
} from "../src/Compartment.js"

describe("Compartment", () => {
  it("lists the 66 R4 member types, all of them R4 types; non-members are absent", () => {
    assert.strictEqual(memberTypes.length, 66)
    for (const t of memberTypes) assert.isTrue(r4ResourceTypes.has(t), t)
    for (const t of ["Binary", "Organization", "Practitioner", "Medication", "Location", "Device", "Task"]) {
      assert.isFalse(isMember(t), t)
    }
    assert.deepStrictEqual(
      patientCompartment.Coverage!.map((p) => p.param),
      ["policy-holder", "subscriber", "beneficiary", "payor"],
    )
  })

  it("gives top-level elements for nested parameter paths", () => {
    assert.deepStrictEqual(topLevelPaths("Appointment"), ["participant"])
    assert.deepStrictEqual(topLevelPaths("AuditEvent"), ["agent", "entity"])
    assert.deepStrictEqual(topLevelPaths("Coverage"), ["policyHolder", "subscriber", "beneficiary", "payor"])
    assert.deepStrictEqual(topLevelPaths("Organization"), [])
  })

  it("decides membership by walking the parameter paths", () => {
    const ids = new Set(["p1"])
    const obs = { resourceType: "Observation", id: "o", performer: [{ reference: "Patient/p1" }] }
    assert.isTrue(inCompartment(obs, ids))
    assert.isFalse(inCompartment({ ...obs, performer: [{ reference: "Patient/p2" }] }, ids))
    assert.isTrue(inCompartment({ ...obs, performer: [{ reference: "Patient/p2" }] }, undefined))
    const appt = {
      resourceType: "Appointment",
      id: "a",
      participant: [{ actor: { reference: "http://x/fhir/Patient/p1" } }],
    }
    assert.isTrue(inCompartment(appt, ids))
    // a reference outside the listed paths does not count
    assert.isFalse(
      inCompartment({ resourceType: "Encounter", id: "e", basedOn: [{ reference: "Patient/p1" }] }, ids),
    )
    assert.isTrue(inCompartment({ resourceType: "Patient", id: "p1" }, ids))
    assert.isTrue(
      inCompartment(
        { resourceType: "Patient", id: "p9", link: [{ other: { reference: "Patient/p1" } }] },
        ids,
      ),
    )
    assert.isFalse(
      inCompartment({ resourceType: "Organization", id: "x", partOf: { reference: "Patient/p1" } }, ids),
    )
  })
})
