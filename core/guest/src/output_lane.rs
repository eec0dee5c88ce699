//! The agent's end of the output lane (`boxlite_protocol::output_lane`): a command's stdout and
//! stderr go to the host by `splice(2)` from its pipe into a port of their own. The agent copies
//! none of the bytes and frames each chunk with a 12-byte header, where over gRPC it copied
//! each chunk twice and framed it in protobuf, gRPC and HTTP/2 (docs/exec.md).

use crate::port::{self, syscall_result, FdStream};
use boxlite_protocol::output_lane::{cost, Header, Kind, HEADER_LEN, MAX_FRAME_BYTES, PORT_NAME, WINDOW};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{watch, Notify};

/// The lane of the host connected now, if one is.
static CURRENT: Mutex<Option<Arc<Lane>>> = Mutex::new(None);

/// The lane with one host: its port, and what each command may still send.
pub struct Lane {
    port: AsyncFd<OwnedFd>,
    /// One frame at a time on the port.
    writing: tokio::sync::Mutex<()>,
    /// Per command (its id on the lane): bytes of cost it may send before more credit comes.
    credit: Mutex<HashMap<u32, u64>>,
    /// Credit came, a command was forgotten, or the lane died.
    changed: Notify,
    dead: AtomicBool,
}

/// The lane to send a command's output on, when a host serves one.
pub fn current() -> Option<Arc<Lane>> {
    CURRENT.lock().unwrap_or_else(|p| p.into_inner()).clone().filter(|l| !l.dead.load(Ordering::Acquire))
}

/// Serves the lane for as long as the agent runs: the handshake with each host that connects,
/// then its credit, until it goes. A VM without the port (an engine without the lane) has no
/// lane: commands' output then goes over gRPC. Started once the agent's own port is there; the
/// lane's comes with it, so it is looked for for 200 ms at most (a 5 s search for a port that
/// never comes made every such boot ~500 ms slower, measured).
pub async fn serve(nonce: fn() -> u64) {
    let Ok(path) = port::find(PORT_NAME, 20).await else { return };
    // While no host is connected the port reads EOF at once and cannot be waited on: look
    // again, less and less often, so a box whose host never takes the lane stays idle.
    let mut wait = Duration::from_millis(20);
    loop {
        // EBUSY until the last pump of an earlier session let go of the port (one open at a time).
        let opened = FdStream::open(&path);
        let Ok(stream) = async { boxlite_protocol::hello::agent(opened?, nonce()).await }.await else {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
            continue;
        };
        wait = Duration::from_millis(20);
        let (prefix, stream) = stream.into_parts();
        let lane = Arc::new(Lane {
            port: stream.into_async_fd(),
            writing: tokio::sync::Mutex::new(()),
            credit: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            dead: AtomicBool::new(false),
        });
        *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some(lane.clone());
        lane.read_credit(prefix).await;
        lane.kill();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Lane {
    /// Reads the host's credit frames until it goes (EOF) or sends something else.
    async fn read_credit(&self, mut buf: Vec<u8>) {
        let mut chunk = [0u8; 4096];
        loop {
            while buf.len() >= HEADER_LEN {
                let header: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().unwrap_or_default();
                match Header::decode(&header) {
                    Ok(Header { kind: Kind::Credit, id, len }) => {
                        if let Some(left) = self.credit.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&id) {
                            *left = (*left + u64::from(len)).min(WINDOW);
                        }
                        self.changed.notify_waiters();
                    }
                    _ => return,
                }
                buf.drain(..HEADER_LEN);
            }
            let Ok(mut guard) = self.port.readable().await else { return };
            let closed = port::closed_since(guard.ready());
            // SAFETY: reading into a buffer of the given length.
            match guard.try_io(|fd| syscall_result(unsafe { libc::read(fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) })) {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_would_block) if closed => return, // the host left (and maybe came back): start again
                Err(_would_block) => {}
            }
        }
    }

    fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        self.changed.notify_waiters();
        let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|l| std::ptr::eq(Arc::as_ptr(l), self)) {
            *current = None;
        }
    }

    /// Opens the window of command `id`.
    pub fn register(&self, id: u32) {
        self.credit.lock().unwrap_or_else(|p| p.into_inner()).insert(id, WINDOW);
    }

    /// Closes the window of command `id`: its pumps stop at their next frame (and a credit frame
    /// for it after that is ignored).
    pub fn forget(&self, id: u32) {
        self.credit.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        self.changed.notify_waiters();
    }

    /// Waits until command `id` may send `cost` more; false once it may send nothing more (its
    /// window closed, or the lane died).
    async fn take(&self, id: u32, cost: u64) -> bool {
        loop {
            let changed = self.changed.notified();
            if self.dead.load(Ordering::Acquire) {
                return false;
            }
            match self.credit.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&id) {
                None => return false,
                Some(left) if *left >= cost => {
                    *left -= cost;
                    return true;
                }
                Some(_) => {}
            }
            changed.await;
        }
    }

    async fn died(&self) {
        loop {
            let changed = self.changed.notified();
            if self.dead.load(Ordering::Acquire) {
                return;
            }
            changed.await;
        }
    }

    /// Sends what a command writes to `pipe` as frames of `kind` until the pipe's writers are
    /// gone, `stop` is dropped, the command's window closes or the lane dies; returns how many
    /// frames it sent. Stops only between frames: a frame cut short would put the lane out of
    /// step.
    ///
    /// Each frame's bytes are first moved (spliced, not copied) into a pipe of the pump's own, so
    /// the frame's length is known before its header goes; the frame then takes that pipe whole.
    pub async fn pump(self: Arc<Self>, id: u32, kind: Kind, pipe: OwnedFd, mut stop: watch::Receiver<()>) -> u32 {
        let mut frames = 0;
        // SAFETY: the OwnedFd is moved into the AsyncFd, so it stays open and the same for its life.
        let Ok(pipe) = (unsafe { AsyncFd::register_with_interest(pipe, Interest::READABLE) }) else { return frames };
        let mut staged: Option<FramePipe> = None;
        loop {
            let mut guard = tokio::select! {
                ready = pipe.readable() => match ready { Ok(g) => g, Err(_) => return frames },
                _ = stop.changed() => return frames,
                _ = self.died() => return frames,
            };
            // Made at the first output: a command that prints nothing costs no pipe.
            if staged.is_none() {
                staged = frame_pipe().ok();
            }
            let Some((frame_r, frame_w)) = &staged else { return frames };
            // SAFETY: splice between two pipes we hold; no memory of ours is involved.
            let moved = unsafe {
                libc::splice(pipe.as_raw_fd(), std::ptr::null_mut(), frame_w.as_raw_fd(), std::ptr::null_mut(), MAX_FRAME_BYTES as usize, libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
            };
            let len = match syscall_result(moved) {
                Ok(0) => return frames, // the command's end of the pipe is closed
                Ok(n) => n as u32,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    continue;
                }
                Err(_) => return frames,
            };
            let stopped = async {
                let _ = stop.changed().await;
            };
            if self.send_frame(id, kind, len, stopped, splice_from(frame_r)).await.is_err() {
                return frames;
            }
            frames += 1;
        }
    }

    /// Sends a file's bytes from its position to its end as frames; returns how many. Stops
    /// (with an error) once `closed` resolves (the call's client is gone) or the lane dies.
    pub async fn send_file<F: Future<Output = ()>>(&self, id: u32, file: std::fs::File, closed: impl Fn() -> F) -> io::Result<u32> {
        let (file, staged) = (Arc::new(file), Arc::new(frame_pipe()?));
        let mut frames = 0;
        loop {
            let (f, p) = (file.clone(), staged.clone());
            // A disk read may block: off the agent's thread.
            // SAFETY: splice from a file we hold into a pipe we hold; no memory of ours is involved.
            let len = tokio::task::spawn_blocking(move || {
                syscall_result(unsafe { libc::splice(f.as_raw_fd(), std::ptr::null_mut(), p.1.as_raw_fd(), std::ptr::null_mut(), MAX_FRAME_BYTES as usize, libc::SPLICE_F_MOVE) })
            })
            .await
            .map_err(io::Error::other)??;
            if len == 0 {
                return Ok(frames);
            }
            self.send_frame(id, Kind::Data, len as u32, closed(), splice_from(&staged.0)).await?;
            frames += 1;
        }
    }

    /// Sends bytes the agent made (a tar stream) as frames, written to the port (one copy, into
    /// the port's own buffer); returns how many. Stops as [`Lane::send_file`] does.
    pub async fn send_bytes<F: Future<Output = ()>>(&self, id: u32, data: &[u8], closed: impl Fn() -> F) -> io::Result<u32> {
        let mut frames = 0;
        for frame in data.chunks(MAX_FRAME_BYTES as usize) {
            let len = frame.len();
            // SAFETY: writing from the frame's bytes not yet sent (`left` of them, at its end).
            let write = |port: RawFd, left: usize| syscall_result(unsafe { libc::write(port, frame[len - left..].as_ptr().cast(), left) });
            self.send_frame(id, Kind::Data, len as u32, closed(), write).await?;
            frames += 1;
        }
        Ok(frames)
    }

    /// Waits for credit for a frame of `len` bytes, then sends it; an error without sending once
    /// the call's window closed or `closed` resolved first.
    async fn send_frame(&self, id: u32, kind: Kind, len: u32, closed: impl Future<Output = ()>, bytes: impl FnMut(RawFd, usize) -> io::Result<usize>) -> io::Result<()> {
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the call ended");
        tokio::select! {
            ok = self.take(id, cost(len)) => if !ok { return Err(gone()) },
            _ = closed => return Err(gone()),
        }
        if let Err(e) = self.send(id, kind, len, bytes).await {
            crate::init::console(&format!("boxlite-guest: output lane: {e}"));
            self.kill();
            return Err(e);
        }
        Ok(())
    }

    /// One frame: its header, then its `len` bytes, which `bytes` puts on the port (given the
    /// port and how many are left, it returns how many it moved).
    async fn send(&self, id: u32, kind: Kind, len: u32, mut bytes: impl FnMut(RawFd, usize) -> io::Result<usize>) -> io::Result<()> {
        let _one = self.writing.lock().await;
        let header = Header { kind, id, len }.encode();
        // SAFETY: writing from a buffer of the given length.
        match self.port_io(|port| syscall_result(unsafe { libc::write(port, header.as_ptr().cast(), header.len()) })).await? {
            n if n == header.len() => {}
            n => return Err(io::Error::other(format!("a {n}-byte write of a frame header"))),
        }
        let mut left = len as usize;
        while left > 0 {
            match self.port_io(|port| bytes(port, left)).await? {
                0 => return Err(io::Error::other("a frame's bytes ran dry")),
                n => left -= n.min(left),
            }
        }
        Ok(())
    }

    /// One write of `op`'s to the port, once it can take one: how many bytes it moved. An error
    /// once the lane died or its host left.
    async fn port_io(&self, mut op: impl FnMut(RawFd) -> io::Result<usize>) -> io::Result<usize> {
        loop {
            let mut guard = self.writable().await?;
            let closed = port::closed_since(guard.ready());
            match guard.try_io(|port| op(port.as_raw_fd())) {
                Ok(moved) => return moved,
                Err(_would_block) if closed => return Err(host_left()),
                Err(_would_block) => {}
            }
        }
    }

    /// The port can take a write; an error once the lane died (a host gone takes no writes).
    async fn writable(&self) -> io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, OwnedFd>> {
        tokio::select! {
            ready = self.port.writable() => ready,
            _ = self.died() => Err(host_left()),
        }
    }
}

fn host_left() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the host left the output lane")
}

/// Moves bytes from a frame pipe into the port.
fn splice_from(pipe: &OwnedFd) -> impl FnMut(RawFd, usize) -> io::Result<usize> + '_ {
    // SAFETY: splice between two fds we hold; no memory of ours is involved.
    move |port, left| syscall_result(unsafe { libc::splice(pipe.as_raw_fd(), std::ptr::null_mut(), port, std::ptr::null_mut(), left, libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK) })
}

/// What blocking code (a tar builder) writes, sent on the lane as one call's data frames of up
/// to a frame each. Dropped or finished, it closes the call's window; dropped, it sends nothing
/// of what it holds (why it buffers itself: `protocol::chunks::ChunkWriter`).
pub struct LaneWriter<T> {
    lane: Arc<Lane>,
    id: u32,
    buf: Vec<u8>,
    frames: u32,
    /// The call's reply channel: the writer stops once its client is gone.
    tx: tokio::sync::mpsc::Sender<T>,
    runtime: tokio::runtime::Handle,
}

impl<T> LaneWriter<T> {
    /// For call `id`; from a blocking thread of the agent's runtime.
    pub fn new(lane: Arc<Lane>, id: u32, tx: tokio::sync::mpsc::Sender<T>) -> Self {
        lane.register(id);
        LaneWriter { lane, id, buf: Vec::with_capacity(MAX_FRAME_BYTES as usize), frames: 0, tx, runtime: tokio::runtime::Handle::current() }
    }

    /// Sends what is left; returns the frames the call's bytes took.
    pub fn finish(mut self) -> io::Result<u32> {
        std::io::Write::flush(&mut self)?;
        Ok(self.frames)
    }
}

impl<T> std::io::Write for LaneWriter<T> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_FRAME_BYTES as usize - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_FRAME_BYTES as usize {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let tx = self.tx.clone();
        let closed = move || {
            let tx = tx.clone();
            async move { tx.closed().await }
        };
        self.frames += self.runtime.block_on(self.lane.send_bytes(self.id, &self.buf, closed))?;
        self.buf.clear();
        Ok(())
    }
}

impl<T> Drop for LaneWriter<T> {
    fn drop(&mut self) {
        self.lane.forget(self.id);
    }
}

/// A pipe (read end, write end) that holds one frame at a time, as big as a frame.
type FramePipe = (OwnedFd, OwnedFd);

fn frame_pipe() -> io::Result<FramePipe> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    // SAFETY: F_SETPIPE_SZ on a pipe we own; a failure leaves the default size (frames are then smaller).
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, MAX_FRAME_BYTES as libc::c_int) };
    Ok((r, w))
}
