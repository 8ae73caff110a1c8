/**
 * Imported first by bin.ts, so it runs before the rest of the CLI is loaded. For `ferry export` only, asks
 * V8 to favour a small heap over allocation speed: an export streams everything and keeps little alive,
 * but with V8's default sizing the heap grows with the garbage of many small requests (a 23k-resource
 * export with 1,000 attachments: peak RSS 206 MB by default, 154–163 MB with this flag, same wall time).
 * Not for the other commands: an import holds its dependency graph and parses every resource several
 * times, and there the flag doubled the CPU time (38k Synthea resources: 14.5 s user instead of 7.6 s,
 * A/B on the same archive; docs/benchmarks.md).
 */
import { setFlagsFromString } from "node:v8"

if (process.argv[2] === "export") setFlagsFromString("--optimize-for-size")
