// Package sqlitedb holds what every SQLite-backed zipship store (the event
// store, the read models) shares: how a database file is opened and how its
// schema is versioned.
//
// A store gets two handles on one file (pure Go, modernc.org/sqlite):
//
//   - one writer connection, whose transactions all begin IMMEDIATE: a write
//     transaction takes SQLite's single file write lock with its first
//     statement, so it never fails half-way on a lock upgrade, and write
//     transactions commit one after the other, even across processes. Commit
//     order is therefore the order in which rowids (the event store's global
//     positions) are assigned;
//   - a pool of query_only reader connections, which can never write.
//
// The file is in WAL mode (readers never block the writer nor each other),
// with synchronous=NORMAL and a busy timeout. The schema version is PRAGMA
// user_version, checked and set by Migrate.
package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// BusyTimeout is how long a connection waits for another connection's (or
// process's) lock before failing with SQLITE_BUSY.
const BusyTimeout = 10 * time.Second

// Options are what a store adds to the shared connection settings.
type Options struct {
	// Pragmas are extra settings for every connection, writer and readers,
	// in the driver's _pragma form: "foreign_keys(1)".
	Pragmas []string
}

// Open opens the SQLite file at path (creating it if needed) and returns its
// writer w, a single connection that never expires, and its readers r, a
// query_only pool. Both are connected before Open returns, the writer first
// since it is the one that puts the file in WAL mode. The caller closes both.
//
// path must be a plain file path: ":memory:" and "file:" URIs are refused
// because the writer and the readers are separate connections, which an
// in-memory database would not share, and '?' or '#' are refused because the
// driver splits its data source name there.
//
// Connections use journal_mode=WAL, busy_timeout and synchronous=NORMAL. In
// WAL mode NORMAL does not fsync on every commit, only at checkpoints: a
// commit survives a crash of the process (the WAL is in the OS page cache),
// but the last commits may be lost if the machine itself loses power or the
// kernel crashes.
func Open(ctx context.Context, path string, opts Options) (w, r *sql.DB, err error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, nil, errors.New("need a plain file path")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, nil, errors.New("path must not contain '?' or '#'")
	}

	if w, err = sql.Open("sqlite", dsn(path, false, opts.Pragmas)); err != nil {
		return nil, nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, nil, fmt.Errorf("writer: %w", err)
	}

	if r, err = sql.Open("sqlite", dsn(path, true, opts.Pragmas)); err != nil {
		w.Close()
		return nil, nil, err
	}
	n := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	if err := r.PingContext(ctx); err != nil {
		r.Close()
		w.Close()
		return nil, nil, fmt.Errorf("readers: %w", err)
	}
	return w, r, nil
}

// dsn builds the modernc.org/sqlite data source name for path. The writer
// begins its transactions IMMEDIATE; readers are query_only.
func dsn(path string, readOnly bool, pragmas []string) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	q.Add("_pragma", "synchronous(NORMAL)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		// journal_mode=WAL persists in the file; the writer, connected
		// first, sets it.
		q.Add("_pragma", "journal_mode(WAL)")
		q.Set("_txlock", "immediate")
	}
	return path + "?" + q.Encode()
}

// Migrate brings the schema of the database behind w (a writer from Open) to
// version, tracked in PRAGMA user_version: on a new file (user_version 0) it
// runs schema and sets user_version; at version it does nothing. A database
// at a newer version is refused, so that an older program never writes to a
// schema it does not know. Every store is still at its first version, so
// there is no upgrade path yet: any lower version is taken for a new file.
//
// It runs in one immediate transaction, so that two processes opening a new
// file at the same time do not both create the schema.
func Migrate(ctx context.Context, w *sql.DB, schema string, version int) error {
	tx, err := w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback()

	var v int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return fmt.Errorf("migrate: read schema version: %w", err)
	}
	switch {
	case v == version:
		return nil
	case v > version:
		return fmt.Errorf("migrate: database schema version %d is newer than this program's %d", v, version)
	}
	// v == 0: a new (or foreign) file.
	if _, err := tx.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("migrate: create schema: %w", err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, version)); err != nil {
		return fmt.Errorf("migrate: set schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}
