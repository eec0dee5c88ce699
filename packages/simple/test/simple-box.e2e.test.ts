import { Runtime } from '@boxlite/core'
import { afterAll, describe, expect, it } from 'vitest'
import { run, SimpleBox } from '../src/index'
import { REGISTRY, registries, tempHome } from '../../../test/fixtures'

const image = `${REGISTRY}/busybox:latest`
const home = await tempHome()
const runtime = new Runtime({ home, registries })

// One box for every case that leaves it usable: each boot costs ~1 s under emulation.
describe('SimpleBox', () => {
  const box = new SimpleBox({ image, runtime })
  afterAll(() => box.remove())

  it('runs a command and collects its output', async () => {
    expect(box.id).toBeUndefined()
    await expect(box.exec('echo', 'hi')).resolves.toEqual({
      exitCode: 0,
      stdout: 'hi\n',
      stderr: '',
      timedOut: false,
    })
    expect(box.id).toMatch(/.+/)
  })

  it('returns a non-zero exit as a result', async () => {
    await expect(box.exec('sh', '-c', 'echo oops >&2; exit 3')).resolves.toMatchObject({
      exitCode: 3,
      stdout: '',
      stderr: 'oops\n',
    })
  })

  it("uses the image's environment and working directory", async () => {
    const { stdout } = await box.exec('sh', '-c', 'echo $GREETING; pwd')
    expect(stdout).toBe('hello-from-image\n/home\n')
  })

  it('takes env, cwd, user and stdin', async () => {
    const result = await box.exec('sh', ['-c', 'cat; echo $A; pwd; id -u'], {
      env: { A: 'from-options' },
      cwd: '/tmp',
      user: 'nobody',
      stdin: 'from-stdin\n',
    })
    expect(result).toMatchObject({ exitCode: 0, stdout: 'from-stdin\nfrom-options\n/tmp\n65534\n' })
  })

  it('returns the result of a command that ignores its stdin', async () => {
    const result = await box.exec('true', [], { stdin: 'x'.repeat(4 << 20) })
    expect(result).toMatchObject({ exitCode: 0 })
  })

  it('rejects a command it cannot start', async () => {
    await expect(box.exec('no-such-command')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
  })

  it('kills a command that outlives its timeout', async () => {
    const result = await box.exec('sleep', ['30'], { timeoutMs: 500 })
    expect(result).toMatchObject({ exitCode: 137, timedOut: true })
  })

  it('kills an aborted command and rejects with ABORTED', async () => {
    const started = Date.now()
    const exec = box.exec('sleep', ['30'], { signal: AbortSignal.timeout(300) })
    await expect(exec).rejects.toMatchObject({ name: 'BoxliteError', code: 'ABORTED' })
    expect(Date.now() - started).toBeLessThan(10_000)
  })

  it('runs commands concurrently', async () => {
    const results = await Promise.all([1, 2, 3].map((n) => box.exec('sh', '-c', `sleep 0.$n; echo ${n}`)))
    expect(results.map((r) => r.stdout)).toEqual(['1\n', '2\n', '3\n'])
  })

  it('keeps its disk across stop and the boot that follows', async () => {
    await box.exec('sh', '-c', 'echo kept > /root/file')
    await box.stop()
    await box.stop()
    const stopped = await runtime.get(box.id!)
    await expect(stopped?.info()).resolves.toMatchObject({ status: 'stopped' })
    await expect(box.exec('cat', '/root/file')).resolves.toMatchObject({ stdout: 'kept\n' })
  })
})

describe('removal', () => {
  it('removes the box at the end of an `await using` block', async () => {
    let id: string | undefined
    {
      await using box = new SimpleBox({ image, runtime })
      await box.exec('true')
      id = box.id
    }
    expect(id).toBeDefined()
    await expect(runtime.get(id!)).resolves.toBeNull()
  })

  it('leaves a removed box unusable, and removing twice is fine', async () => {
    const box = new SimpleBox({ image, runtime })
    await box.start()
    await box.remove()
    await box.remove()
    await expect(runtime.get(box.id!)).resolves.toBeNull()
    await expect(box.exec('true')).rejects.toMatchObject({ code: 'INVALID_STATE' })
  })
})

describe('run', () => {
  it('runs one command in a throwaway box, with the default runtime for home and registries', async () => {
    const before = (await runtime.list()).length
    await expect(run({ image, home, registries }, 'echo', 'one', 'call')).resolves.toMatchObject({
      exitCode: 0,
      stdout: 'one call\n',
    })
    expect(await runtime.list()).toHaveLength(before)
  })

  it('fails with a BoxliteError for an image that does not exist, leaving no box', async () => {
    const before = (await runtime.list()).length
    await expect(run({ image: `${REGISTRY}/no-such-image:latest`, runtime }, 'true')).rejects.toMatchObject({
      name: 'BoxliteError',
      code: expect.stringMatching(/^(IMAGE|REGISTRY|NOT_FOUND)$/),
    })
    expect(await runtime.list()).toHaveLength(before)
  })
})
