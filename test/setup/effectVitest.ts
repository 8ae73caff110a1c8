/**
 * Test files share a worker's modules (`isolate: false` in vitest.config.ts), and `@effect/vitest`'s `layer(…)`
 * assigns its layer-bound `effect`, `scoped`, … onto the one shared `it` (it is vitest's own `it`, mutated in
 * place). Without this, a file's plain `it.scoped` would run in the last layer of the file before it (closed,
 * without TestClock). Runs before every test file: the first keeps the methods as loaded, later ones put them
 * back.
 */
import { it } from "@effect/vitest"

const keys = ["effect", "scoped", "live", "scopedLive", "flakyTest", "layer", "prop"] as const
type Methods = Pick<typeof it, (typeof keys)[number]>
const stash = Symbol.for("ferry/test/effect-vitest-methods")
const store = globalThis as { [stash]?: Methods }

const saved = store[stash]
if (saved === undefined) {
  const methods = {} as Record<string, unknown>
  for (const k of keys) methods[k] = it[k]
  store[stash] = methods as unknown as Methods
} else {
  Object.assign(it, saved)
}
