package egress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testLog logs at Debug to the test's output when -v is given.
func testLog(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// fakeDNS is a ProxyOptions.Resolver that knows a few names and counts
// every lookup.
type fakeDNS struct {
	mu      sync.Mutex
	names   map[string][]netip.Addr
	lookups []string
}

func newFakeDNS(names map[string]string) *fakeDNS {
	d := &fakeDNS{names: map[string][]netip.Addr{}}
	for name, addrs := range names {
		for _, a := range strings.Split(addrs, ",") {
			d.names[name] = append(d.names[name], netip.MustParseAddr(a))
		}
	}
	return d
}

func (d *fakeDNS) resolve(_ context.Context, host string) ([]netip.Addr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lookups = append(d.lookups, host)
	if a, ok := d.names[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (d *fakeDNS) Lookups() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.lookups)
}

// startProxy serves a proxy for entries on a loopback listener and closes
// it at the end of the test, checking that Serve returned nil.
func startProxy(t *testing.T, entries []string, opts ProxyOptions) (*Proxy, string) {
	t.Helper()
	pol, err := ParsePolicy(entries)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Log == nil {
		opts.Log = testLog(t)
	}
	p := NewProxy(pol, opts)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return p, ln.Addr().String()
}

// portOf returns the port of a listener address or URL host.
func portOf(t testing.TB, hostport string) int {
	t.Helper()
	if u, err := url.Parse(hostport); err == nil && u.Host != "" {
		hostport = u.Host
	}
	_, ps, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(ps)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// connect sends CONNECT target over c and reads the answer. The returned
// reader must be used for what follows on c.
func connect(c net.Conn, target string) (*http.Response, *bufio.Reader, error) {
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, nil, err
	}
	return resp, br, nil
}

// dialConnect dials the proxy and sends CONNECT target.
func dialConnect(t testing.TB, proxyAddr, target string) (net.Conn, *http.Response, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp4", proxyAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	resp, br, err := connect(c, target)
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	return c, resp, br
}

func readBody(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// echoServer echoes every connection until EOF, then closes it. It counts
// the connections it accepted.
func echoServer(t testing.TB) (addr string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String(), accepted
}

// proxiedClient returns an HTTP client that uses the proxy for everything.
func proxiedClient(t testing.TB, proxyAddr string, base *http.Transport) *http.Client {
	t.Helper()
	var tr *http.Transport
	if base != nil {
		tr = base.Clone()
	} else {
		tr = &http.Transport{}
	}
	tr.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: proxyAddr})
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// eventually polls cond for up to 5 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestProxyConnectTLS(t *testing.T) {
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s %s", r.Host, r.URL.Path)
	}))
	defer ts.Close()
	port := portOf(t, ts.URL)
	// The test certificate is for example.com: resolve it to the server.
	dns := newFakeDNS(map[string]string{"example.com": "127.0.0.1"})
	p, addr := startProxy(t, []string{"example.com:" + strconv.Itoa(port)}, ProxyOptions{AllowPrivate: true, Resolver: dns.resolve})

	client := proxiedClient(t, addr, ts.Client().Transport.(*http.Transport))
	for i := range 3 {
		resp, err := client.Get(fmt.Sprintf("https://example.com:%d/p%d", port, i))
		if err != nil {
			t.Fatal(err)
		}
		if body := readBody(t, resp); resp.StatusCode != 200 || body != fmt.Sprintf("hello example.com:%d /p%d", port, i) {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	}
	st := p.Stats()
	if st.Tunnels != 1 || st.ActiveTunnels != 1 {
		t.Errorf("stats %+v: want one tunnel, reused and still open", st)
	}
	if st.BytesIn == 0 || st.BytesOut == 0 {
		t.Errorf("stats %+v: no bytes counted", st)
	}
	if got := dns.Lookups(); !slices.Equal(got, []string{"example.com"}) {
		t.Errorf("lookups %q, want one of example.com", got)
	}
	client.Transport.(*http.Transport).CloseIdleConnections()
	eventually(t, "the tunnel to close", func() bool { return p.Stats().ActiveTunnels == 0 })
	if r := p.Refused(); len(r) != 0 {
		t.Errorf("Refused() = %q", r)
	}
}

func TestProxyRefusesBeforeAnyLookup(t *testing.T) {
	dns := newFakeDNS(nil)
	echoAddr, accepted := echoServer(t)
	p, addr := startProxy(t, []string{"allowed.test:443"}, ProxyOptions{AllowPrivate: true, Resolver: dns.resolve})

	c, resp, _ := dialConnect(t, addr, "not-allowed.invalid:443")
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("CONNECT: status %d, want 403", resp.StatusCode)
	}
	if want := "zipship egress: not-allowed.invalid:443 is not allowed for this step\n"; body != want {
		t.Errorf("body %q, want %q", body, want)
	}
	c.Close()

	// The same name again (in another spelling), a different port, a
	// literal address and a plain HTTP request: all refused.
	for _, target := range []string{"NOT-allowed.invalid.:443", "allowed.test:8443", echoAddr} {
		_, resp, _ := dialConnect(t, addr, target)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("CONNECT %s: status %d, want 403", target, resp.StatusCode)
		}
		readBody(t, resp)
	}
	resp, err := proxiedClient(t, addr, nil).Get("http://not-allowed.invalid/x.tgz")
	if err != nil {
		t.Fatal(err)
	}
	body = readBody(t, resp)
	if resp.StatusCode != http.StatusForbidden || body != "zipship egress: not-allowed.invalid:80 is not allowed for this step\n" {
		t.Errorf("plain GET: %d %q", resp.StatusCode, body)
	}

	want := []string{"not-allowed.invalid:443", "allowed.test:8443", echoAddr, "not-allowed.invalid:80"}
	if got := p.Refused(); !slices.Equal(got, want) {
		t.Errorf("Refused() = %q, want %q", got, want)
	}
	if st := p.Stats(); st.Refused != 5 || st.Tunnels != 0 {
		t.Errorf("stats %+v, want 5 refusals and no tunnel", st)
	}
	if got := dns.Lookups(); len(got) != 0 {
		t.Errorf("refused requests caused lookups: %q", got)
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("a refused literal address was dialed %d times", n)
	}
}

func TestProxyPlainHTTP(t *testing.T) {
	var seenHost atomic.Value
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenHost.Store(r.Host)
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), body)
	}))
	defer ts.Close()
	port := portOf(t, ts.URL)
	dns := newFakeDNS(map[string]string{"pkgs.test": "127.0.0.1", "other.test": "127.0.0.1"})
	p, addr := startProxy(t, []string{"pkgs.test:" + strconv.Itoa(port)}, ProxyOptions{AllowPrivate: true, Resolver: dns.resolve})
	client := proxiedClient(t, addr, nil)

	resp, err := client.Get(fmt.Sprintf("http://pkgs.test:%d/a/b?c=d", port))
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != 200 || body != "GET /a/b?c=d " {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	if h := seenHost.Load(); h != fmt.Sprintf("pkgs.test:%d", port) {
		t.Errorf("upstream saw Host %q", h)
	}
	resp, err = client.Post(fmt.Sprintf("http://pkgs.test:%d/up", port), "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != 200 || body != "POST /up payload" {
		t.Fatalf("POST: %d %q", resp.StatusCode, body)
	}

	resp, err = client.Get(fmt.Sprintf("http://other.test:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusForbidden ||
		body != fmt.Sprintf("zipship egress: other.test:%d is not allowed for this step\n", port) {
		t.Errorf("refused GET: %d %q", resp.StatusCode, body)
	}
	if got := dns.Lookups(); !slices.Equal(got, []string{"pkgs.test"}) {
		t.Errorf("lookups %q, want pkgs.test once (connection reused, other.test never)", got)
	}
	if st := p.Stats(); st.Requests != 2 || st.BytesOut != int64(len("payload")) || st.BytesIn == 0 || st.Refused != 1 {
		t.Errorf("stats %+v", st)
	}

	// Requests that are not proxy requests.
	for _, raw := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET https://pkgs.test/ HTTP/1.1\r\nHost: pkgs.test\r\n\r\n",
		"CONNECT pkgs.test HTTP/1.1\r\nHost: pkgs.test\r\n\r\n",
	} {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, raw)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%q: status %d, want 400", raw, resp.StatusCode)
		}
		c.Close()
	}
}

func TestProxyStripsHopByHopHeaders(t *testing.T) {
	seen := make(chan http.Header, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		h := w.Header()
		h.Set("Connection", "X-Resp-Hop")
		h.Set("X-Resp-Hop", "secret")
		h.Set("Keep-Alive", "timeout=1")
		h.Set("Proxy-Authenticate", "Basic")
		h.Set("X-Resp-Kept", "yes")
		io.WriteString(w, "ok")
	}))
	defer ts.Close()
	port := portOf(t, ts.URL)
	_, addr := startProxy(t, []string{"127.0.0.1:" + strconv.Itoa(port)}, ProxyOptions{AllowPrivate: true})

	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET http://127.0.0.1:%d/hop HTTP/1.1\r\n"+
		"Host: 127.0.0.1:%d\r\n"+
		"Connection: keep-alive, X-Hop\r\n"+
		"X-Hop: secret\r\n"+
		"Keep-Alive: timeout=5\r\n"+
		"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"+
		"Proxy-Connection: keep-alive\r\n"+
		"Te: trailers\r\n"+
		"Upgrade: websocket\r\n"+
		"X-Kept: yes\r\n\r\n", port, port)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	up := <-seen
	for _, h := range []string{"Connection", "X-Hop", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te", "Upgrade"} {
		if v := up.Values(h); len(v) != 0 {
			t.Errorf("upstream received %s: %q", h, v)
		}
	}
	if up.Get("X-Kept") != "yes" {
		t.Errorf("upstream lost X-Kept: %v", up)
	}
	for _, h := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Authenticate"} {
		if v := resp.Header.Values(h); len(v) != 0 {
			t.Errorf("client received %s: %q", h, v)
		}
	}
	if c := resp.Header.Get("Connection"); strings.Contains(strings.ToLower(c), "x-resp-hop") {
		t.Errorf("client received Connection: %q", c)
	}
	if resp.Header.Get("X-Resp-Kept") != "yes" {
		t.Errorf("client lost X-Resp-Kept: %v", resp.Header)
	}
}

func TestProxySSRFGuard(t *testing.T) {
	echoAddr, accepted := echoServer(t)
	port := portOf(t, echoAddr)
	ps := strconv.Itoa(port)
	dns := newFakeDNS(map[string]string{
		"internal.test": "127.0.0.1",
		"mapped.test":   "::ffff:10.0.0.1",
		"meta.test":     "169.254.169.254",
		// A public address first does not save a name that also has a
		// private one (nothing is dialed: the check comes first).
		"mixed.test": "93.184.215.14,127.0.0.1",
		"cgnat.test": "100.64.1.2",
	})
	p, addr := startProxy(t, []string{
		"internal.test:" + ps, "mapped.test:" + ps, "meta.test:" + ps,
		"mixed.test:" + ps, "cgnat.test:" + ps, "127.0.0.1:" + ps, "[::1]:" + ps,
	}, ProxyOptions{Resolver: dns.resolve})

	targets := []string{
		"internal.test:" + ps, "mapped.test:" + ps, "meta.test:" + ps,
		"mixed.test:" + ps, "cgnat.test:" + ps, "127.0.0.1:" + ps, "[::1]:" + ps,
	}
	for _, target := range targets {
		_, resp, _ := dialConnect(t, addr, target)
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, target+" resolves to a non-public address") {
			t.Errorf("CONNECT %s: %d %q, want 403 naming it", target, resp.StatusCode, body)
		}
	}
	// Plain HTTP goes through the transport's dialer: same guard.
	resp, err := proxiedClient(t, addr, nil).Get("http://internal.test:" + ps + "/")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "non-public") {
		t.Errorf("plain GET: %d %q", resp.StatusCode, body)
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the local server was reached %d times", n)
	}
	if got := p.Refused(); !slices.Equal(got, targets) {
		t.Errorf("Refused() = %q, want %q", got, targets)
	}
	if st := p.Stats(); st.Refused != int64(len(targets)+1) {
		t.Errorf("stats %+v", st)
	}
}

func TestProxyDialsTheCheckedAddress(t *testing.T) {
	// rebind.invalid cannot resolve through real DNS: reaching the echo
	// server proves the proxy dialed the address its own lookup returned
	// rather than handing the name to a dialer that looks it up again.
	echoAddr, _ := echoServer(t)
	port := strconv.Itoa(portOf(t, echoAddr))
	dns := newFakeDNS(map[string]string{"rebind.invalid": "127.0.0.1"})
	_, addr := startProxy(t, []string{"rebind.invalid:" + port}, ProxyOptions{AllowPrivate: true, Resolver: dns.resolve})
	c, resp, br := dialConnect(t, addr, "rebind.invalid:"+port)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	io.WriteString(c, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	if got := dns.Lookups(); len(got) != 1 {
		t.Errorf("lookups %q, want exactly one", got)
	}

	// Several addresses: tried in order until one answers (nothing
	// listens on 127.0.0.2).
	dns.names["multi.invalid"] = []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}
	_, addr = startProxy(t, []string{"multi.invalid:" + port, "gone.invalid:" + port}, ProxyOptions{AllowPrivate: true, Resolver: dns.resolve})
	if _, resp, _ := dialConnect(t, addr, "multi.invalid:"+port); resp.StatusCode != 200 {
		t.Errorf("CONNECT multi.invalid: %s", resp.Status)
	}
	// An allowed name that does not resolve: 502, not refused.
	_, resp, _ = dialConnect(t, addr, "gone.invalid:"+port)
	if body := readBody(t, resp); resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "cannot reach gone.invalid:"+port) {
		t.Errorf("CONNECT gone.invalid: %d %q, want 502", resp.StatusCode, body)
	}
}

func TestProxyConcurrentTunnels(t *testing.T) {
	echoAddr, _ := echoServer(t)
	p, addr := startProxy(t, []string{echoAddr}, ProxyOptions{AllowPrivate: true})
	const n, size = 64, 64 << 10
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			c, err := net.Dial("tcp4", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			resp, br, err := connect(c, echoAddr)
			if err != nil || resp.StatusCode != 200 {
				errs <- fmt.Errorf("CONNECT: %v %v", resp, err)
				return
			}
			data := make([]byte, size)
			rand.Read(data)
			go func() {
				c.Write(data)
				c.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(br) // ends when the echo server closes
			if err != nil || !bytes.Equal(got, data) {
				errs <- fmt.Errorf("echo: %d bytes back, %v", len(got), err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	eventually(t, "all tunnels to end", func() bool { return p.Stats().ActiveTunnels == 0 })
	st := p.Stats()
	if st.Tunnels != n || st.BytesOut != n*size || st.BytesIn != n*size {
		t.Errorf("stats %+v, want %d tunnels and %d bytes each way", st, n, n*size)
	}
}

func TestProxyTunnelLimit(t *testing.T) {
	echoAddr, _ := echoServer(t)
	p, addr := startProxy(t, []string{echoAddr}, ProxyOptions{AllowPrivate: true, MaxTunnels: 2})
	c1, r1, _ := dialConnect(t, addr, echoAddr)
	_, r2, _ := dialConnect(t, addr, echoAddr)
	if r1.StatusCode != 200 || r2.StatusCode != 200 {
		t.Fatalf("statuses %d %d", r1.StatusCode, r2.StatusCode)
	}
	_, r3, _ := dialConnect(t, addr, echoAddr)
	if r3.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third tunnel: status %d, want 503", r3.StatusCode)
	}
	c1.Close()
	eventually(t, "a slot to free", func() bool { return p.Stats().ActiveTunnels == 1 })
	if _, r4, _ := dialConnect(t, addr, echoAddr); r4.StatusCode != 200 {
		t.Fatalf("after one closed: status %d", r4.StatusCode)
	}
}

func TestProxyIdleTimeout(t *testing.T) {
	// A server that sends a tick every 40 ms, 15 times, then closes.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for range 15 {
					time.Sleep(40 * time.Millisecond)
					if _, err := c.Write([]byte{'.'}); err != nil {
						return
					}
				}
			}()
		}
	}()
	echoAddr, _ := echoServer(t)
	tickAddr := ln.Addr().String()
	_, addr := startProxy(t, []string{echoAddr, tickAddr}, ProxyOptions{AllowPrivate: true, IdleTimeout: 200 * time.Millisecond})

	// Idle both ways: closed after about IdleTimeout.
	c, resp, br := dialConnect(t, addr, echoAddr)
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	start := time.Now()
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("read a byte from an idle echo tunnel")
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
		t.Errorf("idle tunnel closed after %v, want about 200ms", d)
	}
	c.Close()

	// Busy one way only (600 ms, longer than IdleTimeout): kept open.
	_, resp, br = dialConnect(t, addr, tickAddr)
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	got, err := io.ReadAll(br)
	if err != nil || len(got) != 15 {
		t.Errorf("got %d ticks (%v), want 15", len(got), err)
	}
}

func TestProxyClose(t *testing.T) {
	echoAddr, _ := echoServer(t)
	release := make(chan struct{})
	defer close(release)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	slowAddr := slow.Listener.Addr().String()

	pol, _ := ParsePolicy([]string{echoAddr, slowAddr})
	p := NewProxy(pol, ProxyOptions{AllowPrivate: true, Log: testLog(t)})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()

	// An open tunnel, an idle keep-alive client and a request in flight.
	tc, resp, tbr := dialConnect(t, addr, echoAddr)
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	idle, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	inflight := make(chan error, 1)
	go func() {
		resp, err := proxiedClient(t, addr, nil).Get("http://" + slowAddr + "/")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				err = fmt.Errorf("status %d and a complete body", resp.StatusCode)
			}
		}
		inflight <- err
	}()
	eventually(t, "the request to reach the server", func() bool { return p.Stats().ActiveTunnels == 1 && len(p.upstream) == 2 })

	start := time.Now()
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v", d)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	_ = tc.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := tbr.ReadByte(); err == nil || isTimeout(err) {
		t.Errorf("tunnel still open after Close: %v", err)
	}
	_ = idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("idle client connection still open after Close: %v", err)
	}
	select {
	case err := <-inflight:
		if err == nil {
			t.Error("in-flight request succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Error("in-flight request still running after Close")
	}
	if _, err := net.Dial("tcp4", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial after Close: %v, want connection refused", err)
	}
	if st := p.Stats(); st.ActiveTunnels != 0 {
		t.Errorf("stats after Close %+v", st)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestProxyShutdownWaitsForTunnels(t *testing.T) {
	echoAddr, _ := echoServer(t)
	pol, _ := ParsePolicy([]string{echoAddr})
	p := NewProxy(pol, ProxyOptions{AllowPrivate: true, Log: testLog(t)})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	c, resp, br := dialConnect(t, ln.Addr().String(), echoAddr)
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- p.Shutdown(ctx)
	}()
	// The tunnel still works while Shutdown waits for it.
	time.Sleep(50 * time.Millisecond)
	io.WriteString(c, "still here")
	buf := make([]byte, 10)
	if _, err := io.ReadFull(br, buf); err != nil {
		t.Fatalf("tunnel during Shutdown: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a tunnel open", err)
	default:
	}
	c.(*net.TCPConn).CloseWrite()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the tunnel ended")
	}
}

func TestProxyRefusesTheHostsOwnAddress(t *testing.T) {
	// 93.184.215.14 is public, but here it plays one of the host's own
	// addresses. The context is cancelled, so that even a broken check
	// would not send a packet there.
	dns := newFakeDNS(map[string]string{"self.test": "93.184.215.14", "neighbour.test": "93.184.215.15",
		"public.test": "93.184.216.15"})
	pol, _ := ParsePolicy([]string{"self.test", "neighbour.test", "public.test"})
	p := NewProxy(pol, ProxyOptions{Resolver: dns.resolve, Log: testLog(t)})
	defer p.Close()
	p.interfaceAddrs = func() ([]net.Addr, error) {
		return []net.Addr{
			&net.IPNet{IP: net.ParseIP("127.0.0.1"), Mask: net.CIDRMask(8, 32)},
			&net.IPNet{IP: net.ParseIP("93.184.215.14"), Mask: net.CIDRMask(24, 32)},
		}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := p.dial(ctx, "self.test", 443)
	var ref *refusal
	if !errors.As(err, &ref) || ref.addr != netip.MustParseAddr("93.184.215.14") {
		t.Errorf("dial self.test: %v, want a refusal naming 93.184.215.14", err)
	}
	// A neighbour on the host's attached network (its gateway, say) is the
	// internal network: refused too.
	_, err = p.dial(ctx, "neighbour.test", 443)
	if !errors.As(err, &ref) || ref.addr != netip.MustParseAddr("93.184.215.15") {
		t.Errorf("dial neighbour.test: %v, want a refusal naming 93.184.215.15", err)
	}
	_, err = p.dial(ctx, "public.test", 443)
	if errors.As(err, &ref) || !errors.Is(err, context.Canceled) {
		t.Errorf("dial public.test: %v, want only the cancelled context's error", err)
	}
	if !p.hostAddr(netip.MustParseAddr("::ffff:93.184.215.14")) {
		t.Error("an IPv4-mapped spelling of the host's address passed")
	}

	// With the real list: this host's own non-loopback addresses.
	p.interfaceAddrs, p.ifAddrs = net.InterfaceAddrs, nil
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.(*net.IPNet).IP)
		if !p.hostAddr(ip) {
			t.Errorf("hostAddr(%s) = false for one of this host's addresses", ip)
		}
	}
}
