/**
 * `ferry summary <archive> --out <folder>`: one person's record (an archive of one Patient, or a few) as a folder
 * that person can open (GDPR Art. 15 and 20):
 *
 * - `README.html`: what the record says in plain language (`@ferry/transform/Summary`), linking the files;
 * - `files/`: every attachment of the record (stored in the archive, or inline `data`) as a file of its own,
 *   named by number, date and title, with the extension of its content type;
 * - `data/`: the archive's data files as plain NDJSON (gunzipped), the record in FHIR for another provider;
 * - `SHA256SUMS`: every file above, as `sha256sum -c` reads it.
 *
 * The archive is checked first, as an import checks it (complete, every data file and the checksum file's rows
 * agreeing); each blob is checked against its sha256 as it is read. The folder is written as `<out>.part` and
 * renamed when whole: a run stopped half-way leaves no folder that looks finished, and the next run starts over.
 * Folders 0700, files 0600: the folder holds a whole health record.
 */
import { createHash } from "node:crypto"
import * as NFS from "node:fs"
import * as Path from "node:path"
import * as Archive from "@ferry/archive/Archive"
import * as Attachments from "@ferry/archive/Attachments"
import { fsProblem } from "@ferry/core/FsProblem"
import type { Resource } from "@ferry/core/Ids"
import * as Summary from "@ferry/transform/Summary"
import { Effect, Exit, Schema, Stream } from "effect"

/**
 * What can stop a summary: Config (exit 2: an archive that is not one person's record, an `--out` that exists),
 * Archive (exit 5: an archive that is unfinished or damaged), Write (exit 5: the folder could not be written).
 */
export class SummaryError extends Schema.TaggedError<SummaryError>("@ferry/cli/SummaryError")(
  "SummaryError",
  {
    reason: Schema.Literal("Config", "Archive", "Write"),
    detail: Schema.String,
    cause: Schema.optional(Schema.Defect),
  },
) {
  override get message(): string {
    return this.detail
  }
}

/** More Patients than this: not one person's record (a family's request is a few). */
export const MAX_PEOPLE = 10

export interface SummaryOptions {
  readonly archive: string
  readonly out: string
  /** `ferry 0.2.0`: named at the foot of the page. */
  readonly tool: string
  /** Said on stderr as the folder is written. */
  readonly onNote?: (line: string) => Effect.Effect<void>
}

export interface SummaryResult {
  readonly out: string
  readonly people: ReadonlyArray<{ readonly id: string; readonly name: string }>
  readonly resources: number
  readonly files: number
  readonly dataFiles: number
  /** Attachments whose content is not in the archive (not fetched by the export): named on the page, no file. */
  readonly missingFiles: number
  readonly otherPeople: ReadonlyArray<Summary.OtherPeople>
}

const writeFailed = (path: string) => (cause: unknown) =>
  new SummaryError({
    reason: "Write",
    detail: `${path} could not be written (${fsProblem(cause)}); check the --out path and the free space`,
    cause,
  })

/** A file of the folder, written (0600) with its sha256 taken on the way. */
const writer = (root: string, rows: Array<readonly [string, string]>) => {
  const open = (rel: string) =>
    Effect.try({
      try: () => {
        const path = Path.join(root, rel)
        NFS.mkdirSync(Path.dirname(path), { recursive: true, mode: 0o700 })
        return { fd: NFS.openSync(path, "wx", 0o600), hash: createHash("sha256"), rel, closed: false }
      },
      catch: writeFailed(Path.join(root, rel)),
    })
  type Open = Effect.Effect.Success<ReturnType<typeof open>>
  const write = (f: Open, bytes: Uint8Array | string) =>
    Effect.try({
      try: () => {
        const b = typeof bytes === "string" ? Buffer.from(bytes) : bytes
        f.hash.update(b)
        let off = 0
        while (off < b.length) off += NFS.writeSync(f.fd, b, off, b.length - off)
      },
      catch: writeFailed(Path.join(root, f.rel)),
    })
  const close = (f: Open) =>
    Effect.try({
      try: () => {
        NFS.fsyncSync(f.fd)
        f.closed = true
        NFS.closeSync(f.fd)
        rows.push([f.hash.digest("hex"), f.rel])
      },
      catch: writeFailed(Path.join(root, f.rel)),
    })
  /** A whole file from a stream of pieces. */
  const file = <E>(rel: string, pieces: Stream.Stream<Uint8Array | string, E>) =>
    Effect.acquireUseRelease(
      open(rel),
      (f) =>
        Effect.zipRight(
          Stream.runForEach(pieces, (b) => write(f, b)),
          close(f),
        ),
      // (closed already when written whole; a failed write's file is left in <out>.part, which a rerun removes)
      (f) => (f.closed ? Effect.void : Effect.sync(() => NFS.closeSync(f.fd))),
    )
  return { file }
}

const archiveProblem = (detail: string, cause?: unknown) =>
  new SummaryError({ reason: "Archive", detail, ...(cause !== undefined ? { cause } : {}) })

export const write = Effect.fn("Summary.write")(function* (options: SummaryOptions) {
  const { archive, out } = options
  const note = options.onNote ?? (() => Effect.void)
  const manifest = yield* Archive.readManifest(archive)
  if (!manifest.complete)
    return yield* archiveProblem(
      `${archive} is an unfinished export (its manifest says it is not complete); run the same ferry export again (same --out) to finish it, then ferry summary`,
    )
  const mismatches = yield* Archive.verifyDataFiles(archive, manifest, { checksums: true })
  if (mismatches.length > 0)
    return yield* archiveProblem(`${archive}: ${Archive.describeMismatches(mismatches, manifest)}`)
  if (manifest.request.parameters._elements !== undefined)
    return yield* new SummaryError({
      reason: "Config",
      detail: `${archive} was exported with _elements (--elements): its resources are cut down to some elements, so it is not the whole record a person asked for; export again without --elements`,
    })

  // whose record: the archive's Patients (read first, so every other resource can be given to one of them)
  const patientFiles = manifest.files.filter((f) => f.type === "Patient")
  const patientCount = patientFiles.reduce((n, f) => n + f.count, 0)
  if (patientCount === 0 || patientCount > MAX_PEOPLE)
    return yield* new SummaryError({
      reason: "Config",
      detail: `${archive} holds ${patientCount === 0 ? "no Patient" : `${patientCount.toLocaleString("en-US")} Patients`}, and ferry summary is for one person's record (at most ${MAX_PEOPLE}); export that person's record with ferry export <url> --level patient --patient <id> --out <dir>, then run ferry summary on it`,
    })
  const ids: Array<string> = []
  for (const f of patientFiles)
    yield* Stream.runForEach(Archive.resources(archive, f), (r) =>
      Effect.sync(() => ids.push(r.value.id ?? "")),
    )
  const collector = Summary.collector(ids)

  // the folder: written whole as <out>.part, then renamed
  const part = `${out}.part`
  const outExists = yield* Effect.try({ try: () => NFS.existsSync(out), catch: writeFailed(out) })
  if (outExists)
    return yield* new SummaryError({
      reason: "Config",
      detail: `${out} already exists; choose another --out (ferry summary does not write over a folder)`,
    })
  yield* Effect.try({
    try: () => {
      NFS.rmSync(part, { recursive: true, force: true })
      NFS.mkdirSync(part, { recursive: true, mode: 0o700 })
    },
    catch: writeFailed(part),
  })
  // (what was written of a run that failed or was stopped is a partial health record: not left lying about)
  const { summary, files, data, missingFiles } = yield* Effect.gen(function* () {
    const rows: Array<readonly [string, string]> = []
    const w = writer(part, rows)

    // the blobs by the URL the resources hold
    const index = yield* Attachments.readIndex(archive)
    const byUrl = new Map<string, Attachments.IndexLine>()
    for (const line of index.values()) for (const u of line.sourceUrls) byUrl.set(u, line)

    const files: Array<Summary.DocumentFile> = []
    let missingFiles = 0
    const documents = (resource: Resource) =>
      Effect.forEach(Summary.documentsOf(resource), (doc) => {
        const a = doc.attachment
        const inline = typeof a.data === "string" && a.data !== "" ? Buffer.from(a.data, "base64") : undefined
        const stored = typeof a.url === "string" ? byUrl.get(a.url) : undefined
        if (inline === undefined && stored === undefined) {
          if (typeof a.url === "string" && a.url !== "") missingFiles++
          return Effect.void
        }
        const contentType = a.contentType ?? stored?.contentType
        const rel = `files/${Summary.fileName(files.length + 1, doc.date, doc.title, contentType)}`
        const resourceKey = `${resource.resourceType}/${resource.id ?? ""}`
        files.push({
          path: rel,
          resource: resourceKey,
          title: doc.title ?? "document",
          date: doc.date,
          contentType,
          size: inline?.length ?? stored?.size ?? 0,
        })
        return w.file(rel, inline !== undefined ? Stream.make(inline) : Attachments.read(archive, stored!))
      })

    // every data file: its resources into the summary and their documents into files/, its lines into data/
    const data: Array<{ path: string; type: string; resources: number }> = []
    for (const entry of manifest.files) {
      yield* Stream.runForEach(Archive.resources(archive, entry), (r) =>
        Effect.zipRight(
          Effect.sync(() => collector.add(r.value)),
          documents(r.value),
        ),
      )
      const rel = `data/${Path.basename(entry.path).replace(/\.gz$/, "")}`
      yield* w.file(
        rel,
        Stream.map(Archive.lines(archive, entry), (line) => `${line}\n`),
      )
      data.push({ path: rel, type: entry.type, resources: entry.count })
    }

    const summary = collector.result()
    const page = Summary.renderHtml(summary, {
      source: manifest.source.baseUrl,
      exportedAt: manifest.transactionTime,
      files,
      data,
      tool: options.tool,
    })
    yield* w.file("README.html", Stream.make(page))
    const sums = [...rows]
      .sort((a, b) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
      .map(([h, p]) => `${h}  ${p}\n`)
      .join("")
    yield* w.file("SHA256SUMS", Stream.make(sums))
    return { summary, files, data, missingFiles }
  }).pipe(
    Effect.onExit((exit) =>
      Exit.isSuccess(exit)
        ? Effect.void
        : Effect.sync(() => NFS.rmSync(part, { recursive: true, force: true })),
    ),
  )
  yield* Effect.try({
    try: () => {
      NFS.renameSync(part, out)
      const fd = NFS.openSync(Path.dirname(Path.resolve(out)), "r")
      NFS.fsyncSync(fd)
      NFS.closeSync(fd)
    },
    catch: writeFailed(out),
  })
  for (const o of summary.otherPeople)
    yield* note(
      `warning: ${o.resource} names ${o.patients === 1 ? "a Patient" : `${o.patients} Patients`} that ${o.patients === 1 ? "is" : "are"} not this record's (someone else's data): look at it before handing the folder over, or export again without its type (--type listing the others)`,
    )
  if (missingFiles > 0)
    yield* note(
      `warning: ${missingFiles} attachment${missingFiles === 1 ? "" : "s"} of the record ${missingFiles === 1 ? "is" : "are"} not in the archive (the export did not fetch ${missingFiles === 1 ? "it" : "them"}: --no-attachments or --allow-missing-attachments), so ${missingFiles === 1 ? "it is" : "they are"} not in files/`,
    )
  return {
    out,
    people: summary.people.map((p) => ({ id: p.id, name: p.name })),
    resources: summary.resources,
    files: files.length,
    dataFiles: data.length,
    missingFiles,
    otherPeople: summary.otherPeople,
  } satisfies SummaryResult
})
