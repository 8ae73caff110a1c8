/**
 * `ferry summary <archive> --out <folder> [--json]`
 *
 * One person's record as a folder that person can open (GDPR Art. 15 and 20): `README.html` in plain language,
 * the record's documents and pictures as files, its data as NDJSON, and `SHA256SUMS` (Summary.ts).
 */
import { Args, Command, Options } from "@effect/cli"
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
      onNote: (line) => Console.error(`ferry summary: ${line}`),
    })
    const who = result.people.map((p) => p.name).join(", ")
    yield* Console.error(
      `ferry summary: wrote ${result.out}: the record of ${who} (${result.resources.toLocaleString("en-US")} resources) in README.html, ${counted(result.files, "file")} in files/, ${counted(result.dataFiles, "data file")} in data/, SHA256SUMS; open README.html`,
    )
    if (f.json) yield* Console.log(JSON.stringify({ ok: true, ...result }, null, 2))
  }),
).pipe(
  Command.withDescription(
    "Write one person's record as a folder they can open (GDPR access and portability): a plain-language README.html, the documents as files, the data, checksums.",
  ),
)
