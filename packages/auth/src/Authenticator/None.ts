/** No authentication: requests go out unchanged (open test servers, the sandbox). */
import { Effect } from "effect"
import type { Authenticator } from "../Authenticator.js"

export const make = (): Authenticator => ({
  authorize: Effect.succeed,
  invalidate: Effect.void,
  describe: "no authentication",
})
