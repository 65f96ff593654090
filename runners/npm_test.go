package runners_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/buildlog"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/infra/eventstore"
	"github.com/zipship/zipship/runners"
	"github.com/zipship/zipship/runners/sandbox"
	"github.com/zipship/zipship/runners/sandbox/sandboxtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	sandboxtest.Stop()
	os.Exit(code)
}

// npmEnv is an env whose runner builds npm projects in a real containerd
// sandbox, with the real npm registry behind the egress proxy, and keeps
// the build logs in the env's blob store.
type npmEnv struct {
	*env
	sb    *sandbox.Sandbox
	netns string
	logs  *buildlog.Broker
}

func newNPMEnv(t *testing.T, opts ...func(*env, *runners.Config)) *npmEnv {
	t.Helper()
	addr := sandboxtest.Start(t)
	sb, err := sandbox.New(context.Background(), sandbox.Config{Address: addr, RootFS: sandboxtest.RootFS(t), Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	n := &npmEnv{sb: sb, netns: t.TempDir()}
	base := func(e *env, c *runners.Config) {
		c.Sandbox = sb
		c.NetNSDir = n.netns
		n.logs = buildlog.NewBroker(e.blobs, quietLog())
		c.Logs = n.logs
	}
	n.env = newEnvWith(t, append([]func(*env, *runners.Config){base}, opts...)...)
	return n
}

// pkgJSON is a package.json with the given build script and dependencies.
func pkgJSON(build string, deps map[string]string) string {
	p := map[string]any{"name": "zipship-test-app", "version": "1.0.0", "private": true}
	if build != "" {
		p["scripts"] = map[string]string{"build": build}
	}
	if deps != nil {
		p["dependencies"] = deps
	}
	b, _ := json.MarshalIndent(p, "", "  ")
	return string(b)
}

// requestNPM requests a build of files with config; env, when not nil, is
// stored as the build's environment variable values.
func (e *npmEnv) requestNPM(tenant string, files map[string]string, config domain.BuildConfig, env map[string]string) string {
	e.t.Helper()
	return e.request(tenant, time.Now(), makeZip(e.t, files), func(r *domain.BuildRequested) {
		r.Config = config
		if env == nil {
			return
		}
		data, _ := json.Marshal(env)
		r.EnvKey = blob.EnvKey(r.TenantID, r.BuildID)
		for name := range env {
			r.EnvNames = append(r.EnvNames, name)
		}
		slices.Sort(r.EnvNames)
		if _, err := e.blobs.Put(context.Background(), r.EnvKey, bytes.NewReader(data)); err != nil {
			e.t.Fatal(err)
		}
	})
}

// handle runs the build to its end.
func (e *npmEnv) handle(id string) []domain.Event {
	e.t.Helper()
	began := time.Now()
	if err := e.runner.Handle(context.Background(), app.Meta{}, id); err != nil {
		e.t.Fatalf("Handle: %v", err)
	}
	evs := e.stream(domain.BuildStream(id))
	e.t.Logf("build took %s: %q", time.Since(began).Round(time.Millisecond), signature(evs))
	return evs
}

// storedLog returns the build's stored log.
func (e *npmEnv) storedLog(tenant, id string) string {
	e.t.Helper()
	obj, err := e.blobs.Open(context.Background(), blob.LogKey(tenant, id))
	if err != nil {
		e.t.Fatalf("build log: %v", err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

// leftovers fails the test if a container of build id or a pinned network
// namespace is left behind.
func (e *npmEnv) leftovers(id string) {
	e.t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), e.sb.Namespace())
	cs, err := e.sb.Client().Containers(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, c := range cs {
		labels, err := c.Labels(ctx)
		if err == nil && strings.HasPrefix(labels["io.zipship.job"], id) {
			e.t.Errorf("container %s of the build left behind (%s)", c.ID(), labels["io.zipship.job"])
		}
	}
	ents, err := os.ReadDir(e.netns)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, d := range ents {
		e.t.Errorf("network namespace pin left behind: %s", d.Name())
	}
	e.workspaceEmpty()
}

// failedOnce checks that the build failed at step with a user error in
// its only attempt, and returns the failure.
func failedOnce(t *testing.T, e *npmEnv, evs []domain.Event, step domain.Step) domain.BuildFailed {
	t.Helper()
	f, ok := evs[len(evs)-1].(domain.BuildFailed)
	if !ok {
		t.Fatalf("last event is %s, want BuildFailed", evs[len(evs)-1].EventType())
	}
	if f.Step != step || f.Retryable || f.Attempt != 1 {
		t.Errorf("BuildFailed step %s retryable %v attempt %d, want %s, false, 1; error:\n%s", f.Step, f.Retryable, f.Attempt, step, f.Error)
	}
	if n := len(ofType[domain.BuildStarted](evs)); n != 1 {
		t.Errorf("%d attempts, want 1", n)
	}
	if n := len(ofType[domain.BuildAttemptFailed](evs)); n != 0 {
		t.Errorf("%d retried attempts, want none", n)
	}
	if len(e.retries) != 0 {
		t.Errorf("a user error was retried: %v", e.retries)
	}
	t.Logf("failed at %s: %s", f.Step, f.Error)
	return f
}

// npmSteps is the signature of a successful npm build's attempt.
func npmSteps() []string {
	return []string{"BuildRequested", "BuildStarted#1",
		"validate>", "validate<", "workspace>", "workspace<", "download>", "download<",
		"extract>", "extract<", "discover>", "discover<", "detect>", "detect<",
		"install>", "install<", "configure>", "configure<", "build>", "build<", "export>", "export<",
		"upload>", "upload<", "BuildPublished", "activate>", "activate<", "invalidate>", "invalidate<",
		"BuildSucceeded"}
}

// A plain npm project (no framework, no dependencies) whose build script
// writes the site with node into a custom outputDir.
func TestNPMBuildWithCustomOutputDir(t *testing.T) {
	t.Parallel()
	e := newNPMEnv(t)
	files := map[string]string{
		"package.json": pkgJSON("node build.js", nil),
		"build.js": `const fs = require('fs')
fs.mkdirSync('site/assets', { recursive: true })
fs.writeFileSync('site/index.html', '<h1>built by ' + process.version + ' as ' + process.getuid() + ' env ' + process.env.NODE_ENV + '</h1>')
fs.writeFileSync('site/assets/app.js', 'console.log("app")')
fs.writeFileSync('site/.env.local', 'NOT=published')
console.log('wrote the site')
`,
		"src/ignored.txt": "source, not output",
	}
	id := e.requestNPM("acme", files, domain.BuildConfig{OutputDir: "site"}, nil)
	evs := e.handle(id)
	if got := signature(evs); !slices.Equal(got, npmSteps()) {
		f, _ := evs[len(evs)-1].(domain.BuildFailed)
		t.Fatalf("build stream:\n got %q\nwant %q\nerror: %s", got, npmSteps(), f.Error)
	}
	for step, want := range map[domain.Step]string{
		domain.StepDetect:  "no known framework, npm install (no lockfile), build: npm run build, output: site/",
		domain.StepInstall: "npm install --no-audit --no-fund --loglevel=error --include=dev: exit 0",
		domain.StepBuild:   "npm run build: exit 0",
		domain.StepExport:  "site/: 2 files; 1 never published",
	} {
		if d, _ := stepDetail(evs, step); !strings.Contains(d, want) {
			t.Errorf("%s detail = %q, want it to contain %q", step, d, want)
		}
	}
	if d, _ := stepDetail(evs, domain.StepBuild); !strings.Contains(d, "no network") {
		t.Errorf("build detail = %q: the build step must have no network", d)
	}

	code, body := e.get(liveHost("acme"), "/")
	if code != http.StatusOK || !strings.Contains(body, "built by v") || !strings.Contains(body, " as 10000 env production") {
		t.Errorf("live site: %d %q", code, body)
	}
	if code, body := e.get(liveHost("acme"), "/assets/app.js"); code != http.StatusOK || !strings.Contains(body, `console.log("app")`) {
		t.Errorf("/assets/app.js: %d %q", code, body)
	}
	for _, path := range []string{"/.env.local", "/build.js", "/package.json", "/src/ignored.txt"} {
		if code, _ := e.get(liveHost("acme"), path); code != http.StatusNotFound {
			t.Errorf("%s published: %d", path, code)
		}
	}

	log := e.storedLog("acme", id)
	t.Logf("stored log:\n%s", log)
	for _, want := range []string{"==> install", "$ npm install", "==> build", "$ npm run build", "stdout wrote the site", "network: none", "build succeeded"} {
		if !strings.Contains(log, want) {
			t.Errorf("stored log lacks %q:\n%s", want, log)
		}
	}
	e.leftovers(id)
}

func TestNPMProjectWithoutBuildScriptFailsAtDetect(t *testing.T) {
	t.Parallel()
	e := newNPMEnv(t)
	id := e.requestNPM("acme", map[string]string{
		"package.json": pkgJSON("", nil),
		"index.js":     "console.log(1)",
	}, domain.BuildConfig{}, nil)
	evs := e.handle(id)
	f := failedOnce(t, e, evs, domain.StepDetect)
	if !strings.Contains(f.Error, `package.json has no "build" script`) {
		t.Errorf("error = %q", f.Error)
	}
	e.leftovers(id)
}

func TestNPMBuildExitingNonZeroFailsWithItsLastLines(t *testing.T) {
	t.Parallel()
	e := newNPMEnv(t)
	script := `for (let i = 1; i <= 80; i++) console.log('line ' + i); console.error('boom: the build broke'); process.exit(3)`
	id := e.requestNPM("acme", map[string]string{
		"package.json": pkgJSON("node fail.js", nil),
		"fail.js":      script,
	}, domain.BuildConfig{}, nil)
	evs := e.handle(id)
	f := failedOnce(t, e, evs, domain.StepBuild)
	if !strings.HasPrefix(f.Error, "build failed (exit 3):\n") || !strings.Contains(f.Error, "boom: the build broke") ||
		!strings.Contains(f.Error, "line 80") {
		t.Errorf("error = %q", f.Error)
	}
	// Only the last 50 lines.
	if strings.Contains(f.Error, "line 20\n") || strings.Count(f.Error, "\n") > runners.TailLines+5 {
		t.Errorf("error quotes more than the last %d lines:\n%s", runners.TailLines, f.Error)
	}
	if site := e.stream(domain.SiteStream("acme")); len(site) != 0 {
		t.Errorf("a failed build was activated: %q", signature(site))
	}
	if log := e.storedLog("acme", id); !strings.Contains(log, "stderr boom: the build broke") || !strings.Contains(log, "line 1\n") {
		t.Errorf("stored log:\n%s", log)
	}
	e.leftovers(id)
}

func TestNPMMissingOutputFailsAtExport(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		config domain.BuildConfig
		want   string
	}{
		"configured": {domain.BuildConfig{OutputDir: "dist"}, "in app/: dist/: buildConfig.outputDir names a directory the build did not produce"},
		"detected":   {domain.BuildConfig{}, "in app/: build finished but produced none of out/, dist/, build/, public/"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newNPMEnv(t)
			id := e.requestNPM("acme", map[string]string{
				"app/package.json": pkgJSON("node -e \"console.log('nothing written')\"", nil),
			}, c.config, nil)
			evs := e.handle(id)
			f := failedOnce(t, e, evs, domain.StepExport)
			if !strings.Contains(f.Error, c.want) {
				t.Errorf("error = %q, want %q", f.Error, c.want)
			}
			if d, _ := stepDetail(evs, domain.StepDiscover); d != "package.json at app/package.json" {
				t.Errorf("discover detail = %q", d)
			}
			e.leftovers(id)
		})
	}
}

func TestNPMMissingDependencyFailsAtInstall(t *testing.T) {
	t.Parallel()
	e := newNPMEnv(t)
	id := e.requestNPM("acme", map[string]string{
		"package.json": pkgJSON("node -e 0", map[string]string{"zipship-no-such-package-xyz": "1.0.0"}),
	}, domain.BuildConfig{}, nil)
	evs := e.handle(id)
	f := failedOnce(t, e, evs, domain.StepInstall)
	if !strings.HasPrefix(f.Error, "install failed (exit 1)") || !strings.Contains(f.Error, "E404") ||
		!strings.Contains(f.Error, "zipship-no-such-package-xyz") {
		t.Errorf("error = %q", f.Error)
	}
	e.leftovers(id)
}

func TestNPMInstallCannotReachOtherHosts(t *testing.T) {
	t.Parallel()
	e := newNPMEnv(t)
	id := e.requestNPM("acme", map[string]string{
		"package.json": pkgJSON("node -e 0", map[string]string{"left-pad": "https://example.org/left-pad-1.3.0.tgz"}),
	}, domain.BuildConfig{}, nil)
	evs := e.handle(id)
	f := failedOnce(t, e, evs, domain.StepInstall)
	if !strings.HasPrefix(f.Error, "install failed (exit ") ||
		!strings.Contains(f.Error, "the egress proxy refused example.org:443: the install step may only reach registry.npmjs.org:443") ||
		!strings.Contains(f.Error, "--install-allow") {
		t.Errorf("error = %q", f.Error)
	}
	e.leftovers(id)
}

// The build's environment variables reach the build (process environment
// and, for a name the project's .env files define, .env.production.local)
// but their values never reach an event or the stored log.
func TestNPMEnvironmentVariablesNeverLeak(t *testing.T) {
	t.Parallel()
	e := newNPMEnv(t)
	const secret, fileSecret = "s3cr3t-greeting-value-4711", "f1le-channel-value-0815"
	files := map[string]string{
		"package.json":    pkgJSON("node build.js", nil),
		".env.production": "FROM_FILE=the-user-default\n",
		"build.js": `const fs = require('fs')
require('child_process').execSync('cat .env.production.local', { stdio: 'inherit' })
const fromFile = fs.readFileSync('.env.production.local', 'utf8').match(/^FROM_FILE='(.*)'$/m)[1]
console.log('the greeting is ' + process.env.GREETING + ' and ' + fromFile)
fs.mkdirSync('out', { recursive: true })
fs.writeFileSync('out/index.html', '<p>' + process.env.GREETING + '|' + fromFile + '|' + process.env.NEXT_PUBLIC_TENANT_ID + '|' + process.env.NEXT_PUBLIC_BUILD_ID + '|' + process.env.PATH + '</p>')
`,
	}
	env := map[string]string{"GREETING": secret, "FROM_FILE": fileSecret, "PATH": "/evil"}
	id := e.requestNPM("acme", files, domain.BuildConfig{}, env)
	evs := e.handle(id)
	if _, ok := evs[len(evs)-1].(domain.BuildSucceeded); !ok {
		f, _ := evs[len(evs)-1].(domain.BuildFailed)
		t.Fatalf("build stream %q, error %s", signature(evs), f.Error)
	}
	_, body := e.get(liveHost("acme"), "/")
	if want := "<p>" + secret + "|" + fileSecret + "|acme|" + id + "|"; !strings.HasPrefix(body, want) ||
		strings.Contains(body, "/evil") || !strings.Contains(body, ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:") {
		t.Errorf("page = %q, want it to start with %q and the runner's PATH", body, want)
	}
	d, _ := stepDetail(evs, domain.StepConfigure)
	for _, want := range []string{"variables: FROM_FILE, GREETING", "FROM_FILE in .env.production.local", "ignored (set by the runner): PATH"} {
		if !strings.Contains(d, want) {
			t.Errorf("configure detail = %q, want %q", d, want)
		}
	}

	raw, err := e.events.ReadAll(context.Background(), 0, eventstore.ReadOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range raw {
		for _, v := range []string{secret, fileSecret} {
			if strings.Contains(string(r.Data), v) {
				t.Errorf("event %s holds a variable's value: %s", r.Type, r.Data)
			}
		}
	}
	log := e.storedLog("acme", id)
	if strings.Contains(log, secret) || strings.Contains(log, fileSecret) {
		t.Errorf("the stored log holds a value:\n%s", log)
	}
	if !strings.Contains(log, "the greeting is [redacted] and [redacted]") || !strings.Contains(log, "FROM_FILE='[redacted]'") {
		t.Errorf("the stored log does not show the redacted lines:\n%s", log)
	}
	e.leftovers(id)
}

// A build whose script fails after printing the secret: the error quoting
// its last lines is redacted too.
func TestNPMFailureMessageIsRedacted(t *testing.T) {
	t.Parallel()
	e := newNPMEnv(t)
	const secret = "tok-9f8e7d6c5b4a"
	id := e.requestNPM("acme", map[string]string{
		"package.json": pkgJSON(`node -e "console.error('bad token ' + process.env.API_TOKEN); process.exit(1)"`, nil),
	}, domain.BuildConfig{}, map[string]string{"API_TOKEN": secret})
	evs := e.handle(id)
	f := failedOnce(t, e, evs, domain.StepBuild)
	if strings.Contains(f.Error, secret) || !strings.Contains(f.Error, "bad token [redacted]") {
		t.Errorf("error = %q", f.Error)
	}
	e.leftovers(id)
}

// The build step reaches nothing: not the host's loopback, not a listener
// on all of the host's addresses, not DNS.
func TestNPMBuildCannotReachHostListeners(t *testing.T) {
	t.Parallel()
	e := newNPMEnv(t)
	var accepted atomic.Int64
	listen := func(addr string) int { return hostListener(t, addr, []byte("hello from the host\n"), &accepted) }
	loopPort, anyPort := listen("127.0.0.1:0"), listen("0.0.0.0:0")
	type target struct {
		Name string `json:"name"`
		Host string `json:"host"`
		Port int    `json:"port"`
	}
	targets := []target{{"loopback", "127.0.0.1", loopPort}, {"any-on-loopback", "127.0.0.1", anyPort}, {"any-as-0.0.0.0", "0.0.0.0", anyPort}}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			targets = append(targets, target{"any-on-" + ipn.IP.String(), ipn.IP.String(), anyPort})
		}
	}
	// Prove the listeners answer from the host itself.
	for _, tg := range targets {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(tg.Host, fmt.Sprint(tg.Port)), 2*time.Second)
		if err != nil {
			t.Fatalf("the host itself cannot reach %s: %v", tg.Name, err)
		}
		c.Close()
	}
	for accepted.Load() < int64(len(targets)) {
		time.Sleep(5 * time.Millisecond)
	}
	accepted.Store(0)

	tj, _ := json.Marshal(targets)
	files := map[string]string{
		"package.json": pkgJSON("node probe.js", nil),
		"probe.js": `const net = require('net'), fs = require('fs'), dns = require('dns')
const targets = ` + string(tj) + `
const results = {}
const probe = (t) => new Promise((done) => {
  const s = net.connect({ host: t.host, port: t.port, timeout: 3000 })
  s.on('connect', () => { results[t.name] = 'CONNECTED'; s.destroy(); done() })
  s.on('timeout', () => { results[t.name] = 'timeout'; s.destroy(); done() })
  s.on('error', (e) => { results[t.name] = 'error ' + e.code; done() })
})
;(async () => {
  for (const t of targets) await probe(t)
  await new Promise((done) => dns.lookup('registry.npmjs.org', (e, a) => { results.dns = e ? 'error ' + e.code : 'RESOLVED ' + a; done() }))
  fs.mkdirSync('out', { recursive: true })
  fs.writeFileSync('out/index.html', JSON.stringify(results))
  console.log(JSON.stringify(results))
})()
`,
	}
	id := e.requestNPM("acme", files, domain.BuildConfig{}, nil)
	evs := e.handle(id)
	if _, ok := evs[len(evs)-1].(domain.BuildSucceeded); !ok {
		f, _ := evs[len(evs)-1].(domain.BuildFailed)
		t.Fatalf("build stream %q, error %s", signature(evs), f.Error)
	}
	_, body := e.get(liveHost("acme"), "/")
	var results map[string]string
	if err := json.Unmarshal([]byte(body), &results); err != nil {
		t.Fatalf("page %q: %v", body, err)
	}
	t.Logf("from inside the build: %v", results)
	for _, tg := range append(targets, target{Name: "dns"}) {
		r, ok := results[tg.Name]
		if !ok || !(strings.HasPrefix(r, "error ") || r == "timeout") {
			t.Errorf("%s: %q, want an error", tg.Name, r)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the host's listeners accepted %d connections from the build", n)
	}
	e.leftovers(id)
}

// Cancelling a build kills its running command at once: the build fails
// as "cancelled" at the step that ran, and is not retried.
func TestNPMCancelKillsTheBuild(t *testing.T) {
	t.Parallel()
	e := newNPMEnv(t)
	id := e.requestNPM("acme", map[string]string{
		"package.json": pkgJSON("echo sleeping && sleep 30 && mkdir out && echo late > out/index.html", nil),
	}, domain.BuildConfig{}, nil)
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- e.runner.Handle(context.Background(), app.Meta{}, id) }()
	// Wait until the build command runs: its first line is in the live log.
	deadline := time.Now().Add(60 * time.Second)
	for running := false; !running; {
		lines, _ := e.logs.Lines(id)
		for _, l := range lines {
			running = running || (l.Stream == buildlog.Stdout && l.Text == "sleeping")
		}
		evs := e.stream(domain.BuildStream(id))
		if _, ok := evs[len(evs)-1].(domain.BuildFailed); ok || time.Now().After(deadline) {
			t.Fatalf("the build command did not start: %q", signature(evs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancelAt := time.Now()
	if _, err := e.app.CancelBuild(context.Background(), app.Meta{}, "alice", id); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Handle: %v", err)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("Handle still running 25 s after the cancel: the sleep 30 was not killed")
	}
	t.Logf("cancelled after %s; Handle returned %s after the cancel", cancelAt.Sub(began).Round(time.Millisecond), time.Since(cancelAt).Round(time.Millisecond))
	evs := e.stream(domain.BuildStream(id))
	f := failedOnce(t, e, evs, domain.StepBuild)
	if f.Error != domain.CancelledError {
		t.Errorf("error = %q, want %q", f.Error, domain.CancelledError)
	}
	if !slices.Contains(signature(evs), "BuildCancelRequested") {
		t.Errorf("build stream %q", signature(evs))
	}
	if log := e.storedLog("acme", id); !strings.Contains(log, "sleeping") || !strings.Contains(log, "cancelled") {
		t.Errorf("stored log:\n%s", log)
	}
	e.leftovers(id)

	// A redelivery changes nothing.
	head, _ := e.events.Head(context.Background())
	if err := e.runner.Handle(context.Background(), app.Meta{}, id); err != nil {
		t.Fatal(err)
	}
	if h, _ := e.events.Head(context.Background()); h != head {
		t.Errorf("redelivery appended %d events", h-head)
	}
}

// A build past its time limit is killed and fails naming the limit; one
// past the memory limit fails naming that. Neither is retried.
func TestNPMLimitsFailTheBuild(t *testing.T) {
	t.Parallel()
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		e := newNPMEnv(t, func(_ *env, c *runners.Config) { c.BuildTimeout = 2 * time.Second })
		id := e.requestNPM("acme", map[string]string{"package.json": pkgJSON("sleep 30", nil)}, domain.BuildConfig{}, nil)
		evs := e.handle(id)
		f := failedOnce(t, e, evs, domain.StepBuild)
		if !strings.HasPrefix(f.Error, "build timed out: killed after 2s, the build step's time limit") {
			t.Errorf("error = %q", f.Error)
		}
		e.leftovers(id)
	})
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		const limit = 256 << 20
		e := newNPMEnv(t, func(_ *env, c *runners.Config) {
			sb, err := sandbox.New(context.Background(), sandbox.Config{Address: sandboxtest.Start(t), RootFS: sandboxtest.RootFS(t),
				MemoryBytes: limit, Log: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sb.Close() })
			c.Sandbox, c.MemoryBytes = sb, limit
		})
		id := e.requestNPM("acme", map[string]string{
			"package.json": pkgJSON("node hog.js", nil),
			"hog.js":       "const keep = []; for (;;) keep.push(Buffer.alloc(8 << 20, 1))",
		}, domain.BuildConfig{}, nil)
		evs := e.handle(id)
		f := failedOnce(t, e, evs, domain.StepBuild)
		if !strings.HasPrefix(f.Error, "build ran out of memory: killed at the sandbox's memory limit of 256 MiB") {
			t.Errorf("error = %q", f.Error)
		}
		e.leftovers(id)
	})
}

// A build that tries to download something, with no network, is told
// how to allow the hosts it needs.
func TestNPMBuildWithoutNetworkSaysHowToAllowHosts(t *testing.T) {
	t.Parallel()
	e := newNPMEnv(t)
	id := e.requestNPM("acme", map[string]string{
		"package.json": pkgJSON("node fetch.js", nil),
		"fetch.js":     "fetch('https://fonts.googleapis.com/css2?family=Inter').then((r) => console.log(r.status), (e) => { console.error(e.message, e.cause && e.cause.code); process.exit(1) })",
	}, domain.BuildConfig{}, nil)
	evs := e.handle(id)
	f := failedOnce(t, e, evs, domain.StepBuild)
	if !strings.Contains(f.Error, "the build step has no network") || !strings.Contains(f.Error, "buildConfig.egressAllow") {
		t.Errorf("error = %q", f.Error)
	}
	e.leftovers(id)
}

// A build whose buildConfig.egressAllow names hosts gets the egress proxy
// (allowing those and the operator's BuildAllow); any other host is
// refused and named in the error with how to allow it.
func TestNPMBuildEgressAllowList(t *testing.T) {
	t.Parallel()
	e := newNPMEnv(t, func(_ *env, c *runners.Config) { c.BuildAllow = []string{"fonts.gstatic.com"} })
	id := e.requestNPM("acme", map[string]string{
		"package.json": pkgJSON("echo proxy=$https_proxy && curl -sS -o /dev/null https://not-allowed.example.net/x", nil),
	}, domain.BuildConfig{EgressAllow: []string{"fonts.googleapis.com"}}, nil)
	evs := e.handle(id)
	f := failedOnce(t, e, evs, domain.StepBuild)
	if !strings.Contains(f.Error, "the egress proxy refused not-allowed.example.net:443: the build step may not reach it: add it to buildConfig.egressAllow") ||
		!strings.Contains(f.Error, "proxy=http://127.0.0.1:3128") || strings.Contains(f.Error, "registry.npmjs.org") {
		t.Errorf("error = %q", f.Error)
	}
	if log := e.storedLog("acme", id); !strings.Contains(log, "network: only fonts.gstatic.com:443, fonts.googleapis.com:443, through the egress proxy") {
		t.Errorf("stored log:\n%s", log)
	}
	e.leftovers(id)
}
