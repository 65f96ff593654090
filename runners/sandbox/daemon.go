package sandbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
)

// DefaultAddress is where a system containerd (Debian's package, started
// by an init system) listens.
const DefaultAddress = "/run/containerd/containerd.sock"

// AddressEnv names the environment variable that points zipship at a
// containerd socket other than DefaultAddress.
const AddressEnv = "ZIPSHIP_CONTAINERD_ADDRESS"

// ErrContainerdMissing is returned (wrapped) by EnsureContainerd when no
// containerd answers and the containerd or runc binary is not installed.
var ErrContainerdMissing = errors.New("containerd not found: install it with apt-get install -y containerd runc (make run does this)")

// maxSocketPath is the longest unix socket path the kernel accepts
// (sun_path is 108 bytes including the terminating NUL), less room for the
// ".ttrpc" socket containerd puts next to the gRPC one.
const maxSocketPath = 107 - len(".ttrpc")

// EnsureContainerd returns the address of a containerd that answers: the
// one at $ZIPSHIP_CONTAINERD_ADDRESS or DefaultAddress when one does,
// otherwise its own, which it starts and supervises like k3s does (these
// machines have no init system to do it): a version-2 config under
// dataDir/containerd (root and state there, the CRI plugin disabled), the
// daemon in its own process group logging to dataDir/containerd/containerd.log,
// restarted with bounded backoff when it dies. stop ends the daemon it
// started (a no-op for a daemon it found). A missing binary is reported as
// ErrContainerdMissing.
func EnsureContainerd(ctx context.Context, dataDir string, log *slog.Logger) (address string, stop func() error, err error) {
	var candidates []string
	if a := os.Getenv(AddressEnv); a != "" {
		candidates = append(candidates, a)
	}
	candidates = append(candidates, DefaultAddress)
	return ensureContainerd(ctx, dataDir, log, candidates)
}

// ensureContainerd is EnsureContainerd with the addresses to try first
// given, so that a test can force the start of a private daemon.
func ensureContainerd(ctx context.Context, dataDir string, log *slog.Logger, candidates []string) (string, func() error, error) {
	if log == nil {
		log = slog.Default()
	}
	for _, a := range candidates {
		if err := probe(ctx, a); err == nil {
			log.Debug("using running containerd", "address", a)
			return a, func() error { return nil }, nil
		} else if a != DefaultAddress {
			log.Warn("containerd does not answer; trying the next", "address", a, "err", err)
		}
	}
	if dataDir == "" {
		return "", nil, errors.New("ensure containerd: no data directory for a private containerd")
	}
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return "", nil, fmt.Errorf("ensure containerd: %w", ErrContainerdMissing)
	}
	if _, err := exec.LookPath("runc"); err != nil {
		return "", nil, fmt.Errorf("ensure containerd: runc missing: %w", ErrContainerdMissing)
	}
	if _, err := exec.LookPath("containerd-shim-runc-v2"); err != nil {
		return "", nil, fmt.Errorf("ensure containerd: containerd-shim-runc-v2 missing: %w", ErrContainerdMissing)
	}
	d, err := newDaemon(dataDir, bin, log)
	if err != nil {
		return "", nil, err
	}
	if err := d.start(ctx); err != nil {
		return "", nil, err
	}
	return d.address, d.stop, nil
}

// probe tells whether a containerd answers at address.
func probe(ctx context.Context, address string) error {
	if !strings.Contains(address, "://") {
		if _, err := os.Stat(address); err != nil {
			return err
		}
	}
	c, err := client.New(address, client.WithTimeout(time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = c.Version(pctx)
	return err
}

// daemon is a containerd process this package started and supervises.
type daemon struct {
	bin, dir, config, logPath, address string
	log                                *slog.Logger

	mu       sync.Mutex
	cmd      *exec.Cmd // the running process, nil between restarts
	stopping bool
	stopCh   chan struct{}
	done     chan struct{} // closed when the supervisor has ended
	exits    chan error    // every exit of the process, for start's wait
	stopOnce sync.Once
	stopErr  error
}

// newDaemon writes the config of a private containerd under dataDir.
func newDaemon(dataDir, bin string, log *slog.Logger) (*daemon, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("ensure containerd: %w", err)
	}
	dir := filepath.Join(abs, "containerd")
	for _, sub := range []string{"root", "state", "opt"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o711); err != nil {
			return nil, fmt.Errorf("ensure containerd: %w", err)
		}
	}
	address := filepath.Join(dir, "containerd.sock")
	if len(address) > maxSocketPath {
		// sun_path is 108 bytes: a long data directory gets a short socket
		// path of its own, stable per data directory.
		h := sha256.Sum256([]byte(dir))
		sockDir := filepath.Join("/run/zipship", hex.EncodeToString(h[:6]))
		if err := os.MkdirAll(sockDir, 0o711); err != nil {
			return nil, fmt.Errorf("ensure containerd: socket directory: %w", err)
		}
		address = filepath.Join(sockDir, "containerd.sock")
	}
	config := filepath.Join(dir, "config.toml")
	body := fmt.Sprintf(`# written by zipship (runners/sandbox): a private containerd for build jobs
version = 2
root = %s
state = %s
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %s

[ttrpc]
  address = %s

[plugins."io.containerd.internal.v1.opt"]
  path = %s
`, tomlString(filepath.Join(dir, "root")), tomlString(filepath.Join(dir, "state")),
		tomlString(address), tomlString(address+".ttrpc"), tomlString(filepath.Join(dir, "opt")))
	if err := writeFileIfChanged(config, []byte(body), 0o644); err != nil {
		return nil, fmt.Errorf("ensure containerd: config: %w", err)
	}
	return &daemon{
		bin: bin, dir: dir, config: config, address: address,
		logPath: filepath.Join(dir, "containerd.log"),
		log:     log.With("containerd", address),
		stopCh:  make(chan struct{}),
		done:    make(chan struct{}),
		exits:   make(chan error, 16),
	}, nil
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

// start launches the supervisor and waits until the daemon answers.
func (d *daemon) start(ctx context.Context) error {
	// A socket left by a daemon that died uncleanly would make the new one
	// fail to listen; nobody answers on it (probe said so).
	if probe(ctx, d.address) != nil {
		_ = os.Remove(d.address)
		_ = os.Remove(d.address + ".ttrpc")
	}
	go d.supervise()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if probe(wctx, d.address) == nil {
			d.log.Info("private containerd ready", "config", d.config, "log", d.logPath)
			return nil
		}
		select {
		case err := <-d.exits:
			_ = d.stop()
			return fmt.Errorf("ensure containerd: daemon exited at start (%v); log %s: %s", err, d.logPath, tail(d.logPath, 2048))
		case <-wctx.Done():
			_ = d.stop()
			return fmt.Errorf("ensure containerd: daemon did not answer on %s: %w; log %s: %s", d.address, wctx.Err(), d.logPath, tail(d.logPath, 2048))
		case <-tick.C:
		}
	}
}

// supervise runs the daemon and restarts it when it dies, until stop. It
// keeps its OS thread for its whole life: the child's parent-death signal
// is tied to the thread that started it, and it must only fire when the
// supervisor (or the whole program) ends.
func (d *daemon) supervise() {
	runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
	defer close(d.done)
	const minBackoff, maxBackoff = 100 * time.Millisecond, 10 * time.Second
	backoff := minBackoff
	for {
		began := time.Now()
		err := d.runOnce()
		select {
		case d.exits <- err:
		default:
		}
		d.mu.Lock()
		stopping := d.stopping
		d.mu.Unlock()
		if stopping {
			return
		}
		if time.Since(began) > time.Minute {
			backoff = minBackoff
		}
		d.log.Warn("containerd exited; restarting", "err", err, "after", backoff, "log", d.logPath)
		select {
		case <-d.stopCh:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// runOnce starts the daemon and waits for it to exit.
func (d *daemon) runOnce() error {
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(d.bin, "--config", d.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = d.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,
		Pdeathsig: syscall.SIGTERM,
	}
	d.mu.Lock()
	if d.stopping {
		d.mu.Unlock()
		return errors.New("stopping")
	}
	if err := cmd.Start(); err != nil {
		d.mu.Unlock()
		return fmt.Errorf("start %s: %w", d.bin, err)
	}
	d.cmd = cmd
	d.mu.Unlock()
	d.log.Debug("containerd started", "pid", cmd.Process.Pid)
	err = cmd.Wait()
	d.mu.Lock()
	d.cmd = nil
	d.mu.Unlock()
	if err == nil {
		err = errors.New("exited with status 0")
	}
	return err
}

// stop ends the supervisor and the daemon: SIGTERM to its process group,
// SIGKILL after 10 s. Running shims are in their own process groups and
// stay (containerd reconnects them at its next start). Idempotent.
func (d *daemon) stop() error {
	d.stopOnce.Do(func() {
		d.mu.Lock()
		d.stopping = true
		cmd := d.cmd
		d.mu.Unlock()
		close(d.stopCh)
		if cmd != nil && cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		}
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			if cmd != nil && cmd.Process != nil {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
			select {
			case <-d.done:
				d.stopErr = fmt.Errorf("stop containerd: killed after 10 s without exiting on SIGTERM")
			case <-time.After(5 * time.Second):
				d.stopErr = fmt.Errorf("stop containerd: still running after SIGKILL")
			}
		}
		if dir := filepath.Dir(d.address); strings.HasPrefix(dir, "/run/zipship/") {
			_ = os.Remove(d.address)
			_ = os.Remove(d.address + ".ttrpc")
			_ = os.Remove(dir) // only when empty
		}
		d.log.Info("private containerd stopped")
	})
	return d.stopErr
}

// tail returns the last n bytes of a file, for error messages.
func tail(name string, n int64) string {
	b, err := os.ReadFile(name)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(bytes.TrimSpace(b))
}
