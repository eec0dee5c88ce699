import { BoxliteError } from './errors'

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
