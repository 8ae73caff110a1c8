import { fileURLToPath } from "node:url"

/** The bundled CLI, built by `npm run build` (the root `npm test` builds first). */
export const ferryBin: string = fileURLToPath(new URL("../../apps/cli/dist/bin.js", import.meta.url))
