// Package sqlite is the single-node eventstore.Store adapter: one SQLite file
// (pure Go, modernc.org/sqlite) in WAL mode. It is the default store of a
// self-hosted zipship and the reference the other adapters are checked
// against with eventstoretest.
//
// Global positions are the rowid of the events table. All appends of a Store
// go through one writer connection under a semaphore, and every write
// transaction starts with BEGIN IMMEDIATE, which takes SQLite's single file
// write lock up front. Positions are therefore assigned in commit order, even
// across processes sharing the file: a transaction that takes position p
// commits (or rolls back) before any other transaction can take p+1, and a
// reader's snapshot always holds a contiguous committed prefix of positions.
// That is what lets a subscriber advance past the highest position it has
// read without ever skipping an event that commits later.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/zipship/zipship/infra/eventstore"
	"github.com/zipship/zipship/infra/sqlitedb"
)

const (
	// schemaVersion is the PRAGMA user_version this code writes and reads.
	schemaVersion = 1

	// defaultLimit and maxLimit bound one ReadAll page.
	defaultLimit = 1000
	maxLimit     = 10000

	// pollInterval is how often a subscriber looks for events appended by
	// another process on the same file, which the in-process broadcast
	// cannot see.
	pollInterval = 250 * time.Millisecond

	// subscriptionBuffer is the channel buffer of a subscription: small, so
	// a subscriber that stops reading holds only a few events in memory.
	subscriptionBuffer = 16

	// idLookupChunk caps the number of bound parameters of one idempotency
	// lookup.
	idLookupChunk = 500
)

// schema creates version 1 of the database. The UNIQUE(stream, version)
// constraint's index also serves every lookup by stream (it is an index on
// stream with version as the second column), so there is no separate index
// on stream alone. STRICT makes SQLite enforce the column types.
const schema = `
CREATE TABLE events (
	position       INTEGER PRIMARY KEY AUTOINCREMENT,
	id             TEXT    NOT NULL UNIQUE,
	stream         TEXT    NOT NULL,
	version        INTEGER NOT NULL CHECK (version >= 1),
	type           TEXT    NOT NULL,
	schema_version INTEGER NOT NULL,
	time           INTEGER NOT NULL, -- Unix nanoseconds, UTC
	tenant         TEXT    NOT NULL DEFAULT '',
	correlation_id TEXT    NOT NULL DEFAULT '',
	causation_id   TEXT    NOT NULL DEFAULT '',
	traceparent    TEXT    NOT NULL DEFAULT '',
	data           BLOB,
	UNIQUE (stream, version)
) STRICT;
CREATE INDEX events_tenant_position ON events (tenant, position);
`

const selectColumns = `position, id, stream, version, type, schema_version, time,
	tenant, correlation_id, causation_id, traceparent, data`

const insertEvent = `INSERT INTO events (id, stream, version, type, schema_version, time,
	tenant, correlation_id, causation_id, traceparent, data)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// Store is an eventstore.Store on one SQLite file. It is safe for concurrent
// use. Several Stores (in one or several processes) may share a file; each
// sees the others' events, its subscribers within one poll interval.
type Store struct {
	path string

	// wdb has exactly one connection; wsem (capacity 1) serialises appends
	// on it and lets a waiting Append honour its context.
	wdb       *sql.DB
	wsem      chan struct{}
	insert    *sql.Stmt
	streamVer *sql.Stmt

	// rdb is the read pool (query_only connections).
	rdb *sql.DB

	// notify is closed and replaced after every committed append, waking
	// every subscriber of this Store at once without ever blocking the
	// appender.
	notifyMu sync.Mutex
	notify   chan struct{}

	// closed is set once by Close; ctx is cancelled by Close and ends
	// subscriptions; subs counts running subscription goroutines. subMu
	// orders subs.Add in Subscribe against subs.Wait in Close.
	closed atomic.Bool
	ctx    context.Context
	cancel context.CancelFunc
	subMu  sync.Mutex
	subs   sync.WaitGroup
}

// Compile-time check that Store implements the contract.
var _ eventstore.Store = (*Store)(nil)

// Open opens (creating if needed) the event store in the SQLite file at
// path and brings its schema up to date. path must be a file: ":memory:"
// is refused because the writer and the readers use separate connections
// and would each see their own empty database.
//
// Connections use journal_mode=WAL (readers never block the writer nor each
// other), busy_timeout (wait, rather than fail, when another process holds
// the write lock), foreign_keys=ON, and synchronous=NORMAL. In WAL mode
// NORMAL does not fsync on every commit, only at checkpoints: a committed
// append survives a crash or kill of the process (the WAL is in the OS page
// cache), but the last commits may be lost if the machine itself loses power
// or the kernel crashes. Process-crash durability is what zipship needs; use
// a replicated adapter where machine loss matters.
func Open(path string) (*Store, error) {
	s := &Store{path: path, wsem: make(chan struct{}, 1), notify: make(chan struct{})}
	var err error
	s.wdb, s.rdb, err = sqlitedb.Open(context.Background(), path, sqlitedb.Options{Pragmas: []string{"foreign_keys(1)"}})
	if err != nil {
		return nil, fmt.Errorf("open event store %q: %w", path, err)
	}
	if err := sqlitedb.Migrate(context.Background(), s.wdb, schema, schemaVersion); err != nil {
		s.closeDBs()
		return nil, fmt.Errorf("open event store %s: %w", path, err)
	}
	if s.insert, err = s.wdb.Prepare(insertEvent); err != nil {
		s.closeDBs()
		return nil, fmt.Errorf("open event store %s: prepare insert: %w", path, err)
	}
	if s.streamVer, err = s.wdb.Prepare(`SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = ?`); err != nil {
		s.closeDBs()
		return nil, fmt.Errorf("open event store %s: prepare version: %w", path, err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// closeDBs closes the connections of a Store that failed to open.
func (s *Store) closeDBs() {
	s.rdb.Close()
	s.wdb.Close()
}

// Append implements eventstore.Store. See the interface for the contract.
// The events slice is not modified.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events ...eventstore.Event) (eventstore.AppendResult, error) {
	if s.closed.Load() {
		return eventstore.AppendResult{}, eventstore.ErrClosed
	}
	evs, callerIDs, err := prepare(stream, expected, events)
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("append %s: %w", stream, err)
	}

	select {
	case s.wsem <- struct{}{}:
	case <-ctx.Done():
		return eventstore.AppendResult{}, fmt.Errorf("append %s: %w", stream, ctx.Err())
	}
	defer func() { <-s.wsem }()
	if s.closed.Load() { // Close ran while we waited.
		return eventstore.AppendResult{}, eventstore.ErrClosed
	}

	res, wrote, err := s.appendTx(ctx, stream, expected, evs, callerIDs)
	if err != nil {
		var conflict *eventstore.ConflictError
		if errors.As(err, &conflict) {
			return eventstore.AppendResult{}, conflict
		}
		return eventstore.AppendResult{}, fmt.Errorf("append %s: %w", stream, err)
	}
	if wrote {
		s.broadcast()
	}
	return res, nil
}

// prepare validates an append and returns copies of the events with the
// defaults filled in (ID, Time, SchemaVersion), and the IDs the caller set,
// which may be repeats of stored events.
func prepare(stream string, expected eventstore.ExpectedVersion, events []eventstore.Event) ([]eventstore.Event, []uuid.UUID, error) {
	if stream == "" {
		return nil, nil, errors.New("empty stream name")
	}
	if expected != eventstore.Any && expected < 0 {
		return nil, nil, fmt.Errorf("invalid expected version %d", int64(expected))
	}
	if len(events) == 0 {
		return nil, nil, errors.New("no events")
	}
	now := time.Now().UTC()
	evs := make([]eventstore.Event, len(events))
	var callerIDs []uuid.UUID
	seen := make(map[uuid.UUID]struct{}, len(events))
	for i, e := range events {
		if e.Type == "" {
			return nil, nil, fmt.Errorf("event %d: empty type", i)
		}
		if e.SchemaVersion < 0 {
			return nil, nil, fmt.Errorf("event %d: negative schema version %d", i, e.SchemaVersion)
		}
		if e.SchemaVersion == 0 {
			e.SchemaVersion = 1
		}
		if len(e.Data) > 0 && !json.Valid(e.Data) {
			return nil, nil, fmt.Errorf("event %d (%s): data is not valid JSON", i, e.Type)
		}
		if e.ID == uuid.Nil {
			id, err := uuid.NewV7()
			if err != nil {
				return nil, nil, fmt.Errorf("event %d: new id: %w", i, err)
			}
			e.ID = id
		} else {
			callerIDs = append(callerIDs, e.ID)
		}
		if _, dup := seen[e.ID]; dup {
			return nil, nil, fmt.Errorf("event %d: id %s appears twice in the batch", i, e.ID)
		}
		seen[e.ID] = struct{}{}
		if e.Time.IsZero() {
			e.Time = now
		}
		// Unix nanoseconds cover the years 1678 to 2262.
		if y := e.Time.Year(); y < 1678 || y > 2261 {
			return nil, nil, fmt.Errorf("event %d: time %s out of range", i, e.Time)
		}
		e.Stream = stream
		evs[i] = e
	}
	return evs, callerIDs, nil
}

// appendTx runs one append in a write transaction. wrote is false for an
// idempotent repeat.
func (s *Store) appendTx(ctx context.Context, stream string, expected eventstore.ExpectedVersion, evs []eventstore.Event, callerIDs []uuid.UUID) (res eventstore.AppendResult, wrote bool, err error) {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return res, false, fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()

	// Idempotency: if the batch's caller-set ids are already stored, this is
	// a repeat of an earlier append.
	if len(callerIDs) > 0 {
		stored, err := lookupIDs(ctx, tx, callerIDs)
		if err != nil {
			return res, false, err
		}
		if len(stored) > 0 {
			for id, st := range stored {
				if st.stream != stream {
					return res, false, fmt.Errorf("event id %s is already stored in stream %q", id, st.stream)
				}
			}
			if len(stored) != len(evs) {
				return res, false, fmt.Errorf("batch repeats %d of its %d events: a repeated append must repeat the whole batch", len(stored), len(evs))
			}
			for _, st := range stored {
				res.Version = max(res.Version, st.version)
				res.Position = max(res.Position, st.position)
			}
			return res, false, tx.Commit()
		}
	}

	var current int64
	if err := tx.StmtContext(ctx, s.streamVer).QueryRowContext(ctx, stream).Scan(&current); err != nil {
		return res, false, fmt.Errorf("read version: %w", err)
	}
	if expected != eventstore.Any && int64(expected) != current {
		return res, false, &eventstore.ConflictError{Stream: stream, Expected: expected, Actual: current}
	}

	ins := tx.StmtContext(ctx, s.insert)
	for i, e := range evs {
		version := current + int64(i) + 1
		r, err := ins.ExecContext(ctx,
			e.ID.String(), stream, version, e.Type, e.SchemaVersion, e.Time.UnixNano(),
			e.Tenant, e.CorrelationID, e.CausationID, e.TraceParent, []byte(e.Data))
		if err != nil {
			return res, false, fmt.Errorf("insert %s (version %d): %w", e.ID, version, err)
		}
		pos, err := r.LastInsertId()
		if err != nil {
			return res, false, fmt.Errorf("insert %s: position: %w", e.ID, err)
		}
		res = eventstore.AppendResult{Version: version, Position: pos}
	}
	if err := tx.Commit(); err != nil {
		return eventstore.AppendResult{}, false, fmt.Errorf("commit: %w", err)
	}
	return res, true, nil
}

// storedEvent is where an already stored event id lives.
type storedEvent struct {
	stream   string
	version  int64
	position int64
}

// lookupIDs returns the stored events among ids.
func lookupIDs(ctx context.Context, tx *sql.Tx, ids []uuid.UUID) (map[uuid.UUID]storedEvent, error) {
	found := make(map[uuid.UUID]storedEvent)
	for start := 0; start < len(ids); start += idLookupChunk {
		chunk := ids[start:min(start+idLookupChunk, len(ids))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id.String()
		}
		q := `SELECT id, stream, version, position FROM events WHERE id IN (?` +
			strings.Repeat(",?", len(chunk)-1) + `)`
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("look up event ids: %w", err)
		}
		for rows.Next() {
			var idText string
			var st storedEvent
			if err := rows.Scan(&idText, &st.stream, &st.version, &st.position); err != nil {
				rows.Close()
				return nil, fmt.Errorf("look up event ids: %w", err)
			}
			id, err := uuid.Parse(idText)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("look up event ids: stored id %q: %w", idText, err)
			}
			found[id] = st
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("look up event ids: %w", err)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("look up event ids: %w", err)
		}
	}
	return found, nil
}

// broadcast wakes every subscriber of this Store.
func (s *Store) broadcast() {
	s.notifyMu.Lock()
	close(s.notify)
	s.notify = make(chan struct{})
	s.notifyMu.Unlock()
}

// wakeup returns the channel the next broadcast closes.
func (s *Store) wakeup() <-chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	return s.notify
}

// ReadStream implements eventstore.Store. It reads the stream from version
// from to its end in one query on the read pool; streams are aggregates and
// stay small.
func (s *Store) ReadStream(ctx context.Context, stream string, from int64) ([]eventstore.Event, error) {
	if s.closed.Load() {
		return nil, eventstore.ErrClosed
	}
	evs, err := s.query(ctx, `SELECT `+selectColumns+` FROM events
		WHERE stream = ? AND version >= ? ORDER BY version`, stream, from)
	if err != nil {
		return nil, s.closedOr(fmt.Errorf("read stream %s: %w", stream, err))
	}
	return evs, nil
}

// ReadAll implements eventstore.Store. opts.Limit 0 means 1000 events; larger
// limits are capped at 10000.
func (s *Store) ReadAll(ctx context.Context, after int64, opts eventstore.ReadOptions) ([]eventstore.Event, error) {
	if s.closed.Load() {
		return nil, eventstore.ErrClosed
	}
	evs, err := s.readAll(ctx, after, opts)
	if err != nil {
		return nil, s.closedOr(err)
	}
	return evs, nil
}

func (s *Store) readAll(ctx context.Context, after int64, opts eventstore.ReadOptions) ([]eventstore.Event, error) {
	limit, err := pageSize(opts.Limit)
	if err != nil {
		return nil, fmt.Errorf("read all after %d: %w", after, err)
	}
	var evs []eventstore.Event
	if opts.Tenant != "" {
		evs, err = s.query(ctx, `SELECT `+selectColumns+` FROM events
			WHERE tenant = ? AND position > ? ORDER BY position LIMIT ?`, opts.Tenant, after, limit)
	} else {
		evs, err = s.query(ctx, `SELECT `+selectColumns+` FROM events
			WHERE position > ? ORDER BY position LIMIT ?`, after, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("read all after %d: %w", after, err)
	}
	return evs, nil
}

// pageSize applies the default and the cap to a ReadOptions.Limit.
func pageSize(limit int) (int, error) {
	switch {
	case limit < 0:
		return 0, fmt.Errorf("negative limit %d", limit)
	case limit == 0:
		return defaultLimit, nil
	case limit > maxLimit:
		return maxLimit, nil
	}
	return limit, nil
}

// Head implements eventstore.Store: the highest committed position.
func (s *Store) Head(ctx context.Context) (int64, error) {
	if s.closed.Load() {
		return 0, eventstore.ErrClosed
	}
	var head int64
	if err := s.rdb.QueryRowContext(ctx, `SELECT COALESCE(MAX(position), 0) FROM events`).Scan(&head); err != nil {
		return 0, s.closedOr(fmt.Errorf("head: %w", err))
	}
	return head, nil
}

// query runs a SELECT of selectColumns on the read pool.
func (s *Store) query(ctx context.Context, q string, args ...any) ([]eventstore.Event, error) {
	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var evs []eventstore.Event
	for rows.Next() {
		var (
			e      eventstore.Event
			id     string
			nanos  int64
			data   []byte
			schema int64
		)
		if err := rows.Scan(&e.Position, &id, &e.Stream, &e.Version, &e.Type, &schema, &nanos,
			&e.Tenant, &e.CorrelationID, &e.CausationID, &e.TraceParent, &data); err != nil {
			return nil, err
		}
		if e.ID, err = uuid.Parse(id); err != nil {
			return nil, fmt.Errorf("position %d: stored id %q: %w", e.Position, id, err)
		}
		e.SchemaVersion = int(schema)
		e.Time = time.Unix(0, nanos).UTC()
		if len(data) > 0 {
			e.Data = json.RawMessage(data)
		}
		evs = append(evs, e)
	}
	return evs, rows.Err()
}

// closedOr returns eventstore.ErrClosed if the store was closed while err
// happened (typically "sql: database is closed"), else err.
func (s *Store) closedOr(err error) error {
	if s.closed.Load() {
		return eventstore.ErrClosed
	}
	return err
}

// Subscribe implements eventstore.Store. opts.Limit is the catch-up page size
// (default 1000). The subscription reads on its own goroutine: it pages
// through stored events, then waits for an append on this Store or for the
// next poll tick (250 ms), which is how it sees appends from other processes.
// Delivery blocks only the subscription, never appenders.
func (s *Store) Subscribe(ctx context.Context, after int64, opts eventstore.ReadOptions) *eventstore.Subscription {
	ch := make(chan eventstore.Event, subscriptionBuffer)
	sub := &subscription{}

	s.subMu.Lock()
	if s.closed.Load() {
		s.subMu.Unlock()
		sub.setErr(eventstore.ErrClosed)
		close(ch)
		return eventstore.NewSubscription(ch, sub.getErr)
	}
	s.subs.Add(1)
	s.subMu.Unlock()

	// sctx ends with the caller's ctx or with the store.
	sctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	go func() {
		defer s.subs.Done()
		defer close(ch)
		defer cancel()
		defer stop()
		err := s.follow(sctx, after, opts, ch)
		switch {
		case ctx.Err() != nil:
			err = ctx.Err()
		case s.closed.Load():
			err = eventstore.ErrClosed
		}
		sub.setErr(err)
	}()
	return eventstore.NewSubscription(ch, sub.getErr)
}

// follow delivers events after pos to ch until ctx ends or a read fails.
func (s *Store) follow(ctx context.Context, pos int64, opts eventstore.ReadOptions, ch chan<- eventstore.Event) error {
	limit, err := pageSize(opts.Limit)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	opts.Limit = limit
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		// Take the wakeup channel before reading, so an append that commits
		// after the read started still wakes us.
		wake := s.wakeup()
		evs, err := s.readAll(ctx, pos, opts)
		if err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		for _, e := range evs {
			select {
			case ch <- e:
				pos = e.Position
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if len(evs) == limit {
			continue // more stored events to catch up on
		}
		select {
		case <-wake:
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// subscription holds the terminal error of one subscription.
type subscription struct {
	mu  sync.Mutex
	err error
}

func (s *subscription) setErr(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

func (s *subscription) getErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends all subscriptions (their Err becomes eventstore.ErrClosed),
// waits for an append in flight, and closes the database. Every later call,
// including Close, returns eventstore.ErrClosed.
func (s *Store) Close() error {
	s.subMu.Lock()
	if s.closed.Swap(true) {
		s.subMu.Unlock()
		return eventstore.ErrClosed
	}
	s.subMu.Unlock()

	s.cancel()
	s.subs.Wait()

	// Wait for an append in flight. Appends that queue behind us find the
	// store closed once we release the semaphore.
	s.wsem <- struct{}{}
	err := errors.Join(s.insert.Close(), s.streamVer.Close(), s.rdb.Close(), s.wdb.Close())
	<-s.wsem
	if err != nil {
		return fmt.Errorf("close event store %s: %w", s.path, err)
	}
	return nil
}
