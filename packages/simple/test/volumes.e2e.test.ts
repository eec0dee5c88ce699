// SimpleBox passes volumes and diskSizeGb through: a host directory read and written by the box,
// a read-only one refused, the disk size seen by df and in info().
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, expect, it } from 'vitest'
import { SimpleBox } from '../src/index'
import { REGISTRY, registries, tempHome } from '../../../test/fixtures'

const shared = await mkdtemp(join(tmpdir(), 'boxlite-svol-'))
await mkdir(join(shared, 'in'))
await mkdir(join(shared, 'out'))
await writeFile(join(shared, 'in', 'data.txt'), 'input data')
const box = new SimpleBox({
  image: `${REGISTRY}/busybox:latest`,
  home: await tempHome(),
  registries,
  volumes: [{ hostPath: join(shared, 'in'), guestPath: '/in', readOnly: true }, { hostPath: join(shared, 'out'), guestPath: '/out' }],
  diskSizeGb: 3,
})
afterAll(async () => {
  await box.remove()
  await rm(shared, { recursive: true, force: true })
})

it('reads an ro volume, writes an rw one and has the disk size asked for', async () => {
  const r = await box.exec('sh', '-c', 'tr a-z A-Z < /in/data.txt > /out/result.txt; echo x > /in/new 2>/dev/null || echo refused; df -k / | tail -1')
  expect(r.exitCode).toBe(0)
  const [refused, df] = r.stdout.trim().split('\n')
  expect(refused).toBe('refused')
  expect(Number(df!.trim().split(/\s+/)[1])).toBeGreaterThan(2_700_000)
  expect(await readFile(join(shared, 'out', 'result.txt'), 'utf8')).toBe('INPUT DATA')
  const info = await box.info()
  expect(info.diskSizeGb).toBe(3)
  expect(info.volumes.map((v) => [v.guestPath, v.readOnly])).toEqual([['/in', true], ['/out', false]])
})
