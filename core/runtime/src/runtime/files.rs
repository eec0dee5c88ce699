//! Files in and out of a running box: [`LiteBox::copy_in`] and [`LiteBox::copy_out`] (files and
//! whole trees, as tar over the agent channel) and the [`Files`] API (read, write, list, stat,
//! mkdir, remove, rename, watch). Design notes: `docs/files.md`.
//!
//! Everything streams with backpressure: at most [`QUEUE`] chunks wait between the disk and the
//! channel, so a copy of any size costs about a megabyte of host memory.
//!
//! A copy in of [`STAGE_MIN_BYTES`] or more goes through the box's inbox instead: the tar is
//! written into chunk files there (a read-only 9p share, which QEMU serves several times faster
//! than its serial channel carries bytes host to guest) and the agent is told of each over gRPC
//! (`CopyInStaged`); at most [`STAGED_WINDOW`] chunks are on disk at once.
//!
//! The guest is hostile: a copy out is unpacked into a fresh directory beside the destination,
//! every entry created beneath it with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and
//! `O_NOFOLLOW | O_EXCL`, and renamed into place only once complete. Names, sizes, modes and
//! entry counts from the guest are bounded; hard links, devices and fifos are refused.

use super::{LiteBox, Runtime};
use crate::error::{Error, Result};
use crate::state::BoxStatus;
use boxlite_protocol::v1::guest_client::GuestClient;
use boxlite_protocol::v1::{
    copy_in_progress, copy_in_request, copy_in_staged_request, write_file_request, CopyInHeader, CopyInProgress, CopyInRequest,
    CopyInStagedRequest, FileChunk, StagedChunk, MakeDirRequest, PathRequest, RemoveFileRequest,
    RenameFileRequest, WatchRequest, WriteFileHeader, WriteFileRequest,
};
use boxlite_protocol::chunks::{ChunkWriter, Piece, PieceReader};
use boxlite_protocol::{MAX_CHUNK_BYTES, MAX_MESSAGE_BYTES, MAX_NAME_BYTES, MAX_PATH_BYTES};
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// Chunks queued between the host disk and the channel, each way: 1 MiB of full chunks.
pub const QUEUE: usize = (1 << 20) / MAX_CHUNK_BYTES;
/// A copy in whose source holds at least this many bytes is staged through the inbox; a smaller
/// one goes over the channel, where mounting the inbox would cost more than it saves.
const STAGE_MIN_BYTES: u64 = 1 << 20;
/// Size of one chunk file of a staged copy.
const STAGED_CHUNK_BYTES: usize = 8 << 20;
/// Chunk files of one staged copy in the inbox at once (32 MiB of host disk at most).
const STAGED_WINDOW: usize = 4;
/// Most entries one copy out may create on the host.
pub const MAX_COPY_ENTRIES: u64 = 1_000_000;
/// Deepest path (in components) one copy out may create on the host.
pub const MAX_COPY_DEPTH: usize = 256;
/// Biggest file one copy out may declare: the biggest box disk (1 TiB).
pub const MAX_FILE_BYTES: u64 = 1 << 40;
/// Most entries one [`Files::list`] returns.
pub const MAX_LIST_ENTRIES: usize = 1_000_000;
/// How long a broken watch waits for the box's record to say it stopped.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// How [`LiteBox::copy_in`] and [`LiteBox::copy_out`] treat an existing target.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyOptions {
    /// Replace an existing target (a file, or a directory as a whole). Without it, a copy whose
    /// target exists is refused, naming it, and nothing is written.
    pub overwrite: bool,
}

/// Options of [`Files::write`].
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    /// Permission bits (at most `0o7777`). `None`: an existing file keeps its own, a new one
    /// gets `0o644`.
    pub mode: Option<u32>,
}

/// Options of [`Files::mkdir`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MkdirOptions {
    /// Create missing parents too; an existing directory is then no error (`mkdir -p`).
    pub parents: bool,
}

/// Options of [`Files::remove`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RemoveOptions {
    /// Remove a directory with everything in it (`rm -r`). Without it only a file, a symlink or
    /// an empty directory is removed.
    pub recursive: bool,
}

/// Options of [`Files::watch`].
#[derive(Clone, Copy, Debug, Default)]
pub struct WatchOptions {
    /// Also watch every subdirectory, those that exist and those created later.
    pub recursive: bool,
}

/// What a directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed by [`Files::list`] or [`Files::stat`]).
    Symlink,
    /// A device, fifo or socket.
    Other,
}

/// One entry of a box directory, as [`Files::list`] and [`Files::stat`] report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Its name (no `/`; for `stat("/")`, `/`).
    pub name: String,
    /// What it is.
    pub file_type: FileType,
    /// Size in bytes (a symlink's is the length of its target).
    pub size: u64,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Last modification.
    pub mtime: SystemTime,
}

/// What happened to a path under a watched directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchEventKind {
    /// Created (or moved in from outside the watched tree).
    Created,
    /// A file written and closed.
    Modified,
    /// Deleted (or moved out of the watched tree).
    Deleted,
    /// Renamed within the watched tree: from `old_path` to `path`.
    Renamed,
}

/// One event of [`Files::watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// What happened.
    pub kind: WatchEventKind,
    /// The path in the box, under the watched path as it was given.
    pub path: String,
    /// For [`WatchEventKind::Renamed`]: where it was before.
    pub old_path: Option<String>,
    /// Whether it is a directory.
    pub is_dir: bool,
}

impl LiteBox {
    /// Copies the host file or directory `host_path` into the running box at `guest_path`,
    /// as `docker cp` does: when `guest_path` is an existing directory the source lands inside
    /// it under its own name, otherwise `guest_path` is its new name (its parent must exist).
    /// Permission bits, mtimes (to the second) and symlinks (as symlinks) are kept; files are
    /// owned by root in the box; hard links arrive as separate files; fifos, sockets and devices
    /// are skipped. The tree is built beside its target and renamed into place, so a failed
    /// copy (a full box disk, an interrupted call) leaves nothing. An existing target is
    /// refused unless `overwrite`, which replaces it whole.
    pub async fn copy_in(&self, host_path: impl AsRef<Path>, guest_path: &str, options: CopyOptions) -> Result<()> {
        let copied = self.copy_in_unexplained(host_path.as_ref(), guest_path, options).await;
        self.explained(copied).await
    }

    async fn copy_in_unexplained(&self, host_path: &Path, guest_path: &str, options: CopyOptions) -> Result<()> {
        let host_path = host_path.to_path_buf();
        check_guest_path(guest_path)?;
        std::fs::symlink_metadata(&host_path).map_err(|e| host_error("copy", &host_path, e))?;
        let name = source_name(&host_path)?;
        let mut client = self.running_client("copy into").await?;
        let header = CopyInHeader { path: guest_path.to_string(), overwrite: options.overwrite };
        if holds_at_least(&host_path, STAGE_MIN_BYTES) {
            match self.copy_in_staged(&mut client, &host_path, name.clone(), header.clone()).await {
                Err(Staging::Unavailable(why)) => tracing::debug!(box_id = self.id, "copying over the channel: {why}"),
                Err(Staging::Failed(e)) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tx.send(CopyInRequest { kind: Some(copy_in_request::Kind::Header(header)) }).await.map_err(|_| closed())?;
        let source = host_path.clone();
        let mut producer = tokio::task::spawn_blocking(move || {
            let writer = ChunkWriter::new(tx.clone(), |data| CopyInRequest { kind: Some(copy_in_request::Kind::Data(data)) }, "the box ended the copy");
            let mut builder = tar::Builder::new(writer);
            let written = boxlite_protocol::tree::append_tree(&mut builder, Path::new(&name), &source, &|_| true)
                .and_then(|_| builder.into_inner())
                .and_then(|mut w| w.flush());
            // On failure the sender is handed back, so the request stream is cancelled (never
            // ended cleanly) and the guest discards what it got.
            written.map_err(|e| (e, tx))
        });
        let call = client.copy_in(tokio_stream::wrappers::ReceiverStream::new(rx));
        tokio::pin!(call);
        tokio::select! {
            answer = &mut call => answer.map(|_| ()).map_err(|s| self.file_error(guest_path, s)),
            produced = &mut producer => match produced.map_err(|e| Error::Internal(e.to_string()))? {
                Ok(()) => call.await.map(|_| ()).map_err(|s| self.file_error(guest_path, s)),
                Err((e, _tx)) if e.kind() == io::ErrorKind::BrokenPipe => call.await.map(|_| ()).map_err(|s| self.file_error(guest_path, s)),
                Err((e, _tx)) => Err(host_error("read", &host_path, e)),
            },
        }
    }

    /// [`LiteBox::copy_in`] through the box's inbox: the tar is written into chunk files there
    /// (at most [`STAGED_WINDOW`] at once), each named to the agent, which reads it through the
    /// VM's read-only share and acknowledges it, and is then deleted. Every chunk is removed
    /// whatever the outcome (once the writing thread is done with it). `Unavailable` (a VM or
    /// agent of an older build, with no inbox) before anything is sent: the caller uses the
    /// channel.
    async fn copy_in_staged(&self, client: &mut GuestClient<Channel>, host_path: &Path, name: OsString, header: CopyInHeader) -> std::result::Result<(), Staging> {
        let guest_path = header.path.clone();
        let failed = |s: tonic::Status| match s.code() {
            tonic::Code::Unimplemented | tonic::Code::FailedPrecondition => Staging::Unavailable(s.message().to_string()),
            _ => Staging::Failed(self.file_error(&guest_path, s)),
        };
        let inbox = Inbox::open(&crate::engine::inbox_dir(&self.rt.box_dir(&self.id))).map_err(|e| Staging::Unavailable(format!("no inbox: {e}")))?;
        let inbox = Arc::new(inbox);
        let (tx, rx) = mpsc::channel(STAGED_WINDOW + 2);
        let _ = tx.send(CopyInStagedRequest { kind: Some(copy_in_staged_request::Kind::Header(header)) }).await;
        let mut answers = client.copy_in_staged(tokio_stream::wrappers::ReceiverStream::new(rx)).await.map_err(failed)?.into_inner();
        match answers.message().await {
            Ok(Some(CopyInProgress { kind: Some(copy_in_progress::Kind::Ready(_)) })) => {}
            Ok(_) => return Err(Staging::Failed(Error::Guest(format!("box {}: the agent did not start the staged copy", self.id)))),
            Err(s) => return Err(failed(s)),
        }
        // Each chunk written takes a token, each one the agent consumed (and we deleted) gives
        // it back: the window.
        let (tokens_tx, tokens) = std::sync::mpsc::sync_channel(STAGED_WINDOW);
        for _ in 0..STAGED_WINDOW {
            let _ = tokens_tx.try_send(());
        }
        let (ready_tx, mut ready) = mpsc::channel(STAGED_WINDOW);
        let source = host_path.to_path_buf();
        let files = inbox.clone();
        let mut producing = Some(tokio::task::spawn_blocking(move || {
            let writer = ChunkFiles { inbox: files, tokens, ready: ready_tx, file: None, seq: 0 };
            let mut builder = tar::Builder::new(writer);
            boxlite_protocol::tree::append_tree(&mut builder, Path::new(&name), &source, &|_| true)
                .and_then(|_| builder.into_inner())
                .and_then(|mut w| w.flush())
        }));
        let copied = async {
            loop {
                tokio::select! {
                    chunk = ready.recv(), if producing.is_some() => match chunk {
                        Some(c) => {
                            let _ = tx.send(CopyInStagedRequest { kind: Some(copy_in_staged_request::Kind::Chunk(c)) }).await;
                        }
                        // The writing thread is done: every chunk it wrote was sent.
                        None => match producing.take().expect("guarded by the select").await.map_err(|e| Error::Internal(e.to_string()))? {
                            Ok(()) => {
                                let _ = tx.send(CopyInStagedRequest { kind: Some(copy_in_staged_request::Kind::End(true)) }).await;
                            }
                            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {} // the box ended the copy: its answer says why
                            Err(e) => return Err(host_error("read", host_path, e)),
                        },
                    },
                    answer = answers.message() => match answer {
                        Ok(Some(CopyInProgress { kind: Some(copy_in_progress::Kind::Consumed(chunk)) })) => {
                            // Only a name we made is ever removed.
                            if !inbox.remove(&chunk) {
                                return Err(Error::Guest(format!("box {}: the agent named a chunk that was not sent", self.id)));
                            }
                            let _ = tokens_tx.try_send(());
                        }
                        Ok(Some(CopyInProgress { kind: Some(copy_in_progress::Kind::Done(_)) })) => return Ok(()),
                        Ok(_) => return Err(Error::Guest(format!("box {}: the staged copy to {guest_path} ended without an answer", self.id))),
                        Err(s) => return Err(self.file_error(&guest_path, s)),
                    },
                }
            }
        }
        .await;
        // The writing thread sees the channels closed and stops; its chunks go with the last
        // reference to the inbox, so none outlives the call.
        drop((tx, tokens_tx, ready, answers));
        if let Some(p) = producing {
            let _ = p.await;
        }
        copied.map_err(Staging::Failed)
    }

    /// Copies the box's file or directory `guest_path` (a final symlink copied as a symlink) to
    /// the host at `host_path`, with `copy_in`'s rules: into an existing directory under its
    /// own name, else as `host_path` (whose parent must exist). Nothing the box sends is
    /// trusted: entries land only beneath the destination, symlinks are created but never
    /// followed, setuid/setgid/sticky bits are dropped, hard links, devices and fifos are
    /// refused, and a copy that fails for any reason leaves nothing behind.
    pub async fn copy_out(&self, guest_path: &str, host_path: impl AsRef<Path>, options: CopyOptions) -> Result<()> {
        let copied = self.copy_out_unexplained(guest_path, host_path.as_ref(), options).await;
        self.explained(copied).await
    }

    async fn copy_out_unexplained(&self, guest_path: &str, host_path: &Path, options: CopyOptions) -> Result<()> {
        check_guest_path(guest_path)?;
        let landing = Landing::new(host_path, options.overwrite)?;
        let mut client = self.running_client("copy out of").await?;
        let mut stream = client.copy_out(PathRequest { path: guest_path.to_string() }).await.map_err(|s| self.file_error(guest_path, s))?.into_inner();
        let (tx, rx) = mpsc::channel(QUEUE);
        let extract = tokio::task::spawn_blocking(move || landing.extract(PieceReader::new(rx, "the copy was cut off")));
        let fed: Result<()> = async {
            loop {
                match stream.message().await {
                    Ok(Some(FileChunk { data, .. })) => {
                        check_chunk(&data)?;
                        if tx.send(Piece::Data(data)).await.is_err() {
                            return Ok(()); // the extraction stopped; its error is the answer
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Piece::End).await;
                        return Ok(());
                    }
                    Err(s) => return Err(self.file_error(guest_path, s)),
                }
            }
        }
        .await;
        drop(tx);
        let extracted = extract.await.map_err(|e| Error::Internal(e.to_string()))?;
        fed?;
        extracted.map(|_| ())
    }

    /// The box's files API. Every call needs the box running.
    pub fn files(&self) -> Files {
        Files { b: self.clone() }
    }

    /// A client of the running box's agent; a box that is not running is refused (files go
    /// through its agent, and booting a box as a side effect of a copy would surprise).
    async fn running_client(&self, what: &str) -> Result<GuestClient<Channel>> {
        let rec = self.info()?;
        if rec.status == BoxStatus::Paused {
            return Err(super::paused(&self.id));
        }
        if rec.status != BoxStatus::Running {
            return Err(Error::InvalidState(format!(
                "cannot {what} box {}: it is {}; start it first (files go through its running guest agent)",
                self.id, rec.status
            )));
        }
        let guest = self.rt.start_box(&self.id).await?;
        Ok(GuestClient::new(guest.channel()).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A file call's failure as its caller should hear it: when the box's VM died under the
    /// call, what its supervisor recorded ("... killed by signal 9"), not the broken transport's
    /// words ("h2 protocol error"). Other failures pass as they are, at once.
    async fn explained<T>(&self, result: Result<T>) -> Result<T> {
        if !matches!(result, Err(Error::Guest(_))) {
            return result;
        }
        let dir = self.rt.box_dir(&self.id);
        let died = self.rt.record(&self.id).is_ok_and(|rec| !rec.status.is_active() || rec.pid.is_some_and(|pid| !crate::shim::alive(pid, &dir)));
        if died {
            if let Some(reason) = (self.rt.lost_reason(&self.id))().await {
                return Err(Error::Guest(reason));
            }
        }
        result
    }

    /// The error for a guest's answer about `path`, by its gRPC code.
    fn file_error(&self, path: &str, s: tonic::Status) -> Error {
        let msg = truncate(s.message());
        let id = &self.id;
        match s.code() {
            tonic::Code::NotFound => Error::NotFound(format!("box {id}: {msg}")),
            tonic::Code::AlreadyExists => Error::AlreadyExists(format!("box {id}: {msg}")),
            tonic::Code::InvalidArgument | tonic::Code::PermissionDenied | tonic::Code::FailedPrecondition => {
                Error::InvalidArgument(format!("box {id}: {msg}"))
            }
            tonic::Code::ResourceExhausted => Error::Storage {
                context: format!("box {id}: {msg}"),
                source: io::Error::from(io::ErrorKind::StorageFull),
            },
            _ => Error::Guest(format!("box {id}: {path}: {msg}")),
        }
    }
}

impl Runtime {
    /// Whether box `id` has stopped or is stopping (waiting a little for its record to say so).
    async fn stopped_or_stopping(&self, id: &str) -> bool {
        let deadline = std::time::Instant::now() + STOP_WAIT;
        loop {
            match self.record(id) {
                Ok(rec) if matches!(rec.status, BoxStatus::Stopped | BoxStatus::Stopping) => return true,
                Ok(rec) if !rec.status.is_up() => return false,
                Err(_) => return true, // removed
                Ok(_) => {}
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The files of one box ([`LiteBox::files`]). Paths are absolute paths in the box; the box's
/// symlinks resolve inside the box. Cheap to clone.
#[derive(Clone)]
pub struct Files {
    b: LiteBox,
}

impl Files {
    /// Streams a regular file's bytes (symlinks followed inside the box).
    pub async fn read(&self, path: &str) -> Result<ReadStream> {
        check_guest_path(path)?;
        let mut client = self.b.running_client("read from").await?;
        let inner = client.read_file(PathRequest { path: path.into() }).await.map_err(|s| self.b.file_error(path, s))?.into_inner();
        Ok(ReadStream { inner, b: self.b.clone(), path: path.into() })
    }

    /// A whole file in memory (see [`Files::read`] for big ones).
    pub async fn read_all(&self, path: &str) -> Result<Vec<u8>> {
        let mut stream = self.read(path).await?;
        let mut all = Vec::new();
        while let Some(chunk) = stream.next().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    }

    /// Writes `data` to a file (created, or replaced whole once written: a failed write keeps
    /// the old content). Its directory must exist.
    pub async fn write(&self, path: &str, data: &[u8], options: WriteOptions) -> Result<()> {
        let mut writer = self.writer(path, options).await?;
        writer.write(data).await?;
        writer.finish().await
    }

    /// A writer that streams a file to the box; the file appears when [`FileWriter::finish`]
    /// succeeds (dropping the writer discards it).
    pub async fn writer(&self, path: &str, options: WriteOptions) -> Result<FileWriter> {
        check_guest_path(path)?;
        if options.mode.is_some_and(|m| m > 0o7777) {
            return Err(Error::InvalidArgument(format!("mode {:o} is not permission bits (at most 0o7777)", options.mode.unwrap_or(0))));
        }
        let mut client = self.b.running_client("write to").await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let header = WriteFileHeader { path: path.into(), mode: options.mode };
        tx.send(WriteFileRequest { kind: Some(write_file_request::Kind::Header(header)) }).await.map_err(|_| closed())?;
        let b = self.b.clone();
        let shown = path.to_string();
        // A request stream that merely ends reads as a complete file in the box. Unless finish()
        // said so, it ends with a message the box refuses, so that an abandoned writer's partial
        // file is discarded even when its last chunks are still queued.
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        let refused = std::iter::once_with(move || (!done.load(Ordering::SeqCst)).then_some(WriteFileRequest { kind: None })).flatten();
        let requests = tokio_stream::StreamExt::chain(tokio_stream::wrappers::ReceiverStream::new(rx), tokio_stream::iter(refused));
        let call = tokio::spawn(async move {
            let written = client.write_file(requests).await.map(|_| ()).map_err(|s| b.file_error(&shown, s));
            b.explained(written).await
        });
        Ok(FileWriter { tx: Some(tx), call: Some(call), finished })
    }

    /// The entries of a directory (symlinks not followed), sorted by name.
    pub async fn list(&self, path: &str) -> Result<Vec<FileEntry>> {
        check_guest_path(path)?;
        let mut client = self.b.running_client("list in").await?;
        let mut stream = client.list_dir(PathRequest { path: path.into() }).await.map_err(|s| self.b.file_error(path, s))?.into_inner();
        let mut all = Vec::new();
        while let Some(batch) = stream.message().await.map_err(|s| self.b.file_error(path, s))? {
            if all.len() + batch.entries.len() > MAX_LIST_ENTRIES {
                return Err(Error::Guest(format!("box {}: {path} lists more than {MAX_LIST_ENTRIES} entries", self.b.id)));
            }
            for e in batch.entries {
                all.push(file_entry(e, false).map_err(|m| Error::Guest(format!("box {}: listing {path}: {m}", self.b.id)))?);
            }
        }
        Ok(all)
    }

    /// One entry (a final symlink not followed).
    pub async fn stat(&self, path: &str) -> Result<FileEntry> {
        check_guest_path(path)?;
        let mut client = self.b.running_client("stat in").await?;
        let e = client.stat_file(PathRequest { path: path.into() }).await.map_err(|s| self.b.file_error(path, s))?.into_inner();
        file_entry(e, true).map_err(|m| Error::Guest(format!("box {}: stat {path}: {m}", self.b.id)))
    }

    /// Whether `path` exists in the box (a dangling symlink exists).
    pub async fn exists(&self, path: &str) -> Result<bool> {
        match self.stat(path).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound(m)) if !m.contains("no box") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates a directory (0755), with `parents` also the missing ones above it.
    pub async fn mkdir(&self, path: &str, options: MkdirOptions) -> Result<()> {
        check_guest_path(path)?;
        let mut client = self.b.running_client("mkdir in").await?;
        client.make_dir(MakeDirRequest { path: path.into(), parents: options.parents }).await.map_err(|s| self.b.file_error(path, s))?;
        Ok(())
    }

    /// Removes a file, symlink or empty directory; with `recursive`, a whole tree.
    pub async fn remove(&self, path: &str, options: RemoveOptions) -> Result<()> {
        check_guest_path(path)?;
        let mut client = self.b.running_client("remove from").await?;
        client.remove_file(RemoveFileRequest { path: path.into(), recursive: options.recursive }).await.map_err(|s| self.b.file_error(path, s))?;
        Ok(())
    }

    /// Renames (moves) `from` to `to` within the box, replacing a file at `to` (`rename(2)`).
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        check_guest_path(from)?;
        check_guest_path(to)?;
        let mut client = self.b.running_client("rename in").await?;
        client.rename_file(RenameFileRequest { from: from.into(), to: to.into() }).await.map_err(|s| self.b.file_error(from, s))?;
        Ok(())
    }

    /// Watches a directory: a stream of events that ends (`Ok(None)`) when the box stops or
    /// the directory is removed. Drop it to stop watching.
    pub async fn watch(&self, path: &str, options: WatchOptions) -> Result<WatchStream> {
        check_guest_path(path)?;
        let mut client = self.b.running_client("watch in").await?;
        let inner = client
            .watch_files(WatchRequest { path: path.into(), recursive: options.recursive })
            .await
            .map_err(|s| self.b.file_error(path, s))?
            .into_inner();
        Ok(WatchStream { inner, b: self.b.clone(), path: path.into(), ended: false })
    }
}

/// A file's bytes as they arrive ([`Files::read`]).
pub struct ReadStream {
    inner: tonic::Streaming<FileChunk>,
    b: LiteBox,
    path: String,
}

impl ReadStream {
    /// The next chunk (at most `MAX_CHUNK_BYTES`), or `None` at the end of the file.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>> {
        match self.inner.message().await {
            Ok(Some(FileChunk { data, .. })) => check_chunk(&data).map(|_| Some(data)),
            Ok(None) => Ok(None),
            Err(s) => self.b.explained(Err(self.b.file_error(&self.path, s))).await,
        }
    }
}

/// How long [`FileWriter::abort`] waits for the box to discard a file (it has at most the
/// request queue, 1 MiB, left to take in first).
const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A file being written to the box ([`Files::writer`]).
pub struct FileWriter {
    tx: Option<mpsc::Sender<WriteFileRequest>>,
    call: Option<tokio::task::JoinHandle<Result<()>>>,
    /// Set by finish(): the request stream may end cleanly.
    finished: Arc<AtomicBool>,
}

impl FileWriter {
    /// Sends bytes (waits while the box is behind).
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(MAX_CHUNK_BYTES) {
            let tx = self.tx.as_ref().ok_or_else(closed)?;
            if tx.send(WriteFileRequest { kind: Some(write_file_request::Kind::Data(chunk.to_vec())) }).await.is_err() {
                // The box refused the write: its answer says why.
                self.tx = None;
                return Err(self.answer().await.err().unwrap_or_else(closed));
            }
        }
        Ok(())
    }

    /// Ends the file: it is in place when this returns `Ok`.
    pub async fn finish(mut self) -> Result<()> {
        self.finished.store(true, Ordering::SeqCst);
        self.tx = None;
        self.answer().await
    }

    /// Discards the file and waits (at most [`ABORT_WAIT`]) until the box has: when this
    /// returns, the path holds what it held before and no partial file is left beside it.
    pub async fn abort(mut self) {
        self.tx = None; // the request stream ends with the message the box refuses
        if let Some(call) = self.call.take() {
            // The refusal, or a box that is gone: either way nothing was put in place.
            if tokio::time::timeout(ABORT_WAIT, call).await.is_err() {
                tracing::warn!("the box did not answer a discarded write within {ABORT_WAIT:?}");
            }
        }
    }

    async fn answer(&mut self) -> Result<()> {
        match self.call.take() {
            Some(call) => call.await.map_err(|e| Error::Internal(e.to_string()))?,
            None => Err(closed()),
        }
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // Unfinished: the request stream ends with the message the box refuses (see
        // Files::writer) and the call is cancelled; either way the box discards the partial file.
        if let (Some(_), Some(call)) = (self.tx.take(), self.call.take()) {
            call.abort();
        }
    }
}

/// File events under a watched directory ([`Files::watch`]).
pub struct WatchStream {
    inner: tonic::Streaming<boxlite_protocol::v1::WatchEvent>,
    b: LiteBox,
    path: String,
    ended: bool,
}

impl WatchStream {
    /// The next event; `None` once the box stopped (or the directory was removed).
    pub async fn next(&mut self) -> Result<Option<WatchEvent>> {
        if self.ended {
            return Ok(None);
        }
        match self.inner.message().await {
            Ok(Some(e)) => watch_event(e, &self.path).map(Some).map_err(|m| Error::Guest(format!("box {}: watching {}: {m}", self.b.id, self.path))),
            Ok(None) => {
                self.ended = true;
                Ok(None)
            }
            Err(s) => {
                self.ended = true;
                // A stop ends the VM under the call: that is the stream's end, not a failure.
                if self.b.rt.stopped_or_stopping(&self.b.id).await {
                    return Ok(None);
                }
                Err(self.b.file_error(&self.path, s))
            }
        }
    }
}

/// Why a staged copy in did not happen.
enum Staging {
    /// Before anything was sent: the box has no inbox (a VM or agent of an older build).
    Unavailable(String),
    Failed(Error),
}

/// Whether the files under `path` (a final symlink not followed) hold at least `bytes`; stops
/// counting as soon as they do, and says yes for a tree of over 10,000 entries.
fn holds_at_least(path: &Path, bytes: u64) -> bool {
    let mut todo = vec![path.to_path_buf()];
    let (mut total, mut seen) = (0u64, 0usize);
    while let Some(p) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
        seen += 1;
        total += if meta.is_file() { meta.len() } else { 0 };
        if total >= bytes || seen > 10_000 {
            return true;
        }
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&p).into_iter().flatten().flatten().map(|e| e.path()));
        }
    }
    false
}

/// The host side of the box's inbox for one staged copy: the directory (opened once, without
/// following a symlink) and the chunk files this copy made there, which alone it ever removes.
/// The guest cannot create or change anything in it (QEMU shares it read-only).
struct Inbox {
    dir: OwnedFd,
    id: String,
    made: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Inbox {
    fn open(dir: &Path) -> io::Result<Inbox> {
        let dir = nix::fcntl::open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        Ok(Inbox { dir, id: format!("{:016x}", rand::random::<u64>()), made: Default::default() })
    }

    /// A new chunk file, 0600, never one that exists.
    fn create(&self, seq: u64) -> io::Result<(std::fs::File, String)> {
        let name = format!("{}-{seq}", self.id);
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(&self.dir, name.as_str(), flags, Mode::from_bits_truncate(0o600)).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        self.made.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone());
        Ok((std::fs::File::from(fd), name))
    }

    /// Removes chunk `name` if this copy made it (and has not removed it yet).
    fn remove(&self, name: &str) -> bool {
        let made = self.made.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        if made {
            let _ = nix::unistd::unlinkat(&self.dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        made
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        for name in std::mem::take(&mut *self.made.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = nix::unistd::unlinkat(&self.dir, name.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// The writing end of a staged copy: the tar goes into chunk files of [`STAGED_CHUNK_BYTES`],
/// each taking a window token before it is made and sent on `ready` once closed. A closed
/// channel (the copy ended) is a `BrokenPipe` error.
struct ChunkFiles {
    inbox: Arc<Inbox>,
    tokens: std::sync::mpsc::Receiver<()>,
    ready: mpsc::Sender<StagedChunk>,
    file: Option<(std::fs::File, String, usize)>,
    seq: u64,
}

impl ChunkFiles {
    fn gone() -> io::Error {
        io::Error::new(io::ErrorKind::BrokenPipe, "the box ended the copy")
    }
}

impl Write for ChunkFiles {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.file.is_none() {
            self.tokens.recv().map_err(|_| Self::gone())?;
            let (file, name) = self.inbox.create(self.seq)?;
            self.seq += 1;
            self.file = Some((file, name, 0));
        }
        let Some((file, _, written)) = &mut self.file else { unreachable!() };
        let n = file.write(&data[..data.len().min(STAGED_CHUNK_BYTES - *written)])?;
        *written += n;
        if *written == STAGED_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(n)
    }

    /// Closes the chunk being written and names it to the agent.
    fn flush(&mut self) -> io::Result<()> {
        let Some((file, name, len)) = self.file.take() else { return Ok(()) };
        drop(file);
        self.ready.blocking_send(StagedChunk { name, len: len as u64 }).map_err(|_| Self::gone())
    }
}

fn closed() -> Error {
    Error::Guest("the connection to the box's agent closed".into())
}

fn truncate(s: &str) -> String {
    const MAX: usize = 4096;
    let mut end = s.len().min(MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A guest path given by the caller: absolute, of sane length.
fn check_guest_path(path: &str) -> Result<()> {
    if !path.starts_with('/') {
        return Err(Error::InvalidArgument(format!("guest path '{path}' must be absolute (start with /)")));
    }
    if path.len() > MAX_PATH_BYTES || path.contains('\0') {
        return Err(Error::InvalidArgument(format!("guest path is longer than {MAX_PATH_BYTES} bytes or holds a NUL byte")));
    }
    Ok(())
}

fn check_chunk(data: &[u8]) -> Result<()> {
    if data.len() > MAX_CHUNK_BYTES {
        return Err(Error::Guest(format!("the box sent a chunk of {} bytes, over the {MAX_CHUNK_BYTES}-byte limit", data.len())));
    }
    Ok(())
}

fn host_error(what: &str, path: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        return Error::NotFound(format!("host path {} does not exist", path.display()));
    }
    Error::storage(what, path, e)
}

/// The name a host source keeps in the box: its own base name (`.`/`..` resolved first).
fn source_name(path: &Path) -> Result<OsString> {
    let name = match path.file_name() {
        Some(n) => n.to_owned(),
        None => std::fs::canonicalize(path).map_err(|e| host_error("resolve", path, e))?.file_name().map(|n| n.to_owned()).unwrap_or_default(),
    };
    if name.is_empty() {
        return Err(Error::InvalidArgument(format!("host path {} has no name to copy under (copy a directory below /)", path.display())));
    }
    Ok(name)
}

/// A validated entry name from the guest: one component, at most MAX_NAME_BYTES.
fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') || name.len() > MAX_NAME_BYTES {
        return Err(format!("the box sent an invalid entry name {:?}", truncate(name)));
    }
    Ok(())
}

fn file_entry(e: boxlite_protocol::v1::FileEntry, root_allowed: bool) -> std::result::Result<FileEntry, String> {
    use boxlite_protocol::v1::FileType as T;
    if !(root_allowed && e.name == "/") {
        check_name(&e.name)?;
    }
    if e.mode > 0o7777 {
        return Err(format!("the box sent an invalid mode {:o}", e.mode));
    }
    let file_type = match T::try_from(e.r#type) {
        Ok(T::File) => FileType::File,
        Ok(T::Dir) => FileType::Dir,
        Ok(T::Symlink) => FileType::Symlink,
        Ok(T::Other) => FileType::Other,
        _ => return Err(format!("the box sent an unknown file type {}", e.r#type)),
    };
    let since = Duration::from_millis(e.mtime_ms.unsigned_abs());
    let mtime = if e.mtime_ms >= 0 { SystemTime::UNIX_EPOCH.checked_add(since) } else { SystemTime::UNIX_EPOCH.checked_sub(since) };
    Ok(FileEntry { name: e.name, file_type, size: e.size, mode: e.mode, mtime: mtime.unwrap_or(SystemTime::UNIX_EPOCH) })
}

fn watch_event(e: boxlite_protocol::v1::WatchEvent, watched: &str) -> std::result::Result<WatchEvent, String> {
    use boxlite_protocol::v1::WatchEventKind as K;
    let under = |p: &str| {
        let base = watched.trim_end_matches('/');
        p.len() <= MAX_PATH_BYTES && !p.contains('\0') && p.strip_prefix(base).is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
    };
    let kind = match K::try_from(e.kind) {
        Ok(K::Created) => WatchEventKind::Created,
        Ok(K::Modified) => WatchEventKind::Modified,
        Ok(K::Deleted) => WatchEventKind::Deleted,
        Ok(K::Renamed) => WatchEventKind::Renamed,
        _ => return Err(format!("the box sent an unknown event kind {}", e.kind)),
    };
    if !under(&e.path) {
        return Err(format!("the box sent an event for {:?}, which is not under the watched path", truncate(&e.path)));
    }
    let old_path = match kind {
        WatchEventKind::Renamed if under(&e.old_path) => Some(e.old_path),
        WatchEventKind::Renamed => return Err("the box sent a rename whose old path is not under the watched path".into()),
        _ => None,
    };
    Ok(WatchEvent { kind, path: e.path, old_path, is_dir: e.is_dir })
}

/// Where a copy out lands on the host, decided before anything arrives from the guest.
struct Landing {
    /// The directory the copy lands in (the user's: opened normally, symlinks followed).
    parent: PathBuf,
    /// The name it lands under; `None`: the tree's own top-level name.
    name: Option<OsString>,
    overwrite: bool,
}

impl Landing {
    fn new(host_path: &Path, overwrite: bool) -> Result<Self> {
        if host_path.is_dir() {
            return Ok(Landing { parent: host_path.to_path_buf(), name: None, overwrite });
        }
        let shown = host_path.display();
        let text = host_path.as_os_str().as_bytes();
        if text.ends_with(b"/") {
            return Err(Error::NotFound(format!("host directory {shown} does not exist")));
        }
        let parent = match host_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(Error::NotFound(format!("host directory {} does not exist (the parent of {shown}); create it first", parent.display())));
        }
        let name = host_path.file_name().map(|n| n.to_owned()).ok_or_else(|| Error::InvalidArgument(format!("host path {shown} names no file")))?;
        if !overwrite && std::fs::symlink_metadata(host_path).is_ok() {
            return Err(Error::AlreadyExists(format!("host path {shown} already exists; copy with overwrite to replace it")));
        }
        Ok(Landing { parent, name: Some(name), overwrite })
    }

    /// Unpacks the tar from `reader` beside the destination, then renames it into place.
    /// Returns the path it landed at.
    fn extract(&self, reader: impl Read) -> Result<PathBuf> {
        let storage = |what: &str, p: &Path, e: io::Error| Error::storage(what, p, e);
        let parent_fd = nix::fcntl::open(&self.parent, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| storage("open", &self.parent, e.into()))?;
        let temp = OsString::from(format!(".boxlite-copy-{}-{:08x}", std::process::id(), rand::random::<u32>()));
        let mut final_name = None;
        let unpacked = unpack(reader, &parent_fd, &temp, |top| {
            let name = self.name.clone().unwrap_or_else(|| top.to_owned());
            let target = self.parent.join(&name);
            if !self.overwrite && std::fs::symlink_metadata(&target).is_ok() {
                return Err(Error::AlreadyExists(format!("host path {} already exists; copy with overwrite to replace it", target.display())));
            }
            final_name = Some(name);
            Ok(())
        });
        let committed = unpacked.and_then(|_| {
            let name = final_name.clone().ok_or_else(|| Error::Guest("the box sent an empty copy".into()))?;
            self.commit(&parent_fd, &temp, &name)
        });
        if committed.is_err() {
            let _ = remove_any(&self.parent.join(&temp));
        }
        committed
    }

    /// Puts the unpacked `temp` at `name` in the destination directory.
    fn commit(&self, parent_fd: &OwnedFd, temp: &OsStr, name: &OsStr) -> Result<PathBuf> {
        use nix::fcntl::{renameat2, RenameFlags};
        let target = self.parent.join(name);
        let err = |e: nix::Error| match e {
            nix::Error::EEXIST => Error::AlreadyExists(format!("host path {} already exists; copy with overwrite to replace it", target.display())),
            e => Error::storage("rename into", &target, e.into()),
        };
        if !self.overwrite {
            return renameat2(parent_fd, temp, parent_fd, name, RenameFlags::RENAME_NOREPLACE).map(|_| target.clone()).map_err(err);
        }
        // Swapped in one step when something is there; what was there is then removed.
        match renameat2(parent_fd, temp, parent_fd, name, RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => {
                remove_any(&self.parent.join(temp)).map_err(|e| Error::storage("remove the replaced", &target, e))?;
                Ok(target)
            }
            Err(nix::Error::ENOENT) => renameat2(parent_fd, temp, parent_fd, name, RenameFlags::RENAME_NOREPLACE).map(|_| target.clone()).map_err(err),
            Err(e) => Err(err(e)),
        }
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The components of a tar entry name from the guest: relative, no `.`/`..`/empty component
/// (a trailing `/` aside), each at most MAX_NAME_BYTES, at most MAX_COPY_DEPTH deep.
fn entry_components(name: &[u8]) -> std::result::Result<Vec<&OsStr>, String> {
    let shown = || String::from_utf8_lossy(&name[..name.len().min(200)]).into_owned();
    if name.is_empty() || name.starts_with(b"/") {
        return Err(format!("the box sent an absolute or empty entry name {:?}", shown()));
    }
    if name.len() > MAX_PATH_BYTES {
        return Err(format!("the box sent an entry name of {} bytes, over {MAX_PATH_BYTES}", name.len()));
    }
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let parts: Vec<&OsStr> = trimmed.split(|b| *b == b'/').map(OsStr::from_bytes).collect();
    for p in &parts {
        let b = p.as_bytes();
        if b.is_empty() || b == b"." || b == b".." || b.len() > MAX_NAME_BYTES || b.contains(&0) {
            return Err(format!("the box sent an entry name with a bad component: {:?}", shown()));
        }
    }
    if parts.len() > MAX_COPY_DEPTH {
        return Err(format!("the box sent an entry {} levels deep, over {MAX_COPY_DEPTH}", parts.len()));
    }
    Ok(parts)
}

/// Opens directory `rel` beneath `dir` without following any symlink or leaving `dir`.
fn open_beneath(dir: &OwnedFd, rel: &Path) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS | ResolveFlag::RESOLVE_NO_XDEV);
    openat2(dir, if rel.as_os_str().is_empty() { Path::new(".") } else { rel }, how)
}

fn timespec(secs: u64) -> nix::sys::time::TimeSpec {
    nix::sys::time::TimeSpec::new(secs.min(i64::MAX as u64) as i64, 0)
}

/// Unpacks an untrusted tar into a new entry `temp` of `parent`: the tree's top-level entry
/// becomes `temp` itself, everything else is created beneath it. `on_top` is told the tree's
/// top-level name once the first entry is read (to refuse an existing target early).
fn unpack(reader: impl Read, parent: &OwnedFd, temp: &OsStr, mut on_top: impl FnMut(&OsStr) -> Result<()>) -> Result<()> {
    use nix::sys::stat::{fchmod, futimens, mkdirat, utimensat, UtimensatFlags};
    let bad = |m: String| Error::Guest(format!("copy out refused: {m}"));
    let io_bad = |e: io::Error| match e.kind() {
        io::ErrorKind::StorageFull => Error::Storage { context: "copy out: no space left on the host disk".into(), source: e },
        _ => bad(format!("the box sent a malformed archive ({e})")),
    };
    let mut archive = tar::Archive::new(reader);
    let mut top: Option<(OsString, bool)> = None; // name, is a directory
    let mut root: Option<OwnedFd> = None; // `temp`, when the top is a directory
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    let mut count = 0u64;
    for entry in archive.entries().map_err(io_bad)? {
        let mut entry = entry.map_err(io_bad)?;
        count += 1;
        if count > MAX_COPY_ENTRIES {
            return Err(bad(format!("more than {MAX_COPY_ENTRIES} entries")));
        }
        let name_bytes = entry.path_bytes().into_owned();
        let parts = entry_components(&name_bytes).map_err(bad)?;
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(io_bad)? & 0o777; // setuid, setgid and sticky dropped
        let mtime = header.mtime().map_err(io_bad)?;
        let size = entry.size();
        if size > MAX_FILE_BYTES {
            return Err(bad(format!("an entry declares {size} bytes, over the {MAX_FILE_BYTES}-byte limit")));
        }
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let is_dir = kind.is_dir();
        if !(kind.is_file() || is_dir || kind.is_symlink()) {
            return Err(bad(format!("entry {:?} is a {kind:?} (only files, directories and symlinks are copied)", String::from_utf8_lossy(&name_bytes))));
        }
        // Where it goes: the top entry is `temp` in `parent`; the rest beneath `temp`.
        let (dir_fd, leaf): (OwnedFd, OsString) = match &top {
            None => {
                if parts.len() != 1 {
                    return Err(bad("the first entry is not the copy's top-level name".into()));
                }
                on_top(parts[0])?;
                top = Some((parts[0].to_owned(), is_dir));
                (parent.as_fd().try_clone_to_owned().map_err(io_bad)?, temp.to_owned())
            }
            Some((name, top_is_dir)) => {
                if parts[0] != name.as_os_str() || parts.len() < 2 || !top_is_dir {
                    return Err(bad(format!("entry {:?} is not inside the copy's top-level directory", String::from_utf8_lossy(&name_bytes))));
                }
                let rel: PathBuf = parts[1..parts.len() - 1].iter().collect();
                let root = root.as_ref().ok_or_else(|| bad("no top-level directory".into()))?;
                let fd = open_beneath(root, &rel).map_err(|e| bad(format!("entry {:?} is not beneath a directory of the copy ({e})", String::from_utf8_lossy(&name_bytes))))?;
                (fd, parts[parts.len() - 1].to_owned())
            }
        };
        let rel_of_entry: PathBuf = parts[1..].iter().collect();
        if is_dir {
            mkdirat(&dir_fd, leaf.as_os_str(), Mode::from_bits_truncate(0o700))
                .map_err(|e| if e == nix::Error::EEXIST { bad("a duplicate entry".into()) } else { io_bad(e.into()) })?;
            if root.is_none() {
                root = Some(open_beneath(parent, Path::new(temp)).map_err(|e| io_bad(e.into()))?);
            }
            dirs.push((rel_of_entry, mode, mtime));
        } else if kind.is_symlink() {
            let target = link.filter(|l| !l.is_empty() && l.len() < MAX_PATH_BYTES && !l.contains(&0)).ok_or_else(|| bad("a symlink without a valid target".into()))?;
            nix::unistd::symlinkat(OsStr::from_bytes(&target), &dir_fd, leaf.as_os_str())
                .map_err(|e| if e == nix::Error::EEXIST { bad("a duplicate entry".into()) } else { io_bad(e.into()) })?;
            let t = timespec(mtime);
            let _ = utimensat(&dir_fd, leaf.as_os_str(), &t, &t, UtimensatFlags::NoFollowSymlink);
        } else {
            let fd = nix::fcntl::openat(&dir_fd, leaf.as_os_str(), OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::from_bits_truncate(0o600))
                .map_err(|e| if e == nix::Error::EEXIST { bad("a duplicate entry".into()) } else { io_bad(e.into()) })?;
            let mut file = std::fs::File::from(fd);
            let copied = io::copy(&mut (&mut entry).take(size), &mut file).map_err(io_bad)?;
            if copied != size {
                return Err(bad(format!("an entry declared {size} bytes but carried {copied}")));
            }
            fchmod(&file, Mode::from_bits_truncate(mode)).map_err(|e| io_bad(e.into()))?;
            let t = timespec(mtime);
            futimens(&file, &t, &t).map_err(|e| io_bad(e.into()))?;
        }
    }
    // Directories get their mode and mtime last, deepest first (their entries changed both).
    if let Some(root) = &root {
        for (rel, mode, mtime) in dirs.iter().rev() {
            let fd = open_beneath(root, rel).map_err(|e| io_bad(e.into()))?;
            let fd = nix::fcntl::openat(&fd, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| io_bad(e.into()))?;
            fchmod(&fd, Mode::from_bits_truncate(*mode)).map_err(|e| io_bad(e.into()))?;
            let t = timespec(*mtime);
            futimens(&fd, &t, &t).map_err(|e| io_bad(e.into()))?;
        }
    }
    if top.is_none() {
        return Err(bad("the box sent an empty archive".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A tar with raw entries: (name, type, mode, data, link target). Names are written into
    /// the header as they are (no validation), as a hostile guest would.
    fn tar_of(entries: &[(&str, tar::EntryType, u32, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, mode, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_mtime(1_600_000_000);
            h.set_size(data.len() as u64);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType as T;

    fn extract_into(dest: &Path, bytes: &[u8]) -> Result<PathBuf> {
        let piece = PieceBytes(bytes);
        Landing::new(dest, false).unwrap().extract(piece)
    }

    struct PieceBytes<'a>(&'a [u8]);
    impl Read for PieceBytes<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }

    /// Everything under `dir` (relative names), to show nothing else was written.
    fn tree(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
                if e.file_type().unwrap().is_dir() {
                    todo.push(e.path());
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_good_tree_lands_with_modes_mtimes_and_symlinks() {
        let dest = tempfile::tempdir().unwrap();
        let bytes = tar_of(&[
            ("t/", T::Directory, 0o755, b"", ""),
            ("t/run", T::Regular, 0o4755, b"#!/bin/sh\n", ""),
            ("t/sub/", T::Directory, 0o700, b"", ""),
            ("t/sub/secret", T::Regular, 0o600, b"s", ""),
            ("t/link", T::Symlink, 0o777, b"", "/etc"),
        ]);
        let at = extract_into(dest.path(), &bytes).unwrap();
        assert_eq!(at, dest.path().join("t"));
        assert_eq!(tree(dest.path()), ["t", "t/link", "t/run", "t/sub", "t/sub/secret"]);
        let mode = |p: &str| std::fs::symlink_metadata(dest.path().join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!((mode("t"), mode("t/run"), mode("t/sub"), mode("t/sub/secret")), (0o755, 0o755, 0o700, 0o600), "setuid must be dropped");
        assert_eq!(std::fs::read_link(dest.path().join("t/link")).unwrap(), Path::new("/etc"));
        let mtime = std::fs::metadata(dest.path().join("t/sub")).unwrap().modified().unwrap();
        assert_eq!(mtime, SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000));
    }

    #[test]
    fn hostile_archives_write_nothing_outside_and_leave_nothing() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("dot-dot", tar_of(&[("t/", T::Directory, 0o755, b"", ""), ("t/../x", T::Regular, 0o644, b"x", "")])),
            ("dot-dot top", tar_of(&[("../x", T::Regular, 0o644, b"x", "")])),
            ("absolute", tar_of(&[("/etc/x", T::Regular, 0o644, b"x", "")])),
            ("outside the top", tar_of(&[("t/", T::Directory, 0o755, b"", ""), ("u/x", T::Regular, 0o644, b"x", "")])),
            ("through a symlink", tar_of(&[("t/", T::Directory, 0o755, b"", ""), ("t/a", T::Symlink, 0o777, b"", "/etc"), ("t/a/passwd", T::Regular, 0o644, b"pwned", "")])),
            ("through a relative symlink", tar_of(&[("t/", T::Directory, 0o755, b"", ""), ("t/up", T::Symlink, 0o777, b"", "../../.."), ("t/up/x", T::Regular, 0o644, b"x", "")])),
            ("hard link", tar_of(&[("t/", T::Directory, 0o755, b"", ""), ("t/h", T::Link, 0o644, b"", "/etc/passwd")])),
            ("device", tar_of(&[("t/", T::Directory, 0o755, b"", ""), ("t/d", T::Char, 0o644, b"", "")])),
            ("fifo", tar_of(&[("t/", T::Directory, 0o755, b"", ""), ("t/f", T::Fifo, 0o644, b"", "")])),
            ("duplicate", tar_of(&[("t/", T::Directory, 0o755, b"", ""), ("t/f", T::Regular, 0o644, b"1", ""), ("t/f", T::Regular, 0o644, b"2", "")])),
            ("entries under a file", tar_of(&[("t", T::Regular, 0o644, b"1", ""), ("t/f", T::Regular, 0o644, b"2", "")])),
            ("empty", tar::Builder::new(Vec::new()).into_inner().unwrap()),
        ];
        for (what, bytes) in cases {
            let dest = tempfile::tempdir().unwrap();
            let err = extract_into(dest.path(), &bytes).expect_err(what);
            assert_eq!(err.code(), "GUEST", "{what}: {err}");
            assert_eq!(tree(dest.path()), Vec::<String>::new(), "{what}: something was left: {err}");
        }
        assert!(!Path::new("/etc/x").exists());
    }

    #[test]
    fn a_huge_declared_size_or_a_cut_stream_is_refused() {
        // Header says 1 EiB; the data ends at once.
        let mut h = tar::Header::new_gnu();
        h.set_path("big").unwrap();
        h.set_size(1 << 60);
        h.set_mode(0o644);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 1024]);
        let dest = tempfile::tempdir().unwrap();
        let err = extract_into(dest.path(), &bytes).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        h.set_size(10_000);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(&[7u8; 600]);
        let err = extract_into(dest.path(), &bytes).unwrap_err();
        assert_eq!(err.code(), "GUEST", "{err}");
        assert_eq!(tree(dest.path()), Vec::<String>::new());
    }

    #[test]
    fn an_existing_target_is_refused_without_overwrite_and_replaced_with_it() {
        let dest = tempfile::tempdir().unwrap();
        std::fs::create_dir(dest.path().join("t")).unwrap();
        std::fs::write(dest.path().join("t/old"), b"old").unwrap();
        let bytes = tar_of(&[("t/", T::Directory, 0o755, b"", ""), ("t/new", T::Regular, 0o644, b"new", "")]);
        let err = extract_into(dest.path(), &bytes).unwrap_err();
        assert_eq!(err.code(), "ALREADY_EXISTS");
        assert!(err.to_string().contains(&dest.path().join("t").display().to_string()), "{err}");
        Landing::new(dest.path(), true).unwrap().extract(PieceBytes(&bytes)).unwrap();
        assert_eq!(tree(dest.path()), ["t", "t/new"]);
    }

    #[test]
    fn names_from_the_guest_are_validated() {
        assert!(entry_components(b"a/b/").is_ok());
        for bad in [&b"a//b"[..], b"./a", b"a/./b", b"a/../b", b"", b"/a"] {
            assert!(entry_components(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = vec![b'a'; 256];
        assert!(entry_components(&long).is_err());
        let deep = "a/".repeat(MAX_COPY_DEPTH + 1);
        assert!(entry_components(deep.as_bytes()).is_err());
        for bad in ["", ".", "..", "a/b", &"x".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let ev = |path: &str, old: &str, kind| boxlite_protocol::v1::WatchEvent { kind, path: path.into(), old_path: old.into(), is_dir: false };
        assert!(watch_event(ev("/w/a", "", 1), "/w").is_ok());
        assert!(watch_event(ev("/w/a", "", 1), "/w/").is_ok());
        assert!(watch_event(ev("/wx/a", "", 1), "/w").is_err());
        assert!(watch_event(ev("/w", "", 1), "/w").is_err());
        assert!(watch_event(ev("/w/a", "/etc/x", 4), "/w").is_err());
        assert!(watch_event(ev("/w/a", "", 9), "/w").is_err());
    }
}
