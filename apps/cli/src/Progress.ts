/**
 * The live progress display of `ferry export` as a pure state machine and renderer:
 * `reduce(state, event, now)` folds the export's events into counters, `render(state, now, options)` turns
 * them into the lines of one frame. Neither touches a terminal or reads the clock, so both are tested
 * with scripted events; the command owns the redrawing.
 *
 * The renderer reads only numbers, resource type names and the server's X-Progress text (control
 * characters removed) from events: URLs, tokens, file paths and resource bodies never reach a frame.
 */

/** What the export is doing. */
export type Phase = "starting" | "kick-off" | "waiting" | "downloading" | "crawling" | "finishing" | "done"

/** One event of `Export.run` (the shape of `ExportEvent`, without depending on the export package). */
export interface Event {
  readonly event: string
  readonly [field: string]: unknown
}

/** Counters of the output files of one resource type. */
export interface TypeProgress {
  /** Finished files. */
  readonly files: number
  /** Files the manifest announced (undefined before the manifest, or when crawling). */
  readonly filesTotal: number | undefined
  /** Resources in finished files. */
  readonly resources: number
  /** Resources the manifest announced (undefined when unknown: no manifest, or a file without `count`). */
  readonly resourcesTotal: number | undefined
  /** Bytes of finished files (as stored). */
  readonly bytes: number
}

/** A file being downloaded: its type row and the network bytes received so far. */
interface InFlight {
  readonly type: string
  readonly kind: "output" | "deleted" | "error"
  readonly received: number
}

/** The cumulative counters at one instant (for the sliding-window rate). */
interface Sample {
  readonly t: number
  /** Network bytes received (downloads and attachments; monotonic). */
  readonly bytes: number
  /** Resources in finished files. */
  readonly resources: number
}

/** Files of the manifest's `deleted` or `error` lists. */
interface Side {
  readonly files: number
  readonly filesTotal: number | undefined
  readonly resources: number
  readonly bytes: number
}

export interface State {
  readonly phase: Phase
  readonly startedAt: number | undefined
  /** When the current phase began. */
  readonly phaseSince: number | undefined
  /** The server's last X-Progress text (sanitized). */
  readonly serverProgress: string | undefined
  /** Status polls answered with "still running", and polls retried after an error. */
  readonly polls: number
  readonly pollRetries: number
  readonly mode: "bulk" | "crawl"
  /** Output rows by resource type, in order of first appearance. */
  readonly types: Readonly<Record<string, TypeProgress>>
  readonly order: ReadonlyArray<string>
  readonly deleted: Side
  readonly errors: Side
  readonly inFlight: Readonly<Record<string, InFlight>>
  readonly attachments: { readonly count: number; readonly bytes: number; readonly failed: number }
  /** Network bytes received so far (the rate's numerator; never decreases). */
  readonly transferred: number
  /** Network bytes and resources of finished output files (bytes per resource, for the ETA). */
  readonly doneNet: { readonly bytes: number; readonly resources: number }
  readonly samples: ReadonlyArray<Sample>
  /** Set by `done`: the export's own totals. */
  readonly finished:
    | { readonly resources: number; readonly files: number; readonly bytes: number }
    | undefined
}

/** The sliding window of rates and ETA, in milliseconds. */
export const WINDOW_MS = 5000

export const initial: State = {
  phase: "starting",
  startedAt: undefined,
  phaseSince: undefined,
  serverProgress: undefined,
  polls: 0,
  pollRetries: 0,
  mode: "bulk",
  types: {},
  order: [],
  deleted: { files: 0, filesTotal: undefined, resources: 0, bytes: 0 },
  errors: { files: 0, filesTotal: undefined, resources: 0, bytes: 0 },
  inFlight: {},
  attachments: { count: 0, bytes: 0, failed: 0 },
  transferred: 0,
  doneNet: { bytes: 0, resources: 0 },
  samples: [],
  finished: undefined,
}

// ---------------------------------------------------------------------------------------------------------
// Reading event fields defensively: only numbers, short plain strings and the known shapes.

const num = (u: unknown): number => (typeof u === "number" && Number.isFinite(u) && u >= 0 ? u : 0)

/** Printable text: control characters (ANSI escapes included) become spaces; at most `max` characters. */
export const sanitize = (u: unknown, max = 80): string => {
  let text = ""
  for (const ch of String(u)) {
    const code = ch.codePointAt(0) ?? 0
    const control = code < 0x20 || (code >= 0x7f && code <= 0x9f)
    text += control ? (text.endsWith(" ") ? "" : " ") : ch
  }
  text = text.trim()
  return text.length > max ? `${text.slice(0, max - 1)}…` : text
}

const kindOf = (u: unknown): InFlight["kind"] =>
  u === "deleted" ? "deleted" : u === "error" ? "error" : "output"

const typeOf = (u: unknown): string => (typeof u === "string" && u !== "" ? sanitize(u, 40) : "Resource")

const emptyType: TypeProgress = {
  files: 0,
  filesTotal: undefined,
  resources: 0,
  resourcesTotal: undefined,
  bytes: 0,
}

const withType = (state: State, type: string, f: (t: TypeProgress) => TypeProgress): State => ({
  ...state,
  types: { ...state.types, [type]: f(state.types[type] ?? emptyType) },
  order: state.order.includes(type) ? state.order : [...state.order, type],
})

const withPhase = (state: State, phase: Phase, now: number): State =>
  state.phase === phase ? state : { ...state, phase, phaseSince: now }

/** The phase of file events: downloading a bulk export, or crawling. */
const filePhase = (state: State): Phase => (state.mode === "crawl" ? "crawling" : "downloading")

/** Applies a manifest's per-type totals (`types`) and file counts. */
const applyManifest = (state: State, e: Event): State => {
  let next: State = {
    ...state,
    // Files of an earlier job that were not finished start again from the new one.
    inFlight: {},
    deleted: { ...state.deleted, filesTotal: num(e.deleted) },
    errors: { ...state.errors, filesTotal: num(e.error) },
  }
  const types = e.types
  if (typeof types === "object" && types !== null) {
    for (const [name, value] of Object.entries(types)) {
      const v = (typeof value === "object" && value !== null ? value : {}) as {
        files?: unknown
        resources?: unknown
      }
      next = withType(next, typeOf(name), (t) => ({
        ...t,
        filesTotal: num(v.files),
        resourcesTotal: typeof v.resources === "number" ? num(v.resources) : undefined,
      }))
    }
  }
  return next
}

/** A finished file (now downloaded, or by an earlier run when `network` is false). */
const applyFile = (state: State, e: Event, network: boolean): State => {
  const kind = kindOf(e.kind)
  const path = typeof e.path === "string" ? e.path : ""
  const count = num(e.count)
  const bytes = num(e.bytes)
  const flight = state.inFlight[path]
  const received = flight?.received ?? 0
  const { [path]: _, ...inFlight } = state.inFlight
  const netBytes = network ? Math.max(received, bytes) : 0
  let next: State = {
    ...state,
    inFlight,
    transferred: state.transferred + (network ? Math.max(0, bytes - received) : 0),
  }
  if (kind === "output") {
    next = withType(next, typeOf(e.type), (t) => ({
      ...t,
      files: t.files + 1,
      resources: t.resources + count,
      bytes: t.bytes + bytes,
    }))
    if (network && count > 0) {
      next = {
        ...next,
        doneNet: { bytes: next.doneNet.bytes + netBytes, resources: next.doneNet.resources + count },
      }
    }
  } else {
    const side = kind === "deleted" ? next.deleted : next.errors
    const updated = {
      ...side,
      files: side.files + 1,
      resources: side.resources + count,
      bytes: side.bytes + bytes,
    }
    next = kind === "deleted" ? { ...next, deleted: updated } : { ...next, errors: updated }
  }
  return next
}

const applyEvent = (state: State, e: Event, now: number): State => {
  switch (e.event) {
    case "start":
      return withPhase({ ...state, startedAt: state.startedAt ?? now }, "kick-off", now)
    case "fallback":
      return withPhase({ ...state, mode: "crawl" }, "crawling", now)
    case "kickoff":
    case "job-gone":
    case "expired":
      return withPhase(
        { ...state, serverProgress: undefined, polls: 0, pollRetries: 0 },
        e.event === "kickoff" ? "waiting" : "kick-off",
        now,
      )
    case "progress":
      return withPhase(
        {
          ...state,
          polls: state.polls + 1,
          serverProgress:
            typeof e.progress === "string" && e.progress !== "" ? sanitize(e.progress) : state.serverProgress,
        },
        "waiting",
        now,
      )
    case "poll-retry":
      return withPhase({ ...state, pollRetries: state.pollRetries + 1 }, "waiting", now)
    case "reattach":
      return typeof e.types === "object" && e.types !== null
        ? withPhase(applyManifest(state, e), "downloading", now)
        : withPhase(state, "waiting", now)
    case "manifest":
      return withPhase(applyManifest(state, e), "downloading", now)
    case "early-dropped":
      // the files of a vanished job's partial manifests are gone: the new job's count from zero (the bytes
      // received stay in the rate)
      return {
        ...state,
        types: {},
        order: [],
        deleted: initial.deleted,
        errors: initial.errors,
        inFlight: {},
        doneNet: initial.doneNet,
      }
    case "manifest-renewed":
    case "links-fetched":
      // the same job's files under new URLs: the totals stand, the download goes on
      return withPhase(state, "downloading", now)
    case "file-progress": {
      const path = typeof e.path === "string" ? e.path : ""
      const received = num(e.received)
      const before = state.inFlight[path]?.received ?? 0
      return withPhase(
        {
          ...state,
          inFlight: {
            ...state.inFlight,
            [path]: { type: typeOf(e.type), kind: kindOf(e.kind), received: Math.max(before, received) },
          },
          transferred: state.transferred + Math.max(0, received - before),
        },
        filePhase(state),
        now,
      )
    }
    case "file":
      return withPhase(applyFile(state, e, true), filePhase(state), now)
    case "file-resumed":
      return applyFile(state, e, false)
    case "attachment": {
      // fetched while the files download (each file's attachments right after it): no phase of their own
      const size = num(e.size)
      return {
        ...state,
        attachments: {
          ...state.attachments,
          count: state.attachments.count + 1,
          bytes: state.attachments.bytes + size,
        },
        transferred: state.transferred + size,
      }
    }
    case "attachment-failed":
      return { ...state, attachments: { ...state.attachments, failed: state.attachments.failed + 1 } }
    case "released":
      return withPhase(state, "finishing", now)
    case "already-complete":
      return withPhase(state, "done", now)
    case "done":
      return withPhase(
        {
          ...state,
          inFlight: {},
          finished: { resources: num(e.resources), files: num(e.files), bytes: num(e.bytes) },
        },
        "done",
        now,
      )
    default:
      return state
  }
}

const resourcesDone = (state: State): number =>
  state.order.reduce((n, t) => n + (state.types[t]?.resources ?? 0), 0)

const transferring: ReadonlySet<Phase> = new Set(["downloading", "crawling"])

/** Folds one event (observed at `now`, epoch ms) into the state. */
export const reduce = (state: State, event: Event, now: number): State => {
  const next = applyEvent(state, event, now)
  const sample: Sample = { t: now, bytes: next.transferred, resources: resourcesDone(next) }
  // Rates count from the start of the transfers, not from the wait for the server before them.
  const starts = !transferring.has(state.phase) && transferring.has(next.phase)
  // Keep the samples inside the window plus the newest one before it (the value at the window's start).
  const samples = starts ? [sample] : [...next.samples, sample]
  let first = 0
  while (first + 1 < samples.length && samples[first + 1]!.t <= now - WINDOW_MS) first++
  return { ...next, samples: samples.slice(first) }
}

// ---------------------------------------------------------------------------------------------------------
// Derived figures

export interface Rates {
  /** Network bytes per second over the window (undefined until there is at least 1 s of history). */
  readonly bytesPerSecond: number | undefined
  readonly resourcesPerSecond: number | undefined
}

/** Rates over the last `WINDOW_MS` before `now`. */
export const rates = (state: State, now: number): Rates => {
  const samples = state.samples
  const last = samples[samples.length - 1]
  if (last === undefined) return { bytesPerSecond: undefined, resourcesPerSecond: undefined }
  const windowStart = now - WINDOW_MS
  let base: Sample | undefined
  for (const s of samples) if (s.t <= windowStart) base = s
  const from = base ?? samples[0]!
  const seconds = (base !== undefined ? WINDOW_MS : now - from.t) / 1000
  if (seconds < 1) return { bytesPerSecond: undefined, resourcesPerSecond: undefined }
  return {
    bytesPerSecond: (last.bytes - from.bytes) / seconds,
    resourcesPerSecond: (last.resources - from.resources) / seconds,
  }
}

export interface Totals {
  readonly files: number
  /** undefined while any type's file total is unknown. */
  readonly filesTotal: number | undefined
  readonly resources: number
  /** undefined while any type's resource total is unknown. */
  readonly resourcesTotal: number | undefined
  /** Bytes of finished files plus bytes received for files in flight. */
  readonly bytes: number
}

const inFlightBytes = (state: State, type?: string): number =>
  Object.values(state.inFlight).reduce(
    (n, f) => n + (type === undefined || (f.kind === "output" && f.type === type) ? f.received : 0),
    0,
  )

export const totals = (state: State): Totals => {
  let files = state.deleted.files + state.errors.files
  let filesTotal: number | undefined =
    state.deleted.filesTotal === undefined || state.errors.filesTotal === undefined
      ? undefined
      : state.deleted.filesTotal + state.errors.filesTotal
  let resources = 0
  let resourcesTotal: number | undefined = 0
  let bytes = inFlightBytes(state) + state.deleted.bytes + state.errors.bytes
  for (const name of state.order) {
    const t = state.types[name] ?? emptyType
    files += t.files
    filesTotal =
      filesTotal === undefined || t.filesTotal === undefined ? undefined : filesTotal + t.filesTotal
    resources += t.resources
    resourcesTotal =
      resourcesTotal === undefined || t.resourcesTotal === undefined
        ? undefined
        : resourcesTotal + t.resourcesTotal
    bytes += t.bytes
  }
  if (state.order.length === 0) resourcesTotal = undefined
  return { files, filesTotal, resources, resourcesTotal, bytes }
}

/**
 * Milliseconds left, when the resource totals are known and there is a rate: the bytes still to come
 * (remaining resources × bytes per resource of the files finished so far, less what is in flight)
 * over the byte rate. undefined otherwise ("—").
 */
export const eta = (state: State, now: number): number | undefined => {
  if (state.phase === "done") return 0
  if (state.phase !== "downloading") return undefined
  const t = totals(state)
  if (t.resourcesTotal === undefined) return undefined
  const remaining = Math.max(0, t.resourcesTotal - t.resources)
  if (remaining === 0) return 0
  if (state.doneNet.resources === 0) return undefined
  const { bytesPerSecond } = rates(state, now)
  if (bytesPerSecond === undefined || bytesPerSecond <= 0) return undefined
  const perResource = state.doneNet.bytes / state.doneNet.resources
  const left = Math.max(0, remaining * perResource - inFlightBytes(state))
  return (left / bytesPerSecond) * 1000
}

// ---------------------------------------------------------------------------------------------------------
// Formatting

export const formatBytes = (n: number): string =>
  n >= 1e9
    ? `${(n / 1e9).toFixed(2)} GB`
    : n >= 1e6
      ? `${(n / 1e6).toFixed(1)} MB`
      : n >= 1e3
        ? `${(n / 1e3).toFixed(1)} kB`
        : `${Math.round(n)} B`

/** 1234567 → "1,234,567" (locale-independent). */
export const formatCount = (n: number): string => String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ",")

/** `1 file`, `2 files`, `6,083 resources`: a count and its noun, singular for one. */
export const counted = (n: number, noun: string, nouns = `${noun}s`): string =>
  `${formatCount(n)} ${n === 1 ? noun : nouns}`

/** 42s, 3m 05s, 2h 03m. */
export const formatDuration = (ms: number): string => {
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 60) return `${s}s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`
}

const UNKNOWN = "—"

const ofTotal = (done: number, total: number | undefined): string =>
  `${formatCount(done)}/${total === undefined ? UNKNOWN : formatCount(total)}`

/** Cuts a line to `width` characters (an ellipsis marks the cut). */
export const truncate = (line: string, width: number): string =>
  width <= 0 ? "" : line.length <= width ? line : width === 1 ? "…" : `${line.slice(0, width - 1)}…`

const phaseText = (state: State, now: number): string => {
  const since = state.phaseSince === undefined ? "" : ` for ${formatDuration(now - state.phaseSince)}`
  switch (state.phase) {
    case "starting":
      return "starting"
    case "kick-off":
      return "kick-off"
    case "waiting": {
      const text = state.serverProgress === undefined ? "" : `: ${state.serverProgress}`
      const retries = state.pollRetries > 0 ? ` (${state.pollRetries} poll retries)` : ""
      return `waiting for the server${since}${text}${retries}`
    }
    case "downloading":
      return "downloading"
    case "crawling":
      return "crawling (search pages)"
    case "finishing":
      return "finishing"
    case "done":
      return "done"
  }
}

export interface RenderOptions {
  /** Characters per line; longer lines are cut. */
  readonly width: number
  /** ANSI bold/dim (off for NO_COLOR). */
  readonly color?: boolean
  /** At most this many type rows (the rest are summed up in one line; default 12). */
  readonly maxTypes?: number
  /** The command named in the header (default "ferry export"). */
  readonly title?: string
}

const bold = (s: string) => `\x1b[1m${s}\x1b[22m`
const dim = (s: string) => `\x1b[2m${s}\x1b[22m`

/** Pads the cells of each row to the column widths (left-aligned first column, right-aligned others). */
const table = (rows: ReadonlyArray<ReadonlyArray<string>>): Array<string> => {
  const widths: Array<number> = []
  for (const row of rows) {
    row.forEach((c, i) => {
      widths[i] = Math.max(widths[i] ?? 0, c.length)
    })
  }
  return rows.map((row) =>
    row
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd(),
  )
}

/** The lines of one frame at `now`. */
export const render = (state: State, now: number, options: RenderOptions): Array<string> => {
  const width = Math.max(1, Math.floor(options.width))
  const color = options.color === true
  const maxTypes = Math.max(1, options.maxTypes ?? 12)
  const elapsed = state.startedAt === undefined ? "" : ` · ${formatDuration(now - state.startedAt)}`
  const header = `${options.title ?? "ferry export"}${elapsed} · ${phaseText(state, now)}`

  type Row = { readonly cells: ReadonlyArray<string>; readonly finished: boolean }
  const cellsOf = (label: string, t: TypeProgress, bytes: number): ReadonlyArray<string> => [
    `  ${label}`,
    `${ofTotal(t.files, t.filesTotal)} files`,
    `${ofTotal(t.resources, t.resourcesTotal)} resources`,
    formatBytes(bytes),
  ]
  const isFinished = (t: TypeProgress) => t.filesTotal !== undefined && t.files >= t.filesTotal
  let names = [...state.order]
  let hidden: Row | undefined
  if (names.length > maxTypes) {
    // Types with a file in flight first, then the unstarted ones, finished ones last; the rest in one line.
    const flying = new Set(Object.values(state.inFlight).map((f) => f.type))
    const rank = (name: string) => (flying.has(name) ? 0 : isFinished(state.types[name] ?? emptyType) ? 2 : 1)
    names = names
      .map((name, i) => ({ name, i }))
      .sort((a, b) => rank(a.name) - rank(b.name) || a.i - b.i)
      .map((x) => x.name)
    const rest = names.slice(maxTypes - 1)
    names = names.slice(0, maxTypes - 1)
    let sum: TypeProgress = { ...emptyType, filesTotal: 0, resourcesTotal: 0 }
    let bytes = 0
    for (const name of rest) {
      const t = state.types[name] ?? emptyType
      sum = {
        files: sum.files + t.files,
        filesTotal:
          sum.filesTotal === undefined || t.filesTotal === undefined
            ? undefined
            : sum.filesTotal + t.filesTotal,
        resources: sum.resources + t.resources,
        resourcesTotal:
          sum.resourcesTotal === undefined || t.resourcesTotal === undefined
            ? undefined
            : sum.resourcesTotal + t.resourcesTotal,
        bytes: 0,
      }
      bytes += t.bytes + inFlightBytes(state, name)
    }
    hidden = { cells: cellsOf(`+${rest.length} more types`, sum, bytes), finished: isFinished(sum) }
  }
  const rows: Array<Row> = names.map((name) => {
    const t = state.types[name] ?? emptyType
    return { cells: cellsOf(name, t, t.bytes + inFlightBytes(state, name)), finished: isFinished(t) }
  })
  const sides: Array<Row> = []
  for (const [label, side] of [
    ["deleted", state.deleted],
    ["errors", state.errors],
  ] as const) {
    if (side.files > 0 || (side.filesTotal ?? 0) > 0) {
      sides.push({
        cells: [
          `  (${label})`,
          `${ofTotal(side.files, side.filesTotal)} files`,
          `${formatCount(side.resources)} entries`,
          formatBytes(side.bytes),
        ],
        finished: side.filesTotal !== undefined && side.files >= side.filesTotal,
      })
    }
  }
  const t = totals(state)
  const showTable = rows.length > 0 || sides.length > 0 || t.files > 0
  const totalRow: Row = {
    cells: [
      "  total",
      `${ofTotal(t.files, t.filesTotal)} files`,
      `${ofTotal(t.resources, t.resourcesTotal)} resources`,
      formatBytes(t.bytes),
    ],
    finished: false,
  }
  const all = showTable ? [...rows, ...(hidden ? [hidden] : []), ...sides, totalRow] : []
  const cells = table(all.map((r) => r.cells))

  const lines: Array<{ text: string; style?: (s: string) => string }> = [
    { text: header, style: bold },
    ...cells.map((text, i) => ({ text, ...(all[i]!.finished ? { style: dim } : {}) })),
  ]
  if (state.attachments.count > 0 || state.attachments.failed > 0) {
    const failed = state.attachments.failed > 0 ? ` · ${state.attachments.failed} failed` : ""
    lines.push({
      text: `  attachments  ${formatCount(state.attachments.count)} fetched · ${formatBytes(state.attachments.bytes)}${failed}`,
    })
  }
  if (state.phase !== "starting" && state.phase !== "kick-off" && state.phase !== "waiting") {
    const r = rates(state, now)
    const left = eta(state, now)
    const rate =
      state.phase === "done"
        ? `elapsed ${state.startedAt === undefined ? UNKNOWN : formatDuration(now - state.startedAt)}`
        : `${r.bytesPerSecond === undefined ? UNKNOWN : `${formatBytes(r.bytesPerSecond)}/s`} · ${
            r.resourcesPerSecond === undefined ? UNKNOWN : `${formatCount(r.resourcesPerSecond)} resources/s`
          } · ETA ${left === undefined ? UNKNOWN : formatDuration(left)}`
    lines.push({ text: `  ${rate}` })
  }
  return lines.map(({ text, style }) => {
    const cut = truncate(text, width)
    return color && style !== undefined ? style(cut) : cut
  })
}

/**
 * The terminal output that replaces a frame of `drawn` lines (the cursor sits on the line below it)
 * with `lines`: back up `drawn` lines, then rewrite each line after clearing it, and clear what is left
 * below when the new frame is shorter. With `drawn` 0 it just writes the frame.
 */
export const paint = (drawn: number, lines: ReadonlyArray<string>): string => {
  let out = drawn > 0 ? `\r\x1b[${drawn}A` : ""
  for (const line of lines) out += `\x1b[2K${line}\n`
  if (lines.length < drawn) out += "\x1b[J"
  return out
}

/** The terminal output that removes a frame of `drawn` lines and writes `line` where it began. */
export const above = (drawn: number, line: string): string =>
  `${drawn > 0 ? `\r\x1b[${drawn}A\x1b[J` : ""}${line}\n`

/** Lines of one per-item failure kind (a failed attachment, a quarantined resource) shown one by one. */
/**
 * What an import's `throttled` event says happened (the parallelism was halved either way): the target asked
 * for less (429, 503, 504), or its answers did not come in time, broke off or stalled (`transport`).
 */
export const throttledWhy = (e: { readonly [field: string]: unknown }): string =>
  e.transport === true
    ? "the target did not answer in time, or stopped in the middle of an answer"
    : "the target is throttling"

export const SHOWN_PER_KIND = 20

/**
 * A filter for the lines of per-item failures (`attachment-failed`, `quarantined`): the first SHOWN_PER_KIND of
 * each kind pass, then one line says the rest are not shown; other lines pass unchanged. A source whose
 * attachment host is down fails every attachment: one line each would bury the terminal. Every item stays in
 * the event log, and the final summary counts them.
 */
export const repeatsCapped = (prefix: string) => {
  const shown = new Map<string, number>()
  return (kind: string, line: string | undefined): string | undefined => {
    if (line === undefined || (kind !== "attachment-failed" && kind !== "quarantined")) return line
    const n = (shown.get(kind) ?? 0) + 1
    shown.set(kind, n)
    if (n <= SHOWN_PER_KIND) return line
    if (n > SHOWN_PER_KIND + 1) return undefined
    const what = kind === "quarantined" ? "resources were quarantined" : "attachments failed"
    return `${prefix} more ${what}: not shown one by one (each is in events.ndjson; the summary counts them)`
  }
}

/**
 * A line worth keeping above the live frame (warnings and changes of course), or undefined.
 * Reads only Ferry's own `detail` texts and numbers.
 */
export const notice = (e: Event): string | undefined => {
  const detail = typeof e.detail === "string" ? sanitize(e.detail, 400) : undefined
  switch (e.event) {
    case "warning":
      return `ferry export: WARNING: ${detail ?? ""}`
    case "fallback":
      return `ferry export: no bulk $export: ${detail ?? "crawling"}`
    case "since":
      return `ferry export: since ${typeof e.since === "string" ? sanitize(e.since, 40) : "(none)"}: ${detail ?? ""}`
    case "already-complete":
      return "ferry export: the archive is already complete; nothing to do"
    case "job-gone":
      return "ferry export: the server lost the job (404); starting a new one"
    case "expired":
      return "ferry export: the output files expired or are gone (410/403/404); asking the server for the manifest again"
    case "manifest-renewed":
      return "ferry export: the same job's files have new URLs; downloading the rest"
    case "links-fetched":
      return "ferry export: the job's file links fetched again (the journal keeps them without their signatures); downloading the rest"
    case "early-dropped":
      return "ferry export: the files of the vanished job's partial manifests were dropped; downloading the new job's"
    case "count-mismatch":
      return `ferry export: ${detail ?? "count mismatch"}; downloading the file again`
    case "resume":
      // (-1: the connection broke; the resume that follows says where it goes on)
      if (typeof e.file !== "string" || typeof e.offset !== "number" || e.offset < 0) return undefined
      return num(e.offset) > 0
        ? `ferry export: ${sanitize(e.file, 120)}: resuming at byte ${formatCount(num(e.offset))}`
        : `ferry export: ${sanitize(e.file, 120)}: downloading again from the start${typeof e.reason === "string" ? ` (${sanitize(e.reason, 160)})` : ""}`
    case "attachment-failed":
      return `ferry export: attachment failed: ${detail ?? ""}`
    default:
      return undefined
  }
}
