package boxnet

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// qemuLink is a stack's wire to the one QEMU connection, in QEMU's stream framing
// (-netdev stream): a 4-byte big-endian length, then the ethernet frame. It carries whole
// frames; gVisor's ethernet endpoint, stacked on it, writes and parses the headers.
//
// gvisor-tap-vsock's tap.Switch and tap.LinkEndpoint do this job for gvproxy, but the switch
// serves many VMs and drops frames to a MAC it has not yet seen (so a published port would not
// reach a guest that had sent nothing), and the tap package pulls in gopacket, whose tables cost
// this process 8 MB of resident memory.
type qemuLink struct {
	mtu uint32 // largest frame, ethernet header included
	mac tcpip.LinkAddress
	// The stack answers ARP for every address when it spoofs; only these answers go out, so the
	// guest does not see the rest of the subnet (or its own address) as taken.
	arpAnswers map[tcpip.Address]bool

	dispatcher stack.NetworkDispatcher

	mu   sync.Mutex // serializes frames on conn
	conn net.Conn   // nil until QEMU connects; frames sent before are dropped, as on a cable
}

var _ stack.LinkEndpoint = (*qemuLink)(nil)

func newQEMULink(ipMTU uint32, mac net.HardwareAddr, arpAnswers ...tcpip.Address) *qemuLink {
	l := &qemuLink{mtu: ipMTU + header.EthernetMinimumSize, mac: tcpip.LinkAddress(mac), arpAnswers: map[tcpip.Address]bool{}}
	for _, a := range arpAnswers {
		l.arpAnswers[a] = true
	}
	return l
}

// start attaches conn (frames are sent on it from now on) and reads QEMU's frames into the stack
// until the connection ends; the channel gets the reason.
func (l *qemuLink) start(conn net.Conn) <-chan error {
	l.mu.Lock()
	l.conn = conn
	l.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		done <- l.readFrames(conn)
		l.mu.Lock()
		l.conn = nil
		l.mu.Unlock()
	}()
	return done
}

func (l *qemuLink) readFrames(conn net.Conn) error {
	r := bufio.NewReaderSize(conn, 64<<10)
	var length [4]byte
	for {
		if _, err := io.ReadFull(r, length[:]); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(length[:])
		if n < header.EthernetMinimumSize || n > l.mtu {
			return fmt.Errorf("frame of %d bytes from QEMU (largest is %d)", n, l.mtu)
		}
		frame := make([]byte, n)
		if _, err := io.ReadFull(r, frame); err != nil {
			return err
		}
		l.receive(frame)
	}
}

// receive hands the stack frames for this MAC, broadcast and multicast. The guest may send to
// any MAC it likes; nothing else is on this wire to take those frames.
func (l *qemuLink) receive(frame []byte) {
	dst := header.Ethernet(frame).DestinationAddress()
	if dst != l.mac && dst != header.EthernetBroadcastAddress && !header.IsMulticastEthernetAddress(dst) {
		return
	}
	if l.dispatcher == nil {
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
	l.dispatcher.DeliverNetworkPacket(0, pkt) // the ethernet endpoint reads the type
	pkt.DecRef()
}

// WritePackets sends frames the stack wrote.
func (l *qemuLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, pkt := range pkts.AsSlice() {
		if pkt.NetworkProtocolNumber == arp.ProtocolNumber {
			h := header.ARP(pkt.NetworkHeader().Slice())
			if h.IsValid() && h.Op() == header.ARPReply && !l.arpAnswers[tcpip.AddrFrom4Slice(h.ProtocolAddressSender())] {
				continue
			}
		}
		if l.conn == nil {
			continue
		}
		frame := pkt.ToView()
		out := make([]byte, 4+frame.Size())
		binary.BigEndian.PutUint32(out, uint32(frame.Size()))
		copy(out[4:], frame.AsSlice())
		frame.Release()
		if _, err := l.conn.Write(out); err != nil {
			logger.Debug("frame to QEMU lost", "err", err)
		}
	}
	return pkts.Len(), nil
}

// The rest of stack.LinkEndpoint: a plain full-frame link.

func (l *qemuLink) MTU() uint32                                  { return l.mtu }
func (l *qemuLink) SetMTU(mtu uint32)                            { l.mtu = mtu }
func (l *qemuLink) MaxHeaderLength() uint16                      { return 0 }
func (l *qemuLink) LinkAddress() tcpip.LinkAddress               { return l.mac }
func (l *qemuLink) SetLinkAddress(mac tcpip.LinkAddress)         { l.mac = mac }
func (l *qemuLink) Capabilities() stack.LinkEndpointCapabilities { return 0 }
func (l *qemuLink) Attach(d stack.NetworkDispatcher)             { l.dispatcher = d }
func (l *qemuLink) IsAttached() bool                             { return l.dispatcher != nil }
func (l *qemuLink) Wait()                                        {}
func (l *qemuLink) ARPHardwareType() header.ARPHardwareType      { return header.ARPHardwareNone }
func (l *qemuLink) AddHeader(*stack.PacketBuffer)                {}
func (l *qemuLink) ParseHeader(*stack.PacketBuffer) bool         { return true }
func (l *qemuLink) Close()                                       {}
func (l *qemuLink) SetOnCloseAction(func())                      {}
