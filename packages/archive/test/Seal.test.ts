import { generateKeyPairSync, randomBytes } from "node:crypto"
import * as NFS from "node:fs"
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
        expect((yield* attempt("plain", Buffer.from("{}\nhello"))).message).toContain(
          "this is no sealed Ferry archive",
        )
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
          "this is ec key, and archives are sealed to X25519 keys; make one with ferry keys generate --alg X25519",
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
})
