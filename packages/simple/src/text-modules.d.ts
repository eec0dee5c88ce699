// The CodeBox drivers, bundled as text (see tsup.config.ts and the root vitest.config.ts).
declare module '*_code_driver.py' {
  const source: string
  export default source
}
declare module '*_code_driver.js' {
  const source: string
  export default source
}
