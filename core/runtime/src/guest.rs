//! The host side of the guest protocol: a gRPC client over the agent's unix socket, and the
//! [`Execution`] handle that streams one command's output.

use crate::error::{Error, Result};
use boxlite_protocol::v1::guest_client::GuestClient;
use boxlite_protocol::v1::{exec_input, exec_output, ExecInput, ExecStart, PingRequest, ShutdownRequest, Signal, SpawnFailure, WindowSize};
use boxlite_protocol::{H2_CONNECTION_WINDOW_BYTES, H2_MAX_FRAME_BYTES, H2_STREAM_WINDOW_BYTES, MAX_CHUNK_BYTES, MAX_MESSAGE_BYTES};
use prost::Message;
use boxlite_protocol::v1::shim_client::ShimClient;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};

/// Explains why a box's connection broke (e.g. "the box's VM process was killed by signal 9"),
/// from what its supervisor recorded; `None` when nothing is known.
pub type LostReason = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<String>> + Send>> + Send + Sync>;

/// The longest the channel handshake with the agent may take once the agent listens.
const AGENT_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection to one box's agent (directly, or through the box's supervisor).
#[derive(Clone)]
pub struct Guest {
    channel: Channel,
    client: GuestClient<Channel>,
    lost: Option<LostReason>,
}

impl Guest {
    /// Connects to a box's supervisor socket (`shim.sock`).
    pub async fn connect(socket: &Path) -> Result<Self> {
        let socket: PathBuf = socket.to_path_buf();
        Self::over(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { tokio::net::UnixStream::connect(socket).await.map(hyper_util::rt::TokioIo::new) }
        }))
        .await
    }

    /// Connects straight to the agent on the VM's channel socket (what the supervisor does),
    /// through the handshake that skips what earlier connections left in the channel.
    pub async fn connect_agent(socket: &Path) -> Result<Self> {
        let socket: PathBuf = socket.to_path_buf();
        Self::over(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                let nonce: u64 = rand::random();
                let stream = tokio::time::timeout(AGENT_HANDSHAKE, boxlite_protocol::hello::host(stream, nonce))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the agent did not answer the channel handshake"))??;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(Gathered::new(stream)))
            }
        }))
        .await
    }

    /// Connects to the agent as soon as the VM creates `socket`, then waits for it to answer
    /// (the request waits in the channel until the agent serves it). Waits as long as it takes:
    /// callers bound it by the VM's exit and their own timeout.
    pub async fn wait_agent(socket: &Path) -> Self {
        loop {
            if socket.exists() {
                if let Ok(guest) = Self::connect_agent(socket).await {
                    if guest.ping().await.is_ok() {
                        return guest;
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    async fn over<C, IO>(connector: C) -> Result<Self>
    where
        C: tower::Service<http::Uri, Response = hyper_util::rt::TokioIo<IO>, Error = std::io::Error> + Send + 'static,
        C::Future: Send + 'static,
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        // The URI is required by tonic but unused: the connector dials the unix socket.
        let channel = Endpoint::from_static("http://boxlite.guest")
            .initial_stream_window_size(H2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(H2_CONNECTION_WINDOW_BYTES)
            .max_frame_size(H2_MAX_FRAME_BYTES)
            .connect_with_connector(connector)
            .await
            .map_err(|e| Error::Guest(format!("cannot connect to the guest agent: {e}")))?;
        let client = GuestClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Guest { channel, client, lost: None })
    }

    /// The same connection, whose broken calls are explained by `lost`.
    pub fn with_lost_reason(mut self, lost: LostReason) -> Self {
        self.lost = Some(lost);
        self
    }

    /// The underlying HTTP/2 channel (the supervisor forwards raw calls over it).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The box supervisor's own service on this connection.
    pub fn shim(&self) -> ShimClient<Channel> {
        ShimClient::new(self.channel.clone())
    }

    /// An error for a failed call: what the supervisor recorded when the box died, else the
    /// transport's words.
    async fn call_error(lost: &Option<LostReason>, status: tonic::Status) -> Error {
        if let Some(lost) = lost {
            if let Some(reason) = lost().await {
                return Error::Guest(reason);
            }
        }
        rpc_error(status)
    }

    /// Waits for the agent to answer; returns the guest's uptime in milliseconds.
    pub async fn ping(&self) -> Result<u64> {
        let reply = self.client.clone().ping(PingRequest::default()).await.map_err(rpc_error)?;
        Ok(reply.into_inner().uptime_ms)
    }

    /// Sets the guest's wall clock to the host's (at boot, and after a resume).
    pub async fn set_clock(&self) -> Result<()> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        self.client.clone().ping(PingRequest { set_clock_unix_ms: now, ..Default::default() }).await.map_err(rpc_error)?;
        Ok(())
    }

    /// Gives a box restored from a snapshot or a template its own identity: fresh host entropy
    /// reseeds the guest's RNG, then (from a template) its own disk is mounted, and its clock and
    /// hostname are set.
    pub async fn refresh_identity(&self, hostname: &str, attach_box_disk: bool) -> Result<()> {
        let mut entropy = vec![0u8; 64];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut entropy);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let req = PingRequest { set_clock_unix_ms: now, set_hostname: hostname.to_string(), add_entropy: entropy, attach_box_disk };
        self.client.clone().ping(req).await.map_err(rpc_error)?;
        Ok(())
    }

    /// Asks the agent to stop everything, unmount the disk and power off.
    pub async fn shutdown(&self) -> Result<()> {
        self.client.clone().shutdown(ShutdownRequest {}).await.map_err(rpc_error)?;
        Ok(())
    }

    /// Starts a command. Errors if it could not be started (not found, bad cwd or user).
    pub async fn exec(&self, start: ExecStart) -> Result<Execution> {
        let argv0 = start.argv.first().cloned().unwrap_or_default();
        let tty = start.tty;
        let request = check_exec_request(start)?;
        let (input_tx, input_rx) = mpsc::channel::<ExecInput>(16);
        input_tx.send(request).await.map_err(|_| Error::Internal("exec input closed".into()))?;
        let mut outputs = self
            .client
            .clone()
            .exec(tokio_stream::wrappers::ReceiverStream::new(input_rx))
            .await
            .map_err(rpc_error)?
            .into_inner();
        // The first message says whether the command started.
        let first = outputs.message().await.map_err(rpc_error)?;
        let failure = first.as_ref().map(|m| m.spawn_failure()).unwrap_or_default();
        match first.and_then(|m| m.kind) {
            Some(exec_output::Kind::Started(_)) => {}
            Some(exec_output::Kind::SpawnError(msg)) => return Err(spawn_error(failure, &argv0, msg)),
            other => return Err(Error::Guest(format!("guest sent {other:?} instead of `started`"))),
        }
        // Bounded buffers (at most OUTPUT_QUEUE chunks): a consumer that stops reading
        // stalls the command (backpressure), while a consumer that reads in batches (`try_next`)
        // finds enough queued to batch.
        let (stdout_tx, stdout_rx) = mpsc::channel(OUTPUT_QUEUE);
        let (stderr_tx, stderr_rx) = mpsc::channel(OUTPUT_QUEUE);
        let (exit_tx, exit_rx) = oneshot::channel();
        let failure: Failure = Arc::default();
        let lost = self.lost.clone();
        let failed = failure.clone();
        tokio::spawn(async move {
            let mut stdout_tx = Some(stdout_tx);
            let mut stderr_tx = Some(stderr_tx);
            let exit = loop {
                let kind = match outputs.message().await {
                    Ok(Some(m)) => m.kind,
                    Ok(None) => break Err(Error::Guest("the guest ended the command's stream without an exit status".into())),
                    Err(status) => break Err(Guest::call_error(&lost, status).await),
                };
                match kind {
                    Some(exec_output::Kind::Stdout(data)) => forward(&mut stdout_tx, data).await,
                    Some(exec_output::Kind::Stderr(data)) => forward(&mut stderr_tx, data).await,
                    Some(exec_output::Kind::Exit(exit)) => break ExitStatus::from_guest(exit.code, exit.signal, exit.timed_out),
                    _ => break Err(Error::Guest("guest sent an unexpected exec message".into())),
                }
            };
            // Recorded before the output streams close, so a reader that sees their end can
            // tell a failure from a clean end of output.
            if let Err(e) = &exit {
                let _ = failed.set((e.code(), e.to_string()));
            }
            let _ = exit_tx.send(exit);
        });
        Ok(Execution {
            stdout: Some(OutputStream { rx: stdout_rx, failure: failure.clone() }),
            stderr: Some(OutputStream { rx: stderr_rx, failure }),
            stdin: Some(Stdin { tx: input_tx.clone() }),
            control: ExecControl { tx: input_tx, tty },
            exit: exit_rx,
        })
    }
}

/// The start message of an exec, refused when it is over the message limit (past it the
/// transport fails with a bare HTTP/2 protocol error). Checked before a box is booted for it.
pub fn check_exec_request(start: ExecStart) -> Result<ExecInput> {
    let request = ExecInput { kind: Some(exec_input::Kind::Start(start)) };
    let size = request.encoded_len();
    if size > MAX_MESSAGE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "the command's arguments and environment take {size} bytes, over the {MAX_MESSAGE_BYTES}-byte \
             limit of one exec request; pass big inputs through stdin or a file"
        )));
    }
    Ok(request)
}

/// Output chunks queued per stream before the guest is made to wait: 2 MiB of full chunks.
const OUTPUT_QUEUE: usize = (2 << 20) / MAX_CHUNK_BYTES;

/// Sends a chunk to its stream; a dropped stream means its output is discarded from then on.
async fn forward(tx: &mut Option<mpsc::Sender<Vec<u8>>>, data: Vec<u8>) {
    if data.len() > MAX_CHUNK_BYTES {
        return; // never produced by our agent; a hostile guest gets nothing through
    }
    if let Some(sender) = tx {
        if sender.send(data).await.is_err() {
            *tx = None;
        }
    }
}

fn truncate(mut s: String) -> String {
    const MAX: usize = 4096;
    if s.len() > MAX {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A command the guest could not start. Not-found and not-executable get wording of our own that
/// does not depend on the agent's (callers such as the CLI tell them apart by it); other failures
/// keep the agent's message.
fn spawn_error(failure: SpawnFailure, argv0: &str, guest_message: String) -> Error {
    let argv0 = truncate(argv0.to_string());
    Error::InvalidArgument(match failure {
        SpawnFailure::NotFound => format!("command '{argv0}' not found in the box"),
        SpawnFailure::NotExecutable => format!("command '{argv0}' is not executable in the box"),
        SpawnFailure::BadRequest | SpawnFailure::Unspecified => truncate(guest_message),
    })
}

fn rpc_error(status: tonic::Status) -> Error {
    Error::Guest(format!("guest agent: {}", truncate(status.message().to_string())))
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitStatus {
    /// Exit code when it exited normally.
    pub code: Option<i32>,
    /// Signal number when a signal ended it.
    pub signal: Option<i32>,
    /// It was killed because its timeout passed.
    pub timed_out: bool,
}

impl ExitStatus {
    fn from_guest(code: Option<i32>, signal: Option<i32>, timed_out: bool) -> Result<Self> {
        // Values from the guest are untrusted: only real exit codes and signal numbers pass.
        let valid = match (code, signal) {
            (Some(c), None) => (0..=255).contains(&c),
            (None, Some(s)) => (1..=64).contains(&s),
            _ => false,
        };
        if !valid {
            return Err(Error::Guest(format!("guest sent an invalid exit status (code {code:?}, signal {signal:?})")));
        }
        Ok(ExitStatus { code, signal, timed_out })
    }

    /// Shell convention: the code, or 128 + signal.
    pub fn exit_code(&self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }

    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// What ended a command's streams when it did not end normally (code name, message).
type Failure = Arc<std::sync::OnceLock<(&'static str, String)>>;

/// One stream of a command's output, as raw byte chunks in the order produced.
pub struct OutputStream {
    rx: mpsc::Receiver<Vec<u8>>,
    failure: Failure,
}

impl OutputStream {
    /// After the stream ended: the error that ended it (the box's VM died, the connection broke),
    /// or `None` when the output simply ended.
    pub fn failure(&self) -> Option<Error> {
        self.failure.get().map(|(code, msg)| Error::from_code(code, msg.clone()))
    }

    /// The next chunk, or `None` at end of stream.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        self.rx.recv().await
    }

    /// A chunk already received, without waiting; `None` when none is queued (or at the end).
    pub fn try_next(&mut self) -> Option<Vec<u8>> {
        self.rx.try_recv().ok()
    }

    /// Reads everything until end of stream.
    pub async fn read_to_end(mut self) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next().await {
            all.extend_from_slice(&chunk);
        }
        all
    }
}

/// The command's stdin.
#[derive(Clone)]
pub struct Stdin {
    tx: mpsc::Sender<ExecInput>,
}

impl Stdin {
    /// Writes bytes to the command's stdin.
    pub async fn write(&self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(MAX_CHUNK_BYTES) {
            self.send(exec_input::Kind::Stdin(chunk.to_vec())).await?;
        }
        Ok(())
    }

    /// Closes stdin: the command reads EOF.
    pub async fn close(self) -> Result<()> {
        self.send(exec_input::Kind::CloseStdin(true)).await
    }

    async fn send(&self, kind: exec_input::Kind) -> Result<()> {
        self.tx
            .send(ExecInput { kind: Some(kind) })
            .await
            .map_err(|_| Error::InvalidState("the command has already ended".into()))
    }
}

/// A running command.
pub struct Execution {
    /// Its stdout; take it to read, or leave it and the output is discarded.
    pub stdout: Option<OutputStream>,
    /// Its stderr; take it to read, or leave it and the output is discarded.
    pub stderr: Option<OutputStream>,
    /// Its stdin.
    pub stdin: Option<Stdin>,
    control: ExecControl,
    exit: oneshot::Receiver<Result<ExitStatus>>,
}

/// Everything a finished command printed, and how it ended.
#[derive(Clone, Debug)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// All of stdout.
    pub stdout: Vec<u8>,
    /// All of stderr.
    pub stderr: Vec<u8>,
}

/// Signals a running command; usable from other tasks while one waits for the command.
#[derive(Clone)]
pub struct ExecControl {
    tx: mpsc::Sender<ExecInput>,
    tty: bool,
}

impl ExecControl {
    /// Sends a signal to the command (and its process group).
    pub async fn signal(&self, signal: i32) -> Result<()> {
        if !(1..=64).contains(&signal) {
            return Err(Error::InvalidArgument(format!("signal {signal} is not a valid signal number (1 to 64)")));
        }
        self.tx
            .send(ExecInput { kind: Some(exec_input::Kind::Signal(Signal { signal })) })
            .await
            .map_err(|_| Error::InvalidState("the command has already ended".into()))
    }

    /// Kills the command with SIGKILL.
    pub async fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL).await
    }

    /// Resizes the command's terminal to `rows` x `cols`; its foreground process group gets
    /// SIGWINCH. Only for commands started with a TTY.
    pub async fn resize_tty(&self, rows: u32, cols: u32) -> Result<()> {
        if !self.tty {
            return Err(Error::InvalidState("the command has no terminal: start it with tty to resize it".into()));
        }
        let size = check_window(rows, cols)?;
        self.tx
            .send(ExecInput { kind: Some(exec_input::Kind::Resize(size)) })
            .await
            .map_err(|_| Error::InvalidState("the command has already ended".into()))
    }
}

/// A terminal size the guest can take: rows and columns in 1..=65535.
pub fn check_window(rows: u32, cols: u32) -> Result<WindowSize> {
    let max = u16::MAX as u32;
    if !(1..=max).contains(&rows) || !(1..=max).contains(&cols) {
        return Err(Error::InvalidArgument(format!(
            "terminal size {rows}x{cols} is out of range: rows and columns must be 1 to {max}"
        )));
    }
    Ok(WindowSize { rows, cols })
}

impl Execution {
    /// A handle that signals this command while another task waits for it.
    pub fn control(&self) -> ExecControl {
        self.control.clone()
    }

    /// Sends a signal to the command (and its process group).
    pub async fn signal(&self, signal: i32) -> Result<()> {
        self.control.signal(signal).await
    }

    /// Kills the command with SIGKILL.
    pub async fn kill(&self) -> Result<()> {
        self.control.kill().await
    }

    /// Resizes the command's terminal (TTY commands only).
    pub async fn resize_tty(&self, rows: u32, cols: u32) -> Result<()> {
        self.control.resize_tty(rows, cols).await
    }

    /// Waits for the command to end. Output not taken is discarded.
    pub async fn wait(mut self) -> Result<ExitStatus> {
        self.stdout = None;
        self.stderr = None;
        self.stdin = None;
        self.exit.await.map_err(|_| Error::Guest("lost the connection to the guest agent".into()))?
    }

    /// Collects stdout and stderr and waits for the end.
    pub async fn output(mut self) -> Result<Output> {
        let out = self.stdout.take().map(OutputStream::read_to_end);
        let err = self.stderr.take().map(OutputStream::read_to_end);
        let (stdout, stderr) = tokio::join!(
            async { if let Some(f) = out { f.await } else { Vec::new() } },
            async { if let Some(f) = err { f.await } else { Vec::new() } }
        );
        let status = self.wait().await?;
        Ok(Output { status, stdout, stderr })
    }
}

/// The agent's channel, with small writes gathered until the writing task has let the others
/// run once. hyper writes a call's headers from the connection's task and its first message
/// from the body's task, and each separate write wakes the emulated guest again: an exec cost
/// the agent two wake-ups for its request where one does. Big writes go straight through.
struct Gathered<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    at: usize,
    /// The yield a flush of gathered bytes waits for first.
    turn: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    yielded: bool,
}

/// Writes of at least this much skip the gathering (nothing small is waiting).
const GATHER_BYPASS: usize = 16 * 1024;

impl<S> Gathered<S> {
    fn new(inner: S) -> Self {
        Gathered { inner, buf: Vec::new(), at: 0, turn: None, yielded: false }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> Gathered<S> {
    /// Writes out what was gathered.
    fn poll_drain(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        while self.at < self.buf.len() {
            match std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.at..])) {
                Ok(0) => return std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => self.at += n,
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        }
        self.buf.clear();
        self.at = 0;
        std::task::Poll::Ready(Ok(()))
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Gathered<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Gathered<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>, data: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        if self.buf.is_empty() && data.len() >= GATHER_BYPASS {
            return Pin::new(&mut self.inner).poll_write(cx, data);
        }
        if self.buf.len() >= GATHER_BYPASS {
            std::task::ready!(self.poll_drain(cx))?;
        }
        self.buf.extend_from_slice(data);
        std::task::Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        if !self.buf.is_empty() && !self.yielded {
            let turn = self.turn.get_or_insert_with(|| Box::pin(tokio::task::yield_now()));
            std::task::ready!(turn.as_mut().poll(cx));
            self.turn = None;
            self.yielded = true;
        }
        std::task::ready!(self.poll_drain(cx))?;
        self.yielded = false;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each write it is given.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl tokio::io::AsyncWrite for Writes {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut std::task::Context<'_>, data: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
            self.0.push(data.to_vec());
            std::task::Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn small_writes_go_out_together_and_big_ones_straight() {
        use tokio::io::AsyncWriteExt;
        let mut g = Gathered::new(Writes::default());
        g.write_all(b"headers").await.unwrap();
        g.write_all(b"message").await.unwrap();
        assert!(g.inner.0.is_empty());
        g.flush().await.unwrap();
        assert_eq!(g.inner.0, [b"headersmessage".to_vec()]);
        let big = vec![1u8; GATHER_BYPASS];
        g.write_all(&big).await.unwrap();
        assert_eq!(g.inner.0.len(), 2);
        g.write_all(b"tail").await.unwrap();
        g.shutdown().await.unwrap();
        assert_eq!(g.inner.0.last().unwrap(), b"tail");
    }

    #[test]
    fn exit_status_rejects_impossible_values() {
        assert!(ExitStatus::from_guest(Some(0), None, false).unwrap().success());
        assert_eq!(ExitStatus::from_guest(None, Some(9), true).unwrap().exit_code(), 137);
        assert!(ExitStatus::from_guest(Some(256), None, false).is_err());
        assert!(ExitStatus::from_guest(None, Some(0), false).is_err());
        assert!(ExitStatus::from_guest(Some(1), Some(9), false).is_err());
        assert!(ExitStatus::from_guest(None, None, false).is_err());
    }
}
