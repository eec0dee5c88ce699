//! Files of the box for the host: copy in and out as tar, read, write, list, stat, mkdir, remove,
//! rename and watch (inotify).
//!
//! A path from the host is a path inside the box: it is resolved with `openat2(RESOLVE_IN_ROOT)`
//! on a descriptor of [`ROOTFS`], so the box's own symlinks (`/lib -> usr/lib`, or `x -> /etc`)
//! resolve inside the box root, as they would for a command chrooted there, and never reach the
//! VM's own root. Volumes mounted under the root are reached the same way. The resolved
//! directory's path (read back from /proc/self/fd) is then used with std::fs; a box process that
//! swaps a component for a symlink between the two could only reach the VM's initramfs, which
//! holds nothing but this agent (the host trusts nothing the guest says anyway).

use crate::init::ROOTFS;
use boxlite_protocol::v1::{
    copy_in_progress, copy_in_request, copy_in_staged_request, write_file_request, CopyInProgress, CopyInRequest, CopyInStagedRequest,
    FileChunk, FileEntry, FileType, ListDirResponse, StagedChunk, WatchEvent, WatchEventKind, WriteFileRequest,
};
use crate::output_lane::{Lane, LaneWriter};
use boxlite_protocol::chunks::{ChunkWriter, Piece, PieceReader};
use boxlite_protocol::{MAX_CHUNK_BYTES, MAX_PATH_BYTES, MAX_STAGED_CHUNK_BYTES};
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

/// Chunks queued between the blocking file work and the gRPC stream (backpressure both ways).
const QUEUE: usize = 8;
/// Entries per `ListDir` message.
const LIST_BATCH: usize = 1000;

/// The gRPC status for an I/O error on box path `path`.
pub fn status(path: &str, e: &io::Error) -> Status {
    use io::ErrorKind as K;
    let no_space = e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT);
    match e.kind() {
        _ if no_space => Status::resource_exhausted(format!("no space left on the box disk (writing {path})")),
        K::StorageFull | K::QuotaExceeded => Status::resource_exhausted(format!("no space left on the box disk (writing {path})")),
        K::NotFound => Status::not_found(format!("{path} does not exist in the box")),
        K::AlreadyExists => Status::already_exists(format!("{path} already exists in the box")),
        K::NotADirectory => Status::invalid_argument(format!("{path}: a component of the path is not a directory")),
        K::IsADirectory => Status::invalid_argument(format!("{path} is a directory")),
        K::DirectoryNotEmpty => Status::invalid_argument(format!("{path} is a directory that is not empty; remove it recursively")),
        K::PermissionDenied | K::ReadOnlyFilesystem => Status::permission_denied(format!("{path}: {e}")),
        _ => Status::internal(format!("{path}: {e}")),
    }
}

fn io_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// A box path must be absolute and of sane length.
fn check(path: &str) -> Result<(), Status> {
    if !path.starts_with('/') {
        return Err(Status::invalid_argument(format!("'{path}' is not an absolute path in the box")));
    }
    if path.len() > MAX_PATH_BYTES || path.contains('\0') {
        return Err(Status::invalid_argument("the path is longer than 4096 bytes or holds a NUL byte"));
    }
    Ok(())
}

fn root() -> io::Result<OwnedFd> {
    nix::fcntl::open(ROOTFS, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()).map_err(io_err)
}

/// The VM path of box path `path`, every symlink (the final one too when `follow`) resolved
/// inside the box root.
fn open_in_root(path: &str, follow: bool) -> io::Result<PathBuf> {
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let how = OpenHow::new().flags(flags).resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(root()?, path, how).map_err(io_err)?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if real != Path::new(ROOTFS) && !real.starts_with(format!("{ROOTFS}/")) {
        return Err(io::Error::other("the path resolved outside the box root"));
    }
    Ok(real)
}

/// The VM path of `path` with its parent resolved inside the box root and its final component
/// kept as it is (not followed; it need not exist).
fn resolve(path: &str) -> io::Result<PathBuf> {
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if name.is_empty() || name == "." || name == ".." {
        return open_in_root(path, true);
    }
    Ok(open_in_root(if parent.is_empty() { "/" } else { parent }, true)?.join(name))
}

/// The box path of a VM path under the root.
fn box_path(vm: &Path) -> String {
    let rel = vm.strip_prefix(ROOTFS).unwrap_or(vm);
    format!("/{}", rel.display())
}

/// Whether `name` is one of [`temp_beside`]'s.
fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(".boxlite-")
}

/// A fresh name beside `target` for building it before it is renamed into place.
fn temp_beside(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    target.with_file_name(format!(".{}.boxlite-{}-{nanos}", name.chars().take(64).collect::<String>(), std::process::id()))
}

/// A file being built beside its target, removed unless it was renamed into place, also when
/// the call is dropped midway (on the host's reset the server drops the handler where it waits).
struct Staged<'a>(&'a Path);

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
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

/// Puts the built `temp` in place of `target`, replacing what was there.
fn replace(temp: &Path, target: &Path) -> io::Result<()> {
    if std::fs::symlink_metadata(target).is_ok() {
        let mut old = temp_beside(target).into_os_string();
        old.push(".old");
        std::fs::rename(target, &old)?;
        std::fs::rename(temp, target)?;
        return remove_any(Path::new(&old));
    }
    std::fs::rename(temp, target)
}

/// Forwards the data messages of a client stream to `tx`, then `End` when it ended cleanly.
async fn feed<M>(mut inbound: Streaming<M>, tx: mpsc::Sender<Piece>, data: impl Fn(M) -> Option<Vec<u8>>) -> Result<(), Status> {
    loop {
        match inbound.message().await? {
            Some(m) => match data(m) {
                Some(d) if d.len() <= MAX_CHUNK_BYTES * 2 => {
                    if tx.send(Piece::Data(d)).await.is_err() {
                        return Ok(()); // the work ended early; its error is the answer
                    }
                }
                _ => return Err(Status::invalid_argument("expected a data chunk (at most 1 MiB)")),
            },
            None => {
                let _ = tx.send(Piece::End).await;
                return Ok(());
            }
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Status> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(e.to_string()))?
}

/// `CopyIn`: unpacks the host's tar at the header's path.
pub async fn copy_in(mut inbound: Streaming<CopyInRequest>) -> Result<(), Status> {
    let header = match inbound.message().await?.and_then(|m| m.kind) {
        Some(copy_in_request::Kind::Header(h)) => h,
        _ => return Err(Status::invalid_argument("the first copy-in message must be the header")),
    };
    check(&header.path)?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let reader = PieceReader::new(rx, "the host cut the stream off");
    let work = tokio::task::spawn_blocking(move || unpack(&header.path, header.overwrite, reader));
    let fed = feed(inbound, tx, |m: CopyInRequest| match m.kind {
        Some(copy_in_request::Kind::Data(d)) => Some(d),
        _ => None,
    })
    .await;
    let done = work.await.map_err(|e| Status::internal(e.to_string()))?;
    fed?;
    done
}

/// What the host's staged-copy stream tells the unpacking thread.
enum StagedPiece {
    Chunk(StagedChunk),
    End,
}

/// `CopyInStaged`: `CopyIn` with the tar read from the host's chunk files in the inbox.
pub async fn copy_in_staged(mut inbound: Streaming<CopyInStagedRequest>) -> Result<mpsc::Receiver<Result<CopyInProgress, Status>>, Status> {
    let header = match inbound.message().await?.and_then(|m| m.kind) {
        Some(copy_in_staged_request::Kind::Header(h)) => h,
        _ => return Err(Status::invalid_argument("the first staged copy-in message must be the header")),
    };
    check(&header.path)?;
    let mounted = blocking(|| {
        crate::inbox::Mounted::acquire().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Status::failed_precondition("this VM has no inbox; copy over the channel"),
            _ => Status::internal(format!("mounting the inbox: {e}")),
        })
    })
    .await?;
    let (progress, rx) = mpsc::channel(QUEUE);
    let _ = progress.send(Ok(CopyInProgress { kind: Some(copy_in_progress::Kind::Ready(true)) })).await;
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let (tx, chunks) = mpsc::channel(QUEUE);
        let consumed = progress.clone();
        let mut work = tokio::task::spawn_blocking(move || {
            let _mounted = mounted;
            // 9p without a cache is one round trip per read: read the chunks 1 MiB at a time.
            let mut reader = io::BufReader::with_capacity(1 << 20, StagedReader { chunks, consumed, file: None, ended: false, bytes: 0, waited: Default::default() });
            let done = unpack(&header.path, header.overwrite, &mut reader);
            (done, reader.get_ref().bytes, reader.get_ref().waited)
        });
        let (fed, worked) = tokio::select! {
            fed = feed_staged(&mut inbound, tx) => (fed, (&mut work).await),
            // The unpack ended first: a failure (its error is the answer), or a tar complete
            // before the host's `end`.
            worked = &mut work => (Ok(()), worked),
        };
        let answer = match (fed, worked) {
            (Err(s), _) => Err(s),
            (_, Err(e)) => Err(Status::internal(e.to_string())),
            (_, Ok((done, bytes, waited))) => done.map(|()| {
                let (ms, waited_ms) = (started.elapsed().as_millis(), waited.as_millis());
                crate::init::console(&format!("boxlite-guest: staged copy in: {bytes} bytes in {ms} ms ({waited_ms} ms waiting for chunks)"));
                CopyInProgress { kind: Some(copy_in_progress::Kind::Done(true)) }
            }),
        };
        let _ = progress.send(answer).await;
    });
    Ok(rx)
}

/// Forwards the chunks the host names to the unpacking thread, then `End` on the host's `end`.
async fn feed_staged(inbound: &mut Streaming<CopyInStagedRequest>, tx: mpsc::Sender<StagedPiece>) -> Result<(), Status> {
    loop {
        let piece = match inbound.message().await?.and_then(|m| m.kind) {
            Some(copy_in_staged_request::Kind::Chunk(c)) => {
                if !boxlite_protocol::is_staged_chunk_name(&c.name) || c.len > MAX_STAGED_CHUNK_BYTES {
                    return Err(Status::invalid_argument("a staged chunk needs a name of [0-9a-z-] and at most 16 MiB"));
                }
                StagedPiece::Chunk(c)
            }
            Some(copy_in_staged_request::Kind::End(true)) => StagedPiece::End,
            None => return Err(Status::aborted("the host ended the staged copy without its end")),
            _ => return Err(Status::invalid_argument("expected a staged chunk or the end")),
        };
        let end = matches!(piece, StagedPiece::End);
        if tx.send(piece).await.is_err() || end {
            return Ok(()); // the work ended early (its error is the answer), or all is sent
        }
    }
}

/// The tar bytes of a staged copy: each chunk file read whole, in order, then acknowledged (the
/// host deletes it). Channel closed before `End`: `ConnectionAborted`, as [`PieceReader`].
struct StagedReader {
    chunks: mpsc::Receiver<StagedPiece>,
    consumed: mpsc::Sender<Result<CopyInProgress, Status>>,
    /// The chunk being read, its name and the bytes left in it.
    file: Option<(std::fs::File, String, u64)>,
    ended: bool,
    bytes: u64,
    /// Time spent waiting for the host to name the next chunk.
    waited: std::time::Duration,
}

impl StagedReader {
    fn open(c: StagedChunk) -> io::Result<(std::fs::File, String, u64)> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(crate::inbox::chunk_path(&c.name))?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() != c.len {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("staged chunk {} is not a file of {} bytes", c.name, c.len)));
        }
        Ok((file, c.name, c.len))
    }
}

impl Read for StagedReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((file, name, left)) = &mut self.file {
                if *left > 0 {
                    let want = out.len().min(*left as usize);
                    let n = file.read(&mut out[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("staged chunk {name} ended early")));
                    }
                    *left -= n as u64;
                    self.bytes += n as u64;
                    return Ok(n);
                }
                let (file, name, _) = self.file.take().unwrap_or_else(|| unreachable!());
                drop(file);
                let _ = self.consumed.blocking_send(Ok(CopyInProgress { kind: Some(copy_in_progress::Kind::Consumed(name)) }));
            }
            if self.ended {
                return Ok(0);
            }
            let asked = std::time::Instant::now();
            let next = self.chunks.blocking_recv();
            self.waited += asked.elapsed();
            match next {
                Some(StagedPiece::Chunk(c)) => self.file = Some(Self::open(c)?),
                Some(StagedPiece::End) => self.ended = true,
                None => return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the host cut the staged copy off")),
            }
        }
    }
}

fn unpack<R: Read>(dst: &str, overwrite: bool, reader: R) -> Result<(), Status> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    let mut entries = archive.entries().map_err(|e| status(dst, &e))?;
    let mut first = match entries.next() {
        Some(e) => e.map_err(|e| status(dst, &e))?,
        None => return Err(Status::invalid_argument("the copy holds no file")),
    };
    let top = first.path().map_err(|e| status(dst, &e))?.into_owned();
    let Some(name) = top.file_name().filter(|_| top.components().count() == 1).map(|n| n.to_owned()) else {
        return Err(Status::invalid_argument("the copy's first entry must be its top-level name"));
    };
    // Into an existing directory (symlinks followed inside the box) under its own name, else at
    // `dst` itself.
    let target = match open_in_root(dst, true) {
        Ok(dir) if dir.is_dir() => dir.join(&name),
        _ if dst.ends_with('/') => return Err(Status::not_found(format!("the directory {dst} does not exist in the box"))),
        _ => resolve(dst).map_err(|e| status(dst, &e))?,
    };
    let shown = box_path(&target);
    if std::fs::symlink_metadata(&target).is_ok() && !overwrite {
        return Err(Status::already_exists(format!("{shown} already exists in the box; copy with overwrite to replace it")));
    }
    let parent = target.parent().unwrap_or(Path::new(ROOTFS)).to_path_buf();
    if !parent.is_dir() {
        return Err(Status::not_found(format!("the directory {} does not exist in the box", box_path(&parent))));
    }
    let temp = temp_beside(&target);
    std::fs::create_dir(&temp).map_err(|e| status(&shown, &e))?;
    let built = (|| -> io::Result<()> {
        let mut dirs = Vec::new();
        let real_temp = std::fs::canonicalize(&temp)?;
        let mut buf = vec![0u8; UNPACK_BUF_BYTES];
        let mut unpack_one = |entry: &mut tar::Entry<'_, R>| -> io::Result<()> {
            let path = entry.path()?.into_owned();
            if path.components().next().map(|c| c.as_os_str()) != Some(name.as_os_str()) {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("entry {} is outside the copy's top-level name", path.display())));
            }
            if entry.header().entry_type().is_dir() {
                // Created open, made read-only (and dated) once its contents are in.
                std::fs::create_dir_all(temp.join(&path))?;
                dirs.push((temp.join(&path), entry.header().mode()?, entry.header().mtime()?));
                return Ok(());
            }
            if entry.header().entry_type() == tar::EntryType::Regular {
                return unpack_file(entry, &real_temp, &path, &mut buf);
            }
            entry.unpack_in(&temp).map(|_| ())
        };
        unpack_one(&mut first)?;
        for entry in entries {
            unpack_one(&mut entry?)?;
        }
        for (dir, mode, mtime) in dirs.iter().rev() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o7777))?;
            let time = nix::sys::time::TimeSpec::new(*mtime as i64, 0);
            nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, dir, &time, &time, nix::sys::stat::UtimensatFlags::NoFollowSymlink).map_err(io_err)?;
        }
        replace(&temp.join(&name), &target)
    })();
    let _ = remove_any(&temp);
    built.map_err(|e| status(&shown, &e))
}

/// A regular file of a copy in, written in writes of up to this many bytes.
const UNPACK_BUF_BYTES: usize = 1 << 20;

/// A regular file of a copy in: tar's own unpack copies 8 KiB per `write`, and each syscall (and
/// copy) counts in an emulated guest, so its bytes are copied here a megabyte at a time. As
/// tar's `unpack_in`: plain relative names only, parents made as needed and checked to resolve
/// inside `temp` (never through a symlink elsewhere), permission bits and mtime kept.
fn unpack_file<R: Read>(entry: &mut tar::Entry<'_, R>, temp: &Path, path: &Path, buf: &mut [u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if !path.components().all(|c| matches!(c, std::path::Component::Normal(_))) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("entry {} is not a plain relative path", path.display())));
    }
    let dst = temp.join(path);
    let parent = dst.parent().unwrap_or(temp);
    std::fs::create_dir_all(parent)?;
    if !std::fs::canonicalize(parent)?.starts_with(temp) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("entry {} leads outside the copy", path.display())));
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&dst)?;
    let mut left = entry.size();
    while left > 0 {
        match entry.read(buf)? {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("entry {} ended before its size", path.display()))),
            n => {
                file.write_all(&buf[..n])?;
                left = left.saturating_sub(n as u64);
            }
        }
    }
    file.set_permissions(std::fs::Permissions::from_mode(entry.header().mode()? & 0o7777))?;
    let time = nix::sys::time::TimeSpec::new(entry.header().mtime()? as i64, 0);
    nix::sys::stat::futimens(&file, &time, &time).map_err(io_err)
}

/// `CopyOut`: streams `path` as a tar under its base name; on the output lane (call `lane`)
/// where the host serves one.
pub async fn copy_out(path: String, lane: Option<(Arc<Lane>, u32)>) -> Result<mpsc::Receiver<Result<FileChunk, Status>>, Status> {
    check(&path)?;
    let src = resolve(&path).map_err(|e| status(&path, &e))?;
    std::fs::symlink_metadata(&src).map_err(|e| status(&path, &e))?;
    let Some(name) = src.file_name().filter(|_| src != Path::new(ROOTFS)).map(PathBuf::from) else {
        return Err(Status::invalid_argument("the box root cannot be copied out as a whole; copy the directories under it"));
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::task::spawn_blocking(move || {
        let written = match lane {
            Some((lane, id)) => write_tree(LaneWriter::new(lane, id, tx.clone()), &name, &src)
                .and_then(|w| w.finish())
                .map(|frames| Some(FileChunk { data: Vec::new(), output_lane_frames: frames })),
            None => write_tree(ChunkWriter::new(tx.clone(), |data| Ok(FileChunk { data, ..Default::default() }), "the host went away"), &name, &src)
                .and_then(|mut w| w.flush())
                .map(|_| None),
        };
        let last = match written {
            Ok(last) => last.map(Ok),
            Err(_) if tx.is_closed() => None, // the client is gone
            Err(e) => Some(Err(status(&path, &e))),
        };
        if let Some(last) = last {
            let _ = tx.blocking_send(last);
        }
    });
    Ok(rx)
}

/// `src` as a tar under `name`, into `w`.
fn write_tree<W: Write>(w: W, name: &Path, src: &Path) -> io::Result<W> {
    let mut builder = tar::Builder::new(w);
    // The agent's own mounts inside the box (kernel filesystems) are not the box's files.
    let pseudo = ["/proc", "/sys", "/dev"].map(|p| PathBuf::from(format!("{ROOTFS}{p}")));
    let descend = move |dir: &Path| !pseudo.iter().any(|p| p == dir);
    boxlite_protocol::tree::append_tree(&mut builder, name, src, &descend)?;
    builder.into_inner()
}

/// `ReadFile`: streams a regular file (symlinks followed inside the box); on the output lane
/// (call `lane`) where the host serves one.
pub async fn read_file(path: String, lane: Option<(Arc<Lane>, u32)>) -> Result<mpsc::Receiver<Result<FileChunk, Status>>, Status> {
    check(&path)?;
    let real = open_in_root(&path, true).map_err(|e| status(&path, &e))?;
    let mut file = std::fs::File::open(&real).map_err(|e| status(&path, &e))?;
    let meta = file.metadata().map_err(|e| status(&path, &e))?;
    if !meta.is_file() {
        return Err(Status::invalid_argument(format!("{path} is not a regular file")));
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    if let Some((lane, id)) = lane {
        tokio::spawn(async move {
            lane.register(id);
            let closed = || {
                let tx = tx.clone();
                async move { tx.closed().await }
            };
            let sent = lane.send_file(id, file, closed).await;
            lane.forget(id);
            let last = match sent {
                Ok(frames) => Ok(FileChunk { data: Vec::new(), output_lane_frames: frames }),
                Err(e) => Err(status(&path, &e)),
            };
            let _ = tx.send(last).await;
        });
        return Ok(rx);
    }
    tokio::task::spawn_blocking(move || {
        loop {
            // Read straight into the chunk sent (each copy of the bytes counts under emulation).
            let mut data = Vec::with_capacity(MAX_CHUNK_BYTES);
            match (&mut file).take(MAX_CHUNK_BYTES as u64).read_to_end(&mut data) {
                Ok(0) => return,
                Ok(_) => {
                    if tx.blocking_send(Ok(FileChunk { data, ..Default::default() })).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(status(&path, &e)));
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// `WriteFile`: writes beside the target, then renames it into place.
pub async fn write_file(mut inbound: Streaming<WriteFileRequest>) -> Result<(), Status> {
    let header = match inbound.message().await?.and_then(|m| m.kind) {
        Some(write_file_request::Kind::Header(h)) => h,
        _ => return Err(Status::invalid_argument("the first write message must be the header")),
    };
    let path = header.path;
    check(&path)?;
    if header.mode.is_some_and(|m| m > 0o7777) {
        return Err(Status::invalid_argument("the mode must be permission bits (at most 0o7777)"));
    }
    // An existing file (through symlinks, inside the box) is replaced where it really is.
    let target = match open_in_root(&path, true) {
        Ok(real) => real,
        Err(_) => resolve(&path).map_err(|e| status(&path, &e))?,
    };
    let existing = std::fs::metadata(&target).ok();
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(Status::invalid_argument(format!("{path} is a directory")));
    }
    let mode = header.mode.or(existing.map(|m| m.mode() & 0o7777)).unwrap_or(0o644);
    let temp = temp_beside(&target);
    let _staged = Staged(&temp);
    let written = async {
        let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&temp).await?;
        while let Some(m) = inbound.message().await.map_err(|s| io::Error::new(io::ErrorKind::Interrupted, s.message().to_string()))? {
            match m.kind {
                Some(write_file_request::Kind::Data(d)) => tokio::io::AsyncWriteExt::write_all(&mut file, &d).await?,
                _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "expected a data chunk")),
            }
        }
        file.set_permissions(std::fs::Permissions::from_mode(mode)).await?;
        drop(file);
        std::fs::rename(&temp, &target)
    }
    .await;
    written.map_err(|e| status(&path, &e))
}

fn entry(name: String, meta: &std::fs::Metadata) -> FileEntry {
    let t = meta.file_type();
    let kind = if t.is_file() {
        FileType::File
    } else if t.is_dir() {
        FileType::Dir
    } else if t.is_symlink() {
        FileType::Symlink
    } else {
        FileType::Other
    };
    // A symlink's permission bits are never used on Linux, which shows them as 0777. Our guest
    // kernel (ext4 without POSIX ACLs) gives a new symlink the creator's umask instead (`ln -s`
    // in a box made 0755), so they are reported as Linux shows them everywhere else.
    let mode = if t.is_symlink() { 0o777 } else { meta.mode() & 0o7777 };
    FileEntry { name, r#type: kind.into(), size: meta.len(), mode, mtime_ms: meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000 }
}

/// `ListDir`: the directory's entries in batches.
pub async fn list_dir(path: String) -> Result<mpsc::Receiver<Result<ListDirResponse, Status>>, Status> {
    check(&path)?;
    let real = open_in_root(&path, true).map_err(|e| status(&path, &e))?;
    let dir = std::fs::read_dir(&real).map_err(|e| status(&path, &e))?;
    let (tx, rx) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let mut entries = Vec::new();
        for item in dir {
            let Ok(item) = item else { continue };
            let Ok(meta) = item.path().symlink_metadata() else { continue }; // gone since listed
            entries.push(entry(item.file_name().to_string_lossy().into_owned(), &meta));
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let batch: Vec<_> = entries.by_ref().take(LIST_BATCH).collect();
            if tx.blocking_send(Ok(ListDirResponse { entries: batch })).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// `StatFile`: one entry, its final symlink not followed.
pub async fn stat(path: String) -> Result<FileEntry, Status> {
    check(&path)?;
    let real = resolve(&path).map_err(|e| status(&path, &e))?;
    let meta = std::fs::symlink_metadata(&real).map_err(|e| status(&path, &e))?;
    // The box root is `/` to the box (its VM path ends in the root's own directory name).
    let name = match real.file_name() {
        Some(n) if real != Path::new(ROOTFS) => n.to_string_lossy().into_owned(),
        _ => "/".into(),
    };
    Ok(entry(name, &meta))
}

/// `MakeDir`: one directory, or with `parents` every missing one (an existing directory is fine).
pub async fn make_dir(path: String, parents: bool) -> Result<(), Status> {
    check(&path)?;
    let err = |e: io::Error| status(&path, &e);
    if !parents {
        return std::fs::create_dir(resolve(&path).map_err(err)?).map_err(err);
    }
    let mut prefix = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        prefix.push('/');
        prefix.push_str(part);
        match open_in_root(&prefix, true) {
            Ok(real) if real.is_dir() => continue,
            Ok(_) => return Err(Status::already_exists(format!("{prefix} exists in the box and is not a directory"))),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(status(&prefix, &e)),
        }
        match std::fs::create_dir(resolve(&prefix).map_err(|e| status(&prefix, &e))?) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {} // made meanwhile
            Err(e) => return Err(status(&prefix, &e)),
        }
    }
    Ok(())
}

/// `RemoveFile`: a file, symlink or empty directory; with `recursive`, a whole tree.
pub async fn remove(path: String, recursive: bool) -> Result<(), Status> {
    check(&path)?;
    let real = resolve(&path).map_err(|e| status(&path, &e))?;
    if real == Path::new(ROOTFS) {
        return Err(Status::invalid_argument("the box root cannot be removed"));
    }
    let meta = std::fs::symlink_metadata(&real).map_err(|e| status(&path, &e))?;
    let path2 = path.clone();
    blocking(move || {
        let done = match (meta.is_dir(), recursive) {
            (true, true) => std::fs::remove_dir_all(&real),
            (true, false) => std::fs::remove_dir(&real),
            _ => std::fs::remove_file(&real),
        };
        done.map_err(|e| status(&path2, &e))
    })
    .await
}

/// `RenameFile`.
pub async fn rename(from: String, to: String) -> Result<(), Status> {
    check(&from)?;
    check(&to)?;
    let src = resolve(&from).map_err(|e| status(&from, &e))?;
    let dst = resolve(&to).map_err(|e| status(&to, &e))?;
    if src == Path::new(ROOTFS) || dst == Path::new(ROOTFS) {
        return Err(Status::invalid_argument("the box root cannot be renamed"));
    }
    std::fs::symlink_metadata(&src).map_err(|e| status(&from, &e))?;
    std::fs::rename(&src, &dst).map_err(|e| status(&format!("{from} -> {to}"), &e))
}

/// `WatchFiles`: inotify events under `path` until the host drops the stream.
pub async fn watch(path: String, recursive: bool) -> Result<mpsc::Receiver<Result<WatchEvent, Status>>, Status> {
    use nix::sys::inotify::{AddWatchFlags as F, InitFlags, Inotify};
    check(&path)?;
    let real = open_in_root(&path, true).map_err(|e| status(&path, &e))?;
    if !real.is_dir() {
        return Err(Status::invalid_argument(format!("{path} is not a directory (watch a directory)")));
    }
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|e| status(&path, &io_err(e)))?;
    let mask = F::IN_CREATE | F::IN_CLOSE_WRITE | F::IN_DELETE | F::IN_MOVED_FROM | F::IN_MOVED_TO | F::IN_DELETE_SELF | F::IN_ONLYDIR;
    // Watch descriptor -> the directory's box path as the host named it.
    let mut dirs: HashMap<i32, String> = HashMap::new();
    let base = if path.len() > 1 { path.trim_end_matches('/').to_string() } else { path.clone() };
    let add = move |inotify: &Inotify, dirs: &mut HashMap<i32, String>, vm: &Path, shown: String| -> io::Result<()> {
        let mut todo = vec![(vm.to_path_buf(), shown)];
        while let Some((vm, shown)) = todo.pop() {
            let wd = inotify.add_watch(&vm, mask).map_err(io_err)?;
            if recursive {
                for child in std::fs::read_dir(&vm).into_iter().flatten().flatten() {
                    if child.file_type().is_ok_and(|t| t.is_dir()) {
                        todo.push((child.path(), join(&shown, &child.file_name().to_string_lossy())));
                    }
                }
            }
            dirs.insert(wd.as_raw(), shown);
        }
        Ok(())
    };
    add(&inotify, &mut dirs, &real, base.clone()).map_err(|e| status(&path, &e))?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        // SAFETY: the Inotify is moved into the AsyncFd, so its descriptor stays open and the same.
        let Ok(fd) = (unsafe { tokio::io::unix::AsyncFd::register(InotifyFd(inotify)) }) else { return };
        loop {
            let mut ready = tokio::select! {
                r = fd.readable() => match r { Ok(r) => r, Err(_) => return },
                _ = tx.closed() => return,
            };
            let events = match fd.get_ref().0.read_events() {
                Ok(events) => events,
                Err(nix::Error::EAGAIN) => {
                    ready.clear_ready();
                    continue;
                }
                Err(e) => {
                    let _ = tx.send(Err(status(&base, &io_err(e)))).await;
                    return;
                }
            };
            let mut out: Vec<WatchEvent> = Vec::new();
            let mut moved_from: HashMap<u32, usize> = HashMap::new();
            let mut temp_moves = std::collections::HashSet::new();
            for ev in events {
                if ev.mask.contains(F::IN_Q_OVERFLOW) {
                    let _ = tx.send(Err(Status::resource_exhausted("the box's file events came faster than they were read; some were lost"))).await;
                    return;
                }
                let Some(dir) = dirs.get(&ev.wd.as_raw()).cloned() else { continue };
                if ev.mask.contains(F::IN_IGNORED) {
                    dirs.remove(&ev.wd.as_raw());
                    continue;
                }
                if ev.mask.contains(F::IN_DELETE_SELF) {
                    if dir == base {
                        for e in out.drain(..) {
                            let _ = tx.send(Ok(e)).await;
                        }
                        return; // the watched directory is gone: the stream ends
                    }
                    continue;
                }
                let Some(name) = ev.name.as_ref().map(|n| n.to_string_lossy().into_owned()) else {
                    continue;
                };
                let is_dir = ev.mask.contains(F::IN_ISDIR);
                // Our own temporaries (writes and copies are built beside their target) are not
                // the box's events: their rename into place is the target's change.
                if is_temp(&name) {
                    if ev.mask.contains(F::IN_MOVED_FROM) {
                        temp_moves.insert(ev.cookie);
                    }
                    continue;
                }
                let shown = join(&dir, &name);
                if ev.mask.contains(F::IN_MOVED_TO) && temp_moves.remove(&ev.cookie) {
                    if recursive && is_dir {
                        if let Ok(vm) = open_in_root(&shown, false) {
                            let _ = add(&fd.get_ref().0, &mut dirs, &vm, shown.clone());
                        }
                    }
                    let kind = if is_dir { WatchEventKind::Created } else { WatchEventKind::Modified };
                    out.push(WatchEvent { kind: kind.into(), path: shown, old_path: String::new(), is_dir });
                    continue;
                }
                if recursive && is_dir && (ev.mask.contains(F::IN_CREATE) || ev.mask.contains(F::IN_MOVED_TO)) {
                    if let Ok(vm) = open_in_root(&shown, false) {
                        let _ = add(&fd.get_ref().0, &mut dirs, &vm, shown.clone());
                    }
                }
                let kind = if ev.mask.contains(F::IN_CREATE) {
                    WatchEventKind::Created
                } else if ev.mask.contains(F::IN_CLOSE_WRITE) {
                    WatchEventKind::Modified
                } else if ev.mask.contains(F::IN_DELETE) {
                    WatchEventKind::Deleted
                } else if ev.mask.contains(F::IN_MOVED_FROM) {
                    moved_from.insert(ev.cookie, out.len());
                    WatchEventKind::Deleted
                } else if ev.mask.contains(F::IN_MOVED_TO) {
                    // The pair of a rename read together becomes one event.
                    if let Some(i) = moved_from.remove(&ev.cookie) {
                        let old = std::mem::take(&mut out[i].path);
                        out[i] = WatchEvent { kind: WatchEventKind::Renamed.into(), path: shown, old_path: old, is_dir };
                        continue;
                    }
                    WatchEventKind::Created
                } else {
                    continue;
                };
                out.push(WatchEvent { kind: kind.into(), path: shown, old_path: String::new(), is_dir });
            }
            for e in out {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// An inotify instance tokio can poll.
struct InotifyFd(nix::sys::inotify::Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsFd::as_fd(&self.0).as_raw_fd()
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') { format!("{dir}{name}") } else { format!("{dir}/{name}") }
}
