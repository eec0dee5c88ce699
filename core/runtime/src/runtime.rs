//! The runtime: boxes, their VMs and their state under one BoxLite home.

use crate::assets::{home_dir, GuestAssets};
use crate::engine::qemu::{self, Qemu};
use crate::engine::{log_tail, Engine, VmSpec};
use crate::error::{Error, Result};
use crate::guest::{Execution, Guest};
use crate::image::{Image, ImageStore, PullProgress, RegistryConfig};
use crate::options::{Accel, BoxOptions, RuntimeOptions};
use crate::state::{new_box_id, BoxRecord, BoxStatus, State};
use boxlite_protocol::v1::ExecStart;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Environment variable for the default home.
pub const HOME_ENV: &str = "BOXLITE_HOME";
/// Environment variable for the default accelerator.
pub const ACCEL_ENV: &str = "BOXLITE_ACCEL";
/// How long a graceful stop may take before the VM is ended hard.
const GRACEFUL_STOP: Duration = Duration::from_secs(10);
/// Lines of the console log quoted in boot errors.
const CONSOLE_TAIL_LINES: usize = 20;

/// A BoxLite runtime over one home directory. Cheap to clone; clones share everything.
/// The VMs it starts end when the tokio runtime that started them is dropped or the process dies;
/// stop boxes first to shut them down cleanly.
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
    engine: Mutex<Option<Arc<Qemu>>>,
    /// One slot per box this process has touched: serializes start/stop of that box.
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<LiveVm>>>>>,
}

/// Records the box as stopped when its VM watcher ends, also when the watcher is dropped with its
/// tokio runtime (the VM process is then killed by `kill_on_drop`).
struct MarkStoppedOnDrop {
    inner: std::sync::Weak<Inner>,
    box_id: String,
}

impl Drop for MarkStoppedOnDrop {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            let state = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            let _ = state.set_status(&self.box_id, BoxStatus::Stopped, None);
        }
    }
}

/// A VM this process started.
struct LiveVm {
    guest: Guest,
    pid: u32,
    /// `Some(description)` once the VM process has exited.
    exited: watch::Receiver<Option<String>>,
}

impl LiveVm {
    fn is_running(&self) -> bool {
        self.exited.borrow().is_none()
    }
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
    pub fn new(options: RuntimeOptions) -> Result<Self> {
        let home = options
            .home
            .or_else(|| std::env::var_os(HOME_ENV).filter(|h| !h.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| home_dir().join(".boxlite"));
        let accel = match options.accel {
            Some(a) => a,
            None => std::env::var(ACCEL_ENV).unwrap_or_default().parse()?,
        };
        for dir in ["db", "images", "boxes"] {
            let path = home.join(dir);
            std::fs::create_dir_all(&path).map_err(|e| Error::storage("create", path, e))?;
        }
        let state = State::open(&home.join("db").join("boxlite.db"))?;
        let images = ImageStore::new(home.join("images"))?;
        let rt = Runtime {
            inner: Arc::new(Inner {
                home,
                state: Mutex::new(state),
                images,
                registries: options.registries,
                accel,
                assets_dir: options.assets_dir,
                engine: Mutex::new(None),
                slots: Mutex::new(HashMap::new()),
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

    fn slot(&self, id: &str) -> Arc<tokio::sync::Mutex<Option<LiveVm>>> {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(id.to_string()).or_default().clone()
    }

    fn box_dir(&self, id: &str) -> PathBuf {
        self.inner.home.join("boxes").join(id)
    }

    /// A record whose VM is gone is marked stopped. VMs started by this process are tracked by
    /// their watcher; others are checked by pid.
    fn reconcile(&self, mut rec: BoxRecord) -> Result<BoxRecord> {
        if rec.status == BoxStatus::Running && !rec.pid.is_some_and(|pid| vm_alive(pid, &self.box_dir(&rec.id))) {
            self.state().set_status(&rec.id, BoxStatus::Stopped, None)?;
            rec.status = BoxStatus::Stopped;
            rec.pid = None;
        }
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
    pub async fn create(&self, options: BoxOptions) -> Result<LiteBox> {
        options.validate()?;
        if let Some(name) = &options.name {
            if self.state().get(name)?.is_some() {
                return Err(Error::AlreadyExists(format!("a box named '{name}' already exists; choose another name or remove that box")));
            }
        }
        let image = self.image(&options.image).await?;
        let id = new_box_id();
        let rec = BoxRecord {
            id: id.clone(),
            name: options.name.clone(),
            options,
            image,
            status: BoxStatus::Created,
            pid: None,
            created_at: unix_millis(),
        };
        self.state().insert(&rec)?;
        let dir = self.box_dir(&id);
        let made = std::fs::create_dir_all(&dir)
            .map_err(|e| Error::storage("create", &dir, e))
            .and_then(|_| qemu::create_overlay(&rec.image.base_disk, &dir.join("disk.qcow2")));
        if let Err(e) = made {
            // Leave nothing behind.
            let _ = std::fs::remove_dir_all(&dir);
            self.state().delete(&id)?;
            return Err(e);
        }
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
        let rec = self.get(id_or_name)?.info()?;
        if rec.status == BoxStatus::Running {
            if !force {
                return Err(Error::InvalidState(format!(
                    "box {} is running; stop it first or remove it with force",
                    rec.id
                )));
            }
            self.stop_box(&rec.id).await?;
        }
        let slot = self.slot(&rec.id);
        let _guard = slot.lock().await;
        self.state().delete(&rec.id)?;
        let dir = self.box_dir(&rec.id);
        std::fs::remove_dir_all(&dir).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
            .map_err(|e| Error::storage("remove", dir, e))?;
        self.inner.slots.lock().unwrap_or_else(|p| p.into_inner()).remove(&rec.id);
        Ok(())
    }

    fn record(&self, id: &str) -> Result<BoxRecord> {
        let found = self.state().get(id)?;
        match found {
            Some(rec) => self.reconcile(rec),
            None => Err(Error::NotFound(format!("box {id} does not exist (it was removed)"))),
        }
    }

    /// Boots the box's VM unless this process already runs it; returns the agent connection.
    async fn start_box(&self, id: &str) -> Result<Guest> {
        let slot = self.slot(id);
        let mut live = slot.lock().await;
        if let Some(vm) = live.as_ref().filter(|vm| vm.is_running()) {
            return Ok(vm.guest.clone());
        }
        let rec = self.record(id)?;
        if rec.status == BoxStatus::Running {
            return Err(Error::InvalidState(format!(
                "box {id} is running in another process (VM pid {}); use it from there or stop it first",
                rec.pid.unwrap_or_default()
            )));
        }
        let engine = self.engine()?;
        let assets = GuestAssets::find(self.inner.assets_dir.as_deref())?;
        let spec = VmSpec {
            cpus: rec.options.cpus,
            memory_mib: rec.options.memory_mib,
            disk: self.box_dir(id).join("disk.qcow2"),
            kernel: assets.kernel,
            initrd: assets.initrd,
            box_dir: self.box_dir(id),
        };
        let mut child = engine.spawn(&spec)?;
        let pid = child.id().ok_or_else(|| Error::Engine("the VM process exited at once".into()))?;
        let timeout = Duration::from_millis(rec.options.ready_timeout_ms);
        let started = Instant::now();
        let agent_socket = spec.agent_socket();
        let ready = tokio::select! {
            guest = connect_when_ready(&agent_socket) => guest,
            status = child.wait() => Err(boot_failure(&spec, &format!("the VM process exited ({})", describe_exit(status)))),
            _ = tokio::time::sleep(timeout) => Err(boot_failure(&spec, &format!(
                "the guest did not answer within {} ms (ready_timeout_ms)", timeout.as_millis()))),
        };
        let guest = match ready {
            Ok(guest) => guest,
            Err(e) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(e);
            }
        };
        tracing::debug!(box_id = id, ms = started.elapsed().as_millis() as u64, "guest ready");
        self.state().set_status(id, BoxStatus::Running, Some(pid))?;
        // The watcher owns the VM process: it records the exit however it happens.
        let (exited_tx, exited_rx) = watch::channel(None);
        let stopped = MarkStoppedOnDrop { inner: Arc::downgrade(&self.inner), box_id: id.to_string() };
        tokio::spawn(async move {
            let status = child.wait().await;
            drop(stopped); // recorded before anyone learns the VM exited
            let _ = exited_tx.send(Some(describe_exit(status)));
        });
        *live = Some(LiveVm { guest: guest.clone(), pid, exited: exited_rx });
        Ok(guest)
    }

    /// Stops the box's VM: the agent syncs and unmounts the disk; a VM that does not end in time
    /// (or runs in another process) is ended hard.
    async fn stop_box(&self, id: &str) -> Result<()> {
        let slot = self.slot(id);
        let mut live = slot.lock().await;
        let rec = self.record(id)?;
        if let Some(mut vm) = live.take().filter(|vm| vm.is_running()) {
            let _ = tokio::time::timeout(GRACEFUL_STOP, vm.guest.shutdown()).await;
            let mut ended = tokio::time::timeout(GRACEFUL_STOP, vm.exited.wait_for(|e| e.is_some())).await.is_ok();
            if !ended {
                self.engine()?.force_stop(&self.box_dir(id), vm.pid);
                ended = tokio::time::timeout(GRACEFUL_STOP, vm.exited.wait_for(|e| e.is_some())).await.is_ok();
            }
            if !ended {
                return Err(Error::Engine(format!("the VM of box {id} (pid {}) did not stop", vm.pid)));
            }
        } else if let (BoxStatus::Running, Some(pid)) = (rec.status, rec.pid) {
            self.engine()?.force_stop(&self.box_dir(id), pid);
            let deadline = Instant::now() + GRACEFUL_STOP;
            while vm_alive(pid, &self.box_dir(id)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if rec.status == BoxStatus::Running {
            self.state().set_status(id, BoxStatus::Stopped, None)?;
        }
        Ok(())
    }
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
        self.rt.stop_box(&self.id).await
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
        let guest = self.rt.start_box(&self.id).await?;
        let rec = self.info()?;
        let start = exec_start(&rec, cmd);
        guest.exec(start).await
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
    }
}

/// Connects to the agent socket as soon as the VM creates it, then waits for the agent to answer.
async fn connect_when_ready(socket: &Path) -> Result<Guest> {
    loop {
        if socket.exists() {
            if let Ok(guest) = Guest::connect(socket).await {
                // The request waits in the channel until the agent serves it.
                if guest.ping().await.is_ok() {
                    return Ok(guest);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn boot_failure(spec: &VmSpec, what: &str) -> Error {
    let mut msg = format!("box failed to boot: {what}");
    let vmm = log_tail(&spec.vmm_log(), 10);
    if !vmm.is_empty() {
        msg.push_str(&format!("\nVM process stderr:\n{vmm}"));
    }
    let console = log_tail(&spec.console_log(), CONSOLE_TAIL_LINES);
    msg.push_str(&format!(
        "\nconsole log ({}):\n{}",
        spec.console_log().display(),
        if console.is_empty() { "(empty)".to_string() } else { console }
    ));
    Error::GuestBoot(msg)
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// Whether `pid` is still this box's VM (guards against pid reuse via its command line).
fn vm_alive(pid: u32, box_dir: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| {
            let needle = box_dir.as_os_str().as_encoded_bytes();
            cmdline.windows(needle.len()).any(|w| w == needle)
        })
        .unwrap_or(false)
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
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
    fn opening_a_home_whose_running_box_died_marks_it_stopped() {
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
        };
        rt.state().insert(&rec).unwrap();
        drop(rt);
        // Reconciling on open used to re-lock the state it held: this call hung.
        let rt = Runtime::new(options()).unwrap();
        assert_eq!(rt.get("ghost").unwrap().info().unwrap().status, BoxStatus::Stopped);
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
