package boxnet

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const (
	// A guest's SYN waits while we dial; past this it is reset (Linux itself gives up after ~2 min).
	dialTimeout = 30 * time.Second
	// How long a connection that must name its host may take to send its first bytes.
	peekTimeout = 10 * time.Second
	// A ClientHello or request head larger than this names no host we will read.
	maxPeek = 32 << 10
	// SYNs being dialed at once; more are dropped (the guest retransmits them).
	maxPendingConnections = 512
	// Each UDP flow holds a host socket, and one datagram opens one: past this many, new flows
	// are refused (ICMP unreachable) until old ones go idle.
	maxUDPFlows = 1024
)

// Destinations no policy opens: the host's own loopback (reachable only as the host alias), the
// box subnet other than the alias (the gateway serves only DNS), link-local (cloud metadata
// services hold the host's credentials, not the box's), multicast, broadcast and reserved.
var neverForwarded = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

var hostLoopback = netip.MustParseAddr("127.0.0.1")

// outbound NATs the guest's TCP connections and UDP flows to sockets of this process.
type outbound struct {
	stack     *stack.Stack
	subnet    netip.Prefix
	hostAlias netip.Addr
	filter    *filter
	counters  *counters
	udpFlows  atomic.Int32
}

// install makes the stack hand every TCP SYN and UDP datagram that no local endpoint (DNS, a
// flow already open) takes to us. A refusal returns false from the protocol handler, so the
// stack answers as a closed port does: TCP RST, or ICMP port unreachable for UDP.
func (o *outbound) install() {
	tcpForwarder := tcp.NewForwarder(o.stack, 0, maxPendingConnections, o.forwardTCP)
	o.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpForwarder.HandlePacket)
	udpForwarder := udp.NewForwarder(o.stack, o.forwardUDP)
	o.stack.SetTransportProtocolHandler(udp.ProtocolNumber, func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		if v, _, _ := o.judge(id, false); v == refuse || o.udpFlows.Load() >= maxUDPFlows {
			return false
		}
		return udpForwarder.HandlePacket(id, pkt)
	})
}

// hostAddress says where on the host a guest destination goes, or false if nowhere.
func (o *outbound) hostAddress(id stack.TransportEndpointID) (string, bool) {
	dst := netipAddr(id.LocalAddress)
	host := dst
	if dst == o.hostAlias {
		host = hostLoopback
	} else if o.subnet.Contains(dst) || inAny(neverForwarded, dst) {
		return "", false
	}
	return net.JoinHostPort(host.String(), strconv.Itoa(int(id.LocalPort))), true
}

// judge decides a new connection or flow and says where on the host it goes.
func (o *outbound) judge(id stack.TransportEndpointID, isTCP bool) (verdict, *Policy, string) {
	dst := netipAddr(id.LocalAddress)
	hostAddr, ok := o.hostAddress(id)
	if !ok {
		logger.Debug("refused: never forwarded", "dst", dst, "port", id.LocalPort, "tcp", isTCP)
		return refuse, nil, ""
	}
	v, policy := o.filter.decide(dst, id.LocalPort, isTCP)
	if v == refuse {
		logger.Debug("refused by policy", "dst", dst, "port", id.LocalPort, "tcp", isTCP)
	}
	return v, policy, hostAddr
}

func inAny(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwardTCP runs on its own goroutine per SYN.
func (o *outbound) forwardTCP(r *tcp.ForwarderRequest) {
	v, policy, hostAddr := o.judge(r.ID(), true)
	switch v {
	case refuse:
		r.Complete(true)
	case admit:
		// Dial first, so that a refused or unreachable host reaches the guest as a reset SYN.
		host, err := net.DialTimeout("tcp", hostAddr, dialTimeout)
		if err != nil {
			logger.Debug("dial failed", "dst", hostAddr, "err", err)
			r.Complete(true)
			return
		}
		guest, _, err := acceptTCP(r)
		if err != nil {
			host.Close()
			return
		}
		o.counters.relay(guest, host)
	case admitIfNamed:
		// The name comes after the handshake, so the guest is accepted first and reset if the
		// name is refused; the host is dialed only for an admitted name.
		guest, ep, err := acceptTCP(r)
		if err != nil {
			return
		}
		first, name, found := peek(guest)
		if !policy.admitsPeeked(name, found) {
			logger.Debug("refused by policy: peeked name", "dst", hostAddr, "name", name)
			ep.Abort()
			return
		}
		host, err := net.DialTimeout("tcp", hostAddr, dialTimeout)
		if err != nil {
			logger.Debug("dial failed", "dst", hostAddr, "err", err)
			ep.Abort()
			return
		}
		if _, err := host.Write(first); err != nil {
			host.Close()
			ep.Abort()
			return
		}
		o.counters.sent.Add(uint64(len(first)))
		o.counters.relay(guest, host)
	}
}

// acceptTCP completes the guest's handshake.
func acceptTCP(r *tcp.ForwarderRequest) (*gonet.TCPConn, tcpip.Endpoint, error) {
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	r.Complete(false)
	if err != nil {
		return nil, nil, errors.New(err.String())
	}
	return gonet.NewTCPConn(&wq, ep), ep, nil
}

// peek reads a connection's first bytes until they name a host, cannot, or peekTimeout passes.
// It returns the bytes read, to be sent on.
func peek(c net.Conn) (first []byte, name string, found bool) {
	_ = c.SetReadDeadline(time.Now().Add(peekTimeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	chunk := make([]byte, 4096)
	for len(first) < maxPeek {
		n, err := c.Read(chunk)
		first = append(first, chunk[:n]...)
		name, perr := peekedName(first)
		switch {
		case perr == nil:
			return first, name, true
		case perr != errNeedMore:
			return first, "", false
		case err != nil:
			return first, "", false
		}
	}
	return first, "", false
}

// forwardUDP runs on the stack's goroutine for the first datagram of a flow: it must not block.
func (o *outbound) forwardUDP(r *udp.ForwarderRequest) {
	// install has judged this flow already.
	hostAddr, ok := o.hostAddress(r.ID())
	if !ok {
		return
	}
	host, err := net.Dial("udp", hostAddr) // a UDP dial sends nothing; it fails only without a route
	if err != nil {
		logger.Debug("dial failed", "dst", hostAddr, "err", err)
		return
	}
	var wq waiter.Queue
	ep, tcpErr := r.CreateEndpoint(&wq)
	if tcpErr != nil {
		host.Close()
		return
	}
	o.udpFlows.Add(1)
	go func() {
		o.counters.relayDatagrams(gonet.NewUDPConn(&wq, ep), host)
		o.udpFlows.Add(-1)
	}()
}

// isRefused: a connected UDP socket reports an ICMP port unreachable for an earlier datagram.
func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}
