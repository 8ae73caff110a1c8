/**
 * Deterministic synthetic data (`--generate N`): the same N (and seed) always gives the same
 * resources (ids and content; only meta.versionId/lastUpdated and the server base in attachment
 * URLs differ between runs).
 *
 * Per patient (23 resources): Patient, 3 Encounters, 3 Conditions, 12 Observations, 2
 * MedicationRequests, a Binary note and a DocumentReference pointing at it. Shared: one Organization
 * per 100 patients, one Practitioner per 20. Reference cycles: Encounter.diagnosis.condition →
 * Condition while Condition.encounter → Encounter. Written in transactions of 200 patients.
 */
import type { Store } from "./Store.js"
import { attachmentOf } from "./Seed.js"

export interface GenerateOptions {
  readonly patients: number
  /** PRNG seed (default 1). */
  readonly seed?: number
  /** Patients per SQLite transaction (default 200). */
  readonly batch?: number
}

export interface GenerateReport {
  readonly patients: number
  readonly resources: number
}

/** mulberry32: a tiny deterministic PRNG. */
const prng = (seed: number) => {
  let a = seed >>> 0
  return (): number => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const pick = <T>(rnd: () => number, xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!

const given = ["Ada", "Ben", "Chloe", "Dev", "Eva", "Femi", "Grace", "Hugo", "Ines", "Jon", "Kira", "Liam"]
const family = [
  "Okafor",
  "Silva",
  "Nguyen",
  "Smith",
  "Haddad",
  "Kowalski",
  "Tanaka",
  "Moreau",
  "Berg",
  "Costa",
]
const conditions = [
  { code: "44054006", display: "Diabetes mellitus type 2" },
  { code: "38341003", display: "Hypertensive disorder" },
  { code: "195662009", display: "Acute viral pharyngitis" },
  { code: "10509002", display: "Acute bronchitis" },
  { code: "40055000", display: "Chronic sinusitis" },
]
const observations = [
  { code: "8867-4", display: "Heart rate", unit: "/min", lo: 50, hi: 110 },
  { code: "8480-6", display: "Systolic blood pressure", unit: "mm[Hg]", lo: 95, hi: 170 },
  { code: "29463-7", display: "Body weight", unit: "kg", lo: 45, hi: 120 },
  { code: "8310-5", display: "Body temperature", unit: "Cel", lo: 36, hi: 39.5 },
]
const medications = [
  { code: "860975", display: "metformin 500 MG Oral Tablet" },
  { code: "314076", display: "lisinopril 10 MG Oral Tablet" },
  { code: "308182", display: "amoxicillin 250 MG Oral Capsule" },
]

const SYSTEM = "urn:ferry:sandbox"

const day = (base: number, offsetDays: number): string =>
  new Date(base + offsetDays * 86_400_000).toISOString()

/** The resources of patient `i` (deterministic). */
export const patientResources = (
  i: number,
  seed: number,
  baseUrl: string,
  orgs: number,
  practitioners: number,
): { resources: Array<Record<string, unknown> & { id: string }>; binary: { id: string; bytes: Buffer } } => {
  const rnd = prng(seed * 1_000_003 + i)
  const pid = `gen-pat-${i}`
  const patient = `Patient/${pid}`
  const org = `Organization/gen-org-${i % orgs}`
  const prac = `Practitioner/gen-prac-${i % practitioners}`
  const born = Date.UTC(1940 + Math.floor(rnd() * 60), Math.floor(rnd() * 12), 1 + Math.floor(rnd() * 28))
  const out: Array<Record<string, unknown> & { id: string }> = []
  const g = pick(rnd, given)
  const f = pick(rnd, family)
  out.push({
    resourceType: "Patient",
    id: pid,
    identifier: [{ system: `${SYSTEM}/patient`, value: pid }],
    name: [{ family: f, given: [g] }],
    gender: rnd() < 0.5 ? "female" : "male",
    birthDate: new Date(born).toISOString().slice(0, 10),
    managingOrganization: { reference: org },
    generalPractitioner: [{ reference: prac }],
  })
  const start = Date.UTC(2015, 0, 1) + Math.floor(rnd() * 3000) * 86_400_000
  for (let j = 0; j < 3; j++) {
    const encId = `gen-enc-${i}-${j}`
    const condId = `gen-cond-${i}-${j}`
    const when = day(start, j * 90)
    const cond = pick(rnd, conditions)
    out.push({
      resourceType: "Encounter",
      id: encId,
      identifier: [{ system: `${SYSTEM}/encounter`, value: encId }],
      status: "finished",
      class: { system: "http://terminology.hl7.org/CodeSystem/v3-ActCode", code: "AMB" },
      subject: { reference: patient },
      participant: [{ individual: { reference: prac } }],
      period: { start: when, end: day(start, j * 90 + 0.05) },
      diagnosis: [{ condition: { reference: `Condition/${condId}` }, rank: 1 }],
      serviceProvider: { reference: org },
    })
    out.push({
      resourceType: "Condition",
      id: condId,
      clinicalStatus: {
        coding: [{ system: "http://terminology.hl7.org/CodeSystem/condition-clinical", code: "active" }],
      },
      code: { coding: [{ system: "http://snomed.info/sct", ...cond }], text: cond.display },
      subject: { reference: patient },
      encounter: { reference: `Encounter/${encId}` },
      onsetDateTime: when,
      recorder: { reference: prac },
    })
    observations.forEach((o, k) => {
      const value = Math.round((o.lo + rnd() * (o.hi - o.lo)) * 10) / 10
      out.push({
        resourceType: "Observation",
        id: `gen-obs-${i}-${j}-${k}`,
        status: "final",
        category: [
          {
            coding: [
              { system: "http://terminology.hl7.org/CodeSystem/observation-category", code: "vital-signs" },
            ],
          },
        ],
        code: { coding: [{ system: "http://loinc.org", code: o.code, display: o.display }], text: o.display },
        subject: { reference: patient },
        encounter: { reference: `Encounter/${encId}` },
        effectiveDateTime: when,
        valueQuantity: { value, unit: o.unit, system: "http://unitsofmeasure.org", code: o.unit },
        performer: [{ reference: prac }],
      })
    })
  }
  for (let m = 0; m < 2; m++) {
    const med = pick(rnd, medications)
    out.push({
      resourceType: "MedicationRequest",
      id: `gen-med-${i}-${m}`,
      status: "active",
      intent: "order",
      medicationCodeableConcept: {
        coding: [{ system: "http://www.nlm.nih.gov/research/umls/rxnorm", ...med }],
        text: med.display,
      },
      subject: { reference: patient },
      encounter: { reference: `Encounter/gen-enc-${i}-${m}` },
      authoredOn: day(start, m * 90),
      requester: { reference: prac },
    })
  }
  const binaryId = `gen-bin-${i}`
  const bytes = Buffer.from(
    `Clinical note for ${g} ${f} (${pid}).\nSeen ${day(start, 0).slice(0, 10)}; follow-up in 90 days.\n`,
    "utf8",
  )
  out.push({
    resourceType: "DocumentReference",
    id: `gen-doc-${i}`,
    status: "current",
    type: { coding: [{ system: "http://loinc.org", code: "34117-2", display: "History and physical note" }] },
    subject: { reference: patient },
    author: [{ reference: prac }],
    date: day(start, 0),
    content: [{ attachment: attachmentOf(baseUrl, binaryId, "text/plain", bytes, "Clinical note") }],
    context: { encounter: [{ reference: `Encounter/gen-enc-${i}-0` }] },
  })
  return { resources: out, binary: { id: binaryId, bytes } }
}

/** Writes N generated patients (plus shared Organizations and Practitioners). */
export const generate = (store: Store, baseUrl: string, options: GenerateOptions): GenerateReport => {
  const seed = options.seed ?? 1
  const batch = options.batch ?? 200
  const n = options.patients
  const orgs = Math.max(1, Math.ceil(n / 100))
  const practitioners = Math.max(1, Math.ceil(n / 20))
  let resources = 0
  store.tx(() => {
    for (let k = 0; k < orgs; k++) {
      store.update({
        resourceType: "Organization",
        id: `gen-org-${k}`,
        identifier: [{ system: `${SYSTEM}/organization`, value: `gen-org-${k}` }],
        active: true,
        name: `Sandbox General Hospital ${k}`,
      })
      resources++
    }
    for (let k = 0; k < practitioners; k++) {
      store.update({
        resourceType: "Practitioner",
        id: `gen-prac-${k}`,
        identifier: [{ system: "http://hl7.org/fhir/sid/us-npi", value: String(9_900_000_000 + k) }],
        name: [
          { family: pick(prng(seed + k), family), given: [pick(prng(seed * 7 + k), given)], prefix: ["Dr."] },
        ],
      })
      resources++
    }
  })
  for (let from = 0; from < n; from += batch) {
    store.tx(() => {
      for (let i = from; i < Math.min(n, from + batch); i++) {
        const { resources: rs, binary } = patientResources(i, seed, baseUrl, orgs, practitioners)
        store.putBinary(binary.id, "text/plain", binary.bytes)
        for (const r of rs) store.update(r)
        resources += rs.length + 1
      }
    })
  }
  return { patients: n, resources }
}
