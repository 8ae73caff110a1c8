/**
 * [STU3] `organizeOutputBy` output files: resource blocks instead of one type per file.
 *
 * A block is a `Parameters` header whose parameter `header` has a `valueReference` to the owner (for
 * example `Patient/123`), then the owner, then the resources that reference it. Files hold at most
 * `perFile` lines (headers included: the manifest `count` is the number of lines, every one of them a
 * resource). A block that does not fit is split: the file ends, the next file starts with the same header,
 * and the finished file is marked as continuing in the next one (the manifest's `continuesInFile`).
 * A block never starts on the last line of a file (a header alone would say nothing). With `repeatOwner`,
 * the owner line follows the repeated header too (some servers do that; a client must not import it twice).
 */
import { closeSync, openSync, writeSync } from "node:fs"
import { join } from "node:path"

const FLUSH_BYTES = 1 << 20

/** The header line of a block. */
export const headerLine = (ownerReference: string): string =>
  JSON.stringify({
    resourceType: "Parameters",
    parameter: [{ name: "header", valueReference: { reference: ownerReference } }],
  })

export interface OrganizedFile {
  readonly name: string
  readonly path: string
  /** Lines, headers included unless the writer was told not to count them. */
  readonly count: number
  /** The last block goes on in the next file. */
  readonly continues: boolean
}

export class OrganizedWriter {
  private fd: number | undefined
  private index = 0
  private inFile = 0
  private headersInFile = 0
  private buffer: Array<string> = []
  private bytes = 0
  private current: { name: string; path: string } | undefined
  private header: string | undefined
  private headerWritten = false
  private owner: string | undefined
  readonly done: Array<OrganizedFile> = []

  constructor(
    private readonly dir: string,
    private readonly perFile: number,
    private readonly repeatOwner: boolean,
    private readonly countHeaders = true,
  ) {}

  /** Starts a block; its header is written with its first resource (an empty block leaves no trace). */
  startBlock(ownerReference: string): void {
    this.header = headerLine(ownerReference)
    this.headerWritten = false
    this.owner = undefined
  }

  /** Adds a resource of the current block; `isOwner` marks the owner's own line. */
  add(line: string, isOwner = false): void {
    if (this.header === undefined) throw new Error("OrganizedWriter.add before startBlock")
    if (!this.headerWritten) {
      // header and at least one resource must fit, else the block starts in a new file
      if (this.fd !== undefined && this.inFile + 2 > this.perFile) this.closeFile(false)
      this.writeHeader(this.header)
      this.headerWritten = true
    } else if (this.inFile >= this.perFile) {
      this.closeFile(true)
      this.writeHeader(this.header)
      if (this.repeatOwner && this.owner !== undefined) this.write(this.owner)
    }
    this.write(line)
    if (isOwner) this.owner = line
  }

  private writeHeader(line: string): void {
    this.write(line)
    this.headersInFile++
  }

  private write(line: string): void {
    if (this.fd === undefined) this.open()
    this.inFile++
    this.buffer.push(line, "\n")
    this.bytes += line.length + 1
    if (this.bytes >= FLUSH_BYTES) this.flush()
  }

  private open(): void {
    const name = `output.${String(this.index).padStart(3, "0")}.ndjson`
    const path = join(this.dir, name)
    this.fd = openSync(path, "w", 0o600)
    this.current = { name, path }
    this.inFile = 0
    this.headersInFile = 0
  }

  private flush(): void {
    if (this.fd !== undefined && this.buffer.length > 0) writeSync(this.fd, this.buffer.join(""))
    this.buffer = []
    this.bytes = 0
  }

  private closeFile(continues: boolean): void {
    this.flush()
    if (this.fd !== undefined) closeSync(this.fd)
    this.done.push({
      ...this.current!,
      count: this.countHeaders ? this.inFile : this.inFile - this.headersInFile,
      continues,
    })
    this.fd = undefined
    this.index++
  }

  finish(): void {
    if (this.fd !== undefined) this.closeFile(false)
  }

  /** Closes without recording (cancel / failure). */
  abort(): void {
    if (this.fd !== undefined) closeSync(this.fd)
    this.fd = undefined
  }
}
