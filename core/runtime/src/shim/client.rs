//! The runtime's side of a box supervisor: find its binary, start it, read its report.

use super::{Report, ShimConfig, SHIM_BIN, SHIM_ENV};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// What a started supervisor reported.
pub struct Started {
    /// The supervisor's pid.
    pub shim_pid: u32,
    /// The VM's pid.
    pub vm_pid: u32,
    /// Milliseconds from VM spawn to a guest that answered.
    pub boot_ms: u64,
    /// The published ports as bound.
    pub ports: Vec<crate::net::PortSpec>,
}

/// The `boxlite-shim` binary (see [`helper_binary`]).
pub fn binary(assets_dirs: &[PathBuf]) -> Result<PathBuf> {
    helper_binary(SHIM_BIN, SHIM_ENV, "the box supervisor", assets_dirs)
}

/// A helper binary of ours (`boxlite-shim`, `boxlite-net`): `$ENV`, else beside the running
/// executable (or one level up, for cargo's test binaries in `deps/`), else in the guest assets
/// directories (the runtime's, then the default ones).
pub fn helper_binary(name: &str, env: &str, what: &str, assets_dirs: &[PathBuf]) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Engine(format!("{env}={} does not exist", path.display())))
        };
    }
    let exe_dir = std::env::current_exe().ok().and_then(|e| std::fs::canonicalize(e).ok()).and_then(|e| e.parent().map(Path::to_path_buf));
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = exe_dir {
        candidates.push(dir.join(name));
        if let Some(up) = dir.parent() {
            candidates.push(up.join(name));
        }
    }
    // The box's own assets dir first, then the default ones (a runtime given a dir of its own
    // kernel still finds the helpers set-up installed).
    let dirs = assets_dirs.iter().cloned().chain(crate::assets::search_dirs().into_iter().filter(|d| !assets_dirs.contains(d)));
    candidates.extend(dirs.map(|d| d.join(name)));
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let searched: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(Error::Engine(format!(
        "{what} binary {name} was not found (looked for {}): run scripts/setup.sh, or set {env}",
        searched.join(", ")
    )))
}

/// Starts the supervisor for `config` and waits for its report: ready, or why the box could not
/// start. `wait` bounds the whole start (the supervisor enforces the guest-ready timeout itself).
pub async fn start(binary: &Path, config: &ShimConfig, wait: Duration) -> Result<Started> {
    let config_path = config.box_dir.join("shim.json");
    let json = serde_json::to_vec(config).map_err(|e| Error::Internal(e.to_string()))?;
    write_private(&config_path, &json)?;
    let mut cmd = std::process::Command::new(binary);
    cmd.arg(&config_path).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe. A session of its own: no terminal signal reaches it.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::Engine(format!("could not start the box supervisor {}: {e}", binary.display())))?;
    let stdout = child.stdout.take().ok_or_else(|| Error::Internal("supervisor stdout missing".into()))?;
    let stdout = tokio::process::ChildStdout::from_std(stdout).map_err(|e| Error::Internal(format!("supervisor stdout: {e}")))?;
    // This process reaps it when it ends, whichever runtime or thread is still around then; if
    // this process ends first (a detached box), the supervisor carries on as an orphan.
    let _ = std::thread::Builder::new().name("boxlite-shim-reaper".into()).spawn(move || child.wait());
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(stdout);
    let read = tokio::time::timeout(wait, reader.read_line(&mut line)).await;
    let log = || crate::engine::log_tail(&super::log(&config.box_dir), 10);
    match read {
        Err(_) => Err(Error::GuestBoot(format!(
            "the box supervisor did not report within {} ms; its log ({}):\n{}",
            wait.as_millis(),
            super::log(&config.box_dir).display(),
            log()
        ))),
        Ok(Err(e)) => Err(Error::Engine(format!("reading the box supervisor's report: {e}"))),
        Ok(Ok(0)) => Err(Error::Engine(format!(
            "the box supervisor {} exited before the box was ready; its log ({}):\n{}",
            binary.display(),
            super::log(&config.box_dir).display(),
            log()
        ))),
        Ok(Ok(_)) => match serde_json::from_str::<Report>(line.trim()) {
            Ok(Report::Ready { shim_pid, vm_pid, boot_ms, ports }) => Ok(Started { shim_pid, vm_pid, boot_ms, ports }),
            Ok(Report::Failed { code, message }) => Err(Error::from_code(&code, message)),
            Err(e) => Err(Error::Engine(format!("the box supervisor sent an unreadable report ({e}): {}", line.trim()))),
        },
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| Error::storage("write", path, e))
}
