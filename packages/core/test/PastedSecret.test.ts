import { describe, expect, it } from "vitest"
import { isPastedSecret } from "../src/PastedSecret.js"

describe("isPastedSecret", () => {
  it("takes keys and tokens for what they are, and odd but real file names for paths", () => {
    for (const secret of [
      '{"kty":"EC","crv":"P-384","d":"x"}',
      "-----BEGIN PRIVATE KEY-----",
      "line one\nline two",
      "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJmZXJyeSJ9.c2ln",
      `keys/${"a".repeat(256)}`,
      // a config file's value resolved against its folder
      '/etc/ferry/{"kty":"EC","crv":"P-384","d":"x"}',
      "/etc/ferry/eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJmZXJyeSJ9.c2ln",
      "Bearer abc.def",
      "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d",
    ])
      expect(isPastedSecret(secret), secret).toBe(true)
    for (const path of [
      "key.jwk",
      "/etc/ferry/client-key.pem",
      "[2024] keys/key.jwk",
      "{project}/key.jwk",
      "C:\\keys\\key.jwk",
      "token.eyJ.txt",
    ])
      expect(isPastedSecret(path), path).toBe(false)
  })
})
