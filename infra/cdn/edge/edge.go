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
//
// Resolving a request (host and path to site version and file, and the
// choice between a full answer, 304 and http.ServeContent's byte ranges
// and preconditions) does not depend on the HTTP server. Two thin front
// ends turn it into responses: ServeHTTP for net/http, and ServeFastHTTP
// for fasthttp (NewFastHTTPServer), which zipship serves sites with: on
// small files it reaches nginx's request rate, which net/http's per-request
// overhead does not allow (bench/edge). Both answer every request the same
// way, byte for byte apart from the Date header (TestFrontEndsAgree).
package edge

import (
	"context"
	"fmt"
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

// Server serves tenants' sites. It implements cdn.Refresher and has two
// HTTP front ends over the same resolution: ServeHTTP (net/http) and
// ServeFastHTTP (fasthttp, which NewFastHTTPServer configures). It is safe
// for concurrent use. Create it with New.
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

// hval is one precomputed header value, in the form each front end takes:
// net/http's header maps are assigned s directly (never appended to), which
// saves an allocation per header per response compared to Header.Set;
// fasthttp copies b into its own buffers.
type hval struct {
	s []string
	b []byte
}

func newHval(v string) hval { return hval{s: []string{v}, b: []byte(v)} }

// page is one of the edge's own small HTML answers.
type page struct {
	body   string
	bbody  []byte
	length hval
}

func newPage(status int) *page {
	body := statusPage(status)
	return &page{body: body, bbody: []byte(body), length: newHval(strconv.Itoa(len(body)))}
}

// headers holds header values and pages shared by all responses.
type headers struct {
	revalidate hval
	immutable  hval
	noStore    hval
	nosniff    hval
	bytes      hval
	html       hval
	allow      hval

	badRequest, notFound, notAllowed, badGateway *page
}

func newHeaders() headers {
	return headers{
		revalidate: newHval("public, max-age=0, must-revalidate"),
		immutable:  newHval("public, max-age=31536000, immutable"),
		noStore:    newHval("no-store"),
		nosniff:    newHval("nosniff"),
		bytes:      newHval("bytes"),
		html:       newHval("text/html; charset=utf-8"),
		allow:      newHval("GET, HEAD"),
		badRequest: newPage(http.StatusBadRequest),
		notFound:   newPage(http.StatusNotFound),
		notAllowed: newPage(http.StatusMethodNotAllowed),
		badGateway: newPage(http.StatusBadGateway),
	}
}

// page returns the edge's own page for status (one of those resolve and
// the front ends answer with).
func (h *headers) page(status int) *page {
	switch status {
	case http.StatusBadRequest:
		return h.badRequest
	case http.StatusMethodNotAllowed:
		return h.notAllowed
	case http.StatusBadGateway:
		return h.badGateway
	default:
		return h.notFound
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

// target is what a request resolves to, whatever HTTP server received it:
// the front ends only turn it into a response.
type target struct {
	// site is the version answering, named by X-Zipship-Build; nil when
	// none was found.
	site *site
	// file is the file to send, with status 200, or 404 for a site's
	// 404.html; nil when the answer is the edge's own page for status.
	file   *file
	status int
	// cache is the Cache-Control of the edge's own page.
	cache *hval
}

// resolve maps a request to its target. now is s.now() when the request
// arrived (a front end that reads the clock anyway passes its reading);
// getOrHead tells whether the method is GET or HEAD; host is the request's
// host (Host header or absolute URL), path its percent-decoded URL path.
// host and path may alias buffers the front end reuses after the request:
// resolve clones whatever it keeps or hands to another goroutine.
func (s *Server) resolve(ctx context.Context, now int64, getOrHead bool, host, path string) target {
	if !getOrHead {
		return target{status: http.StatusMethodNotAllowed, cache: &s.hdr.noStore}
	}
	label, ok := s.siteLabel(host)
	if !ok {
		return target{status: http.StatusNotFound, cache: &s.hdr.revalidate}
	}
	var (
		st  *site
		err error
	)
	if i := strings.IndexByte(label, '.'); i >= 0 {
		build, tenant := label[:i], label[i+1:]
		if !validBuildLabel(build) || !validTenant(tenant) {
			return target{status: http.StatusNotFound, cache: &s.hdr.revalidate}
		}
		st, err = s.buildSite(ctx, label, tenant, build, now)
	} else {
		if !validTenant(label) {
			return target{status: http.StatusNotFound, cache: &s.hdr.revalidate}
		}
		st, err = s.liveSite(ctx, label, now)
	}
	switch {
	case err != nil: // logged by the load, once for all requests sharing it
		return target{status: http.StatusBadGateway, cache: &s.hdr.noStore}
	case st == nil:
		return target{status: http.StatusNotFound, cache: &s.hdr.revalidate}
	}
	// From here on the request uses st from start to end: a concurrent
	// pointer move cannot mix versions.
	if path == "" || path[0] != '/' || strings.IndexByte(path, 0) >= 0 {
		return target{site: st, status: http.StatusBadRequest, cache: &s.hdr.noStore}
	}
	key := requestKey(path)
	if f := st.routes[key]; f != nil {
		return target{site: st, file: f, status: http.StatusOK}
	}
	if f := st.notFoundPage(key); f != nil {
		return target{site: st, file: f, status: http.StatusNotFound}
	}
	if len(st.notFound) == 0 && st.index != nil && looksLikePage(key) {
		return target{site: st, file: st.index, status: http.StatusOK} // single-page app fallback
	}
	return target{site: st, status: http.StatusNotFound, cache: &s.hdr.revalidate}
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

// reply is how a file target is answered.
type reply uint8

const (
	// replyFull sends the status, the precomputed headers and the content
	// (no content for HEAD, which opens none: with S3 opening costs a
	// request).
	replyFull reply = iota
	// replyNotModified sends 304 with the validators, opening no content.
	replyNotModified
	// replyServeContent leaves the answer to http.ServeContent, which
	// implements byte ranges and the rarer preconditions fully.
	replyServeContent
)

// conds summarizes the request headers that select a file's reply.
type conds struct {
	// inmMatch: an If-None-Match header matches the file's ETag.
	inmMatch bool
	// other: Range, If-Match or If-Unmodified-Since is present.
	// (If-Modified-Since alone needs nothing: without Last-Modified it is
	// ignored; If-Range without Range too.)
	other bool
	// preempt: If-Match or If-Unmodified-Since is present; they are
	// evaluated before If-None-Match, so a match must go to ServeContent.
	preempt bool
}

// chooseReply decides how to answer a request for the file of a target
// with status (200, or 404 for a site's 404 page, which is always sent
// whole). A matching If-None-Match means 304 whatever Range or
// If-Modified-Since say.
func chooseReply(status int, c conds) reply {
	if status != http.StatusOK {
		return replyFull
	}
	switch {
	case c.inmMatch && !c.preempt:
		return replyNotModified
	case c.other:
		return replyServeContent
	}
	return replyFull
}

// fileContent returns f's content (data when memory-cached, else an open
// object the caller must close), logging a store failure.
func (s *Server) fileContent(ctx context.Context, f *file) ([]byte, blob.Object, error) {
	data, obj, err := s.content.get(ctx, s.store, f)
	if err != nil && ctx.Err() == nil {
		s.log.Error("cannot read site file", "path", f.path, "digest", f.digest, "err", err)
	}
	return data, obj, err
}

// etagMatches reports whether one If-None-Match header value (a
// comma-separated list) matches etag by the weak comparison RFC 9110
// prescribes for it: "*" matches anything, W/ prefixes are ignored.
func etagMatches(list, etag string) bool {
	for list != "" {
		var item string
		item, list, _ = strings.Cut(list, ",")
		item = strings.TrimSpace(item)
		if item == "*" || strings.TrimPrefix(item, "W/") == etag {
			return true
		}
	}
	return false
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
