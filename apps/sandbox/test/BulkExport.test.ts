import { gunzipSync } from "node:zlib"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { manifestPart, type PartSource } from "../src/BulkExport.js"
import { inCompartment } from "../src/Compartment.js"
import { ASYNC, exportAll, http, json, kickoff, lines, poll, startKit } from "./internal/bulkKit.js"

const PATIENTS = 4
// 4 patients × 23 + 1 Organization + 1 Practitioner
const gen = { generate: PATIENTS }

const expectedCounts = (kit: { sandbox: { store: { types(): string[]; count(t: string): number } } }) =>
  new Map(kit.sandbox.store.types().map((t) => [t, kit.sandbox.store.count(t)]))

describe("BulkExport", () => {
  it.scopedLive("system GET: polls with X-Progress, manifest counts equal the store, files hold them", () =>
    Effect.gen(function* () {
      const kit = yield* startKit(gen, { pollsBeforeDone: 2, retryAfterSeconds: 0 })
      const { manifest, pending, byType, status } = yield* exportAll(`${kit.baseUrl}/$export`)
      assert.isTrue(status.startsWith(`${kit.baseUrl}/bulk/status/`))
      assert.strictEqual(pending.length, 2)
      for (const p of pending) {
        assert.match(String(p.headers["x-progress"]), /resources/)
        assert.strictEqual(p.headers["retry-after"], "0")
      }
      assert.strictEqual(manifest.request, `${kit.baseUrl}/$export`)
      assert.strictEqual(manifest.requiresAccessToken, false)
      assert.match(manifest.transactionTime, /^\d{4}-\d{2}-\d{2}T.*Z$/)
      assert.deepStrictEqual(manifest.error, [])
      assert.isUndefined(manifest.deleted)
      const expected = expectedCounts(kit)
      const got = new Map<string, number>()
      for (const o of manifest.output) got.set(o.type, (got.get(o.type) ?? 0) + o.count)
      assert.deepStrictEqual(got, expected)
      for (const [type, n] of expected) assert.strictEqual(byType.get(type)?.length, n, type)
      // Binary lines carry their bytes
      const bin = byType.get("Binary")![0]!
      assert.isString(bin.data)
      const doc = byType.get("DocumentReference")![0] as { content: Array<{ attachment: { url: string } }> }
      assert.isTrue(doc.content[0]!.attachment.url.startsWith(`${kit.baseUrl}/Binary/`))
    }),
  )

  it.scopedLive("POST with Parameters, _type limits types; files split at resourcesPerFile", () =>
    Effect.gen(function* () {
      const kit = yield* startKit(gen, { resourcesPerFile: 10, pollsBeforeDone: 0 })
      const { manifest, byType } = yield* exportAll(`${kit.baseUrl}/$export`, {
        method: "POST",
        parameters: [
          { name: "_type", valueString: "Patient" },
          { name: "_type", valueString: "Observation" },
          { name: "_outputFormat", valueString: "ndjson" },
        ],
      })
      assert.deepStrictEqual([...byType.keys()].sort(), ["Observation", "Patient"])
      const obs = manifest.output.filter((o) => o.type === "Observation")
      assert.strictEqual(obs.length, Math.ceil((PATIENTS * 12) / 10))
      assert.isTrue(obs[0]!.url.endsWith("/Observation.000.ndjson"))
      assert.isTrue(obs[1]!.url.endsWith("/Observation.001.ndjson"))
      assert.strictEqual(obs[0]!.count, 10)
      assert.strictEqual(byType.get("Observation")!.length, PATIENTS * 12)
    }),
  )

  it.scopedLive("bad kick-offs answer 400 with an OperationOutcome", () =>
    Effect.gen(function* () {
      const kit = yield* startKit(gen)
      const cases: Array<[string, Record<string, string>]> = [
        ["/$export", { accept: "application/fhir+json" }], // no Prefer: respond-async
        ["/$export?_outputFormat=text/csv", ASYNC],
        ["/$export?organizeOutputBy=Encounter", ASYNC],
        ["/Patient/$export?patient=Patient/gen-pat-0", ASYNC], // patient only in POST
        ["/$export?_since=yesterday", ASYNC],
        ["/$export?_typeFilter=Patient%3F_include%3DPatient:organization", ASYNC],
        ["/$export?_typeFilter=Patient%3Fname:contains%3Dx", ASYNC],
        ["/$export?_typeFilter=Condition%3Fonset-date%3Dge2000-01-01", ASYNC], // a comparison: not supported
        ["/$export?_elements=Patient.1bad", ASYNC],
        ["/$export?includeAssociatedData=_custom", { ...ASYNC, prefer: "respond-async, handling=strict" }],
        ["/$export?bogus=1", { ...ASYNC, prefer: "respond-async, handling=strict" }],
        ["/$export?_type=NotAType", { ...ASYNC, prefer: "respond-async; handling=strict" }],
        ["/Patient/$export?_type=Organization", { ...ASYNC, prefer: "respond-async, handling=strict" }],
      ]
      for (const [path, headers] of cases) {
        const r = yield* http(`${kit.baseUrl}${path}`, { headers })
        assert.strictEqual(r.status, 400, path)
        assert.strictEqual(json(r).resourceType, "OperationOutcome", path)
      }
      const post = yield* http(`${kit.baseUrl}/$export`, {
        method: "POST",
        headers: { ...ASYNC, "content-type": "application/fhir+json" },
        body: JSON.stringify({
          resourceType: "Parameters",
          parameter: [{ name: "patient", valueReference: { reference: "Patient/gen-pat-0" } }],
        }),
      })
      assert.strictEqual(post.status, 400) // patient is not valid at system level
      const missing = yield* http(`${kit.baseUrl}/Group/nope/$export`, { headers: ASYNC })
      assert.strictEqual(missing.status, 404)
    }),
  )

  it.scopedLive("lenient handling skips an unknown parameter and reports it in error[]", () =>
    Effect.gen(function* () {
      const kit = yield* startKit(gen, { pollsBeforeDone: 0 })
      const { manifest } = yield* exportAll(`${kit.baseUrl}/$export?_type=Patient&bogus=1`, {
        headers: { prefer: "respond-async, handling=lenient" },
      })
      assert.strictEqual(manifest.error.length, 1)
      const r = yield* http(manifest.error[0]!.url)
      const oo = lines(r.body)
      assert.strictEqual(oo.length, 1)
      assert.match(JSON.stringify(oo[0]), /bogus/)
    }),
  )

  it.scopedLive(
    "_since returns later changes and deleted[] DELETE Bundles; _until bounds; snapshot holds",
    () =>
      Effect.gen(function* () {
        const kit = yield* startKit(gen, { pollsBeforeDone: 0 })
        const store = kit.sandbox.store
        const t0 = store.now()
        const pat = JSON.parse(store.read("Patient", "gen-pat-1")!.json) as Record<string, unknown>
        store.update({ ...pat, id: "gen-pat-1", gender: "other" })
        assert.isTrue(store.delete("Observation", "gen-obs-2-0-0"))
        const since = yield* exportAll(`${kit.baseUrl}/$export?_since=${encodeURIComponent(t0)}`)
        assert.deepStrictEqual(
          since.manifest.output.map((o) => [o.type, o.count]),
          [["Patient", 1]],
        )
        assert.strictEqual(since.byType.get("Patient")![0]!.gender, "other")
        assert.strictEqual(since.manifest.deleted!.length, 1)
        const del = yield* http(since.manifest.deleted![0]!.url)
        assert.deepStrictEqual(lines(del.body), [
          {
            resourceType: "Bundle",
            type: "transaction",
            entry: [{ request: { method: "DELETE", url: "Observation/gen-obs-2-0-0" } }],
          },
        ])
        const until = yield* exportAll(
          `${kit.baseUrl}/$export?_type=Patient&_until=${encodeURIComponent(t0)}`,
        )
        assert.strictEqual(until.byType.get("Patient")!.length, PATIENTS - 1) // gen-pat-1 changed after t0
        // snapshot: a change after kick-off does not leak into the job
        const status = yield* kickoff(`${kit.baseUrl}/$export?_type=Patient`)
        const p2 = JSON.parse(store.read("Patient", "gen-pat-2")!.json) as Record<string, unknown>
        store.update({ ...p2, id: "gen-pat-2", gender: "unknown" })
        const { manifest } = yield* poll(status)
        const after = lines((yield* http(manifest.output[0]!.url)).body)
        assert.isFalse(after.some((p) => p.gender === "unknown"))
        assert.isTrue(manifest.transactionTime < store.read("Patient", "gen-pat-2")!.lastUpdated)
      }),
  )

  it.scopedLive("_typeFilter keeps matching resources only (OR between queries of a type)", () =>
    Effect.gen(function* () {
      const kit = yield* startKit(gen, { pollsBeforeDone: 0 })
      const store = kit.sandbox.store
      const females = [...store.iterate("Patient")].filter(
        (p) => JSON.parse(p.json).gender === "female",
      ).length
      const q = encodeURIComponent("Patient?gender=female")
      const r1 = yield* exportAll(`${kit.baseUrl}/$export?_type=Patient,Observation&_typeFilter=${q}`)
      assert.strictEqual(r1.byType.get("Patient")?.length ?? 0, females)
      assert.strictEqual(r1.byType.get("Observation")!.length, PATIENTS * 12) // unfiltered type
      const two = `${encodeURIComponent("Patient?gender=female")}&_typeFilter=${encodeURIComponent("Patient?gender=male")}`
      const r2 = yield* exportAll(`${kit.baseUrl}/$export?_type=Patient&_typeFilter=${two}`)
      assert.strictEqual(r2.byType.get("Patient")!.length, PATIENTS)
      const code = encodeURIComponent("Observation?code=http://loinc.org|8867-4&_lastUpdated=gt2000-01-01")
      const r3 = yield* exportAll(`${kit.baseUrl}/$export?_type=Observation&_typeFilter=${code}`)
      const hr = [...store.iterate("Observation")].filter((o) => o.json.includes('"8867-4"')).length
      assert.isAbove(hr, 0)
      assert.strictEqual(r3.byType.get("Observation")!.length, hr)
      // patient (as the REST search reads it: a reference in patient or subject), with or without its type
      const patient = [...store.iterate("Patient")][0]!.id
      const ofPatient = [...store.iterate("Observation")].filter((o) =>
        o.json.includes(`"Patient/${patient}"`),
      ).length
      assert.isAbove(ofPatient, 0)
      for (const ref of [`Patient/${patient}`, patient]) {
        const byPatient = encodeURIComponent(`Observation?patient=${ref}`)
        const r4 = yield* exportAll(`${kit.baseUrl}/$export?_type=Observation&_typeFilter=${byPatient}`)
        assert.strictEqual(r4.byType.get("Observation")?.length ?? 0, ofPatient, ref)
      }
    }),
  )

  it.scopedLive("_elements subsets top-level elements and tags SUBSETTED", () =>
    Effect.gen(function* () {
      const kit = yield* startKit(gen, { pollsBeforeDone: 0 })
      const { byType } = yield* exportAll(
        `${kit.baseUrl}/$export?_type=Patient,Organization&_elements=Patient.gender`,
      )
      for (const p of byType.get("Patient")!) {
        assert.deepStrictEqual(Object.keys(p).sort(), ["gender", "id", "meta", "resourceType"])
        assert.deepInclude((p.meta as { tag: unknown[] }).tag, {
          system: "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
          code: "SUBSETTED",
        })
      }
      assert.isString(byType.get("Organization")![0]!.name) // not subsetted: no entry for the type
    }),
  )

  it.scopedLive("Patient-level export with patient= returns exactly that compartment", () =>
    Effect.gen(function* () {
      const kit = yield* startKit(gen, { pollsBeforeDone: 0 })
      const store = kit.sandbox.store
      const provenance = (id: string, target: string) =>
        store.update({
          resourceType: "Provenance",
          id,
          target: [{ reference: target }],
          recorded: "2024-01-01T00:00:00Z",
        })
      provenance("prov-2", "Observation/gen-obs-2-0-0") // about gen-pat-2's data
      provenance("prov-1", "Observation/gen-obs-1-0-0") // about gen-pat-1's data
      provenance("prov-org", "Organization/gen-org-0") // about no patient
      const { byType } = yield* exportAll(`${kit.baseUrl}/Patient/$export`, {
        method: "POST",
        parameters: [{ name: "patient", valueReference: { reference: "Patient/gen-pat-2" } }],
      })
      const ids = new Set(["gen-pat-2"])
      assert.deepStrictEqual(
        byType.get("Provenance")!.map((p) => p.id),
        ["prov-2"],
      )
      for (const type of store.types().filter((t) => t !== "Provenance")) {
        const expected = [...store.iterate(type)]
          .map((s) => JSON.parse(s.json) as { resourceType: string; id: string })
          .filter((r) => inCompartment(r, ids))
          .map((r) => r.id)
          .sort()
        const got = (byType.get(type) ?? []).map((r) => String(r.id)).sort()
        assert.deepStrictEqual(got, expected, type)
      }
      assert.deepStrictEqual(byType.get("Observation")!.length, 12)
      assert.isUndefined(byType.get("Organization")) // not a compartment member
      assert.isUndefined(byType.get("Binary"))
      // every patient (no patient parameter): all compartment data, no Organization/Practitioner
      const all = yield* exportAll(`${kit.baseUrl}/Patient/$export`)
      assert.strictEqual(all.byType.get("Observation")!.length, PATIENTS * 12)
      assert.strictEqual(all.byType.get("Patient")!.length, PATIENTS)
      assert.isUndefined(all.byType.get("Practitioner"))
      assert.deepStrictEqual(
        all.byType
          .get("Provenance")!
          .map((p) => p.id)
          .sort(),
        ["prov-1", "prov-2"],
      )
    }),
  )

  it.scopedLive("Group-level export: members' compartments only; patient outside the Group is 400", () =>
    Effect.gen(function* () {
      const kit = yield* startKit(gen, { pollsBeforeDone: 0 })
      const store = kit.sandbox.store
      store.update({
        resourceType: "Group",
        id: "cohort",
        type: "person",
        actual: true,
        member: [
          { entity: { reference: "Patient/gen-pat-0" } },
          { entity: { reference: `${kit.baseUrl}/Patient/gen-pat-3` } },
        ],
      })
      const { byType } = yield* exportAll(`${kit.baseUrl}/Group/cohort/$export`)
      assert.deepStrictEqual(
        byType
          .get("Patient")!
          .map((p) => p.id)
          .sort(),
        ["gen-pat-0", "gen-pat-3"],
      )
      assert.strictEqual(byType.get("Encounter")!.length, 6)
      for (const e of byType.get("Encounter")!) {
        assert.include(
          ["Patient/gen-pat-0", "Patient/gen-pat-3"],
          (e.subject as { reference: string }).reference,
        )
      }
      assert.deepStrictEqual(
        byType.get("Group")!.map((g) => g.id),
        ["cohort"],
      )
      const one = yield* exportAll(`${kit.baseUrl}/Group/cohort/$export`, {
        method: "POST",
        parameters: [
          { name: "patient", valueReference: { reference: "Patient/gen-pat-3" } },
          { name: "_type", valueString: "Patient,Condition" },
        ],
      })
      assert.deepStrictEqual(
        one.byType.get("Patient")!.map((p) => p.id),
        ["gen-pat-3"],
      )
      assert.strictEqual(one.byType.get("Condition")!.length, 3)
      const outside = yield* http(`${kit.baseUrl}/Group/cohort/$export`, {
        method: "POST",
        headers: { ...ASYNC, "content-type": "application/fhir+json" },
        body: JSON.stringify({
          resourceType: "Parameters",
          parameter: [{ name: "patient", valueReference: { reference: "Patient/gen-pat-1" } }],
        }),
      })
      assert.strictEqual(outside.status, 400)
      assert.match(outside.body.toString(), /not a member/)
    }),
  )

  it.scopedLive("DELETE on the status URL cancels; later polls and downloads are 404", () =>
    Effect.gen(function* () {
      const kit = yield* startKit(gen, { pollsBeforeDone: 0 })
      const status = yield* kickoff(`${kit.baseUrl}/$export?_type=Patient`)
      const { manifest } = yield* poll(status)
      const del = yield* http(status, { method: "DELETE" })
      assert.strictEqual(del.status, 202)
      assert.strictEqual((yield* http(status)).status, 404)
      assert.strictEqual((yield* http(manifest.output[0]!.url)).status, 404)
      assert.strictEqual((yield* http(status, { method: "DELETE" })).status, 404)
    }),
  )

  it.scopedLive("downloads: Range gives 206 + Content-Range; gzip when accepted; HEAD has no body", () =>
    Effect.gen(function* () {
      const kit = yield* startKit(gen, { pollsBeforeDone: 0 })
      const { manifest } = yield* exportAll(`${kit.baseUrl}/$export?_type=Observation`)
      const url = manifest.output[0]!.url
      const full = yield* http(url)
      assert.strictEqual(full.status, 200)
      assert.strictEqual(full.headers["content-type"], "application/fhir+ndjson")
      assert.strictEqual(full.headers["accept-ranges"], "bytes")
      const size = full.body.length
      const part = yield* http(url, { headers: { range: "bytes=100-199" } })
      assert.strictEqual(part.status, 206)
      assert.strictEqual(part.headers["content-range"], `bytes 100-199/${size}`)
      assert.isTrue(part.body.equals(full.body.subarray(100, 200)))
      const tail = yield* http(url, { headers: { range: "bytes=-50" } })
      assert.isTrue(tail.body.equals(full.body.subarray(size - 50)))
      const open = yield* http(url, { headers: { range: `bytes=${size - 10}-` } })
      assert.strictEqual(open.headers["content-range"], `bytes ${size - 10}-${size - 1}/${size}`)
      const bad = yield* http(url, { headers: { range: `bytes=${size + 5}-` } })
      assert.strictEqual(bad.status, 416)
      assert.strictEqual(bad.headers["content-range"], `bytes */${size}`)
      const gz = yield* http(url, { headers: { "accept-encoding": "gzip, deflate" } })
      assert.strictEqual(gz.headers["content-encoding"], "gzip")
      assert.isTrue(gunzipSync(gz.body).equals(full.body))
      const head = yield* http(url, { method: "HEAD" })
      assert.strictEqual(head.status, 200)
      assert.strictEqual(head.headers["content-length"], String(size))
      assert.strictEqual(head.body.length, 0)
    }),
  )
  it.scopedLive(
    "allowPartialManifests=true: the manifest in parts linked by link next, part 1 already in the 202s; together the same files",
    () =>
      Effect.gen(function* () {
        const kit = yield* startKit(gen, {
          resourcesPerFile: 10,
          pollsBeforeDone: 2,
          retryAfterSeconds: 0,
          manifestPartSize: 3,
        })
        const whole = yield* poll(yield* kickoff(`${kit.baseUrl}/$export`))
        const status = yield* kickoff(`${kit.baseUrl}/$export?allowPartialManifests=true`)
        const { manifest: first, pending } = yield* poll(status)
        // the finished job's first two polls are 202 (pollsBeforeDone), each with part 1 published
        assert.strictEqual(pending.length, 2)
        for (const p of pending) {
          assert.strictEqual(p.headers["content-type"], "application/json")
          assert.deepStrictEqual(json(p), first as unknown as Record<string, unknown>)
        }
        const parts: Array<Record<string, unknown>> = [first as unknown as Record<string, unknown>]
        for (;;) {
          const next = (parts.at(-1)!.link as Array<{ relation: string; url: string }> | undefined)?.[0]
          if (next === undefined) break
          assert.strictEqual(next.relation, "next")
          const r = yield* http(next.url)
          assert.strictEqual(r.status, 200)
          parts.push(json(r))
        }
        const outputs = parts.flatMap((p) => p.output as Array<{ type: string; url: string; count: number }>)
        assert.strictEqual(parts.length, Math.ceil(whole.manifest.output.length / 3))
        assert.isTrue(parts.length > 2)
        for (const p of parts.slice(0, -1)) {
          assert.strictEqual((p.output as unknown[]).length, 3)
          assert.deepStrictEqual(p.error, [])
        }
        for (const p of parts) assert.strictEqual(p.transactionTime, first.transactionTime)
        const shape = (items: ReadonlyArray<{ type: string; url: string; count: number }>) =>
          items.map((o) => `${o.type} ${o.url.slice(o.url.lastIndexOf("/") + 1)} ${o.count}`)
        assert.deepStrictEqual(shape(outputs), shape(whole.manifest.output))
        for (const o of outputs) assert.strictEqual((yield* http(o.url)).status, 200)
        // past the last part: 404; a part that is not a number: 404; a bad value at kick-off: 400
        const past = yield* http(`${status}?part=${parts.length + 1}`)
        assert.strictEqual(past.status, 404)
        assert.strictEqual((yield* http(`${status}?part=x`)).status, 404)
        const bad = yield* http(`${kit.baseUrl}/$export?allowPartialManifests=maybe`, { headers: ASYNC })
        assert.strictEqual(bad.status, 400)
        assert.match(bad.body.toString(), /allowPartialManifests must be true or false/)
      }),
  )
  it("manifest parts: a part once served changes only by gaining its link; deleted and error come last, in a part of their own after a full one", () => {
    const item = (i: number) => ({ type: "Observation", url: `http://x/f/${i}`, count: 1 })
    const job = (state: "running" | "done", outputs: number, errors: number, partSize: number | undefined) =>
      ({
        id: "j",
        state,
        transactionTime: "2026-01-01T00:00:00.000Z",
        request: "http://x/$export",
        requiresAccessToken: false,
        organizeBy: undefined,
        since: "2025-01-01T00:00:00.000Z",
        partSize,
        output: Array.from({ length: outputs }, (_, i) => item(i)),
        deleted: [],
        error: Array.from({ length: errors }, (_, i) => ({
          type: "OperationOutcome",
          url: `http://x/e/${i}`,
        })),
      }) satisfies PartSource
    const same = <T>(items: ReadonlyArray<T>) => items
    const part = (j: PartSource, n: number) => manifestPart(j, n, "http://x", same)
    const withoutLink = (m: { readonly link?: unknown } | undefined) => {
      const { link: _link, ...rest } = m ?? {}
      return rest
    }
    for (const [outputs, errors] of [
      [4, 1],
      [4, 0],
      [5, 1],
      [6, 2],
    ] as const) {
      const running = job("running", outputs, errors, 2)
      const done = job("done", outputs, errors, 2)
      const servedEarly = Math.floor(outputs / 2)
      for (let n = 1; n <= servedEarly; n++) {
        const before = part(running, n)!
        assert.strictEqual(before.final, n < servedEarly, `${outputs}/${errors} part ${n}`)
        assert.deepStrictEqual(withoutLink(part(done, n)?.manifest), withoutLink(before.manifest))
      }
      assert.isUndefined(part(running, servedEarly + 1))
      const parts: Array<Record<string, unknown>> = []
      for (let n = 1; part(done, n) !== undefined; n++) parts.push(part(done, n)!.manifest as never)
      assert.deepStrictEqual(
        parts.flatMap((p) => p.output as unknown[]),
        done.output,
      )
      assert.deepStrictEqual(
        parts.flatMap((p) => p.error as unknown[]),
        done.error,
      )
      assert.isTrue(parts.slice(0, -1).every((p) => p.link !== undefined) && parts.at(-1)!.link === undefined)
      assert.deepStrictEqual(parts.at(-1)!.deleted, [])
    }
    // 4 outputs and an error: parts 1–2 were full (served while running), the error is part 3 alone
    assert.deepStrictEqual(part(job("done", 4, 1, 2), 3)!.manifest.output, [])
    // no outputs, one error: one part
    assert.strictEqual(part(job("done", 0, 1, 2), 1)!.manifest.error.length, 1)
    assert.isUndefined(part(job("done", 0, 1, 2), 2))
    // without partial manifests: nothing before the job is done, then one part with everything
    assert.isUndefined(part(job("running", 4, 1, undefined), 1))
    assert.strictEqual(part(job("done", 4, 1, undefined), 1)!.manifest.output.length, 4)
    assert.isUndefined(part(job("done", 4, 1, undefined), 2))
  })
})
