//go:build linux

package egress

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// needNetNS fails tests that create namespaces unless running as root
// (CI and the runner run as root: a skip would hide the isolation tests).
func needNetNS(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("creating network namespaces needs root")
	}
}

// newJobNetwork creates a JobNetwork in a temporary pin directory and
// closes it at the end of the test.
func newJobNetwork(t testing.TB, dir, id string, entries []string, opts ProxyOptions) *JobNetwork {
	t.Helper()
	pol, err := ParsePolicy(entries)
	if err != nil {
		t.Fatal(err)
	}
	opts.NetNSDir = dir
	if opts.Log == nil {
		opts.Log = testLog(t)
	}
	n, err := NewJobNetwork(id, pol, opts)
	if errors.Is(err, unix.EPERM) {
		t.Fatalf("no permission to create a network namespace: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return n
}

// inNetNS runs f on a thread switched into the network namespace pinned at
// path. f must not start goroutines that use the network (they would run
// in the host namespace) nor call t.Fatal.
func inNetNS(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		ferr := f()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, err) // thread stays locked: discarded
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// nsConnect opens a CONNECT tunnel through the proxy at 127.0.0.1:3128 of
// the calling thread's namespace.
func nsConnect(target string) (net.Conn, *http.Response, *bufio.Reader, error) {
	c, err := net.DialTimeout("tcp4", ProxyListenAddr, 2*time.Second)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dial the proxy: %w", err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	resp, br, err := connect(c, target)
	if err != nil {
		c.Close()
		return nil, nil, nil, fmt.Errorf("CONNECT %s: %w", target, err)
	}
	return c, resp, br, nil
}

// mounted reports whether path is a mount point in this mount namespace.
func mounted(t testing.TB, path string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

// nsInode returns the inode identifying the network namespace at path.
func nsInode(t testing.TB, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// hostIPv4 returns a non-loopback IPv4 address of this host, if any.
func hostIPv4(t testing.TB) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			return ipn.IP.String()
		}
	}
	return ""
}

func TestJobNetworkIsolation(t *testing.T) {
	needNetNS(t)
	// Host services: an HTTP server on 127.0.0.1:P and a TCP listener on
	// 0.0.0.0:Q, both in the host namespace.
	hostHTTP := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host service %s", r.URL.Path)
	}))
	defer hostHTTP.Close()
	p := portOf(t, hostHTTP.URL)
	anyLn, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer anyLn.Close()
	go func() {
		for {
			c, err := anyLn.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	q := portOf(t, anyLn.Addr().String())
	hostIP := hostIPv4(t)
	hostIfaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "netns")
	hostTarget := "127.0.0.1:" + strconv.Itoa(p)
	n := newJobNetwork(t, dir, "job-1", []string{hostTarget}, ProxyOptions{AllowPrivate: true})

	if got, want := n.NetNSPath(), filepath.Join(dir, "job-1"); got != want {
		t.Errorf("NetNSPath() = %q, want %q", got, want)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("pin dir: %v %v, want mode 0700", fi.Mode(), err)
	}
	if !mounted(t, n.NetNSPath()) {
		t.Error("the namespace is not pinned (no mount)")
	}
	if nsInode(t, n.NetNSPath()) == nsInode(t, "/proc/self/ns/net") {
		t.Error("the pinned namespace is the host's")
	}
	if n.ProxyURL() != "http://127.0.0.1:3128" {
		t.Errorf("ProxyURL() = %q", n.ProxyURL())
	}
	env := n.Env()
	for _, k := range []string{"HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "npm_config_proxy", "npm_config_https_proxy"} {
		if !slices.Contains(env, k+"=http://127.0.0.1:3128") {
			t.Errorf("Env() lacks %s: %q", k, env)
		}
	}
	if !slices.Contains(env, "NO_PROXY=localhost,127.0.0.1") {
		t.Errorf("Env() lacks NO_PROXY: %q", env)
	}

	err = inNetNS(n.NetNSPath(), func() error {
		var errs []error
		fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

		// Only lo, and it is up.
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
			// Do not go on: the dials below would leave the machine.
			return fmt.Errorf("interfaces in the job namespace: %+v, want only lo, up", ifs)
		}

		// The proxy answers on 127.0.0.1:3128.
		c, err := net.DialTimeout("tcp4", ProxyListenAddr, 2*time.Second)
		if err != nil {
			fail("dial the proxy: %v", err)
		} else {
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != http.StatusBadRequest {
				fail("the proxy's answer to a non-proxy request: %v %v", resp, err)
			}
			c.Close()
		}

		// The host's listeners are not reachable directly.
		for _, addr := range []string{hostTarget, "127.0.0.1:" + strconv.Itoa(q)} {
			if c, err := net.DialTimeout("tcp4", addr, 2*time.Second); err == nil {
				c.Close()
				fail("reached host listener %s from the job namespace", addr)
			} else if !errors.Is(err, syscall.ECONNREFUSED) {
				fail("dial %s: %v, want connection refused", addr, err)
			}
		}
		// Nothing outside is routable: these fail at once, sending nothing.
		outside := []string{"192.0.2.1:80"}
		if hostIP != "" {
			outside = append(outside, net.JoinHostPort(hostIP, strconv.Itoa(q)))
		}
		for _, addr := range outside {
			start := time.Now()
			if c, err := net.DialTimeout("tcp4", addr, 2*time.Second); err == nil {
				c.Close()
				fail("reached %s from the job namespace", addr)
			} else if !errors.Is(err, syscall.ENETUNREACH) {
				fail("dial %s: %v, want network unreachable", addr, err)
			} else if d := time.Since(start); d > 100*time.Millisecond {
				fail("dial %s took %v to fail", addr, d)
			}
		}

		// Through the proxy, the allowed host service is reachable:
		// CONNECT, then HTTP inside the tunnel...
		c, resp, br, err := nsConnect(hostTarget)
		if err != nil {
			fail("%v", err)
		} else {
			if resp.StatusCode != 200 {
				fail("CONNECT %s: %s", hostTarget, resp.Status)
			} else {
				fmt.Fprintf(c, "GET /tunnel HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", hostTarget)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					fail("GET through the tunnel: %v", err)
				} else if b, _ := io.ReadAll(resp.Body); string(b) != "host service /tunnel" {
					fail("GET through the tunnel: %q", b)
				}
			}
			c.Close()
		}
		// ...and plain HTTP.
		c, err = net.DialTimeout("tcp4", ProxyListenAddr, 2*time.Second)
		if err != nil {
			fail("dial the proxy: %v", err)
		} else {
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "GET http://%s/plain HTTP/1.1\r\nHost: %s\r\n\r\n", hostTarget, hostTarget)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				fail("plain GET through the proxy: %v", err)
			} else if b, _ := io.ReadAll(resp.Body); string(b) != "host service /plain" {
				fail("plain GET through the proxy: %q", b)
			}
			c.Close()
		}
		// A destination not on the list is refused.
		other := "127.0.0.1:" + strconv.Itoa(q)
		if c, resp, _, err := nsConnect(other); err != nil {
			fail("%v", err)
		} else {
			if resp.StatusCode != http.StatusForbidden {
				fail("CONNECT %s: %s, want 403", other, resp.Status)
			}
			c.Close()
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Error(err)
	}
	if got, want := n.Refused(), []string{"127.0.0.1:" + strconv.Itoa(q)}; !slices.Equal(got, want) {
		t.Errorf("Refused() = %q, want %q", got, want)
	}
	if st := n.Stats(); st.Tunnels != 1 || st.Requests != 1 || st.Refused != 1 {
		t.Errorf("stats %+v", st)
	}

	// The host namespace is untouched.
	if ifs, err := net.Interfaces(); err != nil || len(ifs) != len(hostIfaces) {
		t.Errorf("host interfaces now %d (%v), were %d", len(ifs), err, len(hostIfaces))
	}

	// Close unpins and removes; the id can be used again.
	path := n.NetNSPath()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin file after Close: %v", err)
	}
	if mounted(t, path) {
		t.Error("still mounted after Close")
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	n2 := newJobNetwork(t, dir, "job-1", []string{hostTarget}, ProxyOptions{AllowPrivate: true})
	if err := inNetNS(n2.NetNSPath(), func() error {
		c, resp, _, err := nsConnect(hostTarget)
		if err != nil {
			return err
		}
		defer c.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("CONNECT through the second network: %s", resp.Status)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

func TestJobNetworkTwoAtOnce(t *testing.T) {
	needNetNS(t)
	echoAddr, _ := echoServer(t)
	dir := t.TempDir()
	a := newJobNetwork(t, dir, "a", []string{echoAddr}, ProxyOptions{AllowPrivate: true})
	b := newJobNetwork(t, dir, "b", []string{"registry.npmjs.org"}, ProxyOptions{AllowPrivate: true})
	if nsInode(t, a.NetNSPath()) == nsInode(t, b.NetNSPath()) {
		t.Fatal("both jobs share a namespace")
	}
	status := func(n *JobNetwork) int {
		var code int
		if err := inNetNS(n.NetNSPath(), func() error {
			c, resp, br, err := nsConnect(echoAddr)
			if err != nil {
				return err
			}
			defer c.Close()
			code = resp.StatusCode
			if code == 200 {
				io.WriteString(c, "hi")
				buf := make([]byte, 2)
				if _, err := io.ReadFull(br, buf); err != nil {
					return fmt.Errorf("echo: %w", err)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return code
	}
	// Each namespace's 127.0.0.1:3128 is its own job's proxy.
	if got := status(a); got != 200 {
		t.Errorf("job a: %d, want 200", got)
	}
	if got := status(b); got != http.StatusForbidden {
		t.Errorf("job b: %d, want 403", got)
	}
	if r := a.Refused(); len(r) != 0 {
		t.Errorf("a.Refused() = %q", r)
	}
	if r := b.Refused(); !slices.Equal(r, []string{echoAddr}) {
		t.Errorf("b.Refused() = %q", r)
	}
	if a.Stats().Tunnels != 1 || b.Stats().Tunnels != 0 {
		t.Errorf("stats a %+v b %+v", a.Stats(), b.Stats())
	}
}

func TestJobNetworkErrors(t *testing.T) {
	needNetNS(t)
	dir := t.TempDir()
	for _, id := range []string{"", "..", "../x", "a/b", ".hidden", strings.Repeat("x", 129)} {
		if n, err := NewJobNetwork(id, Policy{}, ProxyOptions{NetNSDir: dir}); err == nil {
			n.Close()
			t.Errorf("id %q accepted", id)
		}
	}
	if _, err := NewJobNetwork("bad-policy", Policy{Allow: []string{"10.0.0.0/8"}}, ProxyOptions{NetNSDir: dir}); err == nil ||
		!strings.Contains(err.Error(), "IP ranges") {
		t.Errorf("invalid policy: %v", err)
	}
	newJobNetwork(t, dir, "dup", nil, ProxyOptions{})
	if _, err := NewJobNetwork("dup", Policy{}, ProxyOptions{NetNSDir: dir}); err == nil ||
		!strings.Contains(err.Error(), "already exists") {
		t.Errorf("duplicate id: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("failed creations left files: %v", entries)
	}
}

func TestCleanupStale(t *testing.T) {
	needNetNS(t)
	dir := t.TempDir()
	// A crashed runner leaves a pinned namespace...
	n := newJobNetwork(t, dir, "crashed", nil, ProxyOptions{})
	if err := n.proxy.Close(); err != nil {
		t.Fatal(err)
	}
	// ...or a pin file it had not mounted yet.
	if err := os.WriteFile(filepath.Join(dir, "half"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if !mounted(t, n.NetNSPath()) {
		t.Fatal("setup: not mounted")
	}
	if err := CleanupStale(dir); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left after CleanupStale: %v", entries)
	}
	if mounted(t, n.NetNSPath()) {
		t.Error("still mounted after CleanupStale")
	}
	if err := n.Close(); err != nil { // after cleanup: nothing left to do
		t.Errorf("Close after CleanupStale: %v", err)
	}
	newJobNetwork(t, dir, "crashed", nil, ProxyOptions{})
	if err := CleanupStale(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("missing dir: %v", err)
	}
}

// TestJobNetworkLeavesNoThreadBehind creates many networks, some at once,
// then checks that every thread of the process is in the host namespace:
// none was handed back to the scheduler still inside a job's namespace.
func TestJobNetworkLeavesNoThreadBehind(t *testing.T) {
	needNetNS(t)
	dir := t.TempDir()
	host, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 8)
	for w := range 8 {
		go func() {
			for i := range 10 {
				n, err := NewJobNetwork(fmt.Sprintf("w%d-%d", w, i), Policy{}, ProxyOptions{NetNSDir: dir, Log: testLog(t)})
				if err != nil {
					errc <- err
					return
				}
				if err := n.Close(); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range 8 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		ns, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		if ns != host {
			t.Errorf("thread %s is in %s, not the host's %s", task.Name(), ns, host)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

// TestJobNetworkTiming logs how long creating and closing a network takes
// (FACTS.md measured about 1 ms per job).
func TestJobNetworkTiming(t *testing.T) {
	needNetNS(t)
	dir := t.TempDir()
	const runs = 50
	var create, closeD []time.Duration
	for i := range runs {
		start := time.Now()
		n, err := NewJobNetwork("t"+strconv.Itoa(i), Policy{}, ProxyOptions{NetNSDir: dir, Log: testLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		mid := time.Now()
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		create = append(create, mid.Sub(start))
		closeD = append(closeD, time.Since(mid))
	}
	q := func(ds []time.Duration, f float64) time.Duration {
		s := slices.Clone(ds)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[int(f*float64(len(s)-1))]
	}
	t.Logf("JobNetwork over %d runs: create median %v p90 %v max %v; close median %v p90 %v max %v",
		runs, q(create, .5), q(create, .9), q(create, 1), q(closeD, .5), q(closeD, .9), q(closeD, 1))
}

func BenchmarkJobNetwork(b *testing.B) {
	needNetNS(b)
	dir := b.TempDir()
	i := 0
	for b.Loop() {
		n, err := NewJobNetwork("b"+strconv.Itoa(i), Policy{}, ProxyOptions{NetNSDir: dir, Log: testLog(b)})
		if err != nil {
			b.Fatal(err)
		}
		if err := n.Close(); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestJobNetworkFromAnotherProcess joins the pinned namespace by path from
// another process, as a container runtime does, with Env(): curl and npm
// reach an allowed (host-side, test) service only through the proxy.
func TestJobNetworkFromAnotherProcess(t *testing.T) {
	needNetNS(t)
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Fatal("no nsenter (Debian's util-linux)")
	}
	registry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/zipship-probe":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"name":"zipship-probe","dist-tags":{"latest":"1.2.3"},`+
				`"versions":{"1.2.3":{"name":"zipship-probe","version":"1.2.3",`+
				`"dist":{"tarball":"http://registry.test/zipship-probe/-/zipship-probe-1.2.3.tgz"}}}}`)
		default:
			fmt.Fprintf(w, "host service %s", r.URL.Path)
		}
	}))
	defer registry.Close()
	p := strconv.Itoa(portOf(t, registry.URL))
	dns := newFakeDNS(map[string]string{"registry.test": "127.0.0.1"})
	n := newJobNetwork(t, t.TempDir(), "proc", []string{"registry.test:" + p}, ProxyOptions{AllowPrivate: true, Resolver: dns.resolve})

	run := func(name string, args ...string) (string, error) {
		cmd := exec.Command(nsenter, append([]string{"--net=" + n.NetNSPath(), "--", name}, args...)...)
		cmd.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + t.TempDir()}, n.Env()...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	if ip, err := exec.LookPath("ip"); err == nil {
		out, err := run(ip, "-o", "link", "show")
		if err != nil {
			t.Fatalf("ip link: %v\n%s", err, out)
		}
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.Contains(lines[0], ": lo:") {
			t.Errorf("links seen by another process in the namespace:\n%s", out)
		}
	}
	if curl, err := exec.LookPath("curl"); err == nil {
		out, err := run(curl, "-sS", "--max-time", "10", "http://registry.test:"+p+"/hello")
		if err != nil || out != "host service /hello" {
			t.Errorf("curl through the proxy: %v %q", err, out)
		}
		out, err = run(curl, "-sS", "--max-time", "10", "--noproxy", "*", "http://127.0.0.1:"+p+"/")
		if err == nil || !strings.Contains(out, "onnect") {
			t.Errorf("curl past the proxy: %v %q, want a connection failure", err, out)
		}
		out, err = run(curl, "-sS", "--max-time", "10", "https://not-allowed.invalid/")
		if err == nil || !strings.Contains(out, "403") {
			t.Errorf("curl to a refused host: %v %q, want the proxy's 403", err, out)
		}
	}
	if npm, err := exec.LookPath("npm"); err == nil {
		out, err := run(npm, "view", "zipship-probe", "version",
			"--registry", "http://registry.test:"+p+"/",
			"--cache", t.TempDir(), "--update-notifier=false", "--fund=false", "--audit=false")
		if err != nil || strings.TrimSpace(out) != "1.2.3" {
			t.Errorf("npm view through the proxy: %v %q", err, out)
		}
	}
	if r := n.Refused(); !slices.Equal(r, []string{"not-allowed.invalid:443"}) {
		t.Errorf("Refused() = %q", r)
	}
	t.Logf("stats %+v", n.Stats())
}
