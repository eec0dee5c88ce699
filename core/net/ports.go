package boxnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// published is one host port bound for the guest: connections and datagrams to it go to the
// guest's port, coming from the gateway address.
type published struct {
	Port     // with the port actually bound
	tcp      net.Listener
	udp      net.PacketConn
	guest    tcpip.FullAddress
	stack    *stack.Stack
	counters *counters
}

// listenPorts binds every published port, or none.
func listenPorts(ports []Port, st *stack.Stack, guest netip.Addr, c *counters) ([]*published, error) {
	var bound []*published
	for _, port := range ports {
		p, err := listenPort(port)
		if err != nil {
			for _, b := range bound {
				b.close()
			}
			return nil, err
		}
		p.guest = tcpip.FullAddress{NIC: nicID, Addr: tcpAddr(guest), Port: uint16(port.GuestPort)}
		p.stack, p.counters = st, c
		bound = append(bound, p)
	}
	return bound, nil
}

func listenPort(port Port) (*published, error) {
	addr := net.JoinHostPort(port.HostIP, strconv.Itoa(port.HostPort))
	p := &published{Port: port}
	var err error
	if port.Protocol == "tcp" {
		if p.tcp, err = net.Listen("tcp", addr); err == nil {
			p.HostPort = p.tcp.Addr().(*net.TCPAddr).Port
		}
	} else {
		if p.udp, err = net.ListenPacket("udp", addr); err == nil {
			p.HostPort = p.udp.LocalAddr().(*net.UDPAddr).Port
		}
	}
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("host port %s is already in use", port)
	case err != nil:
		return nil, fmt.Errorf("cannot listen on host port %s: %w", port, err)
	}
	return p, nil
}

func (p *published) close() {
	if p.tcp != nil {
		p.tcp.Close()
	}
	if p.udp != nil {
		p.udp.Close()
	}
}

func (p *published) serve() {
	if p.tcp != nil {
		p.serveTCP()
	} else {
		p.serveUDP()
	}
}

func (p *published) serveTCP() {
	for {
		host, err := p.tcp.Accept()
		if err != nil {
			return // closed
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
			defer cancel()
			guest, err := gonet.DialContextTCP(ctx, p.stack, p.guest, ipv4.ProtocolNumber)
			if err != nil {
				logger.Debug("published port: guest refused", "port", p.Port, "err", err)
				host.Close()
				return
			}
			p.counters.relay(guest, host)
		}()
	}
}

// udpFlow is one host client of a published UDP port, with its own socket in the stack.
type udpFlow struct {
	guest      *gonet.UDPConn
	lastActive atomic.Int64
}

func (p *published) serveUDP() {
	var mu sync.Mutex
	flows := make(map[string]*udpFlow)
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, f := range flows {
			f.guest.Close()
		}
	}()
	buf := make([]byte, relayBufferSize)
	for {
		n, client, err := p.udp.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		mu.Lock()
		flow := flows[client.String()]
		if flow == nil {
			guest, err := gonet.DialUDP(p.stack, nil, &p.guest, ipv4.ProtocolNumber)
			if err != nil {
				mu.Unlock()
				continue
			}
			flow = &udpFlow{guest: guest}
			flows[client.String()] = flow
			go func() {
				p.replies(flow, client)
				mu.Lock()
				delete(flows, client.String())
				mu.Unlock()
				guest.Close()
			}()
		}
		mu.Unlock()
		flow.lastActive.Store(time.Now().UnixNano())
		if _, err := flow.guest.Write(buf[:n]); err == nil {
			p.counters.received.Add(uint64(n))
		}
	}
}

// replies sends the guest's datagrams back to the client until the flow is idle.
func (p *published) replies(flow *udpFlow, client net.Addr) {
	buf := make([]byte, relayBufferSize)
	for {
		_ = flow.guest.SetReadDeadline(time.Now().Add(udpIdleTimeout))
		n, err := flow.guest.Read(buf)
		switch {
		case isTimeout(err):
			if time.Since(time.Unix(0, flow.lastActive.Load())) < udpIdleTimeout {
				continue
			}
			return
		case err != nil:
			return
		}
		flow.lastActive.Store(time.Now().UnixNano())
		if _, err := p.udp.WriteTo(buf[:n], client); err == nil {
			p.counters.sent.Add(uint64(n))
		}
	}
}
