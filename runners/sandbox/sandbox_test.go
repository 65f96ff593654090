package sandbox_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/zipship/zipship/runners/sandbox"
	"github.com/zipship/zipship/runners/sandbox/sandboxtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	sandboxtest.Stop()
	os.Exit(code)
}

// testLog shows the sandbox's warnings in the test output (everything
// with ZIPSHIP_TEST_LOG=debug or info).
func testLog(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	_ = level.UnmarshalText([]byte(os.Getenv("ZIPSHIP_TEST_LOG")))
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// newSandbox connects to the test containerd with a fresh rootfs; mutate
// may change the config first.
func newSandbox(t testing.TB, mutate func(*sandbox.Config)) *sandbox.Sandbox {
	t.Helper()
	cfg := sandbox.Config{
		Address: sandboxtest.Start(t),
		RootFS:  sandboxtest.RootFS(t),
		Log:     testLog(t),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	sb, err := sandbox.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := sb.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return sb
}

// output is a job's collected stdout and stderr.
type output struct{ stdout, stderr bytes.Buffer }

// run runs a shell script as a job with a fresh workspace (unless job
// already names one) and fails the test on an infrastructure error.
func run(t testing.TB, sb *sandbox.Sandbox, job sandbox.Job) (sandbox.Result, *output) {
	t.Helper()
	var o output
	if job.Workspace == "" {
		job.Workspace = t.TempDir()
	}
	if job.ID == "" {
		job.ID = t.Name()
	}
	if job.Timeout == 0 {
		job.Timeout = 30 * time.Second
	}
	job.Stdout, job.Stderr = &o.stdout, &o.stderr
	res, err := sb.Run(context.Background(), job)
	if err != nil {
		t.Fatalf("Run %v: %v", job.Args, err)
	}
	t.Logf("%v: %+v\nstdout: %s\nstderr: %s", job.Args, res, clip(o.stdout.String()), clip(o.stderr.String()))
	return res, &o
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func clip(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "…"
	}
	return s
}

// assertGone checks that no container of the job is left in the namespace
// and that no process of the build user in one of the job's cgroups
// survives on the host.
func assertGone(t testing.TB, sb *sandbox.Sandbox, jobID string) {
	t.Helper()
	ctx := context.Background()
	cs, err := sb.Client().Containers(ctx, fmt.Sprintf(`labels."io.zipship.job"==%q`, jobID))
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	if len(cs) != 0 {
		t.Errorf("%d container(s) of job %s left behind", len(cs), jobID)
	}
	// Container ids are "zs-<sanitised job id>-<random>"; the cgroup of a
	// job's processes ends in its container id.
	prefix := sandbox.ContainerID(jobID)
	prefix = "/" + prefix[:len(prefix)-len("12345678")]
	if pids := buildUserProcesses(t, prefix); len(pids) > 0 {
		t.Errorf("processes of uid %d of job %s still running on the host: %v", sandbox.DefaultUID, jobID, pids)
	}
}

// buildUserProcesses lists host processes running as the build uid in a
// cgroup whose path contains cgroupPart.
func buildUserProcesses(t testing.TB, cgroupPart string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" && f[1] == strconv.Itoa(sandbox.DefaultUID) {
				cg, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
				if strings.Contains(string(cg), cgroupPart) {
					pids = append(pids, pid)
				}
			}
		}
	}
	return pids
}

func TestEchoUserDirAndStreams(t *testing.T) {
	sb := newSandbox(t, nil)
	res, o := run(t, sb, sandbox.Job{
		Args: sh(`id -u; id -g; id -G; pwd; echo "$HOME $FOO"; hostname; echo hi >&2`),
		Env:  []string{"FOO=bar"},
		Dir:  "/workspace",
	})
	if res.ExitCode != 0 || res.TimedOut || res.OOMKilled || res.PidsLimited {
		t.Fatalf("result %+v", res)
	}
	want := "10000\n10000\n10000\n/workspace\n/home/build bar\nbuild\n"
	if got := o.stdout.String(); got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
	if got := o.stderr.String(); got != "hi\n" {
		t.Errorf("stderr %q, want %q", got, "hi\n")
	}
	if res.Duration <= 0 || res.Duration > 10*time.Second {
		t.Errorf("duration %v", res.Duration)
	}
	assertGone(t, sb, t.Name())
}

func TestSubdirectoryWorkingDir(t *testing.T) {
	sb := newSandbox(t, nil)
	ws := t.TempDir()
	if err := os.MkdirAll(filepath.Join(ws, "app", "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	res, o := run(t, sb, sandbox.Job{Args: sh("pwd"), Workspace: ws, Dir: "/workspace/app"})
	if res.ExitCode != 0 || o.stdout.String() != "/workspace/app\n" {
		t.Fatalf("result %+v, stdout %q", res, o.stdout.String())
	}
}

func TestExitCodePropagated(t *testing.T) {
	sb := newSandbox(t, nil)
	res, _ := run(t, sb, sandbox.Job{Args: sh("exit 3")})
	if res.ExitCode != 3 || res.TimedOut || res.OOMKilled {
		t.Fatalf("result %+v, want exit 3", res)
	}
	// A command that cannot be executed is the job's failure, as in a shell.
	res, o := run(t, sb, sandbox.Job{ID: "missing", Args: []string{"/no/such/binary"}})
	if res.ExitCode != 127 || !strings.Contains(o.stderr.String(), "/no/such/binary") {
		t.Fatalf("missing binary: %+v %q, want 127 and a message", res, o.stderr.String())
	}
	assertGone(t, sb, "missing")
	res, _ = run(t, sb, sandbox.Job{Args: []string{"no-such-command-zipship"}})
	if res.ExitCode != 127 {
		t.Fatalf("command not in PATH: %+v, want 127", res)
	}
	res, _ = run(t, sb, sandbox.Job{Args: []string{"/etc/passwd"}})
	if res.ExitCode != 126 {
		t.Fatalf("not executable: %+v, want 126", res)
	}
}

func TestWorkspaceWritableAndOwned(t *testing.T) {
	sb := newSandbox(t, nil)
	ws := t.TempDir()
	// A file the runner put there (owned by root) must become writable.
	if err := os.WriteFile(filepath.Join(ws, "package.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(ws, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	res, _ := run(t, sb, sandbox.Job{
		Args:      sh(`echo built > /workspace/out.txt && mkdir -p /workspace/dist && echo x > /workspace/dist/i.html && echo more >> /workspace/package.json && touch /workspace/src/a`),
		Workspace: ws,
	})
	if res.ExitCode != 0 {
		t.Fatalf("result %+v", res)
	}
	for _, name := range []string{"out.txt", "dist", "dist/i.html", "package.json", "src/a"} {
		fi, err := os.Stat(filepath.Join(ws, name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != sandbox.DefaultUID || st.Gid != sandbox.DefaultGID {
			t.Errorf("%s owned by %d:%d, want %d:%d", name, st.Uid, st.Gid, sandbox.DefaultUID, sandbox.DefaultGID)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "out.txt")); string(b) != "built\n" {
		t.Errorf("out.txt = %q", b)
	}
}

func TestReadOnlyEverywhereButWorkspaceTmpAndHome(t *testing.T) {
	sb := newSandbox(t, nil)
	for _, p := range []string{"/usr/zipship-probe", "/usr/bin/zipship-probe", "/zipship-probe", "/etc/passwd", "/etc/zipship-probe", "/etc/ssl/zipship-probe", "/bin/zipship-probe", "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/proc/sys/kernel/hostname"} {
		res, o := run(t, sb, sandbox.Job{Args: sh("echo x > " + p)})
		if res.ExitCode == 0 {
			t.Errorf("writing %s succeeded", p)
		}
		if !strings.Contains(o.stderr.String(), "Read-only file system") && !strings.Contains(o.stderr.String(), "Permission denied") {
			t.Errorf("writing %s: unexpected error %q", p, o.stderr.String())
		}
	}
	if _, err := os.Stat("/usr/zipship-probe"); err == nil {
		t.Fatal("a job wrote into the host's /usr")
	}
	res, o := run(t, sb, sandbox.Job{Args: sh(`echo a > /tmp/a && echo b > "$HOME/b" && cat /tmp/a "$HOME/b" && stat -c '%a %u' /tmp "$HOME"`)})
	if res.ExitCode != 0 || o.stdout.String() != "a\nb\n1777 0\n700 10000\n" {
		t.Fatalf("tmp and home: %+v %q", res, o.stdout.String())
	}
}

func TestTmpfsIsBounded(t *testing.T) {
	sb := newSandbox(t, func(c *sandbox.Config) { c.TmpfsBytes = 8 << 20 })
	res, o := run(t, sb, sandbox.Job{Args: sh(`head -c 16M /dev/zero > /tmp/big`)})
	if res.ExitCode == 0 || !strings.Contains(o.stderr.String(), "No space left") {
		t.Fatalf("filling an 8 MiB /tmp with 16 MiB: %+v %q", res, o.stderr.String())
	}
}

func TestNoPrivileges(t *testing.T) {
	sb := newSandbox(t, nil)
	res, o := run(t, sb, sandbox.Job{Args: sh(`grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status`)})
	if res.ExitCode != 0 {
		t.Fatalf("result %+v", res)
	}
	for _, want := range []string{"CapInh:\t0000000000000000", "CapPrm:\t0000000000000000", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "CapAmb:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(o.stdout.String(), want) {
			t.Errorf("missing %q in\n%s", want, o.stdout.String())
		}
	}
	// su/mount must not work, nor may a setuid binary help.
	res, _ = run(t, sb, sandbox.Job{Args: sh(`mount -t tmpfs none /tmp 2>&1 || exit 9`)})
	if res.ExitCode == 0 {
		t.Errorf("mount succeeded")
	}
}

func TestHostSecretsInvisible(t *testing.T) {
	sb := newSandbox(t, nil)
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "zipship-secret-token")
	if err := os.WriteFile(secret, []byte("s3cr3t"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(secretDir, 0o755); err != nil {
		t.Fatal(err)
	}
	res, o := run(t, sb, sandbox.Job{Args: sh(fmt.Sprintf(`
		cat /etc/shadow 2>/dev/null && echo SHADOW-READ
		test -e %[1]s && echo SECRET-PATH-EXISTS
		cat %[1]s 2>/dev/null && echo SECRET-READ
		find / \( -path /proc -o -path /sys -o -path /usr \) -prune -o -name zipship-secret-token -print 2>/dev/null
		grep -rl s3cr3t /etc /home /tmp /run /workspace 2>/dev/null
		ls /root 2>/dev/null && echo ROOT-HOME-LISTED
		exit 0`, secret))})
	if res.ExitCode != 0 {
		t.Fatalf("result %+v", res)
	}
	if s := strings.TrimSpace(o.stdout.String()); s != "" {
		t.Fatalf("host data visible in the job:\n%s", s)
	}
}

func TestTimeoutKillsEverything(t *testing.T) {
	sb := newSandbox(t, nil)
	start := time.Now()
	// A child in the background and one in the foreground: both must go.
	res, _ := run(t, sb, sandbox.Job{ID: "timeout-job", Args: sh("sleep 60 & sleep 60"), Timeout: time.Second})
	elapsed := time.Since(start)
	if !res.TimedOut || res.ExitCode != 137 || res.OOMKilled {
		t.Fatalf("result %+v, want timed out with 137", res)
	}
	// The job itself would sleep 60 s: returning well before proves the kill.
	if elapsed > 30*time.Second {
		t.Fatalf("Run returned after %v: the job was not killed at its timeout", elapsed)
	}
	assertGone(t, sb, "timeout-job")
}

func TestCancelKillsEverything(t *testing.T) {
	sb := newSandbox(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	start := time.Now()
	res, err := sb.Run(ctx, sandbox.Job{ID: "cancel-job", Args: sh("sleep 60"), Workspace: t.TempDir()})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if res.TimedOut || time.Since(start) > 30*time.Second {
		t.Fatalf("result %+v after %v", res, time.Since(start))
	}
	assertGone(t, sb, "cancel-job")
}

func TestMemoryLimitOOMKills(t *testing.T) {
	sb := newSandbox(t, func(c *sandbox.Config) { c.MemoryBytes = 64 << 20 })
	// tail keeps the whole newline-free input line in memory: 200 MiB > 64 MiB.
	res, _ := run(t, sb, sandbox.Job{ID: "oom-job", Args: sh("head -c 200M /dev/zero | tail >/dev/null")})
	if res.ExitCode != 137 || !res.OOMKilled || res.TimedOut {
		t.Fatalf("result %+v, want 137 and OOMKilled", res)
	}
	assertGone(t, sb, "oom-job")
	// Swap does not help either: memory+swap is bounded (no swap here, but
	// the limit is set for hosts that have some).
	// And the host and the next job are fine.
	res, o := run(t, sb, sandbox.Job{Args: sh("echo alive")})
	if res.ExitCode != 0 || res.OOMKilled || o.stdout.String() != "alive\n" {
		t.Fatalf("next job: %+v %q", res, o.stdout.String())
	}
	// A child killed while the main process carries on is still reported.
	res, _ = run(t, sb, sandbox.Job{Args: sh("head -c 200M /dev/zero | tail >/dev/null; echo main survives; exit 1")})
	if res.ExitCode != 1 || !res.OOMKilled {
		t.Fatalf("child OOM: %+v, want exit 1 and OOMKilled", res)
	}
}

func TestPidsLimitContainsForkBomb(t *testing.T) {
	sb := newSandbox(t, func(c *sandbox.Config) { c.Pids = 64 })
	res, o := run(t, sb, sandbox.Job{
		ID:      "forkbomb-job",
		Args:    []string{"/bin/bash", "-c", `:(){ :|:& };: ; sleep 30`},
		Timeout: 4 * time.Second,
	})
	if res.ExitCode == 0 && !res.TimedOut {
		t.Fatalf("fork bomb ended well: %+v", res)
	}
	if !res.PidsLimited || res.PidsLimit != 64 {
		t.Errorf("fork bomb: %+v, want PidsLimited and PidsLimit 64", res)
	}
	if !strings.Contains(o.stderr.String(), "fork") && !strings.Contains(o.stderr.String(), "Resource temporarily unavailable") {
		t.Errorf("no fork failure reported: %q", clip(o.stderr.String()))
	}
	// The host can still fork and exec.
	if out, err := exec.Command("/bin/echo", "host alive").Output(); err != nil || string(out) != "host alive\n" {
		t.Fatalf("host: %q %v", out, err)
	}
	assertGone(t, sb, "forkbomb-job")

	// A bounded loop: the 65th process fails to start.
	res, o = run(t, sb, sandbox.Job{
		Args: sh(`n=0; while [ $n -lt 100 ]; do sleep 5 & if [ $? -ne 0 ]; then break; fi; n=$((n+1)); done; echo started $n; exit 0`),
	})
	t.Logf("bounded: %+v %q %q", res, o.stdout.String(), clip(o.stderr.String()))
	if !strings.Contains(o.stderr.String(), "fork") {
		t.Errorf("100 sleeps under a 64 pids limit did not fail to fork")
	}
	if !res.PidsLimited {
		t.Errorf("bounded: %+v, want PidsLimited", res)
	}
	// Many processes, but never at the limit: not PidsLimited.
	res, _ = run(t, sb, sandbox.Job{Args: sh(`for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait`)})
	if res.ExitCode != 0 || res.PidsLimited {
		t.Errorf("under the limit: %+v, want exit 0, not PidsLimited", res)
	}
}

func TestCPUQuota(t *testing.T) {
	sb := newSandbox(t, func(c *sandbox.Config) { c.CPUs = 0.5 })
	res, o := run(t, sb, sandbox.Job{Args: sh(`cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max`)})
	if res.ExitCode != 0 {
		t.Fatalf("result %+v", res)
	}
	got := strings.Fields(o.stdout.String())
	if !slices.Equal(got, []string{"50000", "100000"}) {
		t.Fatalf("cpu quota/period %v, want 50000 100000", got)
	}
}

// listen opens a TCP listener on addr on the host and counts connections.
func listen(t *testing.T, addr string) (port int, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, accepted
}

func TestNoNetwork(t *testing.T) {
	sb := newSandbox(t, nil)
	loPort, loAccepted := listen(t, "127.0.0.1:0")
	anyPort, anyAccepted := listen(t, "0.0.0.0:0")
	script := fmt.Sprintf(`
		for p in %d %d; do
			if bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" 2>/dev/null; then echo "REACHED 127.0.0.1:$p"; fi
		done
		node -e '
			const net = require("net");
			let pending = 2;
			for (const port of [%d, %d]) {
				const s = net.connect({host: "127.0.0.1", port}, () => { console.log("NODE REACHED " + port); s.destroy(); });
				s.on("error", e => { console.error("node " + port + ": " + e.code); if (--pending === 0) process.exit(0); });
			}'
		echo "ifaces: $(ls /sys/class/net | tr '\n' ' ')"
		echo "routes: $(tail -n +2 /proc/net/route | wc -l) $(tail -n +2 /proc/net/ipv6_route 2>/dev/null | grep -v ' lo$' | wc -l)"
	`, loPort, anyPort, loPort, anyPort)
	res, o := run(t, sb, sandbox.Job{Args: sh(script)})
	if res.ExitCode != 0 {
		t.Fatalf("result %+v", res)
	}
	out := o.stdout.String()
	if strings.Contains(out, "REACHED") {
		t.Fatalf("the job reached a host listener:\n%s", out)
	}
	if !strings.Contains(out, "ifaces: lo \n") {
		t.Errorf("interfaces other than lo: %q", out)
	}
	if !strings.Contains(out, "routes: 0 0") {
		t.Errorf("routes present: %q", out)
	}
	if strings.Count(o.stderr.String(), "ECONNREFUSED") != 2 {
		t.Errorf("node did not get ECONNREFUSED twice: %q", o.stderr.String())
	}
	if n := loAccepted.Load() + anyAccepted.Load(); n != 0 {
		t.Fatalf("host listeners accepted %d connections", n)
	}
}

// pinnedNetNS makes a network namespace with lo up on a locked OS thread,
// starts a TCP server inside it that greets each client, and returns the
// namespace's path; the thread (and so the namespace) lives until the test
// ends. This is the egress-proxy design of FACTS.md in miniature.
func pinnedNetNS(t *testing.T, greeting string) (nsPath string, port int) {
	t.Helper()
	type ready struct {
		path string
		ln   net.Listener
		err  error
	}
	readyCh := make(chan ready, 1)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
			readyCh <- ready{err: fmt.Errorf("unshare: %w", err)}
			return
		}
		if err := loUp(); err != nil {
			readyCh <- ready{err: err}
			return
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			readyCh <- ready{err: err}
			return
		}
		readyCh <- ready{path: fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), syscall.Gettid()), ln: ln}
		<-done
		ln.Close()
	}()
	r := <-readyCh
	if r.err != nil {
		t.Fatalf("pinned netns: %v", r.err)
	}
	go func() {
		for {
			c, err := r.ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, greeting)
			c.Close()
		}
	}()
	return r.path, r.ln.Addr().(*net.TCPAddr).Port
}

// loUp sets the loopback interface of the calling thread's network
// namespace up (SIOCSIFFLAGS), with no netlink library.
func loUp() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer syscall.Close(fd)
	var ifr [40]byte
	copy(ifr[:], "lo")
	binary.NativeEndian.PutUint16(ifr[16:], syscall.IFF_UP|syscall.IFF_LOOPBACK|syscall.IFF_RUNNING)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		return fmt.Errorf("SIOCSIFFLAGS lo: %w", e)
	}
	return nil
}

func TestGivenNetworkNamespace(t *testing.T) {
	sb := newSandbox(t, nil)
	nsPath, port := pinnedNetNS(t, "hello from the proxy side")
	hostPort, hostAccepted := listen(t, "0.0.0.0:0")
	res, o := run(t, sb, sandbox.Job{
		Args: []string{"/bin/bash", "-c", fmt.Sprintf(`
			exec 3<>/dev/tcp/127.0.0.1/%d && cat <&3; echo
			bash -c "exec 4<>/dev/tcp/127.0.0.1/%d" 2>/dev/null && echo HOST-REACHED
			echo "ifaces: $(ls /sys/class/net | tr '\n' ' ')"`, port, hostPort)},
		NetNSPath: nsPath,
	})
	if res.ExitCode != 0 {
		t.Fatalf("result %+v", res)
	}
	out := o.stdout.String()
	if !strings.Contains(out, "hello from the proxy side") {
		t.Fatalf("the job did not reach the listener in its namespace: %q", out)
	}
	if strings.Contains(out, "HOST-REACHED") || hostAccepted.Load() != 0 {
		t.Fatalf("the job reached the host's listener: %q", out)
	}
	if !strings.Contains(out, "ifaces: lo \n") {
		t.Errorf("interfaces: %q", out)
	}
}

var heapLimitRE = regexp.MustCompile(`^(\d+)\s+(\d+|undefined)\s*$`)

func TestNodeSeesMemoryLimit(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not installed on the host (apt-get install -y nodejs)")
	}
	const js = `console.log(require("v8").getHeapStatistics().heap_size_limit, typeof process.constrainedMemory === "function" ? process.constrainedMemory() : undefined)`
	hostOut, err := exec.Command("node", "-e", js).Output()
	if err != nil {
		t.Fatal(err)
	}
	hm := heapLimitRE.FindStringSubmatch(strings.TrimSpace(string(hostOut)))
	if hm == nil {
		t.Fatalf("host node said %q", hostOut)
	}
	hostHeap, _ := strconv.ParseInt(hm[1], 10, 64)

	sb := newSandbox(t, func(c *sandbox.Config) { c.MemoryBytes = 512 << 20 })
	res, o := run(t, sb, sandbox.Job{Args: []string{"node", "-e", js}})
	if res.ExitCode != 0 {
		t.Fatalf("result %+v", res)
	}
	m := heapLimitRE.FindStringSubmatch(strings.TrimSpace(o.stdout.String()))
	if m == nil {
		t.Fatalf("job node said %q", o.stdout.String())
	}
	jobHeap, _ := strconv.ParseInt(m[1], 10, 64)
	t.Logf("heap_size_limit: host %d MiB, job (512 MiB limit) %d MiB; constrainedMemory in job: %s",
		hostHeap>>20, jobHeap>>20, m[2])
	if jobHeap >= hostHeap || jobHeap > 512<<20 {
		t.Fatalf("node in the job sized its heap at %d B (host %d B): it does not see its 512 MiB limit", jobHeap, hostHeap)
	}
	if m[2] != "undefined" && m[2] != strconv.Itoa(512<<20) {
		t.Errorf("process.constrainedMemory() = %s, want %d", m[2], 512<<20)
	}
}

func TestConcurrentJobsDoNotInterfere(t *testing.T) {
	sb := newSandbox(t, nil)
	names := []string{"alpha", "beta", "gamma"}
	wss := make([]string, len(names))
	outs := make([]*output, len(names))
	results := make([]sandbox.Result, len(names))
	var wg sync.WaitGroup
	start := time.Now()
	for i, name := range names {
		wss[i] = t.TempDir()
		wg.Add(1)
		go func() {
			defer wg.Done()
			var o output
			res, err := sb.Run(context.Background(), sandbox.Job{
				ID:        "concurrent-" + name,
				Args:      sh(fmt.Sprintf(`echo %s > /workspace/me; echo %s > /tmp/me; sleep 2; cat /workspace/me /tmp/me; ls /workspace`, name, name)),
				Workspace: wss[i],
				Timeout:   30 * time.Second,
				Stdout:    &o.stdout, Stderr: &o.stderr,
			})
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			results[i], outs[i] = res, &o
		}()
	}
	wg.Wait()
	t.Logf("three 2 s jobs took %v together", time.Since(start))
	for i, name := range names {
		if results[i].ExitCode != 0 {
			t.Errorf("%s: %+v %q", name, results[i], outs[i].stderr.String())
		}
		want := fmt.Sprintf("%s\n%s\nme\n", name, name)
		if got := outs[i].stdout.String(); got != want {
			t.Errorf("%s: stdout %q, want %q", name, got, want)
		}
		if b, _ := os.ReadFile(filepath.Join(wss[i], "me")); string(b) != name+"\n" {
			t.Errorf("%s: workspace file %q", name, b)
		}
		assertGone(t, sb, "concurrent-"+name)
	}
}

func TestSharedWriterForStdoutAndStderr(t *testing.T) {
	sb := newSandbox(t, nil)
	var buf bytes.Buffer // not safe for concurrent use: the sandbox must serialise
	res, err := sb.Run(context.Background(), sandbox.Job{
		ID:     "shared-writer",
		Args:   sh(`i=0; while [ $i -lt 200 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done`),
		Stdout: &buf, Stderr: &buf, Timeout: 30 * time.Second,
	})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	if got := strings.Count(buf.String(), "\n"); got != 400 {
		t.Fatalf("%d lines, want 400", got)
	}
}

func TestStartOverhead(t *testing.T) {
	sb := newSandbox(t, nil)
	ws := t.TempDir()
	var walls, durs []time.Duration
	for i := range 10 {
		start := time.Now()
		res, err := sb.Run(context.Background(), sandbox.Job{ID: fmt.Sprintf("overhead-%d", i), Args: []string{"true"}, Workspace: ws, Timeout: 30 * time.Second})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("%+v %v", res, err)
		}
		walls = append(walls, time.Since(start))
		durs = append(durs, res.Duration)
	}
	slices.Sort(walls)
	slices.Sort(durs)
	t.Logf("`true` in the sandbox, 10 runs: Run() wall median %v (min %v, max %v); start→exit median %v",
		walls[5], walls[0], walls[9], durs[5])
}

func TestNewRejectsBadConfig(t *testing.T) {
	addr := sandboxtest.Start(t)
	rootfs := sandboxtest.RootFS(t)
	ctx := context.Background()
	for name, cfg := range map[string]sandbox.Config{
		"low uid":       {Address: addr, RootFS: rootfs, UID: 1000},
		"low gid":       {Address: addr, RootFS: rootfs, GID: 0o7},
		"no rootfs":     {Address: addr},
		"unprepared":    {Address: addr, RootFS: t.TempDir()},
		"relative bind": {Address: addr, RootFS: rootfs, ReadOnlyBinds: []sandbox.Bind{{Source: "usr"}}},
		"no address":    {RootFS: rootfs},
		"no daemon":     {Address: filepath.Join(t.TempDir(), "nothing.sock"), RootFS: rootfs},
	} {
		if sb, err := sandbox.New(ctx, cfg); err == nil {
			sb.Close()
			t.Errorf("%s: New accepted %+v", name, cfg)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestContainerIDSanitised(t *testing.T) {
	valid := regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)
	for _, id := range []string{"", "build-1/install", "ÜBER build!!", strings.Repeat("x", 300), "--a--", "0190c3e2-7b1d-7c6e-9a44-1f2e3d4c5b6a:npm-install"} {
		got := sandbox.ContainerID(id)
		if !valid.MatchString(got) || len(got) > 76 {
			t.Errorf("ContainerID(%q) = %q: not a containerd identifier", id, got)
		}
		if again := sandbox.ContainerID(id); again == got {
			t.Errorf("ContainerID(%q) is not unique per call", id)
		}
	}
}

func TestPrepareRootFSIdempotent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rootfs")
	if err := sandbox.PrepareRootFS(dir); err != nil {
		t.Fatal(err)
	}
	passwd := filepath.Join(dir, "etc", "passwd")
	before, _ := os.ReadFile(passwd)
	fi1, _ := os.Stat(passwd)
	if err := sandbox.PrepareRootFS(dir); err != nil {
		t.Fatal(err)
	}
	fi2, _ := os.Stat(passwd)
	if !os.SameFile(fi1, fi2) || !fi1.ModTime().Equal(fi2.ModTime()) {
		t.Errorf("a second run rewrote an intact file")
	}
	// Damage: a wrong file, a missing link, a file where a directory goes.
	_ = os.WriteFile(passwd, []byte("root::0:0::/:/bin/sh\n"), 0o666)
	_ = os.Remove(filepath.Join(dir, "bin"))
	_ = os.Remove(filepath.Join(dir, "workspace"))
	_ = os.WriteFile(filepath.Join(dir, "workspace"), nil, 0o644)
	if err := sandbox.PrepareRootFS(dir); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(passwd)
	if !bytes.Equal(before, after) || !strings.Contains(string(after), "build:x:10000:10000:") {
		t.Errorf("passwd not repaired: %q", after)
	}
	if l, err := os.Readlink(filepath.Join(dir, "bin")); err != nil || l != "usr/bin" {
		t.Errorf("bin -> %q, %v", l, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "workspace")); err != nil || !fi.IsDir() {
		t.Errorf("workspace not a directory again: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "tmp")); fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("tmp mode %v", fi.Mode())
	}
}

func TestPruneRemovesLeftovers(t *testing.T) {
	sb := newSandbox(t, nil)
	ctx := namespaces.WithNamespace(context.Background(), sb.Namespace())
	// What a runner killed mid-job leaves: a labelled container with a
	// running task.
	id := sandbox.ContainerID("crashed")
	c, err := sb.Client().NewContainer(ctx, id,
		client.WithContainerLabels(map[string]string{"io.zipship.sandbox": "v1", "io.zipship.job": "crashed"}),
		client.WithRuntime(sandbox.Runtime, nil),
		client.WithNewSpec(
			oci.WithRootFSPath(sandboxtest.RootFS(t)), oci.WithRootFSReadonly(),
			oci.WithMounts([]specs.Mount{{Destination: "/usr", Type: "bind", Source: "/usr", Options: []string{"rbind", "ro"}}}),
			oci.WithUIDGID(sandbox.DefaultUID, sandbox.DefaultGID),
			oci.WithProcessArgs("/usr/bin/sleep", "60")))
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := sb.Prune(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("Prune(1h) = %d, %v; want 0 (the container is new)", n, err)
	}
	if n, err := sb.Prune(ctx, 0); err != nil || n != 1 {
		t.Fatalf("Prune(0) = %d, %v; want 1", n, err)
	}
	assertGone(t, sb, "crashed")
}
