import { assert, describe, it } from "@effect/vitest"
import {
  attachmentPlaceholder,
  canonicalize,
  decimalText,
  hash,
  hasWrittenDecimals,
  inSample,
  provenanceSystem,
  stringify,
  unresolvablePrefix,
  withoutWrittenDecimals,
} from "../src/Canonical.js"
import { diff, preview } from "../src/Diff.js"
import { keepNumbersOf } from "@ferry/core/NumberText"
import type { Resource } from "@ferry/core/Ids"

/** A resource parsed from `text`, remembering how its numbers were written (as verify reads both sides). */
const read = (text: string): Resource => keepNumbersOf(JSON.parse(text) as Resource, text)

describe("Canonical", () => {
  it("sorts keys at every level, keeps array order", () => {
    assert.strictEqual(stringify({ b: 1, a: { d: [2, 1], c: 0 } }), '{"a":{"c":0,"d":[2,1]},"b":1}')
    assert.strictEqual(
      hash({ resourceType: "Patient", id: "1", name: [{ given: ["A"], family: "B" }] }),
      hash({ name: [{ family: "B", given: ["A"] }], id: "1", resourceType: "Patient" }),
    )
    assert.notStrictEqual(hash({ a: [1, 2] }), hash({ a: [2, 1] }))
  })

  it("strips versionId, lastUpdated, a request-id-only source and Ferry's provenance tag; drops an empty meta", () => {
    const c = canonicalize({
      resourceType: "Patient",
      id: "1",
      meta: {
        versionId: "3",
        lastUpdated: "2024-01-01T00:00:00Z",
        source: "#abc",
        tag: [{ system: provenanceSystem, code: "Patient/1" }],
      },
    })
    assert.deepStrictEqual(c.value, { resourceType: "Patient", id: "1" })
  })

  it("meta.source is compared without the #<request id> a server may add (the rest is data the import keeps)", () => {
    const of = (source?: string) =>
      hash(
        canonicalize({
          resourceType: "Patient",
          id: "1",
          ...(source !== undefined ? { meta: { source } } : {}),
        }).value,
      )
    assert.strictEqual(of("http://src.example/ehr"), of("http://src.example/ehr#4f1c9a"))
    assert.strictEqual(of("http://src.example/ehr#abc"), of("http://src.example/ehr#xyz"))
    assert.strictEqual(of(undefined), of("#4f1c9a"), "only a request id: the server's own")
    assert.notStrictEqual(of("http://src.example/ehr"), of(undefined), "dropped on the target")
    assert.notStrictEqual(of("http://src.example/ehr"), of("http://other.example/x"), "changed on the target")
  })

  it("a member named __proto__ stays a member of the canonical form (not taken for its prototype)", () => {
    const of = (text: string) =>
      canonicalize(JSON.parse(text) as { resourceType: string; id: string; [k: string]: unknown }, {
        base: "http://src.example/fhir",
      })
    const evil = of('{"resourceType":"Patient","id":"1","name":[{"family":"A","__proto__":{"evil":true}}]}')
    const plain = of('{"resourceType":"Patient","id":"1","name":[{"family":"A"}]}')
    assert.notStrictEqual(hash(evil.value), hash(plain.value))
    assert.include(stringify(evil.value), '"__proto__":{"evil":true}')
    // also through a rewritten reference inside it (the walker's copy)
    const withRef = of(
      '{"resourceType":"Patient","id":"1","__proto__":{"subject":{"reference":"http://src.example/fhir/Patient/2"}}}',
    )
    assert.include(stringify(withRef.value), '"__proto__":{"subject":{"reference":"Patient/2"}}')
  })

  it("a versioned reference: the source side drops the version (as an import does), the target side marks it", () => {
    const obs = (reference: string) => ({ resourceType: "Observation", id: "o", subject: { reference } })
    const source = (r: string) => hash(canonicalize(obs(r)).value)
    const target = (r: string) => hash(canonicalize(obs(r), { versions: "mark" }).value)
    assert.strictEqual(source("Patient/1/_history/3"), target("Patient/1"), "what an import stores")
    assert.strictEqual(source("Patient/1"), target("Patient/1"))
    assert.notStrictEqual(source("Patient/1"), target("Patient/1/_history/7"), "pinned on the target")
  })

  it("keeps other meta fields and other tags", () => {
    const c = canonicalize({
      resourceType: "Patient",
      id: "1",
      meta: {
        versionId: "3",
        profile: ["http://x/p"],
        tag: [
          { system: provenanceSystem, code: "Patient/1" },
          { system: "http://t", code: "keep" },
        ],
      },
    })
    assert.deepStrictEqual(c.value, {
      resourceType: "Patient",
      id: "1",
      meta: { profile: ["http://x/p"], tag: [{ system: "http://t", code: "keep" }] },
    })
  })

  it("a narrative is compared (a lost one is text a person reads); a generated one is left out only when asked", () => {
    const withText = (text: unknown, ignoreGeneratedNarrative = false) =>
      hash(
        canonicalize(
          { resourceType: "Patient", id: "1", gender: "male", ...(text ? { text } : {}) },
          { ignoreGeneratedNarrative },
        ).value,
      )
    const generated = { status: "generated", div: '<div xmlns="http://www.w3.org/1999/xhtml">male</div>' }
    assert.notStrictEqual(withText(generated), withText(undefined))
    assert.strictEqual(withText(generated, true), withText(undefined, true))
    const written = { status: "additional", div: '<div xmlns="http://www.w3.org/1999/xhtml">notes</div>' }
    assert.notStrictEqual(withText(written, true), withText(undefined, true))
  })

  it("tags, security labels and profiles compare in any order (sets); other arrays keep theirs", () => {
    const patient = (order: 1 | -1) => {
      const two = <A>(a: A, b: A) => (order === 1 ? [a, b] : [b, a])
      return {
        resourceType: "Patient",
        id: "1",
        meta: {
          tag: two({ system: "http://t", code: "a" }, { system: "http://t", code: "b" }),
          security: two({ system: "http://s", code: "R" }, { system: "http://s", code: "N" }),
          profile: two("http://x/p1", "http://x/p2"),
        },
        name: two({ family: "A" }, { family: "B" }),
      }
    }
    const [a, b] = [canonicalize(patient(1)).value, canonicalize(patient(-1)).value] as Array<{
      meta: unknown
      name: unknown
    }>
    assert.deepStrictEqual(a.meta, b.meta)
    assert.notDeepEqual(a.name, b.name)
  })

  it("resolves a conditional reference through the context, then maps it; unknown ones are unresolvable", () => {
    const encounter = {
      resourceType: "Encounter",
      id: "e1",
      participant: [
        { individual: { reference: "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|999" } },
        { individual: { reference: "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|000" } },
      ],
    }
    const c = canonicalize(encounter, {
      mapKey: (k) => (k === "Practitioner/p1" ? "Practitioner/t1" : k),
      resolveConditional: (type, system, value) =>
        type === "Practitioner" && system === "http://hl7.org/fhir/sid/us-npi" && value === "999"
          ? "Practitioner/p1"
          : undefined,
    })
    const v = c.value as { participant: Array<{ individual: { reference: string } }> }
    assert.strictEqual(v.participant[0]!.individual.reference, "Practitioner/t1")
    // one the context cannot resolve designates nothing a client can follow, as a stored one on the target
    assert.strictEqual(
      v.participant[1]!.individual.reference,
      "unresolvable:Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|000",
    )
  })

  it("transactionOnly unresolvable (the target side): conditional and urn:uuid references are never resolved", () => {
    const ref = "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|999"
    const urn = "urn:uuid:6f1d3c7e-4b8a-4f7e-9c1a-2b3c4d5e6f70"
    const c = canonicalize(
      {
        resourceType: "Encounter",
        id: "e1",
        participant: [{ individual: { reference: ref } }],
        subject: { reference: urn },
        serviceProvider: { reference: "Organization/o1" },
      },
      {
        transactionOnly: "unresolvable",
        resolveConditional: () => "Practitioner/p1",
        resolveUrn: () => "Patient/1",
      },
    )
    const v = c.value as {
      participant: Array<{ individual: { reference: string } }>
      subject: { reference: string }
      serviceProvider: { reference: string }
    }
    assert.strictEqual(v.participant[0]!.individual.reference, `${unresolvablePrefix}${ref}`)
    assert.strictEqual(v.subject.reference, `${unresolvablePrefix}${urn}`)
    assert.strictEqual(v.serviceProvider.reference, "Organization/o1")
    // the same references on a source side that cannot resolve them either (their resources were not
    // exported): a faithful copy, equal; resolved there, they differ
    const resource = {
      resourceType: "Encounter",
      id: "e1",
      participant: [{ individual: { reference: ref } }],
      subject: { reference: urn },
    }
    const target = hash(canonicalize(resource, { transactionOnly: "unresolvable" }).value)
    assert.strictEqual(hash(canonicalize(resource, {}).value), target)
    assert.notStrictEqual(hash(canonicalize(resource, { resolveUrn: () => "Patient/1" }).value), target)
  })

  it("normalises references: same-server absolute → relative, version dropped, mapped, urn:uuid resolved", () => {
    const map = new Map([
      ["Patient/1", "Patient/a"],
      ["Practitioner/9", "Practitioner/z"],
    ])
    const ctx = {
      base: "http://src.example/fhir",
      mapKey: (k: string) => map.get(k) ?? k,
      resolveUrn: (u: string) => (u === "9" ? "Practitioner/9" : undefined),
    }
    const c = canonicalize(
      {
        resourceType: "Observation",
        id: "o",
        subject: { reference: "http://src.example/fhir/Patient/1" },
        performer: [
          { reference: "urn:uuid:9" },
          { reference: "Patient/1/_history/2" },
          { reference: "http://other.example/fhir/Patient/1" },
          { reference: "#c1" },
        ],
        encounter: { reference: "Encounter/7" },
      },
      ctx,
    )
    const v = c.value as {
      subject: { reference: string }
      performer: Array<{ reference: string }>
      encounter: { reference: string }
    }
    assert.strictEqual(v.subject.reference, "Patient/a")
    assert.deepStrictEqual(
      v.performer.map((p) => p.reference),
      ["Practitioner/z", "Patient/a", "http://other.example/fhir/Patient/1", "#c1"],
    )
    assert.strictEqual(v.encounter.reference, "Encounter/7")
    // The target side, relative and absolute on its own base, gives the same hash.
    const t = canonicalize(
      {
        resourceType: "Observation",
        id: "o",
        subject: { reference: "Patient/a" },
        performer: [
          { reference: "http://tgt.example/fhir/Practitioner/z" },
          { reference: "Patient/a" },
          { reference: "http://other.example/fhir/Patient/1" },
          { reference: "#c1" },
        ],
        encounter: { reference: "Encounter/7" },
      },
      { base: "http://tgt.example/fhir" },
    )
    assert.strictEqual(hash(t.value), hash(c.value))
  })

  it("maps the resource's own id without touching the input", () => {
    const input = { resourceType: "Patient", id: "1" }
    const c = canonicalize(input, { mapKey: (k) => (k === "Patient/1" ? "Patient/abc" : k) })
    assert.deepStrictEqual(c.value, { resourceType: "Patient", id: "abc" })
    assert.strictEqual(input.id, "1")
  })

  it("replaces attachment urls by a placeholder and reports them; inline data stays content", () => {
    const c = canonicalize({
      resourceType: "DocumentReference",
      id: "d",
      content: [
        { attachment: { contentType: "application/pdf", url: "http://src/fhir/Binary/b1", size: 3 } },
        { attachment: { contentType: "text/plain", data: "aGk=" } },
      ],
    })
    const v = c.value as { content: Array<{ attachment: { url?: string; data?: string } }> }
    assert.strictEqual(v.content[0]?.attachment.url, attachmentPlaceholder)
    assert.strictEqual(v.content[1]?.attachment.data, "aGk=")
    assert.deepStrictEqual(
      c.attachments.map((a) => a.url),
      ["http://src/fhir/Binary/b1"],
    )
    assert.match(c.attachments[0]?.path ?? "", /content/)
    // data and url both: the data is the content; the url (re-pointed by an import) is not compared
    const both = (url: string) =>
      hash(
        canonicalize({
          resourceType: "DocumentReference",
          id: "d",
          content: [{ attachment: { contentType: "text/plain", data: "aGk=", url } }],
        }).value,
      )
    assert.strictEqual(both("http://src/fhir/Binary/b2"), both("Binary/ferry-1234"))
  })

  it("compares decimals as written: 1.0 is not 1 (FHIR counts written precision), 1.0 is 1.0", () => {
    const written =
      '{"resourceType":"Observation","id":"o","valueQuantity":{"value":1.0,"unit":"mg"},"n":[2,0.50]}'
    const kept = canonicalize(read(written)).value
    const lost = canonicalize(read(JSON.stringify(JSON.parse(written)))).value
    assert.strictEqual(hash(kept), hash(canonicalize(read(written.replace('"id":"o"', '"id": "o"'))).value))
    assert.notStrictEqual(hash(kept), hash(lost))
    const fields = diff(kept, lost)
    assert.deepStrictEqual(fields, [
      { path: "n[1]", source: "0.50", target: "0.5" },
      { path: "valueQuantity.value", source: "1.0", target: "1" },
    ])
    // 1.00 against 1.0: both written, differing
    const other = canonicalize(read(written.replace("1.0", "1.00"))).value
    assert.deepStrictEqual(
      diff(kept, other).map((f) => [f.path, f.source, f.target]),
      [["valueQuantity.value", "1.0", "1.00"]],
    )
    // the notation is no difference: 1E-7, 1e-7 and 0.0000001 are one value with one precision
    const tiny = (v: string) =>
      hash(canonicalize(read(`{"resourceType":"Observation","id":"o","valueQuantity":{"value":${v}}}`)).value)
    assert.strictEqual(tiny("1E-7"), tiny("0.0000001"))
    assert.strictEqual(tiny("1e-7"), tiny("1E-07"))
    assert.strictEqual(tiny("1.5e2"), tiny("15E1"))
    assert.notStrictEqual(tiny("1.5e2"), tiny("150"))
    assert.notStrictEqual(tiny("0.010"), tiny("0.01"))
    assert.strictEqual(tiny("1e0"), tiny("1"))
    // a resource whose reader did not keep its numbers compares by value, as before
    assert.strictEqual(hash(canonicalize(JSON.parse(written) as Resource).value), hash(lost))
  })

  it("decimalText: digits and scale, whatever the notation", () => {
    for (const [text, expected] of [
      ["1.0", "1.0"],
      ["0.010", "0.010"],
      ["16942.30", "16942.30"],
      ["1E-7", "0.0000001"],
      ["-2.50e-3", "-0.00250"],
      ["1e2", "1e2"],
      ["1E+2", "1e2"],
      ["007", "7"],
      ["0", "0"],
      ["12345678901234567890", "12345678901234567890"],
    ])
      assert.strictEqual(decimalText(text!), expected, text)
  })

  it("samples deterministically", () => {
    const keys = Array.from({ length: 2000 }, (_, i) => `Patient/${i}`)
    const a = keys.filter((k) => inSample(k, 10))
    assert.deepStrictEqual(
      a,
      keys.filter((k) => inSample(k, 10)),
    )
    assert.isAbove(a.length, 120)
    assert.isBelow(a.length, 280)
    assert.strictEqual(keys.filter((k) => inSample(k, 100)).length, 2000)
  })
})

describe("withoutWrittenDecimals", () => {
  it("gives what canonicalize gives with plainNumbers, from the canonical value", () => {
    const text =
      '{"resourceType":"Observation","id":"o","valueQuantity":{"value":1.0},"component":[{"valueQuantity":{"value":0.010}},{"valueInteger":3}]}'
    const r = keepNumbersOf(JSON.parse(text) as Resource, text)
    assert.isTrue(hasWrittenDecimals(r))
    const written = canonicalize(r).value
    const plain = canonicalize(r, { plainNumbers: true }).value
    assert.notStrictEqual(hash(written), hash(plain))
    assert.strictEqual(hash(withoutWrittenDecimals(written)), hash(plain))
  })
})

describe("Diff", () => {
  it("lists leaf paths with both values, truncated", () => {
    const d = diff(
      { name: [{ family: "Old", given: ["A"] }], gender: "female", x: "y".repeat(300) },
      { name: [{ family: "New", given: ["A", "B"] }], gender: "female", x: "z".repeat(300) },
    )
    assert.deepStrictEqual(
      d.map((f) => f.path),
      ["name[0].family", "name[0].given[1]", "x"],
    )
    assert.strictEqual(d[0]?.source, '"Old"')
    assert.strictEqual(d[0]?.target, '"New"')
    assert.isUndefined(d[1]?.source)
    assert.isAtMost(d[2]?.source?.length ?? 0, 120)
    assert.strictEqual(preview("abc"), '"abc"')
  })

  it("an element inserted into or removed from an array is that element alone, not every later position", () => {
    const codes = ["a", "b", "c", "d", "e"].map((code) => ({ system: "http://loinc.org", code }))
    const inserted = diff(
      { coding: codes },
      { coding: [{ system: "http://snomed.info/sct", code: "z" }, ...codes] },
    )
    assert.deepStrictEqual(
      inserted.map((f) => [f.path, f.source, f.target]),
      [["coding[0]", undefined, '{"system":"http://snomed.info/sct","code":"z"}']],
    )
    const removed = diff({ coding: codes }, { coding: codes.filter((c) => c.code !== "c") })
    assert.deepStrictEqual(
      removed.map((f) => [f.path, f.source, f.target]),
      [["coding[2]", '{"system":"http://loinc.org","code":"c"}', undefined]],
    )
    // changed in place, with one removed before it: the change is shown inside the element
    const changed = diff({ given: ["Ann", "Bo", "Cy"] }, { given: ["Bo", "Cyd"] })
    assert.deepStrictEqual(
      changed.map((f) => [f.path, f.source, f.target]),
      [
        ["given[0]", '"Ann"', undefined],
        ["given[2]", '"Cy"', '"Cyd"'],
      ],
    )
    // arrays too large to align are compared position by position
    const big = Array.from({ length: 600 }, (_, i) => i)
    assert.strictEqual(diff({ v: big }, { v: [-1, ...big] }, 1000).length, 601)
  })

  it("a changed payload (base64) shows as decoded text, or as sizes and hashes, not as base64", () => {
    const b64 = (text: string | Buffer) => Buffer.from(text).toString("base64")
    const note = `${"Patient seen for a routine visit. ".repeat(5)}Chief complaint: Cough.\nPlan: rest.`
    const [text] = diff(
      { content: [{ attachment: { contentType: "text/plain", data: b64(note) } }] },
      { content: [{ attachment: { contentType: "text/plain", data: b64(note.replace("Cough", "Fever")) } }] },
    )
    assert.strictEqual(text?.path, "content[0].attachment.data")
    assert.include(text?.source, "text (decoded): ")
    assert.include(text?.source, "Chief complaint: Cough.")
    assert.include(text?.target, "Chief complaint: Fever.")
    assert.isAtMost(text?.source?.length ?? 0, 120)
    const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16, 0x4a, 0x46, 0x49, 0x46, 0, 1])
    const [bytes] = diff({ data: b64(jpeg) }, { data: b64(Buffer.concat([jpeg, Buffer.from([0])])) })
    assert.match(bytes?.source ?? "", /^12 bytes, sha256 [0-9a-f]{16}…$/)
    assert.match(bytes?.target ?? "", /^13 bytes, sha256 [0-9a-f]{16}…$/)
    // a field named data that is no base64: shown as it is; SampledData.data is never taken for a payload
    const [plain] = diff({ data: "not base64!" }, { data: "other" })
    assert.strictEqual(plain?.source, '"not base64!"')
    const [sampled] = diff({ valueSampledData: { data: "1234" } }, { valueSampledData: { data: "1235" } })
    assert.deepStrictEqual([sampled?.source, sampled?.target], ['"1234"', '"1235"'])
  })

  it("a long text shows where it differs, not its beginning alone; texts that read the same show their escapes", () => {
    const note = `${"Patient seen for a routine visit. ".repeat(10)}Dose: 5 mg daily.`
    const [late] = diff({ note }, { note: note.replace("5 mg", "50 mg") })
    assert.include(late?.source, "Dose: 5 mg daily.")
    assert.include(late?.target, "Dose: 50 mg daily.")
    assert.isAtMost(late?.source?.length ?? 0, 120)
    assert.isTrue(late?.source?.startsWith("…"))
    // é as one code point (NFC) against e + a combining accent (NFD)
    const [nfd] = diff({ family: "Rub\u00e9n" }, { family: "Rube\u0301n" })
    assert.strictEqual(nfd?.source, '"Rub\\u00e9n"')
    assert.strictEqual(nfd?.target, '"Rube\\u0301n"')
  })
})

describe("canonicalize a Bundle kept as a resource", () => {
  it("compares references among its own entries as written, on both sides; the others through the id map", () => {
    const uuid = "0c9e5b2e-1111-2222-3333-444455556666"
    const bundle = (subject: string, author: string) =>
      ({
        resourceType: "Bundle",
        id: "doc1",
        type: "document",
        entry: [
          {
            fullUrl: "urn:uuid:aaaa0000-0000-0000-0000-000000000001",
            resource: {
              resourceType: "Composition",
              subject: { reference: subject },
              author: [{ reference: author }],
            },
          },
          { fullUrl: `urn:uuid:${uuid}`, resource: { resourceType: "Patient" } },
        ],
      }) as unknown as Resource
    const source = canonicalize(bundle(`urn:uuid:${uuid}`, "Practitioner/9"), {
      mapKey: (k) => (k === "Practitioner/9" ? "Practitioner/t9" : `mapped:${k}`),
      resolveUrn: (u) => `Patient/${u}`,
    })
    const target = canonicalize(bundle(`urn:uuid:${uuid}`, "Practitioner/t9"), {
      transactionOnly: "unresolvable",
    })
    assert.deepStrictEqual(source.value, target.value)
    // a target that rewrote the document's own reference differs
    const rewritten = canonicalize(bundle(`Patient/${uuid}`, "Practitioner/t9"), {
      transactionOnly: "unresolvable",
    })
    assert.notDeepEqual(source.value, rewritten.value)
  })
})
