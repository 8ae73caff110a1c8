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

/**
 * A migration of 12 patients in files of 4 whose first job's second file answers 410 once (after `pauseMs`),
 * p00 deleted meanwhile: the new job's files start one patient later. `targetPlugins` go before the target's own.
 */
const acrossExpiry = (name: string, pauseMs: number, targetPlugins: ReadonlyArray<Sandbox.Plugin> = []) =>
  Effect.gen(function* () {
    const seed = Path.join(tmp, `${name}-Patient.ndjson`)
    NFS.writeFileSync(
      seed,
      `${ids.map((id) => JSON.stringify({ resourceType: "Patient", id })).join("\n")}\n`,
    )
    let expired = false
    let sourceStore: Sandbox.SandboxHandle["store"] | undefined
    const expiring: Sandbox.Plugin = (router) =>
      router.use(async (ctx, next) => {
        if (!expired && /\/bulk\/files\/[^/]+\/Patient\.001\.ndjson$/.test(ctx.url.pathname)) {
          expired = true
          if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs))
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
    const target = yield* Sandbox.start({ port: 0 } as never, {
      plugins: [...targetPlugins, ...Sandbox.defaultPlugins],
    })
    const archive = Path.join(tmp, name)
    const run = yield* ferry([
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
    assert.strictEqual(run.code, 0, run.output)
    assert.isTrue(expired, "the premise: a file expired")
    // p00 was deleted between the jobs (a full export carries no deletes: it stays); every other is there
    for (const id of ids.slice(1))
      assert.isDefined(target.store.read("Patient", id), `Patient/${id} on the target`)
    return { archive, output: run.output }
  })

describe("ferry migrate across a new kick-off for expired files", () => {
  it.scopedLive(
    "a file a wave imported and the new job replaced is imported again: every current patient reaches the target",
    () =>
      Effect.gen(function* () {
        // the pause lets a wave import the first file before the second one expires
        const { archive, output } = yield* acrossExpiry("imported", 1500)
        const events = NFS.readFileSync(Path.join(archive, "events.ndjson"), "utf8")
        assert.include(events, '"rekickoff-dropped"', "the premise: finished files were replaced")
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
        // the target holds the first wave 2 s: the second file expires at once, under the running wave
        let held = 0
        const slow: Sandbox.Plugin = (router) =>
          router.use(async (ctx, next) => {
            if (ctx.req.method === "POST" && held === 0) {
              held++
              await new Promise((resolve) => setTimeout(resolve, 2000))
            }
            await next()
          })
        yield* acrossExpiry("under-a-wave", 0, [slow])
        assert.strictEqual(held, 1, "the premise: the first wave was held")
      }),
    60_000,
  )
})
