export {
  createBoxliteMcpServer,
  DEFAULT_IMAGE,
  DEFAULT_NETWORK,
  DEFAULT_TIMEOUT_MS,
  READ_LIMIT,
  type BoxliteMcpServer,
  type BoxliteMcpServerOptions,
} from './server'
export { OUTPUT_LIMIT } from './output'
export type { Sandbox, Sandboxes, SandboxesOptions } from './sandboxes'
