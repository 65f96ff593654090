package runners

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// MaxProjectDepth is how deep below the ZIP's root a package.json is looked
// for (the reference system's rule).
const MaxProjectDepth = 3

// ErrNoProject is the discover failure for a ZIP that holds neither a
// package.json nor a static site.
var ErrNoProject = errors.New("no project found")

// Project is what discovery found in an extracted ZIP.
type Project struct {
	// Root is the extraction directory.
	Root string
	// Dir is the project directory (holding PackageJSON) or the static
	// site's root (holding index.html).
	Dir string
	// PackageJSON is the chosen package.json, "" for a static site.
	PackageJSON string
	// Others are further package.json files that lost to the shallowest.
	Others []string
}

// Rel returns path relative to the extraction root, for messages.
func (p *Project) Rel(path string) string {
	rel, err := filepath.Rel(p.Root, path)
	if err != nil || rel == "." {
		return "/"
	}
	return filepath.ToSlash(rel)
}

// Describe says what was found, for the discover step's detail.
func (p *Project) Describe() string {
	if p.PackageJSON == "" {
		return "static site at " + p.Rel(p.Dir)
	}
	s := "package.json at " + p.Rel(p.PackageJSON)
	if len(p.Others) > 0 {
		rels := make([]string, len(p.Others))
		for i, o := range p.Others {
			rels[i] = p.Rel(o)
		}
		s += fmt.Sprintf(" (shallowest of %d; also %s)", len(p.Others)+1, strings.Join(rels, ", "))
	}
	return s
}

// Discover finds the Project in an extracted ZIP: a package.json at the
// root or up to MaxProjectDepth levels down (skipping dot-folders and
// node_modules; the shallowest wins, ties broken by path), else a static
// site with index.html at the root or inside the only top-level folder.
func Discover(root string) (*Project, error) {
	var found []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		depth := 0
		if rel != "." {
			depth = strings.Count(filepath.ToSlash(rel), "/") + 1
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "node_modules") {
				return filepath.SkipDir
			}
			if depth > MaxProjectDepth {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Name() == "package.json" && d.Type().IsRegular() {
			found = append(found, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("discover: %w", err)
	}
	if len(found) > 0 {
		sort.Slice(found, func(i, j int) bool {
			di, dj := strings.Count(found[i], string(filepath.Separator)), strings.Count(found[j], string(filepath.Separator))
			if di != dj {
				return di < dj
			}
			return found[i] < found[j]
		})
		return &Project{Root: root, Dir: filepath.Dir(found[0]), PackageJSON: found[0], Others: found[1:]}, nil
	}
	if isFile(filepath.Join(root, "index.html")) {
		return &Project{Root: root, Dir: root}, nil
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("discover: %w", err)
	}
	var dirs []string
	for _, e := range entries {
		if e.Name() == "__MACOSX" || e.Name() == ".DS_Store" {
			continue
		}
		if !e.IsDir() {
			dirs = nil
			break
		}
		dirs = append(dirs, e.Name())
	}
	if len(dirs) == 1 && isFile(filepath.Join(root, dirs[0], "index.html")) {
		return &Project{Root: root, Dir: filepath.Join(root, dirs[0])}, nil
	}
	return nil, fmt.Errorf("%w: the ZIP has no package.json (at the root or up to %d folders down) and no index.html at its root or in its only top folder", ErrNoProject, MaxProjectDepth)
}

func isFile(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode().IsRegular()
}
