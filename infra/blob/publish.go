package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"
)

// publishParallelism bounds how many files Publish hashes or uploads at
// once.
const publishParallelism = 8

// sniffLen is how much of a file ContentType may sniff, as much as
// http.DetectContentType looks at.
const sniffLen = 512

// PublishStats counts what one Publish did.
type PublishStats struct {
	// Files and Bytes count the files of the site and their total size.
	Files int
	Bytes int64
	// Uploaded and UploadedBytes count the blobs this Publish wrote.
	Uploaded      int
	UploadedBytes int64
	// Reused counts the files whose content was not uploaded because it
	// was already stored, or is shared with another file of the same
	// build: Uploaded + Reused == Files.
	Reused int
}

// publishFile is one file found by Publish.
type publishFile struct {
	path        string // slash-separated, relative to the published dir
	digest      string
	size        int64
	contentType string
}

// Publish stores the regular files under dir as the site version buildID of
// tenant: each file's content at BlobKey(sha256) unless a blob of the same
// size is already stored there (content addressing makes identical files of
// successive builds free), then the manifest at ManifestKey(tenant,
// buildID). The manifest is written last, so a manifest never names a
// missing blob. Symlinks and special files are refused (the output of an
// untrusted build must not make us publish files from elsewhere), as is an
// empty dir. Blob content is verified against the digest while uploading,
// so a file changing under Publish fails it instead of storing wrong
// content under a digest.
func Publish(ctx context.Context, s Store, tenant, buildID, dir string) (*Manifest, PublishStats, error) {
	var stats PublishStats
	if err := validSegment("tenant", tenant); err != nil {
		return nil, stats, fmt.Errorf("publish: %w", err)
	}
	if err := validSegment("build id", buildID); err != nil {
		return nil, stats, fmt.Errorf("publish: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, stats, fmt.Errorf("publish %s: %w", dir, err)
	}
	defer root.Close()

	files, err := listPublishFiles(ctx, root, dir)
	if err != nil {
		return nil, stats, err
	}
	if len(files) == 0 {
		return nil, stats, fmt.Errorf("publish %s: no files to publish", dir)
	}

	// Hash every file.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(publishParallelism)
	for i := range files {
		g.Go(func() error {
			return hashFile(gctx, root, dir, &files[i])
		})
	}
	if err := g.Wait(); err != nil {
		return nil, stats, err
	}

	// Upload each distinct content once, unless already stored.
	first := make(map[string]*publishFile, len(files))
	var unique []*publishFile
	for i := range files {
		f := &files[i]
		if _, ok := first[f.digest]; !ok {
			first[f.digest] = f
			unique = append(unique, f)
		}
	}
	uploaded := make([]bool, len(unique))
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(publishParallelism)
	for i, f := range unique {
		g.Go(func() error {
			up, err := storeBlob(gctx, s, root, dir, f)
			uploaded[i] = up
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, stats, err
	}

	m := &Manifest{
		Tenant:    tenant,
		BuildID:   buildID,
		CreatedAt: time.Now().UTC(),
		Files:     make(map[string]ManifestFile, len(files)),
	}
	for _, f := range files {
		m.Files[f.path] = ManifestFile{Digest: f.digest, Size: f.size, ContentType: f.contentType}
		m.TotalSize += f.size
	}
	stats.Files = len(files)
	stats.Bytes = m.TotalSize
	for i, up := range uploaded {
		if up {
			stats.Uploaded++
			stats.UploadedBytes += unique[i].size
		}
	}
	stats.Reused = stats.Files - stats.Uploaded

	data, err := json.Marshal(m)
	if err != nil {
		return nil, stats, fmt.Errorf("publish %s: encode manifest: %w", dir, err)
	}
	key := ManifestKey(tenant, buildID)
	if _, err := s.Put(ctx, key, bytes.NewReader(data)); err != nil {
		return nil, stats, fmt.Errorf("publish %s: write manifest: %w", dir, err)
	}
	return m, stats, nil
}

// listPublishFiles walks root (opened on dir) and returns its regular files.
// Anything else but a directory is an error naming the file.
func listPublishFiles(ctx context.Context, root *os.Root, dir string) ([]publishFile, error) {
	var files []publishFile
	err := iofs.WalkDir(root.FS(), ".", func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return nil
		case d.Type()&iofs.ModeSymlink != 0:
			return fmt.Errorf("%s is a symlink: only regular files can be published", filepath.Join(dir, filepath.FromSlash(p)))
		case !d.Type().IsRegular():
			return fmt.Errorf("%s is not a regular file (%s): only regular files can be published", filepath.Join(dir, filepath.FromSlash(p)), d.Type())
		}
		// Site paths become keys of the manifest and URL paths: hold them
		// to the key rules (no backslash, control characters, ...).
		if err := ValidateKey(p); err != nil {
			return fmt.Errorf("%s: unpublishable name: %w", filepath.Join(dir, filepath.FromSlash(p)), err)
		}
		files = append(files, publishFile{path: p})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", dir, err)
	}
	return files, nil
}

// hashFile fills in f's digest, size and content type by streaming it.
func hashFile(ctx context.Context, root *os.Root, dir string, f *publishFile) error {
	r, err := root.Open(f.path)
	if err != nil {
		return fmt.Errorf("publish %s: %w", dir, err)
	}
	defer r.Close()
	h := sha256.New()
	head := make([]byte, sniffLen)
	n, err := io.ReadFull(r, head)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("publish %s: read %s: %w", dir, f.path, err)
	}
	head = head[:n]
	h.Write(head)
	rest, err := io.Copy(h, ctxReader{ctx: ctx, r: r})
	if err != nil {
		return fmt.Errorf("publish %s: read %s: %w", dir, f.path, err)
	}
	f.digest = hex.EncodeToString(h.Sum(nil))
	f.size = int64(n) + rest
	f.contentType = ContentType(f.path, head)
	return nil
}

// storeBlob uploads f's content to BlobKey(f.digest) unless a blob of the
// same size is already there, and reports whether it uploaded.
func storeBlob(ctx context.Context, s Store, root *os.Root, dir string, f *publishFile) (bool, error) {
	key := BlobKey(f.digest)
	info, err := s.Stat(ctx, key)
	switch {
	case err == nil && info.Size == f.size:
		return false, nil
	case err != nil && !errors.Is(err, ErrNotFound):
		return false, fmt.Errorf("publish %s: %w", dir, err)
	}
	// Absent, or present with the wrong size (a damaged blob): (re)write.
	r, err := root.Open(f.path)
	if err != nil {
		return false, fmt.Errorf("publish %s: %w", dir, err)
	}
	defer r.Close()
	vr := &verifyReader{r: r, h: sha256.New(), size: f.size, digest: f.digest, path: f.path}
	if _, err := s.Put(ctx, key, vr); err != nil {
		return false, fmt.Errorf("publish %s: %w", dir, err)
	}
	return true, nil
}

// verifyReader passes r through and, instead of io.EOF, returns an error if
// what was read does not have the expected size and digest. Stores only
// commit a Put whose reader ended in io.EOF, so a file modified between
// hashing and uploading is never stored under the old digest.
type verifyReader struct {
	r      io.Reader
	h      hash.Hash
	n      int64
	size   int64
	digest string
	path   string
}

func (v *verifyReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.n > v.size {
		return n, fmt.Errorf("%s changed while publishing: grew beyond %d bytes", v.path, v.size)
	}
	if errors.Is(err, io.EOF) {
		if v.n != v.size {
			return n, fmt.Errorf("%s changed while publishing: %d bytes, hashed %d", v.path, v.n, v.size)
		}
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.digest {
			return n, fmt.Errorf("%s changed while publishing: sha256 %s, hashed %s", v.path, got, v.digest)
		}
	}
	return n, err
}

// LoadManifest reads and decodes the manifest stored at key. A missing
// manifest is an error wrapping ErrNotFound.
func LoadManifest(ctx context.Context, s Store, key string) (*Manifest, error) {
	var m Manifest
	if err := readJSON(ctx, s, key, &m); err != nil {
		return nil, fmt.Errorf("load manifest: %w", err)
	}
	if m.Files == nil {
		m.Files = map[string]ManifestFile{}
	}
	return &m, nil
}

// WritePointer makes p the live version of p.Tenant by writing it to
// PointerKey(p.Tenant); Put's atomicity means readers see the old or the new
// pointer, never a torn one. The manifest p names must already be stored,
// so the pointer never leads to nothing.
func WritePointer(ctx context.Context, s Store, p Pointer) error {
	if err := validSegment("tenant", p.Tenant); err != nil {
		return fmt.Errorf("write pointer: %w", err)
	}
	if p.BuildID == "" || p.ManifestKey == "" {
		return fmt.Errorf("write pointer for %s: build id and manifest key are required", p.Tenant)
	}
	if _, err := s.Stat(ctx, p.ManifestKey); err != nil {
		return fmt.Errorf("write pointer for %s: manifest: %w", p.Tenant, err)
	}
	data, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("write pointer for %s: %w", p.Tenant, err)
	}
	if _, err := s.Put(ctx, PointerKey(p.Tenant), bytes.NewReader(data)); err != nil {
		return fmt.Errorf("write pointer for %s: %w", p.Tenant, err)
	}
	return nil
}

// ReadPointer returns tenant's live pointer; the error wraps ErrNotFound
// when the tenant has none yet.
func ReadPointer(ctx context.Context, s Store, tenant string) (*Pointer, error) {
	if err := validSegment("tenant", tenant); err != nil {
		return nil, fmt.Errorf("read pointer: %w", err)
	}
	var p Pointer
	if err := readJSON(ctx, s, PointerKey(tenant), &p); err != nil {
		return nil, fmt.Errorf("read pointer for %s: %w", tenant, err)
	}
	return &p, nil
}

// readJSON decodes the JSON object stored at key into v.
func readJSON(ctx context.Context, s Store, key string, v any) error {
	obj, err := s.Open(ctx, key)
	if err != nil {
		return err
	}
	defer obj.Close()
	if err := json.NewDecoder(ctxReader{ctx: ctx, r: obj}).Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}

// ctxReader fails reads once ctx is done, so long copies stop between
// chunks.
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
