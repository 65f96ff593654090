package runners_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zipship/zipship/runners"
)

// writeTree creates files (slash paths relative to root) with small contents.
func writeTree(t *testing.T, root string, files ...string) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(root, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("content of "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDiscover(t *testing.T) {
	tests := []struct {
		name  string
		files []string
		dirs  []string // extra empty directories
		// want (all slash paths relative to the root, "/" = the root)
		dir     string
		pkg     string
		others  []string
		noProj  bool
		inDescr []string
	}{
		{name: "package.json at root", files: []string{"package.json", "src/index.js", "index.html"},
			dir: "/", pkg: "package.json", inDescr: []string{"package.json at package.json"}},
		{name: "nested one level", files: []string{"app/package.json", "app/src/main.ts"},
			dir: "app", pkg: "app/package.json"},
		{name: "nested two levels", files: []string{"a/b/package.json"},
			dir: "a/b", pkg: "a/b/package.json"},
		{name: "nested three levels", files: []string{"a/b/c/package.json", "a/readme.md"},
			dir: "a/b/c", pkg: "a/b/c/package.json"},
		{name: "nested four levels is too deep", files: []string{"a/b/c/d/package.json"},
			noProj: true},
		{name: "nested four levels with index.html at root is static", files: []string{"a/b/c/d/package.json", "index.html"},
			dir: "/", inDescr: []string{"static site at /"}},
		{name: "shallowest wins, others listed",
			files: []string{"x/y/package.json", "b/package.json", "a/package.json", "a/b/c/d/package.json"},
			dir:   "a", pkg: "a/package.json", others: []string{"b/package.json", "x/y/package.json"},
			inDescr: []string{"package.json at a/package.json", "shallowest of 3", "b/package.json", "x/y/package.json"}},
		{name: "root beats nested", files: []string{"packages/web/package.json", "package.json"},
			dir: "/", pkg: "package.json", others: []string{"packages/web/package.json"}},
		{name: "dot-folders and node_modules skipped",
			files: []string{".git/package.json", ".cache/x/package.json", "node_modules/react/package.json",
				"web/node_modules/next/package.json", "web/.next/package.json", "web/package.json"},
			dir: "web", pkg: "web/package.json"},
		{name: "only hidden package.json falls back to static",
			files: []string{".config/package.json", "node_modules/x/package.json", "index.html"},
			dir:   "/"},
		{name: "index.html at root", files: []string{"index.html", "css/site.css"},
			dir: "/", inDescr: []string{"static site at /"}},
		{name: "index.html in the only top folder", files: []string{"dist/index.html", "dist/app.js"},
			dir: "dist", inDescr: []string{"static site at dist"}},
		{name: "only top folder beside __MACOSX and .DS_Store",
			files: []string{"site/index.html", "__MACOSX/site/._index.html", ".DS_Store"},
			dir:   "site"},
		{name: "two top folders", files: []string{"a/index.html", "b/index.html"}, noProj: true},
		{name: "top folder and a root file", files: []string{"dist/index.html", "notes.txt"}, noProj: true},
		{name: "index.html two levels down", files: []string{"a/b/index.html"}, noProj: true},
		{name: "neither", files: []string{"readme.txt", "src/main.go"}, noProj: true},
		{name: "empty", noProj: true},
		{name: "empty top folder", dirs: []string{"dist"}, noProj: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tc.files...)
			for _, d := range tc.dirs {
				if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			p, err := runners.Discover(root)
			if tc.noProj {
				if !errors.Is(err, runners.ErrNoProject) {
					t.Fatalf("Discover = %+v, %v; want ErrNoProject", p, err)
				}
				for _, s := range []string{"package.json", "index.html", "3 folders"} {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Discover: %v", err)
			}
			if p.Root != root {
				t.Errorf("Root = %q, want %q", p.Root, root)
			}
			if got := p.Rel(p.Dir); got != tc.dir {
				t.Errorf("Dir = %q, want %q", got, tc.dir)
			}
			gotPkg := ""
			if p.PackageJSON != "" {
				gotPkg = p.Rel(p.PackageJSON)
				if filepath.Dir(p.PackageJSON) != p.Dir {
					t.Errorf("Dir %q does not hold PackageJSON %q", p.Dir, p.PackageJSON)
				}
			}
			if gotPkg != tc.pkg {
				t.Errorf("PackageJSON = %q, want %q", gotPkg, tc.pkg)
			}
			var others []string
			for _, o := range p.Others {
				others = append(others, p.Rel(o))
			}
			if !slices.Equal(others, tc.others) {
				t.Errorf("Others = %q, want %q", others, tc.others)
			}
			d := p.Describe()
			for _, s := range tc.inDescr {
				if !strings.Contains(d, s) {
					t.Errorf("Describe() = %q, want it to contain %q", d, s)
				}
			}
			if len(tc.others) == 0 && strings.Contains(d, "also") {
				t.Errorf("Describe() = %q mentions others though there are none", d)
			}
		})
	}
}

// A symlinked package.json is not a project file (the extractor refuses
// symlinks, but discovery must not follow one either).
func TestDiscoverIgnoresSymlinkedPackageJSON(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, "index.html", "real.json")
	if err := os.Symlink(filepath.Join(root, "real.json"), filepath.Join(root, "package.json")); err != nil {
		t.Skipf("symlinks unavailable: %v", err)
	}
	p, err := runners.Discover(root)
	if err != nil {
		t.Fatal(err)
	}
	if p.PackageJSON != "" || p.Dir != root {
		t.Fatalf("Discover = %+v, want the static site at the root", p)
	}
}
