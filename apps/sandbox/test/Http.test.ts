import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { FhirHttpError, Router, sendJson } from "../src/Http.js"
import { Sandbox } from "../src/Sandbox.js"
import { at, call } from "./http.js"

describe("Router.match", () => {
  const router = new Router()
  const noop = () => undefined
  router.on("GET", "/:type/:id", noop)
  router.on("GET", "/Group/:id/$export", noop)
  router.on("GET", "/:type/$export", noop)
  router.on("GET", "/$export", noop)
  router.on("GET", "/files/*", noop)
  router.on("POST", "/:type", noop)

  const pattern = (method: string, path: string) => {
    const m = router.match(method, path)
    return typeof m === "string" ? m : m.route.pattern
  }

  it("prefers the route with the most literal segments, whatever the registration order", () => {
    assert.strictEqual(pattern("GET", "/Patient/123"), "/:type/:id")
    assert.strictEqual(pattern("GET", "/Patient/$export"), "/:type/$export")
    assert.strictEqual(pattern("GET", "/$export"), "/$export")
    assert.strictEqual(pattern("GET", "/Group/g1/$export"), "/Group/:id/$export")
    assert.strictEqual(pattern("HEAD", "/Patient/123"), "/:type/:id")
  })

  it("captures params and wildcard tails; reports 404 and 405", () => {
    const m = router.match("GET", "/files/job-1/Patient.000.ndjson")
    assert.notStrictEqual(typeof m, "string")
    if (typeof m !== "string") assert.deepStrictEqual(m.params, { "*": "job-1/Patient.000.ndjson" })
    const p = router.match("GET", "/Patient/a%20b")
    if (typeof p !== "string") assert.deepStrictEqual(p.params, { type: "Patient", id: "a b" })
    assert.strictEqual(router.match("DELETE", "/Patient"), "method-not-allowed")
    assert.strictEqual(router.match("GET", "/a/b/c/d"), "not-found")
  })
})

describe("Router over HTTP", () => {
  it.scoped("runs middleware in order, lets it answer, and turns failures into OperationOutcomes", () =>
    Effect.gen(function* () {
      const seen: string[] = []
      const { baseUrl } = yield* Sandbox.make(
        {},
        {
          plugins: [
            (router) => {
              router.use(async (ctx, next) => {
                seen.push(`a:${ctx.route ?? "none"}`)
                await next()
              })
              router.use(async (ctx, next) => {
                seen.push("b")
                if (ctx.url.searchParams.has("block")) return sendJson(ctx, 429, { blocked: true })
                await next()
              })
              router.on("GET", "/$boom", () => {
                throw new Error("kaput")
              })
              router.on("GET", "/$teapot", () => {
                throw new FhirHttpError(418, "processing", "short and stout", { "X-Test": "1" })
              })
              router.on("GET", "/Patient/$special", (ctx) => sendJson(ctx, 200, { special: true }))
            },
          ],
        },
      )
      const special = yield* call(`${baseUrl}/Patient/$special`)
      assert.deepStrictEqual(special.body, { special: true })
      assert.deepStrictEqual(seen, ["a:/Patient/$special", "b"])
      const blocked = yield* call(`${baseUrl}/metadata?block=1`)
      assert.strictEqual(blocked.status, 429)
      const boom = yield* call(`${baseUrl}/$boom`)
      assert.strictEqual(boom.status, 500)
      assert.strictEqual(at(boom.body, "issue.0.diagnostics"), "kaput")
      const teapot = yield* call(`${baseUrl}/$teapot`)
      assert.strictEqual(teapot.status, 418)
      assert.strictEqual(teapot.headers.get("x-test"), "1")
      assert.strictEqual(at(teapot.body, "issue.0.code"), "processing")
      const missing = yield* call(`${baseUrl}/nothing/here/at/all`)
      assert.strictEqual(missing.status, 404)
      assert.include(seen, "a:none")
    }),
  )
})
