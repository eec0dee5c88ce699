//! Images: pulling from registries or local OCI layouts, applying layers, building base disks.
//!
//! Layout of the store (root = `<BOXLITE_HOME>/images`):
//! - `blobs/sha256/<hex>`: manifests, configs and layers, verified against their digest.
//! - `disks/<config-hex>.ext4`: the base root filesystem of an image, built once per config.
//! - `refs/<sha256 of reference>.json`: an [`Image`] per normalized reference; read offline.
//! - `locks/`: flock files that serialize disk builds and reference writes across processes.
//! - `tmp/`: staging trees and partial downloads; everything leaves it by rename.

mod atomic;
mod blobs;
mod ext4;
mod layers;
mod layout;
mod manifest;
mod reference;
mod registry;
mod store;

use std::path::PathBuf;

pub(crate) use atomic::allocated_bytes;
pub(crate) use store::disk_name;
pub use store::{ImageStore, StoreLock, StoreUse, DEFAULT_MAX_UNPACKED_BYTES};

/// What a removal or a prune took away, and the bytes it freed on disk.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Removed {
    /// Ids of the boxes removed (a prune that includes stopped boxes).
    pub boxes: Vec<String>,
    /// References removed from the image index.
    pub images: Vec<String>,
    /// Digests of the blobs (manifests, configs, layers) deleted.
    pub blobs: Vec<String>,
    /// Base disks deleted, by the config digest of their image.
    pub base_disks: Vec<String>,
    /// Bytes freed on disk (allocated blocks: a sparse base disk counts what it held).
    pub bytes_freed: u64,
}

/// A registry the user configured.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RegistryConfig {
    /// Host and optional port, as written in image references (e.g. `127.0.0.1:5000`).
    pub host: String,
    /// Speak plain http instead of https.
    pub insecure: bool,
    /// User name for basic auth (or the token exchange), if the registry needs one.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
}

/// The parts of the OCI image config a box uses as defaults.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageConfig {
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// Working directory for commands, if the image sets one.
    pub working_dir: Option<String>,
    /// User (`name`, `uid`, `uid:gid`, ...) commands run as, if the image sets one.
    pub user: Option<String>,
    /// Entrypoint, possibly empty.
    pub entrypoint: Vec<String>,
    /// Default command (arguments to the entrypoint), possibly empty.
    pub cmd: Vec<String>,
}

/// An image ready to boot boxes from.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Image {
    /// Normalized reference, in a form the user can name again (e.g. `127.0.0.1:5000/busybox:latest`,
    /// `docker.io/library/alpine:3.20`, `oci:/abs/layout:latest`).
    pub reference: String,
    /// Digest of the linux/amd64 image manifest.
    pub manifest_digest: String,
    /// Digest of the image config; the base disk is shared by every reference with this config.
    pub config_digest: String,
    /// Defaults for commands run in boxes of this image.
    pub config: ImageConfig,
    /// Number of layers.
    pub layer_count: usize,
    /// The base ext4 disk holding the root filesystem. Boxes overlay it and never write to it.
    pub base_disk: PathBuf,
    /// Bytes of the image's layers as stored (compressed, as pulled).
    pub size_bytes: u64,
    /// When this reference was last pulled, in unix seconds.
    pub pulled_at: u64,
}

/// Pull progress events.
#[derive(Clone, Debug)]
pub enum PullProgress {
    /// The reference resolved to a linux/amd64 manifest with this many layers.
    Resolved {
        /// Normalized reference.
        reference: String,
        /// Number of layers to fetch.
        layers: usize,
    },
    /// A layer is in the blob store (downloaded, imported, or already present).
    LayerDone {
        /// Layer digest.
        digest: String,
        /// Compressed size of the layer.
        bytes: u64,
    },
    /// The base disk exists (built now or before).
    DiskBuilt {
        /// Path of the base disk.
        path: PathBuf,
    },
}
