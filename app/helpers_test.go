package app_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/infra/blob/fs"
	"github.com/zipship/zipship/infra/eventstore"
	"github.com/zipship/zipship/infra/eventstore/sqlite"
)

func quietLog() *slog.Logger {
	lvl := slog.LevelError + 1
	if os.Getenv("ZIPSHIP_TEST_LOG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// barrierStore makes the first n readers of one stream wait for each other
// after their read, so that they all decide on the same state before any of
// them appends: a deterministic race.
type barrierStore struct {
	eventstore.Store
	stream  string
	n       int
	mu      sync.Mutex
	arrived int
	release chan struct{}
}

func (s *barrierStore) arm(stream string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stream, s.n, s.arrived, s.release = stream, n, 0, make(chan struct{})
}

func (s *barrierStore) ReadStream(ctx context.Context, stream string, from int64) ([]eventstore.Event, error) {
	evs, err := s.Store.ReadStream(ctx, stream, from)
	s.mu.Lock()
	if stream != s.stream || s.arrived >= s.n {
		s.mu.Unlock()
		return evs, err
	}
	s.arrived++
	if s.arrived == s.n {
		close(s.release)
	}
	release := s.release
	s.mu.Unlock()
	select {
	case <-release:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(5 * time.Second):
		return nil, fmt.Errorf("barrier on %s: only %d of %d readers came", stream, s.arrived, s.n)
	}
	return evs, err
}

type env struct {
	t       *testing.T
	events  *sqlite.Store
	barrier *barrierStore
	blobs   *fs.Store
	app     *app.App
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	events, err := sqlite.Open(filepath.Join(dir, "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { events.Close() })
	blobs, err := fs.New(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blobs.Close() })
	b := &barrierStore{Store: events}
	return &env{t: t, events: events, barrier: b, blobs: blobs, app: app.New(b, blobs, quietLog())}
}

// request appends a BuildRequested for tenant at version time `at`.
func (e *env) request(tenant string, at time.Time) string {
	e.t.Helper()
	id := uuid.NewString()
	_, err := e.app.RequestBuild(context.Background(), app.Meta{}, domain.BuildRequested{
		BuildID: id, TenantID: tenant, Version: fmt.Sprintf("v%d", at.UnixMilli()), RequestedBy: "alice",
		Source: domain.Source{Key: blob.SourceKey(tenant, id), SHA256: "00", Size: 22, Files: 1}, At: at.UTC(),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// published runs a build far enough to be activated: started, an upload
// step that stores a manifest, BuildPublished.
func (e *env) published(tenant string, at time.Time) *domain.Build {
	e.t.Helper()
	ctx := context.Background()
	id := e.request(tenant, at)
	run, err := e.app.StartRun(ctx, app.Meta{}, id, "r")
	if err != nil {
		e.t.Fatal(err)
	}
	key := blob.ManifestKey(tenant, id)
	err = run.Step(ctx, domain.StepUpload, func(ctx context.Context) (string, error) {
		m := fmt.Sprintf(`{"tenant":%q,"buildId":%q,"files":{}}`, tenant, id)
		_, err := e.blobs.Put(ctx, key, bytes.NewReader([]byte(m)))
		return "", err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := run.Publish(ctx, key, 0, 0); err != nil {
		e.t.Fatal(err)
	}
	return run.Build()
}

func (e *env) stream(name string) []domain.Event {
	e.t.Helper()
	raw, err := e.events.ReadStream(context.Background(), name, 1)
	if err != nil {
		e.t.Fatal(err)
	}
	out := make([]domain.Event, 0, len(raw))
	for _, r := range raw {
		d, err := domain.Decode(r.Type, r.Data)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// countingRefresher records Refresh calls; err, when set, is returned.
type countingRefresher struct {
	mu    sync.Mutex
	calls []string
	err   error
}

func (c *countingRefresher) Refresh(_ context.Context, tenant string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, tenant)
	return c.err
}

func (c *countingRefresher) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}
