import type { Runtime } from '@boxlite/core'
import { describe, expect, it, vi } from 'vitest'
import { CodeBox, DEFAULT_CODE_IMAGE } from './code-box'
import { Runtime as FakeRuntime } from './testing/fake-core'

vi.mock('@boxlite/core', () => import('./testing/fake-core'))

describe('CodeBox', () => {
  it('runs code with python3 -c in the default image', async () => {
    const fake = new FakeRuntime()
    const box = new CodeBox({ runtime: fake as unknown as Runtime })
    await box.run('print(1)', { env: { A: '1' } })
    expect(fake.boxes[0]?.options.image).toBe(DEFAULT_CODE_IMAGE)
    expect(fake.boxes[0]?.execs[0]).toMatchObject({
      cmd: 'python3',
      args: ['-c', 'print(1)'],
      options: { env: { A: '1' } },
    })
  })

  it('installs packages with pip, in the image it is given', async () => {
    const fake = new FakeRuntime()
    const box = new CodeBox({ image: 'my/python:3', runtime: fake as unknown as Runtime })
    await box.installPackage('requests')
    expect(fake.boxes[0]?.options.image).toBe('my/python:3')
    expect(fake.boxes[0]?.execs[0]?.args).toEqual([
      '-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '--quiet', 'requests',
    ])
  })
})
