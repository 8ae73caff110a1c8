/**
 * Attachments: every Attachment with a `url` in every exported resource (found by the core walker) is
 * fetched, stored once by sha256 under `attachments/<aa>/<sha256>`, checked against `size` and `hash`
 * (base64 SHA-1) where present, and recorded in `attachments/index.ndjson` (`sourceUrls`: the URL exactly as
 * the resource holds it → the blob).
 * Relative URLs resolve against the source base; `Binary/[id]` is read raw (`Accept` any type). Inline
 * `data` is left alone.
 *
 * The export fetches a file's attachments while the file downloads, a batch whenever enough references are
 * found, and the rest once it is complete (`Fetcher.forRefs`), with one bound on requests in flight across
 * files. Blobs are committed in batches (`@ferry/archive/Attachments`
 * `Store`: parallel fsyncs, then one fsynced index append), so the index is the record of finished
 * attachments: a URL found in it is not fetched again by a resumed run.
 */
import { pipeline } from "node:stream"
import * as ArchiveAttachments from "@ferry/archive/Attachments"
import type { ArchiveError } from "@ferry/archive/ArchiveError"
import { DigestSet, digest16 } from "@ferry/core/DigestSet"
import type { AuthError, FhirError } from "@ferry/core/Errors"
import type { FhirClient } from "@ferry/core/FhirClient"
import {
  discardBody,
  isAbsolute,
  isBodyTimeout,
  originOf,
  redactUrl,
  resolveUrl,
  STALLED,
  sameOrigin,
} from "@ferry/core/Http"
import type { Resource } from "@ferry/core/Ids"
import * as Ndjson from "@ferry/core/Ndjson"
import { forEachPooled } from "@ferry/core/Pool"
import * as Walker from "@ferry/core/Walker"
import { Deferred, Effect, Exit, FiberId, Option, Schedule, Stream } from "effect"
import { ExportError } from "./ExportError.js"
import { decoderFor } from "./internal/Encoding.js"
import type { ArchiveDir } from "./internal/ArchiveDir.js"
import type { ExportedBinaries } from "./internal/ExportedBinaries.js"

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
  /**
   * Whether attachments are fetched from this origin (`https://host:port`, `null` for a URL that is not
   * http(s)); default: every origin. One that is not is a failed attachment saying which flag allows it.
   */
  readonly allowOrigin?: (origin: string) => boolean
  /** The source's Binaries the export holds as resources: one of those is copied, not fetched again. */
  readonly exported?: Pick<ExportedBinaries, "read" | "peek">
}

/**
 * Why an attachment URL on `origin` is not fetched: the URLs in resources are data, written by whoever wrote the
 * resource, and followed blindly they would make Ferry fetch from machines of the network it runs in (a cloud
 * metadata address, an internal admin page) into the archive and on into the target.
 */
export const originNotAllowed = (origin: string): string =>
  origin === "null"
    ? "not fetched: only http(s) attachment URLs are fetched"
    : `not fetched: ${origin} is neither the source's origin nor one its manifest names its files on, and a URL in the data is not followed to other machines unasked; if the source's attachments are kept there, add --attachment-origin ${origin} (or --attachment-origin any)`

const binaryPath = /(?:^|\/)Binary\/[A-Za-z0-9\-.]{1,64}$/
const binaryId = /^[A-Za-z0-9\-.]{1,64}$/

/** Whether the URL names a Binary on the source server (read raw, `Accept` any type). */
export const isSourceBinary = (baseUrl: string, url: string): boolean =>
  namesBinary(url) && (!isAbsolute(url) || sameOrigin(url, baseUrl))

/** Whether the URL's path names a Binary (`Binary/[id]`), on whatever server. */
const namesBinary = (url: string): boolean => binaryPath.test(url.replace(/[?#].*$/, ""))

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

/** Bodies up to this size (by Content-Length) are read whole and stored in one step (`Store.storeBytes`). */
const WHOLE = 1024 * 1024

/**
 * Bounds for `fetchOne`: `http` is held while the request is made and the body read (the `--parallel` bound on
 * the server). A body read whole is stored outside it (synchronously: `Store.storeBytes`), so the next request
 * does not wait for that.
 */
export interface Gates {
  readonly http: Effect.Semaphore
}

/** What `fetchOne` knows of a reference before fetching it (the fetcher has worked it out already). */
export interface Resolved {
  /** The URL resolved against the source base. */
  readonly url: string
  /** Whether it names a Binary on the source (`isSourceBinary`). */
  readonly binary: boolean
  /** The origins a redirect may lead to (`FetchOptions.allowOrigin`); default any. */
  readonly followTo?: (origin: string) => boolean
}

const BROKE_OFF = "the download broke off, or its Content-Encoding could not be undone"

/**
 * A body that broke off (a reset connection) or stalled (nothing more within the request timeout) while it was
 * read: fetched again, twice, before the attachment counts as not fetched (one flaky moment of the server
 * would otherwise fail the whole export at its end, to be fetched by a rerun).
 */
const brokeOff = (e: unknown): boolean =>
  e instanceof ExportError &&
  e.reason === "Attachment" &&
  e.cause !== undefined &&
  (e.detail === STALLED || e.detail === BROKE_OFF)

/** Fetches one attachment into the archive's blob store (not yet committed: see `Fetcher`). */
export const fetchOne = (
  client: FhirClient,
  store: ArchiveAttachments.Store,
  ref: AttachmentRef,
  gates?: Gates,
  known?: Resolved,
): Effect.Effect<StoredAttachment, ExportError | ArchiveError | FhirError | AuthError> =>
  Effect.gen(function* () {
    const resolved = known?.url ?? resolveUrl(client.baseUrl, ref.url)
    const binary = known?.binary ?? isSourceBinary(client.baseUrl, ref.url)
    const once = fetchBody(client, store, ref, resolved, binary, known?.followTo)
    const fetched = yield* (gates === undefined ? once : gates.http.withPermits(1)(once)).pipe(
      Effect.retry({ times: 2, schedule: Schedule.exponential("500 millis"), while: brokeOff }),
    )
    return yield* keep(store, ref, resolved, fetched)
  })

/** What the index records of a body for `ref`: its content type, its URL, and what the Attachment says of it. */
const metaOf = (ref: AttachmentRef, contentType: string | undefined): ArchiveAttachments.Meta => ({
  ...(contentType !== undefined ? { contentType } : {}),
  sourceUrl: ref.url,
  // a body that is not what the Attachment says is not stored under its URL (see the check in `keep`)
  expected: {
    ...(ref.size !== undefined ? { size: ref.size } : {}),
    ...(ref.hash !== undefined ? { sha1: ref.hash } : {}),
  },
})

/** A body fetched (or copied) for `ref`: stored, and checked against what its Attachment says. */
const keep = (
  store: ArchiveAttachments.Store,
  ref: AttachmentRef,
  resolved: string,
  fetched: Fetched,
): Effect.Effect<StoredAttachment, ExportError | ArchiveError> =>
  Effect.flatMap(
    fetched.kind === "stored"
      ? Effect.succeed(fetched.stored)
      : store.storeBytes(fetched.bytes, fetched.meta),
    (stored) => {
      const kept = checked(ref, resolved, stored, fetched.meta.contentType)
      return kept instanceof ExportError ? Effect.fail(kept) : Effect.succeed(kept)
    },
  )

/** What the index now has for `ref`, or why it is not kept: the body is not what its Attachment says. */
const checked = (
  ref: AttachmentRef,
  resolved: string,
  stored: ArchiveAttachments.Stored,
  contentType: string | undefined,
): StoredAttachment | ExportError => {
  const mismatch =
    ref.size !== undefined && ref.size !== stored.size
      ? `its size is ${stored.size} bytes but the Attachment says ${ref.size}`
      : ref.hash !== undefined && ref.hash !== stored.sha1
        ? `its SHA-1 is ${stored.sha1} but the Attachment's hash says ${ref.hash}`
        : undefined
  if (mismatch !== undefined)
    return new ExportError({
      reason: "Attachment",
      url: redactUrl(resolved),
      detail: `the attachment of ${ref.resource} (${ref.path}) does not match: ${mismatch}; the source data is inconsistent, check it at the source`,
    })
  return {
    url: ref.url,
    sha256: stored.sha256,
    size: stored.size,
    contentType,
    blob: ArchiveAttachments.relativePath(stored.sha256),
    resource: ref.resource,
    path: ref.path,
  } satisfies StoredAttachment
}

/** A small body read whole (to be stored), or a big one already streamed into the store. */
type Fetched =
  | { readonly kind: "bytes"; readonly bytes: Uint8Array; readonly meta: ArchiveAttachments.Meta }
  | {
      readonly kind: "stored"
      readonly stored: ArchiveAttachments.Stored
      readonly meta: ArchiveAttachments.Meta
    }

/**
 * A body as a Stream, pulled one chunk at a time. Unlike `Stream.fromAsyncIterable`, whose teardown waits for the
 * iterator's `return()` (which a Node stream queues behind a pending read: a stalled body then holds a stop until
 * the request timeout), a stop here leaves the pending read to the body's destruction (`fetchBody` destroys it).
 */
const pulled = <E>(
  body: AsyncIterable<Uint8Array>,
  onError: (e: unknown) => E,
): Stream.Stream<Uint8Array, E> =>
  Stream.suspend(() => {
    const chunks = body[Symbol.asyncIterator]()
    return Stream.repeatEffectOption(
      Effect.tryPromise({ try: () => chunks.next(), catch: (e) => Option.some(onError(e)) }).pipe(
        Effect.flatMap((r) => (r.done === true ? Effect.fail(Option.none()) : Effect.succeed(r.value))),
      ),
    )
  })

const fetchBody = (
  client: FhirClient,
  store: ArchiveAttachments.Store,
  ref: AttachmentRef,
  resolved: string,
  binary: boolean,
  followTo?: (origin: string) => boolean,
): Effect.Effect<Fetched, ExportError | ArchiveError | FhirError | AuthError> =>
  Effect.suspend(() => {
    /** The answer's body, once there is one (one per run of this Effect). */
    let answered: Parameters<typeof discardBody>[0] | undefined
    return Effect.gen(function* () {
      const accept = binary ? "*/*" : (ref.contentType ?? "*/*")
      // an attachment host that refuses connections is not asked again for each attachment (holdBack)
      // (a redirect keeps to the allowed origins: the first hop's was checked, each next one is here)
      const response = yield* client.get(resolved, {
        headers: { accept },
        holdBack: true,
        ...(followTo !== undefined ? { followTo } : {}),
      })
      answered = response.body
      const broke = (detail: string) => (cause: unknown) =>
        new ExportError({
          reason: "Attachment",
          url: redactUrl(resolved),
          detail: isBodyTimeout(cause) ? STALLED : detail,
          cause,
        })
      const responseType = response.headers["content-type"]
      let contentType =
        binary && !isFhirJson(responseType) ? (responseType ?? ref.contentType) : ref.contentType
      const meta = () => metaOf(ref, contentType)
      // A Content-Encoding is undone (an object store may send `gzip` unasked): what is stored is the content.
      const encoding = response.headers["content-encoding"]
      const decoder = decoderFor(encoding)
      if (decoder === "unknown") {
        discardBody(response.body)
        return yield* new ExportError({
          reason: "Attachment",
          url: redactUrl(resolved),
          detail: `the server sent Content-Encoding ${JSON.stringify(encoding)}, which Ferry cannot undo (it knows gzip, deflate, br), so the content is not known; report it to the server's operators`,
        })
      }
      const body: AsyncIterable<Uint8Array> =
        decoder === "none"
          ? (response.body as AsyncIterable<Uint8Array>)
          : pipeline(response.body, decoder(), () => undefined)
      /** The whole (decoded) body. */
      const whole = Effect.tryPromise({
        try: async () => {
          if (decoder === "none") return new Uint8Array(await response.body.arrayBuffer())
          const chunks: Array<Uint8Array> = []
          for await (const chunk of body) chunks.push(chunk)
          return new Uint8Array(Buffer.concat(chunks))
        },
        catch: broke(BROKE_OFF),
      })
      // the encoded length: the decoded body may be larger
      const length =
        decoder === "none" ? Number(response.headers["content-length"] ?? Number.NaN) : Number.NaN
      if (binary && isFhirJson(responseType)) {
        // Either the server ignored Accept and sent the Binary resource (content in `data`, base64), or the
        // Binary's own content is JSON (a FHIR document, application/json) and came raw, as asked.
        const raw = yield* whole
        const parsed = Option.liftThrowable(() => JSON.parse(Buffer.from(raw).toString("utf8")) as unknown)()
        const resource = Option.getOrUndefined(parsed)
        if (
          typeof resource !== "object" ||
          resource === null ||
          (resource as { resourceType?: unknown }).resourceType !== "Binary"
        ) {
          contentType = responseType ?? ref.contentType
          return { kind: "bytes", bytes: raw, meta: meta() } satisfies Fetched
        }
        const data = (resource as { data?: unknown }).data
        if (typeof data !== "string") {
          return yield* new ExportError({
            reason: "Attachment",
            url: redactUrl(resolved),
            detail:
              "the server answered with the Binary resource without its content (no `data`), and not with the raw content that was asked for (Accept: */*); ask the server's operators how to read its binaries raw",
          })
        }
        const ct = (resource as { contentType?: unknown }).contentType
        if (typeof ct === "string") contentType = ct
        return { kind: "bytes", bytes: Buffer.from(data, "base64"), meta: meta() } satisfies Fetched
      }
      if (length >= 0 && length <= WHOLE) {
        return { kind: "bytes", bytes: yield* whole, meta: meta() } satisfies Fetched
      }
      const stored = yield* store.store(pulled(body, broke(BROKE_OFF)), meta())
      return { kind: "stored", stored, meta: meta() } satisfies Fetched
    }).pipe(
      // however it ends (stopped half-way too), the connection is let go at once: a body that stalls would otherwise
      // hold it, and a stop, until the request timeout
      Effect.ensuring(Effect.sync(() => answered !== undefined && discardBody(answered))),
    )
  })

/**
 * A reference's URL with what its Attachment says of the body (`size`, `hash`): two Attachments pointing at
 * one URL are one fetch, but each one's claims are checked.
 */
const claimKey = (ref: {
  readonly url: string
  readonly size?: number | undefined
  readonly hash?: string | undefined
}) => `${ref.url}\u0000${ref.size ?? ""}\u0000${ref.hash ?? ""}`

/**
 * Collects the attachment references of resources as they stream by, once per URL and claims. `refs` hands them over
 * and forgets them (the caller holds them while they are fetched).
 *
 * Kept small: a file's references wait here until the file is in the archive and then until their fetches
 * are done, and with 4 files in flight that is up to 40k references at once (1M resources, 10k
 * DocumentReferences a file; bench/export.ts). Strings that repeat (the resource type, the JSON path, the
 * content type) are shared through a cache instead of one copy per reference, and `Type/id` is flattened
 * into one string instead of a rope of the parsed pieces: ≈ 180 of ≈ 350 bytes a reference (heap snapshot).
 */
export const collector = (): {
  readonly onResource: (resource: Resource) => void
  /**
   * The references found since the last call (each URL once per collector, or more often when Attachments
   * disagree on its size or hash), handed over and forgotten.
   */
  readonly refs: () => ReadonlyArray<AttachmentRef>
  /** How many references `refs` would hand over now. */
  readonly pending: () => number
} => {
  let found: Array<AttachmentRef> = []
  // every URL this collector has met, also those handed over (a file's references go out in batches)
  const seen = new DigestSet(16, 64)
  const shared = new Map<string, string>()
  const intern = (s: string): string => {
    const known = shared.get(s)
    if (known !== undefined) return known
    // a bounded cache: repeated values (types, paths, content types) are few; anything else passes through
    if (shared.size < 1024) shared.set(s, s)
    return s
  }
  return {
    onResource: (resource) => {
      for (const ref of refsOf(resource)) {
        if (!seen.add(digest16(claimKey(ref)))) continue
        found.push({
          url: ref.url,
          resource: `${intern(resource.resourceType)}/${resource.id ?? ""}`.normalize(),
          path: intern(ref.path),
          contentType: ref.contentType === undefined ? undefined : intern(ref.contentType),
          size: ref.size,
          hash: ref.hash,
        })
      }
    },
    refs: () => {
      const all = found
      found = []
      return all
    },
    pending: () => found.length,
  }
}

/** The attachment references of an archive data file (a file an earlier run downloaded). */
export const refsOfFile = (
  path: string,
  label: string,
): Effect.Effect<ReadonlyArray<AttachmentRef>, ExportError> =>
  Effect.suspend(() => {
    const c = collector()
    return Ndjson.readFile(path, { label }).pipe(
      Stream.runForEach((item) => Effect.sync(() => c.onResource(item.value))),
      Effect.mapError(
        (e) =>
          new ExportError({
            reason: "Archive",
            detail: `${e.message}; the archive file changed while reading it`,
            cause: e,
          }),
      ),
      Effect.map(() => c.refs()),
    )
  })

const describeClaims = (ref: AttachmentRef): string =>
  [
    ...(ref.size !== undefined ? [`size (${ref.size} bytes)`] : []),
    ...(ref.hash !== undefined ? [`hash (${ref.hash})`] : []),
  ].join(" or ")

/** What one `forRefs` call did. */
export interface BatchResult {
  readonly fetched: number
  /** Already in the archive (an earlier run, or another file of this run). */
  readonly skipped: number
  readonly bytes: number
  readonly failed: number
}

export interface ForRefsOptions {
  /**
   * A source Binary the export holds too is copied once the Binary files under way are in (`ExportedBinaries`):
   * for a file already downloaded. Without it (a batch while its file still downloads) it is copied if its
   * Binary file is in already, else fetched.
   */
  readonly waitForBinaries?: boolean
}

export interface Fetcher {
  /**
   * Fetches the attachments not yet in the archive (bounded concurrency, shared by all calls) and commits
   * them. Failures are collected (see `summary`), not thrown: only archive I/O errors fail. A URL another
   * call is fetching at the same time is waited for, not fetched twice.
   */
  readonly forRefs: (
    refs: ReadonlyArray<AttachmentRef>,
    options?: ForRefsOptions,
  ) => Effect.Effect<BatchResult, ExportError | ArchiveError>
  /** Totals over every call so far, with the failures. */
  readonly summary: Effect.Effect<AttachmentSummary>
}

/**
 * Workers beyond the request bound: a worker that waits for a URL another batch is fetching, or that stores a
 * big body streamed to a temp file, does not leave a request permit idle.
 */
const SPARE_WORKERS = 16

/** Blobs per commit inside one `forRefs` call (each call also commits at its end). */
const COMMIT_EVERY = 256

export const fetcher = Effect.fn("Attachments.fetcher")(function* (
  client: FhirClient,
  archive: Pick<ArchiveDir, "root">,
  options: AttachmentOptions,
) {
  const store = yield* ArchiveAttachments.store(archive.root)
  /**
   * What became of each URL met so far: in the archive (`stored`: the store's URLs, from an earlier run's index
   * or stored in this one), failed (`failedUrls`, recorded once), or being fetched (the Deferred in
   * `inFlight`). The settled ones are 16-byte digests of the URL outside the JS heap (`DigestSet`): one per
   * attachment for the whole run; as strings in a Map they made a 1M export's heap grow with its attachments.
   */
  const stored = store.storedUrls
  /** References that failed: URL and claims (`claimKey`), so an Attachment that is right is not failed with one that is wrong. */
  const failedRefs = new DigestSet(16, 16)
  /** Fetches under way, by `claimKey`. */
  const inFlight = new Map<string, Deferred.Deferred<boolean>>()
  const gates: Gates = { http: yield* Effect.makeSemaphore(Math.max(1, options.concurrency)) }
  const baseOrigin = Option.getOrElse(originOf(client.baseUrl), () => "null")
  // an attachment on another host than the source: its redirects keep to the allowed origins too (the source's
  // own URLs may redirect where the source sends them: to its blob store, a CDN, https)
  const allowOrigin = options.allowOrigin
  const follow =
    allowOrigin === undefined ? {} : { followTo: (o: string) => o === baseOrigin || allowOrigin(o) }
  const exported = options.exported
  /** `<base>/Binary/`: a URL that is this plus an id names a source Binary the export may hold. */
  const binaryBase = `${client.baseUrl.replace(/\/+$/, "")}/Binary/`
  let fetched = 0
  let skipped = 0
  let bytes = 0
  const failed: Array<AttachmentFailure> = []

  const commitIfFull = Effect.flatMap(store.pending, (n) =>
    n >= COMMIT_EVERY ? Effect.asVoid(store.commit) : Effect.void,
  )
  const recordFailure = (ref: AttachmentRef, detail: string): Effect.Effect<void, ExportError> =>
    Effect.suspend(() => {
      const failure: AttachmentFailure = {
        url: redactUrl(resolveUrl(client.baseUrl, ref.url)),
        resource: ref.resource,
        path: ref.path,
        detail,
      }
      failed.push(failure)
      return options.onFailed ? options.onFailed(failure) : Effect.void
    })

  /** The id of the source Binary a resolved URL names (`<base>/Binary/<id>`, nothing after), if it does. */
  const exportedIdOf = (resolved: string): string | undefined => {
    if (!resolved.startsWith(binaryBase)) return undefined
    const id = resolved.slice(binaryBase.length)
    return binaryId.test(id) ? id : undefined
  }

  /** A reference to a source Binary whose line is in a Binary file already: its body, copied (without waiting). */
  const copyNow = (
    ref: AttachmentRef,
  ):
    | { readonly resolved: string; readonly bytes: Uint8Array; readonly meta: ArchiveAttachments.Meta }
    | undefined => {
    if (exported === undefined) return undefined
    const resolved = resolveUrl(client.baseUrl, ref.url)
    const id = exportedIdOf(resolved)
    if (id === undefined) return undefined
    const copied = exported.peek(id)
    if (Option.isNone(copied)) return undefined
    return {
      resolved,
      bytes: copied.value.bytes,
      meta: metaOf(ref, copied.value.contentType ?? ref.contentType),
    }
  }

  /** Fetches one attachment; its size, or undefined when it failed (the failure is recorded). */
  const fetchRef = (
    ref: AttachmentRef,
    mine: Deferred.Deferred<boolean>,
    wait: boolean,
  ): Effect.Effect<number | undefined, ExportError | ArchiveError> =>
    Effect.suspend(() => {
      const resolved = resolveUrl(client.baseUrl, ref.url)
      const origin = Option.getOrElse(originOf(resolved), () => "null")
      // (a relative URL resolves onto the base: same origin; an absolute one keeps its own)
      const binary = origin === baseOrigin && namesBinary(ref.url)
      const exportedId = binary && exported !== undefined ? exportedIdOf(resolved) : undefined
      if (exported !== undefined && exportedId !== undefined)
        return Effect.flatMap(exported.read(exportedId, wait), (copied) =>
          Option.isSome(copied)
            ? keep(store, ref, resolved, {
                kind: "bytes",
                bytes: copied.value.bytes,
                meta: metaOf(ref, copied.value.contentType ?? ref.contentType),
              })
            : fetchOne(client, store, ref, gates, { url: resolved, binary }),
        )
      return options.allowOrigin === undefined || options.allowOrigin(origin)
        ? fetchOne(client, store, ref, gates, {
            url: resolved,
            binary,
            ...(origin === baseOrigin ? {} : follow),
          })
        : Effect.fail(
            new ExportError({
              reason: "Attachment",
              url: redactUrl(resolved),
              detail: originNotAllowed(origin),
            }),
          )
    }).pipe(
      // (one step per outcome rather than a tap each: this runs once per attachment)
      Effect.flatMap((stored): Effect.Effect<number | undefined, ExportError> => {
        fetched++
        bytes += stored.size
        return options.onStored
          ? Effect.as(options.onStored(stored), stored.size)
          : Effect.succeed(stored.size)
      }),
      Effect.catchAll((e) => {
        if (e._tag === "ArchiveError" || (e._tag === "ExportError" && e.reason === "Archive"))
          return Effect.fail(e)
        return recordFailure(ref, e.message).pipe(Effect.as(undefined))
      }),
      Effect.tap((size) => {
        const key = claimKey(ref)
        if (size === undefined) failedRefs.add(digest16(key))
        inFlight.delete(key)
        return Effect.zipRight(Deferred.succeed(mine, size !== undefined), commitIfFull)
      }),
      // an interrupted fetch (its file's batch stopped with a failed download) settles nothing: the URL is
      // fetched again by the next reference that meets it
      Effect.onInterrupt(() =>
        Effect.suspend(() => {
          if (inFlight.get(claimKey(ref)) === mine) inFlight.delete(claimKey(ref))
          return Deferred.interrupt(mine)
        }),
      ),
    )

  const forRefs = (refs: ReadonlyArray<AttachmentRef>, forOptions: ForRefsOptions = {}) =>
    Effect.gen(function* () {
      const wait = forOptions.waitForBinaries === true
      let mineFetched = 0
      let mineSkipped = 0
      let mineBytes = 0
      let mineFailed = 0
      const one = (ref: AttachmentRef) => {
        const key = claimKey(ref)
        const pending = inFlight.get(key)
        if (pending !== undefined) {
          // the fetch in flight elsewhere; if it is interrupted instead, this reference fetches the URL itself
          return Effect.flatMap(
            Effect.exit(Deferred.await(pending)),
            (exit): Effect.Effect<unknown, ExportError | ArchiveError> =>
              Exit.isSuccess(exit)
                ? Effect.sync(() => (exit.value ? mineSkipped++ : mineFailed++))
                : Effect.suspend(() => one(ref)),
          )
        }
        const digest = digest16(key)
        // failed first (an older archive may have indexed a body that did not match its Attachment)
        if (failedRefs.has(digest)) return Effect.sync(() => mineFailed++)
        if (stored.has(digest16(ref.url))) {
          // in the archive for another Attachment (or an earlier run): this one's size and hash must fit it too
          if (store.matchesStored(ref.url, { size: ref.size, sha1: ref.hash }))
            return Effect.sync(() => mineSkipped++)
          failedRefs.add(digest)
          mineFailed++
          return recordFailure(
            ref,
            `${redactUrl(resolveUrl(client.baseUrl, ref.url))}: the attachment of ${ref.resource} (${ref.path}) does not match: the body this URL returned (stored for another Attachment) differs from this Attachment's ${describeClaims(ref)}; the source data is inconsistent, check it at the source`,
          )
        }
        const copy = copyNow(ref)
        if (copy !== undefined) {
          // in a Binary file already: stored in this same step as the checks above (no other reference to the
          // URL can pass them meanwhile), without a request, a fiber or an in-flight entry
          let stored: ArchiveAttachments.Stored
          try {
            stored = store.storeBytesNow(copy.bytes, copy.meta)
          } catch (e) {
            return Effect.fail(e as ArchiveError)
          }
          const kept = checked(ref, copy.resolved, stored, copy.meta.contentType)
          if (kept instanceof ExportError) {
            failedRefs.add(digest)
            mineFailed++
            return recordFailure(ref, kept.message)
          }
          fetched++
          bytes += kept.size
          mineFetched++
          mineBytes += kept.size
          return options.onStored ? Effect.zipRight(options.onStored(kept), commitIfFull) : commitIfFull
        }
        const mine = Deferred.unsafeMake<boolean>(FiberId.none)
        inFlight.set(key, mine)
        return Effect.flatMap(fetchRef(ref, mine, wait), (size) =>
          Effect.sync(() => {
            if (size === undefined) mineFailed++
            else {
              mineFetched++
              mineBytes += size
            }
          }),
        )
      }
      // A fixed pool of workers taking the next reference (`forEachPooled`): enough that every request
      // permit stays busy (see SPARE_WORKERS); the first archive failure interrupts the others, as forEach
      // would.
      yield* forEachPooled(refs, Math.min(refs.length, Math.max(1, options.concurrency) + SPARE_WORKERS), one)
      // (no references, nothing of this call's to make durable: a file without attachments does not wait for
      // the blobs other files are committing)
      if (refs.length > 0) yield* store.commit
      skipped += mineSkipped
      return {
        fetched: mineFetched,
        skipped: mineSkipped,
        bytes: mineBytes,
        failed: mineFailed,
      } satisfies BatchResult
    })

  return {
    forRefs,
    summary: Effect.sync(
      () => ({ fetched, skipped, bytes, failed: [...failed] }) satisfies AttachmentSummary,
    ),
  } satisfies Fetcher
})
