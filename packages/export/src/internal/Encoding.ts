/**
 * Content-Encodings Ferry undoes: the NDJSON downloads ask for them, and an attachment host may send them
 * unasked (an object store serving a file uploaded gzip-encoded sends `Content-Encoding: gzip` whatever the
 * request says). Ferry's HTTP client hands over the bytes as sent.
 */
import type { Duplex } from "node:stream"
import * as Zlib from "node:zlib"

/** 256 KiB output chunks (zlib's default is 16 KiB): a sixteenth of the steps through the hot loop. */
const decoders: Readonly<Record<string, () => Duplex>> = {
  gzip: () => Zlib.createGunzip({ chunkSize: 256 * 1024 }),
  "x-gzip": () => Zlib.createGunzip({ chunkSize: 256 * 1024 }),
  deflate: () => Zlib.createInflate({ chunkSize: 256 * 1024 }),
  br: () => Zlib.createBrotliDecompress({ chunkSize: 256 * 1024 }),
}

/**
 * What undoes the `Content-Encoding` header's value: `"none"` for none or `identity`, a decoder's maker, or
 * `"unknown"` for an encoding Ferry cannot undo (the body must not be kept as if it were the content).
 */
export const decoderFor = (encoding: string | undefined): "none" | "unknown" | (() => Duplex) => {
  const name = (encoding ?? "").trim().toLowerCase()
  if (name === "" || name === "identity") return "none"
  return decoders[name] ?? "unknown"
}
