import { cancellable } from './cancel'
import { BoxliteError, coded } from './errors'
import { Files } from './files'
import { native, type NativeBox, type NativeExecution, type NativeRuntime } from './native'
import { InputStream, OutputStream } from './streams'
import type {
  BoxInfo,
  BoxMetrics,
  BoxOptions,
  BoxStatus,
  CopyOptions,
  ExecOptions,
  ExitResult,
  ImageInfo,
  ImageRemoveOptions,
  NetworkOptions,
  PortBinding,
  PruneOptions,
  PullOptions,
  PullProgress,
  Removed,
  RemoveOptions,
  RestoreOptions,
  RuntimeMetrics,
  RuntimeOptions,
  SnapshotInfo,
  TemplateInfo,
  VolumeInfo,
  WarmupOptions,
} from './types'
import { guestPathArg, hostPathArg, networkOption, optionalCount, optionalFlag, portOptions, stringRecord, volumeOptions, warmupNetwork, type NativeNetwork } from './validate'

type NativeBoxInfo = Awaited<ReturnType<NativeBox['info']>>
type NativeImageInfo = Awaited<ReturnType<NativeRuntime['pull']>>
type NativePullEvent = Parameters<NonNullable<Parameters<NativeRuntime['pull']>[1]>>[0]

function boxInfo(info: NativeBoxInfo): BoxInfo {
  return {
    id: info.id,
    name: info.name ?? null,
    image: info.image,
    status: info.status as BoxStatus,
    pid: info.pid ?? null,
    createdAt: new Date(info.createdAtMs),
    startedAt: info.startedAtMs === undefined ? null : new Date(info.startedAtMs),
    cpus: info.cpus,
    memoryMib: info.memoryMib,
    detach: info.detach,
    autoRemove: info.autoRemove,
    reason: info.reason ?? null,
    network: network(info.network),
    ports: info.ports.map((p): PortBinding => ({ hostPort: p.hostPort, guestPort: p.guestPort, protocol: p.protocol, hostIp: p.hostIp })),
    volumes: info.volumes.map((v): VolumeInfo => ({ hostPath: v.hostPath, guestPath: v.guestPath, readOnly: v.readOnly })),
    diskSizeGb: info.diskSizeGb ?? null,
  }
}

function network(native: NativeNetwork): NetworkOptions {
  switch (native.mode) {
    case 'allow':
      return { allow: native.entries ?? [] }
    case 'deny':
      return { deny: native.entries ?? [] }
    default:
      return native.mode
  }
}

function imageInfo(image: NativeImageInfo): ImageInfo {
  return {
    reference: image.reference,
    digest: image.digest,
    configDigest: image.configDigest,
    layers: image.layers,
    sizeBytes: image.sizeBytes,
    pulledAt: new Date(image.pulledAtMs),
  }
}

function pullProgress(event: NativePullEvent): PullProgress {
  switch (event.kind) {
    case 'resolved':
      return { type: 'resolved', reference: event.reference ?? '', layers: event.layers ?? 0 }
    case 'layer':
      return { type: 'layer', digest: event.digest ?? '', bytes: event.bytes ?? 0 }
    default:
      return { type: 'disk' }
  }
}

/** A BoxLite runtime over one home directory. Opening one is cheap: no VM starts until a box does. */
export class Runtime {
  readonly #native: NativeRuntime
  /** Images in this home: `pull`, `list`, `remove` and `prune`. */
  readonly images: Images

  constructor(options: RuntimeOptions = {}) {
    try {
      this.#native = new native.Runtime({
        home: options.home,
        registries: options.registries,
        accel: options.accel,
        assetsDir: options.assetsDir,
        dnsServers: options.dnsServers,
        warmStart: options.warmStart === undefined ? undefined : optionalFlag('warmStart', options.warmStart),
      })
    } catch (error) {
      throw BoxliteError.from(error)
    }
    this.images = new Images(this.#native)
  }

  /** The state directory. */
  get home(): string {
    return this.#native.home
  }

  /** Creates a box, pulling its image if needed. The VM boots on `start()` or the first `exec()`. */
  async create(options: BoxOptions): Promise<Box> {
    const nativeOptions = {
      image: options.image,
      name: options.name,
      cpus: optionalCount('cpus', options.cpus),
      memoryMib: optionalCount('memoryMib', options.memoryMib),
      env: stringRecord('env', options.env),
      workingDir: options.workingDir,
      user: options.user,
      readyTimeoutMs: optionalCount('readyTimeoutMs', options.readyTimeoutMs),
      detach: options.detach,
      autoStopMs: optionalCount('autoStopMs', options.autoStopMs),
      autoRemove: options.autoRemove,
      network: networkOption('network', options.network),
      ports: portOptions(options.ports),
      volumes: volumeOptions(options.volumes),
      diskSizeGb: optionalCount('diskSizeGb', options.diskSizeGb),
    }
    const created = await cancellable(options.signal, 'box creation', (token) => this.#native.create(nativeOptions, token))
    return new Box(created, this)
  }

  /**
   * The box with this id or name, or `null`. Any box of the home is reachable, including one that
   * another process created and started (a detached box outlives it).
   */
  async get(idOrName: string): Promise<Box | null> {
    const found = await coded(() => this.#native.get(idOrName))
    return found ? new Box(found, this) : null
  }

  /** The settings and status of the box with this id or name, or `null`. */
  async getInfo(idOrName: string): Promise<BoxInfo | null> {
    const box = await this.get(idOrName)
    return box ? box.info() : null
  }

  /** Every box in this home, oldest first. */
  async list(): Promise<BoxInfo[]> {
    return (await coded(() => this.#native.list())).map(boxInfo)
  }

  /** The same as {@link Runtime.list} (the name other BoxLite SDKs use). */
  listInfo(): Promise<BoxInfo[]> {
    return this.list()
  }

  /**
   * Removes a box and its disk. A running box needs force (it is stopped first), given as
   * `remove(id, { force: true })` or `remove(id, true)`.
   */
  async remove(idOrName: string, options: RemoveOptions | boolean = {}): Promise<void> {
    const force = typeof options === 'boolean' ? options : (options.force ?? false)
    await coded(() => this.#native.remove(idOrName, force))
  }

  /**
   * Starts a new box that continues from snapshot `name`: its processes, memory and files as they
   * were at that instant, on a disk of its own, with a fresh identity (id, hostname, the guest RNG
   * reseeded, the clock set). Resolves with it running.
   */
  async restore(name: string, options: RestoreOptions = {}): Promise<Box> {
    const restored = await coded(() =>
      this.#native.restore(name, {
        name: options.name,
        detach: optionalFlag('detach', options.detach),
        autoRemove: optionalFlag('autoRemove', options.autoRemove),
        autoStopMs: optionalCount('autoStopMs', options.autoStopMs),
      }),
    )
    return new Box(restored, this)
  }

  /** Every snapshot in this home, oldest first. */
  async listSnapshots(): Promise<SnapshotInfo[]> {
    return (await coded(() => this.#native.snapshots())).map(snapshotInfo)
  }

  /** Removes a snapshot; boxes restored from it keep working. */
  async removeSnapshot(name: string): Promise<void> {
    await coded(() => this.#native.removeSnapshot(name))
  }

  /**
   * Makes sure a warm start template exists for boxes of this shape, building it if needed (one
   * cold boot of an idle guest, saved without a box disk, under `templates/` in the home); resolves
   * at once when it is there (`built: false`). Boxes of that shape then start from it instead of
   * booting (unless the runtime has `warmStart: false`). Without this call a shape's template is
   * made at its first box start, so warming up only moves that boot ahead of time. Out-of-range
   * `cpus` or `memoryMib` is `INVALID_ARGUMENT`.
   */
  async warmup(options: WarmupOptions = {}): Promise<TemplateInfo> {
    const nativeOptions = {
      cpus: optionalCount('cpus', options.cpus),
      memoryMib: optionalCount('memoryMib', options.memoryMib),
      network: warmupNetwork('network', options.network),
    }
    const t = await coded(() => this.#native.warmup(nativeOptions))
    return {
      path: t.path,
      cpus: t.cpus,
      memoryMib: t.memoryMib,
      network: t.network,
      built: t.built,
      buildMs: t.buildMs,
      diskBytes: t.diskBytes,
    }
  }

  /** This runtime's counters, and how many boxes of its home are running now. */
  async metrics(): Promise<RuntimeMetrics> {
    const m = await coded(() => this.#native.metrics())
    return {
      boxesCreatedTotal: m.boxesCreatedTotal,
      boxesFailedTotal: m.boxesFailedTotal,
      numRunningBoxes: m.numRunningBoxes,
      totalCommandsExecuted: m.totalCommandsExecuted,
      totalExecErrors: m.totalExecErrors,
    }
  }
}


type NativeSnapshotInfo = Awaited<ReturnType<NativeBox['snapshot']>>

function snapshotInfo(s: NativeSnapshotInfo): SnapshotInfo {
  return {
    name: s.name,
    boxId: s.boxId,
    ...(s.boxName ? { boxName: s.boxName } : {}),
    image: s.image,
    createdAt: s.createdAt,
    cpus: s.cpus,
    memoryMib: s.memoryMib,
    memoryBytes: s.memoryBytes,
    diskBytes: s.diskBytes,
    pausedMs: s.pausedMs,
  }
}

/** The images of one runtime home. */
export class Images {
  readonly #native: NativeRuntime

  /** @internal */
  constructor(runtime: NativeRuntime) {
    this.#native = runtime
  }

  /** Pulls an image and prepares its disk. Aborting stops it and keeps nothing partial. */
  async pull(reference: string, options: PullOptions = {}): Promise<ImageInfo> {
    const { onProgress } = options
    const forward = onProgress ? (event: NativePullEvent) => onProgress(pullProgress(event)) : undefined
    return imageInfo(await cancellable(options.signal, 'the pull', (token) => this.#native.pull(reference, forward, token)))
  }

  /** Images pulled into this home. */
  async list(): Promise<ImageInfo[]> {
    return (await coded(() => this.#native.images())).map(imageInfo)
  }

  /**
   * Removes an image (as listed, or as a pull would resolve it): its reference, then its blobs
   * and base disk once no other image or box needs them. Boxes' disks are overlays of a base
   * disk, so an image whose disk boxes use is refused (`INVALID_STATE`, naming them) unless
   * `force`. `NOT_FOUND` when the home has no such image.
   */
  async remove(reference: string, options: ImageRemoveOptions = {}): Promise<Removed> {
    return await coded(() => this.#native.removeImage(reference, options.force ?? false))
  }

  /**
   * Deletes the blobs and base disks that no image references and no box uses (optionally
   * non-running boxes and unused images first). Waits for pulls and box creations under way, in
   * any process.
   */
  async prune(options: PruneOptions = {}): Promise<Removed> {
    return await coded(() => this.#native.prune({ boxes: options.boxes, all: options.all }))
  }
}

/** One box: a micro-VM with its own disk, made from an image. */
export class Box {
  readonly #native: NativeBox
  readonly #runtime: Runtime
  /** The box's files: read, write, list, stat, mkdir, remove, rename and watch (the box must be running). */
  readonly files: Files

  /** @internal */
  constructor(box: NativeBox, runtime: Runtime) {
    this.#native = box
    this.#runtime = runtime
    this.files = new Files(box.files())
  }

  /** The box id (13 characters, unique, sortable by creation). */
  get id(): string {
    return this.#native.id
  }

  /** The box's settings and current status. */
  async info(): Promise<BoxInfo> {
    return boxInfo(await coded(() => this.#native.info()))
  }

  /** Boots the VM and waits for the guest; does nothing if this process already runs it. */
  async start(options: { signal?: AbortSignal } = {}): Promise<void> {
    await cancellable(options.signal, 'the box start', (token) => this.#native.start(token))
  }

  /**
   * Stops the VM cleanly, from any process. The disk (and everything written to it) is kept for
   * the next start.
   */
  async stop(): Promise<void> {
    await coded(() => this.#native.stop())
  }

  /** Ends the VM at once, without letting the guest sync its writes; the disk is kept. */
  async kill(): Promise<void> {
    await coded(() => this.#native.kill())
  }

  /**
   * Stops the box's vCPUs and keeps its memory: processes, files and connections stay as they
   * are, using no CPU, until {@link resume}. Commands under way wait and go on after the resume;
   * new calls (exec, files) are refused with `INVALID_STATE` meanwhile. `info().status` is
   * `'paused'` from any process. Pausing a paused box does nothing; a box that is not running is
   * `INVALID_STATE`.
   */
  async pause(): Promise<void> {
    await coded(() => this.#native.pause())
  }

  /** Lets a paused box run again, its clock set to the host's; does nothing on a running box. */
  async resume(): Promise<void> {
    await coded(() => this.#native.resume())
  }

  /**
   * Saves the running box's memory and disk at one instant under `name`, while the box goes on
   * (its vCPUs stand still for a moment). `runtime.restore(name)` and {@link fork} start boxes
   * from it. A box with volumes cannot be snapshotted (`INVALID_ARGUMENT`).
   */
  async snapshot(name: string): Promise<SnapshotInfo> {
    return snapshotInfo(await coded(() => this.#native.snapshot(name)))
  }

  /**
   * Saves the box's memory to disk and ends its VM: `info().status` is `'suspended'`, using no CPU
   * or memory, until {@link resume} (or any exec) continues it, processes and all.
   */
  async suspend(): Promise<void> {
    await coded(() => this.#native.suspend())
  }

  /** `count` new running boxes that continue from this one as it is now; this one goes on too. */
  async fork(count = 1): Promise<Box[]> {
    const forks = await coded(() => this.#native.fork(count))
    return forks.map((f) => new Box(f, this.#runtime))
  }

  /** CPU, memory, command and network figures of the running box; zeros when it is not running. */
  async metrics(): Promise<BoxMetrics> {
    const m = await coded(() => this.#native.metrics())
    return {
      cpuPercent: m.cpuPercent,
      memoryBytes: m.memoryBytes,
      commandsExecuted: m.commandsExecuted,
      execErrors: m.execErrors,
      bootDurationMs: m.bootDurationMs,
      networkBytesSent: m.networkBytesSent,
      networkBytesReceived: m.networkBytesReceived,
      networkTcpConnections: m.networkTcpConnections,
    }
  }

  /**
   * Replaces the egress policy: `'default'` (everything), `{ allow }` or `{ deny }`. It applies at
   * once to new connections of a running box (open ones stay) and to its later starts. A box's
   * network cannot be switched on or off after create (`'none'` either way is `INVALID_ARGUMENT`).
   */
  async setNetwork(network: NetworkOptions): Promise<void> {
    const native = networkOption('network', network)
    if (!native) throw new BoxliteError('INVALID_ARGUMENT', 'setNetwork needs a network')
    await coded(() => this.#native.setNetwork(native))
  }

  /**
   * Copies the host file or directory `hostPath` into the running box at `guestPath`, as
   * `docker cp` does: into `guestPath` under its own name when that is an existing directory,
   * otherwise as `guestPath` (whose parent must exist). Streamed as tar, never whole in memory;
   * permission bits, mtimes and symlinks (as symlinks) are kept, files are owned by root. The
   * copy is built beside its target and moved into place, so a failed one leaves nothing. An
   * existing target is refused (`ALREADY_EXISTS`, naming it) unless `overwrite`, which replaces
   * it whole. A missing host path is `NOT_FOUND`; a box not running is `INVALID_STATE`.
   */
  async copyIn(hostPath: string, guestPath: string, options: CopyOptions = {}): Promise<void> {
    const host = hostPathArg('hostPath', hostPath)
    const guest = guestPathArg('guestPath', guestPath)
    const overwrite = optionalFlag('overwrite', options.overwrite)
    await cancellable(options.signal, 'the copy', (token) => this.#native.copyIn(host, guest, overwrite, token))
  }

  /**
   * Copies the box's file or directory `guestPath` to the host at `hostPath`, with `copyIn`'s
   * rules. Nothing the box sends is trusted: entries land only beneath the destination, symlinks
   * are created but never followed, setuid/setgid bits are dropped, hard links and devices are
   * refused, and a failed copy leaves nothing behind.
   */
  async copyOut(guestPath: string, hostPath: string, options: CopyOptions = {}): Promise<void> {
    const guest = guestPathArg('guestPath', guestPath)
    const host = hostPathArg('hostPath', hostPath)
    const overwrite = optionalFlag('overwrite', options.overwrite)
    await cancellable(options.signal, 'the copy', (token) => this.#native.copyOut(guest, host, overwrite, token))
  }

  /** Removes the box and its disk; see `Runtime.remove`. */
  async remove(options: RemoveOptions | boolean = {}): Promise<void> {
    await this.#runtime.remove(this.id, options)
  }

  /**
   * Starts `cmd` with `args` in the box, booting it first if needed. Resolves once the command
   * runs; a command that exits non-zero is a result (`wait()`), not an error.
   */
  async exec(cmd: string, args: readonly string[] = [], options: ExecOptions = {}): Promise<Execution> {
    const nativeOptions = {
      env: stringRecord('env', options.env),
      cwd: options.cwd,
      user: options.user,
      timeoutMs: optionalCount('timeoutMs', options.timeoutMs),
      tty: options.tty,
    }
    const started = await cancellable(options.signal, 'the exec', (token) => this.#native.exec([cmd, ...args], nativeOptions, token))
    return new Execution(started, options.signal)
  }
}

/** A running command: its output streams, its stdin, and its end. */
export class Execution {
  readonly stdout: OutputStream
  readonly stderr: OutputStream
  readonly stdin: InputStream
  readonly #native: NativeExecution
  readonly #signal: AbortSignal | undefined
  readonly #onAbort = () => {
    this.#native.signal(9).catch(() => {}) // it may have ended already
  }

  /** @internal */
  constructor(execution: NativeExecution, signal: AbortSignal | undefined) {
    this.#native = execution
    this.#signal = signal
    this.stdout = new OutputStream('stdout', () => execution.readStdout(), () => execution.discard('stdout'))
    this.stderr = new OutputStream('stderr', () => execution.readStderr(), () => execution.discard('stderr'))
    this.stdin = new InputStream((data) => execution.writeStdin(data), () => execution.closeStdin())
    signal?.addEventListener('abort', this.#onAbort, { once: true })
  }

  /** Waits for the command to end. Streams not yet being read are discarded first. */
  async wait(): Promise<ExitResult> {
    this.stdout.discardIfUnread()
    this.stderr.discardIfUnread()
    try {
      const exit = await coded(() => this.#native.wait())
      if (this.#signal?.aborted) {
        throw new BoxliteError('ABORTED', 'the command was aborted (killed)', { cause: this.#signal.reason })
      }
      return { exitCode: exit.exitCode, signal: exit.signal ?? null, timedOut: exit.timedOut }
    } finally {
      this.#signal?.removeEventListener('abort', this.#onAbort)
    }
  }

  /** Sends a signal (default 9, SIGKILL) to the command and its process group. */
  async kill(signal = 9): Promise<void> {
    await coded(() => this.#native.signal(signal))
  }

  /**
   * Resizes the command's terminal to `rows` x `cols` (1 to 65535 each); its foreground process
   * group gets SIGWINCH. Only for commands started with `tty: true` (a terminal starts at 24x80).
   */
  async resizeTty(rows: number, cols: number): Promise<void> {
    for (const [name, v] of [['rows', rows], ['cols', cols]] as const) {
      if (!Number.isInteger(v) || v < 1 || v > 65535) {
        throw new BoxliteError('INVALID_ARGUMENT', `resizeTty: ${name} must be an integer from 1 to 65535, got ${v}`)
      }
    }
    await coded(() => this.#native.resizeTty(rows, cols))
  }
}
