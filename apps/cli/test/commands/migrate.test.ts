import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import * as Imports from "@ferry/archive/Imports"
import { Option } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { verifySuggestion } from "../../src/commands/migrate.js"
import { authValues } from "../helpers/authValues.js"

const tmp = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-migrate-suggest-"))
afterAll(() => NFS.rmSync(tmp, { recursive: true, force: true }))

const from = "http://127.0.0.1:8081/fhir"
const to = "http://127.0.0.1:8082/fhir"
const prefix = "ferry migrate: check it with: "

describe("migrate: the verify command it suggests", () => {
  it("an archive with its data files: verify against the archive (it finds the id map and types itself)", () => {
    const archive = Path.join(tmp, "kept")
    expect(verifySuggestion({ from, to, archive, pruned: false, types: ["Patient"], narrowed: [] })).toBe(
      `${prefix}ferry verify --archive ${archive} --target ${to}`,
    )
  })

  it("with --drop-meta: verify is told what the import dropped", () => {
    const archive = Path.join(tmp, "dropped")
    expect(
      verifySuggestion({
        from,
        to,
        archive,
        pruned: false,
        types: [],
        narrowed: [],
        dropMeta: ["tag", "security"],
      }),
    ).toBe(`${prefix}ferry verify --archive ${archive} --target ${to} --drop-meta tag,security`)
    expect(
      verifySuggestion({ from, to, archive, pruned: true, types: [], narrowed: [], dropMeta: ["source"] }),
    ).toBe(
      `${prefix}ferry verify --source ${from} --target ${to} --drop-meta source (data files were pruned from the archive)`,
    )
  })

  it("pruned: against the source, with the migration's --type and the id map the import wrote", () => {
    const archive = Path.join(tmp, "pruned")
    const args = { from, to, archive, pruned: true, types: ["Patient", "Observation"], narrowed: [] }
    // no id map (nothing imported yet, or an import that wrote none): none named
    expect(verifySuggestion(args)).toBe(
      `${prefix}ferry verify --source ${from} --target ${to} --type Patient,Observation (data files were pruned from the archive)`,
    )
    const idMap = Imports.idMapPath(archive, to)
    NFS.mkdirSync(Path.dirname(idMap), { recursive: true })
    NFS.writeFileSync(idMap, '{"s":"Patient/1","t":"Patient/a"}\n')
    expect(verifySuggestion(args)).toBe(
      `${prefix}ferry verify --source ${from} --target ${to} --type Patient,Observation --id-map ${idMap} (data files were pruned from the archive)`,
    )
    // every type: no --type
    expect(verifySuggestion({ ...args, types: [] })).toBe(
      `${prefix}ferry verify --source ${from} --target ${to} --id-map ${idMap} (data files were pruned from the archive)`,
    )
  })

  it("pruned after a narrowed export: says the rest of the source shows as missing; odd paths are quoted", () => {
    const archive = Path.join(tmp, "it's here")
    const idMap = Imports.idMapPath(archive, to)
    NFS.mkdirSync(Path.dirname(idMap), { recursive: true })
    NFS.writeFileSync(idMap, "")
    const line = verifySuggestion({
      from,
      to,
      archive,
      pruned: true,
      types: [],
      narrowed: ["--level patient", "--type-filter"],
    })
    expect(line).toContain(`--id-map '${idMap.replace("'", "'\\''")}'`)
    expect(line).toContain(
      "the migration took only part of the source (--level patient, --type-filter), so the source's other resources show as missing",
    )
  })

  it("with the migration's credentials: the target's as --auth …, the source's as --source-auth …, names only", () => {
    const smart = authValues("smart", {
      clientId: Option.some("ferry-target"),
      key: Option.some("keys/target key.jwk"),
    })
    const secret = authValues("client-secret", { clientId: Option.some("ferry-source") }, "SRC_SECRET")
    const archive = Path.join(tmp, "with-auth")
    const base = { from, to, archive, types: [], narrowed: [], sourceAuth: secret, targetAuth: smart }
    expect(verifySuggestion({ ...base, pruned: false })).toBe(
      `${prefix}ferry verify --archive ${archive} --target ${to} --auth smart --client-id ferry-target --key 'keys/target key.jwk'`,
    )
    expect(verifySuggestion({ ...base, pruned: true })).toBe(
      `${prefix}ferry verify --source ${from} --source-auth client-secret --source-client-id ferry-source --source-client-secret-env SRC_SECRET --target ${to} --auth smart --client-id ferry-target --key 'keys/target key.jwk' (data files were pruned from the archive)`,
    )
    expect(verifySuggestion({ ...base, pruned: false, targetAuth: { ...smart, auth: "none" } })).toBe(
      `${prefix}ferry verify --archive ${archive} --target ${to}`,
    )
  })
})
