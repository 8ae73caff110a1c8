/**
 * The `--serve-*` flags of `ferry import` and `ferry migrate` (`--strategy import`): where Ferry's file server
 * binds and how the target reaches it and proves it may fetch the files. `ferry import` adds `--file-base-url`
 * (files published elsewhere), which a migration cannot use: its files are always rewritten for the target.
 */
import * as Net from "node:net"
import { Options } from "@effect/cli"
import * as BulkImport from "@ferry/import/BulkImport"
import { ImportError } from "@ferry/import/ImportError"
import { Console, Effect, Either, Option } from "effect"
import * as BaseUrl from "./BaseUrl.js"

export const serveFlags = {
  serveHost: Options.text("serve-host").pipe(
    Options.optional,
    Options.withDescription(
      "--strategy import: the address Ferry's file server binds, one the target can reach (default 127.0.0.1); it speaks plain http, so another host needs a TLS proxy in front and --serve-public-url https://….",
    ),
  ),
  servePort: Options.integer("serve-port").pipe(
    Options.optional,
    Options.withDescription("--strategy import: the file server's port (default: one the system picks)."),
  ),
  servePublicUrl: Options.text("serve-public-url").pipe(
    Options.optional,
    Options.withDescription(
      "--strategy import: scheme://host:port the target must use to reach the file server (behind NAT or a proxy).",
    ),
  ),
  serveTokenIn: Options.choice("serve-token-in", ["header", "path"]).pipe(
    Options.optional,
    Options.withDescription(
      "--strategy import: how the target proves it may fetch the files: header (credentials in the kick-off, default) or path (an unguessable URL segment, for targets that send none).",
    ),
  ),
}

export interface ServeFlagValues {
  readonly serveHost: Option.Option<string>
  readonly servePort: Option.Option<number>
  readonly servePublicUrl: Option.Option<string>
  readonly serveTokenIn: Option.Option<"header" | "path">
}

const usage = (detail: string) => new ImportError({ reason: "Config", detail })

/**
 * Where a `$import` target fetches the files; undefined: the defaults. `strategy` is the strategy asked for
 * (the flags go with `import` only); `fileBaseUrl` is given by `ferry import`, which has `--file-base-url`.
 */
export const serveOptions = (
  f: ServeFlagValues,
  strategy: string,
  fileBaseUrl?: { readonly value: string | undefined },
): Effect.Effect<BulkImport.ServeOptions | undefined, ImportError> =>
  Effect.gen(function* () {
    const host = Option.getOrUndefined(f.serveHost)
    const port = Option.getOrUndefined(f.servePort)
    const publicUrl = Option.getOrUndefined(f.servePublicUrl)
    const tokenIn = Option.getOrUndefined(f.serveTokenIn)
    const serving = [host, port, publicUrl, tokenIn].some((v) => v !== undefined)
    if ((serving || fileBaseUrl?.value !== undefined) && strategy !== "import")
      return yield* usage(
        fileBaseUrl === undefined
          ? "--serve-host, --serve-port, --serve-public-url and --serve-token-in go with --strategy import"
          : "--serve-host, --serve-port, --serve-public-url, --serve-token-in and --file-base-url go with --strategy import",
      )
    if (fileBaseUrl?.value !== undefined) {
      if (serving)
        return yield* usage(
          "--file-base-url means Ferry serves no files: leave out the --serve-* flags, or --file-base-url",
        )
      const parsed = BaseUrl.parse(fileBaseUrl.value)
      if (Either.isLeft(parsed))
        return yield* usage(
          `--file-base-url ${BaseUrl.shown(fileBaseUrl.value)} is not an absolute http(s) URL without credentials; pass where the archive's files are published, e.g. https://files.example.org/archive`,
        )
      return { fileBaseUrl: parsed.right }
    }
    if (port !== undefined && (port < 0 || port > 65535))
      return yield* usage(`--serve-port ${port} is not a port number (0–65535; 0 lets the system pick)`)
    if (publicUrl !== undefined) {
      const url = Option.getOrUndefined(Option.liftThrowable(() => new URL(publicUrl))())
      if (url === undefined || !/^https?:$/.test(url.protocol))
        return yield* usage(
          `--serve-public-url ${BaseUrl.shown(publicUrl)} is not an http(s) URL; pass the address the target reaches the file server by, e.g. https://files.example.org`,
        )
      if (url.username !== "" || url.password !== "")
        return yield* usage(
          `--serve-public-url ${BaseUrl.shown(publicUrl)} holds a user name or password, which Ferry would hand to the target and print; leave them out (the target proves itself with the token: --serve-token-in)`,
        )
      if (url.search !== "" || url.hash !== "")
        return yield* usage(
          `--serve-public-url ${BaseUrl.shown(publicUrl)} has a query or fragment, which the files' URLs cannot follow; pass scheme://host:port (and a path, if a proxy serves under one)`,
        )
    }
    if (!serving) return undefined
    const serve = {
      ...(host !== undefined ? { host } : {}),
      ...(port !== undefined ? { port } : {}),
      ...(publicUrl !== undefined ? { publicUrl } : {}),
      ...(tokenIn !== undefined ? { tokenIn } : {}),
    }
    // what would stop the $import job only once its files are ready: refused now, before anything is sent
    const problem = BulkImport.serveProblem(serve)
    if (problem !== undefined) return yield* usage(problem)
    yield* tryListen(host, port)
    return serve
  })

/**
 * The file server's address is tried now (bound and let go), so an address that is not this machine's, or a
 * port in use, fails before the export starts. A fixed port in the system's range for outgoing connections can
 * still be taken by one of Ferry's own connections before a later wave binds it: said so.
 */
const tryListen = (host: string | undefined, port: number | undefined): Effect.Effect<void, ImportError> =>
  Effect.async<void, ImportError>((resume) => {
    const server = Net.createServer()
    const at = host ?? "127.0.0.1"
    const flags = [
      ...(host !== undefined ? [`--serve-host ${host}`] : []),
      ...(port !== undefined ? [`--serve-port ${port}`] : []),
    ]
    const where = flags.length > 0 ? flags.join(" ") : `the file server (on ${at})`
    server.once("error", (cause: NodeJS.ErrnoException) =>
      resume(
        Effect.fail(
          new ImportError({
            reason: "Config",
            detail: `${where}: the file server cannot listen there (${cause.code ?? cause.message}); ${BulkImport.listenAdvice(cause.code, at)}`,
            cause,
          }),
        ),
      ),
    )
    server.listen(port ?? 0, BulkImport.listenHost(at), () => server.close(() => resume(Effect.void)))
  }).pipe(
    Effect.zipRight(
      Effect.suspend(() => {
        const range = BulkImport.ephemeralPorts()
        return port !== undefined && port !== 0 && range !== undefined && port >= range[0] && port <= range[1]
          ? Console.error(
              `ferry: warning: --serve-port ${port} is in the system's range for outgoing connections (${range[0]}–${range[1]}): one of Ferry's own connections may hold it when the file server starts; a port outside it is safer`,
            )
          : Effect.void
      }),
    ),
  )
