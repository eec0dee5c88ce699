import { existsSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js'
import { Runtime } from '@boxlite/simple'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { REGISTRY, tempHome } from '../../../test/fixtures'

// The server as published: the built bin, spawned by the SDK's own client (CI builds before testing).
const bin = fileURLToPath(new URL('../dist/cli.js', import.meta.url))
const home = await tempHome()
const PNG_BASE64 = /^iVBORw0KGgo/
// Boots and matplotlib's first import are slow under software emulation: far past the SDK's 60 s.
const slow = { timeout: 240_000 }

type Content = CallToolResult['content'][number]

function texts(result: CallToolResult): string {
  return result.content.map((c: Content) => (c.type === 'text' ? c.text : `[${c.type}]`)).join('\n')
}

/** The text of a failed call, whether the server answered with a tool error or a protocol error. */
async function failure(call: Promise<unknown>): Promise<string> {
  try {
    const result = (await call) as CallToolResult
    expect(result.isError).toBe(true)
    return texts(result)
  } catch (error) {
    return error instanceof Error ? error.message : String(error)
  }
}

/** Every property of a JSON schema, at any depth, as [path, schema]. */
function properties(schema: Record<string, unknown>, path = ''): [string, Record<string, unknown>][] {
  const found: [string, Record<string, unknown>][] = []
  const props = (schema.properties ?? {}) as Record<string, Record<string, unknown>>
  for (const [name, prop] of Object.entries(props)) {
    found.push([`${path}${name}`, prop], ...properties(prop, `${path}${name}.`))
  }
  const nested = [schema.items, ...((schema.anyOf ?? schema.oneOf ?? []) as unknown[])]
  for (const sub of nested) if (sub && typeof sub === 'object') found.push(...properties(sub as Record<string, unknown>, path))
  return found
}

describe('boxlite-mcp over stdio', () => {
  let transport: StdioClientTransport
  const client = new Client({ name: 'boxlite-mcp-test', version: '0.0.0' })
  let serverLog = ''
  let id = ''

  // A service on the host's loopback, which sandboxes reach only when created with network 'default'.
  let hostService: Server
  let hostPort = 0

  beforeAll(async () => {
    hostService = createServer((_, response) => response.end('host secret'))
    await new Promise<void>((resolve) => hostService.listen(0, '127.0.0.1', resolve))
    hostPort = (hostService.address() as AddressInfo).port
    if (!existsSync(bin)) throw new Error(`${bin} is missing: build the package first (pnpm --filter @boxlite/mcp build)`)
    transport = new StdioClientTransport({
      command: process.execPath,
      args: [bin],
      env: {
        ...(Object.fromEntries(Object.entries(process.env).filter(([, v]) => v !== undefined)) as Record<string, string>),
        BOXLITE_HOME: home,
        BOXLITE_INSECURE_REGISTRIES: REGISTRY,
        // python3 with matplotlib and numpy, built by scripts/test-images.sh.
        BOXLITE_MCP_IMAGE: `${REGISTRY}/code-interpreter:latest`,
      },
      stderr: 'pipe',
    })
    transport.stderr?.on('data', (chunk: Buffer) => {
      serverLog += chunk.toString()
    })
    await client.connect(transport)
  })

  afterAll(async () => {
    await client.close()
    hostService.close()
  })

  it('lists its tools, each argument described', async () => {
    expect(client.getServerVersion()).toMatchObject({ name: 'boxlite', version: expect.stringMatching(/^\d+\.\d+\.\d+/) })
    const { tools } = await client.listTools()
    expect(tools.map((t) => t.name).sort()).toEqual([
      'list_files',
      'publish_port',
      'read_file',
      'run_code',
      'run_command',
      'sandbox_create',
      'sandbox_list',
      'sandbox_remove',
      'write_file',
    ])
    for (const tool of tools) {
      expect(tool.description, tool.name).toBeTruthy()
      for (const [path, schema] of properties(tool.inputSchema)) {
        expect(schema.description, `${tool.name}: ${path}`).toEqual(expect.any(String))
      }
    }
  })

  it('creates a sandbox with a published port', async () => {
    const result = (await client.callTool({ name: 'sandbox_create', arguments: { name: 'main', ports: [{ guestPort: 8000 }] } }, undefined, slow)) as CallToolResult
    expect(result.isError, texts(result)).toBeFalsy()
    const created = result.structuredContent as { id: string; name: string; image: string; ports: { guestPort: number; address: string }[] }
    expect(created).toMatchObject({ name: 'main', image: `${REGISTRY}/code-interpreter:latest`, created: true })
    expect(created.ports).toEqual([{ guestPort: 8000, hostPort: expect.any(Number), address: expect.stringMatching(/^127\.0\.0\.1:\d+$/) }])
    id = created.id
    const port = (await client.callTool({ name: 'publish_port', arguments: { sandbox: id, guestPort: 8000 } })) as CallToolResult
    expect(port.structuredContent).toEqual(created.ports[0])
    const listed = (await client.callTool({ name: 'sandbox_list', arguments: {} })) as CallToolResult
    expect(listed.structuredContent).toEqual({ sandboxes: [{ id, name: 'main', image: created.image, status: 'running', keep: false }] })
  })

  it('runs a command; a non-zero exit is a result', async () => {
    const echo = (await client.callTool({ name: 'run_command', arguments: { sandbox: 'main', command: 'echo hi; echo oops >&2' } }, undefined, slow)) as CallToolResult
    expect(echo.isError).toBeFalsy()
    expect(echo.structuredContent).toEqual({ exitCode: 0, stdout: 'hi\n', stderr: 'oops\n', timedOut: false })
    expect(texts(echo)).toBe('exit code 0\nstdout:\nhi\n\nstderr:\noops\n')
    const failed = (await client.callTool({ name: 'run_command', arguments: { sandbox: id, command: 'cd /tmp && pwd && exit 3', env: { A: '1' } } }, undefined, slow)) as CallToolResult
    expect(failed.isError).toBeFalsy()
    expect(failed.structuredContent).toMatchObject({ exitCode: 3, stdout: '/tmp\n' })
  })

  it("keeps the host's own services out of reach by default", async () => {
    const url = `http://host.boxlite.internal:${hostPort}`
    const code = `import urllib.request\ntry:\n    outcome = urllib.request.urlopen('${url}', timeout=10).read()\nexcept OSError:\n    outcome = 'blocked'\noutcome`
    const result = (await client.callTool({ name: 'run_code', arguments: { sandbox: 'main', code } }, undefined, slow)) as CallToolResult
    expect(result.content).toEqual([{ type: 'text', text: "'blocked'" }])
  })

  it('runs code in a named context that keeps its variables', async () => {
    await client.callTool({ name: 'run_code', arguments: { sandbox: 'main', code: 'x = 2', context: 'calc' } }, undefined, slow)
    const answer = (await client.callTool({ name: 'run_code', arguments: { sandbox: 'main', code: 'x * 21', context: 'calc' } }, undefined, slow)) as CallToolResult
    expect(answer.isError).toBeFalsy()
    expect(answer.content).toEqual([{ type: 'text', text: '42' }])
    // Another context does not see it: the error comes back with isError, and its traceback.
    const other = (await client.callTool({ name: 'run_code', arguments: { sandbox: 'main', code: 'print("before")\nx', context: 'other' } }, undefined, slow)) as CallToolResult
    expect(other.isError).toBe(true)
    expect(texts(other)).toMatch(/^stdout:\nbefore\n\nNameError: name 'x' is not defined\n/)
  })

  it('returns a matplotlib figure as an image', async () => {
    const code = 'import numpy as np, matplotlib.pyplot as plt\nx = np.linspace(0, 6, 50)\nplt.plot(x, np.sin(x))'
    const result = (await client.callTool({ name: 'run_code', arguments: { sandbox: 'main', code } }, undefined, slow)) as CallToolResult
    expect(result.isError, texts(result)).toBeFalsy()
    const images = result.content.filter((c: Content) => c.type === 'image')
    expect(images).toEqual([{ type: 'image', mimeType: 'image/png', data: expect.stringMatching(PNG_BASE64) }])
  })

  it('writes and reads files, text and binary', async () => {
    const written = (await client.callTool({
      name: 'write_file',
      arguments: { sandbox: 'main', path: '/root/work/run.sh', content: '#!/bin/sh\necho ran\n', mode: '755' },
    })) as CallToolResult
    expect(written.isError, texts(written)).toBeFalsy()
    const read = (await client.callTool({ name: 'read_file', arguments: { sandbox: 'main', path: '/root/work/run.sh' } })) as CallToolResult
    expect(read.content).toEqual([{ type: 'text', text: '#!/bin/sh\necho ran\n' }])
    const ran = (await client.callTool({ name: 'run_command', arguments: { sandbox: 'main', command: '/root/work/run.sh' } }, undefined, slow)) as CallToolResult
    expect(ran.structuredContent).toMatchObject({ exitCode: 0, stdout: 'ran\n' })

    const bytes = Buffer.from([0, 255, 1, 128, 10])
    await client.callTool({ name: 'write_file', arguments: { sandbox: 'main', path: '/root/work/b.bin', content: bytes.toString('base64'), encoding: 'base64' } })
    const back = (await client.callTool({ name: 'read_file', arguments: { sandbox: 'main', path: '/root/work/b.bin', encoding: 'base64' } })) as CallToolResult
    expect(back.content).toEqual([{ type: 'text', text: bytes.toString('base64') }])

    const listed = (await client.callTool({ name: 'list_files', arguments: { sandbox: 'main', path: '/root/work' } })) as CallToolResult
    const { entries } = listed.structuredContent as { entries: { name: string; type: string; size: number; mode: string }[] }
    expect(entries.map(({ name, type, size, mode }) => ({ name, type, size, mode }))).toEqual([
      { name: 'b.bin', type: 'file', size: 5, mode: '644' },
      { name: 'run.sh', type: 'file', size: 19, mode: '755' },
    ])
    expect(await failure(client.callTool({ name: 'read_file', arguments: { sandbox: 'main', path: '/root/none' } }))).toMatch(/NOT_FOUND/)
    await client.callTool({ name: 'run_command', arguments: { sandbox: 'main', command: 'head -c 1048577 /dev/zero > /root/big' } }, undefined, slow)
    expect(await failure(client.callTool({ name: 'read_file', arguments: { sandbox: 'main', path: '/root/big' } }))).toMatch(
      /INVALID_ARGUMENT: \/root\/big has more than the 1048576 bytes read_file returns/,
    )
    expect((await client.callTool({ name: 'run_command', arguments: { sandbox: 'main', command: 'echo ok' } })).isError).toBeFalsy()
  })

  it('says how to publish a port that was not published at creation', async () => {
    const text = await failure(client.callTool({ name: 'publish_port', arguments: { sandbox: 'main', guestPort: 9999 } }))
    expect(text).toMatch(/port 9999 of sandbox main is not published \(it publishes 8000\)/)
    expect(text).toContain('sandbox_create ports: [{ guestPort: 9999 }]')
  })

  it('refuses invalid arguments and an unknown sandbox, and goes on answering', async () => {
    expect(await failure(client.callTool({ name: 'run_code', arguments: { sandbox: 'main' } }))).toMatch(/code/)
    expect(await failure(client.callTool({ name: 'run_command', arguments: { sandbox: 'main', command: 42 } }))).toMatch(/command/)
    expect(await failure(client.callTool({ name: 'sandbox_create', arguments: { memoryMib: 'lots' } }))).toMatch(/memoryMib/)
    expect(await failure(client.callTool({ name: 'write_file', arguments: { sandbox: 'main', path: '/x', content: '', mode: 'rwx' } }))).toMatch(/mode/)
    expect(await failure(client.callTool({ name: 'no_such_tool', arguments: {} }))).toMatch(/no_such_tool/)
    expect(await failure(client.callTool({ name: 'run_command', arguments: { sandbox: 'ghost', command: 'true' } }))).toMatch(
      /NOT_FOUND: no sandbox "ghost" \(this server has main\)/,
    )
    // A name already taken fails before anything boots.
    expect(await failure(client.callTool({ name: 'sandbox_create', arguments: { name: 'main' } }, undefined, slow))).toMatch(/ALREADY_EXISTS/)
    const listed = (await client.callTool({ name: 'sandbox_list', arguments: {} })) as CallToolResult
    expect((listed.structuredContent as { sandboxes: unknown[] }).sandboxes).toHaveLength(1)
  })

  it('removes a sandbox, even a kept one', async () => {
    const image = `${REGISTRY}/busybox:latest`
    const created = (await client.callTool({ name: 'sandbox_create', arguments: { image, name: 'spare', keep: true, network: 'default' } }, undefined, slow)) as CallToolResult
    expect(created.isError, texts(created)).toBeFalsy()
    // With network 'default' the host's services are reachable.
    const fetched = (await client.callTool({ name: 'run_command', arguments: { sandbox: 'spare', command: `wget -q -O - http://host.boxlite.internal:${hostPort}` } }, undefined, slow)) as CallToolResult
    expect(fetched.structuredContent).toMatchObject({ exitCode: 0, stdout: 'host secret' })
    const removed = (await client.callTool({ name: 'sandbox_remove', arguments: { sandbox: 'spare' } }, undefined, slow)) as CallToolResult
    expect(texts(removed)).toBe('removed sandbox spare')
    expect(await failure(client.callTool({ name: 'run_command', arguments: { sandbox: 'spare', command: 'true' } }))).toMatch(/no sandbox "spare"/)
  })

  it('exits when the client closes, removing its sandboxes', async () => {
    const pid = transport.pid
    expect(pid).toEqual(expect.any(Number))
    await client.close()
    // close() waits for the exit (up to 2 s, then signals): poll in case removal took longer.
    const deadline = Date.now() + 60_000
    while (alive(pid!) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200))
    expect(alive(pid!)).toBe(false)
    expect(serverLog).toContain('stdin closed: removing the sandboxes and exiting')
    expect(serverLog).toContain(`removed 1 sandbox(es): ${id}`)
    const runtime = new Runtime({ home })
    expect(await runtime.list()).toEqual([])
  })
})

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
