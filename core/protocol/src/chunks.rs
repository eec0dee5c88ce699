//! Blocking `std::io` ends of the tokio channels that carry a tar (or file) stream between the
//! gRPC side and a blocking thread, with backpressure: both sides of a copy use them.

use crate::MAX_CHUNK_BYTES;
use std::io::{self, Read, Write};
use tokio::sync::mpsc;

/// Bytes of a stream for the blocking side, then an explicit end: a stream that closes without
/// `End` was cut off (cancelled, connection broken), and nothing of it may be kept.
pub enum Piece {
    Data(Vec<u8>),
    End,
}

/// Reads the pieces a channel delivers; a channel closed before `End` is a `ConnectionAborted`
/// error saying `cut_off`. (Not `Interrupted`: `io::copy` and `read_exact`, which tar unpacks
/// with, retry that forever, so the reading thread would spin and never clean up.)
pub struct PieceReader {
    rx: mpsc::Receiver<Piece>,
    buf: Vec<u8>,
    pos: usize,
    ended: bool,
    cut_off: &'static str,
}

impl PieceReader {
    pub fn new(rx: mpsc::Receiver<Piece>, cut_off: &'static str) -> Self {
        PieceReader { rx, buf: Vec::new(), pos: 0, ended: false, cut_off }
    }
}

impl Read for PieceReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Piece::Data(d)) => (self.buf, self.pos) = (d, 0),
                Some(Piece::End) => self.ended = true,
                None => return Err(io::Error::new(io::ErrorKind::ConnectionAborted, self.cut_off)),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Sends what is written as messages (`wrap`ped chunks of at most MAX_CHUNK_BYTES), waiting while
/// the channel is full (called from a blocking thread). A closed channel is a `BrokenPipe` error
/// saying `gone`.
///
/// Not a `BufWriter` over a plain sender: that sends what it holds when dropped, and a
/// `tar::Builder` dropped after a failure writes its end-of-archive blocks first, so a copy that
/// failed half-way would send what reads as a complete archive. Dropped, this sends nothing.
pub struct ChunkWriter<M> {
    tx: mpsc::Sender<M>,
    wrap: fn(Vec<u8>) -> M,
    buf: Vec<u8>,
    gone: &'static str,
}

impl<M> ChunkWriter<M> {
    pub fn new(tx: mpsc::Sender<M>, wrap: fn(Vec<u8>) -> M, gone: &'static str) -> Self {
        ChunkWriter { tx, wrap, buf: Vec::with_capacity(MAX_CHUNK_BYTES), gone }
    }
}

impl<M> Write for ChunkWriter<M> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_CHUNK_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(MAX_CHUNK_BYTES));
        self.tx.blocking_send((self.wrap)(data)).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, self.gone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_stream_cut_off_fails_a_copy_instead_of_retrying_forever() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Piece::Data(vec![7; 100])).unwrap();
        drop(tx); // closed without End
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = PieceReader::new(rx, "cut off");
            let _ = done_tx.send(io::copy(&mut reader, &mut io::sink()).map_err(|e| (e.kind(), e.to_string())));
        });
        let copied = done_rx.recv_timeout(Duration::from_secs(5)).expect("io::copy kept retrying the cut-off stream");
        assert_eq!(copied, Err((io::ErrorKind::ConnectionAborted, "cut off".to_string())));
    }

    #[test]
    fn a_stream_with_its_end_reads_whole() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Piece::Data(b"ab".to_vec())).unwrap();
        tx.try_send(Piece::Data(b"c".to_vec())).unwrap();
        tx.try_send(Piece::End).unwrap();
        let mut got = Vec::new();
        PieceReader::new(rx, "cut off").read_to_end(&mut got).unwrap();
        assert_eq!(got, b"abc");
    }
}
