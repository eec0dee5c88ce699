/** Every code a BoxLite error can carry: the runtime's codes, plus `ABORTED` for cancelled calls. */
export const ERROR_CODES = [
  'INVALID_ARGUMENT',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'INVALID_STATE',
  'IMAGE',
  'REGISTRY',
  'ENGINE',
  'GUEST_BOOT',
  'GUEST',
  'STORAGE',
  'DATABASE',
  'INTERNAL',
  'ABORTED',
] as const

export type ErrorCode = (typeof ERROR_CODES)[number]

/** Node-API statuses the addon's argument conversion throws with (a missing field, a wrong type). */
const NAPI_ARGUMENT_STATUSES = new Set([
  'InvalidArg',
  'ObjectExpected',
  'StringExpected',
  'NameExpected',
  'FunctionExpected',
  'NumberExpected',
  'BooleanExpected',
  'ArrayExpected',
  'BigintExpected',
])

function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && (ERROR_CODES as readonly string[]).includes(value)
}

/** The one error class of BoxLite. A command that exits non-zero is a result, never this. */
export class BoxliteError extends Error {
  readonly code: ErrorCode

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'BoxliteError'
    this.code = code
  }

  /** Normalizes anything caught (the addon's coded errors, aborts, plain errors) to a BoxliteError. */
  static from(error: unknown): BoxliteError {
    if (error instanceof BoxliteError) return error
    if (error instanceof Error) {
      const code = (error as { code?: unknown }).code
      if (isErrorCode(code)) return new BoxliteError(code, error.message, { cause: error })
      if (typeof code === 'string' && NAPI_ARGUMENT_STATUSES.has(code)) {
        return new BoxliteError('INVALID_ARGUMENT', error.message, { cause: error })
      }
      if (error.name === 'AbortError') return new BoxliteError('ABORTED', error.message, { cause: error })
      return new BoxliteError('INTERNAL', error.message, { cause: error })
    }
    return new BoxliteError('INTERNAL', String(error), { cause: error })
  }
}

/** Runs `call`, rethrowing whatever it throws as a BoxliteError. */
export async function coded<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (error) {
    throw BoxliteError.from(error)
  }
}

/** Throws `ABORTED` when the signal already fired (before any work starts). */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new BoxliteError('ABORTED', `${what} was aborted`, { cause: signal.reason })
}
