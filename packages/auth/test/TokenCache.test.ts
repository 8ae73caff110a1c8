import { assert, describe, expect, it } from "@effect/vitest"
import { AuthError } from "@ferry/core/Errors"
import { Deferred, Duration, Effect, Fiber, Option, Redacted, Ref, TestClock } from "effect"
import * as TokenCache from "../src/TokenCache.js"

/** A fake token source counting its calls; `gate` (when set) holds each fetch until it is opened. */
const fakeSource = (lifetime: Option.Option<Duration.Duration>) =>
  Effect.gen(function* () {
    const calls = yield* Ref.make(0)
    const gate = yield* Ref.make(Option.none<Deferred.Deferred<void>>())
    const failNext = yield* Ref.make(false)
    const fetch = Effect.gen(function* () {
      const n = yield* Ref.updateAndGet(calls, (c) => c + 1)
      const g = yield* Ref.get(gate)
      if (Option.isSome(g)) yield* Deferred.await(g.value)
      if (yield* Ref.getAndSet(failNext, false)) {
        return yield* new AuthError({ reason: "TokenRequest", detail: `fetch ${n} failed` })
      }
      return { token: Redacted.make(`token-${n}`), expiresIn: lifetime, scope: Option.none() }
    })
    return { calls, gate, failNext, fetch }
  })

const value = (t: Redacted.Redacted<string>) => Redacted.value(t)

describe("TokenCache", () => {
  it("refreshes min(skew, 10 % of the lifetime) before expiry", () => {
    expect(TokenCache.refreshAt(0, Duration.seconds(300), Duration.seconds(30))).toBe(270_000)
    expect(TokenCache.refreshAt(0, Duration.seconds(3600), Duration.seconds(30))).toBe(3_570_000)
    expect(TokenCache.refreshAt(1000, Duration.seconds(60), Duration.seconds(30))).toBe(55_000)
  })

  it.scoped("serves a cached token and refreshes it before it expires", () =>
    Effect.gen(function* () {
      const source = yield* fakeSource(Option.some(Duration.seconds(300)))
      const cache = yield* TokenCache.make(source.fetch)
      expect(value(yield* cache.get)).toBe("token-1")
      expect(value(yield* cache.get)).toBe("token-1")
      yield* TestClock.adjust("269 seconds")
      expect(value(yield* cache.get)).toBe("token-1")
      expect(yield* Ref.get(source.calls)).toBe(1)
      yield* TestClock.adjust("2 seconds") // 271 s: inside the 30 s margin
      // Still valid: handed out while its replacement is fetched, rather than making the caller wait.
      expect(value(yield* cache.get)).toBe("token-1")
      yield* Effect.yieldNow().pipe(Effect.repeatN(20))
      expect(yield* Ref.get(source.calls)).toBe(2)
      expect(value(yield* cache.get)).toBe("token-2")
      expect(yield* Ref.get(source.calls)).toBe(2)
    }),
  )

  it.scoped(
    "a refresh ahead of expiry that fails keeps the current token until it expires, and is tried again later",
    () =>
      Effect.gen(function* () {
        const source = yield* fakeSource(Option.some(Duration.seconds(300)))
        const cache = yield* TokenCache.make(source.fetch)
        expect(value(yield* cache.get)).toBe("token-1")
        yield* TestClock.adjust("271 seconds")
        yield* Ref.set(source.failNext, true)
        expect(value(yield* cache.get)).toBe("token-1")
        yield* Effect.yieldNow().pipe(Effect.repeatN(20))
        expect(yield* Ref.get(source.calls)).toBe(2) // the refresh ran, and failed
        // Not a token request per get: the next try waits a little (5 s here).
        expect(value(yield* cache.get)).toBe("token-1")
        yield* TestClock.adjust("4 seconds")
        expect(value(yield* cache.get)).toBe("token-1")
        expect(yield* Ref.get(source.calls)).toBe(2)
        yield* TestClock.adjust("1 second") // 276 s
        yield* Ref.set(source.failNext, true)
        expect(value(yield* cache.get)).toBe("token-1")
        yield* Effect.yieldNow().pipe(Effect.repeatN(20))
        expect(yield* Ref.get(source.calls)).toBe(3)
        // Expired (300 s): no longer handed out; the caller waits for a token request and sees its error.
        yield* TestClock.adjust("24 seconds")
        yield* Ref.set(source.failNext, true)
        const error = yield* Effect.flip(cache.get)
        expect(error.message).toBe("fetch 4 failed")
        expect(value(yield* cache.get)).toBe("token-5")
      }),
  )

  it.scoped("a token refused (401) while its replacement is fetched is not handed out again", () =>
    Effect.gen(function* () {
      const source = yield* fakeSource(Option.some(Duration.seconds(300)))
      const cache = yield* TokenCache.make(source.fetch)
      expect(value(yield* cache.get)).toBe("token-1")
      yield* TestClock.adjust("271 seconds")
      const open = yield* Deferred.make<void>()
      yield* Ref.set(source.gate, Option.some(open))
      expect(value(yield* cache.get)).toBe("token-1") // starts the refresh, held at the gate
      yield* cache.invalidate
      const waiting = yield* Effect.fork(cache.get)
      yield* Effect.yieldNow().pipe(Effect.repeatN(20))
      expect(Option.isNone(yield* Fiber.poll(waiting))).toBe(true)
      yield* Deferred.succeed(open, undefined)
      expect(value(yield* Fiber.join(waiting))).toBe("token-2")
      expect(yield* Ref.get(source.calls)).toBe(2)
    }),
  )

  it.scoped("keeps a token without a lifetime until invalidated", () =>
    Effect.gen(function* () {
      const source = yield* fakeSource(Option.none())
      const cache = yield* TokenCache.make(source.fetch)
      yield* cache.get
      yield* TestClock.adjust("30 days")
      expect(value(yield* cache.get)).toBe("token-1")
      yield* cache.invalidate
      expect(value(yield* cache.get)).toBe("token-2")
    }),
  )

  it.scoped("20 concurrent callers during a refresh cause one fetch and all get its token", () =>
    Effect.gen(function* () {
      const source = yield* fakeSource(Option.some(Duration.seconds(300)))
      const cache = yield* TokenCache.make(source.fetch)
      const open = yield* Deferred.make<void>()
      yield* Ref.set(source.gate, Option.some(open))
      const fibers = yield* Effect.forEach(Array.from({ length: 20 }), () => Effect.fork(cache.get))
      // Let every fiber reach the cache before the fetch may finish.
      yield* Effect.yieldNow().pipe(Effect.repeatN(50))
      expect(yield* Ref.get(source.calls)).toBe(1)
      yield* Deferred.succeed(open, undefined)
      const tokens = yield* Fiber.joinAll(fibers)
      expect(tokens.map(value)).toEqual(Array.from({ length: 20 }, () => "token-1"))
      expect(yield* Ref.get(source.calls)).toBe(1)
    }),
  )

  it.scoped("invalidate after a burst of 401s with the same token refreshes once", () =>
    Effect.gen(function* () {
      const source = yield* fakeSource(Option.some(Duration.seconds(300)))
      const cache = yield* TokenCache.make(source.fetch)
      // Two request fibers are handed token-1; both get a 401, invalidate and retry.
      const request = (got: Deferred.Deferred<string>, go: Deferred.Deferred<void>) =>
        Effect.gen(function* () {
          yield* Deferred.succeed(got, value(yield* cache.get))
          yield* Deferred.await(go)
          yield* cache.invalidate
          return value(yield* cache.get)
        })
      const [gotA, gotB] = [yield* Deferred.make<string>(), yield* Deferred.make<string>()]
      const [goA, goB] = [yield* Deferred.make<void>(), yield* Deferred.make<void>()]
      const a = yield* Effect.fork(request(gotA, goA))
      const b = yield* Effect.fork(request(gotB, goB))
      expect([yield* Deferred.await(gotA), yield* Deferred.await(gotB)]).toEqual(["token-1", "token-1"])
      yield* Deferred.succeed(goA, undefined)
      expect(yield* Fiber.join(a)).toBe("token-2")
      yield* Deferred.succeed(goB, undefined)
      expect(yield* Fiber.join(b)).toBe("token-2")
      expect(yield* Ref.get(source.calls)).toBe(2)
      // A fiber that was never handed a token drops whatever is cached.
      yield* cache.invalidate
      expect(value(yield* cache.get)).toBe("token-3")
      // The fiber that was handed token-3 drops it too.
      yield* cache.invalidate
      expect(value(yield* cache.get)).toBe("token-4")
    }),
  )

  it.scoped("a failed fetch fails every waiter and the next get tries again", () =>
    Effect.gen(function* () {
      const source = yield* fakeSource(Option.some(Duration.seconds(300)))
      const cache = yield* TokenCache.make(source.fetch)
      const open = yield* Deferred.make<void>()
      yield* Ref.set(source.gate, Option.some(open))
      yield* Ref.set(source.failNext, true)
      const fibers = yield* Effect.forEach(Array.from({ length: 5 }), () =>
        Effect.fork(Effect.flip(cache.get)),
      )
      yield* Effect.yieldNow().pipe(Effect.repeatN(20))
      yield* Deferred.succeed(open, undefined)
      const errors = yield* Fiber.joinAll(fibers)
      for (const e of errors) {
        assert.instanceOf(e, AuthError)
        expect(e.message).toBe("fetch 1 failed")
      }
      yield* Ref.set(source.gate, Option.none())
      expect(value(yield* cache.get)).toBe("token-2")
      expect(yield* Ref.get(source.calls)).toBe(2)
    }),
  )

  it.scoped("an interrupted caller does not cancel the fetch other callers wait for", () =>
    Effect.gen(function* () {
      const source = yield* fakeSource(Option.some(Duration.seconds(300)))
      const cache = yield* TokenCache.make(source.fetch)
      const open = yield* Deferred.make<void>()
      yield* Ref.set(source.gate, Option.some(open))
      const first = yield* Effect.fork(cache.get)
      const second = yield* Effect.fork(cache.get)
      yield* Effect.yieldNow().pipe(Effect.repeatN(20))
      yield* Fiber.interrupt(first)
      yield* Deferred.succeed(open, undefined)
      expect(value(yield* Fiber.join(second))).toBe("token-1")
      expect(yield* Ref.get(source.calls)).toBe(1)
    }),
  )
})
