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
import { makeDirsSync } from "@ferry/core/Dirs"
import { fsProblem } from "@ferry/core/FsProblem"
import type { Resource } from "@ferry/core/Ids"
import * as Summary from "@ferry/transform/Summary"
import { Effect, Exit, Option, Schema, Stream } from "effect"

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
  /** Keep resources that also name Patients who are not the record's (a cohort Group): left out by default. */
  readonly includeOthers?: boolean
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
  /** Attachments whose inline `data` is not base64: not written. */
  readonly unreadableFiles: number
  /** Resources left out because they also name other Patients (`--include-others` keeps them). */
  readonly leftOut: ReadonlyArray<{ readonly resource: string; readonly patients: number }>
  /** With `--include-others`: the kept resources that name other Patients. */
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
        makeDirsSync(Path.dirname(path), 0o700)
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
  /** A file written whole that is not to be kept after all (a data file whose every resource was left out). */
  const discard = (rel: string) =>
    Effect.try({
      try: () => {
        NFS.rmSync(Path.join(root, rel))
        const i = rows.findIndex((r) => r[1] === rel)
        if (i >= 0) rows.splice(i, 1)
      },
      catch: writeFailed(Path.join(root, rel)),
    })
  return { file, discard }
}

const archiveProblem = (detail: string, cause?: unknown) =>
  new SummaryError({ reason: "Archive", detail, ...(cause !== undefined ? { cause } : {}) })

/** The marker a `<out>.part` folder of this command holds: one without it is not removed. */
const PART_MARKER = ".ferry-summary-part"

/** Base64 as FHIR's `data` holds it (whitespace allowed). */
const isBase64 = (text: string): boolean => /^[A-Za-z0-9+/]*={0,2}$/.test(text.replace(/\s+/g, ""))

export const write = Effect.fn("Summary.write")(function* (options: SummaryOptions) {
  const { archive, out } = options
  const note = options.onNote ?? (() => Effect.void)
  const manifest = yield* Archive.readManifest(archive)
  if (!manifest.complete)
    return yield* archiveProblem(
      `${archive} is an unfinished export (its manifest says it is not complete); run the same ferry export again (same --out) to finish it, then ferry summary`,
    )
  const usage = (detail: string) => new SummaryError({ reason: "Config", detail })
  const howTo =
    "export that person's record with ferry export <url> --level patient --patient <id> --out <dir>, then run ferry summary on it"
  if (manifest.request.level === "system")
    return yield* usage(
      `${archive} is a system-level export (resources of every kind, about anyone), not one person's record; ${howTo}`,
    )
  if (manifest.request.parameters._elements !== undefined)
    return yield* usage(
      `${archive} was exported with _elements (--elements): its resources are cut down to some elements, so it is not the whole record a person asked for; export again without --elements`,
    )
  if (manifest.request.parameters._since !== undefined)
    return yield* usage(
      `${archive} is an incremental export (--since): it holds what changed since then, not the whole record; export again without --since`,
    )
  const resolved = Path.resolve(out)
  if (resolved === Path.resolve(archive) || resolved.startsWith(`${Path.resolve(archive)}${Path.sep}`))
    return yield* usage(`--out ${out} is inside the archive ${archive}; choose a folder outside it`)

  // the folder: written whole as <out>.part (marked as this command's), then renamed
  const part = `${out}.part`
  const exists = (path: string) => Effect.try({ try: () => NFS.existsSync(path), catch: writeFailed(path) })
  if (yield* exists(out))
    return yield* usage(
      `${out} already exists; choose another --out (ferry summary does not write over a folder)`,
    )
  if ((yield* exists(part)) && !(yield* exists(Path.join(part, PART_MARKER))))
    return yield* usage(
      `${part} exists and was not left by ferry summary; move it away, or choose another --out`,
    )
  // whose record: the archive's Patients (read first, so every other resource can be given to one of them)
  const patientFiles = manifest.files.filter((f) => f.type === "Patient")
  const patientCount = patientFiles.reduce((n, f) => n + f.count, 0)
  if (patientCount === 0 || patientCount > MAX_PEOPLE)
    return yield* usage(
      `${archive} holds ${patientCount === 0 ? "no Patient" : `${patientCount.toLocaleString("en-US")} Patients`}, and ferry summary is for one person's record (at most ${MAX_PEOPLE}); ${howTo}`,
    )
  // (the cheap refusals first: the data files are re-hashed only for a record that will be written)
  const mismatches = yield* Archive.verifyDataFiles(archive, manifest, { checksums: true })
  if (mismatches.length > 0)
    return yield* archiveProblem(`${archive}: ${Archive.describeMismatches(mismatches, manifest)}`)
  const ids: Array<string> = []
  for (const f of patientFiles)
    yield* Stream.runForEach(Archive.resources(archive, f), (r) =>
      Effect.sync(() => ids.push(r.value.id ?? "")),
    )
  const collector = Summary.collector(ids)

  yield* Effect.try({
    try: () => {
      NFS.rmSync(part, { recursive: true, force: true })
      makeDirsSync(part, 0o700)
      NFS.writeFileSync(Path.join(part, PART_MARKER), "", { mode: 0o600 })
    },
    catch: writeFailed(part),
  })
  // (what was written of a run that failed or was stopped is a partial health record: not left lying about)
  let renamed = false
  const written = yield* Effect.gen(function* () {
    const rows: Array<readonly [string, string]> = []
    const w = writer(part, rows)

    // the blobs by the URL the resources hold
    const index = yield* Attachments.readIndex(archive)
    const byUrl = new Map<string, Attachments.IndexLine>()
    for (const line of index.values()) for (const u of line.sourceUrls) byUrl.set(u, line)

    const files: Array<Summary.DocumentFile> = []
    let missingFiles = 0
    let unreadableFiles = 0
    const documents = (resource: Resource) =>
      Effect.forEach(Summary.documentsOf(resource), (doc) => {
        const a = doc.attachment
        const data = typeof a.data === "string" && a.data !== "" ? a.data : undefined
        if (data !== undefined && !isBase64(data)) {
          unreadableFiles++
          return Effect.void
        }
        const inline = data !== undefined ? Buffer.from(data, "base64") : undefined
        const stored = typeof a.url === "string" ? byUrl.get(a.url) : undefined
        if (inline === undefined && stored === undefined) {
          if (typeof a.url === "string" && a.url !== "") missingFiles++
          return Effect.void
        }
        const contentType = a.contentType ?? stored?.contentType
        const rel = `files/${Summary.fileName(files.length + 1, doc.date, doc.title, contentType)}`
        // (the name is made of safe characters; checked all the same: it must stay in files/)
        if (Path.dirname(Path.resolve(part, rel)) !== Path.resolve(part, "files"))
          return Effect.die(new Error(`a document's file name left files/: ${rel}`))
        files.push({
          path: rel,
          resource: `${resource.resourceType}/${resource.id ?? ""}`,
          title: doc.title ?? "document",
          date: doc.date,
          contentType,
          size: inline?.length ?? stored?.size ?? 0,
        })
        return w.file(rel, inline !== undefined ? Stream.make(inline) : Attachments.read(archive, stored!))
      })

    // every data file's lines: each resource into the summary, its documents into files/, its line into data/;
    // one that also names other Patients is left out (someone else's data) unless asked for
    const data: Array<{ path: string; type: string; resources: number }> = []
    const leftOut: Array<{ readonly resource: string; readonly patients: number }> = []
    const related: Array<string> = []
    for (const entry of manifest.files) {
      const rel = `data/${Path.basename(entry.path).replace(/\.gz$/, "")}`
      let kept = 0
      let n = 0
      const keptLines = Archive.lines(archive, entry).pipe(
        Stream.mapEffect((line) =>
          Effect.gen(function* () {
            n++
            const resource = yield* Effect.try({
              try: () => JSON.parse(line) as Resource,
              catch: (cause) =>
                archiveProblem(
                  `${archive}: ${entry.path}:${n} is not JSON; the archive is damaged: restore it from a copy, or export again`,
                  cause,
                ),
            })
            if (resource?.resourceType !== entry.type)
              return yield* archiveProblem(
                `${archive}: ${entry.path}:${n} is not a ${entry.type} resource, as the manifest says the file holds; the archive is damaged: restore it from a copy, or export again`,
              )
            const key = `${resource.resourceType}/${resource.id ?? ""}`
            const others = collector.add(resource, options.includeOthers !== true)
            if (others > 0 && options.includeOthers !== true) {
              leftOut.push({ resource: key, patients: others })
              return Option.none<string>()
            }
            if (resource.resourceType === "RelatedPerson") related.push(key)
            yield* documents(resource)
            kept++
            return Option.some(`${line}\n`)
          }),
        ),
        Stream.filterMap((x) => x),
      )
      yield* w.file(rel, keptLines)
      // (a file whose every resource was left out is not kept)
      if (kept > 0) data.push({ path: rel, type: entry.type, resources: kept })
      else yield* w.discard(rel)
    }

    const summary = collector.result()
    const page = Summary.renderHtml(summary, {
      source: manifest.source.baseUrl,
      exportedAt: manifest.transactionTime,
      files,
      data,
      tool: options.tool,
      leftOut: leftOut.length,
      missingFiles,
      unreadableFiles,
    })
    yield* w.file("README.html", Stream.make(page))
    const sums = [...rows]
      .sort((a, b) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
      .map(([h, p]) => `${h}  ${p}\n`)
      .join("")
    yield* w.file("SHA256SUMS", Stream.make(sums))
    yield* Effect.try({ try: () => NFS.renameSync(part, out), catch: writeFailed(out) })
    renamed = true
    return { summary, files, data, missingFiles, unreadableFiles, leftOut, related }
  }).pipe(
    Effect.onExit((exit) =>
      Exit.isSuccess(exit) || renamed
        ? Effect.void
        : Effect.sync(() => NFS.rmSync(part, { recursive: true, force: true })),
    ),
  )
  // (the marker goes once the folder is in place: a failed rename leaves a marked <out>.part a rerun replaces)
  yield* Effect.try({ try: () => NFS.rmSync(Path.join(out, PART_MARKER)), catch: writeFailed(out) })
  yield* Archive.syncParent(Path.resolve(out))
  const { summary, files, data, missingFiles, unreadableFiles, leftOut, related } = written
  const firstFew = (list: ReadonlyArray<string>) =>
    `${list.slice(0, 3).join(", ")}${list.length > 3 ? `, and ${list.length - 3} more` : ""}`
  if (leftOut.length > 0)
    yield* note(
      `left out ${leftOut.length} resource${leftOut.length === 1 ? "" : "s"} that also name${leftOut.length === 1 ? "s" : ""} Patients who are not this record's (someone else's data): ${firstFew(leftOut.map((o) => `${o.resource} (${o.patients} other${o.patients === 1 ? "" : "s"})`))}; --include-others keeps them`,
    )
  if (options.includeOthers === true && summary.otherPeople.length > 0)
    yield* note(
      `warning: ${summary.otherPeople.length} resource${summary.otherPeople.length === 1 ? "" : "s"} kept (--include-others) also name${summary.otherPeople.length === 1 ? "s" : ""} Patients who are not this record's: ${firstFew(summary.otherPeople.map((o) => o.resource))}; look at ${summary.otherPeople.length === 1 ? "it" : "them"} before handing the folder over`,
    )
  if (related.length > 0)
    yield* note(
      `warning: ${related.length} RelatedPerson resource${related.length === 1 ? " is" : "s are"} about other people (relatives or contacts of the patient), kept in the folder: ${firstFew(related)}; look at ${related.length === 1 ? "it" : "them"} before handing the folder over`,
    )
  if (missingFiles > 0)
    yield* note(
      `warning: ${missingFiles} attachment${missingFiles === 1 ? "" : "s"} of the record ${missingFiles === 1 ? "is" : "are"} not in the archive (the export did not fetch ${missingFiles === 1 ? "it" : "them"}: --no-attachments or --allow-missing-attachments), so ${missingFiles === 1 ? "it is" : "they are"} not in files/; the page says so`,
    )
  if (unreadableFiles > 0)
    yield* note(
      `warning: ${unreadableFiles} attachment${unreadableFiles === 1 ? "'s" : "s'"} inline data ${unreadableFiles === 1 ? "is" : "are"} not base64, so not written; the page says so`,
    )
  return {
    out,
    people: summary.people.map((p) => ({ id: p.id, name: p.name })),
    resources: summary.resources,
    files: files.length,
    dataFiles: data.length,
    missingFiles,
    unreadableFiles,
    leftOut,
    otherPeople: summary.otherPeople,
  } satisfies SummaryResult
})
