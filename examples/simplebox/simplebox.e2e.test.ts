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

describe('the simplebox example', () => {
  it('prints hi', async () => {
    const cwd = fileURLToPath(new URL('./', import.meta.url))
    const { stdout } = await run(process.execPath, ['index.mjs'], {
      cwd,
      env: { ...process.env, BOXLITE_HOME: home },
    })
    expect(stdout).toBe('hi\n')
  })
})
