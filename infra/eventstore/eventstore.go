// Package eventstore defines the event store contract every zipship
// adapter implements (sqlite/, later postgres/ and esdb/), and the envelope
// that carries one event. The conformance suite in eventstoretest checks an
// adapter against this contract.
//
// A stream is an ordered list of events for one aggregate ("build-{id}",
// "site-{tenant}", "tenant-{tenant}"). Versions inside a stream start at 1
// and are contiguous. Every event also has a global position, starting at 1,
// that gives one total order over all streams; subscribers follow it.
// Positions only increase, but an adapter may leave gaps (a PostgreSQL
// sequence does), so consumers track "the last position I handled", never a
// count.
package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// ExpectedVersion is the optimistic-concurrency guard of an append: the
// version the caller believes the stream has now.
type ExpectedVersion int64

const (
	// Any appends whatever the stream's version is.
	Any ExpectedVersion = -2
	// NoStream appends only when the stream has no events yet.
	NoStream ExpectedVersion = 0
)

// Exact returns the guard for "the stream's last version is v". Exact(0)
// equals NoStream.
func Exact(v int64) ExpectedVersion { return ExpectedVersion(v) }

// ErrClosed is returned by every method of a closed store.
var ErrClosed = errors.New("eventstore: closed")

// ConflictError reports that a stream's version differed from the expected
// one: somebody else appended first. Callers reload and decide again.
type ConflictError struct {
	Stream   string
	Expected ExpectedVersion
	Actual   int64
}

func (e *ConflictError) Error() string {
	exp := fmt.Sprint(int64(e.Expected))
	switch e.Expected {
	case Any:
		exp = "any"
	case NoStream:
		exp = "no stream"
	}
	return fmt.Sprintf("eventstore: stream %q: expected version %s, actual %d", e.Stream, exp, e.Actual)
}

// IsConflict reports whether err is (or wraps) a *ConflictError.
func IsConflict(err error) bool {
	var c *ConflictError
	return errors.As(err, &c)
}

// Event is the envelope of one stored event. On Append the caller fills ID
// (zero means the store assigns a UUIDv7), Type (required), Data (JSON, or
// empty) and the metadata; the store fills Stream, Version, Position, Time
// (when zero, with the current UTC time) and SchemaVersion (when zero, with
// 1). Append does not modify the caller's events. Read events carry Time in
// UTC, at least to the microsecond; Data is the same JSON value, though an
// adapter may re-encode it.
type Event struct {
	ID            uuid.UUID       `json:"id"`
	Stream        string          `json:"stream"`
	Version       int64           `json:"version"`
	Position      int64           `json:"position"`
	Type          string          `json:"type"`
	SchemaVersion int             `json:"schemaVersion"`
	Time          time.Time       `json:"time"`
	Tenant        string          `json:"tenant,omitempty"`
	CorrelationID string          `json:"correlationId,omitempty"`
	CausationID   string          `json:"causationId,omitempty"`
	TraceParent   string          `json:"traceparent,omitempty"`
	Data          json.RawMessage `json:"data"`
}

// AppendResult says where an append landed.
type AppendResult struct {
	// Version is the stream's version after the append.
	Version int64
	// Position is the global position of the last event appended (or of the
	// already stored event, for a repeated append).
	Position int64
}

// ReadOptions narrows ReadAll.
type ReadOptions struct {
	// Tenant, when set, returns only that tenant's events.
	Tenant string
	// Limit caps the number of events returned; 0 means the adapter's default
	// (at least 100).
	Limit int
}

// Store is the event store contract.
type Store interface {
	// Append writes events to the end of stream if its version matches
	// expected, all or nothing. An event whose ID is already stored in the
	// same stream is not written again: a repeated append of the same events
	// returns the stored result and no error (idempotent by event id), even
	// if the expected version is now stale. A version mismatch returns a
	// *ConflictError (check with IsConflict). An empty batch, a batch that
	// repeats only some of its ids, or an id stored in another stream is an
	// error and writes nothing.
	Append(ctx context.Context, stream string, expected ExpectedVersion, events ...Event) (AppendResult, error)
	// ReadStream returns the events of stream with version >= from, in order
	// (from <= 1 reads the whole stream). An unknown stream returns no events
	// and no error.
	ReadStream(ctx context.Context, stream string, from int64) ([]Event, error)
	// ReadAll returns events with global position > after, in global order,
	// at most opts.Limit of them. An empty result means the caller is at the
	// head.
	ReadAll(ctx context.Context, after int64, opts ReadOptions) ([]Event, error)
	// Head returns the global position of the newest event (0 when empty).
	Head(ctx context.Context) (int64, error)
	// Subscribe delivers every event with position > after, in order, exactly
	// once: first the stored ones, then new ones as they are appended. The
	// channel closes when ctx ends or the store closes; Err then says why.
	// opts.Tenant filters as in ReadAll; opts.Limit is the catch-up page size.
	// A subscriber that does not read stalls only itself, never appenders.
	Subscribe(ctx context.Context, after int64, opts ReadOptions) *Subscription
	// Close releases the store and ends its subscriptions (their Err is
	// ErrClosed).
	Close() error
}

// Subscription is a live feed of events in global order. Stop it by
// cancelling the context given to Subscribe.
type Subscription struct {
	C   <-chan Event
	err func() error
}

// NewSubscription is used by adapters to build a Subscription from a channel
// and a function that reports the terminal error after the channel closed.
func NewSubscription(c <-chan Event, err func() error) *Subscription {
	return &Subscription{C: c, err: err}
}

// Err reports why the subscription ended (nil while it runs, context errors
// when cancelled).
func (s *Subscription) Err() error {
	if s.err == nil {
		return nil
	}
	return s.err()
}
