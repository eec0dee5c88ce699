// SimpleBox passes the network options through: a published port served by busybox httpd in the
// box, the host reached from the box, and a policy change on the running box.
import { createServer } from 'node:http'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { SimpleBox } from '../src/index'
import { REGISTRY, registries, tempHome } from '../../../test/fixtures'

/** The host's 127.0.0.1 as a box sees it (busybox's static nc cannot resolve names). */
const HOST_ALIAS = '192.168.127.254'
const host = createServer((_req, res) => res.end('hello from the host'))
let hostPort: number
const box = new SimpleBox({ image: `${REGISTRY}/busybox:latest`, home: await tempHome(), registries, ports: [{ guestPort: 8080 }] })

beforeAll(async () => {
  await new Promise<void>((resolve) => host.listen(0, '127.0.0.1', resolve))
  hostPort = (host.address() as { port: number }).port
})
afterAll(async () => {
  await box.remove()
  await new Promise((resolve) => host.close(resolve))
})

const getHost = () => box.exec('sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc ${HOST_ALIAS} ${hostPort}`)

it('publishes a port, reaches the host, counts the traffic and takes a new policy', async () => {
  // httpd without -f daemonizes, so exec returns while it serves.
  const served = await box.exec('sh', '-c', 'mkdir -p /www && echo served-by-box >/www/index.html && httpd -p 8080 -h /www')
  expect(served.exitCode).toBe(0)
  const [port] = (await box.info()).ports
  expect(port).toMatchObject({ hostIp: '127.0.0.1', guestPort: 8080, protocol: 'tcp' })
  expect(port!.hostPort).toBeGreaterThan(0)
  const response = await fetch(`http://127.0.0.1:${port!.hostPort}/`, { signal: AbortSignal.timeout(10_000) })
  expect(await response.text()).toBe('served-by-box\n')

  const reached = await getHost()
  expect(reached.exitCode).toBe(0)
  expect(reached.stdout).toMatch(/^HTTP\/1\.[01] 200 [\s\S]*hello from the host$/)

  const m = await box.metrics()
  expect(m.networkBytesSent).toBeGreaterThan(0)
  expect(m.networkBytesReceived).toBeGreaterThan(0)
  expect(m.networkTcpConnections).toBeGreaterThanOrEqual(2)

  await box.setNetwork({ deny: [HOST_ALIAS] })
  expect((await box.info()).network).toEqual({ deny: [HOST_ALIAS] })
  const refused = await getHost()
  expect(refused.stdout).toBe('')
  expect(refused.exitCode).not.toBe(0)
})
