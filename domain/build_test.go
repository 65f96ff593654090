package domain

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// givenBuild rebuilds a build from its events.
func givenBuild(events ...Event) *Build { return given(&Build{}, events...) }

// Build fixtures.
const (
	buildID  = "01JH0000000000000000000001"
	version1 = "v1735787045000" // = t0 in unix ms
)

func requested() BuildRequested {
	return BuildRequested{
		BuildID: buildID, TenantID: "acme", Version: version1, RequestedBy: "alice",
		Source: Source{Key: "sources/acme/" + buildID + ".zip", SHA256: strings.Repeat("0f", 32), Size: 2048,
			Files: 7, Uncompressed: 9000},
		Config:   BuildConfig{Framework: "vite", BuildCommand: "npm run build", OutputDir: "dist", NodeVersion: "20"},
		EnvNames: []string{"API_URL"}, EnvKey: "env/acme/" + buildID + ".json", IdempotencyKey: "idem-1", At: t0,
	}
}

func started(attempt int) BuildStarted {
	return BuildStarted{BuildID: buildID, Attempt: attempt, Runner: "runner-1", At: t0}
}

func stepStarted(attempt int, s Step) BuildStepStarted {
	return BuildStepStarted{BuildID: buildID, Attempt: attempt, Step: s, At: t0}
}

func stepFinished(attempt int, s Step) BuildStepFinished {
	return BuildStepFinished{BuildID: buildID, Attempt: attempt, Step: s, DurationMs: 10, At: t0}
}

func attemptFailed(attempt int) BuildAttemptFailed {
	return BuildAttemptFailed{BuildID: buildID, Attempt: attempt, Step: StepDownload, Error: "timeout",
		RetryInMs: RetryDelay(attempt).Milliseconds(), At: t0}
}

func succeeded() BuildSucceeded {
	return BuildSucceeded{BuildID: buildID, Attempt: 1, ManifestKey: "sites/acme/" + version1 + "/manifest.json",
		Files: 3, Bytes: 300, DurationMs: 1000, At: t0}
}

func failed(retryable bool) BuildFailed {
	return BuildFailed{BuildID: buildID, Attempt: 1, Step: StepBuild, Error: "exit 1", Retryable: retryable, At: t0}
}

// Histories of a build in each interesting state.
func hPending() []Event    { return []Event{requested()} }
func hBuilding() []Event   { return []Event{requested(), started(1)} }
func hStepOpen() []Event   { return []Event{requested(), started(1), stepStarted(1, StepInstall)} }
func hStepClosed() []Event { return append(hStepOpen(), stepFinished(1, StepInstall)) }
func hRetrying() []Event   { return []Event{requested(), started(1), attemptFailed(1)} }
func hSucceeded() []Event  { return append(hBuilding(), succeeded()) }
func hFailed() []Event     { return append(hBuilding(), failed(false)) }
func hAttempt(n int) []Event {
	h := []Event{requested()}
	for a := 1; a < n; a++ {
		h = append(h, started(a), attemptFailed(a))
	}
	return append(h, started(n))
}

func TestBuildStatusAndStep(t *testing.T) {
	for s, want := range map[BuildStatus]bool{StatusPending: false, StatusBuilding: false, StatusSuccess: true,
		StatusFailed: true, "": false} {
		if got := s.Finished(); got != want {
			t.Errorf("%q.Finished() = %v, want %v", s, got, want)
		}
	}
	if len(Steps) != 13 {
		t.Errorf("len(Steps) = %d, want 13", len(Steps))
	}
	for _, s := range Steps {
		if !s.Valid() {
			t.Errorf("%q.Valid() = false", s)
		}
	}
	for _, s := range []Step{"", "compile", "Build", "deploy"} {
		if s.Valid() {
			t.Errorf("%q.Valid() = true", s)
		}
	}
}

func TestBuildRequest(t *testing.T) {
	with := func(f func(*BuildRequested)) BuildRequested { r := requested(); f(&r); return r }
	tests := []struct {
		name    string
		given   []Event
		req     BuildRequested
		want    []Event
		wantErr error
	}{
		{name: "valid", req: requested(), want: []Event{requested()}},
		{name: "minimal", req: BuildRequested{BuildID: "b", TenantID: "acme", Version: "v1", Source: Source{Key: "k"}},
			want: []Event{BuildRequested{BuildID: "b", TenantID: "acme", Version: "v1", Source: Source{Key: "k"}}}},
		{name: "request twice", given: hPending(), req: requested(), wantErr: ErrBuildExists},
		{name: "request on a finished build", given: hSucceeded(), req: requested(), wantErr: ErrBuildExists},
		{name: "missing build id", req: with(func(r *BuildRequested) { r.BuildID = "" }), wantErr: ErrInvalidTransition},
		{name: "missing version", req: with(func(r *BuildRequested) { r.Version = "" }), wantErr: ErrInvalidTransition},
		{name: "missing source", req: with(func(r *BuildRequested) { r.Source = Source{} }), wantErr: ErrInvalidTransition},
		{name: "bad tenant", req: with(func(r *BuildRequested) { r.TenantID = "Bad_Tenant" }), wantErr: ErrInvalidTenantID},
		{name: "empty tenant", req: with(func(r *BuildRequested) { r.TenantID = "" }), wantErr: ErrInvalidTenantID},
		{name: "unknown framework",
			req: with(func(r *BuildRequested) { r.Config.Framework = "rails" }), wantErr: ErrInvalidConfig},
		{name: "absolute outputDir",
			req: with(func(r *BuildRequested) { r.Config.OutputDir = "/etc" }), wantErr: ErrInvalidConfig},
		{name: "bad nodeVersion",
			req: with(func(r *BuildRequested) { r.Config.NodeVersion = "latest" }), wantErr: ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := givenBuild(tt.given...).Request(tt.req)
			checkDecision(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestBuildStart(t *testing.T) {
	tests := []struct {
		name    string
		given   []Event
		want    []Event
		wantErr error
	}{
		{name: "pending starts attempt 1", given: hPending(),
			want: []Event{BuildStarted{BuildID: buildID, Attempt: 1, Runner: "runner-9", At: t1}}},
		{name: "crash while building (redelivered) starts attempt 2", given: hBuilding(),
			want: []Event{BuildStarted{BuildID: buildID, Attempt: 2, Runner: "runner-9", At: t1}}},
		{name: "crash during a step starts attempt 2", given: hStepOpen(),
			want: []Event{BuildStarted{BuildID: buildID, Attempt: 2, Runner: "runner-9", At: t1}}},
		{name: "retry after attempt 1 failed", given: hRetrying(),
			want: []Event{BuildStarted{BuildID: buildID, Attempt: 2, Runner: "runner-9", At: t1}}},
		{name: "retry after attempt 2 failed", given: append(hAttempt(2), attemptFailed(2)),
			want: []Event{BuildStarted{BuildID: buildID, Attempt: 3, Runner: "runner-9", At: t1}}},
		{name: "crash at MaxAttempts gives up", given: hAttempt(MaxAttempts),
			want: []Event{BuildFailed{BuildID: buildID, Attempt: 3, Step: "", Error: "gave up after 3 attempts",
				Retryable: true, At: t1}}},
		{name: "crash at MaxAttempts during a step names the step",
			given: append(hAttempt(MaxAttempts), stepStarted(3, StepUpload)),
			want: []Event{BuildFailed{BuildID: buildID, Attempt: 3, Step: StepUpload, Error: "gave up after 3 attempts",
				Retryable: true, At: t1}}},
		{name: "succeeded build", given: hSucceeded(), wantErr: ErrBuildFinished},
		{name: "failed build", given: hFailed(), wantErr: ErrBuildFinished},
		{name: "build failed after retries", given: append(hAttempt(3), BuildFailed{BuildID: buildID, Attempt: 3,
			Retryable: true, At: t0}), wantErr: ErrBuildFinished},
		{name: "unknown build", wantErr: ErrBuildNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := givenBuild(tt.given...).Start("runner-9", t1)
			checkDecision(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestBuildStartStep(t *testing.T) {
	tests := []struct {
		name    string
		given   []Event
		step    Step
		want    []Event
		wantErr error
	}{
		{name: "first step", given: hBuilding(), step: StepValidate,
			want: []Event{BuildStepStarted{BuildID: buildID, Attempt: 1, Step: StepValidate, At: t1}}},
		{name: "next step after one finished", given: hStepClosed(), step: StepConfigure,
			want: []Event{BuildStepStarted{BuildID: buildID, Attempt: 1, Step: StepConfigure, At: t1}}},
		{name: "step of attempt 2 carries the attempt", given: hAttempt(2), step: StepDownload,
			want: []Event{BuildStepStarted{BuildID: buildID, Attempt: 2, Step: StepDownload, At: t1}}},
		{name: "restart clears the open step", given: append(hStepOpen(), started(2)), step: StepInstall,
			want: []Event{BuildStepStarted{BuildID: buildID, Attempt: 2, Step: StepInstall, At: t1}}},
		{name: "pending build", given: hPending(), step: StepValidate, wantErr: ErrInvalidTransition},
		{name: "pending after an attempt failed", given: hRetrying(), step: StepValidate, wantErr: ErrInvalidTransition},
		{name: "another step open", given: hStepOpen(), step: StepBuild, wantErr: ErrStepMismatch},
		{name: "same step open", given: hStepOpen(), step: StepInstall, wantErr: ErrStepMismatch},
		{name: "unknown step", given: hBuilding(), step: "compile", wantErr: ErrInvalidTransition},
		{name: "empty step", given: hBuilding(), step: "", wantErr: ErrInvalidTransition},
		{name: "succeeded build", given: hSucceeded(), step: StepValidate, wantErr: ErrBuildFinished},
		{name: "failed build", given: hFailed(), step: StepValidate, wantErr: ErrBuildFinished},
		{name: "unknown build", step: StepValidate, wantErr: ErrBuildNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := givenBuild(tt.given...).StartStep(tt.step, t1)
			checkDecision(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestBuildFinishStep(t *testing.T) {
	tests := []struct {
		name    string
		given   []Event
		step    Step
		want    []Event
		wantErr error
	}{
		{name: "finish the open step", given: hStepOpen(), step: StepInstall,
			want: []Event{BuildStepFinished{BuildID: buildID, Attempt: 1, Step: StepInstall, DurationMs: 1500,
				Detail: "42 packages", At: t1}}},
		{name: "finish another step than the open one", given: hStepOpen(), step: StepBuild, wantErr: ErrStepMismatch},
		{name: "finish with no step open", given: hBuilding(), step: StepInstall, wantErr: ErrStepMismatch},
		{name: "finish a step twice", given: hStepClosed(), step: StepInstall, wantErr: ErrStepMismatch},
		{name: "finish the empty step with no step open", given: hBuilding(), step: "", wantErr: ErrStepMismatch},
		{name: "finish the empty step with a step open", given: hStepOpen(), step: "", wantErr: ErrStepMismatch},
		{name: "finish a step of a crashed attempt", given: append(hStepOpen(), started(2)), step: StepInstall,
			wantErr: ErrStepMismatch},
		{name: "pending build", given: hPending(), step: StepInstall, wantErr: ErrInvalidTransition},
		{name: "succeeded build", given: hSucceeded(), step: StepInstall, wantErr: ErrBuildFinished},
		{name: "failed build", given: hFailed(), step: StepInstall, wantErr: ErrBuildFinished},
		{name: "unknown build", step: StepInstall, wantErr: ErrBuildNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := givenBuild(tt.given...).FinishStep(tt.step, 1500*time.Millisecond+700*time.Microsecond,
				"42 packages", t1)
			checkDecision(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestBuildSucceed(t *testing.T) {
	tests := []struct {
		name     string
		given    []Event
		manifest string
		want     []Event
		wantErr  error
	}{
		{name: "succeed", given: hStepClosed(), manifest: "m.json",
			want: []Event{BuildSucceeded{BuildID: buildID, Attempt: 1, ManifestKey: "m.json", Files: 5, Bytes: 500,
				DurationMs: 90000, At: t1}}},
		{name: "succeed on attempt 3", given: hAttempt(3), manifest: "m.json",
			want: []Event{BuildSucceeded{BuildID: buildID, Attempt: 3, ManifestKey: "m.json", Files: 5, Bytes: 500,
				DurationMs: 90000, At: t1}}},
		{name: "step still open", given: hStepOpen(), manifest: "m.json", wantErr: ErrStepMismatch},
		{name: "no manifest", given: hBuilding(), manifest: "", wantErr: ErrInvalidTransition},
		{name: "pending build", given: hPending(), manifest: "m.json", wantErr: ErrInvalidTransition},
		{name: "pending after an attempt failed", given: hRetrying(), manifest: "m.json", wantErr: ErrInvalidTransition},
		{name: "succeed twice", given: hSucceeded(), manifest: "m.json", wantErr: ErrBuildFinished},
		{name: "failed build", given: hFailed(), manifest: "m.json", wantErr: ErrBuildFinished},
		{name: "unknown build", manifest: "m.json", wantErr: ErrBuildNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := givenBuild(tt.given...).Succeed(tt.manifest, 5, 500, t1)
			checkDecision(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func published(attempt int) BuildPublished {
	return BuildPublished{BuildID: buildID, Attempt: attempt, ManifestKey: "pub.json", Files: 2, Bytes: 20, At: t0}
}

func TestBuildPublish(t *testing.T) {
	tests := []struct {
		name     string
		given    []Event
		manifest string
		want     []Event
		wantErr  error
	}{
		{name: "publish between steps", given: hStepClosed(), manifest: "m.json",
			want: []Event{BuildPublished{BuildID: buildID, Attempt: 1, ManifestKey: "m.json", Files: 5, Bytes: 500, At: t1}}},
		{name: "publish on attempt 2", given: hAttempt(2), manifest: "m.json",
			want: []Event{BuildPublished{BuildID: buildID, Attempt: 2, ManifestKey: "m.json", Files: 5, Bytes: 500, At: t1}}},
		{name: "step still open", given: hStepOpen(), manifest: "m.json", wantErr: ErrStepMismatch},
		{name: "no manifest", given: hBuilding(), manifest: "", wantErr: ErrInvalidTransition},
		{name: "pending build", given: hPending(), manifest: "m.json", wantErr: ErrInvalidTransition},
		{name: "pending after an attempt failed", given: hRetrying(), manifest: "m.json", wantErr: ErrInvalidTransition},
		{name: "succeeded build", given: hSucceeded(), manifest: "m.json", wantErr: ErrBuildFinished},
		{name: "failed build", given: hFailed(), manifest: "m.json", wantErr: ErrBuildFinished},
		{name: "unknown build", manifest: "m.json", wantErr: ErrBuildNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := givenBuild(tt.given...).Publish(tt.manifest, 5, 500, t1)
			checkDecision(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestBuildPublished(t *testing.T) {
	tests := []struct {
		name     string
		given    []Event
		want     bool
		manifest string
		status   BuildStatus
	}{
		{"unknown build", nil, false, "", ""},
		{"pending", hPending(), false, "", StatusPending},
		{"building", hBuilding(), false, "", StatusBuilding},
		{"failed without output", hFailed(), false, "", StatusFailed},
		{"published, still building", append(hBuilding(), published(1)), true, "pub.json", StatusBuilding},
		{"published, then a step runs", append(hBuilding(), published(1), stepStarted(1, StepActivate)), true,
			"pub.json", StatusBuilding},
		{"published, then the attempt failed", append(hBuilding(), published(1), attemptFailed(1)), true,
			"pub.json", StatusPending},
		{"published, then restarted", append(hBuilding(), published(1), attemptFailed(1), started(2)), true,
			"pub.json", StatusBuilding},
		{"published, then failed", append(hBuilding(), published(1), failed(false)), false, "pub.json", StatusFailed},
		{"succeeded", hSucceeded(), true, succeeded().ManifestKey, StatusSuccess},
		{"published, then succeeded", append(hBuilding(), published(1), succeeded()), true,
			succeeded().ManifestKey, StatusSuccess},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := givenBuild(tt.given...)
			if got := b.Published(); got != tt.want {
				t.Errorf("Published() = %v, want %v", got, tt.want)
			}
			if b.ManifestKey() != tt.manifest || b.Status() != tt.status {
				t.Errorf("manifest %q status %q, want %q %q", b.ManifestKey(), b.Status(), tt.manifest, tt.status)
			}
		})
	}
}

func TestBuildFail(t *testing.T) {
	tests := []struct {
		name      string
		given     []Event
		retryable bool
		want      []Event
		wantErr   error
	}{
		{name: "user error fails at once", given: hStepOpen(), retryable: false,
			want: []Event{BuildFailed{BuildID: buildID, Attempt: 1, Step: StepBuild, Error: "boom", Retryable: false, At: t1}}},
		{name: "user error on attempt 2 fails at once", given: hAttempt(2), retryable: false,
			want: []Event{BuildFailed{BuildID: buildID, Attempt: 2, Step: StepBuild, Error: "boom", Retryable: false, At: t1}}},
		{name: "infra error on attempt 1 retries in 2s", given: hStepOpen(), retryable: true,
			want: []Event{BuildAttemptFailed{BuildID: buildID, Attempt: 1, Step: StepBuild, Error: "boom",
				RetryInMs: 2000, At: t1}}},
		{name: "infra error on attempt 2 retries in 4s", given: hAttempt(2), retryable: true,
			want: []Event{BuildAttemptFailed{BuildID: buildID, Attempt: 2, Step: StepBuild, Error: "boom",
				RetryInMs: 4000, At: t1}}},
		{name: "infra error on attempt 3 fails retryable", given: hAttempt(3), retryable: true,
			want: []Event{BuildFailed{BuildID: buildID, Attempt: 3, Step: StepBuild, Error: "boom", Retryable: true, At: t1}}},
		{name: "user error on a pending build", given: hPending(), retryable: false,
			want: []Event{BuildFailed{BuildID: buildID, Attempt: 0, Step: StepBuild, Error: "boom", Retryable: false, At: t1}}},
		// No attempt is running, so there is no attempt to end: the code
		// ends the build (see the report: arguably questionable).
		{name: "infra error on a pending build fails the build", given: hRetrying(), retryable: true,
			want: []Event{BuildFailed{BuildID: buildID, Attempt: 1, Step: StepBuild, Error: "boom", Retryable: true, At: t1}}},
		{name: "succeeded build", given: hSucceeded(), retryable: true, wantErr: ErrBuildFinished},
		{name: "succeeded build, user error", given: hSucceeded(), retryable: false, wantErr: ErrBuildFinished},
		{name: "failed build", given: hFailed(), retryable: false, wantErr: ErrBuildFinished},
		{name: "unknown build", retryable: true, wantErr: ErrBuildNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := givenBuild(tt.given...).Fail(StepBuild, "boom", tt.retryable, t1)
			checkDecision(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestRetryDelay(t *testing.T) {
	tests := []struct {
		attempt int
		want    time.Duration
	}{
		{-1, 2 * time.Second},
		{0, 2 * time.Second},
		{1, 2 * time.Second},
		{2, 4 * time.Second},
		{3, 8 * time.Second},
		{4, 16 * time.Second},
	}
	for _, tt := range tests {
		if got := RetryDelay(tt.attempt); got != tt.want {
			t.Errorf("RetryDelay(%d) = %v, want %v", tt.attempt, got, tt.want)
		}
	}
}

func TestBuildApply(t *testing.T) {
	var b Build
	if b.ID() != "" || b.Status() != "" || b.Attempt() != 0 || b.StreamVersion() != 0 {
		t.Fatalf("fresh build: id %q status %q attempt %d version %d", b.ID(), b.Status(), b.Attempt(), b.StreamVersion())
	}
	steps := []struct {
		event    Event
		status   BuildStatus
		attempt  int
		open     Step
		manifest string
	}{
		{requested(), StatusPending, 0, "", ""},
		{started(1), StatusBuilding, 1, "", ""},
		{stepStarted(1, StepDownload), StatusBuilding, 1, StepDownload, ""},
		{attemptFailed(1), StatusPending, 1, "", ""},
		{started(2), StatusBuilding, 2, "", ""},
		{stepStarted(2, StepDownload), StatusBuilding, 2, StepDownload, ""},
		{stepFinished(2, StepDownload), StatusBuilding, 2, "", ""},
		{stepStarted(2, StepBuild), StatusBuilding, 2, StepBuild, ""},
		{started(3), StatusBuilding, 3, "", ""}, // runner crashed, redelivered
		{stepStarted(3, StepUpload), StatusBuilding, 3, StepUpload, ""},
		{stepFinished(3, StepUpload), StatusBuilding, 3, "", ""},
		{BuildSucceeded{BuildID: buildID, Attempt: 3, ManifestKey: "m3", At: t1}, StatusSuccess, 3, "", "m3"},
	}
	for i, s := range steps {
		b.Apply(s.event)
		where := fmt.Sprintf("after #%d %s", i+1, s.event.EventType())
		if b.Status() != s.status || b.Attempt() != s.attempt || b.openStep != s.open || b.ManifestKey() != s.manifest {
			t.Fatalf("%s: status %q attempt %d open %q manifest %q, want %q %d %q %q", where,
				b.Status(), b.Attempt(), b.openStep, b.ManifestKey(), s.status, s.attempt, s.open, s.manifest)
		}
		if b.StreamVersion() != int64(i+1) {
			t.Fatalf("%s: StreamVersion() = %d, want %d", where, b.StreamVersion(), i+1)
		}
	}
	r := requested()
	if b.ID() != r.BuildID || b.Tenant() != r.TenantID || b.Version() != r.Version ||
		b.RequestedBy() != r.RequestedBy || !b.RequestedAt().Equal(r.At) {
		t.Errorf("build = id %q tenant %q version %q by %q at %v", b.ID(), b.Tenant(), b.Version(), b.RequestedBy(), b.RequestedAt())
	}

	f := givenBuild(append(hStepOpen(), failed(true))...)
	if f.Status() != StatusFailed || f.openStep != "" || !f.Status().Finished() {
		t.Errorf("after BuildFailed: status %q open %q", f.Status(), f.openStep)
	}
}

// applyTo returns a function that applies what a decide method of b
// returns, failing the test on error.
func applyTo(t *testing.T, b *Build) func([]Event, error) []Event {
	return func(evs []Event, err error) []Event {
		t.Helper()
		if err != nil {
			t.Fatalf("decide: %v", err)
		}
		for _, e := range evs {
			b.Apply(e)
		}
		return evs
	}
}

// A build whose infrastructure fails every time is tried MaxAttempts times
// with backoff 2 s then 4 s, then fails for good, retryable.
func TestBuildRetryLifecycle(t *testing.T) {
	b := &Build{}
	decide := applyTo(t, b)
	decide(b.Request(requested()))
	var delays []int64
	for attempt := 1; ; attempt++ {
		evs := decide(b.Start("runner-1", t1))
		if s, ok := evs[0].(BuildStarted); !ok || s.Attempt != attempt {
			t.Fatalf("attempt %d: Start = %#v", attempt, evs)
		}
		decide(b.StartStep(StepDownload, t1))
		evs = decide(b.Fail(StepDownload, "blob store down", true, t1))
		if af, ok := evs[0].(BuildAttemptFailed); ok {
			if b.Status() != StatusPending {
				t.Fatalf("after BuildAttemptFailed: status %q, want pending", b.Status())
			}
			delays = append(delays, af.RetryInMs)
			continue
		}
		want := BuildFailed{BuildID: buildID, Attempt: MaxAttempts, Step: StepDownload, Error: "blob store down",
			Retryable: true, At: t1}
		if !reflect.DeepEqual(evs, []Event{want}) {
			t.Fatalf("final failure = %#v, want %#v", evs, want)
		}
		break
	}
	if !reflect.DeepEqual(delays, []int64{2000, 4000}) {
		t.Fatalf("retry delays = %v, want [2000 4000]", delays)
	}
	if b.Status() != StatusFailed || b.Attempt() != MaxAttempts {
		t.Fatalf("final: status %q attempt %d", b.Status(), b.Attempt())
	}
	if _, err := b.Start("runner-1", t1); !errors.Is(err, ErrBuildFinished) {
		t.Fatalf("Start after failure: %v, want ErrBuildFinished", err)
	}
}

func TestBuildSuccessLifecycle(t *testing.T) {
	b := &Build{}
	decide := applyTo(t, b)
	decide(b.Request(requested()))
	decide(b.Start("runner-1", t0))
	for _, s := range Steps {
		decide(b.StartStep(s, t0))
		decide(b.FinishStep(s, time.Second, "", t0))
		if s == StepUpload {
			if b.Published() {
				t.Fatal("Published() before BuildPublished")
			}
			decide(b.Publish("m.json", 3, 30, t0))
			if !b.Published() || b.Status() != StatusBuilding {
				t.Fatalf("after Publish: published %v status %q", b.Published(), b.Status())
			}
		}
	}
	evs := decide(b.Succeed("m.json", 3, 30, t0.Add(2*time.Minute)))
	if got := evs[0].(BuildSucceeded).DurationMs; got != 120000 {
		t.Errorf("DurationMs = %d, want 120000", got)
	}
	if b.Status() != StatusSuccess || b.ManifestKey() != "m.json" || b.StreamVersion() != int64(4+2*len(Steps)) {
		t.Errorf("final: status %q manifest %q version %d", b.Status(), b.ManifestKey(), b.StreamVersion())
	}
}

// secret is a value that looks like a credential: no error message may
// contain it.
const secret = "sk_live_9f8e7d6c5b4a3210SECRET"

func TestValidateBuildConfig(t *testing.T) {
	long := func(n int) string { return (secret + strings.Repeat("x", n))[:n] }
	manyVars := func(n int) map[string]string {
		m := make(map[string]string, n)
		for i := range n {
			m[fmt.Sprintf("VAR_%d", i)] = secret
		}
		return m
	}
	tests := []struct {
		name string
		cfg  BuildConfig
		env  map[string]string
		ok   bool
	}{
		{name: "empty", ok: true},
		{name: "full", cfg: BuildConfig{Framework: "nextjs", BuildCommand: "npm run build && npm run export",
			OutputDir: "out", NodeVersion: "20.11.1"}, env: map[string]string{"API_URL": "https://x", "TOKEN": secret}, ok: true},

		// Frameworks.
		{name: "framework vite", cfg: BuildConfig{Framework: "vite"}, ok: true},
		{name: "framework static", cfg: BuildConfig{Framework: "static"}, ok: true},
		{name: "framework other", cfg: BuildConfig{Framework: "other"}, ok: true},
		{name: "unknown framework", cfg: BuildConfig{Framework: "rails"}, env: map[string]string{"K": secret}},
		{name: "framework wrong case", cfg: BuildConfig{Framework: "NextJS"}},

		// Build command.
		{name: "buildCommand of 1000", cfg: BuildConfig{BuildCommand: strings.Repeat("a", 1000)}, ok: true},
		{name: "buildCommand of 1001", cfg: BuildConfig{BuildCommand: strings.Repeat("a", 1001)}},
		{name: "buildCommand with newline", cfg: BuildConfig{BuildCommand: "npm ci\nrm -rf /"}},
		{name: "buildCommand with CR", cfg: BuildConfig{BuildCommand: "npm ci\r"}},
		{name: "buildCommand with NUL", cfg: BuildConfig{BuildCommand: "npm\x00"}},

		// Output directory.
		{name: "outputDir nested", cfg: BuildConfig{OutputDir: "build/client"}, ok: true},
		{name: "outputDir dot-slash", cfg: BuildConfig{OutputDir: "./dist"}, ok: true},
		{name: "outputDir with dots in a name", cfg: BuildConfig{OutputDir: "a..b/..c"}, ok: true},
		{name: "outputDir absolute", cfg: BuildConfig{OutputDir: "/var/www"}, env: map[string]string{"K": secret}},
		{name: "outputDir parent", cfg: BuildConfig{OutputDir: ".."}},
		{name: "outputDir leading ..", cfg: BuildConfig{OutputDir: "../dist"}},
		{name: "outputDir inner ..", cfg: BuildConfig{OutputDir: "dist/../../etc"}},
		{name: "outputDir trailing ..", cfg: BuildConfig{OutputDir: "dist/.."}},
		{name: "outputDir backslash", cfg: BuildConfig{OutputDir: `dist\out`}},
		{name: "outputDir backslash traversal", cfg: BuildConfig{OutputDir: `..\..\etc`}},
		{name: "outputDir too long", cfg: BuildConfig{OutputDir: strings.Repeat("d", 201)}},
		{name: "outputDir of 200", cfg: BuildConfig{OutputDir: strings.Repeat("d", 200)}, ok: true},
		{name: "outputDir with newline", cfg: BuildConfig{OutputDir: "dist\n"}},
		{name: "outputDir with NUL", cfg: BuildConfig{OutputDir: "dist\x00"}},

		// Node versions.
		{name: "nodeVersion major", cfg: BuildConfig{NodeVersion: "20"}, ok: true},
		{name: "nodeVersion single digit", cfg: BuildConfig{NodeVersion: "8"}, ok: true},
		{name: "nodeVersion major.minor", cfg: BuildConfig{NodeVersion: "18.19"}, ok: true},
		{name: "nodeVersion full", cfg: BuildConfig{NodeVersion: "20.11.1"}, ok: true},
		{name: "nodeVersion v-prefixed", cfg: BuildConfig{NodeVersion: "v20"}},
		{name: "nodeVersion x range", cfg: BuildConfig{NodeVersion: "20.x"}},
		{name: "nodeVersion lts", cfg: BuildConfig{NodeVersion: "lts/iron"}},
		{name: "nodeVersion three-digit major", cfg: BuildConfig{NodeVersion: "123"}},
		{name: "nodeVersion four parts", cfg: BuildConfig{NodeVersion: "20.11.1.1"}},
		{name: "nodeVersion trailing dot", cfg: BuildConfig{NodeVersion: "20."}},
		{name: "nodeVersion caret", cfg: BuildConfig{NodeVersion: "^20"}},
		{name: "nodeVersion trailing newline", cfg: BuildConfig{NodeVersion: "20\n"}},

		// Environment variable names.
		{name: "env name upper", env: map[string]string{"API_URL": secret}, ok: true},
		{name: "env name lower", env: map[string]string{"api_url": secret}, ok: true},
		{name: "env name leading underscore", env: map[string]string{"_PRIVATE": secret}, ok: true},
		{name: "env name with digits", env: map[string]string{"V2_KEY1": secret}, ok: true},
		{name: "env name of 128", env: map[string]string{strings.Repeat("N", 128): secret}, ok: true},
		{name: "env name starting with digit", env: map[string]string{"1API": secret}},
		{name: "env name with dash", env: map[string]string{"API-URL": secret}},
		{name: "env name with space", env: map[string]string{"API URL": secret}},
		{name: "env name with equals", env: map[string]string{"A=B": secret}},
		{name: "env name empty", env: map[string]string{"": secret}},
		{name: "env name too long", env: map[string]string{strings.Repeat("N", 129): secret}},
		{name: "env name non-ascii", env: map[string]string{"CLÉ": secret}},
		{name: "bad env name among good ones", env: map[string]string{"A": secret, "B": secret, "C-D": secret}},

		// Environment variable values.
		{name: "env value empty", env: map[string]string{"EMPTY": ""}, ok: true},
		{name: "env value with spaces and symbols", env: map[string]string{"K": secret + " =;'\"$"}, ok: true},
		{name: "env value with NUL", env: map[string]string{"TOKEN": secret + "\x00"}},
		{name: "env value with newline", env: map[string]string{"TOKEN": secret + "\nmore"}},
		{name: "env value with CR", env: map[string]string{"TOKEN": "\r" + secret}},
		{name: "env value of max length", env: map[string]string{"TOKEN": long(MaxEnvValueLen)}, ok: true},
		{name: "env value too long", env: map[string]string{"TOKEN": long(MaxEnvValueLen + 1)}},

		// Counts and totals.
		{name: "max vars", env: manyVars(MaxEnvVars), ok: true},
		{name: "too many vars", env: manyVars(MaxEnvVars + 1)},
		{name: "total at the cap", env: map[string]string{
			"A": long(MaxEnvValueLen), "B": long(MaxEnvValueLen), "C": long(MaxEnvValueLen), "D": long(MaxEnvValueLen - 4)},
			ok: true},
		{name: "total over the cap", env: map[string]string{
			"A": long(MaxEnvValueLen), "B": long(MaxEnvValueLen), "C": long(MaxEnvValueLen), "D": long(MaxEnvValueLen - 3)}},
		{name: "total far over the cap", env: map[string]string{
			"A": long(MaxEnvValueLen), "B": long(MaxEnvValueLen), "C": long(MaxEnvValueLen), "D": long(MaxEnvValueLen),
			"E": long(MaxEnvValueLen)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateBuildConfig(tt.cfg, tt.env)
			if tt.ok {
				if err != nil {
					t.Fatalf("ValidateBuildConfig = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("ValidateBuildConfig = %v, want ErrInvalidConfig", err)
			}
			if msg := err.Error(); strings.Contains(msg, secret) || strings.Contains(msg, secret[:12]) {
				t.Fatalf("error message leaks an environment value: %q", msg)
			}
			for _, v := range tt.env {
				if v != "" && strings.Contains(err.Error(), v) {
					t.Fatalf("error message contains an environment value: %q", err)
				}
			}
		})
	}
}

// The message of a bad name names the variable (truncated when long) so
// that the user can fix it.
func TestValidateBuildConfigNamesTheVariable(t *testing.T) {
	err := ValidateBuildConfig(BuildConfig{}, map[string]string{"MY-VAR": secret})
	if err == nil || !strings.Contains(err.Error(), "MY-VAR") {
		t.Errorf("error %v does not name MY-VAR", err)
	}
	err = ValidateBuildConfig(BuildConfig{}, map[string]string{"TOKEN": secret + "\n"})
	if err == nil || !strings.Contains(err.Error(), "TOKEN") {
		t.Errorf("error %v does not name TOKEN", err)
	}
	longName := strings.Repeat("N", 500)
	err = ValidateBuildConfig(BuildConfig{}, map[string]string{longName: secret})
	if err == nil || strings.Contains(err.Error(), longName[:65]) || !strings.Contains(err.Error(), longName[:64]+"…") {
		t.Errorf("error %v does not truncate a long name to 64 characters", err)
	}
}

func TestValidateEgressAllow(t *testing.T) {
	for _, ok := range [][]string{nil, {"fonts.googleapis.com"}, {"fonts.gstatic.com:443", "*.example.com", "a.b.co:8443"}} {
		if err := ValidateBuildConfig(BuildConfig{EgressAllow: ok}, nil); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	many := make([]string, MaxEgressAllow+1)
	for i := range many {
		many[i] = "h.example.com"
	}
	for _, bad := range [][]string{{"localhost"}, {"127.0.0.1"}, {"http://x.com"}, {"x.com/path"}, {"*"}, {"Fonts.Googleapis.com"}, {"x.com:"}, many} {
		if err := ValidateBuildConfig(BuildConfig{EgressAllow: bad}, nil); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%v accepted: %v", bad, err)
		}
	}
}

func TestBuildCancel(t *testing.T) {
	cancel := BuildCancelRequested{BuildID: requested().BuildID, By: "alice", At: t1}
	for _, tc := range []struct {
		name    string
		given   []Event
		wantErr error
	}{
		{"pending", hPending(), nil},
		{"building", hStepOpen(), nil},
		{"retrying", hRetrying(), nil},
		{"succeeded", hSucceeded(), ErrBuildFinished},
		{"failed", hFailed(), ErrBuildFinished},
		{"twice", append(hBuilding(), cancel), ErrCancelRequested},
		{"unknown", nil, ErrBuildNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := givenBuild(tc.given...).Cancel("alice", t1)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil && (len(evs) != 1 || evs[0] != Event(cancel)) {
				t.Fatalf("events = %#v, want %#v", evs, cancel)
			}
		})
	}
	// A cancelled build never starts again and its failure is final.
	b := givenBuild(append(hPending(), cancel)...)
	if !b.CancelRequested() {
		t.Fatal("CancelRequested = false")
	}
	evs, err := b.Start("r", t1)
	if err != nil || len(evs) != 1 {
		t.Fatalf("Start = %v, %v", evs, err)
	}
	if f, ok := evs[0].(BuildFailed); !ok || f.Error != CancelledError || f.Retryable {
		t.Fatalf("Start of a cancelled build = %#v, want BuildFailed cancelled", evs[0])
	}
	b = givenBuild(append(hStepOpen(), cancel)...)
	evs, _ = b.Fail(StepInstall, "signal: killed", true, t1)
	if f, ok := evs[0].(BuildFailed); !ok || f.Error != CancelledError || f.Retryable {
		t.Fatalf("Fail of a cancelled build = %#v, want final BuildFailed cancelled", evs[0])
	}
}
