//! The box's network identity, from the kernel command line: loopback always; with a NIC its
//! address, default route and MTU; and the hostname, `/etc/hosts` and `/etc/resolv.conf`, which
//! are bind-mounted over the box's own files so the image is never written.
//!
//! Command line keys (set by the host): `boxlite.hostname=NAME`, and with a NIC
//! `boxlite.ip=ADDR/PREFIX boxlite.gw=ADDR boxlite.mtu=N boxlite.hostalias=ADDR`. The gateway
//! also serves DNS.

use crate::init::ROOTFS;
use nix::mount::{mount, MsFlags};
use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Where the generated files live (the initramfs root, never the box disk).
const GENERATED: &str = "/run/boxlite";
/// The NIC QEMU gives the box (the first and only virtio-net device).
const NIC: &str = "eth0";

/// What the host asked for on the kernel command line.
#[derive(Debug, Default, PartialEq)]
pub struct NetConfig {
    pub hostname: Option<String>,
    pub nic: Option<Nic>,
}

/// The NIC's settings.
#[derive(Debug, PartialEq)]
pub struct Nic {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    /// The address at which the host is reached (`host.boxlite.internal`).
    pub host_alias: Option<Ipv4Addr>,
}

impl NetConfig {
    pub fn from_cmdline(cmdline: &str) -> Result<Self, String> {
        let get = |key: &str| cmdline.split_whitespace().find_map(|a| a.strip_prefix(key)?.strip_prefix('='));
        let hostname = get("boxlite.hostname").filter(|h| valid_hostname(h)).map(str::to_string);
        let Some(ip) = get("boxlite.ip") else { return Ok(NetConfig { hostname, nic: None }) };
        let (addr, prefix) = ip.split_once('/').ok_or_else(|| format!("boxlite.ip={ip}: expected ADDR/PREFIX"))?;
        let parse_ip = |key: &str, v: &str| v.parse::<Ipv4Addr>().map_err(|_| format!("{key}={v}: not an IPv4 address"));
        let nic = Nic {
            addr: parse_ip("boxlite.ip", addr)?,
            prefix: prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("boxlite.ip={ip}: bad prefix"))?,
            gateway: parse_ip("boxlite.gw", get("boxlite.gw").ok_or("boxlite.ip without boxlite.gw")?)?,
            mtu: get("boxlite.mtu").map(|m| m.parse().map_err(|_| format!("boxlite.mtu={m}: not a number"))).transpose()?.unwrap_or(1500),
            host_alias: get("boxlite.hostalias").map(|a| parse_ip("boxlite.hostalias", a)).transpose()?,
        };
        Ok(NetConfig { hostname, nic: Some(nic) })
    }

    /// `/etc/hosts` of the box.
    fn hosts(&self) -> String {
        let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        if let (Some(nic), Some(h)) = (&self.nic, &self.hostname) {
            s += &format!("{}\t{h}\n", nic.addr);
        } else if let Some(h) = &self.hostname {
            s += &format!("127.0.1.1\t{h}\n");
        }
        if let Some(alias) = self.nic.as_ref().and_then(|n| n.host_alias) {
            s += &format!("{alias}\thost.boxlite.internal host.docker.internal\n");
        }
        s
    }
}

/// RFC 1123 labels: what `sethostname` and resolvers accept without surprises.
fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !h.starts_with('-')
        && !h.ends_with('-')
}

/// Brings up loopback and the NIC and writes the box's name files (bound into the box disk by
/// [`bind_files`] once it is mounted). Errors name the step.
pub fn setup(cfg: &NetConfig) -> Result<(), String> {
    let sock = control_socket()?;
    set_up(&sock, "lo")?;
    if let Some(nic) = &cfg.nic {
        configure_nic(&sock, nic)?;
    }
    if let Some(h) = &cfg.hostname {
        // SAFETY: a valid buffer and its length.
        if unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) } < 0 {
            return Err(format!("sethostname {h}: {}", std::io::Error::last_os_error()));
        }
    }
    fs::create_dir_all(GENERATED).map_err(|e| format!("mkdir {GENERATED}: {e}"))?;
    let mut files = vec![("hosts", cfg.hosts())];
    if let Some(h) = &cfg.hostname {
        files.push(("hostname", format!("{h}\n")));
    }
    if let Some(nic) = &cfg.nic {
        files.push(("resolv.conf", format!("nameserver {}\n", nic.gateway)));
    }
    for (name, content) in files {
        let path = format!("{GENERATED}/{name}");
        fs::write(&path, content).map_err(|e| format!("write {path}: {e}"))?;
    }
    Ok(())
}

/// Binds the generated name files over the box disk's own (mounted on [`ROOTFS`]).
pub fn bind_files() -> Result<(), String> {
    for name in ["hosts", "hostname", "resolv.conf"] {
        if std::path::Path::new(&format!("{GENERATED}/{name}")).exists() {
            bind_file(name)?;
        }
    }
    Ok(())
}

/// Gives the running box a new hostname (a box restored from a snapshot): `sethostname`, and the
/// generated `/etc/hostname` and `/etc/hosts` rewritten in place (they are bind-mounted files).
pub fn rename(new: &str) -> Result<(), String> {
    if !valid_hostname(new) {
        return Err(format!("hostname {new:?} is not a valid RFC 1123 label"));
    }
    let old = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    // SAFETY: a valid buffer and its length.
    if unsafe { libc::sethostname(new.as_ptr().cast(), new.len()) } < 0 {
        return Err(format!("sethostname {new}: {}", std::io::Error::last_os_error()));
    }
    let hostname = format!("{GENERATED}/hostname");
    if std::path::Path::new(&hostname).exists() {
        fs::write(&hostname, format!("{new}\n")).map_err(|e| format!("write {hostname}: {e}"))?;
    }
    let hosts = format!("{GENERATED}/hosts");
    if let (Ok(text), false) = (fs::read_to_string(&hosts), old.is_empty()) {
        let renamed: String = text.lines().map(|l| {
            let mut f = l.split('\t');
            match (f.next(), f.next(), f.next()) {
                (Some(addr), Some(h), None) if h == old => format!("{addr}\t{new}\n"),
                _ => format!("{l}\n"),
            }
        }).collect();
        fs::write(&hosts, renamed).map_err(|e| format!("write {hosts}: {e}"))?;
    }
    Ok(())
}

/// Binds the generated copy of `/etc/NAME` over the box's own. An image without that file, or
/// with a symlink there, gets an empty file as mount point in the box's disk (its copy-on-write
/// overlay; the image is untouched).
fn bind_file(name: &str) -> Result<(), String> {
    let source = format!("{GENERATED}/{name}");
    let target = format!("{ROOTFS}/etc/{name}");
    let regular = fs::symlink_metadata(&target).map(|m| m.file_type().is_file()).unwrap_or(false);
    if !regular {
        let _ = fs::remove_file(&target);
        let _ = fs::create_dir_all(format!("{ROOTFS}/etc"));
        fs::write(&target, "").map_err(|e| format!("create {target}: {e}"))?;
    }
    mount(Some(source.as_str()), target.as_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| format!("bind {source} on {target}: {e}"))
}

fn control_socket() -> Result<OwnedFd, String> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *dst = src as libc::c_char;
    }
    req
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(addr).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; this is how the ioctls take it.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl<T>(sock: &OwnedFd, request: libc::Ioctl, arg: &mut T, what: &str) -> Result<(), String> {
    // SAFETY: `arg` is the structure `request` expects, valid for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, arg as *mut T) } < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_up(sock: &OwnedFd, name: &str) -> Result<(), String> {
    let mut req = ifreq(name);
    ioctl(sock, libc::SIOCGIFFLAGS, &mut req, &format!("get flags of {name}"))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(sock, libc::SIOCSIFFLAGS, &mut req, &format!("bring {name} up"))
}

fn configure_nic(sock: &OwnedFd, nic: &Nic) -> Result<(), String> {
    let mut req = ifreq(NIC);
    req.ifr_ifru.ifru_addr = sockaddr(nic.addr);
    ioctl(sock, libc::SIOCSIFADDR, &mut req, &format!("set address of {NIC}"))?;
    let mask = if nic.prefix == 0 { 0 } else { u32::MAX << (32 - nic.prefix) };
    req.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(mask));
    ioctl(sock, libc::SIOCSIFNETMASK, &mut req, &format!("set netmask of {NIC}"))?;
    req.ifr_ifru.ifru_mtu = nic.mtu as libc::c_int;
    ioctl(sock, libc::SIOCSIFMTU, &mut req, &format!("set MTU of {NIC}"))?;
    set_up(sock, NIC)?;
    // SAFETY: rtentry is plain data; all-zero is a valid value.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_gateway = sockaddr(nic.gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    ioctl(sock, libc::SIOCADDRT, &mut route, &format!("add the default route via {}", nic.gateway))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_nic_without_an_address() {
        let cfg = NetConfig::from_cmdline("console=ttyS0 boxlite.hostname=box1").unwrap();
        assert_eq!(cfg, NetConfig { hostname: Some("box1".into()), nic: None });
        assert!(cfg.hosts().contains("127.0.1.1\tbox1\n"));
    }

    #[test]
    fn a_nic_from_the_command_line() {
        let line = "quiet boxlite.ip=192.168.127.2/24 boxlite.gw=192.168.127.1 boxlite.mtu=1400 boxlite.hostalias=192.168.127.254 boxlite.hostname=b";
        let cfg = NetConfig::from_cmdline(line).unwrap();
        let nic = cfg.nic.as_ref().unwrap();
        assert_eq!((nic.addr, nic.prefix, nic.gateway, nic.mtu), ("192.168.127.2".parse().unwrap(), 24, "192.168.127.1".parse().unwrap(), 1400));
        let hosts = cfg.hosts();
        assert!(hosts.contains("192.168.127.2\tb\n"), "{hosts}");
        assert!(hosts.contains("192.168.127.254\thost.boxlite.internal host.docker.internal\n"), "{hosts}");
    }

    #[test]
    fn malformed_settings_are_named() {
        assert!(NetConfig::from_cmdline("boxlite.ip=1.2.3.4").unwrap_err().contains("ADDR/PREFIX"));
        assert!(NetConfig::from_cmdline("boxlite.ip=1.2.3.4/24").unwrap_err().contains("boxlite.gw"));
        assert!(NetConfig::from_cmdline("boxlite.ip=1.2.3.4/40 boxlite.gw=1.2.3.1").unwrap_err().contains("prefix"));
    }

    #[test]
    fn hostnames_that_resolvers_would_choke_on_are_dropped() {
        assert_eq!(NetConfig::from_cmdline("boxlite.hostname=a/b").unwrap().hostname, None);
        assert_eq!(NetConfig::from_cmdline("boxlite.hostname=-x").unwrap().hostname, None);
        assert_eq!(NetConfig::from_cmdline("boxlite.hostname=web-1").unwrap().hostname.as_deref(), Some("web-1"));
    }
}
