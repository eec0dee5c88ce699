//! Memory snapshots on real boxes: a process's memory and an unsynced file survive snapshot →
//! restore, suspend → resume and pause → resume twice; forks of one box diverge and have their own
//! RNG, boot id, hostname and clock; snapshots are listed, refused clearly, and removed without
//! breaking the boxes made from them.

mod common;

use boxlite::{BoxOptions, BoxStatus, Error, ExecCommand, LiteBox, RestoreOptions};
use std::time::Duration;

async fn sh(b: &LiteBox, script: &str) -> String {
    let out = b.exec(ExecCommand::new("sh", ["-c", script])).await.expect("exec").output().await.expect("output");
    assert!(out.status.success(), "{script}: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A background process that holds a value only in its memory and tells it when asked (a file
/// /tmp/ask appears), and a file written but not synced.
const KEEPER: &str = "echo unsynced > /root/note; \
    setsid sh -c 'v=kept-$$; while :; do if [ -e /tmp/ask ]; then rm /tmp/ask; echo $v > /tmp/answer; fi; sleep 0.05; done' \
    </dev/null >/dev/null 2>&1 &";

/// The keeper's value, asked for now (proves the process and its memory are there).
async fn ask(b: &LiteBox) -> String {
    sh(b, "rm -f /tmp/answer; touch /tmp/ask; i=0; while [ ! -s /tmp/answer ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; cat /tmp/answer").await
}

fn host_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_keep_memory_and_forks_get_their_own_identity() {
    let rt = common::runtime();
    let b = rt.create(BoxOptions { name: Some("snap-src".into()), ..BoxOptions::new("busybox:latest") }).await.expect("create");
    let err = b.snapshot("early").await.expect_err("a box that never ran has no memory to save");
    assert!(matches!(err, Error::InvalidState(ref m) if m.contains("start it first")), "{err}");
    sh(&b, KEEPER).await;
    let value = ask(&b).await;
    assert!(value.starts_with("kept-"), "{value}");

    // Pause and resume twice in a row: nothing lost.
    for _ in 0..2 {
        b.pause().await.expect("pause");
        b.resume().await.expect("resume");
    }
    assert_eq!(ask(&b).await, value);

    // Snapshot, then the source moves on.
    let bad = b.snapshot("../x").await.expect_err("bad name");
    assert!(matches!(bad, Error::InvalidArgument(ref m) if m.contains("snapshot name")), "{bad}");
    let info = b.snapshot("s1").await.expect("snapshot");
    assert!(info.memory_bytes > 1 << 20 && info.memory_bytes < 256 << 20, "{info:?}");
    assert_eq!(info.box_id, b.id());
    let dup = b.snapshot("s1").await.expect_err("a taken name");
    assert!(matches!(dup, Error::AlreadyExists(_)), "{dup}");
    assert_eq!(b.info().unwrap().status, BoxStatus::Running, "the source runs on");
    sh(&b, "echo after > /root/later").await;
    assert_eq!(ask(&b).await, value);
    assert!(rt.snapshots().unwrap().iter().any(|s| s.name == "s1"));

    // A restore continues from the snapshot's instant: the process, its memory, the unsynced
    // file; not what the source wrote later. Its identity is its own.
    let r = rt.restore("s1", RestoreOptions { name: Some("snap-restored".into()), ..Default::default() }).await.expect("restore");
    assert_eq!(r.info().unwrap().status, BoxStatus::Running);
    assert_eq!(ask(&r).await, value, "the process and its memory came back");
    assert_eq!(sh(&r, "cat /root/note").await, "unsynced");
    assert_eq!(sh(&r, "[ -e /root/later ] && echo yes || echo no").await, "no");
    assert_eq!(sh(&r, "hostname").await, "snap-restored");
    let guest: i64 = sh(&r, "date +%s").await.parse().unwrap();
    assert!((guest - host_now()).abs() <= 1, "a restored box's clock is {} s off", guest - host_now());

    // Forks diverge and draw different random numbers.
    let forks = b.fork(2).await.expect("fork");
    assert_eq!(forks.len(), 2);
    let mut seen = Vec::new();
    for (i, f) in forks.iter().enumerate() {
        assert_eq!(ask(f).await, value);
        assert_eq!(sh(f, "cat /root/later").await, "after", "a fork starts from the source as it is now");
        sh(f, &format!("echo fork{i} > /root/mine; sync")).await;
        let random = sh(f, "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'").await;
        let boot_id = sh(f, "cat /proc/sys/kernel/random/boot_id").await;
        seen.push((random, boot_id, sh(f, "hostname").await));
    }
    for f in &forks {
        assert_eq!(sh(f, "cat /root/mine").await.len(), 5);
    }
    assert_ne!(sh(&forks[0], "cat /root/mine").await, sh(&forks[1], "cat /root/mine").await, "fork writes never meet");
    assert_eq!(sh(&b, "[ -e /root/mine ] && echo yes || echo no").await, "no");
    assert_ne!(seen[0].0, seen[1].0, "forks read the same random bytes");
    assert_ne!(seen[0].1, seen[1].1, "forks have the same boot_id");
    assert_ne!(seen[0].2, seen[1].2, "forks have the same hostname");
    assert!(!rt.snapshots().unwrap().iter().any(|s| s.name.contains("fork")), "fork's own snapshot is not kept");

    // Suspend: memory to disk, the VM ended; resume continues it.
    let vm_pid = b.metrics().await.unwrap().vm_pid.expect("vm pid");
    b.suspend().await.expect("suspend");
    assert_eq!(b.info().unwrap().status, BoxStatus::Suspended);
    assert!(!std::path::Path::new(&format!("/proc/{vm_pid}")).exists(), "a suspended box's VM process is gone");
    let paused = b.pause().await.expect_err("a suspended box cannot be paused");
    assert!(matches!(paused, Error::InvalidState(ref m) if m.contains("suspended")), "{paused}");
    b.resume().await.expect("resume");
    assert_eq!(b.info().unwrap().status, BoxStatus::Running);
    assert_eq!(ask(&b).await, value, "the process came back from the suspend");
    // A stop of a suspended box continues it to sync what was only in its memory; a kill drops that.
    sh(&b, "echo cached > /root/cached").await;
    b.suspend().await.expect("suspend again");
    b.stop().await.expect("stop");
    assert_eq!(b.info().unwrap().status, BoxStatus::Stopped);
    assert_eq!(sh(&b, "cat /root/later /root/cached").await, "after\ncached", "unsynced writes reached the disk");
    b.suspend().await.expect("suspend");
    b.kill().await.expect("kill");
    assert_eq!(b.info().unwrap().status, BoxStatus::Stopped);
    assert!(!common::home().join("boxes").join(b.id()).join("memory.state").exists(), "the saved memory is gone");
    // Memory that another build saved (here: another device set) cannot load: the box boots
    // afresh from its disk, with what was synced.
    b.start().await.expect("start");
    let boot_id = sh(&b, "cat /proc/sys/kernel/random/boot_id").await;
    b.suspend().await.expect("suspend");
    let record = common::home().join("boxes").join(b.id()).join("memory.json");
    let mut saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).expect("a suspend records its build")).unwrap();
    saved["layout"] = serde_json::json!(1);
    std::fs::write(&record, saved.to_string()).unwrap();
    b.resume().await.expect("a box whose memory another build saved still starts");
    assert_eq!(b.info().unwrap().status, BoxStatus::Running);
    assert!(!common::home().join("boxes").join(b.id()).join("memory.state").exists(), "the memory that cannot load is gone");
    assert_eq!(sh(&b, "cat /root/later /root/cached").await, "after\ncached", "synced files are kept");
    assert_ne!(sh(&b, "cat /proc/sys/kernel/random/boot_id").await, boot_id, "the box went on from memory that cannot load");
    // Memory without a record (saved by a build before records) is tried; when QEMU refuses it
    // (here: cut short), the box boots afresh too instead of failing every start.
    let boot_id = sh(&b, "cat /proc/sys/kernel/random/boot_id").await;
    b.suspend().await.expect("suspend");
    let memory = common::home().join("boxes").join(b.id()).join("memory.state");
    std::fs::remove_file(&record).unwrap();
    std::fs::OpenOptions::new().write(true).open(&memory).unwrap().set_len(4096).unwrap();
    b.resume().await.expect("a box whose memory does not load still starts");
    assert!(!memory.exists(), "the memory that did not load is gone");
    assert_eq!(sh(&b, "cat /root/later /root/cached").await, "after\ncached", "synced files are kept");
    assert_ne!(sh(&b, "cat /proc/sys/kernel/random/boot_id").await, boot_id, "the box went on from memory that did not load");

    // Removing the snapshot leaves the boxes restored from it working.
    rt.remove_snapshot("s1").await.expect("remove snapshot");
    assert!(matches!(rt.restore("s1", RestoreOptions::default()).await.err(), Some(Error::NotFound(_))));
    assert_eq!(sh(&r, "cat /root/note").await, "unsynced");
    r.stop().await.expect("stop");
    assert_eq!(sh(&r, "cat /root/note").await, "unsynced", "a restored box starts again from its own disk");

    for x in forks.iter().chain([&r, &b]) {
        rt.remove(x.id(), true).await.expect("remove");
    }
    let layers: Vec<_> = std::fs::read_dir(common::home().join("layers")).unwrap().flatten().filter(|e| e.file_name() != ".lock").collect();
    assert!(layers.is_empty(), "layers left after every box and snapshot went: {layers:?}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_box_with_volumes_cannot_be_snapshotted() {
    let rt = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let b = rt
        .create(BoxOptions { volumes: vec![boxlite::Volume::new(dir.path(), "/mnt/v")], ..BoxOptions::new("busybox:latest") })
        .await
        .expect("create");
    b.start().await.expect("start");
    let err = b.snapshot("v").await.expect_err("9p cannot migrate");
    assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("volumes")), "{err}");
    let err = b.suspend().await.expect_err("9p cannot migrate");
    assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("volumes")), "{err}");
    rt.remove(b.id(), true).await.unwrap();
}
