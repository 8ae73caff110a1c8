/**
 * The SMART Backend Services client assertion (RFC 7523 `private_key_jwt`): one fresh JWT per token request.
 */
import { randomUUID } from "node:crypto"
import { AuthError } from "@ferry/core/Errors"
import { Clock, Duration, Effect, Redacted } from "effect"
import * as Jose from "./internal/jose.js"
import type { SigningKey } from "./Keys.js"

/** SMART caps the assertion lifetime at five minutes. */
export const MAX_LIFETIME: Duration.Duration = Duration.minutes(5)
export const DEFAULT_LIFETIME: Duration.Duration = Duration.minutes(4)

export interface AssertionOptions {
  readonly clientId: string
  /** The token endpoint URL, exactly as it will be POSTed to. */
  readonly audience: string
  /** How long the assertion is valid; default 4 minutes, at most 5. */
  readonly lifetime?: Duration.DurationInput | undefined
}

/**
 * Sign a client assertion: header `alg`, `kid`, `typ: JWT`; claims iss = sub = clientId, aud = token URL,
 * a random `jti`, `iat` and `exp` from the Effect Clock.
 */
export const sign = Effect.fn("Assertion.sign")(function* (key: SigningKey, options: AssertionOptions) {
  const lifetime = Duration.decode(options.lifetime ?? DEFAULT_LIFETIME)
  if (Duration.greaterThan(lifetime, MAX_LIFETIME) || Duration.lessThanOrEqualTo(lifetime, Duration.zero)) {
    return yield* new AuthError({
      reason: "Config",
      detail: `The client assertion lifetime must be more than 0 and at most 5 minutes (SMART Backend Services), not ${Duration.format(lifetime)}`,
    })
  }
  const now = Math.floor((yield* Clock.currentTimeMillis) / 1000)
  const jwt = yield* Jose.signJwt({
    key: key.key,
    alg: key.alg,
    kid: key.kid,
    clientId: options.clientId,
    audience: options.audience,
    jti: randomUUID(),
    issuedAt: now,
    expiresAt: now + Math.floor(Duration.toSeconds(lifetime)),
  })
  return Redacted.make(jwt)
}) satisfies (
  key: SigningKey,
  options: AssertionOptions,
) => Effect.Effect<Redacted.Redacted<string>, AuthError>
