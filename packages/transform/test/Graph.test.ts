import { describe, expect, it } from "@effect/vitest"
import type { Resource } from "@ferry/core/Ids"
import { references } from "@ferry/core/Walker"
import {
  components,
  DeferredEdges,
  dependenciesOf,
  fromResources,
  GraphBuilder,
  isCyclic,
  members,
  referenceCandidates,
} from "../src/Graph.js"
import { IdentifierIndex } from "../src/IdentifierIndex.js"
import { IdMap } from "../src/IdMap.js"
import { applyMeta, rewriteResource } from "../src/Rewrite.js"
import { cycleResources, syntheaPatientSet } from "./data.js"

const keyOf = (r: Resource) => `${r.resourceType}/${r.id}`
const registered = (rs: ReadonlyArray<Resource>): IdMap => {
  const map = IdMap.empty()
  for (const r of rs) map.register(keyOf(r))
  return map
}

describe("Graph", () => {
  it("puts an Encounter ↔ Condition cycle in one component, after its dependencies", () => {
    const graph = fromResources(cycleResources, { idMap: registered(cycleResources) })
    expect(graph.size).toBe(4)
    expect(graph.edgeCount).toBe(6)
    expect(graph.droppedEdges).toBe(1) // Organization/outside is not in the load set
    const comps = components(graph)
    expect(comps.count).toBe(3)
    const keysOf = (c: number) => Array.from(members(comps, c), (v) => graph.keys[v]).sort()
    expect(keysOf(0)).toEqual(["Patient/p"])
    expect(keysOf(1)).toEqual(["Condition/c", "Encounter/e"])
    expect(keysOf(2)).toEqual(["Observation/o"])
    expect(isCyclic(comps, 1)).toBe(true)
    expect(isCyclic(comps, 0)).toBe(false)
    expect(Array.from(comps.level)).toEqual([0, 1, 2])
  })

  it("finds Patient.link cycles and ignores self-references and duplicate edges", () => {
    const b = new GraphBuilder()
    for (const k of ["Patient/a", "Patient/b", "Patient/c", "Patient/d"]) b.addNode(k, 10)
    expect(b.addNode("Patient/a", 20)).toBe(0)
    b.addEdges("Patient/a", ["Patient/b", "Patient/b", "Patient/a"])
    b.addEdges("Patient/b", ["Patient/c"])
    b.addEdges("Patient/c", ["Patient/a", "Patient/zzz"])
    b.addEdges("Patient/d", ["Patient/c"])
    b.addEdges("Patient/unknown", ["Patient/a"])
    const g = b.build()
    expect(g.edgeCount).toBe(4)
    expect(g.droppedEdges).toBe(2)
    expect(Array.from(g.bytes)).toEqual([20, 10, 10, 10])
    expect(Array.from(g.dependencies(0))).toEqual([1])
    const comps = components(g)
    expect(comps.count).toBe(2)
    expect(comps.componentOf[0]).toBe(comps.componentOf[1])
    expect(comps.componentOf[1]).toBe(comps.componentOf[2])
    expect(comps.componentOf[3]).toBe(1)
    expect(Array.from(comps.level)).toEqual([0, 1])
  })

  it("handles a 200k-long dependency chain without recursion", () => {
    const n = 200_000
    const b = new GraphBuilder()
    for (let i = 0; i < n; i++) b.addNode(`Observation/o${i}`)
    for (let i = 0; i < n - 1; i++) b.addEdge(i, i + 1)
    const comps = components(b.build())
    expect(comps.count).toBe(n)
    expect(comps.componentOf[n - 1]).toBe(0)
    expect(comps.componentOf[0]).toBe(n - 1)
    expect(comps.level[n - 1]).toBe(n - 1)
  })

  it("orders a full Synthea patient so every referenced resource comes first or in the same component", () => {
    const resources = syntheaPatientSet()
    const ctx = { idMap: registered(resources) }
    const graph = fromResources(resources, ctx)
    expect(graph.size).toBe(resources.length)
    // the hospital and practitioner Bundles complete the set: nothing points outside it
    expect(graph.droppedEdges).toBe(0)
    let expectedEdges = 0
    for (const r of resources) expectedEdges += dependenciesOf(r, ctx).length
    expect(graph.edgeCount).toBe(expectedEdges)
    expect(expectedEdges).toBeGreaterThan(300)

    const comps = components(graph)
    const position = new Int32Array(graph.size)
    let pos = 0
    for (let c = 0; c < comps.count; c++) for (const v of members(comps, c)) position[v] = pos++
    expect(pos).toBe(graph.size)
    let checked = 0
    for (let v = 0; v < graph.size; v++) {
      for (const d of graph.dependencies(v)) {
        const same = comps.componentOf[d] === comps.componentOf[v]
        expect(same || position[d]! < position[v]!).toBe(true)
        if (!same)
          expect(comps.level[comps.componentOf[d]!]!).toBeLessThan(comps.level[comps.componentOf[v]!]!)
        checked++
      }
    }
    expect(checked).toBe(expectedEdges)
    const patient = graph.nodeOf("Patient/4026988c-ab06-4635-8c53-86cbad7b1c56")!
    const levelOf = (v: number) => comps.level[comps.componentOf[v]!]!
    const encounters = graph.keys.flatMap((k, v) => (k.startsWith("Encounter/") ? [v] : []))
    expect(encounters.length).toBe(9)
    for (const e of encounters) expect(levelOf(e)).toBeGreaterThan(levelOf(patient))
    // Synthea writes no reference cycles: every component is a single resource
    expect(comps.count).toBe(graph.size)
  })

  it("collects dependencies from every reference form and from Binary attachment URLs", () => {
    const idMap = IdMap.empty()
    for (const k of ["Patient/p", "Binary/b", "Binary/b2", "Practitioner/x", "Encounter/1234"])
      idMap.register(k)
    const identifiers = IdentifierIndex.build([
      { resourceType: "Practitioner", id: "x", identifier: [{ system: "urn:npi", value: "1" }] },
    ])
    const doc: Resource = {
      resourceType: "DocumentReference",
      id: "d",
      subject: { reference: "https://src.example/fhir/Patient/p" },
      author: [{ reference: "Practitioner?identifier=urn:npi|1" }, { reference: "#c" }],
      context: {
        encounter: [{ reference: "urn:uuid:1234" }],
        related: [{ reference: "DocumentReference/d" }],
      },
      relatesTo: [{ target: { reference: "https://other.example/DocumentReference/9" } }],
      content: [
        { attachment: { contentType: "application/pdf", url: "Binary/b" } },
        { attachment: { contentType: "application/pdf", url: "https://src.example/fhir/Binary/b2" } },
      ],
      meta: { profile: ["http://hl7.org/fhir/StructureDefinition/DocumentReference"] },
    }
    expect(
      [...dependenciesOf(doc, { idMap, identifiers, sourceBase: "https://src.example/fhir" })].sort(),
    ).toEqual(["Binary/b", "Binary/b2", "Encounter/1234", "Patient/p", "Practitioner/x"])
    // the candidates: every literal reference but contained and canonicals, and the attachment URLs
    const candidates: Array<string> = []
    referenceCandidates(doc, (raw) => candidates.push(raw))
    expect(candidates.sort()).toEqual(
      [
        "Binary/b",
        "DocumentReference/d",
        "Practitioner?identifier=urn:npi|1",
        "https://other.example/DocumentReference/9",
        "https://src.example/fhir/Binary/b2",
        "https://src.example/fhir/Patient/p",
        "urn:uuid:1234",
      ].sort(),
    )
  })

  it("DeferredEdges.verbatim: only nodes whose references are all their own plain Type/id, and no attachment URL", () => {
    const resources: ReadonlyArray<Resource> = [
      { resourceType: "Patient", id: "p" },
      { resourceType: "Encounter", id: "e", subject: { reference: "Patient/p" } },
      { resourceType: "Condition", id: "c", subject: { reference: "urn:uuid:p" } },
      { resourceType: "Observation", id: "o", subject: { reference: "https://src.example/fhir/Patient/p" } },
      { resourceType: "Media", id: "m", content: { contentType: "image/png", url: "Binary/b" } },
      { resourceType: "Binary", id: "b" },
      { resourceType: "Procedure", id: "x", subject: { reference: "Patient/p/_history/2" } },
      { resourceType: "Basic", id: "q", subject: { reference: "Patient?identifier=urn:s|1" } },
      { resourceType: "Basic", id: "d", subject: { reference: "Patient/outside" }, contained: [] },
      { resourceType: "Goal", id: "g", subject: { reference: "#c1" }, meta: { profile: ["http://x/y"] } },
    ]
    const b = new GraphBuilder()
    const deferred = new DeferredEdges()
    for (const r of resources) {
      const node = b.addNode(keyOf(r))
      referenceCandidates(r, (raw, attachment) => deferred.add(node, raw, attachment))
    }
    deferred.addTo(b, { idMap: registered(resources), sourceBase: "https://src.example/fhir" })
    const verbatim = resources.filter((r) => deferred.verbatim(b.nodeOf(keyOf(r))!)).map(keyOf)
    expect(verbatim).toEqual(["Patient/p", "Encounter/e", "Binary/b", "Basic/d", "Goal/g"])
  })

  it("DeferredEdges.addTo with `missing`: references to keys neither in this builder nor known elsewhere, attachment URLs never", () => {
    const earlier: ReadonlyArray<Resource> = [{ resourceType: "Practitioner", id: "dr" }]
    const resources: ReadonlyArray<Resource> = [
      { resourceType: "Patient", id: "p", generalPractitioner: [{ reference: "Practitioner/dr" }] },
      { resourceType: "Encounter", id: "e", subject: { reference: "Patient/p" } },
      { resourceType: "Condition", id: "c", encounter: { reference: "Encounter/gone" } },
      { resourceType: "Observation", id: "o", encounter: { reference: "Encounter/gone" } },
      { resourceType: "Media", id: "m", content: { contentType: "image/png", url: "Binary/absent" } },
      { resourceType: "Goal", id: "g", subject: { reference: "https://elsewhere.example/fhir/Patient/x" } },
    ]
    const b = new GraphBuilder()
    const deferred = new DeferredEdges()
    for (const r of resources) {
      const node = b.addNode(keyOf(r))
      referenceCandidates(r, (raw, attachment) => deferred.add(node, raw, attachment))
    }
    const idMap = registered([...earlier, ...resources])
    const found: Array<string> = []
    deferred.addTo(
      b,
      { idMap, sourceBase: "https://src.example/fhir" },
      { isKnown: (k) => idMap.isKnown(k), found: (from, raw) => found.push(`${b.keyOf(from)} → ${raw}`) },
    )
    // Practitioner/dr is in an earlier segment (known), the Binary is an attachment URL, the Goal's is external
    expect(found).toEqual(["Condition/c → Encounter/gone", "Observation/o → Encounter/gone"])
  })

  it("a verbatim resource, rewritten with an identity id map, changes only in meta", () => {
    // the patient set with every reference made relative (as an export of a server gives them)
    const raw = syntheaPatientSet()
    const idMap = IdMap.identity()
    for (const r of raw) idMap.register(keyOf(r))
    const meta = { provenanceTag: true }
    const resources = raw.map((r) => rewriteResource(r, { idMap }).resource)
    const b = new GraphBuilder()
    const deferred = new DeferredEdges()
    for (const r of [...raw, ...resources]) {
      const node = b.addNode(keyOf(r))
      referenceCandidates(r, (s, attachment) => deferred.add(node, s, attachment))
    }
    deferred.addTo(b, { idMap })
    // the original Synthea Bundles' urn:uuid references are not verbatim
    expect(raw.some((r) => references(r).some((s) => s.raw?.startsWith("urn:uuid:")))).toBe(true)
    const fresh = new GraphBuilder()
    const clean = new DeferredEdges()
    for (const r of resources) {
      const node = fresh.addNode(keyOf(r))
      referenceCandidates(r, (s, attachment) => clean.add(node, s, attachment))
    }
    clean.addTo(fresh, { idMap })
    let checked = 0
    for (const r of resources) {
      if (!clean.verbatim(fresh.nodeOf(keyOf(r))!)) continue
      expect(rewriteResource(r, { idMap, meta }).resource).toEqual(applyMeta(r, meta))
      checked++
    }
    expect(checked).toBeGreaterThan(resources.length / 2)
    const withUrns = raw.filter((r) => references(r).some((s) => s.raw?.startsWith("urn:uuid:")))
    for (const r of withUrns) expect(deferred.verbatim(b.nodeOf(keyOf(r))!)).toBe(false)
  })

  it("DeferredEdges.closedOver: resolvable once the types named in the references are complete", () => {
    const of = (...raws: ReadonlyArray<string>) => {
      const d = new DeferredEdges()
      for (const r of raws) d.add(0, r)
      return d
    }
    const base = "https://src.example/fhir"
    const done =
      (...types: ReadonlyArray<string>) =>
      (t: string) =>
        types.includes(t)
    expect(of().closedOver(done())).toBe(true)
    expect(of("Patient/p", "Practitioner?identifier=s|1").closedOver(done("Patient", "Practitioner"))).toBe(
      true,
    )
    expect(of("Patient/p", "Practitioner?identifier=s|1").closedOver(done("Patient"))).toBe(false)
    expect(of(`${base}/Patient/p`).closedOver(done(), base)).toBe(false)
    expect(of(`${base}/Patient/p/_history/1`).closedOver(done(), base)).toBe(false)
    expect(of(`${base}/Patient/p`).closedOver(done("Patient"), base)).toBe(true)
    // other servers, canonicals-looking and unparseable strings designate no source resource
    expect(
      of("https://other.example/fhir/Patient/p", "./attachments/x.bin", "urn:oid:1.2").closedOver(
        done(),
        base,
      ),
    ).toBe(true)
    // urn:uuid names no type: only when everything is known
    const urn = "urn:uuid:0b3c5a6e-4b1b-4cf5-9a4c-1e5f1c2d3e4f"
    expect(of(urn).closedOver(() => true)).toBe(false)
    expect(of(urn).waitsOnUrns()).toBe(true)
    expect(of("URN:UUID:0b3c5a6e-4b1b-4cf5-9a4c-1e5f1c2d3e4f").waitsOnUrns()).toBe(true)
    expect(of("Patient/p", "urn:oid:1.2").waitsOnUrns()).toBe(false)
    // not a UUID: designates nothing (closedOver lets it through), so nothing to read ahead for
    expect(of("urn:uuid:not-a-uuid").waitsOnUrns()).toBe(false)
    expect(of("urn:uuid:not-a-uuid").closedOver(done())).toBe(true)
    // …or with a registry that knows every resource: the urn then counts as its resource's type
    const everything = IdMap.empty()
    everything.register("Encounter/0b3c5a6e-4b1b-4cf5-9a4c-1e5f1c2d3e4f")
    everything.register("Patient/11111111-2222-3333-4444-555555555555")
    everything.register("Encounter/11111111-2222-3333-4444-555555555555")
    expect(of(urn).closedOver(done("Encounter"), undefined, everything)).toBe(true)
    expect(of(urn).closedOver(done("Patient"), undefined, everything)).toBe(false)
    // resolved to nothing (no such id, or ambiguous) is final once everything is known: no dependency
    expect(
      of("urn:uuid:99999999-2222-3333-4444-555555555555").closedOver(done(), undefined, everything),
    ).toBe(true)
    expect(
      of("urn:uuid:11111111-2222-3333-4444-555555555555").closedOver(done(), undefined, everything),
    ).toBe(true)
  })

  it("DeferredEdges, resolved after the nodes, gives the graph of dependenciesOf", () => {
    const resources = [...syntheaPatientSet(), ...cycleResources]
    const ctx = { idMap: registered(resources) }
    const expected = fromResources(resources, ctx, () => 1)
    // one pass: nodes and candidate strings together, resolution afterwards
    const b = new GraphBuilder()
    const deferred = new DeferredEdges()
    for (const r of resources) {
      const node = b.addNode(keyOf(r), 1)
      referenceCandidates(r, (raw) => deferred.add(node, raw))
    }
    expect(deferred.distinct).toBeLessThan(expected.edgeCount)
    deferred.addTo(b, ctx)
    const got = b.build()
    expect(got.keys).toEqual(expected.keys)
    expect(Array.from(got.offsets)).toEqual(Array.from(expected.offsets))
    const sorted = (g: typeof got) =>
      g.keys.map((_, v) => Array.from(g.dependencies(v)).sort((x, y) => x - y))
    expect(sorted(got)).toEqual(sorted(expected))
    expect(got.edgeCount).toBeGreaterThan(300)
    // Organization/outside (Encounter/e's serviceProvider) is outside the load set
    expect(got.droppedEdges).toBe(1)
    expect(components(got).count).toBe(components(expected).count)
  })
})
