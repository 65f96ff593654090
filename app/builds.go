package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/eventstore"
)

// Build loads a build; ErrBuildNotFound when its stream is empty.
func (a *App) Build(ctx context.Context, id string) (*domain.Build, error) {
	b := &domain.Build{}
	if _, err := a.load(ctx, domain.BuildStream(id), b); err != nil {
		return nil, err
	}
	if b.ID() == "" {
		return nil, domain.ErrBuildNotFound
	}
	return b, nil
}

// RequestBuild appends BuildRequested to a new stream. If the stream exists
// already (an Idempotency-Key replay that raced), domain.ErrBuildExists.
func (a *App) RequestBuild(ctx context.Context, m Meta, r domain.BuildRequested) (eventstore.AppendResult, error) {
	b := &domain.Build{}
	evs, err := b.Request(r)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	res, err := a.append(ctx, domain.BuildStream(r.BuildID), r.TenantID, 0, m, evs)
	if eventstore.IsConflict(err) {
		return res, fmt.Errorf("request %s: %w", r.BuildID, domain.ErrBuildExists)
	}
	return res, err
}

// Run is one attempt of a build in progress on a runner. It keeps the
// aggregate in memory and appends each decision with the expected stream
// version, so a second runner working on the same build fails with a
// conflict instead of interleaving events.
type Run struct {
	a     *App
	b     *domain.Build
	meta  Meta
	start time.Time
}

// StartRun loads the build and starts its next attempt. A finished build
// returns domain.ErrBuildFinished (a redelivery to acknowledge). When the
// attempts are used up the build is failed and ErrBuildFinished returned.
func (a *App) StartRun(ctx context.Context, m Meta, buildID, runner string) (*Run, error) {
	b, err := a.Build(ctx, buildID)
	if err != nil {
		return nil, err
	}
	r := &Run{a: a, b: b, meta: m, start: a.now()}
	evs, err := b.Start(runner, a.now())
	if err != nil {
		return nil, err
	}
	if err := r.commit(ctx, evs); err != nil {
		return nil, err
	}
	if b.Status().Finished() {
		return nil, fmt.Errorf("start %s: %w", buildID, domain.ErrBuildFinished)
	}
	return r, nil
}

// Build returns the build's current state.
func (r *Run) Build() *domain.Build { return r.b }

func (r *Run) commit(ctx context.Context, evs []domain.Event) error {
	if _, err := r.a.append(ctx, domain.BuildStream(r.b.ID()), r.b.Tenant(), r.b.StreamVersion(), r.meta, evs); err != nil {
		return err
	}
	for _, e := range evs {
		r.b.Apply(e)
	}
	return nil
}

// StepError is the failure of one pipeline step. Retryable marks
// infrastructure causes (storage, sandbox) as opposed to the user's project.
type StepError struct {
	Step      domain.Step
	Err       error
	Retryable bool
}

func (e *StepError) Error() string { return fmt.Sprintf("%s: %v", e.Step, e.Err) }

func (e *StepError) Unwrap() error { return e.Err }

// UserError marks err as the user's fault (not retried).
func UserError(err error) error { return &classified{err: err, retryable: false} }

// InfraError marks err as an infrastructure fault (retried).
func InfraError(err error) error { return &classified{err: err, retryable: true} }

type classified struct {
	err       error
	retryable bool
}

func (c *classified) Error() string { return c.err.Error() }
func (c *classified) Unwrap() error { return c.err }

// Step runs fn as the named step: BuildStepStarted, fn, then
// BuildStepFinished with its duration and fn's detail. A failure of fn is
// returned as a *StepError (retryable unless fn marked it UserError); the
// caller then ends the attempt with Fail.
func (r *Run) Step(ctx context.Context, step domain.Step, fn func(ctx context.Context) (detail string, err error)) error {
	evs, err := r.b.StartStep(step, r.a.now())
	if err != nil {
		return &StepError{Step: step, Err: err, Retryable: true}
	}
	if err := r.commit(ctx, evs); err != nil {
		return &StepError{Step: step, Err: err, Retryable: true}
	}
	began := time.Now()
	detail, err := fn(ctx)
	if err != nil {
		se := &StepError{Step: step, Err: err, Retryable: true}
		var c *classified
		if errors.As(err, &c) {
			se.Retryable = c.retryable
		}
		return se
	}
	evs, err = r.b.FinishStep(step, time.Since(began), detail, r.a.now())
	if err == nil {
		err = r.commit(ctx, evs)
	}
	if err != nil {
		return &StepError{Step: step, Err: err, Retryable: true}
	}
	return nil
}

// Publish records the build's stored output; the build can then be activated.
func (r *Run) Publish(ctx context.Context, manifestKey string, files int, bytes int64) error {
	evs, err := r.b.Publish(manifestKey, files, bytes, r.a.now())
	if err != nil {
		return err
	}
	return r.commit(ctx, evs)
}

// Succeed ends the build as published.
func (r *Run) Succeed(ctx context.Context, manifestKey string, files int, bytes int64) error {
	evs, err := r.b.Succeed(manifestKey, files, bytes, r.a.now())
	if err != nil {
		return err
	}
	return r.commit(ctx, evs)
}

// Fail ends the attempt (or the build) at step with cause. It returns the
// event it appended so the runner can tell a scheduled retry from the end.
func (r *Run) Fail(ctx context.Context, step domain.Step, cause string, retryable bool) (domain.Event, error) {
	evs, err := r.b.Fail(step, cause, retryable, r.a.now())
	if err != nil {
		return nil, err
	}
	if err := r.commit(ctx, evs); err != nil {
		return nil, err
	}
	return evs[0], nil
}

// Site loads a tenant's deployment pointer aggregate.
func (a *App) Site(ctx context.Context, tenant string) (*domain.Site, error) {
	s := domain.NewSite(tenant)
	if _, err := a.load(ctx, domain.SiteStream(tenant), s); err != nil {
		return nil, err
	}
	return s, nil
}

// siteCommand loads the site, decides with fn and appends, retrying on
// concurrent moves.
func (a *App) siteCommand(ctx context.Context, m Meta, tenant string, fn func(*domain.Site) ([]domain.Event, error)) (domain.Event, eventstore.AppendResult, error) {
	var decided domain.Event
	res, err := retryOnConflict(ctx, func() (eventstore.AppendResult, error) {
		s, err := a.Site(ctx, tenant)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		evs, err := fn(s)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		decided = evs[0]
		return a.append(ctx, domain.SiteStream(tenant), tenant, s.StreamVersion(), m, evs)
	})
	return decided, res, err
}

// Activate makes a succeeded build its tenant's live version.
func (a *App) Activate(ctx context.Context, m Meta, b *domain.Build, by string) (domain.DeploymentActivated, error) {
	e, _, err := a.siteCommand(ctx, m, b.Tenant(), func(s *domain.Site) ([]domain.Event, error) {
		return s.Activate(b, by, a.now())
	})
	if err != nil {
		return domain.DeploymentActivated{}, err
	}
	return e.(domain.DeploymentActivated), nil
}

// Rollback moves tenant's pointer back to a build that was live before.
func (a *App) Rollback(ctx context.Context, m Meta, actor, tenant, buildID string) (domain.DeploymentRolledBack, eventstore.AppendResult, error) {
	e, res, err := a.siteCommand(ctx, m, tenant, func(s *domain.Site) ([]domain.Event, error) {
		return s.Rollback(buildID, actor, a.now())
	})
	if err != nil {
		return domain.DeploymentRolledBack{}, res, err
	}
	return e.(domain.DeploymentRolledBack), res, nil
}

// CancelBuild asks for a build to stop (see domain.BuildCancelRequested).
func (a *App) CancelBuild(ctx context.Context, m Meta, actor, buildID string) (eventstore.AppendResult, error) {
	return retryOnConflict(ctx, func() (eventstore.AppendResult, error) {
		b, err := a.Build(ctx, buildID)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		evs, err := b.Cancel(actor, a.now())
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		return a.append(ctx, domain.BuildStream(buildID), b.Tenant(), b.StreamVersion(), m, evs)
	})
}
