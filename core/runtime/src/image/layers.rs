//! Applying layer tarballs, in order, onto a staging root filesystem.
//!
//! Layer content is hostile. Every path is cleaned lexically (no `..` may climb above the root),
//! and every lookup walks the tree one component at a time from a directory fd, reading symlinks
//! itself and resolving them *inside* the root, the way a chroot would (Docker's scoped
//! resolution). Final components are never followed: files are created with `O_EXCL|O_NOFOLLOW`
//! and everything else goes through `*at` calls on the parent fd. So nothing a layer says can make
//! us create, change or delete anything outside the staging root.
//!
//! Some metadata must never exist on the host, where any local user could use it while the disk is
//! built: setuid/setgid bits, file capabilities (all `security.*` xattrs) and device numbers. They
//! are always recorded as a [`Fixup`] per inode and applied only inside the finished ext4 image with
//! debugfs (see `ext4.rs`); the staging tree holds the file without them (a device is an empty file).
//! Ownership goes the same way when `chown` is refused (not root).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags,
    FileStat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Runs of zeros this long (and aligned to it in the file) become holes instead of writes.
const SPARSE_BLOCK: usize = 4096;
const COPY_BUFFER_BYTES: usize = 32 * SPARSE_BLOCK;
static ZERO_BLOCK: [u8; SPARSE_BLOCK] = [0; SPARSE_BLOCK];
/// Symlinks followed while resolving one path, as Linux's MAXSYMLINKS.
const MAX_SYMLINKS: usize = 40;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
/// Mode bits that are applied only inside the image, never on the staging tree.
const PRIVILEGED_BITS: u32 = 0o6000;
/// Xattr namespace applied only inside the image: file capabilities, security labels.
const PRIVILEGED_XATTR_PREFIX: &str = "security.";

/// Metadata an inode should have in the image but could not get on the staging tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fixup {
    pub uid: u32,
    pub gid: u32,
    /// Full `st_mode`, file type included.
    pub mode: u32,
    /// `(major, minor)` for a character or block device stood in for by an empty file.
    pub device: Option<(u32, u32)>,
    /// Xattrs (`security.*`) that the staging tree does not carry: name and raw value.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Totals of a finished tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TreeStats {
    /// Apparent bytes of regular files, each inode counted once.
    pub content_bytes: u64,
    /// Bytes allocated on the staging filesystem, each inode counted once.
    pub allocated_bytes: u64,
    /// Number of distinct inodes.
    pub inodes: u64,
}

/// How many bytes of file content all layers together may unpack, and why (for the error).
#[derive(Clone, Debug)]
pub(crate) struct UnpackLimit {
    pub bytes: u64,
    /// What the bound is and how to lift it, e.g. "the image store's max_unpacked_bytes; raise it".
    pub reason: String,
}

/// A staging root filesystem that layers are applied to.
pub(crate) struct Rootfs {
    path: PathBuf,
    root: OwnedFd,
    euid: u32,
    /// Keyed by inode: a path is not stable (hardlinks, later renames by whiteouts).
    fixups: HashMap<u64, Fixup>,
    limit: UnpackLimit,
    /// Apparent bytes of regular files written so far, over all layers (sparse or not).
    unpacked: u64,
    /// Copy buffer for file content, reused across entries.
    buf: Vec<u8>,
}

/// What one layer touched, for opaque whiteouts and deferred directory times.
#[derive(Default)]
struct LayerState {
    /// Inodes this layer created or wrote metadata for; opaque dirs keep only these.
    touched: HashSet<u64>,
    /// Directories and their mtimes, set after the layer so that adding children does not bump them.
    dir_times: Vec<(Vec<OsString>, i64)>,
}

/// Header fields of a tar entry, with PAX overrides applied.
struct Meta {
    uid: u32,
    gid: u32,
    /// Permission bits including setuid/setgid/sticky.
    perm: u32,
    mtime: i64,
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Rootfs {
    /// Opens `path`, an empty directory, as the root of a new tree.
    pub fn new(path: &Path) -> Result<Self> {
        let root = openat(
            nix::fcntl::AT_FDCWD,
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::storage("cannot open staging root", path, e.into()))?;
        let mut fs = Rootfs {
            path: path.to_path_buf(),
            root,
            euid: nix::unistd::geteuid().as_raw(),
            fixups: HashMap::new(),
            limit: UnpackLimit { bytes: u64::MAX, reason: String::new() },
            unpacked: 0,
            buf: vec![0; COPY_BUFFER_BYTES],
        };
        // The root of an image is root-owned 0755 unless a layer says otherwise.
        let meta = Meta {
            uid: 0,
            gid: 0,
            perm: 0o755,
            mtime: 0,
            xattrs: Vec::new(),
        };
        let root = fs
            .root
            .try_clone()
            .map_err(|e| Error::storage("cannot dup", path, e))?;
        fs.set_dir_meta(&root, &meta)
            .map_err(|e| fs_error(e, "set up", OsStr::new("/")))?;
        Ok(fs)
    }

    /// Bounds the bytes of file content that the layers applied from now on may unpack in total.
    pub fn set_limit(&mut self, limit: UnpackLimit) {
        self.limit = limit;
    }

    /// Applies one (already decompressed) layer tar stream. `what` names the layer in errors.
    pub fn apply_layer(&mut self, reader: impl Read, what: &str) -> Result<()> {
        let mut archive = tar::Archive::new(reader);
        let mut layer = LayerState::default();
        let entries = archive.entries().map_err(|e| corrupt(what, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| corrupt(what, e))?;
            self.apply_entry(&mut entry, &mut layer, what)?;
        }
        // Only now: creating children would have bumped the directories' times.
        for (path, mtime) in &layer.dir_times {
            if let Ok((dir, _)) = self.resolve(path, None) {
                let t = TimeSpec::new(*mtime, 0);
                if let Ok(fd) = reopen_dir(&dir) {
                    let _ = futimens(&fd, &t, &t);
                }
            }
        }
        Ok(())
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        layer: &mut LayerState,
        what: &str,
    ) -> Result<()> {
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let components = clean_path(&raw_path).ok_or_else(|| {
            Error::Image(format!("layer {what} has an entry '{shown}' that points outside the root; refusing the image"))
        })?;
        let kind = entry.header().entry_type();
        let meta = read_meta(entry).map_err(|e| corrupt(what, e))?;
        let Some((name, parent)) = components.split_last() else {
            // The root itself ("./"): only its metadata can change.
            if kind.is_dir() {
                let root = self
                    .root
                    .try_clone()
                    .map_err(|e| Error::storage("cannot dup", &self.path, e))?;
                self.set_dir_meta(&root, &meta)
                    .map_err(|e| fs_error(e, "update", OsStr::new("/")))?;
                layer.dir_times.push((Vec::new(), meta.mtime));
            }
            return Ok(());
        };
        let ctx = |e: Errno| layer_error(e, what, &shown);

        if let Some(target) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
            if name.as_bytes() == OPAQUE_WHITEOUT {
                let (dir, _) = self.resolve(parent, Some(layer)).map_err(ctx)?;
                let dir = reopen_dir(&dir).map_err(ctx)?;
                return clear_lower(dir.as_fd(), &layer.touched).map_err(ctx);
            }
            if target.starts_with(WHITEOUT_PREFIX) {
                // Other aufs metadata (.wh..wh.plnk and friends) carries nothing for us.
                return Ok(());
            }
            if target.is_empty() || target == b"." || target == b".." {
                return Err(Error::Image(format!(
                    "layer {what} has a malformed whiteout '{shown}'"
                )));
            }
            return match self.resolve(parent, None) {
                Ok((dir, _)) => match remove_all_at(dir.as_fd(), OsStr::from_bytes(target)) {
                    Ok(()) | Err(Errno::ENOENT) => Ok(()),
                    Err(e) => Err(ctx(e)),
                },
                // Whiting out something under a missing or non-directory parent removes nothing.
                Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(()),
                Err(e) => Err(ctx(e)),
            };
        }

        let (dir, mut canonical) = self.resolve(parent, Some(layer)).map_err(ctx)?;
        let dir = dir.as_fd();
        canonical.push(name.clone());
        let existing = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(ctx(e)),
        };
        let existing_is_dir = existing.is_some_and(|st| is_type(&st, SFlag::S_IFDIR));
        // A directory merges into a directory; anything else replaces what was there.
        if existing.is_some() && !(kind.is_dir() && existing_is_dir) {
            if kind.is_hard_link() && link_is_self(entry, &components) {
                return Ok(());
            }
            remove_all_at(dir, name).map_err(ctx)?;
        }

        use tar::EntryType as T;
        let ino = match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                // The header's size is what the entry expands to (a sparse entry's real size), so
                // a bomb is refused before any of it is written.
                let size = entry.size();
                self.unpacked = self.unpacked.saturating_add(size);
                if self.unpacked > self.limit.bytes {
                    return Err(Error::Image(format!(
                        "layer {what} unpacks to more than {} bytes (at '{shown}', a file of {size} bytes), beyond {}; refusing the image",
                        self.limit.bytes, self.limit.reason
                    )));
                }
                let file = create_new_file(dir, name).map_err(ctx)?;
                write_sparse(entry, &file, &mut self.buf).map_err(|e| match e.raw_os_error() {
                    Some(code) if is_local_failure(Errno::from_raw(code)) => {
                        Error::storage("cannot write staging file for", shown.clone(), e)
                    }
                    _ => corrupt(what, e),
                })?;
                self.set_file_meta(&file, &meta, SFlag::S_IFREG, None)
                    .map_err(ctx)?
            }
            T::Directory => {
                if !existing_is_dir {
                    mkdirat(dir, name.as_os_str(), Mode::from_bits_truncate(0o700)).map_err(ctx)?;
                }
                let fd = open_dir_at(dir, name, OFlag::O_RDONLY).map_err(ctx)?;
                layer.dir_times.push((canonical.clone(), meta.mtime));
                self.set_dir_meta(&fd, &meta).map_err(ctx)?
            }
            T::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| {
                    Error::Image(format!(
                        "layer {what} has a symlink '{shown}' without a target"
                    ))
                })?;
                // The target is stored verbatim: it is only ever resolved inside the root.
                symlinkat(OsStr::from_bytes(&target), dir, name.as_os_str()).map_err(ctx)?;
                self.set_at_meta(dir, name, &meta, SFlag::S_IFLNK, None)
                    .map_err(ctx)?
            }
            T::Link => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let target_display = String::from_utf8_lossy(&target).into_owned();
                let escape = || {
                    Error::Image(format!(
                        "layer {what} has a hardlink '{shown}' to '{target_display}' outside the root; refusing the image"
                    ))
                };
                let target = clean_path(&target).ok_or_else(escape)?;
                let (target_name, target_parent) = target.split_last().ok_or_else(escape)?;
                let (target_dir, _) = self.resolve(target_parent, None).map_err(|e| {
                    Error::Image(format!(
                        "layer {what}: hardlink '{shown}' points to '{target_display}': {}",
                        e.desc()
                    ))
                })?;
                linkat(
                    target_dir.as_fd(),
                    target_name.as_os_str(),
                    dir,
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(|e| {
                    Error::Image(format!(
                        "layer {what}: cannot hardlink '{shown}' to '{target_display}': {}",
                        e.desc()
                    ))
                })?;
                let st =
                    fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(ctx)?;
                st.st_ino
            }
            T::Fifo => {
                mknodat(dir, name.as_os_str(), SFlag::S_IFIFO, Mode::from_bits_truncate(0o600), 0)
                    .map_err(ctx)?;
                self.set_at_meta(dir, name, &meta, SFlag::S_IFIFO, None)
                    .map_err(ctx)?
            }
            T::Char | T::Block => {
                let sflag = if kind == T::Char { SFlag::S_IFCHR } else { SFlag::S_IFBLK };
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                // Never a real node on the host, even as root: an empty file stands in until
                // debugfs makes the node inside the image.
                let file = create_new_file(dir, name).map_err(ctx)?;
                self.set_file_meta(&file, &meta, sflag, Some((major, minor)))
                    .map_err(ctx)?
            }
            other => {
                tracing::debug!(layer = what, entry = %shown, kind = ?other, "skipping tar entry of unsupported type");
                return Ok(());
            }
        };
        layer.touched.insert(ino);
        Ok(())
    }

    /// Walks `components` from the root without ever leaving it: `..` stops at the root, absolute
    /// symlinks restart at the root, and the final directory is opened with `O_NOFOLLOW`. With
    /// `create`, missing directories are made (root-owned 0755) and recorded as touched by the layer.
    /// Returns the directory and its symlink-free path.
    fn resolve(
        &mut self,
        components: &[OsString],
        mut create: Option<&mut LayerState>,
    ) -> nix::Result<(OwnedFd, Vec<OsString>)> {
        let mut stack: Vec<(OwnedFd, OsString)> = Vec::new();
        let mut pending: VecDeque<OsString> = components.iter().cloned().collect();
        let mut links = 0;
        while let Some(component) = pending.pop_front() {
            match component.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    stack.pop();
                    continue;
                }
                _ => {}
            }
            let current = stack.last().map_or(self.root.as_fd(), |(fd, _)| fd.as_fd());
            match fstatat(current, component.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if is_type(&st, SFlag::S_IFDIR) => {
                    let fd = open_dir_at(current, &component, OFlag::O_PATH)?;
                    stack.push((fd, component));
                }
                Ok(st) if is_type(&st, SFlag::S_IFLNK) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::ELOOP);
                    }
                    let target = readlinkat(current, component.as_os_str())?;
                    let target = target.as_bytes();
                    if target.starts_with(b"/") {
                        stack.clear();
                    }
                    for part in target.split(|b| *b == b'/').rev() {
                        pending.push_front(OsString::from_vec(part.to_vec()));
                    }
                }
                Ok(_) => return Err(Errno::ENOTDIR),
                Err(Errno::ENOENT) if create.is_some() => {
                    mkdirat(
                        current,
                        component.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    )?;
                    let readable = open_dir_at(current, &component, OFlag::O_RDONLY)?;
                    let fd = open_dir_at(current, &component, OFlag::O_PATH)?;
                    let meta = Meta {
                        uid: 0,
                        gid: 0,
                        perm: 0o755,
                        mtime: 0,
                        xattrs: Vec::new(),
                    };
                    let ino = self.set_dir_meta(&readable, &meta)?;
                    if let Some(layer) = create.as_deref_mut() {
                        layer.touched.insert(ino);
                    }
                    stack.push((fd, component));
                }
                Err(e) => return Err(e),
            }
        }
        let names = stack.iter().map(|(_, name)| name.clone()).collect();
        let dir = match stack.pop() {
            Some((fd, _)) => fd,
            None => self
                .root
                .try_clone()
                .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?,
        };
        Ok((dir, names))
    }

    fn set_file_meta(
        &mut self,
        file: &File,
        meta: &Meta,
        kind: SFlag,
        device: Option<(u32, u32)>,
    ) -> nix::Result<u64> {
        // mke2fs must be able to read the file; debugfs restores the mode.
        self.set_owner_mode_xattrs(file, meta, 0o400)?;
        let t = TimeSpec::new(meta.mtime, 0);
        futimens(file, &t, &t)?;
        let st = fstat(file)?;
        self.record(&st, meta, kind, device);
        Ok(st.st_ino)
    }

    /// Owner, then mode, then xattrs, minus what only the image may hold (see the module doc).
    /// Without root the mode also keeps `unprivileged_bits` (the build's own access).
    fn set_owner_mode_xattrs<F: AsFd>(&mut self, fd: &F, meta: &Meta, unprivileged_bits: u32) -> nix::Result<()> {
        self.chown(fchown(fd, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid))));
        let perm = meta.perm & !PRIVILEGED_BITS;
        let perm = if self.euid == 0 { perm } else { perm | unprivileged_bits };
        fchmod(fd, Mode::from_bits_truncate(perm))?;
        set_xattrs(fd.as_fd(), meta.xattrs.iter().filter(|(name, _)| !is_privileged_xattr(name)));
        Ok(())
    }

    fn set_dir_meta(&mut self, dir: &OwnedFd, meta: &Meta) -> nix::Result<u64> {
        // Without root we must keep the right to add and remove children; debugfs restores the mode.
        self.set_owner_mode_xattrs(dir, meta, 0o700)?;
        let st = fstat(dir)?;
        self.record(&st, meta, SFlag::S_IFDIR, None);
        Ok(st.st_ino)
    }

    fn set_at_meta(
        &mut self,
        dir: BorrowedFd,
        name: &OsStr,
        meta: &Meta,
        kind: SFlag,
        device: Option<(u32, u32)>,
    ) -> nix::Result<u64> {
        self.chown(fchownat(
            dir,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ));
        if kind != SFlag::S_IFLNK {
            // A node we just made, not a symlink: following is moot, and NOFOLLOW is unsupported here.
            fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(meta.perm & !PRIVILEGED_BITS),
                FchmodatFlags::FollowSymlink,
            )?;
        }
        let t = TimeSpec::new(meta.mtime, 0);
        utimensat(dir, name, &t, &t, UtimensatFlags::NoFollowSymlink)?;
        let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        self.record(&st, meta, kind, device);
        Ok(st.st_ino)
    }

    /// A refused chown (not root, unmapped ids) is left to the fixups, which compare ids after.
    fn chown(&self, result: nix::Result<()>) {
        if let Err(e) = result {
            tracing::trace!(error = %e, "chown refused; recording a fixup");
        }
    }

    /// Remembers what the inode should look like if the staging tree could not express it.
    fn record(&mut self, st: &FileStat, meta: &Meta, kind: SFlag, device: Option<(u32, u32)>) {
        let xattrs = meta
            .xattrs
            .iter()
            .filter(|(name, _)| is_privileged_xattr(name))
            .map(|(name, value)| (name.to_string_lossy().into_owned(), value.clone()))
            .collect();
        let want = Fixup {
            uid: meta.uid,
            gid: meta.gid,
            mode: kind.bits() | meta.perm,
            device,
            xattrs,
        };
        let have_mode = if kind == SFlag::S_IFLNK {
            want.mode
        } else {
            st.st_mode
        };
        if device.is_some()
            || !want.xattrs.is_empty()
            || st.st_uid != want.uid
            || st.st_gid != want.gid
            || have_mode != want.mode
        {
            self.fixups.insert(st.st_ino, want);
        } else {
            // The inode may be a reused number of a deleted one that had a fixup.
            self.fixups.remove(&st.st_ino);
        }
    }

    /// Whether the tree holds nothing at all (every entry whited out, or no layers).
    pub fn is_empty(&self) -> Result<bool> {
        list_dir(self.root.as_fd())
            .map(|names| names.is_empty())
            .map_err(|e| fs_error(e, "list", OsStr::new("/")))
    }

    /// Makes the image path `path` a directory (root-owned 0755), resolving symlinks inside the
    /// root, as Docker does for a WorkingDir the image lacks. Returns whether anything was made.
    pub fn ensure_dir(&mut self, path: &str, what: &str) -> Result<bool> {
        let components = clean_path(path.as_bytes())
            .ok_or_else(|| Error::Image(format!("{what}: path '{path}' points outside the root")))?;
        if self.resolve(&components, None).is_ok() {
            return Ok(false);
        }
        self.resolve(&components, Some(&mut LayerState::default()))
            .map(|_| true)
            .map_err(|e| Error::Image(format!("{what}: cannot make directory '{path}': {}", e.desc())))
    }

    /// Walks the finished tree: totals, plus the fixups that still apply, by path.
    pub fn finish(&self) -> Result<(TreeStats, Vec<(String, Fixup)>)> {
        let mut stats = TreeStats::default();
        let mut seen = HashSet::new();
        let mut fixups = Vec::new();
        let mut stack = vec![(self.path.clone(), String::from("/"))];
        while let Some((path, image_path)) = stack.pop() {
            let md = std::fs::symlink_metadata(&path)
                .map_err(|e| Error::storage("cannot stat", &path, e))?;
            use std::os::unix::fs::MetadataExt;
            if seen.insert(md.ino()) {
                stats.inodes += 1;
                stats.allocated_bytes += md.blocks() * 512;
                if md.is_file() {
                    stats.content_bytes += md.size();
                }
                if let Some(fixup) = self.fixups.get(&md.ino()) {
                    fixups.push((image_path.clone(), fixup.clone()));
                }
            }
            // symlink_metadata does not follow, so a symlink is never descended into.
            if md.is_dir() {
                let entries = std::fs::read_dir(&path)
                    .map_err(|e| Error::storage("cannot list", &path, e))?;
                for entry in entries {
                    let entry = entry.map_err(|e| Error::storage("cannot list", &path, e))?;
                    let name = entry.file_name();
                    let child = if image_path == "/" {
                        format!("/{}", name.to_string_lossy())
                    } else {
                        format!("{image_path}/{}", name.to_string_lossy())
                    };
                    stack.push((entry.path(), child));
                }
            }
        }
        fixups.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((stats, fixups))
    }
}

/// Opens a layer blob, undoing gzip or zstd compression as its first bytes show.
pub(crate) fn open_layer(path: &Path) -> Result<Box<dyn Read + Send>> {
    let file = File::open(path).map_err(|e| Error::storage("cannot open layer", path, e))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let head = reader
        .fill_buf()
        .map_err(|e| Error::storage("cannot read layer", path, e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = zstd::stream::read::Decoder::with_buffer(reader)
            .map_err(|e| Error::storage("cannot start zstd decoder for", path, e))?;
        Ok(Box::new(decoder))
    } else {
        Ok(Box::new(reader))
    }
}

/// A reader that hashes what passes through, to check a layer against its config `diff_id`.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Reads to the end (tar streams may have padding after the last entry) and returns the digest.
    pub fn finish(mut self) -> std::io::Result<String> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(format!("sha256:{}", hex::encode(self.hasher.finalize())))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Cleans a tar path lexically: leading `/` and `.` components go, `..` pops. `None` if `..` would
/// climb above the root.
fn clean_path(raw: &[u8]) -> Option<Vec<OsString>> {
    let mut out: Vec<OsString> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            name => out.push(OsString::from_vec(name.to_vec())),
        }
    }
    Some(out)
}

fn link_is_self<R: Read>(entry: &tar::Entry<R>, components: &[OsString]) -> bool {
    entry
        .link_name_bytes()
        .and_then(|t| clean_path(&t))
        .is_some_and(|t| t == components)
}

fn read_meta<R: Read>(entry: &mut tar::Entry<R>) -> std::io::Result<Meta> {
    let header = entry.header();
    let mut meta = Meta {
        uid: header.uid().unwrap_or(0) as u32,
        gid: header.gid().unwrap_or(0) as u32,
        perm: header.mode().unwrap_or(0o644) & 0o7777,
        mtime: header.mtime().unwrap_or(0) as i64,
        xattrs: Vec::new(),
    };
    if let Some(extensions) = entry.pax_extensions()? {
        for ext in extensions {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value().ok();
            match key {
                "uid" => meta.uid = value.and_then(|v| v.parse().ok()).unwrap_or(meta.uid),
                "gid" => meta.gid = value.and_then(|v| v.parse().ok()).unwrap_or(meta.gid),
                "mtime" => {
                    let secs = value
                        .and_then(|v| v.split('.').next())
                        .and_then(|v| v.parse().ok());
                    meta.mtime = secs.unwrap_or(meta.mtime);
                }
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        if let Ok(name) = CString::new(name) {
                            meta.xattrs.push((name, ext.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }
    }
    Ok(meta)
}

/// Copies `reader` into the new, empty `file`, seeking over blocks of zeros so they stay holes:
/// a layer of zeros (a decompression bomb, a GNU sparse entry) costs no disk. Returns the size.
fn write_sparse(reader: &mut impl Read, file: &File, buf: &mut [u8]) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut offset = 0u64;
    loop {
        // A full buffer each round keeps blocks aligned to the file offset.
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let data = &buf[..filled];
        let mut run: Option<usize> = None;
        for (i, block) in data.chunks(SPARSE_BLOCK).enumerate() {
            let at = i * SPARSE_BLOCK;
            // Slice equality is a memcmp.
            match (block == &ZERO_BLOCK[..block.len()], run) {
                (false, None) => run = Some(at),
                (true, Some(start)) => {
                    file.write_all_at(&data[start..at], offset + start as u64)?;
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run {
            file.write_all_at(&data[start..], offset + start as u64)?;
        }
        offset += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    // Trailing zeros were skipped: the size still counts them.
    file.set_len(offset)?;
    Ok(offset)
}

/// Creates `name` in `dir` for writing; never follows or replaces what is there.
fn create_new_file(dir: BorrowedFd, name: &OsStr) -> nix::Result<File> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(dir, name, flags, Mode::from_bits_truncate(0o600)).map(File::from)
}

fn is_privileged_xattr(name: &CString) -> bool {
    name.as_bytes().starts_with(PRIVILEGED_XATTR_PREFIX.as_bytes())
}

fn set_xattrs<'a>(fd: BorrowedFd, xattrs: impl Iterator<Item = &'a (CString, Vec<u8>)>) {
    for (name, value) in xattrs {
        // SAFETY: fd is open for the call, name is NUL-terminated, value/len describe a live buffer.
        let rc = unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            tracing::warn!(xattr = ?name, error = %std::io::Error::last_os_error(), "cannot set xattr from layer; skipping it");
        }
    }
}

fn is_type(st: &FileStat, kind: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

/// Opens a directory entry of `dir` that must be a real directory (never a symlink).
fn open_dir_at(dir: BorrowedFd, name: &OsStr, extra: OFlag) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        extra | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// A readable fd for a directory we hold an `O_PATH` fd of.
fn reopen_dir(dir: &OwnedFd) -> nix::Result<OwnedFd> {
    open_dir_at(dir.as_fd(), OsStr::new("."), OFlag::O_RDONLY)
}

fn list_dir(dir: BorrowedFd) -> nix::Result<Vec<OsString>> {
    let fd = open_dir_at(dir, OsStr::new("."), OFlag::O_RDONLY)?;
    let mut names = Vec::new();
    for entry in nix::dir::Dir::from_fd(fd)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    Ok(names)
}

/// Deletes `name` in `dir`, recursively for directories, never following symlinks.
fn remove_all_at(dir: BorrowedFd, name: &OsStr) -> nix::Result<()> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if is_type(&st, SFlag::S_IFDIR) {
        let child = open_dir_at(dir, name, OFlag::O_RDONLY)?;
        for entry in list_dir(child.as_fd())? {
            remove_all_at(child.as_fd(), &entry)?;
        }
        unlinkat(dir, name, UnlinkatFlags::RemoveDir)
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
    }
}

/// Opaque whiteout: removes everything under `dir` that the current layer did not put there.
fn clear_lower(dir: BorrowedFd, touched: &HashSet<u64>) -> nix::Result<()> {
    for name in list_dir(dir)? {
        let st = fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        if !touched.contains(&st.st_ino) {
            remove_all_at(dir, &name)?;
        } else if is_type(&st, SFlag::S_IFDIR) {
            let child = open_dir_at(dir, &name, OFlag::O_RDONLY)?;
            clear_lower(child.as_fd(), touched)?;
        }
    }
    Ok(())
}

/// Out of space, read-only or broken disk: our problem, not the image's.
fn is_local_failure(e: Errno) -> bool {
    matches!(
        e,
        Errno::ENOSPC | Errno::EDQUOT | Errno::EIO | Errno::EROFS | Errno::EMFILE | Errno::ENFILE
    )
}

fn layer_error(e: Errno, what: &str, entry: &str) -> Error {
    if is_local_failure(e) {
        Error::storage(
            &format!("cannot unpack '{entry}' of layer {what} into"),
            "the staging directory",
            e.into(),
        )
    } else {
        Error::Image(format!(
            "layer {what}: cannot apply '{entry}': {}",
            e.desc()
        ))
    }
}

fn fs_error(e: Errno, op: &str, path: &OsStr) -> Error {
    Error::storage(
        &format!("cannot {op} staging entry"),
        PathBuf::from(path),
        e.into(),
    )
}

fn corrupt(what: &str, e: std::io::Error) -> Error {
    Error::Image(format!("layer {what} is not a valid tar stream: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// Builds a layer from raw entries; names go into the header verbatim (tar::Builder refuses
    /// `..`, which is exactly what hostile layers contain).
    struct Layer(tar::Builder<Vec<u8>>);

    impl Layer {
        fn new() -> Self {
            Layer(tar::Builder::new(Vec::new()))
        }

        fn raw(
            mut self,
            name: &str,
            kind: tar::EntryType,
            mode: u32,
            data: &[u8],
            link: &str,
        ) -> Self {
            let mut h = tar::Header::new_gnu();
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(data.len() as u64);
            h.set_mtime(1_600_000_000);
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }

        fn file(self, name: &str, data: &str) -> Self {
            self.raw(name, tar::EntryType::Regular, 0o644, data.as_bytes(), "")
        }

        fn dir(self, name: &str) -> Self {
            self.raw(name, tar::EntryType::Directory, 0o755, b"", "")
        }

        fn symlink(self, name: &str, target: &str) -> Self {
            self.raw(name, tar::EntryType::Symlink, 0o777, b"", target)
        }

        fn hardlink(self, name: &str, target: &str) -> Self {
            self.raw(name, tar::EntryType::Link, 0o644, b"", target)
        }

        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    /// A staging root inside a scratch dir, so that escapes would land in `outside()`.
    struct Fixture {
        dir: tempfile::TempDir,
        fs: Rootfs,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("root")).unwrap();
            let fs = Rootfs::new(&dir.path().join("root")).unwrap();
            Fixture { dir, fs }
        }

        fn apply(&mut self, layer: Layer) -> Result<()> {
            self.fs.apply_layer(&layer.bytes()[..], "test")
        }

        fn root(&self) -> PathBuf {
            self.dir.path().join("root")
        }

        fn outside(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }

    #[test]
    fn applies_files_dirs_links_and_metadata() {
        let mut f = Fixture::new();
        let layer = Layer::new()
            .dir("usr/")
            .raw("usr/bin/su", tar::EntryType::Regular, 0o4755, b"su", "")
            .symlink("usr/bin/sh", "busybox")
            .hardlink("usr/bin/su2", "usr/bin/su")
            .raw("tmp/", tar::EntryType::Directory, 0o1777, b"", "");
        f.apply(layer).unwrap();
        let root = f.root();
        let su = std::fs::symlink_metadata(root.join("usr/bin/su")).unwrap();
        // setuid only inside the image (a fixup), never on the staging tree.
        assert_eq!(su.mode() & 0o7777, 0o755);
        assert_eq!(su.mtime(), 1_600_000_000);
        assert_eq!(su.nlink(), 2);
        assert_eq!(
            std::fs::symlink_metadata(root.join("usr/bin/su2"))
                .unwrap()
                .ino(),
            su.ino()
        );
        assert_eq!(
            std::fs::read_link(root.join("usr/bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            std::fs::metadata(root.join("tmp"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o1777
        );
        // usr/bin had no entry of its own: created root-owned 0755.
        assert_eq!(
            std::fs::metadata(root.join("usr/bin")).unwrap().mode() & 0o7777,
            0o755
        );
        let (stats, fixups) = f.fs.finish().unwrap();
        assert_eq!(stats.content_bytes, 2);
        let su = fixups.iter().find(|(p, _)| p == "/usr/bin/su" || p == "/usr/bin/su2").unwrap();
        assert_eq!(su.1.mode, 0o104755);
    }

    /// Walks `root` and lists every entry that carries what only the image may hold: setuid/setgid
    /// bits, a device node, or a `security.*` xattr.
    pub(crate) fn privileged_entries(root: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(path) = stack.pop() {
            let Ok(md) = std::fs::symlink_metadata(&path) else { continue };
            let ft = md.file_type();
            use std::os::unix::fs::FileTypeExt;
            if md.mode() & PRIVILEGED_BITS != 0 || ft.is_block_device() || ft.is_char_device() {
                found.push(format!("{} mode {:o}", path.display(), md.mode()));
            }
            if !ft.is_symlink() {
                let c = CString::new(path.as_os_str().as_bytes()).unwrap();
                let mut names = vec![0u8; 4096];
                // SAFETY: c is NUL-terminated, names/len describe a live buffer.
                let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
                if n > 0 {
                    for name in names[..n as usize].split(|b| *b == 0).filter(|n| !n.is_empty()) {
                        if name.starts_with(PRIVILEGED_XATTR_PREFIX.as_bytes()) {
                            found.push(format!("{} xattr {}", path.display(), String::from_utf8_lossy(name)));
                        }
                    }
                }
            }
            if ft.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            }
        }
        found
    }

    /// A layer with what an image may hold but the host must never see: a setuid-root binary, a
    /// setgid directory, a file capability and a block device (the host's own disk numbers).
    pub(crate) fn privileged_image_layer() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let add = |b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, mode: u32, data: &[u8], dev: Option<(u32, u32)>| {
            let mut h = tar::Header::new_gnu();
            h.set_path(path).unwrap();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(if kind.is_dir() { 50 } else { 0 });
            h.set_size(data.len() as u64);
            if let Some((major, minor)) = dev {
                h.set_device_major(major).unwrap();
                h.set_device_minor(minor).unwrap();
            }
            h.set_cksum();
            b.append(&h, data).unwrap();
        };
        add(&mut b, "usr/bin/", tar::EntryType::Directory, 0o755, b"", None);
        add(&mut b, "usr/bin/id", tar::EntryType::Regular, 0o4755, b"#!/bin/sh\n", None);
        add(&mut b, "var/mail/", tar::EntryType::Directory, 0o2775, b"", None);
        add(&mut b, "dev/vda", tar::EntryType::Block, 0o666, b"", Some((252, 0)));
        add(&mut b, "dev/null", tar::EntryType::Char, 0o666, b"", Some((1, 3)));
        b.append_pax_extensions([(
            "SCHILY.xattr.security.capability",
            &crate::image::ext4::tests::CAP_NET_RAW[..],
        )])
        .unwrap();
        add(&mut b, "usr/bin/ping", tar::EntryType::Regular, 0o755, b"ping", None);
        b.into_inner().unwrap()
    }

    #[test]
    fn privileged_metadata_never_reaches_the_staging_tree() {
        let mut f = Fixture::new();
        f.fs.apply_layer(&privileged_image_layer()[..], "t").unwrap();
        assert_eq!(privileged_entries(&f.root()), Vec::<String>::new());
        if nix::unistd::geteuid().is_root() {
            // Ownership is harmless and still applied directly as root.
            assert_eq!(std::fs::metadata(f.root().join("var/mail")).unwrap().gid(), 50);
        }
        let (stats, fixups) = f.fs.finish().unwrap();
        let fixup = |p: &str| fixups.iter().find(|(path, _)| path == p).map(|(_, f)| f.clone()).unwrap();
        assert_eq!(fixup("/usr/bin/id").mode, 0o104755);
        assert_eq!(fixup("/var/mail").mode, 0o042775);
        assert_eq!(fixup("/dev/vda").device, Some((252, 0)));
        assert_eq!(
            fixup("/usr/bin/ping").xattrs,
            [("security.capability".to_string(), crate::image::ext4::tests::CAP_NET_RAW.to_vec())]
        );

        let disk = f.dir.path().join("disk.ext4");
        crate::image::ext4::build(&f.root(), &disk, crate::image::ext4::disk_size(&stats), &fixups).unwrap();
        let stat = |p: &str| crate::image::ext4::tests::debugfs(&disk, &format!("stat {p}"));
        let id = stat("/usr/bin/id");
        assert!(id.contains("Mode:  04755") && id.contains("User:     0"), "{id}");
        assert!(stat("/var/mail").contains("Mode:  02775"));
        let vda = stat("/dev/vda");
        assert!(vda.contains("Type: block special") && vda.contains("Mode:  0666") && vda.contains("fc:00"), "{vda}");
        assert!(stat("/dev/null").contains("Type: character special"));
        let ping = stat("/usr/bin/ping");
        assert!(ping.contains("security.capability (20) = 01 00 00 02 00 20"), "{ping}");
        crate::image::ext4::tests::assert_fsck_clean(&disk);
    }

    /// The layer `unprivileged_helper` applies: ownership, modes and a device a non-root user
    /// cannot put on the staging tree.
    fn privileged_layer() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add =
            |path: &str, kind: tar::EntryType, mode: u32, uid: u64, dev: Option<(u32, u32)>| {
                let mut h = tar::Header::new_gnu();
                h.set_path(path).unwrap();
                h.set_entry_type(kind);
                h.set_mode(mode);
                h.set_uid(uid);
                h.set_gid(uid + 1);
                h.set_size(0);
                if let Some((major, minor)) = dev {
                    h.set_device_major(major).unwrap();
                    h.set_device_minor(minor).unwrap();
                }
                h.set_cksum();
                b.append(&h, &b""[..]).unwrap();
            };
        add("ro/", tar::EntryType::Directory, 0o555, 0, None);
        add("ro/inner", tar::EntryType::Regular, 0o644, 0, None);
        add("owned", tar::EntryType::Regular, 0o4750, 1234, None);
        add("unreadable", tar::EntryType::Regular, 0o000, 0, None);
        add("dev/null", tar::EntryType::Char, 0o666, 0, Some((1, 3)));
        add("dev/fifo", tar::EntryType::Fifo, 0o600, 0, None);
        b.into_inner().unwrap()
    }

    #[test]
    #[ignore = "helper: unprivileged_build_applies_fixups runs it as an unprivileged user"]
    fn unprivileged_helper() {
        let Some(dir) = std::env::var_os("BOXLITE_UNPRIVILEGED_DIR").map(PathBuf::from) else {
            return;
        };
        assert!(!nix::unistd::geteuid().is_root());
        std::fs::create_dir(dir.join("root")).unwrap();
        let mut fs = Rootfs::new(&dir.join("root")).unwrap();
        fs.apply_layer(&privileged_layer()[..], "t").unwrap();
        // A later layer must still be able to write into a 0555 directory and delete from it.
        fs.apply_layer(
            &Layer::new()
                .file("ro/later", "x")
                .file("ro/.wh.inner", "")
                .bytes()[..],
            "t2",
        )
        .unwrap();
        let (stats, fixups) = fs.finish().unwrap();
        assert!(!fixups.is_empty());
        crate::image::ext4::build(
            &dir.join("root"),
            &dir.join("disk.ext4"),
            crate::image::ext4::disk_size(&stats),
            &fixups,
        )
        .unwrap();
    }

    #[test]
    fn unprivileged_build_applies_fixups() {
        use std::os::unix::process::CommandExt;
        if !nix::unistd::geteuid().is_root() {
            return; // switching to another user needs root
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let exe = dir.path().join("tests");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "image::layers::tests::unprivileged_helper",
                "--ignored",
                "--nocapture",
            ])
            .env("BOXLITE_UNPRIVILEGED_DIR", dir.path())
            .current_dir(dir.path())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(
            child.status.success(),
            "{}{}",
            String::from_utf8_lossy(&child.stdout),
            String::from_utf8_lossy(&child.stderr)
        );
        let disk = dir.path().join("disk.ext4");
        let stat = |p: &str| {
            let out = std::process::Command::new("debugfs")
                .args(["-R", &format!("stat {p}")])
                .arg(&disk)
                .output()
                .unwrap();
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        let owned = stat("/owned");
        assert!(
            owned.contains("Mode:  04750")
                && owned.contains("User:  1234")
                && owned.contains("Group:  1235"),
            "{owned}"
        );
        assert!(stat("/unreadable").contains("Mode:  0000"));
        let ro = stat("/ro");
        assert!(
            ro.contains("Mode:  0555") && ro.contains("User:     0"),
            "{ro}"
        );
        assert!(stat("/ro/inner").contains("not found"));
        let null = stat("/dev/null");
        assert!(
            null.contains("character special")
                && null.contains("Mode:  0666")
                && null.contains("01:03"),
            "{null}"
        );
        assert!(stat("/dev/fifo").contains("Type: FIFO"));
        assert!(stat("/dev").contains("User:     0"));
        assert!(stat("/").contains("User:     0"));
        crate::image::ext4::tests::assert_fsck_clean(&disk);
    }

    /// A GNU sparse entry of `real_size` bytes whose only data is 512 bytes of 'x' at the end.
    fn gnu_sparse_layer(name: &str, real_size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_mode(0o644);
        h.set_size(512);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.set_real_size(real_size);
        gnu.sparse[0].set_offset(real_size - 512);
        gnu.sparse[0].set_length(512);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &[b'x'; 512][..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn runs_of_zeros_are_written_as_holes() {
        let mut f = Fixture::new();
        let mut mixed = vec![b'a'; 4096];
        mixed.extend(vec![0u8; 1 << 20]);
        mixed.extend(b"0123456789");
        mixed.extend(vec![0u8; 3 * 4096 + 17]);
        let zeros = vec![0u8; 64 << 20];
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [("zeros", &zeros), ("mixed", &mixed)] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        f.fs.apply_layer(&b.into_inner().unwrap()[..], "t").unwrap();
        let md = std::fs::metadata(f.root().join("zeros")).unwrap();
        assert_eq!(md.len(), 64 << 20);
        assert!(md.blocks() * 512 <= 64 << 10, "{} bytes allocated for 64 MiB of zeros", md.blocks() * 512);
        let md = std::fs::metadata(f.root().join("mixed")).unwrap();
        assert!(md.blocks() * 512 <= 64 << 10, "{} bytes allocated", md.blocks() * 512);
        assert_eq!(std::fs::read(f.root().join("mixed")).unwrap(), mixed);
        let (stats, _) = f.fs.finish().unwrap();
        assert_eq!(stats.content_bytes, (64 << 20) + mixed.len() as u64);
    }

    #[test]
    fn gnu_sparse_entries_stay_sparse_and_count_at_their_real_size() {
        let mut f = Fixture::new();
        let layer = gnu_sparse_layer("sparse", 256 << 20);
        assert!(layer.len() < 10 << 10);
        f.fs.apply_layer(&layer[..], "t").unwrap();
        let md = std::fs::metadata(f.root().join("sparse")).unwrap();
        assert_eq!(md.len(), 256 << 20);
        assert!(md.blocks() * 512 <= 64 << 10, "{} bytes allocated", md.blocks() * 512);

        let mut f = Fixture::new();
        f.fs.set_limit(UnpackLimit { bytes: 1 << 30, reason: "the test's limit".into() });
        let started = std::time::Instant::now();
        let err = f.fs.apply_layer(&gnu_sparse_layer("bomb", 3 << 30)[..], "sha256:abc").unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let msg = err.to_string();
        assert!(
            matches!(err, Error::Image(_)) && msg.contains("layer sha256:abc") && msg.contains("more than 1073741824 bytes") && msg.contains("the test's limit"),
            "{msg}"
        );
        assert!(!f.root().join("bomb").exists());
    }

    #[test]
    fn the_limit_counts_every_layer() {
        let mut f = Fixture::new();
        f.fs.set_limit(UnpackLimit { bytes: 10, reason: "ten bytes".into() });
        f.apply(Layer::new().file("a", "123456")).unwrap();
        let err = f.apply(Layer::new().file("b", "123456")).unwrap_err();
        assert!(err.to_string().contains("ten bytes"), "{err}");
    }

    #[test]
    fn whiteout_removes_lower_entries() {
        let mut f = Fixture::new();
        f.apply(
            Layer::new()
                .file("a/x", "1")
                .file("a/y", "2")
                .file("a/d/z", "3"),
        )
        .unwrap();
        f.apply(Layer::new().file("a/.wh.x", "").file("a/.wh.d", ""))
            .unwrap();
        let root = f.root();
        assert!(!root.join("a/x").exists());
        assert!(!root.join("a/d").exists());
        assert!(!root.join("a/.wh.x").exists());
        assert_eq!(std::fs::read_to_string(root.join("a/y")).unwrap(), "2");
    }

    #[test]
    fn opaque_dir_keeps_only_this_layers_entries() {
        let mut f = Fixture::new();
        f.apply(
            Layer::new()
                .file("d/old", "1")
                .file("d/sub/old2", "2")
                .file("keep", "k"),
        )
        .unwrap();
        // One entry before the marker and some after: both belong to the new layer.
        f.apply(
            Layer::new()
                .file("d/early", "e")
                .dir("d/")
                .file("d/.wh..wh..opq", "")
                .dir("d/sub/")
                .file("d/sub/new", "n"),
        )
        .unwrap();
        let root = f.root();
        let mut names: Vec<String> = std::fs::read_dir(root.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["early", "sub"]);
        assert!(!root.join("d/sub/old2").exists());
        assert!(root.join("d/sub/new").exists());
        assert!(root.join("keep").exists());
    }

    #[test]
    fn dotdot_entries_are_refused() {
        let mut f = Fixture::new();
        let err = f.apply(Layer::new().file("../escape", "x")).unwrap_err();
        assert!(
            matches!(err, Error::Image(ref m) if m.contains("outside the root")),
            "{err}"
        );
        let err = f
            .apply(Layer::new().file("a/../../escape", "x"))
            .unwrap_err();
        assert!(matches!(err, Error::Image(_)));
        assert_eq!(f.outside(), ["root"]);
        // `..` that stays inside is just cleaned.
        f.apply(Layer::new().file("a/../b", "x")).unwrap();
        assert!(f.root().join("b").is_file());
    }

    #[test]
    fn absolute_paths_land_in_the_root() {
        let mut f = Fixture::new();
        f.apply(Layer::new().file("/abs/file", "x")).unwrap();
        assert!(f.root().join("abs/file").is_file());
    }

    #[test]
    fn writes_through_symlinks_stay_inside() {
        let mut f = Fixture::new();
        let host = f.dir.path().to_str().unwrap().to_string();
        f.apply(
            Layer::new()
                .symlink("up", "../../../../../..")
                .symlink("host", &host)
                .file("up/escaped", "x")
                .file("host/escaped2", "x"),
        )
        .unwrap();
        let root = f.root();
        assert_eq!(f.outside(), ["root"]);
        assert!(root.join("escaped").is_file());
        assert!(root
            .join(host.trim_start_matches('/'))
            .join("escaped2")
            .is_file());
    }

    #[test]
    fn symlink_to_host_etc_resolves_inside() {
        let mut f = Fixture::new();
        let name = format!("boxlite-test-{}", std::process::id());
        f.apply(
            Layer::new()
                .dir("realetc/")
                .symlink("myetc", "/etc")
                .file(&format!("myetc/{name}"), "x"),
        )
        .unwrap();
        assert!(!Path::new("/etc").join(&name).exists());
        assert!(
            f.root().join("etc").join(&name).is_file(),
            "created /etc inside the root"
        );
        assert_eq!(f.outside(), ["root"]);
    }

    #[test]
    fn symlink_loops_fail_cleanly() {
        let mut f = Fixture::new();
        let err = f
            .apply(
                Layer::new()
                    .symlink("a", "b")
                    .symlink("b", "a")
                    .file("a/x", "1"),
            )
            .unwrap_err();
        assert!(
            matches!(err, Error::Image(ref m) if m.contains("a/x")),
            "{err}"
        );
    }

    #[test]
    fn hardlinks_cannot_escape() {
        let mut f = Fixture::new();
        let err = f
            .apply(Layer::new().hardlink("h", "../../etc/passwd"))
            .unwrap_err();
        assert!(
            matches!(err, Error::Image(ref m) if m.contains("outside the root")),
            "{err}"
        );
        // Through a symlink to the host's /etc: resolves to the root's /etc, which has no passwd.
        let err = f
            .apply(
                Layer::new()
                    .symlink("hostetc", "/etc")
                    .hardlink("h2", "hostetc/passwd"),
            )
            .unwrap_err();
        assert!(matches!(err, Error::Image(_)), "{err}");
        assert!(!f.root().join("h2").exists());
        // Once the root has its own /etc/passwd, the same link points at that.
        f.apply(
            Layer::new()
                .file("etc/passwd", "root:x:0:0::/:/bin/sh\n")
                .hardlink("h3", "hostetc/passwd"),
        )
        .unwrap();
        let a = std::fs::metadata(f.root().join("etc/passwd"))
            .unwrap()
            .ino();
        assert_eq!(std::fs::metadata(f.root().join("h3")).unwrap().ino(), a);
        assert_ne!(std::fs::metadata("/etc/passwd").unwrap().ino(), a);
    }

    #[test]
    fn whiteouts_through_symlinks_stay_inside() {
        let mut f = Fixture::new();
        let victims = tempfile::tempdir().unwrap();
        std::fs::write(victims.path().join("victim"), "v").unwrap();
        let target = victims.path().to_str().unwrap();
        f.apply(Layer::new().symlink("v", target)).unwrap();
        f.apply(Layer::new().file("v/.wh.victim", "")).unwrap();
        f.apply(Layer::new().dir("v/").file("v/.wh..wh..opq", ""))
            .unwrap();
        assert!(victims.path().join("victim").exists());
    }

    #[test]
    fn merged_usr_symlinks_resolve_within_root() {
        let mut f = Fixture::new();
        f.apply(
            Layer::new()
                .dir("usr/")
                .dir("usr/lib/")
                .symlink("lib", "usr/lib")
                .symlink("lib64", "/usr/lib"),
        )
        .unwrap();
        f.apply(
            Layer::new()
                .file("lib/libc.so", "c")
                .file("lib64/ld.so", "l")
                .file("lib/x/y.so", "y"),
        )
        .unwrap();
        let root = f.root();
        assert!(std::fs::symlink_metadata(root.join("lib"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read_to_string(root.join("usr/lib/libc.so")).unwrap(),
            "c"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("usr/lib/ld.so")).unwrap(),
            "l"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("usr/lib/x/y.so")).unwrap(),
            "y"
        );
    }

    #[test]
    fn entries_replace_other_kinds() {
        let mut f = Fixture::new();
        f.apply(
            Layer::new()
                .file("a", "file")
                .file("b/inner", "x")
                .symlink("c", "/nowhere"),
        )
        .unwrap();
        f.apply(Layer::new().dir("a/").file("b", "now a file").dir("c/"))
            .unwrap();
        let root = f.root();
        assert!(root.join("a").is_dir());
        assert_eq!(
            std::fs::read_to_string(root.join("b")).unwrap(),
            "now a file"
        );
        assert!(std::fs::symlink_metadata(root.join("c")).unwrap().is_dir());
    }

    #[test]
    fn diff_id_hashing_reads_to_the_end() {
        let bytes = Layer::new().file("a", "1").bytes();
        let mut reader = HashingReader::new(&bytes[..]);
        Rootfs::new(Fixture::new().root().as_path())
            .unwrap()
            .apply_layer(&mut reader, "t")
            .unwrap();
        assert_eq!(
            reader.finish().unwrap(),
            crate::image::blobs::sha256_digest(&bytes)
        );
    }

    #[test]
    fn compressed_layers_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let tar = Layer::new().file("a", "1").bytes();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, &tar).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        for (name, bytes) in [("plain", &tar), ("gz", &gz), ("zst", &zst)] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let mut out = Vec::new();
            open_layer(&path).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, tar, "{name}");
        }
    }
}
