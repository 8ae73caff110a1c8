/**
 * The Binary resources an import makes on the target for attachment payloads that were no Binary of the
 * source (an attachment on a file host, or one whose Binary was not exported): how the import names them, and
 * how a verify knows them from data the target holds of its own (they are no extra: their bytes are checked
 * through the attachments that point at them).
 */
import { createHash } from "node:crypto"

/** The tag system marking a Binary Ferry uploaded with the sha256 of its bytes (post strategy). */
export const sha256TagSystem = "urn:ferry:sha256"

/**
 * The deterministic target id of an attachment blob's one copy (`--strategy import`, and put imports before the
 * copies were made per owner): 64 characters, never purely numeric.
 */
export const binaryIdFor = (sha256: string): string => `ferry-${sha256.slice(0, 58)}`

/**
 * The deterministic target id of an attachment blob's copy for the resource that points at it (put mode:
 * `owner` is that resource's target `Type/id`, which the copy's `securityContext` names): `ferry-`, the first
 * 40 hex digits of the blob's sha256, `-`, the first 16 of the owner's (63 characters).
 */
export const ownedBinaryIdFor = (sha256: string, owner: string): string =>
  `ferry-${sha256.slice(0, 40)}-${createHash("sha256").update(owner).digest("hex").slice(0, 16)}`

const putId = /^ferry-(?:[0-9a-f]{58}|[0-9a-f]{40}-[0-9a-f]{16})$/
const ownedId = /^ferry-[0-9a-f]{40}-[0-9a-f]{16}$/

/** Whether `id` is that of a copy made for one resource (`ownedBinaryIdFor`), whose `securityContext` names it. */
export const isOwnedCopyId = (id: string): boolean => ownedId.test(id)

/**
 * The sha256 an attachment copy names (see `isAttachmentCopy`): the first 58 hex digits of it for one put by
 * its id (40 for a copy per owner), the whole for one tagged in post mode; undefined for any other resource.
 */
export const copiedSha256 = (resource: {
  readonly resourceType: string
  readonly id?: string | undefined
  readonly meta?: unknown
}): string | undefined => {
  if (resource.resourceType !== "Binary") return undefined
  if (typeof resource.id === "string" && putId.test(resource.id))
    return resource.id.slice(6, 6 + 58).split("-")[0]
  const tags = (resource.meta as { tag?: unknown } | undefined)?.tag
  if (!Array.isArray(tags)) return undefined
  for (const t of tags as ReadonlyArray<unknown>)
    if (typeof t === "object" && t !== null) {
      const { system, code } = t as { system?: unknown; code?: unknown }
      if (system === sha256TagSystem && typeof code === "string") return code
    }
  return undefined
}

/** Whether `resource` is a Binary an import uploaded for an attachment payload (put: its id; post: its tag). */
export const isAttachmentCopy = (resource: {
  readonly resourceType: string
  readonly id?: string | undefined
  readonly meta?: unknown
}): boolean => copiedSha256(resource) !== undefined
