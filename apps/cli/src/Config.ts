/**
 * Settings of the two-server commands (`migrate`, `plan`) from four places, per field:
 * **flag > `FERRY_*` environment > config file (`--config ferry.yaml|.yml|.json`) > default**.
 *
 * The file (every field optional; unknown fields are refused, so typos do not pass silently):
 * ```yaml
 * source:
 *   url: https://ehr.example.org/fhir
 *   auth: { kind: smart, clientId: ferry, key: ./keys/source.jwk, scope: "system/*.rs" }
 * target:
 *   url: https://fhir.example.org/r4
 *   auth: { kind: client-secret, clientId: ferry, clientSecretEnv: TARGET_SECRET }   # or `auth: none`
 * archive: ./archive
 * parallel: 4          # bundleSize, maxBundleBytes, strategy, mode, level, group
 * ```
 * - Auth fields mirror the flags: `kind` (`--source-auth`), `clientId`, `key`, `alg`, `scope`, `tokenUrl`,
 *   `bearerEnv`, `bearerFile`, `clientSecretEnv`. Secrets are never values here either: a `clientSecret`,
 *   `token`, `password`, … field is refused with a message naming the field to use instead.
 * - Relative paths in the file (`key`, `bearerFile`, `archive`) are relative to the file's directory.
 * - Environment: `FERRY_FROM`, `FERRY_TO`, `FERRY_ARCHIVE`, `FERRY_PARALLEL`, `FERRY_BUNDLE_SIZE`,
 *   `FERRY_MAX_BUNDLE_BYTES`, `FERRY_STRATEGY`, `FERRY_MODE`, `FERRY_LEVEL`, `FERRY_GROUP`, and per server
 *   `FERRY_SOURCE_AUTH`, `FERRY_SOURCE_CLIENT_ID`, `FERRY_SOURCE_KEY`, `FERRY_SOURCE_ALG`,
 *   `FERRY_SOURCE_SCOPE`, `FERRY_SOURCE_TOKEN_URL`, `FERRY_SOURCE_BEARER_ENV`, `FERRY_SOURCE_BEARER_FILE`,
 *   `FERRY_SOURCE_CLIENT_SECRET_ENV` (and `FERRY_TARGET_…`). Read through Effect's `Config` (the ambient
 *   ConfigProvider), so tests swap it with `ConfigProvider.fromMap`.
 * - Each server's client secret is read, unless its variable is named, from its own variable
 *   (`FERRY_SOURCE_CLIENT_SECRET`, `FERRY_TARGET_CLIENT_SECRET`; the one-server commands read
 *   `FERRY_CLIENT_SECRET`). Both servers reading one variable or file is refused unless it was named for both.
 * - Every layer (flags, environment, file) is decoded with the same Schema; a bad value fails with a
 *   `ConfigError` naming where it came from (`ferry.yaml:7`, `FERRY_PARALLEL`, `--parallel`).
 */
import * as Path from "node:path"
import { Options } from "@effect/cli"
import { FileSystem } from "@effect/platform"
import { Config, Effect, Either, Option, ParseResult, Schema } from "effect"
import * as EnvName from "@ferry/auth/EnvName"
import * as Ndjson from "@ferry/core/Ndjson"
import { fsProblem } from "@ferry/core/FsProblem"
import * as BaseUrl from "./BaseUrl.js"
import { parseBytes } from "./Bytes.js"
import { nearestOf } from "./Params.js"
import * as YAML from "yaml"
import {
  type AuthFlagValues,
  algs,
  authFlagsFor,
  authKinds,
  authSettings,
  defaultClientSecretEnvFor,
  type OptionalAuthValues,
  type Server,
  secretMethods,
} from "./AuthFlags.js"

// ---------------------------------------------------------------------------------------------------
// Errors

/**
 * A configuration problem: the file cannot be read (`Read`) or parsed (`Syntax`), a value is wrong
 * (`Invalid`), a secret is written where only its name may be (`Secret`), or a required setting is
 * missing everywhere (`Missing`). Exit code 2 (usage/configuration).
 */
export class ConfigError extends Schema.TaggedError<ConfigError>("@ferry/cli/ConfigError")("ConfigError", {
  reason: Schema.Literal("Read", "Syntax", "Invalid", "Secret", "Missing"),
  /** The config file, environment variable or flag the problem is in. */
  where: Schema.optional(Schema.String),
  /** 1-based line in the config file. */
  line: Schema.optional(Schema.Number),
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect),
}) {
  override get message(): string {
    const where =
      this.where === undefined ? "" : `${this.where}${this.line === undefined ? "" : `:${this.line}`}: `
    return `${where}${this.detail}`
  }
}

// ---------------------------------------------------------------------------------------------------
// The schema (of the file, and of every other layer)

const Count = Schema.Number.pipe(Schema.int(), Schema.greaterThanOrEqualTo(1))

/** A size: a whole number of bytes, or a text with a unit (`10MiB`, `5 MB`), as `--max-bundle-bytes` takes it. */
const Size = Schema.Union(
  Schema.transformOrFail(Schema.String, Count, {
    strict: true,
    decode: (text, _, ast) =>
      Option.match(
        Option.filter(parseBytes(text), (n) => n > 0),
        {
          onNone: () =>
            ParseResult.fail(
              new ParseResult.Type(
                ast,
                text,
                `${JSON.stringify(text)} is not a size; use e.g. 10MiB, 5MB or 1048576 (bytes)`,
              ),
            ),
          onSome: ParseResult.succeed,
        },
      ),
    encode: (n) => ParseResult.succeed(String(n)),
  }),
  Count,
)
const NonEmpty = Schema.String.pipe(Schema.minLength(1))

/**
 * The NAME of an environment variable (upper-case letters, digits, `_`): a secret typed here instead is refused
 * without being shown.
 */
const EnvVarName = NonEmpty.pipe(
  Schema.filter((s) =>
    EnvName.isEnvName(s)
      ? true
      : "is not the name of an environment variable (upper-case letters, digits and _; the value is not shown: the secret itself?); give the NAME of the variable that holds the secret",
  ),
)

export const AuthKind = Schema.Literal(...authKinds)

export const AuthSection = Schema.Struct({
  kind: Schema.optional(AuthKind),
  clientId: Schema.optional(NonEmpty),
  /** A private JWK/PEM file (SMART). */
  key: Schema.optional(NonEmpty),
  alg: Schema.optional(Schema.Literal(...algs)),
  /** The kid the server knows the key by (SMART). */
  keyId: Schema.optional(NonEmpty),
  /** basic (default) or post (client-secret). */
  clientSecretMethod: Schema.optional(Schema.Literal(...secretMethods)),
  scope: Schema.optional(NonEmpty),
  tokenUrl: Schema.optional(NonEmpty),
  /** The name of the environment variable holding a bearer token. */
  bearerEnv: Schema.optional(EnvVarName),
  /** A file holding a bearer token. */
  bearerFile: Schema.optional(NonEmpty),
  /** The name of the environment variable holding the client secret. */
  clientSecretEnv: Schema.optional(EnvVarName),
})
export type AuthSection = typeof AuthSection.Type

/** A server's FHIR base, checked where it is given (flag, `FERRY_*`, file:line) with `BaseUrl.parse`. */
const ServerUrl = NonEmpty.pipe(
  Schema.filter((s) =>
    Either.match(BaseUrl.parse(s), {
      onLeft: (problem) => `${BaseUrl.shown(s)} ${problem}`,
      onRight: () => true,
    }),
  ),
)

export const ServerSection = Schema.Struct({
  url: Schema.optional(ServerUrl),
  /** The auth settings (a file may give just the kind, `auth: none`, which reads as `{ kind: none }`). */
  auth: Schema.optional(AuthSection),
})

/** The config file; every field optional. Flags and `FERRY_*` variables fill the same shape. */
export const ConfigFile = Schema.Struct({
  source: Schema.optional(ServerSection),
  target: Schema.optional(ServerSection),
  archive: Schema.optional(NonEmpty),
  parallel: Schema.optional(Count),
  bundleSize: Schema.optional(Count),
  maxBundleBytes: Schema.optional(Size),
  strategy: Schema.optional(Schema.Literal("auto", "put", "post", "import")),
  mode: Schema.optional(Schema.Literal("auto", "bulk", "crawl")),
  level: Schema.optional(Schema.Literal("system", "patient", "group")),
  group: Schema.optional(NonEmpty),
})
export type ConfigFile = typeof ConfigFile.Type
/** What a flag, environment or file layer may give (decoded, before merging). */
export type Layer = ConfigFile

// ---------------------------------------------------------------------------------------------------
// Names: the same setting as a flag, an environment variable and a file path

type Leaf = readonly [string] | readonly [Server, "url"] | readonly [Server, "auth", keyof AuthSection]

const topLeaves = [
  "archive",
  "parallel",
  "bundleSize",
  "maxBundleBytes",
  "strategy",
  "mode",
  "level",
  "group",
] as const
const intLeaves = new Set<string>(["parallel", "bundleSize"])
const authLeaves = Object.keys(AuthSection.fields) as ReadonlyArray<keyof AuthSection>

const leaves: ReadonlyArray<Leaf> = [
  ...(["source", "target"] as const).flatMap(
    (s): Array<Leaf> => [[s, "url"], ...authLeaves.map((k): Leaf => [s, "auth", k])],
  ),
  ...topLeaves.map((k): Leaf => [k]),
]

const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
const constant = (s: string) => kebab(s).replace(/-/g, "_").toUpperCase()
/** The auth key as the flags spell it (`kind` is `--source-auth`). */
const authName = (k: string) => (k === "kind" ? "auth" : k)

/** `--from`, `--source-client-id`, `--bundle-size`, … */
export const flagName = (path: ReadonlyArray<PropertyKey>): string => {
  const [a, b, c] = path.map(String)
  if ((a === "source" || a === "target") && b === "url") return a === "source" ? "--from" : "--to"
  if ((a === "source" || a === "target") && b === "auth" && c !== undefined)
    return `--${a}-${kebab(authName(c))}`
  return `--${kebab(path.map(String).join("-"))}`
}

/** `FERRY_FROM`, `FERRY_SOURCE_CLIENT_ID`, `FERRY_BUNDLE_SIZE`, … */
export const envName = (path: ReadonlyArray<PropertyKey>): string => {
  const [a, b, c] = path.map(String)
  if ((a === "source" || a === "target") && b === "url") return a === "source" ? "FERRY_FROM" : "FERRY_TO"
  if ((a === "source" || a === "target") && b === "auth" && c !== undefined)
    return `FERRY_${a.toUpperCase()}_${constant(authName(c))}`
  return `FERRY_${path.map((p) => constant(String(p))).join("_")}`
}

const dotted = (path: ReadonlyArray<PropertyKey>) => path.map(String).join(".")

const setIn = (target: Record<string, unknown>, path: ReadonlyArray<string>, value: unknown) => {
  let node = target
  for (const key of path.slice(0, -1)) {
    const next = node[key]
    if (typeof next === "object" && next !== null) node = next as Record<string, unknown>
    else {
      const fresh: Record<string, unknown> = {}
      node[key] = fresh
      node = fresh
    }
  }
  node[path[path.length - 1]!] = value
}

/**
 * The first schema issue of a layer as `{ path, message }`; the members of a union of literals, reported
 * one by one, are put back together (`Expected "none" | "smart", actual "x"`).
 */
/**
 * A value the schema quotes, as a message may show it: a mapping or a list is named, not shown (a private key
 * written into `auth.key` as a mapping is the JWK itself).
 */
const shownValue = (actual: string): string =>
  actual.startsWith("{") ? "a mapping" : actual.startsWith("[") ? "a list" : actual

const firstIssue = (error: ParseResult.ParseError) => {
  const { path, message } = firstIssueRaw(error)
  const quoted = /^([\s\S]*?(?:, actual|, got) )([\s\S]+)$/.exec(message)
  return { path, message: quoted === null ? message : `${quoted[1]}${shownValue(quoted[2]!)}` }
}

const firstIssueRaw = (error: ParseResult.ParseError) => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  const issue = issues[0]
  if (issue === undefined) return { path: [], message: error.message }
  const key = dotted(issue.path)
  const expected = /^Expected (.+), actual (.+)$/
  const same = issues
    .filter((i) => dotted(i.path) === key)
    .map((i) => expected.exec(i.message))
    // `undefined` is the optional field's own alternative, not a value to suggest
    .filter((m) => m === null || m[1] !== "undefined")
  if (same.length > 1 && same.every((m) => m !== null && m[2] === same[0]![2]))
    return {
      path: issue.path,
      message: `Expected ${same.map((m) => m![1]).join(" | ")}, actual ${same[0]![2]}`,
    }
  // a whole section of the wrong kind: the schema's type text (every field of the section) helps nobody
  const section = /^Expected \{ .*\}, actual (.+)$/s.exec(issue.message)
  if (section !== null) {
    // the section's own keys: the names at the first level of braces, not those of the sections inside it
    const fields: Array<string> = []
    let depth = 0
    for (const m of issue.message.matchAll(/[{}]|readonly (\w+)\??:/g)) {
      if (m[0] === "{") depth++
      else if (m[0] === "}") depth--
      else if (depth === 1 && m[1] !== undefined) fields.push(m[1])
    }
    return {
      path: issue.path,
      message: `expected a section (keys: ${fields.join(", ")}), got ${section[1]}`,
    }
  }
  return { path: issue.path, message: issue.message }
}

const decodeStrict = Schema.decodeUnknownEither(ConfigFile, { onExcessProperty: "error", errors: "all" })

/** `auth: smart` is short for `auth: { kind: smart }`. */
const expandAuth = (raw: unknown): unknown => {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return raw
  const out: Record<string, unknown> = { ...raw }
  for (const server of ["source", "target"]) {
    const s = out[server]
    if (typeof s === "object" && s !== null && !Array.isArray(s) && "auth" in s && typeof s.auth === "string")
      out[server] = { ...s, auth: { kind: s.auth } }
  }
  return out
}

const decodeLayer = (raw: unknown) => decodeStrict(expandAuth(raw))

// ---------------------------------------------------------------------------------------------------
// Layers

/** Flag values of a two-server command (absent fields: the command has no such flag). */
export interface FlagInput {
  readonly from?: Option.Option<string>
  readonly to?: Option.Option<string>
  readonly archive?: Option.Option<string>
  readonly parallel?: Option.Option<number>
  readonly bundleSize?: Option.Option<number>
  readonly maxBundleBytes?: Option.Option<number>
  readonly strategy?: Option.Option<string>
  readonly mode?: Option.Option<string>
  readonly level?: Option.Option<string>
  readonly group?: Option.Option<string>
  readonly source?: OptionalAuthValues
  readonly target?: OptionalAuthValues
}

const authFromFlags = (v: OptionalAuthValues | undefined): Record<string, unknown> => {
  const out: Record<string, unknown> = {}
  if (v === undefined) return out
  const put = (key: keyof AuthSection, o: Option.Option<string>) => {
    if (Option.isSome(o)) out[key] = o.value
  }
  put("kind", v.auth)
  put("clientId", v.clientId)
  put("key", v.key)
  put("alg", v.alg)
  put("keyId", v.keyId)
  put("clientSecretMethod", v.clientSecretMethod)
  put("scope", v.scope)
  put("tokenUrl", v.tokenUrl)
  put("bearerEnv", v.bearerEnv)
  put("bearerFile", v.bearerFile)
  put("clientSecretEnv", v.clientSecretEnv)
  return out
}

/** The flag layer (flags not given are absent). */
export const fromFlags = (f: FlagInput): Effect.Effect<Layer, ConfigError> => {
  const raw: Record<string, unknown> = {}
  const some = (path: ReadonlyArray<string>, o: Option.Option<unknown> | undefined) => {
    if (o !== undefined && Option.isSome(o)) setIn(raw, path, o.value)
  }
  some(["source", "url"], f.from)
  some(["target", "url"], f.to)
  for (const k of topLeaves) some([k], f[k])
  const source = authFromFlags(f.source)
  const target = authFromFlags(f.target)
  if (Object.keys(source).length > 0) setIn(raw, ["source", "auth"], source)
  if (Object.keys(target).length > 0) setIn(raw, ["target", "auth"], target)
  return Either.match(decodeLayer(raw), {
    onRight: Effect.succeed,
    onLeft: (e) => {
      const { path, message } = firstIssue(e)
      return Effect.fail(
        new ConfigError({ reason: "Invalid", where: flagName(path), detail: `${message}; fix the flag` }),
      )
    },
  })
}

/** Whether `layer` sets `path`. */
const hasIn = (layer: unknown, path: ReadonlyArray<string>): boolean => {
  let node = layer
  for (const key of path) {
    if (typeof node !== "object" || node === null) return false
    node = (node as Record<string, unknown>)[key]
  }
  return node !== undefined
}

/**
 * The `FERRY_*` layer, read through the ambient ConfigProvider; a variable whose setting `given` (the
 * flags) sets is not read at all, so that a flag wins over a bad value too.
 */
export const fromEnvExcept = (given: Layer): Effect.Effect<Layer, ConfigError> =>
  Effect.gen(function* () {
    const raw: Record<string, unknown> = {}
    for (const leaf of leaves) {
      if (hasIn(given, leaf)) continue
      const name = envName(leaf)
      const value = yield* Config.option(Config.string(name)).pipe(Effect.orElseSucceed(() => Option.none()))
      if (Option.isNone(value) || value.value.trim() === "") continue
      const text = value.value.trim()
      const last = leaf[leaf.length - 1]!
      if (leaf.length === 1 && intLeaves.has(last)) {
        if (!/^-?\d+$/.test(text))
          return yield* new ConfigError({
            reason: "Invalid",
            where: name,
            detail: `${JSON.stringify(text)} is not a whole number; fix or unset ${name}`,
          })
        if (Number(text) < 1)
          return yield* new ConfigError({
            reason: "Invalid",
            where: name,
            detail: `${text} must be at least 1; fix or unset ${name}`,
          })
        setIn(raw, leaf, Number(text))
      } else setIn(raw, leaf, text)
    }
    return yield* Either.match(decodeLayer(raw), {
      onRight: Effect.succeed,
      onLeft: (e) => {
        const { path, message } = firstIssue(e)
        const name = envName(path)
        return Effect.fail(
          new ConfigError({ reason: "Invalid", where: name, detail: `${message}; fix or unset ${name}` }),
        )
      },
    })
  })

/** The whole `FERRY_*` layer. */
export const fromEnv: Effect.Effect<Layer, ConfigError> = fromEnvExcept({})

/** Field names that would hold a secret, and what to write instead. */
const secretField = (key: string): string | undefined => {
  const k = key.toLowerCase().replace(/[-_]/g, "")
  if (k === "clientsecret" || k === "secret")
    return "put the secret in an environment variable and name the variable with clientSecretEnv"
  if (k === "token" || k === "accesstoken" || k === "bearer" || k === "bearertoken")
    return "put the token in an environment variable or a file and name it with bearerEnv or bearerFile"
  if (k === "privatekey" || k === "password" || k === "jwk" || k === "pem")
    return "keep private material out of the config file: name the key file with key (or a variable holding a secret with clientSecretEnv)"
  return undefined
}

const findSecret = (
  node: unknown,
  path: ReadonlyArray<string> = [],
): { readonly path: ReadonlyArray<string>; readonly advice: string } | undefined => {
  if (typeof node !== "object" || node === null || Array.isArray(node)) return undefined
  for (const [key, value] of Object.entries(node)) {
    const advice = secretField(key)
    if (advice !== undefined) return { path: [...path, key], advice }
    const inner = findSecret(value, [...path, key])
    if (inner !== undefined) return inner
  }
  return undefined
}

/** Resolves the file's relative paths against its directory. */
const resolvePaths = (layer: Layer, dir: string): Layer => {
  const abs = (p: string | undefined) => (p === undefined ? undefined : Path.resolve(dir, p))
  const server = (s: Layer["source"]): Layer["source"] =>
    s === undefined || s.auth === undefined
      ? s
      : {
          ...s,
          auth: {
            ...s.auth,
            ...(s.auth.key !== undefined ? { key: abs(s.auth.key)! } : {}),
            ...(s.auth.bearerFile !== undefined ? { bearerFile: abs(s.auth.bearerFile)! } : {}),
          },
        }
  return {
    ...layer,
    ...(layer.source !== undefined ? { source: server(layer.source) } : {}),
    ...(layer.target !== undefined ? { target: server(layer.target) } : {}),
    ...(layer.archive !== undefined ? { archive: abs(layer.archive)! } : {}),
  }
}

/** The last line before `upTo` holding an odd number of `quote` characters (escapes aside): where it opened. */
const quoteOpenedAt = (text: string, upTo: number, quote: string): number | undefined => {
  const lines = text.slice(0, upTo).split("\n")
  for (let i = lines.length - 1; i >= 0; i--) {
    const bare = quote === '"' ? lines[i]!.replace(/\\./g, "") : lines[i]!.replaceAll("''", "")
    if (bare.split(quote).length % 2 === 0) return i + 1
  }
  return undefined
}

/**
 * Decodes a config file's text (`path` only names it in errors and picks the format by extension;
 * relative paths inside are resolved against its directory).
 */
export const parseFile = (path: string, text: string): Effect.Effect<Layer, ConfigError> =>
  Effect.gen(function* () {
    const ext = Path.extname(path).toLowerCase()
    const isJson = ext === ".json"
    if (!isJson && ext !== ".yaml" && ext !== ".yml")
      return yield* new ConfigError({
        reason: "Read",
        where: path,
        detail: "a config file must be .yaml, .yml or .json; rename it or convert it",
      })
    // Line numbers come from the YAML parser (JSON is YAML), also for a .json file.
    const lineCounter = new YAML.LineCounter()
    const doc = YAML.parseDocument(text, { lineCounter, prettyErrors: false })
    let raw: unknown
    if (isJson) {
      const parsed = Either.try(() => JSON.parse(text) as unknown)
      if (Either.isLeft(parsed)) {
        const msg = parsed.left instanceof Error ? parsed.left.message : String(parsed.left)
        // V8 gives a position for most errors, none for an unexpected token, and "end of input" at the end.
        const pos = /position (\d+)/.exec(msg)
        const offset =
          pos !== null
            ? Number(pos[1])
            : /end of JSON input/.test(msg)
              ? Math.max(0, text.trimEnd().length - 1)
              : doc.errors[0]?.pos[0]
        const line = offset === undefined ? undefined : lineCounter.linePos(offset).line || undefined
        return yield* new ConfigError({
          reason: "Syntax",
          where: path,
          ...(line !== undefined ? { line } : {}),
          detail: `this is not valid JSON (${Ndjson.jsonErrorText(msg).replace(/\s*\n[\s\S]*$/, "")}); fix the syntax`,
          cause: parsed.left,
        })
      }
      raw = parsed.right
      // JSON.parse keeps the last of two equal keys without a word; YAML's parser of the same text finds them
      const duplicate = doc.errors.find((e) => e.code === "DUPLICATE_KEY")
      if (duplicate !== undefined) {
        const line = lineCounter.linePos(duplicate.pos[0]).line || undefined
        const quoted = /^"(?:[^"\\]|\\.)*"/.exec(text.slice(duplicate.pos[0]))
        const key =
          quoted === null
            ? undefined
            : Either.getOrUndefined(Either.try(() => JSON.parse(quoted[0]) as unknown))
        return yield* new ConfigError({
          reason: "Syntax",
          where: path,
          ...(line !== undefined ? { line } : {}),
          detail: `${typeof key === "string" ? `"${key}"` : "this key"} is given twice in the same object, and JSON would keep only the last; remove one of them`,
        })
      }
    } else {
      const error = doc.errors[0]
      if (error !== undefined) {
        // a quote never closed is found at the end of the text: the line where it opened is the one to fix
        const quote =
          error.code === "MISSING_CHAR" ? /Missing closing (["'])quote/.exec(error.message)?.[1] : undefined
        const opened = quote === undefined ? undefined : quoteOpenedAt(text, error.pos[0], quote)
        const line = opened ?? (lineCounter.linePos(error.pos[0]).line || undefined)
        return yield* new ConfigError({
          reason: "Syntax",
          where: path,
          ...(line !== undefined ? { line } : {}),
          detail:
            opened !== undefined
              ? `this is not valid YAML (a ${quote} opened on this line is never closed); fix the syntax`
              : `this is not valid YAML (${error.message.split("\n")[0]}); fix the syntax`,
          cause: error,
        })
      }
      raw = doc.toJS()
    }
    if (raw === null || raw === undefined) raw = {}
    if (typeof raw !== "object" || Array.isArray(raw))
      return yield* new ConfigError({
        reason: "Invalid",
        where: path,
        detail:
          "the config file must hold a mapping (source:, target:, archive:, …); see `ferry plan --help`",
      })
    const lineOf = (p: ReadonlyArray<PropertyKey>): number | undefined => {
      for (let n = p.length; n > 0; n--) {
        const node: unknown = doc.getIn(p.slice(0, n), true)
        if (YAML.isNode(node) && node.range) {
          const line = lineCounter.linePos(node.range[0]).line
          return line > 0 ? line : undefined
        }
      }
      return undefined
    }
    const secret = findSecret(raw)
    if (secret !== undefined) {
      const line = lineOf(secret.path)
      return yield* new ConfigError({
        reason: "Secret",
        where: path,
        ...(line !== undefined ? { line } : {}),
        detail: `${dotted(secret.path)}: secrets are never written in the config file; ${secret.advice}`,
      })
    }
    const decoded = decodeLayer(raw)
    if (Either.isLeft(decoded)) {
      const issue = firstIssue(decoded.left)
      const line = lineOf(issue.path)
      return yield* new ConfigError({
        reason: "Invalid",
        where: path,
        ...(line !== undefined ? { line } : {}),
        detail: `${issue.path.length > 0 ? `${dotted(issue.path)}: ` : ""}${issue.message}${meantKey(issue)}; fix the config file`,
      })
    }
    return resolvePaths(decoded.right, Path.dirname(Path.resolve(path)))
  })

/** For a key the schema does not know (`paralel: is unexpected, expected: "source" | …`): the one meant, if near. */
const meantKey = (issue: { readonly path: ReadonlyArray<PropertyKey>; readonly message: string }): string => {
  const expected = /is unexpected, expected: (.*)$/.exec(issue.message)
  const key = issue.path.at(-1)
  if (expected === null || typeof key !== "string") return ""
  const names = [...expected[1]!.matchAll(/"([^"]+)"/g)].map((m) => m[1]!)
  const meant = nearestOf(key, names)
  return meant !== undefined ? ` (did you mean ${meant}?)` : ""
}

/** Reads and decodes a config file. */
export const readFile = (
  path: string,
  givenBy = "--config",
): Effect.Effect<Layer, ConfigError, FileSystem.FileSystem> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(path).pipe(
      Effect.mapError(
        (cause) =>
          new ConfigError({
            reason: "Read",
            where: path,
            detail: `the config file could not be read (${fsProblem(cause)}); check the path given to ${givenBy}`,
            cause,
          }),
      ),
    )
    return yield* parseFile(path, text)
  })

// ---------------------------------------------------------------------------------------------------
// Merging

export interface ServerSettings {
  readonly url: Option.Option<string>
  /** Defaults applied: `auth` none, `clientSecretEnv` FERRY_SOURCE_CLIENT_SECRET / FERRY_TARGET_CLIENT_SECRET. */
  readonly auth: AuthFlagValues
  /** Whether `auth.clientSecretEnv` was named (flag, environment or file) rather than the default. */
  readonly clientSecretEnvNamed: boolean
}

export interface Settings {
  /** The config file read, if any. */
  readonly configFile: Option.Option<string>
  readonly source: ServerSettings
  readonly target: ServerSettings
  readonly archive: Option.Option<string>
  /** Default 4. */
  readonly parallel: number
  /** Default 500. */
  readonly bundleSize: number
  /** Default 10 MiB. */
  readonly maxBundleBytes: number
  readonly strategy: "auto" | "put" | "post" | "import"
  readonly mode: "auto" | "bulk" | "crawl"
  readonly level: "system" | "patient" | "group"
  readonly group: Option.Option<string>
}

export const defaults = {
  parallel: 4,
  bundleSize: 500,
  maxBundleBytes: 10 * 1024 * 1024,
  strategy: "auto",
  mode: "auto",
  level: "system",
} as const

const authOf = (layer: Layer, server: Server): AuthSection | undefined => layer[server]?.auth

/** The settings each kind of authentication reads. */
const readBy: Readonly<Record<AuthSection["kind"] & string, ReadonlyArray<keyof AuthSection>>> = {
  none: [],
  bearer: ["bearerEnv", "bearerFile"],
  "client-secret": ["clientId", "clientSecretMethod", "scope", "tokenUrl", "clientSecretEnv"],
  smart: ["clientId", "key", "alg", "keyId", "scope", "tokenUrl"],
}

/** Merges layers, first wins per field (flags, environment, file), then applies the defaults. */
export const merge = (
  layers: ReadonlyArray<Layer>,
  configFile: Option.Option<string> = Option.none(),
): Settings => {
  const pick = <A>(get: (l: Layer) => A | undefined): Option.Option<A> => {
    for (const l of layers) {
      const v = get(l)
      if (v !== undefined) return Option.some(v)
    }
    return Option.none()
  }
  const server = (s: Server): ServerSettings => {
    // A layer that names another kind of authentication than the one chosen holds that kind's settings (a
    // file's SMART key under the environment's `bearer`): it is not read. Layers that name no kind add to
    // the chosen one.
    // A layer below the one that chose the kind (the environment under a flag's --target-auth) adds only what
    // that kind reads: its other settings belong to a kind it did not choose (a leftover FERRY_TARGET_CLIENT_ID
    // under --target-auth bearer), and would be refused as stray credentials of the chosen one.
    const kind = pick((l) => authOf(l, s)?.kind)
    const chosenAt = layers.findIndex((l) => authOf(l, s)?.kind !== undefined)
    const a = (l: Layer) => {
      const section = authOf(l, s)
      if (section === undefined || Option.isNone(kind)) return section
      if (section.kind !== undefined) return section.kind === kind.value ? section : undefined
      if (layers.indexOf(l) <= chosenAt) return section
      const kept: Record<string, unknown> = {}
      for (const field of readBy[kind.value]) if (section[field] !== undefined) kept[field] = section[field]
      return kept as AuthSection
    }
    const clientSecretEnv = pick((l) => a(l)?.clientSecretEnv)
    return {
      url: pick((l) => l[s]?.url),
      auth: {
        auth: Option.getOrElse(
          pick((l) => a(l)?.kind),
          () => "none" as const,
        ),
        clientId: pick((l) => a(l)?.clientId),
        key: pick((l) => a(l)?.key),
        alg: pick((l) => a(l)?.alg),
        keyId: pick((l) => a(l)?.keyId),
        clientSecretMethod: pick((l) => a(l)?.clientSecretMethod),
        scope: pick((l) => a(l)?.scope),
        tokenUrl: pick((l) => a(l)?.tokenUrl),
        bearerEnv: pick((l) => a(l)?.bearerEnv),
        bearerFile: pick((l) => a(l)?.bearerFile),
        clientSecretEnv: Option.getOrElse(clientSecretEnv, () => defaultClientSecretEnvFor(s)),
      },
      clientSecretEnvNamed: Option.isSome(clientSecretEnv),
    }
  }
  return {
    configFile,
    source: server("source"),
    target: server("target"),
    archive: pick((l) => l.archive),
    parallel: Option.getOrElse(
      pick((l) => l.parallel),
      () => defaults.parallel,
    ),
    bundleSize: Option.getOrElse(
      pick((l) => l.bundleSize),
      () => defaults.bundleSize,
    ),
    maxBundleBytes: Option.getOrElse(
      pick((l) => l.maxBundleBytes),
      () => defaults.maxBundleBytes,
    ),
    strategy: Option.getOrElse(
      pick((l) => l.strategy),
      () => defaults.strategy,
    ),
    mode: Option.getOrElse(
      pick((l) => l.mode),
      () => defaults.mode,
    ),
    level: Option.getOrElse(
      pick((l) => l.level),
      () => defaults.level,
    ),
    group: pick((l) => l.group),
  }
}

/**
 * The settings of a two-server command: flag > `FERRY_*` environment > config file > default. A config
 * file comes from `configFile` (the `--config` flag) or else `FERRY_CONFIG`.
 */
export const resolve = (
  configFile: Option.Option<string>,
  flags: FlagInput,
): Effect.Effect<Settings, ConfigError, FileSystem.FileSystem> =>
  Effect.gen(function* () {
    const flagLayer = yield* fromFlags(flags)
    const envLayer = yield* fromEnvExcept(flagLayer)
    const fromEnvFile = yield* Config.option(Config.string("FERRY_CONFIG")).pipe(
      Effect.orElseSucceed(() => Option.none()),
    )
    const file = Option.orElse(configFile, () => Option.filter(fromEnvFile, (f) => f.trim() !== ""))
    const fileLayer = Option.isSome(file)
      ? yield* readFile(file.value, Option.isSome(configFile) ? "--config" : "FERRY_CONFIG")
      : {}
    const settings = merge([flagLayer, envLayer, fileLayer], file)
    yield* separateCredentials(settings)
    yield* unknownVariables(process.env, settings)
    return settings
  })

/**
 * `FERRY_*` variables of the environment that are no Ferry setting (a typo: `FERRY_PARALELL`) are ignored,
 * which is said once each, with the setting meant when one is close. Variables the settings name (a bearer
 * token's, a client secret's) are Ferry's too.
 */
export const unknownVariables = (
  env: Readonly<Record<string, string | undefined>>,
  settings: Settings,
): Effect.Effect<void> => {
  const known = new Set<string>([
    ...leaves.map((leaf) => envName(leaf)),
    "FERRY_CONFIG",
    "FERRY_CLIENT_SECRET",
    defaultClientSecretEnvFor("source"),
    defaultClientSecretEnvFor("target"),
  ])
  for (const s of [settings.source, settings.target]) {
    known.add(s.auth.clientSecretEnv)
    for (const name of Option.toArray(s.auth.bearerEnv)) known.add(name)
  }
  const unknown = Object.keys(env).filter((name) => name.startsWith("FERRY_") && !known.has(name))
  return Effect.forEach(
    unknown,
    (name) => {
      const meant = nearestOf(name, known, 3)
      return Effect.logWarning(
        `${name} is not a Ferry setting${meant !== undefined ? ` (did you mean ${meant}?)` : ""}; it is ignored`,
      )
    },
    { discard: true },
  )
}

/** Where a server's credential comes from: an environment variable or a file, and the flag naming it. */
interface CredentialSource {
  readonly id: string
  readonly shown: string
  readonly flag: string
  /** Named by the user for this server (not a default). */
  readonly named: boolean
}

const credentialSources = (settings: Settings, server: Server): ReadonlyArray<CredentialSource> => {
  const { auth, clientSecretEnvNamed } = settings[server]
  const env = (name: string, key: "clientSecretEnv" | "bearerEnv", named: boolean): CredentialSource => ({
    id: `env:${name}`,
    shown: `$${name}`,
    flag: flagName([server, "auth", key]),
    named,
  })
  if (auth.auth === "client-secret")
    return [env(auth.clientSecretEnv, "clientSecretEnv", clientSecretEnvNamed)]
  if (auth.auth !== "bearer") return []
  return [
    ...Option.toArray(auth.bearerEnv).map((name) => env(name, "bearerEnv", true)),
    ...Option.toArray(auth.bearerFile).map(
      (file): CredentialSource => ({
        id: `file:${Path.resolve(file)}`,
        shown: `the file ${file}`,
        flag: flagName([server, "auth", "bearerFile"]),
        named: true,
      }),
    ),
  ]
}

/**
 * Refuses source and target reading their credentials from the same variable or file, which would send one
 * server's secret to the other, unless the user named it for both (one client registered on both servers).
 */
export const separateCredentials = (settings: Settings): Effect.Effect<void, ConfigError> => {
  const target = credentialSources(settings, "target")
  for (const s of credentialSources(settings, "source")) {
    const t = target.find((c) => c.id === s.id)
    if (t === undefined || (s.named && t.named)) continue
    const defaulted = !s.named ? "the source's default" : "the target's default"
    return Effect.fail(
      new ConfigError({
        reason: "Invalid",
        detail: `the source and the target would both read their credentials from ${s.shown} (${defaulted}), sending one server's secret to the other; give each its own with ${s.flag} and ${t.flag}, or name ${s.shown} with both to share it on purpose`,
      }),
    )
  }
  return Effect.void
}

/** Both servers' base URLs (see `requireUrl`); the same server as source and target is refused. */
export const requireUrls = (
  settings: Settings,
): Effect.Effect<{ readonly source: string; readonly target: string }, ConfigError> =>
  Effect.gen(function* () {
    const source = yield* requireUrl(settings, "source")
    const target = yield* requireUrl(settings, "target")
    if (source === target || (yield* BaseUrl.sameServer(source, target)))
      return yield* new ConfigError({
        reason: "Invalid",
        where: flagName(["target", "url"]),
        detail: `the source and the target are the same server (${BaseUrl.shown(source)}${source === target ? "" : ` and ${BaseUrl.shown(target)} reach the same address`}); a migration moves data between two servers`,
      })
    return { source, target }
  })

/** The base URL of a server, or a ConfigError saying the three ways to give it. */
export const requireUrl = (settings: Settings, server: Server): Effect.Effect<string, ConfigError> =>
  Option.match(settings[server].url, {
    onSome: (url) =>
      Either.match(BaseUrl.parse(url, `the ${server} server's`), {
        onLeft: (problem) =>
          Effect.fail(
            new ConfigError({
              reason: "Invalid",
              where: flagName([server, "url"]),
              detail: `${BaseUrl.shown(url)} ${problem}`,
            }),
          ),
        onRight: (base) => Effect.succeed(base),
      }),
    onNone: () =>
      Effect.fail(
        new ConfigError({
          reason: "Missing",
          detail: `no ${server} server given; pass ${flagName([server, "url"])} <url>, set ${envName([server, "url"])} or ${server}.url in the config file`,
        }),
      ),
  })

/** `Authenticator.AuthSettings` of one server (reads the client secret from its variable). */
export const serverAuthSettings = (settings: Settings, server: Server) =>
  authSettings(settings[server].auth, server)

// ---------------------------------------------------------------------------------------------------
// Flags shared by the two-server commands

/** `--config` plus the prefixed auth flags of both servers. */
export const configFlags = {
  config: Options.file("config", { exists: "yes" }).pipe(
    Options.optional,
    Options.withDescription(
      "A ferry.yaml / .yml / .json config file (precedence: flag > FERRY_* environment > file > default).",
    ),
  ),
  ...authFlagsFor("source"),
  ...authFlagsFor("target"),
}
