/**
 * Reads a large JSON Bundle file entry by entry with flat memory: a character scanner (strings,
 * escapes, nesting depth) finds the elements of the top-level `entry` array and hands each one to
 * `JSON.parse`. Everything else at the top level is skipped except `resourceType`.
 * Synchronous (1 MiB reads), so seeding keeps one code path and one SQLite transaction at a time.
 */
import { closeSync, openSync, readSync } from "node:fs"
import { StringDecoder } from "node:string_decoder"
import { parseKeepingNumbers } from "@ferry/core/NumberText"

const OPEN_OBJ = 123 // {
const CLOSE_OBJ = 125 // }
const OPEN_ARR = 91 // [
const CLOSE_ARR = 93 // ]
const QUOTE = 34 // "
const BACKSLASH = 92 // \
const COLON = 58 // :

/**
 * Calls `onEntry` with each parsed element of the top-level `entry` array, in order. Returns the
 * document's top-level `resourceType` (undefined when absent).
 */
export const forEachBundleEntry = (
  file: string,
  onEntry: (entry: unknown, index: number) => void,
  chunkBytes = 1 << 20,
): string | undefined => {
  const fd = openSync(file, "r")
  const decoder = new StringDecoder("utf8")
  const buf = Buffer.alloc(chunkBytes)
  let depth = 0
  let inString = false
  let escaped = false
  // top-level key tracking (depth 1)
  let topString = ""
  let lastTopString: string | undefined
  let topKey: string | undefined
  let expectTypeValue = false
  let resourceType: string | undefined
  let inEntries = false
  // element capture (depth >= 2 inside entries)
  let capturing = false
  let parts: string[] = []
  let captureStart = 0
  let index = 0
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null)
      const text = n === 0 ? decoder.end() : decoder.write(buf.subarray(0, n))
      if (capturing) captureStart = 0
      for (let i = 0; i < text.length; i++) {
        const c = text.charCodeAt(i)
        if (inString) {
          if (escaped) escaped = false
          else if (c === BACKSLASH) escaped = true
          else if (c === QUOTE) {
            inString = false
            if (depth === 1) {
              if (expectTypeValue) {
                resourceType = topString
                expectTypeValue = false
              }
              lastTopString = topString
            }
          } else if (depth === 1) topString += text[i]
          continue
        }
        if (c === QUOTE) {
          inString = true
          if (depth === 1) topString = ""
        } else if (c === COLON && depth === 1) {
          topKey = lastTopString
          expectTypeValue = topKey === "resourceType"
        } else if (c === OPEN_OBJ || c === OPEN_ARR) {
          if (depth === 1 && c === OPEN_ARR && topKey === "entry") inEntries = true
          else if (depth === 2 && inEntries) {
            capturing = true
            captureStart = i
            parts = []
          }
          depth++
        } else if (c === CLOSE_OBJ || c === CLOSE_ARR) {
          depth--
          if (depth === 2 && capturing) {
            parts.push(text.slice(captureStart, i + 1))
            onEntry(parseKeepingNumbers(parts.join("")), index++)
            capturing = false
            parts = []
          } else if (depth === 1 && inEntries) inEntries = false
        } else if (depth === 1 && c > 32 && c !== 44) {
          // a scalar value at the top level: not the start of a key/value we track
          expectTypeValue = false
        }
      }
      if (capturing) parts.push(text.slice(captureStart))
      if (n === 0) break
    }
  } finally {
    closeSync(fd)
  }
  if (depth !== 0 || inString) throw new Error(`${file} ends in the middle of a JSON value`)
  return resourceType
}
