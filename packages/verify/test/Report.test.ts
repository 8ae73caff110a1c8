import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { checkWritable, escapeHtml, html, htmlListLimit, summary, write } from "../src/Report.js"
import type { Report } from "../src/Verify.js"

const base: Report = {
  format: "ferry-verify/1",
  verdict: "differences",
  startedAt: "2026-01-01T00:00:00.000Z",
  finishedAt: "2026-01-01T00:00:01.000Z",
  source: { kind: "server", location: "http://s/fhir" },
  target: { url: "http://t/fhir?<b>" },
  tool: { name: "ferry", version: "test" },
  sample: null,
  idMap: null,
  diffLimit: 20,
  types: [],
  totals: {
    sourceCount: 0,
    targetCount: 0,
    compared: 0,
    matching: 0,
    differing: 0,
    missing: htmlListLimit + 5,
    extra: 0,
    countMismatches: 0,
    attachments: 0,
    attachmentMismatches: 0,
    otherSources: 0,
  },
  differences: Array.from({ length: htmlListLimit + 5 }, (_, i) => ({
    kind: "missing" as const,
    type: "Patient",
    source: `Patient/p${i}`,
  })),
  attachments: [],
  notes: ["a <note> & more"],
}

describe("Report", () => {
  it("escapes everything it prints", () => {
    assert.strictEqual(escapeHtml(`<a href="x">'&`), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;")
    const page = html(base)
    assert.include(page, "http://t/fhir?&lt;b&gt;")
    assert.include(page, "a &lt;note&gt; &amp; more")
    assert.notInclude(page, "<note>")
  })

  it("says what made it and what was compared: the Ferry version, an archive's server, a sample, a delta", () => {
    const page = html({
      ...base,
      verdict: "clean",
      source: { kind: "archive", location: "/a/arch", server: "https://ehr.example.org/fhir", delta: true },
      sample: { percent: 5 },
    })
    assert.include(page, "ferry test")
    assert.include(page, "exported from <code>https://ehr.example.org/fhir</code>")
    assert.include(page, '<span class="v clean">clean (sample of 5%)</span>')
    const delta = html({ ...base, source: { kind: "archive", location: "/a/arch", delta: true } })
    assert.include(delta, "Incremental archive: its changed resources were compared")
    assert.notInclude(delta, "Full comparison")
  })

  it("caps the listed differences on the page and points at verify.json", () => {
    const page = html(base)
    assert.include(page, `Patient/p${htmlListLimit - 1}<`)
    assert.notInclude(page, `Patient/p${htmlListLimit}<`)
    assert.include(page, "and 5 more: see verify.json")
    assert.match(summary(base)[0] ?? "", /^verify: DIFFERENCES/)
  })

  it("lists differing and missing before extras, says where a field diff is cut or was not made", () => {
    const page = html({
      ...base,
      differences: [
        ...Array.from({ length: htmlListLimit }, (_, i) => ({
          kind: "extra" as const,
          type: "Observation",
          target: `Observation/pre-${i}`,
        })),
        {
          kind: "differing" as const,
          type: "Patient",
          source: "Patient/cut",
          target: "Patient/cut",
          fields: [{ path: "gender", source: '"male"', target: '"female"' }],
          moreFields: true as const,
        },
        {
          kind: "differing" as const,
          type: "Patient",
          source: "Patient/undiffed",
          target: "Patient/undiffed",
        },
        { kind: "missing" as const, type: "Patient", source: "Patient/gone" },
      ],
    })
    // the extras fill the cap only after the three a person must act on
    for (const id of ["Patient/cut", "Patient/undiffed", "Patient/gone"])
      assert.include(page, `<code>${id}</code>`)
    assert.include(page, "More fields differ than these 1.")
    assert.include(
      page,
      "(no field diff: only the first 20 differing resources get one, see --diff-limit; or the source no longer held it)",
    )
    // an extra is named by its target id alone
    assert.include(page, '<span class="kind extra">extra</span> <code>Observation/pre-0</code>')
    assert.notInclude(page, "<code></code>")
  })

  it.effect(
    "writes verify.json with ok (as --json prints it), and fails, not spins, where no folder can be made",
    () =>
      Effect.gen(function* () {
        const dir = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-report-"))
        const paths = yield* write(Path.join(dir, "reports"), base)
        const written = JSON.parse(NFS.readFileSync(paths.json, "utf8")) as { ok: boolean; verdict: string }
        assert.strictEqual(written.ok, false)
        assert.strictEqual(written.verdict, "differences")
        NFS.rmSync(dir, { recursive: true })
        if (NFS.existsSync("/proc/self")) {
          // the kernel refuses new entries in /proc with ENOENT, on which Node's recursive mkdir loops forever
          const failed = yield* Effect.flip(write("/proc/ferry-nope", base))
          assert.include(failed.message, "cannot create /proc/ferry-nope")
          assert.include(failed.message, "--report")
          // said before any comparison, as a wrong --report (exit 2)
          const early = yield* Effect.flip(checkWritable("/proc/ferry-nope"))
          assert.strictEqual(early.reason, "Config")
          assert.include(early.message, "give --report a folder Ferry can create or write in")
        }
      }),
  )
})
