//! The process model with real VMs: each running box has a supervisor; a box is reachable from
//! any process on its home; a detached box outlives the process that made it; a non-detached one
//! stops cleanly when that process dies; whatever is killed, callers hear what died within a
//! second, records say so, nothing is left running and synced data survives.

mod common;

use boxlite::{BoxOptions, BoxStatus, ExecCommand, LiteBox, Runtime};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "BOXLITE_TEST_CHILD";

/// The tests here run one at a time: they count processes and fds of this process, and two
/// cores run one booting VM at a time best.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

async fn sh(b: &LiteBox, script: &str) -> String {
    let out = b.exec(ExecCommand::new("sh", ["-c", script])).await.expect("exec").output().await.expect("output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `action` of [`child_process`] in a new process of this test binary on the shared home.
fn spawn_child(action: &str, arg: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{action}:{arg}"))
        .env("BOXLITE_TEST_HOME", common::home())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child test process")
}

/// Waits for a child to print `line` on stdout.
fn wait_for_line(child: &mut std::process::Child, line: &str) {
    use std::io::BufRead;
    let out = child.stdout.as_mut().unwrap();
    let mut reader = std::io::BufReader::new(out);
    let mut seen = String::new();
    loop {
        let mut got = String::new();
        assert!(reader.read_line(&mut got).unwrap() > 0, "child ended before printing {line:?}; it printed:\n{seen}");
        // libtest prints "test child_process ... " before the test's own output, on the same line.
        if got.trim().ends_with(line) {
            return;
        }
        seen.push_str(&got);
    }
}

/// The other process of these tests: not a test of its own (it does nothing unless started by
/// [`spawn_child`]).
#[tokio::test(flavor = "multi_thread")]
async fn child_process() {
    let Ok(action) = std::env::var(CHILD_ENV) else { return };
    let (action, arg) = action.split_once(':').unwrap();
    let rt = common::runtime();
    match action {
        // Creates a detached box named `arg`, writes a synced file in it, exits.
        "create-detached" => {
            let b = rt.create(BoxOptions { name: Some(arg.into()), detach: true, ..BoxOptions::new("busybox:latest") }).await.unwrap();
            assert_eq!(sh(&b, "echo from-a > /root/a.txt && sync && echo ok").await, "ok\n");
        }
        // Creates a box (not detached) named `arg`, writes a synced file, says so, then waits to be killed.
        "create-and-wait" => {
            let b = rt.create(BoxOptions { name: Some(arg.into()), ..BoxOptions::new("busybox:latest") }).await.unwrap();
            sh(&b, "echo synced > /root/s.txt && sync; echo unsynced > /root/u.txt").await;
            println!("READY");
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        // Execs in box `arg` for a second and prints what it saw.
        "exec" => {
            let b = rt.get(arg).unwrap();
            print!("{}", sh(&b, "sleep 1; cat /root/a.txt").await);
        }
        // Stops box `arg`.
        "stop" => rt.get(arg).unwrap().stop().await.unwrap(),
        other => panic!("unknown child action {other}"),
    }
}

fn processes_of(rt: &Runtime, id: &str) -> Vec<u32> {
    let dir = rt.home().join("boxes").join(id);
    let needle = dir.as_os_str().as_encoded_bytes().to_vec();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = state.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            !zombie && cmdline.windows(needle.len()).any(|w| w == needle.as_slice())
        })
        .collect()
}

async fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_detached_box_outlives_its_process_and_serves_several_at_once() {
    let _serial = serial();
    let rt = common::runtime();
    let name = "detached-shared";
    let status = spawn_child("create-detached", name).wait().unwrap();
    assert!(status.success(), "process A failed");
    let b = rt.get(name).unwrap();
    let info = b.info().unwrap();
    assert_eq!(info.status, BoxStatus::Running, "the box must outlive process A: {info:?}");
    // Process B (this one) and process C exec at the same time.
    let started = Instant::now();
    let c = spawn_child("exec", name);
    let here = sh(&b, "sleep 1; cat /root/a.txt").await;
    let out = c.wait_with_output().unwrap();
    assert_eq!(here, "from-a\n");
    let theirs = String::from_utf8_lossy(&out.stdout);
    assert!(theirs.lines().any(|l| l.ends_with("from-a")), "process C saw:\n{theirs}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let m = b.metrics().await.unwrap();
    assert!(m.commands_executed >= 3 && m.memory_bytes > 0, "{m:?}");
    // A stop from another process is graceful: a write not yet synced survives it.
    sh(&b, "echo unsynced > /root/late.txt").await;
    assert!(spawn_child("stop", name).wait().unwrap().success());
    assert_eq!(b.info().unwrap().status, BoxStatus::Stopped);
    wait_until("no VM or supervisor is left", Duration::from_secs(2), || processes_of(&rt, b.id()).is_empty()).await;
    assert_eq!(sh(&b, "cat /root/late.txt").await, "unsynced\n");
    rt.remove(name, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_box_stops_cleanly_when_its_owner_is_killed() {
    let _serial = serial();
    let rt = common::runtime();
    let name = "owned-by-child";
    let mut child = spawn_child("create-and-wait", name);
    wait_for_line(&mut child, "READY");
    child.kill().unwrap();
    child.wait().unwrap();
    let b = rt.get(name).unwrap();
    wait_until("the box is stopped", Duration::from_secs(20), || b.info().unwrap().status == BoxStatus::Stopped).await;
    let info = b.info().unwrap();
    assert!(info.reason.as_deref().unwrap_or_default().contains("owner"), "{info:?}");
    // The supervisor records the stop, then exits.
    wait_until("no VM or supervisor is left", Duration::from_secs(2), || processes_of(&rt, b.id()).is_empty()).await;
    assert!(!rt.home().join("boxes").join(b.id()).join("shim.sock").exists());
    // The stop was graceful: even the unsynced write is there.
    assert_eq!(sh(&b, "cat /root/s.txt /root/u.txt").await, "synced\nunsynced\n");
    rt.remove(name, true).await.unwrap();
}

/// One box, killed three ways in turn; each time callers learn what died within a second, the
/// record says so, nothing is left, and the box starts again with its synced data.
#[tokio::test(flavor = "multi_thread")]
async fn whatever_is_killed_callers_hear_what_died_and_the_box_recovers() {
    let _serial = serial();
    let rt = common::runtime();
    let b = rt.create(BoxOptions::new("busybox:latest")).await.unwrap();
    for (round, victim) in ["vm", "supervisor"].iter().enumerate() {
        assert_eq!(sh(&b, &format!("echo round{round} > /root/r{round}.txt && sync && echo ok")).await, "ok\n");
        let info = b.info().unwrap();
        let pid = if *victim == "vm" { info.pid.unwrap() } else { info.shim_pid.unwrap() };
        // Mid-exec, with output streaming.
        let mut ex = b.exec(ExecCommand::new("sh", ["-c", "while true; do echo tick; sleep 0.05; done"])).await.unwrap();
        let mut stdout = ex.stdout.take().unwrap();
        assert!(stdout.next().await.is_some());
        // SAFETY: kills a process of this box.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let killed = Instant::now();
        while stdout.next().await.is_some() {}
        let err = ex.wait().await.expect_err("the command cannot finish normally");
        let waited = killed.elapsed();
        let msg = err.to_string();
        eprintln!("{victim} killed mid-exec: the caller heard in {waited:?}");
        assert!(waited < Duration::from_millis(1500), "{victim}: the error took {waited:?}: {msg}");
        let expect = if *victim == "vm" { "killed by signal 9" } else { "supervisor" };
        assert!(msg.contains(expect), "{victim}: {msg}");
        let info = b.info().unwrap();
        assert_eq!(info.status, BoxStatus::Failed, "{info:?}");
        assert!(info.reason.as_deref().unwrap_or_default().contains(expect), "{info:?}");
        wait_until("no process of the box is left", Duration::from_secs(5), || processes_of(&rt, b.id()).is_empty()).await;
        let dir = rt.home().join("boxes").join(b.id());
        for f in ["shim.sock", "agent.sock", "qmp.sock"] {
            assert!(!dir.join(f).exists(), "{victim}: {f} left behind");
        }
        // It starts again, with what was synced.
        assert_eq!(sh(&b, &format!("cat /root/r{round}.txt")).await, format!("round{round}\n"));
    }
    rt.remove(b.id(), true).await.unwrap();
}

/// The process of this box whose command is `comm` (as /proc/PID/comm shows it).
fn process_named(rt: &Runtime, id: &str, comm: &str) -> Option<u32> {
    processes_of(rt, id).into_iter().find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm))
}

/// While the box boots, its VM, its supervisor or its network helper is killed; then its network
/// helper is killed while a command streams. Each time the caller hears what died within a
/// second, the record says failed with that reason, nothing is left, and the box starts again.
#[tokio::test(flavor = "multi_thread")]
async fn killed_while_it_boots_or_when_its_network_helper_dies() {
    let _serial = serial();
    let rt = common::runtime();
    let b = rt.create(BoxOptions::new("busybox:latest")).await.unwrap();
    assert_eq!(sh(&b, "echo kept > /root/kept.txt && sync && echo ok").await, "ok\n");
    b.stop().await.unwrap();
    // comm is cut to 15 bytes: qemu-system-x86_64 shows as qemu-system-x86.
    for (victim, named) in [("qemu-system-x86", "VM process"), ("boxlite-shim", "supervisor"), ("boxlite-net", "network helper")] {
        let booting = tokio::spawn({
            let b = b.clone();
            async move { b.start().await }
        });
        let mut pid = None;
        wait_until(&format!("{victim} runs"), Duration::from_secs(10), || {
            pid = process_named(&rt, b.id(), victim);
            pid.is_some()
        })
        .await;
        // SAFETY: kills a process of this box.
        unsafe { libc::kill(pid.unwrap() as i32, libc::SIGKILL) };
        let killed = Instant::now();
        let err = booting.await.unwrap().expect_err(&format!("{victim} killed while booting, yet the start succeeded"));
        eprintln!("{victim} killed while booting: the caller heard in {:?}", killed.elapsed());
        assert!(killed.elapsed() < Duration::from_millis(1500), "{victim}: the error took {:?}: {err}", killed.elapsed());
        assert!(err.to_string().contains(named), "{victim}: {err}");
        let info = b.info().unwrap();
        assert_eq!(info.status, BoxStatus::Failed, "{victim}: {info:?}");
        assert!(info.reason.as_deref().unwrap_or_default().contains(named), "{victim}: {info:?}");
        wait_until(&format!("{victim} killed: no process of the box is left"), Duration::from_secs(5), || processes_of(&rt, b.id()).is_empty()).await;
    }
    // Mid-exec, with output streaming.
    let mut ex = b.exec(ExecCommand::new("sh", ["-c", "while true; do echo tick; sleep 0.05; done"])).await.unwrap();
    let mut stdout = ex.stdout.take().unwrap();
    assert!(stdout.next().await.is_some());
    let helper = process_named(&rt, b.id(), "boxlite-net").expect("a running box has a network helper");
    // SAFETY: kills a process of this box.
    unsafe { libc::kill(helper as i32, libc::SIGKILL) };
    let killed = Instant::now();
    while stdout.next().await.is_some() {}
    let err = ex.wait().await.expect_err("the command cannot finish normally");
    eprintln!("network helper killed mid-exec: the caller heard in {:?}", killed.elapsed());
    assert!(killed.elapsed() < Duration::from_millis(1500), "the error took {:?}: {err}", killed.elapsed());
    assert!(err.to_string().contains("network helper"), "{err}");
    // The box is stopped cleanly (its writes synced) before it is recorded failed.
    wait_until("the box is recorded failed", Duration::from_secs(10), || b.info().unwrap().status == BoxStatus::Failed).await;
    let info = b.info().unwrap();
    assert!(info.reason.as_deref().unwrap_or_default().contains("network helper"), "{info:?}");
    wait_until("no process of the box is left", Duration::from_secs(5), || processes_of(&rt, b.id()).is_empty()).await;
    assert_eq!(sh(&b, "cat /root/kept.txt").await, "kept\n");
    rt.remove(b.id(), true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_box_stops_itself_and_an_auto_remove_box_goes_away() {
    let _serial = serial();
    let rt = common::runtime();
    let b = rt.create(BoxOptions { auto_stop_ms: Some(1500), ..BoxOptions::new("busybox:latest") }).await.unwrap();
    // A command that runs longer than the idle limit keeps the box up.
    assert_eq!(sh(&b, "sleep 2; echo done").await, "done\n");
    assert_eq!(b.info().unwrap().status, BoxStatus::Running);
    wait_until("the idle box stopped", Duration::from_secs(10), || b.info().unwrap().status == BoxStatus::Stopped).await;
    assert!(b.info().unwrap().reason.unwrap_or_default().contains("idle"));
    // File calls are activity too: one every 500 ms for 3 s keeps it up past the 1.5 s limit.
    b.start().await.unwrap();
    for _ in 0..6 {
        b.files().stat("/").await.expect("stat");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(b.info().unwrap().status, BoxStatus::Running, "file calls must count as activity");
    wait_until("the idle box stopped again", Duration::from_secs(10), || b.info().unwrap().status == BoxStatus::Stopped).await;
    rt.remove(b.id(), false).await.unwrap();

    let b = rt.create(BoxOptions { auto_remove: true, ..BoxOptions::new("busybox:latest") }).await.unwrap();
    sh(&b, "true").await;
    b.stop().await.unwrap();
    assert_eq!(b.info().unwrap_err().code(), "NOT_FOUND");
    assert!(!rt.home().join("boxes").join(b.id()).exists());
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// 50 cycles of create, exec, stop, remove leave no process, fd, file or row behind.
#[tokio::test(flavor = "multi_thread")]
async fn fifty_cycles_leak_nothing() {
    let _serial = serial();
    let (rt, _home) = common::isolated_runtime(vec![boxlite::RegistryConfig { host: common::registry(), insecure: true, ..Default::default() }]);
    // The first cycle pulls the image and warms every lazy resource.
    let b = rt.create(BoxOptions::new("busybox:latest")).await.unwrap();
    sh(&b, "true").await;
    rt.remove(b.id(), true).await.unwrap();
    let fds = open_fds();
    let files = walk(rt.home());
    for i in 0..50 {
        let b = rt.create(BoxOptions::new("busybox:latest")).await.unwrap();
        assert_eq!(sh(&b, &format!("echo {i}")).await, format!("{i}\n"));
        b.stop().await.unwrap();
        assert!(processes_of(&rt, b.id()).is_empty(), "cycle {i}: processes left");
        rt.remove(b.id(), false).await.unwrap();
    }
    assert!(rt.list().unwrap().is_empty());
    assert_eq!(walk(rt.home()), files, "files left behind");
    let now = open_fds();
    assert!(now <= fds + 2, "fds grew from {fds} to {now}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        // The database's WAL files come and go with checkpoints.
        let name = p.display().to_string();
        if name.ends_with("-wal") || name.ends_with("-shm") {
            continue;
        }
        if p.is_dir() {
            out.push(name);
            out.extend(walk(&p));
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}
