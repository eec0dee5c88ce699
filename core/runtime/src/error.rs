//! The one error type of the runtime. Each variant has a stable code name that every binding
//! (C, Node, Python) exposes unchanged.

use std::path::PathBuf;

/// Result alias used across the runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in BoxLite. Messages are short, name the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option or argument is out of range or malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// No box or image with that id or name.
    #[error("{0}")]
    NotFound(String),
    /// A box with that name already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The operation is not allowed in the box's current state (e.g. exec on a removed box).
    #[error("{0}")]
    InvalidState(String),
    /// The image does not exist, is malformed, or a layer could not be applied.
    #[error("{0}")]
    Image(String),
    /// A registry could not be reached or refused the request.
    #[error("{0}")]
    Registry(String),
    /// The VM engine is missing or cannot run here (QEMU not installed, KVM unusable, ...).
    #[error("{0}")]
    Engine(String),
    /// The guest did not come up: VM exited or the guest-ready timeout passed.
    #[error("{0}")]
    GuestBoot(String),
    /// Talking to the guest agent failed, or it sent something invalid.
    #[error("{0}")]
    Guest(String),
    /// A file or directory under the BoxLite home could not be read or written.
    #[error("{context}: {source}")]
    Storage {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The state database failed.
    #[error("state database: {0}")]
    Database(rusqlite::Error),
    /// A bug or an unexpected condition.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The stable code name shared by every binding.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "INVALID_ARGUMENT",
            Error::NotFound(_) => "NOT_FOUND",
            Error::AlreadyExists(_) => "ALREADY_EXISTS",
            Error::InvalidState(_) => "INVALID_STATE",
            Error::Image(_) => "IMAGE",
            Error::Registry(_) => "REGISTRY",
            Error::Engine(_) => "ENGINE",
            Error::GuestBoot(_) => "GUEST_BOOT",
            Error::Guest(_) => "GUEST",
            Error::Storage { .. } => "STORAGE",
            Error::Database(_) => "DATABASE",
            Error::Internal(_) => "INTERNAL",
        }
    }

    /// The error another process (a box supervisor) reported by code name and message.
    pub fn from_code(code: &str, message: String) -> Self {
        match code {
            "INVALID_ARGUMENT" => Error::InvalidArgument(message),
            "NOT_FOUND" => Error::NotFound(message),
            "ALREADY_EXISTS" => Error::AlreadyExists(message),
            "INVALID_STATE" => Error::InvalidState(message),
            "IMAGE" => Error::Image(message),
            "REGISTRY" => Error::Registry(message),
            "ENGINE" => Error::Engine(message),
            "GUEST_BOOT" => Error::GuestBoot(message),
            "GUEST" => Error::Guest(message),
            "STORAGE" | "DATABASE" => Error::Storage { context: message, source: std::io::Error::other("reported by the box supervisor") },
            _ => Error::Internal(message),
        }
    }

    /// Whether the disk under the home is full (a write failed with ENOSPC, in a file or in the
    /// state database).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Storage { source, .. } if source.kind() == std::io::ErrorKind::StorageFull || source.raw_os_error() == Some(libc::ENOSPC))
    }

    /// A storage error for `path` while doing `what`.
    pub fn storage(what: &str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Storage { context: format!("{what} {}", path.into().display()), source }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            // A full disk is a storage problem the user fixes by freeing space, not a database bug.
            Some(rusqlite::ErrorCode::DiskFull) => Error::Storage {
                context: "the state database could not be written: the disk holding the BoxLite home is full; free space (remove boxes or images)".into(),
                source: std::io::Error::from(std::io::ErrorKind::StorageFull),
            },
            Some(rusqlite::ErrorCode::ReadOnly) => Error::Storage {
                context: "the state database could not be written: the BoxLite home is read-only (a read-only mount, or not this user's); use a writable home (BOXLITE_HOME)".into(),
                source: std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem),
            },
            _ => Error::Database(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_survive_a_trip_through_another_process() {
        for e in [Error::GuestBoot("x".into()), Error::Engine("y".into()), Error::NotFound("z".into())] {
            assert_eq!(Error::from_code(e.code(), e.to_string()).code(), e.code());
        }
        assert_eq!(Error::from_code("???", "m".into()).code(), "INTERNAL");
    }

    #[test]
    fn a_full_or_read_only_disk_under_the_database_is_a_storage_error() {
        let sqlite = |code| Error::from(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None));
        let full = sqlite(rusqlite::ffi::SQLITE_FULL);
        assert_eq!((full.code(), full.is_disk_full()), ("STORAGE", true));
        assert!(full.to_string().contains("full"), "{full}");
        let ro = sqlite(rusqlite::ffi::SQLITE_READONLY);
        assert_eq!((ro.code(), ro.is_disk_full()), ("STORAGE", false));
        assert!(ro.to_string().contains("read-only"), "{ro}");
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_CORRUPT).code(), "DATABASE");
    }
}
