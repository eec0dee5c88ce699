import { coded, throwIfAborted } from './errors'
import { native } from './native'

type Token = InstanceType<typeof native.CancelToken>

/**
 * Runs a long addon call that an AbortSignal may cancel: the signal fires the call's CancelToken,
 * the Rust side drops the work, and the call rejects with code `ABORTED`.
 */
export async function cancellable<T>(signal: AbortSignal | undefined, what: string, call: (token: Token | undefined) => Promise<T>): Promise<T> {
  throwIfAborted(signal, what)
  if (!signal) return coded(() => call(undefined))
  const token = new native.CancelToken()
  const onAbort = () => token.cancel()
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    return await coded(() => call(token))
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}
