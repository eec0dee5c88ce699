// An LLM agent whose tools run in a BoxLite box: `run_python` (one Python context, so variables
// last from call to call) and `shell`. The model is any OpenAI-compatible chat API: OPENAI_BASE_URL,
// OPENAI_API_KEY and OPENAI_MODEL. Files the agent makes land in OUTPUT_DIR (default ./output),
// shared with the box as /output. The task is the command line, else DEFAULT_TASK; the final
// answer goes to stdout, the tool calls to stderr.
// BOXLITE_IMAGE picks the image (default python:slim; registries over plain http are named in
// BOXLITE_INSECURE_REGISTRIES), BOXLITE_HOME where boxes and images are kept, MAX_STEPS how many
// model calls the agent may make (default 10).
import { existsSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { CodeBox, DEFAULT_CODE_IMAGE } from '@boxlite/simple'
import OpenAI from 'openai'

const DEFAULT_TASK = 'plot sin(x) and save it as sine.png, then tell me the mean of sin over 0..2pi'
const GUEST_OUTPUT = '/output'
// A cold matplotlib import builds its font cache, which takes a while in a small VM.
const TOOL_TIMEOUT_MS = 180_000
// Characters of each stream sent back to the model: enough to read, not enough to flood its context.
const TOOL_OUTPUT_LIMIT = 8_000

const model = process.env.OPENAI_MODEL
if (!model) {
  console.error('set OPENAI_MODEL (and OPENAI_BASE_URL, OPENAI_API_KEY): see README.md')
  process.exit(2)
}
const task = process.argv.slice(2).join(' ') || DEFAULT_TASK
const maxSteps = Number(process.env.MAX_STEPS ?? 10)
const outputDir = resolve(process.env.OUTPUT_DIR ?? 'output')
await mkdir(outputDir, { recursive: true })

const tools = [
  {
    type: 'function',
    function: {
      name: 'run_python',
      description:
        'Runs Python code in a persistent interpreter (variables and imports last between calls). ' +
        'Returns stdout, stderr, the value of the last expression and any exception. ' +
        `Figures left open are saved as PNG files in ${GUEST_OUTPUT}.`,
      parameters: {
        type: 'object',
        properties: { code: { type: 'string', description: 'The Python code to run' } },
        required: ['code'],
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'shell',
      description: `Runs a command with sh -c in ${GUEST_OUTPUT}; returns its exit code, stdout and stderr.`,
      parameters: {
        type: 'object',
        properties: { command: { type: 'string', description: 'The shell command' } },
        required: ['command'],
      },
    },
  },
]

const system =
  'You solve tasks by running code in a Linux sandbox with the tools run_python and shell. ' +
  `Both start in ${GUEST_OUTPUT}: save every file the user should get there. ` +
  'When the task is done, answer in plain text without calling a tool.'

const client = new OpenAI() // reads OPENAI_BASE_URL and OPENAI_API_KEY
const box = new CodeBox({
  image: process.env.BOXLITE_IMAGE ?? DEFAULT_CODE_IMAGE,
  volumes: [{ hostPath: outputDir, guestPath: GUEST_OUTPUT }],
})
let context // the run_python interpreter, started again if it dies
let figures = 0

try {
  context = await box.createContext({ cwd: GUEST_OUTPUT })
  const runTool = { run_python: ({ code }) => runPython(code), shell: ({ command }) => shell(command) }
  const messages = [
    { role: 'system', content: system },
    { role: 'user', content: task },
  ]
  let answer
  for (let step = 0; step < maxSteps; step++) {
    const { choices } = await client.chat.completions.create({ model, messages, tools })
    const { content, tool_calls: calls } = choices[0].message
    if (!calls?.length) {
      answer = content ?? ''
      break
    }
    messages.push({ role: 'assistant', content, tool_calls: calls })
    for (const call of calls) {
      const { name, arguments: args } = call.function
      console.error(`> ${name} ${args}`)
      let result
      try {
        result = Object.hasOwn(runTool, name) ? await runTool[name](JSON.parse(args)) : { error: `no tool named ${name}` }
      } catch (error) {
        // Arguments that are not JSON, or a box error: the model may do better on its next step.
        result = { error: String(error) }
      }
      messages.push({ role: 'tool', tool_call_id: call.id, content: JSON.stringify(result) })
    }
  }
  if (answer === undefined) {
    console.error(`no answer after ${maxSteps} steps (MAX_STEPS)`)
    process.exitCode = 1
  } else {
    console.log(answer)
  }
} finally {
  await box.remove()
}

async function runPython(code) {
  let restarted = false
  if (context.died !== undefined) {
    context = await box.createContext({ cwd: GUEST_OUTPUT })
    restarted = true
  }
  const { stdout, stderr, results, error, timedOut } = await box.runCode(code, { context, timeoutMs: TOOL_TIMEOUT_MS })
  const values = []
  const images = []
  for (const { data } of results) {
    if (data['image/png']) {
      images.push(await saveFigure(Buffer.from(data['image/png'], 'base64')))
    } else if (data['text/plain'] !== undefined) {
      values.push(clip(data['text/plain']))
    }
  }
  return {
    ...(restarted && { note: 'the previous interpreter had ended: this one started with no variables' }),
    stdout: clip(stdout),
    stderr: clip(stderr),
    results: values,
    ...(images.length && { images }),
    ...(error && { error: clip(`${error.name}: ${error.value}\n${error.traceback}`) }),
    ...(timedOut && { timedOut }),
  }
}

async function shell(command) {
  const { exitCode, stdout, stderr, timedOut } = await box.exec('sh', ['-c', command], {
    cwd: GUEST_OUTPUT,
    timeoutMs: TOOL_TIMEOUT_MS,
  })
  return { exitCode, stdout: clip(stdout), stderr: clip(stderr), ...(timedOut && { timedOut }) }
}

/** Writes a figure into the output folder under a name no file has yet; returns its path in the box. */
async function saveFigure(png) {
  let name
  do name = `figure-${++figures}.png`
  while (existsSync(join(outputDir, name)))
  await writeFile(join(outputDir, name), png)
  return `${GUEST_OUTPUT}/${name}`
}

function clip(text) {
  return text.length > TOOL_OUTPUT_LIMIT ? `${text.slice(0, TOOL_OUTPUT_LIMIT)}\n[${text.length - TOOL_OUTPUT_LIMIT} more characters cut]` : text
}
