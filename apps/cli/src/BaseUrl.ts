/**
 * A server's FHIR base as given on the command line, in a config file or in the environment: absolute,
 * http(s), and without a user name or password (Ferry prints base URLs and keeps them in archives, event
 * logs and folder names). One check for every command, so that every command refuses the same URLs.
 */
import * as Dns from "node:dns/promises"
import * as Net from "node:net"
import { redactUrl } from "@ferry/core/Http"
import { Effect, Either } from "effect"

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
  if (u.search !== "" || u.hash !== "" || /[?#]/.test(raw))
    return Either.left(
      `holds a ${u.hash !== "" || (u.search === "" && raw.includes("#")) ? "fragment (#…)" : "query (?…)"}, which a FHIR base has not (Ferry adds paths to it, and would print and store a credential in it); give the base alone, e.g. https://fhir.example.org/r4, and the credentials with the auth options (see --help)`,
    )
  return Either.right(u.toString().replace(/\/+$/, ""))
}

/** The URL as a message may show it: without user name, password or secret-looking query parameters. */
export const shown = (raw: string): string => redactUrl(raw)

/** An address for comparing: IPv4-mapped IPv6 (`::ffff:127.0.0.1`, `::ffff:7f00:1`) as IPv4, lower case. */
const hostKey = (address: string): string => {
  const a = address.toLowerCase()
  if (a.startsWith("::ffff:") && Net.isIPv4(a.slice(7))) return a.slice(7)
  const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(a)
  if (hex === null) return a
  const hi = Number.parseInt(hex[1]!, 16)
  const lo = Number.parseInt(hex[2]!, 16)
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`
}

/** The addresses a host name (or literal address) stands for; none when it does not resolve. */
const addressesOf = (host: string): Effect.Effect<ReadonlySet<string>> => {
  const bare = host.replace(/^\[|\]$/g, "")
  if (Net.isIP(bare) !== 0) return Effect.succeed(new Set([hostKey(bare)]))
  return Effect.promise(() =>
    Dns.lookup(bare, { all: true }).then(
      (found) => new Set(found.map((a) => hostKey(a.address))),
      () => new Set<string>(),
    ),
  ).pipe(Effect.timeoutTo({ duration: "2 seconds", onTimeout: () => new Set<string>(), onSuccess: (s) => s }))
}

/** A host given as an address, or `localhost`: what is reached there is the one process on that port. */
export const direct = (host: string): boolean => {
  const bare = host.replace(/^\[|\]$/g, "").toLowerCase()
  return Net.isIP(bare) !== 0 || bare === "localhost"
}

/**
 * Whether two (parsed) bases name the same server: the same scheme, port and path, on host names that are
 * equal, or, when either is an address or `localhost`, that resolve to a common address (`localhost` and
 * `127.0.0.1` are one server; a migration between them would write the source's data back into the
 * source). Two other names on one address are not compared that way: a load balancer or ingress serves
 * many servers by name on one address. A name that does not resolve (within 2 s) is taken as another
 * server (the run then fails to reach it, saying so).
 */
export const sameServer = (a: string, b: string): Effect.Effect<boolean> =>
  Effect.gen(function* () {
    const x = new URL(a)
    const y = new URL(b)
    const path = (u: URL) => u.pathname.replace(/\/+$/, "")
    const port = (u: URL) => u.port || (u.protocol === "https:" ? "443" : "80")
    if (x.protocol !== y.protocol || port(x) !== port(y) || path(x) !== path(y)) return false
    if (x.hostname.toLowerCase() === y.hostname.toLowerCase()) return true
    if (!direct(x.hostname) && !direct(y.hostname)) return false
    const [ax, ay] = yield* Effect.all([addressesOf(x.hostname), addressesOf(y.hostname)], {
      concurrency: 2,
    })
    for (const address of ax) if (ay.has(address)) return true
    return false
  })
