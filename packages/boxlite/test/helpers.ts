import { expect } from 'vitest'
import { BoxliteError } from '@boxlite/core'

/** The BoxliteError `promise` rejects with; fails the test if it resolves or rejects otherwise. */
export async function failure(promise: Promise<unknown>): Promise<BoxliteError> {
  try {
    await promise
  } catch (error) {
    expect(error).toBeInstanceOf(BoxliteError)
    return error as BoxliteError
  }
  throw new Error('expected a BoxliteError, but the call succeeded')
}
