import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { Effect } from "effect"
import { Sandbox } from "../src/Sandbox.js"
import { Store } from "../src/Store.js"
import { at, call, fhirJson } from "./http.js"

const ids = (it: Iterable<{ id: string }>) => [...it].map((r) => r.id)

describe("Store", () => {
  it("a database file and its WAL files are the owner's only (0600), whatever the umask", () => {
    const dir = mkdtempSync(join(tmpdir(), "ferry-store-mode-"))
    const before = process.umask(0)
    try {
      const path = join(dir, "sandbox.db")
      const s = Store.open(path)
      s.create({ resourceType: "Patient" })
      for (const f of [path, `${path}-wal`, `${path}-shm`])
        assert.strictEqual((statSync(f).mode & 0o777).toString(8), "600", f)
      s.close()
    } finally {
      process.umask(before)
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("a --db that holds something else is refused as it is: its mode and bytes untouched, a next step said", () => {
    const dir = mkdtempSync(join(tmpdir(), "ferry-store-other-"))
    try {
      const path = join(dir, "notes.txt")
      writeFileSync(path, "not a database\n", { mode: 0o644 })
      chmodSync(path, 0o644)
      assert.throws(() => Store.open(path), /not a sandbox database .*give --db a new file name/)
      assert.strictEqual((statSync(path).mode & 0o777).toString(8), "644")
      assert.strictEqual(readFileSync(path, "utf8"), "not a database\n")
      // an empty file is a new database
      const empty = join(dir, "empty.db")
      writeFileSync(empty, "")
      Store.open(empty).close()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("now() is strictly increasing", () => {
    const s = Store.open(":memory:")
    let prev = ""
    for (let i = 0; i < 2000; i++) {
      const t = s.now()
      assert.isTrue(t > prev)
      assert.match(t, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/)
      prev = t
    }
    s.close()
  })

  it("create/update/delete keep versions, meta and tombstones", () => {
    const s = Store.open(":memory:")
    const c = s.create({
      resourceType: "Patient",
      id: "ignored",
      meta: { versionId: "7", tag: [{ code: "t" }] },
    })
    assert.notStrictEqual(c.id, "ignored")
    assert.strictEqual(c.versionId, 1)
    const json = JSON.parse(c.json)
    assert.deepStrictEqual(json.meta, { tag: [{ code: "t" }], versionId: "1", lastUpdated: c.lastUpdated })
    const u = s.update({ resourceType: "Patient", id: c.id, active: true })
    assert.isFalse(u.created)
    assert.strictEqual(u.stored.versionId, 2)
    assert.isTrue(s.update({ resourceType: "Patient", id: "p2" }).created)
    const since = s.now()
    assert.isTrue(s.delete("Patient", "p2"))
    assert.isFalse(s.delete("Patient", "p2"))
    assert.isUndefined(s.read("Patient", "p2"))
    assert.deepStrictEqual(ids(s.iterate("Patient")), [c.id])
    const tomb = [...s.deleted("Patient", { since })]
    assert.deepStrictEqual(
      tomb.map((t) => t.id),
      ["p2"],
    )
    assert.deepStrictEqual([...s.deleted("Patient", { since: s.now() })], [])
    assert.isTrue(
      s.update({ resourceType: "Patient", id: "p2" }).created,
      "a PUT brings a deleted resource back",
    )
    assert.deepStrictEqual(s.types(), ["Patient"])
    assert.strictEqual(s.count("Patient"), 2)
    assert.strictEqual(s.count("Patient", { since }), 1)
    s.close()
  })

  it("tx is all-or-nothing and shares one lastUpdated", () => {
    const s = Store.open(":memory:")
    assert.throws(() =>
      s.tx(() => {
        s.update({ resourceType: "Patient", id: "a" })
        throw new Error("boom")
      }),
    )
    assert.strictEqual(s.count("Patient"), 0)
    const [a, b] = s.tx(() => [
      s.update({ resourceType: "Patient", id: "a" }),
      s.update({ resourceType: "Patient", id: "b" }),
    ])
    assert.strictEqual(a!.stored.lastUpdated, b!.stored.lastUpdated)
    s.close()
  })

  it("iterate pages past 500 rows, filters by references (relative and absolute), ids, since/until", () => {
    const s = Store.open(":memory:")
    s.setBaseUrl("http://127.0.0.1:1/fhir")
    s.tx(() => {
      for (let i = 0; i < 1200; i++)
        s.update({
          resourceType: "Observation",
          id: `o${String(i).padStart(4, "0")}`,
          subject: { reference: i % 3 === 0 ? "Patient/a" : "http://127.0.0.1:1/fhir/Patient/b/_history/2" },
          performer: [{ reference: "Practitioner/x" }],
          extension: [{ url: "u", valueReference: { reference: "Patient/a" } }],
        })
    })
    assert.strictEqual(ids(s.iterate("Observation")).length, 1200)
    assert.strictEqual(
      ids(s.iterate("Observation", { referencing: { targets: ["Patient/a"] } })).length,
      1200,
    )
    assert.strictEqual(
      ids(s.iterate("Observation", { referencing: { targets: ["Patient/a"], paths: ["subject"] } })).length,
      400,
    )
    assert.strictEqual(
      ids(s.iterate("Observation", { referencing: { targets: ["Patient/b"], paths: ["subject"] } })).length,
      800,
    )
    assert.strictEqual(ids(s.iterate("Observation", { referencing: { targets: ["Patient/c"] } })).length, 0)
    assert.deepStrictEqual(ids(s.iterate("Observation", { ids: ["o0001", "o0002", "zz"] })), [
      "o0001",
      "o0002",
    ])
    const all = [...s.iterate("Observation")]
    const sorted = [...all].sort((x, y) => (x.lastUpdated + x.id < y.lastUpdated + y.id ? -1 : 1))
    assert.deepStrictEqual(ids(all), ids(sorted))
    const later = s.now()
    s.update({ resourceType: "Observation", id: "late" })
    assert.deepStrictEqual(ids(s.iterate("Observation", { since: later })), ["late"])
    assert.strictEqual(ids(s.iterate("Observation", { until: later })).length, 1200)
    // other statements may run while an iteration is suspended
    const it = s.iterate("Observation")
    it.next()
    s.update({ resourceType: "Patient", id: "during" })
    assert.strictEqual(ids(it).length, 1200)
    s.close()
  })

  it("an update or a delete removes exactly the resource's earlier reference and identifier rows", () => {
    const s = Store.open(":memory:")
    const obs = (id: string, patient: string, value: string) => ({
      resourceType: "Observation",
      id,
      subject: { reference: `Patient/${patient}` },
      performer: [{ reference: `Patient/${patient}` }, { reference: "Practitioner/x" }],
      identifier: [{ system: "urn:s", value }, { value }],
    })
    s.update(obs("o1", "a", "v1"))
    s.update(obs("o2", "a", "v2"))
    const referencing = (target: string, paths?: Array<string>) =>
      ids(
        s.iterate("Observation", { referencing: { targets: [target], ...(paths ? { paths } : {}) } }),
      ).sort()
    const identified = (value: string) => ids(s.iterate("Observation", { identifier: { value } })).sort()
    assert.deepStrictEqual(referencing("Patient/a"), ["o1", "o2"])
    s.update(obs("o1", "b", "v9"))
    assert.deepStrictEqual(referencing("Patient/a"), ["o2"])
    assert.deepStrictEqual(referencing("Patient/b", ["performer"]), ["o1"])
    assert.deepStrictEqual(referencing("Practitioner/x"), ["o1", "o2"])
    assert.deepStrictEqual(identified("v1"), [])
    assert.deepStrictEqual(identified("v9"), ["o1"])
    assert.isTrue(s.delete("Observation", "o2"))
    assert.deepStrictEqual(referencing("Patient/a"), [])
    assert.deepStrictEqual(referencing("Practitioner/x"), ["o1"])
    assert.deepStrictEqual(identified("v2"), [])
    // back from the tombstone: its rows again, once
    s.update(obs("o2", "c", "v2"))
    assert.deepStrictEqual(referencing("Patient/c"), ["o2"])
    assert.deepStrictEqual(identified("v2"), ["o2"])
    s.close()
  })

  it("a database written before resources.keys: its older rows are cleaned up through the old indexes", () => {
    const dir = mkdtempSync(join(tmpdir(), "ferry-store-legacy-"))
    try {
      const path = join(dir, "old.sqlite")
      const old = new Database(path)
      old.exec(`
        CREATE TABLE resources (type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
          last_updated TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, json TEXT);
        CREATE UNIQUE INDEX resources_pk ON resources (type, id);
        CREATE INDEX resources_by_time ON resources (type, last_updated, id);
        CREATE TABLE refs (target TEXT NOT NULL, src_type TEXT NOT NULL, path TEXT NOT NULL, src_id TEXT NOT NULL,
          PRIMARY KEY (target, src_type, path, src_id)) WITHOUT ROWID;
        CREATE INDEX refs_by_source ON refs (src_type, src_id);
        CREATE TABLE idents (type TEXT NOT NULL, value TEXT NOT NULL, system TEXT NOT NULL, id TEXT NOT NULL,
          PRIMARY KEY (type, value, system, id)) WITHOUT ROWID;
        CREATE INDEX idents_by_resource ON idents (type, id);
        CREATE TABLE binaries (id TEXT PRIMARY KEY, content_type TEXT NOT NULL, bytes BLOB NOT NULL);
        INSERT INTO resources VALUES ('Observation', 'o1', 1, '2026-01-01T00:00:00.000Z', 0,
          '{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/a"},"identifier":[{"value":"v1"}]}');
        INSERT INTO refs VALUES ('Patient/a', 'Observation', 'subject', 'o1');
        INSERT INTO idents VALUES ('Observation', 'v1', '', 'o1');`)
      old.close()
      const s = Store.open(path)
      const referencing = (target: string) =>
        ids(s.iterate("Observation", { referencing: { targets: [target] } }))
      assert.deepStrictEqual(referencing("Patient/a"), ["o1"])
      s.update({ resourceType: "Observation", id: "o1", subject: { reference: "Patient/b" } })
      assert.deepStrictEqual(referencing("Patient/a"), [])
      assert.deepStrictEqual(referencing("Patient/b"), ["o1"])
      assert.deepStrictEqual(ids(s.iterate("Observation", { identifier: { value: "v1" } })), [])
      s.update({ resourceType: "Observation", id: "o1", subject: { reference: "Patient/c" } })
      assert.deepStrictEqual(referencing("Patient/b"), [])
      assert.strictEqual(s.read("Observation", "o1")?.versionId, 3)
      s.close()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("reference filters give the same answers above and below the id-list threshold", () => {
    const s = Store.open(":memory:")
    s.tx(() => {
      for (let i = 0; i < 10_050; i++)
        s.update({
          resourceType: "Observation",
          id: `o${i}`,
          subject: { reference: i < 10_020 ? "Patient/big" : "Patient/small" },
          ...(i % 2 === 0 ? { performer: [{ reference: "Patient/big" }] } : {}),
        })
    })
    const big = [...s.iterate("Observation", { referencing: { targets: ["Patient/big"] } })]
    assert.strictEqual(big.length, 10_035, "10,020 subjects + 15 performers among the others")
    assert.strictEqual(
      new Set(big.map((r) => r.id)).size,
      10_035,
      "no duplicates from several matching paths",
    )
    assert.strictEqual(
      s.count("Observation", { referencing: { targets: ["Patient/big"], paths: ["subject"] } }),
      10_020,
    )
    assert.strictEqual(
      s.count("Observation", { referencing: { targets: ["Patient/big"], paths: ["performer"] } }),
      5025,
    )
    const both = s.count("Observation", { referencing: { targets: ["Patient/big", "Patient/small"] } })
    assert.strictEqual(both, 10_050)
    const small = [...s.iterate("Observation", { referencing: { targets: ["Patient/small"] } })]
    assert.strictEqual(small.length, 30)
    const paged = [
      ...s.iterate("Observation", {
        referencing: { targets: ["Patient/big"] },
        after: { lastUpdated: big[9_999]!.lastUpdated, id: big[9_999]!.id },
      }),
    ]
    assert.deepStrictEqual(
      paged.map((r) => r.id),
      big.slice(10_000).map((r) => r.id),
    )
    s.close()
  })

  it("binaries keep raw bytes; a JSON Binary with data is stored as bytes", () => {
    const s = Store.open(":memory:")
    const bytes = Buffer.from([1, 2, 3, 255])
    const stored = s.putBinary("b1", "application/x-test", bytes)
    assert.strictEqual(stored.type, "Binary")
    const got = s.getBinary("b1")!
    assert.isTrue(got.bytes.equals(bytes))
    assert.strictEqual(got.contentType, "application/x-test")
    assert.notInclude(got.stored.json, '"data"')
    s.create({
      resourceType: "Binary",
      contentType: "text/plain",
      data: Buffer.from("hi").toString("base64"),
    })
    const other = [...s.iterate("Binary")].find((r) => r.id !== "b1")!
    assert.strictEqual(s.getBinary(other.id)!.bytes.toString(), "hi")
    assert.isUndefined(s.getBinary("missing"))
    s.close()
  })
})

describe("persistence", () => {
  it.scoped("a file database survives a restart (write, close, reopen on another port, read)", () =>
    Effect.gen(function* () {
      const dir = mkdtempSync(join(tmpdir(), "ferry-sandbox-test-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const db = join(dir, "sandbox.db")
      const first = yield* Effect.scoped(
        Effect.gen(function* () {
          const { baseUrl } = yield* Sandbox
          const r = yield* call(
            `${baseUrl}/Patient/persist`,
            fhirJson("PUT", { resourceType: "Patient", id: "persist", active: true }),
          )
          assert.strictEqual(r.status, 201)
          yield* call(`${baseUrl}/Binary/persist-bin`, {
            method: "PUT",
            headers: { "Content-Type": "text/plain" },
            body: "kept",
          })
          return String(at(r.body, "meta.lastUpdated"))
        }).pipe(Effect.provide(Sandbox.layer({ db }, { plugins: [] }))),
      )
      yield* Effect.scoped(
        Effect.gen(function* () {
          const { baseUrl, store } = yield* Sandbox
          const r = yield* call(`${baseUrl}/Patient/persist`)
          assert.strictEqual(r.status, 200)
          assert.strictEqual(at(r.body, "meta.lastUpdated"), first)
          assert.strictEqual((yield* call(`${baseUrl}/Binary/persist-bin`)).text, "kept")
          assert.isTrue(store.now() > first)
        }).pipe(Effect.provide(Sandbox.layer({ db }, { plugins: [] }))),
      )
    }),
  )
})
