// A box that outlives this program. The first run creates and boots the detached box
// "detached-example"; every later run, from any process on the same home, finds it by name and
// uses it as it is (its disk keeps a count of the runs). `node index.mjs --remove` removes it.
// IMAGE picks the image (default: busybox from the registry at REGISTRY, e.g. 127.0.0.1:5000,
// reached over plain http); BOXLITE_HOME where boxes and images are kept.
import { Runtime, SimpleBox } from '@boxlite/simple'

const name = 'detached-example'
const registry = process.env.REGISTRY
const image = process.env.IMAGE ?? (registry ? `${registry}/busybox:latest` : 'busybox:latest')
const registries = registry ? [{ host: registry, insecure: true }] : []

if (process.argv[2] === '--remove') {
  await new Runtime({ registries }).remove(name, true)
  console.log(`removed ${name}`)
} else {
  const box = new SimpleBox({ image, registries, name, reuseExisting: true, detach: true })
  const { stdout } = await box.exec('sh', '-c', 'echo run >> /root/runs; wc -l < /root/runs')
  const { commandsExecuted } = await box.metrics()
  console.log(`${box.created ? 'created' : 'reused'} ${name}: run ${stdout.trim()}, ${commandsExecuted} commands since it booted`)
}
