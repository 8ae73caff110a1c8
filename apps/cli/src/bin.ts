#!/usr/bin/env node
// First: V8 heap sizing must be set before the rest of the CLI is loaded.
import "./internal/Heap.js"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, Console, Effect, Exit, FiberId, Logger } from "effect"
import * as Cli from "./Cli.js"
import * as Render from "./Render.js"

// Failures become one line on stderr and a documented exit code (Render.ts); never a stack trace.
// Log lines (warnings of the libraries: a stale archive lock taken over, …) go to stderr: stdout carries only
// what a command prints there, the `--json` summary among it.
/** Whether the command printed anything on stdout (a `--json` failure result goes only where none was). */
let printed = false
/**
 * Colour and bold codes (the help text's, made by @effect/cli) only for a terminal: piped into a file, `less` or
 * `grep`, or with NO_COLOR set, stdout gets plain text.
 */
const plain = process.stdout.isTTY !== true || (process.env.NO_COLOR ?? "") !== ""
const styles = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g")
const write = process.stdout.write.bind(process.stdout)
process.stdout.write = ((chunk: string | Uint8Array, ...rest: Array<never>) => {
  printed = true
  return write(plain && typeof chunk === "string" ? chunk.replace(styles, "") : chunk, ...rest)
}) as typeof process.stdout.write

// the top-level help is Ferry's own overview (see Cli.overview); a command's `--help` is @effect/cli's
const args = process.argv.slice(2)
const overview = args.length === 0 || (args.length === 1 && (args[0] === "--help" || args[0] === "-h"))

;(overview ? Console.log(Cli.overview()) : Cli.run(process.argv)).pipe(
  Effect.tapErrorCause((cause) => Render.report(cause, process.argv[2], Cli.flagsOf(process.argv[2]))),
  // `--json` asks for a machine-readable result on stdout: a failure that printed none gets one too
  Effect.tapErrorCause((cause) =>
    process.argv.includes("--json") && !printed
      ? Render.jsonFailure(cause, process.argv[2], Cli.flagsOf(process.argv[2]))
      : Effect.void,
  ),
  // (interruption, Ctrl-C or SIGTERM, is no error these taps see: its own result)
  Effect.onInterrupt(() =>
    process.argv.includes("--json") && !printed
      ? Render.jsonFailure(Cause.interrupt(FiberId.none), process.argv[2])
      : Effect.void,
  ),
  Effect.provide(NodeContext.layer),
  Effect.provide(Logger.replace(Logger.defaultLogger, Render.logLine)),
  (main) =>
    NodeRuntime.runMain(main, {
      disableErrorReporting: true,
      disablePrettyLogger: true,
      teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) ? 0 : Render.exitCode(exit.cause)),
    }),
)

// The launcher's signal handlers for the load (launcher.mjs) give way to the runtime's, which runMain has just
// installed: a signal that arrived while the bundle loaded is dispatched from the event loop, to the runtime's
// (removed before them, it reached no listener at all and was lost: the command ran on).
const releaseEarlySignals: unknown = (globalThis as Record<symbol, unknown>)[
  Symbol.for("ferry.releaseEarlySignals")
]
if (typeof releaseEarlySignals === "function") releaseEarlySignals()
