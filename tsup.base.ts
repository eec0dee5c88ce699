import type { Options } from 'tsup'

// Shared by every TS package: `tsup.config.ts` is `export default defineConfig(base)`, plus overrides.
// ESM (.js) and CJS (.cjs) from src/index.ts, each with its own types (.d.ts / .d.cts).
export const base: Options = {
  entry: ['src/index.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  platform: 'node',
  // ES2022 lowers `using` / `await using`, which Node 20 cannot parse.
  target: 'es2022',
}
