import type { Router } from "../Http.js"
import { contributeCapability } from "../Rest.js"

/** Adds operations to the CapabilityStatement's `rest[0].operation` (and the bulk-data instantiates). */
export const addOperations = (
  router: Router,
  operations: ReadonlyArray<{ readonly name: string; readonly definition: string }>,
): void =>
  contributeCapability(router, (cs) => {
    const rest = (cs.rest as Array<Record<string, unknown>> | undefined)?.[0]
    if (rest === undefined) return
    const list = Array.isArray(rest.operation) ? (rest.operation as Array<unknown>) : []
    rest.operation = [...list, ...operations]
    const inst = Array.isArray(cs.instantiates) ? (cs.instantiates as Array<unknown>) : []
    const bulk = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
    if (!inst.includes(bulk)) cs.instantiates = [...inst, bulk]
  })
