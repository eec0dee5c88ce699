//! A box's network as the user asks for it (on or off, an egress allow or deny list, published
//! ports), checked before anything starts, and turned into the configuration of the box's
//! network helper (`boxlite-net`, a user-mode stack owned by the box supervisor; see
//! docs/network.md).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// Environment variable naming the `boxlite-net` binary to use.
pub const NET_ENV: &str = "BOXLITE_NET";
/// File name of the network helper binary.
pub const NET_BIN: &str = "boxlite-net";
/// Environment variable with the DNS servers (`IP[:PORT]`, comma-separated) that boxes' DNS
/// queries are forwarded to, when the runtime options name none; default: the host's resolvers.
pub const DNS_ENV: &str = "BOXLITE_DNS";

/// The box's private network: the same for every box, since each has a stack of its own.
pub const SUBNET_PREFIX: u8 = 24;
/// The gateway, which also serves DNS.
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 1);
/// The box's own address.
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
/// The host's 127.0.0.1 as the box sees it (`host.boxlite.internal`, `host.docker.internal`).
pub const HOST_ALIAS_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 254);
/// The box NIC's MAC address (locally administered).
pub const GUEST_MAC: &str = "5a:94:ef:e4:0c:ee";
/// The NIC's MTU.
pub const MTU: u32 = 1500;

/// Whether the box has a network, and what it may reach.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// A NIC with outbound access to everything (the default).
    #[default]
    Enabled,
    /// No NIC at all: only loopback.
    None,
    /// Outbound only to these names (`pypi.org`, `*.example.com`), addresses and CIDRs.
    Allow(Vec<String>),
    /// Outbound to everything but these.
    Deny(Vec<String>),
}

impl Network {
    /// Whether the box gets a NIC.
    pub fn enabled(&self) -> bool {
        *self != Network::None
    }

    /// Checks every allow/deny entry; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if let Network::Allow(list) | Network::Deny(list) = self {
            for entry in list {
                check_pattern(entry)?;
            }
        }
        Ok(())
    }

    /// The helper's policy (`None`: everything allowed).
    pub fn policy(&self) -> Option<Policy> {
        match self {
            Network::Allow(list) => Some(Policy { allow: Some(list.clone()), deny: None }),
            Network::Deny(list) => Some(Policy { allow: None, deny: Some(list.clone()) }),
            _ => None,
        }
    }
}

/// A transport protocol of a published port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A port of the box published on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// Host address to listen on; default 127.0.0.1.
    #[serde(default = "default_host_ip")]
    pub host_ip: String,
    /// Host port; 0 picks a free one (reported in the box's info once it runs).
    #[serde(default)]
    pub host_port: u16,
    /// Port inside the box, 1..=65535.
    pub guest_port: u16,
    /// tcp (default) or udp.
    #[serde(default)]
    pub protocol: Protocol,
}

fn default_host_ip() -> String {
    "127.0.0.1".into()
}

impl PortSpec {
    /// `guest_port` published on `host_port` of 127.0.0.1, over TCP.
    pub fn tcp(host_port: u16, guest_port: u16) -> Self {
        PortSpec { host_ip: default_host_ip(), host_port, guest_port, protocol: Protocol::Tcp }
    }

    /// Parses the CLI form `[IP:]HOST:GUEST[/tcp|/udp]` (docker's `-p`).
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = || Error::InvalidArgument(format!("port '{spec}' is malformed: use [IP:]HOST_PORT:GUEST_PORT[/tcp|/udp], e.g. 8080:80"));
        let (ports, protocol) = match spec.rsplit_once('/') {
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some(_) => return Err(bad()),
            None => (spec, Protocol::Tcp),
        };
        let (rest, guest) = ports.rsplit_once(':').ok_or_else(bad)?;
        let (host_ip, host) = match rest.rsplit_once(':') {
            Some((ip, host)) => (ip.trim_start_matches('[').trim_end_matches(']').to_string(), host),
            None => (default_host_ip(), rest),
        };
        let port = |s: &str| s.parse::<u16>().map_err(|_| bad());
        let p = PortSpec { host_ip, host_port: port(host)?, guest_port: port(guest)?, protocol };
        p.validate()?;
        Ok(p)
    }

    fn validate(&self) -> Result<()> {
        if self.guest_port == 0 {
            return Err(Error::InvalidArgument(format!("port {self}: the guest port must be 1 to 65535")));
        }
        if self.host_ip.parse::<IpAddr>().is_err() {
            return Err(Error::InvalidArgument(format!("port {self}: host_ip '{}' is not an IP address", self.host_ip)));
        }
        Ok(())
    }

    /// Whether the host port is free now: a create fails at once, with the port named, instead
    /// of a box that seems to run but cannot listen. (The helper binds for real at start.)
    fn check_free(&self) -> Result<()> {
        if self.host_port == 0 {
            return Ok(());
        }
        let addr = (self.host_ip.parse::<IpAddr>().map_err(|_| Error::Internal("validated".into()))?, self.host_port);
        let bound = match self.protocol {
            Protocol::Tcp => std::net::TcpListener::bind(addr).map(drop),
            Protocol::Udp => std::net::UdpSocket::bind(addr).map(drop),
        };
        bound.map_err(|e| Error::InvalidArgument(format!("host port {}:{}/{} cannot be used: {e}; choose another (or 0 for any free port)", self.host_ip, self.host_port, self.protocol)))
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}/{}", self.host_ip, self.host_port, self.guest_port, self.protocol)
    }
}

/// Checks the network options of a new box: entries, ports, duplicates, and that the host
/// ports are free.
pub fn validate(network: &Network, ports: &[PortSpec]) -> Result<()> {
    network.validate()?;
    if !network.enabled() && !ports.is_empty() {
        return Err(Error::InvalidArgument("ports need a network: a box with network 'none' cannot publish ports".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for p in ports {
        p.validate()?;
        if p.host_port != 0 && !seen.insert((p.host_ip.clone(), p.host_port, p.protocol)) {
            return Err(Error::InvalidArgument(format!("host port {}:{}/{} is published twice", p.host_ip, p.host_port, p.protocol)));
        }
    }
    ports.iter().try_for_each(PortSpec::check_free)
}

/// One allow/deny entry: a DNS name, `*.` and a name, an IP address or a CIDR.
pub fn check_pattern(entry: &str) -> Result<()> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 253
            && n.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-'))
    };
    let cidr_ok = |c: &str| {
        c.split_once('/').is_some_and(|(ip, bits)| match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        })
    };
    let ok = entry.parse::<IpAddr>().is_ok() || cidr_ok(entry) || name_ok(entry.strip_prefix("*.").unwrap_or(entry));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "network entry '{entry}' is not a host name, a wildcard name (*.example.com), an IP address or a CIDR"
        )))
    }
}

/// The DNS servers to forward to: the runtime's, else `$BOXLITE_DNS`, else none (the helper
/// then reads the host's /etc/resolv.conf).
pub fn dns_servers(configured: &[String]) -> Result<Vec<String>> {
    let list: Vec<String> = if configured.is_empty() {
        std::env::var(DNS_ENV).unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
    } else {
        configured.to_vec()
    };
    list.into_iter()
        .map(|s| {
            let with_port = if s.parse::<IpAddr>().is_ok() { format!("{s}:53") } else { s.clone() };
            with_port.parse::<std::net::SocketAddr>().map(|a| a.to_string()).map_err(|_| {
                Error::InvalidArgument(format!("DNS server '{s}' is not IP[:PORT] (runtime option dns_servers or {DNS_ENV})"))
            })
        })
        .collect()
}

/// The egress policy as the helper takes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Policy {
    /// Only these are reachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// These are not reachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<String>>,
}

/// The helper's configuration file (`boxes/<id>/net.json`); the fields are documented in
/// docs/network.md.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct HelperConfig {
    pub qemu_socket: PathBuf,
    pub control_socket: PathBuf,
    pub subnet: String,
    pub gateway_ip: String,
    pub guest_ip: String,
    pub guest_mac: String,
    pub host_alias_ip: String,
    pub mtu: u32,
    pub dns_upstreams: Vec<String>,
    pub ports: Vec<PortSpec>,
    pub policy: Option<Policy>,
}

impl HelperConfig {
    /// The helper configuration of a box in `box_dir`.
    pub fn new(box_dir: &Path, network: &Network, ports: &[PortSpec], dns_upstreams: Vec<String>) -> Self {
        HelperConfig {
            qemu_socket: socket(box_dir),
            control_socket: control_socket(box_dir),
            subnet: format!("{}/{SUBNET_PREFIX}", Ipv4Addr::from(u32::from(GUEST_IP) & (u32::MAX << (32 - SUBNET_PREFIX)))),
            gateway_ip: GATEWAY_IP.to_string(),
            guest_ip: GUEST_IP.to_string(),
            guest_mac: GUEST_MAC.into(),
            host_alias_ip: HOST_ALIAS_IP.to_string(),
            mtu: MTU,
            dns_upstreams,
            ports: ports.to_vec(),
            policy: network.policy(),
        }
    }
}

/// The socket on which the helper takes the VM's NIC.
pub fn socket(box_dir: &Path) -> PathBuf {
    box_dir.join("net.sock")
}

/// The helper's control socket (stats, policy changes).
pub fn control_socket(box_dir: &Path) -> PathBuf {
    box_dir.join("net-ctl.sock")
}

/// The guest's hostname: the box's name where it is a valid host name, else its id.
pub fn hostname(name: Option<&str>, id: &str) -> String {
    let label_ok = |n: &str| n.len() <= 63 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !n.starts_with('-') && !n.ends_with('-');
    name.filter(|n| !n.is_empty() && label_ok(n)).unwrap_or(id).to_string()
}

/// The kernel command line keys that give the guest its address, route and host alias.
pub fn guest_cmdline() -> String {
    format!("boxlite.ip={GUEST_IP}/{SUBNET_PREFIX} boxlite.gw={GATEWAY_IP} boxlite.mtu={MTU} boxlite.hostalias={HOST_ALIAS_IP}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_port_specs_parse_like_docker() {
        assert_eq!(PortSpec::parse("8080:80").unwrap(), PortSpec::tcp(8080, 80));
        let p = PortSpec::parse("0.0.0.0:5353:53/udp").unwrap();
        assert_eq!((p.host_ip.as_str(), p.host_port, p.guest_port, p.protocol), ("0.0.0.0", 5353, 53, Protocol::Udp));
        assert_eq!(PortSpec::parse("[::1]:8080:80").unwrap().host_ip, "::1");
        assert_eq!(PortSpec::parse("0:80").unwrap().host_port, 0);
        for bad in ["80", "a:80", "8080:80/sctp", "8080:0", "70000:80", "x.y:1:2"] {
            let err = PortSpec::parse(bad).unwrap_err();
            assert_eq!(err.code(), "INVALID_ARGUMENT", "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn allow_entries_are_names_wildcards_addresses_or_cidrs() {
        for good in ["pypi.org", "*.example.com", "203.0.113.0/24", "192.0.2.7", "::1", "2001:db8::/32", "localhost"] {
            check_pattern(good).unwrap();
        }
        for bad in ["", "http://pypi.org", "*", "a..b", "10.0.0.0/33", "exa mple.com", "*.", "foo/bar"] {
            let err = check_pattern(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn duplicate_ports_and_ports_without_a_network_are_refused() {
        let dup = [PortSpec::tcp(18080, 80), PortSpec::tcp(18080, 81)];
        assert!(validate(&Network::Enabled, &dup).unwrap_err().to_string().contains("published twice"));
        let udp_too = [PortSpec::tcp(0, 80), PortSpec { protocol: Protocol::Udp, ..PortSpec::tcp(0, 80) }];
        validate(&Network::Enabled, &udp_too).unwrap();
        assert!(validate(&Network::None, &[PortSpec::tcp(0, 80)]).is_err());
    }

    #[test]
    fn a_port_in_use_is_named() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = validate(&Network::Enabled, &[PortSpec::tcp(port, 80)]).unwrap_err().to_string();
        assert!(err.contains(&format!("127.0.0.1:{port}/tcp")), "{err}");
    }

    #[test]
    fn dns_servers_get_port_53_and_bad_ones_are_named() {
        assert_eq!(dns_servers(&["127.0.0.1".into(), "127.0.0.1:5353".into()]).unwrap(), ["127.0.0.1:53", "127.0.0.1:5353"]);
        assert!(dns_servers(&["resolver".into()]).unwrap_err().to_string().contains("'resolver'"));
    }

    #[test]
    fn the_helper_config_carries_the_policy() {
        let c = HelperConfig::new(Path::new("/b"), &Network::Allow(vec!["pypi.org".into()]), &[], vec![]);
        assert_eq!(c.subnet, "192.168.127.0/24");
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""policy":{"allow":["pypi.org"]}"#), "{json}");
        assert!(serde_json::to_string(&HelperConfig::new(Path::new("/b"), &Network::Enabled, &[], vec![])).unwrap().contains(r#""policy":null"#));
    }
}
