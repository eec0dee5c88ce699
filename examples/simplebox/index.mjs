// Runs `echo hi` in a micro-VM and prints its output.
// IMAGE picks the image (default: busybox from the registry at REGISTRY, e.g. 127.0.0.1:5000,
// which is reached over plain http); BOXLITE_HOME where boxes and images are kept.
import { SimpleBox } from '@boxlite/simple'

const registry = process.env.REGISTRY
const image = process.env.IMAGE ?? (registry ? `${registry}/busybox:latest` : 'busybox:latest')
const registries = registry ? [{ host: registry, insecure: true }] : []

const box = new SimpleBox({ image, registries })
try {
  const { exitCode, stdout, stderr } = await box.exec('echo', 'hi')
  process.stdout.write(stdout)
  process.stderr.write(stderr)
  process.exitCode = exitCode
} finally {
  await box.remove()
}
