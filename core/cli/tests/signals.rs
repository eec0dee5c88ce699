//! `boxlite run` interrupted by SIGINT, SIGTERM or SIGHUP: the box is stopped gracefully (its disk
//! synced) and removed with --rm, boxlite exits 128 + signal; a second signal exits at once.

use boxlite::{ExecCommand, RegistryConfig, Runtime, RuntimeOptions};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{boxlite, registry, text};

fn ls(home: &Path) -> String {
    text(&boxlite(home, &["ls"]).output().expect("run boxlite ls").stdout)
}

fn kill(child: &Child, signal: libc::c_int) {
    // SAFETY: plain kill of a child this test spawned and has not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// Starts `boxlite run` and waits until its command prints `ready` (so the command is running).
fn start_run(home: &Path, args: &[&str]) -> Child {
    start_run_with(boxlite(home, args))
}

fn start_run_with(mut cmd: Command) -> Child {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn boxlite");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    if line != "ready\n" {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("the command did not start: stdout {line:?}, stderr {}", text(&out.stderr));
    }
    child
}

/// Waits for `child` with a deadline; returns its exit code, how long it took and its stderr.
fn finish(mut child: Child, deadline: Duration) -> (Option<i32>, Duration, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = text(&child.wait_with_output().unwrap().stderr);
            return (status.code(), started.elapsed(), stderr);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let stderr = text(&child.wait_with_output().unwrap().stderr);
            panic!("boxlite did not exit within {deadline:?} of the signal; stderr: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_signal_stops_and_removes_an_rm_box_and_exits_128_plus_the_signal() {
    let home = tempfile::tempdir().unwrap();
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130), (libc::SIGHUP, 129)] {
        let child = start_run(home.path(), &["run", "--rm", "busybox:latest", "sh", "-c", "echo data > /f; echo ready; sleep 100"]);
        kill(&child, signal);
        let (exit, took, stderr) = finish(child, Duration::from_secs(30));
        eprintln!("signal {signal}: boxlite exited {exit:?} {took:?} after it");
        assert_eq!(exit, Some(code), "signal {signal}; stderr: {stderr}");
        assert_eq!(ls(home.path()).lines().count(), 1, "the --rm box must be gone after signal {signal}");
        assert_eq!(std::fs::read_dir(home.path().join("boxes")).unwrap().count(), 0);
    }
}

#[test]
fn a_signal_stops_a_kept_box_with_its_writes_synced() {
    let home = tempfile::tempdir().unwrap();
    // No `sync`: only a graceful stop gets the write to the disk.
    let child = start_run(home.path(), &["run", "--name", "kept", "busybox:latest", "sh", "-c", "echo data > /f; echo ready; sleep 100"]);
    kill(&child, libc::SIGTERM);
    let (exit, took, stderr) = finish(child, Duration::from_secs(30));
    eprintln!("SIGTERM: boxlite exited {exit:?} {took:?} after it");
    assert_eq!(exit, Some(143), "{stderr}");
    let listed = ls(home.path());
    assert!(listed.lines().any(|l| l.contains("kept") && l.contains("stopped")), "{listed}");

    let registries = vec![RegistryConfig { host: registry(), insecure: true, ..Default::default() }];
    let rt = Runtime::new(RuntimeOptions { home: Some(home.path().into()), registries, accel: None, assets_dir: None, ..Default::default() }).unwrap();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let out = tokio.block_on(async {
        let kept = rt.get("kept").unwrap();
        let out = kept.exec(ExecCommand::new("cat", ["/f"])).await.unwrap().output().await.unwrap();
        rt.remove(kept.id(), true).await.unwrap();
        out
    });
    assert_eq!(text(&out.stdout), "data\n", "stderr: {}", text(&out.stderr));
}

#[test]
fn a_second_signal_exits_at_once() {
    let home = tempfile::tempdir().unwrap();
    // The command ignores SIGTERM, so the first signal leaves boxlite waiting for it to end.
    let child = start_run(home.path(), &["run", "--rm", "busybox:latest", "sh", "-c", "trap '' TERM; echo ready; sleep 100"]);
    kill(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id();
    kill(&child, libc::SIGTERM);
    let (exit, took, stderr) = finish(child, Duration::from_secs(30));
    eprintln!("second SIGTERM: boxlite exited {exit:?} {took:?} after the second");
    assert_eq!(exit, Some(143), "{stderr}");
    assert!(took < Duration::from_secs(2), "took {took:?}: the second signal must not wait; stderr: {stderr}");
    assert!(stderr.contains("interrupted again"), "{stderr}");
    // The VM dies with boxlite: the box it left is reconciled to stopped and can be removed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ls(home.path()).contains("stopped") {
        assert!(Instant::now() < deadline, "the VM of boxlite {pid} outlived it: {}", ls(home.path()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let listed = ls(home.path());
    let id = listed.lines().nth(1).and_then(|l| l.split_whitespace().next()).unwrap_or_else(|| panic!("{listed}"));
    assert!(boxlite(home.path(), &["rm", id]).output().unwrap().status.success());
}

/// Ctrl-C in a terminal signals the whole foreground process group, the VM process included.
#[test]
fn ctrl_c_to_the_process_group_still_exits_130_and_removes_the_rm_box() {
    use std::os::unix::process::CommandExt;
    let home = tempfile::tempdir().unwrap();
    let mut cmd = boxlite(home.path(), &["run", "--rm", "busybox:latest", "sh", "-c", "echo ready; sleep 100"]);
    cmd.process_group(0);
    let child = start_run_with(cmd);
    // SAFETY: signals the process group this test just created for the child.
    assert_eq!(unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) }, 0);
    let (exit, took, stderr) = finish(child, Duration::from_secs(30));
    eprintln!("SIGINT to the group: boxlite exited {exit:?} {took:?} after it");
    assert_eq!(exit, Some(130), "{stderr}");
    assert!(!stderr.contains("error"), "an interrupt is not reported as a failure: {stderr}");
    assert_eq!(ls(home.path()).lines().count(), 1, "the --rm box must be gone");
}
