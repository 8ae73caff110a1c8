/**
 * Attachment fetching alone: the export's `Attachments.fetcher` against bare GETs of the same URLs, same run.
 *
 *   npm run build && npx vite-node bench/attachments.ts                     # 4,348 attachments, 3 rounds
 *   npx vite-node bench/attachments.ts -- --patients 2000 --rounds 5
 *
 * A sandbox in its own process (`ferry sandbox --generate <patients>`: one DocumentReference per patient whose
 * attachment is `Binary/gen-bin-<i>`). Each round runs, one after the other:
 * - bare: node:http GETs of every `Binary/gen-bin-<i>` (4 in flight, keep-alive), bodies read and dropped (the
 *   baseline of bench/export.ts);
 * - get: the same GETs through `FhirClient.get` (4 in flight), bodies read whole: Ferry's HTTP share;
 * - store: the blob store alone, no HTTP: `storeBytes` of as many 1 KB bodies and a `commit` every 256, as the
 *   fetcher does: hashing, one new file per blob, the fsyncs and the index;
 * - create: as many empty files created and closed in a new folder: the kernel's share of `store` on this file
 *   system (a file creation on ext4 costs 10–300 µs of system CPU here, varying from hour to hour);
 * - Ferry: `fetcher.forRefs` of the references (concurrency 4, as `--parallel 4`) into a new archive folder:
 *   fetched, hashed, written, fsynced and indexed, as the export does.
 * Printed: wall time and this process's CPU (user + system, all threads) per attachment; the last column is the
 * fetcher's rate against the bare GETs'. The archive folders are deleted at the end only: on ext4, creating
 * files right after deleting thousands costs several times the kernel CPU.
 * The export's bar (bench/export.ts) counts these fetches inside its files and attachments phases.
 */
import { closeSync, constants, mkdirSync, mkdtempSync, openSync, rmSync } from "node:fs"
import { Agent, request } from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { startSandboxProcess } from "./proc.js"
import * as FhirClient from "@ferry/core/FhirClient"
import * as Store from "@ferry/archive/Attachments"
import * as Attachments from "@ferry/export/Attachments"
import { NodeHttpClient } from "@effect/platform-node"
import { Effect } from "effect"

const option = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : fallback
}
const PATIENTS = option("patients", 4348)
const ROUNDS = option("rounds", 3)
const PARALLEL = 4

const now = () => process.hrtime.bigint()
const secs = (t0: bigint) => Number(now() - t0) / 1e9
const cpu = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

const startSandbox = (db: string) => startSandboxProcess(["--db", db, "--generate", String(PATIENTS)])

const agent = new Agent({ keepAlive: true, maxSockets: PARALLEL })
const get = (url: string) =>
  new Promise<number>((resolve, reject) => {
    request(url, { agent, headers: { accept: "*/*" } }, (res) => {
      let bytes = 0
      res.on("data", (c: Buffer) => {
        bytes += c.length
      })
      res.on("end", () => resolve(bytes))
      res.on("error", reject)
    })
      .on("error", reject)
      .end()
  })

const bare = async (baseUrl: string) => {
  let next = 0
  const worker = async () => {
    while (next < PATIENTS) await get(`${baseUrl}/Binary/gen-bin-${next++}`)
  }
  await Promise.all(Array.from({ length: PARALLEL }, worker))
}

const refs = (): ReadonlyArray<Attachments.AttachmentRef> =>
  Array.from({ length: PATIENTS }, (_, i) => ({
    url: `Binary/gen-bin-${i}`,
    resource: `DocumentReference/gen-doc-${i}`,
    path: "content[0].attachment",
    contentType: "text/plain",
    size: undefined,
    hash: undefined,
  }))

const ferry = (baseUrl: string, out: string) =>
  Effect.gen(function* () {
    const client = yield* FhirClient.make({ baseUrl })
    const fetcher = yield* Attachments.fetcher(client, { root: out }, { concurrency: PARALLEL })
    const result = yield* fetcher.forRefs(refs())
    if (result.fetched !== PATIENTS) throw new Error(`fetched ${result.fetched} of ${PATIENTS}`)
  }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layerUndici), Effect.runPromise)

const fhirGet = (baseUrl: string) =>
  Effect.gen(function* () {
    const client = yield* FhirClient.make({ baseUrl })
    yield* Effect.forEach(
      Array.from({ length: PATIENTS }, (_, i) => i),
      (i) =>
        Effect.flatMap(
          client.get(`Binary/gen-bin-${i}`, { headers: { accept: "*/*" }, holdBack: true }),
          (r) => Effect.promise(() => r.body.arrayBuffer()),
        ),
      { concurrency: PARALLEL, discard: true },
    )
  }).pipe(Effect.provide(NodeHttpClient.layerUndici), Effect.runPromise)

const store = (out: string) =>
  Effect.gen(function* () {
    const s = yield* Store.store(out)
    const filler = "x".repeat(1000)
    for (let i = 0; i < PATIENTS; i++) {
      yield* s.storeBytes(Buffer.from(`${i} ${filler}`), {
        sourceUrl: `Binary/gen-bin-${i}`,
        contentType: "text/plain",
      })
      if ((i + 1) % 256 === 0) yield* s.commit
    }
    yield* s.commit
  }).pipe(Effect.scoped, Effect.runPromise)

const create = async (out: string) => {
  mkdirSync(out, { recursive: true })
  for (let i = 0; i < PATIENTS; i++)
    closeSync(
      openSync(join(out, String(i)), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600),
    )
}

const main = async () => {
  const dir = mkdtempSync(join(tmpdir(), "ferry-bench-attachments-"))
  const sandbox = await startSandbox(join(dir, "db.sqlite"))
  try {
    await bare(sandbox.baseUrl) // warm-up: the sandbox's caches, both sides' connections
    const rows: Array<string> = []
    const per = (s: number) => ((s / PATIENTS) * 1e6).toFixed(0)
    const timed = async (f: () => Promise<unknown>) => {
      const t = now()
      const c = cpu()
      await f()
      const wall = secs(t)
      return { wall, text: `${wall.toFixed(2)} s, ${per(cpu() - c)} µs` }
    }
    for (let round = 1; round <= ROUNDS; round++) {
      const b = await timed(() => bare(sandbox.baseUrl))
      const g = await timed(() => fhirGet(sandbox.baseUrl))
      const s = await timed(() => store(join(dir, `store-${round}`)))
      const c = await timed(() => create(join(dir, `create-${round}`)))
      const f = await timed(() => ferry(sandbox.baseUrl, join(dir, `archive-${round}`)))
      const row = `| ${round} | ${b.text} | ${g.text} | ${s.text} | ${c.text} | ${f.text} | ${(b.wall / f.wall).toFixed(2)}× |`
      console.log(row)
      rows.push(row)
    }
    console.log(`\n${PATIENTS} attachments, ${PARALLEL} in flight; wall time, and CPU per attachment`)
    console.log(
      "| Round | Bare GETs | FhirClient.get | Blob store alone | Empty files created | Ferry fetcher | Fetcher ÷ bare (rate) |\n|---|---|---|---|---|---|---|",
    )
    for (const r of rows) console.log(r)
  } finally {
    await sandbox.stop()
    agent.destroy()
    rmSync(dir, { recursive: true, force: true })
  }
}

await main()
