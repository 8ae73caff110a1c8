import { createReadStream, readdirSync, readFileSync } from "node:fs"
import { createInterface } from "node:readline"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Reference from "../src/Reference.js"
import * as Walker from "../src/Walker.js"

const data = (path: string) => new URL(`../../../../shared/data/${path}`, import.meta.url)

type Json = Record<string, unknown>
interface Entry {
  readonly fullUrl: string
  readonly resource: Json & { resourceType: string; id: string }
}
interface Bundle {
  readonly resourceType: "Bundle"
  readonly entry: ReadonlyArray<Entry>
}

const syntheaFile = "synthea-bundles/Abram_Lemke_6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2.json"
const readBundle = (file: string): Bundle => JSON.parse(readFileSync(data(file), "utf8")) as Bundle
const bundle = readBundle(syntheaFile)
const firstOf = (type: string, where: (r: Json) => boolean = () => true): Json => {
  const e = bundle.entry.find((x) => x.resource.resourceType === type && where(x.resource))
  if (e === undefined) throw new Error(`no ${type} in ${syntheaFile}`)
  return e.resource
}

/** The first NDJSON line of `file` for which `pick` is true (streamed, not read whole). */
const firstLine = (file: string, pick: (r: Json) => boolean) =>
  Effect.promise(async () => {
    const lines = createInterface({
      input: createReadStream(data(file)),
      crlfDelay: Number.POSITIVE_INFINITY,
    })
    try {
      for await (const line of lines) {
        if (line.length === 0) continue
        const r = JSON.parse(line) as Json
        if (pick(r)) return r
      }
    } finally {
      lines.close()
    }
    throw new Error(`no matching line in ${file}`)
  })

const byPath = (sites: Iterable<Walker.ReferenceSite>) => {
  const m = new Map<string, Walker.ReferenceSite>()
  for (const s of sites) m.set(s.path, s)
  return m
}

/** Deep-freeze so any mutation of the input throws in strict mode. */
const freeze = <A>(a: A): A => {
  if (typeof a === "object" && a !== null) {
    for (const v of Object.values(a)) freeze(v)
    Object.freeze(a)
  }
  return a
}

describe("Walker on real Synthea data", () => {
  it("finds the urn:uuid references of a Claim, with their paths", () => {
    const claim = firstOf("Claim", (r) => Array.isArray(r.supportingInfo))
    const sites = byPath(Walker.references(claim))
    expect(sites.get("patient")?.parsed).toEqual({
      _tag: "UrnUuid",
      uuid: "6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2",
    })
    expect(sites.get("provider")?.parsed._tag).toBe("UrnUuid")
    expect(sites.get("supportingInfo[0].valueReference")?.raw).toBe(
      "urn:uuid:c3f2624a-413e-4707-b58f-7946fe396bdf",
    )
    expect([...sites.keys()]).toEqual([
      "patient",
      "provider",
      "supportingInfo[0].valueReference",
      "item[0].encounter[0]",
    ])
    const withDiagnosis = byPath(Walker.references(firstOf("Claim", (r) => Array.isArray(r.diagnosis))))
    expect(withDiagnosis.get("diagnosis[0].diagnosisReference")?.parsed._tag).toBe("UrnUuid")
    // `insurance[0].coverage` is display-only: not a site
    expect(sites.has("insurance[0].coverage")).toBe(false)
    for (const s of sites.values()) {
      expect(s.canonical).toBe(false)
      expect(s.resourceType).toBe("Claim")
      expect(s.inContained).toBeUndefined()
    }
  })

  it("finds an Encounter's serviceProvider and participant", () => {
    const encounter = firstOf("Encounter")
    const sites = byPath(Walker.references(encounter))
    expect([...sites.keys()].sort()).toEqual(["participant[0].individual", "serviceProvider", "subject"])
    expect(sites.get("serviceProvider")?.element?.display).toBe("HOLYOKE MEDICAL CENTER")
  })

  it("reports contained resources and #id references in an ExplanationOfBenefit", () => {
    const eob = firstOf("ExplanationOfBenefit")
    const sites = Walker.references(eob)
    const referral = sites.find((s) => s.path === "referral")
    expect(referral?.parsed).toEqual({ _tag: "Contained", id: "referral", container: false })
    expect(referral?.inContained).toBeUndefined()
    expect(sites.find((s) => s.path === "insurance[0].coverage")?.raw).toBe("#coverage")
    const inside = sites.filter((s) => s.inContained !== undefined)
    expect(inside.map((s) => `${s.inContained} ${s.resourceType} ${s.path}`)).toEqual([
      "referral ServiceRequest contained[0].subject",
      "referral ServiceRequest contained[0].requester",
      "referral ServiceRequest contained[0].performer[0]",
      "coverage Coverage contained[1].beneficiary",
    ])
  })

  it.effect("classifies the conditional references of the 10-patient bulk sample", () =>
    Effect.gen(function* () {
      const encounter = yield* firstLine("sample-bulk-10-patients/Encounter.000.ndjson", () => true)
      const sites = byPath(Walker.references(encounter))
      expect(sites.get("subject")?.parsed._tag).toBe("Relative")
      expect(sites.get("participant[0].individual")?.parsed).toMatchObject({
        _tag: "Conditional",
        type: "Practitioner",
        identifier: { system: "http://hl7.org/fhir/sid/us-npi" },
      })
      expect(sites.get("location[0].location")?.parsed).toMatchObject({
        _tag: "Conditional",
        type: "Location",
      })
      expect(sites.get("serviceProvider")?.parsed).toMatchObject({
        _tag: "Conditional",
        type: "Organization",
      })
      // meta.profile is a canonical
      expect(sites.get("meta.profile[0]")).toMatchObject({
        canonical: true,
        raw: "http://hl7.org/fhir/us/core/StructureDefinition/us-core-encounter",
        parsed: { _tag: "Canonical", type: "StructureDefinition", id: "us-core-encounter" },
      })
    }),
  )

  it.effect("finds the inline attachment of a bulk DocumentReference", () =>
    Effect.gen(function* () {
      const doc = yield* firstLine("sample-bulk-10-patients/DocumentReference.000.ndjson", () => true)
      const found = Walker.attachments(doc)
      expect(found.map((a) => a.path)).toEqual(["content[0].attachment"])
      expect(found[0]!.attachment.contentType).toBe("text/plain; charset=utf-8")
      expect(typeof found[0]!.attachment.data).toBe("string")
      expect(found[0]!.resourceType).toBe("DocumentReference")
      // and its references: Patient, conditional Practitioner/Organization, Encounter in context
      const tags = Walker.references(doc)
        .filter((s) => !s.canonical)
        .map((s) => `${s.path} ${s.parsed._tag}`)
      expect(tags).toEqual([
        "subject Relative",
        "author[0] Conditional",
        "custodian Conditional",
        "context.encounter[0] Relative",
      ])
    }),
  )

  it("counts every reference of a full patient Bundle like an independent scan does", () => {
    // independent count: every object with a string "reference" key, classified by its prefix
    const expected = new Map<string, number>()
    const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1)
    const scan = (u: unknown): void => {
      if (Array.isArray(u)) for (const x of u) scan(x)
      else if (typeof u === "object" && u !== null) {
        const o = u as Json
        if (typeof o.reference === "string") {
          const r = o.reference
          bump(
            expected,
            r.startsWith("urn:uuid:")
              ? "UrnUuid"
              : r.startsWith("#")
                ? "Contained"
                : r.includes("?")
                  ? "Conditional"
                  : /^[A-Z][A-Za-z]+\/[^/]+$/.test(r)
                    ? "Relative"
                    : "other",
          )
        }
        for (const v of Object.values(o)) scan(v)
      }
    }
    scan(bundle)
    expect(expected.get("UrnUuid")).toBeGreaterThan(500)
    expect(expected.get("Contained")).toBe(32)

    const fromBundle = new Map<string, number>()
    for (const s of Walker.references(bundle)) if (!s.canonical) bump(fromBundle, s.parsed._tag)
    expect(fromBundle).toEqual(expected)

    // walking each entry's resource on its own gives the same total, and every site knows its entry
    const perResource = new Map<string, number>()
    for (const e of bundle.entry)
      for (const s of Walker.references(e.resource)) bump(perResource, s.parsed._tag)
    expect(perResource).toEqual(expected)
    const sites = Walker.references(bundle)
    expect(sites[0]!.entry).toBe(3) // entries 0-2 (Patient, Organization, Practitioner) have no references
    for (const s of sites) {
      expect(s.fullUrl).toBe(bundle.entry[s.entry!]!.fullUrl)
      expect(s.path.startsWith(`entry[${s.entry}].resource.`)).toBe(true)
    }
  })
})

describe("Walker placements", () => {
  const resource = freeze({
    resourceType: "Encounter",
    id: "e1",
    meta: {
      versionId: "3",
      source: "http://src/fhir",
      profile: ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-encounter|3.1.1"],
      tag: [{ system: "http://sys", code: "c" }],
    },
    text: {
      status: "generated",
      div: '<div xmlns="http://www.w3.org/1999/xhtml"><a href="Patient/p1">p</a></div>',
    },
    contained: [
      { resourceType: "Medication", id: "med1", code: { text: "x" } },
      {
        resourceType: "Condition",
        id: "cond1",
        subject: { reference: "Patient/p1" },
        evidence: [{ detail: [{ reference: "#" }] }],
      },
      { resourceType: "Provenance", id: "prov1", target: [{ reference: "#med1" }] },
    ],
    extension: [
      { url: "http://ext/a", valueString: "x" },
      { url: "http://ext/b", valueCanonical: "http://example.org/fhir/Questionnaire/q|2" },
      {
        url: "http://ext/c",
        valueReference: { reference: "https://src.example.org/fhir/Location/9/_history/2" },
      },
    ],
    modifierExtension: [{ url: "http://ext/m", valueReference: { reference: "urn:oid:1.2.3.4" } }],
    identifier: [{ system: "http://sys", value: "v" }],
    subject: { reference: "Patient/p1", display: "P" },
    basedOn: [{ identifier: { system: "http://orders", value: "o-7" }, type: "ServiceRequest" }],
    instantiatesCanonical: ["http://example.org/fhir/PlanDefinition/pd1"],
    diagnosis: [
      {
        condition: { reference: "#cond1" },
        extension: [
          {
            url: "http://ext/outer",
            extension: [
              { url: "ref", valueReference: { reference: "Practitioner?identifier=http%3A%2F%2Fnpi%7C123" } },
              { url: "doc", valueAttachment: { contentType: "application/pdf", url: "Binary/b1", size: 10 } },
            ],
          },
        ],
      },
    ],
    location: [{ location: { reference: "https://other.example:8443/fhir/Location/3" } }],
    serviceProvider: {
      reference: "Organization/o1",
      identifier: { system: "http://orgs", value: "o1", assigner: { reference: "Organization/authority" } },
    },
    _status: { extension: [{ url: "http://ext/s", valueReference: { reference: "Device/d1" } }] },
  })

  const sites = Walker.references(resource, { sourceBase: "https://src.example.org/fhir/" })
  const at = (path: string) => {
    const s = sites.find((x) => x.path === path)
    if (s === undefined) throw new Error(`no site at ${path}; have ${sites.map((x) => x.path).join(", ")}`)
    return s
  }

  it("reports every placement with its kind", () => {
    expect(sites.map((s) => `${s.path} ${s.parsed._tag}`)).toEqual([
      "meta.profile[0] Canonical",
      "contained[1].subject Relative",
      "contained[1].evidence[0].detail[0] Contained",
      "contained[2].target[0] Contained",
      "extension[1].valueCanonical Canonical",
      "extension[2].valueReference Versioned",
      "modifierExtension[0].valueReference UrnOid",
      "subject Relative",
      "basedOn[0] Logical",
      "instantiatesCanonical[0] Canonical",
      "diagnosis[0].condition Contained",
      "diagnosis[0].extension[0].extension[0].valueReference Conditional",
      "location[0].location Absolute",
      "serviceProvider Relative",
      "serviceProvider.identifier.assigner Relative",
      "_status.extension[0].valueReference Relative",
    ])
  })

  it("classifies each placement", () => {
    expect(at("meta.profile[0]")).toMatchObject({
      canonical: true,
      element: undefined,
      parsed: { _tag: "Canonical", version: "3.1.1", type: "StructureDefinition" },
    })
    expect(at("instantiatesCanonical[0]").parsed).toMatchObject({ _tag: "Canonical", type: "PlanDefinition" })
    expect(at("extension[1].valueCanonical").parsed).toMatchObject({ _tag: "Canonical", version: "2" })
    expect(at("contained[1].evidence[0].detail[0]")).toMatchObject({
      inContained: "cond1",
      resourceType: "Condition",
      parsed: { _tag: "Contained", container: true },
    })
    expect(at("contained[2].target[0]")).toMatchObject({ inContained: "prov1", parsed: { id: "med1" } })
    expect(at("extension[2].valueReference").parsed).toEqual({
      _tag: "Versioned",
      type: "Location",
      id: "9",
      version: "2",
      base: "https://src.example.org/fhir",
      sameServer: true,
    })
    expect(at("basedOn[0]")).toMatchObject({
      raw: undefined,
      canonical: false,
      parsed: {
        _tag: "Logical",
        identifier: { system: "http://orders", value: "o-7" },
        type: "ServiceRequest",
      },
    })
    expect(at("diagnosis[0].extension[0].extension[0].valueReference").parsed).toMatchObject({
      _tag: "Conditional",
      identifier: { system: "http://npi", value: "123" },
    })
    expect(at("location[0].location").parsed).toMatchObject({
      _tag: "Absolute",
      sameServer: false,
      type: "Location",
    })
    expect(at("subject").inContained).toBeUndefined()
  })

  it("leaves the narrative alone and does not take Coding, Identifier, Meta or Extension for Attachments", () => {
    expect(sites.some((s) => s.path.startsWith("text"))).toBe(false)
    expect(Walker.attachments(resource).map((a) => a.path)).toEqual([
      "diagnosis[0].extension[0].extension[1].valueAttachment",
    ])
    expect(
      Walker.attachments({
        resourceType: "Observation",
        code: { coding: [{ system: "http://loinc.org", code: "1", display: "x" }] },
        meta: { source: "http://x", profile: ["http://p"] },
        extension: [{ url: "http://ext/only-url" }, { url: "http://ext/uri", valueUri: "http://x/y.pdf" }],
        identifier: [{ system: "urn:ietf:rfc:3986", value: "urn:uuid:1" }],
      }),
    ).toEqual([])
  })

  it("finds Attachments in every typed position and by shape", () => {
    const att = (n: number) => ({ contentType: "image/jpeg", url: `Binary/${n}` })
    const cases: ReadonlyArray<[Json, ReadonlyArray<string>]> = [
      [{ resourceType: "Patient", photo: [att(1)] }, ["photo[0]"]],
      [
        {
          resourceType: "DiagnosticReport",
          presentedForm: [{ contentType: "application/pdf", data: "AAAA" }],
        },
        ["presentedForm[0]"],
      ],
      [
        {
          resourceType: "Media",
          content: { contentType: "image/jpeg", url: "https://cdn/x.jpg", title: "t" },
        },
        ["content"],
      ],
      [{ resourceType: "Library", content: [{ contentType: "text/cql", data: "AA==" }] }, ["content[0]"]],
      [
        { resourceType: "Communication", payload: [{ contentAttachment: att(2) }, { contentString: "hi" }] },
        ["payload[0].contentAttachment"],
      ],
      [{ resourceType: "Consent", sourceAttachment: { title: "scan" } }, ["sourceAttachment"]],
      [
        { resourceType: "QuestionnaireResponse", item: [{ answer: [{ valueAttachment: att(3) }] }] },
        ["item[0].answer[0].valueAttachment"],
      ],
      // an Attachment-shaped object in an unexpected place (url + size) is still found
      [
        {
          resourceType: "Basic",
          extension: [{ url: "u", extension: [{ url: "x", valueX: { url: "Binary/4", size: 3 } }] }],
        },
        ["extension[0].extension[0].valueX"],
      ],
      // DocumentReference.content is a backbone, not an Attachment; Media outside the root is not either
      [
        { resourceType: "DocumentReference", content: [{ attachment: att(5), format: { code: "x" } }] },
        ["content[0].attachment"],
      ],
      [{ resourceType: "Basic", content: { title: "x" } }, []],
    ]
    for (const [r, paths] of cases) expect(Walker.attachments(r).map((a) => a.path)).toEqual(paths)
  })

  it("walks Bundle entries and a resource nested in Parameters", () => {
    const b = {
      resourceType: "Bundle",
      type: "transaction",
      entry: [
        {
          fullUrl: "urn:uuid:11111111-1111-1111-1111-111111111111",
          resource: { resourceType: "Patient", id: "p" },
        },
        {
          fullUrl: "urn:uuid:22222222-2222-2222-2222-222222222222",
          resource: {
            resourceType: "Parameters",
            parameter: [
              {
                name: "r",
                resource: {
                  resourceType: "Observation",
                  subject: { reference: "urn:uuid:11111111-1111-1111-1111-111111111111" },
                },
              },
            ],
          },
          request: { method: "POST", url: "Parameters" },
        },
      ],
    }
    const found = Walker.references(b)
    expect(found.map((s) => [s.path, s.entry, s.fullUrl, s.resourceType])).toEqual([
      [
        "entry[1].resource.parameter[0].resource.subject",
        1,
        "urn:uuid:22222222-2222-2222-2222-222222222222",
        "Observation",
      ],
    ])
  })
})

describe("Walker.rewrite", () => {
  const input = () =>
    freeze({
      resourceType: "DocumentReference",
      id: "d1",
      subject: { reference: "Patient/old", display: "P" },
      author: [{ reference: "Practitioner/keep" }, { reference: "Patient/old" }],
      context: { encounter: [{ reference: "Encounter/e1" }], related: [{ reference: "#c" }] },
      content: [
        { attachment: { contentType: "application/pdf", url: "https://src.example.org/fhir/Binary/b1" } },
        { attachment: { contentType: "text/plain", data: "aGk=" } },
      ],
      meta: { profile: ["http://old.example/StructureDefinition/x"] },
    })

  it("replaces only the targeted sites, counts them and never mutates the input", () => {
    const before = input()
    const snapshot = JSON.stringify(before)
    const { resource, changed } = Walker.rewrite(before, {
      sourceBase: "https://src.example.org/fhir",
      reference: (site) => {
        const p = site.parsed
        if (p._tag === "Relative" && p.type === "Patient") return Reference.format({ ...p, id: "new" })
        if (p._tag === "Canonical") return `http://new.example/StructureDefinition/x`
        return undefined
      },
      attachment: (site) => {
        const parsed = site.attachment.url
          ? Reference.parse(site.attachment.url, { sourceBase: "https://src.example.org/fhir" })
          : undefined
        return parsed?._tag === "Absolute" && parsed.sameServer
          ? { ...site.attachment, url: `Binary/${parsed.id}-t` }
          : undefined
      },
    })
    expect(changed).toBe(4)
    expect(JSON.stringify(before)).toBe(snapshot)
    expect(resource).not.toBe(before)
    expect(resource.subject).toEqual({ reference: "Patient/new", display: "P" })
    expect(resource.author).toEqual([{ reference: "Practitioner/keep" }, { reference: "Patient/new" }])
    expect(resource.content[0]!.attachment).toEqual({ contentType: "application/pdf", url: "Binary/b1-t" })
    expect(resource.meta.profile).toEqual(["http://new.example/StructureDefinition/x"])
    // untouched subtrees are shared, not cloned
    expect(resource.context).toBe(before.context)
    expect(resource.content[1]).toBe(before.content[1])
    expect(resource.author[0]).toBe(before.author[0])
  })

  it("returns the input itself when nothing changes (including identical replacements)", () => {
    const before = input()
    const same = Walker.rewrite(before, { reference: (site) => site.raw })
    expect(same.changed).toBe(0)
    expect(same.resource).toBe(before)
    expect(Walker.rewrite(before, {}).resource).toBe(before)
  })

  it("gives a Logical reference a literal one, and can rewrite references inside contained resources", () => {
    const before = freeze({
      resourceType: "Observation",
      contained: [
        {
          resourceType: "Specimen",
          id: "s",
          subject: { reference: "urn:uuid:6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2" },
        },
      ],
      performer: [{ identifier: { system: "http://npi", value: "1" } }],
      specimen: { reference: "#s" },
    })
    const { resource, changed } = Walker.rewrite(before, {
      reference: (site) =>
        site.parsed._tag === "Logical"
          ? "Practitioner/p1"
          : site.parsed._tag === "UrnUuid"
            ? `Patient/${site.parsed.uuid}`
            : undefined,
    })
    expect(changed).toBe(2)
    expect(resource.performer[0]).toEqual({
      identifier: { system: "http://npi", value: "1" },
      reference: "Practitioner/p1",
    })
    expect(resource.contained[0]!.subject.reference).toBe("Patient/6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2")
    expect(resource.specimen).toBe(before.specimen)
  })

  it("rewrites every urn:uuid of a real Synthea Bundle and leaves the input intact", () => {
    const b = readBundle(syntheaFile)
    const snapshot = JSON.stringify(b)
    const ids = new Map(b.entry.map((e) => [e.fullUrl, `${e.resource.resourceType}/${e.resource.id}`]))
    const urns = Walker.references(b).filter((s) => s.parsed._tag === "UrnUuid").length
    const { resource, changed } = Walker.rewrite(b, {
      reference: (site) =>
        site.parsed._tag === "UrnUuid" && site.raw !== undefined ? ids.get(site.raw) : undefined,
    })
    expect(JSON.stringify(b)).toBe(snapshot)
    const left = Walker.references(resource).filter((s) => s.parsed._tag === "UrnUuid")
    // what is left points outside this Bundle (hospital and practitioner Bundles)
    for (const s of left) expect(ids.has(s.raw!)).toBe(false)
    expect(changed).toBe(urns - left.length)
    expect(changed).toBeGreaterThan(500)
  })
})

describe("referenceStrings", () => {
  /** What `rewrite`'s sites give: non-canonical reference strings and string Attachment URLs, in order. */
  const viaSites = (r: unknown): Array<[string, boolean]> => {
    const out: Array<[string, boolean]> = []
    Walker.rewrite(r, {
      reference: (site) => {
        if (!site.canonical && site.raw !== undefined) out.push([site.raw, false])
        return undefined
      },
      attachment: (site) => {
        if (typeof site.attachment.url === "string") out.push([site.attachment.url, true])
        return undefined
      },
    })
    return out
  }
  const strings = (r: unknown): Array<[string, boolean]> => {
    const out: Array<[string, boolean]> = []
    Walker.referenceStrings(r, (raw, attachment) => out.push([raw, attachment]))
    return out
  }

  it("the same strings as the sites of rewrite, on every resource of the shared data and on the Bundles whole", () => {
    const resources: Array<unknown> = []
    const dir = data("synthea-bundles/")
    const files = readdirSync(dir).filter((f) => f.endsWith(".json"))
    for (const f of files.slice(0, 25)) {
      const b = JSON.parse(readFileSync(new URL(f, dir), "utf8")) as Bundle
      resources.push(b, ...b.entry.map((e) => e.resource))
    }
    const sample = data("sample-bulk-10-patients/")
    for (const f of readdirSync(sample).filter((n) => n.endsWith(".ndjson")))
      for (const line of readFileSync(new URL(f, sample), "utf8").split("\n"))
        if (line !== "") resources.push(JSON.parse(line))
    let found = 0
    for (const r of resources) {
      const expected = viaSites(r)
      expect(strings(r)).toEqual(expected)
      found += expected.length
    }
    expect(resources.length).toBeGreaterThan(5000)
    expect(found).toBeGreaterThan(20_000)
  })

  it("contained resources, Bundle entries, the Narrative, logical references, canonicals and odd Attachments alike", () => {
    const cases: ReadonlyArray<unknown> = [
      {
        resourceType: "Observation",
        id: "o",
        text: {
          status: "generated",
          div: "<div/>",
          extension: [{ url: "x", valueReference: { reference: "Patient/n" } }],
        },
        contained: [
          { resourceType: "Practitioner", id: "p1", text: { div: "x" }, photo: [{ url: "http://x/p.png" }] },
        ],
        subject: {
          reference: "Patient/1",
          extension: [{ url: "e", valueReference: { reference: "Group/g" } }],
        },
        performer: [{ reference: "#p1" }, { identifier: { system: "s", value: "v" }, type: "Practitioner" }],
        basedOn: [[{ reference: "ServiceRequest/nested" }]],
        focus: [{ reference: "Condition/c", foo: { reference: "Condition/hidden" } }],
        derivedFrom: [
          { reference: "Observation/d", identifier: { assigner: { reference: "Organization/a" } } },
        ],
        instantiatesCanonical: ["http://example.org/Questionnaire/q"],
        valueAttachment: { contentType: "text/plain", url: "Binary/b1" },
        note: [{ text: "n", extension: [{ url: "u", valueAttachment: { url: "Binary/b2" } }] }],
      },
      {
        resourceType: "Bundle",
        type: "collection",
        entry: [
          {
            fullUrl: "urn:uuid:1",
            resource: {
              resourceType: "Patient",
              id: "1",
              managingOrganization: { reference: "Organization/o" },
            },
          },
          {
            resource: {
              resourceType: "Media",
              id: "m",
              content: { url: "Binary/m", contentType: "image/png" },
            },
          },
          { link: [{ relation: "self", url: "http://x" }], reference: "not/a-reference-here" },
        ],
      },
      { resourceType: "Library", id: "l", content: [{ url: "Binary/lib" }] },
      {
        resourceType: "DocumentReference",
        id: "d",
        content: [
          {
            attachment: {
              url: "http://other/doc.pdf",
              extension: [{ url: "e", valueReference: { reference: "Patient/ext" } }],
            },
          },
        ],
      },
      {
        resourceType: "Patient",
        id: "x",
        photo: [{ data: "AAAA" }],
        link: [{ other: { reference: "Patient/y" } }],
      },
      "not an object",
      [{ reference: "Patient/array-root" }],
    ]
    for (const c of cases) expect(strings(c)).toEqual(viaSites(c))
    // the Narrative's extension and a member a Reference does not have are not walked, as rewrite does not
    expect(strings(cases[0])).toEqual([
      ["http://x/p.png", true],
      ["Patient/1", false],
      ["Group/g", false],
      ["#p1", false],
      ["ServiceRequest/nested", false],
      ["Condition/c", false],
      ["Observation/d", false],
      ["Organization/a", false],
      ["Binary/b1", true],
      ["Binary/b2", true],
    ])
  })
})
