package boxnet

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/containers/gvisor-tap-vsock/pkg/tap"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// maxFrame bounds a frame length read from QEMU: the largest MTU plus the ethernet header.
const maxFrame = maxMTU + header.EthernetMinimumSize

// qemuLink carries ethernet frames between a tap.LinkEndpoint and the one QEMU connection, in
// QEMU's stream framing (-netdev stream): a 4-byte big-endian length, then the frame. It stands
// in for tap.Switch, which serves many VMs and drops frames to a MAC it has not yet seen: with
// one VM every frame goes to it, even before the guest has sent anything.
type qemuLink struct {
	endpoint *tap.LinkEndpoint

	mu   sync.Mutex // serializes frames on conn
	conn net.Conn   // nil until QEMU connects; frames sent before are dropped, as on a cable
}

func newQEMULink(endpoint *tap.LinkEndpoint) *qemuLink {
	l := &qemuLink{endpoint: endpoint}
	endpoint.Connect(l)
	return l
}

// DeliverNetworkPacket sends a frame the stack wrote (tap.NetworkSwitch).
func (l *qemuLink) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	frame := pkt.ToView().AsSlice()
	out := make([]byte, 4+len(frame))
	binary.BigEndian.PutUint32(out, uint32(len(frame)))
	copy(out[4:], frame)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return
	}
	if _, err := l.conn.Write(out); err != nil {
		logger.Debug("frame to QEMU lost", "err", err)
	}
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
		if n < header.EthernetMinimumSize || n > maxFrame {
			return fmt.Errorf("frame of %d bytes from QEMU", n)
		}
		frame := make([]byte, n)
		if _, err := io.ReadFull(r, frame); err != nil {
			return err
		}
		l.receive(frame)
	}
}

// receive hands the stack frames for the gateway, broadcast and multicast; the guest may send
// others (to any MAC it likes), and nothing else is on this wire to take them.
func (l *qemuLink) receive(frame []byte) {
	eth := header.Ethernet(frame)
	dst := eth.DestinationAddress()
	if dst != l.endpoint.LinkAddress() && dst != header.EthernetBroadcastAddress && !header.IsMulticastEthernetAddress(dst) {
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		Payload: buffer.MakeWithData(frame[header.EthernetMinimumSize:]),
	})
	l.endpoint.DeliverNetworkPacket(eth.Type(), pkt)
	pkt.DecRef()
}
