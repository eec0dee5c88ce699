import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

const fromRoot = (path: string) => fileURLToPath(new URL(path, import.meta.url))

// Tests import the packages' sources, so they run without a build.
const alias = {
  '@boxlite/core': fromRoot('./packages/boxlite/src/index.ts'),
  '@boxlite/simple': fromRoot('./packages/simple/src/index.ts'),
}

// The CodeBox drivers (programs run inside boxes) are imported as strings, as tsup bundles them.
const driversAsText = {
  name: 'code-drivers-as-text',
  enforce: 'pre' as const,
  transform(source: string, id: string) {
    return /_code_driver\.(py|js)$/.test(id) ? { code: `export default ${JSON.stringify(source)}`, map: null } : undefined
  },
}

export default defineConfig({
  test: {
    projects: [
      {
        resolve: { alias },
        plugins: [driversAsText],
        test: {
          name: 'unit',
          include: ['packages/*/src/**/*.test.ts'],
        },
      },
      {
        // Real VMs (software emulation in CI): one file at a time, generous timeouts.
        resolve: { alias },
        plugins: [driversAsText],
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
