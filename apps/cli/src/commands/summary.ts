/**
 * `ferry summary <archive> --out <folder> [--json]`
 *
 * One person's record as a folder that person can open (GDPR Art. 15 and 20): `README.html` in plain language,
 * the record's documents and pictures as files, its data as NDJSON, and `SHA256SUMS` (Summary.ts).
 */
import { Args, Command, Options } from "@effect/cli"
import { printable } from "@ferry/core/OperationOutcome"
import { version } from "@ferry/core/Version"
import { Console, Effect } from "effect"
import { counted } from "../Progress.js"
import * as Summary from "../Summary.js"

const flags = {
  archive: Args.directory({ name: "archive", exists: "yes" }).pipe(
    Args.withDescription(
      "A finished archive of one person's record (ferry export --level patient --patient <id>).",
    ),
  ),
  out: Options.directory("out").pipe(
    Options.withDescription(
      "The folder to write (must not exist yet): README.html, files/, data/, SHA256SUMS.",
    ),
  ),
  includeOthers: Options.boolean("include-others").pipe(
    Options.withDescription(
      "Keep resources that also name other patients (a cohort Group's members, an Observation about someone else); left out by default.",
    ),
  ),
  json: Options.boolean("json").pipe(
    Options.withDescription("Print the result as one JSON object on stdout."),
  ),
}

export const summaryCommand = Command.make("summary", flags, (f) =>
  Effect.gen(function* () {
    const result = yield* Summary.write({
      archive: f.archive,
      out: f.out,
      tool: `ferry ${version}`,
      includeOthers: f.includeOthers,
      // (what the data says is printed as text: no control characters from it reach the terminal)
      onNote: (line) => Console.error(`ferry summary: ${printable(line)}`),
    })
    // the person by their Patient id, not their name: stderr ends up in terminals' scrollback, CI and job logs (the
    // name is in README.html, and in the --json result asked for on stdout)
    const who = printable(result.people.map((p) => `Patient/${p.id}`).join(", "))
    yield* Console.error(
      `ferry summary: wrote ${result.out}: the record of ${who} (${counted(result.resources, "resource")}) in README.html, ${counted(result.files, "file")} in files/, ${counted(result.dataFiles, "data file")} in data/, SHA256SUMS; open README.html`,
    )
    if (f.json) yield* Console.log(JSON.stringify({ ok: true, ...result }, null, 2))
  }).pipe(
    Effect.onInterrupt(() =>
      Console.error("ferry: summary interrupted; nothing was written (its .part is removed): run it again"),
    ),
  ),
).pipe(
  Command.withDescription(
    "Write one person's record as a folder they can open (GDPR access and portability): a plain-language README.html, the documents as files, the data, checksums.",
  ),
)
