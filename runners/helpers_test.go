package runners_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/archive"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/infra/blob/fs"
	"github.com/zipship/zipship/infra/cdn/edge"
	"github.com/zipship/zipship/infra/eventstore"
	"github.com/zipship/zipship/infra/eventstore/sqlite"
	"github.com/zipship/zipship/runners"
)

const baseDomain = "sites.test"

// quietLog drops everything below errors; set ZIPSHIP_TEST_LOG=1 to see all.
func quietLog() *slog.Logger {
	lvl := slog.LevelError + 1
	if os.Getenv("ZIPSHIP_TEST_LOG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// refresher wraps the real edge and counts refreshes per tenant. Hook, when
// set, runs before the edge refresh and may fail it.
type refresher struct {
	edge *edge.Server
	mu   sync.Mutex
	n    map[string]int
	hook func(ctx context.Context, tenant string) error
}

func (r *refresher) Refresh(ctx context.Context, tenant string) error {
	r.mu.Lock()
	r.n[tenant]++
	hook := r.hook
	r.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, tenant); err != nil {
			return err
		}
	}
	return r.edge.Refresh(ctx, tenant)
}

func (r *refresher) count(tenant string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[tenant]
}

func (r *refresher) setHook(h func(ctx context.Context, tenant string) error) {
	r.mu.Lock()
	r.hook = h
	r.mu.Unlock()
}

// env is a runner over real adapters: SQLite events, filesystem blobs, the
// built-in edge served by an httptest server.
type env struct {
	t       *testing.T
	events  *sqlite.Store
	blobs   *fs.Store
	app     *app.App
	edge    *edge.Server
	ref     *refresher
	site    *httptest.Server
	work    string
	runner  *runners.Runner
	retries []int // attempts passed to RetryDelay
	mu      sync.Mutex
}

func newEnv(t *testing.T) *env { return newEnvWith(t) }

// newEnvWith is newEnv with the runner's configuration changed by opts,
// which see the env's stores.
func newEnvWith(t *testing.T, opts ...func(*env, *runners.Config)) *env {
	t.Helper()
	dir := t.TempDir()
	events, err := sqlite.Open(filepath.Join(dir, "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { events.Close() })
	blobs, err := fs.New(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blobs.Close() })
	log := quietLog()
	e := &env{t: t, events: events, blobs: blobs, work: filepath.Join(dir, "work")}
	if err := os.MkdirAll(e.work, 0o755); err != nil {
		t.Fatal(err)
	}
	e.app = app.New(events, blobs, log)
	// PointerTTL < 0: the edge only sees a pointer move through Refresh, so
	// serving the new page proves the runner refreshed it.
	e.edge = edge.New(blobs, edge.Options{BaseDomain: baseDomain, PointerTTL: -1, Logger: log})
	e.ref = &refresher{edge: e.edge, n: map[string]int{}}
	e.site = httptest.NewServer(e.edge)
	t.Cleanup(e.site.Close)
	cfg := runners.Config{
		Name: "test-runner", WorkDir: e.work, ZipLimits: archive.DefaultLimits(), Refresher: e.ref, Log: log,
		RetryDelay: func(attempt int) time.Duration {
			e.mu.Lock()
			e.retries = append(e.retries, attempt)
			e.mu.Unlock()
			return time.Millisecond
		},
	}
	for _, o := range opts {
		o(e, &cfg)
	}
	e.runner = runners.New(e.app, cfg)
	return e
}

// makeZip builds a ZIP in memory from name → content (directories are
// implied by the names).
func makeZip(t *testing.T, files map[string]string) []byte {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, n := range names {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: n, Method: zip.Deflate, Modified: time.Unix(1700000000, 0)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, files[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func staticSite(title string) map[string]string {
	return map[string]string{
		"index.html":       "<!doctype html><title>" + title + "</title><h1>" + title + "</h1>",
		"css/site.css":     "body{color:#333}",
		"about/index.html": "<!doctype html><p>about " + title + "</p>",
	}
}

// request stores zipData as the source of a new build of tenant requested
// at `at` and appends its BuildRequested through app.RequestBuild. mutate may
// change the request before it is appended.
func (e *env) request(tenant string, at time.Time, zipData []byte, mutate func(*domain.BuildRequested)) string {
	e.t.Helper()
	ctx := context.Background()
	id := uuid.NewString()
	key := blob.SourceKey(tenant, id)
	if _, err := e.blobs.Put(ctx, key, bytes.NewReader(zipData)); err != nil {
		e.t.Fatal(err)
	}
	sum, err := archive.Validate(bytes.NewReader(zipData), int64(len(zipData)), archive.DefaultLimits())
	if err != nil {
		e.t.Fatalf("test ZIP invalid: %v", err)
	}
	r := domain.BuildRequested{
		BuildID: id, TenantID: tenant, Version: fmt.Sprintf("v%d", at.UnixMilli()), RequestedBy: "alice",
		Source: domain.Source{Key: key, SHA256: sha(zipData), Size: int64(len(zipData)), Files: sum.Files,
			Uncompressed: sum.TotalUncompressed},
		Config: domain.BuildConfig{Framework: "static"},
		At:     at.UTC(),
	}
	if mutate != nil {
		mutate(&r)
	}
	if _, err := e.app.RequestBuild(ctx, app.Meta{CorrelationID: "corr-" + id}, r); err != nil {
		e.t.Fatalf("RequestBuild: %v", err)
	}
	return id
}

// stream returns the decoded events of a stream.
func (e *env) stream(name string) []domain.Event {
	e.t.Helper()
	raw, err := e.events.ReadStream(context.Background(), name, 1)
	if err != nil {
		e.t.Fatal(err)
	}
	out := make([]domain.Event, 0, len(raw))
	for _, r := range raw {
		d, err := domain.Decode(r.Type, r.Data)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

func (e *env) rawStream(name string) []eventstore.Event {
	e.t.Helper()
	raw, err := e.events.ReadStream(context.Background(), name, 1)
	if err != nil {
		e.t.Fatal(err)
	}
	return raw
}

// get fetches path from the edge with the given Host.
func (e *env) get(host, path string) (int, string) {
	e.t.Helper()
	code, _, body := e.getResp(host, path)
	return code, body
}

// getResp fetches path from the edge with the given Host and returns the
// response's status, headers and body.
func (e *env) getResp(host, path string) (int, http.Header, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.site.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Host = host
	res, err := e.site.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return res.StatusCode, res.Header, string(b)
}

func liveHost(tenant string) string { return tenant + "." + baseDomain }

// workspaceEmpty fails the test if a build left a workspace behind.
func (e *env) workspaceEmpty() {
	e.t.Helper()
	ents, err := os.ReadDir(e.work)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, d := range ents {
		e.t.Errorf("workspace left behind: %s", d.Name())
	}
}

// signature renders a build stream compactly: "BuildStarted#1",
// "validate>" (step started), "validate<" (step finished), other types by
// name.
func signature(evs []domain.Event) []string {
	out := make([]string, 0, len(evs))
	for _, ev := range evs {
		switch ev := ev.(type) {
		case domain.BuildStarted:
			out = append(out, fmt.Sprintf("BuildStarted#%d", ev.Attempt))
		case domain.BuildStepStarted:
			out = append(out, string(ev.Step)+">")
		case domain.BuildStepFinished:
			out = append(out, string(ev.Step)+"<")
		case domain.BuildAttemptFailed:
			out = append(out, fmt.Sprintf("BuildAttemptFailed#%d@%s", ev.Attempt, ev.Step))
		case domain.BuildFailed:
			out = append(out, fmt.Sprintf("BuildFailed#%d@%s", ev.Attempt, ev.Step))
		default:
			out = append(out, ev.EventType())
		}
	}
	return out
}

// staticSuccess is the signature of one successful static attempt.
func staticSuccess(attempt int) []string {
	return []string{fmt.Sprintf("BuildStarted#%d", attempt),
		"validate>", "validate<", "workspace>", "workspace<", "download>", "download<",
		"extract>", "extract<", "discover>", "discover<", "detect>", "detect<",
		"upload>", "upload<", "BuildPublished", "activate>", "activate<", "invalidate>", "invalidate<",
		"BuildSucceeded"}
}

// stepDetail returns the detail of the last finished step of that name.
func stepDetail(evs []domain.Event, step domain.Step) (string, bool) {
	detail, ok := "", false
	for _, ev := range evs {
		if f, is := ev.(domain.BuildStepFinished); is && f.Step == step {
			detail, ok = f.Detail, true
		}
	}
	return detail, ok
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

// newEnvRunnerWithoutRetryOption is a runner on e's stores with the real
// backoff (no RetryDelay).
func newEnvRunnerWithoutRetryOption(e *env) *runners.Runner {
	return runners.New(e.app, runners.Config{Name: "slow-runner", WorkDir: e.work, ZipLimits: archive.DefaultLimits(),
		Refresher: e.ref, Log: quietLog()})
}

// hostListener opens a TCP listener on the host at addr that answers every
// connection with reply and counts it in accepted; it returns the port.
func hostListener(t *testing.T, addr string, reply []byte, accepted *atomic.Int64) int {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conn.Write(reply)
			conn.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}
