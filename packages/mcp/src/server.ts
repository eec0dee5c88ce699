import { posix } from 'node:path'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js'
import { BoxliteError, DEFAULT_CODE_IMAGE, type CodeContext, type NetworkOptions, type PortBinding } from '@boxlite/simple'
import { z } from 'zod'
import packageJson from '../package.json'
import { bound, codeContent } from './output'
import { Sandboxes, type Sandbox, type SandboxesOptions } from './sandboxes'

/** The image of a sandbox created without one, unless `BOXLITE_MCP_IMAGE` or the `image` option says otherwise. */
export const DEFAULT_IMAGE = DEFAULT_CODE_IMAGE

/** How long a command or a cell may run when the call gives no `timeoutMs`. */
export const DEFAULT_TIMEOUT_MS = 300_000

/**
 * The network of a sandbox created without one: everything but the host's own loopback services,
 * which are the most sensitive thing code an agent was talked into running could reach.
 */
export const DEFAULT_NETWORK: NetworkOptions = { deny: ['host.boxlite.internal'] }

/** The largest file read_file returns (its answer holds the whole file). */
export const READ_LIMIT = 1 << 20

export interface BoxliteMcpServerOptions extends SandboxesOptions {
  /** The image of sandbox_create without `image` (default `$BOXLITE_MCP_IMAGE`, else {@link DEFAULT_IMAGE}). */
  image?: string
}

export interface BoxliteMcpServer {
  /** The MCP server, to connect to a transport. */
  readonly server: McpServer
  /** The sandboxes its tools created. */
  readonly sandboxes: Sandboxes
  /** Closes the server and removes its sandboxes (but those created with `keep`). */
  close(): Promise<void>
}

const sandboxArg = z.string().min(1).describe('The sandbox: its id or its name, as given by sandbox_create or sandbox_list.')
const timeoutArg = z
  .number()
  .int()
  .positive()
  .optional()
  .describe(`Milliseconds it may run; default ${DEFAULT_TIMEOUT_MS}.`)
const envArg = z.record(z.string(), z.string()).optional()

const portSchema = z.object({
  guestPort: z.number().int().describe('The port inside the sandbox.'),
  hostPort: z.number().int().describe('The port it is published on, on the host.'),
  address: z.string().describe('host:port to connect to from the host, e.g. 127.0.0.1:49152.'),
})

const sandboxSchema = z.object({
  id: z.string().describe('The sandbox id.'),
  name: z.string().nullable().describe('The sandbox name, if it was given one.'),
  image: z.string().describe('The image it runs.'),
  status: z.string().describe('created, starting, running, stopping, stopped or failed.'),
  keep: z.boolean().describe('Whether it is left in place when the server exits.'),
})

/**
 * An MCP server whose tools create BoxLite sandboxes (micro-VMs) and run commands, Python code and
 * file operations in them. Connect `server` to a transport; call `close()` when done.
 */
export function createBoxliteMcpServer(options: BoxliteMcpServerOptions = {}): BoxliteMcpServer {
  const defaultImage = options.image ?? process.env.BOXLITE_MCP_IMAGE ?? DEFAULT_IMAGE
  const sandboxes = new Sandboxes(options)
  const server = new McpServer({ name: 'boxlite', version: packageJson.version })

  server.registerTool(
    'sandbox_create',
    {
      title: 'Create a sandbox',
      description:
        'Creates and boots a sandbox: a micro-VM of its own running an OCI image, for run_command, run_code and the file tools. ' +
        'It is removed when this server exits, unless created with keep. Ports can only be published here, at creation.',
      inputSchema: {
        image: z.string().min(1).optional().describe(`Image reference, e.g. python:slim or alpine:latest; default ${defaultImage}. run_code needs python3 in it.`),
        name: z.string().min(1).optional().describe('A unique name to refer to the sandbox by, instead of its id.'),
        cpus: z.number().int().min(1).optional().describe('Virtual CPUs; default 1.'),
        memoryMib: z.number().int().min(128).max(65536).optional().describe('Memory in MiB; default 512.'),
        env: envArg.describe('Environment variables for every command and code context in the sandbox.'),
        ports: z
          .array(
            z.object({
              guestPort: z.number().int().min(1).max(65535).describe('The port inside the sandbox.'),
              hostPort: z.number().int().min(0).max(65535).optional().describe('The host port (on 127.0.0.1); 0 or absent: any free port.'),
            }),
          )
          .optional()
          .describe('Sandbox ports to publish on the host; publish_port tells their host addresses later.'),
        network: z
          .union([
            z.enum(['default', 'none']),
            z.object({ allow: z.array(z.string()).describe('Host names, *.domain patterns, IPs or CIDRs the sandbox may reach; nothing else.') }),
            z.object({ deny: z.array(z.string()).describe('Host names, *.domain patterns, IPs or CIDRs the sandbox may not reach.') }),
          ])
          .optional()
          .describe(
            "Outbound network: 'default' (everything, the host's own 127.0.0.1 services included as host.boxlite.internal), " +
              "'none' (no network at all), {allow: [...]} or {deny: [...]}. Default: everything but the host's services.",
          ),
        keep: z
          .boolean()
          .optional()
          .describe('Leave the sandbox in place (stopped, its disk kept) when this server exits. With a name, a sandbox of that name kept earlier is used again.'),
      },
      outputSchema: {
        id: z.string().describe('The sandbox id.'),
        name: z.string().nullable().describe('The sandbox name, if it was given one.'),
        image: z.string().describe('The image it runs.'),
        created: z.boolean().describe('false when a kept sandbox of this name was used again (its own settings then apply).'),
        ports: z.array(portSchema).describe('The published ports.'),
      },
    },
    ({ image, network, keep, ...boxOptions }) =>
      attempt(async () => {
        const { sandbox, created } = await sandboxes.create({ ...boxOptions, image: image ?? defaultImage, network: network ?? DEFAULT_NETWORK, keep })
        const { ports } = await sandbox.box.info()
        return structured({ id: sandbox.id, name: sandbox.name ?? null, image: sandbox.image, created, ports: ports.map(address) })
      }),
  )

  server.registerTool(
    'sandbox_list',
    {
      title: 'List sandboxes',
      description: "This server's sandboxes, with their status.",
      outputSchema: { sandboxes: z.array(sandboxSchema).describe("This server's sandboxes.") },
    },
    () =>
      attempt(async () => {
        const listed = await Promise.all(
          sandboxes.list().map(async (s) => ({ id: s.id, name: s.name ?? null, image: s.image, status: (await s.box.info()).status, keep: s.keep })),
        )
        return structured({ sandboxes: listed })
      }),
  )

  server.registerTool(
    'sandbox_remove',
    {
      title: 'Remove a sandbox',
      description: 'Stops and removes a sandbox (kept or not) with everything in it.',
      inputSchema: { sandbox: sandboxArg },
    },
    ({ sandbox }) =>
      attempt(async () => {
        const removed = await sandboxes.remove(sandbox)
        return text(`removed sandbox ${removed.name ?? removed.id}`)
      }),
  )

  server.registerTool(
    'run_command',
    {
      title: 'Run a shell command',
      description:
        'Runs a command with `sh -c` in a sandbox and returns its exit code, stdout and stderr (each cut to its start and end when long). ' +
        'A non-zero exit code is a result, not an error.',
      inputSchema: {
        sandbox: sandboxArg,
        command: z.string().min(1).describe('The shell command line, run as `sh -c COMMAND`; pipes, redirections and && work.'),
        cwd: z.string().min(1).optional().describe("Working directory; default the image's."),
        env: envArg.describe('Environment variables for this command, over the sandbox ones.'),
        timeoutMs: timeoutArg,
      },
      outputSchema: {
        exitCode: z.number().int().describe('The exit code; 128 + N when killed by signal N.'),
        stdout: z.string().describe('Standard output (cut in the middle when long).'),
        stderr: z.string().describe('Standard error (cut in the middle when long).'),
        timedOut: z.boolean().describe('Whether it ran past timeoutMs and was killed.'),
      },
    },
    ({ sandbox, command, cwd, env, timeoutMs }, extra) =>
      attempt(async () => {
        const { box } = sandboxes.get(sandbox)
        const result = await box.exec('sh', ['-c', command], { cwd, env, timeoutMs: timeoutMs ?? DEFAULT_TIMEOUT_MS, signal: extra.signal })
        const stdout = bound(result.stdout)
        const stderr = bound(result.stderr)
        const timedOut = result.timedOut ? ` (killed: it ran past ${timeoutMs ?? DEFAULT_TIMEOUT_MS} ms)` : ''
        const lines = [`exit code ${result.exitCode}${timedOut}`]
        if (stdout) lines.push(`stdout:\n${stdout}`)
        if (stderr) lines.push(`stderr:\n${stderr}`)
        return {
          content: [{ type: 'text', text: lines.join('\n') }],
          structuredContent: { exitCode: result.exitCode, stdout, stderr, timedOut: result.timedOut },
        }
      }),
  )

  server.registerTool(
    'run_code',
    {
      title: 'Run Python code',
      description:
        'Runs Python code in a sandbox, in a context whose variables and imports last from call to call (as a notebook). ' +
        "Returns stdout, stderr, the last expression's value and display()ed values as text, matplotlib figures as PNG images; " +
        'an exception comes back as an error with its traceback, and the context goes on.',
      inputSchema: {
        sandbox: sandboxArg,
        code: z.string().describe('Python code: statements, the last line may be an expression whose value is returned.'),
        context: z
          .string()
          .min(1)
          .optional()
          .describe('A context name of your choice: started on first use, its state kept for later calls naming it. Default: the sandbox default context.'),
        timeoutMs: timeoutArg.describe(`Milliseconds the code may run before it is interrupted (KeyboardInterrupt; the context keeps its state); default ${DEFAULT_TIMEOUT_MS}.`),
      },
    },
    ({ sandbox, code, context, timeoutMs }) =>
      attempt(async () => {
        const found = sandboxes.get(sandbox)
        const notes: string[] = []
        const codeContext = context === undefined ? undefined : await namedContext(found, context, notes)
        const execution = await found.box.runCode(code, { context: codeContext, timeoutMs: timeoutMs ?? DEFAULT_TIMEOUT_MS })
        const content = [...notes.map((note) => ({ type: 'text' as const, text: note })), ...codeContent(execution)]
        if (content.length === 0) content.push({ type: 'text', text: '(no output)' })
        return { content, isError: execution.error !== undefined }
      }),
  )

  server.registerTool(
    'read_file',
    {
      title: 'Read a file',
      description: `Reads a whole file of a sandbox, as UTF-8 text or base64 (at most ${READ_LIMIT} bytes).`,
      inputSchema: {
        sandbox: sandboxArg,
        path: z.string().min(1).describe('Absolute path of the file in the sandbox.'),
        encoding: z.enum(['utf8', 'base64']).optional().describe("'utf8' (default) for text, 'base64' for binary files."),
      },
    },
    ({ sandbox, path, encoding }) =>
      attempt(async () => {
        const { box } = sandboxes.get(sandbox)
        const chunks: Buffer[] = []
        let size = 0
        for await (const chunk of await box.files.readStream(path)) {
          size += chunk.length
          if (size > READ_LIMIT) {
            throw new BoxliteError('INVALID_ARGUMENT', `${path} has more than the ${READ_LIMIT} bytes read_file returns: read part of it with run_command (head, tail, sed -n)`)
          }
          chunks.push(chunk)
        }
        const data = Buffer.concat(chunks)
        return text(encoding === 'base64' ? data.toString('base64') : data.toString('utf8'))
      }),
  )

  server.registerTool(
    'write_file',
    {
      title: 'Write a file',
      description: 'Writes a whole file in a sandbox (replacing it if it exists), creating its missing parent directories.',
      inputSchema: {
        sandbox: sandboxArg,
        path: z.string().min(1).describe('Absolute path of the file in the sandbox.'),
        content: z.string().describe('The file content, as text or (with encoding base64) base64.'),
        encoding: z.enum(['utf8', 'base64']).optional().describe("How content is given: 'utf8' (default) or 'base64'."),
        mode: z
          .string()
          .regex(/^[0-7]{3,4}$/, 'octal permission bits such as 644 or 0755')
          .optional()
          .describe("Permission bits in octal, e.g. '755' for a script; default: an existing file keeps its own, a new one gets 644."),
      },
    },
    ({ sandbox, path, content, encoding, mode }) =>
      attempt(async () => {
        const { box } = sandboxes.get(sandbox)
        const data = encoding === 'base64' ? Buffer.from(content, 'base64') : content
        await box.files.mkdir(posix.dirname(path), { parents: true })
        await box.files.write(path, data, { mode: mode === undefined ? undefined : Number.parseInt(mode, 8) })
        return text(`wrote ${Buffer.byteLength(data)} bytes to ${path}`)
      }),
  )

  server.registerTool(
    'list_files',
    {
      title: 'List a directory',
      description: "A directory's entries in a sandbox: name, type, size, mode and modification time.",
      inputSchema: {
        sandbox: sandboxArg,
        path: z.string().min(1).describe('Absolute path of the directory in the sandbox.'),
      },
      outputSchema: {
        entries: z
          .array(
            z.object({
              name: z.string().describe('The entry name, without its directory.'),
              type: z.string().describe('file, dir, symlink or other.'),
              size: z.number().describe('Size in bytes.'),
              mode: z.string().describe('Permission bits in octal.'),
              mtime: z.string().describe('Last modification, ISO 8601.'),
            }),
          )
          .describe('The entries, sorted by name.'),
      },
    },
    ({ sandbox, path }) =>
      attempt(async () => {
        const { box } = sandboxes.get(sandbox)
        const entries = (await box.files.list(path)).map((e) => ({
          name: e.name,
          type: e.type,
          size: e.size,
          mode: e.mode.toString(8).padStart(3, '0'),
          mtime: e.mtime.toISOString(),
        }))
        return structured({ entries })
      }),
  )

  server.registerTool(
    'publish_port',
    {
      title: 'Get the host address of a sandbox port',
      description:
        'The host address (127.0.0.1:PORT) at which a sandbox port is reachable. Ports are published only when a sandbox is created: ' +
        'for a port not published then, create a sandbox with sandbox_create ports: [{guestPort}].',
      inputSchema: {
        sandbox: sandboxArg,
        guestPort: z.number().int().min(1).max(65535).describe('The port inside the sandbox.'),
      },
      outputSchema: portSchema.shape,
    },
    ({ sandbox, guestPort }) =>
      attempt(async () => {
        const found = sandboxes.get(sandbox)
        const { ports } = await found.box.info()
        const binding = ports.find((p) => p.guestPort === guestPort && p.protocol === 'tcp')
        if (!binding) {
          const published = ports.length > 0 ? `it publishes ${ports.map((p) => p.guestPort).join(', ')}` : 'it publishes none'
          throw new BoxliteError(
            'NOT_FOUND',
            `port ${guestPort} of sandbox ${found.name ?? found.id} is not published (${published}): ports can only be published when a sandbox is created; ` +
              `create one with sandbox_create ports: [{ guestPort: ${guestPort} }]`,
          )
        }
        return structured(address(binding))
      }),
  )

  return {
    server,
    sandboxes,
    async close() {
      await server.close()
      const { removed, failed } = await sandboxes.removeAll()
      if (removed.length > 0) log(`removed ${removed.length} sandbox(es): ${removed.join(', ')}`)
      for (const { id, error } of failed) log(`could not remove sandbox ${id}: ${BoxliteError.from(error).message}`)
    },
  }
}

/** The context named `name` in the sandbox, started on first use and again (with a note) if its interpreter ended. */
async function namedContext(sandbox: Sandbox, name: string, notes: string[]): Promise<CodeContext> {
  const pending = sandbox.contexts.get(name)
  if (pending) {
    const context = await pending.catch(() => undefined)
    if (context && context.died === undefined) return context
    if (context) {
      notes.push(`context "${name}" was started again, with a fresh state: its interpreter had ended (${context.died})`)
      await sandbox.box.removeContext(context).catch(() => undefined)
    }
    if (sandbox.contexts.get(name) !== pending) return namedContext(sandbox, name, notes)
  }
  const started = sandbox.box.createContext()
  sandbox.contexts.set(name, started)
  try {
    return await started
  } catch (error) {
    if (sandbox.contexts.get(name) === started) sandbox.contexts.delete(name)
    throw error
  }
}

function address(binding: PortBinding): z.infer<typeof portSchema> {
  return { guestPort: binding.guestPort, hostPort: binding.hostPort, address: `${binding.hostIp}:${binding.hostPort}` }
}

/** Runs a tool's body; whatever it throws becomes a tool error naming its code (the server goes on). */
async function attempt(body: () => Promise<CallToolResult>): Promise<CallToolResult> {
  try {
    return await body()
  } catch (error) {
    const { code, message } = BoxliteError.from(error)
    return { isError: true, content: [{ type: 'text', text: `${code}: ${message}` }] }
  }
}

function text(value: string): CallToolResult {
  return { content: [{ type: 'text', text: value }] }
}

/** Structured content, with its JSON as text too for clients that read only text. */
function structured(value: Record<string, unknown>): CallToolResult {
  return { content: [{ type: 'text', text: JSON.stringify(value, null, 2) }], structuredContent: value }
}

/** Logs to stderr: stdout carries the protocol. */
export function log(message: string): void {
  process.stderr.write(`boxlite-mcp: ${message}\n`)
}
