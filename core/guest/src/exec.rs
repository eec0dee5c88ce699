//! One command inside the box: spawn chrooted into the rootfs, stream its output, feed its stdin,
//! deliver signals, enforce its timeout, report how it ended.

use crate::init::ROOTFS;
use crate::output_lane;
use crate::port::FdStream;
use crate::spawn;
use crate::user::{self, Identity};
use boxlite_protocol::v1::{exec_input, exec_output, ExecExit, ExecInput, ExecOutput, ExecStart, ExecStarted, SpawnFailure, WindowSize};
use boxlite_protocol::output_lane::Kind;
use boxlite_protocol::MAX_CHUNK_BYTES;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

type Outbound = mpsc::Sender<Result<ExecOutput, Status>>;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// After the command exits, how long to keep draining output held open by its background children.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

fn out(kind: exec_output::Kind) -> Result<ExecOutput, Status> {
    Ok(ExecOutput { kind: Some(kind), ..Default::default() })
}

fn spawn_failed(failure: SpawnFailure, message: String) -> Result<ExecOutput, Status> {
    Ok(ExecOutput { kind: Some(exec_output::Kind::SpawnError(message)), spawn_failure: failure.into() })
}

/// What a command is started with (checked and resolved in the box before anything starts).
struct Prepared {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: CString,
    id: Identity,
}

fn prepare(start: &ExecStart) -> Result<Prepared, String> {
    start.argv.first().filter(|p| !p.is_empty()).ok_or("empty command")?;
    let read = |p: &str| std::fs::read_to_string(format!("{ROOTFS}{p}")).unwrap_or_default();
    let id = user::resolve(&start.user, &read("/etc/passwd"), &read("/etc/group"))?;
    let cwd = if start.cwd.is_empty() { "/" } else { start.cwd.as_str() };
    check_cwd(ROOTFS, cwd)?;
    let mut env: Vec<(String, String)> = Vec::new();
    for entry in start.env.iter().map(String::as_str).chain([DEFAULT_PATH]) {
        let (k, v) = entry.split_once('=').ok_or_else(|| format!("environment entry '{entry}' is not KEY=VALUE"))?;
        if !env.iter().any(|(key, _)| key == k) {
            env.push((k.to_string(), v.to_string()));
        }
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), id.home.clone()));
    }
    Ok(Prepared { argv: start.argv.clone(), env, cwd: CString::new(cwd).map_err(|e| e.to_string())?, id })
}

/// The working directory must be an absolute path to a directory of the box rootfs at `root`.
fn check_cwd(root: &str, cwd: &str) -> Result<(), String> {
    if !cwd.starts_with('/') {
        return Err(format!("working directory '{cwd}' must be an absolute path"));
    }
    match std::fs::metadata(format!("{root}{cwd}")) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("working directory '{cwd}' is not a directory in the box")),
        Err(_) => Err(format!("working directory '{cwd}' does not exist in the box")),
    }
}

/// Kills the command's whole process group (it is a session leader).
fn signal_group(pid: u32, signal: i32) {
    // SAFETY: kill with a negative pid signals the process group; no memory involved.
    unsafe { libc::kill(-(pid as i32), signal) };
}

fn command(p: &Prepared, tty: bool) -> std::io::Result<spawn::Command> {
    spawn::Command::new(&p.argv, &p.env, ROOTFS, p.cwd.clone(), p.id.uid, p.id.gid, &p.id.groups, tty)
}

fn spawn_error(argv0: &str, e: &std::io::Error) -> (SpawnFailure, String) {
    match e.kind() {
        std::io::ErrorKind::NotFound => (SpawnFailure::NotFound, format!("command '{argv0}' not found in the box")),
        std::io::ErrorKind::PermissionDenied => {
            (SpawnFailure::NotExecutable, format!("command '{argv0}' is not executable (permission denied)"))
        }
        _ if e.raw_os_error() == Some(libc::ENOEXEC) => {
            (SpawnFailure::NotExecutable, format!("command '{argv0}' is not executable (not a program the box can run)"))
        }
        _ => (SpawnFailure::Unspecified, format!("could not start '{argv0}': {e}")),
    }
}

/// Streams everything `reader` yields as chunks built by `wrap`, until EOF or the host goes away.
async fn pump<R: AsyncRead + Unpin>(mut reader: R, tx: Outbound, wrap: fn(Vec<u8>) -> exec_output::Kind) {
    // Small at first (most commands print little, and a big buffer is an mmap and munmap per
    // exec, which an emulated guest pays for), doubled up to a chunk while reads fill it. Each
    // read lands in the chunk sent (every copy of the bytes counts under emulation).
    let mut size = 64 * 1024;
    loop {
        let mut data = Vec::with_capacity(size);
        match reader.read_buf(&mut data).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if n == size && size < MAX_CHUNK_BYTES {
                    size *= 2;
                } else if n < size / 4 {
                    data.shrink_to_fit(); // a line queued behind a slow host holds no 64 KiB
                }
                if tx.send(out(wrap(data))).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Runs one exec to completion. `inbound` carries stdin/signals after the start message.
/// `lane`: the output lane and the call's id on it, where the host serves one; a command without
/// a terminal then sends its stdout and stderr there.
pub async fn run(start: ExecStart, lane: Option<(std::sync::Arc<output_lane::Lane>, u32)>, mut inbound: Streaming<ExecInput>, tx: Outbound) {
    let prepared = match prepare(&start) {
        Ok(p) => p,
        Err(msg) => {
            let _ = tx.send(spawn_failed(SpawnFailure::BadRequest, msg)).await;
            return;
        }
    };
    let mut stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>;
    let mut readers = tokio::task::JoinSet::new();
    let spawned = command(&prepared, start.tty).and_then(|cmd| if start.tty { pty_spawn(&cmd, start.window.as_ref()) } else { pipe_spawn(&cmd) });
    let (mut child, stdio) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            let (failure, message) = spawn_error(&prepared.argv[0], &e);
            let _ = tx.send(spawn_failed(failure, message)).await;
            return;
        }
    };
    let pid = child.id();
    // A second handle on the PTY master, for resizes while the stream halves are in use.
    let terminal = match &stdio {
        Stdio::Terminal(master) => master.try_clone_fd().ok(),
        Stdio::Pipes { .. } => None,
    };
    let lane = lane.filter(|_| matches!(stdio, Stdio::Pipes { .. }));
    // Pumps on the lane are never aborted (a frame cut short would put the lane out of step):
    // dropping `stop` ends them between frames.
    let (stop, stopped) = tokio::sync::watch::channel(());
    let mut lane_pumps = Vec::new();
    // `started` goes out before any output: the host treats anything else first as a protocol error.
    if tx.send(out(exec_output::Kind::Started(ExecStarted { pid, output_lane: lane.is_some() }))).await.is_err() {
        signal_group(pid, libc::SIGKILL);
    }
    match stdio {
        Stdio::Terminal(master) => {
            let (r, w) = tokio::io::split(master);
            readers.spawn(pump(r, tx.clone(), exec_output::Kind::Stdout));
            stdin = Some(Box::new(w));
        }
        Stdio::Pipes { stdin: input, stdout, stderr } => {
            match &lane {
                Some((lane, id)) => {
                    lane.register(*id);
                    for (pipe, kind) in [(stdout, Kind::Stdout), (stderr, Kind::Stderr)] {
                        if let Ok(fd) = pipe.into_nonblocking_fd() {
                            lane_pumps.push(tokio::spawn(lane.clone().pump(*id, kind, fd, stopped.clone())));
                        }
                    }
                }
                None => {
                    readers.spawn(pump(stdout, tx.clone(), exec_output::Kind::Stdout));
                    readers.spawn(pump(stderr, tx.clone(), exec_output::Kind::Stderr));
                }
            }
            stdin = Some(Box::new(input));
        }
    }

    let timeout = async {
        match start.timeout_ms {
            0 => std::future::pending().await,
            ms => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
    };
    tokio::pin!(timeout);
    let mut timed_out = false;
    let mut inbound_open = true;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = &mut timeout, if !timed_out => {
                timed_out = true;
                signal_group(pid, libc::SIGKILL);
            }
            _ = tx.closed() => {
                // The host dropped the exec: nobody will read the output, so stop the command.
                signal_group(pid, libc::SIGKILL);
                let _ = child.wait().await;
                if let Some((lane, id)) = &lane {
                    lane.forget(*id);
                }
                return;
            }
            msg = inbound.message(), if inbound_open => match msg {
                Ok(Some(ExecInput { kind: Some(kind) })) => match kind {
                    exec_input::Kind::Stdin(data) => {
                        if let Some(w) = stdin.as_mut() {
                            if w.write_all(&data).await.is_err() {
                                stdin = None;
                            }
                        }
                    }
                    exec_input::Kind::CloseStdin(_) => stdin = None,
                    exec_input::Kind::Signal(s) if (1..=64).contains(&s.signal) => signal_group(pid, s.signal),
                    exec_input::Kind::Resize(size) => {
                        if let Some(fd) = &terminal {
                            // SAFETY: TIOCSWINSZ on a PTY master we own, with a valid winsize.
                            unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &winsize(Some(&size))) };
                        }
                    }
                    _ => {}
                },
                Ok(Some(ExecInput { kind: None })) => {}
                // The host half-closed its side: that only means no more stdin.
                Ok(None) | Err(_) => { inbound_open = false; stdin = None; }
            },
        }
    };
    drop(stdin);
    let mut lane_frames = 0;
    let drained = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
        while readers.join_next().await.is_some() {}
        while let Some(p) = lane_pumps.last_mut() {
            lane_frames += p.await.unwrap_or(0);
            lane_pumps.pop();
        }
    })
    .await;
    if drained.is_err() {
        readers.abort_all();
        drop(stop);
        for p in lane_pumps {
            lane_frames += p.await.unwrap_or(0);
        }
    }
    if let Some((lane, id)) = &lane {
        lane.forget(*id);
    }
    let exit = match status {
        Ok(st) => ExecExit { code: st.code(), signal: st.signal(), timed_out, output_lane_frames: lane_frames },
        Err(_) => ExecExit { code: None, signal: None, timed_out, output_lane_frames: lane_frames },
    };
    let _ = tx.send(out(exec_output::Kind::Exit(exit))).await;
}

/// The terminal size asked for, 24x80 where unset; values past u16 are clamped.
fn winsize(size: Option<&WindowSize>) -> nix::pty::Winsize {
    let dim = |v: u32, default: u16| if v == 0 { default } else { v.min(u16::MAX as u32) as u16 };
    let (rows, cols) = size.map_or((0, 0), |s| (s.rows, s.cols));
    nix::pty::Winsize { ws_row: dim(rows, 24), ws_col: dim(cols, 80), ws_xpixel: 0, ws_ypixel: 0 }
}

/// The agent's ends of a started command's stdio.
enum Stdio {
    /// A PTY master: the command's input and its output, both streams in one.
    Terminal(FdStream),
    Pipes { stdin: pipe::Sender, stdout: pipe::Receiver, stderr: pipe::Receiver },
}

/// Spawns with pipes as stdin/stdout/stderr.
fn pipe_spawn(cmd: &spawn::Command) -> std::io::Result<(spawn::Child, Stdio)> {
    let (stdin_r, stdin_w) = spawn::pipe()?;
    let (stdout_r, stdout_w) = spawn::pipe()?;
    let (stderr_r, stderr_w) = spawn::pipe()?;
    // Pipes as big as a chunk: a command writing fast fills a chunk per read, not 64 KiB.
    for fd in [stdout_w.as_raw_fd(), stderr_w.as_raw_fd()] {
        // SAFETY: F_SETPIPE_SZ on a pipe we own; a failure leaves the default size.
        unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, MAX_CHUNK_BYTES as libc::c_int) };
    }
    let child = cmd.spawn([stdin_r.as_raw_fd(), stdout_w.as_raw_fd(), stderr_w.as_raw_fd()])?;
    let stdio = Stdio::Pipes {
        stdin: pipe::Sender::from_owned_fd(stdin_w)?,
        stdout: pipe::Receiver::from_owned_fd(stdout_r)?,
        stderr: pipe::Receiver::from_owned_fd(stderr_r)?,
    };
    Ok((child, stdio))
}

/// Spawns with a new PTY as stdin/stdout/stderr.
fn pty_spawn(cmd: &spawn::Command, size: Option<&WindowSize>) -> std::io::Result<(spawn::Child, Stdio)> {
    let pty = nix::pty::openpty(Some(&winsize(size)), None)
        .map_err(|e| std::io::Error::other(format!("cannot allocate a terminal: {e}")))?;
    let slave = pty.slave.as_raw_fd();
    let child = cmd.spawn([slave; 3])?;
    // The command holds the slave now: ours closes here, so the master sees EOF when it ends.
    drop(pty.slave);
    Ok((child, Stdio::Terminal(FdStream::from_fd(pty.master)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_working_directory_must_be_an_existing_directory() {
        let root = std::env::temp_dir().join(format!("boxlite-guest-cwd-{}", std::process::id()));
        std::fs::create_dir_all(root.join("dir")).unwrap();
        std::fs::write(root.join("file"), "").unwrap();
        let root_str = root.to_str().unwrap();
        assert_eq!(check_cwd(root_str, "/dir"), Ok(()));
        assert_eq!(check_cwd(root_str, "/file"), Err("working directory '/file' is not a directory in the box".into()));
        assert_eq!(check_cwd(root_str, "/gone"), Err("working directory '/gone' does not exist in the box".into()));
        assert_eq!(check_cwd(root_str, "dir"), Err("working directory 'dir' must be an absolute path".into()));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn spawn_errors_name_the_command_and_say_why() {
        let e = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(spawn_error("nosuch", &e), (SpawnFailure::NotFound, "command 'nosuch' not found in the box".into()));
        let e = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(spawn_error("/etc/passwd", &e).0, SpawnFailure::NotExecutable);
        let e = std::io::Error::from_raw_os_error(libc::ENOEXEC);
        assert_eq!(spawn_error("./script", &e).0, SpawnFailure::NotExecutable);
        let e = std::io::Error::from_raw_os_error(libc::ENOMEM);
        assert_eq!(spawn_error("big", &e).0, SpawnFailure::Unspecified);
    }
}
