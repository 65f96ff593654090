// Package sandbox runs one build command of an uploaded project inside a
// locked-down containerd container, so that the arbitrary code a ZIP brings
// along (npm install scripts, build tools, the user's config files) never
// runs on the runner's host with the host's privileges.
//
// Every job gets: a non-root uid/gid (>= 10000), a read-only root
// filesystem (a tiny directory prepared by PrepareRootFS with the host's
// /usr and /etc/ssl bound read-only, or an OCI image already in
// containerd), its workspace bound read-write at /workspace, size-limited
// tmpfs mounts at /tmp and $HOME, memory+swap, pids and CPU limits, the
// default seccomp profile, no capabilities, no new privileges, a read-only
// cgroup mount so that node sizes its heap to the limit, and either a fresh
// network namespace with nothing but lo or a network namespace the caller
// prepared (the egress-proxy design of FACTS.md). A timeout or a cancelled
// context kills the whole task; the container and task are always removed.
//
// The package talks to containerd through the v2 Go client; see
// EnsureContainerd for finding or starting a daemon.
package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Defaults of Config, chosen for one `npm install` or `npm run build` of a
// typical web project on a 2-core runner (FACTS.md: a Next.js build peaks
// at ~500 MB).
const (
	// DefaultNamespace is the containerd namespace that holds zipship's
	// containers, apart from anything else running on the same daemon.
	DefaultNamespace = "zipship"
	// DefaultUID and DefaultGID are the build user's ids; uid 1000 is taken
	// on the runner hosts, and anything below 10000 could collide with a
	// host account that owns files.
	DefaultUID = 10000
	// DefaultGID is the build user's group; see DefaultUID.
	DefaultGID = 10000
	// MinID is the lowest uid and gid a job may run as.
	MinID = 10000
	// DefaultMemoryBytes is the memory+swap limit of a job (2 GiB).
	DefaultMemoryBytes = 2 << 30
	// DefaultPids bounds the number of processes and threads of a job.
	DefaultPids = 512
	// DefaultCPUs is the CFS quota of a job, in CPUs.
	DefaultCPUs = 1.0
	// DefaultTmpfsBytes is the size of each of the /tmp and $HOME tmpfs
	// mounts; their pages count against the job's memory limit too.
	DefaultTmpfsBytes = 512 << 20
	// Home is the build user's home directory inside a job (a tmpfs).
	Home = "/home/build"
	// WorkspaceDir is where Job.Workspace is bound inside a job.
	WorkspaceDir = "/workspace"
	// Runtime is the containerd runtime used for jobs; the Debian 1.6
	// daemon and every v2 daemon provide it.
	Runtime = "io.containerd.runc.v2"
)

// labelJob and labelSandbox mark the containers this package creates, so
// that an operator (or a later clean-up) can tell them from others.
const (
	labelSandbox = "io.zipship.sandbox"
	labelJob     = "io.zipship.job"
)

// Bind is a host path mounted read-only into every job, e.g. the host's
// /usr (node, npm, sh) and /etc/ssl (the CA bundle the registry proxy
// needs).
type Bind struct {
	// Source is the absolute host path.
	Source string
	// Destination is the absolute path inside the job; empty means Source.
	Destination string
}

// DefaultReadOnlyBinds are the binds used with a RootFS directory when
// Config.ReadOnlyBinds is nil: the host's /usr provides sh, node and npm,
// the host's /etc/ssl the CA bundle (FACTS.md: TLS to the registry needs
// it).
func DefaultReadOnlyBinds() []Bind {
	return []Bind{{Source: "/usr", Destination: "/usr"}, {Source: "/etc/ssl", Destination: "/etc/ssl"}}
}

// Config says which containerd to use and what every job of a Sandbox may
// use. The zero values of the limits mean the defaults above.
type Config struct {
	// Address is the containerd socket, e.g. /run/containerd/containerd.sock
	// or what EnsureContainerd returned. Required.
	Address string
	// Namespace is the containerd namespace of the jobs (DefaultNamespace).
	Namespace string
	// RootFS is a directory prepared by PrepareRootFS; used when Image is
	// empty. It is mounted read-only; no snapshot is made.
	RootFS string
	// Image is an optional image reference already present in containerd
	// (imported or pulled); when set, each job runs on a read-only view
	// snapshot of it instead of RootFS.
	Image string
	// UID and GID of the job's processes; 0 means 10000; lower values are
	// refused.
	UID, GID uint32
	// MemoryBytes is the memory+swap limit of a job (DefaultMemoryBytes).
	MemoryBytes int64
	// Pids is the maximum number of processes and threads (DefaultPids).
	Pids int64
	// CPUs is the CPU quota of a job, in CPUs (DefaultCPUs).
	CPUs float64
	// TmpfsBytes is the size of each of /tmp and $HOME (DefaultTmpfsBytes).
	TmpfsBytes int64
	// ReadOnlyBinds are host paths bound read-only into every job. Nil means
	// DefaultReadOnlyBinds with RootFS and none with Image; an empty,
	// non-nil slice means none.
	ReadOnlyBinds []Bind
	// Log receives one record per job and the clean-up problems; nil means
	// slog.Default().
	Log *slog.Logger
}

// Sandbox runs jobs in containerd containers. It is safe for concurrent use
// by several goroutines: every job has its own container.
type Sandbox struct {
	cfg    Config
	client *client.Client
	log    *slog.Logger
	binds  []Bind
}

// New checks cfg, connects to containerd and makes sure it answers, so
// that a runner fails at start rather than at its first build.
func New(ctx context.Context, cfg Config) (*Sandbox, error) {
	if cfg.Address == "" {
		return nil, errors.New("sandbox: no containerd address")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.UID == 0 {
		cfg.UID = DefaultUID
	}
	if cfg.GID == 0 {
		cfg.GID = DefaultGID
	}
	if cfg.UID < MinID || cfg.GID < MinID {
		return nil, fmt.Errorf("sandbox: uid %d / gid %d: both must be >= %d", cfg.UID, cfg.GID, MinID)
	}
	if cfg.MemoryBytes == 0 {
		cfg.MemoryBytes = DefaultMemoryBytes
	}
	if cfg.Pids == 0 {
		cfg.Pids = DefaultPids
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = DefaultCPUs
	}
	if cfg.TmpfsBytes == 0 {
		cfg.TmpfsBytes = DefaultTmpfsBytes
	}
	if cfg.MemoryBytes < 4<<20 || cfg.Pids < 1 || cfg.CPUs < 0.01 || cfg.TmpfsBytes < 1<<20 {
		return nil, fmt.Errorf("sandbox: limits too small: memory %d B, pids %d, cpus %g, tmpfs %d B",
			cfg.MemoryBytes, cfg.Pids, cfg.CPUs, cfg.TmpfsBytes)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	binds := slices.Clone(cfg.ReadOnlyBinds) // filled in below: not the caller's
	if binds == nil && cfg.Image == "" {
		binds = DefaultReadOnlyBinds()
	}
	for i, b := range binds {
		if b.Destination == "" {
			b.Destination = b.Source
			binds[i] = b
		}
		if !filepath.IsAbs(b.Source) || !path.IsAbs(b.Destination) {
			return nil, fmt.Errorf("sandbox: bind %q -> %q: paths must be absolute", b.Source, b.Destination)
		}
		if _, err := os.Stat(b.Source); err != nil {
			return nil, fmt.Errorf("sandbox: bind source: %w", err)
		}
	}
	if cfg.Image == "" {
		if cfg.RootFS == "" {
			return nil, errors.New("sandbox: neither RootFS nor Image is set")
		}
		abs, err := filepath.Abs(cfg.RootFS)
		if err != nil {
			return nil, fmt.Errorf("sandbox: rootfs: %w", err)
		}
		cfg.RootFS = abs
		if _, err := os.Stat(filepath.Join(abs, "etc", "passwd")); err != nil {
			return nil, fmt.Errorf("sandbox: rootfs %s not prepared (run PrepareRootFS): %w", abs, err)
		}
	}

	if !strings.Contains(cfg.Address, "://") {
		// The client's dialer waits for a missing socket to appear; a
		// runner should rather fail at once with the reason.
		if _, err := os.Stat(cfg.Address); err != nil {
			return nil, fmt.Errorf("sandbox: no containerd socket: %w", err)
		}
	}
	c, err := client.New(cfg.Address, client.WithDefaultNamespace(cfg.Namespace), client.WithTimeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("sandbox: connect to containerd at %s: %w", cfg.Address, err)
	}
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := c.Version(vctx)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("sandbox: containerd at %s does not answer: %w", cfg.Address, err)
	}
	s := &Sandbox{cfg: cfg, client: c, log: cfg.Log, binds: binds}
	if cfg.Image != "" {
		// Unpacking a node image takes a while: ctx bounds it, not vctx.
		if err := s.ensureUnpacked(namespaces.WithNamespace(ctx, cfg.Namespace)); err != nil {
			c.Close()
			return nil, err
		}
	}
	s.log.Debug("sandbox ready", "containerd", cfg.Address, "version", v.Version, "namespace", cfg.Namespace)
	return s, nil
}

// ensureUnpacked makes sure the configured image has a snapshot to make
// views from, so that the first job does not pay (or fail) for it.
func (s *Sandbox) ensureUnpacked(ctx context.Context) error {
	img, err := s.client.GetImage(ctx, s.cfg.Image)
	if err != nil {
		return fmt.Errorf("sandbox: image %s: %w", s.cfg.Image, err)
	}
	ok, err := img.IsUnpacked(ctx, "")
	if err != nil {
		return fmt.Errorf("sandbox: image %s: %w", s.cfg.Image, err)
	}
	if !ok {
		if err := img.Unpack(ctx, ""); err != nil {
			return fmt.Errorf("sandbox: unpack image %s: %w", s.cfg.Image, err)
		}
	}
	return nil
}

// Close releases the connection to containerd. Jobs still running are not
// stopped by it: cancel their contexts first.
func (s *Sandbox) Close() error {
	if err := s.client.Close(); err != nil {
		return fmt.Errorf("sandbox: close containerd client: %w", err)
	}
	return nil
}

// Client returns the containerd client, for tests and operators that want
// to look at the namespace (e.g. list leftover containers).
func (s *Sandbox) Client() *client.Client { return s.client }

// Namespace returns the containerd namespace the jobs run in.
func (s *Sandbox) Namespace() string { return s.cfg.Namespace }

// Job is one command to run in a fresh container.
type Job struct {
	// ID names the job (a build id and step, say); it is sanitised and made
	// unique for containerd, and kept as a label.
	ID string
	// Args is the command and its arguments; Args[0] is looked up in PATH.
	Args []string
	// Env is added to the defaults PATH, HOME and USER; a KEY=value here
	// replaces a default.
	Env []string
	// Dir is the working directory inside the job, e.g. /workspace/app;
	// empty means /workspace (or / without a workspace).
	Dir string
	// Workspace is a host directory bound read-write at /workspace; it is
	// chowned recursively to the job's uid:gid first. Empty means no
	// workspace.
	Workspace string
	// Timeout bounds the job's run time; zero means only ctx bounds it.
	Timeout time.Duration
	// Stdout and Stderr receive the job's output; nil discards it. When both
	// are the same writer, writes to it are serialised.
	Stdout, Stderr io.Writer
	// NetNSPath is an existing network namespace for the job (e.g. a pinned
	// /run/zipship/netns/<id> with an egress proxy listening on its lo);
	// empty means a fresh namespace with nothing but lo.
	NetNSPath string
}

// Result is how a job ended. A job that ran and failed is a Result, not an
// error.
type Result struct {
	// ExitCode is the exit status of the job's main process; 128+n when it
	// died of signal n (137 for SIGKILL: timeout or out of memory).
	ExitCode int
	// TimedOut is true when Job.Timeout expired and the task was killed.
	TimedOut bool
	// OOMKilled is true when the kernel's OOM killer killed a process of the
	// job because the job hit its memory limit. The main process may then
	// exit 137, or another code when only a child was killed (npm reporting
	// its failed child, say).
	OOMKilled bool
	// PidsLimited is true when the job's pids cgroup refused a fork or
	// clone at least once because the job had PidsLimit processes and
	// threads (a fork bomb, or a build that needs more): the command then
	// failed with EAGAIN, or only some of its children ran. False also when
	// the counter cannot be read from where the sandbox runs.
	PidsLimited bool
	// PidsLimit is the job's limit on processes and threads (Config.Pids).
	PidsLimit int64
	// Duration is the time from the task's start to its exit.
	Duration time.Duration
}

// idInvalid matches what containerd refuses in identifiers.
var idInvalid = regexp.MustCompile(`[^A-Za-z0-9]+`)

// containerID turns a job id into a unique containerd identifier
// ([A-Za-z0-9]+ separated by single [._-], at most 76 characters): a
// sanitised, shortened job id with a random suffix, so that a redelivered
// job or one left behind by a crash never collides with a new one.
func containerID(jobID string) string {
	s := strings.Trim(idInvalid.ReplaceAllString(jobID, "-"), "-")
	if len(s) > 48 {
		s = strings.Trim(s[:48], "-")
	}
	if s == "" {
		s = "job"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "zs-" + s + "-" + hex.EncodeToString(b[:])
}

// Run runs job in a fresh container and waits for it to end. The job is
// killed (SIGKILL to every process of the task) when job.Timeout expires
// or ctx is cancelled; its container and task are removed in every case,
// even after a panic. The error is only for infrastructure failures
// (containerd unreachable, container or task creation failed, a cancelled
// ctx); a job that exits non-zero, times out or runs out of memory returns
// a Result and a nil error.
func (s *Sandbox) Run(ctx context.Context, job Job) (res Result, err error) {
	if len(job.Args) == 0 {
		return res, errors.New("sandbox: job has no command")
	}
	if job.Workspace != "" {
		abs, err := filepath.Abs(job.Workspace)
		if err != nil {
			return res, fmt.Errorf("sandbox: workspace: %w", err)
		}
		job.Workspace = abs
		if err := chownTree(abs, int(s.cfg.UID), int(s.cfg.GID)); err != nil {
			return res, fmt.Errorf("sandbox: workspace: %w", err)
		}
	}
	if job.Dir == "" {
		job.Dir = "/"
		if job.Workspace != "" {
			job.Dir = WorkspaceDir
		}
	}
	if !path.IsAbs(job.Dir) {
		return res, fmt.Errorf("sandbox: working directory %q is not absolute", job.Dir)
	}
	if job.NetNSPath != "" {
		if _, err := os.Stat(job.NetNSPath); err != nil {
			return res, fmt.Errorf("sandbox: network namespace: %w", err)
		}
	}
	stdout, stderr := job.Stdout, job.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	if stdout == stderr && stdout != io.Discard {
		lw := &lockedWriter{w: stdout}
		stdout, stderr = lw, lw
	}

	res.PidsLimit = s.cfg.Pids
	id := containerID(job.ID)
	log := s.log.With("job", job.ID, "container", id)
	ctx = namespaces.WithNamespace(ctx, s.cfg.Namespace)
	// Clean-up must work even when ctx is already cancelled or a panic is
	// unwinding: it gets a context of its own with a bound of its own.
	cleanupCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(namespaces.WithNamespace(context.WithoutCancel(ctx), s.cfg.Namespace), 30*time.Second)
	}

	// Subscribe to OOM events before the task exists, so that none is
	// missed; the counter read after exit is the fallback.
	oom := s.watchOOM(ctx, id)
	defer oom.stop()

	copts, err := s.containerOpts(ctx, id, job)
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	container, err := s.client.NewContainer(ctx, id, copts...)
	if err != nil {
		return res, fmt.Errorf("sandbox: create container %s: %w", id, err)
	}
	// Phase times, logged with the outcome: where a job's overhead goes.
	var tContainer, tTask, tStart, tExit time.Time
	tContainer = time.Now()
	var task client.Task
	defer func() {
		cctx, cancel := cleanupCtx()
		defer cancel()
		defer func() {
			if tExit.IsZero() {
				return
			}
			log.Info("sandbox job finished", "exit", res.ExitCode, "timed_out", res.TimedOut,
				"oom_killed", res.OOMKilled, "pids_limited", res.PidsLimited, "duration", res.Duration,
				"create_container", tContainer.Sub(t0), "create_task", tTask.Sub(tContainer),
				"start", tStart.Sub(tTask), "cleanup", time.Since(tExit))
		}()
		if task != nil {
			if _, derr := task.Delete(cctx, client.WithProcessKill); derr != nil && !errdefs.IsNotFound(derr) {
				log.Warn("sandbox: delete task", "err", derr)
				if err == nil {
					err = fmt.Errorf("sandbox: delete task %s: %w", id, derr)
				}
			}
		}
		if derr := container.Delete(cctx, client.WithSnapshotCleanup); derr != nil && !errdefs.IsNotFound(derr) {
			log.Warn("sandbox: delete container", "err", derr)
			if err == nil {
				err = fmt.Errorf("sandbox: delete container %s: %w", id, derr)
			}
		}
	}()

	// Keep the task's IO: when the task cannot be created, NewTask closes
	// it but does not wait for its copying goroutines, which still hold the
	// job's writers.
	var taskIO cio.IO
	creator := cio.NewCreator(cio.WithStreams(nil, stdout, stderr))
	task, err = container.NewTask(ctx, func(id string) (cio.IO, error) {
		i, err := creator(id)
		taskIO = i
		return i, err
	})
	tTask = time.Now()
	if err != nil {
		task = nil
		released := taskIO == nil || waitIO(taskIO, 5*time.Second)
		if code, msg, ok := execFailure(err); ok && released {
			// The job's own command cannot run: its failure, as in a shell,
			// not the infrastructure's (a retry would not help).
			_, _ = fmt.Fprintf(stderr, "sandbox: %s\n", msg)
			res.ExitCode = code
			log.Info("sandbox job could not execute its command", "exit", code, "err", msg)
			return res, nil
		}
		return res, fmt.Errorf("sandbox: create task %s: %w", id, err)
	}
	// Wait with a context that outlives a cancelled ctx, so that the exit
	// status of a killed task still arrives.
	waitCtx, waitCancel := context.WithCancel(namespaces.WithNamespace(context.WithoutCancel(ctx), s.cfg.Namespace))
	defer waitCancel()
	exitCh, err := task.Wait(waitCtx)
	if err != nil {
		return res, fmt.Errorf("sandbox: wait task %s: %w", id, err)
	}

	start := time.Now()
	if err := task.Start(ctx); err != nil {
		return res, fmt.Errorf("sandbox: start task %s: %w", id, err)
	}
	tStart = time.Now()
	// The timeout counts from the start of the task: creating the
	// container is the sandbox's time, not the job's.
	runCtx := ctx
	if job.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, job.Timeout)
		defer cancel()
	}

	var status client.ExitStatus
	select {
	case status = <-exitCh:
	case <-runCtx.Done():
		res.TimedOut = ctx.Err() == nil
		kctx, cancel := cleanupCtx()
		if kerr := task.Kill(kctx, syscall.SIGKILL, client.WithKillAll); kerr != nil && !errdefs.IsNotFound(kerr) {
			log.Warn("sandbox: kill task", "err", kerr)
		}
		select {
		case status = <-exitCh:
		case <-kctx.Done():
			cancel()
			return res, fmt.Errorf("sandbox: task %s did not exit after SIGKILL: %w", id, kctx.Err())
		}
		cancel()
	}
	res.Duration = time.Since(start)
	tExit = time.Now()
	code, _, serr := status.Result()
	if serr != nil {
		return res, fmt.Errorf("sandbox: exit status of %s: %w", id, serr)
	}
	res.ExitCode = int(code)
	if !res.TimedOut {
		// Before the task is deleted: the OOM counter goes with its cgroup.
		mctx, cancel := cleanupCtx()
		res.OOMKilled = oom.killed(mctx, task, res.ExitCode)
		cancel()
	}
	// Also before the task is deleted, and whether or not it timed out: a
	// fork bomb that does not exit is killed by the timeout.
	pctx, pcancel := cleanupCtx()
	if n, ok := pidsLimitHits(pctx, container); ok && n > 0 {
		res.PidsLimited = true
	}
	pcancel()
	if !res.TimedOut && ctx.Err() != nil {
		return res, fmt.Errorf("sandbox: job %s cancelled: %w", id, context.Cause(ctx))
	}
	return res, nil
}

// waitIO waits at most d for a closed task IO to stop copying, and tells
// whether it did.
func waitIO(i cio.IO, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		i.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// execFailureRE finds runc's report that the job's command could not be
// executed, e.g. `exec: "npx": executable file not found in $PATH`.
var execFailureRE = regexp.MustCompile(`exec: ("[^"]*": [^:]*(?:: [^:]*)?)`)

// execFailure tells whether a task creation failed because the command
// itself cannot be executed, and then the shell's exit code for it (127 not
// found, 126 not executable) and runc's message.
func execFailure(err error) (code int, msg string, ok bool) {
	m := execFailureRE.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, "", false
	}
	msg = strings.TrimSuffix(m[1], ": unknown")
	switch {
	case strings.Contains(msg, "no such file or directory"), strings.Contains(msg, "not found"):
		return 127, msg, true
	case strings.Contains(msg, "permission denied"), strings.Contains(msg, "exec format error"):
		return 126, msg, true
	}
	return 0, "", false
}

// Prune removes the containers (and their tasks) of this package in the
// Sandbox's namespace that were created more than olderThan ago: what a
// runner that crashed mid-job left behind. Pass a bound longer than any
// job's timeout, so that running jobs of other runners sharing the daemon
// are left alone. It returns how many it removed.
func (s *Sandbox) Prune(ctx context.Context, olderThan time.Duration) (int, error) {
	ctx = namespaces.WithNamespace(ctx, s.cfg.Namespace)
	cs, err := s.client.Containers(ctx, fmt.Sprintf(`labels.%q`, labelSandbox))
	if err != nil {
		return 0, fmt.Errorf("sandbox: list containers: %w", err)
	}
	removed := 0
	var errs []error
	for _, c := range cs {
		info, err := c.Info(ctx, client.WithoutRefreshedMetadata)
		if err != nil {
			if !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
			continue
		}
		if time.Since(info.CreatedAt) < olderThan {
			continue
		}
		if t, err := c.Task(ctx, nil); err == nil {
			if _, err := t.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete task %s: %w", c.ID(), err))
				continue
			}
		}
		if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete container %s: %w", c.ID(), err))
			continue
		}
		s.log.Info("sandbox: removed a stale container", "container", c.ID(), "job", info.Labels[labelJob], "created", info.CreatedAt)
		removed++
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("sandbox: prune: %w", err)
	}
	return removed, nil
}

// containerOpts builds the container: labels, runtime, root filesystem
// and the locked-down OCI spec.
func (s *Sandbox) containerOpts(ctx context.Context, id string, job Job) ([]client.NewContainerOpts, error) {
	labels := map[string]string{labelSandbox: "v1", labelJob: job.ID}
	if len(job.ID) > 1024 {
		labels[labelJob] = job.ID[:1024]
	}
	opts := []client.NewContainerOpts{
		client.WithContainerLabels(labels),
		client.WithRuntime(Runtime, nil),
	}
	var specOpts []oci.SpecOpts
	if s.cfg.Image != "" {
		img, err := s.client.GetImage(ctx, s.cfg.Image)
		if err != nil {
			return nil, fmt.Errorf("sandbox: image %s: %w", s.cfg.Image, err)
		}
		opts = append(opts, client.WithImage(img), client.WithNewSnapshotView(id, img))
		specOpts = append(specOpts, oci.WithImageConfig(img))
	} else {
		specOpts = append(specOpts, oci.WithRootFSPath(s.cfg.RootFS))
	}
	specOpts = append(specOpts, s.specOpts(job)...)
	opts = append(opts, client.WithNewSpec(specOpts...))
	return opts, nil
}

// specOpts is the lock-down applied to every job's OCI spec, on top of
// containerd's defaults (fresh pid, ipc, uts, mount and network
// namespaces, the default masked and read-only paths, devices denied but
// the standard ones).
func (s *Sandbox) specOpts(job Job) []oci.SpecOpts {
	cfg := s.cfg
	mounts := []specs.Mount{
		{
			Destination: "/tmp", Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "nodev", "mode=1777", fmt.Sprintf("size=%d", cfg.TmpfsBytes)},
		},
		{
			Destination: Home, Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "nodev", "mode=0700", fmt.Sprintf("size=%d", cfg.TmpfsBytes),
				fmt.Sprintf("uid=%d", cfg.UID), fmt.Sprintf("gid=%d", cfg.GID)},
		},
		{
			// runc mounts the job's own cgroup here (read-only), so that node
			// and libuv find memory.limit_in_bytes / memory.max and size the
			// heap to the job instead of the host.
			Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup",
			Options: []string{"ro", "nosuid", "noexec", "nodev", "relatime"},
		},
	}
	for _, b := range s.binds {
		mounts = append(mounts, specs.Mount{
			Destination: b.Destination, Type: "bind", Source: b.Source,
			Options: []string{"rbind", "ro", "nosuid", "nodev"},
		})
	}
	if job.Workspace != "" {
		mounts = append(mounts, specs.Mount{
			Destination: WorkspaceDir, Type: "bind", Source: job.Workspace,
			Options: []string{"rbind", "rw", "nosuid", "nodev"},
		})
	}
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + Home,
		"USER=build",
		"LOGNAME=build",
		"TMPDIR=/tmp",
	}
	netns := specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: job.NetNSPath}
	nofile := nofileLimit()
	period := uint64(100_000)
	quota := int64(cfg.CPUs * float64(period))
	return []oci.SpecOpts{
		oci.WithRootFSReadonly(),
		oci.WithHostname("build"),
		oci.WithEnv(env),
		oci.WithEnv(job.Env),
		oci.WithProcessArgs(job.Args...),
		oci.WithProcessCwd(job.Dir),
		oci.WithUIDGID(cfg.UID, cfg.GID),
		withNoAdditionalGIDs,
		oci.WithMounts(mounts),
		oci.WithLinuxNamespace(netns),
		// A cgroup namespace makes /proc/self/cgroup say "/", which is where
		// node looks for its limit under the cgroup mount.
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.CgroupNamespace}),
		oci.WithMemoryLimit(uint64(cfg.MemoryBytes)),
		oci.WithMemorySwap(cfg.MemoryBytes),
		oci.WithPidsLimit(cfg.Pids),
		oci.WithCPUCFS(quota, period),
		oci.WithNoNewPrivileges,
		oci.WithCapabilities([]string{}),
		withNoAmbientCapabilities,
		oci.WithRlimit(&specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Hard: nofile, Soft: nofile}),
		oci.WithRlimit(&specs.POSIXRlimit{Type: "RLIMIT_CORE", Hard: 0, Soft: 0}),
		// Must follow the capabilities: the profile allows syscalls by the
		// capabilities the process has.
		seccomp.WithDefaultProfile(),
	}
}

// nofileLimit is the open-files limit of a job: 65536 (bundlers open many
// files), or less when the runner's own hard limit is lower, as raising it
// needs CAP_SYS_RESOURCE, which containers and CI machines often lack.
func nofileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Max == 0 {
		return 1024
	}
	return min(rl.Max, 65536)
}

// withNoAdditionalGIDs leaves the job with only its own gid (WithUIDGID
// keeps the image's or default supplementary groups, e.g. root's 0).
func withNoAdditionalGIDs(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	if s.Process != nil {
		s.Process.User.AdditionalGids = []uint32{s.Process.User.GID}
	}
	return nil
}

// withNoAmbientCapabilities clears the capability sets WithCapabilities
// leaves alone, so that the job has no capability at all.
func withNoAmbientCapabilities(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	if s.Process != nil && s.Process.Capabilities != nil {
		s.Process.Capabilities.Inheritable = nil
		s.Process.Capabilities.Ambient = nil
	}
	return nil
}

// chownTree gives the workspace to the build user, as a host directory
// written by the runner belongs to root: without it the job could not write
// node_modules or the build output. Symlinks are changed, not followed, so
// a link in an uploaded project cannot make the runner chown host files;
// and as Run kills every process of a job before it returns, no job can
// swap a directory for a symlink while the next job's walk runs.
func chownTree(root string, uid, gid int) error {
	fi, err := os.Lstat(root)
	if err != nil {
		return fmt.Errorf("chown %s: %w", root, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("chown %s: not a directory", root)
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("chown %s: %w", p, err)
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", p, err)
		}
		return nil
	})
}

// lockedWriter serialises writes of stdout and stderr copied by two
// goroutines into one writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// Write writes p under the lock.
func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// oomWatch collects the containerd OOM event of one container.
type oomWatch struct {
	id     string
	seen   chan struct{}
	once   sync.Once
	cancel context.CancelFunc
	done   chan struct{}
}

// watchOOM subscribes to containerd's /tasks/oom events (published by the
// shim when the kernel OOM-kills a process in the task's memory cgroup)
// and remembers one for container id.
func (s *Sandbox) watchOOM(ctx context.Context, id string) *oomWatch {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w := &oomWatch{id: id, seen: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	ch, errs := s.client.Subscribe(wctx,
		fmt.Sprintf(`topic=="/tasks/oom",namespace==%q`, s.cfg.Namespace))
	go func() {
		defer close(w.done)
		for {
			select {
			case env, ok := <-ch:
				if !ok {
					return
				}
				if env == nil || env.Event == nil {
					continue
				}
				v, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					continue
				}
				if e, ok := v.(*apievents.TaskOOM); ok && e.ContainerID == id {
					w.once.Do(func() { close(w.seen) })
				}
			case err, ok := <-errs:
				if ok && err != nil && wctx.Err() == nil {
					s.log.Debug("sandbox: oom event subscription ended", "container", id, "err", err)
				}
				return
			case <-wctx.Done():
				return
			}
		}
	}()
	return w
}

// killed tells whether the job was OOM-killed: the event was seen, or the
// task's memory cgroup counted an OOM kill. An exit of 137 without an event
// yet waits a moment for it, as the shim publishes the event and the exit
// independently.
func (w *oomWatch) killed(ctx context.Context, task client.Task, exitCode int) bool {
	select {
	case <-w.seen:
		return true
	default:
	}
	n, ok := oomKillCount(ctx, task)
	if ok && n > 0 {
		return true
	}
	if exitCode != 137 {
		return false
	}
	t := time.NewTimer(300 * time.Millisecond)
	defer t.Stop()
	select {
	case <-w.seen:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// stop ends the subscription.
func (w *oomWatch) stop() {
	w.cancel()
	<-w.done
}
