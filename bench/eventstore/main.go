// Command eventstore benchmarks zipship's SQLite event store
// (infra/eventstore/sqlite) against raw modernc.org/sqlite, to show what the
// store's guarantees cost on top of SQLite itself. Run it as
// `go run ./bench/eventstore` (`make bench`).
//
// Both sides use temp files with the same PRAGMAs (journal_mode=WAL,
// synchronous=NORMAL, busy_timeout) and one writer connection. The baseline
// is a bare table with the store's columns (position is the rowid; no
// AUTOINCREMENT, no UNIQUE constraints, no tenant index, not STRICT), written
// with a prepared INSERT in plain transactions and read with a plain
// `SELECT ... WHERE position > ? ORDER BY position LIMIT 1000` loop. The
// ratio therefore covers everything the store adds: expected-version check,
// idempotency lookup by id, id and version indexes, AUTOINCREMENT, BEGIN
// IMMEDIATE, envelope encoding and decoding, and for subscriptions the
// channel delivery.
//
// Cases (rows), each run -runs times, zipship and baseline interleaved (the
// side that goes first alternates from run to run):
//   - append, 1 event per call: -single events, one Append (one
//     transaction) each, round-robin over 50 streams with an exact expected
//     version; a fresh file per run.
//   - append, 100 events per call: -batch events, 100 per Append; a fresh
//     file per run.
//   - replay: ReadAll from position 0 in pages of 1000 over a store of
//     -replay events, filled once before any timing.
//   - subscribe catch-up: the time a Subscribe from 0 takes to deliver all
//     -replay events of the same store.
//
// Events are BuildStepFinished envelopes as the app builds them (caller-set
// UUIDv7 ids, tenant, correlation, causation and traceparent set, about 300
// bytes of JSON), built before the timer starts. The program prints the
// machine, the sizes and one table of medians, and exits non-zero on any
// error, including a store that does not hold or return the expected number
// of events.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	_ "modernc.org/sqlite" // registers the "sqlite" driver for the baseline

	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/eventstore"
	"github.com/zipship/zipship/infra/eventstore/sqlite"
)

const (
	// streamCount streams receive the appends round-robin.
	streamCount = 50
	// tenantCount tenants own the streams (stream k belongs to tenant k mod
	// tenantCount).
	tenantCount = 10
	// batchSize is the number of events per call of the batch case and of
	// the fixture fill.
	batchSize = 100
	// pageSize is the replay and catch-up page.
	pageSize = 1000
)

// config is the command line.
type config struct {
	single, batch, replay, runs int
	// verbose prints every run's rate below the table.
	verbose bool
}

func main() {
	var cfg config
	flag.IntVar(&cfg.single, "single", 5000, "events appended one per call")
	flag.IntVar(&cfg.batch, "batch", 50000, "events appended 100 per call (a multiple of 100)")
	flag.IntVar(&cfg.replay, "replay", 100000, "events in the store read by replay and catch-up")
	flag.IntVar(&cfg.runs, "runs", 3, "interleaved runs of each case; the table shows the median")
	flag.BoolVar(&cfg.verbose, "v", false, "also print every run's events/s")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/eventstore:", err)
		os.Exit(1)
	}
}

// validate checks the sizes.
func (c config) validate() error {
	switch {
	case c.single < 1:
		return errors.New("-single must be at least 1")
	case c.batch < batchSize || c.batch%batchSize != 0:
		return fmt.Errorf("-batch must be a positive multiple of %d", batchSize)
	case c.replay < 1:
		return errors.New("-replay must be at least 1")
	case c.runs < 1:
		return errors.New("-runs must be at least 1")
	}
	return nil
}

// run prepares the events and the read fixture, measures every case and
// prints the table.
func run(ctx context.Context, cfg config, out io.Writer) (err error) {
	if err := cfg.validate(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "zipship-bench-eventstore-")
	if err != nil {
		return fmt.Errorf("create temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)

	single, err := makeEvents(cfg.single, 1)
	if err != nil {
		return err
	}
	batch, err := makeEvents(cfg.batch, batchSize)
	if err != nil {
		return err
	}
	fx, err := openFixture(ctx, tmp, cfg.replay)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, fx.close()) }()

	if err := printHeader(ctx, out, cfg, fx, batch); err != nil {
		return err
	}
	cases := []benchCase{
		appendCase("append, 1 event per call", tmp, single, 1),
		appendCase("append, 100 events per call", tmp, batch, batchSize),
		readCase("replay (ReadAll pages of 1000)", fx, cfg.replay, subject.replay),
		readCase("subscribe catch-up", fx, cfg.replay, subject.catchUp),
	}
	res, err := measure(ctx, cases, cfg.runs)
	if err != nil {
		return err
	}
	printTable(out, cases, res)
	if cfg.verbose {
		printRuns(out, cases, res)
	}
	return nil
}

// makeEvents builds n BuildStepFinished envelopes the way app.Envelope does,
// with caller-set ids and metadata. Calls of perCall consecutive events go
// to one stream, streams taken round-robin; Stream is set so that both sides
// know where each event goes (Append overwrites it with its stream
// argument, which is the same).
func makeEvents(n, perCall int) ([]eventstore.Event, error) {
	builds := make([]string, streamCount)
	for k := range builds {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("build id: %w", err)
		}
		builds[k] = id.String()
	}
	steps := []domain.Step{domain.StepDownload, domain.StepExtract, domain.StepInstall, domain.StepBuild, domain.StepExport}
	at := time.Now().UTC()
	evs := make([]eventstore.Event, n)
	for i := range evs {
		k := (i / perCall) % streamCount
		e, err := makeEvent(builds[k], k, steps[i%len(steps)], i, at.Add(time.Duration(i)*time.Millisecond))
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		evs[i] = e
	}
	return evs, nil
}

// makeEvent builds one envelope of build buildID (stream index k).
func makeEvent(buildID string, k int, step domain.Step, i int, at time.Time) (eventstore.Event, error) {
	d := domain.BuildStepFinished{
		BuildID:    buildID,
		Attempt:    1,
		Step:       step,
		DurationMs: int64(37 + i%9000),
		Detail:     "vite v5.4.2 building for production; 1342 modules transformed; dist/index.html 0.46 kB; dist/assets/index-4f8a1c2e.js 142.31 kB; dist/assets/index-9b1e.css 18.02 kB",
		At:         at,
	}
	data, err := json.Marshal(d)
	if err != nil {
		return eventstore.Event{}, fmt.Errorf("encode: %w", err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return eventstore.Event{}, fmt.Errorf("event id: %w", err)
	}
	return eventstore.Event{
		ID:            id,
		Stream:        domain.BuildStream(buildID),
		Type:          d.EventType(),
		SchemaVersion: domain.SchemaVersion,
		Tenant:        fmt.Sprintf("tenant-%02d", k%tenantCount),
		CorrelationID: "req-" + buildID,
		CausationID:   buildID,
		TraceParent:   fmt.Sprintf("00-%032x-%016x-01", i+1, k+1),
		Data:          data,
	}, nil
}

// subject is one side of the comparison: the zipship store or the raw
// SQLite baseline.
type subject interface {
	// appendAll appends evs, perCall consecutive events (one stream) per
	// transaction.
	appendAll(ctx context.Context, evs []eventstore.Event, perCall int) error
	// replay reads every event from position 0 in pages of pageSize and
	// fails unless it read want events in order.
	replay(ctx context.Context, want int) error
	// catchUp delivers every event from position 0 the way a subscriber
	// catching up receives them and fails unless it got want in order.
	catchUp(ctx context.Context, want int) error
	// count returns the number of stored events.
	count(ctx context.Context) (int, error)
	// Close releases the file.
	Close() error
}

// side names the two subjects; sides[i] opens side i.
var sides = [2]struct {
	name string
	open func(ctx context.Context, path string) (subject, error)
}{
	{"zipship", openZipship},
	{"baseline", openRaw},
}

// zipshipSubject is the event store under test.
type zipshipSubject struct {
	s *sqlite.Store
}

// openZipship opens the zipship store at path.
func openZipship(_ context.Context, path string) (subject, error) {
	s, err := sqlite.Open(path)
	if err != nil {
		return nil, fmt.Errorf("zipship: %w", err)
	}
	return zipshipSubject{s}, nil
}

// appendAll appends with Append and an exact expected version, tracking each
// stream's version from the results as the app does.
func (z zipshipSubject) appendAll(ctx context.Context, evs []eventstore.Event, perCall int) error {
	versions := make(map[string]int64, streamCount)
	for start := 0; start < len(evs); start += perCall {
		call := evs[start:min(start+perCall, len(evs))]
		stream := call[0].Stream
		res, err := z.s.Append(ctx, stream, eventstore.Exact(versions[stream]), call...)
		if err != nil {
			return fmt.Errorf("zipship: append at event %d: %w", start, err)
		}
		versions[stream] = res.Version
	}
	return nil
}

// replay pages through ReadAll.
func (z zipshipSubject) replay(ctx context.Context, want int) error {
	var after int64
	n := 0
	for {
		evs, err := z.s.ReadAll(ctx, after, eventstore.ReadOptions{Limit: pageSize})
		if err != nil {
			return fmt.Errorf("zipship: read all after %d: %w", after, err)
		}
		if len(evs) == 0 {
			return checkCount("zipship replay", n, want)
		}
		for _, e := range evs {
			if e.Position <= after {
				return fmt.Errorf("zipship replay: position %d after %d", e.Position, after)
			}
			after = e.Position
		}
		n += len(evs)
	}
}

// catchUp subscribes from 0 and stops at the want-th event.
func (z zipshipSubject) catchUp(ctx context.Context, want int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub := z.s.Subscribe(ctx, 0, eventstore.ReadOptions{Limit: pageSize})
	err := receive(sub, want)
	cancel()
	for range sub.C {
		// Drain until the subscription's goroutine has ended.
	}
	return err
}

// receive reads want events from sub in increasing position order.
func receive(sub *eventstore.Subscription, want int) error {
	var last int64
	for n := 0; n < want; n++ {
		e, ok := <-sub.C
		if !ok {
			return fmt.Errorf("zipship catch-up: subscription ended after %d of %d events: %w", n, want, sub.Err())
		}
		if e.Position <= last {
			return fmt.Errorf("zipship catch-up: position %d after %d", e.Position, last)
		}
		last = e.Position
	}
	return nil
}

// count is the head position, which equals the number of events in a store
// filled by this program (SQLite positions have no gaps without rollbacks).
func (z zipshipSubject) count(ctx context.Context) (int, error) {
	head, err := z.s.Head(ctx)
	if err != nil {
		return 0, fmt.Errorf("zipship: head: %w", err)
	}
	return int(head), nil
}

// Close closes the store.
func (z zipshipSubject) Close() error { return z.s.Close() }

// rawSchema is the baseline's bare table: the store's columns, nothing else.
const rawSchema = `CREATE TABLE events (
	position       INTEGER PRIMARY KEY,
	id             TEXT,
	stream         TEXT,
	version        INTEGER,
	type           TEXT,
	schema_version INTEGER,
	time           INTEGER,
	tenant         TEXT,
	correlation_id TEXT,
	causation_id   TEXT,
	traceparent    TEXT,
	data           BLOB
)`

// rawInsert and rawSelect are the baseline's two statements.
const (
	rawInsert = `INSERT INTO events (id, stream, version, type, schema_version, time,
	tenant, correlation_id, causation_id, traceparent, data)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	rawSelect = `SELECT position, id, stream, version, type, schema_version, time,
	tenant, correlation_id, causation_id, traceparent, data
	FROM events WHERE position > ? ORDER BY position LIMIT ?`
)

// rawSubject is the baseline: modernc.org/sqlite through database/sql on
// one connection.
type rawSubject struct {
	db     *sql.DB
	insert *sql.Stmt
	read   *sql.Stmt
}

// rawDSN sets the store's PRAGMAs.
func rawDSN(path string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	return path + "?" + q.Encode()
}

// openRaw creates the baseline table at path and prepares its statements.
func openRaw(ctx context.Context, path string) (_ subject, err error) {
	db, err := sql.Open("sqlite", rawDSN(path))
	if err != nil {
		return nil, fmt.Errorf("baseline: open %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := checkWAL(ctx, db); err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, rawSchema); err != nil {
		return nil, fmt.Errorf("baseline: create table: %w", err)
	}
	r := rawSubject{db: db}
	if r.insert, err = db.PrepareContext(ctx, rawInsert); err != nil {
		return nil, fmt.Errorf("baseline: prepare insert: %w", err)
	}
	if r.read, err = db.PrepareContext(ctx, rawSelect); err != nil {
		return nil, fmt.Errorf("baseline: prepare select: %w", err)
	}
	return r, nil
}

// checkWAL makes sure the DSN's PRAGMAs took effect.
func checkWAL(ctx context.Context, db *sql.DB) error {
	var mode string
	var sync int
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("baseline: journal mode: %w", err)
	}
	if err := db.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil {
		return fmt.Errorf("baseline: synchronous: %w", err)
	}
	if mode != "wal" || sync != 1 {
		return fmt.Errorf("baseline: journal_mode=%s synchronous=%d, want wal and 1 (NORMAL)", mode, sync)
	}
	return nil
}

// appendAll inserts perCall events per transaction with the prepared
// INSERT, numbering versions per stream without checking anything.
func (r rawSubject) appendAll(ctx context.Context, evs []eventstore.Event, perCall int) error {
	versions := make(map[string]int64, streamCount)
	for start := 0; start < len(evs); start += perCall {
		call := evs[start:min(start+perCall, len(evs))]
		stream := call[0].Stream
		if err := r.insertTx(ctx, call, versions[stream]); err != nil {
			return fmt.Errorf("baseline: append at event %d: %w", start, err)
		}
		versions[stream] += int64(len(call))
	}
	return nil
}

// insertTx inserts evs in one transaction, after version current.
func (r rawSubject) insertTx(ctx context.Context, evs []eventstore.Event, current int64) (err error) {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	ins := tx.StmtContext(ctx, r.insert)
	now := time.Now().UnixNano()
	for i, e := range evs {
		if _, err := ins.ExecContext(ctx, e.ID.String(), e.Stream, current+int64(i)+1, e.Type,
			e.SchemaVersion, now, e.Tenant, e.CorrelationID, e.CausationID, e.TraceParent,
			[]byte(e.Data)); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// replay is the plain SELECT loop: every column scanned into reused
// variables, nothing decoded or kept.
func (r rawSubject) replay(ctx context.Context, want int) error {
	var after int64
	n := 0
	for {
		got, last, err := r.page(ctx, after)
		if err != nil {
			return fmt.Errorf("baseline: read after %d: %w", after, err)
		}
		if got == 0 {
			return checkCount("baseline replay", n, want)
		}
		n += got
		after = last
	}
}

// catchUp is the same plain loop as replay: the baseline has no
// subscriptions.
func (r rawSubject) catchUp(ctx context.Context, want int) error {
	return r.replay(ctx, want)
}

// page reads one page after position after and returns how many rows it
// read and the last position.
func (r rawSubject) page(ctx context.Context, after int64) (n int, last int64, err error) {
	rows, err := r.read.QueryContext(ctx, after, pageSize)
	if err != nil {
		return 0, 0, err
	}
	defer rows.Close()
	var (
		pos, version, schema, nanos                        int64
		id, stream, typ, tenant, corr, causation, traceCtx string
		data                                               []byte
	)
	last = after
	for rows.Next() {
		if err := rows.Scan(&pos, &id, &stream, &version, &typ, &schema, &nanos,
			&tenant, &corr, &causation, &traceCtx, &data); err != nil {
			return 0, 0, err
		}
		if pos <= last {
			return 0, 0, fmt.Errorf("position %d after %d", pos, last)
		}
		last = pos
		n++
	}
	return n, last, rows.Err()
}

// count counts the rows.
func (r rawSubject) count(ctx context.Context) (int, error) {
	var n int
	if err := r.db.QueryRowContext(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil {
		return 0, fmt.Errorf("baseline: count: %w", err)
	}
	return n, nil
}

// Close closes the statements and the database.
func (r rawSubject) Close() error {
	return errors.Join(r.insert.Close(), r.read.Close(), r.db.Close())
}

// checkCount fails unless got equals want.
func checkCount(what string, got, want int) error {
	if got != want {
		return fmt.Errorf("%s: %d events, want %d", what, got, want)
	}
	return nil
}

// fixture holds the two filled stores the read cases share.
type fixture [2]subject

// openFixture creates and fills one store per side with n events, 100 per
// call, before any timing.
func openFixture(ctx context.Context, tmp string, n int) (fixture, error) {
	evs, err := makeEvents(n, batchSize)
	if err != nil {
		return fixture{}, err
	}
	var fx fixture
	for i, sd := range sides {
		s, err := fill(ctx, sd.open, filepath.Join(tmp, "replay-"+sd.name+".db"), evs)
		if err != nil {
			return fixture{}, errors.Join(fmt.Errorf("fill %s store: %w", sd.name, err), fx.close())
		}
		fx[i] = s
	}
	return fx, nil
}

// fill opens a subject at path and appends evs to it.
func fill(ctx context.Context, open func(context.Context, string) (subject, error), path string, evs []eventstore.Event) (subject, error) {
	s, err := open(ctx, path)
	if err != nil {
		return nil, err
	}
	if err := appendAndCheck(ctx, s, evs, batchSize); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

// appendAndCheck appends evs and checks that the subject holds them all.
func appendAndCheck(ctx context.Context, s subject, evs []eventstore.Event, perCall int) error {
	if err := s.appendAll(ctx, evs, perCall); err != nil {
		return err
	}
	n, err := s.count(ctx)
	if err != nil {
		return err
	}
	return checkCount("stored", n, len(evs))
}

// close closes the fixture's open stores.
func (fx fixture) close() error {
	var errs []error
	for _, s := range fx {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}

// benchCase is one row of the table.
type benchCase struct {
	name   string
	events int
	// once runs the case one time on side and returns the timed duration.
	once func(ctx context.Context, side, run int) (time.Duration, error)
}

// appendCase appends evs perCall per call to a fresh file of each side per
// run; only the appends are timed, not opening, checking or closing.
func appendCase(name, tmp string, evs []eventstore.Event, perCall int) benchCase {
	once := func(ctx context.Context, side, run int) (d time.Duration, err error) {
		path := filepath.Join(tmp, fmt.Sprintf("append%d-%s-%d.db", perCall, sides[side].name, run))
		s, err := sides[side].open(ctx, path)
		if err != nil {
			return 0, err
		}
		defer func() { err = errors.Join(err, s.Close(), removeDB(path)) }()
		start := time.Now()
		if err := s.appendAll(ctx, evs, perCall); err != nil {
			return 0, err
		}
		d = time.Since(start)
		n, err := s.count(ctx)
		if err != nil {
			return 0, err
		}
		return d, checkCount("stored", n, len(evs))
	}
	return benchCase{name: name, events: len(evs), once: once}
}

// readCase times read(subject, n) on the fixture's store of each side.
func readCase(name string, fx fixture, n int, read func(subject, context.Context, int) error) benchCase {
	once := func(ctx context.Context, side, _ int) (time.Duration, error) {
		start := time.Now()
		if err := read(fx[side], ctx, n); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}
	return benchCase{name: name, events: n, once: once}
}

// removeDB removes an SQLite file and its WAL and shared-memory files.
func removeDB(path string) error {
	var errs []error
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// results holds, per case, the durations of each side.
type results [][2][]time.Duration

// measure runs every case runs times, alternating which side goes first.
func measure(ctx context.Context, cases []benchCase, runs int) (results, error) {
	res := make(results, len(cases))
	for run := range runs {
		for ci, c := range cases {
			for j := range sides {
				side := (j + run) % len(sides)
				d, err := c.once(ctx, side, run)
				if err != nil {
					return nil, fmt.Errorf("%s, %s, run %d: %w", c.name, sides[side].name, run+1, err)
				}
				res[ci][side] = append(res[ci][side], d)
			}
		}
	}
	return res, nil
}

// medianRate is events per second at the median duration.
func medianRate(events int, ds []time.Duration) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + m) / 2
	}
	return float64(events) / m.Seconds()
}

// printHeader prints the machine, the SQLite version and the sizes.
func printHeader(ctx context.Context, out io.Writer, cfg config, fx fixture, sample []eventstore.Event) error {
	raw, ok := fx[1].(rawSubject)
	if !ok {
		return fmt.Errorf("fixture side 1 is %T, want the baseline", fx[1])
	}
	version, err := sqliteVersion(ctx, raw.db)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "machine: %s, %d CPUs (GOMAXPROCS %d), %s/%s, %s, SQLite %s (modernc.org/sqlite)\n",
		cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version(), version)
	fmt.Fprintf(out, "sizes: single %d events, batch %d events (%d per call), replay/catch-up store %d events (pages of %d)\n",
		cfg.single, cfg.batch, batchSize, cfg.replay, pageSize)
	fmt.Fprintf(out, "events: %s, %.0f B JSON payload on average, %d streams round-robin, %d tenants, WAL + synchronous=NORMAL, temp files\n",
		sample[0].Type, avgDataSize(sample), streamCount, tenantCount)
	fmt.Fprintf(out, "baseline: raw modernc.org/sqlite, bare table of the same columns, same PRAGMAs; events/s = median of %d interleaved runs\n\n", cfg.runs)
	return nil
}

// sqliteVersion asks the library its version.
func sqliteVersion(ctx context.Context, db *sql.DB) (string, error) {
	var v string
	if err := db.QueryRowContext(ctx, `SELECT sqlite_version()`).Scan(&v); err != nil {
		return "", fmt.Errorf("sqlite version: %w", err)
	}
	return v, nil
}

// cpuModel is the first "model name" of /proc/cpuinfo, or "unknown CPU".
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// avgDataSize is the mean payload size of evs in bytes.
func avgDataSize(evs []eventstore.Event) float64 {
	total := 0
	for _, e := range evs {
		total += len(e.Data)
	}
	return float64(total) / float64(len(evs))
}

// printTable prints one row per case.
func printTable(out io.Writer, cases []benchCase, res results) {
	width := len("case")
	for _, c := range cases {
		width = max(width, len(c.name))
	}
	fmt.Fprintf(out, "%-*s  %18s  %18s  %7s\n", width, "case", "zipship events/s", "baseline events/s", "ratio")
	for i, c := range cases {
		z := medianRate(c.events, res[i][0])
		b := medianRate(c.events, res[i][1])
		fmt.Fprintf(out, "%-*s  %18s  %18s  %7.2f\n", width, c.name, group(z), group(b), z/b)
	}
}

// group formats a rate as an integer with thousands separators
// ("1,234,567").
func group(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// printRuns prints each run's events/s, per case and side, in run order.
func printRuns(out io.Writer, cases []benchCase, res results) {
	fmt.Fprintln(out, "\nper run (events/s):")
	for i, c := range cases {
		for side, sd := range sides {
			rates := make([]string, len(res[i][side]))
			for r, d := range res[i][side] {
				rates[r] = group(float64(c.events) / d.Seconds())
			}
			fmt.Fprintf(out, "  %s, %s: %s\n", c.name, sd.name, strings.Join(rates, " "))
		}
	}
}
