// The in-box side of a JavaScript CodeBox context: one long-lived node whose global scope (a vm
// context) lasts from cell to cell. The same protocol as _code_driver.py (see there), with two
// differences: it is started as `sh -c 'exec node -e "$0" 3>&1 1>&2' <this file>`, so messages go
// to fd 3 (the exec's stdout) while anything a child process writes to fd 1 lands in the exec's
// stderr instead of among them; and the host interrupts a cell with SIGINT (a cell that loops
// without yielding keeps this process from reading its stdin), which `breakOnSigint` turns into an
// error in synchronous code and the handler below into a rejection of an awaited promise.
'use strict'
const fs = require('node:fs')
const util = require('node:util')
const vm = require('node:vm')
const { Writable } = require('node:stream')
const { Console } = require('node:console')

const OUTPUT_LIMIT = Number(process.env.BOXLITE_CODE_OUTPUT_LIMIT || 1 << 20)
delete process.env.BOXLITE_CODE_OUTPUT_LIMIT
const PROTOCOL_FD = 3

function send(message) {
  fs.writeSync(PROTOCOL_FD, JSON.stringify(message) + '\n')
}

let cell = null
let count = 0
const sizes = { stdout: 0, stderr: 0 }
const dropped = { stdout: 0, stderr: 0 }
let interrupt = null // rejects the promise the running cell awaits

function output(stream, chunk) {
  if (cell === null) return
  const data = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk))
  const room = Math.max(0, OUTPUT_LIMIT - sizes[stream])
  if (data.length > room) dropped[stream] += data.length - room
  const kept = data.subarray(0, room)
  sizes[stream] += kept.length
  if (kept.length) send({ type: stream, id: cell, text: kept.toString('utf8') })
}

const streamOf = (name) => new Writable({ write(chunk, _enc, done) { output(name, chunk); done() } })
const cellConsole = new Console({ stdout: streamOf('stdout'), stderr: streamOf('stderr') })
process.stdout.write = (chunk, ...rest) => { output('stdout', chunk); const cb = rest.find((a) => typeof a === 'function'); if (cb) cb(); return true }
process.stderr.write = (chunk, ...rest) => { output('stderr', chunk); const cb = rest.find((a) => typeof a === 'function'); if (cb) cb(); return true }

function bundle(value) {
  const data = { 'text/plain': util.inspect(value, { depth: 4 }) }
  // Plain objects and arrays (made in the cells' context, so of its own Object and Array).
  const proto = value !== null && typeof value === 'object' ? Object.getPrototypeOf(value) : undefined
  if (proto === null || (proto !== undefined && ['Object', 'Array'].includes(proto.constructor?.name))) {
    try {
      data['application/json'] = JSON.stringify(value)
    } catch {
      // cycles, BigInts: text only
    }
  }
  return data
}

function display(...values) {
  for (const value of values) send({ type: 'result', id: cell, data: bundle(value), main: 0 })
}

const context = vm.createContext({
  console: cellConsole, display, require, process, Buffer, URL, URLSearchParams, TextEncoder, TextDecoder,
  setTimeout, clearTimeout, setInterval, clearInterval, setImmediate, clearImmediate, queueMicrotask,
  structuredClone, fetch: globalThis.fetch, AbortController, AbortSignal, performance,
})

process.on('SIGINT', () => {
  // Outside synchronous code (there breakOnSigint throws): end an awaited promise, or nothing.
  if (interrupt) interrupt(Object.assign(new Error('the cell was interrupted'), { name: 'KeyboardInterrupt' }))
})

function errorMessage(e) {
  if (e instanceof Error || (e && typeof e === 'object' && 'stack' in e)) {
    const name = /interrupted by `SIGINT`/.test(String(e.message)) ? 'KeyboardInterrupt' : String(e.name || 'Error')
    // The driver's own frames (node internals, this script) are not the user's business.
    const stack = String(e.stack ?? e).split('\n').filter((l) => !/^\s+at .*(node:|\[eval\])/.test(l))
    return { type: 'error', id: cell, name, value: String(e.message ?? ''), traceback: [stack.join('\n') + '\n'] }
  }
  return { type: 'error', id: cell, name: 'Error', value: util.inspect(e), traceback: [] }
}

async function run(id, code) {
  cell = id
  sizes.stdout = sizes.stderr = dropped.stdout = dropped.stderr = 0
  count += 1
  try {
    const script = new vm.Script(code, { filename: `<cell ${count}>` })
    let value = script.runInContext(context, { breakOnSigint: true })
    if (value !== null && typeof value === 'object' && typeof value.then === 'function') {
      value = await new Promise((resolve, reject) => {
        interrupt = reject
        value.then(resolve, reject)
      })
    }
    if (value !== undefined) send({ type: 'result', id, data: bundle(value), main: 1 })
  } catch (e) {
    send(errorMessage(e))
  } finally {
    interrupt = null
    for (const stream of ['stdout', 'stderr']) {
      if (dropped[stream]) send({ type: stream, id, text: `\n[output truncated: ${dropped[stream]} more bytes of ${stream} were dropped]\n` })
    }
    cell = null
    send({ type: 'done', id })
  }
}

// Requests: one JSON line each on stdin; cells run one after another.
let queue = Promise.resolve()
let pending = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (text) => {
  pending += text
  let newline
  while ((newline = pending.indexOf('\n')) >= 0) {
    const line = pending.slice(0, newline)
    pending = pending.slice(newline + 1)
    let request
    try {
      request = JSON.parse(line)
    } catch {
      continue
    }
    if (request && request.type === 'run') queue = queue.then(() => run(String(request.id), String(request.code ?? '')))
  }
})
process.stdin.on('end', () => queue.then(() => process.exit(0)))
send({ type: 'ready' })
