import { readFileSync } from 'node:fs'
import { connect, createServer, type Socket } from 'node:net'
import { Runtime } from '@boxlite/core'
import { afterAll, describe, expect, it } from 'vitest'
import { run, SimpleBox } from '../src/index'
import { REGISTRY, registries, tempHome } from '../../../test/fixtures'

const image = `${REGISTRY}/busybox:latest`
const home = await tempHome()
const runtime = new Runtime({ home, registries })
/** The ids of the boxes in `home`, oldest first. */
const ids = async () => (await runtime.list()).map((b) => b.id)

// One box for every case that leaves it usable: each boot costs ~1 s under emulation.
describe('SimpleBox', () => {
  const box = new SimpleBox({ image, runtime, name: 'shared' })
  afterAll(() => box.remove())

  it('creates its box on first use, once, even for concurrent calls', async () => {
    expect(box.id).toBeUndefined()
    const before = await ids()
    await Promise.all([box.exec('true'), box.exec('true'), box.start()])
    const boxes = await runtime.list()
    expect(boxes).toHaveLength(before.length + 1)
    expect(boxes.at(-1)).toMatchObject({ id: box.id, name: 'shared', image, status: 'running' })
  })

  it('runs a command and collects its output', async () => {
    await expect(box.exec('echo', 'hi')).resolves.toEqual({
      exitCode: 0,
      stdout: 'hi\n',
      stderr: '',
      timedOut: false,
    })
  })

  it('passes arguments as they are, and closes stdin when given none', async () => {
    await expect(box.exec('printf', '[%s]', 'a b', '')).resolves.toMatchObject({ stdout: '[a b][]' })
    // Were stdin left open, cat would wait for it until the timeout.
    await expect(box.exec('cat', [], { timeoutMs: 10_000 })).resolves.toMatchObject({
      exitCode: 0,
      stdout: '',
      timedOut: false,
    })
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

  it('takes the environment as a trailing object, or after the argument array with timeoutSecs', async () => {
    await expect(box.exec('sh', '-c', 'echo $FOO', { FOO: 'trailing' })).resolves.toMatchObject({ stdout: 'trailing\n' })
    await expect(box.exec('sh', ['-c', 'echo $FOO'], { FOO: 'after-array' })).resolves.toMatchObject({
      stdout: 'after-array\n',
    })
    const timed = await box.exec('sh', ['-c', 'echo $FOO; sleep 30'], { FOO: 'timed' }, { timeoutSecs: 0.5 })
    expect(timed).toMatchObject({ stdout: 'timed\n', exitCode: 137, timedOut: true })
  })

  it('reports its id, name, info and metrics', async () => {
    expect(box).toMatchObject({ id: expect.any(String), name: 'shared', created: true })
    await expect(box.getId()).resolves.toBe(box.id)
    const info = await box.info()
    expect(info).toMatchObject({ id: box.id, name: 'shared', status: 'running', detach: false, startedAt: expect.any(Date) })
    const metrics = await box.metrics()
    expect(metrics.memoryBytes).toBeGreaterThan(0)
    expect(metrics.bootDurationMs).toBeGreaterThan(0)
    expect(metrics.commandsExecuted).toBeGreaterThan(0)
  })

  it('is reused by a second SimpleBox with reuseExisting and the same name', async () => {
    const again = new SimpleBox({ image, runtime, name: 'shared', reuseExisting: true })
    expect(again.created).toBeUndefined()
    await expect(again.exec('echo', 'same box')).resolves.toMatchObject({ stdout: 'same box\n' })
    expect({ id: again.id, created: again.created }).toEqual({ id: box.id, created: false })
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

  it('pauses and resumes: a command under way goes on, new ones are refused while paused', async () => {
    const core = (await runtime.get(box.id!))!
    const counter = await core.exec('sh', ['-c', 'for i in 1 2 3 4 5 6; do echo $i; sleep 0.1; done'])
    const output = counter.stdout.text()
    await box.pause()
    expect((await box.info()).status).toBe('paused')
    await expect(box.exec('true')).rejects.toMatchObject({ code: 'INVALID_STATE', message: expect.stringMatching(/paused.*resume/) })
    await box.pause() // pausing a paused box does nothing
    await box.resume()
    expect((await box.info()).status).toBe('running')
    await expect(output).resolves.toBe('1\n2\n3\n4\n5\n6\n')
    await expect(counter.wait()).resolves.toMatchObject({ exitCode: 0 })
    await expect(box.exec('echo', 'after')).resolves.toMatchObject({ stdout: 'after\n' })
  })

  it('snapshots into a restored SimpleBox, forks and suspends', async () => {
    await box.exec('sh', '-c', 'echo in-memory > /tmp/state')
    await box.snapshot('simple-snap')
    const restored = await SimpleBox.restore('simple-snap', { runtime })
    const [fork] = await box.fork(1)
    try {
      await expect(restored.exec('cat', '/tmp/state')).resolves.toMatchObject({ stdout: 'in-memory\n' })
      await expect(fork!.exec('cat', '/tmp/state')).resolves.toMatchObject({ stdout: 'in-memory\n' })
      await box.suspend()
      expect((await box.info()).status).toBe('suspended')
      await box.resume()
      await expect(box.exec('cat', '/tmp/state')).resolves.toMatchObject({ stdout: 'in-memory\n' })
    } finally {
      await restored.remove()
      await fork!.remove()
      await runtime.removeSnapshot('simple-snap')
    }
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

describe('SimpleBox.warmup', () => {
  it('builds the template that a SimpleBox of its shape then starts from', async () => {
    // Warm start on, whatever BOXLITE_WARM_START says (the shared runtime follows it).
    const warm = new Runtime({ home, registries, warmStart: true })
    const shape = { cpus: 1, memoryMib: 256 }
    const template = await SimpleBox.warmup({ runtime: warm, ...shape, network: false })
    expect(template).toMatchObject({ ...shape, network: false, built: true })
    // The default runtime of the same home finds it.
    await expect(SimpleBox.warmup({ home, registries, ...shape, network: 'none' })).resolves.toMatchObject({ path: template.path, built: false })
    await using small = new SimpleBox({ image, runtime: warm, ...shape, network: 'none' })
    await expect(small.exec('echo', 'hi')).resolves.toMatchObject({ exitCode: 0, stdout: 'hi\n' })
    const { pid } = await small.info()
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain(`mem-path=${template.path}/ram,`)
  })
})

describe('reuseExisting', () => {
  it('creates the box the first time (created: true) and reuses it the next (created: false)', async () => {
    const first = new SimpleBox({ image, runtime, name: 'reused', reuseExisting: true, autoRemove: true })
    const info = await first.info()
    expect(first.created).toBe(true)
    expect(info).toMatchObject({ name: 'reused', status: 'created', autoRemove: true })
    const second = new SimpleBox({ image, runtime, name: 'reused', reuseExisting: true })
    await expect(second.getInfo()).resolves.toMatchObject({ id: first.id })
    expect(second.created).toBe(false)
    await second.remove()
    expect(await runtime.getInfo('reused')).toBeNull()
  })

  it('needs a name', () => {
    expect(() => new SimpleBox({ image, runtime, reuseExisting: true })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    )
  })
})

describe('before first use', () => {
  it('refuses a runtime together with home or registries', () => {
    for (const extra of [{ home }, { registries }]) {
      expect(() => new SimpleBox({ image, runtime, ...extra })).toThrow(
        expect.objectContaining({ name: 'BoxliteError', code: 'INVALID_ARGUMENT' }),
      )
    }
  })

  it('stops nothing and creates nothing', async () => {
    const before = await ids()
    const box = new SimpleBox({ image, runtime })
    await box.stop()
    expect(box.id).toBeUndefined()
    expect(await ids()).toEqual(before)
  })

  it('creates nothing when removed, and refuses use after', async () => {
    const before = await ids()
    const box = new SimpleBox({ image, runtime })
    await box.remove()
    await expect(box.exec('true')).rejects.toMatchObject({ code: 'INVALID_STATE' })
    await expect(box.start()).rejects.toMatchObject({ code: 'INVALID_STATE' })
    expect(box.id).toBeUndefined()
    expect(await ids()).toEqual(before)
  })
})

/** A registry in front of the test registry that drops every connection until it is opened. */
async function lateRegistry() {
  let open = false
  const sockets = new Set<Socket>()
  const [registryHost, registryPort] = REGISTRY.split(':') as [string, string]
  const proxy = createServer((client) => {
    if (!open) return void client.destroy()
    const upstream = connect(Number(registryPort), registryHost)
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('error', () => undefined).on('close', () => [client, upstream].forEach((s) => s.destroy()))
    }
    client.pipe(upstream).pipe(client)
  })
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  afterAll(() => {
    proxy.close()
    sockets.forEach((s) => s.destroy())
  })
  return {
    host: `127.0.0.1:${(proxy.address() as { port: number }).port}`,
    open: () => void (open = true),
  }
}

describe('creation and removal', () => {
  // One box (one boot) for three behaviours; it is made by the default runtime of `home` and the
  // late registry, so it shows up in `runtime`.
  it('tries again after a failed creation that left no box; `await using` removes the box at its end', async () => {
    const registry = await lateRegistry()
    const before = await ids()
    let id: string | undefined
    {
      await using box = new SimpleBox({
        image: `${registry.host}/busybox:latest`,
        home,
        registries: [{ host: registry.host, insecure: true }],
      })
      await expect(box.exec('true')).rejects.toMatchObject({ name: 'BoxliteError', code: 'REGISTRY' })
      expect(box.id).toBeUndefined()
      expect(await ids()).toEqual(before)

      registry.open()
      await expect(box.exec('echo', 'retried')).resolves.toMatchObject({ stdout: 'retried\n' })
      id = box.id
      expect(await ids()).toEqual([...before, id])
    }
    expect(id).toBeDefined()
    expect(await ids()).toEqual(before)
  })

  it('removes a box whose creation is in flight, once however often asked, and is unusable after', async () => {
    const before = await ids()
    const box = new SimpleBox({ image, runtime })
    // Whether the boot gets in before the removal is a race (if not, it fails): either way the box
    // must be gone.
    const start = box.start().catch(() => undefined)
    await Promise.all([box.remove(), box.remove()])
    await box.remove()
    await start
    expect(box.id).toBeDefined()
    expect(await ids()).toEqual(before)
    await expect(box.exec('true')).rejects.toMatchObject({ code: 'INVALID_STATE' })
    expect(await ids()).toEqual(before)
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

  it('removes its box also when the command cannot start', async () => {
    const before = await ids()
    await expect(run({ image, runtime }, 'no-such-command')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
    expect(await ids()).toEqual(before)
  })
})
