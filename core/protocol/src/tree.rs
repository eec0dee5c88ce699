//! The tar form of a file tree, as both sides of a copy write it: regular files, directories and
//! symlinks (as symlinks), with permission bits and mtime (to the second). Hard links are read as
//! the regular files they are; fifos, sockets and devices are skipped (they hold no data).

use std::io::{self, Read, Write};
use std::path::Path;

/// Appends `path` (a final symlink not followed) under the archive name `name`, and everything
/// below it, in name order. Directories for which `descend` says no are added empty.
pub fn append_tree<W: Write>(builder: &mut tar::Builder<W>, name: &Path, path: &Path, descend: &dyn Fn(&Path) -> bool) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    let kind = meta.file_type();
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    if kind.is_dir() {
        header.set_size(0);
        builder.append_data(&mut header, name, io::empty())?;
        if !descend(path) {
            return Ok(());
        }
        let mut children: Vec<_> = std::fs::read_dir(path)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
        children.sort();
        for child in children {
            match append_tree(builder, &name.join(&child), &path.join(&child), descend) {
                // Gone since it was listed: a tree that changes while copied.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                r => r?,
            }
        }
    } else if kind.is_symlink() {
        header.set_size(0);
        builder.append_link(&mut header, name, std::fs::read_link(path)?)?;
    } else if kind.is_file() {
        let file = std::fs::File::open(path)?;
        let size = meta.len();
        builder.append_data(&mut header, name, Exactly { inner: file, left: size })?;
    }
    Ok(())
}

/// Exactly `left` bytes of `inner`: cut off if it grew since it was measured, padded with zeros
/// if it shrank (a tar entry's size is written before its data).
struct Exactly<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = match self.inner.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_keeps_modes_mtimes_and_symlinks_and_skips_fifos() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("bx-tree-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("t/sub")).unwrap();
        std::fs::write(dir.join("t/sub/f"), b"data").unwrap();
        std::fs::set_permissions(dir.join("t/sub/f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("t/link")).unwrap();
        nix_mkfifo(&dir.join("t/fifo"));
        let mut b = tar::Builder::new(Vec::new());
        append_tree(&mut b, Path::new("t"), &dir.join("t"), &|_| true).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut names = Vec::new();
        for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            names.push((e.path().unwrap().display().to_string(), h.entry_type(), h.mode().unwrap() & 0o7777));
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names[0].0, "t");
        assert!(names.iter().any(|(n, t, _)| n == "t/link" && *t == tar::EntryType::Symlink));
        assert!(names.iter().any(|(n, t, m)| n == "t/sub/f" && *t == tar::EntryType::Regular && *m == 0o600));
        assert!(!names.iter().any(|(n, _, _)| n == "t/fifo"), "{names:?}");
    }

    fn nix_mkfifo(path: &Path) {
        let ok = std::process::Command::new("mkfifo").arg(path).status().unwrap().success();
        assert!(ok);
    }
}
