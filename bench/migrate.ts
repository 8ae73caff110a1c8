/**
 * `ferry migrate` end to end against the source's own `ferry export`, same run, same source.
 *
 *   npm run build && npx vite-node bench/migrate.ts                          # Synthea 38k, then 100k generated
 *   npx vite-node bench/migrate.ts -- --sets synthea,100000,1000000          # also 1M (long on a shared machine)
 *
 * Per data set:
 * 1. A source sandbox in its own process (`ferry sandbox --port 0 --db <tmp> --seed <Synthea + attachments>`
 *    or `--generate <patients>`, ≈ 23 resources per patient, one Binary attachment each).
 * 2. The source's own export time: `ferry export <source> --out <tmp> --parallel 4 --json` (attachments on),
 *    wall time and peak RSS from `/usr/bin/time -v`.
 * 3. A fresh, empty target sandbox in its own process (`--db <tmp>`), then
 *    `ferry migrate --from <source> --to <target> --archive <tmp> --parallel 4 --json`, wall time and peak
 *    RSS the same way; the migrate summary gives the waves, how many files were imported while the export
 *    ran, and the migrate's own export phase.
 * 4. A check that the target holds what was exported: `_summary=count` per type on both servers.
 * 5. The CPU time of every process during the migrate (Ferry from `time -v`, the two sandboxes from
 *    /proc/<pid>/stat before and after): their sum ÷ the machine's cores is a lower bound on the migrate's
 *    wall time on this machine, whatever the overlap, printed against the goal.
 * The goal (issue): migrate wall time ≤ 1.5 × the export's. Sandboxes' CPU and memory are not Ferry's.
 */
import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { cpus, tmpdir } from "node:os"
import { join } from "node:path"
import { BIN, collect, ferryEnv, startSandboxProcess } from "./proc.js"

/** Ferry runs as the `ferry` command runs it (glibc's malloc settings, apps/cli/bin/ferry). */
const env = ferryEnv()

const DATA = new URL("../../shared/data/", import.meta.url).pathname
const TIME = "/usr/bin/time"

const option = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}
const SETS = (option("sets") ?? "synthea,100000").split(",").map((s) => s.trim())

const now = () => process.hrtime.bigint()
const secs = (t0: bigint, t1 = now()) => Number(t1 - t0) / 1e9
const fmt = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })

interface Timed {
  readonly code: number | null
  readonly wallSecs: number
  readonly peakRssMb: number | undefined
  readonly cpuSecs: number | undefined
  readonly stdout: string
  readonly stderr: string
}

/** Runs the CLI under `/usr/bin/time -v` (when present) and reads wall time, CPU and peak RSS. */
const timed = (args: ReadonlyArray<string>): Promise<Timed> =>
  new Promise((resolve, reject) => {
    const useTime = existsSync(TIME)
    const t0 = now()
    const child = useTime
      ? spawn(TIME, ["-v", process.execPath, BIN, ...args], {
          stdio: ["ignore", "pipe", "pipe"],
          env,
        })
      : spawn(process.execPath, [BIN, ...args], { stdio: ["ignore", "pipe", "pipe"], env })
    const output = collect(child)
    child.on("error", reject)
    child.on("close", (code) => {
      const wallSecs = secs(t0)
      const stdout = output.stdout()
      const stderr = output.stderr()
      const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr)
      const user = /User time \(seconds\): ([\d.]+)/.exec(stderr)
      const sys = /System time \(seconds\): ([\d.]+)/.exec(stderr)
      resolve({
        code,
        wallSecs,
        peakRssMb: rss ? Number(rss[1]) / 1024 : undefined,
        cpuSecs: user && sys ? Number(user[1]) + Number(sys[1]) : undefined,
        stdout,
        stderr,
      })
    })
  })

const countsOf = async (baseUrl: string, types: ReadonlyArray<string>): Promise<Record<string, number>> => {
  const out: Record<string, number> = {}
  for (const t of types) {
    const r = await fetch(`${baseUrl}/${t}?_summary=count`, { headers: { accept: "application/fhir+json" } })
    out[t] = ((await r.json()) as { total?: number }).total ?? 0
  }
  return out
}

interface Row {
  readonly set: string
  readonly resources: number
  readonly attachments: number
  readonly exportSecs: number
  readonly exportRss: number | undefined
  readonly migrateSecs: number
  readonly migrateRss: number | undefined
  readonly migrateCpu: number | undefined
  /** CPU seconds the source and the target sandbox used during the migrate. */
  readonly sourceCpu: number
  readonly targetCpu: number
  readonly migrateExportSecs: number
  readonly waves: number
  readonly overlapped: number
  readonly files: number
  readonly countsEqual: boolean
}

const runSet = async (set: string): Promise<Row> => {
  const tmp = mkdtempSync(join(tmpdir(), "ferry-bench-migrate-"))
  try {
    const sourceArgs =
      set === "synthea"
        ? ["--seed", join(DATA, "synthea-bundles"), "--seed", join(DATA, "attachments")]
        : ["--generate", String(Math.ceil(Number(set) / 23))]
    console.error(`[${set}] starting the source sandbox (${sourceArgs.join(" ")})…`)
    const source = await startSandboxProcess(["--db", join(tmp, "source.sqlite"), ...sourceArgs])
    console.error(`[${set}] source ready in ${source.startSecs.toFixed(1)} s: ${source.baseUrl}`)
    try {
      console.error(`[${set}] ferry export (the source's own export time)…`)
      const exp = await timed([
        "export",
        source.baseUrl,
        "--out",
        join(tmp, "export"),
        "--parallel",
        "4",
        "--json",
      ])
      if (exp.code !== 0) throw new Error(`ferry export failed (${exp.code}): ${exp.stderr.slice(-2000)}`)
      const exported = JSON.parse(exp.stdout) as {
        resources: number
        types: Record<string, unknown>
        attachments: { fetched: number }
      }
      const target = await startSandboxProcess(["--db", join(tmp, "target.sqlite")])
      try {
        console.error(`[${set}] ferry migrate…`)
        const cpu0 = [source.cpuSecs(), target.cpuSecs()] as const
        const mig = await timed([
          "migrate",
          "--from",
          source.baseUrl,
          "--to",
          target.baseUrl,
          "--archive",
          join(tmp, "migrate"),
          "--parallel",
          "4",
          "--json",
        ])
        const cpu1 = [source.cpuSecs(), target.cpuSecs()] as const
        if (mig.code !== 0) throw new Error(`ferry migrate failed (${mig.code}): ${mig.stderr.slice(-2000)}`)
        const m = JSON.parse(mig.stdout) as {
          waves: number
          overlapped: number
          importedFiles: number
          export: { resources: number }
          import: { total: number }
          timings: { exportMs: number; totalMs: number }
        }
        const types = Object.keys(exported.types)
        const [a, b] = await Promise.all([countsOf(source.baseUrl, types), countsOf(target.baseUrl, types)])
        const countsEqual = JSON.stringify(a) === JSON.stringify(b)
        if (!countsEqual)
          console.error(`[${set}] WARNING: per-type counts differ: ${JSON.stringify({ a, b })}`)
        const row: Row = {
          set,
          resources: exported.resources,
          attachments: exported.attachments.fetched,
          exportSecs: exp.wallSecs,
          exportRss: exp.peakRssMb,
          migrateSecs: mig.wallSecs,
          migrateRss: mig.peakRssMb,
          migrateCpu: mig.cpuSecs,
          sourceCpu: cpu1[0] - cpu0[0],
          targetCpu: cpu1[1] - cpu0[1],
          migrateExportSecs: m.timings.exportMs / 1000,
          waves: m.waves,
          overlapped: m.overlapped,
          files: m.importedFiles,
          countsEqual,
        }
        console.error(`[${set}] ${JSON.stringify(row)}`)
        return row
      } finally {
        await target.stop()
      }
    } finally {
      await source.stop()
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
}

const main = async () => {
  const load = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")
  console.error(`load average before: ${load()}`)
  const rows: Array<Row> = []
  for (const set of SETS) rows.push(await runSet(set))
  console.error(`load average after: ${load()}`)
  const mb = (n: number | undefined) => (n === undefined ? "—" : `${fmt(n)} MB`)
  console.log(
    "| Data set | Resources | Export: wall / peak RSS | Migrate: wall / peak RSS / CPU | Migrate ÷ export | Waves (files imported while exporting) | Counts equal |",
  )
  console.log("|---|---|---|---|---|---|---|")
  for (const r of rows) {
    const ratio = r.migrateSecs / r.exportSecs
    console.log(
      `| ${r.set === "synthea" ? "Synthea" : `generated ${fmt(Number(r.set))}`} | ${fmt(r.resources)} (+${fmt(r.attachments)} attachments) | ${r.exportSecs.toFixed(1)} s / ${mb(r.exportRss)} | ${r.migrateSecs.toFixed(1)} s / ${mb(r.migrateRss)} / ${r.migrateCpu?.toFixed(1) ?? "—"} s | ${ratio.toFixed(2)}× ${ratio <= 1.5 ? "✔" : "✗"} (goal ≤ 1.5×) | ${r.waves} (${r.overlapped} of ${r.files}); migrate's export phase ${r.migrateExportSecs.toFixed(1)} s | ${r.countsEqual ? "yes" : "NO"} |`,
    )
  }
  const cores = cpus().length
  console.log("")
  console.log(
    `CPU during the migrate, all processes (Ferry + source sandbox + target sandbox), and the wall time it needs at least on ${cores} cores:`,
  )
  console.log("| Data set | Ferry CPU | Source CPU | Target CPU | Sum | Sum ÷ cores | That ÷ export wall |")
  console.log("|---|---|---|---|---|---|---|")
  for (const r of rows) {
    const sum = (r.migrateCpu ?? Number.NaN) + r.sourceCpu + r.targetCpu
    const floor = sum / cores
    console.log(
      `| ${r.set === "synthea" ? "Synthea" : `generated ${fmt(Number(r.set))}`} | ${r.migrateCpu?.toFixed(1) ?? "—"} s | ${r.sourceCpu.toFixed(1)} s | ${r.targetCpu.toFixed(1)} s | ${sum.toFixed(1)} s | ${floor.toFixed(1)} s | ${(floor / r.exportSecs).toFixed(2)}× ${floor / r.exportSecs > 1.5 ? "(above the 1.5× goal even with perfect overlap)" : ""} |`,
    )
  }
}

main().catch((e: unknown) => {
  console.error(e)
  process.exit(1)
})
