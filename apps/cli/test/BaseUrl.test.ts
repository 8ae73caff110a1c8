import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Option } from "effect"
import * as BaseUrl from "../src/BaseUrl.js"

describe("BaseUrl", () => {
  it("accepts http(s) bases and drops trailing slashes", () => {
    assert.deepStrictEqual(
      BaseUrl.parse("https://fhir.example.org/r4/"),
      Either.right("https://fhir.example.org/r4"),
    )
    assert.deepStrictEqual(
      BaseUrl.parse("http://127.0.0.1:8080/fhir"),
      Either.right("http://127.0.0.1:8080/fhir"),
    )
  })
  it("refuses what is not an absolute http(s) URL, or holds a user name or password, saying what to do", () => {
    const problem = (raw: string) => Either.getLeft(BaseUrl.parse(raw, "the target's"))
    assert.match(
      Option.getOrThrow(problem("fhir.example.org/r4")),
      /^is not an absolute URL; pass the target's/,
    )
    assert.match(Option.getOrThrow(problem("ftp://fhir.example.org/r4")), /^is not an http\(s\) URL/)
    assert.match(
      Option.getOrThrow(problem("https://alice:pw@fhir.example.org/r4")),
      /^holds a user name or password/,
    )
    assert.match(
      Option.getOrThrow(problem("https://alice@fhir.example.org/r4")),
      /^holds a user name or password/,
    )
    assert.match(
      Option.getOrThrow(problem("https://fhir.example.org/r4?access_token=secret")),
      /^holds a query \(\?…\), which a FHIR base has not/,
    )
    assert.notInclude(Option.getOrThrow(problem("https://fhir.example.org/r4?access_token=secret")), "secret")
    assert.match(Option.getOrThrow(problem("https://fhir.example.org/r4#frag")), /^holds a fragment/)
    assert.match(Option.getOrThrow(problem("https://fhir.example.org/r4?")), /^holds a query/)
    assert.strictEqual(BaseUrl.shown("https://alice:pw@fhir.example.org/r4"), "https://fhir.example.org/r4")
  })

  it.effect(
    "sameServer: equal host names, or names that resolve to a common address, on the same port and path",
    () =>
      Effect.gen(function* () {
        const same = (a: string, b: string) => BaseUrl.sameServer(a, b)
        assert.isTrue(yield* same("http://127.0.0.1:8080/fhir", "http://localhost:8080/fhir"))
        assert.isTrue(yield* same("http://LOCALHOST:8080/fhir", "http://localhost:8080/fhir/"))
        assert.isTrue(yield* same("http://[::ffff:127.0.0.1]:8080/fhir", "http://127.0.0.1:8080/fhir"))
        assert.isTrue(yield* same("https://fhir.example.org/r4", "https://FHIR.example.org:443/r4"))
        // addresses are compared only when one host is given directly (an address, localhost): two other names
        // on one address are often two servers behind one ingress
        assert.isTrue(BaseUrl.direct("127.0.0.1"))
        assert.isTrue(BaseUrl.direct("[::1]"))
        assert.isTrue(BaseUrl.direct("localhost"))
        assert.isFalse(BaseUrl.direct("api.localhost")) // names under localhost: often vhosts of a local proxy
        assert.isFalse(BaseUrl.direct("fhir.example.org"))
        assert.isFalse(BaseUrl.direct("workspace-a.fhir.azurehealthcareapis.com"))
        assert.isFalse(yield* same("http://127.0.0.1:8080/fhir", "http://localhost:8081/fhir"))
        assert.isFalse(yield* same("http://127.0.0.1:8080/fhir", "http://localhost:8080/r4"))
        assert.isFalse(yield* same("http://127.0.0.1:8080/fhir", "https://127.0.0.1:8080/fhir"))
        assert.isFalse(yield* same("http://127.0.0.1:8080/fhir", "http://127.0.0.2:8080/fhir"))
        // a name that does not resolve is another server (reaching it fails later, saying so)
        assert.isFalse(yield* same("http://127.0.0.1:8080/fhir", "http://no-such-host.invalid:8080/fhir"))
      }),
  )
})
