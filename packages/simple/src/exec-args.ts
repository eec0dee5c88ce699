import { BoxliteError, type ExecOptions } from '@boxlite/core'

/** Options for one command run by {@link SimpleBox.exec}. */
export interface SimpleExecOptions
  extends Pick<ExecOptions, 'env' | 'cwd' | 'user' | 'timeoutMs' | 'signal'> {
  /** Text written to the command's standard input. Standard input is closed after it (or at once). */
  stdin?: string
  /** The timeout in seconds (the reference SDK's name); give this or `timeoutMs`, not both. */
  timeoutSecs?: number
}

/** What a finished command left: a non-zero exit is a result like any other, not an error. */
export interface ExecResult {
  /** The exit code; 128 + N when the command was killed by signal N. */
  exitCode: number
  stdout: string
  stderr: string
  /** True when the timeout ran out and the command was killed. */
  timedOut: boolean
}

/** Environment variables for one command. */
export type EnvRecord = Record<string, string>

/**
 * The ways to pass arguments: `('echo', 'a', 'b')`, `('env', 'a', { FOO: '1' })` (a trailing
 * object is the environment), `('echo', ['a'], options)`, `('env', ['a'], { FOO: '1' })` and
 * `('env', ['a'], { FOO: '1' }, { timeoutSecs })`.
 */
export type ExecArgs =
  | (string | EnvRecord)[]
  | [args: string[], options?: SimpleExecOptions | EnvRecord]
  | [args: string[], env: EnvRecord | null | undefined, options?: SimpleExecOptions]

const OPTION_KEYS: ReadonlySet<string> = new Set<keyof SimpleExecOptions>([
  'env',
  'cwd',
  'user',
  'timeoutMs',
  'timeoutSecs',
  'signal',
  'stdin',
])

/** Turns exec's arguments into an argument list and core exec options (plus stdin). */
export function parseExecArgs(rest: ExecArgs): { args: string[]; options: Omit<SimpleExecOptions, 'timeoutSecs'> } {
  const [first, second, third, ...extra] = rest as unknown[]
  if (Array.isArray(first)) {
    if (extra.length > 0 || !first.every((arg) => typeof arg === 'string')) throw invalidArgs()
    if (rest.length <= 2) {
      // A lone object after the array: options when every key is an option's, else the environment.
      if (second === undefined) return { args: first, options: {} }
      if (!isPlainObject(second)) throw invalidArgs()
      const isOptions = Object.keys(second).every((key) => OPTION_KEYS.has(key))
      return { args: first, options: isOptions ? execOptions(second) : { env: envRecord(second) } }
    }
    if (second !== undefined && second !== null && !isPlainObject(second)) throw invalidArgs()
    if (third !== undefined && !isPlainObject(third)) throw invalidArgs()
    const options = execOptions(third ?? {})
    if (second === undefined || second === null) return { args: first, options }
    if (options.env !== undefined) {
      throw new BoxliteError('INVALID_ARGUMENT', 'give the environment once: as the third argument or as options.env')
    }
    return { args: first, options: { ...options, env: envRecord(second) } }
  }
  const last = rest.at(-1)
  const strings = isPlainObject(last) ? rest.slice(0, -1) : rest
  if (!strings.every((arg) => typeof arg === 'string')) throw invalidArgs()
  return { args: strings as string[], options: isPlainObject(last) ? { env: envRecord(last) } : {} }
}

function execOptions(value: object): Omit<SimpleExecOptions, 'timeoutSecs'> {
  const { timeoutSecs, ...options } = value as SimpleExecOptions
  if (timeoutSecs === undefined) return options
  if (options.timeoutMs !== undefined) {
    throw new BoxliteError('INVALID_ARGUMENT', 'give timeoutSecs or timeoutMs, not both')
  }
  if (typeof timeoutSecs !== 'number' || !Number.isFinite(timeoutSecs) || timeoutSecs < 0) {
    throw new BoxliteError('INVALID_ARGUMENT', `timeoutSecs must be a number of seconds, got ${String(timeoutSecs)}`)
  }
  return { ...options, timeoutMs: Math.round(timeoutSecs * 1000) }
}

function envRecord(value: object): EnvRecord {
  for (const [key, v] of Object.entries(value)) {
    if (typeof v !== 'string') {
      throw new BoxliteError('INVALID_ARGUMENT', `environment variable ${key} must be a string, got ${typeof v}`)
    }
  }
  return value as EnvRecord
}

function isPlainObject(value: unknown): value is object {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false
  const proto: unknown = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

function invalidArgs(): BoxliteError {
  return new BoxliteError(
    'INVALID_ARGUMENT',
    'exec takes (cmd, ...args[, env]) with string args, or (cmd, args[], options), or (cmd, args[], env, options)',
  )
}
