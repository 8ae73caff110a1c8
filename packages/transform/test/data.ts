/** Test data readers (the shared data set is read in place, never copied into the repo). */
import { readdirSync, readFileSync } from "node:fs"
import type { Resource } from "@ferry/core/Ids"

export const data = (path: string): URL => new URL(`../../../../shared/data/${path}`, import.meta.url)

interface BundleFile {
  readonly entry: ReadonlyArray<{ readonly fullUrl?: string; readonly resource: Resource }>
}

export const patientFile = "Carmelo_Streich_4026988c-ab06-4635-8c53-86cbad7b1c56.json"
export const hospitalFile = "hospitalInformation1588766256867.json"
export const practitionerFile = "practitionerInformation1588766256867.json"

/** The entry resources of Synthea Bundles, as an export would give them (deduplicated by Type/id). */
export const syntheaResources = (...files: ReadonlyArray<string>): ReadonlyArray<Resource> => {
  const out = new Map<string, Resource>()
  for (const f of files) {
    const bundle = JSON.parse(readFileSync(data(`synthea-bundles/${f}`), "utf8")) as BundleFile
    for (const e of bundle.entry) out.set(`${e.resource.resourceType}/${e.resource.id}`, e.resource)
  }
  return Array.from(out.values())
}

/** A patient Bundle plus the hospital and practitioner Bundles it points into. */
export const syntheaPatientSet = (file = patientFile): ReadonlyArray<Resource> =>
  syntheaResources(file, hospitalFile, practitionerFile)

export const sampleDir = "sample-bulk-10-patients"

/** The resources of one NDJSON file of the 10-patient sample. */
export const ndjson = (type: string): ReadonlyArray<Resource> =>
  readFileSync(data(`${sampleDir}/${type}.000.ndjson`), "utf8")
    .split("\n")
    .filter((l) => l.trim().length > 0)
    .map((l) => JSON.parse(l) as Resource)

/** The resource types present in the 10-patient sample. */
export const sampleTypes = (): ReadonlyArray<string> =>
  readdirSync(data(sampleDir))
    .filter((f) => f.endsWith(".000.ndjson"))
    .map((f) => f.slice(0, -".000.ndjson".length))

/** The raw text of one sample file (for counts made independently of the code under test). */
export const sampleText = (type: string): string =>
  readFileSync(data(`${sampleDir}/${type}.000.ndjson`), "utf8")

/** A deep-frozen structural copy: any mutation by the code under test throws. */
export const frozen = <A>(value: A): A => deepFreeze(structuredClone(value))

const deepFreeze = <A>(value: A): A => {
  if (typeof value === "object" && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v)
    Object.freeze(value)
  }
  return value
}

/** Observation → Encounter ↔ Condition → Patient → (an Organization outside the set). */
export const cycleResources: ReadonlyArray<Resource> = [
  {
    resourceType: "Observation",
    id: "o",
    subject: { reference: "Patient/p" },
    encounter: { reference: "Encounter/e" },
  },
  {
    resourceType: "Encounter",
    id: "e",
    subject: { reference: "Patient/p" },
    diagnosis: [{ condition: { reference: "Condition/c" } }],
  },
  {
    resourceType: "Condition",
    id: "c",
    subject: { reference: "Patient/p" },
    encounter: { reference: "Encounter/e" },
  },
  { resourceType: "Patient", id: "p", managingOrganization: { reference: "Organization/outside" } },
]
