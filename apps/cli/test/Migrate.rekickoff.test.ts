/**
 * `ferry migrate` (in process) when the source's files expire mid-migration: the export drops the finished
 * files of a type with unfinished ones and takes all of that type from a new job (at the same paths); a file a
 * wave already imported must be imported again from the new job, or what moved across a file boundary between
 * the jobs never reaches the target.
 */
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import { sendOutcome } from "@ferry/sandbox/Http"
import * as Sandbox from "@ferry/sandbox/Sandbox"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { ferry } from "./helpers/inProcess.js"

const tmp = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-migrate-rekickoff-"))
afterAll(() => NFS.rmSync(tmp, { recursive: true, force: true }))

const ids = Array.from({ length: 12 }, (_, i) => `p${String(i).padStart(2, "0")}`)

describe("ferry migrate across a new kick-off for expired files", () => {
  it.scopedLive(
    "a file a wave imported and the new job replaced is imported again: every current patient reaches the target",
    () =>
      Effect.gen(function* () {
        const seed = Path.join(tmp, "Patient.ndjson")
        NFS.writeFileSync(
          seed,
          `${ids.map((id) => JSON.stringify({ resourceType: "Patient", id })).join("\n")}\n`,
        )
        // the first job's second Patient file answers 410 (after a pause in which a wave imports the first
        // file), and the first patient is deleted meanwhile: the new job's files start one patient later
        let expired = false
        let sourceStore: Sandbox.SandboxHandle["store"] | undefined
        const expiring: Sandbox.Plugin = (router) =>
          router.use(async (ctx, next) => {
            if (!expired && /\/bulk\/files\/[^/]+\/Patient\.001\.ndjson$/.test(ctx.url.pathname)) {
              expired = true
              await new Promise((resolve) => setTimeout(resolve, 1500))
              sourceStore?.delete("Patient", "p00")
              sendOutcome(ctx, 410, "error", "expired", "this file has expired")
              return
            }
            await next()
          })
        const source = yield* Sandbox.start(
          { port: 0, seed: [seed], bulk: { resourcesPerFile: 4, retryAfterSeconds: 0 } } as never,
          { plugins: [expiring, ...Sandbox.defaultPlugins] },
        )
        sourceStore = source.store
        const target = yield* Sandbox.start({ port: 0 } as never)
        const archive = Path.join(tmp, "archive")
        const { code, output } = yield* ferry([
          "migrate",
          "--from",
          source.baseUrl,
          "--to",
          target.baseUrl,
          "--archive",
          archive,
          "--parallel",
          "1",
        ])
        assert.strictEqual(code, 0, output)
        assert.isTrue(expired, "the premise: a file expired")
        const events = NFS.readFileSync(Path.join(archive, "events.ndjson"), "utf8")
        assert.include(events, '"rekickoff-dropped"', "the premise: finished files were replaced")
        // p00 was deleted between the jobs (a full export carries no deletes: it stays); every other is there
        for (const id of ids.slice(1))
          assert.isDefined(target.store.read("Patient", id), `Patient/${id} on the target`)
        // a wave had imported the first file before it was replaced: the ledger says it went again
        const ledger = NFS.readdirSync(Path.join(archive, "imports"))
          .map((d) => Path.join(archive, "imports", d, "migrate.ndjson"))
          .filter((f) => NFS.existsSync(f))
          .map((f) => NFS.readFileSync(f, "utf8"))
          .join("")
        assert.include(ledger, '"migrate.replaced"', output)
      }),
    60_000,
  )
  it.scopedLive(
    "a file replaced while a wave is importing it is imported again from the new job (the wave does not count it)",
    () =>
      Effect.gen(function* () {
        const seed = Path.join(tmp, "Patient-race.ndjson")
        NFS.writeFileSync(
          seed,
          `${ids.map((id) => JSON.stringify({ resourceType: "Patient", id })).join("\n")}\n`,
        )
        // the second Patient file expires at once (and p00 is deleted), while the target holds the wave that
        // imports the first file for 2 s: the export replaces that file under the running wave
        let expired = false
        let sourceStore: Sandbox.SandboxHandle["store"] | undefined
        const expiring: Sandbox.Plugin = (router) =>
          router.use(async (ctx, next) => {
            if (!expired && /\/bulk\/files\/[^/]+\/Patient\.001\.ndjson$/.test(ctx.url.pathname)) {
              expired = true
              sourceStore?.delete("Patient", "p00")
              sendOutcome(ctx, 410, "error", "expired", "this file has expired")
              return
            }
            await next()
          })
        let held = 0
        const slow: Sandbox.Plugin = (router) =>
          router.use(async (ctx, next) => {
            if (ctx.req.method === "POST" && held === 0) {
              held++
              await new Promise((resolve) => setTimeout(resolve, 2000))
            }
            await next()
          })
        const source = yield* Sandbox.start(
          { port: 0, seed: [seed], bulk: { resourcesPerFile: 4, retryAfterSeconds: 0 } } as never,
          { plugins: [expiring, ...Sandbox.defaultPlugins] },
        )
        sourceStore = source.store
        const target = yield* Sandbox.start({ port: 0 } as never, {
          plugins: [slow, ...Sandbox.defaultPlugins],
        })
        const archive = Path.join(tmp, "archive-race")
        const { code, output } = yield* ferry([
          "migrate",
          "--from",
          source.baseUrl,
          "--to",
          target.baseUrl,
          "--archive",
          archive,
          "--parallel",
          "1",
        ])
        assert.strictEqual(code, 0, output)
        assert.isTrue(expired, "the premise: a file expired")
        assert.strictEqual(held, 1, "the premise: the first wave was held")
        for (const id of ids.slice(1))
          assert.isDefined(target.store.read("Patient", id), `Patient/${id} on the target`)
      }),
    60_000,
  )
})
