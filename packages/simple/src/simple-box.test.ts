import type { Runtime } from '@boxlite/core'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { SimpleBox } from './simple-box'
import { BoxliteError, Runtime as FakeRuntime } from './testing/fake-core'

vi.mock('@boxlite/core', () => import('./testing/fake-core'))

let fake: FakeRuntime
let runtime: Runtime
beforeEach(() => {
  fake = new FakeRuntime()
  runtime = fake as unknown as Runtime
})

describe('SimpleBox', () => {
  it('creates its box on first use, once, even for concurrent calls', async () => {
    const box = new SimpleBox({ image: 'busybox', runtime, cpus: 2 })
    expect(box.id).toBeUndefined()
    expect(fake.boxes).toHaveLength(0)

    await Promise.all([box.exec('true'), box.exec('true'), box.start()])
    expect(fake.boxes).toHaveLength(1)
    expect(fake.boxes[0]?.options).toEqual({ image: 'busybox', cpus: 2 })
    expect(box.id).toBe(fake.boxes[0]?.id)
  })

  it('collects output and returns a non-zero exit as a result', async () => {
    const box = new SimpleBox({ image: 'busybox', runtime })
    fake.output = { stdout: 'out', stderr: 'err', exit: { exitCode: 3 } }
    await expect(box.exec('sh', '-c', 'exit 3')).resolves.toEqual({
      exitCode: 3,
      stdout: 'out',
      stderr: 'err',
      timedOut: false,
    })
  })

  it('passes arguments and options, writes stdin and closes it', async () => {
    const box = new SimpleBox({ image: 'busybox', runtime })
    await box.exec('echo', 'a', 'b')
    await box.exec('cat', [], { stdin: 'hello', cwd: '/tmp', env: { A: '1' }, timeoutMs: 5 })
    expect(fake.boxes[0]?.execs).toEqual([
      { cmd: 'echo', args: ['a', 'b'], options: {}, stdin: ['<closed>'] },
      {
        cmd: 'cat',
        args: [],
        options: { cwd: '/tmp', env: { A: '1' }, timeoutMs: 5 },
        stdin: ['hello', '<closed>'],
      },
    ])
  })

  it('returns the result of a command that ended without reading its stdin', async () => {
    const box = new SimpleBox({ image: 'busybox', runtime })
    fake.output = { stdinError: new BoxliteError('INVALID_STATE', 'the command has already ended') }
    await expect(box.exec('true', [], { stdin: 'unread' })).resolves.toMatchObject({ exitCode: 0 })
    fake.output = { stdinError: new BoxliteError('GUEST', 'connection lost') }
    await expect(box.exec('true', [], { stdin: 'unread' })).rejects.toMatchObject({ code: 'GUEST' })
  })

  it('reports a timeout', async () => {
    const box = new SimpleBox({ image: 'busybox', runtime })
    fake.output = { exit: { exitCode: 137, signal: 9, timedOut: true } }
    await expect(box.exec('sleep', ['10'], { timeoutMs: 1 })).resolves.toMatchObject({
      exitCode: 137,
      timedOut: true,
    })
  })

  it('tries creating again after a failed creation', async () => {
    fake.createErrors.push(new Error('registry down'))
    const box = new SimpleBox({ image: 'busybox', runtime })
    await expect(box.exec('true')).rejects.toThrow('registry down')
    await expect(box.exec('true')).resolves.toMatchObject({ exitCode: 0 })
    expect(fake.boxes).toHaveLength(1)
  })

  it('stops only a box it has created', async () => {
    const box = new SimpleBox({ image: 'busybox', runtime })
    await box.stop()
    expect(fake.boxes).toHaveLength(0)
    await box.start()
    await box.stop()
    expect(fake.boxes[0]?.events).toEqual(['start', 'stop'])
  })

  it('removes once, however often it is asked, and is unusable after', async () => {
    const box = new SimpleBox({ image: 'busybox', runtime })
    await box.exec('true')
    await Promise.all([box.remove(), box.remove()])
    await box.remove()
    expect(fake.boxes[0]?.events).toEqual(['remove --force'])
    await expect(box.exec('true')).rejects.toMatchObject({ code: 'INVALID_STATE' })
    expect(fake.boxes).toHaveLength(1)
  })

  it('removes a box whose creation is in flight', async () => {
    const box = new SimpleBox({ image: 'busybox', runtime })
    const exec = box.exec('true')
    await box.remove()
    await exec
    expect(fake.boxes[0]?.events).toEqual(['remove --force'])
  })

  it('creates nothing when removed before use', async () => {
    const box = new SimpleBox({ image: 'busybox', runtime })
    await box.remove()
    expect(fake.boxes).toHaveLength(0)
  })

  it('is removed at the end of an `await using` block', async () => {
    {
      await using box = new SimpleBox({ image: 'busybox', runtime })
      await box.exec('true')
    }
    expect(fake.boxes[0]?.events).toEqual(['remove --force'])
  })

  it('refuses a runtime together with home or registries', () => {
    expect(() => new SimpleBox({ image: 'busybox', runtime, home: '/tmp/x' })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    )
  })

  it('uses the shared default runtime for its home and registries', async () => {
    const home = '/tmp/simple-box-default-runtime'
    await new SimpleBox({ image: 'busybox', home }).exec('true')
    await new SimpleBox({ image: 'busybox', home }).exec('true')
    const runtimes = FakeRuntime.instances.filter((r) => r.options?.home === home)
    expect(runtimes).toHaveLength(1)
    expect(runtimes[0]?.boxes).toHaveLength(2)
  })
})
