import { describe, expect, it } from "@effect/vitest"
import type { Resource } from "@ferry/core/Ids"
import { numbersOf, restoreNumbers } from "@ferry/core/NumberText"
import { references } from "@ferry/core/Walker"
import { IdentifierIndex } from "../src/IdentifierIndex.js"
import { IdMap } from "../src/IdMap.js"
import {
  applyMeta,
  applyMetaBytes,
  type MetaOptions,
  originKey,
  provenanceCode,
  provenanceSystem,
  rewriteResource,
} from "../src/Rewrite.js"
import { frozen, ndjson, sampleText, sampleTypes, syntheaPatientSet } from "./data.js"

const keyOf = (r: Resource) => `${r.resourceType}/${r.id}`

describe("rewriteResource on real data", () => {
  it("takes a stripped Synthea patient (urn:uuid references) to Type/id of resources in the set", () => {
    const resources = syntheaPatientSet().map(frozen)
    const map = IdMap.empty()
    resources.forEach((r, i) => {
      map.set(keyOf(r), `${r.resourceType}/t${i}`)
    })
    const targets = new Set(Array.from(map.entries(), ([, t]) => t))
    let checked = 0
    let changes = 0
    for (const r of resources) {
      const out = rewriteResource(r, { idMap: map })
      expect(out.unresolved).toEqual([])
      expect(out.notes).toEqual([])
      changes += out.changes
      const contained = new Set(
        Array.isArray(out.resource.contained) ? out.resource.contained.map((c: { id: string }) => c.id) : [],
      )
      for (const site of references(out.resource)) {
        if (site.canonical) continue
        const p = site.parsed
        if (p._tag === "Contained") {
          expect(contained.has(p.id)).toBe(true)
          continue
        }
        expect(p._tag).toBe("Relative")
        if (p._tag === "Relative") expect(targets.has(`${p.type}/${p.id}`)).toBe(true)
        checked++
      }
    }
    // every urn:uuid reference of the Bundle was one to rewrite
    expect(checked).toBeGreaterThan(300)
    expect(changes).toBe(checked)
  })

  it("resolves the bulk sample's conditional references through the identifier index (keep-ids)", () => {
    const all = sampleTypes().flatMap((t) => ndjson(t))
    const map = IdMap.identity()
    for (const r of all) map.register(keyOf(r))
    const identifiers = IdentifierIndex.build(
      all.filter((r) => ["Practitioner", "Organization", "Location"].includes(r.resourceType)),
    )
    const known = new Set(all.map(keyOf))
    let changes = 0
    let logical = 0
    for (const r of all) {
      const out = rewriteResource(r, { idMap: map, identifiers })
      expect(out.unresolved).toEqual([])
      changes += out.changes
      for (const site of references(out.resource)) {
        if (site.canonical) continue
        const p = site.parsed
        if (p._tag === "Logical") {
          // PractitionerRole.practitioner / Location.managingOrganization: identifier only, no `type`: kept
          logical++
          continue
        }
        expect(p._tag).toBe("Relative")
        if (p._tag === "Relative") expect(known.has(`${p.type}/${p.id}`)).toBe(true)
      }
    }
    expect(changes).toBe(10037)
    expect(logical).toBeGreaterThan(0)
  })

  it("leaves conditional references for the target when asked", () => {
    const enc = ndjson("Encounter")[0]!
    const out = rewriteResource(enc, { idMap: IdMap.identity(), conditionals: "leave" })
    expect(out.changes).toBe(0)
    expect(out.unresolved).toEqual([])
    expect(out.resource).toBe(enc)
    const reported = rewriteResource(enc, { idMap: IdMap.identity() })
    expect(reported.unresolved.map((u) => u.reason)).toEqual([
      "ConditionalUnsupported",
      "ConditionalUnsupported",
      "ConditionalUnsupported",
    ])
    const idMap = IdMap.identity()
    idMap.register((enc.subject as { reference: string }).reference)
    const left = rewriteResource(enc, {
      idMap,
      identifiers: new IdentifierIndex(),
      conditionals: "resolveOrLeave",
    })
    expect(left.unresolved).toEqual([])
    expect(left.notes.map((n) => n.kind)).toEqual(["ConditionalLeft", "ConditionalLeft", "ConditionalLeft"])
  })
})

describe("rewriteResource, site by site", () => {
  const base = "https://src.example/fhir"
  const map = IdMap.fromEntries([
    ["Patient/p1", "Patient/P1"],
    ["Encounter/e1", "Encounter/E1"],
    ["ServiceRequest/s1", "ServiceRequest/S1"],
    ["Observation/0b2", "Observation/OB2"],
    ["Practitioner/pr1", "Practitioner/PR1"],
    ["Binary/b1", "Binary/nb1"],
  ])
  map.register("Device/d1") // exported, not loaded yet
  const identifiers = IdentifierIndex.build([
    { resourceType: "Practitioner", id: "pr1", identifier: [{ system: "urn:npi", value: "123" }] },
  ])
  const report = {
    resourceType: "DiagnosticReport",
    id: "dr1",
    meta: {
      versionId: "3",
      lastUpdated: "2024-01-01T00:00:00Z",
      source: "#src",
      profile: ["http://hl7.org/fhir/StructureDefinition/DiagnosticReport"],
      tag: [{ system: "urn:t", code: "x" }],
      security: [{ system: "urn:s", code: "R" }],
    },
    contained: [{ resourceType: "Observation", id: "c1", subject: { reference: "Patient/p1" } }],
    subject: { reference: "Patient/p1", display: "Pat" },
    encounter: { reference: `${base}/Encounter/e1` },
    basedOn: [{ reference: "ServiceRequest/s1/_history/2" }],
    result: [{ reference: "#c1" }, { reference: "urn:uuid:0b2" }, { reference: "Device/d1" }],
    performer: [
      { reference: "Practitioner?identifier=urn:npi|123" },
      { reference: "https://other.example/fhir/Organization/9" },
    ],
    resultsInterpreter: [{ reference: "Practitioner?identifier=urn:npi|999" }],
    specimen: [{ reference: "Specimen/nope" }],
    imagingStudy: [{ reference: "urn:oid:1.2.3" }],
    extension: [
      { url: "http://ex/ref", valueReference: { reference: "Patient/p1" } },
      { url: "http://ex/canonical", valueCanonical: "http://example.org/fhir/Questionnaire/p1" },
    ],
    presentedForm: [
      { contentType: "application/pdf", url: "Binary/b1" },
      { contentType: "application/pdf", url: `${base}/Binary/b1` },
      { contentType: "application/pdf", url: "https://files.example/export/abc.pdf?sig=1" },
      { contentType: "text/plain", data: "aGVsbG8=" },
      { contentType: "application/pdf", url: "./attachments/x.pdf" },
      { contentType: "image/png", url: "https://cdn.other.example/a.png" },
    ],
  }
  const input = frozen(report)
  const out = rewriteResource(input, {
    idMap: map,
    identifiers,
    sourceBase: base,
    attachmentUrls: new Map([["https://files.example/export/abc.pdf?sig=1", "Binary/nb9"]]),
  })
  const r = out.resource as unknown as typeof report

  it("rewrites each reference form as specified", () => {
    expect(r.subject).toEqual({ reference: "Patient/P1", display: "Pat" })
    expect(r.encounter.reference).toBe("Encounter/E1")
    expect(r.basedOn[0]!.reference).toBe("ServiceRequest/S1")
    expect(r.result.map((x) => x.reference)).toEqual(["#c1", "Observation/OB2", "Device/d1"])
    expect(r.performer.map((x) => x.reference)).toEqual([
      "Practitioner/PR1",
      "https://other.example/fhir/Organization/9",
    ])
    expect(r.resultsInterpreter[0]!.reference).toBe("Practitioner?identifier=urn:npi|999")
    expect(r.specimen[0]!.reference).toBe("Specimen/nope")
    expect(r.imagingStudy[0]!.reference).toBe("urn:oid:1.2.3")
    expect(r.contained[0]!.subject.reference).toBe("Patient/P1")
    expect(r.extension[0]!.valueReference).toEqual({ reference: "Patient/P1" })
    expect(r.extension[1]!.valueCanonical).toBe("http://example.org/fhir/Questionnaire/p1")
    expect(r.meta.profile).toEqual(["http://hl7.org/fhir/StructureDefinition/DiagnosticReport"])
  })

  it("re-points attachments and leaves inline data alone", () => {
    expect(r.presentedForm.map((a) => a.url)).toEqual([
      "Binary/nb1",
      "Binary/nb1",
      "Binary/nb9",
      undefined,
      "./attachments/x.pdf",
      "https://cdn.other.example/a.png",
    ])
    expect(r.presentedForm[3]).toBe(input.presentedForm[3])
    expect(r.presentedForm[0]!.contentType).toBe("application/pdf")
  })

  it("reports what it could not take to the target, and notes what it changed in meaning", () => {
    expect(out.unresolved).toEqual([
      { path: "result[2]", reference: "Device/d1", reason: "NotMapped", key: "Device/d1" },
      {
        path: "resultsInterpreter[0]",
        reference: "Practitioner?identifier=urn:npi|999",
        reason: "ConditionalNotFound",
      },
      { path: "specimen[0]", reference: "Specimen/nope", reason: "NotInExport", key: "Specimen/nope" },
      { path: "imagingStudy[0]", reference: "urn:oid:1.2.3", reason: "UrnOid" },
      { path: "presentedForm[4]", reference: "./attachments/x.pdf", reason: "Unparseable", attachment: true },
    ])
    expect(out.notes).toEqual([
      {
        path: "basedOn[0]",
        kind: "VersionDropped",
        reference: "ServiceRequest/s1/_history/2",
        target: "ServiceRequest/S1",
      },
      { path: "performer[1]", kind: "External", reference: "https://other.example/fhir/Organization/9" },
      { path: "presentedForm[5]", kind: "External", reference: "https://cdn.other.example/a.png" },
    ])
    // subject, encounter, basedOn, urn:uuid, conditional, contained subject, extension, 3 attachments
    expect(out.changes).toBe(10)
  })

  it("drops versionId/lastUpdated and keeps the rest by default; never mutates the input", () => {
    expect(r.meta).toEqual({
      source: "#src",
      profile: ["http://hl7.org/fhir/StructureDefinition/DiagnosticReport"],
      tag: [{ system: "urn:t", code: "x" }],
      security: [{ system: "urn:s", code: "R" }],
    })
    expect(input).toEqual(report)
    // untouched subtrees are shared
    expect(r.imagingStudy).toBe(input.imagingStudy)
  })

  it("names a source server by 16 hex digits of its normalised base (originKey)", () => {
    const key = originKey("https://source.example/fhir")
    expect(key).toMatch(/^[0-9a-f]{16}$/)
    // the same server however its base is written
    for (const same of [
      "https://source.example/fhir/",
      "HTTPS://Source.Example:443/fhir",
      "https://user:secret@source.example/fhir?x=1#y",
    ])
      expect(originKey(same), same).toBe(key)
    // another server, another path, another scheme: another origin
    for (const other of [
      "https://other.example/fhir",
      "https://source.example/fhir/r4",
      "http://source.example/fhir",
      "https://source.example:8443/fhir",
    ])
      expect(originKey(other), other).not.toBe(key)
    expect(provenanceCode("Patient/1", key)).toBe(`Patient/1@${key}`)
    expect(provenanceCode("Patient/1", undefined)).toBe("Patient/1")
  })

  it("applies the metadata options", () => {
    const dropped = applyMeta(input, { source: "drop", tag: "drop", security: "drop" })
    expect(dropped.meta).toEqual({ profile: ["http://hl7.org/fhir/StructureDefinition/DiagnosticReport"] })
    const tagged = applyMeta(input, { provenanceTag: true })
    expect(tagged.meta.tag).toEqual([
      { system: "urn:t", code: "x" },
      { system: provenanceSystem, code: "DiagnosticReport/dr1" },
    ])
    // idempotent: tagging twice keeps one Ferry tag; a stale one is replaced
    expect(applyMeta(frozen(tagged), { provenanceTag: true }).meta.tag).toEqual(tagged.meta.tag)
    const stale = frozen({ ...tagged, id: "other" })
    expect(applyMeta(stale, { provenanceTag: true }).meta.tag).toEqual([
      { system: "urn:t", code: "x" },
      { system: provenanceSystem, code: "DiagnosticReport/other" },
    ])
    const onlyTag = applyMeta(frozen({ resourceType: "Patient", id: "1" }), {
      provenanceTag: true,
      tag: "drop",
    })
    expect(onlyTag).toEqual({
      resourceType: "Patient",
      id: "1",
      meta: { tag: [{ system: provenanceSystem, code: "Patient/1" }] },
    })
    // with the source server's origin, the code names it too; a tag of another origin is replaced
    const origin = originKey("https://source.example/fhir")
    const fromSource = applyMeta(frozen<Resource>({ resourceType: "Patient", id: "1" }), {
      provenanceTag: true,
      provenanceOrigin: origin,
    })
    expect(fromSource.meta).toEqual({ tag: [{ system: provenanceSystem, code: `Patient/1@${origin}` }] })
    expect(applyMeta(frozen<Resource>(onlyTag), { provenanceTag: true, provenanceOrigin: origin })).toEqual(
      fromSource,
    )
    // a meta left empty disappears; a resource with nothing to change is returned as is
    const bare = frozen({ resourceType: "Patient", id: "1", meta: { versionId: "1", lastUpdated: "x" } })
    expect(applyMeta(bare, undefined)).toEqual({ resourceType: "Patient", id: "1" })
    const clean = frozen({ resourceType: "Patient", id: "1", meta: { profile: ["p"] } })
    expect(applyMeta(clean, undefined)).toBe(clean)
  })

  it("keeps identity-mode references and notes the ones outside the export", () => {
    const idMap = IdMap.identity()
    idMap.register("Patient/p1")
    const res = rewriteResource(
      frozen({
        resourceType: "Observation",
        id: "o",
        subject: { reference: `${base}/Patient/p1` },
        focus: [{ reference: "Device/x" }],
      }),
      { idMap, sourceBase: [base, "http://proxy.local/fhir"] },
    )
    expect(res.resource.subject).toEqual({ reference: "Patient/p1" })
    expect(res.unresolved).toEqual([])
    expect(res.notes).toEqual([
      { path: "focus[0]", kind: "NotInExport", reference: "Device/x", target: "Device/x" },
    ])
  })

  it("makes a conditional written against the source base relative when leaving it to the target", () => {
    const obs = frozen({
      resourceType: "Observation",
      id: "o",
      performer: [{ reference: `${base}/Practitioner?identifier=urn:npi|999` }],
    })
    const left = rewriteResource(obs, { idMap: map, sourceBase: base, conditionals: "leave" })
    expect(left.resource.performer).toEqual([{ reference: "Practitioner?identifier=urn:npi|999" }])
    const resolved = rewriteResource(obs, {
      idMap: map,
      sourceBase: base,
      identifiers,
      conditionals: "resolveOrLeave",
    })
    expect(resolved.resource.performer).toEqual([{ reference: "Practitioner?identifier=urn:npi|999" }])
    expect(resolved.notes.map((n) => n.kind)).toEqual(["ConditionalLeft"])
  })

  it("resolves logical references only when asked and the index knows the type", () => {
    const role = frozen({
      resourceType: "PractitionerRole",
      id: "r",
      practitioner: { identifier: { system: "urn:npi", value: "123" }, type: "Practitioner" },
    })
    expect(rewriteResource(role, { idMap: map, identifiers }).resource).toBe(role)
    const resolved = rewriteResource(role, { idMap: map, identifiers, resolveLogical: true })
    expect(resolved.resource.practitioner).toEqual({
      reference: "Practitioner/PR1",
      identifier: { system: "urn:npi", value: "123" },
      type: "Practitioner",
    })
  })
})

/** `applyMetaBytes` on a string: the edited text, decoded. */
const applyMetaText = (text: string, key: string, o: MetaOptions | undefined): string | undefined => {
  const bytes = Buffer.from(text)
  const edit = applyMetaBytes(bytes, key, o)
  if (edit === undefined) return undefined
  return `${bytes.toString("utf8", 0, edit.from)}${edit.insert}${bytes.toString("utf8", edit.to)}`
}

describe("applyMetaBytes (applyMeta on the JSON text, as UTF-8)", () => {
  const options: ReadonlyArray<MetaOptions | undefined> = [
    { provenanceTag: true },
    undefined,
    { source: "drop", tag: "drop", security: "drop" },
    { tag: "drop", provenanceTag: true },
    { provenanceTag: true, provenanceOrigin: "0123456789abcdef" },
  ]
  const keyOf = (r: Resource) => `${r.resourceType}/${r.id}`
  const check = (text: string, key: string, o: MetaOptions | undefined) => {
    const out = applyMetaText(text, key, o)
    expect(out, text).toBeDefined()
    const expected = applyMeta(JSON.parse(text) as Resource, o)
    expect(JSON.parse(out!)).toEqual(expected)
    // key order too: meta stays where it was, or comes last
    expect(Object.keys(JSON.parse(out!) as object)).toEqual(Object.keys(expected))
    return out!
  }

  it("gives what applyMeta gives, for every line of the bulk sample and a Synthea patient, whatever the options", () => {
    let n = 0
    for (const type of sampleTypes())
      for (const line of sampleText(type)
        .split("\n")
        .filter((l) => l.trim() !== "")) {
        const key = keyOf(JSON.parse(line) as Resource)
        for (const o of options) check(line, key, o)
        n++
      }
    for (const r of syntheaPatientSet()) {
      const versioned = {
        ...r,
        meta: { versionId: "3", lastUpdated: "2024-01-01T00:00:00Z", ...(r.meta as object | undefined) },
      }
      for (const o of options) {
        check(JSON.stringify(r), keyOf(r), o)
        check(JSON.stringify(versioned), keyOf(r), o)
        check(JSON.stringify(versioned, null, 2), keyOf(r), o)
      }
      n++
    }
    expect(n).toBeGreaterThan(1000)
  })

  it("keeps the rest of the text byte for byte, puts meta in its place, appends or removes it", () => {
    const tag = { system: provenanceSystem, code: "Observation/o" }
    expect(
      applyMetaText(
        '{"resourceType":"Observation","id":"o","meta":{"versionId":"2","source":"s"},"valueQuantity":{"value":1.50}}',
        "Observation/o",
        { provenanceTag: true },
      ),
    ).toBe(
      `{"resourceType":"Observation","id":"o","meta":{"source":"s","tag":[${JSON.stringify(tag)}]},"valueQuantity":{"value":1.50}}`,
    )
    expect(
      applyMetaText('{"resourceType":"Observation","id":"o"}', "Observation/o", { provenanceTag: true }),
    ).toBe(`{"resourceType":"Observation","id":"o","meta":{"tag":[${JSON.stringify(tag)}]}}`)
    // an existing provenance tag for this resource: nothing to do
    const tagged = `{"resourceType":"Observation","id":"o","meta":{"tag":[${JSON.stringify(tag)}]}}`
    expect(applyMetaText(tagged, "Observation/o", { provenanceTag: true })).toBe(tagged)
    // meta emptied: the member goes with one comma, wherever it is
    expect(
      applyMetaText('{"resourceType":"Basic","meta":{"versionId":"1"},"id":"b"}', "Basic/b", undefined),
    ).toBe('{"resourceType":"Basic","id":"b"}')
    expect(
      applyMetaText('{"resourceType":"Basic","id":"b", "meta" : {"lastUpdated":"x"} }', "Basic/b", {}),
    ).toBe('{"resourceType":"Basic","id":"b" }')
    expect(applyMetaText('{"meta":{"versionId":"1"},"resourceType":"Basic","id":"b"}', "Basic/b", {})).toBe(
      '{"resourceType":"Basic","id":"b"}',
    )
    // strings holding quotes, braces and backslashes do not confuse the scan
    const tricky = String.raw`{"resourceType":"Basic","id":"b","x":"a\\\"}{[","y":[{"z":"\\"},{}],"meta":{"versionId":"1"}}`
    expect(JSON.parse(tricky).x).toBe('a\\"}{[')
    check(tricky, "Basic/b", { provenanceTag: true })
    // multi-byte characters (their bytes are all ≥ 0x80: never taken for a quote or a brace)
    const wide =
      '{"resourceType":"Patient","id":"p","name":[{"family":"Núñez \\"漢字\\" 😀 }"}],"meta":{"versionId":"1"}}'
    expect(check(wide, "Patient/p", { provenanceTag: true })).toContain('"family":"Núñez \\"漢字\\" 😀 }"')
    // escaped member names are read decoded
    check(String.raw`{"resourceType":"Basic","id":"b","\u006deta":{"versionId":"1"}}`, "Basic/b", undefined)
  })

  it("gives up (undefined) on text it cannot vouch for: the caller parses instead", () => {
    const k = "Basic/b"
    for (const text of [
      '{"resourceType":"Basic","id":"other"}',
      '{"resourceType":"Patient","id":"b"}',
      '{"id":"b"}',
      '{"resourceType":"Basic","id":1}',
      '{"resourceType":"Basic","id":"b","meta":{},"meta":{"versionId":"1"}}',
      '{"resourceType":"Basic","resourceType":"Basic","id":"b"}',
      '["resourceType","Basic"]',
      '{"resourceType":"Basic","id":"b"} {}',
      '{"resourceType":"Basic","id":"b","x":"unterminated}',
      '{"resourceType":"Basic","id":"b","meta":{"tag":[}',
      '{"resourceType":"Basic","id":"b",}',
      "",
    ])
      expect(applyMetaText(text, k, { provenanceTag: true }), text).toBeUndefined()
  })
})

describe("numbers across rewriteResource", () => {
  it("a rewritten resource of the bulk sample gets its line's numbers back (restoreNumbers)", () => {
    for (const type of sampleTypes())
      for (const line of sampleText(type)
        .split("\n")
        .filter((l) => l.trim() !== "")) {
        const out = rewriteResource(JSON.parse(line) as Resource, {
          idMap: IdMap.identity(),
          meta: { provenanceTag: true },
        })
        const json = restoreNumbers(line, JSON.stringify(out.resource))
        expect(JSON.parse(json)).toEqual(out.resource)
        expect(numbersOf(json)).toEqual(numbersOf(line))
      }
  })
})

describe("rewriteResource on a Bundle kept as a resource", () => {
  it("leaves references among its own entries as written; rewrites the others", () => {
    const uuid = "0c9e5b2e-1111-2222-3333-444455556666"
    const map = IdMap.empty()
    // the server holds a Patient whose id is the document's entry uuid, and a Practitioner: both migrated
    map.set(`Patient/${uuid}`, "Patient/t1")
    map.set("Practitioner/9", "Practitioner/t9")
    map.set("Observation/o1", "Observation/t2")
    const document = {
      resourceType: "Bundle",
      id: "doc1",
      type: "document",
      entry: [
        {
          fullUrl: "urn:uuid:aaaa0000-0000-0000-0000-000000000001",
          resource: {
            resourceType: "Composition",
            subject: { reference: `urn:uuid:${uuid}` },
            author: [{ reference: "Practitioner/9" }],
            section: [{ entry: [{ reference: "Observation/o1" }] }],
          },
        },
        { fullUrl: `urn:uuid:${uuid}`, resource: { resourceType: "Patient" } },
        {
          fullUrl: "http://source.example.org/fhir/Observation/o1",
          resource: { resourceType: "Observation", subject: { reference: `urn:uuid:${uuid}` } },
        },
      ],
    } as unknown as Resource
    const out = rewriteResource(document, { idMap: map })
    const entries = (out.resource as unknown as { entry: Array<{ resource: Record<string, unknown> }> }).entry
    const composition = entries[0]!.resource as {
      subject: { reference: string }
      author: Array<{ reference: string }>
      section: Array<{ entry: Array<{ reference: string }> }>
    }
    // the document's own Patient entry, not the server's Patient with that id
    expect(composition.subject.reference).toBe(`urn:uuid:${uuid}`)
    // not an entry of the document: the migrated Practitioner
    expect(composition.author[0]!.reference).toBe("Practitioner/t9")
    // relative: resolves against the holding entry's fullUrl (a urn: none), so it is the server's Observation
    expect(composition.section[0]!.entry[0]!.reference).toBe("Observation/t2")
    expect((entries[2]!.resource as { subject: { reference: string } }).subject.reference).toBe(
      `urn:uuid:${uuid}`,
    )
  })
})
