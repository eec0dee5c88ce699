//! The agent's end of the host channel: a virtio-serial port, as an async byte stream.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Finds `/dev/vportNpM` for the port the host named `name`, waiting up to `tries` times 10 ms
/// for udev-less devtmpfs to create it.
pub async fn find(name: &str, tries: usize) -> io::Result<PathBuf> {
    for _ in 0..tries {
        if let Ok(entries) = fs::read_dir("/sys/class/virtio-ports") {
            for entry in entries.flatten() {
                let port_name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                if port_name.trim() == name {
                    let dev = PathBuf::from("/dev").join(entry.file_name());
                    if dev.exists() {
                        return Ok(dev);
                    }
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Err(io::Error::new(io::ErrorKind::NotFound, format!("virtio-serial port {name} not found")))
}

/// A non-blocking fd as an async byte stream: the virtio-serial port (reads return EOF when the
/// host disconnects) or a PTY master (EIO once the terminal closes, reported as EOF).
pub struct FdStream {
    fd: AsyncFd<OwnedFd>,
}

impl FdStream {
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: fcntl on an fd we own.
        unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        Self::register(fd)
    }

    fn register(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: the OwnedFd is moved into the AsyncFd, so it stays open and the same for its life.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(FdStream { fd })
    }

    /// The registered fd itself, for the output lane's splices (which must heed
    /// [`closed_since`] as this stream does).
    pub fn into_async_fd(self) -> AsyncFd<OwnedFd> {
        self.fd
    }

    /// A duplicate of the fd, for ioctls while the stream itself is split into halves.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.get_ref().try_clone()
    }

    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
        // SAFETY: valid NUL-terminated path; the returned fd is owned below.
        let raw = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Self::register(fd)
    }
}

/// A syscall's return value as a result (errno for a negative one).
pub fn syscall_result(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// tokio never clears a "closed" readiness once it saw one (a port reports HUP while no host is
/// connected): a read or write that would block after it must end the stream, or the loops
/// below would spin on a readiness that stays set. Seen: the output lane's port opened just
/// before its host connected spun the agent at 100 % of its vCPU. The caller opens the port
/// again, which registers it afresh.
pub fn closed_since(ready: tokio::io::Ready) -> bool {
    ready.is_read_closed() || ready.is_write_closed()
}

impl AsyncRead for FdStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let closed = closed_since(guard.ready());
            let unfilled = buf.initialize_unfilled();
            let res = guard.try_io(|fd| {
                // SAFETY: reading into a valid, initialized buffer of the given length.
                syscall_result(unsafe { libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len()) })
            });
            match res {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) if closed => return Poll::Ready(Ok(())),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            let closed = closed_since(guard.ready());
            // SAFETY: writing from a valid buffer of the given length.
            match guard.try_io(|fd| syscall_result(unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) })) {
                Ok(res) => return Poll::Ready(res),
                Err(_would_block) if closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
