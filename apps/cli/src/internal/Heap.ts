/**
 * Imported first by bin.ts, so it runs before the rest of the CLI is loaded. For `ferry export` only:
 *
 * - `--optimize-for-size` asks V8 to favour a small heap over allocation speed: an export streams everything
 *   and keeps little alive, but with V8's default sizing the heap grows with the garbage of many small
 *   requests (a 23k-resource export with 1,000 attachments: peak RSS 206 MB by default, 154–163 MB with this
 *   flag, same wall time).
 * - `--liftoff-only` keeps undici's HTTP parser (llhttp, WebAssembly) on V8's baseline compiler. By default
 *   V8 re-compiles its hot functions with the optimizing compiler in the background a few hundred ms after the
 *   first responses, and that compilation's scratch memory (outside the JS heap) put RSS up by ≈ 35 MB for
 *   half a second: this, not the export's own data, was the peak of a 100k-resource export (150 MB; 115 MB
 *   with the flag). The parser only reads status lines, headers and chunk sizes, so its speed does not show
 *   in the export's CPU time (bench/export.ts, A/B: docs/benchmarks.md).
 *
 * Not for the other commands: an import holds its dependency graph and parses every resource several
 * times, and there `--optimize-for-size` doubled the CPU time (38k Synthea resources: 14.5 s user instead of
 * 7.6 s, A/B on the same archive; docs/benchmarks.md).
 */
import { setFlagsFromString } from "node:v8"

if (process.argv[2] === "export") {
  setFlagsFromString("--optimize-for-size")
  setFlagsFromString("--liftoff-only")
}
