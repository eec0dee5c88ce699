//! Host directories shared into a box (virtio-9p served by QEMU itself; docs/volumes.md), and how
//! their guest paths reach the guest agent on the kernel command line.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Most volumes one box may have: each is a virtio-mmio device, and QEMU's microvm without ACPI
/// has room for 3 beside the box's own (engine/qemu.rs says why).
pub const MAX_VOLUMES: usize = 3;
/// Longest guest path of a volume, in bytes.
pub const MAX_GUEST_PATH_LEN: usize = 256;
/// Most bytes the volumes may take on the kernel command line together (its limit is 2048 and
/// the rest of it needs room).
const MAX_CMDLINE_BYTES: usize = 1024;
/// Guest paths the agent mounts itself (kernel filesystems) or bind-mounts files over: a volume
/// there or below would hide or replace them.
const RESERVED_TREES: [&str; 3] = ["/proc", "/sys", "/dev"];
const RESERVED_EXACT: [&str; 4] = ["/etc", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];

/// A host directory shared live into the box.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// The host directory (absolute; canonicalized when the box is created).
    pub host_path: PathBuf,
    /// Where it appears in the box (absolute, normalized).
    pub guest_path: String,
    /// The box may read but not change it; enforced by QEMU on the host.
    #[serde(default)]
    pub read_only: bool,
}

impl Volume {
    /// A read-write volume.
    pub fn new(host_path: impl Into<PathBuf>, guest_path: impl Into<String>) -> Self {
        Volume { host_path: host_path.into(), guest_path: guest_path.into(), read_only: false }
    }

    /// The same volume, read-only.
    pub fn read_only(self) -> Self {
        Volume { read_only: true, ..self }
    }
}

fn bad<T>(msg: String) -> Result<T> {
    Err(Error::InvalidArgument(msg))
}

/// Checks every volume: count, host directories, guest paths, duplicates and nesting.
pub fn validate(volumes: &[Volume]) -> Result<()> {
    if volumes.len() > MAX_VOLUMES {
        return bad(format!("{} volumes asked for: a box may have at most {MAX_VOLUMES}", volumes.len()));
    }
    for v in volumes {
        validate_host_path(&v.host_path)?;
        validate_guest_path(&v.guest_path)?;
    }
    for (i, a) in volumes.iter().enumerate() {
        for b in &volumes[i + 1..] {
            if a.guest_path == b.guest_path {
                return bad(format!("two volumes are mounted at '{}': give each volume its own guest path", a.guest_path));
            }
            let (outer, inner) = if a.guest_path.len() < b.guest_path.len() { (a, b) } else { (b, a) };
            if is_within(&inner.guest_path, &outer.guest_path) {
                return bad(format!(
                    "volume at '{}' is inside the volume at '{}': volumes may not nest; use sibling guest paths",
                    inner.guest_path, outer.guest_path
                ));
            }
        }
    }
    let encoded: usize = volumes.iter().map(|v| cmdline_arg(0, v).len() + 1).sum();
    if encoded > MAX_CMDLINE_BYTES {
        return bad(format!("the volumes' guest paths are too long together ({encoded} encoded bytes, at most {MAX_CMDLINE_BYTES}): use shorter guest paths or fewer volumes"));
    }
    Ok(())
}

fn validate_host_path(path: &Path) -> Result<()> {
    let shown = path.display();
    if !path.is_absolute() {
        return bad(format!("volume host path '{shown}' must be absolute (e.g. /home/me/data)"));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bad(format!("volume host path '{shown}' is not a directory: share the directory that holds it")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bad(format!("volume host path '{shown}' does not exist: create the directory first"))
        }
        Err(e) => bad(format!("volume host path '{shown}' cannot be used: {e}")),
    }
}

fn validate_guest_path(path: &str) -> Result<()> {
    if !path.starts_with('/') {
        return bad(format!("volume guest path '{path}' must be absolute (e.g. /mnt/data)"));
    }
    if path == "/" {
        return bad("volume guest path '/' would replace the box's root: use a directory such as /mnt/data".into());
    }
    if path.len() > MAX_GUEST_PATH_LEN || path.contains('\0') {
        return bad(format!("volume guest path '{path}' must be at most {MAX_GUEST_PATH_LEN} bytes without NUL"));
    }
    let normalized = normalize(path);
    if normalized != path {
        return bad(format!("volume guest path '{path}' is not normalized: write it as '{normalized}'"));
    }
    if let Some(tree) = RESERVED_TREES.iter().find(|t| is_within(path, t)) {
        return bad(format!("volume guest path '{path}' is over the box's {tree}, which the box mounts itself: choose another path"));
    }
    if RESERVED_EXACT.contains(&path) {
        return bad(format!("volume guest path '{path}' would hide the box's network files (/etc/hosts, /etc/resolv.conf): choose another path"));
    }
    Ok(())
}

/// `path` with `.`, `..` (which stops at the root), repeated and trailing slashes resolved.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether `path` is `root` or below it.
fn is_within(path: &str, root: &str) -> bool {
    path == root || path.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'))
}

/// The volumes with their host paths canonicalized (symlinks resolved once, at create), so every
/// later start shares the same directory.
pub fn canonicalize(volumes: &[Volume]) -> Result<Vec<Volume>> {
    volumes
        .iter()
        .map(|v| {
            let host_path = std::fs::canonicalize(&v.host_path)
                .map_err(|e| Error::InvalidArgument(format!("volume host path '{}' cannot be resolved: {e}", v.host_path.display())))?;
            Ok(Volume { host_path, ..v.clone() })
        })
        .collect()
}

/// The 9p mount tag of the volume at `index` (what the guest mounts it by).
pub fn mount_tag(index: usize) -> String {
    format!("boxlite{index}")
}

/// The kernel command line argument for the volume at `index`:
/// `boxlite.volume=TAG,ro|rw,PATH` with PATH percent-encoded beyond `[A-Za-z0-9/._-]`, so spaces,
/// commas and odd bytes are safe.
pub fn cmdline_arg(index: usize, v: &Volume) -> String {
    let mut path = String::new();
    for b in v.guest_path.bytes() {
        if b.is_ascii_alphanumeric() || b"/._-".contains(&b) {
            path.push(b as char);
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    format!("boxlite.volume={},{},{path}", mount_tag(index), if v.read_only { "ro" } else { "rw" })
}

/// The value of a QEMU option with its commas doubled, as QEMU's option parser wants.
pub fn qemu_escape(value: &str) -> String {
    value.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(volumes: &[Volume]) -> String {
        validate(volumes).unwrap_err().to_string()
    }

    #[test]
    fn good_volumes_pass() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        validate(&[Volume::new(d, "/mnt/a"), Volume::new(d, "/mnt/b").read_only(), Volume::new(d, "/data b")]).unwrap();
    }

    #[test]
    fn host_paths_must_be_existing_absolute_directories() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let missing = dir.path().join("nope");
        assert!(err(&[Volume::new("rel/dir", "/mnt")]).contains("'rel/dir' must be absolute"));
        assert!(err(&[Volume::new(&missing, "/mnt")]).contains("does not exist"));
        assert!(err(&[Volume::new(&file, "/mnt")]).contains("is not a directory"));
    }

    #[test]
    fn guest_paths_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let v = |g: &str| err(&[Volume::new(dir.path(), g)]);
        assert!(v("mnt").contains("must be absolute"));
        assert!(v("/").contains("replace the box's root"));
        assert!(v("/mnt/../etc/x").contains("write it as '/etc/x'"));
        assert!(v("/mnt//a").contains("write it as '/mnt/a'"));
        assert!(v("/mnt/a/").contains("write it as '/mnt/a'"));
        assert!(v("/mnt/./a").contains("not normalized"));
        assert!(v("/proc").contains("over the box's /proc"));
        assert!(v("/dev/shm/x").contains("over the box's /dev"));
        assert!(v("/etc/resolv.conf").contains("network files"));
        assert!(v(&format!("/{}", "a".repeat(300))).contains("at most 256 bytes"));
        validate(&[Volume::new(dir.path(), "/devices"), Volume::new(dir.path(), "/etc/app")]).unwrap();
    }

    #[test]
    fn duplicates_nesting_and_count_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(err(&[Volume::new(d, "/mnt"), Volume::new(d, "/mnt")]).contains("two volumes are mounted at '/mnt'"));
        assert!(err(&[Volume::new(d, "/mnt/a/b"), Volume::new(d, "/mnt/a")]).contains("'/mnt/a/b' is inside the volume at '/mnt/a'"));
        validate(&[Volume::new(d, "/mnt/a"), Volume::new(d, "/mnt/ab")]).unwrap();
        let many: Vec<Volume> = (0..4).map(|i| Volume::new(d, format!("/v{i}"))).collect();
        assert!(err(&many).contains("at most 3"));
        let long: Vec<Volume> = (0..3).map(|i| Volume::new(d, format!("/{i}{}", " ".repeat(200)))).collect();
        assert!(err(&long).contains("too long together"));
    }

    #[test]
    fn guest_paths_are_encoded_for_the_command_line() {
        let v = Volume::new("/h", "/mnt/my data,1%").read_only();
        assert_eq!(cmdline_arg(3, &v), "boxlite.volume=boxlite3,ro,/mnt/my%20data%2C1%25");
        assert_eq!(cmdline_arg(0, &Volume::new("/h", "/a_b.c-d")), "boxlite.volume=boxlite0,rw,/a_b.c-d");
        assert_eq!(qemu_escape("/a,b"), "/a,,b");
    }

    #[test]
    fn canonicalize_resolves_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let out = canonicalize(&[Volume::new(dir.path().join("link"), "/mnt")]).unwrap();
        assert_eq!(out[0].host_path, std::fs::canonicalize(&real).unwrap());
    }
}
