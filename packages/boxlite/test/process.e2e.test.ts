// A box outlives the process that made it and is shared by every process on its home. Child
// processes run the built package (`pnpm build` first), as a separate program would.
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Runtime, type Box } from '@boxlite/core'
import { REGISTRY, registries, tempHome } from '../../../test/fixtures'

const busybox = `${REGISTRY}/busybox:latest`
const packageDir = fileURLToPath(new URL('..', import.meta.url))
let home: string
let runtime: Runtime
let detached: Box

/** Runs an ES module body in a child Node process with `rt` open on `home`; resolves with its stdout. */
async function inChild(body: string): Promise<string> {
  const script = `
    const { Runtime } = await import('@boxlite/core')
    const rt = new Runtime({ home: ${JSON.stringify(home)}, registries: ${JSON.stringify(registries)} })
    ${body}`
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
    cwd: packageDir,
    timeout: 120_000,
  })
  return stdout
}

beforeAll(async () => {
  home = await tempHome()
  runtime = new Runtime({ home, registries })
})

afterAll(async () => {
  await runtime.remove('detached', true).catch(() => undefined)
})

describe('a detached box', () => {
  it('outlives the child process that created and started it; this process gets it by name and execs', async () => {
    const childId = await inChild(`
      const box = await rt.create({ image: ${JSON.stringify(busybox)}, name: 'detached', detach: true })
      await box.start()
      console.log(box.id)`)
    const found = await runtime.get('detached')
    expect(found).not.toBeNull()
    detached = found!
    expect(detached.id).toBe(childId.trim())
    const info = await detached.info()
    expect(info).toMatchObject({ name: 'detached', status: 'running', detach: true, autoRemove: false, reason: null })
    expect(info.pid).toBeGreaterThan(0)
    expect(info.startedAt).toBeInstanceOf(Date)
    expect(info.startedAt!.getTime()).toBeGreaterThanOrEqual(info.createdAt.getTime())

    const ex = await detached.exec('sh', ['-c', 'echo from-parent'])
    expect(await ex.stdout.text()).toBe('from-parent\n')
    expect((await ex.wait()).exitCode).toBe(0)
  })

  it('takes commands from two processes at the same time', async () => {
    // Each command waits for the other's marker file, so they pass only if both run at once.
    const both = (me: string, other: string) => `touch /tmp/${me}; for i in $(seq 100); do [ -e /tmp/${other} ] && echo ${me}-saw-${other} && exit 0; sleep 0.1; done; exit 1`
    const child = inChild(`
      const box = await rt.get('detached')
      const ex = await box.exec('sh', ['-c', ${JSON.stringify(both('child', 'parent'))}])
      const [out, exit] = await Promise.all([ex.stdout.text(), ex.wait()])
      console.log(JSON.stringify({ out, exitCode: exit.exitCode }))`)
    const mine = await detached.exec('sh', ['-c', both('parent', 'child')])
    const [out, exit] = await Promise.all([mine.stdout.text(), mine.wait()])
    expect({ out, exitCode: exit.exitCode }).toEqual({ out: 'parent-saw-child\n', exitCode: 0 })
    expect(JSON.parse(await child)).toEqual({ out: 'child-saw-parent\n', exitCode: 0 })
  })

  it('reports metrics counted across processes, and runtime counters of this process', async () => {
    const m = await detached.metrics()
    expect(m.memoryBytes).toBeGreaterThan(0)
    expect(m.bootDurationMs).toBeGreaterThan(0)
    expect(m.cpuPercent).toBeGreaterThanOrEqual(0)
    // 1 + 1 here, 1 from the child; none failed to start.
    expect(m.commandsExecuted).toBeGreaterThanOrEqual(3)
    expect(m.execErrors).toBe(0)
    for (const value of Object.values(m)) expect(typeof value).toBe('number')

    await expect(detached.exec('no-such-command')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
    expect((await detached.metrics()).execErrors).toBe(1)
    const rm = await runtime.metrics()
    expect(rm).toMatchObject({ boxesCreatedTotal: 0, boxesFailedTotal: 0, numRunningBoxes: 1, totalExecErrors: 1 })
    // The runtime counts a command that could not start among those executed too.
    expect(rm.totalCommandsExecuted).toBe(3)
  })

  it('is stopped cleanly from a process that did not start it, and keeps its disk', async () => {
    await detached.exec('sh', ['-c', 'echo kept > /root/file']).then((ex) => ex.wait())
    await detached.stop()
    const info = await detached.info()
    expect(info).toMatchObject({ status: 'stopped', pid: null })
    expect(await detached.metrics()).toEqual({
      cpuPercent: 0,
      memoryBytes: 0,
      commandsExecuted: 0,
      execErrors: 0,
      bootDurationMs: 0,
      networkBytesSent: 0,
      networkBytesReceived: 0,
      networkTcpConnections: 0,
    })
    const ex = await detached.exec('cat', ['/root/file'])
    expect(await ex.stdout.text()).toBe('kept\n')
    await detached.stop()
  })
})

describe('life cycle from this process', () => {
  it('goes created → running → stopped (kill), and is found by getInfo, listInfo and removed with remove(id, true)', async () => {
    const box = await runtime.create({ image: busybox, name: 'cycle' })
    const created = await box.info()
    expect(created).toMatchObject({ status: 'created', pid: null, startedAt: null, detach: false, reason: null })

    await box.start()
    const running = await runtime.getInfo('cycle')
    expect(running).toMatchObject({ id: box.id, status: 'running', startedAt: expect.any(Date) })
    expect((await runtime.metrics()).numRunningBoxes).toBe(1)

    await box.kill()
    expect(await box.info()).toMatchObject({ status: expect.stringMatching(/^(stopped|failed)$/), pid: null })
    expect((await runtime.metrics()).boxesCreatedTotal).toBe(1)

    expect((await runtime.listInfo()).map((b) => b.name)).toEqual(['detached', 'cycle'])
    await box.start()
    await expect(runtime.remove('cycle', false)).rejects.toMatchObject({ code: 'INVALID_STATE' })
    await runtime.remove('cycle', true)
    expect(await runtime.getInfo('cycle')).toBeNull()
    expect(await runtime.getInfo('no-such-box')).toBeNull()
  })

  it('rejects a reader of the output, as wait() does, when the VM is killed', async () => {
    const box = await runtime.create({ image: busybox })
    const ex = await box.exec('sh', ['-c', 'while true; do echo tick; sleep 0.05; done'])
    const chunks = ex.stdout[Symbol.asyncIterator]()
    expect((await chunks.next()).done).toBe(false)
    process.kill((await box.info()).pid!, 'SIGKILL')
    const drain = async () => {
      while (!(await chunks.next()).done) {
        // keep reading until the stream ends or rejects
      }
    }
    await expect(drain()).rejects.toThrow(/killed by signal 9/)
    await expect(ex.wait()).rejects.toThrow(/killed by signal 9/)
    expect(await box.info()).toMatchObject({ status: 'failed' })
    await runtime.remove(box.id, true)
  })
})
