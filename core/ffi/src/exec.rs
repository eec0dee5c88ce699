//! `boxlite_exec`: one command running in a box. Its output is pulled by the caller.
//!
//! Each output stream is pumped by a background task into a buffer of its own, bounded in bytes
//! (`BUFFER_BYTES`), so a caller may read stdout to the end while stderr collects, and a guest
//! that writes without end cannot grow host memory past the bound: once a buffer is full the
//! command stalls until the caller reads (pipe semantics).
//!
//! An event loop (asyncio, epoll, libuv) waits for an exec without a thread per call: the exec's
//! notify fd (`boxlite_exec_notify_fd`) becomes readable whenever output arrives, a stream ends
//! or the command ends, and reads and waits with a zero timeout then take what is there.

use crate::args::{free_handle, handle, options, out_param, string, timeout};
use crate::boxes::boxlite_box;
use crate::error::{boundary, boxlite_result, Failure};
use crate::runtime::{lock, Context};
use boxlite::{ExecCommand, ExecControl, ExitStatus, OutputStream, Stdin};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_int};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};

/// Which output stream of a command `boxlite_exec_read` reads.
pub type boxlite_stream = c_int;
/// The command's standard output.
pub const BOXLITE_STDOUT: boxlite_stream = 1;
/// The command's standard error (empty for TTY execs, whose stderr merges into stdout).
pub const BOXLITE_STDERR: boxlite_stream = 2;

/// Bytes buffered per output stream before the command stalls waiting for the caller to read.
const BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// A running (or finished) command. Made by `boxlite_box_exec`, freed by `boxlite_exec_free`.
/// Its functions may be called from several threads at once: e.g. one thread reads stdout,
/// another stderr, a third waits or kills.
pub struct boxlite_exec {
    ctx: Arc<Context>,
    stdout: Mutex<OutputBuffer>,
    stderr: Mutex<OutputBuffer>,
    /// None once closed.
    stdin: Mutex<Option<Stdin>>,
    control: ExecControl,
    /// Set once, when the command ends.
    status: watch::Receiver<Option<Result<ExitStatus, Failure>>>,
    /// The reading end of the notifier's socket pair: the fd of `boxlite_exec_notify_fd`.
    notify_fd: UnixStream,
}

/// Wakes whoever waits on the exec's notify fd: one byte per event on a non-blocking socket.
/// A full socket buffer drops the byte, which loses nothing: the fd is readable already.
#[derive(Clone)]
pub(crate) struct Notifier(Arc<UnixStream>);

impl Notifier {
    /// The notifier and the reading end its bytes arrive at, both non-blocking.
    pub(crate) fn pair() -> std::io::Result<(Notifier, UnixStream)> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok((Notifier(Arc::new(tx)), rx))
    }

    pub(crate) fn notify(&self) {
        let _ = (&*self.0).write(&[1]);
    }
}

/// The reading end of one stream's buffer.
struct OutputBuffer {
    chunks: mpsc::UnboundedReceiver<Vec<u8>>,
    /// Free bytes of the buffer: the pump takes them for each chunk, the reader gives them back.
    room: Arc<Semaphore>,
    /// The chunk being read, and how far.
    chunk: Vec<u8>,
    offset: usize,
}

/// Buffer bytes a chunk occupies. Chunks are at most 512 KiB (the runtime drops bigger ones), far
/// under the buffer size; the clamp only guarantees a chunk always fits.
fn room_for(chunk: &[u8]) -> u32 {
    chunk.len().min(BUFFER_BYTES) as u32
}

impl OutputBuffer {
    /// Starts the pump of `stream`, which notifies `notifier` of each chunk and of the end; must
    /// run inside the tokio runtime.
    fn pump(mut stream: OutputStream, notifier: Notifier) -> Self {
        let (tx, chunks) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(BUFFER_BYTES));
        let pump_room = room.clone();
        tokio::spawn(async move {
            while let Some(chunk) = stream.next().await {
                if chunk.is_empty() {
                    continue; // an empty read would look like end of stream
                }
                // Closed when the reader is freed: stop and let the runtime discard the rest.
                let Ok(permit) = pump_room.acquire_many(room_for(&chunk)).await else { break };
                permit.forget();
                if tx.send(chunk).is_err() {
                    break;
                }
                notifier.notify();
            }
            drop(tx); // before the notification, so that a reader woken by it sees the end
            notifier.notify();
        });
        OutputBuffer { chunks, room, chunk: Vec::new(), offset: 0 }
    }

    /// Copies the next bytes into `buf` (non-empty); 0 means end of stream. Cancel-safe.
    async fn read(&mut self, buf: &mut [u8]) -> usize {
        if self.chunk.is_empty() {
            match self.chunks.recv().await {
                Some(chunk) => (self.chunk, self.offset) = (chunk, 0),
                None => return 0,
            }
        }
        let n = buf.len().min(self.chunk.len() - self.offset);
        buf[..n].copy_from_slice(&self.chunk[self.offset..self.offset + n]);
        self.offset += n;
        if self.offset == self.chunk.len() {
            self.room.add_permits(room_for(&self.chunk) as usize);
            self.chunk = Vec::new();
        }
        n
    }
}

impl Drop for OutputBuffer {
    fn drop(&mut self) {
        self.room.close();
    }
}

/// `options_json` of `boxlite_box_exec`.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ExecConfig {
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    user: Option<String>,
    timeout_ms: Option<u64>,
    tty: bool,
}

/// Runs a command in the box, booting the box first if it is not running.
///
/// `b`: the box. `argv`: `argc` NUL-terminated UTF-8 strings, program first (looked up in the
/// box's PATH); `argc` >= 1. The strings are copied; the caller keeps ownership.
/// `options_json`: NULL for every default, or a JSON object with any of `"env"` (`{"KEY":
/// "value"}` over the box's), `"cwd"` (over the box's working directory), `"user"` (name or uid,
/// resolved in the box), `"timeout_ms"` (the guest kills the command after this long; `wait`
/// then reports `timed_out`), `"tty"` (true: run on a pseudo-terminal, stderr merges into
/// stdout). Unknown keys are rejected.
/// `out`: receives the exec handle on success (untouched on failure); free it with
/// `boxlite_exec_free`.
///
/// Errors: `BOXLITE_ERR_INVALID_ARGUMENT` (empty argv, bad option, or the command could not start:
/// not found, bad cwd or user; the message names it), `BOXLITE_ERR_NOT_FOUND` (box removed), boot
/// errors as `boxlite_box_start`. A command that starts and exits non-zero is a success here; its
/// code comes from `boxlite_exec_wait`. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; `argv` is NULL or points at `argc` pointers, each NULL or
/// NUL-terminated; `options_json` is NULL or NUL-terminated; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_exec(
    b: *mut boxlite_box,
    argv: *const *const c_char,
    argc: usize,
    options_json: *const c_char,
    out: *mut *mut boxlite_exec,
) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        if argv.is_null() {
            return Err(Failure::new(boxlite_result::BOXLITE_ERR_NULL_POINTER, "argument `argv` is NULL"));
        }
        if argc == 0 {
            return Err(Failure::invalid("argc is 0: give at least the program to run"));
        }
        // SAFETY: argv points at argc pointers per the contract.
        let pointers = unsafe { std::slice::from_raw_parts(argv, argc) };
        let argv = pointers
            .iter()
            .enumerate()
            // SAFETY: each entry is NULL or NUL-terminated per the contract.
            .map(|(i, &arg)| unsafe { string(arg, &format!("argv[{i}]")) }.map(str::to_string))
            .collect::<Result<Vec<_>, _>>()?;
        let config: ExecConfig = unsafe { options(options_json, "options_json")? };
        let out = unsafe { out_param(out, "out")? };
        let command = ExecCommand {
            argv,
            env: config.env.into_iter().collect(),
            cwd: config.cwd,
            user: config.user,
            timeout: config.timeout_ms.map(Duration::from_millis),
            tty: config.tty,
            tty_size: None,
        };
        let (notifier, notify_fd) = Notifier::pair()
            .map_err(|e| Failure::new(boxlite_result::BOXLITE_ERR_INTERNAL, format!("cannot make the exec's notify fd: {e}")))?;
        let lite = b.lite.clone();
        let exec = b.ctx.run(async move {
            let mut execution = lite.exec(command).await?;
            let (Some(stdout), Some(stderr), Some(stdin)) = (execution.stdout.take(), execution.stderr.take(), execution.stdin.take())
            else {
                return Err(boxlite::Error::Internal("a new execution lacks its streams".into()));
            };
            let control = execution.control();
            let (status_tx, status) = watch::channel(None);
            let (stdout, stderr) = (OutputBuffer::pump(stdout, notifier.clone()), OutputBuffer::pump(stderr, notifier.clone()));
            tokio::spawn(async move {
                let _ = status_tx.send(Some(execution.wait().await.map_err(Failure::from)));
                notifier.notify();
            });
            Ok((stdout, stderr, stdin, control, status))
        })?;
        b.ctx.set_booted(b.lite.id(), true);
        let (stdout, stderr, stdin, control, status) = exec;
        *out = Box::into_raw(Box::new(boxlite_exec {
            ctx: b.ctx.clone(),
            stdout: Mutex::new(stdout),
            stderr: Mutex::new(stderr),
            stdin: Mutex::new(Some(stdin)),
            control,
            status,
            notify_fd,
        }));
        Ok(())
    })
}

/// Reads the command's output as it arrives (pull-based).
///
/// `stream`: `BOXLITE_STDOUT` or `BOXLITE_STDERR`. `buf`: `len` (> 0) writable bytes.
/// `timeout_ms`: how long to wait for output; negative waits without limit, 0 only takes what is
/// already buffered. `n`: on success, the number of bytes written to `buf` (1..len), or 0 at end
/// of stream (the command ended and everything was read).
///
/// Each stream is buffered up to 8 MiB while nobody reads it, so reading stdout to the end while
/// a smaller stderr collects is safe; a command that writes more than that to a stream nobody
/// reads stalls until it is read. To read both streams without limits, use one thread per stream
/// or alternate with short timeouts.
///
/// Errors: `BOXLITE_ERR_TIMEOUT` (no output within `timeout_ms`; call again),
/// `BOXLITE_ERR_INVALID_ARGUMENT` (bad `stream` or `len` 0). Reads of the same stream from several
/// threads take turns; the two streams may be read at the same time.
///
/// # Safety
/// `exec` is NULL or a live exec handle; `buf` is NULL or valid for `len` bytes of writes; `n` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_exec_read(
    exec: *mut boxlite_exec,
    stream: boxlite_stream,
    buf: *mut u8,
    len: usize,
    timeout_ms: c_int,
    n: *mut usize,
) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let exec = unsafe { handle(exec, "exec")? };
        let n = unsafe { out_param(n, "n")? };
        if buf.is_null() {
            return Err(Failure::new(boxlite_result::BOXLITE_ERR_NULL_POINTER, "argument `buf` is NULL"));
        }
        if len == 0 {
            return Err(Failure::invalid("len is 0: give a buffer of at least one byte"));
        }
        let (output, name) = match stream {
            BOXLITE_STDOUT => (&exec.stdout, "stdout"),
            BOXLITE_STDERR => (&exec.stderr, "stderr"),
            other => return Err(Failure::invalid(format!("stream {other} is not BOXLITE_STDOUT (1) or BOXLITE_STDERR (2)"))),
        };
        // SAFETY: buf is valid for len bytes per the contract.
        let buf = unsafe { std::slice::from_raw_parts_mut(buf, len) };
        let mut output = lock(output);
        *n = exec.ctx.wait_for(timeout(timeout_ms), &format!("reading {name}"), output.read(buf))?;
        Ok(())
    })
}

/// Writes bytes to the command's stdin. Blocks until the guest accepts them (backpressure).
///
/// `data`: `len` bytes, copied. Errors: `BOXLITE_ERR_INVALID_STATE` (stdin was closed, or the
/// command has ended). Any thread; writes from several threads take turns.
///
/// # Safety
/// `exec` is NULL or a live exec handle; `data` is NULL or valid for `len` bytes of reads.
#[no_mangle]
pub unsafe extern "C" fn boxlite_exec_write_stdin(exec: *mut boxlite_exec, data: *const u8, len: usize) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let exec = unsafe { handle(exec, "exec")? };
        if data.is_null() {
            return Err(Failure::new(boxlite_result::BOXLITE_ERR_NULL_POINTER, "argument `data` is NULL"));
        }
        let data = unsafe { std::slice::from_raw_parts(data, len) };
        let stdin = lock(&exec.stdin).clone();
        let stdin = stdin.ok_or_else(|| Failure::new(boxlite_result::BOXLITE_ERR_INVALID_STATE, "stdin is closed"))?;
        exec.ctx.wait_for(None, "writing stdin", stdin.write(data))?.map_err(Failure::from)
    })
}

/// Closes the command's stdin: it reads end of file. Closing again, or after the command ended, is
/// a no-op. Any thread.
///
/// # Safety
/// `exec` is NULL or a live exec handle.
#[no_mangle]
pub unsafe extern "C" fn boxlite_exec_close_stdin(exec: *mut boxlite_exec) -> boxlite_result {
    boundary(|| {
        // SAFETY: forwarded from this function's contract.
        let exec = unsafe { handle(exec, "exec")? };
        if let Some(stdin) = lock(&exec.stdin).take() {
            // It fails only when the command has ended, and then there is nothing left to close.
            let _ = exec.ctx.wait_for(None, "closing stdin", stdin.close())?;
        }
        Ok(())
    })
}

/// Sends a signal to the command and its process group.
///
/// `signal`: 1-64 (e.g. 15 for SIGTERM). Errors: `BOXLITE_ERR_INVALID_ARGUMENT` (bad number),
/// `BOXLITE_ERR_INVALID_STATE` (the command has ended). Any thread, also while another waits.
///
/// # Safety
/// `exec` is NULL or a live exec handle.
#[no_mangle]
pub unsafe extern "C" fn boxlite_exec_signal(exec: *mut boxlite_exec, signal: c_int) -> boxlite_result {
    boundary(|| {
        // SAFETY: forwarded from this function's contract.
        let exec = unsafe { handle(exec, "exec")? };
        exec.ctx.wait_for(None, "signalling", exec.control.signal(signal))?.map_err(Failure::from)
    })
}

/// Resizes the command's terminal to `rows` x `cols` (1-65535 each); its foreground process
/// group gets SIGWINCH. A TTY command's terminal starts at 24x80.
///
/// Errors: `BOXLITE_ERR_INVALID_ARGUMENT` (a size out of range), `BOXLITE_ERR_INVALID_STATE`
/// (the command has no terminal, or has ended). Any thread.
///
/// # Safety
/// `exec` is NULL or a live exec handle.
#[no_mangle]
pub unsafe extern "C" fn boxlite_exec_resize_tty(exec: *mut boxlite_exec, rows: u32, cols: u32) -> boxlite_result {
    boundary(|| {
        // SAFETY: forwarded from this function's contract.
        let exec = unsafe { handle(exec, "exec")? };
        exec.ctx.wait_for(None, "resizing the terminal", exec.control.resize_tty(rows, cols))?.map_err(Failure::from)
    })
}

/// Kills the command (SIGKILL, 9); `boxlite_exec_signal(exec, 9)`.
///
/// # Safety
/// `exec` is NULL or a live exec handle.
#[no_mangle]
pub unsafe extern "C" fn boxlite_exec_kill(exec: *mut boxlite_exec) -> boxlite_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { boxlite_exec_signal(exec, 9) }
}

/// Waits for the command to end. May be called again: it reports the same status.
///
/// `timeout_ms`: negative waits without limit. On success: `exit_code` gets the exit code, or
/// 128 + the signal number when a signal ended it (shell convention); `signal` gets that signal
/// number, or 0; `timed_out` whether the guest killed it because its `timeout_ms` option passed.
///
/// Output the caller has not read stays buffered (up to 8 MiB per stream, see
/// `boxlite_exec_read`); a command that writes more than that never ends until it is read, so
/// read both streams to the end first when output may be large.
///
/// Errors: `BOXLITE_ERR_TIMEOUT` (still running after `timeout_ms`; call again),
/// `BOXLITE_ERR_GUEST` (the connection to the guest was lost, e.g. the box stopped). Any thread,
/// also while others read or signal.
///
/// # Safety
/// `exec` is NULL or a live exec handle; the out-pointers are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_exec_wait(
    exec: *mut boxlite_exec,
    timeout_ms: c_int,
    exit_code: *mut c_int,
    signal: *mut c_int,
    timed_out: *mut bool,
) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let exec = unsafe { handle(exec, "exec")? };
        let exit_code = unsafe { out_param(exit_code, "exit_code")? };
        let signal = unsafe { out_param(signal, "signal")? };
        let timed_out = unsafe { out_param(timed_out, "timed_out")? };
        let mut status = exec.status.clone();
        let ended = exec.ctx.wait_for(timeout(timeout_ms), "waiting for the command", async {
            status.wait_for(Option::is_some).await.map(|s| s.clone())
        })?;
        let status = match ended {
            Ok(Some(status)) => status?,
            _ => return Err(Failure::new(boxlite_result::BOXLITE_ERR_INTERNAL, "the command's waiter ended without a status")),
        };
        *exit_code = status.exit_code();
        *signal = status.signal.unwrap_or(0);
        *timed_out = status.timed_out;
        Ok(())
    })
}

/// A file descriptor for waiting on the command from an event loop (poll, epoll, asyncio's
/// `add_reader`) instead of blocking a thread in `boxlite_exec_read` or `boxlite_exec_wait`.
///
/// The fd becomes readable when output arrives on either stream, when a stream ends, and when the
/// command ends. Each event writes a byte; drain them (`read` until `EAGAIN`: the fd is
/// non-blocking), then take what is there with `timeout_ms` 0: `boxlite_exec_read` on each stream
/// until it returns `BOXLITE_ERR_TIMEOUT` (nothing more now) or 0 bytes (its end), and
/// `boxlite_exec_wait`, which returns `BOXLITE_ERR_TIMEOUT` while the command runs. Draining
/// before reading means no event is missed: one that comes later makes the fd readable again.
///
/// `fd`: receives the descriptor on success. It belongs to `exec`: do not close it;
/// `boxlite_exec_free` does (remove it from the event loop first). The same fd every call.
/// Any thread.
///
/// # Safety
/// `exec` is NULL or a live exec handle; `fd` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_exec_notify_fd(exec: *const boxlite_exec, fd: *mut c_int) -> boxlite_result {
    boundary(|| {
        // SAFETY (both): forwarded from this function's contract.
        let exec = unsafe { handle(exec, "exec")? };
        let fd = unsafe { out_param(fd, "fd")? };
        *fd = exec.notify_fd.as_raw_fd();
        Ok(())
    })
}

/// Frees an exec handle. NULL is a no-op. A command still running goes on (kill it first if it
/// should not); output not read is discarded. Do not use `exec` again, nor free it while another
/// thread uses it.
///
/// # Safety
/// `exec` is NULL or an exec handle not yet freed.
#[no_mangle]
pub unsafe extern "C" fn boxlite_exec_free(exec: *mut boxlite_exec) {
    // SAFETY: forwarded from this function's contract.
    unsafe { free_handle(exec) }
}
