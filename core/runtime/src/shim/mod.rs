//! The box supervisor (`boxlite-shim`): one small process per running box, started by the
//! runtime. It owns the VM process (the only place that reaps it), records the box's status,
//! serves the guest agent to any number of host clients at once on `boxes/<id>/shim.sock`
//! (forwarding their gRPC calls over the VM's one agent channel) and stops the VM cleanly when
//! asked, when its owner process ends (non-detached boxes) or when the box has been idle too long.
//!
//! The runtime side (spawning it, reading its one-line report, talking to it) is in
//! [`client`]; the supervisor itself is [`main`].

pub mod client;
mod net_helper;
mod output_lane;
mod proxy;
pub(crate) mod snapshot;
mod supervisor;

use crate::engine::VmCommand;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use supervisor::main;
pub(crate) use supervisor::spawn_vm;

/// Environment variable naming the `boxlite-shim` binary to use.
pub const SHIM_ENV: &str = "BOXLITE_SHIM";
/// File name of the supervisor binary.
pub const SHIM_BIN: &str = "boxlite-shim";

/// Everything the supervisor needs, written by the runtime to `boxes/<id>/shim.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShimConfig {
    /// The box.
    pub box_id: String,
    /// Its directory (sockets, logs, disk).
    pub box_dir: PathBuf,
    /// The home's state database.
    pub db: PathBuf,
    /// The VM process to run.
    pub vm: VmCommand,
    /// Socket on which the VM exposes the guest agent.
    pub agent_socket: PathBuf,
    /// Socket of the VM's output lane, for an engine that has one.
    #[serde(default)]
    pub output_socket: Option<PathBuf>,
    /// The process whose end stops the box; `None` for a detached box.
    pub owner_pid: Option<u32>,
    /// How long the guest may take to answer.
    pub ready_timeout_ms: u64,
    /// Stop the box after this long without an exec running or starting.
    pub auto_stop_ms: Option<u64>,
    /// Remove the box (record and directory) once it has stopped.
    pub auto_remove: bool,
    /// The box's network helper, started before the VM; `None` for a box without a network.
    pub net: Option<NetHelperSpec>,
    /// The guest's hostname, given again to a box continued from saved memory.
    #[serde(default)]
    pub hostname: String,
    /// The VM continues from a template, saved with no box disk: the agent mounts the box's
    /// disk once restored, and the box fails if it cannot.
    #[serde(default)]
    pub from_template: bool,
}

/// How to start a box's network helper.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetHelperSpec {
    /// The `boxlite-net` binary.
    pub binary: PathBuf,
    /// Its configuration (written to `net.json` beside the box's sockets).
    pub config: crate::net::HelperConfig,
}

/// The supervisor's one-line report to the process that started it (JSON on its stdout).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// The guest answers and the supervisor serves `shim.sock`.
    Ready {
        /// The supervisor's pid.
        shim_pid: u32,
        /// The VM process's pid.
        vm_pid: u32,
        /// Milliseconds from VM spawn to a guest that answered.
        boot_ms: u64,
        /// The published ports, with the host ports that were picked for port 0.
        #[serde(default)]
        ports: Vec<crate::net::PortSpec>,
    },
    /// The box could not be started; `code` is an [`crate::Error`] code name.
    Failed {
        /// Error code name.
        code: String,
        /// What went wrong, with the logs that show it.
        message: String,
    },
}

/// The socket on which a running box's supervisor serves.
pub fn socket(box_dir: &Path) -> PathBuf {
    box_dir.join("shim.sock")
}

/// Begins a boot failure that starting from the box's template caused (its saved state did not
/// load, or the restored guest could not take the box's disk or did not answer), not a kill: the runtime
/// then boots the box cold.
pub const TEMPLATE_FAULT: &str = "starting from its template failed";

/// Begins a boot failure of a box continuing from its own saved memory that the memory caused
/// (QEMU refused to load it), not a kill or a slow machine: a suspended box then boots afresh.
pub const MEMORY_FAULT: &str = "its saved memory did not load";

/// The supervisor's own log.
pub fn log(box_dir: &Path) -> PathBuf {
    box_dir.join("shim.log")
}

/// Files that exist only while a supervisor runs; removed by it on exit, or by whoever
/// reconciles after it died.
pub fn runtime_files(box_dir: &Path) -> [PathBuf; 7] {
    [
        socket(box_dir),
        box_dir.join("agent.sock"),
        box_dir.join("qmp.sock"),
        box_dir.join("shim.json"),
        crate::net::socket(box_dir),
        crate::net::control_socket(box_dir),
        box_dir.join("net.json"),
    ]
}

/// Whether `pid` is alive and is a process of this box (its command line names the box
/// directory), which guards against pid reuse.
pub fn alive(pid: u32, box_dir: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| {
            let needle = box_dir.as_os_str().as_encoded_bytes();
            !needle.is_empty() && cmdline.windows(needle.len()).any(|w| w == needle)
        })
        .unwrap_or(false)
}

/// Unix time in milliseconds (record timestamps, idle accounting).
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// How a process ended, in words a user can act on.
pub fn describe_exit(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (_, Some(sig)) => format!("was killed by signal {sig} ({})", signal_name(sig)),
        _ => status.to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGBUS => "SIGBUS",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exits_are_described_for_users() {
        assert_eq!(describe_exit(&std::process::ExitStatus::from_raw(9)), "was killed by signal 9 (SIGKILL)");
        assert_eq!(describe_exit(&std::process::ExitStatus::from_raw(1 << 8)), "exited with status 1");
    }

    #[test]
    fn reports_round_trip_as_one_json_line() {
        let r = Report::Ready { shim_pid: 1, vm_pid: 2, boot_ms: 3, ports: vec![] };
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n') && line.contains("ready"), "{line}");
        assert!(matches!(serde_json::from_str::<Report>(&line).unwrap(), Report::Ready { vm_pid: 2, .. }));
    }

    #[test]
    fn a_process_of_another_box_is_not_alive_for_this_one() {
        let me = std::process::id();
        assert!(!alive(me, Path::new("/no/such/box/dir")));
        assert!(!alive(u32::MAX, Path::new("/")));
    }
}
