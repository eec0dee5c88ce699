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

  it('takes a trailing object after string arguments as the environment', () => {
    expect(parseExecArgs(['-a', { FOO: 'bar' }])).toEqual({ args: ['-a'], options: { env: { FOO: 'bar' } } })
    expect(parseExecArgs([{ cwd: '/x' }])).toEqual({ args: [], options: { env: { cwd: '/x' } } })
  })

  it('reads an object after the array as options when its keys are option names, else as the environment', () => {
    expect(parseExecArgs([[], { FOO: 'bar' }])).toEqual({ args: [], options: { env: { FOO: 'bar' } } })
    expect(parseExecArgs([[], { cwd: '/tmp', timeoutSecs: 2 }])).toEqual({ args: [], options: { cwd: '/tmp', timeoutMs: 2000 } })
  })

  it('takes (args, env, options) with timeoutSecs, as the reference SDK does', () => {
    expect(parseExecArgs([['x'], { FOO: 'bar' }, { timeoutSecs: 1.5 }])).toEqual({
      args: ['x'],
      options: { env: { FOO: 'bar' }, timeoutMs: 1500 },
    })
    expect(parseExecArgs([['x'], undefined, { timeoutSecs: 3 }])).toEqual({ args: ['x'], options: { timeoutMs: 3000 } })
    expect(parseExecArgs([['x'], null, { cwd: '/' }])).toEqual({ args: ['x'], options: { cwd: '/' } })
  })

  it('rejects an ambiguous or ill-typed environment or timeout', () => {
    const bad: unknown[][] = [
      ['a', { N: 1 }],
      [[], { FOO: 'x' }, { env: { BAR: 'y' } }],
      [[], {}, { timeoutSecs: 1, timeoutMs: 1000 }],
      [[], {}, { timeoutSecs: -1 }],
      [[], 'env', {}],
      ['a', { FOO: 'x' }, 'b'],
    ]
    for (const rest of bad) {
      expect(() => parseExecArgs(rest as string[]), JSON.stringify(rest)).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
      )
    }
  })
})
