// The image store through @boxlite/core: registries from the environment when the options name
// none, and `images.remove` / `images.prune` never breaking a box. Boots no VM.
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { BoxliteError, Runtime } from '@boxlite/core'
import { REGISTRY, registries, tempHome } from '../../../test/fixtures'

const REGISTRY_VARS = ['BOXLITE_REGISTRIES', 'BOXLITE_INSECURE_REGISTRIES'] as const

/** Opens a runtime with only `vars` among the registry variables set, restoring them after. */
function withRegistryEnv<T>(vars: Partial<Record<(typeof REGISTRY_VARS)[number], string>>, open: () => T): T {
  const saved = REGISTRY_VARS.map((name) => [name, process.env[name]] as const)
  try {
    for (const name of REGISTRY_VARS) {
      const value = vars[name]
      if (value === undefined) delete process.env[name]
      else process.env[name] = value
    }
    return open()
  } finally {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name]
      else process.env[name] = value
    }
  }
}

describe('registries without options', () => {
  it('come from BOXLITE_INSECURE_REGISTRIES', async () => {
    const home = await tempHome()
    const rt = withRegistryEnv({ BOXLITE_INSECURE_REGISTRIES: REGISTRY }, () => new Runtime({ home }))
    const image = await rt.images.pull('busybox:latest')
    expect(image.reference).toBe(`${REGISTRY}/busybox:latest`)
  })

  it('reject a malformed entry, naming the variable and the entry', async () => {
    const home = await tempHome()
    let error: unknown
    try {
      withRegistryEnv({ BOXLITE_REGISTRIES: 'ghcr.io:http' }, () => new Runtime({ home }))
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(BoxliteError)
    expect((error as BoxliteError).code).toBe('INVALID_ARGUMENT')
    expect((error as BoxliteError).message).toMatch(/BOXLITE_REGISTRIES.*'ghcr\.io:http'.*port 'http'/)
  })
})

describe('images.remove and images.prune', () => {
  it('refuse an image a box uses, force keeps its base disk for the box, prune frees it with the box', async () => {
    const home = await tempHome()
    const rt = new Runtime({ home, registries })
    const box = await rt.create({ image: 'busybox:latest', name: 'image-user' })
    const [image] = await rt.images.list()
    expect(image?.reference).toBe(`${REGISTRY}/busybox:latest`)

    const refused = await rt.images.remove('busybox:latest').then(
      () => null,
      (e: unknown) => e,
    )
    expect(refused).toBeInstanceOf(BoxliteError)
    expect((refused as BoxliteError).code).toBe('INVALID_STATE')
    expect((refused as BoxliteError).message).toContain('image-user')
    await expect(rt.images.remove('nosuch:latest')).rejects.toMatchObject({ code: 'NOT_FOUND' })

    const removed = await rt.images.remove('busybox:latest', { force: true })
    expect(removed).toMatchObject({ boxes: [], images: [`${REGISTRY}/busybox:latest`], baseDisks: [] })
    expect(removed.blobs).toHaveLength(3)
    expect(removed.bytesFreed).toBeGreaterThan(0)
    expect(await rt.images.list()).toEqual([])

    const pruned = await rt.images.prune({ boxes: true })
    expect(pruned.boxes).toEqual([box.id])
    expect(pruned.baseDisks).toEqual([image?.configDigest])
    expect(readdirSync(join(home, 'images', 'disks'))).toEqual([])
    expect(await rt.list()).toEqual([])
  })
})
