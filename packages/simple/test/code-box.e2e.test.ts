import { afterAll, describe, expect, it } from 'vitest'
import { CodeBox } from '../src/index'
import { REGISTRY, registries, tempHome } from '../../../test/fixtures'

const home = await tempHome()

describe('CodeBox', () => {
  const box = new CodeBox({ image: `${REGISTRY}/python:slim`, home, registries })
  afterAll(() => box.remove())

  it('runs Python code', async () => {
    await expect(box.run('print(6 * 7)')).resolves.toEqual({
      exitCode: 0,
      stdout: '42\n',
      stderr: '',
      timedOut: false,
    })
  })

  it('returns an exception as a non-zero exit with its traceback', async () => {
    const result = await box.run('1 / 0')
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toContain('ZeroDivisionError')
  })

  it('gives the code its stdin', async () => {
    const result = await box.run('import sys; print(sys.stdin.read().upper())', { stdin: 'abc' })
    expect(result.stdout).toBe('ABC\n')
  })

  // The test image has no pip and boxes have no network yet: all we can check is that the failure
  // comes back as a result that says what went wrong.
  it('reports a package it cannot install as a failed result', async () => {
    const result = await box.installPackage('requests')
    expect(result.exitCode).not.toBe(0)
    expect(result.stderr).toMatch(/pip/)
  })
})
