/**
 * The sandbox as an Effect resource: opens the store, registers REST (+ plugins such as faults,
 * SMART, bulk export/import), listens on `host:port` (0 = OS-picked), seeds/generates data, and
 * closes the server then the store when the scope closes.
 *
 * The FHIR base is `http://host:port${basePath}` (basePath defaults to `/fhir`).
 */
import { errnoOf } from "@ferry/core/FsProblem"
import { describeParseError } from "@ferry/core/Http"
import { Context, Effect, Layer, Schema } from "effect"
import { type SandboxConfig, type SandboxConfigInput, decodeConfig } from "./Config.js"
import * as BulkExport from "./BulkExport.js"
import * as BulkImport from "./BulkImport.js"
import * as Faults from "./Faults.js"
import * as Generate from "./Generate.js"
import { Router } from "./Http.js"
import * as Rest from "./Rest.js"
import * as Seed from "./Seed.js"
import { listen } from "./Server.js"
import * as Smart from "./Smart.js"
import { Store } from "./Store.js"

export class SandboxError extends Schema.TaggedError<SandboxError>("@ferry/sandbox/SandboxError")(
  "SandboxError",
  {
    /** Generate: the sandbox's own data generator failed (a bug, not the input). */
    reason: Schema.Literal("Config", "Store", "Listen", "Seed", "Generate"),
    detail: Schema.String,
    cause: Schema.optional(Schema.Defect),
  },
) {
  override get message(): string {
    const what =
      this.reason === "Config"
        ? "invalid sandbox configuration"
        : this.reason === "Store"
          ? "could not open the sandbox database"
          : this.reason === "Listen"
            ? "could not listen (is the port free?)"
            : this.reason === "Generate"
              ? "could not generate data"
              : "could not load the seed data"
    return `Sandbox: ${what}: ${this.detail}`
  }
}

/**
 * Adds routes/middleware/capabilities; called in order before REST is registered and the server
 * listens. A returned object with a `close()` method is closed (in reverse order) on shutdown.
 */
export type Plugin = (router: Router, store: Store, config: SandboxConfig) => unknown

/** Faults (first, so they fire before auth), SMART auth, bulk `$export`, bulk `$import`. */
export const defaultPlugins: ReadonlyArray<Plugin> = [
  (router, store, config) => {
    const faults = Faults.register(router, store, config)
    Smart.register(router, store, config, faults)
  },
  (router, store, config) => BulkExport.register(router, store, config),
  (router, store, config) => BulkImport.register(router, store, config),
]

export interface SandboxOptions {
  /** Defaults to `defaultPlugins`; pass `[]` for a bare REST server. */
  readonly plugins?: ReadonlyArray<Plugin>
}

export interface SandboxHandle {
  /** e.g. `http://127.0.0.1:43127/fhir` */
  readonly baseUrl: string
  readonly port: number
  readonly store: Store
  readonly router: Router
  readonly config: SandboxConfig
  /** What seeding/generation loaded. */
  readonly loaded: {
    readonly seeded: ReadonlyArray<Seed.SeedReport>
    readonly generated?: Generate.GenerateReport
  }
  /** Closes the server then the store (idempotent; the scope also calls it). */
  close(): Promise<void>
}

const errorDetail = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

/** Starts a sandbox in the current scope. */
export const start = Effect.fn("Sandbox.start")(function* (
  input: SandboxConfigInput = {},
  options: SandboxOptions = {},
) {
  const config = yield* decodeConfig(input, { onExcessProperty: "error" }).pipe(
    Effect.mapError(
      (e) =>
        new SandboxError({
          reason: "Config",
          detail: `${describeParseError("a sandbox configuration", e)}; see ferry sandbox --help for the settings`,
        }),
    ),
  )
  // the faults and auth sections are read by their plugins: checked here, before anything starts
  yield* Effect.try({
    try: () => {
      Faults.decodeFaultsConfig(config.faults)
      Smart.decodeAuthConfig(config.auth)
    },
    catch: (e) => new SandboxError({ reason: "Config", detail: errorDetail(e) }),
  })
  const store = yield* Effect.acquireRelease(
    Effect.try({
      try: () => Store.open(config.db),
      catch: (cause) =>
        new SandboxError({ reason: "Store", detail: `${config.db}: ${errorDetail(cause)}`, cause }),
    }),
    (s) => Effect.sync(() => s.close()),
  )
  const router = new Router()
  const installed = (options.plugins ?? defaultPlugins).map((plugin) => plugin(router, store, config))
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      for (const p of installed.reverse()) {
        if (typeof p === "object" && p !== null && "close" in p && typeof p.close === "function") p.close()
      }
    }),
  )
  Rest.register(router, store, config)
  const running = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: () =>
        listen(router, store, {
          host: config.host,
          port: config.port,
          basePath: config.basePath,
          maxBodyBytes: config.maxBodyBytes,
        }),
      catch: (cause) =>
        new SandboxError({
          reason: "Listen",
          detail: `${config.host}:${config.port}: ${errorDetail(cause)}`,
          cause,
        }),
    }),
    (r) => Effect.promise(() => r.close()),
  )
  store.setBaseUrl(running.baseUrl)
  const seeded =
    config.seed.length > 0
      ? yield* Effect.try({
          try: () => Seed.seedAll(store, running.baseUrl, config.seed),
          catch: (cause) =>
            new SandboxError({
              reason: "Seed",
              // a seed path that is not there: said as such (not as the file system's ENOENT line)
              detail:
                errnoOf(cause) === "ENOENT"
                  ? `${String((cause as { path?: unknown }).path ?? config.seed.join(", "))} does not exist; give --seed files or folders of NDJSON or transaction Bundles that do`
                  : `${config.seed.join(", ")}: ${errorDetail(cause)}`,
              cause,
            }),
        })
      : []
  const generated =
    config.generate !== undefined && config.generate > 0
      ? yield* Effect.try({
          try: () => Generate.generate(store, running.baseUrl, { patients: config.generate ?? 0 }),
          catch: (cause) =>
            new SandboxError({ reason: "Generate", detail: `--generate: ${errorDetail(cause)}`, cause }),
        })
      : undefined
  let closed: Promise<void> | undefined
  const handle: SandboxHandle = {
    baseUrl: running.baseUrl,
    port: running.port,
    store,
    router,
    config,
    loaded: { seeded, ...(generated ? { generated } : {}) },
    close: () => {
      closed ??= running.close().then(() => store.close())
      return closed
    },
  }
  yield* Effect.addFinalizer(() => Effect.promise(() => handle.close()))
  return handle
})

export class Sandbox extends Context.Tag("@ferry/sandbox/Sandbox")<Sandbox, SandboxHandle>() {
  static readonly make = start
  static readonly layer = (input: SandboxConfigInput = {}, options: SandboxOptions = {}) =>
    Layer.scoped(Sandbox, start(input, options))
}

export const layer = Sandbox.layer
