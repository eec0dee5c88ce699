// The SDK's own cost on a warm exec: @boxlite/core's round trip (start `true`, wait) minus the Rust
// runtime's, each on a running busybox box, measured in alternating rounds so drift hits both.
// Usage: node packages/boxlite/bench/sdk-overhead.mjs REGISTRY BENCH_BINARY OUT.json   (scripts/bench.sh runs it; @boxlite/core resolves to this package's build)
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Runtime } from '@boxlite/core'

const [registry, benchBinary, outPath] = process.argv.slice(2)
if (!registry || !benchBinary || !outPath) {
  console.error('usage: node packages/boxlite/bench/sdk-overhead.mjs REGISTRY BENCH_BINARY OUT.json')
  process.exit(2)
}
const ROUNDS = 3
const RUNS = 100

const percentile = (sorted, p) => sorted[Math.round((sorted.length - 1) * p)]
const ms = (ns) => Math.round(Number(ns) / 1e3) / 1e3

async function nodeRound(box) {
  const samples = []
  for (let i = 0; i < RUNS + 10; i++) {
    const t = process.hrtime.bigint()
    await (await box.exec('true')).wait()
    if (i >= 10) samples.push(ms(process.hrtime.bigint() - t))
  }
  return samples
}

const home = mkdtempSync(join(tmpdir(), 'bxsdk-'))
const rt = new Runtime({ home, registries: [{ host: registry, insecure: true }] })
const box = await rt.create({ image: `${registry}/busybox:latest` })
await box.start()
const rustP50s = []
const nodeSamples = []
for (let round = 0; round < ROUNDS; round++) {
  const rust = JSON.parse(execFileSync(benchBinary, ['warm-exec', registry, String(RUNS)], { encoding: 'utf8' }))
  rustP50s.push(rust.p50)
  nodeSamples.push(...(await nodeRound(box)))
}
await box.remove({ force: true })
rmSync(home, { recursive: true, force: true })

nodeSamples.sort((a, b) => a - b)
rustP50s.sort((a, b) => a - b)
const rustP50 = percentile(rustP50s, 0.5)
const nodeP50 = percentile(nodeSamples, 0.5)
const results = {
  rust_warm_exec_p50_ms: rustP50,
  node_warm_exec_p50_ms: nodeP50,
  node_warm_exec_p95_ms: percentile(nodeSamples, 0.95),
  sdk_overhead_p50_ms: Math.round((nodeP50 - rustP50) * 1000) / 1000,
  runs: RUNS * ROUNDS,
}
writeFileSync(outPath, JSON.stringify(results, null, 2) + '\n')
console.log('metric                       value')
for (const [k, v] of Object.entries(results)) console.log(`${k.padEnd(28)} ${v}`)
console.log(`wrote ${outPath}`)
