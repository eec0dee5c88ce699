export { CodeBox, DEFAULT_CODE_IMAGE, type CodeBoxOptions } from './code-box'
export type { EnvRecord, ExecResult, SimpleExecOptions } from './exec-args'
export { run } from './run'
export { SimpleBox, type SimpleBoxOptions } from './simple-box'
// What a user of this package needs from @boxlite/core, so it need not be a direct dependency.
export {
  BoxliteError,
  Runtime,
  type BoxInfo,
  type BoxMetrics,
  type BoxStatus,
  type ErrorCode,
  type NetworkOptions,
  type PortBinding,
  type PortOptions,
  type RegistryOptions,
  type VolumeInfo,
  type VolumeOptions,
} from '@boxlite/core'
