/**
 * Export throughput and memory: `ferry export` against a bare streaming download of the same files, same run.
 *
 *   npm run build && npx vite-node bench/export.ts                  # 100k and 1M (≈ 7 min quiet, 13 min loaded)
 *   npx vite-node bench/export.ts -- --sizes 100000                 # one size
 *   npx vite-node bench/export.ts -- --sizes 100000 --cpu-prof DIR  # also write a CPU profile of the CLI
 *   npx vite-node bench/export.ts -- --no-attachments               # NDJSON files only, both sides
 *   npx vite-node bench/export.ts -- --node-flags "--flag=1 …"       # Node/V8 flags for Ferry's process
 *
 * Per size N (resources; the sandbox generator makes ≈ 23 per patient, one of them a DocumentReference whose
 * attachment is a `Binary` on the sandbox):
 * 1. A sandbox in a SEPARATE process (`ferry sandbox --port 0 --db <tmp> --generate <patients>`), so its
 *    CPU and memory are not counted as Ferry's. Its base URL is the first stdout line (after generation).
 * 2. Bare baseline: kick off `$export`, poll honouring Retry-After (as Ferry does), download every output
 *    file with node:http streaming into a temp file (4 in flight, keep-alive), then GET every attachment
 *    (`Binary/gen-bin-<i>`, the generator's ids; 4 in flight); no parsing, no checksums. Then (not timed into
 *    the baseline) the files again with `Accept-Encoding: gzip`, as Ferry asks. Job released after.
 * 3. Ferry: the bundled CLI as its own process, `ferry export <base> --out <tmp> --parallel 4 --json`, with the
 *    environment the `ferry` command gives Node (glibc's malloc settings, apps/cli/bin/ferry; `--launcher-env off`
 *    runs it without)
 *    (attachments on), timed spawn to exit (its process start and CapabilityStatement included: stricter than the
 *    bare side's kick-off to last byte); peak RSS from `/usr/bin/time -v` (else VmHWM sampled every
 *    100 ms); VmRSS sampled every 100 ms for per-phase peaks; phases from the archive's `events.ndjson`.
 * 4. CPU: the bare client's and the sandbox's over the timed baseline, Ferry's and the sandbox's over Ferry's run;
 *    (Ferry + sandbox) ÷ cores is the least wall time Ferry can take on this machine, however well they overlap.
 * Before each side, `sync` and a second's rest: the sandbox's generation and the side before leave hundreds of MB
 * of dirty pages (the bare client's and the job's files, deleted or not), whose writeback otherwise slows the
 * next side's job and fsyncs (the second side paid for the first's disk writes).
 * MB/s are over the same bytes (NDJSON + attachment bytes) for both. Goals (issue): Ferry ≥ 70 % of the bare
 * download's throughput, peak RSS ≤ 150 MB, RSS at 1M ≤ +10 % of RSS at 100k.
 */
import { execFileSync, spawn } from "node:child_process"
import { createReadStream, createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { Agent, request } from "node:http"
import { cpus, tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { pipeline } from "node:stream/promises"
import { BIN, collect, ferryEnv, startSandboxProcess } from "./proc.js"

const TIME = "/usr/bin/time"
const PARALLEL = 4

const option = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}
const SIZES = (option("sizes") ?? "100000,1000000").split(",").map((s) => Number(s.trim()))
const CPU_PROF = option("cpu-prof")
/** `--no-attachments`: both sides skip attachments (NDJSON files only). */
const ATTACHMENTS = !process.argv.includes("--no-attachments")
/** Ferry with the environment the `ferry` command gives it (glibc's malloc settings); `--launcher-env off`: without. */
const LAUNCHER_ENV = option("launcher-env") !== "off"
/** `--node-flags "…"`: Node or V8 flags for Ferry's process (none by default). V8 flags also make V8 reject the
 * launcher's code cache (made without them): the bundle is compiled from source, ≈ 25 MB more at start-up. */
const NODE_FLAGS = (option("node-flags") ?? "").split(" ").filter((f) => f !== "")

const mb = (bytes: number) => bytes / 1e6
const now = () => process.hrtime.bigint()
const secs = (t0: bigint, t1 = now()) => Number(t1 - t0) / 1e9
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
const fmt = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })

// ---------------------------------------------------------------------------------------------------------
// The sandbox, in its own process

// ---------------------------------------------------------------------------------------------------------
// Bare baseline: node:http, no parsing

const agent = new Agent({ keepAlive: true, maxSockets: PARALLEL })

interface Reply {
  readonly status: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly body: string
}

/** A small request whose answer is kept (kick-off, status, DELETE). */
const call = (url: string, method: string, headers: Record<string, string>) =>
  new Promise<Reply>((resolve, reject) => {
    request(url, { method, headers, agent }, (res) => {
      const chunks: Buffer[] = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      )
      res.on("error", reject)
    })
      .on("error", reject)
      .end()
  })

/** Streams a response into `sink` (a temp file) or discards it; resolves with the byte count. */
const fetchTo = (url: string, headers: Record<string, string>, sink?: string) =>
  new Promise<number>((resolve, reject) => {
    request(url, { headers, agent }, (res) => {
      if (res.statusCode !== 200) {
        res.resume()
        reject(new Error(`GET ${url}: ${res.statusCode}`))
        return
      }
      let bytes = 0
      res.on("data", (c: Buffer) => {
        bytes += c.length
      })
      if (sink === undefined) {
        res.on("end", () => resolve(bytes))
        res.on("error", reject)
        res.resume()
      } else {
        pipeline(res, createWriteStream(sink)).then(() => resolve(bytes), reject)
      }
    })
      .on("error", reject)
      .end()
  })

/** Runs `work` over `items` with `n` in flight. */
const pool = async <A>(items: ReadonlyArray<A>, n: number, work: (a: A, i: number) => Promise<void>) => {
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      await work(items[i]!, i)
    }
  }
  await Promise.all(Array.from({ length: n }, worker))
}

interface Bare {
  readonly resources: number
  readonly files: number
  readonly ndjsonBytes: number
  readonly attachments: number
  readonly attachmentBytes: number
  readonly jobSecs: number
  readonly filesSecs: number
  readonly attachmentsSecs: number
  readonly totalSecs: number
  /** The files again with `Accept-Encoding: gzip` (compressed by the sandbox, discarded undecoded). */
  readonly gzipSecs: number
  /** This process's CPU (the bare client) and the sandbox's CPU (all threads), kick-off → last byte. */
  readonly clientCpuSecs: number
  readonly sandboxCpuSecs: number
}

const bare = async (
  baseUrl: string,
  patients: number,
  dir: string,
  sandboxCpu: () => number,
): Promise<Bare> => {
  const t0 = now()
  const cpu0 = process.cpuUsage()
  const sandbox0 = sandboxCpu()
  const kick = await call(`${baseUrl}/$export`, "GET", {
    accept: "application/fhir+json",
    prefer: "respond-async",
  })
  if (kick.status !== 202) throw new Error(`kick-off: ${kick.status} ${kick.body.slice(0, 300)}`)
  const status = String(kick.headers["content-location"])
  let manifest: { output: Array<{ url: string; count?: number }> } | undefined
  while (manifest === undefined) {
    const r = await call(status, "GET", { accept: "application/json" })
    if (r.status === 200) manifest = JSON.parse(r.body) as typeof manifest
    else if (r.status === 202) await sleep(1000 * Number(r.headers["retry-after"] ?? 1))
    else throw new Error(`status: ${r.status} ${r.body.slice(0, 300)}`)
  }
  const tManifest = now()
  let ndjsonBytes = 0
  await pool(manifest.output, PARALLEL, async (o, i) => {
    const file = join(dir, `bare.${i}.ndjson`)
    const n = await fetchTo(o.url, { accept: "application/fhir+ndjson" }, file)
    ndjsonBytes += n // not `+= await`: that reads the total before the await and loses concurrent updates
  })
  const tFiles = now()
  let attachmentBytes = 0
  const ids = Array.from({ length: ATTACHMENTS ? patients : 0 }, (_, i) => i)
  await pool(ids, PARALLEL, async (i) => {
    const n = await fetchTo(`${baseUrl}/Binary/gen-bin-${i}`, { accept: "*/*" })
    attachmentBytes += n
  })
  const tDone = now()
  const cpu = process.cpuUsage(cpu0)
  const sandboxSecs = sandboxCpu() - sandbox0
  // Not timed into the baseline: the same files again with `Accept-Encoding: gzip` as Ferry asks (the sandbox
  // then compresses on the fly), compressed bytes discarded: the rate the server can feed a gzip client.
  const tGzip = now()
  await pool(manifest.output, PARALLEL, async (o) => {
    await fetchTo(o.url, { accept: "application/fhir+ndjson", "accept-encoding": "gzip, deflate, br" })
  })
  const gzipSecs = secs(tGzip)
  await call(status, "DELETE", {})
  rmSync(dir, { recursive: true, force: true })
  return {
    resources: manifest.output.reduce((n, o) => n + (o.count ?? 0), 0),
    files: manifest.output.length,
    ndjsonBytes,
    attachments: ids.length,
    attachmentBytes,
    jobSecs: secs(t0, tManifest),
    filesSecs: secs(tManifest, tFiles),
    attachmentsSecs: secs(tFiles, tDone),
    totalSecs: secs(t0, tDone),
    gzipSecs,
    clientCpuSecs: (cpu.user + cpu.system) / 1e6,
    sandboxCpuSecs: sandboxSecs,
  }
}

// ---------------------------------------------------------------------------------------------------------
// Ferry: the bundled CLI in its own process

interface Ferry {
  readonly resources: number
  readonly ndjsonBytes: number
  readonly attachments: number
  readonly attachmentBytes: number
  readonly totalSecs: number
  readonly peakRssMb: number
  readonly rssSource: string
  /** user + system CPU seconds of the CLI process (only with /usr/bin/time). */
  readonly cpuSecs: number | undefined
  /** From events.ndjson: spawn → kick-off answered (start-up, CapabilityStatement, kick-off request; Ferry logs
   * `kickoff` when the 202 arrives), kick-off → manifest,
   * manifest → last file, last file → done, done → exit. */
  readonly startSecs: number
  readonly exitSecs: number
  readonly jobSecs: number
  readonly filesSecs: number
  readonly attachmentsSecs: number
  /** Highest VmRSS sampled (every 100 ms) in each phase, MB: start-up, job, files, attachments, exit. */
  readonly rssByPhaseMb: ReadonlyArray<number>
}

/** `VmHWM` (peak) and `VmRSS` (now) of a process, in kB; undefined once it has exited. */
const memoryKb = (pid: number): { hwm: number; rss: number } | undefined => {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8")
    const hwm = /VmHWM:\s+(\d+) kB/.exec(status)
    const rss = /VmRSS:\s+(\d+) kB/.exec(status)
    return hwm && rss ? { hwm: Number(hwm[1]), rss: Number(rss[1]) } : undefined
  } catch {
    return undefined // the process has exited
  }
}

/** The node process: the child itself, or the child's child when it runs under /usr/bin/time. */
const nodePid = (pid: number, wrapped: boolean): number | undefined => {
  if (!wrapped) return pid
  try {
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim()
    return children === "" ? undefined : Number(children.split(" ")[0])
  } catch {
    return undefined
  }
}

/** Millisecond timestamps of the first and last occurrence of each event in events.ndjson. */
const eventTimes = async (file: string) => {
  const first = new Map<string, number>()
  const last = new Map<string, number>()
  for await (const line of createInterface({ input: createReadStream(file) })) {
    if (line === "") continue
    const e = JSON.parse(line) as { at: string; event: string }
    const t = Date.parse(e.at)
    if (!first.has(e.event)) first.set(e.event, t)
    last.set(e.event, t)
  }
  return { first, last }
}

const ferry = async (baseUrl: string, out: string): Promise<Ferry> => {
  const useTime = existsSync(TIME)
  const node = [
    ...NODE_FLAGS,
    ...(CPU_PROF !== undefined ? ["--cpu-prof", "--cpu-prof-dir", CPU_PROF] : []),
    BIN,
    "export",
    baseUrl,
    "--out",
    out,
    "--parallel",
    String(PARALLEL),
    "--json",
    ...(ATTACHMENTS ? [] : ["--no-attachments"]),
  ]
  // as the `ferry` command runs it (glibc's malloc settings; `--launcher-env off`: Node's own)
  const env = LAUNCHER_ENV ? ferryEnv() : process.env
  const t0 = now()
  const spawnedAt = Date.now()
  const child = useTime
    ? spawn(TIME, ["-v", process.execPath, ...node], { stdio: ["ignore", "pipe", "pipe"], env })
    : spawn(process.execPath, node, { stdio: ["ignore", "pipe", "pipe"], env })
  const output = collect(child, 16_000)
  let sampledKb = 0
  const samples: Array<readonly [number, number]> = []
  let pid: number | undefined
  const sampler = setInterval(() => {
    pid ??= nodePid(child.pid ?? 0, useTime)
    const m = pid === undefined ? undefined : memoryKb(pid)
    if (m === undefined) return
    sampledKb = Math.max(sampledKb, m.hwm)
    samples.push([Date.now(), m.rss])
  }, 100)
  const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)))
  const totalSecs = secs(t0)
  const exitedAt = Date.now()
  clearInterval(sampler)
  const stdout = output.stdout()
  const stderr = output.stderr()
  if (code !== 0) throw new Error(`ferry export exited ${code}: ${stderr.slice(-3000)}`)
  const summary = JSON.parse(stdout) as {
    resources: number
    bytes: number
    attachments: { fetched: number; bytes: number }
  }
  const maxRss = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr)
  const user = /User time \(seconds\): ([\d.]+)/.exec(stderr)
  const system = /System time \(seconds\): ([\d.]+)/.exec(stderr)
  const { first, last } = await eventTimes(join(out, "events.ndjson"))
  const at = (m: Map<string, number>, e: string) => m.get(e) ?? Number.NaN
  const lastFile = at(last, "file")
  const bounds = [
    spawnedAt,
    at(first, "kickoff"),
    at(first, "manifest"),
    lastFile,
    at(last, "done"),
    exitedAt,
  ]
  const rssByPhaseMb = bounds
    .slice(1)
    .map(
      (end, i) =>
        samples.filter(([t]) => t >= bounds[i]! && t < end).reduce((m, [, kb]) => Math.max(m, kb), 0) / 1024,
    )
  return {
    resources: summary.resources,
    ndjsonBytes: summary.bytes,
    attachments: summary.attachments.fetched,
    attachmentBytes: summary.attachments.bytes,
    totalSecs,
    peakRssMb: (maxRss ? Number(maxRss[1]) : sampledKb) / 1024,
    rssSource: maxRss ? "/usr/bin/time -v" : "VmHWM sampled every 100 ms",
    cpuSecs: user && system ? Number(user[1]) + Number(system[1]) : undefined,
    startSecs: (at(first, "kickoff") - spawnedAt) / 1000,
    exitSecs: (exitedAt - at(last, "done")) / 1000,
    jobSecs: (at(first, "manifest") - at(first, "kickoff")) / 1000,
    filesSecs: (lastFile - at(first, "manifest")) / 1000,
    attachmentsSecs: (at(last, "done") - lastFile) / 1000,
    rssByPhaseMb,
  }
}

// ---------------------------------------------------------------------------------------------------------

interface Run {
  readonly size: number
  readonly patients: number
  readonly generateSecs: number
  readonly bare: Bare
  readonly ferry: Ferry
  /** The sandbox's CPU seconds (all threads) while Ferry's export ran. */
  readonly sandboxCpu: number
}

/** Dirty pages written back (`sync`) and a second's rest: each side starts on a quiet disk. */
const settle = async () => {
  execFileSync("sync")
  await new Promise((r) => setTimeout(r, 1000))
}

const runSize = async (size: number): Promise<Run> => {
  const patients = Math.ceil(size / 23)
  const dir = mkdtempSync(join(tmpdir(), "ferry-bench-export-"))
  try {
    const sandbox = await startSandboxProcess([
      "--db",
      join(dir, "source.db"),
      "--generate",
      String(patients),
    ])
    try {
      console.log(
        `[${size}] sandbox ${sandbox.baseUrl}: ${patients} patients generated in ${sandbox.startSecs.toFixed(1)} s`,
      )
      await settle()
      const b = await bare(sandbox.baseUrl, patients, mkdtempSync(join(dir, "bare-")), sandbox.cpuSecs)
      console.log(
        `[${size}] bare: ${b.resources} resources, ${b.files} files, ${fmt(mb(b.ndjsonBytes))} MB + ${b.attachments} attachments in ${b.totalSecs.toFixed(1)} s (job ${b.jobSecs.toFixed(1)} s, files ${b.filesSecs.toFixed(1)} s, attachments ${b.attachmentsSecs.toFixed(1)} s; files again with gzip requested ${b.gzipSecs.toFixed(1)} s)`,
      )
      await settle()
      const c1 = sandbox.cpuSecs()
      const f = await ferry(sandbox.baseUrl, join(dir, "ferry-out"))
      const c2 = sandbox.cpuSecs()
      console.log(
        `[${size}] ferry: ${f.resources} resources, ${fmt(mb(f.ndjsonBytes))} MB + ${f.attachments} attachments in ${f.totalSecs.toFixed(1)} s (start-up ${f.startSecs.toFixed(1)} s, job ${f.jobSecs.toFixed(1)} s, files ${f.filesSecs.toFixed(1)} s, attachments ${f.attachmentsSecs.toFixed(1)} s, exit ${f.exitSecs.toFixed(1)} s), peak RSS ${f.peakRssMb.toFixed(0)} MB (highest sampled VmRSS by phase: ${f.rssByPhaseMb.map((x) => x.toFixed(0)).join(" / ")} MB), CPU ${f.cpuSecs?.toFixed(1) ?? "?"} s`,
      )
      if (f.ndjsonBytes !== b.ndjsonBytes || f.attachments !== b.attachments)
        console.log(
          `[${size}] WARNING: Ferry and the bare download did not move the same bytes (${f.ndjsonBytes} vs ${b.ndjsonBytes} NDJSON bytes, ${f.attachments} vs ${b.attachments} attachments)`,
        )
      return {
        size,
        patients,
        generateSecs: sandbox.startSecs,
        bare: b,
        ferry: f,
        sandboxCpu: c2 - c1,
      }
    } finally {
      await sandbox.stop()
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const main = async () => {
  const started = now()
  const runs: Array<Run> = []
  for (const size of SIZES) runs.push(await runSize(size))
  agent.destroy()

  const mark = (ok: boolean) => (ok ? "✔" : "✗")
  console.log("")
  console.log(
    "| Resources | Bytes (NDJSON + attachments) | Bare: kick-off → last byte | Ferry: spawn → exit | Ferry ÷ bare (MB/s) | Ferry resources/s | Ferry peak RSS | Ferry CPU |",
  )
  console.log("|---|---|---|---|---|---|---|---|")
  for (const r of runs) {
    const bytes = r.bare.ndjsonBytes + r.bare.attachmentBytes
    const bareRate = mb(bytes) / r.bare.totalSecs
    const ferryRate = mb(bytes) / r.ferry.totalSecs
    console.log(
      `| ${fmt(r.bare.resources)} (+${fmt(r.bare.attachments)} attachments) | ${fmt(mb(bytes))} MB | ${r.bare.totalSecs.toFixed(1)} s, ${bareRate.toFixed(1)} MB/s | ${r.ferry.totalSecs.toFixed(1)} s, ${ferryRate.toFixed(1)} MB/s | ${(ferryRate / bareRate).toFixed(2)}× ${mark(ferryRate >= 0.7 * bareRate)} | ${fmt(r.ferry.resources / r.ferry.totalSecs)} | ${r.ferry.peakRssMb.toFixed(0)} MB ${mark(r.ferry.peakRssMb <= 150)} | ${r.ferry.cpuSecs?.toFixed(1) ?? "?"} s (${r.ferry.cpuSecs === undefined ? "?" : fmt((100 * r.ferry.cpuSecs) / r.ferry.totalSecs)} % of one core) |`,
    )
  }
  console.log("")
  console.log(
    "Phases (seconds): start-up = spawn → 202 of the kick-off (process start, CapabilityStatement, kick-off request), job = kick-off → manifest, files = manifest → last file, attachments = last file → done, exit = done → exit. Ferry fetches a file's attachments while the file downloads, so its files phase holds most of them and only the two phases together compare with the bare download's (which fetches the attachments after the files).",
  )
  console.log(
    "| Resources | Bare job / files / attachments | Bare files with gzip requested (not decoded) | Ferry start-up / job / files / attachments after the last file / exit | Files + attachments: Ferry ÷ bare (rate) |",
  )
  console.log("|---|---|---|---|---|")
  for (const r of runs) {
    const b = r.bare
    const f = r.ferry
    console.log(
      `| ${fmt(b.resources)} | ${b.jobSecs.toFixed(1)} / ${b.filesSecs.toFixed(1)} (${(mb(b.ndjsonBytes) / b.filesSecs).toFixed(0)} MB/s) / ${b.attachmentsSecs.toFixed(1)} (${fmt(b.attachments / b.attachmentsSecs)}/s) | ${b.gzipSecs.toFixed(1)} (${(mb(b.ndjsonBytes) / b.gzipSecs).toFixed(0)} MB/s uncompressed) | ${f.startSecs.toFixed(1)} / ${f.jobSecs.toFixed(1)} / ${f.filesSecs.toFixed(1)} (${(mb(f.ndjsonBytes) / f.filesSecs).toFixed(0)} MB/s) / ${f.attachmentsSecs.toFixed(1)} / ${f.exitSecs.toFixed(1)} | ${((b.filesSecs + b.attachmentsSecs) / (f.filesSecs + f.attachmentsSecs)).toFixed(2)}× |`,
    )
  }
  console.log("")
  console.log("Ferry's highest sampled VmRSS (every 100 ms) by phase, MB")
  console.log("| Resources | start-up | job | files | attachments | exit | peak (VmHWM) |")
  console.log("|---|---|---|---|---|---|---|")
  for (const r of runs) {
    console.log(
      `| ${fmt(r.ferry.resources)} | ${r.ferry.rssByPhaseMb.map((x) => x.toFixed(0)).join(" | ")} | ${r.ferry.peakRssMb.toFixed(0)} |`,
    )
  }
  const small = runs.find((r) => r.size === 100_000)
  const large = runs.find((r) => r.size === 1_000_000)
  if (small !== undefined && large !== undefined) {
    const growth = large.ferry.peakRssMb / small.ferry.peakRssMb
    console.log("")
    console.log(
      `RSS 1M ÷ RSS 100k: ${growth.toFixed(2)}× (${large.ferry.peakRssMb.toFixed(0)} MB ÷ ${small.ferry.peakRssMb.toFixed(0)} MB) ${mark(growth <= 1.1)} (goal ≤ 1.10×)`,
    )
  }
  console.log("")
  console.log(
    "CPU (user + system, all threads) against the goal's time (the bare download's ÷ 0.7): both processes share this machine's cores, so Ferry cannot finish sooner than (Ferry's CPU + the sandbox's CPU meanwhile) ÷ cores, however well the two overlap.",
  )
  console.log(
    `| Resources | Bare: client / sandbox | Ferry / sandbox meanwhile | (Ferry + sandbox) ÷ ${cpus().length} cores | Goal time (bare ÷ 0.7) | Floor ÷ goal time |`,
  )
  console.log("|---|---|---|---|---|---|")
  for (const r of runs) {
    const floor = ((r.ferry.cpuSecs ?? Number.NaN) + r.sandboxCpu) / cpus().length
    const goal = r.bare.totalSecs / 0.7
    console.log(
      `| ${fmt(r.bare.resources)} | ${r.bare.clientCpuSecs.toFixed(1)} s / ${r.bare.sandboxCpuSecs.toFixed(1)} s | ${r.ferry.cpuSecs?.toFixed(1) ?? "?"} s / ${r.sandboxCpu.toFixed(1)} s | ${floor.toFixed(1)} s | ${goal.toFixed(1)} s | ${(floor / goal).toFixed(2)}${floor > goal ? " (the goal is out of reach even with perfect overlap)" : ""} |`,
    )
  }
  console.log(
    `peak RSS measured with ${runs[0]?.ferry.rssSource ?? "?"}; whole bench ${secs(started).toFixed(0)} s`,
  )
}

main().catch((e: unknown) => {
  console.error(e)
  process.exitCode = 1
})
