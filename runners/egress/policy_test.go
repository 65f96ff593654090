package egress

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParsePolicyValid(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"registry.npmjs.org", "registry.npmjs.org:443"},
		{"registry.npmjs.org:443", "registry.npmjs.org:443"},
		{"Registry.NPMJS.org:8080", "registry.npmjs.org:8080"},
		{"registry.npmjs.org.:443", "registry.npmjs.org:443"},
		{"  registry.npmjs.org  ", "registry.npmjs.org:443"},
		{"localhost:3000", "localhost:3000"},
		{"*.example.com", "*.example.com:443"},
		{"*.Example.com:8443", "*.example.com:8443"},
		{"203.0.113.7", "203.0.113.7:443"},
		{"203.0.113.7:8443", "203.0.113.7:8443"},
		{"[2001:db8::7]:443", "[2001:db8::7]:443"},
		{"[2001:DB8::7]", "[2001:db8::7]:443"},
		{"2001:db8::7", "[2001:db8::7]:443"},
		{"::ffff:203.0.113.7", "203.0.113.7:443"},
		{"a-b.c-d.example:65535", "a-b.c-d.example:65535"},
		{"x.com:1", "x.com:1"},
		{NPMRegistry, "registry.npmjs.org:443"},
	} {
		p, err := ParsePolicy([]string{tc.in})
		if err != nil {
			t.Errorf("ParsePolicy(%q): %v", tc.in, err)
			continue
		}
		if len(p.Allow) != 1 || p.Allow[0] != tc.want {
			t.Errorf("ParsePolicy(%q) = %q, want [%q]", tc.in, p.Allow, tc.want)
		}
	}
}

func TestParsePolicyInvalid(t *testing.T) {
	for _, in := range []string{
		"",
		"   ",
		"*",
		"*:443",
		"*.com",
		"*.com:443",
		"*example.com",
		"foo.*.com",
		"*.*.example.com",
		"10.0.0.0/8",
		"2001:db8::/32",
		"http://registry.npmjs.org",
		"registry.npmjs.org/path",
		"user@registry.npmjs.org",
		"registry.npmjs.org:0",
		"registry.npmjs.org:65536",
		"registry.npmjs.org:-1",
		"registry.npmjs.org:+80",
		"registry.npmjs.org:080",
		"registry.npmjs.org:https",
		"registry.npmjs.org:",
		"-bad.example",
		"bad-.example",
		"a..b",
		".example.com",
		"under_score.example",
		"exa mple.com",
		"127.1",
		"2130706433",
		"1.2.3.4.5",
		"fe80::1%eth0",
		"[1.2.3.4]:443",
		"[registry.npmjs.org]:443",
		"[2001:db8::7:443",
		"[2001:db8::7]:",
		"2001:db8::7::443",
		"bücher.example",
		strings.Repeat("a", 64) + ".example",
		strings.Repeat("abcdefghi.", 26) + "com",
	} {
		if p, err := ParsePolicy([]string{in}); err == nil {
			t.Errorf("ParsePolicy(%q) = %q, want an error", in, p.Allow)
		} else if !strings.Contains(err.Error(), "egress: policy entry") {
			t.Errorf("ParsePolicy(%q): error %q does not say which entry", in, err)
		}
	}
}

func TestParsePolicyReportsEveryBadEntry(t *testing.T) {
	_, err := ParsePolicy([]string{"ok.example", "10.0.0.0/8", "fine.example:80", "*.com"})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`"10.0.0.0/8": IP ranges are not supported`, `"*.com"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestPolicyAllowed(t *testing.T) {
	p, err := ParsePolicy([]string{
		NPMRegistry,
		"*.example.com:8443",
		"203.0.113.7",
		"[2001:db8::7]:443",
		"plain.test:80",
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host string
		port int
		want bool
	}{
		{"registry.npmjs.org", 443, true},
		{"REGISTRY.npmjs.org.", 443, true},
		{"registry.npmjs.org", 80, false},
		{"registry.npmjs.org", 4443, false},
		{"evil-registry.npmjs.org", 443, false},
		{"registry.npmjs.org.evil.com", 443, false},
		{"xregistry.npmjs.org", 443, false},
		{"npmjs.org", 443, false},
		{"a.example.com", 8443, true},
		{"a.b.example.com", 8443, true},
		{"A.Example.COM", 8443, true},
		{"example.com", 8443, false},
		{"aexample.com", 8443, false},
		{"a.example.com.evil", 8443, false},
		{"a.example.com", 443, false},
		{".example.com", 8443, false},
		{"a..example.com", 8443, false},
		{"203.0.113.7", 443, true},
		{"::ffff:203.0.113.7", 443, true},
		{"203.0.113.8", 443, false},
		{"203.0.113.7", 80, false},
		{"2001:db8::7", 443, true},
		{"[2001:db8::7]", 443, true},
		{"2001:db8::8", 443, false},
		{"plain.test", 80, true},
		{"plain.test", 443, false},
		{"", 443, false},
		{"registry.npmjs.org", 0, false},
		{"registry.npmjs.org", 70000, false},
		{"registry.npmjs.org\x00.evil", 443, false},
		{"*.example.com", 8443, false},
	} {
		if got := p.Allowed(tc.host, tc.port); got != tc.want {
			t.Errorf("Allowed(%q, %d) = %v, want %v", tc.host, tc.port, got, tc.want)
		}
	}

	// A hand-built policy: invalid entries match nothing, valid ones are
	// read as ParsePolicy would.
	hand := Policy{Allow: []string{"*", "10.0.0.0/8", "Registry.npmjs.org"}}
	for _, tc := range []struct {
		host string
		port int
		want bool
	}{
		{"anything.example", 443, false},
		{"10.0.0.1", 443, false},
		{"registry.npmjs.org", 443, true},
	} {
		if got := hand.Allowed(tc.host, tc.port); got != tc.want {
			t.Errorf("hand-built Allowed(%q, %d) = %v, want %v", tc.host, tc.port, got, tc.want)
		}
	}
	if (Policy{}).Allowed("registry.npmjs.org", 443) {
		t.Error("the empty policy allowed something")
	}
}

func TestPublicAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"8.8.8.8", true},
		{"104.16.0.1", true},
		{"172.32.0.1", true},
		{"100.128.0.1", true},
		{"2606:4700::1", true},
		{"::ffff:8.8.8.8", true},
		{"64:ff9b::808:808", true},
		{"2002:808:808::1", true},

		{"127.0.0.1", false},
		{"127.255.255.254", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"192.168.1.1", false},
		{"100.64.0.1", false},
		{"100.127.255.255", false},
		{"169.254.169.254", false},
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"224.0.0.1", false},
		{"239.255.255.250", false},
		{"255.255.255.255", false},
		{"240.0.0.1", false},
		{"192.0.2.1", true}, // TEST-NET-1; on this machine it is the gateway, refused as an attached network by Proxy.hostAddr
		{"198.18.0.1", false},
		{"::", false},
		{"::1", false},
		{"::127.0.0.1", false},
		{"fc00::1", false},
		{"fd12:3456::1", false},
		{"fe80::1", false},
		{"fec0::1", false},
		{"ff02::1", false},
		{"ff05::1:3", false},
		{"::ffff:127.0.0.1", false},
		{"::ffff:10.0.0.1", false},
		{"::ffff:169.254.169.254", false},
		{"64:ff9b::7f00:1", false},
		{"64:ff9b::a00:1", false},
		{"64:ff9b:1::808:808", false},
		{"2002:7f00:1::1", false},
		{"2002:a9fe:a9fe::1", false},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", false},
		{"2001:db8::1", true}, // documentation ranges: never routed publicly, allowed where a network uses them
		{"203.0.113.80", true},
		{"fe80::1%eth0", false},
	} {
		a := netip.MustParseAddr(tc.addr)
		if got := publicAddr(a); got != tc.want {
			t.Errorf("publicAddr(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if publicAddr(netip.Addr{}) {
		t.Error("the zero Addr is public")
	}
}
