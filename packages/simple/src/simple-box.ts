import {
  BoxliteError,
  type Box,
  type BoxOptions,
  type InputStream,
  type RegistryOptions,
  type Runtime,
} from '@boxlite/core'
import { defaultRuntime } from './default-runtime'
import { parseExecArgs, type ExecArgs, type ExecResult, type SimpleExecOptions } from './exec-args'

export interface SimpleBoxOptions extends BoxOptions {
  /** The runtime to create the box in. Default: one shared per process for `home` and `registries`. */
  runtime?: Runtime
  /** State directory of the default runtime (default `$BOXLITE_HOME` or `~/.boxlite`). */
  home?: string
  /** Registry settings of the default runtime (e.g. `{ host: '127.0.0.1:5000', insecure: true }`). */
  registries?: RegistryOptions[]
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
  // Shared by concurrent first calls, so there is only ever one creation in flight.
  #creation: Promise<Box> | undefined
  #box: Box | undefined
  #removal: Promise<void> | undefined

  constructor(options: SimpleBoxOptions) {
    const { runtime, home, registries, ...boxOptions } = options
    if (runtime && (home !== undefined || registries !== undefined)) {
      throw new BoxliteError('INVALID_ARGUMENT', 'pass either a runtime or home/registries, not both')
    }
    this.#boxOptions = boxOptions
    this.#runtime = runtime
    this.#runtimeOptions = { home, registries }
  }

  /** The box's id, once it has been created (by `start()` or the first `exec()`). */
  get id(): string | undefined {
    return this.#box?.id
  }

  /** Creates the box if needed and boots it; `exec` does both by itself. */
  async start(): Promise<void> {
    const box = await this.#ensureBox()
    await box.start()
  }

  /**
   * Runs a command and collects its output: `exec('echo', 'hi')`, or with options
   * `exec('sh', ['-c', 'cat'], { stdin: 'hi', env, cwd, user, timeoutMs, signal })`.
   * Resolves with the exit code even when it is non-zero; rejects with a {@link BoxliteError} when
   * the command cannot start (`INVALID_ARGUMENT`: not found, no such cwd or user) or is aborted
   * (`ABORTED`).
   */
  exec(cmd: string, ...args: string[]): Promise<ExecResult>
  exec(cmd: string, args: string[], options?: SimpleExecOptions): Promise<ExecResult>
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
      this.#box = await runtime.create(this.#boxOptions)
      return this.#box
    } catch (error) {
      // Lets a later call try again (e.g. once the registry is up).
      this.#creation = undefined
      throw error
    }
  }

  /** The box once any creation in flight has settled; undefined when there is none. */
  async #settledBox(): Promise<Box | undefined> {
    await this.#creation?.catch(() => undefined)
    return this.#box
  }

  async #removeOnce(): Promise<void> {
    const box = await this.#settledBox()
    await box?.remove({ force: true })
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
