//! The image store: pulls images into verified blobs, builds each image's base disk once, and
//! keeps a reference index that works offline.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::UnboundedSender;

use super::atomic::{self, unique_path, TempPath};
use super::blobs::{sha256_digest, BlobStore};
use super::layers::{open_layer, HashingReader, Rootfs, UnpackLimit};
use super::layout;
use super::manifest::{parse_config, Manifest};
use super::reference::{self, validate_digest, Source};
use super::registry::Registries;
use super::{ext4, Image, PullProgress, RegistryConfig, Removed};
use crate::error::{Error, Result};
use nix::fcntl::Flock;
use std::collections::HashSet;
use std::fs::File;

/// Bytes of file content an image may unpack to, all layers together, unless the store is told
/// otherwise ([`ImageStore::with_max_unpacked_bytes`]). Real images are far smaller; the bound is
/// for decompression and sparse-file bombs.
pub const DEFAULT_MAX_UNPACKED_BYTES: u64 = 16 << 30;

/// Images kept under one root directory (`<BOXLITE_HOME>/images`).
#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
    blobs: BlobStore,
    max_unpacked_bytes: u64,
}

/// A shared hold on the store that keeps garbage collection out while it lives: a pull holds one
/// from start to recorded reference, a box creation from finding its image until its record
/// (naming the base disk) is written. Any number of holds at once, in any process.
pub struct StoreUse {
    _lock: Flock<File>,
}

/// The store's exclusive lock, held while images are removed or pruned: no pull or box creation
/// runs meanwhile, in any process, so what is unreferenced stays so.
pub struct StoreLock {
    _lock: Flock<File>,
}

/// What a pull resolved to, before the disk is built.
struct Fetched {
    reference: String,
    manifest_digest: String,
    manifest: Manifest,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`, and clears temp files of dead processes.
    /// Every directory of the store is private (0700), and so is every file in it (0600): image
    /// content and base disks are readable by their owner only.
    pub fn new(root: PathBuf) -> Result<Self> {
        for sub in ["", "blobs", "blobs/sha256", "disks", "refs", "locks", "tmp"] {
            crate::runtime::create_private_dir(&root.join(sub))?;
        }
        // Absolute, so that disk paths handed to the VM engine do not depend on the cwd.
        let root =
            std::fs::canonicalize(&root).map_err(|e| Error::storage("cannot resolve", &root, e))?;
        atomic::remove_stale(&root.join("tmp"));
        let blobs = BlobStore::new(root.join("blobs/sha256"), root.join("tmp"), root.join("locks"));
        Ok(ImageStore { root, blobs, max_unpacked_bytes: DEFAULT_MAX_UNPACKED_BYTES })
    }

    /// Bounds the bytes of file content one image may unpack to (default
    /// [`DEFAULT_MAX_UNPACKED_BYTES`]). A build also never takes more than half the free space
    /// of the filesystem holding the store (the tree and its disk each need room).
    pub fn with_max_unpacked_bytes(mut self, bytes: u64) -> Self {
        self.max_unpacked_bytes = bytes;
        self
    }

    /// Returns the cached image for `reference` without any network access, if it was pulled before.
    /// Names without a registry host match the first configured registry (then Docker Hub) they
    /// were pulled from, in the order a pull would try them.
    pub fn get(&self, reference: &str, registries: &[RegistryConfig]) -> Result<Option<Image>> {
        let source = reference::parse(reference)?;
        for name in normalized_names(&source, registries) {
            if let Some(image) = self.read_ref(&name)? {
                if image.base_disk.is_file() {
                    return Ok(Some(image));
                }
            }
        }
        Ok(None)
    }

    /// Pulls (or loads a local layout), stores blobs by digest (verified), builds the base ext4
    /// disk once per image (cached by config digest), records the reference. Idempotent: blobs and
    /// disks already present are reused, so a second pull only re-reads the manifest.
    pub async fn pull(
        &self,
        reference: &str,
        registries: &[RegistryConfig],
        progress: Option<UnboundedSender<PullProgress>>,
    ) -> Result<Image> {
        let _hold = self.hold().await?;
        let send = |event: PullProgress| {
            if let Some(tx) = &progress {
                // A dropped receiver only means nobody is watching.
                let _ = tx.send(event);
            }
        };
        let source = reference::parse(reference)?;
        let fetched = match &source {
            Source::Registry(r) => {
                let registries = Registries::new(registries);
                let resolved = registries.resolve(r, &self.blobs).await?;
                let reference = resolved.candidate.normalized();
                let manifest = resolved.manifest;
                send(PullProgress::Resolved {
                    reference: reference.clone(),
                    layers: manifest.layers.len(),
                });
                // The config first: it tells a wrong platform before any layer is downloaded.
                let config = [(manifest.config.digest.clone(), manifest.config.size)];
                registries
                    .fetch_blobs(&resolved.candidate, &self.blobs, &config, |_, _| {})
                    .await?;
                parse_config(&self.blobs.read(&manifest.config.digest)?, &reference)?;
                let layers: Vec<(String, u64)> = manifest
                    .layers
                    .iter()
                    .map(|l| (l.digest.clone(), l.size))
                    .collect();
                registries
                    .fetch_blobs(
                        &resolved.candidate,
                        &self.blobs,
                        &layers,
                        |digest, bytes| {
                            send(PullProgress::LayerDone {
                                digest: digest.to_string(),
                                bytes,
                            })
                        },
                    )
                    .await?;
                Fetched {
                    reference,
                    manifest_digest: resolved.manifest_digest,
                    manifest,
                }
            }
            Source::Layout { .. } | Source::Archive { .. } => {
                let fetched = self.load_local(source.clone()).await?;
                send(PullProgress::Resolved {
                    reference: fetched.reference.clone(),
                    layers: fetched.manifest.layers.len(),
                });
                for layer in &fetched.manifest.layers {
                    send(PullProgress::LayerDone {
                        digest: layer.digest.clone(),
                        bytes: layer.size,
                    });
                }
                fetched
            }
        };

        let parsed = parse_config(
            &self.blobs.read(&fetched.manifest.config.digest)?,
            &fetched.reference,
        )?;
        let store = self.clone();
        let config_digest = fetched.manifest.config.digest.clone();
        let layers: Vec<String> = fetched
            .manifest
            .layers
            .iter()
            .map(|l| l.digest.clone())
            .collect();
        let diff_ids = parsed.diff_ids.clone();
        let checks = BuildChecks {
            reference: fetched.reference.clone(),
            working_dir: parsed.config.working_dir.clone(),
        };
        // Dropping this future (an aborted pull) stops the build at its next step; the build
        // thread itself cannot be cancelled from here.
        let abandoned = Arc::new(AtomicBool::new(false));
        let _abandon_on_drop = SetOnDrop(abandoned.clone());
        let base_disk = blocking(move || {
            store.ensure_disk(&config_digest, &layers, &diff_ids, &checks, &abandoned)
        })
        .await?;
        send(PullProgress::DiskBuilt {
            path: base_disk.clone(),
        });

        let image = Image {
            reference: fetched.reference,
            manifest_digest: fetched.manifest_digest,
            config_digest: fetched.manifest.config.digest.clone(),
            config: parsed.config,
            layer_count: fetched.manifest.layers.len(),
            base_disk,
            size_bytes: fetched.manifest.layers.iter().map(|l| l.size).sum(),
            pulled_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let store = self.clone();
        let record = image.clone();
        blocking(move || store.write_ref(&record)).await?;
        Ok(image)
    }

    /// A [`StoreUse`]; waits while images are removed or pruned. Holding one while taking another
    /// (a creation that pulls) is fine: flock grants a shared lock while an exclusive one waits.
    pub async fn hold(&self) -> Result<StoreUse> {
        Ok(StoreUse { _lock: atomic::lock_async(self.gc_lock_path(), true).await? })
    }

    /// The [`StoreLock`]; waits for the pulls and creations under way to finish.
    pub async fn lock(&self) -> Result<StoreLock> {
        Ok(StoreLock { _lock: atomic::lock_async(self.gc_lock_path(), false).await? })
    }

    fn gc_lock_path(&self) -> PathBuf {
        self.root.join("locks").join("gc.lock")
    }

    /// The record of `reference`, whether or not its base disk is still there: by the name it is
    /// listed under (so a local layout that was deleted can still be named), else as a pull would
    /// resolve it.
    pub fn find(&self, reference: &str, registries: &[RegistryConfig]) -> Result<Option<Image>> {
        if let Some(image) = self.read_ref(reference.trim())? {
            return Ok(Some(image));
        }
        for name in normalized_names(&reference::parse(reference)?, registries) {
            if let Some(image) = self.read_ref(&name)? {
                return Ok(Some(image));
            }
        }
        Ok(None)
    }

    /// Deletes the record of `image` (its blobs and disk stay until [`ImageStore::collect`]).
    pub fn remove_ref(&self, _lock: &StoreLock, image: &Image) -> Result<()> {
        let path = self.ref_path(&image.reference);
        std::fs::remove_file(&path).or_else(crate::runtime::not_found_ok).map_err(|e| Error::storage("cannot remove", &path, e))?;
        let _ = std::fs::remove_file(self.ref_lock_path(&path));
        Ok(())
    }

    /// Deletes the blobs and base disks that no recorded image references and no box uses
    /// (`disks_in_use`: the file names of the base disks of every box). `only`: consider just the
    /// blobs and disk of this image (a removal), instead of everything in the store (a prune).
    pub fn collect(&self, _lock: &StoreLock, only: Option<&Image>, disks_in_use: &HashSet<String>) -> Result<Removed> {
        let mut kept_blobs = HashSet::new();
        let mut kept_disks = disks_in_use.clone();
        for image in self.list()? {
            kept_blobs.extend(self.blobs_of(&image));
            kept_disks.extend(disk_name(&image.base_disk));
        }
        let blobs: Vec<(String, u64)> = match only {
            None => self.blobs.list()?,
            Some(image) => {
                let mut blobs = Vec::new();
                for digest in self.blobs_of(image) {
                    let bytes = atomic::allocated_bytes(&self.blobs.path(&digest)?);
                    blobs.push((digest, bytes));
                }
                blobs
            }
        };
        let disks: Vec<String> = match only {
            None => {
                let dir = self.root.join("disks");
                let entries = std::fs::read_dir(&dir).map_err(|e| Error::storage("cannot list", &dir, e))?;
                entries.flatten().filter_map(|e| e.file_name().to_str().filter(|n| n.ends_with(".ext4")).map(String::from)).collect()
            }
            Some(image) => disk_name(&image.base_disk).into_iter().collect(),
        };
        // Whether `path` was there to delete. Its lock file goes too: nobody holds it meanwhile.
        let delete = |path: &Path, lock: PathBuf| -> Result<bool> {
            let existed = match std::fs::remove_file(path) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(Error::storage("cannot remove", path, e)),
            };
            let _ = std::fs::remove_file(lock);
            Ok(existed)
        };
        let mut removed = Removed::default();
        for (digest, bytes) in blobs.into_iter().filter(|(d, _)| !kept_blobs.contains(d)) {
            if delete(&self.blobs.path(&digest)?, self.blobs.lock_path(&digest)?)? {
                removed.bytes_freed += bytes;
                removed.blobs.push(digest);
            }
        }
        for name in disks.into_iter().filter(|n| !kept_disks.contains(n)) {
            let path = self.root.join("disks").join(&name);
            let bytes = atomic::allocated_bytes(&path);
            let hex = name.trim_end_matches(".ext4");
            if delete(&path, self.root.join("locks").join(format!("disk-{hex}.lock")))? {
                removed.bytes_freed += bytes;
                removed.base_disks.push(format!("sha256:{hex}"));
            }
        }
        removed.blobs.sort();
        removed.base_disks.sort();
        Ok(removed)
    }

    /// The blobs an image record needs: its manifest, config and layers. A manifest that cannot
    /// be read leaves only the first two (its layers are a cache a pull fetches again).
    fn blobs_of(&self, image: &Image) -> Vec<String> {
        let mut out = vec![image.manifest_digest.clone(), image.config_digest.clone()];
        let manifest = self.blobs.read(&image.manifest_digest).and_then(|b| super::manifest::parse_document(&b, &image.reference));
        match manifest {
            Ok(super::manifest::Document::Manifest(m)) => out.extend(m.layers.into_iter().map(|l| l.digest)),
            Ok(super::manifest::Document::Index(_)) => {}
            Err(e) => tracing::warn!(image = %image.reference, error = %e, "cannot read the manifest of an image; its layers are not kept from garbage collection"),
        }
        out
    }

    /// Every image recorded, sorted by reference. Unreadable records are skipped with a warning.
    pub fn list(&self) -> Result<Vec<Image>> {
        let dir = self.root.join("refs");
        let entries =
            std::fs::read_dir(&dir).map_err(|e| Error::storage("cannot list", &dir, e))?;
        let mut images = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| Error::storage("cannot list", &dir, e))?
                .path();
            if path.extension().is_some_and(|e| e == "json") {
                match read_image(&path) {
                    Ok(Some(image)) => images.push(image),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "skipping unreadable image record")
                    }
                }
            }
        }
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(images)
    }

    async fn load_local(&self, source: Source) -> Result<Fetched> {
        let blobs = self.blobs.clone();
        blocking(move || {
            let reference = source.local_normalized().expect("local source");
            let image = match &source {
                Source::Layout { path, tag } => {
                    layout::load_dir(path, tag.as_deref(), &blobs, &reference)?
                }
                Source::Archive { path, tag } => {
                    layout::load_archive(path, tag.as_deref(), &blobs, &reference)?
                }
                Source::Registry(_) => unreachable!("registry sources are pulled over the network"),
            };
            Ok(Fetched {
                reference,
                manifest_digest: image.manifest_digest,
                manifest: image.manifest,
            })
        })
        .await
    }

    /// Returns the base disk of the image with `config_digest`, building it if this is the first
    /// pull. Holds a per-image lock so concurrent pulls build it once.
    fn ensure_disk(
        &self,
        config_digest: &str,
        layers: &[String],
        diff_ids: &[String],
        checks: &BuildChecks,
        abandoned: &AtomicBool,
    ) -> Result<PathBuf> {
        // Temp files are removed by their guards when this returns early.
        let go_on = || match abandoned.load(Ordering::Relaxed) {
            true => Err(Error::InvalidState("the pull was abandoned while its disk was built".into())),
            false => Ok(()),
        };
        let hex = validate_digest(config_digest)?;
        let disk = self.root.join("disks").join(format!("{hex}.ext4"));
        let _lock = atomic::lock(&self.root.join("locks").join(format!("disk-{hex}.lock")))?;
        if disk.is_file() {
            return Ok(disk);
        }
        let started = Instant::now();
        // Private (0700) whatever the umask: the tree holds image files as the layers made them,
        // and only the build may reach them.
        let build = TempPath::new(unique_path(&self.root.join("tmp"), "build"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(build.path())
            .map_err(|e| Error::storage("cannot create", build.path(), e))?;
        let staging = build.path().join("rootfs");
        std::fs::create_dir(&staging).map_err(|e| Error::storage("cannot create", &staging, e))?;
        let mut rootfs = Rootfs::new(&staging)?;
        rootfs.set_limit(self.unpack_limit()?);
        for (i, digest) in layers.iter().enumerate() {
            let mut reader = HashingReader::new(open_layer(&self.blobs.path(digest)?)?);
            go_on()?;
            rootfs.apply_layer(&mut reader, digest)?;
            let diff_id = reader
                .finish()
                .map_err(|e| Error::Image(format!("layer {digest} cannot be decompressed: {e}")))?;
            // Configs without diff_ids exist (hand-made images); when present they must match.
            if diff_ids.len() == layers.len() && diff_ids[i] != diff_id {
                return Err(Error::Image(format!(
                    "layer {digest} unpacks to {diff_id}, but the image config expects {}; the image is corrupt",
                    diff_ids[i]
                )));
            }
        }
        let what = format!("image '{}'", checks.reference);
        if rootfs.is_empty()? {
            return Err(Error::Image(format!(
                "{what} has an empty root filesystem: its {} layer(s) leave nothing (whiteouts remove everything); rebuild the image",
                layers.len()
            )));
        }
        if let Some(dir) = &checks.working_dir {
            if rootfs.ensure_dir(dir, &format!("{what}, WorkingDir"))? {
                tracing::info!(image = %checks.reference, working_dir = %dir, "created the WorkingDir the image lacks");
            }
        }
        let (stats, fixups) = rootfs.finish()?;
        let unpacked = started.elapsed();
        let size = ext4::disk_size(&stats);
        let disk_tmp = build.path().join("disk.ext4");
        go_on()?;
        ext4::build(&staging, &disk_tmp, size, &fixups)?;
        go_on()?;
        std::fs::rename(&disk_tmp, &disk)
            .map_err(|e| Error::storage("cannot move into place", &disk, e))?;
        tracing::info!(
            disk = %disk.display(),
            layers = layers.len(),
            content_bytes = stats.content_bytes,
            inodes = stats.inodes,
            disk_bytes = size,
            fixups = fixups.len(),
            unpack_ms = unpacked.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "built base disk"
        );
        Ok(disk)
    }

    /// The smaller of `max_unpacked_bytes` and half the space free where the tree is staged.
    fn unpack_limit(&self) -> Result<UnpackLimit> {
        let tmp = self.root.join("tmp");
        let fs = nix::sys::statvfs::statvfs(&tmp)
            .map_err(|e| Error::storage("cannot read free space of", &tmp, e.into()))?;
        let free = (fs.blocks_available() as u64).saturating_mul(fs.fragment_size() as u64);
        Ok(if free / 2 < self.max_unpacked_bytes {
            UnpackLimit {
                bytes: free / 2,
                reason: format!(
                    "half the free space of the filesystem holding {} ({free} bytes free; the build needs room for the tree and its disk); free some space",
                    self.root.display()
                ),
            }
        } else {
            UnpackLimit {
                bytes: self.max_unpacked_bytes,
                reason: "the image store's max_unpacked_bytes limit; raise it if the image is meant to be this big".into(),
            }
        })
    }

    fn ref_path(&self, normalized: &str) -> PathBuf {
        let key = sha256_digest(normalized.as_bytes());
        self.root
            .join("refs")
            .join(format!("{}.json", &key["sha256:".len()..]))
    }

    fn read_ref(&self, normalized: &str) -> Result<Option<Image>> {
        let image = read_image(&self.ref_path(normalized))?;
        // A hash collision is not a practical concern, but a record for another name would be a bug.
        Ok(image.filter(|i| i.reference == normalized))
    }

    fn ref_lock_path(&self, ref_path: &Path) -> PathBuf {
        let name = ref_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        self.root.join("locks").join(format!("ref-{name}.lock"))
    }

    fn write_ref(&self, image: &Image) -> Result<()> {
        let path = self.ref_path(&image.reference);
        let _lock = atomic::lock(&self.ref_lock_path(&path))?;
        let json = serde_json::to_vec_pretty(image)
            .map_err(|e| Error::Internal(format!("cannot serialize image record: {e}")))?;
        atomic::write_file(&self.root.join("tmp"), &path, &json)
    }
}

fn read_image(path: &Path) -> Result<Option<Image>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::storage(
                "corrupt image record",
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::storage("cannot read", path, e)),
    }
}

/// The file name of a base disk (`<config hex>.ext4`): how disks are told apart, whatever the
/// path the home had when a record was written.
pub(crate) fn disk_name(path: &Path) -> Option<String> {
    path.file_name().and_then(|n| n.to_str()).map(String::from)
}

/// The normalized names a reference may have been recorded under, in pull order.
fn normalized_names(source: &Source, registries: &[RegistryConfig]) -> Vec<String> {
    match source {
        Source::Registry(r) => {
            let hosts: Vec<&str> = registries.iter().map(|c| c.host.as_str()).collect();
            r.candidates(&hosts)
                .iter()
                .map(|c| c.normalized())
                .collect()
        }
        local => local.local_normalized().into_iter().collect(),
    }
}

/// What a disk build checks about the image it builds, beyond its layers.
struct BuildChecks {
    /// Names the image in errors.
    reference: String,
    /// The config's WorkingDir: it must exist in the image (made if missing, as Docker does).
    working_dir: Option<String>,
}

/// Sets its flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs blocking work (file trees, mke2fs, flock) off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("image task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::layout::tests::write_layout;
    use std::time::Duration;

    #[tokio::test]
    async fn an_abandoned_disk_build_leaves_no_disk_and_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let (_, layer) = write_layout(&layout, "latest");
        let store = ImageStore::new(dir.path().join("images")).unwrap();
        let image = store.pull(&format!("oci:{}:latest", layout.display()), &[], None).await.unwrap();
        std::fs::remove_file(&image.base_disk).unwrap();

        let checks = BuildChecks { reference: image.reference.clone(), working_dir: None };
        let err = store.ensure_disk(&image.config_digest, &[layer], &[], &checks, &AtomicBool::new(true)).unwrap_err();
        assert_eq!(err.code(), "INVALID_STATE", "{err}");
        let entries = |sub: &str| std::fs::read_dir(dir.path().join("images").join(sub)).unwrap().count();
        assert_eq!((entries("disks"), entries("tmp")), (0, 0));
    }

    #[tokio::test]
    async fn pulls_a_local_layout_once_and_finds_it_offline() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let (manifest_digest, layer) = write_layout(&layout, "latest");
        let store = ImageStore::new(dir.path().join("images")).unwrap();
        let reference = format!("oci:{}:latest", layout.display());
        assert!(store.get(&reference, &[]).unwrap().is_none());

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let image = store.pull(&reference, &[], Some(tx)).await.unwrap();
        assert_eq!(image.manifest_digest, manifest_digest);
        assert_eq!(image.layer_count, 1);
        assert_eq!(image.config.cmd, ["/bin/sh"]);
        assert!(image.base_disk.starts_with(dir.path().join("images/disks")));
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        assert!(matches!(
            &events[0],
            PullProgress::Resolved { layers: 1, .. }
        ));
        assert!(matches!(&events[1], PullProgress::LayerDone { digest, .. } if *digest == layer));
        assert!(matches!(&events[2], PullProgress::DiskBuilt { path } if *path == image.base_disk));

        let cached = store.get(&reference, &[]).unwrap().unwrap();
        assert_eq!(cached.base_disk, image.base_disk);
        let again = store.pull(&reference, &[], None).await.unwrap();
        assert_eq!(again.base_disk, image.base_disk);
        assert_eq!(store.list().unwrap().len(), 1);
        assert_eq!(
            std::fs::read_dir(dir.path().join("images/tmp"))
                .unwrap()
                .count(),
            0
        );

        let out = std::process::Command::new("debugfs")
            .args(["-R", "cat /hello"])
            .arg(&image.base_disk)
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"hi\n");
    }

    #[tokio::test]
    async fn collect_deletes_only_what_no_record_and_no_box_needs() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        write_layout(&layout, "latest");
        let store = ImageStore::new(dir.path().join("images")).unwrap();
        let image = store.pull(&format!("oci:{}:latest", layout.display()), &[], None).await.unwrap();
        let nothing_in_use = HashSet::new();
        let lock = store.lock().await.unwrap();
        assert_eq!(store.collect(&lock, None, &nothing_in_use).unwrap(), Removed::default());

        let stray = sha256_digest(b"stray");
        store.blobs.put(&stray, b"stray").unwrap();
        let removed = store.collect(&lock, None, &nothing_in_use).unwrap();
        assert_eq!((removed.blobs, removed.base_disks.len()), (vec![stray], 0));

        // A box still uses the base disk: the image's blobs go, its disk stays.
        store.remove_ref(&lock, &image).unwrap();
        let in_use = HashSet::from([disk_name(&image.base_disk).unwrap()]);
        let removed = store.collect(&lock, Some(&image), &in_use).unwrap();
        assert_eq!((removed.blobs.len(), removed.base_disks.len()), (3, 0), "{removed:?}");
        assert!(image.base_disk.is_file());
        let removed = store.collect(&lock, None, &nothing_in_use).unwrap();
        assert_eq!(removed.base_disks, std::slice::from_ref(&image.config_digest));
        assert!(removed.bytes_freed > 0 && !image.base_disk.exists());
        assert!(store.list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_store_lock_waits_for_every_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(dir.path().join("images")).unwrap();
        let (a, b) = (store.hold().await.unwrap(), store.hold().await.unwrap());
        drop(a);
        assert!(tokio::time::timeout(Duration::from_millis(200), store.lock()).await.is_err());
        drop(b);
        let lock = tokio::time::timeout(Duration::from_secs(5), store.lock()).await.expect("lock once nothing holds").unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(200), store.hold()).await.is_err());
        drop(lock);
    }

    #[test]
    fn unpacking_never_takes_more_than_half_the_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(dir.path().join("images")).unwrap();
        assert!(store.unpack_limit().unwrap().bytes <= DEFAULT_MAX_UNPACKED_BYTES);
        let unbounded = store.with_max_unpacked_bytes(u64::MAX).unpack_limit().unwrap();
        let fs = nix::sys::statvfs::statvfs(&dir.path().join("images/tmp")).unwrap();
        let free = fs.blocks_available() as u64 * fs.fragment_size() as u64;
        assert!(unbounded.bytes <= free / 2 + (64 << 20), "{} of {free}", unbounded.bytes);
        assert!(unbounded.reason.contains("free space"), "{}", unbounded.reason);
    }

    /// Bindings spawn pulls on multi-threaded executors.
    #[allow(dead_code)]
    fn pull_is_send(store: &ImageStore) {
        fn send<T: Send>(_: T) {}
        send(store.pull("x", &[], None));
    }

    #[test]
    fn get_tries_names_in_pull_order() {
        let source = reference::parse("busybox").unwrap();
        let regs = [RegistryConfig {
            host: "127.0.0.1:5000".into(),
            insecure: true,
            ..Default::default()
        }];
        assert_eq!(
            normalized_names(&source, &regs),
            [
                "127.0.0.1:5000/busybox:latest",
                "127.0.0.1:5000/library/busybox:latest",
                "docker.io/library/busybox:latest"
            ]
        );
    }

    #[tokio::test]
    async fn concurrent_pulls_share_one_disk() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        write_layout(&layout, "latest");
        let reference = format!("oci:{}", layout.display());
        let a = ImageStore::new(dir.path().join("images")).unwrap();
        let b = ImageStore::new(dir.path().join("images")).unwrap();
        let (x, y) = tokio::join!(a.pull(&reference, &[], None), b.pull(&reference, &[], None));
        assert_eq!(x.unwrap().base_disk, y.unwrap().base_disk);
        assert_eq!(
            std::fs::read_dir(dir.path().join("images/disks"))
                .unwrap()
                .count(),
            1
        );
    }
}
