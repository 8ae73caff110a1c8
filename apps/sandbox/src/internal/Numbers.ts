/**
 * Decimal precision as a client wrote it. FHIR gives a decimal's written precision meaning (`1.0` is not
 * `1`), which `JSON.parse` + `JSON.stringify` lose. A request body (or a seed line) is parsed with
 * `parseKeepingNumbers`, which remembers, for the parsed resource (and each Bundle entry's resource), how
 * its numbers were written when any of them would be written otherwise; the store writes them back
 * (`Store.write`, `NumberText.withNumbers`). Costs a scan of the text (≈ 2 ms a MB); the common body with
 * no such number keeps nothing.
 */
import { hasOddNumbers, numbersOf } from "@ferry/core/NumberText"

const written = new WeakMap<object, ReadonlyArray<string>>()

const isObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** `JSON.parse`, remembering how the numbers of the value, and of each Bundle entry's resource, were written. */
export const parseKeepingNumbers = (text: string): unknown => {
  const value: unknown = JSON.parse(text)
  if (!isObject(value) || !hasOddNumbers(text)) return value
  const all = numbersOf(text)
  written.set(value, all)
  // a Bundle entry (as a seed Bundle is read, entry by entry) or a whole Bundle: each entry's resource gets its
  // own run of the numbers, but only where that run is certain (an entry whose numbers are all in its
  // resource, in a Bundle with no numbers outside its entries)
  const entries = value.resourceType === "Bundle" && Array.isArray(value.entry) ? value.entry : undefined
  if (entries === undefined) {
    if (isObject(value.resource) && numbersOf(JSON.stringify(value.resource)).length === all.length)
      written.set(value.resource, all)
    return value
  }
  const { entry: _entry, ...rest } = value
  if (numbersOf(JSON.stringify(rest)).length > 0) return value
  // each entry's count as serialised; they must add up to the text's, or the runs would not line up (a
  // duplicate key or a number out of range makes the text hold more than the value): then none is kept
  const counts = entries.map((e) => numbersOf(JSON.stringify(e)).length)
  if (counts.reduce((a, b) => a + b, 0) !== all.length) return value
  let k = 0
  entries.forEach((e, i) => {
    const n = counts[i]!
    if (isObject(e) && isObject(e.resource) && numbersOf(JSON.stringify(e.resource)).length === n)
      written.set(e.resource, all.slice(k, k + n))
    k += n
  })
  return value
}

/** How the numbers of this parsed resource were written (see `parseKeepingNumbers`), when it matters. */
export const writtenNumbers = (resource: object): ReadonlyArray<string> | undefined => written.get(resource)

/** `to` (a copy of `from` with other ids or references: the same numbers, in order) keeps how `from`'s were written. */
export const carryNumbers = <A extends object>(from: object, to: A): A => {
  const numbers = written.get(from)
  if (numbers !== undefined) written.set(to, numbers)
  return to
}
