package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for ProxyOptions' zero values.
const (
	// DefaultDialTimeout bounds resolving and connecting to a
	// destination: a registry that does not answer in 10 s is down.
	DefaultDialTimeout = 10 * time.Second
	// DefaultIdleTimeout closes tunnels and client connections that
	// moved no byte for 90 s, longer than npm keeps idle sockets.
	DefaultIdleTimeout = 90 * time.Second
	// DefaultMaxTunnels bounds a job's concurrent upstream connections;
	// npm uses at most a few dozen.
	DefaultMaxTunnels = 256
	// DefaultMaxConns bounds a job's concurrent client connections to
	// the proxy, so that a job cannot exhaust the runner's descriptors.
	DefaultMaxConns = 1024
	// maxRefused bounds the refusals Refused remembers, so that a job
	// trying many names cannot make the runner grow without bound.
	maxRefused = 256
)

// LookupFunc resolves a hostname to its addresses. ProxyOptions.Resolver
// lets tests replace DNS.
type LookupFunc func(ctx context.Context, host string) ([]netip.Addr, error)

// ProxyOptions tunes a Proxy (and, for NetNSDir, a JobNetwork). The zero
// value is what production wants.
type ProxyOptions struct {
	// AllowPrivate lets the proxy dial loopback, private, link-local and
	// other non-public addresses. Only tests set it, to reach their own
	// local servers: in production it would let a job reach the host's
	// own services and the internal network.
	AllowPrivate bool
	// Resolver replaces the system resolver (net.DefaultResolver).
	Resolver LookupFunc
	// DialTimeout bounds resolving plus connecting to a destination
	// (default DefaultDialTimeout, 10 s).
	DialTimeout time.Duration
	// IdleTimeout closes a tunnel after this long with no byte in either
	// direction, and an idle client connection (default DefaultIdleTimeout).
	IdleTimeout time.Duration
	// MaxTunnels bounds the concurrent upstream connections: CONNECT
	// tunnels plus plain HTTP requests in flight (default
	// DefaultMaxTunnels). Beyond it the proxy answers 503.
	MaxTunnels int
	// MaxConns bounds the concurrent client connections (default
	// DefaultMaxConns); further clients wait to be accepted.
	MaxConns int
	// NetNSDir is where NewJobNetwork pins namespaces (default
	// DefaultNetNSDir). The Proxy itself ignores it.
	NetNSDir string
	// Log receives refusals (Warn) and per-tunnel summaries (Debug).
	// Default slog.Default().
	Log *slog.Logger
}

func (o ProxyOptions) withDefaults() ProxyOptions {
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxTunnels <= 0 {
		o.MaxTunnels = DefaultMaxTunnels
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Resolver == nil {
		o.Resolver = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	return o
}

// Stats counts a proxy's work since it was created.
type Stats struct {
	// Tunnels is the number of CONNECT tunnels opened.
	Tunnels int64
	// ActiveTunnels is the number of tunnels open now.
	ActiveTunnels int64
	// Requests is the number of plain HTTP requests forwarded.
	Requests int64
	// Refused is the number of requests refused by the policy or the
	// address check (Refused lists the distinct destinations).
	Refused int64
	// BytesOut counts bytes sent to destinations (tunnel payload and
	// plain HTTP request bodies).
	BytesOut int64
	// BytesIn counts bytes received from destinations (tunnel payload and
	// plain HTTP response bodies).
	BytesIn int64
}

// Proxy is an allow-listing HTTP/1.1 forward proxy. It serves CONNECT
// tunnels and absolute-form plain HTTP requests ("GET http://host/path").
// Each request's destination is checked against the Policy before any DNS
// lookup; an allowed name is then resolved once, refused if any of its
// addresses is not public (unless ProxyOptions.AllowPrivate), and the
// proxy dials exactly the addresses it checked, so that a second lookup
// cannot be steered elsewhere (DNS rebinding).
type Proxy struct {
	rules     []rule
	opts      ProxyOptions
	log       *slog.Logger
	srv       *http.Server
	transport *http.Transport
	upstream  chan struct{} // semaphore: MaxTunnels
	ctx       context.Context
	cancel    context.CancelFunc

	mu         sync.Mutex
	closing    bool
	refused    []string
	refusedSet map[string]struct{}
	tunnels    map[*tunnel]struct{}
	handlers   sync.WaitGroup // ServeHTTP calls in flight, guarded by mu for Add

	tunnelsTotal, tunnelsActive, requests, refusals, bytesOut, bytesIn atomic.Int64

	// The host's own interface addresses, refreshed every hostAddrsTTL:
	// a public address of the host reaches its services as surely as
	// 127.0.0.1 does.
	ifMu           sync.Mutex
	ifAt           time.Time
	ifAddrs        []netip.Prefix             // the host's attached networks
	interfaceAddrs func() ([]net.Addr, error) // net.InterfaceAddrs; tests replace it
}

// hostAddrsTTL is how long the proxy trusts its list of the host's own
// addresses.
const hostAddrsTTL = 5 * time.Second

// NewProxy returns a proxy enforcing policy. Invalid policy entries (a
// Policy not made by ParsePolicy) are logged and match nothing. Call Serve
// to start it and Close to stop it.
func NewProxy(policy Policy, opts ProxyOptions) *Proxy {
	opts = opts.withDefaults()
	rules, invalid := policy.compile()
	for _, err := range invalid {
		opts.Log.Warn("egress: ignoring invalid policy entry", "err", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		rules:      rules,
		opts:       opts,
		log:        opts.Log,
		upstream:   make(chan struct{}, opts.MaxTunnels),
		ctx:        ctx,
		cancel:     cancel,
		refusedSet: map[string]struct{}{},
		tunnels:    map[*tunnel]struct{}{},

		interfaceAddrs: net.InterfaceAddrs,
	}
	p.transport = &http.Transport{
		Proxy: nil, // never chain to the environment's proxy
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, port, err := splitTarget(addr)
			if err != nil {
				return nil, err
			}
			return p.dial(ctx, host, port)
		},
		MaxIdleConns:          32,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: opts.IdleTimeout,
		DisableCompression:    true, // pass bodies through untouched
	}
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(opts.Log.Handler(), slog.LevelDebug),
	}
	return p
}

// Serve accepts client connections on ln until Close or Shutdown, after
// which it returns nil. ln is closed on return.
func (p *Proxy) Serve(ln net.Listener) error {
	err := p.srv.Serve(newLimitListener(ln, p.opts.MaxConns))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("egress: serve on %s: %w", ln.Addr(), err)
}

// Close stops the proxy at once: it closes the listeners, every client
// connection and every tunnel, cancels requests in flight and waits for
// their handlers to return. It is safe to call more than once.
func (p *Proxy) Close() error {
	p.beginClose()
	err := p.srv.Close()
	p.closeTunnels()
	p.transport.CloseIdleConnections()
	p.handlers.Wait()
	if err != nil {
		return fmt.Errorf("egress: close proxy: %w", err)
	}
	return nil
}

// Shutdown stops accepting, lets the requests and tunnels in flight finish
// until ctx is done, then closes what is left as Close does.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	err := p.srv.Shutdown(ctx)
	done := make(chan struct{})
	go func() { p.handlers.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	if cerr := p.Close(); cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("egress: shut proxy down: %w", err)
	}
	return nil
}

// Refused returns the distinct destinations ("host:port") the proxy
// refused, by the policy or because they resolved to a non-public address,
// in the order of their first refusal (at most 256 are kept).
func (p *Proxy) Refused() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.refused...)
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Tunnels:       p.tunnelsTotal.Load(),
		ActiveTunnels: p.tunnelsActive.Load(),
		Requests:      p.requests.Load(),
		Refused:       p.refusals.Load(),
		BytesOut:      p.bytesOut.Load(),
		BytesIn:       p.bytesIn.Load(),
	}
}

func (p *Proxy) beginClose() {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.cancel()
}

// enter registers a handler in flight; false once the proxy is closing.
func (p *Proxy) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.handlers.Add(1)
	return true
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !p.enter() {
		http.Error(w, "zipship egress: proxy is shutting down", http.StatusServiceUnavailable)
		return
	}
	defer p.handlers.Done()
	// Requests in flight end when the proxy closes, whatever the client does.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(p.ctx, cancel)
	defer stop()
	if r.Method == http.MethodConnect {
		p.serveConnect(ctx, w, r)
		return
	}
	p.serveHTTP(ctx, w, r)
}

// allowed checks the compiled policy.
func (p *Proxy) allowed(host string, port int) bool {
	h, ok := normalizeHost(host)
	if !ok {
		return false
	}
	for _, r := range p.rules {
		if r.match(h, port) {
			return true
		}
	}
	return false
}

// refusal is the error for a destination the proxy will not dial.
type refusal struct {
	target string
	addr   netip.Addr // the non-public address, for an address refusal
}

func (e *refusal) Error() string {
	if e.addr.IsValid() {
		return fmt.Sprintf("egress: %s resolves to non-public address %s", e.target, e.addr)
	}
	return fmt.Sprintf("egress: %s is not allowed", e.target)
}

// refuse records a refusal and answers 403.
func (p *Proxy) refuse(w http.ResponseWriter, r *http.Request, e *refusal) {
	p.refusals.Add(1)
	p.mu.Lock()
	if _, seen := p.refusedSet[e.target]; !seen && len(p.refused) < maxRefused {
		p.refusedSet[e.target] = struct{}{}
		p.refused = append(p.refused, e.target)
	}
	p.mu.Unlock()
	if e.addr.IsValid() {
		p.log.Warn("egress: refused non-public destination", "target", e.target, "addr", e.addr, "method", r.Method)
	} else {
		p.log.Warn("egress: refused destination not on the allow-list", "target", e.target, "method", r.Method)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusForbidden)
	if e.addr.IsValid() {
		fmt.Fprintf(w, "zipship egress: %s resolves to a non-public address and is not allowed for this step\n", e.target)
	} else {
		fmt.Fprintf(w, "zipship egress: %s is not allowed for this step\n", e.target)
	}
}

// dialError answers a failed dial: 403 for a refusal, 504 for a timeout,
// 502 otherwise.
func (p *Proxy) dialError(w http.ResponseWriter, r *http.Request, target string, err error) {
	var ref *refusal
	switch {
	case errors.As(err, &ref):
		p.refuse(w, r, ref)
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		p.log.Info("egress: destination timed out", "target", target, "err", err)
		http.Error(w, fmt.Sprintf("zipship egress: %s timed out", target), http.StatusGatewayTimeout)
	default:
		p.log.Info("egress: destination unreachable", "target", target, "err", err)
		http.Error(w, fmt.Sprintf("zipship egress: cannot reach %s", target), http.StatusBadGateway)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// acquire takes an upstream slot; false when MaxTunnels are in use.
func (p *Proxy) acquire() bool {
	select {
	case p.upstream <- struct{}{}:
		return true
	default:
		return false
	}
}

func (p *Proxy) release() { <-p.upstream }

// admit checks host:port against the policy (answering 403 and recording
// the refusal when it is not allowed) and takes an upstream slot (503 when
// none is free). When it returns ok the caller holds a slot to release.
func (p *Proxy) admit(w http.ResponseWriter, r *http.Request, host string, port int) (target string, ok bool) {
	target = joinTarget(host, port)
	if !p.allowed(host, port) {
		p.refuse(w, r, &refusal{target: target})
		return target, false
	}
	if !p.acquire() {
		http.Error(w, "zipship egress: too many connections", http.StatusServiceUnavailable)
		return target, false
	}
	return target, true
}

// dial checks host:port against the policy, resolves host once, refuses it
// if any address is not public (unless AllowPrivate) and connects to the
// checked addresses in turn. Literal IPs are not looked up.
func (p *Proxy) dial(ctx context.Context, host string, port int) (net.Conn, error) {
	target := joinTarget(host, port)
	if !p.allowed(host, port) { // callers checked already; defence in depth
		return nil, &refusal{target: target}
	}
	ctx, cancel := context.WithTimeout(ctx, p.opts.DialTimeout)
	defer cancel()

	h, _ := normalizeHost(host) // valid: allowed said so
	addrs := []netip.Addr{h.ip}
	if !h.ip.IsValid() {
		var err error
		addrs, err = p.opts.Resolver(ctx, h.name)
		if err != nil {
			return nil, fmt.Errorf("egress: resolve %s: %w", h.name, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("egress: resolve %s: no addresses", h.name)
		}
	}
	if !p.opts.AllowPrivate {
		for _, a := range addrs {
			if !publicAddr(a) || p.hostAddr(a) {
				return nil, &refusal{target: target, addr: a}
			}
		}
	}
	var d net.Dialer
	var errs []error
	for i, a := range addrs {
		// Like net.Dial with several addresses: each gets a share of
		// the time left (at least 2 s), so that one black-holed address
		// (say IPv6 on a host without an IPv6 route) does not use it all.
		actx, acancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok && i < len(addrs)-1 {
			share := time.Until(dl) / time.Duration(len(addrs)-i)
			actx, acancel = context.WithTimeout(ctx, max(share, 2*time.Second))
		}
		c, err := d.DialContext(actx, "tcp", netip.AddrPortFrom(a.Unmap(), uint16(port)).String())
		acancel()
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("egress: dial %s: %w", target, errors.Join(errs...))
}

// hostAddr reports whether a is one of the host's own interface addresses
// or lies on a network directly attached to one of them (its neighbours and
// gateway: the internal network). This code runs in the host's network
// namespace. If the addresses cannot be listed, the last list known is used.
func (p *Proxy) hostAddr(a netip.Addr) bool {
	p.ifMu.Lock()
	defer p.ifMu.Unlock()
	if p.ifAddrs == nil || time.Since(p.ifAt) > hostAddrsTTL {
		list, err := p.interfaceAddrs()
		if err != nil {
			p.log.Error("egress: list the host's addresses", "err", err)
		} else {
			nets := make([]netip.Prefix, 0, len(list))
			for _, na := range list {
				if ipn, ok := na.(*net.IPNet); ok {
					ip, ok := netip.AddrFromSlice(ipn.IP)
					ones, _ := ipn.Mask.Size()
					if ok {
						nets = append(nets, netip.PrefixFrom(ip.Unmap(), ones).Masked())
					}
				}
			}
			p.ifAddrs, p.ifAt = nets, time.Now()
		}
	}
	a = a.Unmap().WithZone("")
	for _, n := range p.ifAddrs {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// serveConnect handles "CONNECT host:port".
func (p *Proxy) serveConnect(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	authority := r.URL.Host
	if authority == "" {
		authority = r.Host
	}
	host, port, err := splitTarget(authority)
	if err != nil {
		http.Error(w, "zipship egress: CONNECT needs host:port", http.StatusBadRequest)
		return
	}
	target, ok := p.admit(w, r, host, port)
	if !ok {
		return
	}
	slotHeld := true // until the tunnel takes it over
	defer func() {
		if slotHeld {
			p.release()
		}
	}()

	up, err := p.dial(ctx, host, port)
	if err != nil {
		p.dialError(w, r, target, err)
		return
	}
	rc := http.NewResponseController(w)
	client, brw, err := rc.Hijack()
	if err != nil {
		up.Close()
		p.log.Error("egress: hijack client connection", "err", err)
		http.Error(w, "zipship egress: internal error", http.StatusInternalServerError)
		return
	}
	_ = client.SetDeadline(time.Time{})
	t := &tunnel{p: p, client: client, up: up, target: target, start: time.Now()}
	if !p.register(t) {
		client.Close()
		up.Close()
		return
	}
	slotHeld = false
	defer p.unregister(t)

	_ = client.SetWriteDeadline(time.Now().Add(p.opts.IdleTimeout))
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		t.closeBoth()
		return
	}
	// A client may send its first bytes (a TLS ClientHello) before reading
	// our answer; the server may have buffered them.
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		_ = up.SetWriteDeadline(time.Now().Add(p.opts.IdleTimeout))
		if _, err := up.Write(b); err != nil {
			t.closeBoth()
			return
		}
		t.out.Add(int64(n))
		p.bytesOut.Add(int64(n))
	}
	t.run(p.opts.IdleTimeout)
}

// register records an open tunnel, which takes over its upstream slot;
// false once the proxy is closing.
func (p *Proxy) register(t *tunnel) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.tunnels[t] = struct{}{}
	p.tunnelsTotal.Add(1)
	p.tunnelsActive.Add(1)
	return true
}

// unregister closes a tunnel's connections and frees its slot before
// counting it as ended, so that a slot is free once ActiveTunnels shows it.
func (p *Proxy) unregister(t *tunnel) {
	p.mu.Lock()
	delete(p.tunnels, t)
	p.mu.Unlock()
	t.closeBoth()
	p.release()
	p.tunnelsActive.Add(-1)
	p.log.Debug("egress: tunnel closed", "target", t.target,
		"bytes_out", t.out.Load(), "bytes_in", t.in.Load(),
		"duration", time.Since(t.start).Round(time.Millisecond))
}

func (p *Proxy) closeTunnels() {
	p.mu.Lock()
	ts := make([]*tunnel, 0, len(p.tunnels))
	for t := range p.tunnels {
		ts = append(ts, t)
	}
	p.mu.Unlock()
	for _, t := range ts {
		t.closeBoth()
	}
}

// tunnel is one CONNECT tunnel.
type tunnel struct {
	p          *Proxy
	client, up net.Conn
	target     string
	start      time.Time
	out, in    atomic.Int64 // bytes client→destination, destination→client
	last       atomic.Int64 // unix nanoseconds of the last byte either way
	closeOnce  sync.Once
}

func (t *tunnel) closeBoth() {
	t.closeOnce.Do(func() {
		t.client.Close()
		t.up.Close()
	})
}

// run copies both ways until both directions ended, or either failed, or
// no byte moved either way for idle.
func (t *tunnel) run(idle time.Duration) {
	t.last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		t.pipe(t.client, t.up, &t.in, &t.p.bytesIn, idle)
		close(done)
	}()
	t.pipe(t.up, t.client, &t.out, &t.p.bytesOut, idle)
	<-done
}

// pipe copies src to dst. On EOF it half-closes dst so that the other
// direction can finish; on any other end it closes the whole tunnel.
func (t *tunnel) pipe(dst, src net.Conn, count, total *atomic.Int64, idle time.Duration) {
	buf := make([]byte, 32<<10)
	for {
		_ = src.SetReadDeadline(time.Unix(0, t.last.Load()).Add(idle))
		n, err := src.Read(buf)
		if n > 0 {
			t.last.Store(time.Now().UnixNano())
			_ = dst.SetWriteDeadline(time.Now().Add(idle))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				t.closeBoth()
				return
			}
			count.Add(int64(n))
			total.Add(int64(n))
			t.last.Store(time.Now().UnixNano())
		}
		if err == nil {
			continue
		}
		if isTimeout(err) && time.Since(time.Unix(0, t.last.Load())) < idle {
			continue // the other direction is busy
		}
		if errors.Is(err, io.EOF) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				return
			}
		}
		t.closeBoth()
		return
	}
}

// hopHeaders are the hop-by-hop headers of RFC 9110 §7.6.1 plus the
// proxy-specific ones; they are never forwarded.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopHeaders deletes hop-by-hop headers, including those a
// Connection header names.
func removeHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// serveHTTP forwards an absolute-form plain HTTP request.
func (p *Proxy) serveHTTP(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if !r.URL.IsAbs() || r.URL.Host == "" {
		http.Error(w, "zipship egress: this is a proxy; send CONNECT or an absolute-form http:// request", http.StatusBadRequest)
		return
	}
	if r.URL.Scheme != "http" {
		http.Error(w, "zipship egress: only http:// requests can be forwarded; use CONNECT for https", http.StatusBadRequest)
		return
	}
	authority := r.URL.Host
	if r.URL.Port() == "" {
		authority = net.JoinHostPort(r.URL.Hostname(), "80")
	}
	host, port, err := splitTarget(authority)
	if err != nil {
		http.Error(w, "zipship egress: bad host in request URL", http.StatusBadRequest)
		return
	}
	target, ok := p.admit(w, r, host, port)
	if !ok {
		return
	}
	defer p.release()

	out := r.Clone(ctx)
	out.RequestURI = ""
	out.Host = r.URL.Host // the absolute URL's authority is the Host (RFC 9112 §3.2.2)
	out.URL.Host = target // what the transport dials: normalised and checked
	out.Close = false
	removeHopHeaders(out.Header)
	if r.Body != nil && r.Body != http.NoBody {
		out.Body = &countingReader{r: r.Body, n: &p.bytesOut}
	}
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		p.dialError(w, r, target, err)
		return
	}
	defer resp.Body.Close()
	p.requests.Add(1)

	removeHopHeaders(resp.Header)
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			p.bytesIn.Add(int64(n))
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				p.log.Info("egress: response body ended early", "target", target, "err", err)
				panic(http.ErrAbortHandler) // tell the client the body is truncated
			}
			return
		}
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.ReadCloser
	n *atomic.Int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

// splitTarget splits "host:port" and checks the port; IPv6 hosts come back
// without brackets.
func splitTarget(authority string) (host string, port int, err error) {
	h, ps, err := net.SplitHostPort(authority)
	if err != nil {
		return "", 0, fmt.Errorf("egress: bad destination %q: %w", authority, err)
	}
	n, err := strconv.Atoi(ps)
	if err != nil || n < 1 || n > 65535 || h == "" {
		return "", 0, fmt.Errorf("egress: bad destination %q", authority)
	}
	return h, n, nil
}

// joinTarget formats a destination for messages and Refused: the host as
// normalised for matching (lowercase, no trailing dot), with its port.
func joinTarget(host string, port int) string {
	if h, ok := normalizeHost(host); ok {
		if h.ip.IsValid() {
			host = h.ip.String()
		} else {
			host = h.name
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// limitListener bounds the number of accepted connections open at once.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

// Accept waits for a free slot, then for a connection.
func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

// Close closes the listener and wakes an Accept waiting for a slot.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its slot back when closed.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite half-closes the connection, for tunnels.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
