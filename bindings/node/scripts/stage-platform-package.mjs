// Puts the built addon, the guest assets (vmlinux, initramfs.cpio), the box supervisor
// (boxlite-shim) and the box network helper (boxlite-net) into the platform package,
// where the runtime finds the assets beside the addon (boxlite-guest/) once installed from npm.
import { chmodSync, copyFileSync, mkdirSync, existsSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = join(dirname(fileURLToPath(import.meta.url)), '..')
const addon = 'boxlite.linux-x64-gnu.node'
const platformDir = join(here, 'npm', 'linux-x64-gnu')
const cache = process.env.XDG_CACHE_HOME || join(homedir(), '.cache')
const assets = process.env.BOXLITE_ASSETS_DIR || join(cache, 'boxlite', 'assets')

const assetFiles = ['vmlinux', 'initramfs.cpio', 'boxlite-net']
for (const file of assetFiles) {
  if (!existsSync(join(assets, file))) {
    console.error(`stage-platform-package: ${join(assets, file)} is missing: run scripts/setup.sh first`)
    process.exit(1)
  }
}
copyFileSync(join(here, addon), join(platformDir, addon))
mkdirSync(join(platformDir, 'boxlite-guest'), { recursive: true })
for (const file of assetFiles) {
  copyFileSync(join(assets, file), join(platformDir, 'boxlite-guest', file))
}
chmodSync(join(platformDir, 'boxlite-guest', 'boxlite-net'), 0o755)
// The box supervisor of the addon's build: debug beside a debug addon, else the `shim` profile's
// (release built for size, see docs/process-model.md). The package's `bin` entry keeps its
// executable bit through pack and install.
const profile = process.argv[2] === 'debug' ? 'debug' : 'shim'
const target = process.env.CARGO_TARGET_DIR || join(here, '..', '..', 'target')
const shim = join(target, profile, 'boxlite-shim')
if (!existsSync(shim)) {
  console.error(`stage-platform-package: ${shim} is missing: run cargo build ${profile === 'shim' ? '--profile shim ' : ''}-p boxlite-shim`)
  process.exit(1)
}
copyFileSync(shim, join(platformDir, 'boxlite-guest', 'boxlite-shim'))
chmodSync(join(platformDir, 'boxlite-guest', 'boxlite-shim'), 0o755)
