/**
 * The verification reports: `verify.json` (the `Report` as is) and `verify.html` (a self-contained page:
 * inline CSS, no scripts, no external assets; every value escaped). Both written 0600, atomically.
 */
import { randomUUID } from "node:crypto"
import * as NFS from "node:fs"
import * as Path from "node:path"
import { makeDirsSync } from "@ferry/core/Dirs"
import { escapeHtml } from "@ferry/core/Html"
import { Effect } from "effect"
import type { Report } from "./Verify.js"
import { VerifyError } from "./VerifyError.js"

/** HTML-escape text (element content and attribute values). */
export { escapeHtml }

const e = (v: unknown): string => escapeHtml(v === null || v === undefined ? "–" : String(v))

/** The page lists at most this many differences and attachment mismatches (verify.json has all). */
export const htmlListLimit = 1000

const more = (n: number): string =>
  n > htmlListLimit ? `<p>… and ${e(n - htmlListLimit)} more: see verify.json.</p>` : ""

/** The HTML page for a report. */
export const html = (r: Report): string => {
  const t = r.totals
  const clean = r.verdict === "clean"
  const rows = r.types
    .map(
      (x) =>
        `<tr${x.differing + x.missing + x.extra + x.attachmentMismatches > 0 || x.sourceCount !== x.targetCount ? ' class="bad"' : ""}><td>${e(x.type)}</td><td>${e(x.sourceCount)}</td><td>${e(x.targetCount)}</td><td>${e(x.compared)}</td><td>${e(x.matching)}</td><td>${e(x.differing)}</td><td>${e(x.missing)}</td><td>${e(x.extra)}</td><td>${e(x.attachments)}</td><td>${e(x.attachmentMismatches)}</td></tr>`,
    )
    .join("\n")
  // what a person must act on first: differing and missing before extras (verify.json keeps the order found)
  const rank = { differing: 0, missing: 1, extra: 2 } as const
  const diffs = [...r.differences]
    .sort((a, b) => rank[a.kind] - rank[b.kind])
    .slice(0, htmlListLimit)
    .map((d) => {
      const fields =
        d.fields === undefined
          ? d.kind === "differing"
            ? ` <small>(no field diff: only the first ${e(r.diffLimit)} differing resources get one, see --diff-limit; or the source no longer held it)</small>`
            : ""
          : `<table class="fields"><tr><th>path</th><th>source</th><th>target</th></tr>${d.fields
              .map(
                (f) =>
                  `<tr><td><code>${e(f.path)}</code></td><td><code>${e(f.source)}</code></td><td><code>${e(f.target)}</code></td></tr>`,
              )
              .join(
                "",
              )}</table>${d.moreFields === true ? `<p><small>More fields differ than these ${e(d.fields.length)}.</small></p>` : ""}`
      const names =
        d.source === undefined
          ? `<code>${e(d.target)}</code>`
          : `<code>${e(d.source)}</code>${d.target !== undefined && d.target !== d.source ? ` → <code>${e(d.target)}</code>` : ""}`
      return `<li><span class="kind ${e(d.kind)}">${e(d.kind)}</span> ${names}${d.detail !== undefined ? ` (${e(d.detail)})` : ""}${fields}</li>`
    })
    .join("\n")
  const atts = r.attachments
    .slice(0, htmlListLimit)
    .map(
      (a) =>
        `<tr><td><code>${e(a.resource)}</code></td><td><code>${e(a.path)}</code></td><td><code>${e(a.sourceSha256)}</code></td><td><code>${e(a.targetSha256)}</code></td><td>${e(a.detail)}</td></tr>`,
    )
    .join("\n")
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>ferry verify: ${e(r.verdict)}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1 .v{padding:.1em .5em;border-radius:4px;color:#fff}
.clean{background:#2a7d2a}.differences{background:#b02a2a}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}
tr.bad td{background:#fde8e8}.kind{font-weight:bold}.kind.missing{color:#b02a2a}.kind.extra{color:#9a6700}.kind.differing{color:#8250df}
code{font-size:12px;word-break:break-all}table.fields{margin:.3em 0 .8em 1em}
</style></head><body>
<h1>ferry verify: <span class="v ${clean ? "clean" : "differences"}">${clean ? "clean" : "differences found"}${r.sample !== null ? ` (sample of ${e(r.sample.percent)}%)` : ""}</span></h1>
<p>Source (${e(r.source.kind)}): <code>${e(r.source.location)}</code>${r.source.server !== undefined ? `, exported from <code>${e(r.source.server)}</code>` : ""}${r.source.transactionTime !== undefined ? ` as of ${e(r.source.transactionTime)}` : ""}${r.source.checksumsSha256 !== undefined ? `; every file and attachment checked against its <code>checksums.sha256</code> (sha256 <code>${e(r.source.checksumsSha256)}</code>) first` : ""}<br>Target: <code>${e(r.target.url)}</code><br>
${e(r.startedAt)} – ${e(r.finishedAt)}, ${e(r.tool.name)} ${e(r.tool.version)}${r.idMap !== null ? `<br>Id map: <code>${e(r.idMap.path)}</code> (${e(r.idMap.entries)} entries; in the field diffs the source's references are shown as mapped to the target's ids)` : ""}</p>
${r.sample !== null ? `<p class="sample"><strong>Sampled: ${e(r.sample.percent)}% of resources were compared</strong> (chosen by the sha256 of the source Type/id).</p>` : r.source.delta === true ? "<p>Incremental archive: its changed resources were compared and its deletions checked gone; the rest of the target was not (verify against the source server for that).</p>" : "<p>Full comparison: every resource of the types below was compared, on both sides (the notes below say what was left out, if anything).</p>"}
${r.notes.length > 0 ? `<ul>${r.notes.map((n) => `<li>${e(n)}</li>`).join("")}</ul>` : ""}
<h2>Totals</h2>
<table><tr><th>source</th><th>target</th><th>compared</th><th>matching</th><th>differing</th><th>missing</th><th>extra</th><th>count mismatches</th><th>attachments</th><th>attachment mismatches</th></tr>
<tr><td>${e(t.sourceCount)}</td><td>${e(t.targetCount)}</td><td>${e(t.compared)}</td><td>${e(t.matching)}</td><td>${e(t.differing)}</td><td>${e(t.missing)}</td><td>${e(t.extra)}</td><td>${e(t.countMismatches)}</td><td>${e(t.attachments)}</td><td>${e(t.attachmentMismatches)}</td></tr></table>
<h2>Per type</h2>
<table><tr><th>type</th><th>source</th><th>target</th><th>compared</th><th>matching</th><th>differing</th><th>missing</th><th>extra</th><th>attachments</th><th>attachment mismatches</th></tr>
${rows}
</table>
<h2>Differences (${e(r.differences.length)})</h2>
${r.differences.length === 0 ? "<p>None.</p>" : `<p><b>differing</b>: on both sides, with other content; <b>missing</b>: on the source, not on the target; <b>extra</b>: on the target, not on the source. Differing and missing come first. Field-level diffs for the first ${e(r.diffLimit)} differing resources.</p><ul>${diffs}</ul>${more(r.differences.length)}`}
<h2>Attachment mismatches (${e(r.attachments.length)})</h2>
${r.attachments.length === 0 ? "<p>None.</p>" : `<table><tr><th>resource</th><th>path</th><th>source sha256</th><th>target sha256</th><th>detail</th></tr>${atts}</table>${more(r.attachments.length)}`}
</body></html>
`
}

const writeAtomic = (path: string, text: string) =>
  Effect.try({
    try: () => {
      // a fresh name, created exclusively: never a file (or symlink) someone else put there
      const tmp = `${path}.${randomUUID()}.tmp`
      NFS.writeFileSync(tmp, text, { mode: 0o600, flag: "wx" })
      try {
        NFS.chmodSync(tmp, 0o600)
        NFS.renameSync(tmp, path)
      } catch (e) {
        NFS.rmSync(tmp, { force: true })
        throw e
      }
    },
    catch: (cause) =>
      new VerifyError({
        reason: "Report",
        detail: `cannot write ${path} (${cause instanceof Error ? cause.message : String(cause)}); check --report`,
        cause,
      }),
  })

/** The report as `verify.json` and `--json` give it: `ok` (clean) first, for scripts. */
export const withOk = (report: Report) => ({ ok: report.verdict === "clean", ...report })

/** Write `verify.json` and `verify.html` into `dir` (created 0700 if missing); returns their paths. */
/**
 * Checks, before a comparison that may take long, that the reports can be written in `dir` (made if needed):
 * a folder that cannot be is a wrong `--report` (Config), said at once rather than after the comparison.
 */
export const checkWritable = (dir: string): Effect.Effect<void, VerifyError> =>
  Effect.try({
    try: () => {
      makeDirsSync(dir, 0o700)
      const probe = Path.join(dir, `.verify-${randomUUID()}.tmp`)
      NFS.writeFileSync(probe, "", { mode: 0o600 })
      NFS.rmSync(probe, { force: true })
    },
    catch: (cause) =>
      new VerifyError({
        reason: "Config",
        detail: `the reports cannot be written in ${dir} (${cause instanceof Error ? cause.message : String(cause)}); give --report a folder Ferry can create or write in`,
        cause,
      }),
  })

export const write = (dir: string, report: Report) =>
  Effect.gen(function* () {
    yield* Effect.try({
      try: () => makeDirsSync(dir, 0o700),
      catch: (cause) =>
        new VerifyError({
          reason: "Report",
          detail: `cannot create ${dir} (${cause instanceof Error ? cause.message : String(cause)}); give --report a folder Ferry can create or write in`,
          cause,
        }),
    })
    const json = Path.join(dir, "verify.json")
    const page = Path.join(dir, "verify.html")
    yield* writeAtomic(json, `${JSON.stringify(withOk(report), null, 2)}\n`)
    yield* writeAtomic(page, html(report))
    return { json, html: page }
  })

/** A few lines for the terminal. */
export const summary = (r: Report): ReadonlyArray<string> => {
  const t = r.totals
  return [
    `verify: ${r.verdict === "clean" ? "CLEAN" : "DIFFERENCES"}: ${t.compared} compared over ${r.types.length} types, ${t.matching} matching, ${t.differing} differing, ${t.missing} missing, ${t.extra} extra, ${t.countMismatches} count mismatches, ${t.attachmentMismatches}/${t.attachments} attachment mismatches`,
    ...(r.sample !== null ? [`verify: sampled ${r.sample.percent}% of resources`] : []),
    ...(r.hint !== undefined ? [`verify: ${r.hint}`] : []),
    ...((t.otherSources ?? 0) > 0
      ? [
          `verify: ${t.otherSources} resource(s) on the target are another source's (Ferry's provenance tag of another origin): left out`,
        ]
      : []),
  ]
}
