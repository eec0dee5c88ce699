import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Runtime } from '@boxlite/simple'
import { afterAll, describe, expect, it } from 'vitest'
import { REGISTRY, tempHome } from '../../test/fixtures'

const run = promisify(execFile)
const home = await tempHome()
const outputDir = await mkdtemp(join(tmpdir(), 'boxlite-agent-output-'))
afterAll(() => rm(outputDir, { recursive: true, force: true }))

// The examples import the packages as users do, from their builds.
const builds = ['../../packages/simple/dist/index.js', '../../packages/boxlite/dist/index.js']
for (const build of builds) {
  if (!existsSync(fileURLToPath(new URL(build, import.meta.url)))) {
    throw new Error(`${build} is missing: run \`pnpm build\` before the examples' tests`)
  }
}

interface ToolCall {
  id: string
  type: 'function'
  function: { name: string; arguments: string }
}
interface Message {
  role: string
  content: string | null
  tool_calls?: ToolCall[]
  tool_call_id?: string
}
interface ChatRequest {
  model: string
  messages: Message[]
  tools: { function: { name: string } }[]
}

const PLOT = [
  'import numpy as np, matplotlib.pyplot as plt',
  'x = np.linspace(0, 2 * np.pi, 1001)',
  'plt.plot(x, np.sin(x))',
  'plt.savefig("/output/sine.png")',
  'print(f"mean={np.sin(x).mean():.6f} points={x.size}")',
].join('\n')

/** The content of the tool message answering `callId` in a request, parsed. */
function toolResult(request: ChatRequest | undefined, callId: string): Record<string, unknown> {
  const message = request?.messages.find((m) => m.role === 'tool' && m.tool_call_id === callId)
  if (!message?.content) throw new Error(`the request carries no result for ${callId}`)
  return JSON.parse(message.content) as Record<string, unknown>
}

/**
 * An OpenAI-compatible chat endpoint that plays a fixed script: a run_python call, then a shell
 * call, then an answer quoting what the tools returned. Records every request.
 */
function scriptedModel() {
  const requests: { headers: IncomingHttpHeaders; body: ChatRequest }[] = []
  const call = (id: string, name: string, args: object) => ({
    role: 'assistant',
    content: null,
    tool_calls: [{ id, type: 'function', function: { name, arguments: JSON.stringify(args) } }],
  })
  const replies: ((request: ChatRequest) => object)[] = [
    () => call('call_python', 'run_python', { code: PLOT }),
    () => call('call_shell', 'shell', { command: 'ls /output' }),
    (request) => {
      const printed = String(toolResult(request, 'call_python').stdout).trim()
      const listed = String(toolResult(request, 'call_shell').stdout).trim().split('\n').join(', ')
      return { role: 'assistant', content: `Python printed ${printed}; /output holds ${listed}.` }
    },
  ]
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (chunk: Buffer) => (body += chunk.toString()))
    req.on('end', () => {
      const reply = replies[requests.length]
      if (req.method !== 'POST' || req.url !== '/v1/chat/completions' || !reply) {
        res.writeHead(404).end()
        return
      }
      const request = JSON.parse(body) as ChatRequest
      requests.push({ headers: req.headers, body: request })
      const message = reply(request) as Message
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          id: `chatcmpl-${requests.length}`,
          object: 'chat.completion',
          created: Math.floor(Date.now() / 1000),
          model: request.model,
          choices: [{ index: 0, message, finish_reason: message.tool_calls ? 'tool_calls' : 'stop' }],
          usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 },
        }),
      )
    })
  })
  return { server, requests }
}

describe('the agent example', () => {
  it('runs the tool calls of the model in a box and prints its answer', async () => {
    const { server, requests } = scriptedModel()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as AddressInfo

    const { stdout, stderr } = await run(process.execPath, ['index.mjs'], {
      cwd: fileURLToPath(new URL('./', import.meta.url)),
      env: {
        ...process.env,
        OPENAI_BASE_URL: `http://127.0.0.1:${port}/v1`,
        OPENAI_API_KEY: 'test-key',
        OPENAI_MODEL: 'scripted',
        BOXLITE_IMAGE: `${REGISTRY}/code-interpreter:latest`,
        BOXLITE_INSECURE_REGISTRIES: REGISTRY,
        BOXLITE_HOME: home,
        OUTPUT_DIR: outputDir,
      },
    }).finally(() => server.close())

    // What the box gave went back to the model, which quoted it.
    expect(requests).toHaveLength(3)
    const [first, second, third] = requests.map((r) => r.body)
    expect(requests[0]?.headers.authorization).toBe('Bearer test-key')
    expect(first?.model).toBe('scripted')
    expect(first?.tools.map((t) => t.function.name)).toEqual(['run_python', 'shell'])
    expect(first?.messages.at(-1)).toMatchObject({ role: 'user', content: expect.stringMatching(/sine\.png/) })
    const python = toolResult(second, 'call_python')
    expect(python).toMatchObject({ stdout: expect.stringMatching(/^mean=-?0\.000000 points=1001\n$/), stderr: '' })
    expect(python.error).toBeUndefined()
    // The figure left open came back as an image result, saved next to the one the code wrote.
    expect(python.images).toEqual(['/output/figure-1.png'])
    expect(toolResult(third, 'call_shell')).toEqual({ exitCode: 0, stdout: 'figure-1.png\nsine.png\n', stderr: '' })
    expect(stdout).toMatch(/^Python printed mean=-?0\.000000 points=1001; \/output holds figure-1\.png, sine\.png\.\n$/)

    // Progress on stderr: one line per tool call.
    expect(stderr.split('\n').filter(Boolean).map((line) => line.split(' ')[1])).toEqual(['run_python', 'shell'])

    // The box wrote into the host folder through the volume.
    for (const file of ['sine.png', 'figure-1.png']) {
      const png = await readFile(join(outputDir, file))
      expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))
    }
    // The agent's one box is gone.
    expect(await new Runtime({ home }).list()).toEqual([])
  }, 300_000)
})
