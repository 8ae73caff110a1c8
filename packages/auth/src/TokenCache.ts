/**
 * The access-token cache every authenticator shares.
 *
 * - Single flight: while a token request is in flight, every caller waits for that one request
 *   (N concurrent `get`s during a refresh cause one token request), and all see its result or error.
 * - Refresh ahead: a token is replaced `min(skew, 10 % of its lifetime)` before it expires.
 *   A token without a known lifetime is kept until `invalidate`.
 * - Invalidate once: `invalidate` after a 401 drops the token the calling fiber was handed, and only that
 *   one. When 20 requests get a 401 with the same token, the first invalidation starts a refresh and the
 *   others find a newer token and leave it alone (tracked per fiber with a FiberRef; a fiber that never
 *   called `get` drops whatever is cached).
 * - The token request runs in the cache's own scope, so an interrupted caller does not cancel it for others.
 */
import type { AuthError } from "@ferry/core/Errors"
import {
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
}

interface Entry {
  readonly token: Redacted.Redacted<string>
  readonly generation: number
  /** Epoch millis after which `get` refreshes; undefined = never by time. */
  readonly refreshAt: number | undefined
}

type State =
  | { readonly _tag: "Empty" }
  | { readonly _tag: "Pending"; readonly deferred: Deferred.Deferred<Entry, AuthError> }
  | { readonly _tag: "Ready"; readonly entry: Entry }

const empty: State = { _tag: "Empty" }

/** When to refresh a token fetched at `now` living `lifetime`: before expiry by min(skew, 10 %). */
export const refreshAt = (now: number, lifetime: Duration.Duration, skew: Duration.Duration): number => {
  const life = Duration.toMillis(lifetime)
  const margin = Math.min(Duration.toMillis(skew), life / 10)
  return now + life - margin
}

export const make = Effect.fn("TokenCache.make")(function* (
  fetch: Effect.Effect<AccessToken, AuthError>,
  options: TokenCacheOptions = {},
) {
  const skew = Duration.decode(options.skew ?? Duration.seconds(30))
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
        SynchronizedRef.set(
          state,
          exit._tag === "Success" ? { _tag: "Ready", entry: exit.value } : empty,
        ).pipe(Effect.zipRight(Deferred.done(deferred, exit))),
      ),
    )

  const get = Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const wait = yield* SynchronizedRef.modifyEffect(
      state,
      (s): Effect.Effect<readonly [Effect.Effect<Entry, AuthError>, State]> => {
        if (s._tag === "Ready" && (s.entry.refreshAt === undefined || now < s.entry.refreshAt)) {
          return Effect.succeed([Effect.succeed(s.entry), s] as const)
        }
        if (s._tag === "Pending") return Effect.succeed([Deferred.await(s.deferred), s] as const)
        return Effect.gen(function* () {
          const deferred = yield* Deferred.make<Entry, AuthError>()
          yield* Effect.forkIn(refresh(deferred), scope)
          return [Deferred.await(deferred), { _tag: "Pending", deferred }] as const
        })
      },
    )
    const entry = yield* wait
    yield* FiberRef.set(handedOut, entry.generation)
    return entry.token
  })

  const invalidate = Effect.gen(function* () {
    const seen = yield* FiberRef.get(handedOut)
    const dropped = yield* SynchronizedRef.modify(state, (s): readonly [boolean, State] =>
      s._tag === "Ready" && (seen < 0 || s.entry.generation === seen) ? [true, empty] : [false, s],
    )
    yield* Effect.logDebug(dropped ? "access token invalidated" : "access token already replaced")
  })

  return { get, invalidate } satisfies TokenCache
}) satisfies (
  fetch: Effect.Effect<AccessToken, AuthError>,
  options?: TokenCacheOptions,
) => Effect.Effect<TokenCache, never, Scope.Scope>
