/**
 * The `node:http` server in front of the router: strips the base path, builds a `Ctx`, dispatches.
 */
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { type Ctx, makeCtx, type Router, sendOutcome } from "./Http.js"
import type { Store } from "./Store.js"

export interface ListenOptions {
  readonly host: string
  readonly port: number
  readonly basePath: string
  readonly maxBodyBytes: number
}

export interface RunningServer {
  readonly server: Server
  readonly port: number
  /** e.g. `http://127.0.0.1:43127/fhir` */
  readonly baseUrl: string
  close(): Promise<void>
}

export const listen = (router: Router, store: Store, options: ListenOptions): Promise<RunningServer> =>
  new Promise((resolve, reject) => {
    let baseUrl = ""
    const server = createServer((req, res) => {
      const pathname = (req.url ?? "/").split("?")[0] ?? "/"
      const base = options.basePath
      if (base !== "" && pathname !== base && !pathname.startsWith(`${base}/`)) {
        const ctx: Ctx = makeCtx(req, res, store, baseUrl, pathname, options.maxBodyBytes)
        sendOutcome(ctx, 404, "error", "not-found", `Not under the FHIR base ${base}: ${pathname}`)
        return
      }
      const path = pathname.slice(base.length) || "/"
      void router.dispatch(makeCtx(req, res, store, baseUrl, path, options.maxBodyBytes))
    })
    server.keepAliveTimeout = 5_000
    server.once("error", reject)
    server.listen(options.port, options.host, () => {
      server.off("error", reject)
      const port = (server.address() as AddressInfo).port
      const host = options.host.includes(":") ? `[${options.host}]` : options.host
      baseUrl = `http://${host}:${port}${options.basePath}`
      resolve({
        server,
        port,
        baseUrl,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done())
            server.closeAllConnections()
          }),
      })
    })
  })
