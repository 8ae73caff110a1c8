/**
 * `ferry seal` and `ferry unseal` against plain copies of the same bytes, same run.
 *
 *   npm run build && npx vite-node bench/seal.ts -- --archive <a finished archive>
 *   npx vite-node bench/seal.ts                      # makes one: a generated 100k-resource sandbox, ferry export
 *
 * 1. The archive's files that a seal holds (the manifest, `checksums.sha256` and every file it lists) are
 *    counted, and read once so both sides start from the page cache.
 * 2. Baseline, in this process: those files read and appended into one file (64 KiB pieces, the same as a seal's
 *    chunks, fsync at the end) — what any copy of the archive into one file costs: no hashing, no encryption.
 * 3. `ferry seal <archive> --to <key> --out <tmp>` as its own process (spawn to exit; it checks the listing, then
 *    seals each file while hashing it against its row), peak RSS from `/usr/bin/time -v`.
 * 4. Baseline: the baseline file read back and written out as the files again (one pass, fsync per file).
 * 5. `ferry unseal` the same way (it decrypts and writes each file while hashing it against its row, checks the
 *    listing, then renames the folder into place).
 * Ratios: Ferry's MB/s ÷ the baseline's. `sync` and a second's rest before each side.
 */
import { execFileSync, spawnSync } from "node:child_process"
import * as NFS from "node:fs"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { BIN, ferryEnv } from "./proc.js"

const TIME = "/usr/bin/time"
const CHUNK = 64 * 1024

const option = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}
const now = () => process.hrtime.bigint()
const secs = (t0: bigint) => Number(now() - t0) / 1e9
const fmt = (n: number, digits = 1) =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })
const settle = () => {
  execFileSync("sync")
  execFileSync("sleep", ["1"])
}

const work = mkdtempSync(Path.join(tmpdir(), "ferry-bench-seal-"))

/** A finished archive: the one given, or a 100k-resource export of a generated sandbox. */
const archiveOf = (): string => {
  const given = option("archive")
  if (given !== undefined) return given
  const out = Path.join(work, "archive")
  const db = Path.join(work, "source.db")
  const sandbox = spawnSync(
    "bash",
    [
      "-c",
      `node ${BIN} sandbox --port 0 --db ${db} --generate 4348 > ${work}/sandbox.out 2>&1 & pid=$!; ` +
        `until [ -s ${work}/sandbox.out ]; do sleep 0.2; done; base=$(head -1 ${work}/sandbox.out); ` +
        `node ${BIN} export "$base" --out ${out} --parallel 4 >/dev/null 2>&1; code=$?; kill $pid; exit $code`,
    ],
    { stdio: "inherit" },
  )
  if (sandbox.status !== 0) throw new Error("the sandbox export for the bench failed")
  return out
}

const archive = archiveOf()
const rows = readFileSync(Path.join(archive, "checksums.sha256"), "utf8")
  .trim()
  .split("\n")
  .map((l) => l.slice(66))
const files = [...new Set(["manifest.json", "checksums.sha256", ...rows])].sort()
const bytes = files.reduce((n, f) => n + NFS.statSync(Path.join(archive, f)).size, 0)
const mb = bytes / 1e6
for (const f of files) readFileSync(Path.join(archive, f))
console.log(`archive ${archive}: ${files.length.toLocaleString("en-US")} files, ${fmt(mb)} MB`)

const key = Path.join(work, "k.jwk")
const pub = Path.join(work, "k.pub.jwk")
NFS.writeFileSync(
  pub,
  execFileSync(process.execPath, [BIN, "keys", "generate", "--alg", "X25519", "--out", key], {
    stdio: ["ignore", "pipe", "ignore"],
  }),
)

/** Spawn ferry with `time -v`: wall seconds and peak RSS (MB). */
const timed = (args: ReadonlyArray<string>): { wall: number; rss: number } => {
  const t0 = now()
  // (as the `ferry` command runs it: glibc's malloc settings, apps/cli/bin/ferry)
  const run = spawnSync(TIME, ["-v", process.execPath, BIN, ...args], {
    encoding: "utf8",
    env: ferryEnv(),
  })
  const wall = secs(t0)
  if (run.status !== 0) throw new Error(`ferry ${args[0]} failed: ${run.stderr}`)
  const kb = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(run.stderr)?.[1] ?? Number.NaN)
  return { wall, rss: kb / 1024 }
}

// seal
settle()
const buf = Buffer.allocUnsafe(CHUNK)
const copy = Path.join(work, "copy.bin")
let t0 = now()
{
  const out = NFS.openSync(copy, "w", 0o600)
  for (const f of files) {
    const fd = NFS.openSync(Path.join(archive, f), "r")
    for (;;) {
      const n = NFS.readSync(fd, buf, 0, CHUNK, null)
      if (n === 0) break
      NFS.writeSync(out, buf, 0, n)
    }
    NFS.closeSync(fd)
  }
  NFS.fsyncSync(out)
  NFS.closeSync(out)
}
const baseSeal = secs(t0)
settle()
const sealed = Path.join(work, "archive.sealed")
const seal = timed(["seal", archive, "--to", pub, "--out", sealed])

// unseal
settle()
t0 = now()
{
  const back = Path.join(work, "copied-back")
  const fd = NFS.openSync(copy, "r")
  for (const f of files) {
    const size = NFS.statSync(Path.join(archive, f)).size
    const path = Path.join(back, f)
    NFS.mkdirSync(Path.dirname(path), { recursive: true, mode: 0o700 })
    const out = NFS.openSync(path, "w", 0o600)
    let left = size
    while (left > 0) {
      const n = NFS.readSync(fd, buf, 0, Math.min(CHUNK, left), null)
      NFS.writeSync(out, buf, 0, n)
      left -= n
    }
    NFS.fsyncSync(out)
    NFS.closeSync(out)
  }
  NFS.closeSync(fd)
}
const baseUnseal = secs(t0)
settle()
const unseal = timed(["unseal", sealed, "--key", key, "--out", Path.join(work, "unsealed")])

const line = (what: string, base: number, ferry: { wall: number; rss: number }) =>
  console.log(
    `${what}: baseline ${fmt(base)} s (${fmt(mb / base, 0)} MB/s), ferry ${fmt(ferry.wall)} s (${fmt(mb / ferry.wall, 0)} MB/s, peak RSS ${fmt(ferry.rss, 0)} MB): ${fmt(base / ferry.wall, 2)}× the baseline's rate`,
  )
line("seal  ", baseSeal, seal)
line("unseal", baseUnseal, unseal)
rmSync(work, { recursive: true, force: true })
