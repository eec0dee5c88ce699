//! The box's network helper process (`boxlite-net`), as its supervisor runs it: started before
//! the VM (which connects to it), ended with the supervisor, and asked for stats and policy
//! changes over its control socket (one JSON line each way).

use super::NetHelperSpec;
use crate::net::PortSpec;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};

/// How long the helper may take to bind its sockets and ports.
const READY_WAIT: Duration = Duration::from_secs(10);
/// How long one control request may take.
const CONTROL_WAIT: Duration = Duration::from_secs(5);

/// A running network helper.
pub struct NetHelper {
    child: Child,
    /// Held open: the helper exits when it reads EOF, i.e. when this supervisor is gone,
    /// however it died.
    _stdin: ChildStdin,
    /// The published ports as bound.
    pub ports: Vec<PortSpec>,
    control: PathBuf,
}

/// The helper's first line on stdout.
#[derive(serde::Deserialize)]
struct ReadyLine {
    #[serde(default)]
    ready: bool,
    #[serde(default)]
    ports: Vec<PortSpec>,
    error: Option<String>,
}

/// Traffic counters of the box's network.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize)]
pub struct NetStats {
    /// Bytes from the box to the outside.
    pub bytes_sent: u64,
    /// Bytes from the outside to the box.
    pub bytes_received: u64,
    /// TCP connections the box opened (or that reached it through a published port).
    pub tcp_connections: u64,
}

impl NetHelper {
    /// Starts the helper and waits until it listens (for the VM and on every published port).
    /// A failure (a host port in use, a bad entry) comes back as the helper's own message.
    pub async fn start(spec: &NetHelperSpec, box_dir: &Path) -> Result<Self, String> {
        let config_path = box_dir.join("net.json");
        let json = serde_json::to_vec(&spec.config).map_err(|e| e.to_string())?;
        std::fs::write(&config_path, json).map_err(|e| format!("write {}: {e}", config_path.display()))?;
        for stale in [&spec.config.qemu_socket, &spec.config.control_socket] {
            let _ = std::fs::remove_file(stale);
        }
        let mut cmd = tokio::process::Command::new(&spec.binary);
        cmd.arg("--config").arg(&config_path).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        // SAFETY: prctl is async-signal-safe. Killed with its supervisor, even by SIGKILL.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.kill_on_drop(true).spawn().map_err(|e| format!("could not start the network helper {}: {e}", spec.binary.display()))?;
        let stdin = child.stdin.take().ok_or("network helper stdin missing")?;
        let stdout = child.stdout.take().ok_or("network helper stdout missing")?;
        let mut line = String::new();
        let read = tokio::time::timeout(READY_WAIT, BufReader::new(stdout).read_line(&mut line)).await;
        let ready: ReadyLine = match read {
            Err(_) => return Err(format!("the network helper did not get ready within {} s", READY_WAIT.as_secs())),
            Ok(Err(e)) => return Err(format!("reading the network helper: {e}")),
            Ok(Ok(0)) => {
                let status = child.wait().await.map(|s| super::describe_exit(&s)).unwrap_or_default();
                return Err(format!("the network helper {status} before it was ready (its log is in shim.log)"));
            }
            Ok(Ok(_)) => serde_json::from_str(line.trim()).map_err(|e| format!("the network helper sent an unreadable line ({e}): {}", line.trim()))?,
        };
        if let Some(error) = ready.error.filter(|_| !ready.ready) {
            let _ = child.wait().await;
            return Err(error);
        }
        Ok(NetHelper { child, _stdin: stdin, ports: ready.ports, control: spec.config.control_socket.clone() })
    }

    /// The helper's pid.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// The control socket.
    pub fn control(&self) -> &Path {
        &self.control
    }

    /// Resolves when the helper has exited.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }
}

/// One control request to the helper listening on `control` (a JSON object), and its answer.
pub async fn request(control: &Path, req: serde_json::Value) -> Result<serde_json::Value, String> {
    let ask = async {
        let mut stream = tokio::net::UnixStream::connect(control).await.map_err(|e| format!("network helper unreachable: {e}"))?;
        let mut line = req.to_string();
        line.push('\n');
        stream.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).await.map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_str(answer.trim()).map_err(|e| format!("network helper answered unreadably ({e})"))?;
        match v.get("error").and_then(|e| e.as_str()) {
            Some(e) => Err(e.to_string()),
            None => Ok(v),
        }
    };
    tokio::time::timeout(CONTROL_WAIT, ask).await.unwrap_or_else(|_| Err("the network helper did not answer".into()))
}

/// The box's traffic counters; zeros when it has no network.
pub async fn stats(control: Option<&Path>) -> NetStats {
    match control {
        Some(c) => request(c, serde_json::json!({ "op": "stats" })).await.ok().and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default(),
        None => NetStats::default(),
    }
}
