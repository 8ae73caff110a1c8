/**
 * Decimal precision across a parse and re-serialisation. FHIR gives a decimal's written precision meaning
 * (`1.0` is not `1`, `0.010` is not `0.01`), but `JSON.parse` turns both into the same JavaScript number and
 * `JSON.stringify` writes its shortest form: a resource that is rewritten (parsed, references changed,
 * serialised) would lose it. Real exports carry such numbers (the bulk sample's MedicationRequests hold
 * 663 `1.0`s; Synthea's claims `16942.30`).
 *
 * A rewrite changes strings (references, URLs, meta) and never adds or reorders numbers, so the numbers of
 * the serialised text are those of the original (less those of what it dropped from `meta`: a `meta.tag` with
 * a decimal in an extension, dropped by `--drop-meta tag`), in the same order: `restoreNumbers` puts each one's
 * original text back where the two differ in writing only.
 */

const isDigit = (c: number): boolean => c >= 48 && c <= 57

/** Whether `c` can continue a number token (digits, sign, point, exponent). */
const inNumber = (c: number): boolean =>
  isDigit(c) || c === 43 || c === 45 || c === 46 || c === 69 || c === 101

/** Where the string opened at `open` ends: the first quote after it that is not escaped (-1: none). */
const closingQuote = (text: string, open: number): number => {
  let close = open
  for (;;) {
    close = text.indexOf('"', close + 1)
    if (close === -1) return -1
    let backslashes = 0
    for (let k = close - 1; text.charCodeAt(k) === 92; k--) backslashes++
    if (backslashes % 2 === 0) return close
  }
}

/**
 * Calls `f(from, to)` for each number token of a JSON text (outside strings), in order, until `f` returns
 * true; whether it did. `onKey`: called for each `:` outside a string (each follows a key).
 */
const someNumber = (text: string, f: (from: number, to: number) => boolean, onKey?: () => void): boolean => {
  const n = text.length
  let i = 0
  while (i < n) {
    // the structural text up to the next string holds the numbers
    const quote = text.indexOf('"', i)
    const stop = quote === -1 ? n : quote
    for (; i < stop; i++) {
      const c = text.charCodeAt(i)
      if (c === 58) {
        onKey?.()
        continue
      }
      if (c !== 45 && !isDigit(c)) continue
      let j = i + 1
      while (j < stop && inNumber(text.charCodeAt(j))) j++
      if (f(i, j)) return true
      i = j - 1
    }
    if (quote === -1) break
    // then the string, skipped
    const close = closingQuote(text, quote)
    if (close === -1) return false
    i = close + 1
  }
  return false
}

/** The number tokens of a JSON text as `[start, end)` pairs, flat. */
const numberTokens = (text: string): Array<number> => {
  const out: Array<number> = []
  someNumber(text, (from, to) => {
    out.push(from, to)
    return false
  })
  return out
}

/** Whether the number written `text.slice(from, to)` would be written otherwise by `JSON.stringify`. */
const odd = (text: string, from: number, to: number): boolean => {
  const start = text.charCodeAt(from) === 45 ? from + 1 : from
  // the common case, an integer of up to 15 digits with no leading zero (nor -0), stays as it was
  if (to - start <= 15) {
    let digits = true
    for (let k = start; k < to && digits; k++) digits = isDigit(text.charCodeAt(k))
    const zero = text.charCodeAt(start) === 48
    if (digits && (!zero || (to - start === 1 && start === from))) return false
  }
  const written = text.slice(from, to)
  return JSON.stringify(Number(written)) !== written
}

/** Whether some number of this JSON text would not survive `JSON.parse` + `JSON.stringify` as written. */
export const hasOddNumbers = (text: string): boolean => someNumber(text, (from, to) => odd(text, from, to))

/** The number tokens of a JSON text (outside strings) as written, in order. */
export const numbersOf = (text: string): Array<string> => {
  const out: Array<string> = []
  someNumber(text, (from, to) => {
    out.push(text.slice(from, to))
    return false
  })
  return out
}

/**
 * `serialized` with its numbers written as `numbers` has them (`numbers[k]` for its k-th number), where
 * the two differ in writing only. Unchanged when the counts differ (`prefix`: when `numbers` has fewer) or a
 * pair holds different values: then nothing is guessed.
 */
export const withNumbers = (
  serialized: string,
  numbers: ReadonlyArray<string>,
  options?: { readonly prefix?: boolean },
): string => paired(serialized, numbers, options?.prefix === true) ?? serialized

/** `withNumbers`, undefined where it gives `serialized` unchanged because the numbers do not pair up. */
const paired = (serialized: string, numbers: ReadonlyArray<string>, prefix: boolean): string | undefined => {
  const to = numberTokens(serialized)
  const count = to.length / 2
  if (prefix ? numbers.length < count : numbers.length !== count) return undefined
  const parts: Array<string> = []
  let last = 0
  for (let k = 0; k < count; k++) {
    const was = numbers[k]!
    const now = serialized.slice(to[2 * k]!, to[2 * k + 1]!)
    if (was === now) continue
    if (Number(was) !== Number(now)) return undefined
    parts.push(serialized.slice(last, to[2 * k]!), was)
    last = to[2 * k + 1]!
  }
  if (parts.length === 0) return serialized
  parts.push(serialized.slice(last))
  return parts.join("")
}

/**
 * `serialized` (the JSON `JSON.stringify` made of what was parsed from `original`, rewritten) with each
 * number written as `original` wrote it. The numbers pair up one to one, in order, with equal values; when a
 * rewrite dropped some from `meta` (`alignedNumbers`), the others still do. Otherwise (other counts, or a pair
 * of different values) `serialized` is left as it is: the rewrite did more than Ferry's do, and nothing is
 * guessed. `prefix`: `serialized` holds what `original` begins with (a quarantine line's resource, which comes
 * before its outcome): its numbers pair up with the first ones of `original`.
 */
export const restoreNumbers = (
  original: string,
  serialized: string,
  options?: { readonly prefix?: boolean },
): string => {
  if (!hasOddNumbers(original)) return serialized
  const numbers = numbersOf(original)
  const inOrder = paired(serialized, numbers, options?.prefix === true)
  if (inOrder !== undefined) return inOrder
  const aligned = alignedNumbers(original, serialized, numbers)
  return aligned === undefined
    ? serialized
    : (paired(serialized, aligned, options?.prefix === true) ?? serialized)
}

const isObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

const isResourceObject = (u: unknown): boolean => isObject(u) && typeof u.resourceType === "string"

/**
 * Where a rewrite dropped numbers (`--drop-meta tag` of a tag with a `valueDecimal` in an extension, an older
 * provenance tag replaced): `original`'s numbers without those of what was dropped, in order, to pair with
 * `serialized`'s. A rewrite drops only members of the resource's `meta` and elements of its arrays (`tag`,
 * `security`), never anything else: so only there are numbers left out (a member `serialized`'s `meta` lacks, an
 * element it holds no equal of), everywhere else they pair one to one in order as before. Either text may hold the
 * resource the other is (a Bundle entry's `resource`, a quarantine line's). Undefined when nothing was dropped
 * there, or `original`'s numbers cannot be placed in its value (a duplicate key, a key like an index).
 */
const alignedNumbers = (
  original: string,
  serialized: string,
  numbers: ReadonlyArray<string>,
): Array<string> | undefined => {
  let o: unknown
  let s: unknown
  try {
    o = JSON.parse(original)
    s = JSON.parse(serialized)
  } catch {
    return undefined
  }
  // a quarantine line's resource, a Bundle entry's: the one value that holds the other
  const holds = (a: unknown, b: unknown) =>
    isObject(a) && !isResourceObject(a) && isObject(a.resource) && !(isObject(b) && "resource" in b)
  const oSubject = holds(o, s) ? (o as Record<string, unknown>).resource : o
  const sSubject = holds(s, o) ? (s as Record<string, unknown>).resource : s
  if (!isObject(o) || !isObject(oSubject) || !isObject(sSubject)) return undefined
  try {
    if (countNumbers(o) !== numbers.length) return undefined
    /** [from, to) ranges of `numbers` that were dropped. */
    const dropped: Array<readonly [number, number]> = []
    let at = 0
    // the numbers before the resource in `original` (a quarantine line's resource comes first)
    if (oSubject !== o)
      for (const key in o) {
        if (o[key] === oSubject) break
        at += countNumbers(o[key])
      }
    const kept = isObject(sSubject.meta) ? sSubject.meta : {}
    for (const key in oSubject) {
      if (indexLike.test(key)) return undefined
      const v = oSubject[key]
      if (key !== "meta" || !isObject(v)) {
        at += countNumbers(v)
        continue
      }
      for (const member in v) {
        if (indexLike.test(member)) return undefined
        const was = v[member]
        const n = countNumbers(was)
        const now = kept[member]
        if (!(member in kept)) dropped.push([at, at + n])
        else if (Array.isArray(was) && Array.isArray(now)) {
          const left = [...now]
          let a = at
          for (const element of was) {
            const c = countNumbers(element)
            const i = left.findIndex((x) => deepEqual(x, element))
            if (i >= 0) left.splice(i, 1)
            else dropped.push([a, a + c])
            a += c
          }
        }
        at += n
      }
    }
    if (dropped.every(([from, to]) => from === to)) return undefined
    return numbers.filter((_, i) => !dropped.some(([from, to]) => i >= from && i < to))
  } catch (e) {
    if (!(e instanceof RangeError)) throw e
    return undefined
  }
}

/** How many numbers a parsed JSON value holds (with duplicate keys gone, as JSON.parse left it). */
const countNumbers = (v: unknown): number => {
  if (typeof v === "number") return 1
  let n = 0
  if (Array.isArray(v)) for (const x of v) n += countNumbers(x)
  else if (isObject(v)) for (const key in v) n += countNumbers(v[key])
  return n
}

const deepEqual = (a: unknown, b: unknown): boolean => {
  if (a === b) return true
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (!deepEqual(a[i], b[i])) return false
    return true
  }
  if (!isObject(a) || !isObject(b)) return false
  const ka = Object.keys(a)
  if (ka.length !== Object.keys(b).length) return false
  for (const key of ka) if (!(key in b) || !deepEqual(a[key], b[key])) return false
  return true
}

/** How the numbers of a parsed object were written, when one of them would be written otherwise. */
const written = new WeakMap<object, ReadonlyArray<string>>()

/**
 * Parsed objects (a value and the resources inside it) whose text held a number written otherwise but could
 * not be paired with the value (a duplicate key elsewhere in the same text, a key like `"1"`): how their
 * numbers were written is not known, which is not the same as "as `JSON.stringify` writes them".
 */
const lost = new WeakSet<object>()

/**
 * `JSON.parse`, remembering how the numbers of the value and of every resource inside it (a Bundle entry's,
 * a contained one, an entry given alone) were written, when one of them would be written otherwise
 * (`writtenNumbers`). Each object gets its own run of the text's numbers; the runs are found by walking the
 * value in its keys' order (which is the text's) and are kept only when every number of the text pairs up
 * with a number of the value of the same value and the value holds every key of the text (a duplicate key or
 * other surprise keeps nothing). Costs a scan of the text (≈ 2 ms a MB); a text with no such number keeps
 * nothing.
 */
export const parseKeepingNumbers = (text: string): unknown => keepNumbersOf(JSON.parse(text) as unknown, text)

/** A key that looks like an array index: JavaScript lists such keys first, not in the text's order. */
const indexLike = /^(0|[1-9]\d*)$/

/**
 * A JSON text's number tokens (outside strings) as flat `[start, end)` pairs and its keys (each `:` outside a
 * string follows one, duplicates included): what `keepNumbers` needs, in one pass (the number scan and the key
 * count were two passes over the text, ≈ 2 ms a MB each).
 */
const scan = (text: string): { readonly tokens: Array<number>; readonly keys: number } => {
  const tokens: Array<number> = []
  let keys = 0
  someNumber(
    text,
    (from, to) => {
      tokens.push(from, to)
      return false
    },
    () => {
      keys++
    },
  )
  return { tokens, keys }
}

/**
 * Gives `value` and each resource inside it its run of the text's numbers (`found.tokens`: all of the value's, in
 * order); see above.
 * Nothing when the value's key order cannot be the text's: a duplicate key (the value holds fewer keys than
 * the text), a key like `"1"` (listed first); nor for a value nested too deep to walk.
 */
const keepNumbers = (value: object, text: string, found: ReturnType<typeof scan>): void => {
  if (!keepRuns(value, text, found)) keepPerResource(value, text)
}

/** `keepNumbers` for one value and its text; false (having kept nothing) when they do not pair up. */
const keepRuns = (value: object, text: string, found: ReturnType<typeof scan>): boolean => {
  const { tokens } = found
  const count = tokens.length / 2
  const runs: Array<[object, number, number]> = []
  let k = 0
  let keys = 0
  const visit = (v: unknown): boolean => {
    if (typeof v === "number") {
      if (k >= count) return false
      const at = 2 * k++
      return Number(text.slice(tokens[at]!, tokens[at + 1]!)) === v
    }
    if (Array.isArray(v)) {
      for (const x of v) if (!visit(x)) return false
      return true
    }
    if (!isObject(v)) return true
    const start = k
    for (const key in v) {
      keys++
      if (indexLike.test(key) || !visit(v[key])) return false
    }
    if (k > start && (v === value || typeof v.resourceType === "string")) runs.push([v, start, k])
    return true
  }
  try {
    if (!visit(value) || k !== count || keys !== found.keys) return false
  } catch (e) {
    if (!(e instanceof RangeError)) throw e
    return false
  }
  for (const [o, from, to] of runs) {
    let oddRun = false
    for (let t = from; t < to && !oddRun; t++) oddRun = odd(text, tokens[2 * t]!, tokens[2 * t + 1]!)
    if (!oddRun) continue
    const run: Array<string> = new Array(to - from)
    for (let t = from; t < to; t++) run[t - from] = text.slice(tokens[2 * t]!, tokens[2 * t + 1]!)
    written.set(o, run)
  }
  return true
}

/**
 * A value whose text does not pair up as a whole (one resource of a Bundle with a duplicate key or a key like
 * `"1"`): each resource inside it is paired with its own piece of the text instead, so that one malformed
 * resource costs only itself (and the resources around it, a Bundle) their numbers as written, not its
 * neighbours theirs. The pieces are found by a scan of the text's structure and matched to the parsed
 * resources by type and id, in order; a resource whose piece does not pair up either is marked lost.
 */
const keepPerResource = (value: object, text: string): void => {
  const spans = resourceSpans(text)
  if (spans === undefined) {
    markLost(value)
    return
  }
  // the parsed resources by type and id, in the value's order
  const parsed = new Map<string, Array<Record<string, unknown>>>()
  const stack: Array<unknown> = [value]
  const order: Array<Record<string, unknown>> = []
  while (stack.length > 0) {
    const v = stack.pop()
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) if (typeof v[i] === "object" && v[i] !== null) stack.push(v[i])
      continue
    }
    if (!isObject(v)) continue
    if (typeof v.resourceType === "string") order.push(v)
    const keys = Object.keys(v)
    for (let i = keys.length - 1; i >= 0; i--) {
      const x = v[keys[i]!]
      if (typeof x === "object" && x !== null) stack.push(x)
    }
  }
  for (const r of order) {
    const key = `${r.resourceType as string}/${typeof r.id === "string" ? r.id : ""}`
    const list = parsed.get(key)
    if (list === undefined) parsed.set(key, [r])
    else list.push(r)
  }
  // a type and id with more pieces in the text than resources in the value: a duplicate key dropped one (JSON.parse
  // keeps the last), so which piece is whose cannot be told: those resources are lost
  const pieces = new Map<string, number>()
  for (const span of spans) {
    const key = `${span.type}/${span.id ?? ""}`
    pieces.set(key, (pieces.get(key) ?? 0) + 1)
  }
  for (const [key, list] of parsed) if (pieces.get(key) !== list.length) for (const r of list) lost.add(r)
  if (!isResourceObject(value)) lost.add(value)
  const taken = new Map<string, number>()
  let settledTo = -1
  for (const span of spans) {
    // each piece takes the next resource of its type and id, in order, whether it is paired or not (a nested one
    // under a resource whose piece paired up is covered by that one's runs)
    const key = `${span.type}/${span.id ?? ""}`
    const list = parsed.get(key)
    const at = taken.get(key) ?? 0
    taken.set(key, at + 1)
    if (list === undefined || list.length !== pieces.get(key) || span.start < settledTo) continue
    const r = list[at]!
    const piece = text.slice(span.start, span.end)
    if (hasOddNumbers(piece) && !keepRuns(r, piece, scan(piece))) lost.add(r)
    else settledTo = span.end
  }
}

/** A resource's place in a JSON text: an object with a string `resourceType` member, and its `id`. */
interface Span {
  readonly start: number
  readonly end: number
  readonly type: string
  readonly id: string | undefined
}

/**
 * The objects of a JSON text that have a string `resourceType` member, ordered by where they begin (an outer
 * resource before the ones inside it). Undefined for text that is not well formed.
 */
const resourceSpans = (text: string): Array<Span> | undefined => {
  interface Frame {
    readonly start: number
    readonly object: boolean
    key: string | undefined
    expectKey: boolean
    type: string | undefined
    id: string | undefined
  }
  const frames: Array<Frame> = []
  const spans: Array<Span> = []
  const n = text.length
  let i = 0
  while (i < n) {
    const c = text.charCodeAt(i)
    if (c === 34) {
      const close = closingQuote(text, i)
      if (close === -1) return undefined
      const top = frames[frames.length - 1]
      if (top?.object === true) {
        const raw = text.slice(i, close + 1)
        const decoded = raw.includes("\\") ? (JSON.parse(raw) as string) : raw.slice(1, -1)
        if (top.expectKey) {
          top.key = decoded
          top.expectKey = false
        } else if (top.key === "resourceType") top.type = decoded
        else if (top.key === "id") top.id = decoded
      }
      i = close + 1
      continue
    }
    if (c === 123 || c === 91) {
      frames.push({
        start: i,
        object: c === 123,
        key: undefined,
        expectKey: c === 123,
        type: undefined,
        id: undefined,
      })
    } else if (c === 125 || c === 93) {
      const f = frames.pop()
      if (f === undefined) return undefined
      if (f.type !== undefined) spans.push({ start: f.start, end: i + 1, type: f.type, id: f.id })
      const top = frames[frames.length - 1]
      if (top?.object === true) top.key = undefined
    } else if (c === 44) {
      const top = frames[frames.length - 1]
      if (top?.object === true) top.expectKey = true
    } else if (c !== 58 && c !== 32 && c !== 9 && c !== 10 && c !== 13) {
      // a number or a literal: the value of the current key, not a string (so no type or id)
      const top = frames[frames.length - 1]
      if (top?.object === true && (top.key === "resourceType" || top.key === "id")) top.key = undefined
    }
    i++
  }
  if (frames.length > 0) return undefined
  return spans.sort((a, b) => a.start - b.start)
}

/** `value` and every resource inside it: their numbers' texts are not known (see `lost`). Walked without recursion. */
const markLost = (value: object): void => {
  const stack: Array<unknown> = [value]
  while (stack.length > 0) {
    const v = stack.pop()
    if (Array.isArray(v)) {
      for (const x of v) if (typeof x === "object" && x !== null) stack.push(x)
      continue
    }
    if (!isObject(v)) continue
    if (v === value || typeof v.resourceType === "string") lost.add(v)
    for (const key in v) {
      const x = v[key]
      if (typeof x === "object" && x !== null) stack.push(x)
    }
  }
}

/** How the numbers of this parsed object were written (see `parseKeepingNumbers`), when it matters. */
export const writtenNumbers = (value: object): ReadonlyArray<string> | undefined => written.get(value)

/**
 * Whether this parsed object's text held numbers written otherwise that could not be kept (a duplicate key in
 * the same text, …): its numbers as parsed may not be as written. A comparison then compares values only.
 */
export const numbersLost = (value: object): boolean => lost.has(value)

/** `to` (a copy of `from` with other ids or references: the same numbers, in order) keeps how `from`'s were written. */
export const carryNumbers = <A extends object>(from: object, to: A): A => {
  const numbers = written.get(from)
  if (numbers !== undefined) written.set(to, numbers)
  if (lost.has(from)) lost.add(to)
  return to
}

/** `value` (parsed from `text`), remembering as `parseKeepingNumbers` does how its numbers were written. */
export const keepNumbersOf = <A>(value: A, text: string): A => {
  if (typeof value === "object" && value !== null && hasOddNumbers(text)) keepNumbers(value, text, scan(text))
  return value
}

/** `JSON.stringify(value)` with its numbers written as they were read (`writtenNumbers`), when known. */
export const stringifyKeepingNumbers = (value: unknown): string => {
  const numbers = typeof value === "object" && value !== null ? written.get(value) : undefined
  const text = JSON.stringify(value)
  return numbers === undefined ? text : withNumbers(text, numbers)
}
