/**
 * Downloading one NDJSON file of a manifest into the archive:
 * - the raw bytes stream into `<final>.partial` (mode 0600; not `.part`, which the archive lock removes as
 *   a crashed writer's leftover, while a partial download is worth resuming);
 * - after a crash or a connection reset, the `.partial` file is cut back to its last complete line and the
 *   rest is asked for with `Range: bytes=N-` (a 200 instead of 206 restarts from zero, a 416 means the
 *   part is already complete);
 * - in the same pass as the bytes arrive, every line is checked to be a resource of the announced type,
 *   counted (against the manifest `count`) and hashed (sha256); a resumed transfer first scans the part it
 *   keeps, before it asks for the rest: a part that does not check out is local damage (a page a power loss
 *   zeroed), not the server's doing, so it is deleted and the file downloaded from the start. Once complete
 *   the file is fsynced and renamed (or gzip-written, a second pass) to its final name, and its directory
 *   fsynced.
 * Content-Encoding gzip/deflate/br is decoded here (the HTTP client hands over the bytes as sent).
 */
import { createHash } from "node:crypto"
import * as NFS from "node:fs"
import { pipeline as pipelineCb, Readable } from "node:stream"
import * as Archive from "@ferry/archive/Archive"
import type { ArchiveError } from "@ferry/archive/ArchiveError"
import { type AuthError, FhirError } from "@ferry/core/Errors"
import type { FhirClient } from "@ferry/core/FhirClient"
import { bodyFailure, discardBody, isPermanentTransport, redactUrl, transportProblem } from "@ferry/core/Http"
import type { Resource } from "@ferry/core/Ids"
import * as Ndjson from "@ferry/core/Ndjson"
import { Duration, Effect, Schedule, Stream } from "effect"
import { ExportError } from "./ExportError.js"
import { decoderFor } from "./internal/Encoding.js"

export interface DownloadTarget {
  readonly url: string
  /** The resource type every line must have ("Bundle" for deleted, "OperationOutcome" for error files). */
  readonly type: string | undefined
  /** The manifest's `count`, when given. */
  readonly count: number | undefined
  /** Absolute path of the finished file. The download goes to `<path>.partial` first. */
  readonly path: string
  /** Name used in messages (archive-relative). */
  readonly label: string
  /** gzip the finished file (the `.partial` stays plain). */
  readonly gzip?: boolean
  /** Send the access token (manifest `requiresAccessToken`). */
  readonly auth: boolean
  /**
   * Called with every resource of the file as it is checked (a resumed or retried transfer calls it again for
   * the part it keeps, also when the server then ignores the Range and the file starts over: callers dedupe).
   */
  readonly onResource?: (resource: Resource) => void
  /**
   * Lines the manifest's `count` may leave out (the header `Parameters` of organizeOutputBy output, which
   * servers count differently): the count check accepts the file's lines with or without them.
   */
  readonly uncounted?: (resource: Resource) => boolean
  /** Told where each line of the file is (each line up to its `maxBytes` is then parsed): see `LineSink`. */
  readonly lines?: LineSink
}

/**
 * Where each checked line of a file is: its resource, its byte offset in the file and its length (terminator
 * included). `reset` comes first in every transfer attempt: the lines told before are void (the attempt starts
 * over or re-reads the part file it keeps, from offset 0). Not for a file written gzip-compressed.
 */
export interface LineSink {
  /** Longer lines are not parsed for it (the sink ignores them). */
  readonly maxBytes: number
  readonly reset: () => void
  readonly line: (resource: Resource, offset: number, bytes: number) => void
}

export interface DownloadResult {
  /** Lines (resources) in the file. */
  readonly count: number
  /** Bytes of the finished file. */
  readonly bytes: number
  /** Lowercase hex sha256 of the finished file. */
  readonly sha256: string
  /** Byte offset the last attempt resumed from (0 = from the start). */
  readonly resumedFrom: number
}

export interface DownloadOptions {
  /** Called with the number of bytes received, as they arrive. */
  readonly onBytes?: (n: number) => Effect.Effect<void>
  /**
   * Called when an attempt resumes from a non-zero offset, restarts after a broken transfer, or starts over
   * (offset 0) because the part file an earlier attempt left is damaged.
   */
  readonly onResume?: (offset: number, reason: string) => Effect.Effect<void>
  /** How often a broken transfer is resumed before giving up (default 5). */
  readonly resumes?: number
  /**
   * Run after each chunk received was written and its lines checked (`onResource` has seen them), before the
   * next one is read: the export fetches the attachments found so far here, so a file's references are not
   * all held until its end. The transfer waits for it (the server's send waits on the connection meanwhile).
   */
  readonly onChunk?: () => Effect.Effect<void, ExportError | ArchiveError>
}

const ioError = (label: string, what: string) => (cause: unknown) =>
  new ExportError({
    reason: "Archive",
    detail: `${label}: could not ${what} (${cause instanceof Error ? cause.message : String(cause)}); check free space and permissions of the archive directory`,
    cause,
  })

const fsTry = <A>(label: string, what: string, f: () => Promise<A>): Effect.Effect<A, ExportError> =>
  Effect.tryPromise({ try: f, catch: ioError(label, what) })

const sizeOf = (path: string): Promise<number> =>
  NFS.promises.stat(path).then(
    (s) => s.size,
    (e: NodeJS.ErrnoException) => {
      if (e.code === "ENOENT") return -1
      throw e
    },
  )

/** Cuts a part file back to just after its last newline; returns the new size (0 when none). */
const truncateToLastLine = async (path: string, size: number): Promise<number> => {
  const handle = await NFS.promises.open(path, "r+")
  try {
    const block = 64 * 1024
    let end = size
    while (end > 0) {
      const start = Math.max(0, end - block)
      const buf = Buffer.alloc(end - start)
      await handle.read(buf, 0, buf.length, start)
      const nl = buf.lastIndexOf(10)
      if (nl !== -1) {
        const keep = start + nl + 1
        if (keep !== size) await handle.truncate(keep)
        return keep
      }
      end = start
    }
    await handle.truncate(0)
    return 0
  } finally {
    await handle.close()
  }
}

/** The outcome of one transfer attempt: the part file is complete and was checked on the way. */
interface Transfer {
  readonly count: number
  /** Of `count`, the lines `DownloadTarget.uncounted` names. */
  readonly uncounted: number
  readonly bytes: number
  readonly sha256: string
  readonly resumedFrom: number
}

/** Hash, size and resource count of the bytes of a file, computed as they pass by. */
class Scan {
  readonly hash = createHash("sha256")
  bytes = 0
  count = 0
  uncounted = 0
  lastByte = 10
  update(chunk: Uint8Array): void {
    this.hash.update(chunk)
    this.bytes += chunk.length
    if (chunk.length > 0) this.lastByte = chunk[chunk.length - 1]!
  }
}

const readOptionsOf = (target: DownloadTarget): Ndjson.ReadOptions => ({
  file: target.label,
  ...(target.type !== undefined ? { resourceType: target.type } : {}),
})

/** Passes the bytes through the scan and the line checker (type), counting resources. */
const scanned = <E>(
  target: DownloadTarget,
  scan: Scan,
  bytes: Stream.Stream<Uint8Array, E>,
): Effect.Effect<void, E | Ndjson.NdjsonError> =>
  bytes.pipe(
    Stream.tap((chunk) => Effect.sync(() => scan.update(chunk))),
    Ndjson.parse(readOptionsOf(target)),
    Stream.runForEach((item) =>
      Effect.sync(() => {
        scan.count++
        if (target.uncounted?.(item.value) === true) scan.uncounted++
        target.onResource?.(item.value)
        target.lines?.line(item.value, item.offset, item.bytes)
      }),
    ),
  )

/** Scans the part file a resumed transfer keeps. */
const scanPart = (target: DownloadTarget, part: string, scan: Scan) =>
  scanned(target, scan, Ndjson.fileBytes(part, { gzip: false, label: target.label }))

/**
 * Scans the part file a resumed transfer keeps into `scan`. A line that does not check out is taken for damage
 * on this disk (a page a power loss zeroed), which every resume from that part would meet again: the part is
 * deleted and false returned, and the file is downloaded from the start. (A bad line the server sent, which
 * an earlier attempt may have written before checking it, comes again with the new download and is reported
 * then, as the server's.)
 */
const checkPart = (target: DownloadTarget, part: string, scan: Scan, options: DownloadOptions) =>
  scanPart(target, part, scan).pipe(
    Effect.as(true),
    Effect.catchIf(
      (e) => e.reason !== "Io",
      (e) =>
        Effect.gen(function* () {
          const what = e.message.replace(/;.*$/, "")
          yield* Effect.logWarning(
            `the partial download an earlier attempt left is damaged (${what}); it was deleted and the file is downloaded again from the start`,
          ).pipe(Effect.annotateLogs({ file: target.label }))
          yield* fsTry(target.label, "delete the damaged partial download", () =>
            NFS.promises.rm(part, { force: true }),
          )
          if (options.onResume)
            yield* options.onResume(0, `the partial download is damaged (${what}), restarting`)
          return false
        }),
    ),
  )

/** fsync of a file written earlier (by an earlier run, or closed since). */
const syncFile = async (path: string): Promise<void> => {
  const handle = await NFS.promises.open(path, "r")
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

const broken = (url: string, cause: unknown) =>
  new FhirError({
    reason: "Transport",
    method: "GET",
    url: redactUrl(url),
    detail: bodyFailure("the download", cause),
    cause,
  })

/** Bytes of a download gathered into one write. */
const WRITE_BATCH = 512 * 1024

/** One attempt: resume (or start) the transfer into the part file. */
const transfer = (client: FhirClient, target: DownloadTarget, part: string, options: DownloadOptions) =>
  Effect.gen(function* () {
    const existing = yield* fsTry(target.label, "read the partial download", () => sizeOf(part))
    let offset =
      existing > 0
        ? yield* fsTry(target.label, "trim the partial download", () => truncateToLastLine(part, existing))
        : 0
    // the part kept is checked before the rest is asked for (no connection waits meanwhile)
    let scan = new Scan()
    target.lines?.reset()
    if (offset > 0 && !(yield* checkPart(target, part, scan, options))) {
      offset = 0
      scan = new Scan()
      target.lines?.reset()
    }
    const headers: Record<string, string> =
      offset === 0
        ? { accept: "application/fhir+ndjson", "accept-encoding": "gzip, deflate, br" }
        : {
            accept: "application/fhir+ndjson",
            range: `bytes=${offset}-`,
            // A range of the encoded representation would not line up with the decoded bytes on disk.
            "accept-encoding": "identity",
          }
    const answer = yield* client.get(target.url, { auth: target.auth, headers }).pipe(
      Effect.map((response) => ({ response, unsatisfiable: false as const })),
      Effect.catchIf(
        (e): e is FhirError => offset > 0 && e instanceof FhirError && e.status === 416,
        () => Effect.succeed({ response: undefined, unsatisfiable: true as const }),
      ),
    )
    if (answer.unsatisfiable || answer.response === undefined) {
      if (target.count === undefined) {
        // "Nothing at that offset" is only proof of a complete file when its lines can be counted against
        // the manifest: a server whose ranges are of another representation (a pre-compressed file) says
        // the same about a short part file. Start over.
        yield* fsTry(target.label, "reset the partial download", () => NFS.promises.rm(part, { force: true }))
        return yield* broken(target.url, `the server answered Range bytes=${offset}- with 416`)
      }
      // Everything up to the end was already received (the line count is checked). Those bytes were written
      // by an earlier attempt, perhaps an earlier run: fsynced before `finish` renames them into place.
      const done = yield* complete(target, part, scan, offset)
      yield* fsTry(target.label, "flush the download", () => syncFile(part))
      return done
    }
    const response = answer.response
    // The body is read to its end below; on any failure before that it is dropped with its connection.
    yield* Effect.addFinalizer(() => Effect.sync(() => discardBody(response.body)))
    // A range of an encoded body (a pre-compressed file served as is) is a slice of the compressed bytes,
    // which neither decodes on its own nor lines up with the decoded bytes of the part file.
    const encoding = (response.headers["content-encoding"] ?? "identity").trim().toLowerCase()
    const append =
      offset > 0 &&
      response.status === 206 &&
      encoding === "identity" &&
      contentRangeStart(response.headers["content-range"]) === offset
    if (response.status === 206 && !append) {
      // A range that does not start where the part file ends cannot be appended: start over without Range.
      yield* fsTry(target.label, "reset the partial download", () => NFS.promises.rm(part, { force: true }))
      return yield* broken(
        target.url,
        `the server answered Range bytes=${offset}- with ${response.headers["content-range"] ?? "no Content-Range"}`,
      )
    }
    if (offset > 0 && options.onResume) {
      yield* options.onResume(append ? offset : 0, append ? "range" : "server ignored Range, restarting")
    }
    // the part was scanned above: kept, the rest is added to its scan; otherwise the file starts over
    if (!append) {
      scan = new Scan()
      target.lines?.reset()
    }
    const handle = yield* Effect.acquireRelease(
      fsTry(target.label, "open the partial download", async () => {
        const h = await NFS.promises.open(part, append ? "a" : "w", 0o600)
        await h.chmod(0o600)
        return h
      }),
      (h) => Effect.promise(() => h.close().catch(() => undefined)),
    )
    // The hot loop: one Effect step per chunk (≈ 64 KiB), the lines of each chunk checked by a plain parser
    // instead of an Effect Stream pipeline per chunk and per line (with FhirClient.get, the files phase of
    // bench/export at 100k went from 3–5 s to 1.3–3.6 s on a loaded machine).
    const chunks = decoded(target, response.headers["content-encoding"], response.body)
    const lines = lineChecker(target, scan, append ? offset : 0)
    const nextChunk = Effect.tryPromise({
      try: () => chunks.next(),
      catch: (e) => (e instanceof ExportError ? e : broken(target.url, e)),
    })
    // Chunks are written WRITE_BATCH bytes at a time (one write per 64 KiB chunk was ≈ 0.7 s of a 1M export's
    // main thread); the part file only ever holds whole chunks, and a resume trims it to its last line anyway.
    let batch: Array<Uint8Array> = []
    let batched = 0
    const writeBatch = (): Promise<unknown> => {
      const out = batch
      batch = []
      batched = 0
      return out.length === 1 ? handle.write(out[0]!) : handle.writev(out)
    }
    // a transfer that breaks off keeps every chunk it received (checked or not, as when each chunk was written
    // at once): the next attempt resumes after its last whole line
    yield* Effect.addFinalizer(() =>
      batch.length === 0 ? Effect.void : Effect.promise(() => writeBatch().catch(() => undefined)),
    )
    for (;;) {
      const next = yield* nextChunk
      if (next.done === true) break
      const chunk = next.value
      batch.push(chunk)
      batched += chunk.length
      const written = batched >= WRITE_BATCH ? writeBatch() : undefined
      scan.update(chunk)
      yield* parseChunk(target, () => lines.push(chunk)).pipe(
        // the write was started before parsing: wait for it whatever the parse said
        Effect.ensuring(
          written === undefined ? Effect.void : Effect.promise(() => written.catch(() => undefined)),
        ),
      )
      if (written !== undefined) yield* fsTry(target.label, "write the download", () => written)
      if (target.count !== undefined && scan.count - scan.uncounted > target.count) {
        // more lines than the manifest announced: the file cannot check out, and what follows may be endless
        // (a few kB of gzip inflate to gigabytes): stopped here, not written to the end first
        batch = []
        yield* fsTry(target.label, "remove the download", () => NFS.promises.rm(part, { force: true }))
        return yield* overCount(target, scan.count)
      }
      if (options.onBytes) yield* options.onBytes(chunk.length)
      if (options.onChunk) yield* options.onChunk()
    }
    yield* parseChunk(target, lines.end)
    if (batch.length > 0) yield* fsTry(target.label, "write the download", writeBatch)
    if (scan.lastByte !== 10) {
      // a server may leave the last newline out: the archive's files always end with one
      const nl = Buffer.from("\n")
      yield* fsTry(target.label, "finish the download", () => handle.write(nl))
      scan.update(nl)
    }
    yield* fsTry(target.label, "flush the download", () => handle.sync())
    return yield* complete(target, part, scan, append ? offset : 0)
  }).pipe(Effect.scoped, Effect.catchTag("NdjsonError", invalid(target)))

/**
 * The line checker of a download: every line counted and checked to be a resource of the file's type. Only the
 * lines that can hold an attachment URL (a `url` key in them, or a `\u` escape that could spell it, found by the
 * check itself) are parsed for `onResource`; the others are checked without building them (`Ndjson.checker`: at
 * 1M resources, parsing every line made garbage collection ≈ 30 % of the export's CPU; docs/benchmarks.md). A
 * file whose `lines` are wanted (the Binary files, `ExportedBinaries`) has every line up to `maxBytes` parsed.
 */
const lineChecker = (target: DownloadTarget, scan: Scan, from: number): Ndjson.Parser => {
  const onResource = target.onResource
  const sink = target.lines
  if (target.type === undefined || target.uncounted !== undefined)
    return Ndjson.parser(readOptionsOf(target), (item) => {
      scan.count++
      if (target.uncounted?.(item.value) === true) scan.uncounted++
      onResource?.(item.value)
      sink?.line(item.value, from + item.offset, item.bytes)
    })
  const forResource =
    onResource === undefined ? () => false : (text: string) => text.includes('"url"') || text.includes("\\u")
  // (a line's UTF-16 length is at most its UTF-8 length: one too long for the sink is not parsed for it);
  // without a sink, the check itself finds the lines with a `url` key (or a `\u` escape that may spell one)
  const wanted =
    sink !== undefined
      ? (text: string) => text.length <= sink.maxBytes || forResource(text)
      : onResource === undefined
        ? () => false
        : { key: "url" }
  return Ndjson.checker({ file: target.label, resourceType: target.type }, wanted, (item) => {
    scan.count++
    if (item === undefined) return
    onResource?.(item.value)
    sink?.line(item.value, from + item.offset, item.bytes)
  })
}

/** A file found to hold more lines than its manifest `count`, stopped at `lines`. */
const overCount = (target: DownloadTarget, lines: number) =>
  new ExportError({
    reason: "CountMismatch",
    url: redactUrl(target.url),
    detail: `${target.label} holds more than the ${target.count} resources the manifest announced (the download was stopped at ${lines} lines)`,
  })

/** Runs the (synchronous, throwing) line parser on one chunk. */
const parseChunk = (target: DownloadTarget, f: () => void): Effect.Effect<void, ExportError> =>
  Effect.suspend(() => {
    try {
      f()
      return Effect.void
    } catch (e) {
      if (e instanceof Ndjson.NdjsonError) return invalid(target)(e)
      throw e
    }
  })

/** The transfer's result; a part file scanned after a 416 may still lack its last newline. */
const complete = (target: DownloadTarget, part: string, scan: Scan, resumedFrom: number) =>
  Effect.gen(function* () {
    if (scan.lastByte !== 10) {
      yield* fsTry(target.label, "finish the download", () => NFS.promises.appendFile(part, "\n"))
      scan.update(Buffer.from("\n"))
    }
    return {
      count: scan.count,
      uncounted: scan.uncounted,
      bytes: scan.bytes,
      sha256: scan.hash.digest("hex"),
      resumedFrom,
    } satisfies Transfer
  })

/** A line that is not a resource of the announced type: the file is not what the manifest promised. */
const invalid = (target: DownloadTarget) => (e: Ndjson.NdjsonError) =>
  e.reason === "Io"
    ? Effect.fail(ioError(target.label, "read the download")(e))
    : Effect.fail(
        new ExportError({
          reason: "InvalidFile",
          url: redactUrl(target.url),
          detail:
            e.reason === "LineTooLong"
              ? `${e.message.replace(/;.*$/, "")}: one resource larger than Ferry reads as one line (64 MiB; 448 MiB for a Binary), or a file without line breaks; check that resource at the source`
              : `${e.message.replace(/;.*$/, "")}; the server sent a file that is not NDJSON of ${target.type ?? "FHIR resources"}`,
          cause: e,
        }),
      )

/**
 * The body's chunks with its Content-Encoding undone (an encoding Ferry did not ask for fails the transfer).
 * A decoder failure, like a broken connection, is `broken`: the transfer is resumed.
 */
const decoded = (
  target: DownloadTarget,
  encoding: string | undefined,
  body: Readable,
): AsyncIterator<Buffer> => {
  const found = decoderFor(encoding)
  if (found === "unknown") {
    discardBody(body)
    return {
      next: () =>
        Promise.reject(
          new ExportError({
            reason: "InvalidFile",
            url: redactUrl(target.url),
            detail: `${target.label}: the server sent Content-Encoding ${JSON.stringify(encoding)}, which Ferry did not ask for (it accepts gzip, deflate, br); report it to the server's operators`,
          }),
        ),
    }
  }
  const source = (body as AsyncIterable<Buffer>)[Symbol.asyncIterator]()
  if (found === "none") return source
  const make = found
  let inner: AsyncIterator<Buffer> | undefined
  return {
    next: async () => {
      if (inner === undefined) {
        const head = await source.next()
        if (head.done === true) return head
        // An HTTP client that decodes by itself (fetch) keeps the header: NDJSON text starts with `{` or
        // white space, which no gzip, deflate or brotli stream Ferry asks for does.
        const first = head.value[0]
        if (first === undefined || first === 0x7b || first === 0x20 || first === 0x0a || first === 0x0d) {
          inner = prepend(head.value, source)
        } else {
          const decoder = make()
          // pipeline destroys the decoder with the body's error (a broken connection), so iterating it throws
          pipelineCb(Readable.from(prepend(head.value, source), { objectMode: false }), decoder, () => {})
          inner = (decoder as AsyncIterable<Buffer>)[Symbol.asyncIterator]()
        }
        return inner.next()
      }
      return inner.next()
    },
  }
}

/** `rest` with `head` in front. */
const prepend = (
  head: Buffer,
  rest: AsyncIterator<Buffer>,
): AsyncIterator<Buffer> & AsyncIterable<Buffer> => {
  let first = true
  const it = {
    next: (): Promise<IteratorResult<Buffer>> => {
      if (first) {
        first = false
        return Promise.resolve({ done: false, value: head })
      }
      return rest.next()
    },
    [Symbol.asyncIterator]: () => it,
  }
  return it
}

const contentRangeStart = (header: string | undefined): number | undefined => {
  const m = header === undefined ? null : /^bytes\s+(\d+)-/.exec(header.trim())
  return m === null ? undefined : Number(m[1])
}

/** Moves the checked part file to its final name; with `gzip`, writes it compressed (a second pass). */
const finish = (target: DownloadTarget, part: string, checked: Transfer) =>
  Effect.gen(function* () {
    // the directory is synced after the rename: the journal line that says the file is finished comes next,
    // and must not survive a power loss that the rename does not
    const synced = Archive.syncParent(target.path).pipe(
      Effect.mapError((e) => ioError(target.label, "sync the data directory")(e)),
    )
    if (target.gzip !== true) {
      yield* fsTry(target.label, "rename the finished file", () => NFS.promises.rename(part, target.path))
      yield* synced
      return { count: checked.count, bytes: checked.bytes, sha256: checked.sha256 }
    }
    const written = yield* Ndjson.writeFile(
      `${target.path}.tmp`,
      Ndjson.readFileLines(part, { gzip: false, label: target.label }),
      { gzip: true, label: target.label },
    ).pipe(Effect.catchTag("NdjsonError", invalid(target)))
    yield* fsTry(target.label, "rename the finished file", () =>
      NFS.promises.rename(`${target.path}.tmp`, target.path),
    )
    yield* synced
    yield* fsTry(target.label, "remove the part file", () => NFS.promises.rm(part, { force: true }))
    return { count: written.count, bytes: written.bytes, sha256: written.sha256 }
  })

/**
 * A transfer that broke off, worth resuming: not a failure no retry cures (an untrusted certificate, a port that
 * speaks no TLS or HTTP) nor a server that gave no answer through the client's own retries.
 */
const isBroken = (e: unknown): boolean =>
  e instanceof FhirError &&
  e.reason === "Transport" &&
  !isPermanentTransport(e.detail) &&
  transportProblem(e.detail) !== "NoAnswer"

/**
 * Downloads one file (resuming a `.partial` left by an earlier run) and checks it; a transfer that breaks
 * off is resumed up to `resumes` times. A count that differs from the manifest fails with
 * `ExportError` CountMismatch (the caller decides whether to try once more from scratch).
 */
export const download = Effect.fn("Download.download")(function* (
  client: FhirClient,
  target: DownloadTarget,
  options: DownloadOptions = {},
) {
  const part = `${target.path}.partial`
  const resumes = options.resumes ?? 5
  const done = yield* transfer(client, target, part, options).pipe(
    Effect.tapError((e) =>
      isBroken(e) && options.onResume ? options.onResume(-1, "the connection broke, resuming") : Effect.void,
    ),
    Effect.retry({
      schedule: Schedule.exponential(Duration.millis(200), 2).pipe(
        Schedule.modifyDelay((d) => Duration.min(d, Duration.seconds(10))),
      ),
      times: resumes,
      while: isBroken,
    }),
  )
  const result = yield* finish(target, part, done)
  const counted =
    result.count === target.count || (done.uncounted > 0 && result.count - done.uncounted === target.count)
  if (target.count !== undefined && !counted) {
    // A file that does not hold what the manifest announced never stays in the archive under its final name.
    yield* discard(target)
    return yield* new ExportError({
      reason: "CountMismatch",
      url: redactUrl(target.url),
      detail: `${target.label} holds ${result.count} resources but the manifest announced ${target.count}`,
    })
  }
  return { ...result, resumedFrom: done.resumedFrom } satisfies DownloadResult
}) satisfies (
  client: FhirClient,
  target: DownloadTarget,
  options?: DownloadOptions,
) => Effect.Effect<DownloadResult, ExportError | FhirError | AuthError | ArchiveError>

/** Deletes the partial and finished files of a target (before a fresh download). */
export const discard = (target: DownloadTarget): Effect.Effect<void, ExportError> =>
  fsTry(target.label, "remove the old download", async () => {
    await NFS.promises.rm(`${target.path}.partial`, { force: true })
    await NFS.promises.rm(`${target.path}.tmp`, { force: true })
    await NFS.promises.rm(target.path, { force: true })
  })
