package boxnet

import (
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// clientHello captures the first flight of a real TLS client.
func clientHello(t *testing.T, serverName string) []byte {
	t.Helper()
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		c := tls.Client(client, &tls.Config{ServerName: serverName, InsecureSkipVerify: serverName == ""})
		_ = c.Handshake()
		c.Close()
	}()
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := server.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := peekedName(out); err != errNeedMore {
			return out
		}
	}
}

func TestClientHelloServerName(t *testing.T) {
	hello := clientHello(t, "Files.PyPI.org")
	if name, err := peekedName(hello); err != nil || name != "files.pypi.org" {
		t.Fatalf("got %q, %v", name, err)
	}
	for i := 0; i < len(hello); i++ {
		if _, err := peekedName(hello[:i]); err != errNeedMore {
			t.Fatalf("prefix of %d bytes: %v, want errNeedMore", i, err)
		}
	}
	if _, err := peekedName(clientHello(t, "")); err != errNoName {
		t.Fatalf("hello without SNI: %v, want errNoName", err)
	}
}

// A ClientHello split over two handshake records still yields its name.
func TestClientHelloAcrossRecords(t *testing.T) {
	hello := clientHello(t, "pypi.org")
	body := hello[recordHeaderLength:]
	split := 40
	record := func(payload []byte) []byte {
		return append([]byte{recordTypeHandshake, 3, 1, byte(len(payload) >> 8), byte(len(payload))}, payload...)
	}
	twoRecords := append(record(body[:split]), record(body[split:])...)
	if name, err := peekedName(twoRecords); err != nil || name != "pypi.org" {
		t.Fatalf("got %q, %v", name, err)
	}
}

func TestHTTPHost(t *testing.T) {
	cases := map[string]struct {
		name string
		err  error
	}{
		"GET / HTTP/1.1\r\nHost: PyPI.org:8080\r\nAccept: */*\r\n\r\n": {"pypi.org", nil},
		"GET / HTTP/1.1\nHost: pypi.org\n\n":                           {"pypi.org", nil},
		"POST /x HTTP/1.1\r\nhost: a.example.com\r\n\r\nbody":          {"a.example.com", nil},
		"GET http://pypi.org/ HTTP/1.1\r\nHost: pypi.org\r\n\r\n":      {"pypi.org", nil},
		"GET http://evil.com/ HTTP/1.1\r\nHost: pypi.org\r\n\r\n":      {"", errNoName},
		"CONNECT evil.com:443 HTTP/1.1\r\nHost: pypi.org\r\n\r\n":      {"", errNoName},
		"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n":  {"pypi.org", nil},
		"GET / HTTP/1.1\r\nHost: pypi.org\r\nHost: evil.com\r\n\r\n":   {"", errNoName},
		"GET / HTTP/1.0\r\n\r\n":                                       {"", errNoName},
		"GET / HTTP/1.1\r\nHost: pypi.org\r\n":                         {"", errNeedMore},
		"GET / HT":                                                     {"", errNeedMore},
		"G":                                                            {"", errNeedMore},
		"SSH-2.0-OpenSSH_9.2\r\n":                                      {"", errNoName},
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n":                             {"", errNoName},
	}
	for input, want := range cases {
		name, err := peekedName([]byte(input))
		if name != want.name || err != want.err {
			t.Errorf("%q: got %q, %v; want %q, %v", input, name, err, want.name, want.err)
		}
	}
}
