/** Process figures the benches read from /proc (Linux). */
import { readFileSync } from "node:fs"

/** utime + stime of a process so far, in seconds, from /proc (clock ticks of 1/100 s on Linux); NaN without a pid. */
export const processCpuSecs = (pid: number | undefined): number => {
  if (pid === undefined) return Number.NaN
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return (Number(fields[11]) + Number(fields[12])) / 100
}
