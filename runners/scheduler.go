package runners

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Bounds of the wait before a Scheduler runs a build again whose outcome
// could not be recorded (Runner.Handle returned an error: the event store
// is unavailable, say). It doubles from the first to the second.
const (
	schedulerRetryMin = time.Second
	schedulerRetryMax = time.Minute
)

// Scheduler runs a Runner's builds, up to a number of them at once. Each
// tenant has a FIFO queue: a tenant's builds run one at a time, in the
// order they were enqueued (request order, when enqueued from the bus or
// by a resume in request order), so that its pointer moves forward. Builds
// of different tenants run in parallel; a free worker takes the next build
// of the tenant that has waited longest (round robin of the tenants with
// work), so one tenant's backlog does not hold the others back.
//
// The queue is in memory only: durability comes from the event store. A
// build that was enqueued (and its bus message acknowledged) but did not
// finish before a crash or a shutdown is still unfinished in the event
// store, and the next start enqueues it again (projections.DB's
// UnfinishedBuilds, in request order, before taking new messages). Runner.Handle
// on a finished build is a no-op, so a build enqueued both by that resume
// and by a redelivered message does its work once.
type Scheduler struct {
	r       *Runner
	workers int
	log     *slog.Logger

	mu       sync.Mutex
	cond     *sync.Cond          // on mu: work, a finished build, ctx ends
	queues   map[string][]string // tenant → its queued builds, in order
	ready    []string            // tenants with queued builds and none running, in turn order
	running  map[string]string   // tenant → its running build
	known    map[string]bool     // builds queued or running
	queued   int
	draining bool
}

// NewScheduler returns a scheduler running r's builds on workers workers
// (at least 1). Call Run to start them.
func NewScheduler(r *Runner, workers int) *Scheduler {
	s := &Scheduler{r: r, workers: max(workers, 1), log: r.log,
		queues: map[string][]string{}, running: map[string]string{}, known: map[string]bool{}}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// Workers is how many builds may run at once.
func (s *Scheduler) Workers() int { return s.workers }

// HandleMessage is the bus handler: it enqueues the build of a
// BuildRequested event and acknowledges every message at once, so the bus
// is never blocked by a build. The event store, not the bus, keeps the
// request until the build finishes (see Scheduler).
func (s *Scheduler) HandleMessage(msg *message.Message) error {
	req, ev, ok := s.r.decodeRequest(msg)
	if !ok {
		return nil
	}
	tenant := req.TenantID
	if tenant == "" {
		tenant = ev.Tenant
	}
	s.Enqueue(tenant, req.BuildID)
	return nil
}

// Enqueue queues a build of tenant after the tenant's queued builds. A build
// already queued or running is not queued again: Enqueue returns false.
// Enqueue never blocks; queued builds start once Run runs.
func (s *Scheduler) Enqueue(tenant, buildID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.known[buildID] {
		s.log.Debug("build already queued or running", "build", buildID, "tenant", tenant)
		return false
	}
	s.known[buildID] = true
	s.queues[tenant] = append(s.queues[tenant], buildID)
	s.queued++
	if _, busy := s.running[tenant]; !busy && len(s.queues[tenant]) == 1 {
		s.ready = append(s.ready, tenant)
	}
	s.log.Debug("build queued", "build", buildID, "tenant", tenant, "queued", s.queued, "running", len(s.running))
	s.cond.Broadcast()
	return true
}

// Running is the number of builds running now.
func (s *Scheduler) Running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.running)
}

// Queued is the number of builds waiting for their turn.
func (s *Scheduler) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queued
}

// Run runs the workers until ctx ends, then returns once every worker
// stopped. The running builds see ctx cancelled: they record nothing
// (Runner.Handle) and start over after the next start; queued builds stay
// unfinished in the event store likewise. Call Run once.
func (s *Scheduler) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, s.wake)
	defer stop()
	s.log.Info("build scheduler running", "workers", s.workers)
	var wg sync.WaitGroup
	for range s.workers {
		wg.Go(func() { s.work(ctx) })
	}
	wg.Wait()
	return nil
}

// Drain stops starting builds (Run's workers then only finish what they
// run) and waits until none runs or ctx ends; it reports whether none runs.
// Queued builds stay queued: after a restart they are resumed from the
// event store. A shutdown drains for a while, then ends Run's context.
func (s *Scheduler) Drain(ctx context.Context) bool {
	stop := context.AfterFunc(ctx, s.wake)
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
	s.cond.Broadcast()
	for len(s.running) > 0 && ctx.Err() == nil {
		s.cond.Wait()
	}
	return len(s.running) == 0
}

// wake makes every waiter look at its context again.
func (s *Scheduler) wake() {
	s.mu.Lock()
	s.cond.Broadcast()
	s.mu.Unlock()
}

// work is one worker: it takes the next tenant's next build and runs it,
// until ctx ends.
func (s *Scheduler) work(ctx context.Context) {
	s.mu.Lock()
	for {
		for ctx.Err() == nil && (s.draining || len(s.ready) == 0) {
			s.cond.Wait()
		}
		if ctx.Err() != nil {
			s.mu.Unlock()
			return
		}
		tenant := s.ready[0]
		s.ready = s.ready[1:]
		q := s.queues[tenant]
		buildID := q[0]
		if len(q) == 1 {
			delete(s.queues, tenant)
		} else {
			s.queues[tenant] = q[1:]
		}
		s.queued--
		s.running[tenant] = buildID
		s.log.Debug("build dequeued", "build", buildID, "tenant", tenant, "queued", s.queued, "running", len(s.running))
		s.mu.Unlock()

		s.run(ctx, tenant, buildID)

		s.mu.Lock()
		delete(s.running, tenant)
		delete(s.known, buildID)
		if len(s.queues[tenant]) > 0 {
			s.ready = append(s.ready, tenant) // its next turn, after the others
		}
		s.cond.Broadcast()
	}
}

// run runs one build to its end. An outcome that could not be recorded is
// tried again with backoff, keeping the tenant's turn: its next builds
// wait, as its pointer must move in request order.
func (s *Scheduler) run(ctx context.Context, tenant, buildID string) {
	wait := schedulerRetryMin
	for {
		err := s.r.handleStored(ctx, buildID)
		if err == nil || ctx.Err() != nil {
			return
		}
		s.log.Error("build could not be run to its end; trying again", "build", buildID, "tenant", tenant,
			"in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, schedulerRetryMax)
	}
}
