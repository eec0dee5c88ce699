import {
  BoxliteError,
  type Box,
  type BoxInfo,
  type BoxMetrics,
  type BoxOptions,
  type InputStream,
  type NetworkOptions,
  type RegistryOptions,
  type Runtime,
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

async function feed(stdin: InputStream, text: string | undefined): Promise<void> {
  try {
    if (text !== undefined && text !== '') await stdin.write(text)
    await stdin.close()
  } catch (error) {
    // The command ended without reading all of its input: its result still stands.
    if (!(error instanceof BoxliteError && error.code === 'INVALID_STATE')) throw error
  }
}
