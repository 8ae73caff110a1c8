/**
 * The migration scheduler's pure parts: which landed files a wave may take, and which types a file depends on.
 * (The migration itself runs end to end in test/migrate.test.ts.)
 */
import * as NFS from "node:fs"
import * as Path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { addDependencies, addDependenciesOfText, importable } from "../src/Migrate.js"

const shared = (name: string) => new URL(`../../../../shared/data/${name}`, import.meta.url).pathname

describe("Migrate scheduler (pure)", () => {
  const deps = (types: Array<string>, extra: { conditional?: Array<string>; any?: boolean } = {}) => ({
    types: new Set(types),
    conditional: new Set(extra.conditional ?? []),
    any: extra.any ?? false,
  })
  const planned = new Map([
    ["Patient", ["data/Patient.000.ndjson"]],
    ["Encounter", ["data/Encounter.000.ndjson", "data/Encounter.001.ndjson"]],
    ["Observation", ["data/Observation.000.ndjson"]],
    ["Organization", ["data/Organization.000.ndjson"]],
    ["Practitioner", ["data/Practitioner.000.ndjson"]],
  ])

  it("a file waits until every planned file of each type it references is imported or in the wave", () => {
    const wave = importable(
      [
        { path: "data/Patient.000.ndjson", deps: deps(["Organization"]) },
        { path: "data/Organization.000.ndjson", deps: deps([]) },
        // Encounter.001 has not landed: Observation (→ Encounter) must wait
        { path: "data/Encounter.000.ndjson", deps: deps(["Patient"]) },
        { path: "data/Observation.000.ndjson", deps: deps(["Patient", "Encounter"]) },
      ],
      planned,
      new Set(),
    )
    expect(wave.sort()).toEqual(
      ["data/Encounter.000.ndjson", "data/Organization.000.ndjson", "data/Patient.000.ndjson"].sort(),
    )
  })

  it("imported files satisfy dependencies; a type cycle goes together once all of it has landed", () => {
    const cycle = [
      { path: "data/Organization.000.ndjson", deps: deps(["Practitioner"]) },
      { path: "data/Practitioner.000.ndjson", deps: deps(["Organization"]) },
    ]
    expect(importable(cycle, planned, new Set()).sort()).toEqual(cycle.map((c) => c.path).sort())
    expect(importable(cycle.slice(0, 1), planned, new Set())).toEqual([])
    expect(importable(cycle.slice(0, 1), planned, new Set(["data/Practitioner.000.ndjson"]))).toEqual([
      "data/Organization.000.ndjson",
    ])
    // a reference to a type the export does not hold constrains nothing
    expect(importable([{ path: "x", deps: deps(["Medication"]) }], planned, new Set())).toEqual(["x"])
  })

  it("conditional and urn:uuid references wait for the final wave", () => {
    expect(
      importable(
        [
          { path: "a", deps: deps([], { conditional: ["Patient"] }) },
          { path: "b", deps: deps([], { any: true }) },
        ],
        planned,
        new Set(["data/Patient.000.ndjson"]),
      ),
    ).toEqual([])
  })

  it("dependencies: relative, same-server absolute, versioned, conditional, urn:uuid, Binary attachments", () => {
    const base = "http://src.example/fhir"
    const d = deps([])
    addDependencies(
      {
        resourceType: "Observation",
        id: "o1",
        subject: { reference: "Patient/p1" },
        encounter: { reference: `${base}/Encounter/e1` },
        performer: [
          { reference: "http://elsewhere.example/fhir/Practitioner/x" },
          { reference: "Organization/org/_history/2" },
          { reference: "Practitioner?identifier=http://npi|123" },
        ],
        focus: [{ reference: "urn:uuid:6f2b7c4e-0d7a-4c1e-9a57-2f1b0c3d4e5f" }, { reference: "#c1" }],
        meta: { profile: ["http://hl7.org/fhir/StructureDefinition/vitalsigns"] },
        derivedFrom: [{ identifier: { system: "s", value: "v" } }],
      },
      base,
      d,
    )
    expect(Array.from(d.types).sort()).toEqual(["Encounter", "Organization", "Patient"])
    expect(Array.from(d.conditional)).toEqual(["Practitioner"])
    expect(d.any).toBe(true)
    const a = deps([])
    addDependencies(
      {
        resourceType: "DocumentReference",
        id: "d1",
        content: [{ attachment: { contentType: "application/pdf", url: `${base}/Binary/b1` } }],
      },
      base,
      a,
    )
    expect(Array.from(a.types)).toEqual(["Binary"])
  })
  it("dependencies read off the line's text: those of the parsed resource (escapes, spaces, contained, extensions)", () => {
    const base = "http://src.example/fhir"
    const resource = {
      resourceType: "Observation",
      id: "o1",
      subject: { reference: "Patient/p1", display: 'a "reference": "Group/g" in a string' },
      encounter: { reference: `${base}/Encounter/e1` },
      performer: [{ reference: 'Practitioner?identifier=http://npi|1"23' }],
      extension: [{ url: "http://x/ext", valueReference: { reference: "Location/l1" } }],
      contained: [{ resourceType: "Device", id: "d", owner: { reference: "Organization/o" } }],
      note: [{ text: "see reference: Medication/m" }],
      derivedFrom: [{ reference: "urn:uuid:6f2b7c4e-0d7a-4c1e-9a57-2f1b0c3d4e5f" }],
      focus: [{ reference: "Basic/b1" }],
    }
    const parsed = deps([])
    addDependencies(resource, base, parsed)
    for (const text of [JSON.stringify(resource), JSON.stringify(resource, null, 2)]) {
      const scanned = deps([])
      addDependenciesOfText(text, base, scanned)
      expect(scanned).toEqual(parsed)
    }
    expect(Array.from(parsed.types).sort()).toEqual([
      "Basic",
      "Encounter",
      "Location",
      "Organization",
      "Patient",
    ])
    // a key spelled with an escape is still a key: such a line is parsed
    const spelled = deps([])
    addDependenciesOfText(
      '{"resourceType":"Observation","subject":{"refer\\u0065nce":"Patient/1"}}',
      base,
      spelled,
    )
    expect(Array.from(spelled.types)).toEqual(["Patient"])
    // a string whose escape does not decode (not in a checked archive): the final wave, not a crash
    const broken = deps([])
    addDependenciesOfText('{"subject":{"reference":"Patient/\\x"}}', base, broken)
    expect(broken.any).toBe(true)
  })

  it("dependencies read off the text equal the parsed ones for every resource of the shared data", () => {
    const lines: Array<string> = []
    const sample = shared("sample-bulk-10-patients")
    for (const f of NFS.readdirSync(sample).filter((n) => n.endsWith(".ndjson")))
      for (const l of NFS.readFileSync(Path.join(sample, f), "utf8").split("\n")) if (l !== "") lines.push(l)
    const bundles = shared("synthea-bundles")
    for (const f of NFS.readdirSync(bundles).filter((n) => n.endsWith(".json"))) {
      const b = JSON.parse(NFS.readFileSync(Path.join(bundles, f), "utf8")) as {
        entry?: Array<{ resource?: unknown }>
      }
      for (const e of b.entry ?? []) if (e.resource !== undefined) lines.push(JSON.stringify(e.resource))
    }
    expect(lines.length).toBeGreaterThan(38_000)
    const base = "http://src.example/fhir"
    let withRefs = 0
    for (const line of lines) {
      const parsed = deps([])
      const scanned = deps([])
      addDependencies(JSON.parse(line), base, parsed)
      addDependenciesOfText(line, base, scanned)
      expect(scanned).toEqual(parsed)
      if (parsed.types.size + parsed.conditional.size > 0 || parsed.any) withRefs++
    }
    expect(withRefs).toBeGreaterThan(30_000)
  })
})
