import { Runtime, type RuntimeOptions } from '@boxlite/core'

// One Runtime per process for each distinct home/registries pair, shared by every SimpleBox that
// is not handed a runtime of its own: a Runtime owns the state database, so one is enough.
const runtimes = new Map<string, Runtime>()

export function defaultRuntime(options: Pick<RuntimeOptions, 'home' | 'registries'>): Runtime {
  const key = runtimeKey(options)
  let runtime = runtimes.get(key)
  if (!runtime) {
    runtime = new Runtime(options)
    runtimes.set(key, runtime)
  }
  return runtime
}

export function runtimeKey({ home, registries }: Pick<RuntimeOptions, 'home' | 'registries'>): string {
  return JSON.stringify([home ?? null, registries ?? []])
}
