import { Option, Schema } from "effect"

const Open = Schema.Record({ key: Schema.String, value: Schema.Unknown })
const Extension = Schema.Record({ key: Schema.String, value: Schema.Unknown })

/** A `link` item of a partial manifest ([STU3] `relation: "next"`). */
export const ManifestLink = Schema.Struct({ relation: Schema.String, url: Schema.String }, Open)
export type ManifestLink = typeof ManifestLink.Type

/**
 * One file of an export manifest. `type` is absent only for [STU3] `organizeOutputBy` exports, which may
 * carry `continuesInFile` instead.
 */
export const OutputFile = Schema.Struct(
  {
    // a resource type name: the archive names its file after it (`data/<type>.000.ndjson`), so a server's
    // `../../x` must not get that far
    type: Schema.optional(Schema.String.pipe(Schema.pattern(/^[A-Z][A-Za-z]{1,63}$/))),
    url: Schema.String,
    count: Schema.optional(Schema.Number),
    continuesInFile: Schema.optional(Schema.String),
    extension: Schema.optional(Extension),
  },
  Open,
)
export type OutputFile = typeof OutputFile.Type

const files = Schema.optionalWith(Schema.Array(OutputFile), { default: () => [] })

/**
 * The Bulk Data `$export` completion manifest (plain JSON, not a FHIR resource). `output` and `error` are
 * required by the IG but default to `[]` when a server leaves them out, and `requiresAccessToken` to `true`
 * (the token goes to the source's own origin only either way: refusing a finished job for it would waste it);
 * unnamed fields are kept.
 */
export const ExportManifest = Schema.Struct(
  {
    transactionTime: Schema.String,
    request: Schema.optional(Schema.String),
    requiresAccessToken: Schema.optionalWith(Schema.Boolean, { default: () => true }),
    outputOrganizedBy: Schema.optional(Schema.String),
    output: files,
    error: files,
    deleted: files,
    link: Schema.optional(Schema.Array(ManifestLink)),
    extension: Schema.optional(Extension),
  },
  Open,
)
export type ExportManifest = typeof ExportManifest.Type

/** The next part of a partial manifest ([STU3] `allowPartialManifests`). */
export const nextManifest = (manifest: {
  readonly link?: ReadonlyArray<ManifestLink>
}): Option.Option<string> => Option.fromNullable(manifest.link?.find((l) => l.relation === "next")?.url)

/** Every file to download: output, deleted and error, tagged with the list it came from. */
export const allFiles = (
  manifest: ExportManifest,
): ReadonlyArray<{ readonly kind: "output" | "deleted" | "error"; readonly file: OutputFile }> => [
  ...manifest.output.map((file) => ({ kind: "output" as const, file })),
  ...manifest.deleted.map((file) => ({ kind: "deleted" as const, file })),
  ...manifest.error.map((file) => ({ kind: "error" as const, file })),
]

/**
 * One item of an `$import` completion manifest (SMART draft A and Microsoft/Azure). The draft's prose says
 * `input`, its example and Azure say `inputUrl`: both are accepted; read it with `importInputUrl`.
 */
export const ImportFile = Schema.Struct(
  {
    type: Schema.optional(Schema.String),
    inputUrl: Schema.optional(Schema.String),
    input: Schema.optional(Schema.String),
    url: Schema.optional(Schema.String),
    count: Schema.optional(Schema.Number),
    extension: Schema.optional(Extension),
  },
  Open,
)
export type ImportFile = typeof ImportFile.Type

export const importInputUrl = (file: ImportFile): Option.Option<string> =>
  Option.fromNullable(file.inputUrl ?? file.input)

const importFiles = Schema.optionalWith(Schema.Array(ImportFile), { default: () => [] })

/**
 * The `$import` completion body of the SMART manifest draft and of Microsoft/Azure:
 * `{transactionTime, request, output[], error[]}`. HAPI answers with an OperationOutcome instead (decode that
 * with `OperationOutcome`). A 200 with `error` items is a partial success.
 */
export const ImportManifest = Schema.Struct(
  {
    transactionTime: Schema.optional(Schema.String),
    request: Schema.optional(Schema.String),
    /** As in an export manifest: `false` means the outcome files are fetched without the access token. */
    requiresAccessToken: Schema.optional(Schema.Boolean),
    output: importFiles,
    error: importFiles,
    extension: Schema.optional(Extension),
  },
  Open,
)
export type ImportManifest = typeof ImportManifest.Type

/** An `outcome` item of a ping-and-pull completion or a Bulk Submit status manifest. */
export const OutcomeFile = Schema.Struct(
  {
    url: Schema.String,
    count: Schema.optional(Schema.Number),
    manifestUrl: Schema.optional(Schema.String),
    countSeverity: Schema.optional(
      Schema.Array(Schema.Struct({ code: Schema.String, count: Schema.Number }, Open)),
    ),
    extension: Schema.optional(Extension),
  },
  Open,
)
export type OutcomeFile = typeof OutcomeFile.Type

/** The SMART "ping and pull" `$import` completion: `outcome` takes the place of `error`. */
export const PingAndPullManifest = Schema.Struct(
  {
    transactionTime: Schema.String,
    requiresAccessToken: Schema.optional(Schema.Boolean),
    outcome: Schema.optionalWith(Schema.Array(OutcomeFile), { default: () => [] }),
    extension: Schema.optional(Extension),
  },
  Open,
)
export type PingAndPullManifest = typeof PingAndPullManifest.Type

/** The HL7 Bulk Submit (`$bulk-submit-status`) status manifest. */
export const BulkSubmitStatusManifest = Schema.Struct(
  {
    submissionId: Schema.String,
    manifestType: Schema.optional(Schema.String),
    transactionTime: Schema.optional(Schema.String),
    requiresAccessToken: Schema.optional(Schema.Boolean),
    outputFormat: Schema.optional(Schema.String),
    outcome: Schema.optionalWith(Schema.Array(OutcomeFile), { default: () => [] }),
    output: files,
    deleted: files,
    link: Schema.optional(Schema.Array(ManifestLink)),
    extension: Schema.optional(Extension),
  },
  Open,
)
export type BulkSubmitStatusManifest = typeof BulkSubmitStatusManifest.Type
