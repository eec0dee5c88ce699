import { StringDecoder } from 'node:string_decoder'
import { BoxliteError, type Box, type Execution } from '@boxlite/core'
// The in-box drivers: one file per language, shipped by the Python package too, bundled here as text.
import JS_DRIVER from '../../../bindings/python-stub/src/boxlite/_code_driver.js'
import PYTHON_DRIVER from '../../../bindings/python-stub/src/boxlite/_code_driver.py'

/** The languages a context can run: Python (`python3` in the image) or JavaScript (`node`). */
export type CodeLanguage = 'python' | 'javascript'

/** How each language's driver is started; JavaScript's messages come on its fd 3 (see the driver). */
const DRIVERS: Record<CodeLanguage, [string, string[]]> = {
  python: ['python3', ['-u', '-c', PYTHON_DRIVER]],
  javascript: ['sh', ['-c', 'exec node -e "$0" 3>&1 1>&2', JS_DRIVER]],
}

export interface CreateContextOptions {
  /** `'python'` (the image needs `python3`) or `'javascript'` (`node`). Default `'python'`. */
  language?: CodeLanguage
  /** The working directory of the context's interpreter (default: the image's). */
  cwd?: string
  /** Environment over the box's, for the context's interpreter. */
  env?: Record<string, string>
}

/** A result of a cell, as Jupyter's display data: one value in several formats. */
export interface CodeResult {
  /** MIME type → content: `text/plain`, `text/html`, `application/json`, `image/png` (base64), ... */
  data: Record<string, string>
  /** The value of the cell's last expression (`true`), or a `display()`ed value or figure (`false`). */
  isMainResult: boolean
}

/** An exception the cell raised. */
export interface CodeError {
  /** The exception's class, e.g. `ZeroDivisionError`; `ContextDied` when the interpreter ended. */
  name: string
  value: string
  traceback: string
}

/** What running a cell gave. A cell that raises is a result with `error`, not a rejection. */
export interface CodeExecution {
  results: CodeResult[]
  stdout: string
  stderr: string
  error?: CodeError
  /** The cell ran past `timeoutMs` and was interrupted (`error` is then its KeyboardInterrupt). */
  timedOut: boolean
}

export interface RunCodeOptions {
  /** The context to run in (a {@link CodeContext} or its id); default: the box's default context. */
  context?: CodeContext | string
  /** Interrupts the cell (KeyboardInterrupt) after this long; the context stays usable. */
  timeoutMs?: number
  /** Called with the cell's stdout as it comes. */
  onStdout?: (text: string) => void
  /** Called with the cell's stderr as it comes. */
  onStderr?: (text: string) => void
}

/** Bytes of stdout (and of stderr) kept per cell; past it, output is dropped and a marker says so. */
export const CODE_OUTPUT_LIMIT = 1 << 20
/** Bytes of all results of one cell (a chart is ~20–100 KiB of base64). */
const RESULTS_LIMIT = 16 << 20
/** The longest protocol line accepted from the box; a longer one ends the context. */
const LINE_LIMIT = RESULTS_LIMIT + (1 << 20)
/** How long an interrupted cell has to end before its interpreter is killed. */
const INTERRUPT_GRACE_MS = 3000

interface Cell {
  id: string
  result: CodeExecution
  resultBytes: number
  stdoutBytes: number
  stderrBytes: number
  options: RunCodeOptions
  done: () => void
}

/**
 * One interpreter in the box whose variables, imports and working directory last from cell to
 * cell. Made by `CodeBox.createContext()`; cells of one context run one after another.
 */
export class CodeContext {
  readonly id: string
  readonly language: CodeLanguage
  readonly cwd: string | undefined
  readonly #execution: Execution
  #queue: Promise<unknown> = Promise.resolve()
  #cell: Cell | undefined
  #cells = 0
  #died: string | undefined
  #stderrTail = ''
  #ready: Promise<void>

  /** @internal */
  constructor(id: string, language: CodeLanguage, cwd: string | undefined, execution: Execution) {
    this.id = id
    this.language = language
    this.cwd = cwd
    this.#execution = execution
    this.#ready = this.#pump()
    void this.#drainStderr()
  }

  /** @internal Starts the interpreter of a new context in `box`; resolves once it takes cells. */
  static async start(box: Box, id: string, options: CreateContextOptions): Promise<CodeContext> {
    const language = options.language ?? 'python'
    if (!Object.hasOwn(DRIVERS, language)) {
      throw new BoxliteError('INVALID_ARGUMENT', `createContext: language must be 'python' or 'javascript', got ${String(language)}`)
    }
    const env = { ...options.env, BOXLITE_CODE_OUTPUT_LIMIT: String(CODE_OUTPUT_LIMIT) }
    const [program, args] = DRIVERS[language]
    const execution = await box.exec(program, args, { cwd: options.cwd, env })
    const context = new CodeContext(id, language, options.cwd, execution)
    await context.#ready
    return context
  }

  /** Why the context's interpreter ended, or undefined while it runs. */
  get died(): string | undefined {
    return this.#died
  }

  /** @internal Runs one cell after those already queued. */
  run(code: string, options: RunCodeOptions): Promise<CodeExecution> {
    const next = this.#queue.then(() => this.#runNow(code, options))
    this.#queue = next.catch(() => undefined)
    return next
  }

  /** @internal Ends the interpreter (its variables are gone). */
  async close(): Promise<void> {
    this.#died ??= 'the context was removed'
    await this.#execution.kill().catch(() => undefined)
  }

  async #runNow(code: string, options: RunCodeOptions): Promise<CodeExecution> {
    if (this.#died !== undefined) {
      throw new BoxliteError('INVALID_STATE', `context ${this.id} has ended (${this.#died}): create a new one with createContext()`)
    }
    const cell: Cell = {
      id: String(++this.#cells),
      result: { results: [], stdout: '', stderr: '', timedOut: false },
      resultBytes: 0,
      stdoutBytes: 0,
      stderrBytes: 0,
      options,
      done: () => {},
    }
    const finished = new Promise<void>((resolve) => (cell.done = resolve))
    this.#cell = cell
    let timer: NodeJS.Timeout | undefined
    let killer: NodeJS.Timeout | undefined
    if (options.timeoutMs !== undefined) {
      timer = setTimeout(() => {
        cell.result.timedOut = true
        if (this.language === 'javascript') {
          // A looping cell keeps node from reading its stdin: SIGINT reaches it anyway.
          void this.#execution.kill(2).catch(() => undefined)
        } else {
          void this.#send({ type: 'interrupt', id: cell.id })
        }
        // An interpreter stuck where KeyboardInterrupt cannot reach (C code, signals ignored).
        killer = setTimeout(() => void this.#execution.kill().catch(() => undefined), INTERRUPT_GRACE_MS)
      }, options.timeoutMs)
    }
    try {
      await this.#send({ type: 'run', id: cell.id, code })
      await finished
    } finally {
      clearTimeout(timer)
      clearTimeout(killer)
      this.#cell = undefined
    }
    return cell.result
  }

  async #send(request: Record<string, string>): Promise<void> {
    // Strings only, so that the driver can parse the line as a Python literal.
    try {
      await this.#execution.stdin.write(JSON.stringify(request) + '\n')
    } catch (error) {
      if (this.#died === undefined) throw error
    }
  }

  /** Reads the driver's messages until its stdout ends; resolves on `ready`. */
  #pump(): Promise<void> {
    return new Promise<void>((resolveReady, rejectReady) => {
      let ready = false
      const run = async () => {
        const decoder = new StringDecoder('utf8')
        let pending = ''
        try {
          for await (const chunk of this.#execution.stdout) {
            pending += decoder.write(chunk)
            let newline: number
            while ((newline = pending.indexOf('\n')) >= 0) {
              const line = pending.slice(0, newline)
              pending = pending.slice(newline + 1)
              if (!ready && line.startsWith('{"type":"ready"')) {
                ready = true
                resolveReady()
              } else {
                this.#handle(line)
              }
            }
            if (pending.length > LINE_LIMIT) {
              throw new Error(`the interpreter sent a message longer than ${LINE_LIMIT} bytes`)
            }
          }
          const exit = await this.#execution.wait()
          this.#end(`its interpreter exited with code ${exit.exitCode}${this.#stderrSuffix()}`)
        } catch (error) {
          this.#end(error instanceof Error ? error.message : String(error))
          void this.#execution.kill().catch(() => undefined)
        }
        if (!ready) {
          rejectReady(new BoxliteError('INVALID_STATE', `the context's interpreter did not start: ${this.#died}`))
        }
      }
      void run()
    })
  }

  #end(reason: string): void {
    this.#died ??= reason
    const cell = this.#cell
    if (cell) {
      cell.result.error = {
        name: 'ContextDied',
        value: `the context ended while the cell ran (${this.#died}): create a new one with createContext()`,
        traceback: '',
      }
      cell.done()
    }
  }

  async #drainStderr(): Promise<void> {
    // The driver's own failures (the cells' stderr comes as messages): the last bit is kept for errors.
    try {
      for await (const chunk of this.#execution.stderr) {
        this.#stderrTail = (this.#stderrTail + chunk.toString('utf8')).slice(-2000)
      }
    } catch {
      // ended with the box
    }
  }

  #stderrSuffix(): string {
    const tail = this.#stderrTail.trim()
    return tail ? `: ${tail.split('\n').slice(-3).join(' | ')}` : ''
  }

  /** One message of the driver, which runs the cells' code and so is not trusted: checked field by field. */
  #handle(line: string): void {
    const cell = this.#cell
    let message: unknown
    try {
      message = JSON.parse(line)
    } catch {
      return
    }
    if (!cell || typeof message !== 'object' || message === null) return
    const m = message as Record<string, unknown>
    if (m.id !== cell.id) return
    switch (m.type) {
      case 'stdout':
      case 'stderr':
        if (typeof m.text === 'string') this.#output(cell, m.type, m.text)
        return
      case 'result':
        if (isStringRecord(m.data)) {
          const size = Object.values(m.data).reduce((n, v) => n + v.length, 0)
          if (cell.resultBytes + size > RESULTS_LIMIT) {
            this.#output(cell, 'stderr', `[a result of ${size} bytes was dropped: results of one cell are limited to ${RESULTS_LIMIT} bytes]\n`)
            return
          }
          cell.resultBytes += size
          cell.result.results.push({ data: { ...m.data }, isMainResult: m.main === 1 })
        }
        return
      case 'error':
        cell.result.error = {
          name: typeof m.name === 'string' ? m.name : 'Error',
          value: typeof m.value === 'string' ? m.value : '',
          traceback: Array.isArray(m.traceback) ? m.traceback.filter((l) => typeof l === 'string').join('') : '',
        }
        return
      case 'done':
        cell.done()
        return
    }
  }

  #output(cell: Cell, stream: 'stdout' | 'stderr', text: string): void {
    // The driver truncates already; this bound holds whatever the box sends.
    const key = stream === 'stdout' ? 'stdoutBytes' : 'stderrBytes'
    const room = CODE_OUTPUT_LIMIT + 4096 - cell[key]
    if (room <= 0) return
    const kept = text.length > room ? text.slice(0, room) : text
    cell[key] += kept.length
    cell.result[stream] += kept
    const callback = stream === 'stdout' ? cell.options.onStdout : cell.options.onStderr
    try {
      callback?.(kept)
    } catch {
      // A throwing callback must not stop the messages of this and later cells.
    }
  }
}

function isStringRecord(value: unknown): value is Record<string, string> {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    Object.values(value).every((v) => typeof v === 'string')
  )
}
