import { readFileSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import * as Reference from "../src/Reference.js"

const data = (path: string) => new URL(`../../../../shared/data/${path}`, import.meta.url)

const base = "https://src.example.org/fhir"

describe("Reference.parse", () => {
  it("classifies a relative Type/id", () => {
    expect(Reference.parse("Patient/123")).toEqual({ _tag: "Relative", type: "Patient", id: "123" })
    expect(Reference.parse("Encounter/00c7f717-4030-5582-2ed8-888ad2bc878e")).toEqual({
      _tag: "Relative",
      type: "Encounter",
      id: "00c7f717-4030-5582-2ed8-888ad2bc878e",
    })
  })

  it("classifies version-specific references, relative and absolute", () => {
    expect(Reference.parse("Patient/123/_history/4")).toEqual({
      _tag: "Versioned",
      type: "Patient",
      id: "123",
      version: "4",
      sameServer: true,
    })
    expect(Reference.parse(`${base}/Patient/123/_history/4`, { sourceBase: base })).toEqual({
      _tag: "Versioned",
      type: "Patient",
      id: "123",
      version: "4",
      base,
      sameServer: true,
    })
    expect(
      Reference.parse("https://other.example/r4/Observation/9/_history/2", { sourceBase: base }),
    ).toEqual({
      _tag: "Versioned",
      type: "Observation",
      id: "9",
      version: "2",
      base: "https://other.example/r4",
      sameServer: false,
    })
  })

  it("recognises the source server behind trailing slashes, host case and default ports", () => {
    const expected = { _tag: "Absolute", sameServer: true, base, type: "Patient", id: "123" }
    expect(Reference.parse(`${base}/Patient/123`, { sourceBase: `${base}/` })).toEqual({
      ...expected,
      url: `${base}/Patient/123`,
    })
    expect(Reference.parse(`${base}/Patient/123`, { sourceBase: `${base}//` })).toMatchObject({
      sameServer: true,
      type: "Patient",
    })
    const loud = "https://SRC.Example.org:443/fhir/Patient/123"
    expect(Reference.parse(loud, { sourceBase: base })).toEqual({ ...expected, url: loud })
    // http and https on their default ports are the same server (proxies export either)
    const plain = "http://src.example.org/fhir/Patient/123"
    expect(Reference.parse(plain, { sourceBase: base })).toEqual({ ...expected, url: plain })
    // several known bases (FHIR base + proxy)
    expect(
      Reference.parse("https://proxy.example.net/p/fhir/Organization/7", {
        sourceBase: [base, "https://proxy.example.net/p/fhir/"],
      }),
    ).toEqual({
      _tag: "Absolute",
      url: "https://proxy.example.net/p/fhir/Organization/7",
      sameServer: true,
      base: "https://proxy.example.net/p/fhir",
      type: "Organization",
      id: "7",
    })
  })

  it("does not treat another port, host or path as the same server", () => {
    expect(
      Reference.parse("https://src.example.org:8443/fhir/Patient/1", { sourceBase: base }),
    ).toMatchObject({
      _tag: "Absolute",
      sameServer: false,
    })
    expect(
      Reference.parse("http://127.0.0.1:8081/fhir/Patient/1", { sourceBase: "http://127.0.0.1:8080/fhir" }),
    ).toMatchObject({ _tag: "Absolute", sameServer: false, type: "Patient", id: "1" })
    // same port number but different schemes on a non-default port: different servers
    expect(
      Reference.parse("https://127.0.0.1:8080/fhir/Patient/1", { sourceBase: "http://127.0.0.1:8080/fhir" }),
    ).toMatchObject({ sameServer: false })
    expect(
      Reference.parse("https://src.example.org.evil.com/fhir/Patient/1", { sourceBase: base }),
    ).toMatchObject({
      sameServer: false,
    })
    expect(Reference.parse("https://src.example.org/fhir2/Patient/1", { sourceBase: base })).toMatchObject({
      sameServer: false,
    })
    // no base configured: every absolute URL is external
    expect(Reference.parse(`${base}/Patient/1`)).toMatchObject({ sameServer: false })
  })

  it("keeps external URLs and extracts Type/id only from a FHIR-shaped path", () => {
    expect(Reference.parse("https://other.example/fhir/Organization/9", { sourceBase: base })).toEqual({
      _tag: "Absolute",
      url: "https://other.example/fhir/Organization/9",
      sameServer: false,
      base: "https://other.example/fhir",
      type: "Organization",
      id: "9",
    })
    expect(Reference.parse("https://files.example/docs/report/abc", { sourceBase: base })).toEqual({
      _tag: "Absolute",
      url: "https://files.example/docs/report/abc",
      sameServer: false,
    })
    // same server but not a resource path
    expect(Reference.parse(`${base}/Binary/1/$binary-access-read`, { sourceBase: base })).toEqual({
      _tag: "Absolute",
      url: `${base}/Binary/1/$binary-access-read`,
      sameServer: true,
      base,
    })
  })

  it("classifies contained fragments, including the bare # for the container", () => {
    expect(Reference.parse("#referral")).toEqual({ _tag: "Contained", id: "referral", container: false })
    expect(Reference.parse("#")).toEqual({ _tag: "Contained", id: "", container: true })
  })

  it("classifies urn:uuid and urn:oid", () => {
    expect(Reference.parse("urn:uuid:6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2")).toEqual({
      _tag: "UrnUuid",
      uuid: "6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2",
    })
    expect(Reference.parse("urn:oid:1.2.840.113619.6.197")).toEqual({
      _tag: "UrnOid",
      oid: "1.2.840.113619.6.197",
    })
    expect(Reference.parse("urn:uuid:not-a-uuid!")).toEqual({ _tag: "Unknown", raw: "urn:uuid:not-a-uuid!" })
  })

  it("classifies the conditional references of the 10-patient bulk sample", () => {
    const line = readFileSync(data("sample-bulk-10-patients/Encounter.000.ndjson"), "utf8").split("\n", 1)[0]!
    const encounter = JSON.parse(line) as {
      participant: Array<{ individual: { reference: string } }>
      serviceProvider: { reference: string }
    }
    const practitioner = Reference.parse(encounter.participant[0]!.individual.reference)
    expect(practitioner).toEqual({
      _tag: "Conditional",
      type: "Practitioner",
      params: [{ name: "identifier", value: "http://hl7.org/fhir/sid/us-npi|9999974493" }],
      identifier: { system: "http://hl7.org/fhir/sid/us-npi", value: "9999974493" },
    })
    expect(Reference.parse(encounter.serviceProvider.reference)).toMatchObject({
      _tag: "Conditional",
      type: "Organization",
      identifier: {
        system: "https://github.com/synthetichealth/synthea",
        value: "a261e1fc-9361-3633-a2c4-8569a04b818d",
      },
    })
  })

  it("decodes percent-encoded conditional parameters", () => {
    expect(
      Reference.parse("Patient?identifier=http%3A%2F%2Fsys.example%7Cabc%20def&active=true&_tag"),
    ).toEqual({
      _tag: "Conditional",
      type: "Patient",
      params: [
        { name: "identifier", value: "http://sys.example|abc def" },
        { name: "active", value: "true" },
        { name: "_tag", value: "" },
      ],
      identifier: { system: "http://sys.example", value: "abc def" },
    })
    // malformed escapes are kept as written rather than throwing
    expect(Reference.parse("Patient?name=50%")).toMatchObject({ params: [{ name: "name", value: "50%" }] })
    // a conditional against the absolute source base
    expect(Reference.parse(`${base}/Patient?identifier=s|v`, { sourceBase: base })).toMatchObject({
      _tag: "Conditional",
      type: "Patient",
      base,
      identifier: { system: "s", value: "v" },
    })
  })

  it("classifies canonicals and keeps the version", () => {
    expect(Reference.parse("http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient|3.1.1")).toEqual({
      _tag: "Canonical",
      url: "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient",
      version: "3.1.1",
      type: "StructureDefinition",
      id: "us-core-patient",
    })
    expect(Reference.parse("http://example.org/Questionnaire/phq9", { canonical: true })).toEqual({
      _tag: "Canonical",
      url: "http://example.org/Questionnaire/phq9",
      type: "Questionnaire",
      id: "phq9",
    })
    expect(Reference.parse("http://loinc.org/vs/LL1-9|2.70#x", { canonical: true })).toEqual({
      _tag: "Canonical",
      url: "http://loinc.org/vs/LL1-9",
      version: "2.70",
      fragment: "x",
    })
  })

  it("never throws: anything else is Unknown", () => {
    for (const raw of [
      "",
      "patient/1",
      "Patient",
      "Patient/",
      "Patient/1/2",
      "Patient/a b",
      "/Patient/1",
      "urn:isbn:0451450523",
      "not a reference",
      "http://[::1",
      "#bad id",
      "Bad Type?x=1",
    ]) {
      expect(Reference.parse(raw)).toEqual({ _tag: "Unknown", raw })
    }
  })
})

describe("Reference.format", () => {
  it("round-trips every rewritable form", () => {
    for (const raw of [
      "Patient/123",
      "Patient/123/_history/4",
      `${base}/Patient/123/_history/4`,
      `${base}/Patient/123`,
      "https://other.example/fhir/Organization/9",
      "#referral",
      "#",
      "urn:uuid:6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2",
      "urn:oid:1.2.3",
      "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999974493",
      "http://example.org/Questionnaire/phq9|1.0",
      "junk value",
    ]) {
      const parsed = Reference.parse(raw, { sourceBase: base })
      if (parsed._tag === "Logical") throw new Error("parse never returns Logical")
      expect(Reference.format(parsed)).toBe(raw)
    }
  })

  it("renders mapped parts and re-encodes conditional parameters", () => {
    const parsed = Reference.parse("Patient/old")
    if (parsed._tag !== "Relative") throw new Error(parsed._tag)
    expect(Reference.format({ ...parsed, id: "new" })).toBe("Patient/new")
    expect(
      Reference.format({
        _tag: "Conditional",
        type: "Patient",
        params: [{ name: "identifier", value: "http://sys|a&b c" }],
      }),
    ).toBe("Patient?identifier=http://sys|a%26b%20c")
  })
})

describe("Reference helpers", () => {
  it("knows the R4 resource types", () => {
    expect(Reference.resourceTypes.length).toBe(146)
    expect(new Set(Reference.resourceTypes).size).toBe(146)
    for (const t of [
      "Patient",
      "Binary",
      "Bundle",
      "VisionPrescription",
      "MedicinalProductPackaged",
      "Media",
    ]) {
      expect(Reference.isResourceType(t)).toBe(true)
    }
    for (const t of [
      "patient",
      "Resource",
      "DomainResource",
      "Reference",
      "Attachment",
      "SubscriptionTopic",
      "",
    ]) {
      expect(Reference.isResourceType(t)).toBe(false)
    }
  })

  it("builds keys and finds the source key of a reference", () => {
    expect(Reference.key("Patient", "1")).toBe("Patient/1")
    expect(Reference.sourceKey(Reference.parse("Patient/1"))).toBe("Patient/1")
    expect(Reference.sourceKey(Reference.parse("Patient/1/_history/2"))).toBe("Patient/1")
    expect(Reference.sourceKey(Reference.parse(`${base}/Patient/1`, { sourceBase: base }))).toBe("Patient/1")
    expect(
      Reference.sourceKey(Reference.parse("https://other.example/fhir/Patient/1", { sourceBase: base })),
    ).toBe(undefined)
    expect(Reference.sourceKey(Reference.parse("urn:uuid:6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2"))).toBe(
      undefined,
    )
    expect(Reference.sourceKey(Reference.parse("#x"))).toBe(undefined)
  })
})
