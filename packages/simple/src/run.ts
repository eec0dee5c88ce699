import { parseExecArgs, type ExecArgs, type ExecResult, type SimpleExecOptions } from './exec-args'
import { SimpleBox, type SimpleBoxOptions } from './simple-box'

/**
 * Runs one command in a throwaway box, which is removed afterwards (also on error):
 * `await run('alpine:latest', 'echo', 'hi')`, or
 * `await run({ image, registries }, 'sh', ['-c', 'cat'], { stdin: 'hi' })`.
 */
export function run(image: string | SimpleBoxOptions, cmd: string, ...args: string[]): Promise<ExecResult>
export function run(
  image: string | SimpleBoxOptions,
  cmd: string,
  args: string[],
  options?: SimpleExecOptions,
): Promise<ExecResult>
export async function run(
  image: string | SimpleBoxOptions,
  cmd: string,
  ...rest: ExecArgs
): Promise<ExecResult> {
  const { args, options } = parseExecArgs(rest)
  const box = new SimpleBox(typeof image === 'string' ? { image } : image)
  try {
    return await box.exec(cmd, args, options)
  } finally {
    await box.remove()
  }
}
