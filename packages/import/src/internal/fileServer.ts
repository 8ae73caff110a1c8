/**
 * A short-lived HTTP server that lets an `$import` target pull the archive's data files.
 *
 * - It serves ONLY the files it was given, looked up by exact request path (`/data/Patient.000.ndjson`):
 *   nothing is ever joined onto the file system from a request, so `..`, absolute paths and encoded
 *   variants (`%2e%2e`, `%2F`) simply do not match and get 404.
 * - Every request needs the per-run token, in one of two forms:
 *   - a header: `Authorization: Bearer <token>` (SMART `storageDetail.accessToken`) or
 *     `Authorization: Basic base64("ferry:<token>")` (HAPI `credentialHttpBasic`); URLs then hold no secret;
 *   - a path segment: `/<token>/data/Patient.000.ndjson`, for targets that cannot send credentials (the
 *     URL itself is the secret, so it must be kept out of logs).
 *   Without a valid token the answer is 401 and nothing tells whether the path exists.
 * - `Content-Type: application/fhir+ndjson`; a gzip file is sent as is with `Content-Encoding: gzip` when
 *   the request accepts gzip, else decompressed on the fly.
 * - The scope owns the server: closing it closes the listener and every open connection.
 */
import { createHash, timingSafeEqual } from "node:crypto"
import { createReadStream, promises as FSP, readFileSync } from "node:fs"
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import { type AddressInfo, isIP } from "node:net"
import * as Path from "node:path"
import { pipeline } from "node:stream"
import { createGunzip } from "node:zlib"
import { Effect, Redacted, type Scope } from "effect"
import { ImportError } from "../ImportError.js"

export interface ServedFile {
  /** Relative to the archive root, `/`-separated, e.g. `data/Patient.000.ndjson.gz`. */
  readonly path: string
  readonly compression: "none" | "gzip"
}

export interface FileServerOptions {
  readonly archiveDir: string
  readonly files: ReadonlyArray<ServedFile>
  readonly token: Redacted.Redacted<string>
  /** Interface to bind (default 127.0.0.1). */
  readonly host?: string
  /** Port (default 0: the OS picks one). */
  readonly port?: number
  /** The base URL the target uses to reach this server (default `http://<host>:<port>`). */
  readonly publicUrl?: string
}

export interface FileServerStats {
  /** Requests answered with a file. */
  readonly served: number
  /** Requests refused (no or wrong token: 401; unlisted path: 404; other method: 405). */
  readonly refused: number
  /** Of `refused`, those without the token (401). */
  readonly unauthorized: number
}

export interface FileServer {
  /** e.g. `http://127.0.0.1:41234` (no trailing slash). */
  readonly baseUrl: string
  /** The URL of a listed file; `"path"` puts the token in the URL (a secret: keep it out of logs). */
  readonly urlOf: (path: string, tokenIn: "header" | "path") => string
  readonly stats: () => FileServerStats
}

/** `data/Patient.000.ndjson`: relative, `/`-separated, no empty, `.` or `..` segments, no odd characters. */
const SAFE_PATH = /^(?:[A-Za-z0-9_-][A-Za-z0-9._-]*\/)*[A-Za-z0-9_-][A-Za-z0-9._-]*$/

const digest = (s: string): Buffer => createHash("sha256").update(s, "utf8").digest()

/** Constant-time comparison (both sides hashed first so lengths match). */
const sameSecret = (given: string, expected: Buffer): boolean => timingSafeEqual(digest(given), expected)

const acceptsGzip = (header: string | undefined): boolean => {
  if (header === undefined) return false
  return header
    .split(",")
    .map((p) => p.trim().toLowerCase())
    .some((p) => {
      const [name, ...params] = p.split(";").map((x) => x.trim())
      if (name !== "gzip" && name !== "*") return false
      const q = params.find((x) => x.startsWith("q="))
      return q === undefined || Number(q.slice(2)) > 0
    })
}

const end = (res: ServerResponse, status: number, headers: Record<string, string> = {}) => {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", ...headers })
  res.end(status === 401 ? "unauthorized\n" : status === 404 ? "not found\n" : "method not allowed\n")
}

/** Starts the server in the current scope. Fails with ImportError (Archive: a listed file is missing; Config: cannot listen). */
export const start = (options: FileServerOptions): Effect.Effect<FileServer, ImportError, Scope.Scope> =>
  Effect.gen(function* () {
    const root = Path.resolve(options.archiveDir)
    const byPath = new Map<string, { readonly abs: string; readonly size: number; readonly gzip: boolean }>()
    for (const f of options.files) {
      if (!SAFE_PATH.test(f.path)) {
        return yield* new ImportError({
          reason: "Archive",
          url: root,
          detail: `the manifest lists the file path ${JSON.stringify(f.path)}, which is not a plain relative path; the archive is damaged, export it again`,
        })
      }
      const abs = Path.join(root, ...f.path.split("/"))
      const stat = yield* Effect.tryPromise({
        try: () => FSP.stat(abs),
        catch: (cause) =>
          new ImportError({
            reason: "Archive",
            url: root,
            detail: `${f.path} is listed in manifest.json but cannot be read (${cause instanceof Error && "code" in cause ? String(cause.code) : "error"}); the archive is incomplete, resume the export or export again`,
            cause,
          }),
      })
      if (!stat.isFile()) {
        return yield* new ImportError({
          reason: "Archive",
          url: root,
          detail: `${f.path} is listed in manifest.json but is not a regular file; the archive is damaged, export it again`,
        })
      }
      byPath.set(`/${f.path}`, { abs, size: stat.size, gzip: f.compression === "gzip" })
    }

    const secret = Redacted.value(options.token)
    const expected = digest(secret)
    let served = 0
    let refused = 0
    let unauthorized = 0

    const authorized = (header: string | undefined): boolean => {
      if (header === undefined) return false
      const space = header.indexOf(" ")
      if (space < 0) return false
      const scheme = header.slice(0, space).toLowerCase()
      const value = header.slice(space + 1).trim()
      if (scheme === "bearer") return sameSecret(value, expected)
      if (scheme === "basic") {
        const decoded = Buffer.from(value, "base64").toString("utf8")
        const colon = decoded.indexOf(":")
        return (
          colon >= 0 && decoded.slice(0, colon) === "ferry" && sameSecret(decoded.slice(colon + 1), expected)
        )
      }
      return false
    }

    const handle = (req: IncomingMessage, res: ServerResponse) => {
      const raw = req.url ?? ""
      const q = raw.indexOf("?")
      const path = q < 0 ? raw : raw.slice(0, q)
      let listed: string | undefined
      if (authorized(req.headers.authorization)) {
        listed = path
      } else if (path.startsWith("/")) {
        const slash = path.indexOf("/", 1)
        if (slash > 1 && sameSecret(path.slice(1, slash), expected)) listed = path.slice(slash)
      }
      if (listed === undefined) {
        refused++
        unauthorized++
        return end(res, 401, { "www-authenticate": 'Bearer realm="ferry", Basic realm="ferry"' })
      }
      if (req.method !== "GET" && req.method !== "HEAD") {
        refused++
        return end(res, 405, { allow: "GET, HEAD" })
      }
      const file = byPath.get(listed)
      if (file === undefined) {
        refused++
        return end(res, 404)
      }
      served++
      const passGzip = file.gzip && acceptsGzip(req.headers["accept-encoding"])
      const headers: Record<string, string> = {
        "content-type": "application/fhir+ndjson",
        "cache-control": "no-store",
        ...(file.gzip ? { vary: "accept-encoding" } : {}),
        ...(passGzip ? { "content-encoding": "gzip" } : {}),
        ...(!file.gzip || passGzip ? { "content-length": String(file.size) } : {}),
      }
      if (req.method === "HEAD") {
        res.writeHead(200, headers)
        res.end()
        return
      }
      res.writeHead(200, headers)
      const source = createReadStream(file.abs)
      // The file was there at start; a read failure now can only cut the body short.
      const done = (err: NodeJS.ErrnoException | null) => {
        if (err) res.destroy()
      }
      if (file.gzip && !passGzip) pipeline(source, createGunzip(), res, done)
      else pipeline(source, res, done)
    }

    const host = options.host ?? "127.0.0.1"
    const port = options.port ?? 0
    const nowhere = wildcardProblem(host, options.publicUrl)
    if (nowhere !== undefined)
      return yield* new ImportError({
        reason: "Config",
        url: `http://${urlHost(host)}:${port}`,
        detail: nowhere,
      })
    const server = createServer(handle)
    yield* Effect.acquireRelease(
      Effect.async<void, ImportError>((resume) => {
        const onError = (cause: Error) =>
          resume(
            Effect.fail(
              new ImportError({
                reason: "Config",
                url: `http://${urlHost(host)}:${port}`,
                detail: `could not serve the archive files on ${urlHost(host)}:${port} (${code(cause) ?? cause.message}): ${listenAdvice(code(cause), host)}`,
                cause,
              }),
            ),
          )
        server.once("error", onError)
        server.listen(port, listenHost(host), () => {
          server.off("error", onError)
          resume(Effect.void)
        })
      }),
      () =>
        Effect.async<void>((resume) => {
          server.close(() => resume(Effect.void))
          server.closeAllConnections()
        }),
    )
    const address = server.address() as AddressInfo
    const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address
    const baseUrl = (options.publicUrl ?? `http://${shownHost}:${address.port}`).replace(/\/+$/, "")
    return {
      baseUrl,
      urlOf: (path, tokenIn) => (tokenIn === "path" ? `${baseUrl}/${secret}/${path}` : `${baseUrl}/${path}`),
      stats: () => ({ served, refused, unauthorized }),
    } satisfies FileServer
  })

const code = (cause: Error): string | undefined =>
  "code" in cause && typeof cause.code === "string" ? cause.code : undefined

/** The kernel's range of ports for outgoing connections, or undefined where it cannot be read (not Linux). */
export const ephemeralPorts = (): readonly [number, number] | undefined => {
  try {
    const [low, high] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8")
      .trim()
      .split(/\s+/)
      .map(Number)
    return low !== undefined && high !== undefined && Number.isInteger(low) && Number.isInteger(high)
      ? [low, high]
      : undefined
  } catch {
    return undefined
  }
}

/** What to do when the file server cannot listen on `host:port`, by the error's code. */
export const listenAdvice = (errorCode: string | undefined, host: string): string => {
  if (errorCode === "EADDRNOTAVAIL")
    return `${host} is not an address of this machine; pass one of its own as --serve-host (and the address the target reaches it by as --serve-public-url)`
  if (errorCode === "ENOTFOUND" || errorCode === "EAI_AGAIN")
    return `the name ${host} could not be resolved (${errorCode === "EAI_AGAIN" ? "the name service did not answer" : "no such name"}); pass an address of this machine as --serve-host`
  if (errorCode === "EACCES")
    return "this process may not listen there (a port below 1024 needs privileges); choose another --serve-port"
  if (errorCode === "EADDRINUSE") {
    const range = ephemeralPorts()
    return `the port is in use; choose another --serve-port${range === undefined ? "" : `, one outside the system's range for outgoing connections (${range[0]}–${range[1]}), which Ferry's own connections may hold`}`
  }
  return "choose another --serve-host or --serve-port, or publish the files yourself (ferry import --file-base-url)"
}

/** The host as a URL writes it: an IPv6 address in brackets. */
const urlHost = (host: string): string => {
  const h = listenHost(host)
  return isIP(h) === 6 ? `[${h}]` : h
}

/** The host as `listen` takes it: an IPv6 address without its URL brackets. */
export const listenHost = (host: string): string =>
  host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host

/** Whether the host means every interface of this machine (`0.0.0.0`, `::`, `::0`, …). */
export const allInterfaces = (host: string): boolean => {
  const h = listenHost(host)
  return h === "" || h === "0" || (isIP(h) !== 0 && !/[1-9a-f]/i.test(h))
}

/** Why a server on all interfaces cannot work without a public URL (the target gets no address), or undefined. */
export const wildcardProblem = (host: string, publicUrl: string | undefined): string | undefined =>
  allInterfaces(host) && publicUrl === undefined
    ? `serving on all interfaces (${host}) gives the target no address to fetch from; also pass the public URL it must use (--serve-public-url), e.g. https://ferry-host.example.org`
    : undefined
