//! Memory snapshots: `suspend` (a box's memory to its own directory, VM ended), `snapshot` (memory
//! and disk of a running box at one instant, kept under a name), `restore` and `fork` (new boxes
//! continuing from a snapshot, each with its own disk and identity). docs/snapshots.md.
//!
//! Layout in the home: `snapshots/<name>/{snapshot.json,memory.state}`, and the frozen disk
//! layers in `layers/<id>.qcow2`. A snapshot freezes its box's disk overlay into a layer and the
//! box goes on with a new overlay on top of it, so the source box, the snapshot and every box
//! restored from it share the layer (nothing big is copied). A layer is deleted once no box disk
//! and no snapshot chains onto it.

use super::{create_private_dir, flock_exclusive, not_found_ok, BoxLock, LiteBox, Runtime};
use crate::engine::qemu;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::options::BoxOptions;
use crate::shim;
use crate::state::{new_box_id, BoxRecord, BoxStatus, StatusUpdate};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The memory file of a suspended box (or of one about to be restored), in its directory.
pub(crate) const MEMORY_FILE: &str = "memory.state";
/// Beside a suspended box's memory: the [`Compat`] of the build that saved it.
const MEMORY_COMPAT_FILE: &str = "memory.json";
const SNAPSHOT_FILE: &str = "snapshot.json";

/// A saved snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Its name.
    pub name: String,
    /// The box it was taken of.
    pub box_id: String,
    /// That box's name then.
    pub box_name: Option<String>,
    /// The image that box was created from.
    pub image: String,
    /// When it was taken, unix milliseconds.
    pub created_at: u64,
    /// vCPUs of the box (every box restored from it has the same).
    pub cpus: u32,
    /// Memory of the box, MiB (likewise).
    pub memory_mib: u32,
    /// Size of the memory file.
    pub memory_bytes: u64,
    /// Bytes the frozen disk layer holds (the box's own writes since its image or last snapshot).
    pub disk_bytes: u64,
    /// How long the box's vCPUs stood still while it was taken.
    pub paused_ms: u64,
}

/// How a box restored from a snapshot differs from the box the snapshot was taken of.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Its name (none: it is known by its id).
    pub name: Option<String>,
    /// Keep it running after this process ends.
    pub detach: bool,
    /// Remove it once it stops.
    pub auto_remove: bool,
    /// Stop it after this long without a guest call.
    pub auto_stop_ms: Option<u64>,
}

/// What must be the same for saved memory to be loaded: the same VMM binary, guest kernel and
/// agent (initramfs), accelerator and VM layout. Files are compared by size and modification time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Compat {
    engine: String,
    vmm: String,
    kernel: String,
    initrd: String,
    accel: String,
    /// [`crate::engine::VM_LAYOUT`]; 0 in what builds before it saved.
    #[serde(default)]
    layout: u32,
}

/// snapshot.json.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    info: SnapshotInfo,
    /// The frozen disk layer (a file name in `layers/`) and its guest-visible size.
    layer: String,
    disk_size: u64,
    options: BoxOptions,
    image_record: Image,
    compat: Compat,
}

fn fingerprint(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => format!("{} {}b {}.{}", path.display(), m.len(), m.mtime(), m.mtime_nsec()),
        Err(e) => format!("{} ({e})", path.display()),
    }
}

/// Snapshot names: what box names allow.
fn validate_snapshot_name(name: &str) -> Result<()> {
    crate::options::validate_name(name).map_err(|_| {
        Error::InvalidArgument(format!(
            "snapshot name '{name}' is invalid: use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        ))
    })
}

/// The home-wide lock of `layers/`: held while a layer is made, built on or collected.
struct LayersLock {
    _file: std::fs::File,
}

impl LayersLock {
    async fn lock(home: &Path) -> Result<LayersLock> {
        let dir = home.join("layers");
        create_private_dir(&dir)?;
        let path = dir.join(".lock");
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| Error::storage("open", &path, e))?;
        Ok(LayersLock { _file: flock_exclusive(file).await? })
    }
}

impl Runtime {
    fn snapshot_dir(&self, name: &str) -> PathBuf {
        self.inner.home.join("snapshots").join(name)
    }

    pub(super) fn compat(&self) -> Result<Compat> {
        let engine = self.engine()?;
        let assets = crate::assets::GuestAssets::find(self.inner.assets_dir.as_deref())?;
        Ok(Compat {
            engine: "qemu".into(),
            vmm: fingerprint(engine.binary()),
            kernel: fingerprint(&assets.kernel),
            initrd: fingerprint(&assets.initrd),
            accel: format!("{:?}", engine.accel()).to_lowercase(),
            layout: crate::engine::VM_LAYOUT,
        })
    }

    /// Whether this build can load the box's own saved memory: not when the build that saved it
    /// had another VM engine, kernel, agent, accelerator or device set. Memory saved without a
    /// record (by builds before it) or with an unreadable one is tried.
    pub(super) fn saved_memory_fits(&self, id: &str) -> bool {
        let Ok(bytes) = std::fs::read(self.box_dir(id).join(MEMORY_COMPAT_FILE)) else { return true };
        match (serde_json::from_slice::<Compat>(&bytes), self.compat()) {
            (Ok(saved), Ok(now)) => saved == now,
            _ => true,
        }
    }

    /// Removes a box's own saved memory and its build record.
    pub(super) fn discard_saved_memory(&self, id: &str) -> Result<()> {
        let memory = self.box_dir(id).join(MEMORY_FILE);
        std::fs::remove_file(&memory).or_else(not_found_ok).map_err(|e| Error::storage("remove", &memory, e))?;
        let _ = std::fs::remove_file(self.box_dir(id).join(MEMORY_COMPAT_FILE));
        Ok(())
    }

    fn read_snapshot(&self, name: &str) -> Result<SnapshotFile> {
        let path = self.snapshot_dir(name).join(SNAPSHOT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("no snapshot named '{name}' (`boxlite snapshot ls` lists them)")))
            }
            Err(e) => return Err(Error::storage("read", path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("{}: {e}", path.display())))
    }

    /// Every snapshot file in the home, with its directory name (fork's own snapshots, whose
    /// names start with '.', included).
    fn snapshot_files(&self) -> Result<Vec<(String, SnapshotFile)>> {
        let dir = self.inner.home.join("snapshots");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::storage("list", dir, e)),
        };
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| self.read_snapshot(&n).ok().map(|s| (n, s)))
            .collect())
    }

    /// Every snapshot in the home, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let mut all: Vec<SnapshotInfo> =
            self.snapshot_files()?.into_iter().filter(|(n, _)| !n.starts_with('.')).map(|(_, s)| s.info).collect();
        all.sort_by_key(|s| s.created_at);
        Ok(all)
    }

    /// Removes a snapshot. Boxes restored from it keep working: the disk layer they share is
    /// removed only when nothing uses it any more.
    pub async fn remove_snapshot(&self, name: &str) -> Result<()> {
        self.read_snapshot(name)?;
        let _layers = LayersLock::lock(&self.inner.home).await?;
        let dir = self.snapshot_dir(name);
        std::fs::remove_dir_all(&dir).or_else(not_found_ok).map_err(|e| Error::storage("remove", dir, e))?;
        self.collect_layers_locked()
    }

    /// Starts a new box that continues from snapshot `name`: its processes, memory and files as
    /// they were at that instant, on a disk of its own (an overlay of the snapshot's layer), with
    /// a fresh identity (its own id and hostname, the guest RNG reseeded from host entropy, the
    /// clock set). Returns it running.
    pub async fn restore(&self, name: &str, options: RestoreOptions) -> Result<LiteBox> {
        let snap = self.read_snapshot(name)?;
        let now = self.compat()?;
        if snap.compat != now {
            let what: Vec<&str> = [
                ("the VM engine", snap.compat.vmm != now.vmm),
                ("the guest kernel", snap.compat.kernel != now.kernel),
                ("the guest agent", snap.compat.initrd != now.initrd),
                ("the accelerator", snap.compat.accel != now.accel || snap.compat.engine != now.engine),
                ("the VM's devices", snap.compat.layout != now.layout),
            ]
            .into_iter()
            .filter_map(|(w, changed)| changed.then_some(w))
            .collect();
            return Err(Error::InvalidState(format!(
                "snapshot '{name}' cannot be restored: {} changed since it was taken, and saved memory only loads into the same; boot a box afresh and take a new snapshot",
                what.join(", ")
            )));
        }
        if let Some(n) = &options.name {
            crate::options::validate_name(n)?;
            if self.state().get(n)?.is_some() {
                return Err(Error::AlreadyExists(format!("a box named '{n}' already exists; choose another name or remove that box")));
            }
        }
        let box_options = BoxOptions {
            name: options.name.clone(),
            detach: options.detach,
            auto_remove: options.auto_remove,
            auto_stop_ms: options.auto_stop_ms,
            // Fixed host ports belong to the source box.
            ports: Vec::new(),
            ..snap.options.clone()
        };
        let id = new_box_id();
        let rec = BoxRecord {
            id: id.clone(),
            name: options.name.clone(),
            options: box_options,
            image: snap.image_record.clone(),
            status: BoxStatus::Created,
            pid: None,
            created_at: shim::now_millis(),
            shim_pid: None,
            reason: None,
            started_at: None,
            ports: Vec::new(),
        };
        let dir = self.box_dir(&id);
        {
            let _layers = LayersLock::lock(&self.inner.home).await?;
            let layer = self.inner.home.join("layers").join(&snap.layer);
            let made = create_private_dir(&dir)
                .and_then(|_| qemu::create_overlay(&layer, "qcow2", &dir.join("disk.qcow2"), Some(snap.disk_size)))
                .and_then(|_| {
                    let memory = self.snapshot_dir(name).join(MEMORY_FILE);
                    std::fs::hard_link(&memory, dir.join(MEMORY_FILE)).map_err(|e| Error::storage("link", memory, e))
                })
                .and_then(|_| self.state().insert(&rec));
            if let Err(e) = made {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        }
        self.inner.metrics.boxes_created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let restored = LiteBox { rt: self.clone(), id: id.clone() };
        if let Err(e) = restored.start().await {
            let _ = self.remove(&id, true).await;
            return Err(e);
        }
        Ok(restored)
    }

    /// Deletes the layers no box disk and no snapshot chains onto. Needs the layers lock.
    fn collect_layers_locked(&self) -> Result<()> {
        let layers = self.inner.home.join("layers");
        let mut used = HashSet::new();
        let mut follow = |disk: PathBuf| {
            let mut next = Some(disk);
            while let Some(d) = next.take() {
                if d.parent() == Some(layers.as_path()) && !used.insert(d.clone()) {
                    break; // already walked from here
                }
                next = qemu::qcow2_backing(&d).ok().flatten().filter(|b| b.parent() == Some(layers.as_path()));
            }
        };
        for entry in std::fs::read_dir(self.inner.home.join("boxes")).into_iter().flatten().flatten() {
            follow(entry.path().join("disk.qcow2"));
        }
        for (_, snap) in self.snapshot_files()? {
            follow(layers.join(snap.layer));
        }
        for entry in std::fs::read_dir(&layers).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "qcow2") && !used.contains(&path) {
                std::fs::remove_file(&path).or_else(not_found_ok).map_err(|e| Error::storage("remove", &path, e))?;
            }
        }
        Ok(())
    }

    /// [`collect_layers_locked`](Self::collect_layers_locked) under the layers lock.
    pub(crate) async fn collect_layers(&self) -> Result<()> {
        if !self.inner.home.join("layers").exists() {
            return Ok(());
        }
        let _layers = LayersLock::lock(&self.inner.home).await?;
        self.collect_layers_locked()
    }

    /// The images' base disks that snapshots need.
    pub(crate) fn snapshot_base_disks(&self) -> Result<Vec<PathBuf>> {
        Ok(self.snapshot_files()?.into_iter().map(|(_, s)| s.image_record.base_disk).collect())
    }
}

impl LiteBox {
    /// Saves the running box's memory and disk at one instant under `name`, while the box goes
    /// on (its vCPUs stand still for the moment it takes). [`Runtime::restore`] and
    /// [`fork`](Self::fork) start boxes from it. A box with volumes cannot be snapshotted.
    pub async fn snapshot(&self, name: &str) -> Result<SnapshotInfo> {
        validate_snapshot_name(name)?;
        self.save_snapshot(name).await
    }

    async fn save_snapshot(&self, name: &str) -> Result<SnapshotInfo> {
        let rt = &self.rt;
        let rec = self.info()?;
        if !rec.status.is_up() {
            return Err(Error::InvalidState(format!("box {} is {}: only a running box can be snapshotted; start it first", self.id, rec.status)));
        }
        if !rec.options.volumes.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "box {} has volumes: QEMU cannot save the state of a mounted 9p share, so a box with volumes cannot be snapshotted",
                self.id
            )));
        }
        let final_dir = rt.snapshot_dir(name);
        if final_dir.exists() {
            return Err(Error::AlreadyExists(format!("a snapshot named '{name}' already exists; choose another name or remove it")));
        }
        let compat = rt.compat()?;
        create_private_dir(&rt.inner.home.join("snapshots"))?;
        let _layers = LayersLock::lock(&rt.inner.home).await?;
        let partial = rt.inner.home.join("snapshots").join(format!(".{name}.{}", new_box_id()));
        create_private_dir(&partial)?;
        let layer_name = format!("{}.qcow2", new_box_id());
        let layer = rt.inner.home.join("layers").join(&layer_name);
        let taken = async {
            let guest = crate::guest::Guest::connect(&shim::socket(&rt.box_dir(&self.id))).await?;
            let req = boxlite_protocol::v1::SnapshotRequest {
                memory_path: partial.join(MEMORY_FILE).display().to_string(),
                layer_path: layer.display().to_string(),
            };
            let saved = guest.shim().snapshot(req).await.map_err(|s| match s.code() {
                tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => Error::InvalidState(s.message().to_string()),
                _ => Error::Engine(format!("snapshot of box {} failed: {}", self.id, s.message())),
            })?;
            let saved = saved.into_inner();
            let info = SnapshotInfo {
                name: name.to_string(),
                box_id: self.id.clone(),
                box_name: rec.name.clone(),
                image: rec.image.reference.clone(),
                created_at: shim::now_millis(),
                cpus: rec.options.cpus,
                memory_mib: rec.options.memory_mib,
                memory_bytes: saved.memory_bytes,
                disk_bytes: crate::image::allocated_bytes(&layer),
                paused_ms: saved.paused_ms,
            };
            let file = SnapshotFile {
                info: info.clone(),
                layer: layer_name.clone(),
                disk_size: qemu::qcow2_virtual_size(&layer).map_err(|e| Error::storage("read", &layer, e))?,
                options: rec.options.clone(),
                image_record: rec.image.clone(),
                compat,
            };
            let json = serde_json::to_vec_pretty(&file).map_err(|e| Error::Internal(e.to_string()))?;
            let path = partial.join(SNAPSHOT_FILE);
            std::fs::write(&path, json).map_err(|e| Error::storage("write", &path, e))?;
            std::fs::rename(&partial, &final_dir).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => Error::AlreadyExists(format!("a snapshot named '{name}' already exists")),
                _ => Error::storage("rename", &final_dir, e),
            })?;
            Ok(info)
        };
        let result = taken.await;
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&partial);
        }
        result
    }

    /// Saves the box's memory to its directory and ends its VM: it is `suspended`, using no CPU
    /// or memory, until [`resume`](Self::resume) (or any call that needs it running) continues
    /// it from there, processes and all. A box with volumes cannot be suspended.
    pub async fn suspend(&self) -> Result<()> {
        let rec = self.info()?;
        if rec.status == BoxStatus::Suspended {
            return Ok(());
        }
        if !rec.status.is_up() {
            return Err(Error::InvalidState(format!("box {} is {}: only a running box can be suspended; start it first", self.id, rec.status)));
        }
        if !rec.options.volumes.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "box {} has volumes: QEMU cannot save the state of a mounted 9p share, so a box with volumes cannot be suspended (pause() it instead)",
                self.id
            )));
        }
        let dir = self.rt.box_dir(&self.id);
        let slot = self.rt.slot(&self.id);
        let mut live = slot.lock().await;
        *live = None;
        let _lock = BoxLock::lock(&dir).await?;
        let guest = crate::guest::Guest::connect(&shim::socket(&dir)).await?;
        let req = boxlite_protocol::v1::SuspendRequest { memory_path: dir.join(MEMORY_FILE).display().to_string() };
        guest.shim().suspend(req).await.map_err(|s| match s.code() {
            tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => Error::InvalidState(s.message().to_string()),
            _ => Error::Engine(format!("box {} could not be suspended: {}", self.id, s.message())),
        })?;
        // What saved it, so that another build boots the box afresh instead of failing to load it.
        let record = self.rt.compat().and_then(|c| serde_json::to_vec(&c).map_err(|e| Error::Internal(e.to_string())));
        // (A torn write reads as no record: the memory is tried, as before the record existed.)
        let path = dir.join(MEMORY_COMPAT_FILE);
        if let Err(e) = record.and_then(|json| std::fs::write(&path, json).map_err(|e| Error::storage("write", &path, e))) {
            tracing::warn!(box_id = self.id, "the suspended memory's build record was not written: {e}");
        }
        // The supervisor has recorded it and exits.
        let pid = rec.shim_pid.unwrap_or_default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while shim::alive(pid, &dir) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// `count` new boxes continuing from this box as it is now (a snapshot that is not kept),
    /// each with its own disk and identity; this box goes on as well.
    pub async fn fork(&self, count: u32) -> Result<Vec<LiteBox>> {
        if !(1..=64).contains(&count) {
            return Err(Error::InvalidArgument(format!("fork count {count} is out of range: 1 to 64")));
        }
        let name = format!(".fork-{}-{}", self.id, new_box_id());
        self.save_snapshot(&name).await?;
        let detach = self.info()?.options.detach;
        let mut forks = Vec::new();
        let mut failed = None;
        for _ in 0..count {
            match self.rt.restore(&name, RestoreOptions { detach, ..Default::default() }).await {
                Ok(b) => forks.push(b),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let _ = self.rt.remove_snapshot(&name).await;
        if let Some(e) = failed {
            for f in &forks {
                let _ = self.rt.remove(f.id(), true).await;
            }
            return Err(e);
        }
        Ok(forks)
    }

    /// A suspended box's saved memory is dropped (a forced stop): it is stopped, its disk as the
    /// suspend left it, without the writes that were still only in its memory.
    pub(crate) fn discard_suspended(&self) -> Result<()> {
        self.rt.discard_saved_memory(&self.id)?;
        self.rt.state().update(&self.id, BoxStatus::Stopped, StatusUpdate { reason: Some("its saved memory was discarded by a forced stop".into()), ..Default::default() })
    }
}
