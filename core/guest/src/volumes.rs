//! Host volumes: virtio-9p shares served by QEMU, mounted inside the box at boot.
//!
//! Command line key (set by the host, one per volume): `boxlite.volume=TAG,ro|rw,PATH`, PATH
//! percent-encoded.

use crate::init::ROOTFS;
use nix::mount::{mount, MsFlags};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

/// 9p mount options: no caching, so a write on either side is seen by the other at once; the
/// largest message the virtio transport carries (the kernel's limit for 6.1), for throughput.
const MOUNT_OPTIONS: &str = "trans=virtio,version=9p2000.L,cache=none,msize=512000";

#[derive(Debug, PartialEq)]
pub struct VolumeMount {
    pub tag: String,
    pub read_only: bool,
    pub guest_path: String,
}

pub fn from_cmdline(cmdline: &str) -> Result<Vec<VolumeMount>, String> {
    cmdline.split_whitespace().filter_map(|a| a.strip_prefix("boxlite.volume=")).map(parse).collect()
}

fn parse(arg: &str) -> Result<VolumeMount, String> {
    let bad = || format!("boxlite.volume={arg}: expected TAG,ro|rw,PATH");
    let mut parts = arg.splitn(3, ',');
    let (Some(tag), Some(mode), Some(path)) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        _ => return Err(bad()),
    };
    let guest_path = percent_decode(path).ok_or_else(bad)?;
    if !guest_path.starts_with('/') || guest_path.contains('\0') || tag.is_empty() {
        return Err(bad());
    }
    Ok(VolumeMount { tag: tag.into(), read_only, guest_path })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The mount point for `guest_path` inside the box, made if missing. Each component is looked
/// at without following it: a symlink in the image could lead outside the box's root (the agent's
/// own root is the initramfs), so one is refused instead.
fn mount_point(guest_path: &str) -> Result<PathBuf, String> {
    let mut path = PathBuf::from(ROOTFS);
    for part in guest_path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(format!("volume {guest_path}: the path must be normalized"));
        }
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let inside = path.strip_prefix(ROOTFS).unwrap_or(&path).display().to_string();
                return Err(format!("volume {guest_path}: /{inside} is a symlink in the image; use a guest path without symlinks"));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("volume {guest_path}: {} is a file in the image, not a directory", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new().mode(0o755).create(&path).map_err(|e| format!("volume {guest_path}: mkdir: {e}"))?;
            }
            Err(e) => return Err(format!("volume {guest_path}: {e}")),
        }
    }
    Ok(path)
}

/// Mounts every volume; read-only ones read-only here too (QEMU refuses their writes anyway).
/// nosuid, nodev: files from the host are data, never privileges inside the box.
pub fn mount_all(volumes: &[VolumeMount]) -> Result<(), String> {
    for v in volumes {
        let target = mount_point(&v.guest_path)?;
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if v.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(Some(v.tag.as_str()), &target, Some("9p"), flags, Some(MOUNT_OPTIONS))
            .map_err(|e| format!("volume {}: mount 9p {}: {e}", v.guest_path, v.tag))?;
    }
    Ok(())
}

/// Detaches every 9p mount (at shutdown, so the box disk can be unmounted cleanly).
pub fn unmount_all() {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        if let (Some(_), Some(target), Some("9p")) = (fields.next(), fields.next(), fields.next()) {
            // /proc/mounts escapes spaces and odd bytes as octal \NNN.
            let _ = nix::mount::umount2(unescape_octal(target).as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes.get(i + 1..i + 4).and_then(|d| std::str::from_utf8(d).ok()).and_then(|d| u8::from_str_radix(d, 8).ok());
        match (bytes[i], code) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_from_the_command_line() {
        let v = from_cmdline("quiet boxlite.volume=boxlite0,rw,/mnt/a boxlite.volume=boxlite1,ro,/my%20data%2C1%25 panic=-1").unwrap();
        assert_eq!(v, vec![
            VolumeMount { tag: "boxlite0".into(), read_only: false, guest_path: "/mnt/a".into() },
            VolumeMount { tag: "boxlite1".into(), read_only: true, guest_path: "/my data,1%".into() },
        ]);
        for bad in ["boxlite.volume=t,rx,/a", "boxlite.volume=t,ro", "boxlite.volume=t,ro,rel", "boxlite.volume=t,ro,/a%2", "boxlite.volume=t,ro,/a%00"] {
            assert!(from_cmdline(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mount_table_names_are_unescaped() {
        assert_eq!(unescape_octal("/rootfs/my\\040data"), "/rootfs/my data");
        assert_eq!(unescape_octal("/a\\\\b"), "/a\\\\b");
    }
}
