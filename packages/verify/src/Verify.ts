/**
 * `verify`: compare a source (a FHIR server, or an archive) with a target FHIR server.
 *
 * Per type: counts on both sides (`_summary=count`, else the crawl's count; an archive's manifest counts),
 * then a streamed content comparison. The source side is read first and reduced to a map
 * `target Type/id → (source Type/id, sha256 of the canonical form)` (about 200 bytes per resource, one
 * type at a time); the target side is then streamed and each resource checked off against it. Nothing
 * holds a whole dataset. Differing resources get a field-level diff for the first `diffLimit` (the source
 * resource is read a second time for those only). Attachment `url`s are compared by the sha256 of the
 * bytes they designate (archive: the attachment index; servers: the Binary is fetched and hashed). A target
 * URL that still designates the source server (under its base, or on its host when the target is elsewhere)
 * is a mismatch without being fetched: it hashes alike only as long as the source stays up.
 *
 * With an id map (`imports/<target>/idmap.ndjson` of the archive, or `idMapPath`) source ids are
 * translated; without one, ids are expected to be kept. When the map changes ids, a source `Type/id` it does
 * not hold is `unmapped:Type/id` (equal to nothing on the target), and two source resources mapped to one
 * target resource leave the second one missing. Conditional references (`Type?identifier=…`, as bulk
 * exports hold them and as an import resolves them) on the source side are compared as the resource they
 * designate: an archive's through the identifiers of its resources of that type, a source server's by one
 * `identifier` search per distinct reference (exactly one match; otherwise, or when the server cannot search
 * it, as written). On the target they are never resolved: a conditional or `urn:uuid:` reference is for
 * transactions only, and one stored on the target is no working reference, so it compares as different.
 * Without `types`, every type the target's CapabilityStatement lists is counted there too: resources of a type
 * the source has none of are extra (Binary aside when the source cannot list its own: then compared through the
 * attachments only).
 * `samplePercent` compares a deterministic sample chosen by the sha256 of the source `Type/id`.
 * A target resource no source resource accounts for, but which carries Ferry's provenance tag of another
 * source (`<Type>/<id>@<origin>`, another origin than this source base's: another migration into the same
 * target), is no extra: it is left out of the comparison and of the type's target count, and counted apart.
 */
import { createHash } from "node:crypto"
import * as NFS from "node:fs"
import * as Path from "node:path"
import * as Archive from "@ferry/archive/Archive"
import * as Attachments from "@ferry/archive/Attachments"
import * as Imports from "@ferry/archive/Imports"
import * as Manifest from "@ferry/archive/Manifest"
import * as Capabilities from "@ferry/core/CapabilityStatement"
import { type FhirClient, searchOne, summaryCount } from "@ferry/core/FhirClient"
import { redactUrl, resolveUrl, sameOrigin } from "@ferry/core/Http"
import type { Resource } from "@ferry/core/Ids"
import * as Ndjson from "@ferry/core/Ndjson"
import { numbersLost } from "@ferry/core/NumberText"
import { shellWord } from "@ferry/core/Shell"
import { IdentifierIndex } from "@ferry/transform/IdentifierIndex"
import { version } from "@ferry/core/Version"
import { copiedSha256, isOwnedCopyId } from "@ferry/transform/AttachmentCopy"
import { originKey } from "@ferry/transform/Rewrite"
import { DateTime, Effect, Either, Option, Stream } from "effect"
import {
  type AttachmentRef,
  type CanonicalContext,
  canonicalize,
  hash,
  hasMetaSource,
  hasWrittenDecimals,
  inSample,
  provenanceSystem,
  withoutWrittenDecimals,
} from "./Canonical.js"
import { diff, type FieldDiff } from "./Diff.js"
import { VerifyError } from "./VerifyError.js"

/** The data files `ferry migrate --prune-staged` removed from the archive for `target` (its ledger). */
const prunedByMigrate = (dir: string, target: string): ReadonlySet<string> =>
  new Set(Imports.readMigrateLedger(dir, target)?.pruned.keys() ?? [])

export type Source =
  | { readonly _tag: "Server"; readonly client: FhirClient }
  | { readonly _tag: "Archive"; readonly dir: string }

export interface Options {
  readonly source: Source
  readonly target: FhirClient
  /** Types to compare (default: the archive's types, or the source server's CapabilityStatement types). */
  readonly types?: ReadonlyArray<string>
  /** Compare only this percentage of resources (0 < p ≤ 100); default: all. */
  readonly samplePercent?: number
  /** Field-level diffs for at most this many differing resources (default 20). */
  readonly diffLimit?: number
  /** An id map file (`{"s","t"}` lines); default: the archive's `imports/<target>/idmap.ndjson` if present. */
  readonly idMapPath?: string
  /**
   * Other bases the source server's own absolute references use (as given to the import): references under
   * them are the source's, compared as relative ones.
   */
  readonly sourceBases?: ReadonlyArray<string>
  /** Parallel attachment downloads (default 4). */
  readonly concurrency?: number
  /**
   * Leave narratives with status `generated` out of the comparison, for a target that makes its own from the
   * data (default false: a narrative is data a person reads, and most servers keep it as sent).
   */
  readonly ignoreGeneratedNarrative?: boolean
  /** `meta` members the import dropped (its `dropMeta`): left out of the comparison on both sides. */
  readonly ignoreMeta?: ReadonlyArray<"source" | "tag" | "security">
}

export interface TypeRow {
  readonly type: string
  readonly sourceCount: number | null
  readonly targetCount: number | null
  readonly compared: number
  readonly matching: number
  readonly differing: number
  readonly missing: number
  readonly extra: number
  /** Target resources tagged by Ferry as another source's (not in `targetCount`, not compared). */
  readonly otherSources: number
  readonly attachments: number
  readonly attachmentMismatches: number
}

/** A differing resource's field-level diff lists at most this many fields (`moreFields` says there are more). */
export const fieldLimit = 50

export interface Difference {
  readonly kind: "differing" | "missing" | "extra"
  readonly type: string
  readonly source?: string
  readonly target?: string
  readonly fields?: ReadonlyArray<FieldDiff>
  /** More fields differ than `fields` lists (at most `fieldLimit`). */
  readonly moreFields?: true
  /** Why, when the kind alone does not say (a source resource the id map does not map, or maps twice). */
  readonly detail?: string
}

/**
 * What a source `Type/id` the id map does not hold maps to when the map is not the identity (the target
 * assigned new ids): that resource was not migrated, so it has no counterpart on the target.
 */
export const unmappedPrefix = "unmapped:"

export interface AttachmentMismatch {
  /** The target `Type/id` holding the attachment. */
  readonly resource: string
  readonly path: string
  readonly sourceSha256?: string
  readonly targetSha256?: string
  readonly detail: string
}

export interface Totals {
  readonly sourceCount: number
  readonly targetCount: number
  readonly compared: number
  readonly matching: number
  readonly differing: number
  readonly missing: number
  readonly extra: number
  readonly countMismatches: number
  readonly attachments: number
  readonly attachmentMismatches: number
  /** Target resources tagged by Ferry as another source's: left out (see `TypeRow.otherSources`). */
  readonly otherSources: number
}

export interface Report {
  readonly format: "ferry-verify/1"
  readonly verdict: "clean" | "differences"
  readonly startedAt: string
  readonly finishedAt: string
  readonly source: {
    readonly kind: "server" | "archive"
    readonly location: string
    /** An archive's source server (as its manifest records it). */
    readonly server?: string
    /** An archive's `transactionTime`: the source as of when. */
    readonly transactionTime?: string
    /**
     * The sha256 of the archive's `checksums.sha256`, which every file and blob was checked against first:
     * what ties the report to this archive (a backup keeps it: `sha256sum checksums.sha256`).
     */
    readonly checksumsSha256?: string
    /** An incremental archive (`--since`): its changes were compared, not the whole target. */
    readonly delta?: true
  }
  readonly target: { readonly url: string }
  /** The Ferry that made the report. */
  readonly tool: { readonly name: "ferry"; readonly version: string }
  readonly sample: { readonly percent: number } | null
  readonly idMap: { readonly path: string; readonly entries: number } | null
  /** What to do about the differences, when Ferry can tell (an id map that was not given). */
  readonly hint?: string
  readonly diffLimit: number
  readonly types: ReadonlyArray<TypeRow>
  readonly totals: Totals
  readonly differences: ReadonlyArray<Difference>
  readonly attachments: ReadonlyArray<AttachmentMismatch>
  readonly notes: ReadonlyArray<string>
}

interface SourceEntry {
  readonly s: string
  readonly h: string
  /** The hash with numbers as parsed, when `h` holds numbers as written (for a target whose texts were lost). */
  readonly p?: string
  /** The source's number texts were lost (`numbersLost`): compared with the target's numbers as parsed. */
  readonly u?: true
  /** The source resource has a `meta.source`; without one, one the target set (a `$import` job's) is no difference. */
  readonly x?: true
  /** A Binary's hash without its `data` (see `payloadOnly`). */
  readonly b?: string
}

/** A canonical Binary without its payload: what stays when only its bytes differ. */
const withoutData = (value: unknown): unknown => {
  if (typeof value !== "object" || value === null || !("data" in value)) return value
  const { data: _data, ...rest } = value as Record<string, unknown>
  return rest
}

/** The `Binary/<id>` an attachment URL on the target names (relative, or under the target's base), if any. */
const binaryOn = (url: string, base: string): string | undefined => {
  const rel = url.startsWith(`${base}/`) ? url.slice(base.length + 1) : url
  return /^Binary\/[^/?#]+$/.test(rel) ? rel : undefined
}

type AttHash = Either.Either<string, string> // right: sha256, left: why it could not be hashed

/** Hash the bytes behind an attachment URL on a server (streamed). */
const fetchHash = (client: FhirClient, url: string): Effect.Effect<AttHash> =>
  // an attachment host that refuses connections is not asked again for each attachment (holdBack)
  client.stream(url, { holdBack: true }).pipe(
    Stream.runFold(createHash("sha256"), (h, chunk) => h.update(chunk)),
    Effect.map((h) => Either.right(h.digest("hex"))),
    Effect.catchAll((e) => Effect.succeed(Either.left(`could not fetch the attachment: ${e.message}`))),
  )

/** Whether a reference (`Type/id`, absolute, or to a version of it) names the resource `key` (`Type/id`). */
const names = (reference: string, key: string): boolean => {
  const path = reference.split("/_history/")[0]!
  return path === key || path.endsWith(`/${key}`)
}

/** Is absolute `url` on `base`'s origin and under its path? */
const under = (url: string, base: string): boolean => {
  if (!sameOrigin(url, base)) return false
  const path = new URL(base).pathname.replace(/\/+$/, "")
  const at = new URL(url).pathname
  return path === "" || at === path || at.startsWith(`${path}/`)
}

/**
 * Why a target attachment URL is not the target's own copy, or undefined when it may be: it still
 * designates the source server (under the source base, or elsewhere on the source's host when the target is
 * on another one). Such a URL hashes like the source's only while the source is up; the migration is not
 * done. A relative URL resolves against the target (the server holding the resource), other hosts are
 * external stores an attachment may legitimately keep (attachments.md §5, 4c).
 */
const stillOnSource = (
  url: string,
  targetBase: string,
  sourceBases: ReadonlyArray<string>,
): string | undefined => {
  // (a loopback host however spelled: a URL on `0.0.0.0` or `127.0.0.2` reaches a source on 127.0.0.1 as well)
  const abs = oneLoopback(resolveUrl(targetBase, url))
  const target = oneLoopback(targetBase)
  if (under(abs, target)) return undefined
  // the source's base and the other names it goes by (`--source-base`: an internal host name, an IP address)
  const onSource = sourceBases
    .map(oneLoopback)
    .some(
      (sourceBase) =>
        under(abs, sourceBase) || (sameOrigin(abs, sourceBase) && !sameOrigin(sourceBase, target)),
    )
  return onSource
    ? `target: still points at the source server (${redactUrl(url)}), not at a copy on the target`
    : undefined
}

/** `"reference": "Type?` in a line of NDJSON: a conditional reference to a resource of `Type`. */
const conditionalPattern = /"reference"\s*:\s*"([A-Z][A-Za-z]+)\?/g

/**
 * When the archive's data holds conditional references, an index of the identifiers of the resources of
 * the types they point at (two passes: raw lines to find the types, then those types' files parsed);
 * undefined when there are none.
 */
const conditionalIndex = (dir: string, manifest: Manifest.Manifest) =>
  Effect.gen(function* () {
    const types = new Set<string>()
    yield* Stream.fromIterable(manifest.files).pipe(
      Stream.flatMap((f) => Ndjson.readFileLines(`${dir}/${f.path}`, { label: f.path })),
      Stream.runForEach((line) =>
        Effect.sync(() => {
          if (!line.includes("?")) return
          for (const m of line.matchAll(conditionalPattern)) types.add(m[1]!)
        }),
      ),
      Effect.mapError(sourceError),
    )
    if (types.size === 0) return undefined
    const index = new IdentifierIndex({ types })
    yield* Stream.fromIterable(manifest.files.filter((f) => types.has(f.type))).pipe(
      Stream.flatMap((entry) => Archive.resources(dir, entry)),
      Stream.runForEach((l) => Effect.sync(() => index.add(l.value))),
      Effect.mapError(sourceError),
    )
    return index
  })

/**
 * A loopback host as a URL spells it: `localhost`, `127.x.x.x`, `[::1]`, `[::ffff:7f00:1]` (IPv4-mapped), and the
 * unspecified addresses `0.0.0.0` and `[::]`, which a connection takes to the local host.
 */
const loopbackHost =
  /^(localhost|127(\.\d{1,3}){3}|0\.0\.0\.0|\[::1?\]|\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\])$/i

/**
 * `url` with a loopback host spelled `127.0.0.1`: every name of this machine's own loopback (`0.0.0.0` and
 * `[::]` reach it too, on Linux) is one server.
 */
const oneLoopback = (url: string): string => {
  try {
    const u = new URL(url)
    if (!loopbackHost.test(u.hostname) || u.hostname === "127.0.0.1") return url
    u.hostname = "127.0.0.1"
    return u.toString()
  } catch {
    return url
  }
}

/**
 * `base` and, on a loopback host, the same base on the other loopback names: one server spelled several ways
 * (a migration run with `127.0.0.1`, a verify given `localhost`). Other aliases (a DNS name and its address)
 * are the user's to give (`--source-base`).
 */
export const loopbackAliases = (base: string): ReadonlyArray<string> => {
  let url: URL
  try {
    url = new URL(base)
  } catch {
    return [base]
  }
  if (!loopbackHost.test(url.hostname)) return [base]
  const out = new Set([base])
  for (const host of ["localhost", "127.0.0.1", "[::1]", "[::ffff:7f00:1]"]) {
    const alias = new URL(url)
    alias.hostname = host
    out.add(alias.toString().replace(/\/+$/, ""))
  }
  return [...out]
}

/**
 * What an import journal (`imports/<target>/journal.ndjson`) records for verify, read in one pass: the
 * provenance origin (`import.provenance`), and the `meta` members dropped (`import.dropMeta`, every run's: a rerun
 * may have changed the setting; undefined when none is recorded, as by an older Ferry). Nothing without a journal.
 */
const importRecord = (path: string): { readonly origin?: string; readonly drops?: ReadonlySet<string> } => {
  if (!NFS.existsSync(path)) return {}
  let origin: string | undefined
  let drops: Set<string> | undefined
  for (const line of NFS.readFileSync(path, "utf8").split("\n")) {
    const provenance = origin === undefined && line.includes('"import.provenance"')
    if (!provenance && !line.includes('"import.dropMeta"')) continue
    const parsed = Option.getOrUndefined(
      Option.liftThrowable(() => JSON.parse(line) as { kind?: unknown; data?: unknown })(),
    )
    const data = parsed?.data
    if (parsed?.kind === "import.provenance" && typeof data === "object" && data !== null) {
      const o = (data as { origin?: unknown }).origin
      if (typeof o === "string") origin ??= o
    } else if (parsed?.kind === "import.dropMeta" && Array.isArray(data)) {
      drops ??= new Set()
      for (const m of data) if (typeof m === "string") drops.add(m)
    }
  }
  return { ...(origin !== undefined ? { origin } : {}), ...(drops !== undefined ? { drops } : {}) }
}

const readIdMap = (path: string) =>
  Effect.gen(function* () {
    const forward = new Map<string, string>()
    yield* Ndjson.readFileSplit(path, { label: path }).pipe(
      Stream.mapError(
        (e) =>
          new VerifyError({
            reason: "Config",
            detail: `cannot read the id map ${path}: ${e.detail}; check --id-map`,
          }),
      ),
      Stream.runForEach((l) => {
        if (l.text.trim() === "") return Effect.void
        const parsed = Either.try(() => JSON.parse(l.text) as unknown)
        const v = Either.getOrUndefined(parsed)
        if (typeof v === "object" && v !== null && "s" in v && "t" in v) {
          const { s, t } = v as { s: unknown; t: unknown }
          if (typeof s === "string" && typeof t === "string") {
            forward.set(s, t)
            return Effect.void
          }
        }
        if (!l.terminated) return Effect.void // torn tail of an append
        // (the import's record of what landed where: a damaged one proves nothing, as a damaged archive)
        return Effect.fail(
          new VerifyError({
            reason: "Source",
            detail: `${path}:${l.line}: the id map is damaged (this line is not {"s":"Type/id","t":"Type/id"}); run the import into this target again with --restart, which writes it anew, then verify`,
          }),
        )
      }),
    )
    return forward
  })

/**
 * How an AuthError counts: a setting Ferry cannot use is a Config error (exit 2, as in the other commands),
 * credentials refused (or none where the server wants some, or a 403) an Auth one (exit 3); a server that could
 * not be reached is the side's failure.
 */
const authReason = (e: { readonly message: string }): "Config" | "Auth" | undefined => {
  const tagged = e as { readonly _tag?: unknown; readonly reason?: unknown; readonly status?: unknown }
  // a 403 Forbidden: the credentials are not allowed the request, an authorization failure (exit 3)
  if (tagged._tag === "FhirError")
    return tagged.reason === "Status" && tagged.status === 403 ? "Auth" : undefined
  if (tagged._tag !== "AuthError" || tagged.reason === "Unreachable") return undefined
  return tagged.reason === "Config" ? "Config" : "Auth"
}
const sourceError = (e: { readonly message: string }) =>
  new VerifyError({ reason: authReason(e) ?? "Source", detail: e.message, cause: e })
const targetError = (e: { readonly message: string }) =>
  new VerifyError({ reason: authReason(e) ?? "Target", detail: e.message, cause: e })

const hasId = (r: Resource): r is Resource & { readonly id: string } => typeof r.id === "string"

/** Statuses of a search a server does not support (as opposed to one it refuses). */
const CANNOT_SEARCH: ReadonlySet<number> = new Set([400, 404, 405, 422, 501])

/**
 * The conditional references (`Type?identifier=[system|]value`) of one server's resources, each distinct one
 * resolved once by a search on that server. `resolve` (synchronous, for `CanonicalContext`) answers the
 * resource's `Type/id` when exactly one matched and notes the references it has not looked up yet;
 * `canonical` canonicalises a resource and, only when it met such references, searches for them and
 * canonicalises it again (a resource without conditional references is walked once).
 */
const serverConditionals = (
  client: FhirClient,
  onError: (e: { readonly message: string }) => VerifyError,
) => {
  const cache = new Map<string, string | undefined>()
  const missing = new Map<string, { readonly type: string; readonly identifier: string }>()
  const keyOf = (type: string, system: string | undefined, value: string) =>
    system === undefined ? `${type}?identifier=${value}` : `${type}?identifier=${system}|${value}`
  const resolve = (type: string, system: string | undefined, value: string): string | undefined => {
    const key = keyOf(type, system, value)
    if (cache.has(key)) return cache.get(key)
    missing.set(key, { type, identifier: system === undefined ? value : `${system}|${value}` })
    return undefined
  }
  const search = (key: string, type: string, identifier: string) =>
    searchOne(client, type, [["identifier", identifier]]).pipe(
      Effect.mapError(onError),
      Effect.flatMap((found) =>
        // a server that cannot search this identifier: the reference is compared as written (the report's notes
        // say how many were resolved); a refusal (403) is an error
        found._tag === "NotRun" && found.error.status === 403
          ? Effect.fail(onError(found.error))
          : Effect.sync(() => {
              cache.set(key, found._tag === "One" ? `${type}/${found.id}` : undefined)
            }),
      ),
    )
  const canonical = (r: Resource, ctx: CanonicalContext) =>
    Effect.suspend(() => {
      const first = canonicalize(r, ctx)
      if (missing.size === 0) return Effect.succeed(first)
      const wanted = Array.from(missing)
      missing.clear()
      return Effect.forEach(wanted, ([key, w]) => search(key, w.type, w.identifier), { discard: true }).pipe(
        Effect.map(() => canonicalize(r, ctx)),
      )
    })
  return {
    resolve,
    canonical,
    distinct: () => cache.size,
    resolved: () => Array.from(cache.values()).filter((k) => k !== undefined).length,
  }
}

/** Run the comparison and build the report (the caller writes it and decides the exit). */
export const run = Effect.fn("Verify.run")(function* (options: Options) {
  const startedAt = DateTime.formatIso(yield* DateTime.now)
  const diffLimit = options.diffLimit ?? 20
  const percent = options.samplePercent
  if (percent !== undefined && !(percent > 0 && percent <= 100)) {
    return yield* new VerifyError({
      reason: "Config",
      detail: `--sample must be in (0, 100]%, got ${percent}; e.g. --sample 5%`,
    })
  }
  const sampled = (key: string) => percent === undefined || inSample(key, percent)
  const concurrency = options.concurrency ?? 4
  const target = options.target
  const source = options.source
  const notes: Array<string> = []

  // --- the source side's description, types and counts
  let manifest: Manifest.Manifest | undefined
  /** The sha256 of the archive's checksums.sha256, once it was checked. */
  let checksumsSha256: string | undefined
  let index: ReadonlyMap<string, string> = new Map() // attachment URL → sha256 (archive)
  /** The first 40 hex digits (what a copy per owner names) of the sha256 of each blob of the archive (undefined: a server source). */
  let blobPrefixes: ReadonlySet<string> | undefined
  if (source._tag === "Archive") {
    manifest = yield* Archive.readManifest(source.dir).pipe(
      Effect.mapError((e) =>
        // a folder that is no archive is a wrong flag; a damaged manifest is an archive that proves nothing
        e.reason === "NotAnArchive"
          ? new VerifyError({ reason: "Config", detail: `--archive: ${e.message}`, cause: e })
          : new VerifyError({ reason: "Source", detail: e.message, cause: e }),
      ),
    )
    if (!manifest.complete)
      return yield* new VerifyError({
        reason: "Source",
        detail: `${source.dir} is not a complete archive (its export did not finish); run the same ferry ${Imports.madeByMigrate(source.dir) ? "migrate" : "export"} again to finish it, then verify`,
      })
    // An archive that does not hold what its export recorded proves nothing: every file and blob is re-hashed.
    const mismatches = yield* Archive.verifyChecksums(source.dir).pipe(Effect.mapError(sourceError))
    // data files `ferry migrate --prune-staged` removed on purpose: this archive cannot stand for the source
    const pruned = prunedByMigrate(source.dir, target.baseUrl)
    if (mismatches.length > 0 && mismatches.every((m) => m.problem === "Missing" && pruned.has(m.path))) {
      const idMap = Imports.idMapPath(source.dir, target.baseUrl)
      return yield* new VerifyError({
        reason: "Config",
        detail: `${source.dir}: ${mismatches.length} of its data files were pruned by ferry migrate --prune-staged after they were imported, so the archive cannot be compared with the target; compare with the source server instead: ${["ferry verify --source", shellWord(manifest.source.baseUrl), "--target", shellWord(redactUrl(target.baseUrl)), ...(NFS.existsSync(idMap) ? ["--id-map", shellWord(idMap)] : [])].join(" ")} (with the migration's --type, if it had one, and both servers' credentials flags: --source-auth … and --auth …)`,
      })
    }
    if (mismatches.length > 0)
      return yield* new VerifyError({
        reason: "Source",
        detail: `${source.dir}: ${Archive.describeMismatches(mismatches, manifest)}`,
      })
    // what ties the report to this archive's bytes (`sha256sum checksums.sha256`, as a backup keeps it)
    checksumsSha256 = yield* Archive.checksumsSha256(source.dir).pipe(Effect.mapError(sourceError))
    const idx = yield* Attachments.readIndex(source.dir).pipe(Effect.mapError(sourceError))
    const byUrl = new Map<string, string>()
    for (const line of idx.values()) for (const u of line.sourceUrls) byUrl.set(u, line.sha256)
    index = byUrl
    blobPrefixes = new Set([...idx.values()].map((line) => line.sha256.slice(0, 40)))
  }
  /**
   * Whether a Binary named like an attachment copy holds the bytes its name says (their sha256 begins with
   * `named`); one served without its bytes is given the benefit of the doubt.
   */
  const trueCopy = (r: object, named: string): boolean => {
    const data = (r as { readonly data?: unknown }).data
    if (typeof data !== "string") return true
    return createHash("sha256").update(Buffer.from(data, "base64")).digest("hex").startsWith(named)
  }
  /**
   * A Binary an import of this source uploaded for an attachment payload (no extra). Against an archive, only
   * a copy of one of its blobs: a Binary named like one that holds other bytes is the target's own. Against a
   * server, one whose bytes are what its name says.
   */
  const isOwnCopy = (r: { readonly resourceType: string; readonly id?: string; readonly meta?: unknown }) => {
    const named = copiedSha256(r)
    if (named === undefined) return false
    // against a server, whose blobs are not listed: one whose bytes are what it is named after
    return blobPrefixes === undefined ? trueCopy(r, named) : blobPrefixes.has(named.slice(0, 40))
  }
  /**
   * Against an archive: an attachment copy of none of its blobs that is a true copy (its bytes hash to the
   * sha256 its id or tag names; one served without its bytes is given the benefit of the doubt): another
   * source's, imported into the same target. One named like a copy whose bytes are something else is not.
   */
  const isOtherCopy = (r: {
    readonly resourceType: string
    readonly id?: string
    readonly meta?: unknown
  }) => {
    const named = copiedSha256(r)
    if (blobPrefixes === undefined || named === undefined || blobPrefixes.has(named.slice(0, 40)))
      return false
    return trueCopy(r, named)
  }
  const sourceBase = source._tag === "Archive" ? manifest?.source.baseUrl : source.client.baseUrl
  /** Every name of the source server: its base, the others `--source-base` gives, and their loopback aliases. */
  const sourceNames = [
    ...new Set(
      [...(sourceBase !== undefined ? [sourceBase] : []), ...(options.sourceBases ?? [])].flatMap(
        loopbackAliases,
      ),
    ),
  ]
  // The import into this target, as its journal records it: in the archive, or beside the id map given.
  const archiveJournal =
    source._tag === "Archive" ? Imports.journalPath(source.dir, target.baseUrl) : undefined
  const idMapJournal =
    options.idMapPath !== undefined
      ? Path.join(Path.dirname(options.idMapPath), Imports.layout.journal)
      : undefined
  const archiveRecord = archiveJournal !== undefined ? importRecord(archiveJournal) : undefined
  const idMapRecord =
    idMapJournal !== undefined && (archiveRecord === undefined || archiveRecord.origin === undefined)
      ? importRecord(idMapJournal)
      : undefined
  // this migration's origin: as that import recorded it, else from the source's base; its other names' origins
  // are the same source's too
  const recorded = archiveRecord?.origin ?? idMapRecord?.origin
  const origin = recorded ?? (sourceBase !== undefined ? originKey(sourceBase) : undefined)
  /** Provenance origins of this source: the recorded one, and that of each name it goes by. */
  const origins = new Set([...(recorded !== undefined ? [recorded] : []), ...sourceNames.map(originKey)])
  /** The origin in a target resource's Ferry provenance tag (`<Type>/<id>@<origin>`), if it carries one. */
  const taggedOrigin = (r: Resource): string | undefined => {
    const tags = (r.meta as { tag?: unknown } | undefined)?.tag
    if (!Array.isArray(tags)) return undefined
    for (const t of tags) {
      if (typeof t !== "object" || t === null) continue
      const { system, code } = t as { system?: unknown; code?: unknown }
      if (system !== provenanceSystem || typeof code !== "string") continue
      const at = /@([0-9a-f]{16})$/.exec(code)
      if (at !== null) return at[1]
    }
    return undefined
  }
  /** Whether a target resource carries Ferry's provenance tag of another source than this one. */
  const fromOtherSource = (r: Resource): boolean => {
    if (origin === undefined) return false
    const tagged = taggedOrigin(r)
    return tagged !== undefined && !origins.has(tagged)
  }
  /** Extra target resources an import of this source wrote under new ids (its tag): the id map was not given. */
  let ownUnmapped = 0
  let otherSourcesTotal = 0
  let attachmentCopiesTotal = 0
  /** Pairs compared by their numbers' values: one side's number texts were lost (see `numbersLost`). */
  let imprecise = 0

  // --- id map
  const idMapPath =
    options.idMapPath ??
    (source._tag === "Archive" && NFS.existsSync(Imports.idMapPath(source.dir, target.baseUrl))
      ? Imports.idMapPath(source.dir, target.baseUrl)
      : undefined)
  const forward = idMapPath === undefined ? new Map<string, string>() : yield* readIdMap(idMapPath)
  const reverse = new Map<string, string>()
  const byId = new Map<string, string | null>() // source id → source key (null: ambiguous), for urn:uuid
  for (const [s, t] of forward) {
    reverse.set(t, s)
    const id = s.slice(s.indexOf("/") + 1)
    byId.set(id, byId.has(id) ? null : s)
  }
  // With ids kept (no map, or an identity one) a source key stands for itself. When the target assigned new
  // ids, a key the map does not hold was not migrated: falling back to the same `Type/id` would compare a
  // reference to it with an unrelated target resource that happens to carry that id, and its entry would
  // take the place of the resource mapped there.
  let identityMap = true
  for (const [s, t] of forward) {
    if (s === t) continue
    identityMap = false
    break
  }
  /**
   * Target keys an archive's conditional reference resolved to by a search on the target that no source key of
   * the id map names (a resource the target held already, or another archive's import made): they designate
   * that target resource as they are.
   */
  const onTargetOnly = new Set<string>()
  const mapKey = (k: string) =>
    forward.get(k) ?? (identityMap || onTargetOnly.has(k) ? k : `${unmappedPrefix}${k}`)
  // Conditional references (`Practitioner?identifier=…`) are compared as the resource they designate, on
  // each side where it can be found: in the archive through its identifiers, on a server by a search there
  const identifiers =
    source._tag === "Archive" && manifest !== undefined
      ? yield* conditionalIndex(source.dir, manifest)
      : undefined
  if (identifiers !== undefined)
    notes.push(
      `conditional references resolved through the archive's identifiers (${identifiers.size} indexed)`,
    )
  // Conditional references (`Practitioner?identifier=…`, as bulk exports hold them) on a source server: each
  // distinct one is resolved once by a search there (exactly one match → that resource, else it is compared
  // as written); they are what the import resolved to literal references. The target is not searched: a
  // conditional reference stored there is one a loader left unresolved, and FHIR clients cannot follow it
  // (references.md: conditional references are for transactions only), so `targetCtx` marks it unresolvable.
  // An archive's conditional reference its own identifiers do not resolve (its resource is outside the archive: a
  // patient-level export, a delta, a subset of types) is resolved as the import resolved it: by a search on the
  // target, whose answer is a target resource, named back through the id map.
  const sourceConditionals =
    source._tag === "Server"
      ? serverConditionals(source.client, sourceError)
      : identifiers !== undefined
        ? serverConditionals(target, targetError)
        : undefined
  // What the import into this target dropped (its journal, in the archive or beside --id-map): the comparison
  // leaves out the same; a --drop-meta leaving out more would hide changes the import never made.
  const importJournal = archiveJournal ?? idMapJournal
  const recordedDrops = archiveRecord !== undefined ? archiveRecord.drops : idMapRecord?.drops
  const asked = options.ignoreMeta ?? []
  const notDropped = asked.filter((m) => recordedDrops !== undefined && !recordedDrops.has(m))
  if (notDropped.length > 0)
    return yield* new VerifyError({
      reason: "Config",
      detail: `--drop-meta ${asked.join(",")} leaves out ${notDropped.map((m) => `meta.${m}`).join(", ")}, which the import into ${redactUrl(target.baseUrl)} kept (its journal ${importJournal}: it dropped ${recordedDrops!.size > 0 ? [...recordedDrops!].join(",") : "nothing"}), so a change there would not show; leave --drop-meta out (verify then leaves out what the import dropped) or give only what it dropped`,
    })
  // (what the import dropped, all of it, whether the flag names it all or part: the flag adds nothing to it)
  const ignoreMeta: ReadonlyArray<"source" | "tag" | "security"> =
    recordedDrops === undefined
      ? asked
      : [...recordedDrops].filter(
          (m): m is "source" | "tag" | "security" => m === "source" || m === "tag" || m === "security",
        )
  const narratives = {
    ...(options.ignoreGeneratedNarrative === true ? { ignoreGeneratedNarrative: true } : {}),
    ...(ignoreMeta.length > 0 ? { ignoreMeta } : {}),
  }
  const sourceCtx: CanonicalContext = {
    ...narratives,
    ...(sourceBase !== undefined
      ? {
          base:
            (options.sourceBases ?? []).length > 0
              ? [sourceBase, ...(options.sourceBases ?? [])]
              : sourceBase,
        }
      : {}),
    mapKey,
    resolveUrn: (uuid) => byId.get(uuid) ?? byId.get(uuid.toLowerCase()) ?? undefined,
    ...(identifiers !== undefined
      ? {
          resolveConditional: (type: string, system: string | undefined, value: string) => {
            const found = identifiers.resolve(type, system, value)
            if (found._tag === "Found") return found.key
            if (found._tag === "Ambiguous" || sourceConditionals === undefined) return undefined
            const onTarget = sourceConditionals.resolve(type, system, value)
            if (onTarget === undefined) return undefined
            const source = reverse.get(onTarget)
            if (source !== undefined) return source
            if (!identityMap) onTargetOnly.add(onTarget)
            return onTarget
          },
        }
      : sourceConditionals !== undefined
        ? { resolveConditional: sourceConditionals.resolve }
        : {}),
  }
  const targetCtx: CanonicalContext = {
    ...narratives,
    base: target.baseUrl,
    transactionOnly: "unresolvable",
    versions: "mark",
  }

  let types: ReadonlyArray<string>
  const manifestCounts = manifest ? Manifest.counts(manifest) : new Map<string, number>()
  if (options.types !== undefined && options.types.length > 0) types = options.types
  else if (source._tag === "Archive") types = [...manifestCounts.keys()].sort()
  else {
    const cs = yield* source.client.capabilities().pipe(Effect.mapError(sourceError))
    // Binary like any type (its content type, security context, id set and inline data) where the source can
    // list them; else only through the attachments that point at them
    const binaries = Capabilities.supportsInteraction(cs, "search-type", "Binary")
    types = Capabilities.types(cs)
      .filter((t) => t !== "Binary" || binaries)
      .sort()
    if (!binaries && Capabilities.types(cs).includes("Binary"))
      notes.push(
        "the source cannot list its Binary resources (no search on Binary): they are compared through the attachments that point at them, not one by one",
      )
  }

  // An incremental archive (`--since`) holds what changed after the archive it continues: its resources are
  // compared, and its deletions checked gone; the rest of the target (the earlier migration) is not looked at.
  const delta = source._tag === "Archive" && manifest?.previous !== undefined
  const deletedKeys = new Map<string, Array<string>>() // type → source ids deleted (deleted/ of a delta)
  if (delta && manifest !== undefined && source._tag === "Archive") {
    for (const entry of manifest.deleted)
      yield* Archive.resources(source.dir, entry).pipe(
        Stream.mapError(sourceError),
        Stream.runForEach((l) =>
          Effect.sync(() => {
            const bundle = l.value as {
              entry?: ReadonlyArray<{ request?: { method?: string; url?: string } }>
            }
            for (const e of bundle.entry ?? []) {
              const m = /([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(e.request?.url ?? "")
              if (e.request?.method !== "DELETE" || m === null) continue
              deletedKeys.set(m[1]!, [...(deletedKeys.get(m[1]!) ?? []), m[2]!])
            }
          }),
        ),
      )
    if (options.types === undefined || options.types.length === 0)
      types = [...new Set([...types, ...deletedKeys.keys()])].sort()
    notes.push(
      `an incremental archive (changes after ${manifest.previous?.transactionTime ?? "?"}): its resources are compared and its deletions checked gone from the target; the rest of the target is not compared (verify against the source server for that)`,
    )
  }

  // Types only the target holds: what no source resource accounts for is extra, whatever its type (a full
  // comparison only). Binary too against an archive, which holds every Binary of its source (an archive of a
  // source without any has none), not against a source server that cannot list its own: there Binary goes
  // through the attachments. Each type the target's CapabilityStatement lists is counted; those it holds none
  // of are left out of the report.
  const targetOnly = new Set<string>()
  // an archive of some types only (`_type`) or of a Patient or Group compartment: the target's other types are
  // none of its business (their resources are not the source's missing from it), as with --type
  const selection =
    source._tag === "Archive" &&
    manifest !== undefined &&
    ("_type" in manifest.request.parameters || manifest.request.level !== "system")
  if (selection && !delta && (options.types === undefined || options.types.length === 0))
    notes.push(
      `the archive holds ${manifest?.request.level !== "system" ? `a ${manifest?.request.level === "group" ? "Group" : "Patient"}-level export` : "the types its export asked for (_type)"}: only its types were compared; the target's resources of other types were not counted`,
    )
  if (!delta && !selection && (options.types === undefined || options.types.length === 0)) {
    const cs = yield* target.capabilities().pipe(Effect.mapError(targetError))
    const known = new Set(types)
    // only types the target says it can search: the others cannot be listed anyway
    for (const t of Capabilities.types(cs))
      if (
        (t !== "Binary" || source._tag === "Archive") &&
        !known.has(t) &&
        Capabilities.supportsInteraction(cs, "search-type", t)
      )
        targetOnly.add(t)
    types = [...types, ...[...targetOnly].sort()]
  }
  /** Types counted on the target that may not be searched after all (403, or a search it does not support). */
  const unsearchable: Array<string> = []
  /** Types a source server does not list, taken to have none there, of which the target holds some. */
  const assumedNone: Array<string> = []

  // --- attachment hashing (cached per URL and side)
  const sourceHashes = new Map<string, AttHash>()
  const targetHashes = new Map<string, AttHash>()
  const sourceAttHash = (url: string): Effect.Effect<AttHash> => {
    const hit = sourceHashes.get(url)
    if (hit !== undefined) return Effect.succeed(hit)
    if (source._tag === "Archive") {
      const abs = sourceBase !== undefined && !/^[a-z][a-z0-9+.-]*:/i.test(url) ? `${sourceBase}/${url}` : url
      const sha = index.get(url) ?? index.get(abs)
      const r: AttHash =
        sha !== undefined
          ? Either.right(sha)
          : Either.left("the archive holds no blob for this attachment URL")
      sourceHashes.set(url, r)
      return Effect.succeed(r)
    }
    return Effect.tap(fetchHash(source.client, url), (r) => Effect.sync(() => sourceHashes.set(url, r)))
  }
  /**
   * The `securityContext` reference of a copy made for one resource (asked once per copy): a search of its id for
   * that element alone (its bytes were fetched already), else a read of it, where the target cannot search so.
   */
  const copyContexts = new Map<string, string | undefined>()
  const contextOf = (r: unknown): string | undefined => {
    const ref = (r as { readonly securityContext?: { readonly reference?: unknown } }).securityContext
      ?.reference
    return typeof ref === "string" ? ref : undefined
  }
  const copyContext = (id: string) =>
    copyContexts.has(id)
      ? Effect.succeed(copyContexts.get(id))
      : target
          .search("Binary", [
            ["_id", id],
            ["_elements", "securityContext"],
          ])
          .pipe(
            Effect.map((page) => page.entry?.find((e) => e.resource?.id === id)?.resource),
            Effect.orElseSucceed(() => undefined),
            Effect.flatMap((found) =>
              found !== undefined ? Effect.succeed(found) : target.read("Binary", id),
            ),
            Effect.map((r) => {
              const named = contextOf(r)
              copyContexts.set(id, named)
              return named
            }),
          )
  const targetAttHash = (url: string): Effect.Effect<AttHash> => {
    const hit = targetHashes.get(url)
    if (hit !== undefined) return Effect.succeed(hit)
    return Effect.tap(fetchHash(target, url), (r) => Effect.sync(() => targetHashes.set(url, r)))
  }

  const sourceStream = (type: string): Stream.Stream<Resource, VerifyError> =>
    targetOnly.has(type)
      ? Stream.empty
      : source._tag === "Archive"
        ? Stream.fromIterable(manifest?.files.filter((f) => f.type === type) ?? []).pipe(
            // (numbers as written: a target that stored `1.0` as `1` differs)
            Stream.flatMap((entry) =>
              Archive.resources(source.dir, entry, { keepNumbers: true }).pipe(Stream.map((l) => l.value)),
            ),
            Stream.mapError(sourceError),
          )
        : source.client.searchAll(type).pipe(Stream.mapError(sourceError))

  const rows: Array<TypeRow> = []
  const differences: Array<Difference> = []
  const mismatches: Array<AttachmentMismatch> = []
  let detailed = 0
  /** Target Binaries whose bytes alone differ from the source's: target key → source key (see the target pass). */
  const payloadOnly = new Map<string, string>()
  /** Target Binaries an attachment whose payload differs points at. */
  const mismatchedBinaries = new Set<string>()

  for (const type of types) {
    // counts
    let sourceCount: number | null = null
    // a type only the target lists: the source has none (a source server is not asked about it)
    if (source._tag === "Archive" || targetOnly.has(type)) sourceCount = manifestCounts.get(type) ?? 0
    else
      sourceCount = Option.getOrNull(
        yield* summaryCount(source.client, type).pipe(Effect.mapError(sourceError)),
      )
    // (a delta: the target's count is of the delta's resources found there, set after the target pass)
    let targetCount: number | null = null
    if (!delta && targetOnly.has(type)) {
      // what the target lists but Ferry may not read (a token scoped to the migrated types) is noted, not fatal
      const counted = yield* summaryCount(target, type).pipe(
        Effect.map(Option.some),
        Effect.catchIf(
          (e) =>
            e._tag === "FhirError" &&
            e.reason === "Status" &&
            (e.status === 403 || CANNOT_SEARCH.has(e.status ?? 0)),
          () => Effect.succeed(Option.none<Option.Option<number>>()),
        ),
        Effect.mapError(targetError),
      )
      if (Option.isNone(counted)) {
        unsearchable.push(type)
        continue
      }
      targetCount = Option.getOrNull(counted.value)
      if (source._tag === "Server" && targetCount !== 0) assumedNone.push(type)
    } else if (!delta)
      targetCount = Option.getOrNull(yield* summaryCount(target, type).pipe(Effect.mapError(targetError)))
    if (
      ((source._tag === "Server" && options.types === undefined) || targetOnly.has(type)) &&
      sourceCount === 0 &&
      targetCount === 0
    )
      continue

    // source pass
    const entries = new Map<string, SourceEntry>()
    const collided: Array<Difference> = [] // a second source resource for the same target key
    const sourceAtts = new Map<string, AttachmentRef>() // "<target key> <path>" → the attachment
    let crawledSource = 0
    yield* sourceStream(type).pipe(
      Stream.runForEach((r) =>
        Effect.gen(function* () {
          crawledSource++
          if (!hasId(r)) return
          const sk = `${type}/${r.id}`
          if (!sampled(sk)) return
          const tk = mapKey(sk)
          const taken = entries.get(tk)
          // (the same source resource twice, as a source may list it, still counts once: the last one wins)
          if (taken !== undefined && taken.s !== sk) {
            // one target resource cannot be the copy of both: this one is not on the target
            collided.push({
              kind: "missing",
              type,
              source: sk,
              target: tk,
              detail: `the id map gives ${tk} to ${taken.s} as well`,
            })
            return
          }
          const c =
            sourceConditionals !== undefined
              ? yield* sourceConditionals.canonical(r, sourceCtx)
              : canonicalize(r, sourceCtx)
          const h = hash(c.value)
          const source = {
            ...(hasMetaSource(r) ? { x: true as const } : {}),
            ...(type === "Binary" ? { b: hash(withoutData(c.value)) } : {}),
          }
          entries.set(
            tk,
            numbersLost(r)
              ? { s: sk, h, u: true, ...source }
              : hasWrittenDecimals(r)
                ? { s: sk, h, p: hash(withoutWrittenDecimals(c.value)), ...source }
                : { s: sk, h, ...source },
          )
          for (const a of c.attachments) sourceAtts.set(`${tk} ${a.path}`, a)
        }),
      ),
    )
    if (sourceCount === null) sourceCount = crawledSource

    // target pass
    let compared = 0
    let matching = 0
    let differing = 0
    let extra = 0
    let otherSources = 0
    let attachmentCopies = 0
    let crawledTarget = 0
    const targetAtts = new Map<string, string>()
    const toDetail = new Map<string, { readonly source: string; readonly target: unknown }>() // source key →
    // a delta's resources are read one by one (the rest of the target is the earlier migration's)
    const targetStream: Stream.Stream<Resource, VerifyError> = delta
      ? // (an unmapped key has no target id to read: it stays in `entries`, reported missing)
        Stream.fromIterable([...entries.keys()].filter((tk) => !tk.startsWith(unmappedPrefix))).pipe(
          Stream.mapEffect(
            (tk) =>
              target.read(type, tk.slice(type.length + 1)).pipe(
                Effect.map(Option.some),
                Effect.catchIf(
                  (e) =>
                    e._tag === "FhirError" && e.reason === "Status" && (e.status === 404 || e.status === 410),
                  () => Effect.succeed(Option.none<Resource>()),
                ),
                Effect.mapError(targetError),
              ),
            { concurrency },
          ),
          Stream.filterMap((o) => o),
        )
      : target.searchAll(type).pipe(Stream.mapError(targetError))
    yield* targetStream.pipe(
      Stream.runForEach((r) =>
        Effect.sync(() => {
          crawledTarget++
          if (!hasId(r)) return
          const tk = `${type}/${r.id}`
          const entry = entries.get(tk)
          if (entry === undefined) {
            // (one the id map gives this migration is its own, whatever its tag)
            if (!reverse.has(tk) && fromOtherSource(r)) {
              otherSources++
              return
            }
            // a Binary the import made for an attachment payload: checked through the attachments pointing at it
            // another source's attachment copy (two sources migrated into one target): theirs, as its resources
            if (!reverse.has(tk) && isOtherCopy(r)) {
              otherSources++
              return
            }
            if (!reverse.has(tk) && isOwnCopy(r)) {
              attachmentCopies++
              return
            }
            if (!sampled(reverse.get(tk) ?? tk)) return
            if (idMapPath === undefined && origins.has(taggedOrigin(r) ?? "")) ownUnmapped++
            extra++
            differences.push({ kind: "extra", type, target: tk })
            return
          }
          entries.delete(tk)
          compared++
          // A `meta.source` the target set where the source had none (a `$import` job records where the data
          // came from) is the target's own metadata, not a difference: left out of this side's form at once.
          const ownSource = entry.x !== true && hasMetaSource(r)
          const c = canonicalize(r, ownSource ? { ...targetCtx, dropMetaSource: true } : targetCtx)
          for (const a of c.attachments) targetAtts.set(`${tk} ${a.path}`, a.url)
          const lostHere = numbersLost(r)
          if (hash(c.value) === entry.h) {
            // (both sides' number texts lost: equal by their values, which the note says too)
            if (lostHere || entry.u === true) imprecise++
            matching++
            return
          }
          // One side's number texts were lost (its page held a duplicate key, …): how its decimals were
          // written is not known, so the two are compared by the numbers' values, not as a precision loss.
          if (lostHere || entry.u === true) {
            imprecise++
            const plain = lostHere
              ? c.value
              : canonicalize(r, { ...targetCtx, plainNumbers: true, dropMetaSource: ownSource }).value
            if (hash(plain) === (lostHere ? (entry.p ?? entry.h) : entry.h)) {
              matching++
              return
            }
          }
          // a Binary whose bytes alone differ: an attachment mismatch when an attachment points at it (counted
          // there, once), else a differing resource (settled after every type: see `payloadOnly`)
          if (entry.b !== undefined && hash(withoutData(c.value)) === entry.b) {
            payloadOnly.set(tk, entry.s)
            return
          }
          differing++
          if (detailed < diffLimit) {
            detailed++
            toDetail.set(entry.s, { source: entry.s, target: c.value })
          }
          differences.push({ kind: "differing", type, source: entry.s, target: tk })
        }),
      ),
    )
    if (targetCount === null) targetCount = crawledTarget
    // another migration's resources in the same target are not this one's to count, nor the attachment copies
    targetCount -= otherSources + attachmentCopies
    otherSourcesTotal += otherSources
    attachmentCopiesTotal += attachmentCopies
    // a delta's deletions: gone from the target (through the id map), or an extra resource there
    const stillThere = yield* Effect.forEach(
      deletedKeys.get(type) ?? [],
      (id) => {
        const tk = mapKey(`${type}/${id}`)
        if (tk.startsWith(unmappedPrefix)) return Effect.succeed(Option.none<string>())
        return target.read(type, tk.slice(type.length + 1)).pipe(
          Effect.as(Option.some(tk)),
          Effect.catchIf(
            (e) => e._tag === "FhirError" && e.reason === "Status" && (e.status === 404 || e.status === 410),
            () => Effect.succeed(Option.none<string>()),
          ),
          Effect.mapError(targetError),
        )
      },
      { concurrency },
    )
    for (const tk of stillThere) {
      if (Option.isNone(tk)) continue
      extra++
      differences.push({
        kind: "extra",
        type,
        target: tk.value,
        detail: "deleted at the source (this archive's deleted/), still on the target",
      })
    }
    const missing = entries.size + collided.length
    differences.push(...collided)
    for (const [tk, e] of entries) {
      differences.push(
        tk.startsWith(unmappedPrefix)
          ? { kind: "missing", type, source: e.s, detail: "not in the id map: not migrated" }
          : { kind: "missing", type, source: e.s, ...(tk !== e.s ? { target: tk } : {}) },
      )
    }
    entries.clear()

    // field-level diffs: read the few differing source resources again
    if (toDetail.size > 0) {
      const found = new Map<string, unknown>()
      if (source._tag === "Server") {
        yield* Effect.forEach(
          [...toDetail.keys()],
          (sk) =>
            source.client.read(type, sk.slice(type.length + 1)).pipe(
              Effect.mapError(sourceError),
              Effect.map((r) => found.set(sk, canonicalize(r, sourceCtx).value)),
            ),
          { concurrency },
        )
      } else {
        yield* sourceStream(type).pipe(
          Stream.runForEach((r) =>
            Effect.sync(() => {
              const sk = `${type}/${r.id ?? ""}`
              if (toDetail.has(sk)) found.set(sk, canonicalize(r, sourceCtx).value)
            }),
          ),
        )
      }
      for (let i = 0; i < differences.length; i++) {
        const d = differences[i]
        if (d === undefined || d.kind !== "differing" || d.source === undefined) continue
        const t = toDetail.get(d.source)
        if (t === undefined || !found.has(d.source)) continue
        const fields = diff(found.get(d.source), t.target, fieldLimit + 1)
        differences[i] =
          fields.length > fieldLimit
            ? { ...d, fields: fields.slice(0, fieldLimit), moreFields: true }
            : { ...d, fields }
      }
    }

    // attachments present on both sides: compare the payload hashes
    const pairs = [...sourceAtts].filter(([k]) => targetAtts.has(k))
    let attMismatches = 0
    yield* Effect.forEach(
      pairs,
      ([k, { url: sourceUrl, data }]) =>
        Effect.gen(function* () {
          const targetUrl = targetAtts.get(k) ?? ""
          const space = k.indexOf(" ")
          // not fetched: whatever it answers comes from the source, and says nothing about the target
          const onSource = stillOnSource(targetUrl, target.baseUrl, sourceNames)
          if (onSource !== undefined) {
            attMismatches++
            mismatches.push({ resource: k.slice(0, space), path: k.slice(space + 1), detail: onSource })
            return
          }
          // a url naming a contained resource (`#id`), as the source had it: that resource is compared with the
          // resource that contains it; content inline, its url on a host of neither server and as the source had
          // it: the import copies no inline content and left the url, and that content is compared likewise
          if (
            targetUrl === sourceUrl &&
            (targetUrl.startsWith("#") ||
              (data !== undefined &&
                /^[a-z][a-z0-9+.-]*:/i.test(targetUrl) &&
                !under(oneLoopback(targetUrl), oneLoopback(target.baseUrl))))
          )
            return
          const [fromUrl, t] = yield* Effect.all([sourceAttHash(sourceUrl), targetAttHash(targetUrl)])
          // an attachment with its content inline too: that content, where the source's URL gives none
          const s: AttHash =
            Either.isLeft(fromUrl) && data !== undefined
              ? Either.right(createHash("sha256").update(Buffer.from(data, "base64")).digest("hex"))
              : fromUrl
          const binary = binaryOn(targetUrl, target.baseUrl)
          if (Either.isRight(s) && Either.isRight(t) && s.right === t.right) {
            // a copy the import made for this resource alone: who may read it is decided by this resource
            const owner = k.slice(0, space)
            const copy = binary?.slice("Binary/".length)
            if (copy === undefined || !isOwnedCopyId(copy)) return
            const named = yield* Effect.either(copyContext(copy))
            if (Either.isRight(named) && named.right !== undefined && names(named.right, owner)) return
            attMismatches++
            mismatches.push({
              resource: owner,
              path: k.slice(space + 1),
              detail: Either.isLeft(named)
                ? `target: could not read ${binary}, the copy of this attachment made for ${owner}: ${named.left.message}`
                : `target: ${binary}, the copy of this attachment made for ${owner}, has ${named.right === undefined ? "no securityContext" : `securityContext ${named.right}`}: who may read it is not decided by ${owner}`,
            })
            return
          }
          // (a payload not fetched on one side says nothing of the Binary: it stays a differing resource)
          if (binary !== undefined && Either.isRight(s) && Either.isRight(t)) mismatchedBinaries.add(binary)
          attMismatches++
          mismatches.push({
            resource: k.slice(0, space),
            path: k.slice(space + 1),
            ...(Either.isRight(s) ? { sourceSha256: s.right } : {}),
            ...(Either.isRight(t) ? { targetSha256: t.right } : {}),
            detail: Either.isLeft(s)
              ? `source: ${s.left}`
              : Either.isLeft(t)
                ? `target: ${t.left}`
                : "the payloads differ (sha256)",
          })
        }),
      { concurrency },
    )

    rows.push({
      type,
      sourceCount,
      targetCount,
      compared,
      matching,
      differing,
      missing,
      extra,
      otherSources,
      attachments: pairs.length,
      attachmentMismatches: attMismatches,
    })
    yield* Effect.logDebug("verify type done").pipe(
      Effect.annotateLogs({ type, compared, differing, missing, extra }),
    )
  }

  // Binaries whose bytes alone differ: those an attachment points at were reported as its mismatch; the others
  // are differing resources
  let binariesAsAttachments = 0
  for (const [tk, sk] of payloadOnly) {
    if (mismatchedBinaries.has(tk)) {
      binariesAsAttachments++
      continue
    }
    const at = rows.findIndex((r) => r.type === "Binary")
    if (at >= 0) rows[at] = { ...rows[at]!, differing: rows[at]!.differing + 1 }
    differences.push({
      kind: "differing",
      type: "Binary",
      source: sk,
      target: tk,
      detail: "its bytes (data) differ",
    })
  }

  const sum = (f: (r: TypeRow) => number) => rows.reduce((a, r) => a + f(r), 0)
  const countMismatches = rows.filter((r) => r.sourceCount !== r.targetCount).length
  const totals: Totals = {
    sourceCount: sum((r) => r.sourceCount ?? 0),
    targetCount: sum((r) => r.targetCount ?? 0),
    compared: sum((r) => r.compared),
    matching: sum((r) => r.matching),
    differing: sum((r) => r.differing),
    missing: sum((r) => r.missing),
    extra: sum((r) => r.extra),
    countMismatches,
    attachments: sum((r) => r.attachments),
    attachmentMismatches: sum((r) => r.attachmentMismatches),
    otherSources: sum((r) => r.otherSources),
  }
  if (
    percent !== undefined &&
    percent < 100 &&
    totals.compared + totals.missing + totals.extra === 0 &&
    totals.sourceCount > 0
  ) {
    // a verify that compared nothing proves nothing: not called clean
    return yield* new VerifyError({
      reason: "Config",
      detail: `--sample ${percent}% chose none of the source's ${totals.sourceCount} resources, so nothing was compared; use a larger --sample (e.g. --sample ${Math.min(100, Math.max(1, Math.ceil((100 * 20) / totals.sourceCount)))}%)`,
    })
  }
  if (sourceConditionals !== undefined && sourceConditionals.distinct() > 0)
    notes.push(
      source._tag === "Server"
        ? `conditional references resolved by searching the source: ${sourceConditionals.resolved()} of ${sourceConditionals.distinct()} distinct (the others compared as written)`
        : `conditional references the archive holds no resource for resolved by searching the target, as the import did: ${sourceConditionals.resolved()} of ${sourceConditionals.distinct()} distinct (the others compared as written)`,
    )
  if (options.ignoreGeneratedNarrative === true)
    notes.push(
      "narratives with status generated were left out of the comparison (--ignore-generated-narrative)",
    )
  if (binariesAsAttachments > 0)
    notes.push(
      `${binariesAsAttachments} Binary resource(s) whose bytes differ counted once, as the attachment mismatches of the resources pointing at them, not also as differing resources`,
    )
  if (ignoreMeta.length > 0)
    notes.push(
      `${ignoreMeta.map((m) => `meta.${m}`).join(", ")} left out of the comparison, as the import dropped ${ignoreMeta.length === 1 ? "it" : "them"} (${recordedDrops === undefined ? "--drop-meta" : "its journal says so"})`,
    )
  if (percent !== undefined && percent < 100)
    notes.push(`sampled: ${percent}% of resources compared (chosen by the sha256 of the source Type/id)`)
  if (assumedNone.length > 0)
    notes.push(
      `${assumedNone.join(", ")}: not in the source server's CapabilityStatement, so taken to have none there; if it does hold some, compare them with --type`,
    )
  if (otherSourcesTotal > 0)
    notes.push(
      `${otherSourcesTotal} resource(s) on the target carry Ferry's provenance tag of another source (another migration into the same target): left out of the comparison and of the target counts; if that source is this one under another name (a DNS name and its address, say), give that name with --source-base and verify again`,
    )
  const hint =
    ownUnmapped > 0
      ? `${ownUnmapped} extra target resource(s) carry Ferry's provenance tag of this source: an import gave them new ids (--strategy post), so they cannot be paired without its id map; run again with --id-map <archive>/imports/<target>/idmap.ndjson (the archive that import read)`
      : undefined
  if (hint !== undefined) notes.push(hint)
  if (imprecise > 0)
    notes.push(
      `${imprecise} resource(s) were compared by their decimals' values, not as written: one side's answer could not be read with its number texts (a duplicate key in the same page or line, …), so a precision lost there would not show`,
    )
  if (attachmentCopiesTotal > 0)
    notes.push(
      `${attachmentCopiesTotal} Binary resource(s) on the target are the copies of attachment payloads the import uploaded (attachments that were no Binary of the source): left out of the comparison and of the target counts; their bytes are checked through the attachments that point at them`,
    )
  if (unsearchable.length > 0)
    notes.push(
      `not looked at: ${unsearchable.join(", ")} (types the target lists but does not let Ferry search; resources there of no source are not reported)`,
    )
  if (options.types !== undefined && options.types.length > 0)
    notes.push(
      `only the types asked for (--type ${options.types.join(",")}) were compared; the target's resources of other types were not counted`,
    )
  const clean =
    totals.differing + totals.missing + totals.extra + totals.attachmentMismatches + countMismatches === 0
  const report: Report = {
    format: "ferry-verify/1",
    verdict: clean ? "clean" : "differences",
    startedAt,
    finishedAt: DateTime.formatIso(yield* DateTime.now),
    source:
      source._tag === "Archive"
        ? {
            kind: "archive",
            location: Path.resolve(source.dir),
            ...(manifest !== undefined ? { server: manifest.source.baseUrl } : {}),
            ...(manifest?.transactionTime !== undefined ? { transactionTime: manifest.transactionTime } : {}),
            ...(checksumsSha256 !== undefined ? { checksumsSha256 } : {}),
            ...(delta ? { delta: true as const } : {}),
          }
        : { kind: "server", location: source.client.baseUrl },
    target: { url: target.baseUrl },
    tool: { name: "ferry", version },
    sample: percent !== undefined && percent < 100 ? { percent } : null,
    idMap: idMapPath !== undefined ? { path: idMapPath, entries: forward.size } : null,
    ...(hint !== undefined ? { hint } : {}),
    diffLimit,
    types: rows,
    totals,
    differences,
    attachments: mismatches,
    notes,
  }
  return report
})
