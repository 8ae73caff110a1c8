import { Command } from "@effect/cli"
import { demo } from "./commands/demo.js"
import { exportCommand } from "./commands/export.js"
import { importCommand } from "./commands/import.js"
import { keys } from "./commands/keys.js"
import { migrateCommand } from "./commands/migrate.js"
import { planCommand } from "./commands/plan.js"
import { sandbox } from "./commands/sandbox.js"
import { verifyCommand } from "./commands/verify.js"
import { version } from "@ferry/core/Version"

export const ferry = Command.make("ferry").pipe(
  Command.withDescription(
    "Move FHIR R4 data between servers: bulk export into a checksummed archive, import, verify.",
  ),
  Command.withSubcommands([
    demo,
    exportCommand,
    importCommand,
    keys,
    migrateCommand,
    planCommand,
    sandbox,
    verifyCommand,
  ]),
)

export const run = Command.run(ferry, { name: "ferry", version })
