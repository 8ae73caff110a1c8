/** Field-level differences between two canonical values (pure). */
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

/** JSON text of a value (a number as it was written: see `Canonical.decimalKey`), cut to `max` characters. */
export const preview = (value: unknown, max = 120): string => {
  const text =
    JSON.stringify(value, (_k, v: unknown) => (isWritten(v) ? `${asWritten}${v[decimalKey]}` : v))?.replace(
      asWrittenPattern,
      "$1",
    ) ?? "undefined"
  return text.length > max ? `${text.slice(0, max - 1)}…` : text
}

const join = (path: string, key: string | number): string =>
  typeof key === "number" ? `${path}[${key}]` : path === "" ? key : `${path}.${key}`

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
      for (let i = 0; i < Math.max(a.length, b.length); i++) walk(a[i], b[i], join(path, i))
      return
    }
    if (JSON.stringify(a) === JSON.stringify(b)) return
    out.push({
      path: path === "" ? "$" : path,
      ...(a !== undefined ? { source: preview(a, max) } : {}),
      ...(b !== undefined ? { target: preview(b, max) } : {}),
    })
  }
  walk(source, target, "")
  return out
}
