package boxnet

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// A UDP flow with no datagram either way for this long is forgotten.
const udpIdleTimeout = 60 * time.Second

const relayBufferSize = 64 << 10

// counters are what the control socket's stats report: payload bytes relayed between the guest
// and host sockets (outbound NAT and published ports, TCP and UDP; not DNS, which the gateway
// answers) and TCP connections relayed so far.
type counters struct {
	sent           atomic.Uint64 // guest → outside
	received       atomic.Uint64 // outside → guest
	tcpConnections atomic.Uint64
}

type halfCloser interface {
	CloseWrite() error
}

// relay copies a TCP connection both ways until both directions end. An end of stream is passed
// on as a half close; an error ends both directions.
func (c *counters) relay(guest, host net.Conn) {
	c.tcpConnections.Add(1)
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			guest.Close()
			host.Close()
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(host, guest, &c.sent, closeBoth)
	}()
	pipe(guest, host, &c.received, closeBoth)
	<-done
	closeBoth()
}

func pipe(to, from net.Conn, counter *atomic.Uint64, closeBoth func()) {
	buf := make([]byte, relayBufferSize)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			if _, werr := to.Write(buf[:n]); werr != nil {
				closeBoth()
				return
			}
			counter.Add(uint64(n))
		}
		if errors.Is(err, io.EOF) {
			if hc, ok := to.(halfCloser); ok {
				_ = hc.CloseWrite()
			}
			return
		}
		if err != nil {
			closeBoth()
			return
		}
	}
}

// relayDatagrams copies a UDP flow between two connected sockets until it is idle for
// udpIdleTimeout either way.
func (c *counters) relayDatagrams(guest, host net.Conn) {
	var lastActive atomic.Int64
	lastActive.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		defer close(done)
		pumpDatagrams(host, guest, &c.sent, &lastActive)
	}()
	pumpDatagrams(guest, host, &c.received, &lastActive)
	<-done
}

func pumpDatagrams(to, from net.Conn, counter *atomic.Uint64, lastActive *atomic.Int64) {
	defer to.Close() // ends the other direction, which reads from it
	buf := make([]byte, relayBufferSize)
	for {
		_ = from.SetReadDeadline(time.Now().Add(udpIdleTimeout))
		n, err := from.Read(buf)
		switch {
		case isTimeout(err):
			if time.Since(time.Unix(0, lastActive.Load())) < udpIdleTimeout {
				continue // the other direction is active
			}
			return
		case isRefused(err):
			continue // nothing listens there right now; later datagrams may find someone
		case err != nil:
			return
		}
		lastActive.Store(time.Now().UnixNano())
		if _, err := to.Write(buf[:n]); err == nil {
			counter.Add(uint64(n))
		}
	}
}

// isTimeout: a read deadline passed (gonet's error is not os.ErrDeadlineExceeded).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
