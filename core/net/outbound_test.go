package boxnet

import (
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

func TestNeverForwarded(t *testing.T) {
	o := &outbound{subnet: netip.MustParsePrefix("192.168.127.0/24"), hostAlias: netip.MustParseAddr("192.168.127.254")}
	for dst, want := range map[string]string{
		"192.168.127.254": "127.0.0.1:80",
		"198.51.100.7":    "198.51.100.7:80",
		"10.1.2.3":        "10.1.2.3:80",
		"127.0.0.1":       "",
		"127.1.2.3":       "",
		"0.0.0.0":         "",
		"192.168.127.1":   "",
		"192.168.127.2":   "",
		"169.254.169.254": "",
		"224.0.0.251":     "",
		"255.255.255.255": "",
	} {
		got, ok := o.hostAddress(stack.TransportEndpointID{LocalAddress: tcpAddr(netip.MustParseAddr(dst)), LocalPort: 80})
		if got != want || ok != (want != "") {
			t.Errorf("%s: got %q, %v; want %q", dst, got, ok, want)
		}
	}
}
