import type { ServerResponse } from "node:http"
import {
  FetchHttpClient,
  HttpClient,
  HttpClientError,
  HttpClientRequest,
  HttpClientResponse,
} from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { assertSome } from "@effect/vitest/utils"
import {
  Chunk,
  Duration,
  Effect,
  Exit,
  Fiber,
  Logger,
  Option,
  Ref,
  Stream,
  TestClock,
  TestServices,
} from "effect"
import * as FhirClient from "../src/FhirClient.js"
import { AuthError, FhirError } from "../src/Errors.js"
import type { RetryOptions } from "../src/Retry.js"
import { loopback } from "./helpers/loopback.js"

/** One scripted answer of the fake server, or a connection reset. */
type Answer =
  | { readonly status: number; readonly headers?: Record<string, string>; readonly body?: unknown }
  | "reset"
  /** No answer: the platform's transport error with this network error code as its cause. */
  | { readonly code: string }

const patient = { resourceType: "Patient", id: "1", name: [{ family: "Doe", given: ["Jane"] }] }
const ok: Answer = { status: 200, body: patient }
const outcome = (code: string) => ({
  resourceType: "OperationOutcome",
  issue: [{ severity: "error", code, diagnostics: `issue ${code}` }],
})

/**
 * A pure fake: HttpClient.make answering from a Ref'd script and recording every request it saw.
 * The per-attempt timeout is off so that only the retry schedule sleeps on the TestClock.
 */
const fake = (
  script: ReadonlyArray<Answer>,
  options: {
    readonly retry?: Partial<RetryOptions>
    readonly onUnauthorized?: Effect.Effect<void, AuthError>
    readonly token?: Ref.Ref<string>
    readonly client?: Partial<FhirClient.FhirClientOptions>
  } = {},
) =>
  Effect.gen(function* () {
    const answers = yield* Ref.make(script)
    const seen = yield* Ref.make<ReadonlyArray<HttpClientRequest.HttpClientRequest>>([])
    const http = HttpClient.make((request) =>
      Effect.gen(function* () {
        yield* Ref.update(seen, (s) => [...s, request])
        const next = yield* Ref.modify(answers, (a) => [a[0], a.slice(1)] as const)
        if (next === undefined)
          return yield* Effect.dieMessage(`unscripted request ${request.method} ${request.url}`)
        if (next === "reset") {
          return yield* new HttpClientError.RequestError({
            request,
            reason: "Transport",
            cause: "ECONNRESET",
          })
        }
        if ("code" in next) {
          const cause = Object.assign(new Error(next.code), { code: next.code })
          return yield* new HttpClientError.RequestError({ request, reason: "Transport", cause })
        }
        const body =
          next.body === undefined
            ? null
            : typeof next.body === "string"
              ? next.body
              : JSON.stringify(next.body)
        return HttpClientResponse.fromWeb(
          request,
          new Response(body, { status: next.status, headers: next.headers }),
        )
      }),
    )
    const token = options.token
    const client = yield* FhirClient.make({
      baseUrl: "https://fhir.example.org/r4",
      timeout: Duration.infinity,
      retry: { times: 3, ...options.retry },
      ...(options.onUnauthorized ? { onUnauthorized: options.onUnauthorized } : {}),
      ...(token
        ? {
            authorize: (req: HttpClientRequest.HttpClientRequest) =>
              Effect.map(Ref.get(token), (t) => HttpClientRequest.bearerToken(req, t)),
          }
        : {}),
      ...options.client,
    }).pipe(Effect.provideService(HttpClient.HttpClient, http))
    return { client, requests: Effect.map(Ref.get(seen), (s) => s.length), seen }
  })

/** Lets the forked call run (real time) until it sleeps on the TestClock having made `n` requests. */
const untilWaiting = (requests: Effect.Effect<number>, n: number) =>
  Effect.gen(function* () {
    // Real-time budget: generous, because a loaded CI machine may be slow to schedule the fork.
    for (let i = 0; i < 7_500; i++) {
      // The per-attempt timeout also sleeps on the TestClock (minutes ahead): wait for a retry delay.
      const now = yield* TestClock.currentTimeMillis
      const retrying = Chunk.some(yield* TestClock.sleeps(), (wake) => wake - now < 4 * 60_000)
      if (retrying && (yield* requests) === n) return
      yield* TestServices.provideLive(Effect.sleep("2 millis"))
    }
    assert.fail(`the call never waited after ${n} request(s)`)
  })

/** Milliseconds until the pending retry sleep wakes (the per-attempt timeout, minutes ahead, is not one). */
const pendingRetryDelay = Effect.gen(function* () {
  const now = yield* TestClock.currentTimeMillis
  const delays = Chunk.toReadonlyArray(yield* TestClock.sleeps())
    .map((wake) => wake - now)
    .filter((d) => d < 4 * 60_000)
  assert.strictEqual(delays.length, 1, "exactly one retry sleep is pending")
  return delays[0]!
})

/** Joins a fiber, failing the test (in real time) instead of hanging when it is still waiting. */
const joinSoon = <A, E>(fiber: Fiber.Fiber<A, E>) =>
  Fiber.await(fiber).pipe(
    Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => "the call did not finish" as const }),
    TestServices.provideLive,
    Effect.orDie,
  )

/** The failure of a call that must fail without waiting on the clock (a retry would time out here). */
const failsAtOnce = <A, E>(call: Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    const exit = yield* joinSoon(yield* Effect.fork(call))
    if (Exit.isSuccess(exit)) return assert.fail("the call succeeded")
    if (exit.cause._tag !== "Fail") return assert.fail(`unexpected cause ${exit.cause._tag}`)
    return exit.cause.error
  })

/** Forks a call, checks it is still waiting after `before`, and done right after `exactly`. */
const waitsExactly = <A, E>(
  call: Effect.Effect<A, E>,
  requests: Effect.Effect<number>,
  exactly: Duration.DurationInput,
) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(call)
    yield* untilWaiting(requests, 1)
    yield* TestClock.adjust(Duration.subtract(Duration.decode(exactly), Duration.millis(1)))
    assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "finished before the wait was over")
    assert.strictEqual(yield* requests, 1, "retried before the wait was over")
    yield* TestClock.adjust(Duration.millis(1))
    const exit = yield* joinSoon(fiber)
    assert.strictEqual(yield* requests, 2)
    return exit
  })

describe("FhirClient requests (fake server)", () => {
  it.effect("kicks off an operation and hands back the raw 202 with its Content-Location", () =>
    Effect.gen(function* () {
      const { client, seen } = yield* fake([
        {
          status: 202,
          headers: { "content-location": "https://fhir.example.org/r4/$export-poll-status?_jobId=1" },
        },
      ])
      const response = yield* client.operation("Patient/$export", {
        method: "GET",
        urlParams: { _type: "Patient,Observation" },
        headers: { prefer: "respond-async" },
      })
      assert.strictEqual(response.status, 202)
      assert.strictEqual(
        response.headers["content-location"],
        "https://fhir.example.org/r4/$export-poll-status?_jobId=1",
      )
      const [req] = yield* Ref.get(seen)
      assert.strictEqual(req?.headers.prefer, "respond-async")
      assert.strictEqual(req?.headers.accept, "application/fhir+json")
      assert.strictEqual(
        Option.map(HttpClientRequest.toUrl(req!), (u) => u.toString()).pipe(Option.getOrNull),
        "https://fhir.example.org/r4/Patient/$export?_type=Patient%2CObservation",
      )
    }),
  )

  it.effect("stops a search whose next link points back to the same page", () =>
    Effect.gen(function* () {
      const page = {
        resourceType: "Bundle",
        type: "searchset",
        link: [{ relation: "next", url: "https://fhir.example.org/r4/Patient?_count=1" }],
        entry: [{ resource: patient }],
      }
      const { client, requests } = yield* fake([{ status: 200, body: page }])
      const error = yield* Effect.flip(Stream.runCollect(client.searchAll("Patient", { _count: "1" })))
      assert.instanceOf(error, FhirError)
      assert.strictEqual((error as FhirError).reason, "Decode")
      assert.strictEqual(yield* requests, 1)
    }),
  )

  it.effect("stops a search whose next link points to another server, saying which", () =>
    Effect.gen(function* () {
      const page = (next: string) => ({
        resourceType: "Bundle",
        type: "searchset",
        link: [{ relation: "next", url: next }],
        entry: [{ resource: patient }],
      })
      // a relative link and one to the same origin outside the base are followed
      const { client, requests } = yield* fake([
        { status: 200, body: page("?_getpages=a&_getpagesoffset=1") },
        { status: 200, body: page("https://fhir.example.org/paging?_getpages=a&_getpagesoffset=2") },
        { status: 200, body: page("http://10.0.0.5:8080/fhir?_getpages=a&_getpagesoffset=3") },
      ])
      const error = yield* Effect.flip(Stream.runCollect(client.searchAll("Patient", { _count: "1" })))
      assert.instanceOf(error, FhirError)
      assert.strictEqual(yield* requests, 3)
      assert.include(
        error.message,
        "points to another server (http://10.0.0.5:8080), not to https://fhir.example.org",
      )
      assert.include(error.message, "server_address")
      // a link that is no URL is not followed, nor echoed (it may carry a token)
      const broken = yield* fake([{ status: 200, body: page("http://10.0.0.5:99999/fhir?_getpages=s3cr3t") }])
      const bad = yield* Effect.flip(Stream.runCollect(broken.client.searchAll("Patient")))
      assert.include(bad.message, "its next link is not a URL")
      assert.notInclude(bad.message, "s3cr3t")
    }),
  )

  it.effect("gives up on a server that never answers after the per-attempt timeout", () =>
    Effect.gen(function* () {
      const http = HttpClient.make(() => Effect.never)
      const client = yield* FhirClient.make({
        baseUrl: "https://fhir.example.org/r4",
        timeout: "10 seconds",
        retry: { times: 0 },
      }).pipe(Effect.provideService(HttpClient.HttpClient, http))
      const fiber = yield* Effect.fork(client.capabilities())
      yield* untilWaiting(Effect.succeed(1), 1)
      yield* TestClock.adjust("10 seconds")
      const exit = yield* joinSoon(fiber)
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : undefined
      assert.instanceOf(error, FhirError)
      assert.strictEqual((error as FhirError).reason, "Transport")
      assert.include((error as FhirError).message, "10s")
    }),
  )
})

describe("FhirClient retry schedule (fake server, TestClock)", () => {
  it.effect("honours Retry-After as delta seconds", () =>
    Effect.gen(function* () {
      const { client, requests } = yield* fake([{ status: 429, headers: { "retry-after": "45" } }, ok])
      const exit = yield* waitsExactly(client.read("Patient", "1"), requests, "45 seconds")
      assert.isTrue(Exit.isSuccess(exit))
    }),
  )

  it.effect("honours Retry-After as an HTTP-date", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(Date.parse("2026-10-21T07:26:30Z"))
      const { client, requests } = yield* fake([
        { status: 503, headers: { "retry-after": "Wed, 21 Oct 2026 07:28:00 GMT" } },
        ok,
      ])
      const exit = yield* waitsExactly(client.read("Patient", "1"), requests, "90 seconds")
      assert.isTrue(Exit.isSuccess(exit))
    }),
  )

  it.effect("honours Retry-After as an absolute epoch timestamp", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(1_793_000_000_000 - 75_000)
      const { client, requests } = yield* fake([
        { status: 429, headers: { "retry-after": "1793000000" } },
        ok,
      ])
      const exit = yield* waitsExactly(client.read("Patient", "1"), requests, "75 seconds")
      assert.isTrue(Exit.isSuccess(exit))
    }),
  )

  it.effect("caps Retry-After at maxRetryAfter", () =>
    Effect.gen(function* () {
      const { client, requests } = yield* fake([{ status: 429, headers: { "retry-after": "86400" } }, ok], {
        retry: { maxRetryAfter: "20 seconds" },
      })
      const exit = yield* waitsExactly(client.read("Patient", "1"), requests, "20 seconds")
      assert.isTrue(Exit.isSuccess(exit))
    }),
  )

  it.effect("gives up after `times` retries with a Throttled error", () =>
    Effect.gen(function* () {
      const busy: Answer = { status: 429, headers: { "retry-after": "10" } }
      const { client, requests } = yield* fake([busy, busy, busy, busy, ok], { retry: { times: 3 } })
      const fiber = yield* Effect.fork(client.read("Patient", "1"))
      for (let n = 1; n <= 3; n++) {
        yield* untilWaiting(requests, n)
        yield* TestClock.adjust("10 seconds")
      }
      const exit = yield* joinSoon(fiber)
      assert.strictEqual(yield* requests, 4)
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
        assert.instanceOf(error, FhirError)
        assert.strictEqual((error as FhirError).reason, "Throttled")
        assert.strictEqual((error as FhirError).status, 429)
      }
    }),
  )

  it.effect("backs off exponentially (within jitter) when there is no Retry-After", () =>
    Effect.gen(function* () {
      const { client, requests } = yield* fake([{ status: 502 }, "reset", ok], {
        retry: { base: "10 seconds" },
      })
      const fiber = yield* Effect.fork(client.read("Patient", "1"))
      yield* untilWaiting(requests, 1)
      const first = yield* pendingRetryDelay
      assert.isTrue(first >= 8_000 && first <= 12_000, `first delay ${first} ms is 10 s ± 20 %`)
      yield* TestClock.adjust(first - 1)
      assert.strictEqual(yield* requests, 1)
      yield* TestClock.adjust(1)
      yield* untilWaiting(requests, 2) // a connection reset is retried too
      const second = yield* pendingRetryDelay
      assert.isTrue(second >= 16_000 && second <= 24_000, `second delay ${second} ms is 20 s ± 20 %`)
      yield* TestClock.adjust(second - 1)
      assert.strictEqual(yield* requests, 2)
      yield* TestClock.adjust(1)
      const exit = yield* joinSoon(fiber)
      assert.isTrue(Exit.isSuccess(exit))
      assert.strictEqual(yield* requests, 3)
    }),
  )

  for (const status of [400, 404, 422]) {
    it.effect(`fails at once on ${status}, with one request`, () =>
      Effect.gen(function* () {
        const { client, requests } = yield* fake([{ status, body: outcome("invalid") }, ok])
        const error = yield* failsAtOnce(client.read("Patient", "1"))
        assert.instanceOf(error, FhirError)
        assert.strictEqual((error as FhirError).reason, "Status")
        assert.strictEqual((error as FhirError).status, status)
        assert.strictEqual((error as FhirError).outcome?.issue[0]?.code, "invalid")
        assert.include(error.message, "issue invalid")
        assert.strictEqual(yield* requests, 1)
      }),
    )
  }

  it.effect("retries a 500 whose OperationOutcome is transient", () =>
    Effect.gen(function* () {
      const { client, requests } = yield* fake([{ status: 500, body: outcome("transient") }, ok])
      const fiber = yield* Effect.fork(client.read("Patient", "1"))
      yield* untilWaiting(requests, 1)
      yield* TestClock.adjust("1 second")
      const exit = yield* joinSoon(fiber)
      assert.isTrue(Exit.isSuccess(exit))
      assert.strictEqual(yield* requests, 2)
    }),
  )

  it.effect("does not retry a 500 whose OperationOutcome is not transient", () =>
    Effect.gen(function* () {
      const { client, requests } = yield* fake([{ status: 500, body: outcome("processing") }, ok])
      const error = yield* failsAtOnce(client.read("Patient", "1"))
      assert.instanceOf(error, FhirError)
      assert.strictEqual((error as FhirError).status, 500)
      assert.strictEqual(yield* requests, 1)
    }),
  )

  it.effect("never puts a resource body or an HTML page whole into the error", () =>
    Effect.gen(function* () {
      const html = `<html><body><h1>Bad gateway</h1>${"x".repeat(5000)}</body></html>`
      const { client } = yield* fake([
        { status: 409, body: patient },
        { status: 403, body: html, headers: { "content-type": "text/html" } },
      ])
      const conflict = yield* Effect.flip(client.read("Patient", "1"))
      assert.notInclude(conflict.message, "Doe")
      assert.include(conflict.message, "Patient resource")
      const forbidden = yield* Effect.flip(client.read("Patient", "1"))
      assert.isBelow(forbidden.message.length, 400)
      assert.include(forbidden.message, "Bad gateway")
    }),
  )

  it.effect("a 403 says what to ask for: more access for the credentials sent, or credentials at all", () =>
    Effect.gen(function* () {
      const forbidden: Answer = { status: 403, body: outcome("forbidden") }
      const token = yield* Ref.make("t")
      const withToken = yield* fake([forbidden], { token })
      const refused = yield* Effect.flip(withToken.client.read("Condition", "1"))
      assert.instanceOf(refused, FhirError)
      assert.strictEqual((refused as FhirError).status, 403)
      assert.strictEqual(
        refused.message,
        "GET https://fhir.example.org/r4/Condition/1: the server answered 403: error forbidden: issue forbidden; the credentials sent are not allowed this request: ask for the access it needs (a wider scope, e.g. system/*.rs to export or system/*.cruds to import, or more rights for this client on the server)",
      )
      const without = yield* fake([forbidden])
      const bare = yield* Effect.flip(without.client.read("Condition", "1"))
      assert.match(bare.message, /; configure credentials that allow it$/)
    }),
  )

  it.effect("on 401 calls onUnauthorized once and retries with the new credentials", () =>
    Effect.gen(function* () {
      const token = yield* Ref.make("old-token")
      const refreshes = yield* Ref.make(0)
      const onUnauthorized = Ref.update(refreshes, (n) => n + 1).pipe(
        Effect.zipRight(Ref.set(token, "new-token")),
      )
      const { client, seen } = yield* fake([{ status: 401 }, ok], { token, onUnauthorized })
      const resource = yield* client.read("Patient", "1")
      assert.strictEqual(resource.id, "1")
      assert.strictEqual(yield* Ref.get(refreshes), 1)
      const auth = (yield* Ref.get(seen)).map((r) => r.headers.authorization)
      assert.deepStrictEqual(auth, ["Bearer old-token", "Bearer new-token"])
    }),
  )

  it.effect("a second 401 after the refresh is an AuthError, without a second refresh", () =>
    Effect.gen(function* () {
      const token = yield* Ref.make("t")
      const refreshes = yield* Ref.make(0)
      const { client, requests } = yield* fake([{ status: 401 }, { status: 401 }, ok], {
        token,
        onUnauthorized: Ref.update(refreshes, (n) => n + 1),
      })
      const error = yield* failsAtOnce(client.read("Patient", "1"))
      assert.instanceOf(error, AuthError)
      assert.strictEqual((error as AuthError).reason, "Unauthorized")
      assert.strictEqual(yield* Ref.get(refreshes), 1)
      assert.strictEqual(yield* requests, 2)
    }),
  )

  it.effect("a body that is not what was asked for is a Decode error naming paths, not values", () =>
    Effect.gen(function* () {
      const { client } = yield* fake([
        { status: 200, body: { resourceType: "Bundle", type: 7, secret: "Doe" } },
      ])
      const error = yield* Effect.flip(client.search("Patient", { name: "Doe" }))
      assert.instanceOf(error, FhirError)
      assert.strictEqual((error as FhirError).reason, "Decode")
      assert.include(error.message, "type")
      assert.notInclude(error.message.replace(/name=Doe/, ""), "Doe")
    }),
  )

  it.effect("create and update send FHIR JSON to the right URL and report Location and ETag", () =>
    Effect.gen(function* () {
      const { client, seen } = yield* fake([
        {
          status: 201,
          headers: { location: "https://fhir.example.org/r4/Patient/9/_history/1", etag: 'W/"1"' },
        },
        { status: 200, body: { ...patient, meta: { versionId: "2" } }, headers: { etag: 'W/"2"' } },
      ])
      const created = yield* client.create({ resourceType: "Patient" }, { ifNoneExist: "identifier=a|b" })
      assert.strictEqual(created.status, 201)
      assertSome(created.location, "https://fhir.example.org/r4/Patient/9/_history/1")
      assert.isTrue(Option.isNone(created.resource))
      const updated = yield* client.update({ ...patient, id: "1" }, { ifMatch: 'W/"1"' })
      assertSome(updated.etag, 'W/"2"')
      assert.isTrue(Option.isSome(updated.resource))
      const [post, put] = yield* Ref.get(seen)
      assert.strictEqual(post?.method, "POST")
      assert.strictEqual(post?.url, "https://fhir.example.org/r4/Patient")
      assert.strictEqual(post?.headers["content-type"], "application/fhir+json")
      assert.strictEqual(post?.headers["if-none-exist"], "identifier=a|b")
      assert.strictEqual(put?.method, "PUT")
      assert.strictEqual(put?.url, "https://fhir.example.org/r4/Patient/1")
      assert.strictEqual(put?.headers["if-match"], 'W/"1"')
    }),
  )

  it.effect("transaction posts a transaction Bundle to the base and decodes the response", () =>
    Effect.gen(function* () {
      const { client, seen } = yield* fake([
        {
          status: 200,
          body: {
            resourceType: "Bundle",
            type: "transaction-response",
            entry: [{ response: { status: "201 Created", location: "Patient/9/_history/1" } }],
          },
        },
      ])
      const response = yield* client.transaction({
        resourceType: "Bundle",
        type: "transaction",
        entry: [
          {
            fullUrl: "urn:uuid:1",
            resource: { resourceType: "Patient" },
            request: { method: "POST", url: "Patient" },
          },
        ],
      })
      assert.strictEqual(response.type, "transaction-response")
      const [req] = yield* Ref.get(seen)
      assert.strictEqual(req?.url, "https://fhir.example.org/r4")
      assert.strictEqual(req?.method, "POST")
    }),
  )
})

describe("FhirClient failures that say what to do (fake server)", () => {
  it.effect(
    "a request undici refuses to send (UND_ERR_INVALID_ARG: a header with a line break) is not retried",
    () =>
      Effect.gen(function* () {
        const { client, requests } = yield* fake([{ code: "UND_ERR_INVALID_ARG" }, ok])
        const error = yield* failsAtOnce(client.read("Patient", "1"))
        assert.instanceOf(error, FhirError)
        assert.strictEqual(
          error.message,
          "GET https://fhir.example.org/r4/Patient/1: the request could not be sent (UND_ERR_INVALID_ARG): a header or the URL holds characters HTTP does not allow; check the credentials (a token with a line break?) and the URL",
        )
        assert.strictEqual(yield* requests, 1)
      }),
  )

  it.effect("a TLS certificate that is not trusted is not retried, and the error says so", () =>
    Effect.gen(function* () {
      const { client, requests } = yield* fake([{ code: "SELF_SIGNED_CERT_IN_CHAIN" }, ok])
      const error = yield* failsAtOnce(client.read("Patient", "1"))
      assert.instanceOf(error, FhirError)
      assert.strictEqual((error as FhirError).reason, "Transport")
      assert.include(error.message, "the server's TLS certificate is not trusted (SELF_SIGNED_CERT_IN_CHAIN)")
      assert.strictEqual(yield* requests, 1)
    }),
  )

  it.effect(
    "a server that takes the connection and never answers: a timed-out request is retried at most twice, each retry a warning",
    () =>
      Effect.gen(function* () {
        let sent = 0
        const http = HttpClient.make(() =>
          Effect.suspend(() => {
            sent++
            return Effect.never
          }),
        )
        const warnings: Array<string> = []
        const logger = Logger.make(({ logLevel, message }) => {
          if (logLevel._tag === "Warning")
            warnings.push(String(Array.isArray(message) ? message[0] : message))
        })
        const client = yield* FhirClient.make({
          baseUrl: "https://fhir.example.org/r4",
          timeout: "5 minutes",
          retry: { times: 8 },
        }).pipe(Effect.provideService(HttpClient.HttpClient, http))
        const fiber = yield* Effect.fork(
          client
            .transaction({ resourceType: "Bundle", type: "transaction" })
            .pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger))),
        )
        for (let i = 0; i < 200 && Option.isNone(yield* Fiber.poll(fiber)); i++) {
          yield* TestServices.provideLive(Effect.sleep("2 millis"))
          yield* TestClock.adjust("1 minute")
        }
        const exit = yield* joinSoon(fiber)
        assert.strictEqual(sent, 3, "the first attempt and two retries, not nine attempts")
        if (Exit.isSuccess(exit) || exit.cause._tag !== "Fail") return assert.fail("the call did not fail")
        const error = exit.cause.error
        assert.instanceOf(error, FhirError)
        assert.strictEqual((error as FhirError).detail, "no answer within 5m")
        assert.strictEqual(
          error.message,
          "POST https://fhir.example.org/r4: the server accepted the connection but did not answer within 5m; check that it is up and not overloaded, then run the command again",
        )
        assert.deepStrictEqual(warnings, [
          "POST https://fhir.example.org/r4: the server accepted the connection but gave no answer within 5m; trying again (1 of at most 2 retries after a timeout)",
          "POST https://fhir.example.org/r4: the server accepted the connection but gave no answer within 5m; trying again (2 of at most 2 retries after a timeout)",
        ])
      }),
  )

  it.effect("a 503 that lasts: each retry from the second on is a warning naming the failure", () =>
    Effect.gen(function* () {
      const busy: Answer = { status: 503, body: "busy", headers: { "content-type": "text/plain" } }
      const { client, requests } = yield* fake([busy, busy, busy, ok], { retry: { times: 3 } })
      const warnings: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        if (logLevel._tag === "Warning") warnings.push(String(Array.isArray(message) ? message[0] : message))
      })
      const fiber = yield* Effect.fork(
        client.read("Patient", "1").pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger))),
      )
      for (let i = 0; i < 200 && Option.isNone(yield* Fiber.poll(fiber)); i++) {
        yield* TestServices.provideLive(Effect.sleep("2 millis"))
        yield* TestClock.adjust("1 minute")
      }
      const exit = yield* joinSoon(fiber)
      assert.isTrue(Exit.isSuccess(exit))
      assert.strictEqual(yield* requests, 4)
      assert.deepStrictEqual(
        warnings.map((w) => w.replace(/^.*; trying again/, "trying again")),
        ["trying again (retry 2 of at most 3)", "trying again (retry 3 of at most 3)"],
      )
      assert.match(warnings[0] ?? "", /^GET https:\/\/fhir\.example\.org\/r4\/Patient\/1: .*503/)
    }),
  )

  it.effect("a 401 to credentials sent gives neutral advice, or the client's own", () =>
    Effect.gen(function* () {
      const token = yield* Ref.make("t")
      const refusal: Answer = {
        status: 401,
        body: "invalid token",
        headers: { "content-type": "text/plain" },
      }
      const neutral = yield* fake([refusal, refusal], { token, onUnauthorized: Effect.void })
      const refused = yield* failsAtOnce(neutral.client.read("Patient", "1"))
      assert.instanceOf(refused, AuthError)
      assert.strictEqual(
        refused.message,
        "https://fhir.example.org/r4/Patient/1: the server refused the credentials (401): invalid token; check the credentials configured for this server",
      )
      const bearer = yield* fake([refusal, refusal], {
        token,
        onUnauthorized: Effect.void,
        client: { refusedHint: "the token may have expired: put a fresh one in /run/token" },
      })
      const expired = yield* failsAtOnce(bearer.client.read("Patient", "1"))
      assert.include(
        expired.message,
        "(401): invalid token; the token may have expired: put a fresh one in /run/token",
      )
      assert.notInclude(expired.message, "client id")
    }),
  )

  it.effect(
    "a 404 from the FHIR base, a type or an operation asks to check the base URL; one for a resource does not",
    () =>
      Effect.gen(function* () {
        const notFound: Answer = { status: 404, body: "Not Found", headers: { "content-type": "text/plain" } }
        const { client } = yield* fake([notFound, notFound, notFound, notFound, notFound])
        const transaction = yield* Effect.flip(
          client.transaction({ resourceType: "Bundle", type: "transaction" }),
        )
        assert.strictEqual(
          transaction.message,
          "POST https://fhir.example.org/r4: the server answered 404: Not Found; is https://fhir.example.org/r4 the server's FHIR base URL (often ending in /fhir or /r4)? check it",
        )
        const create = yield* Effect.flip(client.create({ resourceType: "Patient" }))
        assert.include(
          create.message,
          "404: Not Found; is https://fhir.example.org/r4 the server's FHIR base URL",
        )
        const kickOff = yield* Effect.flip(client.operation("$export", { method: "GET" }))
        assert.strictEqual(
          kickOff.message,
          "GET https://fhir.example.org/r4/$export: the server answered 404: Not Found; the server does not offer $export there, or https://fhir.example.org/r4 is not its FHIR base URL; check it",
        )
        const poll = yield* Effect.flip(
          client.operation("$export-poll-status", { method: "GET", urlParams: { _jobId: "1" } }),
        )
        assert.strictEqual(
          poll.message,
          "GET https://fhir.example.org/r4/$export-poll-status?_jobId=1: the server answered 404: Not Found",
        )
        const read = yield* Effect.flip(client.read("Patient", "1"))
        assert.strictEqual(
          read.message,
          "GET https://fhir.example.org/r4/Patient/1: the server answered 404: Not Found",
        )
        // a transaction the server read and answered with an OperationOutcome (a conditional reference that
        // matched nothing): the base is right, no hint that it is not
        const outcome = {
          resourceType: "OperationOutcome",
          issue: [
            {
              severity: "error",
              code: "not-found",
              diagnostics: "Practitioner?identifier=x|1 matched nothing",
            },
          ],
        }
        const read404 = yield* fake([
          {
            status: 404,
            body: JSON.stringify(outcome),
            headers: { "content-type": "application/fhir+json" },
          },
        ])
        const content = yield* Effect.flip(
          read404.client.transaction({ resourceType: "Bundle", type: "transaction" }),
        )
        assert.include(content.message, "matched nothing")
        assert.notInclude(content.message, "base URL")
      }),
  )

  it.effect("an HTML page where FHIR JSON was expected says the URL may not be a FHIR base", () =>
    Effect.gen(function* () {
      const { client } = yield* fake([
        { status: 200, body: "<html><body>Sign in</body></html>", headers: { "content-type": "text/html" } },
      ])
      const error = yield* Effect.flip(client.search("Patient"))
      assert.instanceOf(error, FhirError)
      assert.strictEqual((error as FhirError).reason, "Decode")
      assert.strictEqual(
        error.message,
        "GET https://fhir.example.org/r4/Patient: the answer could not be read: the body is an HTML page, not JSON; https://fhir.example.org/r4 may not be a FHIR server's base URL (a web site or a login page answered); check the URL",
      )
      // a Decode failure without a hint of its own gets the generic one
      const bundle = new FhirError({
        reason: "Decode",
        method: "POST",
        url: "https://h/fhir",
        detail: "the answer is not a Bundle",
      })
      assert.strictEqual(
        bundle.message,
        "POST https://h/fhir: the answer could not be read: the answer is not a Bundle; check that the URL points at a FHIR R4 server (not a web page or a proxy's login page)",
      )
    }),
  )
})

/** The part of a recorded request these tests look at. */
const urlAndAuth = (
  seen: { readonly url: string; readonly authorization: string | undefined } | undefined,
) => (seen === undefined ? undefined : { url: seen.url, authorization: seen.authorization })

const json = (res: ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { "content-type": "application/fhir+json" })
  res.end(JSON.stringify(body))
}

const collectText = <E>(stream: Stream.Stream<Uint8Array, E>) =>
  Stream.decodeText(stream).pipe(Stream.mkString)

describe("FhirClient against loopback servers", () => {
  it.scopedLive(
    "a search page whose body breaks off is asked again; one that always does is a Transport failure",
    () =>
      Effect.gen(function* () {
        let asked = 0
        let breaks = 1
        const bundle = JSON.stringify({
          resourceType: "Bundle",
          type: "searchset",
          entry: [{ resource: { resourceType: "Patient", id: "p1" } }],
        })
        const server = yield* loopback((_req, res) => {
          asked++
          res.writeHead(200, {
            "content-type": "application/fhir+json",
            "content-length": String(bundle.length),
          })
          if (asked > breaks) return void res.end(bundle)
          // half the body, then the connection goes (a reset mid-answer)
          res.write(bundle.slice(0, 20))
          setTimeout(() => res.socket?.destroy(), 20)
        })
        const client = yield* FhirClient.make({ baseUrl: `${server.origin}/fhir` })
        const page = yield* client.search("Patient")
        assert.strictEqual(page.entry?.[0]?.resource?.id, "p1")
        assert.strictEqual(asked, 2)
        asked = 0
        breaks = 99
        const error = yield* Effect.flip(client.search("Patient"))
        assert.strictEqual(error._tag, "FhirError")
        assert.strictEqual((error as FhirError).reason, "Transport")
        assert.include(error.message, "the server's answer broke off while it was read")
        assert.strictEqual(asked, 3)
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive(
    "an answer marked gzip whose bytes are not: said as the server's fault (not a broken connection), for a search and a download",
    () =>
      Effect.gen(function* () {
        const server = yield* loopback((_req, res) => {
          res.writeHead(200, { "content-type": "application/fhir+json", "content-encoding": "gzip" })
          res.end("not gzip at all")
        })
        const client = yield* FhirClient.make({ baseUrl: `${server.origin}/fhir` })
        const said =
          "the server's answer says it is compressed (Content-Encoding) but its bytes are not valid gzip, deflate or br data"
        const search = yield* Effect.flip(client.search("Patient"))
        assert.strictEqual((search as FhirError).reason, "Transport")
        assert.include(search.message, said)
        const download = yield* Effect.flip(collectText(client.stream(`${server.origin}/files/p.ndjson`)))
        assert.include(download.message, said)
        assert.notInclude(download.message, "broke off")
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive(
    "searchOne: one match, none, several (an _include'd resource does not count), or not run (403, 400)",
    () =>
      Effect.gen(function* () {
        const entries: Record<string, unknown> = {
          one: [
            { resource: { resourceType: "Practitioner", id: "a" }, search: { mode: "match" } },
            { resource: { resourceType: "Organization", id: "o" }, search: { mode: "include" } },
          ],
          none: [{ resource: { resourceType: "OperationOutcome", issue: [] }, search: { mode: "outcome" } }],
          several: [
            { resource: { resourceType: "Practitioner", id: "a" } },
            { resource: { resourceType: "Practitioner", id: "b" } },
          ],
        }
        const seen: Array<string> = []
        const server = yield* loopback((req, res) => {
          const url = new URL(req.url ?? "/", "http://x")
          seen.push(url.search)
          const value = url.searchParams.get("identifier") ?? ""
          if (value === "forbidden" || value === "bad")
            return void res
              .writeHead(value === "bad" ? 400 : 403, { "content-type": "application/fhir+json" })
              .end(
                JSON.stringify({
                  resourceType: "OperationOutcome",
                  issue: [{ severity: "error", code: "forbidden" }],
                }),
              )
          res.writeHead(200, { "content-type": "application/fhir+json" })
          res.end(JSON.stringify({ resourceType: "Bundle", type: "searchset", entry: entries[value] }))
        })
        const client = yield* FhirClient.make({ baseUrl: `${server.origin}/fhir`, retry: { times: 0 } })
        const one = (v: string) => FhirClient.searchOne(client, "Practitioner", [["identifier", v]])
        assert.deepStrictEqual(yield* one("one"), { _tag: "One", id: "a" })
        assert.deepStrictEqual(yield* one("none"), { _tag: "None" })
        assert.deepStrictEqual(yield* one("several"), { _tag: "Several" })
        const forbidden = yield* one("forbidden")
        assert.strictEqual(forbidden._tag === "NotRun" ? forbidden.error.status : 0, 403)
        const bad = yield* one("bad")
        assert.strictEqual(bad._tag === "NotRun" ? bad.error.status : 0, 400)
        assert.include(seen[0], "_count=2")
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive("follows next links, and sends Authorization only to its own origin", () =>
    Effect.gen(function* () {
      const other = yield* loopback((req, res) => {
        if (req.url === "/bounce") {
          res.writeHead(302, { location: `${own.origin}/fhir/Binary/1` })
          return res.end()
        }
        res.writeHead(200, { "content-type": "application/fhir+ndjson" })
        res.end(`bytes from ${req.url}`)
      })
      const own = yield* loopback((req, res, origin) => {
        const url = new URL(req.url ?? "/", origin)
        if (url.pathname === "/fhir/round-trip") {
          res.writeHead(302, { location: `${other.origin}/bounce` })
          return res.end()
        }
        const page = (n: number, next?: string) =>
          json(res, 200, {
            resourceType: "Bundle",
            type: "searchset",
            total: 6,
            link: [{ relation: "self", url: url.href }, ...(next ? [{ relation: "next", url: next }] : [])],
            entry: [1, 2].map((i) => ({
              fullUrl: `${origin}/fhir/Patient/p${n}-${i}`,
              resource: { resourceType: "Patient", id: `p${n}-${i}`, extra: { kept: true } },
              search: { mode: "match" },
            })),
          })
        if (url.pathname === "/fhir/Patient" && url.searchParams.get("_count") === "2") {
          return page(1, `${origin}/fhir?_getpages=abc&_getpagesoffset=2`)
        }
        if (url.pathname === "/fhir" && url.searchParams.get("_getpagesoffset") === "2") {
          return page(2, `${origin}/fhir?_getpages=abc&_getpagesoffset=4`)
        }
        if (url.pathname === "/fhir" && url.searchParams.get("_getpagesoffset") === "4") return page(3)
        if (url.pathname === "/fhir/Binary/1") {
          res.writeHead(200, { "content-type": "application/fhir+ndjson" })
          return res.end("own bytes")
        }
        if (url.pathname === "/fhir/out") {
          res.writeHead(302, { location: `${other.origin}/files/redirected?X-Amz-Signature=s3cr3t` })
          return res.end()
        }
        json(res, 404, {
          resourceType: "OperationOutcome",
          issue: [{ severity: "error", code: "not-found" }],
        })
      })
      const client = yield* FhirClient.make({
        baseUrl: `${own.origin}/fhir/`,
        authorize: (req) => Effect.succeed(HttpClientRequest.bearerToken(req, "secret-token")),
      })

      const patients = yield* Stream.runCollect(client.searchAll("Patient", { _count: "2" }))
      assert.deepStrictEqual(
        Chunk.toReadonlyArray(patients).map((p) => p.id),
        ["p1-1", "p1-2", "p2-1", "p2-2", "p3-1", "p3-2"],
      )
      assert.deepStrictEqual(patients.pipe(Chunk.unsafeGet(0)).extra, { kept: true })
      assert.deepStrictEqual(
        own.seen.map((r) => r.authorization),
        ["Bearer secret-token", "Bearer secret-token", "Bearer secret-token"],
      )

      assert.strictEqual(yield* collectText(client.stream("Binary/1")), "own bytes")
      assert.strictEqual(own.seen.at(-1)?.authorization, "Bearer secret-token")
      assert.strictEqual(
        yield* collectText(client.stream(`${own.origin}/fhir/Binary/1`, { auth: false })),
        "own bytes",
      )
      assert.strictEqual(own.seen.at(-1)?.authorization, undefined)

      assert.strictEqual(
        yield* collectText(client.stream(`${other.origin}/files/direct`)),
        "bytes from /files/direct",
      )
      assert.deepStrictEqual(urlAndAuth(other.seen.at(-1)), {
        url: "/files/direct",
        authorization: undefined,
      })

      const redirected = yield* collectText(client.stream("out"))
      assert.strictEqual(redirected, "bytes from /files/redirected?X-Amz-Signature=s3cr3t")
      assert.strictEqual(own.seen.at(-1)?.authorization, "Bearer secret-token")
      assert.deepStrictEqual(urlAndAuth(other.seen.at(-1)), {
        url: "/files/redirected?X-Amz-Signature=s3cr3t",
        authorization: undefined,
      })

      // own → other → own: the first hop carries them, the one back (where the other host sent it) does not
      assert.strictEqual(yield* collectText(client.stream("round-trip")), "own bytes")
      assert.deepStrictEqual(
        own.seen.slice(-2).map((r) => [r.url, r.authorization]),
        [
          ["/fhir/round-trip", "Bearer secret-token"],
          ["/fhir/Binary/1", undefined],
        ],
      )

      const missing = yield* Effect.flip(client.read("Patient", "nope"))
      assert.instanceOf(missing, FhirError)
      assert.strictEqual((missing as FhirError).status, 404)
    }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive(
    "follows a redirect of a request with a body within its origin only, never to another one",
    () =>
      Effect.gen(function* () {
        const other = yield* loopback((_req, res) =>
          json(res, 200, { resourceType: "Bundle", type: "transaction-response" }),
        )
        const own = yield* loopback((req, res) => {
          if (req.url === "/fhir") {
            res.writeHead(307, { location: "/moved" })
            return res.end()
          }
          if (req.url === "/moved") {
            let body = ""
            req.on("data", (c: Buffer) => {
              body += c.toString()
            })
            return req.on("end", () => {
              if (body.includes('"type":"transaction"')) {
                res.writeHead(307, { location: `${other.origin}/evil` })
                return res.end()
              }
              json(res, 400, {
                resourceType: "OperationOutcome",
                issue: [{ severity: "error", code: "invalid" }],
              })
            })
          }
          json(res, 404, {
            resourceType: "OperationOutcome",
            issue: [{ severity: "error", code: "not-found" }],
          })
        })
        const client = yield* FhirClient.make({ baseUrl: `${own.origin}/fhir`, retry: { times: 3 } })
        const error = yield* Effect.flip(
          client.transaction({ resourceType: "Bundle", type: "transaction", entry: [] }),
        )
        assert.instanceOf(error, FhirError)
        assert.strictEqual((error as FhirError).status, 307)
        assert.match((error as FhirError).message, /redirected this POST to another origin/)
        // the body went to /fhir and, within the origin, to /moved (once each: no retry), never elsewhere
        assert.deepStrictEqual(
          own.seen.map((r) => r.url),
          ["/fhir", "/moved"],
        )
        assert.deepStrictEqual(other.seen, [])
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive(
    "a 401 from another origin (no Authorization sent on that hop) neither refreshes nor blames the credentials",
    () =>
      Effect.gen(function* () {
        const attachments = yield* loopback((_req, res) => {
          res.writeHead(401, { "content-type": "text/plain" })
          res.end("sign in first")
        })
        const own = yield* loopback((req, res) => {
          if (req.url === "/fhir/away") {
            res.writeHead(302, { location: `${attachments.origin}/private/b` })
            return res.end()
          }
          res.writeHead(200, { "content-type": "application/fhir+ndjson" })
          res.end("own bytes")
        })
        let refreshes = 0
        const client = yield* FhirClient.make({
          baseUrl: `${own.origin}/fhir`,
          authorize: (req) => Effect.succeed(HttpClientRequest.bearerToken(req, "good-token")),
          onUnauthorized: Effect.sync(() => {
            refreshes++
          }),
        })
        const direct = yield* Effect.flip(collectText(client.stream(`${attachments.origin}/private/a`)))
        const viaRequest = yield* Effect.flip(
          client.request(HttpClientRequest.get(`${attachments.origin}/private/c`)),
        )
        const redirected = yield* Effect.flip(collectText(client.stream("away")))
        for (const e of [direct, viaRequest, redirected]) {
          assert.instanceOf(e, AuthError)
          assert.strictEqual((e as AuthError).reason, "Unauthorized")
          assert.notInclude(e.message, "refused the credentials")
          assert.include(e.message, "Ferry sent it no credentials")
        }
        assert.strictEqual(refreshes, 0, "the good token is kept")
        assert.deepStrictEqual(
          attachments.seen.map(urlAndAuth),
          ["/private/a", "/private/c", "/private/b"].map((url) => ({ url, authorization: undefined })),
          "each tried once, without credentials",
        )
        assert.deepStrictEqual(own.seen.map(urlAndAuth), [
          { url: "/fhir/away", authorization: "Bearer good-token" },
        ])
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive("an error answer that echoes the access token has it removed from the error", () =>
    Effect.gen(function* () {
      const own = yield* loopback((req, res) => {
        if (req.url === "/fhir/Patient/1") {
          return json(res, 403, {
            resourceType: "OperationOutcome",
            issue: [
              {
                severity: "error",
                code: "forbidden",
                diagnostics: `token ${req.headers.authorization} lacks scope`,
              },
            ],
          })
        }
        res.writeHead(403, { "content-type": "text/plain" })
        res.end(`denied for ${req.headers.authorization}`)
      })
      const client = yield* FhirClient.make({
        baseUrl: `${own.origin}/fhir`,
        authorize: (req) => Effect.succeed(HttpClientRequest.bearerToken(req, "secret-token-123")),
      })
      const read = yield* Effect.flip(client.read("Patient", "1"))
      const raw = yield* Effect.flip(client.get("Binary/2"))
      for (const e of [read, raw]) {
        assert.notInclude(JSON.stringify(e), "secret-token-123")
        assert.include(e.message, "[redacted]")
      }
    }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive(
    "an echoed token with its characters escaped as JSON allows (\\/, \\u002B) is removed too, and a server's control characters do not reach the message",
    () =>
      Effect.gen(function* () {
        const token = "abc/def+ghi/jkl0123456789=="
        const own = yield* loopback((req, res) => {
          const sent = String(req.headers.authorization)
          // the way many Java JSON writers escape: `\/` for every slash, and one `+` as `\u002B`
          const escaped = sent.replaceAll("/", "\\/").replace("+", "\\u002B")
          if (req.url === "/fhir/Patient/1") {
            res.writeHead(500, { "content-type": "application/fhir+json" })
            return res.end(
              `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception","diagnostics":"auth ${escaped}"}]}`,
            )
          }
          if (req.url === "/fhir/Patient/2") {
            res.writeHead(400, { "content-type": "application/fhir+json" })
            return res.end(
              JSON.stringify({
                resourceType: "OperationOutcome",
                issue: [
                  {
                    severity: "error",
                    code: "invalid\u001b[2J",
                    diagnostics: "bad\u001b]52;c;aGk=\u0007 request",
                  },
                ],
              }),
            )
          }
          if (req.url === "/fhir/Patient/3") {
            res.writeHead(400, { "content-type": "text/plain" })
            return res.end("\u001b[2J\u001b[1;1Hferry export: done\u009b31m")
          }
          res.writeHead(403, { "content-type": "text/plain" })
          res.end(`denied for ${escaped}`)
        })
        const client = yield* FhirClient.make({
          baseUrl: `${own.origin}/fhir`,
          retry: { times: 0 },
          authorize: (req) => Effect.succeed(HttpClientRequest.bearerToken(req, token)),
        })
        for (const e of [
          yield* Effect.flip(client.read("Patient", "1")),
          yield* Effect.flip(client.get("Binary/2")),
        ]) {
          assert.notInclude(e.message, "jkl0123456789")
          assert.include(e.message, "[redacted]")
        }
        for (const e of [
          yield* Effect.flip(client.read("Patient", "2")),
          yield* Effect.flip(client.read("Patient", "3")),
        ]) {
          // biome-ignore lint/suspicious/noControlCharactersInRegex: none may be left
          assert.notMatch(e.message, /[\u0000-\u001f\u007f-\u009f]/)
          assert.include(e.message, "\ufffd")
        }
      }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive("a redirect loop: said as such, of the URL asked for, after 5 hops, and not retried", () =>
    Effect.gen(function* () {
      let requests = 0
      const own = yield* loopback((_req, res) => {
        requests++
        res.writeHead(302, { location: `/fhir/loop?hop=${requests}` })
        res.end()
      })
      const client = yield* FhirClient.make({ baseUrl: `${own.origin}/fhir` })
      const read = yield* Effect.flip(client.read("Patient", "1"))
      assert.strictEqual(requests, 6, "the request and 5 redirects, once")
      const raw = yield* Effect.flip(client.get("Binary/2"))
      assert.strictEqual(requests, 12)
      assert.strictEqual(
        read.message,
        `GET ${own.origin}/fhir/Patient/1: the server answered 302: still a redirect after 5 (a redirect loop, or a login page in front of the server); open the URL in a browser to see where it leads, and give Ferry the final one`,
      )
      assert.include(
        raw.message,
        `GET ${own.origin}/fhir/Binary/2: the server answered 302: still a redirect after 5`,
      )
    }).pipe(Effect.provide(FetchHttpClient.layer)),
  )

  it.scopedLive("a 404 for the CapabilityStatement asks whether the base URL is right", () =>
    Effect.gen(function* () {
      const web = yield* loopback((_req, res) => {
        res.writeHead(404, { "content-type": "text/html" })
        res.end("<html><body><h1>Error response</h1><p>File not found</p></body></html>")
      })
      const client = yield* FhirClient.make({ baseUrl: `${web.origin}/` })
      const error = yield* Effect.flip(client.capabilities())
      assert.strictEqual(
        error.message,
        `GET ${web.origin}/metadata: the server answered 404: no CapabilityStatement there; is ${web.origin} the server's FHIR base URL (often ending in /fhir or /r4)? check it`,
      )
    }).pipe(Effect.provide(FetchHttpClient.layer)),
  )
})
