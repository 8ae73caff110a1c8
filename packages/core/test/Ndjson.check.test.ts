/**
 * `Ndjson.isResourceOfType` (the export's non-allocating line check) against `JSON.parse`: it must never
 * accept a line that `JSON.parse` + the type check would refuse, and must accept every real line.
 */
import * as NFS from "node:fs"
import { describe, expect, it } from "vitest"
import { NdjsonError } from "../src/Ndjson.js"
import * as Ndjson from "../src/Ndjson.js"

const byParse = (text: string, type: string): boolean => {
  try {
    const v = JSON.parse(text) as unknown
    return (
      typeof v === "object" &&
      v !== null &&
      !Array.isArray(v) &&
      (v as { resourceType?: unknown }).resourceType === type
    )
  } catch {
    return false
  }
}

const dir = new URL("../../../../shared/data/sample-bulk-10-patients/", import.meta.url)
const sample = NFS.readdirSync(dir)
  .filter((f) => f.endsWith(".ndjson"))
  .flatMap((f) => {
    const type = f.split(".")[0]!
    return NFS.readFileSync(new URL(f, dir), "utf8")
      .split("\n")
      .filter((l) => l !== "")
      .map((text) => ({ type, text }))
  })

describe("Ndjson.isResourceOfType", () => {
  it("accepts every line of the 10-patient sample with its file's type, and no other type", () => {
    expect(sample.length).toBeGreaterThan(7000)
    for (const { type, text } of sample) {
      expect(Ndjson.isResourceOfType(text, type)).toBe(true)
      expect(Ndjson.isResourceOfType(text, `${type}X`)).toBe(false)
      expect(Ndjson.isResourceOfType(text, type.slice(0, -1))).toBe(false)
    }
  })

  it("refuses every truncation of real lines (never accepts what JSON.parse refuses)", () => {
    for (const { type, text } of sample.filter((_, i) => i % 400 === 0)) {
      for (let cut = 0; cut < text.length; cut += 1) {
        const part = text.slice(0, cut)
        expect(Ndjson.isResourceOfType(part, type), part).toBe(byParse(part, type))
      }
    }
  })

  it("agrees with JSON.parse on the grammar's corners", () => {
    const cases = [
      '{"resourceType":"Patient"}',
      ' {"resourceType" : "Patient" } ',
      '{"resourceType":"Patient",}',
      '{"resourceType":"Patient" "id":"1"}',
      '{"resourceType":"Patient","a":[1,2,]}',
      '{"resourceType":"Patient","a":[]}',
      '{"resourceType":"Patient","a":{}}',
      '{"resourceType":"Patient","a":01}',
      '{"resourceType":"Patient","a":-0.5e+10}',
      '{"resourceType":"Patient","a":-}',
      '{"resourceType":"Patient","a":1.}',
      '{"resourceType":"Patient","a":.5}',
      '{"resourceType":"Patient","a":1e}',
      '{"resourceType":"Patient","a":tru}',
      '{"resourceType":"Patient","a":true,"b":false,"c":null}',
      '{"resourceType":"Patient","a":"\\u00e9\\n\\"\\\\\\/"}',
      '{"resourceType":"Patient","a":"\\x"}',
      '{"resourceType":"Patient","a":"\\u12G4"}',
      '{"resourceType":"Patient","a":"tab\there"}',
      '{"resourceType":"Patient","a":"é ✓ 𝄞"}',
      '{"resourceType":"Patient"}{}',
      '{"resourceType":"Patient"} x',
      '["resourceType","Patient"]',
      '"Patient"',
      '{"resourceType":1}',
      '{"resourceType":"Patients"}',
      '{"resourceType":"Pat"}',
      '{"contained":[{"resourceType":"Patient"}],"resourceType":"Observation"}',
      '{"a":{"resourceType":"Patient"}}',
      '{"resourceType":"Patient","resourceType":"Patient"}',
      "",
      "{",
    ]
    for (const c of cases) {
      const ours = Ndjson.isResourceOfType(c, "Patient")
      // never more permissive than JSON.parse; the documented fallbacks (a duplicate resourceType) are false
      if (ours) expect(byParse(c, "Patient"), c).toBe(true)
      else if (c !== '{"resourceType":"Patient","resourceType":"Patient"}')
        expect(byParse(c, "Patient"), c).toBe(false)
    }
    expect(Ndjson.isResourceOfType(`${"[".repeat(600)}${"]".repeat(600)}`, "Patient")).toBe(false)
  })

  it("checker: parses only wanted lines, checks the rest, and reports bad lines as parser does (file:line)", () => {
    const seen: Array<string | undefined> = []
    const c = Ndjson.checker(
      { file: "data/Patient.000.ndjson", resourceType: "Patient" },
      (text) => text.includes('"url"'),
      (item) => seen.push(item === undefined ? undefined : String(item.value.id)),
    )
    c.push(
      Buffer.from(
        '{"resourceType":"Patient","id":"a"}\n{"resourceType":"Patient","id":"b","photo":[{"url":"x"}]}\n',
      ),
    )
    c.end()
    expect(seen).toEqual([undefined, "b"])
    const bad = Ndjson.checker(
      { file: "f.ndjson", resourceType: "Patient" },
      () => false,
      () => undefined,
    )
    let error: unknown
    try {
      bad.push(Buffer.from('{"resourceType":"Patient"}\n{"resourceType":"Observation"}\n'))
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(NdjsonError)
    expect((error as NdjsonError).reason).toBe("UnexpectedType")
    expect((error as NdjsonError).line).toBe(2)
  })

  it("checker with a key: parses the lines where it is an object key at any depth, or any \\u escape is", () => {
    const seen: Array<string | undefined> = []
    const c = Ndjson.checker(
      { file: "data/Patient.000.ndjson", resourceType: "Patient" },
      { key: "url" },
      (item) => seen.push(item === undefined ? undefined : String(item.value.id)),
    )
    const lines = [
      { resourceType: "Patient", id: "plain", name: [{ text: "url" }], note: '"url":"x"' },
      { resourceType: "Patient", id: "deep", photo: [{ contentType: "image/png", url: "Binary/p" }] },
      { resourceType: "Patient", id: "top", url: "x" },
      { resourceType: "Patient", id: "urls", urls: "x", uri: "y" },
    ].map((r) => JSON.stringify(r))
    // a key spelled with an escape, and an escape in a value
    lines.push('{"resourceType":"Patient","id":"escaped-key","photo":[{"\\u0075rl":"Binary/q"}]}')
    lines.push('{"resourceType":"Patient","id":"escaped-value","name":[{"text":"Zo\\u00eb"}]}')
    c.push(Buffer.from(`${lines.join("\n")}\n`))
    c.end()
    expect(seen).toEqual([undefined, "deep", "top", undefined, "escaped-key", "escaped-value"])
    // the check is the same as without a key: a line of another type is still refused
    const other = Ndjson.checker(
      { file: "f.ndjson", resourceType: "Patient" },
      { key: "url" },
      () => undefined,
    )
    expect(() => other.push(Buffer.from('{"resourceType":"Observation","url":"x"}\n'))).toThrow(NdjsonError)
  })
})
