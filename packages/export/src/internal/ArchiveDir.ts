/**
 * The archive as the export writes it, on top of `@ferry/archive` (layout, manifest, lock, journal,
 * attachment blobs): this module adds the export's view of the journal (a synchronous mirror of the
 * finished steps, keyed as below) and the event log (`events.ndjson`, no tokens, no resource bodies).
 *
 * Journal keys (kind `export.<first segment>`): `request`, `mode`, `job`, `manifest`,
 * `file:<kind>:<Type>:<n>`, `attachments:<file key>` (that file's attachments are in the archive), `complete`;
 * for organizeOutputBy output (Organized.ts) `organized:<n>:<url tag>` (the staged file is downloaded and
 * checked) and `split:<n>:<url tag>` (its per-type data files, `FileEntry[]`).
 */
import * as NFS from "node:fs"
import * as Path from "node:path"
import * as Archive from "@ferry/archive/Archive"
import type { ArchiveError } from "@ferry/archive/ArchiveError"
import { Journal as ArchiveJournal } from "@ferry/archive/Journal"
import * as Events from "@ferry/archive/Events"
import type { FileEntry, Init, Manifest } from "@ferry/archive/Manifest"
import { Clock, Effect, Exit, Option, type Scope } from "effect"
import { ExportError } from "../ExportError.js"

export const ioError = (path: string, what: string) => (cause: unknown) =>
  new ExportError({
    reason: "Archive",
    detail: `${path}: could not ${what} (${cause instanceof Error ? cause.message : String(cause)}); check the path, its permissions and free disk space`,
    cause,
  })

export const fsTry = <A>(path: string, what: string, f: () => Promise<A>): Effect.Effect<A, ExportError> =>
  Effect.tryPromise({ try: f, catch: ioError(path, what) })

/** The finished steps, readable without an effect. */
export interface Journal {
  readonly append: (key: string, result: unknown) => Effect.Effect<void, ArchiveError>
  /** Undo a step: a `null` line for `key`, after which (also for later runs) the step is not done. */
  readonly forget: (key: string) => Effect.Effect<void, ArchiveError>
  readonly isDone: (key: string) => boolean
  readonly result: (key: string) => Option.Option<unknown>
  /** The keys of the steps done, in the order they were first done. */
  readonly keys: () => ReadonlyArray<string>
}

export interface ArchiveDir {
  readonly root: string
  readonly path: (...parts: ReadonlyArray<string>) => string
  readonly journal: Journal
  /** The manifest as found (or created) when the archive was opened. */
  readonly manifest: Manifest
  readonly event: (name: string, fields?: Record<string, unknown>) => Effect.Effect<void, ExportError>
}

/** A finished archive file and the manifest list it came from. */
export type ArchiveFile = FileEntry & { readonly kind: "output" | "deleted" | "error" }

/** Events logged at level "warn" (everything else is "info"). */
const warnings: ReadonlySet<string> = new Set([
  "warning",
  "expired",
  "count-mismatch",
  "attachment-failed",
  "poll-retry",
  "fallback",
  "job-gone",
  "interrupted",
])

const kindOf = (key: string): string => `export.${key.split(":")[0]}`

/** A file opened for appending whole lines (0600). */
const appender = (file: string) =>
  Effect.gen(function* () {
    const handle = yield* Effect.acquireRelease(
      fsTry(file, "open", async () => {
        const h = await NFS.promises.open(file, "a", 0o600)
        await h.chmod(0o600)
        return h
      }),
      (h) => Effect.promise(() => h.close().catch(() => undefined)),
    )
    const lock = yield* Effect.makeSemaphore(1)
    return (line: string): Effect.Effect<void, ExportError> =>
      lock.withPermits(1)(fsTry(file, "append to", () => handle.write(`${line}\n`).then(() => undefined)))
  })

/**
 * Takes the archive's lock (unless the caller holds it), creates the archive (empty manifest, `complete: false`) unless it exists, and
 * opens its journal and event log.
 */
export const open = (
  root: string,
  init: Init,
  lockHeld = false,
): Effect.Effect<ArchiveDir, ArchiveError | ExportError, Scope.Scope> =>
  Effect.gen(function* () {
    const abs = Path.resolve(root)
    // (a caller that holds it for longer, `ferry migrate`, took it and cleared the leftovers already)
    if (!lockHeld) yield* Archive.lock(abs)
    const exists = yield* fsTry(abs, "read", () =>
      NFS.promises.access(Path.join(abs, Archive.layout.manifest)).then(
        () => true,
        () => false,
      ),
    )
    const manifest = exists ? yield* Archive.readManifest(abs) : yield* Archive.create(abs, init)
    const journal = yield* ArchiveJournal.make(Path.join(abs, Archive.layout.journal))
    const mirror = new Map<string, unknown>()
    for (const e of yield* journal.entries("export.")) {
      if (e.data === null) mirror.delete(e.key)
      else mirror.set(e.key, e.data)
    }
    // (a line a killed run left torn is cut off: the next event must not run on from it)
    yield* Events.cutTornLine(abs)
    const appendEvent = yield* appender(Path.join(abs, Archive.layout.events))
    return {
      root: abs,
      path: (...parts) => Path.join(abs, ...parts),
      manifest,
      journal: {
        // a line that reached the journal is in the mirror too, even if the fiber is interrupted right after
        // (a line the mirror did not know could not be forgotten)
        append: (key, result) =>
          journal
            .append(kindOf(key), key, result)
            .pipe(
              Effect.onExit((exit) =>
                Exit.isSuccess(exit) ? Effect.sync(() => mirror.set(key, result)) : Effect.void,
              ),
            ),
        forget: (key) =>
          mirror.has(key)
            ? journal
                .append(kindOf(key), key, null)
                .pipe(
                  Effect.onExit((exit) =>
                    Exit.isSuccess(exit) ? Effect.sync(() => mirror.delete(key)) : Effect.void,
                  ),
                )
            : Effect.void,
        isDone: (key) => mirror.has(key),
        keys: () => [...mirror.keys()],
        result: (key) => (mirror.has(key) ? Option.some(mirror.get(key)) : Option.none()),
      },
      event: (name, fields = {}) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          appendEvent(
            // the safety net of Events.append; the line's own at/level/event cannot be overwritten by a field
            JSON.stringify({
              ...Events.redact(fields),
              at: new Date(now).toISOString(),
              level: warnings.has(name) ? "warn" : "info",
              event: name,
            }),
          ),
        ),
    } satisfies ArchiveDir
  })

/** The manifest of a finished archive in `dir`, if there is one. */
export const finishedManifest = (dir: string): Effect.Effect<Option.Option<Manifest>> =>
  Archive.readManifest(dir).pipe(
    Effect.map((m) => (m.complete ? Option.some(m) : Option.none())),
    Effect.orElseSucceed(() => Option.none()),
  )
