/**
 * The `$export` kick-off: which URL, GET query or POST Parameters, and the 202 + Content-Location answer.
 */
import { type AuthError, FhirError } from "@ferry/core/Errors"
import { summary } from "@ferry/core/OperationOutcome"
import type { FhirClient } from "@ferry/core/FhirClient"
import * as Parameters from "@ferry/core/Parameters"
import { Effect, Schema } from "effect"
import { ExportError } from "./ExportError.js"
import { patientCompartment } from "./internal/compartment.js"

export const Level = Schema.Literal("system", "patient", "group")
export type Level = typeof Level.Type

/** The types a Patient- or Group-level kick-off without `_type` asks for: the Patient compartment's (R4). */
export const compartmentTypes: ReadonlyArray<string> = Object.keys(patientCompartment)

const Strings = Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] })

/** What to export; stored in the journal so that a resumed run (or a re-kick-off) asks the same thing. */
export const ExportParams = Schema.Struct({
  level: Level,
  groupId: Schema.optional(Schema.String),
  types: Strings,
  since: Schema.optional(Schema.String),
  until: Schema.optional(Schema.String),
  typeFilters: Strings,
  elements: Strings,
  /** Patient references (`Patient/123` or `123`); forces a POST kick-off. */
  patients: Strings,
  includeAssociatedData: Strings,
  organizeOutputBy: Schema.optional(Schema.String),
  allowPartialManifests: Schema.optional(Schema.Boolean),
  /** Server-specific parameters passed through as given (`--param k=v`). */
  custom: Schema.optionalWith(Schema.Array(Schema.Tuple(Schema.String, Schema.String)), {
    default: () => [],
  }),
  /** POST with a Parameters body even without `patients`. */
  post: Schema.optionalWith(Schema.Boolean, { default: () => false }),
})
export type ExportParams = typeof ExportParams.Type
export type ExportParamsInput = typeof ExportParams.Encoded

/** Fills in defaults. */
export const params = (input: ExportParamsInput): ExportParams => Schema.decodeSync(ExportParams)(input)

/** Checks that the parameters make sense together (before anything is sent). */
export const validate = (p: ExportParams): Effect.Effect<ExportParams, ExportError> => {
  if (p.level === "group" && (p.groupId === undefined || p.groupId === "")) {
    return Effect.fail(
      new ExportError({
        reason: "Config",
        detail: "A group-level export needs the Group id; pass --group <id>",
      }),
    )
  }
  if (
    p.since !== undefined &&
    p.until !== undefined &&
    !Number.isNaN(Date.parse(p.since)) &&
    Date.parse(p.until) <= Date.parse(p.since)
  ) {
    return Effect.fail(
      new ExportError({
        reason: "Config",
        detail: `--until ${p.until} is not after the export's _since (${p.since}): no resource changed in between, so there is nothing to export; give an --until later than --since (with --since auto: than the previous archive's transactionTime)`,
      }),
    )
  }
  if (p.level === "system" && p.patients.length > 0) {
    return Effect.fail(
      new ExportError({
        reason: "Config",
        detail: "The patient parameter is not valid at system level; use --level patient or --level group",
      }),
    )
  }
  return Effect.succeed(p)
}

/** The kick-off path below the FHIR base. */
export const path = (p: ExportParams): string =>
  p.level === "system"
    ? "$export"
    : p.level === "patient"
      ? "Patient/$export"
      : `Group/${encodeURIComponent(p.groupId ?? "")}/$export`

const patientReference = (p: string): string => (p.includes("/") ? p : `Patient/${p}`)

/** The GET query parameters, in a stable order. */
export const query = (p: ExportParams): ReadonlyArray<readonly [string, string]> => {
  const q: Array<readonly [string, string]> = []
  if (p.types.length > 0) q.push(["_type", p.types.join(",")])
  if (p.since !== undefined) q.push(["_since", p.since])
  if (p.until !== undefined) q.push(["_until", p.until])
  for (const f of p.typeFilters) q.push(["_typeFilter", f])
  if (p.elements.length > 0) q.push(["_elements", p.elements.join(",")])
  if (p.includeAssociatedData.length > 0) q.push(["includeAssociatedData", p.includeAssociatedData.join(",")])
  if (p.organizeOutputBy !== undefined) q.push(["organizeOutputBy", p.organizeOutputBy])
  if (p.allowPartialManifests !== undefined)
    q.push(["allowPartialManifests", String(p.allowPartialManifests)])
  for (const kv of p.custom) q.push(kv)
  return q
}

/** The POST body (a Parameters resource). */
export const body = (p: ExportParams): Parameters.Parameters => {
  const out: Array<Parameters.Parameter> = []
  if (p.types.length > 0) out.push(Parameters.string("_type", p.types.join(",")))
  if (p.since !== undefined) out.push(Parameters.instant("_since", p.since))
  if (p.until !== undefined) out.push(Parameters.instant("_until", p.until))
  for (const f of p.typeFilters) out.push(Parameters.string("_typeFilter", f))
  if (p.elements.length > 0) out.push(Parameters.string("_elements", p.elements.join(",")))
  for (const ref of p.patients) out.push(Parameters.reference("patient", patientReference(ref)))
  for (const v of p.includeAssociatedData) out.push(Parameters.code("includeAssociatedData", v))
  if (p.organizeOutputBy !== undefined) out.push(Parameters.string("organizeOutputBy", p.organizeOutputBy))
  if (p.allowPartialManifests !== undefined) {
    out.push(Parameters.boolean("allowPartialManifests", p.allowPartialManifests))
  }
  for (const [k, v] of p.custom) out.push(Parameters.string(k, v))
  return Parameters.make(out)
}

/** Whether the kick-off is a POST (a `patient` list can only travel in a POST). */
export const usesPost = (p: ExportParams): boolean => p.post || p.patients.length > 0

/** Statuses of a kick-off that mean "this server has no $export here". */
export const notSupportedStatuses: ReadonlySet<number> = new Set([404, 405, 501])

/** A Group-level export of a Group the source does not have: a usage error naming it (exit 2), not "no $export". */
export const noSuchGroup = (client: FhirClient, groupId: string, cause?: unknown): ExportError =>
  new ExportError({
    reason: "Config",
    url: `${client.baseUrl}/Group/${groupId}`,
    detail: `the source has no Group/${groupId} (404); give the id of one of its Groups with --group`,
    cause,
  })

/** Whether `e` says the resource read does not exist (404, 410). */
const isGone = (e: unknown): e is FhirError =>
  e instanceof FhirError && e.reason === "Status" && (e.status === 404 || e.status === 410)

/** The Group of a Group-level export; one the source does not have is a usage error naming it. */
export const groupOf = (client: FhirClient, id: string) =>
  client.read("Group", id).pipe(Effect.catchIf(isGone, (e) => Effect.fail(noSuchGroup(client, id, e))))

/**
 * Sends the kick-off and returns the absolute status (polling) URL from `Content-Location`.
 * A 404/405/501 becomes `ExportError` NotSupported (the caller may fall back to a crawl), except a 404 at
 * Group level for a Group the source does not have (read to tell the two apart): a usage error. With
 * `undeclared` (the CapabilityStatement declares no $export at this level) a 400 or 422 is NotSupported too:
 * servers answer an operation they do not know with it (HAPI's "does not know how to handle"); otherwise it
 * refuses the parameters (`--patient` ids, or the others): a usage error (Config) saying which to check.
 */
export const kickoff = Effect.fn("Kickoff.kickoff")(function* (
  client: FhirClient,
  p: ExportParams,
  options: { readonly undeclared?: boolean } = {},
) {
  const post = usesPost(p)
  const target = path(p)
  const url = `${client.baseUrl}/${target}`
  const response = yield* client
    .operation(target, {
      method: post ? "POST" : "GET",
      headers: { prefer: "respond-async", accept: "application/fhir+json" },
      ...(post ? { body: body(p) } : { urlParams: query(p).map(([k, v]) => [k, v] as [string, string]) }),
    })
    .pipe(
      // a kick-off answered 429 after every retry: the server refuses another job while one of this client's
      // runs (the spec's "a second concurrent export"), not a request rate that --parallel would lower
      Effect.catchIf(
        (e) => e instanceof FhirError && e.reason === "Throttled" && e.status === 429,
        (e) =>
          new ExportError({
            reason: "Kickoff",
            url,
            detail: `the server refused to start the export (429 after every retry${e instanceof FhirError && e.outcome !== undefined ? `; it said: ${summary(e.outcome)}` : ""}): it runs one export job per client at a time, and another of this client's is likely still running (a run that was stopped or killed left it; its status URL is in that archive's journal.ndjson); let it finish, or cancel it (DELETE its status URL, or rerun the command that started it, which finishes and releases it), then run this command again`,
            cause: e,
          }),
      ),
      Effect.catchIf(
        (e): e is FhirError =>
          e instanceof FhirError &&
          e.reason === "Status" &&
          (notSupportedStatuses.has(e.status ?? 0) || e.status === 400 || e.status === 422),
        (e) =>
          Effect.gen(function* () {
            const refused = e.status === 400 || e.status === 422
            // the server offers the export and refuses what it was asked: one of the parameters
            if (refused && p.patients.length === 0 && options.undeclared !== true)
              return yield* new ExportError({
                reason: "Config",
                url,
                detail: `the server refused the kick-off (${e.answer}); its answer names what it would not take: check the --type, --since, --until, --type-filter, --elements and --param values against what this server supports, then run the command again`,
                cause: e,
              })
            // a kick-off naming patients the server does not have is refused (400, 422), declared $export or not
            if (refused && p.patients.length > 0)
              return yield* new ExportError({
                reason: "Config",
                url,
                detail: `the server refused the kick-off (${e.answer}); check the --patient ids (${p.patients.join(", ")}): each must name a Patient on the source`,
                cause: e,
              })
            // a Group the source does not have (else: no group-level $export here)
            if (e.status === 404 && p.level === "group" && p.groupId !== undefined)
              yield* groupOf(client, p.groupId).pipe(
                Effect.catchIf(
                  (x) => !(x instanceof ExportError),
                  () => Effect.void,
                ),
              )
            return yield* new ExportError({
              reason: "NotSupported",
              url,
              detail: refused
                ? `the server answered ${e.answer} to the $export kick-off, which its CapabilityStatement does not declare at this level: taken as no bulk export at ${p.level} level (if it does offer one, its answer says what it refused: fix that and use --mode bulk)`
                : `the server answered ${e.status} to the $export kick-off${options.undeclared === true ? ", which its CapabilityStatement does not declare at this level" : ""}; it does not offer bulk export at ${p.level} level (use --mode crawl)`,
              cause: e,
            })
          }),
      ),
    )
  // The body (an optional OperationOutcome) is not needed; read it so the connection is released.
  yield* Effect.ignore(response.text)
  const location = response.headers["content-location"]
  if (response.status !== 202 || location === undefined || location === "") {
    return yield* new ExportError({
      reason: "Kickoff",
      url,
      detail: `the kick-off answered ${response.status}${location === undefined ? " without a Content-Location header" : ""}; expected 202 Accepted with the status URL, check that the server implements Bulk Data $export`,
    })
  }
  return new URL(location, url).toString()
}) satisfies (
  client: FhirClient,
  p: ExportParams,
) => Effect.Effect<string, ExportError | FhirError | AuthError>
