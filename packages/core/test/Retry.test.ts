import { HttpClientError, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { assertSome } from "@effect/vitest/utils"
import { Duration, Option } from "effect"
import { AuthError, FhirError } from "../src/Errors.js"
import * as OperationOutcome from "../src/OperationOutcome.js"
import { Attempt, isRetryable, isTransientOutcome, retryAfter } from "../src/Retry.js"

const seconds = (o: Option.Option<Duration.Duration>) => Option.map(o, Duration.toSeconds)

describe("retryAfter", () => {
  const now = Date.parse("2026-10-21T07:26:00Z")

  it("reads delta seconds", () => {
    assertSome(seconds(retryAfter("45", now)), 45)
    assertSome(seconds(retryAfter(" 0 ", now)), 0)
    assertSome(seconds(retryAfter("1.5", now)), 1.5)
  })

  it("reads an HTTP-date relative to now", () => {
    assertSome(seconds(retryAfter("Wed, 21 Oct 2026 07:27:30 GMT", now)), 90)
  })

  it("reads a huge number as an absolute epoch timestamp (seconds or milliseconds)", () => {
    const at = now / 1000 + 60
    assertSome(seconds(retryAfter(String(at), now)), 60)
    assertSome(seconds(retryAfter(String(now + 30_000), now)), 30)
  })

  it("turns past dates and negative delays into zero", () => {
    assertSome(seconds(retryAfter("Wed, 21 Oct 2026 07:00:00 GMT", now)), 0)
    assertSome(seconds(retryAfter(String(now / 1000 - 10), now)), 0)
    assertSome(seconds(retryAfter("-5", now)), 0)
  })

  it("caps at 120 s by default, or at the given maximum", () => {
    assertSome(seconds(retryAfter("3600", now)), 120)
    assertSome(seconds(retryAfter("3600", now, "10 seconds")), 10)
    assertSome(seconds(retryAfter("Thu, 22 Oct 2026 07:26:00 GMT", now)), 120)
  })

  it("ignores a missing or unreadable header", () => {
    assert.isTrue(Option.isNone(retryAfter(undefined, now)))
    assert.isTrue(Option.isNone(retryAfter("", now)))
    assert.isTrue(Option.isNone(retryAfter("soon", now)))
  })
})

describe("isRetryable", () => {
  const status = (s: number, outcome?: OperationOutcome.OperationOutcome) =>
    new FhirError({ reason: "Status", method: "GET", url: "http://x/fhir/Patient", status: s, outcome })

  it("retries throttling, gateway errors, timeouts and transport failures", () => {
    for (const s of [408, 429, 502, 503, 504]) assert.isTrue(isRetryable(status(s)), `${s}`)
    assert.isTrue(isRetryable(new FhirError({ reason: "Transport", method: "GET", url: "http://x" })))
    assert.isTrue(isRetryable(new Attempt({ error: status(429), retryAfter: "1" })))
    assert.isTrue(
      isRetryable(
        new FhirError({ reason: "Transport", method: "GET", url: "http://x", detail: "ECONNRESET" }),
      ),
    )
  })

  it("never retries a transport failure another try cannot cure (TLS, not HTTP, a request undici refuses)", () => {
    for (const detail of [
      "DEPTH_ZERO_SELF_SIGNED_CERT",
      "CERT_HAS_EXPIRED",
      "ERR_TLS_CERT_ALTNAME_INVALID",
      "ERR_SSL_WRONG_VERSION_NUMBER",
      "HTTPParserError",
      "UND_ERR_INVALID_ARG",
    ]) {
      const error = new FhirError({ reason: "Transport", method: "GET", url: "https://x", detail })
      assert.isFalse(isRetryable(error), detail)
      assert.isFalse(isRetryable(new Attempt({ error, retryAfter: undefined })), detail)
    }
  })

  it("never retries other 4xx, decode failures, auth failures or permanent attempts", () => {
    for (const s of [400, 401, 403, 404, 405, 409, 412, 422]) assert.isFalse(isRetryable(status(s)), `${s}`)
    assert.isFalse(isRetryable(new FhirError({ reason: "Decode", method: "GET", url: "http://x" })))
    assert.isFalse(isRetryable(new AuthError({ reason: "TokenRequest", detail: "no" })))
    assert.isFalse(
      isRetryable(
        new Attempt({
          error: new FhirError({ reason: "Transport", method: "GET", url: "x" }),
          retryAfter: undefined,
          permanent: true,
        }),
      ),
    )
  })

  it("retries a 500 only when its OperationOutcome is transient", () => {
    assert.isTrue(isRetryable(status(500, OperationOutcome.make("error", "transient", "busy"))))
    assert.isTrue(isRetryable(status(500, OperationOutcome.make("fatal", "lock-error", "locked"))))
    assert.isTrue(isRetryable(status(500, OperationOutcome.make("error", "exception", "oops"))))
    assert.isFalse(isRetryable(status(500, OperationOutcome.make("error", "processing", "bad data"))))
    assert.isFalse(isRetryable(status(500)))
  })

  it("judges a mixed OperationOutcome by its error issues", () => {
    assert.isTrue(
      isTransientOutcome({
        resourceType: "OperationOutcome",
        issue: [
          { severity: "information", code: "informational" },
          { severity: "error", code: "timeout" },
        ],
      }),
    )
    assert.isFalse(
      isTransientOutcome({
        resourceType: "OperationOutcome",
        issue: [
          { severity: "error", code: "timeout" },
          { severity: "error", code: "invalid" },
        ],
      }),
    )
  })

  it("understands platform HttpClientErrors (for HttpClient.retry)", () => {
    const request = HttpClientRequest.get("http://x/fhir")
    const response = (s: number) =>
      new HttpClientError.ResponseError({
        request,
        response: HttpClientResponse.fromWeb(request, new Response(null, { status: s })),
        reason: "StatusCode",
      })
    assert.isTrue(isRetryable(response(503)))
    assert.isFalse(isRetryable(response(404)))
    assert.isTrue(isRetryable(new HttpClientError.RequestError({ request, reason: "Transport" })))
    assert.isFalse(isRetryable(new HttpClientError.RequestError({ request, reason: "InvalidUrl" })))
    // a request undici refuses to send (a header value with a line break) or a certificate not trusted
    for (const code of [
      "UND_ERR_INVALID_ARG",
      "DEPTH_ZERO_SELF_SIGNED_CERT",
      "ERR_SSL_WRONG_VERSION_NUMBER",
    ]) {
      const cause = Object.assign(new Error(code), { code })
      assert.isFalse(
        isRetryable(new HttpClientError.RequestError({ request, reason: "Transport", cause })),
        code,
      )
    }
    const reset = Object.assign(new Error("reset"), { code: "ECONNRESET" })
    assert.isTrue(
      isRetryable(new HttpClientError.RequestError({ request, reason: "Transport", cause: reset })),
    )
  })
})
