import { createHash } from "node:crypto"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { assert, describe, it, layer } from "@effect/vitest"
import { Effect } from "effect"
import { extractReferences } from "../src/internal/References.js"
import { Sandbox } from "../src/Sandbox.js"
import { seedPath } from "../src/Seed.js"
import { Store } from "../src/Store.js"
import { at, call, dataPath, str } from "./http.js"

const walkStrings = (node: unknown, f: (s: string) => void): void => {
  if (typeof node === "string") f(node)
  else if (Array.isArray(node)) for (const x of node) walkStrings(x, f)
  else if (typeof node === "object" && node !== null) for (const v of Object.values(node)) walkStrings(v, f)
}

describe("seeding", () => {
  layer(Sandbox.layer({ seed: [dataPath("synthea-bundles")] }, { plugins: [] }), { timeout: 120_000 })(
    "Synthea transaction Bundles",
    (it) => {
      it.effect("gives exactly 38,473 distinct resources with every Type/id reference resolving", () =>
        Effect.gen(function* () {
          const { store, baseUrl, loaded } = yield* Sandbox
          assert.strictEqual(store.countAll(), 38_473)
          assert.strictEqual(loaded.seeded[0]!.resources, 38_473)
          assert.strictEqual(store.count("Organization"), 203)
          assert.strictEqual(store.count("Practitioner"), 203)
          assert.strictEqual(store.count("Patient"), 100)
          assert.strictEqual(store.count("Group"), 1)
          let refs = 0
          const dangling: string[] = []
          let urns = 0
          for (const type of store.types()) {
            for (const r of store.iterate(type)) {
              assert.strictEqual(r.versionId, 1, `${r.type}/${r.id} written once`)
              const json = JSON.parse(r.json) as Record<string, unknown>
              for (const [, target] of extractReferences(json, baseUrl)) {
                refs++
                const [t, id] = target.split("/") as [string, string]
                if (store.read(t, id) === undefined) dangling.push(`${r.type}/${r.id} -> ${target}`)
              }
              walkStrings(json, (s) => {
                if (s.startsWith("urn:uuid:") && json.resourceType !== "Group") urns++
              })
            }
          }
          assert.isAbove(refs, 100_000)
          assert.deepStrictEqual(dangling, [])
          assert.strictEqual(urns, 0, "no urn:uuid references left")
          const group = yield* call(`${baseUrl}/Group`)
          const members = at(group.body, "entry.0.resource.member") as Array<{
            entity: { reference: string }
          }>
          assert.strictEqual(members.length, 100)
          assert.match(members[0]!.entity.reference, /^Patient\/[0-9a-f-]{36}$/)
          const obs = yield* call(
            `${baseUrl}/Observation?patient=${members[0]!.entity.reference}&_summary=count`,
          )
          assert.isAbove(at(obs.body, "total") as number, 0)
        }),
      )
    },
  )

  layer(
    Sandbox.layer({ seed: [dataPath("attachments"), dataPath("sample-bulk-10-patients")] }, { plugins: [] }),
    { timeout: 120_000 },
  )("NDJSON sample and attachments", (it) => {
    it.effect("the 10-patient NDJSON sample is stored as is, conditional references kept", () =>
      Effect.gen(function* () {
        const { store, loaded, baseUrl } = yield* Sandbox
        const ndjson = loaded.seeded.find((s) => s.kind === "ndjson")!
        assert.strictEqual(ndjson.resources, 7160)
        assert.strictEqual(store.count("Patient"), 13, "the sample holds 13 Patient lines")
        const enc = yield* call(`${baseUrl}/Encounter?_count=1`)
        assert.match(
          str(enc.body, "entry.0.resource.participant.0.individual.reference"),
          /^Practitioner\?identifier=/,
        )
      }),
    )

    it.effect(
      "each attachment file becomes a Binary referenced by a DocumentReference of a seeded patient",
      () =>
        Effect.gen(function* () {
          const { store, baseUrl, loaded } = yield* Sandbox
          const report = loaded.seeded.find((s) => s.kind === "attachments")!
          assert.strictEqual(report.files, 3)
          assert.strictEqual(
            loaded.seeded[loaded.seeded.length - 1]!.kind,
            "attachments",
            "attachments seed last",
          )
          const pdf = readFileSync(dataPath("attachments/document.pdf"))
          const docs = yield* call(`${baseUrl}/DocumentReference?_id=doc-document.pdf`)
          const attachment = at(docs.body, "entry.0.resource.content.0.attachment") as {
            url: string
            contentType: string
            size: number
            hash: string
          }
          assert.strictEqual(attachment.url, `${baseUrl}/Binary/document.pdf`)
          assert.strictEqual(attachment.contentType, "application/pdf")
          assert.strictEqual(attachment.size, pdf.length)
          assert.strictEqual(attachment.hash, createHash("sha1").update(pdf).digest("base64"))
          const subject = str(docs.body, "entry.0.resource.subject.reference")
          const [t, id] = subject.split("/") as [string, string]
          assert.isDefined(store.read(t, id))
          const raw = yield* call(attachment.url)
          assert.strictEqual(raw.headers.get("content-type"), "application/pdf")
          assert.isTrue(raw.bytes.equals(pdf))
          assert.strictEqual(store.count("Binary"), 3)
          const jpg = yield* call(`${baseUrl}/DocumentReference?_id=doc-DICOM.jpg`)
          assert.strictEqual(at(jpg.body, "entry.0.resource.content.0.attachment.contentType"), "image/jpeg")
        }),
    )
  })

  it("a seed file that is no JSON: the file (and line) in the error", () => {
    const dir = mkdtempSync(Path.join(tmpdir(), "ferry-seed-bad-"))
    const ndjson = Path.join(dir, "nd")
    mkdirSync(ndjson)
    writeFileSync(Path.join(ndjson, "x.ndjson"), '{"resourceType":"Patient","id":"a"}\n{bad\n')
    const bundles = Path.join(dir, "b")
    mkdirSync(bundles)
    writeFileSync(Path.join(bundles, "b.json"), '{"resourceType":"Bundle", bad')
    const store = Store.open(":memory:")
    try {
      assert.throws(
        () => seedPath(store, "http://x/fhir", ndjson),
        `${Path.join(ndjson, "x.ndjson")}:2 is not valid JSON (`,
      )
      assert.throws(
        () => seedPath(store, "http://x/fhir", bundles),
        `${Path.join(bundles, "b.json")} is not valid JSON (`,
      )
    } finally {
      store.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
