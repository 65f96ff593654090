package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/eventstore"
)

// Step statuses of the build_steps read model.
const (
	// StepRunning is a step that started and has not ended (yet).
	StepRunning = "running"
	// StepDone is a step that finished successfully.
	StepDone = "done"
	// StepFailed is a step whose attempt failed while it ran, or which a
	// new attempt abandoned.
	StepFailed = "failed"
)

// Deployment kinds of the deployments read model.
const (
	// KindActivated is a pointer move to a newly built version.
	KindActivated = "activated"
	// KindRolledBack is a pointer move back to an earlier version.
	KindRolledBack = "rolled_back"
)

// Apply applies one event in one transaction, together with the checkpoint.
// An event at or below the checkpoint is skipped (it was applied before), so
// calling Apply again with the same event changes nothing.
func (db *DB) Apply(ctx context.Context, ev eventstore.Event) error {
	_, err := db.applyBatch(ctx, []eventstore.Event{ev})
	return err
}

// ApplyBatch applies events, in the order given (global position order), in
// one transaction with the checkpoint: all or nothing. Events at or below
// the checkpoint are skipped. Batching is what makes catch-up and Rebuild
// fast: one commit per batch instead of one per event.
func (db *DB) ApplyBatch(ctx context.Context, evs []eventstore.Event) error {
	_, err := db.applyBatch(ctx, evs)
	return err
}

// applyBatch is ApplyBatch returning the number of events applied (not
// skipped).
func (db *DB) applyBatch(ctx context.Context, evs []eventstore.Event) (n int, err error) {
	if db.isClosed() {
		return 0, ErrClosed
	}
	if len(evs) == 0 {
		return 0, nil
	}
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("apply: begin: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()

	a := &applier{ctx: ctx, tx: tx, stmts: map[string]*sql.Stmt{}}
	var cp int64
	if err := tx.QueryRowContext(ctx, `SELECT position FROM checkpoint WHERE name = ?`, checkpointName).Scan(&cp); err != nil {
		return 0, fmt.Errorf("apply: read checkpoint: %w", err)
	}
	for _, ev := range evs {
		if ev.Position <= 0 {
			return 0, fmt.Errorf("apply %s %s: event has no global position", ev.Type, ev.ID)
		}
		if ev.Position <= cp {
			continue
		}
		if err := applyEvent(a, ev); err != nil {
			return 0, fmt.Errorf("apply %s at position %d (stream %s): %w", ev.Type, ev.Position, ev.Stream, err)
		}
		cp = ev.Position
		n++
	}
	if n == 0 {
		// Everything was a replay: nothing to write.
		return 0, tx.Rollback()
	}
	if _, err := a.exec(`UPDATE checkpoint SET position = ? WHERE name = ?`, cp, checkpointName); err != nil {
		return 0, fmt.Errorf("apply: write checkpoint %d: %w", cp, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("apply: commit at %d: %w", cp, err)
	}
	db.setCheckpoint(cp)
	return n, nil
}

// applier runs the statements of one apply transaction. It prepares each
// distinct statement once per transaction: with batches of hundreds of
// events, parsing SQL would otherwise cost about as much as executing it.
// (The statements cannot be prepared once per DB: the single writer
// connection is busy inside the transaction, and tx-bound statements end
// with it.)
type applier struct {
	ctx   context.Context
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
}

// exec runs query with args in the transaction.
func (a *applier) exec(query string, args ...any) (sql.Result, error) {
	st, ok := a.stmts[query]
	if !ok {
		var err error
		if st, err = a.tx.PrepareContext(a.ctx, query); err != nil {
			return nil, fmt.Errorf("prepare: %w", err)
		}
		a.stmts[query] = st
	}
	return st.ExecContext(a.ctx, args...)
}

// applyEvent changes the read models for one event inside tx. Events the
// read models do not show (tenant membership) change nothing; the caller
// still advances the checkpoint past them. An event type the domain does not
// know is an error: the read model must not claim a position whose facts it
// skipped.
func applyEvent(a *applier, ev eventstore.Event) error {
	if ev.SchemaVersion > domain.SchemaVersion {
		return fmt.Errorf("schema version %d is newer than this program's %d", ev.SchemaVersion, domain.SchemaVersion)
	}
	de, err := domain.Decode(ev.Type, ev.Data)
	if err != nil {
		return err
	}
	// at picks the fact's own time, falling back to the envelope's.
	at := func(t time.Time) time.Time {
		if t.IsZero() {
			return ev.Time
		}
		return t
	}
	switch e := de.(type) {
	case domain.BuildRequested:
		return buildRequested(a, ev, e, at(e.At))
	case domain.BuildStarted:
		return buildStarted(a, e, at(e.At))
	case domain.BuildStepStarted:
		return stepStarted(a, e, at(e.At))
	case domain.BuildStepFinished:
		return stepFinished(a, e, at(e.At))
	case domain.BuildAttemptFailed:
		return attemptFailed(a, e.BuildID, e.Attempt, e.Step, e.Error, true, false, at(e.At))
	case domain.BuildFailed:
		return attemptFailed(a, e.BuildID, e.Attempt, e.Step, e.Error, e.Retryable, true, at(e.At))
	case domain.BuildSucceeded:
		return buildSucceeded(a, e, at(e.At))
	case domain.DeploymentActivated:
		return deployed(a, ev, orTenant(e.TenantID, ev.Tenant), e.BuildID, e.Version, e.ManifestKey,
			KindActivated, e.ActivatedBy, e.Previous, at(e.At))
	case domain.DeploymentRolledBack:
		return deployed(a, ev, orTenant(e.TenantID, ev.Tenant), e.BuildID, e.Version, e.ManifestKey,
			KindRolledBack, e.RolledBackBy, e.Previous, at(e.At))
	}
	return nil
}

func orTenant(fromData, fromEnvelope string) string {
	if fromData != "" {
		return fromData
	}
	return fromEnvelope
}

// nanos is the stored form of a time: Unix nanoseconds, NULL when zero.
func nanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

// errUnknownBuild reports an event about a build the read model has no
// BuildRequested for. The domain refuses such events, so it means the event
// store and the read model disagree: it is an error, not something to skip.
var errUnknownBuild = errors.New("build was never requested")

// mustAffect turns "no row matched" into errUnknownBuild.
func mustAffect(res sql.Result, buildID string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("build %s: rows affected: %w", buildID, err)
	}
	if n == 0 {
		return fmt.Errorf("build %s: %w", buildID, errUnknownBuild)
	}
	return nil
}

func buildRequested(a *applier, ev eventstore.Event, e domain.BuildRequested, at time.Time) error {
	if e.BuildID == "" {
		return errors.New("BuildRequested without a build id")
	}
	envNames := e.EnvNames
	if envNames == nil {
		envNames = []string{}
	}
	names, err := json.Marshal(envNames)
	if err != nil {
		return fmt.Errorf("encode env names: %w", err)
	}
	config, err := json.Marshal(e.Config)
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	_, err = a.exec(`INSERT INTO builds (id, tenant, version, status, requested_by, requested_at,
		source_size, source_sha256, env_names, config, idempotency_key, position)
		VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.BuildID, orTenant(e.TenantID, ev.Tenant), e.Version, e.RequestedBy, nanos(at),
		e.Source.Size, e.Source.SHA256, string(names), string(config), e.IdempotencyKey, ev.Position)
	if err != nil {
		return fmt.Errorf("insert build %s: %w", e.BuildID, err)
	}
	return nil
}

func buildStarted(a *applier, e domain.BuildStarted, at time.Time) error {
	// started_at is when the build first started; each attempt's own times
	// are in its steps.
	res, err := a.exec(`UPDATE builds SET status = 'building', attempt = ?,
		started_at = COALESCE(started_at, ?) WHERE id = ?`, e.Attempt, nanos(at), e.BuildID)
	if err != nil {
		return fmt.Errorf("start build %s: %w", e.BuildID, err)
	}
	if err := mustAffect(res, e.BuildID); err != nil {
		return err
	}
	// A new attempt after a runner died leaves the dead attempt's step
	// "running" forever; close it so the read model shows no phantom work.
	_, err = a.exec(`UPDATE build_steps SET status = 'failed', finished_at = ?,
		duration_ms = COALESCE(MAX(0, (? - started_at) / 1000000), 0), detail = ?
		WHERE build_id = ? AND attempt < ? AND status = 'running'`,
		nanos(at), nanos(at), fmt.Sprintf("abandoned: attempt %d started", e.Attempt), e.BuildID, e.Attempt)
	if err != nil {
		return fmt.Errorf("start build %s: close abandoned steps: %w", e.BuildID, err)
	}
	return nil
}

func stepStarted(a *applier, e domain.BuildStepStarted, at time.Time) error {
	// INSERT … SELECT … WHERE EXISTS inserts nothing for an unknown build;
	// a step started again in the same attempt starts over.
	res, err := a.exec(`INSERT INTO build_steps (build_id, attempt, step, status, started_at)
		SELECT ?, ?, ?, 'running', ? WHERE EXISTS (SELECT 1 FROM builds WHERE id = ?)
		ON CONFLICT (build_id, attempt, step) DO UPDATE SET status = 'running',
			started_at = excluded.started_at, finished_at = NULL, duration_ms = 0, detail = ''`,
		e.BuildID, e.Attempt, string(e.Step), nanos(at), e.BuildID)
	if err != nil {
		return fmt.Errorf("start step %s of build %s: %w", e.Step, e.BuildID, err)
	}
	return mustAffect(res, e.BuildID)
}

func stepFinished(a *applier, e domain.BuildStepFinished, at time.Time) error {
	// Without a matching start (which the domain does not allow) the step is
	// still recorded, its start derived from its duration.
	started := at.Add(-time.Duration(e.DurationMs) * time.Millisecond)
	res, err := a.exec(`INSERT INTO build_steps (build_id, attempt, step, status, started_at,
			finished_at, duration_ms, detail)
		SELECT ?, ?, ?, 'done', ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM builds WHERE id = ?)
		ON CONFLICT (build_id, attempt, step) DO UPDATE SET status = 'done',
			finished_at = excluded.finished_at, duration_ms = excluded.duration_ms, detail = excluded.detail`,
		e.BuildID, e.Attempt, string(e.Step), nanos(started), nanos(at), e.DurationMs, e.Detail, e.BuildID)
	if err != nil {
		return fmt.Errorf("finish step %s of build %s: %w", e.Step, e.BuildID, err)
	}
	return mustAffect(res, e.BuildID)
}

// attemptFailed applies BuildAttemptFailed (final false: the build keeps
// "building" while the retry waits) and BuildFailed (final true). The step
// that was running in the attempt is marked failed; the build carries the
// error either way, so a client sees why the attempt is being retried.
func attemptFailed(a *applier, buildID string, attempt int, step domain.Step, msg string, retryable, final bool, at time.Time) error {
	var open string
	err := a.tx.QueryRowContext(a.ctx, `SELECT step FROM build_steps
		WHERE build_id = ? AND attempt = ? AND status = 'running'
		ORDER BY started_at DESC, step LIMIT 1`, buildID, attempt).Scan(&open)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("fail build %s: find open step: %w", buildID, err)
	}
	errStep := string(step)
	if errStep == "" {
		errStep = open
	}

	var res sql.Result
	if final {
		res, err = a.exec(`UPDATE builds SET status = 'failed', finished_at = ?,
			duration_ms = COALESCE(MAX(0, (? - requested_at) / 1000000), 0),
			error_step = ?, error = ?, retryable = ? WHERE id = ?`,
			nanos(at), nanos(at), errStep, msg, retryable, buildID)
	} else {
		res, err = a.exec(`UPDATE builds SET status = 'building',
			error_step = ?, error = ?, retryable = ? WHERE id = ?`, errStep, msg, retryable, buildID)
	}
	if err != nil {
		return fmt.Errorf("fail build %s: %w", buildID, err)
	}
	if err := mustAffect(res, buildID); err != nil {
		return err
	}

	if _, err := a.exec(`UPDATE build_steps SET status = 'failed', finished_at = ?,
		duration_ms = COALESCE(MAX(0, (? - started_at) / 1000000), 0), detail = ?
		WHERE build_id = ? AND attempt = ? AND status = 'running'`,
		nanos(at), nanos(at), msg, buildID, attempt); err != nil {
		return fmt.Errorf("fail build %s: mark step failed: %w", buildID, err)
	}
	if step != "" {
		// A failure in a step that never reported its start (say, the
		// runner could not even prepare it) still shows as a failed step.
		if _, err := a.exec(`INSERT INTO build_steps (build_id, attempt, step, status,
				started_at, finished_at, duration_ms, detail)
			VALUES (?, ?, ?, 'failed', ?, ?, 0, ?) ON CONFLICT (build_id, attempt, step) DO NOTHING`,
			buildID, attempt, string(step), nanos(at), nanos(at), msg); err != nil {
			return fmt.Errorf("fail build %s: record failed step %s: %w", buildID, step, err)
		}
	}
	return nil
}

func buildSucceeded(a *applier, e domain.BuildSucceeded, at time.Time) error {
	// The errors of earlier, retried attempts stay visible in their steps;
	// a successful build has no error.
	res, err := a.exec(`UPDATE builds SET status = 'success', finished_at = ?, duration_ms = ?,
		files = ?, bytes = ?, manifest_key = ?, attempt = MAX(attempt, ?),
		error_step = '', error = '', retryable = 0 WHERE id = ?`,
		nanos(at), e.DurationMs, e.Files, e.Bytes, e.ManifestKey, e.Attempt, e.BuildID)
	if err != nil {
		return fmt.Errorf("succeed build %s: %w", e.BuildID, err)
	}
	return mustAffect(res, e.BuildID)
}

func deployed(a *applier, ev eventstore.Event, tenant, buildID, version, manifestKey, kind, actor, previous string, at time.Time) error {
	if tenant == "" || buildID == "" {
		return errors.New("deployment without a tenant or build id")
	}
	if _, err := a.exec(`INSERT INTO deployments (tenant, build_id, version, kind, actor, at, previous, position)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, tenant, buildID, version, kind, actor, nanos(at), previous, ev.Position); err != nil {
		return fmt.Errorf("record deployment of %s for %s: %w", buildID, tenant, err)
	}
	if _, err := a.exec(`INSERT INTO pointers (tenant, build_id, version, manifest_key, updated_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant) DO UPDATE SET build_id = excluded.build_id,
			version = excluded.version, manifest_key = excluded.manifest_key, updated_at = excluded.updated_at`,
		tenant, buildID, version, manifestKey, nanos(at)); err != nil {
		return fmt.Errorf("move pointer of %s to %s: %w", tenant, buildID, err)
	}
	return nil
}
