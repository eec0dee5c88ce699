//! What the supervisor serves on `shim.sock`: the `Shim` service itself, and every `Guest` call
//! forwarded over the one HTTP/2 connection to the agent (HTTP/2 multiplexes any number of
//! concurrent calls from any number of clients onto it).

use super::output_lane::{Lane as OutputLane, Output};
use crate::guest::Guest;
use boxlite_protocol::v1::shim_server::{Shim, ShimServer};
use boxlite_protocol::v1::{
    exec_output, ExecOutput, PauseRequest, PauseResponse, ResumeRequest, ResumeResponse, SetNetworkRequest, SetNetworkResponse,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse, StopRequest, StopResponse, SuspendRequest, SuspendResponse,
};
use bytes::Bytes;
use http_body::{Body, Frame};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::body::Body as TonicBody;
use tower::{Service, ServiceExt};

const GUEST_PREFIX: &str = "/boxlite.v1.Guest/";
const SHIM_PREFIX: &str = "/boxlite.v1.Shim/";
const EXEC_PATH: &str = "/boxlite.v1.Guest/Exec";
/// File calls whose bytes come on the output lane.
const LANE_FILE_PATHS: [&str; 2] = ["/boxlite.v1.Guest/ReadFile", "/boxlite.v1.Guest/CopyOut"];
const SHUTDOWN_PATH: &str = "/boxlite.v1.Guest/Shutdown";
/// A watch may stay open for as long as the box runs: it does not keep the box from being idle.
const WATCH_PATH: &str = "/boxlite.v1.Guest/WatchFiles";

/// State shared by every connection of one supervisor.
pub struct Shared {
    guest: Guest,
    stop: tokio::sync::mpsc::UnboundedSender<bool>,
    ended: tokio::sync::watch::Receiver<bool>,
    shim_pid: u32,
    vm_pid: u32,
    boot_ms: u64,
    started_at: u64,
    commands: AtomicU64,
    exec_errors: AtomicU64,
    active_calls: AtomicU64,
    last_activity: AtomicU64,
    /// The previous CPU sample (when, VM CPU microseconds) for `cpu_percent`.
    cpu_sample: Mutex<(Instant, u64)>,
    /// The network helper's control socket, for a box with a network.
    net_control: Option<std::path::PathBuf>,
    /// Why the box is failing (a helper it needs died): running commands end with this error
    /// instead of the exit the shutdown gives them, and new calls are refused with it.
    failure: std::sync::OnceLock<String>,
    /// Pausing and resuming the VM (QMP) and recording it.
    pause: Pause,
    /// The VM's memory was saved and it is being ended: the box is recorded `suspended`.
    suspended: AtomicBool,
    /// The output lane, once the agent took it (execs before that send output over gRPC).
    pub lane: std::sync::OnceLock<Arc<OutputLane>>,
}

/// The VM's vCPUs stopped or running, and saves of its state, one request at a time.
pub struct Pause {
    qmp: Option<std::path::PathBuf>,
    /// The box's disk overlay (frozen into a layer by a snapshot).
    disk: std::path::PathBuf,
    /// The box's home: memory files and layers are written nowhere else.
    home: std::path::PathBuf,
    /// Records the box `paused` (true) or `running` (false); false if the record is not ours.
    record: Box<dyn Fn(bool) -> bool + Send + Sync>,
    paused: AtomicBool,
    changing: tokio::sync::Mutex<()>,
}

impl Pause {
    pub fn new(qmp: Option<std::path::PathBuf>, box_dir: &std::path::Path, record: Box<dyn Fn(bool) -> bool + Send + Sync>) -> Self {
        let home = box_dir.parent().and_then(|boxes| boxes.parent()).unwrap_or(box_dir).to_path_buf();
        Pause { qmp, disk: box_dir.join("disk.qcow2"), home, record, paused: AtomicBool::new(false), changing: tokio::sync::Mutex::new(()) }
    }

    /// A path a client asked the supervisor to write: absolute, in the home, no `..`.
    fn in_home(&self, path: &str) -> Result<std::path::PathBuf, tonic::Status> {
        let p = std::path::Path::new(path);
        let plain = p.components().all(|c| matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_)));
        if !(p.is_absolute() && plain && p.starts_with(&self.home)) {
            return Err(tonic::Status::invalid_argument(format!("{path} is not a path in the box's home {}", self.home.display())));
        }
        Ok(p.to_path_buf())
    }

    fn qmp(&self) -> Result<std::path::PathBuf, tonic::Status> {
        self.qmp.clone().ok_or_else(|| tonic::Status::failed_precondition("this VM engine cannot save a box's memory"))
    }

    /// Memory and disk at one instant (see `snapshot::snapshot`); the guest's clock is set again
    /// after the moment its vCPUs stood still.
    async fn snapshot(&self, req: SnapshotRequest, guest: &Guest) -> Result<super::snapshot::Saved, tonic::Status> {
        let (memory, layer) = (self.in_home(&req.memory_path)?, self.in_home(&req.layer_path)?);
        let qmp = self.qmp()?;
        let _one_at_a_time = self.changing.lock().await;
        let (disk, was_paused) = (self.disk.clone(), self.is_paused());
        let saved = tokio::task::spawn_blocking(move || super::snapshot::snapshot(&qmp, &disk, &layer, &memory, was_paused))
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))?
            .map_err(tonic::Status::unavailable)?;
        if !was_paused {
            let _ = tokio::time::timeout(Duration::from_secs(10), guest.set_clock()).await;
        }
        Ok(saved)
    }

    /// Saves memory for a suspend; holds off pauses and resumes until the VM is ended.
    async fn suspend(&self, req: SuspendRequest) -> Result<(super::snapshot::Saved, tokio::sync::MutexGuard<'_, ()>), tonic::Status> {
        let memory = self.in_home(&req.memory_path)?;
        let qmp = self.qmp()?;
        let guard = self.changing.lock().await;
        let was_paused = self.is_paused();
        let saved = tokio::task::spawn_blocking(move || super::snapshot::suspend(&qmp, &memory, was_paused))
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))?
            .map_err(tonic::Status::unavailable)?;
        Ok((saved, guard))
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// QMP `stop` (pause) or `cont` (resume) and the record; with a resume, the guest's clock is
    /// set to the host's. Nothing happens when the VM already is as asked.
    pub async fn set(&self, pause: bool, guest: &Guest) -> Result<(), String> {
        let _one_at_a_time = self.changing.lock().await;
        if self.is_paused() == pause {
            return Ok(());
        }
        let Some(qmp) = self.qmp.clone() else { return Err("this VM engine cannot pause a box".into()) };
        let command = if pause { "stop" } else { "cont" };
        tokio::task::spawn_blocking(move || crate::engine::qmp::command(&qmp, command))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("QMP {command}: {e}"))?;
        self.paused.store(pause, Ordering::Release);
        if !pause {
            // The guest's clock stood still while paused.
            if let Err(e) = tokio::time::timeout(Duration::from_secs(10), guest.set_clock()).await.unwrap_or(Err(crate::error::Error::Guest("timed out".into()))) {
                eprintln!("boxlite-shim: setting the guest clock after resume: {e}");
            }
        }
        if !(self.record)(pause) {
            eprintln!("boxlite-shim: recording the box {} failed", if pause { "paused" } else { "running" });
        }
        Ok(())
    }
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        guest: Guest,
        stop: tokio::sync::mpsc::UnboundedSender<bool>,
        ended: tokio::sync::watch::Receiver<bool>,
        shim_pid: u32,
        vm_pid: u32,
        boot_ms: u64,
        started_at: u64,
        net_control: Option<std::path::PathBuf>,
        pause: Pause,
    ) -> Self {
        Shared {
            guest,
            stop,
            ended,
            shim_pid,
            vm_pid,
            boot_ms,
            started_at,
            commands: AtomicU64::new(0),
            exec_errors: AtomicU64::new(0),
            active_calls: AtomicU64::new(0),
            last_activity: AtomicU64::new(started_at),
            cpu_sample: Mutex::new((Instant::now(), vm_cpu_micros(vm_pid))),
            net_control,
            failure: std::sync::OnceLock::new(),
            pause,
            suspended: AtomicBool::new(false),
            lane: std::sync::OnceLock::new(),
        }
    }

    /// Lets the VM run again if it is paused (before a stop: the agent must answer).
    pub async fn unpause(&self) {
        if self.pause.is_paused() {
            if let Err(e) = self.pause.set(false, &self.guest).await {
                eprintln!("boxlite-shim: resuming before the stop: {e}");
            }
        }
    }

    /// Whether the VM's vCPUs are stopped.
    pub fn is_paused(&self) -> bool {
        self.pause.is_paused()
    }

    /// Whether the box's memory was saved by a suspend (the VM is ended for it).
    pub fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::Acquire)
    }

    /// Marks the box failing for `reason`, before the supervisor stops it.
    pub fn fail(&self, reason: String) {
        let _ = self.failure.set(reason);
    }

    fn touch(&self) {
        self.last_activity.store(super::now_millis(), Ordering::Relaxed);
    }

    /// Resolves once no guest call (an exec, a file call; a watch does not count) has run or
    /// started for `limit_ms` (never without a limit). A paused box is not idle: it was kept on
    /// purpose.
    pub async fn idle(&self, limit_ms: Option<u64>) {
        let Some(limit) = limit_ms else { return std::future::pending().await };
        loop {
            let now = super::now_millis();
            if self.pause.is_paused() {
                self.touch();
            }
            let due = self.last_activity.load(Ordering::Relaxed) + limit;
            let busy = self.active_calls.load(Ordering::Relaxed) > 0;
            if !busy && now >= due {
                return;
            }
            let wait = if busy { limit } else { due - now };
            tokio::time::sleep(Duration::from_millis(wait.max(10))).await;
        }
    }
}

/// Accepts clients until the supervisor exits.
pub async fn serve(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(boxlite_protocol::H2_STREAM_WINDOW_BYTES)
                .initial_connection_window_size(boxlite_protocol::H2_CONNECTION_WINDOW_BYTES)
                .max_frame_size(boxlite_protocol::H2_MAX_FRAME_BYTES)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(shared: Arc<Shared>, req: http::Request<hyper::body::Incoming>) -> Result<http::Response<TonicBody>, Infallible> {
    let path = req.uri().path().to_string();
    if path.starts_with(SHIM_PREFIX) {
        let mut server = ShimServer::new(ShimService { shared });
        return Ok(server.call(req).await.unwrap_or_else(|e| match e {}));
    }
    if !path.starts_with(GUEST_PREFIX) {
        return Ok(status_response(tonic::Status::unimplemented(format!("no such method {path}"))));
    }
    if path == SHUTDOWN_PATH {
        // Stops go through the supervisor, which records them and ends the VM in order.
        return Ok(status_response(tonic::Status::permission_denied("stop the box through its supervisor (Shim.Stop)")));
    }
    if let Some(reason) = shared.failure.get() {
        return Ok(status_response(tonic::Status::unavailable(reason.clone())));
    }
    if shared.pause.is_paused() {
        // A call made now would wait, unanswered, for a resume that may never come.
        return Ok(status_response(tonic::Status::failed_precondition("the box is paused: resume() it first")));
    }
    let exec = path == EXEC_PATH;
    let counted = path != WATCH_PATH;
    if exec {
        shared.commands.fetch_add(1, Ordering::Relaxed);
    }
    if counted {
        shared.active_calls.fetch_add(1, Ordering::Relaxed);
    }
    shared.touch();
    // An exec's output and a file call's bytes come on the lane, under the id the agent is told
    // in a header.
    let mut req = req;
    req.headers_mut().remove(boxlite_protocol::output_lane::ID_HEADER);
    let file = LANE_FILE_PATHS.contains(&path.as_str());
    let lane = match (exec || file, shared.lane.get()) {
        (true, Some(lane)) => lane.open(file).map(|(id, output)| (lane.clone(), id, output)),
        _ => None,
    };
    if let Some((_, id, _)) = &lane {
        req.headers_mut().insert(boxlite_protocol::output_lane::ID_HEADER, http::HeaderValue::from(*id));
    }
    let mut channel = shared.guest.channel();
    let resp = match channel.ready().await {
        Ok(ready) => ready.call(req.map(TonicBody::new)).await,
        Err(e) => Err(e),
    };
    match resp {
        Ok(resp) if counted => Ok(resp.map(|body| {
            let body = match lane {
                Some((lane, id, output)) => TonicBody::new(LaneBody::new(body, lane, id, output, file)),
                None => body,
            };
            TonicBody::new(CallBody { inner: body, shared, first: exec, failed: false })
        })),
        Ok(resp) => Ok(resp),
        Err(e) => {
            if let Some((lane, id, _)) = lane {
                lane.close(id);
            }
            if counted {
                shared.active_calls.fetch_sub(1, Ordering::Relaxed);
            }
            if exec {
                shared.exec_errors.fetch_add(1, Ordering::Relaxed);
            }
            Ok(status_response(tonic::Status::unavailable(format!("guest agent unreachable: {e}"))))
        }
    }
}

fn status_response(status: tonic::Status) -> http::Response<TonicBody> {
    status.into_http()
}

/// A guest call's response body: marks the call finished (for the idle limit) when the stream ends
/// or is dropped, ends the stream with the box's failure (as gRPC trailers) once it is failing,
/// and for an exec counts a command that could not start (its first message is `spawn_error`).
struct CallBody {
    inner: TonicBody,
    shared: Arc<Shared>,
    /// An exec's first frame is still to come.
    first: bool,
    failed: bool,
}

impl Body for CallBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        if let Some(reason) = self.shared.failure.get().cloned() {
            self.failed = true;
            let mut trailers = http::HeaderMap::new();
            let _ = tonic::Status::unavailable(reason).add_header(&mut trailers);
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let (true, Some(data)) = (self.first, frame.data_ref()) {
                self.first = false;
                if is_spawn_error(data) {
                    self.shared.exec_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }
}

impl Drop for CallBody {
    fn drop(&mut self) {
        if self.shared.active_calls.fetch_sub(1, Ordering::Relaxed) == 1 {
            give_back_memory();
        }
        self.shared.touch();
    }
}

/// A call's response with its bytes from the lane merged in, in the order a single stream
/// would have had. An exec: `started` first, then the output as the lane brings it, and `exit`
/// (and what follows it) only once as many frames as it counts were forwarded; an agent that
/// says in `started` that it does not use the lane for the command is passed through. A file
/// call: the bytes, then the last `FileChunk` once the frames it counts were forwarded; an agent
/// that sends the bytes in the stream instead is passed through. If the lane closes before all
/// the frames came, the call fails: it never ends as if complete.
struct LaneBody {
    inner: TonicBody,
    lane: Arc<OutputLane>,
    id: u32,
    /// A file call's response (`FileChunk`s), not an exec's.
    file: bool,
    /// `None` once the call's bytes are complete, do not come on the lane, or the lane closed.
    output: Option<tokio::sync::mpsc::Receiver<Output>>,
    /// The lane closed under the call.
    lost: bool,
    /// Lane frames may go (an exec's `started` went first).
    started: bool,
    /// Frames of the lane forwarded.
    forwarded: u32,
    /// Bytes of the agent's stream not forwarded yet.
    pending: bytes::BytesMut,
    /// The message counting the frames is at the front of `pending`, waiting for the last of them.
    holding: bool,
    upstream_done: bool,
    trailers: Option<http::HeaderMap>,
}

impl LaneBody {
    fn new(inner: TonicBody, lane: Arc<OutputLane>, id: u32, output: tokio::sync::mpsc::Receiver<Output>, file: bool) -> Self {
        LaneBody {
            inner,
            lane,
            id,
            file,
            output: Some(output),
            lost: false,
            started: file,
            forwarded: 0,
            pending: Default::default(),
            holding: false,
            upstream_done: false,
            trailers: None,
        }
    }

    /// The frames a message of the agent's stream says must be forwarded before it, or `None`
    /// when it says the lane is not used.
    fn frames_before(&self, message: &[u8]) -> Option<u32> {
        use prost::Message;
        if self.file {
            let chunk = boxlite_protocol::v1::FileChunk::decode(message).ok()?;
            return chunk.data.is_empty().then_some(chunk.output_lane_frames);
        }
        match ExecOutput::decode(message).ok()?.kind? {
            exec_output::Kind::Started(s) => s.output_lane.then_some(0),
            exec_output::Kind::Exit(e) => Some(e.output_lane_frames),
            _ => None,
        }
    }

    /// The whole gRPC messages at the front of `pending` that may go now. A file call's last
    /// message, which only counts the frames, is the lane's own: it is dropped.
    fn releasable(&mut self) -> Option<Bytes> {
        self.holding = false;
        if self.started && self.output.is_none() && !self.lost {
            return (!self.pending.is_empty()).then(|| self.pending.split().freeze());
        }
        let mut out = bytes::BytesMut::new();
        while let Some(len) = grpc_message_len(&self.pending) {
            let counted = self.frames_before(&self.pending[5..len]);
            match counted {
                Some(frames) if self.forwarded < frames => {
                    self.holding = true;
                    break;
                }
                Some(_) => {}
                None => self.output = None,
            }
            self.started = true;
            let message = self.pending.split_to(len);
            if !(self.file && counted.is_some()) {
                out.unsplit(message);
            }
        }
        (!out.is_empty()).then(|| out.freeze())
    }
}

/// The length of the whole gRPC message (5-byte prefix included) at the front of `buf`.
fn grpc_message_len(buf: &[u8]) -> Option<usize> {
    let prefix: [u8; 5] = buf.get(..5)?.try_into().ok()?;
    let len = 5 + u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    (buf.len() >= len).then_some(len)
}

impl Body for LaneBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let (true, Some(output)) = (this.started, &mut this.output) {
                match output.poll_recv(cx) {
                    Poll::Ready(Some(Output(message, len))) => {
                        this.lane.took(this.id, len);
                        this.forwarded += 1;
                        return Poll::Ready(Some(Ok(Frame::data(message))));
                    }
                    Poll::Ready(None) => {
                        this.output = None;
                        this.lost = true;
                    }
                    Poll::Pending => {}
                }
            }
            if let Some(ready) = this.releasable() {
                return Poll::Ready(Some(Ok(Frame::data(ready))));
            }
            if this.holding && this.lost {
                this.upstream_done = true;
                this.pending.clear();
                this.trailers = None;
                return Poll::Ready(Some(Err(tonic::Status::unavailable("the box's output lane closed before all of the call's output came"))));
            }
            if this.holding {
                return Poll::Pending; // woken by the lane
            }
            if this.upstream_done {
                if !this.pending.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(this.pending.split().freeze()))));
                }
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.pending.extend_from_slice(&data),
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                        this.upstream_done = true;
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.upstream_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.upstream_done && self.pending.is_empty() && self.trailers.is_none()
    }
}

impl Drop for LaneBody {
    fn drop(&mut self) {
        self.lane.close(self.id);
    }
}

/// Once no call runs, hands freed heap back to the system when glibc holds more than 256 KiB
/// of it: the buffers of a big copy through the supervisor stay with glibc otherwise (RSS 5.2
/// MiB after the bench's copies against 4.7 after execs alone, docs/process-model.md).
fn give_back_memory() {
    // SAFETY: glibc's heap statistics and trim; no pointer is kept.
    unsafe {
        if libc::mallinfo2().fordblks > 256 * 1024 {
            libc::malloc_trim(0);
        }
    }
}

/// Whether a gRPC data frame (1-byte flag, 4-byte length, message) holds a `spawn_error`.
fn is_spawn_error(frame: &[u8]) -> bool {
    use prost::Message;
    if frame.len() < 5 || frame[0] != 0 {
        return false;
    }
    let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    let Some(msg) = frame.get(5..5 + len) else { return false };
    matches!(ExecOutput::decode(msg).map(|m| m.kind), Ok(Some(exec_output::Kind::SpawnError(_))))
}

/// CPU time (user + system) of a process in microseconds, from /proc.
fn vm_cpu_micros(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum();
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000 / hz
}

/// Resident memory of a process in bytes, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

struct ShimService {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Shim for ShimService {
    async fn stop(&self, req: tonic::Request<StopRequest>) -> Result<tonic::Response<StopResponse>, tonic::Status> {
        let _ = self.shared.stop.send(req.into_inner().force);
        let mut ended = self.shared.ended.clone();
        let _ = ended.wait_for(|e| *e).await;
        Ok(tonic::Response::new(StopResponse {}))
    }

    async fn status(&self, _: tonic::Request<StatusRequest>) -> Result<tonic::Response<StatusResponse>, tonic::Status> {
        let s = &self.shared;
        let cpu = vm_cpu_micros(s.vm_pid);
        let cpu_percent = {
            let mut prev = s.cpu_sample.lock().unwrap_or_else(|p| p.into_inner());
            let wall = prev.0.elapsed().as_micros().max(1) as u64;
            let pct = cpu.saturating_sub(prev.1) as f64 * 100.0 / wall as f64;
            *prev = (Instant::now(), cpu);
            pct
        };
        let net = super::net_helper::stats(s.net_control.as_deref()).await;
        Ok(tonic::Response::new(StatusResponse {
            shim_pid: s.shim_pid,
            vm_pid: s.vm_pid,
            commands_executed: s.commands.load(Ordering::Relaxed),
            exec_errors: s.exec_errors.load(Ordering::Relaxed),
            vm_cpu_micros: cpu,
            vm_rss_bytes: rss_bytes(s.vm_pid),
            boot_ms: s.boot_ms,
            started_at: s.started_at,
            last_activity_at: s.last_activity.load(Ordering::Relaxed),
            cpu_percent,
            network_bytes_sent: net.bytes_sent,
            network_bytes_received: net.bytes_received,
            network_tcp_connections: net.tcp_connections,
        }))
    }

    async fn pause(&self, _: tonic::Request<PauseRequest>) -> Result<tonic::Response<PauseResponse>, tonic::Status> {
        self.shared.pause.set(true, &self.shared.guest).await.map_err(tonic::Status::unavailable)?;
        Ok(tonic::Response::new(PauseResponse {}))
    }

    async fn resume(&self, _: tonic::Request<ResumeRequest>) -> Result<tonic::Response<ResumeResponse>, tonic::Status> {
        self.shared.pause.set(false, &self.shared.guest).await.map_err(tonic::Status::unavailable)?;
        Ok(tonic::Response::new(ResumeResponse {}))
    }

    async fn snapshot(&self, req: tonic::Request<SnapshotRequest>) -> Result<tonic::Response<SnapshotResponse>, tonic::Status> {
        let saved = self.shared.pause.snapshot(req.into_inner(), &self.shared.guest).await?;
        Ok(tonic::Response::new(SnapshotResponse { memory_bytes: saved.memory_bytes, paused_ms: saved.paused_ms }))
    }

    async fn suspend(&self, req: tonic::Request<SuspendRequest>) -> Result<tonic::Response<SuspendResponse>, tonic::Status> {
        let (saved, _no_resume) = self.shared.pause.suspend(req.into_inner()).await?;
        // The memory is saved: end the VM hard (a graceful stop would change what was saved).
        self.shared.suspended.store(true, Ordering::Release);
        let _ = self.shared.stop.send(true);
        let mut ended = self.shared.ended.clone();
        let _ = ended.wait_for(|e| *e).await;
        Ok(tonic::Response::new(SuspendResponse { memory_bytes: saved.memory_bytes }))
    }

    async fn set_network(&self, req: tonic::Request<SetNetworkRequest>) -> Result<tonic::Response<SetNetworkResponse>, tonic::Status> {
        let network: crate::net::Network = serde_json::from_str(&req.into_inner().network_json)
            .map_err(|e| tonic::Status::invalid_argument(format!("network policy: {e}")))?;
        let Some(control) = self.shared.net_control.as_deref() else {
            return Err(tonic::Status::failed_precondition("the box has no network (network 'none'); its policy cannot be set"));
        };
        if !network.enabled() {
            return Err(tonic::Status::invalid_argument("a running box's network cannot be removed; stop it and create one with network 'none'"));
        }
        let policy = serde_json::to_value(network.policy()).unwrap_or_default();
        super::net_helper::request(control, serde_json::json!({ "op": "set_policy", "policy": policy }))
            .await
            .map_err(tonic::Status::unavailable)?;
        Ok(tonic::Response::new(SetNetworkResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn frame(msg: &ExecOutput) -> Vec<u8> {
        let body = msg.encode_to_vec();
        let mut f = vec![0];
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(&body);
        f
    }

    #[test]
    fn spawn_errors_are_recognized_in_the_first_frame() {
        let err = ExecOutput { kind: Some(exec_output::Kind::SpawnError("nope".into())), ..Default::default() };
        assert!(is_spawn_error(&frame(&err)));
        let ok = ExecOutput { kind: Some(exec_output::Kind::Started(Default::default())), ..Default::default() };
        assert!(!is_spawn_error(&frame(&ok)));
        assert!(!is_spawn_error(&frame(&err)[..6]));
        assert!(!is_spawn_error(b""));
    }

    /// An agent's response stream, frame by frame.
    struct Frames(std::collections::VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = tonic::Status;
        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    async fn next(body: &mut LaneBody) -> Option<Frame<Bytes>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await.map(|f| f.unwrap())
    }

    fn kinds(data: &[u8]) -> Vec<exec_output::Kind> {
        let mut at = 0;
        let mut kinds = Vec::new();
        while let Some(len) = grpc_message_len(&data[at..]) {
            kinds.push(ExecOutput::decode(&data[at + 5..at + len]).unwrap().kind.unwrap());
            at += len;
        }
        assert_eq!(at, data.len(), "a message cut short");
        kinds
    }

    #[tokio::test]
    async fn exit_waits_for_the_output_it_counts() {
        use super::super::output_lane::tests::frame as lane_frame;
        use boxlite_protocol::output_lane::Kind as LaneKind;
        use boxlite_protocol::v1::{ExecExit, ExecStarted};
        let (lane, mut credits) = OutputLane::detached();
        let (id, output) = lane.open(false).unwrap();
        let started = ExecOutput { kind: Some(exec_output::Kind::Started(ExecStarted { pid: 9, output_lane: true })), ..Default::default() };
        let exit = ExecExit { code: Some(0), output_lane_frames: 2, ..Default::default() };
        // `started` and `exit` in one frame, as a fast command's can come.
        let mut both = frame(&started);
        both.extend(frame(&ExecOutput { kind: Some(exec_output::Kind::Exit(exit.clone())), ..Default::default() }));
        let upstream = Frames([Frame::data(Bytes::from(both)), Frame::trailers(http::HeaderMap::new())].into());
        let mut body = LaneBody::new(TonicBody::new(upstream), lane.clone(), id, output, false);

        assert_eq!(kinds(next(&mut body).await.unwrap().data_ref().unwrap()), [exec_output::Kind::Started(ExecStarted { pid: 9, output_lane: true })]);
        let agent = tokio::spawn({
            let lane = lane.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut wire = lane_frame(LaneKind::Stdout, id, b"out");
                wire.extend(lane_frame(LaneKind::Stderr, id, b"err"));
                lane.feed(&wire).await
            }
        });
        assert_eq!(kinds(next(&mut body).await.unwrap().data_ref().unwrap()), [exec_output::Kind::Stdout(b"out".to_vec())]);
        assert_eq!(kinds(next(&mut body).await.unwrap().data_ref().unwrap()), [exec_output::Kind::Stderr(b"err".to_vec())]);
        assert_eq!(kinds(next(&mut body).await.unwrap().data_ref().unwrap()), [exec_output::Kind::Exit(exit)]);
        assert!(next(&mut body).await.unwrap().is_trailers());
        assert!(next(&mut body).await.is_none());
        agent.await.unwrap();
        assert_eq!((credits.recv().await, credits.recv().await), (Some((id, 4096)), Some((id, 4096))));
    }

    #[tokio::test]
    async fn a_command_not_on_the_lane_passes_through() {
        let (lane, _credits) = OutputLane::detached();
        let (id, output) = lane.open(false).unwrap();
        let started = ExecOutput { kind: Some(exec_output::Kind::Started(Default::default())), ..Default::default() };
        let out = ExecOutput { kind: Some(exec_output::Kind::Stdout(b"hi".to_vec())), ..Default::default() };
        let exit = ExecOutput { kind: Some(exec_output::Kind::Exit(Default::default())), ..Default::default() };
        let upstream = Frames([frame(&started), frame(&out), frame(&exit)].into_iter().map(|f| Frame::data(Bytes::from(f))).collect());
        let mut body = LaneBody::new(TonicBody::new(upstream), lane, id, output, false);
        let mut seen = Vec::new();
        while let Some(f) = next(&mut body).await {
            seen.extend(kinds(f.data_ref().unwrap()));
        }
        assert_eq!(seen.len(), 3);
        assert!(matches!(seen[2], exec_output::Kind::Exit(_)));
    }

    #[tokio::test]
    async fn a_file_call_ends_after_its_frames_and_the_count_is_dropped() {
        use super::super::output_lane::tests::frame as lane_frame;
        use boxlite_protocol::output_lane::Kind as LaneKind;
        use boxlite_protocol::v1::FileChunk;
        let grpc = |m: &FileChunk| {
            let body = m.encode_to_vec();
            let mut f = vec![0];
            f.extend_from_slice(&(body.len() as u32).to_be_bytes());
            f.extend_from_slice(&body);
            f
        };
        let (lane, _credits) = OutputLane::detached();
        let (id, output) = lane.open(true).unwrap();
        let count = grpc(&FileChunk { data: Vec::new(), output_lane_frames: 1 });
        let upstream = Frames([Frame::data(Bytes::from(count)), Frame::trailers(http::HeaderMap::new())].into());
        let mut body = LaneBody::new(TonicBody::new(upstream), lane.clone(), id, output, true);
        let feeder = tokio::spawn({
            let lane = lane.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                lane.feed(&lane_frame(LaneKind::Data, id, b"file bytes")).await
            }
        });
        let first = next(&mut body).await.unwrap().into_data().unwrap();
        assert_eq!(FileChunk::decode(&first[5..]).unwrap().data, b"file bytes");
        assert!(next(&mut body).await.unwrap().is_trailers(), "the count is not forwarded");
        assert!(next(&mut body).await.is_none());
        feeder.await.unwrap();

        // The lane closing before the counted frames came fails the call.
        let (lane, _credits) = OutputLane::detached();
        let (id, output) = lane.open(true).unwrap();
        let count = grpc(&FileChunk { data: Vec::new(), output_lane_frames: 2 });
        let upstream = Frames([Frame::data(Bytes::from(count))].into());
        let mut body = LaneBody::new(TonicBody::new(upstream), lane.clone(), id, output, true);
        lane.feed(&lane_frame(LaneKind::Data, id, b"half")).await;
        lane.close_all();
        assert!(next(&mut body).await.unwrap().is_data());
        let err = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await.unwrap().unwrap_err();
        assert!(err.message().contains("output lane closed"), "{err}");
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        assert!(rss_bytes(me) > 0);
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(vm_cpu_micros(me) > 0, "{x}");
    }
}
