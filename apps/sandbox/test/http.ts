/** Test helpers: HTTP calls as Effects, and paths to the shared test data. */
import { fileURLToPath } from "node:url"
import { Effect } from "effect"

export interface Reply {
  readonly status: number
  readonly headers: Headers
  readonly bytes: Buffer
  readonly text: string
  readonly body: unknown
}

export const call = (url: string, init: RequestInit = {}): Effect.Effect<Reply> =>
  Effect.promise(async () => {
    const r = await fetch(url, init)
    const bytes = Buffer.from(await r.arrayBuffer())
    const text = bytes.toString("utf8")
    let body: unknown
    try {
      body = text === "" ? undefined : JSON.parse(text)
    } catch {
      body = undefined
    }
    return { status: r.status, headers: r.headers, bytes, text, body }
  })

export const fhirJson = (
  method: string,
  body: unknown,
  headers: Record<string, string> = {},
): RequestInit => ({
  method,
  headers: { "Content-Type": "application/fhir+json", ...headers },
  body: JSON.stringify(body),
})

export const dataPath = (sub: string): string =>
  fileURLToPath(new URL(`../../../../shared/data/${sub}`, import.meta.url))

/** The value at a dotted path (`entry.0.resource.id`, `entry.length`). */
export const at = (node: unknown, path: string): unknown => {
  let cur = node
  for (const seg of path.split(".")) {
    if (cur === null || (typeof cur !== "object" && typeof cur !== "string")) return undefined
    cur = (cur as Record<string, unknown>)[seg]
  }
  return cur
}

export const str = (node: unknown, path: string): string => {
  const v = at(node, path)
  if (typeof v !== "string") throw new Error(`${path} is not a string: ${JSON.stringify(v)}`)
  return v
}
