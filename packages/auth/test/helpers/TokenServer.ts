/**
 * A real loopback OAuth token server for the auth integration tests (node:http on 127.0.0.1, port 0).
 * It verifies SMART client assertions with jose against the registered public JWKS (iss, sub, aud, typ,
 * exp ≤ 5 min, unique jti) and client secrets (Basic or form), and records every request it gets.
 */
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { Effect } from "effect"
import * as jose from "jose"

export interface TokenServerOptions {
  readonly clientId: string
  /** Public keys registered for the client (SMART assertions). */
  readonly jwks?: jose.JSONWebKeySet
  /** The client's secret (client_secret_basic / client_secret_post). */
  readonly secret?: string
  /** Serve `/fhir/.well-known/smart-configuration` (default true). */
  readonly wellKnown?: boolean
  /** What `.well-known` says `token_endpoint` is (default the absolute token URL). */
  readonly advertisedTokenEndpoint?: string
  /** Serve `/fhir/metadata` with the oauth-uris extension (default false). */
  readonly capabilityStatement?: boolean
  /** Token lifetime in seconds (default 300). */
  readonly expiresIn?: number
  readonly tokenType?: string
  /** Scopes the server accepts; others get `invalid_scope` (default: all). */
  readonly acceptScope?: (scope: string) => boolean
  /** The `scope` of the token response for the requested one (default: as requested). */
  readonly grantScope?: (requested: string) => string
  /** Answer every token request with this OAuth error. */
  readonly failWith?: { readonly status: number; readonly error: string; readonly description: string }
  /**
   * How to answer the first token requests, one fault each, before answering normally: an HTTP answer,
   * "reset" (the connection is destroyed unanswered) or "hang" (never answered).
   */
  readonly faults?: ReadonlyArray<TokenFault>
  /** Paths (e.g. `/fhir/.well-known/smart-configuration`) whose requests are never answered. */
  readonly silentPaths?: ReadonlyArray<string>
}

export type TokenFault =
  | { readonly status: number; readonly headers?: Record<string, string>; readonly body?: string }
  | "reset"
  | "hang"

export interface TokenRequestRecord {
  readonly headers: Http.IncomingHttpHeaders
  readonly form: URLSearchParams
  readonly assertion?: { readonly header: jose.JWTHeaderParameters; readonly claims: jose.JWTPayload }
  readonly answer: number
}

export interface TokenServer {
  readonly origin: string
  readonly baseUrl: string
  readonly tokenUrl: string
  /** Every request to the token path, in order. */
  readonly tokenRequests: Array<TokenRequestRecord>
  /** Paths of every request received. */
  readonly paths: Array<string>
  /** Access tokens handed out. */
  readonly issued: Array<string>
  /** Hold token responses until the returned function is called. */
  readonly hold: () => () => void
  /** Resolves when at least `n` token requests have arrived. */
  readonly received: (n: number) => Promise<void>
}

const OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
const TOKEN_PATH = "/auth/token"

const readBody = (req: Http.IncomingMessage): Promise<string> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    req.on("error", reject)
  })

const json = (res: Http.ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { "content-type": "application/json" })
  res.end(JSON.stringify(body))
}

export const make = (options: TokenServerOptions) =>
  Effect.gen(function* () {
    const tokenRequests: Array<TokenRequestRecord> = []
    const paths: Array<string> = []
    const issued: Array<string> = []
    const seenJti = new Set<string>()
    let gate: Promise<void> | undefined
    let waiters: Array<{ n: number; resolve: () => void }> = []
    let origin = ""
    const faults = [...(options.faults ?? [])]
    const keySet = options.jwks ? jose.createLocalJWKSet(options.jwks) : undefined

    const verifyClient = async (
      req: Http.IncomingMessage,
      form: URLSearchParams,
      tokenUrl: string,
    ): Promise<{ ok: true; assertion?: TokenRequestRecord["assertion"] } | { ok: false; why: string }> => {
      const assertion = form.get("client_assertion")
      if (assertion !== null) {
        if (!keySet) return { ok: false, why: "no JWKS registered" }
        if (form.get("client_assertion_type") !== "urn:ietf:params:oauth:client-assertion-type:jwt-bearer") {
          return { ok: false, why: "wrong client_assertion_type" }
        }
        try {
          const { payload, protectedHeader } = await jose.jwtVerify(assertion, keySet, {
            issuer: options.clientId,
            subject: options.clientId,
            audience: tokenUrl,
            algorithms: ["ES384", "RS384"],
            typ: "JWT",
            requiredClaims: ["exp", "jti"],
          })
          const now = Math.floor(Date.now() / 1000)
          if (payload.exp! - now > 300 + 5) return { ok: false, why: "exp more than 5 minutes ahead" }
          if (seenJti.has(payload.jti!)) return { ok: false, why: "jti replayed" }
          seenJti.add(payload.jti!)
          return { ok: true, assertion: { header: protectedHeader, claims: payload } }
        } catch (e) {
          return { ok: false, why: `assertion rejected: ${e instanceof Error ? e.message : String(e)}` }
        }
      }
      if (options.secret === undefined) return { ok: false, why: "no client authentication" }
      const basic = req.headers.authorization
      if (basic?.startsWith("Basic ")) {
        const [id, secret] = Buffer.from(basic.slice(6), "base64").toString("utf8").split(":")
        const decode = (s: string | undefined) => decodeURIComponent((s ?? "").replace(/\+/g, " "))
        return decode(id) === options.clientId && decode(secret) === options.secret
          ? { ok: true }
          : { ok: false, why: "bad basic credentials" }
      }
      return form.get("client_id") === options.clientId && form.get("client_secret") === options.secret
        ? { ok: true }
        : { ok: false, why: "bad client_secret_post credentials" }
    }

    const handle = async (req: Http.IncomingMessage, res: Http.ServerResponse) => {
      const path = new URL(req.url ?? "/", origin).pathname
      paths.push(path)
      const body = await readBody(req)
      if (options.silentPaths?.includes(path)) return
      if (path === "/fhir/.well-known/smart-configuration" && options.wellKnown !== false) {
        return json(res, 200, {
          token_endpoint: options.advertisedTokenEndpoint ?? `${origin}${TOKEN_PATH}`,
          grant_types_supported: ["client_credentials"],
          token_endpoint_auth_methods_supported: [
            "private_key_jwt",
            "client_secret_basic",
            "client_secret_post",
          ],
          token_endpoint_auth_signing_alg_values_supported: ["ES384", "RS384"],
          capabilities: ["client-confidential-asymmetric", "permission-v2"],
        })
      }
      if (path === "/fhir/metadata" && options.capabilityStatement) {
        return json(res, 200, {
          resourceType: "CapabilityStatement",
          status: "active",
          rest: [
            {
              mode: "server",
              security: {
                extension: [
                  { url: OAUTH_URIS, extension: [{ url: "token", valueUri: `${origin}${TOKEN_PATH}` }] },
                ],
              },
            },
          ],
        })
      }
      if (path !== TOKEN_PATH || req.method !== "POST") return json(res, 404, { error: "not found" })

      const form = new URLSearchParams(body)
      const index = tokenRequests.length
      const record = (answer: number, assertion?: TokenRequestRecord["assertion"]) => {
        tokenRequests[index] = { headers: req.headers, form, answer, ...(assertion ? { assertion } : {}) }
      }
      tokenRequests.push({ headers: req.headers, form, answer: 0 })
      for (const w of waiters) if (tokenRequests.length >= w.n) w.resolve()
      waiters = waiters.filter((w) => tokenRequests.length < w.n)
      if (gate) await gate

      const fault = faults.shift()
      if (fault === "hang") return
      if (fault === "reset") {
        record(0)
        return req.socket.destroy()
      }
      if (fault !== undefined) {
        record(fault.status)
        res.writeHead(fault.status, { "content-type": "text/plain", ...fault.headers })
        return res.end(fault.body ?? "")
      }
      if (req.headers["content-type"] !== "application/x-www-form-urlencoded") {
        record(400)
        return json(res, 400, { error: "invalid_request", error_description: "form body expected" })
      }
      if (options.failWith) {
        record(options.failWith.status)
        return json(res, options.failWith.status, {
          error: options.failWith.error,
          error_description: options.failWith.description,
        })
      }
      if (form.get("grant_type") !== "client_credentials") {
        record(400)
        return json(res, 400, { error: "unsupported_grant_type" })
      }
      const client = await verifyClient(req, form, `${origin}${TOKEN_PATH}`)
      if (!client.ok) {
        record(401)
        return json(res, 401, { error: "invalid_client", error_description: client.why })
      }
      const scope = form.get("scope") ?? ""
      if (options.acceptScope && !options.acceptScope(scope)) {
        record(400, client.assertion)
        return json(res, 400, { error: "invalid_scope", error_description: `scope ${scope} is not allowed` })
      }
      const token = `tok-${issued.length + 1}-${crypto.randomUUID()}`
      issued.push(token)
      record(200, client.assertion)
      return json(res, 200, {
        access_token: token,
        token_type: options.tokenType ?? "Bearer",
        expires_in: options.expiresIn ?? 300,
        scope: options.grantScope ? options.grantScope(scope) : scope,
      })
    }

    const server = yield* Effect.acquireRelease(
      Effect.async<Http.Server>((resume) => {
        const s = Http.createServer((req, res) => {
          handle(req, res).catch((e) => {
            res.writeHead(500)
            res.end(String(e))
          })
        })
        s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
      }),
      (s) =>
        Effect.async<void>((resume) => {
          s.closeAllConnections()
          s.close(() => resume(Effect.void))
        }),
    )
    const { port } = server.address() as AddressInfo
    origin = `http://127.0.0.1:${port}`
    return {
      origin,
      baseUrl: `${origin}/fhir`,
      tokenUrl: `${origin}${TOKEN_PATH}`,
      tokenRequests,
      paths,
      issued,
      hold: () => {
        let release = () => {}
        gate = new Promise<void>((resolve) => {
          release = () => {
            gate = undefined
            resolve()
          }
        })
        return release
      },
      received: (n: number) =>
        tokenRequests.length >= n
          ? Promise.resolve()
          : new Promise<void>((resolve) => {
              waiters.push({ n, resolve })
            }),
    } satisfies TokenServer
  })
