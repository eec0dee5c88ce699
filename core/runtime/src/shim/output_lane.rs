//! The supervisor's end of the output lane (`boxlite_protocol::output_lane`): reads the frames
//! the agent sends, hands each to the exec call it belongs to as a gRPC `ExecOutput` message
//! ready to forward, and gives the agent credit back as the calls' clients take them.
//!
//! The guest is hostile: every header is checked, a call is never sent more than its window,
//! and anything else closes the lane (its calls keep running; their output then ends).

use boxlite_protocol::output_lane::{cost, Header, Kind, HEADER_LEN, WINDOW};
use bytes::Bytes;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// How long the agent may take to answer the lane's handshake once the supervisor asks: an agent
/// that predates the lane (a VM restored from older saved memory) never does.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// What the lane brings one call: a gRPC message (an exec's `ExecOutput` with stdout or
/// stderr, a file call's `FileChunk`) and the length of the frame it came as.
pub struct Output(pub Bytes, pub u32);

struct Route {
    tx: mpsc::Sender<Output>,
    /// A file call (its frames are `Data`), not an exec (`Stdout`, `Stderr`).
    file: bool,
    /// Cost received and not yet taken by the client.
    outstanding: u64,
}

pub struct Lane {
    routes: Mutex<HashMap<u32, Route>>,
    next_id: AtomicU32,
    credit: mpsc::UnboundedSender<(u32, u64)>,
    up: AtomicBool,
}

impl Lane {
    /// Connects to the VM's end of the lane and makes the handshake with the agent.
    pub async fn connect(socket: &Path) -> Result<Arc<Lane>, String> {
        let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| format!("connect {}: {e}", socket.display()))?;
        let stream = tokio::time::timeout(HANDSHAKE, boxlite_protocol::hello::host(stream, rand::random()))
            .await
            .map_err(|_| "the agent did not answer the lane's handshake".to_string())?
            .map_err(|e| format!("handshake: {e}"))?;
        let (prefix, stream) = stream.into_parts();
        let (read, write) = stream.into_split();
        let (credit, credits) = mpsc::unbounded_channel();
        let lane = Arc::new(Lane { routes: Mutex::new(HashMap::new()), next_id: AtomicU32::new(1), credit, up: AtomicBool::new(true) });
        tokio::spawn(write_credit(write, credits));
        let reader = lane.clone();
        tokio::spawn(async move {
            let why = reader.read(std::io::Cursor::new(prefix).chain(read)).await;
            eprintln!("boxlite-shim: output lane closed: {why}");
            reader.close_all();
        });
        Ok(lane)
    }

    /// A lane on no VM, whose frames tests feed to `read`, and where its credit goes.
    #[cfg(test)]
    pub fn detached() -> (Arc<Lane>, mpsc::UnboundedReceiver<(u32, u64)>) {
        let (credit, credits) = mpsc::unbounded_channel();
        (Arc::new(Lane { routes: Mutex::new(HashMap::new()), next_id: AtomicU32::new(1), credit, up: AtomicBool::new(true) }), credits)
    }

    /// Feeds `wire` to the lane as if the agent sent it.
    #[cfg(test)]
    pub async fn feed(&self, wire: &[u8]) -> String {
        self.read(wire).await
    }

    /// A new call's id on the lane (a file call's or an exec's), and where its bytes will come;
    /// `None` once the lane is closed.
    pub fn open(&self, file: bool) -> Option<(u32, mpsc::Receiver<Output>)> {
        if !self.up.load(Ordering::Acquire) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Room for a whole window of the smallest frames: an agent keeping to its window never
        // makes the reader wait.
        let (tx, rx) = mpsc::channel((WINDOW / cost(1)) as usize + 2);
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Route { tx, file, outstanding: 0 });
        Some((id, rx))
    }

    /// The lane is closed: every call's output ends (their bodies see it cut short), and no
    /// new call takes it.
    pub fn close_all(&self) {
        self.up.store(false, Ordering::Release);
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The call ended: what the lane still brings for it is dropped.
    pub fn close(&self, id: u32) {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// The call's client took a frame of `len` bytes: the agent may send that much more.
    pub fn took(&self, id: u32, len: u32) {
        if let Some(route) = self.routes.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&id) {
            route.outstanding = route.outstanding.saturating_sub(cost(len));
        }
        let _ = self.credit.send((id, cost(len)));
    }

    /// Reads frames until the lane ends or the agent breaks its rules; returns why.
    async fn read<R: AsyncRead + Unpin>(&self, r: R) -> String {
        let mut r = BufReader::with_capacity(64 * 1024, r);
        loop {
            let mut h = [0u8; HEADER_LEN];
            if let Err(e) = r.read_exact(&mut h).await {
                return format!("the VM closed it ({e})");
            }
            let header = match Header::decode(&h) {
                Ok(h) => h,
                Err(e) => return e,
            };
            let (id, len) = (header.id, header.len);
            if header.kind == Kind::Credit {
                return "the agent sent a credit frame".into();
            }
            let (mut message, at) = message_for(header.kind, len);
            if let Err(e) = r.read_exact(&mut message[at..]).await {
                return format!("the VM closed it mid-frame ({e})");
            }
            let tx = {
                let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
                match routes.get_mut(&id) {
                    Some(route) => {
                        if route.file != (header.kind == Kind::Data) {
                            return format!("the agent sent {:?} bytes to call {id}, which takes none", header.kind);
                        }
                        route.outstanding += cost(len);
                        if route.outstanding > WINDOW {
                            return format!("the agent sent call {id} past its window");
                        }
                        Some(route.tx.clone())
                    }
                    None => None, // a call that ended: its client is gone
                }
            };
            if let Some(tx) = tx {
                let _ = tx.send(Output(message.into(), len)).await;
            }
        }
    }
}

/// A gRPC message holding an `ExecOutput` of `len` bytes of stdout or stderr, with room for them
/// from the returned offset on: the bytes are read from the lane straight into it.
fn message_for(kind: Kind, len: u32) -> (Vec<u8>, usize) {
    // Length-delimited: FileChunk's field 1, or ExecOutput's field 2 (stdout) or 3 (stderr).
    let tag = match kind {
        Kind::Data => 0x0a,
        Kind::Stderr => 0x1a,
        _ => 0x12,
    };
    let mut head = vec![tag];
    prost::encoding::encode_varint(u64::from(len), &mut head);
    let body = head.len() + len as usize;
    let mut message = Vec::with_capacity(5 + body);
    message.push(0); // not compressed
    message.extend_from_slice(&(body as u32).to_be_bytes());
    message.extend_from_slice(&head);
    let at = message.len();
    message.resize(5 + body, 0);
    (message, at)
}

/// Writes credit back to the agent, what piled up meanwhile in one write.
async fn write_credit(mut w: tokio::net::unix::OwnedWriteHalf, mut credits: mpsc::UnboundedReceiver<(u32, u64)>) {
    while let Some((id, n)) = credits.recv().await {
        let mut due: HashMap<u32, u64> = HashMap::from([(id, n)]);
        while let Ok((id, n)) = credits.try_recv() {
            *due.entry(id).or_default() += n;
        }
        let mut bytes = Vec::new();
        for (id, n) in due {
            let len = n.min(u64::from(u32::MAX)) as u32;
            bytes.extend_from_slice(&Header { kind: Kind::Credit, id, len }.encode());
        }
        if w.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use boxlite_protocol::v1::{exec_output, ExecOutput};
    use prost::Message;

    #[test]
    fn output_messages_decode_as_exec_output_and_file_chunks() {
        let (mut m, at) = message_for(Kind::Data, 3);
        m[at..].copy_from_slice(b"abc");
        assert_eq!(boxlite_protocol::v1::FileChunk::decode(&m[5..]).unwrap().data, b"abc");
        for (kind, len) in [(Kind::Stdout, 5u32), (Kind::Stderr, 300), (Kind::Stdout, 512 * 1024)] {
            let (mut m, at) = message_for(kind, len);
            m[at..].fill(7);
            assert_eq!(m[0], 0);
            assert_eq!(u32::from_be_bytes([m[1], m[2], m[3], m[4]]) as usize, m.len() - 5);
            let out = ExecOutput::decode(&m[5..]).unwrap();
            let want = vec![7u8; len as usize];
            match (kind, out.kind) {
                (Kind::Stdout, Some(exec_output::Kind::Stdout(d))) | (Kind::Stderr, Some(exec_output::Kind::Stderr(d))) => assert_eq!(d, want),
                other => panic!("{other:?}"),
            }
        }
    }

    pub fn frame(kind: Kind, id: u32, data: &[u8]) -> Vec<u8> {
        let mut f = Header { kind, id, len: data.len() as u32 }.encode().to_vec();
        f.extend_from_slice(data);
        f
    }

    fn lane() -> (Arc<Lane>, mpsc::UnboundedReceiver<(u32, u64)>) {
        Lane::detached()
    }

    #[tokio::test]
    async fn frames_reach_their_call_and_strays_are_dropped() {
        let (lane, mut credits) = lane();
        let (id, mut rx) = lane.open(false).unwrap();
        let mut wire = frame(Kind::Stdout, id + 100, b"stray");
        wire.extend(frame(Kind::Stderr, id, b"oops"));
        let why = lane.read(&wire[..]).await;
        assert!(why.contains("closed"), "{why}");
        let Some(Output(m, 4)) = rx.recv().await else { panic!("no message") };
        assert_eq!(ExecOutput::decode(&m[5..]).unwrap().kind, Some(exec_output::Kind::Stderr(b"oops".to_vec())));
        lane.took(id, 4);
        assert_eq!(credits.recv().await, Some((id, 4096)));
    }

    #[tokio::test]
    async fn a_guest_past_its_window_or_off_the_format_closes_the_lane() {
        let (lane, _credits) = lane();
        let (id, _rx) = lane.open(false).unwrap();
        let chunk = vec![0u8; boxlite_protocol::output_lane::MAX_FRAME_BYTES as usize];
        let wire: Vec<u8> = (0..9).flat_map(|_| frame(Kind::Stdout, id, &chunk)).collect();
        assert!(lane.read(&wire[..]).await.contains("past its window"));
        let credit = Header { kind: Kind::Credit, id, len: 1 }.encode();
        assert!(lane.read(&credit[..]).await.contains("credit frame"));
        let (file, _rx) = lane.open(true).unwrap();
        assert!(lane.read(&frame(Kind::Stdout, file, b"x")[..]).await.contains("which takes none"));
        let mut garbage = [0u8; HEADER_LEN];
        garbage[0] = 0xff;
        assert!(lane.read(&garbage[..]).await.contains("unknown frame kind"));
    }
}
