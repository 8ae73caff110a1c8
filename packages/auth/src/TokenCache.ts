/**
 * The access-token cache every authenticator shares.
 *
 * - Single flight: while a token request is in flight, every caller waits for that one request
 *   (N concurrent `get`s during a refresh cause one token request), and all see its result or error.
 * - Refresh ahead: a token is replaced `min(skew, 10 % of its lifetime)` before it expires. While that
 *   refresh runs, callers keep getting the current token (it is still valid) instead of waiting for it; if
 *   the refresh fails, the current token is still served until it expires, and a later `get` (at least
 *   `retryPause` on, at most half its remaining life) tries again. Only callers without a valid token wait
 *   for a token request, and see its error. A token without a known lifetime is kept until `invalidate`.
 * - Invalidate once: `invalidate` after a 401 drops the token the calling fiber was handed (also one still
 *   served during a refresh: its callers then wait for the refresh), and only that one. When 20 requests get a 401 with the same token, the first invalidation starts a refresh and the
 *   others find a newer token and leave it alone (tracked per fiber with a FiberRef; a fiber that never
 *   called `get` drops whatever is cached).
 * - The token request runs in the cache's own scope, so an interrupted caller does not cancel it for others.
 */
import type { AuthError } from "@ferry/core/Errors"
import {
  Cause,
  Clock,
  Deferred,
  Duration,
  Effect,
  FiberRef,
  Option,
  type Redacted,
  Ref,
  type Scope,
  SynchronizedRef,
} from "effect"

/** What a token endpoint (or a static source) handed out. */
export interface AccessToken {
  readonly token: Redacted.Redacted<string>
  /** The lifetime the server gave (`expires_in`); none = unknown, keep until invalidated. */
  readonly expiresIn: Option.Option<Duration.Duration>
  /** The scopes actually granted, when the server said. */
  readonly scope: Option.Option<string>
}

export interface TokenCache {
  /** The current token, fetching (once, for all callers) when there is none or it is about to expire. */
  readonly get: Effect.Effect<Redacted.Redacted<string>, AuthError>
  /** Drop the token this fiber was handed (after a 401); the next `get` fetches a new one. */
  readonly invalidate: Effect.Effect<void>
}

export interface TokenCacheOptions {
  /** Refresh this long before expiry at most (default 30 s); never more than 10 % of the lifetime. */
  readonly skew?: Duration.DurationInput | undefined
  /** After a failed refresh of a still-valid token, wait this long before the next try at most (default 5 s). */
  readonly retryPause?: Duration.DurationInput | undefined
}

interface Entry {
  readonly token: Redacted.Redacted<string>
  readonly generation: number
  /** Epoch millis after which `get` refreshes; undefined = never by time. */
  readonly refreshAt: number | undefined
  /** Epoch millis from which the token is no longer handed out; undefined = unknown lifetime. */
  readonly expiresAt: number | undefined
}

type State =
  | { readonly _tag: "Empty" }
  | {
      readonly _tag: "Pending"
      readonly deferred: Deferred.Deferred<Entry, AuthError>
      /** The token being replaced ahead of its expiry: served until it expires, or is invalidated. */
      readonly current: Entry | undefined
    }
  | { readonly _tag: "Ready"; readonly entry: Entry }

const empty: State = { _tag: "Empty" }

/** When to refresh a token fetched at `now` living `lifetime`: before expiry by min(skew, 10 %). */
export const refreshAt = (now: number, lifetime: Duration.Duration, skew: Duration.Duration): number => {
  const life = Duration.toMillis(lifetime)
  const margin = Math.min(Duration.toMillis(skew), life / 10)
  return now + life - margin
}

/** Whether `entry` may still be handed out at `now`. */
const valid = (entry: Entry, now: number): boolean => entry.expiresAt === undefined || now < entry.expiresAt

export const make = Effect.fn("TokenCache.make")(function* (
  fetch: Effect.Effect<AccessToken, AuthError>,
  options: TokenCacheOptions = {},
) {
  const skew = Duration.decode(options.skew ?? Duration.seconds(30))
  const retryPause = Duration.toMillis(Duration.decode(options.retryPause ?? Duration.seconds(5)))
  const scope = yield* Effect.scope
  const state = yield* SynchronizedRef.make<State>(empty)
  const generations = yield* Ref.make(0)
  // The generation of the token last handed to this fiber; -1 = none.
  const handedOut = yield* FiberRef.make(-1)

  const refresh = (deferred: Deferred.Deferred<Entry, AuthError>) =>
    Effect.gen(function* () {
      const token = yield* fetch
      const now = yield* Clock.currentTimeMillis
      const generation = yield* Ref.updateAndGet(generations, (n) => n + 1)
      const entry: Entry = {
        token: token.token,
        generation,
        refreshAt: Option.match(token.expiresIn, {
          onNone: () => undefined,
          onSome: (lifetime) => refreshAt(now, lifetime, skew),
        }),
        expiresAt: Option.match(token.expiresIn, {
          onNone: () => undefined,
          onSome: (lifetime) => now + Duration.toMillis(lifetime),
        }),
      }
      yield* Effect.logDebug("access token cached").pipe(
        Effect.annotateLogs({
          generation,
          expiresIn: Option.match(token.expiresIn, { onNone: () => "unknown", onSome: Duration.format }),
          scope: Option.getOrElse(token.scope, () => "(not stated)"),
        }),
      )
      return entry
    }).pipe(
      Effect.onExit((exit) =>
        Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          const kept = yield* SynchronizedRef.modify(state, (s): readonly [Entry | undefined, State] => {
            if (exit._tag === "Success") return [undefined, { _tag: "Ready", entry: exit.value }]
            // A failed refresh ahead of expiry does not take the still-valid token away; the next try
            // waits a little (not every request a token request), and at most half its remaining life.
            const current = s._tag === "Pending" && s.deferred === deferred ? s.current : undefined
            if (current === undefined || current.expiresAt === undefined || !valid(current, now)) {
              return [undefined, empty]
            }
            const retryAt = now + Math.min(retryPause, (current.expiresAt - now) / 2)
            return [current, { _tag: "Ready", entry: { ...current, refreshAt: retryAt } }]
          })
          if (kept !== undefined && exit._tag === "Failure") {
            yield* Effect.logWarning(
              "could not refresh the access token; the current one is used until it expires, and the refresh is tried again",
            ).pipe(
              Effect.annotateLogs({
                expiresIn: Duration.format(Duration.millis((kept.expiresAt ?? now) - now)),
                reason: Option.match(Cause.failureOption(exit.cause), {
                  onNone: () => "interrupted",
                  onSome: (e) => e.message,
                }),
              }),
            )
          }
          yield* Deferred.done(deferred, exit)
        }),
      ),
    )

  const get = Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const wait = yield* SynchronizedRef.modifyEffect(
      state,
      (s): Effect.Effect<readonly [Effect.Effect<Entry, AuthError>, State]> => {
        const start = (current: Entry | undefined) =>
          Effect.gen(function* () {
            const deferred = yield* Deferred.make<Entry, AuthError>()
            yield* Effect.forkIn(refresh(deferred), scope)
            const waitFor = current === undefined ? Deferred.await(deferred) : Effect.succeed(current)
            return [waitFor, { _tag: "Pending", deferred, current }] as const
          })
        if (s._tag === "Ready") {
          if (s.entry.refreshAt === undefined || now < s.entry.refreshAt) {
            return Effect.succeed([Effect.succeed(s.entry), s] as const)
          }
          // Time to refresh: callers keep the current token meanwhile, if it is still valid.
          return start(valid(s.entry, now) ? s.entry : undefined)
        }
        if (s._tag === "Pending") {
          const current = s.current !== undefined && valid(s.current, now) ? s.current : undefined
          return Effect.succeed([
            current === undefined ? Deferred.await(s.deferred) : Effect.succeed(current),
            s,
          ] as const)
        }
        return start(undefined)
      },
    )
    const entry = yield* wait
    yield* FiberRef.set(handedOut, entry.generation)
    return entry.token
  })

  const invalidate = Effect.gen(function* () {
    const seen = yield* FiberRef.get(handedOut)
    const mine = (entry: Entry) => seen < 0 || entry.generation === seen
    const dropped = yield* SynchronizedRef.modify(state, (s): readonly [boolean, State] => {
      if (s._tag === "Ready" && mine(s.entry)) return [true, empty]
      // Refused while its replacement is on the way: from now on callers wait for that one.
      if (s._tag === "Pending" && s.current !== undefined && mine(s.current)) {
        return [true, { ...s, current: undefined }]
      }
      return [false, s]
    })
    yield* Effect.logDebug(dropped ? "access token invalidated" : "access token already replaced")
  })

  return { get, invalidate } satisfies TokenCache
}) satisfies (
  fetch: Effect.Effect<AccessToken, AuthError>,
  options?: TokenCacheOptions,
) => Effect.Effect<TokenCache, never, Scope.Scope>
