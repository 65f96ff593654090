// Package projections keeps zipship's read models: build status with its
// steps, deployment history and each tenant's live pointer. They are derived
// from the event store and can be thrown away and rebuilt from position 0 at
// any time (Rebuild); nothing here is a source of truth.
//
// The read models live in their own SQLite file (modernc.org/sqlite, WAL).
// Every write transaction stores the read-model changes and the checkpoint
// (the global position of the last applied event) together, so an event's
// effect is applied exactly once even though the event store delivers at
// least once: an event whose position is <= the checkpoint is skipped, and
// replaying any range of events is harmless.
//
// A Projector follows an event store subscription and feeds a DB; the
// gateway answers queries from the DB and calls Projector.WaitFor after an
// append so that a client's next read sees its own write.
package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/zipship/zipship/infra/sqlitedb"
)

// Sentinel errors. Compare with errors.Is: they are usually wrapped.
var (
	// ErrNotFound is returned by queries when the row is absent or belongs
	// to another tenant (the two are indistinguishable on purpose, so that
	// other tenants' ids do not leak).
	ErrNotFound = errors.New("projections: not found")
	// ErrClosed is returned by a closed DB, and by WaitFor when the DB is
	// closed while waiting.
	ErrClosed = errors.New("projections: closed")
)

const (
	// schemaVersion is the PRAGMA user_version this code writes and reads.
	schemaVersion = 1

	// checkpointName is the checkpoint row of this DB's read models. All of
	// them are updated in one transaction, so they share one checkpoint.
	checkpointName = "projections"
)

// schema creates version 1 of the read models. Times are Unix nanoseconds
// (UTC), NULL when unknown. STRICT makes SQLite enforce the column types.
const schema = `
CREATE TABLE builds (
	id              TEXT    NOT NULL PRIMARY KEY,
	tenant          TEXT    NOT NULL,
	version         TEXT    NOT NULL,
	status          TEXT    NOT NULL CHECK (status IN ('pending', 'building', 'success', 'failed')),
	requested_by    TEXT    NOT NULL,
	requested_at    INTEGER,
	started_at      INTEGER,
	finished_at     INTEGER,
	attempt         INTEGER NOT NULL DEFAULT 0,
	error_step      TEXT    NOT NULL DEFAULT '',
	error           TEXT    NOT NULL DEFAULT '',
	retryable       INTEGER NOT NULL DEFAULT 0,
	manifest_key    TEXT    NOT NULL DEFAULT '',
	files           INTEGER NOT NULL DEFAULT 0,
	bytes           INTEGER NOT NULL DEFAULT 0,
	duration_ms     INTEGER NOT NULL DEFAULT 0,
	source_size     INTEGER NOT NULL DEFAULT 0,
	source_sha256   TEXT    NOT NULL DEFAULT '',
	env_names       TEXT    NOT NULL DEFAULT '[]', -- JSON array of names
	config          TEXT    NOT NULL DEFAULT '{}', -- JSON domain.BuildConfig
	idempotency_key TEXT    NOT NULL DEFAULT '',
	position        INTEGER NOT NULL -- of the BuildRequested event
) STRICT;
CREATE INDEX builds_tenant_position ON builds (tenant, position);
CREATE INDEX builds_idempotency ON builds (tenant, requested_by, idempotency_key)
	WHERE idempotency_key != '';

CREATE TABLE build_steps (
	build_id    TEXT    NOT NULL,
	attempt     INTEGER NOT NULL,
	step        TEXT    NOT NULL,
	status      TEXT    NOT NULL CHECK (status IN ('running', 'done', 'failed')),
	started_at  INTEGER,
	finished_at INTEGER,
	duration_ms INTEGER NOT NULL DEFAULT 0,
	detail      TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (build_id, attempt, step)
) STRICT;

CREATE TABLE deployments (
	seq      INTEGER PRIMARY KEY AUTOINCREMENT,
	tenant   TEXT    NOT NULL,
	build_id TEXT    NOT NULL,
	version  TEXT    NOT NULL,
	kind     TEXT    NOT NULL CHECK (kind IN ('activated', 'rolled_back')),
	actor    TEXT    NOT NULL,
	at       INTEGER,
	previous TEXT    NOT NULL DEFAULT '',
	position INTEGER NOT NULL
) STRICT;
CREATE INDEX deployments_tenant_seq ON deployments (tenant, seq);

CREATE TABLE pointers (
	tenant       TEXT    NOT NULL PRIMARY KEY,
	build_id     TEXT    NOT NULL,
	version      TEXT    NOT NULL,
	manifest_key TEXT    NOT NULL,
	updated_at   INTEGER
) STRICT;

CREATE TABLE checkpoint (
	name     TEXT    NOT NULL PRIMARY KEY,
	position INTEGER NOT NULL
) STRICT;
INSERT INTO checkpoint (name, position) VALUES ('projections', 0);
`

// tables lists every read-model table with the ORDER BY that makes Dump
// deterministic (its primary key).
var tables = []struct{ name, order string }{
	{"builds", "id"},
	{"build_steps", "build_id, attempt, step"},
	{"deployments", "seq"},
	{"pointers", "tenant"},
	{"checkpoint", "name"},
}

// DB is the read-model database: one SQLite file with one writer connection
// (every Apply, ApplyBatch and Reset is one transaction on it) and a pool of
// query_only reader connections for the queries. It is safe for concurrent
// use.
type DB struct {
	path string
	w    *sql.DB // exactly one connection
	r    *sql.DB // readers

	// mu guards cp and changed. cp mirrors the committed checkpoint of this
	// handle; changed is closed and replaced whenever cp moves, waking every
	// WaitFor at once.
	mu      sync.Mutex
	cp      int64
	changed chan struct{}

	// done is closed by Close.
	closeOnce sync.Once
	done      chan struct{}
}

// Open opens (creating if needed) the read-model database in the SQLite file
// at path and brings its schema up to date. path must be a plain file path:
// the writer and the readers use separate connections, which an in-memory
// database would not share.
//
// Connections use journal_mode=WAL (queries never block the projector nor
// each other), busy_timeout, and synchronous=NORMAL: a crash of the machine
// may lose the last commits, which is harmless here because the checkpoint
// is lost with them and the events are applied again.
func Open(path string) (*DB, error) {
	db := &DB{path: path, changed: make(chan struct{}), done: make(chan struct{})}

	ctx := context.Background()
	var err error
	if db.w, db.r, err = sqlitedb.Open(ctx, path, sqlitedb.Options{}); err != nil {
		return nil, fmt.Errorf("open read models %q: %w", path, err)
	}
	// A future incompatible schema can simply drop the tables and let the
	// projector rebuild them from the events.
	if err := sqlitedb.Migrate(ctx, db.w, schema, schemaVersion); err != nil {
		db.Close()
		return nil, fmt.Errorf("open read models %s: %w", path, err)
	}
	if err := db.w.QueryRowContext(ctx, `SELECT position FROM checkpoint WHERE name = ?`, checkpointName).Scan(&db.cp); err != nil {
		db.Close()
		return nil, fmt.Errorf("open read models %s: read checkpoint: %w", path, err)
	}
	return db, nil
}

// Close closes the database and wakes every WaitFor (which then returns
// ErrClosed). Later calls return ErrClosed.
func (db *DB) Close() error {
	first := false
	db.closeOnce.Do(func() {
		first = true
		close(db.done)
	})
	if !first {
		return ErrClosed
	}
	if err := errors.Join(db.r.Close(), db.w.Close()); err != nil {
		return fmt.Errorf("close read models %s: %w", db.path, err)
	}
	return nil
}

// isClosed reports whether Close was called.
func (db *DB) isClosed() bool {
	select {
	case <-db.done:
		return true
	default:
		return false
	}
}

// Checkpoint returns the position of the last applied event (0 for an empty
// read model), as committed in the database.
func (db *DB) Checkpoint(ctx context.Context) (int64, error) {
	if db.isClosed() {
		return 0, ErrClosed
	}
	var cp int64
	if err := db.r.QueryRowContext(ctx, `SELECT position FROM checkpoint WHERE name = ?`, checkpointName).Scan(&cp); err != nil {
		return 0, fmt.Errorf("read checkpoint: %w", err)
	}
	return cp, nil
}

// setCheckpoint publishes a committed checkpoint to waiters.
func (db *DB) setCheckpoint(cp int64) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if cp == db.cp {
		return
	}
	db.cp = cp
	close(db.changed)
	db.changed = make(chan struct{})
}

// watch returns the committed checkpoint and a channel that is closed when
// it next changes.
func (db *DB) watch() (int64, <-chan struct{}) {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.cp, db.changed
}

// Reset empties every read model and sets the checkpoint to 0, in one
// transaction, ready for a Rebuild. Do not run it while a Projector is
// feeding the same DB: the projector would go on from its own position.
func (db *DB) Reset(ctx context.Context) error {
	if db.isClosed() {
		return ErrClosed
	}
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("reset: begin: %w", err)
	}
	defer tx.Rollback()
	for _, t := range tables {
		if t.name == "checkpoint" {
			continue
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+t.name); err != nil {
			return fmt.Errorf("reset: empty %s: %w", t.name, err)
		}
	}
	// Restart the AUTOINCREMENT of deployments.seq, so that a rebuilt
	// history numbers its rows exactly like a fresh database.
	if _, err := tx.ExecContext(ctx, `DELETE FROM sqlite_sequence WHERE name = 'deployments'`); err != nil {
		return fmt.Errorf("reset: restart deployment sequence: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE checkpoint SET position = 0 WHERE name = ?`, checkpointName); err != nil {
		return fmt.Errorf("reset: checkpoint: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("reset: commit: %w", err)
	}
	db.setCheckpoint(0)
	return nil
}

// Dump returns every table's rows, keyed by table name, each row a column →
// value map (integers as int64, text as string, NULL as nil), in primary-key
// order. It reads one consistent snapshot. It exists to compare two read
// models (a live one and a rebuilt one) and for debugging; it loads
// everything into memory.
func (db *DB) Dump(ctx context.Context) (map[string][]map[string]any, error) {
	if db.isClosed() {
		return nil, ErrClosed
	}
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("dump: begin: %w", err)
	}
	defer tx.Rollback()
	out := make(map[string][]map[string]any, len(tables))
	for _, t := range tables {
		rows, err := dumpTable(ctx, tx, t.name, t.order)
		if err != nil {
			return nil, fmt.Errorf("dump %s: %w", t.name, err)
		}
		out[t.name] = rows
	}
	return out, nil
}

func dumpTable(ctx context.Context, tx *sql.Tx, table, order string) ([]map[string]any, error) {
	rows, err := tx.QueryContext(ctx, `SELECT * FROM `+table+` ORDER BY `+order)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	out := []map[string]any{}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := make(map[string]any, len(cols))
		for i, c := range cols {
			if b, ok := vals[i].([]byte); ok {
				vals[i] = string(b)
			}
			row[c] = vals[i]
		}
		out = append(out, row)
	}
	return out, rows.Err()
}
