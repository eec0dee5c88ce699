package boxnet

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
)

// The control socket speaks JSON lines: one request object per line, one response object each.
//
//	{"op":"stats"}                   → {"bytes_sent":N,"bytes_received":N,"tcp_connections":N}
//	{"op":"set_policy","policy":P}   → {"ok":true}   (P a policy object, or null for none)
//	{"op":"ports"}                   → {"ports":[...]}
//
// Anything wrong → {"error":"..."}.
type controlRequest struct {
	Op     string          `json:"op"`
	Policy json.RawMessage `json:"policy"`
}

type statsReply struct {
	BytesSent      uint64 `json:"bytes_sent"`
	BytesReceived  uint64 `json:"bytes_received"`
	TCPConnections uint64 `json:"tcp_connections"`
}

type portsReply struct {
	Ports []Port `json:"ports"`
}

type okReply struct {
	OK bool `json:"ok"`
}

type errorReply struct {
	Error string `json:"error"`
}

const maxControlLine = 1 << 20

func (h *Helper) serveControl() {
	for {
		conn, err := h.control.Accept()
		if err != nil {
			return // closed
		}
		go h.controlConn(conn)
	}
}

func (h *Helper) controlConn(conn net.Conn) {
	defer conn.Close()
	lines := bufio.NewScanner(conn)
	lines.Buffer(make([]byte, 0, 4096), maxControlLine)
	replies := json.NewEncoder(conn)
	for lines.Scan() {
		if err := replies.Encode(h.controlReply(lines.Bytes())); err != nil {
			return
		}
	}
}

func (h *Helper) controlReply(line []byte) any {
	var req controlRequest
	if err := strictJSON(line, &req); err != nil {
		return errorReply{fmt.Sprintf("invalid request: %v", err)}
	}
	switch req.Op {
	case "stats":
		return statsReply{
			BytesSent:      h.counters.sent.Load(),
			BytesReceived:  h.counters.received.Load(),
			TCPConnections: h.counters.tcpConnections.Load(),
		}
	case "ports":
		return portsReply{h.Ports()}
	case "set_policy":
		if req.Policy == nil {
			return errorReply{`set_policy needs "policy" (null removes the policy)`}
		}
		var spec *PolicySpec
		if err := strictJSON(req.Policy, &spec); err != nil {
			return errorReply{fmt.Sprintf("invalid policy: %v", err)}
		}
		policy, err := ParsePolicy(spec)
		if err != nil {
			return errorReply{err.Error()}
		}
		h.filter.setPolicy(policy)
		logger.Info("policy replaced")
		return okReply{true}
	default:
		return errorReply{fmt.Sprintf("unknown op %q", req.Op)}
	}
}

func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
