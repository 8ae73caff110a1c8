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
import { digest16 } from "@ferry/core/DigestSet"
import type { Resource } from "@ferry/core/Ids"
import { Deferred, Effect, Option, type Scope } from "effect"
import type { LineSink } from "../Download.js"

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
  /**
   * The Binary with this id, when the export holds it with `data`; with `wait`, after the Binary files under
   * way (not while a file downloads: its connection would idle meanwhile). None: fetch it. A line that cannot
   * be read back is fetched too.
   */
  readonly read: (id: string, wait: boolean) => Effect.Effect<Option.Option<Copied>>
  /** `read` without waiting, synchronously. */
  readonly peek: (id: string) => Option.Option<Copied>
}

interface Place {
  readonly file: number
  readonly offset: number
  readonly bytes: number
}

/** 48 bits of the sha256 of a Binary's id: the table's key (a collision is caught by `copy`'s id check). */
const keyOf = (id: string): number => {
  const d = digest16(id)
  return Buffer.from(d.buffer, d.byteOffset, 6).readUIntBE(0, 6)
}

/**
 * The places of the Binaries, by id, in typed arrays outside the JS heap (a Map of strings and objects was
 * ≈ 120 B a Binary, 5 MB at a 1M export's 43k): appended as files finish, sorted by key when looked up.
 */
class Places {
  private keys = new Float64Array(1024)
  private files = new Uint32Array(1024)
  private offsets = new Float64Array(1024)
  private sizes = new Uint32Array(1024)
  private order = new Int32Array(0)
  private count = 0

  add(id: string, file: number, offset: number, bytes: number): void {
    if (this.count === this.keys.length) {
      const grow = <T extends Float64Array | Uint32Array>(a: T, make: (n: number) => T): T => {
        const b = make(a.length * 2)
        b.set(a)
        return b
      }
      this.keys = grow(this.keys, (n) => new Float64Array(n))
      this.files = grow(this.files, (n) => new Uint32Array(n))
      this.offsets = grow(this.offsets, (n) => new Float64Array(n))
      this.sizes = grow(this.sizes, (n) => new Uint32Array(n))
    }
    const i = this.count++
    this.keys[i] = keyOf(id)
    this.files[i] = file
    this.offsets[i] = offset
    this.sizes[i] = bytes
  }

  get(id: string): Place | undefined {
    if (this.order.length !== this.count) {
      // (a later addition wins over an earlier one of the same key: a file downloaded again)
      const order = Int32Array.from({ length: this.count }, (_, i) => i)
      order.sort((a, b) => this.keys[a]! - this.keys[b]! || b - a)
      this.order = order
    }
    const key = keyOf(id)
    let lo = 0
    let hi = this.order.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.keys[this.order[mid]!]! < key) lo = mid + 1
      else hi = mid
    }
    const at = this.order[lo]
    if (at === undefined || this.keys[at] !== key) return undefined
    return { file: this.files[at]!, offset: this.offsets[at]!, bytes: this.sizes[at]! }
  }
}

/** Bytes read at a time from a Binary file whose lines are copied in order. */
const WINDOW = 256 * 1024

export const make: Effect.Effect<ExportedBinaries, never, Scope.Scope> = Effect.gen(function* () {
  const places = new Places()
  const paths: Array<string> = []
  const fds = new Map<number, number>()
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      for (const fd of fds.values()) NFS.closeSync(fd)
    }),
  )
  let waiting = 0
  let settled = yield* Deferred.make<void>()
  yield* Deferred.succeed(settled, undefined)

  /** Files downloaded again (a new job after expired links) at a path an earlier place points into. */
  const stale = new Set<number>()

  const file: ExportedBinaries["file"] = (path) => {
    for (const [n, p] of paths.entries()) {
      if (p !== path || stale.has(n)) continue
      stale.add(n)
      const fd = fds.get(n)
      if (fd !== undefined) NFS.closeSync(fd)
      fds.delete(n)
    }
    let found: Array<readonly [string, number, number]> = []
    return {
      sink: {
        maxBytes: MAX_LINE,
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
        for (const [id, offset, bytes] of found) places.add(id, n, offset, bytes)
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

  /**
   * The last piece read of a Binary file. A Binary referenced right after the one before it in the same file
   * (attachments met in the order their Binaries were exported) is read with the lines after it, `WINDOW` bytes
   * at a time: one read per 43k copies was ≈ 0.5 s of a 1M export's main thread. Any other place is read alone.
   */
  const window = { file: -1, start: 0, end: 0, buf: Buffer.alloc(0) }
  /** The line at `place`, decoded; undefined when the file is shorter than the place says. */
  const lineText = (place: Place, fd: number): string | undefined => {
    const { file, offset, bytes } = place
    const inWindow = window.file === file && offset >= window.start && offset + bytes <= window.end
    if (!inWindow) {
      const onward = window.file === file && offset >= window.start && offset - window.end < WINDOW
      const size = onward ? Math.max(WINDOW, bytes) : bytes
      if (window.buf.length < size) window.buf = Buffer.allocUnsafeSlow(size)
      // (a read that throws midway leaves the buffer changed: it no longer holds the old piece)
      window.file = -1
      let got = 0
      while (got < size) {
        const n = NFS.readSync(fd, window.buf, got, size - got, offset + got)
        if (n === 0) break
        got += n
      }
      window.file = file
      window.start = offset
      window.end = offset + got
      if (got < bytes) {
        window.file = -1
        return undefined
      }
    }
    const at = offset - window.start
    return window.buf.toString("utf8", at, at + bytes)
  }

  const copy = (id: string, place: Place): Option.Option<Copied> => {
    try {
      let fd = fds.get(place.file)
      if (fd === undefined) {
        fd = NFS.openSync(paths[place.file]!, "r")
        fds.set(place.file, fd)
      }
      const text = lineText(place, fd)
      if (text === undefined) return Option.none()
      const binary = JSON.parse(text) as {
        readonly resourceType?: unknown
        readonly id?: unknown
        readonly data?: unknown
        readonly contentType?: unknown
      }
      // (the file is the one this run checked line by line; anything else here is fetched instead)
      if (binary.resourceType !== "Binary" || binary.id !== id || typeof binary.data !== "string")
        return Option.none()
      return Option.some({
        bytes: Buffer.from(binary.data, "base64"),
        contentType: typeof binary.contentType === "string" ? binary.contentType : undefined,
      })
    } catch {
      // a line that cannot be read back as it was checked (the file replaced since, a read failing): the
      // attachment is fetched from the source instead, as without the Binary file
      return Option.none()
    }
  }

  const lookUp = (id: string): Option.Option<Copied> => {
    const place = places.get(id)
    return place === undefined || stale.has(place.file) ? Option.none() : copy(id, place)
  }

  const read: ExportedBinaries["read"] = (id, wait) =>
    Effect.suspend(() => {
      const now = lookUp(id)
      if (Option.isSome(now) || !wait || waiting === 0) return Effect.succeed(now)
      return Effect.map(Deferred.await(settled), () => lookUp(id))
    })

  return { file, expect, settle, read, peek: lookUp } satisfies ExportedBinaries
})
