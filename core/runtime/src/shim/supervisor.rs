//! The supervisor process itself: boot the VM, report, serve, stop, record.

use super::net_helper::NetHelper;
use super::{proxy, Report, ShimConfig};
use crate::engine::{console_log_path, log_tail, vmm_log_path, VmCommand};
use crate::guest::Guest;
use crate::state::{BoxStatus, State, StatusUpdate};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Child;
use tokio::signal::unix::{signal, SignalKind};

/// How long a graceful stop may take before the VM is ended hard.
const GRACEFUL_STOP: Duration = Duration::from_secs(10);
/// Lines of the console log quoted in boot errors.
const CONSOLE_TAIL_LINES: usize = 20;

/// Entry point of the `boxlite-shim` binary: `boxlite-shim BOX_DIR/shim.json`. Returns its exit
/// code. It runs in a session of its own (the runtime starts it with `setsid`), so a terminal's
/// Ctrl-C reaches the CLI, which decides, and not the box.
pub fn main() -> i32 {
    // Nothing the caller left open (a listening socket, a pipe) may be held by the box.
    // SAFETY: closes fds this process does not use yet; no Rust object owns any of them.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: boxlite-shim BOX_DIR/shim.json (started by the BoxLite runtime, not by hand)");
        return 2;
    };
    let config: ShimConfig = match std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            report(&Report::Failed { code: "INTERNAL".into(), message: format!("box supervisor: cannot read {}: {e}", Path::new(&path).display()) });
            return 1;
        }
    };
    // SAFETY: plain syscalls on this process.
    unsafe {
        // Sockets, logs and everything else the box's processes create are private to the user.
        libc::umask(0o077);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    redirect_stdio(&config.box_dir);
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            report(&Report::Failed { code: "INTERNAL".into(), message: format!("box supervisor: tokio runtime: {e}") });
            return 1;
        }
    };
    let code = rt.block_on(supervise(config));
    // A blocking QMP wait of a boot that failed may still be polling for a VM that is gone:
    // the box is recorded and reported, so nothing is left to wait for.
    rt.shutdown_background();
    code
}

/// stdin from /dev/null, stderr to `shim.log`; stdout stays the report pipe until [`report`].
fn redirect_stdio(box_dir: &Path) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(super::log(box_dir));
    let null = std::fs::File::open("/dev/null");
    // SAFETY: dup2 onto the standard descriptors; the source files are closed afterwards.
    unsafe {
        if let Ok(null) = &null {
            libc::dup2(null.as_raw_fd(), 0);
        }
        if let Ok(log) = &log {
            libc::dup2(log.as_raw_fd(), 2);
        }
    }
}

/// Writes the one report line, then points stdout at /dev/null: the reader sees EOF.
fn report(r: &Report) {
    let line = serde_json::to_string(r).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto stdout, which nothing else writes to.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
}

/// Resolves when the network helper exits (never, for a box without one), with its pid.
async fn helper_exit(net: &mut Option<NetHelper>) -> (u32, std::io::Result<std::process::ExitStatus>) {
    match net {
        Some(n) => {
            let pid = n.pid();
            (pid, n.wait().await)
        }
        None => std::future::pending().await,
    }
}

/// Why the supervisor is ending the box.
enum End {
    /// The VM process ended by itself.
    VmExited(std::io::Result<std::process::ExitStatus>),
    /// Asked to stop (by a client, the owner's end, the idle limit or a signal).
    Stop { force: bool, reason: Option<String> },
    /// A helper the box needs (its network stack) died: the box is stopped cleanly and failed.
    HelperDied(String),
}

async fn supervise(cfg: ShimConfig) -> i32 {
    let me = std::process::id();
    let state = match State::open(&cfg.db) {
        Ok(s) => s,
        Err(e) => {
            report(&Report::Failed { code: e.code().into(), message: format!("box supervisor: {e}") });
            return 1;
        }
    };
    let record = |status: BoxStatus, u: StatusUpdate| match state.update_if_shim(&cfg.box_id, me, status, u) {
        Ok(done) => done,
        Err(e) => {
            eprintln!("boxlite-shim: recording {status} failed: {e}");
            false
        }
    };
    if let Err(e) = state.update(&cfg.box_id, BoxStatus::Starting, StatusUpdate { shim_pid: Some(me), ..Default::default() }) {
        report(&Report::Failed { code: e.code().into(), message: format!("box supervisor: {e}") });
        return 1;
    }
    // The network helper listens before the VM starts: QEMU connects to it at once.
    let mut net = match &cfg.net {
        None => None,
        Some(spec) => match NetHelper::start(spec, &cfg.box_dir).await {
            Ok(helper) => Some(helper),
            Err(message) => {
                let message = format!("the box's network could not be set up: {message}");
                record(BoxStatus::Failed, StatusUpdate { reason: Some(message.clone()), ..Default::default() });
                let code = if message.contains("in use") { "INVALID_ARGUMENT" } else { "ENGINE" };
                report(&Report::Failed { code: code.into(), message });
                remove_runtime_files(&cfg.box_dir);
                return 1;
            }
        },
    };
    let ports = net.as_ref().map(|n| n.ports.clone()).unwrap_or_default();
    let spawned = Instant::now();
    let mut vm = match spawn_vm(&cfg.vm, &cfg.box_dir, me) {
        Ok(vm) => vm,
        Err(message) => {
            record(BoxStatus::Failed, StatusUpdate { reason: Some(message.clone()), ..Default::default() });
            report(&Report::Failed { code: "ENGINE".into(), message });
            return 1;
        }
    };
    let vm_pid = vm.id().unwrap_or_default();
    let timeout = Duration::from_millis(cfg.ready_timeout_ms);
    let ready = tokio::select! {
        guest = connect_when_ready(&cfg) => guest,
        status = vm.wait() => Err(match status {
            // QEMU exits with a status of its own when the saved state does not load; a signal
            // came from outside.
            Ok(s) if s.code().is_some() => restore_fault(&cfg, format!("the VM process {}", describe(&Ok(s)))),
            _ => format!("the VM process {}", describe(&status)),
        }),
        (pid, status) = helper_exit(&mut net) => Err(format!("the box's network helper (pid {pid}) {}", describe(&status))),
        // A guest restored from a template booted once before it was saved: one that now hangs
        // makes the template suspect.
        _ = tokio::time::sleep(timeout) => Err(template_fault(&cfg, format!("the guest did not answer within {} ms (ready_timeout_ms)", timeout.as_millis()))),
    };
    let listener = ready.and_then(|guest| {
        let sock = super::socket(&cfg.box_dir);
        let _ = std::fs::remove_file(&sock);
        tokio::net::UnixListener::bind(&sock).map(|l| (guest, l)).map_err(|e| format!("cannot listen on {}: {e}", sock.display()))
    });
    let (guest, listener) = match listener {
        Ok(ok) => ok,
        Err(what) => {
            let _ = vm.start_kill();
            let _ = vm.wait().await;
            record(BoxStatus::Failed, StatusUpdate { reason: Some(format!("box failed to boot: {what}")), ..Default::default() });
            report(&Report::Failed { code: "GUEST_BOOT".into(), message: boot_failure(&cfg.box_dir, &what) });
            remove_runtime_files(&cfg.box_dir);
            return 1;
        }
    };
    let boot_ms = spawned.elapsed().as_millis() as u64;
    if let Some(memory) = cfg.vm.incoming.as_deref().filter(|m| m.parent() == Some(cfg.box_dir.as_path())) {
        // Continued from it: the disk moves on from here, so that memory can never be loaded again.
        let _ = std::fs::remove_file(memory);
    }
    let started_at = super::now_millis();
    let running = StatusUpdate { pid: Some(vm_pid), shim_pid: Some(me), started_at: Some(started_at), ports: Some(ports.clone()), ..Default::default() };
    if !record(BoxStatus::Running, running) {
        // The box was removed (or taken over) while it booted: nothing to serve.
        let _ = vm.start_kill();
        let _ = vm.wait().await;
        report(&Report::Failed { code: "NOT_FOUND".into(), message: format!("box {} was removed while it started", cfg.box_id) });
        remove_runtime_files(&cfg.box_dir);
        return 1;
    }
    report(&Report::Ready { shim_pid: me, vm_pid, boot_ms, ports });

    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::unbounded_channel();
    let (ended_tx, ended_rx) = tokio::sync::watch::channel(false);
    let net_control = net.as_ref().map(|n| n.control().to_path_buf());
    let pause = {
        let (db, id) = (cfg.db.clone(), cfg.box_id.clone());
        proxy::Pause::new(
            cfg.vm.qmp_socket.clone(),
            &cfg.box_dir,
            Box::new(move |paused| {
                let status = if paused { BoxStatus::Paused } else { BoxStatus::Running };
                let update = StatusUpdate { pid: Some(vm_pid), shim_pid: Some(me), ..Default::default() };
                State::open(&db).and_then(|s| s.update_if_shim(&id, me, status, update)).unwrap_or(false)
            }),
        )
    };
    let shared = Arc::new(proxy::Shared::new(guest.clone(), stop_tx, ended_rx, me, vm_pid, boot_ms, started_at, net_control, pause));
    tokio::spawn(proxy::serve(listener, shared.clone()));
    if let Some(socket) = cfg.output_socket.clone() {
        let shared = shared.clone();
        tokio::spawn(async move {
            match super::output_lane::Lane::connect(&socket).await {
                Ok(lane) => {
                    let _ = shared.lane.set(lane);
                }
                Err(e) => eprintln!("boxlite-shim: no output lane, commands' output goes over gRPC: {e}"),
            }
        });
    }
    tokio::spawn(keep_clock(shared.clone(), guest.clone()));

    let (Ok(mut sigterm), Ok(mut sigint)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        eprintln!("boxlite-shim: cannot install signal handlers");
        return 1;
    };
    let owner = cfg.owner_pid;
    let end = tokio::select! {
        status = vm.wait() => End::VmExited(status),
        (pid, status) = helper_exit(&mut net) => End::HelperDied(format!("the box's network helper (pid {pid}) {}; the box was stopped", describe(&status))),
        Some(force) = stop_rx.recv() => End::Stop { force, reason: None },
        _ = owner_gone(owner) => End::Stop { force: false, reason: Some(format!("its owner process {} ended", owner.unwrap_or_default())) },
        _ = shared.idle(cfg.auto_stop_ms) => End::Stop {
            force: false,
            reason: Some(format!("it was idle for {} ms (auto_stop_ms)", cfg.auto_stop_ms.unwrap_or_default())),
        },
        _ = sigterm.recv() => End::Stop { force: false, reason: Some("its supervisor got SIGTERM".into()) },
        _ = sigint.recv() => End::Stop { force: false, reason: Some("its supervisor got SIGINT".into()) },
    };
    let (status, reason) = match end {
        End::Stop { .. } if shared.is_suspended() => {
            stop_vm(&mut vm, &guest, true, &cfg, &mut stop_rx).await;
            (BoxStatus::Suspended, None)
        }
        End::VmExited(Ok(s)) if s.success() => (BoxStatus::Stopped, Some("the guest powered off".to_string())),
        End::VmExited(status) => (BoxStatus::Failed, Some(format!("the box's VM process {}", describe(&status)))),
        End::Stop { force, reason } => {
            if !force {
                shared.unpause().await; // a graceful stop needs the agent
            }
            record(BoxStatus::Stopping, StatusUpdate { pid: Some(vm_pid), shim_pid: Some(me), ..Default::default() });
            stop_vm(&mut vm, &guest, force, &cfg, &mut stop_rx).await;
            (BoxStatus::Stopped, reason)
        }
        End::HelperDied(reason) => {
            shared.fail(reason.clone());
            if !shared.is_suspended() {
                shared.unpause().await;
            }
            record(BoxStatus::Stopping, StatusUpdate { pid: Some(vm_pid), shim_pid: Some(me), ..Default::default() });
            stop_vm(&mut vm, &guest, false, &cfg, &mut stop_rx).await;
            (BoxStatus::Failed, Some(reason))
        }
    };
    let recorded = record(status, StatusUpdate { reason, ..Default::default() });
    remove_runtime_files(&cfg.box_dir);
    if cfg.auto_remove && recorded {
        if let Err(e) = state.delete(&cfg.box_id) {
            eprintln!("boxlite-shim: auto_remove: {e}");
        } else {
            let _ = std::fs::remove_dir_all(&cfg.box_dir);
        }
    }
    let _ = ended_tx.send(true);
    // Let Stop replies reach their callers before the process goes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    0
}

/// How often the guest's clock is set to the host's while the box runs: a guest keeps time by
/// its TSC at a rate measured at boot (TCG) or by kvm-clock, with no NTP; this bounds the drift
/// (docs/idle.md). One short call a minute costs an idle box nothing measurable.
const CLOCK_SYNC: Duration = Duration::from_secs(60);
/// Overrides [`CLOCK_SYNC`] (milliseconds), for tests.
const CLOCK_SYNC_ENV: &str = "BOXLITE_CLOCK_SYNC_MS";

/// Sets the guest's clock to the host's every [`CLOCK_SYNC`] (the agent slews small offsets).
async fn keep_clock(shared: Arc<proxy::Shared>, guest: Guest) {
    let every = std::env::var(CLOCK_SYNC_ENV).ok().and_then(|ms| ms.parse().ok()).map(Duration::from_millis).unwrap_or(CLOCK_SYNC);
    loop {
        tokio::time::sleep(every).await;
        if shared.is_paused() || shared.is_suspended() {
            continue; // a resume sets it anyway
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), guest.set_clock()).await;
    }
}

fn describe(status: &std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => super::describe_exit(s),
        Err(e) => format!("could not be waited for: {e}"),
    }
}

/// Spawns the VM process of `vm` (stderr to `box_dir`'s vmm log), which dies with the thread
/// that spawned it and ends itself at once if the process `me` is already gone. Used by the
/// supervisor, and by the runtime for a template's VM.
pub(crate) fn spawn_vm(vm: &VmCommand, box_dir: &Path, me: u32) -> Result<Child, String> {
    let log_path = vmm_log_path(box_dir);
    let vmm_log = std::fs::File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let incoming = match &vm.incoming {
        Some(path) => Some(std::fs::File::open(path).map_err(|e| format!("cannot open the saved memory {}: {e}", path.display()))?),
        None => None,
    };
    let incoming_fd = incoming.as_ref().map(|f| f.as_raw_fd());
    let mut cmd = tokio::process::Command::new(&vm.program);
    cmd.args(&vm.args).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(vmm_log).kill_on_drop(true);
    // SAFETY: prctl and getppid are async-signal-safe. The VM dies with its supervisor (this
    // runtime is single-threaded, so the spawning thread is the process's only one); if the
    // supervisor died before prctl took effect, the VM ends itself at once.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() as u32 != me {
                libc::_exit(1);
            }
            // The memory file, where the VM looks for it (dup2 clears close-on-exec).
            if let Some(fd) = incoming_fd {
                let target = crate::engine::INCOMING_FD;
                if fd == target {
                    libc::fcntl(fd, libc::F_SETFD, 0);
                } else if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("could not start {}: {e}", vm.program.display()));
    drop(incoming);
    child
}

/// Connects to the agent socket as soon as the VM creates it, then waits for the agent to answer.
/// A VM continued from saved memory is first waited for until it runs; the channel handshake
/// then skips what the connection of the VM it was saved from left in the channel.
async fn connect_when_ready(cfg: &ShimConfig) -> Result<Guest, String> {
    let restored = cfg.vm.incoming.is_some();
    if let (true, Some(qmp)) = (restored, cfg.vm.qmp_socket.clone()) {
        let limit = Duration::from_millis(cfg.ready_timeout_ms);
        // A template's state is loaded once the capability it needs is set (`-incoming defer`).
        let deferred = cfg.from_template;
        tokio::task::spawn_blocking(move || super::snapshot::wait_restored(&qmp, limit, deferred))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| restore_fault(cfg, format!("restoring its memory failed: {e}")))?;
    }
    let guest = Guest::wait_agent(&cfg.agent_socket).await;
    // The guest read the RTC at boot, to the second; a restored one has the clock, hostname and
    // RNG state of the VM it was saved from.
    let set = if restored { guest.refresh_identity(&cfg.hostname, cfg.from_template).await } else { guest.set_clock().await };
    match set {
        // Without its disk a box from a template has nothing to run.
        Err(e) if cfg.from_template => Err(template_fault(cfg, format!("the guest could not take its own disk: {e}"))),
        Err(e) => {
            eprintln!("boxlite-shim: setting the guest's clock and identity: {e}");
            Ok(guest)
        }
        Ok(()) => Ok(guest),
    }
}

/// `what` went wrong at boot; for a box restored from a template, named as the template's fault
/// ([`super::TEMPLATE_FAULT`]: the runtime then boots the box cold).
fn template_fault(cfg: &ShimConfig, what: String) -> String {
    match cfg.from_template {
        true => format!("{}: {what}", super::TEMPLATE_FAULT),
        false => what,
    }
}

/// As [`template_fault`], and for a box continuing from its own saved memory, named as the
/// memory's fault ([`super::MEMORY_FAULT`]) when QEMU said it could not load it: not when
/// something else stopped it (its disk) or the load was only slow.
fn restore_fault(cfg: &ShimConfig, what: String) -> String {
    let refused = || log_tail(&vmm_log_path(&cfg.box_dir), 10).contains("load of migration failed");
    if !cfg.from_template && cfg.vm.incoming.is_some() && refused() {
        format!("{}: {what}", super::MEMORY_FAULT)
    } else {
        template_fault(cfg, what)
    }
}

fn boot_failure(box_dir: &Path, what: &str) -> String {
    let mut msg = format!("box failed to boot: {what}");
    let vmm = log_tail(&vmm_log_path(box_dir), 10);
    if !vmm.is_empty() {
        msg.push_str(&format!("\nVM process stderr:\n{vmm}"));
    }
    let console = console_log_path(box_dir);
    let tail = log_tail(&console, CONSOLE_TAIL_LINES);
    msg.push_str(&format!("\nconsole log ({}):\n{}", console.display(), if tail.is_empty() { "(empty)" } else { &tail }));
    msg
}

/// Graceful: the agent syncs and unmounts, the VM powers off. Hard (asked for, or when graceful
/// takes too long, or a forced stop arrives meanwhile): QMP `quit`, then SIGKILL.
async fn stop_vm(
    vm: &mut Child,
    guest: &Guest,
    force: bool,
    cfg: &ShimConfig,
    more: &mut tokio::sync::mpsc::UnboundedReceiver<bool>,
) {
    if !force {
        let graceful = async {
            let _ = tokio::time::timeout(GRACEFUL_STOP, guest.shutdown()).await;
            tokio::time::timeout(GRACEFUL_STOP, vm.wait()).await.is_ok()
        };
        let forced = async {
            while let Some(force) = more.recv().await {
                if force {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        let ended = tokio::select! {
            ended = graceful => ended,
            _ = forced => false,
        };
        if ended {
            return;
        }
    }
    if let Some(qmp) = &cfg.vm.qmp_socket {
        let qmp = qmp.clone();
        let _ = tokio::task::spawn_blocking(move || crate::engine::qmp::command(&qmp, "quit")).await;
        if tokio::time::timeout(Duration::from_secs(2), vm.wait()).await.is_ok() {
            return;
        }
    }
    let _ = vm.start_kill();
    let _ = vm.wait().await;
}

fn remove_runtime_files(box_dir: &Path) {
    for f in super::runtime_files(box_dir) {
        let _ = std::fs::remove_file(f);
    }
}

/// Resolves when the owner process has ended (never for a detached box).
async fn owner_gone(owner: Option<u32>) {
    let Some(pid) = owner else { return std::future::pending().await };
    // SAFETY: pidfd_open returns a new fd (or -1) that we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as i32;
    if fd < 0 {
        return; // already gone (ESRCH)
    }
    // SAFETY: fd is a fresh descriptor owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the fd stays open (owned by the AsyncFd) for as long as it is registered.
    match unsafe { tokio::io::unix::AsyncFd::register(fd) } {
        // A pidfd turns readable when its process exits.
        Ok(fd) => {
            let _ = fd.readable().await;
        }
        Err(e) => {
            eprintln!("boxlite-shim: cannot watch owner {pid}: {e}; polling instead");
            while std::path::Path::new(&format!("/proc/{pid}")).exists() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
