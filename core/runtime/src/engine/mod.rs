//! VM engines behind one small trait. Each engine turns a [`VmSpec`] into a VM process whose guest
//! agent is reachable on a unix socket; everything else (readiness, RPC, state) is shared.

pub mod qemu;
pub mod qmp;

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Everything an engine needs to start one box's VM.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// vCPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// The box's qcow2 overlay.
    pub disk: PathBuf,
    /// Guest kernel (PVH ELF).
    pub kernel: PathBuf,
    /// Initramfs whose /init is the agent.
    pub initrd: PathBuf,
    /// The box directory: sockets and logs are created here.
    pub box_dir: PathBuf,
    /// Give the VM a NIC, connected to the box's network helper on [`crate::net::socket`].
    pub network: bool,
    /// The guest's hostname.
    pub hostname: String,
    /// Host directories shared into the guest (host paths canonical).
    pub volumes: Vec<crate::options::Volume>,
    /// A memory file to continue from (a suspended box, one restored from a snapshot, or the
    /// device state of a template) instead of booting.
    pub incoming: Option<PathBuf>,
    /// What backs the guest's RAM.
    pub memory: GuestMemory,
}

/// What backs a VM's RAM. Every kind is the one memory backend `ram`, so that memory saved from
/// one kind loads into another.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum GuestMemory {
    /// Anonymous memory (a box booted cold, or continued from its own saved memory).
    #[default]
    Private,
    /// A template being made: RAM is this file, shared, and the guest boots without a box disk
    /// (a placeholder device stands in), to be saved idle with `x-ignore-shared` (device state
    /// only; the RAM stays in the file).
    TemplateSource(PathBuf),
    /// A box restored from a template: the template's RAM file mapped privately, so pages the
    /// box never writes stay shared with every other box restored from it.
    FromTemplate(PathBuf),
}

impl VmSpec {
    /// Unix socket on which the guest agent is reached.
    pub fn agent_socket(&self) -> PathBuf {
        self.box_dir.join("agent.sock")
    }
    /// Unix socket of the output lane (commands' stdout and stderr, `protocol::output_lane`).
    pub fn output_socket(&self) -> PathBuf {
        self.box_dir.join("output.sock")
    }
    /// Guest serial console output.
    pub fn console_log(&self) -> PathBuf {
        console_log_path(&self.box_dir)
    }
    /// The VM process's own stderr.
    pub fn vmm_log(&self) -> PathBuf {
        vmm_log_path(&self.box_dir)
    }
}

/// Guest serial console output of the box in `box_dir`.
pub fn console_log_path(box_dir: &Path) -> PathBuf {
    box_dir.join("console.log")
}

/// The VM process's own stderr, for the box in `box_dir`.
pub fn vmm_log_path(box_dir: &Path) -> PathBuf {
    box_dir.join("vmm.log")
}

/// The box's inbox: a directory the VM shares read-only (9p) and the host writes staged copies
/// into (`runtime::files`), 0700. For a template VM, an empty one of its own.
pub fn inbox_dir(box_dir: &Path) -> PathBuf {
    box_dir.join("inbox")
}

/// Makes the inbox of the box in `box_dir` (0700) if missing, and empty: leftover chunks of
/// copies that ended with the VM. Only for a box whose VM is not running.
pub fn prepare_inbox(box_dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = inbox_dir(box_dir);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => clear_inbox(box_dir).map_err(|e| Error::storage("empty the inbox", &dir, e)),
        Err(e) => Err(Error::storage("create the inbox", &dir, e)),
    }
}

/// Removes every file in the inbox of the box in `box_dir` (only the host ever creates any;
/// unlink follows nothing). A box with no inbox is fine.
pub fn clear_inbox(box_dir: &Path) -> std::io::Result<()> {
    let dir = inbox_dir(box_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        match std::fs::remove_file(entry?.path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The VM process to start for one box: the box supervisor spawns and owns it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct VmCommand {
    /// The VMM binary.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// A QMP socket through which the VM can be told to quit at once (before SIGKILL is used).
    pub qmp_socket: Option<PathBuf>,
    /// A memory file the VM loads instead of booting, handed to it as fd [`INCOMING_FD`].
    #[serde(default)]
    pub incoming: Option<PathBuf>,
}

/// The descriptor on which a VM process finds the memory file it continues from.
pub const INCOMING_FD: i32 = 3;

/// The version of the VM the engines build: its devices and their order, and the guest's command
/// line. Saved memory (snapshots, suspended boxes, warm-start templates) loads only into a VM of
/// the same version, so bump it with any change to them (the guest CPU's features too). 2: the
/// inbox share, the APIC timer. 3: the TCG guest CPU without ERMS/FSRM.
pub const VM_LAYOUT: u32 = 3;

/// A VM engine.
pub trait Engine: Send + Sync {
    /// Short name ("qemu").
    fn name(&self) -> &'static str;
    /// The VM process for `spec`; stale sockets and logs of an earlier run are cleared.
    fn command(&self, spec: &VmSpec) -> Result<VmCommand>;
}

/// Unix socket paths are limited to 107 bytes; say so instead of failing obscurely later.
pub fn check_socket_path(path: &Path) -> Result<()> {
    const MAX: usize = 107;
    let len = path.as_os_str().len();
    if len > MAX {
        return Err(Error::InvalidArgument(format!(
            "socket path {} is {len} bytes, over the {MAX}-byte limit of unix sockets; use a shorter BoxLite home",
            path.display()
        )));
    }
    Ok(())
}

/// The last `max_lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, max_lines: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}
