//! `boxlite-bench`: the runtime's speed and memory figures, against the local test registry.
//! Usage: boxlite-bench REGISTRY OUT.json [BASELINE.json]
//!        boxlite-bench warm-exec REGISTRY RUNS   (prints warm exec round-trip stats as JSON, with
//!        the box's supervisor memory and 20 MB stdout throughput after them; the SDK benchmark
//!        compares its own round trip with it)
//!        boxlite-bench files REGISTRY [BASELINE.json]   (prints the copy/read figures and volume vs
//!        box-disk dd figures as JSON)
//!        boxlite-bench density REGISTRY [N] [OUT.json]   (N idle boxes at once, default 100)
//! BASELINE.json is `scripts/boot-baseline.sh`'s output: the same kernel booting a trivial init on
//! the same engine, so boot, exec round trip and stdout throughput are ratios to floors of the
//! same run.

mod density;
mod snapshots;

use boxlite::{BoxOptions, ExecCommand, PullProgress, RegistryConfig, Runtime, RuntimeOptions};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn stats(mut samples: Vec<f64>) -> Value {
    samples.sort_by(f64::total_cmp);
    json!({ "p50": percentile(&samples, 0.5), "p95": percentile(&samples, 0.95), "min": samples[0], "max": samples[samples.len() - 1], "runs": samples.len() })
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `/proc/PID/status` figure in KiB (`VmRSS:`, `RssAnon:`), 0 when missing.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

/// A supervisor's memory in KiB: `rss` (VmRSS), `private` (RssAnon: its own, the rest is mostly the
/// binary's pages, shared by every box's supervisor) and `pss` (the shared pages split among the
/// processes that map them).
fn shim_memory_kib(pid: u32) -> Value {
    json!({ "rss": rss_kib(pid), "private": status_kib(pid, "RssAnon:"), "pss": density::rollup_kib(pid, "Pss:") })
}

/// The pid of `parent`'s child process whose command is `name`.
fn child_named(parent: u32, name: &str) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    children.split_whitespace().filter_map(|p| p.parse().ok()).find(|p: &u32| {
        std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == name)
    })
}

/// The network's figures: guest -> host TCP throughput (to compare with the raw channel of the
/// baseline), and the connect round trip through a published port against the same on the host's
/// own loopback.
/// Short commands as agents run them, in a Debian image (position-independent programs and
/// shared libraries, unlike busybox): start, exit and wait of each, after one warm-up run.
async fn debian_commands_bench(rt: &Runtime, results: &mut serde_json::Map<String, Value>) -> Result<(), Box<dyn std::error::Error>> {
    let b = rt.create(BoxOptions { network: boxlite::Network::None, ..BoxOptions::new("python:slim") }).await?;
    b.start().await?;
    let mut rows = serde_json::Map::new();
    for (name, argv) in [("sh_c_true", &["sh", "-c", "true"][..]), ("ls_root", &["ls", "/"][..]), ("python3_c_pass", &["python3", "-c", "pass"][..])] {
        let mut runs = Vec::new();
        for i in 0..6 {
            let t = Instant::now();
            let out = b.exec(ExecCommand::new(argv[0], argv[1..].iter().copied())).await?.output().await?;
            assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
            if i > 0 {
                runs.push(ms(t.elapsed()));
            }
        }
        rows.insert(name.into(), stats(runs));
    }
    results.insert("debian_command_ms".into(), Value::Object(rows));
    rt.remove(b.id(), true).await?;
    Ok(())
}

async fn network_bench(rt: &Runtime, b: &boxlite::LiteBox, results: &mut serde_json::Map<String, Value>) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::{Read, Write};
    const BYTES: usize = 20 << 20;
    // 20 MiB from the guest to a sink on the host's 127.0.0.1 (the guest sees it as the host alias).
    let sink = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = sink.local_addr()?.port();
    let reader = std::thread::spawn(move || -> std::io::Result<f64> {
        let (mut conn, _) = sink.accept()?;
        let (mut buf, mut got) = (vec![0u8; 1 << 16], 0);
        let t = Instant::now();
        while got < BYTES {
            match conn.read(&mut buf)? {
                0 => return Err(std::io::Error::other(format!("the guest sent {got} of {BYTES} bytes"))),
                n => got += n,
            }
        }
        Ok(t.elapsed().as_secs_f64())
    });
    // From a file (in the guest's page cache), not `dd | nc`: a pipe between two busybox
    // processes costs a context switch per few KiB, and each is a full TLB flush under
    // emulation; that pipeline moved 5 MB/s where nc alone moves ~60 (docs/network.md).
    let file = "/root/tcp-bench.bin";
    sh_secs(b, &format!("dd if=/dev/zero of={file} bs=64k count={} 2>/dev/null", BYTES >> 16)).await?;
    let send = format!("nc {} {port} < {file}; rm -f {file}", boxlite::net::HOST_ALIAS_IP);
    let sender = b.exec(ExecCommand::new("sh", ["-c", send.as_str()])).await?;
    let secs = reader.join().map_err(|_| "the sink thread panicked")??;
    let _ = sender.wait().await;
    let tcp = BYTES as f64 / 1e6 / secs;
    results.insert("tcp_guest_to_host_mb_per_s".into(), json!((tcp * 10.0).round() / 10.0));
    if let Some(raw) = results.get("raw_channel_mb_per_s").and_then(|r| r["p50"].as_f64()) {
        results.insert("tcp_vs_raw_channel_ratio".into(), json!((tcp / raw * 100.0).round() / 100.0));
    }

    // Connect + first byte through a published port, to a server that answers each connection
    // with one byte (python: no fork per connection to measure).
    let server = rt.create(BoxOptions { ports: vec![boxlite::PortSpec::tcp(0, 7000)], ..BoxOptions::new("python:slim") }).await?;
    server.start().await?;
    let code = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',7000))\ns.listen(64)\nprint('up',flush=True)\nwhile True:\n c,_=s.accept(); c.sendall(b'x'); c.close()";
    let mut listening = server.exec(ExecCommand::new("python3", ["-c", code])).await?;
    listening.stdout.as_mut().ok_or("no stdout")?.next().await.ok_or("the server in the box did not start")?;
    let host_port = server.info()?.ports.first().ok_or("no published port")?.host_port;
    let connect_rtts = |port: u16| -> std::io::Result<Vec<f64>> {
        let mut rtts = Vec::new();
        for i in 0..60 {
            let t = Instant::now();
            let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))?;
            let mut byte = [0u8; 1];
            conn.read_exact(&mut byte)?;
            if i >= 10 {
                rtts.push(ms(t.elapsed()));
            }
        }
        Ok(rtts)
    };
    let published = tokio::task::spawn_blocking(move || connect_rtts(host_port)).await??;
    // The floor: the same exchange with a server on the host's own loopback.
    let local = std::net::TcpListener::bind("127.0.0.1:0")?;
    let local_port = local.local_addr()?.port();
    std::thread::spawn(move || {
        for mut c in local.incoming().flatten() {
            let _ = c.write_all(b"x");
        }
    });
    let loopback = tokio::task::spawn_blocking(move || connect_rtts(local_port)).await??;
    results.insert("published_port_connect_rtt_ms".into(), stats(published));
    results.insert("host_loopback_connect_rtt_ms".into(), stats(loopback));
    let _ = listening.kill().await;
    rt.remove(server.id(), true).await?;
    Ok(())
}

/// Round trips of `true` (start, exit, wait) on one running box, after a warm-up.
async fn warm_exec_rtts(b: &boxlite::LiteBox, runs: usize) -> boxlite::Result<Vec<f64>> {
    let mut rtts = Vec::new();
    for i in 0..runs + 10 {
        let t = Instant::now();
        b.exec(ExecCommand::new("true", Vec::<String>::new())).await?.wait().await?;
        if i >= 10 {
            rtts.push(ms(t.elapsed()));
        }
    }
    Ok(rtts)
}

/// Warm exec round trips over the old direct path: a VM spawned by this process on the box's
/// disk (no supervisor, no network), this process connected straight to its agent socket.
async fn direct_exec_rtts(box_dir: &std::path::Path, runs: usize) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    use boxlite::engine::{qemu::Qemu, Engine, VmSpec};
    let assets = boxlite::assets::GuestAssets::find(None)?;
    let spec = VmSpec {
        cpus: 1,
        memory_mib: boxlite::options::DEFAULT_MEMORY_MIB,
        disk: box_dir.join("disk.qcow2"),
        kernel: assets.kernel.clone(),
        initrd: assets.initrd.clone(),
        box_dir: box_dir.to_path_buf(),
        network: false,
        hostname: "bench".into(),
        volumes: Vec::new(),
        incoming: None,
        memory: Default::default(),
    };
    let vm = Qemu::new(boxlite::Accel::Auto)?.command(&spec)?;
    let mut child = tokio::process::Command::new(&vm.program).args(&vm.args).kill_on_drop(true).spawn()?;
    let guest = loop {
        if let Ok(g) = boxlite::guest::Guest::connect_agent(&spec.agent_socket()).await {
            if g.ping().await.is_ok() {
                break g;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let start = || boxlite_protocol::v1::ExecStart { argv: vec!["true".into()], cwd: "/".into(), ..Default::default() };
    let mut rtts = Vec::new();
    for i in 0..runs + 10 {
        let t = Instant::now();
        guest.exec(start()).await?.wait().await?;
        if i >= 10 {
            rtts.push(ms(t.elapsed()));
        }
    }
    let _ = guest.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let _ = child.kill().await;
    Ok(rtts)
}

/// This process's resident memory, KiB.
fn own_rss_kib() -> u64 {
    rss_kib(std::process::id())
}

/// Copy and read throughput through the files API (64 MiB of random bytes each way) against the
/// raw channel figure of the same run, and how much this process's RSS grows during a 1 GiB copy.
async fn files_bench(b: &boxlite::LiteBox, results: &mut serde_json::Map<String, Value>) -> Result<(), Box<dyn std::error::Error>> {
    use boxlite::CopyOptions;
    const MIB: usize = 64;
    let dir = tempfile::Builder::new().prefix("bxf").tempdir_in("/tmp")?;
    let src = dir.path().join("data.bin");
    {
        use std::io::{Read, Write};
        let mut rng = std::fs::File::open("/dev/urandom")?;
        let mut out = std::fs::File::create(&src)?;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..MIB {
            rng.read_exact(&mut buf)?;
            out.write_all(&buf)?;
        }
    }
    let mb = (MIB << 20) as f64 / 1e6;
    let rate = |secs: f64| ((mb / secs) * 10.0).round() / 10.0;
    let t = Instant::now();
    b.copy_in(&src, "/root/data.bin", CopyOptions { overwrite: true }).await?;
    let copy_in = rate(t.elapsed().as_secs_f64());
    let out = dir.path().join("out.bin");
    let t = Instant::now();
    b.copy_out("/root/data.bin", &out, CopyOptions::default()).await?;
    let copy_out = rate(t.elapsed().as_secs_f64());
    let t = Instant::now();
    let mut stream = b.files().read("/root/data.bin").await?;
    let mut got = 0;
    while let Some(chunk) = stream.next().await? {
        got += chunk.len();
    }
    let read = rate(t.elapsed().as_secs_f64());
    assert_eq!(got, MIB << 20);
    results.insert("copy_in_mb_per_s".into(), json!(copy_in));
    results.insert("copy_out_mb_per_s".into(), json!(copy_out));
    results.insert("files_read_mb_per_s".into(), json!(read));
    if let Some(raw) = results.get("raw_channel_mb_per_s").and_then(|r| r["p50"].as_f64()) {
        for (key, v) in [("copy_in_vs_raw_channel_ratio", copy_in), ("copy_out_vs_raw_channel_ratio", copy_out), ("files_read_vs_raw_channel_ratio", read)] {
            results.insert(key.into(), json!((v / raw * 100.0).round() / 100.0));
        }
    }
    // 1 GiB in (a sparse host file: the bytes still cross the channel), sampling RSS.
    let big = dir.path().join("big.bin");
    std::fs::File::create(&big)?.set_len(1 << 30)?;
    let before = own_rss_kib();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(own_rss_kib(), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let t = Instant::now();
    b.copy_in(&big, "/root/big.bin", CopyOptions { overwrite: true }).await?;
    results.insert("copy_in_1gib_s".into(), json!((t.elapsed().as_secs_f64() * 10.0).round() / 10.0));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();
    b.exec(ExecCommand::new("rm", ["-f", "/root/big.bin", "/root/data.bin"])).await?.wait().await?;
    results.insert("copy_1gib_host_rss_growth_mib".into(), json!(((peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(before)) as f64 / 1024.0 * 10.0).round() / 10.0));
    Ok(())
}

/// Sequential 128 MiB `dd` inside a box of its own, on a volume and on the box's own disk: writes
/// with `conv=fsync`, reads after dropping the guest's page cache (reads may still come from the
/// host's). MB/s over the exec's wall time (busybox's dd prints no rate of its own), so one exec
/// round trip (~10 ms) is in each figure.
async fn volume_bench(rt: &Runtime, results: &mut serde_json::Map<String, Value>) -> Result<(), Box<dyn std::error::Error>> {
    let host = tempfile::Builder::new().prefix("bxv").tempdir_in("/tmp")?;
    let b = rt.create(BoxOptions { volumes: vec![boxlite::Volume::new(host.path(), "/mnt/vol")], ..BoxOptions::new("busybox:latest") }).await?;
    let measured = async {
        b.start().await?;
        let rate = |secs: f64| ((128.0 * 1.048576 / secs) * 10.0).round() / 10.0;
        for (key, dir) in [("volume", "/mnt/vol"), ("box_disk", "/root")] {
            let file = format!("{dir}/dd.bin");
            let write = sh_secs(&b, &format!("dd if=/dev/zero of={file} bs=1M count=128 conv=fsync")).await?;
            sh_secs(&b, "sync; echo 3 >/proc/sys/vm/drop_caches").await?;
            let read = sh_secs(&b, &format!("dd if={file} of=/dev/null bs=1M")).await?;
            sh_secs(&b, &format!("rm -f {file}")).await?;
            results.insert(format!("{key}_seq_write_mb_per_s"), json!(rate(write)));
            results.insert(format!("{key}_seq_read_mb_per_s"), json!(rate(read)));
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    rt.remove(b.id(), true).await?;
    measured
}

/// Wall time of a shell command line in the box, which must succeed.
async fn sh_secs(b: &boxlite::LiteBox, cmd: &str) -> Result<f64, Box<dyn std::error::Error>> {
    let t = Instant::now();
    let out = b.exec(ExecCommand::new("sh", ["-c", cmd])).await?.output().await?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("`{cmd}` in the box failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(secs)
}

/// `boxlite-bench files REGISTRY [BASELINE.json]`: only the files figures, as JSON.
async fn files_only(registry: &str, baseline: Option<&String>) -> Result<(), Box<dyn std::error::Error>> {
    let home = tempfile::Builder::new().prefix("bxb").tempdir_in("/tmp")?;
    let registries = vec![RegistryConfig { host: registry.into(), insecure: true, ..Default::default() }];
    let rt = Runtime::new(RuntimeOptions { home: Some(home.path().into()), registries, ..Default::default() })?;
    let mut results = serde_json::Map::new();
    if let Some(path) = baseline {
        let base: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        if let Some(v) = base.get("raw_channel_mb_per_s") {
            results.insert("raw_channel_mb_per_s".into(), v.clone());
        }
    }
    let b = rt.create(BoxOptions::new("busybox:latest")).await?;
    b.start().await?;
    let measured = files_bench(&b, &mut results).await;
    rt.remove(b.id(), true).await?;
    measured?;
    volume_bench(&rt, &mut results).await?;
    println!("{}", serde_json::to_string_pretty(&Value::Object(results))?);
    Ok(())
}

/// Seconds to read 20 MiB of a command's stdout (`cat` of a file in the box's page cache).
async fn stdout_20mb_secs(b: &boxlite::LiteBox) -> boxlite::Result<f64> {
    b.exec(ExecCommand::new("dd", ["if=/dev/urandom", "of=/tmp/big", "bs=1M", "count=20"])).await?.wait().await?;
    let t = Instant::now();
    let out = b.exec(ExecCommand::new("cat", ["/tmp/big"])).await?.output().await?;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(out.stdout.len(), 20 << 20);
    Ok(secs)
}

async fn warm_exec_only(registry: &str, runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let home = tempfile::Builder::new().prefix("bxb").tempdir_in("/tmp")?;
    let registries = vec![RegistryConfig { host: registry.into(), insecure: true, ..Default::default() }];
    let rt = Runtime::new(RuntimeOptions { home: Some(home.path().into()), registries, ..Default::default() })?;
    let b = rt.create(BoxOptions::new("busybox:latest")).await?;
    b.start().await?;
    let rtts = warm_exec_rtts(&b, runs).await?;
    let shim = b.info()?.shim_pid.ok_or("running box has no supervisor")?;
    let mut out = stats(rtts);
    out["shim_memory_kib"] = shim_memory_kib(shim);
    out["stdout_mb_per_s"] = json!(((20.0 / stdout_20mb_secs(&b).await?) * 10.0).round() / 10.0);
    rt.remove(b.id(), true).await?;
    println!("{out}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("warm-exec") {
        let (Some(registry), Some(runs)) = (args.get(2), args.get(3).and_then(|r| r.parse().ok())) else {
            return Err("usage: boxlite-bench warm-exec REGISTRY RUNS".into());
        };
        return warm_exec_only(registry, runs).await;
    }
    if args.get(1).map(String::as_str) == Some("density") {
        let Some(registry) = args.get(2) else { return Err("usage: boxlite-bench density REGISTRY [N] [OUT.json]".into()) };
        let n = args.get(3).map(|n| n.parse()).transpose().map_err(|_| "density: N must be a number of boxes")?.unwrap_or(100);
        return density::run(registry, n, args.get(4)).await;
    }
    if args.get(1).map(String::as_str) == Some("snapshots") {
        let Some(registry) = args.get(2) else { return Err("usage: boxlite-bench snapshots REGISTRY [N] [OUT.json]".into()) };
        let n = args.get(3).map(|n| n.parse()).transpose().map_err(|_| "snapshots: N must be a number of boxes")?.unwrap_or(20);
        return snapshots::run(registry, n, args.get(4)).await;
    }
    if args.get(1).map(String::as_str) == Some("files") {
        let Some(registry) = args.get(2) else { return Err("usage: boxlite-bench files REGISTRY [BASELINE.json]".into()) };
        return files_only(registry, args.get(3)).await;
    }
    let (registry, out_path) = match (args.get(1), args.get(2)) {
        (Some(r), Some(o)) => (r.clone(), o.clone()),
        _ => return Err("usage: boxlite-bench REGISTRY OUT.json [BASELINE.json]".into()),
    };
    let baseline: Option<Value> = args.get(3).map(std::fs::read_to_string).transpose()?.map(|t| serde_json::from_str(&t)).transpose()?;
    let home = tempfile::Builder::new().prefix("bxb").tempdir_in("/tmp")?;
    let registries = vec![RegistryConfig { host: registry, insecure: true, ..Default::default() }];
    // Cold boots, measured against the bare kernel's (warm start is `boxlite-bench snapshots`).
    let rt = Runtime::new(RuntimeOptions { home: Some(home.path().into()), registries, warm_start: Some(false), ..Default::default() })?;
    let mut results = serde_json::Map::new();

    // Cold pull of the python image, timing each progress event: the base-disk build is the
    // time from the last layer landing to the disk being built.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let (mut last_layer, mut disk_built) = (Duration::ZERO, Duration::ZERO);
    let watch = async {
        while let Some(ev) = rx.recv().await {
            match ev {
                PullProgress::LayerDone { .. } => last_layer = started.elapsed(),
                PullProgress::DiskBuilt { .. } => disk_built = started.elapsed(),
                _ => {}
            }
        }
    };
    let (pulled, ()) = tokio::join!(rt.pull("python:slim", Some(tx)), watch);
    pulled?;
    results.insert("image_pull_cold_ms".into(), json!(ms(started.elapsed())));
    results.insert("base_disk_build_ms".into(), json!(ms(disk_built.saturating_sub(last_layer))));

    // Box create with the image cached (host side only: no boot).
    let mut creates = Vec::new();
    let mut boxes = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        boxes.push(rt.create(BoxOptions::new("python:slim")).await?);
        creates.push(ms(t.elapsed()));
    }
    results.insert("box_create_ms".into(), stats(creates));
    let overlay = std::fs::metadata(home.path().join("boxes").join(boxes[0].id()).join("disk.qcow2"))?.len();
    results.insert("box_create_overlay_bytes".into(), json!(overlay));

    // Boot-to-ready and first exec, on busybox (the image the baseline compares with in size),
    // alternating with boxes without a network so the network's share of boot is a difference.
    let (mut boots, mut boots_no_net, mut first_execs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..10 {
        let network = if round % 2 == 0 { boxlite::Network::Enabled } else { boxlite::Network::None };
        let b = rt.create(BoxOptions { network: network.clone(), ..BoxOptions::new("busybox:latest") }).await?;
        let t = Instant::now();
        b.start().await?;
        let boot = ms(t.elapsed());
        if network == boxlite::Network::None {
            boots_no_net.push(boot);
        } else {
            boots.push(boot);
            let t = Instant::now();
            b.exec(ExecCommand::new("true", Vec::<String>::new())).await?.wait().await?;
            first_execs.push(ms(t.elapsed()));
        }
        rt.remove(b.id(), true).await?;
    }
    let (boot, boot_no_net) = (stats(boots), stats(boots_no_net));
    if let (Some(a), Some(b)) = (boot["p50"].as_f64(), boot_no_net["p50"].as_f64()) {
        results.insert("network_boot_extra_p50_ms".into(), json!(((a - b) * 100.0).round() / 100.0));
    }
    results.insert("boot_to_ready_ms".into(), boot.clone());
    results.insert("boot_to_ready_no_network_ms".into(), boot_no_net);
    results.insert("first_exec_ms".into(), stats(first_execs));
    if let Some(base) = baseline.as_ref() {
        for key in ["baseline_boot_ms", "raw_channel_mb_per_s", "exec_floor_ms"] {
            if let Some(v) = base.get(key) {
                results.insert(key.into(), v.clone());
            }
        }
    }
    if let (Some(a), Some(b)) = (boot["p50"].as_f64(), results.get("baseline_boot_ms").and_then(|b| b["p50"].as_f64())) {
        results.insert("boot_overhead_ratio_p50".into(), json!((a / b * 100.0).round() / 100.0));
    }

    // Warm exec round trip and throughput on one running box.
    let b = rt.create(BoxOptions::new("busybox:latest")).await?;
    b.start().await?;
    // Through the supervisor against the old direct path (this process on the VM's agent
    // socket, no supervisor), alternating rounds on the same box disk so noise hits both alike.
    let (mut via_shim, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        b.start().await?;
        via_shim.extend(warm_exec_rtts(&b, 50).await?);
        b.stop().await?;
        direct.extend(direct_exec_rtts(&home.path().join("boxes").join(b.id()), 50).await?);
    }
    b.start().await?;
    let (shim_stats, direct_stats) = (stats(via_shim), stats(direct));
    if let (Some(a), Some(d)) = (shim_stats["p50"].as_f64(), direct_stats["p50"].as_f64()) {
        results.insert("supervisor_exec_overhead_p50_ms".into(), json!(((a - d) * 100.0).round() / 100.0));
    }
    // Against the floor boot-baseline.sh measured: a line each way over the raw channel around
    // the guest's own fork+exec of busybox `true`.
    if let (Some(a), Some(f)) = (shim_stats["p50"].as_f64(), results.get("exec_floor_ms").and_then(|f| f["p50"].as_f64())) {
        results.insert("warm_exec_vs_floor_ratio".into(), json!((a / f * 100.0).round() / 100.0));
    }
    results.insert("warm_exec_rtt_ms".into(), shim_stats);
    results.insert("warm_exec_direct_rtt_ms".into(), direct_stats);
    let secs = stdout_20mb_secs(&b).await?;
    results.insert("stdout_20mb_ms".into(), json!((secs * 1e4).round() / 10.0));
    results.insert("stdout_mb_per_s".into(), json!(((20.0 / secs) * 10.0).round() / 10.0));
    if let Some(raw) = results.get("raw_channel_mb_per_s").and_then(|r| r["p50"].as_f64()) {
        results.insert("stdout_vs_raw_channel_ratio".into(), json!(((20.0 / secs) / raw * 100.0).round() / 100.0));
    }
    debian_commands_bench(&rt, &mut results).await?;
    network_bench(&rt, &b, &mut results).await?;
    files_bench(&b, &mut results).await?;
    volume_bench(&rt, &mut results).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let info = b.info()?;
    let pid = info.pid.ok_or("running box has no pid")?;
    results.insert("idle_box_rss_mib".into(), json!(rss_kib(pid) / 1024));
    // What an idle box costs in CPU: the supervisor's cpu_percent covers the time since the
    // previous sample, here 5 s with nothing running.
    b.metrics().await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu = b.metrics().await?.cpu_percent;
    results.insert("idle_box_cpu_percent".into(), json!((idle_cpu * 100.0).round() / 100.0));
    let shim = info.shim_pid.ok_or("running box has no supervisor")?;
    results.insert("shim_memory_kib".into(), shim_memory_kib(shim));
    let helper = child_named(shim, "boxlite-net").ok_or("the box's supervisor has no network helper")?;
    results.insert("net_helper_rss_kib".into(), json!(rss_kib(helper)));
    results.insert("net_helper_private_kib".into(), json!(status_kib(helper, "RssAnon:")));
    // Another runtime (as a new process would) attaching to the running box: get + first exec.
    let mut attaches = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let other = Runtime::new(RuntimeOptions { home: Some(home.path().into()), ..Default::default() })?;
        other.get(b.id())?.exec(ExecCommand::new("true", Vec::<String>::new())).await?.wait().await?;
        attaches.push(ms(t.elapsed()));
    }
    results.insert("attach_first_exec_ms".into(), stats(attaches));
    rt.remove(b.id(), true).await?;
    for b in boxes {
        rt.remove(b.id(), true).await?;
    }

    let report = Value::Object(results);
    std::fs::write(&out_path, serde_json::to_string_pretty(&report)?)?;
    println!("{:<28} value", "metric");
    for (k, v) in report.as_object().expect("object") {
        println!("{k:<28} {v}");
    }
    println!("wrote {out_path}");
    Ok(())
}
