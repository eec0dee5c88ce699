//! Files in and out of a running box: copies of host files and trees (`boxlite_box_copy_in`,
//! `boxlite_box_copy_out`), and the box's files API: whole-file and streamed reads and writes,
//! list, stat, exists, mkdir, remove, rename, and watch.
//!
//! Streams are handles: a `boxlite_file_reader` hands out a file's bytes into the caller's
//! buffer, a `boxlite_file_writer` takes them, a `boxlite_watch` hands out events as JSON. The
//! watch is pumped by a background task into a bounded queue, so an event loop can wait on its
//! notify fd as on an exec's.

use crate::args::{free_handle, handle, options, out_param, string, timeout};
use crate::boxes::{boxlite_box, json_string};
use crate::cancel::{self, boxlite_canceller};
use crate::error::{boundary, boxlite_result, Failure};
use crate::exec::Notifier;
use crate::runtime::{lock, Context};
use serde::{Deserialize, Serialize};
use std::ffi::{c_char, c_int};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Events a watch holds for its caller before it stops taking more from the box (the box's
/// own queue then fills; past it, the box ends the watch with an error saying events were lost).
const WATCH_QUEUE: usize = 4096;

/// `options_json` of the copies.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct CopyConfig {
    overwrite: bool,
}

/// `options_json` of the writes.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct WriteConfig {
    mode: Option<u32>,
}

/// `options_json` of `boxlite_box_mkdir`.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct MkdirConfig {
    parents: bool,
}

/// `options_json` of `boxlite_box_remove_file` and `boxlite_box_watch`.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RecursiveConfig {
    recursive: bool,
}

fn null(name: &str) -> Failure {
    Failure::new(boxlite_result::BOXLITE_ERR_NULL_POINTER, format!("argument `{name}` is NULL"))
}

/// Copies a host file or directory into the running box.
///
/// `b`: the box (running: a stopped box is `BOXLITE_ERR_INVALID_STATE`; files go through its
/// guest agent). `host_path`: a file or directory on the host (relative paths from the current
/// directory). `guest_path`: an absolute path in the box. As `docker cp`: when `guest_path` is an
/// existing directory the source lands inside it under its own name, otherwise `guest_path` is
/// its new name (its parent must exist). Permission bits, mtimes (to the second) and symlinks
/// (as symlinks) are kept; files are owned by root; fifos, sockets and devices are skipped. It
/// streams (about a megabyte of host memory for any size) and lands whole or not at all: a
/// failed or aborted copy leaves nothing in the box.
/// `options_json`: NULL for the defaults, or `{"overwrite": true}` to replace an existing target
/// whole (without it an existing target is `BOXLITE_ERR_ALREADY_EXISTS`, naming it).
/// `canceller`: NULL, or a canceller whose cancel from another thread aborts the copy
/// (`BOXLITE_ERR_ABORTED`).
///
/// Errors: `BOXLITE_ERR_NOT_FOUND` (the host path does not exist, or the guest path's parent does
/// not), `BOXLITE_ERR_INVALID_ARGUMENT` (a relative guest path, a bad option),
/// `BOXLITE_ERR_ALREADY_EXISTS`, `BOXLITE_ERR_INVALID_STATE` (the box is not running),
/// `BOXLITE_ERR_STORAGE` (the box's disk is full, or the host source cannot be read),
/// `BOXLITE_ERR_ABORTED`. Blocks for the copy. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; strings are NULL or NUL-terminated; `canceller` is NULL or a
/// live canceller.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_copy_in(
    b: *mut boxlite_box,
    host_path: *const c_char,
    guest_path: *const c_char,
    options_json: *const c_char,
    canceller: *const boxlite_canceller,
) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let host = unsafe { string(host_path, "host_path")? }.to_string();
        let guest = unsafe { string(guest_path, "guest_path")? }.to_string();
        let config: CopyConfig = unsafe { options(options_json, "options_json")? };
        let token = unsafe { cancel::token(canceller) };
        let lite = b.lite.clone();
        let what = format!("copying {host} into {guest}");
        b.ctx.run_cancellable(token, &what, async move {
            lite.copy_in(&host, &guest, boxlite::CopyOptions { overwrite: config.overwrite }).await
        })
    })
}

/// Copies a file or directory of the running box to the host.
///
/// `guest_path`: an absolute path in the box (a final symlink is copied as a symlink).
/// `host_path`: where it lands, with `boxlite_box_copy_in`'s rules: into an existing directory
/// under its own name, else as `host_path` (whose parent must exist). Nothing the box sends is
/// trusted: entries land only beneath the destination, symlinks are created but never followed,
/// setuid/setgid/sticky bits are dropped, hard links, devices and fifos are refused, and a failed
/// copy leaves nothing on the host. (An aborted one is removed by a background thread a moment
/// after this returns.) `options_json` and `canceller` as for `boxlite_box_copy_in`.
///
/// Errors: `BOXLITE_ERR_NOT_FOUND` (no such guest path; the host parent does not exist),
/// `BOXLITE_ERR_ALREADY_EXISTS` (the host target exists and `overwrite` is not set),
/// `BOXLITE_ERR_INVALID_ARGUMENT`, `BOXLITE_ERR_INVALID_STATE`, `BOXLITE_ERR_STORAGE` (writing the
/// host side failed), `BOXLITE_ERR_GUEST` (the box sent something refused, named),
/// `BOXLITE_ERR_ABORTED`. Blocks for the copy. Any thread.
///
/// # Safety
/// As `boxlite_box_copy_in`.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_copy_out(
    b: *mut boxlite_box,
    guest_path: *const c_char,
    host_path: *const c_char,
    options_json: *const c_char,
    canceller: *const boxlite_canceller,
) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let guest = unsafe { string(guest_path, "guest_path")? }.to_string();
        let host = unsafe { string(host_path, "host_path")? }.to_string();
        let config: CopyConfig = unsafe { options(options_json, "options_json")? };
        let token = unsafe { cancel::token(canceller) };
        let lite = b.lite.clone();
        let what = format!("copying {guest} out to {host}");
        b.ctx.run_cancellable(token, &what, async move {
            lite.copy_out(&guest, &host, boxlite::CopyOptions { overwrite: config.overwrite }).await
        })
    })
}

/// A file of a box being read. Made by `boxlite_box_open_reader`, read with
/// `boxlite_file_reader_read`, freed by `boxlite_file_reader_free`. Reads from several threads
/// take turns.
pub struct boxlite_file_reader {
    ctx: Arc<Context>,
    state: Mutex<ReaderState>,
}

struct ReaderState {
    /// None once the end was read.
    stream: Option<boxlite::ReadStream>,
    /// The chunk being handed out, and how far.
    chunk: Vec<u8>,
    offset: usize,
}

/// Opens a regular file of the running box for reading (symlinks followed inside the box).
///
/// `path`: absolute, in the box. `out`: receives the reader on success (untouched on failure);
/// free it with `boxlite_file_reader_free`. Errors: `BOXLITE_ERR_NOT_FOUND` (no such file),
/// `BOXLITE_ERR_INVALID_ARGUMENT` (a relative path; a directory or another non-regular file),
/// `BOXLITE_ERR_INVALID_STATE` (the box is not running). Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; `path` is NULL or NUL-terminated; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_open_reader(b: *mut boxlite_box, path: *const c_char, out: *mut *mut boxlite_file_reader) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let path = unsafe { string(path, "path")? }.to_string();
        let out = unsafe { out_param(out, "out")? };
        let files = b.lite.files();
        let stream = b.ctx.run(async move { files.read(&path).await })?;
        let state = ReaderState { stream: Some(stream), chunk: Vec::new(), offset: 0 };
        *out = Box::into_raw(Box::new(boxlite_file_reader { ctx: b.ctx.clone(), state: Mutex::new(state) }));
        Ok(())
    })
}

/// Reads the next bytes of the file.
///
/// `buf`: `len` (> 0) writable bytes. `timeout_ms`: how long to wait for the box; negative waits
/// without limit. `n`: on success, the bytes written to `buf` (1..len), or 0 at the end of the
/// file (and on every later call).
///
/// Errors: `BOXLITE_ERR_TIMEOUT` (nothing within `timeout_ms`; call again, nothing is lost),
/// `BOXLITE_ERR_INVALID_ARGUMENT` (`len` 0), `BOXLITE_ERR_GUEST` (the box stopped or failed
/// mid-file). Any thread; reads from several threads take turns.
///
/// # Safety
/// `r` is NULL or a live reader; `buf` is NULL or valid for `len` bytes of writes; `n` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_file_reader_read(r: *mut boxlite_file_reader, buf: *mut u8, len: usize, timeout_ms: c_int, n: *mut usize) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let r = unsafe { handle(r, "reader")? };
        let n = unsafe { out_param(n, "n")? };
        if buf.is_null() {
            return Err(null("buf"));
        }
        if len == 0 {
            return Err(Failure::invalid("len is 0: give a buffer of at least one byte"));
        }
        // SAFETY: buf is valid for len bytes per the contract.
        let buf = unsafe { std::slice::from_raw_parts_mut(buf, len) };
        let mut state = lock(&r.state);
        let state = &mut *state;
        while state.offset == state.chunk.len() {
            let Some(stream) = state.stream.as_mut() else {
                *n = 0;
                return Ok(());
            };
            // ReadStream::next is cancel-safe: a timeout loses nothing.
            match r.ctx.wait_for(timeout(timeout_ms), "reading the file", stream.next())?? {
                Some(chunk) => (state.chunk, state.offset) = (chunk, 0),
                None => state.stream = None,
            }
        }
        let count = buf.len().min(state.chunk.len() - state.offset);
        buf[..count].copy_from_slice(&state.chunk[state.offset..state.offset + count]);
        state.offset += count;
        *n = count;
        Ok(())
    })
}

/// Frees a reader; the rest of the file is not read. NULL is a no-op. Do not use `r` again, nor
/// free it while another thread uses it.
///
/// # Safety
/// `r` is NULL or a reader not yet freed.
#[no_mangle]
pub unsafe extern "C" fn boxlite_file_reader_free(r: *mut boxlite_file_reader) {
    // SAFETY: forwarded from this function's contract.
    unsafe { free_handle(r) }
}

/// Reads a whole regular file of the running box into memory (for big files, use
/// `boxlite_box_open_reader`).
///
/// `data` and `len`: on success, the bytes (owned by the caller: free them with
/// `boxlite_bytes_free(data, len)`, also when `len` is 0) and their count. Errors as
/// `boxlite_box_open_reader` and `boxlite_file_reader_read`. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; `path` is NULL or NUL-terminated; `data` and `len` are NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_read_file(b: *mut boxlite_box, path: *const c_char, data: *mut *mut u8, len: *mut usize) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let path = unsafe { string(path, "path")? }.to_string();
        let data = unsafe { out_param(data, "data")? };
        let len = unsafe { out_param(len, "len")? };
        let files = b.lite.files();
        let bytes = b.ctx.run(async move { files.read_all(&path).await })?.into_boxed_slice();
        *len = bytes.len();
        *data = Box::into_raw(bytes).cast();
        Ok(())
    })
}

/// Frees bytes returned by `boxlite_box_read_file`. `len` is the length it returned. NULL is a
/// no-op.
///
/// # Safety
/// `data` is NULL or bytes from `boxlite_box_read_file`, not yet freed, with their `len`.
#[no_mangle]
pub unsafe extern "C" fn boxlite_bytes_free(data: *mut u8, len: usize) {
    if !data.is_null() {
        // SAFETY: made by Box::<[u8]>::into_raw with this length, per this function's contract.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(data, len)) });
    }
}

/// A file of a box being written. Made by `boxlite_box_open_writer`, written with
/// `boxlite_file_writer_write`, put in place by `boxlite_file_writer_finish`, freed by
/// `boxlite_file_writer_free` (which discards an unfinished file). Writes from several threads
/// take turns.
pub struct boxlite_file_writer {
    ctx: Arc<Context>,
    /// None once finished or failed.
    writer: Mutex<Option<boxlite::FileWriter>>,
    path: String,
}

/// Opens a file of the running box for writing. Nothing is visible at `path` until
/// `boxlite_file_writer_finish` succeeds; then the file is created, or replaced whole (a failed or
/// abandoned write keeps the old content). Its directory must exist.
///
/// `options_json`: NULL for the defaults, or `{"mode": 493}` (permission bits as a number, here
/// 0755, at most 07777; default: an existing file keeps its own, a new one gets 0644).
/// `out`: receives the writer on success (untouched on failure); free it with
/// `boxlite_file_writer_free`. Errors: `BOXLITE_ERR_INVALID_ARGUMENT` (a relative path, a bad
/// mode, a directory at `path`), `BOXLITE_ERR_NOT_FOUND` (no such directory),
/// `BOXLITE_ERR_INVALID_STATE` (the box is not running). Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; strings are NULL or NUL-terminated; `out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_open_writer(
    b: *mut boxlite_box,
    path: *const c_char,
    options_json: *const c_char,
    out: *mut *mut boxlite_file_writer,
) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let path = unsafe { string(path, "path")? }.to_string();
        let config: WriteConfig = unsafe { options(options_json, "options_json")? };
        let out = unsafe { out_param(out, "out")? };
        let files = b.lite.files();
        let shown = path.clone();
        let writer = b.ctx.run(async move { files.writer(&shown, boxlite::WriteOptions { mode: config.mode }).await })?;
        *out = Box::into_raw(Box::new(boxlite_file_writer { ctx: b.ctx.clone(), writer: Mutex::new(Some(writer)), path }));
        Ok(())
    })
}

/// Sends `len` bytes of `data` (copied) to the file. Blocks while the box is behind
/// (backpressure: at most 1 MiB waits on the host).
///
/// Errors: `BOXLITE_ERR_STORAGE` (the box's disk is full), `BOXLITE_ERR_INVALID_STATE` (the writer
/// finished, or an earlier write failed: open a new one), `BOXLITE_ERR_GUEST` (the box stopped).
/// After an error the file is discarded. Any thread; writes from several threads take turns.
///
/// # Safety
/// `w` is NULL or a live writer; `data` is NULL or valid for `len` bytes of reads.
#[no_mangle]
pub unsafe extern "C" fn boxlite_file_writer_write(w: *mut boxlite_file_writer, data: *const u8, len: usize) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let w = unsafe { handle(w, "writer")? };
        if data.is_null() {
            return Err(null("data"));
        }
        let data = unsafe { std::slice::from_raw_parts(data, len) };
        let mut slot = lock(&w.writer);
        let writer = slot.as_mut().ok_or_else(|| w.done())?;
        let written = w.ctx.wait_for(None, "writing the file", writer.write(data))?;
        if written.is_err() {
            *slot = None; // the box discarded the file; later writes say so
        }
        written.map_err(Failure::from)
    })
}

/// Ends the file: on success it is in place in the box with everything written. The writer then
/// only accepts `boxlite_file_writer_free`.
///
/// Errors: as `boxlite_file_writer_write`; `BOXLITE_ERR_INVALID_STATE` when called twice. Any
/// thread.
///
/// # Safety
/// `w` is NULL or a live writer.
#[no_mangle]
pub unsafe extern "C" fn boxlite_file_writer_finish(w: *mut boxlite_file_writer) -> boxlite_result {
    boundary(|| {
        // SAFETY: forwarded from this function's contract.
        let w = unsafe { handle(w, "writer")? };
        let writer = lock(&w.writer).take().ok_or_else(|| w.done())?;
        w.ctx.wait_for(None, "finishing the file", writer.finish())?.map_err(Failure::from)
    })
}

impl boxlite_file_writer {
    fn done(&self) -> Failure {
        Failure::new(
            boxlite_result::BOXLITE_ERR_INVALID_STATE,
            format!("the writer of {} is finished or failed: open a new one", self.path),
        )
    }
}

impl Drop for boxlite_file_writer {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = self.ctx.wait_for(None, "discarding the file", writer.abort());
        }
    }
}

/// Frees a writer. An unfinished file is discarded: when this returns the box keeps what was at
/// the path before, with no partial file beside it (waiting at most 5 s for the box to answer).
/// NULL is a no-op. Do not use `w` again, nor free it while another thread uses it.
///
/// # Safety
/// `w` is NULL or a writer not yet freed.
#[no_mangle]
pub unsafe extern "C" fn boxlite_file_writer_free(w: *mut boxlite_file_writer) {
    // SAFETY: forwarded from this function's contract.
    unsafe { free_handle(w) }
}

/// Writes `len` bytes of `data` to a file of the running box in one call: as
/// `boxlite_box_open_writer`, one write and `boxlite_file_writer_finish` (created, or replaced
/// whole once written). `options_json` as for `boxlite_box_open_writer`. Errors as those. Any
/// thread.
///
/// # Safety
/// `b` is NULL or a live box handle; strings are NULL or NUL-terminated; `data` is NULL or valid
/// for `len` bytes of reads.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_write_file(
    b: *mut boxlite_box,
    path: *const c_char,
    data: *const u8,
    len: usize,
    options_json: *const c_char,
) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let path = unsafe { string(path, "path")? }.to_string();
        if data.is_null() {
            return Err(null("data"));
        }
        let data = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
        let config: WriteConfig = unsafe { options(options_json, "options_json")? };
        let files = b.lite.files();
        b.ctx.run(async move { files.write(&path, &data, boxlite::WriteOptions { mode: config.mode }).await })
    })
}

/// Unix milliseconds (negative before 1970).
fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// A file entry as `boxlite_box_list_dir` and `boxlite_box_stat_file` give it (fields in this order).
#[derive(Serialize)]
struct EntryJson<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    file_type: boxlite::FileType,
    size: u64,
    mode: u32,
    mtime: i64,
}

fn entry_json(e: &boxlite::FileEntry) -> EntryJson<'_> {
    EntryJson { name: &e.name, file_type: e.file_type, size: e.size, mode: e.mode, mtime: unix_ms(e.mtime) }
}

/// A watch event as `boxlite_watch_next` gives it (fields in this order).
#[derive(Serialize)]
struct EventJson<'a> {
    kind: boxlite::WatchEventKind,
    path: &'a str,
    old_path: Option<&'a str>,
    is_dir: bool,
}

/// The entries of a directory of the running box (symlinks not followed), sorted by name, as a
/// JSON array of `{"name", "type", "size", "mode", "mtime"}`: `type` is `"file"`, `"dir"`,
/// `"symlink"` or `"other"` (device, fifo, socket); `size` in bytes (a symlink's is its target's
/// length); `mode` the permission bits as a number; `mtime` unix milliseconds.
///
/// `out` receives a string to free with `boxlite_string_free`. Errors: `BOXLITE_ERR_NOT_FOUND`,
/// `BOXLITE_ERR_INVALID_ARGUMENT` (a relative path, not a directory), `BOXLITE_ERR_INVALID_STATE`
/// (the box is not running). Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; `path` is NULL or NUL-terminated; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_list_dir(b: *mut boxlite_box, path: *const c_char, out: *mut *mut c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let path = unsafe { string(path, "path")? }.to_string();
        let out = unsafe { out_param(out, "out")? };
        let files = b.lite.files();
        let entries = b.ctx.run(async move { files.list(&path).await })?;
        *out = json_string(&entries.iter().map(entry_json).collect::<Vec<_>>())?;
        Ok(())
    })
}

/// One entry of the running box (a final symlink not followed) as a JSON object, as in
/// `boxlite_box_list_dir` (`"name"` is `"/"` for `/`). `out` receives a string to free with
/// `boxlite_string_free`. Errors: `BOXLITE_ERR_NOT_FOUND`, `BOXLITE_ERR_INVALID_ARGUMENT`,
/// `BOXLITE_ERR_INVALID_STATE`. Any thread.
///
/// # Safety
/// As `boxlite_box_list_dir`.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_stat_file(b: *mut boxlite_box, path: *const c_char, out: *mut *mut c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let path = unsafe { string(path, "path")? }.to_string();
        let out = unsafe { out_param(out, "out")? };
        let files = b.lite.files();
        let entry = b.ctx.run(async move { files.stat(&path).await })?;
        *out = json_string(&entry_json(&entry))?;
        Ok(())
    })
}

/// Whether `path` exists in the running box (a dangling symlink exists). `exists` receives the
/// answer on success. Errors: `BOXLITE_ERR_INVALID_ARGUMENT` (a relative path),
/// `BOXLITE_ERR_INVALID_STATE` (the box is not running). Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; `path` is NULL or NUL-terminated; `exists` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_file_exists(b: *mut boxlite_box, path: *const c_char, exists: *mut bool) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let path = unsafe { string(path, "path")? }.to_string();
        let exists = unsafe { out_param(exists, "exists")? };
        let files = b.lite.files();
        *exists = b.ctx.run(async move { files.exists(&path).await })?;
        Ok(())
    })
}

/// Creates a directory (mode 0755) in the running box.
///
/// `options_json`: NULL for the defaults, or `{"parents": true}`: create missing parents too, and
/// an existing directory is no error (`mkdir -p`). Errors: `BOXLITE_ERR_ALREADY_EXISTS`,
/// `BOXLITE_ERR_NOT_FOUND` (a missing parent without `parents`), `BOXLITE_ERR_INVALID_ARGUMENT`,
/// `BOXLITE_ERR_INVALID_STATE`. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_mkdir(b: *mut boxlite_box, path: *const c_char, options_json: *const c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let path = unsafe { string(path, "path")? }.to_string();
        let config: MkdirConfig = unsafe { options(options_json, "options_json")? };
        let files = b.lite.files();
        b.ctx.run(async move { files.mkdir(&path, boxlite::MkdirOptions { parents: config.parents }).await })
    })
}

/// Removes a file, symlink or empty directory of the running box.
///
/// `options_json`: NULL for the defaults, or `{"recursive": true}`: remove a directory with
/// everything in it (`rm -r`). Errors: `BOXLITE_ERR_NOT_FOUND`, `BOXLITE_ERR_INVALID_ARGUMENT`
/// (a relative path; a directory that is not empty without `recursive`),
/// `BOXLITE_ERR_INVALID_STATE`. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_remove_file(b: *mut boxlite_box, path: *const c_char, options_json: *const c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let path = unsafe { string(path, "path")? }.to_string();
        let config: RecursiveConfig = unsafe { options(options_json, "options_json")? };
        let files = b.lite.files();
        b.ctx.run(async move { files.remove(&path, boxlite::RemoveOptions { recursive: config.recursive }).await })
    })
}

/// Renames (moves) `from` to `to` within the running box, replacing a file at `to` (as
/// `rename(2)`). Errors: `BOXLITE_ERR_NOT_FOUND`, `BOXLITE_ERR_INVALID_ARGUMENT`,
/// `BOXLITE_ERR_INVALID_STATE`. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_rename_file(b: *mut boxlite_box, from: *const c_char, to: *const c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let from = unsafe { string(from, "from")? }.to_string();
        let to = unsafe { string(to, "to")? }.to_string();
        let files = b.lite.files();
        b.ctx.run(async move { files.rename(&from, &to).await })
    })
}

/// A watch of a directory of a box. Made by `boxlite_box_watch`, read with `boxlite_watch_next`,
/// freed by `boxlite_watch_free` (which ends the watch in the box). Calls from several threads
/// take turns.
pub struct boxlite_watch {
    ctx: Arc<Context>,
    events: Mutex<mpsc::Receiver<Result<boxlite::WatchEvent, Failure>>>,
    pump: tokio::task::AbortHandle,
    /// The reading end of the notifier's socket pair: the fd of `boxlite_watch_notify_fd`.
    notify_fd: UnixStream,
}

impl Drop for boxlite_watch {
    /// Ends the pump, which drops the stream: the box's agent sees it closed and stops watching.
    fn drop(&mut self) {
        self.pump.abort();
    }
}

/// Watches a directory of the running box (inotify in the box) for files created, modified
/// (written and closed), deleted and renamed.
///
/// `path`: an absolute directory in the box. `options_json`: NULL for the defaults, or
/// `{"recursive": true}`: also every subdirectory, those there now and those created later.
/// `out`: receives the watch on success (untouched on failure); free it with
/// `boxlite_watch_free`. Events come from the moment this returns; up to 4096 wait for
/// `boxlite_watch_next` before the box is made to hold them.
///
/// Errors: `BOXLITE_ERR_NOT_FOUND`, `BOXLITE_ERR_INVALID_ARGUMENT` (a relative path, not a
/// directory), `BOXLITE_ERR_INVALID_STATE` (the box is not running). Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; strings are NULL or NUL-terminated; `out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_watch(
    b: *mut boxlite_box,
    path: *const c_char,
    options_json: *const c_char,
    out: *mut *mut boxlite_watch,
) -> boxlite_result {
    boundary(|| {
        // SAFETY (all): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let path = unsafe { string(path, "path")? }.to_string();
        let config: RecursiveConfig = unsafe { options(options_json, "options_json")? };
        let out = unsafe { out_param(out, "out")? };
        let (notifier, notify_fd) = Notifier::pair()
            .map_err(|e| Failure::new(boxlite_result::BOXLITE_ERR_INTERNAL, format!("cannot make the watch's notify fd: {e}")))?;
        let files = b.lite.files();
        let (tx, events) = mpsc::channel(WATCH_QUEUE);
        let pump = b.ctx.run(async move {
            let mut stream = files.watch(&path, boxlite::WatchOptions { recursive: config.recursive }).await?;
            let task = tokio::spawn(async move {
                loop {
                    let (item, last) = match stream.next().await {
                        Ok(Some(event)) => (Ok(event), false),
                        Ok(None) => break,
                        Err(e) => (Err(Failure::from(e)), true),
                    };
                    if tx.send(item).await.is_err() || last {
                        break;
                    }
                    notifier.notify();
                }
                drop(tx); // before the notification, so that a reader woken by it sees the end
                notifier.notify();
            });
            Ok(task.abort_handle())
        })?;
        *out = Box::into_raw(Box::new(boxlite_watch { ctx: b.ctx.clone(), events: Mutex::new(events), pump, notify_fd }));
        Ok(())
    })
}

/// The next event of a watch.
///
/// `timeout_ms`: how long to wait; negative waits without limit, 0 only takes an event already
/// there. `event_json`: on success, an event to free with `boxlite_string_free`: `{"kind",
/// "path", "old_path", "is_dir"}`, `kind` one of `"created"` (or moved in from outside the
/// watched tree), `"modified"` (a file written and closed), `"deleted"` (or moved out),
/// `"renamed"` (within the tree: from `old_path`, null for the other kinds, to `path`); paths are
/// under the watched path as it was given. NULL at the end: the box stopped or the watched
/// directory was removed (and on every later call).
///
/// Errors: `BOXLITE_ERR_TIMEOUT` (no event within `timeout_ms`; call again),
/// `BOXLITE_ERR_STORAGE` (events came faster than they were read and some were lost; the watch
/// has ended), `BOXLITE_ERR_GUEST` (the connection to the box failed). Any thread.
///
/// # Safety
/// `w` is NULL or a live watch; `event_json` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_watch_next(w: *mut boxlite_watch, timeout_ms: c_int, event_json: *mut *mut c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (both): forwarded from this function's contract.
        let w = unsafe { handle(w, "watch")? };
        let event_json = unsafe { out_param(event_json, "event_json")? };
        let mut events = lock(&w.events);
        *event_json = match w.ctx.wait_for(timeout(timeout_ms), "waiting for a file event", events.recv())? {
            Some(event) => {
                let e = event?;
                json_string(&EventJson { kind: e.kind, path: &e.path, old_path: e.old_path.as_deref(), is_dir: e.is_dir })?
            }
            None => std::ptr::null_mut(),
        };
        Ok(())
    })
}

/// A file descriptor for waiting on the watch from an event loop instead of blocking a thread in
/// `boxlite_watch_next`: it becomes readable when an event arrives and when the watch ends. Each
/// writes a byte; drain them (`read` until `EAGAIN`: the fd is non-blocking), then take the
/// events with `boxlite_watch_next(w, 0, ...)` until it returns `BOXLITE_ERR_TIMEOUT` (nothing
/// more now) or NULL (the end).
///
/// `fd`: receives the descriptor on success. It belongs to `w`: do not close it;
/// `boxlite_watch_free` does (remove it from the event loop first). Any thread.
///
/// # Safety
/// `w` is NULL or a live watch; `fd` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_watch_notify_fd(w: *const boxlite_watch, fd: *mut c_int) -> boxlite_result {
    boundary(|| {
        // SAFETY (both): forwarded from this function's contract.
        let w = unsafe { handle(w, "watch")? };
        let fd = unsafe { out_param(fd, "fd")? };
        *fd = w.notify_fd.as_raw_fd();
        Ok(())
    })
}

/// Frees a watch and ends it in the box (the box's agent stops watching within moments). Events
/// not read are discarded. NULL is a no-op. Do not use `w` again, nor free it while another
/// thread uses it.
///
/// # Safety
/// `w` is NULL or a watch not yet freed.
#[no_mangle]
pub unsafe extern "C" fn boxlite_watch_free(w: *mut boxlite_watch) {
    // SAFETY: forwarded from this function's contract.
    unsafe { free_handle(w) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unix_ms_counts_both_ways_from_1970() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1500)), 1500);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_millis(2000)), -2000);
    }

    #[test]
    fn null_arguments_are_named_before_any_work() {
        let mut n = 0usize;
        let mut byte = 0u8;
        // SAFETY: NULL handles and valid out-pointers, as the contracts allow.
        unsafe {
            assert_eq!(boxlite_box_copy_in(std::ptr::null_mut(), c"/a".as_ptr(), c"/b".as_ptr(), std::ptr::null(), std::ptr::null()), boxlite_result::BOXLITE_ERR_NULL_POINTER);
            assert_eq!(boxlite_file_reader_read(std::ptr::null_mut(), &mut byte, 1, 0, &mut n), boxlite_result::BOXLITE_ERR_NULL_POINTER);
            assert_eq!(boxlite_watch_next(std::ptr::null_mut(), 0, std::ptr::null_mut()), boxlite_result::BOXLITE_ERR_NULL_POINTER);
            boxlite_file_reader_free(std::ptr::null_mut());
            boxlite_file_writer_free(std::ptr::null_mut());
            boxlite_watch_free(std::ptr::null_mut());
            boxlite_bytes_free(std::ptr::null_mut(), 0);
        }
    }
}
