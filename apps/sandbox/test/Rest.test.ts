import { assert, describe, layer } from "@effect/vitest"
import { Effect } from "effect"
import { Sandbox } from "../src/Sandbox.js"
import { at, call, fhirJson, str } from "./http.js"

const patient = (family: string, extra: Record<string, unknown> = {}) => ({
  resourceType: "Patient",
  name: [{ family }],
  ...extra,
})

layer(Sandbox.layer({ pageSize: 3 }, { plugins: [] }))("REST", (it) => {
  it.effect("GET /metadata lists types, interactions and transaction/batch", () =>
    Effect.gen(function* () {
      const { baseUrl } = yield* Sandbox
      yield* call(`${baseUrl}/Patient`, fhirJson("POST", patient("Meta")))
      const r = yield* call(`${baseUrl}/metadata`)
      assert.strictEqual(r.status, 200)
      assert.match(r.headers.get("content-type") ?? "", /application\/fhir\+json/)
      assert.strictEqual(at(r.body, "resourceType"), "CapabilityStatement")
      assert.strictEqual(at(r.body, "fhirVersion"), "4.0.1")
      const resources = at(r.body, "rest.0.resource") as Array<{ type: string; updateCreate: boolean }>
      const types = resources.map((x) => x.type)
      assert.include(types, "Patient")
      assert.include(types, "Binary")
      assert.include(types, "ExplanationOfBenefit", "types not stored yet are listed too")
      assert.isTrue(resources[0]!.updateCreate)
      const codes = (at(r.body, "rest.0.interaction") as Array<{ code: string }>).map((i) => i.code)
      assert.deepStrictEqual(codes, ["transaction", "batch"])
    }),
  )

  it.effect("create, read, update, vread, delete", () =>
    Effect.gen(function* () {
      const { baseUrl } = yield* Sandbox
      const created = yield* call(
        `${baseUrl}/Patient`,
        fhirJson("POST", { ...patient("Crud"), id: "ignored", meta: { versionId: "9" } }),
      )
      assert.strictEqual(created.status, 201)
      const id = str(created.body, "id")
      assert.notStrictEqual(id, "ignored")
      assert.strictEqual(created.headers.get("location"), `${baseUrl}/Patient/${id}/_history/1`)
      assert.strictEqual(created.headers.get("etag"), 'W/"1"')
      assert.strictEqual(at(created.body, "meta.versionId"), "1")

      const read = yield* call(`${baseUrl}/Patient/${id}`)
      assert.strictEqual(read.status, 200)
      assert.strictEqual(at(read.body, "name.0.family"), "Crud")

      const updated = yield* call(`${baseUrl}/Patient/${id}`, fhirJson("PUT", { ...patient("Crud2"), id }))
      assert.strictEqual(updated.status, 200)
      assert.strictEqual(at(updated.body, "meta.versionId"), "2")
      assert.isTrue(str(updated.body, "meta.lastUpdated") > str(created.body, "meta.lastUpdated"))

      const conflict = yield* call(
        `${baseUrl}/Patient/${id}`,
        fhirJson("PUT", { ...patient("Crud3"), id }, { "If-Match": 'W/"1"' }),
      )
      assert.strictEqual(conflict.status, 412)

      const vread = yield* call(`${baseUrl}/Patient/${id}/_history/2`)
      assert.strictEqual(vread.status, 200)
      assert.strictEqual((yield* call(`${baseUrl}/Patient/${id}/_history/1`)).status, 404)

      const del = yield* call(`${baseUrl}/Patient/${id}`, { method: "DELETE" })
      assert.strictEqual(del.status, 204)
      const gone = yield* call(`${baseUrl}/Patient/${id}`)
      assert.strictEqual(gone.status, 410)
      assert.strictEqual(at(gone.body, "resourceType"), "OperationOutcome")
      assert.strictEqual((yield* call(`${baseUrl}/Patient/never-there`)).status, 404)
    }),
  )

  it.effect(
    "decimals are kept as written (1.0 stays 1.0): update, create, and each entry of a transaction",
    () =>
      Effect.gen(function* () {
        const { baseUrl } = yield* Sandbox
        const raw = (method: string, body: string): RequestInit => ({
          method,
          headers: { "Content-Type": "application/fhir+json" },
          body,
        })
        const put = yield* call(
          `${baseUrl}/Observation/dec1`,
          raw(
            "PUT",
            '{"resourceType":"Observation","id":"dec1","status":"final","valueQuantity":{"value":1.0},"component":[{"valueQuantity":{"value":16942.30}},{"valueInteger":7}]}',
          ),
        )
        assert.strictEqual(put.status, 201)
        const read = yield* call(`${baseUrl}/Observation/dec1`)
        assert.include(read.text, '"valueQuantity":{"value":1.0}')
        assert.include(read.text, '{"value":16942.30}')
        assert.include(read.text, '"valueInteger":7')
        // a body without the id in it (the URL's) and a create
        yield* call(
          `${baseUrl}/Observation/dec2`,
          raw("PUT", '{"resourceType":"Observation","status":"final","valueQuantity":{"value":2.50}}'),
        )
        assert.include((yield* call(`${baseUrl}/Observation/dec2`)).text, '"value":2.50')
        const created = yield* call(
          `${baseUrl}/Observation`,
          raw("POST", '{"resourceType":"Observation","status":"final","valueQuantity":{"value":0.0}}'),
        )
        assert.strictEqual(created.status, 201)
        const location = created.headers.get("location") ?? ""
        assert.include((yield* call(location.replace(/\/_history\/\d+$/, ""))).text, '"value":0.0')
        // a transaction: each entry's resource with its own numbers, whatever order they are processed in
        const tx = yield* call(
          baseUrl,
          raw(
            "POST",
            `{"resourceType":"Bundle","type":"transaction","entry":[
            {"resource":{"resourceType":"Observation","id":"dec3","status":"final","valueQuantity":{"value":3.10}},"request":{"method":"PUT","url":"Observation/dec3"}},
            {"fullUrl":"urn:uuid:0b7c6f1e-8a43-4d4e-9a2b-6f0f0b4c1d2e","resource":{"resourceType":"Observation","status":"final","valueQuantity":{"value":4.0},"hasMember":[{"reference":"Observation/dec3"}]},"request":{"method":"POST","url":"Observation"}},
            {"resource":{"resourceType":"Observation","id":"dec5","status":"final","valueQuantity":{"value":5}},"request":{"method":"PUT","url":"Observation/dec5"}}
          ]}`,
          ),
        )
        assert.strictEqual(tx.status, 200, tx.text)
        assert.include((yield* call(`${baseUrl}/Observation/dec3`)).text, '"value":3.10')
        const posted = str(tx.body, "entry.1.response.location").replace(/\/_history\/\d+$/, "")
        assert.include((yield* call(`${baseUrl}/${posted}`)).text, '"value":4.0')
        assert.include((yield* call(`${baseUrl}/Observation/dec5`)).text, '"value":5}')
      }),
  )

  it.effect("update-as-create answers 201; a mismatched id or type is a 400", () =>
    Effect.gen(function* () {
      const { baseUrl } = yield* Sandbox
      const r = yield* call(
        `${baseUrl}/Patient/client-1`,
        fhirJson("PUT", { ...patient("Client"), id: "client-1" }),
      )
      assert.strictEqual(r.status, 201)
      assert.strictEqual(r.headers.get("location"), `${baseUrl}/Patient/client-1/_history/1`)
      const wrongId = yield* call(
        `${baseUrl}/Patient/client-2`,
        fhirJson("PUT", { ...patient("X"), id: "other" }),
      )
      assert.strictEqual(wrongId.status, 400)
      const wrongType = yield* call(`${baseUrl}/Observation`, fhirJson("POST", patient("X")))
      assert.strictEqual(wrongType.status, 400)
      const badJson = yield* call(`${baseUrl}/Patient`, {
        method: "POST",
        headers: { "Content-Type": "application/fhir+json" },
        body: "{nope",
      })
      assert.strictEqual(badJson.status, 400)
      assert.strictEqual(at(badJson.body, "issue.0.code"), "structure")
    }),
  )

  it.effect("If-None-Exist: conditional create returns the existing match", () =>
    Effect.gen(function* () {
      const { baseUrl } = yield* Sandbox
      const body = patient("Cond", { identifier: [{ system: "urn:test:cc", value: "cc-1" }] })
      const first = yield* call(
        `${baseUrl}/Patient`,
        fhirJson("POST", body, { "If-None-Exist": "identifier=urn:test:cc|cc-1" }),
      )
      assert.strictEqual(first.status, 201)
      const second = yield* call(
        `${baseUrl}/Patient`,
        fhirJson("POST", body, { "If-None-Exist": "identifier=urn:test:cc|cc-1" }),
      )
      assert.strictEqual(second.status, 200)
      assert.strictEqual(str(second.body, "id"), str(first.body, "id"))
    }),
  )

  it.effect("search: _id, identifier, patient, subject, _summary=count", () =>
    Effect.gen(function* () {
      const { baseUrl } = yield* Sandbox
      const p = yield* call(
        `${baseUrl}/Patient`,
        fhirJson("POST", patient("Search", { identifier: [{ system: "urn:test:s", value: "s-1" }] })),
      )
      const pid = str(p.body, "id")
      const other = str((yield* call(`${baseUrl}/Patient`, fhirJson("POST", patient("Other")))).body, "id")
      for (const [i, subject] of [pid, pid, other].entries()) {
        yield* call(
          `${baseUrl}/Observation`,
          fhirJson("POST", {
            resourceType: "Observation",
            status: "final",
            code: { text: `o${i}` },
            subject: { reference: `Patient/${subject}` },
          }),
        )
      }
      yield* call(
        `${baseUrl}/AllergyIntolerance`,
        fhirJson("POST", {
          resourceType: "AllergyIntolerance",
          patient: { reference: `${baseUrl}/Patient/${pid}` },
        }),
      )

      const byId = yield* call(`${baseUrl}/Patient?_id=${pid},nope`)
      assert.strictEqual(at(byId.body, "type"), "searchset")
      assert.strictEqual(at(byId.body, "total"), 1)
      assert.strictEqual(at(byId.body, "entry.0.resource.id"), pid)
      assert.strictEqual(at(byId.body, "entry.0.fullUrl"), `${baseUrl}/Patient/${pid}`)

      const ident = yield* call(`${baseUrl}/Patient?identifier=${encodeURIComponent("urn:test:s|s-1")}`)
      assert.strictEqual(at(ident.body, "total"), 1)
      const identValue = yield* call(`${baseUrl}/Patient?identifier=s-1`)
      assert.strictEqual(at(identValue.body, "total"), 1)
      const identWrongSystem = yield* call(
        `${baseUrl}/Patient?identifier=${encodeURIComponent("urn:other|s-1")}`,
      )
      assert.strictEqual(at(identWrongSystem.body, "total"), 0)

      const byPatient = yield* call(`${baseUrl}/Observation?patient=${pid}`)
      assert.strictEqual(at(byPatient.body, "total"), 2)
      const bySubject = yield* call(`${baseUrl}/Observation?subject=Patient/${pid}`)
      assert.strictEqual(at(bySubject.body, "total"), 2)
      const allergy = yield* call(`${baseUrl}/AllergyIntolerance?patient=Patient/${pid}`)
      assert.strictEqual(at(allergy.body, "total"), 1, "absolute references under the base are indexed")

      const count = yield* call(`${baseUrl}/Observation?patient=${pid}&_summary=count`)
      assert.strictEqual(at(count.body, "total"), 2)
      assert.isUndefined(at(count.body, "entry"))

      const unknown = yield* call(`${baseUrl}/Observation?code=123`)
      assert.strictEqual(unknown.status, 400)
    }),
  )

  it.effect("search: _lastUpdated prefixes", () =>
    Effect.gen(function* () {
      const { baseUrl } = yield* Sandbox
      const ids: string[] = []
      const times: string[] = []
      for (const f of ["T1", "T2", "T3"]) {
        const r = yield* call(
          `${baseUrl}/Flag`,
          fhirJson("POST", { resourceType: "Flag", status: "active", code: { text: f } }),
        )
        ids.push(str(r.body, "id"))
        times.push(str(r.body, "meta.lastUpdated"))
      }
      const q = (expr: string) =>
        call(`${baseUrl}/Flag?_lastUpdated=${encodeURIComponent(expr)}&_count=100`).pipe(
          Effect.map((r) =>
            ((at(r.body, "entry") ?? []) as Array<{ resource: { id: string } }>).map((e) => e.resource.id),
          ),
        )
      assert.deepStrictEqual(yield* q(`gt${times[0]}`), [ids[1], ids[2]])
      assert.deepStrictEqual(yield* q(`ge${times[1]}`), [ids[1], ids[2]])
      assert.deepStrictEqual(yield* q(`lt${times[1]}`), [ids[0]])
      assert.deepStrictEqual(yield* q(`le${times[1]}`), [ids[0], ids[1]])
      assert.deepStrictEqual(yield* q(`eq${times[2]}`), [ids[2]])
      assert.deepStrictEqual(yield* q(`${times[2]}`), [ids[2]])
      assert.deepStrictEqual(yield* q(`ge${times[0]!.slice(0, 10)}`), ids)
      assert.deepStrictEqual(yield* q("lt2000-01-01"), [])
      assert.strictEqual((yield* call(`${baseUrl}/Flag?_lastUpdated=gtbanana`)).status, 400)
    }),
  )

  it.effect("search paging follows next links through every match exactly once", () =>
    Effect.gen(function* () {
      const { baseUrl } = yield* Sandbox
      const created = new Set<string>()
      for (let i = 0; i < 8; i++) {
        const r = yield* call(
          `${baseUrl}/Device`,
          fhirJson("POST", { resourceType: "Device", serialNumber: `d${i}` }),
        )
        created.add(str(r.body, "id"))
      }
      const seen: string[] = []
      let url: string | undefined = `${baseUrl}/Device`
      let pages = 0
      while (url !== undefined) {
        const page = yield* call(url)
        assert.strictEqual(page.status, 200)
        pages++
        const entries = (at(page.body, "entry") ?? []) as Array<{ resource: { id: string } }>
        assert.isAtMost(entries.length, 3)
        seen.push(...entries.map((e) => e.resource.id))
        const links = at(page.body, "link") as Array<{ relation: string; url: string }>
        url = links.find((l) => l.relation === "next")?.url
      }
      assert.strictEqual(pages, 3)
      assert.strictEqual(seen.length, 8)
      assert.deepStrictEqual(new Set(seen), created)
      const explicit = yield* call(`${baseUrl}/Device?_count=5`)
      assert.strictEqual((at(explicit.body, "entry") as unknown[]).length, 5)
    }),
  )

  it.effect("Binary: raw POST, raw GET with its content type, JSON GET with base64 data, JSON POST", () =>
    Effect.gen(function* () {
      const { baseUrl } = yield* Sandbox
      const bytes = Buffer.from([0, 1, 2, 250, 251, 252, 10, 13])
      const posted = yield* call(`${baseUrl}/Binary`, {
        method: "POST",
        headers: { "Content-Type": "image/x-test", "X-Security-Context": "Patient/sec-1" },
        body: bytes,
      })
      assert.strictEqual(posted.status, 201)
      const id = str(posted.body, "id")
      const raw = yield* call(`${baseUrl}/Binary/${id}`)
      assert.strictEqual(raw.status, 200)
      assert.strictEqual(raw.headers.get("content-type"), "image/x-test")
      assert.isTrue(raw.bytes.equals(bytes))
      const json = yield* call(`${baseUrl}/Binary/${id}`, { headers: { Accept: "application/fhir+json" } })
      assert.strictEqual(at(json.body, "resourceType"), "Binary")
      assert.strictEqual(at(json.body, "contentType"), "image/x-test")
      assert.strictEqual(at(json.body, "data"), bytes.toString("base64"))
      assert.strictEqual(at(json.body, "securityContext.reference"), "Patient/sec-1")

      const put = yield* call(
        `${baseUrl}/Binary/bin-json`,
        fhirJson("PUT", {
          resourceType: "Binary",
          id: "bin-json",
          contentType: "text/plain",
          data: Buffer.from("hello").toString("base64"),
        }),
      )
      assert.strictEqual(put.status, 201)
      const raw2 = yield* call(`${baseUrl}/Binary/bin-json`, { headers: { Accept: "*/*" } })
      assert.strictEqual(raw2.text, "hello")
      assert.match(raw2.headers.get("content-type") ?? "", /^text\/plain/)
      const putRaw = yield* call(`${baseUrl}/Binary/bin-json`, {
        method: "PUT",
        headers: { "Content-Type": "text/plain" },
        body: "bye",
      })
      assert.strictEqual(putRaw.status, 200)
      assert.strictEqual((yield* call(`${baseUrl}/Binary/bin-json`)).text, "bye")

      // A search gives a Binary in the same JSON form as its read: with contentType and data.
      const found = yield* call(`${baseUrl}/Binary?_id=bin-json`, {
        headers: { Accept: "application/fhir+json" },
      })
      assert.strictEqual(at(found.body, "entry.0.resource.data"), Buffer.from("bye").toString("base64"))
      assert.strictEqual(at(found.body, "entry.0.resource.contentType"), "text/plain")
    }),
  )

  it.effect("search: _tag as system|code, code, system|, |code; comma is or, repeated is and", () =>
    Effect.gen(function* () {
      const { baseUrl } = yield* Sandbox
      const device = (tag: ReadonlyArray<Record<string, string>>) =>
        call(`${baseUrl}/Device`, fhirJson("POST", { resourceType: "Device", meta: { tag } }))
      const a = str((yield* device([{ system: "urn:t:1", code: "a" }])).body, "id")
      const b = str(
        (yield* device([
          { system: "urn:t:1", code: "b" },
          { system: "urn:t:2", code: "a" },
        ])).body,
        "id",
      )
      const c = str((yield* device([{ code: "a" }])).body, "id")
      yield* device([])
      const ids = (query: string) =>
        call(`${baseUrl}/Device?${query}&_count=50`).pipe(
          Effect.map((r) => {
            assert.strictEqual(r.status, 200, query)
            return ((at(r.body, "entry") ?? []) as Array<{ resource: { id: string } }>)
              .map((e) => e.resource.id)
              .sort()
          }),
        )
      const q = (v: string) => `_tag=${encodeURIComponent(v)}`
      assert.deepStrictEqual(yield* ids(q("urn:t:1|a")), [a])
      assert.deepStrictEqual(yield* ids(q("a")), [a, b, c].sort())
      assert.deepStrictEqual(yield* ids(q("urn:t:1|")), [a, b].sort())
      assert.deepStrictEqual(yield* ids(q("|a")), [c])
      assert.deepStrictEqual(yield* ids(q("urn:t:1|a,urn:t:2|a")), [a, b].sort())
      assert.deepStrictEqual(yield* ids(`${q("urn:t:1|")}&${q("urn:t:2|a")}`), [b])
      assert.deepStrictEqual(yield* ids(`${q("a")}&_id=${b}`), [b])
      assert.deepStrictEqual(yield* ids(q("urn:t:1|zzz")), [])
      const count = yield* call(`${baseUrl}/Device?${q("a")}&_summary=count`)
      assert.strictEqual(at(count.body, "total"), 3)
      // an update that changes the tags is re-indexed; a deleted resource no longer matches
      yield* call(
        `${baseUrl}/Device/${a}`,
        fhirJson("PUT", { resourceType: "Device", id: a, meta: { tag: [{ system: "urn:t:3", code: "x" }] } }),
      )
      assert.deepStrictEqual(yield* ids(q("urn:t:1|a")), [])
      assert.deepStrictEqual(yield* ids(q("urn:t:3|x")), [a])
      yield* call(`${baseUrl}/Device/${c}`, { method: "DELETE" })
      assert.deepStrictEqual(yield* ids(q("a")), [b])
      assert.strictEqual((yield* call(`${baseUrl}/Device?_tag=%7C`)).status, 400)
      const meta = yield* call(`${baseUrl}/metadata`)
      const params = at(meta.body, "rest.0.resource.0.searchParam") as Array<{ name: string }>
      assert.isTrue(params.some((p) => p.name === "_tag"))
    }),
  )

  it.effect(
    "If-None-Exist on _tag: REST create, transaction ifNoneExist and Binary (JSON and raw) match once",
    () =>
      Effect.gen(function* () {
        const { baseUrl } = yield* Sandbox
        const tag = { system: "urn:ferry:source", code: "Procedure/src-1" }
        const body = {
          resourceType: "Procedure",
          status: "completed",
          subject: { reference: "Patient/p" },
          meta: { tag: [tag] },
        }
        const header = { "If-None-Exist": "_tag=urn:ferry:source|Procedure/src-1" }
        const first = yield* call(`${baseUrl}/Procedure`, fhirJson("POST", body, header))
        assert.strictEqual(first.status, 201)
        const second = yield* call(`${baseUrl}/Procedure`, fhirJson("POST", body, header))
        assert.strictEqual(second.status, 200)
        assert.strictEqual(str(second.body, "id"), str(first.body, "id"))

        // a transaction's conditional creates go through the same search: the rerun matches every entry
        const bundle = {
          resourceType: "Bundle",
          type: "transaction",
          entry: ["src-1", "src-2", "src-3"].map((k) => ({
            fullUrl: `urn:uuid:00000000-0000-4000-8000-00000000000${k.slice(-1)}`,
            resource: { ...body, meta: { tag: [{ ...tag, code: `Procedure/${k}` }] } },
            request: {
              method: "POST",
              url: "Procedure",
              ifNoneExist: `_tag=urn:ferry:source|Procedure/${k}`,
            },
          })),
        }
        const tx1 = yield* call(baseUrl, fhirJson("POST", bundle))
        assert.strictEqual(tx1.status, 200)
        const statuses = (r: typeof tx1) =>
          (at(r.body, "entry") as Array<{ response: { status: string; location: string } }>).map((e) => [
            e.response.status.slice(0, 3),
            e.response.location.split("/")[1],
          ])
        const s1 = statuses(tx1)
        assert.deepStrictEqual(
          s1.map(([st]) => st),
          ["200", "201", "201"],
        )
        assert.strictEqual(s1[0]![1], str(first.body, "id"))
        const tx2 = yield* call(baseUrl, fhirJson("POST", bundle))
        const s2 = statuses(tx2)
        assert.deepStrictEqual(
          s2.map(([st]) => st),
          ["200", "200", "200"],
        )
        assert.deepStrictEqual(
          s2.map(([, id]) => id),
          s1.map(([, id]) => id),
        )
        const total = yield* call(`${baseUrl}/Procedure?_tag=urn%3Aferry%3Asource%7C&_summary=count`)
        assert.strictEqual(at(total.body, "total"), 3)

        const hash = { "If-None-Exist": "_tag=urn:ferry:sha256|abc" }
        const binary = {
          resourceType: "Binary",
          contentType: "text/plain",
          data: Buffer.from("once").toString("base64"),
          meta: { tag: [{ system: "urn:ferry:sha256", code: "abc" }] },
        }
        const b1 = yield* call(`${baseUrl}/Binary`, fhirJson("POST", binary, hash))
        assert.strictEqual(b1.status, 201)
        const b2 = yield* call(`${baseUrl}/Binary`, fhirJson("POST", binary, hash))
        assert.strictEqual(b2.status, 200)
        assert.strictEqual(str(b2.body, "id"), str(b1.body, "id"))
        const raw = yield* call(`${baseUrl}/Binary`, {
          method: "POST",
          headers: { "Content-Type": "text/plain", ...hash },
          body: "once",
        })
        assert.strictEqual(raw.status, 200)
        assert.strictEqual(str(raw.body, "id"), str(b1.body, "id"))
        assert.strictEqual((yield* call(`${baseUrl}/Binary/${str(b1.body, "id")}`)).text, "once")
      }),
  )

  it.effect("unknown routes, types and paths outside the base", () =>
    Effect.gen(function* () {
      const { baseUrl } = yield* Sandbox
      assert.strictEqual((yield* call(`${baseUrl}/patient`)).status, 404)
      assert.strictEqual((yield* call(`${baseUrl}/Foo/1`)).status, 404, "only R4 resource types")
      assert.strictEqual((yield* call(`${baseUrl}/Patient/a/b/c/d`)).status, 404)
      assert.strictEqual((yield* call(baseUrl.replace(/\/fhir$/, "/other"))).status, 404)
      assert.strictEqual((yield* call(`${baseUrl}/metadata`, { method: "DELETE" })).status, 405)
    }),
  )
})

describe("REST switches", () => {
  layer(
    Sandbox.layer(
      {
        refuseClientIds: true,
        rejectRule: [
          { type: "Observation", missing: "status" },
          { path: "gender", equals: "unknown" },
        ],
      },
      { plugins: [] },
    ),
  )("refuseClientIds and rejectRule", (it) => {
    it.effect("PUT of a new id is refused with 405; updating an existing one works", () =>
      Effect.gen(function* () {
        const { baseUrl } = yield* Sandbox
        const refused = yield* call(
          `${baseUrl}/Patient/client-x`,
          fhirJson("PUT", { ...patient("X"), id: "client-x" }),
        )
        assert.strictEqual(refused.status, 405)
        assert.strictEqual(at(refused.body, "resourceType"), "OperationOutcome")
        const created = yield* call(`${baseUrl}/Patient`, fhirJson("POST", patient("Y")))
        const id = str(created.body, "id")
        const ok = yield* call(`${baseUrl}/Patient/${id}`, fhirJson("PUT", { ...patient("Y2"), id }))
        assert.strictEqual(ok.status, 200)
        const meta = yield* call(`${baseUrl}/metadata`)
        const resources = at(meta.body, "rest.0.resource") as Array<{ updateCreate: boolean }>
        assert.isFalse(resources[0]!.updateCreate)
      }),
    )

    it.effect("resources matching a reject rule get 422", () =>
      Effect.gen(function* () {
        const { baseUrl } = yield* Sandbox
        const missing = yield* call(
          `${baseUrl}/Observation`,
          fhirJson("POST", { resourceType: "Observation", code: { text: "x" } }),
        )
        assert.strictEqual(missing.status, 422)
        assert.strictEqual(at(missing.body, "issue.0.code"), "business-rule")
        const fine = yield* call(
          `${baseUrl}/Observation`,
          fhirJson("POST", { resourceType: "Observation", status: "final", code: { text: "x" } }),
        )
        assert.strictEqual(fine.status, 201)
        const equals = yield* call(
          `${baseUrl}/Patient`,
          fhirJson("POST", patient("Z", { gender: "unknown" })),
        )
        assert.strictEqual(equals.status, 422)
      }),
    )
  })
})
