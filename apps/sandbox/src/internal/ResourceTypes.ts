import { resourceTypes } from "@ferry/core/Reference"

/** Types that are never stored: they only travel in requests and answers. */
const notStored: ReadonlySet<string> = new Set(["Parameters", "OperationOutcome"])

/** The FHIR R4 (4.0.1) resource types the sandbox stores (Parameters and OperationOutcome excluded). */
export const r4ResourceTypes: ReadonlyArray<string> = resourceTypes.filter((t) => !notStored.has(t))

const r4Set: ReadonlySet<string> = new Set(r4ResourceTypes)

export const isR4ResourceType = (type: string): boolean => r4Set.has(type)
