import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { tempHome } from '../../test/fixtures'

const run = promisify(execFile)
const home = await tempHome()

// The examples import the packages as users do, from their builds.
const builds = ['../../packages/simple/dist/index.js', '../../packages/boxlite/dist/index.js']
for (const build of builds) {
  if (!existsSync(fileURLToPath(new URL(build, import.meta.url)))) {
    throw new Error(`${build} is missing: run \`pnpm build\` before the examples' tests`)
  }
}

describe('the detached example', () => {
  it('creates its box on the first run, reuses it on the next, and removes it when asked', async () => {
    const example = (...args: string[]) =>
      run(process.execPath, ['index.mjs', ...args], {
        cwd: fileURLToPath(new URL('./', import.meta.url)),
        env: { ...process.env, BOXLITE_HOME: home },
      }).then((r) => r.stdout)
    expect(await example()).toBe('created detached-example: run 1, 1 commands since it booted\n')
    expect(await example()).toBe('reused detached-example: run 2, 2 commands since it booted\n')
    expect(await example('--remove')).toBe('removed detached-example\n')
  })
})
