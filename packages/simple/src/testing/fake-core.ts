// A stand-in for @boxlite/core in unit tests (`vi.mock('@boxlite/core', () => import(...))`):
// records what SimpleBox asks of it, boots nothing.
import type { BoxOptions, ErrorCode, ExecOptions, ExitResult, RuntimeOptions } from '@boxlite/core'

export class BoxliteError extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
  }
}

export interface FakeOutput {
  /** Thrown by exec() instead of starting the command. */
  execError?: Error
  /** Thrown by stdin.write(), as when the command has ended. */
  stdinError?: Error
  stdout?: string
  stderr?: string
  exit?: Partial<ExitResult>
}

export class FakeBox {
  static nextId = 1
  readonly id = `box-${FakeBox.nextId++}`
  readonly events: string[] = []
  readonly execs: { cmd: string; args: string[]; options: ExecOptions | undefined; stdin: string[] }[] = []
  constructor(
    readonly options: BoxOptions,
    readonly runtime: Runtime,
  ) {}

  async start(): Promise<void> {
    this.events.push('start')
  }

  async stop(): Promise<void> {
    this.events.push('stop')
  }

  async remove(options?: { force?: boolean }): Promise<void> {
    this.events.push(options?.force ? 'remove --force' : 'remove')
  }

  async exec(cmd: string, args: string[] = [], options?: ExecOptions) {
    const { execError, stdinError, stdout = '', stderr = '', exit } = this.runtime.output
    if (execError) throw execError
    const stdin: string[] = []
    this.execs.push({ cmd, args, options, stdin })
    return {
      stdout: { text: async () => stdout },
      stderr: { text: async () => stderr },
      stdin: {
        write: async (data: string | Uint8Array) => {
          if (stdinError) throw stdinError
          stdin.push(String(data))
        },
        close: async () => void stdin.push('<closed>'),
      },
      wait: async (): Promise<ExitResult> => ({ exitCode: 0, signal: null, timedOut: false, ...exit }),
    }
  }
}

export class Runtime {
  static instances: Runtime[] = []
  readonly boxes: FakeBox[] = []
  /** Errors thrown by the next create() calls, one per call. */
  readonly createErrors: Error[] = []
  /** What the commands of every box of this runtime print and return. */
  output: FakeOutput = {}

  constructor(readonly options?: RuntimeOptions) {
    Runtime.instances.push(this)
  }

  async create(options: BoxOptions): Promise<FakeBox> {
    // A real create takes a while; concurrent callers must find it in flight.
    await new Promise((resolve) => setTimeout(resolve, 10))
    const error = this.createErrors.shift()
    if (error) throw error
    const box = new FakeBox(options, this)
    this.boxes.push(box)
    return box
  }
}
