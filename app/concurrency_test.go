package app_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/eventstore"
)

func TestConcurrentStartRunOneWins(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.request("acme", time.Now())
	e.barrier.arm(domain.BuildStream(id), 2)

	type result struct {
		runner string
		run    *app.Run
		err    error
	}
	results := make(chan result, 2)
	for _, name := range []string{"runner-a", "runner-b"} {
		go func() {
			run, err := e.app.StartRun(ctx, app.Meta{}, id, name)
			results <- result{name, run, err}
		}()
	}
	var winner *result
	conflicts := 0
	for range 2 {
		r := <-results
		switch {
		case r.err == nil:
			if winner != nil {
				t.Fatalf("both runners started the build: %s and %s", winner.runner, r.runner)
			}
			winner = &r
		case eventstore.IsConflict(r.err):
			conflicts++
		default:
			t.Fatalf("%s: unexpected error %v", r.runner, r.err)
		}
	}
	if winner == nil || conflicts != 1 {
		t.Fatalf("winner %v, %d conflicts; want one of each", winner, conflicts)
	}
	if winner.run.Build().Attempt() != 1 || winner.run.Build().Status() != domain.StatusBuilding {
		t.Errorf("winner's build: attempt %d, %s", winner.run.Build().Attempt(), winner.run.Build().Status())
	}
	evs := e.stream(domain.BuildStream(id))
	if len(evs) != 2 {
		t.Fatalf("stream has %d events, want BuildRequested + one BuildStarted", len(evs))
	}
	st, ok := evs[1].(domain.BuildStarted)
	if !ok || st.Attempt != 1 || st.Runner != winner.runner {
		t.Errorf("stream[1] = %#v, want attempt 1 by %s", evs[1], winner.runner)
	}
}

// Once another runner started a new attempt, the old run's appends fail
// with a conflict instead of interleaving with the new attempt's events.
func TestStaleRunCannotInterleave(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.request("acme", time.Now())
	old, err := e.app.StartRun(ctx, app.Meta{}, id, "old")
	if err != nil {
		t.Fatal(err)
	}
	// The request is redelivered to another runner, which takes over.
	cur, err := e.app.StartRun(ctx, app.Meta{}, id, "new")
	if err != nil {
		t.Fatal(err)
	}
	if cur.Build().Attempt() != 2 {
		t.Fatalf("takeover attempt %d, want 2", cur.Build().Attempt())
	}
	ran := false
	err = old.Step(ctx, domain.StepValidate, func(context.Context) (string, error) { ran = true; return "", nil })
	if !eventstore.IsConflict(err) {
		t.Fatalf("old run's step = %v, want a conflict", err)
	}
	if ran {
		t.Error("the old run's step body ran although its start could not be recorded")
	}
	if _, err := old.Fail(ctx, domain.StepValidate, "x", true); !eventstore.IsConflict(err) {
		t.Errorf("old run's Fail = %v, want a conflict", err)
	}
	if err := cur.Step(ctx, domain.StepValidate, func(context.Context) (string, error) { return "ok", nil }); err != nil {
		t.Fatalf("current run's step: %v", err)
	}
	evs := e.stream(domain.BuildStream(id))
	if len(evs) != 5 { // requested, started 1, started 2, step started, step finished
		t.Fatalf("stream has %d events", len(evs))
	}
	for _, ev := range evs[3:] {
		switch ev := ev.(type) {
		case domain.BuildStepStarted:
			if ev.Attempt != 2 {
				t.Errorf("step started by attempt %d", ev.Attempt)
			}
		case domain.BuildStepFinished:
			if ev.Attempt != 2 {
				t.Errorf("step finished by attempt %d", ev.Attempt)
			}
		default:
			t.Errorf("unexpected %T", ev)
		}
	}
}

func TestConcurrentAddMemberAllApplied(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.app.CreateTenant(ctx, app.Meta{}, "alice", "acme", "Acme"); err != nil {
		t.Fatal(err)
	}
	const n = 10
	// All ten decide on the same tenant version before any appends.
	e.barrier.arm(domain.TenantStream("acme"), n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.app.AddMember(ctx, app.Meta{}, "alice", "acme", fmt.Sprintf("user-%d", i), domain.RoleMember)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("AddMember user-%d: %v", i, err)
		}
	}
	tn, err := e.app.Tenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	members := tn.Members()
	if len(members) != n+1 {
		t.Errorf("%d members, want %d: %v", len(members), n+1, members)
	}
	for i := range n {
		if r, ok := members[fmt.Sprintf("user-%d", i)]; !ok || r != domain.RoleMember {
			t.Errorf("user-%d: %q %v", i, r, ok)
		}
	}
	if evs := e.stream(domain.TenantStream("acme")); len(evs) != n+1 {
		t.Errorf("tenant stream has %d events, want %d", len(evs), n+1)
	}
}

// A decision remade after a conflict sees the other writer's change: two
// admins promoting the same user concurrently yield one change and one
// ErrAlreadyMember, not two role changes.
func TestConcurrentSameChangeDecidedOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.app.CreateTenant(ctx, app.Meta{}, "alice", "acme", ""); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob", "carol"} {
		if _, err := e.app.AddMember(ctx, app.Meta{}, "alice", "acme", u, domain.RoleAdmin); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.app.AddMember(ctx, app.Meta{}, "alice", "acme", "dave", domain.RoleMember); err != nil {
		t.Fatal(err)
	}
	e.barrier.arm(domain.TenantStream("acme"), 2)
	errs := make(chan error, 2)
	for _, actor := range []string{"bob", "carol"} {
		go func() {
			_, err := e.app.AddMember(ctx, app.Meta{}, actor, "acme", "dave", domain.RoleAdmin)
			errs <- err
		}()
	}
	var ok, already int
	for range 2 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, domain.ErrAlreadyMember):
			already++
		default:
			t.Fatalf("unexpected %v", err)
		}
	}
	if ok != 1 || already != 1 {
		t.Fatalf("%d applied, %d already; want 1 and 1", ok, already)
	}
	if got := len(ofType[domain.MemberRoleChanged](e.stream(domain.TenantStream("acme")))); got != 1 {
		t.Errorf("%d role changes recorded", got)
	}
}

func TestConcurrentCreateTenant(t *testing.T) {
	t.Run("both decide before either appends", func(t *testing.T) {
		e := newEnv(t)
		e.barrier.arm(domain.TenantStream("acme"), 2)
		checkOneCreated(t, e, 2)
	})
	t.Run("many racers", func(t *testing.T) {
		checkOneCreated(t, newEnv(t), 8)
	})
}

func checkOneCreated(t *testing.T, e *env, n int) {
	t.Helper()
	ctx := context.Background()
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := e.app.CreateTenant(ctx, app.Meta{}, fmt.Sprintf("owner-%d", i), "acme", "Acme")
			errs <- err
		}()
	}
	created := 0
	for range n {
		switch err := <-errs; {
		case err == nil:
			created++
		case errors.Is(err, domain.ErrTenantExists):
		default:
			t.Fatalf("CreateTenant: %v", err)
		}
	}
	if created != 1 {
		t.Fatalf("%d creations succeeded, want 1", created)
	}
	evs := e.stream(domain.TenantStream("acme"))
	if len(evs) != 1 {
		t.Fatalf("tenant stream has %d events", len(evs))
	}
	tn, err := e.app.Tenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(tn.Members()) != 1 {
		t.Errorf("members %v", tn.Members())
	}
}

// Concurrent activations of one tenant's builds never move the pointer
// back: whatever the interleaving, the newest build ends up live and the
// others are either activated before it or refused as superseded.
func TestConcurrentActivationsKeepNewest(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	const n = 6
	builds := make([]*domain.Build, n)
	for i := range n {
		builds[i] = e.published("acme", t0.Add(time.Duration(i)*time.Second))
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.app.Activate(ctx, app.Meta{}, builds[i], "alice")
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil && !errors.Is(err, domain.ErrSuperseded) {
			t.Errorf("build %d: %v", i, err)
		}
	}
	if errs[n-1] != nil {
		t.Errorf("the newest build was not activated: %v", errs[n-1])
	}
	s, err := e.app.Site(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if s.Current() != builds[n-1].ID() {
		t.Errorf("live %s, want the newest %s", s.Current(), builds[n-1].ID())
	}
	// Versions only move forward along the site stream.
	var last string
	for _, ev := range e.stream(domain.SiteStream("acme")) {
		a := ev.(domain.DeploymentActivated)
		if last != "" && a.Version <= last {
			t.Errorf("activation of %s after %s", a.Version, last)
		}
		last = a.Version
	}
}

func ofType[T domain.Event](evs []domain.Event) []T {
	var out []T
	for _, ev := range evs {
		if v, ok := ev.(T); ok {
			out = append(out, v)
		}
	}
	return out
}
