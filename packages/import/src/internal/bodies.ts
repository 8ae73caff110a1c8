/**
 * Where each resource of the archive sits, so its body can be read again without parsing its whole file:
 * the graph pass records (file, line, byte offset, byte size) per graph node, and the chunks' bodies are read
 * back from uncompressed files with a few positioned reads (`spans`: the lines of one file, sorted by offset,
 * merged into reads of at most `maxSpan` bytes while the gaps between them stay under `maxGap`).
 *
 * Memory: 20 bytes per resource (four typed arrays, grown by doubling).
 */

/** `a`, or a copy of it in an array twice as long (or more) when it is shorter than `need`. */
const grow = <A extends Int32Array<ArrayBuffer> | Float64Array<ArrayBuffer>>(
  a: A,
  need: number,
  make: (length: number) => A,
): A => {
  if (need <= a.length) return a
  let n = a.length * 2
  while (n < need) n *= 2
  const b = make(n)
  b.set(a)
  return b
}
const growI32 = (a: Int32Array<ArrayBuffer>, need: number) => grow(a, need, (n) => new Int32Array(n))
const growF64 = (a: Float64Array<ArrayBuffer>, need: number) => grow(a, need, (n) => new Float64Array(n))

/** Node → the line holding its resource (the last one given, when a key occurs twice). */
export class Locations {
  private files = new Int32Array(1024).fill(-1)
  private lines = new Int32Array(1024)
  private offsets = new Float64Array(1024)
  private sizes = new Int32Array(1024)

  set(node: number, file: number, line: number, offset: number, bytes: number): void {
    if (node >= this.files.length) {
      const before = this.files.length
      this.files = growI32(this.files, node + 1)
      this.files.fill(-1, before)
    }
    this.lines = growI32(this.lines, node + 1)
    this.offsets = growF64(this.offsets, node + 1)
    this.sizes = growI32(this.sizes, node + 1)
    this.files[node] = file
    this.lines[node] = line
    this.offsets[node] = offset
    this.sizes[node] = bytes
  }

  /** The file index of `node`, or -1 when it has no location. */
  file(node: number): number {
    return node < this.files.length ? this.files[node]! : -1
  }
  line(node: number): number {
    return this.lines[node]!
  }
  /** Byte offset of the line in its (uncompressed) file. */
  offset(node: number): number {
    return this.offsets[node]!
  }
  /** Bytes of the line, terminator included. */
  bytes(node: number): number {
    return this.sizes[node]!
  }
}

/** One positioned read: bytes `[start, end)` of a file, holding the lines of `nodes` (in offset order). */
export interface Span {
  readonly file: number
  readonly start: number
  readonly end: number
  readonly nodes: ReadonlyArray<number>
}

export interface SpanOptions {
  /** Merge two lines into one read when at most this many bytes lie between them (default 64 KiB). */
  readonly maxGap?: number
  /** A read holding several lines stays under this many bytes (default 4 MiB; one longer line is read alone). */
  readonly maxSpan?: number
}

/** The reads that fetch the lines of `nodes` (all with a location), grouped by file, each file's in offset order. */
export const spans = (
  nodes: ReadonlyArray<number>,
  locations: Locations,
  options?: SpanOptions,
): ReadonlyArray<Span> => {
  const maxGap = options?.maxGap ?? 64 * 1024
  const maxSpan = options?.maxSpan ?? 4 * 1024 * 1024
  const sorted = nodes
    .slice()
    .sort((a, b) => locations.file(a) - locations.file(b) || locations.offset(a) - locations.offset(b))
  const out: Array<Span> = []
  let file = -1
  let start = 0
  let end = 0
  let members: Array<number> = []
  for (const n of sorted) {
    const f = locations.file(n)
    const s = locations.offset(n)
    const e = s + locations.bytes(n)
    if (members.length > 0 && f === file && s - end <= maxGap && Math.max(e, end) - start <= maxSpan) {
      members.push(n)
      if (e > end) end = e
      continue
    }
    if (members.length > 0) out.push({ file, start, end, nodes: members })
    file = f
    start = s
    end = e
    members = [n]
  }
  if (members.length > 0) out.push({ file, start, end, nodes: members })
  return out
}

/** A line read back: `bytes` bytes at `at` in `buf`, without its LF or CRLF terminator (a view, not a copy). */
export const lineBytes = (buf: Buffer, at: number, bytes: number): Buffer => {
  let stop = at + bytes
  if (stop > at && buf[stop - 1] === 10) stop--
  if (stop > at && buf[stop - 1] === 13) stop--
  return buf.subarray(at, stop)
}
