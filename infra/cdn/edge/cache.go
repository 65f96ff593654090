package edge

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/zipship/zipship/infra/blob"
)

// entryOverhead is what one cached content costs beyond its bytes, roughly
// (entry, map slot, ring slot), counted against the memory budget.
const entryOverhead = 128

// content is the memory-cached content of one digest.
type content struct {
	digest string
	size   int64
	// data is nil once evicted; files still linked to the entry then load
	// the content again.
	data atomic.Pointer[[]byte]
	ref  atomic.Bool // used since the clock hand last passed
}

// contentCache keeps the content of small files in memory, keyed by
// digest: content-addressed, so never stale. Hits are lock-free (through
// the file's link to its entry); eviction is CLOCK (second chance), which
// approximates LRU without touching shared state on hits beyond one
// atomic flag.
type contentCache struct {
	max   int64 // budget in bytes; <0 disables the cache
	loads flight[[]byte]

	mu       sync.Mutex
	byDigest map[string]*content
	ring     []*content
	hand     int
	used     int64
}

func newContentCache(max int64) *contentCache {
	return &contentCache{max: max, byDigest: make(map[string]*content)}
}

// get returns f's content: from memory (data) for small files, else an
// open object the caller must close.
func (c *contentCache) get(ctx context.Context, store blob.Store, f *file) ([]byte, blob.Object, error) {
	if e := f.mem.Load(); e != nil {
		if d := e.data.Load(); d != nil {
			if !e.ref.Load() {
				e.ref.Store(true)
			}
			return *d, nil, nil
		}
	}
	if c.max < 0 || f.size > MaxMemoryFileSize || f.size+entryOverhead > c.max {
		obj, err := store.Open(ctx, f.blobKey)
		if err != nil {
			return nil, nil, fmt.Errorf("open content of %s: %w", f.path, err)
		}
		if got := obj.Info().Size; got != f.size {
			obj.Close()
			return nil, nil, fmt.Errorf("content of %s at %s has %d bytes, manifest says %d", f.path, f.blobKey, got, f.size)
		}
		return nil, obj, nil
	}
	if e := c.lookup(f.digest); e != nil {
		if d := e.data.Load(); d != nil {
			f.mem.Store(e)
			e.ref.Store(true)
			return *d, nil, nil
		}
	}
	data, err := c.loads.do(ctx, f.digest, func(ctx context.Context) ([]byte, error) {
		return c.load(ctx, store, f)
	})
	if err != nil {
		return nil, nil, err
	}
	return data, nil, nil
}

// lookup returns the live entry for digest, if any.
func (c *contentCache) lookup(digest string) *content {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byDigest[digest]
}

// load reads f's content from the store and adds it to the cache.
func (c *contentCache) load(ctx context.Context, store blob.Store, f *file) ([]byte, error) {
	obj, err := store.Open(ctx, f.blobKey)
	if err != nil {
		return nil, fmt.Errorf("open content of %s: %w", f.path, err)
	}
	defer obj.Close()
	data := make([]byte, f.size)
	if _, err := io.ReadFull(obj, data); err != nil {
		return nil, fmt.Errorf("read content of %s from %s: %w", f.path, f.blobKey, err)
	}
	// The blob must be exactly the manifest's size: a longer one is damaged
	// too, and serving a prefix of it would hide that.
	var one [1]byte
	if n, _ := obj.Read(one[:]); n != 0 {
		return nil, fmt.Errorf("content of %s at %s is longer than the manifest's %d bytes", f.path, f.blobKey, f.size)
	}
	f.mem.Store(c.add(f.digest, data))
	return data, nil
}

// add caches data under digest and returns its entry, evicting others to
// stay within the budget.
func (c *contentCache) add(digest string, data []byte) *content {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.byDigest[digest]; e != nil && e.data.Load() != nil {
		return e
	}
	e := &content{digest: digest, size: int64(len(data)) + entryOverhead}
	e.data.Store(&data)
	c.byDigest[digest] = e
	c.ring = append(c.ring, e)
	c.used += e.size
	for c.used > c.max && len(c.ring) > 0 {
		if c.hand >= len(c.ring) {
			c.hand = 0
		}
		v := c.ring[c.hand]
		if v != e && v.ref.Load() {
			v.ref.Store(false) // second chance
			c.hand++
			continue
		}
		if v == e && len(c.ring) > 1 {
			c.hand++ // keep what we are adding unless it is all there is
			continue
		}
		v.data.Store(nil)
		delete(c.byDigest, v.digest)
		c.used -= v.size
		last := len(c.ring) - 1
		c.ring[c.hand] = c.ring[last]
		c.ring[last] = nil
		c.ring = c.ring[:last]
	}
	return e
}
