import { describe, expect, it } from 'vitest'
import { parseExecArgs } from './exec-args'

describe('parseExecArgs', () => {
  it('takes string arguments as they are', () => {
    expect(parseExecArgs(['a', 'b c'])).toEqual({ args: ['a', 'b c'], options: {} })
    expect(parseExecArgs([])).toEqual({ args: [], options: {} })
  })

  it('takes an argument array with options', () => {
    const options = { cwd: '/tmp', stdin: 'x' }
    expect(parseExecArgs([['-c', 'cat'], options])).toEqual({ args: ['-c', 'cat'], options })
    expect(parseExecArgs([['-c', 'cat']])).toEqual({ args: ['-c', 'cat'], options: {} })
  })

  it('rejects anything else with INVALID_ARGUMENT', () => {
    const bad: unknown[][] = [['a', 1], ['a', ['b']], [['a'], {}, 'extra'], [['a', 2]], [['a'], 'opts']]
    for (const rest of bad) {
      expect(() => parseExecArgs(rest as string[]), JSON.stringify(rest)).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
      )
    }
  })
})
