import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import * as Imports from "../src/Imports.js"

describe("Imports layout", () => {
  it("names one folder per target, stable and filesystem-safe", () => {
    expect(Imports.targetSlug("http://127.0.0.1:8080/fhir")).toBe("127.0.0.1_8080_fhir")
    expect(Imports.targetSlug("https://fhir.example.org/r4/")).toBe("fhir.example.org_r4")
    expect(Imports.targetSlug("https://user@h/a?b=c")).toBe("user_h_a_b_c")
    expect(Imports.idMapPath("/a", "http://h:1/fhir")).toBe("/a/imports/h_1_fhir/idmap.ndjson")
    expect(Imports.quarantineDir("/a", "http://h:1/fhir")).toBe("/a/imports/h_1_fhir/quarantine")
  })
})

describe("quarantineKey", () => {
  it("a resource by Type/id, a bodiless line by its file:line, one without a line by itself", () => {
    const line = (o: unknown) => JSON.stringify(o)
    const a = line({
      resource: { resourceType: "Patient", id: "1" },
      outcome: 1,
      reason: "x",
      source: "data/P.ndjson:3",
    })
    const b = line({
      resource: { resourceType: "Patient", id: "1" },
      outcome: 2,
      reason: "y",
      source: "data/P.ndjson:3",
    })
    expect(Imports.quarantineKey(a)).toBe(Imports.quarantineKey(b))
    const c = line({ resource: null, outcome: 1, reason: "r", source: "data/P.ndjson:7" })
    const d = line({ resource: null, outcome: 2, reason: "r", source: "data/P.ndjson:7" })
    expect(Imports.quarantineKey(c)).toBe(Imports.quarantineKey(d))
    // the target named no line: each rejection is its own
    const e = line({ resource: null, outcome: 1, reason: "r", source: "data/P.ndjson" })
    const f = line({ resource: null, outcome: 2, reason: "r", source: "data/P.ndjson" })
    expect(Imports.quarantineKey(e)).not.toBe(Imports.quarantineKey(f))
  })
})

describe("quarantineCounts", () => {
  it("counts each resource once, as waiting when its newest line waits (a .replaying line is older)", () => {
    const dir = NFS.mkdtempSync(Path.join(OS.tmpdir(), "ferry-quarantine-"))
    try {
      const q = Imports.quarantineDir(dir, "http://h:1/fhir")
      NFS.mkdirSync(q, { recursive: true })
      const line = (id: string, waitingOn?: string, cause?: "archive") =>
        JSON.stringify({
          resource: { resourceType: "Observation", id },
          outcome: null,
          reason: "x",
          source: "data/Observation.000.ndjson:1",
          ...(waitingOn !== undefined ? { waitingOn } : {}),
          ...(cause !== undefined ? { cause } : {}),
        })
      // set aside by a retry: o1 waited; quarantined again since: o1 refused now, o2 waiting
      // (written in the other order than a listing by name gives them, whatever the file system lists first)
      NFS.writeFileSync(Path.join(q, "Observation.ndjson"), `${line("o1")}\n${line("o2", "Patient/p")}\n`)
      NFS.writeFileSync(Path.join(q, "Observation.ndjson.replaying"), `${line("o1", "Patient/p")}\n`)
      expect(Imports.quarantineCounts(dir, "http://h:1/fhir")).toEqual({ total: 2, waiting: 1, inArchive: 0 })
      expect(Imports.pendingQuarantine(dir, "http://h:1/fhir")).toBe(2)
      // one Ferry set aside itself (the archive holds it without an id): neither refused nor waiting
      NFS.appendFileSync(Path.join(q, "Observation.ndjson"), `${line("o3", undefined, "archive")}\n`)
      expect(Imports.quarantineCounts(dir, "http://h:1/fhir")).toEqual({ total: 3, waiting: 1, inArchive: 1 })
    } finally {
      NFS.rmSync(dir, { recursive: true, force: true })
    }
  })
})
