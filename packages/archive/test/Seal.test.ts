import {
  createCipheriv,
  createHash,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  randomBytes,
} from "node:crypto"
import { spawnSync } from "node:child_process"
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as Archive from "../src/Archive.js"
import * as Attachments from "../src/Attachments.js"
import * as Manifest from "../src/Manifest.js"
import * as Seal from "../src/Seal.js"
import { mode, tempDir } from "./helpers.js"

const init: Manifest.Init = {
  tool: { name: "ferry", version: "0.1.0" },
  source: { baseUrl: "http://127.0.0.1:1/fhir", fhirVersion: "4.0.1" },
  request: { level: "system", url: "http://127.0.0.1:1/fhir/$export", parameters: {} },
}

const big = randomBytes(200 * 1024)

/** A finished archive (as an export completes one): data, a big blob and a small one, checksums, complete. */
const finishedArchive = Effect.gen(function* () {
  const root = yield* tempDir
  const dir = Path.join(root, "archive")
  yield* Archive.create(dir, init)
  const patients = Stream.fromIterable(
    Array.from({ length: 500 }, (_, i) => ({
      resourceType: "Patient",
      id: `p${i}`,
      name: [{ text: "Zoé Secret" }],
    })),
  )
  const a = yield* Archive.writeFile(dir, { section: "files", type: "Patient" }, patients)
  yield* Attachments.put(dir, Stream.make(new Uint8Array(big)), { contentType: "image/jpeg" })
  yield* Attachments.put(dir, Stream.make(new TextEncoder().encode("%PDF-1.4 small")), {
    contentType: "application/pdf",
  })
  const listed = yield* Archive.updateManifest(dir, (m) => Manifest.addFiles(m, "files", [a]))
  const final = { ...listed, complete: true }
  yield* Archive.writeChecksums(dir, listed, Archive.manifestText(final))
  yield* Archive.writeManifest(dir, final)
  return { root, dir }
})

const keyFiles = (root: string) => {
  const { privateJwk, publicJwk } = Seal.generateKey()
  const priv = Path.join(root, "seal.jwk")
  const pub = Path.join(root, "seal.pub.jwk")
  NFS.writeFileSync(priv, JSON.stringify(privateJwk), { mode: 0o600 })
  NFS.writeFileSync(pub, JSON.stringify(publicJwk))
  return { priv, pub, kid: publicJwk.kid! }
}

/** Every file under `dir`, relative, sorted. */
const tree = (dir: string): Array<string> =>
  NFS.readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => Path.relative(dir, Path.join(e.parentPath, e.name)))
    .sort()

const sealedOf = Effect.gen(function* () {
  const { root, dir } = yield* finishedArchive
  const keys = keyFiles(root)
  const file = Path.join(root, "archive.sealed")
  const result = yield* Seal.seal(dir, yield* Seal.readKey(keys.pub, "public"), file)
  return { root, dir, keys, file, result }
})

/**
 * A sealed file made by hand from docs/archive-format.md, not by `Seal.seal`: anyone holding the public key can
 * make one that opens, so what its records say must not be trusted. `records`: path and bytes, in order;
 * `end`: the end record's count (default: the number of records), `after`: bytes after the end record.
 */
const craft = (
  recipient: KeyObject,
  records: ReadonlyArray<readonly [string, Buffer]>,
  options: { readonly end?: number; readonly after?: Buffer } = {},
): Buffer => {
  const fileKey = randomBytes(32)
  const eph = generateKeyPairSync("x25519")
  const x = (k: KeyObject) => Buffer.from(String(k.export({ format: "jwk" }).x), "base64url")
  const kek = Buffer.from(
    hkdfSync(
      "sha256",
      diffieHellman({ privateKey: eph.privateKey, publicKey: recipient }),
      Buffer.concat([x(eph.publicKey), x(recipient)]),
      Buffer.from("ferry-sealed/1"),
      32,
    ),
  )
  const w = createCipheriv("aes-256-gcm", kek, Buffer.alloc(12))
  const key = Buffer.concat([w.update(fileKey), w.final(), w.getAuthTag()]).toString("base64url")
  const kid = createHash("sha256")
    .update(JSON.stringify({ crv: "X25519", kty: "OKP", x: x(recipient).toString("base64url") }))
    .digest("base64url")
  const line = Buffer.from(
    `${JSON.stringify({ format: "ferry-sealed/1", chunk: 65536, recipient: kid, epk: { kty: "OKP", crv: "X25519", x: x(eph.publicKey).toString("base64url") }, key })}\n`,
  )
  const record = (head: object, body: Uint8Array = Buffer.alloc(0)) => {
    const h = Buffer.from(JSON.stringify(head))
    const n = Buffer.alloc(4)
    n.writeUInt32BE(h.length)
    return Buffer.concat([n, h, body])
  }
  const payload = Buffer.concat([
    ...records.map(([path, body]) => record({ path, size: body.length }, body)),
    record({ end: true, files: options.end ?? records.length }),
    options.after ?? Buffer.alloc(0),
  ])
  const aad = createHash("sha256").update(line).digest()
  const chunks: Array<Buffer> = []
  for (let i = 0, n = 0; i === 0 || i < payload.length; i += 65536, n++) {
    const last = i + 65536 >= payload.length
    const nonce = Buffer.alloc(12)
    nonce.writeUIntBE(n, 5, 6)
    nonce[11] = last ? 1 : 0
    const c = createCipheriv("aes-256-gcm", fileKey, nonce)
    c.setAAD(aad)
    chunks.push(c.update(payload.subarray(i, i + 65536)), c.final(), c.getAuthTag())
    if (last) break
  }
  return Buffer.concat([line, ...chunks])
}

describe("Seal", () => {
  it.scoped(
    "seals a finished archive to a public key and unseals it, byte for byte, with the private key",
    () =>
      Effect.gen(function* () {
        const { root, dir, keys, file, result } = yield* sealedOf
        expect(mode(file)).toBe(0o600)
        expect(result.recipient).toBe(keys.kid)
        const bytes = NFS.readFileSync(file)
        const header = JSON.parse(bytes.subarray(0, bytes.indexOf(10)).toString()) as Record<string, unknown>
        expect(header.format).toBe("ferry-sealed/1")
        expect(header.recipient).toBe(keys.kid)
        // nothing of the content in the clear
        expect(bytes.includes(Buffer.from("Secret"))).toBe(false)
        expect(bytes.includes(big.subarray(1000, 1064))).toBe(false)
        const out = Path.join(root, "restored")
        const back = yield* Seal.unseal(file, yield* Seal.readKey(keys.priv, "private"), out)
        // the manifest, the checksums and what they list; not the journal, nor the event log
        const sealed = tree(dir).filter(
          (f) => f !== "journal.ndjson" && f !== "events.ndjson" && f !== ".lock",
        )
        expect(tree(out)).toEqual(sealed)
        expect(back.files).toBe(sealed.length)
        for (const f of sealed)
          expect(NFS.readFileSync(Path.join(out, f)).equals(NFS.readFileSync(Path.join(dir, f)))).toBe(true)
        expect(yield* Archive.verifyChecksums(out)).toEqual([])
        for (const e of NFS.readdirSync(out, { recursive: true, withFileTypes: true }))
          expect(mode(Path.join(e.parentPath, e.name))).toBe(e.isDirectory() ? 0o700 : 0o600)
        expect(NFS.existsSync(`${out}.part`)).toBe(false)
      }),
  )

  it.scoped(
    "a changed byte, a chunk cut off or moved, a changed header: refused, and nothing left behind",
    () =>
      Effect.gen(function* () {
        const { root, keys, file } = yield* sealedOf
        const key = yield* Seal.readKey(keys.priv, "private")
        const original = NFS.readFileSync(file)
        const headerEnd = original.indexOf(10) + 1
        const chunk = 64 * 1024 + 16
        const attempt = (name: string, bytes: Buffer) =>
          Effect.gen(function* () {
            const f = Path.join(root, `${name}.sealed`)
            NFS.writeFileSync(f, bytes)
            const out = Path.join(root, `out-${name}`)
            const e = yield* Effect.flip(Seal.unseal(f, key, out))
            expect(NFS.existsSync(out)).toBe(false)
            expect(NFS.existsSync(`${out}.part`)).toBe(false)
            return e
          })
        const flipped = Buffer.from(original)
        flipped[headerEnd + chunk + 100]! ^= 1
        const e1 = yield* attempt("flipped", flipped)
        expect(e1.reason).toBe("Damaged")
        expect(e1.message).toMatch(
          /chunk 2 \(bytes [\d,]+–[\d,]+\) does not open: the file was changed, cut short or damaged; restore the sealed file from another copy$/,
        )
        // cut at a chunk boundary: the chunk now last was not sealed as the last one
        const chunks = Math.floor((original.length - headerEnd) / chunk)
        expect(chunks).toBeGreaterThanOrEqual(3)
        const cut = yield* attempt("cut", original.subarray(0, headerEnd + 2 * chunk))
        expect(cut.message).toMatch(/chunk 2 .* does not open/)
        const torn = yield* attempt("torn", original.subarray(0, original.length - 7))
        expect(torn.reason).toBe("Damaged")
        const swapped = Buffer.concat([
          original.subarray(0, headerEnd),
          original.subarray(headerEnd + chunk, headerEnd + 2 * chunk),
          original.subarray(headerEnd, headerEnd + chunk),
          original.subarray(headerEnd + 2 * chunk),
        ])
        expect((yield* attempt("swapped", swapped)).message).toMatch(/chunk 1 .* does not open/)
        // a header changed (the chunk size): the chunks, which authenticate it, do not open
        const header = original.subarray(0, headerEnd).toString().replace('"chunk":65536', '"chunk":65536 ')
        const e4 = yield* attempt(
          "header",
          Buffer.concat([Buffer.from(header), original.subarray(headerEnd)]),
        )
        expect(e4.message).toMatch(/chunk 1 .* does not open/)
        const plainFile = Path.join(root, "plain.sealed")
        NFS.writeFileSync(plainFile, "{}\nhello")
        const plain = yield* Effect.flip(Seal.unseal(plainFile, key, Path.join(root, "out-plain")))
        expect([plain.reason, plain.message]).toEqual([
          "NotSealed",
          `${plainFile}: this is no sealed Ferry archive (its first line is not a ferry-sealed/1 header); give the file ferry seal wrote`,
        ])
        expect(NFS.existsSync(Path.join(root, "out-plain.part"))).toBe(false)
      }),
  )

  it.scoped(
    "another key, a public key, or a key that is no X25519 key: one sentence each, exit-2 kind (Key)",
    () =>
      Effect.gen(function* () {
        const { root, keys, file } = yield* sealedOf
        const otherDir = Path.join(root, "other")
        NFS.mkdirSync(otherDir)
        const other = keyFiles(otherDir)
        const e1 = yield* Effect.flip(
          Seal.unseal(file, yield* Seal.readKey(other.priv, "private"), Path.join(root, "o1")),
        )
        expect(e1.reason).toBe("Key")
        expect(e1.message).toContain(
          `it was sealed to another key (${keys.kid}) than this one (${other.kid}); give the private key it was sealed to`,
        )
        const e2 = yield* Effect.flip(Seal.readKey(keys.pub, "private"))
        expect(e2.message).toContain("this is a public key; unsealing needs the private key it was sealed to")
        const ec = Path.join(root, "ec.pem")
        NFS.writeFileSync(
          ec,
          generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey.export({
            type: "pkcs8",
            format: "pem",
          }),
        )
        const e3 = yield* Effect.flip(Seal.readKey(ec, "public"))
        expect(e3.message).toContain(
          "this is an EC key, and archives are sealed to X25519 keys; make one with ferry keys generate --alg X25519",
        )
        const e4 = yield* Effect.flip(Seal.readKey(Path.join(root, "nope.jwk"), "public"))
        expect(e4.message).toMatch(/nope\.jwk: the key file could not be read/)
        // a private key seals too (its public half)
        const file2 = Path.join(root, "again.sealed")
        const { dir } = yield* finishedArchive
        expect((yield* Seal.seal(dir, yield* Seal.readKey(keys.priv, "public"), file2)).recipient).toBe(
          keys.kid,
        )
      }),
  )

  it.scoped("refuses to seal an archive that is damaged or unfinished, and an --out that exists", () =>
    Effect.gen(function* () {
      const { root, dir, keys } = yield* finishedArchive.pipe(
        Effect.map((a) => ({ ...a, keys: keyFiles(a.root) })),
      )
      const pub = yield* Seal.readKey(keys.pub, "public")
      NFS.appendFileSync(Path.join(dir, "data", "Patient.000.ndjson"), " ")
      const e1 = yield* Effect.flip(Seal.seal(dir, pub, Path.join(root, "x.sealed")))
      expect(e1.reason).toBe("Archive")
      expect(e1.message).toContain("data/Patient.000.ndjson does not hold the bytes the export recorded")
      expect(NFS.existsSync(Path.join(root, "x.sealed"))).toBe(false)
      expect(NFS.existsSync(Path.join(root, "x.sealed.part"))).toBe(false)
      const { dir: dir2 } = yield* finishedArchive
      NFS.writeFileSync(Path.join(root, "there"), "")
      const e2 = yield* Effect.flip(Seal.seal(dir2, pub, Path.join(root, "there")))
      expect([e2.reason, e2.message]).toEqual([
        "Exists",
        `${Path.join(root, "there")}: already exists; choose another --out (a sealed archive is never written over)`,
      ])
      yield* Archive.updateManifest(dir2, (m) => ({ ...m, complete: false }))
      const e3 = yield* Effect.flip(Seal.seal(dir2, pub, Path.join(root, "y.sealed")))
      expect(e3.message).toContain("the archive is unfinished")
    }),
  )
  it.scoped(
    "a sealed file made by someone else (the public key is enough): its records are not trusted",
    () =>
      Effect.gen(function* () {
        const { root, dir, keys } = yield* sealedOf
        const key = yield* Seal.readKey(keys.priv, "private")
        const pub = createPublicKey(key)
        const archiveFile = (rel: string) => [rel, NFS.readFileSync(Path.join(dir, rel))] as const
        const all = tree(dir).filter((f) => f !== "journal.ndjson" && f !== "events.ndjson")
        const genuine = [
          archiveFile("checksums.sha256"),
          archiveFile("manifest.json"),
          ...all.filter((f) => f !== "checksums.sha256" && f !== "manifest.json").map(archiveFile),
        ]
        const attempt = (name: string, bytes: Buffer) =>
          Effect.gen(function* () {
            const f = Path.join(root, `${name}.sealed`)
            NFS.writeFileSync(f, bytes)
            const out = Path.join(root, "in", name)
            const e = yield* Effect.flip(Seal.unseal(f, key, out))
            expect(e.reason, e.message).toBe("Damaged")
            expect(NFS.existsSync(out)).toBe(false)
            expect(NFS.existsSync(`${out}.part`)).toBe(false)
            return e.message
          })
        // the crafted file itself opens: what follows is refused for what its records say
        const ok = Path.join(root, "crafted.sealed")
        NFS.writeFileSync(ok, craft(pub, genuine))
        expect((yield* Seal.unseal(ok, key, Path.join(root, "crafted"))).files).toBe(genuine.length)
        expect(
          yield* attempt("escape", craft(pub, [...genuine, ["../escaped", Buffer.from("x")]])),
        ).toContain('a record names "../escaped", which is no path inside an archive')
        expect(NFS.existsSync(Path.join(root, "in", "escaped"))).toBe(false)
        expect(yield* attempt("twice", craft(pub, [...genuine, genuine[2]!]))).toContain(
          `it holds ${genuine[2]![0]}, which its checksums.sha256 does not list (it was not made by ferry seal)`,
        )
        const swapped = [...genuine]
        ;[swapped[2], swapped[3]] = [swapped[3]!, swapped[2]!]
        expect(yield* attempt("swapped", craft(pub, swapped))).toContain(
          `it holds ${genuine[3]![0]} where its checksums.sha256 lists ${genuine[2]![0]} next (it was not made by ferry seal)`,
        )
        const changed = genuine.map(([p, b]) =>
          p.startsWith("data/") ? ([p, Buffer.concat([b, Buffer.from(" ")])] as const) : ([p, b] as const),
        )
        expect(yield* attempt("changed", craft(pub, changed))).toMatch(
          /the unsealed archive is not whole: the archive was changed or damaged: data\/Patient\.000\.ndjson does not hold the bytes the export recorded/,
        )
        expect(
          yield* attempt(
            "missing",
            craft(
              pub,
              genuine.filter(([p]) => !p.startsWith("data/")),
            ),
          ),
        ).toContain("the unsealed archive is not whole: data/Patient.000.ndjson is missing")
        expect(
          yield* attempt("order", craft(pub, [genuine[1]!, genuine[0]!, ...genuine.slice(2)])),
        ).toContain("its first file is manifest.json, not checksums.sha256")
        expect(yield* attempt("after", craft(pub, genuine, { after: Buffer.from("more") }))).toContain(
          "it holds more after its last record",
        )
        expect(yield* attempt("count", craft(pub, genuine, { end: 99 }))).toContain(
          `it ends after ${genuine.length} files where its last record says 99`,
        )
      }),
  )
  it.scoped(
    "a seal or unseal to an --out another one is writing stops at once, naming it; a lock whose process is gone is taken over and released",
    () =>
      Effect.gen(function* () {
        const { root, dir, keys, file } = yield* sealedOf
        const key = yield* Seal.readKey(keys.priv, "private")
        const pub = createPublicKey(key)
        const held = (out: string, pid: number) => {
          const text = JSON.stringify({ pid, host: OS.hostname(), startedAt: "2026-12-07T00:00:00.000Z" })
          NFS.writeFileSync(`${out}.lock`, text)
          return text
        }
        // a live process's lock (this one's pid stands for another ferry): refused, nothing written, the lock kept
        const sealOut = Path.join(root, "busy.sealed")
        const sealLock = held(sealOut, process.pid)
        const e1 = yield* Effect.flip(Seal.seal(dir, pub, sealOut))
        expect([e1.reason, e1.message]).toEqual([
          "Exists",
          `${sealOut}: is being written by another ferry (pid ${process.pid} on ${OS.hostname()}, since 2026-12-07T00:00:00.000Z); wait for it to finish, or choose another --out`,
        ])
        expect(NFS.existsSync(sealOut) || NFS.existsSync(`${sealOut}.part`)).toBe(false)
        expect(NFS.readFileSync(`${sealOut}.lock`, "utf8")).toBe(sealLock)
        const unsealOut = Path.join(root, "busy-restore")
        held(unsealOut, process.pid)
        const e2 = yield* Effect.flip(Seal.unseal(file, key, unsealOut))
        expect(e2.message).toContain(`${unsealOut}: is being written by another ferry (pid ${process.pid}`)
        expect(NFS.existsSync(unsealOut) || NFS.existsSync(`${unsealOut}.part`)).toBe(false)
        // a lock that names no process (being made, or torn): refused too, saying what to do
        NFS.writeFileSync(`${unsealOut}.lock`, "")
        const e3 = yield* Effect.flip(Seal.unseal(file, key, unsealOut))
        expect(e3.message).toContain(`delete ${unsealOut}.lock if no ferry seal or unseal is running`)
        // the lock of a process that is gone: taken over, the run done, the lock removed
        const gone = spawnSync(process.execPath, ["-e", ""]).pid
        held(sealOut, gone)
        yield* Seal.seal(dir, pub, sealOut)
        expect(NFS.existsSync(sealOut)).toBe(true)
        expect(NFS.existsSync(`${sealOut}.lock`)).toBe(false)
        held(unsealOut, gone)
        yield* Seal.unseal(sealOut, key, unsealOut)
        expect(tree(unsealOut)).toEqual(tree(dir))
        expect(NFS.existsSync(`${unsealOut}.lock`)).toBe(false)
      }),
  )
  it.scoped(
    "review: a pasted key is not repeated, a <out>.part not ours is kept, a low-order key refused, unlisted or unsafe paths refused",
    () =>
      Effect.gen(function* () {
        const { root, dir, keys, file } = yield* sealedOf
        const key = yield* Seal.readKey(keys.priv, "private")
        // a private key pasted where its path goes
        const pasted = NFS.readFileSync(keys.priv, "utf8")
        const e1 = yield* Effect.flip(Seal.readKey(pasted, "private"))
        expect(e1.message).toBe(
          "--key: the value is not a file path (not shown: the key itself?); give the path of the file that holds the key",
        )
        expect(e1.message).not.toContain(JSON.parse(pasted).d)
        // a <out>.part this command did not leave: kept, and the run refused
        const out = Path.join(root, "restore")
        NFS.mkdirSync(`${out}.part`)
        NFS.writeFileSync(Path.join(`${out}.part`, "mine.txt"), "mine")
        const e2 = yield* Effect.flip(Seal.unseal(file, key, out))
        expect([e2.reason, e2.message]).toEqual([
          "Exists",
          `${out}.part: exists and was not left by ferry unseal; move it away, or choose another --out`,
        ])
        expect(NFS.readFileSync(Path.join(`${out}.part`, "mine.txt"), "utf8")).toBe("mine")
        NFS.writeFileSync(Path.join(root, "other.sealed.part"), "my notes")
        const e3 = yield* Effect.flip(Seal.seal(dir, createPublicKey(key), Path.join(root, "other.sealed")))
        expect(e3.message).toContain("other.sealed.part: exists and was not left by ferry seal")
        expect(NFS.readFileSync(Path.join(root, "other.sealed.part"), "utf8")).toBe("my notes")
        // a low-order public key (all zeros): no key agreement, said as a key problem
        const zero = Path.join(root, "zero.jwk")
        NFS.writeFileSync(
          zero,
          JSON.stringify({ kty: "OKP", crv: "X25519", x: Buffer.alloc(32).toString("base64url") }),
        )
        const e4 = yield* Effect.flip(
          Seal.seal(dir, yield* Seal.readKey(zero, "public"), Path.join(root, "zero.sealed")),
        )
        expect([e4.reason, e4.message]).toEqual([
          "Key",
          "--to: the public key is not one a key can be agreed with (a low-order X25519 point); give the public key ferry keys generate --alg X25519 printed",
        ])
        // a hand-made file with a file its checksums do not list (a journal)
        const pub = createPublicKey(key)
        const listed = tree(dir).filter((f) => f !== "journal.ndjson" && f !== "events.ndjson")
        const records = [
          ["checksums.sha256", NFS.readFileSync(Path.join(dir, "checksums.sha256"))] as const,
          ["manifest.json", NFS.readFileSync(Path.join(dir, "manifest.json"))] as const,
          ...listed
            .filter((f) => f !== "checksums.sha256" && f !== "manifest.json")
            .map((f) => [f, NFS.readFileSync(Path.join(dir, f))] as const),
          ["journal.ndjson", Buffer.from("{}\n")] as const,
        ]
        const forged = Path.join(root, "journal.sealed")
        NFS.writeFileSync(forged, craft(pub, records))
        const e5 = yield* Effect.flip(Seal.unseal(forged, key, Path.join(root, "forged")))
        expect(e5.message).toContain(
          "it holds journal.ndjson, which its checksums.sha256 does not list (it was not made by ferry seal)",
        )
        // an archive file whose name unseal would refuse is not sealed
        const { root: root2, dir: odd } = yield* finishedArchive
        // (renamed consistently: the file, its manifest entry, the checksums)
        NFS.renameSync(
          Path.join(odd, "data", "Patient.000.ndjson"),
          Path.join(odd, "data", "Patient 000.ndjson"),
        )
        const manifestPath = Path.join(odd, "manifest.json")
        NFS.writeFileSync(
          manifestPath,
          NFS.readFileSync(manifestPath, "utf8").replace(
            "data/Patient.000.ndjson",
            "data/Patient 000.ndjson",
          ),
        )
        yield* Archive.writeChecksums(odd, yield* Archive.readManifest(odd))
        const e6 = yield* Effect.flip(Seal.seal(odd, pub, Path.join(root2, "odd.sealed")))
        expect(e6.message).toContain("data/Patient 000.ndjson has a name unseal would refuse")
        expect(e6.reason).toBe("Archive")
      }),
  )
})
