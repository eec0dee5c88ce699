import { Runtime } from '@boxlite/core'
import { afterAll, describe, expect, it } from 'vitest'
import { CodeBox, DEFAULT_CODE_IMAGE } from '../src/index'
import { REGISTRY, registries, tempHome } from '../../../test/fixtures'

const home = await tempHome()
const runtime = new Runtime({ home })

describe('CodeBox', () => {
  // No image: the default, an unqualified name, is pulled from the first registry (the test one).
  const box = new CodeBox({ home, registries })
  afterAll(() => box.remove())

  it('runs Python code', async () => {
    await expect(box.run('print(6 * 7)')).resolves.toEqual({
      exitCode: 0,
      stdout: '42\n',
      stderr: '',
      timedOut: false,
    })
  })

  it('runs it with python3 -c, in the default image, with the options given', async () => {
    const code = 'import os, sys; print(sys.argv, os.environ["A"])'
    await expect(box.run(code, { env: { A: 'from-options' } })).resolves.toMatchObject({
      exitCode: 0,
      stdout: "['-c'] from-options\n",
    })
    await expect((await runtime.get(box.id!))?.info()).resolves.toMatchObject({ image: DEFAULT_CODE_IMAGE })
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

  // What installPackage hands pip, seen by a stand-in `pip` module that `python3 -m` finds in the cwd.
  it('runs pip install quietly, without prompts', async () => {
    const standIn = 'mkdir -p /tmp/stand-in/pip && echo "import sys; print(sys.argv[1:])" > /tmp/stand-in/pip/__main__.py'
    await expect(box.exec('sh', '-c', standIn)).resolves.toMatchObject({ exitCode: 0 })
    await expect(box.installPackage('requests', { cwd: '/tmp/stand-in' })).resolves.toMatchObject({
      exitCode: 0,
      stdout: "['install', '--disable-pip-version-check', '--no-input', '--quiet', 'requests']\n",
    })
  })
})

it('uses the image it is given', async () => {
  const ids = async () => (await runtime.list()).map((b) => b.id)
  const before = await ids()
  const box = new CodeBox({ image: `${REGISTRY}/no-such-image:latest`, home, registries })
  await expect(box.run('print(1)')).rejects.toMatchObject({
    name: 'BoxliteError',
    code: expect.stringMatching(/^(IMAGE|REGISTRY|NOT_FOUND)$/),
  })
  expect(await ids()).toEqual(before)
})
