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
  ImageRemoveOptions,
  NetworkOptions,
  PortBinding,
  PortOptions,
  PruneOptions,
  PullOptions,
  PullProgress,
  RegistryOptions,
  Removed,
  RemoveOptions,
  RuntimeMetrics,
  RuntimeOptions,
  VolumeInfo,
  VolumeOptions,
} from './types'
