import { describe, expect, it } from 'vitest'
import { BoxliteError, throwIfAborted } from './errors'

describe('BoxliteError.from', () => {
  it('keeps the code the addon put on the error', () => {
    const raw = Object.assign(new Error('no box with id or name "x"'), { code: 'NOT_FOUND' })
    const e = BoxliteError.from(raw)
    expect(e).toBeInstanceOf(BoxliteError)
    expect(e.code).toBe('NOT_FOUND')
    expect(e.message).toBe('no box with id or name "x"')
    expect(e.cause).toBe(raw)
  })

  it('maps unknown codes and non-errors to INTERNAL', () => {
    expect(BoxliteError.from(Object.assign(new Error('x'), { code: 'GenericFailure' })).code).toBe('INTERNAL')
    expect(BoxliteError.from('boom').code).toBe('INTERNAL')
  })

  it("maps the addon's argument conversion failures to INVALID_ARGUMENT", () => {
    const raw = Object.assign(new Error('Missing field `host` on RuntimeOptions.registries'), { code: 'InvalidArg' })
    expect(BoxliteError.from(raw)).toMatchObject({ code: 'INVALID_ARGUMENT', message: raw.message })
  })

  it('maps AbortError to ABORTED', () => {
    const abort = new DOMException('stop', 'AbortError')
    expect(BoxliteError.from(abort).code).toBe('ABORTED')
  })

  it('returns a BoxliteError as it is', () => {
    const e = new BoxliteError('IMAGE', 'bad')
    expect(BoxliteError.from(e)).toBe(e)
  })
})

describe('throwIfAborted', () => {
  it('throws ABORTED only for an aborted signal', () => {
    expect(() => throwIfAborted(undefined, 'x')).not.toThrow()
    expect(() => throwIfAborted(new AbortController().signal, 'x')).not.toThrow()
    expect(() => throwIfAborted(AbortSignal.abort(), 'the pull')).toThrow(/the pull was aborted/)
  })
})
