import { describe, expect, it } from "vitest"
import { Either, Option } from "effect"
import * as HttpDispatcher from "../src/HttpDispatcher.js"

const settings = (env: Record<string, string>) => HttpDispatcher.proxySettings(env)

describe("HttpDispatcher.proxySettings", () => {
  it("none without a proxy variable (no_proxy alone is no proxy)", () => {
    expect(settings({})).toEqual(Either.right(undefined))
    expect(settings({ NO_PROXY: "example.org", http_proxy: " " })).toEqual(Either.right(undefined))
  })

  it("lower case first, host:port as http, loopback always direct", () => {
    expect(
      settings({
        http_proxy: "proxy.lan:3128",
        HTTP_PROXY: "http://ignored:1",
        HTTPS_PROXY: "https://user:pw@secure.lan:8443",
        NO_PROXY: "internal.lan, .corp.example ",
      }),
    ).toEqual(
      Either.right({
        http: "http://proxy.lan:3128",
        https: "https://user:pw@secure.lan:8443",
        noProxy: "internal.lan,.corp.example,localhost,127.0.0.1,::1,[::1]",
      }),
    )
    expect(settings({ HTTPS_PROXY: "http://p:1", no_proxy: "*" })).toEqual(
      Either.right({ http: "", https: "http://p:1", noProxy: "*" }),
    )
  })

  it("a proxy that is not an http(s) URL is a problem naming its variable", () => {
    expect(settings({ HTTPS_PROXY: "socks5://127.0.0.1:1080" })).toEqual(
      Either.left({
        variable: "HTTPS_PROXY",
        detail: "Ferry speaks to http and https proxies, not socks5; set an http:// proxy URL",
      }),
    )
    expect(Either.getLeft(settings({ http_proxy: "http://" })).pipe((o) => o._tag)).toBe("Some")
  })

  it("a proxy URL undici would refuse (a path, a query, a broken %-escape in its credentials) is a problem, not a crash", () => {
    for (const value of ["http://u:p@127.0.0.1:1/%zz", "http://proxy:3128/x", "http://proxy:3128/?a=b"]) {
      const problem = Either.getLeft(settings({ https_proxy: value }))
      expect(Option.getOrUndefined(problem)?.detail).toContain("has a path or a query")
    }
    // a URL that passes makes a pool without a throw
    expect(() =>
      HttpDispatcher.make(Either.getOrThrow(settings({ https_proxy: "http://u:p@proxy:3128/" }))),
    ).not.toThrow()
    const badEscape = Either.getLeft(settings({ http_proxy: "http://u:%zz@127.0.0.1:1" }))
    expect(Option.getOrUndefined(badEscape)?.detail).toContain("not percent-encoded right")
    expect(Option.getOrUndefined(badEscape)?.detail).not.toContain("%zz")
  })
})

describe("HttpDispatcher.proxyRoute and proxyTrouble", () => {
  const env = {
    https_proxy: "http://user:secret@proxy.corp:3128",
    http_proxy: "proxy2.corp:8080",
    no_proxy: ".internal,fhir.example.org:8443",
  }

  it("the proxy a URL goes through and the variable that set it, as the pool routes it", () => {
    const route = (url: string) => {
      const r = HttpDispatcher.proxyRoute(env, url)
      return r === undefined ? undefined : `${r.proxy.host} ${r.variable}`
    }
    expect(route("https://fhir.example.org/r4")).toBe("proxy.corp:3128 https_proxy")
    expect(route("http://fhir.example.org/r4")).toBe("proxy2.corp:8080 http_proxy")
    // no_proxy: a suffix, a host:port; loopback always direct
    expect(route("https://ehr.internal/fhir")).toBeUndefined()
    expect(route("https://fhir.example.org:8443/r4")).toBeUndefined()
    expect(route("http://127.0.0.1:8080/fhir")).toBeUndefined()
    // no https proxy: the http one
    expect(HttpDispatcher.proxyRoute({ HTTP_PROXY: "http://p:1" }, "https://x.org/")?.variable).toBe(
      "HTTP_PROXY",
    )
    expect(
      HttpDispatcher.proxyRoute({ http_proxy: "http://p:1", no_proxy: "*" }, "https://x.org/"),
    ).toBeUndefined()
    expect(HttpDispatcher.proxyRoute({}, "https://x.org/")).toBeUndefined()
  })

  it("a connection the proxy refused, or a proxy name that resolves nowhere, names the proxy without its credentials", () => {
    const refused = Object.assign(new Error("connect ECONNREFUSED 10.0.0.5:3128"), {
      code: "ECONNREFUSED",
      address: "10.0.0.5",
      port: 3128,
    })
    const trouble = HttpDispatcher.proxyTrouble(
      env,
      "https://fhir.example.org/r4/metadata",
      { cause: refused },
      "ECONNREFUSED",
    )
    expect(trouble).toEqual({
      sentence:
        "could not reach the proxy http://proxy.corp:3128 (https_proxy) (ECONNREFUSED); check that setting, or list the server's host in no_proxy if it is reached without a proxy",
      permanent: false,
    })
    const unknown = Object.assign(new Error("getaddrinfo ENOTFOUND proxy.corp"), {
      code: "ENOTFOUND",
      hostname: "proxy.corp",
    })
    expect(
      HttpDispatcher.proxyTrouble(env, "https://fhir.example.org/", unknown, "ENOTFOUND")?.sentence,
    ).toContain("could not reach the proxy http://proxy.corp:3128 (https_proxy) (ENOTFOUND)")
    // a request that went direct, or a failure elsewhere than at the proxy: not the proxy's
    expect(
      HttpDispatcher.proxyTrouble(env, "https://ehr.internal/fhir", refused, "ECONNREFUSED"),
    ).toBeUndefined()
    const elsewhere = Object.assign(new Error("getaddrinfo ENOTFOUND other.org"), {
      code: "ENOTFOUND",
      hostname: "other.org",
    })
    expect(
      HttpDispatcher.proxyTrouble(env, "https://fhir.example.org/", elsewhere, "ENOTFOUND"),
    ).toBeUndefined()
  })

  it("a proxy that will not open a tunnel: what its status means, and whether another try can help", () => {
    const refusal = (status: number) =>
      HttpDispatcher.proxyTrouble(
        env,
        "https://fhir.example.org/r4",
        Object.assign(new Error(`Proxy response (${status}) !== 200 when HTTP Tunneling`), {
          code: "UND_ERR_ABORTED",
        }),
        "UND_ERR_ABORTED",
      )
    expect(refusal(407)).toEqual({
      sentence:
        "the proxy http://proxy.corp:3128 (https_proxy) would not pass requests on to the server (407: it wants credentials; put them in the proxy URL, http://user:password@host:port, percent-encoded)",
      permanent: true,
    })
    expect(refusal(403)?.permanent).toBe(true)
    expect(refusal(403)?.sentence).toContain("403: it does not allow that host or port")
    expect(refusal(502)).toEqual({
      sentence:
        "the proxy http://proxy.corp:3128 (https_proxy) would not pass requests on to the server (502: it could not reach the server itself; check the URL's host name and port)",
      permanent: false,
    })
    expect(JSON.stringify(refusal(407))).not.toContain("secret")
    // a plain-http request through the http proxy, refused for credentials
    const plain = HttpDispatcher.proxyTrouble(
      env,
      "http://fhir.example.org/r4",
      Object.assign(new Error("Proxy Authentication Required (407)"), { code: "UND_ERR_INVALID_ARG" }),
      "UND_ERR_INVALID_ARG",
    )
    expect(plain?.permanent).toBe(true)
    expect(plain?.sentence).toContain(
      "the proxy http://proxy2.corp:8080 (http_proxy) would not pass requests on to the server (407: it wants credentials",
    )
  })
})
