package egress

import "net/netip"

// blockedPrefixes are ranges a job must never reach through the proxy on
// top of what the netip predicates in publicAddr catch: they are either the
// host's and the internal network's own addresses, or addresses with no
// legitimate use as a download destination. The documentation ranges
// (TEST-NET-1/2/3, 2001:db8::/32) are not here: they are never routed on
// the internet, so a network that uses them does it on purpose (the package
// registry here sits in one); the host's own attached networks are refused
// separately (Proxy.hostAddr), whatever their range.
var blockedPrefixes = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",      // "this network"
		"100.64.0.0/10",  // carrier-grade NAT (RFC 6598)
		"192.0.0.0/24",   // IETF protocol assignments
		"198.18.0.0/15",  // benchmarking
		"240.0.0.0/4",    // reserved, and 255.255.255.255
		"::/96",          // unspecified, loopback, IPv4-compatible
		"100::/64",       // discard-only
		"2001::/32",      // Teredo: hides an IPv4 address
		"fec0::/10",      // deprecated site-local
		"64:ff9b:1::/48", // local-use NAT64
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// publicAddr reports whether a is an address the proxy may dial for a job:
// not loopback, private (RFC 1918, ULA), link-local, unspecified,
// multicast, CGNAT or otherwise special (see blockedPrefixes). IPv4-mapped
// addresses are judged as the IPv4 address they carry, and so are the IPv4
// addresses embedded in NAT64 (64:ff9b::/96) and 6to4 (2002::/16)
// addresses, which a translator on the path would turn back into them.
func publicAddr(a netip.Addr) bool {
	if !a.IsValid() || a.Zone() != "" {
		return false
	}
	a = a.Unmap()
	if a.IsUnspecified() || a.IsLoopback() || a.IsPrivate() ||
		a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() {
		return false
	}
	for _, p := range blockedPrefixes {
		if p.Contains(a) {
			return false
		}
	}
	if a.Is6() {
		b := a.As16()
		switch {
		case nat64.Contains(a):
			return publicAddr(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
		case sixToFour.Contains(a):
			return publicAddr(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
		}
	}
	return true
}
