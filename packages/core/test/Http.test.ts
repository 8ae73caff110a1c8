import { assert, describe, it } from "@effect/vitest"
import { type ParseResult, Schema } from "effect"
import { FhirError } from "../src/Errors.js"
import {
  describeBody,
  describeParseError,
  isPermanentTransport,
  networkCode,
  redactUrl,
  resolveUrl,
  STALLED,
  sameOrigin,
  transportProblem,
} from "../src/Http.js"

describe("Http", () => {
  it("resolves relative URLs against the FHIR base and keeps absolute ones", () => {
    assert.strictEqual(resolveUrl("https://h/fhir/", "Patient/1"), "https://h/fhir/Patient/1")
    assert.strictEqual(resolveUrl("https://h/fhir", "/metadata"), "https://h/fhir/metadata")
    assert.strictEqual(resolveUrl("https://h/fhir", ""), "https://h/fhir")
    assert.strictEqual(resolveUrl("https://h/fhir", "?_getpages=1"), "https://h/fhir?_getpages=1")
    // a path that already holds the base's path (a `next` link as servers write them): resolved as URLs are
    assert.strictEqual(
      resolveUrl("http://h:8/fhir", "/fhir/Binary?_count=500&_cursor=x"),
      "http://h:8/fhir/Binary?_count=500&_cursor=x",
    )
    assert.strictEqual(resolveUrl("http://h:8/fhir/", "/fhir?_getpages=2"), "http://h:8/fhir?_getpages=2")
    assert.strictEqual(resolveUrl("https://h/r4/fhir", "/r4/fhir/Patient/1"), "https://h/r4/fhir/Patient/1")
    // not fooled by a longer segment
    assert.strictEqual(resolveUrl("https://h/fhir", "/fhirx/Patient"), "https://h/fhir/fhirx/Patient")
    assert.strictEqual(resolveUrl("https://h/fhir", "//cdn.example/Binary/1"), "https://cdn.example/Binary/1")
    // a base at the root: every path is the base's
    assert.strictEqual(resolveUrl("https://h", "/Patient/1"), "https://h/Patient/1")
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
    // the URL parser drops spaces and control characters around a URL (tabs and newlines anywhere): such a
    // text still parses, and still loses its user info
    for (const spaced of [
      " https://user:pw@h/r4?token=abc",
      "\nhttps://user:pw@h/r4",
      "ht\ttps://user:pw@h/r4 ",
    ]) {
      const said = redactUrl(spaced)
      assert.notInclude(said, "pw", JSON.stringify(spaced))
      assert.notInclude(said, "abc", JSON.stringify(spaced))
    }
    // a relative URL is said without its query
    assert.strictEqual(redactUrl("Binary/1?sig=x"), "Binary/1")
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
    assert.deepStrictEqual(
      describeBody('Bad request: could not parse {"resourceType":"Patient","name":"Secret"}', "text/plain"),
      { detail: "Bad request: could not parse {…}" },
    )
    // an HTML error page writes the quotes as entities; JSON inside a string escapes them
    for (const quoted of [
      "{&quot;resourceType&quot;:&quot;Patient&quot;,&quot;name&quot;:&quot;Secret&quot;}",
      "{&#34;resourceType&#34;:&#34;Patient&#34;,&#34;name&#34;:&#34;Secret&#34;}",
      '{\\"resourceType\\":\\"Patient\\",\\"name\\":\\"Secret\\"}',
      "{'resourceType': 'Patient', 'name': 'Secret'}",
    ])
      assert.deepStrictEqual(
        describeBody(`<html><body><h1>400</h1><p>Bad body ${quoted}</p></body></html>`, "text/html"),
        { detail: "400 Bad body {…}" },
        quoted,
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

  it("tells what a failure without an HTTP answer was, and which ones another try cannot cure", () => {
    const cases: ReadonlyArray<readonly [string, ReturnType<typeof transportProblem>, boolean]> = [
      ["ECONNREFUSED", "NothingThere", false],
      ["ENOTFOUND; not sent: nothing at https://h has answered since …", "NothingThere", false],
      ["ECONNRESET", "Other", false],
      ["UND_ERR_SOCKET", "Other", false],
      ["connection failed", "Other", false],
      ["no answer within 5m", "NoAnswer", false],
      ["DEPTH_ZERO_SELF_SIGNED_CERT", "UntrustedCertificate", true],
      ["SELF_SIGNED_CERT_IN_CHAIN", "UntrustedCertificate", true],
      ["UNABLE_TO_VERIFY_LEAF_SIGNATURE", "UntrustedCertificate", true],
      ["UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "UntrustedCertificate", true],
      ["CERT_HAS_EXPIRED", "ExpiredCertificate", true],
      ["ERR_TLS_CERT_ALTNAME_INVALID", "WrongHostCertificate", true],
      ["CERT_REVOKED", "BadCertificate", true],
      ["ERR_SSL_WRONG_VERSION_NUMBER", "NotTls", true],
      ["EPROTO", "Other", false], // a generic errno (a proxy's handshake failure under load): retried
      ["HTTPParserError", "NotHttp", true],
      ["HPE_INVALID_CONSTANT", "NotHttp", true],
      ["UND_ERR_INVALID_ARG", "Unsendable", true],
    ]
    for (const [detail, problem, permanent] of cases) {
      assert.strictEqual(transportProblem(detail), problem, detail)
      assert.strictEqual(isPermanentTransport(detail), permanent, detail)
    }
    // undici's parser error has no code: it is named
    const parser = Object.assign(new Error("Response does not match the HTTP/1.1 protocol"), {
      name: "HTTPParserError",
    })
    assert.strictEqual(networkCode(new TypeError("fetch failed", { cause: parser })), "HTTPParserError")
    assert.strictEqual(
      networkCode({ cause: Object.assign(new Error("x"), { code: "CERT_HAS_EXPIRED" }) }),
      "CERT_HAS_EXPIRED",
    )
  })

  it("says in one sentence what each transport failure is and what to do", () => {
    const message = (detail: string) =>
      new FhirError({ reason: "Transport", method: "GET", url: "https://h/fhir/metadata", detail }).message
    assert.strictEqual(
      message("DEPTH_ZERO_SELF_SIGNED_CERT"),
      "GET https://h/fhir/metadata: the server's TLS certificate is not trusted (DEPTH_ZERO_SELF_SIGNED_CERT); if it comes from your own CA, point NODE_EXTRA_CA_CERTS at that CA's certificate (PEM file)",
    )
    assert.strictEqual(
      message("CERT_HAS_EXPIRED"),
      "GET https://h/fhir/metadata: the server's TLS certificate has expired or is not valid yet (CERT_HAS_EXPIRED); the server's certificate must be renewed (or this machine's clock is wrong)",
    )
    assert.strictEqual(
      message("ERR_TLS_CERT_ALTNAME_INVALID"),
      "GET https://h/fhir/metadata: the server's TLS certificate is not for this host name (ERR_TLS_CERT_ALTNAME_INVALID); use the host name the certificate was issued for",
    )
    assert.strictEqual(
      message("ERR_SSL_WRONG_VERSION_NUMBER"),
      "GET https://h/fhir/metadata: the server does not speak TLS on that port (ERR_SSL_WRONG_VERSION_NUMBER; https to an http port?); check the URL's scheme and port",
    )
    assert.strictEqual(
      message("HTTPParserError"),
      "GET https://h/fhir/metadata: the server's answer is not HTTP (HTTPParserError); check the URL's port: is a FHIR server listening there?",
    )
    assert.strictEqual(
      message("UND_ERR_INVALID_ARG"),
      "GET https://h/fhir/metadata: the request could not be sent (UND_ERR_INVALID_ARG): a header or the URL holds characters HTTP does not allow; check the credentials (a token with a line break?) and the URL",
    )
    assert.strictEqual(
      message("no answer within 5m"),
      "GET https://h/fhir/metadata: the server accepted the connection but did not answer within 5m; check that it is up and not overloaded, then run the command again",
    )
    assert.strictEqual(
      message("ECONNREFUSED"),
      "GET https://h/fhir/metadata: could not reach the server (ECONNREFUSED); check the URL and that the server is running",
    )
    // connected, then closed before an answer: the server was reached
    for (const code of ["UND_ERR_SOCKET", "ECONNRESET"])
      assert.strictEqual(
        message(code),
        `GET https://h/fhir/metadata: the server closed the connection without answering (${code}), on every try; check the server (did it stop, or refuse the request?) and the network, then run the command again`,
      )
    // a download that broke off or stalled reached the server: not said as unreachable
    assert.strictEqual(
      message("the download broke off"),
      "GET https://h/fhir/metadata: the server's answer broke off while it was read (after every retry); check the server and the network, then run the command again",
    )
    assert.strictEqual(
      message("the answer to a Bundle broke off"),
      "GET https://h/fhir/metadata: the server's answer broke off while it was read (after every retry); check the server and the network, then run the command again",
    )
    for (const stalled of ["the answer stalled", "the answer to a Bundle stalled"])
      assert.strictEqual(
        message(stalled),
        "GET https://h/fhir/metadata: the server stopped in the middle of its answer: nothing more came within the request timeout, on every try; check the server and the network, or allow it longer with --request-timeout, then run the same command again",
      )
    assert.strictEqual(
      message(STALLED),
      "GET https://h/fhir/metadata: the download stalled: the server sent nothing more within the request timeout, on every try (what had arrived is kept); check the server and the network, or allow it longer with --request-timeout, then run the same command again to resume",
    )
  })
})
