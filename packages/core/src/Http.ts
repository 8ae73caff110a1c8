import type { HttpClientResponse } from "@effect/platform"
import { Chunk, Duration, Effect, Either, Option, ParseResult, Schema, Stream } from "effect"
import { OperationOutcome, printable, withoutQuotedJson } from "./OperationOutcome.js"

export const fhirJson = "application/fhir+json"
export const fhirNdjson = "application/fhir+ndjson"

const hasScheme = /^[a-zA-Z][a-zA-Z0-9+.-]*:/
// biome-ignore lint/suspicious/noControlCharactersInRegex: the characters the URL parser strips or removes
const spaceOrControl = /[\u0000-\u0020]/

const parseUrl = (url: string): URL | undefined => {
  try {
    return new URL(url)
  } catch {
    return undefined
  }
}

/** Whether `url` is absolute (has a scheme). */
export const isAbsolute = (url: string): boolean => hasScheme.test(url)

/**
 * Resolves `url` against a FHIR base: absolute URLs are kept, relative ones are appended to the base path
 * (`Patient/1` on `https://h/fhir` → `https://h/fhir/Patient/1`; `""` → the base itself). A path on the base's
 * host that already holds the base's path (`/fhir/Patient?_cursor=…`, as servers write `next` links) and a
 * scheme-relative `//host/…` resolve as URLs do; another path (`/metadata`) is taken as relative to the base.
 */
export const resolveUrl = (baseUrl: string, url: string): string => {
  if (isAbsolute(url)) return url
  if (url.startsWith("/")) {
    const parsed = parseUrl(baseUrl)
    if (parsed !== undefined) {
      if (url.startsWith("//")) return `${parsed.protocol}${url}`
      const path = parsed.pathname.replace(/\/+$/, "")
      if (path !== "" && (url === path || url.startsWith(`${path}/`) || url.startsWith(`${path}?`)))
        return `${parsed.origin}${url}`
    }
  }
  const base = baseUrl.replace(/\/+$/, "")
  const rel = url.replace(/^\/+/, "")
  if (rel === "") return base
  return rel.startsWith("?") ? `${base}${rel}` : `${base}/${rel}`
}

/** The origin (`scheme://host:port`) of an absolute URL, or none when it does not parse. */
export const originOf = (url: string): Option.Option<string> => {
  try {
    return Option.some(new URL(url).origin)
  } catch {
    return Option.none()
  }
}

/** True when both URLs parse and have the same origin (scheme, host and port). */
export const sameOrigin = (a: string, b: string): boolean => {
  const oa = originOf(a)
  const ob = originOf(b)
  return Option.isSome(oa) && Option.isSome(ob) && oa.value === ob.value
}

/**
 * Drops a response body that is no longer wanted (a failed or abandoned transfer), closing its connection.
 * The abort this causes is the only error it can then emit, so it is not reported.
 */
export const discardBody = (
  body: NodeJS.ReadableStream & { readonly destroyed: boolean; destroy(): void },
) => {
  if (body.destroyed) return
  body.on("error", () => undefined)
  body.destroy()
}

export const isRedirect = (status: number): boolean =>
  status === 301 || status === 302 || status === 303 || status === 307 || status === 308

const secretParam =
  /sig|signature|token|key|credential|secret|password|pass|auth|code|jwt|session|hmac|policy|^sid$|^x-amz-|^x-goog-|^se$|^sp$|^sv$/i

/**
 * Search parameters whose values are a person's data (an MRN, a name, a birth date, free text) or may hold it
 * (`_typeFilter`, `_filter`, `_query`), with any modifier (`identifier:of-type`, `name:contains`).
 */
const personalParam =
  /^(identifier|name|family|given|phonetic|birthdate|death-date|address(-[a-z]+)?|phone|email|telecom|_text|_content|_filter|_query|_typeFilter|value-[a-z-]+)(:[A-Za-z-]+)?$/i

/**
 * A URL safe to put in errors and logs: query values whose names look like credentials (pre-signed and SAS
 * URLs, tokens, codes) or like a person's data (`identifier=`, `name=`, `birthdate=`, …: a verify's
 * identifier search, a crawl's filters) are replaced with `REDACTED`; user info is dropped.
 */
export const redactUrl = (url: string): string => {
  // A relative URL (an attachment's `Binary/1`) cannot parse on its own: said the same way without the throw.
  // Only a text without spaces or control characters: the URL parser drops those around a URL (and tabs and
  // newlines anywhere), so ` https://user:pw@h/` parses, and its user info must go.
  if (!isAbsolute(url) && !spaceOrControl.test(url)) return url.replace(/\?.*$/, "")
  try {
    const u = new URL(url)
    u.username = ""
    u.password = ""
    for (const name of [...new Set(u.searchParams.keys())]) {
      if (secretParam.test(name) || personalParam.test(name)) u.searchParams.set(name, "REDACTED")
    }
    return u.toString()
  } catch {
    return url.replace(/\?.*$/, "")
  }
}

/**
 * Reads at most `limit` bytes of a response body as text (the rest is not read). A body that cannot be read
 * gives `undefined`: the caller is already reporting a failed status and only wants its explanation.
 */
export const readTextPrefix = (
  response: HttpClientResponse.HttpClientResponse,
  limit: number,
): Effect.Effect<string | undefined> =>
  response.stream.pipe(
    Stream.runFoldWhile(
      Chunk.empty<Uint8Array>(),
      (acc) => Chunk.reduce(acc, 0, (n, c) => n + c.length) < limit,
      (acc, chunk) => Chunk.append(acc, chunk),
    ),
    Effect.map((chunks) => {
      const all = new Uint8Array(Chunk.reduce(chunks, 0, (n, c) => n + c.length))
      let offset = 0
      for (const c of chunks) {
        all.set(c, offset)
        offset += c.length
      }
      return new TextDecoder().decode(all.subarray(0, limit))
    }),
    Effect.orElseSucceed(() => undefined),
  )

const decodeOutcome = Schema.decodeUnknownEither(OperationOutcome)

/**
 * What a failed answer's body says, without ever carrying a resource: the OperationOutcome when the body is
 * one, else a short description (the kind of JSON, or the first 200 characters of a text/HTML error page).
 */
/**
 * `text` (an error answer) without the credential of `authorization` (the header as sent), should the
 * server have echoed it.
 */
export const withoutCredential = <T extends string | undefined>(
  text: T,
  authorization: string | undefined,
): T => {
  const credential = authorization?.replace(/^\S+\s+/, "").trim()
  if (text === undefined || credential === undefined || credential.length < 8) return text
  const scrub = (s: string) => s.split(credential).join("[redacted]")
  // A JSON body may escape the credential's characters any way JSON allows (`\/`, `\u002B`): each string is
  // scrubbed as decoded (the body is then the same JSON, re-written).
  const trimmed = text.trim()
  if (trimmed.startsWith("{") || trimmed.startsWith("[")) {
    try {
      const json: unknown = JSON.parse(trimmed)
      return JSON.stringify(json, (_key, value: unknown) =>
        typeof value === "string" ? scrub(value) : value,
      ) as T
    } catch {
      // not JSON after all (or cut at the read limit): scrubbed as text
    }
  }
  // as text, with JSON's string escapes read first (a text body may quote the JSON it meant to send)
  return scrub(
    text.replace(/\\u([0-9a-fA-F]{4})|\\\//g, (_m, hex: string | undefined) =>
      hex === undefined ? "/" : String.fromCharCode(Number.parseInt(hex, 16)),
    ),
  ) as T
}

export const describeBody = (
  text: string | undefined,
  contentType: string | undefined,
): { readonly outcome?: OperationOutcome; readonly detail?: string } => {
  if (text === undefined) return { detail: "the body could not be read" }
  const trimmed = text.trim()
  if (trimmed === "") return {}
  if (trimmed.startsWith("{")) {
    let json: unknown
    try {
      json = JSON.parse(trimmed)
    } catch {
      return { detail: "the body was malformed or truncated JSON" }
    }
    const outcome = decodeOutcome(json)
    if (Either.isRight(outcome)) return { outcome: outcome.right }
    const rt = (json as { resourceType?: unknown }).resourceType
    return {
      detail: typeof rt === "string" ? `the body was a ${rt} resource` : "the body was a JSON document",
    }
  }
  const type = (contentType ?? "").toLowerCase()
  if (type.includes("json") || trimmed.startsWith("[")) return { detail: "the body was a JSON document" }
  // a text body can quote the request it answers (a resource): not past the first JSON it quotes
  const plain = printable(
    withoutQuotedJson(
      trimmed
        .replace(/<(script|style)[\s\S]*?<\/\1>/gi, " ")
        .replace(/<[^>]*>/g, " ")
        .replace(/\s+/g, " ")
        .trim(),
    ),
  )
  return plain === "" ? {} : { detail: plain.length > 200 ? `${plain.slice(0, 200)}…` : plain }
}

/** A decode failure as a short sentence naming only paths, never values (they may be patient data). */
export const describeParseError = (what: string, error: ParseResult.ParseError): string => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  const paths = [...new Set(issues.map((i) => (i.path.length === 0 ? "(root)" : i.path.join("."))))].slice(
    0,
    3,
  )
  return `expected ${what}; invalid at ${paths.join(", ")}`
}

/**
 * Network error codes that mean nothing answers at that address (a wrong host or port, a host that is down)
 * rather than a hiccup.
 */
export const nothingThereCodes: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
])

/**
 * Whether a body broke off because the server sent nothing more within the client's timeout (undici's
 * `bodyTimeout`, which `FhirClient.get` sets to the request timeout): a stalled transfer, not a reset one.
 */
export const isBodyTimeout = (cause: unknown): boolean => networkCode(cause) === "UND_ERR_BODY_TIMEOUT"

/**
 * A Transport error's `detail` for a body that failed while it was read: `<what> stalled` (nothing more came
 * within the timeout: `isBodyTimeout`) or `<what> broke off` (a reset, a closed connection); `transportSentence`
 * says each.
 */
export const bodyFailure = (
  what: "the answer" | "the answer to a Bundle" | "the download",
  cause: unknown,
): string =>
  `${what} ${isBodyTimeout(cause) ? "stalled" : isUndecodable(cause) ? "could not be decompressed" : "broke off"}`

/**
 * Whether a body failed because its bytes are not what its `Content-Encoding` says (zlib's and brotli's errors,
 * e.g. `Z_DATA_ERROR: incorrect header check`): the server's fault, not the network's.
 */
const isUndecodable = (cause: unknown): boolean =>
  /^(?:Z_DATA_ERROR|Z_BUF_ERROR|Z_STREAM_ERROR|ERR__ERROR_FORMAT|ERR_BROTLI)/.test(networkCode(cause) ?? "")

/** `bodyFailure`'s detail for a download that stalled. */
export const STALLED = "the download stalled"

const bodyFailed = /^the (answer|answer to a Bundle|download) (stalled|broke off|could not be decompressed)$/

/**
 * The network error's code (ECONNREFUSED, UND_ERR_SOCKET, …) under the platform's and fetch's wrappers. undici's
 * parser error (an answer that is not HTTP) may have no code: it is then `HTTPParserError`.
 */
export const networkCode = (cause: unknown): string | undefined => {
  let c = cause
  let parser = false
  for (let depth = 0; depth < 5 && typeof c === "object" && c !== null; depth++) {
    if ("code" in c && typeof c.code === "string") return c.code
    if ((c as { name?: unknown }).name === "HTTPParserError") parser = true
    c = "cause" in c ? (c as { cause: unknown }).cause : undefined
  }
  return parser ? "HTTPParserError" : undefined
}

/** How a per-attempt timeout is reported in a Transport error's `detail` (and recognised there). */
export const noAnswerWithin = (timeout: Duration.DurationInput): string =>
  `no answer within ${Duration.format(Duration.decode(timeout))}`

const noAnswer = /^no answer within (.+)$/

/** TLS certificate checks that fail because no trusted CA vouches for the certificate (a private CA). */
const untrustedCertificateCodes: ReadonlySet<string> = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_UNTRUSTED",
  "INVALID_CA",
])

const expiredCertificateCodes: ReadonlySet<string> = new Set([
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERROR_IN_CERT_NOT_BEFORE_FIELD",
  "ERROR_IN_CERT_NOT_AFTER_FIELD",
])

const wrongHostCertificateCodes: ReadonlySet<string> = new Set([
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "HOSTNAME_MISMATCH",
])

/** Other certificate checks that failed (a broken signature, a revoked certificate, …). */
const badCertificateCodes: ReadonlySet<string> = new Set([
  "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
  "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
  "CERT_SIGNATURE_FAILURE",
  "CERT_REVOKED",
  "CERT_REJECTED",
  "CERT_CHAIN_TOO_LONG",
  "PATH_LENGTH_EXCEEDED",
  "INVALID_PURPOSE",
])

/** An https request to a port that does not speak TLS (a plain-http port answers with HTTP, not a handshake). */
const notTlsCodes: ReadonlySet<string> = new Set([
  "ERR_SSL_WRONG_VERSION_NUMBER",
  "ERR_SSL_PACKET_LENGTH_TOO_LONG",
  "ERR_SSL_UNKNOWN_PROTOCOL",
])

/** A request Ferry could not even send (a header value or URL HTTP does not allow). */
const unsendableCodes: ReadonlySet<string> = new Set([
  "UND_ERR_INVALID_ARG",
  "ERR_INVALID_URL",
  "ERR_INVALID_CHAR",
  "ERR_INVALID_HTTP_TOKEN",
])

/**
 * What a failure without an HTTP answer was, from a Transport error's `detail` (a network error's code, the
 * per-attempt timeout, or a sentence): nothing at the address, a TLS certificate that is not trusted (expired,
 * for another host, otherwise refused), a port that does not speak TLS or not HTTP, a request that could not be
 * sent, no answer in time, or something else (a reset, a connection that broke off).
 */
export type TransportProblem =
  | "NothingThere"
  | "UntrustedCertificate"
  | "ExpiredCertificate"
  | "WrongHostCertificate"
  | "BadCertificate"
  | "NotTls"
  | "NotHttp"
  | "Unsendable"
  | "NoAnswer"
  | "Other"

/** The code a Transport error's `detail` starts with (`ECONNREFUSED; not sent: …` → `ECONNREFUSED`). */
/** Codes of a connection made and then closed or reset before the answer came. */
const closedCodes = new Set(["UND_ERR_SOCKET", "ECONNRESET", "EPIPE"])

const leadingCode = (detail: string): string => /^[A-Za-z][A-Za-z0-9_]*/.exec(detail)?.[0] ?? ""

export const transportProblem = (detail: string | undefined): TransportProblem => {
  if (detail === undefined) return "Other"
  if (noAnswer.test(detail)) return "NoAnswer"
  const code = leadingCode(detail)
  if (nothingThereCodes.has(code)) return "NothingThere"
  if (untrustedCertificateCodes.has(code)) return "UntrustedCertificate"
  if (expiredCertificateCodes.has(code)) return "ExpiredCertificate"
  if (wrongHostCertificateCodes.has(code)) return "WrongHostCertificate"
  if (badCertificateCodes.has(code)) return "BadCertificate"
  if (notTlsCodes.has(code)) return "NotTls"
  if (code === "HTTPParserError" || code.startsWith("HPE_")) return "NotHttp"
  if (unsendableCodes.has(code)) return "Unsendable"
  return "Other"
}

/**
 * Failures another try cannot cure: the same certificate, the same port and the same request meet the same
 * failure again. Not retried (a refused connection is: a server may be starting; the client's grace period
 * decides how long).
 */
export const isPermanentTransport = (detail: string | undefined): boolean => {
  switch (transportProblem(detail)) {
    case "UntrustedCertificate":
    case "ExpiredCertificate":
    case "WrongHostCertificate":
    case "BadCertificate":
    case "NotTls":
    case "NotHttp":
    case "Unsendable":
      return true
    default:
      return false
  }
}

/**
 * One sentence for a failure without an HTTP answer (a Transport error's `detail`): what it is and what to do.
 * TLS verification stays on: an untrusted certificate is made trusted (NODE_EXTRA_CA_CERTS), never skipped.
 */
export const transportSentence = (detail: string | undefined): string => {
  const code = detail === undefined ? "" : leadingCode(detail)
  switch (transportProblem(detail)) {
    case "UntrustedCertificate":
      return `the server's TLS certificate is not trusted (${code}); if it comes from your own CA, point NODE_EXTRA_CA_CERTS at that CA's certificate (PEM file)`
    case "ExpiredCertificate":
      return `the server's TLS certificate has expired or is not valid yet (${code}); the server's certificate must be renewed (or this machine's clock is wrong)`
    case "WrongHostCertificate":
      return `the server's TLS certificate is not for this host name (${code}); use the host name the certificate was issued for`
    case "BadCertificate":
      return `the server's TLS certificate was refused (${code}); the server's certificate must be fixed`
    case "NotTls":
      return `the server does not speak TLS on that port (${code}; https to an http port?); check the URL's scheme and port`
    case "NotHttp":
      return `the server's answer is not HTTP (${code}); check the URL's port: is a FHIR server listening there?`
    case "Unsendable":
      return `the request could not be sent (${code}): a header or the URL holds characters HTTP does not allow; check the credentials (a token with a line break?) and the URL`
    case "NoAnswer":
      return `the server accepted the connection but did not answer within ${noAnswer.exec(detail ?? "")?.[1] ?? "the time limit"}; check that it is up and not overloaded, then run the command again`
    default: {
      const body = bodyFailed.exec(detail ?? "")
      if (body?.[2] === "could not be decompressed")
        return "the server's answer says it is compressed (Content-Encoding) but its bytes are not valid gzip, deflate or br data; report it to the server's operators"
      if (body?.[2] === "broke off")
        return "the server's answer broke off while it was read (after every retry); check the server and the network, then run the command again"
      if (body?.[1] === "download")
        return "the download stalled: the server sent nothing more within the request timeout, on every try (what had arrived is kept); check the server and the network, or allow it longer with --request-timeout, then run the same command again to resume"
      if (body !== null)
        return "the server stopped in the middle of its answer: nothing more came within the request timeout, on every try; check the server and the network, or allow it longer with --request-timeout, then run the same command again"
      // connected, then the connection closed (or was reset) before an answer: the server was reached
      if (closedCodes.has(code))
        return `the server closed the connection without answering (${code}), on every try; check the server (did it stop, or refuse the request?) and the network, then run the command again`
      return `could not reach the server${detail ? ` (${detail})` : ""}; check the URL and that the server is running`
    }
  }
}
