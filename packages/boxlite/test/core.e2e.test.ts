// @boxlite/core against real boxes booted from the local test registry. One box serves every case
// that does not change its life cycle (boots are slow under software emulation).
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Box, BoxliteError, Runtime } from '@boxlite/core'
import { REGISTRY, registries, tempHome } from '../../../test/fixtures'
import { failure } from './helpers'

const busybox = `${REGISTRY}/busybox:latest`
let runtime: Runtime
let box: Box

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

beforeAll(async () => {
  runtime = new Runtime({ home: await tempHome(), registries })
  box = await runtime.create({ image: busybox, name: 'shared', env: { FROM_BOX: 'box-env' } })
  await box.start()
})

afterAll(async () => {
  await box?.remove({ force: true })
})

describe('exec on one box', () => {
  it('streams stdout as Buffers and reports the exit code', async () => {
    const ex = await box.exec('echo', ['hi'])
    const chunks: Buffer[] = []
    for await (const chunk of ex.stdout) chunks.push(chunk)
    expect(chunks.every((c) => Buffer.isBuffer(c))).toBe(true)
    expect(Buffer.concat(chunks).toString()).toBe('hi\n')
    expect(await ex.wait()).toEqual({ exitCode: 0, signal: null, timedOut: false })
  })

  it('keeps stderr apart and passes non-zero exits through as results', async () => {
    const ex = await box.exec('sh', ['-c', 'echo out; echo err >&2; exit 3'])
    const [out, err] = await Promise.all([ex.stdout.text(), ex.stderr.text()])
    expect({ out, err }).toEqual({ out: 'out\n', err: 'err\n' })
    expect((await ex.wait()).exitCode).toBe(3)
  })

  it('merges image, box and exec settings', async () => {
    const ex = await box.exec('sh', ['-c', 'echo $GREETING $FROM_BOX $FROM_EXEC; pwd; id -u'], {
      env: { FROM_EXEC: 'exec-env' },
      cwd: '/tmp',
      user: '1000',
    })
    expect(await ex.stdout.text()).toBe('hello-from-image box-env exec-env\n/tmp\n1000\n')
    expect((await ex.wait()).exitCode).toBe(0)
  })

  it('runs on a terminal with tty, and its output converts to a web stream', async () => {
    const ex = await box.exec('sh', ['-c', 'tty; echo to-stderr >&2'], { tty: true })
    const chunks: Uint8Array[] = []
    for await (const chunk of ReadableStream.from(ex.stdout)) chunks.push(chunk)
    expect(Buffer.concat(chunks).toString()).toMatch(/^\/dev\/pts\/\d+\r\nto-stderr\r\n$/)
    expect((await ex.wait()).exitCode).toBe(0)
  })

  it('resizes the terminal of a tty command, and refuses to resize one without', async () => {
    const ex = await box.exec('sh', ['-c', 'stty size; read line; stty size'], { tty: true })
    const chunks = ex.stdout[Symbol.asyncIterator]()
    let seen = ''
    while (!seen.includes('24 80')) {
      const next = await chunks.next()
      if (next.done) break
      seen += Buffer.from(next.value).toString()
    }
    expect(seen).toContain('24 80')
    await ex.resizeTty(50, 132)
    await ex.stdin.write('\n')
    for (let next = await chunks.next(); !next.done; next = await chunks.next()) seen += Buffer.from(next.value).toString()
    expect(seen).toMatch(/24 80[\s\S]*50 132/)
    expect((await ex.wait()).exitCode).toBe(0)
    await expect(ex.resizeTty(0, 80)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })

    const plain = await box.exec('cat')
    await expect(plain.resizeTty(30, 100)).rejects.toMatchObject({ code: 'INVALID_STATE', message: expect.stringContaining('no terminal') })
    await plain.stdin.close()
    expect((await plain.wait()).exitCode).toBe(0)
  })

  it('feeds stdin and ends it on close', async () => {
    const ex = await box.exec('cat')
    await ex.stdin.write('first line\n')
    await ex.stdin.write(new Uint8Array([0x62, 0x79, 0x74, 0x65, 0x73, 0x0a]))
    await ex.stdin.close()
    expect(await ex.stdout.text()).toBe('first line\nbytes\n')
    expect((await ex.wait()).exitCode).toBe(0)
  })

  it('delivers output while the command still runs', async () => {
    const ex = await box.exec('sh', ['-c', 'echo early; sleep 2; echo late'])
    const started = Date.now()
    const seen: { text: string; at: number }[] = []
    for await (const chunk of ex.stdout) seen.push({ text: chunk.toString(), at: Date.now() - started })
    expect(seen.map((s) => s.text).join('')).toBe('early\nlate\n')
    expect(seen[0]?.text).toBe('early\n')
    expect(seen.at(-1)!.at - seen[0]!.at).toBeGreaterThan(1500)
    await ex.wait()
  })

  it('reads 20 MB of output in full, in chunks of at most 1 MiB', async () => {
    const ex = await box.exec('head', ['-c', '20000000', '/dev/zero'])
    let bytes = 0
    let largest = 0
    for await (const chunk of ex.stdout) {
      bytes += chunk.length
      largest = Math.max(largest, chunk.length)
    }
    expect(bytes).toBe(20_000_000)
    expect(largest).toBeLessThanOrEqual(1 << 20)
    expect((await ex.wait()).exitCode).toBe(0)
  })

  it('holds a command back while its output is not read (backpressure)', async () => {
    const ex = await box.exec('sh', ['-c', 'head -c 16000000 /dev/zero; echo finished >&2'])
    const stderr = ex.stderr.text()
    const early = await Promise.race([stderr.then(() => 'finished'), new Promise((r) => setTimeout(() => r('blocked'), 1500))])
    expect(early).toBe('blocked')
    expect((await ex.stdout.bytes()).length).toBe(16_000_000)
    expect(await stderr).toBe('finished\n')
    expect((await ex.wait()).exitCode).toBe(0)
  })

  it('discards unread output on wait so a chatty command cannot stall', async () => {
    const ex = await box.exec('head', ['-c', '5000000', '/dev/zero'])
    expect((await ex.wait()).exitCode).toBe(0)
    const err = await failure(ex.stdout.text())
    expect(err.code).toBe('INVALID_STATE')
    expect(err.message).toMatch(/discarded because wait\(\) was called before reading it/)
  })

  it('kills on timeoutMs, kill() and an aborted signal', async () => {
    const timed = await box.exec('sleep', ['30'], { timeoutMs: 300 })
    expect(await timed.wait()).toEqual({ exitCode: 137, signal: 9, timedOut: true })

    const killed = await box.exec('sleep', ['30'])
    await killed.kill()
    expect(await killed.wait()).toMatchObject({ exitCode: 137, signal: 9, timedOut: false })

    const controller = new AbortController()
    const aborted = await box.exec('sleep', ['30'], { signal: controller.signal })
    controller.abort()
    expect((await failure(aborted.wait())).code).toBe('ABORTED')

    expect((await failure(box.exec('true', [], { signal: AbortSignal.abort() }))).code).toBe('ABORTED')
  })

  it('rejects a command that cannot start with a clear error', async () => {
    const err = await failure(box.exec('no-such-program'))
    expect(err.code).toBe('INVALID_ARGUMENT')
    expect(err.message).toMatch(/no-such-program/)
  })
})

describe('runtime and box life cycle', () => {
  it('lists, gets and reports status', async () => {
    const info = await box.info()
    expect(info).toMatchObject({ id: box.id, name: 'shared', image: busybox, status: 'running', cpus: 1, memoryMib: 512 })
    expect(info.pid).toBeGreaterThan(0)
    expect(info.createdAt).toBeInstanceOf(Date)
    expect((await runtime.list()).map((b) => b.id)).toContain(box.id)
    expect((await runtime.get('shared'))?.id).toBe(box.id)
    expect(await runtime.get('nobody')).toBeNull()
    const images = await runtime.images.list()
    expect(images.map((i) => i.reference)).toContain(busybox)
  })

  it('keeps the disk across stop and start; removal ends the VM and deletes the disk', async () => {
    const b = await runtime.create({ image: busybox })
    expect((await b.info()).status).toBe('created')
    await (await b.exec('sh', ['-c', 'echo kept > /root/note'])).wait()
    const { pid } = await b.info()
    await b.stop()
    expect((await b.info()).status).toBe('stopped')
    expect(pidAlive(pid!)).toBe(false)
    const again = await b.exec('cat', ['/root/note'])
    expect(await again.stdout.text()).toBe('kept\n')
    await again.wait()

    expect((await failure(b.remove())).code).toBe('INVALID_STATE')
    const running = (await b.info()).pid!
    await b.remove({ force: true })
    expect(pidAlive(running)).toBe(false)
    expect(existsSync(join(runtime.home, 'boxes', b.id))).toBe(false)
    expect(await runtime.get(b.id)).toBeNull()
    expect((await failure(b.exec('true'))).code).toBe('NOT_FOUND')
  })
})

describe('memory snapshots', () => {
  const keeper =
    "echo unsynced > /root/note; setsid sh -c 'v=kept-$$; while :; do if [ -e /tmp/ask ]; then rm /tmp/ask; echo $v > /tmp/answer; fi; sleep 0.05; done' </dev/null >/dev/null 2>&1 &"
  const ask =
    'rm -f /tmp/answer; touch /tmp/ask; i=0; while [ ! -s /tmp/answer ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; cat /tmp/answer'
  const sh = async (b: Box, script: string): Promise<string> => {
    const ex = await b.exec('sh', ['-c', script])
    const out = await ex.stdout.text()
    await ex.wait()
    return out.trim()
  }

  it('snapshots, restores, forks and suspends a box with a process holding state in memory', async () => {
    const src = await runtime.create({ image: busybox })
    const made: Box[] = [src]
    try {
      await sh(src, keeper)
      const value = await sh(src, ask)
      expect(value).toMatch(/^kept-/)
      const info = await src.snapshot('core-snap')
      expect(info).toMatchObject({ name: 'core-snap', boxId: src.id })
      expect(info.memoryBytes).toBeGreaterThan(1 << 20)
      expect((await failure(src.snapshot('core-snap'))).code).toBe('ALREADY_EXISTS')
      expect((await runtime.listSnapshots()).map((s) => s.name)).toContain('core-snap')

      const restored = await runtime.restore('core-snap', { name: 'core-restored' })
      made.push(restored)
      expect((await restored.info()).status).toBe('running')
      expect(await sh(restored, ask)).toBe(value)
      expect(await sh(restored, 'cat /root/note')).toBe('unsynced')
      expect(await sh(restored, 'hostname')).toBe('core-restored')

      const forks = await src.fork(2)
      made.push(...forks)
      const random = await Promise.all(forks.map((f) => sh(f, 'head -c 16 /dev/urandom | od -An -tx1')))
      const bootIds = await Promise.all(forks.map((f) => sh(f, 'cat /proc/sys/kernel/random/boot_id')))
      expect(random[0]).not.toBe(random[1])
      expect(bootIds[0]).not.toBe(bootIds[1])

      await src.suspend()
      expect((await src.info()).status).toBe('suspended')
      await src.resume()
      expect((await src.info()).status).toBe('running')
      expect(await sh(src, ask)).toBe(value)

      await runtime.removeSnapshot('core-snap')
      expect((await failure(runtime.restore('core-snap'))).code).toBe('NOT_FOUND')
    } finally {
      for (const b of made) await b.remove({ force: true })
    }
  })
})

describe('warm start', () => {
  // A home of its own, so that the first warmup builds. Boots three VMs: the template's guest and
  // two boxes started from it (1 cpu, 256 MiB, no network).
  let warm: Runtime
  beforeAll(async () => {
    warm = new Runtime({ home: await tempHome(), registries, warmStart: true })
  })
  const shape = { cpus: 1, memoryMib: 256 }
  // boot_id, 16 bytes of urandom, the guest's clock, the root filesystem's size in KiB, hostname
  const identity =
    "cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s; df -k / | awk 'NR==2 {print $2}'; hostname"
  const vmCmdline = (pid: number | null) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')

  it('builds a template once, and boxes of its shape start from it with their own identity, clock, disk and hostname', async () => {
    const first = await warm.warmup({ ...shape, network: false })
    expect(first).toMatchObject({ ...shape, network: false, built: true })
    expect(first.path.startsWith(join(warm.home, 'templates') + '/')).toBe(true)
    expect(existsSync(first.path)).toBe(true)
    expect(first.buildMs).toBeGreaterThan(0)
    expect(first.diskBytes).toBeGreaterThan(0)
    const again = await warm.warmup({ ...shape, network: false })
    expect(again).toEqual({ ...first, built: false, diskBytes: again.diskBytes })
    // A box's network option names the same template.
    expect(await warm.warmup({ ...shape, network: 'none' })).toMatchObject({ path: first.path, built: false })

    const boxes: Box[] = []
    try {
      const seen: string[][] = []
      for (const name of ['warm-a', undefined]) {
        const b = await warm.create({ image: busybox, name, ...shape, network: 'none' })
        boxes.push(b)
        await b.start()
        expect(vmCmdline((await b.info()).pid)).toContain(`mem-path=${first.path}/ram,`)
        const before = Date.now() / 1000
        const ex = await b.exec('sh', ['-c', identity])
        const lines = (await ex.stdout.text()).trim().split('\n')
        const after = Date.now() / 1000
        expect((await ex.wait()).exitCode).toBe(0)
        expect(lines).toHaveLength(5)
        const [bootId, random, clock, rootKib, hostname] = lines as [string, string, string, string, string]
        expect(bootId).toMatch(/^[0-9a-f-]{36}$/)
        expect(random).toMatch(/^[0-9a-f]{32}$/)
        expect(Number(clock)).toBeGreaterThanOrEqual(Math.floor(before) - 2)
        expect(Number(clock)).toBeLessThanOrEqual(after + 2)
        expect(Number(rootKib)).toBeGreaterThan(0)
        // As a cold boot names it: the box's name, else its id.
        expect(hostname).toBe(name ?? b.id)
        seen.push(lines)
      }
      expect(seen[0]![0]).not.toBe(seen[1]![0])
      expect(seen[0]![1]).not.toBe(seen[1]![1])
    } finally {
      for (const b of boxes) await b.remove({ force: true })
    }
  })

  it('refuses a shape out of range and options that are not a shape', async () => {
    const zero = await failure(warm.warmup({ cpus: 0 }))
    expect(zero.code).toBe('INVALID_ARGUMENT')
    expect(zero.message).toMatch(/cpus 0 is out of range/)
    expect((await failure(warm.warmup({ memoryMib: 64 }))).message).toMatch(/64 is out of range/)
    expect((await failure(warm.warmup({ cpus: 1.5 }))).code).toBe('INVALID_ARGUMENT')
    expect((await failure(warm.warmup({ network: 'sometimes' as 'none' }))).code).toBe('INVALID_ARGUMENT')
    const notFlag = () => new Runtime({ home: warm.home, warmStart: 'yes' as unknown as boolean })
    expect(notFlag).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/warmStart/) }))
  })
})

describe('bad input', () => {
  it('names a missing image and leaves no box behind', async () => {
    const err = await failure(runtime.create({ image: `${REGISTRY}/no-such-image:v1` }))
    expect(err.code).toBe('IMAGE')
    expect(err.message).toContain('no-such-image')
    expect((await runtime.list()).map((b) => b.id)).toEqual([box.id])
  })

  it('rejects out-of-range options before doing anything', async () => {
    const err = await failure(runtime.create({ image: busybox, memoryMib: 64 }))
    expect(err.code).toBe('INVALID_ARGUMENT')
    expect(err.message).toMatch(/64.*128 to 65536/)
    expect((await failure(runtime.create({ image: busybox, cpus: 1.5 }))).code).toBe('INVALID_ARGUMENT')
    expect((await failure(runtime.create({ image: busybox, name: 'shared' }))).code).toBe('ALREADY_EXISTS')
    expect(() => new Runtime({ accel: 'warp' as 'auto' })).toThrow(BoxliteError)
    const missingHost = () => new Runtime({ registries: [{ insecure: true } as unknown as { host: string }] })
    expect(missingHost).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/host/) }))
  })

  it('aborts a pull, keeping no partial image', async () => {
    const home = await tempHome()
    const fresh = new Runtime({ home, registries })
    const controller = new AbortController()
    const events: string[] = []
    const pull = fresh.images.pull(`${REGISTRY}/python:slim`, {
      signal: controller.signal,
      onProgress: (event) => {
        events.push(event.type)
        if (event.type === 'resolved') controller.abort()
      },
    })
    const err = await failure(pull)
    expect(err.code).toBe('ABORTED')
    expect(events[0]).toBe('resolved')
    expect(await fresh.images.list()).toEqual([])
    expect(readdirSync(join(home, 'images', 'tmp'))).toEqual([])
    expect(readdirSync(join(home, 'images', 'disks'))).toEqual([])
  })

  it('reports pull progress in order', async () => {
    const events: string[] = []
    const image = await runtime.images.pull(busybox, { onProgress: (e) => events.push(e.type) })
    expect(events[0]).toBe('resolved')
    expect(events.at(-1)).toBe('disk')
    expect(events).toContain('layer')
    expect(image).toMatchObject({ reference: busybox, layers: 1 })
    expect(image.digest).toMatch(/^sha256:[0-9a-f]{64}$/)
  })
})
