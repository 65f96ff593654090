package client

import (
	"archive/zip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// ZipDir writes a ZIP archive of the directory dir to w and returns how
// many files it holds.
//
// Entries are deflated, named relative to dir with forward slashes, and
// written in lexical order so the same tree gives the same listing.
// Directories are implied by the file names (empty directories are left
// out) and every file gets mode 0644.
//
// Directories named node_modules, .git, .next, out or dist are skipped at
// any depth: they hold dependencies or build output that the server
// installs and builds itself, and only make the upload bigger. Finder's
// .DS_Store files are skipped too. Other dotfiles, such as .env.production
// or .npmrc, are included: builds need them.
//
// A symbolic link (outside the skipped directories) or any other file that
// is not a regular file is an error naming it: the server rejects archives
// with links, so failing here gives the clearer message. dir itself may be
// a symbolic link to a directory.
func ZipDir(ctx context.Context, dir string, w io.Writer) (files int, err error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return 0, fmt.Errorf("zip %s: %w", dir, err)
	}
	info, err := os.Stat(root)
	if err != nil {
		return 0, fmt.Errorf("zip %s: %w", dir, err)
	}
	if !info.IsDir() {
		return 0, fmt.Errorf("zip %s: not a directory", dir)
	}

	zw := zip.NewWriter(w)
	walkErr := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if path == root {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if isSkippedDir(d.Name()) {
				return filepath.SkipDir
			}
			return nil
		case d.Name() == ".DS_Store":
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s is a symbolic link: the server rejects links in uploads, replace it with a copy of its target", filepath.Join(dir, rel))
		case !d.Type().IsRegular():
			return fmt.Errorf("%s is not a regular file (%s)", filepath.Join(dir, rel), d.Type())
		}
		if err := addFile(zw, path, filepath.ToSlash(rel)); err != nil {
			return err
		}
		files++
		return nil
	})
	if walkErr != nil {
		return files, fmt.Errorf("zip %s: %w", dir, walkErr)
	}
	if err := zw.Close(); err != nil {
		return files, fmt.Errorf("zip %s: %w", dir, err)
	}
	return files, nil
}

// isSkippedDir reports whether ZipDir leaves out directories named name.
func isSkippedDir(name string) bool {
	switch name {
	case "node_modules", ".git", ".next", "out", "dist":
		return true
	}
	return false
}

// addFile copies the regular file at path into zw as name.
func addFile(zw *zip.Writer, path, name string) (err error) {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() { // replaced between the walk and the open
		return fmt.Errorf("%s is not a regular file", path)
	}
	hdr := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: info.ModTime()}
	hdr.SetMode(0o644)
	fw, err := zw.CreateHeader(hdr)
	if err != nil {
		return fmt.Errorf("add %s: %w", name, err)
	}
	if _, err := io.Copy(fw, f); err != nil {
		return fmt.Errorf("add %s: %w", name, err)
	}
	return nil
}
