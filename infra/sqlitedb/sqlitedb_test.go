package sqlitedb

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
)

const testSchema = `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL) STRICT;`

// openT opens path and closes both handles at the end of the test.
func openT(t *testing.T, path string, opts Options) (w, r *sql.DB) {
	t.Helper()
	w, r, err := Open(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		r.Close()
		w.Close()
	})
	return w, r
}

func userVersion(t *testing.T, db *sql.DB) int {
	t.Helper()
	var v int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		t.Fatalf("read user_version: %v", err)
	}
	return v
}

func TestMigrateIsIdempotent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db.sqlite")
	w, r := openT(t, path, Options{})
	for i := range 3 {
		if err := Migrate(ctx, w, testSchema, 2); err != nil {
			t.Fatalf("Migrate #%d: %v", i+1, err)
		}
	}
	if v := userVersion(t, r); v != 2 {
		t.Fatalf("user_version = %d, want 2", v)
	}
	if _, err := w.Exec(`INSERT INTO t (v) VALUES ('x')`); err != nil {
		t.Fatalf("insert after migrate: %v", err)
	}

	// A second opening of the migrated file (a restart) keeps the data.
	w2, r2 := openT(t, path, Options{})
	if err := Migrate(ctx, w2, testSchema, 2); err != nil {
		t.Fatalf("Migrate after reopening: %v", err)
	}
	var n int
	if err := r2.QueryRow(`SELECT COUNT(*) FROM t`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows after reopening = %d, %v; want 1", n, err)
	}
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	w, r := openT(t, filepath.Join(t.TempDir(), "db.sqlite"), Options{})
	if err := Migrate(ctx, w, testSchema, 3); err != nil {
		t.Fatal(err)
	}
	err := Migrate(ctx, w, testSchema, 2)
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Migrate to an older version = %v, want a newer-schema error", err)
	}
	if v := userVersion(t, r); v != 3 {
		t.Fatalf("user_version = %d after the refusal, want 3", v)
	}
}

func TestWriterIsWALAndReadersAreQueryOnly(t *testing.T) {
	ctx := context.Background()
	w, r := openT(t, filepath.Join(t.TempDir(), "db.sqlite"), Options{Pragmas: []string{"foreign_keys(1)"}})
	if err := Migrate(ctx, w, testSchema, 1); err != nil {
		t.Fatal(err)
	}

	var mode string
	if err := w.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
	for name, db := range map[string]*sql.DB{"writer": w, "reader": r} {
		var fk int
		if err := db.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
			t.Errorf("%s: foreign_keys = %d, %v; want 1 (Options.Pragmas)", name, fk, err)
		}
	}

	if _, err := r.Exec(`INSERT INTO t (v) VALUES ('x')`); err == nil || !strings.Contains(err.Error(), "readonly") {
		t.Fatalf("insert through a reader = %v, want a readonly error", err)
	}
	var n int
	if err := r.QueryRow(`SELECT COUNT(*) FROM t`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows = %d, %v; want 0", n, err)
	}
}

func TestOpenRefusesNonFilePaths(t *testing.T) {
	for _, p := range []string{"", ":memory:", "file::memory:?cache=shared", "a?b", "a#b"} {
		if w, r, err := Open(context.Background(), p, Options{}); err == nil {
			r.Close()
			w.Close()
			t.Errorf("Open(%q): no error", p)
		}
	}
}
