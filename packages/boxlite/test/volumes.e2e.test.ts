// Volumes and disk size through @boxlite/core on one real box: an rw volume seen live both ways, an
// ro one refused, a guest symlink that stays a plain file on the host, df of the asked size, the
// options in info(); bad shapes refused in TS and bad values by the runtime, before any box exists.
import { lstat, mkdir, mkdtemp, readFile, realpath, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, expect, it } from 'vitest'
import { Runtime, type Box, type VolumeOptions } from '@boxlite/core'
import { REGISTRY, registries, tempHome } from '../../../test/fixtures'
import { failure } from './helpers'

const busybox = `${REGISTRY}/busybox:latest`
const runtime = new Runtime({ home: await tempHome(), registries })
const shared = await mkdtemp(join(tmpdir(), 'boxlite-vol-'))
const [rw, ro] = [join(shared, 'rw'), join(shared, 'ro')]
await mkdir(rw)
await mkdir(ro)
await writeFile(join(ro, 'given.txt'), 'given')
let box: Box | undefined

afterAll(async () => {
  if (box) await runtime.remove(box.id, { force: true })
  await rm(shared, { recursive: true, force: true })
})

async function sh(script: string): Promise<{ exitCode: number; stdout: string }> {
  const ex = await box!.exec('sh', ['-c', script])
  const [stdout] = await Promise.all([ex.stdout.text(), ex.stderr.text()])
  return { exitCode: (await ex.wait()).exitCode, stdout }
}

it('shares host directories live, read-only enforced, and sizes the disk', async () => {
  box = await runtime.create({
    image: busybox,
    volumes: [{ hostPath: rw, guestPath: '/mnt/rw' }, { hostPath: ro, guestPath: '/mnt/ro', readOnly: true }],
    diskSizeGb: 4,
  })
  const info = await box.info()
  expect(info.volumes).toEqual([
    { hostPath: await realpath(rw), guestPath: '/mnt/rw', readOnly: false },
    { hostPath: await realpath(ro), guestPath: '/mnt/ro', readOnly: true },
  ])
  expect(info.diskSizeGb).toBe(4)

  await writeFile(join(rw, 'from-host.txt'), 'host wrote this')
  expect((await sh('cat /mnt/rw/from-host.txt')).stdout).toBe('host wrote this')
  expect((await sh('echo guest > /mnt/rw/from-guest.txt && ln -s /etc/passwd /mnt/rw/link')).exitCode).toBe(0)
  expect(await readFile(join(rw, 'from-guest.txt'), 'utf8')).toBe('guest\n')
  expect((await lstat(join(rw, 'link'))).isSymbolicLink()).toBe(false)

  expect((await sh('cat /mnt/ro/given.txt')).stdout).toBe('given')
  expect((await sh('echo x > /mnt/ro/new.txt')).exitCode).not.toBe(0)
  await expect(lstat(join(ro, 'new.txt'))).rejects.toThrow(/ENOENT/)

  const df = (await sh('df -k / | tail -1')).stdout.trim().split(/\s+/)
  expect(Number(df[1])).toBeGreaterThan(3_700_000)
  expect(Number(df[1])).toBeLessThan(4_200_000)
})

it('refuses bad volumes and disk sizes with INVALID_ARGUMENT naming the value', async () => {
  const before = (await runtime.list()).length
  const cases: [Partial<{ volumes: VolumeOptions[]; diskSizeGb: number }>, RegExp][] = [
    [{ volumes: [{ hostPath: 'relative', guestPath: '/mnt' }] }, /volumes\[0\].*hostPath must be an absolute path/],
    [{ volumes: [{ hostPath: shared, guestPath: 'mnt' }] }, /guestPath must be an absolute path/],
    [{ volumes: [{ hostPath: shared, guestPath: '/mnt', readOnly: 'yes' as unknown as boolean }] }, /readOnly must be a boolean/],
    [{ volumes: [1, 2, 3, 4].map((i) => ({ hostPath: shared, guestPath: `/v${i}` })) }, /at most 3/],
    [{ volumes: [{ hostPath: join(shared, 'missing'), guestPath: '/mnt' }] }, /missing' does not exist/],
    [{ volumes: [{ hostPath: shared, guestPath: '/proc' }] }, /over the box's \/proc/],
    [{ diskSizeGb: 2000 }, /diskSizeGb 2000|disk_size_gb 2000 is out of range/],
    [{ diskSizeGb: 1.5 }, /diskSizeGb must be a whole number/],
    [{ diskSizeGb: 1 }, /smaller than the disk of image/],
  ]
  for (const [options, message] of cases) {
    const error = await failure(runtime.create({ image: busybox, ...options }))
    expect(error.code).toBe('INVALID_ARGUMENT')
    expect(error.message).toMatch(message)
  }
  expect((await runtime.list()).length).toBe(before)
})
