//! The gRPC service the host talks to, served over the virtio-serial port.

use crate::{exec, files, init, port};
use boxlite_protocol::v1::guest_server::{Guest, GuestServer};
use boxlite_protocol::v1::{
    exec_input, CopyInProgress, CopyInRequest, CopyInStagedRequest, ExecInput, ExecOutput, FileChunk, FileEntry, FileOpResponse, ListDirResponse, MakeDirRequest, PathRequest,
    PingRequest, PingResponse, RemoveFileRequest, RenameFileRequest, ShutdownRequest, ShutdownResponse, WatchEvent, WatchRequest,
    WriteFileRequest,
};
use boxlite_protocol::{AGENT_PORT_NAME, MAX_MESSAGE_BYTES};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

struct Agent;

type Replies<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn replies<T: Send + 'static>(rx: tokio::sync::mpsc::Receiver<Result<T, Status>>) -> Response<Replies<T>> {
    Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

fn uptime_ms() -> u64 {
    let text = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs: f64 = text.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    (secs * 1000.0) as u64
}

/// Sets the guest's wall clock (CLOCK_REALTIME) to `unix_ms`.
/// Sets the wall clock to the host's `unix_ms`: slewed (`adjtime`) when it is off by no more than
/// [`SLEW_LIMIT_MS`] (the supervisor's periodic sync: time never jumps for programs in the box),
/// stepped otherwise (boot, resume, restore).
fn set_clock(unix_ms: u64) -> Result<(), Status> {
    const SLEW_LIMIT_MS: i64 = 200;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
    let offset_ms = unix_ms as i64 - now;
    if offset_ms.abs() <= SLEW_LIMIT_MS {
        let delta = libc::timeval { tv_sec: (offset_ms / 1000) as libc::time_t, tv_usec: ((offset_ms % 1000) * 1000) as libc::suseconds_t };
        // SAFETY: adjtime reads the timeval given; no old value is asked for.
        if unsafe { libc::adjtime(&delta, std::ptr::null_mut()) } == 0 {
            return Ok(());
        }
    }
    let ts = libc::timespec { tv_sec: (unix_ms / 1000) as libc::time_t, tv_nsec: ((unix_ms % 1000) * 1_000_000) as libc::c_long };
    // SAFETY: clock_settime reads the timespec given.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(Status::internal(format!("setting the clock: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

/// Mixes `bytes` into the kernel's input pool, credited as entropy, and reseeds the CRNG from it
/// at once (RNDADDENTROPY, RNDRESEEDCRNG).
fn add_entropy(bytes: &[u8]) -> Result<(), Status> {
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203; // _IOW('R', 0x03, int[2])
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207; // _IO('R', 0x07)
    let bytes = &bytes[..bytes.len().min(512)];
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + bytes.len());
    info.extend_from_slice(&((bytes.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(bytes.len() as i32).to_ne_bytes());
    info.extend_from_slice(bytes);
    info.resize(8 + bytes.len().div_ceil(4) * 4, 0);
    let random = std::fs::OpenOptions::new().write(true).open("/dev/urandom").map_err(|e| Status::internal(format!("/dev/urandom: {e}")))?;
    use std::os::fd::AsRawFd;
    // SAFETY: both ioctls read only the buffer given, which is laid out as rand_pool_info.
    unsafe {
        if libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) != 0 || libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG) != 0 {
            return Err(Status::internal(format!("reseeding the RNG: {}", std::io::Error::last_os_error())));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl Guest for Agent {
    async fn ping(&self, req: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let req = req.into_inner();
        // Entropy first: nothing after a restore should draw from the source's RNG state.
        if !req.add_entropy.is_empty() {
            add_entropy(&req.add_entropy)?;
        }
        if req.attach_box_disk {
            tokio::task::spawn_blocking(init::attach_box_disk)
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::internal(format!("attaching the box disk: {e}")))?;
        }
        if req.set_clock_unix_ms != 0 {
            set_clock(req.set_clock_unix_ms)?;
        }
        if !req.set_hostname.is_empty() {
            crate::net::rename(&req.set_hostname).map_err(Status::invalid_argument)?;
        }
        Ok(Response::new(PingResponse { agent_version: env!("CARGO_PKG_VERSION").into(), uptime_ms: uptime_ms() }))
    }

    type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecOutput, Status>> + Send>>;

    async fn exec(&self, req: Request<Streaming<ExecInput>>) -> Result<Response<Self::ExecStream>, Status> {
        let lane = output_lane(req.metadata());
        let mut inbound = req.into_inner();
        let start = match inbound.message().await? {
            Some(ExecInput { kind: Some(exec_input::Kind::Start(start)) }) => start,
            _ => return Err(Status::invalid_argument("the first exec message must be `start`")),
        };
        // Small buffer: output waits in the pipe (backpressure) instead of piling up in memory.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(exec::run(start, lane, inbound, tx));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn shutdown(&self, _: Request<ShutdownRequest>) -> Result<Response<ShutdownResponse>, Status> {
        // Answer first, then stop: the host treats the VM process exiting as the real signal.
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tokio::task::spawn_blocking(|| init::shutdown());
        });
        Ok(Response::new(ShutdownResponse {}))
    }

    async fn copy_in(&self, req: Request<Streaming<CopyInRequest>>) -> Result<Response<FileOpResponse>, Status> {
        files::copy_in(req.into_inner()).await.map(|_| Response::new(FileOpResponse {}))
    }

    type CopyInStagedStream = Replies<CopyInProgress>;

    async fn copy_in_staged(&self, req: Request<Streaming<CopyInStagedRequest>>) -> Result<Response<Self::CopyInStagedStream>, Status> {
        files::copy_in_staged(req.into_inner()).await.map(replies)
    }

    type CopyOutStream = Replies<FileChunk>;

    async fn copy_out(&self, req: Request<PathRequest>) -> Result<Response<Self::CopyOutStream>, Status> {
        let lane = output_lane(req.metadata());
        files::copy_out(req.into_inner().path, lane).await.map(replies)
    }

    type ReadFileStream = Replies<FileChunk>;

    async fn read_file(&self, req: Request<PathRequest>) -> Result<Response<Self::ReadFileStream>, Status> {
        let lane = output_lane(req.metadata());
        files::read_file(req.into_inner().path, lane).await.map(replies)
    }

    async fn write_file(&self, req: Request<Streaming<WriteFileRequest>>) -> Result<Response<FileOpResponse>, Status> {
        files::write_file(req.into_inner()).await.map(|_| Response::new(FileOpResponse {}))
    }

    type ListDirStream = Replies<ListDirResponse>;

    async fn list_dir(&self, req: Request<PathRequest>) -> Result<Response<Self::ListDirStream>, Status> {
        files::list_dir(req.into_inner().path).await.map(replies)
    }

    async fn stat_file(&self, req: Request<PathRequest>) -> Result<Response<FileEntry>, Status> {
        files::stat(req.into_inner().path).await.map(Response::new)
    }

    async fn make_dir(&self, req: Request<MakeDirRequest>) -> Result<Response<FileOpResponse>, Status> {
        let r = req.into_inner();
        files::make_dir(r.path, r.parents).await.map(|_| Response::new(FileOpResponse {}))
    }

    async fn remove_file(&self, req: Request<RemoveFileRequest>) -> Result<Response<FileOpResponse>, Status> {
        let r = req.into_inner();
        files::remove(r.path, r.recursive).await.map(|_| Response::new(FileOpResponse {}))
    }

    async fn rename_file(&self, req: Request<RenameFileRequest>) -> Result<Response<FileOpResponse>, Status> {
        let r = req.into_inner();
        files::rename(r.from, r.to).await.map(|_| Response::new(FileOpResponse {}))
    }

    type WatchFilesStream = Replies<WatchEvent>;

    async fn watch_files(&self, req: Request<WatchRequest>) -> Result<Response<Self::WatchFilesStream>, Status> {
        let r = req.into_inner();
        files::watch(r.path, r.recursive).await.map(replies)
    }
}

/// The output lane and this call's id on it, when the supervisor gave the call one and a host
/// is on the lane.
fn output_lane(metadata: &tonic::metadata::MetadataMap) -> Option<(std::sync::Arc<crate::output_lane::Lane>, u32)> {
    let id = metadata.get(boxlite_protocol::output_lane::ID_HEADER)?.to_str().ok()?.parse::<u32>().ok()?;
    Some((crate::output_lane::current()?, id))
}

/// Runs the agent until the VM ends; returns the process exit code.
pub fn run() -> i32 {
    // One thread per vCPU, and none besides on one vCPU: there a second worker buys no
    // parallelism, only a guest context switch wherever a task wakes on the other thread.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = match cpus {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.min(4));
            b
        }
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            init::console(&format!("boxlite-guest: tokio runtime: {e}"));
            return 1;
        }
    };
    rt.block_on(serve())
}

async fn serve() -> i32 {
    let path = match port::find(AGENT_PORT_NAME, 500).await {
        Ok(p) => p,
        Err(e) => {
            init::console(&format!("boxlite-guest: {e}"));
            return 1;
        }
    };
    // The device announces its ports together: looked for once the agent's own is there.
    tokio::spawn(crate::output_lane::serve(connection_nonce));
    // One HTTP/2 connection per host connection; when the host goes away the port reads EOF and
    // the next host gets a fresh connection, after a handshake that skips whatever an earlier
    // connection left in the channel (protocol::hello).
    loop {
        let stream = match port::FdStream::open(&path) {
            Ok(s) => s,
            Err(e) => {
                init::console(&format!("boxlite-guest: open {}: {e}", path.display()));
                return 1;
            }
        };
        let Ok(stream) = boxlite_protocol::hello::agent(stream, connection_nonce()).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let service = GuestServer::new(Agent)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let routes = tower::ServiceExt::map_request(tonic::service::Routes::new(service).prepare(), |req: http::Request<Incoming>| {
            req.map(ResetIsError)
        });
        let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(boxlite_protocol::H2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(boxlite_protocol::H2_CONNECTION_WINDOW_BYTES)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(routes));
        let _ = conn.await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A nonce for one opening of the port: never one an earlier opening (in this VM, or in the VM a
/// snapshot was taken of) used, whatever the RNG's state.
fn connection_nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random));
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    u64::from_le_bytes(random) ^ (ts.tv_sec as u64).wrapping_mul(1_000_000_007) ^ ts.tv_nsec as u64 ^ COUNT.fetch_add(1, Ordering::Relaxed) << 48
}

/// A request body whose reset (or broken connection) reaches the handler as an error. tonic's
/// server decoder takes a body error of code CANCELLED for the end of the stream
/// (`tonic/src/codec/decode.rs`), and RST_STREAM(CANCEL), what a host sends when it drops a call,
/// is exactly that: without this, a cancelled upload would look like one that ended cleanly.
struct ResetIsError(Incoming);

impl http_body::Body for ResetIsError {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.0).poll_frame(cx).map_err(|e| Status::aborted(format!("the host cut the stream off: {e}")))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}
