import type { CodeExecution } from '@boxlite/simple'

/** Characters of each stream (stdout, stderr) and of each text result put in a tool's answer. */
export const OUTPUT_LIMIT = 32 * 1024

/** The image formats of a code result returned as MCP image content. */
const IMAGE_TYPES = ['image/png', 'image/jpeg'] as const

/** The formats tried, in order, for a result's text when it has no image. */
const TEXT_TYPES = ['text/plain', 'text/markdown', 'application/json', 'text/html'] as const

export type Content = { type: 'text'; text: string } | { type: 'image'; data: string; mimeType: string }

/**
 * `text` cut to at most about `limit` characters: its start and its end, which is where a command's
 * errors usually are, with a marker saying how much was left out.
 */
export function bound(text: string, limit = OUTPUT_LIMIT): string {
  if (text.length <= limit) return text
  const half = Math.floor(limit / 2)
  const dropped = text.length - 2 * half
  return `${text.slice(0, half)}\n[... ${dropped} characters left out ...]\n${text.slice(-half)}`
}

/** A cell's output as MCP content: stdout, stderr, then each result (an image, else its text), then the error. */
export function codeContent(execution: CodeExecution): Content[] {
  const content: Content[] = []
  if (execution.stdout) content.push({ type: 'text', text: `stdout:\n${bound(execution.stdout)}` })
  if (execution.stderr) content.push({ type: 'text', text: `stderr:\n${bound(execution.stderr)}` })
  for (const { data } of execution.results) {
    const image = IMAGE_TYPES.find((type) => data[type] !== undefined)
    if (image) {
      content.push({ type: 'image', data: data[image]!, mimeType: image })
      continue
    }
    const text = TEXT_TYPES.map((type) => data[type]).find((value) => value !== undefined)
    if (text !== undefined) content.push({ type: 'text', text: bound(text) })
  }
  const { error } = execution
  if (error) {
    const timedOut = execution.timedOut ? ' (the cell ran past its timeout and was interrupted)' : ''
    const traceback = error.traceback ? `\n${bound(error.traceback)}` : ''
    const value = error.value ? `: ${error.value}` : ''
    content.push({ type: 'text', text: `${error.name}${value}${timedOut}${traceback}` })
  }
  return content
}
