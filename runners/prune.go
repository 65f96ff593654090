package runners

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// neverPublishedDirs are folders that are never part of a website: version
// control metadata and archiver droppings. Publishing .git would hand the
// whole history, maybe with secrets, to anyone.
var neverPublishedDirs = map[string]bool{".git": true, ".svn": true, ".hg": true, "__MACOSX": true}

// neverPublishedFile reports whether a file is never served: environment
// files (secrets by convention) and desktop metadata.
func neverPublishedFile(name string) bool {
	return name == ".env" || strings.HasPrefix(name, ".env.") || name == ".DS_Store" || name == "Thumbs.db"
}

// pruneSite removes from a static site's directory what must never be
// published, and returns how many files it removed. .well-known and other
// dot-files stay: they can be legitimate web content.
func pruneSite(dir string) (int, error) {
	removed := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == dir {
			return nil
		}
		if d.IsDir() && neverPublishedDirs[d.Name()] {
			n := 0
			filepath.WalkDir(path, func(_ string, e fs.DirEntry, _ error) error {
				if e != nil && !e.IsDir() {
					n++
				}
				return nil
			})
			if err := os.RemoveAll(path); err != nil {
				return err
			}
			removed += n
			return filepath.SkipDir
		}
		if !d.IsDir() && neverPublishedFile(d.Name()) {
			if err := os.Remove(path); err != nil {
				return err
			}
			removed++
		}
		return nil
	})
	if err != nil {
		return removed, fmt.Errorf("prune site: %w", err)
	}
	return removed, nil
}
