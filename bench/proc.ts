/** Process figures the benches read from /proc (Linux). NaN without a pid or once the process is gone. */
import { readFileSync } from "node:fs"

/** utime + stime in seconds from a /proc stat file (clock ticks of 1/100 s on Linux). */
const cpuOf = (statFile: string): number => {
  let stat: string
  try {
    stat = readFileSync(statFile, "utf8")
  } catch {
    return Number.NaN
  }
  // the fields after the command name, which is in parentheses and may hold spaces: utime and stime are the
  // 14th and 15th fields of the line, the 12th and 13th after the name
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/** CPU seconds (user + system) of a process so far, all its threads (GC helpers, the libuv pool) included. */
export const processCpuSecs = (pid: number | undefined): number =>
  pid === undefined ? Number.NaN : cpuOf(`/proc/${pid}/stat`)

/**
 * CPU seconds of a process's main thread so far: for a Node server, what its JavaScript (and SQLite, which
 * runs there) needs; it cannot exceed the wall time, which the whole process's CPU can.
 */
export const mainThreadCpuSecs = (pid: number | undefined): number =>
  pid === undefined ? Number.NaN : cpuOf(`/proc/${pid}/task/${pid}/stat`)
