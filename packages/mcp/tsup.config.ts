import { defineConfig } from 'tsup'
import { base } from '../../tsup.base'

// The library as every package builds it, and the `boxlite-mcp` bin (ESM only, with a shebang).
// The two builds run at once: the library's clean spares the bin's files.
const bin = ['cli.js', 'cli.js.map']

export default defineConfig([
  { ...base, clean: bin.map((file) => `!${file}`) },
  { ...base, entry: ['src/cli.ts'], format: ['esm'], dts: false, clean: false, banner: { js: '#!/usr/bin/env node' } },
])
