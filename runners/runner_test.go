package runners_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/infra/eventstore"
)

func TestStaticBuildSucceeds(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const tenant = "acme"

	// The edge has nothing for the tenant yet (and, with PointerTTL < 0,
	// will not look again until refreshed).
	if code, _ := e.get(liveHost(tenant), "/"); code != http.StatusNotFound {
		t.Fatalf("before the build: status %d, want 404", code)
	}

	id := e.request(tenant, time.Now(), makeZip(t, staticSite("Hello v1")), nil)
	if err := e.runner.Handle(ctx, app.Meta{CorrelationID: "corr-" + id}, id); err != nil {
		t.Fatalf("Handle: %v", err)
	}

	evs := e.stream(domain.BuildStream(id))
	want := append([]string{"BuildRequested"}, staticSuccess(1)...)
	if got := signature(evs); !slices.Equal(got, want) {
		t.Fatalf("build stream:\n got %q\nwant %q", got, want)
	}
	req := evs[0].(domain.BuildRequested)
	started := evs[1].(domain.BuildStarted)
	if started.Runner != "test-runner" || started.BuildID != id {
		t.Errorf("BuildStarted = %+v", started)
	}
	for _, ev := range evs {
		if f, ok := ev.(domain.BuildStepFinished); ok && f.Attempt != 1 {
			t.Errorf("step %s finished with attempt %d", f.Step, f.Attempt)
		}
	}
	if d, _ := stepDetail(evs, domain.StepDownload); !strings.Contains(d, "sha256 verified") {
		t.Errorf("download detail = %q", d)
	}
	if d, _ := stepDetail(evs, domain.StepDiscover); d != "static site at /" {
		t.Errorf("discover detail = %q", d)
	}
	if d, _ := stepDetail(evs, domain.StepActivate); !strings.HasPrefix(d, "live: "+req.Version) {
		t.Errorf("activate detail = %q", d)
	}
	manifestKey := blob.ManifestKey(tenant, id)
	succ := evs[len(evs)-1].(domain.BuildSucceeded)
	if succ.ManifestKey != manifestKey || succ.Files != 3 || succ.Attempt != 1 {
		t.Errorf("BuildSucceeded = %+v", succ)
	}
	pub := ofType[domain.BuildPublished](evs)[0]
	if pub.ManifestKey != manifestKey || pub.Files != 3 || pub.Bytes != succ.Bytes {
		t.Errorf("BuildPublished = %+v, succeeded %+v", pub, succ)
	}
	// The envelope carries the tracing metadata given to Handle.
	for _, r := range e.rawStream(domain.BuildStream(id))[1:] {
		if r.CorrelationID != "corr-"+id || r.Tenant != tenant {
			t.Errorf("event %s: correlation %q tenant %q", r.Type, r.CorrelationID, r.Tenant)
		}
	}

	m, err := blob.LoadManifest(ctx, e.blobs, manifestKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"index.html", "css/site.css", "about/index.html"} {
		if _, ok := m.Files[p]; !ok {
			t.Errorf("manifest lacks %s: %v", p, m.Files)
		}
	}

	site := e.stream(domain.SiteStream(tenant))
	if len(site) != 1 {
		t.Fatalf("site stream has %d events, want 1", len(site))
	}
	act, ok := site[0].(domain.DeploymentActivated)
	if !ok || act.BuildID != id || act.Version != req.Version || act.ManifestKey != manifestKey ||
		act.ActivatedBy != "alice" || act.TenantID != tenant || act.Previous != "" {
		t.Errorf("site event = %+v", site[0])
	}

	ptr, err := blob.ReadPointer(ctx, e.blobs, tenant)
	if err != nil {
		t.Fatal(err)
	}
	if ptr.BuildID != id || ptr.Version != req.Version || ptr.ManifestKey != manifestKey {
		t.Errorf("pointer = %+v", ptr)
	}

	if n := e.ref.count(tenant); n != 1 {
		t.Errorf("edge refreshed %d times, want 1", n)
	}
	if code, body := e.get(liveHost(tenant), "/"); code != http.StatusOK || !strings.Contains(body, "Hello v1") {
		t.Errorf("live site: %d %q", code, body)
	}
	if code, body := e.get(liveHost(tenant), "/about/"); code != http.StatusOK || !strings.Contains(body, "about Hello v1") {
		t.Errorf("live site /about/: %d %q", code, body)
	}
	depHost := strings.ReplaceAll(id, "-", "") + "." + liveHost(tenant)
	if code, body := e.get(depHost, "/"); code != http.StatusOK || !strings.Contains(body, "Hello v1") {
		t.Errorf("deployment URL: %d %q", code, body)
	}
	e.workspaceEmpty()

	// Redelivery of a finished build appends nothing anywhere.
	head, _ := e.events.Head(ctx)
	if err := e.runner.Handle(ctx, app.Meta{}, id); err != nil {
		t.Fatalf("Handle again: %v", err)
	}
	if h, _ := e.events.Head(ctx); h != head {
		t.Errorf("redelivery appended %d events", h-head)
	}
	if n := e.ref.count(tenant); n != 1 {
		t.Errorf("redelivery refreshed the edge again (%d)", n)
	}
}

func TestProjectNeedingABuildFailsWithoutRetry(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	zipData := makeZip(t, map[string]string{
		"my-app/package.json":   `{"name":"my-app","scripts":{"build":"next build"},"dependencies":{"next":"15.0.0"}}`,
		"my-app/app/page.tsx":   "export default function Page() { return <h1>hi</h1> }",
		"my-app/public/x.svg":   "<svg/>",
		"my-app/out/index.html": "<h1>stale export</h1>",
	})
	id := e.request("acme", time.Now(), zipData, func(r *domain.BuildRequested) { r.Config.Framework = "nextjs" })
	if err := e.runner.Handle(ctx, app.Meta{}, id); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	evs := e.stream(domain.BuildStream(id))
	want := []string{"BuildRequested", "BuildStarted#1", "validate>", "validate<", "workspace>", "workspace<",
		"download>", "download<", "extract>", "extract<", "discover>", "discover<", "detect>", "BuildFailed#1@detect"}
	if got := signature(evs); !slices.Equal(got, want) {
		t.Fatalf("build stream:\n got %q\nwant %q", got, want)
	}
	if d, _ := stepDetail(evs, domain.StepDiscover); d != "package.json at my-app/package.json" {
		t.Errorf("discover detail = %q", d)
	}
	f := evs[len(evs)-1].(domain.BuildFailed)
	if f.Retryable || f.Step != domain.StepDetect || !strings.Contains(f.Error, "builds need a runner") ||
		!strings.Contains(f.Error, "my-app/package.json") {
		t.Errorf("BuildFailed = %+v", f)
	}
	if len(e.retries) != 0 {
		t.Errorf("retried a user error: %v", e.retries)
	}
	if site := e.stream(domain.SiteStream("acme")); len(site) != 0 {
		t.Errorf("site stream = %v, want nothing activated", signature(site))
	}
	if _, err := blob.ReadPointer(ctx, e.blobs, "acme"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("pointer written for a failed build: %v", err)
	}
	if _, err := e.blobs.Stat(ctx, blob.ManifestKey("acme", id)); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("sources published for a failed build: %v", err)
	}
	if n := e.ref.count("acme"); n != 0 {
		t.Errorf("edge refreshed %d times for a failed build", n)
	}
	e.workspaceEmpty()

	// A redelivered request for a failed build does nothing.
	head, _ := e.events.Head(ctx)
	if err := e.runner.Handle(ctx, app.Meta{}, id); err != nil {
		t.Fatal(err)
	}
	if h, _ := e.events.Head(ctx); h != head {
		t.Errorf("redelivery appended %d events", h-head)
	}
}

func TestUserErrorsAreNotRetried(t *testing.T) {
	for name, files := range map[string]map[string]string{
		"no project": {"readme.txt": "hello", "src/main.c": "int main(){}"},
		"two sites":  {"a/index.html": "a", "b/index.html": "b"},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			id := e.request("acme", time.Now(), makeZip(t, files), nil)
			if err := e.runner.Handle(context.Background(), app.Meta{}, id); err != nil {
				t.Fatal(err)
			}
			evs := e.stream(domain.BuildStream(id))
			last, ok := evs[len(evs)-1].(domain.BuildFailed)
			if !ok || last.Step != domain.StepDiscover || last.Retryable || !strings.Contains(last.Error, "no project found") {
				t.Fatalf("last event = %#v", evs[len(evs)-1])
			}
			if n := len(ofType[domain.BuildStarted](evs)); n != 1 {
				t.Errorf("%d attempts, want 1", n)
			}
			e.workspaceEmpty()
		})
	}
}

func TestInfrastructureErrorIsRetriedThenFails(t *testing.T) {
	cases := map[string]func(e *env, zipData []byte) func(*domain.BuildRequested){
		"wrong digest in request": func(e *env, zipData []byte) func(*domain.BuildRequested) {
			return func(r *domain.BuildRequested) { r.Source.SHA256 = sha([]byte("something else")) }
		},
		"source replaced after upload": func(e *env, zipData []byte) func(*domain.BuildRequested) {
			return func(r *domain.BuildRequested) {
				tampered := bytes.Clone(zipData)
				tampered[len(tampered)-30] ^= 0xff // same size, other bytes
				if _, err := e.blobs.Put(context.Background(), r.Source.Key, bytes.NewReader(tampered)); err != nil {
					e.t.Fatal(err)
				}
			}
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			zipData := makeZip(t, staticSite("x"))
			began := time.Now()
			id := e.request("acme", time.Now(), zipData, mutate(e, zipData))
			if err := e.runner.Handle(context.Background(), app.Meta{}, id); err != nil {
				t.Fatalf("Handle: %v", err)
			}
			if took := time.Since(began); took > 1500*time.Millisecond {
				t.Errorf("took %v: the RetryDelay option was not used", took)
			}
			evs := e.stream(domain.BuildStream(id))
			attempt := func(n int) []string {
				return []string{"BuildStarted#" + string(rune('0'+n)), "validate>", "validate<", "workspace>", "workspace<", "download>"}
			}
			var want []string
			want = append(want, "BuildRequested")
			want = append(want, attempt(1)...)
			want = append(want, "BuildAttemptFailed#1@download")
			want = append(want, attempt(2)...)
			want = append(want, "BuildAttemptFailed#2@download")
			want = append(want, attempt(3)...)
			want = append(want, "BuildFailed#3@download")
			if got := signature(evs); !slices.Equal(got, want) {
				t.Fatalf("build stream:\n got %q\nwant %q", got, want)
			}
			af := ofType[domain.BuildAttemptFailed](evs)
			if af[0].RetryInMs != 2000 || af[1].RetryInMs != 4000 || !strings.Contains(af[0].Error, "digest") {
				t.Errorf("attempt failures = %+v", af)
			}
			f := evs[len(evs)-1].(domain.BuildFailed)
			if !f.Retryable || !strings.Contains(f.Error, "digest") {
				t.Errorf("BuildFailed = %+v", f)
			}
			if !slices.Equal(e.retries, []int{1, 2}) {
				t.Errorf("RetryDelay called for attempts %v, want [1 2]", e.retries)
			}
			if site := e.stream(domain.SiteStream("acme")); len(site) != 0 {
				t.Errorf("site stream = %v", signature(site))
			}
			e.workspaceEmpty()
		})
	}
}

func TestBuildsOfOneTenantActivateInOrder(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Minute)
	id1 := e.request("acme", t0, makeZip(t, staticSite("first")), nil)
	id2 := e.request("acme", t0.Add(time.Second), makeZip(t, staticSite("second")), nil)

	if err := e.runner.Handle(ctx, app.Meta{}, id1); err != nil {
		t.Fatal(err)
	}
	if _, body := e.get(liveHost("acme"), "/"); !strings.Contains(body, "first") {
		t.Fatalf("after build 1 the site serves %q", body)
	}
	if err := e.runner.Handle(ctx, app.Meta{}, id2); err != nil {
		t.Fatal(err)
	}
	site := e.stream(domain.SiteStream("acme"))
	if len(site) != 2 {
		t.Fatalf("site stream = %v", signature(site))
	}
	a1, a2 := site[0].(domain.DeploymentActivated), site[1].(domain.DeploymentActivated)
	if a1.BuildID != id1 || a2.BuildID != id2 || a2.Previous != id1 {
		t.Errorf("activations = %+v, %+v", a1, a2)
	}
	ptr, err := blob.ReadPointer(ctx, e.blobs, "acme")
	if err != nil || ptr.BuildID != id2 {
		t.Fatalf("pointer = %+v, %v; want build 2", ptr, err)
	}
	if _, body := e.get(liveHost("acme"), "/"); !strings.Contains(body, "second") {
		t.Errorf("after build 2 the site serves %q", body)
	}
	// Build 1 stays reachable at its own address.
	if _, body := e.get(strings.ReplaceAll(id1, "-", "")+"."+liveHost("acme"), "/"); !strings.Contains(body, "first") {
		t.Errorf("build 1 deployment URL serves %q", body)
	}
	e.workspaceEmpty()
}

func TestOlderBuildDoesNotReplaceNewerLiveBuild(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Minute)
	older := e.request("acme", t0, makeZip(t, staticSite("older")), nil)
	newer := e.request("acme", t0.Add(time.Second), makeZip(t, staticSite("newer")), nil)

	if err := e.runner.Handle(ctx, app.Meta{}, newer); err != nil {
		t.Fatal(err)
	}
	if err := e.runner.Handle(ctx, app.Meta{}, older); err != nil {
		t.Fatal(err)
	}
	evs := e.stream(domain.BuildStream(older))
	want := append([]string{"BuildRequested"}, staticSuccess(1)...)
	if got := signature(evs); !slices.Equal(got, want) {
		t.Fatalf("older build stream:\n got %q\nwant %q", got, want)
	}
	d, _ := stepDetail(evs, domain.StepActivate)
	if !strings.Contains(d, "not activated") || !strings.Contains(d, "newer build") || !strings.Contains(d, newer) {
		t.Errorf("activate detail = %q", d)
	}
	site := e.stream(domain.SiteStream("acme"))
	if len(site) != 1 || site[0].(domain.DeploymentActivated).BuildID != newer {
		t.Fatalf("site stream = %+v", site)
	}
	ptr, err := blob.ReadPointer(ctx, e.blobs, "acme")
	if err != nil || ptr.BuildID != newer {
		t.Fatalf("pointer = %+v, %v; want the newer build", ptr, err)
	}
	if _, body := e.get(liveHost("acme"), "/"); !strings.Contains(body, "newer") {
		t.Errorf("live site serves %q", body)
	}
	if _, body := e.get(strings.ReplaceAll(older, "-", "")+"."+liveHost("acme"), "/"); !strings.Contains(body, "older") {
		t.Errorf("older deployment URL serves %q", body)
	}
}

// appendByHand appends events to a build stream as a (now dead) runner did.
func (e *env) appendByHand(id string, evs ...domain.Event) {
	e.t.Helper()
	b, err := e.app.Build(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	var envs []eventstore.Event
	for _, ev := range evs {
		env, err := app.Envelope(ev, b.Tenant(), app.Meta{})
		if err != nil {
			e.t.Fatal(err)
		}
		envs = append(envs, env)
	}
	if _, err := e.events.Append(context.Background(), domain.BuildStream(id), eventstore.Exact(b.StreamVersion()), envs...); err != nil {
		e.t.Fatal(err)
	}
}

func TestRecoveryFromDeadRunner(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.request("acme", time.Now(), makeZip(t, staticSite("recovered")), nil)
	now := time.Now().UTC()
	e.appendByHand(id,
		domain.BuildStarted{BuildID: id, Attempt: 1, Runner: "dead-runner", At: now},
		domain.BuildStepStarted{BuildID: id, Attempt: 1, Step: domain.StepValidate, At: now},
		domain.BuildStepFinished{BuildID: id, Attempt: 1, Step: domain.StepValidate, At: now},
		domain.BuildStepStarted{BuildID: id, Attempt: 1, Step: domain.StepDownload, At: now},
	)
	if err := e.runner.Handle(ctx, app.Meta{}, id); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	evs := e.stream(domain.BuildStream(id))
	want := append([]string{"BuildRequested", "BuildStarted#1", "validate>", "validate<", "download>"}, staticSuccess(2)...)
	if got := signature(evs); !slices.Equal(got, want) {
		t.Fatalf("build stream:\n got %q\nwant %q", got, want)
	}
	if _, body := e.get(liveHost("acme"), "/"); !strings.Contains(body, "recovered") {
		t.Errorf("live site serves %q", body)
	}
	e.workspaceEmpty()
}

func TestDeadRunnerOnLastAttemptGivesUp(t *testing.T) {
	e := newEnv(t)
	id := e.request("acme", time.Now(), makeZip(t, staticSite("x")), nil)
	now := time.Now().UTC()
	var evs []domain.Event
	for a := 1; a <= domain.MaxAttempts; a++ {
		evs = append(evs, domain.BuildStarted{BuildID: id, Attempt: a, Runner: "dead", At: now},
			domain.BuildStepStarted{BuildID: id, Attempt: a, Step: domain.StepUpload, At: now})
	}
	e.appendByHand(id, evs...)
	if err := e.runner.Handle(context.Background(), app.Meta{}, id); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	got := e.stream(domain.BuildStream(id))
	f, ok := got[len(got)-1].(domain.BuildFailed)
	if !ok || !f.Retryable || f.Attempt != domain.MaxAttempts || f.Step != domain.StepUpload {
		t.Fatalf("last event = %#v", got[len(got)-1])
	}
	if n := len(ofType[domain.BuildStarted](got)); n != domain.MaxAttempts {
		t.Errorf("%d attempts started, want %d", n, domain.MaxAttempts)
	}
}

func TestCancelledBuildRecordsNoFailure(t *testing.T) {
	e := newEnv(t)
	id := e.request("acme", time.Now(), makeZip(t, staticSite("after restart")), nil)

	// The process is told to stop while the CDN is being refreshed.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.ref.setHook(func(hctx context.Context, _ string) error {
		cancel()
		<-hctx.Done()
		return hctx.Err()
	})
	err := e.runner.Handle(ctx, app.Meta{}, id)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Handle = %v, want context.Canceled", err)
	}
	evs := e.stream(domain.BuildStream(id))
	if n := len(ofType[domain.BuildFailed](evs)) + len(ofType[domain.BuildAttemptFailed](evs)); n != 0 {
		t.Fatalf("a cancelled build recorded a failure: %q", signature(evs))
	}
	if got := signature(evs); got[len(got)-1] != "invalidate>" {
		t.Fatalf("build stream %q does not end in the interrupted step", got)
	}
	if len(e.retries) != 0 {
		t.Errorf("cancelled build scheduled retries %v", e.retries)
	}
	e.workspaceEmpty()

	// Redelivered after the restart, the build completes in attempt 2; the
	// activation of attempt 1 is kept, not repeated.
	e.ref.setHook(nil)
	if err := e.runner.Handle(context.Background(), app.Meta{}, id); err != nil {
		t.Fatalf("Handle after restart: %v", err)
	}
	evs = e.stream(domain.BuildStream(id))
	if last := evs[len(evs)-1]; last.EventType() != "BuildSucceeded" || last.(domain.BuildSucceeded).Attempt != 2 {
		t.Fatalf("build stream %q", signature(evs))
	}
	if site := e.stream(domain.SiteStream("acme")); len(site) != 1 {
		t.Errorf("site stream = %q, want one activation", signature(site))
	}
	if code, body := e.get(liveHost("acme"), "/"); code != http.StatusOK || !strings.Contains(body, "after restart") {
		t.Errorf("live site: %d %q", code, body)
	}
}

func TestCancelledDuringBackoff(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A runner with the real 2 s backoff: cancel while it waits.
	r := newEnvRunnerWithoutRetryOption(e)
	id := e.request("acme", time.Now(), makeZip(t, staticSite("x")), func(r *domain.BuildRequested) {
		r.Source.SHA256 = sha([]byte("wrong"))
	})
	done := make(chan error, 1)
	go func() { done <- r.Handle(ctx, app.Meta{}, id) }()
	deadline := time.After(5 * time.Second)
	for {
		evs := e.stream(domain.BuildStream(id))
		if len(ofType[domain.BuildAttemptFailed](evs)) == 1 {
			break
		}
		select {
		case <-deadline:
			t.Fatal("first attempt did not fail")
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Handle = %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Handle did not stop during the backoff")
	}
	if n := len(ofType[domain.BuildStarted](e.stream(domain.BuildStream(id)))); n != 1 {
		t.Errorf("%d attempts started, want 1", n)
	}
}
