/** Reference helpers shared by the store, REST search and transactions. */

const literal = /^([A-Z][A-Za-z]{1,63})\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/

/**
 * Normalizes a reference string to `Type/id` when it points at this server: relative `Type/id`
 * (optionally version-specific) or absolute under `baseUrl`. Anything else (contained `#x`,
 * `urn:uuid:`, conditional `Type?…`, other servers) gives undefined.
 */
export const normalizeReference = (reference: string, baseUrl: string | undefined): string | undefined => {
  let rest = reference
  if (baseUrl !== undefined && baseUrl !== "" && rest.startsWith(`${baseUrl}/`)) {
    rest = rest.slice(baseUrl.length + 1)
  } else if (rest.includes(":")) {
    return undefined
  }
  const m = literal.exec(rest)
  return m ? `${m[1]}/${m[2]}` : undefined
}

/**
 * Every `Reference.reference` in a resource that points at this server, with the top-level element
 * it sits under (e.g. `subject`, `participant`). Walks the whole tree, extensions included.
 */
export const extractReferences = (
  resource: Record<string, unknown>,
  baseUrl: string | undefined,
): Array<readonly [path: string, target: string]> => {
  const out: Array<readonly [string, string]> = []
  // Duplicates (same top-level element and target) are rare; a linear look-back over this element's
  // own finds is cheaper than a Set of joined keys for every resource.
  let from = 0
  const add = (top: string, target: string): void => {
    for (let i = from; i < out.length; i++) if (out[i]![1] === target) return
    out.push([top, target])
  }
  const walk = (node: unknown, top: string): void => {
    if (Array.isArray(node)) {
      for (let i = 0; i < node.length; i++) {
        const item = node[i]
        if (typeof item === "object" && item !== null) walk(item, top)
      }
      return
    }
    const o = node as Record<string, unknown>
    for (const key in o) {
      const value = o[key]
      if (typeof value === "object" && value !== null) walk(value, top)
      else if (key === "reference" && typeof value === "string") {
        const target = normalizeReference(value, baseUrl)
        if (target !== undefined) add(top, target)
      }
    }
  }
  for (const key in resource) {
    if (key === "contained" || key === "text" || key === "meta") continue
    const value = resource[key]
    if (typeof value === "object" && value !== null) {
      from = out.length
      walk(value, key)
    }
  }
  return out
}

/** Top-level `identifier` entries as `[system, value]` (system "" when absent). */
export const extractIdentifiers = (resource: Record<string, unknown>): Array<readonly [string, string]> => {
  const raw = resource.identifier
  const list = Array.isArray(raw) ? raw : raw !== undefined ? [raw] : []
  const out: Array<readonly [string, string]> = []
  for (const item of list) {
    if (typeof item !== "object" || item === null) continue
    const { system, value } = item as { system?: unknown; value?: unknown }
    if (typeof value === "string") out.push([typeof system === "string" ? system : "", value])
  }
  return out
}
