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
