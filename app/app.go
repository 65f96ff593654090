// Package app is zipship's application layer: it loads aggregates from the
// event store, asks the domain what should happen, and appends the answer
// with optimistic concurrency. The gateway and the runners call it; it owns
// no transport and no storage technology, only the eventstore.Store and
// blob.Store interfaces.
package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"

	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/infra/eventstore"
)

// App executes commands against the event store.
type App struct {
	events eventstore.Store
	blobs  blob.Store
	log    *slog.Logger
	now    func() time.Time
}

// New returns an App over the given stores.
func New(events eventstore.Store, blobs blob.Store, log *slog.Logger) *App {
	if log == nil {
		log = slog.Default()
	}
	return &App{events: events, blobs: blobs, log: log, now: func() time.Time { return time.Now().UTC() }}
}

// Events returns the event store the app writes to.
func (a *App) Events() eventstore.Store { return a.events }

// Blobs returns the blob store the app writes to.
func (a *App) Blobs() blob.Store { return a.blobs }

// Meta is the tracing metadata copied onto every event an operation appends.
type Meta struct {
	CorrelationID string
	CausationID   string
	TraceParent   string
}

// aggregate is what load can rebuild.
type aggregate interface{ Apply(domain.Event) }

// load replays stream into agg and returns the stream's version.
func (a *App) load(ctx context.Context, stream string, agg aggregate) (int64, error) {
	evs, err := a.events.ReadStream(ctx, stream, 1)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", stream, err)
	}
	var v int64
	for _, e := range evs {
		d, err := domain.Decode(e.Type, e.Data)
		if err != nil {
			return 0, fmt.Errorf("load %s@%d: %w", stream, e.Version, err)
		}
		agg.Apply(d)
		v = e.Version
	}
	return v, nil
}

// Envelope wraps a domain event for the event store.
func Envelope(e domain.Event, tenant string, m Meta) (eventstore.Event, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return eventstore.Event{}, fmt.Errorf("encode %s: %w", e.EventType(), err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return eventstore.Event{}, fmt.Errorf("event id: %w", err)
	}
	return eventstore.Event{
		ID: id, Type: e.EventType(), SchemaVersion: domain.SchemaVersion, Tenant: tenant,
		CorrelationID: m.CorrelationID, CausationID: m.CausationID, TraceParent: m.TraceParent, Data: data,
	}, nil
}

// append stores decided events on stream at the expected version.
func (a *App) append(ctx context.Context, stream, tenant string, expected int64, m Meta, evs []domain.Event) (eventstore.AppendResult, error) {
	envs := make([]eventstore.Event, 0, len(evs))
	for _, e := range evs {
		env, err := Envelope(e, tenant, m)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		envs = append(envs, env)
	}
	res, err := a.events.Append(ctx, stream, eventstore.Exact(expected), envs...)
	if err != nil {
		return res, fmt.Errorf("append %s: %w", stream, err)
	}
	return res, nil
}

// conflictRetries bounds how often a command is decided again after losing
// the race for its stream. Each retry first waits a random delay that grows
// with the retries (up to 32 ms), so that writers racing on one stream
// spread out instead of colliding again in lock step: ten concurrent
// commands on one tenant must all get through.
const conflictRetries = 20

// retryOnConflict runs decide-and-append again when another writer got to
// the stream first: the decision is remade on the fresh state.
func retryOnConflict(ctx context.Context, fn func() (eventstore.AppendResult, error)) (eventstore.AppendResult, error) {
	for i := 0; ; i++ {
		res, err := fn()
		if err == nil || !eventstore.IsConflict(err) || i == conflictRetries {
			return res, err
		}
		t := time.NewTimer(rand.N(time.Millisecond << min(i, 5)))
		select {
		case <-ctx.Done():
			t.Stop()
			return res, ctx.Err()
		case <-t.C:
		}
	}
}

// ErrNoChange is returned by commands whose decision emitted no events.
var ErrNoChange = errors.New("no change")
