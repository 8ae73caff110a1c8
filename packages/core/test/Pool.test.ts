import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Option } from "effect"
import { forEachPooled } from "../src/Pool.js"

describe("forEachPooled", () => {
  it.live("runs every item once, never more than `workers` at a time, in order of taking", () =>
    Effect.gen(function* () {
      let running = 0
      let most = 0
      const started: Array<number> = []
      yield* forEachPooled(
        Array.from({ length: 50 }, (_, i) => i),
        3,
        (i) =>
          Effect.gen(function* () {
            started.push(i)
            running++
            most = Math.max(most, running)
            yield* Effect.sleep(`${(i * 7) % 5} millis`)
            running--
          }),
      )
      expect(started).toEqual(Array.from({ length: 50 }, (_, i) => i))
      expect(most).toBe(3)
    }),
  )

  it.live("the first failure is the result and stops the other workers", () =>
    Effect.gen(function* () {
      const done: Array<number> = []
      const exit = yield* forEachPooled([1, 2, 3, 4, 5, 6, 7, 8], 2, (i) =>
        i === 3
          ? Effect.fail(`item ${i}`)
          : Effect.sleep("5 millis").pipe(Effect.tap(() => Effect.sync(() => done.push(i)))),
      ).pipe(Effect.exit)
      expect(
        Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : "succeeded",
      ).toBe("item 3")
      expect(done.every((i) => i < 5)).toBe(true)
      // a generator is closed when the run fails
      let closed = false
      function* numbers() {
        try {
          for (let i = 0; ; i++) yield i
        } finally {
          closed = true
        }
      }
      yield* forEachPooled(numbers(), 2, (i) => (i === 4 ? Effect.fail("stop") : Effect.void)).pipe(
        Effect.exit,
      )
      expect(closed).toBe(true)
    }),
  )

  it.effect("an empty list, a generator and a worker count that is not a number are fine", () =>
    Effect.gen(function* () {
      yield* forEachPooled([], 4, () => Effect.die("never called"))
      // a worker count that is not a number still runs everything (one at a time)
      const one: Array<number> = []
      yield* forEachPooled([1, 2, 3], Number.NaN, (i) => Effect.sync(() => one.push(i)))
      expect(one).toEqual([1, 2, 3])
      const seen: Array<string> = []
      function* letters() {
        yield "a"
        yield "b"
      }
      yield* forEachPooled(letters(), 4, (l) => Effect.sync(() => seen.push(l)))
      expect(seen).toEqual(["a", "b"])
    }),
  )
})
