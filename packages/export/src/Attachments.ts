/**
 * Attachments: every Attachment with a `url` in every exported resource (found by the core walker) is
 * fetched, stored once by sha256 under `attachments/<aa>/<sha256>`, checked against `size` and `hash`
 * (base64 SHA-1) where present, and recorded in `attachments/index.ndjson` (`sourceUrls`: the URL exactly as
 * the resource holds it → the blob).
 * Relative URLs resolve against the source base; `Binary/[id]` is read raw (`Accept` any type). Inline
 * `data` is left alone. Work already recorded in the journal is skipped.
 */
import { HttpClientRequest } from "@effect/platform"
import * as ArchiveAttachments from "@ferry/archive/Attachments"
import type { ArchiveError } from "@ferry/archive/ArchiveError"
import type { AuthError, FhirError } from "@ferry/core/Errors"
import type { FhirClient } from "@ferry/core/FhirClient"
import { isAbsolute, redactUrl, resolveUrl, sameOrigin } from "@ferry/core/Http"
import type { Resource } from "@ferry/core/Ids"
import * as Ndjson from "@ferry/core/Ndjson"
import * as Walker from "@ferry/core/Walker"
import { Effect, Stream } from "effect"
import { ExportError } from "./ExportError.js"
import type { ArchiveDir } from "./internal/ArchiveDir.js"

/** One attachment to fetch, with where it was found. */
export interface AttachmentRef {
  readonly url: string
  /** `Type/id` of the resource holding it. */
  readonly resource: string
  /** JSON path inside that resource. */
  readonly path: string
  readonly contentType: string | undefined
  readonly size: number | undefined
  readonly hash: string | undefined
}

/** What the index and the journal record for one fetched attachment. */
export interface StoredAttachment {
  readonly url: string
  readonly sha256: string
  readonly size: number
  readonly contentType: string | undefined
  readonly blob: string
  readonly resource: string
  readonly path: string
}

export interface AttachmentFailure {
  readonly url: string
  readonly resource: string
  readonly path: string
  readonly detail: string
}

export interface AttachmentSummary {
  readonly fetched: number
  readonly skipped: number
  readonly bytes: number
  readonly failed: ReadonlyArray<AttachmentFailure>
}

export interface AttachmentOptions {
  readonly concurrency: number
  readonly onStored?: (stored: StoredAttachment) => Effect.Effect<void, ExportError>
  readonly onFailed?: (failure: AttachmentFailure) => Effect.Effect<void, ExportError>
}

export const journalKey = (url: string): string => `attachment:${url}`

const binaryPath = /(?:^|\/)Binary\/[A-Za-z0-9\-.]{1,64}$/

/** Whether the URL names a Binary on the source server (read raw, `Accept` any type). */
export const isSourceBinary = (baseUrl: string, url: string): boolean => {
  const path = url.replace(/[?#].*$/, "")
  return binaryPath.test(path) && (!isAbsolute(url) || sameOrigin(url, baseUrl))
}

/** Every Attachment with a fetchable `url` in a resource. */
export const refsOf = (resource: Resource): ReadonlyArray<AttachmentRef> =>
  Walker.attachments(resource).flatMap((site) => {
    const a = site.attachment
    if (typeof a.url !== "string" || a.url === "" || a.url.startsWith("urn:") || a.url.startsWith("#"))
      return []
    return [
      {
        url: a.url,
        resource: `${resource.resourceType}/${resource.id ?? ""}`,
        path: site.path,
        contentType: typeof a.contentType === "string" ? a.contentType : undefined,
        size: typeof a.size === "number" ? a.size : undefined,
        hash: typeof a.hash === "string" ? a.hash : undefined,
      },
    ]
  })

const isFhirJson = (contentType: string | undefined): boolean =>
  contentType !== undefined && /application\/(fhir\+json|json\+fhir|json)/i.test(contentType)

/** Fetches one attachment into the archive's blob store (`@ferry/archive/Attachments.put`). */
export const fetchOne = (
  client: FhirClient,
  archive: ArchiveDir,
  ref: AttachmentRef,
): Effect.Effect<StoredAttachment, ExportError | ArchiveError | FhirError | AuthError> =>
  Effect.gen(function* () {
    const resolved = resolveUrl(client.baseUrl, ref.url)
    const binary = isSourceBinary(client.baseUrl, ref.url)
    const accept = binary ? "*/*" : (ref.contentType ?? "*/*")
    const response = yield* client.request(
      HttpClientRequest.get(resolved).pipe(HttpClientRequest.setHeader("accept", accept)),
    )
    const responseType = response.headers["content-type"]
    let contentType =
      binary && !isFhirJson(responseType) ? (responseType ?? ref.contentType) : ref.contentType
    let bytes: Stream.Stream<Uint8Array, ExportError>
    if (binary && isFhirJson(responseType)) {
      // The server ignored Accept and sent the Binary resource: its content is in `data` (base64).
      const json = yield* response.json.pipe(
        Effect.mapError(
          (cause) =>
            new ExportError({
              reason: "Attachment",
              url: redactUrl(resolved),
              detail: "the Binary answer is not readable JSON",
              cause,
            }),
        ),
      )
      const data = (json as { data?: unknown }).data
      const ct = (json as { contentType?: unknown }).contentType
      if (typeof ct === "string") contentType = ct
      bytes = Stream.succeed(typeof data === "string" ? Buffer.from(data, "base64") : new Uint8Array())
    } else {
      bytes = response.stream.pipe(
        Stream.mapError(
          (cause) =>
            new ExportError({
              reason: "Attachment",
              url: redactUrl(resolved),
              detail: "the download broke off",
              cause,
            }),
        ),
      )
    }
    const stored = yield* ArchiveAttachments.put(archive.root, bytes, {
      ...(contentType !== undefined ? { contentType } : {}),
      sourceUrl: ref.url,
    })
    const mismatch =
      ref.size !== undefined && ref.size !== stored.size
        ? `its size is ${stored.size} bytes but the Attachment says ${ref.size}`
        : ref.hash !== undefined && ref.hash !== stored.sha1
          ? `its SHA-1 is ${stored.sha1} but the Attachment's hash says ${ref.hash}`
          : undefined
    if (mismatch !== undefined) {
      return yield* new ExportError({
        reason: "Attachment",
        url: redactUrl(resolved),
        detail: `the attachment of ${ref.resource} (${ref.path}) does not match: ${mismatch}; the source data is inconsistent, check it at the source`,
      })
    }
    return {
      url: ref.url,
      sha256: stored.sha256,
      size: stored.size,
      contentType,
      blob: ArchiveAttachments.relativePath(stored.sha256),
      resource: ref.resource,
      path: ref.path,
    } satisfies StoredAttachment
  })

/**
 * Walks the given NDJSON files, fetches every attachment not yet in the journal (bounded concurrency)
 * and records each in the index and the journal. Failures are collected, not thrown: the caller reports
 * them after everything else was fetched.
 */
export const fetchAll = Effect.fn("Attachments.fetchAll")(function* (
  client: FhirClient,
  archive: ArchiveDir,
  files: ReadonlyArray<{ readonly path: string; readonly label: string }>,
  options: AttachmentOptions,
) {
  const seen = new Set<string>()
  let fetched = 0
  let skipped = 0
  let bytes = 0
  const failed: Array<AttachmentFailure> = []
  yield* Stream.fromIterable(files).pipe(
    Stream.flatMap((f) => Ndjson.readFile(f.path, { label: f.label }), { concurrency: 1 }),
    Stream.mapError(
      (e) =>
        new ExportError({
          reason: "Archive",
          detail: `${e.message}; the archive file changed while reading it`,
          cause: e,
        }),
    ),
    Stream.mapConcat((item) => refsOf(item.value)),
    Stream.filter((ref) => {
      if (seen.has(ref.url)) return false
      seen.add(ref.url)
      if (archive.journal.isDone(journalKey(ref.url))) {
        skipped++
        return false
      }
      return true
    }),
    Stream.mapEffect(
      (ref) =>
        fetchOne(client, archive, ref).pipe(
          Effect.flatMap((stored) =>
            archive.journal.append(journalKey(ref.url), stored).pipe(
              Effect.zipRight(options.onStored ? options.onStored(stored) : Effect.void),
              Effect.zipRight(
                Effect.sync(() => {
                  fetched++
                  bytes += stored.size
                }),
              ),
            ),
          ),
          Effect.catchAll((e) => {
            if (e._tag === "ArchiveError" || (e._tag === "ExportError" && e.reason === "Archive"))
              return Effect.fail(e)
            const failure: AttachmentFailure = {
              url: redactUrl(resolveUrl(client.baseUrl, ref.url)),
              resource: ref.resource,
              path: ref.path,
              detail: e.message,
            }
            failed.push(failure)
            return options.onFailed ? options.onFailed(failure) : Effect.void
          }),
        ),
      { concurrency: options.concurrency, unordered: true },
    ),
    Stream.runDrain,
  )
  return { fetched, skipped, bytes, failed } satisfies AttachmentSummary
})
