//! PID 1 duties: kernel filesystems, the box disk, volumes, reaping, power-off.

use nix::mount::{mount, MsFlags};
use std::fs;
use std::io::Write;
use std::path::Path;

/// Where the box disk (the image rootfs) is mounted; commands run chrooted here.
pub const ROOTFS: &str = "/rootfs";

/// PID 1's set-up: kernel filesystems, the network, and (unless this boot makes a template) the
/// box disk.
pub fn setup() -> Result<(), String> {
    let none: Option<&str> = None;
    for (src, target, fstype, flags) in [
        ("proc", "/proc", "proc", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC),
        ("sysfs", "/sys", "sysfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC),
        ("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID),
    ] {
        mount_at(src, target, fstype, flags, none)?;
    }
    // One devpts instance, mounted in the agent's root (where it opens PTYs, so ptsname paths
    // resolve) and bound into the box (where commands use them).
    mount_at("devpts", "/dev/pts", "devpts", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("ptmxmode=0666,mode=0620"))?;
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    crate::net::setup(&crate::net::NetConfig::from_cmdline(&cmdline)?).map_err(|e| format!("network: {e}"))?;
    if cmdline.split_whitespace().any(|a| a == TEMPLATE_ARG) {
        // A template: saved idle with no box disk; each box restored from it attaches its own.
        return Ok(());
    }
    mount_box_disk(&cmdline)
}

/// On the kernel command line of a guest booted to be saved as a template.
const TEMPLATE_ARG: &str = "boxlite.template=1";

/// Mounts the box disk of a guest restored from a template (the host asks once, right after the
/// restore): the template's block device had a placeholder behind it, so the driver is bound
/// again to read the real disk's size and contents, then the disk is mounted as at a cold boot.
/// A guest that mounted its disk at boot has nothing to do.
pub fn attach_box_disk() -> Result<(), String> {
    let mounts = fs::read_to_string("/proc/self/mounts").map_err(|e| format!("read /proc/self/mounts: {e}"))?;
    if mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(ROOTFS)) {
        return Ok(());
    }
    let began = std::time::Instant::now();
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let device = root_device(&cmdline);
    rebind_block_driver(&device)?;
    let rebound = began.elapsed().as_millis();
    mount_box_disk(&cmdline)?;
    // The host side reads what attaching costs from the console log.
    console(&format!("boxlite-guest: attached the box disk in {} ms (driver bound again in {rebound} ms)", began.elapsed().as_millis()));
    Ok(())
}

/// Unbinds and binds again the virtio-blk driver of `device` (`/dev/vda`), then waits for its node.
fn rebind_block_driver(device: &str) -> Result<(), String> {
    const DRIVER: &str = "/sys/bus/virtio/drivers/virtio_blk";
    let name = device.trim_start_matches("/dev/");
    let entries = fs::read_dir(DRIVER).map_err(|e| format!("read {DRIVER}: {e}"))?;
    let bound = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|dev| Path::new(&format!("{DRIVER}/{dev}/block/{name}")).exists())
        .ok_or_else(|| format!("no virtio block device is {device}"))?;
    for op in ["unbind", "bind"] {
        fs::write(format!("{DRIVER}/{op}"), &bound).map_err(|e| format!("{op} {bound} ({device}): {e}"))?;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !Path::new(device).exists() {
        if std::time::Instant::now() > deadline {
            return Err(format!("{device} did not come back within 5 s after rebinding {bound}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(())
}

/// Mounts the box disk on [`ROOTFS`] (grown to its device), the kernel filesystems and the
/// generated name files inside it, and the volumes.
fn mount_box_disk(cmdline: &str) -> Result<(), String> {
    let none: Option<&str> = None;
    let device = root_device(cmdline);
    fs::create_dir_all(ROOTFS).map_err(|e| format!("mkdir {ROOTFS}: {e}"))?;
    // noinit_itable: the base image was built with its inode tables already zeroed, so the
    // kernel must not start a background zeroing thread that would write into every overlay.
    mount(Some(device.as_str()), ROOTFS, Some("ext4"), MsFlags::MS_NOATIME, Some("noinit_itable"))
        .map_err(|e| format!("mount {device} on {ROOTFS}: {e}"))?;
    // The console line is how the host side measures what the growth costs at boot.
    if let Some((from, to, ms)) = crate::disk::grow_to_device(&device, ROOTFS)? {
        console(&format!("boxlite-guest: grew the box filesystem from {from} to {to} blocks in {ms} ms"));
    }
    // The image may lack these directories; creating them in the box disk is harmless.
    let sub = |p: &str| format!("{ROOTFS}{p}");
    mount_at("proc", &sub("/proc"), "proc", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, none)?;
    mount_at("sysfs", &sub("/sys"), "sysfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, none)?;
    mount_at("devtmpfs", &sub("/dev"), "devtmpfs", MsFlags::MS_NOSUID, none)?;
    mount_at("/dev/pts", &sub("/dev/pts"), "", MsFlags::MS_BIND, none)?;
    mount_at("shm", &sub("/dev/shm"), "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777"))?;
    // /dev/ptmx must point at this devpts instance for openpty inside the chroot.
    let ptmx = sub("/dev/ptmx");
    let _ = fs::remove_file(&ptmx);
    let _ = std::os::unix::fs::symlink("pts/ptmx", &ptmx);
    crate::net::bind_files().map_err(|e| format!("network: {e}"))?;
    crate::volumes::mount_all(&crate::volumes::from_cmdline(cmdline)?)
}

fn mount_at(src: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Result<(), String> {
    let path = Path::new(target);
    if !path.is_dir() {
        // A dangling symlink or file in the image where a mount point belongs: replace it.
        let _ = fs::remove_file(path);
        fs::create_dir_all(path).map_err(|e| format!("mkdir {target}: {e}"))?;
    }
    mount(Some(src), target, Some(fstype), flags, data).map_err(|e| format!("mount {fstype} on {target}: {e}"))
}

/// `boxlite.root=DEV` on the kernel command line, default `/dev/vda`.
fn root_device(cmdline: &str) -> String {
    cmdline
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("boxlite.root="))
        .unwrap_or("/dev/vda")
        .to_string()
}

/// Writes to the console (the per-box console log on the host).
pub fn console(msg: &str) {
    if let Ok(mut c) = fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(c, "{msg}");
    }
}

pub fn fatal(msg: &str) -> ! {
    console(msg);
    power_off();
}

/// Syncs and ends the VM: with `reboot=t` and qemu's `-no-reboot`, a reset makes qemu exit.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// PID 1 after the fork: reap every orphan; when the agent itself dies, end the VM.
pub fn reap_forever(agent_pid: i32) -> ! {
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid on any child with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == agent_pid {
            fatal(&format!("boxlite-guest: agent exited (status {status}); powering off"));
        }
        if pid < 0 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Stops every process in the box, unmounts the disk cleanly and powers off.
pub fn shutdown() -> ! {
    // SAFETY: kill(-1) signals every process but PID 1 and the caller.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    // Give the killed processes a moment to release their files so the unmount can succeed.
    std::thread::sleep(std::time::Duration::from_millis(20));
    nix::unistd::sync();
    crate::volumes::unmount_all();
    for sub in ["/dev/shm", "/dev/pts", "/dev", "/sys", "/proc"] {
        let _ = nix::mount::umount2(format!("{ROOTFS}{sub}").as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    if nix::mount::umount(ROOTFS).is_err() {
        // Still busy: at least leave the filesystem clean.
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        let _ = mount(None::<&str>, ROOTFS, None::<&str>, flags, None::<&str>);
    }
    power_off();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_device_defaults_and_overrides() {
        assert_eq!(root_device("console=ttyS0 quiet"), "/dev/vda");
        assert_eq!(root_device("quiet boxlite.root=/dev/vdb panic=-1"), "/dev/vdb");
    }
}
