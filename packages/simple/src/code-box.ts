import { randomUUID } from 'node:crypto'
import { BoxliteError } from '@boxlite/core'
import {
  CodeContext,
  type CodeExecution,
  type CreateContextOptions,
  type RunCodeOptions,
} from './code-context'
import type { ExecResult, SimpleExecOptions } from './exec-args'
import { SimpleBox, type SimpleBoxOptions } from './simple-box'

/** The image a {@link CodeBox} runs when none is given. */
export const DEFAULT_CODE_IMAGE = 'python:slim'

export interface CodeBoxOptions extends Omit<SimpleBoxOptions, 'image'> {
  /** An image with `python3` on its PATH. Default {@link DEFAULT_CODE_IMAGE}. */
  image?: string
}

/**
 * A box for running code: `run(code)` in a fresh Python interpreter each time, or `runCode(code)`
 * in a context (Python, or JavaScript with `createContext({ language: 'javascript' })` where the
 * image has node) whose variables and imports last from call to call, with rich results.
 *
 * ```ts
 * await using box = new CodeBox()
 * const { stdout } = await box.run('print(6 * 7)')
 * await box.runCode('x = 6 * 7')
 * const { results } = await box.runCode('x')   // results[0].data['text/plain'] === '42'
 * ```
 */
export class CodeBox extends SimpleBox {
  readonly #contexts = new Map<string, CodeContext>()
  #defaultContext: Promise<CodeContext> | undefined

  constructor(options: CodeBoxOptions = {}) {
    super({ ...options, image: options.image ?? DEFAULT_CODE_IMAGE })
  }

  /** Runs `code` with `python3 -c`; an exception in it is a non-zero exit code and a traceback. */
  run(code: string, options?: SimpleExecOptions): Promise<ExecResult> {
    return this.exec('python3', ['-c', code], options)
  }

  /**
   * `pip install name` in the box (needs pip in the image, and network or a local path; pip's own
   * config, e.g. /etc/pip.conf or `PIP_INDEX_URL`, picks the index). A distribution's "externally
   * managed" guard (PEP 668) is lifted: the box is the environment.
   */
  installPackage(name: string, options: SimpleExecOptions = {}): Promise<ExecResult> {
    const pip = ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '--quiet']
    const env = { PIP_BREAK_SYSTEM_PACKAGES: '1', PIP_ROOT_USER_ACTION: 'ignore', ...options.env }
    return this.exec('python3', [...pip, name], { ...options, env })
  }

  /**
   * Starts a new context: an interpreter of its own in the box (booted first if needed), whose
   * state is independent of every other context's.
   */
  async createContext(options: CreateContextOptions = {}): Promise<CodeContext> {
    const context = await CodeContext.start(await this.coreBox(), randomUUID(), options)
    this.#contexts.set(context.id, context)
    return context
  }

  /** The contexts made by {@link createContext} and not removed (the default one is not listed). */
  listContexts(): CodeContext[] {
    return [...this.#contexts.values()]
  }

  /** Ends a context's interpreter; its variables are gone and it cannot run code again. */
  async removeContext(context: CodeContext | string): Promise<void> {
    const found = this.#context(context)
    this.#contexts.delete(found.id)
    await found.close()
  }

  /**
   * Runs a cell of code in a context (default: the box's default context, started on first use and
   * again if its interpreter died). Resolves with the cell's output, its results (the last
   * expression's value, `display()`ed values and matplotlib figures, as MIME bundles) and the
   * exception it raised, if any. With `timeoutMs` the cell is interrupted (KeyboardInterrupt) and
   * the context keeps its state.
   */
  async runCode(code: string, options: RunCodeOptions = {}): Promise<CodeExecution> {
    if (typeof code !== 'string') {
      throw new BoxliteError('INVALID_ARGUMENT', `runCode: code must be a string, got ${typeof code}`)
    }
    const { timeoutMs } = options
    if (timeoutMs !== undefined && !(Number.isInteger(timeoutMs) && timeoutMs > 0)) {
      throw new BoxliteError('INVALID_ARGUMENT', `runCode: timeoutMs must be a positive integer, got ${timeoutMs}`)
    }
    const context = options.context === undefined ? await this.#default() : this.#context(options.context)
    return context.run(code, options)
  }

  #context(context: CodeContext | string): CodeContext {
    const id = typeof context === 'string' ? context : context.id
    const found = this.#contexts.get(id)
    if (!found) {
      throw new BoxliteError('NOT_FOUND', `no context ${id} in this CodeBox (removed, or never made here): create one with createContext()`)
    }
    return found
  }

  async #default(): Promise<CodeContext> {
    for (;;) {
      const pending = this.#defaultContext
      if (pending) {
        const context = await pending.catch(() => undefined)
        if (context && context.died === undefined) return context
        if (this.#defaultContext !== pending) continue // another call started a new one meanwhile
      }
      this.#defaultContext = (async () => CodeContext.start(await this.coreBox(), 'default', {}))()
    }
  }
}
