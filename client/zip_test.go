package client

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeTree creates files (slash-separated path → content) under dir.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// readZip returns the entries of a ZIP as name → content, checking each
// entry's method and mode on the way.
func readZip(t *testing.T, b []byte) (names []string, content map[string]string) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("read zip: %v", err)
	}
	content = make(map[string]string)
	for _, f := range zr.File {
		if f.Method != zip.Deflate {
			t.Errorf("%s: method %d, want deflate", f.Name, f.Method)
		}
		if f.Mode() != 0o644 {
			t.Errorf("%s: mode %v, want 0644", f.Name, f.Mode())
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatalf("open %s: %v", f.Name, err)
		}
		data, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil {
			t.Fatalf("read %s: %v", f.Name, err)
		}
		names = append(names, f.Name)
		content[f.Name] = string(data)
	}
	return names, content
}

func TestZipDir(t *testing.T) {
	dir := t.TempDir()
	kept := map[string]string{
		"index.html":               "<h1>hi</h1>",
		".env.production":          "API=https://api.example.com",
		".npmrc":                   "save-exact=true",
		"package.json":             `{"name":"site"}`,
		"src/app.js":               "console.log(1)",
		"src/deep/nested/file.css": "body{}",
		"public/output/x.txt":      "not a skipped name",
		"distribution/y.txt":       "prefix of dist is not dist",
	}
	skipped := map[string]string{
		"node_modules/react/index.js":     "x",
		"src/node_modules/local/index.js": "x",
		".git/HEAD":                       "ref: refs/heads/main",
		".next/cache/x":                   "x",
		"out/index.html":                  "x",
		"dist/bundle.js":                  "x",
		"packages/ui/dist/ui.js":          "x",
		"packages/ui/.next/y":             "x",
		".DS_Store":                       "x",
		"src/.DS_Store":                   "x",
	}
	writeTree(t, dir, kept)
	writeTree(t, dir, skipped)
	if err := os.MkdirAll(filepath.Join(dir, "empty", "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Links inside skipped directories are never looked at.
	if err := os.Symlink("../react/index.js", filepath.Join(dir, "node_modules", "react", "link.js")); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	n, err := ZipDir(context.Background(), dir, &buf)
	if err != nil {
		t.Fatalf("ZipDir: %v", err)
	}
	if n != len(kept) {
		t.Errorf("files = %d, want %d", n, len(kept))
	}
	names, content := readZip(t, buf.Bytes())
	var want []string
	for name := range kept {
		want = append(want, name)
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("entries (in order) =\n  %q\nwant\n  %q", names, want)
	}
	for name, c := range kept {
		if content[name] != c {
			t.Errorf("%s: content %q, want %q", name, content[name], c)
		}
	}

	// Same tree, same bytes.
	var again bytes.Buffer
	if _, err := ZipDir(context.Background(), dir, &again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two archives of the same tree differ")
	}
}

func TestZipDirRootNamedLikeSkippedDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dist")
	writeTree(t, dir, map[string]string{"index.html": "x"})
	var buf bytes.Buffer
	n, err := ZipDir(context.Background(), dir, &buf)
	if err != nil || n != 1 {
		t.Fatalf("ZipDir(dist) = %d, %v; want 1 file", n, err)
	}
}

func TestZipDirSymlinkIsAnError(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"index.html": "x", "assets/real.css": "y"})
	if err := os.Symlink("real.css", filepath.Join(dir, "assets", "alias.css")); err != nil {
		t.Fatal(err)
	}
	_, err := ZipDir(context.Background(), dir, io.Discard)
	if err == nil {
		t.Fatal("ZipDir with a symlink: no error")
	}
	if !strings.Contains(err.Error(), filepath.Join("assets", "alias.css")) || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("error %q does not name the link", err)
	}
}

func TestZipDirRootMayBeASymlink(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	writeTree(t, real, map[string]string{"a.txt": "a"})
	link := filepath.Join(base, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if n, err := ZipDir(context.Background(), link, &buf); err != nil || n != 1 {
		t.Fatalf("ZipDir(link to dir) = %d, %v", n, err)
	}
}

func TestZipDirErrors(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"a.txt": "a"})

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ZipDir(ctx, dir, io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: err = %v, want context.Canceled", err)
	}
	if _, err := ZipDir(context.Background(), filepath.Join(dir, "a.txt"), io.Discard); err == nil {
		t.Error("ZipDir(file): no error")
	}
	if _, err := ZipDir(context.Background(), filepath.Join(dir, "missing"), io.Discard); err == nil {
		t.Error("ZipDir(missing): no error")
	}
}
