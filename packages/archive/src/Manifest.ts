/** `manifest.json`: what an archive holds. The contract between export, import and verify. */
import { Schema } from "effect"

/**
 * The format written. `ferry-archive/2` added attachment packs (`attachments/packs/`, index lines with `pack` and
 * `offset`), which a reader of `/1` does not know; `/3` lists `manifest.json` and `attachments/index.ndjson` in
 * `checksums.sha256` too (which a reader of `/2` would call files the manifest does not list): an archive this
 * ferry writes to says `/3`.
 */
export const FORMAT = "ferry-archive/3" as const
/** The formats read: `/1` is `/2` without packs, `/2` is `/3` without the checksums of the manifest and index. */
export const FORMATS = ["ferry-archive/1", "ferry-archive/2", FORMAT] as const

/** Whether an archive of this format lists its manifest and attachment index in `checksums.sha256` (`/3` on). */
export const checksumsCoverMetadata = (format: (typeof FORMATS)[number]): boolean =>
  format !== "ferry-archive/1" && format !== "ferry-archive/2"

export const Compression = Schema.Literal("none", "gzip")
export type Compression = typeof Compression.Type

/** One NDJSON file of the archive (data, deleted or errors). `path` is relative to the archive root. */
export const FileEntry = Schema.Struct({
  // a resource type name: paths are made of it (`quarantine/<type>.ndjson`), so nothing like `../x` passes
  type: Schema.String.pipe(Schema.pattern(/^[A-Z][A-Za-z]{1,63}$/)),
  path: Schema.String,
  count: Schema.Number,
  bytes: Schema.Number,
  sha256: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/)),
  compression: Compression,
})
export type FileEntry = typeof FileEntry.Type

/** An absolute http(s) URL (the source's base: relative references and attachment URLs resolve against it). */
const HttpUrl = Schema.String.pipe(
  Schema.filter(
    (s) => {
      try {
        return /^https?:$/.test(new URL(s).protocol)
      } catch {
        return false
      }
    },
    { message: () => "an absolute http(s) URL" },
  ),
)

export const Level = Schema.Literal("system", "patient", "group")
export type Level = typeof Level.Type

export const Manifest = Schema.Struct({
  format: Schema.Literal(...FORMATS),
  createdAt: Schema.String,
  tool: Schema.Struct({ name: Schema.String, version: Schema.String }),
  source: Schema.Struct({ baseUrl: HttpUrl, fhirVersion: Schema.optional(Schema.String) }),
  request: Schema.Struct({
    level: Level,
    groupId: Schema.optional(Schema.String),
    /** The kick-off URL (or the crawl's first search URL). */
    url: Schema.String,
    /** Kick-off parameters, e.g. `{ _type: ["Patient"], _since: "…" }`. */
    parameters: Schema.Record({
      key: Schema.String,
      value: Schema.Union(Schema.String, Schema.Array(Schema.String)),
    }),
  }),
  /** The server's transactionTime from the export manifest; absent until the server reported it. */
  transactionTime: Schema.optional(Schema.String),
  /** True once every file and attachment is in the archive and checked. */
  complete: Schema.Boolean,
  files: Schema.Array(FileEntry),
  deleted: Schema.Array(FileEntry),
  errors: Schema.Array(FileEntry),
  attachments: Schema.Struct({ count: Schema.Number, bytes: Schema.Number }),
  /** For an incremental export: the transactionTime of the export it continues (`_since`). */
  previous: Schema.optional(Schema.Struct({ transactionTime: Schema.String })),
})
export type Manifest = typeof Manifest.Type

/** What `Archive.create` needs; everything else starts empty. */
export interface Init {
  readonly tool: { readonly name: string; readonly version: string }
  readonly source: { readonly baseUrl: string; readonly fhirVersion?: string }
  readonly request: Manifest["request"]
  readonly transactionTime?: string
  readonly previous?: { readonly transactionTime: string }
}

export type Section = "files" | "deleted" | "errors"

/** Add (or replace, by path) file entries in one section. Pure. */
export const addFiles = (
  manifest: Manifest,
  section: Section,
  entries: ReadonlyArray<FileEntry>,
): Manifest => {
  const paths = new Set(entries.map((e) => e.path))
  return { ...manifest, [section]: [...manifest[section].filter((e) => !paths.has(e.path)), ...entries] }
}

/** Resources per type over the data files. */
export const counts = (manifest: Manifest): ReadonlyMap<string, number> => {
  const m = new Map<string, number>()
  for (const f of manifest.files) m.set(f.type, (m.get(f.type) ?? 0) + f.count)
  return m
}
