package boxnet

import (
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// hostAliasNames resolve to the host alias; every other name goes to the upstreams.
var hostAliasNames = map[string]bool{"host.boxlite.internal": true, "host.docker.internal": true}

func hostAliasNameList() []string {
	names := make([]string, 0, len(hostAliasNames))
	for n := range hostAliasNames {
		names = append(names, n)
	}
	return names
}

const (
	upstreamTimeout = 3 * time.Second
	hostAliasTTL    = 60
)

// dnsService is the gateway's DNS on udp and tcp port 53: policy first (a refused name is
// NXDOMAIN), then the host alias names, then a plain forward of the query to the upstreams in
// turn. Every address answered is remembered for the policy.
type dnsService struct {
	upstreams []string
	hostAlias netip.Addr
	filter    *filter
	servers   []*dns.Server
}

func startDNS(st *stack.Stack, s *settings, f *filter) (*dnsService, error) {
	addr := tcpip.FullAddress{NIC: nicID, Addr: tcpAddr(s.gateway), Port: 53}
	udpConn, err := gonet.DialUDP(st, &addr, nil, ipv4.ProtocolNumber)
	if err != nil {
		return nil, err
	}
	tcpListener, err := gonet.ListenTCP(st, addr, ipv4.ProtocolNumber)
	if err != nil {
		udpConn.Close()
		return nil, err
	}
	d := &dnsService{upstreams: s.dnsUpstreams, hostAlias: s.hostAlias, filter: f}
	d.servers = []*dns.Server{
		{PacketConn: udpConn, Handler: d.handler("udp")},
		{Listener: tcpListener, Handler: d.handler("tcp")},
	}
	for _, srv := range d.servers {
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				logger.Debug("dns server ended", "err", err)
			}
		}()
	}
	return d, nil
}

func (d *dnsService) close() {
	for _, srv := range d.servers {
		_ = srv.Shutdown()
	}
}

// handler answers queries that came over network ("udp" or "tcp"); forwards use the same one,
// so a truncated UDP answer reaches the guest as such and it retries over TCP.
func (d *dnsService) handler(network string) dns.Handler {
	return dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		reply := d.answer(req, network)
		if err := w.WriteMsg(reply); err != nil {
			logger.Debug("dns reply failed", "err", err)
		}
	})
}

func (d *dnsService) answer(req *dns.Msg, network string) *dns.Msg {
	if len(req.Question) != 1 {
		return new(dns.Msg).SetRcode(req, dns.RcodeFormatError)
	}
	q := req.Question[0]
	name := canonicalName(q.Name)
	var reply *dns.Msg
	switch {
	case !d.filter.current().NameAllowed(name):
		logger.Debug("dns refused by policy", "name", name)
		reply = new(dns.Msg).SetRcode(req, dns.RcodeNameError)
	case hostAliasNames[name]:
		reply = d.hostAliasAnswer(req, q)
	default:
		reply = d.forward(req, network)
	}
	if reply.Rcode == dns.RcodeSuccess {
		for _, rr := range reply.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				d.learn(name, rr.A)
			case *dns.AAAA:
				d.learn(name, rr.AAAA)
			}
		}
	}
	return reply
}

func (d *dnsService) learn(name string, ip net.IP) {
	if addr, ok := netip.AddrFromSlice(ip); ok {
		d.filter.learn(name, addr)
	}
}

// hostAliasAnswer: an A record for A queries, an empty answer (the name exists) for the rest.
func (d *dnsService) hostAliasAnswer(req *dns.Msg, q dns.Question) *dns.Msg {
	reply := new(dns.Msg).SetReply(req)
	reply.Authoritative = true
	if q.Qtype == dns.TypeA {
		reply.Answer = []dns.RR{&dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: hostAliasTTL},
			A:   d.hostAlias.AsSlice(),
		}}
	}
	return reply
}

func (d *dnsService) forward(req *dns.Msg, network string) *dns.Msg {
	client := &dns.Client{Net: network, Timeout: upstreamTimeout}
	for _, upstream := range d.upstreams {
		reply, _, err := client.Exchange(req, upstream)
		if err == nil {
			return reply
		}
		logger.Debug("dns upstream failed", "upstream", upstream, "err", err)
	}
	return new(dns.Msg).SetRcode(req, dns.RcodeServerFailure)
}
