/** Shared helpers for the export integration tests: a client on a sandbox, temp dirs, archive reading. */
import { createHash } from "node:crypto"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { FetchHttpClient } from "@effect/platform"
import * as FhirClient from "@ferry/core/FhirClient"
import { Effect } from "effect"
import type * as Export from "../../src/Export.js"
import { listening } from "@ferry/core/test/helpers/loopback"

export const dataPath = (name: string): string =>
  fileURLToPath(new URL(`../../../../../shared/data/${name}`, import.meta.url))

export const synthea = dataPath("synthea-bundles")
export const sample10 = dataPath("sample-bulk-10-patients")
export const attachmentsDir = dataPath("attachments")

/** A FHIR client on `baseUrl` over fetch, with fast retries (tests must not wait minutes). */
export const clientFor = (baseUrl: string, extra: Partial<FhirClient.FhirClientOptions> = {}) =>
  FhirClient.make({ baseUrl, retry: { base: "10 millis", times: 8 }, ...extra }).pipe(
    Effect.provide(FetchHttpClient.layer),
  )

/** `clientFor`, recording every request's URL with its query (`searches`) as it is sent. */
export const recordingClient = (baseUrl: string) =>
  Effect.gen(function* () {
    const searches: Array<string> = []
    const client = yield* clientFor(baseUrl, {
      authorize: (request) =>
        Effect.sync(() => {
          const query = new URLSearchParams(request.urlParams.map(([k, v]): [string, string] => [k, v]))
          searches.push(`${request.url}?${query.toString()}`)
          return request
        }),
    })
    return { client, searches }
  })

/** A fresh temp directory (removed when the scope closes). */
export const tempDir = Effect.acquireRelease(
  Effect.sync(() => NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-export-test-"))),
  (dir) => Effect.sync(() => NFS.rmSync(dir, { recursive: true, force: true })),
)

/** Replaces the sandbox's fault switches (and resets their counters). */
export const setFaults = (baseUrl: string, faults: unknown) =>
  Effect.promise(async () => {
    const r = await fetch(`${baseUrl}/_sandbox/faults`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(faults),
    })
    if (r.status !== 204) throw new Error(`setting faults failed: ${r.status} ${await r.text()}`)
  })

export const sha256File = (path: string): string =>
  createHash("sha256").update(NFS.readFileSync(path)).digest("hex")

/** Lines of an NDJSON file, parsed. */
export const readNdjson = (
  path: string,
): Array<{ resourceType: string; id?: string; [k: string]: unknown }> =>
  NFS.readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as { resourceType: string; id?: string })

/** `Type/id` → count of every resource in an archive's data files. */
export const dataKeys = (out: string): Map<string, number> => {
  const keys = new Map<string, number>()
  for (const f of NFS.readdirSync(Path.join(out, "data"))) {
    if (!f.endsWith(".ndjson")) continue
    for (const r of readNdjson(Path.join(out, "data", f))) {
      const k = `${r.resourceType}/${r.id}`
      keys.set(k, (keys.get(k) ?? 0) + 1)
    }
  }
  return keys
}

/** A sorted list of every data line (for "same content" comparisons). */
export const dataLines = (out: string): Array<string> => {
  const lines: Array<string> = []
  for (const f of NFS.readdirSync(Path.join(out, "data"))) {
    if (!f.endsWith(".ndjson")) continue
    for (const l of NFS.readFileSync(Path.join(out, "data", f), "utf8").split("\n"))
      if (l.trim() !== "") lines.push(l)
  }
  return lines.sort()
}

/** The events of an archive's `events.ndjson`. */
export const events = (out: string): Array<Export.ExportEvent> =>
  readNdjson(Path.join(out, "events.ndjson")) as unknown as Array<Export.ExportEvent>

/** Resource counts per type in a sandbox store (types with at least one resource). */
export const storeCounts = (store: {
  types(): string[]
  count(type: string): number
}): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const t of store.types()) {
    const n = store.count(t)
    if (n > 0) out[t] = n
  }
  return out
}

export const typeCounts = (summary: Export.ExportSummary): Record<string, number> =>
  Object.fromEntries(Object.entries(summary.types).map(([t, s]) => [t, s.resources]))

/** A plain HTTP server on loopback for the scope (a source that behaves in one particular way); its origin. */
export const loopbackServer = (handler: Http.RequestListener) =>
  Effect.gen(function* () {
    const server = Http.createServer(handler)
    yield* listening(server)
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
