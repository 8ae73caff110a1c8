import { Option } from "effect"
import type { AuthFlagValues } from "../../src/AuthFlags.js"

/** The auth flags that take a value, none given. */
export const unsetAuthFlags = {
  clientId: Option.none(),
  key: Option.none(),
  alg: Option.none(),
  keyId: Option.none(),
  clientSecretMethod: Option.none(),
  scope: Option.none(),
  tokenUrl: Option.none(),
  bearerEnv: Option.none(),
  bearerFile: Option.none(),
} satisfies Partial<AuthFlagValues>

/** Auth flag values of `auth` with nothing else given (the secret variable named `clientSecretEnv`), then `more`. */
export const authValues = (
  auth: AuthFlagValues["auth"],
  more: Partial<AuthFlagValues> = {},
  clientSecretEnv = "FERRY_CLIENT_SECRET",
): AuthFlagValues => ({
  auth,
  ...unsetAuthFlags,
  clientSecretEnv,
  ...more,
})
