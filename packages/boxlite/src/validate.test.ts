import { describe, expect, it } from 'vitest'
import { optionalCount, stringRecord } from './validate'

describe('option checks', () => {
  it('accepts whole numbers and undefined', () => {
    expect(optionalCount('cpus', undefined)).toBeUndefined()
    expect(optionalCount('cpus', 2)).toBe(2)
  })

  it('names the option and the bad value', () => {
    expect(() => optionalCount('memoryMib', 1.5)).toThrow(/memoryMib must be a whole number.*got 1.5/)
    expect(() => optionalCount('memoryMib', -1)).toThrow(/INVALID|memoryMib/)
  })

  it('rejects non-string env values by key', () => {
    expect(() => stringRecord('env', { A: 1 as unknown as string })).toThrow(/env\.A must be a string, got number/)
    expect(stringRecord('env', { A: '1' })).toEqual({ A: '1' })
  })
})
