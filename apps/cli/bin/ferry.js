#!/usr/bin/env node
// Launcher kept in git so npm links `ferry` at install time; the bundle is built by `npm run build`.
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"

const bundle = fileURLToPath(new URL("../dist/bin.js", import.meta.url))
if (!existsSync(bundle)) {
  process.stderr.write(
    "ferry: the CLI is not built yet (missing apps/cli/dist/bin.js); run `npm run build` at the repository root.\n",
  )
  process.exit(2)
}
await import(bundle)
