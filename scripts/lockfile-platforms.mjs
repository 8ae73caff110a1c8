// The npm registry mirror on Ferry's build machines lacks some other-platform builds
// (@biomejs/cli-*, @rollup/rollup-*, @turbo/*), so `npm install` leaves them out of
// package-lock.json and `npm ci` then refuses the lockfile ("Missing: … from lock file").
// This adds the optional platform packages that their parents declare, with os/cpu/libc,
// exactly as npm writes them where the registry has them. Run after `npm install`.
import { readFileSync, writeFileSync } from "node:fs"

const path = new URL("../package-lock.json", import.meta.url)
const lock = JSON.parse(readFileSync(path, "utf8"))
const packages = lock.packages

const platformOf = (name) => {
  const s = name.slice(name.indexOf("/") + 1)
  const os =
    ["android", "darwin", "freebsd", "linux", "openbsd", "openharmony", "netbsd", "sunos", "aix"].find((o) =>
      s.includes(o),
    ) ?? (s.includes("win32") || s.includes("windows") ? "win32" : undefined)
  const cpus = ["arm64", "x64", "ia32", "arm", "loong64", "ppc64", "riscv64", "s390x", "mips64el"]
  let cpu = cpus.find((c) => new RegExp(`(^|-)${c}(-|$)`).test(s))
  if (!cpu && /(^|-)64$/.test(s)) cpu = "x64"
  if (!cpu && s.includes("arm-")) cpu = "arm"
  const libc = s.includes("musl") ? "musl" : s.includes("gnu") ? "glibc" : undefined
  return { os, cpu, libc }
}

let added = 0
for (const [key, pkg] of Object.entries(packages)) {
  if (!key.startsWith("node_modules/") || !pkg.optionalDependencies) continue
  const parent = key.slice("node_modules/".length)
  if (!/^(@biomejs\/biome|rollup|turbo)$/.test(parent)) continue
  for (const [name, version] of Object.entries(pkg.optionalDependencies)) {
    const entry = `node_modules/${name}`
    if (packages[entry]) continue
    const { os, cpu, libc } = platformOf(name)
    packages[entry] = {
      version,
      ...(cpu ? { cpu: [cpu] } : {}),
      dev: pkg.dev,
      ...(libc ? { libc: [libc] } : {}),
      license: pkg.license,
      optional: true,
      ...(os ? { os: [os] } : {}),
    }
    if (packages[entry].dev === undefined) delete packages[entry].dev
    added++
  }
}
lock.packages = Object.fromEntries(
  Object.entries(packages).sort(([a], [b]) => (a === "" ? -1 : b === "" ? 1 : a < b ? -1 : a > b ? 1 : 0)),
)
writeFileSync(path, `${JSON.stringify(lock, null, 2)}\n`)
console.log(`lockfile-platforms: added ${added} optional platform entries`)
