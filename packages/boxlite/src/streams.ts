import { BoxliteError, coded } from './errors'

type StreamName = 'stdout' | 'stderr'

/**
 * One output stream of a command: raw bytes, chunk by chunk, as the command produces them. Reading
 * is pulled, so a slow reader slows the command down instead of buffering without bound. Read it
 * once (iterate, `bytes()` or `text()`). If you never start reading it before `wait()`, its output is
 * discarded so the command cannot stall on it.
 */
export class OutputStream implements AsyncIterable<Buffer> {
  readonly #name: StreamName
  readonly #read: () => Promise<Buffer | null>
  readonly #discard: () => void
  #state: 'unread' | 'reading' | 'discarded' = 'unread'

  /** @internal */
  constructor(name: StreamName, read: () => Promise<Buffer | null>, discard: () => void) {
    this.#name = name
    this.#read = read
    this.#discard = discard
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer, void, undefined> {
    if (this.#state === 'discarded') {
      throw new BoxliteError('INVALID_STATE', `${this.#name} was discarded because wait() was called before reading it: read it before or while waiting`)
    }
    if (this.#state === 'reading') {
      throw new BoxliteError('INVALID_STATE', `${this.#name} is already being read: read each stream once`)
    }
    this.#state = 'reading'
    for (;;) {
      const chunk = await coded(this.#read)
      if (chunk === null) return
      yield chunk
    }
  }

  /** Everything until the end, as one Buffer. */
  bytes(): Promise<Buffer> {
    return collect(this)
  }

  /** Everything until the end, decoded as UTF-8. */
  async text(): Promise<string> {
    return (await this.bytes()).toString('utf8')
  }

  /** @internal Called by `Execution.wait()`. */
  discardIfUnread(): void {
    if (this.#state !== 'unread') return
    this.#state = 'discarded'
    this.#discard()
  }
}

/** The command's stdin. Close it when done, or commands that read to the end never finish. */
export class InputStream {
  readonly #write: (data: Buffer) => Promise<void>
  readonly #close: () => Promise<void>

  /** @internal */
  constructor(write: (data: Buffer) => Promise<void>, close: () => Promise<void>) {
    this.#write = write
    this.#close = close
  }

  /** Writes bytes (strings as UTF-8); resolves once the guest accepted them. */
  async write(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
    await coded(() => this.#write(bytes))
  }

  /** Closes stdin: the command reads end-of-file. Closing again does nothing. */
  async close(): Promise<void> {
    await coded(this.#close)
  }
}

/** Every chunk of `chunks` until its end, as one Buffer. */
export async function collect(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const all: Buffer[] = []
  for await (const chunk of chunks) all.push(chunk)
  return Buffer.concat(all)
}
