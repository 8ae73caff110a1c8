/** Field-level differences between two canonical values (pure). */
import { createHash } from "node:crypto"
import { decimalKey } from "./Canonical.js"

export interface FieldDiff {
  /** JSON path, e.g. `name[0].given[1]`. */
  readonly path: string
  /** The values as short JSON text (truncated); absent when the side has no value there. */
  readonly source?: string
  readonly target?: string
}

const isObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** A number's stand-in (see `Canonical.decimalKey`). */
const isWritten = (u: unknown): u is Record<string, string> =>
  isObject(u) && typeof u[decimalKey] === "string" && Object.keys(u).length === 1

/** Marks a number's text in `preview`'s JSON, unquoted afterwards (JSON.stringify has no raw output). */
const asWritten = "\u0001as-written:"
const asWrittenPattern = /"\\u0001as-written:([^"]*)"/g

/** JSON text of a value (a number as it was written: see `Canonical.decimalKey`). */
const textOf = (value: unknown): string =>
  JSON.stringify(value, (_k, v: unknown) => (isWritten(v) ? `${asWritten}${v[decimalKey]}` : v))?.replace(
    asWrittenPattern,
    "$1",
  ) ?? "undefined"

/** JSON text of a value (a number as it was written: see `Canonical.decimalKey`), cut to `max` characters. */
export const preview = (value: unknown, max = 120): string => around(textOf(value), 0, max)

/**
 * At most `max` characters of `text` around index `at` (where it first differs from the other side's): a
 * change late in a long narrative or note shows, not just both texts' identical beginnings. `…` marks a cut.
 */
const around = (text: string, at: number, max: number): string => {
  if (text.length <= max) return text
  const start = Math.max(0, at - Math.floor(max / 3))
  if (start === 0) return `${text.slice(0, max - 1)}…`
  // after the leading …, max - 1 characters: the end when it is that close
  if (start + max - 1 >= text.length) return `…${text.slice(text.length - (max - 1))}`
  return `…${text.slice(start, start + max - 2)}…`
}

/** The first index where `a` and `b` differ (the shorter's length when one begins the other). */
const firstDifference = (a: string, b: string): number => {
  const n = Math.min(a.length, b.length)
  let i = 0
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++
  return i
}

/** Every character outside printable ASCII as a `\uXXXX` escape. */
const escaped = (text: string): string =>
  text.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)

/**
 * Both sides' texts for the report, cut around their first difference. Two texts that read the same (the
 * same letters in another Unicode normalisation: `é` as one code point or as `e` and a combining accent) show
 * their non-ASCII characters escaped, so that the difference can be seen.
 */
const previews = (a: unknown, b: unknown, max: number): { source?: string; target?: string } => {
  let ta = a !== undefined ? textOf(a) : undefined
  let tb = b !== undefined ? textOf(b) : undefined
  if (ta !== undefined && tb !== undefined && ta !== tb && ta.normalize("NFC") === tb.normalize("NFC")) {
    ta = escaped(ta)
    tb = escaped(tb)
  }
  const at = ta !== undefined && tb !== undefined ? firstDifference(ta, tb) : 0
  return {
    ...(ta !== undefined ? { source: around(ta, at, max) } : {}),
    ...(tb !== undefined ? { target: around(tb, at, max) } : {}),
  }
}

const base64 = /^[A-Za-z0-9+/]*={0,2}$/

/** Where a payload is: `Binary.data` (the root's `data`), or the `data` of an Attachment-valued element. */
const payloadPath =
  /^data$|(?:^|\.)(?:attachment|photo\[\d+\]|presentedForm\[\d+\]|content(?:\[\d+\])?|contentAttachment|valueAttachment|sourceAttachment|image\[\d+\]|payload\[\d+\]\.contentAttachment)\.data$/

/** The bytes a base64Binary value holds (undefined: not base64 text). */
const decoded = (u: unknown): Buffer | undefined =>
  typeof u === "string" && u.length % 4 === 0 && base64.test(u) ? Buffer.from(u, "base64") : undefined

/** UTF-8 text a person can read: no control characters but tab and line ends, and no invalid sequences. */
const readable = (bytes: Buffer): string | undefined => {
  const text = bytes.toString("utf8")
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    // control characters other than tab, line feed and carriage return; U+FFFD: bytes that are no UTF-8
    if ((c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) || c === 0x7f || c === 0xfffd) return undefined
  }
  return text
}

/**
 * A payload (`Binary.data`, `Attachment.data`) changed: base64 windows say nothing to a reader. Text on both
 * sides is shown decoded, cut around where it differs; other bytes by their size and sha256.
 */
const payloadPreviews = (
  a: unknown,
  b: unknown,
  max: number,
): { source?: string; target?: string } | undefined => {
  const da = a === undefined ? undefined : decoded(a)
  const db = b === undefined ? undefined : decoded(b)
  if ((a !== undefined && da === undefined) || (b !== undefined && db === undefined)) return undefined
  const ta = da === undefined ? undefined : readable(da)
  const tb = db === undefined ? undefined : readable(db)
  if ((da === undefined || ta !== undefined) && (db === undefined || tb !== undefined)) {
    const ja = ta === undefined ? undefined : JSON.stringify(ta)
    const jb = tb === undefined ? undefined : JSON.stringify(tb)
    const at = ja !== undefined && jb !== undefined ? firstDifference(ja, jb) : 0
    const shown = (t: string) => `text (decoded): ${around(t, at, max - 16)}`
    return {
      ...(ja !== undefined ? { source: shown(ja) } : {}),
      ...(jb !== undefined ? { target: shown(jb) } : {}),
    }
  }
  const described = (bytes: Buffer) =>
    `${bytes.length.toLocaleString("en-US")} bytes, sha256 ${createHash("sha256").update(bytes).digest("hex").slice(0, 16)}…`
  return {
    ...(da !== undefined ? { source: described(da) } : {}),
    ...(db !== undefined ? { target: described(db) } : {}),
  }
}

const join = (path: string, key: string | number): string =>
  typeof key === "number" ? `${path}[${key}]` : path === "" ? key : `${path}.${key}`

/** Beyond this many element pairs (source length × target length), arrays are compared position by position. */
const ALIGN_MAX = 250_000

/**
 * The pairs of positions to compare in two arrays: the elements they have in common matched in order (a longest
 * common subsequence of equal elements), so that one element inserted or removed shows as that element alone,
 * not as every later position changed; between two matches, the elements left on each side are paired in order
 * (an element changed in place), and the rest stand alone (`[i, undefined]` removed, `[undefined, j]` added).
 * Equal pairs are left out.
 */
const align = (
  a: ReadonlyArray<unknown>,
  b: ReadonlyArray<unknown>,
): ReadonlyArray<readonly [number | undefined, number | undefined]> => {
  const n = a.length
  const m = b.length
  const pairs: Array<readonly [number | undefined, number | undefined]> = []
  const ta = a.map(textOf)
  const tb = b.map(textOf)
  if (n * m > ALIGN_MAX) {
    for (let i = 0; i < Math.max(n, m); i++)
      if (ta[i] !== tb[i]) pairs.push([i < n ? i : undefined, i < m ? i : undefined])
    return pairs
  }
  // lengths of the longest common subsequences of a[i..] and b[j..]
  const w = m + 1
  const lcs = new Uint32Array((n + 1) * w)
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      lcs[i * w + j] =
        ta[i] === tb[j] ? lcs[(i + 1) * w + j + 1]! + 1 : Math.max(lcs[(i + 1) * w + j]!, lcs[i * w + j + 1]!)
  let i = 0
  let j = 0
  const gap = (iEnd: number, jEnd: number) => {
    while (i < iEnd && j < jEnd) pairs.push([i++, j++])
    while (i < iEnd) pairs.push([i++, undefined])
    while (j < jEnd) pairs.push([undefined, j++])
  }
  let gi = 0
  let gj = 0
  while (gi < n && gj < m) {
    if (ta[gi] === tb[gj]) {
      gap(gi, gj)
      i = ++gi
      j = ++gj
    } else if (lcs[(gi + 1) * w + gj]! >= lcs[gi * w + gj + 1]!) gi++
    else gj++
  }
  gap(n, m)
  return pairs
}

/** The leaf differences between `source` and `target`, at most `limit` of them. */
export const diff = (source: unknown, target: unknown, limit = 50, max = 120): ReadonlyArray<FieldDiff> => {
  const out: Array<FieldDiff> = []
  const walk = (a: unknown, b: unknown, path: string): void => {
    if (out.length >= limit) return
    if (isObject(a) && isObject(b) && !isWritten(a) && !isWritten(b)) {
      const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()
      for (const k of keys) walk(a[k], b[k], join(path, k))
      return
    }
    if (Array.isArray(a) && Array.isArray(b)) {
      for (const [i, j] of align(a, b))
        walk(i === undefined ? undefined : a[i], j === undefined ? undefined : b[j], join(path, i ?? j ?? 0))
      return
    }
    if (JSON.stringify(a) === JSON.stringify(b)) return
    // a Binary's payload, or an Attachment's (`content[0].attachment.data`, `photo[0].data`, …): not
    // SampledData.data or Signature.data, whose short texts may read as base64 too
    const payload = payloadPath.test(path) ? payloadPreviews(a, b, max) : undefined
    out.push({ path: path === "" ? "$" : path, ...(payload ?? previews(a, b, max)) })
  }
  walk(source, target, "")
  return out
}
