import { Effect } from "effect"

/**
 * Gives the event loop a turn (a macrotask, `setImmediate`): a long synchronous loop that yields only to Effect's
 * scheduler (`Effect.yieldNow`, mostly microtasks) never lets a signal handler run, so a Ctrl-C would wait for the
 * whole loop. Called between the pieces of such a loop (a file sealed, 64 chunks unsealed).
 */
export const breathe: Effect.Effect<void> = Effect.async<void>((resume) => {
  const t = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(t))
})
