import { assert, describe, it } from "@effect/vitest"
import { Either, Option } from "effect"
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
    assert.strictEqual(BaseUrl.shown("https://alice:pw@fhir.example.org/r4"), "https://fhir.example.org/r4")
  })
})
