import { assert, describe, it } from "@effect/vitest"
import { type ParseResult, Schema } from "effect"
import { describeBody, describeParseError, redactUrl, resolveUrl, sameOrigin } from "../src/Http.js"

describe("Http", () => {
  it("resolves relative URLs against the FHIR base and keeps absolute ones", () => {
    assert.strictEqual(resolveUrl("https://h/fhir/", "Patient/1"), "https://h/fhir/Patient/1")
    assert.strictEqual(resolveUrl("https://h/fhir", "/metadata"), "https://h/fhir/metadata")
    assert.strictEqual(resolveUrl("https://h/fhir", ""), "https://h/fhir")
    assert.strictEqual(resolveUrl("https://h/fhir", "?_getpages=1"), "https://h/fhir?_getpages=1")
    assert.strictEqual(resolveUrl("https://h/fhir", "https://other/x"), "https://other/x")
  })

  it("compares origins by scheme, host and port", () => {
    assert.isTrue(sameOrigin("https://h/fhir/Patient", "https://h:443/other"))
    assert.isFalse(sameOrigin("https://h/fhir", "http://h/fhir"))
    assert.isFalse(sameOrigin("http://127.0.0.1:1/a", "http://127.0.0.1:2/a"))
    assert.isFalse(sameOrigin("https://h.evil/fhir", "https://h/fhir"))
    assert.isFalse(sameOrigin("not a url", "https://h/fhir"))
  })

  it("redacts credentials in URLs meant for errors", () => {
    const url = redactUrl("https://user:pw@s3/b/f.ndjson?X-Amz-Signature=abc&X-Amz-Credential=k&part=1")
    assert.notInclude(url, "abc")
    assert.notInclude(url, "pw")
    assert.include(url, "part=1")
    assert.include(redactUrl("https://blob/x?sv=2020&sig=zzz&se=2030"), "sig=REDACTED")
    const more = redactUrl(
      "https://f/x?jwt=a1&session_id=a2&sid=a3&hmac=a4&Policy=a5&X-Goog-Signature=a6&_count=10&type=Patient",
    )
    for (const secret of ["a1", "a2", "a3", "a4", "a5", "a6"]) assert.notInclude(more, secret)
    assert.include(more, "_count=10")
    assert.include(more, "type=Patient")
  })

  it("redacts search values that are a person's data, keeps the others", () => {
    const url = redactUrl(
      "https://h/fhir/Patient?identifier=urn%3Amrn%7CMRN-4711&name:contains=Medhurst&birthdate=1970-01-01&_typeFilter=Patient%3Ffamily%3DX&_count=2&_since=2024-01-01T00%3A00%3A00Z&patient=Patient%2F1",
    )
    for (const personal of ["MRN-4711", "Medhurst", "1970-01-01", "family"]) assert.notInclude(url, personal)
    assert.include(url, "identifier=REDACTED")
    assert.include(url, "_count=2")
    assert.include(url, "_since=2024-01-01")
    assert.include(url, "patient=Patient%2F1")
  })

  it("describes failed bodies without carrying resources", () => {
    const oo = describeBody(
      JSON.stringify({ resourceType: "OperationOutcome", issue: [{ severity: "error", code: "invalid" }] }),
      "application/fhir+json",
    )
    assert.strictEqual(oo.outcome?.issue[0]?.code, "invalid")
    assert.deepStrictEqual(
      describeBody(JSON.stringify({ resourceType: "Patient", name: "Doe" }), undefined),
      {
        detail: "the body was a Patient resource",
      },
    )
    assert.deepStrictEqual(describeBody('{"resourceType":"Pat', "application/json"), {
      detail: "the body was malformed or truncated JSON",
    })
    assert.deepStrictEqual(
      describeBody("<html><style>p{}</style><h1>502 Bad Gateway</h1></html>", "text/html"),
      {
        detail: "502 Bad Gateway",
      },
    )
    assert.deepStrictEqual(describeBody("", undefined), {})
    assert.isTrue((describeBody("x".repeat(1000), "text/plain").detail?.length ?? 0) <= 201)
  })

  it("names paths, not values, in decode failures", () => {
    const result = Schema.decodeUnknownEither(Schema.Struct({ name: Schema.Number }))({ name: "Jane Doe" })
    assert.isTrue(result._tag === "Left")
    if (result._tag === "Left") {
      const text = describeParseError("a thing", result.left as ParseResult.ParseError)
      assert.include(text, "name")
      assert.notInclude(text, "Jane")
    }
  })
})
