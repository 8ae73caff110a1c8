/**
 * Streaming NDJSON (one JSON value per line), the format of every Bulk Data file Ferry moves.
 *
 * Reading works on byte chunks: lines are split on byte 0x0A with `Buffer.indexOf` (0x0A never occurs
 * inside a multi-byte UTF-8 sequence, so a character split across chunks is reassembled before it is
 * decoded), CR before LF is dropped, blank lines are skipped, a last line without a newline is kept,
 * and a line longer than `maxLineBytes` fails instead of growing memory. Each line is parsed with
 * `JSON.parse` and checked with a cheap guard (STYLE.md §5): an object with a string `resourceType`.
 *
 * Writing serialises values (or takes pre-serialised lines) into a file created 0600, optionally
 * gzip-compressed, hashing the bytes that reach the disk.
 */
import { createHash } from "node:crypto"
import * as NFS from "node:fs"
import { once } from "node:events"
import { PassThrough, pipeline as pipelineCb, Transform } from "node:stream"
import { pipeline } from "node:stream/promises"
import { promisify } from "node:util"
import * as Zlib from "node:zlib"
import { type Cause, Channel, Chunk, Effect, Option, Schema, Sink, Stream } from "effect"
import type { Scope } from "effect"
import { isResource, type Resource } from "./Ids.js"
import { parseKeepingNumbers, stringifyKeepingNumbers } from "./NumberText.js"

// ---------------------------------------------------------------------------------------------------------
// Errors

/**
 * A problem with an NDJSON file.
 * - InvalidJson: a line is not valid JSON
 * - NotAResource: a line is JSON but not an object with a string `resourceType`
 * - UnexpectedType: a line's `resourceType` is not the type the file is supposed to hold
 * - LineTooLong: a line exceeds the configured maximum length
 * - InvalidLine: a pre-serialised line handed to the writer contains a newline
 * - Io: the file could not be read or written
 * - InvalidGzip: a gzip file does not gunzip (cut short, or not gzip at all): damage, not an I/O problem
 */
export class NdjsonError extends Schema.TaggedError<NdjsonError>("@ferry/core/NdjsonError")("NdjsonError", {
  reason: Schema.Literal(
    "InvalidJson",
    "NotAResource",
    "UnexpectedType",
    "LineTooLong",
    "InvalidLine",
    "Io",
    "InvalidGzip",
  ),
  file: Schema.String,
  line: Schema.Number,
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect),
}) {
  /** `file:line` (or the file). */
  get where(): string {
    return this.line > 0 ? `${this.file}:${this.line}` : this.file
  }

  /** What is wrong, without the advice (a caller that knows the file better gives its own). */
  get problem(): string {
    const what: Record<NdjsonError["reason"], string> = {
      InvalidJson: `not valid JSON (${this.detail})`,
      NotAResource: `not a FHIR resource (${this.detail})`,
      UnexpectedType: this.detail,
      LineTooLong: `line longer than ${this.detail}`,
      InvalidLine: this.detail,
      Io: this.detail,
      InvalidGzip: `the file is not valid gzip (${this.detail})`,
    }
    return what[this.reason]
  }

  override get message(): string {
    const advice: Record<NdjsonError["reason"], string> = {
      InvalidJson: "fix or remove that line",
      NotAResource: 'every line must be a JSON object with a "resourceType"',
      UnexpectedType: "each NDJSON file holds one resource type, move the line to the right file",
      LineTooLong: "raise the maximum line length or check that the file really is NDJSON",
      InvalidLine: "a pre-serialised line must not contain a newline",
      Io: "check the path, permissions and free disk space",
      InvalidGzip: "the file is damaged, restore it or export again",
    }
    return `${this.where}: ${this.problem}; ${advice[this.reason]}`
  }
}

const errorText = (u: unknown): string =>
  u instanceof Error ? u.message : typeof u === "string" ? u : JSON.stringify(u)

const ioError =
  (file: string, line = 0) =>
  (cause: unknown) =>
    new NdjsonError({ reason: "Io", file, line, detail: errorText(cause), cause })

/** zlib's errors (`Z_BUF_ERROR`: cut short, `Z_DATA_ERROR`: not gzip) say the bytes are damaged, not the disk. */
const isZlibError = (cause: unknown): boolean =>
  typeof cause === "object" &&
  cause !== null &&
  "code" in cause &&
  typeof cause.code === "string" &&
  cause.code.startsWith("Z_")

const readError =
  (file: string) =>
  (cause: unknown): NdjsonError =>
    isZlibError(cause)
      ? new NdjsonError({ reason: "InvalidGzip", file, line: 0, detail: errorText(cause), cause })
      : ioError(file)(cause)

// ---------------------------------------------------------------------------------------------------------
// Reading

/** Default maximum line length: 64 MiB. */
export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024

/**
 * Default maximum line length of a Binary file: 448 MiB. A Binary resource carries its content inline (base64
 * `data`: a scanned document, an image study), and a line is one string, which V8 caps at ≈ 512 MiB.
 */
export const BINARY_MAX_LINE_BYTES = 448 * 1024 * 1024

/** An archive's Binary data file (`data/Binary.000.ndjson[.gz]`), however a reader names it: Binary's limit. */
const binaryFile = /(?:^|\/)Binary\.\d{3,}\.ndjson(?:\.gz)?(?:\.part)?$/

export interface ReadOptions {
  /** How the source is named in errors: a path, an archive-relative path or a URL. */
  readonly file: string
  /**
   * Fail when a line is longer than this many bytes (default 64 MiB; 448 MiB for `resourceType` Binary, or a file
   * named as an archive's Binary data file, so that every reader of one takes its lines).
   */
  readonly maxLineBytes?: number
  /** When set, every line's `resourceType` must equal this. */
  readonly resourceType?: string
  /** Give each item its line's text too (`Item.text`). */
  readonly keepText?: boolean
  /**
   * Remember how each resource's numbers were written (`NumberText.writtenNumbers`), when one would be written
   * otherwise: a scan of the line.
   */
  readonly keepNumbers?: boolean
}

/** One line of a file, undecoded. */
export interface Line {
  /** 1-based line number in the file (blank lines count). */
  readonly line: number
  /** The line without its terminator (LF or CRLF). */
  readonly text: string
  /** Bytes the line occupies in the file, terminator included. */
  readonly bytes: number
  /** Byte offset of the line's first byte in the (decompressed) input: read `bytes` bytes there to get it again. */
  readonly offset: number
  /** False only for a last line that has no trailing newline. */
  readonly terminated: boolean
}

/** One parsed line. */
export interface Item<A = Resource> {
  readonly line: number
  readonly value: A
  readonly bytes: number
  /** Byte offset of the line in the (decompressed) input (see `Line.offset`). */
  readonly offset: number
  /** The line's text, with `keepText`. */
  readonly text?: string
}

const openP = promisify(NFS.open)
const fchmodP = promisify(NFS.fchmod)
const fsyncP = promisify(NFS.fsync)

const asBuffer = (u: Uint8Array): Buffer =>
  Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength)

/** Decode window: strings up to this size stay out of V8's large-object space. */
const WINDOW = 64 * 1024

const isBlank = (s: string): boolean => s.length === 0 || (s.charCodeAt(0) <= 32 && s.trim().length === 0)

/** The line splitter's state machine, shared by the Channel (`splitChannel`) and the plain `parser`. */
interface SplitState<A> {
  /** Takes the next input chunks (the previous ones must be used up: `nextBatch` gave undefined). */
  readonly input: (chunks: ReadonlyArray<Uint8Array>) => void
  /** The next batch of outputs from the current input (about a window's worth), or undefined when used up. */
  readonly nextBatch: () => Array<A> | undefined
  /** The outputs of a last line without a newline, at the end of the input. */
  readonly end: () => Array<A>
}

/**
 * `map` turns each line into zero or one output; it may throw an NdjsonError (thrown, not returned, to keep
 * the hot loop free of allocation).
 */
/** Whether `raw[from, to)` starts with the UTF-8 byte order mark (EF BB BF). */
const hasBom = (raw: Buffer, from: number, to: number): boolean =>
  to - from >= 3 && raw[from] === 0xef && raw[from + 1] === 0xbb && raw[from + 2] === 0xbf

const splitState = <A>(
  options: ReadOptions & { readonly keepBlank?: boolean },
  map: (line: number, text: string, bytes: number, terminated: boolean, offset: number) => A | undefined,
): SplitState<A> => {
  const max =
    options.maxLineBytes ??
    (options.resourceType === "Binary" || binaryFile.test(options.file)
      ? BINARY_MAX_LINE_BYTES
      : DEFAULT_MAX_LINE_BYTES)
  const keepBlank = options.keepBlank === true
  let pending: Array<Buffer> = []
  let pendingBytes = 0
  let lineNo = 0
  /** Bytes of the input before the next line (blank lines included). */
  let offset = 0

  const tooLong = (line: number) =>
    new NdjsonError({ reason: "LineTooLong", file: options.file, line, detail: `${max} bytes` })

  /** One line held in a Buffer (a line that crossed chunks, or the last one). */
  const emitBuffer = (out: Array<A>, raw: Buffer, terminated: boolean) => {
    lineNo++
    let stop = raw.length
    if (stop > 0 && raw[stop - 1] === 13) stop--
    if (stop > max) throw tooLong(lineNo)
    const bom = lineNo === 1 && hasBom(raw, 0, stop) ? 3 : 0
    const text = raw.toString("utf8", bom, stop)
    const at = offset + bom
    const bytes = raw.length + (terminated ? 1 : 0) - bom
    offset += bytes + bom
    if (!keepBlank && isBlank(text)) return
    const mapped = map(lineNo, text, bytes, terminated, at)
    if (mapped !== undefined) out.push(mapped)
  }

  const emitWindow = (out: Array<A>, buf: Buffer, start: number, end: number) => {
    const text = buf.toString("utf8", start, end)
    const ascii = text.length === end - start
    let pos = 0
    while (pos < text.length) {
      const nl = text.indexOf("\n", pos)
      lineNo++
      let stop = nl
      if (stop > pos && text.charCodeAt(stop - 1) === 13) stop--
      const line = text.slice(pos, stop)
      const bytes = ascii ? nl - pos + 1 : Buffer.byteLength(line) + (nl - stop) + 1
      if (bytes - 1 - (nl - stop) > max) throw tooLong(lineNo)
      pos = nl + 1
      // a byte order mark before the first line (Windows tools write one): not part of the line
      const bom = lineNo === 1 && line.charCodeAt(0) === 0xfeff ? 3 : 0
      const at = offset + bom
      offset += bytes
      if (!keepBlank && isBlank(line)) continue
      const mapped =
        bom === 0 ? map(lineNo, line, bytes, true, at) : map(lineNo, line.slice(1), bytes - 3, true, at)
      if (mapped !== undefined) out.push(mapped)
    }
  }

  const keep = (buf: Buffer, from: number) => {
    const rest = buf.length - from
    if (rest === 0) return
    // +1 leaves room for a CR that may still be followed by LF
    if (pendingBytes + rest > max + 1) throw tooLong(lineNo + 1)
    // copied: the caller may reuse `buf` for the next read, and a small copy doesn't pin a big buffer
    pending.push(Buffer.from(buf.subarray(from)))
    pendingBytes += rest
  }

  // The input chunk being worked through. Its lines are emitted one window (~64 KiB of text) at a time, so
  // only a window's worth of parsed values is alive at once however big the read was.
  let bufs: Array<Buffer> = []
  let bi = 0
  let pos = 0
  let last = -1
  let fresh = true

  /** The next batch of outputs from the current input, or undefined when it is used up. */
  const nextBatch = (): Array<A> | undefined => {
    while (bi < bufs.length) {
      const buf = bufs[bi]!
      if (fresh) {
        fresh = false
        pos = 0
        const first = buf.indexOf(10)
        if (first === -1) {
          keep(buf, 0)
          bi++
          fresh = true
          continue
        }
        last = buf.lastIndexOf(10)
        if (pendingBytes > 0) {
          pending.push(buf.subarray(0, first))
          const joined = Buffer.concat(pending, pendingBytes + first)
          pending = []
          pendingBytes = 0
          pos = first + 1
          const out: Array<A> = []
          emitBuffer(out, joined, true)
          if (out.length > 0) return out
        }
      }
      if (pos <= last) {
        let stop = last + 1
        if (stop - pos > WINDOW) {
          const nl = buf.lastIndexOf(10, pos + WINDOW - 1)
          stop = nl >= pos ? nl + 1 : buf.indexOf(10, pos + WINDOW) + 1
        }
        const out: Array<A> = []
        emitWindow(out, buf, pos, stop)
        pos = stop
        if (out.length > 0) return out
        continue
      }
      keep(buf, last + 1)
      bi++
      fresh = true
    }
    bufs = []
    return undefined
  }

  return {
    input: (chunks) => {
      bufs = chunks.map(asBuffer)
      bi = 0
      fresh = true
    },
    nextBatch,
    end: () => {
      const out: Array<A> = []
      if (pendingBytes > 0) {
        const joined = Buffer.concat(pending, pendingBytes)
        pending = []
        pendingBytes = 0
        emitBuffer(out, joined, false)
      }
      return out
    },
  }
}

/**
 * The line splitter as a Channel. `map` turns each line into zero or one output; it may throw an
 * NdjsonError (thrown, not returned, to keep the hot loop free of allocation), which fails the stream.
 */
const splitChannel = <A, IE, Done>(
  options: ReadOptions & { readonly keepBlank?: boolean },
  map: (line: number, text: string, bytes: number, terminated: boolean, offset: number) => A | undefined,
): Channel.Channel<Chunk.Chunk<A>, Chunk.Chunk<Uint8Array>, IE | NdjsonError, IE, unknown, Done> =>
  Channel.suspend(() => {
    const state = splitState(options, map)
    const run = <X>(f: () => X): Effect.Effect<X, NdjsonError> =>
      Effect.suspend(() => {
        try {
          return Effect.succeed(f())
        } catch (e) {
          if (e instanceof NdjsonError) return Effect.fail(e)
          throw e
        }
      })

    const drain: Channel.Channel<
      Chunk.Chunk<A>,
      Chunk.Chunk<Uint8Array>,
      IE | NdjsonError,
      IE,
      unknown,
      Done
    > = Channel.suspend(() =>
      Channel.flatMap(Channel.fromEffect(run(state.nextBatch)), (out) =>
        out === undefined ? loop : Channel.zipRight(Channel.write(Chunk.unsafeFromArray(out)), drain),
      ),
    )
    const loop: Channel.Channel<
      Chunk.Chunk<A>,
      Chunk.Chunk<Uint8Array>,
      IE | NdjsonError,
      IE,
      unknown,
      Done
    > = Channel.readWithCause({
      onInput: (input: Chunk.Chunk<Uint8Array>) => {
        state.input(Chunk.toReadonlyArray(input))
        return drain
      },
      onFailure: (cause: Cause.Cause<IE>) => Channel.failCause(cause),
      onDone: () =>
        Channel.flatMap(Channel.fromEffect(run(state.end)), (out) =>
          out.length === 0 ? Channel.void : Channel.write(Chunk.unsafeFromArray(out)),
        ),
    })
    return loop
  })

/**
 * Bytes → numbered lines (blank lines skipped unless `keepBlank`). The line after the last newline, if
 * any, is emitted with `terminated: false` (a journal uses this to detect a torn tail).
 */
export const splitLines =
  (options: ReadOptions & { readonly keepBlank?: boolean }) =>
  <E, R>(self: Stream.Stream<Uint8Array, E, R>): Stream.Stream<Line, E | NdjsonError, R> =>
    Stream.pipeThroughChannel(
      self,
      splitChannel<Line, E, unknown>(options, (line, text, bytes, terminated, offset) => ({
        line,
        text,
        bytes,
        offset,
        terminated,
      })),
    )

/** Bytes → raw line strings (blank lines skipped), for counting or hashing without parsing. */
export const lines =
  (options: ReadOptions) =>
  <E, R>(self: Stream.Stream<Uint8Array, E, R>): Stream.Stream<string, E | NdjsonError, R> =>
    Stream.pipeThroughChannel(
      self,
      splitChannel<string, E, unknown>(options, (_line, text) => text),
    )

const shorten = (s: string): string => (s.length > 80 ? `${s.slice(0, 77)}...` : s)

/**
 * V8's JSON.parse messages quote the input (`Unexpected token 'o', "{"name": oops}" is not valid JSON`);
 * lines may hold patient data, which must not reach logs, so the quote is cut off.
 */
/**
 * `JSON.parse`'s message without the piece of the input V8 quotes in it (`Unexpected token 'S', ..."value":SSN-12"...
 * is not valid JSON` → `Unexpected token 'S'`): a line of a resource, or a config file's secret, stays out of errors.
 */
export const jsonErrorText = (e: unknown): string => errorText(e).replace(/, (?:\.\.\.)?".*$/s, "")

const kindOf = (u: unknown): string =>
  Array.isArray(u)
    ? "an array"
    : u === null
      ? "null"
      : typeof u === "object"
        ? `an object without a string "resourceType"`
        : `a ${typeof u}`

/** Parse one line with `JSON.parse` and the cheap resource guard; throws NdjsonError. */
const parseText = (options: ReadOptions, line: number, text: string, bytes: number, offset: number): Item => {
  let value: unknown
  try {
    value = options.keepNumbers === true ? parseKeepingNumbers(text) : JSON.parse(text)
  } catch (e) {
    throw new NdjsonError({ reason: "InvalidJson", file: options.file, line, detail: jsonErrorText(e) })
  }
  if (!isResource(value)) {
    throw new NdjsonError({
      reason: "NotAResource",
      file: options.file,
      line,
      detail: `found ${kindOf(value)}`,
    })
  }
  if (options.resourceType !== undefined && value.resourceType !== options.resourceType) {
    throw new NdjsonError({
      reason: "UnexpectedType",
      file: options.file,
      line,
      detail: `expected ${options.resourceType}, found ${shorten(value.resourceType)}`,
    })
  }
  return options.keepText === true ? { line, value, bytes, offset, text } : { line, value, bytes, offset }
}

/**
 * Parse one line (as `splitLines` gives it) with `JSON.parse` and the cheap guard. Fails with NdjsonError
 * naming `file:line`.
 */
export const parseLine = (options: ReadOptions, line: Line): Effect.Effect<Item, NdjsonError> =>
  Effect.try({
    try: () => parseText(options, line.line, line.text, line.bytes, line.offset),
    catch: (e) =>
      e instanceof NdjsonError
        ? e
        : new NdjsonError({
            reason: "InvalidJson",
            file: options.file,
            line: line.line,
            detail: jsonErrorText(e),
          }),
  })

/** Bytes → parsed resources, each with its 1-based line number and byte size. */
export const parse =
  (options: ReadOptions) =>
  <E, R>(self: Stream.Stream<Uint8Array, E, R>): Stream.Stream<Item, E | NdjsonError, R> =>
    Stream.pipeThroughChannel(
      self,
      splitChannel<Item, E, unknown>(options, (line, text, bytes, _terminated, offset) =>
        parseText(options, line, text, bytes, offset),
      ),
    )

/**
 * The parser of `parse` without a Stream, for hot loops that already hold the bytes (the export checks every
 * line of a download as it arrives): `push` a chunk and every resource in it is handed to `onItem`; `end`
 * once the input is complete (a last line without a newline). Both throw NdjsonError on a bad line.
 */
export interface Parser {
  readonly push: (chunk: Uint8Array) => void
  readonly end: () => void
}

/** A `Parser` over a splitter state: every output goes to `onOut`. */
const pushParser = <A>(state: SplitState<A>, onOut: (a: A) => void): Parser => {
  const drain = (out: Array<A>) => {
    for (let i = 0; i < out.length; i++) onOut(out[i]!)
  }
  return {
    push: (chunk) => {
      state.input([chunk])
      for (let out = state.nextBatch(); out !== undefined; out = state.nextBatch()) drain(out)
    },
    end: () => drain(state.end()),
  }
}

/**
 * A `Parser` that hands each line to `onLine` as it is cut out (numbered, blank lines and a last line without a
 * newline included as `splitLines` gives them with `keepBlank`), keeping nothing: for a synchronous loop over a
 * file read into one reused buffer. A line over the limit throws an NdjsonError (LineTooLong).
 */
export const lineParser = (
  options: ReadOptions,
  onLine: (line: number, text: string, bytes: number, terminated: boolean, offset: number) => void,
): Parser =>
  pushParser(
    splitState<never>({ ...options, keepBlank: true }, (line, text, bytes, terminated, offset) => {
      onLine(line, text, bytes, terminated, offset)
      return undefined
    }),
    () => undefined,
  )

export const parser = (options: ReadOptions, onItem: (item: Item) => void): Parser =>
  pushParser(
    splitState<Item>(options, (line, text, bytes, _terminated, offset) =>
      parseText(options, line, text, bytes, offset),
    ),
    onItem,
  )

/**
 * Whether `text` is one JSON object whose top-level `"resourceType"` is the string `type`, checked without
 * building the value (no garbage: the export checks every line of every file, and parsing them all kept the
 * collector busy for ≈ 30 % of a 1M-resource export). Validates the whole JSON grammar (strings and their
 * escapes, numbers, literals, nesting). `false` does not say what is wrong: the caller then parses the line
 * for the exact error (and a line nested deeper than 512 levels, or whose `resourceType` is escaped or given
 * twice, is simply left to `JSON.parse`).
 */
export const isResourceOfType = (text: string, type: string): boolean =>
  isPlainResource(text, type, undefined)

/** A run of string characters that need no look: from space up, but for `"` and `\`. */
const PLAIN_RUN = /[ !#-[\]-\uffff]*/y

/**
 * The state of one `isPlainResource` check. One instance serves every call (the check is synchronous and never
 * re-entered): the closures of a per-call version were ≈ 500 B of garbage a line, a sixth of what an export
 * allocates (a sampling allocation profile of a 100k export: 52 of 283 MB).
 */
class PlainCheck {
  private text = ""
  private n = 0
  private i = 0
  private depth = 0
  private type = ""
  private key: string | undefined = undefined
  private typeOk = false
  private typeSeen = false

  run(text: string, type: string, key: string | undefined): boolean {
    this.text = text
    this.n = text.length
    this.i = 0
    this.depth = 0
    this.type = type
    this.key = key
    this.typeOk = false
    this.typeSeen = false
    try {
      this.ws()
      if (text.charCodeAt(this.i) !== 123) return false
      if (!this.obj(true)) return false
      this.ws()
      return this.i === this.n && this.typeOk
    } finally {
      // the line is not kept alive until the next one
      this.text = ""
    }
  }

  private ws(): void {
    const text = this.text
    let i = this.i
    for (;;) {
      const c = text.charCodeAt(i)
      if (c === 32 || c === 9 || c === 10 || c === 13) i++
      else break
    }
    this.i = i
  }

  /** At a `"`: moves past the string; false when malformed. */
  private str(): boolean {
    const text = this.text
    const n = this.n
    let i = this.i + 1
    for (;;) {
      // (a sticky regex skips the plain run natively: ≈ 20 % of the check's time on real lines)
      PLAIN_RUN.lastIndex = i
      PLAIN_RUN.test(text)
      i = PLAIN_RUN.lastIndex
      if (i >= n) {
        this.i = i
        return false
      }
      const c = text.charCodeAt(i++)
      if (c === 34) {
        this.i = i
        return true
      }
      if (c < 32) return false
      // a backslash
      const e = text.charCodeAt(i++)
      if (e === 117) {
        if (this.key !== undefined) return false
        for (let k = 0; k < 4; k++) {
          const h = text.charCodeAt(i++)
          if (!((h >= 48 && h <= 57) || (h >= 65 && h <= 70) || (h >= 97 && h <= 102))) return false
        }
      } else if (
        !(e === 34 || e === 92 || e === 47 || e === 98 || e === 102 || e === 110 || e === 114 || e === 116)
      )
        return false
    }
  }

  private digits(): boolean {
    const text = this.text
    const start = this.i
    let i = start
    for (let c = text.charCodeAt(i); c >= 48 && c <= 57; c = text.charCodeAt(++i));
    this.i = i
    return i > start
  }

  private num(): boolean {
    const text = this.text
    if (text.charCodeAt(this.i) === 45) this.i++
    if (text.charCodeAt(this.i) === 48) this.i++
    else if (!this.digits()) return false
    if (text.charCodeAt(this.i) === 46) {
      this.i++
      if (!this.digits()) return false
    }
    const e = text.charCodeAt(this.i)
    if (e === 101 || e === 69) {
      this.i++
      const sign = text.charCodeAt(this.i)
      if (sign === 43 || sign === 45) this.i++
      if (!this.digits()) return false
    }
    return true
  }

  private lit(word: string): boolean {
    if (!this.text.startsWith(word, this.i)) return false
    this.i += word.length
    return true
  }

  private value(): boolean {
    const c = this.text.charCodeAt(this.i)
    if (c === 34) return this.str()
    if (c === 123) return this.obj(false)
    if (c === 91) return this.arr()
    if (c === 116) return this.lit("true")
    if (c === 102) return this.lit("false")
    if (c === 110) return this.lit("null")
    return this.num()
  }

  private arr(): boolean {
    if (++this.depth > 512) return false
    this.i++
    this.ws()
    if (this.text.charCodeAt(this.i) === 93) {
      this.i++
      this.depth--
      return true
    }
    for (;;) {
      this.ws()
      if (!this.value()) return false
      this.ws()
      const c = this.text.charCodeAt(this.i++)
      if (c === 93) break
      if (c !== 44) return false
    }
    this.depth--
    return true
  }

  private obj(top: boolean): boolean {
    if (++this.depth > 512) return false
    const text = this.text
    const key = this.key
    this.i++
    this.ws()
    if (text.charCodeAt(this.i) === 125) {
      this.i++
      this.depth--
      return true
    }
    for (;;) {
      this.ws()
      const keyStart = this.i
      if (text.charCodeAt(keyStart) !== 34) return false
      if (!this.str()) return false
      const keyLength = this.i - keyStart
      const isType = top && keyLength === 14 && text.startsWith("resourceType", keyStart + 1)
      if (key !== undefined && keyLength === key.length + 2 && text.startsWith(key, keyStart + 1))
        return false
      this.ws()
      if (text.charCodeAt(this.i++) !== 58) return false
      this.ws()
      const valueStart = this.i
      if (!this.value()) return false
      if (isType) {
        if (this.typeSeen) return false
        this.typeSeen = true
        const type = this.type
        this.typeOk =
          this.i - valueStart === type.length + 2 &&
          text.charCodeAt(valueStart) === 34 &&
          text.startsWith(type, valueStart + 1)
      }
      this.ws()
      const c = text.charCodeAt(this.i++)
      if (c === 125) break
      if (c !== 44) return false
    }
    this.depth--
    return true
  }
}

const plainCheck = new PlainCheck()

/**
 * `isResourceOfType`; with a `key`, also false as soon as that key occurs as an object key at any depth, or any
 * `\u` escape (which could spell it): the lines the export parses anyway (`JSON.parse` then checks them whole).
 */
const isPlainResource = (text: string, type: string, key: string | undefined): boolean =>
  plainCheck.run(text, type, key)

/**
 * `parser` for hot loops that need the value of only some lines: a line for which `wanted(text)` holds, or
 * (`wanted` a `{ key }`) in which that key occurs as an object key or a `\u` escape occurs (found by the check
 * itself, no other pass over the line), is parsed and handed to `onLine`; any other line is checked with
 * `isResourceOfType` (no value built) and `onLine` gets `undefined`. Lines that fail the check are parsed after
 * all, so errors are `parser`'s. Needs `options.resourceType`.
 */
export const checker = (
  options: ReadOptions & { readonly resourceType: string },
  wanted: ((text: string) => boolean) | { readonly key: string },
  onLine: (item: Item | undefined) => void,
): Parser => {
  const type = options.resourceType
  const plain =
    typeof wanted === "function"
      ? (text: string) => !wanted(text) && isResourceOfType(text, type)
      : (text: string) => isPlainResource(text, type, wanted.key)
  return pushParser(
    splitState<Item | null>(options, (line, text, bytes, _terminated, offset) =>
      plain(text) ? null : parseText(options, line, text, bytes, offset),
    ),
    (item) => onLine(item ?? undefined),
  )
}

export interface FileOptions {
  /** Gunzip while reading. Default: true when the path ends in `.gz`. */
  readonly gzip?: boolean
  /** Read size; default 1 MiB for plain files (one reused buffer), 64 KiB for gzip. */
  readonly chunkSize?: number
  /** Label used in errors instead of the path. */
  readonly label?: string
}

/** The (decompressed) bytes of a file as a Stream. */
export const fileBytes = (
  path: string,
  options: FileOptions = {},
): Stream.Stream<Uint8Array, NdjsonError> => {
  const label = options.label ?? path
  const gzip = options.gzip ?? path.endsWith(".gz")
  return readableStream(() => {
    const source = NFS.createReadStream(path, { highWaterMark: options.chunkSize ?? 64 * 1024 })
    if (!gzip) return source
    const gunzip = Zlib.createGunzip({ chunkSize: 64 * 1024 })
    // pipeline destroys both streams on error (or when the gunzip is destroyed), so the iterator sees the
    // source's error too
    pipelineCb(source, gunzip, () => {})
    return gunzip
  }, readError(label))
}

/**
 * A Node Readable, made when the Stream runs, as a Stream of its chunks; destroyed however the Stream ends. (An
 * async iterator of a Readable stopped before its first read never runs the cleanup that destroys it: the
 * stream, and a file's descriptor, stayed open.)
 */
export const readableStream = <E>(
  make: () => NodeJS.ReadableStream & { destroy(): void },
  onError: (e: unknown) => E,
): Stream.Stream<Uint8Array, E> =>
  Stream.acquireRelease(Effect.sync(make), (readable) => Effect.sync(() => readable.destroy())).pipe(
    Stream.flatMap((readable) => Stream.fromAsyncIterable(readable as AsyncIterable<Uint8Array>, onError)),
  )

/**
 * An uncompressed file read into one reused buffer. Only safe for a consumer that is done with a chunk
 * before pulling the next one (the line splitter is: it decodes or copies every byte it keeps). Reusing the
 * buffer keeps external memory flat; fresh read buffers pile up until V8 decides to collect them.
 */
const reusedBufferBytes = (
  path: string,
  label: string,
  size: number,
): Stream.Stream<Uint8Array, NdjsonError> =>
  Stream.unwrapScoped(
    Effect.gen(function* () {
      // the read under way: a stopped stream's read still runs in the thread pool, and the descriptor is closed
      // only after it (closed before, its number could be another file's by the time the read runs, which would
      // then take that file's bytes from its position)
      let reading: Promise<void> = Promise.resolve()
      const fd = yield* Effect.acquireRelease(
        Effect.tryPromise({ try: () => openP(path, "r"), catch: ioError(label) }),
        (fd) =>
          Effect.async<void>((resume) => {
            void reading.then(() => NFS.close(fd, () => resume(Effect.void)))
          }),
      )
      const buf = Buffer.allocUnsafeSlow(size)
      return Stream.repeatEffectOption(
        Effect.async<Uint8Array, Option.Option<NdjsonError>>((resume) => {
          let settle = () => {}
          reading = new Promise((r) => {
            settle = r
          })
          NFS.read(fd, buf, 0, size, null, (err, n) => {
            settle()
            resume(
              err
                ? Effect.fail(Option.some(ioError(label)(err)))
                : n === 0
                  ? Effect.fail(Option.none())
                  : Effect.succeed(buf.subarray(0, n)),
            )
          })
        }),
      )
    }),
  )

const sourceFor = (path: string, options: FileOptions): Stream.Stream<Uint8Array, NdjsonError> =>
  (options.gzip ?? path.endsWith(".gz"))
    ? fileBytes(path, options)
    : reusedBufferBytes(path, options.label ?? path, options.chunkSize ?? 1024 * 1024)

/**
 * A file's (decompressed) bytes, for a consumer that is done with each chunk before it pulls the next: a plain
 * file is read into one reused buffer (see `reusedBufferBytes`), so a chunk kept must be copied.
 */
export const fileChunks = (path: string, options: FileOptions = {}): Stream.Stream<Uint8Array, NdjsonError> =>
  sourceFor(path, options)

/** Read and parse an NDJSON file (gzip if it ends in `.gz`). */
export const readFile = (
  path: string,
  options: FileOptions & Partial<ReadOptions> = {},
): Stream.Stream<Item, NdjsonError> =>
  sourceFor(path, options).pipe(parse({ ...options, file: options.label ?? options.file ?? path }))

/** Read an NDJSON file as raw line strings. */
export const readFileLines = (
  path: string,
  options: FileOptions & Partial<ReadOptions> = {},
): Stream.Stream<string, NdjsonError> =>
  sourceFor(path, options).pipe(lines({ ...options, file: options.label ?? options.file ?? path }))

/** Read an NDJSON file as numbered lines (see `splitLines`). */
export const readFileSplit = (
  path: string,
  options: FileOptions & Partial<ReadOptions> & { readonly keepBlank?: boolean } = {},
): Stream.Stream<Line, NdjsonError> =>
  sourceFor(path, options).pipe(splitLines({ ...options, file: options.label ?? options.file ?? path }))

// ---------------------------------------------------------------------------------------------------------
// Writing

export interface WriteOptions {
  /** gzip-compress what is written. Default false. */
  readonly gzip?: boolean
  /** fsync the file before returning. Default true. */
  readonly sync?: boolean
  /** Open flag: "w" (create or truncate, default) or "wx" (fail if it exists). */
  readonly flag?: "w" | "wx"
  /** Label used in errors instead of the path. */
  readonly label?: string
}

/** What reached the disk. */
export interface WriteResult {
  /** Lines (values) written. */
  readonly count: number
  /** Bytes in the file (compressed size when gzip). */
  readonly bytes: number
  /** Lowercase hex SHA-256 of the file's bytes, as `sha256sum` prints it. */
  readonly sha256: string
}

/** A line-oriented writer on one open file. Every method is serial: don't call them concurrently. */
export interface Writer {
  readonly write: (values: Iterable<unknown>) => Effect.Effect<void, NdjsonError>
  /** Flush, fsync (unless disabled) and report; the file stays open until the scope closes. */
  readonly finish: Effect.Effect<WriteResult, NdjsonError>
}

/**
 * Serialise values into one string of NDJSON. A string value is taken as a pre-serialised line
 * (it must not contain a newline).
 */
const serialise = (label: string, firstLine: number, values: Iterable<unknown>): [string, number] => {
  let s = ""
  let n = 0
  for (const v of values) {
    if (typeof v === "string") {
      if (v.indexOf("\n") !== -1) {
        throw new NdjsonError({
          reason: "InvalidLine",
          file: label,
          line: firstLine + n,
          detail: "the line contains a newline",
        })
      }
      s += v
    } else {
      // (numbers as they were read, when a reader kept them: `1.0` stays `1.0`)
      s += stringifyKeepingNumbers(v)
    }
    s += "\n"
    n++
  }
  return [s, n]
}

/** A file stream's `close`, for a descriptor its owner closes. */
const keepOpen = (_fd: number, cb: (err: NodeJS.ErrnoException | null) => void): void => cb(null)

/** Open a file for NDJSON writing (mode 0600, set explicitly). The scope closes the file. */
export const writer = (
  path: string,
  options: WriteOptions = {},
): Effect.Effect<Writer, NdjsonError, Scope.Scope> =>
  Effect.gen(function* () {
    const label = options.label ?? path
    const fd = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const fd = await openP(path, options.flag ?? "w", 0o600)
          await fchmodP(fd, 0o600)
          return fd
        },
        catch: ioError(label),
      }),
      (fd) => Effect.async<void>((resume) => NFS.close(fd, () => resume(Effect.void))),
    )
    const hash = createHash("sha256")
    let bytes = 0
    let count = 0
    let finished = false
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk)
        bytes += chunk.length
        cb(null, chunk)
      },
    })
    const head: Transform = options.gzip === true ? Zlib.createGzip({ level: 6 }) : new PassThrough()
    // The descriptor is the scope's to close, once: a destroyed file stream closes its fd itself (autoClose only
    // stops it closing on finish), and a second close can hit a file opened meanwhile with the same number.
    const out = NFS.createWriteStream("", {
      fd,
      autoClose: false,
      highWaterMark: 1024 * 1024,
      fs: { write: NFS.write, writev: NFS.writev, close: keepOpen },
    })
    const done = pipeline(head, meter, out)
    // the failure is read through `done` by write/finish; this only keeps Node from reporting it as unhandled
    done.catch(() => undefined)
    // runs before the descriptor's release: the file stream is torn down and its last write landed first
    yield* Effect.addFinalizer(() =>
      Effect.async<void>((resume) => {
        if (!finished) head.destroy()
        if (out.closed) return resume(Effect.void)
        out.once("close", () => resume(Effect.void))
        out.destroy()
      }),
    )

    const write = (values: Iterable<unknown>): Effect.Effect<void, NdjsonError> =>
      Effect.suspend(() => {
        let text: string
        let n: number
        try {
          ;[text, n] = serialise(label, count + 1, values)
        } catch (e) {
          if (e instanceof NdjsonError) return Effect.fail(e)
          throw e
        }
        if (n === 0) return Effect.void
        count += n
        if (head.write(text)) return Effect.void
        return Effect.tryPromise({
          try: () => Promise.race([once(head, "drain"), done]),
          catch: ioError(label, count),
        }).pipe(Effect.asVoid)
      })

    const finish = Effect.tryPromise({
      try: async () => {
        finished = true
        head.end()
        await done
        if (options.sync !== false) await fsyncP(fd)
        return { count, bytes, sha256: hash.digest("hex") } satisfies WriteResult
      },
      catch: ioError(label),
    })
    return { write, finish } satisfies Writer
  })

/** Write a stream of values (strings = pre-serialised lines) as NDJSON to `path`. */
export const writeFile = <E, R>(
  path: string,
  values: Stream.Stream<unknown, E, R>,
  options: WriteOptions = {},
): Effect.Effect<WriteResult, E | NdjsonError, R> =>
  Effect.scoped(
    Effect.gen(function* () {
      const w = yield* writer(path, options)
      yield* Stream.runForEachChunk(values, (chunk) => w.write(chunk))
      return yield* w.finish
    }),
  )

/** The writer as a Sink: values (strings = pre-serialised lines) in, the file's count/bytes/sha256 out. */
export const sink = (
  path: string,
  options: WriteOptions = {},
): Sink.Sink<WriteResult, unknown, never, NdjsonError> =>
  Sink.unwrapScoped(
    Effect.map(writer(path, options), (w) =>
      Sink.forEachChunk((chunk: Chunk.Chunk<unknown>) => w.write(chunk)).pipe(Sink.mapEffect(() => w.finish)),
    ),
  )
