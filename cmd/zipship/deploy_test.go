package main

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// fakeAPI is a stand-in zipship server for runDeploy: it accepts uploads
// of tenant acme and streams a scripted list of SSE frames for build b-1.
type fakeAPI struct {
	t       *testing.T
	token   string
	frames  []string // SSE frames of the events stream
	failFor int      // answer the first failFor uploads with 503

	mu       sync.Mutex
	uploads  int
	keys     []string
	config   string
	zipBytes []byte
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		f.mu.Lock()
		f.uploads++
		f.keys = append(f.keys, r.Header.Get("Idempotency-Key"))
		f.mu.Unlock()
	}
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"unauthorized","message":"bad token"}`)
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/api/builds/acme":
		f.mu.Lock()
		n := f.uploads
		f.mu.Unlock()
		if n <= f.failFor {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":"unavailable","message":"try again"}`)
			return
		}
		if err := r.ParseMultipartForm(1 << 20); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		file, _, err := r.FormFile("file")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		data, _ := io.ReadAll(file)
		f.mu.Lock()
		f.config = r.FormValue("buildConfig")
		f.zipBytes = data
		f.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprint(w, `{"success":true,"message":"build queued","data":{"build":{"id":"b-1","tenantId":"acme","version":"v1733","status":"pending"}},"links":{"self":"/api/builds/acme/b-1","events":"/api/tenants/acme/events?after=7"}}`)
	case r.Method == http.MethodGet && r.URL.Path == "/api/tenants/acme/events":
		w.Header().Set("Content-Type", "text/event-stream")
		for _, fr := range f.frames {
			fmt.Fprint(w, fr)
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	default:
		http.NotFound(w, r)
	}
}

func sse(id int, name, data string) string {
	return fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", id, name, data)
}

// successFrames is a build of b-1 that succeeds after a retried step,
// with another build's event in between.
func successFrames() []string {
	return []string{
		sse(8, "build:started", `{"buildId":"b-1","tenantId":"acme","version":"v1733","attempt":1}`),
		sse(9, "build:step", `{"buildId":"b-1","step":"extract","status":"started","attempt":1}`),
		sse(10, "build:step", `{"buildId":"b-1","step":"extract","status":"finished","attempt":1,"durationMs":12,"detail":"3 files"}`),
		sse(11, "build:step", `{"buildId":"b-9","step":"other","status":"finished","attempt":1,"durationMs":5,"detail":"not ours"}`),
		sse(12, "build:retrying", `{"buildId":"b-1","attempt":1,"step":"publish","error":"blob store timeout","retryInMs":1500}`),
		sse(13, "build:step", `{"buildId":"b-1","step":"publish","status":"finished","attempt":2,"durationMs":2345,"detail":""}`),
		sse(14, "build:completed", `{"buildId":"b-1","status":"success","deploymentId":"b-1","url":"http://acme.localhost:8081","deploymentUrl":"http://b-1.acme.localhost:8081"}`),
	}
}

func newFakeAPI(t *testing.T, frames []string) (*fakeAPI, *httptest.Server) {
	t.Helper()
	f := &fakeAPI{t: t, token: "sekret.jwt.token", frames: frames}
	ts := httptest.NewServer(f)
	t.Cleanup(ts.Close)
	return f, ts
}

func writeProject(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{
		"index.html":              "<h1>hi</h1>",
		"assets/app.js":           "console.log(1)",
		"node_modules/x/index.js": "not uploaded",
	} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func runDeployForTest(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code = runDeploy(ctx, args, &out, &errOut)
	return out.String(), errOut.String(), code
}

func TestRunDeploySuccess(t *testing.T) {
	t.Setenv("ZIPSHIP_TOKEN", "")
	t.Setenv("ZIPSHIP_SERVER", "")
	f, ts := newFakeAPI(t, successFrames())
	dir := writeProject(t)

	// PATH first, flags after it.
	stdout, stderr, code := runDeployForTest(t, dir, "--tenant", "acme", "--server", ts.URL, "--token", f.token,
		"--config", `{"framework":"static"}`)
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if stdout != "http://acme.localhost:8081/\n" {
		t.Errorf("stdout = %q, want the live URL alone", stdout)
	}
	if strings.Contains(stdout+stderr, f.token) {
		t.Error("the token was printed")
	}
	for _, want := range []string{
		"zipped 2 files (",
		"uploaded ",
		"build b-1 queued (v1733)",
		"  ✓ extract      12ms  3 files\n",
		"  ↻ publish failed (attempt 1): blob store timeout; retrying in 1.5s\n",
		"  ✓ publish      2.3s\n",
		"this version stays at http://b-1.acme.localhost:8081\n",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "not ours") {
		t.Errorf("stderr shows another build's step:\n%s", stderr)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.config != `{"framework":"static"}` {
		t.Errorf("buildConfig = %q", f.config)
	}
	if len(f.keys) != 1 || uuid.Validate(f.keys[0]) != nil {
		t.Errorf("Idempotency-Key(s) = %q, want one UUID", f.keys)
	}
	zr, err := zip.NewReader(bytes.NewReader(f.zipBytes), int64(len(f.zipBytes)))
	if err != nil {
		t.Fatalf("uploaded file is not a ZIP: %v", err)
	}
	var names []string
	for _, zf := range zr.File {
		names = append(names, zf.Name)
	}
	if !slices.Equal(names, []string{"assets/app.js", "index.html"}) {
		t.Errorf("zip entries = %q", names)
	}
}

func TestRunDeployFromEnvAndZipFile(t *testing.T) {
	f, ts := newFakeAPI(t, successFrames())
	t.Setenv("ZIPSHIP_TOKEN", f.token)
	t.Setenv("ZIPSHIP_SERVER", ts.URL)
	zipPath := filepath.Join(t.TempDir(), "site.ZIP")
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("index.html")
	_, _ = io.WriteString(w, "hello")
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(zipPath, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	stdout, stderr, code := runDeployForTest(t, "--quiet", "--tenant=acme", zipPath)
	if code != 0 {
		t.Fatalf("exit %d\nstderr: %s", code, stderr)
	}
	if stdout != "http://acme.localhost:8081/\n" || stderr != "" {
		t.Errorf("--quiet: stdout %q, stderr %q; want the URL and nothing else", stdout, stderr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !bytes.Equal(f.zipBytes, buf.Bytes()) {
		t.Error("the .zip was not sent as is")
	}
}

func TestRunDeployBuildFails(t *testing.T) {
	f, ts := newFakeAPI(t, []string{
		sse(8, "build:started", `{"buildId":"b-1","tenantId":"acme","attempt":1}`),
		sse(9, "build:step", `{"buildId":"b-1","step":"extract","status":"finished","attempt":1,"durationMs":3,"detail":"2 files"}`),
		sse(10, "build:failed", `{"buildId":"b-1","step":"detect","error":"package.json has a build script: builds need a runner","retryable":false}`),
	})
	stdout, stderr, code := runDeployForTest(t, "--tenant", "acme", "--server", ts.URL, "--token", f.token, writeProject(t))
	if code != 1 {
		t.Fatalf("exit %d, want 1\nstderr: %s", code, stderr)
	}
	if stdout != "" {
		t.Errorf("stdout = %q, want nothing", stdout)
	}
	want := "deploy failed at step detect: package.json has a build script: builds need a runner\n"
	if !strings.HasSuffix(stderr, want) {
		t.Errorf("stderr does not end with %q:\n%s", want, stderr)
	}
}

func TestRunDeployRetriesUploadWithSameKey(t *testing.T) {
	f, ts := newFakeAPI(t, successFrames())
	f.failFor = 1
	stdout, stderr, code := runDeployForTest(t, writeProject(t), "--tenant", "acme", "--server", ts.URL, "--token", f.token)
	if code != 0 {
		t.Fatalf("exit %d\nstderr: %s", code, stderr)
	}
	if !strings.HasSuffix(stdout, "http://acme.localhost:8081/\n") {
		t.Errorf("stdout = %q", stdout)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.keys) != 2 || f.keys[0] != f.keys[1] || f.keys[0] == "" {
		t.Errorf("Idempotency-Keys = %q, want the same key twice", f.keys)
	}
	if !strings.Contains(stderr, "503 unavailable: try again; retrying in 1s") {
		t.Errorf("stderr does not report the retry:\n%s", stderr)
	}
}

func TestRunDeployUploadRejected(t *testing.T) {
	f, ts := newFakeAPI(t, successFrames())
	stdout, stderr, code := runDeployForTest(t, writeProject(t), "--tenant", "acme", "--server", ts.URL, "--token", "wrong-token")
	if code != 1 || stdout != "" {
		t.Fatalf("exit %d, stdout %q; want 1 and nothing", code, stdout)
	}
	if !strings.Contains(stderr, "401 unauthorized: bad token") || strings.Contains(stderr, "wrong-token") {
		t.Errorf("stderr:\n%s", stderr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.keys) != 1 || f.zipBytes != nil {
		t.Errorf("uploads seen: %d, zip stored: %v; want 1 refused", len(f.keys), f.zipBytes != nil)
	}
}

func TestRunDeployUsage(t *testing.T) {
	t.Setenv("ZIPSHIP_TOKEN", "")
	t.Setenv("ZIPSHIP_SERVER", "")
	dir := writeProject(t)
	notZip := filepath.Join(t.TempDir(), "site.tar")
	if err := os.WriteFile(notZip, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no args", nil, 2, "PATH is required"},
		{"no tenant", []string{dir, "--token", "t"}, 2, "--tenant is required"},
		{"two paths", []string{dir, dir, "--tenant", "acme", "--token", "t"}, 2, "unexpected argument"},
		{"unknown flag", []string{dir, "--tenant", "acme", "--nope"}, 2, "flag provided but not defined"},
		{"no token", []string{dir, "--tenant", "acme"}, 2, "no token"},
		{"bad server", []string{dir, "--tenant", "acme", "--token", "t", "--server", "ftp://x"}, 2, "not an http(s) URL"},
		{"bad config json", []string{dir, "--tenant", "acme", "--token", "t", "--config", "{nope"}, 2, "--config: not valid JSON"},
		{"missing config file", []string{dir, "--tenant", "acme", "--token", "t", "--config", "/no/such/file.json"}, 2, "--config: open /no/such/file.json"},
		{"not a zip", []string{notZip, "--tenant", "acme", "--token", "t"}, 2, "must be a directory or a .zip file"},
		{"missing path", []string{filepath.Join(dir, "nope"), "--tenant", "acme", "--token", "t"}, 1, "no such file"},
		{"help", []string{"-h"}, 0, "usage: zipship deploy PATH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runDeployForTest(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstderr: %s", code, tc.code, stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q", stdout)
			}
		})
	}
}

func TestHelpDoesNotPrintToken(t *testing.T) {
	t.Setenv("ZIPSHIP_TOKEN", "env.secret.token")
	_, stderr, _ := runDeployForTest(t, "-h")
	if strings.Contains(stderr, "env.secret.token") {
		t.Errorf("-h printed the token:\n%s", stderr)
	}
}

func TestFormatters(t *testing.T) {
	for d, want := range map[time.Duration]string{
		12 * time.Millisecond:   "12ms",
		2345 * time.Millisecond: "2.3s",
		125 * time.Second:       "2m05s",
	} {
		if got := formatElapsed(d); got != want {
			t.Errorf("formatElapsed(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int64]string{512: "0.5 KB", 3 << 20: "3.0 MB"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestWithRootPath(t *testing.T) {
	for in, want := range map[string]string{
		"http://acme.localhost:8081":     "http://acme.localhost:8081/",
		"https://acme.example.com/":      "https://acme.example.com/",
		"https://example.com/sites/acme": "https://example.com/sites/acme",
		"https://acme.example.com?x=1":   "https://acme.example.com?x=1",
		"not a url":                      "not a url",
	} {
		if got := withRootPath(in); got != want {
			t.Errorf("withRootPath(%q) = %q, want %q", in, got, want)
		}
	}
}
