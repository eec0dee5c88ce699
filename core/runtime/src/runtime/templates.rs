//! Warm start: a template is a guest booted once and saved idle with no box disk; a new box is
//! restored from it instead of booting, then mounts its own disk. docs/snapshots.md.
//!
//! Layout in the home: `templates/<shape>-<inputs>/{template.json,memory.state,ram}`, where
//! `<shape>` is `c<cpus>-m<mib>[-net]` and `<inputs>` a hash of what the saved guest depends on
//! (QEMU, kernel, agent, accelerator): a changed input names another directory, so a template is
//! never stale in place. `ram` is the guest's RAM (sparse: only what the idle guest touched) and
//! `memory.state` the device state; boxes map `ram` privately, so the pages they never write stay
//! shared among them. A template is built in `<dir>.partial` and renamed into place whole, never
//! changed afterwards; building one removes its shape's templates for other inputs (a running
//! box keeps the RAM file it mapped).

use super::snapshots::{Compat, MEMORY_FILE};
use super::{create_private_dir, flock_exclusive, Runtime};
use crate::assets::GuestAssets;
use crate::engine::{log_tail, Engine, GuestMemory, VmSpec};
use crate::error::{Error, Result};
use crate::guest::Guest;
use crate::options::{validate_shape, DEFAULT_CPUS, DEFAULT_MEMORY_MIB, DEFAULT_READY_TIMEOUT};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TEMPLATE_FILE: &str = "template.json";
const RAM_FILE: &str = "ram";

/// The shape of boxes a template serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmupOptions {
    /// vCPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Boxes with a network (the default for boxes) or without.
    pub network: bool,
}

impl Default for WarmupOptions {
    fn default() -> Self {
        WarmupOptions { cpus: DEFAULT_CPUS, memory_mib: DEFAULT_MEMORY_MIB, network: true }
    }
}

impl WarmupOptions {
    fn dir_prefix(&self) -> String {
        format!("c{}-m{}{}-", self.cpus, self.memory_mib, if self.network { "-net" } else { "" })
    }
}

/// A template on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TemplateInfo {
    /// Its directory.
    pub path: PathBuf,
    /// The boxes it serves.
    pub shape: WarmupOptions,
    /// Whether this call built it (false: it was there already).
    pub built: bool,
    /// How long building it took, in milliseconds.
    pub build_ms: u64,
    /// Bytes it takes on disk (the RAM file is sparse).
    pub disk_bytes: u64,
}

/// template.json.
#[derive(Serialize, Deserialize)]
struct TemplateFile {
    shape: WarmupOptions,
    compat: Compat,
    build_ms: u64,
}

/// What a box restored from a template starts from.
pub(crate) struct Template {
    /// The saved device state (the VM's incoming memory file).
    pub state: PathBuf,
    /// The RAM file, mapped privately.
    pub ram: PathBuf,
}

impl Runtime {
    /// Makes sure a template for boxes of `options`' shape exists, building it if needed (a
    /// booted guest saved idle: one cold boot). Boxes of that shape then start from it.
    pub async fn warmup(&self, options: WarmupOptions) -> Result<TemplateInfo> {
        validate_shape(options.cpus, options.memory_mib)?;
        self.ensure_template(&options).await
    }

    /// The template a new box of this shape restores from, made on first need; `None` (the box
    /// boots cold) when warm start is off or the template cannot be made, with why at debug level.
    pub(crate) async fn template_for(&self, shape: &WarmupOptions) -> Option<Template> {
        if !self.inner.warm_start {
            return None;
        }
        if on_memory_fs(&self.inner.home) {
            // There a box's first read of a page its template never wrote allocates that page in
            // the filesystem, and a full one kills the VM (SIGBUS) instead of failing a write.
            tracing::debug!("booting cold: the home {} is on tmpfs", self.inner.home.display());
            return None;
        }
        let prefix = shape.dir_prefix();
        if let Some(why) = self.inner.template_failures.lock().unwrap_or_else(|p| p.into_inner()).get(&prefix) {
            tracing::debug!("booting cold: the {prefix}* template could not be made earlier ({why})");
            return None;
        }
        match self.ensure_template(shape).await {
            Ok(info) => Some(Template { state: info.path.join(MEMORY_FILE), ram: info.path.join(RAM_FILE) }),
            Err(e) => {
                tracing::debug!("booting cold: no template for {prefix}*: {e}");
                self.template_failed(shape, &e.to_string());
                None
            }
        }
    }

    /// Remembers that this shape's template is unusable, so that its boxes boot cold from now on
    /// in this process (a template that failed to restore is also removed).
    pub(crate) fn template_failed(&self, shape: &WarmupOptions, why: &str) {
        let prefix = shape.dir_prefix();
        self.inner.template_failures.lock().unwrap_or_else(|p| p.into_inner()).insert(prefix, why.to_string());
    }

    /// Removes the template for this shape and these inputs (it failed to restore).
    pub(crate) fn remove_template(&self, shape: &WarmupOptions) {
        if let Ok(compat) = self.compat() {
            let _ = std::fs::remove_dir_all(self.template_dir(shape, &compat));
        }
    }

    fn template_dir(&self, shape: &WarmupOptions, compat: &Compat) -> PathBuf {
        use sha2::Digest;
        let inputs = serde_json::to_vec(compat).unwrap_or_default();
        let hash: String = sha2::Sha256::digest(&inputs)[..6].iter().map(|b| format!("{b:02x}")).collect();
        self.inner.home.join("templates").join(format!("{}{hash}", shape.dir_prefix()))
    }

    async fn ensure_template(&self, shape: &WarmupOptions) -> Result<TemplateInfo> {
        let compat = self.compat()?;
        let dir = self.template_dir(shape, &compat);
        let info = |built: bool, build_ms: u64| TemplateInfo { path: dir.clone(), shape: shape.clone(), built, build_ms, disk_bytes: disk_bytes(&dir) };
        if let Some(t) = read_template(&dir) {
            return Ok(info(false, t.build_ms));
        }
        let parent = self.inner.home.join("templates");
        create_private_dir(&parent)?;
        // One build at a time in the home: a second caller waits and then finds it made.
        let lock_path = parent.join(".lock");
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| Error::storage("open", &lock_path, e))?;
        let _lock = flock_exclusive(lock).await?;
        if let Some(t) = read_template(&dir) {
            return Ok(info(false, t.build_ms));
        }
        let began = Instant::now();
        let partial = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        create_private_dir(&partial)?;
        if let Err(e) = self.boot_and_save(shape, &partial).await {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
        let build_ms = began.elapsed().as_millis() as u64;
        let file = TemplateFile { shape: shape.clone(), compat, build_ms };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| Error::Internal(e.to_string()))?;
        // The directory is renamed into place whole, after its files are durable.
        let written = std::fs::write(partial.join(TEMPLATE_FILE), &json)
            .and_then(|()| std::fs::File::open(partial.join(TEMPLATE_FILE))?.sync_all())
            .and_then(|()| std::fs::rename(&partial, &dir))
            .map_err(|e| Error::storage("write the template", &partial, e));
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
        // Templates of this shape for other inputs (a QEMU, kernel or agent since replaced).
        let prefix = shape.dir_prefix();
        for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            let path = entry.path();
            if path != dir && entry.file_name().to_string_lossy().starts_with(&prefix) {
                tracing::debug!("removing the stale template {}", path.display());
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        Ok(info(true, build_ms))
    }

    /// Boots a guest whose RAM is shared into `dir/ram` and saves it idle into `dir/memory.state`.
    async fn boot_and_save(&self, shape: &WarmupOptions, dir: &Path) -> Result<()> {
        let engine = self.engine()?;
        let assets = GuestAssets::find(self.inner.assets_dir.as_deref())?;
        let ram = dir.join(RAM_FILE);
        {
            use std::os::unix::fs::OpenOptionsExt;
            let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&ram).map_err(|e| Error::storage("create", &ram, e))?;
            file.set_len(u64::from(shape.memory_mib) << 20).map_err(|e| Error::storage("size", &ram, e))?;
        }
        let spec = VmSpec {
            cpus: shape.cpus,
            memory_mib: shape.memory_mib,
            disk: PathBuf::new(),
            kernel: assets.kernel.clone(),
            initrd: assets.initrd.clone(),
            box_dir: dir.to_path_buf(),
            network: shape.network,
            hostname: "boxlite".into(),
            volumes: Vec::new(),
            incoming: None,
            memory: GuestMemory::TemplateSource(ram.clone()),
        };
        let vm = engine.command(&spec)?;
        // The NIC's frames go nowhere while the template boots: QEMU needs a peer to connect to.
        let _net_peer = match shape.network {
            false => None,
            true => Some(NetPeer::listen(&crate::net::socket(dir))?),
        };
        let log = spec.vmm_log();
        // From this thread, which outlives the build (a runtime worker, or the caller's thread
        // blocked in this call): the VM dies with it.
        let mut child = crate::shim::spawn_vm(&vm, dir, std::process::id()).map_err(Error::Engine)?;
        let agent = spec.agent_socket();
        let ready = tokio::select! {
            guest = Guest::wait_agent(&agent) => Ok(guest),
            status = child.wait() => Err(format!("its VM process ended ({})", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()))),
            _ = tokio::time::sleep(DEFAULT_READY_TIMEOUT) => Err(format!("its guest did not answer within {} s", DEFAULT_READY_TIMEOUT.as_secs())),
        };
        let boot_failed = |what: String| {
            let tail = [log_tail(&log, 5), log_tail(&spec.console_log(), 10)].join("\n");
            Error::GuestBoot(format!("the template {} could not be made: {what}\n{}", dir.display(), tail.trim()))
        };
        // Held while the memory is saved, as a box's supervisor holds its connection.
        let _guest = ready.map_err(boot_failed)?;
        let qmp = vm.qmp_socket.clone().ok_or_else(|| Error::Internal("the engine has no QMP socket".into()))?;
        let state = dir.join(MEMORY_FILE);
        tokio::task::spawn_blocking(move || crate::shim::snapshot::save_template(&qmp, &state))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| boot_failed(format!("saving it failed: {e}")))?;
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            other => {
                let _ = child.kill().await;
                return Err(boot_failed(format!("its VM process did not quit cleanly after the save ({other:?})")));
            }
        }
        // The RAM reached the file through QEMU's shared mapping: make it durable before use.
        std::fs::File::open(&ram).and_then(|f| f.sync_all()).map_err(|e| Error::storage("sync", &ram, e))?;
        for leftover in [spec.agent_socket(), spec.output_socket(), crate::net::socket(dir), dir.join("qmp.sock")] {
            let _ = std::fs::remove_file(leftover);
        }
        Ok(())
    }
}

/// Whether `path` is on tmpfs or ramfs.
fn on_memory_fs(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: statfs writes the struct it is given; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && matches!(st.f_type as i64, TMPFS_MAGIC | RAMFS_MAGIC)
}

fn read_template(dir: &Path) -> Option<TemplateFile> {
    let bytes = std::fs::read(dir.join(TEMPLATE_FILE)).ok()?;
    let file: TemplateFile = serde_json::from_slice(&bytes).ok()?;
    (dir.join(MEMORY_FILE).is_file() && dir.join(RAM_FILE).is_file()).then_some(file)
}

/// Bytes allocated under `dir` (files only, one level).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir).into_iter().flatten().flatten().filter_map(|e| e.metadata().ok()).map(|m| m.blocks() * 512).sum()
}

/// The network peer of a template being built: accepts QEMU's connection and drops its frames.
struct NetPeer {
    task: tokio::task::JoinHandle<()>,
}

impl NetPeer {
    fn listen(path: &Path) -> Result<NetPeer> {
        crate::engine::check_socket_path(path)?;
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).map_err(|e| Error::storage("listen on", path, e))?;
        let task = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 << 10];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        Ok(NetPeer { task })
    }
}

impl Drop for NetPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
