// The npm packages as users get them: `pnpm -r pack` tarballs (addon and guest assets included)
// installed with npm into an empty project, away from this repo and from the build cache.
import { execFileSync } from 'node:child_process'
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { REGISTRY, tempHome } from './fixtures'

const root = join(import.meta.dirname, '..')
let project: string
let env: NodeJS.ProcessEnv

beforeAll(async () => {
  const work = await tempHome()
  const packs = join(work, 'packs')
  project = join(work, 'project')
  mkdirSync(project)
  execFileSync('pnpm', ['-r', '--filter', './packages/*', '--filter', './bindings/node', '--filter', './bindings/node/npm/*', 'pack', '--pack-destination', packs], {
    cwd: root,
    stdio: 'pipe',
  })
  const tarballs = readdirSync(packs).map((f) => join(packs, f))
  expect(tarballs.map((t) => t.split('/').pop()).sort()).toEqual([
    'boxlite-core-0.1.0.tgz',
    'boxlite-mcp-0.1.0.tgz',
    'boxlite-native-0.1.0.tgz',
    'boxlite-native-linux-x64-gnu-0.1.0.tgz',
    'boxlite-simple-0.1.0.tgz',
  ])
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'packaging-test', private: true, type: 'module' }))
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...tarballs], { cwd: project, stdio: 'pipe' })
  copyFileSync(join(root, 'examples', 'simplebox', 'index.mjs'), join(project, 'index.mjs'))
  // No way back to the repo's build cache: the guest assets must come from the installed package.
  const { BOXLITE_ASSETS_DIR: _unused, ...rest } = process.env
  const emptyCache = join(work, 'empty-cache')
  mkdirSync(emptyCache)
  env = { ...rest, REGISTRY, XDG_CACHE_HOME: emptyCache, BOXLITE_HOME: join(work, 'home') }
}, 300_000)

describe('packed npm tarballs', () => {
  it('install the boxlite-mcp bin, which answers an MCP client over stdio', () => {
    writeFileSync(
      join(project, 'mcp-client.mjs'),
      `import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
const client = new Client({ name: 'packaging-test', version: '1.0.0' })
await client.connect(new StdioClientTransport({ command: 'node_modules/.bin/boxlite-mcp', env: process.env }))
console.log((await client.listTools()).tools.map((t) => t.name).sort().join(' '))
await client.close()
`,
    )
    const out = execFileSync('node', ['mcp-client.mjs'], { cwd: project, env, encoding: 'utf8' })
    expect(out.trim().split(' ')).toEqual(expect.arrayContaining(['run_code', 'run_command', 'sandbox_create', 'sandbox_list', 'sandbox_remove']))
  })

  it('run the SimpleBox example (ESM) and leave no box behind', () => {
    const out = execFileSync('node', ['index.mjs'], { cwd: project, env, encoding: 'utf8' })
    expect(out).toBe('hi\n')
    expect(readdirSync(join(env.BOXLITE_HOME!, 'boxes'))).toEqual([])
  })

  it('type-check a TypeScript user of both packages (NodeNext resolution, strict)', () => {
    writeFileSync(
      join(project, 'user.ts'),
      `import { Runtime, BoxliteError, type ExitResult } from '@boxlite/core'
import { SimpleBox, run } from '@boxlite/simple'
export async function main(): Promise<ExitResult> {
  await using box = new SimpleBox({ image: 'busybox:latest', memoryMib: 256 })
  const { exitCode, stdout }: { exitCode: number; stdout: string } = await box.exec('echo', 'hi')
  await run('busybox:latest', 'true')
  const rt = new Runtime({ registries: [{ host: 'localhost:5000', insecure: true }] })
  const b = await rt.create({ image: 'busybox:latest', signal: AbortSignal.timeout(1000) })
  const ex = await b.exec('cat', [], { timeoutMs: exitCode + stdout.length })
  for await (const chunk of ex.stdout) chunk satisfies Buffer
  try { return await ex.wait() } catch (e) { throw e instanceof BoxliteError ? new Error(e.code) : e }
}
`,
    )
    writeFileSync(
      join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { module: 'nodenext', target: 'es2022', lib: ['es2022', 'esnext.disposable'], strict: true, noEmit: true, types: ['node'], typeRoots: [join(root, 'node_modules', '@types')] },
        files: ['user.ts'],
      }),
    )
    execFileSync(join(root, 'node_modules', '.bin', 'tsc'), ['-p', project], { cwd: project, encoding: 'utf8' })
  })

  it('load through require (CJS) and name a missing image clearly', () => {
    const script = `
      const { run } = require('@boxlite/simple')
      run({ image: process.env.REGISTRY + '/no-such-image:v1', registries: [{ host: process.env.REGISTRY, insecure: true }] }, 'true')
        .then(() => { console.log('unexpected success'); process.exit(1) })
        .catch((e) => console.log(e.name, e.code))`
    const out = execFileSync('node', ['-e', script], { cwd: project, env, encoding: 'utf8' })
    expect(out).toBe('BoxliteError IMAGE\n')
  })
})
