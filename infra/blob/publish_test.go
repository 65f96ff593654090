package blob_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/infra/blob/fs"
)

// recordingStore remembers the keys Put to it.
type recordingStore struct {
	blob.Store
	mu   sync.Mutex
	puts []string
}

func (r *recordingStore) Put(ctx context.Context, key string, rd io.Reader) (int64, error) {
	r.mu.Lock()
	r.puts = append(r.puts, key)
	r.mu.Unlock()
	return r.Store.Put(ctx, key, rd)
}

// takePuts returns the keys Put since the last call, sorted.
func (r *recordingStore) takePuts() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.puts
	r.puts = nil
	slices.Sort(out)
	return out
}

func newRecordingStore(t *testing.T) *recordingStore {
	t.Helper()
	s, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &recordingStore{Store: s}
}

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

var site = map[string]string{
	"index.html":                  "<!doctype html><title>home</title>",
	"about/index.html":            "<!doctype html><title>about</title>",
	"_next/static/chunks/app.js":  "console.log('app')",
	"_next/static/css/app.css":    "body{margin:0}",
	"img/logo.svg":                "<svg xmlns='http://www.w3.org/2000/svg'/>",
	"favicon.ico":                 "\x00\x00\x01\x00",
	"index.txt":                   "rsc payload",
	"copy/index.html":             "<!doctype html><title>home</title>", // same content as index.html
	"empty.json":                  "",
	"deep/er/still/data.bin":      "\x00\x01\x02\x03",
	"README":                      "plain text",
	"about/page.rsc":              "0:[]",
	"_next/static/chunks/app.map": "{}",
}

func TestPublish(t *testing.T) {
	ctx := context.Background()
	s := newRecordingStore(t)
	dir := t.TempDir()
	writeTree(t, dir, site)

	before := time.Now().UTC().Add(-time.Second)
	m, stats, err := blob.Publish(ctx, s, "acme", "b1", dir)
	if err != nil {
		t.Fatal(err)
	}

	wantTypes := map[string]string{
		"index.html":                  "text/html; charset=utf-8",
		"about/index.html":            "text/html; charset=utf-8",
		"copy/index.html":             "text/html; charset=utf-8",
		"_next/static/chunks/app.js":  "text/javascript; charset=utf-8",
		"_next/static/css/app.css":    "text/css; charset=utf-8",
		"img/logo.svg":                "image/svg+xml",
		"favicon.ico":                 "image/x-icon",
		"index.txt":                   "text/plain; charset=utf-8",
		"empty.json":                  "application/json",
		"deep/er/still/data.bin":      "application/octet-stream",
		"README":                      "text/plain; charset=utf-8",
		"about/page.rsc":              "text/x-component",
		"_next/static/chunks/app.map": "application/json",
	}
	if len(m.Files) != len(site) {
		t.Errorf("manifest has %d files, want %d", len(m.Files), len(site))
	}
	var total int64
	for name, content := range site {
		f, ok := m.Files[name]
		if !ok {
			t.Errorf("manifest lacks %q", name)
			continue
		}
		want := blob.ManifestFile{Digest: digest(content), Size: int64(len(content)), ContentType: wantTypes[name]}
		if f != want {
			t.Errorf("manifest[%q] = %+v, want %+v", name, f, want)
		}
		total += int64(len(content))
	}
	if m.Tenant != "acme" || m.BuildID != "b1" || m.TotalSize != total {
		t.Errorf("manifest header = %q %q %d, want acme b1 %d", m.Tenant, m.BuildID, m.TotalSize, total)
	}
	if m.CreatedAt.Before(before) || m.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("CreatedAt = %v", m.CreatedAt)
	}

	// 13 files, 12 distinct contents (copy/index.html == index.html).
	want := blob.PublishStats{Files: 13, Bytes: total, Uploaded: 12, UploadedBytes: total - int64(len(site["index.html"])), Reused: 1}
	if stats != want {
		t.Errorf("stats = %+v, want %+v", stats, want)
	}

	// Every distinct content was stored once at its digest, then the
	// manifest.
	var wantPuts []string
	seen := map[string]bool{}
	for _, content := range site {
		if d := digest(content); !seen[d] {
			seen[d] = true
			wantPuts = append(wantPuts, blob.BlobKey(d))
		}
	}
	wantPuts = append(wantPuts, blob.ManifestKey("acme", "b1"))
	slices.Sort(wantPuts)
	if got := s.takePuts(); !slices.Equal(got, wantPuts) {
		t.Errorf("puts = %q\nwant %q", got, wantPuts)
	}
	for name, content := range site {
		obj, err := s.Open(ctx, blob.BlobKey(digest(content)))
		if err != nil {
			t.Fatalf("blob of %s: %v", name, err)
		}
		b, _ := io.ReadAll(obj)
		obj.Close()
		if string(b) != content {
			t.Errorf("blob of %s = %q, want %q", name, b, content)
		}
	}

	// The stored manifest is the returned one.
	loaded, err := blob.LoadManifest(ctx, s, blob.ManifestKey("acme", "b1"))
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.CreatedAt.Equal(m.CreatedAt) || loaded.TotalSize != m.TotalSize || len(loaded.Files) != len(m.Files) {
		t.Errorf("loaded manifest %+v differs from %+v", loaded, m)
	}
	for name, f := range m.Files {
		if loaded.Files[name] != f {
			t.Errorf("loaded[%q] = %+v, want %+v", name, loaded.Files[name], f)
		}
	}

	// Same dir, another build: only the manifest is written.
	m2, stats2, err := blob.Publish(ctx, s, "acme", "b2", dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := (blob.PublishStats{Files: 13, Bytes: total, Reused: 13}); stats2 != want {
		t.Errorf("second publish stats = %+v, want %+v", stats2, want)
	}
	if got := s.takePuts(); !slices.Equal(got, []string{blob.ManifestKey("acme", "b2")}) {
		t.Errorf("second publish puts = %q, want only its manifest", got)
	}
	for name, f := range m.Files {
		if m2.Files[name] != f {
			t.Errorf("b2[%q] = %+v, want %+v", name, m2.Files[name], f)
		}
	}

	// One changed file: only its blob is uploaded.
	changed := "console.log('app v2')"
	writeTree(t, dir, map[string]string{"_next/static/chunks/app.js": changed})
	m3, stats3, err := blob.Publish(ctx, s, "acme", "b3", dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := (blob.PublishStats{Files: 13, Bytes: total - int64(len(site["_next/static/chunks/app.js"])) + int64(len(changed)), Uploaded: 1, UploadedBytes: int64(len(changed)), Reused: 12}); stats3 != want {
		t.Errorf("third publish stats = %+v, want %+v", stats3, want)
	}
	wantPuts = []string{blob.BlobKey(digest(changed)), blob.ManifestKey("acme", "b3")}
	slices.Sort(wantPuts)
	if got := s.takePuts(); !slices.Equal(got, wantPuts) {
		t.Errorf("third publish puts = %q, want %q", got, wantPuts)
	}
	if got := m3.Files["_next/static/chunks/app.js"].Digest; got != digest(changed) {
		t.Errorf("b3 app.js digest = %s, want %s", got, digest(changed))
	}
}

func TestPublishReplacesDamagedBlob(t *testing.T) {
	ctx := context.Background()
	s := newRecordingStore(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"index.html": "hello"})
	// A truncated blob sits where "hello" belongs.
	if _, err := s.Store.Put(ctx, blob.BlobKey(digest("hello")), strings.NewReader("hel")); err != nil {
		t.Fatal(err)
	}
	_, stats, err := blob.Publish(ctx, s, "acme", "b1", dir)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Uploaded != 1 {
		t.Errorf("Uploaded = %d, want the damaged blob rewritten", stats.Uploaded)
	}
	info, err := s.Stat(ctx, blob.BlobKey(digest("hello")))
	if err != nil || info.Size != 5 {
		t.Errorf("blob after publish = %+v, %v", info, err)
	}
}

func TestPublishRefusesSymlink(t *testing.T) {
	ctx := context.Background()
	s := newRecordingStore(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"index.html": "hi", "assets/app.js": "x"})
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "assets", "passwd.txt")); err != nil {
		t.Fatal(err)
	}
	_, _, err := blob.Publish(ctx, s, "acme", "b1", dir)
	if err == nil {
		t.Fatal("Publish with a symlink succeeded")
	}
	if !strings.Contains(err.Error(), filepath.Join("assets", "passwd.txt")) {
		t.Errorf("error %q does not name the symlink", err)
	}
	if _, err := s.Stat(ctx, blob.ManifestKey("acme", "b1")); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("manifest after failed publish: %v, want ErrNotFound", err)
	}
	if got := s.takePuts(); len(got) != 0 {
		t.Errorf("failed publish wrote %q", got)
	}

	// A symlinked directory is refused too.
	dir2 := t.TempDir()
	writeTree(t, dir2, map[string]string{"index.html": "hi"})
	if err := os.Symlink(dir, filepath.Join(dir2, "linked")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := blob.Publish(ctx, s, "acme", "b2", dir2); err == nil || !strings.Contains(err.Error(), "linked") {
		t.Errorf("Publish with a symlinked dir = %v, want an error naming it", err)
	}
	if _, err := s.Stat(ctx, blob.ManifestKey("acme", "b2")); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("manifest after failed publish: %v, want ErrNotFound", err)
	}
}

func TestPublishRejects(t *testing.T) {
	ctx := context.Background()
	s := newRecordingStore(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"index.html": "hi"})

	if _, _, err := blob.Publish(ctx, s, "acme", "b1", t.TempDir()); err == nil {
		t.Error("Publish of an empty dir succeeded")
	}
	if _, _, err := blob.Publish(ctx, s, "acme", "b1", filepath.Join(dir, "missing")); err == nil {
		t.Error("Publish of a missing dir succeeded")
	}
	for _, tc := range []struct{ tenant, build string }{
		{"", "b1"}, {"acme", ""}, {"ac/me", "b1"}, {"acme", "../b1"}, {"..", "b1"}, {"acme", "b/1"},
	} {
		if _, _, err := blob.Publish(ctx, s, tc.tenant, tc.build, dir); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Publish(%q, %q) = %v, want ErrInvalidKey", tc.tenant, tc.build, err)
		}
	}
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := blob.Publish(ctx2, s, "acme", "b1", dir); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish with cancelled ctx = %v", err)
	}
	if got := s.takePuts(); len(got) != 0 {
		t.Errorf("rejected publishes wrote %q", got)
	}
}

// changingStore rewrites a site file just before its blob is stored, as
// if the build output changed under Publish.
type changingStore struct {
	blob.Store
	file string
	once sync.Once
}

func (c *changingStore) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	c.once.Do(func() { os.WriteFile(c.file, []byte("tampered!"), 0o644) })
	return c.Store.Put(ctx, key, r)
}

func TestPublishDetectsChangeDuringUpload(t *testing.T) {
	ctx := context.Background()
	base := newRecordingStore(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"index.html": "original"})
	s := &changingStore{Store: base.Store, file: filepath.Join(dir, "index.html")}
	if _, _, err := blob.Publish(ctx, s, "acme", "b1", dir); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("Publish with a file changing = %v, want a 'changed' error", err)
	}
	if _, err := base.Stat(ctx, blob.BlobKey(digest("original"))); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("blob under the old digest: %v, want ErrNotFound (wrong content stored)", err)
	}
	if _, err := base.Stat(ctx, blob.ManifestKey("acme", "b1")); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("manifest: %v, want ErrNotFound", err)
	}
}

func TestPointer(t *testing.T) {
	ctx := context.Background()
	s := newRecordingStore(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"index.html": "hi"})
	if _, _, err := blob.Publish(ctx, s, "acme", "b1", dir); err != nil {
		t.Fatal(err)
	}

	if _, err := blob.ReadPointer(ctx, s, "acme"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("ReadPointer before any write = %v, want ErrNotFound", err)
	}
	if _, err := blob.ReadPointer(ctx, s, "nobody"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("ReadPointer(unknown tenant) = %v, want ErrNotFound", err)
	}

	p := blob.Pointer{
		Tenant:      "acme",
		BuildID:     "b1",
		Version:     "v1700000000000",
		ManifestKey: blob.ManifestKey("acme", "b1"),
		ActivatedAt: time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC),
	}
	s.takePuts()
	if err := blob.WritePointer(ctx, s, p); err != nil {
		t.Fatal(err)
	}
	if got := s.takePuts(); !slices.Equal(got, []string{"pointers/acme/current.json"}) {
		t.Errorf("WritePointer puts = %q", got)
	}
	got, err := blob.ReadPointer(ctx, s, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if *got != p {
		t.Errorf("ReadPointer = %+v, want %+v", *got, p)
	}

	// Moving the pointer replaces it.
	if _, _, err := blob.Publish(ctx, s, "acme", "b2", dir); err != nil {
		t.Fatal(err)
	}
	p2 := p
	p2.BuildID, p2.Version, p2.ManifestKey = "b2", "v1700000000001", blob.ManifestKey("acme", "b2")
	if err := blob.WritePointer(ctx, s, p2); err != nil {
		t.Fatal(err)
	}
	if got, err := blob.ReadPointer(ctx, s, "acme"); err != nil || *got != p2 {
		t.Errorf("ReadPointer after move = %+v, %v, want %+v", got, err, p2)
	}

	// A pointer to a manifest that does not exist is refused.
	bad := p
	bad.BuildID, bad.ManifestKey = "b9", blob.ManifestKey("acme", "b9")
	if err := blob.WritePointer(ctx, s, bad); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("WritePointer to a missing manifest = %v, want ErrNotFound", err)
	}
	if err := blob.WritePointer(ctx, s, blob.Pointer{Tenant: "../x", BuildID: "b1", ManifestKey: p.ManifestKey}); !errors.Is(err, blob.ErrInvalidKey) {
		t.Errorf("WritePointer with a bad tenant = %v, want ErrInvalidKey", err)
	}
	if got, err := blob.ReadPointer(ctx, s, "acme"); err != nil || *got != p2 {
		t.Errorf("pointer after refused writes = %+v, %v, want %+v", got, err, p2)
	}
	if _, err := blob.LoadManifest(ctx, s, blob.ManifestKey("acme", "b9")); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("LoadManifest(missing) = %v, want ErrNotFound", err)
	}

	// A corrupt pointer is an error, not a zero pointer.
	if _, err := s.Put(ctx, blob.PointerKey("broken"), bytes.NewBufferString("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := blob.ReadPointer(ctx, s, "broken"); err == nil || errors.Is(err, blob.ErrNotFound) {
		t.Errorf("ReadPointer(corrupt) = %v, want a decode error", err)
	}
}
