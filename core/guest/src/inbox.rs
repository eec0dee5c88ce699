//! The box's inbox: a 9p share of a host directory, read-only whatever the guest mounts (QEMU's
//! `readonly=on`), into which the host writes the chunk files of a staged copy (CopyInStaged).
//! Mounted only while such a copy runs (counted, for concurrent copies): QEMU refuses to migrate
//! (snapshot, suspend, fork, template) while a 9p share is mounted.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Mutex;

/// Outside the box root, so no path from the host or a box process names it.
const MOUNT_POINT: &str = "/run/boxlite/inbox";
/// As the volumes' (docs/volumes.md), read-only: the files are the host's and never change.
const MOUNT_OPTIONS: &str = "trans=virtio,version=9p2000.L,cache=none,msize=512000";

/// Staged copies running now.
static USERS: Mutex<usize> = Mutex::new(0);

/// The inbox mounted for one copy; the last one dropped unmounts it.
pub struct Mounted(());

impl Mounted {
    /// Mounts the inbox unless another copy has; fails where the VM has none (`NotFound`).
    pub fn acquire() -> io::Result<Mounted> {
        let mut users = USERS.lock().unwrap_or_else(|p| p.into_inner());
        if *users == 0 {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(MOUNT_POINT)?;
            let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            match mount(Some(boxlite_protocol::INBOX_TAG), MOUNT_POINT, Some("9p"), flags, Some(MOUNT_OPTIONS)) {
                Ok(()) => {}
                // No 9p device of that tag: a VM started without an inbox.
                Err(nix::Error::ENOENT) => return Err(io::Error::new(io::ErrorKind::NotFound, "this VM has no inbox")),
                Err(e) => return Err(io::Error::from_raw_os_error(e as i32)),
            }
        }
        *users += 1;
        Ok(Mounted(()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let mut users = USERS.lock().unwrap_or_else(|p| p.into_inner());
        *users -= 1;
        if *users == 0 && umount2(MOUNT_POINT, MntFlags::empty()).is_err() {
            // Still busy (a reader not yet gone): detached now, unmounted once it is.
            let _ = umount2(MOUNT_POINT, MntFlags::MNT_DETACH);
        }
    }
}

/// The VM path of chunk `name` (validated by the caller: no `/`, no `.`).
pub fn chunk_path(name: &str) -> PathBuf {
    PathBuf::from(MOUNT_POINT).join(name)
}
