/**
 * `$import` for the sandbox, in the two shapes Ferry drives:
 *   1. the SMART bulk-import manifest draft: plain JSON
 *      `{ inputFormat, inputSource, storageDetail?, input: [{ type, url }] }`
 *   2. HAPI's `Parameters`: `inputFormat`, `inputSource`, `storageDetail` (parts `type`,
 *      `credentialHttpBasic`, `maxBatchResourceCount`), repeated `input` (parts `type`, `url`).
 *
 * Routes (below the FHIR base):
 *   POST   /$import                        kick-off (needs `Prefer: respond-async`) → 202 + Content-Location
 *   GET    /bulk/import-status/:job        202 + X-Progress + Retry-After while running, then 200 result
 *   DELETE /bulk/import-status/:job        cancel (202), then 404
 *   GET    /bulk/import-files/:job/:name   NDJSON OperationOutcome files named by the result
 *
 * The server GETs each input URL (with `Authorization: Bearer …` from `storageDetail.accessToken`
 * (a sandbox extension) or the `bulk.importFetchToken` config, or `Basic …` from HAPI's
 * `credentialHttpBasic`) and streams it line by line. Each line is parsed and checked (JSON, a
 * resource of the input's `type`, the config's `rejectRule`); rejected lines go to an error file as
 * one OperationOutcome per line naming the input URL and line number; the rest are written with
 * update-as-create semantics keeping their ids, in transactions of 1,000. With `refuseClientIds`
 * the server assigns ids instead, marks each resource with the `import-source` meta extension, and
 * lists `Type/old → Type/new` in the input's success file (`output[].url`). `meta.source` is filled
 * from `inputSource` when empty.
 *
 * Result (200): `{ transactionTime, request, requiresAccessToken, output: [{ type, inputUrl, count,
 * url }], error: [{ type: "OperationOutcome", inputUrl, count, url }] }`.
 */
import { closeSync, openSync, writeSync } from "node:fs"
import { join } from "node:path"
import { r4ResourceTypes } from "./Compartment.js"
import { describeRule, rejectedBy, type SandboxConfig } from "./Config.js"
import { faultsOf } from "./Faults.js"
import { type Ctx, FhirHttpError, outcome, type Router, sendJson } from "./Http.js"
import { addOperations } from "./internal/bulkCapability.js"
import { type BulkConfig, type BulkConfigInput, decodeBulkConfig } from "./internal/bulkConfig.js"
import { JobDirs, serveFile } from "./internal/bulkFiles.js"
import { parsePrefer } from "./BulkExport.js"
import { grantOf, requestAllows, smartOf } from "./Smart.js"
import type { Store } from "./Store.js"
import { parseKeepingNumbers } from "@ferry/core/NumberText"

export interface ImportInput {
  readonly type: string
  readonly url: string
}

export interface ImportRequest {
  readonly shape: "manifest" | "parameters"
  readonly inputFormat: string
  readonly inputSource: string | undefined
  readonly input: ReadonlyArray<ImportInput>
  /** The `Authorization` header value to send when fetching inputs. */
  readonly authorization: string | undefined
}

export interface ImportResultItem {
  readonly type: string
  readonly inputUrl: string
  readonly count: number
  readonly url?: string
}

interface Job {
  readonly id: string
  readonly dir: string
  readonly request: string
  readonly transactionTime: string
  readonly requiresAccessToken: boolean
  /** The client that started the job (auth on), the only one its status is for. */
  readonly owner: string | undefined
  state: "running" | "done" | "failed"
  cancelled: boolean
  polls: number
  fileIndex: number
  lines: number
  completedAt: number
  failure: string | undefined
  readonly output: Array<ImportResultItem>
  readonly error: Array<ImportResultItem & { readonly type: "OperationOutcome" }>
  readonly files: Map<string, string>
}

const FORMATS = new Set(["application/fhir+ndjson", "application/ndjson", "ndjson"])
const ID = /^[A-Za-z0-9\-.]{1,64}$/
const BATCH = 1_000
const IMPORT_SOURCE = "http://hl7.org/fhir/StructureDefinition/import-source"

const bad = (diagnostics: string): FhirHttpError => new FhirHttpError(400, "invalid", diagnostics)

const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined)

const partValue = (p: Record<string, unknown>): string | undefined => {
  for (const [k, v] of Object.entries(p)) {
    if (k.startsWith("value") && (typeof v === "string" || typeof v === "number" || typeof v === "boolean")) {
      return String(v)
    }
  }
  return undefined
}

const checkInput = (type: unknown, url: unknown, at: string): ImportInput => {
  if (typeof type !== "string" || !r4ResourceTypes.has(type)) {
    throw bad(`${at}: type must be an R4 resource type, got ${JSON.stringify(type)}.`)
  }
  if (typeof url !== "string" || !/^https?:\/\//.test(url)) {
    throw bad(`${at}: url must be an absolute http(s) URL, got ${JSON.stringify(url)}.`)
  }
  return { type, url }
}

/** Reads either accepted body shape into an ImportRequest; throws 400 on anything else. */
export const parseImportRequest = (body: unknown, fallbackToken: string | undefined): ImportRequest => {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw bad("The $import body must be a JSON object (manifest) or a Parameters resource.")
  }
  const o = body as Record<string, unknown>
  let inputFormat: string | undefined
  let inputSource: string | undefined
  let storageType: string | undefined
  let token: string | undefined
  let basic: string | undefined
  const input: Array<ImportInput> = []
  let shape: ImportRequest["shape"]
  if (o.resourceType === "Parameters") {
    shape = "parameters"
    const params = Array.isArray(o.parameter) ? (o.parameter as Array<unknown>) : []
    params.forEach((raw, i) => {
      if (typeof raw !== "object" || raw === null) throw bad(`parameter[${i}] must be an object.`)
      const p = raw as Record<string, unknown>
      const parts = (Array.isArray(p.part) ? p.part : []) as Array<Record<string, unknown>>
      const part = (name: string) => {
        const found = parts.find((x) => x.name === name)
        return found === undefined ? undefined : partValue(found)
      }
      switch (p.name) {
        case "inputFormat":
          inputFormat = partValue(p)
          break
        case "inputSource":
          inputSource = partValue(p)
          break
        case "storageDetail":
          storageType = part("type")
          basic = part("credentialHttpBasic")
          token = part("accessToken")
          break
        case "input":
          input.push(checkInput(part("type"), part("url"), `input[${input.length}]`))
          break
        default:
          break // HAPI-specific tuning parameters (e.g. maxBatchResourceCount) are accepted and ignored
      }
    })
  } else {
    shape = "manifest"
    inputFormat = str(o.inputFormat)
    inputSource = str(o.inputSource)
    if (o.storageDetail !== undefined) {
      if (typeof o.storageDetail !== "object" || o.storageDetail === null)
        throw bad("storageDetail must be an object.")
      const sd = o.storageDetail as Record<string, unknown>
      storageType = str(sd.type)
      token = str(sd.accessToken)
    }
    if (!Array.isArray(o.input)) throw bad("The $import manifest needs an input array of {type, url}.")
    o.input.forEach((raw: unknown, i: number) => {
      const item = (typeof raw === "object" && raw !== null ? raw : {}) as Record<string, unknown>
      input.push(checkInput(item.type, item.url, `input[${i}]`))
    })
  }
  if (inputFormat === undefined) throw bad("inputFormat is required (application/fhir+ndjson).")
  if (!FORMATS.has(inputFormat))
    throw bad(`inputFormat ${inputFormat} is not supported; use application/fhir+ndjson.`)
  if (storageType !== undefined && storageType !== "https" && storageType !== "http") {
    throw bad(`storageDetail type ${storageType} is not supported here; use https (a plain URL).`)
  }
  if (input.length === 0) throw bad("$import needs at least one input.")
  const authorization =
    token !== undefined
      ? `Bearer ${token}`
      : basic !== undefined
        ? `Basic ${Buffer.from(basic, "utf8").toString("base64")}`
        : fallbackToken !== undefined
          ? `Bearer ${fallbackToken}`
          : undefined
  return { shape, inputFormat, inputSource, input, authorization }
}

/** Appends NDJSON lines to one file, opened on the first line. */
class LineFile {
  private fd: number | undefined
  count = 0
  constructor(readonly path: string) {}
  add(value: unknown): void {
    this.fd ??= openSync(this.path, "w", 0o600)
    writeSync(this.fd, `${JSON.stringify(value)}\n`)
    this.count++
  }
  close(): boolean {
    if (this.fd === undefined) return false
    closeSync(this.fd)
    this.fd = undefined
    return true
  }
}

const issueLine = (severity: string, code: string, diagnostics: string, location?: string) => ({
  resourceType: "OperationOutcome",
  issue: [{ severity, code, diagnostics, ...(location !== undefined ? { location: [location] } : {}) }],
})

export interface BulkImport {
  readonly close: () => void
}

/** Installs `$import`; `options` (or the config's `bulk` section) tunes polling and the fetch token. */
export const register = (
  router: Router,
  store: Store,
  config: SandboxConfig & { readonly bulk?: unknown },
  options?: BulkConfigInput,
): BulkImport => {
  const settings: BulkConfig = decodeBulkConfig({ ...(config.bulk as object | undefined), ...options })
  const dirs = new JobDirs(settings.tempDir, "ferry-sandbox-import-")
  const jobs = new Map<string, Job>()
  const faults = faultsOf(router)
  let sequence = 0

  const loadFile = async (
    job: Job,
    req: ImportRequest,
    input: ImportInput,
    index: number,
    baseUrl: string,
  ) => {
    const fileUrl = (name: string) => `${baseUrl}/bulk/import-files/${job.id}/${name}`
    const errName = `${input.type}.${String(index).padStart(3, "0")}.error.ndjson`
    const okName = `${input.type}.${String(index).padStart(3, "0")}.outcome.ndjson`
    const errors = new LineFile(join(job.dir, errName))
    const infos = new LineFile(join(job.dir, okName))
    let stored = 0
    const finish = () => {
      if (infos.count === 0) {
        infos.add(issueLine("information", "informational", `${input.url}: ${stored} ${input.type} stored.`))
      }
      infos.close()
      job.files.set(okName, infos.path)
      job.output.push({ type: input.type, inputUrl: input.url, count: stored, url: fileUrl(okName) })
      if (errors.close()) {
        job.files.set(errName, errors.path)
        job.error.push({
          type: "OperationOutcome",
          inputUrl: input.url,
          count: errors.count,
          url: fileUrl(errName),
        })
      }
    }
    let response: Response
    try {
      response = await fetch(input.url, {
        headers: {
          accept: "application/fhir+ndjson",
          ...(req.authorization !== undefined ? { authorization: req.authorization } : {}),
        },
      })
    } catch (cause) {
      errors.add(
        issueLine(
          "error",
          "exception",
          `${input.url}: could not fetch the file (${String(cause)}).`,
          input.url,
        ),
      )
      return finish()
    }
    if (!response.ok || response.body === null) {
      errors.add(
        issueLine(
          "error",
          "exception",
          `${input.url}: fetching the file answered HTTP ${response.status}.`,
          input.url,
        ),
      )
      await response.body?.cancel()
      return finish()
    }
    let batch: Array<Record<string, unknown>> = []
    const flush = () => {
      if (batch.length === 0) return
      const items = batch
      batch = []
      store.tx(() => {
        for (const r of items) {
          const oldId = typeof r.id === "string" ? r.id : undefined
          if (oldId !== undefined && !config.refuseClientIds) {
            store.update(r as Record<string, unknown> & { id: string })
          } else {
            if (oldId !== undefined) {
              const meta = (typeof r.meta === "object" && r.meta !== null ? r.meta : {}) as Record<
                string,
                unknown
              >
              const ext = Array.isArray(meta.extension) ? meta.extension : []
              r.meta = {
                ...meta,
                extension: [
                  ...ext,
                  {
                    url: IMPORT_SOURCE,
                    valueIdentifier: {
                      system: req.inputSource ?? input.url,
                      value: `${input.type}/${oldId}`,
                    },
                  },
                ],
              }
              delete r.id
            }
            const created = store.create(r)
            if (oldId !== undefined) {
              infos.add(
                issueLine(
                  "information",
                  "informational",
                  `${input.type}/${oldId} was stored as ${input.type}/${created.id} (this server assigns ids).`,
                ),
              )
            }
          }
          stored++
        }
      })
    }
    const handleLine = (text: string, lineNo: number) => {
      job.lines++
      if (text.trim() === "") return
      const at = `${input.url} line ${lineNo}`
      let parsed: unknown
      try {
        parsed = parseKeepingNumbers(text)
      } catch (e) {
        errors.add(issueLine("error", "structure", `${at}: not valid JSON (${(e as Error).message}).`, at))
        return
      }
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
        errors.add(issueLine("error", "structure", `${at}: not a JSON object.`, at))
        return
      }
      const r = parsed as Record<string, unknown>
      if (r.resourceType !== input.type) {
        errors.add(
          issueLine(
            "error",
            "invalid",
            `${at}: resourceType ${String(r.resourceType)} does not match the input type ${input.type}.`,
            at,
          ),
        )
        return
      }
      if (r.id !== undefined && (typeof r.id !== "string" || !ID.test(r.id))) {
        errors.add(
          issueLine("error", "invalid", `${at}: id ${JSON.stringify(r.id)} is not a valid FHIR id.`, at),
        )
        return
      }
      const rule = rejectedBy(config, r)
      if (rule !== undefined) {
        errors.add(issueLine("error", "business-rule", `${at}: ${describeRule(rule)}.`, at))
        return
      }
      if (req.inputSource !== undefined) {
        const meta = (typeof r.meta === "object" && r.meta !== null ? r.meta : {}) as Record<string, unknown>
        if (meta.source === undefined) r.meta = { ...meta, source: req.inputSource }
      }
      batch.push(r)
      if (batch.length >= BATCH) flush()
    }
    let rest = ""
    let lineNo = 0
    const decoder = new TextDecoder()
    try {
      for await (const chunk of response.body) {
        if (job.cancelled) return
        const text = rest + decoder.decode(chunk as Uint8Array, { stream: true })
        const lines = text.split("\n")
        rest = lines.pop() ?? ""
        for (const line of lines) handleLine(line.endsWith("\r") ? line.slice(0, -1) : line, ++lineNo)
        flush()
      }
    } catch (cause) {
      flush()
      errors.add(
        issueLine(
          "error",
          "exception",
          `${input.url}: the download broke off after line ${lineNo} (${String(cause)}).`,
          input.url,
        ),
      )
      return finish()
    }
    rest += decoder.decode()
    if (rest !== "") handleLine(rest, ++lineNo)
    flush()
    finish()
  }

  const run = async (job: Job, req: ImportRequest, baseUrl: string) => {
    for (const [i, input] of req.input.entries()) {
      if (job.cancelled) return
      job.fileIndex = i + 1
      await loadFile(job, req, input, i, baseUrl)
    }
    job.state = "done"
    job.completedAt = Date.now()
  }

  addOperations(router, [
    {
      name: "import",
      definition: "https://github.com/smart-on-fhir/bulk-import/blob/master/import-manifest.md",
    },
  ])

  router.on("POST", "/$import", async (ctx) => {
    if (!parsePrefer(String(ctx.req.headers.prefer ?? "")).respondAsync) {
      throw bad("$import needs the header Prefer: respond-async.")
    }
    const req = parseImportRequest(await ctx.json(), settings.importFetchToken)
    for (const input of req.input) {
      if (!requestAllows(ctx.req, input.type, "c") || !requestAllows(ctx.req, input.type, "u")) {
        throw new FhirHttpError(403, "forbidden", `The access token does not allow writing ${input.type}.`)
      }
    }
    const id = `${Date.now().toString(36)}${(++sequence).toString(36)}`
    const job: Job = {
      id,
      dir: dirs.make(id),
      request: ctx.url.href,
      transactionTime: store.now(),
      requiresAccessToken: smartOf(router) !== undefined,
      owner: grantOf(ctx.req)?.clientId,
      state: "running",
      cancelled: false,
      polls: 0,
      fileIndex: 0,
      lines: 0,
      completedAt: 0,
      failure: undefined,
      output: [],
      error: [],
      files: new Map(),
    }
    jobs.set(id, job)
    run(job, req, ctx.baseUrl).catch((e: unknown) => {
      job.state = "failed"
      job.failure = e instanceof Error ? e.message : String(e)
    })
    sendJson(
      ctx,
      202,
      outcome("information", "informational", `Import job ${id} accepted (${req.input.length} files).`),
      {
        "Content-Location": `${ctx.baseUrl}/bulk/import-status/${id}`,
      },
    )
  })

  /** The job a status or DELETE names; with auth on, only for the client that started it (else a 404). */
  const jobOf = (ctx: Ctx): Job => {
    const job = jobs.get(ctx.params.job ?? "")
    const caller = grantOf(ctx.req)?.clientId
    if (job === undefined || job.cancelled || (caller !== undefined && job.owner !== caller)) {
      throw new FhirHttpError(
        404,
        "not-found",
        `Import job ${ctx.params.job} does not exist (or was deleted).`,
      )
    }
    return job
  }

  router.on("GET", "/bulk/import-status/:job", (ctx) => {
    const job = jobOf(ctx)
    if (faults.failJobs && job.state !== "failed") {
      job.state = "failed"
      job.failure = "it could not be completed (the sandbox's failJobs fault)"
    }
    // a failed job is not a transient failure of the status request: not `exception` (a child of `transient`)
    if (job.state === "failed")
      throw new FhirHttpError(500, "processing", `Import job ${job.id} failed: ${job.failure}`)
    if (job.state === "running" || job.polls < settings.pollsBeforeDone) {
      job.polls++
      ctx.res.writeHead(202, {
        "X-Progress": `${job.state === "running" ? "importing" : "finishing"}: file ${job.fileIndex}, ${job.lines} lines read`,
        "Retry-After": String(settings.retryAfterSeconds),
      })
      ctx.res.end()
      return
    }
    sendJson(
      ctx,
      200,
      {
        transactionTime: job.transactionTime,
        request: job.request,
        requiresAccessToken: job.requiresAccessToken,
        output: job.output,
        error: job.error,
      },
      { "Content-Type": "application/json" },
    )
  })

  router.on("DELETE", "/bulk/import-status/:job", (ctx) => {
    const job = jobOf(ctx)
    job.cancelled = true
    dirs.remove(job.id)
    sendJson(ctx, 202, outcome("information", "informational", `Import job ${job.id} deleted.`))
  })

  router.on("GET", "/bulk/import-files/:job/:name", async (ctx) => {
    const job = jobOf(ctx)
    const path = job.state === "done" ? job.files.get(ctx.params.name ?? "") : undefined
    if (path === undefined)
      throw new FhirHttpError(404, "not-found", `No file ${ctx.params.name} in import job ${job.id}.`)
    await serveFile(
      ctx,
      path,
      { key: `import/${job.id}/${ctx.params.name}`, type: "OperationOutcome", completedAt: job.completedAt },
      faults,
    )
  })

  return {
    close: () => {
      for (const job of jobs.values()) job.cancelled = true
      dirs.close()
    },
  }
}
