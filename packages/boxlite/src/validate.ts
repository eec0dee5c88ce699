import { isIP } from 'node:net'
import { BoxliteError } from './errors'
import type { NetworkOptions, PortOptions, VolumeOptions } from './types'

/** An optional whole-number option within the addon's u32 range; the runtime checks real limits. */
export function optionalCount(name: string, value: number | undefined): number | undefined {
  if (value === undefined) return undefined
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new BoxliteError('INVALID_ARGUMENT', `${name} must be a whole number from 0 to 4294967295, got ${String(value)}`)
  }
  return value
}

/** Every value of an env map must be a string (the guest gets KEY=VALUE lines). */
export function stringRecord(name: string, value: Record<string, string> | undefined): Record<string, string> | undefined {
  if (value === undefined) return undefined
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') {
      throw new BoxliteError('INVALID_ARGUMENT', `${name}.${k} must be a string, got ${typeof v}`)
    }
  }
  return value
}

/** A network option as the addon takes it. */
export interface NativeNetwork {
  mode: 'default' | 'none' | 'allow' | 'deny'
  entries?: string[]
}

/**
 * Checks the shape of a network option; the entries themselves (names, `*.name`, IPs, CIDRs) are
 * checked by the runtime, which names a bad one.
 */
export function networkOption(name: string, value: NetworkOptions | undefined): NativeNetwork | undefined {
  if (value === undefined) return undefined
  if (value === 'default' || value === 'none') return { mode: value }
  const shown = typeof value === 'string' ? `'${value}'` : JSON.stringify(value)
  const malformed = new BoxliteError(
    'INVALID_ARGUMENT',
    `${name} must be 'default', 'none', { allow: [...] } or { deny: [...] }, got ${shown}`,
  )
  if (typeof value !== 'object' || value === null) throw malformed
  const keys = Object.keys(value)
  const mode = keys[0]
  if (keys.length !== 1 || (mode !== 'allow' && mode !== 'deny')) throw malformed
  const entries: unknown = (value as Record<string, unknown>)[mode]
  if (!Array.isArray(entries)) {
    throw new BoxliteError('INVALID_ARGUMENT', `${name}.${mode} must be an array of strings`)
  }
  entries.forEach((entry: unknown, i) => {
    if (typeof entry !== 'string') {
      throw new BoxliteError('INVALID_ARGUMENT', `${name}.${mode}[${i}] must be a string, got ${typeof entry}`)
    }
  })
  return { mode, entries: entries as string[] }
}

/**
 * Whether a warm start template serves boxes with a network: `true`/`false` as given, or a box's
 * network option (`'none'` is `false`, every other form `true`); `undefined` is the default (`true`).
 */
export function warmupNetwork(name: string, value: boolean | NetworkOptions | undefined): boolean | undefined {
  if (value === undefined || typeof value === 'boolean') return value
  try {
    return networkOption(name, value)?.mode !== 'none'
  } catch {
    const shown = typeof value === 'string' ? `'${value}'` : JSON.stringify(value)
    throw new BoxliteError('INVALID_ARGUMENT', `${name} must be true, false or a box's network option, got ${shown}`)
  }
}

/**
 * Checks each port's numbers, protocol and address, naming the entry; duplicates and host ports
 * in use are the runtime's to find.
 */
export function portOptions(value: PortOptions[] | undefined): PortOptions[] | undefined {
  if (value === undefined) return undefined
  if (!Array.isArray(value)) throw new BoxliteError('INVALID_ARGUMENT', 'ports must be an array')
  value.forEach((port, i) => {
    const fail = (why: string): never => {
      throw new BoxliteError('INVALID_ARGUMENT', `ports[${i}] ${JSON.stringify(port)}: ${why}`)
    }
    if (typeof port !== 'object' || port === null) fail('must be an object with a guestPort')
    if (!isPort(port.guestPort, 1)) fail(`guestPort must be a whole number from 1 to 65535, got ${String(port.guestPort)}`)
    if (port.hostPort !== undefined && !isPort(port.hostPort, 0)) {
      fail(`hostPort must be a whole number from 0 (any free port) to 65535, got ${String(port.hostPort)}`)
    }
    if (port.protocol !== undefined && port.protocol !== 'tcp' && port.protocol !== 'udp') {
      fail(`protocol must be 'tcp' or 'udp', got ${String(port.protocol)}`)
    }
    if (port.hostIp !== undefined && (typeof port.hostIp !== 'string' || isIP(port.hostIp) === 0)) {
      fail(`hostIp must be an IP address, got ${String(port.hostIp)}`)
    }
  })
  return value
}

function isPort(value: unknown, min: number): boolean {
  return Number.isInteger(value) && (value as number) >= min && (value as number) <= 0xffff
}

/** A path in the box: absolute, without NUL bytes (the box resolves the rest). */
export function guestPathArg(name: string, value: unknown): string {
  if (typeof value !== 'string' || !value.startsWith('/') || value.includes('\0')) {
    const shown = typeof value === 'string' ? `'${value}'` : String(value)
    throw new BoxliteError('INVALID_ARGUMENT', `${name} must be an absolute path in the box (starting with /), got ${shown}`)
  }
  return value
}

/** A path on the host: a non-empty string (relative to the current directory, or absolute). */
export function hostPathArg(name: string, value: unknown): string {
  if (typeof value !== 'string' || value === '' || value.includes('\0')) {
    const shown = typeof value === 'string' ? `'${value}'` : String(value)
    throw new BoxliteError('INVALID_ARGUMENT', `${name} must be a path on the host, got ${shown}`)
  }
  return value
}

/** Permission bits, `0` to `0o7777`, e.g. `0o755`. */
export function fileMode(name: string, value: number | undefined): number | undefined {
  if (value === undefined) return undefined
  if (!Number.isInteger(value) || value < 0 || value > 0o7777) {
    const shown = typeof value === 'number' && Number.isInteger(value) ? `0o${value.toString(8)}` : String(value)
    throw new BoxliteError('INVALID_ARGUMENT', `${name} must be permission bits from 0 to 0o7777 (e.g. 0o644), got ${shown}`)
  }
  return value
}

/** An optional boolean flag; anything else (e.g. the string 'false') is refused rather than coerced. */
export function optionalFlag(name: string, value: unknown): boolean {
  if (value === undefined) return false
  if (typeof value !== 'boolean') {
    throw new BoxliteError('INVALID_ARGUMENT', `${name} must be true or false, got ${typeof value === 'string' ? `'${value}'` : String(value)}`)
  }
  return value
}

/** Most volumes a box may have (the runtime's limit: each is a virtio device of the VM). */
export const MAX_VOLUMES = 3

/**
 * Checks each volume's shape, naming the entry: absolute paths, a boolean `readOnly`. Whether the
 * host directory exists, and guest paths over the box's own mounts, are the runtime's to find.
 */
export function volumeOptions(value: VolumeOptions[] | undefined): VolumeOptions[] | undefined {
  if (value === undefined) return undefined
  if (!Array.isArray(value)) throw new BoxliteError('INVALID_ARGUMENT', 'volumes must be an array of { hostPath, guestPath, readOnly }')
  if (value.length > MAX_VOLUMES) {
    throw new BoxliteError('INVALID_ARGUMENT', `${value.length} volumes asked for: a box may have at most ${MAX_VOLUMES}`)
  }
  value.forEach((volume, i) => {
    const fail = (why: string): never => {
      throw new BoxliteError('INVALID_ARGUMENT', `volumes[${i}] ${JSON.stringify(volume)}: ${why}`)
    }
    if (typeof volume !== 'object' || volume === null) fail('must be an object with hostPath and guestPath')
    for (const key of ['hostPath', 'guestPath'] as const) {
      const path: unknown = volume[key]
      if (typeof path !== 'string' || !path.startsWith('/')) fail(`${key} must be an absolute path, got ${JSON.stringify(path)}`)
    }
    if (volume.readOnly !== undefined && typeof volume.readOnly !== 'boolean') {
      fail(`readOnly must be a boolean, got ${JSON.stringify(volume.readOnly)}`)
    }
  })
  return value
}
