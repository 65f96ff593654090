package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/eventstore"
	"github.com/zipship/zipship/infra/eventstore/sqlite"
	"github.com/zipship/zipship/projections"
)

// waitTimeout bounds every wait for the projector; a passing run waits far
// less.
const waitTimeout = 15 * time.Second

// t0 has nanoseconds so that the tests see any loss of time precision.
var t0 = time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC)

// ---- fixtures ------------------------------------------------------------

func openStore(t testing.TB) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatalf("open event store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openDB(t testing.TB, path string) *projections.DB {
	t.Helper()
	db, err := projections.Open(path)
	if err != nil {
		t.Fatalf("open read models: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newDB(t testing.TB) *projections.DB {
	t.Helper()
	return openDB(t, filepath.Join(t.TempDir(), "read.db"))
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startProjector runs a Projector in the background. The returned stop
// cancels it and returns Run's result; cleanup stops it too and fails the
// test if Run failed.
func startProjector(t testing.TB, store eventstore.Store, db *projections.DB) (*projections.Projector, func() error) {
	t.Helper()
	p := projections.NewProjector(store, db, testLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var (
		once sync.Once
		err  error
	)
	stop := func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("projector: %v", err)
		}
	})
	return p, stop
}

func waitFor(t testing.TB, p *projections.Projector, pos int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := p.WaitFor(ctx, pos); err != nil {
		t.Fatalf("WaitFor(%d): %v", pos, err)
	}
}

// streamOf is the stream an event belongs to.
func streamOf(t testing.TB, e domain.Event) string {
	t.Helper()
	switch e := e.(type) {
	case domain.TenantCreated:
		return domain.TenantStream(e.TenantID)
	case domain.MemberAdded:
		return domain.TenantStream(e.TenantID)
	case domain.MemberRoleChanged:
		return domain.TenantStream(e.TenantID)
	case domain.MemberRemoved:
		return domain.TenantStream(e.TenantID)
	case domain.BuildRequested:
		return domain.BuildStream(e.BuildID)
	case domain.BuildStarted:
		return domain.BuildStream(e.BuildID)
	case domain.BuildStepStarted:
		return domain.BuildStream(e.BuildID)
	case domain.BuildStepFinished:
		return domain.BuildStream(e.BuildID)
	case domain.BuildAttemptFailed:
		return domain.BuildStream(e.BuildID)
	case domain.BuildSucceeded:
		return domain.BuildStream(e.BuildID)
	case domain.BuildFailed:
		return domain.BuildStream(e.BuildID)
	case domain.DeploymentActivated:
		return domain.SiteStream(e.TenantID)
	case domain.DeploymentRolledBack:
		return domain.SiteStream(e.TenantID)
	}
	t.Fatalf("no stream for %T", e)
	return ""
}

// envelope encodes a domain event the way the application does.
func envelope(t testing.TB, tenant string, e domain.Event) eventstore.Event {
	t.Helper()
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatalf("encode %T: %v", e, err)
	}
	return eventstore.Event{Type: e.EventType(), SchemaVersion: domain.SchemaVersion, Tenant: tenant, Data: data}
}

// appendEvents appends each event to its stream and returns the position of
// the last one.
func appendEvents(t testing.TB, store eventstore.Store, tenant string, evs ...domain.Event) int64 {
	t.Helper()
	var pos int64
	for _, e := range evs {
		res, err := store.Append(context.Background(), streamOf(t, e), eventstore.Any, envelope(t, tenant, e))
		if err != nil {
			t.Fatalf("append %s: %v", e.EventType(), err)
		}
		pos = res.Position
	}
	return pos
}

// clock hands out increasing event times.
type clock struct{ now time.Time }

func (c *clock) after(d time.Duration) time.Time {
	c.now = c.now.Add(d)
	return c.now
}

func requested(c *clock, tenant, id, user string) domain.BuildRequested {
	at := c.after(time.Second)
	return domain.BuildRequested{
		BuildID:     id,
		TenantID:    tenant,
		Version:     fmt.Sprintf("v%d", at.UnixMilli()),
		RequestedBy: user,
		Source: domain.Source{Key: "tenants/" + tenant + "/builds/" + id + "/source.zip",
			SHA256: fmt.Sprintf("%064x", len(id)*7919), Size: 4096 + int64(len(id)), Files: 12, Uncompressed: 20000},
		Config:   domain.BuildConfig{Framework: "vite", BuildCommand: "npm run build", OutputDir: "dist", NodeVersion: "20"},
		EnvNames: []string{"API_URL", "FEATURE_FLAG"},
		At:       at,
	}
}

// runSteps returns the events of steps run one after another in an attempt,
// each taking d.
func runSteps(c *clock, id string, attempt int, steps []domain.Step, d time.Duration) []domain.Event {
	var out []domain.Event
	for _, s := range steps {
		out = append(out, domain.BuildStepStarted{BuildID: id, Attempt: attempt, Step: s, At: c.after(5 * time.Millisecond)})
		out = append(out, domain.BuildStepFinished{BuildID: id, Attempt: attempt, Step: s, DurationMs: d.Milliseconds(),
			Detail: "ok " + string(s), At: c.after(d)})
	}
	return out
}

// successfulBuild returns the whole history of a build that succeeds at its
// first attempt, and the BuildSucceeded event.
func successfulBuild(c *clock, tenant, id, user string) ([]domain.Event, domain.BuildSucceeded) {
	req := requested(c, tenant, id, user)
	evs := []domain.Event{req, domain.BuildStarted{BuildID: id, Attempt: 1, Runner: "runner-1", At: c.after(time.Second)}}
	evs = append(evs, runSteps(c, id, 1, domain.Steps[:11], 200*time.Millisecond)...)
	at := c.after(10 * time.Millisecond)
	ok := domain.BuildSucceeded{BuildID: id, Attempt: 1, ManifestKey: "manifests/" + id + ".json", Files: 17,
		Bytes: 123456, DurationMs: at.Sub(req.At).Milliseconds(), At: at}
	return append(evs, ok), ok
}

func getBuild(t testing.TB, db *projections.DB, tenant, id string) *projections.Build {
	t.Helper()
	b, err := db.GetBuild(context.Background(), tenant, id)
	if err != nil {
		t.Fatalf("GetBuild(%s, %s): %v", tenant, id, err)
	}
	return b
}

func checkTime(t testing.TB, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) || got.Location() != time.UTC {
		t.Errorf("%s = %v, want %v in UTC", what, got, want.UTC())
	}
}

func checkTimePtr(t testing.TB, what string, got *time.Time, want time.Time) {
	t.Helper()
	if got == nil {
		t.Errorf("%s = nil, want %v", what, want.UTC())
		return
	}
	checkTime(t, what, *got, want)
}

// ---- build lifecycle ------------------------------------------------------

func TestSuccessfulBuild(t *testing.T) {
	store, db := openStore(t), newDB(t)
	p, _ := startProjector(t, store, db)
	c := &clock{now: t0}

	evs, ok := successfulBuild(c, "acme", "b1", "alice")
	req := evs[0].(domain.BuildRequested)
	req.IdempotencyKey = "key-1"
	// A non-UTC time must come back as the same instant in UTC.
	req.At = req.At.In(time.FixedZone("CEST", 2*3600))
	evs[0] = req
	start := evs[1].(domain.BuildStarted)

	// Requested: pending, no steps.
	waitFor(t, p, appendEvents(t, store, "acme", req))
	b := getBuild(t, db, "acme", "b1")
	if b.Status != domain.StatusPending || b.Attempt != 0 || b.StartedAt != nil || b.FinishedAt != nil || len(b.Steps) != 0 {
		t.Errorf("after request: %+v", b)
	}
	checkTime(t, "RequestedAt", b.RequestedAt, req.At)
	if b.ID != "b1" || b.TenantID != "acme" || b.Version != req.Version || b.RequestedBy != "alice" ||
		b.SourceSize != req.Source.Size || b.SourceSHA256 != req.Source.SHA256 ||
		!reflect.DeepEqual(b.EnvNames, req.EnvNames) || !reflect.DeepEqual(b.Config, req.Config) || b.Error != nil {
		t.Errorf("after request: %+v", b)
	}

	// Started, first step running.
	waitFor(t, p, appendEvents(t, store, "acme", evs[1:3]...))
	b = getBuild(t, db, "acme", "b1")
	if b.Status != domain.StatusBuilding || b.Attempt != 1 {
		t.Errorf("after start: status %s attempt %d", b.Status, b.Attempt)
	}
	checkTimePtr(t, "StartedAt", b.StartedAt, start.At)
	if len(b.Steps) != 1 || b.Steps[0].Name != domain.StepValidate || b.Steps[0].Status != projections.StepRunning ||
		b.Steps[0].FinishedAt != nil {
		t.Errorf("after first step start: steps %+v", b.Steps)
	}

	// The rest.
	waitFor(t, p, appendEvents(t, store, "acme", evs[3:]...))
	b = getBuild(t, db, "acme", "b1")
	if b.Status != domain.StatusSuccess || b.Attempt != 1 || b.Error != nil || b.ManifestKey != ok.ManifestKey ||
		b.Files != ok.Files || b.Bytes != ok.Bytes || b.DurationMs != ok.DurationMs {
		t.Errorf("after success: %+v", b)
	}
	checkTimePtr(t, "FinishedAt", b.FinishedAt, ok.At)
	checkTimePtr(t, "StartedAt", b.StartedAt, start.At)

	var stepEvents []domain.Event
	for _, e := range evs {
		switch e.(type) {
		case domain.BuildStepStarted, domain.BuildStepFinished:
			stepEvents = append(stepEvents, e)
		}
	}
	if len(b.Steps) != len(stepEvents)/2 {
		t.Fatalf("%d steps, want %d: %+v", len(b.Steps), len(stepEvents)/2, b.Steps)
	}
	for i, s := range b.Steps {
		st := stepEvents[2*i].(domain.BuildStepStarted)
		fin := stepEvents[2*i+1].(domain.BuildStepFinished)
		if s.Name != st.Step || s.Attempt != 1 || s.Status != projections.StepDone || s.DurationMs != fin.DurationMs ||
			s.Detail != fin.Detail {
			t.Errorf("step %d = %+v, want %s done in %d ms", i, s, st.Step, fin.DurationMs)
		}
		checkTime(t, "step StartedAt", s.StartedAt, st.At)
		checkTimePtr(t, "step FinishedAt", s.FinishedAt, fin.At)
	}

	// The JSON the API shows is camelCase.
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"tenantId":"acme"`, `"requestedAt":`, `"startedAt":`, `"finishedAt":`, `"durationMs":`,
		`"manifestKey":`, `"sourceSize":`, `"envNames":["API_URL","FEATURE_FLAG"]`, `"buildCommand":"npm run build"`,
		`"steps":[{"name":"validate","attempt":1,"status":"done"`} {
		if !strings.Contains(string(data), key) {
			t.Errorf("JSON lacks %s: %s", key, data)
		}
	}
	if strings.Contains(string(data), `"error"`) {
		t.Errorf("a successful build has no error: %s", data)
	}
}

func TestFailedBuild(t *testing.T) {
	store, db := openStore(t), newDB(t)
	p, _ := startProjector(t, store, db)
	c := &clock{now: t0}

	req := requested(c, "acme", "b1", "alice")
	evs := []domain.Event{req, domain.BuildStarted{BuildID: "b1", Attempt: 1, Runner: "r", At: c.after(time.Second)}}
	evs = append(evs, runSteps(c, "b1", 1, domain.Steps[:6], 100*time.Millisecond)...)
	install := domain.BuildStepStarted{BuildID: "b1", Attempt: 1, Step: domain.StepInstall, At: c.after(time.Millisecond)}
	failed := domain.BuildFailed{BuildID: "b1", Attempt: 1, Step: domain.StepInstall,
		Error: "npm ERR! 404 'left-pad@9.9.9' is not in this registry", Retryable: false, At: c.after(7 * time.Second)}
	evs = append(evs, install, failed)
	waitFor(t, p, appendEvents(t, store, "acme", evs...))

	b := getBuild(t, db, "acme", "b1")
	if b.Status != domain.StatusFailed {
		t.Errorf("status %s, want failed", b.Status)
	}
	want := projections.BuildError{Step: domain.StepInstall, Message: failed.Error, Retryable: false}
	if b.Error == nil || *b.Error != want {
		t.Errorf("error %+v, want %+v", b.Error, want)
	}
	checkTimePtr(t, "FinishedAt", b.FinishedAt, failed.At)
	if b.DurationMs != failed.At.Sub(req.At).Milliseconds() {
		t.Errorf("duration %d ms, want %d", b.DurationMs, failed.At.Sub(req.At).Milliseconds())
	}
	if b.ManifestKey != "" || b.Files != 0 {
		t.Errorf("a failed build has no output: %+v", b)
	}
	if len(b.Steps) != 7 {
		t.Fatalf("%d steps, want 7: %+v", len(b.Steps), b.Steps)
	}
	for _, s := range b.Steps[:6] {
		if s.Status != projections.StepDone {
			t.Errorf("step %s: %s, want done", s.Name, s.Status)
		}
	}
	last := b.Steps[6]
	if last.Name != domain.StepInstall || last.Status != projections.StepFailed || last.Detail != failed.Error ||
		last.DurationMs != failed.At.Sub(install.At).Milliseconds() {
		t.Errorf("failed step = %+v", last)
	}
	checkTime(t, "failed step StartedAt", last.StartedAt, install.At)
	checkTimePtr(t, "failed step FinishedAt", last.FinishedAt, failed.At)

	list, total, err := db.ListBuilds(context.Background(), "acme", 1, 10)
	if err != nil || total != 1 || len(list) != 1 || list[0].Error == nil || *list[0].Error != want || list[0].Steps != nil {
		t.Errorf("ListBuilds = %+v, %d, %v", list, total, err)
	}
}

func TestRetriedAttemptThenSuccess(t *testing.T) {
	store, db := openStore(t), newDB(t)
	p, _ := startProjector(t, store, db)
	c := &clock{now: t0}

	req := requested(c, "acme", "b1", "alice")
	start1 := domain.BuildStarted{BuildID: "b1", Attempt: 1, Runner: "r1", At: c.after(time.Second)}
	evs := []domain.Event{req, start1}
	evs = append(evs, runSteps(c, "b1", 1, domain.Steps[:2], 50*time.Millisecond)...)
	download := domain.BuildStepStarted{BuildID: "b1", Attempt: 1, Step: domain.StepDownload, At: c.after(time.Millisecond)}
	attemptFailed := domain.BuildAttemptFailed{BuildID: "b1", Attempt: 1, Step: domain.StepDownload,
		Error: "blob store: connection refused", RetryInMs: 2000, At: c.after(3 * time.Second)}
	evs = append(evs, download, attemptFailed)
	waitFor(t, p, appendEvents(t, store, "acme", evs...))

	// Between attempts: still building, with the attempt's error.
	b := getBuild(t, db, "acme", "b1")
	wantErr := projections.BuildError{Step: domain.StepDownload, Message: attemptFailed.Error, Retryable: true}
	if b.Status != domain.StatusBuilding || b.Attempt != 1 || b.Error == nil || *b.Error != wantErr || b.FinishedAt != nil {
		t.Errorf("after failed attempt: %+v (error %+v)", b, b.Error)
	}
	if n := len(b.Steps); n != 3 || b.Steps[2].Status != projections.StepFailed || b.Steps[2].Name != domain.StepDownload {
		t.Fatalf("after failed attempt: steps %+v", b.Steps)
	}
	checkTimePtr(t, "failed step FinishedAt", b.Steps[2].FinishedAt, attemptFailed.At)

	// Attempt 2 succeeds.
	c.after(2 * time.Second)
	evs = []domain.Event{domain.BuildStarted{BuildID: "b1", Attempt: 2, Runner: "r2", At: c.after(time.Millisecond)}}
	evs = append(evs, runSteps(c, "b1", 2, domain.Steps[:11], 100*time.Millisecond)...)
	at := c.after(time.Millisecond)
	ok := domain.BuildSucceeded{BuildID: "b1", Attempt: 2, ManifestKey: "manifests/b1.json", Files: 3, Bytes: 99,
		DurationMs: at.Sub(req.At).Milliseconds(), At: at}
	waitFor(t, p, appendEvents(t, store, "acme", append(evs, ok)...))

	b = getBuild(t, db, "acme", "b1")
	if b.Status != domain.StatusSuccess || b.Attempt != 2 || b.Error != nil || b.DurationMs != ok.DurationMs {
		t.Errorf("after success: %+v (error %+v)", b, b.Error)
	}
	checkTimePtr(t, "StartedAt (first attempt)", b.StartedAt, start1.At)
	if len(b.Steps) != 3+11 {
		t.Fatalf("%d steps, want 14", len(b.Steps))
	}
	for i, s := range b.Steps {
		wantAttempt, wantStatus := 2, projections.StepDone
		var wantStep domain.Step
		if i < 3 {
			wantAttempt, wantStep = 1, domain.Steps[i]
			if i == 2 {
				wantStatus = projections.StepFailed
			}
		} else {
			wantStep = domain.Steps[i-3]
		}
		if s.Attempt != wantAttempt || s.Name != wantStep || s.Status != wantStatus {
			t.Errorf("step %d = %s/%d/%s, want %s/%d/%s", i, s.Name, s.Attempt, s.Status, wantStep, wantAttempt, wantStatus)
		}
	}
}

func TestAbandonedAttemptAndGiveUp(t *testing.T) {
	store, db := openStore(t), newDB(t)
	p, _ := startProjector(t, store, db)
	c := &clock{now: t0}

	// The runner of attempt 1 dies while installing; the redelivered
	// request starts attempt 2, which the runner gives up on.
	req := requested(c, "acme", "b1", "alice")
	evs := []domain.Event{req,
		domain.BuildStarted{BuildID: "b1", Attempt: 1, Runner: "r1", At: c.after(time.Second)},
		domain.BuildStepStarted{BuildID: "b1", Attempt: 1, Step: domain.StepInstall, At: c.after(time.Second)},
	}
	start2 := domain.BuildStarted{BuildID: "b1", Attempt: 2, Runner: "r2", At: c.after(time.Minute)}
	gaveUp := domain.BuildFailed{BuildID: "b1", Attempt: 2, Error: "gave up after 2 attempts", Retryable: true, At: c.after(time.Second)}
	waitFor(t, p, appendEvents(t, store, "acme", append(evs, start2, gaveUp)...))

	b := getBuild(t, db, "acme", "b1")
	if b.Status != domain.StatusFailed || b.Error == nil || !b.Error.Retryable || b.Error.Message != gaveUp.Error {
		t.Errorf("build %+v error %+v", b, b.Error)
	}
	if len(b.Steps) != 1 {
		t.Fatalf("steps %+v", b.Steps)
	}
	s := b.Steps[0]
	if s.Status != projections.StepFailed || !strings.Contains(s.Detail, "abandoned") {
		t.Errorf("abandoned step = %+v", s)
	}
	checkTimePtr(t, "abandoned step FinishedAt", s.FinishedAt, start2.At)
}

// ---- tenants, pagination, deployments ---------------------------------------

func TestTenantsNeverMix(t *testing.T) {
	store, db := openStore(t), newDB(t)
	p, _ := startProjector(t, store, db)
	c := &clock{now: t0}
	ctx := context.Background()

	var pos int64
	for i := range 3 {
		for _, tenant := range []string{"alpha", "beta"} {
			evs, _ := successfulBuild(c, tenant, fmt.Sprintf("%s-%d", tenant, i), "user-"+tenant)
			r := evs[0].(domain.BuildRequested)
			r.IdempotencyKey = "same-key-" + fmt.Sprint(i)
			evs[0] = r
			appendEvents(t, store, tenant, evs...)
		}
	}
	pos = appendEvents(t, store, "beta", domain.DeploymentActivated{TenantID: "beta", BuildID: "beta-2", Version: "v2",
		ManifestKey: "m/beta-2", ActivatedBy: "user-beta", At: c.after(time.Second)})
	waitFor(t, p, pos)

	for _, tenant := range []string{"alpha", "beta"} {
		list, total, err := db.ListBuilds(ctx, tenant, 1, 50)
		if err != nil {
			t.Fatal(err)
		}
		if total != 3 || len(list) != 3 {
			t.Errorf("%s: %d builds (total %d), want 3", tenant, len(list), total)
		}
		for _, b := range list {
			if b.TenantID != tenant || !strings.HasPrefix(b.ID, tenant+"-") {
				t.Errorf("ListBuilds(%s) returned %s of %s", tenant, b.ID, b.TenantID)
			}
		}
	}
	if _, err := db.GetBuild(ctx, "alpha", "beta-0"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("GetBuild of another tenant's build: %v, want ErrNotFound", err)
	}
	if _, err := db.GetBuild(ctx, "alpha", "nope"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("GetBuild of a missing build: %v, want ErrNotFound", err)
	}
	if b := getBuild(t, db, "beta", "beta-0"); b.TenantID != "beta" || len(b.Steps) == 0 {
		t.Errorf("GetBuild(beta, beta-0) = %+v", b)
	}
	// Idempotency keys are per tenant and user.
	if b, err := db.FindBuildByIdempotencyKey(ctx, "alpha", "user-alpha", "same-key-1"); err != nil || b.ID != "alpha-1" {
		t.Errorf("FindBuildByIdempotencyKey(alpha) = %+v, %v", b, err)
	}
	if _, err := db.FindBuildByIdempotencyKey(ctx, "alpha", "user-beta", "same-key-1"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("idempotency key of another user: %v, want ErrNotFound", err)
	}
	if _, err := db.FindBuildByIdempotencyKey(ctx, "alpha", "user-alpha", ""); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("empty idempotency key: %v, want ErrNotFound", err)
	}
	if _, err := db.Pointer(ctx, "alpha"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("Pointer(alpha): %v, want ErrNotFound", err)
	}
	if d, total, err := db.Deployments(ctx, "alpha", 1, 10); err != nil || total != 0 || len(d) != 0 {
		t.Errorf("Deployments(alpha) = %+v, %d, %v", d, total, err)
	}
	if ptr, err := db.Pointer(ctx, "beta"); err != nil || ptr.BuildID != "beta-2" {
		t.Errorf("Pointer(beta) = %+v, %v", ptr, err)
	}
}

func TestPagination(t *testing.T) {
	store, db := openStore(t), newDB(t)
	p, _ := startProjector(t, store, db)
	c := &clock{now: t0}
	ctx := context.Background()

	const n = 25
	var pos int64
	for i := 1; i <= n; i++ {
		pos = appendEvents(t, store, "acme", requested(c, "acme", fmt.Sprintf("b%02d", i), "alice"))
		if i%5 == 0 { // other tenants' builds in between must not count
			pos = appendEvents(t, store, "other", requested(c, "other", fmt.Sprintf("o%02d", i), "bob"))
		}
	}
	waitFor(t, p, pos)

	var seen []string
	for page := 1; page <= 4; page++ {
		list, total, err := db.ListBuilds(ctx, "acme", page, 10)
		if err != nil {
			t.Fatal(err)
		}
		if total != n {
			t.Errorf("page %d: total %d, want %d", page, total, n)
		}
		if want := min(10, max(0, n-(page-1)*10)); len(list) != want {
			t.Errorf("page %d: %d builds, want %d", page, len(list), want)
		}
		for _, b := range list {
			seen = append(seen, b.ID)
		}
	}
	var want []string
	for i := n; i >= 1; i-- {
		want = append(want, fmt.Sprintf("b%02d", i))
	}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("pages gave %v, want newest first %v", seen, want)
	}

	// Out-of-range arguments are normalised.
	if list, _, _ := db.ListBuilds(ctx, "acme", 0, 10); len(list) != 10 || list[0].ID != "b25" {
		t.Errorf("page 0 = %d builds, want page 1", len(list))
	}
	if list, _, _ := db.ListBuilds(ctx, "acme", 1, 0); len(list) != projections.DefaultPageSize {
		t.Errorf("pageSize 0 gave %d builds, want %d", len(list), projections.DefaultPageSize)
	}
	if list, _, _ := db.ListBuilds(ctx, "acme", 1, 1_000_000); len(list) != n {
		t.Errorf("huge pageSize gave %d builds, want %d", len(list), n)
	}
	if list, total, err := db.ListBuilds(ctx, "nobody", 1, 10); err != nil || total != 0 || list == nil || len(list) != 0 {
		t.Errorf("unknown tenant: %v, %d, %v (want an empty, non-nil page)", list, total, err)
	}
}

func TestDeploymentsAndPointer(t *testing.T) {
	store, db := openStore(t), newDB(t)
	p, _ := startProjector(t, store, db)
	c := &clock{now: t0}
	ctx := context.Background()

	evs1, ok1 := successfulBuild(c, "acme", "b1", "alice")
	evs2, ok2 := successfulBuild(c, "acme", "b2", "alice")
	v1, v2 := evs1[0].(domain.BuildRequested).Version, evs2[0].(domain.BuildRequested).Version
	appendEvents(t, store, "acme", evs1...)
	appendEvents(t, store, "acme", evs2...)

	act1 := domain.DeploymentActivated{TenantID: "acme", BuildID: "b1", Version: v1, ManifestKey: ok1.ManifestKey,
		ActivatedBy: "alice", At: c.after(time.Second)}
	act2 := domain.DeploymentActivated{TenantID: "acme", BuildID: "b2", Version: v2, ManifestKey: ok2.ManifestKey,
		ActivatedBy: "bob", Previous: "b1", At: c.after(time.Second)}
	back := domain.DeploymentRolledBack{TenantID: "acme", BuildID: "b1", Version: v1, ManifestKey: ok1.ManifestKey,
		RolledBackBy: "carol", Previous: "b2", At: c.after(time.Second)}

	if tenants, err := db.LiveTenants(ctx); err != nil || len(tenants) != 0 {
		t.Fatalf("LiveTenants before any activation = %v, %v", tenants, err)
	}
	waitFor(t, p, appendEvents(t, store, "acme", act1))
	if tenants, err := db.LiveTenants(ctx); err != nil || len(tenants) != 1 || tenants[0] != "acme" {
		t.Fatalf("LiveTenants = %v, %v; want [acme]", tenants, err)
	}
	ptr, err := db.Pointer(ctx, "acme")
	if err != nil || ptr.BuildID != "b1" {
		t.Fatalf("pointer after first activation = %+v, %v", ptr, err)
	}
	waitFor(t, p, appendEvents(t, store, "acme", act2))
	if ptr, err = db.Pointer(ctx, "acme"); err != nil || ptr.BuildID != "b2" || ptr.ManifestKey != ok2.ManifestKey {
		t.Fatalf("pointer after second activation = %+v, %v", ptr, err)
	}
	waitFor(t, p, appendEvents(t, store, "acme", back))

	ptr, err = db.Pointer(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	wantPtr := projections.Pointer{TenantID: "acme", BuildID: "b1", Version: v1, ManifestKey: ok1.ManifestKey, UpdatedAt: back.At}
	if *ptr != wantPtr {
		t.Errorf("pointer after rollback = %+v, want %+v", *ptr, wantPtr)
	}

	deps, total, err := db.Deployments(ctx, "acme", 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []projections.Deployment{
		{TenantID: "acme", BuildID: "b1", Version: v1, Kind: projections.KindRolledBack, Actor: "carol", At: back.At, Previous: "b2"},
		{TenantID: "acme", BuildID: "b2", Version: v2, Kind: projections.KindActivated, Actor: "bob", At: act2.At, Previous: "b1"},
		{TenantID: "acme", BuildID: "b1", Version: v1, Kind: projections.KindActivated, Actor: "alice", At: act1.At},
	}
	if total != 3 || len(deps) != 3 {
		t.Fatalf("deployments %+v (total %d), want 3", deps, total)
	}
	for i := range deps {
		if i > 0 && deps[i].Seq >= deps[i-1].Seq {
			t.Errorf("deployments not newest first: %+v", deps)
		}
		want[i].Seq = deps[i].Seq
		if deps[i] != want[i] {
			t.Errorf("deployment %d = %+v, want %+v", i, deps[i], want[i])
		}
	}
	// Pages.
	if page2, total, err := db.Deployments(ctx, "acme", 2, 2); err != nil || total != 3 || len(page2) != 1 || page2[0].Seq != deps[2].Seq {
		t.Errorf("Deployments page 2 of 2 = %+v, %d, %v", page2, total, err)
	}
}

// ---- WaitFor ------------------------------------------------------------

func TestWaitFor(t *testing.T) {
	store, db := openStore(t), newDB(t)
	c := &clock{now: t0}
	// Not running: only direct Applies move the checkpoint.
	p := projections.NewProjector(store, db, testLogger(t))

	if err := p.WaitFor(context.Background(), 0); err != nil {
		t.Fatalf("WaitFor(0) on an empty read model: %v", err)
	}

	// Respects ctx.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := p.WaitFor(ctx, 1)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor with an expiring ctx: %v, want DeadlineExceeded", err)
	}

	// Blocks until the position is applied, then the read sees it.
	appendEvents(t, store, "acme", requested(c, "acme", "b1", "alice"))
	appendEvents(t, store, "acme", requested(c, "acme", "b2", "alice"))
	evs, err := store.ReadAll(context.Background(), 0, eventstore.ReadOptions{})
	if err != nil || len(evs) != 2 {
		t.Fatalf("ReadAll: %d events, %v", len(evs), err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		done <- p.WaitFor(ctx, evs[1].Position)
	}()
	if err := db.Apply(context.Background(), evs[0]); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("WaitFor returned (%v) before its position was applied", err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := db.Apply(context.Background(), evs[1]); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitFor: %v", err)
	}
	getBuild(t, db, "acme", "b2")

	// Closing the DB ends a wait.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		done <- p.WaitFor(ctx, 1000)
	}()
	db.Close()
	if err := <-done; !errors.Is(err, projections.ErrClosed) {
		t.Errorf("WaitFor on a closed DB: %v, want ErrClosed", err)
	}
}

func TestWaitForSeesOwnWriteWithRunningProjector(t *testing.T) {
	store, db := openStore(t), newDB(t)
	p, _ := startProjector(t, store, db)
	c := &clock{now: t0}
	for i := range 20 {
		id := fmt.Sprintf("b%d", i)
		pos := appendEvents(t, store, "acme", requested(c, "acme", id, "alice"))
		waitFor(t, p, pos)
		getBuild(t, db, "acme", id) // read-your-write, immediately
	}
}

// ---- failures are not skipped ----------------------------------------------

func TestRunStopsOnUndecodableEvent(t *testing.T) {
	store, db := openStore(t), newDB(t)
	c := &clock{now: t0}
	good := appendEvents(t, store, "acme", requested(c, "acme", "b1", "alice"))
	res, err := store.Append(context.Background(), "build-b1", eventstore.Any,
		eventstore.Event{Type: "BuildTeleported", Tenant: "acme", Data: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	appendEvents(t, store, "acme", requested(c, "acme", "b2", "alice"))

	p := projections.NewProjector(store, db, testLogger(t))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	waitErr := make(chan error, 1)
	go func() { waitErr <- p.WaitFor(ctx, res.Position) }()

	err = p.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "BuildTeleported") ||
		!strings.Contains(err.Error(), fmt.Sprintf("position %d", res.Position)) {
		t.Fatalf("Run = %v, want an error naming the event and its position", err)
	}
	if cp, err := db.Checkpoint(ctx); err != nil || cp != good {
		t.Errorf("checkpoint %d (%v), want %d: the bad event and those after it must not be passed", cp, err, good)
	}
	if err := <-waitErr; err == nil || !strings.Contains(err.Error(), "BuildTeleported") || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor past a failed projector = %v, want its error", err)
	}
	if _, err := db.GetBuild(ctx, "acme", "b2"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("b2 after the bad event was applied: %v", err)
	}
}

func TestApplyRejectsEventsOfUnknownBuild(t *testing.T) {
	db := newDB(t)
	ev := envelope(t, "acme", domain.BuildStarted{BuildID: "ghost", Attempt: 1, At: t0})
	ev.Position = 1
	if err := db.Apply(context.Background(), ev); err == nil || !strings.Contains(err.Error(), "ghost") {
		t.Errorf("Apply(BuildStarted of an unknown build) = %v, want an error", err)
	}
	ev = envelope(t, "acme", domain.BuildStepStarted{BuildID: "ghost", Attempt: 1, Step: domain.StepBuild, At: t0})
	ev.Position = 1
	if err := db.Apply(context.Background(), ev); err == nil {
		t.Error("Apply(BuildStepStarted of an unknown build) succeeded")
	}
	if cp, _ := db.Checkpoint(context.Background()); cp != 0 {
		t.Errorf("checkpoint moved to %d after failed applies", cp)
	}
	ev.Position = 0
	if err := db.Apply(context.Background(), envelope(t, "acme", domain.TenantCreated{TenantID: "acme"})); err == nil {
		t.Error("Apply of an event without a position succeeded")
	}
}

// ---- replay, restart, rebuild ------------------------------------------------

// history returns a deterministic, realistic mix of about n events over
// three tenants: membership, builds that succeed, fail for the user, retry
// then succeed, are abandoned and given up, or are still running,
// activations and rollbacks. Each tenant's events are in order (as one
// runner partition per tenant runs them); tenants interleave.
func history(n int, seed uint64) []struct {
	tenant string
	e      domain.Event
} {
	type item = struct {
		tenant string
		e      domain.Event
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	tenants := []string{"acme", "globex", "initech"}
	scripts := make([][]item, len(tenants))
	clocks := make([]*clock, len(tenants))
	total := 0
	for i, tn := range tenants {
		clocks[i] = &clock{now: t0.Add(time.Duration(i) * time.Hour)}
		c := clocks[i]
		scripts[i] = []item{
			{tn, domain.TenantCreated{TenantID: tn, Name: strings.ToUpper(tn), Owner: "owner-" + tn, At: c.after(time.Second)}},
			{tn, domain.MemberAdded{TenantID: tn, UserID: "dev-" + tn, Role: domain.RoleMember, AddedBy: "owner-" + tn, At: c.after(time.Second)}},
		}
		total += 2
	}
	type site struct {
		live     string
		deployed []domain.DeploymentActivated
	}
	sites := make([]site, len(tenants))
	seq := 0
	for total < n {
		i := rng.IntN(len(tenants))
		tn, c := tenants[i], clocks[i]
		seq++
		id := fmt.Sprintf("%s-%04d", tn, seq)
		req := requested(c, tn, id, "dev-"+tn)
		if rng.IntN(3) == 0 {
			req.IdempotencyKey = fmt.Sprintf("idem-%d", seq)
		}
		evs := []domain.Event{req, domain.BuildStarted{BuildID: id, Attempt: 1, Runner: "r", At: c.after(time.Second)}}
		succeed := func(attempt int) {
			evs = append(evs, runSteps(c, id, attempt, domain.Steps[:11], time.Duration(rng.IntN(900)+1)*time.Millisecond)...)
			at := c.after(time.Millisecond)
			ok := domain.BuildSucceeded{BuildID: id, Attempt: attempt, ManifestKey: "manifests/" + id, Files: rng.IntN(100),
				Bytes: rng.Int64N(1 << 20), DurationMs: at.Sub(req.At).Milliseconds(), At: at}
			evs = append(evs, ok)
			if rng.IntN(8) > 0 { // most successes go live at once
				act := domain.DeploymentActivated{TenantID: tn, BuildID: id, Version: req.Version, ManifestKey: ok.ManifestKey,
					ActivatedBy: "dev-" + tn, Previous: sites[i].live, At: c.after(time.Second)}
				evs = append(evs, act)
				sites[i].live = id
				sites[i].deployed = append(sites[i].deployed, act)
			}
		}
		switch k := rng.IntN(10); {
		case k < 4:
			succeed(1)
		case k < 6: // the user's error
			steps := domain.Steps[:rng.IntN(8)]
			evs = append(evs, runSteps(c, id, 1, steps, 30*time.Millisecond)...)
			step := domain.Steps[len(steps)]
			evs = append(evs,
				domain.BuildStepStarted{BuildID: id, Attempt: 1, Step: step, At: c.after(time.Millisecond)},
				domain.BuildFailed{BuildID: id, Attempt: 1, Step: step, Error: "user error in " + string(step), At: c.after(time.Second)})
		case k < 8: // infrastructure error, retried
			evs = append(evs,
				domain.BuildStepStarted{BuildID: id, Attempt: 1, Step: domain.StepDownload, At: c.after(time.Millisecond)},
				domain.BuildAttemptFailed{BuildID: id, Attempt: 1, Step: domain.StepDownload, Error: "timeout", RetryInMs: 2000, At: c.after(time.Second)},
				domain.BuildStarted{BuildID: id, Attempt: 2, Runner: "r", At: c.after(2 * time.Second)})
			succeed(2)
		case k < 9: // runner died, then gave up
			evs = append(evs,
				domain.BuildStepStarted{BuildID: id, Attempt: 1, Step: domain.StepInstall, At: c.after(time.Millisecond)},
				domain.BuildStarted{BuildID: id, Attempt: 2, Runner: "r2", At: c.after(time.Minute)},
				domain.BuildFailed{BuildID: id, Attempt: 2, Error: "gave up", Retryable: true, At: c.after(time.Second)})
		default: // still running
			evs = append(evs, domain.BuildStepStarted{BuildID: id, Attempt: 1, Step: domain.StepValidate, At: c.after(time.Millisecond)})
		}
		if s := &sites[i]; len(s.deployed) >= 2 && rng.IntN(2) == 0 {
			to := s.deployed[rng.IntN(len(s.deployed))]
			if to.BuildID != s.live {
				evs = append(evs, domain.DeploymentRolledBack{TenantID: tn, BuildID: to.BuildID, Version: to.Version,
					ManifestKey: to.ManifestKey, RolledBackBy: "owner-" + tn, Previous: s.live, At: c.after(time.Second)})
				s.live = to.BuildID
			}
		}
		if rng.IntN(8) == 0 {
			evs = append(evs, domain.MemberRoleChanged{TenantID: tn, UserID: "dev-" + tn, Role: domain.RoleAdmin,
				From: domain.RoleMember, ChangedBy: "owner-" + tn, At: c.after(time.Second)})
		}
		for _, e := range evs {
			scripts[i] = append(scripts[i], item{tn, e})
		}
		total += len(evs)
	}
	// Interleave the tenants, keeping each tenant's order.
	var out []item
	for {
		var open []int
		for i := range scripts {
			if len(scripts[i]) > 0 {
				open = append(open, i)
			}
		}
		if len(open) == 0 {
			return out
		}
		i := open[rng.IntN(len(open))]
		k := 1 + rng.IntN(min(4, len(scripts[i])))
		out = append(out, scripts[i][:k]...)
		scripts[i] = scripts[i][k:]
	}
}

// appendHistory appends a history and returns the last position.
func appendHistory(t testing.TB, store eventstore.Store, n int, seed uint64) int64 {
	t.Helper()
	var pos int64
	for _, it := range history(n, seed) {
		pos = appendEvents(t, store, it.tenant, it.e)
	}
	return pos
}

func dump(t testing.TB, db *projections.DB) map[string][]map[string]any {
	t.Helper()
	d, err := db.Dump(context.Background())
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	return d
}

// sameDump fails the test with the first difference between two dumps.
func sameDump(t testing.TB, what string, got, want map[string][]map[string]any) {
	t.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	for table, wrows := range want {
		grows := got[table]
		if len(grows) != len(wrows) {
			t.Errorf("%s: table %s has %d rows, want %d", what, table, len(grows), len(wrows))
			continue
		}
		for i := range wrows {
			if !reflect.DeepEqual(grows[i], wrows[i]) {
				t.Errorf("%s: table %s row %d = %v, want %v", what, table, i, grows[i], wrows[i])
				break
			}
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d tables, want %d", what, len(got), len(want))
	}
}

// count returns how many rows of table match all the column values.
func count(d map[string][]map[string]any, table string, match map[string]any) int {
	n := 0
rows:
	for _, r := range d[table] {
		for k, v := range match {
			if r[k] != v {
				continue rows
			}
		}
		n++
	}
	return n
}

func TestRebuildEquality(t *testing.T) {
	store, db := openStore(t), newDB(t)
	p, stop := startProjector(t, store, db)
	ctx := context.Background()

	head := appendHistory(t, store, 200, 1)
	waitFor(t, p, head)
	live := dump(t, db)

	// The history is not trivial: every state and kind is there.
	for _, c := range []struct {
		table string
		match map[string]any
	}{
		{"builds", map[string]any{"status": "success"}},
		{"builds", map[string]any{"status": "failed", "retryable": int64(0)}},
		{"builds", map[string]any{"status": "failed", "retryable": int64(1)}},
		{"builds", map[string]any{"status": "success", "attempt": int64(2)}},
		{"builds", map[string]any{"status": "building"}},
		{"build_steps", map[string]any{"status": "failed"}},
		{"build_steps", map[string]any{"status": "running"}},
		{"deployments", map[string]any{"kind": "activated"}},
		{"deployments", map[string]any{"kind": "rolled_back"}},
		{"pointers", map[string]any{}},
		{"checkpoint", map[string]any{"position": head}},
	} {
		if count(live, c.table, c.match) == 0 {
			t.Errorf("live read model has no %s row matching %v", c.table, c.match)
		}
	}

	// Rebuild into a fresh file.
	fresh := newDB(t)
	n, err := projections.Rebuild(ctx, store, fresh)
	if err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	all, err := store.ReadAll(ctx, 0, eventstore.ReadOptions{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(all)) {
		t.Errorf("Rebuild applied %d events, want %d", n, len(all))
	}
	sameDump(t, "fresh rebuild", dump(t, fresh), live)

	// Reset and rebuild the live one (its projector stopped first).
	if err := stop(); err != nil {
		t.Fatalf("projector: %v", err)
	}
	if err := db.Reset(ctx); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	empty := dump(t, db)
	for table, rows := range empty {
		if table == "checkpoint" {
			if len(rows) != 1 || rows[0]["position"] != int64(0) {
				t.Errorf("checkpoint after Reset = %v", rows)
			}
		} else if len(rows) != 0 {
			t.Errorf("table %s has %d rows after Reset", table, len(rows))
		}
	}
	if cp, err := db.Checkpoint(ctx); err != nil || cp != 0 {
		t.Errorf("Checkpoint after Reset = %d, %v", cp, err)
	}
	// WaitFor must not believe the old checkpoint any more.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	err = p.WaitFor(short, 1)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor(1) right after Reset = %v, want DeadlineExceeded", err)
	}
	if n, err := projections.Rebuild(ctx, store, db); err != nil || n != int64(len(all)) {
		t.Fatalf("Rebuild after Reset = %d, %v", n, err)
	}
	sameDump(t, "reset and rebuild", dump(t, db), live)
}

func TestIdempotentReplay(t *testing.T) {
	store, db := openStore(t), newDB(t)
	ctx := context.Background()
	appendHistory(t, store, 150, 2)
	all, err := store.ReadAll(ctx, 0, eventstore.ReadOptions{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}

	// First half, then everything (overlapping), then everything again, one
	// by one and as a batch: the effect is that of applying each once.
	half := len(all) / 2
	if err := db.ApplyBatch(ctx, all[:half]); err != nil {
		t.Fatal(err)
	}
	if err := db.ApplyBatch(ctx, all); err != nil {
		t.Fatal(err)
	}
	once := dump(t, db)
	for _, ev := range all {
		if err := db.Apply(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.ApplyBatch(ctx, all); err != nil {
		t.Fatal(err)
	}
	sameDump(t, "replayed", dump(t, db), once)

	ref := newDB(t)
	if err := ref.ApplyBatch(ctx, all); err != nil {
		t.Fatal(err)
	}
	sameDump(t, "single pass", once, dump(t, ref))
	if cp, err := db.Checkpoint(ctx); err != nil || cp != all[len(all)-1].Position {
		t.Errorf("checkpoint %d (%v), want %d", cp, err, all[len(all)-1].Position)
	}
}

// recordingStore records from which positions the projector reads.
type recordingStore struct {
	eventstore.Store
	mu     sync.Mutex
	afters []int64
}

func (r *recordingStore) record(after int64) {
	r.mu.Lock()
	r.afters = append(r.afters, after)
	r.mu.Unlock()
}

func (r *recordingStore) ReadAll(ctx context.Context, after int64, opts eventstore.ReadOptions) ([]eventstore.Event, error) {
	r.record(after)
	return r.Store.ReadAll(ctx, after, opts)
}

func (r *recordingStore) Subscribe(ctx context.Context, after int64, opts eventstore.ReadOptions) *eventstore.Subscription {
	r.record(after)
	return r.Store.Subscribe(ctx, after, opts)
}

func TestCheckpointSurvivesReopen(t *testing.T) {
	store := openStore(t)
	path := filepath.Join(t.TempDir(), "read.db")
	ctx := context.Background()

	db, err := projections.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	p, stop := startProjector(t, store, db)
	head := appendHistory(t, store, 80, 3)
	waitFor(t, p, head)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	before := dump(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = openDB(t, path)
	if cp, err := db.Checkpoint(ctx); err != nil || cp != head {
		t.Fatalf("checkpoint after reopen = %d, %v; want %d", cp, err, head)
	}
	sameDump(t, "reopened", dump(t, db), before)

	// The resumed projector reads only after the checkpoint, and the
	// deployment history (append-only, so a re-applied event would show)
	// gains exactly the new rows.
	rec := &recordingStore{Store: store}
	p, _ = startProjector(t, rec, db)
	c := &clock{now: t0.Add(48 * time.Hour)}
	evs, ok := successfulBuild(c, "acme", "late", "dev-acme")
	evs = append(evs, domain.DeploymentActivated{TenantID: "acme", BuildID: "late", Version: "v-late",
		ManifestKey: ok.ManifestKey, ActivatedBy: "dev-acme", At: c.after(time.Second)})
	newHead := appendEvents(t, store, "acme", evs...)
	waitFor(t, p, newHead)

	rec.mu.Lock()
	afters := append([]int64(nil), rec.afters...)
	rec.mu.Unlock()
	if len(afters) == 0 || afters[0] != head {
		t.Errorf("resumed projector read after %v, want to start after %d", afters, head)
	}
	for _, a := range afters {
		if a < head {
			t.Errorf("resumed projector re-read from %d (checkpoint %d)", a, head)
		}
	}
	after := dump(t, db)
	if got, want := len(after["deployments"]), len(before["deployments"])+1; got != want {
		t.Errorf("%d deployments after resume, want %d", got, want)
	}
	if got, want := len(after["builds"]), len(before["builds"])+1; got != want {
		t.Errorf("%d builds after resume, want %d", got, want)
	}
	if ptr, err := db.Pointer(ctx, "acme"); err != nil || ptr.BuildID != "late" {
		t.Errorf("pointer after resume = %+v, %v", ptr, err)
	}
}

// ---- benchmark --------------------------------------------------------------

// BenchmarkRebuild measures a full Rebuild of 10k events from the SQLite
// event store into a SQLite read model, reported as events/s.
func BenchmarkRebuild(b *testing.B) {
	store := openStore(b)
	ctx := context.Background()
	// Append in batches per stream run to keep the setup short.
	var pending []eventstore.Event
	var stream string
	flush := func() {
		if len(pending) > 0 {
			if _, err := store.Append(ctx, stream, eventstore.Any, pending...); err != nil {
				b.Fatal(err)
			}
			pending = pending[:0]
		}
	}
	for _, it := range history(10_000, 4) {
		if s := streamOf(b, it.e); s != stream {
			flush()
			stream = s
		}
		pending = append(pending, envelope(b, it.tenant, it.e))
	}
	flush()
	head, err := store.Head(ctx)
	if err != nil {
		b.Fatal(err)
	}
	db := newDB(b)

	var events int64
	for b.Loop() {
		n, err := projections.Rebuild(ctx, store, db)
		if err != nil {
			b.Fatal(err)
		}
		events += n
	}
	if cp, _ := db.Checkpoint(ctx); cp != head {
		b.Fatalf("checkpoint %d after rebuild, want %d", cp, head)
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}
