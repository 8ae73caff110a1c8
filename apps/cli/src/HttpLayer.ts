/**
 * The HTTP client every command uses: undici's `request` API through @effect/platform-node. Measured against
 * `FetchHttpClient` (global fetch) in the same process on small attachment GETs it costs a fraction of the
 * CPU per request (bench/export, docs/benchmarks.md). Redirects are not followed by the client: FhirClient
 * follows them itself, one hop at a time, so that credentials never cross to another host.
 */
import { NodeHttpClient } from "@effect/platform-node"

export const layer = NodeHttpClient.layerUndici
