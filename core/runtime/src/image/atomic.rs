//! Temp names, rename-into-place and cross-process locks, so that concurrent pulls (in this or
//! another process) never see or produce partial files.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh name in `dir`: `<pid>-<counter>-<nanos>-<what>`. The pid prefix lets a later process
/// tell leftovers of dead processes from work in progress (see [`remove_stale`]).
pub(crate) fn unique_path(dir: &Path, what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{}-{n}-{nanos}-{what}", std::process::id()))
}

/// Removes entries of `dir` left by processes that no longer run (crashed pulls).
pub(crate) fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            .map_or_else(|e| e != nix::errno::Errno::ESRCH, |_| true);
        if !alive {
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove stale temp entry");
            }
        }
    }
}

/// Bytes `path` takes on disk: its allocated blocks, so a sparse file counts only what it holds,
/// and a directory everything under it (symlinks not followed). 0 if it is gone.
pub(crate) fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let children = std::fs::read_dir(path).into_iter().flatten().flatten();
    own + children.map(|e| allocated_bytes(&e.path())).sum::<u64>()
}

/// A temp file or directory removed on drop unless persisted.
pub(crate) struct TempPath(Option<PathBuf>);

impl TempPath {
    pub fn new(path: PathBuf) -> Self {
        TempPath(Some(path))
    }

    pub fn path(&self) -> &Path {
        self.0.as_deref().expect("temp path used after persist")
    }

    /// Renames the temp entry to `dest` (atomically replacing it) and stops tracking it.
    pub fn persist(mut self, dest: &Path) -> Result<()> {
        // On failure `self` drops and removes the temp entry.
        std::fs::rename(self.path(), dest)
            .map_err(|e| Error::storage("cannot move into place", dest, e))?;
        self.0 = None;
        Ok(())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Not following symlinks: std's remove_dir_all does not traverse them.
            let _ = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(_) => Ok(()),
            };
        }
    }
}

/// Creates a new file readable and writable by its owner only (0600), failing if it exists.
pub(crate) fn create_private(path: &Path) -> std::io::Result<File> {
    File::options().write(true).create_new(true).mode(0o600).open(path)
}

/// Writes `bytes` to `dest` (0600) via a temp file in `tmp_dir` and a rename.
pub(crate) fn write_file(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = TempPath::new(unique_path(tmp_dir, "write"));
    let mut file =
        create_private(tmp.path()).map_err(|e| Error::storage("cannot create", tmp.path(), e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::storage("cannot write", tmp.path(), e))?;
    tmp.persist(dest)
}

/// An exclusive flock on `path`, held until dropped. Blocks, so call it off the async runtime.
pub(crate) fn lock(path: &Path) -> Result<Flock<File>> {
    flock(path, FlockArg::LockExclusive)
}

/// A shared flock on `path`, held until dropped: any number of holders at once, none while an
/// exclusive [`lock`] is held. Blocks, so call it off the async runtime.
pub(crate) fn lock_shared(path: &Path) -> Result<Flock<File>> {
    flock(path, FlockArg::LockShared)
}

fn flock(path: &Path, how: FlockArg) -> Result<Flock<File>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::storage("cannot open lock file", path, e))?;
    Flock::lock(file, how).map_err(|(_, errno)| Error::storage("cannot lock", path, errno.into()))
}

/// [`lock`] or [`lock_shared`] from async code: waits on a blocking thread.
pub(crate) async fn lock_async(path: PathBuf, shared: bool) -> Result<Flock<File>> {
    tokio::task::spawn_blocking(move || if shared { lock_shared(&path) } else { lock(&path) })
        .await
        .map_err(|e| Error::Internal(format!("lock task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_path_is_removed_unless_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let t = TempPath::new(unique_path(dir.path(), "x"));
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        let p = t.path().to_path_buf();
        drop(t);
        assert!(!p.exists());

        let dest = dir.path().join("dest");
        write_file(dir.path(), &dest, b"hello").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_entries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mine = unique_path(dir.path(), "live");
        std::fs::write(&mine, b"").unwrap();
        // pid_max is at most 2^22, so this pid cannot be running.
        let dead = dir.path().join("99999999-0-0-dead");
        std::fs::create_dir(&dead).unwrap();
        remove_stale(dir.path());
        assert!(mine.exists());
        assert!(!dead.exists());
    }

    #[test]
    fn lock_is_exclusive_across_open_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.lock");
        let held = lock(&path).unwrap();
        let other = File::options().write(true).open(&path).unwrap();
        assert!(Flock::lock(other, FlockArg::LockExclusiveNonblock).is_err());
        drop(held);
        let other = File::options().write(true).open(&path).unwrap();
        assert!(Flock::lock(other, FlockArg::LockExclusiveNonblock).is_ok());
    }
}
