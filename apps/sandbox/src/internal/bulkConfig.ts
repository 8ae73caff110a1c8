import { Either, Schema } from "effect"

/**
 * Options of the sandbox's bulk operations (`$export`, `$import`): the `bulk` config section, or the
 * last argument of BulkExport.register / BulkImport.register.
 */
export const BulkConfig = Schema.Struct({
  /** Export files are split after this many resources (`Patient.000.ndjson`, `Patient.001.ndjson`, …). */
  resourcesPerFile: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.positive()), {
    default: () => 10_000,
  }),
  /** Status polls answered 202 (with X-Progress) before a finished job's 200, per job. */
  pollsBeforeDone: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.nonNegative()), {
    default: () => 1,
  }),
  /** `Retry-After` (seconds) on 202 status answers. */
  retryAfterSeconds: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.nonNegative()), {
    default: () => 1,
  }),
  /**
   * [STU3] Exports kicked off with `allowPartialManifests=true`: output items per manifest part. A part is
   * published (in the 202 answers while the job runs, for part 1) as soon as it is full, and links to the next.
   */
  manifestPartSize: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.positive()), {
    default: () => 10,
  }),
  /** `Expires` on manifests: files stay downloadable this long (they stay until DELETE or close anyway). */
  fileLifetimeSeconds: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.positive()), {
    default: () => 3600,
  }),
  /**
   * `organizeOutputBy` exports: after a block's header is repeated at the top of the next file, repeat the
   * owner resource too (some servers do; a client must not count or import it twice). Default false.
   */
  organizedRepeatOwner: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /**
   * `organizeOutputBy` exports: whether a file's manifest `count` includes the header `Parameters` lines (the
   * IG does not say; servers differ). Default true.
   */
  organizedCountHeaders: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  /**
   * Export file URLs carry a per-job signature (`?sig=…`, as signed S3 or Azure links do) and are served
   * without a token to whoever holds them; the manifest then says `requiresAccessToken: false`, so a client
   * must not send its token there. Default false (with auth on, files need the token).
   */
  signedUrls: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /** Where job directories go (default: the OS temp dir). */
  tempDir: Schema.optional(Schema.String),
  /** `$import`: bearer token sent when fetching input files (unless the request's storageDetail gives one). */
  importFetchToken: Schema.optional(Schema.String),
})
export type BulkConfig = typeof BulkConfig.Type
export type BulkConfigInput = typeof BulkConfig.Encoded

export const decodeBulkConfig = (input: unknown): BulkConfig => {
  const decoded = Schema.decodeUnknownEither(BulkConfig)(input ?? {}, { onExcessProperty: "error" })
  if (Either.isLeft(decoded)) throw new Error(`sandbox config "bulk" is invalid: ${decoded.left.message}`)
  return decoded.right
}
