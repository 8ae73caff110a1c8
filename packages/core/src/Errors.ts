import { Schema } from "effect"
import { transportSentence } from "./Http.js"
import { OperationOutcome, summary } from "./OperationOutcome.js"

/**
 * Anything that went wrong talking to a FHIR server.
 * - Transport: no HTTP answer (refused, reset, DNS, TLS, not HTTP, timeout); `detail` is the network error's
 *   code (or `no answer within …`), and the message says what it means (`transportSentence`)
 * - Status: a non-2xx answer (outcome kept when the body was an OperationOutcome)
 * - Throttled: 429 / 503 after retries were exhausted
 * - Decode: a 2xx answer whose body is not what the FHIR spec says it should be
 *
 * `hint` is what to do, when the client knows better than the generic advice (a 404 on the FHIR base: check
 * the base URL).
 */
export class FhirError extends Schema.TaggedError<FhirError>("@ferry/core/FhirError")("FhirError", {
  reason: Schema.Literal("Transport", "Status", "Throttled", "Decode"),
  method: Schema.String,
  url: Schema.String,
  status: Schema.optional(Schema.Number),
  outcome: Schema.optional(OperationOutcome),
  detail: Schema.optional(Schema.String),
  hint: Schema.optional(Schema.String),
  /** A Transport failure at the proxy the request went through: the sentence naming it (`proxyTrouble`). */
  proxy: Schema.optional(Schema.String),
  cause: Schema.optional(Schema.Defect),
}) {
  override get message(): string {
    const what =
      this.reason === "Transport"
        ? (this.proxy ?? transportSentence(this.detail))
        : this.reason === "Throttled"
          ? `the server kept answering ${this.status ?? 429} (throttled) after every retry; try again later or lower --parallel`
          : this.reason === "Decode"
            ? `the answer could not be read${this.detail ? `: ${this.detail}` : ""}; ${this.hint ?? "check that the URL points at a FHIR R4 server (not a web page or a proxy's login page)"}`
            : `the server answered ${this.answer}${this.hint ? `; ${this.hint}` : ""}`
    return `${this.method} ${this.url}: ${what}`
  }

  /** A Status failure's answer: the status and the server's words (`400: error invalid: …`). */
  get answer(): string {
    return `${this.status ?? "an error"}${this.outcome ? `: ${summary(this.outcome)}` : this.detail ? `: ${this.detail}` : ""}`
  }
}

/**
 * Authorization failures: discovery, key loading, token requests, refused tokens, and tokens granted
 * scopes that do not allow what Ferry must do on that server (`Scope`).
 */
export class AuthError extends Schema.TaggedError<AuthError>("@ferry/core/AuthError")("AuthError", {
  /**
   * `Unreachable`: no HTTP answer from the server where the token endpoint was to be discovered, or from the
   * token endpoint (nothing there, a TLS certificate not trusted, no answer in time), or only answers that may
   * pass (5xx, 408, 429) until the retries ran out, or an answer that is no token response (a login page, another
   * service at that URL): a server problem, exit 4.
   */
  reason: Schema.Literal(
    "Discovery",
    "Unreachable",
    "KeyInvalid",
    "TokenRequest",
    "Unauthorized",
    "Scope",
    "Config",
  ),
  url: Schema.optional(Schema.String),
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect),
}) {
  override get message(): string {
    return `${this.url ? `${this.url}: ` : ""}${this.detail}`
  }
}
