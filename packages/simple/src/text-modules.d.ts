// Source files bundled as text (tsup's and vitest's loaders for .py).
declare module '*.py' {
  const source: string
  export default source
}
