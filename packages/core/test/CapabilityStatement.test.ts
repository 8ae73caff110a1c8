import { assert, describe, it } from "@effect/vitest"
import { assertSome } from "@effect/vitest/utils"
import { Effect, Option, Schema } from "effect"
import * as CapabilityStatement from "../src/CapabilityStatement.js"

/** Shaped like HAPI FHIR's /metadata: operations on the system and on Patient/Group, SMART oauth-uris. */
const hapi = {
  resourceType: "CapabilityStatement",
  status: "active",
  date: "2024-05-01T00:00:00Z",
  publisher: "Not provided",
  kind: "instance",
  software: { name: "HAPI FHIR Server", version: "7.0.0" },
  fhirVersion: "4.0.1",
  format: ["application/fhir+xml", "json"],
  rest: [
    {
      mode: "server",
      security: {
        cors: true,
        service: [
          {
            coding: [
              {
                system: "http://terminology.hl7.org/CodeSystem/restful-security-service",
                code: "SMART-on-FHIR",
              },
            ],
          },
        ],
        extension: [
          {
            url: "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            extension: [
              { url: "token", valueUri: "https://auth.example.org/token" },
              { url: "authorize", valueUri: "https://auth.example.org/authorize" },
            ],
          },
        ],
      },
      resource: [
        {
          type: "Patient",
          profile: "http://hl7.org/fhir/StructureDefinition/Patient",
          interaction: [{ code: "read" }, { code: "update" }, { code: "create" }, { code: "search-type" }],
          versioning: "versioned-update",
          updateCreate: true,
          conditionalCreate: true,
          conditionalUpdate: true,
          conditionalDelete: "multiple",
          searchParam: [{ name: "identifier", type: "token" }],
          operation: [
            {
              name: "export",
              definition: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
            },
          ],
        },
        {
          type: "Group",
          interaction: [{ code: "read" }],
          operation: [
            {
              name: "export",
              definition: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
            },
          ],
        },
        { type: "Observation", interaction: [{ code: "read" }, { code: "create" }] },
      ],
      interaction: [{ code: "transaction" }, { code: "batch" }, { code: "history-system" }],
      operation: [
        { name: "export", definition: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export" },
        { name: "import", definition: "http://hapifhir.io/fhir/OperationDefinition/import" },
      ],
    },
  ],
}

/** Shaped like the SMART bulk-data reference server: all operations at system level, `$` names. */
const smartServer = {
  resourceType: "CapabilityStatement",
  fhirVersion: "4.0.1",
  rest: [
    {
      mode: "server",
      resource: [{ type: "Patient" }, { type: "Group", interaction: [{ code: "read" }] }],
      operation: [
        { name: "get-resource-counts", definition: "OperationDefinition/-s-get-resource-counts" },
        {
          name: "$patient-export",
          definition: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
        },
        {
          name: "group-export",
          definition: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export|2.0.0",
        },
      ],
    },
    { mode: "client", operation: [{ name: "export", definition: "x/export" }] },
  ],
}

describe("CapabilityStatement", () => {
  it.effect("decodes a HAPI-style statement and keeps what it does not model", () =>
    Effect.gen(function* () {
      const cs = yield* Schema.decodeUnknown(CapabilityStatement.CapabilityStatement)(hapi)
      assert.strictEqual(cs.fhirVersion, "4.0.1")
      assert.deepStrictEqual(cs.software, { name: "HAPI FHIR Server", version: "7.0.0" })
      assert.deepStrictEqual<unknown>(Schema.encodeSync(CapabilityStatement.CapabilityStatement)(cs), hapi)
      assert.deepStrictEqual(CapabilityStatement.types(cs), ["Patient", "Group", "Observation"])
      assertSome(CapabilityStatement.tokenUrl(cs), "https://auth.example.org/token")
      assertSome(CapabilityStatement.authorizeUrl(cs), "https://auth.example.org/authorize")
      assert.isTrue(CapabilityStatement.supportsInteraction(cs, "transaction"))
      assert.isTrue(CapabilityStatement.supportsInteraction(cs, "update", "Patient"))
      assert.isFalse(CapabilityStatement.supportsInteraction(cs, "update", "Observation"))
      assert.isTrue(CapabilityStatement.updateCreate(cs, "Patient"))
      assert.isFalse(CapabilityStatement.updateCreate(cs, "Observation"))
    }),
  )

  it("finds export at each level and the import dialect", () => {
    const cs = Schema.decodeUnknownSync(CapabilityStatement.CapabilityStatement)(hapi)
    assert.isTrue(CapabilityStatement.supportsOperation(cs, "export"))
    assert.isTrue(CapabilityStatement.supportsOperation(cs, "$export", "system"))
    assert.isTrue(CapabilityStatement.supportsOperation(cs, "export", "patient"))
    assert.isTrue(CapabilityStatement.supportsOperation(cs, "export", "Group"))
    assert.isFalse(CapabilityStatement.supportsOperation(cs, "export", "Observation"))
    assert.isFalse(CapabilityStatement.supportsOperation(cs, "everything"))
    assert.isTrue(CapabilityStatement.supportsImport(cs))
    assertSome(CapabilityStatement.importOperation(cs), "import")
  })

  it("understands Bulk Data style names (patient-export, group-export) and ignores client-mode rests", () => {
    const cs = Schema.decodeUnknownSync(CapabilityStatement.CapabilityStatement)(smartServer)
    assert.isTrue(CapabilityStatement.supportsOperation(cs, "export", "patient"))
    assert.isTrue(CapabilityStatement.supportsOperation(cs, "export", "group"))
    assert.isFalse(CapabilityStatement.supportsOperation(cs, "export", "system"))
    assert.isFalse(CapabilityStatement.supportsImport(cs))
    assert.isTrue(Option.isNone(CapabilityStatement.tokenUrl(cs)))
    assert.deepStrictEqual(CapabilityStatement.types(cs), ["Patient", "Group"])
  })

  it("detects $bulk-submit and survives a statement without rest", () => {
    const cs = Schema.decodeUnknownSync(CapabilityStatement.CapabilityStatement)({
      resourceType: "CapabilityStatement",
      fhirVersion: "4.0.1",
      rest: [
        {
          mode: "server",
          operation: [{ name: "bulk-submit", definition: "x/OperationDefinition/bulk-submit" }],
        },
      ],
    })
    assertSome(CapabilityStatement.importOperation(cs), "bulk-submit")
    const bare = Schema.decodeUnknownSync(CapabilityStatement.CapabilityStatement)({
      resourceType: "CapabilityStatement",
    })
    assert.deepStrictEqual(CapabilityStatement.types(bare), [])
    assert.isFalse(CapabilityStatement.supportsOperation(bare, "export"))
    assert.throws(() =>
      Schema.decodeUnknownSync(CapabilityStatement.CapabilityStatement)({ resourceType: "Bundle" }),
    )
  })
})
