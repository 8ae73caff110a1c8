/**
 * `ferry demo [--data ../shared/data] [--out .ferry-demo]`
 *
 * The embedded default: a sandbox source seeded with the Synthea Bundles and the three attachments,
 * an empty sandbox target, both on 127.0.0.1; then the main job: export the source into an archive
 * (checksums and per-type counts checked against the source), import the archive into the target,
 * and verify the target against the archive (verify.json and verify.html next to the archive).
 * `migrate` (export and import in one journal) and `plan` arrive with a later issue.
 */
import * as NFS from "node:fs"
import * as Path from "node:path"
import { Command, Options } from "@effect/cli"
import * as HttpLayer from "../HttpLayer.js"
import * as Archive from "@ferry/archive/Archive"
import * as Bundle from "@ferry/core/Bundle"
import * as FhirClient from "@ferry/core/FhirClient"
import * as Export from "@ferry/export/Export"
import { ExportError } from "@ferry/export/ExportError"
import * as Import from "@ferry/import/Import"
import * as Report from "@ferry/verify/Report"
import * as Verify from "@ferry/verify/Verify"
import { VerifyError } from "@ferry/verify/VerifyError"
import { start } from "@ferry/sandbox/Sandbox"
import { Console, Effect, Option } from "effect"
import { version } from "../Version.js"

const flags = {
  data: Options.directory("data").pipe(
    Options.withDefault("../shared/data"),
    Options.withDescription("The shared test data (Synthea Bundles and attachments)."),
  ),
  out: Options.text("out").pipe(
    Options.withDefault(".ferry-demo"),
    Options.withDescription("Where the demo writes its archive (replaced on every run)."),
  ),
}

const demoError = (detail: string) => new ExportError({ reason: "Config", detail })

/** The source's own count of one type (`_summary=count`). */
const countOf = (client: FhirClient.FhirClient, type: string) =>
  client
    .search(type, { _summary: "count" })
    .pipe(Effect.map((b) => Option.getOrElse(Bundle.total(b), () => 0)))

export const runDemo = Effect.fn("demo.run")(function* (input: { data: string; out: string }) {
  const bundles = Path.join(input.data, "synthea-bundles")
  const attachments = Path.join(input.data, "attachments")
  if (!NFS.existsSync(bundles) || !NFS.existsSync(attachments)) {
    return yield* demoError(
      `${Path.resolve(input.data)} does not hold synthea-bundles/ and attachments/; run the demo from the repository root with ../shared beside it, or pass --data <dir>`,
    )
  }
  const out = Path.resolve(input.out)
  const archiveDir = Path.join(out, "archive")
  NFS.rmSync(archiveDir, { recursive: true, force: true })
  NFS.mkdirSync(out, { recursive: true, mode: 0o700 })

  yield* Console.error(
    "ferry demo: starting the sandbox source (seeding 38,473 Synthea resources and 3 attachments)…",
  )
  const source = yield* start({ port: 0, db: ":memory:", seed: [bundles, attachments] })
  const target = yield* start({ port: 0, db: ":memory:" })
  yield* Console.error(`  source ${source.baseUrl}`)
  yield* Console.error(`  target ${target.baseUrl} (empty)`)

  const client = yield* FhirClient.make({ baseUrl: source.baseUrl })
  yield* Console.error("ferry demo: exporting the source (system-level $export, attachments included)…")
  const summary = yield* Export.run({
    client,
    out: archiveDir,
    params: { level: "system" },
    tool: { name: "ferry", version },
    pollInterval: "200 millis",
    onEvent: (e) =>
      e.event === "file" || e.event === "kickoff" || e.event === "manifest"
        ? Console.error(`  ${e.event}${typeof e.path === "string" ? ` ${e.path}` : ""}`)
        : Effect.void,
  })

  yield* Console.error("ferry demo: checking the archive…")
  const mismatches = yield* Archive.verifyChecksums(archiveDir)
  let differing = 0
  for (const [type, t] of Object.entries(summary.types).sort(([a], [b]) => a.localeCompare(b))) {
    const expected = yield* countOf(client, type)
    if (expected !== t.resources) differing++
    yield* Console.error(
      `  ${type.padEnd(24)} ${String(t.resources).padStart(7)} exported, source has ${expected}${expected === t.resources ? "" : "  ✗"}`,
    )
  }
  if (mismatches.length > 0 || differing > 0) {
    return yield* new ExportError({
      reason: "Archive",
      detail: `the demo archive ${archiveDir} does not match the source (${mismatches.length} checksum mismatches, ${differing} types with other counts)`,
    })
  }

  yield* Console.error("ferry demo: importing the archive into the target…")
  const targetClient = yield* FhirClient.make({ baseUrl: target.baseUrl })
  const imported = yield* Import.run({ client: targetClient, archive: archiveDir })
  yield* Console.error(`  ${imported.total} resources written with strategy ${imported.strategy}`)

  yield* Console.error("ferry demo: verifying the target against the archive…")
  const report = yield* Verify.run({ source: { _tag: "Archive", dir: archiveDir }, target: targetClient })
  const paths = yield* Report.write(out, report)
  yield* Console.log(
    [
      "",
      `Archive: ${archiveDir}`,
      `  ${summary.resources} resources in ${Object.keys(summary.types).length} types, ${summary.attachments.fetched} attachments, ${summary.files.length} files`,
      `  checksums: ${mismatches.length === 0 ? "all match" : `${mismatches.length} mismatched`}`,
      `  per-type counts against the source: ${differing === 0 ? "all equal" : `${differing} differ`}`,
      `Import: ${imported.total} resources into ${target.baseUrl} (${imported.strategy})`,
      ...Report.summary(report),
      `Reports: ${paths.json}`,
      `         ${paths.html}`,
    ].join("\n"),
  )
  if (report.verdict !== "clean") {
    return yield* new VerifyError({
      reason: "Diff",
      detail: `the demo target differs from its archive; see ${paths.html}`,
    })
  }
}, Effect.scoped)

export const demo = Command.make("demo", flags, (input) =>
  runDemo(input).pipe(Effect.provide(HttpLayer.layer)),
).pipe(
  Command.withDescription(
    "Run the main job on the embedded default: a seeded sandbox source and an empty sandbox target.",
  ),
)
