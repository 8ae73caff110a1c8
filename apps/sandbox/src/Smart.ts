/**
 * SMART Backend Services for the sandbox (optional: on when the config has an `auth` section).
 *
 * - `GET [base]/.well-known/smart-configuration` (base = the FHIR base, `/fhir`)
 * - `POST [base]/auth/token`: client_credentials with a private_key_jwt assertion (RS384 / ES384), verified
 *   with jose against the client's registered JWKS (inline or by URL); iss = sub = clientId,
 *   aud = the token URL, exp at most 5 minutes ahead, jti never reused while the assertion lives.
 * - A middleware that requires a valid bearer token on every route under the base (except metadata,
 *   discovery, the token endpoint and `/_sandbox/…`), bulk status and file URLs included, and
 *   enforces SMART v1/v2 `system/` scopes: read (r) and search (s) for GETs, c/u/d for writes. 401 + `WWW-Authenticate` without a usable token, 403 without the scope.
 *
 * Config JSON (`auth` section):
 * ```json
 * {
 *   "tokenLifetimeSeconds": 300,
 *   "clients": [
 *     { "clientId": "ferry", "jwks": { "keys": [ …public JWKs… ] }, "scopes": ["system/*.*"] },
 *     { "clientId": "other", "jwksUrl": "https://example.org/jwks.json" }
 *   ]
 * }
 * ```
 * `scopes` lists what a client may be granted (default `system/*.*`); requested scopes outside it,
 * scopes with `?` filters, and `user/`/`patient/` scopes are not granted.
 */
import { describeParseError } from "@ferry/core/Http"
import { randomBytes } from "node:crypto"
import type { IncomingMessage } from "node:http"
import { Either, Schema } from "effect"
import * as jose from "jose"
import type { Faults } from "./Faults.js"
import { type Ctx, type Router, sendJson, sendOutcome } from "./Http.js"
import { contributeCapability } from "./Rest.js"

const Jwk = Schema.Record({ key: Schema.String, value: Schema.Unknown })

const Client = Schema.Struct({
  clientId: Schema.String.pipe(Schema.minLength(1)),
  jwks: Schema.optional(Schema.Struct({ keys: Schema.Array(Jwk) })),
  jwksUrl: Schema.optional(Schema.String),
  scopes: Schema.optionalWith(Schema.Array(Schema.String), { default: () => ["system/*.*"] }),
})

export const AuthConfig = Schema.Struct({
  tokenLifetimeSeconds: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.positive()), {
    default: () => 300,
  }),
  clients: Schema.Array(Client),
})
export type AuthConfig = typeof AuthConfig.Type
export type AuthConfigInput = typeof AuthConfig.Encoded

/** Decodes the `auth` config section (undefined → auth off). Throws a readable Error when invalid. */
export const decodeAuthConfig = (input: unknown): AuthConfig | undefined => {
  if (input === undefined || input === null) return undefined
  const decoded = Schema.decodeUnknownEither(AuthConfig)(input, { onExcessProperty: "error" })
  if (Either.isLeft(decoded))
    throw new Error(
      `sandbox config "auth" is invalid: ${describeParseError("an auth section", decoded.left)}`,
    )
  for (const c of decoded.right.clients) {
    if ((c.jwks === undefined) === (c.jwksUrl === undefined)) {
      throw new Error(`sandbox config "auth": client ${c.clientId} needs exactly one of jwks or jwksUrl`)
    }
  }
  return decoded.right
}

// ---------------------------------------------------------------------------------------------
// Scopes

export type Permission = "c" | "r" | "u" | "d" | "s"

export interface Scope {
  readonly text: string
  /** A resource type or "*". */
  readonly resource: string
  readonly permissions: ReadonlySet<Permission>
}

/** Parses a SMART v1 (`.read`, `.write`, `.*`) or v2 (`.cruds` subset, in order) system scope. */
export const parseScope = (text: string): Scope | undefined => {
  const m = /^system\/([A-Z][A-Za-z]*|\*)\.(read|write|\*|c?r?u?d?s?)$/.exec(text)
  if (m === null || m[2] === "") return undefined
  const suffix = m[2]!
  const letters = suffix === "read" ? "rs" : suffix === "write" ? "cud" : suffix === "*" ? "cruds" : suffix
  return { text, resource: m[1]!, permissions: new Set([...letters] as Array<Permission>) }
}

const covers = (outer: Scope, inner: Scope): boolean =>
  (outer.resource === "*" || outer.resource === inner.resource) &&
  [...inner.permissions].every((p) => outer.permissions.has(p))

/** A granted access token. */
export interface Grant {
  readonly clientId: string
  readonly scopes: ReadonlyArray<Scope>
  readonly expiresAt: number
}

export const allows = (grant: Grant, type: string, permission: Permission): boolean =>
  grant.scopes.some((s) => (s.resource === "*" || s.resource === type) && s.permissions.has(permission))

// ---------------------------------------------------------------------------------------------
// Route → required access

type Access =
  | { readonly _tag: "open" }
  | { readonly _tag: "token" }
  | { readonly _tag: "type"; readonly type: string; readonly permission: Permission }
  | { readonly _tag: "any"; readonly permission: Permission }

const isOpen = (path: string): boolean =>
  path === "/metadata" ||
  path === "/.well-known/smart-configuration" ||
  path === "/auth/token" ||
  path.startsWith("/_sandbox/")

/**
 * What a request needs from the token; `path` is below the FHIR base (e.g. `/Patient/1`). `signed`: the
 * request carries a link signature (`sig`), which an export file's handler checks instead of a token.
 */
export const requiredAccess = (method: string, path: string, signed = false): Access => {
  if (isOpen(path) || (signed && path.startsWith("/bulk/files/"))) return { _tag: "open" }
  if (path.startsWith("/bulk/")) return { _tag: "token" }
  const segments = path.split("/").filter((s) => s !== "")
  const write = method !== "GET" && method !== "HEAD"
  if (segments.length === 0) return { _tag: "type", type: "*", permission: write ? "c" : "s" }
  const [first, second, third] = segments as [string, string | undefined, string | undefined]
  if (first === "$export") return { _tag: "any", permission: "r" }
  if (first === "$import") return { _tag: "any", permission: "c" }
  if (first.startsWith("$")) return { _tag: "any", permission: write ? "c" : "r" }
  if (second === "$export") return { _tag: "type", type: first, permission: "r" }
  if (third === "$export") return { _tag: "type", type: first, permission: "r" }
  const writePermission: Permission = method === "POST" ? "c" : method === "DELETE" ? "d" : "u"
  if (second === "_search") return { _tag: "type", type: first, permission: "s" }
  if (second === undefined) {
    // type level: search, create, or a conditional update / delete
    return { _tag: "type", type: first, permission: write ? writePermission : "s" }
  }
  switch (method) {
    case "PUT":
    case "PATCH":
      return { _tag: "type", type: first, permission: "u" }
    case "DELETE":
      return { _tag: "type", type: first, permission: "d" }
    case "POST":
      return { _tag: "type", type: first, permission: second.startsWith("$") ? "r" : "c" }
    default:
      return { _tag: "type", type: first, permission: "r" }
  }
}

// ---------------------------------------------------------------------------------------------
// The server side

const ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
const algKty: Readonly<Record<string, string>> = { RS384: "RSA", ES384: "EC" }

class AssertionRejected {
  constructor(readonly description: string) {}
}

const grants = new WeakMap<IncomingMessage, Grant>()

/** The grant a request was authorized with (undefined when auth is off). */
export const grantOf = (req: IncomingMessage): Grant | undefined => grants.get(req)

/** May this request touch `type` with `permission`? Always true when auth is off. */
export const requestAllows = (req: IncomingMessage, type: string, permission: Permission): boolean => {
  const grant = grants.get(req)
  return grant === undefined || allows(grant, type, permission)
}

export const originOf = (baseUrl: string): string => new URL(baseUrl).origin
export const tokenUrlOf = (baseUrl: string): string => `${baseUrl}/auth/token`

/** The `.well-known/smart-configuration` document for a FHIR base. */
export const smartConfiguration = (baseUrl: string) => ({
  issuer: originOf(baseUrl),
  token_endpoint: tokenUrlOf(baseUrl),
  grant_types_supported: ["client_credentials"],
  token_endpoint_auth_methods_supported: ["private_key_jwt"],
  token_endpoint_auth_signing_alg_values_supported: ["RS384", "ES384"],
  scopes_supported: [
    "system/*.read",
    "system/*.write",
    "system/*.*",
    "system/*.rs",
    "system/*.cud",
    "system/*.cruds",
  ],
  capabilities: ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
})

/** The CapabilityStatement `rest.security` fragment (SMART oauth-uris extension). */
export const capabilitySecurity = (baseUrl: string) => ({
  service: [
    {
      coding: [
        { system: "http://terminology.hl7.org/CodeSystem/restful-security-service", code: "SMART-on-FHIR" },
      ],
    },
  ],
  extension: [
    {
      url: "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
      extension: [{ url: "token", valueUri: tokenUrlOf(baseUrl) }],
    },
  ],
})

export class Smart {
  private readonly tokens = new Map<string, Grant>()
  private readonly seenJti = new Map<string, number>()

  constructor(
    readonly config: AuthConfig,
    private readonly faults: Faults | undefined,
  ) {}

  private purge(now: number): void {
    for (const [k, exp] of this.seenJti) if (exp <= now) this.seenJti.delete(k)
    for (const [k, g] of this.tokens) if (g.expiresAt <= now) this.tokens.delete(k)
  }

  private async clientKey(assertion: string, tokenUrl: string) {
    let header: jose.ProtectedHeaderParameters
    let claims: jose.JWTPayload
    try {
      header = jose.decodeProtectedHeader(assertion)
      claims = jose.decodeJwt(assertion)
    } catch {
      throw new AssertionRejected("client_assertion is not a JWT")
    }
    const clientId = claims.iss
    if (typeof clientId !== "string") throw new AssertionRejected("client_assertion has no iss")
    if (claims.sub !== clientId)
      throw new AssertionRejected("client_assertion sub must equal iss (the client_id)")
    const client = this.config.clients.find((c) => c.clientId === clientId)
    if (client === undefined) throw new AssertionRejected(`unknown client_id ${clientId}`)
    const alg = header.alg ?? ""
    const kty = algKty[alg]
    if (kty === undefined) throw new AssertionRejected(`alg ${alg} is not supported (RS384 or ES384)`)
    if (header.jku !== undefined && header.jku !== client.jwksUrl) {
      throw new AssertionRejected("jku does not match the registered JWKS URL")
    }
    let keys: ReadonlyArray<Readonly<Record<string, unknown>>>
    if (client.jwks !== undefined) keys = client.jwks.keys
    else {
      try {
        const res = await fetch(client.jwksUrl!, { headers: { accept: "application/json" } })
        if (!res.ok) throw new Error(`HTTP ${res.status}`)
        const body = (await res.json()) as { keys?: unknown }
        keys = Array.isArray(body.keys) ? (body.keys as Array<Record<string, unknown>>) : []
      } catch (cause) {
        throw new AssertionRejected(`could not fetch the client's JWKS: ${String(cause)}`)
      }
    }
    const candidates = keys.filter((k) => k.kty === kty && (header.kid === undefined || k.kid === header.kid))
    if (candidates.length !== 1) {
      throw new AssertionRejected(
        `expected exactly one ${kty} key with kid ${header.kid}, found ${candidates.length}`,
      )
    }
    let key: Awaited<ReturnType<typeof jose.importJWK>>
    try {
      key = await jose.importJWK(candidates[0]! as jose.JWK, alg)
    } catch {
      throw new AssertionRejected("the registered key cannot be used")
    }
    try {
      const verified = await jose.jwtVerify(assertion, key, {
        algorithms: [alg],
        audience: tokenUrl,
        issuer: clientId,
        subject: clientId,
        requiredClaims: ["exp", "jti"],
        clockTolerance: 5,
      })
      return { client, payload: verified.payload }
    } catch (cause) {
      const detail = cause instanceof Error ? cause.message : "verification failed"
      throw new AssertionRejected(`client_assertion rejected: ${detail}`)
    }
  }

  /** `POST /auth/token`. */
  readonly token = async (ctx: Ctx): Promise<void> => {
    const oauthError = (status: number, error: string, description: string) =>
      sendJson(ctx, status, { error, error_description: description }, { "Cache-Control": "no-store" })
    const form = new URLSearchParams((await ctx.body()).toString("utf8"))
    if (form.get("grant_type") !== "client_credentials") {
      return oauthError(400, "unsupported_grant_type", "grant_type must be client_credentials")
    }
    if (form.get("client_assertion_type") !== ASSERTION_TYPE) {
      return oauthError(400, "invalid_request", `client_assertion_type must be ${ASSERTION_TYPE}`)
    }
    const assertion = form.get("client_assertion")
    const scope = form.get("scope")
    if (assertion === null || assertion === "")
      return oauthError(400, "invalid_request", "client_assertion missing")
    if (scope === null || scope.trim() === "") return oauthError(400, "invalid_request", "scope missing")
    const now = Date.now()
    this.purge(now)
    let verified: Awaited<ReturnType<Smart["clientKey"]>>
    try {
      verified = await this.clientKey(assertion, tokenUrlOf(ctx.baseUrl))
    } catch (e) {
      if (e instanceof AssertionRejected) return oauthError(401, "invalid_client", e.description)
      throw e
    }
    const { client, payload } = verified
    const exp = payload.exp! * 1000
    if (exp > now + 300_000 + 5_000) {
      return oauthError(401, "invalid_client", "client_assertion exp is more than 5 minutes ahead")
    }
    const jtiKey = `${client.clientId}\u0000${String(payload.jti)}`
    if (this.seenJti.has(jtiKey))
      return oauthError(401, "invalid_client", "client_assertion jti was already used")
    this.seenJti.set(jtiKey, exp + 5_000)
    const allowed = client.scopes.map(parseScope).filter((s): s is Scope => s !== undefined)
    const granted = scope
      .split(/\s+/)
      .filter((s) => s !== "")
      .map(parseScope)
      .filter((s): s is Scope => s !== undefined && allowed.some((a) => covers(a, s)))
    if (granted.length === 0) {
      return oauthError(400, "invalid_scope", `none of the requested scopes can be granted: ${scope}`)
    }
    const lifetime = this.config.tokenLifetimeSeconds
    const realLifetime = Math.min(lifetime, this.faults?.tokenExpiresAfterSeconds ?? lifetime)
    const accessToken = randomBytes(32).toString("base64url")
    this.tokens.set(accessToken, {
      clientId: client.clientId,
      scopes: granted,
      expiresAt: now + realLifetime * 1000,
    })
    return sendJson(
      ctx,
      200,
      {
        access_token: accessToken,
        token_type: "bearer",
        expires_in: lifetime,
        scope: granted.map((s) => s.text).join(" "),
      },
      { "Cache-Control": "no-store", Pragma: "no-cache" },
    )
  }

  /** The Router middleware enforcing bearer tokens and scopes. */
  readonly middleware = async (ctx: Ctx, next: () => Promise<void>): Promise<void> => {
    const method = ctx.req.method ?? "GET"
    // `sig` opens only the export file route itself (whose handler checks it), whatever the path looks like
    const signed = ctx.route === "/bulk/files/:job/:name" && ctx.url.searchParams.has("sig")
    const access = requiredAccess(method, ctx.path, signed)
    if (access._tag === "open") return next()
    const header = ctx.req.headers.authorization ?? ""
    const m = /^Bearer\s+(\S+)$/i.exec(header)
    if (m === null) {
      ctx.res.setHeader("WWW-Authenticate", 'Bearer realm="ferry-sandbox"')
      return sendOutcome(ctx, 401, "error", "login", "A bearer token is required (SMART Backend Services).")
    }
    const grant = this.tokens.get(m[1]!)
    if (grant === undefined || grant.expiresAt <= Date.now()) {
      ctx.res.setHeader(
        "WWW-Authenticate",
        `Bearer realm="ferry-sandbox", error="invalid_token", error_description="${grant === undefined ? "unknown token" : "token expired"}"`,
      )
      return sendOutcome(ctx, 401, "error", "expired", "The access token is unknown or has expired.")
    }
    const ok =
      access._tag === "token" ||
      (access._tag === "type" && allows(grant, access.type, access.permission)) ||
      (access._tag === "any" && grant.scopes.some((s) => s.permissions.has(access.permission)))
    if (!ok) {
      const what = access._tag === "type" ? `${access.type}.${access.permission}` : `*.${access.permission}`
      ctx.res.setHeader(
        "WWW-Authenticate",
        `Bearer realm="ferry-sandbox", error="insufficient_scope", scope="system/${what}"`,
      )
      return sendOutcome(ctx, 403, "error", "forbidden", `The token's scopes do not allow system/${what}.`)
    }
    grants.set(ctx.req, grant)
    return next()
  }
}

const registry = new WeakMap<object, Smart>()

/** The Smart of a router, if auth is on. */
export const smartOf = (router: Router): Smart | undefined => registry.get(router)

/**
 * Installs discovery, the token endpoint and the authorization middleware when `config.auth` is set;
 * returns undefined (and installs nothing) otherwise. Pass the router's Faults for token expiry faults.
 */
export const register = (
  router: Router,
  _store: unknown,
  config: { readonly auth?: unknown },
  faults?: Faults,
): Smart | undefined => {
  const auth = decodeAuthConfig(config.auth)
  if (auth === undefined) return undefined
  const smart = new Smart(auth, faults)
  registry.set(router, smart)
  const discovery = async (ctx: Ctx) => sendJson(ctx, 200, smartConfiguration(ctx.baseUrl))
  router.on("GET", "/.well-known/smart-configuration", discovery)
  router.on("POST", "/auth/token", smart.token)
  router.use(smart.middleware)
  contributeCapability(router, (cs, { baseUrl }) => {
    const rest = (cs.rest as Array<Record<string, unknown>> | undefined)?.[0]
    if (rest !== undefined) rest.security = capabilitySecurity(baseUrl)
  })
  return smart
}
