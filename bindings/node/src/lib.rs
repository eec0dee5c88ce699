//! Node.js addon: thin napi-rs wrappers over the `boxlite` crate. `@boxlite/core` is the typed API
//! users import; this layer only converts types, runs every long call as a Promise on napi's tokio
//! runtime, and turns runtime errors into JS errors whose `code` is our code name.

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OnceCell};
use tokio_util::sync::CancellationToken;

mod files;

/// A runtime error on its way to JS: our code name and message.
struct Failure {
    code: &'static str,
    message: String,
}

impl From<boxlite::Error> for Failure {
    fn from(e: boxlite::Error) -> Self {
        Failure { code: e.code(), message: e.to_string() }
    }
}

impl Failure {
    fn invalid(message: String) -> Self {
        boxlite::Error::InvalidArgument(message).into()
    }

    fn aborted(what: &str) -> Self {
        Failure { code: "ABORTED", message: format!("{what} was aborted") }
    }

    /// A JS `Error` with `code` set, thrown or used to reject as it is.
    fn into_js(self, env: &Env) -> Error {
        let code = self.code;
        let made = env.create_error(Error::new(Status::GenericFailure, self.message)).and_then(|mut obj| {
            obj.set_named_property("code", code)?;
            Ok(Error::from(obj.into_unknown(env)?))
        });
        made.unwrap_or_else(|e| e)
    }
}

type Outcome<T> = std::result::Result<T, Failure>;

/// Runs `fut` on napi's tokio runtime and returns a Promise; a `Failure` rejects with a coded error.
fn promise<T, F>(env: &Env, fut: F) -> Result<PromiseRaw<'_, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Outcome<T>> + Send + 'static,
{
    env.spawn_future_with_callback(async move { Ok(fut.await) }, |env, outcome| outcome.map_err(|f| f.into_js(env)))
}

/// Runs `fut` unless `token` is cancelled first; cancelling drops the future (its work stops there).
async fn cancellable<T>(token: Option<CancellationToken>, what: &str, fut: impl Future<Output = Outcome<T>>) -> Outcome<T> {
    match token {
        None => fut.await,
        Some(token) => tokio::select! {
            biased;
            _ = token.cancelled() => Err(Failure::aborted(what)),
            out = fut => out,
        },
    }
}

/// Lets JS cancel a long call (the TS layer wires an `AbortSignal` to it).
#[napi]
pub struct CancelToken {
    token: CancellationToken,
}

#[napi]
impl CancelToken {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        CancelToken { token: CancellationToken::new() }
    }

    /// Cancels every call this token was passed to.
    #[napi]
    pub fn cancel(&self) {
        self.token.cancel();
    }
}

fn token_of(token: Option<&CancelToken>) -> Option<CancellationToken> {
    token.map(|t| t.token.clone())
}

#[napi(object)]
pub struct RegistryOptions {
    pub host: String,
    pub insecure: Option<bool>,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[napi(object)]
#[derive(Default)]
pub struct RuntimeOptions {
    pub home: Option<String>,
    pub registries: Option<Vec<RegistryOptions>>,
    /// `auto`, `kvm` or `tcg`.
    pub accel: Option<String>,
    /// Directory with the guest `vmlinux` and `initramfs.cpio`.
    pub assets_dir: Option<String>,
    /// DNS servers (`IP[:PORT]`) boxes' queries go to; default `$BOXLITE_DNS`, else the host's.
    pub dns_servers: Option<Vec<String>>,
    /// Start boxes from templates of their shape instead of booting them; default on, unless
    /// `$BOXLITE_WARM_START` is `0`.
    pub warm_start: Option<bool>,
}

#[napi(object)]
pub struct BoxOptions {
    pub image: String,
    pub name: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub env: Option<BTreeMap<String, String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub ready_timeout_ms: Option<u32>,
    /// Keep running after this process ends (until stopped, removed or idle for `auto_stop_ms`).
    pub detach: Option<bool>,
    /// Stop after this many milliseconds with no command running.
    pub auto_stop_ms: Option<u32>,
    /// Remove the box (record and disk) once it has stopped.
    pub auto_remove: Option<bool>,
    /// Default: outbound to everything.
    pub network: Option<NetworkOptions>,
    /// Box ports published on the host.
    pub ports: Option<Vec<PortOptions>>,
    /// Host directories shared live into the box (at most 3).
    pub volumes: Option<Vec<VolumeOptions>>,
    /// Capacity of the box's disk in GiB, 1 to 1024; default the image's size plus 2 GiB.
    pub disk_size_gb: Option<u32>,
}

/// A host directory shared into the box.
#[napi(object)]
pub struct VolumeOptions {
    /// Absolute host directory.
    pub host_path: String,
    /// Absolute path in the box.
    pub guest_path: String,
    /// Enforced by the host: the box can read but not change it. Default false.
    pub read_only: Option<bool>,
}

/// A volume as recorded (the host path canonical).
#[napi(object)]
pub struct VolumeInfo {
    pub host_path: String,
    pub guest_path: String,
    pub read_only: bool,
}

/// A box's network: `mode` is `default` (outbound to everything), `none` (no NIC), `allow` or
/// `deny`; `entries` is the allow/deny list (names, `*.name`, IPs, CIDRs).
#[napi(object)]
pub struct NetworkOptions {
    #[napi(ts_type = "'default' | 'none' | 'allow' | 'deny'")]
    pub mode: String,
    pub entries: Option<Vec<String>>,
}

/// A box port to publish on the host.
#[napi(object)]
pub struct PortOptions {
    /// Default 127.0.0.1.
    pub host_ip: Option<String>,
    /// 0 or absent: any free port (reported in `BoxInfo.ports` once the box runs).
    pub host_port: Option<u32>,
    pub guest_port: u32,
    /// `tcp` (default) or `udp`.
    #[napi(ts_type = "'tcp' | 'udp'")]
    pub protocol: Option<String>,
}

/// A published port as bound.
#[napi(object)]
pub struct PortBinding {
    pub host_ip: String,
    pub host_port: u32,
    pub guest_port: u32,
    #[napi(ts_type = "'tcp' | 'udp'")]
    pub protocol: String,
}

#[napi(object)]
pub struct BoxInfo {
    pub id: String,
    pub name: Option<String>,
    pub image: String,
    /// `created`, `starting`, `running`, `stopping`, `stopped` or `failed`.
    pub status: String,
    /// The VM process while running.
    pub pid: Option<u32>,
    pub created_at_ms: f64,
    /// When the VM last became ready.
    pub started_at_ms: Option<f64>,
    pub cpus: u32,
    pub memory_mib: u32,
    pub detach: bool,
    pub auto_remove: bool,
    /// Why the box failed (or how it last stopped).
    pub reason: Option<String>,
    /// The network and its current policy.
    pub network: NetworkOptions,
    /// The published ports: while the box runs as bound (host port 0 replaced by the one picked),
    /// otherwise as asked.
    pub ports: Vec<PortBinding>,
    /// The shared host directories.
    pub volumes: Vec<VolumeInfo>,
    /// The disk size asked for in GiB; absent: the image's size plus 2 GiB.
    pub disk_size_gb: Option<u32>,
}

#[napi(object)]
pub struct BoxMetrics {
    /// VM CPU use since the previous sample, percent of one core.
    pub cpu_percent: f64,
    /// Resident memory of the VM process on the host.
    pub memory_bytes: f64,
    /// Commands started since the box last started, by any process.
    pub commands_executed: f64,
    /// Commands that could not start, since the box last started.
    pub exec_errors: f64,
    /// VM spawn to a guest that answered, for the current run.
    pub boot_duration_ms: f64,
    pub vm_pid: Option<u32>,
    /// Payload bytes the box sent (TCP and UDP, published ports included, DNS not), since it last started.
    pub network_bytes_sent: f64,
    /// Payload bytes the box received, since it last started.
    pub network_bytes_received: f64,
    /// TCP connections opened by or to the box, since it last started.
    pub network_tcp_connections: f64,
}

/// A saved memory snapshot (`box.snapshot(name)`).
#[napi(object)]
pub struct SnapshotInfo {
    pub name: String,
    /// The box it was taken of, and that box's name then.
    pub box_id: String,
    pub box_name: Option<String>,
    pub image: String,
    /// Unix milliseconds.
    pub created_at: f64,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Size of the memory file, and of the frozen disk layer (the box's own writes).
    pub memory_bytes: f64,
    pub disk_bytes: f64,
    /// How long the box's vCPUs stood still while it was taken.
    pub paused_ms: f64,
}

fn snapshot_info(s: boxlite::SnapshotInfo) -> SnapshotInfo {
    SnapshotInfo {
        name: s.name,
        box_id: s.box_id,
        box_name: s.box_name,
        image: s.image,
        created_at: s.created_at as f64,
        cpus: s.cpus,
        memory_mib: s.memory_mib,
        memory_bytes: s.memory_bytes as f64,
        disk_bytes: s.disk_bytes as f64,
        paused_ms: s.paused_ms as f64,
    }
}

/// The shape of the boxes a warm start template serves; absent fields: 1 cpu, 512 MiB, a network.
#[napi(object)]
#[derive(Default)]
pub struct WarmupOptions {
    pub cpus: Option<u32>,
    pub memory_mib: Option<u32>,
    /// Boxes with a network (any policy) or without one (`none`).
    pub network: Option<bool>,
}

/// A warm start template on disk (`runtime.warmup`).
#[napi(object)]
pub struct TemplateInfo {
    /// Its directory in the home.
    pub path: String,
    /// The shape of the boxes it serves.
    pub cpus: u32,
    pub memory_mib: u32,
    pub network: bool,
    /// Whether this call built it (false: it was there already).
    pub built: bool,
    /// How long building it took (by this call or the one that built it).
    pub build_ms: f64,
    /// Bytes it takes on disk (its RAM file is sparse).
    pub disk_bytes: f64,
}

fn template_info(t: boxlite::TemplateInfo) -> TemplateInfo {
    TemplateInfo {
        path: t.path.display().to_string(),
        cpus: t.shape.cpus,
        memory_mib: t.shape.memory_mib,
        network: t.shape.network,
        built: t.built,
        build_ms: t.build_ms as f64,
        disk_bytes: t.disk_bytes as f64,
    }
}

/// How a box restored from a snapshot differs from its source.
#[napi(object)]
#[derive(Default)]
pub struct RestoreOptions {
    pub name: Option<String>,
    pub detach: Option<bool>,
    pub auto_remove: Option<bool>,
    pub auto_stop_ms: Option<f64>,
}

#[napi(object)]
pub struct RuntimeMetrics {
    pub boxes_created_total: f64,
    pub boxes_failed_total: f64,
    pub num_running_boxes: f64,
    pub total_commands_executed: f64,
    pub total_exec_errors: f64,
}

#[napi(object)]
pub struct ImageInfo {
    pub reference: String,
    pub digest: String,
    pub config_digest: String,
    pub layers: u32,
    pub size_bytes: f64,
    pub pulled_at_ms: f64,
}

/// What an image removal or a prune took away.
#[napi(object)]
pub struct Removed {
    /// Ids of the boxes removed (a prune with `boxes`).
    pub boxes: Vec<String>,
    /// References removed.
    pub images: Vec<String>,
    /// Digests of the blobs deleted.
    pub blobs: Vec<String>,
    /// Config digests of the base disks deleted.
    pub base_disks: Vec<String>,
    /// Bytes freed on disk.
    pub bytes_freed: f64,
}

#[napi(object)]
#[derive(Default)]
pub struct PruneOptions {
    /// Also remove every box that is not running (created, stopped or failed).
    pub boxes: Option<bool>,
    /// Also remove the images no box uses.
    pub all: Option<bool>,
}

fn removed(r: boxlite::Removed) -> Removed {
    Removed { boxes: r.boxes, images: r.images, blobs: r.blobs, base_disks: r.base_disks, bytes_freed: r.bytes_freed as f64 }
}

/// One pull progress event: `resolved` (reference, layers), `layer` (digest, bytes) or `disk`.
#[napi(object)]
#[derive(Default)]
pub struct PullEvent {
    pub kind: String,
    pub reference: Option<String>,
    pub layers: Option<u32>,
    pub digest: Option<String>,
    pub bytes: Option<f64>,
}

#[napi(object)]
#[derive(Default)]
pub struct ExecOptions {
    pub env: Option<BTreeMap<String, String>>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    pub timeout_ms: Option<u32>,
    pub tty: Option<bool>,
}

#[napi(object)]
pub struct ExitResult {
    /// The exit code, or 128 + signal when a signal ended the command.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub timed_out: bool,
}

fn box_info(rec: boxlite::BoxRecord) -> BoxInfo {
    BoxInfo {
        id: rec.id,
        name: rec.name,
        image: rec.options.image,
        status: rec.status.to_string(),
        pid: rec.pid,
        created_at_ms: rec.created_at as f64,
        started_at_ms: rec.started_at.map(|t| t as f64),
        cpus: rec.options.cpus,
        memory_mib: rec.options.memory_mib,
        detach: rec.options.detach,
        auto_remove: rec.options.auto_remove,
        reason: rec.reason,
        network: network_options(rec.options.network),
        ports: rec.ports.into_iter().map(port_binding).collect(),
        volumes: rec
            .options
            .volumes
            .into_iter()
            .map(|v| VolumeInfo { host_path: v.host_path.to_string_lossy().into_owned(), guest_path: v.guest_path, read_only: v.read_only })
            .collect(),
        disk_size_gb: rec.options.disk_size_gb,
    }
}

fn network_options(network: boxlite::Network) -> NetworkOptions {
    let (mode, entries) = match network {
        boxlite::Network::Enabled => ("default", None),
        boxlite::Network::None => ("none", None),
        boxlite::Network::Allow(list) => ("allow", Some(list)),
        boxlite::Network::Deny(list) => ("deny", Some(list)),
    };
    NetworkOptions { mode: mode.into(), entries }
}

fn network(options: NetworkOptions) -> Outcome<boxlite::Network> {
    match (options.mode.as_str(), options.entries) {
        ("default", None) => Ok(boxlite::Network::Enabled),
        ("none", None) => Ok(boxlite::Network::None),
        ("allow", Some(list)) => Ok(boxlite::Network::Allow(list)),
        ("deny", Some(list)) => Ok(boxlite::Network::Deny(list)),
        (mode, _) => Err(Failure::invalid(format!(
            "network mode '{mode}' is not one of default, none (without entries), allow, deny (with entries)"
        ))),
    }
}

fn port_binding(p: boxlite::PortSpec) -> PortBinding {
    PortBinding { host_ip: p.host_ip, host_port: p.host_port.into(), guest_port: p.guest_port.into(), protocol: p.protocol.to_string() }
}

fn port_spec(p: PortOptions) -> Outcome<boxlite::PortSpec> {
    let port = |what: &str, value: u32| {
        u16::try_from(value).map_err(|_| Failure::invalid(format!("port {}: {what} {value} is not 0 to 65535", p.guest_port)))
    };
    let protocol = match p.protocol.as_deref() {
        None | Some("tcp") => boxlite::Protocol::Tcp,
        Some("udp") => boxlite::Protocol::Udp,
        Some(other) => return Err(Failure::invalid(format!("port {}: protocol '{other}' is not tcp or udp", p.guest_port))),
    };
    let mut spec = boxlite::PortSpec::tcp(port("hostPort", p.host_port.unwrap_or(0))?, port("guestPort", p.guest_port)?);
    spec.protocol = protocol;
    if let Some(ip) = p.host_ip {
        spec.host_ip = ip;
    }
    Ok(spec)
}

fn box_metrics(m: boxlite::BoxMetrics) -> BoxMetrics {
    BoxMetrics {
        cpu_percent: m.cpu_percent,
        memory_bytes: m.memory_bytes as f64,
        commands_executed: m.commands_executed as f64,
        exec_errors: m.exec_errors as f64,
        boot_duration_ms: m.boot_duration_ms as f64,
        vm_pid: m.vm_pid,
        network_bytes_sent: m.network_bytes_sent as f64,
        network_bytes_received: m.network_bytes_received as f64,
        network_tcp_connections: m.network_tcp_connections as f64,
    }
}

fn runtime_metrics(m: boxlite::RuntimeMetrics) -> RuntimeMetrics {
    RuntimeMetrics {
        boxes_created_total: m.boxes_created_total as f64,
        boxes_failed_total: m.boxes_failed_total as f64,
        num_running_boxes: m.num_running_boxes as f64,
        total_commands_executed: m.total_commands_executed as f64,
        total_exec_errors: m.total_exec_errors as f64,
    }
}

fn image_info(image: boxlite::Image) -> ImageInfo {
    ImageInfo {
        reference: image.reference,
        digest: image.manifest_digest,
        config_digest: image.config_digest,
        layers: image.layer_count as u32,
        size_bytes: image.size_bytes as f64,
        pulled_at_ms: image.pulled_at as f64 * 1000.0,
    }
}

fn pull_event(p: boxlite::PullProgress) -> PullEvent {
    match p {
        boxlite::PullProgress::Resolved { reference, layers } => {
            PullEvent { kind: "resolved".into(), reference: Some(reference), layers: Some(layers as u32), ..Default::default() }
        }
        boxlite::PullProgress::LayerDone { digest, bytes } => {
            PullEvent { kind: "layer".into(), digest: Some(digest), bytes: Some(bytes as f64), ..Default::default() }
        }
        boxlite::PullProgress::DiskBuilt { .. } => PullEvent { kind: "disk".into(), ..Default::default() },
    }
}

fn runtime_options(options: RuntimeOptions) -> Outcome<boxlite::RuntimeOptions> {
    let accel = options.accel.map(|a| a.parse::<boxlite::Accel>()).transpose()?;
    let registries = options
        .registries
        .unwrap_or_default()
        .into_iter()
        .map(|r| boxlite::RegistryConfig {
            host: r.host,
            insecure: r.insecure.unwrap_or(false),
            username: r.username,
            password: r.password,
        })
        .collect();
    Ok(boxlite::RuntimeOptions {
        home: options.home.map(Into::into),
        registries,
        accel,
        assets_dir: options.assets_dir.map(Into::into),
        dns_servers: options.dns_servers.unwrap_or_default(),
        warm_start: options.warm_start,
        ..Default::default()
    })
}

fn box_options(options: BoxOptions) -> Outcome<boxlite::BoxOptions> {
    let mut opts = boxlite::BoxOptions::new(options.image);
    opts.name = options.name;
    opts.cpus = options.cpus.unwrap_or(opts.cpus);
    opts.memory_mib = options.memory_mib.unwrap_or(opts.memory_mib);
    opts.env = options.env.unwrap_or_default().into_iter().collect();
    opts.working_dir = options.working_dir;
    opts.user = options.user;
    opts.ready_timeout_ms = options.ready_timeout_ms.map(u64::from).unwrap_or(opts.ready_timeout_ms);
    opts.detach = options.detach.unwrap_or(false);
    opts.auto_stop_ms = options.auto_stop_ms.map(u64::from);
    opts.auto_remove = options.auto_remove.unwrap_or(false);
    opts.network = options.network.map(network).transpose()?.unwrap_or_default();
    opts.ports = options.ports.unwrap_or_default().into_iter().map(port_spec).collect::<Outcome<_>>()?;
    opts.volumes = options
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| boxlite::Volume { host_path: v.host_path.into(), guest_path: v.guest_path, read_only: v.read_only.unwrap_or(false) })
        .collect();
    opts.disk_size_gb = options.disk_size_gb;
    Ok(opts)
}

/// A BoxLite runtime over one home directory.
#[napi]
pub struct Runtime {
    inner: boxlite::Runtime,
}

#[napi]
impl Runtime {
    /// Opens (or creates) the home and reconciles boxes whose VM died. Cheap: no VM is started.
    #[napi(constructor)]
    pub fn new(env: Env, options: Option<RuntimeOptions>) -> Result<Self> {
        let opened = runtime_options(options.unwrap_or_default()).and_then(|o| Ok(boxlite::Runtime::new(o)?));
        match opened {
            Ok(inner) => Ok(Runtime { inner }),
            Err(f) => Err(f.into_js(&env)),
        }
    }

    #[napi(getter)]
    pub fn home(&self) -> String {
        self.inner.home().display().to_string()
    }

    /// Creates a box, pulling its image if needed. It boots on `start` or its first exec.
    #[napi(ts_return_type = "Promise<Box>")]
    pub fn create<'env>(&self, env: &'env Env, options: BoxOptions, cancel: Option<&CancelToken>) -> Result<PromiseRaw<'env, JsBox>> {
        let rt = self.inner.clone();
        let token = token_of(cancel);
        promise(env, cancellable(token, "box creation", async move {
            Ok(JsBox { inner: rt.create(box_options(options)?).await? })
        }))
    }

    /// The box with this id or name, or null. A box started by another process is reachable too.
    #[napi(ts_return_type = "Promise<Box | null>")]
    pub fn get<'env>(&self, env: &'env Env, id_or_name: String) -> Result<PromiseRaw<'env, Option<JsBox>>> {
        let rt = self.inner.clone();
        promise(env, async move {
            match rt.get(&id_or_name) {
                Ok(inner) => Ok(Some(JsBox { inner })),
                Err(boxlite::Error::NotFound(_)) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Every box, oldest first.
    #[napi(ts_return_type = "Promise<BoxInfo[]>")]
    pub fn list<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Vec<BoxInfo>>> {
        let rt = self.inner.clone();
        promise(env, async move { Ok(rt.list()?.into_iter().map(box_info).collect()) })
    }

    /// Removes a box and its disk; a running box needs `force`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn remove<'env>(&self, env: &'env Env, id_or_name: String, force: bool) -> Result<PromiseRaw<'env, ()>> {
        let rt = self.inner.clone();
        promise(env, async move { Ok(rt.remove(&id_or_name, force).await?) })
    }

    /// Starts a new box continuing from snapshot `name`, with its own disk and identity.
    #[napi(ts_return_type = "Promise<Box>")]
    pub fn restore<'env>(&self, env: &'env Env, name: String, options: Option<RestoreOptions>) -> Result<PromiseRaw<'env, JsBox>> {
        let rt = self.inner.clone();
        let o = options.unwrap_or_default();
        let options = boxlite::RestoreOptions {
            name: o.name,
            detach: o.detach.unwrap_or(false),
            auto_remove: o.auto_remove.unwrap_or(false),
            auto_stop_ms: o.auto_stop_ms.map(|ms| ms as u64),
        };
        promise(env, async move { Ok(JsBox { inner: rt.restore(&name, options).await? }) })
    }

    /// Every snapshot in the home, oldest first.
    #[napi(ts_return_type = "Promise<SnapshotInfo[]>")]
    pub fn snapshots<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Vec<SnapshotInfo>>> {
        let rt = self.inner.clone();
        promise(env, async move { Ok(rt.snapshots()?.into_iter().map(snapshot_info).collect()) })
    }

    /// Removes a snapshot; boxes restored from it keep working.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn remove_snapshot<'env>(&self, env: &'env Env, name: String) -> Result<PromiseRaw<'env, ()>> {
        let rt = self.inner.clone();
        promise(env, async move { Ok(rt.remove_snapshot(&name).await?) })
    }

    /// Makes sure a warm start template for boxes of this shape exists, building it if needed
    /// (one cold boot); boxes of that shape then start from it.
    #[napi(ts_return_type = "Promise<TemplateInfo>")]
    pub fn warmup<'env>(&self, env: &'env Env, options: Option<WarmupOptions>) -> Result<PromiseRaw<'env, TemplateInfo>> {
        let rt = self.inner.clone();
        let o = options.unwrap_or_default();
        let d = boxlite::WarmupOptions::default();
        let options = boxlite::WarmupOptions {
            cpus: o.cpus.unwrap_or(d.cpus),
            memory_mib: o.memory_mib.unwrap_or(d.memory_mib),
            network: o.network.unwrap_or(d.network),
        };
        promise(env, async move { Ok(template_info(rt.warmup(options).await?)) })
    }

    /// Pulls an image (and builds its base disk); `onProgress` gets events on the JS thread.
    #[napi(ts_return_type = "Promise<ImageInfo>")]
    pub fn pull<'env>(
        &self,
        env: &'env Env,
        reference: String,
        on_progress: Option<ThreadsafeFunction<PullEvent, (), PullEvent, Status, false>>,
        cancel: Option<&CancelToken>,
    ) -> Result<PromiseRaw<'env, ImageInfo>> {
        let rt = self.inner.clone();
        let token = token_of(cancel);
        promise(env, cancellable(token, "the pull", async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let forward = async {
                while let Some(event) = rx.recv().await {
                    if let Some(callback) = &on_progress {
                        callback.call(pull_event(event), ThreadsafeFunctionCallMode::NonBlocking);
                    }
                }
            };
            let (image, ()) = tokio::join!(rt.pull(&reference, Some(tx)), forward);
            Ok(image_info(image?))
        }))
    }

    /// This runtime's counters and the number of running boxes in its home.
    #[napi(ts_return_type = "Promise<RuntimeMetrics>")]
    pub fn metrics<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, RuntimeMetrics>> {
        let rt = self.inner.clone();
        promise(env, async move { Ok(runtime_metrics(rt.metrics()?)) })
    }

    /// Images pulled into this home.
    #[napi(ts_return_type = "Promise<ImageInfo[]>")]
    pub fn images<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Vec<ImageInfo>>> {
        let rt = self.inner.clone();
        promise(env, async move { Ok(rt.images()?.into_iter().map(image_info).collect()) })
    }

    /// Removes an image (its blobs and base disk once nothing else needs them); an image whose
    /// base disk boxes use needs `force` (the disk is then kept for them).
    #[napi(ts_return_type = "Promise<Removed>")]
    pub fn remove_image<'env>(&self, env: &'env Env, reference: String, force: bool) -> Result<PromiseRaw<'env, Removed>> {
        let rt = self.inner.clone();
        promise(env, async move { Ok(removed(rt.remove_image(&reference, force).await?)) })
    }

    /// Deletes the blobs and base disks nothing uses; optionally non-running boxes and unused images first.
    #[napi(ts_return_type = "Promise<Removed>")]
    pub fn prune<'env>(&self, env: &'env Env, options: Option<PruneOptions>) -> Result<PromiseRaw<'env, Removed>> {
        let rt = self.inner.clone();
        let options = options.unwrap_or_default();
        let prune = boxlite::PruneOptions { boxes: options.boxes.unwrap_or(false), all_images: options.all.unwrap_or(false) };
        promise(env, async move { Ok(removed(rt.prune(prune).await?)) })
    }
}

/// A handle to one box.
#[napi(js_name = "Box")]
pub struct JsBox {
    inner: boxlite::LiteBox,
}

#[napi]
impl JsBox {
    #[napi(getter)]
    pub fn id(&self) -> String {
        self.inner.id().to_string()
    }

    #[napi(ts_return_type = "Promise<BoxInfo>")]
    pub fn info<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, BoxInfo>> {
        let b = self.inner.clone();
        promise(env, async move { Ok(box_info(b.info()?)) })
    }

    /// Boots the VM and waits for the guest agent.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn start<'env>(&self, env: &'env Env, cancel: Option<&CancelToken>) -> Result<PromiseRaw<'env, ()>> {
        let b = self.inner.clone();
        promise(env, cancellable(token_of(cancel), "the box start", async move { Ok(b.start().await?) }))
    }

    /// Stops the VM; the disk is kept.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn stop<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let b = self.inner.clone();
        promise(env, async move { Ok(b.stop().await?) })
    }

    /// Ends the VM at once, without syncing the guest's writes; the disk is kept.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn kill<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let b = self.inner.clone();
        promise(env, async move { Ok(b.kill().await?) })
    }

    /// Stops the VM's vCPUs, keeping its memory, until `resume`; new calls are refused meanwhile.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn pause<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let b = self.inner.clone();
        promise(env, async move { Ok(b.pause().await?) })
    }

    /// Lets a paused box run again, its clock set to the host's.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn resume<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let b = self.inner.clone();
        promise(env, async move { Ok(b.resume().await?) })
    }

    /// Saves the running box's memory and disk at one instant under `name`; the box goes on.
    #[napi(ts_return_type = "Promise<SnapshotInfo>")]
    pub fn snapshot<'env>(&self, env: &'env Env, name: String) -> Result<PromiseRaw<'env, SnapshotInfo>> {
        let b = self.inner.clone();
        promise(env, async move { Ok(snapshot_info(b.snapshot(&name).await?)) })
    }

    /// Saves the box's memory to disk and ends its VM (`suspended`); `resume` continues it.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn suspend<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let b = self.inner.clone();
        promise(env, async move { Ok(b.suspend().await?) })
    }

    /// `count` new running boxes continuing from this one as it is now.
    #[napi(ts_return_type = "Promise<Box[]>")]
    pub fn fork<'env>(&self, env: &'env Env, count: u32) -> Result<PromiseRaw<'env, Vec<JsBox>>> {
        let b = self.inner.clone();
        promise(env, async move { Ok(b.fork(count).await?.into_iter().map(|inner| JsBox { inner }).collect()) })
    }

    /// CPU, memory, command and network counters; zeros when the box is not running.
    #[napi(ts_return_type = "Promise<BoxMetrics>")]
    pub fn metrics<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, BoxMetrics>> {
        let b = self.inner.clone();
        promise(env, async move { Ok(box_metrics(b.metrics().await?)) })
    }

    /// Replaces the egress policy (`default`, `allow` or `deny`), at once on a running box and for
    /// its later starts. A network cannot be switched on or off after create.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn set_network<'env>(&self, env: &'env Env, options: NetworkOptions) -> Result<PromiseRaw<'env, ()>> {
        let b = self.inner.clone();
        promise(env, async move { Ok(b.set_network(network(options)?).await?) })
    }

    /// Copies a host file or directory into the running box (`docker cp` rules).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn copy_in<'env>(
        &self,
        env: &'env Env,
        host_path: String,
        guest_path: String,
        overwrite: bool,
        cancel: Option<&CancelToken>,
    ) -> Result<PromiseRaw<'env, ()>> {
        let b = self.inner.clone();
        let options = boxlite::CopyOptions { overwrite };
        promise(env, cancellable(token_of(cancel), "the copy", async move { Ok(b.copy_in(host_path, &guest_path, options).await?) }))
    }

    /// Copies a file or directory of the running box to the host (`docker cp` rules).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn copy_out<'env>(
        &self,
        env: &'env Env,
        guest_path: String,
        host_path: String,
        overwrite: bool,
        cancel: Option<&CancelToken>,
    ) -> Result<PromiseRaw<'env, ()>> {
        let b = self.inner.clone();
        let options = boxlite::CopyOptions { overwrite };
        promise(env, cancellable(token_of(cancel), "the copy", async move { Ok(b.copy_out(&guest_path, host_path, options).await?) }))
    }

    /// The box's files API.
    #[napi]
    pub fn files(&self) -> files::Files {
        files::Files::new(self.inner.files())
    }

    /// Starts `argv` in the box (booting it first if needed).
    #[napi(ts_return_type = "Promise<Execution>")]
    pub fn exec<'env>(
        &self,
        env: &'env Env,
        argv: Vec<String>,
        options: Option<ExecOptions>,
        cancel: Option<&CancelToken>,
    ) -> Result<PromiseRaw<'env, Execution>> {
        let b = self.inner.clone();
        let options = options.unwrap_or_default();
        let cmd = boxlite::ExecCommand {
            argv,
            env: options.env.unwrap_or_default().into_iter().collect(),
            cwd: options.cwd,
            user: options.user,
            timeout: options.timeout_ms.map(|ms| Duration::from_millis(ms.into())),
            tty: options.tty.unwrap_or(false),
            tty_size: None,
        };
        promise(env, cancellable(token_of(cancel), "the exec", async move {
            let mut exec = b.exec(cmd).await?;
            Ok(Execution {
                stdout: Arc::new(Mutex::new(exec.stdout.take())),
                stderr: Arc::new(Mutex::new(exec.stderr.take())),
                stdin: Arc::new(Mutex::new(exec.stdin.take())),
                control: exec.control(),
                waiter: Arc::new(Mutex::new(Some(exec))),
                exit: Arc::new(OnceCell::new()),
            })
        }))
    }
}

type SharedStream = Arc<Mutex<Option<boxlite::OutputStream>>>;

/// A running command. Output is pulled chunk by chunk, so a reader that stops stalls the command
/// (backpressure) instead of buffering without bound.
#[napi]
pub struct Execution {
    stdout: SharedStream,
    stderr: SharedStream,
    stdin: Arc<Mutex<Option<boxlite::Stdin>>>,
    control: boxlite::ExecControl,
    waiter: Arc<Mutex<Option<boxlite::Execution>>>,
    exit: Arc<OnceCell<std::result::Result<boxlite::ExitStatus, (&'static str, String)>>>,
}

/// Bytes handed to JS per read at most: output queued behind the first chunk is joined to it up to
/// this size, because each read is a Promise round trip and commands often write 4 KiB at a time.
const READ_BATCH_BYTES: usize = 1 << 20;

fn read_chunk<'env>(env: &'env Env, stream: &SharedStream) -> Result<PromiseRaw<'env, Option<Buffer>>> {
    let stream = stream.clone();
    promise(env, async move {
        let mut guard = stream.lock().await;
        let Some(s) = guard.as_mut() else { return Ok(None) };
        // A stream cut off by a failure (the VM died) rejects, as `wait()` does; a clean end is null.
        let Some(mut batch) = s.next().await else {
            return match s.failure() {
                Some(e) => Err(e.into()),
                None => Ok(None),
            };
        };
        while batch.len() < READ_BATCH_BYTES {
            match s.try_next() {
                Some(more) => batch.extend_from_slice(&more),
                None => break,
            }
        }
        Ok(Some(Buffer::from(batch)))
    })
}

#[napi]
impl Execution {
    /// The next stdout chunk, or null at the end.
    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn read_stdout<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Option<Buffer>>> {
        read_chunk(env, &self.stdout)
    }

    /// The next stderr chunk, or null at the end.
    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn read_stderr<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Option<Buffer>>> {
        read_chunk(env, &self.stderr)
    }

    /// Drops stdout (`"stdout"`) or stderr (`"stderr"`): its output is discarded from now on, so
    /// an unread stream never stalls the command.
    #[napi]
    pub fn discard(&self, stream: String) -> Result<()> {
        let target = match stream.as_str() {
            "stdout" => &self.stdout,
            "stderr" => &self.stderr,
            other => return Err(Error::new(Status::InvalidArg, format!("no stream named '{other}'"))),
        };
        let target = target.clone();
        // A reader in progress holds the lock; it then ends the stream itself when done.
        napi::bindgen_prelude::spawn(async move {
            target.lock().await.take();
        });
        Ok(())
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn write_stdin<'env>(&self, env: &'env Env, data: Buffer) -> Result<PromiseRaw<'env, ()>> {
        let stdin = self.stdin.clone();
        let data = data.to_vec();
        promise(env, async move {
            let guard = stdin.lock().await;
            match guard.as_ref() {
                Some(s) => Ok(s.write(&data).await?),
                None => Err(Failure { code: "INVALID_STATE", message: "stdin is closed".into() }),
            }
        })
    }

    /// Closes stdin: the command reads end-of-file. Closing twice is a no-op.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close_stdin<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let stdin = self.stdin.clone();
        promise(env, async move {
            match stdin.lock().await.take() {
                Some(s) => Ok(s.close().await?),
                None => Ok(()),
            }
        })
    }

    /// Sends a signal (default SIGKILL) to the command's process group.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn signal<'env>(&self, env: &'env Env, signal: i32) -> Result<PromiseRaw<'env, ()>> {
        let control = self.control.clone();
        promise(env, async move { Ok(control.signal(signal).await?) })
    }

    /// Resizes the command's terminal (commands started with `tty` only).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn resize_tty<'env>(&self, env: &'env Env, rows: u32, cols: u32) -> Result<PromiseRaw<'env, ()>> {
        let control = self.control.clone();
        promise(env, async move { Ok(control.resize_tty(rows, cols).await?) })
    }

    /// Waits for the command to end; may be called any number of times.
    #[napi(ts_return_type = "Promise<ExitResult>")]
    pub fn wait<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ExitResult>> {
        let waiter = self.waiter.clone();
        let exit = self.exit.clone();
        promise(env, async move {
            let status = exit
                .get_or_init(|| async move {
                    match waiter.lock().await.take() {
                        Some(exec) => exec.wait().await.map_err(|e| (e.code(), e.to_string())),
                        None => Err(("INTERNAL", "the exit status was already taken".into())),
                    }
                })
                .await;
            match status {
                Ok(s) => Ok(ExitResult { exit_code: s.exit_code(), signal: s.signal, timed_out: s.timed_out }),
                Err((code, message)) => Err(Failure { code, message: message.clone() }),
            }
        })
    }
}
