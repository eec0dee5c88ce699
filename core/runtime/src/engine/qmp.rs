//! A minimal QMP client: one connection, commands in order, file descriptors passed with
//! SCM_RIGHTS (`getfd`), which is how a VM sandboxed with `spawn=deny` is handed a migration
//! file.

use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// One QMP session, capabilities negotiated.
pub struct Qmp {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Qmp {
    /// Connects and negotiates; every reply is awaited for at most `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> io::Result<Qmp> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut qmp = Qmp { writer: stream.try_clone()?, reader: BufReader::new(stream) };
        qmp.read_line()?; // greeting
        qmp.execute("qmp_capabilities", Value::Null)?;
        Ok(qmp)
    }

    fn read_line(&mut self) -> io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "QMP closed the connection"));
        }
        serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("QMP sent {line:?}: {e}")))
    }

    /// Runs `command` and returns its `return` value; a QMP error is an `Other` error with
    /// QEMU's description.
    pub fn execute(&mut self, command: &str, arguments: Value) -> io::Result<Value> {
        let mut msg = json!({ "execute": command });
        if !arguments.is_null() {
            msg["arguments"] = arguments;
        }
        self.writer.write_all(format!("{msg}\n").as_bytes())?;
        self.reply(command)
    }

    fn reply(&mut self, command: &str) -> io::Result<Value> {
        // Asynchronous events come in between; skip them.
        loop {
            let v = self.read_line()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                let desc = e.get("desc").and_then(Value::as_str).unwrap_or("unknown error");
                return Err(io::Error::other(format!("QMP {command}: {desc}")));
            }
        }
    }

    /// Hands `fd` to QEMU under `name` (QMP `getfd`, the fd riding on the command's bytes).
    pub fn send_fd(&mut self, name: &str, fd: RawFd) -> io::Result<()> {
        let msg = format!("{}\n", json!({ "execute": "getfd", "arguments": { "fdname": name } }));
        let fds = [fd];
        let iov = [io::IoSlice::new(msg.as_bytes())];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        let sent = nix::sys::socket::sendmsg::<()>(self.writer.as_raw_fd(), &iov, &cmsg, nix::sys::socket::MsgFlags::empty(), None)
            .map_err(io::Error::from)?;
        if sent != msg.len() {
            return Err(io::Error::other("QMP getfd: short write"));
        }
        self.reply("getfd").map(|_| ())
    }

    /// Polls `query-migrate` until the migration completes (its status then), fails (an error
    /// with QEMU's reason) or `limit` passes.
    pub fn wait_migration(&mut self, limit: Duration) -> io::Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let info = self.execute("query-migrate", Value::Null)?;
            match info.get("status").and_then(Value::as_str).unwrap_or("") {
                "completed" => return Ok(info),
                "failed" | "cancelled" => {
                    let why = info.get("error-desc").and_then(Value::as_str).unwrap_or("no reason given");
                    return Err(io::Error::other(format!("the memory snapshot failed: {why}")));
                }
                _ if Instant::now() >= deadline => {
                    let _ = self.execute("migrate_cancel", Value::Null);
                    return Err(io::Error::new(io::ErrorKind::TimedOut, format!("the memory snapshot took over {} s", limit.as_secs())));
                }
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// The VM's run state (`running`, `paused`, `inmigrate`, `postmigrate`, ...).
    pub fn run_state(&mut self) -> io::Result<String> {
        let s = self.execute("query-status", Value::Null)?;
        Ok(s.get("status").and_then(Value::as_str).unwrap_or("").to_string())
    }
}

/// Runs one command without arguments on a fresh connection; a `quit` that closes the socket
/// before replying counts as done.
pub fn command(socket: &Path, command: &str) -> io::Result<Value> {
    let mut qmp = Qmp::connect(socket, Duration::from_secs(2))?;
    match qmp.execute(command, Value::Null) {
        Err(e) if command == "quit" && e.kind() == io::ErrorKind::UnexpectedEof => Ok(Value::Null),
        r => r,
    }
}
