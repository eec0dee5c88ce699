//! Files in and out of a box: `Box.copyIn` / `Box.copyOut` and the `Files` API. Streams (a file
//! read, a file written, a watch) are pulled or pushed one chunk per Promise, so JS and the box
//! move at the pace of the slower side and nothing is held whole in memory.

use super::{promise, Failure};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::sync::Arc;
use std::time::UNIX_EPOCH;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// One entry of a box directory.
#[napi(object)]
pub struct FileEntry {
    /// Its name (`/` for `stat("/")`).
    pub name: String,
    #[napi(js_name = "type", ts_type = "'file' | 'dir' | 'symlink' | 'other'")]
    pub file_type: String,
    /// Bytes (a symlink's: the length of its target).
    pub size: f64,
    /// Permission bits.
    pub mode: u32,
    /// Last modification, milliseconds since the epoch.
    pub mtime_ms: f64,
}

/// One event of a watch.
#[napi(object)]
pub struct WatchEvent {
    #[napi(ts_type = "'created' | 'modified' | 'deleted' | 'renamed'")]
    pub kind: String,
    pub path: String,
    /// Where a renamed entry was before.
    pub old_path: Option<String>,
    pub is_dir: bool,
}

fn file_entry(e: boxlite::FileEntry) -> FileEntry {
    let file_type = match e.file_type {
        boxlite::FileType::File => "file",
        boxlite::FileType::Dir => "dir",
        boxlite::FileType::Symlink => "symlink",
        boxlite::FileType::Other => "other",
    };
    let mtime_ms = match e.mtime.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_millis() as f64,
        Err(before) => -(before.duration().as_millis() as f64),
    };
    FileEntry { name: e.name, file_type: file_type.into(), size: e.size as f64, mode: e.mode, mtime_ms }
}

fn watch_event(e: boxlite::WatchEvent) -> WatchEvent {
    let kind = match e.kind {
        boxlite::WatchEventKind::Created => "created",
        boxlite::WatchEventKind::Modified => "modified",
        boxlite::WatchEventKind::Deleted => "deleted",
        boxlite::WatchEventKind::Renamed => "renamed",
    };
    WatchEvent { kind: kind.into(), path: e.path, old_path: e.old_path, is_dir: e.is_dir }
}

fn closed(what: &str) -> Failure {
    Failure { code: "INVALID_STATE", message: format!("the {what} is closed") }
}

/// The files of one box; every call needs the box running.
#[napi]
pub struct Files {
    inner: boxlite::Files,
}

#[napi]
impl Files {
    /// Opens a file for reading, chunk by chunk.
    #[napi(ts_return_type = "Promise<FileReader>")]
    pub fn read<'env>(&self, env: &'env Env, path: String) -> Result<PromiseRaw<'env, FileReader>> {
        let f = self.inner.clone();
        promise(env, async move { Ok(FileReader { stream: Arc::new(Mutex::new(Some(f.read(&path).await?))) }) })
    }

    /// A whole file.
    #[napi(ts_return_type = "Promise<Buffer>")]
    pub fn read_all<'env>(&self, env: &'env Env, path: String) -> Result<PromiseRaw<'env, Buffer>> {
        let f = self.inner.clone();
        promise(env, async move { Ok(Buffer::from(f.read_all(&path).await?)) })
    }

    /// Writes a whole file (created, or replaced once written).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn write<'env>(&self, env: &'env Env, path: String, data: Buffer, mode: Option<u32>) -> Result<PromiseRaw<'env, ()>> {
        let f = self.inner.clone();
        let data = data.to_vec();
        promise(env, async move { Ok(f.write(&path, &data, boxlite::WriteOptions { mode }).await?) })
    }

    /// Opens a file for writing chunk by chunk; it appears once `finish()` resolves.
    #[napi(ts_return_type = "Promise<FileWriter>")]
    pub fn writer<'env>(&self, env: &'env Env, path: String, mode: Option<u32>) -> Result<PromiseRaw<'env, FileWriter>> {
        let f = self.inner.clone();
        promise(env, async move {
            let writer = f.writer(&path, boxlite::WriteOptions { mode }).await?;
            Ok(FileWriter { writer: Arc::new(Mutex::new(Some(writer))) })
        })
    }

    /// A directory's entries (symlinks not followed), sorted by name.
    #[napi(ts_return_type = "Promise<FileEntry[]>")]
    pub fn list<'env>(&self, env: &'env Env, path: String) -> Result<PromiseRaw<'env, Vec<FileEntry>>> {
        let f = self.inner.clone();
        promise(env, async move { Ok(f.list(&path).await?.into_iter().map(file_entry).collect()) })
    }

    /// One entry (a final symlink not followed).
    #[napi(ts_return_type = "Promise<FileEntry>")]
    pub fn stat<'env>(&self, env: &'env Env, path: String) -> Result<PromiseRaw<'env, FileEntry>> {
        let f = self.inner.clone();
        promise(env, async move { Ok(file_entry(f.stat(&path).await?)) })
    }

    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn exists<'env>(&self, env: &'env Env, path: String) -> Result<PromiseRaw<'env, bool>> {
        let f = self.inner.clone();
        promise(env, async move { Ok(f.exists(&path).await?) })
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn mkdir<'env>(&self, env: &'env Env, path: String, parents: bool) -> Result<PromiseRaw<'env, ()>> {
        let f = self.inner.clone();
        promise(env, async move { Ok(f.mkdir(&path, boxlite::MkdirOptions { parents }).await?) })
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn remove<'env>(&self, env: &'env Env, path: String, recursive: bool) -> Result<PromiseRaw<'env, ()>> {
        let f = self.inner.clone();
        promise(env, async move { Ok(f.remove(&path, boxlite::RemoveOptions { recursive }).await?) })
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn rename<'env>(&self, env: &'env Env, from: String, to: String) -> Result<PromiseRaw<'env, ()>> {
        let f = self.inner.clone();
        promise(env, async move { Ok(f.rename(&from, &to).await?) })
    }

    /// Watches a directory; resolves once the box's watch is in place.
    #[napi(ts_return_type = "Promise<FileWatcher>")]
    pub fn watch<'env>(&self, env: &'env Env, path: String, recursive: bool) -> Result<PromiseRaw<'env, FileWatcher>> {
        let f = self.inner.clone();
        promise(env, async move {
            let stream = f.watch(&path, boxlite::WatchOptions { recursive }).await?;
            Ok(FileWatcher { stream: Arc::new(Mutex::new(Some(stream))), closed: CancellationToken::new() })
        })
    }
}

/// A file being read.
#[napi]
pub struct FileReader {
    stream: Arc<Mutex<Option<boxlite::ReadStream>>>,
}

#[napi]
impl FileReader {
    /// The next chunk (at most 64 KiB), or null at the end (or once closed).
    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn next<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Option<Buffer>>> {
        let stream = self.stream.clone();
        promise(env, async move {
            let mut guard = stream.lock().await;
            let Some(s) = guard.as_mut() else { return Ok(None) };
            match s.next().await? {
                Some(chunk) => Ok(Some(Buffer::from(chunk))),
                None => {
                    guard.take();
                    Ok(None)
                }
            }
        })
    }

    /// Stops reading: the box's side of the read ends.
    #[napi]
    pub fn close(&self) {
        let stream = self.stream.clone();
        napi::bindgen_prelude::spawn(async move {
            stream.lock().await.take();
        });
    }
}

/// A file being written.
#[napi]
pub struct FileWriter {
    writer: Arc<Mutex<Option<boxlite::FileWriter>>>,
}

#[napi]
impl FileWriter {
    /// Sends bytes; resolves once the box has room for more.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn write<'env>(&self, env: &'env Env, data: Buffer) -> Result<PromiseRaw<'env, ()>> {
        let writer = self.writer.clone();
        let data = data.to_vec();
        promise(env, async move {
            let mut guard = writer.lock().await;
            let w = guard.as_mut().ok_or_else(|| closed("file writer"))?;
            if let Err(e) = w.write(&data).await {
                guard.take();
                return Err(e.into());
            }
            Ok(())
        })
    }

    /// Ends the file: it is in place once this resolves.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn finish<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let writer = self.writer.clone();
        promise(env, async move {
            let w = writer.lock().await.take().ok_or_else(|| closed("file writer"))?;
            Ok(w.finish().await?)
        })
    }

    /// Gives up: resolves once the box has discarded what was sent; the file is as it was.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn abort<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let writer = self.writer.clone();
        promise(env, async move {
            if let Some(w) = writer.lock().await.take() {
                w.abort().await;
            }
            Ok(())
        })
    }
}

/// A watch of a box directory.
#[napi]
pub struct FileWatcher {
    stream: Arc<Mutex<Option<boxlite::WatchStream>>>,
    closed: CancellationToken,
}

#[napi]
impl FileWatcher {
    /// The next event, or null once the box stopped, the directory went away or `close()` was called.
    #[napi(ts_return_type = "Promise<WatchEvent | null>")]
    pub fn next<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Option<WatchEvent>>> {
        let stream = self.stream.clone();
        let closed = self.closed.clone();
        promise(env, async move {
            let mut guard = stream.lock().await;
            let Some(s) = guard.as_mut() else { return Ok(None) };
            let next = tokio::select! {
                biased;
                _ = closed.cancelled() => None,
                next = s.next() => next?,
            };
            if next.is_none() {
                guard.take(); // drops the call: the box's watch ends
            }
            Ok(next.map(watch_event))
        })
    }

    /// Ends the watch, in the box too; a pending `next()` resolves null.
    #[napi]
    pub fn close(&self) {
        self.closed.cancel();
        let stream = self.stream.clone();
        napi::bindgen_prelude::spawn(async move {
            stream.lock().await.take();
        });
    }
}

impl Files {
    pub(crate) fn new(inner: boxlite::Files) -> Self {
        Files { inner }
    }
}
