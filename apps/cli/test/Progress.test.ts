import { assert, describe, it } from "@effect/vitest"
import * as Progress from "../src/Progress.js"

const t0 = 1_000_000

/** Folds `[ms after t0, event]` steps into a state. */
const play = (
  steps: ReadonlyArray<readonly [number, Progress.Event]>,
  from: Progress.State = Progress.initial,
): Progress.State => steps.reduce((s, [at, e]) => Progress.reduce(s, e, t0 + at), from)

const frame = (state: Progress.State, at: number, width = 200): string =>
  Progress.render(state, t0 + at, { width }).join("\n")

/** Whitespace-insensitive: columns are padded. */
const squash = (s: string) => s.replace(/\s+/g, " ")

const SECRET = "SECRET-6f1c"

const kickoff: ReadonlyArray<readonly [number, Progress.Event]> = [
  [0, { event: "start", source: `https://fhir.example/r4?token=${SECRET}`, level: "system", resumed: false }],
  [100, { event: "kickoff", statusUrl: `https://fhir.example/status/1?access_token=${SECRET}`, post: false }],
  [1100, { event: "progress", progress: "Patient: 10%" }],
  [2100, { event: "progress", progress: "\x1b[31m50%\x1b[0m\ndone" }],
]

const manifest = (observations: number | null): Progress.Event => ({
  event: "manifest",
  transactionTime: "2026-01-01T00:00:00Z",
  output: 3,
  deleted: 0,
  error: 0,
  types: { Patient: { files: 1, resources: 10 }, Observation: { files: 2, resources: observations } },
})

const downloads: ReadonlyArray<readonly [number, Progress.Event]> = [
  [
    3500,
    {
      event: "file-progress",
      kind: "output",
      type: "Observation",
      path: "data/Observation.000.ndjson",
      received: 100_000,
    },
  ],
  [
    4000,
    {
      event: "file",
      kind: "output",
      type: "Patient",
      path: "data/Patient.000.ndjson",
      count: 10,
      bytes: 20_000,
    },
  ],
  [
    5000,
    {
      event: "file-progress",
      kind: "output",
      type: "Observation",
      path: "data/Observation.000.ndjson",
      received: 300_000,
    },
  ],
  [
    6000,
    {
      event: "file",
      kind: "output",
      type: "Observation",
      path: "data/Observation.000.ndjson",
      count: 50,
      bytes: 500_000,
    },
  ],
]

const bulk = (observations: number | null = 100) =>
  play([...kickoff, [3000, manifest(observations)], ...downloads])

describe("Progress", () => {
  it("shows the phase: kick-off, then waiting with the server's X-Progress text (control characters removed)", () => {
    const started = play(kickoff.slice(0, 1))
    assert.include(frame(started, 10), "ferry export · 0s · kick-off")
    const waiting = play(kickoff.slice(0, 3))
    assert.include(frame(waiting, 1500), "waiting for the server for 1s: Patient: 10%")
    const later = play(kickoff)
    const text = frame(later, 2500)
    assert.include(text, "waiting for the server for 2s: [31m50% [0m done")
    assert.notInclude(text, "\x1b")
    assert.strictEqual(later.polls, 2)
    // Before the manifest there is no table and no rate line.
    assert.strictEqual(Progress.render(later, t0 + 2500, { width: 200 }).length, 1)
  })

  it("counts files, resources and bytes per type and in total, with the manifest's totals", () => {
    const state = bulk()
    const text = squash(frame(state, 8000))
    assert.include(text, "ferry export · 8s · downloading")
    assert.include(text, "Patient 1/1 files 10/10 resources 20.0 kB")
    assert.include(text, "Observation 1/2 files 50/100 resources 500.0 kB")
    assert.include(text, "total 2/3 files 60/110 resources 520.0 kB")
    const t = Progress.totals(state)
    assert.deepStrictEqual(t, { files: 2, filesTotal: 3, resources: 60, resourcesTotal: 110, bytes: 520_000 })
  })

  it("early-dropped: the files of a vanished job's partial manifests no longer count; the new job's do", () => {
    // files of partial manifests land before any manifest; the job vanishes; the new job's manifest and files
    const state = play([
      ...kickoff,
      ...downloads,
      [7000, { event: "early-dropped", files: 2 }],
      [7500, manifest(100)],
      ...downloads.map(([at, e]) => [at + 5000, e] as const),
    ])
    const t = Progress.totals(state)
    assert.deepStrictEqual(t, { files: 2, filesTotal: 3, resources: 60, resourcesTotal: 110, bytes: 520_000 })
    assert.include(Progress.notice({ event: "early-dropped", files: 2 }) ?? "", "dropped")
  })

  it("adds the bytes of files in flight to their type's row", () => {
    const state = play(
      [
        [
          6500,
          {
            event: "file-progress",
            kind: "output",
            type: "Observation",
            path: "data/Observation.001.ndjson",
            received: 40_000,
          },
        ],
      ],
      bulk(),
    )
    assert.include(squash(frame(state, 7000)), "Observation 1/2 files 50/100 resources 540.0 kB")
    assert.strictEqual(Progress.totals(state).bytes, 560_000)
  })

  it("measures rates over the last 5 seconds only", () => {
    const state = bulk()
    // Window [3 s, 8 s]: from the manifest (0 bytes, 0 resources) to 520 kB and 60 resources.
    const r = Progress.rates(state, t0 + 8000)
    assert.strictEqual(r.bytesPerSecond, 104_000)
    assert.strictEqual(r.resourcesPerSecond, 12)
    assert.include(squash(frame(state, 8000)), "104.0 kB/s · 12 resources/s")
    // One more chunk at 9 s; window [5 s, 10 s] starts at the 5 s sample (320 kB, 10 resources).
    const more = play(
      [
        [
          9000,
          {
            event: "file-progress",
            kind: "output",
            type: "Observation",
            path: "data/Observation.001.ndjson",
            received: 50_000,
          },
        ],
      ],
      state,
    )
    const r2 = Progress.rates(more, t0 + 10_000)
    assert.strictEqual(r2.bytesPerSecond, 50_000)
    assert.strictEqual(r2.resourcesPerSecond, 10)
    // Nothing arrives for a while: the rate falls to zero.
    assert.strictEqual(Progress.rates(more, t0 + 30_000).bytesPerSecond, 0)
    // Less than a second of history: no rate yet.
    const fresh = play(kickoff.slice(0, 1))
    assert.isUndefined(Progress.rates(fresh, t0 + 500).bytesPerSecond)
    // The wait for the server before the manifest does not dilute the rate: 100 kB in the 1 s since.
    const early = play([...kickoff, [3000, manifest(100)], ...downloads.slice(0, 1)])
    assert.strictEqual(Progress.rates(early, t0 + 4000).bytesPerSecond, 100_000)
    // Old samples are dropped (bounded memory), keeping one before the window.
    assert.isAtMost(more.samples.length, 5)
  })

  it("estimates the time left when the resource totals are known", () => {
    const state = bulk()
    // 50 resources left × (520 kB / 60 resources) at 104 kB/s ≈ 4.2 s.
    const ms = Progress.eta(state, t0 + 8000)
    assert.isDefined(ms)
    assert.closeTo(ms ?? 0, 4167, 1)
    assert.include(frame(state, 8000), "ETA 4s")
  })

  it("shows — for totals and ETA that are unknown", () => {
    const state = bulk(null)
    const text = squash(frame(state, 8000))
    assert.include(text, "Observation 1/2 files 50/— resources")
    assert.include(text, "total 2/3 files 60/— resources")
    assert.include(text, "ETA —")
    assert.isUndefined(Progress.eta(state, t0 + 8000))
    // Less than a second of history: no rate, no ETA.
    const fresh = play([
      [0, { event: "start" }],
      [200, manifest(100)],
    ])
    assert.include(frame(fresh, 500), "— · — · ETA —")
  })

  it("crawls without totals", () => {
    const state = play([
      [0, { event: "start", level: "system", resumed: false }],
      [
        50,
        { event: "fallback", detail: "the CapabilityStatement declares no $export at this level: crawling" },
      ],
      [
        900,
        {
          event: "file",
          kind: "output",
          type: "Patient",
          path: "data/Patient.000.ndjson",
          count: 10,
          bytes: 9000,
        },
      ],
    ])
    const text = squash(frame(state, 2000))
    assert.include(text, "crawling (search pages)")
    assert.include(text, "Patient 1/— files 10/— resources 9.0 kB")
    assert.include(text, "ETA —")
  })

  it("counts files an earlier run finished, without counting them in the rate", () => {
    const state = play([
      [0, { event: "start", level: "system", resumed: true }],
      [
        10,
        {
          event: "reattach",
          detail: "manifest already received",
          output: 1,
          deleted: 0,
          error: 0,
          types: { Patient: { files: 1, resources: 10 } },
        },
      ],
      [
        20,
        {
          event: "file-resumed",
          kind: "output",
          type: "Patient",
          path: "data/Patient.000.ndjson",
          count: 10,
          bytes: 20_000,
        },
      ],
    ])
    assert.include(squash(frame(state, 2000)), "Patient 1/1 files 10/10 resources 20.0 kB")
    assert.strictEqual(Progress.rates(state, t0 + 2000).bytesPerSecond, 0)
  })

  it("shows deleted and error files apart from the types", () => {
    const state = play([
      [0, { event: "start" }],
      [10, { event: "manifest", output: 0, deleted: 1, error: 1, types: {} }],
      [
        20,
        {
          event: "file",
          kind: "deleted",
          type: null,
          path: "deleted/Bundle.000.ndjson",
          count: 3,
          bytes: 300,
        },
      ],
    ])
    const text = squash(frame(state, 100))
    assert.include(text, "(deleted) 1/1 files 3 entries 300 B")
    assert.include(text, "(errors) 0/1 files 0 entries 0 B")
    assert.include(text, "total 1/2 files")
  })

  it("names the command given in the header", () => {
    const text = squash(frame(bulk(), 100))
    assert.include(text, "ferry export")
    const migrate = Progress.render(bulk(), t0 + 100, { width: 120, title: "ferry migrate" }).join("\n")
    assert.include(migrate, "ferry migrate")
    assert.notInclude(migrate, "ferry export")
  })

  it("follows attachments and finishes with the elapsed time", () => {
    const state = play(
      [
        [
          7000,
          {
            event: "attachment",
            url: `https://fhir.example/Binary/1?sig=${SECRET}`,
            sha256: "ab".repeat(32),
            size: 1500,
          },
        ],
        [
          7100,
          {
            event: "attachment-failed",
            url: `https://x/${SECRET}`,
            resource: "DocumentReference/1",
            path: "content",
            detail: "404",
          },
        ],
      ],
      bulk(),
    )
    let text = squash(frame(state, 7200))
    assert.include(text, "ferry export · 7s · downloading")
    assert.include(text, "attachments 1 fetched · 1.5 kB · 1 failed")
    const done = play(
      [
        [8000, { event: "released", statusUrl: `https://fhir.example/status/1?${SECRET}` }],
        [8100, { event: "done", resources: 60, bytes: 520_000, files: 2, attachments: 1 }],
      ],
      state,
    )
    text = squash(frame(done, 8100))
    assert.include(text, "ferry export · 8s · done")
    assert.include(text, "elapsed 8s")
    assert.strictEqual(Progress.eta(done, t0 + 8100), 0)
  })

  it("cuts every line to the width", () => {
    const state = bulk()
    for (const width of [1, 12, 30, 45]) {
      const lines = Progress.render(state, t0 + 8000, { width })
      assert.isAbove(lines.length, 3)
      for (const line of lines) assert.isAtMost(line.length, width)
      assert.isTrue(lines.some((l) => l.endsWith("…")))
    }
    assert.strictEqual(Progress.truncate("abcdef", 4), "abc…")
    assert.strictEqual(Progress.truncate("abc", 4), "abc")
  })

  it("styles lines only with color on (NO_COLOR off)", () => {
    const state = bulk()
    const plain = Progress.render(state, t0 + 8000, { width: 200, color: false })
    assert.isFalse(plain.some((l) => l.includes("\x1b")))
    const colored = Progress.render(state, t0 + 8000, { width: 200, color: true })
    assert.isTrue(colored[0]!.startsWith("\x1b[1m"))
    // The finished Patient row is dim; widths are cut before styling.
    assert.isTrue(colored.some((l) => l.startsWith("\x1b[2m") && l.includes("Patient")))
  })

  it("folds many types into one line", () => {
    const types = Object.fromEntries(
      Array.from({ length: 20 }, (_, i) => [`Type${String(i).padStart(2, "0")}`, { files: 1, resources: 1 }]),
    )
    const state = play([
      [0, { event: "start" }],
      [10, { event: "manifest", output: 20, deleted: 0, error: 0, types }],
      [
        20,
        {
          event: "file",
          kind: "output",
          type: "Type00",
          path: "data/Type00.000.ndjson",
          count: 1,
          bytes: 10,
        },
      ],
    ])
    const lines = Progress.render(state, t0 + 100, { width: 200, maxTypes: 5 })
    const rows = lines.filter((l) => l.trim().startsWith("Type"))
    assert.strictEqual(rows.length, 4)
    assert.isFalse(rows.some((l) => l.includes("Type00"))) // finished types go last
    assert.isTrue(lines.some((l) => squash(l).includes("+16 more types 1/16 files 1/16 resources 10 B")))
  })

  it("never shows tokens, URLs, paths or resource bodies from events", () => {
    const leaky: Progress.Event = {
      event: "file",
      kind: "output",
      type: "Patient",
      path: `data/${SECRET}.ndjson`,
      count: 1,
      bytes: 10,
      body: { resourceType: "Patient", name: [{ family: SECRET }] },
      token: SECRET,
      url: `https://fhir.example/file?token=${SECRET}`,
    }
    const states = [
      play(kickoff),
      bulk(),
      play(
        [
          [7000, leaky],
          [
            7100,
            {
              event: "file-progress",
              kind: "output",
              type: "Patient",
              path: `data/${SECRET}`,
              received: 5,
              authorization: SECRET,
            },
          ],
        ],
        bulk(),
      ),
      play([[6500, { event: "attachment", url: `https://x/${SECRET}`, sha256: SECRET, size: 1 }]], bulk()),
      play(
        [[7000, { event: "done", resources: 1, bytes: 1, files: 1, attachments: 0, token: SECRET }]],
        bulk(),
      ),
    ]
    for (const s of states) {
      for (const at of [7200, 20_000]) assert.notInclude(frame(s, at), SECRET)
    }
    // Values of the wrong type are ignored, not printed.
    const odd = play([
      [10, { event: "file", kind: "output", type: "Patient", path: "p", count: SECRET, bytes: SECRET }],
    ])
    assert.notInclude(frame(odd, 100), SECRET)
    assert.strictEqual(Progress.totals(odd).resources, 0)
  })

  it("does not change the state it is given", () => {
    const before = JSON.stringify(Progress.initial)
    const state = bulk()
    const copy = JSON.stringify(state)
    Progress.reduce(
      state,
      { event: "file", kind: "output", type: "Patient", path: "x", count: 1, bytes: 1 },
      t0 + 9000,
    )
    assert.strictEqual(JSON.stringify(Progress.initial), before)
    assert.strictEqual(JSON.stringify(state), copy)
  })

  it("keeps warnings and changes of course as lines above the frame, nothing else", () => {
    assert.strictEqual(
      Progress.notice({ event: "warning", detail: "could not release\x1b[2J the job" }),
      "ferry export: WARNING: could not release [2J the job",
    )
    assert.include(Progress.notice({ event: "expired", status: 410, url: "u" }) ?? "", "manifest again")
    assert.include(Progress.notice({ event: "manifest-renewed", renewal: 1 }) ?? "", "new URLs")
    assert.include(
      Progress.notice({ event: "resume", file: "data/P.000.ndjson", offset: 2048, reason: "range" }) ?? "",
      "2,048",
    )
    assert.isUndefined(Progress.notice({ event: "resume", file: "x", offset: -1, reason: "broke" }))
    // a damaged partial download started over: said in words, not as the event's JSON
    assert.strictEqual(
      Progress.notice({
        event: "resume",
        file: "data/C.000.ndjson",
        offset: 0,
        reason: "the partial download is damaged",
      }),
      "ferry export: data/C.000.ndjson: downloading again from the start (the partial download is damaged)",
    )
    for (const event of ["file", "file-progress", "progress", "manifest", "attachment", "done"]) {
      assert.isUndefined(Progress.notice({ event }))
    }
  })

  it("redraws a frame in place: cursor up over the old lines, clear each, clear a leftover tail", () => {
    assert.strictEqual(Progress.paint(0, ["a", "b"]), "\x1b[2Ka\n\x1b[2Kb\n")
    assert.strictEqual(Progress.paint(2, ["c", "d"]), "\r\x1b[2A\x1b[2Kc\n\x1b[2Kd\n")
    assert.strictEqual(Progress.paint(3, ["e"]), "\r\x1b[3A\x1b[2Ke\n\x1b[J")
    assert.strictEqual(Progress.above(2, "WARNING"), "\r\x1b[2A\x1b[JWARNING\n")
    assert.strictEqual(Progress.above(0, "WARNING"), "WARNING\n")
  })

  it("formats numbers and durations", () => {
    assert.strictEqual(Progress.formatCount(1_234_567), "1,234,567")
    assert.strictEqual(Progress.formatBytes(999), "999 B")
    assert.strictEqual(Progress.formatBytes(2_500_000), "2.5 MB")
    assert.strictEqual(Progress.formatDuration(42_000), "42s")
    assert.strictEqual(Progress.formatDuration(185_000), "3m 05s")
    assert.strictEqual(Progress.formatDuration(7_380_000), "2h 03m")
  })
  it("repeatsCapped: the first 20 lines of each per-item failure kind, then one line for the rest; others pass", () => {
    const capped = Progress.repeatsCapped("ferry export:")
    const failed = Array.from({ length: 25 }, (_, i) => capped("attachment-failed", `failed ${i}`))
    assert.deepStrictEqual(
      failed.slice(0, 20),
      Array.from({ length: 20 }, (_, i) => `failed ${i}`),
    )
    assert.strictEqual(
      failed[20],
      "ferry export: more attachments failed: not shown one by one (each is in events.ndjson; the summary counts them)",
    )
    assert.deepStrictEqual(failed.slice(21), [undefined, undefined, undefined, undefined])
    // each kind counts on its own; other events and absent lines are untouched
    assert.strictEqual(capped("quarantined", "q 0"), "q 0")
    assert.strictEqual(capped("file", "a file"), "a file")
    assert.strictEqual(capped("attachment-failed", undefined), undefined)
    for (let i = 1; i < 20; i++) capped("quarantined", `q ${i}`)
    assert.include(capped("quarantined", "q 20") ?? "", "more resources were quarantined")
  })
})
