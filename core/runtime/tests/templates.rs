//! Warm start on real boxes: a template is made once per shape and new boxes restore from it
//! (their VM maps its RAM file privately), each with its own disk, size, hostname, clock, RNG and
//! boot id, across stop and start; a changed guest agent makes a new template; a broken template
//! falls back to a cold boot; warm start can be turned off.

mod common;

use boxlite::{BoxOptions, ExecCommand, LiteBox, Network, Runtime, RuntimeOptions, WarmupOptions};
use std::path::{Path, PathBuf};

async fn sh(b: &LiteBox, script: &str) -> String {
    let out = b.exec(ExecCommand::new("sh", ["-c", script])).await.expect("exec").output().await.expect("output");
    assert!(out.status.success(), "{script}: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The command line of the box's VM process.
fn vm_cmdline(b: &LiteBox) -> String {
    let pid = b.info().unwrap().pid.expect("a running box has a VM pid");
    std::fs::read(format!("/proc/{pid}/cmdline")).unwrap().split(|c| *c == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" ")
}

fn templates(home: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(home.join("templates")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with('.')).collect();
    names.sort();
    names
}

/// The guest assets copied into `dir`, so this test can change the agent's file without
/// touching the real one.
fn copy_assets(dir: &Path) -> PathBuf {
    let from = boxlite::assets::GuestAssets::find(None).expect("guest assets: run `bash scripts/setup.sh`");
    let to = dir.join("assets");
    std::fs::create_dir_all(&to).unwrap();
    for (src, name) in [(&from.kernel, "vmlinux"), (&from.initrd, "initramfs.cpio")] {
        std::fs::copy(src, to.join(name)).unwrap();
    }
    for bin in ["boxlite-shim", "boxlite-net"] {
        if let Some(src) = from.dirs().iter().map(|d| d.join(bin)).find(|p| p.is_file()) {
            std::fs::copy(src, to.join(bin)).unwrap();
        }
    }
    to
}

fn shape() -> BoxOptions {
    BoxOptions { cpus: 1, memory_mib: 256, network: Network::None, ..BoxOptions::new("busybox:latest") }
}

#[tokio::test(flavor = "multi_thread")]
async fn boxes_start_warm_from_one_template_each_with_its_own_identity() {
    let dir = tempfile::Builder::new().prefix("bxw").tempdir_in("/tmp").unwrap();
    let assets = copy_assets(dir.path());
    let home = dir.path().join("home");
    let registries = vec![boxlite::RegistryConfig { host: common::registry(), insecure: true, ..Default::default() }];
    let options = RuntimeOptions { home: Some(home.clone()), registries, assets_dir: Some(assets.clone()), warm_start: Some(true), ..Default::default() };
    let rt = Runtime::new(options.clone()).expect("runtime");

    let bad = rt.warmup(WarmupOptions { cpus: 0, ..Default::default() }).await.expect_err("0 vCPUs");
    assert!(matches!(bad, boxlite::Error::InvalidArgument(ref m) if m.contains("cpus 0")), "{bad}");
    let warm = WarmupOptions { cpus: 1, memory_mib: 256, network: false };
    let t = rt.warmup(warm.clone()).await.expect("warmup");
    assert!(t.built && t.path.starts_with(home.join("templates")), "{t:?}");
    // Sparse: the idle guest touched a fraction of its 256 MiB.
    assert!(t.disk_bytes > 1 << 20 && t.disk_bytes < 200 << 20, "{t:?}");
    let again = rt.warmup(warm.clone()).await.expect("warmup again");
    assert!(!again.built && again.path == t.path, "{again:?}");

    // Two boxes from it: each maps the template's RAM privately, has its own disk of its own
    // size, its own name, clock, random numbers and boot id.
    let a = rt.create(BoxOptions { name: Some("warm-a".into()), disk_size_gb: Some(3), ..shape() }).await.expect("create a");
    let b = rt.create(BoxOptions { name: Some("warm-b".into()), ..shape() }).await.expect("create b");
    sh(&a, "true").await;
    let cmdline = vm_cmdline(&a);
    assert!(cmdline.contains(&format!("mem-path={},share=off", t.path.join("ram").display())), "{cmdline}");
    let probe = "hostname; cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s; df -k / | tail -1 | awk '{print $2}'";
    let (pa, pb) = (sh(&a, probe).await, sh(&b, probe).await);
    let (la, lb): (Vec<&str>, Vec<&str>) = (pa.lines().collect(), pb.lines().collect());
    assert_eq!((la[0], lb[0]), ("warm-a", "warm-b"), "{pa}\n{pb}");
    assert_ne!(la[1], lb[1], "boot ids");
    assert_ne!(la[2], lb[2], "random bytes");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for l in [&la, &lb] {
        let guest: i64 = l[3].parse().unwrap();
        assert!((guest - now).abs() <= 1, "a warm box's clock is {} s off", guest - now);
    }
    let kib: u64 = la[4].parse().unwrap();
    assert!(kib > 2_800_000 && kib < 3_200_000, "a 3 GiB box disk shows {kib} KiB");
    sh(&a, "echo mine > /root/a; sync").await;
    assert_eq!(sh(&b, "[ -e /root/a ] && echo shared || echo own").await, "own");
    let tty = a.exec(ExecCommand { tty: true, ..ExecCommand::new("sh", ["-c", "tty"]) }).await.expect("tty exec").output().await.unwrap();
    assert!(String::from_utf8_lossy(&tty.stdout).contains("/dev/pts/"), "{tty:?}");

    // Stopped and started again, a box restores from the template again, onto its own disk.
    a.stop().await.expect("stop");
    a.start().await.expect("start");
    assert_eq!(sh(&a, "cat /root/a; hostname").await, "mine\nwarm-a");
    assert!(vm_cmdline(&a).contains("share=off"));
    b.stop().await.unwrap();

    // A new guest agent: the next box makes a new template, and the old one is gone.
    let initrd = assets.join("initramfs.cpio");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options().write(true).open(&initrd).unwrap().set_modified(later).unwrap();
    let rt = Runtime::new(options.clone()).expect("runtime");
    let c = rt.create(BoxOptions { name: Some("warm-c".into()), ..shape() }).await.expect("create c");
    assert_eq!(sh(&c, "hostname").await, "warm-c");
    let now_templates = templates(&home);
    assert_eq!(now_templates.len(), 1, "{now_templates:?}");
    assert_ne!(home.join("templates").join(&now_templates[0]), t.path, "the template was made again");
    assert!(vm_cmdline(&c).contains(&format!("mem-path={},share=off", home.join("templates").join(&now_templates[0]).join("ram").display())));
    c.stop().await.unwrap();

    // A broken template: the box boots cold, and the template is dropped.
    let current = home.join("templates").join(&now_templates[0]);
    std::fs::write(current.join("memory.state"), b"not a migration stream").unwrap();
    let d = rt.create(BoxOptions { name: Some("warm-d".into()), ..shape() }).await.expect("a box boots cold when its template is broken");
    assert_eq!(sh(&d, "hostname").await, "warm-d");
    assert!(vm_cmdline(&d).contains("memory-backend-ram"), "{}", vm_cmdline(&d));
    assert!(!current.exists(), "the broken template was removed");
    d.stop().await.unwrap();

    // Warm start off: cold boots, no template made.
    let rt = Runtime::new(RuntimeOptions { warm_start: Some(false), ..options }).expect("runtime");
    let e = rt.create(BoxOptions { name: Some("cold-e".into()), ..shape() }).await.expect("create e");
    sh(&e, "true").await;
    assert!(vm_cmdline(&e).contains("memory-backend-ram"));
    assert!(templates(&home).is_empty(), "{:?}", templates(&home));
    for name in ["warm-a", "warm-b", "warm-c", "warm-d", "cold-e"] {
        rt.remove(name, true).await.expect("remove");
    }
}
