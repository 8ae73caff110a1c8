import { describe, expect, it } from "@effect/vitest"
import { Option } from "effect"
import * as Discovery from "../src/Discovery.js"

const found = (over: Partial<Discovery.TokenEndpoint> = {}): Discovery.TokenEndpoint => ({
  tokenUrl: "https://auth.example.org/token",
  source: "smart-configuration",
  authMethods: Option.some(["private_key_jwt"]),
  signingAlgs: Option.some(["ES384"]),
  grantTypes: Option.some(["client_credentials"]),
  ...over,
})

describe("Discovery.mismatches", () => {
  it("says nothing when the server lists what the client will use", () => {
    expect(Discovery.mismatches(found(), { authMethod: "private_key_jwt", alg: "ES384" })).toEqual([])
  })

  it("says nothing where the server said nothing (a CapabilityStatement, a configured URL)", () => {
    const silent = found({
      authMethods: Option.none(),
      signingAlgs: Option.none(),
      grantTypes: Option.none(),
    })
    expect(Discovery.mismatches(silent, { authMethod: "client_secret_basic" })).toEqual([])
  })

  it("names a grant type list without client_credentials", () => {
    const [warning, ...rest] = Discovery.mismatches(
      found({ grantTypes: Option.some(["authorization_code"]) }),
      {
        authMethod: "private_key_jwt",
        alg: "ES384",
      },
    )
    expect(rest).toEqual([])
    expect(warning).toContain("lists grant types authorization_code, not client_credentials")
  })

  it("names the auth method and the signing algorithm the server does not list", () => {
    const warnings = Discovery.mismatches(found({ signingAlgs: Option.some(["RS384"]) }), {
      authMethod: "client_secret_post",
      alg: "ES384",
    })
    expect(warnings).toHaveLength(2)
    expect(warnings[0]).toContain(
      "does not list client_secret_post among its token endpoint auth methods (private_key_jwt)",
    )
    expect(warnings[1]).toContain("signing algorithms RS384, not ES384")
  })
})
