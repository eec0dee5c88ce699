//! Files in and out of one running box: copy in and out (a 100 MB file, a tree with modes, mtimes
//! and symlinks, overwrite), the files API and watch, hostile guest trees, and bad input. One box
//! serves every case, in order; the last ones stop it.

mod common;

use boxlite::{BoxOptions, CopyOptions, ExecCommand, FileType, LiteBox, MkdirOptions, RemoveOptions, WatchEventKind, WatchOptions, WriteOptions};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

const OVERWRITE: CopyOptions = CopyOptions { overwrite: true };
const KEEP: CopyOptions = CopyOptions { overwrite: false };

async fn sh(b: &LiteBox, script: &str) -> String {
    let out = b.exec(ExecCommand::new("sh", ["-c", script])).await.unwrap().output().await.unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf).unwrap() {
            0 => break,
            n => h.update(&buf[..n]),
        }
    }
    hex::encode(h.finalize())
}

fn random_file(path: &Path, bytes: usize) {
    let mut src = std::fs::File::open("/dev/urandom").unwrap();
    let mut out = std::fs::File::create(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len());
        src.read_exact(&mut buf[..n]).unwrap();
        out.write_all(&buf[..n]).unwrap();
        left -= n;
    }
}

fn set_mtime(path: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, path, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::symlink_metadata(path).unwrap().modified().unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn files_in_and_out_of_one_box() {
    let rt = common::runtime();
    let b = rt.create(BoxOptions::new("busybox:latest")).await.unwrap();
    b.start().await.unwrap();
    let host = tempfile::tempdir().unwrap();
    let host = host.path();

    big_file_round_trip(&b, host).await;
    the_inbox_is_read_only_and_the_boxs_own(&b).await;
    tree_round_trip(&b, host).await;
    overwrite(&b, host).await;
    cancelled_copy_in(&b, host).await;
    files_api(&b).await;
    hostile_trees(&b, host).await;
    bad_input(&b, host).await;
    full_box_disk(&b, host).await;
    watch_and_stop(&b, host).await;
    rt.remove(b.id(), true).await.unwrap();
}

/// The box's inbox on the host, where staged copies in write their chunks.
fn inbox(b: &LiteBox) -> std::path::PathBuf {
    common::home().join("boxes").join(b.id()).join("inbox")
}

/// Staged copies in the agent has finished, from the box's console log.
fn staged_copies(b: &LiteBox) -> usize {
    let log = std::fs::read_to_string(common::home().join("boxes").join(b.id()).join("console.log")).unwrap_or_default();
    log.matches("boxlite-guest: staged copy in:").count()
}

async fn big_file_round_trip(b: &LiteBox, host: &Path) {
    let src = host.join("big.bin");
    random_file(&src, 100 << 20);
    let want = sha256_file(&src);
    let staged = staged_copies(b);
    let t = Instant::now();
    b.copy_in(&src, "/root/", KEEP).await.unwrap();
    eprintln!("copy_in 100 MB: {:?}", t.elapsed());
    assert_eq!(staged_copies(b), staged + 1, "the copy went through the inbox");
    assert_eq!(entries(&inbox(b)), Vec::<String>::new(), "the chunks are gone");
    assert_eq!(sh(b, "grep -c boxlite-inbox /proc/mounts || true").await, "0\n", "the inbox is unmounted after the copy");
    // Unmounted, it no longer blocks migration: a snapshot works between copies.
    b.snapshot(&format!("after-copy-{}", b.id())).await.unwrap();
    // A small one goes over the channel.
    std::fs::write(host.join("small.txt"), b"small").unwrap();
    b.copy_in(host.join("small.txt"), "/root/", KEEP).await.unwrap();
    assert_eq!((staged_copies(b), sh(b, "cat /root/small.txt && rm /root/small.txt").await.as_str()), (staged + 1, "small"));
    let in_box = sh(b, "sha256sum /root/big.bin").await;
    assert_eq!(in_box.split_whitespace().next(), Some(want.as_str()));
    let out = host.join("back");
    std::fs::create_dir(&out).unwrap();
    let t = Instant::now();
    b.copy_out("/root/big.bin", &out, KEEP).await.unwrap();
    eprintln!("copy_out 100 MB: {:?}", t.elapsed());
    assert_eq!(sha256_file(&out.join("big.bin")), want);
    assert_eq!(entries(&out), ["big.bin"], "no temporary left beside it");
    sh(b, "rm /root/big.bin").await;
}

/// The guest (root in the box) can mount the inbox itself, even read-write, but QEMU refuses
/// every write; the share is the inbox alone (QEMU keeps `..` at its root, docs/volumes.md), so
/// nothing else of the box's directory on the host, or of another box, is seen.
async fn the_inbox_is_read_only_and_the_boxs_own(b: &LiteBox) {
    std::fs::write(inbox(b).join("planted"), b"host").unwrap();
    let out = b
        .exec(ExecCommand::new("sh", ["-c", "mkdir -p /mnt/inbox && mount -t 9p -o trans=virtio,version=9p2000.L boxlite-inbox /mnt/inbox && \
            grep ' /mnt/inbox ' /proc/mounts && ls -a /mnt/inbox && cat /mnt/inbox/planted; \
            for w in 'echo x > /mnt/inbox/new' 'echo x >> /mnt/inbox/planted' 'rm /mnt/inbox/planted' 'mkdir /mnt/inbox/d' \
              'chmod 777 /mnt/inbox/planted' 'mv /mnt/inbox/planted /mnt/inbox/moved' 'ln -s /etc /mnt/inbox/l'; do \
              sh -c \"$w\" 2>/dev/null && echo \"WROTE: $w\"; done; umount /mnt/inbox"]))
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("/mnt/inbox 9p rw,"), "mounted read-write by the guest: {stdout}");
    assert!(!stdout.contains("WROTE"), "{stdout}");
    assert!(stdout.contains("\n.\n..\nplanted\nhost"), "only the inbox's one file: {stdout}");
    assert_eq!(entries(&inbox(b)), ["planted"]);
    assert_eq!(std::fs::read(inbox(b).join("planted")).unwrap(), b"host");
    std::fs::remove_file(inbox(b).join("planted")).unwrap();
    let meta = std::fs::metadata(inbox(b)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
}

async fn tree_round_trip(b: &LiteBox, host: &Path) {
    let d = host.join("tree");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(d.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(d.join("sub/secret"), b"s3cret").unwrap();
    std::fs::set_permissions(d.join("sub/secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("run.sh", d.join("link")).unwrap();
    for (p, t) in [("run.sh", 1_500_000_000), ("sub/secret", 1_500_000_100), ("sub", 1_500_000_200), ("", 1_500_000_300)] {
        set_mtime(&d.join(p), t);
    }
    // Into an existing directory: lands under its own name.
    b.copy_in(&d, "/tmp", KEEP).await.unwrap();
    let stat = sh(b, "cd /tmp/tree && stat -c '%n %a %Y' . run.sh sub sub/secret && readlink link && cat sub/secret").await;
    assert_eq!(stat, ". 755 1500000300\nrun.sh 755 1500000000\nsub 755 1500000200\nsub/secret 600 1500000100\nrun.sh\ns3cret");
    // To a new name, and back out.
    b.copy_in(&d, "/tmp/renamed", KEEP).await.unwrap();
    assert_eq!(sh(b, "cat /tmp/renamed/sub/secret").await, "s3cret");
    let out = host.join("tree-out");
    b.copy_out("/tmp/tree", &out, KEEP).await.unwrap();
    for p in ["run.sh", "sub", "sub/secret", ""] {
        assert_eq!((mode(&out.join(p)), mtime(&out.join(p))), (mode(&d.join(p)), mtime(&d.join(p))), "{p}");
    }
    assert_eq!(std::fs::read_link(out.join("link")).unwrap(), Path::new("run.sh"));
    assert_eq!(std::fs::read(out.join("sub/secret")).unwrap(), b"s3cret");
}

async fn overwrite(b: &LiteBox, host: &Path) {
    let f = host.join("note.txt");
    std::fs::write(&f, b"one").unwrap();
    b.copy_in(&f, "/tmp/note.txt", KEEP).await.unwrap();
    std::fs::write(&f, b"two").unwrap();
    let err = b.copy_in(&f, "/tmp/note.txt", KEEP).await.unwrap_err();
    assert_eq!(err.code(), "ALREADY_EXISTS", "{err}");
    assert!(err.to_string().contains("/tmp/note.txt"), "{err}");
    assert_eq!(sh(b, "cat /tmp/note.txt").await, "one");
    b.copy_in(&f, "/tmp/note.txt", OVERWRITE).await.unwrap();
    assert_eq!(sh(b, "cat /tmp/note.txt; ls -a /tmp | grep -c boxlite || true").await, "two0\n");
    // A directory over an existing one is replaced whole.
    b.copy_in(host.join("tree"), "/tmp", OVERWRITE).await.unwrap();
    // Out: an existing host file is refused, then replaced.
    let dest = host.join("note-out.txt");
    std::fs::write(&dest, b"host").unwrap();
    let err = b.copy_out("/tmp/note.txt", &dest, KEEP).await.unwrap_err();
    assert_eq!(err.code(), "ALREADY_EXISTS", "{err}");
    assert!(err.to_string().contains(&dest.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"host");
    b.copy_out("/tmp/note.txt", &dest, OVERWRITE).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"two");
}

/// A copy cancelled midway (its future dropped) leaves nothing in the box: neither the target nor
/// the agent's hidden staging entry beside it. Several rounds cut at different points, of one big
/// file and of a tree of many small files (whose tar is cut between two entries, so a cut the
/// agent took for the end would land a partial tree).
async fn cancelled_copy_in(b: &LiteBox, host: &Path) {
    let big = host.join("sparse.bin");
    std::fs::File::create(&big).unwrap().set_len(512 << 20).unwrap(); // reads as zeros
    let tree = host.join("many");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..20_000 {
        std::fs::write(tree.join(format!("f{i:05}")), b"x").unwrap();
    }
    for round in 0..6u64 {
        let (src, target) = if round % 2 == 0 { (&big, "/root/sparse.bin") } else { (&tree, "/root/many") };
        let cut = Duration::from_millis(300 + 100 * round);
        let copy = tokio::time::timeout(cut, b.copy_in(src, target, KEEP)).await;
        assert!(copy.is_err(), "round {round}: the copy ended before its cancel: {copy:?}");
        let t = Instant::now();
        let left = loop {
            let left = sh(b, "ls -a /root | grep -e sparse -e many || true").await;
            if left.is_empty() || t.elapsed() > Duration::from_secs(5) {
                break left;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(left, "", "round {round} (cut after {cut:?}): the cancelled copy left this in the box");
        let t = Instant::now();
        while !entries(&inbox(b)).is_empty() && t.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(entries(&inbox(b)), Vec::<String>::new(), "round {round}: the cancelled copy's chunks are gone");
        eprintln!("cancelled copy {round} (after {cut:?}) left nothing after {:?}", t.elapsed());
    }
}

async fn files_api(b: &LiteBox) {
    let files = b.files();
    files.mkdir("/tmp/api/x/y", MkdirOptions { parents: true }).await.unwrap();
    files.mkdir("/tmp/api/x/y", MkdirOptions { parents: true }).await.unwrap();
    let err = files.mkdir("/tmp/api/x/y", MkdirOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), "ALREADY_EXISTS", "{err}");
    files.write("/tmp/api/a.txt", b"hello", WriteOptions { mode: Some(0o640) }).await.unwrap();
    assert_eq!(files.read_all("/tmp/api/a.txt").await.unwrap(), b"hello");
    // A streamed write of several chunks.
    let mut w = files.writer("/tmp/api/x/big", WriteOptions::default()).await.unwrap();
    for i in 0..40u8 {
        w.write(&vec![i; 50_000]).await.unwrap();
    }
    w.finish().await.unwrap();
    let mut stream = files.read("/tmp/api/x/big").await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = stream.next().await.unwrap() {
        assert!(chunk.len() <= boxlite_protocol::MAX_CHUNK_BYTES, "a chunk of {} bytes", chunk.len());
        got.extend(chunk);
    }
    assert_eq!(got.len(), 2_000_000);
    assert_eq!(got[1_999_999], 39);

    let list = files.list("/tmp/api").await.unwrap();
    let names: Vec<_> = list.iter().map(|e| (e.name.as_str(), e.file_type)).collect();
    assert_eq!(names, [("a.txt", FileType::File), ("x", FileType::Dir)]);
    assert_eq!((list[0].size, list[0].mode), (5, 0o640));
    assert!(list[0].mtime > SystemTime::now() - Duration::from_secs(600), "{:?}", list[0].mtime);
    // A symlink is listed and stated as lstat sees it (mode 0777 on Linux); the box root is "/".
    sh(b, "ln -s a.txt /tmp/api/link").await;
    let link = files.list("/tmp/api").await.unwrap().into_iter().find(|e| e.name == "link").unwrap();
    assert_eq!((link.file_type, link.mode, link.size), (FileType::Symlink, 0o777, 5));
    let st = files.stat("/tmp/api/link").await.unwrap();
    assert_eq!((st.name.as_str(), st.file_type, st.mode), ("link", FileType::Symlink, 0o777));
    let st = files.stat("/").await.unwrap();
    assert_eq!((st.name.as_str(), st.file_type), ("/", FileType::Dir));
    let st = files.stat("/tmp/api/x/big").await.unwrap();
    assert_eq!((st.name.as_str(), st.size, st.mode, st.file_type), ("big", 2_000_000, 0o644, FileType::File));
    assert!(files.exists("/tmp/api/a.txt").await.unwrap());
    assert!(!files.exists("/tmp/api/nope").await.unwrap());
    files.rename("/tmp/api/a.txt", "/tmp/api/x/b.txt").await.unwrap();
    assert_eq!(sh(b, "cat /tmp/api/x/b.txt").await, "hello");
    let err = files.remove("/tmp/api", RemoveOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), "INVALID_ARGUMENT", "{err}");
    files.remove("/tmp/api", RemoveOptions { recursive: true }).await.unwrap();
    assert!(!files.exists("/tmp/api").await.unwrap());
    let err = files.read_all("/tmp/api/x/b.txt").await.unwrap_err();
    assert_eq!(err.code(), "NOT_FOUND", "{err}");
    // The box's own symlinks resolve inside the box: /etc/hosts through `/tmp/etc -> /etc`.
    sh(b, "ln -sfn /etc /tmp/etc").await;
    let hosts = files.read_all("/tmp/etc/hostname").await.unwrap();
    assert_eq!(hosts, sh(b, "cat /etc/hostname").await.as_bytes());
}

async fn hostile_trees(b: &LiteBox, host: &Path) {
    sh(b, "mkdir -p /h && cd /h && ln -s /etc link && ln -s ../../.. up && echo data > f && ln f hard && mkfifo fifo").await;
    let etc_passwd = std::fs::read("/etc/passwd").unwrap();
    let dest = host.join("hostile");
    std::fs::create_dir(&dest).unwrap();
    b.copy_out("/h", &dest, KEEP).await.unwrap();
    assert_eq!(entries(&dest), ["h"]);
    let h = dest.join("h");
    assert_eq!(entries(&h), ["f", "hard", "link", "up"], "the fifo is skipped");
    assert_eq!(std::fs::read_link(h.join("link")).unwrap(), Path::new("/etc"));
    assert_eq!(std::fs::read_link(h.join("up")).unwrap(), Path::new("../../.."));
    assert!(std::fs::symlink_metadata(h.join("hard")).unwrap().is_file());
    assert_eq!(std::fs::read(h.join("hard")).unwrap(), b"data\n");
    // Again over it: the symlinks planted by the first copy are replaced, never followed.
    b.copy_out("/h", &dest, OVERWRITE).await.unwrap();
    assert_eq!(entries(&h), ["f", "hard", "link", "up"]);
    assert_eq!(entries(&dest), ["h"]);
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), etc_passwd, "the host's /etc was touched");
    assert!(!Path::new("/etc/f").exists() && !Path::new("/etc/hard").exists());
    // A copy out of the symlink itself gives a symlink.
    b.copy_out("/h/link", host.join("just-link"), KEEP).await.unwrap();
    assert_eq!(std::fs::read_link(host.join("just-link")).unwrap(), Path::new("/etc"));
}

async fn bad_input(b: &LiteBox, host: &Path) {
    let quick = |t: Instant, what: &str| assert!(t.elapsed() < Duration::from_secs(5), "{what} took {:?}", t.elapsed());
    let t = Instant::now();
    let err = b.copy_in(host.join("missing"), "/tmp", KEEP).await.unwrap_err();
    assert_eq!(err.code(), "NOT_FOUND", "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    let err = b.copy_in(host.join("note.txt"), "tmp/x", KEEP).await.unwrap_err();
    assert_eq!(err.code(), "INVALID_ARGUMENT", "{err}");
    assert!(err.to_string().contains("tmp/x"), "{err}");
    let err = b.copy_in(host.join("note.txt"), "/no/such/dir/x", KEEP).await.unwrap_err();
    assert_eq!(err.code(), "NOT_FOUND", "{err}");
    let dest = host.join("bad");
    std::fs::create_dir(&dest).unwrap();
    let err = b.copy_out("/no/such/file", &dest, KEEP).await.unwrap_err();
    assert_eq!(err.code(), "NOT_FOUND", "{err}");
    assert!(err.to_string().contains("/no/such/file"), "{err}");
    let err = b.copy_out("/tmp/note.txt", host.join("no-dir/x"), KEEP).await.unwrap_err();
    assert_eq!(err.code(), "NOT_FOUND", "{err}");
    assert!(err.to_string().contains("no-dir"), "{err}");
    let err = b.files().list("relative").await.unwrap_err();
    assert_eq!(err.code(), "INVALID_ARGUMENT", "{err}");
    assert_eq!(entries(&dest), Vec::<String>::new(), "nothing half-copied on the host");
    quick(t, "the bad inputs");
}

async fn full_box_disk(b: &LiteBox, host: &Path) {
    // Leave about 32 MiB free on the box disk (root's reserved blocks included), then copy 64 MiB in.
    let free = sh(b, "stat -f -c '%f %S' /").await;
    let (blocks, size) = free.trim().split_once(' ').unwrap();
    let fill_mib = blocks.parse::<u64>().unwrap() * size.parse::<u64>().unwrap() / (1 << 20) - 32;
    sh(b, &format!("fallocate -l {fill_mib}M /filler")).await;
    let src = host.join("64m.bin");
    random_file(&src, 64 << 20);
    let t = Instant::now();
    let err = b.copy_in(&src, "/root/", KEEP).await.unwrap_err();
    eprintln!("copy_in onto a full box disk failed after {:?}: {err}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(err.code(), "STORAGE", "{err}");
    assert!(err.to_string().contains("no space left on the box disk"), "{err}");
    assert_eq!(sh(b, "ls -a /root | grep -c -e boxlite -e 64m || true").await, "0\n", "a half copy was left in the box");
    assert_eq!(entries(&inbox(b)), Vec::<String>::new(), "the failed copy's chunks are gone");
    let err = b.files().write("/root/w.bin", &vec![1u8; 48 << 20], WriteOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), "STORAGE", "{err}");
    assert_eq!(sh(b, "ls -a /root | grep -c -e boxlite -e w.bin || true").await, "0\n", "a half write was left in the box");
    sh(b, "rm /filler").await;
    b.copy_in(&src, "/root/", KEEP).await.unwrap();
    sh(b, "rm /root/64m.bin").await;
}

async fn watch_and_stop(b: &LiteBox, host: &Path) {
    let files = b.files();
    files.mkdir("/w", MkdirOptions::default()).await.unwrap();
    let mut watch = files.watch("/w", WatchOptions { recursive: true }).await.unwrap();
    files.write("/w/a", b"1", WriteOptions::default()).await.unwrap();
    sh(b, "echo more >> /w/a && mkdir /w/d && sleep 0.2 && echo x > /w/d/inner && mv /w/a /w/b && rm /w/b").await;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.iter().any(|(k, p, _): &(WatchEventKind, String, Option<String>)| *k == WatchEventKind::Deleted && p == "/w/b") {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, watch.next()).await.expect("watch events did not arrive").unwrap().expect("the stream ended early");
        seen.push((ev.kind, ev.path, ev.old_path));
    }
    eprintln!("watch events: {seen:?}");
    assert!(!seen.iter().any(|(_, p, _)| p.contains(".boxlite-")), "the agent's temporaries are not events: {seen:?}");
    let has = |k: WatchEventKind, p: &str| seen.iter().any(|(kind, path, _)| *kind == k && path == p);
    assert!(has(WatchEventKind::Modified, "/w/a"), "{seen:?}");
    assert!(has(WatchEventKind::Created, "/w/d"), "{seen:?}");
    assert!(has(WatchEventKind::Created, "/w/d/inner"), "a new subdirectory is watched: {seen:?}");
    assert!(seen.iter().any(|(k, p, old)| *k == WatchEventKind::Renamed && p == "/w/b" && old.as_deref() == Some("/w/a")), "{seen:?}");

    // Stopping the box ends the stream cleanly, and copies to a stopped box are refused.
    let t = Instant::now();
    let next = tokio::spawn(async move { watch.next().await });
    b.stop().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), next).await.expect("the watch did not end").unwrap();
    assert!(matches!(end, Ok(None)), "{end:?}");
    eprintln!("watch ended {:?} after the stop began", t.elapsed());
    let err = b.copy_in(host.join("note.txt"), "/tmp", KEEP).await.unwrap_err();
    assert_eq!(err.code(), "INVALID_STATE", "{err}");
    assert!(err.to_string().contains("start it"), "{err}");
    assert_eq!(b.files().stat("/").await.unwrap_err().code(), "INVALID_STATE");
}

/// A box whose VM is killed in the middle of a staged copy: the copy fails, and no chunk is left
/// in the inbox, neither by the copy nor (a stray one, as a copying process that died would
/// leave) once a runtime has reconciled the box.
#[tokio::test(flavor = "multi_thread")]
async fn a_box_killed_during_a_staged_copy_leaves_no_inbox_files() {
    let rt = common::runtime();
    let b = rt.create(BoxOptions::new("busybox:latest")).await.unwrap();
    b.start().await.unwrap();
    let host = tempfile::tempdir().unwrap();
    let big = host.path().join("sparse.bin");
    std::fs::File::create(&big).unwrap().set_len(1 << 30).unwrap();
    let copy = tokio::spawn({
        let b = b.clone();
        async move { b.copy_in(&big, "/root/sparse.bin", KEEP).await }
    });
    let t = Instant::now();
    while entries(&inbox(&b)).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(30), "no chunk was staged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let vm = b.info().unwrap().pid.expect("the VM's pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(vm as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), copy).await.expect("the copy did not end").unwrap().unwrap_err();
    // The caller hears what happened to the box, not the broken transport's words.
    assert!(err.to_string().contains("killed by signal 9"), "{err}");
    assert_eq!(entries(&inbox(&b)), Vec::<String>::new(), "the copy left chunks");
    // A stray chunk (its copying process died too) goes when a runtime reconciles the box.
    let t = Instant::now();
    while b.info().unwrap().status.is_active() {
        assert!(t.elapsed() < Duration::from_secs(10), "the box is still recorded up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(inbox(&b).join("0123456789abcdef-0"), b"left").unwrap();
    let fresh = common::runtime();
    let info = fresh.get(b.id()).unwrap().info().unwrap();
    assert!(!info.status.is_active(), "{:?}", info.status);
    assert_eq!(entries(&inbox(&b)), Vec::<String>::new(), "reconciling the box left the stray chunk");
    rt.remove(b.id(), true).await.unwrap();
}
