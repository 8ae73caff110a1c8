// Bundles the CLI into one ESM file for Node 20 (which cannot run .ts).
import { build } from "esbuild"
import { readFileSync } from "node:fs"

const pkg = JSON.parse(readFileSync(new URL("./package.json", import.meta.url), "utf8"))

await build({
  entryPoints: ["src/bin.ts"],
  outfile: "dist/bin.js",
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  sourcemap: true,
  // Native and heavy runtime packages stay in node_modules.
  external: ["better-sqlite3"],
  define: { FERRY_VERSION: JSON.stringify(pkg.version) },
  banner: {
    js: "import { createRequire as __ferryCreateRequire } from 'node:module'; const require = __ferryCreateRequire(import.meta.url);",
  },
  logLevel: "warning",
})
