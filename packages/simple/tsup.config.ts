import { readFile } from 'node:fs/promises'
import { defineConfig } from 'tsup'
import { base } from '../../tsup.base'

// The CodeBox drivers (Python and JavaScript programs run inside the box) are bundled as strings.
export default defineConfig({
  ...base,
  esbuildPlugins: [
    {
      name: 'code-drivers-as-text',
      setup(build) {
        build.onLoad({ filter: /_code_driver\.(py|js)$/ }, async (args) => ({ contents: await readFile(args.path, 'utf8'), loader: 'text' }))
      },
    },
  ],
})
