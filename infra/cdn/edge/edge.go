// Package edge is zipship's built-in CDN: an HTTP server that serves every
// tenant's live site, and every build's permanent deployment URL, straight
// from blob storage. It is the whole CDN of a self-hosted installation and
// the origin behind CloudFront in the distributed one.
//
// Routing is by Host: {tenant}.{base} serves the version the tenant's
// pointer names, {build}.{tenant}.{base} (build = the build's UUID as 32 hex
// digits) serves that build forever. A tenant's state (pointer + decoded
// manifest) is swapped whole through an atomic pointer, so a request sees
// the old version or the new one, never a mix; Refresh makes a move visible
// at once and PointerTTL bounds how long a move made by another process
// stays invisible. Content is addressed by digest, so small files are kept
// in memory without ever going stale.
package edge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/infra/cdn"
)

const (
	// DefaultBaseDomain is the base domain when Options.BaseDomain is
	// empty: tenants are then reachable as {tenant}.localhost, which
	// browsers resolve to the loopback address without any DNS setup.
	DefaultBaseDomain = "localhost"

	// DefaultPointerTTL is the default Options.PointerTTL.
	DefaultPointerTTL = 2 * time.Second

	// DefaultMemoryCacheBytes is the default Options.MemoryCacheBytes.
	DefaultMemoryCacheBytes = 64 << 20

	// MaxMemoryFileSize is the largest file kept in the memory cache.
	// Larger files are streamed from the store (sendfile with the
	// filesystem store), which costs little relative to their size.
	MaxMemoryFileSize = 256 << 10

	// buildCacheSize bounds the decoded manifests kept for permanent
	// deployment URLs.
	buildCacheSize = 256

	// maxMissing bounds the remembered "no such tenant/build" answers, so
	// requests for random host names cannot grow memory without bound.
	maxMissing = 4096

	// loadTimeout bounds one store read of a pointer, manifest or blob
	// shared by coalesced requests (it runs detached from any single
	// request's context).
	loadTimeout = 30 * time.Second
)

// Options configures a Server. The zero value is usable.
type Options struct {
	// BaseDomain is the domain under which tenants' sites live
	// ({tenant}.{BaseDomain}); default DefaultBaseDomain.
	BaseDomain string
	// PointerTTL is how long a cached pointer is trusted before it is read
	// again from the store, so that an edge process sees pointer moves made
	// by other processes even without Refresh. Zero means
	// DefaultPointerTTL; a negative value means never: only Refresh
	// reloads (hosts found to have nothing are still re-checked after
	// DefaultPointerTTL). A busy tenant is revalidated in the background during the
	// TTL after expiry (requests keep being served from the cached state
	// meanwhile); a tenant idle for longer is reloaded before its next
	// request is served.
	PointerTTL time.Duration
	// MemoryCacheBytes bounds the memory used to keep the content of files
	// of at most MaxMemoryFileSize bytes; zero means
	// DefaultMemoryCacheBytes, negative disables the cache. Content is
	// keyed by digest, so it is never stale.
	MemoryCacheBytes int64
	// Logger receives store failures; default slog.Default() with
	// component=edge.
	Logger *slog.Logger
}

// Server serves tenants' sites. It implements http.Handler and
// cdn.Refresher; it is safe for concurrent use. Create it with New.
type Server struct {
	store  blob.Store
	base   string // lowercase, without leading or trailing dots
	suffix string // "." + base
	ttl    int64  // nanoseconds a pointer is trusted; <0 forever
	log    *slog.Logger
	epoch  time.Time // origin of now(), which uses the monotonic clock
	hdr    headers

	mu      sync.RWMutex
	tenants map[string]*tenant // tenants that had a pointer or were refreshed
	missing map[string]int64   // host labels known to have nothing, until (now())

	firstLoads flight[*liveState] // loads of tenants not in tenants
	buildLoads flight[*site]      // loads of permanent deployments
	builds     *lru               // permanent deployments by host label
	content    *contentCache
}

// Compile-time checks of the interfaces the Server is used through.
var (
	_ http.Handler  = (*Server)(nil)
	_ cdn.Refresher = (*Server)(nil)
)

// headers holds header values shared by all responses. They are assigned
// to response header maps directly (never appended to), which saves an
// allocation per header per response compared to Header.Set.
type headers struct {
	revalidate []string
	immutable  []string
	noStore    []string
	nosniff    []string
	bytes      []string
	html       []string
	allow      []string
}

func newHeaders() headers {
	return headers{
		revalidate: []string{"public, max-age=0, must-revalidate"},
		immutable:  []string{"public, max-age=31536000, immutable"},
		noStore:    []string{"no-store"},
		nosniff:    []string{"nosniff"},
		bytes:      []string{"bytes"},
		html:       []string{"text/html; charset=utf-8"},
		allow:      []string{"GET, HEAD"},
	}
}

// New returns a Server serving the sites stored in store.
func New(store blob.Store, opts Options) *Server {
	base := strings.Trim(strings.ToLower(opts.BaseDomain), ".")
	if base == "" {
		base = DefaultBaseDomain
	}
	ttl := opts.PointerTTL
	switch {
	case ttl == 0:
		ttl = DefaultPointerTTL
	case ttl < 0:
		ttl = -1
	}
	mem := opts.MemoryCacheBytes
	if mem == 0 {
		mem = DefaultMemoryCacheBytes
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default().With("component", "edge")
	}
	return &Server{
		store:   store,
		base:    base,
		suffix:  "." + base,
		ttl:     int64(ttl),
		log:     log,
		epoch:   time.Now(),
		hdr:     newHeaders(),
		tenants: make(map[string]*tenant),
		missing: make(map[string]int64),
		builds:  newLRU(buildCacheSize),
		content: newContentCache(mem),
	}
}

// now returns monotonic nanoseconds since the Server was created.
func (s *Server) now() int64 { return int64(time.Since(s.epoch)) }

// ServeHTTP serves the site the request's Host names.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header()["Allow"] = s.hdr.allow
		s.plain(w, r, http.StatusMethodNotAllowed, s.hdr.noStore)
		return
	}
	label, ok := s.siteLabel(r.Host)
	if !ok {
		s.plain(w, r, http.StatusNotFound, s.hdr.revalidate)
		return
	}
	var (
		st  *site
		err error
	)
	if i := strings.IndexByte(label, '.'); i >= 0 {
		build, tenant := label[:i], label[i+1:]
		if !validBuildLabel(build) || !validTenant(tenant) {
			s.plain(w, r, http.StatusNotFound, s.hdr.revalidate)
			return
		}
		st, err = s.buildSite(r.Context(), label, tenant, build)
	} else {
		if !validTenant(label) {
			s.plain(w, r, http.StatusNotFound, s.hdr.revalidate)
			return
		}
		st, err = s.liveSite(r.Context(), label)
	}
	switch {
	case err != nil: // logged by the load, once for all requests sharing it
		s.plain(w, r, http.StatusBadGateway, s.hdr.noStore)
		return
	case st == nil:
		s.plain(w, r, http.StatusNotFound, s.hdr.revalidate)
		return
	}
	s.serveSite(w, r, st)
}

// siteLabel returns the part of host before the base domain ("acme" or
// "<build>.acme"), lowercased, without port or trailing dot.
func (s *Server) siteLabel(host string) (string, bool) {
	if host == "" || host[0] == '[' { // IP literal
		return "", false
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	host = strings.ToLower(host) // no allocation when already lowercase
	if len(host) <= len(s.suffix) || !strings.HasSuffix(host, s.suffix) {
		return "", false
	}
	return host[:len(host)-len(s.suffix)], true
}

// serveSite answers r from the site version st, which the request uses
// from start to end: a concurrent pointer move cannot mix versions.
func (s *Server) serveSite(w http.ResponseWriter, r *http.Request, st *site) {
	h := w.Header()
	h["X-Zipship-Build"] = st.hBuild
	p := r.URL.Path
	if p == "" || p[0] != '/' || strings.IndexByte(p, 0) >= 0 {
		s.plain(w, r, http.StatusBadRequest, s.hdr.noStore)
		return
	}
	key := requestKey(p)
	if f := st.routes[key]; f != nil {
		s.serveFile(w, r, f, http.StatusOK)
		return
	}
	if f := st.notFoundPage(key); f != nil {
		s.serveFile(w, r, f, http.StatusNotFound)
		return
	}
	if len(st.notFound) == 0 && st.index != nil && looksLikePage(key) {
		s.serveFile(w, r, st.index, http.StatusOK) // single-page app fallback
		return
	}
	s.plain(w, r, http.StatusNotFound, s.hdr.revalidate)
}

// serveFile writes f with status (200, or 404 for a site's 404 page).
// Plain GET and HEAD requests, and revalidations with If-None-Match, take a
// fast path with precomputed headers that opens no content for HEAD or 304
// (with S3, opening costs a request). Range requests and the rarer
// preconditions of 200 responses go through http.ServeContent, which
// implements them fully.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, f *file, status int) {
	ctx := r.Context()
	h := w.Header()
	if status == http.StatusOK {
		h["Cache-Control"] = f.hCache
		h["Etag"] = f.hETag
		// A matching If-None-Match means 304 whatever Range or
		// If-Modified-Since say; only If-Match and If-Unmodified-Since
		// are evaluated before it, and those we leave to ServeContent.
		if inm := r.Header["If-None-Match"]; inm != nil && etagListMatches(inm, f.hETag[0]) &&
			r.Header["If-Match"] == nil && r.Header["If-Unmodified-Since"] == nil {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	} else {
		h["Cache-Control"] = s.hdr.revalidate
	}
	head := r.Method == http.MethodHead
	full := status != http.StatusOK || !needsServeContent(r.Header)
	var (
		data []byte
		obj  blob.Object
		err  error
	)
	if !head || !full {
		data, obj, err = s.content.get(ctx, s.store, f)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("cannot read site file", "path", f.path, "digest", f.digest, "err", err)
			}
			delete(h, "Etag")
			s.plain(w, r, http.StatusBadGateway, s.hdr.noStore)
			return
		}
		if obj != nil {
			defer obj.Close()
		}
	}
	h["Content-Type"] = f.hType
	h["X-Content-Type-Options"] = s.hdr.nosniff
	if !full {
		var rs io.ReadSeeker = obj
		if obj == nil {
			rs = bytes.NewReader(data)
		}
		http.ServeContent(w, r, "", time.Time{}, rs)
		return
	}
	if status == http.StatusOK {
		h["Accept-Ranges"] = s.hdr.bytes
	}
	h["Content-Length"] = f.hLength
	w.WriteHeader(status)
	if head {
		return
	}
	if obj == nil {
		_, err = w.Write(data)
	} else {
		// io.Copy reaches net/http's ReadFrom, which sendfiles an
		// *os.File-backed object straight to the socket.
		_, err = io.Copy(w, obj)
	}
	if err != nil && ctx.Err() == nil {
		s.log.Debug("write response", "path", f.path, "err", err)
	}
}

// needsServeContent reports whether the request carries a byte range or a
// precondition the fast path does not implement. (If-Modified-Since alone
// needs nothing: without Last-Modified it is ignored.)
func needsServeContent(h http.Header) bool {
	if len(h) == 0 {
		return false
	}
	return h["Range"] != nil || h["If-Match"] != nil || h["If-Unmodified-Since"] != nil
}

// etagListMatches reports whether an If-None-Match header (one or more
// comma-separated lists) matches etag by the weak comparison RFC 9110
// prescribes for it: "*" matches anything, W/ prefixes are ignored.
func etagListMatches(lists []string, etag string) bool {
	for _, l := range lists {
		for l != "" {
			var item string
			item, l, _ = strings.Cut(l, ",")
			item = strings.TrimSpace(item)
			if item == "*" || strings.TrimPrefix(item, "W/") == etag {
				return true
			}
		}
	}
	return false
}

// plain writes the edge's own small HTML answer for status.
func (s *Server) plain(w http.ResponseWriter, r *http.Request, status int, cacheControl []string) {
	h := w.Header()
	h["Content-Type"] = s.hdr.html
	h["X-Content-Type-Options"] = s.hdr.nosniff
	h["Cache-Control"] = cacheControl
	body := statusPage(status)
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, body)
	}
}

// statusPage is the body of the edge's own answers.
func statusPage(status int) string {
	switch status {
	case http.StatusNotFound:
		return "<!doctype html>\n<title>404 Not Found</title>\n<h1>404 Not Found</h1>\n<p>There is nothing here.</p>\n"
	case http.StatusBadGateway:
		return "<!doctype html>\n<title>502 Bad Gateway</title>\n<h1>502 Bad Gateway</h1>\n<p>The site cannot be loaded right now. Try again shortly.</p>\n"
	default:
		text := http.StatusText(status)
		return "<!doctype html>\n<title>" + strconv.Itoa(status) + " " + text + "</title>\n<h1>" + strconv.Itoa(status) + " " + text + "</h1>\n"
	}
}

// Refresh reloads tenant's pointer and manifest from the store now, so that
// the next requests see the version it names. It returns once the new state
// is in place (or the read failed: the previous state, if any, stays
// served). Calling it again for the same move is harmless.
func (s *Server) Refresh(ctx context.Context, tenant string) error {
	if !validTenant(tenant) {
		return fmt.Errorf("edge refresh %q: invalid tenant id", tenant)
	}
	t := s.tenantEntry(tenant)
	if _, err := s.reload(ctx, t, true); err != nil {
		return fmt.Errorf("edge refresh %s: %w", tenant, err)
	}
	return nil
}

// validTenant reports whether id is a tenant id the edge can route to: a
// DNS label of 3 to 63 characters of [a-z0-9-], not starting or ending
// with '-' (the rule the domain enforces when tenants are created).
func validTenant(id string) bool {
	if len(id) < 3 || len(id) > 63 || id[0] == '-' || id[len(id)-1] == '-' {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// validBuildLabel reports whether label is a build id as it appears in a
// deployment host name: 32 lowercase hex digits.
func validBuildLabel(label string) bool {
	if len(label) != 32 {
		return false
	}
	for i := 0; i < len(label); i++ {
		if !isHex(label[i]) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') }

// canonicalBuildID turns a 32-hex-digit build label back into the
// dashed UUID form build ids are stored under.
func canonicalBuildID(label string) string {
	return label[0:8] + "-" + label[8:12] + "-" + label[12:16] + "-" + label[16:20] + "-" + label[20:32]
}

// buildLabel is the host-name form of a build id: its UUID without dashes,
// lowercase.
func buildLabel(buildID string) string {
	return strings.ToLower(strings.ReplaceAll(buildID, "-", ""))
}

// LiveURL is the URL of tenant's live site as the edge serves it, so every
// part of zipship prints the same address. scheme defaults to "http",
// baseDomain to DefaultBaseDomain; port is omitted when empty, "80" or
// "443" (a TLS-terminating proxy in front of an edge on port 80 is served
// on the default port).
func LiveURL(scheme, baseDomain, port, tenant string) string {
	return siteURL(scheme, tenant+"."+normBase(baseDomain), port)
}

// DeploymentURL is the permanent URL of one build's version of tenant's
// site: {build}.{tenant}.{base}, with the build id written as 32 hex digits
// without dashes. It keeps serving that version after the live pointer
// moves on. Arguments are as for LiveURL.
func DeploymentURL(scheme, baseDomain, port, tenant, buildID string) string {
	return siteURL(scheme, buildLabel(buildID)+"."+tenant+"."+normBase(baseDomain), port)
}

func normBase(base string) string {
	base = strings.Trim(strings.ToLower(base), ".")
	if base == "" {
		return DefaultBaseDomain
	}
	return base
}

func siteURL(scheme, host, port string) string {
	if scheme == "" {
		scheme = "http"
	}
	if port != "" && port != "80" && port != "443" {
		host += ":" + port
	}
	return scheme + "://" + host
}
