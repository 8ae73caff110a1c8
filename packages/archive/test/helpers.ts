import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import { Effect } from "effect"

/** A fresh temp directory, removed when the scope closes. */
export const tempDir = Effect.acquireRelease(
  Effect.sync(() => NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-archive-"))),
  (dir) => Effect.sync(() => NFS.rmSync(dir, { recursive: true, force: true })),
)

export const mode = (path: string): number => NFS.statSync(path).mode & 0o777
