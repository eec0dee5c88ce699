//! The guest kernel and initramfs every VM boots. Built by the project's setup, never downloaded.

use crate::error::{Error, Result};
use std::path::PathBuf;

/// Environment variable naming the directory that holds `vmlinux` and `initramfs.cpio`.
pub const ASSETS_ENV: &str = "BOXLITE_ASSETS_DIR";

/// Paths of the guest boot assets.
#[derive(Clone, Debug)]
pub struct GuestAssets {
    /// Uncompressed PVH kernel.
    pub kernel: PathBuf,
    /// Initramfs whose /init is the agent.
    pub initrd: PathBuf,
}

/// The assets directory: `$BOXLITE_ASSETS_DIR`, else `$XDG_CACHE_HOME/boxlite/assets`, else
/// `~/.cache/boxlite/assets` (where `scripts/setup.sh` puts them).
pub fn assets_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(ASSETS_ENV).filter(|d| !d.is_empty()) {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home_dir().join(".cache"));
    cache.join("boxlite").join("assets")
}

pub(crate) fn home_dir() -> PathBuf {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from).unwrap_or_else(|| "/".into())
}

impl GuestAssets {
    /// Finds both files in `dir` (default [`assets_dir`]) or says how to build them.
    pub fn find(dir: Option<&std::path::Path>) -> Result<Self> {
        let dir = dir.map(PathBuf::from).unwrap_or_else(assets_dir);
        let assets = GuestAssets { kernel: dir.join("vmlinux"), initrd: dir.join("initramfs.cpio") };
        for path in [&assets.kernel, &assets.initrd] {
            if !path.is_file() {
                return Err(Error::Engine(format!(
                    "guest asset {} is missing: run scripts/setup.sh to build the guest kernel and agent, or set {ASSETS_ENV}",
                    path.display()
                )));
            }
        }
        Ok(assets)
    }
}
