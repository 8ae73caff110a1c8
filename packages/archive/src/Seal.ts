/**
 * A sealed archive: one file holding a finished archive, encrypted to one recipient's X25519 public key, for
 * disaster-recovery copies kept where others can read them (`ferry seal`, `ferry unseal`).
 *
 * Format `ferry-sealed/1`:
 * - a first line of JSON (the header): `{"format", "chunk", "recipient", "epk", "key"}`: `recipient` the
 *   recipient key's JWK thumbprint (RFC 7638), `epk` a fresh ephemeral X25519 public key (JWK), `key` the file
 *   key (32 random bytes) encrypted with AES-256-GCM under `HKDF-SHA256(X25519(epk, recipient), salt = epk.x ‖
 *   recipient.x, info = "ferry-sealed/1")` (nonce 0: each key-encryption key is used once);
 * - then the payload in chunks of `chunk` bytes (the last one shorter, possibly empty), each AES-256-GCM under
 *   the file key with nonce = 11-byte big-endian chunk number ‖ 1 byte (1 for the last chunk, else 0) and the
 *   header line's sha256 as additional data, followed by its 16-byte tag (age's STREAM construction: a chunk
 *   changed, moved, dropped or cut off, or a header changed, fails to open);
 * - the payload: records of `[u32 BE length][JSON {path, size}][size bytes]`, one per file, ended by
 *   `{"end": true, "files": n}`.
 *
 * What is sealed: `manifest.json`, `checksums.sha256` and every file it lists (data, deleted and error files,
 * blobs, packs, the attachment index), each re-hashed against its row while it is read. Not sealed: the
 * journal, the event log, the lock and `imports/` (what one run did against one target: a restore starts
 * afresh). An unsealed archive is the archive as it was: `unseal` writes it as `<out>.part`, checks it with
 * `verifyChecksums`, and only then renames it to `<out>`. Memory stays flat: one chunk at a time.
 */
import {
  type Hash,
  type KeyObject,
  createCipheriv,
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
} from "node:crypto"
import * as NFS from "node:fs"
import * as Path from "node:path"
import { breathe } from "@ferry/core/Breathe"
import { fsProblem } from "@ferry/core/FsProblem"
import { isPastedSecret } from "@ferry/core/PastedSecret"
import { Effect, Exit, Stream } from "effect"
import * as Archive from "./Archive.js"
import { SealError } from "./SealError.js"

export const FORMAT = "ferry-sealed/1"
/** The marker an unseal's `<out>.part` folder holds while it is written: one without it is not removed. */
const PART_MARKER = ".ferry-unseal-part"
/** Whether the file at `path` starts as a sealed file does (a seal's own leftover `<out>.part`). */
const sealedLeftover = (path: string): boolean => {
  try {
    const fd = NFS.openSync(path, "r")
    try {
      const head = Buffer.alloc(32)
      const n = NFS.readSync(fd, head, 0, 32, 0)
      return head.subarray(0, n).toString().startsWith(`{"format":"${FORMAT}"`)
    } finally {
      NFS.closeSync(fd)
    }
  } catch {
    return false
  }
}
const CHUNK = 64 * 1024
const TAG = 16
const INFO = Buffer.from(FORMAT)

export interface SealHeader {
  readonly format: typeof FORMAT
  readonly chunk: number
  readonly recipient: string
  readonly epk: { readonly kty: "OKP"; readonly crv: "X25519"; readonly x: string }
  readonly key: string
}

// ---------------------------------------------------------------------------------------------------------
// Keys

/** An X25519 key's public `x` (32 bytes, from its JWK). */
const publicX = (key: KeyObject): Buffer => Buffer.from(String(key.export({ format: "jwk" }).x), "base64url")

/** The RFC 7638 thumbprint of an X25519 public key: what a header names its recipient by. */
export const thumbprint = (key: KeyObject): string =>
  createHash("sha256")
    .update(JSON.stringify({ crv: "X25519", kty: "OKP", x: publicX(key).toString("base64url") }))
    .digest("base64url")

/** A new X25519 key pair: the private JWK (with `kid`, `use: "enc"`) and its public JWK. */
export const generateKey = (): {
  readonly privateJwk: Record<string, string>
  readonly publicJwk: Record<string, string>
} => {
  const { privateKey, publicKey } = generateKeyPairSync("x25519")
  const kid = thumbprint(publicKey)
  const priv = privateKey.export({ format: "jwk" }) as Record<string, string>
  const pub = publicKey.export({ format: "jwk" }) as Record<string, string>
  return {
    privateJwk: { ...priv, kid, use: "enc" },
    publicJwk: { kty: String(pub.kty), crv: String(pub.crv), x: String(pub.x), kid, use: "enc" },
  }
}

const keyProblem = (
  path: string,
  what: string,
  advice = "make one with ferry keys generate --alg X25519 --out <file>",
) => new SealError({ reason: "Key", path, detail: `${what}; ${advice}` })

/** What to do with a key file that is not the private key unsealing needs. */
const privateNeeded =
  "unsealing needs the private key it was sealed to (the file ferry keys generate --alg X25519 wrote)"

/**
 * The X25519 key in `path` (a JWK, or PEM): `public` for sealing (a private key file works too: its public
 * half is taken), `private` for unsealing.
 */
export const readKey = (path: string, want: "public" | "private"): Effect.Effect<KeyObject, SealError> =>
  Effect.suspend(() => {
    // a key pasted where its file's path goes is not repeated in the message (it would reach a terminal or a log)
    if (isPastedSecret(path))
      return Effect.fail(
        new SealError({
          reason: "Key",
          path: want === "public" ? "--to" : "--key",
          detail:
            "the value is not a file path (not shown: the key itself?); give the path of the file that holds the key",
        }),
      )
    let text: string
    try {
      text = NFS.readFileSync(path, "utf8")
    } catch (cause) {
      return Effect.fail(
        new SealError({
          reason: "Key",
          path,
          detail: `the key file could not be read (${fsProblem(cause)}); give the path of the key file (ferry keys generate --alg X25519 writes one)`,
          cause,
        }),
      )
    }
    let key: KeyObject
    try {
      const trimmed = text.trim()
      if (trimmed.startsWith("{")) {
        const jwk = JSON.parse(trimmed) as Record<string, unknown>
        const isPrivate = typeof jwk.d === "string"
        if (want === "private" && !isPrivate)
          return Effect.fail(keyProblem(path, "this is a public key", privateNeeded))
        key = isPrivate
          ? createPrivateKey({ key: jwk as never, format: "jwk" })
          : createPublicKey({ key: jwk as never, format: "jwk" })
      } else {
        if (want === "private" && !trimmed.includes("PRIVATE KEY"))
          return Effect.fail(keyProblem(path, "this is no private key", privateNeeded))
        key = trimmed.includes("PRIVATE KEY") ? createPrivateKey(trimmed) : createPublicKey(trimmed)
      }
    } catch {
      return Effect.fail(
        keyProblem(path, "this is no X25519 key (neither a JWK nor a PEM one could be read)"),
      )
    }
    if (key.asymmetricKeyType !== "x25519")
      return Effect.fail(
        keyProblem(
          path,
          `this is ${key.asymmetricKeyType === undefined ? "an unknown" : `an ${key.asymmetricKeyType.toUpperCase()}`} key, and archives are sealed to X25519 keys`,
        ),
      )
    return Effect.succeed(want === "public" && key.type === "private" ? createPublicKey(key) : key)
  })

/**
 * X25519 between `privateKey` and `publicKey`; undefined for a public key no agreement can be made with (a
 * low-order point: OpenSSL refuses it, and an all-zero secret is refused here all the same).
 */
const agree = (privateKey: KeyObject, publicKey: KeyObject): Buffer | undefined => {
  try {
    const shared = diffieHellman({ privateKey, publicKey })
    return shared.every((b) => b === 0) ? undefined : shared
  } catch {
    return undefined
  }
}

/** Whether anything is at `path`, a dangling symbolic link included. */
const taken = (path: string): boolean => {
  try {
    NFS.lstatSync(path)
    return true
  } catch {
    return false
  }
}

/** The folder holding `path` fsynced (a rename into place is durable only then). */
const putInPlace = (path: string): Effect.Effect<void, SealError> =>
  Effect.mapError(Archive.syncParent(Path.resolve(path)), (e) => io(path, "could not be made durable")(e))

const keyEncryptionKey = (shared: Buffer, epkX: Buffer, recipientX: Buffer): Buffer =>
  Buffer.from(hkdfSync("sha256", shared, Buffer.concat([epkX, recipientX]), INFO, 32))

const ZERO_NONCE = Buffer.alloc(12)

// ---------------------------------------------------------------------------------------------------------
// The chunked stream

const nonceOf = (n: number, last: boolean): Buffer => {
  const nonce = Buffer.alloc(12)
  nonce.writeUIntBE(n, 5, 6)
  nonce[11] = last ? 1 : 0
  return nonce
}

/** Encrypts pushed bytes into chunks written by `out`; `finish` writes the last one. */
const sealer = (key: Buffer, aad: Buffer, out: (bytes: Buffer) => void) => {
  const pending = Buffer.alloc(CHUNK)
  let filled = 0
  let held: Buffer | undefined
  let n = 0
  const emit = (plain: Buffer, last: boolean) => {
    const c = createCipheriv("aes-256-gcm", key, nonceOf(n++, last))
    c.setAAD(aad)
    out(Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]))
  }
  return {
    push: (bytes: Uint8Array) => {
      let off = 0
      while (off < bytes.length) {
        const take = Math.min(CHUNK - filled, bytes.length - off)
        pending.set(bytes.subarray(off, off + take), filled)
        filled += take
        off += take
        if (filled === CHUNK) {
          // a full chunk is written once more bytes are known to follow (the last one carries the flag)
          if (held !== undefined) emit(held, false)
          held = Buffer.from(pending)
          filled = 0
        }
      }
    },
    finish: () => {
      if (filled > 0) {
        if (held !== undefined) emit(held, false)
        emit(pending.subarray(0, filled), true)
      } else emit(held ?? Buffer.alloc(0), true)
    },
  }
}

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n)
  return b
}

// ---------------------------------------------------------------------------------------------------------
// Seal

const io = (path: string, what: string) => (cause: unknown) =>
  new SealError({ reason: "Io", path, detail: `${what} (${fsProblem(cause)})`, cause })

/**
 * The archive's files to seal with the sha256 their row gives (undefined: not listed, as the manifest and the
 * index of a `/2` archive): `checksums.sha256` first, so that an unseal knows every later file's hash as it
 * writes it; then the manifest; then every row, in path order.
 */
const sealedFiles = (
  dir: string,
): Effect.Effect<ReadonlyArray<readonly [string, string | undefined]>, SealError> =>
  Archive.checksumRows(Path.join(dir, Archive.layout.checksums)).pipe(
    Stream.runCollect,
    Effect.map((rows) => {
      const byPath = new Map<string, string | undefined>([[Archive.layout.manifest, undefined]])
      for (const [h, p] of rows) byPath.set(p, h)
      if (
        NFS.existsSync(Path.join(dir, Archive.layout.attachmentIndex)) &&
        !byPath.has(Archive.layout.attachmentIndex)
      )
        byPath.set(Archive.layout.attachmentIndex, undefined)
      const rest = [...byPath]
        .filter(([p]) => p !== Archive.layout.manifest && p !== Archive.layout.checksums)
        .sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0))
      return [
        [Archive.layout.checksums, undefined] as const,
        [Archive.layout.manifest, byPath.get(Archive.layout.manifest)] as const,
        ...rest,
      ]
    }),
    Effect.mapError((e) => new SealError({ reason: "Archive", path: dir, detail: e.message, cause: e })),
  )

export interface SealResult {
  readonly out: string
  readonly files: number
  readonly bytes: number
  readonly recipient: string
}

/**
 * Seal the finished archive `dir` to `recipient` (an X25519 public key) as the file `out` (0600; written as
 * `<out>.part`, renamed when whole). The archive is verified first (`verifyChecksums`), and each file re-hashed
 * against its row as it is sealed.
 */
export const seal = (dir: string, recipient: KeyObject, out: string): Effect.Effect<SealResult, SealError> =>
  Effect.gen(function* () {
    const archiveFailed = (e: { readonly message: string }) =>
      new SealError({ reason: "Archive", path: dir, detail: e.message, cause: e })
    const manifest = yield* Effect.mapError(Archive.readManifest(dir), archiveFailed)
    if (!manifest.complete)
      return yield* new SealError({
        reason: "Archive",
        path: dir,
        detail:
          "the archive is unfinished (its export did not complete); run the same ferry export again to finish it, then seal it",
      })
    // the listing here; each file's bytes against its row as it is sealed (one pass over the archive)
    const mismatches = yield* Effect.mapError(Archive.verifyListing(dir, manifest), archiveFailed)
    if (mismatches.length > 0)
      return yield* new SealError({
        reason: "Archive",
        path: dir,
        detail: Archive.describeMismatches(mismatches, manifest),
      })
    if (taken(out))
      return yield* new SealError({
        reason: "Exists",
        path: out,
        detail: "already exists; choose another --out (a sealed archive is never written over)",
      })
    const files = yield* sealedFiles(dir)
    const unsafe = files.find(([rel]) => !safePath(rel))
    if (unsafe !== undefined)
      return yield* new SealError({
        reason: "Archive",
        path: dir,
        detail: `${unsafe[0]} has a name unseal would refuse (only letters, digits and . _ - in each part): rename it, with its rows in manifest.json and checksums.sha256, or export again`,
      })
    const part = `${out}.part`
    // a <out>.part this command did not leave (a sealed file's first line) is not removed
    if (taken(part) && !sealedLeftover(part))
      return yield* new SealError({
        reason: "Exists",
        path: part,
        detail: "exists and was not left by ferry seal; move it away, or choose another --out",
      })
    const fileKey = randomBytes(32)
    const recipientX = publicX(recipient)
    const eph = generateKeyPairSync("x25519")
    const epkX = publicX(eph.publicKey)
    const shared = agree(eph.privateKey, recipient)
    if (shared === undefined)
      return yield* new SealError({
        reason: "Key",
        path: "--to",
        detail:
          "the public key is not one a key can be agreed with (a low-order X25519 point); give the public key ferry keys generate --alg X25519 printed",
      })
    const kek = keyEncryptionKey(shared, epkX, recipientX)
    const wrap = createCipheriv("aes-256-gcm", kek, ZERO_NONCE)
    const wrapped = Buffer.concat([wrap.update(fileKey), wrap.final(), wrap.getAuthTag()])
    const header: SealHeader = {
      format: FORMAT,
      chunk: CHUNK,
      recipient: thumbprint(recipient),
      epk: { kty: "OKP", crv: "X25519", x: epkX.toString("base64url") },
      key: wrapped.toString("base64url"),
    }
    const headerLine = Buffer.from(`${JSON.stringify(header)}\n`)
    const fd = yield* Effect.try({
      try: () => {
        NFS.rmSync(part, { force: true })
        NFS.mkdirSync(Path.dirname(Path.resolve(part)), { recursive: true, mode: 0o700 })
        return NFS.openSync(part, "wx", 0o600)
      },
      catch: io(part, "the sealed file could not be created"),
    })
    let written = 0
    const write = (b: Buffer) => {
      let off = 0
      while (off < b.length) off += NFS.writeSync(fd, b, off, b.length - off)
      written += b.length
    }
    const body = Effect.gen(function* () {
      write(headerLine)
      const s = sealer(fileKey, createHash("sha256").update(headerLine).digest(), write)
      const buf = Buffer.allocUnsafe(CHUNK)
      for (const [rel, expected] of files) {
        const path = Path.join(dir, rel)
        yield* Effect.try({
          try: () => {
            const rfd = NFS.openSync(path, "r")
            try {
              const size = NFS.fstatSync(rfd).size
              const head = Buffer.from(JSON.stringify({ path: rel, size }))
              s.push(u32(head.length))
              s.push(head)
              const hash = createHash("sha256")
              let at = 0
              while (at < size) {
                const got = NFS.readSync(rfd, buf, 0, Math.min(CHUNK, size - at), at)
                if (got === 0) throw new Error(`${rel} became shorter while it was sealed`)
                const piece = buf.subarray(0, got)
                hash.update(piece)
                s.push(piece)
                at += got
              }
              const actual = hash.digest("hex")
              return expected !== undefined && actual !== expected
                ? Archive.describeMismatches([{ path: rel, problem: "Changed", expected, actual }], manifest)
                : undefined
            } finally {
              NFS.closeSync(rfd)
            }
          },
          catch: io(path, "could not be sealed"),
        }).pipe(
          Effect.flatMap((changed) =>
            changed === undefined
              ? Effect.void
              : Effect.fail(new SealError({ reason: "Archive", path: dir, detail: changed })),
          ),
        )
        // (a Ctrl-C is heard between files, not only at the end)
        yield* breathe
      }
      const end = Buffer.from(JSON.stringify({ end: true, files: files.length }))
      s.push(u32(end.length))
      s.push(end)
      s.finish()
      NFS.fsyncSync(fd)
    })
    yield* body.pipe(
      Effect.catchAllDefect((cause) => Effect.fail(io(part, "the sealed file could not be written")(cause))),
      Effect.ensuring(Effect.sync(() => NFS.closeSync(fd))),
      // (also when stopped: a torn sealed file is no copy)
      Effect.onExit((exit) =>
        Exit.isSuccess(exit) ? Effect.void : Effect.sync(() => NFS.rmSync(part, { force: true })),
      ),
    )
    yield* Effect.try({
      try: () => NFS.renameSync(part, out),
      catch: io(out, "the sealed file could not be put in place"),
    })
    yield* putInPlace(out)
    return { out, files: files.length, bytes: written, recipient: header.recipient } satisfies SealResult
  })

// ---------------------------------------------------------------------------------------------------------
// Unseal

/** A path a sealed record may name: relative, inside the archive, plain names only. */
const safePath = (rel: unknown): rel is string =>
  typeof rel === "string" &&
  rel.length > 0 &&
  rel.length < 512 &&
  rel.split("/").every((seg) => /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(seg)) &&
  rel !== Archive.layout.lock

const readHeader = (
  file: string,
  fd: number,
): Effect.Effect<{ header: SealHeader; line: Buffer }, SealError> =>
  Effect.suspend(() => {
    const head = Buffer.alloc(4096)
    const got = NFS.readSync(fd, head, 0, head.length, 0)
    const nl = head.subarray(0, got).indexOf(10)
    const notSealed = new SealError({
      reason: "NotSealed",
      path: file,
      detail: `this is no sealed Ferry archive (its first line is not a ${FORMAT} header); give the file ferry seal wrote`,
    })
    if (nl < 0) return Effect.fail(notSealed)
    const line = Buffer.from(head.subarray(0, nl + 1))
    let h: Partial<SealHeader>
    try {
      h = JSON.parse(line.toString("utf8")) as Partial<SealHeader>
    } catch {
      return Effect.fail(notSealed)
    }
    if (typeof h !== "object" || h === null) return Effect.fail(notSealed)
    if (
      h.format !== FORMAT ||
      h.chunk !== CHUNK ||
      typeof h.key !== "string" ||
      typeof h.epk?.x !== "string" ||
      typeof h.recipient !== "string"
    )
      return Effect.fail(
        typeof h.format === "string" && h.format.startsWith("ferry-sealed/") && h.format !== FORMAT
          ? new SealError({
              reason: "NotSealed",
              path: file,
              detail: `it is sealed as ${h.format}, which this ferry does not read (it reads ${FORMAT}); use a newer ferry`,
            })
          : notSealed,
      )
    return Effect.succeed({ header: h as SealHeader, line })
  })

export interface UnsealResult {
  readonly out: string
  readonly files: number
}

/**
 * Unseal `file` with `key` (the recipient's X25519 private key) into the new folder `out` (written as
 * `<out>.part`, checked with `verifyChecksums`, then renamed; folders 0700, files 0600).
 */
export const unseal = (file: string, key: KeyObject, out: string): Effect.Effect<UnsealResult, SealError> =>
  Effect.gen(function* () {
    if (taken(out))
      return yield* new SealError({
        reason: "Exists",
        path: out,
        detail: "already exists; choose another --out (an archive is unsealed into a new folder)",
      })
    const part = `${out}.part`
    if (taken(part) && !taken(Path.join(part, PART_MARKER)))
      return yield* new SealError({
        reason: "Exists",
        path: part,
        detail: "exists and was not left by ferry unseal; move it away, or choose another --out",
      })
    const fd = yield* Effect.try({
      try: () => NFS.openSync(file, "r"),
      catch: io(file, "the sealed file could not be opened"),
    })
    /** Whether this run made `<out>.part` (only then is it removed when the run fails or is stopped). */
    let made = false
    const run = Effect.gen(function* () {
      const { header, line } = yield* readHeader(file, fd)
      const mine = thumbprint(createPublicKey(key))
      if (mine !== header.recipient)
        return yield* new SealError({
          reason: "Key",
          path: file,
          detail: `it was sealed to another key (${header.recipient}) than this one (${mine}); give the private key it was sealed to`,
        })
      const headerChanged = new SealError({
        reason: "Damaged",
        path: file,
        detail: "its header was changed (the file key does not open with this key)",
      })
      let epk: KeyObject
      try {
        epk = createPublicKey({ key: { kty: "OKP", crv: "X25519", x: header.epk.x } as never, format: "jwk" })
      } catch {
        return yield* headerChanged
      }
      const shared = agree(key, epk)
      if (shared === undefined) return yield* headerChanged
      const kek = keyEncryptionKey(shared, publicX(epk), publicX(createPublicKey(key)))
      let fileKey: Buffer
      try {
        const wrapped = Buffer.from(header.key, "base64url")
        // (32 bytes of key and a whole tag: a shorter tag is not taken)
        if (wrapped.length !== 32 + TAG) throw new Error("not a wrapped key")
        const d = createDecipheriv("aes-256-gcm", kek, ZERO_NONCE)
        d.setAuthTag(wrapped.subarray(wrapped.length - TAG))
        fileKey = Buffer.concat([d.update(wrapped.subarray(0, wrapped.length - TAG)), d.final()])
      } catch {
        return yield* headerChanged
      }
      const aad = createHash("sha256").update(line).digest()
      // (a leftover of an earlier run, marked as such, is replaced)
      NFS.rmSync(part, { recursive: true, force: true })
      NFS.mkdirSync(part, { recursive: true, mode: 0o700 })
      made = true
      NFS.writeFileSync(Path.join(part, PART_MARKER), "", { mode: 0o600 })

      // the payload's records, parsed as the chunks open
      let state: "length" | "head" | "body" | "done" = "length"
      let need = 4
      const acc: Array<Buffer> = []
      let accLen = 0
      let current: { fd: number; left: number; rel: string; hash: Hash } | undefined
      let files = 0
      /**
       * The rows of `checksums.sha256` (sealed first): each later file is hashed as it is written and checked
       * against its row when whole, so the archive is checked in the same pass (`written`: the listed ones met).
       */
      let rows: Map<string, string> | undefined
      let written = 0
      /** A file written whole: its sha256 against its row; the checksum file's rows read in. */
      const closeFile = (f: { fd: number; rel: string; hash: Hash }): SealError | undefined => {
        NFS.fsyncSync(f.fd)
        NFS.closeSync(f.fd)
        const actual = f.hash.digest("hex")
        if (rows === undefined) {
          if (f.rel !== Archive.layout.checksums)
            return damaged(
              `its first file is ${f.rel}, not ${Archive.layout.checksums} (the file was changed)`,
            )
          rows = new Map()
          for (const l of NFS.readFileSync(Path.join(part, f.rel), "utf8").split("\n")) {
            const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(l)
            if (m !== null) rows.set(m[2]!, m[1]!)
            else if (l !== "")
              return damaged(`its ${Archive.layout.checksums} holds a line that is not \`<sha256>  <path>\``)
          }
          return undefined
        }
        const expected = rows.get(f.rel)
        if (expected === undefined) return undefined
        written++
        return expected === actual
          ? undefined
          : damaged(
              `the unsealed archive is not whole: ${Archive.describeMismatches([{ path: f.rel, problem: "Changed", expected, actual }])}`,
            )
      }
      const ended = () => state === "done"
      const damaged = (detail: string) => new SealError({ reason: "Damaged", path: file, detail })
      const take = (plain: Buffer): SealError | undefined => {
        let off = 0
        while (off < plain.length) {
          if (state === "done") return damaged("it holds more after its last record (the file was changed)")
          if (state === "body") {
            const n = Math.min(current!.left, plain.length - off)
            let w = 0
            while (w < n) w += NFS.writeSync(current!.fd, plain, off + w, n - w)
            off += n
            current!.left -= n
            current!.hash.update(plain.subarray(off - n, off))
            if (current!.left === 0) {
              const problem = closeFile(current!)
              current = undefined
              if (problem !== undefined) return problem
              state = "length"
              need = 4
            }
            continue
          }
          const n = Math.min(need - accLen, plain.length - off)
          acc.push(plain.subarray(off, off + n))
          accLen += n
          off += n
          if (accLen < need) continue
          const whole = Buffer.concat(acc)
          acc.length = 0
          accLen = 0
          if (state === "length") {
            need = whole.readUInt32BE(0)
            if (need === 0 || need > 4096) return damaged("a record's header has an impossible length")
            state = "head"
            continue
          }
          let rec: { path?: unknown; size?: unknown; end?: unknown; files?: unknown }
          try {
            rec = JSON.parse(whole.toString("utf8")) as typeof rec
          } catch {
            return damaged("a record's header is not JSON")
          }
          if (rec.end === true) {
            if (rec.files !== files)
              return damaged(
                `it ends after ${files} files where its last record says ${JSON.stringify(rec.files)}`,
              )
            state = "done"
            continue
          }
          if (
            !safePath(rec.path) ||
            typeof rec.size !== "number" ||
            !Number.isSafeInteger(rec.size) ||
            rec.size < 0
          )
            return damaged(`a record names ${JSON.stringify(rec.path)}, which is no path inside an archive`)
          // after the checksum file, only what it lists, the manifest and the attachment index
          if (
            rows !== undefined &&
            !rows.has(rec.path) &&
            rec.path !== Archive.layout.manifest &&
            rec.path !== Archive.layout.attachmentIndex
          )
            return damaged(
              `it holds ${rec.path}, which its ${Archive.layout.checksums} does not list (it was not made by ferry seal)`,
            )
          const target = Path.join(part, rec.path)
          let wfd: number
          try {
            NFS.mkdirSync(Path.dirname(target), { recursive: true, mode: 0o700 })
            wfd = NFS.openSync(target, "wx", 0o600)
          } catch (e) {
            // (a file sealed by anyone who has the public key opens: its records are not trusted)
            const code = (e as NodeJS.ErrnoException).code
            if (code === "EEXIST" || code === "ENOTDIR" || code === "EISDIR")
              return damaged(
                `it names ${rec.path} twice, or as both a file and a folder (it was not made by ferry seal)`,
              )
            throw e
          }
          files++
          const opened = { fd: wfd, left: rec.size, rel: rec.path, hash: createHash("sha256") }
          if (rec.size === 0) {
            const problem = closeFile(opened)
            if (problem !== undefined) return problem
            state = "length"
            need = 4
          } else {
            current = opened
            state = "body"
          }
        }
        return undefined
      }

      const size = NFS.fstatSync(fd).size
      const sealedChunk = CHUNK + TAG
      let at = line.length
      let n = 0
      const buf = Buffer.allocUnsafe(sealedChunk)
      for (;;) {
        const left = size - at
        const last = left <= sealedChunk
        const len = last ? left : sealedChunk
        if (len < TAG)
          return yield* damaged(
            `it was cut short (${size.toLocaleString("en-US")} bytes; its last chunk is missing)`,
          )
        let got = 0
        while (got < len) {
          const r = NFS.readSync(fd, buf, got, len - got, at + got)
          if (r === 0) return yield* damaged("it became shorter while it was read")
          got += r
        }
        let plain: Buffer
        try {
          const d = createDecipheriv("aes-256-gcm", fileKey, nonceOf(n, last))
          d.setAAD(aad)
          d.setAuthTag(buf.subarray(len - TAG, len))
          plain = Buffer.concat([d.update(buf.subarray(0, len - TAG)), d.final()])
        } catch {
          return yield* damaged(
            `chunk ${n + 1} (bytes ${at.toLocaleString("en-US")}–${(at + len).toLocaleString("en-US")}) does not open: the file was changed, cut short or damaged`,
          )
        }
        const problem = take(plain)
        if (problem !== undefined) return yield* problem
        at += len
        n++
        if (last) break
        // (a Ctrl-C is heard between chunks, not only at the end)
        if (n % 64 === 0) yield* breathe
      }
      // (`take` moves the state; read through a function, the compiler does not narrow it to the start value)
      if (!ended()) return yield* damaged("its records end before their last one (the file was cut short)")
      // every listed file was written and matched its row (`closeFile`); what is left: none missing, and the
      // rows agree with the manifest and the attachment index (both re-hashed), as an import checks it
      if (rows === undefined || written < rows.size) {
        const missing =
          rows === undefined
            ? Archive.layout.checksums
            : [...rows.keys()].find((p) => !NFS.existsSync(Path.join(part, p)))
        return yield* damaged(`the unsealed archive is not whole: ${missing ?? "a listed file"} is missing`)
      }
      const unsealed = yield* Archive.readManifest(part).pipe(
        Effect.mapError((e) => damaged(`the unsealed archive is not whole: ${e.message}`)),
      )
      const mismatches = yield* Archive.verifyListing(part, unsealed).pipe(
        Effect.mapError((e) => damaged(`the unsealed archive is not whole: ${e.message}`)),
      )
      if (mismatches.length > 0)
        return yield* damaged(
          `the unsealed archive is not whole: ${Archive.describeMismatches(mismatches, unsealed)}`,
        )
      NFS.rmSync(Path.join(part, PART_MARKER))
      NFS.renameSync(part, out)
      yield* putInPlace(out)
      return { out, files } satisfies UnsealResult
    })
    return yield* run.pipe(
      Effect.catchAllDefect((cause) => Effect.fail(io(out, "the archive could not be unsealed")(cause))),
      Effect.ensuring(Effect.sync(() => NFS.closeSync(fd))),
      // (what was written of a damaged or refused file, or of a stopped run, is a partial health record: not
      // left lying about; a <out>.part this run did not make is not touched)
      Effect.onExit((exit) =>
        Exit.isSuccess(exit) || !made
          ? Effect.void
          : Effect.sync(() => NFS.rmSync(part, { recursive: true, force: true })),
      ),
    )
  })
