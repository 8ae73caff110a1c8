/**
 * Sandbox configuration (JSON file `--config f.json`, flags override it). Every field is optional.
 * `faults` and `auth` are opaque here: Faults.ts and Smart.ts decode them.
 */
import { Schema } from "effect"

/**
 * Entry-level rejection (422 with an OperationOutcome, in REST writes and in Bundle entries) of
 * resources matching every given condition:
 * - `type`: the resourceType (any type when absent);
 * - `missing`: a dotted path (e.g. `"status"`, `"code.coding.0.system"`) whose value is absent;
 * - `path` + `equals`: a dotted path whose value equals `equals` (deep JSON equality).
 */
export const RejectRule = Schema.Struct({
  type: Schema.optional(Schema.String),
  missing: Schema.optional(Schema.String),
  path: Schema.optional(Schema.String),
  equals: Schema.optional(Schema.Unknown),
  message: Schema.optional(Schema.String),
})
export type RejectRule = typeof RejectRule.Type

export const SandboxConfig = Schema.Struct({
  host: Schema.optionalWith(Schema.String, { default: () => "127.0.0.1" }),
  port: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.between(0, 65535)), { default: () => 0 }),
  /** A SQLite file path or ":memory:". */
  db: Schema.optionalWith(Schema.String, { default: () => ":memory:" }),
  /** The FHIR base path; the base URL is `http://host:port${basePath}`. */
  basePath: Schema.optionalWith(Schema.String.pipe(Schema.pattern(/^(\/[A-Za-z0-9\-._~]+)*$/)), {
    default: () => "/fhir",
  }),
  seed: Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] }),
  generate: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.nonNegative())),
  /** Bundles with more entries are refused with 413. */
  maxBundleEntries: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.positive())),
  /** Refuse update-as-create (PUT of an id that does not exist) with 405, in REST and in Bundles. */
  refuseClientIds: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /**
   * OR comma-separated search values (`_id=a,b`, `patient=Patient/a,Patient/b`), as FHIR search asks; false: a
   * server that reads `a,b` as one value (and so finds nothing); "first": one that reads only the first value.
   */
  searchOr: Schema.optionalWith(Schema.Union(Schema.Boolean, Schema.Literal("first")), {
    default: () => true,
  }),
  rejectRule: Schema.optional(Schema.Union(RejectRule, Schema.Array(RejectRule))),
  pageSize: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.positive()), { default: () => 50 }),
  maxPageSize: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.positive()), {
    default: () => 1000,
  }),
  /** Largest accepted request body. */
  maxBodyBytes: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.positive()), {
    default: () => 512 * 1024 * 1024,
  }),
  /** Opaque here; decoded by Faults.ts. */
  faults: Schema.optional(Schema.Unknown),
  /** Opaque here; decoded by Smart.ts. */
  auth: Schema.optional(Schema.Unknown),
  /** Opaque here; decoded by BulkExport.ts / BulkImport.ts (internal/bulkConfig.ts). */
  bulk: Schema.optional(Schema.Unknown),
})
export type SandboxConfig = typeof SandboxConfig.Type
export type SandboxConfigInput = typeof SandboxConfig.Encoded

export const decodeConfig = Schema.decodeUnknown(SandboxConfig)

/** The value at a dotted path (`a.b.0.c`); arrays are indexed by number segments. */
export const valueAt = (node: unknown, path: string): unknown => {
  let cur = node
  for (const seg of path.split(".")) {
    if (cur === null || typeof cur !== "object") return undefined
    cur = (cur as Record<string, unknown>)[seg]
  }
  return cur
}

const deepEqual = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b)

/** The rule a resource breaks, if any. */
export const rejectedBy = (
  config: SandboxConfig,
  resource: Record<string, unknown>,
): RejectRule | undefined => {
  const rules =
    config.rejectRule === undefined
      ? []
      : Array.isArray(config.rejectRule)
        ? config.rejectRule
        : [config.rejectRule]
  for (const rule of rules as ReadonlyArray<RejectRule>) {
    if (rule.type !== undefined && rule.type !== resource.resourceType) continue
    if (rule.missing !== undefined && valueAt(resource, rule.missing) !== undefined) continue
    if (rule.path !== undefined && !deepEqual(valueAt(resource, rule.path), rule.equals)) continue
    return rule
  }
  return undefined
}

export const describeRule = (rule: RejectRule): string =>
  rule.message ??
  `Resource rejected by the sandbox rule${rule.type ? ` for ${rule.type}` : ""}${rule.missing ? `: ${rule.missing} is required` : ""}${rule.path ? `: ${rule.path} must not equal ${JSON.stringify(rule.equals)}` : ""}`
