//! The output lane: a second virtio-serial port (`boxlite.output`) on which the agent sends a
//! command's stdout and stderr (straight from the command's pipe, with `splice(2)`) and the
//! bytes of `ReadFile` and `CopyOut` to the box supervisor, instead of as gRPC messages over
//! HTTP/2. Under emulation every copy and every
//! layer of framing costs the guest; on this lane the guest copies nothing and frames each
//! chunk with 12 bytes (docs/exec.md).
//!
//! The lane starts with the same handshake as the agent's port (`hello`). Then:
//! - agent → host: output frames, a header, then `len` bytes of one command's stdout or
//!   stderr, or of a file call's data;
//! - host → agent: `Credit` frames. The agent sends a command at most [`WINDOW`] of [`cost`]
//!   ahead of the credit the host gave back for it, so a command whose output nobody reads
//!   stalls only itself.
//!
//! Which command a frame belongs to is the id the supervisor gave the exec call in its
//! [`ID_HEADER`] request header. The agent says in `started.output_lane` whether it uses the
//! lane for that command, and in `exit.output_lane_frames` how many frames its output took: the
//! supervisor forwards `exit` once it has forwarded them (a command with no output costs the lane
//! nothing). A file call's bytes all go on the lane, and its last message, a `FileChunk` with no
//! data, counts their frames the same way.

/// Name of the virtio-serial port of the output lane.
pub const PORT_NAME: &str = "boxlite.output";
/// The request header (gRPC metadata) that carries an exec call's id on the lane.
pub const ID_HEADER: &str = "boxlite-output-id";
/// Length of a frame header.
pub const HEADER_LEN: usize = 12;
/// Largest output frame: the size of a command's pipe.
pub const MAX_FRAME_BYTES: u32 = crate::MAX_CHUNK_BYTES as u32;
/// How far ahead of the host's credit the agent may send one command's output.
pub const WINDOW: u64 = 4 << 20;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Stdout,
    Stderr,
    /// A file call's bytes (`FileChunk.data`).
    Data,
    /// The host took `len` more of the command's cost (host → agent).
    Credit,
}

/// One frame header: `kind` (1 byte), 3 zero bytes, `id` and `len` as little-endian u32s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub id: u32,
    pub len: u32,
}

impl Header {
    pub fn encode(self) -> [u8; HEADER_LEN] {
        let kind = match self.kind {
            Kind::Stdout => 1,
            Kind::Stderr => 2,
            Kind::Data => 3,
            Kind::Credit => 4,
        };
        let mut h = [0u8; HEADER_LEN];
        h[0] = kind;
        h[4..8].copy_from_slice(&self.id.to_le_bytes());
        h[8..12].copy_from_slice(&self.len.to_le_bytes());
        h
    }

    /// A header as the other side sent it: an unknown kind, nonzero padding, an output frame
    /// over [`MAX_FRAME_BYTES`] or of no bytes is refused (the lane is then out of step and is
    /// closed).
    pub fn decode(h: &[u8; HEADER_LEN]) -> Result<Header, String> {
        let id = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if h[1..4] != [0, 0, 0] {
            return Err(format!("output lane: bad frame header {h:02x?}"));
        }
        let kind = match h[0] {
            1 => Kind::Stdout,
            2 => Kind::Stderr,
            3 => Kind::Data,
            4 => Kind::Credit,
            k => return Err(format!("output lane: unknown frame kind {k}")),
        };
        match kind {
            Kind::Stdout | Kind::Stderr | Kind::Data if len == 0 || len > MAX_FRAME_BYTES => Err(format!("output lane: output frame of {len} bytes")),
            _ => Ok(Header { kind, id, len }),
        }
    }
}

/// What an output frame of `len` bytes counts against the window: at least a page, so a command
/// writing a byte at a time cannot queue millions of frames.
pub fn cost(len: u32) -> u64 {
    u64::from(len).max(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        for kind in [Kind::Stdout, Kind::Stderr, Kind::Data, Kind::Credit] {
            let h = Header { kind, id: u32::MAX, len: 4096 };
            assert_eq!(Header::decode(&h.encode()), Ok(h));
        }
    }

    #[test]
    fn bad_headers_are_refused() {
        let mut h = Header { kind: Kind::Stdout, id: 1, len: 10 }.encode();
        h[2] = 1;
        assert!(Header::decode(&h).is_err());
        let mut h = Header { kind: Kind::Stdout, id: 1, len: 10 }.encode();
        h[0] = 9;
        assert!(Header::decode(&h).unwrap_err().contains("unknown frame kind 9"));
        let big = Header { kind: Kind::Stderr, id: 1, len: MAX_FRAME_BYTES + 1 }.encode();
        assert!(Header::decode(&big).is_err());
        let empty = Header { kind: Kind::Stdout, id: 1, len: 0 }.encode();
        assert!(Header::decode(&empty).is_err());
    }

    #[test]
    fn tiny_frames_cost_a_page() {
        assert_eq!(cost(1), 4096);
        assert_eq!(cost(MAX_FRAME_BYTES), MAX_FRAME_BYTES as u64);
    }
}
