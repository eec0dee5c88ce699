// CodeBox contexts: a warm `1+1` round trip in a context and the time to the first result in a new
// context, against floors measured on the same box in the same run: a warm exec of `true` (the
// channel and fork+exec) and `python3 -c 1+1` (a fresh interpreter per call, what CodeBox.run does).
// Usage: node packages/simple/bench/code-context.mjs REGISTRY OUT.json   (scripts/bench.sh runs it; @boxlite/simple resolves to this package's build)
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CodeBox } from '@boxlite/simple'

const [registry, outPath] = process.argv.slice(2)
if (!registry || !outPath) {
  console.error('usage: node packages/simple/bench/code-context.mjs REGISTRY OUT.json')
  process.exit(2)
}
const WARM_RUNS = 100
const NEW_CONTEXTS = 10
const FLOOR_RUNS = 30

const percentile = (sorted, p) => sorted[Math.round((sorted.length - 1) * p)]
async function timed(runs, call) {
  const samples = []
  for (let i = 0; i < runs; i++) {
    const t = process.hrtime.bigint()
    await call()
    samples.push(Number(process.hrtime.bigint() - t) / 1e6)
  }
  return samples.sort((a, b) => a - b)
}

const home = mkdtempSync(join(tmpdir(), 'bxcode-'))
const box = new CodeBox({ image: `${registry}/code-interpreter:latest`, home, registries: [{ host: registry, insecure: true }] })
try {
  const context = await box.createContext()
  const check = await box.runCode('1+1', { context })
  if (check.results[0]?.data['text/plain'] !== '2') throw new Error(`1+1 gave ${JSON.stringify(check)}`)
  await timed(10, () => box.runCode('1+1', { context })) // warm-up
  const warm = await timed(WARM_RUNS, () => box.runCode('1+1', { context }))
  const fresh = await timed(NEW_CONTEXTS, async () => {
    const c = await box.createContext()
    await box.runCode('1+1', { context: c })
    await box.removeContext(c)
  })
  const execTrue = await timed(FLOOR_RUNS, () => box.exec('true'))
  const execPython = await timed(FLOOR_RUNS, () => box.exec('python3', '-c', '1+1'))
  const r = (x) => Math.round(x * 100) / 100
  const results = {
    warm_run_code_p50_ms: r(percentile(warm, 0.5)),
    warm_run_code_p95_ms: r(percentile(warm, 0.95)),
    new_context_first_result_p50_ms: r(percentile(fresh, 0.5)),
    floor_exec_true_p50_ms: r(percentile(execTrue, 0.5)),
    floor_exec_python_p50_ms: r(percentile(execPython, 0.5)),
    warm_run_code_vs_exec_true: r(percentile(warm, 0.5) / percentile(execTrue, 0.5)),
    new_context_vs_exec_python: r(percentile(fresh, 0.5) / percentile(execPython, 0.5)),
  }
  writeFileSync(outPath, JSON.stringify(results, null, 2) + '\n')
  console.log('metric                             value')
  for (const [k, v] of Object.entries(results)) console.log(`${k.padEnd(34)} ${v}`)
  console.log(`wrote ${outPath}`)
} finally {
  await box.remove()
  rmSync(home, { recursive: true, force: true })
}
