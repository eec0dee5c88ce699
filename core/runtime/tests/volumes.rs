//! Host volumes and disk size on real boxes: one box (an rw volume, an ro volume, a guest path
//! with a space, an 8 GiB disk) serves every case; bad input is refused before anything is made.

mod common;

use boxlite::{BoxOptions, ExecCommand, LiteBox, Output, Volume};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

async fn sh(b: &LiteBox, script: &str) -> Output {
    b.exec(ExecCommand::new("sh", ["-c", script])).await.expect("exec").output().await.expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The names in `dir` with each one's content (directories as "<dir>"), sorted.
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let content = if e.file_type().unwrap().is_dir() { "<dir>".into() } else { std::fs::read_to_string(e.path()).unwrap_or_default() };
            (e.file_name().to_string_lossy().into_owned(), content)
        })
        .collect();
    out.sort();
    out
}

fn console(b: &LiteBox) -> String {
    let path = common::home().join("boxes").join(b.id()).join("console.log");
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_are_shared_live_and_never_expose_the_host() {
    // outer/ holds the shared directories and a secret beside them that must stay out of reach.
    let outer = tempfile::Builder::new().prefix("bxvol").tempdir_in("/tmp").unwrap();
    let (rw, ro, spaced) = (outer.path().join("rw"), outer.path().join("ro"), outer.path().join("sp ace"));
    for d in [&rw, &ro, &spaced] {
        std::fs::create_dir(d).unwrap();
    }
    let secret = outer.path().join("secret.txt");
    std::fs::write(&secret, "host-secret").unwrap();
    std::fs::write(ro.join("given.txt"), "read me").unwrap();
    std::os::unix::fs::symlink(&secret, rw.join("hostlink")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", rw.join("hostlink-rel")).unwrap();
    let before = snapshot(outer.path());

    let rt = common::runtime();
    let options = BoxOptions {
        volumes: vec![
            Volume::new(&rw, "/mnt/rw"),
            Volume::new(&ro, "/mnt/ro").read_only(),
            // Through a symlink: the record keeps the canonical path.
            Volume::new(outer.path().join("sp ace/../sp ace"), "/mnt/my data"),
        ],
        disk_size_gb: Some(8),
        ..BoxOptions::new("busybox:latest")
    };
    let b = rt.create(options).await.unwrap();
    let info = b.info().unwrap();
    assert_eq!(info.options.disk_size_gb, Some(8));
    assert_eq!(info.options.volumes[2].host_path, std::fs::canonicalize(&spaced).unwrap());
    assert!(info.options.volumes[1].read_only && !info.options.volumes[0].read_only);

    let started = Instant::now();
    b.start().await.unwrap();
    let first_boot = started.elapsed();
    let grew = console(&b);
    eprintln!("first boot (with the disk grown) {first_boot:?}; console: {}", grew.lines().filter(|l| l.contains("grew")).collect::<Vec<_>>().join(" "));
    assert!(grew.contains("grew the box filesystem"), "the guest did not grow its filesystem: {grew}");

    // The mounts are 9p, rw and ro as asked.
    let out = sh(&b, "grep ' 9p ' /proc/mounts").await;
    let mounts = text(&out.stdout);
    assert!(mounts.contains("/mnt/rw 9p rw,") && mounts.contains("/mnt/ro 9p ro,") && mounts.contains("/mnt/my\\040data 9p rw,"), "{mounts}");

    // Host -> guest at once, and again after the guest has read it (no cache).
    std::fs::write(rw.join("from-host.txt"), "one").unwrap();
    assert_eq!(text(&sh(&b, "cat /mnt/rw/from-host.txt").await.stdout), "one");
    std::fs::write(rw.join("from-host.txt"), "two, longer").unwrap();
    assert_eq!(text(&sh(&b, "cat /mnt/rw/from-host.txt").await.stdout), "two, longer");
    std::fs::write(spaced.join("f"), "spaced").unwrap();
    assert_eq!(text(&sh(&b, "cat '/mnt/my data/f'").await.stdout), "spaced");

    // Guest -> host at once.
    let out = sh(&b, "echo from-guest > /mnt/rw/from-guest.txt && mkdir -p /mnt/rw/d/e && echo deep > /mnt/rw/d/e/f").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(rw.join("from-guest.txt")).unwrap(), "from-guest\n");
    assert_eq!(std::fs::read_to_string(rw.join("d/e/f")).unwrap(), "deep\n");

    // Read-only: readable, every write refused, still refused after the guest remounts it rw
    // (QEMU enforces it on the host).
    assert_eq!(text(&sh(&b, "cat /mnt/ro/given.txt").await.stdout), "read me");
    let out = sh(&b, "echo x > /mnt/ro/new.txt").await;
    assert!(!out.status.success() && text(&out.stderr).contains("Read-only"), "{}", text(&out.stderr));
    let out = sh(&b, "mount -o remount,rw /mnt/ro && grep ' /mnt/ro ' /proc/mounts").await;
    assert!(out.status.success() && text(&out.stdout).contains("/mnt/ro 9p rw,"), "the remount itself should succeed: {}", text(&out.stderr));
    for attempt in ["echo x > /mnt/ro/new.txt", "echo x >> /mnt/ro/given.txt", "rm /mnt/ro/given.txt", "mkdir /mnt/ro/d", "chmod 777 /mnt/ro/given.txt", "mv /mnt/ro/given.txt /mnt/ro/moved"] {
        let out = sh(&b, attempt).await;
        assert!(!out.status.success(), "'{attempt}' succeeded on a read-only volume");
    }
    // The share unmounted and mounted afresh, read-write: still refused.
    let out = sh(&b, "umount /mnt/ro && mount -t 9p -o trans=virtio,version=9p2000.L boxlite1 /mnt/ro && cat /mnt/ro/given.txt && echo x > /mnt/ro/new.txt").await;
    assert_eq!(text(&out.stdout), "read me", "{}", text(&out.stderr));
    assert!(!out.status.success() && text(&out.stderr).contains("Read-only"), "{}", text(&out.stderr));
    assert_eq!(snapshot(&ro), vec![("given.txt".into(), "read me".into())]);

    // Symlinks the guest plants are plain files on the host, whatever they point at.
    let out = sh(&b, "ln -s /etc/passwd /mnt/rw/l-abs && ln -s ../../.. /mnt/rw/l-up && readlink /mnt/rw/l-abs").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "/etc/passwd\n", "the guest sees its symlink as one");
    for name in ["l-abs", "l-up"] {
        let meta = std::fs::symlink_metadata(rw.join(name)).unwrap();
        assert!(meta.file_type().is_file(), "{name} is {:?} on the host, not a plain file", meta.file_type());
    }
    // Writing through the planted symlink lands in the guest's own root, never the host's.
    let _ = sh(&b, "echo pwned > /mnt/rw/l-up/escaped.txt").await;
    assert!(!Path::new("/escaped.txt").exists() && !outer.path().join("escaped.txt").exists());

    // Device nodes and setuid bits stay in xattrs: on the host a plain file, mode without them.
    let out = sh(&b, "mknod /mnt/rw/blk b 8 0 && mknod /mnt/rw/chr c 1 1 && echo s > /mnt/rw/suid && chmod 4755 /mnt/rw/suid && stat -c %a /mnt/rw/suid && ls -l /mnt/rw/blk").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("4755\nb"), "the guest sees what it made: {}", text(&out.stdout));
    for name in ["blk", "chr"] {
        let ft = std::fs::symlink_metadata(rw.join(name)).unwrap().file_type();
        assert!(ft.is_file() && !ft.is_block_device() && !ft.is_char_device(), "{name} is a device node on the host");
    }
    let mode = std::fs::metadata(rw.join("suid")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7000, 0, "setuid/setgid/sticky reached the host: {mode:o}");
    // A guest chown changes no host owner either.
    let _ = sh(&b, "chown 1234:1234 /mnt/rw/suid").await;
    assert_eq!(std::fs::metadata(rw.join("suid")).unwrap().uid(), nix::unistd::getuid().as_raw());

    // A host symlink inside the volume pointing outside it: the guest never reads through it.
    for link in ["hostlink", "hostlink-rel"] {
        let out = sh(&b, &format!("cat /mnt/rw/{link}")).await;
        assert!(!text(&out.stdout).contains("host-secret"), "the guest read the host file through {link}");
    }
    // `..` from the mount root is the guest's own /mnt.
    let out = sh(&b, "ls /mnt/rw/.. ; cat /mnt/rw/../secret.txt /mnt/rw/../../secret.txt").await;
    assert!(!text(&out.stdout).contains("host-secret") && text(&out.stdout).contains("ro"), "{}", text(&out.stdout));

    // Nothing outside the shared directories changed on the host.
    let after: Vec<(String, String)> = snapshot(outer.path());
    assert_eq!(after, before, "the host directory around the volumes changed");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host-secret");

    // Disk size: df sees ~8 GiB; the data survives stop/start; the host file stays sparse.
    let out = sh(&b, "df -k / | tail -1").await;
    let total_kib: u64 = text(&out.stdout).split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!((7_500_000..=8_400_000).contains(&total_kib), "df says {total_kib} KiB: {}", text(&out.stdout));
    let out = sh(&b, "dd if=/dev/urandom of=/data.bin bs=1M count=16 2>/dev/null && sha256sum /data.bin").await;
    let sum = text(&out.stdout);
    b.stop().await.unwrap();
    let started = Instant::now();
    b.start().await.unwrap();
    eprintln!("second boot (nothing to grow) {:?}", started.elapsed());
    assert!(!console(&b).contains("grew the box filesystem"), "the filesystem was grown again on the second boot");
    assert_eq!(text(&sh(&b, "sha256sum /data.bin").await.stdout), sum);
    let out = sh(&b, "df -k / | tail -1").await;
    assert!(text(&out.stdout).contains(&total_kib.to_string()), "{}", text(&out.stdout));
    // The volumes are back after the restart.
    assert_eq!(text(&sh(&b, "cat /mnt/rw/from-guest.txt; echo x > /mnt/ro/y || echo refused").await.stdout), "from-guest\nrefused\n");
    let disk = std::fs::metadata(common::home().join("boxes").join(b.id()).join("disk.qcow2")).unwrap();
    let allocated = disk.blocks() * 512;
    eprintln!("box disk: {} MiB allocated on the host for an 8 GiB disk", allocated >> 20);
    assert!(allocated < 256 << 20, "the box disk is not sparse: {allocated} bytes allocated");

    b.stop().await.unwrap();
    rt.remove(b.id(), false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_volumes_and_disk_sizes_are_refused_at_create() {
    let rt = common::runtime();
    rt.pull("busybox:latest", None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = d.join("file");
    std::fs::write(&file, b"x").unwrap();
    let with = |volumes: Vec<Volume>| BoxOptions { volumes, ..BoxOptions::new("busybox:latest") };
    let cases: Vec<(BoxOptions, String)> = vec![
        (with(vec![Volume::new(d.join("missing"), "/mnt")]), format!("'{}' does not exist", d.join("missing").display())),
        (with(vec![Volume::new("relative/dir", "/mnt")]), "'relative/dir' must be absolute".into()),
        (with(vec![Volume::new(&file, "/mnt")]), "is not a directory".into()),
        (with(vec![Volume::new(d, "mnt")]), "guest path 'mnt' must be absolute".into()),
        (with(vec![Volume::new(d, "/")]), "'/' would replace".into()),
        (with(vec![Volume::new(d, "/proc/x")]), "over the box's /proc".into()),
        (with(vec![Volume::new(d, "/mnt/../x")]), "write it as '/x'".into()),
        (with(vec![Volume::new(d, "/a"), Volume::new(d, "/a")]), "two volumes are mounted at '/a'".into()),
        (with(vec![Volume::new(d, "/a"), Volume::new(d, "/a/b")]), "may not nest".into()),
        (with((0..4).map(|i| Volume::new(d, format!("/v{i}"))).collect()), "at most 3".into()),
        (BoxOptions { disk_size_gb: Some(0), ..BoxOptions::new("busybox:latest") }, "disk_size_gb 0 is out of range".into()),
        (BoxOptions { disk_size_gb: Some(1025), ..BoxOptions::new("busybox:latest") }, "1 to 1024".into()),
        // The image's own disk is over 2 GiB (content plus headroom).
        (BoxOptions { disk_size_gb: Some(1), ..BoxOptions::new("busybox:latest") }, "disk_size_gb 1 is smaller than the disk of image".into()),
    ];
    let boxes_before = rt.list().unwrap().len();
    for (options, expected) in cases {
        let started = Instant::now();
        let err = rt.create(options).await.err().expect("create must fail");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert_eq!(err.code(), "INVALID_ARGUMENT", "{err}");
        assert!(err.to_string().contains(&expected), "'{err}' does not say '{expected}'");
    }
    assert_eq!(rt.list().unwrap().len(), boxes_before, "a refused create left a box");
}
