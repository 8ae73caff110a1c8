/** `ferry …` run in this process (the CLI's `run`), its stdout and stderr captured, the exit code as the CLI gives it. */
import { NodeContext } from "@effect/platform-node"
import { type Console, Effect, Exit } from "effect"
import { run } from "../../src/Cli.js"
import * as Render from "../../src/Render.js"

export const ferry = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const out: Array<string> = []
    const base = yield* Effect.console
    const capture: Console.Console = {
      ...base,
      log: (...xs: ReadonlyArray<unknown>) => Effect.sync(() => void out.push(xs.join(" "))),
      error: (...xs: ReadonlyArray<unknown>) => Effect.sync(() => void out.push(xs.join(" "))),
    }
    const exit = yield* Effect.exit(run(["node", "ferry", ...args]).pipe(Effect.withConsole(capture)))
    return {
      code: Exit.isSuccess(exit) ? 0 : Render.exitCode(exit.cause),
      output: `${out.join("\n")}\n${Exit.isFailure(exit) ? Render.line(exit.cause) : ""}`,
    }
  }).pipe(Effect.provide(NodeContext.layer))
