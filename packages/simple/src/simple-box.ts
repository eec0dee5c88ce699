import {
  BoxliteError,
  type Box,
  type BoxInfo,
  type BoxMetrics,
  type BoxOptions,
  type CopyOptions,
  type FileEntry,
  type FileReadStream,
  type FileRemoveOptions,
  type FileWatch,
  type InputStream,
  type MkdirOptions,
  type NetworkOptions,
  type RegistryOptions,
  type RestoreOptions,
  type Runtime,
  type SnapshotInfo,
  type TemplateInfo,
  type WarmupOptions,
  type WatchOptions,
  type WriteData,
  type WriteOptions,
} from '@boxlite/core'
import { defaultRuntime } from './default-runtime'
import {
  parseExecArgs,
  type EnvRecord,
  type ExecArgs,
  type ExecResult,
  type SimpleExecOptions,
} from './exec-args'

export interface SimpleBoxOptions extends BoxOptions {
  /** The runtime to create the box in. Default: one shared per process for `home` and `registries`. */
  runtime?: Runtime
  /** State directory of the default runtime (default `$BOXLITE_HOME` or `~/.boxlite`). */
  home?: string
  /** Registry settings of the default runtime (e.g. `{ host: '127.0.0.1:5000', insecure: true }`). */
  registries?: RegistryOptions[]
  /**
   * Use the box named `name` if the home has one (made earlier, perhaps by another process), and
   * create it only if not; `created` then says which happened. Needs `name`.
   */
  reuseExisting?: boolean
}

/**
 * A box that is there when you need it: created (and booted) on first use, removed by `remove()`
 * or by `await using`.
 *
 * ```ts
 * await using box = new SimpleBox({ image: 'alpine:latest' })
 * const { exitCode, stdout } = await box.exec('echo', 'hi')
 * ```
 */
export class SimpleBox implements AsyncDisposable {
  readonly #boxOptions: BoxOptions
  readonly #runtime: Runtime | undefined
  readonly #runtimeOptions: Pick<SimpleBoxOptions, 'home' | 'registries'>
  readonly #reuseExisting: boolean
  // Shared by concurrent first calls, so there is only ever one creation in flight.
  #creation: Promise<Box> | undefined
  #box: Box | undefined
  #created: boolean | undefined
  #removal: Promise<void> | undefined
  #files: SimpleFiles | undefined

  constructor(options: SimpleBoxOptions) {
    const { runtime, home, registries, reuseExisting, ...boxOptions } = options
    if (runtime && (home !== undefined || registries !== undefined)) {
      throw new BoxliteError('INVALID_ARGUMENT', 'pass either a runtime or home/registries, not both')
    }
    if (reuseExisting && boxOptions.name === undefined) {
      throw new BoxliteError('INVALID_ARGUMENT', 'reuseExisting needs a name: the box to reuse is found by it')
    }
    this.#boxOptions = boxOptions
    this.#runtime = runtime
    this.#runtimeOptions = { home, registries }
    this.#reuseExisting = reuseExisting ?? false
  }

  /** The box's id, once it has been created or found (by the first call that needs the box). */
  get id(): string | undefined {
    return this.#box?.id
  }

  /** The name the box was given, if any. */
  get name(): string | undefined {
    return this.#boxOptions.name
  }

  /**
   * Whether this SimpleBox created its box (`true`) or reused one already there (`false`, only
   * with `reuseExisting`); `undefined` until the first call that needs the box.
   */
  get created(): boolean | undefined {
    return this.#created
  }

  /** The box's id, creating the box first if needed. */
  async getId(): Promise<string> {
    return (await this.#ensureBox()).id
  }

  /** The box's settings and status, creating the box first if needed (it does not boot it). */
  async info(): Promise<BoxInfo> {
    return (await this.#ensureBox()).info()
  }

  /** The same as {@link SimpleBox.info} (the reference SDK's name). */
  getInfo(): Promise<BoxInfo> {
    return this.info()
  }

  /** CPU, memory, command and network figures; zeros while the box is not running. */
  async metrics(): Promise<BoxMetrics> {
    return (await this.#ensureBox()).metrics()
  }

  /**
   * Replaces the box's egress policy (`'default'`, `{ allow }` or `{ deny }`), at once if it runs
   * and for its later starts; creates the box first if needed. See `Box.setNetwork`.
   */
  async setNetwork(network: NetworkOptions): Promise<void> {
    await (await this.#ensureBox()).setNetwork(network)
  }

  /** Creates the box if needed and boots it; `exec` does both by itself. */
  async start(): Promise<void> {
    const box = await this.#ensureBox()
    await box.start()
  }

  /**
   * Runs a command and collects its output: `exec('echo', 'hi')`; with an environment as the last
   * argument, `exec('env', { FOO: 'bar' })`; or with options
   * `exec('sh', ['-c', 'cat'], { stdin: 'hi', env, cwd, user, timeoutMs, signal })`, or
   * `exec('env', [], { FOO: 'bar' }, { timeoutSecs: 5 })`. An object after the argument array is
   * read as options when all its keys are option names, else as the environment.
   * Resolves with the exit code even when it is non-zero; rejects with a {@link BoxliteError} when
   * the command cannot start (`INVALID_ARGUMENT`: not found, no such cwd or user) or is aborted
   * (`ABORTED`).
   */
  exec(cmd: string, ...args: string[]): Promise<ExecResult>
  exec(cmd: string, ...argsThenEnv: [...string[], EnvRecord]): Promise<ExecResult>
  exec(cmd: string, args: string[], options?: SimpleExecOptions | EnvRecord): Promise<ExecResult>
  exec(cmd: string, args: string[], env: EnvRecord | null | undefined, options?: SimpleExecOptions): Promise<ExecResult>
  async exec(cmd: string, ...rest: ExecArgs): Promise<ExecResult> {
    const { args, options } = parseExecArgs(rest)
    const { stdin, ...execOptions } = options
    const box = await this.#ensureBox()
    const execution = await box.exec(cmd, args, execOptions)
    const [stdout, stderr, , exit] = await Promise.all([
      execution.stdout.text(),
      execution.stderr.text(),
      feed(execution.stdin, stdin),
      execution.wait(),
    ])
    return { exitCode: exit.exitCode, stdout, stderr, timedOut: exit.timedOut }
  }

  /**
   * Copies a host file or directory into the box (created and booted first if needed); see
   * `Box.copyIn` in `@boxlite/core`: `docker cp` rules, modes, mtimes and symlinks kept, an
   * existing target refused (`ALREADY_EXISTS`) unless `overwrite`.
   */
  async copyIn(hostPath: string, guestPath: string, options: CopyOptions = {}): Promise<void> {
    await (await this.#runningBox()).copyIn(hostPath, guestPath, options)
  }

  /** Copies a file or directory of the box to the host (booting the box first if needed); see `Box.copyOut`. */
  async copyOut(guestPath: string, hostPath: string, options: CopyOptions = {}): Promise<void> {
    await (await this.#runningBox()).copyOut(guestPath, hostPath, options)
  }

  /**
   * The box's files: `read`, `readText`, `readStream`, `write`, `list`, `stat`, `exists`, `mkdir`,
   * `remove`, `rename` and `watch`, as `Box.files` in `@boxlite/core`; each call creates and boots
   * the box first if needed.
   */
  get files(): SimpleFiles {
    this.#files ??= new SimpleFiles(async () => (await this.#runningBox()).files)
    return this.#files
  }

  /**
   * Pauses the running box: its vCPUs stop, its memory and processes are kept, until `resume()`;
   * calls meanwhile are refused (`INVALID_STATE`). See `Box.pause` in `@boxlite/core`.
   */
  async pause(): Promise<void> {
    await (await this.#ensureBox()).pause()
  }

  /** Lets a paused box run again (its clock set to the host's), or continues a suspended one. */
  async resume(): Promise<void> {
    await (await this.#ensureBox()).resume()
  }

  /**
   * Saves the box's memory to disk and ends its VM (`'suspended'`, using no CPU or memory); the
   * next `resume()` or `exec` continues it, processes and all. See `Box.suspend` in `@boxlite/core`.
   */
  async suspend(): Promise<void> {
    await (await this.#ensureBox()).suspend()
  }

  /**
   * Saves the running box's memory and disk under `name` while it goes on; `SimpleBox.restore`
   * and `fork` start boxes from there. See `Box.snapshot` in `@boxlite/core`.
   */
  async snapshot(name: string): Promise<SnapshotInfo> {
    return (await this.#ensureBox()).snapshot(name)
  }

  /** `count` new boxes that continue from this one as it is now, each its own SimpleBox. */
  async fork(count = 1): Promise<SimpleBox[]> {
    const forks = await (await this.#ensureBox()).fork(count)
    return forks.map((box) => SimpleBox.#wrap(box, this.#runtime, this.#runtimeOptions))
  }

  /**
   * A SimpleBox on a new box that continues from snapshot `snapshot` (made by `snapshot(name)`,
   * in this process or another): running, with its own disk and identity.
   */
  static async restore(
    snapshot: string,
    options: RestoreOptions & Pick<SimpleBoxOptions, 'runtime' | 'home' | 'registries'> = {},
  ): Promise<SimpleBox> {
    const { runtime, home, registries, ...restore } = options
    const rt = runtime ?? defaultRuntime({ home, registries })
    return SimpleBox.#wrap(await rt.restore(snapshot, restore), runtime, { home, registries })
  }

  /**
   * Makes sure the warm start template for boxes of this shape (cpus, memory, network or not)
   * exists in the runtime's home, building it now if needed (one cold boot), so that the first
   * SimpleBox of that shape starts from it instead of booting. Without it the template is made at
   * that first start. See `Runtime.warmup` in `@boxlite/core`.
   */
  static async warmup(
    options: WarmupOptions & Pick<SimpleBoxOptions, 'runtime' | 'home' | 'registries'> = {},
  ): Promise<TemplateInfo> {
    const { runtime, home, registries, ...shape } = options
    const rt = runtime ?? defaultRuntime({ home, registries })
    return rt.warmup(shape)
  }

  static #wrap(box: Box, runtime: Runtime | undefined, runtimeOptions: Pick<SimpleBoxOptions, 'home' | 'registries'>): SimpleBox {
    const simple = new SimpleBox({ image: '', ...(runtime ? { runtime } : runtimeOptions) })
    simple.#box = box
    simple.#created = true
    simple.#creation = Promise.resolve(box)
    return simple
  }

  /** Stops the box's VM; its disk is kept and the next `exec` boots it again. */
  async stop(): Promise<void> {
    const box = await this.#settledBox()
    await box?.stop()
  }

  /** Stops and removes the box. Safe to call more than once; the box cannot be used after. */
  remove(): Promise<void> {
    this.#removal ??= this.#removeOnce()
    return this.#removal
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.remove()
  }

  /** @internal The `@boxlite/core` box, created and booted if needed (for subclasses). */
  protected coreBox(): Promise<Box> {
    return this.#runningBox()
  }

  /** The box, created and booted if needed (file calls need it running, as `exec` boots it). */
  async #runningBox(): Promise<Box> {
    const box = await this.#ensureBox()
    if ((await box.info()).status !== 'running') await box.start()
    return box
  }

  #ensureBox(): Promise<Box> {
    if (this.#removal) {
      return Promise.reject(new BoxliteError('INVALID_STATE', 'the box has been removed'))
    }
    this.#creation ??= this.#create()
    return this.#creation
  }

  async #create(): Promise<Box> {
    try {
      const runtime = this.#runtime ?? defaultRuntime(this.#runtimeOptions)
      const { box, created } = await this.#getOrCreate(runtime)
      this.#box = box
      this.#created = created
      return box
    } catch (error) {
      // Lets a later call try again (e.g. once the registry is up).
      this.#creation = undefined
      throw error
    }
  }

  async #getOrCreate(runtime: Runtime): Promise<{ box: Box; created: boolean }> {
    const name = this.#boxOptions.name
    if (!this.#reuseExisting || name === undefined) {
      return { box: await runtime.create(this.#boxOptions), created: true }
    }
    const existing = await runtime.get(name)
    if (existing) return { box: existing, created: false }
    try {
      return { box: await runtime.create(this.#boxOptions), created: true }
    } catch (error) {
      // Another process created it between our look and our create: use theirs.
      if (!(error instanceof BoxliteError && error.code === 'ALREADY_EXISTS')) throw error
      const raced = await runtime.get(name)
      if (!raced) throw error
      return { box: raced, created: false }
    }
  }

  /** The box once any creation in flight has settled; undefined when there is none. */
  async #settledBox(): Promise<Box | undefined> {
    await this.#creation?.catch(() => undefined)
    return this.#box
  }

  async #removeOnce(): Promise<void> {
    const box = await this.#settledBox()
    if (!box) return
    // A boot already under way when the removal began can finish between the runtime's stop and
    // its removal; the runtime then refuses with INVALID_STATE and asks to try again. No new boot
    // can start (this SimpleBox refuses use once removal began), so a few tries are enough.
    for (let attempt = 1; ; attempt++) {
      try {
        return await box.remove({ force: true })
      } catch (error) {
        if (attempt >= REMOVE_ATTEMPTS || !(error instanceof BoxliteError && error.code === 'INVALID_STATE')) throw error
      }
    }
  }
}

const REMOVE_ATTEMPTS = 3

type BoxFiles = Box['files']

/** `SimpleBox.files`: `Box.files` of `@boxlite/core`, on a box created and booted on first use. */
export class SimpleFiles {
  readonly #files: () => Promise<BoxFiles>

  /** @internal */
  constructor(files: () => Promise<BoxFiles>) {
    this.#files = files
  }

  /** A whole file's bytes. */
  async read(path: string): Promise<Buffer> {
    return (await this.#files()).read(path)
  }

  /** A whole file, decoded as UTF-8. */
  async readText(path: string): Promise<string> {
    return (await this.#files()).readText(path)
  }

  /** A file's bytes chunk by chunk (an async iterable of Buffers, with `bytes()` and `text()`). */
  async readStream(path: string): Promise<FileReadStream> {
    return (await this.#files()).readStream(path)
  }

  /** Writes a file from text, bytes or a stream of chunks (sent with backpressure); `mode` sets its permission bits. */
  async write(path: string, data: WriteData, options: WriteOptions = {}): Promise<void> {
    await (await this.#files()).write(path, data, options)
  }

  /** A directory's entries (`name`, `type`, `size`, `mode`, `mtime`), sorted by name. */
  async list(path: string): Promise<FileEntry[]> {
    return (await this.#files()).list(path)
  }

  /** One entry (a final symlink not followed). */
  async stat(path: string): Promise<FileEntry> {
    return (await this.#files()).stat(path)
  }

  /** Whether the path exists in the box. */
  async exists(path: string): Promise<boolean> {
    return (await this.#files()).exists(path)
  }

  /** Creates a directory; with `parents`, the missing ones above it too. */
  async mkdir(path: string, options: MkdirOptions = {}): Promise<void> {
    await (await this.#files()).mkdir(path, options)
  }

  /** Removes a file, symlink or empty directory; with `recursive`, a whole tree. */
  async remove(path: string, options: FileRemoveOptions = {}): Promise<void> {
    await (await this.#files()).remove(path, options)
  }

  /** Renames (moves) `from` to `to` within the box. */
  async rename(from: string, to: string): Promise<void> {
    await (await this.#files()).rename(from, to)
  }

  /**
   * Watches a directory: resolves once the watch is in place; iterate the result for events. It
   * ends when the box stops; `break`, `close()` or the `signal` end it (in the box too).
   */
  async watch(path: string, options: WatchOptions = {}): Promise<FileWatch> {
    return (await this.#files()).watch(path, options)
  }
}

async function feed(stdin: InputStream, text: string | undefined): Promise<void> {
  try {
    if (text !== undefined && text !== '') await stdin.write(text)
    await stdin.close()
  } catch (error) {
    // The command ended without reading all of its input: its result still stands.
    if (!(error instanceof BoxliteError && error.code === 'INVALID_STATE')) throw error
  }
}
