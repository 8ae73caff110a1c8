// Bundles the CLI into one CommonJS file for Node 20 (which cannot run .ts), writes the launcher
// (dist/bin.js, from launcher.mjs) and V8's code cache for the bundle (see launcher.mjs).
import { build } from "esbuild"
import { execFileSync } from "node:child_process"
import { createHash } from "node:crypto"
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

const pkg = JSON.parse(readFileSync(new URL("./package.json", import.meta.url), "utf8"))
const dist = new URL("./dist/", import.meta.url)

await build({
  entryPoints: ["src/bin.ts"],
  outfile: "dist/ferry.cjs",
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  sourcemap: true,
  // no comments or indentation, and only ASCII: the source V8 keeps for the running CLI is a one-byte
  // string (a comment with a non-ASCII character made all 4 MB of it two bytes per character)
  minifyWhitespace: true,
  charset: "ascii",
  legalComments: "external",
  // Native and heavy runtime packages stay in node_modules.
  external: ["better-sqlite3"],
  define: { FERRY_VERSION: JSON.stringify(pkg.version) },
  logLevel: "warning",
})

const hash = createHash("sha256")
  .update(readFileSync(new URL("ferry.cjs", dist)))
  .digest("hex")
  .slice(0, 16)
for (const name of readdirSync(dist)) if (/^ferry\.[0-9a-f]+\.cache$/.test(name)) rmSync(new URL(name, dist))
const launcher = readFileSync(new URL("./launcher.mjs", import.meta.url), "utf8").replace(
  "__FERRY_BUNDLE_HASH__",
  hash,
)
writeFileSync(new URL("bin.js", dist), `#!/usr/bin/env node\n${launcher}`, { mode: 0o755 })
// one run of the CLI gives V8's code cache for the bundle
execFileSync(process.execPath, [fileURLToPath(new URL("bin.js", dist)), "--version"], {
  env: { ...process.env, FERRY_WRITE_CODE_CACHE: "1" },
  stdio: ["ignore", "ignore", "inherit"],
})
