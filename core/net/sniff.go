package boxnet

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

// errNeedMore: the bytes so far are a valid beginning; read more and ask again.
var errNeedMore = errors.New("need more bytes")

// errNoName: the bytes are complete (or not TLS/HTTP at all) and name no host.
var errNoName = errors.New("names no host")

// peekedName returns the host a connection's first bytes name: the SNI of a TLS ClientHello, or
// the host of an HTTP/1 request (Host header, and the request target when absolute, which must
// agree). It does not look at the port: TLS on 80 and HTTP on 443 are judged alike.
func peekedName(b []byte) (string, error) {
	if len(b) == 0 {
		return "", errNeedMore
	}
	if b[0] == recordTypeHandshake {
		return clientHelloServerName(b)
	}
	return httpHost(b)
}

const (
	recordTypeHandshake   = 22
	handshakeClientHello  = 1
	extensionServerName   = 0
	serverNameTypeHost    = 0
	recordHeaderLength    = 5
	handshakeHeaderLength = 4
)

// clientHelloServerName reads the ClientHello from as many handshake records as it spans.
func clientHelloServerName(b []byte) (string, error) {
	var handshake []byte
	for {
		if len(b) < recordHeaderLength {
			return "", errNeedMore
		}
		if b[0] != recordTypeHandshake {
			return "", errNoName
		}
		length := int(b[3])<<8 | int(b[4])
		if len(b) < recordHeaderLength+length {
			return "", errNeedMore
		}
		handshake = append(handshake, b[recordHeaderLength:recordHeaderLength+length]...)
		b = b[recordHeaderLength+length:]
		if len(handshake) < handshakeHeaderLength {
			continue
		}
		if handshake[0] != handshakeClientHello {
			return "", errNoName
		}
		bodyLength := int(handshake[1])<<16 | int(handshake[2])<<8 | int(handshake[3])
		if len(handshake) >= handshakeHeaderLength+bodyLength {
			return serverNameOf(handshake[handshakeHeaderLength : handshakeHeaderLength+bodyLength])
		}
	}
}

// serverNameOf parses a ClientHello body (RFC 8446 4.1.2) down to its server_name extension.
func serverNameOf(body []byte) (string, error) {
	s := cryptobyte.String(body)
	var sessionID, cipherSuites, compression, extensions cryptobyte.String
	if !s.Skip(2+32) || // legacy_version, random
		!s.ReadUint8LengthPrefixed(&sessionID) ||
		!s.ReadUint16LengthPrefixed(&cipherSuites) ||
		!s.ReadUint8LengthPrefixed(&compression) {
		return "", errNoName
	}
	if s.Empty() || !s.ReadUint16LengthPrefixed(&extensions) {
		return "", errNoName
	}
	for !extensions.Empty() {
		var extType uint16
		var ext cryptobyte.String
		if !extensions.ReadUint16(&extType) || !extensions.ReadUint16LengthPrefixed(&ext) {
			return "", errNoName
		}
		if extType != extensionServerName {
			continue
		}
		var list cryptobyte.String
		if !ext.ReadUint16LengthPrefixed(&list) {
			return "", errNoName
		}
		for !list.Empty() {
			var nameType uint8
			var name cryptobyte.String
			if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) {
				return "", errNoName
			}
			if nameType == serverNameTypeHost {
				return canonicalName(string(name)), nil
			}
		}
	}
	return "", errNoName
}

// httpHost parses an HTTP/1 request head once it is complete.
func httpHost(b []byte) (string, error) {
	if !bytes.Contains(b, []byte("\r\n\r\n")) && !bytes.Contains(b, []byte("\n\n")) {
		if !looksLikeRequestLine(b) {
			return "", errNoName
		}
		return "", errNeedMore
	}
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
	line, err := r.ReadLine()
	if err != nil {
		return "", errNoName
	}
	fields := strings.Fields(line)
	if len(fields) != 3 || !strings.HasPrefix(fields[2], "HTTP/") {
		return "", errNoName
	}
	header, err := r.ReadMIMEHeader()
	if err != nil {
		return "", errNoName
	}
	hosts := header.Values("Host")
	if len(hosts) != 1 {
		return "", errNoName
	}
	host := hostOnly(hosts[0])
	// An absolute target ("GET http://a/ HTTP/1.1", CONNECT a:443) is what a proxy or server may
	// route by instead of Host, so it has to name the same host.
	target := fields[1]
	if fields[0] == "CONNECT" {
		if hostOnly(target) != host {
			return "", errNoName
		}
	} else if u, err := url.Parse(target); err == nil && u.IsAbs() && hostOnly(u.Host) != host {
		return "", errNoName
	}
	if host == "" {
		return "", errNoName
	}
	return host, nil
}

// looksLikeRequestLine: an unfinished head is worth waiting for only if it starts like a request
// ("METHOD "), so that other protocols are judged at once.
func looksLikeRequestLine(b []byte) bool {
	for i, c := range b {
		switch {
		case c == ' ' && i > 0:
			return true
		case c < 'A' || c > 'Z':
			return false
		}
	}
	return len(b) < 16
}

func hostOnly(hostport string) string {
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		hostport = host
	}
	return canonicalName(strings.Trim(hostport, "[]"))
}
