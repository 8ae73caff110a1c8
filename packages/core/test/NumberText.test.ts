import { readdirSync, readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"
import {
  carryNumbers,
  hasOddNumbers,
  keepNumbersOf,
  numbersLost,
  numbersOf,
  parseKeepingNumbers,
  restoreNumbers,
  stringifyKeepingNumbers,
  withNumbers,
  writtenNumbers,
} from "../src/NumberText.js"

const sample = new URL("../../../../shared/data/sample-bulk-10-patients/", import.meta.url)

/** What a parse and re-serialisation makes of `text`, its numbers restored. */
const roundTrip = (text: string) => restoreNumbers(text, JSON.stringify(JSON.parse(text)))

describe("restoreNumbers (decimal precision across a rewrite)", () => {
  it("writes each number as the original did: trailing zeros, exponents, -0, long decimals", () => {
    expect(roundTrip('{"valueQuantity":{"value":1.0,"unit":"mg"}}')).toBe(
      '{"valueQuantity":{"value":1.0,"unit":"mg"}}',
    )
    expect(roundTrip('{"total":16942.30,"n":[0.0,-0,1E5,1.5e-7,0.010,100]}')).toBe(
      '{"total":16942.30,"n":[0.0,-0,1E5,1.5e-7,0.010,100]}',
    )
    expect(roundTrip('{"big":12345678901234567890,"precise":0.12345678901234567890}')).toBe(
      '{"big":12345678901234567890,"precise":0.12345678901234567890}',
    )
    // whitespace is the serialiser's, the numbers the original's
    expect(roundTrip('{"a": 1.0 , "b" :[ 2.50 ]}')).toBe('{"a":1.0,"b":[2.50]}')
  })

  it("leaves digits inside strings alone, and text with nothing to restore as it is", () => {
    const text = '{"id":"1.0","code":"-0","text":"a \\"2.50\\" b","v":2.50}'
    expect(roundTrip(text)).toBe('{"id":"1.0","code":"-0","text":"a \\"2.50\\" b","v":2.50}')
    expect(hasOddNumbers('{"a":1,"b":[20,-3],"c":"1.0","d":1.5}')).toBe(false)
    expect(hasOddNumbers('{"a":1.50}')).toBe(true)
    const plain = '{"a":1,"b":0.5}'
    expect(restoreNumbers(plain, JSON.stringify(JSON.parse(plain)))).toBe(plain)
  })

  it("guesses nothing when the numbers do not pair up: other counts or other values", () => {
    expect(restoreNumbers('{"a":1.0}', '{"a":1,"b":2}')).toBe('{"a":1,"b":2}')
    expect(restoreNumbers('{"a":1.0,"b":2}', '{"a":1}')).toBe('{"a":1}')
    expect(restoreNumbers('{"a":1.0}', '{"a":2}')).toBe('{"a":2}')
    // prefix: the serialised text is what the original begins with (a quarantine line's resource)
    expect(restoreNumbers('{"resource":{"v":1.0},"outcome":{"n":3}}', '{"v":1}', { prefix: true })).toBe(
      '{"v":1.0}',
    )
    expect(restoreNumbers('{"resource":{"v":1.0}}', '{"v":1,"w":2}', { prefix: true })).toBe('{"v":1,"w":2}')
  })

  it("numbers a rewrite dropped from meta (a tag with a decimal, dropped) are left out; the others pair as before", () => {
    const line =
      '{"resourceType":"Observation","meta":{"tag":[{"extension":[{"valueDecimal":0.5}]}],"security":[{"extension":[{"valueInteger":3}]}]},"valueQuantity":{"value":1.50},"referenceRange":[{"low":{"value":3.0}}]}'
    const dropTag = { ...JSON.parse(line), meta: { security: JSON.parse(line).meta.security } }
    expect(restoreNumbers(line, JSON.stringify(dropTag))).toBe(
      '{"resourceType":"Observation","meta":{"security":[{"extension":[{"valueInteger":3}]}]},"valueQuantity":{"value":1.50},"referenceRange":[{"low":{"value":3.0}}]}',
    )
    // the resource inside a Bundle entry; an older tag replaced by a new one (an element dropped)
    const tagged =
      '{"resourceType":"Basic","meta":{"tag":[{"code":"old","extension":[{"valueDecimal":9.0}]},{"code":"k","extension":[{"valueDecimal":2.50}]}]},"v":1.0}'
    const entry = {
      fullUrl: "Basic/b",
      resource: {
        resourceType: "Basic",
        meta: { tag: [{ code: "k", extension: [{ valueDecimal: 2.5 }] }, { code: "new" }] },
        v: 1,
      },
      request: { method: "PUT", url: "Basic/b" },
    }
    expect(restoreNumbers(tagged, JSON.stringify(entry))).toBe(
      '{"fullUrl":"Basic/b","resource":{"resourceType":"Basic","meta":{"tag":[{"code":"k","extension":[{"valueDecimal":2.50}]},{"code":"new"}]},"v":1.0},"request":{"method":"PUT","url":"Basic/b"}}',
    )
    // elsewhere nothing is matched by content: a rewritten reference that makes one element equal another keeps
    // each element's own numbers (they pair in order, as always)
    const components =
      '{"resourceType":"Observation","meta":{"tag":[{"extension":[{"valueDecimal":0.50}]}]},"component":[{"valueReference":{"reference":"urn:uuid:x"},"valueQuantity":{"value":1.0}},{"valueReference":{"reference":"Patient/9"},"valueQuantity":{"value":1.00}}]}'
    const rewritten = {
      resourceType: "Observation",
      meta: {},
      component: [
        { valueReference: { reference: "Patient/9" }, valueQuantity: { value: 1 } },
        { valueReference: { reference: "Patient/9" }, valueQuantity: { value: 1 } },
      ],
    }
    expect(restoreNumbers(components, JSON.stringify(rewritten))).toBe(
      '{"resourceType":"Observation","meta":{},"component":[{"valueReference":{"reference":"Patient/9"},"valueQuantity":{"value":1.0}},{"valueReference":{"reference":"Patient/9"},"valueQuantity":{"value":1.00}}]}',
    )
    // a quarantine line's resource, a number of its meta dropped
    expect(
      restoreNumbers(
        '{"resource":{"resourceType":"Basic","meta":{"tag":[{"n":0.10}]},"v":1.0},"outcome":{"n":2}}',
        '{"resourceType":"Basic","meta":{},"v":1}',
        { prefix: true },
      ),
    ).toBe('{"resourceType":"Basic","meta":{},"v":1.0}')
  })

  it("withNumbers: the numbers given, in order, where they differ in writing only", () => {
    expect(numbersOf('{"a":1.0,"s":"2.0","b":[-0,3E2]}')).toEqual(["1.0", "-0", "3E2"])
    expect(withNumbers('{"a":1,"b":[0,300]}', ["1.0", "-0", "3E2"])).toBe('{"a":1.0,"b":[-0,3E2]}')
    expect(withNumbers('{"a":1}', ["1.0", "2"])).toBe('{"a":1}')
    expect(withNumbers('{"a":1}', ["1.0", "2"], { prefix: true })).toBe('{"a":1.0}')
  })

  it("restores every line of the bulk sample after a parse, number for number", () => {
    let odd = 0
    for (const file of readdirSync(sample).filter((f) => f.endsWith(".ndjson")))
      for (const line of readFileSync(new URL(file, sample), "utf8")
        .split("\n")
        .filter((l) => l.trim() !== "")) {
        const value: unknown = JSON.parse(line)
        const json = restoreNumbers(line, JSON.stringify(value))
        if (hasOddNumbers(line)) odd++
        expect(JSON.parse(json)).toEqual(value)
        expect(numbersOf(json)).toEqual(numbersOf(line))
      }
    // the sample's MedicationRequests hold `1.0`s: the case this exists for
    expect(odd).toBeGreaterThan(300)
  })
})

const entries = (u: unknown) => (u as { entry: Array<{ resource: object }> }).entry.map((e) => e.resource)

describe("parseKeepingNumbers (numbers as written, remembered per parsed resource)", () => {
  it("gives each Bundle entry's resource its own run of the numbers as written", () => {
    const bundle = parseKeepingNumbers(
      '{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Basic","v":1.0,"w":[2]}},{"resource":{"resourceType":"Basic","v":3}},{"resource":{"resourceType":"Basic","v":4.50}}]}',
    )
    // (an entry whose numbers are all written as JSON.stringify writes them keeps nothing)
    expect(entries(bundle).map((r) => writtenNumbers(r))).toEqual([["1.0", "2"], undefined, ["4.50"]])
    expect(entries(bundle).map((r) => stringifyKeepingNumbers(r))).toEqual([
      '{"resourceType":"Basic","v":1.0,"w":[2]}',
      '{"resourceType":"Basic","v":3}',
      '{"resourceType":"Basic","v":4.50}',
    ])
  })

  it("finds the runs of a searchset page whatever stands before its entries (total, scores)", () => {
    const page = parseKeepingNumbers(
      '{"resourceType":"Bundle","type":"searchset","total":2,"entry":[{"resource":{"resourceType":"Observation","valueQuantity":{"value":7.0}},"search":{"mode":"match","score":1.0}},{"resource":{"resourceType":"Observation","valueQuantity":{"value":7.25}}}]}',
    )
    expect(entries(page).map((r) => writtenNumbers(r))).toEqual([["7.0"], undefined])
    expect(stringifyKeepingNumbers(entries(page)[0])).toBe(
      '{"resourceType":"Observation","valueQuantity":{"value":7.0}}',
    )
  })

  it("keeps none when the value's key order may not be the text's: a duplicate key, a key like an index", () => {
    // one entry's duplicate key costs that entry (and the Bundle) its numbers as written, not its neighbours
    const bundle = parseKeepingNumbers(
      '{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Basic","id":"d","v":5,"w":2.0,"v":1}},{"resource":{"resourceType":"Basic","v":1.0}}]}',
    ) as object
    expect(entries(bundle).map((r) => writtenNumbers(r))).toEqual([undefined, ["1.0"]])
    expect(entries(bundle).map((r) => numbersLost(r))).toEqual([true, false])
    expect(numbersLost(bundle)).toBe(true)
    // a search page with a resource holding a key like "1": the other resources keep theirs (contained too)
    const page = parseKeepingNumbers(
      '{"resourceType":"Bundle","type":"searchset","total":3,"entry":[{"resource":{"resourceType":"Observation","id":"o1","valueQuantity":{"value":1.50},"component":[{"valueQuantity":{"value":0.0}},{"valueInteger":9007199254740993}]}},{"resource":{"resourceType":"Observation","id":"k1","extension":[{"valueQuantity":{"value":1.50,"1":"x"}}]}},{"resource":{"resourceType":"MedicationRequest","id":"m","contained":[{"resourceType":"Medication","id":"x","amount":{"numerator":{"value":2.0}},"1":3}],"dose":0.50}}]}',
    ) as object
    const [o1, k1, m] = entries(page) as Array<{ contained?: Array<object> }>
    expect(stringifyKeepingNumbers(o1)).toBe(
      '{"resourceType":"Observation","id":"o1","valueQuantity":{"value":1.50},"component":[{"valueQuantity":{"value":0.0}},{"valueInteger":9007199254740993}]}',
    )
    expect(numbersLost(k1!)).toBe(true)
    // the MedicationRequest's contained Medication has the key like "1": the Medication is lost, and so is
    // the MedicationRequest around it; nothing else
    expect(numbersLost(m!)).toBe(true)
    expect(numbersLost(m!.contained![0]!)).toBe(true)
    expect(numbersLost(o1!)).toBe(false)
    // a contained resource whose Type/id a later top-level resource has too: each keeps its own texts
    const sameIds = parseKeepingNumbers(
      '{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"MedicationRequest","id":"a","contained":[{"resourceType":"Medication","id":"1","amount":{"numerator":{"value":2.50}}}],"dose":3.0}},{"resource":{"resourceType":"Observation","id":"k","v":{"1":"x"}}},{"resource":{"resourceType":"Medication","id":"1","amount":{"numerator":{"value":1.0}}}}]}',
    ) as object
    const [a, , med] = entries(sameIds) as Array<{ contained?: Array<object> }>
    expect(stringifyKeepingNumbers(med)).toBe(
      '{"resourceType":"Medication","id":"1","amount":{"numerator":{"value":1.0}}}',
    )
    expect(stringifyKeepingNumbers(a!.contained![0])).toBe(
      '{"resourceType":"Medication","id":"1","amount":{"numerator":{"value":2.50}}}',
    )
    // a Bundle entry whose resource is given twice (JSON.parse keeps the last): which text is whose cannot be
    // told, so it is lost, not given the first one's texts
    const twice = parseKeepingNumbers(
      '{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation","id":"a","valueQuantity":{"value":1.0}},"resource":{"resourceType":"Observation","id":"a","valueQuantity":{"value":1.00}}}]}',
    ) as object
    const [kept] = entries(twice)
    expect(writtenNumbers(kept!)).toBeUndefined()
    expect(numbersLost(kept!)).toBe(true)
    // the numbers pair up by count and value, but the first "a" holds none: "1.0" would land on "b"
    const dup = parseKeepingNumbers('{"resourceType":"Basic","a":"x","b":1,"a":1.0}') as object
    expect(writtenNumbers(dup)).toBeUndefined()
    expect(stringifyKeepingNumbers(dup)).toBe('{"resourceType":"Basic","a":1,"b":1}')
    // a key like "1" is listed first by JavaScript, whatever the text's order
    const indexed = parseKeepingNumbers('{"resourceType":"Basic","b":1.0,"1":1}') as object
    expect(writtenNumbers(indexed)).toBeUndefined()
    // keys inside strings and escaped quotes are no keys; whitespace before the colon is
    const spaced = parseKeepingNumbers('{"resourceType" : "Basic", "t":"a\\":b", "v" :1.0}') as object
    expect(stringifyKeepingNumbers(spaced)).toBe('{"resourceType":"Basic","t":"a\\":b","v":1.0}')
  })

  it("keeps nothing for text whose numbers JSON.stringify writes the same; carries a run to a copy", () => {
    const plain = parseKeepingNumbers('{"resourceType":"Patient","a":1,"b":2.5}') as object
    expect(writtenNumbers(plain)).toBeUndefined()
    expect(stringifyKeepingNumbers(plain)).toBe('{"resourceType":"Patient","a":1,"b":2.5}')
    const line = '{"resourceType":"Basic","id":"a","v":0.10}'
    const r = keepNumbersOf(JSON.parse(line) as Record<string, unknown>, line)
    expect(stringifyKeepingNumbers(carryNumbers(r, { ...r, id: "b" }))).toBe(
      '{"resourceType":"Basic","id":"b","v":0.10}',
    )
    expect(stringifyKeepingNumbers({ ...r })).toBe('{"resourceType":"Basic","id":"a","v":0.1}')
  })
})
