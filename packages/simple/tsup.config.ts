import { defineConfig } from 'tsup'
import { base } from '../../tsup.base'

// The CodeBox driver (Python, run inside the box) is bundled as a string.
export default defineConfig({ ...base, loader: { '.py': 'text' } })
