import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { inCompartment } from "../src/Compartment.js"
import { ASYNC, exportAll, http, json, kickoff, lines, poll, startKit } from "./internal/bulkKit.js"

const PATIENTS = 4
const gen = { generate: PATIENTS }

type Resource = Record<string, unknown> & { resourceType: string; id?: string }

interface Item {
  readonly type?: string
  readonly url: string
  readonly count: number
  readonly continuesInFile?: string
}

/** Kicks off, polls and downloads every output file of an organized export, file by file. */
const organizedExport = (url: string, options: Parameters<typeof kickoff>[1] = {}) =>
  Effect.gen(function* () {
    const status = yield* kickoff(url, options)
    const { manifest } = yield* poll(status)
    const m = manifest as unknown as {
      outputOrganizedBy?: string
      output: ReadonlyArray<Item>
      error: ReadonlyArray<{ type: string; url: string }>
    }
    const files: Array<{ item: Item; lines: Array<Resource> }> = []
    for (const item of m.output) {
      const r = yield* http(item.url)
      assert.strictEqual(r.status, 200)
      files.push({ item, lines: lines(r.body) as Array<Resource> })
    }
    return { manifest: m, files }
  })

const headerOf = (r: Resource | undefined): string | undefined => {
  if (r?.resourceType !== "Parameters") return undefined
  const p = (r.parameter as Array<{ name: string; valueReference?: { reference?: string } }>)[0]
  return p?.name === "header" ? p.valueReference?.reference : undefined
}

const key = (r: Resource) => `${r.resourceType}/${r.id}`

/**
 * Checks the block shape of every file; returns the resources (headers dropped, a repeated owner after a
 * continued header dropped) with the owner of the block each one was found in.
 */
const blocks = (files: ReadonlyArray<{ item: Item; lines: Array<Resource> }>) => {
  const found: Array<{ owner: string; resource: Resource }> = []
  let continued: string | undefined
  for (const { item, lines: ls } of files) {
    assert.isUndefined(item.type, "organized output items have no type")
    assert.strictEqual(item.count, ls.length, "count is the number of lines, headers included")
    const first = headerOf(ls[0])
    assert.isDefined(first, `${item.url} starts with a header`)
    if (continued !== undefined) assert.strictEqual(first, continued, "a continued block repeats its header")
    let owner: string | undefined
    let afterContinuedHeader = false
    for (const [i, r] of ls.entries()) {
      const h = headerOf(r)
      if (h !== undefined) {
        owner = h
        afterContinuedHeader = i === 0 && continued !== undefined
        continue
      }
      if (afterContinuedHeader && key(r) === owner) {
        afterContinuedHeader = false
        continue // a repeated owner
      }
      afterContinuedHeader = false
      found.push({ owner: owner!, resource: r })
    }
    continued = item.continuesInFile !== undefined ? owner : undefined
    if (item.continuesInFile !== undefined) {
      const next = files[files.indexOf(files.find((f) => f.item === item)!) + 1]
      assert.strictEqual(item.continuesInFile, next?.item.url, "continuesInFile names the next file")
    }
  }
  assert.isUndefined(continued, "the last file does not continue")
  return found
}

describe("BulkExport organizeOutputBy", () => {
  it.scopedLive(
    "Patient level: blocks of header, Patient, compartment; same resources as a plain export",
    () =>
      Effect.gen(function* () {
        const kit = yield* startKit(gen, { pollsBeforeDone: 0 })
        const { manifest, files } = yield* organizedExport(
          `${kit.baseUrl}/Patient/$export?organizeOutputBy=Patient`,
        )
        assert.strictEqual(manifest.outputOrganizedBy, "Patient")
        assert.deepStrictEqual(manifest.error, [])
        assert.strictEqual(files.length, 1)
        const found = blocks(files)
        // every block starts with its owner, every other resource is in the owner's compartment
        const owners = new Set<string>()
        for (const [i, { owner, resource }] of found.entries()) {
          if (found[i - 1]?.owner !== owner) {
            assert.strictEqual(key(resource), owner, "the owner follows its header")
            owners.add(owner)
            continue
          }
          assert.isTrue(
            inCompartment(resource as { resourceType: string }, new Set([owner.slice("Patient/".length)])),
            `${key(resource)} is in ${owner}'s compartment`,
          )
        }
        assert.strictEqual(owners.size, PATIENTS)
        const plain = yield* exportAll(`${kit.baseUrl}/Patient/$export`)
        const plainKeys = [...plain.byType.values()].flat().map((r) => key(r as Resource))
        assert.deepStrictEqual([...new Set(found.map((f) => key(f.resource)))].sort(), plainKeys.sort())
      }),
  )

  it.scopedLive(
    "files split at resourcesPerFile: the header repeats and continuesInFile names the next file",
    () =>
      Effect.gen(function* () {
        const kit = yield* startKit(gen, { pollsBeforeDone: 0, resourcesPerFile: 7 })
        const plain = yield* exportAll(`${kit.baseUrl}/Patient/$export`)
        const plainKeys = [...plain.byType.values()].flat().map((r) => key(r as Resource))
        const { files } = yield* organizedExport(`${kit.baseUrl}/Patient/$export?organizeOutputBy=Patient`)
        assert.isAbove(files.length, 4)
        assert.isTrue(files.some((f) => f.item.continuesInFile !== undefined))
        for (const f of files) assert.isAtMost(f.item.count, 7)
        const found = blocks(files)
        assert.strictEqual(found.length, plainKeys.length, "no resource twice (no repeated owner by default)")
        assert.deepStrictEqual(found.map((f) => key(f.resource)).sort(), plainKeys.sort())
      }),
  )

  it.scopedLive("organizedRepeatOwner: the owner follows a repeated header", () =>
    Effect.gen(function* () {
      const kit = yield* startKit(gen, {
        pollsBeforeDone: 0,
        resourcesPerFile: 7,
        organizedRepeatOwner: true,
      })
      const { files } = yield* organizedExport(`${kit.baseUrl}/Patient/$export?organizeOutputBy=Patient`)
      const continuedFiles = files.filter((_, i) => files[i - 1]?.item.continuesInFile !== undefined)
      assert.isAbove(continuedFiles.length, 0)
      for (const f of continuedFiles) {
        assert.strictEqual(key(f.lines[1]!), headerOf(f.lines[0]), "the owner repeats after the header")
      }
      blocks(files)
    }),
  )

  it.scopedLive("system and Group levels; resources outside every compartment are named in error[]", () =>
    Effect.gen(function* () {
      const kit = yield* startKit(gen, { pollsBeforeDone: 0 })
      const system = yield* organizedExport(`${kit.baseUrl}/$export?organizeOutputBy=Patient`)
      assert.strictEqual(system.manifest.outputOrganizedBy, "Patient")
      const sysFound = blocks(system.files)
      assert.isFalse(sysFound.some((f) => f.resource.resourceType === "Organization"))
      assert.strictEqual(system.manifest.error.length, 1)
      const oo = lines((yield* http(system.manifest.error[0]!.url)).body)[0] as {
        issue: Array<{ severity: string; diagnostics: string }>
      }
      assert.strictEqual(oo.issue[0]!.severity, "warning")
      assert.match(oo.issue[0]!.diagnostics, /Organization: 1/)

      kit.sandbox.store.update({
        resourceType: "Group",
        id: "cohort",
        type: "person",
        actual: true,
        member: [
          { entity: { reference: "Patient/gen-pat-0" } },
          { entity: { reference: "Patient/gen-pat-3" } },
        ],
      })
      const group = yield* organizedExport(`${kit.baseUrl}/Group/cohort/$export?organizeOutputBy=Patient`)
      const found = blocks(group.files)
      assert.deepStrictEqual(
        [...new Set(found.map((f) => f.owner))],
        ["Patient/gen-pat-0", "Patient/gen-pat-3"],
      )
      // the Group is in both members' compartments, so in both blocks
      assert.deepStrictEqual(
        found.filter((f) => f.resource.resourceType === "Group").map((f) => f.owner),
        ["Patient/gen-pat-0", "Patient/gen-pat-3"],
      )
    }),
  )

  it.scopedLive("organizeOutputBy other than Patient is a 400 OperationOutcome", () =>
    Effect.gen(function* () {
      const kit = yield* startKit(gen)
      const r = yield* http(`${kit.baseUrl}/$export?organizeOutputBy=Encounter`, { headers: ASYNC })
      assert.strictEqual(r.status, 400)
      const body = json(r) as { resourceType: string; issue: Array<{ diagnostics: string }> }
      assert.strictEqual(body.resourceType, "OperationOutcome")
      assert.match(body.issue[0]!.diagnostics, /organizeOutputBy Encounter is not supported/)
    }),
  )
})
