/**
 * The migration scheduler's pure parts: which landed files a wave may take, and which types a file depends on.
 * (The migration itself runs end to end in test/migrate.test.ts.)
 */
import * as NFS from "node:fs"
import * as Path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import {
  addDependencies,
  addDependenciesOfLines,
  addDependenciesOfText,
  dependencyScanner,
  importable,
} from "../src/Migrate.js"

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

  /** `text` fed to a dependencyScanner in chunks of `size` bytes, each chunk's buffer reused (as a file read is). */
  const scanned = (text: string, size: number, maxLineBytes?: number) => {
    const out = deps([])
    const scanner = dependencyScanner("http://src.example/fhir", out, maxLineBytes)
    const all = Buffer.from(text)
    const reused = Buffer.alloc(size)
    for (let i = 0; i < all.length; i += size) {
      const n = all.copy(reused, 0, i, i + size)
      scanner.push(reused.subarray(0, n))
      reused.fill(0x22) // a quote everywhere: what the scanner kept without copying would show
    }
    scanner.end()
    return out
  }

  it("dependencies read off the bytes of whole lines, cut into chunks anywhere: those of the text", () => {
    const base = "http://src.example/fhir"
    const lines = [
      '{"resourceType":"Observation","subject":{"reference":"Patient/p1"},"note":[{"text":"é ✓ 😀"}]}',
      '{"resourceType":"Observation","subject":{"refer\\u0065nce":"Encounter/1"}}',
      '{"resourceType":"DocumentReference","content":[{"attachment":{"url":"Binary/b1"}}]}',
      `{"resourceType":"Observation","performer":[{"reference":"Practitioner?identifier=x|1"}],"focus":[{"reference" : "${base}/Location/l"}]}`,
      '{"resourceType":"Observation","derivedFrom":[{"reference":"urn:uuid:6f2b7c4e-0d7a-4c1e-9a57-2f1b0c3d4e5f"}]}',
      '{"resourceType":"Observation","subject":{"reference":"Group/g\\"1"}}',
    ]
    for (let k = 0; k < lines.length; k++) {
      // each line alone, then with the others (a `\u` line first, in the middle, last)
      for (const group of [[lines[k]!], [...lines.slice(k), ...lines.slice(0, k)]]) {
        const expected = deps([])
        for (const l of group) addDependenciesOfText(l, base, expected)
        const text = `${group.join("\n")}\n`
        const whole = deps([])
        addDependenciesOfLines(Buffer.from(text), base, whole)
        expect(whole).toEqual(expected)
        for (const size of [1, 2, 3, 7, 64, 4096]) expect(scanned(text, size)).toEqual(expected)
        // no newline after the last line, CRLF line ends
        expect(scanned(group.join("\n"), 5)).toEqual(expected)
        expect(scanned(`${group.join("\r\n")}\r\n`, 11)).toEqual(expected)
      }
    }
    expect(Array.from(scanned(`${lines.join("\n")}\n`, 13).types).sort()).toEqual([
      "Binary",
      "Encounter",
      "Location",
      "Patient",
    ])
  })

  it("a line longer than the scanner keeps sends its file to the final wave; the lines after it are still read", () => {
    const long = `{"resourceType":"Binary","data":"${"A".repeat(5000)}","x":{"reference":"Patient/p"}}`
    const after = '{"resourceType":"Observation","subject":{"reference":"Encounter/e"}}'
    const out = scanned(`${long}\n${after}\n`, 100, 1000)
    expect(out.any).toBe(true)
    expect(Array.from(out.types)).toEqual(["Encounter"])
    // within the limit: read as usual
    expect(scanned(`${long}\n${after}\n`, 100, 10_000)).toEqual(deps(["Patient", "Encounter"]))
    // over the limit only once its end arrives (no chunk without a newline went over it)
    const crossing = scanned(`${long}\n${after}\n`, 4000, 5000)
    expect(crossing.any).toBe(true)
    expect(Array.from(crossing.types)).toEqual(["Encounter"])
  })

  it("a file that starts with a byte-order mark: read as without it (as the line reader drops it)", () => {
    const escaped = '{"resourceType":"Observation","subject":{"refer\\u0065nce":"Patient/p"}}'
    const plain = '{"resourceType":"Observation","subject":{"reference":"Encounter/e"}}'
    for (const first of [escaped, plain]) {
      const text = `${first}\n${plain}\n`
      for (const size of [1, 2, 5, 4096]) expect(scanned(`\uFEFF${text}`, size)).toEqual(scanned(text, 4096))
    }
    expect(scanned(`\uFEFF${escaped}\n`, 3)).toEqual(deps(["Patient"]))
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
      // and off its bytes, cut into chunks at a place that moves from line to line
      const bytes = deps([])
      const scanner = dependencyScanner(base, bytes)
      const all = Buffer.from(`${line}\n`)
      const size = 1 + (withRefs % 997)
      for (let i = 0; i < all.length; i += size) scanner.push(all.subarray(i, i + size))
      scanner.end()
      expect(bytes).toEqual(parsed)
      if (parsed.types.size + parsed.conditional.size > 0 || parsed.any) withRefs++
    }
    expect(withRefs).toBeGreaterThan(30_000)
  })
})
