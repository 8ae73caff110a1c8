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

/** The dispatcher for `settings`: a plain pool, or one that goes through the proxies. */
export const make = (settings: ProxySettings | undefined): Dispatcher =>
  settings === undefined
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

/**
 * Makes `pool` undici's global dispatcher (FhirClient's lean GETs use it) and returns what puts the previous one
 * back.
 */
export const setGlobal = (pool: Dispatcher): (() => void) => {
  const before = getGlobalDispatcher()
  setGlobalDispatcher(pool)
  return () => setGlobalDispatcher(before)
}
