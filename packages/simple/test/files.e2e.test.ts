// SimpleBox's copyIn/copyOut and files on one real box, created and booted by the first file call.
import { createHash, randomBytes } from 'node:crypto'
import { chmod, lstat, mkdir, mkdtemp, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Runtime } from '@boxlite/core'
import { afterAll, describe, expect, it } from 'vitest'
import { BoxliteError, SimpleBox, type WatchEvent } from '../src/index'
import { REGISTRY, registries, tempHome } from '../../../test/fixtures'

const image = `${REGISTRY}/busybox:latest`
const runtime = new Runtime({ home: await tempHome(), registries })
const host = await mkdtemp(join(tmpdir(), 'boxlite-simple-files-'))
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex')

async function failure(promise: Promise<unknown>): Promise<BoxliteError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(BoxliteError)
  return error as BoxliteError
}

describe('SimpleBox files', () => {
  const box = new SimpleBox({ image, runtime, name: 'files' })
  afterAll(async () => {
    await box.remove()
    await rm(host, { recursive: true, force: true })
  })

  it('boots the box on the first copy, and copies a tree in and out with modes and symlinks', async () => {
    const tree = join(host, 'tree')
    await mkdir(join(tree, 'sub'), { recursive: true })
    await writeFile(join(tree, 'run.sh'), 'echo ran\n')
    await chmod(join(tree, 'run.sh'), 0o750)
    await writeFile(join(tree, 'sub', 'data'), 'data\n')
    await symlink('sub/data', join(tree, 'link'))

    expect(box.id).toBeUndefined()
    await box.copyIn(tree, '/tmp/t')
    expect((await box.info()).status).toBe('running')
    const { stdout } = await box.exec('sh', '-c', 'cd /tmp/t && stat -c "%a %n" run.sh && readlink link && cat link')
    expect(stdout).toBe('750 run.sh\nsub/data\ndata\n')

    await box.copyOut('/tmp/t', join(host, 'out'))
    expect((await lstat(join(host, 'out', 'run.sh'))).mode & 0o7777).toBe(0o750)
    expect(await readlink(join(host, 'out', 'link'))).toBe('sub/data')
    expect(await readFile(join(host, 'out', 'sub', 'data'), 'utf8')).toBe('data\n')
  })

  it('copies a 20 MB random file both ways, checksums equal', async () => {
    const data = randomBytes(20 << 20)
    await writeFile(join(host, 'big'), data)
    await box.copyIn(join(host, 'big'), '/tmp/big')
    expect((await box.exec('sha256sum', '/tmp/big')).stdout.split(' ')[0]).toBe(sha256(data))
    await box.copyOut('/tmp/big', join(host, 'big-back'))
    expect(sha256(await readFile(join(host, 'big-back')))).toBe(sha256(data))
  })

  it('refuses to overwrite unless asked, naming the path', async () => {
    const refused = await failure(box.copyIn(join(host, 'big'), '/tmp/big'))
    expect(refused.code).toBe('ALREADY_EXISTS')
    expect(refused.message).toContain('/tmp/big')
    await box.copyIn(join(host, 'tree', 'sub', 'data'), '/tmp/big', { overwrite: true })
    expect(await box.files.readText('/tmp/big')).toBe('data\n')
  })

  it('reads, writes (text, bytes, a stream), lists, stats, makes, renames and removes', async () => {
    await box.files.mkdir('/tmp/f/g', { parents: true })
    await box.files.write('/tmp/f/text', 'hello')
    await box.files.write('/tmp/f/bytes', Buffer.from([1, 2, 3]), { mode: 0o600 })
    async function* parts() {
      yield 'a,'
      yield new Uint8Array([98, 44])
      yield Buffer.from('c')
    }
    await box.files.write('/tmp/f/stream', parts())
    expect(await box.files.readText('/tmp/f/text')).toBe('hello')
    expect([...(await box.files.read('/tmp/f/bytes'))]).toEqual([1, 2, 3])
    expect(await (await box.files.readStream('/tmp/f/stream')).text()).toBe('a,b,c')

    const listed = await box.files.list('/tmp/f')
    expect(listed.map((e) => [e.name, e.type, e.size, e.mode])).toEqual([
      ['bytes', 'file', 3, 0o600],
      ['g', 'dir', expect.any(Number), 0o755],
      ['stream', 'file', 5, 0o644],
      ['text', 'file', 5, 0o644],
    ])
    expect((await box.files.stat('/tmp/f/text')).mtime).toBeInstanceOf(Date)
    await box.files.rename('/tmp/f/text', '/tmp/f/g/text')
    expect(await box.files.exists('/tmp/f/text')).toBe(false)
    expect(await box.files.exists('/tmp/f/g/text')).toBe(true)
    await box.files.remove('/tmp/f', { recursive: true })
    expect(await box.files.exists('/tmp/f')).toBe(false)
  })

  it('watches a directory until the loop breaks', async () => {
    await box.files.mkdir('/tmp/w')
    const watch = await box.files.watch('/tmp/w')
    const changes = (async () => {
      await box.exec('sh', '-c', 'echo 1 > /tmp/w/a && echo 2 >> /tmp/w/a && mv /tmp/w/a /tmp/w/b && rm /tmp/w/b')
    })()
    const seen: WatchEvent[] = []
    for await (const event of watch) {
      seen.push(event)
      if (event.type === 'deleted') break
    }
    await changes
    // inotify merges an event identical to the one still queued before it: the two writes to a
    // may come as one `modified`.
    const kinds = seen.map((e) => [e.type, e.path]).filter((k, i, all) => i === 0 || `${k}` !== `${all[i - 1]}`)
    expect(kinds).toEqual([
      ['created', '/tmp/w/a'],
      ['modified', '/tmp/w/a'],
      ['renamed', '/tmp/w/b'],
      ['deleted', '/tmp/w/b'],
    ])
    expect(seen.find((e) => e.type === 'renamed')).toEqual({ type: 'renamed', path: '/tmp/w/b', oldPath: '/tmp/w/a', isDir: false })
  })

  it('names a missing host path, a relative guest path and a missing guest path', async () => {
    const noHost = await failure(box.copyIn(join(host, 'nope'), '/tmp'))
    expect(noHost).toMatchObject({ code: 'NOT_FOUND' })
    expect(noHost.message).toContain(join(host, 'nope'))
    const relative = await failure(box.files.write('tmp/x', 'x'))
    expect(relative).toMatchObject({ code: 'INVALID_ARGUMENT', message: "path must be an absolute path in the box (starting with /), got 'tmp/x'" })
    const noGuest = await failure(box.files.read('/tmp/nope'))
    expect(noGuest.code).toBe('NOT_FOUND')
    expect(noGuest.message).toContain('/tmp/nope')
  })

  it('boots a stopped box again for a file call, its files kept', async () => {
    await box.files.write('/root/kept', 'kept')
    await box.stop()
    expect((await box.info()).status).toBe('stopped')
    expect(await box.files.readText('/root/kept')).toBe('kept')
    expect((await box.info()).status).toBe('running')
  })
})
