package fs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/infra/blob/fs"
)

func newStore(t *testing.T) (*fs.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "root")
	s, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func put(t *testing.T, s blob.Store, key, content string) {
	t.Helper()
	n, err := s.Put(context.Background(), key, bytes.NewBufferString(content))
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	if n != int64(len(content)) {
		t.Fatalf("Put(%q) = %d bytes, want %d", key, n, len(content))
	}
}

func read(t *testing.T, s blob.Store, key string) string {
	t.Helper()
	obj, err := s.Open(context.Background(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return string(b)
}

func keys(infos []blob.Info) []string {
	var out []string
	for _, i := range infos {
		out = append(out, i.Key)
	}
	return out
}

// tmpEntries lists the files left in the store's temp directory.
func tmpEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, ".tmp"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestNewCreatesRoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	s, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() {
		t.Fatalf("%s is not a directory", dir)
	}
	if got := fi.Mode().Perm() &^ 0o022; got != 0o755&^0o022 {
		t.Errorf("root mode %v, want 0755 (minus umask)", fi.Mode().Perm())
	}
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, dir := newStore(t)

	put(t, s, "tenants/acme/builds/b1/source.zip", "zipzip")
	put(t, s, "tenants/acme/builds/b1/build.log", "log")
	put(t, s, "tenants/acme.txt", "dot sorts before slash")
	put(t, s, "tenants/bob/x", "bob")
	put(t, s, "top", "t")

	// The object is a plain file under the root.
	if b, err := os.ReadFile(filepath.Join(dir, "tenants", "acme", "builds", "b1", "source.zip")); err != nil || string(b) != "zipzip" {
		t.Fatalf("file on disk = %q, %v", b, err)
	}

	if got := read(t, s, "tenants/acme/builds/b1/source.zip"); got != "zipzip" {
		t.Errorf("read = %q", got)
	}

	info, err := s.Stat(ctx, "tenants/acme/builds/b1/source.zip")
	if err != nil {
		t.Fatal(err)
	}
	if info.Key != "tenants/acme/builds/b1/source.zip" || info.Size != 6 {
		t.Errorf("Stat = %+v", info)
	}
	if time.Since(info.ModTime) > time.Minute || info.ModTime.After(time.Now().Add(time.Second)) {
		t.Errorf("Stat ModTime = %v, want about now", info.ModTime)
	}

	// Open gives Info, Seek and ReadAt.
	obj, err := s.Open(ctx, "tenants/acme/builds/b1/source.zip")
	if err != nil {
		t.Fatal(err)
	}
	if oi := obj.Info(); oi.Key != info.Key || oi.Size != 6 {
		t.Errorf("Object.Info = %+v", oi)
	}
	buf := make([]byte, 3)
	if n, err := obj.ReadAt(buf, 3); err != nil || n != 3 || string(buf) != "zip" {
		t.Errorf("ReadAt = %d, %q, %v", n, buf, err)
	}
	if off, err := obj.Seek(4, io.SeekStart); err != nil || off != 4 {
		t.Errorf("Seek = %d, %v", off, err)
	}
	if rest, err := io.ReadAll(obj); err != nil || string(rest) != "ip" {
		t.Errorf("read after seek = %q, %v", rest, err)
	}
	// Backed by the *os.File itself, so net/http can sendfile it.
	if _, ok := obj.(syscall.Conn); !ok {
		t.Errorf("Object %T does not expose SyscallConn: no sendfile", obj)
	}
	if err := obj.Close(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"tenants/acme.txt", "tenants/acme/builds/b1/build.log", "tenants/acme/builds/b1/source.zip", "tenants/bob/x", "top"}},
		{"tenants/", []string{"tenants/acme.txt", "tenants/acme/builds/b1/build.log", "tenants/acme/builds/b1/source.zip", "tenants/bob/x"}},
		{"tenants/ac", []string{"tenants/acme.txt", "tenants/acme/builds/b1/build.log", "tenants/acme/builds/b1/source.zip"}},
		{"tenants/acme/", []string{"tenants/acme/builds/b1/build.log", "tenants/acme/builds/b1/source.zip"}},
		{"tenants/acme/builds/b1/source.zip", []string{"tenants/acme/builds/b1/source.zip"}},
		{"tenants/b", []string{"tenants/bob/x"}},
		{"t", []string{"tenants/acme.txt", "tenants/acme/builds/b1/build.log", "tenants/acme/builds/b1/source.zip", "tenants/bob/x", "top"}},
		{"nothing/", nil},
		{"nothing/here/", nil},
		{"top/", nil}, // "top" is a file, not a directory
		{".tmp/", nil},
	}
	for _, tt := range tests {
		infos, err := s.List(ctx, tt.prefix)
		if err != nil {
			t.Errorf("List(%q): %v", tt.prefix, err)
			continue
		}
		if got := keys(infos); !slices.Equal(got, tt.want) {
			t.Errorf("List(%q) = %q, want %q", tt.prefix, got, tt.want)
		}
	}
	infos, _ := s.List(ctx, "tenants/acme/builds/b1/s")
	if len(infos) != 1 || infos[0].Size != 6 || infos[0].ModTime.IsZero() {
		t.Errorf("List infos = %+v", infos)
	}

	if err := s.Delete(ctx, "tenants/acme/builds/b1/source.zip"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "tenants/acme/builds/b1/source.zip"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat after Delete = %v, want ErrNotFound", err)
	}
	if _, err := s.Open(ctx, "tenants/acme/builds/b1/source.zip"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Open after Delete = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "tenants/acme/builds/b1/source.zip"); err != nil {
		t.Errorf("second Delete = %v, want nil", err)
	}
	if err := s.Delete(ctx, "never/was/here"); err != nil {
		t.Errorf("Delete absent = %v, want nil", err)
	}
	if got := read(t, s, "tenants/acme/builds/b1/build.log"); got != "log" {
		t.Errorf("sibling after Delete = %q", got)
	}
	if infos, _ := s.List(ctx, "tenants/acme/"); !slices.Equal(keys(infos), []string{"tenants/acme/builds/b1/build.log"}) {
		t.Errorf("List after Delete = %q", keys(infos))
	}
}

func TestNotFound(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	put(t, s, "a/file", "x")

	for _, key := range []string{
		"missing",
		"a/missing",
		"a",           // a directory is not an object
		"a/file/more", // a path component is a file
	} {
		if _, err := s.Stat(ctx, key); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat(%q) = %v, want ErrNotFound", key, err)
		}
		if _, err := s.Open(ctx, key); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Open(%q) = %v, want ErrNotFound", key, err)
		}
		if err := s.Delete(ctx, key); err != nil {
			t.Errorf("Delete(%q) = %v, want nil", key, err)
		}
	}
	// Deleting the directory key did not remove what is inside.
	if got := read(t, s, "a/file"); got != "x" {
		t.Errorf("a/file = %q", got)
	}
}

func TestOverwrite(t *testing.T) {
	ctx := context.Background()
	s, dir := newStore(t)
	put(t, s, "k", "first version, longer")
	put(t, s, "k", "second")
	if got := read(t, s, "k"); got != "second" {
		t.Errorf("after overwrite = %q", got)
	}
	info, err := s.Stat(ctx, "k")
	if err != nil || info.Size != 6 {
		t.Errorf("Stat = %+v, %v", info, err)
	}
	put(t, s, "k", "")
	if got := read(t, s, "k"); got != "" {
		t.Errorf("after empty overwrite = %q", got)
	}
	if left := tmpEntries(t, dir); len(left) != 0 {
		t.Errorf("temp files left: %q", left)
	}
}

func TestInvalidKeys(t *testing.T) {
	ctx := context.Background()
	parent := t.TempDir()
	dir := filepath.Join(parent, "root")
	s, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	bad := []string{
		"", "/abs", "/", "../escape", "a/../../escape", "..", ".", "./a", "a/./b",
		"a//b", "a/", "a\\b", "..\\escape", "a\x00b", "a\nb", "a\x1bb", "a\xffb",
		strings.Repeat("a", blob.MaxKeyLen+1),
		".tmp", ".tmp/x", // reserved by this adapter
	}
	for _, key := range bad {
		if _, err := s.Put(ctx, key, bytes.NewBufferString("x")); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Put(%q) = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Open(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Open(%q) = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Stat(%q) = %v, want ErrInvalidKey", key, err)
		}
		if err := s.Delete(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
	for _, prefix := range []string{"/", "/a", "../", "a/../", "a//", "a\\"} {
		if _, err := s.List(ctx, prefix); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("List(%q) = %v, want ErrInvalidKey", prefix, err)
		}
	}

	// Nothing was created anywhere: the parent holds only the root, and
	// the root only its empty temp directory.
	var created []string
	filepath.WalkDir(parent, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(parent, p)
		created = append(created, filepath.ToSlash(rel))
		return nil
	})
	if want := []string{".", "root", "root/.tmp"}; !slices.Equal(created, want) {
		t.Errorf("tree after invalid keys = %q, want %q", created, want)
	}
}

func TestSymlinkNotFollowedOutside(t *testing.T) {
	ctx := context.Background()
	s, dir := newStore(t)
	outside := filepath.Join(filepath.Dir(dir), "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("SECRET"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Planted links: absolute and relative directory links leading out,
	// and a link to an outside file at a key's own place.
	for name, target := range map[string]string{
		"abs":  outside,
		"rel":  "../outside",
		"link": secret,
	} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}

	for _, key := range []string{"abs/new", "rel/new", "abs/deeper/new", "rel/deeper/new", "abs/secret", "rel/secret"} {
		if _, err := s.Put(ctx, key, bytes.NewBufferString("PWNED")); err == nil {
			t.Errorf("Put(%q) through a symlink leading outside succeeded", key)
		}
		if obj, err := s.Open(ctx, key); err == nil {
			b, _ := io.ReadAll(obj)
			obj.Close()
			t.Errorf("Open(%q) through a symlink leading outside succeeded: %q", key, b)
		}
		if _, err := s.Stat(ctx, key); err == nil {
			t.Errorf("Stat(%q) through a symlink leading outside succeeded", key)
		}
		if err := s.Delete(ctx, key); err == nil {
			if _, serr := os.Stat(secret); serr != nil {
				t.Fatalf("Delete(%q) removed the outside file", key)
			}
		}
	}
	if obj, err := s.Open(ctx, "link"); err == nil {
		b, _ := io.ReadAll(obj)
		obj.Close()
		t.Errorf("Open(link) followed a symlink outside: %q", b)
	}

	// Put onto the planted link replaces the link, not the outside file.
	put(t, s, "link", "inside")
	if got := read(t, s, "link"); got != "inside" {
		t.Errorf("link after Put = %q", got)
	}

	infos, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(infos); !slices.Equal(got, []string{"link"}) {
		t.Errorf("List = %q, want only the regular file written by Put", got)
	}

	entries, err := os.ReadDir(outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "secret" {
		t.Errorf("outside dir now holds %v", entries)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "SECRET" {
		t.Errorf("outside file = %q, %v", b, err)
	}
}

func TestPutIsAtomic(t *testing.T) {
	ctx := context.Background()
	s, dir := newStore(t)
	const size = 1 << 20
	a := bytes.Repeat([]byte{'A'}, size)
	b := bytes.Repeat([]byte{'B'}, size)
	const key = "site/big.bin"
	if _, err := s.Put(ctx, key, bytes.NewReader(a)); err != nil {
		t.Fatal(err)
	}

	var done atomic.Bool
	var reads, sawA, sawB atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !done.Load() {
				obj, err := s.Open(ctx, key)
				if err != nil {
					fail(err)
					return
				}
				got, err := io.ReadAll(obj)
				obj.Close()
				if err != nil {
					fail(err)
					return
				}
				reads.Add(1)
				switch {
				case bytes.Equal(got, a):
					sawA.Add(1)
				case bytes.Equal(got, b):
					sawB.Add(1)
				default:
					fail(errors.New("read a mix or a part: " + describe(got)))
					return
				}
			}
		}()
	}

	for i := range 60 {
		content := a
		if i%2 == 0 {
			content = b
		}
		if n, err := s.Put(ctx, key, bytes.NewReader(content)); err != nil || n != size {
			t.Fatalf("Put %d: %d, %v", i, n, err)
		}
	}
	done.Store(true)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	if reads.Load() == 0 {
		t.Fatal("readers never read")
	}
	t.Logf("%d reads: %d all-A, %d all-B", reads.Load(), sawA.Load(), sawB.Load())
	if got := read(t, s, key); got != string(a) { // last Put (i=59) wrote A
		t.Errorf("final content is not all-A: %s", describe([]byte(got)))
	}
	if left := tmpEntries(t, dir); len(left) != 0 {
		t.Errorf("temp files left: %q", left)
	}
}

func describe(b []byte) string {
	var as, bs int
	for _, c := range b {
		switch c {
		case 'A':
			as++
		case 'B':
			bs++
		}
	}
	return fmt.Sprintf("len %d, %d A, %d B", len(b), as, bs)
}

// cancelingReader cancels its context after handing out the first chunk.
type cancelingReader struct {
	r      io.Reader
	cancel context.CancelFunc
	reads  int
}

func (c *cancelingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.reads++
	if c.reads == 1 {
		c.cancel()
	}
	return n, err
}

func TestCancelledPut(t *testing.T) {
	s, dir := newStore(t)
	put(t, s, "existing", "old")

	for _, key := range []string{"new/key", "existing"} {
		ctx, cancel := context.WithCancel(context.Background())
		r := &cancelingReader{r: bytes.NewReader(bytes.Repeat([]byte("x"), 4<<20)), cancel: cancel}
		n, err := s.Put(ctx, key, r)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Put(%q) with cancelled ctx = %d, %v, want context.Canceled", key, n, err)
		}
		if r.reads != 1 {
			t.Errorf("Put(%q) read %d chunks after cancellation, want it to stop after 1", key, r.reads)
		}
		cancel()
	}
	if _, err := s.Stat(context.Background(), "new/key"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat after cancelled Put = %v, want ErrNotFound", err)
	}
	if got := read(t, s, "existing"); got != "old" {
		t.Errorf("existing after cancelled overwrite = %q, want old", got)
	}

	// Already cancelled before starting.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Put(ctx, "pre", bytes.NewBufferString("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with done ctx = %v", err)
	}

	// A failing reader behaves the same.
	boom := errors.New("boom")
	if _, err := s.Put(context.Background(), "broken", io.MultiReader(bytes.NewBufferString("part"), errReader{boom})); !errors.Is(err, boom) {
		t.Errorf("Put with failing reader = %v, want boom", err)
	}
	if _, err := s.Stat(context.Background(), "broken"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat after failed Put = %v, want ErrNotFound", err)
	}

	if left := tmpEntries(t, dir); len(left) != 0 {
		t.Errorf("temp files left: %q", left)
	}
	infos, err := s.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(infos); !slices.Equal(got, []string{"existing"}) {
		t.Errorf("List = %q", got)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestNewRemovesStaleTemps(t *testing.T) {
	s, dir := newStore(t)
	s.Close()
	stale := filepath.Join(dir, ".tmp", "stale")
	fresh := filepath.Join(dir, ".tmp", "fresh")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	s2, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := tmpEntries(t, dir); !slices.Equal(got, []string{"fresh"}) {
		t.Errorf("temp dir after New = %q, want only the fresh file", got)
	}
}
