import { BoxliteError, coded, throwIfAborted } from './errors'
import type { NativeFileReader, NativeFiles, NativeFileWatcher } from './native'
import type { FileEntry, FileRemoveOptions, FileType, MkdirOptions, WatchEvent, WatchOptions, WriteData, WriteOptions } from './types'
import { fileMode, guestPathArg, optionalFlag } from './validate'
import { collect } from './streams'

type NativeFileEntry = Awaited<ReturnType<NativeFiles['stat']>>

function fileEntry(e: NativeFileEntry): FileEntry {
  return { name: e.name, type: e.type as FileType, size: e.size, mode: e.mode, mtime: new Date(e.mtimeMs) }
}

function bytes(data: Uint8Array | string): Buffer {
  return typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
}

/** The chunks of a `WriteData` stream, from an async iterable or a web `ReadableStream`. */
async function* chunksOf(data: AsyncIterable<Uint8Array | string> | ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array | string> {
  if (Symbol.asyncIterator in data) {
    yield* data as AsyncIterable<Uint8Array | string>
    return
  }
  const reader = (data as ReadableStream<Uint8Array>).getReader()
  try {
    for (let next = await reader.read(); !next.done; next = await reader.read()) yield next.value
  } finally {
    reader.releaseLock()
  }
}

function isStream(data: unknown): data is AsyncIterable<Uint8Array | string> | ReadableStream<Uint8Array> {
  if (typeof data !== 'object' || data === null) return false
  return Symbol.asyncIterator in data || typeof (data as { getReader?: unknown }).getReader === 'function'
}

/**
 * The files of one box (`box.files`). Paths are absolute paths in the box, and the box's symlinks
 * resolve inside the box. Every call needs the box running (`INVALID_STATE` otherwise); a missing
 * path is `NOT_FOUND`, an existing one where none may be `ALREADY_EXISTS`, a full box disk `STORAGE`.
 */
export class Files {
  readonly #native: NativeFiles

  /** @internal */
  constructor(files: NativeFiles) {
    this.#native = files
  }

  /** A whole file's bytes (symlinks followed inside the box). For big files see {@link Files.readStream}. */
  async read(path: string): Promise<Buffer> {
    const p = guestPathArg('path', path)
    return await coded(() => this.#native.readAll(p))
  }

  /** A whole file, decoded as UTF-8. */
  async readText(path: string): Promise<string> {
    return (await this.read(path)).toString('utf8')
  }

  /**
   * A file's bytes as they arrive, chunk by chunk (at most 512 KiB each), pulled from the box as
   * they are read. Resolves once the file is open (so a missing one rejects here). Stopping the
   * iteration early (`break`) ends the read in the box.
   */
  async readStream(path: string): Promise<FileReadStream> {
    const p = guestPathArg('path', path)
    return new FileReadStream(await coded(() => this.#native.read(p)))
  }

  /**
   * Writes a file: created, or replaced whole once all is written (a failed write keeps the old
   * content). Its directory must exist. Text is written as UTF-8; a stream (an async iterable of
   * chunks such as a Node `Readable`, or a web `ReadableStream`) is sent chunk by chunk, each
   * pulled only once the box has taken the one before, so it is never held whole in memory.
   */
  async write(path: string, data: WriteData, options: WriteOptions = {}): Promise<void> {
    const p = guestPathArg('path', path)
    const mode = fileMode('mode', options.mode)
    if (typeof data === 'string' || data instanceof Uint8Array) {
      const whole = bytes(data)
      await coded(() => this.#native.write(p, whole, mode))
      return
    }
    if (!isStream(data)) {
      throw new BoxliteError('INVALID_ARGUMENT', `write: data must be a string, a Uint8Array, an async iterable of chunks or a ReadableStream, got ${typeof data}`)
    }
    const writer = await coded(() => this.#native.writer(p, mode))
    try {
      for await (const chunk of chunksOf(data)) {
        if (typeof chunk !== 'string' && !(chunk instanceof Uint8Array)) {
          throw new BoxliteError('INVALID_ARGUMENT', `write: every chunk of the stream must be a Uint8Array or a string, got ${typeof chunk}`)
        }
        if (chunk.length > 0) await coded(() => writer.write(bytes(chunk)))
      }
    } catch (error) {
      await writer.abort()
      throw error
    }
    await coded(() => writer.finish())
  }

  /** A directory's entries, sorted by name; symlinks are listed as `symlink`, not followed. */
  async list(path: string): Promise<FileEntry[]> {
    const p = guestPathArg('path', path)
    return (await coded(() => this.#native.list(p))).map(fileEntry)
  }

  /** One entry (a final symlink is reported as `symlink`, not followed). */
  async stat(path: string): Promise<FileEntry> {
    const p = guestPathArg('path', path)
    return fileEntry(await coded(() => this.#native.stat(p)))
  }

  /** Whether the path exists in the box (a dangling symlink exists). */
  async exists(path: string): Promise<boolean> {
    const p = guestPathArg('path', path)
    return await coded(() => this.#native.exists(p))
  }

  /** Creates a directory (mode `0o755`); with `parents`, the missing ones above it too. */
  async mkdir(path: string, options: MkdirOptions = {}): Promise<void> {
    const p = guestPathArg('path', path)
    const parents = optionalFlag('parents', options.parents)
    await coded(() => this.#native.mkdir(p, parents))
  }

  /** Removes a file, symlink or empty directory; with `recursive`, a whole tree. */
  async remove(path: string, options: FileRemoveOptions = {}): Promise<void> {
    const p = guestPathArg('path', path)
    const recursive = optionalFlag('recursive', options.recursive)
    await coded(() => this.#native.remove(p, recursive))
  }

  /** Renames (moves) `from` to `to` within the box, replacing a file at `to` (as `rename(2)` does). */
  async rename(from: string, to: string): Promise<void> {
    const f = guestPathArg('from', from)
    const t = guestPathArg('to', to)
    await coded(() => this.#native.rename(f, t))
  }

  /**
   * Watches a directory (inotify in the box). Resolves once the watch is in place, so every change
   * made after that is seen. Iterate the result for events; the iteration ends when the box stops
   * or the directory is removed. Leaving the loop (`break`, `return`, a throw), `close()` or the
   * `signal` ends the watch in the box too.
   *
   * ```ts
   * for await (const event of await box.files.watch('/work', { recursive: true })) {
   *   console.log(event.type, event.path)
   * }
   * ```
   */
  async watch(path: string, options: WatchOptions = {}): Promise<FileWatch> {
    const p = guestPathArg('path', path)
    const recursive = optionalFlag('recursive', options.recursive)
    throwIfAborted(options.signal, 'the watch')
    return new FileWatch(await coded(() => this.#native.watch(p, recursive)), options.signal)
  }
}

/**
 * A file being read from a box: iterate it for Buffers, or take it whole with `bytes()` / `text()`.
 * Read it once. `ReadableStream.from(stream)` or `Readable.from(stream)` make it a web or Node stream.
 */
export class FileReadStream implements AsyncIterable<Buffer> {
  readonly #native: NativeFileReader
  #read = false

  /** @internal */
  constructor(reader: NativeFileReader) {
    this.#native = reader
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer, void, undefined> {
    if (this.#read) throw new BoxliteError('INVALID_STATE', 'this file stream is already being read: read it once')
    this.#read = true
    try {
      for (;;) {
        const chunk = await coded(() => this.#native.next())
        if (chunk === null) return
        yield chunk
      }
    } finally {
      this.#native.close()
    }
  }

  /** The rest of the file as one Buffer. */
  bytes(): Promise<Buffer> {
    return collect(this)
  }

  /** The rest of the file, decoded as UTF-8. */
  async text(): Promise<string> {
    return (await this.bytes()).toString('utf8')
  }

  /** Stops reading without reaching the end; the read ends in the box. */
  close(): void {
    this.#native.close()
  }
}

/** A watch of a box directory (`files.watch`): an async iterable of {@link WatchEvent}s. Iterate it once. */
export class FileWatch implements AsyncIterable<WatchEvent>, AsyncDisposable {
  readonly #native: NativeFileWatcher
  readonly #signal: AbortSignal | undefined
  readonly #onAbort = () => this.close()
  #iterated = false

  /** @internal */
  constructor(watcher: NativeFileWatcher, signal: AbortSignal | undefined) {
    this.#native = watcher
    this.#signal = signal
    if (signal?.aborted) watcher.close()
    signal?.addEventListener('abort', this.#onAbort, { once: true })
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<WatchEvent, void, undefined> {
    if (this.#iterated) throw new BoxliteError('INVALID_STATE', 'this watch is already being iterated: iterate it once')
    this.#iterated = true
    try {
      for (;;) {
        const event = await coded(() => this.#native.next())
        if (event === null) {
          throwIfAborted(this.#signal, 'the watch')
          return
        }
        yield { type: event.kind, path: event.path, isDir: event.isDir, ...(event.oldPath == null ? {} : { oldPath: event.oldPath }) }
      }
    } finally {
      this.close()
    }
  }

  /** Ends the watch, in the box too; an iteration in progress ends. Closing again does nothing. */
  close(): void {
    this.#signal?.removeEventListener('abort', this.#onAbort)
    this.#native.close()
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close()
    return Promise.resolve()
  }
}
