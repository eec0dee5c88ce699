//! A detached box driven by one short-lived `boxlite` process after another, as with docker:
//! `run -d`, `exec` (and an interrupted one), `inspect`, `stats`, `logs`, `pause`, `resume`,
//! `suspend`, `snapshot create|ls|rm`, `restore`, `fork`, `stop`, `start`, `restart`,
//! `stop --force`, `rm -f`, `warmup`.

use boxlite::{BoxOptions, RegistryConfig, Runtime, RuntimeOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{boxlite, registry, text};

/// Runs boxlite to completion; panics unless it exits with `code`.
fn expect(home: &Path, args: &[&str], code: i32) -> Output {
    let out = boxlite(home, args).output().expect("run boxlite");
    assert_eq!(out.status.code(), Some(code), "boxlite {args:?}: stdout {} stderr {}", text(&out.stdout), text(&out.stderr));
    out
}

/// The status column of the box named `name` in `boxlite ls`.
fn status(home: &Path, name: &str) -> String {
    let ls = text(&expect(home, &["ls"], 0).stdout);
    let line = ls.lines().find(|l| l.split_whitespace().nth(1) == Some(name)).unwrap_or_else(|| panic!("{name} not listed: {ls}"));
    line.split_whitespace().nth(3).unwrap().to_string()
}

fn inspect(home: &Path, name: &str) -> serde_json::Value {
    let out = expect(home, &["inspect", name], 0);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("inspect is not JSON ({e}): {}", text(&out.stdout)))
}

/// Host processes (pid, command line) whose command line names `dir`: the box's supervisor
/// (`boxlite-shim <dir>/shim.json`) and its VM (whose disk is in `dir`).
fn processes_in(dir: &Path) -> Vec<(String, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = text(&raw).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push((pid, cmdline));
            }
        }
    }
    found
}

/// Waits (up to 5 s: a process may still be exiting) until no process names `dir`.
fn assert_no_processes_in(dir: &Path, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_in(dir);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "after {after}, processes of the box remain: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_detached_box_is_driven_from_one_cli_process_after_another() {
    let home = common::Home::new();
    let home = home.path();

    let started = Instant::now();
    let out = expect(home, &["run", "-d", "--name", "web", "busybox:latest"], 0);
    eprintln!("run -d: {:?}", started.elapsed());
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(id, inspect(home, "web")["id"], "run -d prints the box id");
    let dir = home.join("boxes").join(&id);
    // The process that booted it has exited: the box runs on.
    assert_eq!(status(home, "web"), "running");

    let started = Instant::now();
    let out = expect(home, &["exec", "web", "sh", "-c", "echo hi; exit 3"], 3);
    eprintln!("exec on a running box: {:?}", started.elapsed());
    assert_eq!(text(&out.stdout), "hi\n");
    let out = expect(home, &["exec", "web", "no-such-cmd"], 127);
    assert!(text(&out.stderr).contains("command 'no-such-cmd' not found in the box"), "{}", text(&out.stderr));
    let out = expect(home, &["exec", "-e", "A=from-exec", "-w", "/tmp", "-u", "1000", "web", "sh", "-c", "echo $A $(pwd) $(id -u)"], 0);
    assert_eq!(text(&out.stdout), "from-exec /tmp 1000\n");
    let mut cat = boxlite(home, &["exec", "-i", "web", "cat"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    cat.stdin.take().unwrap().write_all(b"through stdin\n").unwrap();
    let out = cat.wait_with_output().unwrap();
    assert_eq!((out.status.code(), text(&out.stdout).as_str()), (Some(0), "through stdin\n"));
    let out = expect(home, &["exec", "-t", "web", "tty"], 0);
    assert!(text(&out.stdout).starts_with("/dev/pts/"), "{}", text(&out.stdout));

    // An interrupt ends the command (130, as `run`), not the box.
    let mut sleeper = boxlite(home, &["exec", "web", "sh", "-c", "echo ready; sleep 100"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(sleeper.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: plain kill of a child this test spawned and has not reaped yet.
    assert_eq!(unsafe { libc::kill(sleeper.id() as i32, libc::SIGINT) }, 0);
    let out = sleeper.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert_eq!(status(home, "web"), "running");

    let rec = inspect(home, "web");
    assert_eq!(rec["status"], "running", "{rec:#}");
    assert_eq!(rec["options"]["detach"], true, "{rec:#}");
    assert_eq!(rec["metrics"]["commands_executed"], 6, "{rec:#}");
    assert_eq!(rec["metrics"]["exec_errors"], 1, "{rec:#}");
    assert!(rec["metrics"]["memory_bytes"].as_u64().unwrap() > 0, "{rec:#}");

    let stats = text(&expect(home, &["stats", "--no-stream"], 0).stdout);
    assert!(stats.starts_with("ID ") && stats.contains("CPU%") && stats.contains("MEM"), "{stats}");
    let row = stats.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("web missing from stats: {stats}"));
    assert!(row.contains("web") && row.contains("MiB") && row.trim_end().ends_with(" 6"), "{row}");
    // Streaming: a table a second until interrupted.
    let mut streaming = boxlite(home, &["stats", "web"]).stdout(Stdio::piped()).spawn().unwrap();
    let tables = BufReader::new(streaming.stdout.take().unwrap()).lines().map_while(Result::ok).filter(|l| l.starts_with("ID ")).take(2).count();
    streaming.kill().unwrap();
    streaming.wait().unwrap();
    assert_eq!(tables, 2);

    // The console log is what the guest writes to its console.
    expect(home, &["exec", "web", "sh", "-c", "echo written-to-the-console > /dev/console"], 0);
    let logs = text(&expect(home, &["logs", "web"], 0).stdout);
    assert!(logs.contains("written-to-the-console"), "{logs}");

    // pause / resume from separate processes; exec on a paused box says to resume it.
    expect(home, &["exec", "web", "sh", "-c", "echo before-pause > /tmp/state"], 0);
    expect(home, &["pause", "web"], 0);
    assert_eq!(status(home, "web"), "paused");
    assert_eq!(inspect(home, "web")["status"], "paused");
    let out = expect(home, &["exec", "web", "true"], 125);
    assert!(text(&out.stderr).contains("paused") && text(&out.stderr).contains("boxlite resume web"), "{}", text(&out.stderr));
    expect(home, &["resume", "web"], 0);
    assert_eq!(status(home, "web"), "running");
    assert_eq!(text(&expect(home, &["exec", "web", "cat", "/tmp/state"], 0).stdout), "before-pause\n");

    // suspend / resume: the VM ends and comes back with its memory (/tmp is in memory).
    expect(home, &["suspend", "web"], 0);
    assert_eq!(status(home, "web"), "suspended");
    let out = expect(home, &["exec", "web", "true"], 125);
    assert!(text(&out.stderr).contains("suspended") && text(&out.stderr).contains("boxlite resume web"), "{}", text(&out.stderr));
    expect(home, &["resume", "web"], 0);
    assert_eq!(status(home, "web"), "running");
    assert_eq!(text(&expect(home, &["exec", "web", "cat", "/tmp/state"], 0).stdout), "before-pause\n");

    // snapshot / restore / fork: new detached boxes that go on from the snapshot's instant.
    expect(home, &["snapshot", "create", "web", "web-snap"], 0);
    let ls = text(&expect(home, &["snapshot", "ls"], 0).stdout);
    assert!(ls.lines().any(|l| l.starts_with("web-snap ") && l.contains(" web ")), "{ls}");
    let restored = text(&expect(home, &["restore", "--name", "web-copy", "web-snap"], 0).stdout).trim().to_string();
    assert_eq!(text(&expect(home, &["exec", "web-copy", "cat", "/tmp/state"], 0).stdout), "before-pause\n");
    assert_eq!(text(&expect(home, &["exec", "web-copy", "hostname"], 0).stdout), "web-copy\n");
    let fork = text(&expect(home, &["fork", "web"], 0).stdout).trim().to_string();
    assert_eq!(text(&expect(home, &["exec", &fork, "cat", "/tmp/state"], 0).stdout), "before-pause\n");
    expect(home, &["rm", "-f", &restored, &fork], 0);
    expect(home, &["snapshot", "rm", "web-snap"], 0);
    let out = expect(home, &["restore", "web-snap"], 125);
    assert!(text(&out.stderr).contains("NOT_FOUND"), "{}", text(&out.stderr));

    let started = Instant::now();
    expect(home, &["stop", "web"], 0);
    eprintln!("stop: {:?}", started.elapsed());
    assert_eq!(status(home, "web"), "stopped");
    assert_no_processes_in(&dir, "stop");
    let out = expect(home, &["exec", "web", "true"], 125);
    assert!(text(&out.stderr).contains("INVALID_STATE") && text(&out.stderr).contains("start it first"), "{}", text(&out.stderr));
    assert_eq!(status(home, "web"), "stopped", "exec must not boot a stopped box");

    let started = Instant::now();
    expect(home, &["start", "web"], 0);
    eprintln!("start: {:?}", started.elapsed());
    assert_eq!(status(home, "web"), "running");
    let first_supervisor = inspect(home, "web")["shim_pid"].clone();
    // The disk outlives the VM; a restart boots a new supervisor.
    expect(home, &["exec", "web", "sh", "-c", "echo kept > /root/file && sync"], 0);
    let started = Instant::now();
    expect(home, &["restart", "web"], 0);
    eprintln!("restart: {:?}", started.elapsed());
    let rec = inspect(home, "web");
    assert_eq!(rec["status"], "running", "{rec:#}");
    assert_ne!(rec["shim_pid"], first_supervisor, "{rec:#}");
    assert_eq!(text(&expect(home, &["exec", "web", "cat", "/root/file"], 0).stdout), "kept\n");

    let started = Instant::now();
    expect(home, &["stop", "--force", "web"], 0);
    eprintln!("stop --force: {:?}", started.elapsed());
    assert_eq!(status(home, "web"), "stopped");
    assert_no_processes_in(&dir, "stop --force");

    expect(home, &["rm", "-f", "web"], 0);
    assert_eq!(text(&expect(home, &["ls"], 0).stdout).lines().count(), 1, "rm -f left the box listed");
    assert!(!dir.exists(), "rm -f left {}", dir.display());
    assert_no_processes_in(&dir, "rm -f");
}

#[test]
fn run_d_refuses_a_command_and_start_refuses_a_box_that_would_stop_with_it() {
    let home = common::Home::new();
    let home = home.path();
    let out = expect(home, &["run", "-d", "--name", "web", "busybox:latest", "echo", "hi"], 125);
    assert!(text(&out.stderr).contains("INVALID_ARGUMENT") && text(&out.stderr).contains("boxlite exec"), "{}", text(&out.stderr));
    assert_eq!(text(&expect(home, &["ls"], 0).stdout).lines().count(), 1, "the refused run -d left a box");

    // A box created without `detach` (here through the library: creating does not boot it).
    let registries = vec![RegistryConfig { host: registry(), insecure: true, ..Default::default() }];
    let rt = Runtime::new(RuntimeOptions { home: Some(home.into()), registries, ..Default::default() }).unwrap();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    tokio.block_on(rt.create(BoxOptions { name: Some("kept".into()), ..BoxOptions::new("busybox:latest") })).unwrap();
    for args in [&["start", "kept"][..], &["restart", "kept"][..]] {
        let out = expect(home, args, 125);
        assert!(text(&out.stderr).contains("INVALID_STATE") && text(&out.stderr).contains("run -d"), "{args:?}: {}", text(&out.stderr));
    }
    let out = expect(home, &["exec", "kept", "true"], 125);
    assert!(text(&out.stderr).contains("box kept is created: start it first"), "{}", text(&out.stderr));
    assert_eq!(status(home, "kept"), "created");
    // Nothing booted: nothing to show, no log yet.
    let rec = inspect(home, "kept");
    assert!(rec.get("metrics").is_none(), "{rec:#}");
    assert_eq!(expect(home, &["logs", "kept"], 0).stdout, b"");
    let out = expect(home, &["stats", "--no-stream", "kept"], 0);
    assert!(text(&out.stdout).lines().nth(1).is_some_and(|l| l.contains("kept") && l.contains(" - ")), "{}", text(&out.stdout));
}

#[test]
fn warmup_makes_the_template_once_and_the_next_box_starts_from_it() {
    let home = common::Home::new();
    let home = home.path();
    let args = ["warmup", "--memory", "256", "--network", "none"];
    let first = expect(home, &args, 0);
    let path = text(&first.stdout).trim().to_string();
    assert!(path.starts_with(&home.join("templates").display().to_string()), "{path}");
    assert!(text(&first.stderr).contains("built in"), "{}", text(&first.stderr));
    let again = expect(home, &args, 0);
    assert_eq!(text(&again.stdout).trim(), path);
    assert!(text(&again.stderr).contains("already there"), "{}", text(&again.stderr));
    let bad = expect(home, &["warmup", "--memory", "64"], 125);
    assert!(text(&bad.stderr).contains("memory_mib 64 is out of range"), "{}", text(&bad.stderr));
    // A box of that shape starts from it: its VM maps the template's RAM.
    let out = expect(home, &["run", "-d", "--name", "warm", "--memory", "256", "--network", "none", "busybox:latest"], 0);
    let pid = inspect(home, "warm")["pid"].as_u64().unwrap_or_else(|| panic!("no pid: {}", text(&out.stdout)));
    let cmdline = text(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap()).replace('\0', " ");
    assert!(cmdline.contains(&format!("mem-path={path}/ram,share=off")), "{cmdline}");
    assert_eq!(text(&expect(home, &["exec", "warm", "hostname"], 0).stdout), "warm\n");
    expect(home, &["rm", "-f", "warm"], 0);
}
