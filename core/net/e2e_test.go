package boxnet

// End-to-end tests: the real helper process (this test binary re-executed as boxlite-net), with
// the test playing QEMU: it connects to qemu_socket and runs a second gVisor stack as the guest.
// Every server the guest reaches listens on the host's 127.0.0.1.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

const (
	testSubnet    = "192.168.127.0/24"
	testGateway   = "192.168.127.1"
	testGuest     = "192.168.127.2"
	testHostAlias = "192.168.127.254"
	testGuestMAC  = "5a:94:ef:e4:0c:ee"
	// A refusal must arrive well before any client timeout.
	refusalBound = time.Second
	helloBody    = "hello from the host"
)

func TestMain(m *testing.M) {
	if os.Getenv("BOXNET_TEST_RUN_HELPER") == "1" {
		os.Exit(Main(os.Args[1:], os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// hostServers are the host's side: HTTP, UDP echo and an upstream DNS, all on 127.0.0.1.
type hostServers struct {
	httpPort   string
	udpPort    string
	dnsAddr    string
	dnsQueries sync.Map // name → number of queries that reached the upstream
}

func startHostServers(t *testing.T) *hostServers {
	h := &hostServers{}
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, n)
			return
		}
		fmt.Fprint(w, helloBody)
	}))
	t.Cleanup(web.Close)
	_, h.httpPort, _ = net.SplitHostPort(web.Listener.Addr().String())

	echo, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:n], from)
		}
	}()
	_, h.udpPort, _ = net.SplitHostPort(echo.LocalAddr().String())

	records := map[string]string{
		"allowed.test. A":   testHostAlias,
		"other.test. A":     testHostAlias,
		"name.test. A":      "192.0.2.10",
		"name.test. AAAA":   "2001:db8::10",
		"a.allowed.test. A": testHostAlias,
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		q := req.Question[0]
		count, _ := h.dnsQueries.LoadOrStore(canonicalName(q.Name), new(atomic.Int32))
		count.(*atomic.Int32).Add(1)
		reply := new(dns.Msg).SetReply(req)
		if ip, ok := records[strings.ToLower(q.Name)+" "+dns.TypeToString[q.Qtype]]; ok {
			rr, _ := dns.NewRR(fmt.Sprintf("%s 30 IN %s %s", q.Name, dns.TypeToString[q.Qtype], ip))
			reply.Answer = append(reply.Answer, rr)
		} else {
			reply.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(reply)
	})
	udpConn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcpListener, err := net.Listen("tcp", udpConn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: udpConn, Handler: handler}, {Listener: tcpListener, Handler: handler}} {
		go func() { _ = srv.ActivateAndServe() }()
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	h.dnsAddr = udpConn.LocalAddr().String()
	return h
}

func (h *hostServers) queries(name string) int32 {
	count, ok := h.dnsQueries.Load(name)
	if !ok {
		return 0
	}
	return count.(*atomic.Int32).Load()
}

func testConfig(t *testing.T, hs *hostServers) Config {
	dir, err := os.MkdirTemp("", "boxnet") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := Config{
		QEMUSocket: filepath.Join(dir, "net.sock"), ControlSocket: filepath.Join(dir, "net-ctl.sock"),
		Subnet: testSubnet, GatewayIP: testGateway, GuestIP: testGuest, GuestMAC: testGuestMAC,
		HostAliasIP: testHostAlias, MTU: 1500,
	}
	if hs != nil {
		cfg.DNSUpstreams = []string{hs.dnsAddr}
	}
	return cfg
}

// helperProcess is a running boxlite-net and its first stdout line.
type helperProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *bytes.Buffer
	first  struct {
		Ready bool   `json:"ready"`
		Ports []Port `json:"ports"`
		Error string `json:"error"`
	}
	exited chan error
}

func runHelper(t *testing.T, cfg Config) *helperProcess {
	t.Helper()
	configPath := filepath.Join(filepath.Dir(cfg.QEMUSocket), "config.json")
	data, _ := json.Marshal(cfg)
	if err := os.WriteFile(configPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	p := &helperProcess{stderr: &bytes.Buffer{}, exited: make(chan error, 1)}
	p.cmd = exec.Command(os.Args[0], "--config", configPath)
	p.cmd.Env = append(os.Environ(), "BOXNET_TEST_RUN_HELPER=1", "BOXLITE_NET_LOG=debug")
	p.cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan []byte, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadBytes('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, stdout)
		p.exited <- p.cmd.Wait()
	}()
	select {
	case line := <-lines:
		if err := json.Unmarshal(line, &p.first); err != nil {
			t.Fatalf("first line %q: %v; stderr:\n%s", line, err, p.stderr)
		}
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("no ready line in 10 s; stderr:\n%s", p.stderr)
	}
	return p
}

// stop closes stdin, as the supervisor's death would, and checks a clean exit that removed both
// sockets.
func (p *helperProcess) stop(t *testing.T, cfg Config) {
	t.Helper()
	p.stdin.Close()
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("helper exit: %v; stderr:\n%s", err, p.stderr)
		}
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("helper did not exit on stdin EOF; stderr:\n%s", p.stderr)
	}
	for _, path := range []string{cfg.QEMUSocket, cfg.ControlSocket} {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", path, err)
		}
	}
}

// box is a running helper with a guest stack connected to it.
type box struct {
	t      *testing.T
	cfg    Config
	helper *helperProcess
	guest  *stack.Stack
}

func startBox(t *testing.T, cfg Config) *box {
	t.Helper()
	p := runHelper(t, cfg)
	if !p.first.Ready {
		t.Fatalf("helper not ready: %q; stderr:\n%s", p.first.Error, p.stderr)
	}
	b := &box{t: t, cfg: cfg, helper: p}
	for _, path := range []string{cfg.QEMUSocket, cfg.ControlSocket} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", path, err, fi.Mode().Perm())
		}
	}
	conn, err := net.Dial("unix", cfg.QEMUSocket)
	if err != nil {
		t.Fatal(err)
	}
	b.guest = newGuestStack(t, conn)
	t.Cleanup(func() {
		conn.Close()
		b.guest.Close()
		p.stop(t, cfg)
		if t.Failed() {
			t.Logf("helper stderr:\n%s", p.stderr)
		}
	})
	return b
}

// newGuestStack is the "VM": a stack with the guest's address, routing everything via the
// gateway, on the same framing QEMU uses.
func newGuestStack(t *testing.T, conn net.Conn) *stack.Stack {
	mac, _ := net.ParseMAC(testGuestMAC)
	guest := tcpip.AddrFrom4Slice(net.ParseIP(testGuest).To4())
	link := newQEMULink(1500, mac, guest)
	st := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	if err := st.CreateNIC(1, ethernet.New(link)); err != nil {
		t.Fatal(err)
	}
	if err := st.AddProtocolAddress(1, tcpip.ProtocolAddress{
		Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: guest, PrefixLen: 24},
	}, stack.AddressProperties{}); err != nil {
		t.Fatal(err)
	}
	st.SetRouteTable([]tcpip.Route{{
		Destination: header.IPv4EmptySubnet,
		Gateway:     tcpip.AddrFrom4Slice(net.ParseIP(testGateway).To4()),
		NIC:         1,
	}})
	link.start(conn)
	return st
}

func fullAddr(hostport string) tcpip.FullAddress {
	host, port, _ := net.SplitHostPort(hostport)
	var p uint16
	fmt.Sscan(port, &p)
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4Slice(net.ParseIP(host).To4()), Port: p}
}

func (b *box) dialTCP(hostport string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return gonet.DialContextTCP(ctx, b.guest, fullAddr(hostport), ipv4.ProtocolNumber)
}

func (b *box) httpClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(_ context.Context, _, addr string) (net.Conn, error) { return b.dialTCP(addr) },
		},
	}
}

// get fetches url from the guest; host, when set, is the Host header sent.
func (b *box) get(url, host string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = host
	resp, err := b.httpClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// udpExchange sends one datagram from the guest and waits for one back. It reads in short
// slices because gonet does not wake a blocked reader for an ICMP error, which a new read
// returns at once (as recv on a connected Linux socket returns ECONNREFUSED).
func (b *box) udpExchange(hostport, payload string) (string, error) {
	raddr := fullAddr(hostport)
	conn, err := gonet.DialUDP(b.guest, nil, &raddr, ipv4.ProtocolNumber)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(payload)); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(5 * time.Second); ; {
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		n, err := conn.Read(buf)
		if !isTimeout(err) || time.Now().After(deadline) {
			return string(buf[:n]), err
		}
	}
}

// resolve asks the gateway's DNS from the guest, over network "udp" or "tcp".
func (b *box) resolve(network, name string, qtype uint16) *dns.Msg {
	b.t.Helper()
	gateway := fullAddr(testGateway + ":53")
	var conn net.Conn
	var err error
	if network == "udp" {
		conn, err = gonet.DialUDP(b.guest, nil, &gateway, ipv4.ProtocolNumber)
	} else {
		conn, err = b.dialTCP(testGateway + ":53")
	}
	if err != nil {
		b.t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	co := &dns.Conn{Conn: conn}
	if err := co.WriteMsg(new(dns.Msg).SetQuestion(dns.Fqdn(name), qtype)); err != nil {
		b.t.Fatal(err)
	}
	reply, err := co.ReadMsg()
	if err != nil {
		b.t.Fatalf("dns %s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return reply
}

// answers is a reply's records as "A 1.2.3.4" strings, or its rcode.
func answers(m *dns.Msg) string {
	if m.Rcode != dns.RcodeSuccess {
		return dns.RcodeToString[m.Rcode]
	}
	var out []string
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, "A "+rr.A.String())
		case *dns.AAAA:
			out = append(out, "AAAA "+rr.AAAA.String())
		}
	}
	return strings.Join(out, ",")
}

func (b *box) control(request string) map[string]any {
	b.t.Helper()
	conn, err := net.Dial("unix", b.cfg.ControlSocket)
	if err != nil {
		b.t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(request + "\n")); err != nil {
		b.t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		b.t.Fatal(err)
	}
	var reply map[string]any
	if err := json.Unmarshal(line, &reply); err != nil {
		b.t.Fatalf("control reply %q: %v", line, err)
	}
	return reply
}

func (b *box) setPolicy(policy string) {
	b.t.Helper()
	if reply := b.control(`{"op":"set_policy","policy":` + policy + `}`); reply["ok"] != true {
		b.t.Fatalf("set_policy %s: %v", policy, reply)
	}
}

// expectTCPRefused: a connection to hostport fails, and fast.
func (b *box) expectTCPRefused(hostport string) {
	b.t.Helper()
	start := time.Now()
	conn, err := b.dialTCP(hostport)
	if err == nil {
		conn.Close()
		b.t.Fatalf("connection to %s was admitted", hostport)
	}
	if elapsed := time.Since(start); elapsed > refusalBound {
		b.t.Fatalf("connection to %s refused after %v (%v), want < %v", hostport, elapsed, err, refusalBound)
	}
}

func (b *box) expectUDPRefused(hostport string) {
	b.t.Helper()
	start := time.Now()
	if reply, err := b.udpExchange(hostport, "ping"); err == nil {
		b.t.Fatalf("datagram to %s answered %q", hostport, reply)
	} else if elapsed := time.Since(start); elapsed > refusalBound {
		b.t.Fatalf("datagram to %s refused after %v (%v), want < %v", hostport, elapsed, err, refusalBound)
	}
}

func TestOutboundDNSAndStats(t *testing.T) {
	hs := startHostServers(t)
	b := startBox(t, testConfig(t, hs))
	alias := func(port string) string { return net.JoinHostPort(testHostAlias, port) }

	if body, err := b.get("http://"+alias(hs.httpPort)+"/", ""); err != nil || body != helloBody {
		t.Fatalf("GET via host alias: %q, %v", body, err)
	}
	if reply, err := b.udpExchange(alias(hs.udpPort), "ping"); err != nil || reply != "ping" {
		t.Fatalf("UDP echo via host alias: %q, %v", reply, err)
	}

	for _, network := range []string{"udp", "tcp"} {
		for _, c := range []struct {
			name  string
			qtype uint16
			want  string
		}{
			{"name.test", dns.TypeA, "A 192.0.2.10"},
			{"NAME.test", dns.TypeAAAA, "AAAA 2001:db8::10"},
			{"missing.test", dns.TypeA, "NXDOMAIN"},
			{"host.boxlite.internal", dns.TypeA, "A " + testHostAlias},
			{"host.docker.internal", dns.TypeA, "A " + testHostAlias},
			{"host.docker.internal", dns.TypeAAAA, ""},
		} {
			if got := answers(b.resolve(network, c.name, c.qtype)); got != c.want {
				t.Errorf("%s %s over %s: %q, want %q", c.name, dns.TypeToString[c.qtype], network, got, c.want)
			}
		}
	}
	if n := hs.queries("host.boxlite.internal"); n != 0 {
		t.Errorf("host.boxlite.internal went upstream %d times", n)
	}

	// What no policy opens: the gateway beyond DNS, the rest of the box subnet, link-local. (The
	// host's loopback by its own address is TestNeverForwarded's: a gVisor guest never sends
	// packets for 127.0.0.0/8 out of its NIC.)
	for _, dst := range []string{testGateway + ":80", "192.168.127.9:80", "169.254.169.254:80"} {
		b.expectTCPRefused(dst)
	}
	b.expectUDPRefused(testGateway + ":5353")

	stats := b.control(`{"op":"stats"}`)
	sent, received, conns := stats["bytes_sent"].(float64), stats["bytes_received"].(float64), stats["tcp_connections"].(float64)
	// One GET (request over ~40 bytes, response with the body) and one 4-byte echo each way.
	if sent < 40+4 || received < float64(len(helloBody))+4 || conns != 1 {
		t.Errorf("stats %v: want bytes_sent >= 44, bytes_received >= %d, tcp_connections 1", stats, len(helloBody)+4)
	}
	if reply := b.control(`{"op":"nope"}`); !strings.Contains(fmt.Sprint(reply["error"]), "nope") {
		t.Errorf("unknown op: %v", reply)
	}
}

func TestPublishedPorts(t *testing.T) {
	cfg := testConfig(t, nil)
	cfg.Ports = []Port{
		{HostIP: "127.0.0.1", HostPort: 0, GuestPort: 80, Protocol: "tcp"},
		{HostIP: "", HostPort: 0, GuestPort: 7, Protocol: "udp"},
	}
	b := startBox(t, cfg)
	ports := b.helper.first.Ports
	if len(ports) != 2 || ports[0].HostPort == 0 || ports[1].HostPort == 0 || ports[1].HostIP != "127.0.0.1" {
		t.Fatalf("ready ports: %+v", ports)
	}
	var viaControl portsReply
	data, _ := json.Marshal(b.control(`{"op":"ports"}`))
	if err := json.Unmarshal(data, &viaControl); err != nil || fmt.Sprint(viaControl.Ports) != fmt.Sprint(ports) {
		t.Errorf("ports op: %s, want %+v", data, ports)
	}

	// The guest serves and has sent nothing yet: the first frame on the wire is the helper's.
	guestTCP, err := gonet.ListenTCP(b.guest, fullAddr(testGuest+":80"), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer guestTCP.Close()
	go func() {
		for {
			c, err := guestTCP.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	local := fullAddr(testGuest + ":7")
	guestUDP, err := gonet.DialUDP(b.guest, &local, nil, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer guestUDP.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := guestUDP.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = guestUDP.WriteTo(append([]byte("guest:"), buf[:n]...), from)
		}
	}()

	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0].HostPort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("through the published port")); err != nil {
		t.Fatal(err)
	}
	conn.(*net.TCPConn).CloseWrite()
	if echoed, err := io.ReadAll(conn); err != nil || string(echoed) != "through the published port" {
		t.Fatalf("published tcp port echoed %q, %v", echoed, err)
	}

	udpConn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", ports[1].HostPort))
	if err != nil {
		t.Fatal(err)
	}
	defer udpConn.Close()
	_ = udpConn.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	if _, err := udpConn.Write([]byte("dgram")); err != nil {
		t.Fatal(err)
	}
	if n, err := udpConn.Read(buf); err != nil || string(buf[:n]) != "guest:dgram" {
		t.Fatalf("published udp port answered %q, %v", buf[:n], err)
	}

	stats := b.control(`{"op":"stats"}`)
	if stats["tcp_connections"].(float64) != 1 || stats["bytes_received"].(float64) < 26+5 || stats["bytes_sent"].(float64) < 26+11 {
		t.Errorf("stats after published-port traffic: %v", stats)
	}
}

func TestHostPortInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	cfg := testConfig(t, nil)
	cfg.Ports = []Port{
		{HostIP: "127.0.0.1", HostPort: 0, GuestPort: 22, Protocol: "tcp"},
		{HostIP: "127.0.0.1", HostPort: port, GuestPort: 80, Protocol: "tcp"},
	}
	p := runHelper(t, cfg)
	want := fmt.Sprintf("host port 127.0.0.1:%d/tcp is already in use", port)
	if p.first.Ready || p.first.Error != want {
		t.Fatalf("got %+v, want error %q", p.first, want)
	}
	select {
	case err := <-p.exited:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("exit: %v, want status 1", err)
		}
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		t.Fatal("helper did not exit after a set-up failure")
	}
	if _, err := os.Stat(cfg.QEMUSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("qemu socket exists after a set-up failure: %v", err)
	}
}

func TestExitOnSIGTERM(t *testing.T) {
	cfg := testConfig(t, nil)
	p := runHelper(t, cfg)
	if !p.first.Ready {
		t.Fatalf("not ready: %+v", p.first)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("exit on SIGTERM: %v", err)
		}
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		t.Fatal("helper did not exit on SIGTERM")
	}
	for _, path := range []string{cfg.QEMUSocket, cfg.ControlSocket} {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", path, err)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Policy = &PolicySpec{Allow: []string{"pypi.org", "exa mple.com"}} }, `policy entry "exa mple.com"`},
		{func(c *Config) { c.GuestIP = "10.0.0.2" }, "guest_ip"},
		{func(c *Config) { c.Ports = []Port{{GuestPort: 80, Protocol: "sctp"}} }, "protocol"},
	} {
		cfg := testConfig(t, nil)
		c.edit(&cfg)
		p := runHelper(t, cfg)
		if p.first.Ready || !strings.Contains(p.first.Error, c.want) {
			t.Errorf("got %+v, want an error containing %q", p.first, c.want)
		}
		<-p.exited
	}
}

func TestAllowListAndSetPolicy(t *testing.T) {
	hs := startHostServers(t)
	cfg := testConfig(t, hs)
	cfg.Policy = &PolicySpec{Allow: []string{"allowed.test"}}
	b := startBox(t, cfg)
	web := net.JoinHostPort(testHostAlias, hs.httpPort)
	echo := net.JoinHostPort(testHostAlias, hs.udpPort)
	reachable := func(what string) {
		t.Helper()
		if body, err := b.get("http://"+web+"/", ""); err != nil || body != helloBody {
			t.Fatalf("%s: GET: %q, %v", what, body, err)
		}
		if reply, err := b.udpExchange(echo, "ping"); err != nil || reply != "ping" {
			t.Fatalf("%s: UDP echo: %q, %v", what, reply, err)
		}
	}

	// Before any name is resolved the host alias is just an address the list does not hold.
	b.expectTCPRefused(web)
	b.expectUDPRefused(echo)
	for _, name := range []string{"other.test", "host.boxlite.internal", "a.allowed.test"} {
		if got := answers(b.resolve("udp", name, dns.TypeA)); got != "NXDOMAIN" {
			t.Errorf("%s under allow [allowed.test]: %q, want NXDOMAIN", name, got)
		}
		if n := hs.queries(name); n != 0 {
			t.Errorf("refused name %s went upstream %d times", name, n)
		}
	}
	if got := answers(b.resolve("udp", "allowed.test", dns.TypeA)); got != "A "+testHostAlias {
		t.Fatalf("allowed.test: %q", got)
	}
	reachable("after resolving an allowed name")

	// The wildcard matches subdomains only: the address answered for the apex is refused again.
	b.setPolicy(`{"allow":["*.allowed.test"]}`)
	b.expectTCPRefused(web)
	if got := answers(b.resolve("tcp", "a.allowed.test", dns.TypeA)); got != "A "+testHostAlias {
		t.Fatalf("a.allowed.test under *.allowed.test: %q", got)
	}
	reachable("after resolving a subdomain")

	b.setPolicy(`{"deny":["` + testHostAlias + `"]}`)
	b.expectTCPRefused(web)
	b.expectUDPRefused(echo)

	b.setPolicy(`{"deny":["other.test"]}`)
	reachable("under a deny list of another name")
	if got := answers(b.resolve("udp", "other.test", dns.TypeA)); got != "NXDOMAIN" {
		t.Errorf("denied name: %q", got)
	}

	b.setPolicy(`{"allow":["` + testSubnet + `"]}`)
	reachable("under an allow list holding the subnet")

	b.setPolicy(`null`)
	reachable("without a policy")
	if got := answers(b.resolve("udp", "other.test", dns.TypeA)); got != "A "+testHostAlias {
		t.Errorf("other.test without a policy: %q", got)
	}

	for request, want := range map[string]string{
		`{"op":"set_policy","policy":{"allow":["ok.test","bad entry"]}}`: `"bad entry"`,
		`{"op":"set_policy","policy":{"allow":[],"deny":[]}}`:            "exactly one",
		`{"op":"set_policy","policy":{"alow":[]}}`:                       "alow",
		`{"op":"set_policy"}`:                                            "needs",
	} {
		if reply := b.control(request); !strings.Contains(fmt.Sprint(reply["error"]), want) {
			t.Errorf("%s: %v, want an error containing %s", request, reply, want)
		}
	}
	reachable("after refused set_policy requests")
}

// Names in the first bytes of connections to port 80. Needs 127.0.0.1:80 free and bindable.
func TestNamesOnHTTPPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:80")
	if err != nil {
		t.Skipf("127.0.0.1:80 not available: %v", err)
	}
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "host "+r.Host)
	})}
	go func() { _ = web.Serve(ln) }()
	defer web.Close()

	hs := startHostServers(t)
	cfg := testConfig(t, hs)
	cfg.Policy = &PolicySpec{Allow: []string{"allowed.test", "*.allowed.test"}}
	b := startBox(t, cfg)
	if got := answers(b.resolve("udp", "allowed.test", dns.TypeA)); got != "A "+testHostAlias {
		t.Fatalf("allowed.test: %q", got)
	}
	url := "http://" + testHostAlias + "/"
	for host, want := range map[string]string{"allowed.test": "host allowed.test", "x.allowed.test:80": "host x.allowed.test:80"} {
		if body, err := b.get(url, host); err != nil || body != want {
			t.Errorf("Host %s: %q, %v", host, body, err)
		}
	}
	for _, host := range []string{"evil.test", testHostAlias} {
		start := time.Now()
		if body, err := b.get(url, host); err == nil {
			t.Errorf("Host %s admitted: %q", host, body)
		} else if time.Since(start) > refusalBound {
			t.Errorf("Host %s refused after %v", host, time.Since(start))
		}
	}
	// TLS on port 80 is judged by its SNI: an allowed one reaches the HTTP server (which answers
	// 400 to the ClientHello), another is reset.
	tlsDial := func(serverName string) error {
		conn, err := b.dialTCP(testHostAlias + ":80")
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		return tls.Client(conn, &tls.Config{ServerName: serverName}).Handshake()
	}
	if err := tlsDial("allowed.test"); err == nil || !strings.Contains(err.Error(), "does not look like a TLS handshake") {
		t.Errorf("ClientHello for allowed.test: %v, want the HTTP server's answer", err)
	}
	if err := tlsDial("evil.test"); err == nil || !errors.Is(err, syscall.ECONNRESET) && !strings.Contains(err.Error(), "reset") {
		t.Errorf("ClientHello for evil.test: %v, want a reset", err)
	}

	b.setPolicy(`{"deny":["evil.test"]}`)
	if _, err := b.get(url, "evil.test"); err == nil {
		t.Error("Host evil.test admitted under a deny list naming it")
	}
	if body, err := b.get(url, "fine.test"); err != nil || body != "host fine.test" {
		t.Errorf("Host fine.test under deny [evil.test]: %q, %v", body, err)
	}
}

// TestThroughput reports guest → host TCP throughput through the helper (both stacks in this
// machine's processes, so a floor for what a VM sees, not a ceiling).
func TestThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := sink.Accept()
		if err != nil {
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		got <- n
	}()
	b := startBox(t, testConfig(t, nil))
	_, port, _ := net.SplitHostPort(sink.Addr().String())
	conn, err := b.dialTCP(net.JoinHostPort(testHostAlias, port))
	if err != nil {
		t.Fatal(err)
	}
	const total = 256 << 20
	chunk := make([]byte, 256<<10)
	start := time.Now()
	for sent := 0; sent < total; sent += len(chunk) {
		if _, err := conn.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	conn.(*gonet.TCPConn).CloseWrite()
	n := <-got
	elapsed := time.Since(start)
	conn.Close()
	if n != total {
		t.Fatalf("sink got %d bytes, want %d", n, total)
	}
	t.Logf("guest → host TCP: %d MiB in %v = %.0f MiB/s", total>>20, elapsed.Round(time.Millisecond), float64(total>>20)/elapsed.Seconds())
}
