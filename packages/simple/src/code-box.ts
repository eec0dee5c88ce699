import type { ExecResult, SimpleExecOptions } from './exec-args'
import { SimpleBox, type SimpleBoxOptions } from './simple-box'

/** The image a {@link CodeBox} runs when none is given. */
export const DEFAULT_CODE_IMAGE = 'python:slim'

export interface CodeBoxOptions extends Omit<SimpleBoxOptions, 'image'> {
  /** An image with `python3` on its PATH. Default {@link DEFAULT_CODE_IMAGE}. */
  image?: string
}

/**
 * A box for running Python code.
 *
 * ```ts
 * await using box = new CodeBox()
 * const { stdout } = await box.run('print(6 * 7)')
 * ```
 */
export class CodeBox extends SimpleBox {
  constructor(options: CodeBoxOptions = {}) {
    super({ ...options, image: options.image ?? DEFAULT_CODE_IMAGE })
  }

  /** Runs `code` with `python3 -c`; an exception in it is a non-zero exit code and a traceback. */
  run(code: string, options?: SimpleExecOptions): Promise<ExecResult> {
    return this.exec('python3', ['-c', code], options)
  }

  /** `pip install name` in the box (needs pip in the image, and network or a local path). */
  installPackage(name: string, options?: SimpleExecOptions): Promise<ExecResult> {
    const pip = ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '--quiet']
    return this.exec('python3', [...pip, name], options)
  }
}
