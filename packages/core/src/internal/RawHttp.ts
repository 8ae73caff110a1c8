/**
 * One GET on undici's `request` API, for `FhirClient.get` (the policy — auth, redirects, retries, timeout,
 * errors — lives in FhirClient; this is only the transport). Redirects are never followed here.
 */
import { Data, Effect } from "effect"
import { type Dispatcher, request } from "undici"
import { discardBody, networkCode } from "../Http.js"

/** No HTTP answer: connection refused or reset, DNS, TLS, an unusable URL. */
export class SendError extends Data.TaggedError("@ferry/core/RawHttp/SendError")<{
  /** The error's code (e.g. `ECONNREFUSED`, `UND_ERR_SOCKET`), else a short description. */
  readonly detail: string
  /** Trying again cannot help (the URL or a header is unusable). */
  readonly permanent: boolean
  /** No headers within the time limit. */
  readonly timedOut: boolean
  readonly cause: unknown
}> {}

const sendError = (cause: unknown): SendError => {
  const code = networkCode(cause)
  return new SendError({
    detail: code ?? "connection failed",
    permanent: code === "UND_ERR_INVALID_ARG" || code === "ERR_INVALID_URL",
    timedOut: false,
    cause,
  })
}

/**
 * Sends a GET and hands back the answer once its headers arrived (any status). Interrupting the effect
 * aborts the request. `timeoutMs` (finite, > 0) bounds the wait for the headers, connecting included, with a
 * plain timer (an `Effect.timeout` per request costs a fiber and measurably more CPU in the hot loops), and
 * then each wait for the next piece of the body (undici's `bodyTimeout`: the body stream fails with
 * `UND_ERR_BODY_TIMEOUT`, see `Http.isBodyTimeout`): a body may take hours, but a server that stops sending in
 * the middle of one no longer holds the download for ever.
 */
export const send = (
  url: string,
  headers: Readonly<Record<string, string>>,
  timeoutMs: number,
): Effect.Effect<Dispatcher.ResponseData, SendError> =>
  // `resume` alone (no AbortSignal parameter): Effect then makes no AbortController of its own per request, and
  // interruption runs the returned canceler, which aborts the one this request already needs for its timer.
  Effect.async<Dispatcher.ResponseData, SendError>((resume) => {
    let parsed: URL
    try {
      parsed = new URL(url)
    } catch (cause) {
      resume(
        Effect.fail(
          new SendError({ detail: "the URL does not parse", permanent: true, timedOut: false, cause }),
        ),
      )
      return
    }
    const abort = new AbortController()
    let timedOut = false
    let interrupted = false
    const timer =
      Number.isFinite(timeoutMs) && timeoutMs > 0
        ? setTimeout(() => {
            timedOut = true
            abort.abort()
          }, timeoutMs)
        : undefined
    const settle = () => {
      if (timer !== undefined) clearTimeout(timer)
    }
    let pending: Promise<Dispatcher.ResponseData>
    try {
      pending = request(parsed, {
        method: "GET",
        headers,
        signal: abort.signal,
        headersTimeout: 0,
        bodyTimeout: Number.isFinite(timeoutMs) && timeoutMs > 0 ? timeoutMs : 0,
      })
    } catch (cause) {
      settle()
      resume(Effect.fail(sendError(cause)))
      return
    }
    pending.then(
      (response) => {
        settle()
        if (interrupted) discardBody(response.body)
        else resume(Effect.succeed(response))
      },
      (cause: unknown) => {
        settle()
        if (interrupted) return
        resume(
          Effect.fail(
            timedOut
              ? new SendError({ detail: "no answer in time", permanent: false, timedOut: true, cause })
              : sendError(cause),
          ),
        )
      },
    )
    return Effect.sync(() => {
      interrupted = true
      abort.abort()
    })
  })

/** undici's headers with repeated values joined (`set-cookie` is of no use to Ferry). */
export const flatHeaders = (
  headers: Dispatcher.ResponseData["headers"],
): Record<string, string | undefined> => {
  const out: Record<string, string | undefined> = {}
  for (const [name, value] of Object.entries(headers)) {
    out[name] = Array.isArray(value) ? value.join(", ") : value
  }
  return out
}

/** Reads and drops a (redirect's) body so the connection can be reused; a failure only loses the connection. */
export const dump = (body: Dispatcher.ResponseData["body"]): Effect.Effect<void> =>
  Effect.promise(() => body.dump().catch(() => undefined))

/**
 * Reads at most `limit` bytes of a body as text and drops the rest. A body that cannot be read gives
 * `undefined`: the caller is reporting a failed status and only wants its explanation.
 */
export const readTextPrefix = (
  body: Dispatcher.ResponseData["body"],
  limit: number,
): Effect.Effect<string | undefined> =>
  Effect.promise(async () => {
    const chunks: Array<Buffer> = []
    let size = 0
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        chunks.push(chunk)
        size += chunk.length
        if (size >= limit) break
      }
    } catch {
      return undefined
    } finally {
      discardBody(body)
    }
    return Buffer.concat(chunks, size).subarray(0, limit).toString("utf8")
  })
