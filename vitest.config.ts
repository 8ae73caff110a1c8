import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"
import { BaseSequencer, type TestSpecification } from "vitest/node"

/**
 * Seconds each long test file took in a whole run (2 workers, fresh-clone CI, 2026-12-07), longest first. CI starts
 * from a clean clone, so vitest has no durations of its own and would order the files by size: the demo (short file,
 * ≈ 25 s) then started last and ran alone at the end. A file missing here only starts after these.
 */
const measured: Readonly<Record<string, number>> = {
  "test/import.test.ts": 250,
  "test/migrate.test.ts": 250,
  "test/export.test.ts": 190,
  "test/verify.test.ts": 90,
  "packages/import/test/Import.test.ts": 80,
  "test/export-faults.test.ts": 60,
  "test/plan.test.ts": 55,
  "packages/export/test/Export.test.ts": 45,
  "test/export-organized.test.ts": 43,
  "packages/verify/test/Verify.test.ts": 33,
  "test/demo.test.ts": 25,
  "test/cli.test.ts": 16,
  "packages/archive/test/Archive.test.ts": 13,
}

const root = fileURLToPath(new URL(".", import.meta.url))

/** Longest first, so the two workers finish together; the rest in vitest's own order. */
class LongestFirst extends BaseSequencer {
  override async sort(files: Array<TestSpecification>): Promise<Array<TestSpecification>> {
    const ordered = await super.sort(files)
    const weight = (f: TestSpecification) =>
      measured[Path.relative(root, f.moduleId).split(Path.sep).join("/")] ?? 0
    return [...ordered].sort((a, b) => weight(b) - weight(a))
  }
}

/**
 * Files that need a worker of their own, with vitest's module reset before each file: a test of process-wide
 * state (the lost-lock flag the CLI's exit code reads is the process's) or of a mocked `node:fs`. They run after
 * the others, in fresh workers; the memory test (it measures the process's RSS) after those, in another.
 */
const alone = ["packages/archive/test/PackDurability.test.ts", "apps/cli/test/Render.test.ts"].map((f) =>
  Path.join(root, f),
)
const memory = [Path.join(root, "packages/core/test/Ndjson.memory.test.ts")]

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    // Test files share their worker's modules: Effect, the platform, the sandbox and Ferry's packages are loaded
    // once per worker, not once per file (≈ 1.3 s of CPU each, ≈ 130 s a run; the run ≈ 100 s shorter on this
    // 2-core machine). The setup file undoes what `@effect/vitest`'s `layer` leaves on the shared `it`.
    setupFiles: [Path.join(root, "test/setup/effectVitest.ts")],
    poolOptions: { forks: { maxForks: 2, minForks: 1, isolate: false } },
    sequence: { sequencer: LongestFirst },
    projects: [
      {
        extends: true,
        test: {
          name: "shared",
          include: ["packages/*/test/**/*.test.ts", "apps/*/test/**/*.test.ts", "test/**/*.test.ts"],
          exclude: ["**/node_modules/**", "**/build/**", "**/dist/**", ...alone, ...memory],
        },
      },
      {
        extends: true,
        test: { name: "alone", include: alone, poolOptions: { forks: { isolate: true } } },
      },
      {
        extends: true,
        test: { name: "memory", include: memory, poolOptions: { forks: { isolate: true } } },
      },
    ],
  },
})
