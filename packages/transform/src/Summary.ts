/**
 * One person's record in plain language (GDPR Art. 15): what `ferry summary` writes as `README.html` beside the
 * record's data and documents. Pure: resources in (`collector`), a page out (`renderHtml`).
 *
 * Each resource of the archive goes to the person it is about (the first reference to one of the archive's
 * Patients, `subject`/`patient` first) and becomes one line of a section in everyday words ("Health problems",
 * "Medicines", "Vaccinations"…): a date, a name (the code's text, else its first coding's display), and a detail
 * (a status, a measured value). Tests and measurements are grouped by name (the latest value, how many times).
 * Types without a section are counted. Resources about no Patient of the archive (the practitioners,
 * organizations and places of care) are counted as such.
 *
 * References to Patients that are not in the archive are collected apart (`otherPeople`): a Patient-level export
 * carries every resource of the patient's compartment, and a cohort Group lists every member; that is someone
 * else's data, which whoever hands the folder over should look at first.
 */
import { escapeHtml } from "@ferry/core/Html"
import type { Resource } from "@ferry/core/Ids"
import * as Walker from "@ferry/core/Walker"

type Json = Readonly<Record<string, unknown>>

/** One line of a section. */
export interface Entry {
  readonly resource: string
  /** `YYYY-MM-DD…` as the resource has it (sorted on), or undefined. */
  readonly date: string | undefined
  readonly title: string
  readonly detail: string | undefined
}

/** A test or measurement, grouped by its name. */
export interface Measurement {
  readonly title: string
  readonly times: number
  readonly latestDate: string | undefined
  readonly latestValue: string | undefined
}

export interface Person {
  readonly id: string
  readonly name: string
  /** The other names recorded (a maiden name, a nickname), besides `name`. */
  readonly otherNames: ReadonlyArray<string>
  readonly birthDate: string | undefined
  readonly gender: string | undefined
  readonly deceased: string | undefined
  readonly address: string | undefined
  readonly identifiers: ReadonlyArray<string>
  /** Per section key (`sections`), newest first. */
  readonly sections: Readonly<Record<string, ReadonlyArray<Entry>>>
  readonly measurements: ReadonlyArray<Measurement>
  /** Resources of this person by type (every type, also those listed in a section). */
  readonly counts: Readonly<Record<string, number>>
}

/** A resource that names Patients the archive does not hold. */
export interface OtherPeople {
  readonly resource: string
  readonly patients: number
}

export interface Summary {
  readonly people: ReadonlyArray<Person>
  /** Resources about no Patient of the archive, by type. */
  readonly shared: Readonly<Record<string, number>>
  readonly otherPeople: ReadonlyArray<OtherPeople>
  readonly resources: number
}

/** A section of the page: its heading, one sentence saying what it is, and the types it lists. */
export interface Section {
  readonly key: string
  readonly heading: string
  readonly about: string
  readonly types: ReadonlyArray<string>
}

export const sections: ReadonlyArray<Section> = [
  {
    key: "conditions",
    heading: "Health problems and diagnoses",
    about: "Conditions a clinician recorded, with when they began and whether they are still active.",
    types: ["Condition"],
  },
  {
    key: "allergies",
    heading: "Allergies and intolerances",
    about: "Substances that caused, or may cause, a reaction.",
    types: ["AllergyIntolerance"],
  },
  {
    key: "medicines",
    heading: "Medicines",
    about: "Medicines prescribed, given or taken.",
    types: ["MedicationRequest", "MedicationStatement", "MedicationAdministration", "MedicationDispense"],
  },
  {
    key: "vaccinations",
    heading: "Vaccinations",
    about: "Vaccines given.",
    types: ["Immunization"],
  },
  {
    key: "procedures",
    heading: "Procedures",
    about: "Operations, treatments and other procedures.",
    types: ["Procedure"],
  },
  {
    key: "visits",
    heading: "Visits and stays",
    about: "Appointments, visits and hospital stays.",
    types: ["Encounter"],
  },
  {
    key: "reports",
    heading: "Reports",
    about: "Reports of tests, imaging and other investigations.",
    types: ["DiagnosticReport", "ImagingStudy"],
  },
  {
    key: "plans",
    heading: "Care plans and goals",
    about: "Plans of care, the teams involved, and goals set.",
    types: ["CarePlan", "CareTeam", "Goal"],
  },
  {
    key: "devices",
    heading: "Devices",
    about: "Devices used in care, such as implants or monitors.",
    types: ["Device"],
  },
  {
    key: "documents",
    heading: "Documents and images",
    about: "Letters, notes, scans and pictures; those with a file are in the files folder.",
    types: ["DocumentReference", "Media"],
  },
  {
    key: "billing",
    heading: "Billing and insurance",
    about: "Claims and their settlement by the insurer.",
    types: ["Claim", "ExplanationOfBenefit", "Coverage"],
  },
]

const sectionOfType = new Map(sections.flatMap((s) => s.types.map((t) => [t, s.key] as const)))

/** The resource types grouped as tests and measurements. */
const measurementTypes: ReadonlySet<string> = new Set(["Observation"])

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v)
const str = (v: unknown): string | undefined => (typeof v === "string" && v.trim() !== "" ? v : undefined)
const first = (v: unknown): unknown => (Array.isArray(v) ? v[0] : v)

/** A CodeableConcept (or Coding) in words: its text, else its first coding's display, else its code. */
export const textOf = (v: unknown): string | undefined => {
  const c = first(v)
  if (!isObject(c)) return undefined
  const coding = first(c.coding)
  return (
    str(c.text) ??
    str(c.display) ??
    (isObject(coding) ? (str(coding.display) ?? str(coding.code)) : undefined) ??
    str(c.code)
  )
}

/** A Reference's words (`display`), if it has them. */
const displayOf = (v: unknown): string | undefined =>
  isObject(first(v)) ? str((first(v) as Json).display) : undefined

/** The first of `keys` that holds a date (a dateTime, or a Period's start). */
const dateOf = (r: Json, keys: ReadonlyArray<string>): string | undefined => {
  for (const k of keys) {
    const v = r[k]
    if (typeof v === "string" && /^\d{4}/.test(v)) return v
    if (isObject(v) && typeof v.start === "string") return v.start
  }
  return undefined
}

const quantity = (q: unknown): string | undefined => {
  if (!isObject(q) || (typeof q.value !== "number" && typeof q.value !== "string")) return undefined
  // (a Quantity's unit, else its code; Money's currency)
  const unit = str(q.unit) ?? str(q.code) ?? str(q.currency)
  return unit === undefined ? String(q.value) : `${q.value} ${unit}`
}

/** An Observation's (or component's) value in words. */
export const valueText = (o: Json): string | undefined => {
  const own =
    quantity(o.valueQuantity) ??
    textOf(o.valueCodeableConcept) ??
    str(o.valueString) ??
    (typeof o.valueBoolean === "boolean" ? (o.valueBoolean ? "yes" : "no") : undefined) ??
    (typeof o.valueInteger === "number" ? String(o.valueInteger) : undefined) ??
    str(o.valueDateTime)
  if (own !== undefined) return own
  if (!Array.isArray(o.component)) return undefined
  const parts = o.component.flatMap((c) => {
    if (!isObject(c)) return []
    const v = valueText(c)
    return v === undefined ? [] : [`${textOf(c.code) ?? "value"}: ${v}`]
  })
  return parts.length > 0 ? parts.join("; ") : undefined
}

const statusOf = (r: Json): string | undefined => textOf(r.clinicalStatus) ?? str(r.status)

/** What one resource says, as a line of its section. */
export const entryOf = (r: Json, resource: string): Entry => {
  const type = String(r.resourceType)
  const line = (date: string | undefined, title: string | undefined, detail: string | undefined): Entry => ({
    resource,
    date,
    title: title ?? type.replace(/([a-z])([A-Z])/g, "$1 $2").replace(/ [A-Z]/g, (c) => c.toLowerCase()),
    detail,
  })
  switch (type) {
    case "Condition":
      return line(
        dateOf(r, ["onsetDateTime", "onsetPeriod", "recordedDate"]),
        textOf(r.code),
        [statusOf(r), str(r.abatementDateTime) && `ended ${String(r.abatementDateTime).slice(0, 10)}`]
          .filter(Boolean)
          .join(", ") || undefined,
      )
    case "AllergyIntolerance":
      return line(
        dateOf(r, ["onsetDateTime", "recordedDate"]),
        textOf(r.code),
        [statusOf(r), str(r.criticality) && `criticality ${String(r.criticality)}`]
          .filter(Boolean)
          .join(", ") || undefined,
      )
    case "MedicationRequest":
    case "MedicationStatement":
    case "MedicationAdministration":
    case "MedicationDispense":
      return line(
        dateOf(r, ["authoredOn", "effectiveDateTime", "effectivePeriod", "whenHandedOver", "dateAsserted"]),
        textOf(r.medicationCodeableConcept) ?? displayOf(r.medicationReference),
        str(r.status),
      )
    case "Immunization":
      return line(dateOf(r, ["occurrenceDateTime", "recorded"]), textOf(r.vaccineCode), str(r.status))
    case "Procedure":
      return line(dateOf(r, ["performedDateTime", "performedPeriod"]), textOf(r.code), str(r.status))
    case "Encounter":
      return line(
        dateOf(r, ["period"]),
        textOf(r.type) ?? textOf(r.class),
        textOf(r.reasonCode) ?? displayOf(r.serviceProvider),
      )
    case "DiagnosticReport":
      return line(
        dateOf(r, ["effectiveDateTime", "effectivePeriod", "issued"]),
        textOf(r.code),
        str(r.status),
      )
    case "ImagingStudy":
      return line(
        dateOf(r, ["started"]),
        textOf(r.procedureCode) ?? str(r.description) ?? textOf(r.modality),
        typeof r.numberOfInstances === "number" ? `${r.numberOfInstances} images` : str(r.status),
      )
    case "CarePlan":
      return line(dateOf(r, ["period", "created"]), textOf(r.category) ?? str(r.title), str(r.status))
    case "CareTeam":
      return line(dateOf(r, ["period"]), str(r.name) ?? textOf(r.category), str(r.status))
    case "Goal":
      return line(dateOf(r, ["startDate"]), textOf(r.description), str(r.lifecycleStatus))
    case "Device":
      return line(dateOf(r, ["manufactureDate"]), textOf(r.type) ?? displayOf(r.deviceName), str(r.status))
    case "DocumentReference":
      return line(
        dateOf(r, ["date"]) ?? dateOf(isObject(r.context) ? r.context : {}, ["period"]),
        textOf(r.type) ?? str(r.description),
        str(r.description),
      )
    case "Media":
      return line(dateOf(r, ["createdDateTime", "createdPeriod", "issued"]), textOf(r.type), str(r.status))
    case "Claim":
    case "ExplanationOfBenefit":
      return line(
        dateOf(r, ["billablePeriod", "created"]),
        `${type === "Claim" ? "Claim" : "Settlement"}: ${textOf(r.type) ?? "care"}`,
        // a settlement: what was paid; a claim: what was asked
        (type === "ExplanationOfBenefit" && isObject(r.payment)
          ? quantity(r.payment.amount) && `paid ${quantity(r.payment.amount)}`
          : undefined) ??
          quantity(r.total) ??
          (Array.isArray(r.total) && isObject(r.total[0]) ? quantity(r.total[0].amount) : undefined),
      )
    case "Coverage":
      return line(dateOf(r, ["period"]), textOf(r.type) ?? displayOf(r.payor) ?? "insurance", str(r.status))
    default:
      return line(dateOf(r, ["effectiveDateTime", "date", "issued"]), textOf(r.code), str(r.status))
  }
}

/** A HumanName in words (its text, else given names and family name). */
const humanName = (n: unknown): string | undefined => {
  if (!isObject(n)) return undefined
  const given = Array.isArray(n.given) ? n.given.filter((g) => typeof g === "string") : []
  const whole = str(n.text) ?? [...given, str(n.family)].filter(Boolean).join(" ")
  return whole !== "" ? whole : undefined
}

const nameUses = ["official", "usual", undefined, "nickname", "temp", "anonymous", "old", "maiden"]

/** A Patient's names, the one to address them by first: official, then usual, then any not old or maiden. */
const namesOf = (p: Json): ReadonlyArray<string> => {
  const names = (Array.isArray(p.name) ? p.name : []).filter(isObject)
  const rank = (n: Json) => {
    const i = nameUses.indexOf(str(n.use))
    return i < 0 ? 2 : i
  }
  const ordered = [...names].sort((a, z) => rank(a) - rank(z))
  const words = ordered.flatMap((n) => {
    const w = humanName(n)
    return w === undefined ? [] : [w]
  })
  return [...new Set(words)]
}

const addressOf = (p: Json): string | undefined => {
  const a = first(p.address)
  if (!isObject(a)) return undefined
  const line = Array.isArray(a.line) ? a.line.filter((l) => typeof l === "string").join(", ") : ""
  const parts = [line, str(a.city), str(a.postalCode), str(a.country)].filter(
    (x) => x !== undefined && x !== "",
  )
  return str(a.text) ?? (parts.length > 0 ? parts.join(", ") : undefined)
}

const identifiersOf = (p: Json): ReadonlyArray<string> =>
  (Array.isArray(p.identifier) ? p.identifier : []).flatMap((i) => {
    if (!isObject(i) || str(i.value) === undefined) return []
    const label = textOf(i.type) ?? str(i.system)
    return [label === undefined ? String(i.value) : `${label}: ${String(i.value)}`]
  })

/** The Patient ids a resource refers to (`Patient/<id>` in any reference), in document order. */
const patientRefs = (r: Json): ReadonlyArray<string> => {
  const ids: Array<string> = []
  for (const site of Walker.references(r)) {
    const p = site.parsed
    if ((p._tag === "Relative" || p._tag === "Versioned" || p._tag === "Absolute") && p.type === "Patient") {
      if (p.id !== undefined && !ids.includes(p.id)) ids.push(p.id)
    }
  }
  return ids
}

/**
 * How many Patients other than `record`'s a resource names (a cohort Group's members, an Observation about
 * someone else): someone else's data, left out of a person's folder unless asked for.
 */
export const otherPatients = (
  resource: Resource,
  record: ReadonlySet<string>,
  refs: ReadonlyArray<string> = patientRefs(resource as unknown as Json),
): number => {
  // (the person's own Patient is theirs whatever it links to: a merged or replaced record's id is no one else)
  if (resource.resourceType === "Patient" && resource.id !== undefined && record.has(resource.id)) return 0
  const own = resource.resourceType === "Patient" ? resource.id : undefined
  return refs.filter((p) => !record.has(p) && p !== own).length
}

/** The keys that say whom a resource is about, looked at before any other reference. */
const subjectKeys = ["subject", "patient", "beneficiary", "individual"]

interface Building {
  readonly patient: Json | undefined
  readonly entries: Map<string, Array<Entry>>
  readonly measured: Map<
    string,
    { times: number; latestDate: string | undefined; latestValue: string | undefined }
  >
  readonly counts: Map<string, number>
}

export interface Collector {
  /** Every Patient of the archive, before `add` (their ids decide whose each resource is). */
  readonly patients: ReadonlySet<string>
  /**
   * Adds a resource; how many Patients outside the record it names (`otherPatients`). With `leaveOutOthers`, one
   * that names any is not added (someone else's data).
   */
  readonly add: (resource: Resource, leaveOutOthers?: boolean) => number
  readonly result: () => Summary
}

/** Collects the summary of an archive whose Patients are `patients` (ids). */
export const collector = (patients: ReadonlyArray<string>): Collector => {
  const known = new Set(patients)
  const people = new Map<string, Building>()
  const building = (id: string): Building => {
    let b = people.get(id)
    if (b === undefined) {
      b = { patient: undefined, entries: new Map(), measured: new Map(), counts: new Map() }
      people.set(id, b)
    }
    return b
  }
  for (const id of patients) building(id)
  const shared = new Map<string, number>()
  const otherPeople: Array<OtherPeople> = []
  let resources = 0
  const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1)

  const add = (resource: Resource, leaveOutOthers = false): number => {
    // (the references walked once: for the rule and for whose record this is)
    const refs = patientRefs(resource as unknown as Json)
    const others = otherPatients(resource, known, refs)
    if (others > 0 && leaveOutOthers) return others
    place(resource, refs, others)
    return others
  }

  /** Counts a resource in, and gives it to the person it is about (or to the care's people and places). */
  const place = (resource: Resource, refs: ReadonlyArray<string>, others: number): void => {
    const r = resource as unknown as Json
    const type = resource.resourceType
    const id = resource.id ?? ""
    resources++
    if (others > 0) otherPeople.push({ resource: `${type}/${id}`, patients: others })
    if (type === "Patient" && known.has(id)) {
      const b = building(id)
      people.set(id, { ...b, patient: r })
      bump(people.get(id)!.counts, type)
      return
    }
    const bySubject = subjectKeys.flatMap((k) => {
      const v = first(r[k])
      const ref = isObject(v) ? str(v.reference) : undefined
      const m =
        ref === undefined ? null : /(?:^|\/)Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/.*)?$/.exec(ref)
      return m !== null && known.has(m[1]!) ? [m[1]!] : []
    })
    const owner = bySubject[0] ?? refs.find((p) => known.has(p))
    if (owner === undefined) {
      // (about no one of the record: the care's people and places, unless it is about other patients)
      if (others === 0) bump(shared, type)
      return
    }
    const b = building(owner)
    bump(b.counts, type)
    if (measurementTypes.has(type)) {
      const e = entryOf(r, `${type}/${id}`)
      const m = b.measured.get(e.title)
      const value = valueText(r)
      if (m === undefined) b.measured.set(e.title, { times: 1, latestDate: e.date, latestValue: value })
      else {
        m.times++
        if (e.date !== undefined && (m.latestDate === undefined || e.date > m.latestDate)) {
          m.latestDate = e.date
          m.latestValue = value
        }
      }
      return
    }
    const key = sectionOfType.get(type)
    if (key === undefined) return
    const list = b.entries.get(key) ?? []
    list.push(entryOf(r, `${type}/${id}`))
    b.entries.set(key, list)
  }

  const result = (): Summary => ({
    people: [...people.entries()].map(([id, b]): Person => {
      const p = b.patient ?? { id }
      const deceased =
        typeof p.deceasedDateTime === "string"
          ? p.deceasedDateTime.slice(0, 10)
          : p.deceasedBoolean === true
            ? "yes"
            : undefined
      const newestFirst = (a: Entry, z: Entry) =>
        (z.date ?? "") < (a.date ?? "") ? -1 : (z.date ?? "") > (a.date ?? "") ? 1 : 0
      return {
        id,
        name: namesOf(p)[0] ?? `Patient ${id}`,
        otherNames: namesOf(p).slice(1),
        birthDate: str(p.birthDate),
        gender: str(p.gender),
        deceased,
        address: addressOf(p),
        identifiers: identifiersOf(p),
        sections: Object.fromEntries([...b.entries].map(([k, list]) => [k, [...list].sort(newestFirst)])),
        measurements: [...b.measured]
          .map(([title, m]) => ({ title, ...m }))
          .sort((a, z) => (a.title < z.title ? -1 : a.title > z.title ? 1 : 0)),
        counts: Object.fromEntries(b.counts),
      }
    }),
    shared: Object.fromEntries(shared),
    otherPeople,
    resources,
  })

  return { patients: known, add, result }
}

// ---------------------------------------------------------------------------------------------------------
// Files

const extensions: Readonly<Record<string, string>> = {
  "application/pdf": "pdf",
  "image/jpeg": "jpg",
  "image/jpg": "jpg",
  "image/png": "png",
  "image/gif": "gif",
  "image/tiff": "tif",
  "image/bmp": "bmp",
  "image/webp": "webp",
  "image/svg+xml": "svg",
  "application/dicom": "dcm",
  "text/plain": "txt",
  "text/html": "html",
  "text/rtf": "rtf",
  "application/rtf": "rtf",
  "text/csv": "csv",
  "text/xml": "xml",
  "application/xml": "xml",
  "application/json": "json",
  "application/fhir+json": "json",
  "application/msword": "doc",
  "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
  "audio/mpeg": "mp3",
  "video/mp4": "mp4",
}

/** The file extension for a content type (`bin` when unknown). */
export const extensionFor = (contentType: string | undefined): string =>
  extensions[(contentType ?? "").split(";")[0]!.trim().toLowerCase()] ?? "bin"

/**
 * A file name a person can read for the `n`th document: `03 2019-05-01 Wound photo.jpg`. Only letters, digits,
 * spaces and `-_.()` are kept from the title (no path separators, no control characters), 60 at most.
 */
export const fileName = (
  n: number,
  date: string | undefined,
  title: string | undefined,
  contentType: string | undefined,
): string => {
  const ext = extensionFor(contentType)
  const bare = (title ?? "document").replace(new RegExp(`\\.${ext}$`, "i"), "")
  const clean = bare
    .normalize("NFC")
    .replace(/[^\p{L}\p{N} \-_.()]+/gu, " ")
    .replace(/\s+/g, " ")
    .replace(/^[ .]+|[ .]+$/g, "")
    .slice(0, 60)
    .trim()
  // (the date as digits and dashes only: it comes from the data, like the title)
  const day = /^\d{4}(?:-\d{2}(?:-\d{2})?)?/.exec(date ?? "")?.[0]
  const parts = [String(n).padStart(2, "0"), day, clean === "" ? "document" : clean]
  return `${parts.filter((p) => p !== undefined).join(" ")}.${ext}`
}

/** A document file written for the page: where it is, and what it came from. */
export interface DocumentFile {
  /** Relative to the folder (`files/…`). */
  readonly path: string
  readonly resource: string
  readonly title: string
  readonly date: string | undefined
  readonly contentType: string | undefined
  readonly size: number
}

/** The attachment sites of a resource, with the title and date a file of it would be named by. */
export const documentsOf = (
  resource: Resource,
): ReadonlyArray<{
  readonly attachment: Walker.Attachment
  readonly title: string | undefined
  readonly date: string | undefined
}> => {
  const r = resource as unknown as Json
  const e = entryOf(r, `${resource.resourceType}/${resource.id ?? ""}`)
  return Walker.attachments(resource).map((site) => ({
    attachment: site.attachment,
    title: str(site.attachment.title) ?? (e.title !== "" ? e.title : undefined),
    date: str(site.attachment.creation) ?? e.date,
  }))
}

// ---------------------------------------------------------------------------------------------------------
// The page

const day = (d: string | undefined): string => (d === undefined ? "" : escapeHtml(d.slice(0, 10)))

/** `Observation` → `observation`, `AllergyIntolerance` → `allergy intolerance`. */
const words = (type: string): string => type.replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase()

const plural = (n: number, one: string, many = `${one}s`) =>
  `${n.toLocaleString("en-US")} ${n === 1 ? one : many}`

export interface PageContext {
  /** Where the record came from (the source's base URL). */
  readonly source: string
  /** When the source's export was made (`transactionTime`). */
  readonly exportedAt: string | undefined
  readonly files: ReadonlyArray<DocumentFile>
  /** The data files as copied (`data/…`). */
  readonly data: ReadonlyArray<{ readonly path: string; readonly type: string; readonly resources: number }>
  readonly tool: string
  /** Records left out because they are also about other people (`otherPatients`). */
  readonly leftOut?: number
  /** Documents the record names whose content is not in the archive (not fetched by the export). */
  readonly missingFiles?: number
  /** Documents whose inline content is not valid base64: not written. */
  readonly unreadableFiles?: number
}

/** A size in words: bytes below 1 kB. */
const sizeText = (n: number): string =>
  n < 1000
    ? plural(n, "byte")
    : n < 1e6
      ? `${Math.round(n / 1e3).toLocaleString("en-US")} kB`
      : `${(n / 1e6).toFixed(1)} MB`

const table = (head: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string =>
  `<table><thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join("")}</tr></thead><tbody>${rows
    .map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`)
    .join("")}</tbody></table>`

const personHtml = (p: Person, files: ReadonlyArray<DocumentFile>): string => {
  const facts = [
    ...(p.otherNames.length > 0 ? [["Also named", p.otherNames.map(escapeHtml).join("<br>")]] : []),
    ["Born", p.birthDate === undefined ? "not recorded" : escapeHtml(p.birthDate)],
    ["Sex", p.gender === undefined ? "not recorded" : escapeHtml(p.gender)],
    ...(p.deceased !== undefined ? [["Died", escapeHtml(p.deceased)]] : []),
    ...(p.address !== undefined ? [["Address", escapeHtml(p.address)]] : []),
    ...(p.identifiers.length > 0 ? [["Identifiers", p.identifiers.map(escapeHtml).join("<br>")]] : []),
  ]
  const parts: Array<string> = [
    `<section class="person"><h2>${escapeHtml(p.name)}</h2>`,
    `<dl>${facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl>`,
  ]
  for (const s of sections) {
    const list = p.sections[s.key] ?? []
    const mine = files.filter(
      (f) =>
        s.types.some((t) => f.resource.startsWith(`${t}/`)) && list.some((e) => e.resource === f.resource),
    )
    if (list.length === 0) continue
    parts.push(
      `<h3>${escapeHtml(s.heading)} (${list.length.toLocaleString("en-US")})</h3><p>${escapeHtml(s.about)}</p>`,
    )
    parts.push(
      table(
        ["Date", "What", "Details", ...(mine.length > 0 ? ["File"] : [])],
        list.map((e) => {
          const file = mine.filter((f) => f.resource === e.resource)
          return [
            day(e.date),
            escapeHtml(e.title),
            escapeHtml(e.detail ?? ""),
            ...(mine.length > 0
              ? [
                  file
                    .map(
                      (f) =>
                        `<a href="${encodeURI(f.path)}">${escapeHtml(f.path.slice("files/".length))}</a>`,
                    )
                    .join("<br>"),
                ]
              : []),
          ]
        }),
      ),
    )
  }
  if (p.measurements.length > 0) {
    const total = p.measurements.reduce((n, m) => n + m.times, 0)
    parts.push(
      `<h3>Tests and measurements (${total.toLocaleString("en-US")})</h3><p>Laboratory results, vital signs and other measurements, one line per kind: the latest value and how many times it was recorded.</p>`,
    )
    parts.push(
      table(
        ["What", "Latest", "Latest value", "Times recorded"],
        p.measurements.map((m) => [
          escapeHtml(m.title),
          day(m.latestDate),
          escapeHtml(m.latestValue ?? ""),
          m.times.toLocaleString("en-US"),
        ]),
      ),
    )
  }
  const listed = new Set(sections.flatMap((s) => s.types).concat([...measurementTypes, "Patient"]))
  const rest = Object.entries(p.counts).filter(([t]) => !listed.has(t))
  if (rest.length > 0) {
    parts.push(`<h3>Other records</h3><p>Records of kinds not listed above, by kind.</p>`)
    parts.push(
      table(
        ["Kind of record", "How many"],
        rest.sort().map(([t, n]) => [escapeHtml(words(t)), n.toLocaleString("en-US")]),
      ),
    )
  }
  parts.push("</section>")
  return parts.join("\n")
}

/** `README.html`: a self-contained page in plain language (no scripts, no outside resources). */
export const renderHtml = (summary: Summary, context: PageContext): string => {
  const who = summary.people.map((p) => p.name)
  const title = who.length === 1 ? `Health record of ${who[0]}` : `Health records of ${who.join(", ")}`
  const sharedTotal = Object.values(summary.shared).reduce((a, b) => a + b, 0)
  const intro = [
    `<p>This folder holds ${who.length === 1 ? "the health record" : "the health records"} kept about ${escapeHtml(who.join(", "))} by the system at <code>${escapeHtml(context.source)}</code>, as it was on ${escapeHtml((context.exportedAt ?? "").slice(0, 10) || "the day it was copied")}: ${plural(summary.resources, "record")} in all.</p>`,
    "<p>This page lists what the record says in everyday words. The complete record is in the <code>data</code> folder, in the standard format health systems exchange (FHIR, one record per line): give that folder to another provider to move your record there. Documents and pictures are in the <code>files</code> folder, as files any computer can open.</p>",
  ]
  const missing = context.missingFiles ?? 0
  const unreadable = context.unreadableFiles ?? 0
  const notHere = [
    ...(missing > 0
      ? [
          `${plural(missing, "document")} the record names ${missing === 1 ? "is" : "are"} not included: ${missing === 1 ? "its" : "their"} content was not copied from the system. Ask for ${missing === 1 ? "it" : "them"} if you need ${missing === 1 ? "it" : "them"}.`,
        ]
      : []),
    ...(unreadable > 0
      ? [
          `${plural(unreadable, "document")} could not be read (${unreadable === 1 ? "its" : "their"} content in the record is damaged) and ${unreadable === 1 ? "is" : "are"} not included.`,
        ]
      : []),
  ].map((t) => `<p>${t}</p>`)
  const docs =
    context.files.length === 0
      ? `<p>The record holds no documents or pictures as files.</p>${notHere.join("")}`
      : `${notHere.join("")}${table(
          ["File", "What", "Date", "Size"],
          context.files.map((f) => [
            `<a href="${encodeURI(f.path)}">${escapeHtml(f.path.slice("files/".length))}</a>`,
            escapeHtml(f.title),
            day(f.date),
            sizeText(f.size),
          ]),
        )}`
  const data = table(
    ["File", "Kind of record", "Records"],
    context.data.map((d) => [
      `<code>${escapeHtml(d.path)}</code>`,
      escapeHtml(words(d.type)),
      d.resources.toLocaleString("en-US"),
    ]),
  )
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>${escapeHtml(title)}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;width:100%}th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}
code{background:#f4f4f4;padding:0 .2rem}.person{border-top:3px solid #444;margin-top:2rem}</style></head>
<body>
<h1>${escapeHtml(title)}</h1>
${intro.join("\n")}
${
  (context.leftOut ?? 0) > 0
    ? `<p>${plural(context.leftOut ?? 0, "record")} that also ${(context.leftOut ?? 0) === 1 ? "concerns" : "concern"} other people ${(context.leftOut ?? 0) === 1 ? "was" : "were"} left out, to protect their privacy.</p>`
    : ""
}
${summary.people.map((p) => personHtml(p, context.files)).join("\n")}
<h2>Documents and pictures</h2>
${docs}
<h2>People and places involved in the care</h2>
<p>${
    sharedTotal === 0
      ? "The record holds no separate records about them (their names appear in the sections above)."
      : `${plural(sharedTotal, "record")} about the professionals, organizations and places involved: ${Object.entries(
          summary.shared,
        )
          .sort()
          .map(([t, n]) => `${n.toLocaleString("en-US")} ${escapeHtml(words(t))}`)
          .join(", ")}.`
  }</p>
<h2>What is in this folder</h2>
<ul>
<li><code>README.html</code>: this page.</li>
<li><code>files/</code>: the documents and pictures, named by number, date and title.</li>
<li><code>data/</code>: the complete record, one file per kind of record (FHIR R4, NDJSON: one JSON record per line).</li>
<li><code>SHA256SUMS</code>: a fingerprint of every file, to check that nothing was changed or damaged: in a terminal in this folder, <code>sha256sum -c SHA256SUMS</code> says OK for each file.</li>
</ul>
${data}
<p><small>Made by ${escapeHtml(context.tool)}.</small></p>
</body></html>
`
}
