// Package blob defines zipship's object storage contract (filesystem in
// fs/, later S3 in s3/) and the content-addressed layout of published sites:
// every file of a build is stored once under blobs/sha256/<digest>, and a
// manifest per build maps site paths to digests.
package blob

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is returned when a key holds no object.
var ErrNotFound = errors.New("blob: not found")

// ErrInvalidKey is returned for keys that are empty, absolute, contain "..",
// backslashes, NUL or empty segments: keys can never escape the store.
var ErrInvalidKey = errors.New("blob: invalid key")

// Info describes a stored object.
type Info struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Object is an open stored object. Seek and ReadAt let HTTP servers answer
// Range requests without reading the whole object.
type Object interface {
	io.ReadSeekCloser
	io.ReaderAt
	Info() Info
}

// Store is the object storage contract. Keys are slash-separated relative
// paths such as "tenants/acme/builds/<id>/source.zip".
type Store interface {
	// Put stores r under key atomically: readers see the old object or the
	// whole new one, never a part. It returns the number of bytes written.
	Put(ctx context.Context, key string, r io.Reader) (int64, error)
	// Open opens key for reading; ErrNotFound when absent.
	Open(ctx context.Context, key string) (Object, error)
	// Stat describes key; ErrNotFound when absent.
	Stat(ctx context.Context, key string) (Info, error)
	// Delete removes key; deleting an absent key is not an error.
	Delete(ctx context.Context, key string) error
	// List returns the keys under prefix, in lexical order.
	List(ctx context.Context, prefix string) ([]Info, error)
}
