import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { forEachBundleEntry } from "../../src/internal/BundleStream.js"
import { seedAll } from "../../src/Seed.js"
import { Store } from "../../src/Store.js"
import { dataPath } from "../http.js"

const collect = (file: string, chunk: number) => {
  const out: unknown[] = []
  const type = forEachBundleEntry(file, (e) => out.push(e), chunk)
  return { type, out }
}

describe("forEachBundleEntry", () => {
  it("yields exactly the entries JSON.parse sees, whatever the chunk size (Synthea files)", () => {
    const dir = dataPath("synthea-bundles")
    const files = readdirSync(dir)
      .filter((f) => f.endsWith(".json"))
      .slice(0, 3)
    for (const f of files) {
      const file = join(dir, f)
      const doc = JSON.parse(readFileSync(file, "utf8")) as { resourceType: string; entry?: unknown[] }
      for (const chunk of [4096, 1 << 20]) {
        const { type, out } = collect(file, chunk)
        assert.strictEqual(type, doc.resourceType)
        assert.deepStrictEqual(out, doc.entry ?? [], `${f} @${chunk}`)
      }
    }
  })

  it("handles strings with braces, escapes, multi-byte characters split across reads, nested entry keys", () => {
    const dir = mkdtempSync(join(tmpdir(), "ferry-bundlestream-"))
    try {
      const doc = {
        id: "x",
        meta: { entry: [{ not: "this" }] },
        resourceType: "Bundle",
        entry: [
          {
            fullUrl: "urn:uuid:1",
            resource: { resourceType: "Patient", text: 'a "quoted" {brace} [x] \\ é漢字🙂' },
          },
          { resource: { resourceType: "Observation", entry: [1, 2], nested: { deep: [[{}]] } } },
          7,
          { fullUrl: "urn:uuid:3", resource: { resourceType: "Patient", name: [{ family: "Ölçü" }] } },
        ],
        total: 3,
        type: "transaction",
      }
      const file = join(dir, "b.json")
      writeFileSync(file, JSON.stringify(doc, null, 1))
      for (const chunk of [1, 2, 3, 5, 7, 64]) {
        const { type, out } = collect(file, chunk)
        assert.strictEqual(type, "Bundle")
        assert.deepStrictEqual(
          out,
          doc.entry.filter((e) => typeof e === "object"),
          `chunk ${chunk}`,
        )
      }
      writeFileSync(file, '{"resourceType":"Bundle","entry":[{"a":1}')
      assert.throws(() => collect(file, 8))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("seeding with every file streamed gives the same store as reading files whole", () => {
    const dir = dataPath("synthea-bundles")
    const pick = readdirSync(dir).filter((f) => /^(Abram|hospital|practitioner|groupInformation)/.test(f))
    const tmp = mkdtempSync(join(tmpdir(), "ferry-seedstream-"))
    try {
      for (const f of pick) writeFileSync(join(tmp, f), readFileSync(join(dir, f)))
      const whole = Store.open(":memory:")
      const streamed = Store.open(":memory:")
      const a = seedAll(whole, "http://x/fhir", [tmp])
      const b = seedAll(streamed, "http://x/fhir", [tmp], { streamAbove: 0 })
      assert.deepStrictEqual(a, b)
      assert.isAbove(a[0]!.resources, 500)
      for (const type of whole.types()) {
        const strip = (json: string) => {
          const { meta: _m, ...rest } = JSON.parse(json) as Record<string, unknown>
          return rest
        }
        const x = [...whole.iterate(type)]
          .map((r) => strip(r.json))
          .sort((p, q) => (String(p.id) < String(q.id) ? -1 : 1))
        const y = [...streamed.iterate(type)]
          .map((r) => strip(r.json))
          .sort((p, q) => (String(p.id) < String(q.id) ? -1 : 1))
        assert.deepStrictEqual(x, y, type)
      }
      whole.close()
      streamed.close()
    } finally {
      rmSync(tmp, { recursive: true, force: true })
    }
  })
})
