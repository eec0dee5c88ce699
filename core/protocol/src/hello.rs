//! The handshake that starts each HTTP/2 connection between the host and the agent on the VM's
//! one byte stream (a virtio-serial port). That stream has no framing of its own, so bytes of an
//! earlier connection can still be in it: a VM restored from a snapshot holds the tail of its
//! source's connection, and a host that gave up mid-connect leaves its bytes behind. Both ends
//! skip everything up to a message that carries a nonce of the current attempt:
//!
//! 1. host → `Req(n)`, repeated until answered (an old connection may swallow one);
//! 2. agent → `Hello(n, a)`, once per `n` (`a`: the agent's nonce for this opening of the port);
//! 3. host → `Ack(a)`, then its HTTP/2 preface; the agent starts HTTP/2 on the bytes after it.
//!
//! A message is 24 bytes: [`MAGIC`], a kind byte, 3 zero bytes, two little-endian u64s. MAGIC
//! starts with 0xff, which no HTTP/2 frame does (its length would pass any frame size limit).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Length of one handshake message.
pub const MSG_LEN: usize = 24;
/// How every handshake message starts.
pub const MAGIC: [u8; 4] = [0xff, b'B', b'X', b'H'];
/// How often the host repeats its request while unanswered. Short: after a restore the first
/// request usually goes to the dead connection the VM was saved with, and every restore waits
/// for the next one (24 bytes, which the agent skips if they pile up while it boots).
pub const RETRY: Duration = Duration::from_millis(20);

/// One handshake message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg {
    /// The host asks, with its nonce.
    Req(u64),
    /// The agent answers a request: the host's nonce and its own.
    Hello(u64, u64),
    /// The host accepts the agent's nonce; HTTP/2 follows.
    Ack(u64),
}

impl Msg {
    /// The message's bytes.
    pub fn encode(self) -> [u8; MSG_LEN] {
        let (kind, x, y) = match self {
            Msg::Req(n) => (b'R', n, 0),
            Msg::Hello(n, a) => (b'H', n, a),
            Msg::Ack(a) => (b'A', 0, a),
        };
        let mut m = [0u8; MSG_LEN];
        m[..4].copy_from_slice(&MAGIC);
        m[4] = kind;
        m[8..16].copy_from_slice(&x.to_le_bytes());
        m[16..24].copy_from_slice(&y.to_le_bytes());
        m
    }

    fn decode(m: &[u8]) -> Option<Msg> {
        let x = u64::from_le_bytes(m[8..16].try_into().ok()?);
        let y = u64::from_le_bytes(m[16..24].try_into().ok()?);
        match (m[4], &m[5..8]) {
            (b'R', [0, 0, 0]) => Some(Msg::Req(x)),
            (b'H', [0, 0, 0]) => Some(Msg::Hello(x, y)),
            (b'A', [0, 0, 0]) => Some(Msg::Ack(y)),
            _ => None,
        }
    }
}

/// Takes the next message out of `buf`, dropping whatever comes before it; `None` when `buf`
/// holds no whole message yet (a possible start of one is kept).
pub fn next_msg(buf: &mut Vec<u8>) -> Option<Msg> {
    loop {
        let Some(at) = buf.windows(MAGIC.len()).position(|w| w == MAGIC) else {
            // Keep a tail that may be the start of MAGIC.
            let keep = (1..MAGIC.len()).rev().find(|&k| buf.ends_with(&MAGIC[..k])).unwrap_or(0);
            buf.drain(..buf.len() - keep);
            return None;
        };
        buf.drain(..at);
        if buf.len() < MSG_LEN {
            return None;
        }
        let msg = Msg::decode(&buf[..MSG_LEN]);
        match msg {
            Some(m) => {
                buf.drain(..MSG_LEN);
                return Some(m);
            }
            None => {
                buf.drain(..1); // not a message after all: look further
            }
        }
    }
}

/// The host's side: returns the stream with the bytes already read past the handshake.
pub async fn host<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, nonce: u64) -> io::Result<Prefixed<S>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    s.write_all(&Msg::Req(nonce).encode()).await?;
    loop {
        match tokio::time::timeout(RETRY, s.read(&mut chunk)).await {
            Err(_) => s.write_all(&Msg::Req(nonce).encode()).await?,
            Ok(Ok(0)) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the agent channel closed during the handshake")),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
        }
        while let Some(msg) = next_msg(&mut buf) {
            if let Msg::Hello(n, a) = msg {
                if n == nonce {
                    s.write_all(&Msg::Ack(a).encode()).await?;
                    return Ok(Prefixed::new(buf, s));
                }
            }
        }
    }
}

/// The agent's side, with its nonce for this opening of the port: returns the stream with the
/// bytes already read past the host's acknowledgement (the start of its HTTP/2 preface).
pub async fn agent<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, nonce: u64) -> io::Result<Prefixed<S>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut answered: Vec<u64> = Vec::new();
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the host went away during the handshake"));
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(msg) = next_msg(&mut buf) {
            match msg {
                Msg::Req(h) if !answered.contains(&h) => {
                    answered.push(h);
                    s.write_all(&Msg::Hello(h, nonce).encode()).await?;
                }
                // Everything after it is HTTP/2: `next_msg` must not scan it.
                Msg::Ack(a) if a == nonce => return Ok(Prefixed::new(buf, s)),
                _ => {}
            }
        }
    }
}

/// A stream that first yields bytes already read from it.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed { prefix, at: 0, inner }
    }

    /// The bytes read past the handshake and not yet taken, and the stream after them.
    pub fn into_parts(self) -> (Vec<u8>, S) {
        (self.prefix[self.at..].to_vec(), self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_found_behind_garbage_and_split_reads() {
        let mut stream = b"\x00\x00\x12\x04garbage\xffBX".to_vec();
        stream.extend_from_slice(&Msg::Hello(7, 9).encode());
        stream.extend_from_slice(b"tail");
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        for byte in stream {
            buf.push(byte);
            seen.extend(next_msg(&mut buf));
        }
        assert_eq!(seen, vec![Msg::Hello(7, 9)]);
        assert_eq!(buf, b"", "bytes after a message are not a message: dropped while scanning");
        let mut buf = Msg::Ack(3).encode().to_vec();
        buf.extend_from_slice(b"PRI * HTTP/2.0");
        assert_eq!(next_msg(&mut buf), Some(Msg::Ack(3)));
        assert_eq!(buf, b"PRI * HTTP/2.0", "what follows a message stays");
    }

    #[tokio::test]
    async fn stale_bytes_on_both_sides_are_skipped() {
        let (h, mut a) = tokio::io::duplex(1 << 16);
        // What an earlier connection left: half a frame, a stale ack, a stale request.
        let mut stale = b"\x00\x00\x08\x06junk".to_vec();
        stale.extend_from_slice(&Msg::Ack(1).encode());
        stale.extend_from_slice(&Msg::Req(5).encode());
        a.write_all(b"\x00\x00\x04\x08old-goaway").await.unwrap(); // toward the host
        let agent_task = tokio::spawn(async move {
            let mut s = agent(a, 42).await.unwrap();
            let mut got = [0u8; 5];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(b"world").await.unwrap();
            got
        });
        let mut h = h;
        h.write_all(&stale).await.unwrap();
        let mut s = host(h, 77).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).await.unwrap();
        // The stale request (5) was answered before ours; the host skipped that answer.
        assert_eq!(&got, b"world");
        assert_eq!(&agent_task.await.unwrap(), b"hello");
    }
}
