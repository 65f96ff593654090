// Package fs implements blob.Store on the local filesystem, the default for
// the single-machine `zipship serve`. Objects are plain files under a root
// directory, written atomically (temp file, fsync, rename), and every access
// goes through an os.Root so that no key, and no symlink planted inside the
// root, can reach a file outside it.
package fs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/zipship/zipship/infra/blob"
)

const (
	// tmpDir holds objects being written. It sits inside the root so that
	// the final rename stays on one filesystem and is atomic. Keys under it
	// are rejected.
	tmpDir = ".tmp"

	// staleTempAge is how long a temp file must have gone unmodified before
	// New removes it as the leftover of a crashed process. A live Put
	// writes continuously, so it never looks this old.
	staleTempAge = time.Hour

	// copyBufferSize is the chunk size of Put; ctx is checked between
	// chunks.
	copyBufferSize = 256 << 10
)

// Store is a blob.Store on a local directory. It is safe for concurrent use,
// also by several processes sharing the directory.
type Store struct {
	dir  string
	root *os.Root
}

var _ blob.Store = (*Store)(nil)

// New opens (creating it with mode 0o755 if needed) the directory dir as a
// Store, and removes temp files that crashed writers left behind.
func New(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create blob root %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open blob root %s: %w", dir, err)
	}
	if err := root.MkdirAll(tmpDir, 0o755); err != nil {
		root.Close()
		return nil, fmt.Errorf("create %s in blob root %s: %w", tmpDir, dir, err)
	}
	s := &Store{dir: dir, root: root}
	s.removeStaleTemps(time.Now().Add(-staleTempAge))
	return s, nil
}

// Dir returns the directory the Store was opened on.
func (s *Store) Dir() string { return s.dir }

// Close releases the root directory handle. The Store is unusable after.
func (s *Store) Close() error {
	return s.root.Close()
}

// Put writes r to a temp file in the root's .tmp directory, fsyncs it and
// renames it onto key (creating parent directories), then fsyncs the parent
// directory. Readers therefore see either the previous object or the whole
// new one. On any error, including ctx being cancelled while copying, the
// temp file is removed and the previous object, if any, is left untouched.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) (n int64, err error) {
	if err := checkKey(key); err != nil {
		return 0, fmt.Errorf("put: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("put %s: %w", key, err)
	}

	f, tmp, err := s.createTemp()
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", key, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = f.Close() // may already be closed
			_ = s.root.Remove(tmp)
		}
	}()

	n, err = io.CopyBuffer(writerOnly{f}, ctxReader{ctx: ctx, r: r}, make([]byte, copyBufferSize))
	if err != nil {
		return 0, fmt.Errorf("put %s: write: %w", key, err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("put %s: sync: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("put %s: close: %w", key, err)
	}
	// The reader may have returned EOF just as ctx was cancelled: a
	// cancelled Put never commits.
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("put %s: %w", key, err)
	}

	dir := path.Dir(key)
	if dir != "." {
		if err := s.root.MkdirAll(dir, 0o755); err != nil {
			return 0, fmt.Errorf("put %s: create parent: %w", key, err)
		}
	}
	if err := s.root.Rename(tmp, key); err != nil {
		return 0, fmt.Errorf("put %s: rename: %w", key, err)
	}
	committed = true

	// Make the rename itself durable.
	if err := s.syncDir(dir); err != nil {
		return n, fmt.Errorf("put %s: sync parent: %w", key, err)
	}
	return n, nil
}

// Open opens key for reading. The Object wraps the *os.File itself, so
// net/http can sendfile it and answer Range requests with Seek/ReadAt.
func (s *Store) Open(ctx context.Context, key string) (blob.Object, error) {
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	f, err := s.root.Open(key)
	if err != nil {
		return nil, mapErr("open", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: stat: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", key, blob.ErrNotFound)
	}
	return &object{File: f, info: infoOf(key, fi)}, nil
}

// Stat describes key. Directories and other non-regular files are not
// objects: they are reported as blob.ErrNotFound.
func (s *Store) Stat(ctx context.Context, key string) (blob.Info, error) {
	if err := checkKey(key); err != nil {
		return blob.Info{}, fmt.Errorf("stat: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return blob.Info{}, fmt.Errorf("stat %s: %w", key, err)
	}
	fi, err := s.root.Stat(key)
	if err != nil {
		return blob.Info{}, mapErr("stat", key, err)
	}
	if !fi.Mode().IsRegular() {
		return blob.Info{}, fmt.Errorf("stat %s: %w", key, blob.ErrNotFound)
	}
	return infoOf(key, fi), nil
}

// Delete removes key. An absent key, or one naming a directory (which holds
// no object), is not an error. Empty parent directories are left in place:
// removing them would race with a concurrent Put creating them.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	fi, err := s.root.Lstat(key)
	if err != nil {
		if isNotExist(err) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", key, err)
	}
	if fi.IsDir() {
		return nil
	}
	if err := s.root.Remove(key); err != nil && !isNotExist(err) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// List returns the objects whose keys start with prefix (a plain string
// prefix, as on S3: "tenants/ac" matches "tenants/acme/..."), sorted by key.
// It walks only the directory the prefix names, skips the .tmp directory,
// does not follow symlinks and ignores anything that is not a regular file
// with a valid key.
func (s *Store) List(ctx context.Context, prefix string) ([]blob.Info, error) {
	if err := blob.ValidatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	start := "."
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = prefix[:i]
	}

	var out []blob.Info
	err := iofs.WalkDir(s.root.FS(), start, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			if isNotExist(err) {
				// The prefix names nothing, or a directory vanished
				// under a concurrent Delete.
				if p == start {
					return iofs.SkipAll
				}
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			if p == tmpDir {
				return iofs.SkipDir
			}
			// Prune directories that cannot hold a match.
			if p != start && !strings.HasPrefix(p+"/", prefix) && !strings.HasPrefix(prefix, p+"/") {
				return iofs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(p, prefix) || checkKey(p) != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if isNotExist(err) {
				return nil // deleted meanwhile
			}
			return err
		}
		out = append(out, infoOf(p, fi))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	// WalkDir's per-directory order is not the lexical order of whole keys
	// ("a.txt" < "a/b" but directory "a" is walked first).
	slices.SortFunc(out, func(a, b blob.Info) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// createTemp creates a new, empty, exclusively created temp file in .tmp.
func (s *Store) createTemp() (*os.File, string, error) {
	var lastErr error
	for range 10 {
		var b [16]byte
		_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
		name := tmpDir + "/" + hex.EncodeToString(b[:])
		f, err := s.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		switch {
		case err == nil:
			return f, name, nil
		case errors.Is(err, iofs.ErrExist):
			lastErr = err
		case isNotExist(err):
			// Someone removed .tmp; recreate it and retry.
			lastErr = err
			if err := s.root.MkdirAll(tmpDir, 0o755); err != nil {
				return nil, "", fmt.Errorf("create temp dir: %w", err)
			}
		default:
			return nil, "", fmt.Errorf("create temp file: %w", err)
		}
	}
	return nil, "", fmt.Errorf("create temp file: %w", lastErr)
}

// syncDir fsyncs the directory dir of the root.
func (s *Store) syncDir(dir string) error {
	d, err := s.root.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// removeStaleTemps best-effort removes temp files last modified before
// cutoff. Errors are ignored: stale temp files only waste space.
func (s *Store) removeStaleTemps(cutoff time.Time) {
	d, err := s.root.Open(tmpDir)
	if err != nil {
		return
	}
	entries, _ := d.ReadDir(-1)
	d.Close()
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.ModTime().Before(cutoff) {
			_ = s.root.Remove(tmpDir + "/" + e.Name())
		}
	}
}

// checkKey validates key and rejects the reserved temp directory.
func checkKey(key string) error {
	if err := blob.ValidateKey(key); err != nil {
		return err
	}
	if key == tmpDir || strings.HasPrefix(key, tmpDir+"/") {
		return fmt.Errorf("%w %q: %s is reserved by the filesystem store", blob.ErrInvalidKey, key, tmpDir)
	}
	return nil
}

// mapErr turns "no such file" (including a path component being a file)
// into blob.ErrNotFound and wraps everything else.
func mapErr(op, key string, err error) error {
	if isNotExist(err) {
		return fmt.Errorf("%s %s: %w", op, key, blob.ErrNotFound)
	}
	return fmt.Errorf("%s %s: %w", op, key, err)
}

func isNotExist(err error) bool {
	return errors.Is(err, iofs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

func infoOf(key string, fi iofs.FileInfo) blob.Info {
	return blob.Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}
}

// object is an open file. Embedding *os.File keeps its SyscallConn and
// WriteTo methods visible, which is what lets net/http use sendfile(2).
type object struct {
	*os.File
	info blob.Info
}

// Info describes the object as it was when opened.
func (o *object) Info() blob.Info { return o.info }

// ctxReader fails reads once ctx is done, so a copy stops between chunks.
// It cannot interrupt a Read already blocked in r.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// writerOnly hides *os.File's ReadFrom so io.CopyBuffer uses our buffer and
// our ctx-checking reader for every chunk.
type writerOnly struct{ w io.Writer }

func (w writerOnly) Write(p []byte) (int, error) { return w.w.Write(p) }
