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
import { Effect, Either, Layer } from "effect"
import { ConfigError } from "./Config.js"

const dispatcher = Layer.scoped(
  NodeHttpClient.Dispatcher,
  Effect.gen(function* () {
    const settings = yield* Either.match(HttpDispatcher.proxySettings(process.env), {
      onLeft: (problem) =>
        Effect.fail(new ConfigError({ reason: "Invalid", where: problem.variable, detail: problem.detail })),
      onRight: (s) => Effect.succeed(s),
    })
    return yield* Effect.acquireRelease(
      Effect.sync(() => {
        const pool = HttpDispatcher.make(settings)
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

export const layer = NodeHttpClient.layerUndiciWithoutDispatcher.pipe(Layer.provide(dispatcher))
