package archive

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FuzzValidate checks that Validate never panics and only fails with a
// *RuleError, and that whatever it accepts, Extract either extracts
// exactly the accepted files or fails with a *RuleError, writing nothing
// outside its destination and creating no symbolic links.
func FuzzValidate(f *testing.F) {
	f.Add(buildZip(f, webProject()...))
	f.Add(buildZip(f, file("a.txt", "hello"), dir("d/"), file("d/b.txt", "world")))
	f.Add(buildZip(f))
	f.Add(fifieldZip())
	f.Add(nestedOverlapZip())
	f.Add(buildZip(f, deflatedRaw(f, "liar.bin", make([]byte, 64<<10), 100)))
	f.Add(buildZip(f, withMode(file("link", "/etc/passwd"), fs.ModeSymlink|0o777)))
	f.Add(buildZip(f, file("a", "1"), file("a/b", "2")))
	f.Add(buildZip(f, stored("x", []byte("payload"), nil)))

	// Small caps keep each iteration's disk use low.
	lim := Limits{MaxEntries: 256, MaxTotalUncompressed: 4 << 20}
	f.Fuzz(func(t *testing.T, data []byte) {
		sum, err := Validate(bytes.NewReader(data), int64(len(data)), lim)
		if err != nil {
			if _, ok := errors.AsType[*RuleError](err); !ok {
				t.Fatalf("Validate error is not a *RuleError: %v (%T)", err, err)
			}
			return
		}
		if sum.Files == 0 || len(sum.Names) != sum.Files || !slices.IsSorted(sum.Names) {
			t.Fatalf("inconsistent summary %+v", sum)
		}

		base := t.TempDir()
		dest := filepath.Join(base, "dest")
		outside := filepath.Join(base, "outside")
		for _, d := range []string{dest, outside} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		got, err := Extract(context.Background(), bytes.NewReader(data), int64(len(data)), dest, lim)
		if err != nil {
			if _, ok := errors.AsType[*RuleError](err); !ok {
				t.Fatalf("Extract of an accepted archive failed without a *RuleError: %v", err)
			}
		}

		if entries, _ := os.ReadDir(base); len(entries) != 2 {
			t.Fatalf("entries next to dest: %v", entries)
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Fatalf("wrote outside dest: %v", entries)
		}
		var files []string
		var written int64
		walkErr := filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch {
			case d.Type()&fs.ModeSymlink != 0:
				t.Errorf("Extract created a symlink: %s", p)
			case d.Type().IsRegular():
				rel, _ := filepath.Rel(dest, p)
				files = append(files, filepath.ToSlash(rel))
				fi, err := d.Info()
				if err != nil {
					return err
				}
				written += fi.Size()
			}
			return nil
		})
		if walkErr != nil {
			t.Fatal(walkErr)
		}
		if written > lim.MaxTotalUncompressed {
			t.Fatalf("wrote %d bytes, cap %d", written, lim.MaxTotalUncompressed)
		}
		if err == nil {
			slices.Sort(files)
			if !slices.Equal(files, got.Names) {
				t.Fatalf("extracted %q, summary says %q", files, got.Names)
			}
			if written != got.TotalUncompressed {
				t.Fatalf("wrote %d bytes, summary says %d", written, got.TotalUncompressed)
			}
		}
	})
}
