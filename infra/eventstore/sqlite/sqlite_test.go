package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zipship/zipship/infra/eventstore"
	"github.com/zipship/zipship/infra/eventstore/eventstoretest"
)

// openT opens a store at path and closes it when the test ends.
func openT(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, eventstore.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	eventstoretest.Run(t, func(t *testing.T) eventstore.Store {
		return openT(t, filepath.Join(t.TempDir(), "events.db"))
	})
}

func newEvent(typ string) eventstore.Event {
	return eventstore.Event{ID: uuid.New(), Type: typ, Data: []byte(`{}`)}
}

// TestSecondStoreSeesAppends opens two Stores on one file, as two processes
// would: neither gets the other's in-process wakeups, so a subscriber must
// find the other Store's appends by polling.
func TestSecondStoreSeesAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	a := openT(t, path)
	b := openT(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	recv := func(name string, sub *eventstore.Subscription, want ...eventstore.Event) {
		t.Helper()
		for i, w := range want {
			select {
			case e := <-sub.C:
				if e.ID != w.ID || e.Type != w.Type {
					t.Fatalf("%s: event %d = %s %s, want %s %s", name, i, e.ID, e.Type, w.ID, w.Type)
				}
			case <-ctx.Done():
				t.Fatalf("%s: event %d not delivered: %v", name, i, sub.Err())
			}
		}
	}

	// a appends, b's subscriber (idle, caught up) sees it.
	subB := b.Subscribe(ctx, 0, eventstore.ReadOptions{})
	e1, e2 := newEvent("from-a"), newEvent("from-a")
	start := time.Now()
	resA, err := a.Append(ctx, "s", eventstore.NoStream, e1, e2)
	if err != nil {
		t.Fatal(err)
	}
	recv("b subscribed, a appends", subB, e1, e2)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("poll took %s, want about %s", d, pollInterval)
	}

	// b appends, a's subscriber sees it; b's own subscriber too.
	subA := a.Subscribe(ctx, resA.Position, eventstore.ReadOptions{})
	e3 := newEvent("from-b")
	if _, err := b.Append(ctx, "s", eventstore.NoStream, e3); !eventstore.IsConflict(err) {
		t.Fatalf("b appending with a stale version: %v, want a conflict", err)
	}
	resB, err := b.Append(ctx, "s", eventstore.Exact(2), e3)
	if err != nil {
		t.Fatal(err)
	}
	if resB.Version != 3 || resB.Position <= resA.Position {
		t.Fatalf("b's append = %+v, want version 3 after position %d", resB, resA.Position)
	}
	recv("a subscribed, b appends", subA, e3)
	recv("b subscribed, b appends", subB, e3)
}

// TestTwoStoresAppendConcurrently checks that appends from two Stores on one
// file (two processes) are serialised by SQLite's write lock: no lost or
// duplicated events, contiguous versions.
func TestTwoStoresAppendConcurrently(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	stores := []*Store{openT(t, path), openT(t, path)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	const perWorker = 25
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		s := stores[w%2]
		wg.Go(func() {
			for range perWorker {
				if _, err := s.Append(ctx, "shared", eventstore.Any, newEvent("e")); err != nil {
					errs <- fmt.Errorf("worker %d: %w", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, err := stores[1].ReadStream(ctx, "shared", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 8*perWorker {
		t.Fatalf("%d events, want %d", len(got), 8*perWorker)
	}
	for i, e := range got {
		if e.Version != int64(i+1) || (i > 0 && e.Position <= got[i-1].Position) {
			t.Fatalf("event %d: version %d position %d after %d", i, e.Version, e.Position, got[max(i-1, 0)].Position)
		}
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	ctx := context.Background()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	e1 := newEvent("one")
	e1.Tenant, e1.TraceParent = "t1", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	e2 := newEvent("two")
	res, err := s.Append(ctx, "s", eventstore.NoStream, e1, e2)
	if err != nil {
		t.Fatal(err)
	}
	before, err := s.ReadAll(ctx, 0, eventstore.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openT(t, path)
	after, err := s.ReadAll(ctx, 0, eventstore.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 2 {
		t.Fatalf("after reopen: %d events, want 2", len(after))
	}
	for i := range before {
		b, a := before[i], after[i]
		if a.ID != b.ID || a.Position != b.Position || a.Version != b.Version || !a.Time.Equal(b.Time) ||
			a.Tenant != b.Tenant || a.TraceParent != b.TraceParent || string(a.Data) != string(b.Data) {
			t.Fatalf("after reopen: event %d = %+v, want %+v", i, a, b)
		}
	}
	if h, err := s.Head(ctx); err != nil || h != res.Position {
		t.Fatalf("Head after reopen = %d, %v; want %d", h, err, res.Position)
	}
	// Idempotency and versions carry over.
	if again, err := s.Append(ctx, "s", eventstore.NoStream, e1, e2); err != nil || again != res {
		t.Fatalf("repeat after reopen = %+v, %v; want %+v", again, err, res)
	}
	if r, err := s.Append(ctx, "s", eventstore.Exact(2), newEvent("three")); err != nil || r.Version != 3 || r.Position <= res.Position {
		t.Fatalf("append after reopen = %+v, %v; want version 3 after position %d", r, err, res.Position)
	}
}

func TestOpenChecksSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	var mode string
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil || v != schemaVersion {
		t.Fatalf("user_version = %d, %v; want %d", v, err, schemaVersion)
	}
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
	if _, err := db.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(path); err == nil {
		s.Close()
		t.Fatal("Open of a database with a newer schema: no error")
	}
}

func TestOpenRejectsMemory(t *testing.T) {
	for _, p := range []string{"", ":memory:", "file::memory:?cache=shared", "a?b"} {
		if s, err := Open(p); err == nil {
			s.Close()
			t.Errorf("Open(%q): no error", p)
		}
	}
}

func TestAppendValidates(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "events.db"))
	ctx := context.Background()
	bad := []struct {
		name   string
		stream string
		exp    eventstore.ExpectedVersion
		ev     eventstore.Event
	}{
		{"empty stream", "", eventstore.Any, newEvent("e")},
		{"bad expected version", "s", -1, newEvent("e")},
		{"empty type", "s", eventstore.Any, eventstore.Event{Data: []byte(`{}`)}},
		{"invalid JSON", "s", eventstore.Any, eventstore.Event{Type: "e", Data: []byte(`{`)}},
		{"time out of range", "s", eventstore.Any, eventstore.Event{Type: "e", Time: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}},
	}
	for _, b := range bad {
		if _, err := s.Append(ctx, b.stream, b.exp, b.ev); err == nil {
			t.Errorf("%s: no error", b.name)
		}
	}
	if h, _ := s.Head(ctx); h != 0 {
		t.Fatalf("Head = %d after rejected appends, want 0", h)
	}
	if _, err := s.ReadAll(ctx, 0, eventstore.ReadOptions{Limit: -1}); err == nil {
		t.Error("ReadAll with a negative limit: no error")
	}
}

// TestCloseWhileAppending races Close against appenders: each Append either
// succeeds or returns ErrClosed, and Close does not hang.
func TestCloseWhileAppending(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "events.db"))
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				_, err := s.Append(ctx, "s", eventstore.Any, newEvent("e"))
				if errors.Is(err, eventstore.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
}
