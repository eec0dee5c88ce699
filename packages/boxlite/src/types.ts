/** A registry BoxLite may pull from; `insecure` allows plain http. */
export interface RegistryOptions {
  host: string
  insecure?: boolean
  username?: string
  password?: string
}

export interface RuntimeOptions {
  /** State directory (boxes, images). Default `$BOXLITE_HOME`, else `~/.boxlite`. */
  home?: string
  /**
   * Registries to pull from, with their credentials; unqualified names go to the first one.
   * Default: the comma-separated `host[:port]` lists in `BOXLITE_REGISTRIES` and
   * `BOXLITE_INSECURE_REGISTRIES` (plain http), else `registries` / `insecure_registries` in the
   * home's `config.json`.
   */
  registries?: RegistryOptions[]
  /** `auto` (default: KVM when usable, else software emulation), `kvm` or `tcg`. */
  accel?: 'auto' | 'kvm' | 'tcg'
  /** Directory holding the guest `vmlinux` and `initramfs.cpio`; found automatically when unset. */
  assetsDir?: string
  /**
   * DNS servers (`IP` or `IP:PORT`) the boxes' queries are forwarded to. Default: the
   * comma-separated list in `BOXLITE_DNS`, else the host's resolvers (`/etc/resolv.conf`).
   */
  dnsServers?: string[]
  /**
   * Start new boxes from a warm start template of their shape (cpus, memory, network or none)
   * instead of booting them: a guest booted once and saved idle, made by `runtime.warmup()` or
   * at the shape's first box start. Each box still gets its own disk, boot_id, RNG state,
   * hostname and the host's clock. Boxes with volumes always boot cold. Default: on, unless
   * `BOXLITE_WARM_START` is `0`; `false` boots every box cold.
   */
  warmStart?: boolean
}

/**
 * A box's network. `'default'`: outbound to everything, the host's 127.0.0.1 reachable as
 * `host.docker.internal` / `host.boxlite.internal`. `'none'`: no NIC, only loopback.
 * `{ allow }`: outbound only to these; `{ deny }`: to everything but these. Entries are host
 * names (exactly that name), `*.example.com` (its subdomains), IP addresses or CIDRs; the policy
 * is enforced on the host, at DNS and at each new connection.
 */
export type NetworkOptions = 'default' | 'none' | { allow: string[] } | { deny: string[] }

/** A box port published on the host. */
export interface PortOptions {
  /** Host port; 0 or absent picks a free one (see `info().ports`). */
  hostPort?: number
  /** Port inside the box, 1 to 65535. */
  guestPort: number
  /** Default `tcp`. */
  protocol?: 'tcp' | 'udp'
  /** Host address to listen on; default `127.0.0.1` (use `0.0.0.0` to listen on every address). */
  hostIp?: string
}

/** A published port as bound: `hostPort` is the port actually listened on. */
export interface PortBinding {
  hostPort: number
  guestPort: number
  protocol: 'tcp' | 'udp'
  hostIp: string
}

/** A host directory shared live into the box: a write on either side is seen by the other at once. */
export interface VolumeOptions {
  /** Absolute path of an existing host directory (resolved once, when the box is created). */
  hostPath: string
  /** Absolute, normalized path in the box; not `/`, `/proc`, `/sys`, `/dev` or below. */
  guestPath: string
  /** The box may read but not change it; enforced on the host (default false). */
  readOnly?: boolean
}

/** A volume as recorded: `hostPath` canonical. */
export interface VolumeInfo {
  hostPath: string
  guestPath: string
  readOnly: boolean
}

export interface BoxOptions {
  /** Registry reference (`python:slim`, `127.0.0.1:5000/busybox:latest`), `oci:DIR[:tag]` or `oci-archive:FILE[:tag]`. */
  image: string
  /** Unique name; optional. */
  name?: string
  /** vCPUs (default 1). */
  cpus?: number
  /** Guest memory in MiB, 128 to 65536 (default 512). */
  memoryMib?: number
  /** Environment over the image's, for every command. */
  env?: Record<string, string>
  /** Working directory over the image's. */
  workingDir?: string
  /** User over the image's: `name`, `uid`, `uid:gid` or `name:group`. */
  user?: string
  /** How long the guest may take to come up (default 30000). */
  readyTimeoutMs?: number
  /**
   * Keep the box running after this process ends, until it is stopped, removed or idle for
   * `autoStopMs`; any process on the same home can reach it. Without it the box stops cleanly
   * when the process that started it ends.
   */
  detach?: boolean
  /** Stop the box after this many milliseconds with no command running. */
  autoStopMs?: number
  /** Remove the box (record and disk) once it has stopped. */
  autoRemove?: boolean
  /** Default `'default'` (outbound to everything). Change the policy later with `box.setNetwork()`. */
  network?: NetworkOptions
  /**
   * Box ports published on the host. A fixed `hostPort` already in use fails the create
   * (`INVALID_ARGUMENT`, naming it). Needs a network (not `'none'`).
   */
  ports?: PortOptions[]
  /**
   * Host directories shared live into the box, at most 3. Whatever the box creates in them
   * (symlinks, device nodes, setuid bits, owners) is a plain file on the host.
   */
  volumes?: VolumeOptions[]
  /**
   * Capacity of the box's root filesystem in GiB, 1 to 1024 and at least the image's own disk;
   * sparse on the host, kept across stop/start. Default: the image's size plus 2 GiB.
   */
  diskSizeGb?: number
  /** Cancels the creation (image pull included). */
  signal?: AbortSignal
}

/**
 * `created` (never started), `starting`, `running`, `stopping`, `stopped` (its disk is kept), or
 * `failed` (did not boot, or ended without being asked to: `reason` says why; it can start again).
 */
export type BoxStatus = 'created' | 'starting' | 'running' | 'paused' | 'suspended' | 'stopping' | 'stopped' | 'failed'

export interface BoxInfo {
  id: string
  name: string | null
  image: string
  status: BoxStatus
  /** The VM process while running. */
  pid: number | null
  createdAt: Date
  /** When the VM last became ready; `null` if it never has. */
  startedAt: Date | null
  cpus: number
  memoryMib: number
  /** Whether the box outlives the process that started it. */
  detach: boolean
  /** Whether the box is removed once it stops. */
  autoRemove: boolean
  /** Why the box failed (or how it last stopped). */
  reason: string | null
  /** The network and its current policy (as last set by `setNetwork`). */
  network: NetworkOptions
  /**
   * The published ports: while the box runs as bound, `hostPort` being the one picked for 0;
   * otherwise as asked.
   */
  ports: PortBinding[]
  /** The shared host directories. */
  volumes: VolumeInfo[]
  /** The disk size asked for in GiB; `null`: the image's size plus 2 GiB. */
  diskSizeGb: number | null
}

/** One box's figures; zeros when it is not running. */
export interface BoxMetrics {
  /** VM CPU use since the previous sample, percent of one core. */
  cpuPercent: number
  /** Resident memory of the VM process on the host. */
  memoryBytes: number
  /** Commands started since the box last started, by any process. */
  commandsExecuted: number
  /** Commands that could not start, since the box last started. */
  execErrors: number
  /** Milliseconds from VM spawn to a guest that answered, for the current run. */
  bootDurationMs: number
  /** Payload bytes the box sent over TCP and UDP (published ports included, DNS not), since it last started. */
  networkBytesSent: number
  /** Payload bytes the box received over TCP and UDP (published ports included, DNS not), since it last started. */
  networkBytesReceived: number
  /** TCP connections opened by or to the box, since it last started. */
  networkTcpConnections: number
}

/** A saved memory snapshot of a box (`box.snapshot(name)`). */
export interface SnapshotInfo {
  name: string
  /** The box it was taken of, and that box's name then. */
  boxId: string
  boxName?: string
  /** The image that box was created from. */
  image: string
  /** When it was taken, unix milliseconds. */
  createdAt: number
  /** vCPUs and memory (every box restored from it has the same). */
  cpus: number
  memoryMib: number
  /** Size of the memory file, and of the frozen disk layer (the box's own writes). */
  memoryBytes: number
  diskBytes: number
  /** How long the box's vCPUs stood still while it was taken. */
  pausedMs: number
}

/** How a box restored from a snapshot differs from its source. */
export interface RestoreOptions {
  /** Its name (none: known by its id). */
  name?: string
  /** Keep it running after this process exits. */
  detach?: boolean
  /** Remove it once it stops. */
  autoRemove?: boolean
  /** Stop it after this long without a guest call. */
  autoStopMs?: number
}

/**
 * The shape of the boxes a warm start template serves (`runtime.warmup(options)`); each field
 * defaults as `BoxOptions` does.
 */
export interface WarmupOptions {
  /** vCPUs, 1 to 64 (default 1). */
  cpus?: number
  /** Guest memory in MiB, 128 to 65536 (default 512). */
  memoryMib?: number
  /**
   * Boxes with a network (`true`, the default) or without one (`false`). A box's `network`
   * option is taken too: `'none'` is `false`, every other form (any allow/deny policy) `true`,
   * so `warmup({ cpus, memoryMib, network })` warms the template boxes of those options use.
   */
  network?: boolean | NetworkOptions
}

/** A warm start template on disk. */
export interface TemplateInfo {
  /** Its directory (under `templates/` in the home). */
  path: string
  /** The shape of the boxes it serves; `network: false` is boxes created with `network: 'none'`. */
  cpus: number
  memoryMib: number
  network: boolean
  /** Whether this call built it (`false`: it was there already). */
  built: boolean
  /** How long building it took (one cold boot and a save), by this call or the one that built it. */
  buildMs: number
  /** Bytes it takes on disk (its RAM file is sparse: only what the idle guest touched). */
  diskBytes: number
}

/** Counters of one `Runtime` (this process's use of its home). */
export interface RuntimeMetrics {
  /** Boxes this runtime created. */
  boxesCreatedTotal: number
  /** Creates and starts by this runtime that failed. */
  boxesFailedTotal: number
  /** Boxes of the home running now, started by any process. */
  numRunningBoxes: number
  /** Commands this runtime started. */
  totalCommandsExecuted: number
  /** Commands this runtime could not start. */
  totalExecErrors: number
}

export interface ImageInfo {
  /** Normalized reference, e.g. `docker.io/library/python:slim`. */
  reference: string
  /** Manifest digest. */
  digest: string
  configDigest: string
  layers: number
  /** Bytes of the layers as stored (compressed). */
  sizeBytes: number
  pulledAt: Date
}

export type PullProgress =
  | { type: 'resolved'; reference: string; layers: number }
  | { type: 'layer'; digest: string; bytes: number }
  | { type: 'disk' }

/** What `images.remove` or `images.prune` took away. */
export interface Removed {
  /** Ids of the boxes removed (a prune with `boxes`). */
  boxes: string[]
  /** References removed. */
  images: string[]
  /** Digests of the blobs (manifests, configs, layers) deleted. */
  blobs: string[]
  /** Config digests of the base disks deleted. */
  baseDisks: string[]
  /** Bytes freed on disk. */
  bytesFreed: number
}

export interface ImageRemoveOptions {
  /**
   * Remove an image whose base disk boxes use (otherwise refused with `INVALID_STATE` naming
   * them). The base disk is kept until those boxes are removed; a later prune frees it.
   */
  force?: boolean
}

export interface PruneOptions {
  /** First remove every box that is not running (created, stopped or failed), with its disk. */
  boxes?: boolean
  /** Also remove the images no box uses (not only blobs and disks no image references). */
  all?: boolean
}

export interface PullOptions {
  onProgress?: (event: PullProgress) => void
  signal?: AbortSignal
}

export interface ExecOptions {
  /** Environment over the box's. */
  env?: Record<string, string>
  cwd?: string
  user?: string
  /** The guest kills the command (SIGKILL) after this long; `wait()` then says `timedOut`. */
  timeoutMs?: number
  /** Run on a pseudo-terminal (stderr merges into stdout). */
  tty?: boolean
  /** Aborting kills the command; `wait()` then rejects with code `ABORTED`. */
  signal?: AbortSignal
}

export interface ExitResult {
  /** The exit code, or 128 + N when signal N ended the command. */
  exitCode: number
  /** The signal that ended the command, if one did. */
  signal: number | null
  /** The command was killed because `timeoutMs` passed. */
  timedOut: boolean
}

/** How `Runtime.remove` and `Box.remove` treat a running box. */
export interface RemoveOptions {
  /** Stop a running box first instead of refusing. */
  force?: boolean
}

/** How `copyIn` and `copyOut` treat an existing target. */
export interface CopyOptions {
  /**
   * Replace an existing target (a file, or a directory as a whole). Without it a copy whose target
   * exists is refused (`ALREADY_EXISTS`, naming it) and nothing is written.
   */
  overwrite?: boolean
  /** Cancels the copy (code `ABORTED`); nothing half-copied is left. */
  signal?: AbortSignal
}

/** What a box directory entry is. Symlinks are reported as such, never followed. */
export type FileType = 'file' | 'dir' | 'symlink' | 'other'

/** One entry of a box directory, as `files.list` and `files.stat` report it. */
export interface FileEntry {
  /** Its name, without a directory (`/` for `stat('/')`). */
  name: string
  /** `file`, `dir`, `symlink`, or `other` (a device, fifo or socket). */
  type: FileType
  /** Size in bytes (a symlink's is the length of its target). */
  size: number
  /** Permission bits, e.g. `0o644`. */
  mode: number
  /** Last modification. */
  mtime: Date
}

/**
 * What `files.write` takes: text (written as UTF-8), bytes, or a stream of chunks (an async
 * iterable such as a Node `Readable`, or a web `ReadableStream`) sent one by one as the box takes them.
 */
export type WriteData = string | Uint8Array | AsyncIterable<Uint8Array | string> | ReadableStream<Uint8Array>

export interface WriteOptions {
  /** Permission bits (`0` to `0o7777`). Default: an existing file keeps its own, a new one gets `0o644`. */
  mode?: number
}

export interface MkdirOptions {
  /** Also create missing parents; an existing directory is then no error (`mkdir -p`). */
  parents?: boolean
}

export interface FileRemoveOptions {
  /** Remove a directory with everything in it (`rm -r`); without it only a file, symlink or empty directory. */
  recursive?: boolean
}

export interface WatchOptions {
  /** Also watch every subdirectory, those there now and those created later. */
  recursive?: boolean
  /** Closes the watch (in the box too); the iteration then rejects with code `ABORTED`. */
  signal?: AbortSignal
}

/** One change under a watched directory. */
export interface WatchEvent {
  /**
   * `created` (or moved in from outside the watched tree), `modified` (a file written and closed),
   * `deleted` (or moved out), `renamed` (within the watched tree, from `oldPath` to `path`).
   */
  type: 'created' | 'modified' | 'deleted' | 'renamed'
  /** The path in the box, under the watched path as it was given. */
  path: string
  /** For `renamed`: where it was before. */
  oldPath?: string
  /** Whether it is a directory. */
  isDir: boolean
}
