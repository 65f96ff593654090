// Package harness is the benchmark programs' shared server harness: it
// builds the zipship binary, finds free loopback ports, starts
// `zipship serve` as a child process and waits for /healthz, mints tokens
// with `zipship token`, calls the API (creating tenants), and stops the
// server (SIGTERM, then wait). It serves bench/build and bench/upload (and
// bench/edge's temp dir and free port), and is no part of zipship itself.
package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StopGrace is how long Stop waits after SIGTERM before killing the
// server; it exceeds the server's own shutdown grace (30s).
const StopGrace = 40 * time.Second

// TempDir creates a temp directory named after prefix. With keep, it
// prints "temp dir: <path>" to out and remove does nothing; without, remove
// deletes the directory.
func TempDir(out io.Writer, prefix string, keep bool) (dir string, remove func() error, err error) {
	dir, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, fmt.Errorf("create temp dir: %w", err)
	}
	if keep {
		fmt.Fprintln(out, "temp dir:", dir)
		return dir, func() error { return nil }, nil
	}
	return dir, func() error { return os.RemoveAll(dir) }, nil
}

// GoBinary is the go command: $GO (as the Makefile sets it) or go on PATH.
func GoBinary() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// ModuleRoot is the directory holding the main module's go.mod, so the
// build works from any working directory inside the module.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, GoBinary(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the zipship module: run from the repository")
	}
	return filepath.Dir(gomod), nil
}

// BuildZipship builds ./cmd/zipship into dir and returns the binary's path.
func BuildZipship(ctx context.Context, dir string) (string, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "zipship")
	cmd := exec.CommandContext(ctx, GoBinary(), "build", "-buildvcs=false", "-o", bin, "./cmd/zipship")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/zipship: %w\n%s", err, out)
	}
	return bin, nil
}

// FreeAddrs returns n distinct loopback addresses whose ports were free
// just now.
func FreeAddrs(n int) ([]string, error) {
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// FreeAddr returns a loopback address with a port that was free just now.
func FreeAddr() (string, error) {
	addrs, err := FreeAddrs(1)
	if err != nil {
		return "", err
	}
	return addrs[0], nil
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ServeOptions configures StartServe.
type ServeOptions struct {
	DataDir string
	// Args are serve flags after --data-dir, --addr and --edge-addr.
	Args []string
	// Env is added to this process's environment.
	Env []string
	// LogPath, if set, is the file that receives serve's output (and
	// whose tail is printed to stderr if serve never gets healthy);
	// otherwise the output goes to this process's stderr.
	LogPath string
	// HealthTimeout bounds the wait for /healthz.
	HealthTimeout time.Duration
}

// Server is a running `zipship serve` child process.
type Server struct {
	URL      string // the API's base URL
	EdgeAddr string // the edge's host:port
	EdgePort string

	bin     string
	dataDir string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	exited  chan struct{} // closed when the process has been waited for
	err     error         // Wait's result, valid once exited is closed
	once    sync.Once
}

// StartServe starts bin serve on free loopback ports (API and edge) and
// waits until /healthz answers.
func StartServe(ctx context.Context, bin string, opts ServeOptions) (*Server, error) {
	addrs, err := FreeAddrs(2)
	if err != nil {
		return nil, err
	}
	var logFile *os.File
	if opts.LogPath != "" {
		if logFile, err = os.Create(opts.LogPath); err != nil {
			return nil, fmt.Errorf("serve log: %w", err)
		}
	}
	args := append([]string{"serve", "--data-dir", opts.DataDir, "--addr", addrs[0], "--edge-addr", addrs[1]}, opts.Args...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), opts.Env...)
	if logFile != nil {
		cmd.Stdout, cmd.Stderr = logFile, logFile
	} else {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("start zipship serve: %w", err)
	}
	_, port, _ := net.SplitHostPort(addrs[1])
	s := &Server{URL: "http://" + addrs[0], EdgeAddr: addrs[1], EdgePort: port,
		bin: bin, dataDir: opts.DataDir, cmd: cmd, logPath: opts.LogPath, logFile: logFile,
		exited: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitHealthy(ctx, opts.HealthTimeout); err != nil {
		s.PrintLogTail(os.Stderr, 40)
		return nil, errors.Join(err, s.Stop())
	}
	return s, nil
}

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// waitHealthy polls GET /healthz until it answers 200.
func (s *Server) waitHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		res, err := http.Get(s.URL + "/healthz")
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("zipship serve not healthy on %s within %v (last error: %v)", s.URL, timeout, err)
		}
		select {
		case <-s.exited:
			return fmt.Errorf("zipship serve exited at start: %v", s.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM (serve then stops whatever it started, such as its
// containerd) and waits for the process to exit, killing it after
// StopGrace. A non-zero exit, or an exit before Stop, is an error. Only the
// first call does anything.
func (s *Server) Stop() error {
	var err error
	s.once.Do(func() {
		if s.logFile != nil {
			defer s.logFile.Close()
		}
		select {
		case <-s.exited:
			err = fmt.Errorf("zipship serve exited early: %v", s.err)
			return
		default:
		}
		if serr := s.cmd.Process.Signal(syscall.SIGTERM); serr != nil {
			err = fmt.Errorf("stop zipship serve: %w", serr)
		}
		select {
		case <-s.exited:
			if s.err != nil {
				err = errors.Join(err, fmt.Errorf("zipship serve after SIGTERM: %w", s.err))
			}
		case <-time.After(StopGrace):
			s.cmd.Process.Kill()
			<-s.exited
			err = errors.Join(err, fmt.Errorf("zipship serve did not stop within %v of SIGTERM; killed", StopGrace))
		}
	})
	return err
}

// PrintLogTail prints the last n lines of serve's output, if it went to
// ServeOptions.LogPath and is not empty.
func (s *Server) PrintLogTail(w io.Writer, n int) {
	if s.logPath == "" {
		return
	}
	data, err := os.ReadFile(s.logPath)
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return
	}
	fmt.Fprintf(w, "--- last lines of zipship serve's output ---\n%s\n---\n", Tail(string(data), n))
}

// Token mints a token for user with `zipship token` over the server's data
// dir; env, if any, is added to this process's environment.
func (s *Server) Token(ctx context.Context, user string, env ...string) (string, error) {
	cmd := exec.CommandContext(ctx, s.bin, "token", "--user", user, "--data-dir", s.dataDir)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("zipship token: %w: %s", err, stderr.String())
	}
	token := strings.TrimSpace(string(out))
	if token == "" {
		return "", errors.New("zipship token printed nothing")
	}
	return token, nil
}

// Client calls the zipship API with a bearer token.
type Client struct {
	Base  string
	Token string
	HTTP  *http.Client
}

// Call sends one request and decodes a JSON answer into out (if not nil);
// any status but want is an error carrying the body.
func (a *Client) Call(req *http.Request, want int, out any) error {
	req.Header.Set("Authorization", "Bearer "+a.Token)
	res, err := a.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", req.Method, req.URL.Path, err)
	}
	if res.StatusCode != want {
		return fmt.Errorf("%s %s: status %d, want %d: %s", req.Method, req.URL.Path, res.StatusCode, want, bytes.TrimSpace(body))
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", req.Method, req.URL.Path, err)
		}
	}
	return nil
}

// CreateTenant creates a tenant.
func (a *Client) CreateTenant(ctx context.Context, id, name string) error {
	body, _ := json.Marshal(map[string]string{"tenantId": id, "name": name})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.Base+"/api/tenants", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("create tenant %s: %w", id, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if err := a.Call(req, http.StatusCreated, nil); err != nil {
		return fmt.Errorf("create tenant %s: %w", id, err)
	}
	return nil
}
