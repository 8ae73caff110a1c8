/**
 * Records the fsyncs made through `fs.promises` handles (`sync <path>`; a directory is fsynced through a
 * handle too) and the renames (`rename <to>`), in order, until the scope closes. A power loss can't be staged
 * in a test: what can be checked is that each file and directory is fsynced before the step that trusts it.
 */
import * as NFS from "node:fs"
import { Effect } from "effect"
import { vi } from "vitest"

export const fsyncLog = Effect.acquireRelease(
  Effect.sync(() => {
    const log: Array<string> = []
    const P = NFS.promises
    const open = P.open.bind(P)
    const rename = P.rename.bind(P)
    const spies = [
      vi.spyOn(P, "open").mockImplementation((async (path: string, ...rest: Array<never>) => {
        const handle = await open(path, ...rest)
        const sync = handle.sync.bind(handle)
        handle.sync = async () => {
          await sync()
          log.push(`sync ${path}`)
        }
        return handle
      }) as never),
      vi.spyOn(P, "rename").mockImplementation((async (from: string, to: string) => {
        await rename(from, to)
        log.push(`rename ${to}`)
      }) as never),
    ]
    return { log, spies }
  }),
  ({ spies }) =>
    Effect.sync(() => {
      for (const s of spies) s.mockRestore()
    }),
).pipe(Effect.map(({ log }) => log))
