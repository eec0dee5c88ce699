import { describe, expect, it } from 'vitest'
import { bound, codeContent } from './output'

describe('bound', () => {
  it('keeps short text as it is', () => {
    expect(bound('hello', 10)).toBe('hello')
  })

  it('keeps the start and the end of long text, saying how much it left out', () => {
    const text = 'a'.repeat(50) + 'b'.repeat(50)
    expect(bound(text, 10)).toBe('aaaaa\n[... 90 characters left out ...]\nbbbbb')
  })
})

describe('codeContent', () => {
  it('gives output, then each result as an image or its text, then the error', () => {
    const content = codeContent({
      stdout: 'out\n',
      stderr: 'err\n',
      results: [
        { data: { 'text/plain': '<Figure>', 'image/png': 'iVBOR' }, isMainResult: false },
        { data: { 'text/html': '<b>1</b>', 'text/plain': '1' }, isMainResult: true },
      ],
      error: { name: 'ValueError', value: 'bad', traceback: 'Traceback ...' },
      timedOut: false,
    })
    expect(content).toEqual([
      { type: 'text', text: 'stdout:\nout\n' },
      { type: 'text', text: 'stderr:\nerr\n' },
      { type: 'image', data: 'iVBOR', mimeType: 'image/png' },
      { type: 'text', text: '1' },
      { type: 'text', text: 'ValueError: bad\nTraceback ...' },
    ])
  })

  it('says when a cell was interrupted by its timeout', () => {
    const [error] = codeContent({ stdout: '', stderr: '', results: [], error: { name: 'KeyboardInterrupt', value: '', traceback: '' }, timedOut: true })
    expect(error).toEqual({ type: 'text', text: 'KeyboardInterrupt (the cell ran past its timeout and was interrupted)' })
  })
})
