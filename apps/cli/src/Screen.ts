/**
 * A live frame on a TTY (stderr), shared by the commands with a progress display: `lines` gives the frame
 * for an instant and the terminal's size; it is redrawn in place (cursor up N lines, clear each line) at
 * most every `REDRAW_MS`, also when no event comes (a ticker, skipped when an event drew just before);
 * notices are printed above it. `stop` draws the final frame and leaves it on screen; nothing is drawn
 * after it.
 */
import { Clock, Duration, Effect, Schedule, type Scope } from "effect"
import * as Progress from "./Progress.js"

/** At most one redraw per this many milliseconds. */
export const REDRAW_MS = 250

export interface Size {
  /** Usable columns. */
  readonly width: number
  /** Terminal rows, when known. */
  readonly rows: number | undefined
}

export interface Screen {
  /** Redraw now when the last draw is `REDRAW_MS` old (or `force`). */
  readonly draw: (now: number, force?: boolean) => Effect.Effect<void>
  /** A line printed above the frame, then the frame again. */
  readonly notice: (text: string, now: number) => Effect.Effect<void>
  readonly stop: Effect.Effect<void>
  readonly stopped: () => boolean
}

export const make = (
  lines: (now: number, size: Size) => ReadonlyArray<string>,
): Effect.Effect<Screen, never, Scope.Scope> =>
  Effect.gen(function* () {
    let drawn = 0
    let lastDraw = Number.NEGATIVE_INFINITY
    let stopped = false
    const write = (text: string) =>
      Effect.sync(() => {
        process.stderr.write(text)
      })
    const frame = (now: number): string => {
      const size = { width: Math.max(20, (process.stderr.columns ?? 80) - 1), rows: process.stderr.rows }
      const next = lines(now, size)
      const out = Progress.paint(drawn, next)
      drawn = next.length
      lastDraw = now
      return out
    }
    const draw = (now: number, force = false) =>
      stopped || (!force && now - lastDraw < REDRAW_MS) ? Effect.void : write(frame(now))
    const stop = Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.suspend(() => {
        if (stopped) return Effect.void
        stopped = true
        return write(frame(now))
      }),
    )
    const notice = (text: string, now: number) =>
      Effect.suspend(() => {
        if (stopped) return Effect.void
        const above = Progress.above(drawn, text)
        drawn = 0
        return write(above + frame(now))
      })
    // Time passes while no event comes (waiting for the server, a slow file): redraw anyway; the ticker
    // skips a redraw when an event drew one just before.
    const tick = Effect.flatMap(Clock.currentTimeMillis, (now) =>
      stopped || now - lastDraw < REDRAW_MS - 20 ? Effect.void : write(frame(now)),
    )
    yield* Effect.forkScoped(Effect.repeat(tick, Schedule.spaced(Duration.millis(REDRAW_MS))))
    return { draw, notice, stop, stopped: () => stopped } satisfies Screen
  })

/** How many resource types fit: the terminal's rows less `reserved` lines, within 3..40 (12 unknown). */
export const maxTypes = (size: Size, reserved: number): number =>
  size.rows === undefined || size.rows <= 0 ? 12 : Math.max(3, Math.min(40, size.rows - reserved))
