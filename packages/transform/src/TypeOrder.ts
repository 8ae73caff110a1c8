/**
 * A rank per R4 resource type that follows how references usually point: administrative and shared
 * resources (Organization, Practitioner, Medication, …) first, then Patient and other compartment owners,
 * then Encounter and its companions (Condition: the usual Encounter ↔ Condition cycle shares a rank), then
 * clinical resources, then the ones that point at everything (Claim, ExplanationOfBenefit, Provenance, …).
 *
 * This is a heuristic for *scheduling* only (`ferry migrate` downloads low ranks first so import waves can
 * start while the rest downloads); correctness never depends on it: the import orders by the real reference
 * graph. Unknown types rank with the clinical ones.
 */

const ranks: ReadonlyArray<ReadonlyArray<string>> = [
  // conformance and terminology
  [
    "CodeSystem",
    "ValueSet",
    "ConceptMap",
    "NamingSystem",
    "StructureDefinition",
    "SearchParameter",
    "Questionnaire",
    "Library",
    "Measure",
    "PlanDefinition",
    "ActivityDefinition",
  ],
  // shared, non-patient resources
  [
    "Organization",
    "Endpoint",
    "Location",
    "HealthcareService",
    "Practitioner",
    "PractitionerRole",
    "Substance",
    "Medication",
    "Device",
    "Binary",
  ],
  // compartment owners
  ["Patient", "RelatedPerson", "Person", "Group", "Coverage", "Account"],
  // the encounter layer (Encounter ↔ Condition, EpisodeOfCare ↔ Encounter)
  ["EpisodeOfCare", "Encounter", "Condition", "CareTeam", "CarePlan", "Goal"],
  // clinical resources (and unknown types)
  [],
  // resources that point at the clinical ones
  ["Claim", "ClaimResponse"],
  ["ExplanationOfBenefit"],
  ["Provenance", "AuditEvent"],
]

const CLINICAL = 4

const byType: ReadonlyMap<string, number> = new Map(
  ranks.flatMap((types, rank) => types.map((t) => [t, rank])),
)

/** The scheduling rank of a resource type (lower: usually referenced by higher). */
export const rank = (type: string): number => byType.get(type) ?? CLINICAL
