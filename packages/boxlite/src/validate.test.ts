import { describe, expect, it } from 'vitest'
import type { NetworkOptions, PortOptions } from './types'
import { fileMode, guestPathArg, hostPathArg, networkOption, optionalCount, optionalFlag, portOptions, stringRecord, volumeOptions, warmupNetwork } from './validate'

describe('option checks', () => {
  it('accepts whole numbers and undefined', () => {
    expect(optionalCount('cpus', undefined)).toBeUndefined()
    expect(optionalCount('cpus', 2)).toBe(2)
  })

  it('names the option and the bad value', () => {
    expect(() => optionalCount('memoryMib', 1.5)).toThrow(/memoryMib must be a whole number.*got 1.5/)
    expect(() => optionalCount('memoryMib', -1)).toThrow(/INVALID|memoryMib/)
  })

  it('rejects non-string env values by key', () => {
    expect(() => stringRecord('env', { A: 1 as unknown as string })).toThrow(/env\.A must be a string, got number/)
    expect(stringRecord('env', { A: '1' })).toEqual({ A: '1' })
  })
})

describe('network checks', () => {
  it('turns each form into the addon\'s mode and entries', () => {
    expect(networkOption('network', undefined)).toBeUndefined()
    expect(networkOption('network', 'default')).toEqual({ mode: 'default' })
    expect(networkOption('network', 'none')).toEqual({ mode: 'none' })
    expect(networkOption('network', { allow: ['pypi.org', '10.0.0.0/8'] })).toEqual({ mode: 'allow', entries: ['pypi.org', '10.0.0.0/8'] })
    expect(networkOption('network', { deny: [] })).toEqual({ mode: 'deny', entries: [] })
  })

  it('refuses other shapes with INVALID_ARGUMENT, showing what was given', () => {
    const bad = (value: unknown) => () => networkOption('network', value as NetworkOptions)
    expect(bad('off')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining("got 'off'") }))
    expect(bad({ allow: ['a'], deny: ['b'] })).toThrow(/network must be .*got \{"allow":\["a"\],"deny":\["b"\]\}/)
    expect(bad({ allow: 'pypi.org' })).toThrow(/network\.allow must be an array of strings/)
    expect(bad({ deny: ['ok', 7] })).toThrow(/network\.deny\[1\] must be a string, got number/)
    expect(bad(null)).toThrow(/got null/)
  })

  it("reduces a warmup's network to with or without, taking a box's network option too", () => {
    expect(warmupNetwork('network', undefined)).toBeUndefined()
    expect(warmupNetwork('network', false)).toBe(false)
    expect(warmupNetwork('network', true)).toBe(true)
    expect(warmupNetwork('network', 'none')).toBe(false)
    expect(warmupNetwork('network', 'default')).toBe(true)
    expect(warmupNetwork('network', { allow: ['pypi.org'] })).toBe(true)
    expect(warmupNetwork('network', { deny: [] })).toBe(true)
    const bad = (value: unknown) => () => warmupNetwork('network', value as NetworkOptions)
    expect(bad('off')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: "network must be true, false or a box's network option, got 'off'" }))
    expect(bad(1)).toThrow(/got 1/)
  })
})

describe('port checks', () => {
  it('passes well-formed ports through', () => {
    const ports: PortOptions[] = [{ guestPort: 80 }, { hostPort: 0, guestPort: 53, protocol: 'udp', hostIp: '::1' }]
    expect(portOptions(ports)).toBe(ports)
    expect(portOptions(undefined)).toBeUndefined()
  })

  it('names the entry and the bad field', () => {
    const bad = (port: unknown) => () => portOptions([{ guestPort: 80 }, port as PortOptions])
    expect(bad({ guestPort: 0 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: 'ports[1] {"guestPort":0}: guestPort must be a whole number from 1 to 65535, got 0' }))
    expect(bad({ hostPort: 70000, guestPort: 80 })).toThrow(/ports\[1\] .*hostPort must be .* got 70000/)
    expect(bad({ guestPort: 80, protocol: 'sctp' })).toThrow(/ports\[1\] .*protocol must be 'tcp' or 'udp', got sctp/)
    expect(bad({ guestPort: 80, hostIp: 'localhost' })).toThrow(/ports\[1\] .*hostIp must be an IP address, got localhost/)
    expect(bad('80:80')).toThrow(/ports\[1\] "80:80": must be an object/)
  })
})

describe('file argument checks', () => {
  it('takes absolute guest paths and names a relative one with the fix', () => {
    expect(guestPathArg('path', '/tmp/a')).toBe('/tmp/a')
    expect(() => guestPathArg('guestPath', 'tmp/a')).toThrow("guestPath must be an absolute path in the box (starting with /), got 'tmp/a'")
    expect(() => guestPathArg('path', 42)).toThrow(/path must be an absolute path.*got 42/)
    expect(() => guestPathArg('path', '/a\0b')).toThrow(/absolute path/)
  })

  it('takes any non-empty host path', () => {
    expect(hostPathArg('hostPath', 'rel/dir')).toBe('rel/dir')
    expect(() => hostPathArg('hostPath', '')).toThrow("hostPath must be a path on the host, got ''")
  })

  it('takes permission bits and shows a bad mode in octal', () => {
    expect(fileMode('mode', undefined)).toBeUndefined()
    expect(fileMode('mode', 0o755)).toBe(0o755)
    expect(() => fileMode('mode', 0o10000)).toThrow('mode must be permission bits from 0 to 0o7777 (e.g. 0o644), got 0o10000')
    expect(() => fileMode('mode', 1.5)).toThrow(/got 1.5/)
  })

  it('refuses a flag that is not a boolean instead of coercing it', () => {
    expect(optionalFlag('overwrite', undefined)).toBe(false)
    expect(optionalFlag('overwrite', true)).toBe(true)
    expect(() => optionalFlag('overwrite', 'false')).toThrow("overwrite must be true or false, got 'false'")
  })
})

describe('volume checks', () => {
  it('passes good volumes and names a bad entry and field', () => {
    expect(volumeOptions(undefined)).toBeUndefined()
    const good = [{ hostPath: '/h', guestPath: '/g', readOnly: true }]
    expect(volumeOptions(good)).toBe(good)
    expect(() => volumeOptions('x' as never)).toThrow(/volumes must be an array/)
    expect(() => volumeOptions([{ hostPath: '/h', guestPath: '/g' }, { hostPath: 'h', guestPath: '/g' }])).toThrow(/volumes\[1\].*hostPath must be an absolute path, got "h"/)
    expect(() => volumeOptions([{ hostPath: '/h' } as never])).toThrow(/guestPath must be an absolute path, got undefined/)
    expect(() => volumeOptions([{ hostPath: '/h', guestPath: '/g', readOnly: 1 as never }])).toThrow(/readOnly must be a boolean/)
    expect(() => volumeOptions([1, 2, 3, 4].map((i) => ({ hostPath: '/h', guestPath: `/g${i}` })))).toThrow(/at most 3/)
  })
})
