import type { Resource } from "@ferry/core/Ids"
import { describe, expect, it } from "vitest"
import * as Summary from "../src/Summary.js"
import { ndjson, sampleTypes } from "./data.js"

const subjectOf = (r: Resource): string | undefined => {
  const s =
    (r as { subject?: { reference?: string }; patient?: { reference?: string } }).subject ??
    (r as { patient?: { reference?: string } }).patient
  return s?.reference?.replace(/^Patient\//, "")
}

describe("Summary.collector on the 10-patient bulk sample", () => {
  const all = sampleTypes().flatMap((t) => ndjson(t))
  const patients = ndjson("Patient").map((p) => p.id!)
  const c = Summary.collector(patients)
  for (const r of all) c.add(r)
  const summary = c.result()

  it("gives each resource to the Patient it is about, and the rest to the care's people and places", () => {
    expect(summary.resources).toBe(all.length)
    expect(summary.people.map((p) => p.id)).toEqual(patients)
    for (const type of ["Condition", "Encounter", "Immunization", "MedicationRequest", "Procedure"]) {
      for (const person of summary.people) {
        const mine = ndjson(type).filter((r) => subjectOf(r) === person.id).length
        expect(person.counts[type] ?? 0, `${type} of ${person.id}`).toBe(mine)
      }
    }
    expect(summary.shared).toEqual({
      Location: ndjson("Location").length,
      Organization: ndjson("Organization").length,
      Practitioner: ndjson("Practitioner").length,
      PractitionerRole: ndjson("PractitionerRole").length,
    })
    expect(summary.otherPeople).toEqual([])
  })

  it("lists each person's sections newest first, in words, with the person's name and birth date", () => {
    const person = summary.people[0]!
    const patient = ndjson("Patient")[0] as unknown as {
      name: Array<{ given: Array<string>; family: string }>
      birthDate: string
    }
    expect(person.name).toBe(`${patient.name[0]!.given.join(" ")} ${patient.name[0]!.family}`)
    expect(person.birthDate).toBe(patient.birthDate)
    const conditions = person.sections.conditions!
    expect(conditions).toHaveLength(person.counts.Condition!)
    const dates = conditions.map((e) => e.date ?? "")
    expect([...dates].sort().reverse()).toEqual(dates)
    for (const e of conditions) expect(e.title).not.toMatch(/^condition$/i)
  })

  it("finds the inline documents (Synthea's clinical notes) with a title and a date", () => {
    const docs = ndjson("DocumentReference").flatMap((r) => Summary.documentsOf(r))
    expect(docs.length).toBe(ndjson("DocumentReference").length)
    for (const d of docs) {
      expect(typeof d.attachment.data).toBe("string")
      expect(d.date).toMatch(/^\d{4}-\d{2}-\d{2}/)
    }
  })
})

describe("Summary entries", () => {
  it("puts values, statuses and money in words", () => {
    const bp = {
      resourceType: "Observation",
      component: [
        { code: { text: "Systolic" }, valueQuantity: { value: 120, unit: "mmHg" } },
        { code: { coding: [{ display: "Diastolic" }] }, valueQuantity: { value: 80, code: "mm[Hg]" } },
      ],
    }
    expect(Summary.valueText(bp)).toBe("Systolic: 120 mmHg; Diastolic: 80 mm[Hg]")
    expect(
      Summary.valueText({ valueCodeableConcept: { coding: [{ code: "x", display: "Never smoker" }] } }),
    ).toBe("Never smoker")
    expect(Summary.valueText({ valueBoolean: false })).toBe("no")
    const claim = Summary.entryOf(
      {
        resourceType: "Claim",
        billablePeriod: { start: "2020-01-02T10:00:00Z" },
        type: { text: "pharmacy" },
        total: { value: 6.89, currency: "USD" },
      },
      "Claim/1",
    )
    expect(claim).toEqual({
      resource: "Claim/1",
      date: "2020-01-02T10:00:00Z",
      title: "Claim: pharmacy",
      detail: "6.89 USD",
    })
    const team = Summary.entryOf({ resourceType: "CareTeam", status: "active" }, "CareTeam/1")
    expect(team.title).toBe("Care team")
    const settled = Summary.entryOf(
      {
        resourceType: "ExplanationOfBenefit",
        total: [{ amount: { value: 129.16, currency: "USD" } }],
        payment: { amount: { value: 100.5, currency: "USD" } },
      },
      "ExplanationOfBenefit/1",
    )
    expect(settled.detail).toBe("paid 100.5 USD")
    const condition = Summary.entryOf(
      {
        resourceType: "Condition",
        code: { text: "Asthma" },
        clinicalStatus: { coding: [{ code: "resolved" }] },
        onsetDateTime: "2001-02-03",
        abatementDateTime: "2002-03-04T00:00:00Z",
      },
      "Condition/1",
    )
    expect(condition.detail).toBe("resolved, ended 2002-03-04")
  })

  it("says which resources name Patients outside the record (a cohort Group), and keeps the Group's own patient", () => {
    const c = Summary.collector(["me"])
    c.add({ resourceType: "Patient", id: "me", name: [{ text: "Me Myself" }] })
    c.add({
      resourceType: "Group",
      id: "cohort",
      member: [
        { entity: { reference: "Patient/me" } },
        { entity: { reference: "Patient/a" } },
        { entity: { reference: "Patient/b" } },
      ],
    })
    c.add({
      resourceType: "Observation",
      id: "o",
      subject: { reference: "Patient/x" },
      performer: [{ reference: "Patient/me" }],
    })
    const s = c.result()
    expect(s.otherPeople).toEqual([
      { resource: "Group/cohort", patients: 2 },
      { resource: "Observation/o", patients: 1 },
    ])
    expect(s.people[0]!.counts).toEqual({ Patient: 1, Group: 1, Observation: 1 })
    const record = new Set(["me"])
    expect(
      Summary.otherPatients(
        {
          resourceType: "Group",
          id: "cohort",
          member: [{ entity: { reference: "Patient/a" } }, { entity: { reference: "Patient/me" } }],
        },
        record,
      ),
    ).toBe(1)
    expect(
      Summary.otherPatients(
        { resourceType: "Patient", id: "me", link: [{ other: { reference: "Patient/old" } }] },
        record,
      ),
    ).toBe(0)
    expect(
      Summary.otherPatients(
        { resourceType: "Observation", id: "o", subject: { reference: "Patient/me" } },
        record,
      ),
    ).toBe(0)
  })
})

describe("Summary files and page", () => {
  it("names files by number, date and title, with the content type's extension, and nothing that leaves the folder", () => {
    expect(Summary.fileName(1, "2019-05-01T10:00:00Z", "Wound photo", "image/jpeg")).toBe(
      "01 2019-05-01 Wound photo.jpg",
    )
    expect(Summary.fileName(12, undefined, "DICOM.jpg", "image/jpeg")).toBe("12 DICOM.jpg")
    expect(Summary.fileName(3, undefined, "../../etc/passwd\u0000\n", "application/pdf")).toBe(
      "03 etc passwd.pdf",
    )
    expect(Summary.fileName(4, undefined, undefined, "application/x-unknown")).toBe("04 document.bin")
    // the date comes from the data too: digits and dashes only
    expect(Summary.fileName(6, "/../../../", "x", "text/plain")).toBe("06 x.txt")
    expect(Summary.fileName(7, "2020/05/01", "x", "text/plain")).toBe("07 2020 x.txt")
    expect(Summary.fileName(8, "2020-05\nab c", "x", "text/plain")).toBe("08 2020-05 x.txt")
    expect(Summary.fileName(5, undefined, "  ...  ", "text/plain; charset=utf-8")).toBe("05 document.txt")
    for (const bad of ["a/b", "a\\b", "a:b", "a*b"])
      expect(Summary.fileName(1, undefined, bad, undefined)).not.toMatch(/[/\\:*]/)
  })

  it("addresses the person by the official name, and lists the others", () => {
    const c = Summary.collector(["p"])
    c.add({
      resourceType: "Patient",
      id: "p",
      name: [
        { use: "maiden", family: "Old", given: ["Ann"] },
        { use: "official", family: "New", given: ["Ann", "B."] },
      ],
    })
    const person = c.result().people[0]!
    expect(person.name).toBe("Ann B. New")
    expect(person.otherNames).toEqual(["Ann Old"])
  })

  it("renders a self-contained page: every value escaped, the files linked, no scripts", () => {
    const c = Summary.collector(["p"])
    c.add({
      resourceType: "Patient",
      id: "p",
      name: [{ text: "<script>alert(1)</script>" }],
      birthDate: "1970-01-01",
    })
    c.add({
      resourceType: "DocumentReference",
      id: "d",
      subject: { reference: "Patient/p" },
      type: { text: "Letter & <b>" },
    })
    const page = Summary.renderHtml(c.result(), {
      source: "https://ehr.example.org/fhir",
      exportedAt: "2026-12-07T10:00:00Z",
      files: [
        {
          path: "files/01 Letter.pdf",
          resource: "DocumentReference/d",
          title: "Letter",
          date: undefined,
          contentType: "application/pdf",
          size: 2048,
        },
      ],
      data: [{ path: "data/Patient.000.ndjson", type: "Patient", resources: 1 }],
      tool: "ferry test",
    })
    expect(page).not.toContain("<script>")
    expect(page).toContain("&lt;script&gt;alert(1)&lt;/script&gt;")
    expect(page).toContain("Letter &amp; &lt;b&gt;")
    expect(page).toContain('<a href="files/01%20Letter.pdf">01 Letter.pdf</a>')
    expect(page).toContain("as it was on 2026-12-07")
    expect(page).not.toMatch(/<link|src=|https?:\/\/(?!ehr\.example\.org)/)
    expect(page).toContain(
      `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">`,
    )
    expect(page).toContain("<td>2 kB</td>")
  })
})
