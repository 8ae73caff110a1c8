/**
 * The HTTP client every command uses: undici's `request` API through @effect/platform-node. Measured against
 * `FetchHttpClient` (global fetch) in the same process on small attachment GETs it costs a fraction of the
 * CPU per request (bench/export, docs/benchmarks.md). Redirects are not followed by the client: FhirClient
 * follows them itself, one hop at a time, so that credentials never cross to another host.
 *
 * One connection pool for the platform client and for FhirClient's lean GETs (undici's global dispatcher),
 * going through the environment's proxies when `https_proxy`, `http_proxy` (`no_proxy`) are set
 * (`@ferry/core/HttpDispatcher`). A proxy URL that does not parse is a configuration error (exit 2).
 */
import * as HttpDispatcher from "@ferry/core/HttpDispatcher"
import { NodeHttpClient } from "@effect/platform-node"
import { Duration, Effect, Either, Layer, Option } from "effect"
import { ConfigError } from "./Config.js"
import { requestTimeoutOf } from "./Flags.js"

const dispatcher = (bodyTimeoutMs: number) =>
  Layer.scoped(
    NodeHttpClient.Dispatcher,
    Effect.gen(function* () {
      const settings = yield* Either.match(HttpDispatcher.proxySettings(process.env), {
        onLeft: (problem) =>
          Effect.fail(
            new ConfigError({ reason: "Invalid", where: problem.variable, detail: problem.detail }),
          ),
        onRight: (s) => Effect.succeed(s),
      })
      return yield* Effect.acquireRelease(
        Effect.sync(() => {
          const pool = HttpDispatcher.make(settings, bodyTimeoutMs)
          return { pool, restore: HttpDispatcher.setGlobal(pool) }
        }),
        ({ pool, restore }) =>
          Effect.promise(() => {
            restore()
            return pool.destroy()
          }),
      ).pipe(Effect.map(({ pool }) => pool))
    }),
  )

/**
 * For a command with `--request-timeout` (`given`, as typed): it also bounds how long a body may send nothing
 * (FhirClient bounds the wait for the headers itself); not given, or not a valid value (the command itself
 * refuses that): `otherwise`, 5 minutes unless said.
 */
export const layerFor = (
  given: Option.Option<string>,
  otherwise: Duration.Duration = Duration.minutes(5),
) => {
  const timeout = Option.getOrElse(
    Either.getOrElse(requestTimeoutOf(given), () => Option.none()),
    () => otherwise,
  )
  return NodeHttpClient.layerUndiciWithoutDispatcher.pipe(
    Layer.provide(dispatcher(Duration.toMillis(timeout))),
  )
}

export const layer = layerFor(Option.none())
