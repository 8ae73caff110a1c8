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
 * - the payload: records of `[u32 BE length][JSON {path, size}][size bytes]`, one per file (`checksums.sha256`,
 *   then `manifest.json`, then every row of the checksum file in its order), ended by `{"end": true, "files": n}`.
 *
 * What is sealed: `manifest.json`, `checksums.sha256` and every file it lists (data, deleted and error files,
 * blobs, packs, the attachment index), each hashed against its row while it is read (the listing is checked
 * first, `verifyListing`). Not sealed: the journal, the event log, the lock and `imports/` (what one run did
 * against one target: a restore starts afresh). An unsealed archive is the archive as it was: `unseal` writes it
 * as `<out>.part`, each file checked against the next row of the checksum file as it is written and the listing at
 * the end, and only then renames it to `<out>`. Memory stays flat: one chunk, and one checksum row, at a time.
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
import * as OS from "node:os"
import * as Path from "node:path"
import { StringDecoder } from "node:string_decoder"
import { breathe } from "@ferry/core/Breathe"
import { makeDirsSync } from "@ferry/core/Dirs"
import { fsProblem } from "@ferry/core/FsProblem"
import { isPastedSecret } from "@ferry/core/PastedSecret"
import { Effect, Exit, type Scope, Stream } from "effect"
import * as Archive from "./Archive.js"
import type { ArchiveError } from "./ArchiveError.js"
import * as Fs from "./internal/fs.js"
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

/**
 * Encrypts pushed bytes into chunks written by `out` (each chunk's ciphertext and its tag, written together
 * without a copy to join them); `finish` writes the last one. Two plaintext buffers take turns: a full chunk is held (not copied) until
 * more bytes say it is not the last, while the other fills.
 */
const sealer = (key: Buffer, aad: Buffer, out: (ciphertext: Buffer, tag: Buffer) => void) => {
  let pending: Buffer = Buffer.alloc(CHUNK)
  let spare: Buffer = Buffer.alloc(CHUNK)
  let filled = 0
  let held: Buffer | undefined
  let n = 0
  const emit = (plain: Buffer, last: boolean) => {
    const c = createCipheriv("aes-256-gcm", key, nonceOf(n++, last))
    c.setAAD(aad)
    const ciphertext = c.update(plain)
    c.final()
    out(ciphertext, c.getAuthTag())
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
          held = pending
          pending = spare
          spare = held
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
 * `<out>.lock`, made exclusively and naming this process, for as long as a seal or an unseal writes `<out>`. Two at
 * once to the same `--out` would each remove the other's `<out>.part`, and one could put the other's unfinished
 * file in place and call it done. A lock whose process is gone (on this host) is taken over; another one stops the
 * run, naming it.
 */
const holdOut = (out: string): Effect.Effect<void, SealError, Scope.Scope> => {
  const path = `${out}.lock`
  const mine = JSON.stringify({ pid: process.pid, host: OS.hostname(), startedAt: new Date().toISOString() })
  const read = (): string | undefined => {
    try {
      return NFS.readFileSync(path, "utf8")
    } catch (e) {
      if (Fs.isNodeError(e, "ENOENT")) return undefined
      throw e
    }
  }
  const take = (): SealError | undefined => {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        makeDirsSync(Path.dirname(Path.resolve(path)), 0o700)
        NFS.writeFileSync(path, mine, { flag: "wx", mode: 0o600 })
        return undefined
      } catch (e) {
        if (!Fs.isNodeError(e, "EEXIST")) throw e
      }
      const text = read()
      if (text === undefined) continue // released meanwhile
      const held = holderOf(text)
      if (held !== undefined && held.host === OS.hostname() && !alive(held.pid)) {
        // its process is gone: taken over (only while it still holds what was judged)
        if (read() === text) NFS.rmSync(path, { force: true })
        continue
      }
      return new SealError({
        reason: "Exists",
        path: out,
        detail:
          held === undefined
            ? `is being written by another ferry (${path} names no process yet); wait for it to finish, or delete ${path} if no ferry seal or unseal is running`
            : `is being written by another ferry (pid ${held.pid} on ${held.host}, since ${held.startedAt}); wait for it to finish, or choose another --out`,
      })
    }
    return new SealError({
      reason: "Exists",
      path: out,
      detail: `${path} kept changing hands; run the command again`,
    })
  }
  return Effect.acquireRelease(
    Effect.try({ try: take, catch: io(path, "the lock beside --out could not be made") }).pipe(
      Effect.flatMap((refused) => (refused === undefined ? Effect.void : Effect.fail(refused))),
    ),
    () =>
      Effect.try(() => {
        if (read() === mine) NFS.rmSync(path, { force: true })
      }).pipe(
        // (left in place, the next run names it)
        Effect.catchAll((e) => Effect.logWarning(`could not remove ${path}: ${fsProblem(e.error)}`)),
      ),
  )
}

const holderOf = (text: string): { pid: number; host: string; startedAt: string } | undefined => {
  try {
    const v = JSON.parse(text) as { pid?: unknown; host?: unknown; startedAt?: unknown }
    return Number.isSafeInteger(v.pid) &&
      (v.pid as number) > 0 &&
      typeof v.host === "string" &&
      typeof v.startedAt === "string"
      ? { pid: v.pid as number, host: v.host, startedAt: v.startedAt }
      : undefined
  } catch {
    return undefined
  }
}

/** Whether a process of this host has this pid (one of another user's counts too). */
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return Fs.isNodeError(e, "EPERM")
  }
}

/** What a first pass over `checksums.sha256` says (constant memory: the rows are not kept). */
interface Listing {
  /** The manifest's row (`/3`), or undefined (`/2`: not listed). */
  readonly manifest: string | undefined
  /** Whether the attachment index has a row (`/3`). */
  readonly indexListed: boolean
  /** A listed path unseal would refuse, if any. */
  readonly unsafe: string | undefined
}

const listingOf = (
  rows: Stream.Stream<[string, string], ArchiveError>,
): Effect.Effect<Listing, ArchiveError> =>
  Effect.suspend(() => {
    let manifest: string | undefined
    let indexListed = false
    let unsafe: string | undefined
    return Stream.runForEach(rows, ([h, p]) =>
      Effect.sync(() => {
        if (p === Archive.layout.manifest) manifest = h
        if (p === Archive.layout.attachmentIndex) indexListed = true
        if (unsafe === undefined && !safePath(p)) unsafe = p
      }),
    ).pipe(Effect.map(() => ({ manifest, indexListed, unsafe })))
  })

export interface SealResult {
  readonly out: string
  readonly files: number
  readonly bytes: number
  readonly recipient: string
}

/** A write to the sealed file failed (told apart from a read of the archive). */
class WriteFailed {
  constructor(readonly cause: unknown) {}
}

/**
 * Seal the finished archive `dir` to `recipient` (an X25519 public key) as the file `out` (0600; written as
 * `<out>.part`, renamed when whole). The listing is checked first (`verifyListing`), then each file is sealed and
 * hashed against its row in the same read: `checksums.sha256` first, then the manifest, then the rows in the
 * checksum file's order (and a `/2` archive's unlisted attachment index last), one row at a time.
 */
export const seal = (
  dir: string,
  recipient: KeyObject,
  out: string,
): Effect.Effect<SealResult, SealError | ArchiveError> =>
  Effect.scoped(
    Effect.gen(function* () {
      yield* holdOut(out)
      const manifest = yield* Archive.readManifest(dir)
      if (!manifest.complete)
        return yield* new SealError({
          reason: "Archive",
          path: dir,
          detail:
            "the archive is unfinished (its export did not complete); run the same ferry export again to finish it, then seal it",
        })
      if (taken(out))
        return yield* new SealError({
          reason: "Exists",
          path: out,
          detail: "already exists; choose another --out (a sealed archive is never written over)",
        })
      const root = Path.resolve(dir)
      if (Path.resolve(out).startsWith(`${root}${Path.sep}`))
        return yield* new SealError({
          reason: "Exists",
          path: out,
          detail: `is inside the archive ${dir}; choose an --out outside it`,
        })
      const mismatches = yield* Archive.verifyListing(dir, manifest)
      if (mismatches.length > 0)
        return yield* new SealError({
          reason: "Archive",
          path: dir,
          detail: Archive.describeMismatches(mismatches, manifest),
        })
      const checksums = Path.join(dir, Archive.layout.checksums)
      const listing = yield* listingOf(Archive.checksumRows(checksums))
      if (listing.unsafe !== undefined)
        return yield* new SealError({
          reason: "Archive",
          path: dir,
          detail: `${listing.unsafe} has a name unseal would refuse (only letters, digits and . _ - in each part): rename it, with its rows in manifest.json and checksums.sha256, or export again`,
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
          makeDirsSync(Path.dirname(Path.resolve(part)), 0o700)
          return NFS.openSync(part, "wx", 0o600)
        },
        catch: io(part, "the sealed file could not be created"),
      })
      let written = 0
      /** Writes the pieces in one system call (a chunk's ciphertext and its tag), the rest of a short write after. */
      const write = (...pieces: ReadonlyArray<Buffer>) => {
        const total = pieces.reduce((n, b) => n + b.length, 0)
        try {
          const done = NFS.writevSync(fd, pieces)
          if (done < total) {
            const rest = Buffer.concat(pieces).subarray(done)
            let off = 0
            while (off < rest.length) off += NFS.writeSync(fd, rest, off, rest.length - off)
          }
        } catch (cause) {
          throw new WriteFailed(cause)
        }
        written += total
      }
      let files = 0
      const body = Effect.gen(function* () {
        write(headerLine)
        const s = sealer(fileKey, createHash("sha256").update(headerLine).digest(), write)
        const buf = Buffer.allocUnsafe(CHUNK)
        const sealOne = (rel: string, expected: string | undefined) =>
          Effect.try({
            try: () => {
              const path = Path.join(dir, rel)
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
                files++
                const actual = hash.digest("hex")
                return expected !== undefined && actual !== expected
                  ? Archive.describeMismatches(
                      [{ path: rel, problem: "Changed", expected, actual }],
                      manifest,
                    )
                  : undefined
              } finally {
                NFS.closeSync(rfd)
              }
            },
            catch: (cause): SealError =>
              cause instanceof WriteFailed
                ? io(part, "the sealed file could not be written")(cause.cause)
                : Fs.isNodeError(cause, "ENOENT")
                  ? new SealError({
                      reason: "Archive",
                      path: dir,
                      detail: Archive.describeMismatches([{ path: rel, problem: "Missing" }], manifest),
                    })
                  : io(Path.join(dir, rel), "could not be read")(cause),
          }).pipe(
            Effect.flatMap((changed) =>
              changed === undefined
                ? Effect.void
                : Effect.fail(new SealError({ reason: "Archive", path: dir, detail: changed })),
            ),
            // (a Ctrl-C is heard between files, not only at the end)
            Effect.zipLeft(breathe),
          )
        yield* sealOne(Archive.layout.checksums, undefined)
        yield* sealOne(Archive.layout.manifest, listing.manifest)
        yield* Stream.runForEach(Archive.checksumRows(checksums), ([h, p]) =>
          p === Archive.layout.manifest || p === Archive.layout.checksums ? Effect.void : sealOne(p, h),
        )
        if (!listing.indexListed && NFS.existsSync(Path.join(dir, Archive.layout.attachmentIndex)))
          yield* sealOne(Archive.layout.attachmentIndex, undefined)
        const end = Buffer.from(JSON.stringify({ end: true, files }))
        s.push(u32(end.length))
        s.push(end)
        s.finish()
        NFS.fsyncSync(fd)
      })
      yield* body.pipe(
        Effect.catchAllDefect((cause) =>
          Effect.fail(
            io(
              part,
              "the sealed file could not be written",
            )(cause instanceof WriteFailed ? cause.cause : cause),
          ),
        ),
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
      return { out, files, bytes: written, recipient: header.recipient } satisfies SealResult
    }),
  )

// ---------------------------------------------------------------------------------------------------------
// Unseal

/** A file being written by an unseal, hashed on the way, and the sha256 its row gives (if listed). */
interface Opened {
  readonly fd: number
  readonly rel: string
  readonly hash: Hash
  readonly expected: string | undefined
}

/**
 * The rows of a checksum file, one at a time, read synchronously 64 KiB at a time (an unseal checks its records
 * against them inside one synchronous step): constant memory, however many files the archive has.
 */
class RowReader {
  private readonly fd: number
  private readonly buf = Buffer.allocUnsafe(64 * 1024)
  private readonly decoder = new StringDecoder("utf8")
  private lines: Array<string> = []
  private i = 0
  private carry = ""
  private at = 0
  private eof = false
  private closed = false
  constructor(path: string) {
    this.fd = NFS.openSync(path, "r")
  }
  /** The next row, undefined at the end, or what is wrong with the line. */
  next(): [string, string] | string | undefined {
    for (;;) {
      if (this.i < this.lines.length) {
        const text = this.lines[this.i++]!
        if (text !== "") return Archive.parseChecksumRow(text)
        continue
      }
      if (this.eof) {
        const text = this.carry
        this.carry = ""
        return text === "" ? undefined : Archive.parseChecksumRow(text)
      }
      const n = NFS.readSync(this.fd, this.buf, 0, this.buf.length, this.at)
      this.at += n
      const text =
        n === 0 ? this.carry + this.decoder.end() : this.carry + this.decoder.write(this.buf.subarray(0, n))
      this.lines = text.split("\n")
      this.carry = n === 0 ? "" : this.lines.pop()!
      this.i = 0
      if (n === 0) this.eof = true
    }
  }
  close(): void {
    if (this.closed) return
    this.closed = true
    Fs.closeQuietly(this.fd)
  }
}

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
  Effect.scoped(
    Effect.gen(function* () {
      yield* holdOut(out)
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
      /** The file being written and the checksum rows being read, closed however the run ends. */
      let opened: Opened | undefined
      let reader: RowReader | undefined
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
          epk = createPublicKey({
            key: { kty: "OKP", crv: "X25519", x: header.epk.x } as never,
            format: "jwk",
          })
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
        makeDirsSync(part, 0o700)
        made = true
        NFS.writeFileSync(Path.join(part, PART_MARKER), "", { mode: 0o600 })

        // the payload's records, parsed as the chunks open
        let state: "length" | "head" | "body" | "done" = "length"
        let need = 4
        const acc: Array<Buffer> = []
        let accLen = 0
        let current: (Opened & { left: number }) | undefined
        let files = 0
        /**
         * The rows of `checksums.sha256` (sealed first), read one at a time as the records arrive (constant memory):
         * after the manifest, each record must be the next row, and each file is hashed as it is written and checked
         * against that row when whole; the archive is checked in the same pass.
         */
        let listing: { readonly manifest: string | undefined; readonly indexListed: boolean } | undefined
        /** The next row of the checksum file that is not the manifest's (sealed second) nor its own. */
        const nextListed = (): [string, string] | string | undefined => {
          for (;;) {
            const row = reader!.next()
            if (row === undefined || typeof row === "string") return row
            if (row[1] !== Archive.layout.manifest && row[1] !== Archive.layout.checksums) return row
          }
        }
        /** A file written whole: its sha256 against its row; after the checksum file, its rows made ready. */
        const closeFile = (f: Opened): SealError | undefined => {
          NFS.fsyncSync(f.fd)
          NFS.closeSync(f.fd)
          opened = undefined
          const actual = f.hash.digest("hex")
          if (f.rel === Archive.layout.checksums && listing === undefined) {
            // a first pass for the manifest's row (sealed second), then the rows in order
            const scan = new RowReader(Path.join(part, f.rel))
            let manifest: string | undefined
            let indexListed = false
            try {
              for (let row = scan.next(); row !== undefined; row = scan.next()) {
                if (typeof row === "string") return damaged(`its ${Archive.layout.checksums}: ${row}`)
                if (row[1] === Archive.layout.manifest) manifest = row[0]
                if (row[1] === Archive.layout.attachmentIndex) indexListed = true
              }
            } finally {
              scan.close()
            }
            listing = { manifest, indexListed }
            reader = new RowReader(Path.join(part, f.rel))
            return undefined
          }
          return f.expected === undefined || f.expected === actual
            ? undefined
            : damaged(
                `the unsealed archive is not whole: ${Archive.describeMismatches([{ path: f.rel, problem: "Changed", expected: f.expected, actual }])}`,
              )
        }
        /** The sha256 the next record must have (its row), or why it cannot be the next record. */
        const expectedFor = (rel: string): { readonly expected: string | undefined } | SealError => {
          if (files === 0)
            return rel === Archive.layout.checksums
              ? { expected: undefined }
              : damaged(
                  `its first file is ${rel}, not ${Archive.layout.checksums} (it was not made by ferry seal)`,
                )
          if (files === 1)
            return rel === Archive.layout.manifest
              ? { expected: listing?.manifest }
              : damaged(
                  `its second file is ${rel}, not ${Archive.layout.manifest} (it was not made by ferry seal)`,
                )
          const row = nextListed()
          if (typeof row === "string") return damaged(`its ${Archive.layout.checksums}: ${row}`)
          if (row === undefined) {
            // (a /2 archive's index has no row: sealed last)
            if (rel === Archive.layout.attachmentIndex && listing?.indexListed === false && !unlistedIndex) {
              unlistedIndex = true
              return { expected: undefined }
            }
            return damaged(
              `it holds ${rel}, which its ${Archive.layout.checksums} does not list (it was not made by ferry seal)`,
            )
          }
          return row[1] === rel
            ? { expected: row[0] }
            : damaged(
                `it holds ${rel} where its ${Archive.layout.checksums} lists ${row[1]} next (it was not made by ferry seal)`,
              )
        }
        let unlistedIndex = false
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
            // the checksum file, the manifest, then the checksum file's rows in order: nothing else
            const next = expectedFor(rec.path)
            if (next instanceof SealError) return next
            const target = Path.join(part, rec.path)
            let wfd: number
            try {
              makeDirsSync(Path.dirname(target), 0o700)
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
            const file: Opened & { left: number } = {
              fd: wfd,
              left: rec.size,
              rel: rec.path,
              hash: createHash("sha256"),
              expected: next.expected,
            }
            opened = file
            if (rec.size === 0) {
              const problem = closeFile(file)
              if (problem !== undefined) return problem
              state = "length"
              need = 4
            } else {
              current = file
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
        // every file written matched its row (`closeFile`); what is left: no row without its file, and the rows
        // agree with the manifest and the attachment index (both re-hashed), as an import checks it
        if (reader === undefined)
          return yield* damaged(`the unsealed archive is not whole: ${Archive.layout.checksums} is missing`)
        const missing = nextListed()
        if (typeof missing === "string") return yield* damaged(`its ${Archive.layout.checksums}: ${missing}`)
        if (missing !== undefined)
          return yield* damaged(`the unsealed archive is not whole: ${missing[1]} is missing`)
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
        Effect.ensuring(
          Effect.sync(() => {
            NFS.closeSync(fd)
            reader?.close()
            if (opened !== undefined) Fs.closeQuietly(opened.fd)
          }),
        ),
        // (what was written of a damaged or refused file, or of a stopped run, is a partial health record: not
        // left lying about; a <out>.part this run did not make is not touched)
        Effect.onExit((exit) =>
          Exit.isSuccess(exit) || !made
            ? Effect.void
            : Effect.sync(() => NFS.rmSync(part, { recursive: true, force: true })),
        ),
      )
    }),
  )
