//! `boxlite-bench snapshots REGISTRY [N] [OUT.json]` (issue 12): a restored box's boot-to-ready
//! against a cold boot in the same run, its first exec, snapshot, fork, pause/resume and
//! suspend/resume times, a snapshot's size on disk, and the PSS of N boxes restored from one
//! snapshot against N cold-booted ones; then warm start: the template's build, N boxes started
//! from it (boot-to-ready, first exec, PSS) against the cold ones. Busybox boxes of the default
//! size, no network.

use boxlite::{BoxOptions, ExecCommand, LiteBox, Network, RegistryConfig, RestoreOptions, Runtime, RuntimeOptions, WarmupOptions};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn exec_true(b: &LiteBox) -> boxlite::Result<Duration> {
    let t = Instant::now();
    let out = b.exec(ExecCommand::new("true", Vec::<String>::new())).await?.output().await?;
    if !out.status.success() {
        return Err(boxlite::Error::Guest(format!("`true` exited with {:?}", out.status)));
    }
    Ok(t.elapsed())
}

/// Total PSS (MiB) of the VM processes of `boxes`, after they settle.
async fn pss_mib(boxes: &[LiteBox]) -> Result<f64, Box<dyn std::error::Error>> {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut kib = 0;
    for b in boxes {
        let pid = b.metrics().await?.vm_pid.ok_or("a box has no VM")?;
        kib += crate::density::rollup_kib(pid, "Pss:");
    }
    Ok(kib as f64 / 1024.0)
}

/// Creates and starts `n` boxes of `options` one after another: the boxes, each one's
/// start-to-ready and first exec (ms).
async fn start_boxes(rt: &Runtime, n: usize, options: impl Fn() -> BoxOptions) -> boxlite::Result<(Vec<LiteBox>, Vec<f64>, Vec<f64>)> {
    let (mut boxes, mut ready, mut first_exec) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let b = rt.create(options()).await?;
        let t = Instant::now();
        b.start().await?;
        ready.push(ms(t.elapsed()));
        first_exec.push(ms(exec_true(&b).await?));
        boxes.push(b);
    }
    Ok((boxes, ready, first_exec))
}

pub async fn run(registry: &str, n: usize, out_path: Option<&String>) -> Result<(), Box<dyn std::error::Error>> {
    let home = tempfile::Builder::new().prefix("bxs").tempdir_in("/tmp")?;
    let registries = vec![RegistryConfig { host: registry.to_string(), insecure: true, ..Default::default() }];
    let options_rt = RuntimeOptions { home: Some(home.path().into()), registries, ..Default::default() };
    let rt = Runtime::new(RuntimeOptions { warm_start: Some(false), ..options_rt.clone() })?;
    rt.pull("busybox:latest", None).await?;
    let options = || BoxOptions { network: Network::None, ..BoxOptions::new("busybox:latest") };

    // Cold: create + boot + first exec, N times; these boxes are the cold PSS sample.
    let (cold, cold_ready, cold_first_exec) = start_boxes(&rt, n, options).await?;
    let cold_pss = pss_mib(&cold).await?;

    let src = &cold[0];
    let t = Instant::now();
    let snap = src.snapshot("bench").await?;
    let snapshot_ms = ms(t.elapsed());
    let (mut pause, mut resume) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        src.pause().await?;
        pause.push(ms(t.elapsed()));
        let t = Instant::now();
        src.resume().await?;
        resume.push(ms(t.elapsed()));
    }
    let t = Instant::now();
    src.suspend().await?;
    let suspend_ms = ms(t.elapsed());
    let t = Instant::now();
    src.resume().await?;
    let resume_suspended_ms = ms(t.elapsed());
    for b in &cold {
        rt.remove(b.id(), true).await?;
    }

    // Warm: restore to ready + first exec, N times; these boxes are the restored PSS sample.
    let mut warm = Vec::new();
    let (mut warm_ready, mut warm_first_exec) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let b = rt.restore("bench", RestoreOptions::default()).await?;
        warm_ready.push(ms(t.elapsed()));
        warm_first_exec.push(ms(exec_true(&b).await?));
        warm.push(b);
    }
    let warm_pss = pss_mib(&warm).await?;
    let t = Instant::now();
    let forks = warm[0].fork(1).await?;
    let fork_ms = ms(t.elapsed());
    for b in forks.iter().chain(&warm) {
        rt.remove(b.id(), true).await?;
    }

    // Warm start: boxes created and started from the template of their shape.
    let wrt = Runtime::new(RuntimeOptions { warm_start: Some(true), ..options_rt })?;
    let t = Instant::now();
    let template = wrt.warmup(WarmupOptions { network: false, ..Default::default() }).await?;
    let template_build_ms = ms(t.elapsed());
    let (templated, templated_ready, templated_first_exec) = start_boxes(&wrt, n, options).await?;
    let templated_pss = pss_mib(&templated).await?;
    for b in &templated {
        wrt.remove(b.id(), true).await?;
    }

    let (cold_med, warm_med, templated_med) = (median(cold_ready), median(warm_ready), median(templated_ready));
    let results = json!({
        "boxes": n,
        "cold_boot_to_ready_ms_p50": cold_med,
        "cold_first_exec_ms_p50": median(cold_first_exec),
        "restore_to_ready_ms_p50": warm_med,
        "restore_first_exec_ms_p50": median(warm_first_exec),
        "restore_vs_cold_boot": (warm_med / cold_med * 100.0).round() / 100.0,
        "snapshot_ms": snapshot_ms,
        "snapshot_paused_ms": snap.paused_ms,
        "snapshot_memory_mib": (snap.memory_bytes as f64 / 1048576.0 * 10.0).round() / 10.0,
        "snapshot_disk_mib": (snap.disk_bytes as f64 / 1048576.0 * 10.0).round() / 10.0,
        "fork_one_ms": fork_ms,
        "pause_ms_p50": median(pause),
        "resume_ms_p50": median(resume),
        "suspend_ms": suspend_ms,
        "resume_from_suspend_ms": resume_suspended_ms,
        "pss_mib_per_box_cold": (cold_pss / n as f64 * 10.0).round() / 10.0,
        "pss_mib_per_box_restored": (warm_pss / n as f64 * 10.0).round() / 10.0,
        "pss_restored_vs_cold": (warm_pss / cold_pss * 100.0).round() / 100.0,
        "template_build_ms": template_build_ms,
        "template_disk_mib": (template.disk_bytes as f64 / 1048576.0 * 10.0).round() / 10.0,
        "warm_start_to_ready_ms_p50": templated_med,
        "warm_start_first_exec_ms_p50": median(templated_first_exec),
        "warm_start_vs_cold_boot": (templated_med / cold_med * 100.0).round() / 100.0,
        "pss_mib_per_box_warm_start": (templated_pss / n as f64 * 10.0).round() / 10.0,
        "pss_warm_start_vs_cold": (templated_pss / cold_pss * 100.0).round() / 100.0,
    });
    println!("{:<32} {:>12}", "snapshots", "value");
    if let Value::Object(map) = &results {
        for (k, v) in map {
            println!("{k:<32} {v:>12}");
        }
    }
    if let Some(path) = out_path {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}
