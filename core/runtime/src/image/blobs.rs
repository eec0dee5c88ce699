//! Content-addressed blob store: `blobs/sha256/<hex>`, each verified against its digest before it
//! is renamed into place, so a blob that exists is always complete and correct.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::atomic::{unique_path, TempPath};
use super::reference::validate_digest;
use crate::error::{Error, Result};

/// The blob directory, the temp directory partial blobs are written in, and the directory of
/// download locks.
#[derive(Clone, Debug)]
pub(crate) struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
    locks: PathBuf,
}

/// A blob being written: a temp file and the running hash of what was written.
pub(crate) struct BlobWriter {
    tmp: TempPath,
    hasher: Sha256,
    bytes: u64,
    expected: String,
    dest: PathBuf,
}

impl BlobStore {
    /// A store in `dir` (must exist) writing temp files in `tmp` (same filesystem, for rename)
    /// and download locks in `locks`.
    pub fn new(dir: PathBuf, tmp: PathBuf, locks: PathBuf) -> Self {
        BlobStore { dir, tmp, locks }
    }

    /// The lock of one blob's download (`locks/blob-<hex>.lock`), across tasks and processes: a
    /// pull that finds it held waits for the download under way, then finds the blob stored
    /// instead of fetching it again.
    pub async fn download_lock(&self, digest: &str) -> Result<nix::fcntl::Flock<File>> {
        let path = self.lock_path(digest)?;
        super::atomic::lock_async(path, false).await
    }

    /// Where the download lock of `digest` lives.
    pub fn lock_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.locks.join(format!("blob-{}.lock", validate_digest(digest)?)))
    }

    /// The digests of every blob stored, with the bytes each takes on disk.
    pub fn list(&self) -> Result<Vec<(String, u64)>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::storage("cannot list", &self.dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::storage("cannot list", &self.dir, e))?;
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if validate_digest(&digest).is_ok() {
                out.push((digest, super::atomic::allocated_bytes(&entry.path())));
            }
        }
        Ok(out)
    }

    /// Where the blob with `digest` lives (whether or not it exists).
    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.dir.join(validate_digest(digest)?))
    }

    /// Whether the blob is present.
    pub fn contains(&self, digest: &str) -> Result<bool> {
        Ok(self.path(digest)?.is_file())
    }

    /// Reads a small blob (manifest, config) whole.
    pub fn read(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.path(digest)?;
        std::fs::read(&path).map_err(|e| Error::storage("cannot read blob", path, e))
    }

    /// Starts writing the blob `digest`; see [`BlobWriter::commit`].
    pub fn writer(&self, digest: &str) -> Result<(BlobWriter, File)> {
        let dest = self.path(digest)?;
        let tmp = TempPath::new(unique_path(&self.tmp, "blob"));
        let file = super::atomic::create_private(tmp.path())
            .map_err(|e| Error::storage("cannot create", tmp.path(), e))?;
        let writer = BlobWriter {
            tmp,
            hasher: Sha256::new(),
            bytes: 0,
            expected: digest.to_string(),
            dest,
        };
        Ok((writer, file))
    }

    /// Copies `reader` into the store as `digest`, verifying it. Returns the blob size.
    pub fn import(&self, digest: &str, mut reader: impl Read) -> Result<u64> {
        let (mut writer, mut file) = self.writer(digest)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Image(format!("cannot read blob {digest}: {e}"))),
            };
            writer.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(|e| Error::storage("cannot write", writer.tmp.path(), e))?;
        }
        writer.commit(file)
    }

    /// Writes a blob held in memory (a manifest), verifying it.
    pub fn put(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        if !self.contains(digest)? {
            self.import(digest, bytes)?;
        }
        Ok(())
    }
}

impl BlobWriter {
    /// Records bytes that the caller wrote to the temp file.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
    }

    /// The temp file path, for callers that write through their own (async) handle.
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// Verifies the digest, syncs and renames the blob into place. On mismatch nothing is kept.
    pub fn commit(self, file: File) -> Result<u64> {
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        if actual != self.expected {
            return Err(Error::Image(format!(
                "blob {} is corrupt: its content hashes to {actual}; pull again, and check the source if it persists",
                self.expected
            )));
        }
        file.sync_all()
            .map_err(|e| Error::storage("cannot sync", self.tmp.path(), e))?;
        drop(file);
        self.tmp.persist(&self.dest)?;
        Ok(self.bytes)
    }
}

/// The `sha256:<hex>` digest of `bytes`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let s = BlobStore::new(dir.path().join("blobs"), dir.path().join("tmp"), dir.path().to_path_buf());
        (dir, s)
    }

    #[test]
    fn import_verifies_and_stores_by_digest() {
        let (dir, s) = store();
        let digest = sha256_digest(b"hello");
        assert!(!s.contains(&digest).unwrap());
        assert_eq!(s.import(&digest, &b"hello"[..]).unwrap(), 5);
        assert!(s.contains(&digest).unwrap());
        assert_eq!(s.read(&digest).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn mismatch_keeps_nothing() {
        let (dir, s) = store();
        let digest = sha256_digest(b"hello");
        let err = s.import(&digest, &b"evil"[..]).unwrap_err();
        assert!(
            matches!(err, Error::Image(ref m) if m.contains("corrupt")),
            "{err}"
        );
        assert!(!s.contains(&digest).unwrap());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn digests_cannot_name_paths() {
        let (_dir, s) = store();
        assert!(s.path("sha256:../../x").is_err());
        assert!(s.path("sha512:00").is_err());
    }
}
