import { createHash } from "node:crypto"
import * as NFS from "node:fs"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import * as OS from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { FetchHttpClient } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import * as Archive from "@ferry/archive/Archive"
import * as Attachments from "@ferry/archive/Attachments"
import * as Imports from "@ferry/archive/Imports"
import * as Manifest from "@ferry/archive/Manifest"
import * as FhirClient from "@ferry/core/FhirClient"
import * as Sandbox from "@ferry/sandbox/Sandbox"
import { resolveConditionalReferences } from "@ferry/sandbox/Seed"
import { binaryIdFor, ownedBinaryIdFor, sha256TagSystem } from "@ferry/transform/AttachmentCopy"
import { originKey } from "@ferry/transform/Rewrite"
import { Effect, Stream } from "effect"
import * as Report from "../src/Report.js"
import * as Verify from "../src/Verify.js"
import { listening } from "@ferry/core/test/helpers/loopback"

const data = (name: string) => fileURLToPath(new URL(`../../../../shared/data/${name}`, import.meta.url))
const seed = [data("sample-bulk-10-patients"), data("attachments")]
const types = ["Condition", "DocumentReference", "Encounter", "Patient", "Procedure"]

const clientFor = (baseUrl: string) =>
  FhirClient.make({ baseUrl, retry: { base: "10 millis", times: 2 } }).pipe(
    Effect.provide(FetchHttpClient.layer),
  )

type Store = Sandbox.SandboxHandle["store"]

/** Two sandboxes seeded from the same folders, and clients on them. */
const pairOf = (folders: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const a = yield* Sandbox.start({ seed: folders } as never, { plugins: [] })
    const b = yield* Sandbox.start({ seed: folders } as never, { plugins: [] })
    return { a, b, source: yield* clientFor(a.baseUrl), target: yield* clientFor(b.baseUrl) }
  })

/** A source seeded from the sample and a target holding what a correct import of it holds. */
const pair = Effect.tap(pairOf(seed), ({ b }) => Effect.sync(() => resolveConditionalReferences(b.store)))

/**
 * A complete archive exported from `from` (a sandbox): its resources of `types` and the Binary payloads
 * their attachments point at, indexed by the URLs they were fetched from; checksums written.
 */
const archiveOf = (dir: string, from: Sandbox.SandboxHandle, types: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    let manifest = yield* Archive.create(dir, {
      tool: { name: "ferry", version: "test" },
      source: { baseUrl: from.baseUrl },
      request: { level: "system", url: `${from.baseUrl}/$export`, parameters: {} },
    })
    for (const type of types) {
      // a Binary as an export writes it: its payload inline (the sandbox stores that apart)
      const resources = [...from.store.iterate(type)].map((r) => {
        const resource = JSON.parse(r.json) as { resourceType: string; id: string }
        const blob = type === "Binary" ? from.store.getBinary(r.id) : undefined
        return blob === undefined ? resource : { ...resource, data: blob.bytes.toString("base64") }
      })
      const entry = yield* Archive.writeFile(dir, { section: "files", type }, Stream.fromIterable(resources))
      manifest = Manifest.addFiles(manifest, "files", [entry])
    }
    let count = 0
    let bytes = 0
    for (const binary of from.store.iterate("Binary")) {
      const blob = from.store.getBinary(binary.id)
      if (blob === undefined) continue
      yield* Attachments.put(dir, Stream.make(new Uint8Array(blob.bytes)), {
        contentType: blob.contentType,
        sourceUrl: `${from.baseUrl}/Binary/${binary.id}`,
      })
      count++
      bytes += blob.bytes.length
    }
    manifest = { ...manifest, complete: true, attachments: { count, bytes } }
    yield* Archive.writeManifest(dir, manifest)
    yield* Archive.writeChecksums(dir, manifest)
  })

const tempDir = Effect.acquireRelease(
  Effect.sync(() => NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-verify-"))),
  (dir) => Effect.sync(() => NFS.rmSync(dir, { recursive: true, force: true })),
)

/** Point the attachment of a stored DocumentReference at `url`. */
const pointAttachment = (store: Store, doc: string, url: string) => {
  const body = JSON.parse(store.read("DocumentReference", doc)?.json ?? "{}") as {
    content: Array<{ attachment: Record<string, unknown> }>
  }
  const content = body.content.map((c) => ({ ...c, attachment: { ...c.attachment, url } }))
  store.update({ ...body, id: doc, content })
}

const firstId = (store: Sandbox.SandboxHandle["store"], type: string): string => {
  for (const r of store.iterate(type, { limit: 1 })) return r.id
  throw new Error(`no ${type}`)
}

/** A CapabilityStatement listing `types`, each searchable. */
const capabilityOf = (types: ReadonlyArray<string>) => ({
  resourceType: "CapabilityStatement",
  status: "active",
  kind: "instance",
  fhirVersion: "4.0.1",
  format: ["json"],
  rest: [
    { mode: "server", resource: types.map((type) => ({ type, interaction: [{ code: "search-type" }] })) },
  ],
})

/**
 * A minimal FHIR server for the scope: its CapabilityStatement lists `types` (all searchable), each holding no
 * resource, except those in `forbidden`, whose searches are answered 403. Its base URL.
 */
const minimalServer = (
  types: ReadonlyArray<string>,
  forbidden: ReadonlyArray<string> = [],
  held: Readonly<Record<string, number>> = {},
) =>
  Effect.gen(function* () {
    const server = Http.createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x")
      const json = (status: number, body: unknown) =>
        res.writeHead(status, { "content-type": "application/fhir+json" }).end(JSON.stringify(body))
      if (url.pathname === "/fhir/metadata") return json(200, capabilityOf(types))
      const type = url.pathname.replace(/^\/fhir\//, "")
      if (forbidden.includes(type))
        return json(403, {
          resourceType: "OperationOutcome",
          issue: [{ severity: "error", code: "forbidden" }],
        })
      if (!types.includes(type))
        return json(404, {
          resourceType: "OperationOutcome",
          issue: [{ severity: "error", code: "not-found" }],
        })
      const n = held[type] ?? 0
      return json(200, {
        resourceType: "Bundle",
        type: "searchset",
        total: n,
        entry:
          url.searchParams.get("_summary") === "count"
            ? []
            : Array.from({ length: n }, (_, i) => ({
                resource: { resourceType: type, id: `${type.toLowerCase()}-${i}` },
              })),
      })
    })
    yield* listening(server)
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`
  })

/**
 * A target serving `lines` (resource texts, as written) of `type` in one searchset page, the way a server that
 * stores text serves it: numbers as written, and whatever else the texts hold (a duplicate key). Its base URL.
 */
const pageServer = (type: string, lines: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const server = Http.createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x")
      res.writeHead(200, { "content-type": "application/fhir+json" })
      if (url.pathname === "/fhir/metadata") return res.end(JSON.stringify(capabilityOf([type])))
      const entries =
        url.searchParams.get("_summary") === "count" ? [] : lines.map((l) => `{"resource":${l}}`)
      res.end(
        `{"resourceType":"Bundle","type":"searchset","total":${lines.length},"entry":[${entries.join(",")}]}`,
      )
    })
    yield* listening(server)
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`
  })

describe("Verify.run against sandboxes", () => {
  it.scoped(
    "a target page with one resource whose number texts cannot be kept (a duplicate key): that one is compared by values, its neighbours as written",
    () =>
      Effect.gen(function* () {
        // the target: the sandbox's store after a correct import (conditional references resolved)
        const { source, b } = yield* pair
        const lines = [...b.store.iterate("MedicationRequest")].map((r) => r.json)
        const withDose = lines.filter((l) => l.includes(":1.0")).length
        assert.isAbove(withDose, 10, "the sample writes doses as 1.0")
        // one resource holding a 1.0, with its status given twice: its own texts cannot be kept
        const odd = lines.findIndex((l) => l.includes(":1.0") && l.includes('"status":"'))
        lines[odd] = lines[odd]!.replace(/"status":"([a-z-]+)"/, '"status":"$1","status":"$1"')
        const oddKey = `MedicationRequest/${(JSON.parse(lines[odd]!) as { id: string }).id}`
        const r = yield* Verify.run({
          source: { _tag: "Server", client: source },
          target: yield* clientFor(yield* pageServer("MedicationRequest", lines)),
          types: ["MedicationRequest"],
        })
        assert.strictEqual(r.verdict, "clean", JSON.stringify(r.differences.slice(0, 3)))
        assert.isTrue(
          r.notes.some((n) => n.startsWith("1 resource(s) were compared by their decimals' values")),
        )
        // a target that wrote the neighbours' 1.0 as 1 (the odd one keeps its texts): their precision loss
        // shows, on the same page as the resource whose texts cannot be kept
        const r2 = yield* Verify.run({
          source: { _tag: "Server", client: source },
          target: yield* clientFor(
            yield* pageServer(
              "MedicationRequest",
              lines.map((l, i) => (i === odd ? l : l.replaceAll(":1.0", ":1"))),
            ),
          ),
          types: ["MedicationRequest"],
        })
        assert.strictEqual(r2.verdict, "differences")
        assert.strictEqual(r2.totals.differing, withDose - 1)
        assert.isFalse(r2.differences.some((d) => d.source === oddKey))
      }),
    60_000,
  )

  it.scoped(
    "a source server listing fewer types than the target is not asked about the others; a type the target lists but forbids is noted, not fatal",
    () =>
      Effect.gen(function* () {
        const source = yield* clientFor(yield* minimalServer(["Patient"]))
        const target = yield* clientFor(
          yield* minimalServer(["Patient", "Observation", "AuditEvent"], ["AuditEvent"]),
        )
        const r = yield* Verify.run({ source: { _tag: "Server", client: source }, target })
        assert.strictEqual(r.verdict, "clean")
        assert.isTrue(
          r.notes.some((n) => n.startsWith("not looked at: AuditEvent")),
          JSON.stringify(r.notes),
        )
        // what the target holds of a type the source does not list is extra, and the report says what it assumed
        const holding = yield* clientFor(
          yield* minimalServer(["Patient", "Observation"], [], { Observation: 1 }),
        )
        const r2 = yield* Verify.run({ source: { _tag: "Server", client: source }, target: holding })
        assert.strictEqual(r2.totals.extra, 1)
        assert.isTrue(
          r2.notes.some((n) => n.startsWith("Observation: not in the source server's CapabilityStatement")),
          JSON.stringify(r2.notes),
        )
      }),
    60_000,
  )

  it.scoped(
    "a source that forbids a search of a type asked for (403): an authorization failure (exit 3)",
    () =>
      Effect.gen(function* () {
        const source = yield* clientFor(yield* minimalServer(["Patient"], ["Patient"]))
        const target = yield* clientFor(yield* minimalServer(["Patient"]))
        const e = yield* Effect.flip(
          Verify.run({ source: { _tag: "Server", client: source }, target, types: ["Patient"] }),
        )
        assert.strictEqual(e._tag, "VerifyError")
        assert.strictEqual((e as { reason?: unknown }).reason, "Auth")
        assert.include(e.message, "403")
      }),
  )

  it.scoped(
    "identical source and target: clean, every resource compared, attachments compared by payload",
    () =>
      Effect.gen(function* () {
        const { source, target, a } = yield* pair
        const r = yield* Verify.run({ source: { _tag: "Server", client: source }, target, types })
        assert.strictEqual(r.verdict, "clean")
        const total = types.reduce((n, t) => n + a.store.count(t), 0)
        assert.strictEqual(r.totals.compared, total)
        assert.strictEqual(r.totals.matching, total)
        assert.strictEqual(r.totals.attachments, 3)
        assert.strictEqual(r.totals.attachmentMismatches, 0)
        assert.isNull(r.sample)
        assert.deepStrictEqual(r.differences, [])
      }),
    60_000,
  )

  it.scoped(
    "a corrupted target: 1 differing (with a field diff), 1 missing, 1 attachment mismatch, reported in HTML",
    () =>
      Effect.gen(function* () {
        const { source, target, b } = yield* pair
        const patient = firstId(b.store, "Patient")
        const stored = b.store.read("Patient", patient)
        assert.isDefined(stored)
        const body = JSON.parse(stored?.json ?? "{}") as Record<string, unknown>
        b.store.update({ ...body, id: patient, gender: "other<script>" })
        const condition = firstId(b.store, "Condition")
        b.store.delete("Condition", condition)
        const binary = firstId(b.store, "Binary")
        const bin = b.store.getBinary(binary)
        b.store.putBinary(binary, bin?.contentType ?? "application/octet-stream", Buffer.from("other bytes"))

        const r = yield* Verify.run({ source: { _tag: "Server", client: source }, target, types })
        assert.strictEqual(r.verdict, "differences")
        assert.strictEqual(r.totals.differing, 1)
        assert.strictEqual(r.totals.missing, 1)
        assert.strictEqual(r.totals.extra, 0)
        assert.strictEqual(r.totals.attachmentMismatches, 1)
        const differing = r.differences.find((d) => d.kind === "differing")
        assert.strictEqual(differing?.source, `Patient/${patient}`)
        assert.deepStrictEqual(
          differing?.fields?.map((f) => [f.path, f.target]),
          [["gender", '"other<script>"']],
        )
        assert.strictEqual(r.differences.find((d) => d.kind === "missing")?.source, `Condition/${condition}`)
        assert.strictEqual(r.attachments[0]?.detail, "the payloads differ (sha256)")
        const condRow = r.types.find((t) => t.type === "Condition")
        assert.strictEqual((condRow?.sourceCount ?? 0) - (condRow?.targetCount ?? 0), 1)

        const dir = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-verify-"))
        const paths = yield* Report.write(dir, r)
        const html = NFS.readFileSync(paths.html, "utf8")
        assert.include(html, `Patient/${patient}`)
        assert.include(html, `Condition/${condition}`)
        assert.include(html, "the payloads differ")
        assert.include(html, "&quot;other&lt;script&gt;&quot;")
        assert.notInclude(html, "<script")
        assert.notMatch(html, /(src|href)=["']?https?:/)
        assert.strictEqual((NFS.statSync(paths.json).mode & 0o777).toString(8), "600")
        assert.strictEqual((NFS.statSync(paths.html).mode & 0o777).toString(8), "600")
        const json = JSON.parse(NFS.readFileSync(paths.json, "utf8")) as Verify.Report
        assert.strictEqual(json.totals.missing, 1)
        NFS.rmSync(dir, { recursive: true, force: true })
      }),
    60_000,
  )

  it.scoped(
    "an extra resource on the target is reported as extra",
    () =>
      Effect.gen(function* () {
        const { source, target, b } = yield* pair
        b.store.update({ resourceType: "Patient", id: "only-on-target", gender: "unknown" })
        const r = yield* Verify.run({
          source: { _tag: "Server", client: source },
          target,
          types: ["Patient"],
        })
        assert.strictEqual(r.verdict, "differences")
        assert.strictEqual(r.totals.extra, 1)
        assert.strictEqual(r.totals.missing, 0)
        assert.strictEqual(r.totals.differing, 0)
        assert.deepStrictEqual(r.differences, [
          { kind: "extra", type: "Patient", target: "Patient/only-on-target" },
        ])
        // the report says the other types were not looked at
        assert.include(
          r.notes,
          "only the types asked for (--type Patient) were compared; the target's resources of other types were not counted",
        )
      }),
    60_000,
  )

  it.scoped(
    "conditional and urn:uuid references stored on the target are not resolved there: they compare as different",
    () =>
      Effect.gen(function* () {
        // the target holds the seed as is: its Encounters keep `Practitioner?identifier=…` references
        const { source, target, a, b } = yield* pairOf(seed)
        const patient = firstId(b.store, "Patient")
        // the source's Patient designates an Organization; the target's holds a urn:uuid: in its place
        const urn = "urn:uuid:6f1d3c7e-4b8a-4f7e-9c1a-2b3c4d5e6f70"
        const organization = `Organization/${firstId(a.store, "Organization")}`
        for (const [store, reference] of [
          [a.store, organization],
          [b.store, urn],
        ] as const) {
          const body = JSON.parse(store.read("Patient", patient)?.json ?? "{}") as Record<string, unknown>
          store.update({ ...body, id: patient, managingOrganization: { reference } })
        }
        const r = yield* Verify.run({
          source: { _tag: "Server", client: source },
          target,
          types: ["Patient", "Encounter"],
        })
        assert.strictEqual(r.verdict, "differences")
        const encounters = a.store.count("Encounter")
        assert.isAbove(encounters, 0)
        assert.strictEqual(r.types.find((t) => t.type === "Encounter")?.differing, encounters)
        const encounter = r.differences.find((d) => d.type === "Encounter")
        assert.isTrue(
          encounter?.fields?.some(
            (f) => f.target?.includes("unresolvable:Practitioner?identifier=") === true,
          ),
          JSON.stringify(encounter?.fields),
        )
        assert.deepStrictEqual(
          r.differences.filter((d) => d.type === "Patient").map((d) => [d.kind, d.source]),
          [["differing", `Patient/${patient}`]],
        )
        const fields = r.differences.find((d) => d.type === "Patient")?.fields
        assert.deepStrictEqual(
          fields?.map((f) => [f.path, f.source, f.target]),
          [
            [
              "managingOrganization.reference",
              JSON.stringify(organization),
              JSON.stringify(`unresolvable:${urn}`),
            ],
          ],
        )
        assert.isFalse(r.notes.some((n) => n.includes("searching the target")))
      }),
    60_000,
  )

  it.scoped(
    "a target attachment URL still on the source server is a mismatch even while the source serves it",
    () =>
      Effect.gen(function* () {
        // each seeded attachment: DocumentReference doc-<file> → Binary <file> on the server's own base
        const { source, target, a, b } = yield* pairOf([data("attachments")])
        // what `migrate --no-attachments` leaves: the target's document still at the source's Binary
        pointAttachment(b.store, "doc-document.pdf", `${a.baseUrl}/Binary/document.pdf`)
        // relative: the target's own Binary (resolved against the server holding the resource), fine
        pointAttachment(b.store, "doc-DICOM.jpg", "Binary/DICOM.jpg")
        const r = yield* Verify.run({
          source: { _tag: "Server", client: source },
          target,
          types: ["DocumentReference"],
        })
        assert.strictEqual(r.verdict, "differences")
        assert.strictEqual(r.totals.differing, 0)
        assert.strictEqual(r.totals.attachments, 3)
        assert.strictEqual(r.totals.attachmentMismatches, 1)
        assert.strictEqual(r.attachments[0]?.resource, "DocumentReference/doc-document.pdf")
        assert.include(r.attachments[0]?.detail ?? "", "still points at the source server")
        assert.include(r.attachments[0]?.detail ?? "", `${a.baseUrl}/Binary/document.pdf`)
      }),
    60_000,
  )

  it.scoped(
    "an attachment with its content inline and a url: the url is followed too, and must lead to that content",
    () =>
      Effect.gen(function* () {
        const { source, target, a, b } = yield* pairOf([data("attachments")])
        const pdf = a.store.getBinary("document.pdf")!.bytes.toString("base64")
        const inline = (store: Store, url: string) => {
          const body = JSON.parse(store.read("DocumentReference", "doc-document.pdf")?.json ?? "{}") as {
            content: Array<{ attachment: Record<string, unknown> }>
          }
          const content = body.content.map((c) => ({ ...c, attachment: { ...c.attachment, data: pdf, url } }))
          store.update({ ...body, id: "doc-document.pdf", content })
        }
        inline(a.store, "Binary/document.pdf")
        inline(b.store, "Binary/document.pdf")
        const dir = yield* tempDir
        yield* archiveOf(dir, a, ["Binary", "DocumentReference"])
        const run = (archive = dir) =>
          Effect.all([
            Verify.run({ source: { _tag: "Server", client: source }, target, types: ["DocumentReference"] }),
            Verify.run({ source: { _tag: "Archive", dir: archive }, target, types: ["DocumentReference"] }),
          ])
        for (const clean of yield* run()) {
          assert.strictEqual(clean.verdict, "clean", JSON.stringify(clean.attachments))
          assert.strictEqual(clean.totals.attachments, 3)
        }
        // a url on a host of neither server, on both sides as the source had it (the import leaves it): not
        // fetched, no mismatch (the host does not resolve)
        inline(a.store, "https://files.example.invalid/document.pdf")
        inline(b.store, "https://files.example.invalid/document.pdf")
        const external = yield* tempDir
        yield* archiveOf(external, a, ["Binary", "DocumentReference"])
        for (const clean of yield* run(external))
          assert.strictEqual(clean.verdict, "clean", JSON.stringify(clean.attachments))
        // a url naming a contained resource (`#id`): not fetched
        inline(a.store, "#pdf")
        inline(b.store, "#pdf")
        const contained = yield* tempDir
        yield* archiveOf(contained, a, ["Binary", "DocumentReference"])
        for (const clean of yield* run(contained))
          assert.strictEqual(clean.verdict, "clean", JSON.stringify(clean.attachments))
        inline(a.store, "Binary/document.pdf")
        // the data kept, the url re-pointed at other bytes; then at the source server
        inline(b.store, "Binary/DICOM.jpg")
        for (const r of yield* run()) {
          assert.strictEqual(r.verdict, "differences")
          assert.strictEqual(r.totals.differing, 0)
          assert.strictEqual(r.totals.attachmentMismatches, 1)
          assert.strictEqual(r.attachments[0]?.resource, "DocumentReference/doc-document.pdf")
          assert.include(r.attachments[0]?.detail ?? "", "the payloads differ")
        }
        inline(b.store, `${a.baseUrl}/Binary/document.pdf`)
        for (const r of yield* run()) {
          assert.strictEqual(r.totals.attachmentMismatches, 1)
          assert.include(r.attachments[0]?.detail ?? "", "still points at the source server")
        }
      }),
    60_000,
  )

  it.scoped(
    "server source: a Binary named like an attachment copy whose bytes are not what it names is extra",
    () =>
      Effect.gen(function* () {
        const { source, target, a, b } = yield* pairOf([])
        for (const store of [a.store, b.store])
          store.update({ resourceType: "Patient", id: "p1", gender: "female" })
        const hello = Buffer.from("hello")
        b.store.putBinary(binaryIdFor(createHash("sha256").update(hello).digest("hex")), "text/plain", hello)
        const clean = yield* Verify.run({ source: { _tag: "Server", client: source }, target })
        assert.strictEqual(clean.verdict, "clean", JSON.stringify(clean.differences))
        b.store.putBinary(binaryIdFor("0".repeat(64)), "text/plain", Buffer.from("sneaky"))
        const r = yield* Verify.run({ source: { _tag: "Server", client: source }, target })
        assert.strictEqual(r.verdict, "differences")
        assert.deepStrictEqual(
          r.differences.map((d) => `${d.kind} ${d.target}`),
          [`extra Binary/${binaryIdFor("0".repeat(64))}`],
        )
      }),
    60_000,
  )

  it.scoped(
    "meta.source: one the target set where the source had none (a $import job's) is no difference; one the source had must stay",
    () =>
      Effect.gen(function* () {
        const { source, target, a, b } = yield* pair
        const [first, second] = [...a.store.iterate("Patient", { limit: 2 })]
        const on = (store: Store, r: { id: string; json: string }, metaSource: string) => {
          const body = JSON.parse(r.json) as { meta?: object }
          store.update({ ...body, id: r.id, meta: { ...body.meta, source: metaSource } })
        }
        on(b.store, first!, "http://source.example/fhir")
        on(a.store, second!, "http://ehr.example/a")
        on(b.store, second!, "http://ehr.example/a#req-42")
        const clean = yield* Verify.run({
          source: { _tag: "Server", client: source },
          target,
          types: ["Patient"],
        })
        assert.strictEqual(clean.verdict, "clean", JSON.stringify(clean.differences))
        on(b.store, second!, "http://other.example/b")
        const changed = yield* Verify.run({
          source: { _tag: "Server", client: source },
          target,
          types: ["Patient"],
        })
        assert.deepStrictEqual(
          changed.differences.map((d) => [d.kind, d.source, d.fields?.map((f) => f.path)]),
          [["differing", `Patient/${second!.id}`, ["meta.source"]]],
        )
      }),
    60_000,
  )

  it.scoped(
    "server source: Binary resources are compared one by one (a content type changed on the target is a difference)",
    () =>
      Effect.gen(function* () {
        const { source, target, b } = yield* pairOf([data("attachments")])
        const clean = yield* Verify.run({ source: { _tag: "Server", client: source }, target })
        assert.strictEqual(clean.verdict, "clean")
        assert.strictEqual(clean.types.find((t) => t.type === "Binary")?.compared, 3)
        const stored = b.store.getBinary("DICOM.jpg")
        assert.isDefined(stored)
        b.store.putBinary("DICOM.jpg", "image/png", stored!.bytes)
        const r = yield* Verify.run({ source: { _tag: "Server", client: source }, target })
        assert.strictEqual(r.verdict, "differences")
        assert.strictEqual(r.totals.differing, 1)
        assert.deepStrictEqual(
          r.differences.map((d) => [d.kind, d.source, d.fields?.map((f) => [f.path, f.source, f.target])]),
          [["differing", "Binary/DICOM.jpg", [["contentType", '"image/jpeg"', '"image/png"']]]],
        )
      }),
    60_000,
  )

  it.scoped(
    "a post import's resources (new ids, this source's provenance tag) without the id map: the summary says to pass --id-map",
    () =>
      Effect.gen(function* () {
        const a = yield* Sandbox.start({}, { plugins: [] })
        const b = yield* Sandbox.start({}, { plugins: [] })
        const origin = originKey(a.baseUrl)
        for (const id of ["p1", "p2"]) {
          a.store.update({ resourceType: "Patient", id, gender: "female" })
          b.store.create({
            resourceType: "Patient",
            meta: { tag: [{ system: "urn:ferry:source", code: `Patient/${id}@${origin}` }] },
            gender: "female",
          })
        }
        const r = yield* Verify.run({
          source: { _tag: "Server", client: yield* clientFor(a.baseUrl) },
          target: yield* clientFor(b.baseUrl),
          types: ["Patient"],
        })
        assert.deepInclude(r.totals, { missing: 2, extra: 2 })
        assert.include(r.hint, "2 extra target resource(s) carry Ferry's provenance tag of this source")
        assert.isTrue(Report.summary(r).some((l) => l.includes("run again with --id-map")))
      }),
    60_000,
  )

  it.scoped(
    "the import's journaled --drop-meta: left out without the flag; a --drop-meta leaving out what it kept is refused (Config)",
    () =>
      Effect.gen(function* () {
        const { target, a, b } = yield* pairOf([])
        const labelled = (code: string) => ({
          resourceType: "Patient",
          id: "p1",
          meta: { tag: [{ system: "urn:example", code }] },
          gender: "female",
        })
        a.store.update(labelled("vip"))
        b.store.update({ resourceType: "Patient", id: "p1", gender: "female" })
        const dir = yield* tempDir
        yield* archiveOf(dir, a, ["Patient"])
        const journal = Imports.journalPath(dir, b.baseUrl)
        const drops = (data: ReadonlyArray<string>) => {
          NFS.mkdirSync(Path.dirname(journal), { recursive: true })
          NFS.writeFileSync(
            journal,
            `${JSON.stringify({ seq: 1, at: "2026-12-07T00:00:00Z", kind: "import.dropMeta", key: "import.dropMeta", data })}\n`,
          )
        }
        // the import dropped the tags: the target without them is clean, and the note says why
        drops(["tag"])
        const clean = yield* Verify.run({ source: { _tag: "Archive", dir }, target })
        assert.strictEqual(clean.verdict, "clean", JSON.stringify(clean.differences))
        assert.isTrue(
          clean.notes.some((n) =>
            n.startsWith(
              "meta.tag left out of the comparison, as the import dropped it (its journal says so)",
            ),
          ),
        )
        // the flag naming part of what it dropped: all it dropped is left out all the same
        drops(["tag", "security"])
        b.store.update({
          resourceType: "Patient",
          id: "p1",
          meta: { security: [{ system: "urn:example:label", code: "R" }] },
          gender: "female",
        })
        const part = yield* Verify.run({ source: { _tag: "Archive", dir }, target, ignoreMeta: ["tag"] })
        assert.strictEqual(part.verdict, "clean", JSON.stringify(part.differences))
        b.store.update({ resourceType: "Patient", id: "p1", gender: "female" })
        // it kept them: the target without them differs, and --drop-meta tag may not hide that
        drops([])
        const kept = yield* Verify.run({ source: { _tag: "Archive", dir }, target })
        assert.strictEqual(kept.verdict, "differences")
        const refused = yield* Effect.flip(
          Verify.run({ source: { _tag: "Archive", dir }, target, ignoreMeta: ["tag"] }),
        )
        assert.strictEqual(refused.reason, "Config")
        assert.include(refused.message, "--drop-meta tag leaves out meta.tag, which the import into")
        assert.include(refused.message, "it dropped nothing")
      }),
    60_000,
  )

  it.scoped(
    "a copy carrying this source's provenance tag is extra when the source is given under another loopback name; another source's tag is left out",
    () =>
      Effect.gen(function* () {
        const a = yield* Sandbox.start({}, { plugins: [] })
        const b = yield* Sandbox.start({}, { plugins: [] })
        // the import ran against 127.0.0.1 (its tags say so); the verify is given localhost
        const tag = (code: string) => ({ tag: [{ system: "urn:ferry:source", code }] })
        a.store.update({ resourceType: "Patient", id: "p1", gender: "female" })
        b.store.update({
          resourceType: "Patient",
          id: "p1",
          meta: tag(`Patient/p1@${originKey(a.baseUrl)}`),
          gender: "female",
        })
        // a duplicate of p1 (a second copy under a new id, this source's tag), and another source's resource
        b.store.create({
          resourceType: "Patient",
          meta: tag(`Patient/p1@${originKey(a.baseUrl)}`),
          gender: "female",
        })
        b.store.create({
          resourceType: "Patient",
          meta: tag(`Patient/p1@${originKey("https://other.example.org/fhir")}`),
          gender: "male",
        })
        const r = yield* Verify.run({
          source: { _tag: "Server", client: yield* clientFor(a.baseUrl.replace("127.0.0.1", "localhost")) },
          target: yield* clientFor(b.baseUrl),
          types: ["Patient"],
        })
        assert.strictEqual(r.verdict, "differences")
        assert.deepInclude(r.totals, { missing: 0, extra: 1, otherSources: 1 })
        // (the sandbox listens on 127.0.0.1 alone: the other loopback names are checked as names)
        assert.sameMembers(
          [...Verify.loopbackAliases("http://[::1]:8080/fhir")],
          [
            "http://[::1]:8080/fhir",
            "http://localhost:8080/fhir",
            "http://127.0.0.1:8080/fhir",
            "http://[::ffff:7f00:1]:8080/fhir",
          ],
        )
        assert.deepStrictEqual(Verify.loopbackAliases("https://fhir.example.org/r4"), [
          "https://fhir.example.org/r4",
        ])
      }),
    60_000,
  )

  it.scoped(
    "server source: the Binaries an import made for attachment payloads (put: ferry-<sha256>; post: tagged) are no extra",
    () =>
      Effect.gen(function* () {
        const { source, target, b } = yield* pairOf([data("attachments")])
        const dicom = b.store.getBinary("DICOM.jpg")!.bytes
        const sha = createHash("sha256").update(dicom).digest("hex")
        // put: the copy under its deterministic id, the document re-pointed at it
        b.store.putBinary(binaryIdFor(sha), "image/jpeg", dicom)
        pointAttachment(b.store, "doc-DICOM.jpg", `Binary/${binaryIdFor(sha)}`)
        // post: a server-assigned id, tagged with the sha256 (no attachment points at it here)
        b.store.create({
          resourceType: "Binary",
          meta: { tag: [{ system: sha256TagSystem, code: sha }] },
          contentType: "image/jpeg",
          data: dicom.toString("base64"),
        })
        const r = yield* Verify.run({ source: { _tag: "Server", client: source }, target })
        assert.strictEqual(r.verdict, "clean", JSON.stringify(r.differences))
        assert.strictEqual(r.totals.attachmentMismatches, 0)
        assert.isTrue(r.notes.some((n) => n.startsWith("2 Binary resource(s) on the target are the copies")))
        // another Binary the target holds of its own is extra
        b.store.putBinary("stray", "text/plain", Buffer.from("x"))
        const extra = yield* Verify.run({ source: { _tag: "Server", client: source }, target })
        assert.deepStrictEqual(
          extra.differences.map((d) => [d.kind, d.target]),
          [["extra", "Binary/stray"]],
        )
      }),
    60_000,
  )

  it.scoped(
    "a copy of an attachment made for one resource (put) must name it as its securityContext",
    () =>
      Effect.gen(function* () {
        const { source, target, b } = yield* pairOf([data("attachments")])
        const dicom = b.store.getBinary("DICOM.jpg")!.bytes
        const sha = createHash("sha256").update(dicom).digest("hex")
        const owner = "DocumentReference/doc-DICOM.jpg"
        const id = ownedBinaryIdFor(sha, owner)
        pointAttachment(b.store, "doc-DICOM.jpg", `Binary/${id}`)
        const run = () => Verify.run({ source: { _tag: "Server", client: source }, target })
        b.store.putBinary(id, "image/jpeg", dicom, owner)
        const clean = yield* run()
        assert.strictEqual(clean.verdict, "clean", JSON.stringify([clean.differences, clean.attachments]))
        assert.isTrue(
          clean.notes.some((n) => n.startsWith("1 Binary resource(s) on the target are the copies")),
        )
        for (const [context, says] of [
          [undefined, "has no securityContext"],
          ["DocumentReference/doc-document.pdf", "has securityContext DocumentReference/doc-document.pdf"],
        ] as const) {
          b.store.putBinary(id, "image/jpeg", dicom, context)
          const r = yield* run()
          assert.strictEqual(r.verdict, "differences")
          assert.strictEqual(r.totals.attachmentMismatches, 1)
          assert.strictEqual(r.attachments[0]?.resource, owner)
          assert.include(r.attachments[0]?.detail ?? "", says)
        }
      }),
    60_000,
  )

  it.scoped(
    "a resource with more differing fields than a diff lists: the first 50, and moreFields",
    () =>
      Effect.gen(function* () {
        const { source, target, a, b } = yield* pairOf([])
        const names = (suffix: string) => Array.from({ length: 60 }, (_, i) => ({ family: `F${i}${suffix}` }))
        a.store.update({ resourceType: "Patient", id: "many", name: names("") })
        b.store.update({ resourceType: "Patient", id: "many", name: names("x") })
        a.store.update({ resourceType: "Patient", id: "few", gender: "male" })
        b.store.update({ resourceType: "Patient", id: "few", gender: "female" })
        const r = yield* Verify.run({ source: { _tag: "Server", client: source }, target })
        const many = r.differences.find((d) => d.source === "Patient/many")
        assert.strictEqual(many?.fields?.length, Verify.fieldLimit)
        assert.strictEqual(many?.moreFields, true)
        const few = r.differences.find((d) => d.source === "Patient/few")
        assert.strictEqual(few?.fields?.length, 1)
        assert.isUndefined(few?.moreFields)
      }),
    60_000,
  )

  it.scoped(
    "archive source without Binary: a Binary on the target is extra unless it copies one of the archive's blobs",
    () =>
      Effect.gen(function* () {
        const { a, b, target } = yield* pairOf([])
        for (const store of [a.store, b.store])
          store.update({ resourceType: "Patient", id: "p1", gender: "female" })
        const hello = Buffer.from("hello")
        const sha = createHash("sha256").update(hello).digest("hex")
        a.store.putBinary("blob1", "text/plain", hello)
        const dir = yield* tempDir
        yield* archiveOf(dir, a, ["Patient"])
        // copies of the archive's blob (put: by id; post: tagged): no extra
        b.store.putBinary(binaryIdFor(sha), "text/plain", hello)
        b.store.create({
          resourceType: "Binary",
          meta: { tag: [{ system: sha256TagSystem, code: sha }] },
          contentType: "text/plain",
        })
        const clean = yield* Verify.run({ source: { _tag: "Archive", dir }, target })
        assert.strictEqual(clean.verdict, "clean", JSON.stringify(clean.differences))
        // another source's attachment copy (two sources migrated into one target): its, not an extra
        const theirs = Buffer.from("another source's payload")
        const theirSha = createHash("sha256").update(theirs).digest("hex")
        b.store.putBinary(binaryIdFor(theirSha), "text/plain", theirs)
        const shared = yield* Verify.run({ source: { _tag: "Archive", dir }, target })
        assert.strictEqual(shared.verdict, "clean", JSON.stringify(shared.differences))
        assert.strictEqual(shared.totals.otherSources, 1)
        // the target's own Binaries: a plain one, one named like a copy and one tagged like a copy of bytes the
        // archive holds no blob of (and which are not the bytes they name)
        const other = "0".repeat(64)
        b.store.putBinary("stray-note", "text/plain", Buffer.from("leftover"))
        b.store.putBinary(binaryIdFor(other), "text/plain", Buffer.from("sneaky"))
        const tagged = b.store.create({
          resourceType: "Binary",
          meta: { tag: [{ system: sha256TagSystem, code: other }] },
          contentType: "text/plain",
        })
        const r = yield* Verify.run({ source: { _tag: "Archive", dir }, target })
        assert.strictEqual(r.verdict, "differences")
        assert.deepStrictEqual(
          r.differences.map((d) => `${d.kind} ${d.target}`).sort(),
          [
            `extra Binary/${binaryIdFor(other)}`,
            `extra Binary/${tagged.id}`,
            "extra Binary/stray-note",
          ].sort(),
        )
      }),
    60_000,
  )

  it.scoped(
    "archive source: a target attachment URL under the archive's source base is a mismatch",
    () =>
      Effect.gen(function* () {
        const { target, a, b } = yield* pairOf([data("attachments")])
        const dir = yield* tempDir
        // the target holds the source's Binaries under their own ids, as an import of them leaves it
        yield* archiveOf(dir, a, ["Binary", "DocumentReference"])
        const clean = yield* Verify.run({ source: { _tag: "Archive", dir }, target })
        assert.strictEqual(clean.verdict, "clean", JSON.stringify(clean.attachments))
        assert.strictEqual(clean.totals.attachments, 3)

        // the source server still answers: the payload hashes alike, but the target holds no copy
        pointAttachment(b.store, "doc-portrait-1.jpg", `${a.baseUrl}/Binary/portrait-1.jpg`)
        const r = yield* Verify.run({ source: { _tag: "Archive", dir }, target })
        assert.strictEqual(r.verdict, "differences")
        assert.strictEqual(r.totals.attachmentMismatches, 1)
        assert.strictEqual(r.attachments[0]?.resource, "DocumentReference/doc-portrait-1.jpg")
        assert.include(r.attachments[0]?.detail ?? "", "still points at the source server")

        // the same source server under another name (localhost for 127.0.0.1), given with --source-base
        pointAttachment(b.store, "doc-portrait-1.jpg", "Binary/portrait-1.jpg")
        const alias = a.baseUrl.replace("127.0.0.1", "localhost")
        pointAttachment(b.store, "doc-DICOM.jpg", `${alias}/Binary/DICOM.jpg`)
        const aliased = yield* Verify.run({ source: { _tag: "Archive", dir }, target, sourceBases: [alias] })
        assert.strictEqual(aliased.verdict, "differences")
        assert.strictEqual(aliased.totals.attachmentMismatches, 1)
        assert.strictEqual(aliased.attachments[0]?.resource, "DocumentReference/doc-DICOM.jpg")
        assert.include(aliased.attachments[0]?.detail ?? "", "still points at the source server")
        // a loopback name is the same server without being told (as the IPv4-mapped IPv6 address)
        // (and the unspecified addresses and other 127.x.x.x ones, which reach the same listener on Linux)
        for (const host of ["localhost", "[::ffff:127.0.0.1]", "0.0.0.0", "127.0.0.2", "[::]"]) {
          pointAttachment(
            b.store,
            "doc-DICOM.jpg",
            `${a.baseUrl.replace("127.0.0.1", host)}/Binary/DICOM.jpg`,
          )
          const loopback = yield* Verify.run({ source: { _tag: "Archive", dir }, target })
          assert.strictEqual(loopback.totals.attachmentMismatches, 1, host)
          assert.include(loopback.attachments[0]?.detail ?? "", "still points at the source server")
        }
      }),
    60_000,
  )

  it.scoped(
    "archive source: a damaged manifest is the archive's failure (Source, exit 4), a folder without one a wrong flag (Config)",
    () =>
      Effect.gen(function* () {
        const { target, a } = yield* pairOf([data("attachments")])
        const dir = yield* tempDir
        yield* archiveOf(dir, a, ["DocumentReference"])
        const manifest = Path.join(dir, "manifest.json")
        NFS.writeFileSync(manifest, NFS.readFileSync(manifest, "utf8").slice(0, 200))
        const damaged = yield* Effect.flip(Verify.run({ source: { _tag: "Archive", dir }, target }))
        assert.strictEqual(damaged.reason, "Source")
        assert.notInclude(damaged.message, "check the flags")
        NFS.rmSync(manifest)
        const none = yield* Effect.flip(Verify.run({ source: { _tag: "Archive", dir }, target }))
        assert.strictEqual(none.reason, "Config")
        assert.include(none.message, "--archive")
      }),
    60_000,
  )

  it.scoped(
    "archive source: a resource of a type the archive has none of, on the target, is extra (unless --type leaves that type out)",
    () =>
      Effect.gen(function* () {
        const { target, a, b } = yield* pairOf([data("attachments")])
        const dir = yield* tempDir
        yield* archiveOf(dir, a, ["Binary", "DocumentReference"])
        // what a kill between the import's probe PUT and its DELETE leaves
        b.store.update({ resourceType: "Basic", id: "ferry-probe-1", code: { text: "probe" } })
        const r = yield* Verify.run({ source: { _tag: "Archive", dir }, target })
        assert.strictEqual(r.verdict, "differences")
        assert.strictEqual(r.totals.extra, 1)
        assert.deepStrictEqual(
          r.differences.filter((d) => d.kind === "extra"),
          [{ kind: "extra", type: "Basic", target: "Basic/ferry-probe-1" }],
        )
        const row = r.types.find((t) => t.type === "Basic")
        assert.deepStrictEqual([row?.sourceCount, row?.targetCount], [0, 1])
        // types the target holds nothing of are not in the report
        assert.deepStrictEqual(
          r.types.map((t) => t.type),
          ["Binary", "DocumentReference", "Basic"],
        )
        const only = yield* Verify.run({
          source: { _tag: "Archive", dir },
          target,
          types: ["Binary", "DocumentReference"],
        })
        assert.strictEqual(only.verdict, "clean")
      }),
    60_000,
  )

  it.scoped(
    "an incremental archive: its resources are compared and its deletions checked gone; the rest of the target is not extra",
    () =>
      Effect.gen(function* () {
        const a = yield* Sandbox.start({}, { plugins: [] })
        const b = yield* Sandbox.start({}, { plugins: [] })
        // both servers after the full migration and the change: p2 changed, c1 deleted
        for (const store of [a.store, b.store]) {
          for (const id of ["p1", "p2", "p3"]) store.update({ resourceType: "Patient", id, gender: "male" })
          store.update({ resourceType: "Patient", id: "p2", gender: "female" })
        }
        b.store.update({ resourceType: "Condition", id: "c0", subject: { reference: "Patient/p1" } })
        const dir = yield* tempDir
        let manifest = yield* Archive.create(dir, {
          tool: { name: "ferry", version: "test" },
          source: { baseUrl: a.baseUrl },
          request: { level: "system", url: `${a.baseUrl}/$export`, parameters: {} },
          previous: { transactionTime: "2026-01-01T00:00:00.000Z" },
        })
        const changed = yield* Archive.writeFile(
          dir,
          { section: "files", type: "Patient" },
          Stream.make({ resourceType: "Patient", id: "p2", gender: "female" }),
        )
        const gone = yield* Archive.writeFile(
          dir,
          { section: "deleted", type: "Bundle" },
          Stream.make({
            resourceType: "Bundle",
            type: "transaction",
            entry: [{ request: { method: "DELETE", url: "Condition/c1" } }],
          }),
        )
        manifest = Manifest.addFiles(Manifest.addFiles(manifest, "files", [changed]), "deleted", [gone])
        manifest = { ...manifest, complete: true }
        yield* Archive.writeManifest(dir, manifest)
        yield* Archive.writeChecksums(dir, manifest)
        const target = yield* clientFor(b.baseUrl)

        const clean = yield* Verify.run({ source: { _tag: "Archive", dir }, target })
        assert.strictEqual(clean.verdict, "clean", JSON.stringify(clean.differences))
        assert.strictEqual(clean.totals.compared, 1)
        assert.isTrue(clean.notes.some((n) => n.includes("an incremental archive")))

        // the deletion not applied, the change lost: both reported
        b.store.update({ resourceType: "Condition", id: "c1", subject: { reference: "Patient/p1" } })
        b.store.update({ resourceType: "Patient", id: "p2", gender: "male" })
        const r = yield* Verify.run({ source: { _tag: "Archive", dir }, target })
        assert.strictEqual(r.verdict, "differences")
        assert.deepStrictEqual(
          r.differences.map((d) => [d.kind, d.source ?? d.target, d.detail ?? ""]),
          [
            ["extra", "Condition/c1", "deleted at the source (this archive's deleted/), still on the target"],
            ["differing", "Patient/p2", ""],
          ],
        )
      }),
    60_000,
  )

  it.scoped(
    "sourceBases: a source reference under another base of the source server equals the target's relative one",
    () =>
      Effect.gen(function* () {
        const a = yield* Sandbox.start({}, { plugins: [] })
        const b = yield* Sandbox.start({}, { plugins: [] })
        const alias = "http://internal.example/fhir"
        const observation = { resourceType: "Observation", id: "o1", status: "final", code: { text: "x" } }
        a.store.update({ ...observation, subject: { reference: `${alias}/Patient/p1` } })
        b.store.update({ ...observation, subject: { reference: "Patient/p1" } })
        const run = (sourceBases?: ReadonlyArray<string>) =>
          Effect.gen(function* () {
            return yield* Verify.run({
              source: { _tag: "Server", client: yield* clientFor(a.baseUrl) },
              target: yield* clientFor(b.baseUrl),
              types: ["Observation"],
              ...(sourceBases !== undefined ? { sourceBases } : {}),
            })
          })
        assert.strictEqual((yield* run()).totals.differing, 1)
        const r = yield* run([alias])
        assert.strictEqual(r.verdict, "clean", JSON.stringify(r.differences))
      }),
    60_000,
  )

  it.scoped(
    "a non-identity id map: a reference to a resource it does not map is not equal to the target's same Type/id",
    () =>
      Effect.gen(function* () {
        const a = yield* Sandbox.start({}, { plugins: [] })
        const b = yield* Sandbox.start({}, { plugins: [] })
        // source: Patient/2 was not migrated; the target gave the migrated Patient/1 the id 2
        a.store.update({ resourceType: "Patient", id: "1", gender: "male" })
        a.store.update({ resourceType: "Patient", id: "2", gender: "female" })
        const observation = { resourceType: "Observation", status: "final", code: { text: "x" } }
        a.store.update({ ...observation, id: "o1", subject: { reference: "Patient/2" } })
        b.store.update({ resourceType: "Patient", id: "2", gender: "male" })
        // the reference to the resource not migrated stayed as written: it points at the wrong patient
        b.store.update({ ...observation, id: "n1", subject: { reference: "Patient/2" } })
        const dir = yield* tempDir
        const idMapPath = Path.join(dir, "idmap.ndjson")
        NFS.writeFileSync(
          idMapPath,
          '{"s":"Patient/1","t":"Patient/2"}\n{"s":"Observation/o1","t":"Observation/n1"}\n',
        )
        const r = yield* Verify.run({
          source: { _tag: "Server", client: yield* clientFor(a.baseUrl) },
          target: yield* clientFor(b.baseUrl),
          types: ["Observation"],
          idMapPath,
        })
        assert.strictEqual(r.verdict, "differences")
        assert.strictEqual(r.totals.differing, 1)
        assert.deepStrictEqual(
          r.differences[0]?.fields?.map((f) => [f.path, f.source, f.target]),
          [["subject.reference", '"unmapped:Patient/2"', '"Patient/2"']],
        )
      }),
    60_000,
  )

  it.scoped(
    "a non-identity id map: a source resource whose key collides with a mapped one is reported missing",
    () =>
      Effect.gen(function* () {
        const a = yield* Sandbox.start({}, { plugins: [] })
        const b = yield* Sandbox.start({}, { plugins: [] })
        a.store.update({ resourceType: "Patient", id: "1", gender: "male" })
        a.store.update({ resourceType: "Patient", id: "2", gender: "female" }) // not migrated
        a.store.update({ resourceType: "Patient", id: "3", gender: "other" }) // mapped onto Patient/2 as well
        b.store.update({ resourceType: "Patient", id: "2", gender: "male" })
        const dir = yield* tempDir
        const idMapPath = Path.join(dir, "idmap.ndjson")
        NFS.writeFileSync(idMapPath, '{"s":"Patient/1","t":"Patient/2"}\n{"s":"Patient/3","t":"Patient/2"}\n')
        const r = yield* Verify.run({
          source: { _tag: "Server", client: yield* clientFor(a.baseUrl) },
          target: yield* clientFor(b.baseUrl),
          types: ["Patient"],
          idMapPath,
        })
        assert.strictEqual(r.verdict, "differences")
        assert.strictEqual(r.totals.matching, 1)
        assert.strictEqual(r.totals.differing, 0)
        assert.strictEqual(r.totals.missing, 2)
        assert.deepStrictEqual(
          r.differences.map((d) => [d.kind, d.source, d.target, d.detail]),
          [
            ["missing", "Patient/3", "Patient/2", "the id map gives Patient/2 to Patient/1 as well"],
            ["missing", "Patient/2", undefined, "not in the id map: not migrated"],
          ],
        )
        assert.include(Report.html(r), "not in the id map")
        // a damaged line: the import's record proves nothing, as a damaged archive (Source, exit 4), with what to do
        NFS.appendFileSync(idMapPath, '{"s":"Patient/4\n')
        const damaged = yield* Effect.flip(
          Verify.run({
            source: { _tag: "Server", client: yield* clientFor(a.baseUrl) },
            target: yield* clientFor(b.baseUrl),
            types: ["Patient"],
            idMapPath,
          }),
        )
        assert.strictEqual(damaged.reason, "Source")
        assert.include(damaged.message, `${idMapPath}:3: the id map is damaged`)
        assert.include(damaged.message, "run the import into this target again with --restart")
      }),
    60_000,
  )

  it.scoped(
    "--sample compares a deterministic subset and says so",
    () =>
      Effect.gen(function* () {
        const { source, target, a } = yield* pair
        const opts = { source: { _tag: "Server", client: source }, target, types, samplePercent: 30 } as const
        const r = yield* Verify.run(opts)
        const again = yield* Verify.run(opts)
        const total = types.reduce((n, t) => n + a.store.count(t), 0)
        assert.strictEqual(r.verdict, "clean")
        assert.deepStrictEqual(r.sample, { percent: 30 })
        assert.isAbove(r.totals.compared, 0)
        assert.isBelow(r.totals.compared, total)
        assert.strictEqual(again.totals.compared, r.totals.compared)
        assert.isTrue(r.notes.some((n) => n.startsWith("sampled: 30%")))
        assert.include(Report.html(r), "Sampled: 30%")
        // a sample that holds none of the source's resources proves nothing: refused, not called clean
        const none = yield* Effect.flip(Verify.run({ ...opts, samplePercent: 0.0001 }))
        assert.strictEqual(none.reason, "Config")
        assert.include(none.message, `--sample 0.0001% chose none of the source's ${total} resources`)
      }),
    60_000,
  )
})
