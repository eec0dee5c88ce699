//! Hostile images built by the test as local OCI layouts: nothing privileged reaches the host,
//! bombs stay bounded, the store is private, and broken images are named at build time.

mod oci;

use boxlite::image::ImageStore;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tar::EntryType;

/// `vfs_cap_data` v2 granting cap_net_raw, as `setcap cap_net_raw+ep` writes it.
const CAP_NET_RAW: [u8; 20] = [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn new_store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::Builder::new().prefix("bxh").tempdir_in("/tmp").unwrap();
    let store = ImageStore::new(dir.path().join("images")).unwrap();
    (dir, store)
}

/// Writes `image` as a layout under `dir` and returns its `oci:` reference.
fn layout(dir: &Path, image: &oci::Image) -> String {
    let path = dir.join("layout");
    image.write_layout(&path, "latest");
    format!("oci:{}:latest", path.display())
}

fn debugfs(disk: &Path, request: &str) -> String {
    let tool = ["/usr/sbin/debugfs", "/sbin/debugfs"].into_iter().find(|p| Path::new(p).is_file());
    let tool = tool.expect("debugfs not found: install e2fsprogs (apt-get install e2fsprogs)");
    let out = std::process::Command::new(tool).args(["-R", request]).arg(disk).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every entry under `root` with setuid/setgid bits, a device number or a `security.*` xattr.
fn privileged_entries(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&path) else { continue };
        let ft = md.file_type();
        if md.mode() & 0o6000 != 0 || ft.is_block_device() || ft.is_char_device() {
            found.push(format!("{} mode {:o}", path.display(), md.mode()));
        }
        if !ft.is_symlink() {
            let c = CString::new(path.as_os_str().as_bytes()).unwrap();
            let mut names = vec![0u8; 4096];
            // SAFETY: c is NUL-terminated and names/len describe a live buffer.
            let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
            if n > 0 {
                for name in names[..n as usize].split(|b| *b == 0).filter(|n| n.starts_with(b"security.")) {
                    found.push(format!("{} xattr {}", path.display(), String::from_utf8_lossy(name)));
                }
            }
        }
        if ft.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    found
}

/// Scans `tmp` over and over until stopped: what it saw that it must never see, the modes of the
/// build directories, and how many scans caught a staging tree holding the image's `usr/bin/id`.
struct Watcher {
    stop: Arc<AtomicBool>,
    violations: Arc<Mutex<BTreeSet<String>>>,
    build_modes: Arc<Mutex<Vec<(PathBuf, u32)>>>,
    caught: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl Watcher {
    fn start(tmp: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let violations = Arc::new(Mutex::new(BTreeSet::new()));
        let build_modes = Arc::new(Mutex::new(Vec::new()));
        let caught = Arc::new(AtomicUsize::new(0));
        let (s, v, b, c) = (stop.clone(), violations.clone(), build_modes.clone(), caught.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
                    let path = entry.path();
                    if let Ok(md) = std::fs::symlink_metadata(&path) {
                        if md.is_dir() {
                            b.lock().unwrap().push((path.clone(), md.mode() & 0o7777));
                        }
                    }
                    if path.join("rootfs/usr/bin/id").exists() {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                }
                v.lock().unwrap().extend(privileged_entries(&tmp));
            }
        });
        Watcher { stop, violations, build_modes, caught, thread }
    }

    fn finish(self) -> (BTreeSet<String>, Vec<(PathBuf, u32)>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let v = self.violations.lock().unwrap().clone();
        let b = self.build_modes.lock().unwrap().clone();
        (v, b, self.caught.load(Ordering::Relaxed))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn setuid_capabilities_and_devices_exist_only_inside_the_image() {
    let mut layer = oci::Layer::default()
        .dir("usr/bin/")
        .entry("usr/bin/id", EntryType::Regular, 0o4755, b"#!/bin/sh\necho uid=0\n")
        .entry("var/mail/", EntryType::Directory, 0o2775, b"")
        .file_with_xattr("usr/bin/ping", 0o755, b"ping", "security.capability", &CAP_NET_RAW)
        .device("dev/vda", EntryType::Block, 252, 0)
        .device("dev/null", EntryType::Char, 1, 3);
    // Enough files that the build lasts long enough for the watcher to see the staging tree.
    for i in 0..4000 {
        layer = layer.file(&format!("bulk/{i}"), format!("{i:01024}").as_bytes());
    }
    let image = oci::Image::new(vec![oci::gzip(&layer.tar())], serde_json::json!({"Cmd": ["/bin/sh"]}));
    let (dir, store) = new_store();
    let reference = layout(dir.path(), &image);

    let watcher = Watcher::start(dir.path().join("images/tmp"));
    let pulled = store.pull(&reference, &[], None).await;
    let (violations, build_modes, caught) = watcher.finish();
    let pulled = pulled.unwrap();

    assert_eq!(violations, BTreeSet::new(), "privileged metadata existed on the host while the disk was built");
    assert!(caught > 0, "the watcher never saw the staging tree; make the image bigger");
    let images = dir.path().join("images");
    assert_eq!(std::fs::metadata(images.join("tmp")).unwrap().mode() & 0o777, 0o700);
    assert!(!build_modes.is_empty());
    for (path, mode) in &build_modes {
        assert_eq!(*mode, 0o700, "{} was {mode:o} during the build", path.display());
    }

    let disk = &pulled.base_disk;
    let id = debugfs(disk, "stat /usr/bin/id");
    assert!(id.contains("Mode:  04755") && id.contains("User:     0"), "{id}");
    assert!(debugfs(disk, "stat /var/mail").contains("Mode:  02775"));
    let ping = debugfs(disk, "stat /usr/bin/ping");
    assert!(ping.contains("security.capability (20) = 01 00 00 02 00 20 00 00"), "{ping}");
    let vda = debugfs(disk, "stat /dev/vda");
    assert!(vda.contains("Type: block special") && vda.contains("Mode:  0666") && vda.contains("(hex fc:00)"), "{vda}");
    let null = debugfs(disk, "stat /dev/null");
    assert!(null.contains("Type: character special") && null.contains("(hex 01:03)"), "{null}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_store_is_private_to_its_owner() {
    let image = oci::Image::new(vec![oci::Layer::default().file("etc/hostname", b"box\n").tar()], serde_json::json!({}));
    let (dir, store) = new_store();
    let pulled = store.pull(&layout(dir.path(), &image), &[], None).await.unwrap();
    let images = dir.path().join("images");
    let (mut dirs, mut files) = (0, 0);
    let mut stack = vec![images.clone()];
    while let Some(path) = stack.pop() {
        let md = std::fs::symlink_metadata(&path).unwrap();
        if md.is_dir() {
            assert_eq!(md.mode() & 0o777, 0o700, "{} is {:o}", path.display(), md.mode() & 0o777);
            dirs += 1;
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.parent().unwrap().file_name().unwrap() != "locks" {
            assert_eq!(md.mode() & 0o777, 0o600, "{} is {:o}", path.display(), md.mode() & 0o777);
            files += 1;
        }
    }
    assert_eq!(dirs, 7, "images, blobs, blobs/sha256, disks, refs, locks, tmp");
    // config, layer, manifest, the base disk and the reference record.
    assert_eq!(files, 5);
    assert_eq!(std::fs::metadata(&pulled.base_disk).unwrap().mode() & 0o777, 0o600);
}

/// Bytes under `dir`, as allocated (st_blocks), each inode once.
fn allocated_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut seen = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&path) else { continue };
        if seen.insert(md.ino()) {
            total += md.blocks() * 512;
        }
        if md.is_dir() {
            stack.extend(std::fs::read_dir(&path).into_iter().flatten().flatten().map(|e| e.path()));
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gzip_bomb_is_refused_naming_the_layer_and_the_limit() {
    // 4 MB of gzip that expands to one 4 GiB file of zeros.
    let bomb = oci::gzip_zero_bomb("zeros", 4096);
    assert!(bomb.len() < 8 << 20, "{}", bomb.len());
    let image = oci::Image::new(vec![bomb], serde_json::json!({}));
    let (dir, store) = new_store();
    let store = store.with_max_unpacked_bytes(1 << 30);
    let started = std::time::Instant::now();
    let err = store.pull(&layout(dir.path(), &image), &[], None).await.unwrap_err();
    eprintln!("gzip bomb: refused after {:?}: {err}", started.elapsed());
    assert_eq!(err.code(), "IMAGE", "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&image.layer_digest(0)) && msg.contains("max_unpacked_bytes") && msg.contains("1073741824"), "{msg}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(std::fs::read_dir(dir.path().join("images/tmp")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(dir.path().join("images/disks")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gnu_sparse_bomb_is_refused_at_its_header() {
    // A 10 KB tar whose one entry claims 3 GiB.
    let layer = oci::gnu_sparse_layer("sparse", 3 << 30);
    assert!(layer.len() < 10 << 10);
    let image = oci::Image::new(vec![layer], serde_json::json!({}));
    let (dir, store) = new_store();
    let store = store.with_max_unpacked_bytes(1 << 30);
    let started = std::time::Instant::now();
    let err = store.pull(&layout(dir.path(), &image), &[], None).await.unwrap_err();
    eprintln!("sparse bomb: refused after {:?}", started.elapsed());
    assert_eq!(err.code(), "IMAGE", "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&image.layer_digest(0)) && msg.contains("max_unpacked_bytes"), "{msg}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn zeros_within_the_limit_are_staged_as_holes() {
    // 256 MiB of zeros plus a 256 MiB GNU sparse file, under the default limit.
    let image = oci::Image::new(
        vec![oci::gzip_zero_bomb("zeros", 256), oci::gnu_sparse_layer("sparse", 256 << 20)],
        serde_json::json!({}),
    );
    let (dir, store) = new_store();
    let tmp = dir.path().join("images/tmp");
    let stop = Arc::new(AtomicBool::new(false));
    let peak = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
                    peak = peak.max(allocated_bytes(&entry.path().join("rootfs")));
                }
            }
            peak
        })
    };
    let pulled = store.pull(&layout(dir.path(), &image), &[], None).await;
    stop.store(true, Ordering::Relaxed);
    let peak = peak.join().unwrap();
    let pulled = pulled.unwrap();
    let disk = std::fs::metadata(&pulled.base_disk).unwrap();
    eprintln!("512 MiB of zeros: staging tree peaked at {peak} bytes allocated; base disk {} bytes allocated", disk.blocks() * 512);
    assert!(peak < 16 << 20, "the staging tree took {peak} bytes");
    let zeros = debugfs(&pulled.base_disk, "stat /zeros");
    assert!(zeros.contains("Size: 268435456"), "{zeros}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_whose_whiteouts_empty_it_is_named_at_build_time() {
    let base = oci::Layer::default().dir("home/").file("home/x", b"x").file("etc/passwd", b"root:x:0:0::/:/bin/sh\n").tar();
    let wipe = oci::Layer::default().file(".wh.home", b"").file(".wh.etc", b"").tar();
    let image = oci::Image::new(vec![base, wipe], serde_json::json!({"WorkingDir": "/home"}));
    let (dir, store) = new_store();
    let reference = layout(dir.path(), &image);
    let err = store.pull(&reference, &[], None).await.unwrap_err();
    assert_eq!(err.code(), "IMAGE", "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("image '{reference}'")) && msg.contains("empty root filesystem"), "{msg}");
    assert_eq!(std::fs::read_dir(dir.path().join("images/disks")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_working_dir_is_made_and_one_that_is_a_file_is_named() {
    let layer = oci::Layer::default().file("etc/hostname", b"box\n").tar();
    let image = oci::Image::new(vec![layer.clone()], serde_json::json!({"WorkingDir": "/srv/app"}));
    let (dir, store) = new_store();
    let pulled = store.pull(&layout(dir.path(), &image), &[], None).await.unwrap();
    let stat = debugfs(&pulled.base_disk, "stat /srv/app");
    assert!(stat.contains("Type: directory") && stat.contains("Mode:  0755"), "{stat}");

    let image = oci::Image::new(vec![layer], serde_json::json!({"WorkingDir": "/etc/hostname/sub"}));
    let (dir, store) = new_store();
    let reference = layout(dir.path(), &image);
    let err = store.pull(&reference, &[], None).await.unwrap_err();
    assert_eq!(err.code(), "IMAGE", "{err}");
    assert!(err.to_string().contains("WorkingDir") && err.to_string().contains("/etc/hostname/sub"), "{err}");
}
