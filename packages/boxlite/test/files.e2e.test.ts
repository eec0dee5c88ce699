// Files in and out of a real box: copyIn/copyOut, the files API and watch. One box for the file;
// the last case stops it.
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { chmod, lstat, mkdir, mkdtemp, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Box, Runtime, type WatchEvent } from '@boxlite/core'
import { REGISTRY, registries, tempHome } from '../../../test/fixtures'
import { failure } from './helpers'

const busybox = `${REGISTRY}/busybox:latest`
let runtime: Runtime
let box: Box
let host: string

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex')

/** Runs a shell line in the box; its stdout, failing the test on a non-zero exit. */
async function sh(line: string): Promise<string> {
  const ex = await box.exec('sh', ['-c', line])
  const [out, err, exit] = await Promise.all([ex.stdout.text(), ex.stderr.text(), ex.wait()])
  expect(exit.exitCode, `${line}: ${err}`).toBe(0)
  return out
}

/** How many inotify instances the box's processes hold (the agent's watches among them). */
async function inotifyCount(): Promise<number> {
  const out = await sh("ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c 'anon_inode:inotify' || true")
  return Number(out.trim())
}

async function until(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

beforeAll(async () => {
  runtime = new Runtime({ home: await tempHome(), registries })
  box = await runtime.create({ image: busybox, name: 'files' })
  await box.start()
  host = await mkdtemp(join(tmpdir(), 'boxlite-files-'))
})

afterAll(async () => {
  await box?.remove({ force: true })
  if (host) await rm(host, { recursive: true, force: true })
})

describe('copyIn and copyOut', () => {
  it('copies a tree in and back out with modes and symlinks kept', async () => {
    const tree = join(host, 'tree')
    await mkdir(join(tree, 'bin'), { recursive: true })
    await mkdir(join(tree, 'empty'))
    await writeFile(join(tree, 'a.txt'), 'alpha\n')
    await chmod(join(tree, 'a.txt'), 0o640)
    await writeFile(join(tree, 'bin', 'run.sh'), '#!/bin/sh\necho ran\n')
    await chmod(join(tree, 'bin', 'run.sh'), 0o755)
    await symlink('a.txt', join(tree, 'link'))

    await box.copyIn(tree, '/tmp') // an existing directory: lands inside under its own name
    expect(await sh('cd /tmp/tree && stat -c "%a %F %n" a.txt bin/run.sh empty && readlink link && cat link && bin/run.sh')).toBe(
      '640 regular file a.txt\n755 regular file bin/run.sh\n755 directory empty\na.txt\nalpha\nran\n',
    )

    const back = join(host, 'back') // does not exist: the new name
    await box.copyOut('/tmp/tree', back)
    expect(await readFile(join(back, 'a.txt'), 'utf8')).toBe('alpha\n')
    expect((await lstat(join(back, 'a.txt'))).mode & 0o7777).toBe(0o640)
    expect((await lstat(join(back, 'bin', 'run.sh'))).mode & 0o7777).toBe(0o755)
    expect((await lstat(join(back, 'empty'))).isDirectory()).toBe(true)
    expect((await lstat(join(back, 'link'))).isSymbolicLink()).toBe(true)
    expect(await readlink(join(back, 'link'))).toBe('a.txt')
  })

  it('copies a 20 MB random file both ways, checksums equal', async () => {
    const data = randomBytes(20 << 20)
    const file = join(host, 'big.bin')
    await writeFile(file, data)
    const t0 = Date.now()
    await box.copyIn(file, '/tmp/big.bin')
    const tIn = Date.now() - t0
    expect((await sh('sha256sum /tmp/big.bin')).split(' ')[0]).toBe(sha256(data))
    const out = join(host, 'big-out.bin')
    const t1 = Date.now()
    await box.copyOut('/tmp/big.bin', out)
    console.log(`20 MiB: copyIn ${tIn} ms, copyOut ${Date.now() - t1} ms`)
    expect(sha256(await readFile(out))).toBe(sha256(data))
  })

  it('refuses an existing target naming it, and replaces it with overwrite', async () => {
    const file = join(host, 'note.txt')
    await writeFile(file, 'one')
    await box.copyIn(file, '/tmp/note.txt')
    await writeFile(file, 'two')
    const inErr = await failure(box.copyIn(file, '/tmp/note.txt'))
    expect(inErr.code).toBe('ALREADY_EXISTS')
    expect(inErr.message).toContain('/tmp/note.txt')
    expect(await box.files.readText('/tmp/note.txt')).toBe('one')
    await box.copyIn(file, '/tmp/note.txt', { overwrite: true })
    expect(await box.files.readText('/tmp/note.txt')).toBe('two')

    const outErr = await failure(box.copyOut('/tmp/note.txt', file))
    expect(outErr.code).toBe('ALREADY_EXISTS')
    expect(outErr.message).toContain(file)
    await box.files.write('/tmp/note.txt', 'three')
    await box.copyOut('/tmp/note.txt', file, { overwrite: true })
    expect(await readFile(file, 'utf8')).toBe('three')
  })

  it('names a missing host path, a relative guest path and a missing guest path', async () => {
    const missing = join(host, 'no-such-file')
    const noHost = await failure(box.copyIn(missing, '/tmp'))
    expect(noHost.code).toBe('NOT_FOUND')
    expect(noHost.message).toContain(missing)

    const relative = await failure(box.copyIn(host, 'tmp/x'))
    expect(relative.code).toBe('INVALID_ARGUMENT')
    expect(relative.message).toBe("guestPath must be an absolute path in the box (starting with /), got 'tmp/x'")
    expect((await failure(box.copyOut('relative', host))).code).toBe('INVALID_ARGUMENT')

    const noGuest = await failure(box.copyOut('/tmp/no-such-thing', join(host, 'x')))
    expect(noGuest.code).toBe('NOT_FOUND')
    expect(noGuest.message).toContain('/tmp/no-such-thing')
    await expect(lstat(join(host, 'x'))).rejects.toThrow(/ENOENT/)
  })
})

describe('files', () => {
  it('writes and reads text and bytes, with a mode', async () => {
    await box.files.write('/tmp/hello.txt', 'héllo\n')
    expect(await box.files.readText('/tmp/hello.txt')).toBe('héllo\n')
    const bytes = new Uint8Array([0, 1, 2, 255, 254])
    await box.files.write('/tmp/bytes.bin', bytes, { mode: 0o600 })
    const read = await box.files.read('/tmp/bytes.bin')
    expect(Buffer.isBuffer(read)).toBe(true)
    expect([...read]).toEqual([...bytes])
    expect(await sh('stat -c %a /tmp/bytes.bin')).toBe('600\n')
  })

  it('writes a stream chunk by chunk and reads it back as a stream', async () => {
    const chunks = Array.from({ length: 64 }, () => randomBytes(64 << 10)) // 4 MiB
    let pulled = 0
    async function* source() {
      for (const chunk of chunks) {
        pulled++
        yield chunk
      }
    }
    await box.files.write('/tmp/streamed.bin', source(), { mode: 0o644 })
    expect(pulled).toBe(64)
    const whole = Buffer.concat(chunks)
    expect((await sh('sha256sum /tmp/streamed.bin')).split(' ')[0]).toBe(sha256(whole))

    const stream = await box.files.readStream('/tmp/streamed.bin')
    const got: Buffer[] = []
    for await (const chunk of stream) got.push(chunk)
    expect(got.length).toBeGreaterThan(1)
    expect(got.every((c) => Buffer.isBuffer(c) && c.length <= 512 << 10)).toBe(true)
    expect(sha256(Buffer.concat(got))).toBe(sha256(whole))

    // A Node Readable and a web ReadableStream go the same way.
    await box.files.write('/tmp/from-node.bin', createReadStream(join(host, 'big.bin')))
    expect(await sh('cmp /tmp/big.bin /tmp/from-node.bin && echo same')).toBe('same\n')
    await box.files.write('/tmp/from-web.txt', ReadableStream.from([Buffer.from('web '), Buffer.from('stream')]))
    expect(await box.files.readText('/tmp/from-web.txt')).toBe('web stream')
  })

  it('stops a read early when the loop breaks', async () => {
    const stream = await box.files.readStream('/tmp/big.bin')
    let first: Buffer | undefined
    for await (const chunk of stream) {
      first = chunk
      break
    }
    expect(first?.length).toBeGreaterThan(0)
    expect(await box.files.exists('/tmp/big.bin')).toBe(true) // the box answers on
  })

  it('lists, stats, makes, renames and removes', async () => {
    await box.files.mkdir('/tmp/d/e/f', { parents: true })
    await box.files.mkdir('/tmp/d/e/f', { parents: true }) // exists: no error with parents
    await box.files.write('/tmp/d/file.txt', '12345', { mode: 0o640 })
    await sh('ln -s file.txt /tmp/d/link')
    const before = Date.now()
    const entries = await box.files.list('/tmp/d')
    expect(entries.map(({ name, type, mode }) => ({ name, type, mode }))).toEqual([
      { name: 'e', type: 'dir', mode: 0o755 },
      { name: 'file.txt', type: 'file', mode: 0o640 },
      { name: 'link', type: 'symlink', mode: 0o777 },
    ])
    const file = entries[1]!
    expect(file.size).toBe(5)
    expect(file.mtime).toBeInstanceOf(Date)
    expect(Math.abs(file.mtime.getTime() - before)).toBeLessThan(120_000)
    expect(await box.files.stat('/tmp/d/link')).toMatchObject({ name: 'link', type: 'symlink', size: 8 })
    expect(await box.files.stat('/')).toMatchObject({ name: '/', type: 'dir' })

    expect(await box.files.exists('/tmp/d/file.txt')).toBe(true)
    expect(await box.files.exists('/tmp/d/nope')).toBe(false)

    const exists = await failure(box.files.mkdir('/tmp/d/e'))
    expect(exists.code).toBe('ALREADY_EXISTS')

    await box.files.rename('/tmp/d/file.txt', '/tmp/d/e/moved.txt')
    expect(await box.files.readText('/tmp/d/e/moved.txt')).toBe('12345')
    expect(await box.files.exists('/tmp/d/file.txt')).toBe(false)

    const notEmpty = await failure(box.files.remove('/tmp/d'))
    expect(notEmpty.message).toContain('/tmp/d')
    await box.files.remove('/tmp/d/link')
    await box.files.remove('/tmp/d', { recursive: true })
    expect(await box.files.exists('/tmp/d')).toBe(false)
  })

  it('refuses bad arguments at once, and names a missing box path', async () => {
    const t0 = Date.now()
    const relative = await failure(box.files.read('etc/passwd'))
    expect(relative).toMatchObject({ code: 'INVALID_ARGUMENT', message: "path must be an absolute path in the box (starting with /), got 'etc/passwd'" })
    const mode = await failure(box.files.write('/tmp/x', 'x', { mode: 0o17777 }))
    expect(mode).toMatchObject({ code: 'INVALID_ARGUMENT', message: 'mode must be permission bits from 0 to 0o7777 (e.g. 0o644), got 0o17777' })
    const flag = await failure(box.files.remove('/tmp/x', { recursive: 'yes' as unknown as boolean }))
    expect(flag.message).toBe("recursive must be true or false, got 'yes'")
    const data = await failure(box.files.write('/tmp/x', 42 as unknown as string))
    expect(data.message).toMatch(/data must be a string, a Uint8Array/)
    expect((await failure(box.files.rename('/tmp/a', 'b'))).message).toContain("to must be an absolute path in the box (starting with /), got 'b'")

    for (const call of [() => box.files.read('/no/such'), () => box.files.stat('/no/such'), () => box.files.list('/no/such'), () => box.files.readStream('/no/such')]) {
      const missing = await failure(call())
      expect(missing.code).toBe('NOT_FOUND')
      expect(missing.message).toContain('/no/such')
    }
    const noDir = await failure(box.files.write('/no/such/file', 'x'))
    expect(noDir.code).toBe('NOT_FOUND')
    expect(Date.now() - t0).toBeLessThan(10_000)
    expect(await box.files.exists('/tmp/x')).toBe(false)
  })
})

describe('watch', () => {
  it('sees create, modify, rename and delete, and ends in the box when the loop breaks', async () => {
    await box.files.mkdir('/tmp/w/sub', { parents: true })
    const idle = await inotifyCount()
    const watch = await box.files.watch('/tmp/w', { recursive: true })
    expect(await inotifyCount()).toBe(idle + 1)

    const seen: WatchEvent[] = []
    const changes = (async () => {
      await box.files.write('/tmp/w/sub/a.txt', 'one')
      await box.files.rename('/tmp/w/sub/a.txt', '/tmp/w/b.txt')
      await box.files.remove('/tmp/w/b.txt')
      await box.files.mkdir('/tmp/w/newdir')
    })()
    const has = (type: WatchEvent['type'], path: string) => seen.some((e) => e.type === type && e.path === path)
    for await (const event of watch) {
      seen.push(event)
      if (has('created', '/tmp/w/newdir')) break
    }
    await changes
    // The file is written beside its target and renamed into place, so it may arrive as a
    // rename onto a.txt rather than a create; either way a.txt appears, then moves and goes.
    expect(seen.some((e) => e.path === '/tmp/w/sub/a.txt' && (e.type === 'created' || e.type === 'renamed' || e.type === 'modified'))).toBe(true)
    expect(seen).toContainEqual({ type: 'renamed', path: '/tmp/w/b.txt', oldPath: '/tmp/w/sub/a.txt', isDir: false })
    expect(has('deleted', '/tmp/w/b.txt')).toBe(true)
    expect(seen).toContainEqual({ type: 'created', path: '/tmp/w/newdir', isDir: true })
    await until('the box to drop the watch after break', async () => (await inotifyCount()) === idle)
  })

  it('ends with ABORTED when its signal fires, and the box drops it', async () => {
    const idle = await inotifyCount()
    const controller = new AbortController()
    const watch = await box.files.watch('/tmp/w', { signal: controller.signal })
    setTimeout(() => controller.abort(), 200)
    const t0 = Date.now()
    const aborted = await failure((async () => {
      for await (const _ of watch) {
        // no changes are made
      }
    })())
    expect(aborted.code).toBe('ABORTED')
    expect(Date.now() - t0).toBeLessThan(5_000)
    await until('the box to drop the aborted watch', async () => (await inotifyCount()) === idle)
  })

  it('refuses a watch of a file or a missing path', async () => {
    await box.files.write('/tmp/w/plain', 'x')
    expect((await failure(box.files.watch('/tmp/w/plain'))).code).toBe('INVALID_ARGUMENT')
    expect((await failure(box.files.watch('/tmp/w/missing'))).code).toBe('NOT_FOUND')
  })
})

describe('a stopped box', () => {
  it('ends a watch cleanly when the box stops, then refuses file calls saying to start it', async () => {
    const watch = await box.files.watch('/tmp')
    const ended = (async () => {
      const events: WatchEvent[] = []
      for await (const event of watch) events.push(event)
      return Date.now()
    })()
    const stopping = Date.now()
    await box.stop()
    expect((await ended) - stopping).toBeLessThan(15_000)

    const t0 = Date.now()
    for (const call of [
      () => box.files.read('/tmp/hello.txt'),
      () => box.files.list('/tmp'),
      () => box.copyIn(host, '/tmp'),
      () => box.copyOut('/tmp/hello.txt', join(host, 'never')),
    ]) {
      const refused = await failure(call())
      expect(refused.code).toBe('INVALID_STATE')
      expect(refused.message).toMatch(/start it first/)
    }
    expect(Date.now() - t0).toBeLessThan(5_000)
    await expect(lstat(join(host, 'never'))).rejects.toThrow(/ENOENT/)
  })
})
