//! The QEMU engine: `qemu-system-x86_64 -M microvm`, virtio-mmio devices, controlled over QMP.

use super::{check_socket_path, Engine, GuestMemory, VmCommand, VmSpec};
use crate::error::{Error, Result};
use crate::options::{volumes, Accel};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// Environment variable naming the QEMU binary to use.
pub const QEMU_ENV: &str = "BOXLITE_QEMU";
const QEMU_BIN: &str = "qemu-system-x86_64";

/// The kernel argument that gives the guest the rate of QEMU's emulated APIC timer, which counts
/// QEMU's virtual clock in nanoseconds.
const TCG_APIC_TIMER: &str = "lapic_timer_khz=1000000";

/// Under TCG, no address-space randomization in the guest. TCG finds the code it translated by
/// virtual address: a position-independent program (every Debian binary) loaded at a new random
/// address on each exec is translated again each time, libraries and all. At fixed addresses it
/// is translated once: `sh -c true` in a Debian box 40 -> 6 ms, `ls /` 49 -> 8 ms, `python3 -c
/// pass` 128 -> 75 ms (docs/exec.md). The box's boundary is the VM, not ASLR inside it; a box
/// that wants it back for its own services sets `kernel.randomize_va_space` (threat-model.md).
const TCG_NO_ASLR: &str = "norandmaps";

/// The guest CPU under TCG: QEMU's `max` without ERMS and FSRM (fast `rep movsb`). With them the
/// guest kernel's and glibc's copies use `rep movsb`, which TCG runs one byte per step; without,
/// they copy with plain and vector moves: the raw channel 261 -> 698 MB/s, the box disk's
/// sequential read 437 -> 950 MB/s, files.read 148 -> 208-240 MB/s (docs/idle.md).
const TCG_CPU: &str = "max,erms=off,fsrm=off";

/// microvm without ACPI has 8 virtio-mmio transports, on IRQs 5..=12, handed out from the top:
/// the 5th device lands on IRQ 8, which the RTC (`rtc=on`) holds, so its driver cannot get its
/// interrupt (`genirq: Flags mismatch irq 8`). A device the guest has no driver for (the kernel
/// has no virtio-input) takes that transport, leaving 7 usable: rng, serial, blk, net, the inbox
/// and [`crate::options::volumes::MAX_VOLUMES`] volumes, less one: a box with a NIC and 3 volumes
/// has no inbox (its copies in go over the channel). `rtc=off` would free it but costs ~2 s at
/// every boot ("Unable to read current time from RTC", measured). More would need ACPI (a
/// second IOAPIC, 24 transports). docs/volumes.md.
const IRQ8_PLACEHOLDER: &str = "virtio-keyboard-device";
/// Transports the guest can use (the 8 of microvm, less IRQ 8's).
const USABLE_TRANSPORTS: usize = 7;

/// The resolved accelerator a VM runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolvedAccel {
    /// Hardware virtualization.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// The QEMU engine.
pub struct Qemu {
    binary: PathBuf,
    accel: ResolvedAccel,
}

impl Qemu {
    /// Finds QEMU and settles the accelerator. Fails with what to install, or why KVM is unusable
    /// when KVM was asked for explicitly.
    pub fn new(accel: Accel) -> Result<Self> {
        let binary = find_qemu()?;
        let accel = match accel {
            Accel::Tcg => ResolvedAccel::Tcg,
            Accel::Kvm => match kvm_verdict() {
                Ok(()) => ResolvedAccel::Kvm,
                Err(why) => return Err(Error::Engine(format!("KVM was requested but cannot be used: {why}"))),
            },
            Accel::Auto => match kvm_verdict() {
                Ok(()) => ResolvedAccel::Kvm,
                Err(why) => {
                    static WARNED: OnceLock<()> = OnceLock::new();
                    WARNED.get_or_init(|| {
                        tracing::warn!(
                            "KVM cannot be used ({why}); falling back to QEMU TCG software emulation, \
                             which boots and runs guests several times slower"
                        )
                    });
                    ResolvedAccel::Tcg
                }
            },
        };
        Ok(Qemu { binary, accel })
    }

    /// The QEMU binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The accelerator in use.
    pub fn accel(&self) -> ResolvedAccel {
        self.accel
    }

    /// The full QEMU command line for `spec`.
    pub fn args(&self, spec: &VmSpec) -> Vec<String> {
        let p = |path: &Path| path.display().to_string();
        // Under TCG the guest's TSC counts the host's ticks, but the kernel cannot trust its own
        // calibration and falls back to a 250 Hz jiffies clock whose every tick is emulated. Told
        // the host's rate, it keeps the TSC as its clock.
        // QEMU's emulated local APIC timer counts at 1 GHz; told so (our kernel's
        // `lapic_timer_khz`, core/guest/kernel/patches), the kernel skips calibrating it against
        // the PIT (two 100 ms waits that TCG stretches, and often fails, leaving the PIT) and
        // idles tickless on it, at a tenth of the PIT's idle CPU (docs/idle.md).
        // Under KVM the kernel has kvm-clock and calibrates the real APIC quickly: nothing to add.
        let (accel, cpu, extra_cmdline) = match self.accel {
            ResolvedAccel::Kvm => ("kvm", "host", String::new()),
            ResolvedAccel::Tcg => ("tcg,thread=multi", TCG_CPU, match host_tsc_khz() {
                Some(khz) => format!(" {TCG_APIC_TIMER} {TCG_NO_ASLR} tsc_early_khz={khz} tsc=reliable"),
                None => format!(" {TCG_APIC_TIMER} {TCG_NO_ASLR}"),
            }),
        };
        let (agent, output) = (p(&spec.agent_socket()), p(&spec.output_socket()));
        let net_cmdline = if spec.network { format!(" {}", crate::net::guest_cmdline()) } else { String::new() };
        let volume_cmdline: String = spec.volumes.iter().enumerate().map(|(i, v)| format!(" {}", volumes::cmdline_arg(i, v))).collect();
        let (ram, template_cmdline, drive) = match &spec.memory {
            GuestMemory::Private => (format!("memory-backend-ram,id=ram,size={}M", spec.memory_mib), "", qcow2_drive(&spec.disk)),
            // No box disk yet: a device that reads zeros holds the place of the one each box
            // restored from the template brings (same device, so the saved state fits it).
            GuestMemory::TemplateSource(file) => (
                format!("memory-backend-file,id=ram,size={}M,mem-path={},share=on", spec.memory_mib, volumes::qemu_escape(&p(file))),
                " boxlite.template=1",
                "driver=null-co,read-zeroes=on,size=1M,if=none,id=root".into(),
            ),
            GuestMemory::FromTemplate(file) => (
                format!("memory-backend-file,id=ram,size={}M,mem-path={},share=off", spec.memory_mib, volumes::qemu_escape(&p(file))),
                "",
                qcow2_drive(&spec.disk),
            ),
        };
        let mut args: Vec<String> = vec![
            // rtc=on: without it every boot waits ~2 s on reading the clock (measured).
            "-M".into(), "microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=off".into(),
            "-accel".into(), accel.into(),
            "-cpu".into(), cpu.into(),
            "-smp".into(), spec.cpus.to_string(),
            "-m".into(), spec.memory_mib.to_string(),
            "-object".into(), ram,
            "-machine".into(), "memory-backend=ram".into(),
            "-nodefaults".into(), "-no-user-config".into(), "-nographic".into(), "-no-reboot".into(),
            // The VM process may not spawn programs or raise privileges, whatever the guest does.
            "-sandbox".into(), "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into(),
            "-chardev".into(), format!("file,id=console,path={}", p(&spec.console_log())),
            "-serial".into(), "chardev:console".into(),
            "-kernel".into(), p(&spec.kernel),
            "-initrd".into(), p(&spec.initrd),
            "-append".into(), format!(
                "console=ttyS0 quiet reboot=t panic=-1 boxlite.root=/dev/vda boxlite.hostname={}{net_cmdline}{volume_cmdline}{extra_cmdline}{template_cmdline}",
                spec.hostname
            ),
            "-device".into(), "virtio-rng-device".into(),
            "-device".into(), "virtio-serial-device".into(),
            "-chardev".into(), format!("socket,id=agent,path={agent},server=on,wait=off"),
            "-device".into(), format!("virtserialport,chardev=agent,name={}", boxlite_protocol::AGENT_PORT_NAME),
            "-chardev".into(), format!("socket,id=output,path={output},server=on,wait=off"),
            "-device".into(), format!("virtserialport,chardev=output,name={}", boxlite_protocol::output_lane::PORT_NAME),
            "-drive".into(), drive,
            "-device".into(), "virtio-blk-device,drive=root".into(),
            "-qmp".into(), format!("unix:{},server=on,wait=off", p(&qmp_socket(&spec.box_dir))),
        ];
        if spec.incoming.is_some() {
            // Load the saved memory instead of booting; the -kernel/-initrd above only shape
            // the machine (what they load is overwritten). A template's RAM is not in its saved
            // state (it stayed in the file) and only a VM with `x-ignore-shared` set reads such
            // a stream: QEMU 7.2 has no flag for it, so the supervisor sets it over QMP and then
            // starts the load (`ShimConfig::from_template`).
            let incoming = match spec.memory {
                GuestMemory::FromTemplate(_) => "defer".into(),
                _ => format!("fd:{}", super::INCOMING_FD),
            };
            args.extend(["-incoming".into(), incoming]);
        }
        if spec.network {
            // The NIC's frames go to the box's network helper, listening on a unix socket
            // (started first by the supervisor). No host network device is involved.
            args.extend([
                "-netdev".into(), format!("stream,id=net0,server=off,addr.type=unix,addr.path={}", p(&crate::net::socket(&spec.box_dir))),
                "-device".into(), format!("virtio-net-device,netdev=net0,mac={}", crate::net::GUEST_MAC),
            ]);
        }
        // The inbox: staged copies in (CopyInStaged) are read from here. Read-only to the guest
        // whatever it mounts; in every VM it fits in, so a box restored from a template (no
        // volumes) has the same devices, and the path is not in the saved state, so each VM
        // names its own. The agent mounts it only while a copy runs: QEMU blocks migration
        // while a 9p share is mounted.
        let fixed = 3 + usize::from(spec.network); // rng, serial, blk, net
        let mut shares = Vec::new();
        if fixed + 1 + spec.volumes.len() <= USABLE_TRANSPORTS {
            shares.push((
                format!("local,id=inbox,path={},security_model=mapped-xattr,readonly=on", volumes::qemu_escape(&p(&super::inbox_dir(&spec.box_dir)))),
                format!("virtio-9p-device,fsdev=inbox,mount_tag={}", boxlite_protocol::INBOX_TAG),
            ));
        }
        for (i, v) in spec.volumes.iter().enumerate() {
            // QEMU serves the share itself, inside its seccomp sandbox. mapped-xattr: whatever
            // the guest creates (symlinks, devices, setuid bits, owners) is a plain file plus
            // xattrs on the host; readonly=on makes QEMU refuse every write, whatever the guest
            // mounts. docs/volumes.md.
            let readonly = if v.read_only { ",readonly=on" } else { "" };
            shares.push((
                format!("local,id=vol{i},path={},security_model=mapped-xattr{readonly}", volumes::qemu_escape(&p(&v.host_path))),
                format!("virtio-9p-device,fsdev=vol{i},mount_tag={}", volumes::mount_tag(i)),
            ));
        }
        for (k, (fsdev, device)) in shares.into_iter().enumerate() {
            if fixed + k == 4 {
                // This one would be the 5th device, on IRQ 8.
                args.extend(["-device".into(), IRQ8_PLACEHOLDER.into()]);
            }
            args.extend(["-fsdev".into(), fsdev, "-device".into(), device]);
        }
        args
    }
}

/// The box disk: a full host disk is an I/O error inside the guest, never a paused VM (QEMU's
/// default werror=enospc stops the VM and every exec with it).
fn qcow2_drive(disk: &Path) -> String {
    format!("file={},if=none,id=root,format=qcow2,discard=unmap,werror=report,rerror=report", disk.display())
}

/// The host's TSC rate in kHz, measured once per process against CLOCK_MONOTONIC_RAW (no NTP
/// slew) over 10 ms; `None` unless the host's TSC is constant and non-stop.
fn host_tsc_khz() -> Option<u64> {
    static KHZ: OnceLock<Option<u64>> = OnceLock::new();
    *KHZ.get_or_init(|| {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
        let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
        if !(has("constant_tsc") && has("nonstop_tsc")) {
            return None;
        }
        measure_tsc_khz()
    })
}

/// One measurement of the TSC rate over 10 ms; `None` for a reading outside 100 MHz..10 GHz,
/// which is a bad reading, not a CPU.
fn measure_tsc_khz() -> Option<u64> {
    let (ns0, tsc0) = tsc_at_ns()?;
    std::thread::sleep(Duration::from_millis(10));
    let (ns1, tsc1) = tsc_at_ns()?;
    let khz = (tsc1.checked_sub(tsc0)? as u128 * 1_000_000 / ns1.checked_sub(ns0)?.max(1) as u128) as u64;
    (100_000..10_000_000).contains(&khz).then_some(khz)
}

/// A TSC reading and the raw monotonic time it was taken at (ns), from the tightest of a few
/// bracketed reads.
#[cfg(target_arch = "x86_64")]
fn tsc_at_ns() -> Option<(u64, u64)> {
    let raw_ns = || {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the timespec it is given.
        (unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut ts) } == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    };
    let mut best: Option<(u64, u64, u64)> = None; // (bracket width, midpoint, tsc)
    for _ in 0..7 {
        let before = raw_ns()?;
        // SAFETY: rdtsc has no preconditions on x86_64.
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        let after = raw_ns()?;
        let width = after - before;
        if best.is_none_or(|(w, _, _)| width < w) {
            best = Some((width, before + width / 2, tsc));
        }
    }
    best.map(|(_, ns, tsc)| (ns, tsc))
}

#[cfg(not(target_arch = "x86_64"))]
fn tsc_at_ns() -> Option<(u64, u64)> {
    None
}

fn qmp_socket(box_dir: &Path) -> PathBuf {
    box_dir.join("qmp.sock")
}

impl Engine for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn command(&self, spec: &VmSpec) -> Result<VmCommand> {
        check_socket_path(&spec.agent_socket())?;
        check_socket_path(&spec.output_socket())?;
        check_socket_path(&qmp_socket(&spec.box_dir))?;
        check_socket_path(&crate::net::control_socket(&spec.box_dir))?;
        for stale in [spec.agent_socket(), spec.output_socket(), qmp_socket(&spec.box_dir), spec.console_log()] {
            let _ = std::fs::remove_file(stale);
        }
        super::prepare_inbox(&spec.box_dir)?;
        Ok(VmCommand {
            program: self.binary.clone(),
            args: self.args(spec),
            qmp_socket: Some(qmp_socket(&spec.box_dir)),
            incoming: spec.incoming.clone(),
        })
    }
}

/// The guest-visible size of a qcow2 image, from its header.
pub fn qcow2_virtual_size(path: &Path) -> std::io::Result<u64> {
    let header = qcow2_header(path)?;
    Ok(u64::from_be_bytes(header[24..32].try_into().unwrap_or_default()))
}

/// The backing file a qcow2 image names, from its header (`None` for a standalone image).
pub fn qcow2_backing(path: &Path) -> std::io::Result<Option<PathBuf>> {
    use std::io::{Read, Seek};
    let header = qcow2_header(path)?;
    let offset = u64::from_be_bytes(header[8..16].try_into().unwrap_or_default());
    let len = u32::from_be_bytes(header[16..20].try_into().unwrap_or_default());
    if offset == 0 || len == 0 {
        return Ok(None);
    }
    if len > 1023 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "qcow2 backing file name over 1023 bytes"));
    }
    let mut f = std::fs::File::open(path)?;
    f.seek(std::io::SeekFrom::Start(offset))?;
    let mut name = vec![0; len as usize];
    f.read_exact(&mut name)?;
    use std::os::unix::ffi::OsStringExt;
    Ok(Some(PathBuf::from(std::ffi::OsString::from_vec(name))))
}

fn qcow2_header(path: &Path) -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    let mut header = [0u8; 32];
    std::fs::File::open(path)?.read_exact(&mut header)?;
    if &header[..4] != b"QFI\xfb" {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is not a qcow2 image", path.display())));
    }
    Ok(header)
}

fn find_qemu() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(QEMU_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Engine(format!("{QEMU_ENV}={} does not exist", path.display())))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(QEMU_BIN))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Engine(format!(
                "{QEMU_BIN} not found in PATH: install QEMU (Debian/Ubuntu: apt-get install qemu-system-x86 qemu-utils) or set {QEMU_ENV}"
            ))
        })
}

/// Whether KVM can run a guest here, and why not. Cached: it cannot change while we run.
pub fn kvm_verdict() -> std::result::Result<(), String> {
    static VERDICT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    VERDICT.get_or_init(|| kvm_verdict_at(Path::new("/dev/kvm"), Path::new("/sys/module"))).clone()
}

fn kvm_verdict_at(dev: &Path, modules: &Path) -> std::result::Result<(), String> {
    if !dev.exists() {
        return Err(format!("{} does not exist (no hardware virtualization, or the kvm module is not loaded)", dev.display()));
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        return Err(format!("cannot open {}: {e}; add your user to the kvm group", dev.display()));
    }
    // kvm_pvm is a software nested hypervisor whose instruction emulator cannot run a stock
    // Linux kernel (guests die at cmpxchg16b / xrstor / int3), so it does not count as KVM.
    if modules.join("kvm_pvm").exists() {
        return Err(format!("{} is backed by kvm_pvm, a nested hypervisor that cannot run a Linux guest", dev.display()));
    }
    Ok(())
}

/// Creates a qcow2 overlay over `backing` (an image's raw base disk, or a frozen qcow2 layer of a
/// snapshot): nothing is copied. With `size` (bytes) the overlay is that large (the guest grows
/// its filesystem into it); otherwise it is the backing disk's size. A qcow2 layer is not opened
/// (a running VM may hold it locked): its size must be given.
pub fn create_overlay(backing: &Path, backing_format: &str, overlay: &Path, size: Option<u64>) -> Result<()> {
    let mut cmd = std::process::Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2", "-F", backing_format]);
    if backing_format != "raw" {
        cmd.arg("-u");
    }
    cmd.arg("-b").arg(backing).arg(overlay);
    if let Some(bytes) = size {
        cmd.arg(bytes.to_string());
    }
    let out = cmd
        .output()
        .map_err(|e| Error::Engine(format!("qemu-img could not run ({e}): install qemu-utils")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No space left") {
            return Err(Error::Storage {
                context: format!("create the box disk {}: the disk holding the BoxLite home is full; free space or use another home", overlay.display()),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            });
        }
        return Err(Error::Engine(format!("qemu-img create failed: {}", stderr.trim())));
    }
    // The box's files are nobody else's.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(overlay, std::fs::Permissions::from_mode(0o600)).map_err(|e| Error::storage("chmod", overlay, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_verdict_explains_each_failure() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("kvm");
        let err = kvm_verdict_at(&dev, dir.path()).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        std::fs::write(&dev, b"").unwrap();
        assert!(kvm_verdict_at(&dev, dir.path()).is_ok());
        std::fs::create_dir(dir.path().join("kvm_pvm")).unwrap();
        assert!(kvm_verdict_at(&dev, dir.path()).unwrap_err().contains("kvm_pvm"));
    }

    #[test]
    fn the_host_tsc_rate_is_measured_where_the_tsc_is_constant() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let constant = cpuinfo.contains(" constant_tsc") && cpuinfo.contains(" nonstop_tsc");
        let khz = host_tsc_khz();
        assert_eq!(khz.is_some(), constant, "{khz:?}");
        // Measured twice (a second process would), the rate agrees to 0.05 %: a guest clock on
        // it drifts under 2 s an hour (and each boot reads the real time from the RTC again).
        if let (Some(a), Some(b)) = (khz, measure_tsc_khz()) {
            assert!(a.abs_diff(b) * 2000 < a, "{a} kHz vs {b} kHz");
        }
    }

    /// A one-CPU box of 256 MiB in `/b` with no network and no volumes.
    fn spec() -> VmSpec {
        VmSpec {
            cpus: 1,
            memory_mib: 256,
            disk: "/b/disk.qcow2".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            box_dir: "/b".into(),
            network: false,
            hostname: "web".into(),
            volumes: Vec::new(),
            incoming: None,
            memory: GuestMemory::Private,
        }
    }

    #[test]
    fn tcg_args_use_microvm_with_rtc() {
        let q = Qemu { binary: "qemu".into(), accel: ResolvedAccel::Tcg };
        let spec = VmSpec { cpus: 2, ..spec() };
        let args = q.args(&spec).join(" ");
        assert!(args.contains("microvm,") && args.contains("rtc=on"));
        assert!(args.contains("-accel tcg,thread=multi -cpu max,erms=off,fsrm=off -smp 2 -m 256"), "{args}");
        assert!(args.contains("socket,id=agent,path=/b/agent.sock,server=on,wait=off"));
        assert!(args.contains("socket,id=output,path=/b/output.sock,server=on,wait=off"));
        assert!(args.contains("virtserialport,chardev=output,name=boxlite.output"));
        assert!(args.contains("boxlite.hostname=web") && !args.contains("-netdev") && !args.contains("boxlite.ip="));
        assert!(args.contains(" lapic_timer_khz=1000000") && !args.contains("noapictimer"), "{args}");
        assert!(args.contains(" norandmaps"), "{args}");
        assert!(args.contains("-object memory-backend-ram,id=ram,size=256M -machine memory-backend=ram"), "{args}");
        assert!(!args.contains("x-ignore-shared") && !args.contains("boxlite.template"), "{args}");
        let args = q.args(&VmSpec { network: true, ..spec }).join(" ");
        assert!(args.contains("-netdev stream,id=net0,server=off,addr.type=unix,addr.path=/b/net.sock"), "{args}");
        assert!(args.contains("virtio-net-device,netdev=net0") && args.contains("boxlite.ip=192.168.127.2/24 boxlite.gw=192.168.127.1"), "{args}");
    }

    #[test]
    fn templates_share_their_ram_file_and_boxes_map_it_privately() {
        let q = Qemu { binary: "qemu".into(), accel: ResolvedAccel::Tcg };
        let source = q.args(&VmSpec { memory: GuestMemory::TemplateSource("/t/ram".into()), ..spec() }).join(" ");
        assert!(source.contains("-object memory-backend-file,id=ram,size=256M,mem-path=/t/ram,share=on"), "{source}");
        assert!(source.contains(" boxlite.template=1") && source.contains("-drive driver=null-co,") && !source.contains("disk.qcow2"), "{source}");
        let restored = q.args(&VmSpec { memory: GuestMemory::FromTemplate("/t/ram".into()), incoming: Some("/t/state".into()), ..spec() }).join(" ");
        assert!(restored.contains("mem-path=/t/ram,share=off") && restored.contains("file=/b/disk.qcow2,"), "{restored}");
        assert!(restored.contains("-incoming defer") && !restored.contains("boxlite.template"), "{restored}");
    }

    #[test]
    fn every_vm_has_a_read_only_inbox_of_its_own_dir() {
        let q = Qemu { binary: "qemu".into(), accel: ResolvedAccel::Tcg };
        let inbox = "-fsdev local,id=inbox,path=/b/inbox,security_model=mapped-xattr,readonly=on -device virtio-9p-device,fsdev=inbox,mount_tag=boxlite-inbox";
        for memory in [GuestMemory::Private, GuestMemory::TemplateSource("/t/ram".into()), GuestMemory::FromTemplate("/t/ram".into())] {
            let args = q.args(&VmSpec { memory, ..spec() }).join(" ");
            assert!(args.contains(inbox), "{args}");
        }
    }

    #[test]
    fn volumes_are_9p_shares_with_mapped_xattr() {
        let q = Qemu { binary: "qemu".into(), accel: ResolvedAccel::Kvm };
        let volumes = vec![crate::options::Volume::new("/h/a,b", "/mnt/a"), crate::options::Volume::new("/h/c", "/mnt/c").read_only()];
        let spec = VmSpec { volumes, ..spec() };
        let args = q.args(&spec).join(" ");
        assert!(!args.contains("norandmaps"), "ASLR stays on under KVM: {args}");
        assert!(args.contains("-fsdev local,id=vol0,path=/h/a,,b,security_model=mapped-xattr -device virtio-9p-device,fsdev=vol0,mount_tag=boxlite0"), "{args}");
        // The inbox comes before the volumes; the 5th device waits behind the placeholder.
        assert!(args.contains("mount_tag=boxlite-inbox -device virtio-keyboard-device -fsdev local,id=vol0"), "{args}");
        let with_nic = q.args(&VmSpec { network: true, ..spec.clone() }).join(" ");
        assert!(with_nic.contains(&format!("mac={} -device virtio-keyboard-device -fsdev local,id=inbox,", crate::net::GUEST_MAC)), "{with_nic}");
        assert_eq!(with_nic.matches("-device virtio-").count(), 8, "rng, serial, blk, net, placeholder, inbox, 2 volumes: {with_nic}");
        // A NIC and 3 volumes leave no slot for the inbox; without a NIC it fits.
        let three = vec![spec.volumes[0].clone(), spec.volumes[1].clone(), crate::options::Volume::new("/h/d", "/mnt/d")];
        let full = q.args(&VmSpec { network: true, volumes: three.clone(), ..spec.clone() }).join(" ");
        assert!(!full.contains("boxlite-inbox") && full.contains("mount_tag=boxlite2"), "{full}");
        assert_eq!(full.matches("-device virtio-").count(), 8, "{full}");
        let no_nic = q.args(&VmSpec { volumes: three, ..spec.clone() }).join(" ");
        assert!(no_nic.contains("boxlite-inbox") && no_nic.matches("-device virtio-").count() == 8, "{no_nic}");
        assert_eq!(q.args(&VmSpec { volumes: Vec::new(), ..spec.clone() }).iter().filter(|a| a.contains("keyboard")).count(), 0);
        assert!(args.contains("-fsdev local,id=vol1,path=/h/c,security_model=mapped-xattr,readonly=on"), "{args}");
        assert!(args.contains(" boxlite.volume=boxlite0,rw,/mnt/a boxlite.volume=boxlite1,ro,/mnt/c"), "{args}");
    }
}
