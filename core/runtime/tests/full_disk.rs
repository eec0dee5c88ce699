//! A home on a small tmpfs: a create that runs out of space leaves no ghost box and names the
//! real cause, a running box whose disk fills sees an I/O error instead of freezing, and a
//! read-only home is named with its path.

mod common;

use boxlite::{BoxOptions, ExecCommand, RegistryConfig, Runtime, RuntimeOptions};
use std::time::{Duration, Instant};
use std::path::{Path, PathBuf};

/// A tmpfs of `mib` MiB mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(mib: u32) -> Tmpfs {
        let dir = tempfile::Builder::new().prefix("bxfull").tempdir_in("/tmp").unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "mounting a tmpfs failed: these tests need root (CI and scripts/test.sh run as root)");
        Tmpfs { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn remount(&self, opts: &str) {
        let ok = std::process::Command::new("mount").args(["-o", &format!("remount,{opts}")]).arg(self.dir.path()).status().unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn runtime_at(home: &Path) -> boxlite::Result<Runtime> {
    let registries = vec![RegistryConfig { host: common::registry(), insecure: true, ..Default::default() }];
    Runtime::new(RuntimeOptions { home: Some(home.into()), registries, ..Default::default() })
}

/// Fills the filesystem at `dir` until only about `leave` bytes are free.
fn fill(dir: &Path, leave: u64) {
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let f = std::fs::File::create(dir.join("filler")).unwrap();
    let _ = nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, free.saturating_sub(leave) as i64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_on_a_full_home_disk_names_the_cause_and_leaves_no_ghost_box() {
    let fs = Tmpfs::new(64);
    let rt = runtime_at(&fs.path()).unwrap();
    rt.pull("busybox:latest", None).await.unwrap();
    // Only a few KiB free: the box's disk cannot be made.
    fill(&fs.path(), 16 * 1024);
    let err = rt.create(BoxOptions::new("busybox:latest")).await.err().expect("create must fail on a full disk");
    assert_eq!(err.code(), "STORAGE", "{err}");
    assert!(err.to_string().contains("full") || err.to_string().contains("No space"), "{err}");
    assert!(rt.list().unwrap().is_empty(), "a ghost box was recorded");
    assert_eq!(std::fs::read_dir(fs.path().join("boxes")).unwrap().count(), 0, "a box directory was left");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_box_whose_disk_fills_gets_an_io_error_and_stays_usable_and_removable() {
    let fs = Tmpfs::new(96);
    let rt = runtime_at(&fs.path()).unwrap();
    let b = rt.create(BoxOptions::new("busybox:latest")).await.unwrap();
    b.exec(ExecCommand::new("true", Vec::<String>::new())).await.unwrap().wait().await.unwrap();
    // 8 MiB left for the box's overlay: writing 64 MiB must fail inside the guest, not pause
    // the VM (QEMU's default werror=enospc stops it for good).
    fill(&fs.path(), 8 << 20);
    let t = Instant::now();
    let write = ExecCommand::new("sh", ["-c", "dd if=/dev/zero of=/big bs=1M count=64 conv=fsync"]);
    let out = tokio::time::timeout(Duration::from_secs(120), async { b.exec(write).await.unwrap().output().await.unwrap() })
        .await
        .expect("the write on a full disk froze the box");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.exit_code(), 0, "dd cannot have succeeded on a full disk: {stderr}");
    assert!(stderr.contains("Input/output error") || stderr.contains("No space"), "{stderr}");
    eprintln!("the full-disk write failed in the guest after {:?}", t.elapsed());
    // The box still answers, and is removed on the full disk, which frees its space.
    let out = b.exec(ExecCommand::new("echo", ["alive"])).await.unwrap().output().await.unwrap();
    assert_eq!(out.stdout, b"alive\n");
    rt.remove(b.id(), true).await.unwrap();
    assert!(rt.list().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(fs.path().join("boxes")).unwrap().count(), 0, "the box directory was left");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_home_still_lists_its_boxes_and_names_itself_when_written() {
    let fs = Tmpfs::new(64);
    let rt = runtime_at(&fs.path()).unwrap();
    rt.pull("busybox:latest", None).await.unwrap();
    let id = rt.create(BoxOptions::new("busybox:latest")).await.unwrap().id().to_string();
    drop(rt);
    fs.remount("ro");
    let rt = runtime_at(&fs.path()).expect("a read-only home must open for reading");
    assert_eq!(rt.list().unwrap().iter().map(|b| b.id.clone()).collect::<Vec<_>>(), [id.clone()]);
    assert_eq!(rt.images().unwrap().len(), 1);
    let err = rt.remove(&id, true).await.expect_err("nothing can be removed from a read-only home");
    assert_eq!(err.code(), "STORAGE", "{err}");
    assert!(err.to_string().to_lowercase().contains("read-only"), "{err}");
    drop(rt);
    // Without a database there is nothing to read: the error names the home.
    fs.remount("rw");
    std::fs::remove_dir_all(fs.path().join("db")).unwrap();
    fs.remount("ro");
    let err = runtime_at(&fs.path()).err().expect("a read-only home without a database cannot be opened");
    let msg = err.to_string();
    assert_eq!(err.code(), "STORAGE", "{msg}");
    assert!(msg.contains(&fs.path().display().to_string()), "the error must name the home: {msg}");
}
