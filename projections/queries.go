package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/zipship/zipship/domain"
)

// Page size bounds of the list queries.
const (
	// DefaultPageSize is used when a caller passes pageSize <= 0.
	DefaultPageSize = 20
	// MaxPageSize caps pageSize, so one request cannot load a whole tenant.
	MaxPageSize = 100
)

// Build is one build as the API shows it.
type Build struct {
	ID          string             `json:"id"`
	TenantID    string             `json:"tenantId"`
	Version     string             `json:"version"`
	Status      domain.BuildStatus `json:"status"`
	RequestedBy string             `json:"requestedBy"`
	RequestedAt time.Time          `json:"requestedAt"`
	// StartedAt is when the first attempt started.
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	// DurationMs is from request to end, once finished.
	DurationMs int64 `json:"durationMs"`
	Attempt    int   `json:"attempt"`
	// Error is the last failure: the final one of a failed build, or the
	// failed attempt's while a retry waits. Nil on success.
	Error        *BuildError        `json:"error,omitempty"`
	ManifestKey  string             `json:"manifestKey,omitempty"`
	Files        int                `json:"files"`
	Bytes        int64              `json:"bytes"`
	SourceSize   int64              `json:"sourceSize"`
	SourceSHA256 string             `json:"sourceSha256,omitempty"`
	EnvNames     []string           `json:"envNames"`
	Config       domain.BuildConfig `json:"config"`
	// Steps is filled by GetBuild and FindBuildByIdempotencyKey only.
	Steps []Step `json:"steps,omitempty"`
}

// BuildError says where and why a build (or one of its attempts) failed.
type BuildError struct {
	Step      domain.Step `json:"step"`
	Message   string      `json:"message"`
	Retryable bool        `json:"retryable"`
}

// Step is one pipeline step of one attempt.
type Step struct {
	Name    domain.Step `json:"name"`
	Attempt int         `json:"attempt"`
	// Status is StepRunning, StepDone or StepFailed.
	Status     string     `json:"status"`
	StartedAt  time.Time  `json:"startedAt"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	DurationMs int64      `json:"durationMs"`
	// Detail is the step's report when done, the error when failed.
	Detail string `json:"detail,omitempty"`
}

// Deployment is one move of a tenant's live pointer.
type Deployment struct {
	// Seq orders a read model's deployments (all tenants share it).
	Seq      int64  `json:"seq"`
	TenantID string `json:"tenantId"`
	BuildID  string `json:"buildId"`
	Version  string `json:"version"`
	// Kind is KindActivated or KindRolledBack.
	Kind  string    `json:"kind"`
	Actor string    `json:"actor"`
	At    time.Time `json:"at"`
	// Previous is the build that was live before ("" for the first).
	Previous string `json:"previous,omitempty"`
}

// Pointer is what a tenant's site serves now.
type Pointer struct {
	TenantID    string    `json:"tenantId"`
	BuildID     string    `json:"buildId"`
	Version     string    `json:"version"`
	ManifestKey string    `json:"manifestKey"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// pageBounds normalises a 1-based page and a page size into LIMIT/OFFSET.
func pageBounds(page, pageSize int) (limit, offset int) {
	if pageSize <= 0 {
		pageSize = DefaultPageSize
	}
	pageSize = min(pageSize, MaxPageSize)
	page = max(page, 1)
	return pageSize, (page - 1) * pageSize
}

// timeOf turns a stored time into a UTC time (zero for NULL).
func timeOf(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

// timePtr turns a stored time into a UTC time, nil for NULL.
func timePtr(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := time.Unix(0, n.Int64).UTC()
	return &t
}

const buildColumns = `id, tenant, version, status, requested_by, requested_at, started_at, finished_at,
	duration_ms, attempt, error_step, error, retryable, manifest_key, files, bytes, source_size,
	source_sha256, env_names, config`

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

func scanBuild(s scanner) (*Build, error) {
	var (
		b                            Build
		requested, started, finished sql.NullInt64
		errStep, errMsg              string
		retryable                    bool
		envNames, config             string
	)
	if err := s.Scan(&b.ID, &b.TenantID, &b.Version, &b.Status, &b.RequestedBy, &requested, &started, &finished,
		&b.DurationMs, &b.Attempt, &errStep, &errMsg, &retryable, &b.ManifestKey, &b.Files, &b.Bytes,
		&b.SourceSize, &b.SourceSHA256, &envNames, &config); err != nil {
		return nil, err
	}
	b.RequestedAt = timeOf(requested)
	b.StartedAt = timePtr(started)
	b.FinishedAt = timePtr(finished)
	if errStep != "" || errMsg != "" {
		b.Error = &BuildError{Step: domain.Step(errStep), Message: errMsg, Retryable: retryable}
	}
	if err := json.Unmarshal([]byte(envNames), &b.EnvNames); err != nil {
		return nil, fmt.Errorf("build %s: env names: %w", b.ID, err)
	}
	if b.EnvNames == nil {
		b.EnvNames = []string{}
	}
	if err := json.Unmarshal([]byte(config), &b.Config); err != nil {
		return nil, fmt.Errorf("build %s: config: %w", b.ID, err)
	}
	return &b, nil
}

// ListBuilds returns one page (1-based; pageSize <= 0 means DefaultPageSize,
// capped at MaxPageSize) of a tenant's builds, newest request first, without
// their steps, and the tenant's total number of builds. Page and total come
// from one snapshot.
func (db *DB) ListBuilds(ctx context.Context, tenant string, page, pageSize int) ([]Build, int, error) {
	if db.isClosed() {
		return nil, 0, ErrClosed
	}
	limit, offset := pageBounds(page, pageSize)
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, 0, fmt.Errorf("list builds of %s: %w", tenant, err)
	}
	defer tx.Rollback()

	var total int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM builds WHERE tenant = ?`, tenant).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("list builds of %s: count: %w", tenant, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+buildColumns+` FROM builds WHERE tenant = ?
		ORDER BY position DESC LIMIT ? OFFSET ?`, tenant, limit, offset)
	if err != nil {
		return nil, 0, fmt.Errorf("list builds of %s: %w", tenant, err)
	}
	defer rows.Close()
	builds := []Build{}
	for rows.Next() {
		b, err := scanBuild(rows)
		if err != nil {
			return nil, 0, fmt.Errorf("list builds of %s: %w", tenant, err)
		}
		builds = append(builds, *b)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("list builds of %s: %w", tenant, err)
	}
	return builds, total, nil
}

// GetBuild returns a tenant's build with its steps (ordered by attempt, then
// start). A build of another tenant is ErrNotFound, like a missing one.
func (db *DB) GetBuild(ctx context.Context, tenant, buildID string) (*Build, error) {
	return db.oneBuild(ctx, fmt.Sprintf("get build %s of %s", buildID, tenant),
		`WHERE tenant = ? AND id = ?`, tenant, buildID)
}

// FindBuildByIdempotencyKey returns the build a user of a tenant requested
// with an Idempotency-Key (with its steps), so that a repeated upload gets
// the same build; ErrNotFound when there is none (or key is empty).
func (db *DB) FindBuildByIdempotencyKey(ctx context.Context, tenant, requestedBy, key string) (*Build, error) {
	what := fmt.Sprintf("find build of %s by %s with idempotency key", tenant, requestedBy)
	if key == "" {
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return db.oneBuild(ctx, what, `WHERE tenant = ? AND requested_by = ? AND idempotency_key = ?
		ORDER BY position LIMIT 1`, tenant, requestedBy, key)
}

// oneBuild loads the build selected by where, and its steps, in one
// snapshot.
func (db *DB) oneBuild(ctx context.Context, what, where string, args ...any) (*Build, error) {
	if db.isClosed() {
		return nil, ErrClosed
	}
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer tx.Rollback()

	b, err := scanBuild(tx.QueryRowContext(ctx, `SELECT `+buildColumns+` FROM builds `+where, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if b.Steps, err = steps(ctx, tx, b.ID); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}

func steps(ctx context.Context, tx *sql.Tx, buildID string) ([]Step, error) {
	rows, err := tx.QueryContext(ctx, `SELECT step, attempt, status, started_at, finished_at, duration_ms, detail
		FROM build_steps WHERE build_id = ? ORDER BY attempt, started_at, step`, buildID)
	if err != nil {
		return nil, fmt.Errorf("steps: %w", err)
	}
	defer rows.Close()
	out := []Step{}
	for rows.Next() {
		var (
			s                 Step
			started, finished sql.NullInt64
		)
		if err := rows.Scan(&s.Name, &s.Attempt, &s.Status, &started, &finished, &s.DurationMs, &s.Detail); err != nil {
			return nil, fmt.Errorf("steps: %w", err)
		}
		s.StartedAt = timeOf(started)
		s.FinishedAt = timePtr(finished)
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("steps: %w", err)
	}
	return out, nil
}

// Deployments returns one page (as ListBuilds) of a tenant's pointer moves,
// newest first, and their total.
func (db *DB) Deployments(ctx context.Context, tenant string, page, pageSize int) ([]Deployment, int, error) {
	if db.isClosed() {
		return nil, 0, ErrClosed
	}
	limit, offset := pageBounds(page, pageSize)
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, 0, fmt.Errorf("list deployments of %s: %w", tenant, err)
	}
	defer tx.Rollback()

	var total int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM deployments WHERE tenant = ?`, tenant).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("list deployments of %s: count: %w", tenant, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT seq, tenant, build_id, version, kind, actor, at, previous
		FROM deployments WHERE tenant = ? ORDER BY seq DESC LIMIT ? OFFSET ?`, tenant, limit, offset)
	if err != nil {
		return nil, 0, fmt.Errorf("list deployments of %s: %w", tenant, err)
	}
	defer rows.Close()
	out := []Deployment{}
	for rows.Next() {
		var (
			d  Deployment
			at sql.NullInt64
		)
		if err := rows.Scan(&d.Seq, &d.TenantID, &d.BuildID, &d.Version, &d.Kind, &d.Actor, &at, &d.Previous); err != nil {
			return nil, 0, fmt.Errorf("list deployments of %s: %w", tenant, err)
		}
		d.At = timeOf(at)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("list deployments of %s: %w", tenant, err)
	}
	return out, total, nil
}

// Pointer returns what a tenant's site serves now; ErrNotFound when nothing
// was ever deployed.
func (db *DB) Pointer(ctx context.Context, tenant string) (*Pointer, error) {
	if db.isClosed() {
		return nil, ErrClosed
	}
	var (
		p  Pointer
		at sql.NullInt64
	)
	err := db.r.QueryRowContext(ctx, `SELECT tenant, build_id, version, manifest_key, updated_at
		FROM pointers WHERE tenant = ?`, tenant).Scan(&p.TenantID, &p.BuildID, &p.Version, &p.ManifestKey, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("pointer of %s: %w", tenant, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("pointer of %s: %w", tenant, err)
	}
	p.UpdatedAt = timeOf(at)
	return &p, nil
}

// LiveTenants lists the tenants that have a live pointer, in order. Start-up
// uses it to make every pointer object agree with the site streams again.
func (db *DB) LiveTenants(ctx context.Context) ([]string, error) {
	if db.isClosed() {
		return nil, ErrClosed
	}
	rows, err := db.r.QueryContext(ctx, `SELECT tenant FROM pointers ORDER BY tenant`)
	if err != nil {
		return nil, fmt.Errorf("live tenants: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("live tenants: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("live tenants: %w", err)
	}
	return out, nil
}

// BuildRef names a build and its tenant.
type BuildRef struct {
	ID       string `json:"id"`
	TenantID string `json:"tenantId"`
}

// UnfinishedBuilds lists every build with neither BuildSucceeded nor
// BuildFailed yet (status pending or building), of every tenant, in request
// order (the position of their BuildRequested). A runner's start-up resumes
// them: a request acknowledged on the bus but not finished before a crash
// is found here. The list is as fresh as the read models: wait for the
// projector first.
func (db *DB) UnfinishedBuilds(ctx context.Context) ([]BuildRef, error) {
	if db.isClosed() {
		return nil, ErrClosed
	}
	rows, err := db.r.QueryContext(ctx, `SELECT id, tenant FROM builds
		WHERE status IN ('pending', 'building') ORDER BY position`)
	if err != nil {
		return nil, fmt.Errorf("unfinished builds: %w", err)
	}
	defer rows.Close()
	out := []BuildRef{}
	for rows.Next() {
		var b BuildRef
		if err := rows.Scan(&b.ID, &b.TenantID); err != nil {
			return nil, fmt.Errorf("unfinished builds: %w", err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("unfinished builds: %w", err)
	}
	return out, nil
}
