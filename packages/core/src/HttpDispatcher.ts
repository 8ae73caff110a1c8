/**
 * The connection pool every Ferry request goes through, with the proxy settings of the environment: a
 * migration host inside a hospital or corporate network often reaches the outside only through an HTTP proxy.
 *
 * - `https_proxy` / `HTTPS_PROXY` for https URLs, `http_proxy` / `HTTP_PROXY` for http URLs (and for https
 *   ones when no https proxy is set), lower case first; `proxy:3128` means `http://proxy:3128`. An https
 *   request goes through the proxy as a `CONNECT` tunnel: the proxy sees the host name, never the request (nor
 *   its Authorization); an http request is sent to the proxy as such, as every HTTP proxy client does.
 * - `no_proxy` / `NO_PROXY`: host names (a leading `.` or `*.` matches subdomains), `host:port`, or `*`.
 * - Loopback (`localhost`, `127.0.0.1`, `::1`) is always reached directly: a proxy elsewhere cannot reach this
 *   machine's loopback (a sandbox, the import's file server for `$import` is the target's business).
 */
import { Either, Option } from "effect"
import { Agent, type Dispatcher, EnvHttpProxyAgent, getGlobalDispatcher, setGlobalDispatcher } from "undici"

export interface ProxySettings {
  /** Proxy URL for http URLs ("" when none). */
  readonly http: string
  /** Proxy URL for https URLs ("" when none: the http proxy, if any, is used). */
  readonly https: string
  /** Hosts reached directly, as in `no_proxy`, with loopback added. */
  readonly noProxy: string
}

const LOOPBACK = ["localhost", "127.0.0.1", "::1", "[::1]"]

/** Where a proxy setting came from and what is wrong with it. */
export interface ProxyProblem {
  readonly variable: string
  readonly detail: string
}

const first = (
  env: Readonly<Record<string, string | undefined>>,
  names: readonly string[],
): { readonly name: string; readonly value: string } | undefined => {
  for (const name of names) {
    const value = env[name]?.trim()
    if (value !== undefined && value !== "") return { name, value }
  }
  return undefined
}

/** `proxy:3128` as curl reads it (`http://proxy:3128`); a URL that does not parse or is not http(s) is a problem. */
const proxyUrl = (
  found: { readonly name: string; readonly value: string } | undefined,
): Either.Either<string, ProxyProblem> => {
  if (found === undefined) return Either.right("")
  const value = /^[a-z][a-z0-9+.-]*:\/\//i.test(found.value) ? found.value : `http://${found.value}`
  const url = Option.liftThrowable(() => new URL(value))()
  if (Option.isNone(url) || url.value.hostname === "") {
    return Either.left({
      variable: found.name,
      detail: "the proxy is not a URL; set it like http://proxy.example.org:3128",
    })
  }
  if (url.value.protocol !== "http:" && url.value.protocol !== "https:") {
    return Either.left({
      variable: found.name,
      detail: `Ferry speaks to http and https proxies, not ${url.value.protocol.slice(0, -1)}; set an http:// proxy URL`,
    })
  }
  if (
    (url.value.pathname !== "/" && url.value.pathname !== "") ||
    url.value.search !== "" ||
    url.value.hash !== ""
  ) {
    return Either.left({
      variable: found.name,
      detail:
        "the proxy URL has a path or a query, which a proxy address has not; set it like http://proxy.example.org:3128",
    })
  }
  const decodes = (part: string) => Option.isSome(Option.liftThrowable(() => decodeURIComponent(part))())
  if (!decodes(url.value.username) || !decodes(url.value.password)) {
    return Either.left({
      variable: found.name,
      detail:
        "the proxy's user name or password is not percent-encoded right (a % not followed by two hex digits); encode a literal % as %25",
    })
  }
  return Either.right(value)
}

/** The proxy settings of `env`: undefined when no proxy is set, a problem when one is not a usable URL. */
export const proxySettings = (
  env: Readonly<Record<string, string | undefined>>,
): Either.Either<ProxySettings | undefined, ProxyProblem> =>
  Either.gen(function* () {
    const http = yield* proxyUrl(first(env, ["http_proxy", "HTTP_PROXY"]))
    const https = yield* proxyUrl(first(env, ["https_proxy", "HTTPS_PROXY"]))
    if (http === "" && https === "") return undefined
    const noProxy = first(env, ["no_proxy", "NO_PROXY"])?.value ?? ""
    return {
      http,
      https,
      noProxy:
        noProxy === "*" ? "*" : [...noProxy.split(/[,\s]+/).filter((e) => e !== ""), ...LOOPBACK].join(","),
    }
  })

/**
 * TLS certificates are always checked: said outright, so that `NODE_TLS_REJECT_UNAUTHORIZED=0` in the environment
 * (which Node otherwise obeys, with a warning that `NODE_NO_WARNINGS` silences) cannot turn the check off and send
 * credentials and patient data to a server nobody vouched for. A private CA is trusted with `NODE_EXTRA_CA_CERTS`.
 */
const verified = { rejectUnauthorized: true } as const

/**
 * Every request through the pool gets a body timeout (undici's `bodyTimeout`: the body fails with
 * `UND_ERR_BODY_TIMEOUT` once the server has sent nothing for that long) when it brings none of its own: the
 * platform's undici client sets none (0) on every request, leaving timeouts to the caller, and FhirClient bounds
 * only the wait for the headers, so a server that stopped in the middle of an answer (a transaction's response,
 * a search page) held the command for ever. `FhirClient.get` brings its own (its per-attempt timeout).
 */
const bodyTimeout =
  (ms: number): Dispatcher.DispatcherComposeInterceptor =>
  (dispatch) =>
  (opts, handler) =>
    dispatch(
      opts.bodyTimeout !== undefined && opts.bodyTimeout !== null && opts.bodyTimeout > 0
        ? opts
        : { ...opts, bodyTimeout: ms },
      handler,
    )

/**
 * The dispatcher for `settings`: a plain pool, or one that goes through the proxies. `bodyTimeoutMs`: how long
 * an answer's body may send nothing before it fails, for requests that set no limit of their own (see
 * `bodyTimeout`; default 5 minutes, FhirClient's default per-attempt timeout).
 */
export const make = (settings: ProxySettings | undefined, bodyTimeoutMs = 300_000): Dispatcher =>
  (settings === undefined
    ? new Agent({ connect: verified })
    : new EnvHttpProxyAgent({
        connect: verified,
        requestTls: verified,
        proxyTls: verified,
        // undici reads process.env for a value left undefined: "" means none. An https URL goes through the
        // https proxy, else through the http one (undici's rule).
        httpProxy: settings.http,
        httpsProxy: settings.https,
        noProxy: settings.noProxy,
        // an http URL through an http proxy as a plain proxied request, not a CONNECT tunnel (proxies commonly
        // allow CONNECT to port 443 only); https URLs always go through a tunnel
        proxyTunnel: false,
      })
  ).compose(bodyTimeout(bodyTimeoutMs))

/**
 * Makes `pool` undici's global dispatcher (FhirClient's lean GETs use it) and returns what puts the previous one
 * back.
 */
export const setGlobal = (pool: Dispatcher): (() => void) => {
  const before = getGlobalDispatcher()
  setGlobalDispatcher(pool)
  return () => setGlobalDispatcher(before)
}

const DEFAULT_PORTS: Readonly<Record<string, number>> = { "http:": 80, "https:": 443 }

/**
 * The proxy a request to `url` goes through with the proxy settings of `env` (the rules `make`'s pool follows:
 * undici's, with loopback always direct), and the variable that set it; undefined when it goes direct, or when
 * a setting does not parse (the CLI refuses to start with such a setting).
 */
export const proxyRoute = (
  env: Readonly<Record<string, string | undefined>>,
  url: string,
): { readonly proxy: URL; readonly variable: string } | undefined => {
  const target = Option.getOrUndefined(Option.liftThrowable(() => new URL(url))())
  if (target === undefined) return undefined
  const settings = Either.getOrUndefined(proxySettings(env))
  if (settings === undefined) return undefined
  const host = target.hostname.toLowerCase()
  const port = Number.parseInt(target.port, 10) || DEFAULT_PORTS[target.protocol] || 0
  if (settings.noProxy === "*") return undefined
  for (const entry of settings.noProxy.split(",")) {
    const m = /^(.+):(\d+)$/.exec(entry)
    const name = (m ? m[1]! : entry).replace(/^\*?\./, "").toLowerCase()
    if (m !== null && Number(m[2]) !== port) continue
    if (host === name || host.endsWith(`.${name}`)) return undefined
  }
  const https = first(env, ["https_proxy", "HTTPS_PROXY"])
  const http = first(env, ["http_proxy", "HTTP_PROXY"])
  const chosen = target.protocol === "https:" && settings.https !== "" ? https : http
  const value = target.protocol === "https:" && settings.https !== "" ? settings.https : settings.http
  if (chosen === undefined || value === "") return undefined
  return { proxy: new URL(value), variable: chosen.name }
}

/** The host (name or address) and port a failed connection attempt was made to, as the network error says. */
const peerOf = (cause: unknown): { readonly host?: string; readonly port?: number } | undefined => {
  let c = cause
  for (let depth = 0; depth < 5 && typeof c === "object" && c !== null; depth++) {
    const e = c as { hostname?: unknown; address?: unknown; port?: unknown; cause?: unknown }
    if (typeof e.hostname === "string" || typeof e.address === "string")
      return {
        ...(typeof e.hostname === "string" ? { host: e.hostname.toLowerCase() } : {}),
        ...(typeof e.address === "string" && typeof e.hostname !== "string" ? { host: e.address } : {}),
        ...(typeof e.port === "number" ? { port: e.port } : {}),
      }
    c = e.cause
  }
  return undefined
}

/**
 * A proxy's refusal (undici: `Proxy response (407) !== 200 when HTTP Tunneling` for a tunnel, `Proxy Authentication
 * Required (407)` for a plain-http request): its status.
 */
const tunnelRefusal = (cause: unknown): number | undefined => {
  let c = cause
  for (let depth = 0; depth < 5 && typeof c === "object" && c !== null; depth++) {
    const message = (c as { message?: unknown }).message
    // (a tunnel for https; a plain-http request through the proxy answered 407 says so in its own words)
    const m =
      typeof message === "string"
        ? (/^Proxy response \((\d{3})\) !== 200/.exec(message) ??
          /^Proxy Authentication Required \((407)\)/.exec(message))
        : null
    if (m !== null) return Number(m[1])
    c = (c as { cause?: unknown }).cause
  }
  return undefined
}

/**
 * A request to `url` that failed with `cause` (`code`: its network code) because of the proxy it went through,
 * said as one sentence naming that proxy (credentials left out) and the variable that set it, and whether
 * trying again can help: the proxy could not be reached (refused, unknown host, unreachable, timed out), or it
 * would not pass requests on to the server (407 wants credentials, 403 forbids that host or port, 5xx could not
 * reach the server itself). Undefined when the request went direct, or failed beyond the proxy.
 */
export const proxyTrouble = (
  env: Readonly<Record<string, string | undefined>>,
  url: string,
  cause: unknown,
  code: string | undefined,
): { readonly sentence: string; readonly permanent: boolean } | undefined => {
  const route = proxyRoute(env, url)
  if (route === undefined) return undefined
  const proxyPort = Number.parseInt(route.proxy.port, 10) || DEFAULT_PORTS[route.proxy.protocol] || 0
  const shown = `${route.proxy.protocol}//${route.proxy.host} (${route.variable})`
  const status = tunnelRefusal(cause)
  if (status !== undefined) {
    const what =
      status === 407
        ? "407: it wants credentials; put them in the proxy URL, http://user:password@host:port, percent-encoded"
        : status === 403
          ? "403: it does not allow that host or port; ask its administrators, or list the host in no_proxy if it is reached without a proxy"
          : status >= 500
            ? `${status}: it could not reach the server itself; check the URL's host name and port`
            : `${status}; check the proxy setting`
    return {
      sentence: `the proxy ${shown} would not pass requests on to the server (${what})`,
      permanent: status < 500,
    }
  }
  const peer = peerOf(cause)
  const proxyHost = route.proxy.hostname.toLowerCase().replace(/^\[(.*)\]$/, "$1")
  const atProxy =
    peer !== undefined &&
    (peer.host === proxyHost || (peer.host !== undefined && peer.port === proxyPort && peer.port !== 0))
  if (!atProxy || code === undefined) return undefined
  return {
    sentence: `could not reach the proxy ${shown} (${code}); check that setting, or list the server's host in no_proxy if it is reached without a proxy`,
    permanent: false,
  }
}
