export { BoxliteError, ERROR_CODES, type ErrorCode } from './errors'
export { Box, Execution, Images, Runtime } from './runtime'
export { InputStream, OutputStream } from './streams'
export type {
  BoxInfo,
  BoxMetrics,
  BoxOptions,
  BoxStatus,
  ExecOptions,
  ExitResult,
  ImageInfo,
  PullOptions,
  PullProgress,
  RegistryOptions,
  RemoveOptions,
  RuntimeMetrics,
  RuntimeOptions,
} from './types'
