// Package boxnet is the user-mode network of one box: a gVisor netstack that QEMU's virtio-net
// device talks to over a unix socket, NAT to real host sockets, DNS, published ports and the
// egress policy. The boxlite-net binary (cmd/boxlite-net) is its only user; docs/network.md is
// the design note.
package boxnet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/miekg/dns"
)

// Defaults for fields the supervisor may leave out.
const (
	DefaultMTU    = 1500
	DefaultHostIP = "127.0.0.1"
	// Ethernet needs 576 for IPv4's minimum datagram; 65535 is what a 16-bit length can say.
	minMTU = 576
	maxMTU = 65535
)

// resolvConf is read when the config names no DNS upstreams.
const resolvConf = "/etc/resolv.conf"

// Config is the JSON file named by --config, as the supervisor writes it.
type Config struct {
	QEMUSocket    string      `json:"qemu_socket"`
	ControlSocket string      `json:"control_socket"`
	Subnet        string      `json:"subnet"`
	GatewayIP     string      `json:"gateway_ip"`
	GuestIP       string      `json:"guest_ip"`
	GuestMAC      string      `json:"guest_mac"`
	HostAliasIP   string      `json:"host_alias_ip"`
	MTU           int         `json:"mtu"`
	DNSUpstreams  []string    `json:"dns_upstreams"`
	Ports         []Port      `json:"ports"`
	Policy        *PolicySpec `json:"policy"`
}

// Port is one published port. In the config a HostPort of 0 asks for a free port; in the ready
// line and the control socket's answer it is the port actually bound.
type Port struct {
	HostIP    string `json:"host_ip"`
	HostPort  int    `json:"host_port"`
	GuestPort int    `json:"guest_port"`
	Protocol  string `json:"protocol"`
}

// String names the host side the way error messages do: "127.0.0.1:8080/tcp".
func (p Port) String() string {
	return fmt.Sprintf("%s/%s", net.JoinHostPort(p.HostIP, fmt.Sprint(p.HostPort)), p.Protocol)
}

// settings is a Config after validation: everything parsed, defaults filled in.
type settings struct {
	qemuSocket    string
	controlSocket string
	subnet        netip.Prefix
	gateway       netip.Addr
	guest         netip.Addr
	guestMAC      net.HardwareAddr
	hostAlias     netip.Addr
	mtu           uint32
	dnsUpstreams  []string // host:port
	ports         []Port
	policy        *Policy
}

// LoadConfig reads and decodes the config file. Unknown fields are errors, so a supervisor and
// helper that drifted apart fail at start instead of silently ignoring a setting.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("invalid config %s: %w", path, err)
	}
	return &cfg, nil
}

func (c *Config) validate() (*settings, error) {
	s := &settings{qemuSocket: c.QEMUSocket, controlSocket: c.ControlSocket}
	if s.qemuSocket == "" || s.controlSocket == "" {
		return nil, fmt.Errorf("config needs qemu_socket and control_socket")
	}
	var err error
	if s.subnet, err = netip.ParsePrefix(c.Subnet); err != nil || !s.subnet.Addr().Is4() {
		return nil, fmt.Errorf("subnet %q is not an IPv4 CIDR", c.Subnet)
	}
	s.subnet = s.subnet.Masked()
	for _, a := range []struct {
		field, value string
		into         *netip.Addr
	}{
		{"gateway_ip", c.GatewayIP, &s.gateway},
		{"guest_ip", c.GuestIP, &s.guest},
		{"host_alias_ip", c.HostAliasIP, &s.hostAlias},
	} {
		ip, err := netip.ParseAddr(a.value)
		if err != nil || !s.subnet.Contains(ip) {
			return nil, fmt.Errorf("%s %q is not an address in subnet %s", a.field, a.value, s.subnet)
		}
		*a.into = ip
	}
	if s.gateway == s.guest || s.gateway == s.hostAlias || s.guest == s.hostAlias {
		return nil, fmt.Errorf("gateway_ip, guest_ip and host_alias_ip must differ")
	}
	if s.guestMAC, err = net.ParseMAC(c.GuestMAC); err != nil || len(s.guestMAC) != 6 {
		return nil, fmt.Errorf("guest_mac %q is not an ethernet address", c.GuestMAC)
	}
	if s.guestMAC.String() == gatewayMAC {
		return nil, fmt.Errorf("guest_mac %s is the gateway's own address", gatewayMAC)
	}
	switch {
	case c.MTU == 0:
		s.mtu = DefaultMTU
	case c.MTU < minMTU || c.MTU > maxMTU:
		return nil, fmt.Errorf("mtu %d is outside %d..%d", c.MTU, minMTU, maxMTU)
	default:
		s.mtu = uint32(c.MTU)
	}
	if s.dnsUpstreams, err = dnsUpstreams(c.DNSUpstreams); err != nil {
		return nil, err
	}
	for _, p := range c.Ports {
		if p.HostIP == "" {
			p.HostIP = DefaultHostIP
		}
		if _, err := netip.ParseAddr(p.HostIP); err != nil {
			return nil, fmt.Errorf("published port %s: host_ip is not an IP address", p)
		}
		if p.Protocol != "tcp" && p.Protocol != "udp" {
			return nil, fmt.Errorf("published port %s: protocol must be tcp or udp", p)
		}
		if p.HostPort < 0 || p.HostPort > 65535 || p.GuestPort < 1 || p.GuestPort > 65535 {
			return nil, fmt.Errorf("published port %s to guest port %d: host_port must be 0..65535 and guest_port 1..65535", p, p.GuestPort)
		}
		s.ports = append(s.ports, p)
	}
	if s.policy, err = ParsePolicy(c.Policy); err != nil {
		return nil, err
	}
	return s, nil
}

// dnsUpstreams returns the configured upstreams as host:port, or the host's nameservers. A host
// without any is not an error: the box starts and its DNS answers SERVFAIL.
func dnsUpstreams(configured []string) ([]string, error) {
	var out []string
	for _, u := range configured {
		if _, _, err := net.SplitHostPort(u); err == nil {
			out = append(out, u)
		} else if _, err := netip.ParseAddr(u); err == nil {
			out = append(out, net.JoinHostPort(u, "53"))
		} else {
			return nil, fmt.Errorf("dns upstream %q is not an IP or IP:port", u)
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	rc, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		logger.Warn("no DNS upstreams: cannot read host resolver config", "file", resolvConf, "err", err)
		return nil, nil
	}
	for _, s := range rc.Servers {
		out = append(out, net.JoinHostPort(s, rc.Port))
	}
	return out, nil
}
