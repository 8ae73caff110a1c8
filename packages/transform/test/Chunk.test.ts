import { assert, describe, expect, it } from "@effect/vitest"
import { BufferPool } from "@ferry/core/BufferPool"
import type { Bundle, BundleEntry } from "@ferry/core/Bundle"
import type { Resource } from "@ferry/core/Ids"
import { references } from "@ferry/core/Walker"
import { Either } from "effect"
import {
  type Chunk,
  ifNoneExistFor,
  mapFromResponse,
  plan,
  readResponse,
  TransactionWriter,
  toTransaction,
} from "../src/Chunk.js"
import { components, fromResources } from "../src/Graph.js"
import { IdMap } from "../src/IdMap.js"
import { provenanceSystem } from "../src/Rewrite.js"
import { cycleResources, frozen, syntheaPatientSet } from "./data.js"

const keyOf = (r: Resource) => `${r.resourceType}/${r.id}`
const registered = (rs: ReadonlyArray<Resource>): IdMap => {
  const map = IdMap.empty()
  for (const r of rs) map.register(keyOf(r))
  return map
}
const utf8 = (bytes: Uint8Array) => new TextDecoder("utf-8", { fatal: true }).decode(bytes)
const size = (r: Resource) => Buffer.byteLength(JSON.stringify(r))

const planOf = (rs: ReadonlyArray<Resource>, maxEntries: number, maxBytes: number, byLevel = true) => {
  const graph = fromResources(rs, { idMap: registered(rs) })
  const comps = components(graph)
  return { graph, comps, chunks: Array.from(plan(graph, comps, { maxEntries, maxBytes, byLevel })) }
}

/** A fake transaction-response: every entry created with a new id. */
const respond = (bundle: Bundle, next: () => string, status = "201 Created"): Bundle => ({
  resourceType: "Bundle",
  type: "transaction-response",
  entry: (bundle.entry ?? []).map(
    (e): BundleEntry => ({
      response: { status, location: `${e.request!.url.split("/")[0]}/${next()}/_history/1` },
    }),
  ),
})

describe("plan", () => {
  for (const byLevel of [true, false]) {
    it(`respects entry and byte limits and dependency order on a Synthea patient (byLevel ${byLevel})`, () => {
      const resources = syntheaPatientSet()
      const maxEntries = 25
      const maxBytes = 60_000
      const { graph, chunks } = planOf(resources, maxEntries, maxBytes, byLevel)
      const sizes = new Map(resources.map((r) => [keyOf(r), size(r)]))
      const chunkOf = new Map<string, number>()
      for (const c of chunks) for (const k of c.keys) chunkOf.set(k, c.index)
      // every resource exactly once
      expect(chunks.reduce((n, c) => n + c.keys.length, 0)).toBe(resources.length)
      expect(chunkOf.size).toBe(resources.length)
      const oversizeExpected = resources.filter((r) => size(r) + 160 > maxBytes).length
      expect(chunks.filter((c) => c.oversize).length).toBe(oversizeExpected)
      for (const c of chunks) {
        const bytes = c.keys.reduce((n, k) => n + sizes.get(k)! + 160, 0)
        expect(c.bytes).toBe(bytes)
        if (!c.oversize) {
          expect(c.keys.length).toBeLessThanOrEqual(maxEntries)
          expect(bytes).toBeLessThanOrEqual(maxBytes)
        }
        const deps = new Set<number>()
        for (const k of c.keys) {
          const v = graph.nodeOf(k)!
          for (const d of graph.dependencies(v)) {
            const dc = chunkOf.get(graph.keys[d]!)!
            expect(dc).toBeLessThanOrEqual(c.index)
            if (dc !== c.index) deps.add(dc)
          }
        }
        expect(c.dependsOn).toEqual([...deps].sort((a, b) => a - b))
        for (const d of c.dependsOn) expect(chunks[d]!.level).toBeLessThan(c.level)
      }
      expect(chunks.length).toBeGreaterThan(resources.length / maxEntries)
    })
  }

  it("keeps a cycle in one chunk, and flags a component larger than the limits", () => {
    const fits = planOf(cycleResources, 2, 1_000_000).chunks
    expect(fits.map((c) => [...c.keys].sort())).toEqual([
      ["Patient/p"],
      ["Condition/c", "Encounter/e"],
      ["Observation/o"],
    ])
    expect(fits.map((c) => [c.cyclic, c.oversize, c.level])).toEqual([
      [false, false, 0],
      [true, false, 1],
      [false, false, 2],
    ])
    const tooMany = planOf(cycleResources, 1, 1_000_000).chunks
    expect(tooMany.length).toBe(3)
    expect([...tooMany[1]!.keys].sort()).toEqual(["Condition/c", "Encounter/e"])
    expect(tooMany[1]!.oversize).toBe(true)
    expect(tooMany[1]!.cyclic).toBe(true)
    const tooBig = planOf(cycleResources, 100, 400).chunks
    expect(tooBig.find((c) => c.cyclic)!.oversize).toBe(true)
    // a cyclic chunk says where its components lie in its keys (to be sent in smaller Bundles, none cut)
    const together = planOf(cycleResources, 100, 1_000_000, false).chunks
    const cyclic = together.find((c) => c.cyclic)!
    expect(cyclic.groupSizes!.reduce((a, b) => a + b, 0)).toBe(cyclic.keys.length)
    let at = 0
    for (const g of cyclic.groupSizes!) {
      const keys = cyclic.keys.slice(at, at + g)
      if (keys.includes("Encounter/e") || keys.includes("Condition/c"))
        expect([...keys].sort()).toEqual(["Condition/c", "Encounter/e"])
      at += g
    }
    expect(fits.find((c) => !c.cyclic)!.groupSizes).toBeUndefined()
  })

  it("packs independent components together up to the limits", () => {
    const rs: ReadonlyArray<Resource> = Array.from({ length: 10 }, (_, i) => ({
      resourceType: "Organization",
      id: `o${i}`,
    }))
    const chunks: ReadonlyArray<Chunk> = planOf(rs, 4, 1_000_000).chunks
    expect(chunks.map((c) => c.keys.length)).toEqual([4, 4, 2])
    expect(chunks.every((c) => c.level === 0 && c.dependsOn.length === 0)).toBe(true)
  })
})

describe("toTransaction", () => {
  const chunkResources = frozen(
    cycleResources.filter((r) => r.resourceType !== "Patient" && r.resourceType !== "Observation"),
  )
  const idMap = registered(cycleResources)
  idMap.set("Patient/p", "Patient/900")

  it("post mode: conditional creates on the provenance tag and urn:uuid references inside the Bundle", () => {
    let n = 0
    const tx = toTransaction(
      chunkResources,
      "post",
      { idMap },
      { uuid: () => `00000000-0000-4000-8000-00000000000${n++}` },
    )
    expect(tx.bundle.type).toBe("transaction")
    expect(tx.sources).toEqual(["Encounter/e", "Condition/c"])
    expect(tx.reports).toEqual([])
    const [enc, cond] = tx.bundle.entry!
    expect(enc!.fullUrl).toBe("urn:uuid:00000000-0000-4000-8000-000000000000")
    expect(cond!.fullUrl).toBe("urn:uuid:00000000-0000-4000-8000-000000000001")
    expect(enc!.request).toEqual({
      method: "POST",
      url: "Encounter",
      ifNoneExist: "_tag=urn:ferry:source|Encounter/e",
    })
    expect(cond!.request!.ifNoneExist).toBe(ifNoneExistFor("Condition/c"))
    // with the source's origin, the criterion and the tag both name it
    const named = toTransaction(chunkResources, "post", {
      idMap,
      meta: { provenanceOrigin: "0123456789abcdef" },
    })
    expect(named.bundle.entry![0]!.request!.ifNoneExist).toBe(
      "_tag=urn:ferry:source|Encounter/e@0123456789abcdef",
    )
    expect(named.bundle.entry![0]!.resource!.meta).toEqual({
      tag: [{ system: provenanceSystem, code: "Encounter/e@0123456789abcdef" }],
    })
    expect(enc!.resource!.id).toBeUndefined()
    expect(enc!.resource!.meta).toEqual({ tag: [{ system: provenanceSystem, code: "Encounter/e" }] })
    expect(enc!.resource!.diagnosis).toEqual([{ condition: { reference: cond!.fullUrl } }])
    expect(cond!.resource!.encounter).toEqual({ reference: enc!.fullUrl })
    expect(cond!.resource!.subject).toEqual({ reference: "Patient/900" })
  })

  it("post mode reports references to resources neither mapped nor in the Bundle", () => {
    const tx = toTransaction([chunkResources[1]!], "post", { idMap })
    expect(tx.reports).toEqual([
      {
        position: 0,
        source: "Condition/c",
        unresolved: [
          { path: "encounter", reference: "Encounter/e", reason: "NotMapped", key: "Encounter/e" },
        ],
        notes: [],
      },
    ])
  })

  it("put mode: PUT Type/id with the source id, or the id map's renamed id", () => {
    const ids = IdMap.identity()
    ids.set("Encounter/e", "Encounter/src-e")
    const tx = toTransaction(
      chunkResources,
      "put",
      { idMap: ids, meta: { provenanceTag: true } },
      {
        fullUrlBase: "https://target.example/fhir/",
      },
    )
    const [enc, cond] = tx.bundle.entry!
    expect(enc!.request).toEqual({ method: "PUT", url: "Encounter/src-e" })
    expect(enc!.fullUrl).toBe("https://target.example/fhir/Encounter/src-e")
    expect(enc!.resource!.id).toBe("src-e")
    expect(cond!.request).toEqual({ method: "PUT", url: "Condition/c" })
    expect(cond!.resource!.id).toBe("c")
    expect(cond!.resource!.encounter).toEqual({ reference: "Encounter/src-e" })
    expect(cond!.resource!.meta).toEqual({ tag: [{ system: provenanceSystem, code: "Condition/c" }] })
    expect(toTransaction(chunkResources, "put", { idMap: ids }, { type: "batch" }).bundle.type).toBe("batch")
  })
})

describe("TransactionWriter", () => {
  const resources = syntheaPatientSet().map(frozen)
  const idMap = registered(resources)

  for (const mode of ["put", "post"] as const) {
    it(`${mode} mode: the same JSON as toTransaction's Bundle, entry by entry`, () => {
      let a = 0
      let b = 0
      const uuidA = () => `00000000-0000-4000-8000-${String(a++).padStart(12, "0")}`
      const uuidB = () => `00000000-0000-4000-8000-${String(b++).padStart(12, "0")}`
      const ctx = { idMap: mode === "put" ? IdMap.identity() : idMap, meta: { provenanceTag: true } }
      const slice = resources.slice(0, 60)
      const tx = toTransaction(slice, mode, ctx, { uuid: uuidA })
      const writer = new TransactionWriter(slice.map(keyOf), mode, ctx, { uuid: uuidB })
      for (const r of slice) assert(Either.isRight(writer.add(r)))
      const text = writer.finish()
      expect(utf8(text.body)).toBe(JSON.stringify(tx.bundle))
      expect(text.sources).toEqual(tx.sources)
      expect(text.requests).toEqual(tx.requests)
      expect(text.reports).toEqual(tx.reports)
    })
  }

  it("with a BufferPool: the Bundle grows through pooled buffers left dirty by earlier use, same JSON", () => {
    const ctx = { idMap: IdMap.identity(), meta: { provenanceTag: true } }
    const pool = new BufferPool(64 * 1024 * 1024)
    // buffers of every size the writer may ask for, filled with bytes that would show if not written over
    for (let kib = 64; kib <= 8192; kib *= 2) pool.give(pool.take(kib * 1024).fill(0x7b))
    const tx = toTransaction(resources, "put", ctx)
    const bodies: Array<Uint8Array> = []
    for (let round = 0; round < 3; round++) {
      // told 1 byte: the writer starts small and grows (each buffer it leaves is given back)
      const writer = new TransactionWriter(resources.map(keyOf), "put", ctx, { buffers: pool }, 1)
      for (const r of resources) assert(Either.isRight(writer.add(r)))
      const body = writer.finish().body
      expect(utf8(body)).toBe(JSON.stringify(tx.bundle))
      bodies.push(body)
      pool.give(body)
    }
    // the same buffer each round: taken from the pool, not allocated
    expect(bodies[1]!.buffer).toBe(bodies[0]!.buffer)
    expect(bodies[2]!.buffer).toBe(bodies[0]!.buffer)
  })

  it("put mode: verbatim resources go in as their text (meta patched), the others are parsed; same Bundle", () => {
    const plain = frozen(cycleResources)
    const ctx = { idMap: IdMap.identity(), meta: { provenanceTag: true } }
    const verbatim = (k: string) => k !== "Encounter/e"
    const options = { verbatim, fullUrlBase: "https://t.example/fhir" }
    const tx = toTransaction(plain, "put", ctx, options)
    const writer = new TransactionWriter(plain.map(keyOf), "put", ctx, options)
    const taken: Array<boolean> = []
    for (const r of plain) {
      // a number written 1.50 stays 1.50: the text is not re-serialised
      const text = JSON.stringify(r).replace(/}$/, ',"valueDecimal":1.50}')
      const t = writer.addBytes(Buffer.from(text))
      taken.push(t)
      if (!t) assert(Either.isRight(writer.add({ ...r, valueDecimal: 1.5 })))
    }
    expect(taken).toEqual([true, false, true, true])
    const text = writer.finish()
    expect(utf8(text.body)).toContain('"valueDecimal":1.50')
    const withDecimal = toTransaction(
      plain.map((r) => ({ ...r, valueDecimal: 1.5 })),
      "put",
      ctx,
      options,
    )
    expect(JSON.parse(utf8(text.body))).toEqual(withDecimal.bundle)
    expect(text.requests).toEqual(tx.requests)
    // not for post mode, a renamed key, text of another resource, or without the verbatim option
    const renamed = IdMap.identity()
    renamed.set("Observation/o", "Observation/o2")
    expect(
      new TransactionWriter(["Observation/o"], "put", { idMap: renamed }, options).addBytes(
        Buffer.from(JSON.stringify(plain[0])),
      ),
    ).toBe(false)
    expect(
      new TransactionWriter(["Observation/o"], "post", ctx, options).addBytes(
        Buffer.from(JSON.stringify(plain[0])),
      ),
    ).toBe(false)
    expect(
      new TransactionWriter(["Observation/o"], "put", ctx, options).addBytes(
        Buffer.from(JSON.stringify(plain[3])),
      ),
    ).toBe(false)
    expect(
      new TransactionWriter(["Observation/o"], "put", ctx).addBytes(Buffer.from(JSON.stringify(plain[0]))),
    ).toBe(false)
    expect(
      new TransactionWriter([], "put", ctx, options).addBytes(Buffer.from(JSON.stringify(plain[0]))),
    ).toBe(false)
  })

  it("a parsed resource added with its line keeps that line's numbers as written (1.0 stays 1.0)", () => {
    const line =
      '{"resourceType":"Observation","id":"o","valueQuantity":{"value":1.0},"subject":{"reference":"Patient/p"}}'
    const keys = ["Observation/o"]
    const ctx = { idMap: IdMap.identity() }
    const withLine = new TransactionWriter(keys, "put", ctx)
    assert(Either.isRight(withLine.add(JSON.parse(line) as Resource, line)))
    expect(utf8(withLine.finish().body)).toContain('"valueQuantity":{"value":1.0}')
    const without = new TransactionWriter(keys, "put", ctx)
    assert(Either.isRight(without.add(JSON.parse(line) as Resource)))
    expect(utf8(without.finish().body)).toContain('"valueQuantity":{"value":1}')
  })

  it("numbers in meta, and numbers beside a meta member the rewrite drops, stay as the line wrote them", () => {
    const line =
      '{"resourceType":"Patient","id":"pw","meta":{"tag":[{"system":"http://t","code":"x","extension":[{"url":"http://ex/d","valueDecimal":0.10}]}],"extension":[{"url":"http://ex/i","valueInteger64":9007199254740993}]},"extension":[{"url":"http://ex/d","valueDecimal":7.0}]}'
    const keys = ["Patient/pw"]
    const verbatim = { verbatim: () => true }
    // put mode, verbatim: a meta with such numbers is not patched as text; parsed, the resource keeps them all
    const put = new TransactionWriter(
      keys,
      "put",
      { idMap: IdMap.identity(), meta: { provenanceTag: true } },
      verbatim,
    )
    expect(put.addBytes(Buffer.from(line))).toBe(false)
    assert(Either.isRight(put.add(JSON.parse(line) as Resource, line)))
    const body = utf8(put.finish().body)
    for (const n of ['"valueDecimal":0.10', '"valueInteger64":9007199254740993', '"valueDecimal":7.0'])
      expect(body).toContain(n)
    // --drop-meta tag takes the tag's 0.10 away: the numbers left keep their writing
    const drop = { idMap: IdMap.identity(), meta: { tag: "drop", provenanceTag: true } } as const
    const dropped = new TransactionWriter(keys, "put", drop)
    assert(Either.isRight(dropped.add(JSON.parse(line) as Resource, line)))
    const b = utf8(dropped.finish().body)
    expect(b).toContain('"valueInteger64":9007199254740993')
    expect(b).toContain('"valueDecimal":7.0')
    expect(b).not.toContain("0.1")
  })

  it("refuses a resource out of the order of its keys", () => {
    const writer = new TransactionWriter(["Patient/p", "Encounter/e"], "put", { idMap: IdMap.identity() })
    const wrong = writer.add(cycleResources[1]!)
    assert(Either.isLeft(wrong))
    expect(wrong.left.reason).toBe("EntryOrder")
    expect(wrong.left.message).toContain("got Encounter/e, expected Patient/p")
  })

  it("the body is UTF-8: non-ASCII text, added parsed or as bytes, comes out as JSON.stringify gives it", () => {
    const people: ReadonlyArray<Resource> = [
      { resourceType: "Patient", id: "a", name: [{ family: "Núñez", given: ["Zoë"] }] },
      { resourceType: "Patient", id: "b", name: [{ text: "漢字 😀" }], meta: { versionId: "3" } },
    ]
    const keys = people.map(keyOf)
    const options = { verbatim: () => true }
    const expected = JSON.stringify(toTransaction(people, "put", { idMap: IdMap.identity() }, options).bundle)
    const parsed = new TransactionWriter(keys, "put", { idMap: IdMap.identity() }, options)
    for (const r of people) assert(Either.isRight(parsed.add(r)))
    const asText = new TransactionWriter(keys, "put", { idMap: IdMap.identity() }, options)
    for (const r of people) assert(asText.addBytes(Buffer.from(JSON.stringify(r))))
    for (const body of [parsed.finish().body, asText.finish().body]) {
      expect(utf8(body)).toBe(expected)
      expect(body.length).toBe(Buffer.byteLength(expected))
    }
  })

  it("post mode without conditional creates: no ifNoneExist", () => {
    const writer = new TransactionWriter(["Patient/p"], "post", { idMap }, { conditionalCreate: false })
    assert(Either.isRight(writer.add(cycleResources[3]!)))
    const text = writer.finish()
    expect(text.requests).toEqual([{ method: "POST", url: "Patient" }])
    expect(utf8(text.body)).not.toContain("ifNoneExist")
    const tx = toTransaction([cycleResources[3]!], "post", { idMap }, { conditionalCreate: false })
    expect(tx.bundle.entry![0]!.request).toEqual({ method: "POST", url: "Patient" })
  })

  it("put mode: a verbatim resource skips the walk and gives the same entry", () => {
    const plain = frozen(cycleResources)
    const ctx = { idMap: IdMap.identity(), meta: { provenanceTag: true } }
    let asked = 0
    const verbatim = (k: string) => {
      asked++
      return k !== "Encounter/e"
    }
    const fast = toTransaction(plain, "put", ctx, { verbatim })
    expect(asked).toBe(plain.length)
    expect(fast.bundle).toEqual(toTransaction(plain, "put", ctx).bundle)
    // and it is only a promise the caller makes: an Encounter renamed in the id map is still rewritten
    const renamed = IdMap.identity()
    renamed.set("Encounter/e", "Encounter/e2")
    const tx = toTransaction(plain, "put", { idMap: renamed }, { verbatim: (k) => k === "Encounter/e" })
    expect(tx.bundle.entry![1]!.request).toEqual({ method: "PUT", url: "Encounter/e2" })
    expect(tx.bundle.entry![2]!.resource!.encounter).toEqual({ reference: "Encounter/e2" })
    // post mode ignores it: the Patient in the Bundle is referred to by its urn:uuid
    const post = toTransaction(plain, "post", { idMap }, { verbatim: () => true }).bundle.entry!
    expect(post[0]!.resource!.subject).toEqual({ reference: post[3]!.fullUrl })
  })
})

describe("readResponse", () => {
  it("keeps what mapFromResponse reads and refuses what it cannot read", () => {
    const ok = readResponse({
      resourceType: "Bundle",
      type: "transaction-response",
      entry: [
        {
          response: { status: "201 Created", location: "Patient/1/_history/1", etag: 'W/"1"' },
          resource: {},
        },
        { response: { status: "400", outcome: { resourceType: "OperationOutcome", issue: [] } } },
        {},
      ],
    })
    assert(Either.isRight(ok))
    expect(ok.right).toEqual({
      resourceType: "Bundle",
      type: "transaction-response",
      entry: [
        { response: { status: "201 Created", location: "Patient/1/_history/1" } },
        { response: { status: "400", outcome: { resourceType: "OperationOutcome", issue: [] } } },
        {},
      ],
    })
    expect(Either.isRight(readResponse({ resourceType: "Bundle", type: "batch-response" }))).toBe(true)
    for (const bad of [
      null,
      [],
      { resourceType: "OperationOutcome", type: "x" },
      { resourceType: "Bundle" },
      { resourceType: "Bundle", type: "transaction-response", entry: {} },
      { resourceType: "Bundle", type: "transaction-response", entry: [3] },
      { resourceType: "Bundle", type: "transaction-response", entry: [{ response: { status: 201 } }] },
      {
        resourceType: "Bundle",
        type: "transaction-response",
        entry: [{ response: { status: "201", location: 1 } }],
      },
      {
        resourceType: "Bundle",
        type: "transaction-response",
        entry: [{ response: { status: "4", outcome: "x" } }],
      },
    ]) {
      const r = readResponse(bad)
      assert(Either.isLeft(r), JSON.stringify(bad))
      expect(r.left.reason).toBe("ResponseMismatch")
    }
  })
})

describe("mapFromResponse", () => {
  const rs = frozen(cycleResources)
  const tx = toTransaction(rs, "post", { idMap: registered(rs) })

  it("reads response.location by position", () => {
    const response: Bundle = {
      resourceType: "Bundle",
      type: "transaction-response",
      entry: [
        { response: { status: "201 Created", location: "Observation/10/_history/1" } },
        { response: { status: "201", location: "https://t.example/fhir/Encounter/11/_history/1" } },
        { response: { status: "200 OK", location: "Condition/12" } },
        { response: { status: "201 Created", location: "Patient/13/_history/1" } },
      ],
    }
    const r = mapFromResponse(tx, response)
    assert(Either.isRight(r))
    expect(r.right.mapped).toEqual([
      { source: "Observation/o", target: "Observation/10", status: 201 },
      { source: "Encounter/e", target: "Encounter/11", status: 201 },
      { source: "Condition/c", target: "Condition/12", status: 200 },
      { source: "Patient/p", target: "Patient/13", status: 201 },
    ])
    expect(r.right.failed).toEqual([])
  })

  it("fails on a response that does not match the request", () => {
    const short = mapFromResponse(tx, { resourceType: "Bundle", type: "transaction-response", entry: [] })
    assert(Either.isLeft(short))
    expect(short.left.reason).toBe("ResponseMismatch")
    expect(short.left.message).toContain("4 entries sent, 0 answered")
    const wrongType = mapFromResponse(tx, { resourceType: "Bundle", type: "searchset" })
    assert(Either.isLeft(wrongType))
    expect(wrongType.left.reason).toBe("ResponseMismatch")
    const swapped = mapFromResponse(
      tx,
      respond(tx.bundle, () => "1"),
    )
    assert(Either.isRight(swapped))
    const misplaced: Bundle = {
      ...respond(tx.bundle, () => "1"),
      entry: [...respond(tx.bundle, () => "1").entry!].reverse(),
    }
    const bad = mapFromResponse(tx, misplaced)
    assert(Either.isLeft(bad))
    expect(bad.left.reason).toBe("ResponseEntry")
    expect(bad.left.position).toBe(0)
    expect(bad.left.source).toBe("Observation/o")
    const noLocation = mapFromResponse(tx, {
      resourceType: "Bundle",
      type: "transaction-response",
      entry: tx.bundle.entry!.map(() => ({ response: { status: "201 Created" } })),
    })
    assert(Either.isLeft(noLocation))
    expect(noLocation.left.reason).toBe("ResponseEntry")
  })

  it("lists refused batch entries and maps PUTs answered without a location", () => {
    const put = toTransaction(rs.slice(0, 2), "put", { idMap: IdMap.identity() }, { type: "batch" })
    const r = mapFromResponse(put, {
      resourceType: "Bundle",
      type: "batch-response",
      entry: [
        { response: { status: "200 OK" } },
        {
          response: {
            status: "422 Unprocessable Entity",
            outcome: { resourceType: "OperationOutcome", issue: [{ severity: "error", code: "invalid" }] },
          },
        },
      ],
    })
    assert(Either.isRight(r))
    expect(r.right.mapped).toEqual([{ source: "Observation/o", target: "Observation/o", status: 200 }])
    expect(r.right.failed).toEqual([
      {
        position: 1,
        source: "Encounter/e",
        status: 422,
        outcome: { resourceType: "OperationOutcome", issue: [{ severity: "error", code: "invalid" }] },
      },
    ])
  })
})

describe("a simulated post-mode load of a full Synthea patient", () => {
  it.each([true, false])(
    "writes every chunk with references inside the Bundle or already mapped (byLevel %s)",
    (byLevel) => {
      const resources = syntheaPatientSet().map(frozen)
      const byKey = new Map(resources.map((r) => [keyOf(r), r]))
      const { chunks } = planOf(resources, 40, 500_000, byLevel)
      const idMap = registered(resources)
      const targets = new Set<string>()
      let counter = 0
      let intraBundle = 0
      for (const chunk of chunks) {
        const tx = toTransaction(
          chunk.keys.map((k) => byKey.get(k)!),
          "post",
          { idMap },
        )
        expect(tx.reports).toEqual([])
        const fullUrls = new Set(tx.bundle.entry!.map((e) => e.fullUrl))
        for (const site of references(tx.bundle)) {
          if (site.canonical || site.raw === undefined || site.raw.startsWith("#")) continue
          if (site.raw.startsWith("urn:uuid:")) {
            expect(fullUrls.has(site.raw)).toBe(true)
            intraBundle++
          } else expect(targets.has(site.raw)).toBe(true)
        }
        const mapped = mapFromResponse(
          tx,
          respond(tx.bundle, () => `n${counter++}`),
        )
        assert(Either.isRight(mapped))
        for (const m of mapped.right.mapped) {
          idMap.set(m.source, m.target)
          targets.add(m.target)
        }
      }
      expect(idMap.size).toBe(resources.length)
      // level-packed chunks hold no dependencies inside one Bundle (no cycles in Synthea); plain
      // topological packing puts a resource and its dependencies together, linked by urn:uuid
      if (byLevel) expect(intraBundle).toBe(0)
      else expect(intraBundle).toBeGreaterThan(100)
    },
  )
})
