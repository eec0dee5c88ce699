package boxnet

import (
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Helper is a running box network. Start binds everything it serves before it returns.
type Helper struct {
	settings *settings
	stack    *stack.Stack
	filter   *filter
	counters counters
	dns      *dnsService
	ports    []*published
	qemu     *net.UnixListener
	control  *net.UnixListener

	mu       sync.Mutex
	qemuConn net.Conn // the one QEMU connection, once accepted
}

// Start validates the config and brings the network up: stack, DNS, published ports, the QEMU
// socket (which accepts one connection, the VM's) and the control socket.
func Start(cfg *Config) (*Helper, error) {
	s, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	h := &Helper{settings: s, filter: newFilter(s.policy, map[netip.Addr][]string{s.hostAlias: hostAliasNameList()})}
	started := false
	defer func() {
		if !started {
			h.Close()
		}
	}()
	st, link, err := newStack(s)
	if err != nil {
		return nil, err
	}
	h.stack = st
	(&outbound{stack: st, subnet: s.subnet, hostAlias: s.hostAlias, filter: h.filter, counters: &h.counters}).install()
	if h.dns, err = startDNS(st, s, h.filter); err != nil {
		return nil, err
	}
	if h.ports, err = listenPorts(s.ports, st, s.guest, &h.counters); err != nil {
		return nil, err
	}
	if h.qemu, err = listenUnix(s.qemuSocket); err != nil {
		return nil, err
	}
	if h.control, err = listenUnix(s.controlSocket); err != nil {
		return nil, err
	}
	started = true
	go h.serveQEMU(link)
	go h.serveControl()
	for _, p := range h.ports {
		go p.serve()
	}
	return h, nil
}

// listenUnix replaces a stale socket left by a helper that crashed, and keeps the file when the
// listener closes: Close removes it, when the helper ends.
func listenUnix(path string) (*net.UnixListener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func (h *Helper) serveQEMU(link *qemuLink) {
	conn, err := h.qemu.Accept()
	h.qemu.Close() // one VM per helper
	if err != nil {
		return
	}
	h.mu.Lock()
	h.qemuConn = conn
	h.mu.Unlock()
	logger.Debug("QEMU connected")
	err = <-link.start(conn)
	logger.Info("QEMU disconnected", "err", err)
}

// Ports are the published ports as bound.
func (h *Helper) Ports() []Port {
	ports := make([]Port, 0, len(h.ports))
	for _, p := range h.ports {
		ports = append(ports, p.Port)
	}
	return ports
}

// Close stops serving and removes both sockets. Connections being relayed end with the process.
func (h *Helper) Close() {
	for _, p := range h.ports {
		p.close()
	}
	if h.control != nil {
		h.control.Close()
		os.Remove(h.settings.controlSocket)
	}
	if h.qemu != nil {
		h.qemu.Close()
		os.Remove(h.settings.qemuSocket)
	}
	h.mu.Lock()
	if h.qemuConn != nil {
		h.qemuConn.Close()
	}
	h.mu.Unlock()
	if h.dns != nil {
		h.dns.close()
	}
	if h.stack != nil {
		h.stack.Close()
	}
}
