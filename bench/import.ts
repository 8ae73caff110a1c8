/**
 * Import throughput: `ferry import` (dependency-ordered transaction Bundles) against a naive loop that PUTs
 * one resource per request, same archive, a fresh target sandbox for each, in one run.
 *
 *   npm run build && npx vite-node bench/import.ts                 # ≈ 2 minutes on 2 cores
 *   npx vite-node bench/import.ts -- --naive 3000                  # the naive side PUTs a sample (default: all)
 *   npx vite-node bench/import.ts -- --strategy post               # Ferry with POST + conditional create
 *   npx vite-node bench/import.ts -- --repeat 5                    # 5 alternating rounds (default 3)
 *
 * Every sandbox is `ferry sandbox --port 0` in its own process (as in bench/export.ts), so the servers' CPU
 * is not the bench's, and both sides meet an identical, empty server.
 * 1. A source sandbox seeded with `../shared/data/synthea-bundles` and `attachments` (38,479 resources,
 *    3 attachments), exported once with `ferry export <base> --out <tmp>` into the archive both sides read.
 * 2. Ferry: a fresh, empty target sandbox; `ferry import --to <target> --json <archive>` as its own process
 *    (default strategy put; Bundles of 500, 4 in flight), timed from spawn to exit (CLI start-up,
 *    CapabilityStatement and probe, graph building and attachment upload included). Checked afterwards:
 *    per-type counts on the target (`_summary=count`) equal the archive's.
 * 3. Naive: another fresh target; the archive's data files read in manifest order in this process, one
 *    `PUT [base]/Type/id` per resource with `fetch` (keep-alive), sequential, for the whole archive (the
 *    default), or for `--naive N` resources spread evenly over it (every k-th line: the archive's mix of types
 *    and sizes). A sample of 3,000 was ≈ 25 % slower per resource than the whole archive (the server is not
 *    warmed up yet), which flattered Ferry's ratio, so the whole archive is the baseline.
 * `--rtt <ms>` puts a proxy in this process in front of each target that holds every request `ms` before
 * forwarding it (a network round trip; loopback has none), for both sides alike.
 * Steps 2 and 3 run `--repeat` times (default 3), alternating, each against a fresh target: on a shared
 * 2-core machine one round's ratio moves by ±10 %, so the goals are judged on the medians (every round printed).
 * Per round, the CPU of each target's main thread (/proc/<pid>/task/<pid>/stat) during the import and during the
 * naive loop: the naive time ÷ the target's CPU for Ferry's Bundles is the ratio a client sending those Bundles
 * could reach at most with this target (its work cannot take less wall time than its serving thread's CPU).
 * Also per round, against a third fresh target: **bare Bundles**, the archive's lines as read, in transaction Bundles
 * of 500 PUTs, 4 in flight, from this process, with none of Ferry's work (no graph, order, rewriting, journal or
 * checks): its ratio to the naive loop is what a client doing nothing but sending reached in that round.
 * Goals: Ferry ≥ 10× the naive rate and ≥ 5,000 resources/s.
 */
import { spawn } from "node:child_process"
import { createServer, request } from "node:http"
import type { AddressInfo } from "node:net"
import { createReadStream, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { BIN, collect, ferryEnv, mainThreadCpuSecs, startSandboxProcess } from "./proc.js"
import { fileURLToPath } from "node:url"
import { createGunzip } from "node:zlib"

const DATA = (name: string) => fileURLToPath(new URL(`../../shared/data/${name}`, import.meta.url))

const option = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}
/** `--naive N|all`: how many resources the naive loop PUTs (spread evenly over the archive), or all of them. */
const NAIVE = (option("naive") ?? "all") === "all" ? Number.POSITIVE_INFINITY : Number(option("naive"))
/** `--repeat N`: Ferry and the naive loop N times each, alternating; the goals are judged on the medians. */
const REPEAT = Math.max(1, Number(option("repeat") ?? "3"))
const STRATEGY = option("strategy") ?? "put"
/** `--rtt <ms>`: both sides talk to their target through a proxy that holds every request this long. */
const RTT = Number(option("rtt") ?? "0")
/** `--cpu-prof DIR`: a CPU profile of the `ferry import` process (not of the export that builds the archive). */
const CPU_PROF = option("cpu-prof")

const now = () => process.hrtime.bigint()
const secs = (t0: bigint, t1 = now()) => Number(t1 - t0) / 1e9
const fmt = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })

interface RunningSandbox {
  readonly baseUrl: string
  /** CPU seconds (user + system) the process's main thread has used so far. */
  readonly cpuSecs: () => number
  readonly close: () => Promise<void>
}

/** `ferry sandbox --port 0 …` as its own process; resolves once it printed its base URL. */
const startSandbox = async (args: ReadonlyArray<string>): Promise<RunningSandbox> => {
  const s = await startSandboxProcess(args)
  return { baseUrl: s.baseUrl, cpuSecs: () => mainThreadCpuSecs(s.pid), close: s.stop }
}

const TIME = "/usr/bin/time"
const TIMED = existsSync(TIME)

/** The CLI as its own process (under `/usr/bin/time` when there is one, for its CPU seconds). */
/** Ferry runs as the `ferry` command runs it (glibc's malloc settings, apps/cli/bin/ferry). */
const env = ferryEnv()

const ferry = (args: ReadonlyArray<string>, nodeFlags: ReadonlyArray<string> = []) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = TIMED
      ? spawn(TIME, ["-f", "FERRY_CPU %U %S %M", process.execPath, ...nodeFlags, BIN, ...args], {
          stdio: ["ignore", "pipe", "pipe"],
          env,
        })
      : spawn(process.execPath, [...nodeFlags, BIN, ...args], {
          stdio: ["ignore", "pipe", "pipe"],
          env,
        })
    const { stdout, stderr } = collect(child)
    child.on("error", reject)
    child.on("close", (code) => resolve({ code, stdout: stdout(), stderr: stderr() }))
  })

interface ManifestFile {
  readonly type: string
  readonly path: string
  readonly count: number
  readonly compression: "none" | "gzip"
}

const manifestOf = (archive: string): { files: ReadonlyArray<ManifestFile> } =>
  JSON.parse(readFileSync(join(archive, "manifest.json"), "utf8")) as { files: ReadonlyArray<ManifestFile> }

/** The archive's resources (raw lines), file by file in manifest order. */
async function* lines(archive: string): AsyncGenerator<string> {
  for (const f of manifestOf(archive).files) {
    const raw = createReadStream(join(archive, f.path))
    const input = f.compression === "gzip" ? raw.pipe(createGunzip()) : raw
    for await (const line of createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY }))
      if (line.trim() !== "") yield line
  }
}

/** The `Type/id` a line starts with (`{"resourceType":"T","id":"I"…`, as the sandbox writes), else from a parse. */
const keyOf = (line: string): { type: string; id: string } => {
  const m = /^\{"resourceType":"([A-Za-z]+)","id":"([A-Za-z0-9\-.]{1,64})"/.exec(line)
  if (m !== null) return { type: m[1]!, id: m[2]! }
  const r = JSON.parse(line) as { resourceType: string; id: string }
  return { type: r.resourceType, id: r.id }
}

/**
 * The bare side: the archive's lines as read, in transaction Bundles of `size` PUT entries, `inFlight` at a
 * time, keep-alive `fetch`, with none of Ferry's work (no graph or order, no rewriting, no journal, no checks
 * but the HTTP status). What any client sending these Bundles to this target at least takes on this machine.
 */
const bare = async (baseUrl: string, archive: string, size = 500, inFlight = 4): Promise<number> => {
  let sent = 0
  const running = new Set<Promise<void>>()
  const send = (entries: Array<string>) => {
    const body = `{"resourceType":"Bundle","type":"transaction","entry":[${entries.join(",")}]}`
    const p: Promise<void> = fetch(baseUrl, {
      method: "POST",
      headers: {
        "content-type": "application/fhir+json",
        accept: "application/fhir+json",
        prefer: "return=minimal",
      },
      body,
    }).then(async (res) => {
      await res.arrayBuffer()
      if (res.status >= 300) throw new Error(`bare Bundle: ${res.status}`)
      running.delete(p)
    })
    running.add(p)
  }
  let entries: Array<string> = []
  for await (const line of lines(archive)) {
    const { type, id } = keyOf(line)
    entries.push(`{"resource":${line},"request":{"method":"PUT","url":"${type}/${id}"}}`)
    sent++
    if (entries.length === size) {
      send(entries)
      entries = []
      while (running.size >= inFlight) await Promise.race(running)
    }
  }
  if (entries.length > 0) send(entries)
  await Promise.all(running)
  return sent
}

/** With `--rtt`: a proxy holding each request `RTT` ms before forwarding it to `baseUrl`; its base URL. */
const delayed = (baseUrl: string): Promise<{ baseUrl: string; close: () => Promise<void> }> => {
  if (RTT <= 0) return Promise.resolve({ baseUrl, close: () => Promise.resolve() })
  const upstream = new URL(baseUrl)
  const server = createServer((req, res) => {
    setTimeout(() => {
      const out = request(
        {
          host: upstream.hostname,
          port: upstream.port,
          path: req.url,
          method: req.method,
          headers: { ...req.headers, host: upstream.host },
        },
        (up) => {
          res.writeHead(up.statusCode ?? 502, up.headers)
          up.pipe(res)
        },
      )
      out.on("error", () => res.destroy())
      req.pipe(out)
    }, RTT)
  })
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as AddressInfo).port
      resolve({
        baseUrl: `http://127.0.0.1:${port}${upstream.pathname}`,
        close: () => new Promise<void>((r) => server.close(() => r())),
      })
    }),
  )
}

/** Per-type counts on a server, for the archive's types. */
const counts = async (baseUrl: string, types: ReadonlyArray<string>): Promise<Record<string, number>> => {
  const out: Record<string, number> = {}
  for (const t of types) {
    const res = await fetch(`${baseUrl}/${t}?_summary=count`, {
      headers: { accept: "application/fhir+json" },
    })
    out[t] = ((await res.json()) as { total: number }).total
  }
  return out
}

const main = async () => {
  const tmp = mkdtempSync(join(tmpdir(), "ferry-bench-import-"))
  const open: Array<{ close: () => Promise<void> }> = []
  try {
    // 1. the archive
    const source = await startSandbox(["--seed", DATA("synthea-bundles"), "--seed", DATA("attachments")])
    open.push(source)
    const archive = join(tmp, "archive")
    const exported = await ferry(["export", source.baseUrl, "--out", archive])
    if (exported.code !== 0) throw new Error(`ferry export failed: ${exported.stderr}`)
    const files = manifestOf(archive).files
    const total = files.reduce((a, f) => a + f.count, 0)
    const expected: Record<string, number> = {}
    for (const f of files) expected[f.type] = (expected[f.type] ?? 0) + f.count
    console.log(
      `archive: ${fmt(total)} resources in ${files.length} files (Synthea, exported from the sandbox)`,
    )
    await source.close()
    open.pop()
    if (RTT > 0) console.log(`every request held ${RTT} ms by a proxy (--rtt), both sides`)

    // 2 and 3, `--repeat` times: Ferry, then the naive loop, each against a fresh target
    const runs: Array<{ ratio: number; ferryRate: number; bareRatio: number }> = []
    for (let rep = 0; rep < REPEAT; rep++) {
      // 2. Ferry
      const target = await startSandbox([])
      const targetVia = await delayed(target.baseUrl)
      open.push(targetVia)
      open.push(target)
      const targetCpu0 = target.cpuSecs()
      const t0 = now()
      const run = await ferry(
        ["import", "--to", targetVia.baseUrl, "--strategy", STRATEGY, "--json", archive],
        CPU_PROF !== undefined ? ["--cpu-prof", "--cpu-prof-dir", CPU_PROF] : [],
      )
      const ferrySecs = secs(t0)
      const targetCpu = target.cpuSecs() - targetCpu0
      if (run.code !== 0) throw new Error(`ferry import failed: ${run.stderr}`)
      const summary = JSON.parse(run.stdout) as { total: number; chunks: number; binaries: number }
      const got = await counts(target.baseUrl, Object.keys(expected))
      const landed = Object.entries(expected).every(([t, n]) => (got[t] ?? 0) === n)
      const ferryRate = total / ferrySecs
      const cpu = /FERRY_CPU ([\d.]+) ([\d.]+) (\d+)/.exec(run.stderr)
      if (cpu !== null)
        console.log(
          `ferry import process: ${cpu[1]} s user + ${cpu[2]} s sys CPU (${fmt(((Number(cpu[1]) + Number(cpu[2])) * 1e6) / total)} µs per resource), peak RSS ${fmt(Number(cpu[3]) / 1024)} MB`,
        )
      console.log(
        `ferry import (${STRATEGY}, Bundles of 500, 4 in flight): ${fmt(total)} resources in ${fmt(ferrySecs, 1)} s = ${fmt(ferryRate)} resources/s (${summary.chunks} Bundles, ${summary.binaries} attachment uploads; target counts ${landed ? "equal the archive's" : "DIFFER from the archive's"})`,
      )
      await targetVia.close()
      await target.close()
      open.splice(open.indexOf(target), 2)

      // 2b. bare: the same Bundles with none of Ferry's work, against another fresh target
      const plain = await startSandbox([])
      const plainVia = await delayed(plain.baseUrl)
      open.push(plainVia)
      open.push(plain)
      const b0 = now()
      const bareSent = await bare(plainVia.baseUrl, archive)
      const bareSecs = secs(b0)
      await plainVia.close()
      await plain.close()
      open.splice(open.indexOf(plain), 2)
      console.log(
        `bare Bundles (the archive's lines in Bundles of 500 PUTs, 4 in flight, none of Ferry's work): ${fmt(bareSent)} resources in ${fmt(bareSecs, 1)} s = ${fmt(bareSent / bareSecs)} resources/s`,
      )

      // 3. naive: one PUT per resource, sequential
      const naive = await startSandbox([])
      const naiveVia = await delayed(naive.baseUrl)
      open.push(naiveVia)
      open.push(naive)
      // every `stride`-th line of the archive, so the sample is spread over all files and types; a sample is
      // read before the clock starts (skipping lines is not the naive loop's work), the whole archive streams
      const wanted = Math.max(1, Math.min(NAIVE, total))
      const stride = total / wanted
      const sample: Array<string> = []
      if (wanted < total) {
        // line ⌊k × total / wanted⌋ for k = 0 … wanted − 1: evenly spread up to the last file
        let seen = 0
        for await (const line of lines(archive)) {
          if (sample.length < wanted && seen === Math.floor(sample.length * stride)) sample.push(line)
          seen++
        }
      }
      let sent = 0
      const naiveCpu0 = naive.cpuSecs()
      const n0 = now()
      for await (const line of wanted < total ? sample : lines(archive)) {
        const r = JSON.parse(line) as { resourceType: string; id: string; meta?: unknown }
        const { meta: _meta, ...body } = r
        const res = await fetch(`${naiveVia.baseUrl}/${r.resourceType}/${r.id}`, {
          method: "PUT",
          headers: { "content-type": "application/fhir+json", accept: "application/fhir+json" },
          body: JSON.stringify(body),
        })
        await res.arrayBuffer()
        if (res.status >= 300) throw new Error(`naive PUT ${r.resourceType}/${r.id}: ${res.status}`)
        sent++
      }
      const naiveSecs = secs(n0)
      const naiveTargetCpu = naive.cpuSecs() - naiveCpu0
      const naiveRate = sent / naiveSecs
      console.log(
        `naive loop (one PUT per resource, sequential): ${fmt(sent)} resources (${wanted < total ? `every ${fmt(stride, 1)}th line` : "all"}) in ${fmt(naiveSecs, 1)} s = ${fmt(naiveRate)} resources/s (whole archive ≈ ${fmt(total / naiveRate)} s)`,
      )
      const ratio = ferryRate / naiveRate
      // The target serves from one thread: Ferry's import cannot take less wall time than that thread's CPU for
      // it, so the naive time ÷ that CPU is the most a client sending these Bundles can reach with this target.
      const ceiling = total / naiveRate / targetCpu
      console.log(
        `target main thread CPU: ${fmt(targetCpu, 2)} s during ferry's import (${fmt((targetCpu * 1e6) / total)} µs per resource), ${fmt(naiveTargetCpu, 2)} s during the naive loop's ${fmt(sent)} PUTs (${fmt((naiveTargetCpu * 1e6) / sent)} µs per resource); ceiling for Bundles of 500 with this target: ${fmt(ceiling, 1)}× (naive whole-archive time ÷ that CPU for ferry's import)`,
      )
      const bareRatio = bareSent / bareSecs / naiveRate
      console.log(
        `run ${rep + 1} of ${REPEAT}: ratio ${fmt(ratio, 1)}×, ferry ${fmt(ferryRate)} resources/s; bare Bundles ${fmt(bareRatio, 1)}× the naive loop (what a client doing none of Ferry's work reached against this target in this round)`,
      )
      runs.push({ ratio, ferryRate, bareRatio })
    }
    const median = (xs: ReadonlyArray<number>) => {
      const sorted = [...xs].sort((a, b) => a - b)
      const mid = Math.floor(sorted.length / 2)
      return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
    }
    const ratio = median(runs.map((r) => r.ratio))
    const ferryRate = median(runs.map((r) => r.ferryRate))
    console.log(
      `ratio: ${fmt(ratio, 1)}× median of ${runs.length} (${runs.map((r) => `${fmt(r.ratio, 1)}×`).join(", ")}; goal ≥ 10× ${ratio >= 10 ? "met" : "NOT met"}); ferry ${fmt(ferryRate)} resources/s median (goal ≥ 5,000 ${ferryRate >= 5000 ? "met" : "NOT met"})`,
    )
    console.log(
      `bare Bundles: ${fmt(median(runs.map((r) => r.bareRatio)), 1)}× median (${runs.map((r) => `${fmt(r.bareRatio, 1)}×`).join(", ")}); ferry ÷ bare: ${runs.map((r) => `${fmt((100 * r.ratio) / r.bareRatio)} %`).join(", ")}`,
    )
  } finally {
    for (const o of open.reverse()) await o.close()
    rmSync(tmp, { recursive: true, force: true })
  }
}

await main()
