import { BoxliteError, type ExecOptions } from '@boxlite/core'

/** Options for one command run by {@link SimpleBox.exec}. */
export interface SimpleExecOptions
  extends Pick<ExecOptions, 'env' | 'cwd' | 'user' | 'timeoutMs' | 'signal'> {
  /** Text written to the command's standard input. Standard input is closed after it (or at once). */
  stdin?: string
}

/** What a finished command left: a non-zero exit is a result like any other, not an error. */
export interface ExecResult {
  /** The exit code; 128 + N when the command was killed by signal N. */
  exitCode: number
  stdout: string
  stderr: string
  /** True when `timeoutMs` ran out and the command was killed. */
  timedOut: boolean
}

/** The two ways to pass arguments: `('echo', 'a', 'b')` or `('echo', ['a', 'b'], options)`. */
export type ExecArgs = string[] | [args: string[], options?: SimpleExecOptions]

export function parseExecArgs(rest: ExecArgs): { args: string[]; options: SimpleExecOptions } {
  const [first, options, ...extra] = rest
  if (Array.isArray(first)) {
    if (extra.length > 0 || (options !== undefined && typeof options !== 'object')) {
      throw invalidArgs()
    }
    if (!first.every((arg) => typeof arg === 'string')) throw invalidArgs()
    return { args: first, options: options ?? {} }
  }
  if (!rest.every((arg) => typeof arg === 'string')) throw invalidArgs()
  return { args: rest as string[], options: {} }
}

function invalidArgs(): BoxliteError {
  return new BoxliteError(
    'INVALID_ARGUMENT',
    'exec takes (cmd, ...args) with string args, or (cmd, args[], options)',
  )
}
