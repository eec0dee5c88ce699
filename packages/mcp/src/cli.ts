import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js'
import { createBoxliteMcpServer, log } from './server'

// `boxlite-mcp`: the server on stdio. Settings come from the environment (BOXLITE_MCP_IMAGE,
// BOXLITE_HOME, BOXLITE_REGISTRIES, BOXLITE_INSECURE_REGISTRIES, ...), as MCP clients pass them.
const mcp = createBoxliteMcpServer()
let stopping = false

/**
 * Ends the server once its sandboxes are removed. Clients close stdin and then, after a moment,
 * send SIGTERM: a signal while the sandboxes are being removed does not cut the removal short.
 */
async function shutdown(why: string): Promise<void> {
  if (stopping) return
  stopping = true
  log(`${why}: removing the sandboxes and exiting`)
  try {
    await mcp.close()
  } catch (error) {
    log(`shutdown failed: ${error instanceof Error ? error.message : String(error)}`)
    process.exit(1)
  }
  process.exit(0)
}

process.stdin.on('end', () => void shutdown('stdin closed'))
process.on('SIGTERM', () => void shutdown('SIGTERM'))
process.on('SIGINT', () => void shutdown('SIGINT'))

await mcp.server.connect(new StdioServerTransport())
log('ready on stdio')
