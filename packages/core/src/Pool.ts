/**
 * A fixed pool of fibers over a list of work.
 *
 * `Effect.forEach(items, f, { concurrency: "unbounded" })` behind a semaphore forks one fiber per item up
 * front, each holding its pending continuation until its turn, and `forEach` with a number keeps every
 * finished item's Exit until the whole call ends. With tens of thousands of items (an import's chunks of a
 * 1M-resource level, an export's attachments) both showed in heap snapshots. Here `workers` fibers each take
 * the next item when done with the last: nothing is held per item beyond the list itself.
 */
import { Effect } from "effect"

/**
 * Runs `f` over `items` in order of taking, at most `workers` at a time (a count below 1, or not a finite
 * number, is 1). The first failure interrupts the other workers (as `forEach` does) and is the result; the
 * iterator is closed (`return`) however the run ends.
 */
export const forEachPooled = <A, E, R>(
  items: Iterable<A>,
  workers: number,
  f: (item: A) => Effect.Effect<unknown, E, R>,
): Effect.Effect<void, E, R> =>
  Effect.suspend(() => {
    const iterator = items[Symbol.iterator]()
    let next = iterator.next()
    const worker = Effect.whileLoop({
      while: () => next.done !== true,
      body: () => {
        const item = next.value as A
        next = iterator.next()
        return f(item)
      },
      step: () => {},
    })
    const n = Number.isFinite(workers) ? Math.max(1, Math.floor(workers)) : 1
    return Effect.all(
      Array.from({ length: n }, () => worker),
      { concurrency: "unbounded", discard: true },
    ).pipe(Effect.ensuring(Effect.sync(() => iterator.return?.())))
  })
