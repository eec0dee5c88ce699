//! `boxlite-bench density REGISTRY N [OUT.json]`: N idle busybox boxes of 128 MiB at once (issue 11's
//! density run). Boots them two at a time (this machine has 2 cores), checks each answers an exec,
//! then lets them idle and measures, over a window, the CPU all their VM and supervisor processes
//! use together, and each VM's RSS and PSS. Boxes have no network (`network: none`), so the figures
//! are the VM's own; a box with a network adds its helper (see the main bench's `net_helper_rss`).

use boxlite::{BoxOptions, ExecCommand, LiteBox, Network, RegistryConfig, Runtime, RuntimeOptions};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Boots at once (one per core).
const BOOTS_AT_ONCE: usize = 2;
/// How long the boxes settle before the idle CPU window, and the window itself.
const SETTLE: Duration = Duration::from_secs(10);
const WINDOW: Duration = Duration::from_secs(20);

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum()
}

/// A `/proc/PID/smaps_rollup` figure in KiB (`Rss:`, `Pss:`).
pub(crate) fn rollup_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

async fn boot(b: &LiteBox) -> boxlite::Result<Duration> {
    let t = Instant::now();
    b.start().await?;
    let out = b.exec(ExecCommand::new("true", Vec::<String>::new())).await?.output().await?;
    if !out.status.success() {
        return Err(boxlite::Error::Guest(format!("`true` exited with {:?}", out.status)));
    }
    Ok(t.elapsed())
}

pub async fn run(registry: &str, n: usize, out_path: Option<&String>) -> Result<(), Box<dyn std::error::Error>> {
    let home = tempfile::Builder::new().prefix("bxd").tempdir_in("/tmp")?;
    let registries = vec![RegistryConfig { host: registry.to_string(), insecure: true, ..Default::default() }];
    let rt = Runtime::new(RuntimeOptions { home: Some(home.path().into()), registries, ..Default::default() })?;
    rt.pull("busybox:latest", None).await?;
    let mut boxes = Vec::new();
    for _ in 0..n {
        let mut options = BoxOptions::new("busybox:latest");
        options.memory_mib = 128;
        options.network = Network::None;
        boxes.push(rt.create(options).await?);
    }

    let started = Instant::now();
    let mut boot_ms = Vec::new();
    let result = async {
        for group in boxes.chunks(BOOTS_AT_ONCE) {
            let mut set = tokio::task::JoinSet::new();
            for b in group {
                let b = b.clone();
                set.spawn(async move { boot(&b).await });
            }
            while let Some(took) = set.join_next().await {
                boot_ms.push(crate::ms(took.map_err(|e| boxlite::Error::Internal(e.to_string()))??));
            }
        }
        Ok::<(), boxlite::Error>(())
    }
    .await;
    let all_ready = started.elapsed();
    if let Err(e) = result {
        cleanup(&rt, &boxes).await;
        return Err(format!("a box did not boot after {} of {n}: {e}", boot_ms.len()).into());
    }

    // Every process of the boxes: each VM and each supervisor.
    let mut vm_pids = Vec::new();
    let mut pids = Vec::new();
    for b in &boxes {
        let rec = b.info()?;
        if let Some(pid) = rec.pid {
            vm_pids.push(pid);
            pids.push(pid);
        }
        if let Some(pid) = rec.shim_pid {
            pids.push(pid);
        }
    }
    tokio::time::sleep(SETTLE).await;
    let before: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    let t = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let used = pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>().saturating_sub(before);
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let idle_cpu_percent = used as f64 / hz / t.elapsed().as_secs_f64() * 100.0;
    let rss: Vec<f64> = vm_pids.iter().map(|&p| rollup_kib(p, "Rss:") as f64 / 1024.0).collect();
    let pss: Vec<f64> = vm_pids.iter().map(|&p| rollup_kib(p, "Pss:") as f64 / 1024.0).collect();
    let mean = |v: &[f64]| (v.iter().sum::<f64>() / v.len().max(1) as f64 * 10.0).round() / 10.0;
    let round2 = |x: f64| (x * 100.0).round() / 100.0;

    let results = json!({
        "boxes": n,
        "all_ready_ms": crate::ms(all_ready),
        "boot_and_exec_ms": crate::stats(boot_ms),
        "idle_total_cpu_percent_of_one_core": round2(idle_cpu_percent),
        "idle_cpu_percent_per_box": round2(idle_cpu_percent / n.max(1) as f64),
        "vm_rss_mib_mean": mean(&rss),
        "vm_pss_mib_mean": mean(&pss),
        "vm_pss_mib_total": (pss.iter().sum::<f64>()).round(),
        "idle_window_s": WINDOW.as_secs(),
    });
    cleanup(&rt, &boxes).await;
    print_table(&results);
    if let Some(path) = out_path {
        std::fs::write(path, serde_json::to_string_pretty(&results)? + "\n")?;
        println!("wrote {path}");
    }
    Ok(())
}

async fn cleanup(rt: &Runtime, boxes: &[LiteBox]) {
    for b in boxes {
        let _ = rt.remove(b.id(), true).await;
    }
}

fn print_table(results: &Value) {
    println!("{:<36} value", "density metric");
    if let Some(map) = results.as_object() {
        for (k, v) in map {
            println!("{k:<36} {v}");
        }
    }
}
