/**
 * Downloading one NDJSON file of a manifest into the archive:
 * - the raw bytes stream into `<final>.partial` (mode 0600; not `.part`, which the archive lock removes as
 *   a crashed writer's leftover, while a partial download is worth resuming);
 * - after a crash or a connection reset, the `.partial` file is cut back to its last complete line and the
 *   rest is asked for with `Range: bytes=N-` (a 200 instead of 206 restarts from zero, a 416 means the
 *   part is already complete);
 * - once complete, every line is checked to be a resource of the announced type, counted (against the
 *   manifest `count`) and hashed (sha256), then the file is renamed (or gzip-written) to its final name.
 * Content-Encoding gzip/deflate/br is decoded by the HTTP client.
 */
import { createHash } from "node:crypto"
import * as NFS from "node:fs"
import { HttpClientRequest } from "@effect/platform"
import { type AuthError, FhirError } from "@ferry/core/Errors"
import type { FhirClient } from "@ferry/core/FhirClient"
import { redactUrl } from "@ferry/core/Http"
import * as Ndjson from "@ferry/core/Ndjson"
import { type Chunk, Duration, Effect, Schedule, Stream } from "effect"
import { ExportError } from "./ExportError.js"

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
  /** Called when an attempt resumes from a non-zero offset or restarts after a broken transfer. */
  readonly onResume?: (offset: number, reason: string) => Effect.Effect<void>
  /** How often a broken transfer is resumed before giving up (default 5). */
  readonly resumes?: number
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

/** The outcome of one transfer attempt. */
type Transfer = { readonly _tag: "Complete"; readonly resumedFrom: number }

const broken = (url: string, cause: unknown) =>
  new FhirError({
    reason: "Transport",
    method: "GET",
    url: redactUrl(url),
    detail: "the download broke off",
    cause,
  })

/** One attempt: resume (or start) the transfer into the part file. */
const transfer = (client: FhirClient, target: DownloadTarget, part: string, options: DownloadOptions) =>
  Effect.gen(function* () {
    const existing = yield* fsTry(target.label, "read the partial download", () => sizeOf(part))
    const offset =
      existing > 0
        ? yield* fsTry(target.label, "trim the partial download", () => truncateToLastLine(part, existing))
        : 0
    let request = HttpClientRequest.get(target.url).pipe(
      HttpClientRequest.setHeader("accept", "application/fhir+ndjson"),
    )
    if (offset === 0) {
      request = request.pipe(HttpClientRequest.setHeader("accept-encoding", "gzip, deflate, br"))
    } else {
      request = request.pipe(
        HttpClientRequest.setHeader("range", `bytes=${offset}-`),
        // A range of the encoded representation would not line up with the decoded bytes on disk.
        HttpClientRequest.setHeader("accept-encoding", "identity"),
      )
    }
    const answer = yield* client.request(request, { auth: target.auth }).pipe(
      Effect.map((response) => ({ response, unsatisfiable: false as const })),
      Effect.catchIf(
        (e): e is FhirError => offset > 0 && e instanceof FhirError && e.status === 416,
        () => Effect.succeed({ response: undefined, unsatisfiable: true as const }),
      ),
    )
    if (answer.unsatisfiable || answer.response === undefined) {
      // Everything up to the end was already received.
      return { _tag: "Complete", resumedFrom: offset } satisfies Transfer
    }
    const response = answer.response
    const append =
      offset > 0 && response.status === 206 && contentRangeStart(response.headers["content-range"]) === offset
    if (response.status === 206 && !append) {
      // A range that does not start where the part file ends cannot be appended: start over without Range.
      yield* Effect.ignore(response.text)
      yield* fsTry(target.label, "reset the partial download", () => NFS.promises.rm(part, { force: true }))
      return yield* broken(
        target.url,
        `the server answered Range bytes=${offset}- with ${response.headers["content-range"] ?? "no Content-Range"}`,
      )
    }
    if (offset > 0 && options.onResume) {
      yield* options.onResume(append ? offset : 0, append ? "range" : "server ignored Range, restarting")
    }
    const handle = yield* Effect.acquireRelease(
      fsTry(target.label, "open the partial download", async () => {
        const h = await NFS.promises.open(part, append ? "a" : "w", 0o600)
        await h.chmod(0o600)
        return h
      }),
      (h) => Effect.promise(() => h.close().catch(() => undefined)),
    )
    yield* response.stream.pipe(
      Stream.mapError((cause) => broken(target.url, cause)),
      Stream.runForEach((chunk) =>
        fsTry(target.label, "write the download", () => handle.write(chunk)).pipe(
          Effect.zipRight(options.onBytes ? options.onBytes(chunk.length) : Effect.void),
        ),
      ),
    )
    yield* fsTry(target.label, "flush the download", () => handle.sync())
    return { _tag: "Complete", resumedFrom: append ? offset : 0 } satisfies Transfer
  }).pipe(Effect.scoped)

const contentRangeStart = (header: string | undefined): number | undefined => {
  const m = header === undefined ? null : /^bytes\s+(\d+)-/.exec(header.trim())
  return m === null ? undefined : Number(m[1])
}

/** Makes sure the part file ends with a newline (a server may leave the last one out). */
const terminate = async (path: string): Promise<void> => {
  const size = await sizeOf(path)
  if (size <= 0) return
  const handle = await NFS.promises.open(path, "r+")
  try {
    const last = Buffer.alloc(1)
    await handle.read(last, 0, 1, size - 1)
    if (last[0] !== 10) await handle.write("\n", size)
  } finally {
    await handle.close()
  }
}

/** Parses every line of a chunk with the cheap resource guard (type checked); a bad line fails. */
const checkLines =
  (options: Ndjson.ReadOptions) =>
  (lines: Chunk.Chunk<Ndjson.Line>): Effect.Effect<Chunk.Chunk<Ndjson.Line>, Ndjson.NdjsonError> =>
    Effect.as(
      Effect.forEach(lines, (line) => Ndjson.parseLine(options, line), { discard: true }),
      lines,
    )

/** Checks every line (type), counts them and hashes the bytes; then moves the part to its final name. */
const finish = (target: DownloadTarget, part: string) =>
  Effect.gen(function* () {
    yield* fsTry(target.label, "finish the download", () => terminate(part))
    const readOptions = {
      file: target.label,
      ...(target.type !== undefined ? { resourceType: target.type } : {}),
    }
    const checked = Ndjson.fileBytes(part, { gzip: false, label: target.label }).pipe(
      Ndjson.splitLines(readOptions),
      Stream.mapChunksEffect(checkLines(readOptions)),
    )
    if (target.gzip === true) {
      const written = yield* Ndjson.writeFile(`${target.path}.tmp`, checked.pipe(Stream.map((l) => l.text)), {
        gzip: true,
        label: target.label,
      })
      yield* fsTry(target.label, "rename the finished file", async () => {
        await NFS.promises.rename(`${target.path}.tmp`, target.path)
        await NFS.promises.rm(part, { force: true })
      })
      return { count: written.count, bytes: written.bytes, sha256: written.sha256 }
    }
    const hash = createHash("sha256")
    let bytes = 0
    const count = yield* Ndjson.fileBytes(part, { gzip: false, label: target.label }).pipe(
      Stream.tap((chunk) =>
        Effect.sync(() => {
          hash.update(chunk)
          bytes += chunk.length
        }),
      ),
      Ndjson.splitLines(readOptions),
      Stream.mapChunksEffect(checkLines(readOptions)),
      Stream.runCount,
    )
    yield* fsTry(target.label, "rename the finished file", () => NFS.promises.rename(part, target.path))
    return { count, bytes, sha256: hash.digest("hex") }
  }).pipe(
    Effect.catchTag("NdjsonError", (e) =>
      e.reason === "Io"
        ? Effect.fail(ioError(target.label, "read the download")(e))
        : Effect.fail(
            new ExportError({
              reason: "InvalidFile",
              url: redactUrl(target.url),
              detail: `${e.message.replace(/;.*$/, "")}; the server sent a file that is not NDJSON of ${target.type ?? "FHIR resources"}`,
              cause: e,
            }),
          ),
    ),
  )

const isBroken = (e: unknown): boolean => e instanceof FhirError && e.reason === "Transport"

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
  const result = yield* finish(target, part)
  if (target.count !== undefined && result.count !== target.count) {
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
) => Effect.Effect<DownloadResult, ExportError | FhirError | AuthError>

/** Deletes the partial and finished files of a target (before a fresh download). */
export const discard = (target: DownloadTarget): Effect.Effect<void, ExportError> =>
  fsTry(target.label, "remove the old download", async () => {
    await NFS.promises.rm(`${target.path}.partial`, { force: true })
    await NFS.promises.rm(`${target.path}.tmp`, { force: true })
    await NFS.promises.rm(target.path, { force: true })
  })
