// Package runners executes the build pipeline: it takes a requested build,
// runs its named steps (each recorded as BuildStepStarted/Finished events),
// publishes the site's files to blob storage, moves the tenant's pointer and
// refreshes the CDN. Failures are classified: the user's errors end the
// build at once, infrastructure errors are retried with backoff.
package runners

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/archive"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/cdn"
	"github.com/zipship/zipship/infra/eventstore"
)

// Config holds a runner's settings.
type Config struct {
	// Name identifies the runner in BuildStarted events.
	Name string
	// WorkDir holds the builds' workspaces while they run.
	WorkDir string
	// ZipLimits are enforced again while extracting (defence in depth).
	ZipLimits archive.Limits
	// Refresher is told when a tenant's pointer moved.
	Refresher cdn.Refresher
	// RetryDelay, when set, is the wait before the attempt after attempt
	// failed with an infrastructure error. Nil waits the RetryInMs the
	// BuildAttemptFailed event recorded (domain.RetryDelay: 2 s, 4 s).
	// Tests set it to shorten the backoff.
	RetryDelay func(attempt int) time.Duration
	Log        *slog.Logger
}

// Runner runs builds.
type Runner struct {
	app *app.App
	cfg Config
	log *slog.Logger
}

// New returns a runner working for a.
func New(a *app.App, cfg Config) *Runner {
	if cfg.Name == "" {
		host, _ := os.Hostname()
		cfg.Name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Runner{app: a, cfg: cfg, log: cfg.Log.With("runner", cfg.Name)}
}

// HandleMessage is the bus handler: it runs the build of a BuildRequested
// event and acknowledges every other event. Returning an error makes the bus
// redeliver the message.
func (r *Runner) HandleMessage(msg *message.Message) error {
	var ev eventstore.Event
	if err := json.Unmarshal(msg.Payload, &ev); err != nil {
		r.log.Error("undecodable message dropped", "uuid", msg.UUID, "err", err)
		return nil
	}
	if ev.Type != (domain.BuildRequested{}).EventType() {
		return nil
	}
	d, err := domain.Decode(ev.Type, ev.Data)
	if err != nil {
		r.log.Error("undecodable event dropped", "event", ev.ID, "err", err)
		return nil
	}
	meta := app.Meta{CorrelationID: ev.CorrelationID, CausationID: ev.ID.String(), TraceParent: ev.TraceParent}
	return r.Handle(msg.Context(), meta, d.(domain.BuildRequested).BuildID)
}

// Handle runs a build to its end: attempts, retries with backoff, and the
// final success or failure. A build that is already finished (a
// redelivery) is acknowledged without work. An error is returned only when
// the outcome could not be recorded (or ctx ended): the request must then be
// delivered again.
func (r *Runner) Handle(ctx context.Context, meta app.Meta, buildID string) error {
	for {
		run, err := r.app.StartRun(ctx, meta, buildID, r.cfg.Name)
		if errors.Is(err, domain.ErrBuildFinished) {
			r.log.Info("build already finished", "build", buildID)
			return nil
		}
		if errors.Is(err, domain.ErrBuildNotFound) {
			r.log.Error("requested build has no stream", "build", buildID)
			return nil
		}
		if err != nil {
			return fmt.Errorf("start %s: %w", buildID, err)
		}
		log := r.log.With("build", buildID, "tenant", run.Build().Tenant(), "attempt", run.Build().Attempt())
		log.Info("build started")
		err = r.attempt(ctx, run)
		if err == nil {
			log.Info("build succeeded")
			return nil
		}
		if ctx.Err() != nil {
			// Shutting down: record nothing, the request is redelivered and
			// the next attempt starts over.
			return ctx.Err()
		}
		var se *app.StepError
		if !errors.As(err, &se) {
			se = &app.StepError{Step: domain.StepValidate, Err: err, Retryable: true}
		}
		log.Warn("build attempt failed", "step", se.Step, "retryable", se.Retryable, "err", se.Err)
		e, ferr := run.Fail(ctx, se.Step, se.Err.Error(), se.Retryable)
		if ferr != nil {
			return fmt.Errorf("record failure of %s: %w", buildID, ferr)
		}
		retry, ok := e.(domain.BuildAttemptFailed)
		if !ok {
			return nil
		}
		wait := time.Duration(retry.RetryInMs) * time.Millisecond
		if r.cfg.RetryDelay != nil {
			wait = r.cfg.RetryDelay(retry.Attempt)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// attempt runs the pipeline once, in a fresh workspace.
func (r *Runner) attempt(ctx context.Context, run *app.Run) (err error) {
	defer func() {
		if v := recover(); v != nil {
			r.log.Error("pipeline panic", "panic", v, "stack", string(debug.Stack()))
			err = app.InfraError(fmt.Errorf("internal error: %v", v))
		}
	}()
	b := run.Build()
	ws := filepath.Join(r.cfg.WorkDir, fmt.Sprintf("%s-%d", b.ID(), b.Attempt()))
	defer os.RemoveAll(ws)
	p := &pipeline{r: r, run: run, ws: ws}
	return p.execute(ctx)
}
