package boxnet

import (
	"net/netip"
	"strings"
	"testing"
)

func mustPolicy(t *testing.T, spec PolicySpec) *Policy {
	t.Helper()
	p, err := ParsePolicy(&spec)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParsePolicyEntries(t *testing.T) {
	valid := []string{"pypi.org", "PyPI.org.", "*.example.com", "_srv.example.com", "localhost",
		"203.0.113.0/24", "203.0.113.5/24", "192.0.2.7", "2001:db8::/32", "2001:db8::1", "xn--bcher-kva.example"}
	if _, err := ParsePolicy(&PolicySpec{Allow: valid}); err != nil {
		t.Fatalf("valid entries refused: %v", err)
	}
	for _, bad := range []string{"", "*", "*.", "*foo.com", "a.*.com", "foo..com", "-foo.com", "foo-.com",
		"foo bar.com", "http://foo.com", "foo.com/path", "1.2.3.256", "10.0.0.0/33", "foo.com:443",
		strings.Repeat("a", 64) + ".com", "ünicode.com"} {
		_, err := ParsePolicy(&PolicySpec{Deny: []string{"ok.com", bad}})
		if err == nil || !strings.Contains(err.Error(), "\""+bad+"\"") {
			t.Errorf("entry %q: got %v, want an error naming it", bad, err)
		}
	}
}

func TestParsePolicyShape(t *testing.T) {
	if p, err := ParsePolicy(nil); p != nil || err != nil {
		t.Fatalf("nil spec: %v %v", p, err)
	}
	if _, err := ParsePolicy(&PolicySpec{}); err == nil {
		t.Error("a policy with neither list was accepted")
	}
	if _, err := ParsePolicy(&PolicySpec{Allow: []string{}, Deny: []string{}}); err == nil {
		t.Error("a policy with both lists was accepted")
	}
	if p := mustPolicy(t, PolicySpec{Allow: []string{}}); p.NameAllowed("anything.com") {
		t.Error("an empty allow list allowed a name")
	}
}

func TestNameMatching(t *testing.T) {
	p := mustPolicy(t, PolicySpec{Allow: []string{"pypi.org", "*.example.com"}})
	for name, want := range map[string]bool{
		"pypi.org": true, "PYPI.ORG.": true, "files.pypi.org": false, "evilpypi.org": false,
		"example.com": false, "a.example.com": true, "a.b.example.com": true, "aexample.com": false,
		"example.com.evil.net": false,
	} {
		if got := p.NameAllowed(name); got != want {
			t.Errorf("allow list: %s allowed = %v, want %v", name, got, want)
		}
	}
	d := mustPolicy(t, PolicySpec{Deny: []string{"*.example.com"}})
	if d.NameAllowed("a.example.com") || !d.NameAllowed("example.com") || !d.NameAllowed("pypi.org") {
		t.Error("deny list matched the wrong names")
	}
	var none *Policy
	if !none.NameAllowed("anything") {
		t.Error("no policy refused a name")
	}
}

func TestDecide(t *testing.T) {
	addr := netip.MustParseAddr
	allow := mustPolicy(t, PolicySpec{Allow: []string{"pypi.org", "*.example.com", "203.0.113.0/24"}})
	deny := mustPolicy(t, PolicySpec{Deny: []string{"evil.com", "198.51.100.9"}})
	cases := []struct {
		policy *Policy
		dst    string
		port   uint16
		tcp    bool
		names  []string
		want   verdict
	}{
		{nil, "198.51.100.1", 443, true, nil, admit},
		{allow, "203.0.113.9", 443, true, nil, admit}, // by address: no name check
		{allow, "203.0.113.9", 53, false, nil, admit},
		{allow, "198.51.100.1", 443, true, []string{"pypi.org"}, admitIfNamed},
		{allow, "198.51.100.1", 80, true, []string{"a.example.com"}, admitIfNamed},
		{allow, "198.51.100.1", 22, true, []string{"pypi.org"}, admit},
		{allow, "198.51.100.1", 443, false, []string{"pypi.org"}, admit}, // UDP: nothing to peek
		{allow, "198.51.100.1", 443, true, []string{"example.com"}, refuse},
		{allow, "198.51.100.1", 443, true, nil, refuse},
		{allow, "198.51.100.1", 53, false, []string{"other.org"}, refuse},
		{deny, "198.51.100.9", 22, true, nil, refuse},
		{deny, "198.51.100.9", 53, false, nil, refuse},
		{deny, "198.51.100.1", 443, true, nil, admitIfNamed},
		{deny, "198.51.100.1", 22, true, []string{"evil.com"}, admit}, // deny lists ignore DNS memory
	}
	for _, c := range cases {
		if got := c.policy.decide(addr(c.dst), c.port, c.tcp, c.names, nil); got != c.want {
			t.Errorf("%v %s:%d tcp=%v names=%v: got %v, want %v", c.policy, c.dst, c.port, c.tcp, c.names, got, c.want)
		}
	}
}

func TestAdmitsPeeked(t *testing.T) {
	allow := mustPolicy(t, PolicySpec{Allow: []string{"*.example.com"}})
	deny := mustPolicy(t, PolicySpec{Deny: []string{"evil.com"}})
	if !allow.admitsPeeked("a.example.com", true) || allow.admitsPeeked("example.com", true) || allow.admitsPeeked("", false) {
		t.Error("allow list judged peeked names wrongly")
	}
	if deny.admitsPeeked("evil.com", true) || !deny.admitsPeeked("good.com", true) || !deny.admitsPeeked("", false) {
		t.Error("deny list judged peeked names wrongly")
	}
}

func TestFilterLearns(t *testing.T) {
	f := newFilter(mustPolicy(t, PolicySpec{Allow: []string{"pypi.org"}}), nil)
	ip := netip.MustParseAddr("198.51.100.1")
	if v, _ := f.decide(ip, 22, true); v != refuse {
		t.Fatal("an address never answered was admitted")
	}
	f.learn("PyPI.org.", ip)
	if v, _ := f.decide(ip, 22, true); v != admit {
		t.Fatal("an address answered for an allowed name was refused")
	}
	// What was learned under one policy serves the next; names are judged by the one in force.
	f.setPolicy(mustPolicy(t, PolicySpec{Allow: []string{"other.org"}}))
	if v, _ := f.decide(ip, 22, true); v != refuse {
		t.Fatal("a name no longer allowed still admitted its address")
	}
	f.learn("other.org", ip)
	if v, _ := f.decide(ip, 22, true); v != admit {
		t.Fatal("second name for the address not learned")
	}
}

func TestFilterForgetsOldest(t *testing.T) {
	f := newFilter(mustPolicy(t, PolicySpec{Allow: []string{"a.org"}}), nil)
	first := netip.MustParseAddr("10.0.0.0")
	for i := 0; i < maxLearnedAddrs+1; i++ {
		f.learn("a.org", netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
	}
	if len(f.learned) != maxLearnedAddrs {
		t.Fatalf("learned %d addresses, cap is %d", len(f.learned), maxLearnedAddrs)
	}
	if v, _ := f.decide(first, 22, true); v != refuse {
		t.Error("the oldest address was not the one forgotten")
	}
}

// The guest resolves the host alias's names from its /etc/hosts, never through DNS: a list
// naming them governs the alias address all the same.
func TestHostAliasNamesGovernItsAddress(t *testing.T) {
	alias := netip.MustParseAddr("192.168.127.254")
	fixed := map[netip.Addr][]string{alias: hostAliasNameList()}
	for _, c := range []struct {
		spec PolicySpec
		want verdict
	}{
		{PolicySpec{Allow: []string{"host.docker.internal"}}, admit},
		{PolicySpec{Allow: []string{"pypi.org"}}, refuse},
		{PolicySpec{Deny: []string{"host.boxlite.internal"}}, refuse},
		{PolicySpec{Deny: []string{"pypi.org"}}, admit},
	} {
		f := newFilter(mustPolicy(t, c.spec), fixed)
		if v, _ := f.decide(alias, 8080, true); v != c.want {
			t.Errorf("%+v: the host alias got %v, want %v", c.spec, v, c.want)
		}
	}
	// Other addresses do not take the alias's names.
	f := newFilter(mustPolicy(t, PolicySpec{Allow: []string{"host.docker.internal"}}), fixed)
	if v, _ := f.decide(netip.MustParseAddr("198.51.100.1"), 8080, true); v != refuse {
		t.Error("an address other than the alias was admitted by the alias's name")
	}
}
