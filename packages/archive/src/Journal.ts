/**
 * `journal.ndjson`: the crash-safe, append-only record of finished steps, used by export, import and verify
 * to resume. Each record `{ seq, at, kind, key, data? }` is one whole line, written in one call and fsynced
 * before `append` returns, so a step is "done" exactly when its line is on disk.
 *
 * Recovery: a torn last line (the crash came between write and fsync: no trailing newline) is ignored and cut
 * off when the journal is opened; it never fails. A bad line in the middle is corruption and fails with its
 * line number.
 */
import * as NFS from "node:fs"
import * as Path from "node:path"
import * as Ndjson from "@ferry/core/Ndjson"
import { Clock, Context, Effect, Either, Layer, Option, Schema, Stream } from "effect"
import { ArchiveError, ioError } from "./ArchiveError.js"
import * as Fs from "./internal/fs.js"

export const Entry = Schema.Struct({
  seq: Schema.Number,
  /** ISO instant from the Clock. */
  at: Schema.String,
  /** What kind of step, dotted, e.g. `export.file`, `import.batch`; `entries` filters by prefix. */
  kind: Schema.String,
  /** Identifies the step; `isDone(key)` asks whether it was recorded. */
  key: Schema.String,
  /** The step's result, needed to resume (e.g. a FileEntry). */
  data: Schema.optional(Schema.Unknown),
})
export type Entry = typeof Entry.Type

/** What `load` found on disk. */
export interface State {
  /** Every valid entry, in file order. */
  readonly entries: ReadonlyArray<Entry>
  /** The latest entry per key. */
  readonly byKey: ReadonlyMap<string, Entry>
  readonly nextSeq: number
  /** Bytes of the valid prefix: everything before a torn last line. */
  readonly validBytes: number
  /** True when a torn last line was found (and ignored). */
  readonly torn: boolean
}

const decodeEntry = Schema.decodeUnknownEither(Entry)

const label = (path: string) => Path.basename(path)

/** Read a journal (missing file = empty). Never writes. */
export const load = (path: string): Effect.Effect<State, ArchiveError> =>
  Effect.gen(function* () {
    const entries: Array<Entry> = []
    const byKey = new Map<string, Entry>()
    let validBytes = 0
    let torn = false
    if (!(yield* Fs.exists(path))) return { entries, byKey, nextSeq: 1, validBytes, torn }
    yield* Ndjson.readFileSplit(path, { label: label(path), keepBlank: true }).pipe(
      Stream.mapError((e) =>
        e.reason === "Io"
          ? ioError(path)(e)
          : new ArchiveError({ reason: "Corrupt", path, line: e.line, detail: e.detail, cause: e }),
      ),
      Stream.runForEach((l) =>
        Effect.suspend(() => {
          if (!l.terminated) {
            // the crash came mid-append: that step was never acknowledged, so it is simply not done
            torn = true
            return Effect.void
          }
          validBytes += l.bytes
          if (l.text.length === 0) return Effect.void
          let json: unknown
          try {
            json = JSON.parse(l.text)
          } catch {
            return Effect.fail(corrupt(path, l.line, "not valid JSON"))
          }
          const d = decodeEntry(json)
          if (Either.isLeft(d))
            return Effect.fail(corrupt(path, l.line, "not a journal record { seq, at, kind, key }"))
          entries.push(d.right)
          byKey.set(d.right.key, d.right)
          return Effect.void
        }),
      ),
    )
    const nextSeq = entries.reduce((m, e) => Math.max(m, e.seq), 0) + 1
    return { entries, byKey, nextSeq, validBytes, torn }
  })

const corrupt = (path: string, line: number, detail: string) =>
  new ArchiveError({
    reason: "Corrupt",
    path,
    line,
    // the action comes from ArchiveError (restore the file or export again): not every line can be deleted safely
    detail: `${detail}, in the middle of the journal, where a line cannot be skipped safely`,
  })

export interface JournalService {
  /** Record a finished step: one line, written whole and fsynced before this returns. */
  readonly append: (kind: string, key: string, data?: unknown) => Effect.Effect<Entry, ArchiveError>
  readonly isDone: (key: string) => Effect.Effect<boolean>
  /** The `data` of the latest entry for `key`. */
  readonly result: (key: string) => Effect.Effect<Option.Option<unknown>>
  /** Entries whose kind starts with `kindPrefix` ("" for all), in order. */
  readonly entries: (kindPrefix: string) => Effect.Effect<ReadonlyArray<Entry>>
}

export class Journal extends Context.Tag("@ferry/archive/Journal")<Journal, JournalService>() {
  /**
   * Open (or create, 0600) the journal at `path`: load it, cut off a torn tail, fsync the file and its
   * directory, and keep the file open for appends until the scope closes. Appends from many fibers are
   * serialised.
   */
  static readonly make = Effect.fn("Journal.make")(function* (path: string) {
    const state = yield* load(path)
    yield* Fs.makeDir(Path.dirname(path))
    if (state.torn) {
      yield* Effect.logWarning(
        "journal had a torn last line (crash mid-write); it was ignored and removed",
      ).pipe(Effect.annotateLogs({ journal: path }))
      yield* Fs.truncate(path, state.validBytes)
    }
    const handle = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const h = await NFS.promises.open(path, "a", 0o600)
          await h.chmod(0o600)
          await h.sync()
          return h
        },
        catch: ioError(path),
      }),
      (h) => Effect.promise(() => h.close().catch(() => undefined)),
    )
    // the journal's entry in its directory (the file may be new, or made by a run that crashed before this
    // fsync): without it, a power loss could take the file and every step recorded in it
    yield* Fs.syncDir(Path.dirname(path))
    const entries: Array<Entry> = [...state.entries]
    const byKey = new Map(state.byKey)
    let seq = state.nextSeq
    let size = state.validBytes
    const lock = yield* Effect.makeSemaphore(1)

    // the write and its bookkeeping whole or not at all (an interrupted write could reach the disk while
    // `seq`, `size` and the entries did not move); waiting for the lock stays interruptible
    const append = (kind: string, key: string, data?: unknown): Effect.Effect<Entry, ArchiveError> =>
      lock.withPermits(1)(
        Effect.uninterruptible(
          Effect.gen(function* () {
            const now = yield* Clock.currentTimeMillis
            const entry: Entry = {
              seq,
              at: new Date(now).toISOString(),
              kind,
              key,
              ...(data !== undefined ? { data } : {}),
            }
            const line = Buffer.from(`${JSON.stringify(entry)}\n`)
            yield* Effect.tryPromise({
              try: async () => {
                try {
                  let off = 0
                  while (off < line.length)
                    off += (await handle.write(line, off, line.length - off)).bytesWritten
                  await handle.sync()
                } catch (e) {
                  // don't leave half a line for the next append to be glued to
                  await handle.truncate(size).catch(() => undefined)
                  throw e
                }
              },
              catch: ioError(path),
            })
            seq++
            size += line.length
            entries.push(entry)
            byKey.set(key, entry)
            return entry
          }),
        ),
      )

    return Journal.of({
      append,
      isDone: (key) => Effect.sync(() => byKey.has(key)),
      result: (key) =>
        Effect.sync(() => Option.fromNullable(byKey.get(key)).pipe(Option.flatMapNullable((e) => e.data))),
      entries: (kindPrefix) => Effect.sync(() => entries.filter((e) => e.kind.startsWith(kindPrefix))),
    })
  })

  static readonly layer = (path: string) => Layer.scoped(this, this.make(path))
}
