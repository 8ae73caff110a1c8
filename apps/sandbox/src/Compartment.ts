/**
 * The complete R4 (4.0.1) Patient compartment as data: for each of the 66 member types, the search
 * parameters that link it to a Patient, the FHIRPath-like element path each parameter follows, and
 * the top-level element it starts from (what `Store.iterate(…, { referencing: { paths } })` takes).
 *
 * Source: CompartmentDefinition `patient` (R4 4.0.1) and the R4 search parameter expressions.
 */

import { r4ResourceTypes as storedResourceTypes } from "./internal/ResourceTypes.js"

export interface CompartmentParam {
  /** The search parameter name, e.g. "performer". */
  readonly param: string
  /** Element path below the resource, e.g. "performer.actor" (".where(resolve() is Patient)" dropped). */
  readonly path: string
}

const p = (param: string, path: string = param): CompartmentParam => ({ param, path })

/** Member type → linking parameters. Non-members (Binary, Organization, Practitioner, …) are absent. */
export const patientCompartment: Readonly<Record<string, ReadonlyArray<CompartmentParam>>> = {
  Account: [p("subject")],
  AdverseEvent: [p("subject")],
  AllergyIntolerance: [p("patient"), p("recorder"), p("asserter")],
  Appointment: [p("actor", "participant.actor")],
  AppointmentResponse: [p("actor")],
  AuditEvent: [p("patient", "agent.who"), p("patient", "entity.what")],
  Basic: [p("patient", "subject"), p("author")],
  BodyStructure: [p("patient")],
  CarePlan: [p("patient", "subject"), p("performer", "activity.detail.performer")],
  CareTeam: [p("patient", "subject"), p("participant", "participant.member")],
  ChargeItem: [p("subject")],
  Claim: [p("patient"), p("payee", "payee.party")],
  ClaimResponse: [p("patient")],
  ClinicalImpression: [p("subject")],
  Communication: [p("subject"), p("sender"), p("recipient")],
  CommunicationRequest: [p("subject"), p("sender"), p("recipient"), p("requester")],
  Composition: [p("subject"), p("author"), p("attester", "attester.party")],
  Condition: [p("patient", "subject"), p("asserter")],
  Consent: [p("patient")],
  Coverage: [p("policy-holder", "policyHolder"), p("subscriber"), p("beneficiary"), p("payor")],
  CoverageEligibilityRequest: [p("patient")],
  CoverageEligibilityResponse: [p("patient")],
  DetectedIssue: [p("patient")],
  DeviceRequest: [p("subject"), p("performer")],
  DeviceUseStatement: [p("subject")],
  DiagnosticReport: [p("subject")],
  DocumentManifest: [p("subject"), p("author"), p("recipient")],
  DocumentReference: [p("subject"), p("author")],
  Encounter: [p("patient", "subject")],
  EnrollmentRequest: [p("subject", "candidate")],
  EpisodeOfCare: [p("patient")],
  ExplanationOfBenefit: [p("patient"), p("payee", "payee.party")],
  FamilyMemberHistory: [p("patient")],
  Flag: [p("patient", "subject")],
  Goal: [p("patient", "subject")],
  Group: [p("member", "member.entity")],
  ImagingStudy: [p("patient", "subject")],
  Immunization: [p("patient")],
  ImmunizationEvaluation: [p("patient")],
  ImmunizationRecommendation: [p("patient")],
  Invoice: [p("subject"), p("patient", "subject"), p("recipient")],
  List: [p("subject"), p("source")],
  MeasureReport: [p("patient", "subject")],
  Media: [p("subject")],
  MedicationAdministration: [p("patient", "subject"), p("performer", "performer.actor"), p("subject")],
  MedicationDispense: [p("subject"), p("patient", "subject"), p("receiver")],
  MedicationRequest: [p("subject")],
  MedicationStatement: [p("subject")],
  MolecularSequence: [p("patient")],
  NutritionOrder: [p("patient")],
  Observation: [p("subject"), p("performer")],
  Patient: [p("link", "link.other")],
  Person: [p("patient", "link.target")],
  Procedure: [p("patient", "subject"), p("performer", "performer.actor")],
  Provenance: [p("patient", "target")],
  QuestionnaireResponse: [p("subject"), p("author")],
  RelatedPerson: [p("patient")],
  RequestGroup: [p("subject"), p("participant", "action.participant")],
  ResearchSubject: [p("individual")],
  RiskAssessment: [p("subject")],
  Schedule: [p("actor")],
  ServiceRequest: [p("subject"), p("performer")],
  Specimen: [p("subject")],
  SupplyDelivery: [p("patient")],
  SupplyRequest: [p("subject", "deliverTo")],
  VisionPrescription: [p("patient")],
}

/** The 66 member types, sorted. */
export const memberTypes: ReadonlyArray<string> = Object.keys(patientCompartment).sort()

export const isMember = (type: string): boolean => Object.hasOwn(patientCompartment, type)

/** Distinct top-level element names of a member type that may hold a reference to a Patient. */
export const topLevelPaths = (type: string): ReadonlyArray<string> => {
  const params = patientCompartment[type]
  if (params === undefined) return []
  return [...new Set(params.map((x) => x.path.split(".")[0]!))]
}

const isPatientReference = (ref: string, patientIds: ReadonlySet<string> | undefined): boolean => {
  const m = /(?:^|\/)Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(ref)
  if (m === null) return false
  return patientIds === undefined || patientIds.has(m[1]!)
}

/** Walks a parsed element along `segments`, calling `visit` on each reached value (arrays flattened). */
const walk = (value: unknown, segments: ReadonlyArray<string>, visit: (v: unknown) => boolean): boolean => {
  if (Array.isArray(value)) return value.some((v) => walk(v, segments, visit))
  if (segments.length === 0) return visit(value)
  if (typeof value !== "object" || value === null) return false
  return walk((value as Record<string, unknown>)[segments[0]!], segments.slice(1), visit)
}

/**
 * Does this parsed resource belong to the compartment of one of `patientIds` (any Patient when
 * undefined)? A Patient is in its own compartment.
 */
export const inCompartment = (
  resource: { readonly resourceType: string; readonly id?: string; readonly [k: string]: unknown },
  patientIds: ReadonlySet<string> | undefined,
): boolean => {
  if (resource.resourceType === "Patient" && resource.id !== undefined) {
    if (patientIds === undefined || patientIds.has(resource.id)) return true
  }
  const params = patientCompartment[resource.resourceType]
  if (params === undefined) return false
  return params.some((param) =>
    walk(resource, param.path.split("."), (v) => {
      if (typeof v !== "object" || v === null) return false
      const ref = (v as { reference?: unknown }).reference
      return typeof ref === "string" && isPatientReference(ref, patientIds)
    }),
  )
}

/** Every R4 (4.0.1) resource type the sandbox stores (one list, from @ferry/core/Reference). */
export const r4ResourceTypes: ReadonlySet<string> = new Set(storedResourceTypes)
