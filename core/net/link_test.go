package boxnet

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// arpRequest is a framed "who has target? tell 192.168.127.2" from the guest, as QEMU writes it.
func arpRequest(target string) []byte {
	guestMAC, _ := net.ParseMAC(testGuestMAC)
	frame := make([]byte, header.EthernetMinimumSize+header.ARPSize)
	header.Ethernet(frame).Encode(&header.EthernetFields{
		SrcAddr: tcpip.LinkAddress(guestMAC), DstAddr: header.EthernetBroadcastAddress, Type: header.ARPProtocolNumber,
	})
	a := header.ARP(frame[header.EthernetMinimumSize:])
	a.SetIPv4OverEthernet()
	a.SetOp(header.ARPRequest)
	copy(a.HardwareAddressSender(), guestMAC)
	copy(a.ProtocolAddressSender(), netip.MustParseAddr(testGuest).AsSlice())
	copy(a.ProtocolAddressTarget(), netip.MustParseAddr(target).AsSlice())
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(frame))), frame...)
}

// The wire format is QEMU's (4-byte big-endian length, then the frame), and ARP is answered for
// the gateway and the host alias only, though the stack spoofs every address.
func TestQEMUFramingAndARP(t *testing.T) {
	cfg := testConfig(t, nil)
	s, err := cfg.validate()
	if err != nil {
		t.Fatal(err)
	}
	st, link, err := newStack(s)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ours, qemu := net.Pipe()
	defer qemu.Close()
	link.start(ours)
	_ = qemu.SetDeadline(time.Now().Add(5 * time.Second))

	go func() {
		for _, target := range []string{"192.168.127.9", testGuest, testGateway, testHostAlias} {
			if _, err := qemu.Write(arpRequest(target)); err != nil {
				return
			}
		}
	}()
	for _, want := range []string{testGateway, testHostAlias} {
		var length [4]byte
		if _, err := io.ReadFull(qemu, length[:]); err != nil {
			t.Fatal(err)
		}
		frame := make([]byte, binary.BigEndian.Uint32(length[:]))
		if _, err := io.ReadFull(qemu, frame); err != nil {
			t.Fatal(err)
		}
		eth := header.Ethernet(frame)
		if eth.Type() != header.ARPProtocolNumber || eth.SourceAddress().String() != gatewayMAC || eth.DestinationAddress().String() != testGuestMAC {
			t.Fatalf("frame %x: want an ARP reply from %s to %s", frame, gatewayMAC, testGuestMAC)
		}
		a := header.ARP(frame[header.EthernetMinimumSize:])
		if got := tcpip.AddrFrom4Slice(a.ProtocolAddressSender()).String(); a.Op() != header.ARPReply || got != want {
			t.Fatalf("ARP op %d for %s, want a reply for %s", a.Op(), got, want)
		}
	}
}
