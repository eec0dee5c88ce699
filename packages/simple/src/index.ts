export { CodeBox, DEFAULT_CODE_IMAGE, type CodeBoxOptions } from './code-box'
export {
  CODE_OUTPUT_LIMIT,
  CodeContext,
  type CodeError,
  type CodeExecution,
  type CodeLanguage,
  type CodeResult,
  type CreateContextOptions,
  type RunCodeOptions,
} from './code-context'
export type { EnvRecord, ExecResult, SimpleExecOptions } from './exec-args'
export { run } from './run'
export { SimpleBox, SimpleFiles, type SimpleBoxOptions } from './simple-box'
// What a user of this package needs from @boxlite/core, so it need not be a direct dependency.
export {
  BoxliteError,
  Runtime,
  type BoxInfo,
  type BoxMetrics,
  type BoxStatus,
  type CopyOptions,
  type ErrorCode,
  type FileEntry,
  type FileReadStream,
  type FileRemoveOptions,
  type FileType,
  type FileWatch,
  type MkdirOptions,
  type NetworkOptions,
  type PortBinding,
  type PortOptions,
  type RegistryOptions,
  type TemplateInfo,
  type WarmupOptions,
  type WatchEvent,
  type WatchOptions,
  type WriteData,
  type WriteOptions,
  type VolumeInfo,
  type VolumeOptions,
} from '@boxlite/core'
