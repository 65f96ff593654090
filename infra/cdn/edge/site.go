package edge

import (
	"mime"
	"path"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/zipship/zipship/infra/blob"
)

// site is one decoded, immutable site version: the manifest turned into
// lookup tables so that resolving a request is one or two map lookups
// without allocation. It is shared by all requests and never modified
// after newSite, except for the memory-cache links of its files.
type site struct {
	tenant      string
	buildID     string
	manifestKey string
	// routes maps a request key (see requestKey) to the file it serves:
	// exact paths, "dir/" and "dir" to dir/index.html, "about" to
	// about.html.
	routes map[string]*file
	// notFound maps a directory ("" for the root, "docs/") to its
	// 404.html.
	notFound map[string]*file
	// index is the root index.html, the single-page-app fallback.
	index  *file
	hBuild hval // X-Zipship-Build value
}

// file is one file of a site version, with its response headers
// precomputed.
type file struct {
	path    string
	digest  string
	blobKey string
	size    int64
	hType   hval
	hETag   hval
	hCache  *hval // shared: revalidate or immutable
	hLength hval
	// mem links to the memory-cache entry of the content once loaded, so
	// that cache hits need no lookup by digest.
	mem atomic.Pointer[content]
}

// newSite decodes m, the manifest stored at manifestKey. Files with an
// invalid digest cannot be served and are left out; their paths are
// returned so the caller can log them.
func newSite(m *blob.Manifest, manifestKey string, hdr *headers) (*site, []string) {
	st := &site{
		tenant:      m.Tenant,
		buildID:     m.BuildID,
		manifestKey: manifestKey,
		routes:      make(map[string]*file, len(m.Files)*3/2),
		notFound:    make(map[string]*file),
		hBuild:      newHval(m.BuildID),
	}
	types := make(map[string]hval) // share header values between files
	files := make(map[string]*file, len(m.Files))
	var bad []string
	for p, mf := range m.Files {
		if !validDigest(mf.Digest) || mf.Size < 0 || p == "" || p[0] == '/' || strings.HasSuffix(p, "/") {
			bad = append(bad, p)
			continue
		}
		ct := mf.ContentType
		if ct == "" {
			ct = mime.TypeByExtension(path.Ext(p))
			if ct == "" {
				ct = "application/octet-stream"
			}
		}
		hType, ok := types[ct]
		if !ok {
			hType = newHval(ct)
			types[ct] = hType
		}
		f := &file{
			path:    p,
			digest:  mf.Digest,
			blobKey: blob.BlobKey(mf.Digest),
			size:    mf.Size,
			hType:   hType,
			hETag:   newHval(`"` + mf.Digest + `"`),
			hLength: newHval(strconv.FormatInt(mf.Size, 10)),
			hCache:  &hdr.revalidate,
		}
		if immutable(p, ct) {
			f.hCache = &hdr.immutable
		}
		files[p] = f
	}

	// Fill routes from the weakest rule to the strongest, so that a
	// stronger one overwrites: dir → dir/index.html, then about →
	// about.html, then exact paths.
	for p, f := range files {
		if dir, ok := strings.CutSuffix(p, "index.html"); ok && (dir == "" || dir[len(dir)-1] == '/') {
			st.routes[dir] = f // "" (the root) or "docs/"
			if dir != "" {
				st.routes[dir[:len(dir)-1]] = f // "docs"
			}
		}
		if dir, ok := strings.CutSuffix(p, "404.html"); ok && (dir == "" || dir[len(dir)-1] == '/') {
			st.notFound[dir] = f
		}
	}
	for p, f := range files {
		if stem, ok := strings.CutSuffix(p, ".html"); ok && stem != "" && stem[len(stem)-1] != '/' {
			st.routes[stem] = f
		}
	}
	for p, f := range files {
		st.routes[p] = f
	}
	st.index = files["index.html"]
	return st, bad
}

// validDigest reports whether d is a lowercase hex sha256.
func validDigest(d string) bool {
	if len(d) != 64 {
		return false
	}
	for i := 0; i < len(d); i++ {
		if !isHex(d[i]) {
			return false
		}
	}
	return true
}

// requestKey turns a URL path (starting with '/') into a routes key: the
// cleaned path without its leading slash, keeping a trailing slash ("/" →
// "", "/docs/" → "docs/", "/a/../b" → "b"). It does not allocate for
// already clean paths.
func requestKey(p string) string {
	c := path.Clean(p)
	if c == "/" {
		return ""
	}
	if p[len(p)-1] == '/' {
		if len(p) == len(c)+1 && p[:len(c)] == c {
			return p[1:]
		}
		return c[1:] + "/"
	}
	return c[1:]
}

// notFoundPage returns the 404.html nearest to the directory of key,
// walking up to the root, or nil.
func (st *site) notFoundPage(key string) *file {
	if len(st.notFound) == 0 {
		return nil
	}
	dir := key[:strings.LastIndexByte(key, '/')+1] // "" when no slash
	for {
		if f := st.notFound[dir]; f != nil {
			return f
		}
		if dir == "" {
			return nil
		}
		dir = dir[:strings.LastIndexByte(dir[:len(dir)-1], '/')+1]
	}
}

// looksLikePage reports whether key names a page rather than an asset:
// its last segment has no file extension.
func looksLikePage(key string) bool {
	last := key[strings.LastIndexByte(key, '/')+1:]
	return strings.IndexByte(last, '.') < 0
}

// immutable reports whether the file at p with content type ct has a
// content hash in its name, so that it may be cached for a year: any non-HTML
// file under _next/static/ (Next.js), and files under assets/ (Vite) whose
// name has a hash-like segment.
func immutable(p, ct string) bool {
	if isHTML(ct) {
		return false
	}
	if strings.HasPrefix(p, "_next/static/") || strings.Contains(p, "/_next/static/") {
		return true
	}
	if strings.HasPrefix(p, "assets/") || strings.Contains(p, "/assets/") {
		return hasHashSegment(p[strings.LastIndexByte(p, '/')+1:])
	}
	return false
}

func isHTML(ct string) bool {
	return len(ct) >= 9 && strings.EqualFold(ct[:9], "text/html")
}

// hasHashSegment reports whether the file name has, right after a '-' or
// '.', a run of at least 8 characters of [A-Za-z0-9_-] that ends at a '.'
// or the end of the name and contains a digit: "app-3f9a1c2b.js",
// "index.B9x_kQ2a.css". The digit rule keeps hand-named files such as
// "site-background.jpg" from being cached for a year; a real hash without
// any digit (rare) merely gets revalidated.
func hasHashSegment(name string) bool {
	for i := 0; i < len(name); i++ {
		if name[i] != '-' && name[i] != '.' {
			continue
		}
		j, digit, upper, lower := i+1, false, false, false
		for ; j < len(name) && isHashChar(name[j]); j++ {
			switch c := name[j]; {
			case c >= '0' && c <= '9':
				digit = true
			case c >= 'A' && c <= 'Z':
				upper = true
			case c >= 'a' && c <= 'z':
				lower = true
			}
		}
		// A hash has a digit, or is exactly Vite's 8 base64url characters
		// in mixed case (index-DsKaihGT.js); a word like "background"
		// (one case, or another length) is not one.
		n := j - (i + 1)
		if (n >= 8 && digit || n == 8 && upper && lower) && (j == len(name) || name[j] == '.') {
			return true
		}
	}
	return false
}

func isHashChar(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'
}
