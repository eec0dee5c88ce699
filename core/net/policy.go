package boxnet

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
)

// PolicySpec is the egress policy as the config and the control socket carry it: exactly one of
// Allow and Deny. An empty list is a list: {"allow": []} admits nothing.
type PolicySpec struct {
	Allow []string `json:"allow"`
	Deny  []string `json:"deny"`
}

// Policy is a validated PolicySpec. A nil *Policy admits everything.
type Policy struct {
	// allow: only what the entries match is admitted; otherwise what they match is refused.
	allow    bool
	names    []namePattern
	prefixes []netip.Prefix // single addresses are /32 or /128
}

// namePattern is "name" (that name only) or "*.name" (strict subdomains of name, not name).
type namePattern struct {
	name     string
	wildcard bool
}

func (p namePattern) matches(name string) bool {
	if p.wildcard {
		return strings.HasSuffix(name, "."+p.name)
	}
	return name == p.name
}

// ParsePolicy validates a spec; nil means no policy.
func ParsePolicy(spec *PolicySpec) (*Policy, error) {
	if spec == nil {
		return nil, nil
	}
	// encoding/json leaves an absent list nil and makes a present one non-nil, even when empty.
	if (spec.Allow == nil) == (spec.Deny == nil) {
		return nil, fmt.Errorf("a policy has exactly one of allow and deny")
	}
	p := &Policy{allow: spec.Allow != nil}
	entries := spec.Deny
	if p.allow {
		entries = spec.Allow
	}
	for _, entry := range entries {
		if prefix, err := netip.ParsePrefix(entry); err == nil {
			p.prefixes = append(p.prefixes, prefix.Masked())
		} else if addr, err := netip.ParseAddr(entry); err == nil {
			p.prefixes = append(p.prefixes, netip.PrefixFrom(addr, addr.BitLen()))
		} else if pattern, ok := parseNamePattern(entry); ok {
			p.names = append(p.names, pattern)
		} else {
			return nil, fmt.Errorf("policy entry %q is not a DNS name, *.name, IP address or CIDR", entry)
		}
	}
	return p, nil
}

func parseNamePattern(entry string) (namePattern, bool) {
	rest, wildcard := strings.CutPrefix(entry, "*.")
	name := canonicalName(rest)
	return namePattern{name: name, wildcard: wildcard}, validDNSName(name)
}

// canonicalName is how names are compared: lower case, no trailing dot.
func canonicalName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// validDNSName accepts host names as DNS carries them (letters, digits, '-', and '_' as in SRV
// labels). A numeric last label is refused: no top-level domain is numeric, so "1.2.3.256" is a
// mistyped address, not a name.
func validDNSName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	labels := strings.Split(name, ".")
	for _, label := range labels {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}

func (p *Policy) nameListed(name string) bool {
	for _, pattern := range p.names {
		if pattern.matches(name) {
			return true
		}
	}
	return false
}

func (p *Policy) addrListed(addr netip.Addr) bool {
	for _, prefix := range p.prefixes {
		if prefix.Contains(addr) {
			return true
		}
	}
	return false
}

// NameAllowed says whether DNS answers name.
func (p *Policy) NameAllowed(name string) bool {
	return p == nil || p.nameListed(canonicalName(name)) == p.allow
}

// verdict is the policy's answer for a new TCP connection or UDP flow.
type verdict int

const (
	refuse verdict = iota
	admit
	// admitIfNamed: the connection's first bytes (TLS SNI, HTTP Host) must name an admitted host.
	admitIfNamed
)

// decide judges a destination. names are the names DNS answered this address for; fixed are
// the names it has whatever DNS says (the host alias's).
//   - allow: admitted if the address is listed, or if it is a listed name's (by DNS or fixed); in
//     the second case TCP to 80/443 must also name a listed host in its first bytes.
//   - deny: refused if the address or one of its fixed names is listed; TCP to 80/443 must not
//     name a listed host.
func (p *Policy) decide(addr netip.Addr, port uint16, isTCP bool, names, fixed []string) verdict {
	if p == nil {
		return admit
	}
	checksName := isTCP && (port == 80 || port == 443)
	if !p.allow {
		switch {
		case p.addrListed(addr) || p.anyNameListed(fixed):
			return refuse
		case checksName:
			return admitIfNamed
		default:
			return admit
		}
	}
	if p.addrListed(addr) {
		return admit
	}
	if p.anyNameListed(fixed) || p.anyNameListed(names) {
		if checksName {
			return admitIfNamed
		}
		return admit
	}
	return refuse
}

func (p *Policy) anyNameListed(names []string) bool {
	for _, name := range names {
		if p.nameListed(name) {
			return true
		}
	}
	return false
}

// admitsPeeked judges the host a connection named in its first bytes; found is false when they
// named none (not TLS or HTTP, no SNI, no Host). Allow lists need a listed name; deny lists only
// refuse a listed one.
func (p *Policy) admitsPeeked(name string, found bool) bool {
	if !found {
		return !p.allow
	}
	return p.NameAllowed(name)
}

// Bounds on what filter remembers of DNS answers; past them the oldest address is forgotten (a
// client that resolves it again is admitted again).
const (
	maxLearnedAddrs    = 4096
	maxNamesPerAddress = 16
)

// filter is the policy in force plus what DNS answered so far. Answers are remembered whatever
// the policy, for the life of the box (clients cache them past their TTL), so a policy set later
// admits addresses the guest resolved before it.
type filter struct {
	mu      sync.Mutex
	policy  *Policy
	learned map[netip.Addr][]string
	order   []netip.Addr // insertion order of learned, oldest first
	// Names an address has whatever DNS says: the guest's /etc/hosts gives the host alias its
	// names, so its resolver never asks the DNS that would teach them to learned.
	fixed map[netip.Addr][]string
}

func newFilter(p *Policy, fixed map[netip.Addr][]string) *filter {
	return &filter{policy: p, learned: make(map[netip.Addr][]string), fixed: fixed}
}

func (f *filter) current() *Policy {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.policy
}

func (f *filter) setPolicy(p *Policy) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.policy = p
}

// learn records that DNS answered addr for name.
func (f *filter) learn(name string, addr netip.Addr) {
	name = canonicalName(name)
	addr = addr.Unmap()
	f.mu.Lock()
	defer f.mu.Unlock()
	names, known := f.learned[addr]
	for _, n := range names {
		if n == name {
			return
		}
	}
	if len(names) >= maxNamesPerAddress {
		return
	}
	if !known {
		if len(f.order) >= maxLearnedAddrs {
			delete(f.learned, f.order[0])
			f.order = f.order[1:]
		}
		f.order = append(f.order, addr)
	}
	f.learned[addr] = append(names, name)
}

// decide judges a destination under the current policy; it also returns that policy, which
// judges the connection's first bytes when the verdict is admitIfNamed.
func (f *filter) decide(addr netip.Addr, port uint16, isTCP bool) (verdict, *Policy) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.policy.decide(addr, port, isTCP, f.learned[addr], f.fixed[addr]), f.policy
}
