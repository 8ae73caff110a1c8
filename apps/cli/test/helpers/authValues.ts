import { Option } from "effect"
import type { AuthFlagValues } from "../../src/AuthFlags.js"

/** Auth flag values of `auth` with nothing else given (the secret variable named `clientSecretEnv`), then `more`. */
export const authValues = (
  auth: AuthFlagValues["auth"],
  more: Partial<AuthFlagValues> = {},
  clientSecretEnv = "FERRY_CLIENT_SECRET",
): AuthFlagValues => ({
  auth,
  clientId: Option.none(),
  key: Option.none(),
  alg: Option.none(),
  keyId: Option.none(),
  clientSecretMethod: Option.none(),
  scope: Option.none(),
  tokenUrl: Option.none(),
  bearerEnv: Option.none(),
  bearerFile: Option.none(),
  clientSecretEnv,
  ...more,
})
