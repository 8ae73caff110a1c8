import { HttpClient, type HttpClientRequest, HttpClientResponse } from "@effect/platform"
import * as FhirClient from "@ferry/core/FhirClient"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Option, Ref, TestClock } from "effect"
import { ExportError } from "../src/ExportError.js"
import * as Poll from "../src/Poll.js"

type Answer = { readonly status: number; readonly headers?: Record<string, string>; readonly body?: unknown }

const manifest = {
  transactionTime: "2026-01-01T00:00:00Z",
  request: "https://fhir.example.org/r4/$export",
  requiresAccessToken: true,
  output: [{ type: "Patient", url: "https://files.example.org/p1.ndjson", count: 2 }],
  error: [],
}
const status = "https://fhir.example.org/r4/bulk/status/1"

/** A scripted fake server; records the URL of every request. */
const fake = (script: ReadonlyArray<Answer>) =>
  Effect.gen(function* () {
    const answers = yield* Ref.make(script)
    const seen = yield* Ref.make<ReadonlyArray<string>>([])
    const http = HttpClient.make((request: HttpClientRequest.HttpClientRequest) =>
      Effect.gen(function* () {
        yield* Ref.update(seen, (s) => [...s, request.url])
        const next = yield* Ref.modify(answers, (a) => [a[0], a.slice(1)] as const)
        if (next === undefined) return yield* Effect.dieMessage(`unscripted request ${request.url}`)
        const body = next.body === undefined ? null : JSON.stringify(next.body)
        return HttpClientResponse.fromWeb(
          request,
          new Response(body, { status: next.status, headers: next.headers }),
        )
      }),
    )
    const client = yield* FhirClient.make({
      baseUrl: "https://fhir.example.org/r4",
      timeout: Duration.infinity,
      retry: { times: 2 },
    }).pipe(Effect.provideService(HttpClient.HttpClient, http))
    return { client, seen }
  })

const outcome = (code: string) => ({ resourceType: "OperationOutcome", issue: [{ severity: "error", code }] })

describe("Poll.waitForManifest", () => {
  it.effect("waits exactly the Retry-After of a 202 before polling again", () =>
    Effect.gen(function* () {
      const { client, seen } = yield* fake([
        { status: 202, headers: { "retry-after": "120", "x-progress": "10%" } },
        { status: 200, body: manifest },
      ])
      const progress: Array<string | undefined> = []
      const fiber = yield* Effect.fork(
        Poll.waitForManifest(client, status, { onProgress: (p) => Effect.sync(() => void progress.push(p)) }),
      )
      yield* TestClock.adjust("119 seconds")
      assert.strictEqual((yield* Ref.get(seen)).length, 1)
      yield* TestClock.adjust("1 second")
      const result = yield* Fiber.join(fiber)
      assert.strictEqual(result.transactionTime, manifest.transactionTime)
      assert.strictEqual(result.output.length, 1)
      assert.deepStrictEqual(progress, ["10%"])
      assert.strictEqual((yield* Ref.get(seen)).length, 2)
    }),
  )

  it.effect(
    "429 storms: never polls before the server's Retry-After, keeps going past the client's retries",
    () =>
      Effect.gen(function* () {
        const throttled: Answer = {
          status: 429,
          headers: { "retry-after": "30" },
          body: outcome("throttled"),
        }
        const { client, seen } = yield* fake([
          throttled,
          throttled,
          throttled,
          throttled,
          { status: 200, body: manifest },
        ])
        const fiber = yield* Effect.fork(Poll.waitForManifest(client, status, { interval: "5 seconds" }))
        yield* TestClock.adjust("29 seconds")
        assert.strictEqual((yield* Ref.get(seen)).length, 1)
        yield* TestClock.adjust("1 second")
        assert.strictEqual((yield* Ref.get(seen)).length, 2)
        yield* TestClock.adjust("30 seconds")
        // The client's 2 retries are used up: the poll loop waits its own interval (5 s) and asks again.
        assert.strictEqual((yield* Ref.get(seen)).length, 3)
        yield* TestClock.adjust("5 seconds")
        assert.strictEqual((yield* Ref.get(seen)).length, 4)
        yield* TestClock.adjust("30 seconds")
        const result = yield* Fiber.join(fiber)
        assert.strictEqual(result.output.length, 1)
      }),
  )

  it.effect("a transient OperationOutcome on a 4xx is retried; a hard failure fails the export", () =>
    Effect.gen(function* () {
      const { client } = yield* fake([
        { status: 400, body: outcome("transient") },
        {
          status: 500,
          body: {
            resourceType: "OperationOutcome",
            issue: [{ severity: "error", code: "processing", diagnostics: "disk full" }],
          },
        },
      ])
      const fiber = yield* Effect.fork(Poll.waitForManifest(client, status, { interval: "1 second" }))
      yield* TestClock.adjust("1 second")
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : undefined
      assert.instanceOf(error, ExportError)
      assert.strictEqual((error as ExportError).reason, "JobFailed")
      assert.include((error as ExportError).message, "disk full")
    }),
  )

  it.effect("a 500 reporting a crash (fatal, exception) fails the export at once: a job that died", () =>
    Effect.gen(function* () {
      const crash = {
        resourceType: "OperationOutcome",
        issue: [{ severity: "fatal", code: "exception", diagnostics: "job crashed: disk full" }],
      }
      // the client's own retries (2) see the same answer, then the poll gives up instead of asking again
      const { client, seen } = yield* fake(Array.from({ length: 3 }, () => ({ status: 500, body: crash })))
      const fiber = yield* Effect.fork(Poll.waitForManifest(client, status, { interval: "1 second" }))
      yield* TestClock.adjust("1 minute")
      const exit = yield* Fiber.await(fiber)
      const error = Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : undefined
      assert.instanceOf(error, ExportError)
      assert.strictEqual((error as ExportError).reason, "JobFailed")
      assert.include((error as ExportError).message, "job crashed: disk full")
      assert.isAtMost((yield* Ref.get(seen)).length, 3)
    }),
  )

  it.effect("a gateway's 504 with a fatal exception body is still a passing trouble: polled again", () =>
    Effect.gen(function* () {
      const crash = {
        resourceType: "OperationOutcome",
        issue: [{ severity: "fatal", code: "exception", diagnostics: "Service temporarily unavailable" }],
      }
      const { client } = yield* fake([
        ...Array.from({ length: 6 }, () => ({ status: 504, body: crash })),
        { status: 200, body: manifest },
      ])
      const fiber = yield* Effect.fork(Poll.waitForManifest(client, status, { interval: "1 second" }))
      yield* TestClock.adjust("10 minutes")
      const result = yield* Fiber.join(fiber)
      assert.strictEqual(result.output.length, 1)
    }),
  )

  it.effect("a timeout after failing polls says the job may have failed, not just to keep waiting", () =>
    Effect.gen(function* () {
      const failing: Answer = { status: 503, body: outcome("transient") }
      const { client } = yield* fake(Array.from({ length: 200 }, () => failing))
      const fiber = yield* Effect.fork(
        Poll.waitForManifest(client, status, { timeout: "5 minutes", interval: "10 seconds" }),
      )
      yield* TestClock.adjust("5 minutes")
      const exit = yield* Fiber.await(fiber)
      const failure = Exit.isFailure(exit) ? String(exit.cause) : ""
      assert.include(
        failure,
        "did not finish within 5m, and the status URL's last answers were failures (503",
      )
      assert.include(failure, "the job may have failed")
    }),
  )

  it.effect("gives up after the overall timeout", () =>
    Effect.gen(function* () {
      const running: Answer = { status: 202, headers: { "retry-after": "60" } }
      const { client } = yield* fake(Array.from({ length: 10 }, () => running))
      const fiber = yield* Effect.fork(Poll.waitForManifest(client, status, { timeout: "5 minutes" }))
      yield* TestClock.adjust("5 minutes")
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.isFailure(exit))
      const failure = Exit.isFailure(exit) ? exit.cause : undefined
      assert.include(String(failure), "did not finish within 5m")
    }),
  )

  it.effect(
    "follows partial manifests (link next) and merges their files, an item repeated by a later part once",
    () =>
      Effect.gen(function* () {
        const second = {
          ...manifest,
          output: [
            { type: "Patient", url: "https://files.example.org/p1.ndjson", count: 2 },
            { type: "Observation", url: "https://files.example.org/o1.ndjson" },
          ],
          error: [{ type: "OperationOutcome", url: "https://files.example.org/e1.ndjson" }],
        }
        const { client, seen } = yield* fake([
          {
            status: 200,
            body: {
              ...manifest,
              link: [{ relation: "next", url: "https://fhir.example.org/r4/bulk/status/1/part/2" }],
            },
          },
          { status: 200, body: second },
        ])
        const result = yield* Poll.waitForManifest(client, status)
        assert.deepStrictEqual(
          result.output.map((o) => o.type),
          ["Patient", "Observation"],
        )
        assert.strictEqual(result.error.length, 1)
        assert.strictEqual((yield* Ref.get(seen))[1], "https://fhir.example.org/r4/bulk/status/1/part/2")
        assert.isTrue(Option.isNone(Option.fromNullable((result as { link?: unknown }).link)))
      }),
  )

  it.live("onPartial: a 202 that carries a manifest, then each part, merged with the parts before it", () =>
    Effect.gen(function* () {
      const part2 = "https://fhir.example.org/r4/bulk/status/1?part=2"
      const first = { ...manifest, link: [{ relation: "next", url: part2 }] }
      const o1 = { type: "Observation", url: "https://files.example.org/o1.ndjson" }
      const o2 = { type: "Observation", url: "https://files.example.org/o2.ndjson" }
      const { client } = yield* fake([
        { status: 202, headers: { "retry-after": "0" }, body: outcome("informational") },
        { status: 202, headers: { "retry-after": "0" }, body: manifest },
        { status: 200, body: first },
        // part 2 still growing (no link yet), then final
        { status: 202, headers: { "retry-after": "0" }, body: { ...manifest, output: [o1] } },
        { status: 200, body: { ...manifest, output: [o1, o2] } },
      ])
      const seen: Array<ReadonlyArray<string>> = []
      const result = yield* Poll.waitForManifest(client, status, {
        onPartial: (m) =>
          Effect.sync(() => {
            assert.isUndefined((m as { link?: unknown }).link)
            seen.push(m.output.map((o) => o.url.slice(o.url.lastIndexOf("/") + 1)))
          }),
      })
      assert.deepStrictEqual(seen, [["p1.ndjson"], ["p1.ndjson"], ["p1.ndjson", "o1.ndjson"]])
      assert.deepStrictEqual(
        result.output.map((o) => o.url.slice(o.url.lastIndexOf("/") + 1)),
        ["p1.ndjson", "o1.ndjson", "o2.ndjson"],
      )
    }),
  )

  it.live(
    "onPartial: a 202's part that links to the next is complete: the next part is polled while the job runs",
    () =>
      Effect.gen(function* () {
        const part2 = "https://fhir.example.org/r4/bulk/status/1?part=2"
        const o1 = { type: "Observation", url: "https://files.example.org/o1.ndjson" }
        const o2 = { type: "Observation", url: "https://files.example.org/o2.ndjson" }
        const { client, seen } = yield* fake([
          { status: 202, headers: { "retry-after": "0" }, body: outcome("informational") },
          {
            status: 202,
            headers: { "retry-after": "0" },
            body: { ...manifest, link: [{ relation: "next", url: part2 }] },
          },
          { status: 202, headers: { "retry-after": "0" }, body: { ...manifest, output: [o1] } },
          { status: 200, body: { ...manifest, output: [o1, o2] } },
        ])
        const reported: Array<ReadonlyArray<string>> = []
        const result = yield* Poll.waitForManifest(client, status, {
          onPartial: (m) => Effect.sync(() => void reported.push(m.output.map((o) => o.url))),
        })
        // the status URL was not asked again once its part linked to part 2
        assert.deepStrictEqual(yield* Ref.get(seen), [status, status, part2, part2])
        assert.deepStrictEqual(reported, [[manifest.output[0]!.url], [manifest.output[0]!.url, o1.url]])
        assert.deepStrictEqual(
          result.output.map((o) => o.url),
          [manifest.output[0]!.url, o1.url, o2.url],
        )
      }),
  )

  it.live(
    "onPartial: a next part that answers 404 while the job runs is not there yet: the chain is asked for again from the status URL",
    () =>
      Effect.gen(function* () {
        const part2 = "https://fhir.example.org/r4/bulk/status/1?part=2"
        const linked = { ...manifest, link: [{ relation: "next", url: "?part=2" }] }
        const o1 = { type: "Observation", url: "https://files.example.org/o1.ndjson" }
        const { client, seen } = yield* fake([
          { status: 202, headers: { "retry-after": "0" }, body: linked },
          { status: 404, body: outcome("not-found") },
          { status: 202, headers: { "retry-after": "0" }, body: linked },
          { status: 200, body: { ...manifest, output: [o1] } },
        ])
        const reported: Array<number> = []
        const result = yield* Poll.waitForManifest(client, status, {
          interval: "10 millis",
          onPartial: (m) => Effect.sync(() => void reported.push(m.output.length)),
        })
        // the relative link is resolved against the part that holds it
        assert.deepStrictEqual(yield* Ref.get(seen), [status, part2, status, part2])
        assert.deepStrictEqual(
          result.output.map((o) => o.url),
          [manifest.output[0]!.url, o1.url],
        )
        assert.deepStrictEqual(reported, [1, 1])
      }),
  )

  it.live(
    "onPartial: while the job runs, a later part answered 200 still counts as running: a 404 past it is re-asked, links resolve against their own part",
    () =>
      Effect.gen(function* () {
        const part2 = "https://fhir.example.org/r4/bulk/parts/2"
        const part3 = "https://fhir.example.org/r4/bulk/parts/3"
        const o1 = { type: "Observation", url: "https://files.example.org/o1.ndjson" }
        const o2 = { type: "Observation", url: "https://files.example.org/o2.ndjson" }
        const first = { ...manifest, link: [{ relation: "next", url: part2 }] }
        const second = { ...manifest, output: [o1], link: [{ relation: "next", url: "3" }] }
        const { client, seen } = yield* fake([
          { status: 202, headers: { "retry-after": "0" }, body: first },
          { status: 200, body: second },
          { status: 404, body: outcome("not-found") },
          { status: 202, headers: { "retry-after": "0" }, body: first },
          { status: 200, body: second },
          { status: 200, body: { ...manifest, output: [o2] } },
        ])
        const result = yield* Poll.waitForManifest(client, status, {
          interval: "10 millis",
          onPartial: () => Effect.void,
        })
        assert.deepStrictEqual(yield* Ref.get(seen), [status, part2, part3, status, part2, part3])
        assert.deepStrictEqual(
          result.output.map((o) => o.url),
          [manifest.output[0]!.url, o1.url, o2.url],
        )
      }),
  )

  it.live(
    "onPartial: parts that link back to one already read while the job runs: a Manifest error, not a short manifest",
    () =>
      Effect.gen(function* () {
        const { client } = yield* fake([
          {
            status: 202,
            headers: { "retry-after": "0" },
            body: { ...manifest, link: [{ relation: "next", url: status }] },
          },
        ])
        const error = yield* Effect.flip(
          Poll.waitForManifest(client, status, { onPartial: () => Effect.void }),
        )
        assert.strictEqual((error as { reason?: string }).reason, "Manifest")
        assert.include(error.message, "link back")
      }),
  )

  it.effect("a file whose type is not a resource type name (a path such as ../../x): a Manifest error", () =>
    Effect.gen(function* () {
      for (const list of ["output", "deleted", "error"] as const) {
        const { client } = yield* fake([
          {
            status: 200,
            body: {
              ...manifest,
              [list]: [{ type: "../../PWNED", url: "https://files.example.org/x.ndjson" }],
            },
          },
        ])
        const error = yield* Effect.flip(Poll.waitForManifest(client, status))
        assert.strictEqual((error as { reason?: string }).reason, "Manifest")
        assert.include(error.message, `invalid at ${list}.0.type`)
        assert.notInclude(error.message, "PWNED")
      }
    }),
  )

  it.effect("a 404 on the status URL is reported as a vanished job", () =>
    Effect.gen(function* () {
      const { client } = yield* fake([{ status: 404, body: outcome("not-found") }])
      const exit = yield* Poll.waitForManifest(client, status).pipe(Effect.exit)
      assert.isTrue(Exit.isFailure(exit))
      assert.isTrue(
        Exit.isFailure(exit) && Poll.isJobGone(exit.cause._tag === "Fail" ? exit.cause.error : undefined),
      )
    }),
  )
})
