package boxnet

import (
	"errors"
	"net"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// gatewayMAC is the gateway's ethernet address (locally administered). The box sees one gateway,
// so it need not be configurable.
const gatewayMAC = "5a:94:ef:e4:0c:dd"

const nicID tcpip.NICID = 1

// newStack builds the host side of the box's link: a gVisor stack that owns the gateway address,
// on gVisor's ethernet endpoint on our QEMU link. Promiscuous mode and spoofing let the stack
// take packets for any destination and answer as that destination: that is how outbound NAT
// works (as in gvisor-tap-vsock). ARP is answered for the gateway and the host alias only.
func newStack(s *settings) (*stack.Stack, *qemuLink, error) {
	mac, _ := net.ParseMAC(gatewayMAC)
	link := newQEMULink(s.mtu, mac, tcpAddr(s.gateway), tcpAddr(s.hostAlias))
	st := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	sack := tcpip.TCPSACKEnabled(true)
	if err := st.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return nil, nil, errors.New(err.String())
	}
	if err := st.CreateNIC(nicID, ethernet.New(link)); err != nil {
		return nil, nil, errors.New(err.String())
	}
	if err := st.AddProtocolAddress(nicID, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpAddr(s.gateway).WithPrefix(),
	}, stack.AddressProperties{}); err != nil {
		return nil, nil, errors.New(err.String())
	}
	if err := st.SetPromiscuousMode(nicID, true); err != nil {
		return nil, nil, errors.New(err.String())
	}
	if err := st.SetSpoofing(nicID, true); err != nil {
		return nil, nil, errors.New(err.String())
	}
	// The guest's MAC is known, so connections to published ports need no ARP round trip.
	if err := st.AddStaticNeighbor(nicID, ipv4.ProtocolNumber, tcpAddr(s.guest), tcpip.LinkAddress(s.guestMAC)); err != nil {
		return nil, nil, errors.New(err.String())
	}
	subnet, err := tcpip.NewSubnet(tcpAddr(s.subnet.Addr()), tcpip.MaskFromBytes(net.CIDRMask(s.subnet.Bits(), 32)))
	if err != nil {
		return nil, nil, err
	}
	st.SetRouteTable([]tcpip.Route{{Destination: subnet, NIC: nicID}})
	return st, link, nil
}

func tcpAddr(a netip.Addr) tcpip.Address {
	return tcpip.AddrFrom4(a.As4())
}

func netipAddr(a tcpip.Address) netip.Addr {
	addr, _ := netip.AddrFromSlice(a.AsSlice())
	return addr.Unmap()
}
