import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

const fromRoot = (path: string) => fileURLToPath(new URL(path, import.meta.url))

// Tests import the packages' sources, so they run without a build.
const alias = {
  '@boxlite/core': fromRoot('./packages/boxlite/src/index.ts'),
  '@boxlite/simple': fromRoot('./packages/simple/src/index.ts'),
}

// Python sources imported by the packages (the CodeBox driver) are strings, as tsup's text loader makes them.
const pythonAsText = {
  name: 'python-as-text',
  transform(source: string, id: string) {
    return id.endsWith('.py') ? { code: `export default ${JSON.stringify(source)}`, map: null } : undefined
  },
}

export default defineConfig({
  test: {
    projects: [
      {
        resolve: { alias },
        plugins: [pythonAsText],
        test: {
          name: 'unit',
          include: ['packages/*/src/**/*.test.ts'],
        },
      },
      {
        // Real VMs (software emulation in CI): one file at a time, generous timeouts.
        resolve: { alias },
        plugins: [pythonAsText],
        test: {
          name: 'e2e',
          include: ['packages/*/test/**/*.e2e.test.ts', 'examples/**/*.e2e.test.ts'],
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 300_000,
        },
      },
      {
        // The packed npm tarballs installed into an empty project (needs every package built).
        test: {
          name: 'packaging',
          include: ['test/**/*.e2e.test.ts'],
          testTimeout: 180_000,
          hookTimeout: 300_000,
        },
      },
    ],
  },
})
