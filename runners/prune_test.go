package runners

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func TestPruneSite(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{
		"index.html", ".well-known/security.txt", ".nojekyll", "assets/app.js",
		".git/HEAD", ".git/objects/ab/cdef", "sub/.svn/entries", "__MACOSX/._index.html",
		".env", ".env.production", "sub/.env.local", ".DS_Store", "img/Thumbs.db", "envelope.html",
	} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n, err := pruneSite(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			left = append(left, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(left)
	want := []string{".nojekyll", ".well-known/security.txt", "assets/app.js", "envelope.html", "index.html"}
	if strings.Join(left, ",") != strings.Join(want, ",") {
		t.Fatalf("left %v, want %v", left, want)
	}
	if n != 9 {
		t.Fatalf("removed %d files, want 9", n)
	}
}
