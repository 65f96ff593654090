package runners_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/archive"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/runners"
	"github.com/zipship/zipship/runners/sandbox"
	"github.com/zipship/zipship/runners/sandbox/sandboxtest"
)

// Containment: a hostile build ends failed (or with its attack contained)
// for the right reason, while the host and a build of another tenant
// running at the same time on the same sandbox are unharmed.

// The tenants of the two builds of a containment test.
const (
	attacker  = "mallory"
	neighbour = "acme"
)

// containEnv is an npmEnv whose sandbox has the test's limits. Its runner
// (e.runner, with the test's configuration) builds the attacker's project;
// a second runner on the same sandbox, stores, log broker, workspace and
// network namespace directories, with the default time limits, builds the
// neighbour's project at the same time.
type containEnv struct {
	*npmEnv
	sb        *sandbox.Sandbox
	neighbour *runners.Runner
	memory    int64
}

// newContainEnv makes a containEnv whose sandbox has limits' MemoryBytes
// and Pids (zero: the defaults); opts change the attacker's runner.
func newContainEnv(t *testing.T, limits sandbox.Config, opts ...func(*env, *runners.Config)) *containEnv {
	t.Helper()
	limits.Address, limits.RootFS, limits.Log = sandboxtest.Start(t), sandboxtest.RootFS(t), quietLog()
	sb, err := sandbox.New(context.Background(), limits)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	c := &containEnv{sb: sb, memory: limits.MemoryBytes}
	useSandbox := func(_ *env, cfg *runners.Config) { cfg.Sandbox, cfg.MemoryBytes = sb, limits.MemoryBytes }
	c.npmEnv = newNPMEnv(t, append([]func(*env, *runners.Config){useSandbox}, opts...)...)
	e := c.npmEnv
	c.neighbour = runners.New(e.app, runners.Config{
		Name: "neighbour-runner", WorkDir: e.work, ZipLimits: archive.DefaultLimits(), Refresher: e.ref, Log: quietLog(),
		Sandbox: sb, MemoryBytes: limits.MemoryBytes, NetNSDir: e.netns, Logs: e.logs,
		RetryDelay: func(attempt int) time.Duration {
			e.mu.Lock()
			e.retries = append(e.retries, attempt)
			e.mu.Unlock()
			return time.Millisecond
		},
	})
	return c
}

// neighbourFiles is the neighbour's project: an npm build that starts a
// child process, reads a file and writes out/index.html saying so.
func neighbourFiles(marker string) map[string]string {
	return map[string]string{
		"package.json": pkgJSON("node build.js", nil),
		"build.js": `const fs = require('fs'), cp = require('child_process')
const child = cp.execFileSync('sh', ['-c', 'echo forked as $(id -u)'], { encoding: 'utf8' }).trim()
const read = fs.readFileSync('package.json', 'utf8').length
fs.mkdirSync('out', { recursive: true })
fs.writeFileSync('out/index.html', '<p>` + marker + ` ' + child + ', read ' + read + ' bytes</p>')
console.log('neighbour done: ' + child)
`,
	}
}

// hostProbe forks a process and reads a file on the host, over and over
// until stop is called, and returns the first failure and how many rounds
// ran (at least one, after the builds).
type hostProbe struct {
	stop chan struct{}
	done chan struct{}
	file string
	mu   sync.Mutex
	err  error
	n    int
}

func startHostProbe(t *testing.T) *hostProbe {
	t.Helper()
	file := filepath.Join(t.TempDir(), "host-file.txt")
	if err := os.WriteFile(file, []byte("the host's own file"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &hostProbe{stop: make(chan struct{}), done: make(chan struct{}), file: file}
	go func() {
		defer close(p.done)
		for {
			p.round()
			select {
			case <-p.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return p
}

// round forks and reads once.
func (p *hostProbe) round() {
	err := exec.Command("sh", "-c", "echo forked").Run()
	if err == nil {
		var b []byte
		b, err = os.ReadFile(p.file)
		if err == nil && string(b) != "the host's own file" {
			err = fmt.Errorf("read %q", b)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	if err != nil && p.err == nil {
		p.err = err
	}
}

// check stops the probe, runs a last round and fails the test if the host
// could not fork or read at some point.
func (p *hostProbe) check(t *testing.T) {
	t.Helper()
	close(p.stop)
	<-p.done
	p.round()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		t.Errorf("the host could not fork or read a file during the builds: %v", p.err)
	}
	t.Logf("the host forked and read a file %d times during and after the builds", p.n)
}

// race builds the attacker's project (files, config, env) on c.runner and
// the neighbour's on c.neighbour, both started at once, while the
// host is probed; it checks that the neighbour's build succeeded and is
// served, that the host was unharmed and that neither build left anything
// behind, and returns the attacker's build id and stream.
func (c *containEnv) race(files map[string]string, config domain.BuildConfig, env map[string]string) (string, []domain.Event) {
	t := c.t
	t.Helper()
	marker := fmt.Sprintf("neighbour-%d", time.Now().UnixNano())
	attackID := c.requestNPM(attacker, files, config, env)
	neighbourID := c.requestNPM(neighbour, neighbourFiles(marker), domain.BuildConfig{}, nil)

	probe := startHostProbe(t)
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	took := make([]time.Duration, 2)
	for i, b := range []struct {
		r  *runners.Runner
		id string
	}{{c.runner, attackID}, {c.neighbour, neighbourID}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			began := time.Now()
			errs[i] = b.r.Handle(context.Background(), app.Meta{}, b.id)
			took[i] = time.Since(began)
		}()
	}
	close(start)
	wg.Wait()
	probe.check(t)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Handle of the %s build: %v", []string{"attacker's", "neighbour's"}[i], err)
		}
	}

	evs := c.stream(domain.BuildStream(attackID))
	t.Logf("attacker's build took %s: %q", took[0].Round(time.Millisecond), signature(evs))
	nevs := c.stream(domain.BuildStream(neighbourID))
	t.Logf("neighbour's build took %s", took[1].Round(time.Millisecond))
	if got := signature(nevs); !slices.Equal(got, npmSteps()) {
		f, _ := nevs[len(nevs)-1].(domain.BuildFailed)
		t.Errorf("the neighbour's build was harmed:\n got %q\nwant %q\nerror: %s\nlog:\n%s", got, npmSteps(), f.Error,
			c.storedLog(neighbour, neighbourID))
	} else if code, body := c.get(liveHost(neighbour), "/"); code != http.StatusOK ||
		!strings.Contains(body, marker+" forked as 10000, read ") {
		t.Errorf("the neighbour's site: %d %q", code, body)
	}
	c.leftovers(attackID)
	c.leftovers(neighbourID)
	return attackID, evs
}

// cgroupFile is JavaScript returning the content of the job's cgroup file
// (cgroup v2 /sys/fs/cgroup/<name>, v1 /sys/fs/cgroup/<controller>/<v1>).
const cgroupFileJS = `const cgroupFile = (v2, v1) => {
  for (const f of ['/sys/fs/cgroup/' + v2, '/sys/fs/cgroup/' + v1]) {
    try { return require('fs').readFileSync(f, 'utf8').trim() } catch (e) {}
  }
  return 'unknown'
}
`

// A fork bomb hits the sandbox's pids limit: the build's own process can
// no longer fork (EAGAIN, with pids.max the configured limit), gives up and
// the build fails; the bomb goes with the task (no container is left), and
// the host and the neighbour (same limit, its own cgroup) fork as usual.
func TestContainForkBomb(t *testing.T) {
	t.Parallel()
	const pids = 64
	// The build timeout only bounds a bomb that the pids limit would not
	// stop (then the test fails on the missing EAGAIN).
	c := newContainEnv(t, sandbox.Config{Pids: pids}, func(_ *env, cfg *runners.Config) { cfg.BuildTimeout = time.Minute })
	files := map[string]string{
		"package.json": pkgJSON("node bomb.js", nil),
		// The bomb, then the build's own process forks children that stay
		// until it cannot fork any more: when is up to the limit only, not
		// to how far the bomb got (its processes may all be stuck).
		"bomb.js": cgroupFileJS + `const cp = require('child_process')
console.log('pids.max ' + cgroupFile('pids.max', 'pids/pids.max') + ': starting a fork bomb')
cp.spawn('sh', ['-c', 'f() { f | f & }; f'], { stdio: 'ignore' })
const done = (line) => process.stdout.write(line + '\n', () => process.exit(1)) // process.exit could drop queued output
for (let held = 0; ; held++) {
  if (held === 1000) {
    done('forked 1000 processes: no pids limit')
    break
  }
  const child = cp.spawn('sleep', ['600'], { stdio: 'ignore' })
  if (child.pid === undefined) {
    child.on('error', (e) => done('cannot fork any more: ' + e.code + ' (pids.max ' + cgroupFile('pids.max', 'pids/pids.max') +
      ', pids.current ' + cgroupFile('pids.current', 'pids/pids.current') + ')'))
    break
  }
}
`,
	}
	id, evs := c.race(files, domain.BuildConfig{}, nil)
	f := failedOnce(t, c.npmEnv, evs, domain.StepBuild)
	want := fmt.Sprintf("cannot fork any more: EAGAIN (pids.max %d, pids.current ", pids)
	limit := fmt.Sprintf("build failed (exit 1): the build hit its process limit (%d processes)", pids)
	if !strings.HasPrefix(f.Error, limit) || !strings.Contains(f.Error, want) {
		t.Errorf("error = %q, want %q and %q", f.Error, limit, want)
	}
	if log := c.storedLog(attacker, id); !strings.Contains(log, fmt.Sprintf("pids.max %d: starting a fork bomb", pids)) {
		t.Errorf("stored log:\n%s", log)
	}
}

// Allocating past the memory limit gets the build killed by the kernel
// inside its own cgroup: it fails naming the limit, and the neighbour,
// with the same limit, builds.
func TestContainMemoryLimit(t *testing.T) {
	t.Parallel()
	const limit = 128 << 20
	c := newContainEnv(t, sandbox.Config{MemoryBytes: limit})
	files := map[string]string{
		"package.json": pkgJSON("node hog.js", nil),
		"hog.js": cgroupFileJS + `console.log('memory limit ' + cgroupFile('memory.max', 'memory/memory.limit_in_bytes') + ': allocating')
const keep = []
for (;;) keep.push(Buffer.alloc(16 << 20, 1))
`,
	}
	id, evs := c.race(files, domain.BuildConfig{}, nil)
	f := failedOnce(t, c.npmEnv, evs, domain.StepBuild)
	if !strings.HasPrefix(f.Error, "build ran out of memory: killed at the sandbox's memory limit of 128 MiB") {
		t.Errorf("error = %q", f.Error)
	}
	log := c.storedLog(attacker, id)
	if !strings.Contains(log, fmt.Sprintf("memory limit %d: allocating", limit)) || !strings.Contains(log, "out of memory (limit 128 MiB)") {
		t.Errorf("stored log:\n%s", log)
	}
}

// A build sleeping past its time limit is killed with every process it
// started, even one that left its process group: it fails naming the
// limit, and no process of it is left on the host.
func TestContainTimeout(t *testing.T) {
	t.Parallel()
	c := newContainEnv(t, sandbox.Config{}, func(_ *env, cfg *runners.Config) { cfg.BuildTimeout = 2 * time.Second })
	const straggler = "3017.5" // sleep's argument, to find it in the host's /proc
	id, evs := c.race(map[string]string{
		"package.json": pkgJSON("(setsid sleep "+straggler+" &) ; echo sleeping; sleep 30", nil),
	}, domain.BuildConfig{}, nil)
	f := failedOnce(t, c.npmEnv, evs, domain.StepBuild)
	if !strings.HasPrefix(f.Error, "build timed out: killed after 2s, the build step's time limit") || !strings.Contains(f.Error, "sleeping") {
		t.Errorf("error = %q", f.Error)
	}
	if log := c.storedLog(attacker, id); !strings.Contains(log, "killed: the build step's time limit (2s) is over") {
		t.Errorf("stored log:\n%s", log)
	}
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte("sleep\x00"+straggler)) {
			t.Errorf("a process of the build outlived it: %s %q", p, b)
		}
	}
}

// probeJS runs the probes of a file-system containment test: each is a
// name and a function that throws when contained. A probe that does not
// throw, or throws an error code not in its list, makes the script exit 1
// ("ESCAPED"); otherwise it writes the results into out/index.html and
// the build succeeds: success means contained.
const probeJS = `const fs = require('fs')
const results = {}
let escaped = false
for (const [name, codes, fn] of probes) {
  try {
    const got = fn()
    results[name] = 'ESCAPED ' + JSON.stringify(String(got)).slice(0, 200)
    escaped = true
  } catch (e) {
    results[name] = e.code || String(e)
    if (!codes.includes(e.code)) escaped = true
  }
  console.log(name + ': ' + results[name])
}
if (escaped) {
  console.log('ESCAPED')
  process.exitCode = 1
} else {
  fs.mkdirSync('out', { recursive: true })
  fs.writeFileSync('out/index.html', JSON.stringify(results))
  console.log('contained')
}
`

// fileProbes builds a probe project: probes is JavaScript, an array of
// [name, [expected error codes], () => attempt].
func fileProbes(probes string) map[string]string {
	return map[string]string{
		"package.json": pkgJSON("node probe.js", nil),
		"probe.js":     "const probes = " + probes + "\n" + probeJS,
	}
}

// contained checks that the probe build succeeded (every probe failed as
// expected), and that the results page and the stored log show each
// probe's name with its error code.
func (c *containEnv) contained(id string, evs []domain.Event, want map[string][]string) {
	t := c.t
	t.Helper()
	log := c.storedLog(attacker, id)
	if got := signature(evs); !slices.Equal(got, npmSteps()) {
		f, _ := evs[len(evs)-1].(domain.BuildFailed)
		t.Fatalf("the probe build did not succeed (not contained?):\n got %q\nerror: %s\nlog:\n%s", got, f.Error, log)
	}
	_, body := c.get(liveHost(attacker), "/")
	var results map[string]string
	if err := json.Unmarshal([]byte(body), &results); err != nil {
		t.Fatalf("results page %q: %v", body, err)
	}
	for name, codes := range want {
		if !slices.Contains(codes, results[name]) {
			t.Errorf("%s: %q, want one of %q", name, results[name], codes)
		}
		if !strings.Contains(log, "stdout "+name+": "+results[name]+"\n") {
			t.Errorf("the stored log lacks the probe %q:\n%s", name, log)
		}
	}
	if len(results) != len(want) {
		t.Errorf("results %v, want %d probes", results, len(want))
	}
	t.Logf("from inside the build: %v", results)
}

// /etc/shadow is not in the job's root filesystem: neither by its name nor
// through the job's pid 1 or a path out of the workspace.
func TestContainReadingShadow(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/etc/shadow"); err != nil {
		t.Logf("the host has no /etc/shadow (%v): the probe still must not find one", err)
	}
	c := newContainEnv(t, sandbox.Config{})
	id, evs := c.race(fileProbes(`[
  ['/etc/shadow', ['ENOENT', 'EACCES'], () => fs.readFileSync('/etc/shadow', 'utf8')],
  ['/proc/1/root/etc/shadow', ['ENOENT', 'EACCES'], () => fs.readFileSync('/proc/1/root/etc/shadow', 'utf8')],
  ['../../../etc/shadow', ['ENOENT', 'EACCES'], () => fs.readFileSync('../../../../../../etc/shadow', 'utf8')],
]`), domain.BuildConfig{}, nil)
	denied := []string{"ENOENT", "EACCES"}
	c.contained(id, evs, map[string][]string{"/etc/shadow": denied, "/proc/1/root/etc/shadow": denied, "../../../etc/shadow": denied})
}

// The host's data directory (the runner's event store, blobs, workspaces)
// does not exist for a job, not even its own workspace by its host path,
// and a world-readable secret the test puts there stays unread.
func TestContainReadingTheHostDataDir(t *testing.T) {
	t.Parallel()
	c := newContainEnv(t, sandbox.Config{})
	dataDir := filepath.Dir(c.work) // events.db, blobs/, work/
	secretFile := filepath.Join(dataDir, "host-secret.txt")
	const secret = "the-host-secret-value-77a1"
	if err := os.WriteFile(secretFile, []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	// Only the job's own mount namespace may keep it from the secret, not
	// the test's private temporary directories: open them to everyone.
	for _, d := range []string{dataDir, filepath.Dir(dataDir), filepath.Join(dataDir, "blobs")} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The workspaces (the attacker's own, which exists while its probe
	// runs, and the neighbour's, if it still does) by their host paths.
	probes, _ := json.Marshal([][]string{
		{"secret", secretFile}, {"events.db", filepath.Join(dataDir, "events.db")},
		{"blobs", filepath.Join(dataDir, "blobs")}, {"work", c.work},
	})
	id, evs := c.race(fileProbes(`[]
for (const [name, p] of `+string(probes)+`) {
  probes.push([name, ['ENOENT'], () => fs.statSync(p).isDirectory() ? fs.readdirSync(p).join(',') : fs.readFileSync(p, 'utf8')])
}
probes.push(['workspaces', ['ENOENT'], () => fs.readdirSync(`+fmt.Sprintf("%q", c.work)+`)
  .map((w) => fs.readFileSync(`+fmt.Sprintf("%q", c.work)+` + '/' + w + '/src/package.json', 'utf8')).join('')])`),
		domain.BuildConfig{}, nil)
	absent := []string{"ENOENT"}
	c.contained(id, evs, map[string][]string{"secret": absent, "events.db": absent, "blobs": absent, "work": absent, "workspaces": absent})
	c.valuesNeverLeak(attacker, id, secret)
	if _, body := c.get(liveHost(attacker), "/"); strings.Contains(body, secret) {
		t.Errorf("the secret was published: %s", body)
	}
}

// /usr (the host's, bound into every job) and the root filesystem are
// read-only: creating, overwriting or removing anything there fails with
// EROFS, and nothing appears on the host.
func TestContainWritingToUsr(t *testing.T) {
	t.Parallel()
	c := newContainEnv(t, sandbox.Config{})
	probeName := fmt.Sprintf("zipship-probe-%d", time.Now().UnixNano())
	id, evs := c.race(fileProbes(`[
  ['create in /usr', ['EROFS'], () => fs.writeFileSync('/usr/`+probeName+`', 'x')],
  ['create in /usr/local/bin', ['EROFS'], () => fs.writeFileSync('/usr/local/bin/`+probeName+`', 'x')],
  ['mkdir in /usr/lib', ['EROFS'], () => fs.mkdirSync('/usr/lib/`+probeName+`')],
  ['overwrite /usr/bin/sh', ['EROFS'], () => fs.writeFileSync('/usr/bin/sh', 'echo pwned')],
  ['remove /usr/bin/sh', ['EROFS'], () => fs.unlinkSync('/usr/bin/sh')],
  ['overwrite /etc/passwd', ['EROFS'], () => fs.writeFileSync('/etc/passwd', 'root::0:0::/:/bin/sh\n')],
  ['create in /', ['EROFS'], () => fs.writeFileSync('/`+probeName+`', 'x')],
]`), domain.BuildConfig{}, nil)
	c.contained(id, evs, map[string][]string{
		"create in /usr": {"EROFS"}, "create in /usr/local/bin": {"EROFS"}, "mkdir in /usr/lib": {"EROFS"},
		"overwrite /usr/bin/sh": {"EROFS"}, "remove /usr/bin/sh": {"EROFS"}, "overwrite /etc/passwd": {"EROFS"},
		"create in /": {"EROFS"},
	})
	for _, p := range []string{"/usr/" + probeName, "/usr/local/bin/" + probeName, "/usr/lib/" + probeName} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s appeared on the host", p)
			os.RemoveAll(p)
		}
	}
}

// The install step is the one with a network (its egress proxy): neither
// directly nor through the proxy can it reach listeners the test opens on
// the host's 127.0.0.1 and 0.0.0.0 (the build step, with no network at
// all, is TestNPMBuildCannotReachHostListeners). The project's own
// preinstall script probes, and the build publishes what it saw.
func TestContainInstallCannotReachHostListeners(t *testing.T) {
	t.Parallel()
	c := newContainEnv(t, sandbox.Config{})
	var accepted atomic.Int64
	listen := func(addr string) int {
		return hostListener(t, addr, []byte("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nhost"), &accepted)
	}
	loopPort, anyPort := listen("127.0.0.1:0"), listen("0.0.0.0:0")
	type target struct {
		Name string `json:"name"`
		Host string `json:"host"`
		Port int    `json:"port"`
	}
	targets := []target{{"loopback", "127.0.0.1", loopPort}, {"any-on-loopback", "127.0.0.1", anyPort},
		{"any-as-0.0.0.0", "0.0.0.0", anyPort}, {"any-as-localhost", "localhost", anyPort}}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			targets = append(targets, target{"any-on-" + ipn.IP.String(), ipn.IP.String(), anyPort})
		}
	}
	// The listeners answer the host itself.
	for _, tg := range targets {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(tg.Host, fmt.Sprint(tg.Port)), 2*time.Second)
		if err != nil {
			t.Fatalf("the host itself cannot reach %s: %v", tg.Name, err)
		}
		conn.Close()
	}
	for accepted.Load() < int64(len(targets)) {
		time.Sleep(5 * time.Millisecond)
	}
	accepted.Store(0)

	tj, _ := json.Marshal(targets)
	pkg, _ := json.MarshalIndent(map[string]any{
		"name": "zipship-probe", "version": "1.0.0", "private": true,
		"scripts": map[string]string{"preinstall": "node probe.js", "build": "node publish.js"},
	}, "", "  ")
	files := map[string]string{
		"package.json": string(pkg),
		// Direct connections, then CONNECT and plain GET through the
		// egress proxy the install step is given.
		"probe.js": `const net = require('net'), fs = require('fs')
const targets = ` + string(tj) + `
const proxy = new URL(process.env.https_proxy || process.env.HTTPS_PROXY || 'http://127.0.0.1:3128')
const results = { proxy: proxy.host }
// talk connects, sends request (if any) and records the first line of
// the answer, 'CONNECTED' without a request, or the error.
const talk = (name, opts, request) => new Promise((done) => {
  const s = net.connect({ ...opts, timeout: 3000 })
  let data = '', over = false
  const finish = (result) => { if (!over) { over = true; results[name] = result; s.destroy(); done() } }
  s.on('connect', () => { if (request) s.write(request); else finish('CONNECTED') })
  s.on('data', (d) => { data += d; if (data.includes('\r\n')) finish(data.split('\r\n')[0]) })
  s.on('end', () => finish(data || 'closed'))
  s.on('timeout', () => finish(data || 'timeout'))
  s.on('error', (e) => finish('error ' + e.code))
})
;(async () => {
  const via = { host: proxy.hostname, port: Number(proxy.port) }
  for (const t of targets) {
    await talk('direct ' + t.name, { host: t.host, port: t.port })
    await talk('CONNECT ' + t.name, via, 'CONNECT ' + t.host + ':' + t.port + ' HTTP/1.1\r\nHost: ' + t.host + ':' + t.port + '\r\n\r\n')
    await talk('GET ' + t.name, via, 'GET http://' + t.host + ':' + t.port + '/ HTTP/1.1\r\nHost: ' + t.host + ':' + t.port + '\r\nConnection: close\r\n\r\n')
  }
  fs.writeFileSync('probe-results.json', JSON.stringify(results))
  console.log(JSON.stringify(results))
})()
`,
		"publish.js": `const fs = require('fs')
fs.mkdirSync('out', { recursive: true })
fs.copyFileSync('probe-results.json', 'out/index.html')
`,
	}
	id, evs := c.race(files, domain.BuildConfig{}, nil)
	log := c.storedLog(attacker, id)
	if got := signature(evs); !slices.Equal(got, npmSteps()) {
		f, _ := evs[len(evs)-1].(domain.BuildFailed)
		t.Fatalf("build stream %q, error %s\nlog:\n%s", got, f.Error, log)
	}
	_, body := c.get(liveHost(attacker), "/")
	var results map[string]string
	if err := json.Unmarshal([]byte(body), &results); err != nil {
		t.Fatalf("page %q: %v", body, err)
	}
	t.Logf("from inside the install step: %v", results)
	if results["proxy"] != "127.0.0.1:3128" {
		t.Errorf("the install step's proxy is %q: the probe tested the wrong thing", results["proxy"])
	}
	for _, tg := range targets {
		if r := results["direct "+tg.Name]; !strings.HasPrefix(r, "error ") && r != "timeout" {
			t.Errorf("direct %s: %q, want an error", tg.Name, r)
		}
		for _, via := range []string{"CONNECT ", "GET "} {
			if r := results[via+tg.Name]; !strings.HasPrefix(r, "HTTP/1.1 403 ") {
				t.Errorf("%s%s through the proxy: %q, want 403", via, tg.Name, r)
			}
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the host's listeners accepted %d connections from the install step", n)
	}
	d, _ := stepDetail(evs, domain.StepInstall)
	for _, want := range []string{"refused: ", fmt.Sprintf("127.0.0.1:%d", loopPort), fmt.Sprintf("0.0.0.0:%d", anyPort)} {
		if !strings.Contains(d, want) {
			t.Errorf("install detail = %q, want it to name %q", d, want)
		}
	}
}

// A build flooding its output cannot fill the runner's memory or blob
// store with its log: the log keeps the first runners.MaxCommandLogBytes
// of each command's output and says the rest was left out, while the
// command goes on to its end, and its error still quotes its last lines.
func TestContainOutputFlood(t *testing.T) {
	t.Parallel()
	c := newContainEnv(t, sandbox.Config{})
	const flood = 4 * runners.MaxCommandLogBytes
	id, evs := c.race(map[string]string{
		"package.json": pkgJSON("node flood.js", nil),
		"flood.js": fmt.Sprintf(`const line = 'flooding the build log '.repeat(44) + '\n'
let written = 0
while (written < %d) { process.stdout.write(line); written += line.length }
console.error('the end of the flood, after ' + written + ' bytes')
process.exitCode = 1 // process.exit could drop output still queued
`, flood),
	}, domain.BuildConfig{}, nil)
	f := failedOnce(t, c.npmEnv, evs, domain.StepBuild)
	if want := "the end of the flood, after "; !strings.HasPrefix(f.Error, "build failed (exit 1)") ||
		!strings.Contains(f.Error, want) || !strings.Contains(f.Error, "flooding the build log") {
		t.Errorf("error = %.2000q, want the exit and %q", f.Error, want)
	}
	log := c.storedLog(attacker, id)
	t.Logf("stored log: %d bytes for %d bytes of output", len(log), flood)
	// Each line of the stored log has a prefix ("15:04:05.000 stdout "):
	// allow for it on top of the output kept.
	if limit := runners.MaxCommandLogBytes * 12 / 10; len(log) > limit {
		t.Errorf("the stored log has %d bytes, want at most %d", len(log), limit)
	}
	for _, want := range []string{"stdout flooding the build log", "output of this command over 16 MiB: the rest is left out of the log",
		"failed at build: build failed (exit 1)"} {
		if !strings.Contains(log, want) {
			t.Errorf("the stored log lacks %q", want)
		}
	}
}
