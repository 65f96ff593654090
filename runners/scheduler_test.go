package runners_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/archive"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/infra/bus"
	"github.com/zipship/zipship/projections"
	"github.com/zipship/zipship/runners"
)

// schedWait bounds every wait of these tests; a passing run waits far less.
// It is a guard against a hang, never an assertion about speed.
const schedWait = 30 * time.Second

// startScheduler runs s until the returned stop (or the test's cleanup) ends
// its context; stop returns once Run returned.
func startScheduler(t *testing.T, s *runners.Scheduler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Scheduler.Run: %v", err)
				}
			case <-time.After(schedWait):
				t.Errorf("Scheduler.Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFinished waits until every build ended (success or failure).
func (e *env) waitFinished(ids ...string) {
	e.t.Helper()
	deadline := time.Now().Add(schedWait)
	for _, id := range ids {
		for {
			b, err := e.app.Build(context.Background(), id)
			if err != nil {
				e.t.Fatal(err)
			}
			if b.Status().Finished() {
				if b.Status() != domain.StatusSuccess {
					e.t.Fatalf("build %s ended %s", id, b.Status())
				}
				break
			}
			if time.Now().After(deadline) {
				e.t.Fatalf("build %s still %s", id, b.Status())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// waitIdle waits until s runs and queues nothing.
func waitIdle(t *testing.T, s *runners.Scheduler) {
	t.Helper()
	deadline := time.Now().Add(schedWait)
	for s.Running() != 0 || s.Queued() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("scheduler busy: %d running, %d queued", s.Running(), s.Queued())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// span is where a build's last attempt started and where the build ended,
// as global positions in the event store.
type span struct {
	id         string
	start, end int64
}

func (e *env) span(id string) span {
	e.t.Helper()
	s := span{id: id}
	for _, r := range e.rawStream(domain.BuildStream(id)) {
		switch r.Type {
		case "BuildStarted":
			s.start = r.Position
		case "BuildSucceeded", "BuildFailed":
			s.end = r.Position
		}
	}
	if s.start == 0 || s.end == 0 {
		e.t.Fatalf("build %s did not run to its end: %+v", id, s)
	}
	return s
}

// checkSerial fails unless the builds ran one after another in this order:
// each started after the one before ended.
func (e *env) checkSerial(what string, ids ...string) {
	e.t.Helper()
	for i := 1; i < len(ids); i++ {
		prev, cur := e.span(ids[i-1]), e.span(ids[i])
		if cur.start < prev.end {
			e.t.Errorf("%s: build %d (%s) started at position %d, before build %d (%s) ended at %d",
				what, i+1, cur.id, cur.start, i, prev.id, prev.end)
		}
	}
}

// checkLive fails unless the tenant's pointer and live site are build id's,
// whose site was built from staticSite(title).
func (e *env) checkLive(tenant, id, title string) {
	e.t.Helper()
	ptr, err := blob.ReadPointer(context.Background(), e.blobs, tenant)
	if err != nil || ptr.BuildID != id {
		e.t.Fatalf("pointer of %s = %+v, %v; want %s", tenant, ptr, err, id)
	}
	if _, body := e.get(liveHost(tenant), "/"); !strings.Contains(body, "<h1>"+title+"</h1>") {
		e.t.Errorf("live site of %s serves %q, want %q", tenant, body, title)
	}
}

// A tenant's builds run one at a time in request order even when workers
// are free: while acme's first build is held in its last step, globex's
// two builds run and end on other workers, and acme's next builds wait.
func TestSchedulerRunsATenantsBuildsInRequestOrder(t *testing.T) {
	e := newEnv(t)
	t0 := time.Now().Add(-time.Minute)
	var acme []string
	for i := range 3 {
		acme = append(acme, e.request("acme", t0.Add(time.Duration(i)*time.Second), makeZip(t, staticSite(fmt.Sprintf("acme %d", i))), nil))
	}
	globex := []string{
		e.request("globex", t0.Add(5*time.Second), makeZip(t, staticSite("globex 0")), nil),
		e.request("globex", t0.Add(6*time.Second), makeZip(t, staticSite("globex 1")), nil),
	}

	globexDone := make(chan struct{}) // globex's second build reached its last step
	var (
		mu                 sync.Mutex
		globexRefreshes    int
		acmeHeld, acmeLate bool
	)
	e.ref.setHook(func(ctx context.Context, tenant string) error {
		mu.Lock()
		defer mu.Unlock()
		switch tenant {
		case "globex":
			if globexRefreshes++; globexRefreshes == 2 {
				close(globexDone)
			}
		case "acme":
			if acmeHeld {
				return nil
			}
			acmeHeld = true
			mu.Unlock()
			select {
			case <-globexDone:
			case <-time.After(schedWait):
				acmeLate = true
			}
			mu.Lock()
		}
		return nil
	})

	s := runners.NewScheduler(e.runner, 4)
	for _, id := range acme {
		s.Enqueue("acme", id)
	}
	for _, id := range globex {
		s.Enqueue("globex", id)
	}
	if s.Queued() != 5 || s.Running() != 0 {
		t.Fatalf("before Run: %d queued, %d running", s.Queued(), s.Running())
	}
	startScheduler(t, s)
	e.waitFinished(append(acme, globex...)...)
	if acmeLate {
		t.Fatal("globex's builds did not run while acme's first build was held")
	}
	e.checkSerial("acme", acme...)
	e.checkSerial("globex", globex...)
	// globex's builds ran while acme's first one was held.
	if a, g := e.span(acme[0]), e.span(globex[1]); g.start > a.end {
		t.Errorf("globex's last build started at %d, after acme's first ended at %d", g.start, a.end)
	}
	for _, id := range append(acme, globex...) {
		if n := len(ofType[domain.BuildStarted](e.stream(domain.BuildStream(id)))); n != 1 {
			t.Errorf("build %s started %d times", id, n)
		}
	}
	e.checkLive("acme", acme[2], "acme 2")
	e.checkLive("globex", globex[1], "globex 1")
	waitIdle(t, s)
	e.workspaceEmpty()
}

// With two workers, two tenants' builds run at the same time: each build
// waits in its last step until the other one reached its own, which only
// happens if they overlap.
func TestSchedulerRunsTenantsInParallel(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	a := e.request("acme", now, makeZip(t, staticSite("acme")), nil)
	b := e.request("globex", now, makeZip(t, staticSite("globex")), nil)

	arrived := map[string]chan struct{}{"acme": make(chan struct{}), "globex": make(chan struct{})}
	other := map[string]string{"acme": "globex", "globex": "acme"}
	var (
		mu     sync.Mutex
		alone  []string
		closed = map[string]bool{}
	)
	e.ref.setHook(func(ctx context.Context, tenant string) error {
		mu.Lock()
		if !closed[tenant] {
			closed[tenant] = true
			close(arrived[tenant])
		}
		mu.Unlock()
		select {
		case <-arrived[other[tenant]]:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(schedWait):
			mu.Lock()
			alone = append(alone, tenant)
			mu.Unlock()
		}
		return nil
	})

	s := runners.NewScheduler(e.runner, 2)
	startScheduler(t, s)
	s.Enqueue("acme", a)
	s.Enqueue("globex", b)
	e.waitFinished(a, b)
	if len(alone) > 0 {
		t.Fatalf("builds of %v never overlapped with the other tenant's", alone)
	}
	sa, sb := e.span(a), e.span(b)
	if sb.start > sa.end || sa.start > sb.end {
		t.Errorf("no overlap in the event store: acme %+v, globex %+v", sa, sb)
	}
	e.checkLive("acme", a, "acme")
	e.checkLive("globex", b, "globex")
}

// With one worker everything runs serially, the tenants taking turns: a
// tenant with a backlog does not hold the others back.
func TestSchedulerWithOneWorkerRunsOneBuildAtATime(t *testing.T) {
	e := newEnv(t)
	t0 := time.Now().Add(-time.Minute)
	req := func(tenant string, i int) string {
		return e.request(tenant, t0.Add(time.Duration(i)*time.Second), makeZip(t, staticSite(fmt.Sprintf("%s %d", tenant, i))), nil)
	}
	a1, a2, a3 := req("acme", 1), req("acme", 2), req("acme", 3)
	b1 := req("globex", 4)
	c1 := req("initech", 5)

	var (
		mu      sync.Mutex
		maxBusy int
	)
	s := runners.NewScheduler(e.runner, 1)
	e.ref.setHook(func(ctx context.Context, tenant string) error {
		mu.Lock()
		maxBusy = max(maxBusy, s.Running())
		mu.Unlock()
		return nil
	})
	for _, r := range []struct{ tenant, id string }{{"acme", a1}, {"acme", a2}, {"acme", a3}, {"globex", b1}, {"initech", c1}} {
		if !s.Enqueue(r.tenant, r.id) {
			t.Fatalf("Enqueue(%s, %s) = false", r.tenant, r.id)
		}
	}
	startScheduler(t, s)
	e.waitFinished(a1, a2, a3, b1, c1)
	e.checkSerial("one worker, tenants in turn", a1, b1, c1, a2, a3)
	if maxBusy != 1 {
		t.Errorf("up to %d builds ran at once, want 1", maxBusy)
	}
	e.checkLive("acme", a3, "acme 3")
	waitIdle(t, s)
}

// A build queued or running is not queued again, whether it comes back
// through Enqueue or as a redelivered bus message; once it ended it can be
// enqueued again, and running it then does nothing.
func TestSchedulerEnqueueIsIdempotent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.request("acme", time.Now(), makeZip(t, staticSite("once")), nil)
	msg, _ := e.storedMessage(domain.BuildStream(id))

	s := runners.NewScheduler(e.runner, 2)
	if !s.Enqueue("acme", id) {
		t.Fatal("first Enqueue = false")
	}
	if s.Enqueue("acme", id) {
		t.Error("second Enqueue of a queued build = true")
	}
	if err := s.HandleMessage(msg); err != nil {
		t.Fatalf("HandleMessage = %v, want an ack", err)
	}
	if s.Queued() != 1 {
		t.Fatalf("queued %d, want 1", s.Queued())
	}

	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.ref.setHook(func(ctx context.Context, tenant string) error {
		once.Do(func() { close(entered) })
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	startScheduler(t, s)
	select {
	case <-entered:
	case <-time.After(schedWait):
		t.Fatal("the build did not reach its last step")
	}
	if s.Running() != 1 || s.Queued() != 0 {
		t.Fatalf("while running: %d running, %d queued", s.Running(), s.Queued())
	}
	if s.Enqueue("acme", id) {
		t.Error("Enqueue of a running build = true")
	}
	if err := s.HandleMessage(msg.Copy()); err != nil {
		t.Fatal(err)
	}
	if s.Running() != 1 || s.Queued() != 0 {
		t.Fatalf("after enqueuing the running build again: %d running, %d queued", s.Running(), s.Queued())
	}
	close(release)
	e.waitFinished(id)
	waitIdle(t, s)
	evs := e.stream(domain.BuildStream(id))
	if got, want := signature(evs), append([]string{"BuildRequested"}, staticSuccess(1)...); !slices.Equal(got, want) {
		t.Fatalf("build stream:\n got %q\nwant %q", got, want)
	}

	// Finished: a late redelivery is queued and acknowledged without work.
	head, _ := e.events.Head(ctx)
	if !s.Enqueue("acme", id) {
		t.Error("Enqueue of a finished build = false")
	}
	waitIdle(t, s)
	if h, _ := e.events.Head(ctx); h != head {
		t.Errorf("a finished build run again appended %d events", h-head)
	}
}

// A message that is not a build request is acknowledged and queues
// nothing.
func TestSchedulerHandleMessageAcksOtherEvents(t *testing.T) {
	e := newEnv(t)
	s := runners.NewScheduler(e.runner, 1)
	for name, msg := range map[string]*message.Message{
		"garbage":          message.NewMessage("1", []byte("\x00not json")),
		"other event type": message.NewMessage("2", []byte(`{"type":"TenantCreated","data":{}}`)),
		"bad request data": message.NewMessage("3", []byte(`{"type":"BuildRequested","data":{"buildId":42}}`)),
	} {
		if err := s.HandleMessage(msg); err != nil {
			t.Errorf("%s: HandleMessage = %v, want an ack", name, err)
		}
	}
	if s.Queued() != 0 {
		t.Errorf("queued %d", s.Queued())
	}
}

// After a crash the unfinished builds are found in the read models, in
// request order, and a fresh runner finishes them; the one the dead runner
// had started gets a new attempt, and a redelivered request changes
// nothing.
func TestSchedulerResumesUnfinishedBuildsAfterACrash(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Minute)
	done := e.request("globex", t0, makeZip(t, staticSite("globex")), nil)
	if err := e.runner.Handle(ctx, app.Meta{}, done); err != nil {
		t.Fatal(err)
	}
	started := e.request("acme", t0.Add(time.Second), makeZip(t, staticSite("acme started")), nil)
	e.appendByHand(started,
		domain.BuildStarted{BuildID: started, Attempt: 1, Runner: "dead-runner", At: time.Now().UTC()},
		domain.BuildStepStarted{BuildID: started, Attempt: 1, Step: domain.StepValidate, At: time.Now().UTC()})
	pending := e.request("acme", t0.Add(2*time.Second), makeZip(t, staticSite("acme pending")), nil)
	other := e.request("initech", t0.Add(3*time.Second), makeZip(t, staticSite("initech")), nil)

	// What serve does at start: read models caught up with the event store,
	// then the unfinished builds in request order, before any message.
	rm, err := projections.Open(filepath.Join(t.TempDir(), "readmodels.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rm.Close() })
	projector := projections.NewProjector(e.events, rm, quietLog())
	pctx, stopProjector := context.WithCancel(ctx)
	projectorDone := make(chan error, 1)
	go func() { projectorDone <- projector.Run(pctx) }()
	t.Cleanup(func() {
		stopProjector()
		if err := <-projectorDone; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("projector: %v", err)
		}
	})
	waitProjected := func() {
		t.Helper()
		head, err := e.events.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, schedWait)
		defer cancel()
		if err := projector.WaitFor(wctx, head); err != nil {
			t.Fatal(err)
		}
	}
	waitProjected()
	refs, err := rm.UnfinishedBuilds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []projections.BuildRef{{ID: started, TenantID: "acme"}, {ID: pending, TenantID: "acme"}, {ID: other, TenantID: "initech"}}
	if !slices.Equal(refs, want) {
		t.Fatalf("UnfinishedBuilds = %+v, want %+v", refs, want)
	}

	fresh := runners.New(e.app, runners.Config{Name: "fresh-runner", WorkDir: e.work,
		ZipLimits: archive.DefaultLimits(), Refresher: e.ref, Log: quietLog()})
	s := runners.NewScheduler(fresh, 2)
	for _, r := range refs {
		s.Enqueue(r.TenantID, r.ID)
	}
	// The relay redelivers the request of the started build, and of the
	// finished one.
	for _, id := range []string{started, done} {
		msg, _ := e.storedMessage(domain.BuildStream(id))
		if err := s.HandleMessage(msg); err != nil {
			t.Fatal(err)
		}
	}
	if s.Queued() != 4 {
		t.Fatalf("queued %d, want the 3 unfinished builds and the finished one", s.Queued())
	}
	startScheduler(t, s)
	e.waitFinished(started, pending, other)
	waitIdle(t, s)

	evs := e.stream(domain.BuildStream(started))
	wantSig := append([]string{"BuildRequested", "BuildStarted#1", "validate>"}, staticSuccess(2)...)
	if got := signature(evs); !slices.Equal(got, wantSig) {
		t.Fatalf("resumed build:\n got %q\nwant %q", got, wantSig)
	}
	if got := ofType[domain.BuildStarted](evs); got[1].Runner != "fresh-runner" {
		t.Errorf("attempt 2 ran on %q", got[1].Runner)
	}
	if got, want := signature(e.stream(domain.BuildStream(pending))), append([]string{"BuildRequested"}, staticSuccess(1)...); !slices.Equal(got, want) {
		t.Fatalf("pending build:\n got %q\nwant %q", got, want)
	}
	// A resumed build's events are caused by its stored request, as when
	// the request comes from the bus.
	raw := e.rawStream(domain.BuildStream(pending))
	for _, r := range raw[1:] {
		if r.CausationID != raw[0].ID.String() || r.CorrelationID != "corr-"+pending {
			t.Errorf("%s: causation %q correlation %q", r.Type, r.CausationID, r.CorrelationID)
		}
	}
	if got, want := signature(e.stream(domain.BuildStream(done))), append([]string{"BuildRequested"}, staticSuccess(1)...); !slices.Equal(got, want) {
		t.Fatalf("finished build ran again:\n got %q\nwant %q", got, want)
	}
	e.checkSerial("acme", started, pending)
	e.checkLive("acme", pending, "acme pending")
	e.checkLive("initech", other, "initech")

	waitProjected()
	if refs, err := rm.UnfinishedBuilds(ctx); err != nil || len(refs) != 0 {
		t.Errorf("after the resume: unfinished %+v, %v", refs, err)
	}
	e.workspaceEmpty()
}

// Builds are run in the order they are enqueued; should an older build of
// a tenant run after a newer one (enqueued late), it publishes but never
// moves the pointer back.
func TestSchedulerOlderBuildNeverMovesThePointerBack(t *testing.T) {
	e := newEnv(t)
	t0 := time.Now().Add(-time.Minute)
	older := e.request("acme", t0, makeZip(t, staticSite("older")), nil)
	newer := e.request("acme", t0.Add(time.Second), makeZip(t, staticSite("newer")), nil)

	s := runners.NewScheduler(e.runner, 4)
	s.Enqueue("acme", newer)
	s.Enqueue("acme", older)
	startScheduler(t, s)
	e.waitFinished(newer, older)
	e.checkSerial("acme", newer, older)

	d, _ := stepDetail(e.stream(domain.BuildStream(older)), domain.StepActivate)
	if !strings.Contains(d, "not activated") || !strings.Contains(d, newer) {
		t.Errorf("older build's activate detail = %q", d)
	}
	site := e.stream(domain.SiteStream("acme"))
	if len(site) != 1 || site[0].(domain.DeploymentActivated).BuildID != newer {
		t.Fatalf("site stream = %+v", site)
	}
	e.checkLive("acme", newer, "newer")
}

// Drain stops starting builds and waits for the running ones; ending Run's
// context interrupts a running build, which records nothing and is left for
// the next start, like the builds still queued.
func TestSchedulerDrainAndShutdown(t *testing.T) {
	e := newEnv(t)
	t0 := time.Now().Add(-time.Minute)
	first := e.request("acme", t0, makeZip(t, staticSite("first")), nil)
	second := e.request("acme", t0.Add(time.Second), makeZip(t, staticSite("second")), nil)
	third := e.request("globex", t0.Add(2*time.Second), makeZip(t, staticSite("third")), nil)

	entered, release := make(chan string, 3), make(chan struct{})
	e.ref.setHook(func(ctx context.Context, tenant string) error {
		entered <- tenant
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	s := runners.NewScheduler(e.runner, 1)
	s.Enqueue("acme", first)
	s.Enqueue("acme", second)
	s.Enqueue("globex", third)
	stop := startScheduler(t, s)
	select {
	case tenant := <-entered:
		if tenant != "acme" {
			t.Fatalf("%s's build ran first", tenant)
		}
	case <-time.After(schedWait):
		t.Fatal("the first build did not reach its last step")
	}

	expired, cancel := context.WithCancel(context.Background())
	cancel()
	if s.Drain(expired) {
		t.Fatal("Drain with an ended context reported no running build while one runs")
	}
	close(release)
	dctx, cancelDrain := context.WithTimeout(context.Background(), schedWait)
	defer cancelDrain()
	if !s.Drain(dctx) {
		t.Fatal("Drain: the build still runs")
	}
	e.waitFinished(first)
	if s.Running() != 0 || s.Queued() != 2 {
		t.Fatalf("drained: %d running, %d queued; want 0 and 2", s.Running(), s.Queued())
	}
	stop()
	for _, id := range []string{second, third} {
		if got := signature(e.stream(domain.BuildStream(id))); !slices.Equal(got, []string{"BuildRequested"}) {
			t.Errorf("build %s started during the drain: %q", id, got)
		}
	}

	// Shutdown in the middle of a build: nothing recorded.
	release = make(chan struct{})
	s = runners.NewScheduler(e.runner, 1)
	s.Enqueue("acme", second)
	stop = startScheduler(t, s)
	select {
	case <-entered:
	case <-time.After(schedWait):
		t.Fatal("the second build did not reach its last step")
	}
	stop()
	evs := e.stream(domain.BuildStream(second))
	last := signature(evs)[len(evs)-1]
	if last != "invalidate>" {
		t.Errorf("an interrupted build recorded %q after its last step started", last)
	}
	if b, err := e.app.Build(context.Background(), second); err != nil || b.Status().Finished() {
		t.Errorf("interrupted build: %v, %v; want unfinished", b.Status(), err)
	}
	e.workspaceEmpty()
}

// The embedded wiring of `serve` with a scheduler: relay → GoChannel →
// router → Scheduler.HandleMessage, which acknowledges at once.
func TestRelayDeliversBuildsToScheduler(t *testing.T) {
	e := newEnv(t)
	log := quietLog()
	s := runners.NewScheduler(e.runner, 2)
	startScheduler(t, s)
	pubsub := bus.NewInProcess(log)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: time.Second}, bus.Logger(log))
	if err != nil {
		t.Fatal(err)
	}
	router.AddConsumerHandler("runner", bus.EventsTopic, pubsub, s.HandleMessage)
	ctx, cancel := context.WithCancel(context.Background())
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(ctx) }()
	relayDone := make(chan error, 1)
	t.Cleanup(func() {
		cancel()
		router.Close()
		pubsub.Close()
		<-routerDone
		<-relayDone
	})
	select {
	case <-router.Running():
	case <-time.After(schedWait):
		t.Fatal("router did not start")
	}
	relay := bus.NewRelay(e.events, pubsub, bus.FileCheckpoint(filepath.Join(t.TempDir(), "cp")), log)
	go func() { relayDone <- relay.Run(ctx) }()

	t0 := time.Now().Add(-time.Minute)
	a1 := e.request("acme", t0, makeZip(t, staticSite("acme one")), nil)
	b1 := e.request("globex", t0.Add(time.Second), makeZip(t, staticSite("globex one")), nil)
	a2 := e.request("acme", t0.Add(2*time.Second), makeZip(t, staticSite("acme two")), nil)
	e.waitFinished(a1, b1, a2)
	e.checkSerial("acme", a1, a2)
	e.checkLive("acme", a2, "acme two")
	e.checkLive("globex", b1, "globex one")
}
