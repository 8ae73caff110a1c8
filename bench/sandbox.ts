/**
 * Sandbox throughput: serving a system `$export` as NDJSON, and ingesting transaction Bundles.
 *
 *   npx vite-node bench/sandbox.ts                      # 100,000 resources (≈1 minute on 2 cores)
 *   npx vite-node bench/sandbox.ts -- --resources 1000000
 *
 * 1. Generate N resources (the sandbox generator, 23 per patient) into a temp SQLite file.
 * 2. Kick off `GET /fhir/$export`, poll to the manifest (the job materialises the files), then
 *    download every output file over loopback with a bare node:http client that discards the bytes:
 *    identity, then `Accept-Encoding: gzip` (rate counted in uncompressed bytes).
 *    Same-run baselines: reading the same bytes from a local file, and a bare node:http server
 *    streaming that file.
 * 3. Ingest: POST transaction Bundles of 500 PUT entries (the same generator) into a second sandbox,
 *    2 requests in flight; resources/s.
 * Goals: ≥ 100 MB/s serving, ≥ 5,000 resources/s ingest.
 */
import { createReadStream, createWriteStream, mkdtempSync, rmSync, statSync } from "node:fs"
import { createServer, request } from "node:http"
import type { AddressInfo } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { pipeline } from "node:stream/promises"
import { createGunzip } from "node:zlib"
import * as BulkExport from "@ferry/sandbox/BulkExport"
import { generate, patientResources } from "@ferry/sandbox/Generate"
import { start } from "@ferry/sandbox/Sandbox"
import { Effect } from "effect"

const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : fallback
}

const RESOURCES = arg("resources", 100_000)
const PATIENTS = Math.ceil(RESOURCES / 23)
const BUNDLE = arg("bundle", 500)
const INFLIGHT = arg("inflight", 2)

const mb = (bytes: number) => bytes / 1e6
const secs = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9

const get = (url: string, headers: Record<string, string> = {}, sink?: NodeJS.WritableStream) =>
  new Promise<{ status: number; bytes: number; body: string }>((resolve, reject) => {
    request(url, { headers }, (res) => {
      let bytes = 0
      const keep: Buffer[] = []
      const small = sink === undefined && res.statusCode !== 200
      const source = res.headers["content-encoding"] === "gzip" ? res.pipe(createGunzip()) : res
      source.on("data", (c: Buffer) => {
        bytes += c.length
        if (small || url.includes("/bulk/status/")) keep.push(c)
        if (sink !== undefined) sink.write(c)
      })
      source.on("end", () =>
        resolve({ status: res.statusCode ?? 0, bytes, body: Buffer.concat(keep).toString() }),
      )
      source.on("error", reject)
    })
      .on("error", reject)
      .end()
  })

const post = (url: string, body: string) =>
  new Promise<number>((resolve, reject) => {
    const req = request(
      url,
      { method: "POST", headers: { "content-type": "application/fhir+json" } },
      (res) => {
        const chunks: Buffer[] = []
        res.on("data", (c: Buffer) => chunks.push(c))
        res.on("end", () => {
          if (res.statusCode !== 200)
            reject(new Error(`${res.statusCode}: ${Buffer.concat(chunks).toString().slice(0, 300)}`))
          else resolve(res.statusCode)
        })
      },
    )
    req.on("error", reject)
    req.end(body)
  })

const program = Effect.gen(function* () {
  const dir = mkdtempSync(join(tmpdir(), "ferry-bench-sandbox-"))
  yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
  let exporter: BulkExport.BulkExport | undefined
  const source = yield* start(
    { db: join(dir, "source.db") },
    {
      plugins: [
        (router, store, config) => {
          exporter = BulkExport.register(router, store, config, { pollsBeforeDone: 0, retryAfterSeconds: 0 })
        },
      ],
    },
  )
  yield* Effect.addFinalizer(() => Effect.sync(() => exporter?.close()))
  let t0 = process.hrtime.bigint()
  const generated = generate(source.store, source.baseUrl, { patients: PATIENTS })
  const genSecs = secs(t0)
  console.log(`generated ${generated.resources} resources (${PATIENTS} patients) in ${genSecs.toFixed(1)} s`)

  // Export: kick-off → manifest
  t0 = process.hrtime.bigint()
  const kick = yield* Effect.promise(
    () =>
      new Promise<string>((resolve, reject) =>
        request(`${source.baseUrl}/$export`, { headers: { prefer: "respond-async" } }, (res) => {
          res.resume()
          res.on("end", () => resolve(String(res.headers["content-location"])))
        })
          .on("error", reject)
          .end(),
      ),
  )
  let manifest: { output: Array<{ url: string; count: number }> } | undefined
  while (manifest === undefined) {
    const r = yield* Effect.promise(() => get(kick))
    if (r.status === 200) manifest = JSON.parse(r.body) as typeof manifest
    else yield* Effect.sleep("100 millis")
  }
  const jobSecs = secs(t0)
  const exported = manifest.output.reduce((n, o) => n + o.count, 0)
  console.log(
    `export job: ${exported} resources in ${manifest.output.length} files, manifest after ${jobSecs.toFixed(1)} s`,
  )

  // Serving: identity, then gzip
  const download = (headers: Record<string, string>) =>
    Effect.promise(async () => {
      const t = process.hrtime.bigint()
      let bytes = 0
      for (const o of manifest!.output) bytes += (await get(o.url, headers)).bytes
      return { bytes, seconds: secs(t) }
    })
  const warm = yield* download({})
  console.log(
    `identity: first (cold) pass ${(mb(warm.bytes) / warm.seconds).toFixed(0)} MB/s, then 3 measured passes`,
  )
  const passes = [yield* download({}), yield* download({}), yield* download({})]
  const rates = passes.map((p) => mb(p.bytes) / p.seconds).sort((a, b) => a - b)
  const plain = passes[0]!
  const gz = yield* download({ "accept-encoding": "gzip" })

  // Baselines on the same bytes, file by file: reading the local copies, and a bare node:http server
  // streaming them (one request per file, like the sandbox)
  const files: Array<string> = []
  for (const [i, o] of manifest.output.entries()) {
    const file = join(dir, `copy.${i}.ndjson`)
    const out = createWriteStream(file)
    yield* Effect.promise(() => get(o.url, {}, out))
    yield* Effect.promise(() => new Promise<void>((r) => out.end(() => r())))
    files.push(file)
  }
  const size = files.reduce((n, f) => n + statSync(f).size, 0)
  t0 = process.hrtime.bigint()
  yield* Effect.promise(async () => {
    let n = 0
    for (const file of files) {
      for await (const c of createReadStream(file, { highWaterMark: 1 << 20 })) n += (c as Buffer).length
    }
    return n
  })
  const fileSecs = secs(t0)
  const bare = createServer((req, res) => {
    const file = files[Number((req.url ?? "/0").slice(1))]!
    res.writeHead(200, { "content-length": String(statSync(file).size) })
    void pipeline(createReadStream(file, { highWaterMark: 1 << 20 }), res)
  })
  yield* Effect.promise(() => new Promise<void>((r) => bare.listen(0, "127.0.0.1", () => r())))
  const barePort = (bare.address() as AddressInfo).port
  const bareRates: Array<number> = []
  for (let pass = 0; pass < 3; pass++) {
    t0 = process.hrtime.bigint()
    for (let i = 0; i < files.length; i++)
      yield* Effect.promise(() => get(`http://127.0.0.1:${barePort}/${i}`))
    bareRates.push(mb(size) / secs(t0))
  }
  bareRates.sort((a, b) => a - b)
  bare.close()

  // Ingest: transaction Bundles of PUT entries into a second sandbox
  const target = yield* start({ db: join(dir, "target.db") })
  const orgs = Math.max(1, Math.ceil(PATIENTS / 100))
  const pracs = Math.max(1, Math.ceil(PATIENTS / 20))
  const entriesFor = function* () {
    for (let i = 0; i < PATIENTS; i++) {
      const { resources, binary } = patientResources(i, 1, target.baseUrl, orgs, pracs)
      yield {
        resourceType: "Binary",
        id: binary.id,
        contentType: "text/plain",
        data: binary.bytes.toString("base64"),
      } as Record<string, unknown> & { id: string }
      yield* resources
    }
  }
  const bundles = (function* () {
    let entry: Array<unknown> = []
    for (const r of entriesFor()) {
      entry.push({ resource: r, request: { method: "PUT", url: `${r.resourceType}/${r.id}` } })
      if (entry.length === BUNDLE) {
        yield {
          n: entry.length,
          body: JSON.stringify({ resourceType: "Bundle", type: "transaction", entry }),
        }
        entry = []
      }
    }
    if (entry.length > 0)
      yield { n: entry.length, body: JSON.stringify({ resourceType: "Bundle", type: "transaction", entry }) }
  })()
  t0 = process.hrtime.bigint()
  const ingested = yield* Effect.promise(async () => {
    let total = 0
    const worker = async () => {
      for (let next = bundles.next(); !next.done; next = bundles.next()) {
        await post(target.baseUrl, next.value.body)
        total += next.value.n
      }
    }
    await Promise.all(Array.from({ length: INFLIGHT }, worker))
    return total
  })
  const ingestSecs = secs(t0)
  const stored = target.store.countAll()

  const rows: Array<[string, string]> = [
    [
      "resources exported",
      `${exported} in ${manifest.output.length} files (${mb(plain.bytes).toFixed(0)} MB)`,
    ],
    [
      "export job (kick-off → manifest)",
      `${jobSecs.toFixed(1)} s (${Math.round(exported / jobSecs)} resources/s)`,
    ],
    [
      "serve NDJSON, identity (3 passes: median, best)",
      `${rates[1]!.toFixed(0)} MB/s, ${rates[2]!.toFixed(0)} MB/s`,
    ],
    ["serve NDJSON, gzip (uncompressed MB)", `${(mb(gz.bytes) / gz.seconds).toFixed(0)} MB/s`],
    ["baseline: read the same files from disk", `${(mb(size) / fileSecs).toFixed(0)} MB/s`],
    [
      "baseline: bare node:http streaming the same files (median, best)",
      `${bareRates[1]!.toFixed(0)} MB/s, ${bareRates[2]!.toFixed(0)} MB/s`,
    ],
    [
      `ingest: transaction Bundles of ${BUNDLE} PUTs, ${INFLIGHT} in flight`,
      `${Math.round(ingested / ingestSecs)} resources/s (${ingested} in ${ingestSecs.toFixed(1)} s; stored ${stored})`,
    ],
    [
      "generator straight into the store (for reference)",
      `${Math.round(generated.resources / genSecs)} resources/s`,
    ],
  ]
  console.log("")
  for (const [k, v] of rows) console.log(`| ${k} | ${v} |`)
})

Effect.runPromise(Effect.scoped(program)).catch((e: unknown) => {
  console.error(e)
  process.exitCode = 1
})
