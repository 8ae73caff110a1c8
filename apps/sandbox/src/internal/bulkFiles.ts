/** Job directories and NDJSON file serving (Range, gzip, download faults) shared by $export and $import. */
import { createReadStream, mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { ServerResponse } from "node:http"
import { pipeline } from "node:stream/promises"
import { createGzip } from "node:zlib"
import type { Faults } from "../Faults.js"
import { type Ctx, sendOutcome } from "../Http.js"

export const NDJSON = "application/fhir+ndjson"

const liveRoots = new Set<string>()
let exitHook = false

/** A temp root (0700, created on first use) removed on `close()` and, as a last resort, at process exit. */
export class JobDirs {
  private root: string | undefined

  constructor(
    private readonly parent: string | undefined,
    private readonly prefix: string,
  ) {}

  make(jobId: string): string {
    if (this.root === undefined) {
      this.root = mkdtempSync(join(this.parent ?? tmpdir(), this.prefix))
      liveRoots.add(this.root)
      if (!exitHook) {
        exitHook = true
        process.once("exit", () => {
          for (const r of liveRoots) rmSync(r, { recursive: true, force: true })
        })
      }
    }
    const dir = join(this.root, jobId)
    mkdirSync(dir, { mode: 0o700 })
    return dir
  }

  remove(jobId: string): void {
    if (this.root !== undefined) rmSync(join(this.root, jobId), { recursive: true, force: true })
  }

  close(): void {
    if (this.root === undefined) return
    rmSync(this.root, { recursive: true, force: true })
    liveRoots.delete(this.root)
    this.root = undefined
  }
}

const parseRange = (header: string, size: number): { start: number; end: number } | "invalid" | undefined => {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (m === null) return undefined // unsupported forms (several ranges): serve the whole file
  const [, a, b] = m as unknown as [string, string, string]
  if (a === "" && b === "") return "invalid"
  let start: number
  let end: number
  if (a === "") {
    const suffix = Number(b)
    if (suffix === 0) return "invalid"
    start = Math.max(0, size - suffix)
    end = size - 1
  } else {
    start = Number(a)
    end = b === "" ? size - 1 : Math.min(Number(b), size - 1)
  }
  if (start >= size || start > end) return "invalid"
  return { start, end }
}

/** Until `res` can take more, or is closed (a client that went away never drains it). */
const drainedOrClosed = (res: ServerResponse): Promise<void> =>
  new Promise((resolve) => {
    const done = () => {
      res.off("drain", done)
      res.off("close", done)
      resolve()
    }
    res.on("drain", done)
    res.on("close", done)
  })

/**
 * Serves one NDJSON file: 200 (gzip when accepted), 206 for a single `Range`, 416 for an unsatisfiable
 * one, 410 / connection reset / a stall when a download fault says so.
 */
export const serveFile = async (
  ctx: Ctx,
  path: string,
  file: { readonly key: string; readonly type: string; readonly completedAt: number },
  faults: Faults | undefined,
): Promise<void> => {
  const fault = faults?.download(file) ?? {
    gone: false,
    goneStatus: 410,
    resetAfterBytes: undefined,
    stallAfterBytes: undefined,
    delayMs: 0,
  }
  if (fault.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, fault.delayMs))
  if (fault.gone && fault.goneStatus === 403) {
    ctx.res.writeHead(403, { "Content-Type": "application/xml" })
    ctx.res.end(
      '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>',
    )
    return
  }
  if (fault.gone) {
    return sendOutcome(
      ctx,
      fault.goneStatus,
      "error",
      "not-found",
      fault.goneStatus === 404
        ? `No file at this URL (${file.key}).`
        : `The file ${file.key} has expired; fetch the manifest again.`,
    )
  }
  const size = statSync(path).size
  const res = ctx.res
  const head = ctx.req.method === "HEAD"
  res.setHeader("Content-Type", NDJSON)
  res.setHeader("Accept-Ranges", "bytes")
  res.setHeader("Cache-Control", "no-store")
  const rangeHeader = ctx.req.headers.range
  const range = rangeHeader !== undefined ? parseRange(rangeHeader, size) : undefined
  if (range === "invalid") {
    res.setHeader("Content-Range", `bytes */${size}`)
    return sendOutcome(
      ctx,
      416,
      "error",
      "invalid",
      `Range ${rangeHeader} cannot be satisfied (size ${size}).`,
    )
  }
  const cutAfter = fault.resetAfterBytes ?? fault.stallAfterBytes
  if (cutAfter !== undefined) {
    const start = range?.start ?? 0
    const end = range?.end ?? size - 1
    res.writeHead(range ? 206 : 200, {
      "Content-Length": String(end - start + 1),
      ...(range ? { "Content-Range": `bytes ${start}-${end}/${size}` } : {}),
    })
    const cut = Math.min(end, start + cutAfter - 1)
    const socket = res.socket
    if (cut >= start) {
      for await (const chunk of createReadStream(path, { start, end: cut })) {
        // (a client gone away never drains: the file is let go, not waited on for ever)
        if (res.destroyed) break
        if (!res.write(chunk as Buffer)) await drainedOrClosed(res)
      }
    }
    if (res.destroyed) return
    await new Promise<void>((r) => res.write("", () => r()))
    if (fault.resetAfterBytes === undefined) {
      // stalled: nothing more, until the client gives up and closes the connection
      if (!res.destroyed) await new Promise((r) => res.once("close", r))
      return
    }
    // let the peer read what was sent before the RST (an RST can discard unread data on arrival)
    await new Promise((r) => setTimeout(r, 50))
    socket?.resetAndDestroy()
    return
  }
  if (range !== undefined) {
    res.writeHead(206, {
      "Content-Length": String(range.end - range.start + 1),
      "Content-Range": `bytes ${range.start}-${range.end}/${size}`,
    })
    if (head) return void res.end()
    return pipeline(createReadStream(path, { start: range.start, end: range.end }), res)
  }
  const acceptsGzip = /\bgzip\b/i.test(String(ctx.req.headers["accept-encoding"] ?? ""))
  res.setHeader("Vary", "Accept-Encoding")
  if (acceptsGzip) {
    res.writeHead(200, { "Content-Encoding": "gzip" })
    if (head) return void res.end()
    return pipeline(createReadStream(path), createGzip({ level: 1 }), res)
  }
  res.writeHead(200, { "Content-Length": String(size) })
  if (head) return void res.end()
  return pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), res)
}
