package edge

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/zipship/zipship/infra/blob"
)

// liveState is what a tenant's live host serves: the site version its
// pointer named when last read. It is immutable and replaced whole.
type liveState struct {
	site    *site // nil: the tenant has no pointer
	checked int64 // now() when the read of the pointer started
}

// tenant holds one tenant's current liveState and coordinates its reloads:
// at most one store read runs per tenant at a time, shared by every
// request that needs it.
type tenant struct {
	name         string
	state        atomic.Pointer[liveState]
	revalidating atomic.Bool // a background revalidation is running

	mu   sync.Mutex
	call *flightCall[*liveState] // the reload in progress, if any
}

// liveSite returns the site version tenant name serves at now (s.now() of
// the request; nil when it has no pointer). The fast path is a read-locked
// map lookup and an atomic load.
func (s *Server) liveSite(ctx context.Context, name string, now int64) (*site, error) {
	s.mu.RLock()
	t := s.tenants[name]
	s.mu.RUnlock()

	if t == nil {
		if s.isMissing(name, now) {
			return nil, nil
		}
		// The load runs in its own goroutine and may outlive this request,
		// whose strings may alias a front end's reused buffers.
		name := strings.Clone(name)
		st, err := s.firstLoads.do(ctx, name, func(ctx context.Context) (*liveState, error) {
			return s.firstLoad(ctx, name)
		})
		if err != nil {
			return nil, err
		}
		return st.site, nil
	}

	if st := t.state.Load(); st != nil {
		age := now - st.checked
		switch {
		case s.ttl < 0 || age < s.ttl:
			return st.site, nil
		case age < 2*s.ttl:
			// Busy tenant: revalidate in the background, keep serving
			// what we have meanwhile.
			if t.revalidating.CompareAndSwap(false, true) {
				go func() {
					defer t.revalidating.Store(false)
					_, _ = s.reload(context.Background(), t, false)
				}()
			}
			return st.site, nil
		}
	}
	st, err := s.reload(ctx, t, false)
	if st == nil {
		return nil, err
	}
	return st.site, nil // st may be the last good state after a failed read
}

// firstLoad reads the state of a tenant not in s.tenants yet. A tenant with
// a pointer gets an entry; one without is remembered as missing for a TTL,
// so that requests for unknown hosts cost one store read per TTL, and only
// a bounded number of them is remembered.
func (s *Server) firstLoad(ctx context.Context, name string) (*liveState, error) {
	st, err := s.readLive(ctx, name, nil)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.tenants[name]; t != nil {
		// Refresh created the entry meanwhile: its state is at least as
		// new as ours, unless it has none yet.
		if !t.state.CompareAndSwap(nil, st) {
			return t.state.Load(), nil
		}
		return st, nil
	}
	if st.site == nil {
		s.rememberMissing(name, st.checked)
		return st, nil
	}
	t := &tenant{name: strings.Clone(name)}
	t.state.Store(st)
	s.tenants[t.name] = t
	delete(s.missing, name)
	return st, nil
}

// isMissing reports whether label (a tenant, or "<build>.<tenant>") was
// found to have nothing to serve less than a TTL ago.
func (s *Server) isMissing(label string, now int64) bool {
	s.mu.RLock()
	until, ok := s.missing[label]
	s.mu.RUnlock()
	return ok && now < until
}

// rememberMissing records that label had nothing to serve at now, for a
// TTL (DefaultPointerTTL if pointers never expire: Refresh forgets a
// tenant's entry, but nothing would forget a deployment's). s.mu must be
// held.
func (s *Server) rememberMissing(label string, now int64) {
	if len(s.missing) >= maxMissing {
		for k, until := range s.missing {
			if until <= now {
				delete(s.missing, k)
			}
		}
		if len(s.missing) >= maxMissing {
			clear(s.missing)
		}
	}
	ttl := s.ttl
	if ttl < 0 {
		ttl = int64(DefaultPointerTTL)
	}
	s.missing[strings.Clone(label)] = now + ttl
}

// tenantEntry returns the entry of tenant name, creating it (without state)
// if needed.
func (s *Server) tenantEntry(name string) *tenant {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tenants[name]
	if t == nil {
		t = &tenant{name: strings.Clone(name)}
		s.tenants[t.name] = t
	}
	delete(s.missing, name)
	return t
}

// reload re-reads t's pointer (and its manifest if it changed) and installs
// the new state. Concurrent reloads share one store read; with fresh, the
// read is one that started after reload was called, as Refresh needs to
// see a move made before it was called. On a failed read the last good
// state stays in place and is returned along with the error.
func (s *Server) reload(ctx context.Context, t *tenant, fresh bool) (*liveState, error) {
	t.mu.Lock()
	c := t.call
	if c != nil && fresh {
		// That read may have started before the move: wait for it, then
		// share or start one that began after we were called.
		t.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		t.mu.Lock()
		c = t.call
	}
	if c == nil {
		c = &flightCall[*liveState]{done: make(chan struct{})}
		t.call = c
		go s.runReload(ctx, t, c)
	}
	t.mu.Unlock()
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// runReload performs the read of one reload call, detached from the
// cancellation of the request that started it.
func (s *Server) runReload(ctx context.Context, t *tenant, c *flightCall[*liveState]) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
	defer cancel()
	prev := t.state.Load()
	st, err := s.readLive(ctx, t.name, prev)
	if st != nil {
		t.state.Store(st)
	}
	c.val, c.err = st, err
	t.mu.Lock()
	t.call = nil
	t.mu.Unlock()
	close(c.done)
}

// readLive reads tenant's pointer and, unless it names the manifest prev
// already serves, the manifest. A tenant without a pointer gets a state
// with a nil site. If the store fails, it logs and returns prev (re-dated,
// so the store is not retried before a TTL) along with the error.
func (s *Server) readLive(ctx context.Context, tenant string, prev *liveState) (*liveState, error) {
	start := s.now()
	fail := func(err error) (*liveState, error) {
		if prev == nil {
			s.log.Error("cannot load tenant", "tenant", tenant, "err", err)
			return nil, err
		}
		s.log.Warn("cannot reload tenant, serving the last good version", "tenant", tenant, "err", err)
		return &liveState{site: prev.site, checked: start}, err
	}
	ptr, err := blob.ReadPointer(ctx, s.store, tenant)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		return &liveState{checked: start}, nil
	case err != nil:
		return fail(err)
	}
	key := ptr.ManifestKey
	if key == "" {
		key = blob.ManifestKey(tenant, ptr.BuildID)
	}
	if prev != nil && prev.site != nil && prev.site.manifestKey == key {
		return &liveState{site: prev.site, checked: start}, nil
	}
	// The version may be decoded already for its deployment URL (or a
	// rollback returns to a recent version): share it.
	label := buildLabel(ptr.BuildID) + "." + tenant
	if st := s.builds.get(label); st != nil && st.manifestKey == key {
		return &liveState{site: st, checked: start}, nil
	}
	st, err := s.loadSite(ctx, tenant, key)
	if err != nil {
		return fail(fmt.Errorf("pointer of %s names %s: %w", tenant, key, err))
	}
	if key == blob.ManifestKey(tenant, ptr.BuildID) {
		s.builds.add(label, st)
	}
	return &liveState{site: st, checked: start}, nil
}

// loadSite reads and decodes the manifest at key.
func (s *Server) loadSite(ctx context.Context, tenant, key string) (*site, error) {
	m, err := blob.LoadManifest(ctx, s.store, key)
	if err != nil {
		return nil, err
	}
	if m.Tenant != "" && m.Tenant != tenant {
		return nil, fmt.Errorf("manifest %s belongs to tenant %q", key, m.Tenant)
	}
	st, bad := newSite(m, key, &s.hdr)
	if len(bad) > 0 {
		s.log.Warn("manifest has unservable files", "manifest", key, "count", len(bad), "first", bad[0])
	}
	return st, nil
}

// buildSite returns the permanent version of build (32 hex digits) of
// tenant, or nil if there is no such build. label is "<build>.<tenant>".
// Versions are immutable, so they are cached without expiry (in a bounded
// LRU); absent ones are remembered for a TTL.
func (s *Server) buildSite(ctx context.Context, label, tenant, build string, now int64) (*site, error) {
	if st := s.builds.get(label); st != nil {
		return st, nil
	}
	if s.isMissing(label, now) {
		return nil, nil
	}
	// As in liveSite: the load may outlive the request's buffers.
	label = strings.Clone(label)
	build, tenant = label[:len(build)], label[len(build)+1:]
	return s.buildLoads.do(ctx, label, func(ctx context.Context) (*site, error) {
		key := blob.ManifestKey(tenant, canonicalBuildID(build))
		st, err := s.loadSite(ctx, tenant, key)
		switch {
		case errors.Is(err, blob.ErrNotFound):
			s.mu.Lock()
			s.rememberMissing(label, now)
			s.mu.Unlock()
			return nil, nil
		case err != nil:
			s.log.Error("cannot load deployment", "tenant", tenant, "build", build, "err", err)
			return nil, err
		}
		s.builds.add(label, st)
		return st, nil
	})
}

// lru is a small least-recently-used cache of decoded site versions.
type lru struct {
	mu    sync.Mutex
	max   int
	order *list.List // of *lruEntry, most recent first
	items map[string]*list.Element
}

type lruEntry struct {
	key  string
	site *site
}

func newLRU(max int) *lru {
	return &lru{max: max, order: list.New(), items: make(map[string]*list.Element, max)}
}

func (c *lru) get(key string) *site {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.items[key]
	if e == nil {
		return nil
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruEntry).site
}

func (c *lru) add(key string, st *site) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.items[key]; e != nil {
		c.order.MoveToFront(e)
		return
	}
	c.items[key] = c.order.PushFront(&lruEntry{key: key, site: st})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*lruEntry).key)
	}
}

// flight coalesces concurrent loads of the same key into one call of the
// load function, which runs detached from any single caller's
// cancellation (bounded by loadTimeout); each caller still stops waiting
// when its own context ends.
type flight[V any] struct {
	mu    sync.Mutex
	calls map[string]*flightCall[V]
}

type flightCall[V any] struct {
	done chan struct{}
	val  V
	err  error
}

func (g *flight[V]) do(ctx context.Context, key string, load func(context.Context) (V, error)) (V, error) {
	g.mu.Lock()
	c := g.calls[key]
	if c == nil {
		if g.calls == nil {
			g.calls = make(map[string]*flightCall[V])
		}
		key = strings.Clone(key)
		c = &flightCall[V]{done: make(chan struct{})}
		g.calls[key] = c
		go func() {
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
			defer cancel()
			c.val, c.err = load(lctx)
			g.mu.Lock()
			delete(g.calls, key)
			g.mu.Unlock()
			close(c.done)
		}()
	}
	g.mu.Unlock()
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}
