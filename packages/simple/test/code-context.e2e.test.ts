import { afterAll, describe, expect, it } from 'vitest'
import { CODE_OUTPUT_LIMIT, CodeBox } from '../src/index'
import { REGISTRY, registries, tempHome } from '../../../test/fixtures'

// python3 with matplotlib and numpy, built from Debian packages by scripts/test-images.sh.
const image = `${REGISTRY}/code-interpreter:latest`
const home = await tempHome()
const PNG_BASE64 = /^iVBORw0KGgo/ // "\x89PNG\r\n\x1a\n"

// One box for the whole file: each case makes the contexts it needs.
describe('CodeBox contexts', () => {
  const box = new CodeBox({ image, home, registries, memoryMib: 512 })
  afterAll(() => box.remove())

  it('keeps variables, imports and the working directory from cell to cell', async () => {
    const context = await box.createContext()
    await expect(box.runCode('import os\nx = 41\nos.chdir("/tmp")', { context })).resolves.toEqual({
      results: [],
      stdout: '',
      stderr: '',
      timedOut: false,
    })
    const { results } = await box.runCode('x + 1', { context })
    expect(results).toEqual([{ data: { 'text/plain': '42' }, isMainResult: true }])
    const cwd = await box.runCode('os.getcwd()', { context: context.id })
    expect(cwd.results[0]?.data['text/plain']).toBe("'/tmp'")
  })

  it('streams stdout and stderr, of the interpreter and of its child processes', async () => {
    const seen: string[] = []
    const code = 'import os, sys\nprint("out")\nprint("err", file=sys.stderr)\nos.system("echo child")'
    const execution = await box.runCode(code, { onStdout: (t) => seen.push(`1:${t}`), onStderr: (t) => seen.push(`2:${t}`) })
    expect(execution.stdout).toBe('out\nchild\n')
    expect(execution.stderr).toBe('err\n')
    expect(seen.join('')).toContain('1:out\n')
    expect(seen.join('')).toContain('2:err\n')
    // os.system's exit status is the cell's value.
    expect(execution.results).toEqual([{ data: { 'text/plain': '0' }, isMainResult: true }])
  })

  it('reports an exception with its traceback, and the context goes on', async () => {
    const context = await box.createContext()
    await box.runCode('y = 5', { context })
    const { error, results } = await box.runCode('def f():\n    return 1 / 0\nf()', { context })
    expect(results).toEqual([])
    expect(error).toMatchObject({ name: 'ZeroDivisionError', value: 'division by zero' })
    expect(error?.traceback).toContain('return 1 / 0')
    expect(error?.traceback).not.toContain('_code_driver') // the driver's own frames are hidden
    expect((await box.runCode('y', { context })).results[0]?.data['text/plain']).toBe('5')
  })

  it('interrupts a cell that runs past timeoutMs and keeps the context', async () => {
    const context = await box.createContext()
    await box.runCode('z = "kept"', { context })
    const started = Date.now()
    const execution = await box.runCode('import time\nprint("before", flush=True)\ntime.sleep(600)', { context, timeoutMs: 1500 })
    expect(Date.now() - started).toBeLessThan(30_000)
    expect(execution).toMatchObject({ timedOut: true, stdout: 'before\n', error: { name: 'KeyboardInterrupt' } })
    expect((await box.runCode('z', { context })).results[0]?.data['text/plain']).toBe("'kept'")
  })

  it('kills an interpreter that ignores the interrupt; the context then says it died', async () => {
    const context = await box.createContext()
    const code = 'import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(600)'
    const execution = await box.runCode(code, { context, timeoutMs: 1000 })
    expect(execution).toMatchObject({ timedOut: true, error: { name: 'ContextDied' } })
    await expect(box.runCode('1', { context })).rejects.toMatchObject({ code: 'INVALID_STATE', message: expect.stringMatching(/createContext/) })
  })

  it('reports an interpreter that exits as a dead context, and a new one can be made', async () => {
    const context = await box.createContext()
    const execution = await box.runCode('import os\nos._exit(3)', { context })
    expect(execution.error).toMatchObject({ name: 'ContextDied', value: expect.stringMatching(/exited with code 3/) })
    expect(context.died).toMatch(/code 3/)
    await expect(box.runCode('1', { context })).rejects.toMatchObject({ code: 'INVALID_STATE' })
    const again = await box.createContext()
    expect((await box.runCode('1 + 1', { context: again })).results[0]?.data['text/plain']).toBe('2')
  })

  it('starts the default context again when its interpreter died, with a fresh state', async () => {
    await box.runCode('w = 1')
    expect((await box.runCode('import os\nos._exit(1)')).error?.name).toBe('ContextDied')
    expect((await box.runCode('"w" in globals()')).results[0]?.data['text/plain']).toBe('False')
  })

  it('keeps contexts apart, each with its cwd and env', async () => {
    const a = await box.createContext({ cwd: '/tmp', env: { WHO: 'a' } })
    const b = await box.createContext({ env: { WHO: 'b' } })
    await box.runCode('v = "only in a"', { context: a })
    const inB = await box.runCode('v', { context: b })
    expect(inB.error?.name).toBe('NameError')
    expect((await box.runCode('import os; (os.getcwd(), os.environ["WHO"])', { context: a })).results[0]?.data['text/plain']).toBe("('/tmp', 'a')")
    expect((await box.runCode('import os; os.environ["WHO"]', { context: b })).results[0]?.data['text/plain']).toBe("'b'")
    expect(box.listContexts().map((c) => c.id)).toEqual(expect.arrayContaining([a.id, b.id]))
    await box.removeContext(b)
    expect(box.listContexts().map((c) => c.id)).not.toContain(b.id)
    await expect(box.runCode('1', { context: b })).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  it('turns a matplotlib figure into an image/png result', async () => {
    const code = [
      'import numpy as np, matplotlib.pyplot as plt',
      'x = np.linspace(0, 6, 50)',
      'plt.plot(x, np.sin(x))',
      'plt.title("sine")',
    ].join('\n')
    const { results, error } = await box.runCode(code, { timeoutMs: 120_000 })
    expect(error).toBeUndefined()
    const images = results.filter((r) => r.data['image/png'])
    expect(images).toHaveLength(1)
    expect(images[0]?.data['image/png']).toMatch(PNG_BASE64)
    expect(Buffer.from(images[0]!.data['image/png']!, 'base64').length).toBeGreaterThan(5000)
    // The figure was closed: the next cell shows none again.
    expect((await box.runCode('1')).results).toHaveLength(1)
  })

  it('gives rich formats (_repr_html_, _repr_json_) and display() results', async () => {
    const code = [
      'class Table:',
      '    def _repr_html_(self): return "<table><tr><td>1</td></tr></table>"',
      '    def _repr_json_(self): return {"rows": [1]}',
      '    def __repr__(self): return "Table(1)"',
      'display("shown")',
      'Table()',
    ].join('\n')
    const { results } = await box.runCode(code)
    expect(results).toEqual([
      { data: { 'text/plain': "'shown'" }, isMainResult: false },
      {
        data: {
          'text/html': '<table><tr><td>1</td></tr></table>',
          'application/json': '{"rows":[1]}',
          'text/plain': 'Table(1)',
        },
        isMainResult: true,
      },
    ])
  })

  it('truncates a huge output with a marker instead of keeping it all', async () => {
    const { stdout } = await box.runCode('print("y" * 5_000_000)', { timeoutMs: 120_000 })
    expect(stdout.length).toBeLessThan(CODE_OUTPUT_LIMIT + 4096)
    expect(stdout).toMatch(/\[output truncated: \d+ more bytes of stdout were dropped\]\n$/)
    expect((await box.runCode('2 + 2')).results[0]?.data['text/plain']).toBe('4')
  })

  it('refuses bad arguments with errors that name them', async () => {
    await expect(box.runCode('1', { context: 'no-such-context' })).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringMatching(/no-such-context/) })
    await expect(box.runCode('1', { timeoutMs: -1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/timeoutMs/) })
    // @ts-expect-error: only python contexts
    await expect(box.createContext({ language: 'ruby' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/language/) })
  })

  it('runs JavaScript in a node context: state, console output, values, errors and interrupts', async () => {
    const context = await box.createContext({ language: 'javascript', env: { WHO: 'js' } })
    expect(context.language).toBe('javascript')
    await box.runCode('let x = 41; const twice = (n) => n * 2', { context })
    const value = await box.runCode('console.log("hi", process.env.WHO); console.error("err"); x + 1', { context })
    expect(value).toMatchObject({ stdout: 'hi js\n', stderr: 'err\n', results: [{ data: { 'text/plain': '42' }, isMainResult: true }] })
    const object = await box.runCode('Promise.resolve({ k: [twice(1), 3] })', { context })
    expect(object.results[0]?.data).toEqual({ 'text/plain': '{ k: [ 2, 3 ] }', 'application/json': '{"k":[2,3]}' })
    const thrown = await box.runCode('null.boom', { context })
    expect(thrown.error).toMatchObject({ name: 'TypeError' })
    expect(thrown.error?.traceback).toContain('<cell')
    // A loop that never yields, then a promise that never settles: both interrupted, state kept.
    for (const code of ['while (true) {}', 'new Promise(() => {})']) {
      const stuck = await box.runCode(code, { context, timeoutMs: 1500 })
      expect(stuck).toMatchObject({ timedOut: true, error: { name: 'KeyboardInterrupt' } })
    }
    expect((await box.runCode('x', { context })).results[0]?.data['text/plain']).toBe('41')
  })

  it('runs cells of one context one after another', async () => {
    const context = await box.createContext()
    await box.runCode('n = 0', { context })
    await Promise.all(Array.from({ length: 5 }, () => box.runCode('n += 1', { context })))
    expect((await box.runCode('n', { context })).results[0]?.data['text/plain']).toBe('5')
  })
})
