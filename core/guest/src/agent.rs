//! The gRPC service the host talks to, served over the virtio-serial port.

use crate::{exec, init, port};
use boxlite_protocol::v1::guest_server::{Guest, GuestServer};
use boxlite_protocol::v1::{exec_input, ExecInput, ExecOutput, PingRequest, PingResponse, ShutdownRequest, ShutdownResponse};
use boxlite_protocol::{AGENT_PORT_NAME, MAX_MESSAGE_BYTES};
use std::pin::Pin;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

struct Agent;

fn uptime_ms() -> u64 {
    let text = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs: f64 = text.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    (secs * 1000.0) as u64
}

#[tonic::async_trait]
impl Guest for Agent {
    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        Ok(Response::new(PingResponse { agent_version: env!("CARGO_PKG_VERSION").into(), uptime_ms: uptime_ms() }))
    }

    type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecOutput, Status>> + Send>>;

    async fn exec(&self, req: Request<Streaming<ExecInput>>) -> Result<Response<Self::ExecStream>, Status> {
        let mut inbound = req.into_inner();
        let start = match inbound.message().await? {
            Some(ExecInput { kind: Some(exec_input::Kind::Start(start)) }) => start,
            _ => return Err(Status::invalid_argument("the first exec message must be `start`")),
        };
        // Small buffer: output waits in the pipe (backpressure) instead of piling up in memory.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(exec::run(start, inbound, tx));
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
}

/// Runs the agent until the VM ends; returns the process exit code.
pub fn run() -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            init::console(&format!("boxlite-guest: tokio runtime: {e}"));
            return 1;
        }
    };
    rt.block_on(serve())
}

async fn serve() -> i32 {
    let path = match port::find(AGENT_PORT_NAME).await {
        Ok(p) => p,
        Err(e) => {
            init::console(&format!("boxlite-guest: {e}"));
            return 1;
        }
    };
    // One HTTP/2 connection per host connection; when the host goes away the port reads EOF and
    // the next host gets a fresh connection.
    loop {
        let stream = match port::FdStream::open(&path) {
            Ok(s) => s,
            Err(e) => {
                init::console(&format!("boxlite-guest: open {}: {e}", path.display()));
                return 1;
            }
        };
        let service = GuestServer::new(Agent)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let routes = tonic::service::Routes::new(service).prepare();
        let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(routes));
        let _ = conn.await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
