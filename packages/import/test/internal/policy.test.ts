import type { CapabilityStatement } from "@ferry/core/CapabilityStatement"
import { AuthError, FhirError } from "@ferry/core/Errors"
import type { FhirClient } from "@ferry/core/FhirClient"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Logger, Option, Ref, TestClock } from "effect"
import { forEachPooled } from "@ferry/core/Pool"
import { ImportError, quarantined } from "../../src/ImportError.js"
import {
  refusal,
  chooseStrategy,
  chunkKey,
  isEntryRefusal,
  isSystemic,
  isThrottle,
  isTooLarge,
  makeLimiter,
  makeSizer,
  quarantineLine,
  readingOrder,
  SUCCESSES_TO_GROW,
  searchesTag,
  typeOf,
} from "../../src/internal/policy.js"

const cs = (
  resources: ReadonlyArray<{
    type: string
    updateCreate?: boolean
    searchParam?: ReadonlyArray<{ name: string }>
  }>,
): CapabilityStatement => ({
  resourceType: "CapabilityStatement",
  rest: [{ mode: "server", resource: resources }],
})

const status = (s: number, outcome?: FhirError["outcome"], detail?: string) =>
  new FhirError({
    reason: "Status",
    method: "POST",
    url: "http://t/fhir",
    status: s,
    outcome,
    ...(detail !== undefined ? { detail } : {}),
  })

/** A client whose `update` (the probe PUT) answers `probe`; records updates and deletes. */
const fakeClient = (
  probe: Effect.Effect<void, FhirError | AuthError>,
  deleted: Effect.Effect<void, FhirError | AuthError> = Effect.void,
) =>
  Effect.gen(function* () {
    const calls = yield* Ref.make<ReadonlyArray<string>>([])
    const record = (c: string) => Ref.update(calls, (a) => [...a, c])
    const die = () => Effect.die("not used by chooseStrategy")
    const client: FhirClient = {
      baseUrl: "http://t/fhir",
      request: die,
      get: die,
      read: die,
      search: die,
      searchAll: () => {
        throw new Error("not used")
      },
      capabilities: die,
      transaction: die,
      batch: die,
      create: die,
      update: (r) =>
        Effect.zipRight(
          record(`PUT ${r.resourceType}/${r.id}`),
          Effect.as(probe, {
            status: 201,
            location: Option.none(),
            etag: Option.none(),
            lastModified: Option.none(),
            resource: Option.none(),
          }),
        ),
      delete: (type, id) => Effect.zipRight(record(`DELETE ${type}/${id}`), deleted),
      operation: die,
      stream: () => {
        throw new Error("not used")
      },
    }
    return { client, calls }
  })

describe("chooseStrategy", () => {
  const all = cs([
    { type: "Patient", updateCreate: true },
    { type: "Observation", updateCreate: true },
  ])

  it.effect("updateCreate on every type and an accepted probe: put, and the probe is deleted again", () =>
    Effect.gen(function* () {
      const { client, calls } = yield* fakeClient(Effect.void)
      assert.strictEqual(yield* chooseStrategy(client, all, ["Patient", "Observation"]), "put")
      const c = yield* Ref.get(calls)
      assert.strictEqual(c.length, 2)
      assert.match(c[0]!, /^PUT Basic\/ferry-probe-/)
      assert.strictEqual(c[1], c[0]!.replace("PUT", "DELETE"))
    }),
  )

  it.effect("a probe the target will not delete: put all the same, and a warning naming it", () =>
    Effect.gen(function* () {
      const { client, calls } = yield* fakeClient(Effect.void, Effect.fail(status(405)))
      const warnings: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        if (logLevel._tag === "Warning") warnings.push(String(Array.isArray(message) ? message[0] : message))
      })
      const chosen = yield* chooseStrategy(client, all, ["Patient"]).pipe(
        Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
      )
      assert.strictEqual(chosen, "put")
      const probe = (yield* Ref.get(calls))[0]!.replace("PUT ", "")
      assert.strictEqual(warnings.length, 1)
      assert.include(warnings[0]!, `the target kept the client-id probe ${probe}`)
    }),
  )

  it.effect("interrupted while the probe is being deleted: the delete still completes", () =>
    Effect.gen(function* () {
      const deleting = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const done = yield* Ref.make(false)
      const { client } = yield* fakeClient(
        Effect.void,
        Deferred.succeed(deleting, undefined).pipe(
          Effect.zipRight(Deferred.await(release)),
          Effect.zipRight(Ref.set(done, true)),
        ),
      )
      const fiber = yield* Effect.fork(chooseStrategy(client, all, ["Patient"]))
      yield* Deferred.await(deleting)
      const interrupting = yield* Effect.fork(Fiber.interrupt(fiber))
      yield* Deferred.succeed(release, undefined)
      const exit = yield* Fiber.join(interrupting)
      assert.isTrue(Exit.isInterrupted(exit))
      assert.isTrue(yield* Ref.get(done), "the DELETE ran to its end")
    }),
  )

  it.effect("interrupted while the probe PUT is in flight: the probe is deleted all the same", () =>
    Effect.gen(function* () {
      const putting = yield* Deferred.make<void>()
      const { client, calls } = yield* fakeClient(
        Effect.zipRight(Deferred.succeed(putting, undefined), Effect.never),
      )
      const fiber = yield* Effect.fork(chooseStrategy(client, all, ["Patient"]))
      yield* Deferred.await(putting)
      const exit = yield* Fiber.interrupt(fiber)
      assert.isTrue(Exit.isInterrupted(exit))
      const c = yield* Ref.get(calls)
      assert.strictEqual(c.length, 2)
      assert.strictEqual(c[1], c[0]!.replace("PUT", "DELETE"))
    }),
  )

  it.effect(
    "a probe DELETE the target never answers is given up after 10 s (a Ctrl-C is not held for longer), with a warning",
    () =>
      Effect.gen(function* () {
        const deleting = yield* Deferred.make<void>()
        const { client } = yield* fakeClient(
          Effect.void,
          Effect.zipRight(Deferred.succeed(deleting, undefined), Effect.never),
        )
        const warnings: Array<string> = []
        const logger = Logger.make(({ logLevel, message }) => {
          if (logLevel._tag === "Warning")
            warnings.push(String(Array.isArray(message) ? message[0] : message))
        })
        const fiber = yield* Effect.fork(
          chooseStrategy(client, all, ["Patient"]).pipe(
            Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
          ),
        )
        yield* Deferred.await(deleting)
        for (let i = 0; i < 10; i++) yield* Effect.yieldNow()
        yield* TestClock.adjust("9 seconds")
        assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
        yield* TestClock.adjust("2 seconds")
        assert.strictEqual(yield* Fiber.join(fiber), "put")
        assert.strictEqual(warnings.length, 1)
        assert.include(warnings[0]!, "deleting it failed (no answer within 10s)")
      }),
  )

  it.effect("a type without updateCreate: post, no probe sent", () =>
    Effect.gen(function* () {
      const { client, calls } = yield* fakeClient(Effect.void)
      const partial = cs([{ type: "Patient", updateCreate: true }, { type: "Observation" }])
      assert.strictEqual(yield* chooseStrategy(client, partial, ["Patient", "Observation"]), "post")
      assert.deepStrictEqual(yield* Ref.get(calls), [])
    }),
  )

  it.effect(
    "a type the statement does not list (a damaged manifest's, one the target lacks) does not decide: put; listing none of them, post",
    () =>
      Effect.gen(function* () {
        const { client, calls } = yield* fakeClient(Effect.void)
        assert.strictEqual(yield* chooseStrategy(client, all, ["Patient", "Bogus"]), "put")
        assert.match((yield* Ref.get(calls))[0]!, /^PUT Basic\/ferry-probe-/)
        assert.strictEqual(yield* chooseStrategy(client, all, ["Bogus"]), "post")
      }),
  )

  it.effect("a probe refused with 405, 400 or 422: post; 404 (Basic unknown): put; an AuthError fails", () =>
    Effect.gen(function* () {
      for (const s of [405, 400, 422]) {
        const { client } = yield* fakeClient(Effect.fail(status(s)))
        assert.strictEqual(yield* chooseStrategy(client, all, ["Patient"]), "post", String(s))
      }
      const { client } = yield* fakeClient(Effect.fail(status(404)))
      assert.strictEqual(yield* chooseStrategy(client, all, ["Patient"]), "put")
      const auth = yield* fakeClient(Effect.fail(new AuthError({ reason: "Unauthorized", detail: "no" })))
      const exit = yield* Effect.exit(chooseStrategy(auth.client, all, ["Patient"]))
      assert.isTrue(Exit.isFailure(exit))
    }),
  )
})

describe("searchesTag", () => {
  it("true when every type lists _tag, or lists no search parameters at all; false when one lists others only", () => {
    assert.isTrue(
      searchesTag(cs([{ type: "Patient", searchParam: [{ name: "_tag" }, { name: "_id" }] }]), ["Patient"]),
    )
    assert.isTrue(searchesTag(cs([{ type: "Patient" }]), ["Patient"]))
    assert.isTrue(searchesTag(cs([]), ["Patient"]), "a type the statement does not list")
    assert.isFalse(
      searchesTag(
        cs([
          { type: "Patient", searchParam: [{ name: "_tag" }] },
          { type: "Binary", searchParam: [{ name: "_id" }] },
        ]),
        ["Patient", "Binary"],
      ),
    )
  })
})

describe("error classification", () => {
  it("throttling: 429/503/504, Throttled and Transport (not a refused connection); not 500 or 400", () => {
    for (const s of [429, 503, 504]) assert.isTrue(isThrottle(status(s)), String(s))
    assert.isTrue(isThrottle(new FhirError({ reason: "Throttled", method: "POST", url: "u", status: 429 })))
    assert.isTrue(isThrottle(new FhirError({ reason: "Transport", method: "POST", url: "u" })))
    const transport = (detail: string) =>
      new FhirError({ reason: "Transport", method: "POST", url: "u", detail })
    assert.isTrue(isThrottle(transport("no answer within 60s")))
    assert.isTrue(isThrottle(transport("ECONNRESET")))
    // a target that is not there is not throttling: the import stops (exit 4) instead of waiting for ever
    assert.isFalse(isThrottle(transport("ECONNREFUSED")))
    assert.isFalse(isThrottle(transport("ENOTFOUND")))
    assert.isFalse(isThrottle(status(500)))
    assert.isFalse(isThrottle(status(400)))
    assert.isFalse(isThrottle(new ImportError({ reason: "Target", url: "u", detail: "x" })))
  })

  it("an entry refusal is a 4xx other than auth, 405, 413 and 429; 413 is too large", () => {
    for (const s of [400, 404, 409, 412, 422]) assert.isTrue(isEntryRefusal(status(s)), String(s))
    for (const s of [401, 403, 405, 413, 429, 500, 503]) assert.isFalse(isEntryRefusal(status(s)), String(s))
    assert.isTrue(isTooLarge(status(413)))
    assert.isFalse(isTooLarge(status(400)))
  })

  it("a systemic refusal carries a not-supported issue, or a body that is no OperationOutcome (not 409/412/413/422)", () => {
    assert.isTrue(
      isSystemic(
        status(400, {
          resourceType: "OperationOutcome",
          issue: [{ severity: "error", code: "not-supported", diagnostics: "no conditional create" }],
        }),
      ),
    )
    assert.isFalse(
      isSystemic(
        status(422, { resourceType: "OperationOutcome", issue: [{ severity: "error", code: "invariant" }] }),
      ),
    )
    // a not-supported issue about one entry (a resource type the target does not store) is that entry's refusal
    assert.isFalse(
      isSystemic(
        status(400, {
          resourceType: "OperationOutcome",
          issue: [
            {
              severity: "error",
              code: "not-supported",
              diagnostics: "Bundle.entry[10] (Parameters/par1): Unknown resource type",
              expression: ["Bundle.entry[10]"],
            },
          ],
        }),
      ),
    )
    // an HTML or text 4xx (a proxy, a wrong URL) is about no entry
    assert.isTrue(isSystemic(status(400, undefined, "Bad Request")))
    assert.isTrue(isSystemic(status(404, undefined, "Not Found")))
    // an empty body, an OperationOutcome Ferry could not read, the statuses FHIR gives entries, a bare 413: not
    assert.isFalse(isSystemic(status(400)))
    assert.isFalse(isSystemic(status(400, undefined, "the body was a OperationOutcome resource")))
    // an OperationOutcome cut at the read limit, a JSON document, a body that broke off: a FHIR answer still
    for (const d of [
      "the body was malformed or truncated JSON",
      "the body was a JSON document",
      "the body could not be read",
    ])
      assert.isFalse(isSystemic(status(400, undefined, d)), d)
    for (const s of [409, 412, 422, 413]) assert.isFalse(isSystemic(status(s, undefined, "text")), String(s))
  })
})

describe("chunk keys and records", () => {
  it("chunkKey depends on the chunk's resource keys only: same keys same key, any change another", () => {
    const a = chunkKey(["Patient/1", "Observation/2"])
    assert.strictEqual(a, chunkKey(["Patient/1", "Observation/2"]))
    assert.match(a, /^[0-9a-f]{32}$/)
    assert.notStrictEqual(a, chunkKey(["Patient/1"]))
    assert.notStrictEqual(a, chunkKey(["Patient/1", "Observation/3"]))
    // no ambiguity between one key holding a newline-like join and two keys
    assert.notStrictEqual(chunkKey(["Patient/1", "Patient/2"]), chunkKey(["Patient/12"]))
    assert.strictEqual(typeOf("Observation/2"), "Observation")
  })

  it("a quarantine line holds the resource, the outcome (null when none), the reason and file:line", () => {
    const resource = { resourceType: "Immunization", id: "i1" }
    const outcome = { resourceType: "OperationOutcome", issue: [{ severity: "error", code: "invalid" }] }
    assert.deepStrictEqual(
      JSON.parse(quarantineLine(resource, outcome, "refused (422)", "data/Immunization.000.ndjson:7")),
      {
        resource,
        outcome,
        reason: "refused (422)",
        source: "data/Immunization.000.ndjson:7",
      },
    )
    const bare = JSON.parse(
      quarantineLine(null, undefined, "rejected by $import", "Immunization.ndjson:3"),
    ) as {
      resource: unknown
      outcome: unknown
    }
    assert.isNull(bare.resource)
    assert.isNull(bare.outcome)
    assert.notInclude(quarantineLine(resource, undefined, "x", "f:1"), "\n")
  })
})

describe("readingOrder (the graph pass's file order)", () => {
  it("reads Binary first, then the usual dependencies first (TypeOrder), unknown types with the clinical ones", () => {
    const types = ["ExplanationOfBenefit", "Zzz", "Encounter", "Patient", "Claim", "Organization", "Binary"]
    const sorted = [...types].sort((a, b) => readingOrder(a) - readingOrder(b))
    assert.deepStrictEqual(sorted, [
      "Binary",
      "Organization",
      "Patient",
      "Encounter",
      "Zzz",
      "Claim",
      "ExplanationOfBenefit",
    ])
  })
})

describe("makeLimiter", () => {
  /** How many of `n` tasks run at once under the limiter (each waits until released). */
  const concurrentUnder = (limiter: Effect.Effect.Success<ReturnType<typeof makeLimiter>>, n: number) =>
    Effect.gen(function* () {
      const running = yield* Ref.make(0)
      const gate = yield* Deferred.make<void>()
      const fibers = yield* Effect.forEach(Array.from({ length: n }), () =>
        Effect.fork(
          limiter.run(
            Effect.zipRight(
              Ref.update(running, (x) => x + 1),
              Deferred.await(gate),
            ),
          ),
        ),
      )
      for (let i = 0; i < 10; i++) yield* Effect.yieldNow()
      const seen = yield* Ref.get(running)
      yield* Deferred.succeed(gate, undefined)
      yield* Effect.forEach(fibers, Fiber.join, { discard: true })
      return seen
    })

  it.effect("halves on throttling down to 1, gives one slot back per 20 successes, never above the max", () =>
    Effect.gen(function* () {
      const limiter = yield* makeLimiter(4)
      assert.strictEqual(limiter.current(), 4)
      assert.strictEqual(yield* concurrentUnder(limiter, 6), 4)
      yield* limiter.throttled
      assert.strictEqual(limiter.current(), 2)
      for (let i = 0; i < 10; i++) yield* Effect.yieldNow()
      assert.strictEqual(yield* concurrentUnder(limiter, 6), 2)
      yield* limiter.throttled
      yield* limiter.throttled
      assert.strictEqual(limiter.current(), 1)
      for (let i = 0; i < 10; i++) yield* Effect.yieldNow()
      assert.strictEqual(yield* concurrentUnder(limiter, 3), 1)
      for (let i = 0; i < SUCCESSES_TO_GROW - 1; i++) yield* limiter.succeeded
      assert.strictEqual(limiter.current(), 1)
      yield* limiter.succeeded
      assert.strictEqual(limiter.current(), 2)
      assert.strictEqual(yield* concurrentUnder(limiter, 6), 2)
      // a throttle resets the run of successes
      for (let i = 0; i < SUCCESSES_TO_GROW - 1; i++) yield* limiter.succeeded
      yield* limiter.throttled
      yield* limiter.succeeded
      assert.strictEqual(limiter.current(), 1)
      for (let i = 0; i < 3 * SUCCESSES_TO_GROW * 4; i++) yield* limiter.succeeded
      assert.strictEqual(limiter.current(), 4)
      for (let i = 0; i < 10; i++) yield* Effect.yieldNow()
      assert.strictEqual(yield* concurrentUnder(limiter, 8), 4)
    }),
  )

  it.live(
    "with a pool of workers that take the next task at once, a throttle lowers the concurrency at once",
    () =>
      Effect.gen(function* () {
        const limiter = yield* makeLimiter(4)
        let running = 0
        let mostLater = 0
        yield* forEachPooled(
          Array.from({ length: 40 }, (_, i) => i),
          4,
          (i) =>
            limiter.run(
              Effect.gen(function* () {
                running++
                // well after the throttle (task 6): the tasks running when it came have finished
                if (i >= 16) mostLater = Math.max(mostLater, running)
                if (i === 6) yield* limiter.throttled
                yield* Effect.sleep("3 millis")
                running--
              }),
            ),
        )
        assert.strictEqual(limiter.current(), 2)
        assert.strictEqual(mostLater, 2)
        let laterMost = 0
        running = 0
        yield* forEachPooled(
          Array.from({ length: 20 }, (_, i) => i),
          4,
          () =>
            limiter.run(
              Effect.gen(function* () {
                running++
                laterMost = Math.max(laterMost, running)
                yield* Effect.sleep("2 millis")
                running--
              }),
            ),
        )
        assert.strictEqual(laterMost, 2)
      }),
  )
})

describe("makeSizer", () => {
  it("halves to what lands, grows back, and keeps a grown size refused as the ceiling", () => {
    const sizer = makeSizer(40)
    assert.isTrue(sizer.tooLarge(40))
    assert.strictEqual(sizer.current(), 20)
    // a Bundle sent before the reduction changes nothing
    assert.isFalse(sizer.tooLarge(40))
    assert.isTrue(sizer.tooLarge(20))
    assert.isTrue(sizer.tooLarge(10))
    assert.strictEqual(sizer.current(), 5)
    const land = (n: number) => {
      for (let i = 0; i < SUCCESSES_TO_GROW; i++) sizer.succeeded(sizer.current())
      return n
    }
    land(5)
    assert.strictEqual(sizer.current(), 6)
    // the grown size refused: one step back, not half, and 5 for good
    assert.isTrue(sizer.tooLarge(6))
    assert.strictEqual(sizer.current(), 5)
    land(5)
    land(5)
    assert.strictEqual(sizer.current(), 5)
  })

  it("a limit between two sizes (25 of 500): found with a few refusals, growing by half the way to the last refused size", () => {
    const limit = 25
    const sizer = makeSizer(500)
    let refused = 0
    // Bundles of the current size until the sizes settle: refused above the limit, landed at or below it
    for (let i = 0; i < 40 * SUCCESSES_TO_GROW; i++) {
      const n = sizer.current()
      if (n > limit) {
        refused++
        sizer.tooLarge(n)
      } else sizer.succeeded(n)
    }
    assert.strictEqual(sizer.current(), limit)
    // 500, 250, 125, 62, 31 halved to 15; grown 15 → 18 → 22 → 27 refused; 22 → 24 → 25 → 26 refused
    assert.strictEqual(refused, 7)
  })

  it("one resource too large alone: its halving cascade ends there, and the size is back to before it", () => {
    const sizer = makeSizer(500)
    assert.isFalse(sizer.tooLarge(1))
    assert.strictEqual(sizer.current(), 500)
    // 500 refused, then each half holding the big resource, down to it alone
    for (const n of [500, 250, 125, 63, 32, 16, 8, 4, 2]) sizer.tooLarge(n)
    assert.strictEqual(sizer.current(), 1)
    assert.isFalse(sizer.tooLarge(1))
    assert.strictEqual(sizer.current(), 500)
    // an entry limit learned first is not undone by a later oversized resource's cascade
    const limited = makeSizer(40)
    for (const n of [40, 20, 10]) limited.tooLarge(n)
    limited.succeeded(5)
    assert.strictEqual(limited.current(), 5)
    limited.tooLarge(1)
    assert.strictEqual(limited.current(), 5)
  })

  it("a larger Bundle that lands (a half of a refused one) puts the size up to it", () => {
    const sizer = makeSizer(500)
    sizer.tooLarge(500)
    sizer.tooLarge(250)
    assert.strictEqual(sizer.current(), 125)
    sizer.succeeded(250)
    assert.strictEqual(sizer.current(), 250)
  })

  it("a start below the plan (an earlier wave's end): sent first, grown back towards the plan as Bundles land", () => {
    const sizer = makeSizer(40, 5)
    assert.strictEqual(sizer.current(), 5)
    for (let i = 0; i < 20 * SUCCESSES_TO_GROW; i++) sizer.succeeded(sizer.current())
    assert.strictEqual(sizer.current(), 40)
    // a start above the plan is the plan
    assert.strictEqual(makeSizer(40, 80).current(), 40)
    // one resource too large alone ends its cascade back at the size before it: what a wave ends at
    const wave = makeSizer(500)
    for (const n of [500, 250, 125, 63, 32, 16, 8, 4, 2]) wave.tooLarge(n)
    wave.tooLarge(1)
    assert.strictEqual(wave.current(), 500)
  })

  it("smaller Bundles landing change nothing; growth stops at the plan", () => {
    const sizer = makeSizer(8)
    for (let i = 0; i < 100; i++) sizer.succeeded(8)
    assert.strictEqual(sizer.current(), 8)
    assert.isTrue(sizer.tooLarge(8))
    assert.strictEqual(sizer.current(), 4)
    for (let i = 0; i < 100; i++) sizer.succeeded(2)
    assert.strictEqual(sizer.current(), 4)
    for (let i = 0; i < 10 * SUCCESSES_TO_GROW; i++) sizer.succeeded(sizer.current())
    assert.strictEqual(sizer.current(), 8)
  })
})

describe("quarantined", () => {
  it("tells what the target refused from what waits on it, and says so when nothing was refused", () => {
    const retry = "the same command with --retry-quarantine"
    assert.match(quarantined(3, "/q", retry).message, /^\/q: the target refused 3 resources, set aside here/)
    assert.match(
      quarantined(10, "/q", retry, 7).message,
      /^\/q: the target refused 3 resources, and 7 that refer to them wait with them, set aside here/,
    )
    assert.match(
      quarantined(2, "/q", retry, 2).message,
      /^\/q: 2 resources refer to resources that have no id on the target yet, set aside here/,
    )

    // what the archive holds without an id is no refusal, and no retry sends it
    assert.strictEqual(
      quarantined(1, "/q", retry, 0, 1).message,
      "/q: 1 resource of the archive cannot be sent as it is (no id), set aside here with each one's file:line and the reason (everything else landed); fix them at the source and export again (a retry cannot send them)",
    )
    assert.match(
      quarantined(6, "/q", retry, 2, 1).message,
      /^\/q: the target refused 3 resources, 2 that refer to them wait with them, and 1 resource of the archive cannot be sent as it is \(no id\), set aside here .*; fix the cause, then run the same command with --retry-quarantine \(those the archive holds without an id are fixed at the source, then exported again\)$/,
    )
  })

  it("refusal: the target's OperationOutcome in a few words, or nothing", () => {
    assert.strictEqual(
      refusal({
        resourceType: "OperationOutcome",
        issue: [{ severity: "error", code: "business-rule", diagnostics: "no immunizations here" }],
      }),
      ": error business-rule: no immunizations here",
    )
    assert.strictEqual(refusal(undefined), "")
    assert.strictEqual(refusal({ resourceType: "Patient" }), "")
    assert.isAtMost(
      refusal({
        resourceType: "OperationOutcome",
        issue: [{ severity: "error", code: "x", diagnostics: "y".repeat(999) }],
      }).length,
      302,
    )
  })
})
