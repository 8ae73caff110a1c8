/**
 * Imported first by bin.ts, so it runs before anything else is loaded: asks V8 to favour a small heap over
 * allocation speed. Ferry streams everything, so what it keeps alive is small, but with V8's default sizing
 * the heap grows with the garbage of many small requests (a 23k-resource export with 1,000 attachments:
 * peak RSS 206 MB by default, 159–163 MB with this flag set here, same wall time; docs/benchmarks.md).
 */
import { setFlagsFromString } from "node:v8"

setFlagsFromString("--optimize-for-size")
