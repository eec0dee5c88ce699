import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll } from 'vitest'

// The e2e tests pull from the local test registry; without it they must fail, not skip.
const registry = process.env.REGISTRY
if (!registry) {
  throw new Error('REGISTRY is not set: start the test registry with `eval "$(bash scripts/test-images.sh)"`')
}

/** The local test registry (plain http), e.g. 127.0.0.1:5000. */
export const REGISTRY: string = registry
export const registries = [{ host: REGISTRY, insecure: true }]

// Homes made by the test file that imports this, removed after its last test. One hook, made at
// import: a hook made inside a running test would never run, and its home would be left behind.
const homes: string[] = []
afterAll(async () => {
  await Promise.all(homes.splice(0).map((home) => rm(home, { recursive: true, force: true })))
})

/** A fresh BoxLite home for the calling test file, deleted after its tests. */
export async function tempHome(): Promise<string> {
  const home = await mkdtemp(join(tmpdir(), 'boxlite-test-'))
  homes.push(home)
  return home
}
