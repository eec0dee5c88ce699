// The box network through @boxlite/core, on real boxes, every packet staying on this machine: a
// server on the host's 127.0.0.1 reached as host.docker.internal, a DNS server of the test's own
// as the upstream, a published port, no network, and an egress allow-list. One box per network
// kind (boots are slow under software emulation).
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { createServer as createHttpServer } from 'node:http'
import { createServer, type Server } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Box, Runtime } from '@boxlite/core'
import { REGISTRY, registries, tempHome } from '../../../test/fixtures'
import { failure } from './helpers'

const python = `${REGISTRY}/python:slim`
const busybox = `${REGISTRY}/busybox:latest`
/** The host's 127.0.0.1 as a box sees it. */
const HOST_ALIAS = '192.168.127.254'
/** Every name under this domain resolves to the host alias, so nothing a box resolves leaves the machine. */
const TEST_DOMAIN = 'boxlite-test'

let runtime: Runtime
let hostPort: number
const servers: Server[] = []
let dns: UdpSocket
/** The names the test's DNS server was asked, in order. */
const asked: string[] = []

/** The reply of a DNS server that knows only TEST_DOMAIN: an A record to the host alias, else NXDOMAIN. */
function dnsReply(query: Buffer): Buffer | undefined {
  const labels: string[] = []
  let i = 12 // the header; then one question: labels, type, class
  while (i < query.length && query[i] !== 0) {
    const length = query[i]!
    labels.push(query.subarray(i + 1, i + 1 + length).toString().toLowerCase())
    i += 1 + length
  }
  if (i + 5 > query.length) return undefined
  asked.push(labels.join('.'))
  const ours = labels.at(-1) === TEST_DOMAIN
  const answer = ours && query.readUInt16BE(i + 1) === 1
  // id; response, recursion available, NOERROR or NXDOMAIN; one question, 0 or 1 answer
  const header = Buffer.from([query[0]!, query[1]!, 0x81, ours ? 0x80 : 0x83, 0, 1, 0, answer ? 1 : 0, 0, 0, 0, 0])
  const record = answer ? Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 168, 127, 254]) : Buffer.alloc(0)
  return Buffer.concat([header, query.subarray(12, i + 5), record])
}

async function dnsServer(): Promise<number> {
  dns = createSocket('udp4')
  dns.on('message', (query, from) => {
    const reply = dnsReply(query)
    if (reply) dns.send(reply, from.port, from.address)
  })
  await new Promise<void>((resolve) => dns.bind(0, '127.0.0.1', resolve))
  return dns.address().port
}

async function listen(server: Server): Promise<number> {
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')
  return address.port
}

/** Runs `cmd` in the box to its end: exit code and output. */
async function run(box: Box, cmd: string, args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const ex = await box.exec(cmd, args)
  const [stdout, stderr, exit] = await Promise.all([ex.stdout.text(), ex.stderr.text(), ex.wait()])
  return { exitCode: exit.exitCode, stdout, stderr }
}

/** Python (the slim image has no `http` package) that GETs `/` from host:port and prints the body. */
function fetchIn(host: string, port: number): string[] {
  return [
    '-c',
    `import socket; s = socket.create_connection(('${host}', ${port}), timeout=10); ` +
      `s.sendall(b'GET / HTTP/1.0\\r\\nHost: ${host}\\r\\n\\r\\n'); data = b''\n` +
      'while True:\n  chunk = s.recv(4096)\n  if not chunk: break\n  data += chunk\n' +
      "print(data.split(b'\\r\\n\\r\\n', 1)[1].decode(), end='')",
  ]
}

/** Python that connects to host:port and prints `connected`, or the error's name and the seconds it took. */
function connectIn(host: string, port: number): string[] {
  return [
    '-c',
    `import socket, time; t = time.time()\ntry:\n  socket.create_connection(('${host}', ${port}), timeout=10); print('connected', end='')\n` +
      "except OSError as e:\n  print(type(e).__name__, round(time.time() - t, 2), end='')",
  ]
}

/** Python that resolves `name` and prints its address, or `unresolved`. */
function resolveIn(name: string): string[] {
  return ['-c', `import socket\ntry:\n  print(socket.gethostbyname('${name}'), end='')\nexcept OSError:\n  print('unresolved', end='')`]
}

/** Python serving HTTP on `port` in the box, answering every request with /etc/hostname. */
function serveIn(port: number): string[] {
  return [
    '-c',
    `import socket; l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ` +
      `l.bind(('0.0.0.0', ${port})); l.listen(8); body = open('/etc/hostname', 'rb').read()\n` +
      'while True:\n  c, _ = l.accept(); c.recv(4096); ' +
      "c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(body) + body); c.close()",
  ]
}

/** GET http://127.0.0.1:port/ from Node, retrying until the box's server is up. */
async function getFromHost(port: number, withinMs: number): Promise<string> {
  const deadline = Date.now() + withinMs
  for (;;) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(10_000) })
      return await response.text()
    } catch (error) {
      if (Date.now() > deadline) throw error
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
  }
}

beforeAll(async () => {
  runtime = new Runtime({ home: await tempHome(), registries, dnsServers: [`127.0.0.1:${await dnsServer()}`] })
  const web = createHttpServer((_req, res) => res.end('hello from the host'))
  hostPort = await listen(web)
})

afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
  dns?.close()
})

describe('the default network', () => {
  let box: Box
  beforeAll(async () => {
    box = await runtime.create({ image: python, name: 'web', ports: [{ guestPort: 8000 }, { hostPort: 0, guestPort: 5353, protocol: 'udp' }] })
    await box.start()
  })
  afterAll(() => box?.remove({ force: true }))

  it('reaches a server on the host through host.docker.internal and host.boxlite.internal', async () => {
    for (const alias of ['host.docker.internal', 'host.boxlite.internal']) {
      const { exitCode, stdout, stderr } = await run(box, 'python3', fetchIn(alias, hostPort))
      expect({ alias, exitCode, stdout, stderr }).toEqual({ alias, exitCode: 0, stdout: 'hello from the host', stderr: '' })
    }
  })

  it("forwards other names to the runtime's DNS servers", async () => {
    expect((await run(box, 'python3', resolveIn(`svc.${TEST_DOMAIN}`))).stdout).toBe(HOST_ALIAS)
    expect(asked).toContain(`svc.${TEST_DOMAIN}`)
  })

  it('serves a published port on a host port it picked, reported by info()', async () => {
    const info = await box.info()
    expect(info.network).toBe('default')
    expect(info.ports).toHaveLength(2)
    const [tcp, udp] = info.ports
    expect(tcp).toMatchObject({ hostIp: '127.0.0.1', guestPort: 8000, protocol: 'tcp' })
    expect(udp).toMatchObject({ hostIp: '127.0.0.1', guestPort: 5353, protocol: 'udp' })
    expect(tcp!.hostPort).toBeGreaterThan(0)
    expect(udp!.hostPort).toBeGreaterThan(0)

    const server = await box.exec('python3', serveIn(8000))
    try {
      expect(await getFromHost(tcp!.hostPort, 60_000)).toBe('web\n')
    } finally {
      await server.kill()
      await server.wait()
    }
  })

  it('counts the traffic in its metrics', async () => {
    const m = await box.metrics()
    expect(m.networkBytesSent).toBeGreaterThan(0)
    expect(m.networkBytesReceived).toBeGreaterThan(0)
    // Two fetches of the host's server and at least one request to the published port.
    expect(m.networkTcpConnections).toBeGreaterThanOrEqual(3)
  })

  it('refuses switching the network off, or a bad policy entry, naming it', async () => {
    const off = await failure(box.setNetwork('none'))
    expect(off.code).toBe('INVALID_ARGUMENT')
    expect(off.message).toMatch(/switched on or off/)
    const bad = await failure(box.setNetwork({ allow: ['http://example.com'] }))
    expect(bad.code).toBe('INVALID_ARGUMENT')
    expect(bad.message).toContain("'http://example.com'")
    expect((await box.info()).network).toBe('default')
  })
})

describe("network 'none'", () => {
  let box: Box
  beforeAll(async () => {
    box = await runtime.create({ image: busybox, network: 'none' })
    await box.start()
  })
  afterAll(() => box?.remove({ force: true }))

  it('has only loopback', async () => {
    const { stdout } = await run(box, 'ls', ['/sys/class/net'])
    expect(stdout.split(/\s+/).filter(Boolean)).toEqual(['lo'])
    expect((await box.info()).network).toBe('none')
  })

  it('fails a connect at once', async () => {
    const started = Date.now()
    // nc with an address: busybox's static binary cannot resolve names without glibc's NSS modules.
    const { exitCode, stderr } = await run(box, 'nc', [HOST_ALIAS, String(hostPort)])
    expect(exitCode).toBe(1)
    expect(stderr).toMatch(/unreachable/i)
    expect(Date.now() - started).toBeLessThan(5_000)
  })
})

describe('an allow-list', () => {
  const allowed = `allowed.${TEST_DOMAIN}`
  const denied = `denied.${TEST_DOMAIN}`
  let box: Box
  beforeAll(async () => {
    box = await runtime.create({ image: python, network: { allow: [allowed] } })
    await box.start()
  })
  afterAll(() => box?.remove({ force: true }))

  it('admits the listed name', async () => {
    expect((await box.info()).network).toEqual({ allow: [allowed] })
    const { exitCode, stdout, stderr } = await run(box, 'python3', fetchIn(allowed, hostPort))
    expect({ exitCode, stdout, stderr }).toEqual({ exitCode: 0, stdout: 'hello from the host', stderr: '' })
  })

  it('does not resolve an unlisted name, and refuses an unlisted address at once', async () => {
    expect((await run(box, 'python3', resolveIn(denied))).stdout).toBe('unresolved')
    expect(asked).not.toContain(denied) // answered by the box's own DNS, never asked upstream
    // TEST-NET-1: never dialled, the refusal comes from the box's own network stack.
    const { stdout } = await run(box, 'python3', connectIn('192.0.2.1', 80))
    expect(stdout).toMatch(/^(ConnectionRefusedError|ConnectionResetError) /)
    expect(Number(stdout.split(' ')[1])).toBeLessThan(1)
  })

  it('takes a new policy while running', async () => {
    await box.setNetwork({ deny: [HOST_ALIAS] })
    expect((await box.info()).network).toEqual({ deny: [HOST_ALIAS] })
    expect((await run(box, 'python3', connectIn(allowed, hostPort))).stdout).toMatch(/^(ConnectionRefusedError|ConnectionResetError) /)

    await box.setNetwork('default')
    expect((await box.info()).network).toBe('default')
    expect((await run(box, 'python3', resolveIn(denied))).stdout).toBe(HOST_ALIAS)
    expect((await run(box, 'python3', connectIn('host.docker.internal', hostPort))).stdout).toBe('connected')
  })
})

describe('bad network options', () => {
  it('a host port already in use fails the create at once, naming the port', async () => {
    const taken = await listen(createServer())
    const before = (await runtime.list()).length
    const started = Date.now()
    const error = await failure(runtime.create({ image: busybox, ports: [{ hostPort: taken, guestPort: 80 }] }))
    expect(error.code).toBe('INVALID_ARGUMENT')
    expect(error.message).toContain(`127.0.0.1:${taken}/tcp`)
    expect(Date.now() - started).toBeLessThan(5_000)
    expect(await runtime.list()).toHaveLength(before)
  })

  it('a malformed port or allow entry is INVALID_ARGUMENT naming it, and no box is made', async () => {
    const before = (await runtime.list()).length
    const cases: [() => Promise<unknown>, RegExp][] = [
      [() => runtime.create({ image: busybox, ports: [{ guestPort: 0 }] }), /ports\[0\] .*guestPort must be/],
      [() => runtime.create({ image: busybox, ports: [{ guestPort: 80, hostPort: 65536 }] }), /ports\[0\] .*hostPort must be/],
      [() => runtime.create({ image: busybox, ports: [{ hostPort: 18080, guestPort: 80 }, { hostPort: 18080, guestPort: 81 }] }), /18080\/tcp is published twice/],
      [() => runtime.create({ image: busybox, network: 'none', ports: [{ guestPort: 80 }] }), /ports need a network/],
      [() => runtime.create({ image: busybox, network: { allow: ['pypi.org', '*'] } }), /network entry '\*'/],
      [() => runtime.create({ image: busybox, network: { allow: ['a'], deny: ['b'] } as never }), /network must be/],
    ]
    for (const [call, message] of cases) {
      const error = await failure(call())
      expect(error.code).toBe('INVALID_ARGUMENT')
      expect(error.message).toMatch(message)
    }
    expect(await runtime.list()).toHaveLength(before)
  })
})
