//! The host<->guest wire protocol of BoxLite: gRPC (tonic) messages and services shared by the
//! runtime (client) and the guest agent (server).
#![allow(missing_docs)]

/// `boxlite.v1`: the guest service and the box supervisor's service.
pub mod v1 {
    tonic::include_proto!("boxlite.v1");
}

pub mod output_lane;
pub mod chunks;
pub mod hello;
pub mod tree;

/// Largest chunk of output, stdin or file data carried by one message. Bigger guest messages are
/// rejected. Big because every message costs the emulated guest the same work whatever its size:
/// 512 KiB rather than 64 KiB took copy_out from 0.36 to 0.50 of the raw channel and files.read
/// from 0.37 to 0.58 (docs/files.md).
pub const MAX_CHUNK_BYTES: usize = 512 * 1024;
/// Largest gRPC message either side accepts (a chunk plus framing).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// HTTP/2 windows every hop of the channel (host client, box supervisor, agent) opens, well past
/// hyper's 1 MiB server default, so a bulk stream is not held to a window per round trip through
/// the emulated guest.
pub const H2_STREAM_WINDOW_BYTES: u32 = 4 << 20;
pub const H2_CONNECTION_WINDOW_BYTES: u32 = 8 << 20;
/// The largest frame the host side (client and supervisor) accepts: the agent then sends a
/// chunk as one DATA frame instead of many of h2's default 16 KiB, each costing the guest
/// extra writes to its port. The agent keeps the 16 KiB default for what it receives: bigger
/// frames made a 1 GiB copy_in slower (docs/files.md).
pub const H2_MAX_FRAME_BYTES: u32 = 1 << 20;
/// The 9p mount tag of the box's inbox (a read-only share of `<box dir>/inbox`, CopyInStaged).
pub const INBOX_TAG: &str = "boxlite-inbox";
/// Largest chunk file of a staged copy either side accepts.
pub const MAX_STAGED_CHUNK_BYTES: u64 = 16 << 20;
/// Longest chunk file name of a staged copy.
pub const MAX_STAGED_NAME_BYTES: usize = 64;

/// Whether `name` can be a staged chunk's: short, of `[0-9a-z-]`, not starting with `-`. Nothing
/// else (no `/`, no `.`) is ever opened in the inbox.
pub fn is_staged_chunk_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STAGED_NAME_BYTES
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
}
/// Name of the virtio-serial port the agent serves on.
pub const AGENT_PORT_NAME: &str = "boxlite.agent";
/// Longest path either side accepts in a files call (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest file name (one path component) either side accepts.
pub const MAX_NAME_BYTES: usize = 255;
