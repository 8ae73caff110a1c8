import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { FhirError } from "../src/Errors.js"
import * as OperationOutcome from "../src/OperationOutcome.js"

describe("OperationOutcome", () => {
  it.effect("decodes a server outcome and keeps unnamed fields", () =>
    Effect.gen(function* () {
      const oo = yield* Schema.decodeUnknown(OperationOutcome.OperationOutcome)({
        resourceType: "OperationOutcome",
        id: "x",
        issue: [{ severity: "error", code: "transient", diagnostics: "busy", extra: 1 }],
      })
      expect(oo.id).toBe("x")
      expect(OperationOutcome.isTransient(oo)).toBe(true)
      expect(OperationOutcome.summary(oo)).toBe("error transient: busy")
    }),
  )

  it("summarises on one line, each issue's words cut at 300 characters, at most 5 issues", () => {
    const trace = `java.lang.NullPointerException\n\tat ca.uhn.fhir.Parser.parse(Parser.java:1)${"\n\tat x.y.Z.f(Z.java:2)".repeat(40)}`
    const oo: OperationOutcome.OperationOutcome = {
      resourceType: "OperationOutcome",
      issue: [
        { severity: "error", code: "exception", diagnostics: trace },
        { severity: "error", code: "invalid", details: { text: "Observation.status: required" } },
        ...Array.from({ length: 5 }, () => ({ severity: "warning" as const, code: "informational" })),
      ],
    }
    const text = OperationOutcome.summary(oo)
    expect(text).not.toContain("\n")
    const first = text.split("; ")[0] ?? ""
    expect(
      first.startsWith("error exception: java.lang.NullPointerException at ca.uhn.fhir.Parser.parse"),
    ).toBe(true)
    expect(first.length).toBe("error exception: ".length + 300)
    expect(first.endsWith("…")).toBe(true)
    expect(text).toContain("; error invalid: Observation.status: required; ")
    expect(text.endsWith("; warning informational; and 2 more issues")).toBe(true)
  })

  it("leaves out the JSON a server's words quote (the resource it was sent)", () => {
    const echo =
      'HAPI-0450: Failed to parse request body as JSON resource. Body: {"resourceType":"Patient","name":[{"family":"Secretfamilyname"}]}'
    const oo: OperationOutcome.OperationOutcome = {
      resourceType: "OperationOutcome",
      issue: [
        { severity: "error", code: "processing", diagnostics: echo },
        { severity: "error", code: "invalid", details: { text: 'entries: [ "Patient/1", "Patient/2" ]' } },
        { severity: "error", code: "invalid", diagnostics: "Observation.status: required {no JSON here}" },
      ],
    }
    expect(OperationOutcome.summary(oo)).toBe(
      "error processing: HAPI-0450: Failed to parse request body as JSON resource. Body: {…}; error invalid: entries: {…}; error invalid: Observation.status: required {no JSON here}",
    )
  })

  it("leaves out a JSON member quoted from the middle of a body, and bytes that are no text", () => {
    const near = (quoted: string): OperationOutcome.OperationOutcome => ({
      resourceType: "OperationOutcome",
      issue: [
        {
          severity: "error",
          code: "invalid",
          diagnostics: `HAPI-0450: Failed to parse request body near: ${quoted}`,
        },
      ],
    })
    for (const quoted of [
      '"family":"Secretfamilyname","given": ["Ann"]',
      '\\"family\\": \\"Secretfamilyname\\"',
      "&quot;family&quot;:&quot;Secretfamilyname&quot;",
      "&#34;family&#34;:&#34;Secretfamilyname&#34;",
      "'family': 'Secretfamilyname'",
      // a JPEG's first bytes as a UTF-8 decoder gives them
      "\ufffd\ufffd\ufffd\ufffd\u0000\u0010JFIF\u0000\u0001",
      "\u0000\u0010JFIF\u0000\u0001",
      "\ufffd\ufffdJFIF Secretfamilyname",
    ])
      expect(OperationOutcome.summary(near(quoted))).toBe(
        "error invalid: HAPI-0450: Failed to parse request body near: {…}",
      )
    // words with quotes that quote no JSON are kept
    const kept = 'Unknown search parameter "foo" for resource type "Patient"'
    expect(OperationOutcome.summary(near(kept))).toContain(kept)
  })

  it("is not transient when any issue is a hard failure", () => {
    const oo: OperationOutcome.OperationOutcome = {
      resourceType: "OperationOutcome",
      issue: [
        { severity: "error", code: "transient" },
        { severity: "error", code: "processing" },
      ],
    }
    expect(OperationOutcome.isTransient(oo)).toBe(false)
  })

  it("FhirError message names the method, URL and the server's words", () => {
    const e = new FhirError({
      reason: "Status",
      method: "GET",
      url: "http://127.0.0.1:1/fhir/Patient/1",
      status: 404,
      outcome: OperationOutcome.make("error", "not-found", "Patient/1 is not known"),
    })
    expect(e.message).toBe(
      "GET http://127.0.0.1:1/fhir/Patient/1: the server answered 404: error not-found: Patient/1 is not known",
    )
  })
})
