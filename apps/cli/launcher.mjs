// The `ferry` entry point (copied to dist/bin.js by build.mjs, which fills in BUNDLE_HASH).
//
// The CLI is one CommonJS bundle (dist/ferry.cjs, 3 MB). Compiling it took ≈ 90 ms of every start
// (≈ 250 ms in all for `ferry --version`), so it is compiled through vm.Script with V8's code cache:
// build.mjs runs `ferry --version` once and keeps what V8 compiled in dist/ferry.<hash>.cache, and every
// later start reuses it (≈ 0.12 s sooner and ≈ 13 MB less resident; docs/benchmarks.md, CLI start-up).
// The cache is named after the sha256 of the bundle it was made from, and used only when the bundle still
// has that sha256. A missing, unreadable or rejected cache (another Node version, other V8 flags) only
// costs that compile time: the bundle is then compiled from source as usual.
import { createHash } from "node:crypto"
import { readFileSync, writeFileSync } from "node:fs"
import Module, { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import vm from "node:vm"

// Ctrl-C or SIGTERM while the CLI loads (≈ 0.3 s), before its runtime answers them. With a listener, Node
// catches the signal instead of dying of it (silently, 143 for SIGTERM): the load is synchronous, so the signal
// waits for the event loop, where runMain's handlers have replaced these (bin.ts removes them right after
// runMain) and Cli.run says "interrupted while starting", exit 130. Should the loop turn before that, this says it.
const early = () => {
  process.stderr.write(
    "ferry: interrupted while starting, before anything was done; run the same command again\n",
  )
  process.exit(130)
}
process.once("SIGINT", early)
process.once("SIGTERM", early)
globalThis[Symbol.for("ferry.releaseEarlySignals")] = () => {
  process.removeListener("SIGINT", early)
  process.removeListener("SIGTERM", early)
}

const BUNDLE_HASH = "__FERRY_BUNDLE_HASH__"
const here = dirname(fileURLToPath(import.meta.url))
const bundle = join(here, "ferry.cjs")
const cacheFile = join(here, `ferry.${BUNDLE_HASH}.cache`)

const readCache = () => {
  try {
    return readFileSync(cacheFile)
  } catch {
    // no cache (yet): compiled from source below
    return undefined
  }
}

const readBundle = () => {
  try {
    return readFileSync(bundle)
  } catch {
    process.stderr.write(
      "ferry: the CLI is not built yet (missing apps/cli/dist/ferry.cjs); run `npm run build` at the repository root.\n",
    )
    process.exit(2)
  }
}
const bytes = readBundle()
// V8 checks a cache against the source's length only: a bundle changed without build.mjs must not meet the
// cache of another one (hashing the 3 MB costs ≈ 3 ms)
const sameBuild = createHash("sha256").update(bytes).digest("hex").startsWith(BUNDLE_HASH)
// the bundle starts with a shebang line, which a function body cannot hold
const source = bytes.toString("utf8").replace(/^#!.*/, "")
const script = new vm.Script(Module.wrap(source), {
  filename: bundle,
  cachedData: process.env.FERRY_WRITE_CODE_CACHE !== "1" && sameBuild ? readCache() : undefined,
  // Node ≥ 20.12: `import()` inside the bundle (there is none today) resolves as in a module
  ...(vm.constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER !== undefined
    ? { importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER }
    : {}),
})
if (process.env.FERRY_WRITE_CODE_CACHE === "1") {
  // build.mjs: keep what V8 compiled by the end of this run (the bundle's top level and start-up path)
  process.once("exit", () => writeFileSync(cacheFile, script.createCachedData()))
}
const module = { exports: {} }
script.runInThisContext()(module.exports, createRequire(bundle), module, bundle, here)
