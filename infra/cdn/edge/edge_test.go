package edge_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/infra/blob/fs"
	"github.com/zipship/zipship/infra/cdn/edge"
)

const (
	cacheHTML      = "public, max-age=0, must-revalidate"
	cacheImmutable = "public, max-age=31536000, immutable"
)

// frontEnd is one of the edge's HTTP front ends; every test runs against
// each.
type frontEnd struct {
	name string
	// serve serves s on a loopback port until the test ends and returns
	// its base URL.
	serve func(t testing.TB, s *edge.Server) string
}

var frontEnds = []frontEnd{
	{"nethttp", func(t testing.TB, s *edge.Server) string {
		srv := httptest.NewServer(s)
		t.Cleanup(srv.Close)
		return srv.URL
	}},
	{"fasthttp", func(t testing.TB, s *edge.Server) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := s.NewFastHTTPServer(10*time.Second, time.Minute)
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ln) }()
		t.Cleanup(func() {
			if err := srv.Shutdown(); err != nil {
				t.Error(err)
			}
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
		return "http://" + ln.Addr().String()
	}},
}

// eachFrontEnd runs test once per front end, as a subtest named after it.
func eachFrontEnd(t *testing.T, test func(*testing.T, frontEnd)) {
	for _, fe := range frontEnds {
		t.Run(fe.name, func(t *testing.T) { test(t, fe) })
	}
}

// env is an edge server over a real filesystem blob store, reached through
// a real HTTP server (one of the front ends).
type env struct {
	store  blob.Store
	edge   *edge.Server
	url    string
	client *http.Client
}

func newEnv(t testing.TB, fe frontEnd, store blob.Store, opts edge.Options) *env {
	t.Helper()
	if store == nil {
		store = newStore(t)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e := &env{store: store, edge: edge.New(store, opts)}
	e.url = fe.serve(t, e.edge)
	e.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

func newStore(t testing.TB) *fs.Store {
	t.Helper()
	s, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// publish stores files as a new build of tenant and returns its id.
func publish(t testing.TB, s blob.Store, tenant string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	id := uuid.NewString()
	if _, _, err := blob.Publish(context.Background(), s, tenant, id, dir); err != nil {
		t.Fatal(err)
	}
	return id
}

// point makes build the live version of tenant in the store (only).
func point(t testing.TB, s blob.Store, tenant, build string) {
	t.Helper()
	err := blob.WritePointer(context.Background(), s, blob.Pointer{
		Tenant:      tenant,
		BuildID:     build,
		Version:     fmt.Sprintf("v%d", time.Now().UnixMilli()),
		ManifestKey: blob.ManifestKey(tenant, build),
		ActivatedAt: time.Now().UTC(),
	})
	if err != nil {
		t.Fatal(err)
	}
}

// deploy publishes files for tenant, points at them and refreshes the edge.
func (e *env) deploy(t testing.TB, tenant string, files map[string]string) string {
	t.Helper()
	id := publish(t, e.store, tenant, files)
	point(t, e.store, tenant, id)
	if err := e.edge.Refresh(context.Background(), tenant); err != nil {
		t.Fatal(err)
	}
	return id
}

type response struct {
	status int
	header http.Header
	body   string
}

// do sends method path to the edge with the Host header host.
func (e *env) do(t testing.TB, method, host, path string, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: string(body)}
}

func (e *env) get(t testing.TB, host, path string, hdr ...string) response {
	t.Helper()
	return e.do(t, http.MethodGet, host, path, hdr...)
}

func digest(t testing.TB, s blob.Store, tenant, build, path string) string {
	t.Helper()
	m, err := blob.LoadManifest(context.Background(), s, blob.ManifestKey(tenant, build))
	if err != nil {
		t.Fatal(err)
	}
	f, ok := m.Files[path]
	if !ok {
		t.Fatalf("%s not in manifest", path)
	}
	return f.Digest
}

func deploymentHost(tenant, build string) string {
	return strings.TrimPrefix(edge.DeploymentURL("http", "localhost", "", tenant, build), "http://")
}

func TestPathResolution(t *testing.T) { eachFrontEnd(t, testPathResolution) }

func testPathResolution(t *testing.T, fe frontEnd) {
	e := newEnv(t, fe, nil, edge.Options{})
	build := e.deploy(t, "acme", map[string]string{
		"index.html":          "home",
		"about.html":          "about page",
		"blog/index.html":     "blog index",
		"blog/post.html":      "blog post",
		"docs.html":           "docs page",
		"docs/index.html":     "docs index",
		"only-dir/index.html": "only dir",
		"404.html":            "root not found",
		"blog/404.html":       "blog not found",
		"app.js":              "console.log(1)",
		"style.css":           "body{}",
		"data":                "no extension",
		"data.html":           "data page",
	})

	tests := []struct {
		path   string
		status int
		body   string
		ctype  string
	}{
		{"/", 200, "home", "text/html; charset=utf-8"},
		{"/index.html", 200, "home", "text/html; charset=utf-8"},
		{"/about", 200, "about page", "text/html; charset=utf-8"},
		{"/about.html", 200, "about page", "text/html; charset=utf-8"},
		{"/blog/", 200, "blog index", "text/html; charset=utf-8"},
		{"/blog", 200, "blog index", "text/html; charset=utf-8"},
		{"/blog/post", 200, "blog post", "text/html; charset=utf-8"},
		{"/docs", 200, "docs page", "text/html; charset=utf-8"},     // about.html before about/index.html
		{"/docs/", 200, "docs index", "text/html; charset=utf-8"},   // a slash means the directory
		{"/only-dir", 200, "only dir", "text/html; charset=utf-8"},  // served without redirect
		{"/data", 200, "no extension", "text/plain; charset=utf-8"}, // exact file first (Publish sniffed the type)
		{"/app.js", 200, "console.log(1)", "text/javascript; charset=utf-8"},
		{"/style.css", 200, "body{}", "text/css; charset=utf-8"},
		{"/a/../about", 200, "about page", "text/html; charset=utf-8"}, // cleaned
		{"//about", 200, "about page", "text/html; charset=utf-8"},
		{"/blog//post", 200, "blog post", "text/html; charset=utf-8"},
		{"/%61bout", 200, "about page", "text/html; charset=utf-8"}, // percent-decoded
		{"/nope", 404, "root not found", "text/html; charset=utf-8"},
		{"/nope/deeper/x.js", 404, "root not found", "text/html; charset=utf-8"},
		{"/blog/missing", 404, "blog not found", "text/html; charset=utf-8"},
		{"/blog/a/b/c/missing.png", 404, "blog not found", "text/html; charset=utf-8"},
		{"/blog/a/b/", 404, "blog not found", "text/html; charset=utf-8"},
		{"/../../etc/passwd", 404, "root not found", "text/html; charset=utf-8"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			r := e.get(t, "acme.localhost", tc.path)
			if r.status != tc.status || r.body != tc.body {
				t.Fatalf("GET %s = %d %q, want %d %q", tc.path, r.status, r.body, tc.status, tc.body)
			}
			if got := r.header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("Content-Type = %q, want %q", got, tc.ctype)
			}
			if got := r.header.Get("X-Zipship-Build"); got != build {
				t.Errorf("X-Zipship-Build = %q, want %q", got, build)
			}
			if got := r.header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options = %q", got)
			}
			if tc.status == 404 {
				if got := r.header.Get("Cache-Control"); got != cacheHTML {
					t.Errorf("404 Cache-Control = %q, want %q", got, cacheHTML)
				}
				if got := r.header.Get("ETag"); got != "" {
					t.Errorf("404 has ETag %q", got)
				}
			}
		})
	}

	// A site's 404 page answers HEAD without a body too.
	r := e.do(t, http.MethodHead, "acme.localhost", "/blog/missing")
	if r.status != 404 || r.body != "" || r.header.Get("Content-Length") != fmt.Sprint(len("blog not found")) {
		t.Errorf("HEAD of a missing page = %d %q Content-Length %q", r.status, r.body, r.header.Get("Content-Length"))
	}
}

func TestHeaders(t *testing.T) { eachFrontEnd(t, testHeaders) }

func testHeaders(t *testing.T, fe frontEnd) {
	e := newEnv(t, fe, nil, edge.Options{})
	files := map[string]string{
		"index.html":                                "<p>home</p>",
		"assets/app-3f9a1c2b.js":                    "vite js",
		"assets/index.B9x_kQ2a.css":                 "vite css",
		"assets/index-B-x3_kL9.js":                  "vite hash with dash",
		"sub/assets/vendor-a1b2c3d4e5.js":           "nested assets",
		"assets/logo.png":                           "logo",
		"assets/site-background.jpg":                "not a hash: no digit",
		"assets/index-DsKaihGT.js":                  "vite hash without a digit",
		"assets/hero-features.png":                  "one case: a word",
		"assets/app-3f9a1c.js":                      "too short",
		"assets/page-12345678.html":                 "html is never immutable",
		"_next/static/chunks/main.js":               "next chunk",
		"_next/static/media/font.woff2":             "next font",
		"_next/data/x.json":                         "next data",
		"app-3f9a1c2b.js":                           "hash outside assets",
		"favicon.ico":                               "icon",
		"blog/_next/static/chunks/app-with-base.js": "basePath build",
	}
	build := e.deploy(t, "acme", files)
	tests := []struct {
		path, cache string
	}{
		{"/index.html", cacheHTML},
		{"/assets/app-3f9a1c2b.js", cacheImmutable},
		{"/assets/index.B9x_kQ2a.css", cacheImmutable},
		{"/assets/index-B-x3_kL9.js", cacheImmutable},
		{"/sub/assets/vendor-a1b2c3d4e5.js", cacheImmutable},
		{"/assets/logo.png", cacheHTML},
		{"/assets/site-background.jpg", cacheHTML},
		{"/assets/index-DsKaihGT.js", cacheImmutable},
		{"/assets/hero-features.png", cacheHTML},
		{"/assets/app-3f9a1c.js", cacheHTML},
		{"/assets/page-12345678.html", cacheHTML},
		{"/_next/static/chunks/main.js", cacheImmutable},
		{"/_next/static/media/font.woff2", cacheImmutable},
		{"/_next/data/x.json", cacheHTML},
		{"/app-3f9a1c2b.js", cacheHTML},
		{"/favicon.ico", cacheHTML},
		{"/blog/_next/static/chunks/app-with-base.js", cacheImmutable},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			r := e.get(t, "acme.localhost", tc.path)
			name := strings.TrimPrefix(tc.path, "/")
			if r.status != 200 || r.body != files[name] {
				t.Fatalf("GET %s = %d %q", tc.path, r.status, r.body)
			}
			if got := r.header.Get("Cache-Control"); got != tc.cache {
				t.Errorf("Cache-Control = %q, want %q", got, tc.cache)
			}
			want := `"` + digest(t, e.store, "acme", build, name) + `"`
			if got := r.header.Get("ETag"); got != want {
				t.Errorf("ETag = %q, want %q", got, want)
			}
			if got := r.header.Get("Content-Length"); got != fmt.Sprint(len(files[name])) {
				t.Errorf("Content-Length = %q, want %d", got, len(files[name]))
			}
			if got := r.header.Get("Accept-Ranges"); got != "bytes" {
				t.Errorf("Accept-Ranges = %q", got)
			}
		})
	}
}

func TestSPAFallback(t *testing.T) { eachFrontEnd(t, testSPAFallback) }

func testSPAFallback(t *testing.T, fe frontEnd) {
	e := newEnv(t, fe, nil, edge.Options{})
	build := e.deploy(t, "spa", map[string]string{
		"index.html": "spa shell",
		"app.js":     "app",
	})
	for _, p := range []string{"/dashboard", "/users/42/settings", "/users/42/", "/v1.2/users"} {
		r := e.get(t, "spa.localhost", p)
		if r.status != 200 || r.body != "spa shell" {
			t.Errorf("GET %s = %d %q, want the SPA shell", p, r.status, r.body)
		}
		if got := r.header.Get("Cache-Control"); got != cacheHTML {
			t.Errorf("GET %s Cache-Control = %q", p, got)
		}
	}
	for _, p := range []string{"/app2.js", "/static/missing.css", "/favicon.ico"} {
		r := e.get(t, "spa.localhost", p)
		if r.status != 404 || r.body == "spa shell" || !strings.Contains(r.body, "404") {
			t.Errorf("GET %s = %d %q, want a plain 404", p, r.status, r.body)
		}
		if got := r.header.Get("X-Zipship-Build"); got != build {
			t.Errorf("GET %s X-Zipship-Build = %q, want %q", p, got, build)
		}
	}

	// A 404.html anywhere turns the fallback off.
	e.deploy(t, "nospa", map[string]string{
		"index.html":    "shell",
		"docs/404.html": "docs 404",
	})
	if r := e.get(t, "nospa.localhost", "/dashboard"); r.status != 404 || r.body == "shell" {
		t.Errorf("GET /dashboard with a 404.html in the site = %d %q, want 404", r.status, r.body)
	}
	if r := e.get(t, "nospa.localhost", "/docs/x"); r.status != 404 || r.body != "docs 404" {
		t.Errorf("GET /docs/x = %d %q, want the docs 404 page", r.status, r.body)
	}

	// Without index.html there is nothing to fall back to.
	e.deploy(t, "noindex", map[string]string{"app.js": "x"})
	if r := e.get(t, "noindex.localhost", "/dashboard"); r.status != 404 {
		t.Errorf("GET /dashboard without index.html = %d, want 404", r.status)
	}
}

func TestConditionalRangeHead(t *testing.T) { eachFrontEnd(t, testConditionalRangeHead) }

func testConditionalRangeHead(t *testing.T, fe frontEnd) {
	// Small files come from memory, big ones from the store: test both.
	big := strings.Repeat("0123456789abcdef", (edge.MaxMemoryFileSize+4096)/16)
	small := "<!doctype html><p>small page</p>"
	e := newEnv(t, fe, nil, edge.Options{})
	build := e.deploy(t, "acme", map[string]string{"index.html": small, "big.bin": big})

	for _, tc := range []struct{ path, name, body string }{
		{"/", "index.html", small},
		{"/big.bin", "big.bin", big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			etag := `"` + digest(t, e.store, "acme", build, tc.name) + `"`

			r := e.get(t, "acme.localhost", tc.path, "If-None-Match", etag)
			if r.status != http.StatusNotModified || r.body != "" {
				t.Errorf("If-None-Match: %d %q, want 304 without body", r.status, r.body)
			}
			if r.header.Get("ETag") != etag || r.header.Get("X-Zipship-Build") != build || r.header.Get("Cache-Control") == "" {
				t.Errorf("304 headers: %v", r.header)
			}
			for _, inm := range []string{"W/" + etag, `"other", ` + etag, "*"} {
				if r := e.get(t, "acme.localhost", tc.path, "If-None-Match", inm); r.status != http.StatusNotModified {
					t.Errorf("If-None-Match %s: %d, want 304", inm, r.status)
				}
			}
			if r := e.get(t, "acme.localhost", tc.path, "If-None-Match", `"other"`); r.status != 200 || r.body != tc.body {
				t.Errorf("If-None-Match other: %d, want 200 with the body", r.status)
			}
			if r.header.Get("Content-Type") != "" {
				t.Errorf("304 has Content-Type %q", r.header.Get("Content-Type"))
			}
			if r := e.do(t, http.MethodHead, "acme.localhost", tc.path, "If-None-Match", etag); r.status != http.StatusNotModified {
				t.Errorf("HEAD If-None-Match: %d, want 304", r.status)
			}
			// If-None-Match wins over Range.
			if r := e.get(t, "acme.localhost", tc.path, "If-None-Match", etag, "Range", "bytes=0-1"); r.status != http.StatusNotModified {
				t.Errorf("If-None-Match + Range: %d, want 304", r.status)
			}
			if r := e.get(t, "acme.localhost", tc.path, "If-Match", `"other"`); r.status != http.StatusPreconditionFailed {
				t.Errorf("If-Match other: %d, want 412", r.status)
			}
			if r := e.get(t, "acme.localhost", tc.path, "If-Match", etag); r.status != 200 || r.body != tc.body {
				t.Errorf("If-Match: %d, want 200 with the body", r.status)
			}

			r = e.get(t, "acme.localhost", tc.path, "Range", "bytes=5-14")
			if r.status != http.StatusPartialContent || r.body != tc.body[5:15] {
				t.Errorf("Range: %d %q, want 206 %q", r.status, r.body, tc.body[5:15])
			}
			if got, want := r.header.Get("Content-Range"), fmt.Sprintf("bytes 5-14/%d", len(tc.body)); got != want {
				t.Errorf("Content-Range = %q, want %q", got, want)
			}
			r = e.get(t, "acme.localhost", tc.path, "Range", "bytes=-4")
			if r.status != http.StatusPartialContent || r.body != tc.body[len(tc.body)-4:] {
				t.Errorf("suffix Range: %d %q", r.status, r.body)
			}
			r = e.get(t, "acme.localhost", tc.path, "Range", fmt.Sprintf("bytes=%d-", len(tc.body)+10))
			if r.status != http.StatusRequestedRangeNotSatisfiable {
				t.Errorf("unsatisfiable Range: %d, want 416", r.status)
			}
			// If-Range with a stale validator gets the whole content.
			r = e.get(t, "acme.localhost", tc.path, "Range", "bytes=0-3", "If-Range", `"stale"`)
			if r.status != 200 || r.body != tc.body {
				t.Errorf("If-Range stale: %d, want 200 with the whole body", r.status)
			}

			r = e.do(t, http.MethodHead, "acme.localhost", tc.path)
			if r.status != 200 || r.body != "" {
				t.Errorf("HEAD: %d %d bytes, want 200 without body", r.status, len(r.body))
			}
			if r.header.Get("Content-Length") != fmt.Sprint(len(tc.body)) || r.header.Get("ETag") != etag ||
				r.header.Get("X-Zipship-Build") != build || r.header.Get("Content-Type") == "" {
				t.Errorf("HEAD headers: %v", r.header)
			}

			r = e.get(t, "acme.localhost", tc.path)
			if r.status != 200 || r.body != tc.body {
				t.Errorf("GET: %d, %d bytes, want 200 with %d bytes", r.status, len(r.body), len(tc.body))
			}
		})
	}
}

func TestHostRouting(t *testing.T) { eachFrontEnd(t, testHostRouting) }

func testHostRouting(t *testing.T, fe frontEnd) {
	e := newEnv(t, fe, nil, edge.Options{BaseDomain: "Sites.Example.COM"})
	build := e.deploy(t, "acme", map[string]string{"index.html": "acme home"})
	publish(t, e.store, "nopointer", map[string]string{"index.html": "never live"})

	tests := []struct {
		host   string
		status int
	}{
		{"acme.sites.example.com", 200},
		{"ACME.Sites.Example.Com", 200},
		{"acme.sites.example.com:8443", 200},
		{"acme.sites.example.com.", 200},
		{"acme.sites.example.com.:80", 200},
		{"other.sites.example.com", 404},     // unknown tenant
		{"nopointer.sites.example.com", 404}, // published, never pointed at
		{"ab.sites.example.com", 404},        // too short for a tenant id
		{"-acme.sites.example.com", 404},
		{"ac_me.sites.example.com", 404},
		{"x.acme.sites.example.com", 404}, // not a build id
		{"sites.example.com", 404},
		{".sites.example.com", 404},
		{"acme.example.com", 404},
		{"acme.sites.example.com.evil.net", 404},
		{"127.0.0.1", 404},
		{"[::1]:8080", 404},
	}
	for _, tc := range tests {
		r := e.get(t, tc.host, "/")
		if r.status != tc.status {
			t.Errorf("Host %q: %d, want %d", tc.host, r.status, tc.status)
			continue
		}
		if tc.status == 200 && (r.body != "acme home" || r.header.Get("X-Zipship-Build") != build) {
			t.Errorf("Host %q: %q build %q", tc.host, r.body, r.header.Get("X-Zipship-Build"))
		}
		if tc.status == 404 && (!strings.Contains(r.body, "404") || r.header.Get("Content-Type") != "text/html; charset=utf-8") {
			t.Errorf("Host %q: 404 body %q type %q", tc.host, r.body, r.header.Get("Content-Type"))
		}
	}

	// The same unknown tenant again (now remembered as missing) and a
	// tenant that gets a pointer later plus Refresh.
	if r := e.get(t, "late.sites.example.com", "/"); r.status != 404 {
		t.Fatalf("late before deploy: %d", r.status)
	}
	late := e.deploy(t, "late", map[string]string{"index.html": "late home"})
	if r := e.get(t, "late.sites.example.com", "/"); r.status != 200 || r.header.Get("X-Zipship-Build") != late {
		t.Errorf("late after deploy + Refresh: %d %q", r.status, r.body)
	}

	if r := e.do(t, http.MethodPost, "acme.sites.example.com", "/"); r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d Allow %q", r.status, r.header.Get("Allow"))
	}
	if r := e.get(t, "acme.sites.example.com", "/a%00b"); r.status != http.StatusBadRequest {
		t.Errorf("NUL in path: %d, want 400", r.status)
	}
	if err := e.edge.Refresh(context.Background(), "Not_Valid"); err == nil {
		t.Error("Refresh of an invalid tenant id succeeded")
	}
}

func TestPermanentURL(t *testing.T) { eachFrontEnd(t, testPermanentURL) }

func testPermanentURL(t *testing.T, fe frontEnd) {
	e := newEnv(t, fe, nil, edge.Options{PointerTTL: time.Hour})
	v1 := e.deploy(t, "acme", map[string]string{"index.html": "v1 home", "about.html": "v1 about", "404.html": "v1 404"})
	v2 := e.deploy(t, "acme", map[string]string{"index.html": "v2 home"})
	other := e.deploy(t, "other", map[string]string{"index.html": "other home"})

	if r := e.get(t, "acme.localhost", "/"); r.body != "v2 home" || r.header.Get("X-Zipship-Build") != v2 {
		t.Fatalf("live: %q %q, want v2", r.body, r.header.Get("X-Zipship-Build"))
	}
	host := deploymentHost("acme", v1)
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/", 200, "v1 home"},
		{"/about", 200, "v1 about"},
		{"/missing", 404, "v1 404"},
	} {
		r := e.get(t, host, tc.path)
		if r.status != tc.status || r.body != tc.body || r.header.Get("X-Zipship-Build") != v1 {
			t.Errorf("%s%s: %d %q build %q, want %d %q build %s", host, tc.path, r.status, r.body, r.header.Get("X-Zipship-Build"), tc.status, tc.body, v1)
		}
	}
	if r := e.get(t, strings.ToUpper(host)+":8080", "/"); r.body != "v1 home" {
		t.Errorf("upper-case deployment host with port: %d %q", r.status, r.body)
	}
	if r := e.get(t, deploymentHost("acme", v2), "/"); r.body != "v2 home" {
		t.Errorf("v2 deployment: %q", r.body)
	}
	// A build of another tenant is not reachable under this tenant.
	if r := e.get(t, deploymentHost("acme", other), "/"); r.status != 404 {
		t.Errorf("other tenant's build under acme: %d %q", r.status, r.body)
	}
	if r := e.get(t, deploymentHost("acme", uuid.NewString()), "/"); r.status != 404 {
		t.Errorf("unknown build: %d", r.status)
	}
	// A dashed build id is not the deployment host form.
	if r := e.get(t, v1+".acme.localhost", "/"); r.status != 404 {
		t.Errorf("dashed build id host: %d", r.status)
	}
}

func TestURLs(t *testing.T) {
	build := "0190a3c2-7b1e-7c3d-9e4f-5a6b7c8d9e0f"
	tests := []struct{ got, want string }{
		{edge.LiveURL("http", "localhost", "8080", "acme"), "http://acme.localhost:8080"},
		{edge.LiveURL("https", "sites.example.com", "443", "acme"), "https://acme.sites.example.com"},
		{edge.LiveURL("http", "sites.example.com", "80", "acme"), "http://acme.sites.example.com"},
		{edge.LiveURL("", "", "", "acme"), "http://acme.localhost"},
		{edge.LiveURL("https", "Example.COM.", "", "acme"), "https://acme.example.com"},
		{edge.DeploymentURL("http", "localhost", "8080", "acme", build), "http://0190a3c27b1e7c3d9e4f5a6b7c8d9e0f.acme.localhost:8080"},
		{edge.DeploymentURL("https", "sites.example.com", "", "acme", strings.ToUpper(build)), "https://0190a3c27b1e7c3d9e4f5a6b7c8d9e0f.acme.sites.example.com"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestRefreshAndTTL(t *testing.T) { eachFrontEnd(t, testRefreshAndTTL) }

func testRefreshAndTTL(t *testing.T, fe frontEnd) {
	t.Run("refresh", func(t *testing.T) {
		e := newEnv(t, fe, nil, edge.Options{PointerTTL: time.Hour})
		v1 := e.deploy(t, "acme", map[string]string{"index.html": "v1"})
		v2 := publish(t, e.store, "acme", map[string]string{"index.html": "v2"})
		point(t, e.store, "acme", v2)
		// Without Refresh the edge trusts its cached pointer for the TTL.
		if r := e.get(t, "acme.localhost", "/"); r.body != "v1" || r.header.Get("X-Zipship-Build") != v1 {
			t.Fatalf("before Refresh: %q, want the cached v1", r.body)
		}
		if err := e.edge.Refresh(context.Background(), "acme"); err != nil {
			t.Fatal(err)
		}
		if r := e.get(t, "acme.localhost", "/"); r.body != "v2" || r.header.Get("X-Zipship-Build") != v2 {
			t.Fatalf("after Refresh: %q, want v2", r.body)
		}
		// Refresh is idempotent.
		if err := e.edge.Refresh(context.Background(), "acme"); err != nil {
			t.Fatal(err)
		}
		if r := e.get(t, "acme.localhost", "/"); r.body != "v2" {
			t.Fatalf("after a second Refresh: %q, want v2", r.body)
		}
	})

	t.Run("ttl", func(t *testing.T) {
		e := newEnv(t, fe, nil, edge.Options{PointerTTL: 50 * time.Millisecond})
		e.deploy(t, "acme", map[string]string{"index.html": "v1"})
		if r := e.get(t, "acme.localhost", "/"); r.body != "v1" {
			t.Fatalf("first: %q", r.body)
		}
		v2 := publish(t, e.store, "acme", map[string]string{"index.html": "v2"})
		moved := time.Now()
		point(t, e.store, "acme", v2) // another process's move: no Refresh
		for {
			r := e.get(t, "acme.localhost", "/")
			if r.body == "v2" && r.header.Get("X-Zipship-Build") == v2 {
				break
			}
			if time.Since(moved) > 3*time.Second {
				t.Fatalf("move not visible %v after it was made (TTL 50ms): still %q", time.Since(moved), r.body)
			}
			time.Sleep(5 * time.Millisecond)
		}
		// An idle tenant is reloaded before its next request is served.
		v3 := publish(t, e.store, "acme", map[string]string{"index.html": "v3"})
		point(t, e.store, "acme", v3)
		time.Sleep(150 * time.Millisecond)
		if r := e.get(t, "acme.localhost", "/"); r.body != "v3" {
			t.Errorf("after idling past 2×TTL: %q, want v3 at once", r.body)
		}
		// A tenant created by another process appears too.
		n := publish(t, e.store, "newco", map[string]string{"index.html": "newco"})
		if r := e.get(t, "newco.localhost", "/"); r.status != 404 {
			t.Fatalf("newco before pointer: %d", r.status)
		}
		point(t, e.store, "newco", n)
		time.Sleep(60 * time.Millisecond)
		if r := e.get(t, "newco.localhost", "/"); r.body != "newco" {
			t.Errorf("newco after TTL: %d %q", r.status, r.body)
		}
	})
}

// TestAtomicSwitch flips the pointer between two versions while requests
// hammer the site: every response must be entirely one version, the one
// its X-Zipship-Build header names.
func TestAtomicSwitch(t *testing.T) { eachFrontEnd(t, testAtomicSwitch) }

func testAtomicSwitch(t *testing.T, fe frontEnd) {
	e := newEnv(t, fe, nil, edge.Options{PointerTTL: time.Hour})
	versions := map[string]map[string]string{} // build → path → body
	var builds []string
	for _, v := range []string{"AAAA", "BBBB"} {
		files := map[string]string{
			"index.html":               "<p>version " + v + "</p>",
			"about.html":               "about " + v,
			"assets/app-1a2b3c4d5e.js": strings.Repeat("js "+v+";", 100),
			"big.bin":                  strings.Repeat("version "+v+"\n", edge.MaxMemoryFileSize/10),
		}
		id := publish(t, e.store, "flip", files)
		versions[id] = files
		builds = append(builds, id)
	}
	point(t, e.store, "flip", builds[0])
	if err := e.edge.Refresh(context.Background(), "flip"); err != nil {
		t.Fatal(err)
	}

	paths := []string{"/", "/about", "/assets/app-1a2b3c4d5e.js", "/big.bin"}
	files := map[string]string{"/": "index.html", "/about": "about.html", "/assets/app-1a2b3c4d5e.js": "assets/app-1a2b3c4d5e.js", "/big.bin": "big.bin"}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg       sync.WaitGroup
		requests atomic.Int64
		seen     sync.Map
		failures atomic.Int64
	)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ctx.Err() == nil; i++ {
				p := paths[i%len(paths)]
				req, _ := http.NewRequest(http.MethodGet, e.url+p, nil)
				req.Host = "flip.localhost"
				res, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil {
					t.Error(err)
					return
				}
				requests.Add(1)
				build := res.Header.Get("X-Zipship-Build")
				seen.Store(build, true)
				want, ok := versions[build][files[p]]
				if res.StatusCode != 200 || !ok || string(body) != want {
					if failures.Add(1) <= 5 {
						t.Errorf("GET %s: %d build %q, body (%d bytes) %.40q is not that build's", p, res.StatusCode, build, len(body), body)
					}
				}
			}
		}()
	}
	start := time.Now()
	for i := 0; i < 20 || (i < 200 && time.Since(start) < time.Second); i++ {
		point(t, e.store, "flip", builds[(i+1)%2])
		if err := e.edge.Refresh(ctx, "flip"); err != nil {
			t.Error(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	for _, b := range builds {
		if _, ok := seen.Load(b); !ok {
			t.Errorf("build %s never served: the test did not exercise the switch", b)
		}
	}
	if requests.Load() < 100 {
		t.Errorf("only %d requests during the flips", requests.Load())
	}
	t.Logf("%d requests, %d failures", requests.Load(), failures.Load())
}

// faultyStore wraps a store: it can be made to fail, or be slow, and counts
// opens of pointers.
type faultyStore struct {
	blob.Store
	fail         atomic.Bool
	delay        time.Duration
	pointerOpens atomic.Int64
}

func (s *faultyStore) Open(ctx context.Context, key string) (blob.Object, error) {
	if strings.HasPrefix(key, "pointers/") {
		s.pointerOpens.Add(1)
		time.Sleep(s.delay)
	}
	if s.fail.Load() {
		return nil, errors.New("store is down")
	}
	return s.Store.Open(ctx, key)
}

func TestStoreFailure(t *testing.T) { eachFrontEnd(t, testStoreFailure) }

func testStoreFailure(t *testing.T, fe frontEnd) {
	fst := &faultyStore{Store: newStore(t)}
	e := newEnv(t, fe, fst, edge.Options{PointerTTL: 20 * time.Millisecond, MemoryCacheBytes: -1})
	v1 := e.deploy(t, "acme", map[string]string{"index.html": "v1"})
	if r := e.get(t, "acme.localhost", "/"); r.body != "v1" {
		t.Fatalf("before failure: %q", r.body)
	}

	fst.fail.Store(true)
	if err := e.edge.Refresh(context.Background(), "acme"); err == nil {
		t.Error("Refresh succeeded with the store down")
	}
	time.Sleep(50 * time.Millisecond) // past the TTL: the reload fails too
	// The state is still served; content reads fail (no memory cache), so
	// this is a 502 that names the build...
	r := e.get(t, "acme.localhost", "/")
	if r.status != http.StatusBadGateway || r.header.Get("X-Zipship-Build") != v1 || r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("content read failing: %d build %q cache %q", r.status, r.header.Get("X-Zipship-Build"), r.header.Get("Cache-Control"))
	}
	// ...while a tenant never loaded has no last good state: 502.
	if r := e.get(t, "other.localhost", "/"); r.status != http.StatusBadGateway {
		t.Errorf("unknown tenant with the store down: %d, want 502", r.status)
	}

	fst.fail.Store(false)
	if r := e.get(t, "acme.localhost", "/"); r.status != 200 || r.body != "v1" {
		t.Errorf("after recovery: %d %q", r.status, r.body)
	}

	// With the memory cache on, a failing store still leaves the site up.
	fst2 := &faultyStore{Store: newStore(t)}
	e2 := newEnv(t, fe, fst2, edge.Options{PointerTTL: 20 * time.Millisecond})
	e2.deploy(t, "acme", map[string]string{"index.html": "cached v1"})
	if r := e2.get(t, "acme.localhost", "/"); r.body != "cached v1" {
		t.Fatalf("warm-up: %q", r.body)
	}
	fst2.fail.Store(true)
	time.Sleep(50 * time.Millisecond)
	for range 3 {
		if r := e2.get(t, "acme.localhost", "/"); r.status != 200 || r.body != "cached v1" {
			t.Errorf("store down, last good state + memory cache: %d %q", r.status, r.body)
		}
	}
}

func TestCoalescedLoads(t *testing.T) { eachFrontEnd(t, testCoalescedLoads) }

func testCoalescedLoads(t *testing.T, fe frontEnd) {
	fst := &faultyStore{Store: newStore(t), delay: 200 * time.Millisecond}
	e := newEnv(t, fe, fst, edge.Options{PointerTTL: time.Hour})
	build := publish(t, fst, "acme", map[string]string{"index.html": "home"})
	point(t, fst, "acme", build)

	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := e.get(t, "acme.localhost", "/"); r.body != "home" {
				t.Errorf("got %d %q", r.status, r.body)
			}
		}()
	}
	wg.Wait()
	if n := fst.pointerOpens.Load(); n != 1 {
		t.Errorf("32 concurrent cold requests read the pointer %d times, want 1", n)
	}
	for range 10 {
		e.get(t, "acme.localhost", "/")
	}
	if n := fst.pointerOpens.Load(); n != 1 {
		t.Errorf("warm requests within the TTL read the pointer: %d reads", n)
	}

	// An unknown tenant is remembered as such (for a TTL), so repeated
	// requests for it do not each read the store.
	fst.delay = 0
	for range 10 {
		if r := e.get(t, "unknown.localhost", "/"); r.status != 404 {
			t.Fatalf("unknown tenant: %d", r.status)
		}
	}
	if n := fst.pointerOpens.Load(); n != 2 {
		t.Errorf("10 requests for an unknown tenant read pointers %d times, want 1", n-1)
	}
}

func TestMemoryCache(t *testing.T) { eachFrontEnd(t, testMemoryCache) }

func testMemoryCache(t *testing.T, fe frontEnd) {
	// Content read once is served from memory: deleting the blob does not
	// break the site (content addressing means it can never be stale).
	st := newStore(t)
	e := newEnv(t, fe, st, edge.Options{})
	build := e.deploy(t, "acme", map[string]string{"index.html": "home", "a.css": "a"})
	if r := e.get(t, "acme.localhost", "/"); r.body != "home" {
		t.Fatal(r.body)
	}
	if err := st.Delete(context.Background(), blob.BlobKey(digest(t, st, "acme", build, "index.html"))); err != nil {
		t.Fatal(err)
	}
	if r := e.get(t, "acme.localhost", "/"); r.status != 200 || r.body != "home" {
		t.Errorf("cached content after blob deletion: %d %q", r.status, r.body)
	}

	// Revalidation and HEAD need no content: they work with the blob gone
	// (and cost no store read, which matters with S3).
	e3 := newEnv(t, fe, st, edge.Options{MemoryCacheBytes: -1})
	if err := e3.edge.Refresh(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	etag := `"` + digest(t, st, "acme", build, "index.html") + `"`
	if r := e3.get(t, "acme.localhost", "/", "If-None-Match", etag); r.status != http.StatusNotModified {
		t.Errorf("If-None-Match with the blob gone: %d, want 304", r.status)
	}
	if r := e3.do(t, http.MethodHead, "acme.localhost", "/"); r.status != 200 || r.header.Get("Content-Length") != "4" {
		t.Errorf("HEAD with the blob gone: %d Content-Length %q", r.status, r.header.Get("Content-Length"))
	}
	if r := e3.get(t, "acme.localhost", "/"); r.status != http.StatusBadGateway || r.header.Get("ETag") != "" {
		t.Errorf("GET with the blob gone and no memory cache: %d ETag %q, want 502 without ETag", r.status, r.header.Get("ETag"))
	}

	// A tiny budget evicts, and every answer stays right.
	e2 := newEnv(t, fe, nil, edge.Options{MemoryCacheBytes: 3000})
	files := map[string]string{}
	for i := range 8 {
		files[fmt.Sprintf("f%d.txt", i)] = strings.Repeat(fmt.Sprint(i), 1000)
	}
	e2.deploy(t, "acme", files)
	for round := range 3 {
		for name, body := range files {
			if r := e2.get(t, "acme.localhost", "/"+name); r.status != 200 || r.body != body {
				t.Fatalf("round %d %s: %d %.20q", round, name, r.status, r.body)
			}
		}
	}
}

// discardWriter is a reusable http.ResponseWriter that drops the body, so
// handler benchmarks measure the edge, not a recorder's copying.
type discardWriter struct {
	h      http.Header
	status int
	n      int64
}

func (d *discardWriter) Header() http.Header { return d.h }
func (d *discardWriter) WriteHeader(s int)   { d.status = s }
func (d *discardWriter) Write(p []byte) (int, error) {
	d.n += int64(len(p))
	return len(p), nil
}

func benchEdge(b *testing.B, path string, size int) {
	files := map[string]string{
		"index.html":             strings.Repeat("<p>zipship edge benchmark page</p>\n", 2048/36),
		"assets/app-3f9a1c2b.js": strings.Repeat("x", 1<<20),
	}
	st := newStore(b)
	e := newEnv(b, frontEnds[0], st, edge.Options{})
	e.deploy(b, "demo", files)

	b.Run("handler", func(b *testing.B) {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Host = "demo.localhost"
		w := &discardWriter{h: make(http.Header)}
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			w.n = 0
			e.edge.ServeHTTP(w, req)
			if w.status != 200 || w.n != int64(size) {
				b.Fatalf("status %d, %d bytes", w.status, w.n)
			}
		}
	})
	b.Run("fasthandler", func(b *testing.B) {
		var ctx fasthttp.RequestCtx
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			ctx.Request.Reset()
			ctx.Response.Reset()
			ctx.Request.SetRequestURI(path)
			ctx.Request.Header.SetHost("demo.localhost")
			e.edge.ServeFastHTTP(&ctx)
			if ctx.Response.StatusCode() != 200 || len(ctx.Response.Body()) != size {
				b.Fatalf("status %d, %d bytes", ctx.Response.StatusCode(), len(ctx.Response.Body()))
			}
		}
	})
	for _, fe := range frontEnds {
		url := fe.serve(b, e.edge)
		b.Run("loopback-"+fe.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 64<<10)
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodGet, url+path, nil)
					req.Host = "demo.localhost"
					res, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					n, _ := io.CopyBuffer(io.Discard, res.Body, buf)
					res.Body.Close()
					if res.StatusCode != 200 || n != int64(size) {
						b.Errorf("status %d, %d bytes", res.StatusCode, n)
						return
					}
				}
			})
		})
	}
}

// BenchmarkEdgeSmallHTML serves a ~2 KB index.html (memory cache).
func BenchmarkEdgeSmallHTML(b *testing.B) {
	benchEdge(b, "/", len(strings.Repeat("<p>zipship edge benchmark page</p>\n", 2048/36)))
}

// BenchmarkEdge1MB serves a 1 MiB hashed asset (streamed from the store).
func BenchmarkEdge1MB(b *testing.B) {
	benchEdge(b, "/assets/app-3f9a1c2b.js", 1<<20)
}

// TestFrontEndsAgree sends the same requests to both front ends over the
// same edge and store, and requires the same status, headers (but Date)
// and body, so that the fasthttp front end cannot drift from net/http's
// semantics in the cases no other test covers.
func TestFrontEndsAgree(t *testing.T) {
	store := newStore(t)
	e := newEnv(t, frontEnds[0], store, edge.Options{})
	fastURL := frontEnds[1].serve(t, e.edge)
	big := strings.Repeat("0123456789abcdef", (edge.MaxMemoryFileSize+4096)/16)
	build := e.deploy(t, "acme", map[string]string{
		"index.html":             "<!doctype html><p>home</p>",
		"about.html":             "about",
		"docs.html":              "docs page",
		"docs/index.html":        "docs index",
		"docs/404.html":          "docs 404",
		"assets/app-3f9a1c2b.js": "console.log(1)",
		"big.bin":                big,
		"empty.txt":              "",
	})
	e.deploy(t, "spa", map[string]string{"index.html": "shell"})
	etag := `"` + digest(t, store, "acme", build, "index.html") + `"`
	bigETag := `"` + digest(t, store, "acme", build, "big.bin") + `"`
	deployment := deploymentHost("acme", build)

	type req struct {
		method, host, path string
		hdr                []string
	}
	var reqs []req
	for _, host := range []string{"acme.localhost", "ACME.localhost:8080", deployment, "spa.localhost",
		"nobody.localhost", "localhost", "127.0.0.1", "[::1]:80", "x.acme.localhost", ""} {
		for _, p := range []string{"/", "/about", "/docs", "/docs/", "/docs/.", "/docs/x/y", "/missing", "/missing.js",
			"/assets/app-3f9a1c2b.js", "/big.bin", "/empty.txt", "/%61bout", "/a%00b", "//about", "/a/../about", "/dashboard/1"} {
			reqs = append(reqs, req{"GET", host, p, nil}, req{"HEAD", host, p, nil})
		}
	}
	for _, p := range []string{"/", "/big.bin", "/empty.txt", "/missing"} {
		for _, hdr := range [][]string{
			{"If-None-Match", etag}, {"If-None-Match", bigETag}, {"If-None-Match", "W/" + etag + ", " + bigETag},
			{"If-None-Match", `"x"`}, {"If-None-Match", "*"},
			{"Range", "bytes=0-3"}, {"Range", "bytes=-5"}, {"Range", "bytes=10-"}, {"Range", "bytes=0-1,5-9"},
			{"Range", "bytes=999999999-"}, {"Range", "bytes=x"}, {"Range", "items=0-1"},
			{"Range", "bytes=0-1", "If-Range", etag}, {"Range", "bytes=0-1", "If-Range", bigETag}, {"Range", "bytes=0-1", "If-Range", `"stale"`},
			{"Range", "bytes=0-1", "If-Range", "Mon, 02 Jan 2006 15:04:05 GMT"},
			{"If-Match", etag}, {"If-Match", bigETag}, {"If-Match", `"x"`}, {"If-Match", "*"},
			{"If-Unmodified-Since", "Mon, 02 Jan 2006 15:04:05 GMT"}, {"If-Modified-Since", "Mon, 02 Jan 2006 15:04:05 GMT"},
			{"If-None-Match", etag, "If-Match", `"x"`}, {"If-None-Match", bigETag, "If-Match", bigETag},
			{"If-None-Match", etag, "Range", "bytes=0-1"},
		} {
			reqs = append(reqs, req{"GET", "acme.localhost", p, hdr}, req{"HEAD", "acme.localhost", p, hdr})
		}
	}
	for _, m := range []string{"POST", "PUT", "DELETE", "OPTIONS", "PATCH"} {
		reqs = append(reqs, req{m, "acme.localhost", "/", nil}, req{m, "nobody.localhost", "/x", nil})
	}

	// (A body of more than 256 KiB gets the same 405 and Connection: close
	// from both, but fasthttp then closes at once where net/http lingers,
	// so a client still sending may see a reset.)
	bodies := map[string]string{"POST": strings.Repeat("x", 32<<10), "PUT": "small"}
	do := func(base string, r req) (string, error) {
		var reqBody io.Reader
		if b, ok := bodies[r.method]; ok {
			reqBody = strings.NewReader(b)
		}
		hr, err := http.NewRequest(r.method, base+r.path, reqBody)
		if err != nil {
			return "", err
		}
		hr.Host = r.host
		for i := 0; i+1 < len(r.hdr); i += 2 {
			hr.Header.Set(r.hdr[i], r.hdr[i+1])
		}
		res, err := e.client.Do(hr)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			return "", err
		}
		res.Header.Del("Date")
		// Multipart boundaries are random: name them the same.
		if _, params, err := mime.ParseMediaType(res.Header.Get("Content-Type")); err == nil && params["boundary"] != "" {
			b := params["boundary"]
			res.Header.Set("Content-Type", strings.ReplaceAll(res.Header.Get("Content-Type"), b, "BOUNDARY"))
			body = bytes.ReplaceAll(body, []byte(b), []byte("BOUNDARY"))
		}
		var sb strings.Builder
		fmt.Fprintf(&sb, "%d TE=%v CL=%d\n", res.StatusCode, res.TransferEncoding, res.ContentLength)
		_ = res.Header.Write(&sb)
		fmt.Fprintf(&sb, "\n%q", body)
		return sb.String(), nil
	}
	for _, r := range reqs {
		want, err := do(e.url, r)
		if err != nil {
			t.Fatalf("net/http %+v: %v", r, err)
		}
		got, err := do(fastURL, r)
		if err != nil {
			t.Fatalf("fasthttp %+v: %v", r, err)
		}
		if got != want {
			t.Errorf("%s %s%s %q:\nnet/http:\n%.600s\nfasthttp:\n%.600s", r.method, r.host, r.path, r.hdr, want, got)
		}
	}
	t.Logf("%d requests compared", len(reqs))
}

// TestAbortedStreams closes connections in the middle of large answers,
// including Range and If-Match ones (which the fasthttp front end streams
// from a goroutine through a pipe): nothing may be left running.
func TestAbortedStreams(t *testing.T) { eachFrontEnd(t, testAbortedStreams) }

func testAbortedStreams(t *testing.T, fe frontEnd) {
	e := newEnv(t, fe, nil, edge.Options{})
	big := strings.Repeat("0123456789abcdef", 16<<20/16)
	e.deploy(t, "acme", map[string]string{"index.html": "home", "big.bin": big})
	e.get(t, "acme.localhost", "/") // warm up: the tenant is loaded
	addr := strings.TrimPrefix(e.url, "http://")
	for _, extra := range []string{"", "Range: bytes=1-\r\n", "Range: bytes=0-1,3-\r\n", "If-Match: *\r\n"} {
		for range 5 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(c, "GET /big.bin HTTP/1.1\r\nHost: acme.localhost\r\n"+extra+"\r\n"); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(buf, []byte("HTTP/1.1 2")) {
				t.Fatalf("%q: %.80q", extra, buf)
			}
			c.Close()
		}
	}
	// What serves the answers (net/http's connections, fasthttp's workers)
	// may idle on; what streams them may not.
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		stacks := string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "serveContent") && !strings.Contains(stacks, "contentWriter") &&
			!strings.Contains(stacks, "edge.(*Server).fileHTTP") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("streams still running after their connections were closed:\n%s", stacks)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := e.get(t, "acme.localhost", "/big.bin", "Range", "bytes=3-6"); r.status != 206 || r.body != "3456" {
		t.Errorf("after aborts: %d %q", r.status, r.body)
	}
}

// panickyStore panics when a blob is opened while panic is set.
type panickyStore struct {
	blob.Store
	panic atomic.Bool
}

func (s *panickyStore) Open(ctx context.Context, key string) (blob.Object, error) {
	if s.panic.Load() && strings.HasPrefix(key, "blobs/") {
		panic("store bug")
	}
	return s.Store.Open(ctx, key)
}

// TestFastHTTPPanic: fasthttp does not recover a handler's panic, which
// would stop the whole process; the edge answers 500 and closes the
// connection instead, and keeps serving.
func TestFastHTTPPanic(t *testing.T) {
	st := &panickyStore{Store: newStore(t)}
	e := newEnv(t, frontEnds[1], st, edge.Options{MemoryCacheBytes: -1})
	e.deploy(t, "acme", map[string]string{"index.html": "home"})
	st.panic.Store(true)
	for _, hdr := range [][]string{nil, {"Range", "bytes=0-1"}} {
		if r := e.get(t, "acme.localhost", "/", hdr...); r.status != http.StatusInternalServerError {
			t.Errorf("GET %q with a panicking store: %d, want 500", hdr, r.status)
		}
	}
	st.panic.Store(false)
	if r := e.get(t, "acme.localhost", "/"); r.status != 200 || r.body != "home" {
		t.Errorf("after the panics: %d %q", r.status, r.body)
	}
}
