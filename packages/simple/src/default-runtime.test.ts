import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { defaultRuntime, runtimeKey } from './default-runtime'

// Real runtimes: opening one only creates its home (no VM, no registry contact).
const root = await mkdtemp(join(tmpdir(), 'boxlite-default-runtime-'))
afterAll(() => rm(root, { recursive: true, force: true }))

describe('defaultRuntime', () => {
  it('shares one runtime per home and registries', () => {
    const home = join(root, 'a')
    const registries = [{ host: '127.0.0.1:5000', insecure: true }]
    const a = defaultRuntime({ home, registries })
    expect(a.home).toBe(home)
    const sameRegistries = [{ host: '127.0.0.1:5000', insecure: true }]
    expect(defaultRuntime({ home, registries: sameRegistries })).toBe(a)
    const b = defaultRuntime({ home: join(root, 'b'), registries })
    expect(b).not.toBe(a)
    expect(b.home).toBe(join(root, 'b'))
    expect(defaultRuntime({ home })).not.toBe(a)
  })

  it('treats missing options as defaults', () => {
    expect(runtimeKey({})).toBe(runtimeKey({ home: undefined, registries: [] }))
  })
})
