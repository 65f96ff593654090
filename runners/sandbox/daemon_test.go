package sandbox_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/zipship/zipship/runners/sandbox"
)

// daemonPIDs lists the pids of containerd processes started with config.
func daemonPIDs(t *testing.T, config string) []int {
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
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) == 3 && filepath.Base(args[0]) == "containerd" && args[1] == "--config" && args[2] == config {
			pids = append(pids, pid)
		}
	}
	return pids
}

// answers tells whether a containerd answers at address.
func answers(address string) bool {
	c, err := client.New(address, client.WithTimeout(time.Second))
	if err != nil {
		return false
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = c.Version(ctx)
	return err == nil
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEnsureContainerdStartsSupervisesAndStopsItsOwn(t *testing.T) {
	// A data directory long enough that its socket path would not fit in
	// sun_path: the daemon must get a short socket path of its own.
	dataDir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	config := filepath.Join(dataDir, "containerd", "config.toml")
	ctx := context.Background()
	start := time.Now()
	address, stop, err := sandbox.EnsureContainerdWith(ctx, dataDir, testLog(t), nil)
	if err != nil {
		t.Fatalf("EnsureContainerd: %v", err)
	}
	t.Logf("private containerd at %s answered after %v", address, time.Since(start))
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = stop()
		}
	})
	if !strings.HasPrefix(address, "/run/zipship/") || len(address) > 100 {
		t.Errorf("socket %s: want a short path under /run/zipship", address)
	}
	if !answers(address) {
		t.Fatal("the private containerd does not answer")
	}
	pids := daemonPIDs(t, config)
	if len(pids) != 1 {
		t.Fatalf("containerd processes with %s: %v, want one", config, pids)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "containerd", "containerd.log")); err != nil {
		t.Errorf("no log: %v", err)
	}

	// It runs jobs.
	sb, err := sandbox.New(ctx, sandbox.Config{Address: address, RootFS: rootFS(t), Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	res, o := run(t, sb, sandbox.Job{Args: sh("echo private")})
	if res.ExitCode != 0 || o.stdout.String() != "private\n" {
		t.Fatalf("%+v %q", res, o.stdout.String())
	}

	// It is restarted when it dies.
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a restarted containerd", 15*time.Second, func() bool {
		p := daemonPIDs(t, config)
		return len(p) == 1 && p[0] != pids[0] && answers(address)
	})
	// The client reconnects by itself.
	res, o = run(t, sb, sandbox.Job{Args: sh("echo again")})
	if res.ExitCode != 0 || o.stdout.String() != "again\n" {
		t.Fatalf("after restart: %+v %q", res, o.stdout.String())
	}
	sb.Close()

	// stop ends it for good.
	stopped = true
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if p := daemonPIDs(t, config); len(p) != 0 {
		t.Fatalf("containerd still running after stop: %v", p)
	}
	if answers(address) {
		t.Fatal("something still answers on the socket after stop")
	}
	if err := stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
}

func TestEnsureContainerdUsesARunningOne(t *testing.T) {
	dataDir := t.TempDir()
	address, stop, err := sandbox.EnsureContainerdWith(context.Background(), dataDir, testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	// A second call that is told about the first finds it and starts nothing.
	other := t.TempDir()
	got, stop2, err := sandbox.EnsureContainerdWith(context.Background(), other, testLog(t), []string{filepath.Join(other, "missing.sock"), address})
	if err != nil {
		t.Fatal(err)
	}
	if got != address {
		t.Fatalf("got %s, want the running %s", got, address)
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	if !answers(address) {
		t.Fatal("stop of a found daemon stopped it")
	}
	if _, err := os.Stat(filepath.Join(other, "containerd")); err == nil {
		t.Error("a config was written although a daemon was found")
	}
}

func TestEnsureContainerdMissingBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, _, err := sandbox.EnsureContainerdWith(context.Background(), t.TempDir(), testLog(t), nil)
	if !errors.Is(err, sandbox.ErrContainerdMissing) {
		t.Fatalf("err %v, want ErrContainerdMissing", err)
	}
	if !strings.Contains(err.Error(), "apt-get install -y containerd runc") {
		t.Fatalf("message %q does not say how to install", err)
	}
}

// rootFS prepares a rootfs without sandboxtest (which would start the
// shared daemon).
func rootFS(t *testing.T) string {
	dir := t.TempDir()
	if err := sandbox.PrepareRootFS(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}
