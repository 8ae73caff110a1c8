/**
 * A Patient-level search crawl (`ferry export --mode crawl --level patient`), batched against one by one, same run.
 *
 *   npm run build && npx vite-node bench/crawl.ts                 # 500 generated patients (≈ 11.5k resources)
 *   npx vite-node bench/crawl.ts -- --patients 2000 --rounds 2
 *
 * 1. One sandbox database generated (`ferry sandbox --generate <patients>`, 23 resources a patient), copied, and
 *    served by two sandbox processes: one as FHIR search has it (comma-separated values OR-ed), one with
 *    `searchOr: false` (it reads `patient=Patient/a,Patient/b` as one value, as some servers do).
 * 2. Ferry against each (spawn to exit, wall time and the sandbox's CPU meanwhile; `--no-attachments`: the
 *    generated attachments name the generating process's port, and the searches are what is measured),
 *    alternating which goes first:
 *    against the first it searches up to 50 patients a search once a check batch of 5 found the same both ways;
 *    against the second its check finds the difference and it searches patient by patient: the baseline, what
 *    every Patient-level crawl did before (plus one search of 5 patients per type and parameter).
 * 3. The two archives must hold the same resources (per-type counts).
 * Ratio: the one-by-one crawl's wall time ÷ the batched one's.
 */
import { execFileSync, spawn } from "node:child_process"
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { BIN, collect, ferryEnv, type SandboxProcess, startSandboxProcess } from "./proc.js"

const option = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : fallback
}
const PATIENTS = option("patients", 500)
const ROUNDS = option("rounds", 1)
const now = () => process.hrtime.bigint()
const secs = (t0: bigint) => Number(now() - t0) / 1e9
const fmt = (n: number, digits = 1) =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })

interface Crawl {
  readonly wall: number
  readonly sandboxCpu: number
  readonly counts: Record<string, number>
}

const crawl = (sandbox: SandboxProcess, out: string): Promise<Crawl> =>
  new Promise((resolve, reject) => {
    execFileSync("sync")
    const cpu0 = sandbox.cpuSecs()
    const t0 = now()
    const child = spawn(
      process.execPath,
      [
        BIN,
        "export",
        sandbox.baseUrl,
        "--out",
        out,
        "--mode",
        "crawl",
        "--level",
        "patient",
        "--no-attachments",
        "--json",
      ],
      // (as the `ferry` command runs it: glibc's malloc settings, apps/cli/bin/ferry)
      { stdio: ["ignore", "pipe", "pipe"], env: ferryEnv() },
    )
    const { stderr } = collect(child, 4000)
    child.on("exit", (code) => {
      const wall = secs(t0)
      if (code !== 0) return reject(new Error(`ferry export exited ${code}: ${stderr()}`))
      const manifest = JSON.parse(readFileSync(join(out, "manifest.json"), "utf8")) as {
        files: ReadonlyArray<{ type: string; count: number }>
      }
      const counts: Record<string, number> = {}
      for (const f of manifest.files) counts[f.type] = (counts[f.type] ?? 0) + f.count
      resolve({ wall, sandboxCpu: sandbox.cpuSecs() - cpu0, counts })
    })
  })

const main = async () => {
  const work = mkdtempSync(join(tmpdir(), "ferry-bench-crawl-"))
  try {
    const db = join(work, "source.db")
    const t0 = now()
    const generated = await startSandboxProcess(["--db", db, "--generate", String(PATIENTS)])
    await generated.stop()
    console.log(`${PATIENTS} patients generated in ${fmt(secs(t0))} s`)
    copyFileSync(db, join(work, "copy.db"))
    writeFileSync(join(work, "no-or.json"), JSON.stringify({ searchOr: false }))
    const batchedServer = await startSandboxProcess(["--db", db])
    const singleServer = await startSandboxProcess([
      "--db",
      join(work, "copy.db"),
      "--config",
      join(work, "no-or.json"),
    ])
    try {
      const rows: Array<string> = []
      for (let round = 0; round < ROUNDS; round++) {
        const order = round % 2 === 0 ? (["batched", "single"] as const) : (["single", "batched"] as const)
        const result: Partial<Record<"batched" | "single", Crawl>> = {}
        for (const side of order) {
          const out = join(work, `${side}-${round}`)
          result[side] = await crawl(side === "batched" ? batchedServer : singleServer, out)
          rmSync(out, { recursive: true, force: true })
          execFileSync("sleep", ["1"])
        }
        const b = result.batched!
        const s = result.single!
        const same = JSON.stringify(b.counts) === JSON.stringify(s.counts)
        const total = Object.values(b.counts).reduce((n, c) => n + c, 0)
        console.log(
          `round ${round + 1}: batched ${fmt(b.wall)} s (sandbox CPU ${fmt(b.sandboxCpu)} s), one by one ${fmt(s.wall)} s (sandbox CPU ${fmt(s.sandboxCpu)} s): ${fmt(s.wall / b.wall, 2)}×; ${total} resources, counts ${same ? "equal" : "DIFFER"}`,
        )
        if (!same) console.log(JSON.stringify({ batched: b.counts, single: s.counts }))
        rows.push(
          `| ${round + 1} | ${PATIENTS} / ${total} | ${fmt(s.wall)} s / ${fmt(s.sandboxCpu)} s | ${fmt(b.wall)} s / ${fmt(b.sandboxCpu)} s | **${fmt(s.wall / b.wall, 2)}×** | ${same ? "yes" : "**no**"} |`,
        )
      }
      console.log(
        [
          "",
          "| Round | Patients / resources | One by one: wall / sandbox CPU | Batched: wall / sandbox CPU | One by one ÷ batched | Counts equal |",
          "|---|---|---|---|---|---|",
          ...rows,
        ].join("\n"),
      )
    } finally {
      await batchedServer.stop()
      await singleServer.stop()
    }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

await main()
