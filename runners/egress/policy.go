// Package egress controls what a build step may reach on the network.
//
// A step that needs the network (the install step: `npm install`) runs in
// its own network namespace that has only a loopback interface. The runner
// opens an allow-listing HTTP proxy's listener on 127.0.0.1:3128 inside that
// namespace (see JobNetwork), while the proxy's outbound dials run in the
// host namespace. The proxy is therefore the job's only way out, and it lets
// through only the host:port pairs of a Policy, refusing everything else
// before any DNS lookup and refusing names that resolve to the host's own or
// internal addresses (see Proxy).
package egress

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultPort is the port of an allow-list entry that names none: the
// install step only needs HTTPS.
const DefaultPort = 443

// Allow-list entries for the package registries and font hosts that build
// steps commonly need. They are constants so that nothing can widen them at
// run time; the runner combines the ones a step needs with ParsePolicy.
const (
	// NPMRegistry serves npm's metadata and its tarballs.
	NPMRegistry = "registry.npmjs.org:443"
	// YarnRegistry is Yarn classic's mirror of the npm registry.
	YarnRegistry = "registry.yarnpkg.com:443"
	// GoogleFontsCSS serves the stylesheets that next/font/google fetches
	// during `next build`.
	GoogleFontsCSS = "fonts.googleapis.com:443"
	// GoogleFontsFiles serves the font files those stylesheets name.
	GoogleFontsFiles = "fonts.gstatic.com:443"
)

// Policy lists the destinations a step may reach through the proxy.
//
// Each entry is one of
//
//	host:port          registry.npmjs.org:443
//	host               registry.npmjs.org (port DefaultPort, 443)
//	*.domain[:port]    *.example.com:443: any name ending in ".example.com"
//	                   (sub.example.com, a.b.example.com), not example.com itself
//	ip[:port]          203.0.113.7:8443, [2001:db8::7]:443, 2001:db8::7
//
// Hostnames are matched case-insensitively and ignoring one trailing dot.
// IP ranges are not supported, only literal addresses; a literal address
// only matches a request for that literal, never a name resolving to it,
// and the proxy's address check still applies to it (no private addresses).
// Build a Policy with ParsePolicy, which validates and canonicalises the
// entries; a hand-built Policy's invalid entries match nothing.
type Policy struct {
	Allow []string
}

// ParsePolicy validates entries (see Policy) and returns a Policy holding
// them in canonical form ("host:port", lowercase, IPv6 in brackets). All
// invalid entries are reported together, so that a configuration can be
// fixed in one go.
func ParsePolicy(entries []string) (Policy, error) {
	p := Policy{Allow: make([]string, 0, len(entries))}
	var errs []error
	for _, e := range entries {
		r, err := parseEntry(e)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.Allow = append(p.Allow, r.String())
	}
	if err := errors.Join(errs...); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// Allowed reports whether the policy lets a step reach host on port. host
// is a hostname or a literal IP address (IPv6 with or without brackets).
// It never looks anything up.
func (p Policy) Allowed(host string, port int) bool {
	h, ok := normalizeHost(host)
	if !ok || port < 1 || port > 65535 {
		return false
	}
	for _, e := range p.Allow {
		r, err := parseEntry(e)
		if err == nil && r.match(h, port) {
			return true
		}
	}
	return false
}

// compile parses the policy's entries once for the proxy; invalid entries
// are returned separately so that the caller can report them.
func (p Policy) compile() (rules []rule, invalid []error) {
	for _, e := range p.Allow {
		r, err := parseEntry(e)
		if err != nil {
			invalid = append(invalid, err)
			continue
		}
		rules = append(rules, r)
	}
	return rules, invalid
}

// rule is one parsed allow-list entry.
type rule struct {
	// host is the lowercase hostname, or for a wildcard the domain after
	// "*."; empty for a literal IP.
	host     string
	wildcard bool
	ip       netip.Addr // valid for a literal IP entry
	port     int
}

// String returns the entry in canonical form.
func (r rule) String() string {
	switch {
	case r.ip.IsValid():
		return net.JoinHostPort(r.ip.String(), strconv.Itoa(r.port))
	case r.wildcard:
		return "*." + r.host + ":" + strconv.Itoa(r.port)
	default:
		return r.host + ":" + strconv.Itoa(r.port)
	}
}

// match reports whether the rule allows the normalised host h on port.
func (r rule) match(h normHost, port int) bool {
	if port != r.port {
		return false
	}
	if r.ip.IsValid() {
		return h.ip.IsValid() && h.ip == r.ip
	}
	if h.ip.IsValid() {
		return false
	}
	if r.wildcard {
		return strings.HasSuffix(h.name, "."+r.host)
	}
	return h.name == r.host
}

// normHost is a requested host after normalisation: either a lowercase
// hostname without trailing dot, or an unmapped IP address.
type normHost struct {
	name string
	ip   netip.Addr
}

// normalizeHost normalises a requested host for matching; ok is false for
// something that is neither a valid hostname nor an IP address.
func normalizeHost(host string) (normHost, bool) {
	if len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return normHost{ip: ip.Unmap()}, true
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if !validHostname(name) {
		return normHost{}, false
	}
	return normHost{name: name}, true
}

// parseEntry parses one allow-list entry.
func parseEntry(entry string) (rule, error) {
	bad := func(format string, args ...any) (rule, error) {
		return rule{}, fmt.Errorf("egress: policy entry %q: %s", entry, fmt.Sprintf(format, args...))
	}
	s := strings.ToLower(strings.TrimSpace(entry))
	if s == "" {
		return bad("empty")
	}
	if strings.Contains(s, "/") && !strings.Contains(s, "://") {
		return bad("IP ranges are not supported; list literal addresses")
	}
	if strings.ContainsAny(s, "/@?#\\ \t%") {
		return bad("want host, host:port, *.domain:port or ip:port (no scheme, path, user or zone)")
	}

	host, portStr := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		if strings.HasSuffix(s, "]") {
			host = s[1 : len(s)-1]
		} else {
			h, p, err := net.SplitHostPort(s)
			if err != nil {
				return bad("%v", err)
			}
			if p == "" {
				return bad("empty port")
			}
			host, portStr = h, p
		}
		if _, err := netip.ParseAddr(host); err != nil || !strings.Contains(host, ":") {
			return bad("brackets are only for IPv6 addresses")
		}
	case strings.Count(s, ":") == 1:
		host, portStr, _ = strings.Cut(s, ":")
		if portStr == "" {
			return bad("empty port")
		}
	case strings.Count(s, ":") > 1:
		// A bare IPv6 address; one with a port needs brackets.
		if _, err := netip.ParseAddr(s); err != nil {
			return bad("an IPv6 address with a port must be written [address]:port")
		}
	}

	port := DefaultPort
	if portStr != "" {
		n, err := strconv.Atoi(portStr)
		if err != nil || n < 1 || n > 65535 || portStr[0] == '0' || portStr[0] == '+' {
			return bad("port must be a number from 1 to 65535")
		}
		port = n
	}

	switch {
	case strings.HasPrefix(host, "*."):
		domain := strings.TrimSuffix(host[2:], ".")
		if !validHostname(domain) {
			return bad("invalid domain after \"*.\"")
		}
		if !strings.Contains(domain, ".") {
			return bad("a wildcard must name at least a registrable domain (*.example.com, not *.com)")
		}
		return rule{host: domain, wildcard: true, port: port}, nil
	case strings.Contains(host, "*"):
		return bad("a wildcard is only allowed as a leading \"*.\"")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return rule{ip: ip.Unmap(), port: port}, nil
	}
	host = strings.TrimSuffix(host, ".")
	if !validHostname(host) {
		return bad("invalid hostname")
	}
	return rule{host: host, port: port}, nil
}

// validHostname reports whether name (lowercase, no trailing dot) is a
// syntactically valid DNS hostname: labels of 1–63 letters, digits and
// hyphens, not starting or ending with a hyphen, 253 characters at most,
// and a last label that is not all digits (so that shorthand or odd IPv4
// spellings such as "127.1" or "2130706433" are never taken for names).
func validHostname(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}
