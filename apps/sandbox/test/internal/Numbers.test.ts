import { describe, expect, it } from "vitest"
import { parseKeepingNumbers, writtenNumbers } from "../../src/internal/Numbers.js"

const entries = (u: unknown) => (u as { entry: Array<{ resource: object }> }).entry.map((e) => e.resource)

describe("parseKeepingNumbers", () => {
  it("gives each Bundle entry's resource its own run of the numbers as written", () => {
    const bundle = parseKeepingNumbers(
      '{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"v":1.0,"w":[2]}},{"resource":{"v":3}},{"resource":{"v":4.50}}]}',
    )
    expect(entries(bundle).map((r) => writtenNumbers(r))).toEqual([["1.0", "2"], ["3"], ["4.50"]])
  })

  it("keeps none when the text holds numbers its value does not (a duplicate key, a number out of range): runs would shift", () => {
    for (const first of ['{"resource":{"v":5,"v":1}}', '{"resource":{"v":1e400}}']) {
      const bundle = parseKeepingNumbers(
        `{"resourceType":"Bundle","type":"transaction","entry":[${first},{"resource":{"v":1.0}},{"resource":{"v":1}}]}`,
      )
      expect(entries(bundle).map((r) => writtenNumbers(r))).toEqual([undefined, undefined, undefined])
    }
  })

  it("keeps nothing for text whose numbers JSON.stringify writes the same, and for numbers outside the resource", () => {
    expect(
      writtenNumbers(parseKeepingNumbers('{"resourceType":"Patient","a":1,"b":2.5}') as object),
    ).toBeUndefined()
    const entry = parseKeepingNumbers('{"resource":{"v":1.0},"search":{"score":1.0}}') as { resource: object }
    expect(writtenNumbers(entry.resource)).toBeUndefined()
  })
})
