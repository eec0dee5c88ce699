//! The guest kernel and initramfs every VM boots. Built by the project's setup (or shipped beside
//! the library in a package), never downloaded.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Environment variable naming the directory that holds `vmlinux` and `initramfs.cpio`.
pub const ASSETS_ENV: &str = "BOXLITE_ASSETS_DIR";
/// Name of the assets directory a package ships next to the library (`libboxlite.so`, the Node addon).
pub const BESIDE_LIBRARY_DIR: &str = "boxlite-guest";

/// Paths of the guest boot assets.
#[derive(Clone, Debug)]
pub struct GuestAssets {
    /// Uncompressed PVH kernel.
    pub kernel: PathBuf,
    /// Initramfs whose /init is the agent.
    pub initrd: PathBuf,
}

/// Every directory searched for guest assets when none is given, in order: `$BOXLITE_ASSETS_DIR`
/// alone when set, else `boxlite-guest/` beside the library, then the cache dir.
pub fn search_dirs() -> Vec<PathBuf> {
    if std::env::var_os(ASSETS_ENV).is_some_and(|d| !d.is_empty()) {
        vec![assets_dir()]
    } else {
        beside_library().into_iter().chain([assets_dir()]).collect()
    }
}

/// The cache assets directory: `$XDG_CACHE_HOME/boxlite/assets`, else `~/.cache/boxlite/assets`
/// (where `scripts/setup.sh` puts them). `$BOXLITE_ASSETS_DIR` overrides it.
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

/// `boxlite-guest/` beside the shared object (or executable) this code was loaded from, so a
/// packaged library finds the assets it ships without any configuration.
fn beside_library() -> Option<PathBuf> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address and fills `info`; any address is allowed.
    let found = unsafe { libc::dladdr(beside_library as *const libc::c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: on success dli_fname is a NUL-terminated path owned by the dynamic loader.
    let file = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let file = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(file.to_bytes()));
    let file = std::fs::canonicalize(file).ok()?;
    Some(file.parent()?.join(BESIDE_LIBRARY_DIR))
}

impl GuestAssets {
    /// The directory the assets were found in (the supervisor binary may sit there too).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.kernel.parent().map(Path::to_path_buf).into_iter().collect()
    }

    /// Finds both files: in `dir` when given, else in `$BOXLITE_ASSETS_DIR`, else in
    /// `boxlite-guest/` beside the library, else in the cache dir; or says how to get them.
    pub fn find(dir: Option<&Path>) -> Result<Self> {
        let candidates: Vec<PathBuf> = match dir {
            Some(dir) => vec![dir.to_path_buf()],
            None => search_dirs(),
        };
        for dir in &candidates {
            let assets = GuestAssets { kernel: dir.join("vmlinux"), initrd: dir.join("initramfs.cpio") };
            if assets.kernel.is_file() && assets.initrd.is_file() {
                return Ok(assets);
            }
        }
        let searched: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
        Err(Error::Engine(format!(
            "the guest kernel and initramfs (vmlinux, initramfs.cpio) are missing from {}: run scripts/setup.sh to build them, or set {ASSETS_ENV}",
            searched.join(" and ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_assets_name_every_place_searched() {
        let dir = tempfile::tempdir().unwrap();
        let err = GuestAssets::find(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("scripts/setup.sh"), "{err}");
    }

    #[test]
    fn the_library_location_is_known() {
        // In a test binary the "library" is the executable itself.
        let dir = beside_library().expect("dladdr finds this code");
        assert_eq!(dir.file_name().unwrap(), BESIDE_LIBRARY_DIR);
        let exe = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(dir.parent(), exe.parent());
    }
}
