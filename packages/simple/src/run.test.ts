import type { Runtime } from '@boxlite/core'
import { describe, expect, it, vi } from 'vitest'
import { run } from './run'
import { Runtime as FakeRuntime } from './testing/fake-core'

vi.mock('@boxlite/core', () => import('./testing/fake-core'))

describe('run', () => {
  it('runs one command in a box it removes afterwards', async () => {
    const fake = new FakeRuntime()
    const result = await run({ image: 'busybox', runtime: fake as unknown as Runtime }, 'echo', 'hi')
    expect(result.exitCode).toBe(0)
    expect(fake.boxes[0]?.execs[0]).toMatchObject({ cmd: 'echo', args: ['hi'] })
    expect(fake.boxes[0]?.events).toEqual(['remove --force'])
  })

  it('removes the box when the command cannot run', async () => {
    const fake = new FakeRuntime()
    fake.output = { execError: new Error('guest gone') }
    const runtime = fake as unknown as Runtime
    await expect(run({ image: 'busybox', runtime }, 'sh', ['-c', 'true'])).rejects.toThrow('guest gone')
    expect(fake.boxes[0]?.events).toEqual(['remove --force'])
  })
})
