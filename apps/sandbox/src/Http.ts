/**
 * A tiny router over `node:http`. Patterns are relative to the FHIR base path (`/fhir` by default):
 * `"/metadata"`, `"/:type/:id"`, `"/$export"`, `"/Group/:id/$export"`, `"/files/*"` (the tail goes to
 * `params["*"]`). A request outside the base path gets 404.
 *
 * Matching: among the routes whose segments match, the one with the most literal segments wins
 * (ties: first registered), so operation routes beat `/:type/:id` whatever the registration order.
 * HEAD is served by GET routes. A path that matches only other methods gets 405.
 *
 * Middleware (`use`) runs in registration order for every request under the base, after routing
 * (so `ctx.route` tells which pattern matched, undefined when none did) and before the handler.
 * A middleware that answers the request simply does not call `next()`.
 *
 * Handlers may throw `FhirHttpError` to answer with an OperationOutcome; any other exception is a
 * 500 OperationOutcome (the message, never the request body, is reported).
 */
import type { IncomingMessage, ServerResponse } from "node:http"
import type { Store } from "./Store.js"
import { parseKeepingNumbers } from "@ferry/core/NumberText"

export interface Ctx {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  readonly url: URL
  /** Path params; `"*"` holds the tail of a wildcard pattern. */
  params: Record<string, string>
  /** Absolute FHIR base, e.g. `http://127.0.0.1:43127/fhir` (no trailing slash). */
  readonly baseUrl: string
  readonly store: Store
  /** The pattern that matched, e.g. `"/:type/:id"`; undefined when no route matched. */
  route: string | undefined
  /** The path below the base path, e.g. `/Patient/123`. */
  readonly path: string
  body(): Promise<Buffer>
  json(): Promise<unknown>
}

export type Handler = (ctx: Ctx) => void | Promise<void>
export type Middleware = (ctx: Ctx, next: () => Promise<void>) => Promise<void>

export const FHIR_JSON = "application/fhir+json; charset=utf-8"

/** Thrown by handlers: answered as `status` with a one-issue OperationOutcome. */
export class FhirHttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly diagnostics: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(diagnostics)
    this.name = "FhirHttpError"
  }
}

interface Route {
  readonly method: string
  readonly pattern: string
  readonly segments: readonly string[]
  readonly literals: number
  readonly wildcard: boolean
  readonly handler: Handler
  readonly order: number
}

const split = (path: string): string[] => path.split("/").filter((s) => s !== "")

export class Router {
  private readonly routes: Route[] = []
  private readonly middleware: Middleware[] = []

  on(method: string, pattern: string, h: Handler): void {
    const segments = split(pattern)
    const wildcard = segments[segments.length - 1] === "*"
    const fixed = wildcard ? segments.slice(0, -1) : segments
    this.routes.push({
      method: method.toUpperCase(),
      pattern,
      segments: fixed,
      literals: fixed.filter((s) => !s.startsWith(":")).length,
      wildcard,
      handler: h,
      order: this.routes.length,
    })
  }

  use(mw: Middleware): void {
    this.middleware.push(mw)
  }

  /** The best route for `method` and `path` (relative to the base), or why there is none. */
  match(
    method: string,
    path: string,
  ): { route: Route; params: Record<string, string> } | "method-not-allowed" | "not-found" {
    const parts = split(path).map((p) => {
      try {
        return decodeURIComponent(p)
      } catch {
        return p
      }
    })
    const m = method === "HEAD" ? "GET" : method
    let best: { route: Route; params: Record<string, string> } | undefined
    let otherMethod = false
    for (const route of this.routes) {
      const params = matchSegments(route, parts)
      if (params === undefined) continue
      if (route.method !== m) {
        otherMethod = true
        continue
      }
      if (
        best === undefined ||
        route.literals > best.route.literals ||
        (route.literals === best.route.literals && !route.wildcard && best.route.wildcard)
      ) {
        best = { route, params }
      }
    }
    return best ?? (otherMethod ? "method-not-allowed" : "not-found")
  }

  /** Runs the middleware chain then the matched handler; failures become OperationOutcomes. */
  async dispatch(ctx: Ctx): Promise<void> {
    const found = this.match(ctx.req.method ?? "GET", ctx.path)
    if (typeof found !== "string") {
      ctx.params = found.params
      ctx.route = found.route.pattern
    }
    const final = async (): Promise<void> => {
      if (found === "not-found") throw new FhirHttpError(404, "not-found", `No route for ${ctx.path}`)
      if (found === "method-not-allowed")
        throw new FhirHttpError(405, "not-supported", `${ctx.req.method} is not supported on ${ctx.path}`)
      await found.route.handler(ctx)
    }
    const run = (i: number): Promise<void> => {
      const mw = this.middleware[i]
      return mw ? mw(ctx, () => run(i + 1)) : final()
    }
    try {
      await run(0)
    } catch (e) {
      if (ctx.res.headersSent) {
        ctx.res.destroy()
        return
      }
      if (e instanceof FhirHttpError) {
        sendOutcome(ctx, e.status, "error", e.code, e.diagnostics, e.headers)
      } else {
        sendOutcome(ctx, 500, "fatal", "exception", e instanceof Error ? e.message : String(e))
      }
    }
  }
}

const matchSegments = (route: Route, parts: readonly string[]): Record<string, string> | undefined => {
  if (route.wildcard ? parts.length < route.segments.length : parts.length !== route.segments.length)
    return undefined
  const params: Record<string, string> = {}
  for (let i = 0; i < route.segments.length; i++) {
    const seg = route.segments[i]!
    const part = parts[i]!
    if (seg.startsWith(":")) params[seg.slice(1)] = part
    else if (seg !== part) return undefined
  }
  if (route.wildcard) params["*"] = parts.slice(route.segments.length).join("/")
  return params
}

/** Builds the per-request context (body read lazily, once). */
export const makeCtx = (
  req: IncomingMessage,
  res: ServerResponse,
  store: Store,
  baseUrl: string,
  path: string,
  maxBodyBytes: number,
): Ctx => {
  const url = new URL(req.url ?? "/", baseUrl)
  let body: Promise<Buffer> | undefined
  const readBody = (): Promise<Buffer> => {
    body ??= new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = []
      let size = 0
      // Past the limit the rest is read and dropped, then 413 answered: destroying the connection mid-body
      // made clients see a reset (and retry it as a network failure) instead of the 413 that says what is wrong.
      req.on("data", (c: Buffer) => {
        size += c.length
        if (size <= maxBodyBytes) chunks.push(c)
        else chunks.length = 0
      })
      req.on("end", () =>
        size > maxBodyBytes
          ? reject(new FhirHttpError(413, "too-costly", `Request body larger than ${maxBodyBytes} bytes`))
          : resolve(Buffer.concat(chunks)),
      )
      req.on("error", reject)
    })
    return body
  }
  return {
    req,
    res,
    url,
    params: {},
    baseUrl,
    store,
    route: undefined,
    path,
    body: readBody,
    json: async () => {
      const buf = await readBody()
      try {
        return parseKeepingNumbers(buf.toString("utf8"))
      } catch (e) {
        throw new FhirHttpError(400, "structure", `Request body is not valid JSON: ${(e as Error).message}`)
      }
    },
  }
}

/** Answers with JSON (`application/fhir+json`); `body` may be an object or an already serialized string. */
export const sendJson = (
  ctx: Ctx,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void => {
  const text = typeof body === "string" ? body : JSON.stringify(body)
  const buf = Buffer.from(text, "utf8")
  ctx.res.writeHead(status, { "Content-Type": FHIR_JSON, "Content-Length": String(buf.length), ...headers })
  ctx.res.end(ctx.req.method === "HEAD" ? undefined : buf)
}

export const outcome = (severity: string, code: string, diagnostics: string) => ({
  resourceType: "OperationOutcome",
  issue: [{ severity, code, diagnostics }],
})

export const sendOutcome = (
  ctx: Ctx,
  status: number,
  severity: string,
  code: string,
  diagnostics: string,
  headers: Record<string, string> = {},
): void => sendJson(ctx, status, outcome(severity, code, diagnostics), headers)
