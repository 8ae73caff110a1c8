/**
 * A server's FHIR base as given on the command line, in a config file or in the environment: absolute,
 * http(s), and without a user name or password (Ferry prints base URLs and keeps them in archives, event
 * logs and folder names). One check for every command, so that every command refuses the same URLs.
 */
import { redactUrl } from "@ferry/core/Http"
import { Either } from "effect"

/**
 * The base without trailing slashes, or the end of a sentence that starts with the URL (as `shown` gives
 * it): what is wrong and what to do. `whose` names the server in the advice ("the target's").
 */
export const parse = (raw: string, whose = "the server's"): Either.Either<string, string> => {
  let u: URL
  try {
    u = new URL(raw)
  } catch {
    return Either.left(`is not an absolute URL; pass ${whose} FHIR base, e.g. https://fhir.example.org/r4`)
  }
  if (!/^https?:$/.test(u.protocol)) return Either.left(`is not an http(s) URL; pass ${whose} FHIR base`)
  if (u.username !== "" || u.password !== "")
    return Either.left(
      "holds a user name or password, which Ferry would print and store; remove it and give the credentials with the auth options (see --help)",
    )
  return Either.right(u.toString().replace(/\/+$/, ""))
}

/** The URL as a message may show it: without user name, password or secret-looking query parameters. */
export const shown = (raw: string): string => redactUrl(raw)
