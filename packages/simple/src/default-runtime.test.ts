import { describe, expect, it, vi } from 'vitest'
import { defaultRuntime, runtimeKey } from './default-runtime'

vi.mock('@boxlite/core', () => import('./testing/fake-core'))

describe('defaultRuntime', () => {
  it('shares one runtime per home and registries', () => {
    const registries = [{ host: '127.0.0.1:5000', insecure: true }]
    const a = defaultRuntime({ home: '/tmp/a', registries })
    const sameRegistries = [{ host: '127.0.0.1:5000', insecure: true }]
    expect(defaultRuntime({ home: '/tmp/a', registries: sameRegistries })).toBe(a)
    expect(defaultRuntime({ home: '/tmp/b', registries })).not.toBe(a)
    expect(defaultRuntime({ home: '/tmp/a' })).not.toBe(a)
  })

  it('treats missing options as defaults', () => {
    expect(runtimeKey({})).toBe(runtimeKey({ home: undefined, registries: [] }))
  })
})
