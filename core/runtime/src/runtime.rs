//! The runtime: boxes, their VMs and their state under one BoxLite home.

use crate::assets::{home_dir, GuestAssets};
use crate::engine::qemu::{self, Qemu};
use crate::engine::{Engine, GuestMemory, VmSpec};
use crate::error::{Error, Result};
use crate::guest::{Execution, Guest, LostReason};
use crate::image::{Image, ImageStore, PullProgress, RegistryConfig};
use crate::options::{Accel, BoxOptions, RuntimeOptions};
use crate::shim::{self, ShimConfig};
use crate::state::{new_box_id, BoxRecord, BoxStatus, State, StatusUpdate};
use boxlite_protocol::v1::ExecStart;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod files;
mod images;
mod snapshots;
mod templates;
pub use snapshots::{RestoreOptions, SnapshotInfo};
pub use templates::{TemplateInfo, WarmupOptions};
pub use files::{CopyOptions, FileEntry, FileType, FileWriter, Files, MkdirOptions, ReadStream, RemoveOptions, WatchEvent, WatchEventKind, WatchOptions, WatchStream, WriteOptions};
pub use images::PruneOptions;

/// Environment variable for the default home.
pub const HOME_ENV: &str = "BOXLITE_HOME";
/// Environment variable for the default accelerator.
pub const ACCEL_ENV: &str = "BOXLITE_ACCEL";
/// Environment variable that turns warm start off (`0`) for runtimes that do not say.
pub const WARM_START_ENV: &str = "BOXLITE_WARM_START";
/// How long a stop may take in all (graceful, then hard) before the supervisor is killed.
const STOP_WAIT: Duration = Duration::from_secs(25);
/// How long a caller whose connection broke waits for the supervisor to record why.
const LOST_REASON_WAIT: Duration = Duration::from_secs(1);

/// A BoxLite runtime over one home directory. Cheap to clone; clones share everything.
/// Each running box has a supervisor process of its own: a box keeps running when the runtime
/// is dropped; it stops when the process that started it ends, unless it is `detach`ed.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    home: PathBuf,
    state: Mutex<State>,
    images: ImageStore,
    registries: Vec<RegistryConfig>,
    accel: Accel,
    assets_dir: Option<PathBuf>,
    /// Where boxes' DNS queries go (`IP:PORT`); empty: the host's resolvers.
    dns_servers: Vec<String>,
    /// Start boxes from templates.
    warm_start: bool,
    /// Templates that could not be made in this process, by directory name, with why: their
    /// boxes boot cold without trying again.
    template_failures: Mutex<HashMap<String, String>>,
    engine: Mutex<Option<Arc<Qemu>>>,
    /// One slot per box this process has touched: serializes its start/stop here, and keeps
    /// the connection to its supervisor.
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Attached>>>>>,
    metrics: Counters,
}

/// Counters of this runtime instance.
#[derive(Default)]
struct Counters {
    boxes_created: AtomicU64,
    boxes_failed: AtomicU64,
    commands: AtomicU64,
    exec_errors: AtomicU64,
}

/// A connection to a running box's supervisor.
struct Attached {
    guest: Guest,
    shim_pid: u32,
}

/// A command to run in a box.
#[derive(Clone, Debug, Default)]
pub struct ExecCommand {
    /// Program (looked up in the box's PATH) and its arguments.
    pub argv: Vec<String>,
    /// Extra environment over the box's.
    pub env: Vec<(String, String)>,
    /// Working directory over the box's.
    pub cwd: Option<String>,
    /// User over the box's.
    pub user: Option<String>,
    /// Killed after this long (enforced in the guest).
    pub timeout: Option<Duration>,
    /// Run on a pseudo-terminal (stderr merges into stdout).
    pub tty: bool,
    /// The terminal's (rows, columns) when `tty`; 24x80 when unset.
    pub tty_size: Option<(u32, u32)>,
}

impl ExecCommand {
    /// `program` with `args`.
    pub fn new<I, S>(program: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut argv = vec![program.into()];
        argv.extend(args.into_iter().map(Into::into));
        ExecCommand { argv, ..Default::default() }
    }
}

/// A handle to one box. Cheap to clone.
#[derive(Clone)]
pub struct LiteBox {
    rt: Runtime,
    id: String,
}

impl Runtime {
    /// Opens the runtime: creates the home if needed and reconciles boxes whose VM died.
    pub fn new(mut options: RuntimeOptions) -> Result<Self> {
        let home = options
            .home
            .or_else(|| std::env::var_os(HOME_ENV).filter(|h| !h.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| home_dir().join(".boxlite"));
        let accel = match options.accel {
            Some(a) => a,
            None => std::env::var(ACCEL_ENV).unwrap_or_default().parse()?,
        };
        if options.registries.is_empty() {
            options.registries = crate::options::default_registries(&home)?;
        }
        // Private to the user: box disks, sockets and logs are nobody else's business.
        create_private_dir(&home)?;
        for dir in ["db", "images", "boxes"] {
            create_private_dir(&home.join(dir))?;
        }
        let db = home.join("db").join("boxlite.db");
        let state = State::open(&db).map_err(|e| match e {
            Error::Database(e) => Error::Storage {
                context: format!("open the state database {}", db.display()),
                source: std::io::Error::other(e.to_string()),
            },
            other => other,
        })?;
        let mut images = ImageStore::new(home.join("images"))?;
        if let Some(limit) = options.max_unpacked_bytes {
            images = images.with_max_unpacked_bytes(limit);
        }
        let dns_servers = crate::net::dns_servers(&options.dns_servers)?;
        let warm_start = options.warm_start.unwrap_or_else(|| std::env::var(WARM_START_ENV).map_or(true, |v| v != "0"));
        let rt = Runtime {
            inner: Arc::new(Inner {
                home,
                state: Mutex::new(state),
                images,
                registries: options.registries,
                accel,
                assets_dir: options.assets_dir,
                dns_servers,
                warm_start,
                template_failures: Mutex::new(HashMap::new()),
                engine: Mutex::new(None),
                slots: Mutex::new(HashMap::new()),
                metrics: Counters::default(),
            }),
        };
        // The state lock is taken and released per call: `reconcile` takes it again.
        let records = rt.state().list()?;
        for rec in records {
            rt.reconcile(rec)?;
        }
        Ok(rt)
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.inner.home
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn engine(&self) -> Result<Arc<Qemu>> {
        let mut engine = self.inner.engine.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = engine.as_ref() {
            return Ok(e.clone());
        }
        let e = Arc::new(Qemu::new(self.inner.accel)?);
        *engine = Some(e.clone());
        Ok(e)
    }

    fn slot(&self, id: &str) -> Arc<tokio::sync::Mutex<Option<Attached>>> {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(id.to_string()).or_default().clone()
    }

    fn box_dir(&self, id: &str) -> PathBuf {
        self.inner.home.join("boxes").join(id)
    }

    /// A record that says a supervisor is at work while none is (it was killed, or the machine
    /// restarted) is corrected, and the files it left are removed. Records of a box whose start
    /// or stop holds its lock are left to that process.
    fn reconcile(&self, rec: BoxRecord) -> Result<BoxRecord> {
        let dir = self.box_dir(&rec.id);
        if !rec.status.is_active() {
            // Chunks of a copy whose process died with the VM: nothing reads them any more.
            // Under the box's lock, so no start (and with it no copy) is under way.
            if std::fs::read_dir(crate::engine::inbox_dir(&dir)).is_ok_and(|mut d| d.next().is_some()) {
                if let Some(_lock) = BoxLock::try_lock(&dir) {
                    let _ = crate::engine::clear_inbox(&dir);
                }
            }
            return Ok(rec);
        }
        if rec.shim_pid.is_some_and(|pid| shim::alive(pid, &dir)) {
            return Ok(rec);
        }
        if !dir.exists() {
            return self.mark_supervisor_gone(rec);
        }
        match BoxLock::try_lock(&dir) {
            Some(_lock) => self.mark_supervisor_gone(rec),
            None => Ok(rec), // a start or stop is under way elsewhere
        }
    }

    /// Records a box whose supervisor is gone, with the holder of its lock being us.
    fn mark_supervisor_gone(&self, mut rec: BoxRecord) -> Result<BoxRecord> {
        let dir = self.box_dir(&rec.id);
        let (status, reason) = match (rec.status, rec.shim_pid) {
            (BoxStatus::Stopping, _) => (BoxStatus::Stopped, None),
            (_, Some(pid)) => (BoxStatus::Failed, Some(format!("the box's supervisor process (pid {pid}) ended unexpectedly; its VM ended with it"))),
            (_, None) => (BoxStatus::Failed, Some("the box's supervisor never started".to_string())),
        };
        self.state().update(&rec.id, status, StatusUpdate { reason: reason.clone(), ..Default::default() })?;
        for f in shim::runtime_files(&dir) {
            let _ = std::fs::remove_file(f);
        }
        let _ = crate::engine::clear_inbox(&dir);
        rec.status = status;
        rec.reason = reason;
        rec.pid = None;
        rec.shim_pid = None;
        Ok(rec)
    }

    /// Pulls an image (or loads a local OCI layout) and builds its base disk.
    pub async fn pull(&self, reference: &str, progress: Option<tokio::sync::mpsc::UnboundedSender<PullProgress>>) -> Result<Image> {
        self.inner.images.pull(reference, &self.inner.registries, progress).await
    }

    /// Every image pulled into this home.
    pub fn images(&self) -> Result<Vec<Image>> {
        self.inner.images.list()
    }

    async fn image(&self, reference: &str) -> Result<Image> {
        match self.inner.images.get(reference, &self.inner.registries)? {
            Some(image) if image.base_disk.is_file() => Ok(image),
            _ => self.pull(reference, None).await,
        }
    }

    /// Creates a box (pulling its image if needed). It boots on `start` or its first exec.
    pub async fn create(&self, mut options: BoxOptions) -> Result<LiteBox> {
        options.validate()?;
        options.volumes = crate::options::volumes::canonicalize(&options.volumes)?;
        if let Some(name) = &options.name {
            if self.state().get(name)?.is_some() {
                return Err(Error::AlreadyExists(format!("a box named '{name}' already exists; choose another name or remove that box")));
            }
        }
        let started = Instant::now();
        // Until the record names the base disk, nothing else keeps a prune from deleting it.
        let _hold = self.inner.images.hold().await?;
        let image = match self.image(&options.image).await {
            Ok(image) => image,
            Err(e) => {
                self.inner.metrics.boxes_failed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let disk_size = match disk_size_bytes(options.disk_size_gb, &image) {
            Ok(size) => size,
            Err(e) => {
                self.inner.metrics.boxes_failed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let id = new_box_id();
        let rec = BoxRecord {
            id: id.clone(),
            name: options.name.clone(),
            options,
            image,
            status: BoxStatus::Created,
            pid: None,
            created_at: shim::now_millis(),
            shim_pid: None,
            reason: None,
            started_at: None,
            ports: Vec::new(),
        };
        // The directory and disk first, the record last: a create that fails (a full disk)
        // leaves neither, and reports the first error, not the cleanup's.
        let dir = self.box_dir(&id);
        let made = create_private_dir(&dir)
            .and_then(|_| qemu::create_overlay(&rec.image.base_disk, "raw", &dir.join("disk.qcow2"), disk_size))
            .and_then(|_| self.state().insert(&rec));
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&dir);
            self.inner.metrics.boxes_failed.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        self.inner.metrics.boxes_created.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(box_id = id, ms = started.elapsed().as_millis() as u64, "box created");
        Ok(LiteBox { rt: self.clone(), id })
    }

    /// A box by id or name.
    pub fn get(&self, id_or_name: &str) -> Result<LiteBox> {
        let found = self.state().get(id_or_name)?;
        match found {
            Some(rec) => Ok(LiteBox { rt: self.clone(), id: rec.id }),
            None => Err(Error::NotFound(format!("no box with id or name '{id_or_name}'"))),
        }
    }

    /// Every box, oldest first, with current status.
    pub fn list(&self) -> Result<Vec<BoxRecord>> {
        let records = self.state().list()?;
        records.into_iter().map(|rec| self.reconcile(rec)).collect()
    }

    /// Removes a box and its disk. A running box needs `force` (it is then stopped first).
    pub async fn remove(&self, id_or_name: &str, force: bool) -> Result<()> {
        let id = self.get(id_or_name)?.id;
        match self.remove_once(&id, force).await {
            // A full disk cannot even record the removal: free the box's own disk first, then
            // record it. Its space comes back once the VM process, which dies with its
            // supervisor, has closed it.
            Err(e) if e.is_disk_full() && !self.supervisor_alive(&id)? => {
                let disk = self.box_dir(&id).join("disk.qcow2");
                // (After a snapshot it is a symlink to the overlay in use: free that too.)
                if let Ok(target) = std::fs::canonicalize(&disk) {
                    std::fs::remove_file(&target).or_else(not_found_ok).map_err(|e| Error::storage("remove", &target, e))?;
                }
                std::fs::remove_file(&disk).or_else(not_found_ok).map_err(|e| Error::storage("remove", disk, e))?;
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    match self.remove_once(&id, force).await {
                        Err(e) if e.is_disk_full() && Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                        r => return r,
                    }
                }
            }
            r => r,
        }
    }

    async fn remove_once(&self, id: &str, force: bool) -> Result<()> {
        let rec = self.record(id)?;
        if rec.status.is_active() && !force {
            return Err(Error::InvalidState(format!(
                "box {} is {}; stop it first or remove it with force",
                rec.id, rec.status
            )));
        }
        // With force: stop it, and again if a start elsewhere won the race for its lock.
        let mut attempts = 0;
        let (_guard, _lock) = loop {
            if force {
                self.stop_box(&rec.id, false).await?;
            }
            let slot = self.slot(&rec.id);
            let guard = slot.lock_owned().await;
            let lock = BoxLock::lock(&self.box_dir(&rec.id)).await?;
            let now = self.record_locked(&rec.id)?;
            if !now.status.is_active() {
                break (guard, lock);
            }
            attempts += 1;
            if !force || attempts >= 5 {
                return Err(Error::InvalidState(format!("box {} was started again while being removed; try again", rec.id)));
            }
        };
        self.state().delete(&rec.id)?;
        let dir = self.box_dir(&rec.id);
        std::fs::remove_dir_all(&dir).or_else(not_found_ok).map_err(|e| Error::storage("remove", dir, e))?;
        self.inner.slots.lock().unwrap_or_else(|p| p.into_inner()).remove(&rec.id);
        // Snapshot layers only this box's disk chained onto go with it.
        if let Err(e) = self.collect_layers().await {
            tracing::debug!("collecting snapshot layers: {e}");
        }
        Ok(())
    }

    /// Whether the supervisor recorded for box `id` still runs.
    fn supervisor_alive(&self, id: &str) -> Result<bool> {
        let rec = self.state().get(id)?;
        Ok(rec.and_then(|r| r.shim_pid).is_some_and(|pid| shim::alive(pid, &self.box_dir(id))))
    }

    fn record(&self, id: &str) -> Result<BoxRecord> {
        let found = self.state().get(id)?;
        self.reconcile(found.ok_or_else(|| removed(id))?)
    }

    /// The box's record for a caller that holds its lock, so nobody else is starting or stopping
    /// it: a supervisor that is gone is recorded so.
    fn record_locked(&self, id: &str) -> Result<BoxRecord> {
        let found = self.state().get(id)?;
        let rec = found.ok_or_else(|| removed(id))?;
        let dir = self.box_dir(id);
        if rec.status.is_active() && !rec.shim_pid.is_some_and(|pid| shim::alive(pid, &dir)) {
            return self.mark_supervisor_gone(rec);
        }
        Ok(rec)
    }

    /// Connects to the box's supervisor, starting one (which boots the VM) unless the box is
    /// already running, whichever process started it.
    async fn start_box(&self, id: &str) -> Result<Guest> {
        let slot = self.slot(id);
        let mut live = slot.lock().await;
        let rec = self.record(id)?;
        if let Some(a) = live.as_ref().filter(|a| rec.status.is_up() && rec.shim_pid == Some(a.shim_pid)) {
            return Ok(a.guest.clone());
        }
        *live = None;
        let dir = self.box_dir(id);
        let _lock = BoxLock::lock(&dir).await?;
        let rec = self.record_locked(id)?;
        let shim_pid = match (rec.status, rec.shim_pid) {
            (BoxStatus::Running | BoxStatus::Paused, Some(pid)) => pid,
            (BoxStatus::Starting | BoxStatus::Stopping, _) => {
                return Err(Error::InvalidState(format!("box {id} is {} in another process; try again", rec.status)))
            }
            _ => self.spawn_supervisor(&rec).await?,
        };
        let guest = Guest::connect(&shim::socket(&dir)).await?.with_lost_reason(self.lost_reason(id));
        *live = Some(Attached { guest: guest.clone(), shim_pid });
        Ok(guest)
    }

    /// Starts the box's supervisor and waits until its guest answers; returns the supervisor's
    /// pid. A box with no saved memory of its own starts from its shape's template where it can
    /// (warm start), and boots cold if that fails.
    async fn spawn_supervisor(&self, rec: &BoxRecord) -> Result<u32> {
        let started = self.start_warm_or_cold(rec).await;
        if started.is_err() {
            self.inner.metrics.boxes_failed.fetch_add(1, Ordering::Relaxed);
        }
        started
    }

    async fn start_warm_or_cold(&self, rec: &BoxRecord) -> Result<u32> {
        let own_memory = self.box_dir(&rec.id).join(snapshots::MEMORY_FILE);
        if own_memory.is_file() && !self.saved_memory_fits(&rec.id) {
            // Another build saved it: it cannot load here. The box boots from its disk, which has
            // everything that was synced, as after a power cut.
            tracing::warn!(box_id = rec.id, "booting afresh: its suspended memory was saved by another build (VM engine, kernel, agent or devices) and cannot be loaded");
            self.discard_saved_memory(&rec.id)?;
        }
        // Volumes are set up at boot, from the kernel command line: their boxes boot cold.
        let shape = WarmupOptions { cpus: rec.options.cpus, memory_mib: rec.options.memory_mib, network: rec.options.network.enabled() };
        if !own_memory.is_file() && rec.options.volumes.is_empty() {
            if let Some(template) = self.template_for(&shape).await {
                match self.spawn_supervisor_from(rec, Some(template)).await {
                    Err(Error::GuestBoot(why)) if why.contains(shim::TEMPLATE_FAULT) => {
                        tracing::debug!(box_id = rec.id, "booting cold: starting from the template failed: {why}");
                        self.template_failed(&shape, &why);
                        self.remove_template(&shape);
                    }
                    other => return other,
                }
            }
        }
        match self.spawn_supervisor_from(rec, None).await {
            // Suspended memory that does not load (saved by a build before the record existed,
            // or damaged) would fail every start until a kill discarded it: it is discarded now,
            // and the box boots from its disk as after a power cut.
            Err(Error::GuestBoot(why)) if rec.status == BoxStatus::Suspended && why.contains(shim::MEMORY_FAULT) => {
                tracing::warn!(box_id = rec.id, "booting afresh: its suspended memory did not load: {why}");
                self.discard_saved_memory(&rec.id)?;
                self.spawn_supervisor_from(rec, None).await
            }
            other => other,
        }
    }

    async fn spawn_supervisor_from(&self, rec: &BoxRecord, template: Option<templates::Template>) -> Result<u32> {
        let engine = self.engine()?;
        let assets = GuestAssets::find(self.inner.assets_dir.as_deref())?;
        let dir = self.box_dir(&rec.id);
        let from_template = template.is_some();
        let (incoming, memory) = match template {
            Some(t) => (Some(t.state), GuestMemory::FromTemplate(t.ram)),
            // A suspended box, or one restored from a snapshot, continues from its saved memory.
            None => (Some(dir.join(snapshots::MEMORY_FILE)).filter(|m| m.is_file()), GuestMemory::Private),
        };
        let spec = VmSpec {
            cpus: rec.options.cpus,
            memory_mib: rec.options.memory_mib,
            disk: dir.join("disk.qcow2"),
            kernel: assets.kernel.clone(),
            initrd: assets.initrd.clone(),
            box_dir: dir.clone(),
            network: rec.options.network.enabled(),
            hostname: crate::net::hostname(rec.name.as_deref(), &rec.id),
            volumes: rec.options.volumes.clone(),
            incoming,
            memory,
        };
        let net = match rec.options.network.enabled() {
            false => None,
            true => Some(shim::NetHelperSpec {
                binary: shim::client::helper_binary(crate::net::NET_BIN, crate::net::NET_ENV, "the box network helper", &assets.dirs())?,
                config: crate::net::HelperConfig::new(&dir, &rec.options.network, &rec.options.ports, self.inner.dns_servers.clone()),
            }),
        };
        let config = ShimConfig {
            box_id: rec.id.clone(),
            box_dir: dir.clone(),
            db: self.inner.home.join("db").join("boxlite.db"),
            vm: engine.command(&spec)?,
            agent_socket: spec.agent_socket(),
            output_socket: Some(spec.output_socket()),
            owner_pid: (!rec.options.detach).then(std::process::id),
            ready_timeout_ms: rec.options.ready_timeout_ms,
            auto_stop_ms: rec.options.auto_stop_ms.filter(|ms| *ms > 0),
            auto_remove: rec.options.auto_remove,
            net,
            hostname: spec.hostname.clone(),
            from_template,
        };
        crate::engine::check_socket_path(&shim::socket(&dir))?;
        let binary = shim::client::binary(&assets.dirs())?;
        self.state().update(&rec.id, BoxStatus::Starting, StatusUpdate::default())?;
        let wait = Duration::from_millis(rec.options.ready_timeout_ms) + Duration::from_secs(10);
        match shim::client::start(&binary, &config, wait).await {
            Ok(started) => {
                tracing::debug!(box_id = rec.id, boot_ms = started.boot_ms, vm_pid = started.vm_pid, from_template, "box ready");
                Ok(started.shim_pid)
            }
            Err(e) => {
                // The supervisor records its own failures; one that never got that far is
                // recorded here.
                // (Bound first: the state lock must be released before `update` takes it again.)
                let now = self.state().get(&rec.id);
                if let Ok(Some(now)) = now {
                    if now.status == BoxStatus::Starting {
                        let _ = self.state().update(&rec.id, BoxStatus::Failed, StatusUpdate { reason: Some(first_line(&e.to_string())), ..Default::default() });
                    }
                }
                Err(e)
            }
        }
    }

    /// What a caller whose connection to the box broke is told: the reason its supervisor
    /// recorded (waiting up to a second for it), e.g. "the box's VM process was killed by signal 9".
    fn lost_reason(&self, id: &str) -> LostReason {
        let rt = Arc::downgrade(&self.inner);
        let id = id.to_string();
        Arc::new(move || {
            let rt = rt.clone();
            let id = id.clone();
            Box::pin(async move {
                let deadline = Instant::now() + LOST_REASON_WAIT;
                loop {
                    let inner = rt.upgrade()?;
                    let rec = Runtime { inner }.record(&id).ok()?;
                    if !rec.status.is_active() {
                        let what = rec.reason.unwrap_or_else(|| format!("box {id} was stopped"));
                        return Some(format!("box {id} is {}: {what}", rec.status));
                    }
                    if Instant::now() >= deadline {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
    }

    /// Stops the box, whichever process started it: graceful (the agent syncs and unmounts the
    /// disk) unless `force`, through its supervisor, which ends the VM hard if it takes too long.
    async fn stop_box(&self, id: &str, force: bool) -> Result<()> {
        // A suspended box's page cache holds writes its disk has not seen: a graceful stop
        // continues it first so that the agent can sync them (a forced one drops them).
        if !force && self.record(id)?.status == BoxStatus::Suspended {
            self.start_box(id).await?;
        }
        let slot = self.slot(id);
        let mut live = slot.lock().await;
        *live = None;
        let dir = self.box_dir(id);
        let _lock = BoxLock::lock(&dir).await?;
        let rec = self.record_locked(id)?;
        if rec.status == BoxStatus::Suspended {
            return LiteBox { rt: self.clone(), id: id.to_string() }.discard_suspended();
        }
        let (true, Some(pid)) = (rec.status.is_active(), rec.shim_pid) else { return Ok(()) };
        let asked = async {
            let guest = Guest::connect(&shim::socket(&dir)).await?;
            guest.shim().stop(boxlite_protocol::v1::StopRequest { force }).await.map_err(|s| Error::Guest(s.message().to_string()))?;
            Ok::<(), Error>(())
        };
        if let Err(e) = tokio::time::timeout(STOP_WAIT, asked).await.unwrap_or_else(|_| Err(Error::Engine("timed out".into()))) {
            tracing::debug!(box_id = id, "stop through the supervisor failed ({e}); signalling it");
        }
        // Whatever the answer, the box is stopped once its supervisor has exited.
        let deadline = Instant::now() + STOP_WAIT;
        let mut signalled = false;
        while shim::alive(pid, &dir) {
            if Instant::now() >= deadline {
                if signalled {
                    return Err(Error::Engine(format!("the supervisor of box {id} (pid {pid}) did not stop")));
                }
                // SAFETY: signals the supervisor recorded for this box (checked alive above).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                signalled = true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match self.record_locked(id) {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()), // (gone: an auto_remove box removed itself)
            Err(e) => Err(e),
        }
    }

    /// Counters of this runtime instance and the number of running boxes in its home.
    pub fn metrics(&self) -> Result<RuntimeMetrics> {
        let m = &self.inner.metrics;
        let running = self.list()?.iter().filter(|b| b.status == BoxStatus::Running).count() as u64;
        Ok(RuntimeMetrics {
            boxes_created_total: m.boxes_created.load(Ordering::Relaxed),
            boxes_failed_total: m.boxes_failed.load(Ordering::Relaxed),
            num_running_boxes: running,
            total_commands_executed: m.commands.load(Ordering::Relaxed),
            total_exec_errors: m.exec_errors.load(Ordering::Relaxed),
        })
    }
}

/// Counters of one runtime instance (this process's use of the home).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RuntimeMetrics {
    /// Boxes created by this runtime.
    pub boxes_created_total: u64,
    /// Creates and starts by this runtime that failed.
    pub boxes_failed_total: u64,
    /// Boxes of the home running now (started by any process).
    pub num_running_boxes: u64,
    /// Commands this runtime asked boxes to run (including those that could not start).
    pub total_commands_executed: u64,
    /// Commands this runtime could not start.
    pub total_exec_errors: u64,
}

/// Metrics of one box.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct BoxMetrics {
    /// VM CPU use since the previous sample, percent of one core (0 when not running).
    pub cpu_percent: f64,
    /// Resident memory of the VM process on the host, bytes (0 when not running).
    pub memory_bytes: u64,
    /// Commands started in the box since it last started, from any process.
    pub commands_executed: u64,
    /// Commands that could not start, since it last started.
    pub exec_errors: u64,
    /// Milliseconds from VM spawn to a guest that answered, for the current run.
    pub boot_duration_ms: u64,
    /// The VM process's pid, while running.
    pub vm_pid: Option<u32>,
    /// Bytes the box sent to the network, since it last started.
    pub network_bytes_sent: u64,
    /// Bytes the box received from the network, since it last started.
    pub network_bytes_received: u64,
    /// TCP connections opened by or to the box, since it last started.
    pub network_tcp_connections: u64,
}

/// The cross-process lock of one box (`boxes/<id>/lock`), held while it starts, stops or is removed.
struct BoxLock {
    _file: std::fs::File,
}

impl BoxLock {
    fn open(dir: &Path) -> Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("lock");
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!("box directory {} does not exist (the box was removed)", dir.display()))
            } else {
                Error::storage("open", path, e)
            }
        })
    }

    /// Waits for the lock (another process may be starting or stopping the box).
    async fn lock(dir: &Path) -> Result<BoxLock> {
        Ok(BoxLock { _file: flock_exclusive(Self::open(dir)?).await? })
    }

    /// The lock if nobody holds it now.
    fn try_lock(dir: &Path) -> Option<BoxLock> {
        let file = Self::open(dir).ok()?;
        // SAFETY: flock on a descriptor we own.
        (unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0).then_some(BoxLock { _file: file })
    }
}

/// Waits, off the async threads, for an exclusive `flock` on `file` (held until it is closed).
pub(crate) async fn flock_exclusive(file: std::fs::File) -> Result<std::fs::File> {
    tokio::task::spawn_blocking(move || {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::Internal(format!("flock: {}", std::io::Error::last_os_error())));
        }
        Ok(file)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}

/// Creates `path` (0700) if needed; one made by an older version that others can read is closed
/// (where the filesystem allows: a read-only home stays readable).
/// The box disk's size in bytes for `disk_size_gb` (None: the image's own size); a size below
/// the image's base disk is refused naming both.
fn disk_size_bytes(disk_size_gb: Option<u32>, image: &Image) -> Result<Option<u64>> {
    let Some(gb) = disk_size_gb else { return Ok(None) };
    const GIB: u64 = 1 << 30;
    let base = std::fs::metadata(&image.base_disk).map_err(|e| Error::storage("stat", &image.base_disk, e))?.len();
    let asked = u64::from(gb) * GIB;
    if asked < base {
        return Err(Error::InvalidArgument(format!(
            "disk_size_gb {gb} is smaller than the disk of image {} ({:.1} GiB): ask for at least {} GiB or leave it unset",
            image.reference,
            base as f64 / GIB as f64,
            base.div_ceil(GIB)
        )));
    }
    Ok(Some(asked))
}

pub(crate) fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) => return Err(Error::storage("create", path, e)),
    }
    let meta = std::fs::metadata(path).map_err(|e| Error::storage("stat", path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// Treats "already gone" as done when removing a file or directory.
pub(crate) fn not_found_ok(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) }
}

fn removed(id: &str) -> Error {
    Error::NotFound(format!("box {id} does not exist (it was removed)"))
}

/// The error of a call a paused box cannot take.
pub(crate) fn paused(id: &str) -> Error {
    Error::InvalidState(format!("box {id} is paused: resume() it first"))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

impl LiteBox {
    /// The box id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The box's record with its current status.
    pub fn info(&self) -> Result<BoxRecord> {
        self.rt.record(&self.id)
    }

    /// Boots the VM and waits for the guest (no-op if this process already runs it).
    pub async fn start(&self) -> Result<()> {
        self.rt.start_box(&self.id).await.map(|_| ())
    }

    /// Stops the VM; the disk is kept.
    pub async fn stop(&self) -> Result<()> {
        self.rt.stop_box(&self.id, false).await
    }

    /// Ends the VM at once, without syncing the guest's writes; the disk is kept.
    pub async fn kill(&self) -> Result<()> {
        self.rt.stop_box(&self.id, true).await
    }

    /// Stops the VM's vCPUs and keeps its memory: processes, files and connections stay as they
    /// are, using no CPU, until [`resume`](Self::resume). Commands under way wait and go on after
    /// the resume; new calls are refused (`InvalidState`) meanwhile. The box is `paused` in
    /// `info()` from any process. Pausing a paused box does nothing; a box that is not running
    /// cannot be paused.
    pub async fn pause(&self) -> Result<()> {
        self.pause_or_resume(true).await
    }

    /// Lets a paused box run again, its clock set to the host's; does nothing on a running box.
    pub async fn resume(&self) -> Result<()> {
        self.pause_or_resume(false).await
    }

    async fn pause_or_resume(&self, pause: bool) -> Result<()> {
        let what = if pause { "paused" } else { "resumed" };
        let rec = self.info()?;
        if rec.status == BoxStatus::Suspended {
            if pause {
                return Err(Error::InvalidState(format!("box {} is suspended: resume() it first", self.id)));
            }
            return self.start().await;
        }
        if !rec.status.is_up() {
            return Err(Error::InvalidState(format!("box {} is {}: only a running box can be {what}; start it first", self.id, rec.status)));
        }
        let guest = Guest::connect(&shim::socket(&self.rt.box_dir(&self.id))).await?;
        let mut shim = guest.shim();
        let reply = if pause {
            shim.pause(boxlite_protocol::v1::PauseRequest {}).await.map(|_| ())
        } else {
            shim.resume(boxlite_protocol::v1::ResumeRequest {}).await.map(|_| ())
        };
        reply.map_err(|s| match s.code() {
            tonic::Code::FailedPrecondition => Error::InvalidState(s.message().to_string()),
            _ => Error::Engine(format!("box {} could not be {what}: {}", self.id, s.message())),
        })
    }

    /// The box's metrics; zeros (and no pid) when it is not running.
    pub async fn metrics(&self) -> Result<BoxMetrics> {
        let rec = self.info()?;
        if !rec.status.is_up() {
            return Ok(BoxMetrics::default());
        }
        // Asks the running supervisor directly: reading metrics never boots a box.
        let guest = Guest::connect(&shim::socket(&self.rt.box_dir(&self.id))).await?;
        let s = guest.shim().status(boxlite_protocol::v1::StatusRequest {}).await.map_err(|s| Error::Guest(s.message().to_string()))?.into_inner();
        Ok(BoxMetrics {
            cpu_percent: s.cpu_percent,
            memory_bytes: s.vm_rss_bytes,
            commands_executed: s.commands_executed,
            exec_errors: s.exec_errors,
            boot_duration_ms: s.boot_ms,
            vm_pid: Some(s.vm_pid),
            network_bytes_sent: s.network_bytes_sent,
            network_bytes_received: s.network_bytes_received,
            network_tcp_connections: s.network_tcp_connections,
        })
    }

    /// Replaces the box's egress policy (an allow or deny list, or everything allowed), on the
    /// running box at once and for its later starts. A box created with network 'none' keeps it.
    pub async fn set_network(&self, network: crate::net::Network) -> Result<()> {
        network.validate()?;
        // Held through the update: a start in progress (in any process) reads the policy under it.
        let _lock = BoxLock::lock(&self.rt.box_dir(&self.id)).await?;
        let rec = self.rt.record_locked(&self.id)?;
        if !rec.options.network.enabled() || !network.enabled() {
            return Err(Error::InvalidArgument(
                "a box's network cannot be switched on or off after it is created; set its policy (allow/deny lists) instead".into(),
            ));
        }
        if rec.status == BoxStatus::Running {
            let guest = Guest::connect(&shim::socket(&self.rt.box_dir(&self.id))).await?;
            let network_json = serde_json::to_string(&network).map_err(|e| Error::Internal(e.to_string()))?;
            guest.shim().set_network(boxlite_protocol::v1::SetNetworkRequest { network_json }).await.map_err(|s| match s.code() {
                tonic::Code::InvalidArgument => Error::InvalidArgument(s.message().to_string()),
                _ => Error::Engine(format!("setting the network policy of box {}: {}", self.id, s.message())),
            })?;
        }
        let options = crate::options::BoxOptions { network, ..rec.options };
        self.rt.state().set_options(&self.id, &options)
    }

    /// Runs a command, booting the box first if needed. The image's and box's env, working
    /// directory and user are the defaults.
    pub async fn exec(&self, cmd: ExecCommand) -> Result<Execution> {
        if cmd.argv.first().is_none_or(|p| p.is_empty()) {
            return Err(Error::InvalidArgument("the command is empty: give a program to run".into()));
        }
        for (k, v) in &cmd.env {
            crate::options::validate_env(k, v)?;
        }
        if let Some((rows, cols)) = cmd.tty_size {
            crate::guest::check_window(rows, cols)?;
        }
        let rec = self.info()?;
        if rec.status == BoxStatus::Paused {
            return Err(paused(&self.id));
        }
        let start = exec_start(&rec, cmd);
        // A request the guest could never take is refused before a VM is booted for it.
        crate::guest::check_exec_request(start.clone())?;
        let guest = self.rt.start_box(&self.id).await?;
        let m = &self.rt.inner.metrics;
        m.commands.fetch_add(1, Ordering::Relaxed);
        let started = guest.exec(start).await;
        if started.is_err() {
            m.exec_errors.fetch_add(1, Ordering::Relaxed);
        }
        started
    }
}

/// Merges image, box and command settings into what the guest runs.
fn exec_start(rec: &BoxRecord, cmd: ExecCommand) -> ExecStart {
    let mut env: Vec<String> = Vec::new();
    let extra = rec.options.env.iter().chain(cmd.env.iter()).map(|(k, v)| format!("{k}={v}"));
    for entry in rec.image.config.env.iter().cloned().chain(extra) {
        let key = entry.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(entry);
    }
    let cwd = cmd.cwd.or_else(|| rec.options.working_dir.clone()).or_else(|| rec.image.config.working_dir.clone());
    let user = cmd.user.or_else(|| rec.options.user.clone()).or_else(|| rec.image.config.user.clone());
    ExecStart {
        argv: cmd.argv,
        env,
        cwd: cwd.filter(|c| !c.is_empty()).unwrap_or_else(|| "/".into()),
        user: user.unwrap_or_default(),
        timeout_ms: cmd.timeout.map(|t| t.as_millis().max(1) as u64).unwrap_or(0),
        tty: cmd.tty,
        window: cmd.tty_size.map(|(rows, cols)| boxlite_protocol::v1::WindowSize { rows, cols }),
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageConfig;

    fn image_with(config: ImageConfig) -> Image {
        Image {
            reference: "img".into(),
            manifest_digest: String::new(),
            config_digest: String::new(),
            config,
            layer_count: 1,
            base_disk: PathBuf::new(),
            size_bytes: 0,
            pulled_at: 0,
        }
    }

    #[test]
    fn opening_a_home_whose_supervisor_died_marks_the_box_failed() {
        let home = tempfile::tempdir().unwrap();
        let options = || RuntimeOptions { home: Some(home.path().into()), ..Default::default() };
        let rt = Runtime::new(options()).unwrap();
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        dead.wait().unwrap();
        let rec = BoxRecord {
            id: new_box_id(),
            name: Some("ghost".into()),
            options: BoxOptions::new("img"),
            image: image_with(ImageConfig::default()),
            status: BoxStatus::Running,
            pid: Some(dead.id()),
            created_at: 0,
            shim_pid: Some(dead.id()),
            reason: None,
            started_at: None,
            ports: Vec::new(),
        };
        rt.state().insert(&rec).unwrap();
        drop(rt);
        // Reconciling on open used to re-lock the state it held: this call hung.
        let rt = Runtime::new(options()).unwrap();
        let rec = rt.get("ghost").unwrap().info().unwrap();
        assert_eq!(rec.status, BoxStatus::Failed);
        assert!(rec.reason.unwrap().contains("supervisor"));
    }

    #[test]
    fn exec_settings_layer_image_then_box_then_command() {
        let mut rec = BoxRecord {
            id: "x".into(),
            name: None,
            options: BoxOptions { env: vec![("B".into(), "box".into())], ..BoxOptions::new("img") },
            image: image_with(ImageConfig {
                env: vec!["PATH=/bin".into(), "A=image".into(), "B=image".into()],
                working_dir: Some("/home".into()),
                user: Some("app".into()),
                ..Default::default()
            }),
            status: BoxStatus::Created,
            pid: None,
            created_at: 0,
            shim_pid: None,
            reason: None,
            started_at: None,
            ports: Vec::new(),
        };
        let cmd = ExecCommand { env: vec![("A".into(), "cmd".into())], ..ExecCommand::new("env", Vec::<String>::new()) };
        let start = exec_start(&rec, cmd);
        assert_eq!(start.env, vec!["PATH=/bin", "B=box", "A=cmd"]);
        assert_eq!((start.cwd.as_str(), start.user.as_str()), ("/home", "app"));
        rec.options.working_dir = Some("/srv".into());
        let start = exec_start(&rec, ExecCommand { cwd: None, ..ExecCommand::new("pwd", Vec::<String>::new()) });
        assert_eq!(start.cwd, "/srv");
    }
}

/// Bindings spawn these futures on multi-threaded executors, so they must stay `Send`.
#[allow(dead_code)]
fn futures_are_send(rt: &Runtime, b: &LiteBox) {
    fn send<T: Send>(_: T) {}
    send(rt.pull("x", None));
    send(rt.create(BoxOptions::new("x")));
    send(rt.remove("x", false));
    send(b.start());
    send(b.stop());
    send(b.exec(ExecCommand::default()));
}
