#!/usr/bin/env node
// First: V8 heap sizing must be set before the rest of the CLI is loaded.
import "./internal/Heap.js"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Effect, Exit, Logger } from "effect"
import { run } from "./Cli.js"
import * as Render from "./Render.js"

// Failures become one line on stderr and a documented exit code (Render.ts); never a stack trace.
// Log lines (warnings of the libraries: a stale archive lock taken over, …) go to stderr: stdout carries only
// what a command prints there, the `--json` summary among it.
run(process.argv).pipe(
  Effect.tapErrorCause((cause) => Render.report(cause, process.argv[2])),
  Effect.provide(NodeContext.layer),
  Effect.provide(Logger.replace(Logger.defaultLogger, Render.logLine)),
  (main) =>
    NodeRuntime.runMain(main, {
      disableErrorReporting: true,
      disablePrettyLogger: true,
      teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) ? 0 : Render.exitCode(exit.cause)),
    }),
)
