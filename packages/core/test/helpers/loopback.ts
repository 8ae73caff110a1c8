import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import type { AddressInfo, Server as NetServer } from "node:net"
import { Effect } from "effect"

export interface Seen {
  readonly url: string
  readonly authorization: string | undefined
  readonly accept: string | undefined
}

/** A node:http server on 127.0.0.1, port 0, closed with the scope; records what each request carried. */
export const loopback = (handler: (req: IncomingMessage, res: ServerResponse, origin: string) => void) =>
  Effect.gen(function* () {
    const seen: Array<Seen> = []
    const server = yield* Effect.acquireRelease(
      Effect.async<Server>((resume) => {
        const s = createServer((req, res) => {
          seen.push({
            url: req.url ?? "",
            authorization: req.headers.authorization,
            accept: req.headers.accept,
          })
          handler(req, res, `http://127.0.0.1:${(s.address() as AddressInfo).port}`)
        })
        s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
      }),
      (s) =>
        Effect.async<void>((resume) => {
          s.closeAllConnections()
          s.close(() => resume(Effect.void))
        }),
    )
    return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen }
  })

/**
 * Listens with any server (http, https, net) on 127.0.0.1, a port the system picks, for the scope, and closes it
 * with the scope; its port.
 */
export const listening = (server: NetServer) =>
  Effect.acquireRelease(
    Effect.async<number>((resume) => {
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as AddressInfo).port)))
    }),
    () =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
      }),
  )
