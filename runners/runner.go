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
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/archive"
	"github.com/zipship/zipship/buildlog"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/cdn"
	"github.com/zipship/zipship/infra/eventstore"
	"github.com/zipship/zipship/runners/egress"
	"github.com/zipship/zipship/runners/sandbox"
)

// Defaults of Config.
const (
	// DefaultInstallTimeout bounds the install step (the reference
	// system's 10 minutes).
	DefaultInstallTimeout = 10 * time.Minute
	// DefaultBuildTimeout bounds the build step (the reference system's 15
	// minutes).
	DefaultBuildTimeout = 15 * time.Minute
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

	// Sandbox runs the install and build commands of projects with a
	// package.json. Nil: such projects fail at detect (ErrNeedsRunner);
	// static sites need no sandbox.
	Sandbox *sandbox.Sandbox
	// Logs receives every build's log (commands, their output, the
	// runner's notes); nil discards them. Errors quote the failed
	// command's last lines either way.
	Logs *buildlog.Broker
	// NetNSDir is where the jobs' network namespaces are pinned
	// (egress.DefaultNetNSDir when empty). Only this runner may use it.
	NetNSDir string
	// InstallAllow is what the install step may reach through its egress
	// proxy (egress.Policy entries); nil means the npm registry
	// (egress.NPMRegistry).
	InstallAllow []string
	// InstallAllowPrivate lets the install step's proxy dial the
	// InstallAllow hosts even when they resolve to non-public addresses
	// (a registry mirror on the internal network, or a network that
	// intercepts the registry). It never applies to the build step, whose
	// allow-list tenants extend.
	InstallAllowPrivate bool
	// BuildAllow is the operator's allow-list for the build step, added to
	// each build's buildConfig.egressAllow. With both empty the build step
	// has no network at all.
	BuildAllow []string
	// InstallTimeout and BuildTimeout bound the two sandboxed steps
	// (DefaultInstallTimeout, DefaultBuildTimeout); the task is killed
	// when they expire.
	InstallTimeout, BuildTimeout time.Duration
	// MemoryBytes is the sandbox's memory limit, named in out-of-memory
	// errors; 0 means sandbox.DefaultMemoryBytes.
	MemoryBytes int64
	// Corepack says the sandbox can run corepack (pnpm and yarn projects).
	Corepack bool
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
	if cfg.Logs == nil {
		cfg.Logs = buildlog.NewBroker(discardBlobs{}, cfg.Log)
	}
	if cfg.InstallAllow == nil {
		cfg.InstallAllow = []string{egress.NPMRegistry}
	}
	if cfg.InstallTimeout <= 0 {
		cfg.InstallTimeout = DefaultInstallTimeout
	}
	if cfg.BuildTimeout <= 0 {
		cfg.BuildTimeout = DefaultBuildTimeout
	}
	if cfg.MemoryBytes <= 0 {
		cfg.MemoryBytes = sandbox.DefaultMemoryBytes
	}
	return &Runner{app: a, cfg: cfg, log: cfg.Log.With("runner", cfg.Name)}
}

// HandleMessage is a bus handler that runs the build of a BuildRequested
// event inline, blocking the bus for the whole build, and acknowledges every
// other event. Returning an error makes the bus redeliver the message. It
// suits a consumer that runs one build at a time; `serve` hands messages to
// a Scheduler instead (Scheduler.HandleMessage), which acknowledges at once.
func (r *Runner) HandleMessage(msg *message.Message) error {
	req, ev, ok := r.decodeRequest(msg)
	if !ok {
		return nil
	}
	meta := app.Meta{CorrelationID: ev.CorrelationID, CausationID: ev.ID.String(), TraceParent: ev.TraceParent}
	return r.Handle(msg.Context(), meta, req.BuildID)
}

// decodeRequest returns the BuildRequested a bus message carries; ok is
// false for any other event, and for a message that cannot be decoded
// (logged and dropped: redelivering it would not help).
func (r *Runner) decodeRequest(msg *message.Message) (req domain.BuildRequested, ev eventstore.Event, ok bool) {
	if err := json.Unmarshal(msg.Payload, &ev); err != nil {
		r.log.Error("undecodable message dropped", "uuid", msg.UUID, "err", err)
		return req, ev, false
	}
	if ev.Type != (domain.BuildRequested{}).EventType() {
		return req, ev, false
	}
	d, err := domain.Decode(ev.Type, ev.Data)
	if err != nil {
		r.log.Error("undecodable event dropped", "event", ev.ID, "err", err)
		return req, ev, false
	}
	return d.(domain.BuildRequested), ev, true
}

// handleStored runs a build known by its id only (a Scheduler's work): its
// events are caused by the stored BuildRequested and share its correlation
// id, as when the request comes from the bus. Errors are Handle's.
func (r *Runner) handleStored(ctx context.Context, buildID string) error {
	raw, err := r.app.Events().ReadStream(ctx, domain.BuildStream(buildID), 1)
	if err != nil {
		return fmt.Errorf("read %s: %w", buildID, err)
	}
	var meta app.Meta
	if len(raw) > 0 { // else Handle reports the missing stream
		meta = app.Meta{CorrelationID: raw[0].CorrelationID, CausationID: raw[0].ID.String(), TraceParent: raw[0].TraceParent}
	}
	return r.Handle(ctx, meta, buildID)
}

// Handle runs a build to its end: attempts, retries with backoff, and the
// final success or failure. A build that is already finished (a
// redelivery) is acknowledged without work. An error is returned only when
// the outcome could not be recorded (or ctx ended): the request must then be
// delivered again.
//
// ctx is the runner's: when it ends (shutdown) nothing is recorded and the
// build starts over later (the bus redelivers the request, or the next
// start resumes the unfinished build). A cancel request (BuildCancelRequested)
// ends only the attempt's own context: the running command is killed and
// the build fails as "cancelled", not retried.
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
		attempt := run.Build().Attempt()
		log := r.log.With("build", buildID, "tenant", run.Build().Tenant(), "attempt", attempt)
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
		if ferr != nil && eventstore.IsConflict(ferr) {
			// Somebody else appended to the build's stream during the
			// attempt (a cancel request): decide again on the fresh state,
			// which turns the failure into "cancelled".
			e, ferr = r.failFresh(ctx, meta, buildID, attempt, se)
		}
		if ferr != nil {
			return fmt.Errorf("record failure of %s: %w", buildID, ferr)
		}
		if f, ok := e.(domain.BuildFailed); ok && f.Error == domain.CancelledError {
			log.Info("build cancelled", "step", f.Step)
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

// failFresh records the failure of attempt se on the build as it is now in
// the event store (the Run's copy is stale). It returns the event appended,
// or nil when there is nothing to record: the build is finished, or
// another runner has moved it to another attempt.
func (r *Runner) failFresh(ctx context.Context, meta app.Meta, buildID string, attempt int, se *app.StepError) (domain.Event, error) {
	for range 20 {
		b, err := r.app.Build(ctx, buildID)
		if err != nil {
			return nil, err
		}
		if b.Status().Finished() || b.Attempt() != attempt {
			return nil, nil
		}
		evs, err := b.Fail(se.Step, se.Err.Error(), se.Retryable, time.Now().UTC())
		if err != nil {
			return nil, err
		}
		env, err := app.Envelope(evs[0], b.Tenant(), meta)
		if err != nil {
			return nil, err
		}
		_, err = r.app.Events().Append(ctx, domain.BuildStream(buildID), eventstore.Exact(b.StreamVersion()), env)
		if eventstore.IsConflict(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return evs[0], nil
	}
	return nil, fmt.Errorf("fail %s: the stream keeps changing", buildID)
}

// attempt runs the pipeline once, in a fresh workspace, with its own
// build log and a context that a cancel request of the build ends.
func (r *Runner) attempt(ctx context.Context, run *app.Run) (err error) {
	b := run.Build()
	ws := filepath.Join(r.cfg.WorkDir, fmt.Sprintf("%s-%d", b.ID(), b.Attempt()))
	defer os.RemoveAll(ws)

	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopWatch := r.watchCancel(actx, b, func() { cancel(errCancelled) })
	defer stopWatch()

	p := &pipeline{r: r, run: run, ws: ws, actx: actx}
	p.log = r.cfg.Logs.Open(b.Tenant(), b.ID(), nil)
	p.log.Printf("attempt %d on runner %s", b.Attempt(), r.cfg.Name)
	defer func() {
		switch {
		case err == nil:
			p.log.Printf("build succeeded")
		case ctx.Err() != nil:
			p.log.Printf("interrupted: the runner is shutting down; the build starts again when it is back")
		case errors.Is(context.Cause(actx), errCancelled):
			p.log.Printf("cancelled")
		default:
			// The headline: the error's quoted output is just above.
			first, _, _ := strings.Cut(err.Error(), "\n")
			p.log.Printf("failed at %s", strings.TrimSuffix(first, ":"))
		}
		p.closeLog()
	}()
	defer func() {
		if v := recover(); v != nil {
			r.log.Error("pipeline panic", "panic", v, "stack", string(debug.Stack()))
			step := p.current
			if step == "" {
				step = domain.StepValidate
			}
			err = &app.StepError{Step: step, Err: fmt.Errorf("internal error: %v", v), Retryable: true}
		}
		err = p.redactErr(err)
	}()
	return p.execute(ctx)
}
