//! Building the base ext4 disk of an image from a staging tree with e2fsprogs (`mke2fs -d`), then
//! applying with debugfs whatever the unprivileged staging tree could not hold.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::atomic::TempPath;
use super::layers::{Fixup, TreeStats};
use crate::error::{Error, Result};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// Free space every box gets on top of the image, so it can install and write.
pub(crate) const HEADROOM_BYTES: u64 = 2 * GIB;
/// Filesystem label; the guest can find the disk by it.
pub(crate) const LABEL: &str = "boxlite-root";
/// Bytes an inode costs on ext4 (inode table entry), counted on top of content.
const INODE_BYTES: u64 = 256;

/// The disk size for a tree: content * 1.3 + 2 GiB headroom, rounded up to a MiB. The file is
/// sparse, so the headroom costs nothing until a box writes.
pub(crate) fn disk_size(stats: &TreeStats) -> u64 {
    let content = stats.allocated_bytes.max(stats.content_bytes) + stats.inodes * INODE_BYTES;
    let size = content + content * 3 / 10 + HEADROOM_BYTES;
    size.div_ceil(MIB) * MIB
}

/// Makes an ext4 filesystem of `size` bytes in a new sparse file `out`, populated from `staging`.
/// `fixups` (ownership, modes, device nodes by image path) are applied afterwards with debugfs.
pub(crate) fn build(
    staging: &Path,
    out: &Path,
    size: u64,
    fixups: &[(String, Fixup)],
) -> Result<()> {
    let mke2fs = find_tool("mke2fs")?;
    let file = super::atomic::create_private(out)
        .map_err(|e| Error::storage("cannot create disk", out, e))?;
    file.set_len(size)
        .map_err(|e| Error::storage("cannot size disk", out, e))?;
    drop(file);
    let output = Command::new(&mke2fs)
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(staging)
        // Initialize everything now so the guest does not spend its first minutes zeroing tables;
        // root_owner because mke2fs otherwise gives / to whoever runs it.
        .args([
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0",
            "-L",
            LABEL,
        ])
        .arg(out)
        .arg(format!("{}k", size / 1024))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Engine(format!("cannot run {}: {e}", mke2fs.display())))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("invalid option") {
            return Err(Error::Engine(format!(
                "{} is too old to populate a filesystem (-d needs e2fsprogs 1.43 or newer); upgrade e2fsprogs",
                mke2fs.display()
            )));
        }
        return Err(Error::storage(
            "mke2fs failed building",
            out,
            std::io::Error::other(format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                stderr.trim()
            )),
        ));
    }
    if !fixups.is_empty() {
        apply_fixups(out, fixups)?;
    }
    Ok(())
}

/// Writes the debugfs script for `fixups`, plus the files holding xattr values (binary, so read
/// by `ea_set -f`), named by `value_file`. Paths are quoted; debugfs cannot express names with
/// quotes or newlines, so those keep the staging metadata (with a warning) — which never carries
/// setuid/setgid bits, capabilities or device numbers, so nothing privileged is lost to it.
pub(crate) fn fixup_script(
    fixups: &[(String, Fixup)],
    value_file: impl Fn(usize) -> PathBuf,
) -> (String, Vec<(PathBuf, Vec<u8>)>) {
    let mut script = String::new();
    let mut values = Vec::new();
    for (path, fixup) in fixups {
        if path.contains(['"', '\n', '\\']) {
            tracing::warn!(
                path,
                "cannot express this path to debugfs; its ownership/mode stay as staged"
            );
            continue;
        }
        if let Some((major, minor)) = fixup.device {
            let kind = if fixup.mode & libc::S_IFMT == libc::S_IFBLK {
                'b'
            } else {
                'c'
            };
            // debugfs's mknod takes a name in the current directory, not a path.
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            let parent = if parent.is_empty() { "/" } else { parent };
            let _ = writeln!(script, "rm \"{path}\"");
            let _ = writeln!(script, "cd \"{parent}\"");
            let _ = writeln!(script, "mknod \"{name}\" {kind} {major} {minor}");
            let _ = writeln!(script, "cd /");
        }
        let _ = writeln!(script, "sif \"{path}\" mode 0{:o}", fixup.mode);
        let _ = writeln!(script, "sif \"{path}\" uid {}", fixup.uid);
        let _ = writeln!(script, "sif \"{path}\" gid {}", fixup.gid);
        for (name, value) in &fixup.xattrs {
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                tracing::warn!(path, xattr = name, "cannot express this xattr name to debugfs; dropping it");
                continue;
            }
            let file = value_file(values.len());
            let _ = writeln!(script, "ea_set -f \"{}\" \"{path}\" {name}", file.display());
            values.push((file, value.clone()));
        }
    }
    (script, values)
}

fn apply_fixups(disk: &Path, fixups: &[(String, Fixup)]) -> Result<()> {
    let debugfs = find_tool("debugfs")?;
    let script_path = disk.with_extension("debugfs");
    let (script, values) = fixup_script(fixups, |i| disk.with_extension(format!("xattr{i}")));
    let _cleanup: Vec<TempPath> = std::iter::once(script_path.clone())
        .chain(values.iter().map(|(path, _)| path.clone()))
        .map(TempPath::new)
        .collect();
    std::fs::write(&script_path, script)
        .map_err(|e| Error::storage("cannot write", &script_path, e))?;
    for (path, value) in &values {
        std::fs::write(path, value).map_err(|e| Error::storage("cannot write", path, e))?;
    }
    let output = Command::new(&debugfs)
        .arg("-w")
        .arg("-f")
        .arg(&script_path)
        .arg(disk)
        .stdin(Stdio::null())
        .output();
    let output =
        output.map_err(|e| Error::Engine(format!("cannot run {}: {e}", debugfs.display())))?;
    // debugfs exits 0 even when commands fail; failures show up on stderr, after its banner.
    let errors: Vec<&str> = std::str::from_utf8(&output.stderr)
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect();
    if !output.status.success() || !errors.is_empty() {
        return Err(Error::storage(
            "debugfs failed to set ownership on",
            disk,
            std::io::Error::other(errors.join("; ")),
        ));
    }
    Ok(())
}

/// Finds an e2fsprogs tool on PATH or in the sbin directories non-root PATHs often lack.
fn find_tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Engine(format!(
                "{name} not found; it builds image disks: install e2fsprogs (Debian/Ubuntu: apt-get install e2fsprogs)"
            ))
        })
}

#[cfg(test)]
pub(crate) mod tests {
    /// e2fsck finds nothing to fix on `disk`.
    pub(crate) fn assert_fsck_clean(disk: &std::path::Path) {
        let fsck = std::process::Command::new(super::find_tool("e2fsck").unwrap()).arg("-fn").arg(disk).output().unwrap();
        assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
    }

    use super::*;

    /// What `debugfs -R request` prints about `disk`.
    pub(crate) fn debugfs(disk: &Path, request: &str) -> String {
        let out = Command::new(find_tool("debugfs").unwrap())
            .args(["-R", request])
            .arg(disk)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A `vfs_cap_data` v2 granting cap_net_raw (bit 13), as `setcap cap_net_raw+ep` writes it.
    pub(crate) const CAP_NET_RAW: [u8; 20] = [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    #[test]
    fn size_adds_a_third_and_headroom() {
        let stats = TreeStats {
            content_bytes: 100 * MIB,
            allocated_bytes: 90 * MIB,
            inodes: 0,
        };
        assert_eq!(disk_size(&stats), 130 * MIB + HEADROOM_BYTES);
        assert_eq!(disk_size(&TreeStats::default()), HEADROOM_BYTES);
    }

    #[test]
    fn script_quotes_paths_and_makes_devices() {
        let fixups = vec![
            (
                "/dev/null".to_string(),
                Fixup {
                    uid: 0,
                    gid: 0,
                    mode: 0o020666,
                    device: Some((1, 3)),
                    xattrs: vec![],
                },
            ),
            (
                "/a b".to_string(),
                Fixup {
                    uid: 5,
                    gid: 6,
                    mode: 0o100644,
                    device: None,
                    xattrs: vec![],
                },
            ),
            (
                "/bad\"name".to_string(),
                Fixup {
                    uid: 0,
                    gid: 0,
                    mode: 0o100644,
                    device: None,
                    xattrs: vec![],
                },
            ),
        ];
        let (script, values) = fixup_script(&fixups, |i| PathBuf::from(format!("/v{i}")));
        assert!(values.is_empty());
        assert!(
            script.contains("rm \"/dev/null\"\ncd \"/dev\"\nmknod \"null\" c 1 3\ncd /\nsif \"/dev/null\" mode 020666\n"),
            "{script}"
        );
        assert!(script.contains("sif \"/a b\" uid 5\nsif \"/a b\" gid 6\n"));
        assert!(!script.contains("bad"));
    }

    #[test]
    fn builds_a_disk_and_applies_fixups() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("staging");
        std::fs::create_dir_all(staging.join("etc")).unwrap();
        std::fs::write(staging.join("etc/hostname"), b"box\n").unwrap();
        std::fs::write(staging.join("etc/with space"), b"x").unwrap();
        std::fs::write(staging.join("null"), b"").unwrap();
        let disk = dir.path().join("disk.ext4");
        let fixups = vec![
            (
                "/etc/with space".to_string(),
                Fixup {
                    uid: 1000,
                    gid: 100,
                    mode: 0o104755,
                    device: None,
                    xattrs: vec![("security.capability".into(), CAP_NET_RAW.to_vec())],
                },
            ),
            (
                "/null".to_string(),
                Fixup {
                    uid: 0,
                    gid: 5,
                    mode: 0o020620,
                    device: Some((1, 3)),
                    xattrs: vec![],
                },
            ),
        ];
        build(&staging, &disk, 64 * MIB, &fixups).unwrap();
        assert_eq!(std::fs::metadata(&disk).unwrap().len(), 64 * MIB);
        assert_eq!(debugfs(&disk, "cat /etc/hostname"), "box\n");
        let stat = debugfs(&disk, "stat \"/etc/with space\"");
        assert!(stat.contains("security.capability (20) = 01 00 00 02 00 20 00 00"), "{stat}");
        assert!(
            stat.contains("Mode:  04755")
                && stat.contains("User:  1000")
                && stat.contains("Group:   100"),
            "{stat}"
        );
        let stat = debugfs(&disk, "stat /null");
        assert!(
            stat.contains("Type: character special") && stat.contains("Mode:  0620"),
            "{stat}"
        );
        assert!(stat.contains("Device major/minor number: 01:03"), "{stat}");
        let label = debugfs(&disk, "stats");
        assert!(
            label.contains("Filesystem volume name:   boxlite-root"),
            "{label}"
        );
        assert_fsck_clean(&disk);
        let root = debugfs(&disk, "stat /");
        assert!(
            root.contains("User:     0") && root.contains("Group:     0"),
            "{root}"
        );
    }
}
