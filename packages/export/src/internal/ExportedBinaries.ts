/**
 * The source's Binaries that the export holds as resources, by id: where each one's line is in its finished data
 * file. An attachment whose URL is the source's own `Binary/[id]` is then copied from that line (its `data`,
 * base64: the bytes a raw read of the Binary returns, and as of the export's transactionTime) instead of being
 * fetched again, one request less at the source for each.
 *
 * The export downloads its Binary files before every other file (`Export.ts`), so an attachment that waits for
 * them (`read`) waits only while they download. What is not found (a Binary without `data`, a line larger than
 * `MAX_LINE`, a file an earlier run downloaded, a gzip-written archive) is fetched as before.
 */
import * as NFS from "node:fs"
import type { Resource } from "@ferry/core/Ids"
import { Deferred, Effect, Option, type Scope } from "effect"
import type { LineSink } from "../Download.js"
import type { ExportError } from "../ExportError.js"
import { ioError } from "./ArchiveDir.js"

/** Lines up to this size are copied (a bigger Binary is fetched: its body is then streamed, not held). */
export const MAX_LINE = 2 * 1024 * 1024

/** The content of one exported Binary. */
export interface Copied {
  readonly bytes: Uint8Array
  readonly contentType: string | undefined
}

export interface ExportedBinaries {
  /**
   * The sink for one Binary data file while it downloads (`DownloadTarget.lines`), and what makes its lines
   * known once the file is finished at `path` (plain, not gzip-written).
   */
  readonly file: (path: string) => { readonly sink: LineSink; readonly finished: Effect.Effect<void> }
  /**
   * `files` Binary files are being downloaded: `read` waits until each one is `finished` or `settle` is
   * called (the attempt that downloads them ended, in whatever way).
   */
  readonly expect: (files: number) => Effect.Effect<void>
  readonly settle: Effect.Effect<void>
  /** The Binary with this id, when the export holds it with `data` (after the Binary files under way). */
  readonly read: (id: string) => Effect.Effect<Option.Option<Copied>, ExportError>
}

interface Place {
  readonly file: number
  readonly offset: number
  readonly bytes: number
}

export const make: Effect.Effect<ExportedBinaries, never, Scope.Scope> = Effect.gen(function* () {
  const places = new Map<string, Place>()
  const paths: Array<string> = []
  const fds = new Map<number, number>()
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      for (const fd of fds.values()) NFS.close(fd, () => undefined)
    }),
  )
  let waiting = 0
  let settled = yield* Deferred.make<void>()
  yield* Deferred.succeed(settled, undefined)

  const file: ExportedBinaries["file"] = (path) => {
    let found: Array<readonly [string, number, number]> = []
    return {
      sink: {
        reset: () => {
          found = []
        },
        line: (resource: Resource, offset: number, bytes: number) => {
          const data = (resource as { readonly data?: unknown }).data
          if (typeof resource.id === "string" && typeof data === "string" && bytes <= MAX_LINE)
            found.push([resource.id, offset, bytes])
        },
      },
      finished: Effect.suspend(() => {
        const n = paths.push(path) - 1
        for (const [id, offset, bytes] of found) places.set(id, { file: n, offset, bytes })
        found = []
        waiting = Math.max(0, waiting - 1)
        return waiting === 0 ? Deferred.succeed(settled, undefined) : Effect.void
      }),
    }
  }

  const expect = (files: number) =>
    Effect.gen(function* () {
      waiting = files
      settled = yield* Deferred.make<void>()
      if (files === 0) yield* Deferred.succeed(settled, undefined)
    })

  const settle = Effect.suspend(() => {
    waiting = 0
    return Deferred.succeed(settled, undefined)
  })

  const copy = (id: string, place: Place) =>
    Effect.try({
      try: (): Option.Option<Copied> => {
        let fd = fds.get(place.file)
        if (fd === undefined) {
          fd = NFS.openSync(paths[place.file]!, "r")
          fds.set(place.file, fd)
        }
        const buf = Buffer.allocUnsafe(place.bytes)
        let got = 0
        while (got < place.bytes) {
          const n = NFS.readSync(fd, buf, got, place.bytes - got, place.offset + got)
          if (n === 0) break
          got += n
        }
        const value: unknown = JSON.parse(buf.toString("utf8", 0, got))
        const binary = value as {
          resourceType?: unknown
          id?: unknown
          data?: unknown
          contentType?: unknown
        }
        // (the file is the one this run checked line by line; anything else here is fetched instead)
        if (binary.resourceType !== "Binary" || binary.id !== id || typeof binary.data !== "string")
          return Option.none()
        return Option.some({
          bytes: Buffer.from(binary.data, "base64"),
          contentType: typeof binary.contentType === "string" ? binary.contentType : undefined,
        })
      },
      catch: (e) =>
        e instanceof SyntaxError
          ? e
          : ioError(paths[place.file] ?? "a Binary data file", "read a Binary back")(e),
    }).pipe(
      Effect.catchIf(
        (e): e is SyntaxError => e instanceof SyntaxError,
        () => Effect.succeed(Option.none<Copied>()),
      ),
    )

  const read: ExportedBinaries["read"] = (id) =>
    Effect.suspend(() => {
      const place = places.get(id)
      if (place !== undefined) return copy(id, place)
      if (waiting === 0) return Effect.succeed(Option.none())
      return Effect.flatMap(Deferred.await(settled), () => {
        const later = places.get(id)
        return later === undefined ? Effect.succeed(Option.none<Copied>()) : copy(id, later)
      })
    })

  return { file, expect, settle, read } satisfies ExportedBinaries
})
