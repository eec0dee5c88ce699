//! Growing the box's ext4 root into a larger disk (the host asked for `disk_size_gb`): online,
//! at boot, only when the device is larger than the filesystem, so it happens once per box.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Instant;

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

const EXT4_MAGIC: u16 = 0xEF53;
const INCOMPAT_64BIT: u32 = 0x80;

/// Block size and block count from an ext4 superblock (the 1024 bytes at offset 1024).
fn superblock_size(sb: &[u8; 1024]) -> Result<(u64, u64), String> {
    let le32 = |off: usize| u32::from_le_bytes(sb[off..off + 4].try_into().unwrap_or_default());
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != EXT4_MAGIC {
        return Err("the box disk holds no ext4 filesystem".into());
    }
    let log = le32(0x18);
    if log > 6 {
        return Err(format!("the box disk's superblock has a bad block size (log {log})"));
    }
    let mut blocks = u64::from(le32(0x04));
    if le32(0x60) & INCOMPAT_64BIT != 0 {
        blocks |= u64::from(le32(0x150)) << 32;
    }
    Ok((1024 << log, blocks))
}

/// Grows the filesystem mounted at `mountpoint` from `device` to the device's size. Returns
/// `(old_blocks, new_blocks, ms)` when it grew.
pub fn grow_to_device(device: &str, mountpoint: &str) -> Result<Option<(u64, u64, u128)>, String> {
    let dev = File::open(device).map_err(|e| format!("open {device}: {e}"))?;
    let mut device_bytes = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer it is given.
    unsafe { blkgetsize64(dev.as_raw_fd(), &mut device_bytes) }.map_err(|e| format!("size of {device}: {e}"))?;
    let mut sb = [0u8; 1024];
    dev.read_exact_at(&mut sb, 1024).map_err(|e| format!("read the superblock of {device}: {e}"))?;
    let (block_size, blocks) = superblock_size(&sb)?;
    let want = device_bytes / block_size;
    if want <= blocks {
        return Ok(None);
    }
    let started = Instant::now();
    let root = File::open(mountpoint).map_err(|e| format!("open {mountpoint}: {e}"))?;
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 (the new block count) through the pointer.
    unsafe { ext4_resize_fs(root.as_raw_fd(), &want) }.map_err(|e| format!("grow the filesystem on {device} to {want} blocks: {e}"))?;
    Ok(Some((blocks, want, started.elapsed().as_millis())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_sizes_are_read() {
        let mut sb = [0u8; 1024];
        assert!(superblock_size(&sb).is_err());
        sb[0x38..0x3a].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes()); // 4096-byte blocks
        sb[0x04..0x08].copy_from_slice(&1000u32.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(superblock_size(&sb).unwrap(), (4096, 1000));
        sb[0x60..0x64].copy_from_slice(&INCOMPAT_64BIT.to_le_bytes());
        assert_eq!(superblock_size(&sb).unwrap(), (4096, 1000 + (1 << 32)));
    }
}
