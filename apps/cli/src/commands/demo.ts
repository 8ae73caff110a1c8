/**
 * `ferry demo [--data ../shared/data] [--out .ferry-demo]`
 *
 * The embedded default: a sandbox source seeded with the Synthea Bundles and the three attachments, an
 * empty sandbox target, both on 127.0.0.1; then the main job exactly as a user runs it, each step the real
 * command with its own output: `ferry plan --from S --to T` (preflight, changes nothing), `ferry migrate
 * --from S --to T --archive <out>/archive` (export and import in one journal, with its progress display),
 * a check of the archive against the source (checksums, per-type counts), and `ferry verify --archive
 * <out>/archive --target T --report <out>` (verify.json and verify.html). Exits 0 only when clean.
 */
import * as NFS from "node:fs"
import * as Path from "node:path"
import { makeDirsSync } from "@ferry/core/Dirs"
import { Command, Options } from "@effect/cli"
import * as Archive from "@ferry/archive/Archive"
import * as Bundle from "@ferry/core/Bundle"
import * as FhirClient from "@ferry/core/FhirClient"
import { ExportError } from "@ferry/export/ExportError"
import { start } from "@ferry/sandbox/Sandbox"
import { Console, Effect, Option } from "effect"
import * as HttpLayer from "../HttpLayer.js"
import { version } from "@ferry/core/Version"
import { migrateCommand } from "./migrate.js"
import { planCommand } from "./plan.js"
import { verifyCommand } from "./verify.js"

const defaultOut = ".ferry-demo"

/** The file that marks a folder as the demo's own (its archive and reports are replaced on every run). */
const marker = ".made-by-ferry-demo"

const flags = {
  data: Options.directory("data").pipe(
    Options.withDefault("../shared/data"),
    Options.withDescription(
      "The shared test data (Synthea Bundles and attachments; default ../shared/data).",
    ),
  ),
  out: Options.text("out").pipe(
    Options.withDefault(defaultOut),
    Options.withDescription(
      "Where the demo writes its archive and reports (default .ferry-demo; replaced on every run; a folder holding another archive or reports is refused).",
    ),
  ),
}

const demoError = (detail: string) => new ExportError({ reason: "Config", detail })

/** The source's own count of one type (`_summary=count`). */
const countOf = (client: FhirClient.FhirClient, type: string) =>
  client
    .search(type, { _summary: "count" })
    .pipe(Effect.map((b) => Option.getOrElse(Bundle.total(b), () => 0)))

/** Runs one of Ferry's commands with these arguments, as `ferry <name> <args>` would. */
const ferry = <Name extends string, R, E, A>(
  name: Name,
  command: Command.Command<Name, R, E, A>,
  args: ReadonlyArray<string>,
) =>
  Effect.gen(function* () {
    yield* Console.error(`\n$ ferry ${name} ${args.join(" ")}`)
    return yield* Command.run(command, { name: `ferry ${name}`, version })(["node", `ferry-${name}`, ...args])
  })

export const runDemo = Effect.fn("demo.run")(function* (input: { data: string; out: string }) {
  const bundles = Path.join(input.data, "synthea-bundles")
  const attachments = Path.join(input.data, "attachments")
  if (!NFS.existsSync(bundles) || !NFS.existsSync(attachments)) {
    return yield* demoError(
      `${Path.resolve(input.data)} has no synthea-bundles/ and attachments/ folders: the demo's data is laid out like ../shared/data (run it from the repository root with ../shared beside it, or give --data a folder laid out so)`,
    )
  }
  const out = Path.resolve(input.out)
  const archiveDir = Path.join(out, "archive")
  // the demo replaces its own archive and reports, never another's: a folder it did not make (no marker; its
  // default folder from before the marker excepted) holding an archive or reports, or being an archive, is refused
  const taken = ["archive", "verify.json", "verify.html", "manifest.json"].filter((n) =>
    NFS.existsSync(Path.join(out, n)),
  )
  if (taken.length > 0 && !NFS.existsSync(Path.join(out, marker)) && out !== Path.resolve(defaultOut))
    return yield* demoError(
      `${out} holds ${taken.join(", ")}, which the demo did not write and would replace; give --out a new or empty folder`,
    )
  NFS.rmSync(archiveDir, { recursive: true, force: true })
  makeDirsSync(out, 0o700)
  NFS.writeFileSync(
    Path.join(out, marker),
    "ferry demo replaces the archive and reports in this folder on every run\n",
    {
      mode: 0o600,
    },
  )

  yield* Console.error(
    `ferry demo: starting the sandbox source (seeding the Synthea Bundles and attachments of ${Path.resolve(input.data)})…`,
  )
  const source = yield* start({ port: 0, db: ":memory:", seed: [bundles, attachments] })
  const target = yield* start({ port: 0, db: ":memory:" })
  yield* Console.error(`  source ${source.baseUrl}`)
  yield* Console.error(`  target ${target.baseUrl} (empty)`)

  yield* ferry("plan", planCommand, ["--from", source.baseUrl, "--to", target.baseUrl])
  yield* ferry("migrate", migrateCommand, [
    "--from",
    source.baseUrl,
    "--to",
    target.baseUrl,
    "--archive",
    archiveDir,
  ])

  yield* Console.error("\nferry demo: checking the archive against the source…")
  const client = yield* FhirClient.make({ baseUrl: source.baseUrl })
  const manifest = yield* Archive.readManifest(archiveDir)
  const mismatches = yield* Archive.verifyChecksums(archiveDir)
  const exported = new Map<string, number>()
  for (const f of manifest.files) exported.set(f.type, (exported.get(f.type) ?? 0) + f.count)
  let differing = 0
  for (const [type, n] of [...exported].sort(([a], [b]) => a.localeCompare(b))) {
    const expected = yield* countOf(client, type)
    if (expected !== n) differing++
    yield* Console.error(
      `  ${type.padEnd(24)} ${String(n).padStart(7)} in the archive, source has ${expected}${expected === n ? "" : "  ✗"}`,
    )
  }
  if (mismatches.length > 0 || differing > 0) {
    return yield* new ExportError({
      reason: "Archive",
      detail: `the demo archive ${archiveDir} does not match the source (${mismatches.length} checksum mismatches, ${differing} types with other counts)`,
    })
  }
  const resources = [...exported.values()].reduce((a, b) => a + b, 0)

  yield* ferry("verify", verifyCommand, [
    "--archive",
    archiveDir,
    "--target",
    target.baseUrl,
    "--report",
    out,
  ])
  yield* Console.log(
    [
      "",
      `Archive: ${archiveDir}`,
      `  ${resources} resources in ${exported.size} types, ${manifest.attachments.count} attachments, ${manifest.files.length} files`,
      `  checksums: ${mismatches.length === 0 ? "all match" : `${mismatches.length} mismatched`}`,
      `  per-type counts against the source: ${differing === 0 ? "all equal" : `${differing} differ`}`,
      `Reports: ${Path.join(out, "verify.json")}`,
      `         ${Path.join(out, "verify.html")}`,
    ].join("\n"),
  )
}, Effect.scoped)

export const demo = Command.make("demo", flags, (input) =>
  runDemo(input).pipe(Effect.provide(HttpLayer.layer)),
).pipe(
  Command.withDescription(
    "Run the main job on the embedded default: a seeded sandbox source and an empty sandbox target; plan, migrate, verify.",
  ),
)
