//! BoxLite runtime: turns an OCI image into a running micro-VM and runs commands in it.
//!
//! ```no_run
//! # async fn demo() -> boxlite::Result<()> {
//! use boxlite::{BoxOptions, ExecCommand, Runtime, RuntimeOptions};
//! let rt = Runtime::new(RuntimeOptions::default())?;
//! let b = rt.create(BoxOptions::new("busybox:latest")).await?;
//! let out = b.exec(ExecCommand::new("echo", ["hi"])).await?.output().await?;
//! assert_eq!(out.stdout, b"hi\n");
//! b.stop().await?;
//! rt.remove(b.id(), false).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod assets;
pub mod engine;
pub mod error;
pub mod guest;
pub mod image;
pub mod net;
pub mod options;
pub mod runtime;
pub mod shim;
pub mod state;

pub use error::{Error, Result};
pub use image::Removed;
pub use runtime::PruneOptions;
pub use runtime::{CopyOptions, FileEntry, FileType, FileWriter, Files, MkdirOptions, ReadStream, RemoveOptions, WatchEvent, WatchEventKind, WatchOptions, WatchStream, WriteOptions};
pub use guest::{ExecControl, ExitStatus, Execution, Output, OutputStream, Stdin};
pub use image::{Image, ImageConfig, PullProgress, RegistryConfig};
pub use net::{Network, PortSpec, Protocol};
pub use options::{Accel, BoxOptions, RuntimeOptions, Volume};
pub use runtime::{BoxMetrics, ExecCommand, LiteBox, RestoreOptions, Runtime, RuntimeMetrics, SnapshotInfo, TemplateInfo, WarmupOptions};
pub use state::{BoxRecord, BoxStatus};
