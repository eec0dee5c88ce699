import { BoxliteError, CodeBox, type CodeBoxOptions, type CodeContext, type RegistryOptions } from '@boxlite/simple'

/** What the server keeps of one sandbox it created (or, with `keep` and a name, found). */
export interface Sandbox {
  readonly box: CodeBox
  readonly id: string
  readonly name: string | undefined
  readonly image: string
  /** Left in place (stopped, its disk kept) when the server exits. */
  readonly keep: boolean
  /** The caller-named code contexts of run_code, started on first use. */
  readonly contexts: Map<string, Promise<CodeContext>>
}

export interface SandboxesOptions {
  /** State directory (default `$BOXLITE_HOME`, else `~/.boxlite`). */
  home?: string
  /** Registry settings (default: `BOXLITE_REGISTRIES` / `BOXLITE_INSECURE_REGISTRIES`, else the home's config.json). */
  registries?: RegistryOptions[]
}

export interface CreateSandboxOptions extends Omit<CodeBoxOptions, 'runtime' | 'home' | 'registries' | 'reuseExisting'> {
  image: string
  keep?: boolean
}

/** The sandboxes of one server, found by id or by name. */
export class Sandboxes {
  readonly #byId = new Map<string, Sandbox>()
  readonly #runtimeOptions: SandboxesOptions

  constructor(options: SandboxesOptions = {}) {
    this.#runtimeOptions = { home: options.home, registries: options.registries }
  }

  /**
   * Creates a box and boots it, so that its published ports are bound. With `keep` and a `name`,
   * a box of that name left by an earlier server is used instead (`created: false`).
   */
  async create(options: CreateSandboxOptions): Promise<{ sandbox: Sandbox; created: boolean }> {
    const { keep = false, ...boxOptions } = options
    const box = new CodeBox({
      ...boxOptions,
      ...this.#runtimeOptions,
      reuseExisting: keep && boxOptions.name !== undefined,
    })
    try {
      await box.start()
      const info = await box.info()
      const sandbox: Sandbox = { box, id: info.id, name: info.name ?? undefined, image: info.image, keep, contexts: new Map() }
      this.#byId.set(sandbox.id, sandbox)
      return { sandbox, created: box.created ?? true }
    } catch (error) {
      // A box that was made but did not boot is not left behind (unless it was someone else's).
      if (box.created) await box.remove().catch(() => undefined)
      throw error
    }
  }

  /** The sandbox with this id, else the one with this name. */
  get(idOrName: string): Sandbox {
    const sandbox = this.#byId.get(idOrName) ?? [...this.#byId.values()].find((s) => s.name === idOrName)
    if (!sandbox) {
      const known = [...this.#byId.values()].map((s) => s.name ?? s.id)
      const hint = known.length > 0 ? `this server has ${known.join(', ')}` : 'this server has none yet: create one with sandbox_create'
      throw new BoxliteError('NOT_FOUND', `no sandbox "${idOrName}" (${hint})`)
    }
    return sandbox
  }

  list(): Sandbox[] {
    return [...this.#byId.values()]
  }

  /** Stops and removes a sandbox's box (kept or not). */
  async remove(idOrName: string): Promise<Sandbox> {
    const sandbox = this.get(idOrName)
    this.#byId.delete(sandbox.id)
    await sandbox.box.remove()
    return sandbox
  }

  /** Removes every sandbox not created with `keep`, all at once: the ids removed, and those that could not be. */
  async removeAll(): Promise<{ removed: string[]; failed: { id: string; error: unknown }[] }> {
    const doomed = this.list().filter((s) => !s.keep)
    for (const sandbox of doomed) this.#byId.delete(sandbox.id)
    const outcomes = await Promise.allSettled(doomed.map((s) => s.box.remove()))
    const removed: string[] = []
    const failed: { id: string; error: unknown }[] = []
    outcomes.forEach((outcome, i) => {
      const { id } = doomed[i]!
      if (outcome.status === 'fulfilled') removed.push(id)
      else failed.push({ id, error: outcome.reason })
    })
    return { removed, failed }
  }
}
